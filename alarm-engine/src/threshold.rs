//! Threshold rules on resource samples (ALM-4): "CPU above 90 % for 10 minutes".
//!
//! A rule holds when every sample since the first one above its limit stayed above it, and that
//! first sample is at least `for_ms` old. Rules are evaluated on samples only: nothing fires
//! between two samples (devices report every 15 minutes by default, so a 10-minute rule holds at
//! the second sample above the limit, not ten minutes after the first one).
//!
//! The rules of all enabled strategies of an enterprise together decide when a device's derived
//! alarm ([`HIGH_CPU`], [`HIGH_MEMORY`]) is active: it is raised by the first sample at which some
//! rule holds and cleared by the first sample at which none holds any more. There is one alarm
//! per device and metric, whichever rule raised it; who hears of it is decided by the strategies'
//! type and severity selections, as for every other alarm.
//!
//! *Bound*: one 40-byte state per device and metric whose samples are above some
//! limit or whose alarm is active; a device below every limit keeps no state.

use fleetpulse_proto::domain::ResourceSample;
use fleetpulse_proto::{AlarmTypeCode, UnixMillis};

use crate::EngineError;

/// Code of the derived alarm raised when a CPU threshold rule holds.
pub const HIGH_CPU: AlarmTypeCode = AlarmTypeCode(401);
/// Code of the derived alarm raised when a memory threshold rule holds.
pub const HIGH_MEMORY: AlarmTypeCode = AlarmTypeCode(402);
/// Most distinct limits per enterprise and metric (over all its enabled strategies).
pub const MAX_LIMITS_PER_METRIC: usize = 4;
/// Most distinct (limit, duration) rules per enterprise and metric.
pub const MAX_RULES_PER_METRIC: usize = 16;

/// A resource a threshold rule watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    /// CPU usage.
    Cpu,
    /// Memory in use as a share of total memory.
    Memory,
}

impl Metric {
    /// Both metrics, in a fixed order.
    pub const ALL: [Metric; 2] = [Metric::Cpu, Metric::Memory];

    /// The derived alarm type raised when a rule on this metric holds.
    pub fn alarm_code(self) -> AlarmTypeCode {
        match self {
            Metric::Cpu => HIGH_CPU,
            Metric::Memory => HIGH_MEMORY,
        }
    }

    /// The sample's value of this metric in hundredths of a percent, if it has one (memory needs
    /// a non-zero total).
    pub fn value(self, sample: &ResourceSample) -> Option<u16> {
        match self {
            Metric::Cpu => Some(sample.cpu_centi_pct.min(10_000)),
            Metric::Memory => {
                let total = u128::from(sample.mem_total_bytes);
                let used = u128::from(sample.mem_used_bytes.min(sample.mem_total_bytes));
                (total > 0).then(|| u16::try_from(used * 10_000 / total).unwrap_or(10_000))
            }
        }
    }

    fn label(self) -> &'static str {
        match self {
            Metric::Cpu => "CPU",
            Metric::Memory => "Memory",
        }
    }
}

/// "`metric` above `above_centi_pct` for `for_ms`".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ThresholdRule {
    /// The watched resource.
    pub metric: Metric,
    /// The limit in hundredths of a percent (9000 = 90 %); samples strictly above it count.
    /// Must be below 10000.
    pub above_centi_pct: u16,
    /// How long samples must stay above the limit; 0 fires on the first sample above.
    pub for_ms: u64,
}

impl ThresholdRule {
    /// The description of the derived alarm this rule raises at a sample of `value`.
    pub fn describe(&self, value: u16) -> String {
        format!(
            "{} above {} for {} (latest sample {}).",
            self.metric.label(),
            percent(self.above_centi_pct),
            duration(self.for_ms),
            percent(value)
        )
    }
}

fn percent(centi: u16) -> String {
    format!("{}.{:02} %", centi / 100, centi % 100)
}

fn duration(ms: u64) -> String {
    match ms {
        0 => "any time".into(),
        ms if ms % 60_000 == 0 => format!("{} min", ms / 60_000),
        ms if ms % 1_000 == 0 => format!("{} s", ms / 1_000),
        ms => format!("{ms} ms"),
    }
}

/// The rules of one enterprise for one metric, compiled from its enabled strategies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct MetricRules {
    /// Distinct limits, ascending; a device keeps one window per limit.
    limits: Vec<u16>,
    /// (index into `limits`, rule), the highest limit first, then the shortest duration.
    rules: Vec<(usize, ThresholdRule)>,
    /// Changes whenever `limits` change, so that windows of old limits are dropped.
    pub(crate) generation: u32,
}

impl MetricRules {
    /// Compiles the distinct `rules` of `metric`; `previous` keeps its generation when the limits
    /// did not change, else `next_generation` is used.
    pub(crate) fn compile<'a>(
        metric: Metric,
        rules: impl Iterator<Item = &'a ThresholdRule>,
        previous: Option<&MetricRules>,
        next_generation: u32,
    ) -> Result<MetricRules, EngineError> {
        let mut distinct: Vec<ThresholdRule> = rules.filter(|r| r.metric == metric).copied().collect();
        distinct.sort_by(|a, b| b.above_centi_pct.cmp(&a.above_centi_pct).then(a.for_ms.cmp(&b.for_ms)));
        distinct.dedup();
        let mut limits: Vec<u16> = distinct.iter().map(|r| r.above_centi_pct).collect();
        limits.sort_unstable();
        limits.dedup();
        if limits.len() > MAX_LIMITS_PER_METRIC || distinct.len() > MAX_RULES_PER_METRIC {
            return Err(EngineError::TooManyThresholds {
                metric,
                max_limits: MAX_LIMITS_PER_METRIC,
                max_rules: MAX_RULES_PER_METRIC,
            });
        }
        let rules = distinct
            .into_iter()
            .map(|r| (limits.iter().position(|&l| l == r.above_centi_pct).unwrap_or(0), r))
            .collect();
        let generation = match previous {
            Some(p) if p.limits == limits => p.generation,
            _ => next_generation,
        };
        Ok(MetricRules { limits, rules, generation })
    }

    /// Whether there is no rule (samples of this metric need no evaluation).
    pub(crate) fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The distinct limits, ascending (a state's window `i` belongs to `limits()[i]`).
    pub(crate) fn limits(&self) -> &[u16] {
        &self.limits
    }
}

const NO_WINDOW: i64 = i64::MAX;

/// The threshold state of one device and metric: one window per distinct limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ThresholdState {
    /// Start of the current run of samples above each limit (`NO_WINDOW` when there is none).
    since: [i64; MAX_LIMITS_PER_METRIC],
    /// The [`MetricRules::generation`] the windows belong to.
    generation: u32,
    /// Whether the derived alarm is active.
    active: bool,
}

/// What a sample did to a device's derived alarm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ThresholdOutcome {
    /// Nothing changed.
    Unchanged,
    /// `rule` holds now: raise the derived alarm.
    Raise(ThresholdRule),
    /// No rule holds any more: clear it.
    Clear,
}

impl ThresholdState {
    /// A state with no window open and no alarm.
    pub(crate) fn new(generation: u32) -> Self {
        ThresholdState { since: [NO_WINDOW; MAX_LIMITS_PER_METRIC], generation, active: false }
    }

    /// The state of a derived alarm that was active before a restart: no window is open, so the
    /// next sample under every limit clears it.
    pub(crate) fn restored_active(generation: u32) -> Self {
        ThresholdState { active: true, ..ThresholdState::new(generation) }
    }

    /// Applies a sample of `value` taken at `now`.
    pub(crate) fn observe(&mut self, rules: &MetricRules, now: UnixMillis, value: u16) -> ThresholdOutcome {
        if self.generation != rules.generation {
            self.since = [NO_WINDOW; MAX_LIMITS_PER_METRIC];
            self.generation = rules.generation;
        }
        for (since, &limit) in self.since.iter_mut().zip(&rules.limits) {
            if value <= limit {
                *since = NO_WINDOW;
            } else if *since == NO_WINDOW {
                *since = now.0;
            }
        }
        let holding = rules.rules.iter().find(|(i, rule)| {
            let since = self.since[*i];
            since != NO_WINDOW && u64::try_from(now.0.saturating_sub(since)).unwrap_or(0) >= rule.for_ms
        });
        match (self.active, holding) {
            (false, Some((_, rule))) => {
                self.active = true;
                ThresholdOutcome::Raise(*rule)
            }
            (true, None) => {
                self.active = false;
                ThresholdOutcome::Clear
            }
            _ => ThresholdOutcome::Unchanged,
        }
    }

    /// The [`MetricRules::generation`] its windows belong to.
    pub(crate) fn generation(&self) -> u32 {
        self.generation
    }

    /// The open windows: (index of the limit, start of the run above it).
    pub(crate) fn windows(&self) -> impl Iterator<Item = (usize, UnixMillis)> + '_ {
        self.since.iter().enumerate().filter(|(_, s)| **s != NO_WINDOW).map(|(i, &s)| (i, UnixMillis(s)))
    }

    /// Opens window `index` (of `rules`, which become the state's generation) at `since`, as a
    /// restart restores it; an index beyond the limits is ignored.
    pub(crate) fn restore_window(&mut self, rules: &MetricRules, index: usize, since: UnixMillis) {
        if self.generation != rules.generation {
            self.since = [NO_WINDOW; MAX_LIMITS_PER_METRIC];
            self.generation = rules.generation;
        }
        if index < rules.limits.len().min(MAX_LIMITS_PER_METRIC) && since.0 != NO_WINDOW {
            self.since[index] = since.0;
        }
    }

    /// Whether the state carries nothing and can be dropped.
    pub(crate) fn is_idle(&self) -> bool {
        !self.active && self.since.iter().all(|&s| s == NO_WINDOW)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(above: u16, for_ms: u64) -> ThresholdRule {
        ThresholdRule { metric: Metric::Cpu, above_centi_pct: above, for_ms }
    }

    /// Feeds (time, value) samples through a state and lists the outcomes that changed something.
    fn check(rules: &[ThresholdRule], samples: &[(i64, u16)], want: &[&str]) {
        let compiled = MetricRules::compile(Metric::Cpu, rules.iter(), None, 1).expect("valid rules");
        let mut state = ThresholdState::new(1);
        let got: Vec<String> = samples
            .iter()
            .filter_map(|&(t, v)| match state.observe(&compiled, UnixMillis(t), v) {
                ThresholdOutcome::Unchanged => None,
                ThresholdOutcome::Raise(r) => Some(format!("{t} raise {}", r.above_centi_pct)),
                ThresholdOutcome::Clear => Some(format!("{t} clear")),
            })
            .collect();
        assert_eq!(got, want, "rules {rules:?} samples {samples:?}");
    }

    #[test]
    fn windows() {
        let r90 = rule(9000, 600_000);
        // Fires only once the window is for_ms old.
        check(&[r90], &[(0, 9500), (300_000, 9500), (600_000, 9100)], &["600000 raise 9000"]);
        // At the limit is not above it: the window resets.
        check(&[r90], &[(0, 9500), (300_000, 9000), (600_000, 9500), (900_000, 9500)], &[]);
        check(&[r90], &[(0, 9500), (300_000, 8000), (600_000, 9500), (1_200_000, 9500)], &["1200000 raise 9000"]);
        // Clears at the first sample at or below the limit; a new run fires again.
        check(
            &[r90],
            &[(0, 9500), (600_000, 9500), (700_000, 9600), (800_000, 9000), (900_000, 9900), (1_500_000, 9900)],
            &["600000 raise 9000", "800000 clear", "1500000 raise 9000"],
        );
        // A zero duration fires on the first sample above.
        check(&[rule(5000, 0)], &[(0, 5000), (1, 5001), (2, 4000)], &["1 raise 5000", "2 clear"]);
        // Two rules: the alarm stays active while either holds.
        check(
            &[r90, rule(7000, 60_000)],
            &[(0, 8000), (60_000, 8000), (120_000, 9500), (720_000, 9500), (780_000, 7500), (840_000, 6000)],
            &["60000 raise 7000", "840000 clear"],
        );
    }

    #[test]
    fn state_is_small() {
        assert_eq!(std::mem::size_of::<ThresholdState>(), 40);
    }

    #[test]
    fn memory_share_and_limits() {
        let sample = |used, total| ResourceSample { cpu_centi_pct: 0, mem_used_bytes: used, mem_total_bytes: total };
        assert_eq!(Metric::Memory.value(&sample(3, 4)), Some(7500));
        assert_eq!(Metric::Memory.value(&sample(0, 0)), None);
        assert_eq!(Metric::Memory.value(&sample(u64::MAX, u64::MAX)), Some(10_000));
        let many: Vec<_> = (0..5).map(|i| rule(1000 * i, 0)).collect();
        assert!(MetricRules::compile(Metric::Cpu, many.iter(), None, 1).is_err());
        assert_eq!(rule(9050, 600_000).describe(9512), "CPU above 90.50 % for 10 min (latest sample 95.12 %).");
    }
}
