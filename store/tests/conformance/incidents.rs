//! Site incidents ([`IncidentStore`]): created by their natural key at the first step, counts
//! and resolution updated by later steps, members upserted, listed newest first per enterprise,
//! found again by a member's activation.

use super::*;
use fleetpulse_proto::{AlarmTypeCode, DeviceId, IncidentId, SiteId, StrategyId};

pub(crate) async fn incidents(store: &Store) {
    let s = &store.entities;
    let member = |d: u64, back: bool| IncidentMember { device_id: DeviceId(d), first_at: UnixMillis(d as i64), back };
    let opened = |enterprise: u64, site: u64, at: i64| IncidentUpdate {
        enterprise_id: EnterpriseId(enterprise),
        strategy_id: StrategyId(4),
        site_id: SiteId(site),
        site_name: "Berlin-3".into(),
        code: AlarmTypeCode(109),
        opened_at: UnixMillis(at),
        at: UnixMillis(at),
        site_devices: 40,
        affected: 3,
        back: 0,
        resolved_at: None,
        members: vec![member(1, false), member(2, false), member(3, false)],
    };
    let first = s.record_incident(opened(900, 1, 100)).await.unwrap();
    let other_site = s.record_incident(opened(900, 2, 100)).await.unwrap();
    let other_enterprise = s.record_incident(opened(901, 1, 100)).await.unwrap();
    assert!(first != other_site && first != other_enterprise && other_site != other_enterprise);
    // A later step of the same incident: same id, counts replaced, members upserted.
    let joined =
        IncidentUpdate { at: UnixMillis(150), affected: 4, members: vec![member(4, false)], ..opened(900, 1, 100) };
    assert_eq!(s.record_incident(joined).await.unwrap(), first);
    let back = IncidentUpdate {
        at: UnixMillis(200),
        affected: 4,
        back: 1,
        members: vec![member(2, true)],
        ..opened(900, 1, 100)
    };
    assert_eq!(s.record_incident(back).await.unwrap(), first);
    let resolved = IncidentUpdate {
        at: UnixMillis(300),
        affected: 4,
        back: 3,
        resolved_at: Some(UnixMillis(300)),
        members: vec![member(1, true), member(3, true)],
        ..opened(900, 1, 100)
    };
    assert_eq!(s.record_incident(resolved).await.unwrap(), first);
    // A step that arrives late does not undo the resolution or move the time back.
    let late = IncidentUpdate { at: UnixMillis(250), affected: 4, back: 3, members: vec![], ..opened(900, 1, 100) };
    assert_eq!(s.record_incident(late).await.unwrap(), first);
    let got = s.incident(first).await.unwrap().expect("stored");
    assert_eq!(
        (got.enterprise_id, got.site_id, got.site_name.as_str(), got.code, got.opened_at),
        (EnterpriseId(900), SiteId(1), "Berlin-3", AlarmTypeCode(109), UnixMillis(100))
    );
    assert_eq!(
        (got.updated_at, got.resolved_at, got.site_devices, got.affected, got.back),
        (UnixMillis(300), Some(UnixMillis(300)), 40, 4, 3)
    );
    assert_eq!(s.incident(IncidentId(999_999)).await.unwrap(), None);
    let members = s.incident_members(first, Page::first(10)).await.unwrap();
    assert_eq!(members, vec![member(1, true), member(2, true), member(3, true), member(4, false)]);
    assert_eq!(s.incident_members(first, Page { after: 2, limit: 1 }).await.unwrap(), vec![member(3, true)]);
    let listed: Vec<IncidentId> =
        s.list_incidents(EnterpriseId(900), Page::first(10)).await.unwrap().iter().map(|i| i.id).collect();
    assert_eq!(listed, vec![other_site, first], "the enterprise's own, newest first");
    let older: Vec<IncidentId> = s
        .list_incidents(EnterpriseId(900), Page { after: other_site.0, limit: 10 })
        .await
        .unwrap()
        .iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(older, vec![first]);
    let found = s
        .alarm_incidents(vec![
            (DeviceId(4), AlarmTypeCode(109), UnixMillis(4)),
            (DeviceId(4), AlarmTypeCode(109), UnixMillis(5)),
        ])
        .await
        .unwrap();
    assert_eq!(
        found,
        vec![AlarmIncident {
            device_id: DeviceId(4),
            code: AlarmTypeCode(109),
            first_at: UnixMillis(4),
            incident_id: first
        }]
    );
    invalid(s.list_incidents(EnterpriseId(900), Page::first(MAX_INCIDENT_PAGE + 1)).await, "incident page");
    invalid(
        s.alarm_incidents(vec![(DeviceId(1), AlarmTypeCode(109), UnixMillis(1)); MAX_INCIDENT_ACTIVATIONS + 1]).await,
        "activations",
    );
}
