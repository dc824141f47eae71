//! The server's stage histograms of the alarm → inbox path (issue 20), read from its `/metrics`
//! before and after a run with injected alarms: the difference says what each stage cost during
//! the run, beside the end-to-end latency the SMTP sink measures.
//!
//! Quantiles are estimated from the buckets like Prometheus' `histogram_quantile` (linear within
//! the bucket the rank falls in), so they are as coarse as the buckets (doubling from 100 µs).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The stages, in path order: metric name (without `_bucket`) and what it measures.
pub const STAGES: &[(&str, &str)] = &[
    ("fleetpulse_ingest_store_append_seconds", "frame batch submitted → durable"),
    ("fleetpulse_alarm_received_to_engine_seconds", "frame received → evaluated by the engine"),
    ("fleetpulse_alarm_engine_to_outbox_seconds", "engine decision → outbox row durable"),
    ("fleetpulse_outbox_pickup_seconds", "outbox row → picked up by the worker"),
    ("fleetpulse_outbox_handoff_wait_seconds", "outbox row durable → taken from the hand-off"),
    ("fleetpulse_outbox_store_read_seconds", "store read of due messages (count: reads)"),
    ("fleetpulse_outbox_smtp_checkout_seconds", "SMTP connection reused or connected"),
    ("fleetpulse_outbox_smtp_data_seconds", "MAIL FROM → DATA accepted"),
    ("fleetpulse_outbox_outcome_queue_wait_seconds", "finished send → room in the recorder's queue"),
    ("fleetpulse_outbox_record_seconds", "outcomes group-committed (after acceptance)"),
    ("fleetpulse_outbox_queued_to_accepted_seconds", "outbox row → DATA accepted (mailer total)"),
];

/// Most histogram lines kept from one scrape (a bound on what a server can make us hold).
const MAX_BUCKET_LINES: usize = 4_096;

/// The cumulative buckets of the stage histograms at one moment: name → (upper bound, count).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot(BTreeMap<String, Vec<(f64, u64)>>);

/// One stage during the run.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct StageLatency {
    /// What the stage measures.
    pub stage: String,
    /// The server's histogram.
    pub metric: String,
    /// Observations during the run.
    pub count: u64,
    /// Median, microseconds (bucket-interpolated).
    pub p50_us: u64,
    /// 99th percentile, microseconds (bucket-interpolated).
    pub p99_us: u64,
}

/// Reads the stage histograms' buckets out of a Prometheus/OpenMetrics text exposition.
pub fn parse(text: &str) -> Snapshot {
    let mut snapshot = Snapshot::default();
    let mut kept = 0;
    for line in text.lines() {
        let Some((name, rest)) = line.split_once("_bucket{le=\"") else { continue };
        if !STAGES.iter().any(|(stage, _)| *stage == name) {
            continue;
        }
        let Some((le, rest)) = rest.split_once("\"}") else { continue };
        let le = if le == "+Inf" {
            f64::INFINITY
        } else if let Ok(v) = le.parse::<f64>() {
            v
        } else {
            continue;
        };
        let Some(count) = rest.split_whitespace().next().and_then(|c| c.parse::<u64>().ok()) else { continue };
        if kept == MAX_BUCKET_LINES {
            break;
        }
        kept += 1;
        snapshot.0.entry(name.to_owned()).or_default().push((le, count));
    }
    for buckets in snapshot.0.values_mut() {
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    snapshot
}

/// What every stage observed between `before` and `after` (stages with no observation left out).
pub fn stages(before: &Snapshot, after: &Snapshot) -> Vec<StageLatency> {
    let mut out = Vec::new();
    for (metric, stage) in STAGES {
        let Some(end) = after.0.get(*metric) else { continue };
        let start = before.0.get(*metric);
        let delta: Vec<(f64, u64)> = end
            .iter()
            .map(|&(le, n)| {
                let earlier = start.and_then(|s| s.iter().find(|(l, _)| *l == le)).map_or(0, |&(_, m)| m);
                (le, n.saturating_sub(earlier))
            })
            .collect();
        let count = delta.last().map_or(0, |&(_, n)| n);
        if count == 0 {
            continue;
        }
        out.push(StageLatency {
            stage: (*stage).to_owned(),
            metric: (*metric).to_owned(),
            count,
            p50_us: quantile_us(&delta, 0.5),
            p99_us: quantile_us(&delta, 0.99),
        });
    }
    out
}

/// The `q` quantile of cumulative buckets, microseconds, interpolated within its bucket.
fn quantile_us(buckets: &[(f64, u64)], q: f64) -> u64 {
    let Some(&(_, total)) = buckets.last() else { return 0 };
    #[allow(clippy::cast_precision_loss)]
    let rank = q * total as f64;
    let (mut lower, mut below) = (0.0_f64, 0_u64);
    for &(le, n) in buckets {
        #[allow(clippy::cast_precision_loss)]
        if n as f64 >= rank {
            let seconds = if le.is_infinite() {
                lower
            } else {
                let share = if n > below { (rank - below as f64) / (n - below) as f64 } else { 0.0 };
                lower + (le - lower) * share
            };
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            return (seconds * 1e6).round() as u64;
        }
        (lower, below) = (le, n);
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "# TYPE fleetpulse_outbox_smtp_data_seconds histogram\n\
        fleetpulse_outbox_smtp_data_seconds_sum 0.5\n\
        fleetpulse_outbox_smtp_data_seconds_count 10\n\
        fleetpulse_outbox_smtp_data_seconds_bucket{le=\"0.0001\"} 0\n\
        fleetpulse_outbox_smtp_data_seconds_bucket{le=\"0.0002\"} 10\n\
        fleetpulse_outbox_smtp_data_seconds_bucket{le=\"0.0004\"} 10\n\
        fleetpulse_outbox_smtp_data_seconds_bucket{le=\"+Inf\"} 10\n\
        other_metric_bucket{le=\"1.0\"} 5\n";

    #[test]
    fn stage_quantiles_come_from_the_difference_of_two_scrapes() {
        let after = BEFORE
            .replace("{le=\"0.0004\"} 10", "{le=\"0.0004\"} 110")
            .replace("{le=\"+Inf\"} 10", "{le=\"+Inf\"} 110");
        let (before, after) = (parse(BEFORE), parse(&after));
        assert!(!before.0.contains_key("other_metric"), "only the stages are kept");
        let stages = stages(&before, &after);
        assert_eq!(stages.len(), 1, "{stages:?}");
        let s = &stages[0];
        assert_eq!((s.metric.as_str(), s.count), ("fleetpulse_outbox_smtp_data_seconds", 100));
        // All 100 new observations fell in (200 µs, 400 µs]: the median is halfway.
        assert_eq!((s.p50_us, s.p99_us), (300, 398));
    }

    #[test]
    fn nothing_observed_means_no_stage_and_garbage_is_ignored() {
        assert!(stages(&parse(BEFORE), &parse(BEFORE)).is_empty());
        let garbage = "fleetpulse_outbox_smtp_data_seconds_bucket{le=\"x\"} 3\n\
            fleetpulse_outbox_smtp_data_seconds_bucket{le=\"1\"} many\n";
        assert_eq!(parse(garbage), Snapshot::default());
    }
}
