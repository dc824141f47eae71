//! Relay authentication at the server (ING-9, issue 15): which relay a presented
//! [`crate::https::RELAY_HEADER`] credential is, and whether it may speak for a device's
//! enterprise.
//!
//! A credential is found by its SHA-256, never compared as text: the config file's grants
//! (`[[ingest.relays]]`, hashed once at start) and the portal's stored grants
//! ([`fleetpulse_store::RelayStore`], looked up by hash). A stored grant found is cached for
//! [`RELAY_GRANT_TTL`] (at most [`MAX_CACHED_GRANTS`] credentials); so a grant revoked, rotated
//! or deleted in the portal stops working within [`RELAY_GRANT_TTL`]. A channel-scoped grant
//! carries the devices of every enterprise of the channel's subtree (as read when it was
//! cached), each device's enterprise placed by its channel (cached as long). Unknown credentials
//! are not cached (each one costs a store read; they are counted as authentication failures).
//! A stored grant's `last_seen_at` is written at most once per [`LAST_SEEN_EVERY`] per grant.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleetpulse_proto::{ChannelId, EnterpriseId, UnixMillis, close_code};
use fleetpulse_store::{RelayId, RelayStore, TenantRef, TenantStore, TokenHash};

use crate::https::RelayGrant;
use crate::session::Close;

/// How long a stored grant (and a device enterprise's channel) is trusted without reading it
/// again: the longest a revoke, rotation or deletion takes to reach the server.
pub const RELAY_GRANT_TTL: Duration = Duration::from_secs(5);

/// Most stored credentials cached, and most enterprises' channels cached.
pub const MAX_CACHED_GRANTS: usize = 4_096;

/// A stored grant's `last_seen_at` is written at most this often.
pub const LAST_SEEN_EVERY: Duration = Duration::from_secs(60);

/// The SHA-256 of a relay credential, as the portal stores it.
pub fn credential_hash(credential: &str) -> TokenHash {
    let digest = ring::digest::digest(&ring::digest::SHA256, credential.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    TokenHash(out)
}

/// Whose devices an authenticated relay may carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RelayScope {
    /// One enterprise's.
    Enterprise(EnterpriseId),
    /// Those of every enterprise whose channel is in `subtree` (the grant's channel and its
    /// descendants, sorted).
    Channel(Arc<[ChannelId]>),
}

/// An authenticated relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuthorizedRelay {
    /// The stored grant (`None`: the config file's).
    pub(crate) grant: Option<RelayId>,
    /// Its scope.
    pub(crate) scope: RelayScope,
}

/// A map whose entries are trusted for a fixed time, bounded in entries: sans-I/O, the caller
/// gives the time.
#[derive(Debug)]
pub(crate) struct TtlCache<K, V> {
    ttl: Duration,
    capacity: usize,
    entries: HashMap<K, (V, Instant)>,
}

impl<K: std::hash::Hash + Eq + Clone, V: Clone> TtlCache<K, V> {
    pub(crate) fn new(ttl: Duration, capacity: usize) -> TtlCache<K, V> {
        TtlCache { ttl, capacity, entries: HashMap::new() }
    }

    /// The value stored for `key` less than the TTL before `now`.
    pub(crate) fn get(&self, key: &K, now: Instant) -> Option<V> {
        self.entries.get(key).filter(|(_, at)| now.saturating_duration_since(*at) < self.ttl).map(|(v, _)| v.clone())
    }

    /// Stores `value` as of `now`; when full, expired entries go first, then everything (a
    /// cache refills from the store).
    pub(crate) fn insert(&mut self, key: K, value: V, now: Instant) {
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            let ttl = self.ttl;
            self.entries.retain(|_, (_, at)| now.saturating_duration_since(*at) < ttl);
            if self.entries.len() >= self.capacity {
                self.entries.clear();
            }
        }
        self.entries.insert(key, (value, now));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Which relay a credential is, and what it may carry.
pub(crate) struct RelayAuth {
    /// The config file's grants by their credential's hash.
    file: HashMap<TokenHash, AuthorizedRelay>,
    grants: Arc<dyn RelayStore>,
    tenants: Arc<dyn TenantStore>,
    cached: Mutex<TtlCache<TokenHash, AuthorizedRelay>>,
    /// Each enterprise's channel (`None`: directly under the platform, or unknown).
    channels: Mutex<TtlCache<EnterpriseId, Option<ChannelId>>>,
    /// When each stored grant's `last_seen_at` was last written.
    touched: Mutex<TtlCache<RelayId, ()>>,
}

impl std::fmt::Debug for RelayAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayAuth").field("file_grants", &self.file.len()).finish_non_exhaustive()
    }
}

impl RelayAuth {
    pub(crate) fn new(file: &[RelayGrant], grants: Arc<dyn RelayStore>, tenants: Arc<dyn TenantStore>) -> RelayAuth {
        let file = file
            .iter()
            .map(|g| {
                (
                    credential_hash(&g.credential),
                    AuthorizedRelay { grant: None, scope: RelayScope::Enterprise(g.enterprise) },
                )
            })
            .collect();
        RelayAuth {
            file,
            grants,
            tenants,
            cached: Mutex::new(TtlCache::new(RELAY_GRANT_TTL, MAX_CACHED_GRANTS)),
            channels: Mutex::new(TtlCache::new(RELAY_GRANT_TTL, MAX_CACHED_GRANTS)),
            touched: Mutex::new(TtlCache::new(LAST_SEEN_EVERY, MAX_CACHED_GRANTS)),
        }
    }

    /// The relay presenting `credential`: 401 for an unknown or revoked one, 503 when the store
    /// cannot say.
    pub(crate) async fn authenticate(&self, credential: &str) -> Result<AuthorizedRelay, Close> {
        let hash = credential_hash(credential);
        if let Some(relay) = self.file.get(&hash) {
            return Ok(relay.clone());
        }
        let now = Instant::now();
        let cached = self.cached.lock().map_or(None, |c| c.get(&hash, now));
        let relay = match cached {
            Some(relay) => relay,
            None => {
                let unknown = || Close::new(close_code::BAD_CREDENTIAL, "unknown relay credential");
                let stored = self.grants.relay_by_credential(hash).await.map_err(unavailable)?;
                let Some(stored) = stored.filter(|g| g.revoked_at.is_none()) else { return Err(unknown()) };
                let scope = match stored.scope {
                    TenantRef::Enterprise(e) => RelayScope::Enterprise(e),
                    TenantRef::Channel(c) => {
                        RelayScope::Channel(self.tenants.channel_subtree(c).await.map_err(unavailable)?.into())
                    }
                };
                let relay = AuthorizedRelay { grant: Some(stored.id), scope };
                if let Ok(mut cache) = self.cached.lock() {
                    cache.insert(hash, relay.clone(), now);
                }
                relay
            }
        };
        if let Some(id) = relay.grant {
            self.seen(id, now);
        }
        Ok(relay)
    }

    /// Whether `relay` may carry a device of `enterprise`.
    pub(crate) async fn allows(&self, relay: &AuthorizedRelay, enterprise: EnterpriseId) -> Result<bool, Close> {
        let subtree = match &relay.scope {
            RelayScope::Enterprise(e) => return Ok(*e == enterprise),
            RelayScope::Channel(subtree) => subtree,
        };
        let now = Instant::now();
        let cached = self.channels.lock().map_or(None, |c| c.get(&enterprise, now));
        let channel = match cached {
            Some(channel) => channel,
            None => {
                let found = self.tenants.enterprise(enterprise).await.map_err(unavailable)?;
                let channel = found.and_then(|e| e.channel_id);
                if let Ok(mut cache) = self.channels.lock() {
                    cache.insert(enterprise, channel, now);
                }
                channel
            }
        };
        Ok(channel.is_some_and(|c| subtree.binary_search(&c).is_ok()))
    }

    /// Writes the grant's `last_seen_at` unless it was written less than [`LAST_SEEN_EVERY`]
    /// ago (in the background: the request does not wait).
    fn seen(&self, id: RelayId, now: Instant) {
        let Ok(mut touched) = self.touched.lock() else { return };
        if touched.get(&id, now).is_some() {
            return;
        }
        touched.insert(id, (), now);
        drop(touched);
        let grants = self.grants.clone();
        tokio::spawn(async move {
            if let Err(error) = grants.touch_relay(id, UnixMillis::now()).await {
                tracing::debug!(message = "Recording a relay's last use failed.", %error, relay = %id);
            }
        });
    }
}

fn unavailable(error: fleetpulse_store::StoreError) -> Close {
    tracing::warn!(message = "Reading a relay grant failed.", %error);
    Close::new(close_code::SERVER_ERROR, "store unavailable; retry")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_trusted_for_the_ttl_only() {
        let start = Instant::now();
        let mut cache = TtlCache::new(RELAY_GRANT_TTL, 4);
        cache.insert(1, "grant", start);
        assert_eq!(cache.get(&1, start + RELAY_GRANT_TTL - Duration::from_millis(1)), Some("grant"));
        // A revoke in the store is seen by the first lookup after the TTL: the entry is gone.
        assert_eq!(cache.get(&1, start + RELAY_GRANT_TTL), None);
        assert_eq!(cache.get(&2, start), None);
    }

    #[test]
    fn the_cache_stays_within_its_capacity() {
        let start = Instant::now();
        let mut cache = TtlCache::new(Duration::from_secs(5), 3);
        for k in 0..3 {
            cache.insert(k, k, start);
        }
        // Full of fresh entries: all go, the new one stays.
        cache.insert(3, 3, start + Duration::from_secs(1));
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get(&3, start + Duration::from_secs(1)), Some(3));
        // Expired entries go first; fresh ones stay.
        cache.insert(4, 4, start + Duration::from_secs(2));
        cache.insert(5, 5, start + Duration::from_secs(2));
        cache.insert(6, 6, start + Duration::from_secs(6) + Duration::from_millis(500));
        assert!(cache.len() <= 3);
        assert_eq!(cache.get(&3, start + Duration::from_secs(6)), None, "expired");
        assert_eq!(cache.get(&4, start + Duration::from_secs(6)), Some(4));
        for k in 0..100 {
            cache.insert(100 + k, k, start + Duration::from_secs(7));
            assert!(cache.len() <= 3);
        }
    }

    #[test]
    fn credentials_hash_as_the_portal_hashes_them() {
        // SHA-256("abc"), the FIPS 180-2 test vector.
        let hex: String = credential_hash("abc").0.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
