//! The alarm service: the I/O shell that runs the sans-I/O [`AlarmEngine`] in the server.
//!
//! ```text
//!  ingest shards ──DeviceEvent batches──▶ engine task ──Effects──▶ effects task ──▶ outbox ──▶ OutboxWorker ──▶ SMTP
//!  admin API ───────Control─────────────▶ (AlarmEngine)            (records 401/402, labels,
//!                                                                    leave out known items)
//! ```
//!
//! - The shards send an event only after it is durable, so the engine never acts on something
//!   the store may lose. Both queues are bounded: when they are full, the sender waits.
//! - The engine task (`engine_task.rs`) does no I/O except reading strategies when the API says
//!   they changed (`control.rs`); its actions go to the effects task (`effects.rs`), which writes
//!   derived threshold alarm records (401/402, the only records the shards do not write) and
//!   queues notifications in the durable outbox as the mailer's payloads (`payload.rs`), which the
//!   mailer's outbox worker renders and sends.
//! - Site incidents (`sites.rs`): the engine's site directory read for the enterprises whose
//!   strategies have a site-incident rule (at start, on strategy changes, every 5 minutes); the
//!   incidents' steps stored by the effects task; open incidents saved with the durable state.
//! - A failing store is retried a bounded number of times (`dead.rs`, [`RetryPolicy`]); what is
//!   still refused becomes a dead letter with its copy (issue 18 item 5), counted in
//!   `fleetpulse_dead_letters_total`, and [`AlarmHandle::replay`] feeds it back into the engine
//!   (events) or the effects task (records, marks, notifications).
//! - Maintenance windows (`windows.rs`): loaded at start and when the API changes them, with
//!   their sites and groups resolved to devices; the tasks they are tied to are watched for a
//!   running run; the marks they leave on alarms ("suppressed by window X") are stored by the
//!   effects task.
//! - At start the service loads every enterprise's effective strategies (its own and those its
//!   channels hand down, `inherited.rs`) and takes over the alarms the
//!   store has as active (`load.rs`, [`AlarmEngine::restore_alarm`]); notification items the
//!   outbox already has (queued before a restart) are left out by their idempotency keys, so
//!   nothing is sent twice and nothing queued is forgotten. Open threshold windows and planned
//!   resolutions are saved while it runs and restored after the active alarms (`durable.rs`).
//!
//! *Architecture invariant*: the engine's decisions are all in `fleetpulse-alarm-engine`; this
//! crate only feeds it, keeps its clock, and carries out its actions.

use fleetpulse_alarm_engine::{AlarmEngine, DeviceEvent};
use fleetpulse_mailer::OutboxHandoff;
use fleetpulse_store::{DeadLetterMetrics, DeadLetterSink, EngineStateOwner, Store, StoreError};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

mod audit;
mod buckets;
mod control;
mod dead;
mod durable;
mod effects;
mod engine_task;
pub mod inherited;
mod load;
mod metrics;
mod names;
mod payload;
mod receivers;
mod sites;
mod windows;

pub use buckets::{
    BucketPlan, FrontInbox, FrontInput, ReplayTicket, bucket_target, decode_control, decode_events, encode_control,
    encode_events, group_by_bucket, plan_buckets,
};
pub use control::{AlarmHandle, Control};
pub use dead::{DeadPayload, ReplayError, RetryPolicy, StoredItem, StoredNotification};
pub use load::engine_strategy;
pub use metrics::AlarmMetrics;

/// Capacity of the queue from the engine task to the effects task (in actions).
const EFFECT_QUEUE: usize = 8_192;
/// Capacity of the API's control queue.
const CONTROL_QUEUE: usize = 1_024;
/// Capacity of the queue of dead letters being replayed.
const REPLAY_QUEUE: usize = 64;

/// Settings of the service beyond its queues.
#[derive(Debug, Clone, Default)]
pub struct ServiceOptions {
    /// How the effects task retries a failing store before an effect becomes a dead letter.
    pub retry: RetryPolicy,
    /// Whose saved engine state (open threshold windows, planned resolutions, open incidents)
    /// this engine restores and saves: the single node's, or one node's of several (issue 16).
    pub owner: EngineStateOwner,
    /// Where dead letters are counted (`fleetpulse_dead_letters_*`, registered by the caller).
    pub dead_letters: DeadLetterMetrics,
}

/// The running alarm service.
#[derive(Debug)]
pub struct AlarmService {
    /// The API's handle.
    pub handle: AlarmHandle,
    /// The engine task (ends when the event senders are gone or `stop` turns true).
    pub engine_task: JoinHandle<()>,
    /// The effects task (ends after the engine task).
    pub effects_task: JoinHandle<()>,
}

impl AlarmService {
    /// Loads the strategies and active alarms from `store`, then starts evaluating `events`.
    /// Notifications are queued through `outbox` (the outbox worker's hand-off) when a worker
    /// runs, else only stored.
    ///
    /// # Errors
    ///
    /// The store failed while loading.
    pub async fn start(
        store: Store,
        events: mpsc::Receiver<Vec<DeviceEvent>>,
        outbox: Option<OutboxHandoff>,
        stop: watch::Receiver<bool>,
        metrics: AlarmMetrics,
    ) -> Result<AlarmService, StoreError> {
        Self::start_with(store, events, outbox, stop, metrics, ServiceOptions::default()).await
    }

    /// [`AlarmService::start`] with `options` (retries, dead-letter counters).
    ///
    /// # Errors
    ///
    /// The store failed while loading.
    pub async fn start_with(
        store: Store,
        events: mpsc::Receiver<Vec<DeviceEvent>>,
        outbox: Option<OutboxHandoff>,
        stop: watch::Receiver<bool>,
        metrics: AlarmMetrics,
        options: ServiceOptions,
    ) -> Result<AlarmService, StoreError> {
        let mut engine = AlarmEngine::new();
        load::load_strategies(&store, &mut engine, &options.owner).await?;
        let mut windows = windows::WindowShell::default();
        windows.load_all(&store, &mut engine, &options.owner).await?;
        let mut sites = sites::SiteShell::default();
        sites.resolve_all(&store, &mut engine).await?;
        let saved = durable::load(&store, &options.owner).await?;
        if let Some(saved) = &saved {
            // Before the active alarms, so that members of an open incident join it silently.
            durable::restore_incidents(saved, &mut engine);
        }
        load::restore_active_alarms(&store, &mut engine, &metrics, &options.owner).await?;
        if let Some(saved) = saved {
            durable::restore(saved, &mut engine);
        }
        engine.settle_incidents(fleetpulse_proto::UnixMillis::now());
        let (control_tx, control_rx) = mpsc::channel(CONTROL_QUEUE);
        let (effect_tx, effect_rx) = mpsc::channel(EFFECT_QUEUE);
        let (replay_tx, replay_rx) = mpsc::channel(REPLAY_QUEUE);
        let dead_letters = DeadLetterSink::new(store.entities.clone(), options.dead_letters);
        let engine_task = tokio::spawn(engine_task::run_engine(
            options.owner,
            engine,
            windows,
            sites,
            store.clone(),
            engine_task::Inputs { events, control: control_rx, replays: replay_rx },
            effect_tx,
            stop,
            metrics.clone(),
            dead_letters.clone(),
        ));
        let shell = effects::EffectsShell { store, outbox, metrics, dead_letters, retry: options.retry };
        let effects_task = tokio::spawn(effects::run_effects(shell, effect_rx));
        Ok(AlarmService { handle: AlarmHandle::new(control_tx, replay_tx), engine_task, effects_task })
    }
}
