//! The async shell of a run: sets up through the API, connects the simulated devices at the
//! configured pace, drives every device's session over QUIC, drains, closes, verifies, and
//! assembles the [`Report`].
//!
//! Each device is one tokio task holding its [`DeviceSession`], its [`Schedule`] and its QUIC
//! connection, nothing bigger. Devices of one client endpoint share latency histograms; run-wide
//! counters are atomics. The run moves through three [`Phase`]s broadcast on a watch channel:
//! sending, draining (no new frames; outstanding ones are resent until acknowledged), closing.
//!
//! With an SMTP sink, the run also creates an alarm strategy for its injected alarms before it
//! starts and, after closing, waits for the emails of the injected alarms (see [`crate::alarms`]).
//!
//! Devices answer the server's commands (see [`crate::responder`]); in command mode the sending
//! phase also runs the [`CommandPhase`] and lasts until it is done (see [`crate::command_mode`]).

mod bad_credential;
mod device_state;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Buf;
use fleetpulse_proto::close_code;
use fleetpulse_proto::wire::Uplink;
use fleetpulse_proto::{DeviceId, EnterpriseId, FrameEncoder, UnixMillis};
use quinn::VarInt;
use rand::Rng;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::alarms::{AlarmTracker, DeviceTokens, INJECTED_ALARM, MAX_OUTSTANDING, RunTag};
use crate::api::{ApiClient, StrategyRequest};
use crate::command_mode::{CommandPhase, CommandTracker, DeviceSlots};
use crate::config::{LoadConfig, MessageMix};
use crate::device::DeviceSession;
use crate::identity::MacPlan;
use crate::messages::DeviceProfile;
use crate::quic::{self, LinkError};
use crate::report::{AlarmEmail, Connections, DeviceCommands, Latency, Report, Verified};
use crate::responder::{CommandResponder, ResponderConfig};
use crate::schedule::{Schedule, ScheduleParams};
use crate::smtp_sink::{MessageHandler, SinkLimits, SmtpSink};
use crate::stats::{Counters, GroupLatency, new_histogram};
use crate::upload::{self, UploadEnd};
use crate::verify::{self, AckedDevice};
use bad_credential::bad_credential_task;
use device_state::{DeviceState, WorkLeft};

/// Longest time for connect + `Hello` → `Welcome` before the attempt counts as failed.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Connection attempts in flight at once, across the fleet. Beyond what the server (and the load
/// tester's own core) can hand-shake within [`SETUP_TIMEOUT`], attempts time out, are retried
/// and time out again: without this bound a 100,000-device ramp at 2,000/s collapsed to 5,646
/// sessions and 257,000 failed attempts; with it, devices wait for a slot and the ramp runs at
/// the pair's handshake rate (issue 14 item 5).
const MAX_ATTEMPTS_IN_FLIGHT: usize = 512;
/// With frames unacknowledged, a connection on which nothing arrives for this long is taken as
/// dead and replaced. A killed server sends no close, and a restarted one cannot reset the old
/// connections, so without this a device would wait for the 60 s idle timeout.
const ACK_TIMEOUT: Duration = Duration::from_secs(15);
/// First reconnect delay; doubles per failed attempt.
const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long to wait for close frames to leave the endpoints at the end.
const CLOSE_WAIT: Duration = Duration::from_secs(3);
/// How often verification looks again while acknowledged frames are not yet visible.
const VERIFY_RETRIES: u32 = 3;
const VERIFY_RETRY_DELAY: Duration = Duration::from_secs(2);
/// Below this time from an injected raise to its clear, a server may see the clear before it sent
/// the firing notification (and then sends none): the run warns.
const SHORT_ALARM_STEP: Duration = Duration::from_millis(500);

/// Where the run is; every device task watches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Devices generate and send frames.
    Sending,
    /// No frames intended after `gen_end_us` are generated; outstanding ones get acknowledged.
    Draining { gen_end_us: u64 },
    /// Devices close their connections (code 0) and end.
    Closing { gen_end_us: u64 },
}

/// What every device task shares.
#[derive(Debug)]
struct Fleet {
    /// The ingest nodes' addresses (at least one).
    servers: Vec<SocketAddr>,
    server_name: String,
    credential: String,
    heartbeat_interval_s: u32,
    mix: MessageMix,
    schedule: ScheduleParams,
    macs: MacPlan,
    run_seed: u64,
    /// Simulated devices (numbering of injected alarms).
    devices: u32,
    /// Names the run in the tokens of injected alarms.
    run_tag: RunTag,
    /// Tracks injected alarms until their email arrives (with an SMTP sink only).
    alarms: Option<Arc<AlarmTracker>>,
    run_start: Instant,
    run_start_ms: i64,
    /// No device's schedule starts before this (µs since the run start; `--warmup`).
    data_start_us: u64,
    counters: Arc<Counters>,
    /// How devices run commands.
    responder: ResponderConfig,
    /// TLS of firmware downloads (trusting the run's CA, as the QUIC connections do).
    downloads: Arc<rustls::ClientConfig>,
    /// Records command times for the command mode (in command mode only).
    commands: Option<Arc<CommandTracker>>,
    /// Each device's id while it has a session.
    slots: DeviceSlots,
    /// Bounds the connection attempts in flight ([`MAX_ATTEMPTS_IN_FLIGHT`]).
    attempts: tokio::sync::Semaphore,
}

impl Fleet {
    fn now_us(&self) -> u64 {
        u64::try_from(self.run_start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// The instant `us` after the run start (far in the future for `u64::MAX`).
    fn instant_at(&self, us: u64) -> Instant {
        self.run_start
            .checked_add(Duration::from_micros(us))
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365))
    }

    fn profile(&self, index: u32) -> DeviceProfile {
        DeviceProfile::new(self.macs.mac(index), self.run_seed ^ u64::from(index).wrapping_mul(0x2545_f491_4f6c_dd1d))
            .with_run_tag(self.run_tag)
    }
}

/// The devices of one client endpoint.
#[derive(Debug)]
struct Group {
    endpoint: quinn::Endpoint,
    latency: GroupLatency,
}

/// Runs the load test for `cfg.duration`.
pub async fn run(cfg: LoadConfig) -> anyhow::Result<Report> {
    run_until(cfg, std::future::pending()).await
}

/// Runs the load test until `stop` resolves or `cfg.duration` passes, whichever is first; then
/// drains, closes, verifies and reports. Writes the report to `cfg.report` if set.
pub async fn run_until(cfg: LoadConfig, stop: impl Future<Output = ()> + Send) -> anyhow::Result<Report> {
    if let crate::config::Transport::Https(addr) | crate::config::Transport::Relayed(addr) = cfg.transport {
        return crate::https_mode::run(cfg, addr, stop).await;
    }
    cfg.validate()?;
    let client_config = quic::client_config(&cfg.ca_cert, cfg.heartbeat_interval_s)?;
    let downloads = crate::download::client_config(&cfg.ca_cert)?;
    let (macs, run_tag) = {
        let mut rng = rand::rng();
        (cfg.mac_prefix.map_or_else(|| MacPlan::random(&mut rng), MacPlan::new), RunTag(rng.random()))
    };
    let run_seed = macs.traits_seed();
    // The sink first: a taken port should fail the run before anything is created.
    let (tracker, sink) = match cfg.smtp_sink {
        Some(addr) => {
            let tracker = Arc::new(AlarmTracker::new(run_tag, MAX_OUTSTANDING));
            let on_message = tracker.clone();
            let handler: MessageHandler = Arc::new(move |at, message: &[u8]| on_message.email_accepted(at, message));
            let sink = SmtpSink::bind(addr, SinkLimits::default(), handler)
                .await
                .with_context(|| format!("starting the SMTP sink on {addr}"))?;
            tracing::info!(addr = %sink.local_addr(), run_tag = %run_tag, "SMTP sink listening");
            (Some(tracker), Some(sink))
        }
        None => (None, None),
    };
    // A sink has no API: nothing is created, the devices' credential is not checked.
    let api = match cfg.sink {
        true => None,
        false => Some(ApiClient::login(&cfg.api, &cfg.admin_email, &cfg.admin_password).await?),
    };
    let (enterprise, credential) = match (&cfg.credential, &api) {
        (Some((id, credential)), _) => (EnterpriseId(*id), credential.clone()),
        (None, None) => (EnterpriseId(0), "sink".to_owned()),
        (None, Some(api)) => {
            let created = api.create_enterprise(&format!("loadtest-{}", UnixMillis::now().0)).await?;
            tracing::info!(enterprise = %created.id, name = %created.name, "created the enterprise");
            (created.id, created.credential)
        }
    };
    let alarm_rate_per_device = if cfg.alarm_rate > 0.0 { cfg.alarm_rate / f64::from(cfg.devices) } else { 0.0 };
    let strategy = if let (true, Some(_), Some(api)) = (alarm_rate_per_device > 0.0, &sink, &api) {
        let request =
            StrategyRequest::injected_alarms(format!("loadtest-{run_tag}"), INJECTED_ALARM.0, &cfg.alarm_receiver);
        let created = api.create_alarm_strategy(enterprise, &request).await?;
        tracing::info!(strategy = %created.id, receiver = %cfg.alarm_receiver, "created the alarm strategy");
        Some(created.id)
    } else {
        None
    };
    let stages_before = match (strategy, &api) {
        (Some(_), Some(api)) => scrape_stages(api).await,
        _ => None,
    };
    if alarm_rate_per_device > 0.0 {
        let step = Duration::from_secs_f64(0.5 / alarm_rate_per_device);
        if step < SHORT_ALARM_STEP {
            tracing::warn!(
                ?step,
                "each device clears its injected alarm soon after raising it; a server may drop firing \
                 notifications of alarms that cleared first (use more devices or a lower alarm rate)"
            );
        }
    }
    let connections = u64::from(cfg.devices) + u64::from(cfg.bad_credential_devices);
    let groups: Vec<Arc<Group>> =
        quic::client_endpoints(quic::endpoint_count(connections), cfg.quic_addr, &client_config)?
            .into_iter()
            .map(|endpoint| Arc::new(Group { endpoint, latency: GroupLatency::default() }))
            .collect();

    tracing::info!(mac_prefix = %macs, devices = cfg.devices, "starting the run");
    let fleet = Arc::new(Fleet {
        servers: std::iter::once(cfg.quic_addr).chain(cfg.more_quic_addrs.iter().copied()).collect(),
        server_name: cfg.server_name.clone(),
        credential,
        heartbeat_interval_s: cfg.heartbeat_interval_s,
        mix: cfg.mix,
        schedule: ScheduleParams {
            rate_per_s: cfg.rate_per_device,
            burst: cfg.burst,
            heartbeat_interval_us: u64::from(cfg.heartbeat_interval_s) * 1_000_000,
            alarm_rate_per_s: alarm_rate_per_device,
        },
        macs,
        run_seed,
        devices: cfg.devices,
        run_tag,
        alarms: tracker.clone(),
        run_start: Instant::now(),
        run_start_ms: UnixMillis::now().0,
        data_start_us: u64::try_from(cfg.warmup.as_micros()).unwrap_or(u64::MAX),
        counters: Arc::new(Counters::default()),
        downloads,
        responder: ResponderConfig {
            delay_us: u64::try_from(cfg.command_delay.as_micros()).unwrap_or(u64::MAX),
            failure_rate: cfg.command_failure_rate,
            file_bytes: cfg.file_bytes,
        },
        commands: cfg.command_mode.as_ref().map(|_| Arc::new(CommandTracker::default())),
        slots: DeviceSlots::new(cfg.devices),
        attempts: tokio::sync::Semaphore::new(MAX_ATTEMPTS_IN_FLIGHT),
    });
    let command_phase =
        cfg.command_mode.clone().map(|mode| CommandPhase::new(mode, cfg.command_delay, fleet.run_start));
    let (phase_tx, phase_rx) = watch::channel(Phase::Sending);
    // Task sets abort their tasks when dropped, so cancelling this future stops the whole fleet.
    let mut progress = JoinSet::new();
    if cfg.progress {
        progress.spawn(crate::stats::progress(fleet.counters.clone(), fleet.run_start));
    }
    let acked_at_data_start = Arc::new(AtomicU64::new(0));
    progress.spawn({
        let (fleet, at) = (fleet.clone(), acked_at_data_start.clone());
        async move {
            tokio::time::sleep_until(fleet.instant_at(fleet.data_start_us)).await;
            at.store(fleet.counters.acked.get(), Ordering::Relaxed);
        }
    });

    // Sending phase: connect devices at the configured pace until the duration ends (and the
    // command mode is done) or `stop`.
    let mut devices: JoinSet<AckedDevice> = JoinSet::new();
    let mut rejected: JoinSet<()> = JoinSet::new();
    let commands = async {
        if let (Some(phase), Some(tracker), Some(api)) = (&command_phase, &fleet.commands, &api) {
            phase.run(api, tracker, &fleet.slots).await;
        }
    };
    tokio::select! {
        () = async {
            spawn_devices(&cfg, &fleet, &groups, &phase_rx, &mut devices, &mut rejected).await;
            std::future::pending::<()>().await;
        } => {}
        ((), ()) = async { tokio::join!(tokio::time::sleep(cfg.duration), commands) } => {}
        () = stop => {}
    }
    let gen_end_us = fleet.now_us();
    // Heartbeats acknowledged during the warm-up are not part of the sending phase's rate.
    let acked_while_sending = fleet.counters.acked.get().saturating_sub(acked_at_data_start.load(Ordering::Relaxed));
    phase_tx.send_replace(Phase::Draining { gen_end_us });

    // Draining phase: wait for every device to have its frames acknowledged.
    let drain_deadline = Instant::now() + cfg.drain_timeout;
    let drained = loop {
        if fleet.counters.undrained.get() == 0 {
            break true;
        }
        if Instant::now() >= drain_deadline {
            tracing::warn!(
                devices = fleet.counters.undrained.get(),
                "drain timeout: some devices still have unacknowledged frames"
            );
            break false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    phase_tx.send_replace(Phase::Closing { gen_end_us });

    let mut acked_devices = Vec::with_capacity(devices.len());
    while let Some(result) = devices.join_next().await {
        match result {
            Ok(device) => acked_devices.push(device),
            Err(error) => {
                tracing::warn!(%error, "a device task failed");
                fleet.counters.errors.incr();
            }
        }
    }
    while let Some(result) = rejected.join_next().await {
        if let Err(error) = result {
            tracing::warn!(%error, "a bad-credential device task failed");
            fleet.counters.errors.incr();
        }
    }
    let close_wait = async {
        for group in &groups {
            group.endpoint.wait_idle().await;
        }
    };
    if tokio::time::timeout(CLOSE_WAIT, close_wait).await.is_err() {
        tracing::debug!("endpoints still closing connections; going on");
    }
    progress.abort_all();

    // Verification and the wait for alarm emails go on at the same time.
    let alarm_wait = async {
        match &tracker {
            Some(tracker) => Some(wait_for_alarm_emails(tracker, cfg.alarm_drain_timeout).await),
            None => None,
        }
    };
    let verification = async {
        match &api {
            Some(api) => verify_run(api, enterprise, &acked_devices).await,
            None => Ok(Verified::default()),
        }
    };
    let (verified, alarm_email) = tokio::join!(verification, alarm_wait);
    let stages_after = match (&stages_before, &api) {
        (Some(_), Some(api)) => scrape_stages(api).await,
        _ => None,
    };
    drop(sink);
    if let (Some(id), Some(api)) = (strategy, &api)
        && let Err(error) = api.delete_alarm_strategy(id).await
    {
        tracing::warn!(strategy = %id, error = %format!("{error:#}"), "could not delete the alarm strategy");
    }
    let verified = verified?;
    let mut report =
        build_report(&cfg, &fleet, &groups, enterprise, gen_end_us, acked_while_sending, drained, verified);
    report.alarm_email = alarm_email;
    report.sink = cfg.sink;
    if let (Some(before), Some(after)) = (&stages_before, &stages_after) {
        report.alarm_stages = crate::stages::stages(before, after);
    }
    if let (Some(phase), Some(tracker), Some(api)) = (&command_phase, &fleet.commands, &api) {
        report.command_run = Some(phase.report(api, tracker).await);
    }
    if let Some(path) = &cfg.report {
        let json = serde_json::to_vec_pretty(&report)?;
        // A single small file at the very end: blocking the runtime briefly does no harm.
        std::fs::write(path, json).with_context(|| format!("writing the report to {}", path.display()))?;
    }
    Ok(report)
}

/// Waits until every tracked injected alarm has been seen in an email, or `timeout`.
/// The server's stage histograms now, or `None` (with a warning) if `/metrics` cannot be read.
async fn scrape_stages(api: &ApiClient) -> Option<crate::stages::Snapshot> {
    match api.metrics_text().await {
        Ok(text) => Some(crate::stages::parse(&text)),
        Err(error) => {
            tracing::warn!(error = %format!("{error:#}"), "no stage histograms: /metrics not readable");
            None
        }
    }
}

async fn wait_for_alarm_emails(tracker: &AlarmTracker, timeout: Duration) -> AlarmEmail {
    let deadline = Instant::now() + timeout;
    let outstanding = tracker.outstanding();
    if outstanding > 0 {
        tracing::info!(outstanding, "waiting for the emails of injected alarms");
    }
    loop {
        let outstanding = tracker.outstanding();
        if outstanding == 0 {
            break;
        }
        if Instant::now() >= deadline {
            tracing::warn!(outstanding, "alarm drain timeout: some injected alarms were not emailed");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracker.summary()
}

/// Spawns the bad-credential devices, then the regular ones, at `cfg.connect_rate` per second.
async fn spawn_devices(
    cfg: &LoadConfig,
    fleet: &Arc<Fleet>,
    groups: &[Arc<Group>],
    phase: &watch::Receiver<Phase>,
    devices: &mut JoinSet<AckedDevice>,
    rejected: &mut JoinSet<()>,
) {
    let pace = (cfg.connect_rate > 0).then(|| Duration::from_secs_f64(1.0 / f64::from(cfg.connect_rate)));
    let start = Instant::now();
    let bad = (cfg.devices..cfg.devices + cfg.bad_credential_devices).map(|i| (i, false));
    let good = (0..cfg.devices).map(|i| (i, true));
    for (n, (index, regular)) in bad.chain(good).enumerate() {
        match pace {
            // Token bucket of one token refilled every `pace`: connection n starts at n * pace.
            Some(pace) => tokio::time::sleep_until(start + pace.mul_f64(n as f64)).await,
            None if n % 1024 == 1023 => tokio::task::yield_now().await,
            None => {}
        }
        let group = groups[n % groups.len()].clone();
        let drain = DrainGuard::new(fleet.counters.clone());
        if regular {
            devices.spawn(device_task(fleet.clone(), group, index, phase.clone(), drain));
        } else {
            rejected.spawn(bad_credential_task(fleet.clone(), group, index, phase.clone(), drain));
        }
    }
}

/// Counts a device as undrained from its spawn until it has nothing left to send (or ends).
#[derive(Debug)]
struct DrainGuard {
    counters: Arc<Counters>,
    done: AtomicBool,
}

impl DrainGuard {
    fn new(counters: Arc<Counters>) -> Self {
        counters.undrained.incr();
        DrainGuard { counters, done: AtomicBool::new(false) }
    }

    fn done(&self) {
        if !self.done.swap(true, Ordering::Relaxed) {
            self.counters.undrained.decr();
        }
    }
}

impl Drop for DrainGuard {
    fn drop(&mut self) {
        self.done();
    }
}

/// Reconnect delay after `failures` consecutive failed attempts (0 after a lost session):
/// 100 ms doubling up to 2 s, of which the upper half is random ("equal jitter").
fn backoff_delay(failures: u32, rng: &mut impl Rng) -> Duration {
    let full = BACKOFF_BASE.saturating_mul(1 << failures.min(8)).min(BACKOFF_MAX);
    full / 2 + full.mul_f64(rng.random::<f64>() / 2.0)
}

/// Resolves when a disconnected device should stop trying: the run is closing, or it is draining
/// and the device has nothing left to send (its work cannot change while it is disconnected).
async fn until_stopped(phase: &mut watch::Receiver<Phase>, work: WorkLeft) {
    loop {
        match *phase.borrow_and_update() {
            Phase::Closing { .. } => return,
            Phase::Draining { gen_end_us } if !work.before(gen_end_us) => return,
            _ => {}
        }
        if phase.changed().await.is_err() {
            return;
        }
    }
}

/// How a session ended.
enum SessionEnd {
    /// The run is closing; the connection was closed with code 0.
    Closing,
    /// The connection was lost.
    Lost(LinkError),
    /// The device restarts after a firmware upgrade (closed with code 0; it reconnects at once).
    Reboot,
}

/// One simulated device: connects, drives sessions, reconnects with backoff until the run closes.
async fn device_task(
    fleet: Arc<Fleet>,
    group: Arc<Group>,
    index: u32,
    mut phase: watch::Receiver<Phase>,
    drain: DrainGuard,
) -> AckedDevice {
    let mut dev = DeviceState {
        profile: fleet.profile(index),
        tokens: DeviceTokens { index, devices: fleet.devices },
        session: DeviceSession::new(),
        schedule: None,
        encoder: FrameEncoder::default(),
        commands: CommandResponder::new(fleet.responder),
        download: None,
        reboot: false,
    };
    let mut device_id: Option<DeviceId> = None;
    let mut failures = 0u32;
    // The node this device tries: spread by index, the next one after a failure.
    let mut node = index as usize % fleet.servers.len();
    loop {
        let server = fleet.servers[node];
        // Built per attempt: a firmware upgrade changes what the device reports.
        let hello = Uplink::Hello(dev.profile.hello(&fleet.credential, fleet.heartbeat_interval_s));
        let work = dev.work_left();
        let attempt = async {
            // The semaphore is never closed; the set-up time starts once the attempt may go.
            let _slot = fleet.attempts.acquire().await.ok();
            let attempt_start = Instant::now();
            let opened = tokio::time::timeout(
                SETUP_TIMEOUT,
                quic::open_session(&group.endpoint, server, &fleet.server_name, &hello, &mut dev.encoder),
            )
            .await;
            (opened, attempt_start)
        };
        let (result, attempt_start) = tokio::select! {
            (result, start) = attempt => {
                (result.unwrap_or_else(|_| Err(LinkError::other("timed out waiting for Welcome"))), start)
            }
            () = until_stopped(&mut phase, work) => break,
        };
        match result {
            Ok((link, welcome)) => {
                group.latency.record_setup(attempt_start.elapsed());
                let now_us = fleet.now_us();
                if device_id.is_none() {
                    fleet.counters.established.incr();
                    fleet.counters.last_first_session_us.raise_to(now_us);
                } else {
                    fleet.counters.reconnects.incr();
                }
                device_id = Some(DeviceId(welcome.device_id));
                failures = 0;
                let resolved = group
                    .latency
                    .with_ack(|h| dev.session.handle_welcome(welcome.last_seq, now_us, |l| h.saturating_record(l)));
                fleet.counters.resolved(resolved);
                dev.after_acks(&fleet);
                if let Some(anomaly) = resolved.anomaly {
                    tracing::warn!(mac = %dev.profile.mac, ?anomaly, "the server's Welcome is impossible");
                    fleet.counters.errors.incr();
                }
                if dev.schedule.is_none() {
                    let start_us = now_us.max(fleet.data_start_us);
                    let schedule = Schedule::new(fleet.schedule, start_us, &mut rand::rng());
                    dev.schedule = Some(schedule.with_heartbeats_from(now_us));
                }
                fleet.counters.connected.incr();
                fleet.slots.set(index, device_id);
                let end = drive(&fleet, &group, &mut dev, link, &mut phase, &drain).await;
                fleet.slots.set(index, None);
                fleet.counters.connected.decr();
                dev.session.handle_disconnect();
                dev.commands.handle_disconnect();
                match end {
                    SessionEnd::Closing => break,
                    SessionEnd::Reboot => continue,
                    SessionEnd::Lost(error) => {
                        node = (node + 1) % fleet.servers.len();
                        fleet.counters.errors.incr();
                        if !note_lost(&fleet, &dev.profile, &error, "connection lost") {
                            break;
                        }
                    }
                }
            }
            Err(error) => {
                node = (node + 1) % fleet.servers.len();
                fleet.counters.errors.incr();
                if !note_lost(&fleet, &dev.profile, &error, "connection attempt failed") {
                    break;
                }
                fleet.counters.failed_attempts.incr();
                failures = failures.saturating_add(1);
            }
        }
        let delay = backoff_delay(failures, &mut rand::rng());
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = until_stopped(&mut phase, dev.work_left()) => break,
        }
    }
    drain.done();
    let gen_end_us = match *phase.borrow() {
        Phase::Sending => fleet.now_us(),
        Phase::Draining { gen_end_us } | Phase::Closing { gen_end_us } => gen_end_us,
    };
    if let Some(schedule) = &dev.schedule {
        fleet.counters.not_sent.add(schedule.owed(gen_end_us));
    }
    AckedDevice { mac: dev.profile.mac, device_id, acked_persisted: dev.session.into_acked_persisted() }
}

/// Logs why a connection ended; returns whether the device may try again (not for a bad credential).
fn note_lost(fleet: &Fleet, profile: &DeviceProfile, error: &LinkError, what: &str) -> bool {
    match error.code {
        Some(close_code::BAD_CREDENTIAL) => {
            tracing::warn!(mac = %profile.mac, detail = %error.detail, "the server rejected the credential; not retrying");
            fleet.counters.rejected_connections.incr();
            false
        }
        Some(close_code::SHUTTING_DOWN | close_code::SERVER_ERROR) | None => {
            tracing::debug!(mac = %profile.mac, detail = %error.detail, "{what}; reconnecting");
            true
        }
        Some(code) => {
            tracing::warn!(mac = %profile.mac, code, detail = %error.detail, "{what}: closed by the server; reconnecting");
            true
        }
    }
}

/// A file upload in progress on a connection.
type UploadFuture = Pin<Box<dyn Future<Output = UploadEnd> + Send>>;

/// Runs one session until the connection is lost or the run closes.
async fn drive(
    fleet: &Fleet,
    group: &Group,
    dev: &mut DeviceState,
    mut link: quic::Link,
    phase: &mut watch::Receiver<Phase>,
    drain: &DrainGuard,
) -> SessionEnd {
    let wake = tokio::time::sleep_until(fleet.instant_at(u64::MAX));
    tokio::pin!(wake);
    let mut armed_at: Option<u64> = None;
    // Fires lazily: when it does, the deadline is checked against `last_heard` and re-armed.
    let mut last_heard = Instant::now();
    let stall = tokio::time::sleep_until(last_heard + ACK_TIMEOUT);
    tokio::pin!(stall);
    // The file upload in progress on this connection (one at a time), and its command.
    let mut uploading: Option<(u64, UploadFuture)> = None;
    loop {
        let current = *phase.borrow_and_update();
        let now_us = fleet.now_us();
        let horizon_us = match current {
            Phase::Sending => now_us,
            Phase::Draining { gen_end_us } => now_us.min(gen_end_us),
            Phase::Closing { .. } => {
                link.conn.close(VarInt::from_u32(close_code::NORMAL), b"load test done");
                return SessionEnd::Closing;
            }
        };
        if dev.reboot && dev.session.is_idle() {
            dev.reboot = false;
            link.conn.close(VarInt::from_u32(close_code::NORMAL), b"restarting after a firmware upgrade");
            return SessionEnd::Reboot;
        }
        let was_idle = dev.session.is_idle();
        dev.generate(horizon_us, fleet);
        if was_idle && !dev.session.is_idle() {
            // Waiting for acknowledgements starts now, not at the last frame received.
            last_heard = Instant::now();
        }
        if let Phase::Draining { gen_end_us } = current
            && !dev.work_left().before(gen_end_us)
        {
            drain.done();
        }
        if link.out.is_empty() {
            dev.fill(&mut link.out, fleet);
        }
        if uploading.is_none()
            && let Some(next) = dev.commands.poll_upload()
        {
            let command_id = next.command_id;
            let sending: UploadFuture = Box::pin(upload::send_file(link.conn.clone(), next));
            uploading = Some((command_id, sending));
        }
        dev.start_download(fleet);
        let next_wake = dev.next_wake_us(current);
        if next_wake != armed_at {
            if let Some(at) = next_wake {
                wake.as_mut().reset(fleet.instant_at(at));
            }
            armed_at = next_wake;
        }
        tokio::select! {
            read = link.recv.read_chunk(quic::READ_CHUNK, true) => match read {
                Ok(Some(chunk)) => {
                    last_heard = Instant::now();
                    link.decoder.push(&chunk.bytes);
                    if let Err(error) = dev.handle_downlink(&mut link.decoder, fleet, group) {
                        return SessionEnd::Lost(error);
                    }
                }
                Ok(None) => return SessionEnd::Lost(LinkError::from_stream(&link.conn, "finished by the server").await),
                Err(error) => return SessionEnd::Lost(LinkError::from_read(&link.conn, error).await),
            },
            written = link.send.write(&link.out), if !link.out.is_empty() => match written {
                Ok(n) => link.out.advance(n),
                Err(error) => return SessionEnd::Lost(LinkError::from_write(&link.conn, error).await),
            },
            () = wake.as_mut(), if armed_at.is_some() => armed_at = None,
            event = async {
                match dev.download.as_mut() {
                    Some((_, events)) => events.recv().await,
                    None => std::future::pending().await,
                }
            }, if dev.download.is_some() => dev.download_event(event, fleet),
            end = async {
                match uploading.as_mut() {
                    Some((_, sending)) => sending.await,
                    None => std::future::pending().await,
                }
            }, if uploading.is_some() => {
                if let Some((command_id, _)) = uploading.take() {
                    dev.upload_ended(command_id, end, fleet);
                }
            }
            () = stall.as_mut(), if !dev.session.is_idle() => {
                if last_heard.elapsed() >= ACK_TIMEOUT {
                    link.conn.close(VarInt::from_u32(close_code::NORMAL), b"no acknowledgement");
                    return SessionEnd::Lost(LinkError::other("nothing received while frames were unacknowledged"));
                }
                stall.as_mut().reset(last_heard + ACK_TIMEOUT);
            }
            changed = phase.changed() => {
                if changed.is_err() {
                    link.conn.close(VarInt::from_u32(close_code::NORMAL), b"load test done");
                    return SessionEnd::Closing;
                }
            }
        }
    }
}

/// Compares the store with the acknowledged frames, looking again a few times while frames are
/// missing (a store may make acknowledged data visible with a delay, e.g. when draining a spool).
async fn verify_run(api: &ApiClient, enterprise: EnterpriseId, devices: &[AckedDevice]) -> anyhow::Result<Verified> {
    let mut attempt = 0;
    loop {
        let verified = match api.stored_sequences(enterprise).await {
            Ok(stored) => verify::verify(devices, &stored),
            Err(error) if attempt < VERIFY_RETRIES => {
                tracing::warn!(%error, "reading the stored sequences failed; trying again");
                attempt += 1;
                tokio::time::sleep(VERIFY_RETRY_DELAY).await;
                continue;
            }
            Err(error) => return Err(error.context("verification")),
        };
        if verified.missing == 0 || attempt >= VERIFY_RETRIES {
            return Ok(verified);
        }
        tracing::info!(missing = verified.missing, "acknowledged frames not (yet) stored; looking again");
        attempt += 1;
        tokio::time::sleep(VERIFY_RETRY_DELAY).await;
    }
}

#[allow(clippy::too_many_arguments)]
fn build_report(
    cfg: &LoadConfig,
    fleet: &Fleet,
    groups: &[Arc<Group>],
    enterprise: EnterpriseId,
    gen_end_us: u64,
    acked_while_sending: u64,
    drained: bool,
    verified: Verified,
) -> Report {
    let mut ack = new_histogram();
    let mut setup = new_histogram();
    for group in groups {
        group.latency.merge_into(&mut ack, &mut setup);
    }
    let c = &fleet.counters;
    let per_second = |count: u64, us: u64| if us == 0 { 0.0 } else { count as f64 * 1e6 / us as f64 };
    Report {
        devices: cfg.devices,
        duration_s: gen_end_us as f64 / 1e6,
        sent: c.sent.get(),
        acked: c.acked.get(),
        errors: c.errors.get(),
        rate_msgs_per_s: per_second(acked_while_sending, gen_end_us.saturating_sub(fleet.data_start_us)),
        ack_latency_us: Latency::from_histogram(&ack),
        verified,
        sink: false,
        connections: Connections {
            established: c.established.get(),
            reconnects: c.reconnects.get(),
            rejected_connections: c.rejected_connections.get(),
            failed_attempts: c.failed_attempts.get(),
            setup_rate_per_s: per_second(c.established.get(), c.last_first_session_us.get()),
            setup_latency_us: Latency::from_histogram(&setup),
        },
        rejected_frames: c.rejected_frames.get(),
        enterprise_id: enterprise.0,
        mac_prefix: fleet.macs.to_string(),
        resent: c.resent.get(),
        not_sent: c.not_sent.get(),
        drained,
        alarm_email: None,
        alarm_stages: Vec::new(),
        device_commands: DeviceCommands {
            received: c.commands_received.get(),
            executed: c.commands_executed.get(),
            repeated: c.commands_repeated.get(),
            refused: c.commands_refused.get(),
            late: c.commands_late.get(),
            succeeded: c.commands_succeeded.get(),
            failed: c.commands_failed.get(),
            files_uploaded: c.files_uploaded.get(),
            files_stored: c.files_stored.get(),
            files_refused: c.files_refused.get(),
            firmware_upgrades: c.firmware_upgrades.get(),
        },
        command_run: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    #[test]
    fn backoff_doubles_from_100ms_to_2s_with_jitter() {
        let mut rng = SmallRng::seed_from_u64(3);
        for (failures, full_ms) in [(0, 100), (1, 200), (2, 400), (4, 1600), (5, 2000), (30, 2000)] {
            for _ in 0..100 {
                let d = backoff_delay(failures, &mut rng);
                let full = Duration::from_millis(full_ms);
                assert!(d >= full / 2 && d <= full, "{failures}: {d:?}");
            }
        }
    }
}
