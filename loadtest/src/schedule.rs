//! The open-model send schedule of one device (sans-I/O).
//!
//! Intended send times are fixed when the device's schedule starts: data ticks every
//! `burst / rate` seconds and heartbeats every heartbeat interval, each with a random initial
//! phase. They never slip when the device falls behind: frames that could not be generated yet
//! (the device's unacknowledged window is full) stay owed and are generated later with their
//! original intended time, so acknowledgement latency counts the wait (coordinated omission).
//!
//! Times are microseconds since the start of the run.

use rand::Rng;

use crate::config::{MessageKind, MessageMix};

/// The fixed parameters of every device's schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScheduleParams {
    /// Data frames per second (0 = heartbeats only).
    pub rate_per_s: f64,
    /// Data frames per tick.
    pub burst: u32,
    /// Heartbeat interval in microseconds.
    pub heartbeat_interval_us: u64,
}

impl ScheduleParams {
    /// Microseconds between data ticks, `None` when the device sends no data.
    fn tick_interval_us(&self) -> Option<f64> {
        (self.rate_per_s > 0.0).then(|| f64::from(self.burst.max(1)) * 1e6 / self.rate_per_s)
    }
}

/// One frame the schedule wants sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// When the open model intended to send it.
    pub intended_us: u64,
    /// A periodic heartbeat (`true`) or a data frame whose kind is drawn from the mix.
    pub heartbeat: bool,
}

/// Where one device is in its schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    burst: u32,
    /// Intended time of data tick 0.
    data_base_us: u64,
    tick_interval_us: Option<f64>,
    /// Data frames generated so far (tick = generated / burst).
    data_generated: u64,
    /// Intended time of the next heartbeat.
    next_heartbeat_us: u64,
    heartbeat_interval_us: u64,
}

impl Schedule {
    /// A schedule starting at `start_us` with random initial phases.
    pub fn new(params: ScheduleParams, start_us: u64, rng: &mut impl Rng) -> Self {
        let tick_interval_us = params.tick_interval_us();
        let data_phase = tick_interval_us.map_or(0, |i| rng.random_range(0.0..i) as u64);
        let heartbeat_phase = rng.random_range(0..params.heartbeat_interval_us.max(1));
        Schedule::with_phases(params, start_us, data_phase, heartbeat_phase)
    }

    /// A schedule with the given phases (offsets of the first data tick and first heartbeat).
    pub fn with_phases(params: ScheduleParams, start_us: u64, data_phase_us: u64, heartbeat_phase_us: u64) -> Self {
        Schedule {
            burst: params.burst.max(1),
            data_base_us: start_us + data_phase_us,
            tick_interval_us: params.tick_interval_us(),
            data_generated: 0,
            next_heartbeat_us: if params.heartbeat_interval_us == 0 { u64::MAX } else { start_us + heartbeat_phase_us },
            heartbeat_interval_us: params.heartbeat_interval_us,
        }
    }

    fn data_tick_us(&self, tick: u64) -> u64 {
        match self.tick_interval_us {
            Some(interval) => self.data_base_us.saturating_add((tick as f64 * interval) as u64),
            None => u64::MAX,
        }
    }

    fn next_data_us(&self) -> u64 {
        self.data_tick_us(self.data_generated / u64::from(self.burst))
    }

    /// The intended time of the next frame owed, `u64::MAX` if none will ever be.
    pub fn next_due_us(&self) -> u64 {
        self.next_data_us().min(self.next_heartbeat_us)
    }

    /// The next frame if it is due at or before `horizon_us`, advancing the schedule past it.
    ///
    /// Call it only when the frame can be taken (the device has room); otherwise it stays owed.
    pub fn pop_due(&mut self, horizon_us: u64) -> Option<Due> {
        let data = self.next_data_us();
        let heartbeat = self.next_heartbeat_us;
        if data.min(heartbeat) > horizon_us {
            return None;
        }
        if heartbeat < data {
            self.next_heartbeat_us = heartbeat.saturating_add(self.heartbeat_interval_us);
            Some(Due { intended_us: heartbeat, heartbeat: true })
        } else {
            self.data_generated += 1;
            Some(Due { intended_us: data, heartbeat: false })
        }
    }

    /// Frames intended at or before `until_us` that have not been popped (reported as not sent
    /// when the run ends with a device still behind).
    pub fn owed(&self, until_us: u64) -> u64 {
        let heartbeats = if self.next_heartbeat_us > until_us {
            0
        } else {
            (until_us - self.next_heartbeat_us) / self.heartbeat_interval_us.max(1) + 1
        };
        let data = match self.tick_interval_us {
            Some(interval) if until_us >= self.data_base_us => {
                // Ticks k with base + floor(k * interval) <= until, so k < (until - base + 1) / interval.
                let ticks = ((until_us - self.data_base_us + 1) as f64 / interval).ceil() as u64;
                (ticks * u64::from(self.burst)).saturating_sub(self.data_generated)
            }
            _ => 0,
        };
        heartbeats + data
    }
}

/// Draws the kind of a due frame: periodic heartbeats are heartbeats, data frames follow the mix.
pub fn kind_of(due: Due, mix: &MessageMix, rng: &mut impl Rng) -> MessageKind {
    if due.heartbeat { MessageKind::Heartbeat } else { mix.draw(rng) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(rate: f64, burst: u32, heartbeat_s: u64) -> ScheduleParams {
        ScheduleParams { rate_per_s: rate, burst, heartbeat_interval_us: heartbeat_s * 1_000_000 }
    }

    fn drain(s: &mut Schedule, horizon: u64) -> Vec<Due> {
        std::iter::from_fn(|| s.pop_due(horizon)).collect()
    }

    #[test]
    fn data_and_heartbeats_interleave_in_time_order() {
        // 2 frames/s from t=0.1s, heartbeats every 1 s from t=0.3s.
        let mut s = Schedule::with_phases(params(2.0, 1, 1), 0, 100_000, 300_000);
        let got: Vec<(u64, bool)> =
            drain(&mut s, 1_350_000).into_iter().map(|d| (d.intended_us, d.heartbeat)).collect();
        assert_eq!(got, [(100_000, false), (300_000, true), (600_000, false), (1_100_000, false), (1_300_000, true)]);
        assert_eq!(s.next_due_us(), 1_600_000);
    }

    #[test]
    fn the_schedule_does_not_slip_when_the_device_falls_behind() {
        let mut s = Schedule::with_phases(params(10.0, 1, 3600), 5_000_000, 0, 3_599_000_000);
        // Nothing popped for a whole second: ten frames are owed, with their original times.
        assert_eq!(s.owed(5_950_000), 10);
        let got: Vec<u64> = drain(&mut s, 5_950_000).into_iter().map(|d| d.intended_us).collect();
        assert_eq!(got, (0..10).map(|k| 5_000_000 + k * 100_000).collect::<Vec<_>>());
        assert_eq!(s.owed(5_950_000), 0);
    }

    #[test]
    fn bursts_share_the_tick_time_and_keep_the_rate() {
        // 4 frames/s in bursts of 2: a tick every 0.5 s.
        let mut s = Schedule::with_phases(params(4.0, 2, 3600), 0, 0, 3_599_000_000);
        let got: Vec<u64> = drain(&mut s, 1_000_000).into_iter().map(|d| d.intended_us).collect();
        assert_eq!(got, [0, 0, 500_000, 500_000, 1_000_000, 1_000_000]);
        // A half-popped tick keeps the rest owed at the same time.
        let mut s = Schedule::with_phases(params(4.0, 2, 3600), 0, 0, 3_599_000_000);
        assert_eq!(s.pop_due(0).map(|d| d.intended_us), Some(0));
        assert_eq!(s.owed(0), 1);
        assert_eq!(s.next_due_us(), 0);
    }

    #[test]
    fn zero_rate_means_heartbeats_only() {
        let mut s = Schedule::with_phases(params(0.0, 1, 30), 0, 0, 0);
        let got = drain(&mut s, 65_000_000);
        assert!(got.iter().all(|d| d.heartbeat));
        assert_eq!(got.len(), 3);
        assert_eq!(s.owed(65_000_000), 0);
    }

    #[test]
    fn owed_matches_popping_for_fractional_intervals() {
        for rate in [3.0, 7.0, 0.7, 13.3] {
            let p = params(rate, 3, 5);
            for until in [0, 1, 333_333, 1_000_000, 4_999_999, 12_345_678] {
                let mut s = Schedule::with_phases(p, 1_000, 17, 4_000_000);
                let owed = s.owed(until);
                assert_eq!(owed, drain(&mut s, until).len() as u64, "rate {rate} until {until}");
            }
        }
    }

    #[test]
    fn random_phases_stay_within_one_interval() {
        let mut rng = rand::rng();
        for _ in 0..100 {
            let s = Schedule::new(params(2.0, 1, 30), 1_000_000, &mut rng);
            assert!((1_000_000..1_500_000).contains(&s.next_data_us()));
            assert!((1_000_000..31_000_000).contains(&s.next_heartbeat_us));
        }
    }
}
