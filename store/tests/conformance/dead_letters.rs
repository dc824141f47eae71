//! Dead letters ([`DeadLetterStore`]): recorded with their copy, listed by stage in id order,
//! bounded (the oldest deleted beyond the cap, counted), deleted once, oversized copies refused.

use super::*;

fn letter(stage: DeadLetterStage, n: i64) -> NewDeadLetter {
    NewDeadLetter {
        stage,
        reason: DeadLetterReason { code: "store_unavailable", detail: format!("attempt failed {n}: é") },
        enterprise_id: Some(EnterpriseId(7)),
        device_id: (n % 2 == 0).then_some(DeviceId(9)),
        payload: serde_json::json!({ "kind": "test", "n": n }),
        attempts: 8,
        at: UnixMillis(1_000 + n),
    }
}

pub(crate) async fn dead_letters(store: &Store) {
    let s = &store.entities;
    let (first, evicted) = s.record_dead_letter(letter(DeadLetterStage::AlarmEffects, 0), 3).await.unwrap();
    assert_eq!(evicted, 0);
    let stored = s.dead_letter(first).await.unwrap().expect("stored");
    assert_eq!(stored.stage, DeadLetterStage::AlarmEffects);
    assert_eq!(stored.reason, "store_unavailable");
    assert_eq!(stored.detail, "attempt failed 0: é");
    assert_eq!((stored.enterprise_id, stored.device_id), (Some(EnterpriseId(7)), Some(DeviceId(9))));
    assert_eq!(stored.payload, serde_json::json!({ "kind": "test", "n": 0 }));
    assert_eq!((stored.attempts, stored.at), (8, UnixMillis(1_000)));

    let (second, _) = s.record_dead_letter(letter(DeadLetterStage::AlarmEngine, 1), 3).await.unwrap();
    let (third, _) = s.record_dead_letter(letter(DeadLetterStage::AlarmEffects, 2), 3).await.unwrap();
    assert!(first < second && second < third, "ids grow");
    let all = s.list_dead_letters(DeadLetterFilter::default(), 100).await.unwrap();
    assert_eq!(all.iter().map(|d| d.id).collect::<Vec<_>>(), vec![first, second, third]);
    assert_eq!(all[1].device_id, None);
    let effects = DeadLetterFilter { stage: Some(DeadLetterStage::AlarmEffects), after: None };
    let listed = s.list_dead_letters(effects, 100).await.unwrap();
    assert_eq!(listed.iter().map(|d| d.id).collect::<Vec<_>>(), vec![first, third], "by stage");
    let page = s.list_dead_letters(DeadLetterFilter { stage: None, after: Some(first) }, 1).await.unwrap();
    assert_eq!(page.iter().map(|d| d.id).collect::<Vec<_>>(), vec![second], "keyset paging");

    // Bounded: the fourth deletes the oldest.
    let (fourth, evicted) = s.record_dead_letter(letter(DeadLetterStage::Snapshots, 3), 3).await.unwrap();
    assert_eq!(evicted, 1);
    assert_eq!(s.dead_letter(first).await.unwrap(), None, "the oldest went");
    let all = s.list_dead_letters(DeadLetterFilter::default(), 100).await.unwrap();
    assert_eq!(all.iter().map(|d| d.id).collect::<Vec<_>>(), vec![second, third, fourth]);

    // Deleted once; ids no row can have are simply absent.
    assert!(s.delete_dead_letter(second).await.unwrap());
    assert!(!s.delete_dead_letter(second).await.unwrap());
    assert_eq!(s.dead_letter(DeadLetterId(u64::MAX)).await.unwrap(), None);
    assert!(!s.delete_dead_letter(DeadLetterId(u64::MAX)).await.unwrap());

    // A copy above the bound is refused, a detail above its bound cut.
    let mut big = letter(DeadLetterStage::AlarmEffects, 4);
    big.payload = serde_json::json!({ "blob": "x".repeat(MAX_DEAD_LETTER_PAYLOAD) });
    invalid(s.record_dead_letter(big, 3).await, "payload");
    let mut long = letter(DeadLetterStage::AlarmEffects, 5);
    long.reason.detail = "é".repeat(MAX_DEAD_LETTER_DETAIL);
    let (id, _) = s.record_dead_letter(long, 3).await.unwrap();
    let detail = s.dead_letter(id).await.unwrap().unwrap().detail;
    assert!(detail.len() <= MAX_DEAD_LETTER_DETAIL && detail.starts_with("éé"), "{}", detail.len());
    for d in s.list_dead_letters(DeadLetterFilter::default(), 100).await.unwrap() {
        assert!(s.delete_dead_letter(d.id).await.unwrap());
    }
}
