//! The alarm engine's saved state (`EngineStateStore`, issue 18 item 6): what the engine keeps in
//! memory besides the active alarms (whose records the store has anyway) and must find again after
//! a restart — open threshold windows and planned, unsent resolutions. One document, replaced
//! whole; the alarm service writes it only when it changed, at most every few seconds.

use async_trait::async_trait;
use fleetpulse_proto::{AlarmTypeCode, DeviceId, EnterpriseId, StrategyId, UnixMillis};
use serde::{Deserialize, Serialize};

use crate::{Result, ThresholdMetric};

/// Version of [`SavedEngineState`] this build writes; a document of another version is ignored
/// (the engine starts without it, as before this store existed).
pub const ENGINE_STATE_VERSION: u32 = 1;

/// The alarm engine's saved state.
#[async_trait]
pub trait EngineStateStore: Send + Sync + 'static {
    /// Replaces the saved state.
    async fn save_engine_state(&self, state: &SavedEngineState, at: UnixMillis) -> Result<()>;
    /// The saved state, if any was saved (of any version: the caller checks it).
    async fn engine_state(&self) -> Result<Option<SavedEngineState>>;
}

/// What the engine saves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedEngineState {
    /// [`ENGINE_STATE_VERSION`] when written by this build.
    pub version: u32,
    /// Open threshold windows, per device and metric.
    pub windows: Vec<StoredWindows>,
    /// Planned, unsent resolutions.
    pub resolutions: Vec<StoredResolution>,
}

/// The open threshold windows of one device and metric.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredWindows {
    /// The device.
    pub device_id: DeviceId,
    /// Its enterprise.
    pub enterprise_id: EnterpriseId,
    /// The metric.
    pub metric: ThresholdMetric,
    /// (limit in hundredths of a percent, start of the run of samples above it).
    pub windows: Vec<(u16, UnixMillis)>,
}

/// A planned, unsent resolution: its group and the item as it will be sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResolution {
    /// The enterprise of the group.
    pub enterprise_id: EnterpriseId,
    /// The strategy of the group.
    pub strategy_id: StrategyId,
    /// The receiver's address.
    pub receiver: String,
    /// The device.
    pub device_id: DeviceId,
    /// The alarm type.
    pub code: AlarmTypeCode,
    /// Start of the activation.
    pub first_at: UnixMillis,
    /// Latest raise.
    pub latest_at: UnixMillis,
    /// Raises during the activation.
    pub count: u32,
    /// Latest description.
    pub description: String,
    /// When it cleared.
    pub resolved_at: Option<UnixMillis>,
    /// The item's idempotency key, in hex.
    pub key: String,
}
