//! What a simulated device says: its `Hello` and the bodies of its sequenced messages.
//!
//! Bodies are a pure function of (device, kind, seq, intended send time), so a frame resent after a
//! reconnect carries exactly the bytes it carried the first time and pending frames need not keep
//! their bodies in memory.

use std::sync::LazyLock;

use fleetpulse_proto::wire::{
    AlarmAction, AlarmReport, CallStatus, Heartbeat, Hello, IpAddress, Message, ResourceReport, SipLine, SipState,
    StatusChange,
};
use fleetpulse_proto::{ALARM_TYPES, AlarmType, Mac, PROTOCOL_VERSION};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::alarms::{self, INJECTED_ALARM, RunTag};
use crate::config::MessageKind;

/// Models a simulated device can be, with a plausible firmware version each.
const MODELS: [(&str, &str); 5] = [
    ("T54W", "96.86.0.100"),
    ("T57W", "97.86.0.95"),
    ("CP965", "143.86.0.20"),
    ("MVC860", "151.86.0.15"),
    ("VP59", "91.86.0.70"),
];

/// Memory sizes (bytes) a simulated device can have.
const MEMORY_TOTALS: [u64; 4] = [256 << 20, 512 << 20, 1 << 30, 2 << 30];

/// Alarm types a device reports on its own: those without a log attachment, minus the types the
/// server derives itself (offline, back online, thresholds).
static DEVICE_ALARMS: LazyLock<Vec<&'static AlarmType>> =
    LazyLock::new(|| ALARM_TYPES.iter().filter(|t| !t.has_log && !t.derived).collect());

/// The fixed traits of one simulated device.
#[derive(Debug, Clone)]
pub struct DeviceProfile {
    /// The device's MAC address (its identity).
    pub mac: Mac,
    seed: u64,
    model: &'static str,
    firmware: String,
    /// Uptime when the run started, seconds.
    boot_uptime_s: u64,
    /// The run's tag, in the tokens of injected alarms.
    run_tag: RunTag,
}

impl DeviceProfile {
    /// A device whose traits are drawn deterministically from `seed`.
    pub fn new(mac: Mac, seed: u64) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let (model, firmware) = MODELS[rng.random_range(0..MODELS.len())];
        DeviceProfile {
            mac,
            seed,
            model,
            firmware: firmware.to_owned(),
            boot_uptime_s: rng.random_range(60..30 * 86_400),
            run_tag: RunTag::default(),
        }
    }

    /// The same device in the run tagged `tag` (its injected alarms carry the tag in their tokens).
    pub fn with_run_tag(mut self, tag: RunTag) -> Self {
        self.run_tag = tag;
        self
    }

    /// The firmware version it runs.
    pub fn firmware(&self) -> &str {
        &self.firmware
    }

    /// It now runs `version` (a firmware upgrade installed it): its next `Hello` and status
    /// reports say so.
    pub fn set_firmware(&mut self, version: String) {
        self.firmware = version;
    }

    /// The device model.
    pub fn model(&self) -> &str {
        self.model
    }

    /// The `Hello` this device opens every session with.
    pub fn hello(&self, credential: &str, heartbeat_interval_s: u32) -> Hello {
        Hello {
            protocol_version: PROTOCOL_VERSION,
            mac: self.mac.to_string(),
            serial: String::new(),
            model: self.model.into(),
            firmware: self.firmware.clone(),
            credential: credential.into(),
            heartbeat_interval_s,
        }
    }

    /// The body of frame `seq`, of `kind`, intended for `intended_us` after the run started at
    /// `run_start_ms` (Unix milliseconds). Always the same for the same inputs.
    pub fn message(&self, kind: MessageKind, seq: u64, intended_us: u64, run_start_ms: i64) -> Message {
        let mut rng = SmallRng::seed_from_u64(self.seed ^ seq.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let uptime_s = self.boot_uptime_s + intended_us / 1_000_000;
        match kind {
            MessageKind::Heartbeat => Message::Heartbeat(Heartbeat { uptime_s }),
            MessageKind::Status => Message::StatusChange(self.status(&mut rng, uptime_s, run_start_ms)),
            MessageKind::Resource => {
                let total = MEMORY_TOTALS[rng.random_range(0..MEMORY_TOTALS.len())];
                Message::ResourceReport(ResourceReport {
                    cpu_centi_pct: rng.random_range(0..=10_000),
                    mem_used_bytes: rng.random_range(total / 8..=total),
                    mem_total_bytes: total,
                })
            }
            MessageKind::Alarm => {
                let alarm = DEVICE_ALARMS[rng.random_range(0..DEVICE_ALARMS.len())];
                let action = if rng.random_bool(0.8) { AlarmAction::Raise } else { AlarmAction::Clear };
                Message::Alarm(AlarmReport {
                    code: alarm.code.0,
                    action,
                    description: format!("loadtest: {}", alarm.name),
                    log: None,
                })
            }
            MessageKind::InjectedAlarm { n, clear } => Message::Alarm(AlarmReport {
                code: INJECTED_ALARM.0,
                action: if clear { AlarmAction::Clear } else { AlarmAction::Raise },
                // The token first, so that it survives any truncation of the description.
                description: if clear {
                    "fleetpulse-loadtest injected alarm cleared".to_owned()
                } else {
                    format!("{} (fleetpulse-loadtest injected alarm)", alarms::token(self.run_tag, n))
                },
                log: None,
            }),
            // The shell builds answers from the device's command responder; this is the body of
            // an answer it no longer remembers.
            MessageKind::CommandResult(answer) => Message::CommandResult(crate::responder::forgotten_answer(answer)),
        }
    }

    fn status(&self, rng: &mut SmallRng, uptime_s: u64, run_start_ms: i64) -> StatusChange {
        let line_count = rng.random_range(1..=2u8);
        let lines = (1..=line_count)
            .map(|line| SipLine {
                line,
                account: format!("{}{line}@loadtest.invalid", &self.mac.as_str()[6..]),
                state: if rng.random_bool(0.95) { SipState::Registered } else { SipState::Unregistered },
            })
            .collect();
        let boot_ms = i64::try_from(self.boot_uptime_s.saturating_mul(1000)).unwrap_or(i64::MAX);
        let host = self.seed.to_le_bytes();
        StatusChange {
            lines,
            call_status: if rng.random_bool(0.3) { CallStatus::InCall } else { CallStatus::Idle },
            firmware: self.firmware.clone(),
            // Documentation ranges (RFC 5737) and a private LAN address.
            public_ip: Some(IpAddress::V4([203, 0, 113, host[0] | 1])),
            private_ip: Some(IpAddress::V4([10, host[1], host[2], host[3] | 1])),
            uptime_s,
            last_reboot_ms: Some(run_start_ms.saturating_sub(boot_ms)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetpulse_proto::domain::DeviceMessage;

    fn profile() -> DeviceProfile {
        DeviceProfile::new(Mac::parse("abcdef000001").expect("valid"), 42)
    }

    const KINDS: [MessageKind; 6] = [
        MessageKind::Heartbeat,
        MessageKind::Status,
        MessageKind::Resource,
        MessageKind::Alarm,
        MessageKind::InjectedAlarm { n: 12_345, clear: false },
        MessageKind::InjectedAlarm { n: 12_345, clear: true },
    ];

    #[test]
    fn bodies_are_deterministic_per_seq() {
        let p = profile();
        for kind in KINDS {
            assert_eq!(p.message(kind, 7, 1_000, 5), p.message(kind, 7, 1_000, 5));
        }
    }

    #[test]
    fn injected_alarms_carry_their_token_and_pass_validation() {
        let tag = RunTag(0x1234_abcd);
        let p = profile().with_run_tag(tag);
        let raise = DeviceMessage::try_from(p.message(KINDS[4], 1, 0, 0)).expect("valid");
        let clear = DeviceMessage::try_from(p.message(KINDS[5], 2, 0, 0)).expect("valid");
        match (raise, clear) {
            (DeviceMessage::Alarm(raise), DeviceMessage::Alarm(clear)) => {
                assert_eq!((raise.alarm_type.code, raise.clear), (INJECTED_ALARM, false));
                assert_eq!((clear.alarm_type.code, clear.clear), (INJECTED_ALARM, true));
                assert!(raise.description.starts_with("lt-alarm-1234abcd-12345 "), "{}", raise.description);
                assert_eq!(alarms::find_tokens(raise.description.as_bytes(), tag), [12_345]);
                assert!(alarms::find_tokens(clear.description.as_bytes(), tag).is_empty());
                assert!(!INJECTED_ALARM.alarm_type().expect("known").derived);
            }
            other => panic!("{other:?}"),
        }
        assert!(DEVICE_ALARMS.iter().all(|t| t.code != INJECTED_ALARM), "the mix never sends the injected type");
    }

    #[test]
    fn every_generated_body_passes_the_servers_validation() {
        let p = profile();
        for seq in 1..2_000 {
            for kind in KINDS {
                let msg = p.message(kind, seq, seq * 1_000, 1_700_000_000_000);
                let domain = DeviceMessage::try_from(msg.clone()).unwrap_or_else(|e| panic!("{msg:?}: {e}"));
                assert_eq!(domain.is_persisted(), kind.is_persisted());
            }
        }
    }

    #[test]
    fn device_alarms_exclude_logs_and_derived_types() {
        assert!(!DEVICE_ALARMS.is_empty());
        assert!(
            DEVICE_ALARMS.iter().all(|t| !t.has_log && !t.derived && t.code != fleetpulse_proto::alarm_types::OFFLINE)
        );
    }

    #[test]
    fn hello_is_valid() {
        let hello = profile().hello("cred", 30);
        fleetpulse_proto::domain::DeviceHello::try_from(hello).expect("valid hello");
    }
}
