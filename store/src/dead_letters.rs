//! Dead letters (`DeadLetterStore`, issue 18 item 5): device events and the effects derived from
//! them that could not be stored or evaluated after their retries, kept with their stage, reason
//! and a structured copy so that an operator can see them and replay them.
//!
//! Bounded: at most [`MAX_DEAD_LETTERS`] rows; recording one more deletes the oldest (the count
//! deleted is returned so that the caller counts the overflow), and a copy is at most
//! [`MAX_DEAD_LETTER_PAYLOAD`] bytes of JSON (a larger one is kept as a summary that cannot be
//! replayed). [`DeadLetterSink`] is what the pipeline calls: it records, counts
//! `fleetpulse_dead_letters_total{stage,reason}` and never fails.

use std::sync::Arc;

use async_trait::async_trait;
use fleetpulse_proto::domain::ResourceSample;
use fleetpulse_proto::{AlarmTypeCode, DeviceId, EnterpriseId, UnixMillis};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

use crate::Result;

/// Most dead letters kept; recording beyond it deletes the oldest.
pub const MAX_DEAD_LETTERS: usize = 10_000;

/// Largest structured copy kept, in bytes of JSON.
pub const MAX_DEAD_LETTER_PAYLOAD: usize = 64 * 1024;

/// Longest reason detail kept, in bytes (cut at a character boundary).
pub const MAX_DEAD_LETTER_DETAIL: usize = 1_024;

/// Most dead letters in one listing page.
pub const MAX_DEAD_LETTER_PAGE: usize = 1_000;

/// A dead letter's id (never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct DeadLetterId(pub u64);

impl std::fmt::Display for DeadLetterId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Where in the pipeline an event was given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterStage {
    /// A durable device event the alarm engine could not be handed (its task had stopped).
    AlarmEngine,
    /// What the alarm engine decided (a threshold alarm record, a notification, a maintenance
    /// window mark, notification audit entries) that the store refused after its retries.
    AlarmEffects,
    /// A device snapshot update (online flag, last status report) the store refused.
    Snapshots,
}

impl DeadLetterStage {
    /// Every stage.
    pub const ALL: [DeadLetterStage; 3] =
        [DeadLetterStage::AlarmEngine, DeadLetterStage::AlarmEffects, DeadLetterStage::Snapshots];

    /// The stored and shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterStage::AlarmEngine => "alarm_engine",
            DeadLetterStage::AlarmEffects => "alarm_effects",
            DeadLetterStage::Snapshots => "snapshots",
        }
    }

    /// The stage of a stored name.
    pub fn parse(s: &str) -> Option<DeadLetterStage> {
        DeadLetterStage::ALL.into_iter().find(|stage| stage.as_str() == s)
    }
}

/// Why an event was given up: a short code (a metric label) and the error's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterReason {
    /// `store_unavailable` (retries exhausted), `store_refused` (a permanent error),
    /// `stage_stopped` (the next stage's task was gone), `shutdown` (still failing when the
    /// process stopped).
    pub code: &'static str,
    /// The last error, at most [`MAX_DEAD_LETTER_DETAIL`] bytes.
    pub detail: String,
}

/// A dead letter to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDeadLetter {
    /// The stage it failed at.
    pub stage: DeadLetterStage,
    /// Why.
    pub reason: DeadLetterReason,
    /// Its enterprise, when it has one.
    pub enterprise_id: Option<EnterpriseId>,
    /// Its device, when it has one.
    pub device_id: Option<DeviceId>,
    /// The structured copy the stage can take back (the stage's own format).
    pub payload: serde_json::Value,
    /// Attempts made before it was given up.
    pub attempts: u32,
    /// When it was given up.
    pub at: UnixMillis,
}

/// A stored dead letter.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct DeadLetter {
    /// Its id.
    pub id: DeadLetterId,
    /// The stage it failed at.
    pub stage: DeadLetterStage,
    /// Why (a short code, as in the metric).
    pub reason: String,
    /// The last error.
    pub detail: String,
    /// Its enterprise, when it has one.
    pub enterprise_id: Option<EnterpriseId>,
    /// Its device, when it has one.
    pub device_id: Option<DeviceId>,
    /// The structured copy (`{"truncated": true, ...}` when it was too large to keep).
    pub payload: serde_json::Value,
    /// Attempts made before it was given up.
    pub attempts: u32,
    /// When it was given up.
    pub at: UnixMillis,
}

/// Which dead letters a listing returns: oldest first, after `after`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeadLetterFilter {
    /// Only this stage.
    pub stage: Option<DeadLetterStage>,
    /// Only ids above this one (paging).
    pub after: Option<DeadLetterId>,
}

/// The dead letters.
#[async_trait]
pub trait DeadLetterStore: Send + Sync + 'static {
    /// Records a dead letter and deletes the oldest beyond the newest `keep` (the pipeline keeps
    /// [`MAX_DEAD_LETTERS`]) in the same transaction. Returns its id and how many were deleted. A
    /// payload above [`MAX_DEAD_LETTER_PAYLOAD`] is refused (`InvalidInput`); [`DeadLetterSink`]
    /// summarises it.
    async fn record_dead_letter(&self, letter: NewDeadLetter, keep: usize) -> Result<(DeadLetterId, u64)>;
    /// Dead letters in id order, at most `limit` (≤ [`MAX_DEAD_LETTER_PAGE`]).
    async fn list_dead_letters(&self, filter: DeadLetterFilter, limit: usize) -> Result<Vec<DeadLetter>>;
    /// One dead letter.
    async fn dead_letter(&self, id: DeadLetterId) -> Result<Option<DeadLetter>>;
    /// Deletes one (after a successful replay); false if it was not there.
    async fn delete_dead_letter(&self, id: DeadLetterId) -> Result<bool>;
}

/// A device event (the alarm engine's `DeviceEvent`) as a dead letter of stage `alarm_engine`
/// keeps it (an alarm's log is not kept: the engine does not read it, and the event store has it).
/// The shards write it, the alarm service reads it back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// The device.
    pub device_id: DeviceId,
    /// Its enterprise.
    pub enterprise_id: EnterpriseId,
    /// Time of receipt.
    pub at: UnixMillis,
    /// What happened.
    pub input: StoredInput,
}

/// A device event's input as a dead letter keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "input", rename_all = "snake_case")]
pub enum StoredInput {
    /// A reported alarm.
    Alarm {
        /// The alarm type.
        code: AlarmTypeCode,
        /// A clear.
        clear: bool,
        /// Its description.
        description: String,
    },
    /// Heartbeats missing.
    Offline,
    /// Back online.
    Online,
    /// A CPU/memory sample.
    Resources {
        /// The sample.
        sample: ResourceSample,
    },
}

/// The copy a dead letter of stage `alarm_engine` holds: `stored` tagged `"kind": "event"`
/// (the alarm service's `DeadPayload::Event`).
pub fn event_payload(stored: &StoredEvent) -> serde_json::Value {
    let mut value = serde_json::to_value(stored).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.insert("kind".into(), serde_json::Value::from("event"));
    }
    value
}

/// Checks a letter's bounds before it is stored; returns the payload's JSON and the cut detail.
pub(crate) fn checked(letter: &NewDeadLetter) -> Result<(String, String)> {
    let payload = serde_json::to_string(&letter.payload)
        .map_err(|e| crate::StoreError::Backend(format!("encoding a dead letter: {e}")))?;
    if payload.len() > MAX_DEAD_LETTER_PAYLOAD {
        return Err(crate::StoreError::InvalidInput(format!(
            "a dead letter's payload is {} bytes, above {MAX_DEAD_LETTER_PAYLOAD}",
            payload.len()
        )));
    }
    Ok((payload, cut(&letter.reason.detail, MAX_DEAD_LETTER_DETAIL)))
}

/// `s` cut to at most `max` bytes at a character boundary.
pub(crate) fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// Labels of `fleetpulse_dead_letters_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeadLetterLabels {
    /// The stage ([`DeadLetterStage::as_str`]).
    pub stage: &'static str,
    /// The reason code ([`DeadLetterReason::code`]).
    pub reason: &'static str,
}

/// The dead-letter counters. Cheap to clone (handles to shared atomics).
#[derive(Clone, Debug, Default)]
pub struct DeadLetterMetrics {
    /// Events given up, by stage and reason (counted also when the store could not keep them).
    pub total: Family<DeadLetterLabels, Counter>,
    /// Dead letters deleted to stay within [`MAX_DEAD_LETTERS`].
    pub evicted: Counter,
    /// Dead letters the store could not record (the event is counted in `total` and logged).
    pub unrecorded: Counter,
}

impl DeadLetterMetrics {
    /// Creates the counters and registers them: `fleetpulse_dead_letters_total{stage,reason}`,
    /// `fleetpulse_dead_letters_evicted_total`, `fleetpulse_dead_letters_unrecorded_total`
    /// (prometheus-client appends `_total` to counters).
    pub fn register(registry: &mut Registry) -> DeadLetterMetrics {
        let m = DeadLetterMetrics::default();
        registry.register(
            "fleetpulse_dead_letters",
            "Device events and their effects given up, by stage and reason",
            m.total.clone(),
        );
        registry.register(
            "fleetpulse_dead_letters_evicted",
            "Dead letters deleted to stay within the cap of 10,000",
            m.evicted.clone(),
        );
        registry.register(
            "fleetpulse_dead_letters_unrecorded",
            "Dead letters the store could not keep (counted and logged)",
            m.unrecorded.clone(),
        );
        m
    }
}

/// What the pipeline calls to give an event up: stores it (summarised when too large), counts
/// it, logs it. Never fails: when even the dead letter cannot be stored, that is counted too.
#[derive(Clone, Debug)]
pub struct DeadLetterSink {
    store: Arc<dyn DeadLetterStore>,
    metrics: DeadLetterMetrics,
}

impl std::fmt::Debug for dyn DeadLetterStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dyn DeadLetterStore")
    }
}

impl DeadLetterSink {
    /// A sink over `store`, counting in `metrics`.
    pub fn new(store: Arc<dyn DeadLetterStore>, metrics: DeadLetterMetrics) -> DeadLetterSink {
        DeadLetterSink { store, metrics }
    }

    /// The counters.
    pub fn metrics(&self) -> &DeadLetterMetrics {
        &self.metrics
    }

    /// Gives `letters` up; once one cannot be stored, the rest are only counted and logged (a
    /// failing store is not asked again for each: shutting down must not take minutes).
    pub async fn record_many(&self, letters: Vec<NewDeadLetter>) {
        let mut storing = true;
        for letter in letters {
            if storing {
                storing = self.record(letter).await;
            } else {
                self.count(&letter);
                self.metrics.unrecorded.inc();
            }
        }
    }

    fn count(&self, letter: &NewDeadLetter) {
        self.metrics
            .total
            .get_or_create(&DeadLetterLabels { stage: letter.stage.as_str(), reason: letter.reason.code })
            .inc();
    }

    /// Gives `letter` up: counted, logged, stored (a few attempts); false if it could not be
    /// stored.
    pub async fn record(&self, mut letter: NewDeadLetter) -> bool {
        self.count(&letter);
        tracing::error!(
            message = "Event given up: dead-lettered.",
            stage = letter.stage.as_str(),
            reason = letter.reason.code,
            detail = %letter.reason.detail,
            device = ?letter.device_id,
            attempts = letter.attempts,
        );
        let size = serde_json::to_string(&letter.payload).map_or(usize::MAX, |s| s.len());
        if size > MAX_DEAD_LETTER_PAYLOAD {
            letter.payload = serde_json::json!({ "truncated": true, "bytes": size });
        }
        let mut delay = std::time::Duration::from_millis(100);
        for attempt in 1..=3 {
            match self.store.record_dead_letter(letter.clone(), MAX_DEAD_LETTERS).await {
                Ok((_, evicted)) => {
                    self.metrics.evicted.inc_by(evicted);
                    return true;
                }
                Err(error) if attempt == 3 => {
                    self.metrics.unrecorded.inc();
                    tracing::error!(message = "Dead letter not stored.", stage = letter.stage.as_str(), %error);
                }
                Err(_) => {
                    tokio::time::sleep(delay).await;
                    delay *= 4;
                }
            }
        }
        false
    }
}
