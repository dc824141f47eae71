//! Tenant administration beyond single accounts (`TenantAdminStore`, TEN-1, TEN-5): deleting a
//! sub-account, freezing a whole tenant (a channel with its subtree, or an enterprise) and
//! unfreezing exactly the accounts that freeze froze, and moving an enterprise to another channel.
//!
//! Choices where the issue is silent:
//! - A deleted sub-account leaves a tombstone row (commands, tasks and firmware images it issued
//!   keep their author): its email is released (so it may be used again), it cannot log in, it
//!   has no sessions, and no read of accounts returns it any more.
//! - A tenant freeze freezes every account of the tenant that is not frozen yet and remembers
//!   that it did (`frozen_by`); unfreezing the tenant unfreezes exactly those. An account frozen
//!   by hand, or by another tenant's freeze (a sub-channel frozen before its parent), stays
//!   frozen. Freezing or unfreezing one account by hand makes it its own again.
//! - Moving an enterprise resets its authorization of its channel (TEN-3) to `none` and ends the
//!   sessions acting inside it: the new channel has to ask for it.

use async_trait::async_trait;
use fleetpulse_proto::{AccountId, ChannelId, EnterpriseId, UnixMillis};
use serde::{Deserialize, Serialize};

use crate::{Enterprise, Result};

/// A tenant whose accounts can be frozen together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TenantRef {
    /// A channel with every sub-channel below it and all their enterprises.
    Channel(ChannelId),
    /// One enterprise.
    Enterprise(EnterpriseId),
}

impl TenantRef {
    /// The tenant as the accounts' `frozen_by` column stores it (`channel:3`, `enterprise:7`).
    pub fn key(self) -> String {
        match self {
            TenantRef::Channel(c) => format!("channel:{}", c.0),
            TenantRef::Enterprise(e) => format!("enterprise:{}", e.0),
        }
    }

    /// The kind (`channel`, `enterprise`) and id, as the freeze table stores them.
    pub fn parts(self) -> (&'static str, u64) {
        match self {
            TenantRef::Channel(c) => ("channel", c.0),
            TenantRef::Enterprise(e) => ("enterprise", e.0),
        }
    }
}

/// A tenant's freeze.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct TenantFreeze {
    /// The frozen tenant.
    pub tenant: TenantRef,
    /// When.
    pub frozen_at: UnixMillis,
    /// Who froze it.
    pub frozen_by: AccountId,
    /// How many accounts this freeze froze (those already frozen are not counted).
    pub accounts: u64,
}

/// Deleting sub-accounts, tenant freezes, enterprise moves.
#[async_trait]
pub trait TenantAdminStore: Send + Sync + 'static {
    /// Deletes a sub-account at `now` (TEN-5): a tombstone row stays, its email is released, and
    /// its sessions, password reset tokens and login challenges go in the same transaction.
    /// False (nothing changed) for an unknown or already deleted account, or a full account.
    async fn delete_sub_account(&self, id: AccountId, now: UnixMillis) -> Result<bool>;
    /// Freezes every account of the tenant not frozen yet (a channel: of its subtree's channels
    /// and of their enterprises; sub-accounts included), remembering it as their freezer, and
    /// deletes their sessions, in one transaction. `None` (nothing changed) if the tenant is
    /// already frozen; [`crate::StoreError::InvalidInput`] for an unknown tenant.
    async fn freeze_tenant(&self, tenant: TenantRef, by: AccountId, now: UnixMillis) -> Result<Option<TenantFreeze>>;
    /// Unfreezes exactly the accounts this tenant's freeze froze (and that nobody unfroze or
    /// froze again by hand since) and forgets the freeze; how many were unfrozen, or `None` if
    /// the tenant is not frozen.
    async fn unfreeze_tenant(&self, tenant: TenantRef) -> Result<Option<u64>>;
    /// The tenant's freeze, if it is frozen.
    async fn tenant_freeze(&self, tenant: TenantRef) -> Result<Option<TenantFreeze>>;
    /// Moves the enterprise under `to` (`None`: directly under the platform): its authorization
    /// of its channel becomes `none` and the sessions acting inside it end, in one transaction.
    /// `None` for an unknown enterprise; [`crate::StoreError::InvalidInput`] for an unknown
    /// channel. Its orders, devices and licences stay with it.
    async fn move_enterprise(&self, id: EnterpriseId, to: Option<ChannelId>) -> Result<Option<Enterprise>>;
}

/// The email a deleted account's row keeps: not an address (no `@`), so no login or lookup by
/// email ever finds it, and unique by the id.
pub(crate) fn tombstone_email(id: AccountId) -> String {
    format!("deleted-account-{}", id.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_keys_name_kind_and_id() {
        assert_eq!(TenantRef::Channel(ChannelId(3)).key(), "channel:3");
        assert_eq!(TenantRef::Enterprise(EnterpriseId(7)).key(), "enterprise:7");
        assert_eq!(TenantRef::Enterprise(EnterpriseId(7)).parts(), ("enterprise", 7));
        assert!(!tombstone_email(AccountId(5)).contains('@'));
    }
}
