//! A shard: owns the per-device delivery state of the devices routed to it (ING-4, ING-5).
//!
//! Sessions send it validated frames over a bounded queue. The shard drops duplicates by
//! (device, seq), updates live state, feeds the alarm engine and the offline detector, and turns
//! the frames into one [`EventBatch`] at a time. While one batch is being committed, the next one
//! accumulates (pipelined group commit); when the next one is full, the shard stops taking from
//! its queue, the queue fills, sessions stop reading, and QUIC flow control slows the devices.
//! A session's frames are acknowledged only after the batch holding them is durable.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetpulse_alarm_engine::{AlarmInput, DeviceEvent, DeviceInput, evaluate};
use fleetpulse_proto::alarm_types::OFFLINE;
use fleetpulse_proto::domain::{DeviceAlarm, DeviceMessage, SipSummary};
use fleetpulse_proto::{DeviceId, EnterpriseId, UnixMillis};
use fleetpulse_store::{
    AlarmEvent, DeviceReport, DeviceSnapshotUpdate, EventBatch, ResourceEvent, StatusEvent, StoreError,
};
use tokio::sync::{mpsc, oneshot};

use crate::live::{LiveDevice, LiveState};
use crate::metrics::{IngestMetrics, KindLabel};
use crate::offline::OfflineDetector;

/// One sequenced frame; `msg` is `None` when its content was rejected (it still takes its seq).
#[derive(Debug)]
pub(crate) struct Frame {
    pub seq: u64,
    pub msg: Option<DeviceMessage>,
}

/// The acknowledgement a session may send once its frames are safe, or `Err` if they are not.
pub(crate) type AckResult = Result<u64, ()>;

/// Messages from sessions to their shard.
#[derive(Debug)]
pub(crate) enum ShardCmd {
    /// A device authenticated; `committed_seq` is the store's delivery mark.
    Open {
        device: DeviceId,
        enterprise: EnterpriseId,
        heartbeat_interval_s: u32,
        committed_seq: u64,
        connection: usize,
    },
    /// Frames read from the device's stream, in order.
    Frames { device: DeviceId, frames: Vec<Frame>, at: UnixMillis, done: oneshot::Sender<AckResult> },
    /// The device's connection closed (ignored if a newer connection of the device opened since).
    Disconnected { device: DeviceId, connection: usize },
}

/// Shard settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ShardConfig {
    pub max_batch_rows: usize,
    pub missed_heartbeats: u32,
}

struct DeviceState {
    enterprise: EnterpriseId,
    /// The device's current connection (quinn's stable id).
    connection: usize,
    heartbeat_interval_s: u32,
    accepted_seq: u64,
    online: bool,
    /// Time of the device's latest alarm-relevant event (alarm, resource report, offline,
    /// online); see [`DeviceState::stamp`].
    last_event_at: UnixMillis,
}

impl DeviceState {
    /// The time an alarm-relevant event received at `at` is recorded with: `at`, or 1 ms after
    /// the device's previous one. Alarm activations are identified by their start time (that is
    /// what survives in the store), so a raise, clear and raise again within one millisecond —
    /// one read of a flapping device — must not share it.
    fn stamp(&mut self, at: UnixMillis) -> UnixMillis {
        let stamped = UnixMillis(at.0.max(self.last_event_at.0.saturating_add(1)));
        self.last_event_at = stamped;
        stamped
    }
}

struct Waiter {
    device: DeviceId,
    ack: u64,
    done: oneshot::Sender<AckResult>,
}

#[derive(Default)]
struct Pending {
    batch: EventBatch,
    waiters: Vec<Waiter>,
    marks: HashMap<DeviceId, u64>,
    /// What the alarm engine gets once the batch is durable.
    alarm_events: Vec<DeviceEvent>,
    /// What the device snapshot writer gets once the batch is durable.
    snapshots: Vec<DeviceSnapshotUpdate>,
}

/// What a commit reports back: its outcome, the sessions waiting on it, their devices, the
/// events for the alarm engine and the updates for the snapshot writer.
type Committed = (Result<(), StoreError>, Vec<Waiter>, HashSet<DeviceId>, Vec<DeviceEvent>, Vec<DeviceSnapshotUpdate>);
type Inflight = Pin<Box<dyn Future<Output = Committed> + Send>>;

pub(crate) struct Shard {
    config: ShardConfig,
    devices: HashMap<DeviceId, DeviceState>,
    detector: OfflineDetector,
    epoch: Instant,
    live: Arc<LiveState>,
    store: fleetpulse_store::Store,
    metrics: IngestMetrics,
    pending: Pending,
    alarm_events: Option<mpsc::Sender<Vec<DeviceEvent>>>,
    /// Durable events not yet handed to the alarm engine.
    alarm_outgoing: Option<Vec<DeviceEvent>>,
    snapshots: mpsc::Sender<Vec<DeviceSnapshotUpdate>>,
    /// Durable snapshot updates not yet handed to the snapshot writer.
    snapshot_outgoing: Option<Vec<DeviceSnapshotUpdate>>,
}

impl Shard {
    pub(crate) fn new(
        config: ShardConfig,
        live: Arc<LiveState>,
        store: fleetpulse_store::Store,
        metrics: IngestMetrics,
        alarm_events: Option<mpsc::Sender<Vec<DeviceEvent>>>,
        snapshots: mpsc::Sender<Vec<DeviceSnapshotUpdate>>,
    ) -> Shard {
        Shard {
            alarm_events,
            alarm_outgoing: None,
            snapshots,
            snapshot_outgoing: None,
            config,
            devices: HashMap::new(),
            detector: OfflineDetector::new(config.missed_heartbeats),
            epoch: Instant::now(),
            live,
            store,
            metrics,
            pending: Pending::default(),
        }
    }

    fn clock(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Runs until every sender of `rx` is gone, then commits what is left.
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<ShardCmd>) {
        let mut inflight: Option<Inflight> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut open = true;
        while open || inflight.is_some() || !self.pending_is_empty() {
            let has_room = self.pending.batch.rows() < self.config.max_batch_rows;
            tokio::select! {
                biased;
                outcome = async { inflight.as_mut().expect("guarded by is_some").await }, if inflight.is_some() => {
                    inflight = None;
                    self.finish(outcome);
                    self.hand_to_alarm_engine().await;
                    self.hand_to_snapshot_writer().await;
                }
                cmd = rx.recv(), if open && has_room => match cmd {
                    Some(cmd) => self.handle(cmd),
                    None => open = false,
                },
                _ = tick.tick() => self.poll_offline(),
            }
            while self.pending.batch.rows() < self.config.max_batch_rows {
                match rx.try_recv() {
                    Ok(cmd) => self.handle(cmd),
                    Err(_) => break,
                }
            }
            if inflight.is_none() {
                inflight = self.flush();
            }
        }
    }

    /// Gives the alarm engine the events of the batch just committed. Waits when its queue is
    /// full (counted): the engine evaluates millions of events a second, so this is a storm's
    /// backpressure, not a normal state; nothing is dropped.
    async fn hand_to_alarm_engine(&mut self) {
        let (Some(tx), Some(events)) = (&self.alarm_events, self.alarm_outgoing.take()) else { return };
        self.metrics.alarm_event_batches.inc();
        match tx.try_send(events) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(events)) => {
                self.metrics.alarm_queue_full.inc();
                let _ = tx.send(events).await;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Gives the snapshot writer the status reports and online/offline transitions of the batch
    /// just committed. Waits when its queue is full (counted), never drops.
    async fn hand_to_snapshot_writer(&mut self) {
        let Some(updates) = self.snapshot_outgoing.take() else { return };
        match self.snapshots.try_send(updates) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(updates)) => {
                self.metrics.snapshot_queue_full.inc();
                let _ = self.snapshots.send(updates).await;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    fn presence(&mut self, device_id: DeviceId, online: bool) {
        self.pending.snapshots.push(DeviceSnapshotUpdate { device_id, online: Some(online), report: None });
    }

    fn event(&mut self, device_id: DeviceId, enterprise_id: EnterpriseId, at: UnixMillis, input: DeviceInput) {
        if self.alarm_events.is_some() {
            self.pending.alarm_events.push(DeviceEvent { device_id, enterprise_id, at, input });
        }
    }

    fn pending_is_empty(&self) -> bool {
        self.pending.batch.is_empty() && self.pending.waiters.is_empty()
    }

    fn handle(&mut self, cmd: ShardCmd) {
        match cmd {
            ShardCmd::Open { device, enterprise, heartbeat_interval_s, committed_seq, connection } => {
                self.open(device, enterprise, heartbeat_interval_s, committed_seq, connection)
            }
            ShardCmd::Frames { device, frames, at, done } => {
                self.metrics.shard_queue_depth.dec();
                self.frames(device, frames, at, done)
            }
            ShardCmd::Disconnected { device, connection } => {
                if self.devices.get(&device).is_some_and(|s| s.connection == connection) {
                    self.live.modify(device, |d| d.connected = false);
                }
            }
        }
    }

    fn open(
        &mut self,
        device: DeviceId,
        enterprise: EnterpriseId,
        heartbeat_interval_s: u32,
        committed_seq: u64,
        connection: usize,
    ) {
        let now = UnixMillis::now();
        let state = self.devices.entry(device).or_insert(DeviceState {
            enterprise,
            connection,
            heartbeat_interval_s,
            accepted_seq: committed_seq,
            online: false,
            last_event_at: UnixMillis(0),
        });
        state.accepted_seq = state.accepted_seq.max(committed_seq);
        state.heartbeat_interval_s = heartbeat_interval_s;
        state.connection = connection;
        let accepted = state.accepted_seq;
        if !state.online {
            state.online = true;
            let now = state.stamp(now);
            self.metrics.devices_online.inc();
            // Clears an Offline alarm left active, also one raised before a restart.
            let change = evaluate(device, enterprise, now, AlarmInput::BackOnline);
            self.pending.batch.alarm_changes.push(change);
            self.event(device, enterprise, now, DeviceInput::Online);
            self.presence(device, true);
        }
        self.detector.seen(device, self.clock(), heartbeat_interval_s);
        self.live.update(
            device,
            || LiveDevice {
                enterprise_id: enterprise,
                online: true,
                connected: true,
                last_seen: now,
                online_since: Some(now),
                heartbeat_interval_s,
                sip: SipSummary::Unknown,
                status: None,
                resources: None,
                last_seq: accepted,
            },
            |d| {
                if !d.online {
                    d.online_since = Some(now);
                }
                d.online = true;
                d.connected = true;
                d.last_seen = now;
                d.heartbeat_interval_s = heartbeat_interval_s;
                d.last_seq = accepted;
            },
        );
    }

    fn frames(&mut self, device: DeviceId, frames: Vec<Frame>, at: UnixMillis, done: oneshot::Sender<AckResult>) {
        let clock = self.clock();
        let Some(state) = self.devices.get_mut(&device) else {
            // Frames without an Open (the device's state was reset after a store failure).
            let _ = done.send(Err(()));
            return;
        };
        let enterprise = state.enterprise;
        let mut persisted = false;
        for frame in frames {
            if frame.seq <= state.accepted_seq {
                self.metrics.duplicate_frames.inc();
                continue;
            }
            state.accepted_seq = frame.seq;
            let Some(msg) = frame.msg else { continue };
            let seq = frame.seq;
            match msg {
                DeviceMessage::Heartbeat { .. } => {
                    self.metrics.frames_received.get_or_create(&KIND_HEARTBEAT).inc();
                }
                DeviceMessage::Status(status) => {
                    self.metrics.frames_received.get_or_create(&KIND_STATUS).inc();
                    let (sip, copy) = (status.sip_summary(), status.clone());
                    self.pending.snapshots.push(DeviceSnapshotUpdate {
                        device_id: device,
                        online: None,
                        report: Some(DeviceReport { at, status: copy.clone() }),
                    });
                    self.live.modify(device, |d| {
                        d.sip = sip;
                        d.status = Some(copy);
                    });
                    self.pending.batch.status.push(StatusEvent {
                        device_id: device,
                        enterprise_id: enterprise,
                        seq,
                        at,
                        status,
                    });
                    persisted = true;
                }
                DeviceMessage::Resource(sample) => {
                    self.metrics.frames_received.get_or_create(&KIND_RESOURCE).inc();
                    self.live.modify(device, |d| d.resources = Some((at, sample)));
                    if self.alarm_events.is_some() {
                        let event = DeviceEvent {
                            device_id: device,
                            enterprise_id: enterprise,
                            at: state.stamp(at),
                            input: DeviceInput::Resources(sample),
                        };
                        self.pending.alarm_events.push(event);
                    }
                    let batch = &mut self.pending.batch;
                    batch.resources.push(ResourceEvent {
                        device_id: device,
                        enterprise_id: enterprise,
                        seq,
                        at,
                        sample,
                    });
                    persisted = true;
                }
                DeviceMessage::Alarm(alarm) => {
                    self.metrics.frames_received.get_or_create(&KIND_ALARM).inc();
                    let at = state.stamp(at);
                    if self.alarm_events.is_some() {
                        // The engine needs no log (up to 64 KiB; it is stored with the event).
                        let DeviceAlarm { alarm_type, clear, ref description, .. } = alarm;
                        let engine_alarm =
                            DeviceAlarm { alarm_type, clear, description: description.clone(), log: None };
                        let input = DeviceInput::Alarm(engine_alarm);
                        self.pending.alarm_events.push(DeviceEvent {
                            device_id: device,
                            enterprise_id: enterprise,
                            at,
                            input,
                        });
                    }
                    let batch = &mut self.pending.batch;
                    batch.alarm_changes.push(evaluate(device, enterprise, at, AlarmInput::Reported(&alarm)));
                    batch.alarms.push(AlarmEvent {
                        device_id: device,
                        enterprise_id: enterprise,
                        seq,
                        at,
                        code: alarm.alarm_type.code,
                        clear: alarm.clear,
                        description: alarm.description,
                        log: alarm.log,
                    });
                    persisted = true;
                }
                DeviceMessage::CommandResult { command_id, ok } => {
                    self.metrics.frames_received.get_or_create(&KIND_COMMAND_RESULT).inc();
                    tracing::debug!(message = "Command result without a command.", %device, command_id, ok);
                }
            }
        }
        let accepted = state.accepted_seq;
        if persisted {
            self.pending.marks.insert(device, accepted);
        }
        self.detector.seen(device, clock, state.heartbeat_interval_s);
        self.live.modify(device, |d| {
            d.last_seen = at;
            d.last_seq = accepted;
        });
        self.pending.waiters.push(Waiter { device, ack: accepted, done });
    }

    fn poll_offline(&mut self) {
        let now = UnixMillis::now();
        for device in self.detector.poll_expired(self.clock()) {
            let Some(state) = self.devices.get_mut(&device) else { continue };
            if !state.online {
                continue;
            }
            state.online = false;
            let now = state.stamp(now);
            self.metrics.offline_transitions.inc();
            self.metrics.devices_online.dec();
            self.live.modify(device, |d| {
                d.online = false;
                d.online_since = None;
            });
            let change = evaluate(device, state.enterprise, now, AlarmInput::WentOffline);
            self.pending.batch.alarms.push(AlarmEvent {
                device_id: device,
                enterprise_id: state.enterprise,
                seq: 0,
                at: now,
                code: OFFLINE,
                clear: false,
                description: "missed heartbeats".into(),
                log: None,
            });
            self.pending.batch.alarm_changes.push(change);
            let enterprise = state.enterprise;
            self.event(device, enterprise, now, DeviceInput::Offline);
            self.presence(device, false);
        }
    }

    /// Starts committing the pending batch; answers waiters at once if there is nothing to write
    /// (nothing is in flight when this is called, so everything before them is already durable).
    fn flush(&mut self) -> Option<Inflight> {
        if self.pending_is_empty() {
            return None;
        }
        let Pending { mut batch, waiters, marks, alarm_events, snapshots } = std::mem::take(&mut self.pending);
        if batch.is_empty() {
            for w in waiters {
                let _ = w.done.send(Ok(w.ack));
            }
            return None;
        }
        batch.delivery = marks.into_iter().collect();
        let devices: HashSet<DeviceId> = waiters.iter().map(|w| w.device).collect();
        let rows = batch.rows() as u64;
        let store = self.store.events.clone();
        let metrics = self.metrics.clone();
        Some(Box::pin(async move {
            let started = Instant::now();
            let result = store.append(batch).await;
            metrics.store_append_seconds.observe(started.elapsed().as_secs_f64());
            if result.is_ok() {
                metrics.store_batches.inc();
                metrics.store_rows.inc_by(rows);
            }
            (result, waiters, devices, alarm_events, snapshots)
        }))
    }

    fn finish(&mut self, (result, waiters, devices, alarm_events, snapshots): Committed) {
        match result {
            Ok(()) => {
                if !alarm_events.is_empty() {
                    self.alarm_outgoing = Some(alarm_events);
                }
                if !snapshots.is_empty() {
                    self.snapshot_outgoing = Some(snapshots);
                }
                for w in waiters {
                    let _ = w.done.send(Ok(w.ack));
                }
            }
            Err(error) => {
                self.metrics.store_errors.inc();
                tracing::error!(message = "Append failed; the devices' sessions are closed and they will resend.", %error, devices = devices.len());
                for w in waiters {
                    let _ = w.done.send(Err(()));
                }
                // Forget what was accepted but not committed: later frames of these devices in
                // the pending batch must not commit past the lost ones.
                for device in &devices {
                    self.devices.remove(device);
                    self.detector.forget(*device);
                }
                let keep = |d: &DeviceId| !devices.contains(d);
                let b = &mut self.pending.batch;
                b.status.retain(|e| keep(&e.device_id));
                b.resources.retain(|e| keep(&e.device_id));
                b.alarms.retain(|e| keep(&e.device_id));
                b.alarm_changes.retain(|e| keep(&e.device_id));
                self.pending.alarm_events.retain(|e| keep(&e.device_id));
                self.pending.snapshots.retain(|u| keep(&u.device_id));
                self.pending.marks.retain(|d, _| keep(d));
                let (failed, kept): (Vec<_>, Vec<_>) =
                    std::mem::take(&mut self.pending.waiters).into_iter().partition(|w| devices.contains(&w.device));
                for w in failed {
                    let _ = w.done.send(Err(()));
                }
                self.pending.waiters = kept;
            }
        }
    }
}

const KIND_HEARTBEAT: KindLabel = KindLabel { kind: "heartbeat" };
const KIND_STATUS: KindLabel = KindLabel { kind: "status" };
const KIND_RESOURCE: KindLabel = KindLabel { kind: "resource" };
const KIND_ALARM: KindLabel = KindLabel { kind: "alarm" };
const KIND_COMMAND_RESULT: KindLabel = KindLabel { kind: "command_result" };
