//! The sans-I/O core of a shard (ING-4, ING-5): per-device sequence checks, duplicate dropping,
//! the pending [`EventBatch`], pipelined group commit and the release of acknowledgements.
//!
//! [`ShardBatcher`] holds the delivery state of the shard's devices and is driven quinn-proto
//! style: the shell feeds it inputs and drains its outputs; it reads no clock (time is a
//! [`Now`] parameter), owns no channel, and never calls the store.
//!
//! | input | what it does |
//! | --- | --- |
//! | [`handle_open`](ShardBatcher::handle_open) | a device authenticated: its delivery mark, online transition; returns its `Welcome`'s `last_seq` |
//! | [`handle_frames`](ShardBatcher::handle_frames) | drops frames at or below the accepted seq, applies the rest to the pending batch, queues the waiter |
//! | [`handle_disconnected`](ShardBatcher::handle_disconnected) | the device's current connection closed |
//! | [`handle_timeout`](ShardBatcher::handle_timeout) | devices whose heartbeats are missing go offline (or are held for a check) |
//! | [`handle_offline_verdict`](ShardBatcher::handle_offline_verdict) | a held device goes offline, or is forgotten (it is connected to another node) |
//! | [`handle_committed`](ShardBatcher::handle_committed) | the outcome of the batch the shell was committing |
//!
//! | output | what the shell does with it |
//! | --- | --- |
//! | [`poll_commit`](ShardBatcher::poll_commit) | commits the batch (`EventStore::append`), then calls `handle_committed` |
//! | [`poll_ack`](ShardBatcher::poll_ack) | answers the waiter (the session's oneshot) |
//! | [`poll_live`](ShardBatcher::poll_live) | applies the change to [`crate::LiveState`] |
//! | [`poll_alarm_events`](ShardBatcher::poll_alarm_events) | hands the durable device events to the alarm engine |
//! | [`poll_snapshots`](ShardBatcher::poll_snapshots) | hands the durable snapshot updates to the snapshot writer |
//! | [`poll_offline_checks`](ShardBatcher::poll_offline_checks) | asks whether held devices hold a session on another node; the answer comes back as `handle_offline_verdict` |
//!
//! *Architecture invariant*: at most one batch is committing; the next one fills meanwhile and is
//! offered by `poll_commit` only after `handle_committed`. A waiter is answered `Ok` only once
//! every batch holding rows of its frames (and every batch before them) is durable, in the order
//! the waiters came in. A failed commit answers its waiters and the pending waiters of the same
//! devices with `Err` and drops those devices' pending rows; their frames are refused until they
//! open again, from the store's delivery mark, and resend. They stay online until their
//! heartbeats are missing, like any reconnecting device.

use std::collections::{HashMap, HashSet, VecDeque};

use fleetpulse_alarm_engine::{AlarmInput, DeviceEvent, DeviceInput, evaluate};
use fleetpulse_proto::alarm_types::OFFLINE;
use fleetpulse_proto::domain::{DeviceAlarm, DeviceMessage};
use fleetpulse_proto::{DeviceId, EnterpriseId, UnixMillis};
use fleetpulse_store::{
    AlarmEvent, DeviceReport, DeviceSnapshotUpdate, EventBatch, ResourceEvent, StatusEvent, StoreError,
};

use crate::live::LiveUpdate;
use crate::metrics::{IngestMetrics, KindLabel};
use crate::offline::{Millis, OfflineDetector};

#[cfg(test)]
mod model_check;
#[cfg(test)]
mod tests;

/// One sequenced frame; `msg` is `None` when its content was rejected (it still takes its seq).
#[derive(Debug)]
pub(crate) struct Frame {
    pub seq: u64,
    pub msg: Option<DeviceMessage>,
}

/// The acknowledgement a session may send once its frames are safe, or `Err` if they are not.
pub(crate) type AckResult = Result<u64, ()>;

/// The time of an input, given by the shell: wall-clock time for what is recorded, monotonic
/// time for heartbeat deadlines (so a wall-clock step does not take devices offline).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Now {
    pub wall: UnixMillis,
    pub mono: Millis,
}

/// Settings of a shard core.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatcherConfig {
    /// Rows the pending batch collects before [`ShardBatcher::has_room`] says no (the shell then
    /// stops taking commands; a command taken before is applied whole).
    pub max_batch_rows: usize,
    /// Missed heartbeat intervals before a device is offline.
    pub missed_heartbeats: u32,
    /// Whether device events are collected for the alarm engine.
    pub alarm_events: bool,
    /// Several nodes (issue 16): a device whose heartbeats are missing is held, not taken
    /// offline, until the shell brings a verdict (it may have moved to another node whose claim
    /// of its session is not yet known here).
    pub hold_offline: bool,
}

/// Names one batch handed out by [`ShardBatcher::poll_commit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct BatchId(pub u64);

/// A batch to make durable; its outcome goes back with [`ShardBatcher::handle_committed`].
#[derive(Debug)]
pub(crate) struct CommitBatch {
    pub id: BatchId,
    pub batch: EventBatch,
}

#[derive(Debug)]
struct DeviceState {
    enterprise: EnterpriseId,
    /// The device's current connection (quinn's stable id).
    connection: usize,
    heartbeat_interval_s: u32,
    /// Highest seq accepted (in a committed, committing or pending batch, or applied in memory).
    accepted_seq: u64,
    /// Highest seq acknowledged `Ok` (or the store's mark at Open): what a `Welcome` may claim.
    /// Frames without rows (heartbeats, rejected frames) are acknowledged without moving the
    /// store's mark, so after them this is above it.
    acked_seq: u64,
    online: bool,
    /// A commit of its frames failed: its frames are refused until it opens again, and the next
    /// Open takes the store's delivery mark as the accepted seq and announces it online again.
    resync: bool,
    /// Its heartbeats are missing and it waits for an offline verdict (`hold_offline`); any sign
    /// of life here ends the wait.
    offline_held: bool,
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

/// A session waiting for its frames to be safe; `W` is the shell's token (a oneshot sender).
#[derive(Debug)]
struct Waiter<W> {
    device: DeviceId,
    ack: u64,
    waiter: W,
}

/// What accumulates while the previous batch commits.
#[derive(Debug)]
struct Pending<W> {
    batch: EventBatch,
    waiters: Vec<Waiter<W>>,
    /// Highest accepted seq per device with persisted frames in the batch.
    marks: HashMap<DeviceId, u64>,
    /// What the alarm engine gets once the batch is durable.
    alarm_events: Vec<DeviceEvent>,
    /// What the device snapshot writer gets once the batch is durable.
    snapshots: Vec<DeviceSnapshotUpdate>,
}

impl<W> Default for Pending<W> {
    fn default() -> Self {
        Pending {
            batch: EventBatch::default(),
            waiters: Vec::new(),
            marks: HashMap::new(),
            alarm_events: Vec::new(),
            snapshots: Vec::new(),
        }
    }
}

impl<W> Pending<W> {
    fn is_empty(&self) -> bool {
        self.batch.is_empty() && self.waiters.is_empty()
    }
}

/// The batch being committed, with what its commit releases.
#[derive(Debug)]
struct Committing<W> {
    id: BatchId,
    waiters: Vec<Waiter<W>>,
    /// The devices of its waiters (resynchronised if the commit fails).
    devices: HashSet<DeviceId>,
    alarm_events: Vec<DeviceEvent>,
    snapshots: Vec<DeviceSnapshotUpdate>,
}

/// The delivery state machine of one shard; see the module documentation.
#[derive(Debug)]
pub(crate) struct ShardBatcher<W> {
    config: BatcherConfig,
    metrics: IngestMetrics,
    devices: HashMap<DeviceId, DeviceState>,
    detector: OfflineDetector,
    pending: Pending<W>,
    committing: Option<Committing<W>>,
    next_batch: u64,
    acks: VecDeque<(W, AckResult)>,
    live: VecDeque<LiveUpdate>,
    alarm_events: VecDeque<Vec<DeviceEvent>>,
    snapshots: VecDeque<Vec<DeviceSnapshotUpdate>>,
    /// Held devices not yet handed out by [`Self::poll_offline_checks`].
    offline_checks: Vec<DeviceId>,
}

impl<W> ShardBatcher<W> {
    /// An empty core counting into `metrics`.
    pub(crate) fn new(config: BatcherConfig, metrics: IngestMetrics) -> Self {
        ShardBatcher {
            detector: OfflineDetector::new(config.missed_heartbeats),
            config,
            metrics,
            devices: HashMap::new(),
            pending: Pending::default(),
            committing: None,
            next_batch: 1,
            acks: VecDeque::new(),
            live: VecDeque::new(),
            alarm_events: VecDeque::new(),
            snapshots: VecDeque::new(),
            offline_checks: Vec::new(),
        }
    }

    /// Whether the pending batch may take more commands (it holds fewer rows than the bound).
    pub(crate) fn has_room(&self) -> bool {
        self.pending.batch.rows() < self.config.max_batch_rows
    }

    /// Whether rows or waiters are pending (not yet handed out by [`Self::poll_commit`]).
    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// A device authenticated on `connection`; `committed_seq` is the store's delivery mark.
    /// Returns the `last_seq` of its `Welcome`: the highest seq acknowledged to it, at least the
    /// mark. Frames in flight (accepted, not yet acknowledged) are not claimed: the device resends
    /// them and they are dropped as duplicates. A device that numbers on after the `Welcome`
    /// never reuses a seq the shard would drop as a duplicate once nothing is in flight.
    pub(crate) fn handle_open(
        &mut self,
        now: Now,
        device: DeviceId,
        enterprise: EnterpriseId,
        heartbeat_interval_s: u32,
        committed_seq: u64,
        connection: usize,
    ) -> u64 {
        let state = self.devices.entry(device).or_insert(DeviceState {
            enterprise,
            connection,
            heartbeat_interval_s,
            accepted_seq: committed_seq,
            acked_seq: committed_seq,
            online: false,
            resync: false,
            offline_held: false,
            last_event_at: UnixMillis(0),
        });
        let resync = std::mem::take(&mut state.resync);
        state.accepted_seq = if resync { committed_seq } else { state.accepted_seq.max(committed_seq) };
        state.acked_seq = state.acked_seq.max(committed_seq);
        let welcome = state.acked_seq;
        state.heartbeat_interval_s = heartbeat_interval_s;
        state.connection = connection;
        state.offline_held = false;
        let accepted = state.accepted_seq;
        // After a failed commit the transition is announced again: it may have been lost with it.
        if !state.online || resync {
            if !state.online {
                state.online = true;
                self.metrics.devices_online.inc();
            }
            let at = state.stamp(now.wall);
            // Clears an Offline alarm left active, also one raised before a restart.
            let change = evaluate(device, enterprise, at, AlarmInput::BackOnline);
            self.pending.batch.alarm_changes.push(change);
            self.event(device, enterprise, at, DeviceInput::Online);
            self.presence(device, true);
        }
        self.detector.seen(device, now.mono, heartbeat_interval_s);
        self.live.push_back(LiveUpdate::Opened {
            device,
            enterprise,
            at: now.wall,
            heartbeat_interval_s,
            last_seq: accepted,
        });
        welcome
    }

    /// Frames of `device` read at `at`, in order; `waiter` is answered once they are safe.
    ///
    /// Frames at or below the device's accepted seq are duplicates: dropped (counted) and
    /// covered by the acknowledgement. A gap in the seqs is accepted (the missing seqs are
    /// acknowledged with it and dropped if they come later). Rejected frames take their seq and
    /// store nothing. Only `now.mono` is read (the heartbeat deadline); what is recorded has `at`.
    pub(crate) fn handle_frames(&mut self, now: Now, device: DeviceId, frames: Vec<Frame>, at: UnixMillis, waiter: W) {
        let Some(state) = self.devices.get_mut(&device).filter(|s| !s.resync) else {
            // Frames without an Open, or after a failed commit of the device's frames.
            self.acks.push_back((waiter, Err(())));
            return;
        };
        let enterprise = state.enterprise;
        state.offline_held = false;
        let alarm_events = self.config.alarm_events;
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
                    self.pending.snapshots.push(DeviceSnapshotUpdate {
                        device_id: device,
                        online: None,
                        report: Some(DeviceReport { at, status: status.clone() }),
                    });
                    self.live.push_back(LiveUpdate::Status { device, status: status.clone() });
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
                    self.live.push_back(LiveUpdate::Resources { device, at, sample });
                    if alarm_events {
                        let event = DeviceEvent {
                            device_id: device,
                            enterprise_id: enterprise,
                            at: state.stamp(at),
                            input: DeviceInput::Resources(sample),
                        };
                        self.pending.alarm_events.push(event);
                    }
                    self.pending.batch.resources.push(ResourceEvent {
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
                    if alarm_events {
                        // The engine needs no log (up to 64 KiB; it is stored with the event).
                        let DeviceAlarm { alarm_type, clear, ref description, .. } = alarm;
                        let engine_alarm =
                            DeviceAlarm { alarm_type, clear, description: description.clone(), log: None };
                        self.pending.alarm_events.push(DeviceEvent {
                            device_id: device,
                            enterprise_id: enterprise,
                            at,
                            input: DeviceInput::Alarm(engine_alarm),
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
                DeviceMessage::CommandResult { command_id, .. } => {
                    self.metrics.frames_received.get_or_create(&KIND_COMMAND_RESULT).inc();
                    // The session recorded the answer in the command store before handing it here;
                    // the frame only takes its seq.
                    tracing::trace!(message = "Command answer sequenced.", %device, %command_id);
                }
            }
        }
        let accepted = state.accepted_seq;
        if persisted {
            self.pending.marks.insert(device, accepted);
        }
        self.detector.seen(device, now.mono, state.heartbeat_interval_s);
        self.live.push_back(LiveUpdate::Seen { device, at, last_seq: accepted });
        self.pending.waiters.push(Waiter { device, ack: accepted, waiter });
    }

    /// The device's `connection` closed (ignored if a newer connection of the device opened
    /// since).
    pub(crate) fn handle_disconnected(&mut self, device: DeviceId, connection: usize) {
        if self.devices.get(&device).is_some_and(|s| s.connection == connection) {
            self.live.push_back(LiveUpdate::Disconnected { device });
        }
    }

    /// Another node holds the device's session now (issue 16): forgets it without an offline
    /// transition (no Offline alarm, no snapshot, no engine event); a later Open starts afresh.
    pub(crate) fn handle_taken_over(&mut self, device: DeviceId) {
        if let Some(state) = self.devices.remove(&device) {
            self.detector.forget(device);
            if state.online {
                self.metrics.devices_online.dec();
            }
            self.live.push_back(LiveUpdate::Disconnected { device });
        }
    }

    /// Takes offline the devices whose heartbeat deadline passed by `now.mono`: an Offline alarm
    /// (recorded at `now.wall`) in the pending batch, an event for the engine, a snapshot update.
    /// With `hold_offline` they are held instead, for [`Self::poll_offline_checks`].
    pub(crate) fn handle_timeout(&mut self, now: Now) {
        for device in self.detector.poll_expired(now.mono) {
            let Some(state) = self.devices.get_mut(&device) else { continue };
            if !state.online || state.offline_held {
                continue;
            }
            if self.config.hold_offline {
                state.offline_held = true;
                self.offline_checks.push(device);
            } else {
                self.go_offline(now, device);
            }
        }
    }

    /// The verdict on a held device: `elsewhere` (another live node holds its session) forgets it
    /// as [`Self::handle_taken_over`] does, else it goes offline now. Ignored for a device that
    /// is not held (it showed a sign of life here since, or was forgotten).
    pub(crate) fn handle_offline_verdict(&mut self, now: Now, device: DeviceId, elsewhere: bool) {
        let Some(state) = self.devices.get_mut(&device).filter(|s| s.offline_held) else { return };
        state.offline_held = false;
        if elsewhere {
            self.handle_taken_over(device);
        } else {
            self.go_offline(now, device);
        }
    }

    /// Held devices to check (each handed out once; its verdict must come back).
    pub(crate) fn poll_offline_checks(&mut self) -> Option<Vec<DeviceId>> {
        (!self.offline_checks.is_empty()).then(|| std::mem::take(&mut self.offline_checks))
    }

    fn go_offline(&mut self, now: Now, device: DeviceId) {
        let Some(state) = self.devices.get_mut(&device).filter(|s| s.online) else { return };
        state.online = false;
        let at = state.stamp(now.wall);
        let enterprise = state.enterprise;
        self.metrics.offline_transitions.inc();
        self.metrics.devices_online.dec();
        self.live.push_back(LiveUpdate::Offline { device });
        let change = evaluate(device, enterprise, at, AlarmInput::WentOffline);
        self.pending.batch.alarms.push(AlarmEvent {
            device_id: device,
            enterprise_id: enterprise,
            seq: 0,
            at,
            code: OFFLINE,
            clear: false,
            description: "missed heartbeats".into(),
            log: None,
        });
        self.pending.batch.alarm_changes.push(change);
        self.event(device, enterprise, at, DeviceInput::Offline);
        self.presence(device, false);
    }

    /// The pending batch, to be committed now, if nothing is committing and it writes anything.
    ///
    /// Pending waiters without rows to write (heartbeats, duplicates, rejected frames) are
    /// answered here instead, when nothing is committing: everything before them is durable.
    pub(crate) fn poll_commit(&mut self) -> Option<CommitBatch> {
        if self.committing.is_some() || self.pending.is_empty() {
            return None;
        }
        let Pending { mut batch, waiters, marks, alarm_events, snapshots } = std::mem::take(&mut self.pending);
        if batch.is_empty() {
            self.acknowledge(waiters);
            return None;
        }
        batch.delivery = marks.into_iter().collect();
        let id = BatchId(self.next_batch);
        self.next_batch += 1;
        let devices = waiters.iter().map(|w| w.device).collect();
        self.committing = Some(Committing { id, waiters, devices, alarm_events, snapshots });
        Some(CommitBatch { id, batch })
    }

    /// The outcome of committing batch `id`.
    ///
    /// `Ok`: its waiters are answered with their acknowledgements, its device events and
    /// snapshot updates are released. `Err`: its waiters and the pending waiters of the same
    /// devices are answered `Err`, and those devices' pending rows are dropped, so that nothing
    /// later of theirs commits past the lost frames; their frames are refused until they open
    /// again, and that Open takes the store's mark as the accepted seq.
    /// An `id` that is not committing is ignored.
    pub(crate) fn handle_committed(&mut self, id: BatchId, result: Result<(), StoreError>) {
        let Some(committing) = self.committing.take_if(|c| c.id == id) else {
            tracing::warn!(message = "Commit outcome of a batch that is not committing.", batch = id.0);
            return;
        };
        let Committing { waiters, devices, alarm_events, snapshots, .. } = committing;
        match result {
            Ok(()) => {
                if !alarm_events.is_empty() {
                    self.alarm_events.push_back(alarm_events);
                }
                if !snapshots.is_empty() {
                    self.snapshots.push_back(snapshots);
                }
                self.acknowledge(waiters);
            }
            Err(error) => {
                self.metrics.store_errors.inc();
                tracing::error!(message = "Append failed; the devices' sessions are closed and they will resend.", %error, devices = devices.len());
                self.acks.extend(waiters.into_iter().map(|w| (w.waiter, Err(()))));
                for device in &devices {
                    if let Some(state) = self.devices.get_mut(device) {
                        state.resync = true;
                    }
                }
                let keep = |d: &DeviceId| !devices.contains(d);
                let pending = &mut self.pending;
                let b = &mut pending.batch;
                b.status.retain(|e| keep(&e.device_id));
                b.resources.retain(|e| keep(&e.device_id));
                b.alarms.retain(|e| keep(&e.device_id));
                b.alarm_changes.retain(|e| keep(&e.device_id));
                pending.alarm_events.retain(|e| keep(&e.device_id));
                pending.snapshots.retain(|u| keep(&u.device_id));
                pending.marks.retain(|d, _| keep(d));
                let (failed, kept): (Vec<_>, Vec<_>) =
                    std::mem::take(&mut pending.waiters).into_iter().partition(|w| devices.contains(&w.device));
                self.acks.extend(failed.into_iter().map(|w| (w.waiter, Err(()))));
                pending.waiters = kept;
            }
        }
    }

    /// Answers `waiters` `Ok`, in order, and moves their devices' acknowledged seqs.
    fn acknowledge(&mut self, waiters: Vec<Waiter<W>>) {
        for w in waiters {
            if let Some(state) = self.devices.get_mut(&w.device) {
                state.acked_seq = state.acked_seq.max(w.ack);
            }
            self.acks.push_back((w.waiter, Ok(w.ack)));
        }
    }

    /// The next waiter to answer, in the order the answers were decided.
    pub(crate) fn poll_ack(&mut self) -> Option<(W, AckResult)> {
        self.acks.pop_front()
    }

    /// The next change to the live device state, in order.
    pub(crate) fn poll_live(&mut self) -> Option<LiveUpdate> {
        self.live.pop_front()
    }

    /// Device events of a durable batch, for the alarm engine.
    pub(crate) fn poll_alarm_events(&mut self) -> Option<Vec<DeviceEvent>> {
        self.alarm_events.pop_front()
    }

    /// Snapshot updates (status reports, online/offline) of a durable batch, for the snapshot
    /// writer.
    pub(crate) fn poll_snapshots(&mut self) -> Option<Vec<DeviceSnapshotUpdate>> {
        self.snapshots.pop_front()
    }

    fn presence(&mut self, device_id: DeviceId, online: bool) {
        self.pending.snapshots.push(DeviceSnapshotUpdate { device_id, online: Some(online), report: None });
    }

    fn event(&mut self, device_id: DeviceId, enterprise_id: EnterpriseId, at: UnixMillis, input: DeviceInput) {
        if self.config.alarm_events {
            self.pending.alarm_events.push(DeviceEvent { device_id, enterprise_id, at, input });
        }
    }
}

const KIND_HEARTBEAT: KindLabel = KindLabel { kind: "heartbeat" };
const KIND_STATUS: KindLabel = KindLabel { kind: "status" };
const KIND_RESOURCE: KindLabel = KindLabel { kind: "resource" };
const KIND_ALARM: KindLabel = KindLabel { kind: "alarm" };
const KIND_COMMAND_RESULT: KindLabel = KindLabel { kind: "command_result" };
