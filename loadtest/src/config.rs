//! Run configuration: [`LoadConfig`], the message mix, and the parsers the command line uses.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use fleetpulse_proto::domain::HEARTBEAT_INTERVAL_S;
use rand::Rng;

use crate::identity::MacPlan;

/// Everything one load-test run needs.
///
/// [`LoadConfig::default`] gives the command line's defaults except that `progress` is off and
/// `ca_cert` is empty (it must be set).
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The ingest server's QUIC address.
    pub quic_addr: SocketAddr,
    /// Further ingest nodes' QUIC addresses (issue 16): device `i` starts at address
    /// `i mod n` of [`LoadConfig::quic_addr`] and these, and moves to the next after a failed
    /// attempt or a lost connection.
    pub more_quic_addrs: Vec<SocketAddr>,
    /// TLS server name to verify the server certificate against.
    pub server_name: String,
    /// Base URL of the management API, e.g. `http://127.0.0.1:8080`.
    pub api: String,
    /// Login of the platform admin used to create the enterprise and to verify.
    pub admin_email: String,
    /// Password of `admin_email`.
    pub admin_password: String,
    /// PEM file with the CA certificate(s) that signed the server certificate.
    pub ca_cert: PathBuf,
    /// Number of simulated devices (each one QUIC connection).
    pub devices: u32,
    /// Length of the sending phase.
    pub duration: Duration,
    /// Data frames per second per device (open model; heartbeats come on top).
    pub rate_per_device: f64,
    /// Weights of the data message kinds.
    pub mix: MessageMix,
    /// Heartbeat interval announced in `Hello` and kept by every device, seconds.
    pub heartbeat_interval_s: u32,
    /// Frames generated per schedule tick and written per flush (`rate_per_device` counts frames).
    pub burst: u32,
    /// Part of the sending phase in which devices connect and heartbeat but send no data: every
    /// device's data starts at the end of it (or at its connection, if later), so that connection
    /// set-up and device registration stay out of the measured latency; its heartbeats start at
    /// its connection. Counts in `duration`.
    pub warmup: Duration,
    /// New device connections per second (token-bucket pacing), 0 = unlimited.
    pub connect_rate: u32,
    /// How long to wait after the sending phase for outstanding frames to be acknowledged.
    pub drain_timeout: Duration,
    /// Extra devices that present a wrong credential and must be rejected by the server.
    pub bad_credential_devices: u32,
    /// Where to write the JSON report, if anywhere.
    pub report: Option<PathBuf>,
    /// Print a progress line to stderr every second.
    pub progress: bool,
    /// Use this existing enterprise (id, provisioning credential) instead of creating one.
    pub credential: Option<(u64, String)>,
    /// Name the devices with this 24-bit MAC prefix instead of a random one: with the enterprise
    /// of an earlier run (`credential`), its fleet connects again as devices the server knows.
    pub mac_prefix: Option<u32>,
    /// Injected alarm raises per second across the fleet (each cleared again before the device's
    /// next raise), on top of the data frames; 0 = none.
    pub alarm_rate: f64,
    /// Run an SMTP sink here and measure injected alarm → email latency.
    pub smtp_sink: Option<SocketAddr>,
    /// Receiver of the alarm strategy created for the injected alarms.
    pub alarm_receiver: String,
    /// How long to wait after the drain for the emails of injected alarms.
    pub alarm_drain_timeout: Duration,
    /// How a device answers commands: from `accepted` to its result (or its file upload).
    pub command_delay: Duration,
    /// Share of commands a device answers `failed` (0..=1).
    pub command_failure_rate: f64,
    /// Size of the fake file a device uploads for a command kind that answers with a file.
    pub file_bytes: u64,
    /// Issue commands through the API once the fleet is connected, and measure them.
    pub command_mode: Option<CommandMode>,
    /// The server is `load_sink` (no API, nothing stored): no enterprise is created and nothing
    /// verified; for measuring the load tester's own cost (issue 14 item 5).
    pub sink: bool,
    /// How the devices reach the server.
    pub transport: Transport,
    /// With [`Transport::Relayed`]: the relay credential (`[[ingest.relays]]`) the simulated
    /// relays present.
    pub relay_credential: Option<String>,
    /// With [`Transport::Relayed`]: how many simulated relays (one HTTP/2 connection each) carry
    /// the devices, device `i` on relay `i % relays`.
    pub relays: u32,
}

/// How the simulated devices reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// One QUIC connection per device (`quic_addr`).
    #[default]
    Quic,
    /// HTTPS ingest (ING-10) at this address: `POST /ingest/v1/frames`, one keep-alive
    /// connection per device (see `https_mode`).
    Https(SocketAddr),
    /// HTTPS ingest at this address as relays reach it (ING-9): `relays` simulated relays, one
    /// HTTP/2 connection each with the relay credential, carry every device's exchanges (its own
    /// `Hello` and frames) as streams; each device is admitted when it "connects" (paced by
    /// `connect_rate`) and then exchanges only when it has frames, as behind `fleetpulse relay`.
    /// What the server sees is what real relays send, without a QUIC connection per device on
    /// this machine (see `https_mode`).
    Relayed(SocketAddr),
}

/// Most bytes of a fake file (`--file-bytes`).
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// The command mode of a run: which commands to issue through the API and how.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandMode {
    /// One at a time to random connected devices, or one bulk command to every device.
    pub issue: CommandIssue,
    /// The command kind (see `fleetpulse_proto::commands::COMMAND_KINDS`).
    pub kind: String,
    /// Its arguments (a JSON object).
    pub args: serde_json::Value,
    /// The deadline given to each command; a command not answered and stored by then (plus a
    /// little) counts as unfinished.
    pub deadline: Duration,
}

/// How the command mode issues its commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandIssue {
    /// `count` commands, one after the other (each waits for the previous one's stored result),
    /// each to a device drawn at random from the connected ones.
    OneByOne {
        /// How many.
        count: u32,
    },
    /// One bulk command to every connected device.
    Bulk,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            quic_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 4433)),
            more_quic_addrs: Vec::new(),
            server_name: "localhost".into(),
            api: "http://127.0.0.1:8080".into(),
            admin_email: String::new(),
            admin_password: String::new(),
            ca_cert: PathBuf::new(),
            devices: 100,
            duration: Duration::from_secs(60),
            rate_per_device: 1.0,
            mix: MessageMix::default(),
            heartbeat_interval_s: 30,
            burst: 1,
            connect_rate: 1000,
            drain_timeout: Duration::from_secs(30),
            bad_credential_devices: 0,
            report: None,
            progress: false,
            credential: None,
            mac_prefix: None,
            alarm_rate: 0.0,
            smtp_sink: None,
            alarm_receiver: "loadtest@example.com".into(),
            alarm_drain_timeout: Duration::from_secs(30),
            command_delay: Duration::from_millis(50),
            command_failure_rate: 0.0,
            file_bytes: 64 * 1024,
            command_mode: None,
            warmup: Duration::ZERO,
            sink: false,
            transport: Transport::Quic,
            relay_credential: None,
            relays: 1,
        }
    }
}

impl LoadConfig {
    /// Checks the values that would otherwise fail in the middle of a run.
    pub fn validate(&self) -> anyhow::Result<()> {
        let total = u64::from(self.devices) + u64::from(self.bad_credential_devices);
        ensure!(
            total <= u64::from(MacPlan::MAX_DEVICES),
            "at most {} devices (including bad-credential devices) per run",
            MacPlan::MAX_DEVICES
        );
        ensure!(
            self.rate_per_device.is_finite() && self.rate_per_device >= 0.0,
            "the per-device rate must be a finite number >= 0"
        );
        ensure!(self.burst >= 1, "burst must be at least 1");
        ensure!(
            HEARTBEAT_INTERVAL_S.contains(&self.heartbeat_interval_s),
            "the heartbeat interval must be within {HEARTBEAT_INTERVAL_S:?} seconds"
        );
        ensure!(
            self.rate_per_device == 0.0 || self.mix.total() > 0.0,
            "the message mix needs at least one positive weight"
        );
        ensure!(self.alarm_rate.is_finite() && self.alarm_rate >= 0.0, "the alarm rate must be a finite number >= 0");
        ensure!(self.alarm_rate == 0.0 || self.devices > 0, "injected alarms need at least one device");
        if self.alarm_rate > 0.0 && self.smtp_sink.is_some() {
            let receiver = self.alarm_receiver.trim();
            ensure!(
                receiver.split_once('@').is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
                    && !receiver.contains(char::is_whitespace),
                "the alarm receiver `{receiver}` is not an email address"
            );
        }
        ensure!((0.0..=1.0).contains(&self.command_failure_rate), "the command failure rate must be within 0..=1");
        ensure!(self.file_bytes <= MAX_FILE_BYTES, "a fake file is at most {MAX_FILE_BYTES} bytes");
        if matches!(self.transport, Transport::Relayed(_)) {
            ensure!(self.relay_credential.is_some(), "relayed devices need a relay credential");
            ensure!((1..=1024).contains(&self.relays), "between 1 and 1,024 simulated relays");
        }
        if let Some(mode) = &self.command_mode {
            fleetpulse_proto::commands::validate_command(&mode.kind, &mode.args)
                .with_context(|| format!("the command mode's command {}", mode.kind))?;
            ensure!(mode.deadline >= Duration::from_secs(1), "the command deadline must be at least 1 s");
            ensure!(self.devices > 0, "the command mode needs at least one device");
            ensure!(
                !matches!(mode.issue, CommandIssue::OneByOne { count: 0 }),
                "the command mode needs at least one command"
            );
        }
        if self.sink {
            ensure!(
                self.command_mode.is_none() && self.smtp_sink.is_none() && self.bad_credential_devices == 0,
                "a sink has no API and no credentials: no command mode, SMTP sink or bad-credential devices"
            );
        }
        ensure!(self.sink || !self.api.is_empty(), "the API base URL is empty");
        ensure!(!self.ca_cert.as_os_str().is_empty(), "the CA certificate path is empty");
        Ok(())
    }
}

/// The kinds of sequenced message a simulated device sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// Liveness; sequenced and acknowledged but not stored.
    Heartbeat,
    /// Full status after a change; stored.
    Status,
    /// CPU and memory; stored.
    Resource,
    /// Alarm raise or clear of a random type; stored.
    Alarm,
    /// An injected alarm (`--alarm-rate`): raise number `n` of the run, whose description carries
    /// its token, or the clear that follows it; stored.
    InjectedAlarm {
        /// The raise's number in the run (see [`crate::alarms::DeviceTokens`]).
        n: u64,
        /// The clear after raise `n` rather than the raise.
        clear: bool,
    },
    /// An answer to a server command; acknowledged, and stored by the server as the command's
    /// state rather than as an event (so verification does not expect it in the stored sequences).
    CommandResult(crate::responder::Answer),
}

impl MessageKind {
    /// Whether the server stores this kind (and so verification expects it).
    pub fn is_persisted(self) -> bool {
        !matches!(self, MessageKind::Heartbeat | MessageKind::CommandResult(_))
    }
}

/// Relative weights of the data message kinds; the kind of each data frame is drawn from them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MessageMix {
    /// Weight of status changes.
    pub status: f64,
    /// Weight of resource reports.
    pub resource: f64,
    /// Weight of alarms.
    pub alarm: f64,
    /// Weight of heartbeats among data frames (the periodic heartbeats come on top).
    pub heartbeat: f64,
}

impl Default for MessageMix {
    fn default() -> Self {
        MessageMix { status: 1.0, resource: 1.0, alarm: 0.2, heartbeat: 0.0 }
    }
}

impl MessageMix {
    /// Sum of the weights.
    pub fn total(&self) -> f64 {
        self.status + self.resource + self.alarm + self.heartbeat
    }

    /// Draws one kind with probability proportional to its weight.
    ///
    /// A mix whose weights are all zero yields [`MessageKind::Status`].
    pub fn draw(&self, rng: &mut impl Rng) -> MessageKind {
        let mut point = rng.random::<f64>() * self.total();
        let mut last_positive = MessageKind::Status;
        for (weight, kind) in [
            (self.status, MessageKind::Status),
            (self.resource, MessageKind::Resource),
            (self.alarm, MessageKind::Alarm),
            (self.heartbeat, MessageKind::Heartbeat),
        ] {
            if weight > 0.0 {
                if point < weight {
                    return kind;
                }
                point -= weight;
                last_positive = kind;
            }
        }
        // Only reached when rounding leaves `point` a hair above the sum of the weights.
        last_positive
    }
}

/// Parses `status=1,resource=1,alarm=0.2,heartbeat=0`. Kinds left out get weight 0.
impl FromStr for MessageMix {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut mix = MessageMix { status: 0.0, resource: 0.0, alarm: 0.0, heartbeat: 0.0 };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part.split_once('=').with_context(|| format!("`{part}`: expected kind=weight"))?;
            let value: f64 = value.trim().parse().with_context(|| format!("`{part}`: the weight is not a number"))?;
            ensure!(value.is_finite() && value >= 0.0, "`{part}`: a weight must be finite and >= 0");
            let slot = match name.trim() {
                "status" => &mut mix.status,
                "resource" => &mut mix.resource,
                "alarm" => &mut mix.alarm,
                "heartbeat" => &mut mix.heartbeat,
                other => bail!("unknown message kind `{other}` (status, resource, alarm, heartbeat)"),
            };
            *slot = value;
        }
        ensure!(mix.total() > 0.0, "the message mix needs at least one positive weight");
        Ok(mix)
    }
}

/// Parses a duration: `30s`, `2m`, `1h`, `250ms`, or a plain number of seconds (`45`, `1.5`).
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    ensure!(!number.is_empty(), "`{s}`: expected a number, e.g. 30s, 2m, 1h, 250ms or 45");
    let value: f64 = number.parse().with_context(|| format!("`{s}`: not a number"))?;
    let seconds_per_unit = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => bail!("`{s}`: unknown unit `{other}` (ms, s, m, h)"),
    };
    Duration::try_from_secs_f64(value * seconds_per_unit).with_context(|| format!("`{s}`: out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    #[test]
    fn durations_parse_with_and_without_units() {
        for (input, want) in [
            ("30s", Duration::from_secs(30)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("250ms", Duration::from_millis(250)),
            ("45", Duration::from_secs(45)),
            ("1.5", Duration::from_millis(1500)),
            (" 10 s ", Duration::from_secs(10)),
            ("0", Duration::ZERO),
        ] {
            assert_eq!(parse_duration(input).expect(input), want, "{input}");
        }
        for bad in ["", "s", "-1s", "10x", "1.2.3s", "abc"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn mix_parses_and_leaves_out_kinds_at_zero() {
        let mix: MessageMix = "status=1,resource=1,alarm=0.2,heartbeat=0".parse().expect("valid");
        assert_eq!(mix, MessageMix::default());
        let only_alarms: MessageMix = "alarm=3".parse().expect("valid");
        assert_eq!(only_alarms, MessageMix { status: 0.0, resource: 0.0, alarm: 3.0, heartbeat: 0.0 });
        for bad in ["", "status=0", "status", "status=x", "status=-1", "video=1", "status=inf"] {
            assert!(bad.parse::<MessageMix>().is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn mix_draws_follow_the_weights() {
        let mix = MessageMix { status: 5.0, resource: 3.0, alarm: 2.0, heartbeat: 0.0 };
        let mut rng = SmallRng::seed_from_u64(7);
        let n = 100_000;
        let mut counts = std::collections::HashMap::new();
        for _ in 0..n {
            *counts.entry(mix.draw(&mut rng)).or_insert(0u32) += 1;
        }
        let share = |k| f64::from(counts.get(&k).copied().unwrap_or(0)) / f64::from(n);
        assert!((share(MessageKind::Status) - 0.5).abs() < 0.01, "{counts:?}");
        assert!((share(MessageKind::Resource) - 0.3).abs() < 0.01, "{counts:?}");
        assert!((share(MessageKind::Alarm) - 0.2).abs() < 0.01, "{counts:?}");
        assert_eq!(share(MessageKind::Heartbeat), 0.0, "zero weight is never drawn");
    }

    #[test]
    fn a_single_kind_mix_always_draws_it() {
        let mix = MessageMix { status: 0.0, resource: 0.0, alarm: 0.0, heartbeat: 1.0 };
        let mut rng = SmallRng::seed_from_u64(1);
        assert!((0..1000).all(|_| mix.draw(&mut rng) == MessageKind::Heartbeat));
    }

    #[test]
    fn validation_catches_bad_values() {
        let ok = LoadConfig { ca_cert: "ca.pem".into(), ..LoadConfig::default() };
        ok.validate().expect("defaults are valid");
        let mode = CommandMode {
            issue: CommandIssue::Bulk,
            kind: "ping".into(),
            args: serde_json::json!({ "target": "192.0.2.1" }),
            deadline: Duration::from_secs(30),
        };
        LoadConfig { command_mode: Some(mode.clone()), ..ok.clone() }.validate().expect("a valid command mode");
        let bad = [
            LoadConfig { burst: 0, ..ok.clone() },
            LoadConfig { heartbeat_interval_s: 1, ..ok.clone() },
            LoadConfig { rate_per_device: f64::NAN, ..ok.clone() },
            LoadConfig { devices: MacPlan::MAX_DEVICES, bad_credential_devices: 1, ..ok.clone() },
            LoadConfig { ca_cert: PathBuf::new(), ..ok.clone() },
            LoadConfig { command_failure_rate: 1.5, ..ok.clone() },
            LoadConfig { file_bytes: MAX_FILE_BYTES + 1, ..ok.clone() },
            LoadConfig {
                command_mode: Some(CommandMode { kind: "selfdestruct".into(), ..mode.clone() }),
                ..ok.clone()
            },
            LoadConfig {
                command_mode: Some(CommandMode { args: serde_json::json!({}), ..mode.clone() }),
                ..ok.clone()
            },
            LoadConfig {
                command_mode: Some(CommandMode { issue: CommandIssue::OneByOne { count: 0 }, ..mode.clone() }),
                ..ok.clone()
            },
            LoadConfig { alarm_rate: -1.0, ..ok.clone() },
            LoadConfig { alarm_rate: f64::INFINITY, ..ok.clone() },
            LoadConfig { alarm_rate: 1.0, devices: 0, ..ok.clone() },
            LoadConfig {
                alarm_rate: 1.0,
                smtp_sink: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 2525))),
                alarm_receiver: "nobody".into(),
                ..ok.clone()
            },
        ];
        for cfg in bad {
            assert!(cfg.validate().is_err(), "{cfg:?}");
        }
    }
}
