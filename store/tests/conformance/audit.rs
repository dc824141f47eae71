//! The notification audit ([`NotificationAuditStore`]) and the notification retention.

use super::*;
use fleetpulse_proto::{AlarmTypeCode, DeviceId};

/// Alarm and message entries joined per activation, oldest first; the bounds per activation
/// and per message; the retention pass over the audit, the settled outbox and its item keys
/// (pending messages stay).
pub(crate) async fn notification_audit(store: &Store) {
    let s = &store.entities;
    let entry = |device: u64, at: i64, event: AuditEvent, key: Option<&str>| AlarmAuditEntry {
        enterprise_id: EnterpriseId(1),
        device_id: DeviceId(device),
        code: AlarmTypeCode(105),
        first_at: UnixMillis(100),
        at: UnixMillis(at),
        event,
        receiver: key.map(|_| "ops@example.com".to_owned()),
        message_key: key.map(str::to_owned),
        detail: format!("{} at {at}", event.as_str()),
    };
    let message = |key: &str, at: i64, event: AuditEvent| MessageAuditEntry {
        message_key: key.into(),
        receiver: "ops@example.com".into(),
        at: UnixMillis(at),
        event,
        detail: format!("{} at {at}", event.as_str()),
    };
    s.record_alarm_audit(vec![
        entry(1, 100, AuditEvent::SuppressedByWindow, None),
        entry(1, 200, AuditEvent::Released, None),
        entry(1, 210, AuditEvent::Planned, Some("k-digest")),
        entry(2, 210, AuditEvent::Planned, Some("k-digest")),
        entry(3, 50, AuditEvent::Planned, Some("k-other")),
    ])
    .await
    .unwrap();
    s.record_message_audit(vec![
        message("k-digest", 215, AuditEvent::Retried),
        message("k-digest", 230, AuditEvent::Sent),
        message("k-other", 60, AuditEvent::Sent),
    ])
    .await
    .unwrap();
    let story = s.notification_audit(DeviceId(1), AlarmTypeCode(105), UnixMillis(100), 100).await.unwrap();
    let events: Vec<_> = story.iter().map(|e| (e.at.0, e.event)).collect();
    assert_eq!(
        events,
        [
            (100, AuditEvent::SuppressedByWindow),
            (200, AuditEvent::Released),
            (210, AuditEvent::Planned),
            (215, AuditEvent::Retried),
            (230, AuditEvent::Sent)
        ],
        "the activation's entries and those of its message, oldest first; not another message's"
    );
    assert_eq!(story[2].message_key.as_deref(), Some("k-digest"));
    assert_eq!(story[4].detail, "sent at 230");
    let limited = s.notification_audit(DeviceId(1), AlarmTypeCode(105), UnixMillis(100), 2).await.unwrap();
    assert_eq!(limited.len(), 2);
    assert!(s.notification_audit(DeviceId(1), AlarmTypeCode(105), UnixMillis(99), 10).await.unwrap().is_empty());

    // Bounds: per activation, per message, and the detail's length.
    let many: Vec<_> =
        (0..MAX_AUDIT_PER_ACTIVATION + 5).map(|i| entry(9, 1_000 + i64::from(i), AuditEvent::Planned, None)).collect();
    s.record_alarm_audit(many).await.unwrap();
    let kept = s.notification_audit(DeviceId(9), AlarmTypeCode(105), UnixMillis(100), MAX_AUDIT_READ).await.unwrap();
    assert_eq!(kept.len(), MAX_AUDIT_PER_ACTIVATION as usize);
    let mut long = entry(8, 1, AuditEvent::Planned, Some("k-long"));
    long.detail = "é".repeat(MAX_AUDIT_DETAIL);
    s.record_alarm_audit(vec![long]).await.unwrap();
    let flood: Vec<_> =
        (0..MAX_AUDIT_PER_MESSAGE + 3).map(|i| message("k-long", 2 + i64::from(i), AuditEvent::Deferred)).collect();
    s.record_message_audit(flood).await.unwrap();
    let story = s.notification_audit(DeviceId(8), AlarmTypeCode(105), UnixMillis(100), MAX_AUDIT_READ).await.unwrap();
    assert_eq!(story.len(), 1 + MAX_AUDIT_PER_MESSAGE as usize);
    assert!(story[0].detail.len() <= MAX_AUDIT_DETAIL && story[0].detail.chars().all(|c| c == 'é'));
    let too_many = vec![message("x", 1, AuditEvent::Sent); MAX_AUDIT_BATCH + 1];
    invalid(s.record_message_audit(too_many).await, "at most");

    // Retention: old settled outbox messages and their item keys go, pending ones stay.
    let queue = |key: &str, item: &str| NewOutboxMessage {
        key: key.into(),
        enterprise_id: EnterpriseId(1),
        receiver: "ops@example.com".into(),
        payload: "{}".into(),
        not_before: UnixMillis(0),
        item_keys: vec![item.into()],
    };
    s.enqueue_outbox_batch(
        vec![queue("old-sent", "i-old-sent"), queue("old-pending", "i-old-pending")],
        UnixMillis(10),
    )
    .await
    .unwrap();
    s.enqueue_outbox(queue("new-sent", "i-new-sent"), UnixMillis(5_000)).await.unwrap();
    let due = s.due_outbox(UnixMillis(10_000), 10).await.unwrap();
    for m in due.iter().filter(|m| m.key.ends_with("sent")) {
        s.record_outbox_attempt(m.id, OutboxState::Sent, UnixMillis(5_000), UnixMillis(5_000), None).await.unwrap();
    }
    let mut total = PruneCounts::default();
    loop {
        let n = s.prune_notifications(UnixMillis(1_000), 2).await.unwrap();
        if n == PruneCounts::default() {
            break;
        }
        total.audit += n.audit;
        total.outbox += n.outbox;
        total.items += n.items;
    }
    // (Earlier suites' settled messages may go too: they are as old.)
    assert!(total.outbox >= 1 && total.items >= 1, "{total:?}");
    assert!(total.audit >= 8, "entries before 1000: {total:?}");
    let known =
        s.outbox_known_items(&["i-old-sent".into(), "i-old-pending".into(), "i-new-sent".into()]).await.unwrap();
    let mut known: Vec<&str> = known.iter().map(String::as_str).collect();
    known.sort_unstable();
    assert_eq!(known, ["i-new-sent", "i-old-pending"]);
    assert!(s.notification_audit(DeviceId(1), AlarmTypeCode(105), UnixMillis(100), 10).await.unwrap().is_empty());
    assert_eq!(
        s.notification_audit(DeviceId(9), AlarmTypeCode(105), UnixMillis(100), 10).await.unwrap().len(),
        10,
        "newer entries stay"
    );
}
