//! Sans-I/O alarm evaluation core (ALM-8): events and their time in, actions out.
//!
//! *Architecture invariant*: this crate does no I/O and reads no clock; every input carries its
//! time. The ingest shards feed it and the store, the API and the mail outbox carry out what it
//! returns.
//!
//! - [`evaluate`]: the stateless mapping of one input to the alarm record change the store applies
//!   (used by the ingest shards).
//! - [`AlarmEngine`] ([`engine`]): the stateful core on top of it: alarm lifecycle (ALM-2),
//!   strategies ([`strategy`], ALM-3), threshold rules ([`threshold`], ALM-4) and notification
//!   planning with idempotency keys ([`notify`], ALM-5), maintenance windows ([`windows`]), driven by `handle_*(now, ..)` inputs and
//!   drained with [`AlarmEngine::poll_action`].
//! - [`inheritance`]: which strategies apply to an enterprise down the tenant tree (its own and
//!   its channels'), and where each came from.

pub mod engine;
pub mod inheritance;
pub mod notify;
pub mod strategy;
pub mod threshold;
pub mod windows;

pub use engine::{
    Action, AlarmEngine, AlarmStatus, DurableState, EngineStats, RestoredAlarm, SavedResolution, SavedWindows,
    Transition,
};
pub use inheritance::{
    Choice, EffectiveStrategies, EffectiveStrategy, Freedom, Inheritance, InheritedStrategy, Origin,
    Status as InheritedStatus,
};
pub use notify::{IdempotencyKey, Notification, NotifiedAlarm, Stage};
pub use strategy::{AlarmStrategy, NotifySettings, Receiver, StrategyId};
pub use threshold::{HIGH_CPU, HIGH_MEMORY, Metric, ThresholdRule};
pub use windows::{MaintenanceStep, MaintenanceWindow, WindowDevices, WindowEnd, WindowSchedule};

use fleetpulse_proto::alarm_types::OFFLINE;
use fleetpulse_proto::domain::{AlarmChange, AlarmChangeKind, DeviceAlarm, ResourceSample};
use fleetpulse_proto::{AlarmTypeCode, DeviceId, EnterpriseId, UnixMillis, WindowId};

/// Why the engine refused a configuration or an input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// A strategy given for one enterprise belongs to another.
    #[error("strategy {strategy} belongs to enterprise {enterprise}")]
    WrongEnterprise {
        /// The strategy.
        strategy: StrategyId,
        /// The enterprise it names.
        enterprise: EnterpriseId,
    },
    /// Two strategies have the same id.
    #[error("strategy {0} is given twice")]
    DuplicateStrategy(StrategyId),
    /// More strategies than [`strategy::MAX_STRATEGIES_PER_ENTERPRISE`].
    #[error("an enterprise has at most {max} alarm strategies")]
    TooManyStrategies {
        /// The limit.
        max: usize,
    },
    /// More receivers than [`strategy::MAX_RECEIVERS_PER_STRATEGY`].
    #[error("strategy {strategy} has more than {max} receivers")]
    TooManyReceivers {
        /// The strategy.
        strategy: StrategyId,
        /// The limit.
        max: usize,
    },
    /// A group or repeat interval of zero (it would notify in a loop).
    #[error("strategy {strategy} has a zero group or repeat interval")]
    ZeroInterval {
        /// The strategy.
        strategy: StrategyId,
    },
    /// A threshold limit of 100 % or more can never be exceeded.
    #[error(
        "strategy {strategy} has a threshold of {above_centi_pct} hundredths of a percent; the limit is below 10000"
    )]
    ThresholdOutOfRange {
        /// The strategy.
        strategy: StrategyId,
        /// The rejected limit.
        above_centi_pct: u16,
    },
    /// The enabled strategies of an enterprise have too many distinct threshold limits or rules
    /// for one metric (each distinct limit costs a window per device).
    #[error("at most {max_limits} distinct limits and {max_rules} rules per metric ({metric:?})")]
    TooManyThresholds {
        /// The metric.
        metric: Metric,
        /// Limit on distinct limits.
        max_limits: usize,
        /// Limit on distinct rules.
        max_rules: usize,
    },
    /// A maintenance window out of its bounds (see [`windows`]).
    #[error("maintenance window {window}: {reason}")]
    InvalidWindow {
        /// The window.
        window: WindowId,
        /// What is wrong.
        reason: &'static str,
    },
    /// More windows than [`windows::MAX_WINDOWS_PER_ENTERPRISE`].
    #[error("an enterprise has at most {max} maintenance windows")]
    TooManyWindows {
        /// The limit.
        max: usize,
    },
    /// Acknowledge or clear of an alarm that is not active.
    #[error("alarm {code:?} of device {device} is not active")]
    NotActive {
        /// The device.
        device: DeviceId,
        /// The alarm type.
        code: AlarmTypeCode,
    },
}

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

/// What happened to a device, owned: what the ingest shards hand to the engine once the event is
/// durable.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceInput {
    /// The device reported an alarm (raise or clear).
    Alarm(DeviceAlarm),
    /// The offline detector found the device's heartbeats missing.
    Offline,
    /// The device connected again after being offline (or for the first time since a restart).
    Online,
    /// A CPU/memory report (for threshold rules).
    Resources(ResourceSample),
}

/// A [`DeviceInput`] of one device at one time.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceEvent {
    /// The device.
    pub device_id: DeviceId,
    /// Its enterprise.
    pub enterprise_id: EnterpriseId,
    /// When it happened (server time of receipt).
    pub at: UnixMillis,
    /// What happened.
    pub input: DeviceInput,
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
