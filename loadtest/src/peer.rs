//! The reference points of `scripts/perf.sh compare` (issue 14): the same simulated devices,
//! frames, open-model schedule and coordinated-omission-corrected latency as a fleetpulse run,
//! sent to
//! - the QUIC floor (`quic_floor` in `fleetpulse-benches`): a bare quinn server with fleetpulse's
//!   transport and TLS settings that answers each read with an 8-byte acknowledgement, the number
//!   of frames received so far on the connection ([`floor`]);
//! - an MQTT 3.1.1 broker over TLS: each frame is the payload of a QoS 1 `PUBLISH`, acknowledged
//!   by its `PUBACK` ([`mqtt`]).
//!
//! There is no store behind either, so nothing is verified afterwards: a frame is *missing* when
//! it was sent and never acknowledged before the drain ended. A lost connection ends its device
//! (no reconnects): its unacknowledged frames count as missing and the run as failed.

mod floor;
mod mqtt;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::BytesMut;
use fleetpulse_proto::wire::{DataFrame, Uplink};
use fleetpulse_proto::{FrameEncoder, UnixMillis};
use hdrhistogram::Histogram;
use rand::Rng;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::alarms::{DeviceTokens, RunTag};
use crate::config::MessageMix;
use crate::device::MAX_UNACKED;
use crate::identity::MacPlan;
use crate::messages::DeviceProfile;
use crate::report::Latency;
use crate::schedule::{self, Schedule, ScheduleParams};
use crate::stats::{Counter, GroupLatency, new_histogram};

/// Longest time for connect (and, for MQTT, `CONNACK`) before the device gives up.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Devices per latency group (one histogram lock each).
const DEVICES_PER_GROUP: u32 = 250;

/// What the devices talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerMode {
    /// The bare quinn server `quic_floor`.
    Floor,
    /// An MQTT broker over TLS, QoS 1.
    Mqtt,
}

impl std::str::FromStr for PeerMode {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "floor" => Ok(PeerMode::Floor),
            "mqtt" => Ok(PeerMode::Mqtt),
            other => anyhow::bail!("unknown mode {other:?} (floor or mqtt)"),
        }
    }
}

/// One run against a reference point.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// Floor or MQTT.
    pub mode: PeerMode,
    /// Server address (UDP for the floor, TCP for MQTT).
    pub addr: SocketAddr,
    /// TLS server name.
    pub server_name: String,
    /// PEM file with the CA certificate that signed the server's certificate.
    pub ca_cert: PathBuf,
    /// Simulated devices, one connection each.
    pub devices: u32,
    /// Length of the sending phase.
    pub duration: Duration,
    /// Data frames per second per device.
    pub rate_per_device: f64,
    /// Frames per schedule tick, written together.
    pub burst: u32,
    /// Schedules start this long after the run start at the earliest (as `--warmup` of
    /// `fleetpulse-loadtest`); part of `duration`.
    pub warmup: Duration,
    /// Weights of the data message kinds.
    pub mix: MessageMix,
    /// Heartbeat interval, seconds (heartbeats are frames like the others here).
    pub heartbeat_interval_s: u32,
    /// New connections per second, 0 = unlimited.
    pub connect_rate: u32,
    /// How long to wait for outstanding acknowledgements after the sending phase.
    pub drain_timeout: Duration,
}

/// The JSON report of a run against a reference point (field names as in the fleetpulse report
/// where they mean the same).
#[derive(Debug, Clone, Serialize)]
pub struct PeerReport {
    /// `floor` or `mqtt`.
    pub mode: &'static str,
    /// Simulated devices.
    pub devices: u32,
    /// Devices that connected.
    pub established: u64,
    /// Frames written.
    pub sent: u64,
    /// Frames acknowledged.
    pub acked: u64,
    /// Frames sent and never acknowledged.
    pub missing: u64,
    /// Frames the schedule owed by the end of the sending phase that were never generated
    /// (a device's window of unacknowledged frames was full).
    pub not_sent: u64,
    /// Failed connections, lost connections, impossible acknowledgements.
    pub errors: u64,
    /// Length of the sending phase, seconds.
    pub duration_s: f64,
    /// Acknowledged frames per second of the sending phase after the warm-up.
    pub rate_msgs_per_s: f64,
    /// From each frame's intended send time to its acknowledgement, microseconds.
    pub ack_latency_us: Latency,
    /// Connection set-up (handshake, and `CONNACK` for MQTT), microseconds.
    pub setup_latency_us: Latency,
}

impl PeerReport {
    /// Nothing missing, no errors.
    pub fn passed(&self) -> bool {
        self.missing == 0 && self.errors == 0
    }
}

/// Where the run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Sending,
    /// Nothing intended after `gen_end_us` is generated.
    Draining {
        gen_end_us: u64,
    },
    /// Devices close their connections and end.
    Closing {
        gen_end_us: u64,
    },
}

#[derive(Debug, Default)]
struct PeerCounters {
    established: Counter,
    sent: Counter,
    acked: Counter,
    missing: Counter,
    not_sent: Counter,
    errors: Counter,
    /// Devices with frames still to send or to get acknowledged (a gauge).
    undrained: Counter,
}

/// What every device task shares.
#[derive(Debug)]
struct Run {
    cfg: PeerConfig,
    schedule: ScheduleParams,
    macs: MacPlan,
    run_seed: u64,
    run_tag: RunTag,
    run_start: Instant,
    run_start_ms: i64,
    counters: PeerCounters,
}

impl Run {
    fn now_us(&self) -> u64 {
        u64::try_from(self.run_start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn instant_at(&self, us: u64) -> Instant {
        self.run_start
            .checked_add(Duration::from_micros(us))
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365))
    }
}

/// One device's frames: the schedule, the encoder, and the frames awaiting acknowledgement.
#[derive(Debug)]
struct PeerDevice {
    profile: DeviceProfile,
    tokens: DeviceTokens,
    schedule: Schedule,
    encoder: FrameEncoder,
    /// Scratch buffer of one encoded frame.
    frame: BytesMut,
    /// Sequence number of the last frame generated (frames are numbered from 1).
    last_seq: u64,
    /// (sequence number, intended send time) of the unacknowledged frames, in order.
    pending: VecDeque<(u64, u64)>,
}

impl PeerDevice {
    /// A device whose schedule starts at `now_us`, or at the end of the warm-up if later.
    fn new(run: &Run, index: u32, now_us: u64) -> Self {
        let start_us = now_us.max(u64::try_from(run.cfg.warmup.as_micros()).unwrap_or(u64::MAX));
        let seed = run.run_seed ^ u64::from(index).wrapping_mul(0x2545_f491_4f6c_dd1d);
        PeerDevice {
            profile: DeviceProfile::new(run.macs.mac(index), seed).with_run_tag(run.run_tag),
            tokens: DeviceTokens { index, devices: run.cfg.devices },
            schedule: Schedule::new(run.schedule, start_us, &mut rand::rng()),
            encoder: FrameEncoder::default(),
            frame: BytesMut::new(),
            last_seq: 0,
            pending: VecDeque::new(),
        }
    }

    /// Generates up to one burst of the frames due by `horizon_us` while the window has room,
    /// handing each encoded frame and its sequence number to `emit`.
    fn fill(&mut self, horizon_us: u64, run: &Run, mut emit: impl FnMut(u64, &[u8])) {
        let mut rng = rand::rng();
        for _ in 0..run.schedule.burst {
            if self.pending.len() >= MAX_UNACKED {
                return;
            }
            let Some(due) = self.schedule.pop_due(horizon_us) else { return };
            let kind = schedule::kind_of(due, &run.cfg.mix, self.tokens, &mut rng);
            let seq = self.last_seq + 1;
            let body = self.profile.message(kind, seq, due.intended_us, run.run_start_ms);
            let frame = Uplink::Data(DataFrame { seq, sent_at_ms: UnixMillis::now().0, body });
            self.frame.clear();
            if let Err(error) = self.encoder.encode(&frame, &mut self.frame) {
                tracing::warn!(%error, seq, "could not encode a frame");
                run.counters.errors.incr();
                continue;
            }
            self.last_seq = seq;
            self.pending.push_back((seq, due.intended_us));
            emit(seq, &self.frame);
            run.counters.sent.incr();
        }
    }

    /// When the device next has something to generate, in phase `phase` (`None`: nothing, or
    /// the window is full and acknowledgements will wake it).
    fn next_wake_us(&self, phase: Phase) -> Option<u64> {
        let limit = match phase {
            Phase::Sending => u64::MAX - 1,
            Phase::Draining { gen_end_us } => gen_end_us,
            Phase::Closing { .. } => return None,
        };
        let due = self.schedule.next_due_us();
        (due <= limit && self.pending.len() < MAX_UNACKED).then_some(due)
    }

    /// Whether everything intended up to `gen_end_us` was sent and acknowledged.
    fn drained(&self, gen_end_us: u64) -> bool {
        self.pending.is_empty() && self.schedule.next_due_us() > gen_end_us
    }

    /// Every frame up to `seq` is acknowledged; returns how many that resolved.
    fn ack_through(&mut self, seq: u64, now_us: u64, latency: &mut Histogram<u64>) -> u64 {
        let mut n = 0;
        while let Some(&(s, intended)) = self.pending.front().filter(|(s, _)| *s <= seq) {
            debug_assert!(s <= seq);
            self.pending.pop_front();
            latency.saturating_record(now_us.saturating_sub(intended));
            n += 1;
        }
        n
    }

    /// What is left at the end: (unacknowledged frames, frames owed by `gen_end_us` but never generated).
    fn leftovers(&self, gen_end_us: u64) -> (u64, u64) {
        (self.pending.len() as u64, self.schedule.owed(gen_end_us))
    }
}

/// Counts a device as undrained (from its spawn) until it has nothing left (or ends).
#[derive(Debug)]
struct DrainGuard<'a> {
    counters: &'a PeerCounters,
    done: bool,
}

impl<'a> DrainGuard<'a> {
    /// Takes over the count made when the device was spawned.
    fn adopt(counters: &'a PeerCounters) -> Self {
        DrainGuard { counters, done: false }
    }

    fn done(&mut self) {
        if !std::mem::replace(&mut self.done, true) {
            self.counters.undrained.decr();
        }
    }
}

impl Drop for DrainGuard<'_> {
    fn drop(&mut self) {
        self.done();
    }
}

/// What a device's connection loop needs from the run.
#[derive(Debug)]
struct DeviceCtx {
    run: Arc<Run>,
    group: Arc<GroupLatency>,
    index: u32,
    phase: watch::Receiver<Phase>,
}

impl DeviceCtx {
    /// Records the end of a device: its leftovers and whether it failed.
    fn finish(&self, device: Option<&PeerDevice>, failed: bool) {
        let c = &self.run.counters;
        if failed {
            c.errors.incr();
        }
        if let Some(device) = device {
            let gen_end_us = match *self.phase.borrow() {
                Phase::Draining { gen_end_us } | Phase::Closing { gen_end_us } => gen_end_us,
                Phase::Sending => self.run.now_us(),
            };
            let (missing, not_sent) = device.leftovers(gen_end_us);
            c.missing.add(missing);
            c.not_sent.add(not_sent);
        }
    }
}

/// Runs the devices for `cfg.duration`, drains, closes and reports.
pub async fn run(cfg: PeerConfig) -> anyhow::Result<PeerReport> {
    anyhow::ensure!(cfg.devices > 0, "--devices must be at least 1");
    anyhow::ensure!(cfg.rate_per_device.is_finite() && cfg.rate_per_device >= 0.0, "--rate must be ≥ 0");
    let (macs, run_seed, run_tag) = {
        let mut rng = rand::rng();
        (MacPlan::random(&mut rng), rng.random(), RunTag(rng.random()))
    };
    let connector = match cfg.mode {
        PeerMode::Floor => Connector::Floor(floor::endpoints(&cfg)?),
        PeerMode::Mqtt => Connector::Mqtt(mqtt::connector(&cfg.ca_cert)?),
    };
    let run = Arc::new(Run {
        schedule: ScheduleParams {
            rate_per_s: cfg.rate_per_device,
            burst: cfg.burst.max(1),
            heartbeat_interval_us: u64::from(cfg.heartbeat_interval_s) * 1_000_000,
            alarm_rate_per_s: 0.0,
        },
        cfg,
        macs,
        run_seed,
        run_tag,
        run_start: Instant::now(),
        run_start_ms: UnixMillis::now().0,
        counters: PeerCounters::default(),
    });
    let groups: Vec<Arc<GroupLatency>> =
        (0..run.cfg.devices.div_ceil(DEVICES_PER_GROUP)).map(|_| Arc::new(GroupLatency::default())).collect();
    let (phase_tx, phase_rx) = watch::channel(Phase::Sending);
    let mut devices = JoinSet::new();
    let spawn = async {
        let pace = (run.cfg.connect_rate > 0).then(|| Duration::from_secs_f64(1.0 / f64::from(run.cfg.connect_rate)));
        for index in 0..run.cfg.devices {
            if let Some(pace) = pace {
                tokio::time::sleep_until(run.run_start + pace.mul_f64(f64::from(index))).await;
            }
            let ctx = DeviceCtx {
                run: run.clone(),
                group: groups[(index / DEVICES_PER_GROUP) as usize].clone(),
                index,
                phase: phase_rx.clone(),
            };
            // Counted from the spawn, so that the drain waits for devices still connecting.
            run.counters.undrained.incr();
            match &connector {
                Connector::Floor(endpoints) => {
                    devices.spawn(floor::device(ctx, endpoints[index as usize % endpoints.len()].clone()));
                }
                Connector::Mqtt(tls) => {
                    devices.spawn(mqtt::device(ctx, tls.clone()));
                }
            }
        }
        std::future::pending::<()>().await;
    };
    tokio::select! {
        () = spawn => {}
        () = tokio::time::sleep(run.cfg.duration) => {}
    }
    let gen_end_us = run.now_us();
    let acked_while_sending = run.counters.acked.get();
    phase_tx.send_replace(Phase::Draining { gen_end_us });
    let deadline = Instant::now() + run.cfg.drain_timeout;
    while run.counters.undrained.get() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    phase_tx.send_replace(Phase::Closing { gen_end_us });
    while let Some(result) = devices.join_next().await {
        if let Err(error) = result {
            tracing::warn!(%error, "a device task failed");
            run.counters.errors.incr();
        }
    }
    if let Connector::Floor(endpoints) = &connector {
        let idle = async {
            for e in endpoints {
                e.wait_idle().await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(3), idle).await;
    }
    let (mut ack, mut setup) = (new_histogram(), new_histogram());
    for group in &groups {
        group.merge_into(&mut ack, &mut setup);
    }
    let c = &run.counters;
    let duration_s = gen_end_us as f64 / 1e6;
    let sending_s = duration_s - run.cfg.warmup.as_secs_f64();
    Ok(PeerReport {
        mode: match run.cfg.mode {
            PeerMode::Floor => "floor",
            PeerMode::Mqtt => "mqtt",
        },
        devices: run.cfg.devices,
        established: c.established.get(),
        sent: c.sent.get(),
        acked: c.acked.get(),
        missing: c.missing.get(),
        not_sent: c.not_sent.get(),
        errors: c.errors.get(),
        duration_s,
        rate_msgs_per_s: acked_while_sending as f64 / sending_s.max(1e-6),
        ack_latency_us: Latency::from_histogram(&ack),
        setup_latency_us: Latency::from_histogram(&setup),
    })
}

/// How devices reach the server.
enum Connector {
    Floor(Vec<quinn::Endpoint>),
    Mqtt(tokio_rustls::TlsConnector),
}

/// Writes `report` to `path` as JSON.
pub fn write_report(report: &PeerReport, path: &std::path::Path) -> anyhow::Result<()> {
    let json = serde_json::to_vec_pretty(report)?;
    std::fs::write(path, json).with_context(|| format!("writing the report to {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_for_tests() -> Run {
        Run {
            cfg: PeerConfig {
                mode: PeerMode::Floor,
                addr: "127.0.0.1:1".parse().expect("address"),
                server_name: "localhost".into(),
                ca_cert: PathBuf::new(),
                devices: 1,
                duration: Duration::from_secs(1),
                rate_per_device: 10.0,
                burst: 2,
                warmup: Duration::ZERO,
                mix: MessageMix::default(),
                heartbeat_interval_s: 3600,
                connect_rate: 0,
                drain_timeout: Duration::from_secs(1),
            },
            schedule: ScheduleParams {
                rate_per_s: 10.0,
                burst: 2,
                heartbeat_interval_us: 3_600_000_000,
                alarm_rate_per_s: 0.0,
            },
            macs: MacPlan::new(0xabcdef),
            run_seed: 7,
            run_tag: RunTag(1),
            run_start: Instant::now(),
            run_start_ms: 0,
            counters: PeerCounters::default(),
        }
    }

    #[test]
    fn frames_go_out_a_burst_at_a_time_and_cumulative_acks_resolve_them_in_order() {
        let run = run_for_tests();
        let mut dev = PeerDevice::new(&run, 0, 0);
        // Data ticks at 1 ms + k × 200 ms, no heartbeat within the test.
        dev.schedule = Schedule::with_phases(run.schedule, 0, 1_000, 3_599_000_000, 0);
        let mut out = Vec::new();
        // One second of schedule: 10 frames in ticks of 2; each fill takes at most one burst.
        dev.fill(1_000_000, &run, |seq, frame| out.push((seq, frame.len())));
        assert_eq!(out.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [1, 2]);
        assert!(out.iter().all(|(_, len)| *len > fleetpulse_proto::codec::HEADER_LEN));
        while dev.next_wake_us(Phase::Sending).is_some_and(|at| at <= 1_000_000) {
            dev.fill(1_000_000, &run, |seq, _| out.push((seq, 0)));
        }
        assert_eq!(out.len(), 10);
        assert_eq!(run.counters.sent.get(), 10);
        let mut h = new_histogram();
        assert_eq!(dev.ack_through(4, 2_000_000, &mut h), 4);
        assert_eq!(dev.ack_through(3, 2_000_000, &mut h), 0, "an old acknowledgement resolves nothing");
        assert_eq!(h.len(), 4);
        assert!(!dev.drained(1_000_000));
        assert_eq!(dev.ack_through(10, 2_000_000, &mut h), 6);
        assert!(dev.drained(1_000_000));
        assert_eq!(dev.leftovers(1_000_000), (0, 0));
        assert_eq!(dev.next_wake_us(Phase::Draining { gen_end_us: 1_000_000 }), None);
    }

    #[test]
    fn modes_parse() {
        assert_eq!("floor".parse::<PeerMode>().expect("floor"), PeerMode::Floor);
        assert_eq!("mqtt".parse::<PeerMode>().expect("mqtt"), PeerMode::Mqtt);
        assert!("amqp".parse::<PeerMode>().is_err());
    }
}
