//! Rate limits of the unauthenticated account requests (issue 19): logins, login codes and
//! forgotten-password requests, per client IP and per account (the email asked for), with
//! governor's GCRA; a refusal is 429 `rate_limited` with `Retry-After`.
//!
//! The keyed state is bounded: past [`LoginRateLimits::max_keys`] keys the limiter first forgets
//! the keys whose quota is whole again; if it is still full, requests are refused (per IP) or
//! not limited (per account: an attacker must not be able to lock everyone out by
//! filling it with made-up emails; the per-IP limit still holds). The client IP is the TCP
//! peer: behind a reverse proxy every client shares the proxy's quota.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::ApiError;

/// Settings of the limits (`[http]` in the configuration file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRateLimits {
    /// Requests per minute from one IP (also the burst); default 60.
    pub per_ip_per_minute: NonZeroU32,
    /// Requests per minute naming one account (also the burst); default 20: above the lockout's
    /// 10 wrong passwords, so that the lockout answers first; it bounds the emails (reset
    /// links, login codes) a stranger can make an account receive.
    pub per_account_per_minute: NonZeroU32,
    /// Most keys each limiter remembers; default 100,000.
    pub max_keys: usize,
}

impl Default for LoginRateLimits {
    fn default() -> Self {
        LoginRateLimits {
            per_ip_per_minute: NonZeroU32::new(60).expect("60 is not zero"),
            per_account_per_minute: NonZeroU32::new(20).expect("20 is not zero"),
            max_keys: 100_000,
        }
    }
}

/// The limiters, shared by the handlers.
#[derive(Debug)]
pub(crate) struct LoginLimiter {
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    per_account: DefaultKeyedRateLimiter<String>,
    max_keys: usize,
    clock: DefaultClock,
}

impl LoginLimiter {
    pub(crate) fn new(limits: &LoginRateLimits) -> LoginLimiter {
        LoginLimiter {
            per_ip: RateLimiter::keyed(Quota::per_minute(limits.per_ip_per_minute)),
            per_account: RateLimiter::keyed(Quota::per_minute(limits.per_account_per_minute)),
            max_keys: limits.max_keys,
            clock: DefaultClock::default(),
        }
    }

    /// Counts one request from `ip` (if known) about `account` (an email, if any): 429
    /// `rate_limited` if either is over its quota.
    pub(crate) fn check(&self, ip: Option<IpAddr>, account: Option<&str>) -> Result<(), ApiError> {
        if let Some(ip) = ip {
            if !self.has_room(&self.per_ip) {
                return Err(ApiError::RateLimited { retry_after_s: 60 });
            }
            self.per_ip.check_key(&ip).map_err(|not| self.refusal(&not))?;
        }
        if let Some(account) = account {
            let key = account.trim().to_lowercase();
            if self.has_room(&self.per_account) {
                self.per_account.check_key(&key).map_err(|not| self.refusal(&not))?;
            }
        }
        Ok(())
    }

    /// Whether `limiter` has room for one more key (after forgetting the keys whose quota is
    /// whole again). Full, it cannot tell a known key from a new one (governor has no lookup),
    /// so every key is treated alike until keys cool down.
    fn has_room<K: std::hash::Hash + Eq + Clone>(&self, limiter: &DefaultKeyedRateLimiter<K>) -> bool {
        if limiter.len() < self.max_keys {
            return true;
        }
        limiter.retain_recent();
        limiter.shrink_to_fit();
        limiter.len() < self.max_keys
    }

    fn refusal(&self, not: &governor::NotUntil<governor::clock::QuantaInstant>) -> ApiError {
        let wait = not.wait_time_from(self.clock.now());
        ApiError::RateLimited { retry_after_s: wait.as_secs().saturating_add(1) }
    }
}

/// The client's IP (the TCP peer), where the server recorded it (not in router tests).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientIp(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(ip: u32, account: u32, max_keys: usize) -> LoginRateLimits {
        LoginRateLimits {
            per_ip_per_minute: NonZeroU32::new(ip).expect("test quota"),
            per_account_per_minute: NonZeroU32::new(account).expect("test quota"),
            max_keys,
        }
    }

    #[test]
    fn each_ip_and_each_account_has_its_own_quota() {
        let l = LoginLimiter::new(&limits(3, 2, 100));
        let (a, b) = (Some(IpAddr::from([10, 0, 0, 1])), Some(IpAddr::from([10, 0, 0, 2])));
        assert!(l.check(a, Some("x@y.z")).is_ok());
        assert!(l.check(a, Some("X@y.z ")).is_ok(), "the same account, however it is written");
        let refused = l.check(b, Some("x@y.z")).expect_err("the account's quota is used up");
        assert!(matches!(refused, ApiError::RateLimited { retry_after_s } if (1..=61).contains(&retry_after_s)));
        assert!(l.check(a, Some("other@y.z")).is_ok(), "a's third request");
        assert!(l.check(a, None).is_err(), "a's quota is used up");
        assert!(l.check(b, Some("third@y.z")).is_ok(), "b has its own");
    }

    #[test]
    fn the_keyed_state_is_bounded() {
        let l = LoginLimiter::new(&limits(1, 1, 4));
        for i in 0..4u8 {
            assert!(l.check(Some(IpAddr::from([10, 0, 0, i])), Some(&format!("{i}@y.z"))).is_ok());
        }
        // Full, and every key is still cooling down: a new IP is refused, a new account is not
        // limited (the IP is known; its quota is what stops it).
        assert!(l.check(Some(IpAddr::from([10, 0, 1, 0])), None).is_err());
        assert!(l.per_ip.len() <= 4 && l.per_account.len() <= 4);
        assert!(l.check(None, Some("new@y.z")).is_ok());
        assert!(l.per_account.len() <= 4);
    }
}
