//! Run-wide counters, latency histograms shared by groups of devices, and the progress line.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::device::Resolved;

/// Counters every device task updates.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub sent: AtomicU64,
    pub resent: AtomicU64,
    pub acked: AtomicU64,
    pub rejected_frames: AtomicU64,
    pub errors: AtomicU64,
    pub established: AtomicU64,
    pub reconnects: AtomicU64,
    pub rejected_connections: AtomicU64,
    pub failed_attempts: AtomicU64,
    pub not_sent: AtomicU64,
    /// Devices with a session up right now.
    pub connected: AtomicU64,
    /// Devices that still have frames to get acknowledged (or may generate more).
    pub undrained: AtomicU64,
    /// Run time (µs) at which the latest first session was established.
    pub last_first_session_us: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn incr(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Counts what a server message resolved.
    pub fn resolved(&self, r: Resolved) {
        Counters::add(&self.acked, r.acked);
        Counters::add(&self.rejected_frames, r.rejected);
    }
}

/// A new latency histogram: microseconds, 3 significant figures, growing as needed.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant figures is a valid precision")
}

/// Latency histograms shared by one group of devices (those of one endpoint); merged at the end.
#[derive(Debug)]
pub(crate) struct GroupLatency {
    ack: Mutex<Histogram<u64>>,
    setup: Mutex<Histogram<u64>>,
}

impl Default for GroupLatency {
    fn default() -> Self {
        GroupLatency { ack: Mutex::new(new_histogram()), setup: Mutex::new(new_histogram()) }
    }
}

impl GroupLatency {
    /// Runs `f` with the acknowledgement-latency histogram locked (keep `f` short, no awaits).
    pub fn with_ack<R>(&self, f: impl FnOnce(&mut Histogram<u64>) -> R) -> R {
        f(&mut self.ack.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Records one connection setup latency.
    pub fn record_setup(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.setup.lock().unwrap_or_else(PoisonError::into_inner).saturating_record(us);
    }

    /// Adds this group's histograms into `ack` and `setup`.
    pub fn merge_into(&self, ack: &mut Histogram<u64>, setup: &mut Histogram<u64>) {
        for (from, into) in [(&self.ack, ack), (&self.setup, setup)] {
            let from = from.lock().unwrap_or_else(PoisonError::into_inner);
            if let Err(error) = into.add(&*from) {
                tracing::warn!(%error, "could not merge a latency histogram");
            }
        }
    }
}

/// Prints one progress line per second to stderr until dropped (abort the task).
pub(crate) async fn progress(counters: std::sync::Arc<Counters>, started: tokio::time::Instant) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut last_acked = 0;
    let mut last_at = started;
    loop {
        let now = ticker.tick().await;
        let acked = Counters::get(&counters.acked);
        let per_s = acked.saturating_sub(last_acked) as f64 / now.duration_since(last_at).as_secs_f64().max(1e-3);
        (last_acked, last_at) = (acked, now);
        eprintln!(
            "[{:>6.1}s] connected {:>7}  sent {:>10}  acked {:>10}  {:>9.0} msg/s  reconnects {:>6}  errors {:>6}",
            now.duration_since(started).as_secs_f64(),
            Counters::get(&counters.connected),
            Counters::get(&counters.sent),
            acked,
            per_s,
            Counters::get(&counters.reconnects),
            Counters::get(&counters.errors),
        );
    }
}
