//! Prometheus metrics of the outbox worker (`fleetpulse_outbox_*` on `/metrics`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

/// The numbers of the outbox worker.
#[derive(Debug, Clone, Default)]
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
        m
    }
}
