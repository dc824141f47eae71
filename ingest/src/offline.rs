//! Offline detection on missed heartbeats (ING-7), sans-I/O on an injected clock.
//!
//! Each device has a deadline: last frame time + `missed` × its heartbeat interval. A min-heap
//! holds at most one entry per device; an entry whose deadline was pushed back since it was
//! queued is re-queued when it surfaces (lazy update), so a heartbeat costs a map write, not a
//! heap push.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use fleetpulse_proto::DeviceId;

/// Monotonic milliseconds on the detector's clock (the shell converts from `Instant`).
pub type Millis = u64;

/// Tracks heartbeat deadlines and reports devices whose deadline passed.
#[derive(Debug)]
pub struct OfflineDetector {
    missed: u32,
    deadlines: HashMap<DeviceId, Millis>,
    queue: BinaryHeap<Reverse<(Millis, DeviceId)>>,
}

impl OfflineDetector {
    /// A detector declaring devices offline after `missed` heartbeat intervals without a frame.
    pub fn new(missed: u32) -> Self {
        OfflineDetector { missed: missed.max(1), deadlines: HashMap::new(), queue: BinaryHeap::new() }
    }

    /// Records a sign of life from the device at `now`.
    pub fn seen(&mut self, device: DeviceId, now: Millis, heartbeat_interval_s: u32) {
        let deadline = now + u64::from(self.missed) * u64::from(heartbeat_interval_s) * 1000;
        if self.deadlines.insert(device, deadline).is_none() {
            self.queue.push(Reverse((deadline, device)));
        }
    }

    /// Stops watching the device (it was removed).
    pub fn forget(&mut self, device: DeviceId) {
        self.deadlines.remove(&device);
    }

    /// Devices being watched.
    pub fn watched(&self) -> usize {
        self.deadlines.len()
    }

    /// Returns the devices whose deadline is at or before `now` and stops watching them.
    pub fn poll_expired(&mut self, now: Millis) -> Vec<DeviceId> {
        let mut expired = Vec::new();
        while let Some(&Reverse((queued, device))) = self.queue.peek() {
            if queued > now {
                break;
            }
            self.queue.pop();
            match self.deadlines.get(&device).copied() {
                Some(deadline) if deadline <= now => {
                    self.deadlines.remove(&device);
                    expired.push(device);
                }
                Some(deadline) => self.queue.push(Reverse((deadline, device))),
                None => {} // forgotten
            }
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a script of (time, event) against a detector with `missed = 3` and 10 s intervals,
    /// returning what each poll reported.
    fn run(script: &[(Millis, &str, u64)]) -> Vec<(Millis, Vec<u64>)> {
        let mut d = OfflineDetector::new(3);
        let mut out = Vec::new();
        for &(now, event, device) in script {
            match event {
                "seen" => d.seen(DeviceId(device), now, 10),
                "forget" => d.forget(DeviceId(device)),
                "poll" => out.push((now, d.poll_expired(now).into_iter().map(|d| d.0).collect())),
                other => panic!("unknown event {other}"),
            }
        }
        out
    }

    #[test]
    fn offline_after_three_missed_intervals() {
        let got = run(&[(0, "seen", 1), (29_999, "poll", 0), (30_000, "poll", 0), (30_001, "poll", 0)]);
        assert_eq!(got, vec![(29_999, vec![]), (30_000, vec![1]), (30_001, vec![])]);
    }

    #[test]
    fn heartbeats_push_the_deadline_back() {
        let got = run(&[
            (0, "seen", 1),
            (0, "seen", 2),
            (20_000, "seen", 1),
            (30_000, "poll", 0),
            (49_999, "poll", 0),
            (50_000, "poll", 0),
        ]);
        assert_eq!(got, vec![(30_000, vec![2]), (49_999, vec![]), (50_000, vec![1])]);
    }

    #[test]
    fn forgotten_and_reconnected_devices() {
        let got = run(&[
            (0, "seen", 1),
            (0, "forget", 1),
            (40_000, "poll", 0),
            (40_000, "seen", 1), // back online after being forgotten
            (70_000, "poll", 0),
        ]);
        assert_eq!(got, vec![(40_000, vec![]), (70_000, vec![1])]);
    }

    #[test]
    fn heap_holds_one_entry_per_device() {
        let mut d = OfflineDetector::new(3);
        for t in 0..1000 {
            d.seen(DeviceId(7), t, 10);
        }
        assert_eq!((d.queue.len(), d.watched()), (1, 1));
    }
}
