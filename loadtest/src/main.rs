//! `fleetpulse-loadtest`: the command line around [`fleetpulse_loadtest::run_until`].
//!
//! Prints the JSON report to stdout (logs and progress go to stderr). Exit codes: 0 when
//! verification found nothing missing or duplicated, 3 when it did, 1 when the run failed,
//! 2 for a command-line error.
//! Ctrl-C ends the sending phase early; the run still drains, verifies and reports.
//! In command mode (`--commands N` or `--bulk-command`) a summary of the commands also goes to
//! stderr.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use fleetpulse_loadtest::responder::default_args;
use fleetpulse_loadtest::{CommandIssue, CommandMode, LoadConfig, MessageMix, Transport, parse_duration};
use tracing_subscriber::EnvFilter;

/// Simulates a fleet of devices against a fleetpulse server and verifies that every
/// acknowledged message was stored.
#[derive(Debug, Parser)]
#[command(name = "fleetpulse-loadtest", version)]
struct Args {
    /// QUIC address of the ingest server.
    #[arg(long, default_value = "127.0.0.1:4433")]
    quic_addr: SocketAddr,
    /// Another ingest node's QUIC address (repeatable): devices spread over all the addresses and
    /// move to the next one when a connection fails.
    #[arg(long = "also-quic-addr")]
    also_quic_addr: Vec<SocketAddr>,
    /// How devices reach the server: `quic` (one connection per device), `https` (HTTPS
    /// ingest at --https-addr, one keep-alive connection per device) or `relayed` (HTTPS ingest
    /// at --https-addr as `fleetpulse relay` reaches it: --relays HTTP/2 connections with
    /// --relay-credential carry all devices).
    #[arg(long, default_value = "quic", value_parser = ["quic", "https", "relayed"])]
    transport: String,
    /// TCP address of HTTPS ingest (`[ingest] https_listen`), for --transport https or relayed.
    #[arg(long, required_if_eq_any([("transport", "https"), ("transport", "relayed")]))]
    https_addr: Option<SocketAddr>,
    /// For --transport relayed: the relay credential (`[[ingest.relays]]`).
    #[arg(long, env = "FLEETPULSE_RELAY_CREDENTIAL", hide_env_values = true, required_if_eq("transport", "relayed"))]
    relay_credential: Option<String>,
    /// For --transport relayed: simulated relays (one HTTP/2 connection each).
    #[arg(long, default_value_t = 1)]
    relays: u32,
    /// TLS server name to verify the server certificate against.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// Base URL of the management API.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    api: String,
    /// Admin login used to create the enterprise and to verify.
    #[arg(long, env = "FLEETPULSE_ADMIN_EMAIL", required_unless_present = "sink")]
    admin_email: Option<String>,
    /// Password of the admin login.
    #[arg(long, env = "FLEETPULSE_ADMIN_PASSWORD", hide_env_values = true, required_unless_present = "sink")]
    admin_password: Option<String>,
    /// The server is `load_sink` (benches): no API, nothing created or verified; measures the
    /// load tester itself.
    #[arg(long)]
    sink: bool,
    /// PEM file with the CA certificate that signed the server's certificate.
    #[arg(long)]
    ca_cert: PathBuf,
    /// Number of simulated devices (one QUIC connection each).
    #[arg(long, default_value_t = 100)]
    devices: u32,
    /// Length of the sending phase: 30s, 2m, 1h, 250ms or plain seconds.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Data frames per second per device (open model; heartbeats come on top).
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// Weights of the data message kinds; kinds left out get 0.
    #[arg(long, default_value = "status=1,resource=1,alarm=0.2,heartbeat=0")]
    mix: MessageMix,
    /// Heartbeat interval in seconds (5..=3600).
    #[arg(long, default_value_t = 30)]
    heartbeat_interval: u32,
    /// Frames per schedule tick, written together (the rate counts frames).
    #[arg(long, default_value_t = 1)]
    burst: u32,
    /// Start of every device's data after the run start (devices connect and heartbeat meanwhile);
    /// part of the duration.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    warmup: Duration,
    /// New connections per second while connecting the fleet; 0 = unlimited.
    #[arg(long, default_value_t = 1000)]
    connect_rate: u32,
    /// How long to wait after the sending phase for outstanding frames to be acknowledged.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// Extra devices presenting a wrong credential; each must be rejected.
    #[arg(long, default_value_t = 0)]
    bad_credential_devices: u32,
    /// Also write the JSON report to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Do not print a progress line every second.
    #[arg(long)]
    no_progress: bool,
    /// Use this existing enterprise instead of creating one (needs --credential).
    #[arg(long, requires = "credential")]
    enterprise_id: Option<u64>,
    /// Provisioning credential of --enterprise-id.
    #[arg(long, requires = "enterprise_id")]
    credential: Option<String>,
    /// Name the devices with this MAC prefix (6 hex digits, as in an earlier run's report)
    /// instead of a random one; with that run's --enterprise-id and --credential, its fleet
    /// reconnects as devices the server already knows.
    #[arg(long, value_parser = parse_mac_prefix)]
    mac_prefix: Option<u32>,
    /// Injected alarms per second across the fleet: each device raises an "Application crash"
    /// alarm carrying a unique token and clears it before its next raise; 0 = off.
    #[arg(long, default_value_t = 0.0)]
    alarm_rate: f64,
    /// Run an SMTP sink on this address (e.g. 127.0.0.1:2525), create an alarm strategy for the
    /// injected alarms (grouping off) and report alarm → email latency; point the server's SMTP
    /// relay here.
    #[arg(long)]
    smtp_sink: Option<SocketAddr>,
    /// Receiver of the alarm strategy for the injected alarms.
    #[arg(long, default_value = "loadtest@example.com")]
    alarm_receiver: String,
    /// How long to wait after the drain for the emails of injected alarms.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    alarm_drain_timeout: Duration,
    /// How long a device takes from accepting a command to its result (or its file upload), ms.
    #[arg(long, default_value_t = 50)]
    command_delay_ms: u64,
    /// Share of commands the devices answer `failed` (0..=1).
    #[arg(long, default_value_t = 0.0)]
    command_failure_rate: f64,
    /// Size of the fake file a device uploads for a command kind that answers with a file, bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    file_bytes: u64,
    /// Command mode: once the fleet is connected, issue this many commands one after the other,
    /// each to a random connected device, and report their round trip (issue -> result stored).
    #[arg(long, conflicts_with = "bulk_command")]
    commands: Option<u32>,
    /// Command mode: once the fleet is connected, issue one bulk command to every device and
    /// report the time until every device received it and every result was stored.
    #[arg(long)]
    bulk_command: bool,
    /// The command kind the command mode issues.
    #[arg(long, default_value = "ping")]
    command_kind: String,
    /// Its arguments as a JSON object (default: 127.0.0.1 for a host argument, defaults for the rest).
    #[arg(long, value_parser = parse_json)]
    command_args: Option<serde_json::Value>,
    /// The deadline of each command the command mode issues.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    command_deadline: Duration,
}

fn parse_mac_prefix(s: &str) -> anyhow::Result<u32> {
    anyhow::ensure!(
        s.len() == 6 && s.bytes().all(|b| b.is_ascii_hexdigit()),
        "a MAC prefix is 6 hex digits (the first three bytes of the fleet's MACs), not {s:?}"
    );
    Ok(u32::from_str_radix(s, 16)?)
}

fn parse_json(s: &str) -> anyhow::Result<serde_json::Value> {
    serde_json::from_str(s).context("not JSON")
}

impl Args {
    fn into_config(self) -> LoadConfig {
        let issue = match (self.commands, self.bulk_command) {
            (Some(count), _) => Some(CommandIssue::OneByOne { count }),
            (None, true) => Some(CommandIssue::Bulk),
            (None, false) => None,
        };
        let command_mode = issue.map(|issue| CommandMode {
            issue,
            args: self.command_args.clone().unwrap_or_else(|| default_args(&self.command_kind)),
            kind: self.command_kind.clone(),
            deadline: self.command_deadline,
        });
        let transport = match (self.transport.as_str(), self.https_addr) {
            ("https", Some(addr)) => Transport::Https(addr),
            ("relayed", Some(addr)) => Transport::Relayed(addr),
            _ => Transport::Quic,
        };
        LoadConfig {
            transport,
            relay_credential: self.relay_credential,
            relays: self.relays,
            quic_addr: self.quic_addr,
            more_quic_addrs: self.also_quic_addr,
            server_name: self.server_name,
            api: self.api,
            admin_email: self.admin_email.unwrap_or_default(),
            admin_password: self.admin_password.unwrap_or_default(),
            ca_cert: self.ca_cert,
            devices: self.devices,
            duration: self.duration,
            rate_per_device: self.rate,
            mix: self.mix,
            heartbeat_interval_s: self.heartbeat_interval,
            burst: self.burst,
            warmup: self.warmup,
            connect_rate: self.connect_rate,
            drain_timeout: self.drain_timeout,
            bad_credential_devices: self.bad_credential_devices,
            report: self.report,
            progress: !self.no_progress,
            credential: self.enterprise_id.zip(self.credential),
            mac_prefix: self.mac_prefix,
            alarm_rate: self.alarm_rate,
            smtp_sink: self.smtp_sink,
            alarm_receiver: self.alarm_receiver,
            alarm_drain_timeout: self.alarm_drain_timeout,
            command_delay: Duration::from_millis(self.command_delay_ms),
            command_failure_rate: self.command_failure_rate,
            file_bytes: self.file_bytes,
            command_mode,
            sink: self.sink,
        }
    }
}

/// mimalloc instead of glibc's malloc, as in the server: at 100,000 devices and 100,000 msg/s, two
/// of three runs with glibc's collapsed at the start of sending, none of two with mimalloc
/// (`docs/PERFORMANCE.md`, issue 14 item 5).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")))
        .with_writer(std::io::stderr)
        .init();
    let config = Args::parse().into_config();
    match run(config) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(3),
        Err(error) => {
            eprintln!("fleetpulse-loadtest: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the test, prints the report; `Ok(passed)`.
fn run(config: LoadConfig) -> anyhow::Result<bool> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    let report = runtime.block_on(fleetpulse_loadtest::run_until(config, async {
        if tokio::signal::ctrl_c().await.is_err() {
            // Without a signal handler the run simply lasts its duration.
            std::future::pending::<()>().await;
        }
    }))?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    if let Some(commands) = &report.command_run {
        eprintln!("{}", commands.summary());
    }
    if !report.passed() {
        eprintln!(
            "fleetpulse-loadtest: verification failed: {} missing, {} duplicated",
            report.verified.missing, report.verified.duplicated
        );
    }
    Ok(report.passed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn flags_map_onto_the_config() {
        let args = Args::try_parse_from([
            "fleetpulse-loadtest",
            "--admin-email",
            "a@b.c",
            "--admin-password",
            "pw",
            "--ca-cert",
            "ca.pem",
            "--devices",
            "10",
            "--duration",
            "2m",
            "--rate",
            "0.5",
            "--mix",
            "alarm=1",
            "--no-progress",
            "--enterprise-id",
            "7",
            "--credential",
            "secret",
        ])
        .expect("valid arguments");
        let cfg = args.into_config();
        assert_eq!(cfg.devices, 10);
        assert_eq!(cfg.duration, Duration::from_secs(120));
        assert_eq!(cfg.mix.alarm, 1.0);
        assert_eq!(cfg.mix.status, 0.0);
        assert!(!cfg.progress);
        assert_eq!(cfg.credential, Some((7, "secret".to_owned())));
        assert_eq!(cfg.drain_timeout, Duration::from_secs(30));
        assert_eq!((cfg.alarm_rate, cfg.smtp_sink), (0.0, None), "no alarms by default");
        assert_eq!(cfg.alarm_receiver, "loadtest@example.com");
        assert_eq!(cfg.alarm_drain_timeout, Duration::from_secs(30));
        cfg.validate().expect("valid config");
    }

    #[test]
    fn alarm_flags_map_onto_the_config() {
        let args = Args::try_parse_from([
            "fleetpulse-loadtest",
            "--admin-email",
            "a@b.c",
            "--admin-password",
            "pw",
            "--ca-cert",
            "ca.pem",
            "--alarm-rate",
            "25.5",
            "--smtp-sink",
            "127.0.0.1:2525",
            "--alarm-receiver",
            "ops@example.org",
            "--alarm-drain-timeout",
            "2m",
        ])
        .expect("valid arguments");
        let cfg = args.into_config();
        assert_eq!(cfg.alarm_rate, 25.5);
        assert_eq!(cfg.smtp_sink, Some("127.0.0.1:2525".parse().expect("address")));
        assert_eq!(cfg.alarm_receiver, "ops@example.org");
        assert_eq!(cfg.alarm_drain_timeout, Duration::from_secs(120));
        cfg.validate().expect("valid config");
    }

    #[test]
    fn command_flags_map_onto_the_config() {
        let base = ["fleetpulse-loadtest", "--admin-email", "a", "--admin-password", "b", "--ca-cert", "c"];
        let cfg = Args::try_parse_from(base).expect("valid").into_config();
        assert_eq!(cfg.command_mode, None);
        assert_eq!(
            (cfg.command_delay, cfg.command_failure_rate, cfg.file_bytes),
            (Duration::from_millis(50), 0.0, 65_536)
        );
        let cfg = Args::try_parse_from(base.into_iter().chain(["--commands", "200", "--command-delay-ms", "0"]))
            .expect("valid")
            .into_config();
        let mode = cfg.command_mode.clone().expect("command mode");
        assert_eq!(mode.issue, CommandIssue::OneByOne { count: 200 });
        assert_eq!((mode.kind.as_str(), mode.args.clone()), ("ping", serde_json::json!({ "target": "127.0.0.1" })));
        assert_eq!(cfg.command_delay, Duration::ZERO);
        cfg.validate().expect("valid config");
        let cfg = Args::try_parse_from(base.into_iter().chain([
            "--bulk-command",
            "--command-kind",
            "upload_syslog",
            "--command-args",
            "{}",
            "--file-bytes",
            "1024",
            "--command-failure-rate",
            "0.5",
            "--command-deadline",
            "2m",
        ]))
        .expect("valid")
        .into_config();
        let mode = cfg.command_mode.clone().expect("command mode");
        assert_eq!(
            (mode.issue, mode.kind.as_str(), mode.deadline),
            (CommandIssue::Bulk, "upload_syslog", Duration::from_secs(120))
        );
        assert_eq!((cfg.file_bytes, cfg.command_failure_rate), (1024, 0.5));
        cfg.validate().expect("valid config");
        assert!(Args::try_parse_from(base.into_iter().chain(["--bulk-command", "--commands", "3"])).is_err());
        assert!(Args::try_parse_from(base.into_iter().chain(["--commands", "3", "--command-args", "{"])).is_err());
    }

    #[test]
    fn a_mac_prefix_is_six_hex_digits() {
        assert_eq!(parse_mac_prefix("00a1fF").unwrap(), 0x00a1ff);
        for bad in ["", "abcde", "1234567", "12345g", "+12345"] {
            assert!(parse_mac_prefix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn enterprise_id_needs_a_credential() {
        let result = Args::try_parse_from([
            "fleetpulse-loadtest",
            "--admin-email",
            "a",
            "--admin-password",
            "b",
            "--ca-cert",
            "c",
            "--enterprise-id",
            "7",
        ]);
        assert!(result.is_err());
    }
}
