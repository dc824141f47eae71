//! The outbox payload of an engine [`Notification`]: the mailer's storage format
//! ([`OutboxPayload`]) with the names the email shows, at most [`MAX_ITEMS_PER_MESSAGE`] alarms
//! listed and the rest counted.

use std::collections::HashMap;

use fleetpulse_alarm_engine::{Notification, Stage};
use fleetpulse_mailer::{
    MAX_ITEMS_PER_MESSAGE, OutboxPayload, PAYLOAD_VERSION, PayloadIncident, PayloadItem, PayloadStage,
};
use fleetpulse_proto::DeviceId;

/// The payload of `n`, with the names to show; devices missing from `labels` are shown by id.
/// A site incident's notification counts every device of the incident (its items are a sample).
pub(crate) fn outbox_payload(
    n: &Notification,
    enterprise_name: &str,
    labels: &HashMap<DeviceId, String>,
    site_name: &str,
) -> OutboxPayload {
    let items: Vec<PayloadItem> = n
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
        version: PAYLOAD_VERSION,
        stage: payload_stage(n.stage),
        enterprise_id: n.enterprise_id,
        enterprise_name: enterprise_name.to_owned(),
        strategy_id: n.strategy_id,
        key: n.key.to_string(),
        omitted: match &n.incident {
            Some(i) => i.counts.affected.saturating_sub(u32::try_from(items.len()).unwrap_or(u32::MAX)),
            None => u32::try_from(n.items.len().saturating_sub(MAX_ITEMS_PER_MESSAGE)).unwrap_or(u32::MAX),
        },
        items,
        incident: n.incident.map(|i| PayloadIncident {
            site_name: site_name.to_owned(),
            code: i.key.code.0,
            opened_at: i.key.opened_at.0,
            site_devices: i.counts.site_devices,
            affected: i.counts.affected,
            back: i.counts.back,
            resolved_at: i.resolved_at.map(|t| t.0),
        }),
    }
}

/// The engine's stage as stored.
fn payload_stage(stage: Stage) -> PayloadStage {
    match stage {
        Stage::Firing => PayloadStage::Firing,
        Stage::Repeat => PayloadStage::Repeat,
        Stage::Resolved => PayloadStage::Resolved,
    }
}

#[cfg(test)]
mod tests {
    use fleetpulse_alarm_engine::{IdempotencyKey, NotifiedAlarm, Receiver};
    use fleetpulse_proto::{AlarmTypeCode, EnterpriseId, StrategyId, UnixMillis};

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
            incident: None,
        }
    }

    #[test]
    fn round_trips_through_json_with_labels() {
        let labels = HashMap::from([(DeviceId(1), "lobby phone".to_owned())]);
        let p = outbox_payload(&notification(2), "Acme", &labels, "");
        assert_eq!(p.items[0].device_label, "lobby phone");
        assert_eq!(p.items[1].device_label, "2", "unlabelled devices are shown by id");
        assert_eq!((p.stage, p.omitted, p.alarm_count()), (PayloadStage::Resolved, 0, 2));
        assert_eq!(p.items[0].resolved_at, Some(30));
        assert_eq!(p.key, "ee".repeat(16));
        assert_eq!(OutboxPayload::from_json(&p.to_json()).expect("parses"), p);
    }

    #[test]
    fn lists_a_bounded_number_of_items() {
        let p = outbox_payload(&notification(MAX_ITEMS_PER_MESSAGE + 7), "Acme", &HashMap::new(), "");
        assert_eq!((p.items.len(), p.omitted), (MAX_ITEMS_PER_MESSAGE, 7));
        assert_eq!(p.alarm_count(), MAX_ITEMS_PER_MESSAGE as u64 + 7);
    }

    #[test]
    fn stages_are_stored_as_they_are() {
        for (stage, stored) in [
            (Stage::Firing, PayloadStage::Firing),
            (Stage::Repeat, PayloadStage::Repeat),
            (Stage::Resolved, PayloadStage::Resolved),
        ] {
            assert_eq!(payload_stage(stage), stored);
        }
    }
}
