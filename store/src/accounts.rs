//! Accounts and their sessions (`AccountStore`): portal accounts (full and sub-accounts, their
//! roles, tenants and permissions, TEN-5), login sessions (acting for a tenant, TEN-3), TOTP
//! (ACC-3) and the lockout after wrong passwords (ACC-2).

use async_trait::async_trait;
use fleetpulse_proto::ids::ChannelId;
use fleetpulse_proto::{AccountId, EnterpriseId, UnixMillis};
use serde::{Deserialize, Serialize};

use crate::{Page, Result, StoreError, TokenHash};

/// Most ids each list of an [`AccountFilter`] of [`AccountStore::list_accounts`] may hold.
pub const MAX_ACCOUNT_FILTER: usize = 10_000;

/// Largest `max_failures` of [`AccountStore::record_login_failure`].
pub const MAX_LOGIN_FAILURE_THRESHOLD: u32 = 1_000;

/// Most ids of each list in [`Permissions::data`].
pub const MAX_DATA_PERMISSION_IDS: usize = 1_000;

/// Accounts, sessions, TOTP and login lockout.
#[async_trait]
pub trait AccountStore: Send + Sync + 'static {
    /// Creates an account; [`StoreError::AlreadyExists`] if the email is taken.
    ///
    /// [`StoreError::InvalidInput`] (and nothing is created) unless the tenant fields fit the
    /// role ([`NewAccount::validate_tenant`]: a platform admin has neither, a channel admin
    /// exactly a channel, an enterprise admin exactly an enterprise), or if that channel or
    /// enterprise does not exist.
    async fn create_account(&self, new: NewAccount) -> Result<Account>;
    /// The account with this email (case-insensitive).
    async fn account_by_email(&self, email: &str) -> Result<Option<Account>>;
    /// The account with this id.
    async fn account(&self, id: AccountId) -> Result<Option<Account>>;
    /// Accounts matching the filter ([`AccountFilter`]), ordered by id, after the cursor (at
    /// most `page.limit`). [`StoreError::InvalidInput`] for a list of more than
    /// [`MAX_ACCOUNT_FILTER`] ids.
    async fn list_accounts(&self, filter: AccountFilter, page: Page) -> Result<Vec<Account>>;
    /// Freezes (or unfreezes) the account (TEN-2); freezing also deletes all its sessions, in
    /// the same transaction. False for an unknown account.
    async fn set_account_frozen(&self, account: AccountId, frozen: bool) -> Result<bool>;
    /// Replaces the account's password hash and sets whether it must change its password
    /// (ACC-2). False for an unknown account. Sessions are left alone (the caller ends them).
    async fn set_password(&self, account: AccountId, password_hash: String, must_change: bool) -> Result<bool>;
    /// Replaces a sub-account's permissions (TEN-5); false for an unknown account or a full
    /// account (which has none to replace).
    async fn set_account_permissions(&self, account: AccountId, permissions: Permissions) -> Result<bool>;
    /// Number of accounts with the role.
    async fn count_accounts(&self, role: Role) -> Result<u64>;
    /// Stores a session under the hash of its token.
    async fn create_session(&self, session: Session) -> Result<()>;
    /// The unexpired session with this token hash, if any.
    async fn session(&self, token_hash: TokenHash, now: UnixMillis) -> Result<Option<Session>>;
    /// Records a use of the session (ACC-2 idle expiry): its `last_seen_at` becomes
    /// `max(last_seen_at, now)`, so it never moves back. Nothing happens for an unknown session.
    async fn touch_session(&self, token_hash: TokenHash, now: UnixMillis) -> Result<()>;
    /// Deletes the session (logout); false if there was none.
    async fn delete_session(&self, token_hash: TokenHash) -> Result<bool>;
    /// Deletes every session of the account; returns how many there were.
    async fn delete_account_sessions(&self, account: AccountId) -> Result<u64>;
    /// Sets (or, with `None`, clears) the account's TOTP secret (ACC-3) and forgets its last
    /// accepted step; false for an unknown account.
    async fn set_totp(&self, account: AccountId, secret: Option<[u8; 20]>) -> Result<bool>;
    /// Accepts TOTP time step `step` for the account (ACC-3), atomically (one conditional
    /// update): its `totp_last_step` becomes `step` only if it is unset or below `step`.
    /// Returns whether it did: false for a replayed or older step, or an unknown account.
    /// [`StoreError::InvalidInput`] for a step above `i64::MAX`.
    async fn record_totp_step(&self, account: AccountId, step: u64) -> Result<bool>;
    /// Counts a wrong password of the account (ACC-2), atomically: when the count reaches
    /// `max_failures`, the account is locked until `now + lock_for_ms` (saturating) and the
    /// count starts again from 0. Returns the account as updated, or `None` if it does not exist.
    ///
    /// The caller refuses logins of a locked account ([`Account::is_locked`]) before checking
    /// their password. [`StoreError::InvalidInput`] unless `max_failures` is within
    /// 1..=[`MAX_LOGIN_FAILURE_THRESHOLD`].
    async fn record_login_failure(
        &self,
        account: AccountId,
        now: UnixMillis,
        max_failures: u32,
        lock_for_ms: u64,
    ) -> Result<Option<Account>>;
    /// A successful login (ACC-2): forgets the account's wrong passwords and lifts its lock.
    /// Nothing happens for an unknown account.
    async fn record_login_success(&self, account: AccountId) -> Result<()>;
}

/// What an account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Operates the whole platform.
    PlatformAdmin,
    /// Administers one channel and its subtree (sub-channels and their enterprises, TEN-2).
    ChannelAdmin,
    /// Administers one enterprise (TEN-3).
    EnterpriseAdmin,
}

impl Role {
    /// Name in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::PlatformAdmin => "platform_admin",
            Role::ChannelAdmin => "channel_admin",
            Role::EnterpriseAdmin => "enterprise_admin",
        }
    }

    /// Inverse of [`Role::as_str`].
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "platform_admin" => Some(Role::PlatformAdmin),
            "channel_admin" => Some(Role::ChannelAdmin),
            "enterprise_admin" => Some(Role::EnterpriseAdmin),
            _ => None,
        }
    }
}

/// A portal account.
///
/// Its `Debug` leaves out the TOTP secret (it shows only whether one is set).
#[derive(Clone, PartialEq, Eq)]
pub struct Account {
    /// Identifier.
    pub id: AccountId,
    /// Login email.
    pub email: String,
    /// PHC string of the password hash (argon2id).
    pub password_hash: String,
    /// Role.
    pub role: Role,
    /// The channel a [`Role::ChannelAdmin`] administers (`None` for the other roles).
    pub channel_id: Option<ChannelId>,
    /// The enterprise a [`Role::EnterpriseAdmin`] administers (`None` for the other roles).
    pub enterprise_id: Option<EnterpriseId>,
    /// Creation time.
    pub created_at: UnixMillis,
    /// Wrong passwords since the last successful login or the last lock (ACC-2).
    pub failed_logins: u32,
    /// Until when logins are refused (ACC-2); a time in the past means not locked.
    pub locked_until: Option<UnixMillis>,
    /// The TOTP secret (ACC-3), if the account has enrolled a second factor. Never printed by
    /// `Debug`.
    pub totp_secret: Option<[u8; 20]>,
    /// The last TOTP time step accepted for the account (ACC-3: a code is used at most once);
    /// `None` before the first one, and again after [`crate::AccountStore::set_totp`].
    pub totp_last_step: Option<u64>,
    /// Frozen by an administrator (TEN-2): the account cannot log in and has no sessions.
    pub frozen: bool,
    /// The account must change its password before it may do anything else (ACC-2: first
    /// login of an account created by another account).
    pub must_change_password: bool,
    /// The account that created this sub-account (TEN-5); `None` for a full account.
    pub parent_id: Option<AccountId>,
    /// A sub-account's permissions (TEN-5); `None` for a full account (everything its role
    /// allows).
    pub permissions: Option<crate::Permissions>,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("password_hash", &self.password_hash)
            .field("role", &self.role)
            .field("channel_id", &self.channel_id)
            .field("enterprise_id", &self.enterprise_id)
            .field("created_at", &self.created_at)
            .field("failed_logins", &self.failed_logins)
            .field("locked_until", &self.locked_until)
            .field("totp_secret", &self.totp_secret.as_ref().map(|_| "<redacted>"))
            .field("totp_last_step", &self.totp_last_step)
            .field("frozen", &self.frozen)
            .field("must_change_password", &self.must_change_password)
            .field("parent_id", &self.parent_id)
            .field("permissions", &self.permissions)
            .finish()
    }
}

impl Account {
    /// True if logins are refused at `now` (the lock has not run out yet).
    pub fn is_locked(&self, now: UnixMillis) -> bool {
        self.locked_until.is_some_and(|until| now < until)
    }
}

/// Filter of [`crate::AccountStore::list_accounts`]: with both `None`, every account; else the
/// accounts whose channel is one of `channels` or whose enterprise is one of `enterprises`
/// (each list at most [`crate::MAX_ACCOUNT_FILTER`] ids; an empty or absent list matches
/// nothing then).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountFilter {
    /// Accounts of these channels (channel admins).
    pub channels: Option<Vec<ChannelId>>,
    /// Accounts of these enterprises (enterprise admins).
    pub enterprises: Option<Vec<EnterpriseId>>,
    /// Only the sub-accounts of this account (TEN-5).
    pub parent: Option<AccountId>,
    /// Only accounts whose email or contact name (their settings) contains this, ignoring case
    /// (at most [`crate::MAX_SEARCH_CHARS`] characters).
    pub q: Option<String>,
}

/// Arguments of [`crate::AccountStore::create_account`].
#[derive(Debug, Clone)]
pub struct NewAccount {
    /// Login email.
    pub email: String,
    /// PHC string of the password hash.
    pub password_hash: String,
    /// Role.
    pub role: Role,
    /// The channel of a [`Role::ChannelAdmin`]: required for it, refused for the other roles.
    pub channel_id: Option<ChannelId>,
    /// The enterprise of a [`Role::EnterpriseAdmin`]: required for it, refused for the other
    /// roles.
    pub enterprise_id: Option<EnterpriseId>,
    /// Whether the account must change its password at its first login (ACC-2).
    pub must_change_password: bool,
    /// The account creating this one as its sub-account (TEN-5): it must exist and have the same
    /// role and tenant.
    pub parent_id: Option<AccountId>,
    /// A sub-account's permissions; `None` for a full account. Given exactly for sub-accounts.
    pub permissions: Option<crate::Permissions>,
}

impl NewAccount {
    /// [`crate::StoreError::InvalidInput`] unless the tenant fields fit the role: a platform
    /// admin has neither, a channel admin exactly a channel, an enterprise admin exactly an
    /// enterprise. (Whether that channel or enterprise exists is checked by the store.)
    pub fn validate_tenant(&self) -> crate::Result<()> {
        let fits = match self.role {
            Role::PlatformAdmin => self.channel_id.is_none() && self.enterprise_id.is_none(),
            Role::ChannelAdmin => self.channel_id.is_some() && self.enterprise_id.is_none(),
            Role::EnterpriseAdmin => self.channel_id.is_none() && self.enterprise_id.is_some(),
        };
        if !fits {
            let expected = match self.role {
                Role::PlatformAdmin => "neither a channel nor an enterprise",
                Role::ChannelAdmin => "a channel and no enterprise",
                Role::EnterpriseAdmin => "an enterprise and no channel",
            };
            return Err(crate::StoreError::InvalidInput(format!("a {} account has {expected}", self.role.as_str())));
        }
        if self.parent_id.is_some() != self.permissions.is_some() {
            return Err(crate::StoreError::InvalidInput(
                "a sub-account has a parent account and permissions; a full account neither".into(),
            ));
        }
        Ok(())
    }
}

/// A login session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Hash of the bearer token.
    pub token_hash: TokenHash,
    /// Whose session.
    pub account_id: AccountId,
    /// Creation time.
    pub created_at: UnixMillis,
    /// Expiry time.
    pub expires_at: UnixMillis,
    /// Last use (ACC-2: sessions expire after a while idle); only moves forward
    /// ([`crate::AccountStore::touch_session`]).
    pub last_seen_at: UnixMillis,
    /// The tenant a channel account acts for in this session (TEN-3), if any.
    pub acting: Option<crate::Acting>,
}

/// A portal feature a sub-account may be allowed (TEN-5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    /// Device lists, details and the dashboard.
    Devices,
    /// Alarm records: read, acknowledge, clear.
    Alarms,
    /// Alarm strategies.
    Strategies,
    /// Enterprises: create, edit, authorization.
    Enterprises,
    /// Channels: create, edit.
    Channels,
    /// Accounts: create, freeze, reset passwords.
    Accounts,
    /// The operation log.
    OperationLog,
    /// Orders and statements: place and cancel orders (ORD-1, ORD-2).
    Orders,
}

impl Feature {
    /// Every feature.
    pub const ALL: [Feature; 8] = [
        Feature::Devices,
        Feature::Alarms,
        Feature::Strategies,
        Feature::Enterprises,
        Feature::Channels,
        Feature::Accounts,
        Feature::OperationLog,
        Feature::Orders,
    ];
}

/// Which tenants' data a sub-account may see (TEN-5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum DataPermission {
    /// Everything its parent account sees.
    All,
    /// Only these: each channel with its whole subtree, and each enterprise (each list at most
    /// [`MAX_DATA_PERMISSION_IDS`] ids). Always within the parent account's scope.
    Only {
        /// Channels (with their subtrees).
        #[serde(default)]
        channels: Vec<ChannelId>,
        /// Enterprises.
        #[serde(default)]
        enterprises: Vec<EnterpriseId>,
    },
}

/// A sub-account's permissions (TEN-5): what it may do and whose data it may see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Permissions {
    /// The features it may use, sorted, each once.
    pub features: Vec<Feature>,
    /// Whose data.
    pub data: DataPermission,
}

impl Permissions {
    /// Sorts and dedups the features; [`StoreError::InvalidInput`] if a data list is longer
    /// than [`MAX_DATA_PERMISSION_IDS`].
    pub fn normalized(mut self) -> Result<Permissions> {
        self.features.sort_unstable();
        self.features.dedup();
        if let DataPermission::Only { channels, enterprises } = &mut self.data {
            crate::check_bound("data permission channels", channels.len(), MAX_DATA_PERMISSION_IDS)?;
            crate::check_bound("data permission enterprises", enterprises.len(), MAX_DATA_PERMISSION_IDS)?;
            channels.sort_unstable();
            channels.dedup();
            enterprises.sort_unstable();
            enterprises.dedup();
        }
        Ok(self)
    }

    /// Whether the feature is allowed.
    pub fn allows(&self, feature: Feature) -> bool {
        self.features.binary_search(&feature).is_ok()
    }

    /// As stored (JSON).
    pub(crate) fn encode(&self) -> Result<String> {
        serde_json::to_string(self).map_err(|e| StoreError::Backend(format!("encoding permissions: {e}")))
    }

    /// Inverse of [`Permissions::encode`].
    pub(crate) fn decode(s: &str) -> std::result::Result<Permissions, serde_json::Error> {
        serde_json::from_str(s)
    }
}

/// Whom a session acts for, when a channel account has "logged into" a tenant below it (TEN-3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Acting {
    /// Inside an enterprise that authorized its channel.
    Enterprise(EnterpriseId),
    /// Inside one of its sub-channels.
    Channel(ChannelId),
}

/// [`StoreError::InvalidInput`] unless `max_failures` is within 1..=[`MAX_LOGIN_FAILURE_THRESHOLD`];
/// else the time the lock of [`AccountStore::record_login_failure`] runs out (saturating).
pub(crate) fn login_lock_until(now: UnixMillis, max_failures: u32, lock_for_ms: u64) -> Result<UnixMillis> {
    if max_failures == 0 || max_failures > MAX_LOGIN_FAILURE_THRESHOLD {
        return Err(StoreError::InvalidInput(format!(
            "max_failures {max_failures} (must be 1 to {MAX_LOGIN_FAILURE_THRESHOLD})"
        )));
    }
    let lock = i64::try_from(lock_for_ms).unwrap_or(i64::MAX);
    Ok(UnixMillis(now.0.saturating_add(lock)))
}

/// [`StoreError::InvalidInput`] unless the TOTP step of [`AccountStore::record_totp_step`] fits
/// in a database row (`i64`); else the step as stored.
pub(crate) fn totp_step(step: u64) -> Result<i64> {
    i64::try_from(step).map_err(|_| StoreError::InvalidInput(format!("TOTP step {step} (at most {})", i64::MAX)))
}

/// [`StoreError::InvalidInput`] unless a new sub-account's parent (`found`) exists, is itself a
/// full account (sub-accounts do not nest) and has the same role and tenant.
pub(crate) fn check_sub_account_parent(new: &NewAccount, found: Option<&Account>) -> Result<()> {
    let Some(parent) = found else {
        return Err(StoreError::InvalidInput(format!(
            "parent account {} does not exist",
            new.parent_id.map_or(0, |p| p.0)
        )));
    };
    if parent.parent_id.is_some() {
        return Err(StoreError::InvalidInput("a sub-account cannot have sub-accounts".into()));
    }
    if (parent.role, parent.channel_id, parent.enterprise_id) != (new.role, new.channel_id, new.enterprise_id) {
        return Err(StoreError::InvalidInput("a sub-account has the role and tenant of its parent account".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_normalize_and_round_trip() {
        let p = Permissions {
            features: vec![Feature::Alarms, Feature::Devices, Feature::Alarms],
            data: DataPermission::Only { channels: vec![ChannelId(3), ChannelId(1)], enterprises: vec![] },
        }
        .normalized()
        .expect("normalized");
        assert_eq!(p.features, vec![Feature::Devices, Feature::Alarms]);
        assert!(p.allows(Feature::Alarms) && !p.allows(Feature::Accounts));
        assert_eq!(Permissions::decode(&p.encode().expect("encode")).ok(), Some(p));
        let too_many = Permissions {
            features: vec![],
            data: DataPermission::Only {
                channels: (0..=MAX_DATA_PERMISSION_IDS as u64).map(ChannelId).collect(),
                enterprises: vec![],
            },
        };
        assert!(too_many.normalized().is_err());
    }
}
