//! Rows and arguments of the store API. Backend-neutral: no SQL types leak out.

use fleetpulse_proto::catalog::DeviceType;
use fleetpulse_proto::domain::{AlarmChange, CallStatus, DeviceKey, DeviceStatus, ResourceSample, SipLine, SipSummary};
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
    /// Only accounts whose email or contact name (their settings) contains this, ignoring case
    /// (at most [`crate::MAX_SEARCH_CHARS`] characters).
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
    /// Only the rows a tenant may see ([`OperationLogScope`]); `None`: every row.
    pub within: Option<OperationLogScope>,
}

/// The operation-log rows a tenant may see (LOG-1): those made by one of `accounts` (its own
/// and its subtree's), or made acting inside one of `enterprises` (TEN-3). Each list holds at
/// most [`crate::MAX_ACCOUNT_FILTER`] ids; with both empty nothing matches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct OperationLogScope {
    /// Rows of these accounts.
    pub accounts: Vec<AccountId>,
    /// Rows acting inside these enterprises.
    pub enterprises: Vec<EnterpriseId>,
}

impl OperationLogScope {
    /// [`crate::StoreError::InvalidInput`] for a list above [`crate::MAX_ACCOUNT_FILTER`] ids.
    pub fn check(&self) -> crate::Result<()> {
        crate::check_bound("account ids", self.accounts.len(), crate::MAX_ACCOUNT_FILTER)?;
        crate::check_bound("enterprise ids", self.enterprises.len(), crate::MAX_ACCOUNT_FILTER)
    }
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
            || self.within.as_ref().is_some_and(|w| w.accounts.is_empty() && w.enterprises.is_empty())
    }
}

/// Most saved device search labels per account (DEV-1).
pub const MAX_DEVICE_LABELS: usize = 50;

/// Longest [`NewDeviceLabel::name`], in characters.
pub const MAX_DEVICE_LABEL_NAME: usize = 100;

/// Longest [`NewDeviceLabel::filter`], in bytes.
pub const MAX_DEVICE_LABEL_FILTER: usize = 4_096;

/// Most entries of an account's chosen device list columns.
pub const MAX_DEVICE_COLUMNS: usize = 32;

/// Longest name of a chosen device list column, in bytes.
pub const MAX_DEVICE_COLUMN_NAME: usize = 32;

/// A saved device search (DEV-1 "search label") of an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct DeviceLabel {
    /// Identifier.
    pub id: u64,
    /// The account it belongs to.
    pub account_id: AccountId,
    /// Its name, unique per account.
    pub name: String,
    /// The saved filter: a device-list query string (validated by the API before saving).
    pub filter: String,
    /// When it was saved.
    pub created_at: UnixMillis,
}

/// Arguments of [`crate::EntityStore::create_device_label`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDeviceLabel {
    /// The account.
    pub account_id: AccountId,
    /// 1 to [`MAX_DEVICE_LABEL_NAME`] characters, no control characters.
    pub name: String,
    /// At most [`MAX_DEVICE_LABEL_FILTER`] bytes, no NUL.
    pub filter: String,
}

impl NewDeviceLabel {
    /// [`crate::StoreError::InvalidInput`] unless the name has 1 to [`MAX_DEVICE_LABEL_NAME`]
    /// characters without control characters and the filter at most [`MAX_DEVICE_LABEL_FILTER`]
    /// bytes without NUL.
    pub fn validate(&self) -> crate::Result<()> {
        let chars = self.name.chars().count();
        if chars == 0 || chars > MAX_DEVICE_LABEL_NAME || self.name.chars().any(char::is_control) {
            return Err(crate::StoreError::InvalidInput(format!(
                "a label name has 1 to {MAX_DEVICE_LABEL_NAME} characters and no control characters"
            )));
        }
        if self.filter.len() > MAX_DEVICE_LABEL_FILTER || self.filter.contains('\0') {
            return Err(crate::StoreError::InvalidInput(format!(
                "a label filter has at most {MAX_DEVICE_LABEL_FILTER} bytes and no NUL"
            )));
        }
        Ok(())
    }
}

/// [`crate::StoreError::InvalidInput`] unless the column list has at most
/// [`MAX_DEVICE_COLUMNS`] names of at most [`MAX_DEVICE_COLUMN_NAME`] bytes without NUL.
pub fn check_device_columns(columns: &[String]) -> crate::Result<()> {
    crate::check_bound("columns", columns.len(), MAX_DEVICE_COLUMNS)?;
    if columns.iter().any(|c| c.len() > MAX_DEVICE_COLUMN_NAME || c.contains('\0')) {
        return Err(crate::StoreError::InvalidInput(format!(
            "a column name has at most {MAX_DEVICE_COLUMN_NAME} bytes and no NUL"
        )));
    }
    Ok(())
}

/// Most models a [`DeviceDashboard`] lists (the most common ones).
pub const MAX_DASHBOARD_MODELS: u32 = 1_000;

/// Devices and online devices of one group of a [`DeviceDashboard`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct DeviceCount<K> {
    /// The group: a device type or a model.
    pub key: K,
    /// Devices.
    pub total: u64,
    /// Of them online.
    pub online: u64,
}

/// The dashboard of a set of devices (DEV-2): [`crate::EntityStore::device_dashboard`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct DeviceDashboard {
    /// Devices.
    pub total: u64,
    /// Of them online.
    pub online: u64,
    /// By device type, in [`DeviceType::ALL`] order (types without devices left out).
    pub by_type: Vec<DeviceCount<DeviceType>>,
    /// By model, the most common first, at most [`MAX_DASHBOARD_MODELS`].
    pub by_model: Vec<DeviceCount<String>>,
    /// Whether more models exist than `by_model` lists.
    pub models_truncated: bool,
}

impl DeviceDashboard {
    /// Assembles a dashboard from the rows of the two group queries: (type name, total, online)
    /// and (model, total, online), the latter read with a limit of one beyond the bound.
    pub(crate) fn from_groups(types: Vec<(String, i64, i64)>, mut models: Vec<(String, i64, i64)>) -> DeviceDashboard {
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        let mut by_type: Vec<DeviceCount<DeviceType>> = types
            .into_iter()
            .map(|(t, total, online)| DeviceCount {
                key: DeviceType::parse(&t).unwrap_or(DeviceType::Other),
                total: n(total),
                online: n(online),
            })
            .collect();
        by_type.sort_by_key(|c| c.key);
        // Unknown stored names all read as Other: merge them.
        by_type.dedup_by(|later, earlier| {
            let same = later.key == earlier.key;
            if same {
                earlier.total += later.total;
                earlier.online += later.online;
            }
            same
        });
        let models_truncated = models.len() > MAX_DASHBOARD_MODELS as usize;
        models.truncate(MAX_DASHBOARD_MODELS as usize);
        DeviceDashboard {
            total: by_type.iter().map(|c| c.total).sum(),
            online: by_type.iter().map(|c| c.online).sum(),
            by_type,
            by_model: models
                .into_iter()
                .map(|(key, total, online)| DeviceCount { key, total: n(total), online: n(online) })
                .collect(),
            models_truncated,
        }
    }
}

/// Most samples one [`crate::EventStore::resource_history`] returns, whatever limit it is given.
pub const MAX_RESOURCE_HISTORY: u32 = 1_000;

/// One CPU/memory sample of a device's history (DEV-3, DIA-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct ResourcePoint {
    /// Server receive time.
    pub at: UnixMillis,
    /// The sample.
    #[serde(flatten)]
    pub sample: ResourceSample,
}

/// Most updates one [`crate::EntityStore::update_device_snapshots`] call may carry.
pub const MAX_SNAPSHOT_BATCH: usize = 1_000;

/// Most ids each id list of a [`DeviceQuery`] may hold.
pub const MAX_DEVICE_FILTER_IDS: usize = 10_000;

/// Longest text filter of a [`DeviceQuery`] (model, firmware, IP prefix, `q`), in bytes.
pub const MAX_DEVICE_FILTER_TEXT: usize = 64;

/// Largest page of [`crate::EntityStore::query_devices`].
pub const MAX_DEVICE_PAGE: u32 = 1_000;

/// Longest cursor string [`DeviceCursor::decode`] accepts, in bytes.
pub const MAX_DEVICE_CURSOR: usize = 512;

/// A status report as the device snapshot keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceReport {
    /// Server receive time of the report.
    pub at: UnixMillis,
    /// The reported status.
    pub status: DeviceStatus,
}

/// One change to a device's persisted snapshot ([`crate::EntityStore::update_device_snapshots`]):
/// an online/offline transition, a status report, or both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSnapshotUpdate {
    /// The device.
    pub device_id: DeviceId,
    /// The device came online (`true`) or went offline (`false`); `None`: unchanged.
    pub online: Option<bool>,
    /// The latest status report; `None`: unchanged. A report older than the stored one is
    /// ignored by the store.
    pub report: Option<DeviceReport>,
}

impl DeviceSnapshotUpdate {
    /// Folds a later update of the same device into this one: the later value of each part wins.
    pub fn merge(&mut self, later: DeviceSnapshotUpdate) {
        if later.online.is_some() {
            self.online = later.online;
        }
        match (&self.report, later.report) {
            (Some(mine), Some(theirs)) if theirs.at < mine.at => {}
            (_, Some(theirs)) => self.report = Some(theirs),
            (_, None) => {}
        }
    }
}

/// The updates with one entry per device (in order of first appearance), later ones merged into
/// earlier ones ([`DeviceSnapshotUpdate::merge`]).
pub fn coalesce_snapshot_updates(updates: Vec<DeviceSnapshotUpdate>) -> Vec<DeviceSnapshotUpdate> {
    let mut index: std::collections::HashMap<DeviceId, usize> = std::collections::HashMap::new();
    let mut out: Vec<DeviceSnapshotUpdate> = Vec::with_capacity(updates.len());
    for u in updates {
        match index.get(&u.device_id) {
            Some(&i) => out[i].merge(u),
            None => {
                index.insert(u.device_id, out.len());
                out.push(u);
            }
        }
    }
    out
}

/// The persisted snapshot of a device: its type and what its last status report and its last
/// online/offline transition said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct DeviceSnapshot {
    /// Kind of device, from its model ([`DeviceType::of_model`]).
    pub device_type: DeviceType,
    /// Online since its last connection (false after a server restart until it connects again).
    pub online: bool,
    /// SIP account status over all lines, from the last report.
    pub sip_status: SipSummary,
    /// Call status from the last report (`None`: never reported).
    pub call_status: Option<CallStatus>,
    /// Public address from the last report.
    pub public_ip: Option<String>,
    /// Private address from the last report.
    pub private_ip: Option<String>,
    /// Time of the last status report.
    pub last_report_at: Option<UnixMillis>,
    /// Uptime at the last report, seconds.
    pub uptime_s: Option<u64>,
    /// Last reboot, from the last report.
    pub last_reboot: Option<UnixMillis>,
    /// SIP registration per line, from the last report.
    pub lines: Vec<SipLine>,
}

/// A device with its enterprise and snapshot: one row of [`crate::EntityStore::query_devices`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct DeviceSummary {
    /// The device row.
    #[serde(flatten)]
    pub device: Device,
    /// Its enterprise's name.
    pub enterprise_name: String,
    /// Its enterprise's channel (the DEV-1 "sub-channel" column).
    pub channel_id: Option<ChannelId>,
    /// The snapshot.
    #[serde(flatten)]
    pub snapshot: DeviceSnapshot,
}

/// The column a device list is sorted by (then by id, in the same direction).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeviceSortColumn {
    /// MAC address (devices without one first).
    Mac,
    /// Display name.
    Name,
    /// Model.
    Model,
    /// Firmware version.
    Firmware,
    /// Public IP, as text.
    PublicIp,
    /// Private IP, as text.
    PrivateIp,
    /// Device status: offline before online.
    Online,
    /// Time of the last status report (never reported first).
    LastReportAt,
    /// Enterprise id.
    Enterprise,
    /// When the device was added.
    Created,
}

impl DeviceSortColumn {
    /// Every column.
    pub const ALL: [DeviceSortColumn; 10] = [
        DeviceSortColumn::Mac,
        DeviceSortColumn::Name,
        DeviceSortColumn::Model,
        DeviceSortColumn::Firmware,
        DeviceSortColumn::PublicIp,
        DeviceSortColumn::PrivateIp,
        DeviceSortColumn::Online,
        DeviceSortColumn::LastReportAt,
        DeviceSortColumn::Enterprise,
        DeviceSortColumn::Created,
    ];

    /// The stable name (as in the API's `sort` parameter).
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceSortColumn::Mac => "mac",
            DeviceSortColumn::Name => "name",
            DeviceSortColumn::Model => "model",
            DeviceSortColumn::Firmware => "firmware",
            DeviceSortColumn::PublicIp => "public_ip",
            DeviceSortColumn::PrivateIp => "private_ip",
            DeviceSortColumn::Online => "online",
            DeviceSortColumn::LastReportAt => "last_report_at",
            DeviceSortColumn::Enterprise => "enterprise",
            DeviceSortColumn::Created => "created",
        }
    }

    /// The column with this name (`status` is another name of `online`).
    pub fn parse(name: &str) -> Option<DeviceSortColumn> {
        if name == "status" {
            return Some(DeviceSortColumn::Online);
        }
        DeviceSortColumn::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// Whether the sort key is a number (else text).
    pub(crate) fn numeric(self) -> bool {
        matches!(
            self,
            DeviceSortColumn::Online
                | DeviceSortColumn::LastReportAt
                | DeviceSortColumn::Enterprise
                | DeviceSortColumn::Created
        )
    }
}

/// The filters and order of [`crate::EntityStore::query_devices`]; every filter given must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceQuery {
    /// Devices of these enterprises (at most [`MAX_DEVICE_FILTER_IDS`]; empty matches nothing).
    pub enterprises: Option<Vec<EnterpriseId>>,
    /// Devices whose enterprise is in one of these channels (at most
    /// [`MAX_DEVICE_FILTER_IDS`]; empty matches nothing).
    pub channels: Option<Vec<ChannelId>>,
    /// Kind of device.
    pub device_type: Option<DeviceType>,
    /// Online or offline.
    pub online: Option<bool>,
    /// SIP account status.
    pub sip_status: Option<SipSummary>,
    /// Model, exactly.
    pub model: Option<String>,
    /// Firmware, exactly.
    pub firmware: Option<String>,
    /// Public IP prefix (digits, hex letters, `.` and `:` only).
    pub public_ip: Option<String>,
    /// Private IP prefix (digits, hex letters, `.` and `:` only).
    pub private_ip: Option<String>,
    /// Last report at or after this time.
    pub reported_from: Option<UnixMillis>,
    /// Last report before this time.
    pub reported_to: Option<UnixMillis>,
    /// Case-insensitive substring of MAC, name, serial or model (ASCII case folding; no control
    /// characters).
    pub q: Option<String>,
    /// Sort column.
    pub sort: DeviceSortColumn,
    /// Descending instead of ascending.
    pub descending: bool,
}

impl Default for DeviceQuery {
    fn default() -> Self {
        DeviceQuery {
            enterprises: None,
            channels: None,
            device_type: None,
            online: None,
            sip_status: None,
            model: None,
            firmware: None,
            public_ip: None,
            private_ip: None,
            reported_from: None,
            reported_to: None,
            q: None,
            sort: DeviceSortColumn::Created,
            descending: false,
        }
    }
}

fn check_text(what: &str, value: &Option<String>) -> crate::Result<()> {
    if let Some(v) = value {
        if v.len() > MAX_DEVICE_FILTER_TEXT {
            return Err(crate::StoreError::InvalidInput(format!(
                "{what} filter of {} bytes (at most {MAX_DEVICE_FILTER_TEXT})",
                v.len()
            )));
        }
        if v.contains('\0') {
            return Err(crate::StoreError::InvalidInput(format!("{what} filter holds a NUL character")));
        }
    }
    Ok(())
}

impl DeviceQuery {
    /// [`crate::StoreError::InvalidInput`] unless every bound holds: id lists of at most
    /// [`MAX_DEVICE_FILTER_IDS`], text filters of at most [`MAX_DEVICE_FILTER_TEXT`] bytes
    /// without NUL, IP prefixes of digits, hex letters, `.` and `:` only, ids within `i64`.
    pub fn validate(&self) -> crate::Result<()> {
        if let Some(e) = &self.enterprises {
            crate::check_bound("enterprise ids", e.len(), MAX_DEVICE_FILTER_IDS)?;
            if e.iter().any(|e| i64::try_from(e.0).is_err()) {
                return Err(crate::StoreError::InvalidInput("enterprise id beyond i64".into()));
            }
        }
        if let Some(c) = &self.channels {
            crate::check_bound("channel ids", c.len(), MAX_DEVICE_FILTER_IDS)?;
            if c.iter().any(|c| i64::try_from(c.0).is_err()) {
                return Err(crate::StoreError::InvalidInput("channel id beyond i64".into()));
            }
        }
        check_text("model", &self.model)?;
        check_text("firmware", &self.firmware)?;
        check_text("public_ip", &self.public_ip)?;
        check_text("private_ip", &self.private_ip)?;
        check_text("q", &self.q)?;
        if self.q.as_ref().is_some_and(|q| q.chars().any(char::is_control)) {
            return Err(crate::StoreError::InvalidInput("q filter holds a control character".into()));
        }
        for (what, prefix) in [("public_ip", &self.public_ip), ("private_ip", &self.private_ip)] {
            if prefix.as_ref().is_some_and(|p| !p.chars().all(|c| c.is_ascii_hexdigit() || c == '.' || c == ':')) {
                return Err(crate::StoreError::InvalidInput(format!(
                    "{what} prefix may hold only digits, hex letters, '.' and ':'"
                )));
            }
        }
        Ok(())
    }

    /// Whether a list filter is empty, so that nothing can match.
    pub fn matches_nothing(&self) -> bool {
        self.enterprises.as_ref().is_some_and(Vec::is_empty) || self.channels.as_ref().is_some_and(Vec::is_empty)
    }
}

/// The key of a row a device page ends with, as its sort column sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSortKey {
    /// A numeric column.
    Int(i64),
    /// A text column.
    Text(String),
}

/// Where a device page ends: the sort (column and direction), the last row's key and id.
/// Passed to clients as an opaque string ([`DeviceCursor::encode`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCursor {
    /// The sort column the cursor belongs to.
    pub sort: DeviceSortColumn,
    /// The direction it belongs to.
    pub descending: bool,
    /// The last row's sort key.
    pub key: DeviceSortKey,
    /// The last row's id.
    pub id: DeviceId,
}

impl DeviceCursor {
    /// The opaque string form: `c1` and the hex of `column|a-or-d|id|key`.
    pub fn encode(&self) -> String {
        let key = match &self.key {
            DeviceSortKey::Int(i) => i.to_string(),
            DeviceSortKey::Text(t) => t.clone(),
        };
        let raw = format!("{}|{}|{}|{}", self.sort.as_str(), if self.descending { 'd' } else { 'a' }, self.id.0, key);
        let mut out = String::with_capacity(2 + raw.len() * 2);
        out.push_str("c1");
        for b in raw.bytes() {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    /// Parses a cursor made by [`DeviceCursor::encode`] for this sort and direction;
    /// [`crate::StoreError::InvalidInput`] for anything else (a cursor of another sort included).
    pub fn decode(s: &str, sort: DeviceSortColumn, descending: bool) -> crate::Result<DeviceCursor> {
        let bad = || crate::StoreError::InvalidInput("malformed cursor".into());
        if s.len() > MAX_DEVICE_CURSOR {
            return Err(bad());
        }
        let hex = s.strip_prefix("c1").ok_or_else(bad)?;
        if hex.len() % 2 != 0 || !hex.is_ascii() {
            return Err(bad());
        }
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| bad()))
            .collect::<crate::Result<Vec<u8>>>()?;
        let raw = String::from_utf8(bytes).map_err(|_| bad())?;
        let mut parts = raw.splitn(4, '|');
        let (Some(col), Some(dir), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let col = DeviceSortColumn::parse(col).ok_or_else(bad)?;
        let desc = match dir {
            "a" => false,
            "d" => true,
            _ => return Err(bad()),
        };
        if col != sort || desc != descending {
            return Err(crate::StoreError::InvalidInput("the cursor belongs to another sort order".into()));
        }
        let id: u64 = id.parse().map_err(|_| bad())?;
        if i64::try_from(id).is_err() {
            return Err(bad());
        }
        let key = if col.numeric() {
            DeviceSortKey::Int(key.parse().map_err(|_| bad())?)
        } else {
            DeviceSortKey::Text(key.to_owned())
        };
        Ok(DeviceCursor { sort, descending, key, id: DeviceId(id) })
    }

    /// The cursor after `row` in the order of `query`.
    pub fn after(row: &DeviceSummary, query: &DeviceQuery) -> DeviceCursor {
        let d = &row.device;
        let s = &row.snapshot;
        let key = match query.sort {
            DeviceSortColumn::Mac => DeviceSortKey::Text(d.mac.map(|m| m.as_str().to_owned()).unwrap_or_default()),
            DeviceSortColumn::Name => DeviceSortKey::Text(d.name.clone()),
            DeviceSortColumn::Model => DeviceSortKey::Text(d.model.clone()),
            DeviceSortColumn::Firmware => DeviceSortKey::Text(d.firmware.clone()),
            DeviceSortColumn::PublicIp => DeviceSortKey::Text(s.public_ip.clone().unwrap_or_default()),
            DeviceSortColumn::PrivateIp => DeviceSortKey::Text(s.private_ip.clone().unwrap_or_default()),
            DeviceSortColumn::Online => DeviceSortKey::Int(i64::from(s.online)),
            DeviceSortColumn::LastReportAt => DeviceSortKey::Int(s.last_report_at.map_or(0, |t| t.0)),
            DeviceSortColumn::Enterprise => DeviceSortKey::Int(i64::try_from(d.enterprise_id.0).unwrap_or(i64::MAX)),
            DeviceSortColumn::Created => DeviceSortKey::Int(d.created_at.0),
        };
        DeviceCursor { sort: query.sort, descending: query.descending, key, id: d.id }
    }
}

/// One page of [`crate::EntityStore::query_devices`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct DevicePage {
    /// The rows, in the query's order.
    pub items: Vec<DeviceSummary>,
    /// The cursor of the next page; `None` when this page is the last.
    pub next_cursor: Option<String>,
    /// How many devices match the filters (all pages).
    pub total: u64,
}

/// A page of [`crate::EntityStore::query_devices`]: at most `limit` rows after `cursor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePageRequest {
    /// The `next_cursor` of the previous page; `None` for the first page.
    pub cursor: Option<String>,
    /// Rows, 1 to [`MAX_DEVICE_PAGE`].
    pub limit: u32,
}
