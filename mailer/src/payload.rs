//! What the outbox keeps for one notification: the engine's [`Notification`] with the names the
//! email shows (enterprise, device labels), as versioned JSON.
//!
//! The message is rendered when it is sent, not when it is queued, so that the outbox worker can
//! merge what a rate limit held back into one digest (ALM-5). The payload is a storage format: it
//! is versioned and kept apart from the engine's in-memory types.

use std::collections::HashMap;

use fleetpulse_alarm_engine::{Notification, Stage};
use fleetpulse_proto::{DeviceId, EnterpriseId, StrategyId};
use serde::{Deserialize, Serialize};

use crate::OutboxError;

/// Most alarms one queued notification lists; the rest are counted in [`OutboxPayload::omitted`]
/// (a storm grouped into one notification must not make a megabyte email).
pub const MAX_ITEMS_PER_MESSAGE: usize = 100;
/// Largest payload accepted back from the store.
const MAX_PAYLOAD_BYTES: usize = 1 << 20;
/// The payload format written now.
const VERSION: u32 = 1;

/// Which kind of notification (the engine's [`Stage`], as stored).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadStage {
    /// Alarms that became active.
    Firing,
    /// Reminder about alarms still active.
    Repeat,
    /// Alarms that cleared.
    Resolved,
}

impl From<Stage> for PayloadStage {
    fn from(stage: Stage) -> Self {
        match stage {
            Stage::Firing => PayloadStage::Firing,
            Stage::Repeat => PayloadStage::Repeat,
            Stage::Resolved => PayloadStage::Resolved,
        }
    }
}

/// One alarm in a queued notification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadItem {
    /// The device.
    pub device_id: DeviceId,
    /// Its label when queued (name or MAC).
    pub device_label: String,
    /// Alarm type code.
    pub code: u16,
    /// Start of the activation (Unix ms).
    pub first_at: i64,
    /// Latest raise (Unix ms).
    pub latest_at: i64,
    /// Raises during the activation.
    pub count: u32,
    /// Latest description (device-supplied: escaped when rendered).
    pub description: String,
    /// When it cleared (resolved notifications).
    pub resolved_at: Option<i64>,
    /// The item's idempotency key (hex).
    pub key: String,
}

/// A queued notification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxPayload {
    /// Format version ([`VERSION`]).
    pub version: u32,
    /// Firing, reminder or resolved.
    pub stage: PayloadStage,
    /// The enterprise.
    pub enterprise_id: EnterpriseId,
    /// Its name when queued.
    pub enterprise_name: String,
    /// The strategy that selected the alarms.
    pub strategy_id: StrategyId,
    /// The notification's idempotency key (hex): the `Message-ID` of its email.
    pub key: String,
    /// The alarms listed (at most [`MAX_ITEMS_PER_MESSAGE`]).
    pub items: Vec<PayloadItem>,
    /// Alarms of the notification not listed.
    pub omitted: u32,
}

impl OutboxPayload {
    /// The payload of `n`, with the names to show; devices missing from `labels` are shown by id.
    pub fn new(n: &Notification, enterprise_name: &str, labels: &HashMap<DeviceId, String>) -> OutboxPayload {
        let items = n
            .items
            .iter()
            .take(MAX_ITEMS_PER_MESSAGE)
            .map(|a| PayloadItem {
                device_id: a.device_id,
                device_label: labels.get(&a.device_id).cloned().unwrap_or_else(|| a.device_id.to_string()),
                code: a.code.0,
                first_at: a.first_at.0,
                latest_at: a.latest_at.0,
                count: a.count,
                description: a.description.clone(),
                resolved_at: a.resolved_at.map(|t| t.0),
                key: a.key.to_string(),
            })
            .collect();
        OutboxPayload {
            version: VERSION,
            stage: n.stage.into(),
            enterprise_id: n.enterprise_id,
            enterprise_name: enterprise_name.to_owned(),
            strategy_id: n.strategy_id,
            key: n.key.to_string(),
            items,
            omitted: u32::try_from(n.items.len().saturating_sub(MAX_ITEMS_PER_MESSAGE)).unwrap_or(u32::MAX),
        }
    }

    /// Number of alarms the notification is about (listed and omitted).
    pub fn alarm_count(&self) -> u64 {
        self.items.len() as u64 + u64::from(self.omitted)
    }

    /// The JSON stored in the outbox.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a payload of strings and numbers always serializes")
    }

    /// Parses a stored payload, checking its size and version.
    pub fn from_json(json: &str) -> Result<OutboxPayload, OutboxError> {
        if json.len() > MAX_PAYLOAD_BYTES {
            return Err(OutboxError::Message(format!("payload of {} bytes is over the limit", json.len())));
        }
        let payload: OutboxPayload =
            serde_json::from_str(json).map_err(|e| OutboxError::Message(format!("payload: {e}")))?;
        if payload.version != VERSION {
            return Err(OutboxError::Message(format!("payload version {} is not {VERSION}", payload.version)));
        }
        Ok(payload)
    }
}

#[cfg(test)]
mod tests {
    use fleetpulse_alarm_engine::{IdempotencyKey, NotifiedAlarm, Receiver};
    use fleetpulse_proto::{AlarmTypeCode, UnixMillis};

    use super::*;

    fn notification(items: usize) -> Notification {
        Notification {
            receiver: Receiver::Email("ops@example.com".into()),
            enterprise_id: EnterpriseId(3),
            strategy_id: StrategyId(4),
            stage: Stage::Resolved,
            items: (0..items)
                .map(|i| NotifiedAlarm {
                    device_id: DeviceId(i as u64 + 1),
                    code: AlarmTypeCode(105),
                    first_at: UnixMillis(10),
                    latest_at: UnixMillis(20),
                    count: 2,
                    description: "crash \"x\"\n".into(),
                    resolved_at: Some(UnixMillis(30)),
                    key: IdempotencyKey([i as u8; 16]),
                })
                .collect(),
            key: IdempotencyKey([0xee; 16]),
        }
    }

    #[test]
    fn round_trips_through_json_with_labels() {
        let labels = HashMap::from([(DeviceId(1), "lobby phone".to_owned())]);
        let p = OutboxPayload::new(&notification(2), "Acme", &labels);
        assert_eq!(p.items[0].device_label, "lobby phone");
        assert_eq!(p.items[1].device_label, "2", "unlabelled devices are shown by id");
        assert_eq!((p.stage, p.omitted, p.alarm_count()), (PayloadStage::Resolved, 0, 2));
        assert_eq!(p.items[0].resolved_at, Some(30));
        assert_eq!(p.key, "ee".repeat(16));
        assert_eq!(OutboxPayload::from_json(&p.to_json()).expect("parses"), p);
    }

    #[test]
    fn lists_a_bounded_number_of_items() {
        let p = OutboxPayload::new(&notification(MAX_ITEMS_PER_MESSAGE + 7), "Acme", &HashMap::new());
        assert_eq!((p.items.len(), p.omitted), (MAX_ITEMS_PER_MESSAGE, 7));
        assert_eq!(p.alarm_count(), MAX_ITEMS_PER_MESSAGE as u64 + 7);
    }

    #[test]
    fn rejects_other_versions_garbage_and_oversized_payloads() {
        let mut p = OutboxPayload::new(&notification(1), "Acme", &HashMap::new());
        p.version = 2;
        assert!(OutboxPayload::from_json(&p.to_json()).is_err());
        assert!(OutboxPayload::from_json("{\"version\":1}").is_err());
        assert!(OutboxPayload::from_json(&" ".repeat(MAX_PAYLOAD_BYTES + 1)).is_err());
    }
}
