//! Property test of [`ShardBatcher`] against a simple model of devices and a store: random
//! interleavings of sends (with resends and gaps), reconnects, commits that succeed or fail and
//! offline checks. Every acknowledged persisted frame is stored, nothing is stored twice,
//! delivery marks never go back, acks of a device never go back, and every waiter is answered.

use std::collections::{BTreeSet, HashMap, HashSet};

use fleetpulse_proto::domain::{CallStatus, DeviceAlarm, DeviceMessage, DeviceStatus, ResourceSample};
use fleetpulse_proto::{AlarmTypeCode, DeviceId, EnterpriseId, UnixMillis};
use fleetpulse_store::StoreError;
use prometheus_client::registry::Registry;
use proptest::prelude::*;

use super::*;

const DEVICES: u64 = 3;

#[derive(Debug, Clone)]
enum Op {
    /// The device sends its last `back` frames again, skips a seq for good if `gap`, then sends
    /// `new` new frames (after a reconnect, everything not acknowledged comes first).
    Send { device: u64, back: u64, gap: bool, new: u64 },
    /// The shell asks for the batch to commit.
    Commit,
    /// The store answers the batch being committed.
    Answer { ok: bool },
    /// The device opens a new connection.
    Reconnect { device: u64 },
    /// Time passes by this many seconds, then the offline check runs.
    Wait { seconds: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..DEVICES, 0..3u64, prop::bool::weighted(0.1), 0..4u64)
            .prop_map(|(device, back, gap, new)| Op::Send { device, back, gap, new }),
        3 => Just(Op::Commit),
        3 => prop::bool::weighted(0.8).prop_map(|ok| Op::Answer { ok }),
        1 => (0..DEVICES).prop_map(|device| Op::Reconnect { device }),
        1 => (1..40u64).prop_map(|seconds| Op::Wait { seconds }),
    ]
}

/// What the frame with `seq` of `device` is (a device's frame is the same each time it is sent).
fn message(device: u64, seq: u64) -> Option<DeviceMessage> {
    match (device + seq) % 5 {
        0 => Some(DeviceMessage::Heartbeat { uptime_s: seq }),
        1 => Some(DeviceMessage::Status(DeviceStatus {
            lines: vec![],
            call_status: CallStatus::Idle,
            firmware: "1.0".into(),
            public_ip: None,
            private_ip: None,
            uptime_s: seq,
            last_reboot: None,
        })),
        2 => Some(DeviceMessage::Resource(ResourceSample { cpu_centi_pct: 1, mem_used_bytes: 1, mem_total_bytes: 2 })),
        3 => Some(DeviceMessage::Alarm(DeviceAlarm {
            alarm_type: AlarmTypeCode(105).alarm_type().expect("known type"),
            clear: seq.is_multiple_of(2),
            description: "crash".into(),
            log: None,
        })),
        _ => None,
    }
}

fn persisted(device: u64, seq: u64) -> bool {
    matches!((device + seq) % 5, 1..=3)
}

#[derive(Debug, Default)]
struct Device {
    /// Needs an Open before sending (never opened, or its session got an error).
    closed: bool,
    /// Opened since it last sent: resends everything not acknowledged first.
    resend: bool,
    connection: usize,
    /// Highest seq sent so far.
    high: u64,
    /// Seqs skipped for good (never sent).
    skipped: HashSet<u64>,
    /// Highest acknowledgement received.
    acked: u64,
    /// The `last_seq` of its latest `Welcome`: it resends the frames above it.
    welcome: u64,
    /// Highest acknowledgement received since the last error (acks never go back within it).
    epoch_acked: u64,
}

/// A waiter token: (device, waiter number).
type Token = (u64, u64);

struct Harness {
    core: ShardBatcher<Token>,
    devices: Vec<Device>,
    clock: u64,
    committing: Option<CommitBatch>,
    /// The store: persisted (device, seq) rows and delivery marks.
    stored: HashSet<(u64, u64)>,
    marks: HashMap<u64, u64>,
    waiters: BTreeSet<Token>,
    next_waiter: u64,
}

impl Harness {
    fn new() -> Harness {
        let config = BatcherConfig { max_batch_rows: 6, missed_heartbeats: 3, alarm_events: true, hold_offline: false };
        let metrics = IngestMetrics::register(&mut Registry::default());
        Harness {
            core: ShardBatcher::new(config, metrics),
            devices: (0..DEVICES).map(|_| Device { closed: true, ..Device::default() }).collect(),
            clock: 0,
            committing: None,
            stored: HashSet::new(),
            marks: HashMap::new(),
            waiters: BTreeSet::new(),
            next_waiter: 0,
        }
    }

    fn now(&self) -> Now {
        Now { wall: UnixMillis(self.clock as i64), mono: self.clock }
    }

    fn open(&mut self, device: u64) {
        let now = self.now();
        let d = &mut self.devices[device as usize];
        d.closed = false;
        d.resend = true;
        d.connection += 1;
        let mark = self.marks.get(&device).copied().unwrap_or(0);
        let welcome = self.core.handle_open(now, DeviceId(device), EnterpriseId(1), 10, mark, d.connection);
        assert!(welcome >= mark, "d{device}'s Welcome claims {welcome}, below the store's mark {mark}");
        assert!(
            welcome <= d.acked.max(mark),
            "d{device}'s Welcome claims {welcome}, beyond its acknowledgements ({}) and the store's mark ({mark})",
            d.acked
        );
        d.welcome = welcome;
    }

    fn send(&mut self, device: u64, back: u64, gap: bool, new: u64) {
        if !self.core.has_room() {
            return; // the shell takes no command now; the device waits
        }
        if self.devices[device as usize].closed {
            self.open(device);
        }
        let d = &mut self.devices[device as usize];
        let from = if std::mem::take(&mut d.resend) {
            d.acked.max(d.welcome) + 1
        } else {
            (d.high + 1).saturating_sub(back).max(1)
        };
        let mut seqs: Vec<u64> = (from..=d.high).filter(|s| !d.skipped.contains(s)).collect();
        if gap {
            d.high += 1;
            d.skipped.insert(d.high);
        }
        for _ in 0..new {
            d.high += 1;
            seqs.push(d.high);
        }
        let frames = seqs.iter().map(|&seq| Frame { seq, msg: message(device, seq) }).collect();
        let token = (device, self.next_waiter);
        self.next_waiter += 1;
        self.waiters.insert(token);
        let now = self.now();
        self.core.handle_frames(now, DeviceId(device), frames, now.wall, token);
    }

    fn answer(&mut self, ok: bool) {
        let Some(CommitBatch { id, batch }) = self.committing.take() else { return };
        if !ok {
            self.core.handle_committed(id, Err(StoreError::Backend("disk full".into())));
            return;
        }
        let rows = batch.status.iter().map(|e| (e.device_id, e.seq));
        let rows = rows.chain(batch.resources.iter().map(|e| (e.device_id, e.seq)));
        let rows = rows.chain(batch.alarms.iter().map(|e| (e.device_id, e.seq)).filter(|(_, seq)| *seq != 0));
        for (device, seq) in rows {
            assert!(persisted(device.0, seq), "d{device}#{seq} is not a persisted kind");
            assert!(self.stored.insert((device.0, seq)), "d{device}#{seq} stored twice");
        }
        for (device, mark) in batch.delivery {
            let old = self.marks.insert(device.0, mark).unwrap_or(0);
            assert!(mark >= old, "d{device}'s delivery mark went back from {old} to {mark}");
        }
        self.core.handle_committed(id, Ok(()));
    }

    fn run(&mut self, op: &Op) {
        match *op {
            Op::Send { device, back, gap, new } => self.send(device, back, gap, new),
            Op::Commit => {
                if self.committing.is_none() {
                    self.committing = self.core.poll_commit();
                } else {
                    assert!(self.core.poll_commit().is_none(), "a second batch while one commits");
                }
            }
            Op::Answer { ok } => self.answer(ok),
            Op::Reconnect { device } => {
                if !self.devices[device as usize].closed {
                    let old = self.devices[device as usize].connection;
                    self.core.handle_disconnected(DeviceId(device), old);
                }
                self.open(device);
            }
            Op::Wait { seconds } => {
                self.clock += seconds * 1000;
                let now = self.now();
                self.core.handle_timeout(now);
            }
        }
        self.drain();
    }

    /// Takes the core's answers and checks each against the store.
    fn drain(&mut self) {
        while self.core.poll_live().is_some() {}
        while self.core.poll_alarm_events().is_some() {}
        while self.core.poll_snapshots().is_some() {}
        while let Some(((device, n), result)) = self.core.poll_ack() {
            assert!(self.waiters.remove(&(device, n)), "waiter w{n} answered twice");
            let d = &mut self.devices[device as usize];
            match result {
                Err(()) => {
                    d.closed = true;
                    d.epoch_acked = 0;
                }
                Ok(ack) => {
                    assert!(ack >= d.epoch_acked, "d{device}'s ack went back from {} to {ack}", d.epoch_acked);
                    d.epoch_acked = ack;
                    d.acked = d.acked.max(ack);
                    for seq in 1..=ack {
                        if persisted(device, seq) && !d.skipped.contains(&seq) && seq <= d.high {
                            assert!(
                                self.stored.contains(&(device, seq)),
                                "d{device} acked {ack} before #{seq} is stored"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Commits until nothing is left; every waiter must be answered by then.
    fn finish(&mut self) {
        for _ in 0..1000 {
            self.answer(true);
            self.committing = self.core.poll_commit();
            self.drain();
            if self.committing.is_none() && !self.core.has_pending() {
                break;
            }
        }
        assert!(self.waiters.is_empty(), "waiters never answered: {:?}", self.waiters);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn acknowledged_frames_are_stored_once(ops in prop::collection::vec(op(), 1..80)) {
        let mut harness = Harness::new();
        for op in &ops {
            harness.run(op);
        }
        harness.finish();
    }
}
