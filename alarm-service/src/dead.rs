//! What the alarm service gives up and takes back (issue 18 item 5): bounded retries of its
//! store writes ([`RetryPolicy`]), the dead letters' structured copies ([`DeadPayload`]) and
//! their replay ([`ReplayRequest`], [`ReplayError`]).
//!
//! A store error the same call cannot get past (invalid input, a limit, a conflict, an address
//! the mailer refuses) is given up at once; any other is retried with backoff until the policy's
//! attempts are spent. Either way the effect becomes a dead letter of stage `alarm_effects` with
//! its copy, counted in `fleetpulse_dead_letters_total`; a replay carries the copy out once more
//! through the same code, and is idempotent: a notification's items already in the outbox are
//! left out (their keys), and the outbox refuses a message key twice.

use std::time::Duration;

use fleetpulse_alarm_engine::{
    DeviceEvent, DeviceInput, IdempotencyKey, IncidentCounts, IncidentKey, IncidentNote, Notification, NotifiedAlarm,
    Receiver, Stage,
};
use fleetpulse_mailer::MailError;
use fleetpulse_proto::domain::{AlarmChange, DeviceAlarm};
use fleetpulse_proto::{AlarmTypeCode, DeviceId, EnterpriseId, SiteId, StrategyId, UnixMillis};
use fleetpulse_store::{
    DeadLetterReason, DeadLetterSink, DeadLetterStage, IncidentUpdate, NewDeadLetter, StoreError, StoredEvent,
    StoredInput, WindowMark,
};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

/// Why a replay did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The copy is not one this build can take back (a summary of an oversized one, another
    /// version's, or a stage that is replayed elsewhere).
    #[error("this dead letter cannot be replayed: {0}")]
    NotReplayable(String),
    /// The stage failed again; the dead letter stays.
    #[error("the replay failed: {0}")]
    Failed(String),
    /// The alarm service has stopped.
    #[error("the alarm service is not running")]
    Stopped,
}

/// How often and how patiently the effects task retries a store write before giving it up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all (at least 1).
    pub attempts: u32,
    /// Delay after the first failure; doubles per attempt.
    pub first_delay: Duration,
    /// Longest delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 8 attempts, 100 ms doubling to 30 s: about 25 s of a store that is down before an effect
    /// is given up.
    fn default() -> Self {
        RetryPolicy { attempts: 8, first_delay: Duration::from_millis(100), max_delay: Duration::from_secs(30) }
    }
}

/// An operation given up: its reason and the attempts made.
#[derive(Debug, Clone)]
pub(crate) struct GivenUp {
    pub(crate) reason: DeadLetterReason,
    pub(crate) attempts: u32,
}

/// Errors the same call cannot get past.
pub(crate) trait Permanence: std::fmt::Display {
    fn is_permanent(&self) -> bool;
}

impl Permanence for StoreError {
    fn is_permanent(&self) -> bool {
        matches!(
            self,
            StoreError::InvalidInput(_)
                | StoreError::LimitExceeded(_)
                | StoreError::AlreadyExists(_)
                | StoreError::DeviceConflict
        )
    }
}

impl Permanence for MailError {
    fn is_permanent(&self) -> bool {
        match self {
            MailError::Store(e) => e.is_permanent(),
            MailError::Address { .. }
            | MailError::Receiver { .. }
            | MailError::Payload(_)
            | MailError::Permanent(_) => true,
            _ => false,
        }
    }
}

/// Counts the attempts of one operation and waits between them.
pub(crate) struct Attempts {
    policy: RetryPolicy,
    made: u32,
    delay: Duration,
}

impl Attempts {
    pub(crate) fn new(policy: RetryPolicy) -> Attempts {
        Attempts { policy, made: 0, delay: policy.first_delay }
    }

    /// After a failed attempt: the operation given up (a permanent error, or the attempts
    /// spent), or `None` after the backoff delay (try again).
    pub(crate) async fn failed<E: Permanence>(&mut self, what: &str, error: &E) -> Option<GivenUp> {
        self.made += 1;
        let detail = error.to_string();
        if error.is_permanent() {
            return Some(GivenUp { reason: DeadLetterReason { code: "store_refused", detail }, attempts: self.made });
        }
        if self.made >= self.policy.attempts.max(1) {
            return Some(GivenUp {
                reason: DeadLetterReason { code: "store_unavailable", detail },
                attempts: self.made,
            });
        }
        tracing::warn!(message = "Alarm service store operation failed; retrying.", what, %error, attempt = self.made, delay_ms = self.delay.as_millis() as u64);
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(self.policy.max_delay);
        None
    }
}

/// Runs `op` until it succeeds, a permanent error, or the policy's attempts are spent.
pub(crate) async fn retry<T, E: Permanence, F: Future<Output = Result<T, E>>>(
    policy: RetryPolicy,
    what: &str,
    mut op: impl FnMut() -> F,
) -> Result<T, GivenUp> {
    let mut attempts = Attempts::new(policy);
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(error) => {
                if let Some(given_up) = attempts.failed(what, &error).await {
                    return Err(given_up);
                }
            }
        }
    }
}

/// The structured copy of a dead letter of the alarm stages, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DeadPayload {
    /// A durable device event the engine was not handed (stage `alarm_engine`).
    Event(StoredEvent),
    /// A derived threshold alarm record change (stage `alarm_effects`).
    AlarmRecord {
        /// The change.
        change: AlarmChange,
    },
    /// A notification to queue (stage `alarm_effects`).
    Notification(StoredNotification),
    /// A maintenance window's mark on an alarm (stage `alarm_effects`).
    WindowMark {
        /// The mark.
        mark: WindowMark,
    },
    /// A site incident's step (stage `alarm_effects`).
    Incident {
        /// The step as stored; an empty site name is read again on replay.
        update: IncidentUpdate,
    },
}

impl DeadPayload {
    /// The stage a copy of this kind belongs to.
    pub fn stage(&self) -> DeadLetterStage {
        match self {
            DeadPayload::Event(_) => DeadLetterStage::AlarmEngine,
            _ => DeadLetterStage::AlarmEffects,
        }
    }

    /// The enterprise and device it is about (the first item's device for a notification).
    fn subject(&self) -> (Option<EnterpriseId>, Option<DeviceId>) {
        match self {
            DeadPayload::Event(e) => (Some(e.enterprise_id), Some(e.device_id)),
            DeadPayload::AlarmRecord { change } => (Some(change.enterprise_id), Some(change.device_id)),
            DeadPayload::Notification(n) => (Some(n.enterprise_id), n.items.first().map(|i| i.device_id)),
            DeadPayload::WindowMark { mark } => (Some(mark.enterprise_id), Some(mark.device_id)),
            DeadPayload::Incident { update } => {
                (Some(update.enterprise_id), update.members.first().map(|m| m.device_id))
            }
        }
    }

    /// Records it as a dead letter.
    pub(crate) async fn give_up(self, sink: &DeadLetterSink, given_up: &GivenUp) {
        let (enterprise_id, device_id) = self.subject();
        let stage = self.stage();
        let payload = match serde_json::to_value(&self) {
            Ok(v) => v,
            Err(e) => serde_json::json!({ "unencodable": e.to_string() }),
        };
        sink.record(NewDeadLetter {
            stage,
            reason: given_up.reason.clone(),
            enterprise_id,
            device_id,
            payload,
            attempts: given_up.attempts,
            at: UnixMillis::now(),
        })
        .await;
    }
}

/// A device event as a dead letter keeps it (as the shards write it).
pub(crate) fn stored_event(e: &DeviceEvent) -> StoredEvent {
    let input = match &e.input {
        DeviceInput::Alarm(a) => {
            StoredInput::Alarm { code: a.alarm_type.code, clear: a.clear, description: a.description.clone() }
        }
        DeviceInput::Offline => StoredInput::Offline,
        DeviceInput::Online => StoredInput::Online,
        DeviceInput::Resources(sample) => StoredInput::Resources { sample: *sample },
    };
    StoredEvent { device_id: e.device_id, enterprise_id: e.enterprise_id, at: e.at, input }
}

/// The event a dead letter's copy holds again; `None` for an alarm type this build does not know.
pub(crate) fn to_event(stored: &StoredEvent) -> Option<DeviceEvent> {
    let input = match &stored.input {
        StoredInput::Alarm { code, clear, description } => DeviceInput::Alarm(DeviceAlarm {
            alarm_type: code.alarm_type()?,
            clear: *clear,
            description: description.clone(),
            log: None,
        }),
        StoredInput::Offline => DeviceInput::Offline,
        StoredInput::Online => DeviceInput::Online,
        StoredInput::Resources { sample } => DeviceInput::Resources(*sample),
    };
    Some(DeviceEvent { device_id: stored.device_id, enterprise_id: stored.enterprise_id, at: stored.at, input })
}

/// A [`Notification`] as a dead letter keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredNotification {
    /// The receiver: an address, or `account:<id>` ([`Receiver::key`]).
    pub receiver: String,
    /// The enterprise.
    pub enterprise_id: EnterpriseId,
    /// The strategy.
    pub strategy_id: StrategyId,
    /// `firing`, `repeat` or `resolved`.
    pub stage: String,
    /// The alarms.
    pub items: Vec<StoredItem>,
    /// The notification's key, in hex.
    pub key: String,
    /// The site incident it tells of, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<StoredIncidentNote>,
}

/// The site incident of a [`StoredNotification`] ([`IncidentNote`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredIncidentNote {
    /// The strategy whose rule opened it.
    pub strategy_id: StrategyId,
    /// The site.
    pub site_id: SiteId,
    /// The alarm type.
    pub code: AlarmTypeCode,
    /// When it opened.
    pub opened_at: UnixMillis,
    /// Devices of the site when it opened.
    pub site_devices: u32,
    /// Devices whose alarm belonged to it.
    pub affected: u32,
    /// Of those, how many are back.
    pub back: u32,
    /// When it resolved.
    pub resolved_at: Option<UnixMillis>,
}

impl StoredIncidentNote {
    fn of(note: &IncidentNote) -> StoredIncidentNote {
        StoredIncidentNote {
            strategy_id: note.key.strategy_id,
            site_id: note.key.site_id,
            code: note.key.code,
            opened_at: note.key.opened_at,
            site_devices: note.counts.site_devices,
            affected: note.counts.affected,
            back: note.counts.back,
            resolved_at: note.resolved_at,
        }
    }

    fn note(&self, enterprise_id: EnterpriseId) -> IncidentNote {
        IncidentNote {
            key: IncidentKey {
                enterprise_id,
                strategy_id: self.strategy_id,
                site_id: self.site_id,
                code: self.code,
                opened_at: self.opened_at,
            },
            counts: IncidentCounts { site_devices: self.site_devices, affected: self.affected, back: self.back },
            resolved_at: self.resolved_at,
        }
    }
}

/// One alarm of a [`StoredNotification`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredItem {
    /// The device.
    pub device_id: DeviceId,
    /// The alarm type.
    pub code: AlarmTypeCode,
    /// Start of the activation.
    pub first_at: UnixMillis,
    /// Latest raise.
    pub latest_at: UnixMillis,
    /// Raises.
    pub count: u32,
    /// Latest description.
    pub description: String,
    /// When it cleared.
    pub resolved_at: Option<UnixMillis>,
    /// The item's key, in hex.
    pub key: String,
}

fn stage_name(stage: Stage) -> &'static str {
    match stage {
        Stage::Firing => "firing",
        Stage::Repeat => "repeat",
        Stage::Resolved => "resolved",
    }
}

impl From<&Notification> for StoredNotification {
    fn from(n: &Notification) -> Self {
        StoredNotification {
            receiver: n.receiver.key(),
            enterprise_id: n.enterprise_id,
            strategy_id: n.strategy_id,
            stage: stage_name(n.stage).to_owned(),
            items: n
                .items
                .iter()
                .map(|i| StoredItem {
                    device_id: i.device_id,
                    code: i.code,
                    first_at: i.first_at,
                    latest_at: i.latest_at,
                    count: i.count,
                    description: i.description.clone(),
                    resolved_at: i.resolved_at,
                    key: i.key.to_string(),
                })
                .collect(),
            key: n.key.to_string(),
            incident: n.incident.as_ref().map(StoredIncidentNote::of),
        }
    }
}

impl StoredNotification {
    /// The notification again; `None` when a key or the stage does not parse.
    pub fn to_notification(&self) -> Option<Notification> {
        let stage =
            [Stage::Firing, Stage::Repeat, Stage::Resolved].into_iter().find(|s| stage_name(*s) == self.stage)?;
        let items = self
            .items
            .iter()
            .map(|i| {
                Some(NotifiedAlarm {
                    device_id: i.device_id,
                    code: i.code,
                    first_at: i.first_at,
                    latest_at: i.latest_at,
                    count: i.count,
                    description: i.description.clone(),
                    resolved_at: i.resolved_at,
                    key: IdempotencyKey::parse_hex(&i.key)?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Notification {
            receiver: Receiver::from_key(&self.receiver),
            enterprise_id: self.enterprise_id,
            strategy_id: self.strategy_id,
            stage,
            items,
            key: IdempotencyKey::parse_hex(&self.key)?,
            incident: self.incident.map(|i| i.note(self.enterprise_id)),
        })
    }
}

/// A dead letter's copy fed back into the stage it failed at; `done` answers once it was
/// carried out (or failed again).
#[derive(Debug)]
pub(crate) struct ReplayRequest {
    pub(crate) payload: DeadPayload,
    pub(crate) done: oneshot::Sender<Result<(), ReplayError>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetpulse_proto::domain::AlarmChangeKind;

    #[test]
    fn dead_payloads_round_trip_through_json() {
        let event = DeviceEvent {
            device_id: DeviceId(3),
            enterprise_id: EnterpriseId(2),
            at: UnixMillis(77),
            input: DeviceInput::Alarm(DeviceAlarm {
                alarm_type: AlarmTypeCode(105).alarm_type().expect("a known type"),
                clear: false,
                description: "segfault".into(),
                log: None,
            }),
        };
        let stored = StoredEvent {
            device_id: DeviceId(3),
            enterprise_id: EnterpriseId(2),
            at: UnixMillis(77),
            input: StoredInput::Alarm { code: AlarmTypeCode(105), clear: false, description: "segfault".into() },
        };
        // The shards write this form (the ingest crate does not know `DeadPayload`).
        let json = fleetpulse_store::event_payload(&stored);
        assert_eq!(json["kind"], "event");
        let back: DeadPayload = serde_json::from_value(json).expect("decodes");
        assert_eq!(back, DeadPayload::Event(stored.clone()));
        assert_eq!(serde_json::to_value(&back).expect("encodes"), fleetpulse_store::event_payload(&stored));
        let DeadPayload::Event(stored) = back else { panic!("an event") };
        assert_eq!(to_event(&stored).as_ref(), Some(&event));
        assert_eq!(stored_event(&event), stored);

        let record = DeadPayload::AlarmRecord {
            change: AlarmChange {
                device_id: DeviceId(3),
                enterprise_id: EnterpriseId(2),
                code: AlarmTypeCode(401),
                at: UnixMillis(5),
                kind: AlarmChangeKind::Clear,
            },
        };
        let json = serde_json::to_string(&record).expect("encodes");
        assert_eq!(serde_json::from_str::<DeadPayload>(&json).expect("decodes"), record);
    }

    #[tokio::test]
    async fn dead_retries_are_bounded_and_permanent_errors_are_not_retried() {
        let policy =
            RetryPolicy { attempts: 3, first_delay: Duration::from_millis(1), max_delay: Duration::from_millis(2) };
        let mut calls = 0;
        let given_up = retry(policy, "test", || {
            calls += 1;
            async { Err::<(), _>(StoreError::Unavailable("down".into())) }
        })
        .await
        .expect_err("gives up");
        assert_eq!((calls, given_up.attempts, given_up.reason.code), (3, 3, "store_unavailable"));

        let mut calls = 0;
        let given_up = retry(policy, "test", || {
            calls += 1;
            async { Err::<(), _>(StoreError::InvalidInput("no".into())) }
        })
        .await
        .expect_err("gives up");
        assert_eq!((calls, given_up.reason.code), (1, "store_refused"));

        let mut calls = 0;
        let ok = retry(policy, "test", || {
            calls += 1;
            let fail = calls < 3;
            async move { if fail { Err(StoreError::Backend("blip".into())) } else { Ok(7) } }
        })
        .await;
        assert_eq!(ok.map_err(|g| g.attempts).ok(), Some(7), "the third attempt succeeds");
    }
}
