//! What the outbox keeps for one alarm notification: the alarms it is about with the names the
//! email shows (enterprise, device labels), as versioned JSON. The alarm service produces it from
//! an engine notification; this crate stores, parses and renders it.
//!
//! The message is rendered when it is sent, not when it is queued, so that the outbox worker can
//! merge what a rate limit held back into one digest (ALM-5). The payload is a storage format: it
//! is versioned and kept apart from the engine's in-memory types.

use fleetpulse_proto::{DeviceId, EnterpriseId, StrategyId};
use serde::{Deserialize, Serialize};

use crate::{MailError, OutboxError};

/// Most alarms one queued notification lists; the rest are counted in [`OutboxPayload::omitted`]
/// (a storm grouped into one notification must not make a megabyte email).
pub const MAX_ITEMS_PER_MESSAGE: usize = 100;
/// Largest payload accepted back from the store.
const MAX_PAYLOAD_BYTES: usize = 1 << 20;
/// The payload format written now.
pub const PAYLOAD_VERSION: u32 = 1;

/// Which kind of notification (the engine's `Stage`, as stored).
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
    /// Format version ([`PAYLOAD_VERSION`]).
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
    /// A site incident's notification (issue 18 item 3): its items are a sample of its devices'
    /// alarms. Absent for ordinary alarms (and in payloads queued by older builds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<PayloadIncident>,
}

/// What a site incident's email says besides its sampled alarms.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadIncident {
    /// The site's name when queued.
    pub site_name: String,
    /// The alarm type code the devices raised.
    pub code: u16,
    /// When the incident opened (Unix ms).
    pub opened_at: i64,
    /// Devices of the site.
    pub site_devices: u32,
    /// Devices whose alarm belongs to the incident.
    pub affected: u32,
    /// Of those, how many are back.
    pub back: u32,
    /// When it resolved (resolved notifications).
    pub resolved_at: Option<i64>,
}

impl OutboxPayload {
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
            return Err(MailError::Payload(format!("payload of {} bytes is over the limit", json.len())));
        }
        let payload: OutboxPayload =
            serde_json::from_str(json).map_err(|e| MailError::Payload(format!("payload: {e}")))?;
        if payload.version != PAYLOAD_VERSION {
            return Err(MailError::Payload(format!("payload version {} is not {PAYLOAD_VERSION}", payload.version)));
        }
        Ok(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(items: u32) -> OutboxPayload {
        OutboxPayload {
            version: PAYLOAD_VERSION,
            stage: PayloadStage::Resolved,
            enterprise_id: EnterpriseId(3),
            enterprise_name: "Acme".into(),
            strategy_id: StrategyId(4),
            key: "ee".repeat(16),
            items: (0..items)
                .map(|i| PayloadItem {
                    device_id: DeviceId(u64::from(i) + 1),
                    device_label: "lobby phone".into(),
                    code: 105,
                    first_at: 10,
                    latest_at: 20,
                    count: 2,
                    description: "crash \"x\"\n".into(),
                    resolved_at: Some(30),
                    key: format!("{i:02x}").repeat(16),
                })
                .collect(),
            omitted: 7,
            incident: None,
        }
    }

    #[test]
    fn round_trips_through_json() {
        let p = payload(2);
        assert_eq!(p.alarm_count(), 9, "listed and omitted alarms");
        assert_eq!(OutboxPayload::from_json(&p.to_json()).expect("parses"), p);
    }

    #[test]
    fn rejects_other_versions_garbage_and_oversized_payloads() {
        let mut p = payload(1);
        p.version = 2;
        assert!(OutboxPayload::from_json(&p.to_json()).is_err());
        assert!(OutboxPayload::from_json("{\"version\":1}").is_err());
        assert!(OutboxPayload::from_json(&" ".repeat(MAX_PAYLOAD_BYTES + 1)).is_err());
    }
}
