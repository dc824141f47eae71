//! Prometheus metrics of the outbox worker (`fleetpulse_outbox_*` on `/metrics`), among them the
//! mailer's stages of the alarm → inbox path (issue 20): queued → picked up → SMTP connection
//! (new or reused) → data accepted, and the group commit of the outcomes.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Buckets of every stage histogram: 100 µs to ≈ 13 s, doubling (as the ingest's append).
pub fn stage_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

/// The numbers of the outbox worker.
#[derive(Debug, Clone)]
pub struct OutboxMetrics {
    /// Emails the SMTP server accepted.
    pub emails_sent: Counter,
    /// Outbox messages sent (a digest carries several).
    pub messages_sent: Counter,
    /// Digests sent.
    pub digests_sent: Counter,
    /// Messages left for a later pass by a rate limit.
    pub deferred: Counter,
    /// Messages that failed transiently and are retried.
    pub retried: Counter,
    /// Messages given up (permanent failure or too many attempts).
    pub failed: Counter,
    /// Stage: a message's first attempt picked up by a pass, seconds after it was queued.
    pub pickup_seconds: Histogram,
    /// Stage: a fresh message taken from the hand-off, seconds after it was handed over (its
    /// outbox row durable). Unlike [`OutboxMetrics::pickup_seconds`], which starts when the row
    /// was made (before its commit), this leaves out the commit the alarm service times.
    pub handoff_wait_seconds: Histogram,
    /// Stage: waiting for an SMTP connection (a pooled one, or a new one connected).
    pub smtp_checkout_seconds: Histogram,
    /// SMTP connections opened (the rest of the sends reused one).
    pub smtp_connections_opened: Counter,
    /// Stage: `MAIL FROM` until the relay accepted the data.
    pub smtp_data_seconds: Histogram,
    /// Stage: recording a group of outcomes in one transaction.
    pub record_seconds: Histogram,
    /// A message's first attempt accepted by the relay, seconds after it was queued (the
    /// mailer's stages together).
    pub queued_to_accepted_seconds: Histogram,
    /// A finished send waiting for room in the recorder's queue (the dispatcher takes no new
    /// work meanwhile), per send.
    pub outcome_queue_wait_seconds: Histogram,
    /// One store read of due messages by the running worker (its count says how often the
    /// hand-off could not carry the work alone, beside the reads every poll interval).
    pub store_read_seconds: Histogram,
    /// Fresh messages taken from the hand-off (no store read).
    pub handed_off: Counter,
    /// Fresh messages the full hand-off could not carry (the store read found them).
    pub handoff_overflowed: Counter,
}

impl Default for OutboxMetrics {
    fn default() -> Self {
        OutboxMetrics {
            emails_sent: Counter::default(),
            messages_sent: Counter::default(),
            digests_sent: Counter::default(),
            deferred: Counter::default(),
            retried: Counter::default(),
            failed: Counter::default(),
            pickup_seconds: stage_histogram(),
            handoff_wait_seconds: stage_histogram(),
            smtp_checkout_seconds: stage_histogram(),
            smtp_connections_opened: Counter::default(),
            smtp_data_seconds: stage_histogram(),
            record_seconds: stage_histogram(),
            queued_to_accepted_seconds: stage_histogram(),
            outcome_queue_wait_seconds: stage_histogram(),
            store_read_seconds: stage_histogram(),
            handed_off: Counter::default(),
            handoff_overflowed: Counter::default(),
        }
    }
}

impl OutboxMetrics {
    /// Creates the metrics and registers them. They are registered whether or not a worker runs
    /// (without SMTP they stay at zero).
    pub fn register(registry: &mut Registry) -> OutboxMetrics {
        let m = OutboxMetrics::default();
        let r = registry.sub_registry_with_prefix("fleetpulse_outbox");
        r.register("emails_sent", "Emails accepted by the SMTP server", m.emails_sent.clone());
        r.register("messages_sent", "Outbox messages sent (a digest carries several)", m.messages_sent.clone());
        r.register("digests_sent", "Digests of rate-limited messages sent", m.digests_sent.clone());
        r.register("deferred", "Messages left for a later pass by a rate limit", m.deferred.clone());
        r.register("retried", "Messages that failed transiently and are retried", m.retried.clone());
        r.register("failed", "Messages given up", m.failed.clone());
        r.register(
            "pickup_seconds",
            "Stage: outbox message queued until a pass picked up its first attempt",
            m.pickup_seconds.clone(),
        );
        r.register(
            "handoff_wait_seconds",
            "Stage: a fresh outbox message durable until the worker took it from the hand-off",
            m.handoff_wait_seconds.clone(),
        );
        r.register(
            "smtp_checkout_seconds",
            "Stage: waiting for an SMTP connection (pooled or newly connected)",
            m.smtp_checkout_seconds.clone(),
        );
        r.register("smtp_connections_opened", "SMTP connections opened", m.smtp_connections_opened.clone());
        r.register(
            "smtp_data_seconds",
            "Stage: MAIL FROM until the relay accepted the data",
            m.smtp_data_seconds.clone(),
        );
        r.register("record_seconds", "Stage: one group commit of send outcomes", m.record_seconds.clone());
        r.register(
            "queued_to_accepted_seconds",
            "Outbox message queued until the relay accepted its first attempt",
            m.queued_to_accepted_seconds.clone(),
        );
        r.register(
            "outcome_queue_wait_seconds",
            "A finished send waiting for room in the recorder's queue (the dispatcher stalls meanwhile)",
            m.outcome_queue_wait_seconds.clone(),
        );
        r.register(
            "store_read_seconds",
            "One store read of due messages by the running worker",
            m.store_read_seconds.clone(),
        );
        r.register("handed_off", "Fresh messages taken from the hand-off, without a store read", m.handed_off.clone());
        r.register(
            "handoff_overflowed",
            "Fresh messages the full hand-off could not carry (read from the store instead)",
            m.handoff_overflowed.clone(),
        );
        m
    }
}
