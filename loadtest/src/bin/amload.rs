//! `fleetpulse-amload`: the Alertmanager side of `scripts/perf.sh alarms-compare` (issue 20).
//! Posts alerts to Prometheus Alertmanager's v2 API on an open-model schedule, each carrying a
//! token like the load tester's injected alarms, and measures, with the load tester's own SMTP
//! sink and tracker, from each alert's intended post time to the sink accepting the first email
//! that carries its token. Prints a JSON report; exit 0 when every alert was emailed, 3 otherwise,
//! 1 when the run failed.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use fleetpulse_loadtest::alarms::{AlarmTracker, MAX_OUTSTANDING, RunTag, token};
use fleetpulse_loadtest::parse_duration;
use fleetpulse_loadtest::smtp_sink::{MessageHandler, SinkLimits, SmtpSink};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing_subscriber::EnvFilter;

/// Alerts to Alertmanager, emails into the load tester's SMTP sink.
#[derive(Debug, Parser)]
#[command(name = "fleetpulse-amload", version)]
struct Args {
    /// Alertmanager's base URL.
    #[arg(long, default_value = "http://127.0.0.1:9093")]
    alertmanager: String,
    /// Where the SMTP sink listens (Alertmanager's `smtp_smarthost`).
    #[arg(long)]
    smtp_sink: SocketAddr,
    /// Alerts per second.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Alerts in all.
    #[arg(long, default_value_t = 600)]
    count: u64,
    /// Run tag of the tokens (eight hex digits); random if not given. The same tag and count post
    /// the same alerts again (the restart check).
    #[arg(long, value_parser = parse_tag)]
    tag: Option<RunTag>,
    /// How long to wait for the emails after the last post.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// Linger this long after the drain and count every email accepted meanwhile (duplicates).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    linger: Duration,
}

fn parse_tag(s: &str) -> Result<RunTag, String> {
    u32::from_str_radix(s, 16).map(RunTag).map_err(|e| format!("not eight hex digits: {e}"))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("fleetpulse-amload: starting the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(3),
        Err(error) => {
            eprintln!("fleetpulse-amload: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<bool> {
    anyhow::ensure!(args.rate > 0.0 && args.rate.is_finite(), "--rate must be positive");
    let tag = args.tag.unwrap_or_else(|| RunTag(rand::random()));
    let tracker = Arc::new(AlarmTracker::new(tag, MAX_OUTSTANDING));
    let largest = Arc::new(AtomicU64::new(0));
    let handler: MessageHandler = {
        let (tracker, largest) = (tracker.clone(), largest.clone());
        Arc::new(move |at, message: &[u8]| {
            largest.fetch_max(message.len() as u64, Ordering::Relaxed);
            tracker.email_accepted(at, message);
        })
    };
    // Alertmanager's storm digests carry every firing alert: let them in whole.
    let limits = SinkLimits { max_message_bytes: 256 << 20, ..SinkLimits::default() };
    let sink = SmtpSink::bind(args.smtp_sink, limits, handler).await.context("starting the SMTP sink")?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().context("HTTP client")?;
    let url = format!("{}/api/v2/alerts", args.alertmanager.trim_end_matches('/'));
    let in_flight = Arc::new(Semaphore::new(64));
    let failed_posts = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut posts = tokio::task::JoinSet::new();
    for n in 0..args.count {
        #[allow(clippy::cast_precision_loss)]
        let intended = start + Duration::from_secs_f64(n as f64 / args.rate);
        tokio::time::sleep_until(intended).await;
        tracker.injected(n, intended);
        let permit = in_flight.clone().acquire_owned().await.context("semaphore")?;
        let (http, url, failed) = (http.clone(), url.clone(), failed_posts.clone());
        let token = token(tag, n);
        posts.spawn(async move {
            let _permit = permit;
            let body = serde_json::json!([{
                "labels": { "alertname": "fleetpulse_compare", "token": token, "severity": "critical" },
                "annotations": { "description": token },
            }]);
            let ok = matches!(http.post(&url).json(&body).send().await, Ok(r) if r.status().is_success());
            if !ok {
                failed.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    while posts.join_next().await.is_some() {}
    let deadline = Instant::now() + args.drain_timeout;
    while tracker.outstanding() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(args.linger).await;
    let summary = tracker.summary();
    let report = serde_json::json!({
        "tag": tag.to_string(),
        "rate": args.rate,
        "count": args.count,
        "failed_posts": failed_posts.load(Ordering::Relaxed),
        "alarm_email": summary,
        "sink_messages": sink.stats().messages.load(Ordering::Relaxed),
        "largest_email_bytes": largest.load(Ordering::Relaxed),
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(summary.missing == 0 && failed_posts.load(Ordering::Relaxed) == 0)
}
