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
use fleetpulse_store::{Store, StoreError};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

mod audit;
mod control;
mod durable;
mod effects;
mod engine_task;
pub mod inherited;
mod load;
mod metrics;
mod names;
mod payload;
mod windows;

pub use control::{AlarmHandle, Control};
pub use load::engine_strategy;
pub use metrics::AlarmMetrics;

/// Capacity of the queue from the engine task to the effects task (in actions).
const EFFECT_QUEUE: usize = 8_192;
/// Capacity of the API's control queue.
const CONTROL_QUEUE: usize = 1_024;

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
        let mut engine = AlarmEngine::new();
        load::load_strategies(&store, &mut engine).await?;
        let mut windows = windows::WindowShell::default();
        windows.load_all(&store, &mut engine).await?;
        load::restore_active_alarms(&store, &mut engine, &metrics).await?;
        durable::restore(&store, &mut engine).await?;
        let (control_tx, control_rx) = mpsc::channel(CONTROL_QUEUE);
        let (effect_tx, effect_rx) = mpsc::channel(EFFECT_QUEUE);
        let engine_task = tokio::spawn(engine_task::run_engine(
            engine,
            windows,
            store.clone(),
            events,
            control_rx,
            effect_tx,
            stop,
            metrics.clone(),
        ));
        let effects_task = tokio::spawn(effects::run_effects(store, effect_rx, outbox, metrics));
        Ok(AlarmService { handle: AlarmHandle::new(control_tx), engine_task, effects_task })
    }
}
