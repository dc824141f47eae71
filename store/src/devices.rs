//! Devices (`DeviceStore`): registration (ING-2 auto-add), the persisted snapshot ingest feeds,
//! device lists with filters, sorts and keyset pages, the dashboard (DEV-1..3), saved search
//! labels and chosen columns. The SQL both backends share is in `device_sql.rs`.

use async_trait::async_trait;
use fleetpulse_proto::catalog::DeviceType;
use fleetpulse_proto::domain::{CallStatus, DeviceKey, DeviceStatus, SipLine, SipSummary};
use fleetpulse_proto::ids::ChannelId;
use fleetpulse_proto::{AccountId, DeviceId, EnterpriseId, Mac, UnixMillis};
use serde::{Deserialize, Serialize};

use crate::{Page, Result, StoreError};

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

/// Most models a [`DeviceDashboard`] lists (the most common ones).
pub const MAX_DASHBOARD_MODELS: u32 = 1_000;

/// Most updates one [`crate::DeviceStore::update_device_snapshots`] call may carry.
pub const MAX_SNAPSHOT_BATCH: usize = 1_000;

/// Most ids each id list of a [`DeviceQuery`] may hold.
pub const MAX_DEVICE_FILTER_IDS: usize = 10_000;

/// Longest text filter of a [`DeviceQuery`] (model, firmware, IP prefix, `q`), in bytes.
pub const MAX_DEVICE_FILTER_TEXT: usize = 64;

/// Largest page of [`crate::DeviceStore::query_devices`].
pub const MAX_DEVICE_PAGE: u32 = 1_000;

/// Longest cursor string [`DeviceCursor::decode`] accepts, in bytes.
pub const MAX_DEVICE_CURSOR: usize = 512;

/// Devices, their snapshots and lists, and the device list settings of accounts.
#[async_trait]
pub trait DeviceStore: Send + Sync + 'static {
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
    /// [`DeviceStore::query_devices`] without counting the matches (`total` is 0): one query
    /// per page, for walking every match (the CSV export) where no total is shown.
    async fn scan_devices(&self, query: DeviceQuery, page: DevicePageRequest) -> Result<DevicePage>;
    /// Device counts of the devices matching the query (its sort is ignored), for the dashboard
    /// (DEV-2): total and online, by type, by model (the [`MAX_DASHBOARD_MODELS`] most common).
    /// [`StoreError::InvalidInput`] if [`DeviceQuery::validate`] refuses the query.
    async fn device_dashboard(&self, query: DeviceQuery) -> Result<DeviceDashboard>;
    /// Saves a device search label of the account (DEV-1). [`StoreError::AlreadyExists`] if
    /// the account has a label of that name; [`StoreError::InvalidInput`] (and nothing is saved)
    /// if [`NewDeviceLabel::validate`] refuses it, if the account already has
    /// [`MAX_DEVICE_LABELS`] labels (checked atomically with the insert), or if the account
    /// does not exist.
    async fn create_device_label(&self, new: NewDeviceLabel, now: UnixMillis) -> Result<DeviceLabel>;
    /// The account's labels, ordered by id (at most [`MAX_DEVICE_LABELS`]).
    async fn list_device_labels(&self, account: AccountId) -> Result<Vec<DeviceLabel>>;
    /// Deletes the account's label; false if it has none with this id (another account's
    /// label included).
    async fn delete_device_label(&self, account: AccountId, id: u64) -> Result<bool>;
    /// The account's chosen device list columns; `None` if it never chose.
    async fn device_columns(&self, account: AccountId) -> Result<Option<Vec<String>>>;
    /// Replaces the account's chosen device list columns (the caller checks the names against
    /// its column set). [`StoreError::InvalidInput`] unless [`check_device_columns`] accepts
    /// them or if the account does not exist.
    async fn set_device_columns(&self, account: AccountId, columns: Vec<String>) -> Result<()>;
    /// The device with its enterprise and snapshot.
    async fn device_summary(&self, id: DeviceId) -> Result<Option<DeviceSummary>>;
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

/// Arguments of [`crate::DeviceStore::register_device`].
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

/// Result of [`crate::DeviceStore::register_device`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredDevice {
    /// The device row.
    pub device: Device,
    /// True if this call added it.
    pub created: bool,
}

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

/// Arguments of [`crate::DeviceStore::create_device_label`].
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

/// The dashboard of a set of devices (DEV-2): [`crate::DeviceStore::device_dashboard`].
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
    /// By device group (PRV-2), the most members first, at most
    /// [`crate::MAX_DASHBOARD_GROUPS`]; a device counts in each of its groups. Only for a query of
    /// exactly one enterprise (empty otherwise: groups belong to one enterprise).
    pub by_group: Vec<DeviceCount<crate::GroupRef>>,
    /// Whether more groups exist than `by_group` lists.
    pub groups_truncated: bool,
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
            by_group: Vec::new(),
            groups_truncated: false,
        }
    }
}

/// A status report as the device snapshot keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceReport {
    /// Server receive time of the report.
    pub at: UnixMillis,
    /// The reported status.
    pub status: DeviceStatus,
}

/// One change to a device's persisted snapshot ([`crate::DeviceStore::update_device_snapshots`]):
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

/// A device with its enterprise and snapshot: one row of [`crate::DeviceStore::query_devices`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct DeviceSummary {
    /// The device row.
    #[serde(flatten)]
    pub device: Device,
    /// Its enterprise's name.
    pub enterprise_name: String,
    /// Its enterprise's channel (the DEV-1 "sub-channel" column).
    pub channel_id: Option<ChannelId>,
    /// Its site (PRV-1); `None` until it reports an address.
    pub site: Option<crate::SiteRef>,
    /// The snapshot.
    #[serde(flatten)]
    pub snapshot: DeviceSnapshot,
    /// Its device groups, top priority first (PRV-2).
    pub groups: Vec<crate::GroupRef>,
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

/// The filters and order of [`crate::DeviceStore::query_devices`]; every filter given must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceQuery {
    /// Devices of these enterprises (at most [`MAX_DEVICE_FILTER_IDS`]; empty matches nothing).
    pub enterprises: Option<Vec<EnterpriseId>>,
    /// Devices whose enterprise is in one of these channels (at most
    /// [`MAX_DEVICE_FILTER_IDS`]; empty matches nothing).
    pub channels: Option<Vec<ChannelId>>,
    /// Devices in these sites or any site below them (at most [`MAX_DEVICE_FILTER_IDS`]; empty
    /// matches nothing).
    pub sites: Option<Vec<fleetpulse_proto::SiteId>>,
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
    /// Members of this device group (PRV-2).
    pub group: Option<fleetpulse_proto::GroupId>,
    /// Licence status (ORD-3).
    pub licence: Option<crate::LicenceStatus>,
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
            sites: None,
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
            group: None,
            licence: None,
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
        if let Some(s) = &self.sites {
            crate::check_bound("site ids", s.len(), MAX_DEVICE_FILTER_IDS)?;
            if s.iter().any(|s| i64::try_from(s.0).is_err()) {
                return Err(crate::StoreError::InvalidInput("site id beyond i64".into()));
            }
        }
        if self.group.is_some_and(|g| i64::try_from(g.0).is_err()) {
            return Err(crate::StoreError::InvalidInput("group id beyond i64".into()));
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
        self.enterprises.as_ref().is_some_and(Vec::is_empty)
            || self.channels.as_ref().is_some_and(Vec::is_empty)
            || self.sites.as_ref().is_some_and(Vec::is_empty)
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

/// One page of [`crate::DeviceStore::query_devices`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct DevicePage {
    /// The rows, in the query's order.
    pub items: Vec<DeviceSummary>,
    /// The cursor of the next page; `None` when this page is the last.
    pub next_cursor: Option<String>,
    /// How many devices match the filters (all pages).
    pub total: u64,
}

/// A page of [`crate::DeviceStore::query_devices`]: at most `limit` rows after `cursor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePageRequest {
    /// The `next_cursor` of the previous page; `None` for the first page.
    pub cursor: Option<String>,
    /// Rows, 1 to [`MAX_DEVICE_PAGE`].
    pub limit: u32,
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
