//! Several ingest nodes sharing the scale-out store (issue 16): node membership with heartbeat
//! leases, which node holds each device's session, and named leases for the roles one node at a
//! time plays (`ClusterStore`).
//!
//! Only the PostgreSQL backend implements it: the embedded store is one node by construction.
//! Every time a lease is judged by is the database's clock, so the nodes' clocks may disagree.

use std::time::Duration;

use async_trait::async_trait;
use fleetpulse_proto::{DeviceId, EnterpriseId, UnixMillis};
use serde::Serialize;

use crate::{Result, StoreError};

/// Longest node id.
pub const MAX_NODE_ID_LEN: usize = 64;

/// Most devices one [`ClusterStore::claim_sessions`] or [`ClusterStore::release_sessions`] takes.
pub const MAX_SESSION_BATCH: usize = 10_000;

/// Most devices a reaped node's sessions are returned in at once ([`ClusterStore::reap_lapsed_node`]
/// takes the rest on its next call).
pub const MAX_REAPED_SESSIONS: usize = 100_000;

/// A node's name: 1 to 64 of `A-Z a-z 0-9 . _ -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct NodeId(String);

impl NodeId {
    /// Checks `id`.
    pub fn parse(id: &str) -> Result<NodeId> {
        let ok = !id.is_empty()
            && id.len() <= MAX_NODE_ID_LEN
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(NodeId(id.to_owned()))
        } else {
            Err(StoreError::InvalidInput(format!(
                "a node id is 1 to {MAX_NODE_ID_LEN} letters, digits, '.', '_' or '-': {id:?}"
            )))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a node says about itself with each heartbeat.
#[derive(Debug, Clone)]
pub struct NodeAnnounce {
    /// The node.
    pub id: NodeId,
    /// Where devices reach it (QUIC).
    pub quic_addr: String,
    /// Where its API listens.
    pub http_addr: String,
    /// Device sessions it holds now.
    pub sessions: u64,
}

/// Whether a node holds its lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Its lease is current.
    Up,
    /// Its lease lapsed (or it left) and its sessions were taken offline.
    Down,
}

impl NodeState {
    /// The stored form (`up`, else down).
    pub fn parse(s: &str) -> NodeState {
        if s == "up" { NodeState::Up } else { NodeState::Down }
    }
}

/// A node as the membership table holds it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct NodeRow {
    /// The node.
    pub id: NodeId,
    /// Where devices reach it (QUIC).
    pub quic_addr: String,
    /// Where its API listens.
    pub http_addr: String,
    /// When it (last) joined, unix milliseconds.
    pub started_at: UnixMillis,
    /// Its latest heartbeat, unix milliseconds (database clock).
    pub heartbeat_at: UnixMillis,
    /// Until when its lease holds, unix milliseconds (database clock).
    pub lease_until: UnixMillis,
    /// Device sessions it reported with its latest heartbeat.
    pub sessions: u64,
    /// Device sessions recorded as held by it.
    pub owned_sessions: u64,
    /// Up, or down (its lease lapsed and its sessions were taken offline).
    pub state: NodeState,
    /// Whether its lease is current now (an `up` node whose lease lapsed is about to be reaped).
    pub alive: bool,
    /// The enterprise buckets whose alarm evaluation it holds (current `engine:<b>` leases).
    pub engine_buckets: Vec<u16>,
}

/// A named lease as `cluster_leases` holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    /// The lease's name.
    pub name: String,
    /// The node that holds (or last held) it.
    pub node_id: NodeId,
    /// Whether it is current (database clock).
    pub current: bool,
}

/// The LISTEN/NOTIFY channel on which the holder of an engine bucket hears that events of its
/// bucket were queued for it; the payload is the bucket's number.
pub const ENGINE_EVENTS_CHANNEL: &str = "fleetpulse_engine_events";

/// The LISTEN/NOTIFY channel on which every node hears the API's alarm engine controls (a
/// strategy or window change, an acknowledgement, a clear); the payload is the control as JSON.
pub const ENGINE_CONTROL_CHANNEL: &str = "fleetpulse_engine_control";

/// Most batches `engine_events` holds; a forward beyond it is refused (the caller counts those
/// events as dropped). Concurrent forwards may pass it by their own size.
pub const MAX_ENGINE_QUEUE: usize = 20_000;

/// Most batches one [`ClusterStore::forward_engine_events`] or
/// [`ClusterStore::take_engine_events`] moves.
pub const MAX_ENGINE_BATCHES: usize = 1_000;

/// What the engine-bucket listener hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineNote {
    /// Events of this bucket were queued.
    Events(u16),
    /// A control for the engines, as JSON.
    Control(String),
}

/// A device session of a node that was lost: the device is offline unless it reconnects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LostSession {
    /// The device.
    pub device_id: DeviceId,
    /// Its enterprise.
    pub enterprise_id: EnterpriseId,
}

/// Devices whose sessions another node held before this claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenOver {
    /// The node that held them.
    pub from: NodeId,
    /// The devices.
    pub devices: Vec<DeviceId>,
}

/// The LISTEN/NOTIFY channel on which a node hears that devices it held connected elsewhere;
/// the payload is `<node id>:<device id>,<device id>,…` (at most [`NOTIFY_PAYLOAD_MAX`] bytes).
pub const TAKEOVER_CHANNEL: &str = "fleetpulse_sessions_taken";

/// The LISTEN/NOTIFY channel on which nodes hear which devices have new commands (the node
/// holding a device's session wakes it); the payload is `<device id>,<device id>,…`.
pub const COMMAND_WAKE_CHANNEL: &str = "fleetpulse_command_wake";

/// Largest take-over notification payload (PostgreSQL's limit is 8,000 bytes).
pub const NOTIFY_PAYLOAD_MAX: usize = 7_000;

/// Parses a [`TAKEOVER_CHANNEL`] payload; `None` for one that is not well formed.
pub fn parse_takeover(payload: &str) -> Option<TakenOver> {
    let (node, ids) = payload.split_once(':')?;
    let from = NodeId::parse(node).ok()?;
    let devices =
        ids.split(',').filter(|s| !s.is_empty()).map(|s| s.parse().ok().map(DeviceId)).collect::<Option<_>>()?;
    Some(TakenOver { from, devices })
}

/// Take-over payloads for `node`'s `devices`, each at most [`NOTIFY_PAYLOAD_MAX`] bytes.
pub fn takeover_payloads(node: &NodeId, devices: &[DeviceId]) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = format!("{node}:");
    let empty = current.len();
    for d in devices {
        let id = d.0.to_string();
        if current.len() + id.len() + 1 > NOTIFY_PAYLOAD_MAX {
            out.push(std::mem::replace(&mut current, format!("{node}:")));
        }
        if current.len() > empty {
            current.push(',');
        }
        current.push_str(&id);
    }
    if current.len() > empty {
        out.push(current);
    }
    out
}

/// Membership, session ownership and named leases of a multi-node deployment.
#[async_trait]
pub trait ClusterStore: Send + Sync + 'static {
    /// Registers `node` (again) with a lease of `ttl` and takes back the sessions an earlier run
    /// of the same node left (they are not connected to this run): returned, to be taken offline.
    async fn join_node(&self, node: &NodeAnnounce, ttl: Duration) -> Result<Vec<LostSession>>;

    /// Renews `node`'s lease for `ttl`; false if it had been reaped meanwhile (its sessions were
    /// taken offline by another node; it is `up` again from now on).
    async fn renew_node(&self, node: &NodeAnnounce, ttl: Duration) -> Result<bool>;

    /// Ends `node`'s lease now (a graceful stop): the next reaper takes its sessions offline.
    async fn leave_node(&self, node: &NodeId) -> Result<()>;

    /// Every node known, by id.
    async fn list_nodes(&self) -> Result<Vec<NodeRow>>;

    /// Records that `node` holds the sessions of `devices` (one statement); devices that
    /// another node held are returned per previous node, which is told on
    /// [`TAKEOVER_CHANNEL`] in the same transaction. Devices that no longer exist are skipped.
    async fn claim_sessions(&self, node: &NodeId, devices: &[DeviceId], now: UnixMillis) -> Result<Vec<TakenOver>>;

    /// Of `devices`, those whose session another node with a current lease holds (an offline
    /// check: such a device moved there and is not offline). At most [`MAX_SESSION_BATCH`].
    async fn sessions_held_elsewhere(&self, node: &NodeId, devices: &[DeviceId]) -> Result<Vec<DeviceId>>;

    /// Forgets the sessions of `devices` that `node` still holds (they went offline there).
    async fn release_sessions(&self, node: &NodeId, devices: &[DeviceId]) -> Result<()>;

    /// Takes one node whose lease lapsed (skipping one another reaper holds), marks it down and
    /// returns its sessions (at most [`MAX_REAPED_SESSIONS`]), deleted: those devices did not
    /// connect elsewhere in time. `None` when no node lapsed.
    async fn reap_lapsed_node(&self) -> Result<Option<(NodeId, Vec<LostSession>)>>;

    /// Takes or renews the lease `name` for `node` until `ttl` from now; false while another
    /// node's lease on it is current.
    async fn hold_lease(&self, name: &str, node: &NodeId, ttl: Duration) -> Result<bool>;

    /// Gives the lease `name` up if `node` holds it.
    async fn release_lease(&self, name: &str, node: &NodeId) -> Result<()>;

    /// Tells every node on [`COMMAND_WAKE_CHANNEL`] that `devices` have new commands.
    async fn wake_elsewhere(&self, devices: &[DeviceId]) -> Result<()>;

    /// The named leases whose name starts with `prefix`, by name.
    async fn list_leases(&self, prefix: &str) -> Result<Vec<LeaseRow>>;

    /// Queues alarm event batches `(bucket, payload)` for the holders of their buckets (one
    /// transaction, which tells each bucket on [`ENGINE_EVENTS_CHANNEL`]); returns how many of
    /// them were queued: those beyond [`MAX_ENGINE_QUEUE`] are not. At most [`MAX_ENGINE_BATCHES`].
    async fn forward_engine_events(&self, batches: &[(u16, String)]) -> Result<usize>;

    /// Takes (deletes and returns) up to `limit` of `bucket`'s queued batches, oldest first.
    async fn take_engine_events(&self, bucket: u16, limit: usize) -> Result<Vec<String>>;

    /// Tells every node's engines `control` (JSON, at most [`NOTIFY_PAYLOAD_MAX`] bytes) on
    /// [`ENGINE_CONTROL_CHANNEL`].
    async fn broadcast_engine_control(&self, control: &str) -> Result<()>;
}

/// Wake-up payloads for `devices`, each at most [`NOTIFY_PAYLOAD_MAX`] bytes.
pub fn wake_payloads(devices: &[DeviceId]) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for d in devices {
        let id = d.0.to_string();
        if !current.is_empty() && current.len() + id.len() + 1 > NOTIFY_PAYLOAD_MAX {
            out.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(',');
        }
        current.push_str(&id);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// What a node hears from the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterNote {
    /// Another node took these sessions of this node over.
    TakenOver(Vec<DeviceId>),
    /// These devices have new commands: wake their sessions here.
    Wake(Vec<DeviceId>),
}

impl std::fmt::Debug for dyn ClusterStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dyn ClusterStore")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_bounded_and_plain() {
        assert!(NodeId::parse("node-1.a_b").is_ok());
        assert!(NodeId::parse("").is_err());
        assert!(NodeId::parse("a:b").is_err());
        assert!(NodeId::parse(&"x".repeat(65)).is_err());
    }

    #[test]
    fn takeover_payloads_round_trip_in_bounded_pieces() {
        let node = NodeId::parse("n1").expect("valid");
        let devices: Vec<DeviceId> = (1..=3_000u64).map(|i| DeviceId(1_000_000 + i)).collect();
        let payloads = takeover_payloads(&node, &devices);
        assert!(payloads.len() > 1);
        let mut back = Vec::new();
        for p in &payloads {
            assert!(p.len() <= NOTIFY_PAYLOAD_MAX);
            let t = parse_takeover(p).expect("well formed");
            assert_eq!(t.from, node);
            back.extend(t.devices);
        }
        assert_eq!(back, devices);
        assert!(takeover_payloads(&node, &[]).is_empty());
        assert_eq!(parse_takeover("n1:1,x"), None);
    }
}
