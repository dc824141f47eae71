//! The alarm service's entries in the notification audit (issue 18 item 4): a notification
//! queued for each of its alarms (alone or grouped with others, which strategy, which
//! receiver, which outbox message), and what maintenance windows did. The outbox worker adds
//! what became of each message (deferred, retried, sent, failed).

use fleetpulse_alarm_engine::{Notification, Receiver, Stage};
use fleetpulse_proto::UnixMillis;
use fleetpulse_store::{AlarmAuditEntry, AuditEvent, WindowMark, WindowMarkState};

/// One planned entry per alarm item of `n`, queued at `at`.
pub(crate) fn planned(n: &Notification, at: UnixMillis) -> Vec<AlarmAuditEntry> {
    let Receiver::Email(receiver) = &n.receiver;
    let stage = match n.stage {
        Stage::Firing => "firing",
        Stage::Repeat => "reminder",
        Stage::Resolved => "resolved",
    };
    let others = n.items.len().saturating_sub(1);
    let grouping = match others {
        0 => "alone".to_owned(),
        1 => "grouped with 1 other alarm".to_owned(),
        n => format!("grouped with {n} other alarms"),
    };
    n.items
        .iter()
        .map(|item| AlarmAuditEntry {
            enterprise_id: n.enterprise_id,
            device_id: item.device_id,
            code: item.code,
            first_at: item.first_at,
            at,
            event: AuditEvent::Planned,
            receiver: Some(receiver.clone()),
            message_key: Some(n.key.to_string()),
            detail: format!("{stage} notification by strategy {}, {grouping}", n.strategy_id),
        })
        .collect()
}

/// The entry of a maintenance window's step.
pub(crate) fn window_step(mark: &WindowMark) -> AlarmAuditEntry {
    let window = format!("window {} “{}”", mark.window_id, mark.window_name);
    let (event, detail) = match mark.state {
        WindowMarkState::Suppressed => (
            AuditEvent::SuppressedByWindow,
            match mark.until {
                Some(until) => format!("held back by {window} until {}", until.0),
                None => format!("held back by {window} while its task runs"),
            },
        ),
        WindowMarkState::Released => {
            (AuditEvent::Released, format!("{window} ended with the alarm active: notified now"))
        }
        WindowMarkState::Dropped => {
            (AuditEvent::SuppressedAcknowledged, format!("{window} ended with the alarm acknowledged: not notified"))
        }
    };
    AlarmAuditEntry {
        enterprise_id: mark.enterprise_id,
        device_id: mark.device_id,
        code: mark.code,
        first_at: mark.first_at,
        at: mark.at,
        event,
        receiver: None,
        message_key: None,
        detail,
    }
}
