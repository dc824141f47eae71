//! The JSON report of a run (LT-2, LT-3).

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Everything a run measured. Counts are frames (`Uplink::Data`) unless said otherwise.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Report {
    /// Simulated devices (without the bad-credential ones).
    pub devices: u32,
    /// Length of the sending phase, seconds.
    pub duration_s: f64,
    /// Distinct frames sent at least once.
    pub sent: u64,
    /// Frames acknowledged (by `Ack`, by a `Welcome`'s `last_seq`, or by `Rejected`).
    pub acked: u64,
    /// Failed connection attempts, unexpected closes, protocol anomalies.
    pub errors: u64,
    /// Frames acknowledged during the sending phase per second of it.
    pub rate_msgs_per_s: f64,
    /// Acknowledgement latency from each frame's intended send time, microseconds.
    pub ack_latency_us: Latency,
    /// What the store holds for the run's devices.
    pub verified: Verified,
    /// Connection statistics.
    pub connections: Connections,
    /// Frames the server rejected as invalid (counted in `acked`, not stored).
    pub rejected_frames: u64,
    /// The enterprise the devices belonged to.
    pub enterprise_id: u64,
    /// Frames written again after a reconnect (not counted again in `sent`).
    #[serde(default)]
    pub resent: u64,
    /// Frames the schedule intended before the end that were never generated because the device's
    /// unacknowledged window stayed full.
    #[serde(default)]
    pub not_sent: u64,
    /// Whether every generated frame was acknowledged before the drain timeout.
    #[serde(default)]
    pub drained: bool,
}

impl Report {
    /// Whether verification found nothing missing and nothing duplicated.
    pub fn passed(&self) -> bool {
        self.verified.missing == 0 && self.verified.duplicated == 0
    }
}

/// Percentiles of a latency distribution, microseconds (all 0 when nothing was recorded).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest value.
    pub max: u64,
}

impl Latency {
    /// The percentiles of a histogram.
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// The result of comparing the store with the acknowledged frames (LT-3).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verified {
    /// Rows the store holds for the run's devices.
    pub stored: u64,
    /// Acknowledged persisted frames the store does not hold (the goal is 0).
    pub missing: u64,
    /// Rows beyond one per stored sequence number (the goal is 0).
    pub duplicated: u64,
}

/// Connection statistics.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq)]
pub struct Connections {
    /// Devices whose first session was established (connect + `Hello` → `Welcome`).
    pub established: u64,
    /// Sessions re-established after a lost connection.
    pub reconnects: u64,
    /// Connections the server closed for a bad credential (not retried).
    pub rejected_connections: u64,
    /// Connection attempts that failed otherwise (retried with backoff).
    pub failed_attempts: u64,
    /// First sessions established per second, from the run start to the last of them.
    pub setup_rate_per_s: f64,
    /// Time from starting to connect to the `Welcome`, every successful session, microseconds.
    pub setup_latency_us: Latency,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_percentiles_from_a_histogram() {
        let mut h = crate::stats::new_histogram();
        for v in 1..=1000 {
            h.saturating_record(v);
        }
        let l = Latency::from_histogram(&h);
        assert_eq!((l.p50, l.p99, l.p999, l.max), (500, 990, 999, 1000));
        let empty = crate::stats::new_histogram();
        assert_eq!(Latency::from_histogram(&empty), Latency::default());
    }

    #[test]
    fn report_round_trips_and_tolerates_missing_extras() {
        let report = Report {
            devices: 2,
            duration_s: 1.5,
            sent: 10,
            acked: 9,
            errors: 0,
            rate_msgs_per_s: 6.0,
            ack_latency_us: Latency { p50: 1, p99: 2, p999: 3, max: 4 },
            verified: Verified { stored: 7, missing: 0, duplicated: 0 },
            connections: Connections { established: 2, ..Connections::default() },
            rejected_frames: 0,
            enterprise_id: 5,
            resent: 1,
            not_sent: 0,
            drained: true,
        };
        let json = serde_json::to_value(&report).expect("serializes");
        assert_eq!(json["verified"]["missing"], 0);
        assert_eq!(json["ack_latency_us"]["p999"], 3);
        let back: Report = serde_json::from_value(json.clone()).expect("deserializes");
        assert_eq!(back, report);
        let mut trimmed = json;
        for extra in ["resent", "not_sent", "drained"] {
            trimmed.as_object_mut().expect("object").remove(extra);
        }
        assert!(serde_json::from_value::<Report>(trimmed).is_ok());
        assert!(report.passed());
    }
}
