//! Prometheus metrics of the alarm service (`fleetpulse_alarm_*` on `/metrics`), among them its
//! two stages of the alarm → inbox path (issue 20): received → evaluated, evaluated → queued.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The numbers of the alarm engine's shell.
#[derive(Debug, Clone)]
pub struct AlarmMetrics {
    /// Device events evaluated.
    pub events: Counter,
    /// Active alarms taken over from the store at start.
    pub restored: Counter,
    /// Notifications queued in the outbox.
    pub queued: Counter,
    /// Notification items left out because an earlier process had queued them.
    pub known_items_skipped: Counter,
    /// Active alarms in the engine.
    pub active_alarms: Gauge,
    /// Open notification groups.
    pub open_groups: Gauge,
    /// Scheduled reminders.
    pub scheduled_reminders: Gauge,
    /// Device-metric threshold windows.
    pub threshold_states: Gauge,
    /// Stage: an event's receipt by the server (its `at`) until the engine evaluated it; covers
    /// the shard's durable append and the queue to the engine.
    pub received_to_engine_seconds: Histogram,
    /// Stage: the engine's decision to notify until the notification's outbox row is committed.
    pub engine_to_outbox_seconds: Histogram,
}

impl Default for AlarmMetrics {
    fn default() -> Self {
        let stage = || Histogram::new(exponential_buckets(0.0001, 2.0, 18));
        AlarmMetrics {
            events: Counter::default(),
            restored: Counter::default(),
            queued: Counter::default(),
            known_items_skipped: Counter::default(),
            active_alarms: Gauge::default(),
            open_groups: Gauge::default(),
            scheduled_reminders: Gauge::default(),
            threshold_states: Gauge::default(),
            received_to_engine_seconds: stage(),
            engine_to_outbox_seconds: stage(),
        }
    }
}

impl AlarmMetrics {
    /// Creates the metrics and registers them.
    pub fn register(registry: &mut Registry) -> AlarmMetrics {
        let m = AlarmMetrics::default();
        let r = registry.sub_registry_with_prefix("fleetpulse_alarm");
        r.register("events", "Device events evaluated by the alarm engine", m.events.clone());
        r.register("restored", "Active alarms taken over from the store at start", m.restored.clone());
        r.register("notifications_queued", "Notifications queued in the outbox", m.queued.clone());
        r.register(
            "known_items_skipped",
            "Notification items left out because they were queued before a restart",
            m.known_items_skipped.clone(),
        );
        r.register("active", "Active alarms in the engine", m.active_alarms.clone());
        r.register("open_groups", "Open notification groups", m.open_groups.clone());
        r.register("scheduled_reminders", "Scheduled reminders", m.scheduled_reminders.clone());
        r.register("threshold_states", "Device-metric threshold windows", m.threshold_states.clone());
        r.register(
            "received_to_engine_seconds",
            "Stage: device event received (then made durable) until the engine evaluated it",
            m.received_to_engine_seconds.clone(),
        );
        r.register(
            "engine_to_outbox_seconds",
            "Stage: the engine decided to notify until the outbox row was committed",
            m.engine_to_outbox_seconds.clone(),
        );
        m
    }
}
