//! Prometheus metrics of the ingest tier (OPS-2): every stage counts what it received, applied,
//! acknowledged and dropped.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A label with one `reason` value.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why.
    pub reason: &'static str,
}

/// A label with one `kind` value.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// Message kind.
    pub kind: &'static str,
}

/// A label with one `scope` value.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScopeLabel {
    /// `device` or `enterprise`.
    pub scope: &'static str,
}

/// A label with one `status` value.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    /// `accepted`, `running`, `succeeded` or `failed`.
    pub status: &'static str,
}

/// Every ingest metric. Cheap to clone (handles to shared atomics).
#[derive(Clone, Debug)]
pub struct IngestMetrics {
    /// Open device connections.
    pub connections_open: Gauge,
    /// Connections accepted (TLS handshake done).
    pub connections_accepted: Counter,
    /// Sessions authenticated (Welcome sent).
    pub sessions_started: Counter,
    /// Connections closed for a bad credential.
    pub auth_failures: Counter,
    /// Connections closed for a protocol error, by reason.
    pub connection_errors: Family<ReasonLabel, Counter>,
    /// Frames received, by message kind.
    pub frames_received: Family<KindLabel, Counter>,
    /// Frames dropped as duplicates of an applied (device, seq).
    pub duplicate_frames: Counter,
    /// Frames whose content was invalid (acknowledged, not stored), by reason.
    pub rejected_frames: Family<ReasonLabel, Counter>,
    /// Times a device or enterprise had to wait for its rate limit.
    pub rate_limited: Family<ScopeLabel, Counter>,
    /// Frames waiting in shard queues.
    pub shard_queue_depth: Gauge,
    /// Batches appended to the store.
    pub store_batches: Counter,
    /// Rows appended to the store.
    pub store_rows: Counter,
    /// Failed appends (the frames are not acknowledged; the device resends).
    pub store_errors: Counter,
    /// Seconds from a batch's submission to its durable commit.
    pub store_append_seconds: Histogram,
    /// Cumulative acknowledgements sent.
    pub acks_sent: Counter,
    /// Devices that went offline (missed heartbeats).
    pub offline_transitions: Counter,
    /// Devices online.
    pub devices_online: Gauge,
    /// Event batches handed to the alarm engine.
    pub alarm_event_batches: Counter,
    /// Times a shard waited because the alarm engine's queue was full.
    pub alarm_queue_full: Counter,
    /// Times a shard waited because the device snapshot writer's queue was full.
    pub snapshot_queue_full: Counter,
    /// Device snapshot updates written to the store.
    pub snapshot_updates: Counter,
    /// Failed device snapshot writes (kept and retried).
    pub snapshot_write_errors: Counter,
    /// Commands handed to a session's writer (ING-8).
    pub commands_sent: Counter,
    /// Device answers to commands recorded, by status.
    pub command_answers: Family<StatusLabel, Counter>,
    /// Device answers naming an unknown command or another device's (rejected).
    pub command_answers_unknown: Counter,
    /// Commands expired at their deadline.
    pub commands_expired: Counter,
    /// Failed expiry rounds (tried again at the next tick).
    pub command_expiry_errors: Counter,
    /// Uploaded files stored.
    pub files_stored: Counter,
    /// Bytes of uploaded files stored.
    pub file_bytes_stored: Counter,
    /// File uploads refused (nothing stored), by reason.
    pub files_refused: Family<ReasonLabel, Counter>,
    /// HTTPS ingest requests answered, by outcome (`ok`, `unauthorized`, `too_large`, ...).
    pub https_requests: Family<ReasonLabel, Counter>,
    /// Relay link exchanges (QUIC, ALPN `fleetpulse-relay/1`) answered, by outcome (`ok`,
    /// `retry`, `malformed`, and the HTTPS refusal reasons).
    pub relay_link_requests: Family<ReasonLabel, Counter>,
    /// Events given up (`fleetpulse_dead_letters_*`): not registered here, the caller registers
    /// one [`fleetpulse_store::DeadLetterMetrics`] for the process and sets it (issue 18 item 5).
    pub dead_letters: fleetpulse_store::DeadLetterMetrics,
}

impl IngestMetrics {
    /// Creates the metrics and registers them under the `fleetpulse_ingest` prefix.
    pub fn register(registry: &mut Registry) -> IngestMetrics {
        let m = IngestMetrics {
            connections_open: Gauge::default(),
            connections_accepted: Counter::default(),
            sessions_started: Counter::default(),
            auth_failures: Counter::default(),
            connection_errors: Family::default(),
            frames_received: Family::default(),
            duplicate_frames: Counter::default(),
            rejected_frames: Family::default(),
            rate_limited: Family::default(),
            shard_queue_depth: Gauge::default(),
            store_batches: Counter::default(),
            store_rows: Counter::default(),
            store_errors: Counter::default(),
            store_append_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 18)),
            acks_sent: Counter::default(),
            offline_transitions: Counter::default(),
            devices_online: Gauge::default(),
            alarm_event_batches: Counter::default(),
            alarm_queue_full: Counter::default(),
            snapshot_queue_full: Counter::default(),
            snapshot_updates: Counter::default(),
            snapshot_write_errors: Counter::default(),
            commands_sent: Counter::default(),
            command_answers: Family::default(),
            command_answers_unknown: Counter::default(),
            commands_expired: Counter::default(),
            command_expiry_errors: Counter::default(),
            files_stored: Counter::default(),
            file_bytes_stored: Counter::default(),
            files_refused: Family::default(),
            https_requests: Family::default(),
            relay_link_requests: Family::default(),
            dead_letters: fleetpulse_store::DeadLetterMetrics::default(),
        };
        let r = registry.sub_registry_with_prefix("fleetpulse_ingest");
        r.register("connections_open", "Open device connections", m.connections_open.clone());
        r.register("connections_accepted", "Device connections accepted", m.connections_accepted.clone());
        r.register("sessions_started", "Device sessions authenticated", m.sessions_started.clone());
        r.register("auth_failures", "Connections closed for a bad provisioning credential", m.auth_failures.clone());
        r.register("connection_errors", "Connections closed for a protocol error", m.connection_errors.clone());
        r.register("frames_received", "Frames received by message kind", m.frames_received.clone());
        r.register("duplicate_frames", "Frames dropped as duplicates", m.duplicate_frames.clone());
        r.register(
            "rejected_frames",
            "Frames with invalid content, acknowledged and not stored",
            m.rejected_frames.clone(),
        );
        r.register("rate_limited", "Waits imposed by rate limits", m.rate_limited.clone());
        r.register("shard_queue_depth", "Frames waiting in shard queues", m.shard_queue_depth.clone());
        r.register("store_batches", "Batches appended to the store", m.store_batches.clone());
        r.register("store_rows", "Rows appended to the store", m.store_rows.clone());
        r.register("store_errors", "Failed appends to the store", m.store_errors.clone());
        r.register("store_append_seconds", "Append latency until durable", m.store_append_seconds.clone());
        r.register("acks_sent", "Cumulative acknowledgements sent", m.acks_sent.clone());
        r.register("offline_transitions", "Devices that went offline", m.offline_transitions.clone());
        r.register("devices_online", "Devices online", m.devices_online.clone());
        r.register("alarm_event_batches", "Event batches handed to the alarm engine", m.alarm_event_batches.clone());
        r.register("alarm_queue_full", "Shard waits on a full alarm engine queue", m.alarm_queue_full.clone());
        r.register("snapshot_queue_full", "Shard waits on a full device snapshot queue", m.snapshot_queue_full.clone());
        r.register("snapshot_updates", "Device snapshot updates written", m.snapshot_updates.clone());
        r.register("snapshot_write_errors", "Failed device snapshot writes", m.snapshot_write_errors.clone());
        r.register("commands_sent", "Commands sent to devices", m.commands_sent.clone());
        r.register("command_answers", "Device answers to commands recorded, by status", m.command_answers.clone());
        r.register(
            "command_answers_unknown",
            "Device answers for unknown commands or another device's, rejected",
            m.command_answers_unknown.clone(),
        );
        r.register("commands_expired", "Commands expired at their deadline", m.commands_expired.clone());
        r.register("command_expiry_errors", "Failed command expiry rounds", m.command_expiry_errors.clone());
        r.register("files_stored", "Uploaded files stored", m.files_stored.clone());
        r.register("file_bytes_stored", "Bytes of uploaded files stored", m.file_bytes_stored.clone());
        r.register("files_refused", "File uploads refused, by reason", m.files_refused.clone());
        r.register("https_requests", "HTTPS ingest requests answered, by outcome", m.https_requests.clone());
        r.register("relay_link_requests", "Relay link exchanges answered, by outcome", m.relay_link_requests.clone());
        m
    }
}
