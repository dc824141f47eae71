//! Alarm strategies ([`StrategyStore`]).

use super::*;
use fleetpulse_proto::StrategyId;

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
        receivers: vec![StrategyReceiver::Email("ops@example.com".into())],
        group_wait_ms: 10_000,
        group_interval_ms: 60_000,
        repeat_interval_ms: 14_400_000,
        thresholds: vec![StoredThreshold { metric: ThresholdMetric::Cpu, above_centi_pct: 9_000, for_ms: 600_000 }],
        site_incident: Some(StoredSiteIncident {
            min_devices: 5,
            min_fraction_pct: 25,
            window_s: 120,
            resolve_fraction_pct: 80,
        }),
    };
    let first = s.create_strategy(a.id, settings("night shift"), UnixMillis(10)).await.unwrap();
    let second = s.create_strategy(a.id, settings("day shift"), UnixMillis(11)).await.unwrap();
    let other = s.create_strategy(b.id, settings("other"), UnixMillis(12)).await.unwrap();
    assert_eq!(s.strategy(first.id).await.unwrap(), Some(first.clone()));
    let listed: Vec<_> = s.list_strategies(a.id).await.unwrap().into_iter().map(|x| x.id).collect();
    assert_eq!(listed, vec![first.id, second.id], "only the enterprise's own strategies, by id");
    let mut changed = settings("night shift");
    changed.enabled = false;
    // Receivers that are accounts (ALM-3) are kept beside addresses, in their order.
    changed.receivers.push(StrategyReceiver::Account(fleetpulse_proto::AccountId(42)));
    changed.receivers.push(StrategyReceiver::Email("noc@example.com".into()));
    let updated = s.update_strategy(first.id, changed.clone(), UnixMillis(20)).await.unwrap().unwrap();
    assert_eq!((updated.settings, updated.created_at, updated.updated_at), (changed, UnixMillis(10), UnixMillis(20)));
    assert!(s.delete_strategy(second.id).await.unwrap());
    assert!(!s.delete_strategy(second.id).await.unwrap());
    assert_eq!(s.strategy(second.id).await.unwrap(), None);
    assert_eq!(s.update_strategy(second.id, settings("x"), UnixMillis(30)).await.unwrap(), None);
    assert_eq!(s.list_strategies(b.id).await.unwrap(), vec![other]);
}

/// Channel strategies and enterprises' choices (issue 18): channel strategies are not an
/// enterprise's, the strategies above a channel come nearest first with their distance, choices
/// are set, replaced and removed, and go with the strategies they name.
pub(crate) async fn inherited_strategies(store: &Store) {
    let s = &store.entities;
    let top = s.create_channel(new_channel("inh-top", None, true), UnixMillis(1)).await.unwrap();
    let mid = s.create_channel(new_channel("inh-mid", Some(top.id), true), UnixMillis(1)).await.unwrap();
    let low = s.create_channel(new_channel("inh-low", Some(mid.id), true), UnixMillis(1)).await.unwrap();
    let other = s.create_channel(new_channel("inh-other", None, true), UnixMillis(1)).await.unwrap();
    let e = s
        .create_enterprise(NewEnterprise {
            profile: Default::default(),
            name: "inh-e".into(),
            credential: "inh-e".into(),
            channel_id: Some(low.id),
        })
        .await
        .unwrap();
    let settings = |name: &str| StrategySettings {
        name: name.into(),
        enabled: true,
        alarm_types: vec![],
        severities: vec![],
        receivers: vec![
            StrategyReceiver::Email("noc@example.com".into()),
            StrategyReceiver::Account(fleetpulse_proto::AccountId(7)),
        ],
        group_wait_ms: 0,
        group_interval_ms: 60_000,
        repeat_interval_ms: 3_600_000,
        thresholds: vec![],
        site_incident: None,
    };
    let all = StrategyInheritance { sub_channel_levels: None, enterprises_may: EnterpriseFreedom::Override };
    let own_only = StrategyInheritance { sub_channel_levels: Some(0), enterprises_may: EnterpriseFreedom::Locked };
    let t1 = s.create_channel_strategy(top.id, settings("top noc"), all, UnixMillis(10)).await.unwrap();
    let m1 = s.create_channel_strategy(mid.id, settings("mid noc"), own_only, UnixMillis(11)).await.unwrap();
    let t2 = s.create_channel_strategy(top.id, settings("top 2"), own_only, UnixMillis(12)).await.unwrap();
    s.create_channel_strategy(other.id, settings("elsewhere"), all, UnixMillis(13)).await.unwrap();
    invalid(s.create_channel_strategy(ChannelId(999_999), settings("x"), all, UnixMillis(1)).await, "channel");
    assert_eq!(s.channel_strategy(t1.id).await.unwrap(), Some(t1.clone()));
    assert_eq!(s.strategy(t1.id).await.unwrap(), None, "a channel's strategy is not an enterprise's");
    assert!(!s.delete_strategy(t1.id).await.unwrap(), "nor deleted as one");
    assert_eq!(s.update_strategy(t1.id, settings("x"), UnixMillis(2)).await.unwrap(), None);
    let own = s.create_strategy(e.id, settings("own"), UnixMillis(14)).await.unwrap();
    assert_eq!(s.channel_strategy(own.id).await.unwrap(), None, "an enterprise's strategy is not a channel's");
    assert_eq!(s.list_strategies(e.id).await.unwrap(), vec![own.clone()]);
    let listed: Vec<_> = s.list_channel_strategies(top.id).await.unwrap().into_iter().map(|x| x.id).collect();
    assert_eq!(listed, vec![t1.id, t2.id]);
    let above: Vec<(u32, StrategyId)> =
        s.strategies_above(low.id).await.unwrap().into_iter().map(|(d, x)| (d, x.id)).collect();
    assert_eq!(above, vec![(1, m1.id), (2, t1.id), (2, t2.id)], "nearest first, then by id");
    assert_eq!(s.strategies_above(ChannelId(999_999)).await.unwrap(), vec![]);

    let mut changed = settings("top noc, renamed");
    changed.enabled = false;
    let narrower = StrategyInheritance { sub_channel_levels: Some(1), enterprises_may: EnterpriseFreedom::OptOut };
    let updated = s.update_channel_strategy(t1.id, changed.clone(), narrower, UnixMillis(20)).await.unwrap().unwrap();
    assert_eq!((updated.settings, updated.inheritance, updated.updated_at), (changed, narrower, UnixMillis(20)));
    assert_eq!(s.update_channel_strategy(own.id, settings("x"), all, UnixMillis(21)).await.unwrap(), None);

    s.set_strategy_choice(e.id, t1.id, Some(InheritedChoice::OptOut), UnixMillis(30)).await.unwrap();
    s.set_strategy_choice(e.id, m1.id, Some(InheritedChoice::OverrideWith(own.id)), UnixMillis(31)).await.unwrap();
    s.set_strategy_choice(e.id, t1.id, Some(InheritedChoice::OverrideWith(own.id)), UnixMillis(32)).await.unwrap();
    let choices: Vec<(StrategyId, InheritedChoice, UnixMillis)> =
        s.strategy_choices(e.id).await.unwrap().into_iter().map(|c| (c.strategy_id, c.choice, c.at)).collect();
    let over = InheritedChoice::OverrideWith(own.id);
    assert_eq!(choices, vec![(t1.id, over, UnixMillis(32)), (m1.id, over, UnixMillis(31))]);
    s.set_strategy_choice(e.id, t1.id, None, UnixMillis(33)).await.unwrap();
    assert_eq!(s.strategy_choices(e.id).await.unwrap().len(), 1);
    // Deleting the replacement removes the override; deleting the channel strategy its choices.
    s.set_strategy_choice(e.id, t2.id, Some(InheritedChoice::OptOut), UnixMillis(34)).await.unwrap();
    assert!(s.delete_strategy(own.id).await.unwrap());
    let left: Vec<StrategyId> = s.strategy_choices(e.id).await.unwrap().into_iter().map(|c| c.strategy_id).collect();
    assert_eq!(left, vec![t2.id]);
    assert!(s.delete_channel_strategy(t2.id).await.unwrap());
    assert!(!s.delete_channel_strategy(t2.id).await.unwrap());
    assert!(s.strategy_choices(e.id).await.unwrap().is_empty());
    assert_eq!(s.channel_strategy(t2.id).await.unwrap(), None);
}

/// The alarm engine's saved state (issue 18 item 6): none at first, then the latest saved; one
/// per owner (issue 16: the nodes of several never overwrite each other's).
pub(crate) async fn engine_state(store: &Store) {
    let s = &store.entities;
    let single = EngineStateOwner::Single;
    let n1 = EngineStateOwner::Node(fleetpulse_store::NodeId::parse("n1").unwrap());
    let n2 = EngineStateOwner::Node(fleetpulse_store::NodeId::parse("n2").unwrap());
    assert_eq!(s.engine_state(&single).await.unwrap(), None);
    let mut state = SavedEngineState {
        version: ENGINE_STATE_VERSION,
        windows: vec![StoredWindows {
            device_id: DeviceId(7),
            enterprise_id: EnterpriseId(3),
            metric: ThresholdMetric::Cpu,
            windows: vec![(9_000, UnixMillis(1_000)), (9_500, UnixMillis(2_000))],
        }],
        resolutions: vec![StoredResolution {
            enterprise_id: EnterpriseId(3),
            strategy_id: StrategyId(4),
            receiver: "noc@example.com".into(),
            device_id: DeviceId(7),
            code: fleetpulse_proto::AlarmTypeCode(109),
            first_at: UnixMillis(10),
            latest_at: UnixMillis(11),
            count: 2,
            description: "The device missed its heartbeats.".into(),
            resolved_at: Some(UnixMillis(12)),
            key: "00112233445566778899aabbccddeeff".into(),
        }],
        incidents: vec![StoredOpenIncident {
            enterprise_id: EnterpriseId(3),
            strategy_id: StrategyId(4),
            site_id: fleetpulse_proto::SiteId(5),
            code: fleetpulse_proto::AlarmTypeCode(109),
            opened_at: UnixMillis(9),
            site_devices: 40,
            affected: 12,
            back: 1,
            members: vec![(DeviceId(7), UnixMillis(8), false), (DeviceId(8), UnixMillis(9), true)],
        }],
    };
    s.save_engine_state(&single, &state, UnixMillis(20)).await.unwrap();
    assert_eq!(s.engine_state(&single).await.unwrap().as_ref(), Some(&state));
    assert_eq!(s.engine_state(&n1).await.unwrap(), None, "another owner's");
    let full = state.clone();
    state.resolutions.clear();
    s.save_engine_state(&single, &state, UnixMillis(21)).await.unwrap();
    assert_eq!(s.engine_state(&single).await.unwrap().as_ref(), Some(&state), "replaced whole");
    // Two nodes save their own; neither overwrites the other or the single engine's.
    s.save_engine_state(&n1, &full, UnixMillis(22)).await.unwrap();
    let mut other = full.clone();
    other.windows.clear();
    s.save_engine_state(&n2, &other, UnixMillis(23)).await.unwrap();
    // An engine bucket's state is its own too, whichever node saves it.
    let bucket = EngineStateOwner::Bucket(3);
    assert_eq!(s.engine_state(&bucket).await.unwrap(), None);
    s.save_engine_state(&bucket, &other, UnixMillis(24)).await.unwrap();
    assert_eq!(s.engine_state(&EngineStateOwner::Bucket(3)).await.unwrap().as_ref(), Some(&other));
    assert_eq!(s.engine_state(&EngineStateOwner::Bucket(4)).await.unwrap(), None);
    assert_eq!(s.engine_state(&n1).await.unwrap(), Some(full));
    assert_eq!(s.engine_state(&n2).await.unwrap(), Some(other));
    assert_eq!(s.engine_state(&single).await.unwrap(), Some(state));
}
