//! A shard's tokio shell: owns the devices routed to it (ING-4, ING-5) around a sans-I/O
//! [`ShardBatcher`].
//!
//! Sessions send it validated frames over a bounded queue. The shell feeds them to the core
//! (which drops duplicates by (device, seq) and builds the pending [`fleetpulse_store::EventBatch`]), applies the
//! live-state changes the core decides, and commits one batch at a time: while one batch is being
//! committed, the next one accumulates (pipelined group commit); when the next one is full, the
//! shard stops taking from its queue, the queue fills, sessions stop reading, and QUIC flow
//! control slows the devices. A session's frames are acknowledged only after the batch holding
//! them is durable; the core says when.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetpulse_alarm_engine::{DeviceEvent, DeviceInput};
use fleetpulse_proto::{DeviceId, EnterpriseId, UnixMillis};
use fleetpulse_store::{
    DeadLetterReason, DeadLetterSink, DeadLetterStage, DeviceSnapshotUpdate, NewDeadLetter, StoreError, StoredEvent,
    StoredInput,
};
use tokio::sync::{mpsc, oneshot};

pub(crate) use crate::batcher::{AckResult, Frame};
use crate::batcher::{BatchId, BatcherConfig, CommitBatch, Now, ShardBatcher};
use crate::live::LiveState;
use crate::metrics::IngestMetrics;

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
        /// Answered with the `last_seq` of the device's `Welcome` ([`ShardBatcher::handle_open`]).
        welcome: oneshot::Sender<u64>,
    },
    /// Frames read from the device's stream, in order.
    Frames { device: DeviceId, frames: Vec<Frame>, at: UnixMillis, done: oneshot::Sender<AckResult> },
    /// The device's connection closed (ignored if a newer connection of the device opened since).
    Disconnected { device: DeviceId, connection: usize },
    /// Another node holds the device's session now: forget it without an offline transition.
    TakenOver { device: DeviceId },
    /// The verdict on a device held for an offline check: `elsewhere`, another live node holds
    /// its session (forgotten here), else it goes offline.
    OfflineVerdict { device: DeviceId, elsewhere: bool },
}

/// Shard settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ShardConfig {
    pub max_batch_rows: usize,
    pub missed_heartbeats: u32,
}

/// How many times a shard yields to the runtime before it starts a commit ([`Shard::gather`]).
/// A commit has a fixed cost (the WAL's `pwrite`s and `fsync`, about 100 µs of CPU on the
/// embedded store), so fewer, larger commits cost less per message: four yields cut the
/// server's CPU per message by 6.5 % at 8,000 msg/s and 10 % at 2,000 msg/s, and no
/// acknowledgement came later (docs/PERFORMANCE.md, issue 14). More yields gained nothing more.
const GATHER_YIELDS: u32 = 4;

/// A commit in progress: the batch's id and the store's answer.
type Inflight = Pin<Box<dyn Future<Output = (BatchId, Result<(), StoreError>)> + Send>>;

pub(crate) struct Shard {
    core: ShardBatcher<oneshot::Sender<AckResult>>,
    epoch: Instant,
    live: Arc<LiveState>,
    store: fleetpulse_store::Store,
    metrics: IngestMetrics,
    alarm_events: Option<mpsc::Sender<Vec<DeviceEvent>>>,
    snapshots: mpsc::Sender<Vec<DeviceSnapshotUpdate>>,
    dead_letters: DeadLetterSink,
    /// Several nodes: where devices whose heartbeats are missing are checked before they go
    /// offline (verdicts come back as [`ShardCmd::OfflineVerdict`]).
    offline_checks: Option<mpsc::Sender<Vec<DeviceId>>>,
}

impl Shard {
    pub(crate) fn new(
        config: ShardConfig,
        live: Arc<LiveState>,
        store: fleetpulse_store::Store,
        metrics: IngestMetrics,
        alarm_events: Option<mpsc::Sender<Vec<DeviceEvent>>>,
        snapshots: mpsc::Sender<Vec<DeviceSnapshotUpdate>>,
        offline_checks: Option<mpsc::Sender<Vec<DeviceId>>>,
    ) -> Shard {
        let core_config = BatcherConfig {
            max_batch_rows: config.max_batch_rows,
            missed_heartbeats: config.missed_heartbeats,
            alarm_events: alarm_events.is_some(),
            hold_offline: offline_checks.is_some(),
        };
        let dead_letters = DeadLetterSink::new(store.entities.clone(), metrics.dead_letters.clone());
        Shard {
            dead_letters,
            core: ShardBatcher::new(core_config, metrics.clone()),
            epoch: Instant::now(),
            live,
            store,
            metrics,
            alarm_events,
            snapshots,
            offline_checks,
        }
    }

    /// The core's time: the wall clock, and monotonic milliseconds since the shard started.
    fn now(&self) -> Now {
        Now { wall: UnixMillis::now(), mono: self.epoch.elapsed().as_millis() as u64 }
    }

    /// Runs until every sender of `rx` is gone, then commits what is left.
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<ShardCmd>) {
        let mut inflight: Option<Inflight> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut open = true;
        while open || inflight.is_some() || self.core.has_pending() {
            let has_room = self.core.has_room();
            tokio::select! {
                biased;
                (id, result) = async { inflight.as_mut().expect("guarded by is_some").await }, if inflight.is_some() => {
                    inflight = None;
                    self.core.handle_committed(id, result);
                    self.release();
                    self.hand_to_alarm_engine().await;
                    self.hand_to_snapshot_writer().await;
                }
                cmd = rx.recv(), if open && has_room => match cmd {
                    Some(cmd) => self.handle(cmd),
                    None => open = false,
                },
                _ = tick.tick() => {
                    let now = self.now();
                    self.core.handle_timeout(now);
                    self.ask_offline_checks(now);
                    self.release();
                }
            }
            self.take_queued(&mut rx);
            if inflight.is_none() {
                if open && self.core.has_pending() {
                    self.gather(&mut rx).await;
                }
                inflight = self.core.poll_commit().map(|batch| self.commit(batch));
                self.release();
            }
        }
    }

    /// Handles what the queue holds now, while the pending batch has room.
    fn take_queued(&mut self, rx: &mut mpsc::Receiver<ShardCmd>) {
        while self.core.has_room() {
            match rx.try_recv() {
                Ok(cmd) => self.handle(cmd),
                Err(_) => break,
            }
        }
    }

    /// Before a commit starts, yields to the runtime [`GATHER_YIELDS`] times and takes what the
    /// sessions queued meanwhile, so that frames read together commit together. A yield lets the
    /// runtime poll the sockets and run the sessions that became ready; on an idle runtime it
    /// returns at once, so a lone frame waits no longer.
    async fn gather(&mut self, rx: &mut mpsc::Receiver<ShardCmd>) {
        for _ in 0..GATHER_YIELDS {
            if !self.core.has_room() {
                break;
            }
            tokio::task::yield_now().await;
            self.take_queued(rx);
        }
    }

    /// Applies what the core decided: answers waiters, updates the live state.
    fn release(&mut self) {
        while let Some(update) = self.core.poll_live() {
            self.live.apply(update);
        }
        while let Some((done, result)) = self.core.poll_ack() {
            let _ = done.send(result);
        }
    }

    /// Gives the alarm engine the events of the batch just committed. Waits when its queue is
    /// full (counted): the engine evaluates millions of events a second, so this is a storm's
    /// backpressure, not a normal state; nothing is dropped. When the engine has stopped, its
    /// events become dead letters of stage `alarm_engine` (they are durable; a replay evaluates
    /// them).
    async fn hand_to_alarm_engine(&mut self) {
        while let Some(events) = self.core.poll_alarm_events() {
            let Some(tx) = &self.alarm_events else { continue };
            self.metrics.alarm_event_batches.inc();
            let refused = match tx.try_send(events) {
                Ok(()) => None,
                Err(mpsc::error::TrySendError::Full(events)) => {
                    self.metrics.alarm_queue_full.inc();
                    tx.send(events).await.err().map(|e| e.0)
                }
                Err(mpsc::error::TrySendError::Closed(events)) => Some(events),
            };
            if let Some(events) = refused {
                give_up_events(&self.dead_letters, &events).await;
            }
        }
    }

    /// Gives the snapshot writer the status reports and online/offline transitions of the batch
    /// just committed. Waits when its queue is full (counted), never drops: when the writer has
    /// stopped, the updates are counted as dead letters of stage `snapshots` (not stored: the
    /// next start marks every device offline, and its next report restores the snapshot).
    async fn hand_to_snapshot_writer(&mut self) {
        while let Some(updates) = self.core.poll_snapshots() {
            let refused = match self.snapshots.try_send(updates) {
                Ok(()) => None,
                Err(mpsc::error::TrySendError::Full(updates)) => {
                    self.metrics.snapshot_queue_full.inc();
                    self.snapshots.send(updates).await.err().map(|e| e.0)
                }
                Err(mpsc::error::TrySendError::Closed(updates)) => Some(updates),
            };
            if let Some(updates) = refused {
                let labels = fleetpulse_store::DeadLetterLabels { stage: "snapshots", reason: "stage_stopped" };
                self.dead_letters.metrics().total.get_or_create(&labels).inc_by(updates.len() as u64);
                tracing::error!(
                    message = "Device snapshot updates given up: the snapshot writer has stopped.",
                    updates = updates.len()
                );
            }
        }
    }

    /// Hands the held devices to the offline check; when its queue is full (or it is gone) they
    /// go offline at once, as on one node.
    fn ask_offline_checks(&mut self, now: Now) {
        while let Some(devices) = self.core.poll_offline_checks() {
            let refused = match &self.offline_checks {
                Some(tx) => match tx.try_send(devices) {
                    Ok(()) => continue,
                    Err(mpsc::error::TrySendError::Full(d) | mpsc::error::TrySendError::Closed(d)) => d,
                },
                None => devices,
            };
            tracing::warn!(
                message = "The offline check is full or gone; devices go offline unchecked.",
                devices = refused.len()
            );
            for device in refused {
                self.core.handle_offline_verdict(now, device, false);
            }
        }
    }

    fn handle(&mut self, cmd: ShardCmd) {
        match cmd {
            ShardCmd::Open { device, enterprise, heartbeat_interval_s, committed_seq, connection, welcome } => {
                let now = self.now();
                let last_seq =
                    self.core.handle_open(now, device, enterprise, heartbeat_interval_s, committed_seq, connection);
                let _ = welcome.send(last_seq);
            }
            ShardCmd::Frames { device, frames, at, done } => {
                self.metrics.shard_queue_depth.dec();
                let now = self.now();
                self.core.handle_frames(now, device, frames, at, done);
            }
            ShardCmd::Disconnected { device, connection } => self.core.handle_disconnected(device, connection),
            ShardCmd::TakenOver { device } => self.core.handle_taken_over(device),
            ShardCmd::OfflineVerdict { device, elsewhere } => {
                let now = self.now();
                self.core.handle_offline_verdict(now, device, elsewhere);
            }
        }
        self.release();
    }

    /// Starts committing a batch the core handed out; its outcome goes back to the core.
    fn commit(&self, CommitBatch { id, batch }: CommitBatch) -> Inflight {
        let rows = batch.rows() as u64;
        let store = self.store.events.clone();
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let started = Instant::now();
            let result = store.append(batch).await;
            metrics.store_append_seconds.observe(started.elapsed().as_secs_f64());
            if result.is_ok() {
                metrics.store_batches.inc();
                metrics.store_rows.inc_by(rows);
            }
            (id, result)
        })
    }
}

/// Records durable events the alarm engine could not be handed as dead letters (its task has
/// stopped); the store writes stop at the first failure, the rest counted (`DeadLetterSink`).
async fn give_up_events(dead_letters: &DeadLetterSink, events: &[DeviceEvent]) {
    let at = UnixMillis::now();
    let letters = events.iter().map(|e| NewDeadLetter {
        stage: DeadLetterStage::AlarmEngine,
        reason: DeadLetterReason { code: "stage_stopped", detail: "the alarm engine has stopped".into() },
        enterprise_id: Some(e.enterprise_id),
        device_id: Some(e.device_id),
        payload: fleetpulse_store::event_payload(&stored_event(e)),
        attempts: 1,
        at,
    });
    dead_letters.record_many(letters.collect()).await;
}

/// A device event as a dead letter keeps it (the alarm service reads it back).
fn stored_event(e: &DeviceEvent) -> StoredEvent {
    let input = match &e.input {
        DeviceInput::Alarm(a) => {
            StoredInput::Alarm { code: a.alarm_type.code, clear: a.clear, description: a.description.clone() }
        }
        DeviceInput::Offline => StoredInput::Offline,
        DeviceInput::Online => StoredInput::Online,
        DeviceInput::Resources(sample) => StoredInput::Resources { sample: *sample },
    };
    StoredEvent { device_id: e.device_id, enterprise_id: e.enterprise_id, at: e.at, input }
}

#[cfg(test)]
mod tests {
    use fleetpulse_proto::domain::{DeviceMessage, ResourceSample};
    use fleetpulse_store::embedded::EmbeddedConfig;
    use prometheus_client::registry::Registry;

    use super::*;

    fn resource_frame(device: u64, done: oneshot::Sender<AckResult>) -> ShardCmd {
        let sample = ResourceSample { cpu_centi_pct: 100, mem_used_bytes: 1, mem_total_bytes: 2 };
        let frames = vec![Frame { seq: 1, msg: Some(DeviceMessage::Resource(sample)) }];
        ShardCmd::Frames { device: DeviceId(device), frames, at: UnixMillis(1_000), done }
    }

    /// A session that becomes ready while the shard is about to commit gets its frames into that
    /// commit: the shard yields before it starts one. Without the yield, the first device's frame
    /// would commit alone and the second's in a commit of its own.
    #[tokio::test(flavor = "current_thread")]
    async fn frames_queued_while_the_shard_yields_join_its_commit() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = fleetpulse_store::Store::open_embedded(
            dir.path(),
            EmbeddedConfig { fsync: false, ..EmbeddedConfig::default() },
        )
        .expect("store");
        let metrics = IngestMetrics::register(&mut Registry::default());
        let (snapshots, _snapshots_rx) = mpsc::channel(16);
        let config = ShardConfig { max_batch_rows: 1_000, missed_heartbeats: 3 };
        let shard = Shard::new(config, Arc::new(LiveState::new()), store, metrics.clone(), None, snapshots, None);
        let (tx, rx) = mpsc::channel(16);
        for device in [1, 2] {
            let open = ShardCmd::Open {
                device: DeviceId(device),
                enterprise: EnterpriseId(1),
                heartbeat_interval_s: 30,
                committed_seq: 0,
                connection: device as usize,
                welcome: oneshot::channel().0,
            };
            tx.try_send(open).expect("room");
        }
        let (first_done, first_ack) = oneshot::channel();
        tx.try_send(resource_frame(1, first_done)).expect("room");
        let shard = tokio::spawn(shard.run(rx));
        // The second session runs after the shard has taken the first frame (a current-thread
        // runtime runs its tasks in the order they were woken).
        let (second_done, second_ack) = oneshot::channel();
        let second = tx.clone();
        tokio::spawn(async move { second.send(resource_frame(2, second_done)).await.expect("shard running") });

        assert_eq!(first_ack.await.expect("answered"), Ok(1));
        assert_eq!(second_ack.await.expect("answered"), Ok(1));
        assert_eq!(metrics.store_batches.get(), 1, "both frames in one commit");
        drop(tx);
        shard.await.expect("shard ends once its senders are gone");
    }
}
