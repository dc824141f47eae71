//! The effects task: carries out what the engine decided. Derived threshold alarm records
//! (401/402) are appended to the event store; notifications are checked against the items the
//! outbox already has (queued before a restart), given the names the email shows and their
//! receiver's address (an account's email of now, `receivers.rs`), and queued; a notification
//! whose receiver account was deleted or frozen is not queued, and the audit says why.
//! A failing store is retried with backoff ([`RetryPolicy`]); what is still refused after the
//! retries (or refused for good at once) becomes a dead letter with its copy (`dead.rs`), never
//! dropped silently. Dead letters fed back ([`Effect::Replay`]) are carried out once, here.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use fleetpulse_alarm_engine::{IncidentCounts, IncidentKey, IncidentStep, Notification};
use fleetpulse_mailer::{MAX_ITEMS_PER_MESSAGE, OutboxError, OutboxHandoff, Queued, enqueue};
use fleetpulse_proto::UnixMillis;
use fleetpulse_proto::domain::AlarmChange;
use fleetpulse_store::{
    AlarmAuditEntry, DeadLetterLabels, DeadLetterSink, EventBatch, IncidentUpdate, MAX_AUDIT_BATCH, Store, WindowMark,
};
use tokio::sync::{mpsc, oneshot};

use crate::AlarmMetrics;
use crate::dead::{Attempts, DeadPayload, GivenUp, ReplayError, RetryPolicy, StoredNotification, retry};
use crate::names::Names;
use crate::payload::outbox_payload;
use crate::receivers::{BatchReceivers, Resolved};

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
    /// A site incident's step, to store (issue 18 item 3).
    Incident(Box<IncidentEffect>),
    /// A dead letter's copy to carry out once more; the answer says whether it was.
    Replay(DeadPayload, oneshot::Sender<Result<(), ReplayError>>),
}

/// An engine incident step, as the effects task stores it.
#[derive(Debug)]
pub(crate) struct IncidentEffect {
    pub(crate) incident: IncidentKey,
    pub(crate) at: UnixMillis,
    pub(crate) step: IncidentStep,
    pub(crate) counts: IncidentCounts,
}

impl IncidentEffect {
    /// The store's form of the step, with the site's name (empty when it could not be read).
    pub(crate) fn update(&self, site_name: String) -> IncidentUpdate {
        crate::sites::update(&self.incident, self.at, &self.step, self.counts, site_name)
    }
}

/// What the effects task works with.
pub(crate) struct EffectsShell {
    pub(crate) store: Store,
    pub(crate) outbox: Option<OutboxHandoff>,
    pub(crate) metrics: AlarmMetrics,
    pub(crate) dead_letters: DeadLetterSink,
    pub(crate) retry: RetryPolicy,
}

/// Carries out the engine's effects until the engine task is gone; notifications are queued
/// through the shell's `outbox` hand-off when an outbox worker runs (handed to it once durable),
/// else only stored.
pub(crate) async fn run_effects(shell: EffectsShell, mut effects: mpsc::Receiver<Effect>) {
    let mut names = Names::default();
    let mut batch = Vec::with_capacity(256);
    while effects.recv_many(&mut batch, 256).await > 0 {
        let mut records = Vec::new();
        let mut notifications = Vec::new();
        let mut decided = Vec::new();
        let mut marks = Vec::new();
        let mut incidents = Vec::new();
        for effect in batch.drain(..) {
            match effect {
                Effect::Record(change) => records.push(change),
                Effect::Mark(mark) => marks.push(mark),
                Effect::Incident(step) => incidents.push(step),
                Effect::Notify(n, at) => {
                    notifications.push(n);
                    decided.push(at);
                }
                Effect::Replay(payload, done) => {
                    let _ = done.send(shell.replay(&mut names, payload).await);
                }
            }
        }
        shell.write_records(records).await;
        let audit: Vec<AlarmAuditEntry> = marks.iter().map(crate::audit::window_step).collect();
        for mark in marks {
            shell.write_mark(mark).await;
        }
        for i in incidents {
            shell.write_incident(&mut names, &i).await;
        }
        if notifications.is_empty() {
            shell.write_audit(audit).await;
            continue;
        }
        // The window steps first (rare), so that an alarm's story lists its release before the
        // notification it let through; the planned entries go with their outbox messages (one
        // transaction); what is left (receivers gone, oversized entry lists) is written after.
        shell.write_audit(audit).await;
        let rest = shell.queue(&mut names, notifications).await;
        for at in decided {
            shell.metrics.engine_to_outbox_seconds.observe(at.elapsed().as_secs_f64());
        }
        shell.write_audit(rest).await;
    }
}

impl EffectsShell {
    /// Appends threshold alarm records; given up as one dead letter per change.
    async fn write_records(&self, records: Vec<AlarmChange>) {
        if records.is_empty() {
            return;
        }
        let batch = EventBatch { alarm_changes: records, ..EventBatch::default() };
        let store = &self.store;
        if let Err(given_up) =
            retry(self.retry, "write threshold alarm records", || store.events.append(batch.clone())).await
        {
            for change in batch.alarm_changes {
                DeadPayload::AlarmRecord { change }.give_up(&self.dead_letters, &given_up).await;
            }
        }
    }

    /// Stores a site incident's step with its site's name; given up as a dead letter (its site
    /// name left empty when that was what failed: a replay reads it again).
    async fn write_incident(&self, names: &mut Names, incident: &IncidentEffect) {
        let store = &self.store;
        let site_id = incident.incident.site_id;
        let mut attempts = Attempts::new(self.retry);
        let site_name = loop {
            match names.site(store, site_id).await {
                Ok(name) => break name,
                Err(error) => {
                    if let Some(given_up) = attempts.failed("read a site's name", &error).await {
                        let update = incident.update(String::new());
                        DeadPayload::Incident { update }.give_up(&self.dead_letters, &given_up).await;
                        return;
                    }
                }
            }
        };
        let update = incident.update(site_name);
        if let Err(given_up) =
            retry(self.retry, "write a site incident", || store.entities.record_incident(update.clone())).await
        {
            DeadPayload::Incident { update }.give_up(&self.dead_letters, &given_up).await;
        }
    }

    /// Stores a maintenance window's mark; given up as a dead letter.
    async fn write_mark(&self, mark: WindowMark) {
        let store = &self.store;
        let written =
            retry(self.retry, "write a maintenance window mark", || store.entities.record_window_mark(mark.clone()))
                .await;
        if let Err(given_up) = written {
            DeadPayload::WindowMark { mark }.give_up(&self.dead_letters, &given_up).await;
        }
    }

    /// Queues notifications (minus items already queued) for the outbox worker, each with its
    /// planned audit entries in the same transaction (one dead letter each when given up), and
    /// answers the audit entries still to write: those of notifications left out because their
    /// receiver account is gone, and planned entries too many to go with their message.
    async fn queue(&self, names: &mut Names, notifications: Vec<Notification>) -> Vec<AlarmAuditEntry> {
        let mut attempts = Attempts::new(self.retry);
        let Prepared { queued, planned, suppressed, planned_apart } = loop {
            match prepare(&self.store, names, notifications.clone(), &self.metrics).await {
                Ok(prepared) => break prepared,
                Err(error) => {
                    if let Some(given_up) = attempts.failed("prepare notifications", &error).await {
                        self.give_up_notifications(notifications.iter(), &given_up).await;
                        return Vec::new();
                    }
                }
            }
        };
        self.metrics.receivers_dropped.inc_by(suppressed.len() as u64);
        match retry(self.retry, "queue notifications", || self.enqueue(queued.clone())).await {
            Ok(added) => {
                self.metrics.queued.inc_by(added as u64);
                suppressed.into_iter().chain(planned_apart).collect()
            }
            Err(given_up) => {
                self.give_up_notifications(planned.iter(), &given_up).await;
                suppressed
            }
        }
    }

    /// Queues messages through the outbox worker's hand-off (handed to it once durable, and
    /// woken), or only stores them when no worker runs in this process.
    async fn enqueue(&self, queued: Vec<Queued>) -> Result<usize, OutboxError> {
        let entities = self.store.entities.as_ref();
        match &self.outbox {
            Some(handoff) => handoff.enqueue(entities, queued).await,
            None => enqueue(entities, queued).await,
        }
    }

    async fn give_up_notifications(&self, notifications: impl Iterator<Item = &Notification>, given_up: &GivenUp) {
        for n in notifications {
            DeadPayload::Notification(StoredNotification::from(n)).give_up(&self.dead_letters, given_up).await;
        }
    }

    /// Carries out a dead letter's copy once (no retries: the caller sees the error and the
    /// dead letter stays).
    async fn replay(&self, names: &mut Names, payload: DeadPayload) -> Result<(), ReplayError> {
        let failed = |e: &dyn std::fmt::Display| ReplayError::Failed(e.to_string());
        match payload {
            DeadPayload::AlarmRecord { change } => {
                let batch = EventBatch { alarm_changes: vec![change], ..EventBatch::default() };
                self.store.events.append(batch).await.map_err(|e| failed(&e))
            }
            DeadPayload::WindowMark { mark } => {
                let audit = vec![crate::audit::window_step(&mark)];
                self.store.entities.record_window_mark(mark).await.map_err(|e| failed(&e))?;
                self.write_audit(audit).await;
                Ok(())
            }
            DeadPayload::Notification(stored) => {
                let n = stored
                    .to_notification()
                    .ok_or_else(|| ReplayError::NotReplayable("a damaged notification copy".into()))?;
                let Prepared { queued, suppressed, planned_apart, .. } =
                    prepare(&self.store, names, vec![n], &self.metrics).await.map_err(|e| failed(&e))?;
                self.metrics.receivers_dropped.inc_by(suppressed.len() as u64);
                let added = self.enqueue(queued).await.map_err(|e| failed(&e))?;
                self.metrics.queued.inc_by(added as u64);
                self.write_audit(suppressed.into_iter().chain(planned_apart).collect()).await;
                Ok(())
            }
            DeadPayload::Incident { mut update } => {
                if update.site_name.is_empty() {
                    update.site_name = names.site(&self.store, update.site_id).await.map_err(|e| failed(&e))?;
                }
                self.store.entities.record_incident(update).await.map(drop).map_err(|e| failed(&e))
            }
            DeadPayload::Event(_) => Err(ReplayError::NotReplayable("events are replayed into the engine".into())),
        }
    }

    /// Writes notification audit entries, in store-sized chunks, with the same retries; entries
    /// still refused are counted (`fleetpulse_dead_letters_total{stage="alarm_effects",
    /// reason="audit_not_written"}`) and logged, not kept: the audit describes notifications,
    /// which are queued already.
    async fn write_audit(&self, entries: Vec<AlarmAuditEntry>) {
        for chunk in entries.chunks(MAX_AUDIT_BATCH) {
            let store = &self.store;
            let written = retry(self.retry, "write notification audit entries", || {
                store.entities.record_alarm_audit(chunk.to_vec())
            })
            .await;
            if let Err(given_up) = written {
                let labels = DeadLetterLabels { stage: "alarm_effects", reason: "audit_not_written" };
                self.dead_letters.metrics().total.get_or_create(&labels).inc_by(chunk.len() as u64);
                tracing::error!(message = "Notification audit entries not written.", entries = chunk.len(), detail = %given_up.reason.detail);
            }
        }
    }
}

/// `FLEETPULSE_PLANNED_AUDIT=apart` (read once): planned entries are written in a commit of
/// their own after their messages are queued, as before issue 20's joined write; only to
/// measure the two against each other in one binary.
fn planned_audit_apart() -> bool {
    static APART: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *APART.get_or_init(|| std::env::var("FLEETPULSE_PLANNED_AUDIT").is_ok_and(|v| v == "apart"))
}

/// What [`prepare`] makes of a batch.
struct Prepared {
    /// The messages to queue, each with its planned audit entries (unless in `planned_apart`).
    queued: Vec<Queued>,
    /// The notifications queued (for their dead letters if queueing is given up).
    planned: Vec<Notification>,
    /// The audit entries of notifications left out because their receiver account is gone.
    suppressed: Vec<AlarmAuditEntry>,
    /// Planned entries of a message carrying more than one store batch of them, written apart.
    planned_apart: Vec<AlarmAuditEntry>,
}

/// Leaves out items an earlier process queued, resolves receivers to addresses (leaving out
/// those of accounts deleted or frozen) and adds the names the email shows.
async fn prepare(
    store: &Store,
    names: &mut Names,
    mut notifications: Vec<Notification>,
    metrics: &AlarmMetrics,
) -> Result<Prepared, OutboxError> {
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
    // Also the planned entries' time: taken before queueing, since a message handed straight
    // to the outbox worker may be sent (and its audit entry timed) before queueing returns.
    let now = UnixMillis::now();
    let mut queued = Vec::with_capacity(notifications.len());
    let mut planned = Vec::with_capacity(notifications.len());
    let mut suppressed = Vec::new();
    let mut planned_apart = Vec::new();
    let mut receivers = BatchReceivers::default();
    for n in notifications {
        let to = receivers.resolve(store, &n.receiver).await?;
        let receiver = match &to {
            Resolved::To { address, .. } => address.clone(),
            Resolved::Gone(why) => {
                suppressed.extend(crate::audit::suppressed_receiver(&n, why, now));
                continue;
            }
        };
        let mut audit = crate::audit::planned(&n, &to, now);
        if audit.len() > MAX_AUDIT_BATCH || planned_audit_apart() {
            planned_apart.append(&mut audit);
        }
        let enterprise_name = names.enterprise(store, n.enterprise_id).await?;
        let mut labels = HashMap::new();
        for item in n.items.iter().take(MAX_ITEMS_PER_MESSAGE) {
            labels.insert(item.device_id, names.device(store, item.device_id).await?);
        }
        let site_name = match &n.incident {
            Some(i) => names.site(store, i.key.site_id).await?,
            None => String::new(),
        };
        queued.push(Queued {
            receiver,
            payload: outbox_payload(&n, &enterprise_name, &labels, &site_name),
            item_keys: n.items.iter().map(|i| i.key.to_string()).collect(),
            not_before: now,
            audit,
        });
        planned.push(n);
    }
    Ok(Prepared { queued, planned, suppressed, planned_apart })
}
