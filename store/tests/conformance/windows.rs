//! Maintenance windows ([`WindowStore`]) and the marks they leave on alarm activations.

use super::*;
use fleetpulse_proto::{AlarmTypeCode, DeviceId, TaskId, WindowId};

/// Windows: create, read, list per enterprise, update, delete, ids never reused; marks: one per
/// activation, the latest step wins, read back by activation.
pub(crate) async fn windows(store: &Store) {
    let s = &store.entities;
    let new = |name: &str| NewEnterprise {
        profile: Default::default(),
        name: name.into(),
        credential: name.into(),
        channel_id: None,
    };
    let a = s.create_enterprise(new("wa")).await.unwrap();
    let b = s.create_enterprise(new("wb")).await.unwrap();
    let settings = |name: &str, timing: WindowTiming| WindowSettings {
        name: name.into(),
        enabled: true,
        scope: WindowScope::Sites { ids: vec![fleetpulse_proto::SiteId(3)] },
        alarm_types: vec![AlarmTypeCode(202)],
        timing,
    };
    let nightly = WindowTiming::Recurring { weekdays: vec![1, 2, 3], hour: 22, minute: 30, duration_minutes: 240 };
    let rollout = WindowTiming::WhileTask { task_id: TaskId(9) };
    let first = s.create_window(a.id, settings("nightly", nightly), UnixMillis(10)).await.unwrap();
    let second = s.create_window(a.id, settings("rollout", rollout), UnixMillis(11)).await.unwrap();
    let other = s
        .create_window(
            b.id,
            settings("once", WindowTiming::Once { start: UnixMillis(5), end: UnixMillis(6) }),
            UnixMillis(12),
        )
        .await
        .unwrap();
    assert_eq!(s.window(first.id).await.unwrap(), Some(first.clone()));
    let listed: Vec<_> = s.list_windows(a.id).await.unwrap().into_iter().map(|w| w.id).collect();
    assert_eq!(listed, vec![first.id, second.id], "only the enterprise's own windows, by id");
    let mut changed = first.settings.clone();
    changed.enabled = false;
    changed.scope = WindowScope::Devices { ids: vec![DeviceId(1), DeviceId(2)] };
    let updated = s.update_window(first.id, changed.clone(), UnixMillis(20)).await.unwrap().unwrap();
    assert_eq!((updated.settings, updated.created_at, updated.updated_at), (changed, UnixMillis(10), UnixMillis(20)));
    assert!(s.delete_window(other.id).await.unwrap());
    assert!(!s.delete_window(other.id).await.unwrap());
    assert_eq!(s.window(other.id).await.unwrap(), None);
    assert_eq!(
        s.update_window(other.id, settings("x", WindowTiming::WhileTask { task_id: TaskId(1) }), UnixMillis(30))
            .await
            .unwrap(),
        None
    );
    let again = s
        .create_window(b.id, settings("again", WindowTiming::WhileTask { task_id: TaskId(1) }), UnixMillis(31))
        .await
        .unwrap();
    assert!(again.id > other.id, "a deleted window's id is not reused");
    assert_eq!(s.window(WindowId(u64::MAX >> 1)).await.unwrap(), None);

    let mark = |device: u64, state: WindowMarkState, at: i64| WindowMark {
        enterprise_id: a.id,
        device_id: DeviceId(device),
        code: AlarmTypeCode(202),
        first_at: UnixMillis(100),
        window_id: second.id,
        window_name: "rollout".into(),
        state,
        at: UnixMillis(at),
        until: (state == WindowMarkState::Suppressed).then_some(UnixMillis(500)),
    };
    s.record_window_mark(mark(1, WindowMarkState::Suppressed, 100)).await.unwrap();
    s.record_window_mark(mark(2, WindowMarkState::Suppressed, 101)).await.unwrap();
    s.record_window_mark(mark(1, WindowMarkState::Released, 500)).await.unwrap();
    let read = s
        .window_marks(vec![
            (DeviceId(1), AlarmTypeCode(202), UnixMillis(100)),
            (DeviceId(2), AlarmTypeCode(202), UnixMillis(100)),
            (DeviceId(2), AlarmTypeCode(202), UnixMillis(99)),
            (DeviceId(3), AlarmTypeCode(202), UnixMillis(100)),
        ])
        .await
        .unwrap();
    let mut read: Vec<_> = read.into_iter().map(|m| (m.device_id, m.state, m.at, m.until)).collect();
    read.sort_by_key(|m| m.0);
    assert_eq!(
        read,
        vec![
            (DeviceId(1), WindowMarkState::Released, UnixMillis(500), None),
            (DeviceId(2), WindowMarkState::Suppressed, UnixMillis(101), Some(UnixMillis(500))),
        ]
    );
    let too_many = vec![(DeviceId(1), AlarmTypeCode(202), UnixMillis(0)); MAX_MARKS_READ + 1];
    invalid(s.window_marks(too_many).await, "at most");
}
