//! The device inventory (`InventoryStore`, DEV-4): devices added, edited, moved and deleted by
//! admins, bulk edits of a filtered set, per-device attributes, CSV imports applied in batches
//! and their import logs. The decisions (what a row or an edit does to a device) are pure
//! functions here; the backends only read and write rows.

use std::collections::BTreeMap;

use async_trait::async_trait;
use fleetpulse_proto::{AccountId, DeviceId, EnterpriseId, Mac, UnixMillis};
use serde::{Deserialize, Serialize};

use crate::{Device, DeviceQuery, Result, StoreError};

/// Most attributes of one device.
pub const MAX_ATTRIBUTES: usize = 32;

/// Longest attribute key, in bytes (`[a-z0-9_.-]`).
pub const MAX_ATTRIBUTE_KEY: usize = 64;

/// Longest attribute value, in characters.
pub const MAX_ATTRIBUTE_VALUE: usize = 256;

/// Longest device name, in characters.
pub const MAX_DEVICE_NAME: usize = 64;

/// Longest model, in characters.
pub const MAX_DEVICE_MODEL: usize = 64;

/// Longest serial number, in bytes (`[A-Za-z0-9._-]`).
pub const MAX_DEVICE_SERIAL: usize = 64;

/// Most devices one bulk edit may change (a filter matching more is refused).
pub const MAX_BULK_EDIT: u64 = 10_000;

/// Most rows of one [`InventoryStore::import_devices`] call (one transaction).
pub const MAX_IMPORT_BATCH: usize = 1_000;

/// Most row errors an import log keeps (the counts go on).
pub const MAX_IMPORT_ERRORS: u64 = 10_000;

/// Longest reason of a row error, in characters.
pub const MAX_IMPORT_REASON: usize = 200;

/// Most import logs of one [`InventoryStore::list_device_imports`] page.
pub const MAX_IMPORT_PAGE: u32 = 200;

/// A device's attributes: key → value, at most [`MAX_ATTRIBUTES`].
pub type Attributes = BTreeMap<String, String>;

/// [`StoreError::InvalidInput`] unless the key is 1 to [`MAX_ATTRIBUTE_KEY`] bytes of
/// `[a-z0-9_.-]`.
pub fn check_attribute_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > MAX_ATTRIBUTE_KEY {
        return Err(StoreError::InvalidInput(format!(
            "attribute key {key:?} must have 1 to {MAX_ATTRIBUTE_KEY} bytes"
        )));
    }
    if !key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')) {
        return Err(StoreError::InvalidInput(format!(
            "attribute key {key:?} may hold only a-z, 0-9, '_', '.' and '-'"
        )));
    }
    Ok(())
}

/// [`StoreError::InvalidInput`] unless the value has at most [`MAX_ATTRIBUTE_VALUE`]
/// characters and no control character.
pub fn check_attribute_value(key: &str, value: &str) -> Result<()> {
    crate::model::check_text(&format!("attribute {key}"), value, MAX_ATTRIBUTE_VALUE)
}

/// [`StoreError::InvalidInput`] unless every key and value passes and there are at most
/// [`MAX_ATTRIBUTES`].
pub fn check_attributes(attributes: &Attributes) -> Result<()> {
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(StoreError::InvalidInput(format!(
            "{} attributes (a device has at most {MAX_ATTRIBUTES})",
            attributes.len()
        )));
    }
    for (k, v) in attributes {
        check_attribute_key(k)?;
        check_attribute_value(k, v)?;
    }
    Ok(())
}

/// [`StoreError::InvalidInput`] unless the name has at most [`MAX_DEVICE_NAME`] characters and
/// no control character.
pub fn check_device_name(name: &str) -> Result<()> {
    crate::model::check_text("name", name, MAX_DEVICE_NAME)
}

/// [`StoreError::InvalidInput`] unless the model has at most [`MAX_DEVICE_MODEL`] characters
/// and no control character.
pub fn check_device_model(model: &str) -> Result<()> {
    crate::model::check_text("model", model, MAX_DEVICE_MODEL)
}

/// [`StoreError::InvalidInput`] unless the serial is 1 to [`MAX_DEVICE_SERIAL`] bytes of
/// `[A-Za-z0-9._-]`.
pub fn check_serial(serial: &str) -> Result<()> {
    if serial.is_empty()
        || serial.len() > MAX_DEVICE_SERIAL
        || !serial.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(StoreError::InvalidInput(format!(
            "serial number must be 1 to {MAX_DEVICE_SERIAL} letters, digits, '.', '_' or '-'"
        )));
    }
    Ok(())
}

/// A device added by an admin ([`InventoryStore::add_device`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewInventoryDevice {
    /// Its enterprise (the API checked the caller may add there).
    pub enterprise_id: EnterpriseId,
    /// MAC address; at least one of MAC and serial.
    pub mac: Option<Mac>,
    /// Serial number ([`check_serial`]).
    pub serial: Option<String>,
    /// Model ([`check_device_model`]; empty until the device says).
    pub model: String,
    /// Display name ([`check_device_name`]).
    pub name: String,
    /// Attributes ([`check_attributes`]).
    pub attributes: Attributes,
    /// When it is added.
    pub at: UnixMillis,
}

impl NewInventoryDevice {
    /// [`StoreError::InvalidInput`] unless it has a MAC or a serial and every field passes.
    pub fn validate(&self) -> Result<()> {
        if self.mac.is_none() && self.serial.is_none() {
            return Err(StoreError::InvalidInput("a device needs a MAC address or a serial number".into()));
        }
        if let Some(s) = &self.serial {
            check_serial(s)?;
        }
        check_device_model(&self.model)?;
        check_device_name(&self.name)?;
        check_attributes(&self.attributes)
    }
}

/// A change of a device's attributes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttributeChange {
    /// The attributes become exactly these.
    Replace(Attributes),
    /// These keys are set (a value) or removed (`null`); the others are kept.
    Merge(BTreeMap<String, Option<String>>),
}

/// An edit of a device ([`InventoryStore::edit_device`], [`InventoryStore::bulk_edit_devices`]):
/// every field given is changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceEdit {
    /// New name.
    pub name: Option<String>,
    /// New model.
    pub model: Option<String>,
    /// Moves the device to this enterprise (the API checked the caller's scope holds both).
    pub enterprise_id: Option<EnterpriseId>,
    /// Attribute change.
    pub attributes: Option<AttributeChange>,
}

impl DeviceEdit {
    /// [`StoreError::InvalidInput`] unless every given field passes its check (a merge's result
    /// is checked against [`MAX_ATTRIBUTES`] when applied).
    pub fn validate(&self) -> Result<()> {
        if let Some(n) = &self.name {
            check_device_name(n)?;
        }
        if let Some(m) = &self.model {
            check_device_model(m)?;
        }
        match &self.attributes {
            Some(AttributeChange::Replace(a)) => check_attributes(a)?,
            Some(AttributeChange::Merge(m)) => {
                crate::check_bound("attribute changes", m.len(), MAX_ATTRIBUTES * 2)?;
                for (k, v) in m {
                    check_attribute_key(k)?;
                    if let Some(v) = v {
                        check_attribute_value(k, v)?;
                    }
                }
            }
            None => {}
        }
        Ok(())
    }

    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.model.is_none() && self.enterprise_id.is_none() && self.attributes.is_none()
    }
}

/// What a device row holds that an edit can change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Editable {
    pub(crate) enterprise_id: EnterpriseId,
    pub(crate) name: String,
    pub(crate) model: String,
    pub(crate) attributes: Attributes,
}

/// The device after the edit; [`StoreError::InvalidInput`] if a merge leaves more than
/// [`MAX_ATTRIBUTES`].
pub(crate) fn apply_edit(mut current: Editable, edit: &DeviceEdit) -> Result<Editable> {
    if let Some(n) = &edit.name {
        current.name.clone_from(n);
    }
    if let Some(m) = &edit.model {
        current.model.clone_from(m);
    }
    if let Some(e) = edit.enterprise_id {
        current.enterprise_id = e;
    }
    match &edit.attributes {
        Some(AttributeChange::Replace(a)) => current.attributes.clone_from(a),
        Some(AttributeChange::Merge(m)) => {
            for (k, v) in m {
                match v {
                    Some(v) => current.attributes.insert(k.clone(), v.clone()),
                    None => current.attributes.remove(k),
                };
            }
        }
        None => {}
    }
    check_attributes(&current.attributes)?;
    Ok(current)
}

/// Attributes as stored (JSON object text).
pub(crate) fn encode_attributes(a: &Attributes) -> Result<String> {
    serde_json::to_string(a).map_err(|e| StoreError::Backend(format!("attributes: {e}")))
}

/// Stored attributes (unreadable text reads as none).
pub(crate) fn decode_attributes(s: &str) -> Attributes {
    serde_json::from_str(s).unwrap_or_default()
}

/// How an import treats devices that exist already (in the import's enterprise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImportMode {
    /// Existing devices are left alone (the row counts as skipped).
    Create,
    /// Existing devices take the row: its name and attributes replace theirs (an empty
    /// `endpoint_name` clears the name); the model changes only when the row gives one.
    Overwrite,
    /// Existing devices keep what the row leaves out: non-empty cells are set, attributes are
    /// merged (the row's win).
    Merge,
}

impl ImportMode {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            ImportMode::Create => "create",
            ImportMode::Overwrite => "overwrite",
            ImportMode::Merge => "merge",
        }
    }

    /// The mode of a stable name.
    pub fn parse(s: &str) -> Option<ImportMode> {
        [ImportMode::Create, ImportMode::Overwrite, ImportMode::Merge].into_iter().find(|m| m.as_str() == s)
    }
}

/// One validated row of a CSV import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRow {
    /// Its line in the file (1 is the header).
    pub line: u64,
    /// MAC address.
    pub mac: Option<Mac>,
    /// Serial number.
    pub serial: Option<String>,
    /// Model (`endpoint_type`), if the cell is not empty.
    pub model: Option<String>,
    /// Name (`endpoint_name`), if the cell is not empty.
    pub name: Option<String>,
    /// Attributes (every other non-empty cell).
    pub attributes: Attributes,
    /// Group names (`endpoint_group`, in priority order; checked with
    /// [`crate::check_group_name`]): `None` without the column, empty for an empty cell (which
    /// clears the groups in [`ImportMode::Overwrite`] and keeps them in [`ImportMode::Merge`]).
    pub groups: Option<Vec<String>>,
}

/// What [`InventoryStore::import_devices`] did with a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportOutcome {
    /// A device was added.
    Created(DeviceId),
    /// An existing device was changed.
    Updated(DeviceId),
    /// An existing device was left alone ([`ImportMode::Create`]).
    Skipped(DeviceId),
    /// Nothing changed, for this reason (column, reason).
    Failed(&'static str, String),
}

/// What a row does, given the device its key finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RowPlan {
    Insert,
    Update(DeviceId, Editable),
    Skip(DeviceId),
    Fail(&'static str, String),
}

/// Decides what an import row does to the device its key found (`existing`: its id and row).
pub(crate) fn plan_row(
    enterprise: EnterpriseId,
    mode: ImportMode,
    row: &ImportRow,
    existing: Option<(DeviceId, Editable)>,
) -> RowPlan {
    let Some((id, current)) = existing else { return RowPlan::Insert };
    if current.enterprise_id != enterprise {
        let column = if row.mac.is_some() { "mac_address" } else { "serial_number" };
        return RowPlan::Fail(column, "the device is registered to another enterprise".into());
    }
    let edit = match mode {
        ImportMode::Create => return RowPlan::Skip(id),
        ImportMode::Overwrite => DeviceEdit {
            name: Some(row.name.clone().unwrap_or_default()),
            model: row.model.clone(),
            enterprise_id: None,
            attributes: Some(AttributeChange::Replace(row.attributes.clone())),
        },
        ImportMode::Merge => DeviceEdit {
            name: row.name.clone(),
            model: row.model.clone(),
            enterprise_id: None,
            attributes: Some(AttributeChange::Merge(
                row.attributes.iter().map(|(k, v)| (k.clone(), Some(v.clone()))).collect(),
            )),
        },
    };
    match apply_edit(current, &edit) {
        Ok(next) => RowPlan::Update(id, next),
        Err(e) => RowPlan::Fail("", e.to_string()),
    }
}

/// State of an import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImportState {
    /// Rows are being read and applied.
    Running,
    /// Every row was read (some may have failed).
    Done,
    /// The file could not be read to its end (the note says why); the rows before were applied.
    Aborted,
}

impl ImportState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ImportState::Running => "running",
            ImportState::Done => "done",
            ImportState::Aborted => "aborted",
        }
    }

    pub(crate) fn parse(s: &str) -> ImportState {
        match s {
            "running" => ImportState::Running,
            "done" => ImportState::Done,
            _ => ImportState::Aborted,
        }
    }
}

/// Row counts of an import.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct ImportCounts {
    /// Data rows read.
    pub rows: u64,
    /// Devices added.
    pub created: u64,
    /// Devices changed.
    pub updated: u64,
    /// Existing devices left alone.
    pub skipped: u64,
    /// Rows refused (nothing changed for them).
    pub failed: u64,
}

impl ImportCounts {
    /// Adds another's counts.
    pub fn add(&mut self, other: ImportCounts) {
        self.rows += other.rows;
        self.created += other.created;
        self.updated += other.updated;
        self.skipped += other.skipped;
        self.failed += other.failed;
    }
}

/// An import log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct DeviceImport {
    /// Identifier.
    pub id: u64,
    /// The enterprise the rows went to.
    pub enterprise_id: EnterpriseId,
    /// Who imported.
    pub account_id: AccountId,
    /// Mode.
    pub mode: ImportMode,
    /// State.
    pub state: ImportState,
    /// Started.
    pub started_at: UnixMillis,
    /// Finished (`None` while running).
    pub finished_at: Option<UnixMillis>,
    /// Counts.
    #[serde(flatten)]
    pub counts: ImportCounts,
    /// Row errors kept (at most [`MAX_IMPORT_ERRORS`]; `failed` may be larger).
    pub errors_kept: u64,
    /// Why an aborted import stopped.
    pub note: Option<String>,
}

/// A row error of an import log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct ImportRowError {
    /// Line in the file (1 is the header).
    pub line: u64,
    /// The column at fault (empty: the row as a whole).
    pub column: String,
    /// Why the row was refused.
    pub reason: String,
}

impl ImportRowError {
    /// The error with its column and reason bounded.
    pub fn new(line: u64, column: &str, reason: &str) -> ImportRowError {
        ImportRowError {
            line,
            column: crate::commands::truncate_utf8(column, MAX_ATTRIBUTE_KEY),
            reason: reason.chars().take(MAX_IMPORT_REASON).collect(),
        }
    }
}

/// Admin-managed devices and CSV imports (DEV-4).
#[async_trait]
pub trait InventoryStore: Send + Sync + 'static {
    /// Adds a device. [`StoreError::AlreadyExists`] (`"device"`) if its MAC, or its serial
    /// without a MAC, is registered (in any enterprise: keys are unique per platform);
    /// [`StoreError::InvalidInput`] if [`NewInventoryDevice::validate`] refuses it or the
    /// enterprise does not exist.
    async fn add_device(&self, new: NewInventoryDevice) -> Result<Device>;
    /// A device's attributes; `None` if there is no such device.
    async fn device_attributes(&self, id: DeviceId) -> Result<Option<Attributes>>;
    /// Edits a device (name, model, attributes, enterprise); `None` if there is no such device.
    /// A move cancels the device's pending commands and deletes its uploaded files (they belong
    /// to the enterprise that asked for them); its event history stays with the old enterprise
    /// until retention removes it. [`StoreError::InvalidInput`] (nothing changes) if the edit
    /// is refused or the target enterprise does not exist.
    async fn edit_device(&self, id: DeviceId, edit: DeviceEdit, now: UnixMillis) -> Result<Option<Device>>;
    /// Applies one edit to every device matching the query (its sort ignored), in one
    /// transaction; the number changed. [`StoreError::LimitExceeded`] (nothing changes) if more
    /// than [`MAX_BULK_EDIT`] match; [`StoreError::InvalidInput`] for a name (names are per
    /// device), a refused edit or a device the edit would take over [`MAX_ATTRIBUTES`].
    async fn bulk_edit_devices(&self, query: DeviceQuery, edit: DeviceEdit, now: UnixMillis) -> Result<u64>;
    /// Deletes a device, its command queue and its uploaded files (content included); its
    /// events, alarm records and delivery mark stay until retention removes them (a device that
    /// connects again is added anew, with a new id). The deleted row, or `None`.
    async fn delete_device(&self, id: DeviceId) -> Result<Option<Device>>;
    /// Applies a batch of import rows (at most [`MAX_IMPORT_BATCH`]) to the enterprise in one
    /// transaction, each row on its own: a row that fails changes nothing. One outcome per row,
    /// in order. Rows must have a MAC or a serial (validated by the caller).
    async fn import_devices(
        &self,
        enterprise: EnterpriseId,
        mode: ImportMode,
        rows: Vec<ImportRow>,
        at: UnixMillis,
    ) -> Result<Vec<ImportOutcome>>;
    /// Opens an import log (state running).
    async fn create_device_import(
        &self,
        enterprise: EnterpriseId,
        account: AccountId,
        mode: ImportMode,
        at: UnixMillis,
    ) -> Result<DeviceImport>;
    /// Adds counts and row errors to a running import log; errors beyond
    /// [`MAX_IMPORT_ERRORS`] are not kept (counted in `failed` all the same).
    async fn record_device_import(&self, id: u64, counts: ImportCounts, errors: Vec<ImportRowError>) -> Result<()>;
    /// Closes an import log (done or aborted, with a note).
    async fn finish_device_import(
        &self,
        id: u64,
        state: ImportState,
        note: Option<String>,
        at: UnixMillis,
    ) -> Result<()>;
    /// An import log.
    async fn device_import(&self, id: u64) -> Result<Option<DeviceImport>>;
    /// An import's row errors by line, after `after_line`, at most `limit` (≤ 1,000).
    async fn device_import_errors(&self, id: u64, after_line: u64, limit: u32) -> Result<Vec<ImportRowError>>;
    /// Import logs, newest first: those of the given enterprises (`None`: every enterprise),
    /// with an id below `before` when given, at most `limit` (≤ [`MAX_IMPORT_PAGE`]).
    async fn list_device_imports(
        &self,
        enterprises: Option<Vec<EnterpriseId>>,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<DeviceImport>>;
    /// Ends every import log still running as aborted with the note; how many. Run at server
    /// start: an import runs inside one request of one process, so a log still running then
    /// was left by a process that stopped (single-node assumption, as for devices online).
    async fn abort_running_device_imports(&self, note: String, at: UnixMillis) -> Result<u64>;
}

/// Checks a bulk edit: valid, no name, not empty.
pub(crate) fn check_bulk_edit(query: &DeviceQuery, edit: &DeviceEdit) -> Result<()> {
    query.validate()?;
    edit.validate()?;
    if edit.name.is_some() {
        return Err(StoreError::InvalidInput("a bulk edit cannot set names (they are per device)".into()));
    }
    if edit.is_empty() {
        return Err(StoreError::InvalidInput("the bulk edit changes nothing".into()));
    }
    Ok(())
}

/// Reason of the commands a move cancels.
pub(crate) const MOVED_REASON: &str = "the device moved to another enterprise";

#[cfg(test)]
mod tests {
    use super::*;

    fn editable(e: u64) -> Editable {
        Editable {
            enterprise_id: EnterpriseId(e),
            name: "old".into(),
            model: "T54W".into(),
            attributes: [("a".to_owned(), "1".to_owned()), ("b".to_owned(), "2".to_owned())].into(),
        }
    }

    fn row(name: Option<&str>, attrs: &[(&str, &str)]) -> ImportRow {
        ImportRow {
            line: 2,
            mac: Mac::parse("001565000001").ok(),
            serial: None,
            model: None,
            name: name.map(str::to_owned),
            attributes: attrs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            groups: None,
        }
    }

    #[test]
    fn rows_plan_by_mode_and_owner() {
        let e = EnterpriseId(1);
        let id = DeviceId(7);
        let r = row(Some("new"), &[("b", "3"), ("c", "4")]);
        assert_eq!(plan_row(e, ImportMode::Merge, &r, None), RowPlan::Insert);
        assert_eq!(plan_row(e, ImportMode::Create, &r, Some((id, editable(1)))), RowPlan::Skip(id));
        assert!(matches!(plan_row(e, ImportMode::Merge, &r, Some((id, editable(2)))), RowPlan::Fail("mac_address", _)));
        let RowPlan::Update(_, merged) = plan_row(e, ImportMode::Merge, &r, Some((id, editable(1)))) else {
            panic!("merge updates")
        };
        assert_eq!(merged.attributes.len(), 3);
        assert_eq!((merged.name.as_str(), merged.attributes["b"].as_str()), ("new", "3"));
        let RowPlan::Update(_, over) =
            plan_row(e, ImportMode::Overwrite, &row(None, &[("c", "4")]), Some((id, editable(1))))
        else {
            panic!("overwrite updates")
        };
        assert_eq!((over.name.as_str(), over.model.as_str(), over.attributes.len()), ("", "T54W", 1));
    }

    #[test]
    fn a_merge_beyond_the_attribute_bound_fails_the_row() {
        let mut full = editable(1);
        full.attributes = (0..MAX_ATTRIBUTES).map(|i| (format!("k{i}"), "v".to_owned())).collect();
        let plan =
            plan_row(EnterpriseId(1), ImportMode::Merge, &row(None, &[("extra", "1")]), Some((DeviceId(1), full)));
        assert!(matches!(plan, RowPlan::Fail(_, reason) if reason.contains("at most 32")));
    }

    #[test]
    fn keys_and_serials_are_checked() {
        for good in ["a", "reg.1.address", "endpoint_group", "x-y"] {
            check_attribute_key(good).expect(good);
        }
        for bad in ["", "A", "a b", "é", &"k".repeat(65)] {
            assert!(check_attribute_key(bad).is_err(), "{bad}");
        }
        check_serial("8218404c20ccf9").expect("serial");
        assert!(check_serial("a,b").is_err());
    }
}
