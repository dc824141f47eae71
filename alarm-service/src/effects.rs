//! The effects task: carries out what the engine decided. Derived threshold alarm records
//! (401/402) are appended to the event store; notifications are checked against the items the
//! outbox already has (queued before a restart), given the names the email shows, and queued.
//! A failing store is retried with backoff, never dropped: the bounded queues in front wait.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use fleetpulse_alarm_engine::{Notification, Receiver};
use fleetpulse_mailer::{MAX_ITEMS_PER_MESSAGE, OutboxError, OutboxHandoff, Queued, enqueue};
use fleetpulse_proto::UnixMillis;
use fleetpulse_proto::domain::AlarmChange;
use fleetpulse_store::{AlarmAuditEntry, EventBatch, MAX_AUDIT_BATCH, Store, WindowMark};
use tokio::sync::mpsc;

use crate::AlarmMetrics;
use crate::names::Names;
use crate::payload::outbox_payload;

/// Most item keys checked against the outbox per query.
const KNOWN_ITEMS_CHUNK: usize = 5_000;

/// What the engine task hands to the effects task.
#[derive(Debug)]
pub(crate) enum Effect {
    /// A derived threshold alarm record change.
    Record(AlarmChange),
    /// A notification to queue, with when the engine decided it.
    Notify(Notification, Instant),
    /// What a maintenance window did to an alarm, for the alarm's detail.
    Mark(WindowMark),
}

/// Carries out the engine's effects until the engine task is gone; notifications are queued
/// through `outbox` when the outbox worker runs (handed to it once durable), else only stored.
pub(crate) async fn run_effects(
    store: Store,
    mut effects: mpsc::Receiver<Effect>,
    outbox: Option<OutboxHandoff>,
    metrics: AlarmMetrics,
) {
    let mut names = Names::default();
    let mut batch = Vec::with_capacity(256);
    while effects.recv_many(&mut batch, 256).await > 0 {
        let mut records = Vec::new();
        let mut notifications = Vec::new();
        let mut decided = Vec::new();
        let mut marks = Vec::new();
        for effect in batch.drain(..) {
            match effect {
                Effect::Record(change) => records.push(change),
                Effect::Mark(mark) => marks.push(mark),
                Effect::Notify(n, at) => {
                    notifications.push(n);
                    decided.push(at);
                }
            }
        }
        if !records.is_empty() {
            let batch = EventBatch { alarm_changes: records, ..EventBatch::default() };
            retry("write threshold alarm records", || store.events.append(batch.clone())).await;
        }
        let mut audit: Vec<AlarmAuditEntry> = marks.iter().map(crate::audit::window_step).collect();
        for mark in marks {
            retry("write a maintenance window mark", || store.entities.record_window_mark(mark.clone())).await;
        }
        if notifications.is_empty() {
            write_audit(&store, audit).await;
            continue;
        }
        let mut backoff = Backoff::new();
        let (queued, planned) = loop {
            match prepare(&store, &mut names, notifications.clone(), &metrics).await {
                Ok(queued) => break queued,
                Err(error) => backoff.wait("prepare notifications", &error).await,
            }
        };
        // Taken before queueing: a message handed straight to the outbox worker may be sent
        // (and its audit entry timed) before the queueing call returns here.
        let planned_at = UnixMillis::now();
        let entities = store.entities.as_ref();
        let added = retry("queue notifications", || async {
            match &outbox {
                Some(handoff) => handoff.enqueue(entities, queued.clone()).await,
                None => enqueue(entities, queued.clone()).await,
            }
        })
        .await;
        audit.extend(planned.iter().flat_map(|n| crate::audit::planned(n, planned_at)));
        write_audit(&store, audit).await;
        metrics.queued.inc_by(added as u64);
        for at in decided {
            metrics.engine_to_outbox_seconds.observe(at.elapsed().as_secs_f64());
        }
    }
}

/// Writes notification audit entries, in store-sized chunks; best effort: a failure is logged
/// and the entries are not kept (the notifications themselves are already queued).
async fn write_audit(store: &Store, entries: Vec<AlarmAuditEntry>) {
    for chunk in entries.chunks(MAX_AUDIT_BATCH) {
        if let Err(error) = store.entities.record_alarm_audit(chunk.to_vec()).await {
            tracing::warn!(message = "Notification audit entries not written.", %error);
            return;
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

/// Leaves out items an earlier process queued, and adds the names the email shows; the
/// notifications as queued too (for their audit entries).
async fn prepare(
    store: &Store,
    names: &mut Names,
    mut notifications: Vec<Notification>,
    metrics: &AlarmMetrics,
) -> Result<(Vec<Queued>, Vec<Notification>), OutboxError> {
    let keys: Vec<String> = notifications.iter().flat_map(|n| n.items.iter().map(|i| i.key.to_string())).collect();
    let mut known = HashSet::new();
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
    for n in &notifications {
        let enterprise_name = names.enterprise(store, n.enterprise_id).await?;
        let mut labels = HashMap::new();
        for item in n.items.iter().take(MAX_ITEMS_PER_MESSAGE) {
            labels.insert(item.device_id, names.device(store, item.device_id).await?);
        }
        let Receiver::Email(receiver) = &n.receiver;
        queued.push(Queued {
            receiver: receiver.clone(),
            payload: outbox_payload(n, &enterprise_name, &labels),
            item_keys: n.items.iter().map(|i| i.key.to_string()).collect(),
            not_before: now,
        });
    }
    Ok((queued, notifications))
}
