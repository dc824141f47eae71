//! Maintenance windows (`WindowStore`, issue 18 item 2): per enterprise, when alarms of some
//! devices and types are recorded but not notified; and the mark a window left on an alarm's
//! activation ("suppressed by window X", then released or dropped when it ended).

use async_trait::async_trait;
use fleetpulse_proto::{AlarmTypeCode, DeviceId, EnterpriseId, GroupId, SiteId, TaskId, UnixMillis, WindowId};
use serde::{Deserialize, Serialize};

use crate::Result;

/// Most maintenance windows of one enterprise.
pub const MAX_WINDOWS_PER_ENTERPRISE: usize = 100;
/// Most ids (sites, groups or devices) one window's scope lists.
pub const MAX_WINDOW_SCOPE_IDS: usize = 1_000;
/// Most activations [`WindowStore::window_marks`] reads at once.
pub const MAX_MARKS_READ: usize = 1_000;

/// Maintenance windows and the marks they leave on alarms.
#[async_trait]
pub trait WindowStore: Send + Sync + 'static {
    /// Creates a window of the enterprise.
    async fn create_window(
        &self,
        enterprise: EnterpriseId,
        settings: WindowSettings,
        at: UnixMillis,
    ) -> Result<StoredWindow>;
    /// The window with this id.
    async fn window(&self, id: WindowId) -> Result<Option<StoredWindow>>;
    /// The enterprise's windows, ordered by id.
    async fn list_windows(&self, enterprise: EnterpriseId) -> Result<Vec<StoredWindow>>;
    /// Replaces a window's settings; `None` if it does not exist.
    async fn update_window(
        &self,
        id: WindowId,
        settings: WindowSettings,
        at: UnixMillis,
    ) -> Result<Option<StoredWindow>>;
    /// Deletes a window (its marks on alarms stay, with its name); false if it did not exist.
    async fn delete_window(&self, id: WindowId) -> Result<bool>;
    /// Records what a window did to an alarm's activation; a later mark of the same activation
    /// replaces the earlier one.
    async fn record_window_mark(&self, mark: WindowMark) -> Result<()>;
    /// The marks of these activations (device, type, first time), at most [`MAX_MARKS_READ`].
    async fn window_marks(&self, activations: Vec<(DeviceId, AlarmTypeCode, UnixMillis)>) -> Result<Vec<WindowMark>>;
}

/// Which devices a window selects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum WindowScope {
    /// Every device of the enterprise.
    Enterprise,
    /// Devices in these sites or any site below them.
    Sites {
        /// The sites.
        ids: Vec<SiteId>,
    },
    /// Members of these groups.
    Groups {
        /// The groups.
        ids: Vec<GroupId>,
    },
    /// These devices.
    Devices {
        /// The devices.
        ids: Vec<DeviceId>,
    },
}

/// When a window is active.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum WindowTiming {
    /// Once, from `start` to `end` (Unix milliseconds; the end is exclusive).
    Once {
        /// Start.
        start: UnixMillis,
        /// End.
        end: UnixMillis,
    },
    /// On `weekdays` (ISO: 1 = Monday … 7 = Sunday; empty: every day) at `hour:minute` in the
    /// enterprise's time zone, for `duration_minutes`.
    Recurring {
        /// ISO weekdays; empty for every day.
        weekdays: Vec<u8>,
        /// Local hour, 0–23.
        hour: u8,
        /// Local minute, 0–59.
        minute: u8,
        /// Length of each occurrence, 1 minute to 7 days.
        duration_minutes: u32,
    },
    /// While a run of this scheduled task is running (a firmware rollout).
    WhileTask {
        /// The task (of the same enterprise).
        task_id: TaskId,
    },
}

/// A window's settings, as the API edits them and the alarm engine reads them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WindowSettings {
    /// Display name.
    pub name: String,
    /// A disabled window holds nothing back.
    pub enabled: bool,
    /// Selected devices.
    pub scope: WindowScope,
    /// Selected alarm types (empty = all).
    pub alarm_types: Vec<AlarmTypeCode>,
    /// When it is active.
    pub timing: WindowTiming,
}

/// A stored maintenance window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct StoredWindow {
    /// Identifier.
    pub id: WindowId,
    /// Owning enterprise.
    pub enterprise_id: EnterpriseId,
    /// Settings.
    pub settings: WindowSettings,
    /// Creation time.
    pub created_at: UnixMillis,
    /// Last change.
    pub updated_at: UnixMillis,
}

/// What a window did to an alarm's activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WindowMarkState {
    /// Its notification is held back until the window ends.
    Suppressed,
    /// The window ended with the alarm still active: it was notified then.
    Released,
    /// The window ended with the alarm acknowledged: it was not notified.
    Dropped,
}

impl WindowMarkState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            WindowMarkState::Suppressed => "suppressed",
            WindowMarkState::Released => "released",
            WindowMarkState::Dropped => "dropped",
        }
    }

    /// From the stored name.
    pub fn parse(s: &str) -> Option<WindowMarkState> {
        [WindowMarkState::Suppressed, WindowMarkState::Released, WindowMarkState::Dropped]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// The mark a window left on one alarm activation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct WindowMark {
    /// The alarm's enterprise.
    pub enterprise_id: EnterpriseId,
    /// The device.
    pub device_id: DeviceId,
    /// The alarm type.
    pub code: AlarmTypeCode,
    /// Start of the activation.
    pub first_at: UnixMillis,
    /// The window.
    pub window_id: WindowId,
    /// Its name when it marked the alarm.
    pub window_name: String,
    /// What it did.
    pub state: WindowMarkState,
    /// When.
    pub at: UnixMillis,
    /// Until when it holds the alarm back (suppressed by a timed window only).
    pub until: Option<UnixMillis>,
}
