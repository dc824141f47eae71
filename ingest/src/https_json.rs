//! The JSON form of HTTPS ingest (ING-10): request and response bodies, and their explicit
//! conversion to the device protocol's wire types.
//!
//! A JSON request is converted into the same `Hello` and `Data` frames a QUIC device sends and
//! then judged by the same code ([`crate::admission`]); this module decides nothing else. The
//! credential comes from the `Authorization: Bearer` header, not the body.

use std::net::IpAddr;

use fleetpulse_proto::wire;
use serde::{Deserialize, Serialize};

/// `POST /ingest/v1/messages`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JsonRequest {
    /// Who sends.
    pub device: JsonDevice,
    /// Sequenced messages, in order.
    #[serde(default)]
    pub frames: Vec<JsonFrame>,
}

/// The identity part of `Hello`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JsonDevice {
    #[serde(default)]
    pub mac: String,
    #[serde(default)]
    pub serial: String,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub firmware: String,
    /// Seconds between heartbeats (the device is offline after the configured number of missed
    /// intervals without a request).
    pub heartbeat_interval_s: u32,
    /// Protocol version (default: the newest the server speaks).
    #[serde(default)]
    pub protocol_version: Option<u16>,
}

/// One sequenced message.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JsonFrame {
    pub seq: u64,
    /// Device clock, milliseconds since the Unix epoch (default 0: unknown).
    #[serde(default)]
    pub sent_at_ms: i64,
    pub message: JsonMessage,
}

/// The message kinds, tagged by `type`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum JsonMessage {
    Heartbeat {
        uptime_s: u64,
    },
    Status {
        #[serde(default)]
        lines: Vec<JsonSipLine>,
        in_call: bool,
        #[serde(default)]
        firmware: String,
        #[serde(default)]
        public_ip: Option<IpAddr>,
        #[serde(default)]
        private_ip: Option<IpAddr>,
        uptime_s: u64,
        #[serde(default)]
        last_reboot_ms: Option<i64>,
    },
    Resource {
        cpu_centi_pct: u16,
        mem_used_bytes: u64,
        mem_total_bytes: u64,
    },
    Alarm {
        code: u16,
        /// `true` clears the alarm; default raises it.
        #[serde(default)]
        clear: bool,
        #[serde(default)]
        description: String,
        /// Alarm log as text (for the types that carry one).
        #[serde(default)]
        log: Option<String>,
    },
    CommandResult {
        command_id: u64,
        status: JsonCommandStatus,
        #[serde(default)]
        output: String,
        #[serde(default)]
        reason: String,
    },
}

/// One SIP line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JsonSipLine {
    pub line: u8,
    #[serde(default)]
    pub account: String,
    pub registered: bool,
}

/// Where a command stands.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum JsonCommandStatus {
    Accepted,
    Running,
    Succeeded,
    Failed,
}

/// The answer to a JSON request.
#[derive(Debug, Serialize)]
pub(crate) struct JsonResponse {
    pub device_id: u64,
    /// The delivery mark before this request (`Welcome.last_seq`).
    pub last_seq: u64,
    /// Every frame up to this seq is durable (0: none yet).
    pub ack: u64,
    /// Frames whose content was refused (they count as acknowledged).
    pub rejected: Vec<JsonRejected>,
    /// Commands for the device (protocol version 2), to answer with `command_result` frames.
    pub commands: Vec<JsonCommand>,
}

/// A command for the device, as the `Command` frame carries it.
#[derive(Debug, Serialize)]
pub(crate) struct JsonCommand {
    pub command_id: u64,
    pub kind: String,
    /// The arguments (a JSON object or `null`).
    pub args: serde_json::Value,
    /// Not to be started after this (server clock, milliseconds since the Unix epoch).
    pub deadline_ms: i64,
}

impl From<wire::Command> for JsonCommand {
    fn from(c: wire::Command) -> JsonCommand {
        // The store holds arguments validated as JSON; anything else is passed on as text.
        let args = serde_json::from_str(&c.args_json).unwrap_or(serde_json::Value::String(c.args_json));
        JsonCommand { command_id: c.command_id, kind: c.kind, args, deadline_ms: c.deadline_ms }
    }
}

/// A refused frame.
#[derive(Debug, Serialize)]
pub(crate) struct JsonRejected {
    pub seq: u64,
    pub reason: String,
}

/// An error answer (both forms).
#[derive(Debug, Serialize)]
pub(crate) struct JsonError<'a> {
    /// The device protocol's close code for the same failure.
    pub close_code: u32,
    pub error: &'a str,
}

impl JsonDevice {
    /// The `Hello` a QUIC device would send.
    pub(crate) fn into_hello(self, credential: String) -> wire::Hello {
        wire::Hello {
            protocol_version: self.protocol_version.unwrap_or(*fleetpulse_proto::SUPPORTED_PROTOCOL_VERSIONS.end()),
            mac: self.mac,
            serial: self.serial,
            model: self.model,
            firmware: self.firmware,
            credential,
            heartbeat_interval_s: self.heartbeat_interval_s,
        }
    }
}

fn ip(a: IpAddr) -> wire::IpAddress {
    match a {
        IpAddr::V4(v4) => wire::IpAddress::V4(v4.octets()),
        IpAddr::V6(v6) => wire::IpAddress::V6(v6.octets()),
    }
}

impl JsonFrame {
    /// The `Data` frame a QUIC device would send.
    pub(crate) fn into_uplink(self) -> wire::Uplink {
        let body = match self.message {
            JsonMessage::Heartbeat { uptime_s } => wire::Message::Heartbeat(wire::Heartbeat { uptime_s }),
            JsonMessage::Status { lines, in_call, firmware, public_ip, private_ip, uptime_s, last_reboot_ms } => {
                wire::Message::StatusChange(wire::StatusChange {
                    lines: lines
                        .into_iter()
                        .map(|l| wire::SipLine {
                            line: l.line,
                            account: l.account,
                            state: if l.registered { wire::SipState::Registered } else { wire::SipState::Unregistered },
                        })
                        .collect(),
                    call_status: if in_call { wire::CallStatus::InCall } else { wire::CallStatus::Idle },
                    firmware,
                    public_ip: public_ip.map(ip),
                    private_ip: private_ip.map(ip),
                    uptime_s,
                    last_reboot_ms,
                })
            }
            JsonMessage::Resource { cpu_centi_pct, mem_used_bytes, mem_total_bytes } => {
                wire::Message::ResourceReport(wire::ResourceReport { cpu_centi_pct, mem_used_bytes, mem_total_bytes })
            }
            JsonMessage::Alarm { code, clear, description, log } => wire::Message::Alarm(wire::AlarmReport {
                code,
                action: if clear { wire::AlarmAction::Clear } else { wire::AlarmAction::Raise },
                description,
                log: log.map(String::into_bytes),
            }),
            JsonMessage::CommandResult { command_id, status, output, reason } => {
                let status = match status {
                    JsonCommandStatus::Accepted => wire::CommandStatus::Accepted,
                    JsonCommandStatus::Running => wire::CommandStatus::Running,
                    JsonCommandStatus::Succeeded => wire::CommandStatus::Succeeded,
                    JsonCommandStatus::Failed => wire::CommandStatus::Failed,
                };
                wire::Message::CommandResult(wire::CommandResult { command_id, status, output, reason })
            }
        };
        wire::Uplink::Data(wire::DataFrame { seq: self.seq, sent_at_ms: self.sent_at_ms, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_request_becomes_the_frames_a_quic_device_sends() {
        let text = r#"{"device": {"mac": "001565aabbcc", "model": "T54W", "heartbeat_interval_s": 60},
            "frames": [
              {"seq": 1, "message": {"type": "heartbeat", "uptime_s": 5}},
              {"seq": 2, "sent_at_ms": 7, "message": {"type": "alarm", "code": 1, "clear": true}},
              {"seq": 3, "message": {"type": "status", "in_call": true, "uptime_s": 9,
                "lines": [{"line": 1, "registered": false}], "private_ip": "10.0.0.2"}}
            ]}"#;
        let request: JsonRequest = serde_json::from_str(text).expect("valid request");
        let hello = request.device.into_hello("cred".into());
        assert_eq!(
            (hello.mac.as_str(), hello.credential.as_str(), hello.heartbeat_interval_s),
            ("001565aabbcc", "cred", 60)
        );
        assert_eq!(hello.protocol_version, *fleetpulse_proto::SUPPORTED_PROTOCOL_VERSIONS.end());
        let frames: Vec<_> = request.frames.into_iter().map(JsonFrame::into_uplink).collect();
        let wire::Uplink::Data(alarm) = &frames[1] else { panic!("data frame") };
        assert_eq!((alarm.seq, alarm.sent_at_ms), (2, 7));
        assert!(matches!(&alarm.body, wire::Message::Alarm(a) if a.action == wire::AlarmAction::Clear && a.code == 1));
        let wire::Uplink::Data(status) = &frames[2] else { panic!("data frame") };
        let wire::Message::StatusChange(s) = &status.body else { panic!("status") };
        assert_eq!(s.call_status, wire::CallStatus::InCall);
        assert_eq!(s.lines[0].state, wire::SipState::Unregistered);
        assert_eq!(s.private_ip, Some(wire::IpAddress::V4([10, 0, 0, 2])));
    }

    #[test]
    fn unknown_fields_and_kinds_are_refused() {
        let extra = r#"{"device": {"heartbeat_interval_s": 60, "credential": "x"}, "frames": []}"#;
        assert!(serde_json::from_str::<JsonRequest>(extra).is_err());
        let kind = r#"{"device": {"heartbeat_interval_s": 60}, "frames": [{"seq": 1, "message": {"type": "reboot"}}]}"#;
        assert!(serde_json::from_str::<JsonRequest>(kind).is_err());
    }
}
