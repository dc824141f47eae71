//! The alarm engine's saved state (`EngineStateStore`, issue 18 item 6): what the engine keeps in
//! memory besides the active alarms (whose records the store has anyway) and must find again after
//! a restart — open threshold windows and planned, unsent resolutions. One document per engine
//! ([`EngineStateOwner`]: the one engine of a single node, or each node's of several), replaced
//! whole; the alarm service writes it only when it changed, at most every few seconds.

use async_trait::async_trait;
use fleetpulse_proto::{AlarmTypeCode, DeviceId, EnterpriseId, StrategyId, UnixMillis};
use serde::{Deserialize, Serialize};

use crate::{NodeId, Result, ThresholdMetric};

/// Version of [`SavedEngineState`] this build writes; a document of another version is ignored
/// (the engine starts without it, as before this store existed).
pub const ENGINE_STATE_VERSION: u32 = 1;

/// Whose engine a saved state is. With several nodes (issue 16) each node runs an engine for the
/// events of the devices it holds, so each saves (and after a restart restores) its own document:
/// one row per owner, never overwritten by another node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub enum EngineStateOwner {
    /// The one engine of a single-node deployment.
    #[default]
    Single,
    /// The engine of this node of several (before engine buckets; no longer written).
    Node(NodeId),
    /// The engine of one enterprise bucket of several nodes ([`engine_bucket`]): whichever node
    /// holds the bucket's lease saves it, and the next holder restores it.
    Bucket(u16),
}

impl EngineStateOwner {
    /// The stored key: empty for [`EngineStateOwner::Single`] (a node id is never empty),
    /// `engine:<bucket>` for a bucket (a node id never holds a `:`).
    pub fn key(&self) -> String {
        match self {
            EngineStateOwner::Single => String::new(),
            EngineStateOwner::Node(node) => node.as_str().to_owned(),
            EngineStateOwner::Bucket(bucket) => engine_lease_name(*bucket),
        }
    }

    /// Whether this engine evaluates `enterprise`'s events: every one, except for a bucket's
    /// engine, which takes its bucket's enterprises only.
    pub fn covers(&self, enterprise: EnterpriseId) -> bool {
        match self {
            EngineStateOwner::Bucket(bucket) => engine_bucket(enterprise) == *bucket,
            EngineStateOwner::Single | EngineStateOwner::Node(_) => true,
        }
    }
}

/// Enterprise buckets of a multi-node deployment: each bucket's alarm evaluation is owned by one
/// node at a time (the lease [`engine_lease_name`]). 16 spreads evenly enough over the few nodes
/// this tier runs (at most one bucket of difference), while each bucket an engine holds costs a
/// lease renewal per heartbeat and, when it is taken, a load of its strategies and active alarms.
pub const ENGINE_BUCKETS: u16 = 16;

/// The bucket of `enterprise`'s alarm evaluation.
pub fn engine_bucket(enterprise: EnterpriseId) -> u16 {
    u16::try_from(enterprise.0 % u64::from(ENGINE_BUCKETS)).expect("below ENGINE_BUCKETS, a u16")
}

/// The named lease (and saved-state owner key) of an engine bucket: `engine:<bucket>`.
pub fn engine_lease_name(bucket: u16) -> String {
    format!("{ENGINE_LEASE_PREFIX}{bucket}")
}

/// The prefix of the engine buckets' lease names.
pub const ENGINE_LEASE_PREFIX: &str = "engine:";

/// The alarm engine's saved state.
#[async_trait]
pub trait EngineStateStore: Send + Sync + 'static {
    /// Replaces `owner`'s saved state (another owner's is left as it is).
    async fn save_engine_state(&self, owner: &EngineStateOwner, state: &SavedEngineState, at: UnixMillis)
    -> Result<()>;
    /// `owner`'s saved state, if it saved any (of any version: the caller checks it).
    async fn engine_state(&self, owner: &EngineStateOwner) -> Result<Option<SavedEngineState>>;
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
    /// Open site incidents (issue 18 item 3); absent in documents of older builds.
    #[serde(default)]
    pub incidents: Vec<StoredOpenIncident>,
}

/// An open site incident with its members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredOpenIncident {
    /// The enterprise.
    pub enterprise_id: EnterpriseId,
    /// The strategy whose rule opened it.
    pub strategy_id: StrategyId,
    /// The site.
    pub site_id: fleetpulse_proto::SiteId,
    /// The alarm type.
    pub code: AlarmTypeCode,
    /// When it opened.
    pub opened_at: UnixMillis,
    /// Devices of the site when it opened.
    pub site_devices: u32,
    /// Devices whose alarm belonged to it.
    pub affected: u32,
    /// Of those, how many are back.
    pub back: u32,
    /// Members: device, start of its activation, whether back.
    pub members: Vec<(DeviceId, UnixMillis, bool)>,
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
    /// The receiver: its address, or `account:<id>` for an account receiver (ALM-3).
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
