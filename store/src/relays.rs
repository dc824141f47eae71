//! Relay grants (`RelayStore`, ING-9, issue 15): the credentials with which a `fleetpulse relay`
//! authenticates itself to the server, managed in the portal. Each grant has a name, a scope
//! (one enterprise, or one channel: every enterprise of the channel's subtree), the credential's
//! SHA-256 ([`TokenHash`]; the store never holds the credential itself), who created it and
//! when, when it was revoked, and when a relay last used it.
//!
//! Choices where the issue is silent:
//! - A revoked grant stays (listed, with `revoked_at`) until it is deleted, so that the portal
//!   shows which relays were cut off and when; it cannot be rotated or revoked again.
//! - Rotating replaces the hash in place (same id, same name and scope): the old credential
//!   stops working, the new one works at once.
//! - At most [`MAX_RELAYS`] grants in the whole store, revoked ones included (a bound for the
//!   listing and for the server's cache); creating one more is [`StoreError::LimitExceeded`].

use async_trait::async_trait;
use fleetpulse_proto::{AccountId, UnixMillis};
use serde::{Deserialize, Serialize};

use crate::{Result, StoreError, TenantRef, TokenHash};

/// Most relay grants kept, revoked ones included.
pub const MAX_RELAYS: usize = 1_000;

/// Longest relay name, in characters.
pub const MAX_RELAY_NAME: usize = 100;

/// A relay grant's id (never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct RelayId(pub u64);

impl std::fmt::Display for RelayId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A relay grant as stored (never its credential).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Relay {
    /// Identifier.
    pub id: RelayId,
    /// Display name (unique nowhere: two sites may both call theirs "lobby").
    pub name: String,
    /// Whose devices the relay may carry: one enterprise, or a channel (every enterprise of the
    /// channel and of its sub-channels).
    pub scope: TenantRef,
    /// The account that created it.
    pub created_by: AccountId,
    /// When it was created.
    pub created_at: UnixMillis,
    /// When its credential was last replaced (`None`: never rotated).
    pub rotated_at: Option<UnixMillis>,
    /// When it was revoked (`None`: in force).
    pub revoked_at: Option<UnixMillis>,
    /// When a relay last authenticated with it (updated at most once a minute).
    pub last_seen_at: Option<UnixMillis>,
}

/// Arguments of [`RelayStore::create_relay`].
#[derive(Debug, Clone)]
pub struct NewRelay {
    /// Display name, 1 to [`MAX_RELAY_NAME`] characters, no control characters.
    pub name: String,
    /// The scope; the enterprise or channel must exist ([`StoreError::InvalidInput`]).
    pub scope: TenantRef,
    /// SHA-256 of the credential (unique: [`StoreError::AlreadyExists`]`("relay credential")`).
    pub credential_hash: TokenHash,
    /// Who creates it.
    pub created_by: AccountId,
    /// When.
    pub at: UnixMillis,
}

/// Relay grants.
#[async_trait]
pub trait RelayStore: Send + Sync + 'static {
    /// Stores a new grant. [`StoreError::InvalidInput`] for a bad name or an unknown scope,
    /// [`StoreError::LimitExceeded`] beyond [`MAX_RELAYS`].
    async fn create_relay(&self, new: NewRelay) -> Result<Relay>;
    /// The grant with this id.
    async fn relay(&self, id: RelayId) -> Result<Option<Relay>>;
    /// Every grant (at most [`MAX_RELAYS`]), by id.
    async fn list_relays(&self) -> Result<Vec<Relay>>;
    /// The grant whose credential has this hash, revoked or not (the caller refuses a revoked
    /// one).
    async fn relay_by_credential(&self, hash: TokenHash) -> Result<Option<Relay>>;
    /// Renames a grant (revoked ones too); `None` for an unknown one.
    async fn rename_relay(&self, id: RelayId, name: String) -> Result<Option<Relay>>;
    /// Replaces the credential's hash of a grant in force; `None` for an unknown or revoked one.
    async fn rotate_relay(&self, id: RelayId, credential_hash: TokenHash, at: UnixMillis) -> Result<Option<Relay>>;
    /// Revokes a grant in force at `at`; `None` for an unknown or already revoked one.
    async fn revoke_relay(&self, id: RelayId, at: UnixMillis) -> Result<Option<Relay>>;
    /// Deletes a grant; false for an unknown one.
    async fn delete_relay(&self, id: RelayId) -> Result<bool>;
    /// Records that a relay used the grant at `at` (never moves `last_seen_at` back).
    async fn touch_relay(&self, id: RelayId, at: UnixMillis) -> Result<()>;
}

/// The name, checked: trimmed, 1 to [`MAX_RELAY_NAME`] characters, no control character.
pub(crate) fn checked_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() {
        return Err(StoreError::InvalidInput("the relay name is empty".into()));
    }
    crate::model::check_text("the relay name", name, MAX_RELAY_NAME)?;
    Ok(name.to_owned())
}

/// The scope from its stored columns (kind, id).
pub(crate) fn scope_from(kind: &str, id: u64) -> Option<TenantRef> {
    match kind {
        "channel" => Some(TenantRef::Channel(fleetpulse_proto::ChannelId(id))),
        "enterprise" => Some(TenantRef::Enterprise(fleetpulse_proto::EnterpriseId(id))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(checked_name("  lobby ").expect("valid"), "lobby");
        assert!(checked_name("   ").is_err());
        assert!(checked_name(&"x".repeat(MAX_RELAY_NAME + 1)).is_err());
        assert!(checked_name("a\nb").is_err());
        let scope = TenantRef::Channel(fleetpulse_proto::ChannelId(3));
        let (kind, id) = scope.parts();
        assert_eq!(scope_from(kind, id), Some(scope));
        assert_eq!(scope_from("site", 3), None);
    }
}
