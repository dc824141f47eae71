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
//! - The engine task does no I/O except reading strategies when the API says they changed; its
//!   actions go to the effects task, which writes derived threshold alarm records (401/402, the
//!   only records the shards do not write) and queues notifications in the durable outbox.
//! - At start the service loads every enterprise's strategies and takes over the alarms the
//!   store has as active ([`AlarmEngine::restore_alarm`]); notification items the outbox already
//!   has (queued before a restart) are left out by their idempotency keys, so nothing is sent
//!   twice and nothing queued is forgotten.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use fleetpulse_alarm_engine::{
    Action, AlarmEngine, AlarmStrategy, DeviceEvent, HIGH_CPU, HIGH_MEMORY, Metric, Notification, NotifySettings,
    Receiver, RestoredAlarm, ThresholdRule,
};
use fleetpulse_proto::domain::AlarmChange;
use fleetpulse_proto::{AccountId, AlarmTypeCode, DeviceId, EnterpriseId, UnixMillis};
use fleetpulse_store::{
    AlarmFilter, AlarmStatus, EventBatch, Page, Store, StoreError, StoredStrategy, ThresholdMetric,
};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use fleetpulse_mailer::{MAX_ITEMS_PER_MESSAGE, OutboxError, OutboxPayload, Queued, enqueue};

mod metrics;

pub use metrics::AlarmMetrics;

/// Capacity of the queue from the engine task to the effects task (in actions).
const EFFECT_QUEUE: usize = 8_192;
/// Capacity of the API's control queue.
const CONTROL_QUEUE: usize = 1_024;
/// Rows read per page while loading strategies and active alarms.
const LOAD_PAGE: u32 = 1_000;
/// Most cached enterprise names and device labels before the caches start over.
const MAX_CACHED_NAMES: usize = 100_000;
/// Most item keys checked against the outbox per query.
const KNOWN_ITEMS_CHUNK: usize = 5_000;

/// What the admin API tells the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// An account acknowledged an active alarm (already stored): stop its reminders.
    Acknowledged {
        /// The device.
        device_id: DeviceId,
        /// The alarm type.
        code: AlarmTypeCode,
        /// Who.
        by: AccountId,
        /// When.
        at: UnixMillis,
    },
    /// An account cleared an active alarm by hand (already stored): send its resolution.
    Cleared {
        /// The device.
        device_id: DeviceId,
        /// The alarm type.
        code: AlarmTypeCode,
        /// Who.
        by: AccountId,
        /// When.
        at: UnixMillis,
    },
    /// The enterprise's strategies changed in the store: reload them.
    StrategiesChanged(EnterpriseId),
}

/// The API's handle on the running service.
#[derive(Debug, Clone)]
pub struct AlarmHandle {
    control: mpsc::Sender<Control>,
}

impl AlarmHandle {
    /// Tells the engine; waits while its queue is full. Logs (and otherwise ignores) a stopped
    /// service: the change is in the store and is read again at the next start.
    pub async fn send(&self, control: Control) {
        if self.control.send(control).await.is_err() {
            tracing::warn!(message = "Alarm service stopped; the change takes effect at the next start.");
        }
    }
}

/// What the engine task hands to the effects task.
#[derive(Debug)]
enum Effect {
    /// A derived threshold alarm record change.
    Record(AlarmChange),
    /// A notification to queue.
    Notify(Notification),
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
    /// `outbox_wake` is notified after notifications were queued.
    ///
    /// # Errors
    ///
    /// The store failed while loading.
    pub async fn start(
        store: Store,
        events: mpsc::Receiver<Vec<DeviceEvent>>,
        outbox_wake: Option<Arc<Notify>>,
        stop: watch::Receiver<bool>,
        metrics: AlarmMetrics,
    ) -> Result<AlarmService, StoreError> {
        let mut engine = AlarmEngine::new();
        load_strategies(&store, &mut engine).await?;
        let now = UnixMillis::now();
        let mut page = Page::first(LOAD_PAGE);
        let active = AlarmFilter { status: Some(AlarmStatus::Active), ..AlarmFilter::default() };
        loop {
            let records = store.events.list_alarm_records(active.clone(), page).await?;
            for r in &records {
                engine.restore_alarm(
                    now,
                    RestoredAlarm {
                        device_id: r.device_id,
                        enterprise_id: r.enterprise_id,
                        code: r.code,
                        first_at: r.first_at,
                        latest_at: r.latest_at,
                        count: u32::try_from(r.count).unwrap_or(u32::MAX),
                        description: r.description.clone(),
                        acknowledged: r.acknowledged_by.zip(r.acknowledged_at),
                    },
                );
            }
            metrics.restored.inc_by(records.len() as u64);
            match records.last() {
                Some(last) if records.len() == LOAD_PAGE as usize => page = Page { after: last.id, limit: LOAD_PAGE },
                _ => break,
            }
        }
        let (control_tx, control_rx) = mpsc::channel(CONTROL_QUEUE);
        let (effect_tx, effect_rx) = mpsc::channel(EFFECT_QUEUE);
        let engine_task =
            tokio::spawn(run_engine(engine, store.clone(), events, control_rx, effect_tx, stop, metrics.clone()));
        let effects_task = tokio::spawn(run_effects(store, effect_rx, outbox_wake, metrics));
        Ok(AlarmService { handle: AlarmHandle { control: control_tx }, engine_task, effects_task })
    }
}

/// The engine form of a stored strategy.
pub fn engine_strategy(s: &StoredStrategy) -> AlarmStrategy {
    let settings = &s.settings;
    AlarmStrategy {
        id: s.id,
        enterprise_id: s.enterprise_id,
        name: settings.name.clone(),
        enabled: settings.enabled,
        alarm_types: settings.alarm_types.clone(),
        severities: settings.severities.clone(),
        receivers: settings.receivers.iter().map(|r| Receiver::Email(r.clone())).collect(),
        notify: NotifySettings {
            group_wait_ms: settings.group_wait_ms,
            group_interval_ms: settings.group_interval_ms,
            repeat_interval_ms: settings.repeat_interval_ms,
        },
        thresholds: settings
            .thresholds
            .iter()
            .map(|t| ThresholdRule {
                metric: match t.metric {
                    ThresholdMetric::Cpu => Metric::Cpu,
                    ThresholdMetric::Memory => Metric::Memory,
                },
                above_centi_pct: t.above_centi_pct,
                for_ms: t.for_ms,
            })
            .collect(),
    }
}

async fn load_strategies(store: &Store, engine: &mut AlarmEngine) -> Result<(), StoreError> {
    let mut page = Page::first(LOAD_PAGE);
    loop {
        let enterprises = store.entities.list_enterprises(page).await?;
        for e in &enterprises {
            reload(store, engine, e.id).await?;
        }
        match enterprises.last() {
            Some(last) if enterprises.len() == LOAD_PAGE as usize => page = Page { after: last.id.0, limit: LOAD_PAGE },
            _ => return Ok(()),
        }
    }
}

/// Reads the enterprise's strategies into the engine. A set the engine refuses (the API
/// validates with the same limits, so only an older row could) is logged and leaves the previous
/// one in place.
async fn reload(store: &Store, engine: &mut AlarmEngine, enterprise: EnterpriseId) -> Result<(), StoreError> {
    let strategies: Vec<AlarmStrategy> =
        store.entities.list_strategies(enterprise).await?.iter().map(engine_strategy).collect();
    if let Err(error) = engine.set_strategies(enterprise, strategies) {
        tracing::error!(message = "Alarm strategies refused; the previous ones stay.", %enterprise, %error);
    }
    Ok(())
}

async fn run_engine(
    mut engine: AlarmEngine,
    store: Store,
    mut events: mpsc::Receiver<Vec<DeviceEvent>>,
    mut control: mpsc::Receiver<Control>,
    effects: mpsc::Sender<Effect>,
    mut stop: watch::Receiver<bool>,
    metrics: AlarmMetrics,
) {
    let mut actions = Vec::new();
    let mut control_open = true;
    loop {
        // Records of device-reported and offline alarms are written by the shards with the
        // events; the engine's own are only the derived threshold alarms. A manual clear is
        // stored by the API before it gets here.
        let mut keep_records = true;
        let sleep = engine.next_deadline().map(|due| {
            let ms = u64::try_from(due.0.saturating_sub(UnixMillis::now().0)).unwrap_or(0);
            Duration::from_millis(ms)
        });
        tokio::select! {
            biased;
            _ = stopped(&mut stop) => break,
            c = control.recv(), if control_open => match c {
                Some(c) => {
                    keep_records = !matches!(c, Control::Cleared { .. });
                    handle_control(&mut engine, &store, c).await;
                }
                None => control_open = false,
            },
            batch = events.recv() => match batch {
                Some(batch) => {
                    metrics.events.inc_by(batch.len() as u64);
                    for event in &batch {
                        engine.handle_event(event);
                    }
                }
                None => break,
            },
            _ = tokio::time::sleep(sleep.unwrap_or(Duration::MAX)), if sleep.is_some() => {
                engine.handle_timeout(UnixMillis::now());
            }
        }
        engine.drain_actions(&mut actions);
        let state = engine.stats();
        metrics.active_alarms.set(i64::try_from(state.active_alarms).unwrap_or(i64::MAX));
        metrics.open_groups.set(i64::try_from(state.open_groups).unwrap_or(i64::MAX));
        metrics.scheduled_reminders.set(i64::try_from(state.scheduled_repeats).unwrap_or(i64::MAX));
        metrics.threshold_states.set(i64::try_from(state.threshold_states).unwrap_or(i64::MAX));
        for action in actions.drain(..) {
            let effect = match action {
                Action::Record(change) if keep_records && (change.code == HIGH_CPU || change.code == HIGH_MEMORY) => {
                    Effect::Record(change)
                }
                Action::Notify(n) => Effect::Notify(n),
                Action::Record(_) | Action::Lifecycle { .. } => continue,
            };
            if effects.send(effect).await.is_err() {
                return;
            }
        }
    }
}

/// Returns once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Applies a control message.
async fn handle_control(engine: &mut AlarmEngine, store: &Store, control: Control) {
    // An alarm that is not active in the engine (cleared meanwhile, or a race with the device)
    // has nothing left to notify: the API already answered from the store.
    match control {
        Control::Acknowledged { device_id, code, by, at } => {
            let _ = engine.handle_acknowledge(at, device_id, code, by);
        }
        Control::Cleared { device_id, code, by, at } => {
            let _ = engine.handle_manual_clear(at, device_id, code, by);
        }
        Control::StrategiesChanged(enterprise) => {
            // A failed read leaves the previous strategies; the next change or start reads again.
            if let Err(error) = reload(store, engine, enterprise).await {
                tracing::error!(message = "Cannot read changed alarm strategies.", %enterprise, %error);
            }
        }
    }
}

async fn run_effects(
    store: Store,
    mut effects: mpsc::Receiver<Effect>,
    outbox_wake: Option<Arc<Notify>>,
    metrics: AlarmMetrics,
) {
    let mut names = Names::default();
    let mut batch = Vec::with_capacity(256);
    while effects.recv_many(&mut batch, 256).await > 0 {
        let mut records = Vec::new();
        let mut notifications = Vec::new();
        for effect in batch.drain(..) {
            match effect {
                Effect::Record(change) => records.push(change),
                Effect::Notify(n) => notifications.push(n),
            }
        }
        if !records.is_empty() {
            let batch = EventBatch { alarm_changes: records, ..EventBatch::default() };
            retry("write threshold alarm records", || store.events.append(batch.clone())).await;
        }
        if notifications.is_empty() {
            continue;
        }
        let mut backoff = Backoff::new();
        let queued = loop {
            match prepare(&store, &mut names, notifications.clone(), &metrics).await {
                Ok(queued) => break queued,
                Err(error) => backoff.wait("prepare notifications", &error).await,
            }
        };
        let added = retry("queue notifications", || enqueue(&store, queued.clone())).await;
        metrics.queued.inc_by(added as u64);
        if let Some(wake) = &outbox_wake {
            wake.notify_one();
        }
    }
}

/// Runs `op` until it succeeds, backing off up to 30 s between attempts: what the engine decided
/// must not be dropped because the store hiccuped (the queues in front wait meanwhile).
async fn retry<T, E: std::fmt::Display + Sync, F: Future<Output = Result<T, E>>>(
    what: &str,
    mut op: impl FnMut() -> F,
) -> T {
    let mut backoff = Backoff::new();
    loop {
        match op().await {
            Ok(v) => return v,
            Err(error) => backoff.wait(what, &error).await,
        }
    }
}

/// Exponential backoff from 100 ms to 30 s.
struct Backoff(Duration);

impl Backoff {
    fn log(&self, what: &str, error: &dyn std::fmt::Display) {
        tracing::error!(message = "Alarm service store operation failed; retrying.", what, %error, delay_ms = self.0.as_millis() as u64);
    }

    fn new() -> Backoff {
        Backoff(Duration::from_millis(100))
    }

    async fn wait(&mut self, what: &str, error: &(dyn std::fmt::Display + Sync)) {
        self.log(what, error);
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Duration::from_secs(30));
    }
}

/// Leaves out items an earlier process queued, and adds the names the email shows.
async fn prepare(
    store: &Store,
    names: &mut Names,
    mut notifications: Vec<Notification>,
    metrics: &AlarmMetrics,
) -> Result<Vec<Queued>, OutboxError> {
    let keys: Vec<String> = notifications.iter().flat_map(|n| n.items.iter().map(|i| i.key.to_string())).collect();
    let mut known = std::collections::HashSet::new();
    for chunk in keys.chunks(KNOWN_ITEMS_CHUNK) {
        known.extend(store.entities.outbox_known_items(chunk).await?);
    }
    if !known.is_empty() {
        let before: usize = notifications.iter().map(|n| n.items.len()).sum();
        notifications.retain_mut(|n| n.retain_items(|i| !known.contains(&i.key.to_string())));
        let after: usize = notifications.iter().map(|n| n.items.len()).sum();
        metrics.known_items_skipped.inc_by((before - after) as u64);
    }
    let now = UnixMillis::now();
    let mut queued = Vec::with_capacity(notifications.len());
    for n in notifications {
        let enterprise_name = names.enterprise(store, n.enterprise_id).await?;
        let mut labels = HashMap::new();
        for item in n.items.iter().take(MAX_ITEMS_PER_MESSAGE) {
            labels.insert(item.device_id, names.device(store, item.device_id).await?);
        }
        let Receiver::Email(receiver) = &n.receiver;
        queued.push(Queued {
            receiver: receiver.clone(),
            payload: OutboxPayload::new(&n, &enterprise_name, &labels),
            item_keys: n.items.iter().map(|i| i.key.to_string()).collect(),
            not_before: now,
        });
    }
    Ok(queued)
}

/// Cached display names (bounded: a full cache starts over).
#[derive(Default)]
struct Names {
    enterprises: HashMap<EnterpriseId, String>,
    devices: HashMap<DeviceId, String>,
}

impl Names {
    async fn enterprise(&mut self, store: &Store, id: EnterpriseId) -> Result<String, StoreError> {
        if let Some(name) = self.enterprises.get(&id) {
            return Ok(name.clone());
        }
        let name = store.entities.enterprise(id).await?.map_or_else(|| format!("Enterprise {id}"), |e| e.name);
        if self.enterprises.len() >= MAX_CACHED_NAMES {
            self.enterprises.clear();
        }
        self.enterprises.insert(id, name.clone());
        Ok(name)
    }

    async fn device(&mut self, store: &Store, id: DeviceId) -> Result<String, StoreError> {
        if let Some(label) = self.devices.get(&id) {
            return Ok(label.clone());
        }
        let label = match store.entities.device(id).await? {
            Some(d) if !d.name.is_empty() => d.name,
            Some(d) => d.mac.map(|m| m.to_string()).or(d.serial).unwrap_or_else(|| id.to_string()),
            None => id.to_string(),
        };
        if self.devices.len() >= MAX_CACHED_NAMES {
            self.devices.clear();
        }
        self.devices.insert(id, label.clone());
        Ok(label)
    }
}
