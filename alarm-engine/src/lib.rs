//! Sans-I/O alarm evaluation core (ALM-8): events and their time in, alarm record changes out.
//!
//! *Architecture invariant*: this crate does no I/O and reads no clock; the ingest shards feed
//! it and the store applies what it returns. It starts small (device alarms and the derived
//! Offline alarm); strategies, thresholds and notifications build on the same shape.

use fleetpulse_proto::alarm_types::OFFLINE;
use fleetpulse_proto::domain::{AlarmChange, AlarmChangeKind, DeviceAlarm};
use fleetpulse_proto::{DeviceId, EnterpriseId, UnixMillis};

/// Something that happened to a device, as the alarm engine sees it.
#[derive(Debug, Clone, Copy)]
pub enum AlarmInput<'a> {
    /// The device reported an alarm (raise or clear).
    Reported(&'a DeviceAlarm),
    /// The offline detector found the device's heartbeats missing (ING-7).
    WentOffline,
    /// The device connected again after being offline.
    BackOnline,
}

/// Evaluates one input for one device at `at`: the change to apply to its alarm records.
pub fn evaluate(
    device_id: DeviceId,
    enterprise_id: EnterpriseId,
    at: UnixMillis,
    input: AlarmInput<'_>,
) -> AlarmChange {
    let (code, kind) = match input {
        AlarmInput::Reported(alarm) if alarm.clear => (alarm.alarm_type.code, AlarmChangeKind::Clear),
        AlarmInput::Reported(alarm) => {
            (alarm.alarm_type.code, AlarmChangeKind::Raise { description: alarm.description.clone() })
        }
        AlarmInput::WentOffline => {
            (OFFLINE, AlarmChangeKind::Raise { description: "The device missed its heartbeats.".into() })
        }
        AlarmInput::BackOnline => (OFFLINE, AlarmChangeKind::Clear),
    };
    AlarmChange { device_id, enterprise_id, code, at, kind }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetpulse_proto::AlarmTypeCode;

    fn check(input: AlarmInput<'_>, want_code: u16, want_raise: Option<&str>) {
        let change = evaluate(DeviceId(1), EnterpriseId(2), UnixMillis(3), input);
        assert_eq!((change.device_id, change.enterprise_id, change.at), (DeviceId(1), EnterpriseId(2), UnixMillis(3)));
        assert_eq!(change.code, AlarmTypeCode(want_code));
        match (change.kind, want_raise) {
            (AlarmChangeKind::Raise { description }, Some(want)) => assert_eq!(description, want),
            (AlarmChangeKind::Clear, None) => {}
            (kind, want) => panic!("got {kind:?}, want raise {want:?}"),
        }
    }

    #[test]
    fn inputs_map_to_record_changes() {
        let crash = |clear| DeviceAlarm {
            alarm_type: AlarmTypeCode(105).alarm_type().expect("known type"),
            clear,
            description: "segfault".into(),
            log: None,
        };
        check(AlarmInput::Reported(&crash(false)), 105, Some("segfault"));
        check(AlarmInput::Reported(&crash(true)), 105, None);
        check(AlarmInput::WentOffline, 109, Some("The device missed its heartbeats."));
        check(AlarmInput::BackOnline, 109, None);
    }
}
