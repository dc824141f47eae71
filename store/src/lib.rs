//! The storage API of fleetpulse and its embedded backend.
//!
//! Two halves, kept apart so that a scale-out backend can put each on the engine built for it:
//! - [`EntityStore`]: portal entities (accounts, sessions, enterprises, devices), mutable rows.
//! - [`EventStore`]: append-only event streams (status events, resource reports, alarm events),
//!   the aggregated alarm records, and the per-device delivery marks used to drop duplicates.
//!
//! [`EventStore::append`] returns only once the batch is durable: ingest acknowledges a frame to
//! its device only after that. The embedded backend ([`embedded`]) keeps everything in one
//! SQLite database under the data directory, written by one thread with group commit.

mod account_security;
mod alarm_lifecycle;
pub mod clickhouse;
mod device_sql;
pub mod embedded;
mod model;
pub mod postgres;
pub mod scaleout;
pub mod spool;
mod tenancy;

pub use account_security::*;
pub use alarm_lifecycle::{AlarmLifecycle, Unchanged};
pub use model::*;
pub use tenancy::*;

use async_trait::async_trait;
use fleetpulse_proto::ids::ChannelId;
use fleetpulse_proto::{DeviceId, EnterpriseId};
use std::sync::Arc;

/// Errors of every store operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database engine failed (I/O, corruption, a bug in a query).
    #[error("database error: {0}")]
    Backend(String),
    /// The device identity is registered to another enterprise.
    #[error("the device is registered to another enterprise")]
    DeviceConflict,
    /// A unique value (email, name, credential) is already taken.
    #[error("{0} already exists")]
    AlreadyExists(&'static str),
    /// The store was shut down.
    #[error("the store is shut down")]
    Closed,
    /// A schema migration failed on start.
    #[error("schema migration {version} failed: {reason}")]
    Migration {
        /// The migration's version.
        version: u32,
        /// Why it failed.
        reason: String,
    },
    /// The data directory could not be used.
    #[error("data directory: {0}")]
    Io(#[from] std::io::Error),
    /// The caller's arguments break a documented bound of the operation (nothing was changed).
    #[error("invalid input: {0}")]
    InvalidInput(String),
}

/// Most channels one [`EntityStore::channel_subtree`] returns: a larger subtree is refused.
pub const MAX_CHANNEL_SUBTREE: usize = 10_000;

/// Most channel ids one [`EntityStore::list_enterprises_in`] may filter by.
pub const MAX_ENTERPRISE_CHANNEL_FILTER: usize = 10_000;

/// Most ids each list of an [`AccountFilter`] of [`EntityStore::list_accounts`] may hold.
pub const MAX_ACCOUNT_FILTER: usize = 10_000;

/// Most messages one [`EntityStore::enqueue_outbox_batch`] may queue.
pub const MAX_OUTBOX_BATCH: usize = 1_000;

/// Most item keys one [`EntityStore::outbox_known_items`] may ask about.
pub const MAX_OUTBOX_ITEM_QUERY: usize = 10_000;

/// Most receivers one [`EntityStore::due_outbox_except`] may leave out.
pub const MAX_OUTBOX_EXCEPT: usize = 1_000;

/// Most records one [`EventStore::latest_alarm_records`] returns, whatever limit it is given.
pub const MAX_LATEST_ALARM_RECORDS: u32 = 500;

/// Most rows one [`EntityStore::append_operation_logs`] may append.
pub const MAX_OPERATION_LOG_BATCH: usize = 1_000;

/// Most rows one [`EntityStore::list_operation_logs`] returns, whatever limit it is given.
pub const MAX_OPERATION_LOG_PAGE: u32 = 1_000;

/// Longest [`NewOperationLog::account_email`], in bytes.
pub const MAX_OPERATION_LOG_EMAIL: usize = 320;

/// Longest [`NewOperationLog::operation`], in bytes.
pub const MAX_OPERATION_LOG_OPERATION: usize = 200;

/// Longest [`NewOperationLog::method`], in bytes.
pub const MAX_OPERATION_LOG_METHOD: usize = 16;

/// Longest [`NewOperationLog::path`], in bytes.
pub const MAX_OPERATION_LOG_PATH: usize = 2_048;

/// Longest [`NewOperationLog::ip`], in bytes.
pub const MAX_OPERATION_LOG_IP: usize = 64;

/// Largest `max_failures` of [`EntityStore::record_login_failure`].
pub const MAX_LOGIN_FAILURE_THRESHOLD: u32 = 1_000;

/// [`StoreError::InvalidInput`] unless `max_failures` is within 1..=[`MAX_LOGIN_FAILURE_THRESHOLD`];
/// else the time the lock of [`EntityStore::record_login_failure`] runs out (saturating).
pub(crate) fn login_lock_until(
    now: fleetpulse_proto::UnixMillis,
    max_failures: u32,
    lock_for_ms: u64,
) -> Result<fleetpulse_proto::UnixMillis> {
    if max_failures == 0 || max_failures > MAX_LOGIN_FAILURE_THRESHOLD {
        return Err(StoreError::InvalidInput(format!(
            "max_failures {max_failures} (must be 1 to {MAX_LOGIN_FAILURE_THRESHOLD})"
        )));
    }
    let lock = i64::try_from(lock_for_ms).unwrap_or(i64::MAX);
    Ok(fleetpulse_proto::UnixMillis(now.0.saturating_add(lock)))
}

/// [`StoreError::InvalidInput`] unless the TOTP step of [`EntityStore::record_totp_step`] fits
/// in a database row (`i64`); else the step as stored.
pub(crate) fn totp_step(step: u64) -> Result<i64> {
    i64::try_from(step).map_err(|_| StoreError::InvalidInput(format!("TOTP step {step} (at most {})", i64::MAX)))
}

/// [`StoreError::InvalidInput`] if `count` items exceed the bound `max` of `what`.
pub(crate) fn check_bound(what: &str, count: usize, max: usize) -> Result<()> {
    if count > max {
        return Err(StoreError::InvalidInput(format!("{count} {what} in one call (at most {max})")));
    }
    Ok(())
}

/// [`StoreError::InvalidInput`] unless the parent of a new channel exists (`allows` is its
/// `allow_sub_channels`, `None` if there is no such channel) and allows sub-channels.
pub(crate) fn check_parent_channel(parent: ChannelId, allows: Option<bool>) -> Result<()> {
    match allows {
        None => Err(StoreError::InvalidInput(format!("parent channel {parent} does not exist"))),
        Some(false) => Err(StoreError::InvalidInput(format!("parent channel {parent} does not allow sub-channels"))),
        Some(true) => Ok(()),
    }
}

/// [`StoreError::InvalidInput`] unless the referenced row (`what` `id`, e.g. "channel 7") exists.
pub(crate) fn check_exists(what: &str, id: u64, exists: bool) -> Result<()> {
    if exists { Ok(()) } else { Err(StoreError::InvalidInput(format!("{what} {id} does not exist"))) }
}

/// [`StoreError::InvalidInput`] if a subtree read with a bound of one beyond
/// [`MAX_CHANNEL_SUBTREE`] hit it; else the ids, sorted.
pub(crate) fn bounded_subtree(root: ChannelId, mut ids: Vec<ChannelId>) -> Result<Vec<ChannelId>> {
    if ids.len() > MAX_CHANNEL_SUBTREE {
        return Err(StoreError::InvalidInput(format!(
            "the subtree of channel {root} has more than {MAX_CHANNEL_SUBTREE} channels"
        )));
    }
    ids.sort_unstable();
    Ok(ids)
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

/// An enterprise profile as stored (JSON).
pub(crate) fn encode_profile(profile: &EnterpriseProfile) -> Result<String> {
    serde_json::to_string(profile).map_err(|e| StoreError::Backend(format!("encoding an enterprise profile: {e}")))
}

/// Checks a device query and page ([`DeviceQuery::validate`], a limit of 1 to
/// [`MAX_DEVICE_PAGE`], a cursor of this sort); `None` if nothing can match, else the cursor.
pub(crate) fn prepare_device_query(
    query: &DeviceQuery,
    page: &DevicePageRequest,
) -> Result<Option<Option<DeviceCursor>>> {
    query.validate()?;
    if page.limit == 0 || page.limit > MAX_DEVICE_PAGE {
        return Err(StoreError::InvalidInput(format!("page limit {} (must be 1 to {MAX_DEVICE_PAGE})", page.limit)));
    }
    let cursor = page.cursor.as_deref().map(|c| DeviceCursor::decode(c, query.sort, query.descending)).transpose()?;
    if query.matches_nothing() {
        return Ok(None);
    }
    Ok(Some(cursor))
}

/// A device page from the rows read (at most `limit`): the next cursor if the page is full.
pub(crate) fn finish_device_page(items: Vec<DeviceSummary>, query: &DeviceQuery, limit: u32, total: u64) -> DevicePage {
    let full = u32::try_from(items.len()).is_ok_and(|n| n >= limit);
    let next_cursor = if full { items.last().map(|last| DeviceCursor::after(last, query).encode()) } else { None };
    DevicePage { items, next_cursor, total }
}

/// Result alias for store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Portal entities: accounts, sessions, enterprises, devices.
#[async_trait]
pub trait EntityStore: Send + Sync + 'static {
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
    async fn account(&self, id: fleetpulse_proto::AccountId) -> Result<Option<Account>>;
    /// Accounts matching the filter ([`AccountFilter`]), ordered by id, after the cursor (at
    /// most `page.limit`). [`StoreError::InvalidInput`] for a list of more than
    /// [`MAX_ACCOUNT_FILTER`] ids.
    async fn list_accounts(&self, filter: AccountFilter, page: Page) -> Result<Vec<Account>>;
    /// Freezes (or unfreezes) the account (TEN-2); freezing also deletes all its sessions, in
    /// the same transaction. False for an unknown account.
    async fn set_account_frozen(&self, account: fleetpulse_proto::AccountId, frozen: bool) -> Result<bool>;
    /// Replaces the account's password hash and sets whether it must change its password
    /// (ACC-2). False for an unknown account. Sessions are left alone (the caller ends them).
    async fn set_password(
        &self,
        account: fleetpulse_proto::AccountId,
        password_hash: String,
        must_change: bool,
    ) -> Result<bool>;
    /// Replaces a sub-account's permissions (TEN-5); false for an unknown account or a full
    /// account (which has none to replace).
    async fn set_account_permissions(
        &self,
        account: fleetpulse_proto::AccountId,
        permissions: Permissions,
    ) -> Result<bool>;
    /// Number of accounts with the role.
    async fn count_accounts(&self, role: Role) -> Result<u64>;
    /// Stores a session under the hash of its token.
    async fn create_session(&self, session: Session) -> Result<()>;
    /// The unexpired session with this token hash, if any.
    async fn session(&self, token_hash: TokenHash, now: fleetpulse_proto::UnixMillis) -> Result<Option<Session>>;
    /// Records a use of the session (ACC-2 idle expiry): its `last_seen_at` becomes
    /// `max(last_seen_at, now)`, so it never moves back. Nothing happens for an unknown session.
    async fn touch_session(&self, token_hash: TokenHash, now: fleetpulse_proto::UnixMillis) -> Result<()>;
    /// Deletes the session (logout); false if there was none.
    async fn delete_session(&self, token_hash: TokenHash) -> Result<bool>;
    /// Deletes every session of the account; returns how many there were.
    async fn delete_account_sessions(&self, account: fleetpulse_proto::AccountId) -> Result<u64>;
    /// Sets (or, with `None`, clears) the account's TOTP secret (ACC-3) and forgets its last
    /// accepted step; false for an unknown account.
    async fn set_totp(&self, account: fleetpulse_proto::AccountId, secret: Option<[u8; 20]>) -> Result<bool>;
    /// Accepts TOTP time step `step` for the account (ACC-3), atomically (one conditional
    /// update): its `totp_last_step` becomes `step` only if it is unset or below `step`.
    /// Returns whether it did: false for a replayed or older step, or an unknown account.
    /// [`StoreError::InvalidInput`] for a step above `i64::MAX`.
    async fn record_totp_step(&self, account: fleetpulse_proto::AccountId, step: u64) -> Result<bool>;
    /// Creates an enterprise with a fresh provisioning credential, under `new.channel_id` if
    /// given ([`StoreError::InvalidInput`] if that channel does not exist).
    async fn create_enterprise(&self, new: NewEnterprise) -> Result<Enterprise>;
    /// The enterprise with this id.
    async fn enterprise(&self, id: EnterpriseId) -> Result<Option<Enterprise>>;
    /// The enterprise owning this provisioning credential.
    async fn enterprise_by_credential(&self, credential: &str) -> Result<Option<Enterprise>>;
    /// Enterprises ordered by id, after the cursor.
    async fn list_enterprises(&self, page: Page) -> Result<Vec<Enterprise>> {
        self.list_enterprises_in(None, page).await
    }
    /// Enterprises ordered by id, after the cursor: all of them (`None`), or those whose
    /// channel is one of `channels` (enterprises without a channel never match a list; an
    /// empty list matches nothing). Typically `channels` is a [`EntityStore::channel_subtree`].
    /// [`StoreError::InvalidInput`] for more than [`MAX_ENTERPRISE_CHANNEL_FILTER`] ids.
    async fn list_enterprises_in(&self, channels: Option<&[ChannelId]>, page: Page) -> Result<Vec<Enterprise>> {
        let filter = EnterpriseFilter { channels: channels.map(<[ChannelId]>::to_vec), ..EnterpriseFilter::default() };
        self.search_enterprises(filter, page).await
    }
    /// Enterprises matching the filter ([`EnterpriseFilter`]: channels or ids, and a
    /// case-insensitive substring of the name, emails or contact), ordered by id, after the
    /// cursor. [`StoreError::InvalidInput`] for more than [`MAX_ENTERPRISE_CHANNEL_FILTER`] ids
    /// in a list, or a search of more than [`MAX_SEARCH_CHARS`] characters.
    async fn search_enterprises(&self, filter: EnterpriseFilter, page: Page) -> Result<Vec<Enterprise>>;
    /// Replaces an enterprise's name and profile (TEN-2 edit); `None` for an unknown one.
    /// [`StoreError::InvalidInput`] (nothing changed) for a profile
    /// [`EnterpriseProfile::validate`] refuses.
    async fn update_enterprise(
        &self,
        id: EnterpriseId,
        name: String,
        profile: EnterpriseProfile,
    ) -> Result<Option<Enterprise>>;
    /// Moves the enterprise's authorization of its channel (TEN-3) to `to`, atomically, only if
    /// it is one of `from` now; returns the enterprise as updated, or `None` (nothing changed)
    /// if it does not exist or stands elsewhere. Leaving [`ChannelAuthorization::Accepted`]
    /// also ends every session acting inside the enterprise, in the same transaction.
    async fn set_channel_authorization(
        &self,
        id: EnterpriseId,
        from: &[ChannelAuthorization],
        to: ChannelAuthorization,
    ) -> Result<Option<Enterprise>>;
    /// Creates a channel (TEN-1) at `now`: a top-level one, or a sub-channel of
    /// `new.parent_id`.
    ///
    /// [`StoreError::InvalidInput`] (and nothing is created) if [`NewChannel::validate`]
    /// refuses it (a name not of 1 to [`MAX_CHANNEL_NAME`] characters), if the parent does not
    /// exist, or if the parent does not allow sub-channels.
    async fn create_channel(&self, new: NewChannel, now: fleetpulse_proto::UnixMillis) -> Result<Channel>;
    /// The channel with this id.
    async fn channel(&self, id: ChannelId) -> Result<Option<Channel>>;
    /// Channels ordered by id, after the cursor (at most `page.limit`): all of them (`None`),
    /// or the strict descendants of `within` (its sub-channels, theirs, and so on; not
    /// `within` itself, and nothing for an unknown channel).
    async fn list_channels(&self, within: Option<ChannelId>, page: Page) -> Result<Vec<Channel>> {
        self.search_channels(within, None, page).await
    }
    /// [`EntityStore::list_channels`], keeping only channels whose name, contact or email
    /// contains `q`, ignoring case. [`StoreError::InvalidInput`] for a search of more than
    /// [`MAX_SEARCH_CHARS`] characters.
    async fn search_channels(&self, within: Option<ChannelId>, q: Option<&str>, page: Page) -> Result<Vec<Channel>>;
    /// Replaces a channel's editable fields (TEN-2 edit); `None` for an unknown channel.
    /// [`StoreError::InvalidInput`] (nothing changed) if [`ChannelUpdate::validate`] refuses it.
    async fn update_channel(&self, id: ChannelId, update: ChannelUpdate) -> Result<Option<Channel>>;
    /// The ids of `root` and of all its descendants, ordered by id; empty for an unknown
    /// channel. [`StoreError::InvalidInput`] if the subtree has more than
    /// [`MAX_CHANNEL_SUBTREE`] channels.
    async fn channel_subtree(&self, root: ChannelId) -> Result<Vec<ChannelId>>;
    /// Finds the device by its key or adds it to the enterprise (ING-2 auto-add).
    ///
    /// [`StoreError::DeviceConflict`] if the key belongs to another enterprise.
    async fn register_device(&self, new: NewDevice) -> Result<RegisteredDevice>;
    /// The device with this id.
    async fn device(&self, id: DeviceId) -> Result<Option<Device>>;
    /// Devices ordered by id, after the cursor, optionally of one enterprise.
    async fn list_devices(&self, enterprise: Option<EnterpriseId>, page: Page) -> Result<Vec<Device>>;
    /// Applies changes to the devices' persisted snapshots ([`DeviceSnapshotUpdate`]), all in
    /// one transaction: online flags, and the fields of the latest status report (firmware,
    /// addresses, SIP status and lines, call status, uptime, last reboot, report time). A report
    /// older than the one stored is ignored; several updates of one device are merged in order
    /// ([`coalesce_snapshot_updates`]); unknown devices are skipped.
    /// [`StoreError::InvalidInput`] (and nothing changes) for more than [`MAX_SNAPSHOT_BATCH`].
    async fn update_device_snapshots(&self, updates: Vec<DeviceSnapshotUpdate>) -> Result<()>;
    /// Marks every device offline; returns how many were online. Run at server start: a device
    /// is online only once it connects to this process (single-node assumption: with several
    /// ingest nodes sharing the store this would mark the other nodes' devices offline).
    async fn mark_devices_offline(&self) -> Result<u64>;
    /// Devices matching the query, with their enterprise and snapshot, in the query's order
    /// (then by id), after the page's cursor (keyset pagination), at most `page.limit`; and the
    /// number of all matches.
    ///
    /// [`StoreError::InvalidInput`] if [`DeviceQuery::validate`] refuses the query, for a
    /// limit outside 1..=[`MAX_DEVICE_PAGE`], or for a cursor that is malformed or belongs to
    /// another sort.
    async fn query_devices(&self, query: DeviceQuery, page: DevicePageRequest) -> Result<DevicePage>;
    /// Device counts of the devices matching the query (its sort is ignored), for the dashboard
    /// (DEV-2): total and online, by type, by model (the [`MAX_DASHBOARD_MODELS`] most common).
    /// [`StoreError::InvalidInput`] if [`DeviceQuery::validate`] refuses the query.
    async fn device_dashboard(&self, query: DeviceQuery) -> Result<DeviceDashboard>;
    /// Saves a device search label of the account (DEV-1). [`StoreError::AlreadyExists`] if
    /// the account has a label of that name; [`StoreError::InvalidInput`] (and nothing is saved)
    /// if [`NewDeviceLabel::validate`] refuses it, if the account already has
    /// [`MAX_DEVICE_LABELS`] labels (checked atomically with the insert), or if the account
    /// does not exist.
    async fn create_device_label(&self, new: NewDeviceLabel, now: fleetpulse_proto::UnixMillis) -> Result<DeviceLabel>;
    /// The account's labels, ordered by id (at most [`MAX_DEVICE_LABELS`]).
    async fn list_device_labels(&self, account: fleetpulse_proto::AccountId) -> Result<Vec<DeviceLabel>>;
    /// Deletes the account's label; false if it has none with this id (another account's
    /// label included).
    async fn delete_device_label(&self, account: fleetpulse_proto::AccountId, id: u64) -> Result<bool>;
    /// The account's chosen device list columns; `None` if it never chose.
    async fn device_columns(&self, account: fleetpulse_proto::AccountId) -> Result<Option<Vec<String>>>;
    /// Replaces the account's chosen device list columns (the caller checks the names against
    /// its column set). [`StoreError::InvalidInput`] unless [`check_device_columns`] accepts
    /// them or if the account does not exist.
    async fn set_device_columns(&self, account: fleetpulse_proto::AccountId, columns: Vec<String>) -> Result<()>;
    /// The device with its enterprise and snapshot.
    async fn device_summary(&self, id: DeviceId) -> Result<Option<DeviceSummary>>;
    /// Creates an alarm strategy of the enterprise.
    async fn create_strategy(
        &self,
        enterprise: EnterpriseId,
        settings: StrategySettings,
        at: fleetpulse_proto::UnixMillis,
    ) -> Result<StoredStrategy>;
    /// The strategy with this id.
    async fn strategy(&self, id: fleetpulse_proto::StrategyId) -> Result<Option<StoredStrategy>>;
    /// The enterprise's strategies, ordered by id.
    async fn list_strategies(&self, enterprise: EnterpriseId) -> Result<Vec<StoredStrategy>>;
    /// Replaces a strategy's settings; `None` if it does not exist.
    async fn update_strategy(
        &self,
        id: fleetpulse_proto::StrategyId,
        settings: StrategySettings,
        at: fleetpulse_proto::UnixMillis,
    ) -> Result<Option<StoredStrategy>>;
    /// Deletes a strategy; false if it did not exist.
    async fn delete_strategy(&self, id: fleetpulse_proto::StrategyId) -> Result<bool>;
    /// Queues a notification in the durable outbox with its item keys; false (and nothing
    /// changes, item keys included) if a message with the same idempotency key was queued before.
    ///
    /// A batch of one: see [`EntityStore::enqueue_outbox_batch`].
    async fn enqueue_outbox(&self, message: NewOutboxMessage, now: fleetpulse_proto::UnixMillis) -> Result<bool> {
        let queued = self.enqueue_outbox_batch(vec![message], now).await?;
        queued.first().copied().ok_or_else(|| StoreError::Backend("the outbox batch answered no message".into()))
    }
    /// Queues notifications in the durable outbox, all in one transaction; returns per message
    /// (in order) whether it was newly queued.
    ///
    /// A message whose idempotency key was queued before, or appears earlier in the batch, is
    /// not queued (false) and its item keys are not recorded. A queued message records its item
    /// keys, except those already recorded (by an earlier message or earlier in the batch).
    /// [`StoreError::InvalidInput`] (and nothing changes) for more than [`MAX_OUTBOX_BATCH`]
    /// messages.
    async fn enqueue_outbox_batch(
        &self,
        messages: Vec<NewOutboxMessage>,
        now: fleetpulse_proto::UnixMillis,
    ) -> Result<Vec<bool>>;
    /// Which of the given alarm item keys a queued outbox message recorded (each once, in any
    /// order). [`StoreError::InvalidInput`] for more than [`MAX_OUTBOX_ITEM_QUERY`] keys.
    async fn outbox_known_items(&self, keys: &[String]) -> Result<Vec<String>>;
    /// Pending messages whose next attempt is due at `now`, oldest first (by next attempt, then
    /// in the order queued), at most `limit`.
    async fn due_outbox(&self, now: fleetpulse_proto::UnixMillis, limit: u32) -> Result<Vec<OutboxMessage>> {
        self.due_outbox_except(now, limit, &[]).await
    }
    /// Like [`EntityStore::due_outbox`], leaving out messages to the given receivers (those the
    /// caller cannot send to right now); at most [`MAX_OUTBOX_EXCEPT`] receivers.
    ///
    /// The limit applies to what is left, so a receiver with a large backlog left out does not
    /// crowd the others out of the batch. Receivers compare exactly (case-sensitive); repeated
    /// or unknown ones are harmless. [`StoreError::InvalidInput`] for more than
    /// [`MAX_OUTBOX_EXCEPT`] receivers.
    async fn due_outbox_except(
        &self,
        now: fleetpulse_proto::UnixMillis,
        limit: u32,
        except: &[String],
    ) -> Result<Vec<OutboxMessage>>;
    /// Records an attempt's outcome: `Sent`, `Failed` (permanent), or `Pending` again with the
    /// time of the next attempt (transient). Counts the attempt; only pending messages change.
    async fn record_outbox_attempt(
        &self,
        id: u64,
        outcome: OutboxState,
        at: fleetpulse_proto::UnixMillis,
        next_attempt_at: fleetpulse_proto::UnixMillis,
        error: Option<String>,
    ) -> Result<Option<OutboxMessage>>;
    /// Records the outcomes of several attempts in one transaction (like
    /// [`EntityStore::record_outbox_attempt`] for each); at most [`MAX_OUTBOX_BATCH`].
    async fn record_outbox_attempts(&self, attempts: Vec<OutboxAttempt>) -> Result<()>;
    /// Appends rows to the operation log (LOG-1), all in one transaction, in order (ids
    /// increase along the batch).
    ///
    /// [`StoreError::InvalidInput`] (and nothing is appended) for more than
    /// [`MAX_OPERATION_LOG_BATCH`] rows or a row that [`NewOperationLog::validate`] refuses.
    /// The log is append-only: there is no method to change or remove a row, and the database
    /// itself refuses updates and deletes of it.
    async fn append_operation_logs(&self, rows: Vec<NewOperationLog>) -> Result<()>;
    /// Operation log rows matching the filter, newest first (by id, descending): those with an
    /// id below `page.after` when it is above 0, else from the newest; at most `page.limit`,
    /// and never more than [`MAX_OPERATION_LOG_PAGE`].
    async fn list_operation_logs(&self, filter: OperationLogFilter, page: Page) -> Result<Vec<OperationLog>>;
    /// Counts a wrong password of the account (ACC-2), atomically: when the count reaches
    /// `max_failures`, the account is locked until `now + lock_for_ms` (saturating) and the
    /// count starts again from 0. Returns the account as updated, or `None` if it does not exist.
    ///
    /// The caller refuses logins of a locked account ([`Account::is_locked`]) before checking
    /// their password. [`StoreError::InvalidInput`] unless `max_failures` is within
    /// 1..=[`MAX_LOGIN_FAILURE_THRESHOLD`].
    async fn record_login_failure(
        &self,
        account: fleetpulse_proto::AccountId,
        now: fleetpulse_proto::UnixMillis,
        max_failures: u32,
        lock_for_ms: u64,
    ) -> Result<Option<Account>>;
    /// A successful login (ACC-2): forgets the account's wrong passwords and lifts its lock.
    /// Nothing happens for an unknown account.
    async fn record_login_success(&self, account: fleetpulse_proto::AccountId) -> Result<()>;

    // ---- account self-service (ACC-3..5): settings, password resets, emailed login codes ----

    /// The account's settings (ACC-5): the [`AccountSettings::default`] if it never saved any;
    /// `None` for an unknown account.
    async fn account_settings(&self, account: fleetpulse_proto::AccountId) -> Result<Option<AccountSettings>>;
    /// Replaces the account's settings; false for an unknown account.
    /// [`StoreError::InvalidInput`] (and nothing changes) if [`AccountSettings::validate`]
    /// refuses them.
    async fn set_account_settings(
        &self,
        account: fleetpulse_proto::AccountId,
        settings: AccountSettings,
    ) -> Result<bool>;
    /// Stores a password reset token (ACC-4). In the same transaction the account's earlier
    /// tokens and every token expired at `reset.created_at` are deleted, so an account has at
    /// most one live token and the table stays bounded. [`StoreError::InvalidInput`] (nothing
    /// stored) for an unknown account.
    async fn create_password_reset(&self, reset: PasswordReset) -> Result<()>;
    /// Uses up a password reset token, atomically (one conditional statement): if it exists and
    /// is unused and unexpired at `now`, it is marked used and its account returned; else
    /// `None` (unknown, expired, or used before: of concurrent uses, one wins).
    async fn consume_password_reset(
        &self,
        token_hash: TokenHash,
        now: fleetpulse_proto::UnixMillis,
    ) -> Result<Option<fleetpulse_proto::AccountId>>;
    /// Stores an emailed login code challenge (ACC-3). In the same transaction the account's
    /// earlier challenges and every challenge expired at `challenge.created_at` are deleted (one
    /// live challenge per account). `challenge.attempts` is ignored (a new challenge has none).
    /// [`StoreError::InvalidInput`] (nothing stored) for an unknown account.
    async fn create_login_challenge(&self, challenge: LoginChallenge) -> Result<()>;
    /// Counts an attempt at a challenge's code, atomically (one conditional statement): if the
    /// challenge is live at `now` (unused, unexpired, fewer than `max_attempts` attempts made),
    /// its attempts go up by one and it is returned, with the new count, for the caller to
    /// compare the code; else `None`. [`StoreError::InvalidInput`] unless `max_attempts` is
    /// within 1..=[`MAX_LOGIN_CHALLENGE_ATTEMPTS`].
    async fn claim_login_challenge_attempt(
        &self,
        id_hash: TokenHash,
        now: fleetpulse_proto::UnixMillis,
        max_attempts: u32,
    ) -> Result<Option<LoginChallenge>>;
    /// Marks a challenge used once its code was right, atomically: true for the one call that
    /// did; false if it is unknown, expired at `now`, or used already.
    async fn finish_login_challenge(&self, id_hash: TokenHash, now: fleetpulse_proto::UnixMillis) -> Result<bool>;
    /// Replaces the payload of an outbox message that is no longer pending (sent or given up),
    /// to remove the secrets an account email carried (reset link, login code, temporary
    /// password). False (and nothing changes) for an unknown or still pending message, so a
    /// message that may still be sent keeps what it needs.
    async fn redact_outbox_payload(&self, id: u64, payload: String) -> Result<bool>;
}

/// Append-only event streams, aggregated alarm records and delivery marks.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends a batch; returns once it is durable. A batch is applied whole or not at all.
    async fn append(&self, batch: EventBatch) -> Result<()>;
    /// The highest sequence number durably applied for the device (0 if none).
    async fn last_seq(&self, device: DeviceId) -> Result<u64>;
    /// Aggregated alarm records matching the filter, ordered by record id (keyset pagination).
    async fn list_alarm_records(&self, filter: AlarmFilter, page: Page) -> Result<Vec<AlarmRecord>>;
    /// The alarm record with this id.
    async fn alarm_record(&self, id: u64) -> Result<Option<AlarmRecord>>;
    /// The most recently occurred alarm records matching the filter (as in
    /// [`EventStore::list_alarm_records`]), ordered by latest occurrence then id, both
    /// descending; at most `limit`, and never more than [`MAX_LATEST_ALARM_RECORDS`] (ALM-6,
    /// the bell icon).
    async fn latest_alarm_records(&self, filter: AlarmFilter, limit: u32) -> Result<Vec<AlarmRecord>>;
    /// The newest alarm log the device attached to an alarm of this type (ALM-1: Application
    /// crash, Application no response, Kernel panic), with the time of its alarm.
    async fn alarm_log(
        &self,
        device: DeviceId,
        code: fleetpulse_proto::AlarmTypeCode,
    ) -> Result<Option<(fleetpulse_proto::UnixMillis, Vec<u8>)>>;
    /// Per device: how many persisted rows carry a device sequence number, and which distinct
    /// numbers, as ranges (LT-3). Devices without rows are answered with zero rows.
    async fn device_sequences(&self, devices: &[DeviceId]) -> Result<Vec<DeviceSequences>>;
    /// The device's CPU/memory samples received in `[from, to)`, newest first (by device
    /// sequence number, which follows receipt time), at most `limit` and never more than
    /// [`MAX_RESOURCE_HISTORY`].
    async fn resource_history(
        &self,
        device: DeviceId,
        from: fleetpulse_proto::UnixMillis,
        to: fleetpulse_proto::UnixMillis,
        limit: u32,
    ) -> Result<Vec<ResourcePoint>>;
    /// Number of event rows of each kind, for metrics and tests.
    async fn event_counts(&self) -> Result<EventCounts>;
    /// Retention (STO-4): removes status events, resource reports and alarm events older than
    /// `cutoff` (at the backend's granularity: ClickHouse drops whole days). Aggregated alarm
    /// records and delivery marks stay. Returns the number of rows (embedded) or partitions
    /// (ClickHouse) removed.
    async fn apply_retention(&self, cutoff: fleetpulse_proto::UnixMillis) -> Result<u64>;
    /// The backend's own numbers for `/metrics` (queue depths, commits, spool state), read at
    /// scrape time.
    fn metrics(&self) -> Vec<StoreMetric> {
        Vec::new()
    }
}

/// One number a store reports for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreMetric {
    /// Prometheus name (without the `_total` suffix of counters).
    pub name: &'static str,
    /// Help text.
    pub help: &'static str,
    /// The value.
    pub value: u64,
    /// A monotonic counter (else a gauge).
    pub counter: bool,
}

/// A store: both halves, possibly served by different engines.
#[derive(Clone)]
pub struct Store {
    /// Portal entities.
    pub entities: Arc<dyn EntityStore>,
    /// Event streams.
    pub events: Arc<dyn EventStore>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Stored sequence numbers of a page of the enterprise's devices (ordered by id), for the
    /// load tester's verification: entities give the devices, events their sequences.
    pub async fn stored_sequences(&self, enterprise: EnterpriseId, page: Page) -> Result<Vec<StoredSequences>> {
        let devices = self.entities.list_devices(Some(enterprise), page).await?;
        let ids: Vec<DeviceId> = devices.iter().map(|d| d.id).collect();
        let mut seqs = self.events.device_sequences(&ids).await?.into_iter();
        Ok(devices
            .into_iter()
            .map(|d| {
                let s = seqs.find(|s| s.device_id == d.id).unwrap_or(DeviceSequences {
                    device_id: d.id,
                    rows: 0,
                    ranges: Vec::new(),
                });
                StoredSequences { device_id: d.id, mac: d.mac, serial: d.serial, rows: s.rows, ranges: s.ranges }
            })
            .collect())
    }

    /// Opens the embedded store under `data_dir`.
    pub fn open_embedded(data_dir: &std::path::Path, config: embedded::EmbeddedConfig) -> Result<Store> {
        let db = Arc::new(embedded::EmbeddedStore::open(data_dir, config)?);
        Ok(Store { entities: db.clone(), events: db })
    }
}

/// Settings of the scale-out store.
#[derive(Debug, Clone)]
pub struct ScaleOutConfig {
    /// PostgreSQL URL for the entities.
    pub postgres_url: String,
    /// ClickHouse for the events.
    pub clickhouse: clickhouse::ClickHouseConfig,
    /// The local spool in front of ClickHouse.
    pub spool: spool::SpoolConfig,
}

impl Store {
    /// Opens the scale-out store: PostgreSQL (migrated), ClickHouse (schema created), and the
    /// spool (recovered), with its drainer running.
    pub async fn open_scaleout(config: ScaleOutConfig) -> Result<Store> {
        let entities = postgres::PgEntityStore::connect(&config.postgres_url, 16).await?;
        let events = clickhouse::ClickHouseEvents::connect(config.clickhouse).await?;
        let spool = spool::Spool::open(config.spool)?;
        let events = scaleout::SpooledEvents::start(Arc::new(events), spool).await?;
        Ok(Store { entities: Arc::new(entities), events: Arc::new(events) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subtree_above_the_bound_is_refused_and_one_at_it_is_sorted() {
        let at_bound: Vec<ChannelId> = (0..MAX_CHANNEL_SUBTREE as u64).rev().map(ChannelId).collect();
        let sorted = bounded_subtree(ChannelId(0), at_bound).expect("at the bound");
        assert_eq!(sorted.len(), MAX_CHANNEL_SUBTREE);
        assert!(sorted.windows(2).all(|w| w[0] < w[1]));
        let above: Vec<ChannelId> = (0..=MAX_CHANNEL_SUBTREE as u64).map(ChannelId).collect();
        assert!(matches!(bounded_subtree(ChannelId(0), above), Err(StoreError::InvalidInput(_))));
    }

    #[test]
    fn parent_checks_name_the_reason() {
        let err = |r: Result<()>| match r {
            Err(StoreError::InvalidInput(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(err(check_parent_channel(ChannelId(3), None)).contains("parent channel 3 does not exist"));
        assert!(err(check_parent_channel(ChannelId(3), Some(false))).contains("does not allow sub-channels"));
        assert!(check_parent_channel(ChannelId(3), Some(true)).is_ok());
    }
}
