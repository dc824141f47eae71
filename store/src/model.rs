//! Rows and arguments of the store API. Backend-neutral: no SQL types leak out.

use fleetpulse_proto::domain::{AlarmChange, DeviceKey, DeviceStatus, ResourceSample};
use fleetpulse_proto::ids::ChannelId;
use fleetpulse_proto::{AccountId, AlarmTypeCode, DeviceId, EnterpriseId, Mac, Severity, StrategyId, UnixMillis};
use serde::{Deserialize, Serialize};

/// Keyset pagination: rows with an id above `after`, at most `limit` of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Exclusive lower bound of the id (0 for the first page).
    pub after: u64,
    /// Maximum number of rows.
    pub limit: u32,
}

impl Page {
    /// The first `limit` rows.
    pub fn first(limit: u32) -> Page {
        Page { after: 0, limit }
    }
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
    /// `None` before the first one, and again after [`crate::EntityStore::set_totp`].
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

/// Filter of [`crate::EntityStore::list_accounts`]: with both `None`, every account; else the
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
    /// Only accounts whose email contains this, ignoring case (at most
    /// [`crate::MAX_SEARCH_CHARS`] characters).
    pub q: Option<String>,
}

/// Arguments of [`crate::EntityStore::create_account`].
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

/// SHA-256 of a bearer token: the store never holds tokens themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

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
    /// ([`crate::EntityStore::touch_session`]).
    pub last_seen_at: UnixMillis,
    /// The tenant a channel account acts for in this session (TEN-3), if any.
    pub acting: Option<crate::Acting>,
}

/// An enterprise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Enterprise {
    /// Identifier.
    pub id: EnterpriseId,
    /// Display name.
    pub name: String,
    /// Provisioning credential devices present in `Hello`.
    pub credential: String,
    /// The channel the enterprise belongs to (`None`: directly under the platform).
    pub channel_id: Option<ChannelId>,
    /// Creation time.
    pub created_at: UnixMillis,
    /// Permissions, emails, country, time zone, unit, contact (TEN-1).
    #[serde(flatten)]
    pub profile: crate::EnterpriseProfile,
    /// Whether its channel may act inside it (TEN-3).
    pub channel_authorization: crate::ChannelAuthorization,
}

/// Arguments of [`crate::EntityStore::create_enterprise`].
#[derive(Debug, Clone)]
pub struct NewEnterprise {
    /// Display name.
    pub name: String,
    /// The provisioning credential (generated by the caller from a CSPRNG).
    pub credential: String,
    /// The channel the enterprise belongs to (`None`: directly under the platform); must exist.
    pub channel_id: Option<ChannelId>,
    /// Permissions, emails, country, time zone, unit, contact (TEN-1); must pass
    /// [`crate::EnterpriseProfile::validate`].
    pub profile: crate::EnterpriseProfile,
}

/// Longest [`NewChannel::name`], in characters.
pub const MAX_CHANNEL_NAME: usize = 200;

/// A channel (TEN-1): a reseller or distributor; channels form a tree under the platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Channel {
    /// Identifier.
    pub id: ChannelId,
    /// Display name.
    pub name: String,
    /// The parent channel (`None`: a top-level channel under the platform).
    pub parent_id: Option<ChannelId>,
    /// Whether sub-channels may be created under it.
    pub allow_sub_channels: bool,
    /// Whether it may manage devices.
    pub device_management: bool,
    /// Whether it may use RPS (redirection and provisioning service).
    pub rps: bool,
    /// Contact person.
    pub contact: String,
    /// Contact email.
    pub email: String,
    /// Contact phone.
    pub phone: String,
    /// Country or area (ISO 3166-1 alpha-2), or empty.
    pub country: String,
    /// Creation time.
    pub created_at: UnixMillis,
}

/// Arguments of [`crate::EntityStore::create_channel`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct NewChannel {
    /// Display name, 1 to [`MAX_CHANNEL_NAME`] characters.
    pub name: String,
    /// The parent channel, which must exist and allow sub-channels; `None` for a top-level one.
    pub parent_id: Option<ChannelId>,
    /// Whether sub-channels may be created under it.
    pub allow_sub_channels: bool,
    /// Whether it may manage devices.
    pub device_management: bool,
    /// Whether it may use RPS.
    pub rps: bool,
    /// Contact person.
    pub contact: String,
    /// Contact email.
    pub email: String,
    /// Contact phone.
    pub phone: String,
    /// Country or area (ISO 3166-1 alpha-2), or empty.
    pub country: String,
}

impl NewChannel {
    /// [`crate::StoreError::InvalidInput`] unless the name has 1 to [`MAX_CHANNEL_NAME`]
    /// characters, and no text field holds a NUL character (which PostgreSQL cannot store).
    pub fn validate(&self) -> crate::Result<()> {
        let chars = self.name.chars().count();
        if chars == 0 || chars > MAX_CHANNEL_NAME {
            return Err(crate::StoreError::InvalidInput(format!(
                "channel name of {chars} characters (must be 1 to {MAX_CHANNEL_NAME})"
            )));
        }
        for (field, value) in [("name", &self.name), ("contact", &self.contact), ("email", &self.email)] {
            if value.contains('\0') {
                return Err(crate::StoreError::InvalidInput(format!("channel {field} holds a NUL character")));
            }
        }
        crate::tenancy::check_text("contact", &self.contact, crate::MAX_PROFILE_CONTACT)?;
        crate::tenancy::check_text("email", &self.email, crate::MAX_PROFILE_EMAIL)?;
        crate::tenancy::check_email("email", &self.email)?;
        crate::tenancy::check_phone(&self.phone)?;
        crate::tenancy::check_country(&self.country)?;
        Ok(())
    }
}

/// A device known to the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Device {
    /// Identifier.
    pub id: DeviceId,
    /// Owning enterprise.
    pub enterprise_id: EnterpriseId,
    /// MAC address, if the device has one.
    pub mac: Option<Mac>,
    /// Serial number, if known.
    pub serial: Option<String>,
    /// Model.
    pub model: String,
    /// Firmware at the last `Hello`.
    pub firmware: String,
    /// Display name (empty until an admin names it).
    pub name: String,
    /// When it was added.
    pub created_at: UnixMillis,
}

/// Arguments of [`crate::EntityStore::register_device`].
#[derive(Debug, Clone)]
pub struct NewDevice {
    /// The enterprise whose credential the device presented.
    pub enterprise_id: EnterpriseId,
    /// Identity.
    pub key: DeviceKey,
    /// Serial number, if given.
    pub serial: Option<String>,
    /// Model.
    pub model: String,
    /// Firmware.
    pub firmware: String,
    /// Time of registration.
    pub at: UnixMillis,
}

/// Result of [`crate::EntityStore::register_device`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredDevice {
    /// The device row.
    pub device: Device,
    /// True if this call added it.
    pub created: bool,
}

/// A status report as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StatusEvent {
    /// The device.
    pub device_id: DeviceId,
    /// Its enterprise.
    pub enterprise_id: EnterpriseId,
    /// Device sequence number.
    pub seq: u64,
    /// Server receive time.
    pub at: UnixMillis,
    /// The status.
    pub status: DeviceStatus,
}

/// A resource report as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ResourceEvent {
    /// The device.
    pub device_id: DeviceId,
    /// Its enterprise.
    pub enterprise_id: EnterpriseId,
    /// Device sequence number.
    pub seq: u64,
    /// Server receive time.
    pub at: UnixMillis,
    /// The sample.
    pub sample: ResourceSample,
}

/// One alarm occurrence as stored (raw, before aggregation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AlarmEvent {
    /// The device.
    pub device_id: DeviceId,
    /// Its enterprise.
    pub enterprise_id: EnterpriseId,
    /// Device sequence number; 0 for alarms the server derived (Offline).
    pub seq: u64,
    /// Time.
    pub at: UnixMillis,
    /// Alarm type.
    pub code: AlarmTypeCode,
    /// True if the device cleared the alarm.
    pub clear: bool,
    /// Description.
    pub description: String,
    /// Alarm log, for the types that carry one.
    pub log: Option<Vec<u8>>,
}

/// Everything one group of frames changes; applied atomically by [`crate::EventStore::append`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EventBatch {
    /// Status reports.
    pub status: Vec<StatusEvent>,
    /// Resource reports.
    pub resources: Vec<ResourceEvent>,
    /// Alarm occurrences.
    pub alarms: Vec<AlarmEvent>,
    /// Changes to aggregated alarm records.
    pub alarm_changes: Vec<AlarmChange>,
    /// Highest applied sequence number per device in this batch.
    pub delivery: Vec<(DeviceId, u64)>,
}

impl EventBatch {
    /// Number of rows the batch writes (its weight for batching limits).
    pub fn rows(&self) -> usize {
        self.status.len() + self.resources.len() + self.alarms.len() + self.alarm_changes.len() + self.delivery.len()
    }

    /// True if the batch writes nothing.
    pub fn is_empty(&self) -> bool {
        self.rows() == 0
    }
}

/// Whether an alarm record is still active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlarmStatus {
    /// Raised, neither acknowledged nor cleared.
    Active,
    /// Acknowledged by an account; still not cleared (further raises keep it acknowledged).
    Acknowledged,
    /// Cleared by recovery, by the device or by an account.
    Cleared,
}

impl AlarmStatus {
    /// Name in the store and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmStatus::Active => "active",
            AlarmStatus::Acknowledged => "acknowledged",
            AlarmStatus::Cleared => "cleared",
        }
    }
}

/// An alarm aggregated per (device, type) (ALM-1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct AlarmRecord {
    /// Identifier.
    pub id: u64,
    /// The device.
    pub device_id: DeviceId,
    /// Its enterprise.
    pub enterprise_id: EnterpriseId,
    /// Alarm type code.
    pub code: AlarmTypeCode,
    /// Alarm type name.
    pub name: &'static str,
    /// Severity.
    pub severity: Severity,
    /// First occurrence.
    pub first_at: UnixMillis,
    /// Latest occurrence.
    pub latest_at: UnixMillis,
    /// Number of occurrences.
    pub count: u64,
    /// Latest description.
    pub description: String,
    /// Active or cleared.
    pub status: AlarmStatus,
    /// When it was cleared.
    pub cleared_at: Option<UnixMillis>,
    /// Who cleared it by hand (None for recovery and device clears).
    pub cleared_by: Option<AccountId>,
    /// When it was acknowledged (in its current activation).
    pub acknowledged_at: Option<UnixMillis>,
    /// Who acknowledged it.
    pub acknowledged_by: Option<AccountId>,
}

/// Filters of [`crate::EventStore::list_alarm_records`] and
/// [`crate::EventStore::latest_alarm_records`]; `None` means any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlarmFilter {
    /// Only this enterprise.
    pub enterprise: Option<EnterpriseId>,
    /// Only these enterprises (a channel account's subtree); at most
    /// [`crate::MAX_ENTERPRISE_CHANNEL_FILTER`] ids, an empty list matches nothing.
    pub enterprises: Option<Vec<EnterpriseId>>,
    /// Only this device.
    pub device: Option<DeviceId>,
    /// Only this alarm type.
    pub code: Option<AlarmTypeCode>,
    /// Only alarm types of this severity.
    pub severity: Option<Severity>,
    /// Only active or only cleared records.
    pub status: Option<AlarmStatus>,
    /// Latest occurrence at or after this time.
    pub latest_from: Option<UnixMillis>,
    /// Latest occurrence before this time.
    pub latest_to: Option<UnixMillis>,
}

impl AlarmFilter {
    /// The ` AND enterprise_id IN (…)` term of [`AlarmFilter::enterprises`] (integers: nothing to
    /// escape), empty without that filter; `Ok(None)` if the list is empty (no record matches).
    /// [`crate::StoreError::InvalidInput`] for more than
    /// [`crate::MAX_ENTERPRISE_CHANNEL_FILTER`] ids.
    pub fn enterprises_term(&self) -> crate::Result<Option<String>> {
        let Some(ids) = &self.enterprises else { return Ok(Some(String::new())) };
        crate::check_bound("enterprise ids", ids.len(), crate::MAX_ENTERPRISE_CHANNEL_FILTER)?;
        if ids.is_empty() {
            return Ok(None);
        }
        let list: Vec<String> = ids.iter().map(|e| e.0.to_string()).collect();
        Ok(Some(format!(" AND enterprise_id IN ({})", list.join(","))))
    }

    /// The alarm type codes the severity filter selects (`None`: no severity filter).
    pub fn severity_codes(&self) -> Option<Vec<u16>> {
        self.severity
            .map(|s| fleetpulse_proto::ALARM_TYPES.iter().filter(|t| t.severity == s).map(|t| t.code.0).collect())
    }
}

/// Stored sequence numbers of one device (LT-3 verification).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct StoredSequences {
    /// The device.
    pub device_id: DeviceId,
    /// Its MAC.
    pub mac: Option<Mac>,
    /// Its serial.
    pub serial: Option<String>,
    /// Persisted rows carrying a device sequence number.
    pub rows: u64,
    /// Distinct sequence numbers as sorted, inclusive, non-adjacent ranges.
    pub ranges: Vec<(u64, u64)>,
}

/// Stored sequence numbers of one device, as the event store knows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct DeviceSequences {
    /// The device.
    pub device_id: DeviceId,
    /// Persisted rows carrying a device sequence number.
    pub rows: u64,
    /// Distinct sequence numbers as sorted, inclusive, non-adjacent ranges.
    pub ranges: Vec<(u64, u64)>,
}

/// Row counts per event table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct EventCounts {
    /// Status events.
    pub status: u64,
    /// Resource reports.
    pub resources: u64,
    /// Alarm events.
    pub alarms: u64,
    /// Aggregated alarm records.
    pub alarm_records: u64,
}

/// Folds sorted sequence numbers (duplicates allowed) into inclusive ranges.
pub fn to_ranges(sorted: impl IntoIterator<Item = u64>) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for s in sorted {
        match out.last_mut() {
            Some((_, end)) if s <= end.saturating_add(1) => *end = (*end).max(s),
            _ => out.push((s, s)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::to_ranges;

    #[test]
    fn ranges_fold_runs_and_duplicates() {
        assert_eq!(to_ranges([]), vec![]);
        assert_eq!(to_ranges([1, 2, 3, 5, 5, 6, 9]), vec![(1, 3), (5, 6), (9, 9)]);
        assert_eq!(to_ranges([4, 4, 4]), vec![(4, 4)]);
    }

    #[test]
    fn operation_outcomes_are_snake_case_and_round_trip() {
        use super::OperationOutcome;
        for (outcome, name) in [(OperationOutcome::Success, "success"), (OperationOutcome::Failure, "failure")] {
            assert_eq!(serde_json::to_value(outcome).expect("serialize"), serde_json::json!(name));
            assert_eq!((outcome.as_str(), OperationOutcome::parse(name)), (name, Some(outcome)));
        }
        assert_eq!(OperationOutcome::parse("Success"), None);
    }
}

/// The metric of a threshold rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdMetric {
    /// CPU usage.
    Cpu,
    /// Memory usage (used / total).
    Memory,
}

/// A threshold rule as stored: `metric` above `above_centi_pct` for `for_ms` (ALM-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StoredThreshold {
    /// The metric.
    pub metric: ThresholdMetric,
    /// Limit in hundredths of a percent.
    pub above_centi_pct: u16,
    /// How long the metric must stay above the limit.
    pub for_ms: u64,
}

/// An alarm strategy's settings (ALM-3), as the API edits them and the alarm engine reads them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StrategySettings {
    /// Display name.
    pub name: String,
    /// Disabled strategies notify nobody.
    pub enabled: bool,
    /// Selected alarm types (empty = all).
    pub alarm_types: Vec<AlarmTypeCode>,
    /// Selected severities (empty = all).
    pub severities: Vec<Severity>,
    /// Email addresses notified.
    pub receivers: Vec<String>,
    /// Wait before the first notification of a group.
    pub group_wait_ms: u64,
    /// Wait between notifications of an open group.
    pub group_interval_ms: u64,
    /// Reminder interval for alarms still active and unacknowledged.
    pub repeat_interval_ms: u64,
    /// CPU and memory threshold rules.
    pub thresholds: Vec<StoredThreshold>,
}

/// A stored alarm strategy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct StoredStrategy {
    /// Identifier.
    pub id: StrategyId,
    /// Owning enterprise.
    pub enterprise_id: EnterpriseId,
    /// Settings.
    pub settings: StrategySettings,
    /// Creation time.
    pub created_at: UnixMillis,
    /// Last change.
    pub updated_at: UnixMillis,
}

/// Where a notification in the outbox stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutboxState {
    /// Waiting for its (next) attempt.
    Pending,
    /// Accepted by the SMTP server.
    Sent,
    /// Given up on (a permanent failure).
    Failed,
}

impl OutboxState {
    /// Name in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxState::Pending => "pending",
            OutboxState::Sent => "sent",
            OutboxState::Failed => "failed",
        }
    }

    /// Inverse of [`OutboxState::as_str`].
    pub fn parse(s: &str) -> Option<OutboxState> {
        match s {
            "pending" => Some(OutboxState::Pending),
            "sent" => Some(OutboxState::Sent),
            "failed" => Some(OutboxState::Failed),
            _ => None,
        }
    }
}

/// The outcome of one attempt at sending an outbox message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxAttempt {
    /// The message.
    pub id: u64,
    /// `Sent`, `Failed` (permanent) or `Pending` again (transient).
    pub outcome: OutboxState,
    /// When the attempt was made.
    pub at: UnixMillis,
    /// When to try again (`Pending` only).
    pub next_attempt_at: UnixMillis,
    /// Why it failed.
    pub error: Option<String>,
}

/// A notification to send, as queued in the durable outbox (ALM-5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOutboxMessage {
    /// Idempotency key (hex): one message per (alarm, stage, receiver); a second enqueue of the
    /// same key is ignored.
    pub key: String,
    /// The enterprise the notification is about.
    pub enterprise_id: EnterpriseId,
    /// Receiver address.
    pub receiver: String,
    /// The notification, serialized by the sender (opaque to the store).
    pub payload: String,
    /// Earliest time of the first attempt.
    pub not_before: UnixMillis,
    /// Idempotency keys of the alarm items the message carries; recorded with the message so
    /// that a later message can leave out items already queued
    /// ([`crate::EntityStore::outbox_known_items`]).
    pub item_keys: Vec<String>,
}

/// A notification in the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct OutboxMessage {
    /// Identifier.
    pub id: u64,
    /// Idempotency key.
    pub key: String,
    /// The enterprise.
    pub enterprise_id: EnterpriseId,
    /// Receiver address.
    pub receiver: String,
    /// The serialized notification.
    pub payload: String,
    /// Where it stands.
    pub state: OutboxState,
    /// Attempts made.
    pub attempts: u32,
    /// Time of the next attempt (pending only).
    pub next_attempt_at: UnixMillis,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When it was queued.
    pub created_at: UnixMillis,
    /// When the SMTP server accepted it.
    pub sent_at: Option<UnixMillis>,
}

/// Whether a logged operation succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OperationOutcome {
    /// The request did what it asked for (a 2xx or 3xx status).
    Success,
    /// The request was refused or failed.
    Failure,
}

impl OperationOutcome {
    /// Name in the store and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            OperationOutcome::Success => "success",
            OperationOutcome::Failure => "failure",
        }
    }

    /// Inverse of [`OperationOutcome::as_str`].
    pub fn parse(s: &str) -> Option<OperationOutcome> {
        match s {
            "success" => Some(OperationOutcome::Success),
            "failure" => Some(OperationOutcome::Failure),
            _ => None,
        }
    }
}

/// One state-changing request, as [`crate::EntityStore::append_operation_logs`] records it
/// (LOG-1). Text fields are bounded (see [`NewOperationLog::validate`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct NewOperationLog {
    /// The signed-in account, if any (none for a failed login of an unknown email).
    pub account_id: Option<AccountId>,
    /// The account's email (or the email a failed login gave), at most
    /// [`crate::MAX_OPERATION_LOG_EMAIL`] bytes.
    pub account_email: String,
    /// The enterprise the account acted as, if any.
    pub acting_as: Option<EnterpriseId>,
    /// The operation type: method and route template, e.g. `POST /api/v1/enterprises`; at most
    /// [`crate::MAX_OPERATION_LOG_OPERATION`] bytes.
    pub operation: String,
    /// HTTP method, at most [`crate::MAX_OPERATION_LOG_METHOD`] bytes.
    pub method: String,
    /// The concrete request path, at most [`crate::MAX_OPERATION_LOG_PATH`] bytes.
    pub path: String,
    /// Client IP address, at most [`crate::MAX_OPERATION_LOG_IP`] bytes.
    pub ip: String,
    /// When the request was made.
    pub at: UnixMillis,
    /// HTTP status of the response.
    pub status: u16,
    /// Whether it succeeded.
    pub outcome: OperationOutcome,
}

impl NewOperationLog {
    /// [`crate::StoreError::InvalidInput`] if a text field is longer than its bound or holds a
    /// NUL character (which PostgreSQL cannot store), or an id is beyond what a database row
    /// can hold (above `i64::MAX`).
    pub fn validate(&self) -> crate::Result<()> {
        let fields = [
            ("account_email", &self.account_email, crate::MAX_OPERATION_LOG_EMAIL),
            ("operation", &self.operation, crate::MAX_OPERATION_LOG_OPERATION),
            ("method", &self.method, crate::MAX_OPERATION_LOG_METHOD),
            ("path", &self.path, crate::MAX_OPERATION_LOG_PATH),
            ("ip", &self.ip, crate::MAX_OPERATION_LOG_IP),
        ];
        for (name, value, max) in fields {
            if value.len() > max {
                return Err(crate::StoreError::InvalidInput(format!(
                    "operation log {name} of {} bytes (at most {max})",
                    value.len()
                )));
            }
            if value.contains('\0') {
                return Err(crate::StoreError::InvalidInput(format!("operation log {name} holds a NUL character")));
            }
        }
        let ids = [("account_id", self.account_id.map(|a| a.0)), ("acting_as", self.acting_as.map(|e| e.0))];
        for (name, id) in ids {
            if id.is_some_and(|id| i64::try_from(id).is_err()) {
                return Err(crate::StoreError::InvalidInput(format!("operation log {name} out of range")));
            }
        }
        Ok(())
    }
}

/// A recorded operation (LOG-1). Rows are never changed or removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct OperationLog {
    /// Identifier: increases with every row appended.
    pub id: u64,
    /// The row as it was appended.
    #[serde(flatten)]
    pub entry: NewOperationLog,
}

/// Filters of [`crate::EntityStore::list_operation_logs`]; `None` means any.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct OperationLogFilter {
    /// Made at or after this time.
    pub from: Option<UnixMillis>,
    /// Made before this time.
    pub to: Option<UnixMillis>,
    /// Only this operation type (exact match).
    pub operation: Option<String>,
    /// Only requests of this account.
    pub account_id: Option<AccountId>,
    /// Only requests made acting as this enterprise.
    pub enterprise: Option<EnterpriseId>,
}

impl OperationLogFilter {
    /// True if no row can match: an operation type no row can have (longer than
    /// [`crate::MAX_OPERATION_LOG_OPERATION`] or holding a NUL character), or an id above
    /// `i64::MAX`. The backends answer such a filter with no rows without asking the database.
    pub fn matches_nothing(&self) -> bool {
        let impossible_id = |id: Option<u64>| id.is_some_and(|id| i64::try_from(id).is_err());
        self.operation.as_ref().is_some_and(|op| op.len() > crate::MAX_OPERATION_LOG_OPERATION || op.contains('\0'))
            || impossible_id(self.account_id.map(|a| a.0))
            || impossible_id(self.enterprise.map(|e| e.0))
    }
}
