//! The API's clock (issue 10): every time the API decides with (session expiry and idle time,
//! lockout, TOTP steps, reset links, login codes, stored timestamps) is read from a [`Clock`] in
//! the router state, never from the wall clock directly, so tests advance a [`ManualClock`]
//! instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use fleetpulse_proto::UnixMillis;

/// Where the API reads the time: the system clock ([`crate::app`]) or a manual one
/// ([`crate::app_with_clock`], tests).
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The wall clock.
    #[default]
    System,
    /// A clock that moves only when told to.
    Manual(ManualClock),
}

impl Clock {
    /// The current time.
    pub fn now(&self) -> UnixMillis {
        match self {
            Clock::System => UnixMillis::now(),
            Clock::Manual(manual) => manual.now(),
        }
    }
}

/// A clock that stands still until [`ManualClock::advance`] or [`ManualClock::set`] moves it;
/// clones share the time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: UnixMillis) -> ManualClock {
        ManualClock(Arc::new(AtomicI64::new(start.0)))
    }

    /// The time it shows.
    pub fn now(&self) -> UnixMillis {
        UnixMillis(self.0.load(Ordering::SeqCst))
    }

    /// Moves it forward by `by` (saturating).
    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        let _ = self.0.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| Some(t.saturating_add(by)));
    }

    /// Sets it to `t`.
    pub fn set(&self, t: UnixMillis) {
        self.0.store(t.0, Ordering::SeqCst);
    }

    /// The [`Clock`] reading this manual clock.
    pub fn clock(&self) -> Clock {
        Clock::Manual(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_clones_share_it() {
        let manual = ManualClock::new(UnixMillis(1_000));
        let clock = manual.clock();
        assert_eq!(clock.now(), UnixMillis(1_000));
        manual.advance(Duration::from_secs(2));
        assert_eq!(clock.now(), UnixMillis(3_000));
        manual.set(UnixMillis(7));
        assert_eq!(clock.now(), UnixMillis(7));
        manual.advance(Duration::MAX);
        assert_eq!(clock.now(), UnixMillis(i64::MAX));
        assert!(Clock::System.now().0 > 1_600_000_000_000, "the system clock reads the wall clock");
    }
}
