//! Run-wide counters, latency histograms shared by groups of devices, and the progress line.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::device::Resolved;

/// A run-wide event count (relaxed atomics: only totals matter).
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub fn incr(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(&self, n: u64) {
        if n > 0 {
            self.0.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// For gauges: undoes one `incr`.
    pub fn decr(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    /// Raises the value to at least `value`.
    pub fn raise_to(&self, value: u64) {
        self.0.fetch_max(value, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counters every device task updates.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub sent: Counter,
    pub resent: Counter,
    pub acked: Counter,
    pub rejected_frames: Counter,
    pub errors: Counter,
    pub established: Counter,
    pub reconnects: Counter,
    pub rejected_connections: Counter,
    pub failed_attempts: Counter,
    pub not_sent: Counter,
    /// Devices with a session up right now (a gauge).
    pub connected: Counter,
    /// Devices that still have frames to get acknowledged or may generate more (a gauge).
    pub undrained: Counter,
    /// Run time (µs) at which the latest first session was established.
    pub last_first_session_us: Counter,
    pub commands_received: Counter,
    pub commands_executed: Counter,
    pub commands_repeated: Counter,
    pub commands_refused: Counter,
    pub commands_late: Counter,
    pub commands_succeeded: Counter,
    pub commands_failed: Counter,
    pub files_uploaded: Counter,
    pub files_stored: Counter,
    pub files_refused: Counter,
    pub firmware_upgrades: Counter,
}

impl Counters {
    /// Counts what a server message resolved.
    pub fn resolved(&self, r: Resolved) {
        self.acked.add(r.acked);
        self.rejected_frames.add(r.rejected);
    }
}

/// Highest latency a histogram tells apart (one hour in microseconds); larger values are
/// recorded as this value.
pub(crate) const HIGHEST_LATENCY_US: u64 = 3_600_000_000;

/// A new latency histogram: microseconds, 3 significant figures, up to [`HIGHEST_LATENCY_US`].
///
/// Fixed bounds rather than auto-resizing: `saturating_record` never resizes, so an
/// auto-resizing histogram would clamp every value above its tiny initial range.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_LATENCY_US, 3).expect("valid bounds and precision")
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
        let acked = counters.acked.get();
        let per_s = acked.saturating_sub(last_acked) as f64 / now.duration_since(last_at).as_secs_f64().max(1e-3);
        (last_acked, last_at) = (acked, now);
        eprintln!(
            "[{:>6.1}s] connected {:>7}  sent {:>10}  acked {:>10}  {:>9.0} msg/s  reconnects {:>6}  errors {:>6}",
            now.duration_since(started).as_secs_f64(),
            counters.connected.get(),
            counters.sent.get(),
            acked,
            per_s,
            counters.reconnects.get(),
            counters.errors.get(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_keep_large_values_and_clamp_beyond_an_hour() {
        let mut h = new_histogram();
        h.saturating_record(1);
        h.saturating_record(2_500_000);
        assert_eq!(h.max(), h.highest_equivalent(2_500_000));
        assert!(h.max().abs_diff(2_500_000) <= 2_500, "3 significant figures");
        h.saturating_record(u64::MAX);
        assert_eq!(h.max(), h.highest_equivalent(HIGHEST_LATENCY_US));
    }

    #[test]
    fn group_histograms_merge() {
        let group = GroupLatency::default();
        group.with_ack(|h| h.saturating_record(1_000_000));
        group.record_setup(Duration::from_millis(5));
        let (mut ack, mut setup) = (new_histogram(), new_histogram());
        group.merge_into(&mut ack, &mut setup);
        assert_eq!((ack.len(), setup.len()), (1, 1));
        assert!(setup.max().abs_diff(5_000) <= 5);
    }
}
