//! `fleetpulse-peerload`: drives the reference points of `scripts/perf.sh compare` (the QUIC
//! floor or an MQTT broker) with the load tester's devices, frames and schedule; prints the JSON
//! report. Exit codes: 0 when nothing was missing and nothing failed, 3 otherwise, 1 when the run
//! could not start, 2 for a command-line error.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use fleetpulse_loadtest::peer::{self, PeerConfig, PeerMode};
use fleetpulse_loadtest::{MessageMix, parse_duration};
use tracing_subscriber::EnvFilter;

/// Simulated devices against the QUIC floor or an MQTT broker, for side-by-side figures.
#[derive(Debug, Parser)]
#[command(name = "fleetpulse-peerload", version)]
struct Args {
    /// `floor` (the bare quinn server `quic_floor`) or `mqtt` (a broker over TLS, QoS 1).
    #[arg(long)]
    mode: PeerMode,
    /// Server address (UDP for the floor, TCP for MQTT).
    #[arg(long)]
    addr: SocketAddr,
    /// TLS server name.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// PEM file with the CA certificate that signed the server's certificate.
    #[arg(long)]
    ca_cert: PathBuf,
    /// Simulated devices, one connection each.
    #[arg(long, default_value_t = 100)]
    devices: u32,
    /// Length of the sending phase: 30s, 2m, 250ms or plain seconds.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Data frames per second per device.
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// Frames per schedule tick, written together.
    #[arg(long, default_value_t = 1)]
    burst: u32,
    /// Start of every device's schedule after the run start (devices connect meanwhile); part of
    /// the duration.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    warmup: Duration,
    /// Weights of the data message kinds.
    #[arg(long, default_value = "status=1,resource=1,alarm=0.2,heartbeat=0")]
    mix: MessageMix,
    /// Heartbeat interval in seconds (heartbeats are frames like the others).
    #[arg(long, default_value_t = 30)]
    heartbeat_interval: u32,
    /// New connections per second; 0 = unlimited.
    #[arg(long, default_value_t = 1000)]
    connect_rate: u32,
    /// How long to wait after the sending phase for outstanding acknowledgements.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// Also write the JSON report to this file.
    #[arg(long)]
    report: Option<PathBuf>,
}

/// The same allocator as `fleetpulse-loadtest`, so that both load testers cost the same per device.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let report_path = args.report.clone();
    let config = PeerConfig {
        mode: args.mode,
        addr: args.addr,
        server_name: args.server_name,
        ca_cert: args.ca_cert,
        devices: args.devices,
        duration: args.duration,
        rate_per_device: args.rate,
        burst: args.burst,
        warmup: args.warmup,
        mix: args.mix,
        heartbeat_interval_s: args.heartbeat_interval,
        connect_rate: args.connect_rate,
        drain_timeout: args.drain_timeout,
    };
    let run = || -> anyhow::Result<bool> {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
        let report = runtime.block_on(peer::run(config))?;
        if let Some(path) = &report_path {
            peer::write_report(&report, path)?;
        }
        println!("{}", serde_json::to_string_pretty(&report)?);
        Ok(report.passed())
    };
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(3),
        Err(error) => {
            eprintln!("fleetpulse-peerload: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Args::command().debug_assert();
        let args = Args::try_parse_from([
            "fleetpulse-peerload",
            "--mode",
            "mqtt",
            "--addr",
            "127.0.0.1:8883",
            "--ca-cert",
            "ca.pem",
            "--rate",
            "20",
        ])
        .expect("valid arguments");
        assert_eq!((args.mode, args.rate, args.burst), (PeerMode::Mqtt, 20.0, 1));
        assert!(
            Args::try_parse_from(["fleetpulse-peerload", "--mode", "amqp", "--addr", "127.0.0.1:1", "--ca-cert", "c"])
                .is_err()
        );
    }
}
