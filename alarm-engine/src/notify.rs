//! Notification planning (ALM-5 core): what goes to which receiver when, and its idempotency key.
//!
//! Alarms are grouped per (strategy, receiver) with Alertmanager's timers:
//! - the first firing alarm of a new group waits `group_wait` for others, then the group is sent;
//! - alarms that fire or resolve after that go out `group_interval` after the group's last
//!   notification (or at once if that is already past);
//! - every still active, unacknowledged alarm is sent again `repeat_interval` after it was last
//!   sent; alarms due together are sent together;
//! - an alarm that was sent as firing is sent as resolved when it clears (acknowledged or not);
//!   one that clears before its firing notification went out is sent neither way.
//!
//! A group stays open while it has something unsent or a reminder scheduled (a clear or an
//! acknowledgement removes the alarm's reminders at once). While it is open, the `group_interval`
//! rule applies; a new group waits `group_wait`.
//!
//! `group_wait = 0` turns grouping off: every firing, reminder and resolution is its own
//! notification and goes out at once.
//!
//! Every notification carries an [`IdempotencyKey`]: the durable outbox that sends the email uses
//! it to send each notification once, also when the engine is replayed after a crash.

use std::collections::BTreeMap;
use std::fmt;

use fleetpulse_proto::{AlarmTypeCode, DeviceId, EnterpriseId, UnixMillis};
use sha2::{Digest, Sha256};

use crate::incidents::{IncidentKey, IncidentNote};
use crate::strategy::{NotifySettings, Receiver, StrategyId};

/// Which kind of message a notification is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// Alarms that became active.
    Firing,
    /// Reminder about alarms still active and unacknowledged.
    Repeat,
    /// Alarms that were sent as firing and have cleared.
    Resolved,
}

impl Stage {
    fn tag(self) -> u8 {
        match self {
            Stage::Firing => 1,
            Stage::Repeat => 2,
            Stage::Resolved => 3,
        }
    }
}

/// A deterministic key naming one notification (or one item of it): 128 bits of a SHA-256 digest.
///
/// An item's key is derived from (enterprise, strategy, receiver, device, alarm type, the
/// activation's start time, stage, reminder number). A notification of one item has that item's
/// key; a digest of several has the digest of its items' keys, in order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyKey(pub [u8; 16]);

impl IdempotencyKey {
    fn from_digest(hasher: Sha256) -> Self {
        let digest = hasher.finalize();
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        IdempotencyKey(key)
    }

    /// The key of one alarm's item in a notification.
    pub(crate) fn item(group: &GroupKey, receiver: &Receiver, alarm: &AlarmRef, stage: Stage, number: u32) -> Self {
        let mut h = Sha256::new();
        h.update(b"fleetpulse/alarm-notification/v1\0");
        h.update(group.enterprise.0.to_be_bytes());
        h.update(group.strategy.0.to_be_bytes());
        hash_receiver(&mut h, receiver);
        h.update(alarm.device.0.to_be_bytes());
        h.update(alarm.code.0.to_be_bytes());
        h.update(alarm.activation.0.to_be_bytes());
        h.update([stage.tag()]);
        h.update(number.to_be_bytes());
        IdempotencyKey::from_digest(h)
    }

    /// The key of one member's item in a site incident's notification.
    pub(crate) fn incident_item(
        group: &GroupKey,
        receiver: &Receiver,
        incident: &IncidentKey,
        device: DeviceId,
        stage: Stage,
    ) -> Self {
        let mut h = Sha256::new();
        h.update(b"fleetpulse/incident-notification/v1\0");
        h.update(group.enterprise.0.to_be_bytes());
        h.update(group.strategy.0.to_be_bytes());
        hash_receiver(&mut h, receiver);
        h.update(incident.site_id.0.to_be_bytes());
        h.update(incident.code.0.to_be_bytes());
        h.update(incident.opened_at.0.to_be_bytes());
        h.update(device.0.to_be_bytes());
        h.update([stage.tag()]);
        IdempotencyKey::from_digest(h)
    }

    /// The key of a notification with these items.
    pub(crate) fn digest(items: &[NotifiedAlarm]) -> Self {
        match items {
            [one] => one.key,
            many => {
                let mut h = Sha256::new();
                h.update(b"fleetpulse/alarm-digest/v1\0");
                h.update((many.len() as u64).to_be_bytes());
                for item in many {
                    h.update(item.key.0);
                }
                IdempotencyKey::from_digest(h)
            }
        }
    }
}

/// Feeds a receiver into a key's digest, tagged by kind (an address by its length and bytes).
fn hash_receiver(h: &mut Sha256, receiver: &Receiver) {
    match receiver {
        Receiver::Email(address) => {
            h.update([1u8]);
            h.update((address.len() as u64).to_be_bytes());
            h.update(address.as_bytes());
        }
        Receiver::Account(id) => {
            h.update([2u8]);
            h.update(id.0.to_be_bytes());
        }
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdempotencyKey({self})")
    }
}

/// One alarm in a notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotifiedAlarm {
    /// The device.
    pub device_id: DeviceId,
    /// The alarm type.
    pub code: AlarmTypeCode,
    /// When this activation started.
    pub first_at: UnixMillis,
    /// When it was last raised.
    pub latest_at: UnixMillis,
    /// How often it was raised during this activation.
    pub count: u32,
    /// Latest description.
    pub description: String,
    /// When it cleared ([`Stage::Resolved`] only).
    pub resolved_at: Option<UnixMillis>,
    /// This item's key.
    pub key: IdempotencyKey,
}

/// A message to send to one receiver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// Who gets it.
    pub receiver: Receiver,
    /// The enterprise whose alarms it is about.
    pub enterprise_id: EnterpriseId,
    /// The strategy that selected the alarms.
    pub strategy_id: StrategyId,
    /// Firing, reminder or resolved.
    pub stage: Stage,
    /// The alarms: firing in the order they were raised, reminders by device and type, resolved in
    /// the order they cleared.
    pub items: Vec<NotifiedAlarm>,
    /// Deterministic key for exactly-once sending.
    pub key: IdempotencyKey,
    /// A site incident's notification (its items are a sample of its members); `None` for
    /// ordinary alarms.
    pub incident: Option<IncidentNote>,
}

impl Notification {
    /// Keeps the items `keep` accepts and derives the key of what is left (the key a notification
    /// of just those items has); false if no item is left.
    ///
    /// The shell uses it to leave out items an earlier process already queued.
    pub fn retain_items(&mut self, keep: impl FnMut(&NotifiedAlarm) -> bool) -> bool {
        let before = self.items.len();
        self.items.retain(keep);
        if self.items.len() != before {
            self.key = IdempotencyKey::digest(&self.items);
        }
        !self.items.is_empty()
    }
}

impl IdempotencyKey {
    /// Parses the 32 lowercase or uppercase hex digits [`fmt::Display`] writes.
    pub fn parse_hex(s: &str) -> Option<IdempotencyKey> {
        let bytes = s.as_bytes();
        if bytes.len() != 32 {
            return None;
        }
        let mut key = [0u8; 16];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let text = std::str::from_utf8(pair).ok()?;
            key[i] = u8::from_str_radix(text, 16).ok()?;
        }
        Some(IdempotencyKey(key))
    }
}

/// One notification group: (enterprise, strategy, interned receiver).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct GroupKey {
    pub(crate) enterprise: EnterpriseId,
    pub(crate) strategy: StrategyId,
    pub(crate) receiver: u32,
}

/// One activation of one alarm: (device, type, start time of the activation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct AlarmRef {
    pub(crate) device: DeviceId,
    pub(crate) code: AlarmTypeCode,
    pub(crate) activation: UnixMillis,
}

/// A reminder scheduled for one alarm in one group, keyed by (due, device, type).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RepeatDue {
    /// The activation it reminds of.
    pub(crate) activation: UnixMillis,
    /// 1 for the first reminder.
    pub(crate) number: u32,
}

/// Key of a scheduled reminder: due time first, so the earliest is first.
pub(crate) type RepeatKey = (UnixMillis, DeviceId, AlarmTypeCode);

/// The state of one open group. It exists only while it has something to send or a reminder
/// scheduled; firing entries of alarms that cleared before they were sent are skipped at the flush.
#[derive(Debug)]
pub(crate) struct Group {
    pub(crate) settings: NotifySettings,
    /// Firing alarms not yet sent.
    pub(crate) pending: Vec<AlarmRef>,
    /// Resolutions not yet sent.
    pub(crate) resolved: Vec<NotifiedAlarm>,
    /// When `pending` and `resolved` go out.
    pub(crate) flush_at: Option<UnixMillis>,
    /// When the group last sent anything.
    pub(crate) last_sent: Option<UnixMillis>,
    /// Reminders of sent, still active, unacknowledged alarms.
    pub(crate) repeats: BTreeMap<RepeatKey, RepeatDue>,
    /// The deadline registered in the engine's timer set.
    pub(crate) deadline: Option<UnixMillis>,
}

impl Group {
    pub(crate) fn new(settings: NotifySettings) -> Self {
        Group {
            settings,
            pending: Vec::new(),
            resolved: Vec::new(),
            flush_at: None,
            last_sent: None,
            repeats: BTreeMap::new(),
            deadline: None,
        }
    }

    pub(crate) fn grouping(&self) -> bool {
        self.settings.group_wait_ms > 0
    }

    /// Makes sure pending items have a flush time: `group_wait` for a group that never sent,
    /// `group_interval` after its last notification otherwise, at once without grouping.
    pub(crate) fn schedule_flush(&mut self, now: UnixMillis) {
        if self.flush_at.is_some() {
            return;
        }
        let at = match (self.grouping(), self.last_sent) {
            (false, _) => now,
            (true, None) => add(now, self.settings.group_wait_ms),
            (true, Some(last)) => add(last, self.settings.group_interval_ms).max(now),
        };
        self.flush_at = Some(at);
    }

    /// The earliest time this group needs attention.
    pub(crate) fn next_deadline(&self) -> Option<UnixMillis> {
        let repeat = self.repeats.first_key_value().map(|((due, _, _), _)| *due);
        match (self.flush_at, repeat) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.resolved.is_empty() && self.repeats.is_empty()
    }
}

/// `at + ms`, saturating.
pub(crate) fn add(at: UnixMillis, ms: u64) -> UnixMillis {
    UnixMillis(at.0.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_every_component() {
        let group = GroupKey { enterprise: EnterpriseId(1), strategy: StrategyId(2), receiver: 0 };
        let alarm = AlarmRef { device: DeviceId(3), code: AlarmTypeCode(109), activation: UnixMillis(4) };
        let a = Receiver::Email("a@example.com".into());
        let base = IdempotencyKey::item(&group, &a, &alarm, Stage::Firing, 0);
        assert_eq!(base, IdempotencyKey::item(&group, &a, &alarm, Stage::Firing, 0));
        let variants = [
            IdempotencyKey::item(&GroupKey { strategy: StrategyId(9), ..group }, &a, &alarm, Stage::Firing, 0),
            IdempotencyKey::item(&group, &Receiver::Email("b@example.com".into()), &alarm, Stage::Firing, 0),
            IdempotencyKey::item(&group, &a, &AlarmRef { activation: UnixMillis(5), ..alarm }, Stage::Firing, 0),
            IdempotencyKey::item(&group, &a, &AlarmRef { code: AlarmTypeCode(105), ..alarm }, Stage::Firing, 0),
            IdempotencyKey::item(&group, &a, &alarm, Stage::Repeat, 1),
            IdempotencyKey::item(&group, &a, &alarm, Stage::Repeat, 2),
            IdempotencyKey::item(&group, &a, &alarm, Stage::Resolved, 0),
        ];
        for (i, v) in variants.iter().enumerate() {
            assert_ne!(*v, base, "variant {i}");
        }
        assert_eq!(base.to_string().len(), 32);
        assert_eq!(IdempotencyKey::parse_hex(&base.to_string()), Some(base));
        assert_eq!(IdempotencyKey::parse_hex(&base.to_string().to_uppercase()), Some(base));
        for bad in ["", "00", &"g".repeat(32), &"0".repeat(33), "é0000000000000000000000000000000"] {
            assert_eq!(IdempotencyKey::parse_hex(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn retaining_items_rederives_the_key() {
        let group = GroupKey { enterprise: EnterpriseId(1), strategy: StrategyId(2), receiver: 0 };
        let receiver = Receiver::Email("a@example.com".into());
        let item = |device: u64| {
            let alarm = AlarmRef { device: DeviceId(device), code: AlarmTypeCode(109), activation: UnixMillis(4) };
            NotifiedAlarm {
                device_id: alarm.device,
                code: alarm.code,
                first_at: alarm.activation,
                latest_at: alarm.activation,
                count: 1,
                description: String::new(),
                resolved_at: None,
                key: IdempotencyKey::item(&group, &receiver, &alarm, Stage::Firing, 0),
            }
        };
        let items = vec![item(1), item(2), item(3)];
        let mut n = Notification {
            receiver: receiver.clone(),
            enterprise_id: group.enterprise,
            strategy_id: group.strategy,
            stage: Stage::Firing,
            key: IdempotencyKey::digest(&items),
            items,
            incident: None,
        };
        let all = n.key;
        assert!(n.retain_items(|_| true));
        assert_eq!(n.key, all);
        assert!(n.retain_items(|i| i.device_id != DeviceId(2)));
        assert_eq!(n.key, IdempotencyKey::digest(&[item(1), item(3)]));
        assert!(n.retain_items(|i| i.device_id == DeviceId(3)));
        assert_eq!(n.key, item(3).key, "one item: the item's own key");
        assert!(!n.retain_items(|_| false));
    }
}
