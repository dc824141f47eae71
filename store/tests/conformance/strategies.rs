//! Alarm strategies ([`StrategyStore`]).

use super::*;

/// Alarm strategies (ALM-3): create, read, list per enterprise, update, delete.
pub(crate) async fn strategies(store: &Store) {
    let s = &store.entities;
    let a = s
        .create_enterprise(NewEnterprise {
            profile: Default::default(),
            name: "sa".into(),
            credential: "sa".into(),
            channel_id: None,
        })
        .await
        .unwrap();
    let b = s
        .create_enterprise(NewEnterprise {
            profile: Default::default(),
            name: "sb".into(),
            credential: "sb".into(),
            channel_id: None,
        })
        .await
        .unwrap();
    let settings = |name: &str| StrategySettings {
        name: name.into(),
        enabled: true,
        alarm_types: vec![fleetpulse_proto::AlarmTypeCode(109), fleetpulse_proto::AlarmTypeCode(401)],
        severities: vec![fleetpulse_proto::Severity::Critical],
        receivers: vec!["ops@example.com".into()],
        group_wait_ms: 10_000,
        group_interval_ms: 60_000,
        repeat_interval_ms: 14_400_000,
        thresholds: vec![StoredThreshold { metric: ThresholdMetric::Cpu, above_centi_pct: 9_000, for_ms: 600_000 }],
    };
    let first = s.create_strategy(a.id, settings("night shift"), UnixMillis(10)).await.unwrap();
    let second = s.create_strategy(a.id, settings("day shift"), UnixMillis(11)).await.unwrap();
    let other = s.create_strategy(b.id, settings("other"), UnixMillis(12)).await.unwrap();
    assert_eq!(s.strategy(first.id).await.unwrap(), Some(first.clone()));
    let listed: Vec<_> = s.list_strategies(a.id).await.unwrap().into_iter().map(|x| x.id).collect();
    assert_eq!(listed, vec![first.id, second.id], "only the enterprise's own strategies, by id");
    let mut changed = settings("night shift");
    changed.enabled = false;
    changed.receivers.push("noc@example.com".into());
    let updated = s.update_strategy(first.id, changed.clone(), UnixMillis(20)).await.unwrap().unwrap();
    assert_eq!((updated.settings, updated.created_at, updated.updated_at), (changed, UnixMillis(10), UnixMillis(20)));
    assert!(s.delete_strategy(second.id).await.unwrap());
    assert!(!s.delete_strategy(second.id).await.unwrap());
    assert_eq!(s.strategy(second.id).await.unwrap(), None);
    assert_eq!(s.update_strategy(second.id, settings("x"), UnixMillis(30)).await.unwrap(), None);
    assert_eq!(s.list_strategies(b.id).await.unwrap(), vec![other]);
}
