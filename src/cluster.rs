//! This process as one of several nodes sharing the scale-out store (issue 16): its id, its
//! heartbeat lease, the sessions it holds, the sessions of lost nodes, and the outbox sender
//! role, all coordinated through PostgreSQL (`ClusterStore`: leases judged by the database's
//! clock, `FOR UPDATE SKIP LOCKED`, LISTEN/NOTIFY). The design is in `docs/cluster.md`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use fleetpulse_alarm_engine::{AlarmInput, DeviceEvent, DeviceInput, evaluate};
use fleetpulse_ingest::{CommandSignal, LiveState, SessionTakeover};
use fleetpulse_proto::alarm_types::OFFLINE;
use fleetpulse_proto::{DeviceId, UnixMillis};
use fleetpulse_store::{
    AlarmEvent, ClusterNote, ClusterStore, DeviceSnapshotUpdate, EngineNote, EventBatch, LostSession,
    MAX_SESSION_BATCH, MAX_SNAPSHOT_BATCH, NodeAnnounce, NodeId, NodeState, Store, StoreError,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

/// Default lease of a node (and of the outbox role) without a heartbeat.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);

/// The named lease of the one node that sends the outbox.
const OUTBOX_LEASE: &str = "outbox";

/// Batches of (device, online) the session recorder's queue holds before the snapshot writer
/// waits.
pub const PRESENCE_QUEUE: usize = 256;

/// Batches of command wake-ups for other nodes queued before further ones are dropped (those
/// devices get their commands when they next connect).
pub const COMMAND_WAKE_QUEUE: usize = 1_024;

/// Batches of devices held for an offline check queued before the shards take them offline
/// unchecked.
pub const OFFLINE_CHECK_QUEUE: usize = 1_024;

/// Longest time a session change waits before it is recorded.
const PRESENCE_FLUSH: Duration = Duration::from_millis(200);

/// The node's id: configured, else the one in `<data_dir>/node-id`, else a new one written there.
pub fn node_id(configured: Option<&str>, data_dir: &Path) -> anyhow::Result<NodeId> {
    if let Some(id) = configured {
        return NodeId::parse(id).map_err(|e| anyhow::anyhow!("--node-id: {e}"));
    }
    let path = data_dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(text) => NodeId::parse(text.trim()).map_err(|e| anyhow::anyhow!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = NodeId::parse(&format!("node-{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff))
                .map_err(|e| anyhow::anyhow!("generated node id: {e}"))?;
            std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
            let tmp = data_dir.join("node-id.tmp");
            std::fs::write(&tmp, format!("{id}\n")).with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
            tracing::info!(message = "Generated this node's id.", node = %id, file = %path.display());
            Ok(id)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// A node label (`fleetpulse_cluster_*` and `fleetpulse_cluster_engine_*` per node).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct NodeLabel {
    pub(crate) node: String,
}

/// `fleetpulse_cluster_*`.
#[derive(Debug, Clone, Default)]
pub struct ClusterMetrics {
    heartbeat_failures: Counter,
    sessions_claimed: Counter,
    sessions_released: Counter,
    sessions_taken_over: Counter,
    nodes_reaped: Counter,
    sessions_reaped: Counter,
    outbox_sender: Gauge,
    offline_held: Counter,
    offline_checked: Counter,
    offline_withheld: Counter,
    lost_nodes_checked: Counter,
    node_up: Family<NodeLabel, Gauge>,
    node_sessions: Family<NodeLabel, Gauge>,
}

impl ClusterMetrics {
    /// Registers the metrics in `registry`.
    pub fn register(registry: &mut Registry) -> ClusterMetrics {
        let m = ClusterMetrics::default();
        let r = registry.sub_registry_with_prefix("fleetpulse_cluster");
        r.register(
            "heartbeat_failures",
            "Heartbeats of this node that did not reach the store",
            m.heartbeat_failures.clone(),
        );
        r.register("sessions_claimed", "Device sessions this node recorded as its own", m.sessions_claimed.clone());
        r.register("sessions_released", "Device sessions this node recorded as ended", m.sessions_released.clone());
        r.register(
            "sessions_taken_over",
            "Devices another node took over from this one (forgotten here without going offline)",
            m.sessions_taken_over.clone(),
        );
        r.register("nodes_reaped", "Lost nodes whose sessions this node took offline", m.nodes_reaped.clone());
        r.register(
            "sessions_reaped",
            "Sessions of lost nodes this node took offline (no live node held them after the offline hold)",
            m.sessions_reaped.clone(),
        );
        r.register(
            "offline_held",
            "Devices whose heartbeats were missing here, held for the offline check",
            m.offline_held.clone(),
        );
        r.register(
            "offline_checked",
            "Devices whose heartbeats were missing here, checked against the session table before going offline",
            m.offline_checked.clone(),
        );
        r.register(
            "offline_withheld",
            "Checked devices (silent here, or of a lost node) another live node held: no Offline alarm",
            m.offline_withheld.clone(),
        );
        r.register(
            "lost_nodes_checked",
            "Lost nodes whose devices this node checked after the offline hold (and took offline if no live node held them)",
            m.lost_nodes_checked.clone(),
        );
        r.register("outbox_sender", "1 while this node holds the outbox sender lease", m.outbox_sender.clone());
        r.register(
            "node_up",
            "1 for each node whose lease is current, as of this node's last heartbeat",
            m.node_up.clone(),
        );
        r.register(
            "node_sessions",
            "Device sessions each node holds, as of this node's last heartbeat",
            m.node_sessions.clone(),
        );
        m
    }
}

/// This node: its id, its lease, the store that coordinates.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub store: Arc<dyn ClusterStore>,
    pub id: NodeId,
    pub lease: Duration,
    /// How long a device whose heartbeats are missing is held before its offline check.
    pub offline_hold: Duration,
    pub metrics: ClusterMetrics,
}

impl Cluster {
    fn announce(&self, quic: &str, http: &str, sessions: u64) -> NodeAnnounce {
        NodeAnnounce { id: self.id.clone(), quic_addr: quic.into(), http_addr: http.into(), sessions }
    }

    /// Joins (at start, before ingest): the sessions an earlier run of this node left are taken
    /// offline, without alarms (as one node marks every device offline at start).
    pub async fn join(&self, store: &Store, quic: &str, http: &str) -> anyhow::Result<()> {
        let left =
            self.store.join_node(&self.announce(quic, http, 0), self.lease).await.context("joining the cluster")?;
        tracing::info!(message = "Joined the cluster.", node = %self.id, lease_s = self.lease.as_secs(), sessions_left = left.len());
        take_offline(store, None, &left).await.context("taking this node's earlier sessions offline")?;
        Ok(())
    }

    /// Records the sessions this node holds from the ingest's (device, online) changes: one
    /// statement per flush (every [`PRESENCE_FLUSH`] or [`MAX_SESSION_BATCH`] devices). Ends
    /// when the ingest tier is gone.
    pub fn spawn_presence(&self, mut rx: mpsc::Receiver<Vec<(DeviceId, bool)>>) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut pending: HashMap<DeviceId, bool> = HashMap::new();
            let mut tick = tokio::time::interval(PRESENCE_FLUSH);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut open = true;
            while open || !pending.is_empty() {
                tokio::select! {
                    got = rx.recv(), if open && pending.len() < MAX_SESSION_BATCH => match got {
                        Some(changes) => {
                            pending.extend(changes);
                            if pending.len() < MAX_SESSION_BATCH {
                                continue;
                            }
                        }
                        None => open = false,
                    },
                    _ = tick.tick() => {}
                }
                if !this.record_presence(&mut pending).await && !open {
                    break;
                }
            }
        })
    }

    /// Writes the pending session changes; false (kept for the next flush) if the store failed.
    async fn record_presence(&self, pending: &mut HashMap<DeviceId, bool>) -> bool {
        let (on, off): (Vec<_>, Vec<_>) = pending.iter().map(|(d, o)| (*d, *o)).partition(|(_, o)| *o);
        let on: Vec<DeviceId> = on.into_iter().map(|(d, _)| d).collect();
        let off: Vec<DeviceId> = off.into_iter().map(|(d, _)| d).collect();
        let result = async {
            let taken = self.store.claim_sessions(&self.id, &on, UnixMillis::now()).await?;
            self.store.release_sessions(&self.id, &off).await?;
            Ok::<_, fleetpulse_store::StoreError>(taken)
        }
        .await;
        match result {
            Ok(taken) => {
                for t in taken {
                    tracing::debug!(message = "Took device sessions over.", from = %t.from, devices = t.devices.len());
                }
                self.metrics.sessions_claimed.inc_by(on.len() as u64);
                self.metrics.sessions_released.inc_by(off.len() as u64);
                pending.clear();
                true
            }
            Err(error) => {
                tracing::warn!(message = "Recording device sessions failed; retrying.", %error);
                false
            }
        }
    }

    /// Renews this node's lease every quarter of it and takes offline the sessions of nodes
    /// whose lease lapsed (with Offline alarms: those devices did not connect elsewhere in time).
    pub fn spawn_heartbeat(
        &self,
        store: Store,
        alarms: Option<mpsc::Sender<Vec<DeviceEvent>>>,
        live: Arc<LiveState>,
        addrs: (String, String),
        mut stop: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(this.lease / 4);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = stopped(&mut stop) => return,
                }
                let sessions = live.counts(None).connected;
                match this.store.renew_node(&this.announce(&addrs.0, &addrs.1, sessions), this.lease).await {
                    Ok(true) => {}
                    Ok(false) => tracing::error!(
                        message = "This node's lease had lapsed: another node took its sessions offline. \
                                   Devices still connected here are recorded again as they report."
                    ),
                    Err(error) => {
                        this.metrics.heartbeat_failures.inc();
                        tracing::warn!(message = "Heartbeat failed.", %error);
                        continue;
                    }
                }
                this.reap(&store, alarms.as_ref()).await;
                this.refresh_node_metrics().await;
            }
        })
    }

    /// Takes the lapsed nodes; each one's devices are checked `offline_hold` later (in a task of
    /// their own: the heartbeat goes on), and those that no live node holds by then go offline.
    async fn reap(&self, store: &Store, alarms: Option<&mpsc::Sender<Vec<DeviceEvent>>>) {
        loop {
            match self.store.reap_lapsed_node().await {
                Ok(None) => return,
                Ok(Some((node, lost))) => {
                    tracing::warn!(message = "A node's lease lapsed; its devices not held elsewhere soon go offline.", %node, devices = lost.len());
                    self.metrics.nodes_reaped.inc();
                    let (this, store, alarms) = (self.clone(), store.clone(), alarms.cloned());
                    drop(tokio::spawn(async move {
                        tokio::time::sleep(this.offline_hold).await;
                        let lost = this.not_held_elsewhere(&node, lost).await;
                        this.metrics.sessions_reaped.inc_by(lost.len() as u64);
                        if let Err(error) = take_offline(&store, alarms.as_ref(), &lost).await {
                            tracing::error!(message = "Taking a lost node's devices offline failed.", %node, %error);
                        }
                        this.metrics.lost_nodes_checked.inc();
                    }));
                }
                Err(error) => {
                    tracing::warn!(message = "Looking for lost nodes failed.", %error);
                    return;
                }
            }
        }
    }

    /// The sessions of the lost node `node` that no live node holds now (a device that
    /// reconnected before the lease lapsed but whose claim came later is left out). A failed
    /// check keeps them all.
    async fn not_held_elsewhere(&self, node: &NodeId, lost: Vec<LostSession>) -> Vec<LostSession> {
        let mut held = HashSet::new();
        for chunk in lost.chunks(MAX_SESSION_BATCH) {
            let devices: Vec<DeviceId> = chunk.iter().map(|l| l.device_id).collect();
            match self.store.sessions_held_elsewhere(node, &devices).await {
                Ok(found) => held.extend(found),
                Err(error) => {
                    tracing::warn!(message = "Checking a lost node's devices failed; they go offline.", %error)
                }
            }
        }
        self.metrics.offline_withheld.inc_by(held.len() as u64);
        lost.into_iter().filter(|l| !held.contains(&l.device_id)).collect()
    }

    async fn refresh_node_metrics(&self) {
        let Ok(nodes) = self.store.list_nodes().await else { return };
        for n in nodes {
            let label = NodeLabel { node: n.id.to_string() };
            self.metrics.node_up.get_or_create(&label).set(i64::from(n.alive && n.state == NodeState::Up));
            self.metrics.node_sessions.get_or_create(&label).set(i64::try_from(n.owned_sessions).unwrap_or(i64::MAX));
        }
    }

    /// Hears which of this node's sessions other nodes took over and tells the ingest tier.
    pub fn spawn_takeovers(
        &self,
        postgres_url: String,
        takeover: SessionTakeover,
        commands: CommandSignal,
        mut stop: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let id = this.id.clone();
            let connect = || fleetpulse_store::postgres::TakeoverListener::connect(&postgres_url, id.clone());
            let mut notes = Reconnecting::new("take-overs", connect);
            while let Some(note) = notes.next(&mut stop).await {
                match note {
                    ClusterNote::TakenOver(devices) => {
                        this.metrics.sessions_taken_over.inc_by(devices.len() as u64);
                        takeover.taken_over(&devices).await;
                    }
                    ClusterNote::Wake(devices) => commands.wake_here(&devices),
                }
            }
        })
    }

    /// Checks the devices the shards hold because their heartbeats are missing, each batch
    /// `offline_hold` after it came: those whose session another live node holds now (they moved
    /// there; its claim may reach this node after the deadline) are forgotten here without an
    /// Offline alarm, the others go offline. A failed check lets them go offline, as on one node.
    /// At most [`OFFLINE_CHECK_QUEUE`] batches wait; beyond, the shards take devices offline
    /// unchecked. Ends at `stop` or when the shards are gone.
    pub fn spawn_offline_checks(
        &self,
        mut rx: mpsc::Receiver<Vec<DeviceId>>,
        takeover: SessionTakeover,
        mut stop: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut waiting: VecDeque<(tokio::time::Instant, Vec<DeviceId>)> = VecDeque::new();
            let mut open = true;
            while open || !waiting.is_empty() {
                let due = waiting.front().map(|(at, _)| *at);
                tokio::select! {
                    got = rx.recv(), if open && waiting.len() < OFFLINE_CHECK_QUEUE => match got {
                        Some(devices) => {
                            this.metrics.offline_held.inc_by(devices.len() as u64);
                            waiting.push_back((tokio::time::Instant::now() + this.offline_hold, devices));
                        }
                        None => open = false,
                    },
                    () = async { tokio::time::sleep_until(due.expect("guarded by is_some")).await }, if due.is_some() => {
                        if let Some((_, devices)) = waiting.pop_front() {
                            takeover.offline_verdicts(&this.offline_verdicts(&devices).await).await;
                        }
                    }
                    () = stopped(&mut stop) => return,
                }
            }
        })
    }

    /// `(device, elsewhere)` for `devices`: whether another live node holds its session.
    async fn offline_verdicts(&self, devices: &[DeviceId]) -> Vec<(DeviceId, bool)> {
        let mut elsewhere = HashSet::new();
        for chunk in devices.chunks(MAX_SESSION_BATCH) {
            match self.store.sessions_held_elsewhere(&self.id, chunk).await {
                Ok(held) => elsewhere.extend(held),
                Err(error) => {
                    tracing::warn!(message = "The offline check failed; those devices go offline.", %error, devices = chunk.len());
                }
            }
        }
        // Withheld before checked: whoever sees a check counted also sees what it withheld.
        self.metrics.offline_withheld.inc_by(elsewhere.len() as u64);
        self.metrics.offline_checked.inc_by(devices.len() as u64);
        devices.iter().map(|d| (*d, elsewhere.contains(d))).collect()
    }

    /// Sends the outbox while this node holds the outbox lease: one node at a time sends, so each
    /// message goes out once (twice at most when the sender dies between the SMTP acceptance and
    /// the `sent` mark, as for one node). The lease is renewed every quarter of it; a renewal
    /// that fails stops the worker at once, three quarters of a lease before another node may
    /// take it. `wake` (the alarm service's) is passed on to the running worker.
    pub fn spawn_outbox<F>(&self, make_worker: F, wake: Arc<Notify>, mut stop: watch::Receiver<bool>) -> JoinHandle<()>
    where
        F: Fn() -> fleetpulse_mailer::OutboxWorker + Send + 'static,
    {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(this.lease / 4);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                // Waiting for the lease.
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        () = stopped(&mut stop) => return,
                    }
                    if matches!(this.store.hold_lease(OUTBOX_LEASE, &this.id, this.lease).await, Ok(true)) {
                        break;
                    }
                }
                tracing::info!(message = "This node sends the outbox.", node = %this.id);
                this.metrics.outbox_sender.set(1);
                let worker = make_worker();
                let inner = worker.waker();
                let (role_stop, role_stopped) = watch::channel(false);
                let mut running = tokio::spawn(worker.run(role_stopped));
                let mut stopping = false;
                loop {
                    tokio::select! {
                        _ = tick.tick() => {
                            if !matches!(this.store.hold_lease(OUTBOX_LEASE, &this.id, this.lease).await, Ok(true)) {
                                tracing::warn!(message = "The outbox lease could not be renewed; stopping the sender.");
                                break;
                            }
                        }
                        () = wake.notified() => inner.notify_one(),
                        () = stopped(&mut stop) => { stopping = true; break; }
                        _ = &mut running => break,
                    }
                }
                let _ = role_stop.send(true);
                let _ = tokio::time::timeout(Duration::from_secs(5), &mut running).await;
                this.metrics.outbox_sender.set(0);
                if stopping {
                    if let Err(error) = this.store.release_lease(OUTBOX_LEASE, &this.id).await {
                        tracing::debug!(message = "Releasing the outbox lease failed.", %error);
                    }
                    return;
                }
            }
        })
    }

    /// Sends the command wake-ups for devices without a session here to every node (the one
    /// holding the session wakes it). Ends when every [`CommandSignal`] is gone.
    pub fn spawn_command_wakes(&self, mut rx: mpsc::Receiver<Vec<DeviceId>>) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            while let Some(devices) = rx.recv().await {
                if let Err(error) = this.store.wake_elsewhere(&devices).await {
                    tracing::warn!(message = "Waking devices on other nodes failed; they get their commands when they next connect.", %error);
                }
            }
        })
    }

    /// A graceful stop: the lease ends now, so the devices that do not reconnect elsewhere go
    /// offline at the next reaper's heartbeat.
    pub async fn leave(&self) {
        if let Err(error) = self.store.leave_node(&self.id).await {
            tracing::warn!(message = "Leaving the cluster failed; the lease will lapse.", %error);
        }
    }
}

/// Takes `lost` sessions offline: device snapshots, and with `alarms` also Offline alarm records
/// and the engine's events (notifications), as the offline detector does for its own devices.
async fn take_offline(
    store: &Store,
    alarms: Option<&mpsc::Sender<Vec<DeviceEvent>>>,
    lost: &[LostSession],
) -> fleetpulse_store::Result<()> {
    for chunk in lost.chunks(MAX_SNAPSHOT_BATCH) {
        let at = UnixMillis::now();
        if let Some(engine) = alarms {
            let batch = EventBatch {
                alarms: chunk
                    .iter()
                    .map(|l| AlarmEvent {
                        device_id: l.device_id,
                        enterprise_id: l.enterprise_id,
                        seq: 0,
                        at,
                        code: OFFLINE,
                        clear: false,
                        description: "its node was lost".into(),
                        log: None,
                    })
                    .collect(),
                alarm_changes: chunk
                    .iter()
                    .map(|l| evaluate(l.device_id, l.enterprise_id, at, AlarmInput::WentOffline))
                    .collect(),
                ..EventBatch::default()
            };
            retry(|| store.events.append(batch.clone())).await?;
            let events = chunk
                .iter()
                .map(|l| DeviceEvent {
                    device_id: l.device_id,
                    enterprise_id: l.enterprise_id,
                    at,
                    input: DeviceInput::Offline,
                })
                .collect();
            if engine.send(events).await.is_err() {
                tracing::warn!(message = "The alarm engine is gone; Offline notifications of a lost node not sent.");
            }
        }
        let updates: Vec<DeviceSnapshotUpdate> = chunk
            .iter()
            .map(|l| DeviceSnapshotUpdate { device_id: l.device_id, online: Some(false), report: None })
            .collect();
        retry(|| store.entities.update_device_snapshots(updates.clone())).await?;
    }
    Ok(())
}

/// Three attempts, a second apart.
async fn retry<F, Fut>(mut op: F) -> fleetpulse_store::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = fleetpulse_store::Result<()>>,
{
    let mut attempt = 0;
    loop {
        match op().await {
            Ok(()) => return Ok(()),
            Err(error) if attempt < 2 => {
                attempt += 1;
                tracing::warn!(message = "A write for lost sessions failed; retrying.", %error);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Resolves once `stop` turns true (or its sender is gone); holds no borrow of it afterwards.
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// A PostgreSQL `LISTEN` connection that yields notes ([`ClusterNote`]s, [`EngineNote`]s).
pub(crate) trait NoteListener {
    /// What one notification says.
    type Note;
    /// The next note; an error means the connection is lost.
    fn recv(&mut self) -> impl Future<Output = Result<Self::Note, StoreError>> + Send;
}

impl NoteListener for fleetpulse_store::postgres::TakeoverListener {
    type Note = ClusterNote;
    fn recv(&mut self) -> impl Future<Output = Result<ClusterNote, StoreError>> + Send {
        fleetpulse_store::postgres::TakeoverListener::recv(self)
    }
}

impl NoteListener for fleetpulse_store::postgres::EngineListener {
    type Note = EngineNote;
    fn recv(&mut self) -> impl Future<Output = Result<EngineNote, StoreError>> + Send {
        fleetpulse_store::postgres::EngineListener::recv(self)
    }
}

/// A listener kept open until `stop`: connected by `connect` (again every second while that
/// fails) and connected again when the connection is lost. Notes sent while it reconnects are
/// missed; each user says what covers them. `what` names it in the logs.
pub(crate) struct Reconnecting<L, C> {
    what: &'static str,
    connect: C,
    listener: Option<L>,
}

impl<L, C, F> Reconnecting<L, C>
where
    L: NoteListener,
    C: FnMut() -> F,
    F: Future<Output = Result<L, StoreError>>,
{
    pub(crate) fn new(what: &'static str, connect: C) -> Reconnecting<L, C> {
        Reconnecting { what, connect, listener: None }
    }

    /// The next note, or `None` once `stop` turns true.
    pub(crate) async fn next(&mut self, stop: &mut watch::Receiver<bool>) -> Option<L::Note> {
        loop {
            if self.listener.is_none() {
                tokio::select! {
                    connected = (self.connect)() => match connected {
                        Ok(listener) => self.listener = Some(listener),
                        Err(error) => {
                            tracing::warn!(message = "Cannot listen to PostgreSQL; retrying.", listener = self.what, %error);
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            continue;
                        }
                    },
                    () = stopped(stop) => return None,
                }
            }
            let listener = self.listener.as_mut()?;
            tokio::select! {
                got = listener.recv() => match got {
                    Ok(note) => return Some(note),
                    Err(error) => {
                        tracing::warn!(message = "A PostgreSQL listener failed; reconnecting.", listener = self.what, %error);
                        self.listener = None;
                    }
                },
                () = stopped(stop) => return None,
            }
        }
    }
}
