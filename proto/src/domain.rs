//! Domain types decoded from the wire, validated once at the edge.
//!
//! Everything past the ingest connection uses these types, never [`crate::wire`] types, so a
//! value here has passed every bound: string lengths, enum codes, percentages, log sizes.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::alarm_types::{AlarmType, AlarmTypeCode};
use crate::ids::{Mac, MacError, UnixMillis};
use crate::wire;

/// Longest model, firmware, serial or SIP account string accepted.
pub const MAX_SHORT_TEXT: usize = 64;
/// Longest alarm description accepted, in bytes.
pub const MAX_DESCRIPTION: usize = 1024;
/// Largest alarm log accepted, in bytes.
pub const MAX_ALARM_LOG: usize = 192 * 1024;
/// Most SIP lines a status report may carry.
pub const MAX_SIP_LINES: usize = 32;
/// Longest provisioning credential accepted.
pub const MAX_CREDENTIAL: usize = 128;
/// Longest command output a device may send, in bytes (a longer answer is rejected).
pub const MAX_COMMAND_OUTPUT: usize = 65_536;
/// Longest failure reason a device may send, in bytes (a longer answer is rejected).
pub const MAX_COMMAND_REASON: usize = 256;
/// Longest uploaded file name, in bytes.
pub const MAX_FILE_NAME: usize = 128;
/// Accepted heartbeat interval range, seconds.
pub const HEARTBEAT_INTERVAL_S: std::ops::RangeInclusive<u32> = 5..=3600;

/// Why a message's content was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidMessage {
    /// The MAC address is not 12 lowercase hex digits.
    #[error("invalid MAC address: {0}")]
    Mac(#[from] MacError),
    /// Neither MAC nor serial was given.
    #[error("a device identifies itself by MAC or serial number")]
    NoIdentity,
    /// The device speaks a protocol version this server does not.
    #[error("unsupported protocol version {0}")]
    ProtocolVersion(u16),
    /// A text field is longer than allowed.
    #[error("{field} is longer than {max} bytes")]
    TooLong {
        /// Which field.
        field: &'static str,
        /// The limit.
        max: usize,
    },
    /// The heartbeat interval is outside [`HEARTBEAT_INTERVAL_S`].
    #[error("heartbeat interval {0} s is outside 5..=3600 s")]
    HeartbeatInterval(u32),
    /// CPU percentage above 100 % or memory used above total.
    #[error("resource report out of range: {0}")]
    Resource(&'static str),
    /// Unknown alarm type code.
    #[error("unknown alarm type code {0}")]
    UnknownAlarmType(u16),
    /// The alarm type is raised by the server (offline detection, thresholds), not by devices.
    #[error("alarm type {0} is raised by the server, not reported by devices")]
    DerivedAlarmType(u16),
    /// A log was attached to an alarm type that carries none.
    #[error("alarm type {0} carries no log")]
    UnexpectedLog(u16),
    /// Too many SIP lines.
    #[error("more than {MAX_SIP_LINES} SIP lines")]
    TooManyLines,
    /// A command answer with output or a reason its status does not carry.
    #[error("a command answer {0}")]
    CommandResult(&'static str),
    /// An upload's file name is empty, too long, starts with a dot or has a character outside
    /// `[A-Za-z0-9._-]`.
    #[error("file name {0:?} is not 1 to 128 characters of [A-Za-z0-9._-] not starting with a dot")]
    FileName(String),
}

fn bounded(field: &'static str, s: String, max: usize) -> Result<String, InvalidMessage> {
    if s.len() > max {
        return Err(InvalidMessage::TooLong { field, max });
    }
    Ok(sanitize(s))
}

/// Like [`sanitize`], but keeps line feeds and tabs: for multi-line command output.
pub fn sanitize_multiline(s: String) -> String {
    let bad = |c: char| c.is_control() && c != '\n' && c != '\t';
    if s.chars().any(bad) { s.chars().map(|c| if bad(c) { ' ' } else { c }).collect() } else { s }
}

/// Checks an uploaded file's name (see [`InvalidMessage::FileName`]): the name becomes part of a
/// path on the embedded store and of a download's `Content-Disposition`.
pub fn check_file_name(name: &str) -> Result<(), InvalidMessage> {
    let ok = !name.is_empty()
        && name.len() <= MAX_FILE_NAME
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok { Ok(()) } else { Err(InvalidMessage::FileName(name.chars().take(MAX_FILE_NAME).collect())) }
}

/// Replaces control characters with spaces: device text ends up in logs, emails and the portal.
pub fn sanitize(s: String) -> String {
    if s.chars().any(char::is_control) { s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect() } else { s }
}

/// How a device is identified: by MAC where it has one, else by serial number.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DeviceKey {
    /// By MAC address.
    Mac(Mac),
    /// By serial number.
    Serial(String),
}

/// A validated `Hello`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceHello {
    /// The protocol version of the session, within [`crate::SUPPORTED_PROTOCOL_VERSIONS`].
    pub protocol_version: u16,
    /// The identity the device is registered under.
    pub key: DeviceKey,
    /// Serial number, if given (also when the key is the MAC).
    pub serial: Option<String>,
    /// Model name.
    pub model: String,
    /// Firmware version.
    pub firmware: String,
    /// The enterprise's provisioning credential.
    pub credential: String,
    /// Heartbeat interval in seconds, within [`HEARTBEAT_INTERVAL_S`].
    pub heartbeat_interval_s: u32,
}

impl TryFrom<wire::Hello> for DeviceHello {
    type Error = InvalidMessage;

    fn try_from(h: wire::Hello) -> Result<Self, Self::Error> {
        if !crate::SUPPORTED_PROTOCOL_VERSIONS.contains(&h.protocol_version) {
            return Err(InvalidMessage::ProtocolVersion(h.protocol_version));
        }
        let serial = bounded("serial", h.serial, MAX_SHORT_TEXT)?;
        let serial = (!serial.is_empty()).then_some(serial);
        let key = match (h.mac.is_empty(), &serial) {
            (false, _) => DeviceKey::Mac(Mac::parse(&h.mac)?),
            (true, Some(sn)) => DeviceKey::Serial(sn.clone()),
            (true, None) => return Err(InvalidMessage::NoIdentity),
        };
        if !HEARTBEAT_INTERVAL_S.contains(&h.heartbeat_interval_s) {
            return Err(InvalidMessage::HeartbeatInterval(h.heartbeat_interval_s));
        }
        if h.credential.len() > MAX_CREDENTIAL {
            return Err(InvalidMessage::TooLong { field: "credential", max: MAX_CREDENTIAL });
        }
        Ok(DeviceHello {
            protocol_version: h.protocol_version,
            key,
            serial,
            model: bounded("model", h.model, MAX_SHORT_TEXT)?,
            firmware: bounded("firmware", h.firmware, MAX_SHORT_TEXT)?,
            credential: h.credential,
            heartbeat_interval_s: h.heartbeat_interval_s,
        })
    }
}

/// SIP registration state of one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SipState {
    /// Registered.
    Registered,
    /// Not registered (failed or not configured).
    Unregistered,
    /// Unknown.
    Unknown,
}

/// A device's SIP account status over all lines (PDMS-E "account status").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SipSummary {
    /// Every line registered.
    Registered,
    /// Some lines registered.
    Partial,
    /// No line registered.
    Unregistered,
    /// No line reported.
    Unknown,
}

/// Call status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    /// No call.
    Idle,
    /// In a call.
    InCall,
}

/// One SIP line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SipLine {
    /// Line number.
    pub line: u8,
    /// SIP account.
    pub account: String,
    /// Registration state.
    pub state: SipState,
}

/// A device's reported status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeviceStatus {
    /// SIP registration per line.
    pub lines: Vec<SipLine>,
    /// Call status.
    pub call_status: CallStatus,
    /// Firmware version.
    pub firmware: String,
    /// Public address.
    pub public_ip: Option<IpAddr>,
    /// Private address.
    pub private_ip: Option<IpAddr>,
    /// Seconds since boot.
    pub uptime_s: u64,
    /// Last reboot time.
    pub last_reboot: Option<UnixMillis>,
}

impl DeviceStatus {
    /// The summary over all lines.
    pub fn sip_summary(&self) -> SipSummary {
        let registered = self.lines.iter().filter(|l| l.state == SipState::Registered).count();
        match (registered, self.lines.len()) {
            (_, 0) => SipSummary::Unknown,
            (r, n) if r == n => SipSummary::Registered,
            (0, _) => SipSummary::Unregistered,
            _ => SipSummary::Partial,
        }
    }
}

/// CPU and memory sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ResourceSample {
    /// CPU usage in hundredths of a percent (0..=10000).
    pub cpu_centi_pct: u16,
    /// Memory in use, bytes.
    pub mem_used_bytes: u64,
    /// Total memory, bytes.
    pub mem_total_bytes: u64,
}

/// An alarm reported by a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceAlarm {
    /// The alarm type.
    pub alarm_type: &'static AlarmType,
    /// True when the device reports the condition ended.
    pub clear: bool,
    /// Sanitized description.
    pub description: String,
    /// Alarm log, only for types with `has_log`.
    pub log: Option<Vec<u8>>,
}

/// A validated sequenced message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceMessage {
    /// Liveness only.
    Heartbeat {
        /// Seconds since boot.
        uptime_s: u64,
    },
    /// New status.
    Status(DeviceStatus),
    /// CPU and memory.
    Resource(ResourceSample),
    /// Alarm raised or cleared.
    Alarm(DeviceAlarm),
    /// The device's answer to a command (ING-8).
    CommandResult {
        /// The command answered.
        command_id: crate::CommandId,
        /// Where it stands.
        progress: CommandProgress,
    },
}

/// A device's answer to a command, validated: output and reason are within their bounds and
/// sanitized, and only the statuses that carry them have them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandProgress {
    /// The device took the command.
    Accepted,
    /// The device is running it, with what it says about its progress (`downloading 42%`;
    /// empty when it says nothing).
    Running {
        /// Progress text (at most [`MAX_COMMAND_OUTPUT`] bytes), or empty.
        progress: String,
    },
    /// It finished successfully.
    Succeeded {
        /// What it printed (at most [`MAX_COMMAND_OUTPUT`] bytes).
        output: String,
    },
    /// It failed.
    Failed {
        /// What it printed (at most [`MAX_COMMAND_OUTPUT`] bytes).
        output: String,
        /// Why (at most [`MAX_COMMAND_REASON`] bytes, never empty).
        reason: String,
    },
}

impl TryFrom<wire::CommandResult> for CommandProgress {
    type Error = InvalidMessage;

    fn try_from(c: wire::CommandResult) -> Result<Self, Self::Error> {
        if c.output.len() > MAX_COMMAND_OUTPUT {
            return Err(InvalidMessage::TooLong { field: "command output", max: MAX_COMMAND_OUTPUT });
        }
        if c.reason.len() > MAX_COMMAND_REASON {
            return Err(InvalidMessage::TooLong { field: "command failure reason", max: MAX_COMMAND_REASON });
        }
        let quiet = c.output.is_empty() && c.reason.is_empty();
        Ok(match c.status {
            wire::CommandStatus::Accepted if quiet => CommandProgress::Accepted,
            wire::CommandStatus::Running if c.reason.is_empty() => {
                CommandProgress::Running { progress: sanitize(c.output) }
            }
            wire::CommandStatus::Accepted | wire::CommandStatus::Running => {
                return Err(InvalidMessage::CommandResult("without a result carries no failure reason"));
            }
            wire::CommandStatus::Succeeded if c.reason.is_empty() => {
                CommandProgress::Succeeded { output: sanitize_multiline(c.output) }
            }
            wire::CommandStatus::Succeeded => {
                return Err(InvalidMessage::CommandResult("of success carries no failure reason"));
            }
            wire::CommandStatus::Failed if c.reason.trim().is_empty() => {
                return Err(InvalidMessage::CommandResult("of failure names its reason"));
            }
            wire::CommandStatus::Failed => {
                CommandProgress::Failed { output: sanitize_multiline(c.output), reason: sanitize(c.reason) }
            }
        })
    }
}

impl DeviceMessage {
    /// Whether the message is stored (and so acknowledged only once durable).
    pub fn is_persisted(&self) -> bool {
        matches!(self, DeviceMessage::Status(_) | DeviceMessage::Resource(_) | DeviceMessage::Alarm(_))
    }
}

fn ip(a: wire::IpAddress) -> IpAddr {
    match a {
        wire::IpAddress::V4(o) => IpAddr::from(o),
        wire::IpAddress::V6(o) => IpAddr::from(o),
    }
}

impl TryFrom<wire::Message> for DeviceMessage {
    type Error = InvalidMessage;

    fn try_from(m: wire::Message) -> Result<Self, Self::Error> {
        Ok(match m {
            wire::Message::Heartbeat(h) => DeviceMessage::Heartbeat { uptime_s: h.uptime_s },
            wire::Message::StatusChange(s) => {
                if s.lines.len() > MAX_SIP_LINES {
                    return Err(InvalidMessage::TooManyLines);
                }
                let lines = s
                    .lines
                    .into_iter()
                    .map(|l| {
                        Ok(SipLine {
                            line: l.line,
                            account: bounded("sip account", l.account, MAX_SHORT_TEXT)?,
                            state: match l.state {
                                wire::SipState::Registered => SipState::Registered,
                                wire::SipState::Unregistered => SipState::Unregistered,
                                wire::SipState::Unknown => SipState::Unknown,
                            },
                        })
                    })
                    .collect::<Result<_, InvalidMessage>>()?;
                DeviceMessage::Status(DeviceStatus {
                    lines,
                    call_status: match s.call_status {
                        wire::CallStatus::Idle => CallStatus::Idle,
                        wire::CallStatus::InCall => CallStatus::InCall,
                    },
                    firmware: bounded("firmware", s.firmware, MAX_SHORT_TEXT)?,
                    public_ip: s.public_ip.map(ip),
                    private_ip: s.private_ip.map(ip),
                    uptime_s: s.uptime_s,
                    last_reboot: s.last_reboot_ms.map(UnixMillis),
                })
            }
            wire::Message::ResourceReport(r) => {
                if r.cpu_centi_pct > 10_000 {
                    return Err(InvalidMessage::Resource("cpu above 100 %"));
                }
                if r.mem_used_bytes > r.mem_total_bytes {
                    return Err(InvalidMessage::Resource("memory used above total"));
                }
                DeviceMessage::Resource(ResourceSample {
                    cpu_centi_pct: r.cpu_centi_pct,
                    mem_used_bytes: r.mem_used_bytes,
                    mem_total_bytes: r.mem_total_bytes,
                })
            }
            wire::Message::Alarm(a) => {
                let alarm_type = AlarmTypeCode(a.code).alarm_type().ok_or(InvalidMessage::UnknownAlarmType(a.code))?;
                if alarm_type.derived {
                    return Err(InvalidMessage::DerivedAlarmType(a.code));
                }
                if a.log.is_some() && !alarm_type.has_log {
                    return Err(InvalidMessage::UnexpectedLog(a.code));
                }
                if a.log.as_ref().is_some_and(|l| l.len() > MAX_ALARM_LOG) {
                    return Err(InvalidMessage::TooLong { field: "alarm log", max: MAX_ALARM_LOG });
                }
                DeviceMessage::Alarm(DeviceAlarm {
                    alarm_type,
                    clear: a.action == wire::AlarmAction::Clear,
                    description: bounded("description", a.description, MAX_DESCRIPTION)?,
                    log: a.log,
                })
            }
            wire::Message::CommandResult(c) => {
                DeviceMessage::CommandResult { command_id: crate::CommandId(c.command_id), progress: c.try_into()? }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> wire::Hello {
        wire::Hello {
            protocol_version: crate::PROTOCOL_VERSION,
            mac: "001565aabbcc".into(),
            serial: String::new(),
            model: "T54W".into(),
            firmware: "1.0".into(),
            credential: "c".into(),
            heartbeat_interval_s: 30,
        }
    }

    #[test]
    fn hello_validation() {
        let ok = DeviceHello::try_from(hello()).expect("valid");
        assert_eq!(ok.key, DeviceKey::Mac(Mac::parse("001565aabbcc").expect("mac")));
        type Mutation = fn(&mut wire::Hello);
        let cases: Vec<(Mutation, InvalidMessage)> = vec![
            (|h| h.mac = "00:15".into(), InvalidMessage::Mac(MacError::Length(5))),
            (|h| h.mac.clear(), InvalidMessage::NoIdentity),
            (|h| h.protocol_version = 9, InvalidMessage::ProtocolVersion(9)),
            (|h| h.protocol_version = 1, InvalidMessage::ProtocolVersion(1)),
            (|h| h.heartbeat_interval_s = 1, InvalidMessage::HeartbeatInterval(1)),
            (|h| h.model = "x".repeat(65), InvalidMessage::TooLong { field: "model", max: 64 }),
        ];
        for (mutate, want) in cases {
            let mut h = hello();
            mutate(&mut h);
            assert_eq!(DeviceHello::try_from(h), Err(want));
        }
        let mut by_serial = hello();
        by_serial.mac.clear();
        by_serial.serial = "SN1".into();
        assert_eq!(DeviceHello::try_from(by_serial).map(|h| h.key), Ok(DeviceKey::Serial("SN1".into())));
    }

    #[test]
    fn message_validation() {
        let alarm = |code, log: Option<Vec<u8>>| {
            wire::Message::Alarm(wire::AlarmReport {
                code,
                action: wire::AlarmAction::Raise,
                description: "a\r\nBcc: x".into(),
                log,
            })
        };
        match DeviceMessage::try_from(alarm(105, Some(vec![1]))) {
            Ok(DeviceMessage::Alarm(a)) => assert_eq!(a.description, "a  Bcc: x"),
            other => panic!("{other:?}"),
        }
        assert_eq!(DeviceMessage::try_from(alarm(301, Some(vec![1]))), Err(InvalidMessage::UnexpectedLog(301)));
        assert_eq!(DeviceMessage::try_from(alarm(999, None)), Err(InvalidMessage::UnknownAlarmType(999)));
        assert_eq!(DeviceMessage::try_from(alarm(109, None)), Err(InvalidMessage::DerivedAlarmType(109)));
        assert_eq!(DeviceMessage::try_from(alarm(401, None)), Err(InvalidMessage::DerivedAlarmType(401)));
        let res = |cpu, used| {
            wire::Message::ResourceReport(wire::ResourceReport {
                cpu_centi_pct: cpu,
                mem_used_bytes: used,
                mem_total_bytes: 10,
            })
        };
        assert!(DeviceMessage::try_from(res(10_000, 10)).is_ok());
        assert!(DeviceMessage::try_from(res(10_001, 1)).is_err());
        assert!(DeviceMessage::try_from(res(1, 11)).is_err());
    }

    #[test]
    fn command_results_carry_only_what_their_status_allows() {
        let answer = |status, output: &str, reason: &str| {
            DeviceMessage::try_from(wire::Message::CommandResult(wire::CommandResult {
                command_id: 7,
                status,
                output: output.into(),
                reason: reason.into(),
            }))
        };
        use wire::CommandStatus as S;
        let progress = |m: Result<DeviceMessage, InvalidMessage>| match m {
            Ok(DeviceMessage::CommandResult { command_id, progress }) => {
                assert_eq!(command_id, crate::CommandId(7));
                Ok(progress)
            }
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        };
        assert_eq!(progress(answer(S::Accepted, "", "")), Ok(CommandProgress::Accepted));
        assert_eq!(progress(answer(S::Running, "", "")), Ok(CommandProgress::Running { progress: String::new() }));
        assert_eq!(
            progress(answer(S::Running, "downloading\n42%", "")),
            Ok(CommandProgress::Running { progress: "downloading 42%".into() })
        );
        assert_eq!(
            progress(answer(S::Succeeded, "64 bytes\n\tok\x07", "")),
            Ok(CommandProgress::Succeeded { output: "64 bytes\n\tok ".into() })
        );
        assert_eq!(
            progress(answer(S::Failed, "", "no\nroute")),
            Ok(CommandProgress::Failed { output: String::new(), reason: "no route".into() })
        );
        assert!(matches!(answer(S::Accepted, "x", ""), Err(InvalidMessage::CommandResult(_))));
        assert!(matches!(answer(S::Succeeded, "", "why"), Err(InvalidMessage::CommandResult(_))));
        assert!(matches!(answer(S::Failed, "out", " "), Err(InvalidMessage::CommandResult(_))));
        let long = "x".repeat(MAX_COMMAND_OUTPUT + 1);
        assert!(matches!(answer(S::Succeeded, &long, ""), Err(InvalidMessage::TooLong { .. })));
        assert!(answer(S::Succeeded, &long[1..], "").is_ok());
        let long_reason = "x".repeat(MAX_COMMAND_REASON + 1);
        assert!(matches!(answer(S::Failed, "", &long_reason), Err(InvalidMessage::TooLong { .. })));
    }

    #[test]
    fn file_names_are_plain() {
        for ok in ["syslog.txt", "capture-1.pcap", "a", &"a".repeat(MAX_FILE_NAME)] {
            assert_eq!(check_file_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", ".hidden", "../etc/passwd", "a/b", "a b", "ü.txt", "a\u{0}", &"a".repeat(MAX_FILE_NAME + 1)] {
            assert!(check_file_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sip_summary() {
        let status = |states: &[SipState]| DeviceStatus {
            lines: states
                .iter()
                .enumerate()
                .map(|(i, s)| SipLine { line: i as u8 + 1, account: String::new(), state: *s })
                .collect(),
            call_status: CallStatus::Idle,
            firmware: String::new(),
            public_ip: None,
            private_ip: None,
            uptime_s: 0,
            last_reboot: None,
        };
        use SipState::*;
        assert_eq!(status(&[]).sip_summary(), SipSummary::Unknown);
        assert_eq!(status(&[Registered, Registered]).sip_summary(), SipSummary::Registered);
        assert_eq!(status(&[Registered, Unknown]).sip_summary(), SipSummary::Partial);
        assert_eq!(status(&[Unregistered]).sip_summary(), SipSummary::Unregistered);
    }
}

/// A change to an aggregated alarm record, as decided by the alarm engine and applied by the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AlarmChange {
    /// The device.
    pub device_id: crate::DeviceId,
    /// Its enterprise.
    pub enterprise_id: crate::EnterpriseId,
    /// The alarm type.
    pub code: AlarmTypeCode,
    /// When it happened.
    pub at: UnixMillis,
    /// Raise (count + 1) or clear.
    pub kind: AlarmChangeKind,
}

/// What an [`AlarmChange`] does to the record of its (device, type).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum AlarmChangeKind {
    /// The alarm occurred: create the record or bump its count and latest time; it is active.
    Raise {
        /// Latest description.
        description: String,
    },
    /// The condition ended (the device recovered or cleared it): an active or acknowledged
    /// record becomes cleared.
    Clear,
    /// An account acknowledged the alarm: an active record becomes acknowledged (ALM-2).
    Acknowledge {
        /// Who.
        by: crate::AccountId,
    },
    /// An account cleared the alarm by hand: an active or acknowledged record becomes cleared.
    ManualClear {
        /// Who.
        by: crate::AccountId,
    },
}
