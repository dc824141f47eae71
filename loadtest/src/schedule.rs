//! The open-model send schedule of one device (sans-I/O).
//!
//! Intended send times are fixed when the device's schedule starts: data ticks every
//! `burst / rate` seconds, heartbeats every heartbeat interval, and injected alarm events (a raise,
//! then its clear half an interval later) every `1 / alarm rate` seconds, each with a random
//! initial phase. They never slip when the device falls behind: frames that could not be generated
//! yet (the device's unacknowledged window is full) stay owed and are generated later with their
//! original intended time, so acknowledgement latency counts the wait (coordinated omission).
//!
//! Times are microseconds since the start of the run.

use rand::Rng;

use crate::alarms::DeviceTokens;
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
    /// Injected alarm raises per second (each followed by its clear; 0 = none).
    pub alarm_rate_per_s: f64,
}

impl ScheduleParams {
    /// Microseconds between data ticks, `None` when the device sends no data.
    fn tick_interval_us(&self) -> Option<f64> {
        (self.rate_per_s > 0.0).then(|| f64::from(self.burst.max(1)) * 1e6 / self.rate_per_s)
    }

    /// Microseconds between injected alarm events (raise to clear, clear to raise), `None` for none.
    fn alarm_step_us(&self) -> Option<f64> {
        (self.alarm_rate_per_s > 0.0).then(|| 1e6 / self.alarm_rate_per_s / 2.0)
    }
}

/// Which stream a due frame comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// A data frame whose kind is drawn from the mix.
    Data,
    /// A periodic heartbeat.
    Heartbeat,
    /// Injected alarm event number `n` of this device: even ones raise, odd ones clear.
    Alarm(u64),
}

/// One frame the schedule wants sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// When the open model intended to send it.
    pub intended_us: u64,
    /// Where it comes from.
    pub slot: Slot,
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
    /// Intended time of injected alarm event 0.
    alarm_base_us: u64,
    alarm_step_us: Option<f64>,
    /// Injected alarm events generated so far.
    alarms_generated: u64,
}

/// Intended time of event `n` of a stream starting at `base_us` with `interval_us` between events.
fn event_us(base_us: u64, interval_us: Option<f64>, n: u64) -> u64 {
    match interval_us {
        Some(interval) => base_us.saturating_add((n as f64 * interval) as u64),
        None => u64::MAX,
    }
}

/// Events of such a stream intended at or before `until_us`: those `k` with
/// `base + floor(k * interval) <= until`, so `k < (until - base + 1) / interval`.
fn events_until(base_us: u64, interval_us: Option<f64>, until_us: u64) -> u64 {
    match interval_us {
        Some(interval) if until_us >= base_us => ((until_us - base_us + 1) as f64 / interval).ceil() as u64,
        _ => 0,
    }
}

impl Schedule {
    /// A schedule starting at `start_us` with random initial phases.
    pub fn new(params: ScheduleParams, start_us: u64, rng: &mut impl Rng) -> Self {
        let tick_interval_us = params.tick_interval_us();
        let data_phase = tick_interval_us.map_or(0, |i| rng.random_range(0.0..i) as u64);
        let heartbeat_phase = rng.random_range(0..params.heartbeat_interval_us.max(1));
        // Anywhere in one raise interval (two steps).
        let alarm_phase = params.alarm_step_us().map_or(0, |s| rng.random_range(0.0..2.0 * s) as u64);
        Schedule::with_phases(params, start_us, data_phase, heartbeat_phase, alarm_phase)
    }

    /// A schedule with the given phases (offsets of the first data tick, heartbeat and injected alarm).
    pub fn with_phases(
        params: ScheduleParams,
        start_us: u64,
        data_phase_us: u64,
        heartbeat_phase_us: u64,
        alarm_phase_us: u64,
    ) -> Self {
        Schedule {
            burst: params.burst.max(1),
            data_base_us: start_us + data_phase_us,
            tick_interval_us: params.tick_interval_us(),
            data_generated: 0,
            next_heartbeat_us: if params.heartbeat_interval_us == 0 { u64::MAX } else { start_us + heartbeat_phase_us },
            heartbeat_interval_us: params.heartbeat_interval_us,
            alarm_base_us: start_us + alarm_phase_us,
            alarm_step_us: params.alarm_step_us(),
            alarms_generated: 0,
        }
    }

    /// Moves the first heartbeat back by whole intervals to the earliest time at or after
    /// `from_us`: a device heartbeats from its connect, as a real one does, while its data waits
    /// for the run's warm-up to end. (Without heartbeats, a device connected early in a long
    /// warm-up sent nothing, hit the 60 s idle timeout and hand-shook again in the middle of the
    /// ramp.)
    pub fn with_heartbeats_from(mut self, from_us: u64) -> Self {
        let interval = self.heartbeat_interval_us;
        if interval > 0 && self.next_heartbeat_us != u64::MAX && from_us < self.next_heartbeat_us {
            self.next_heartbeat_us -= (self.next_heartbeat_us - from_us) / interval * interval;
        }
        self
    }

    fn next_data_us(&self) -> u64 {
        event_us(self.data_base_us, self.tick_interval_us, self.data_generated / u64::from(self.burst))
    }

    fn next_alarm_us(&self) -> u64 {
        event_us(self.alarm_base_us, self.alarm_step_us, self.alarms_generated)
    }

    /// The intended time of the next frame owed, `u64::MAX` if none will ever be.
    pub fn next_due_us(&self) -> u64 {
        self.next_data_us().min(self.next_heartbeat_us).min(self.next_alarm_us())
    }

    /// The next frame if it is due at or before `horizon_us`, advancing the schedule past it.
    ///
    /// Call it only when the frame can be taken (the device has room); otherwise it stays owed.
    pub fn pop_due(&mut self, horizon_us: u64) -> Option<Due> {
        let data = self.next_data_us();
        let heartbeat = self.next_heartbeat_us;
        let alarm = self.next_alarm_us();
        if data.min(heartbeat).min(alarm) > horizon_us {
            return None;
        }
        if alarm < data.min(heartbeat) {
            let n = self.alarms_generated;
            self.alarms_generated += 1;
            Some(Due { intended_us: alarm, slot: Slot::Alarm(n) })
        } else if heartbeat < data {
            self.next_heartbeat_us = heartbeat.saturating_add(self.heartbeat_interval_us);
            Some(Due { intended_us: heartbeat, slot: Slot::Heartbeat })
        } else {
            self.data_generated += 1;
            Some(Due { intended_us: data, slot: Slot::Data })
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
        let ticks = events_until(self.data_base_us, self.tick_interval_us, until_us);
        let data = (ticks * u64::from(self.burst)).saturating_sub(self.data_generated);
        let alarms =
            events_until(self.alarm_base_us, self.alarm_step_us, until_us).saturating_sub(self.alarms_generated);
        heartbeats + data + alarms
    }
}

/// The kind of a due frame: periodic heartbeats are heartbeats, data frames follow the mix, and
/// injected alarm events are numbered by the device's `tokens`.
pub fn kind_of(due: Due, mix: &MessageMix, tokens: DeviceTokens, rng: &mut impl Rng) -> MessageKind {
    match due.slot {
        Slot::Heartbeat => MessageKind::Heartbeat,
        Slot::Data => mix.draw(rng),
        Slot::Alarm(event) => tokens.kind(event),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_start_at_the_connect_and_keep_their_phase_while_data_waits_for_the_warm_up() {
        // Data and heartbeats from 100 s (the end of the warm-up), first heartbeat 7 s after it.
        let s = Schedule::with_phases(params(1.0, 1, 30), 100_000_000, 500_000, 7_000_000, 0)
            .with_heartbeats_from(20_000_000);
        assert_eq!(s.next_due_us(), 47_000_000, "the first heartbeat after the connect, on the same grid");
        let mut s = s;
        let due: Vec<_> = std::iter::from_fn(|| s.pop_due(100_600_000)).collect();
        let heartbeats: Vec<u64> = due.iter().filter(|d| d.slot == Slot::Heartbeat).map(|d| d.intended_us).collect();
        assert_eq!(heartbeats, vec![47_000_000, 77_000_000]);
        let data: Vec<u64> = due.iter().filter(|d| d.slot == Slot::Data).map(|d| d.intended_us).collect();
        assert_eq!(data, vec![100_500_000], "no data before the warm-up ends");
        // A connect after the first heartbeat changes nothing.
        let late =
            Schedule::with_phases(params(1.0, 1, 30), 100_000_000, 0, 7_000_000, 0).with_heartbeats_from(150_000_000);
        assert_eq!(late.next_heartbeat_us, 107_000_000);
    }

    fn params(rate: f64, burst: u32, heartbeat_s: u64) -> ScheduleParams {
        ScheduleParams {
            rate_per_s: rate,
            burst,
            heartbeat_interval_us: heartbeat_s * 1_000_000,
            alarm_rate_per_s: 0.0,
        }
    }

    fn drain(s: &mut Schedule, horizon: u64) -> Vec<Due> {
        std::iter::from_fn(|| s.pop_due(horizon)).collect()
    }

    #[test]
    fn data_and_heartbeats_interleave_in_time_order() {
        // 2 frames/s from t=0.1s, heartbeats every 1 s from t=0.3s.
        let mut s = Schedule::with_phases(params(2.0, 1, 1), 0, 100_000, 300_000, 0);
        let got: Vec<(u64, bool)> =
            drain(&mut s, 1_350_000).into_iter().map(|d| (d.intended_us, d.slot == Slot::Heartbeat)).collect();
        assert_eq!(got, [(100_000, false), (300_000, true), (600_000, false), (1_100_000, false), (1_300_000, true)]);
        assert_eq!(s.next_due_us(), 1_600_000);
    }

    #[test]
    fn the_schedule_does_not_slip_when_the_device_falls_behind() {
        let mut s = Schedule::with_phases(params(10.0, 1, 3600), 5_000_000, 0, 3_599_000_000, 0);
        // Nothing popped for a whole second: ten frames are owed, with their original times.
        assert_eq!(s.owed(5_950_000), 10);
        let got: Vec<u64> = drain(&mut s, 5_950_000).into_iter().map(|d| d.intended_us).collect();
        assert_eq!(got, (0..10).map(|k| 5_000_000 + k * 100_000).collect::<Vec<_>>());
        assert_eq!(s.owed(5_950_000), 0);
    }

    #[test]
    fn bursts_share_the_tick_time_and_keep_the_rate() {
        // 4 frames/s in bursts of 2: a tick every 0.5 s.
        let mut s = Schedule::with_phases(params(4.0, 2, 3600), 0, 0, 3_599_000_000, 0);
        let got: Vec<u64> = drain(&mut s, 1_000_000).into_iter().map(|d| d.intended_us).collect();
        assert_eq!(got, [0, 0, 500_000, 500_000, 1_000_000, 1_000_000]);
        // A half-popped tick keeps the rest owed at the same time.
        let mut s = Schedule::with_phases(params(4.0, 2, 3600), 0, 0, 3_599_000_000, 0);
        assert_eq!(s.pop_due(0).map(|d| d.intended_us), Some(0));
        assert_eq!(s.owed(0), 1);
        assert_eq!(s.next_due_us(), 0);
    }

    #[test]
    fn zero_rate_means_heartbeats_only() {
        let mut s = Schedule::with_phases(params(0.0, 1, 30), 0, 0, 0, 0);
        let got = drain(&mut s, 65_000_000);
        assert!(got.iter().all(|d| d.slot == Slot::Heartbeat));
        assert_eq!(got.len(), 3);
        assert_eq!(s.owed(65_000_000), 0);
    }

    #[test]
    fn owed_matches_popping_for_fractional_intervals() {
        for rate in [3.0, 7.0, 0.7, 13.3] {
            let p = params(rate, 3, 5);
            for until in [0, 1, 333_333, 1_000_000, 4_999_999, 12_345_678] {
                let mut s = Schedule::with_phases(p, 1_000, 17, 4_000_000, 0);
                let owed = s.owed(until);
                assert_eq!(owed, drain(&mut s, until).len() as u64, "rate {rate} until {until}");
            }
        }
    }

    #[test]
    fn injected_alarms_raise_and_clear_in_turn_between_the_other_frames() {
        // 1 raise/s from t=0.2 s: raise at 0.2, clear at 0.7, raise at 1.2, ...; data at 1 frame/s
        // from t=0; heartbeats every 2 s from t=1.1 s.
        let p = ScheduleParams { alarm_rate_per_s: 1.0, ..params(1.0, 1, 2) };
        let mut s = Schedule::with_phases(p, 0, 0, 1_100_000, 200_000);
        let got: Vec<(u64, Slot)> = drain(&mut s, 2_200_000).into_iter().map(|d| (d.intended_us, d.slot)).collect();
        assert_eq!(
            got,
            [
                (0, Slot::Data),
                (200_000, Slot::Alarm(0)),
                (700_000, Slot::Alarm(1)),
                (1_000_000, Slot::Data),
                (1_100_000, Slot::Heartbeat),
                (1_200_000, Slot::Alarm(2)),
                (1_700_000, Slot::Alarm(3)),
                (2_000_000, Slot::Data),
                (2_200_000, Slot::Alarm(4)),
            ]
        );
        assert_eq!(s.next_due_us(), 2_700_000);
        let tokens = DeviceTokens { index: 3, devices: 10 };
        let mix = MessageMix::default();
        let mut rng = rand::rng();
        let kinds: Vec<MessageKind> = got
            .iter()
            .filter(|(_, slot)| matches!(slot, Slot::Alarm(_)))
            .map(|&(intended_us, slot)| kind_of(Due { intended_us, slot }, &mix, tokens, &mut rng))
            .collect();
        assert_eq!(
            kinds,
            [
                MessageKind::InjectedAlarm { n: 3, clear: false },
                MessageKind::InjectedAlarm { n: 3, clear: true },
                MessageKind::InjectedAlarm { n: 13, clear: false },
                MessageKind::InjectedAlarm { n: 13, clear: true },
                MessageKind::InjectedAlarm { n: 23, clear: false },
            ]
        );
    }

    #[test]
    fn owed_counts_injected_alarms_too() {
        let p = ScheduleParams { alarm_rate_per_s: 3.0, ..params(0.0, 1, 3600) };
        for until in [0, 1, 166_666, 166_667, 1_000_000, 4_321_000] {
            let mut s = Schedule::with_phases(p, 0, 0, 3_599_000_000, 1);
            let owed = s.owed(until);
            assert_eq!(owed, drain(&mut s, until).len() as u64, "until {until}");
        }
    }

    #[test]
    fn random_phases_stay_within_one_interval() {
        let mut rng = rand::rng();
        for _ in 0..100 {
            let s = Schedule::new(params(2.0, 1, 30), 1_000_000, &mut rng);
            assert!((1_000_000..1_500_000).contains(&s.next_data_us()));
            assert!((1_000_000..31_000_000).contains(&s.next_heartbeat_us));
            assert_eq!(s.next_alarm_us(), u64::MAX, "no injected alarms");
            let p = ScheduleParams { alarm_rate_per_s: 0.5, ..params(2.0, 1, 30) };
            let s = Schedule::new(p, 1_000_000, &mut rng);
            assert!((1_000_000..3_000_000).contains(&s.next_alarm_us()));
        }
    }
}
