//! The durable outbox worker (ALM-5): notifications are queued as formatted messages under their
//! idempotency key in the store's outbox, and this worker sends the due ones, recording every
//! attempt. A transient failure (4xx, connection) is retried with exponential backoff up to a
//! limit; a permanent one (5xx) is not retried. Rate limits per receiver and global (governor)
//! defer what is over the limit to a later pass instead of dropping it.
//!
//! Delivery is at least once: a crash between the SMTP server's acceptance and the `Sent` record
//! sends the message again after the restart (at most once more per crash), with the same
//! `Message-ID`, so receivers can tell.
//!
//! The running worker ([`OutboxWorker::run`], `dispatch.rs`) takes fresh messages straight from
//! whoever queued them ([`OutboxHandoff`]) and reads the store for the rest; outcomes are
//! group-committed by a recorder of their own while the next messages go out. A message is
//! *claimed* from the moment it is taken for sending until its outcome is recorded, and a claimed
//! message is never taken again, so one process sends a message at most once per attempt.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleetpulse_proto::UnixMillis;
use fleetpulse_store::{
    AlarmAuditEntry, AuditEvent, MAX_AUDIT_BATCH, MAX_OUTBOX_BATCH, MessageAuditEntry, NewOutboxMessage, OutboxAttempt,
    OutboxMessage, OutboxState, OutboxStore,
};
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use governor::clock::DefaultClock;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::Notify;

use crate::account_email::{AccountEmailPayload, StoredPayload, render_account};
use crate::audit::MessageAudit;
use crate::handoff::OutboxHandoff;
use crate::payload::OutboxPayload;
use crate::{MailError, Mailer, OutboxError, OutboxMetrics, RenderContext, render};

/// Outcomes are recorded in one transaction per this many sends (and at the end of a pass): a
/// crash after the SMTP server accepted a message and before its outcome is recorded sends it
/// once more after the restart, so this bounds how many such messages one crash can repeat.
const RECORD_EVERY: usize = 32;

/// Settings of the outbox worker.
#[derive(Debug, Clone)]
pub struct OutboxConfig {
    /// Messages taken per pass.
    pub batch: u32,
    /// Pause between passes when nothing is due.
    pub poll_interval: Duration,
    /// Delay before the first retry; doubles per attempt.
    pub backoff_base: Duration,
    /// Longest delay between retries.
    pub backoff_max: Duration,
    /// Attempts after which a transiently failing message is given up.
    pub max_attempts: u32,
    /// Messages per receiver per minute.
    pub per_receiver_per_minute: NonZeroU32,
    /// Messages per second over all receivers.
    pub global_per_second: NonZeroU32,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        let n = |v| NonZeroU32::new(v).expect("nonzero constant");
        OutboxConfig {
            batch: 500,
            poll_interval: Duration::from_secs(1),
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(15 * 60),
            max_attempts: 12,
            per_receiver_per_minute: n(10),
            global_per_second: n(50),
        }
    }
}

/// What one pass did (counts of outbox messages, except `emails` and `digests`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassStats {
    /// Accepted by the SMTP server.
    pub sent: u32,
    /// Emails accepted (a digest carries several messages).
    pub emails: u32,
    /// Digests among the emails.
    pub digests: u32,
    /// Failed transiently, retried later.
    pub retried: u32,
    /// Given up (permanent failure or too many attempts).
    pub failed: u32,
    /// Left for a later pass by a rate limit.
    pub deferred: u32,
}

impl PassStats {
    pub(crate) fn add(&mut self, other: PassStats) {
        self.sent += other.sent;
        self.emails += other.emails;
        self.digests += other.digests;
        self.deferred += other.deferred;
        self.retried += other.retried;
        self.failed += other.failed;
    }
}

/// The outcome of one attempt at a message and the message's entry in the notification audit
/// (sent, retried, given up; none for account emails or with the audit off): recorded in one
/// commit ([`OutboxStore::record_outbox_attempts_audited`]).
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub(crate) attempt: OutboxAttempt,
    pub(crate) audit: Option<MessageAuditEntry>,
}

impl Outcome {
    fn unaudited(attempt: OutboxAttempt) -> Outcome {
        Outcome { attempt, audit: None }
    }
}

/// Whether the sends' audit entries are written in their outcomes' commit (the default) or,
/// with `FLEETPULSE_SENT_AUDIT=apart`, in a commit of their own after it (as before; only to
/// measure the difference, `docs/PERFORMANCE.md`). Read once.
fn sent_audit_apart() -> bool {
    static APART: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *APART.get_or_init(|| std::env::var("FLEETPULSE_SENT_AUDIT").is_ok_and(|v| v == "apart"))
}

/// One notification to queue: its receiver and payload.
#[derive(Debug, Clone)]
pub struct Queued {
    /// Receiver address.
    pub receiver: String,
    /// What the email says.
    pub payload: OutboxPayload,
    /// Keys of every alarm item the notification is about (listed or omitted), recorded so that a
    /// later process can leave them out ([`OutboxStore::outbox_known_items`]).
    ///
    /// [`OutboxStore::outbox_known_items`]: fleetpulse_store::OutboxStore::outbox_known_items
    pub item_keys: Vec<String>,
    /// Earliest time of the first attempt.
    pub not_before: UnixMillis,
    /// The notification audit's entries of this message ("planned", one per alarm item),
    /// recorded in the transaction that queues it, and only if it is newly queued; at most
    /// [`fleetpulse_store::MAX_AUDIT_BATCH`] (the caller writes more on its own).
    pub audit: Vec<AlarmAuditEntry>,
}

/// Queues notifications in one transaction; returns how many were new (a key queued before is
/// left alone). [`OutboxHandoff::enqueue`] does the same and hands the new ones to the worker.
pub async fn enqueue(outbox: &dyn OutboxStore, queued: Vec<Queued>) -> Result<usize, OutboxError> {
    let mut added = 0;
    enqueue_returning(outbox, queued, |fresh| added += fresh.len()).await?;
    Ok(added)
}

/// Queues notifications, one transaction per store batch, and gives `fresh` the messages each
/// batch newly queued (as the store now holds them) once that batch is durable.
pub(crate) async fn enqueue_returning(
    outbox: &dyn OutboxStore,
    queued: Vec<Queued>,
    mut fresh: impl FnMut(Vec<OutboxMessage>),
) -> Result<(), OutboxError> {
    let now = UnixMillis::now();
    let mut queued = queued.into_iter().peekable();
    while queued.peek().is_some() {
        // One store batch: at most MAX_OUTBOX_BATCH messages and MAX_AUDIT_BATCH audit entries.
        let mut chunk = Vec::new();
        let mut audit = Vec::new();
        let mut entries = 0;
        while let Some(q) = queued.next_if(|q| {
            chunk.len() < MAX_OUTBOX_BATCH && (chunk.is_empty() || entries + q.audit.len() <= MAX_AUDIT_BATCH)
        }) {
            entries += q.audit.len();
            audit.push(q.audit);
            chunk.push(NewOutboxMessage {
                key: q.payload.key.clone(),
                enterprise_id: q.payload.enterprise_id,
                receiver: q.receiver,
                payload: q.payload.to_json(),
                item_keys: q.item_keys,
                not_before: q.not_before,
            });
        }
        let kept: Vec<OutboxMessage> = chunk
            .iter()
            .map(|m| OutboxMessage {
                id: 0,
                key: m.key.clone(),
                enterprise_id: m.enterprise_id,
                receiver: m.receiver.clone(),
                payload: m.payload.clone(),
                state: OutboxState::Pending,
                attempts: 0,
                next_attempt_at: m.not_before,
                last_error: None,
                created_at: now,
                sent_at: None,
            })
            .collect();
        let ids = outbox.enqueue_outbox_batch_audited(chunk, audit, now).await?;
        fresh(kept.into_iter().zip(ids).filter_map(|(m, id)| id.map(|id| OutboxMessage { id, ..m })).collect());
    }
    Ok(())
}

/// Sends due outbox messages.
#[derive(Debug)]
pub struct OutboxWorker {
    outbox: Arc<dyn OutboxStore>,
    mailer: Mailer,
    render: RenderContext,
    config: OutboxConfig,
    wake: Arc<Notify>,
    handoff: OutboxHandoff,
    pub(crate) metrics: OutboxMetrics,
    /// Receivers over their rate limit, until when (left out of the due query meanwhile).
    blocked: Mutex<HashMap<String, Instant>>,
    /// Outcomes of sent messages (with their audit entries) the store has not taken yet.
    unrecorded: Mutex<Vec<Outcome>>,
    /// Messages taken for sending whose outcome is not recorded yet: never taken again meanwhile.
    /// Bounded by what is in flight and what waits for the recorder (`dispatch.rs`).
    claimed: Mutex<HashSet<u64>>,
    /// Account emails settled in this pass, with their payloads without secrets: stored once
    /// their outcome is recorded.
    redactions: Mutex<Vec<(u64, String)>>,
    /// What became of each message, for the notification audit.
    audit: MessageAudit,
    per_receiver: DefaultKeyedRateLimiter<String>,
    global: DefaultDirectRateLimiter,
}

impl OutboxWorker {
    /// A worker sending through `mailer`, rendering with the portal's address `portal_url`.
    pub fn new(outbox: Arc<dyn OutboxStore>, mailer: Mailer, portal_url: &str, config: OutboxConfig) -> OutboxWorker {
        let wake = Arc::new(Notify::new());
        OutboxWorker {
            render: RenderContext { from: mailer.from_mailbox().clone(), portal_url: portal_url.to_owned() },
            handoff: OutboxHandoff::new(wake.clone()),
            wake,
            metrics: OutboxMetrics::default(),
            blocked: Mutex::new(HashMap::new()),
            unrecorded: Mutex::new(Vec::new()),
            claimed: Mutex::new(HashSet::new()),
            redactions: Mutex::new(Vec::new()),
            audit: MessageAudit::default(),
            per_receiver: RateLimiter::keyed(Quota::per_minute(config.per_receiver_per_minute)),
            global: RateLimiter::direct(Quota::per_second(config.global_per_second)),
            outbox,
            mailer,
            config,
        }
    }

    /// Counts what the worker does in `metrics` (registered by the caller).
    pub fn with_metrics(mut self, metrics: OutboxMetrics) -> OutboxWorker {
        self.metrics = metrics;
        self
    }

    /// Writes what becomes of each message into the notification audit (issue 18).
    pub fn with_audit(mut self, audit: Arc<dyn fleetpulse_store::NotificationAuditStore>) -> OutboxWorker {
        self.audit = MessageAudit::new(audit);
        self
    }

    /// Wakes the worker's loop at once (after new messages were queued) instead of at its next
    /// poll.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Queues notifications and hands the fresh ones straight to this worker once they are
    /// durable, so that they go out without a store read ([`OutboxHandoff::enqueue`]).
    pub fn handoff(&self) -> OutboxHandoff {
        self.handoff.clone()
    }

    pub(crate) fn hand_off_queue(&self) -> &OutboxHandoff {
        &self.handoff
    }

    pub(crate) fn config(&self) -> &OutboxConfig {
        &self.config
    }

    /// Emails in flight at once: one per connection the mailer may open.
    pub(crate) fn connections(&self) -> usize {
        self.mailer.connections()
    }

    pub(crate) fn wake_signal(&self) -> &Notify {
        &self.wake
    }

    /// The delay before the retry after `attempts` attempts.
    fn backoff(&self, attempts: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(20));
        self.config.backoff_base.saturating_mul(factor).min(self.config.backoff_max)
    }

    /// One pass over the messages due at `now`, read from the store; returns once their outcomes
    /// are recorded.
    ///
    /// The due messages of one receiver go out one by one while its rate limit allows all of them;
    /// otherwise, if it allows one more message, they go out together as one digest; otherwise
    /// they wait for a later pass. Nothing over a limit is dropped.
    pub async fn run_once(&self, now: UnixMillis) -> Result<PassStats, OutboxError> {
        let mut stats = PassStats::default();
        let unrecorded =
            std::mem::take(&mut *self.unrecorded.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        self.record(unrecorded).await?;
        let (due, _) = self.due_unclaimed(now).await?;
        let (emails, _) = self.plan(due, true, &mut stats);
        let mut outcomes = Vec::new();
        let mut emails = emails.into_iter();
        let mut in_flight = FuturesUnordered::new();
        loop {
            while in_flight.len() < self.mailer.connections() {
                let Some((receiver, messages)) = emails.next() else { break };
                in_flight.push(self.send(now, receiver, messages));
            }
            let Some((sent, attempts)) = in_flight.next().await else { break };
            stats.add(sent);
            outcomes.extend(attempts);
            if outcomes.len() >= RECORD_EVERY {
                self.record(std::mem::take(&mut outcomes)).await?;
            }
        }
        self.record(outcomes).await?;
        self.audit.flush().await;
        Ok(stats)
    }

    /// The pending messages due at `now` that are not claimed, oldest first, leaving out the
    /// receivers over their limit; and whether the store answered a full batch (more may be due).
    pub(crate) async fn due_unclaimed(&self, now: UnixMillis) -> Result<(Vec<OutboxMessage>, bool), OutboxError> {
        // Receivers over their limit are left out of the query, so that a receiver with a large
        // backlog does not fill every batch and starve the others.
        let except: Vec<String> = {
            let mut blocked = self.blocked.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let instant = Instant::now();
            blocked.retain(|_, until| *until > instant);
            blocked.keys().take(fleetpulse_store::MAX_OUTBOX_EXCEPT).cloned().collect()
        };
        // Claimed when the read starts: one released while it runs (its outcome committed after
        // the read's snapshot) may still come back as pending, and must not be taken again.
        let before = self.claimed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let mut due = self.outbox.due_outbox_except(now, self.config.batch, &except).await?;
        let full = due.len() >= self.config.batch as usize;
        let claimed = self.claimed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        due.retain(|m| !claimed.contains(&m.id) && !before.contains(&m.id));
        Ok((due, full))
    }

    /// Whether a message is claimed (taken for sending, its outcome not recorded yet).
    pub(crate) fn is_claimed(&self, id: u64) -> bool {
        self.claimed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(&id)
    }

    /// Decides what of `due` goes out now under the rate limits, as emails (receiver, messages),
    /// and claims their messages.
    ///
    /// With `digests` (a store pass), a receiver's messages go out one by one while its limit
    /// allows all of them, else together as one digest if it allows one more, else they wait.
    /// Without (fresh messages from the hand-off), only messages that go out one by one are
    /// taken; a receiver whose messages do not all fit is left alone and `true` returned: a
    /// store pass should decide for it (with what it already has waiting) at once.
    pub(crate) fn plan(
        &self,
        due: Vec<OutboxMessage>,
        digests: bool,
        stats: &mut PassStats,
    ) -> (Vec<(String, Vec<OutboxMessage>)>, bool) {
        let now = UnixMillis::now();
        let mut emails: Vec<(String, Vec<OutboxMessage>)> = Vec::new();
        let mut needs_store_pass = false;
        for (receiver, messages) in by_receiver(due) {
            let is_blocked = !digests && {
                let blocked = self.blocked.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                blocked.get(&receiver).is_some_and(|until| *until > Instant::now())
            };
            if is_blocked {
                stats.deferred += u32::try_from(messages.len()).unwrap_or(u32::MAX);
                self.audit.note(&messages, now, AuditEvent::Deferred, "the receiver's rate limit: the next digest");
                continue;
            }
            let n = u32::try_from(messages.len()).ok().and_then(NonZeroU32::new);
            let all_fit = n.is_some_and(|n| matches!(self.per_receiver.check_key_n(&receiver, n), Ok(Ok(()))));
            if all_fit {
                for m in messages {
                    if self.global.check().is_err() {
                        stats.deferred += 1;
                        self.audit.note([&m], now, AuditEvent::Deferred, "the global rate limit: a later pass");
                        continue;
                    }
                    emails.push((receiver.clone(), vec![m]));
                }
                continue;
            }
            if !digests {
                needs_store_pass = true;
                continue;
            }
            match self.per_receiver.check_key(&receiver) {
                Ok(()) if self.global.check().is_ok() => {
                    stats.digests += u32::from(messages.len() > 1);
                    emails.push((receiver, messages));
                    continue;
                }
                Ok(()) => {}
                Err(not_until) => {
                    let wait = not_until.wait_time_from(governor::clock::Clock::now(&DefaultClock::default()));
                    let mut blocked = self.blocked.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    blocked.insert(receiver, Instant::now() + wait);
                }
            }
            stats.deferred += u32::try_from(messages.len()).unwrap_or(u32::MAX);
            self.audit.note(&messages, now, AuditEvent::Deferred, "the receiver's rate limit: the next digest");
        }
        let picked_up = UnixMillis::now();
        let mut claimed = self.claimed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for m in emails.iter().flat_map(|(_, messages)| messages) {
            claimed.insert(m.id);
            if m.attempts == 0 {
                self.metrics.pickup_seconds.observe(seconds_between(m.created_at, picked_up));
            }
        }
        (emails, needs_store_pass)
    }

    /// Gives up the claim on messages taken but not sent (the worker is stopping); they stay
    /// pending in the store.
    pub(crate) fn unclaim(&self, messages: &[OutboxMessage]) {
        let mut claimed = self.claimed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for m in messages {
            claimed.remove(&m.id);
        }
    }

    /// Removes the secrets from the payloads of the account emails among `recorded` (their
    /// outcomes are recorded by now; a message still pending is left alone by the store).
    async fn redact(&self, recorded: &HashSet<u64>) {
        let redactions: Vec<(u64, String)> = {
            let mut all = self.redactions.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if all.is_empty() {
                return;
            }
            let (now, later) = std::mem::take(&mut *all).into_iter().partition(|(id, _)| recorded.contains(id));
            *all = later;
            now
        };
        for (id, payload) in redactions {
            match self.outbox.redact_outbox_payload(id, payload).await {
                Ok(true) => {}
                Ok(false) => tracing::debug!(message = "Account email still pending; not redacted.", id),
                Err(error) => tracing::warn!(message = "Account email not redacted.", id, %error),
            }
        }
    }

    /// Renders `messages` as one email to `receiver`, sends it and records the outcome on each.
    pub(crate) async fn send(
        &self,
        now: UnixMillis,
        receiver: String,
        messages: Vec<OutboxMessage>,
    ) -> (PassStats, Vec<Outcome>) {
        let receiver = receiver.as_str();
        let mut stats = PassStats::default();
        let mut outcomes = Vec::with_capacity(messages.len());
        // A payload that cannot be read is given up alone; the others still go out. Account
        // emails go out one by one, never in a digest.
        let mut payloads = Vec::with_capacity(messages.len());
        let mut readable = Vec::with_capacity(messages.len());
        let mut accounts = Vec::new();
        for m in messages {
            match StoredPayload::from_json(&m.payload) {
                Ok(StoredPayload::Alarm(p)) => {
                    payloads.push(p);
                    readable.push(m);
                }
                Ok(StoredPayload::Account(p)) => accounts.push((m, p)),
                Err(e) => {
                    stats.failed += 1;
                    tracing::error!(message = "Notification given up: unreadable payload.", id = m.id, error = %e);
                    let error = Some(e.to_string());
                    outcomes.push(Outcome::unaudited(OutboxAttempt {
                        id: m.id,
                        outcome: OutboxState::Failed,
                        at: now,
                        next_attempt_at: now,
                        error,
                    }));
                }
            }
        }
        // Of several account emails of one kind, only the newest goes out: it replaced the
        // others (a new reset link or login code voids the earlier ones), and a flood of requests
        // cannot turn into a flood of emails once the receiver's rate limit holds them together.
        let (accounts, superseded) = newest_per_kind(accounts);
        let mut redactions: Vec<(u64, String)> = accounts
            .iter()
            .map(|(m, p)| (m.id, p.redacted().to_json()))
            .chain(superseded.iter().map(|(m, p)| (m.id, p.redacted().to_json())))
            .collect();
        self.redactions.lock().unwrap_or_else(std::sync::PoisonError::into_inner).append(&mut redactions);
        for (m, _) in superseded {
            tracing::debug!(message = "Account email superseded by a newer one; not sent.", id = m.id);
            outcomes.push(Outcome::unaudited(OutboxAttempt {
                id: m.id,
                outcome: OutboxState::Failed,
                at: now,
                next_attempt_at: now,
                error: Some("superseded by a newer account email of the same kind".into()),
            }));
        }
        for (m, p) in accounts {
            let result = match render_account(receiver, &p, &self.render) {
                Ok(message) => self.send_email(message, std::slice::from_ref(&m)).await,
                Err(e) => Err(MailError::Permanent(format!("cannot render: {e}"))),
            };
            outcomes.extend(self.settle(now, receiver, result, vec![m], Vec::new(), &mut stats));
        }
        if readable.is_empty() {
            return (stats, outcomes);
        }
        let (result, sent) = match render(receiver, &payloads, &self.render) {
            Ok(message) => {
                let id = message.headers().get_raw("Message-ID").map(str::to_owned);
                let (result, reply) = self.send_email_replied(message, &readable).await;
                (result, format!("{}; Message-ID {}", reply.unwrap_or_default(), id.unwrap_or_default()))
            }
            Err(e) => (Err(MailError::Permanent(format!("cannot render: {e}"))), String::new()),
        };
        // Timed at the outcome: a fresh message's send may start in the millisecond it was
        // planned, and the audit lists entries in time order.
        let audit = self.audit_outcome(UnixMillis::now(), &result, &readable, &sent);
        outcomes.extend(self.settle(now, receiver, result, readable, audit, &mut stats));
        (stats, outcomes)
    }

    /// The audit entries of what the attempt did to alarm `messages`, one per message in their
    /// order (before the outcome is settled: the attempt count is the one before it).
    fn audit_outcome(
        &self,
        now: UnixMillis,
        result: &Result<(), MailError>,
        messages: &[OutboxMessage],
        sent: &str,
    ) -> Vec<MessageAuditEntry> {
        let attempts = messages.iter().map(|m| m.attempts).max().unwrap_or(0);
        let digest = if messages.len() > 1 {
            format!(" (one digest of {} notifications)", messages.len())
        } else {
            String::new()
        };
        match result {
            Ok(()) => self.audit.entries(messages, now, AuditEvent::Sent, &format!("accepted: {sent}{digest}")),
            Err(MailError::Transient(e)) if attempts + 1 < self.config.max_attempts => {
                self.audit.entries(messages, now, AuditEvent::Retried, &format!("attempt {}: {e}", attempts + 1))
            }
            Err(e) => self.audit.entries(messages, now, AuditEvent::Failed, &format!("attempt {}: {e}", attempts + 1)),
        }
    }

    /// Writes the audit entries held (deferrals, and whatever a commit of outcomes could not
    /// take) in commits of their own.
    pub(crate) async fn flush_audit(&self) {
        self.audit.flush().await;
    }

    /// Sends one email carrying `messages`, observing the SMTP stages.
    async fn send_email(&self, message: lettre::Message, messages: &[OutboxMessage]) -> Result<(), MailError> {
        self.send_email_replied(message, messages).await.0
    }

    /// [`OutboxWorker::send_email`], with the relay's reply when it accepted the email.
    async fn send_email_replied(
        &self,
        message: lettre::Message,
        messages: &[OutboxMessage],
    ) -> (Result<(), MailError>, Option<String>) {
        let (result, timings) = self.mailer.send_timed(message).await;
        let m = &self.metrics;
        m.smtp_checkout_seconds.observe(timings.checkout.as_secs_f64());
        if !timings.reused {
            m.smtp_connections_opened.inc();
        }
        if result.is_ok() {
            m.smtp_data_seconds.observe(timings.data.as_secs_f64());
            let accepted = UnixMillis::now();
            for msg in messages.iter().filter(|msg| msg.attempts == 0) {
                m.queued_to_accepted_seconds.observe(seconds_between(msg.created_at, accepted));
            }
        }
        (result, timings.reply)
    }

    /// The outcome of sending `messages` as one email: sent, retried later with backoff
    /// (transient failure, attempts left) or given up; each with its entry of `audit` (in the
    /// messages' order, or none).
    fn settle(
        &self,
        now: UnixMillis,
        receiver: &str,
        result: Result<(), MailError>,
        messages: Vec<OutboxMessage>,
        audit: Vec<MessageAuditEntry>,
        stats: &mut PassStats,
    ) -> Vec<Outcome> {
        let attempts = messages.iter().map(|m| m.attempts).max().unwrap_or(0);
        let count = u32::try_from(messages.len()).unwrap_or(u32::MAX);
        let (outcome, next, error) = match result {
            Ok(()) => {
                if fault_abort_after_accept() {
                    tracing::error!(message = "Injected fault: aborting after the SMTP server accepted a message.");
                    std::process::abort();
                }
                stats.sent += count;
                stats.emails += 1;
                (OutboxState::Sent, now, None)
            }
            Err(MailError::Transient(e)) if attempts + 1 < self.config.max_attempts => {
                stats.retried += count;
                let delay = i64::try_from(self.backoff(attempts + 1).as_millis()).unwrap_or(i64::MAX);
                tracing::warn!(message = "Notification not sent; retrying.", receiver, messages = count, error = %e, delay_ms = delay);
                (OutboxState::Pending, UnixMillis(now.0.saturating_add(delay)), Some(e))
            }
            Err(e) => {
                stats.failed += count;
                tracing::error!(message = "Notification given up.", receiver, messages = count, error = %e);
                (OutboxState::Failed, now, Some(e.to_string()))
            }
        };
        let mut audit = audit.into_iter();
        messages
            .into_iter()
            .map(|m| Outcome {
                attempt: OutboxAttempt { id: m.id, outcome, at: now, next_attempt_at: next, error: error.clone() },
                audit: audit.next(),
            })
            .collect()
    }

    /// Records outcomes in store-sized chunks, each chunk with its audit entries (and the
    /// deferrals held, as far as the store batch takes them) in one commit; then releases their
    /// messages' claims and redacts the account emails among them. What fails stays in
    /// `unrecorded` (and claimed) with its entries and is recorded before anything else, so a
    /// store outage cannot make the worker send a message again and again, and a commit tried
    /// again writes each entry once.
    pub(crate) async fn record(&self, mut outcomes: Vec<Outcome>) -> Result<(), OutboxError> {
        let apart = sent_audit_apart();
        while !outcomes.is_empty() {
            let rest = outcomes.split_off(outcomes.len().min(MAX_OUTBOX_BATCH));
            let chunk = std::mem::replace(&mut outcomes, rest);
            let attempts: Vec<OutboxAttempt> = chunk.iter().map(|o| o.attempt.clone()).collect();
            let entries = chunk.iter().filter_map(|o| o.audit.clone());
            let started = Instant::now();
            let (recorded, deferrals) = if apart {
                (self.outbox.record_outbox_attempts(attempts).await, Vec::new())
            } else {
                // At most MAX_OUTBOX_BATCH entries of sends: the deferrals fill the rest.
                let deferrals = self.audit.take(MAX_AUDIT_BATCH.saturating_sub(chunk.len()));
                let audit: Vec<MessageAuditEntry> = deferrals.iter().cloned().chain(entries.clone()).collect();
                (self.outbox.record_outbox_attempts_audited(attempts, audit).await, deferrals)
            };
            self.metrics.record_seconds.observe(started.elapsed().as_secs_f64());
            if let Err(error) = recorded {
                self.audit.restore(deferrals);
                let mut unrecorded = self.unrecorded.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                unrecorded.extend(chunk);
                unrecorded.extend(outcomes);
                return Err(error.into());
            }
            if apart {
                // Written by the next flush, after this commit (a commit of their own).
                self.audit.push(entries.collect());
            }
            let ids: HashSet<u64> = chunk.iter().map(|o| o.attempt.id).collect();
            self.claimed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).retain(|id| !ids.contains(id));
            self.redact(&ids).await;
        }
        Ok(())
    }

    /// Takes the outcomes a failed [`OutboxWorker::record`] left, to try again.
    pub(crate) fn take_unrecorded(&self) -> Vec<Outcome> {
        std::mem::take(&mut *self.unrecorded.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Counts what was sent, retried, given up or deferred in the metrics.
    pub(crate) fn count(&self, stats: PassStats) {
        let m = &self.metrics;
        m.emails_sent.inc_by(u64::from(stats.emails));
        m.messages_sent.inc_by(u64::from(stats.sent));
        m.digests_sent.inc_by(u64::from(stats.digests));
        m.deferred.inc_by(u64::from(stats.deferred));
        m.retried.inc_by(u64::from(stats.retried));
        m.failed.inc_by(u64::from(stats.failed));
    }

    /// Sends until `stop` turns true: fresh messages from the hand-off as they come, the store's
    /// due messages at start, every poll interval and whenever the hand-off cannot carry the
    /// work alone; outcomes group-committed alongside (`dispatch.rs`). Store failures are logged
    /// and retried.
    pub async fn run(self, stop: tokio::sync::watch::Receiver<bool>) {
        crate::dispatch::run(&self, stop).await;
    }
}

/// Fault injection for the crash test (ALM-5): with `FLEETPULSE_FAULT=abort-after-smtp-accept`
/// the process aborts right after the SMTP server accepted a message and before it is marked
/// sent: the worst moment to crash. Read once.
fn fault_abort_after_accept() -> bool {
    static FAULT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FAULT.get_or_init(|| std::env::var("FLEETPULSE_FAULT").is_ok_and(|v| v == "abort-after-smtp-accept"))
}

/// Seconds from `from` to `to` (0 if the clock went back).
fn seconds_between(from: UnixMillis, to: UnixMillis) -> f64 {
    // Millisecond precision; exact as f64 far beyond any age an outbox message reaches.
    #[allow(clippy::cast_precision_loss)]
    let ms = to.0.saturating_sub(from.0).max(0) as f64;
    ms / 1_000.0
}

/// An account email due in the outbox, with its parsed payload.
type AccountMessage = (OutboxMessage, AccountEmailPayload);

/// The newest account email (highest id) of each kind, and the older ones it supersedes.
fn newest_per_kind(accounts: Vec<AccountMessage>) -> (Vec<AccountMessage>, Vec<AccountMessage>) {
    let mut newest: Vec<AccountMessage> = Vec::new();
    let mut superseded = Vec::new();
    for (m, p) in accounts {
        let kind = std::mem::discriminant(&p.email);
        match newest.iter_mut().find(|(_, q)| std::mem::discriminant(&q.email) == kind) {
            Some(slot) if slot.0.id < m.id => superseded.push(std::mem::replace(slot, (m, p))),
            Some(_) => superseded.push((m, p)),
            None => newest.push((m, p)),
        }
    }
    (newest, superseded)
}

/// The messages grouped by receiver, in the order of each receiver's oldest message.
fn by_receiver(messages: Vec<OutboxMessage>) -> Vec<(String, Vec<OutboxMessage>)> {
    let mut groups: Vec<(String, Vec<OutboxMessage>)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for m in messages {
        match index.get(&m.receiver) {
            Some(&i) => groups[i].1.push(m),
            None => {
                index.insert(m.receiver.clone(), groups.len());
                groups.push((m.receiver.clone(), vec![m]));
            }
        }
    }
    groups
}
