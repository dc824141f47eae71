//! The notification outbox ([`OutboxStore`]): idempotency keys, item keys, due messages.

use super::*;
use fleetpulse_proto::AlarmTypeCode;

/// The durable notification outbox (ALM-5): one message per idempotency key, due messages in
/// order, attempts recorded; only pending messages change.
pub(crate) async fn outbox(store: &Store) {
    let s = &store.entities;
    let message = |key: &str, not_before| NewOutboxMessage {
        key: key.into(),
        enterprise_id: EnterpriseId(1),
        receiver: "noc@example.com".into(),
        payload: format!("{{\"key\":\"{key}\"}}"),
        not_before: UnixMillis(not_before),
        item_keys: Vec::new(),
    };
    assert!(s.enqueue_outbox(message("k1", 100), UnixMillis(50)).await.unwrap());
    assert!(s.enqueue_outbox(message("k2", 200), UnixMillis(60)).await.unwrap());
    assert!(!s.enqueue_outbox(message("k1", 10), UnixMillis(70)).await.unwrap(), "same key: ignored");
    assert!(s.due_outbox(UnixMillis(99), 10).await.unwrap().is_empty());
    let due = s.due_outbox(UnixMillis(250), 10).await.unwrap();
    assert_eq!(due.iter().map(|m| m.key.as_str()).collect::<Vec<_>>(), ["k1", "k2"]);
    let first = &due[0];
    assert_eq!(
        (first.state, first.attempts, first.created_at, first.payload.as_str()),
        (OutboxState::Pending, 0, UnixMillis(50), "{\"key\":\"k1\"}")
    );
    // A transient failure: pending again later, the attempt counted.
    let retry = s.record_outbox_attempt(
        first.id,
        OutboxState::Pending,
        UnixMillis(260),
        UnixMillis(1_000),
        Some("451 try again".into()),
    );
    let retry = retry.await.unwrap().unwrap();
    assert_eq!((retry.state, retry.attempts, retry.next_attempt_at), (OutboxState::Pending, 1, UnixMillis(1_000)));
    assert_eq!(retry.last_error.as_deref(), Some("451 try again"));
    assert_eq!(s.due_outbox(UnixMillis(300), 10).await.unwrap().len(), 1, "k1 waits for its retry");
    let sent = s
        .record_outbox_attempt(first.id, OutboxState::Sent, UnixMillis(1_010), UnixMillis(1_010), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((sent.state, sent.attempts, sent.sent_at), (OutboxState::Sent, 2, Some(UnixMillis(1_010))));
    // A sent message does not change again (a late duplicate outcome is ignored).
    let late =
        s.record_outbox_attempt(first.id, OutboxState::Failed, UnixMillis(1_020), UnixMillis(1_020), Some("x".into()));
    assert_eq!(late.await.unwrap().map(|m| (m.state, m.attempts)), Some((OutboxState::Sent, 2)));
    let failed = s.record_outbox_attempt(
        due[1].id,
        OutboxState::Failed,
        UnixMillis(1_030),
        UnixMillis(1_030),
        Some("550 rejected".into()),
    );
    assert_eq!(failed.await.unwrap().map(|m| m.state), Some(OutboxState::Failed));
    assert!(s.due_outbox(UnixMillis(10_000), 10).await.unwrap().is_empty());
    assert_eq!(
        s.record_outbox_attempt(999_999, OutboxState::Sent, UnixMillis(1), UnixMillis(1), None).await.unwrap(),
        None
    );

    // Several outcomes in one call (a digest, or a pass of the worker).
    assert!(s.enqueue_outbox(message("k3", 100), UnixMillis(80)).await.unwrap());
    assert!(s.enqueue_outbox(message("k4", 100), UnixMillis(90)).await.unwrap());
    let due = s.due_outbox(UnixMillis(10_000), 10).await.unwrap();
    assert_eq!(due.iter().map(|m| m.key.as_str()).collect::<Vec<_>>(), ["k3", "k4"]);
    let attempt = |id, outcome, next: i64| OutboxAttempt {
        id,
        outcome,
        at: UnixMillis(10_000),
        next_attempt_at: UnixMillis(next),
        error: None,
    };
    let attempts = vec![
        attempt(due[0].id, OutboxState::Sent, 10_000),
        attempt(due[1].id, OutboxState::Pending, 20_000),
        attempt(first.id, OutboxState::Pending, 0), // already sent: unchanged
        attempt(999_999, OutboxState::Sent, 0),     // unknown: ignored
    ];
    s.record_outbox_attempts(attempts).await.unwrap();
    let due = s.due_outbox(UnixMillis(19_999), 10).await.unwrap();
    assert!(due.is_empty(), "k3 sent, k4 waits: {due:?}");
    let due = s.due_outbox(UnixMillis(20_000), 10).await.unwrap();
    assert_eq!(due.iter().map(|m| (m.key.as_str(), m.attempts)).collect::<Vec<_>>(), [("k4", 1)]);
    let too_many = vec![attempt(due[0].id, OutboxState::Sent, 0); fleetpulse_store::MAX_OUTBOX_BATCH + 1];
    assert!(s.record_outbox_attempts(too_many).await.is_err());
    assert_eq!(s.due_outbox(UnixMillis(20_000), 10).await.unwrap().len(), 1, "an over-long call changes nothing");
    s.record_outbox_attempts(vec![attempt(due[0].id, OutboxState::Sent, 0)]).await.unwrap();
    assert!(s.due_outbox(UnixMillis(i64::MAX), 10).await.unwrap().is_empty());
}

/// Item keys of outbox messages (exactly-once notification items): recorded with a newly queued
/// message, reported by `outbox_known_items`; batches queue per message in one transaction.
/// Runs after `outbox`, which leaves nothing due and queued `k1`.
pub(crate) async fn outbox_items(store: &Store) {
    let s = &store.entities;
    let message = |key: &str, items: &[&str]| NewOutboxMessage {
        key: key.into(),
        enterprise_id: EnterpriseId(1),
        receiver: "noc@example.com".into(),
        payload: format!("payload of {key}"),
        not_before: UnixMillis(20_000),
        item_keys: items.iter().map(|&i| i.to_owned()).collect(),
    };
    let strings = |keys: &[&str]| keys.iter().map(|&k| k.to_owned()).collect::<Vec<String>>();
    let known = |keys: Vec<String>| async move {
        let mut known = s.outbox_known_items(&keys).await.unwrap();
        known.sort();
        known
    };
    let due_keys = || async {
        s.due_outbox(UnixMillis(30_000), 5_000).await.unwrap().into_iter().map(|m| m.key).collect::<Vec<_>>()
    };

    assert!(known(strings(&["a1", "a2"])).await.is_empty(), "nothing recorded yet");
    assert!(s.enqueue_outbox(message("m1", &["a1", "a2"]), UnixMillis(20_000)).await.unwrap());
    assert_eq!(known(strings(&["x", "a2", "y", "a1", "a2"])).await, ["a1", "a2"], "known and unknown keys mixed");
    // A message whose key was queued before changes nothing: its item keys are not recorded.
    assert!(!s.enqueue_outbox(message("m1", &["a3"]), UnixMillis(20_001)).await.unwrap());
    assert!(known(strings(&["a3"])).await.is_empty());
    assert!(s.outbox_known_items(&[]).await.unwrap().is_empty());

    // A batch: a duplicate key inside it, a key queued earlier (by `outbox` and above), an item
    // key shared inside the batch and one recorded before.
    let batch = vec![
        message("c2", &["i1", "i2"]),
        message("c2", &["i9"]),
        message("k1", &["i8"]),
        message("c1", &["i2", "i3"]),
        message("m1", &["i7"]),
        message("c3", &["a1", "i4"]),
    ];
    let queued = s.enqueue_outbox_batch(batch, UnixMillis(20_002)).await.unwrap();
    assert_eq!(queued, [true, false, false, true, false, true]);
    assert_eq!(
        known(strings(&["i1", "i2", "i3", "i4", "i7", "i8", "i9", "a1", "a3"])).await,
        ["a1", "i1", "i2", "i3", "i4"]
    );
    // Equally due messages of a batch come in batch order; the first of a duplicate key stays.
    let due = s.due_outbox(UnixMillis(30_000), 100).await.unwrap();
    assert_eq!(due.iter().map(|m| m.key.as_str()).collect::<Vec<_>>(), ["m1", "c2", "c1", "c3"]);
    assert_eq!((due[1].payload.as_str(), due[1].created_at), ("payload of c2", UnixMillis(20_002)));
    assert!(s.enqueue_outbox_batch(Vec::new(), UnixMillis(20_003)).await.unwrap().is_empty());

    // Over the limit: an error, and nothing of the batch is queued or recorded.
    let too_many: Vec<_> =
        (0..=MAX_OUTBOX_BATCH).map(|i| message(&format!("big-{i}"), &[format!("big-item-{i}").as_str()])).collect();
    let refused = s.enqueue_outbox_batch(too_many, UnixMillis(20_004)).await;
    assert!(matches!(refused, Err(StoreError::InvalidInput(_))), "{refused:?}");
    assert_eq!(due_keys().await, ["m1", "c2", "c1", "c3"]);
    assert!(known(vec!["big-item-0".into(), format!("big-item-{MAX_OUTBOX_BATCH}")]).await.is_empty());

    // A batch failing part-way (an enterprise id no backend can store) changes nothing either.
    let mut unstorable = message("atomic-2", &["atomic-item-2"]);
    unstorable.enterprise_id = EnterpriseId(u64::MAX);
    let failed = s.enqueue_outbox_batch(vec![message("atomic-1", &["atomic-item-1"]), unstorable], UnixMillis(20_004));
    assert!(failed.await.is_err());
    assert_eq!(due_keys().await, ["m1", "c2", "c1", "c3"]);
    assert!(known(strings(&["atomic-item-1", "atomic-item-2"])).await.is_empty());

    // The largest batch and the largest lookup (several chunks on SQLite) are served whole.
    let full: Vec<_> = (0..MAX_OUTBOX_BATCH)
        .map(|i| message(&format!("full-{i:04}"), &[format!("full-item-{i:04}").as_str()]))
        .collect();
    let queued = s.enqueue_outbox_batch(full, UnixMillis(20_005)).await.unwrap();
    assert!(queued.len() == MAX_OUTBOX_BATCH && queued.iter().all(|&q| q));
    let mut lookup: Vec<String> = (0..MAX_OUTBOX_ITEM_QUERY - 3).map(|i| format!("unknown-{i}")).collect();
    lookup.extend(strings(&["full-item-0999", "i3", "full-item-0000"]));
    assert_eq!(known(lookup).await, ["full-item-0000", "full-item-0999", "i3"]);
    let too_many: Vec<String> = (0..=MAX_OUTBOX_ITEM_QUERY).map(|i| format!("i{i}")).collect();
    assert!(matches!(s.outbox_known_items(&too_many).await, Err(StoreError::InvalidInput(_))));
    assert_eq!(due_keys().await.len(), 4 + MAX_OUTBOX_BATCH);
}

/// Due messages leaving out some receivers (those over their rate limit): the others in the
/// order of `due_outbox`, the limit applied to what is left. Runs after `outbox_items`, which
/// leaves a backlog of 1,004 messages to `noc@example.com` due from 20,000 on.
pub(crate) async fn outbox_except(store: &Store) {
    let s = &store.entities;
    let message = |key: &str, receiver: &str, not_before| NewOutboxMessage {
        key: key.into(),
        enterprise_id: EnterpriseId(1),
        receiver: format!("{receiver}@example.com"),
        payload: format!("payload of {key}"),
        not_before: UnixMillis(not_before),
        item_keys: Vec::new(),
    };
    // Queued out of time order; x2/x3 and x6/x7 share a time (queue order breaks the tie).
    let batch = vec![
        message("x5", "b", 10_003),
        message("x1", "a", 10_000),
        message("x6", "c", 10_004),
        message("x2", "b", 10_001),
        message("x7", "a", 10_004),
        message("x3", "c", 10_001),
        message("x4", "a", 10_002),
        message("x8", "b", 14_000),
        message("x9", "c", 25_000),
    ];
    assert!(s.enqueue_outbox_batch(batch, UnixMillis(9_000)).await.unwrap().iter().all(|&q| q));
    let receivers = |names: &[&str]| names.iter().map(|n| format!("{n}@example.com")).collect::<Vec<String>>();
    let now = UnixMillis(12_000);
    let except = |limit: u32, names: Vec<String>| async move {
        let due = s.due_outbox_except(now, limit, &names).await.unwrap();
        due.into_iter().map(|m| m.key).collect::<Vec<_>>()
    };

    let all = s.due_outbox(now, 100).await.unwrap();
    assert_eq!(all.iter().map(|m| m.key.as_str()).collect::<Vec<_>>(), ["x1", "x2", "x3", "x4", "x5", "x6", "x7"]);
    assert_eq!(s.due_outbox_except(now, 100, &[]).await.unwrap(), all, "leaving out none is due_outbox");
    assert_eq!(s.due_outbox_except(now, 3, &[]).await.unwrap(), s.due_outbox(now, 3).await.unwrap());
    assert_eq!(except(100, receivers(&["a"])).await, ["x2", "x3", "x5", "x6"]);
    assert_eq!(except(100, receivers(&["b", "c"])).await, ["x1", "x4", "x7"]);
    assert_eq!(except(100, receivers(&["c", "b", "c"])).await, ["x1", "x4", "x7"], "repeated receivers");
    assert!(except(100, receivers(&["a", "b", "c"])).await.is_empty());
    assert_eq!(except(100, receivers(&["nobody"])).await, ["x1", "x2", "x3", "x4", "x5", "x6", "x7"]);
    assert_eq!(except(100, vec!["A@example.com".into()]).await.len(), 7, "receivers compare exactly");
    // The limit applies after leaving receivers out.
    assert_eq!(except(2, receivers(&["a"])).await, ["x2", "x3"]);
    assert_eq!(except(2, receivers(&["b", "c"])).await, ["x1", "x4"]);
    assert!(except(0, receivers(&["a"])).await.is_empty());

    // The longest list: every receiver counts, wherever it is in the list.
    let mut full: Vec<String> = (0..MAX_OUTBOX_EXCEPT - 2).map(|i| format!("filler-{i:04}@example.com")).collect();
    full.insert(0, "a@example.com".into());
    full.insert(MAX_OUTBOX_EXCEPT / 2, "c@example.com".into());
    assert_eq!(full.len(), MAX_OUTBOX_EXCEPT);
    assert_eq!(except(100, full.clone()).await, ["x2", "x5"]);
    // Over the bound: an error.
    full.push("b@example.com".into());
    let refused = s.due_outbox_except(now, 100, &full).await;
    assert!(matches!(refused, Err(StoreError::InvalidInput(_))), "{refused:?}");

    // Only pending messages: a sent one is gone whatever is left out.
    let x4 = all.iter().find(|m| m.key == "x4").unwrap().id;
    s.record_outbox_attempt(x4, OutboxState::Sent, UnixMillis(12_001), UnixMillis(12_001), None).await.unwrap();
    assert_eq!(except(100, receivers(&["b", "c"])).await, ["x1", "x7"]);

    // The starvation this serves: a backlog (to noc@) fills every batch and hides x9 behind it;
    // leaving its receiver out reaches the others.
    let later = UnixMillis(30_000);
    let due = s.due_outbox(later, 20).await.unwrap();
    assert_eq!(
        due.iter().map(|m| m.key.as_str()).take(8).collect::<Vec<_>>(),
        ["x1", "x2", "x3", "x5", "x6", "x7", "x8", "m1"]
    );
    assert!(due.iter().all(|m| m.key != "x9"));
    let noc = receivers(&["noc"]);
    let others = s.due_outbox_except(later, 20, &noc).await.unwrap();
    assert_eq!(
        others.iter().map(|m| m.key.as_str()).collect::<Vec<_>>(),
        ["x1", "x2", "x3", "x5", "x6", "x7", "x8", "x9"]
    );
    let backlog = s.due_outbox_except(later, 5_000, &receivers(&["a", "b", "c"])).await.unwrap();
    assert_eq!(backlog.len(), 4 + MAX_OUTBOX_BATCH);
    assert!(backlog.iter().all(|m| m.receiver == "noc@example.com"));
    assert!(backlog.windows(2).all(|w| (w[0].next_attempt_at, w[0].id) < (w[1].next_attempt_at, w[1].id)));
}

/// The ids a batch answers are the ids its messages were queued under (what the outbox worker
/// takes a fresh message by, without reading it back); none for a message not queued (its key
/// queued before, or earlier in the batch).
pub(crate) async fn outbox_ids(store: &Store) {
    let s = &store.entities;
    let message = |key: &str| NewOutboxMessage {
        key: key.into(),
        enterprise_id: EnterpriseId(1),
        receiver: "ids@example.com".into(),
        payload: format!("payload of {key}"),
        not_before: UnixMillis(900_000),
        item_keys: vec![format!("{key}-item")],
    };
    let first =
        s.enqueue_outbox_batch_ids(vec![message("id-1"), message("id-2"), message("id-1")], UnixMillis(800_000));
    let first = first.await.unwrap();
    assert!(first[0].is_some() && first[1].is_some() && first[0] != first[1] && first[2].is_none(), "{first:?}");
    let second = s.enqueue_outbox_batch_ids(vec![message("id-2"), message("id-3")], UnixMillis(800_001));
    let second = second.await.unwrap();
    assert!(second[0].is_none() && second[1].is_some(), "{second:?}");
    assert!(s.enqueue_outbox_batch_ids(Vec::new(), UnixMillis(800_002)).await.unwrap().is_empty());
    assert_eq!(s.outbox_known_items(&["id-3-item".into()]).await.unwrap(), ["id-3-item"]);
    for (id, key, created) in [(first[0], "id-1", 800_000), (first[1], "id-2", 800_000), (second[1], "id-3", 800_001)] {
        let id = id.unwrap();
        let sent = s.record_outbox_attempt(id, OutboxState::Sent, UnixMillis(900_001), UnixMillis(900_001), None);
        let sent = sent.await.unwrap().unwrap();
        assert_eq!((sent.id, sent.key.as_str(), sent.created_at), (id, key, UnixMillis(created)));
        assert_eq!((sent.receiver.as_str(), sent.state), ("ids@example.com", OutboxState::Sent));
    }
}

/// A batch records its messages' planned audit entries in its own transaction, and only for
/// the messages it newly queued: queued again (a retry), nothing is recorded twice; too many
/// entries and nothing changes.
pub(crate) async fn outbox_audited(store: &Store) {
    let s = &store.entities;
    let message = |key: &str| audited_message(key, "audited@example.com", vec![format!("{key}-item")]);
    let planned = |device, key: &str| planned_entry(device, key, "audited@example.com");
    let story = |device| audit_story(s.as_ref(), device);
    // A message with no entries (the list is shorter) leaves nothing to record.
    let first = s.enqueue_outbox_batch_audited(
        vec![message("au-1"), message("au-2"), message("au-3")],
        vec![vec![planned(9_001, "au-1"), planned(9_002, "au-1")], vec![planned(9_003, "au-2")]],
        UnixMillis(800_000),
    );
    let first = first.await.unwrap();
    assert!(first.iter().all(Option::is_some), "{first:?}");
    assert_eq!(story(9_001).await, [planned_of("au-1")]);
    assert_eq!(story(9_002).await, [planned_of("au-1")]);
    assert_eq!(story(9_003).await, [planned_of("au-2")]);
    // Queued again with a new message: only the new message's entries are recorded.
    let again = s.enqueue_outbox_batch_audited(
        vec![message("au-1"), message("au-4")],
        vec![vec![planned(9_001, "au-1")], vec![planned(9_001, "au-4")]],
        UnixMillis(800_001),
    );
    let again = again.await.unwrap();
    assert!(again[0].is_none() && again[1].is_some(), "{again:?}");
    assert_eq!(story(9_001).await, [planned_of("au-1"), planned_of("au-4")]);
    // Too many entries: refused whole, neither the message nor an entry recorded.
    let many = vec![(0..=MAX_AUDIT_BATCH as u64).map(|_| planned(9_005, "au-5")).collect()];
    invalid(s.enqueue_outbox_batch_audited(vec![message("au-5")], many, UnixMillis(800_002)).await, "audit entries");
    assert!(story(9_005).await.is_empty());
    assert!(s.outbox_known_items(&["au-5-item".into()]).await.unwrap().is_empty(), "au-5 not queued");
}

/// Outcomes record their messages' audit entries in their own transaction: both or neither;
/// too many entries and nothing changes, the outcome included.
pub(crate) async fn outbox_attempts_audited(store: &Store) {
    let s = &store.entities;
    let message = |key: &str| audited_message(key, "outcomes@example.com", Vec::new());
    let planned = |device, key: &str| planned_entry(device, key, "outcomes@example.com");
    let entry = |key: &str, event: AuditEvent, at: i64| MessageAuditEntry {
        message_key: key.into(),
        receiver: "outcomes@example.com".into(),
        at: UnixMillis(at),
        event,
        detail: format!("{event:?} {key}"),
    };
    let attempt = |id: u64, outcome: OutboxState| OutboxAttempt {
        id,
        outcome,
        at: UnixMillis(900_001),
        next_attempt_at: UnixMillis(if outcome == OutboxState::Pending { 990_000 } else { 900_001 }),
        error: (outcome != OutboxState::Sent).then(|| "refused".to_owned()),
    };
    let story = |device| audit_story(s.as_ref(), device);
    let ids = s.enqueue_outbox_batch_audited(
        vec![message("oa-1"), message("oa-2")],
        vec![vec![planned(9_101, "oa-1")], vec![planned(9_102, "oa-2")]],
        UnixMillis(800_000),
    );
    let ids: Vec<u64> = ids.await.unwrap().into_iter().map(Option::unwrap).collect();
    s.record_outbox_attempts_audited(
        vec![attempt(ids[0], OutboxState::Sent), attempt(ids[1], OutboxState::Pending)],
        vec![entry("oa-1", AuditEvent::Sent, 900_001), entry("oa-2", AuditEvent::Retried, 900_001)],
    )
    .await
    .unwrap();
    assert_eq!(story(9_101).await, [planned_of("oa-1"), (AuditEvent::Sent, "Sent oa-1".into())]);
    assert_eq!(story(9_102).await, [planned_of("oa-2"), (AuditEvent::Retried, "Retried oa-2".into())]);
    // Too many entries: refused whole, neither the outcome nor an entry recorded.
    let many = (0..=MAX_AUDIT_BATCH as i64).map(|i| entry("oa-2", AuditEvent::Sent, 990_000 + i)).collect();
    invalid(s.record_outbox_attempts_audited(vec![attempt(ids[1], OutboxState::Sent)], many).await, "audit entries");
    assert_eq!(story(9_102).await.len(), 2);
    // oa-2 is pending after one attempt (the refused batch counted none); oa-1 stays sent.
    let later = |id, outcome| s.record_outbox_attempt(id, outcome, UnixMillis(990_000), UnixMillis(990_000), None);
    let retried = later(ids[1], OutboxState::Sent).await.unwrap().unwrap();
    assert_eq!((retried.state, retried.attempts), (OutboxState::Sent, 2));
    let sent = later(ids[0], OutboxState::Failed).await.unwrap().unwrap();
    assert_eq!((sent.state, sent.attempts, sent.sent_at), (OutboxState::Sent, 1, Some(UnixMillis(900_001))));
    // Entries alone (deferrals, nothing sent) are written too.
    s.record_outbox_attempts_audited(Vec::new(), vec![entry("oa-2", AuditEvent::Deferred, 990_001)]).await.unwrap();
    assert_eq!(story(9_102).await.last().map(|e| e.0), Some(AuditEvent::Deferred));
}

/// A message to `receiver` under the key `key`, carrying `item_keys`.
fn audited_message(key: &str, receiver: &str, item_keys: Vec<String>) -> NewOutboxMessage {
    NewOutboxMessage {
        key: key.into(),
        enterprise_id: EnterpriseId(1),
        receiver: receiver.into(),
        payload: format!("payload of {key}"),
        not_before: UnixMillis(900_000),
        item_keys,
    }
}

/// The "planned" entry of alarm 105 on `device` for the message `key` to `receiver`.
fn planned_entry(device: u64, key: &str, receiver: &str) -> AlarmAuditEntry {
    AlarmAuditEntry {
        enterprise_id: EnterpriseId(1),
        device_id: DeviceId(device),
        code: AlarmTypeCode(105),
        first_at: UnixMillis(700_000),
        at: UnixMillis(800_000),
        event: AuditEvent::Planned,
        receiver: Some(receiver.into()),
        message_key: Some(key.into()),
        detail: format!("planned {key}"),
    }
}

/// What [`planned_entry`] reads as in the audit.
fn planned_of(key: &str) -> (AuditEvent, String) {
    (AuditEvent::Planned, format!("planned {key}"))
}

/// The audit of alarm 105 on `device`, as (event, detail) in order.
async fn audit_story(s: &dyn EntityStore, device: u64) -> Vec<(AuditEvent, String)> {
    let entries = s.notification_audit(DeviceId(device), AlarmTypeCode(105), UnixMillis(700_000), 100).await;
    entries.unwrap().into_iter().map(|e| (e.event, e.detail)).collect()
}
