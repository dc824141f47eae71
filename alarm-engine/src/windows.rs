//! Maintenance windows (issue 18, item 2): when alarms of an enterprise are recorded but not
//! notified, and the engine's bookkeeping of the alarms a window holds back.
//!
//! A [`MaintenanceWindow`] selects devices (the whole enterprise, or a device list: the shell
//! resolves sites and groups to their devices) and alarm types (empty: every type), and is active
//! - once, from `start` to `end`;
//! - recurring, on some weekdays (or every day) from a local time for a duration, in the
//!   enterprise's time zone (local times that do not exist or happen twice follow the scheduled
//!   tasks' rule, RFC 5545's and Temporal's `compatible`: a skipped 02:30 starts at 03:30, a
//!   repeated one at the earlier instant);
//! - while a scheduled task runs (a firmware rollout): the shell says when the task starts and
//!   finishes ([`crate::AlarmEngine::handle_task_running`]).
//!
//! An alarm whose activation starts inside an active window that selects it is *held*: the
//! engine records it as usual but plans no firing notification. When the window ends (or is
//! edited or deleted so that it no longer holds the alarm), an alarm still active and not
//! acknowledged is notified then, through its groups as if it had just fired; one that cleared
//! meanwhile is notified neither way (it never fired for its receivers). An alarm still selected
//! by another active window at that time stays held, by that window.
//!
//! This module does no I/O and reads no clock: the zone of a recurring window is a
//! [`TimeZone`] the shell looked up.

use std::collections::{BTreeSet, HashMap, HashSet};

use fleetpulse_proto::{AlarmTypeCode, DeviceId, EnterpriseId, TaskId, UnixMillis, WindowId};
use jiff::Timestamp;
use jiff::civil::Time;
use jiff::tz::TimeZone;

use crate::EngineError;

/// Most maintenance windows one enterprise may have.
pub const MAX_WINDOWS_PER_ENTERPRISE: usize = 100;
/// Most devices one window may list.
pub const MAX_WINDOW_DEVICES: usize = 10_000;
/// Longest one-off window: 31 days.
pub const MAX_ONCE_MS: i64 = 31 * DAY_MS;
/// Longest occurrence of a recurring window: 7 days.
pub const MAX_RECURRING_MS: u64 = 7 * 86_400_000;

const DAY_MS: i64 = 86_400_000;

/// Which devices a window selects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WindowDevices {
    /// Every device of the enterprise.
    Enterprise,
    /// These devices (a site's or a group's devices, resolved by the shell, or a list).
    Listed(BTreeSet<DeviceId>),
}

/// When a window is active.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WindowSchedule {
    /// From `start` (inclusive) to `end` (exclusive).
    Once {
        /// Start.
        start: UnixMillis,
        /// End.
        end: UnixMillis,
    },
    /// On `weekdays` (ISO numbers, Monday = 1; empty: every day) from `hour:minute` local time
    /// in `zone`, for `duration_ms`.
    Recurring {
        /// ISO weekdays the window starts on; empty for every day.
        weekdays: Vec<u8>,
        /// Local start hour, 0–23.
        hour: u8,
        /// Local start minute, 0–59.
        minute: u8,
        /// Length of each occurrence (at most [`MAX_RECURRING_MS`]).
        duration_ms: u64,
        /// The enterprise's time zone.
        zone: TimeZone,
    },
    /// While this scheduled task runs.
    WhileTask(TaskId),
}

/// A maintenance window, in the engine's form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaintenanceWindow {
    /// Its id.
    pub id: WindowId,
    /// The enterprise it belongs to.
    pub enterprise_id: EnterpriseId,
    /// A disabled window holds nothing back.
    pub enabled: bool,
    /// The devices it selects.
    pub devices: WindowDevices,
    /// The alarm types it selects; empty selects every type.
    pub alarm_types: Vec<AlarmTypeCode>,
    /// When it is active.
    pub schedule: WindowSchedule,
}

/// Until when an active window lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum WindowEnd {
    /// Until this time.
    At(UnixMillis),
    /// Until its task finishes (unknown yet; later than any time).
    TaskFinishes,
}

impl MaintenanceWindow {
    /// Whether the window selects alarms of `code` on `device` (whatever the time).
    pub fn selects(&self, device: DeviceId, code: AlarmTypeCode) -> bool {
        self.enabled
            && (self.alarm_types.is_empty() || self.alarm_types.contains(&code))
            && match &self.devices {
                WindowDevices::Enterprise => true,
                WindowDevices::Listed(devices) => devices.contains(&device),
            }
    }

    /// When the window active at `at` ends, or `None` if it is not active at `at`;
    /// `running` says whether a task runs.
    pub fn active_at(&self, at: UnixMillis, running: impl Fn(TaskId) -> bool) -> Option<WindowEnd> {
        match &self.schedule {
            WindowSchedule::Once { start, end } => (*start <= at && at < *end).then_some(WindowEnd::At(*end)),
            WindowSchedule::WhileTask(task) => running(*task).then_some(WindowEnd::TaskFinishes),
            WindowSchedule::Recurring { weekdays, hour, minute, duration_ms, zone } => {
                recurring_end(weekdays, *hour, *minute, *duration_ms, zone, at).map(WindowEnd::At)
            }
        }
    }

    /// Checks the bounds (see the constants) and that it belongs to `enterprise`.
    pub fn validate(&self, enterprise: EnterpriseId) -> Result<(), EngineError> {
        let invalid = |reason: &'static str| Err(EngineError::InvalidWindow { window: self.id, reason });
        if self.enterprise_id != enterprise {
            return invalid("it belongs to another enterprise");
        }
        if let WindowDevices::Listed(devices) = &self.devices
            && devices.len() > MAX_WINDOW_DEVICES
        {
            return invalid("it lists more than 10000 devices");
        }
        match &self.schedule {
            WindowSchedule::Once { start, end } if end <= start => invalid("it ends before it starts"),
            WindowSchedule::Once { start, end } if end.0.saturating_sub(start.0) > MAX_ONCE_MS => {
                invalid("a one-off window lasts at most 31 days")
            }
            WindowSchedule::Recurring { weekdays, hour, minute, duration_ms, .. } => {
                if weekdays.iter().any(|d| !(1..=7).contains(d)) {
                    invalid("weekdays are 1 (Monday) to 7 (Sunday)")
                } else if *hour > 23 || *minute > 59 {
                    invalid("the start is not a time of day")
                } else if *duration_ms == 0 || *duration_ms > MAX_RECURRING_MS {
                    invalid("a recurring window lasts between a millisecond and 7 days")
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }
}

/// The end of the occurrence of a recurring window that covers `at` (the latest-starting one
/// when occurrences overlap), if any.
fn recurring_end(
    weekdays: &[u8],
    hour: u8,
    minute: u8,
    duration_ms: u64,
    zone: &TimeZone,
    at: UnixMillis,
) -> Option<UnixMillis> {
    let time = Time::new(i8::try_from(hour).ok()?, i8::try_from(minute).ok()?, 0, 0).ok()?;
    let duration = i64::try_from(duration_ms).ok()?;
    let today = Timestamp::from_millisecond(at.0).ok()?.to_zoned_datetime(zone.clone()).date();
    // An occurrence covering `at` started at most `duration` before it; one day more for a
    // local date ahead of or behind the instant.
    let days_back = duration / DAY_MS + 1;
    (-days_back..=1).rev().find_map(|offset| {
        let date = today.checked_add(jiff::Span::new().days(offset)).ok()?;
        let weekday = u8::try_from(date.weekday().to_monday_one_offset()).ok()?;
        if !weekdays.is_empty() && !weekdays.contains(&weekday) {
            return None;
        }
        let start = zone.to_ambiguous_zoned_datetime(date.to_datetime(time)).compatible().ok()?;
        let start = start.timestamp().as_millisecond();
        let end = start.saturating_add(duration);
        (start <= at.0 && at.0 < end).then_some(UnixMillis(end))
    })
}

/// What a window did to an alarm's notification ([`crate::Action::Maintenance`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaintenanceStep {
    /// Its firing notification is held back until the window ends.
    Suppressed {
        /// When the window ends.
        until: WindowEnd,
    },
    /// The window ended with the alarm still active: its firing notification is planned now.
    Released,
    /// The window ended with the alarm acknowledged: it is not notified.
    Dropped,
}

/// An alarm a window holds back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Hold {
    pub(crate) enterprise: EnterpriseId,
    /// The activation held (a later activation is not this hold's).
    pub(crate) activation: UnixMillis,
    pub(crate) window: WindowId,
    pub(crate) end: WindowEnd,
}

/// The engine's windows and the alarms they hold. Bounded: windows per enterprise
/// ([`MAX_WINDOWS_PER_ENTERPRISE`]), one hold per active alarm at most, running tasks only
/// those some window is tied to.
#[derive(Debug, Default)]
pub(crate) struct WindowBook {
    windows: HashMap<EnterpriseId, Vec<MaintenanceWindow>>,
    running: HashSet<TaskId>,
    holds: HashMap<(DeviceId, AlarmTypeCode), Hold>,
    /// (end, device, type) of the holds with a known end.
    timers: BTreeSet<(UnixMillis, DeviceId, AlarmTypeCode)>,
}

impl WindowBook {
    /// The window that holds back an alarm of `code` on `device` raised at `at`, and its end:
    /// of the active windows selecting it, the one lasting longest (then the lowest id).
    pub(crate) fn suppressing(
        &self,
        at: UnixMillis,
        enterprise: EnterpriseId,
        device: DeviceId,
        code: AlarmTypeCode,
    ) -> Option<(WindowId, WindowEnd)> {
        let windows = self.windows.get(&enterprise)?;
        windows
            .iter()
            .filter(|w| w.selects(device, code))
            .filter_map(|w| Some((w.active_at(at, |t| self.running.contains(&t))?, w.id)))
            .max_by(|(a_end, a_id), (b_end, b_id)| a_end.cmp(b_end).then(b_id.cmp(a_id)))
            .map(|(end, id)| (id, end))
    }

    /// Holds the alarm until `hold.end`.
    pub(crate) fn hold(&mut self, device: DeviceId, code: AlarmTypeCode, hold: Hold) {
        self.release(device, code);
        if let WindowEnd::At(end) = hold.end {
            self.timers.insert((end, device, code));
        }
        self.holds.insert((device, code), hold);
    }

    /// Forgets the alarm's hold (it cleared, or it is being released); the hold it had.
    pub(crate) fn release(&mut self, device: DeviceId, code: AlarmTypeCode) -> Option<Hold> {
        let hold = self.holds.remove(&(device, code))?;
        if let WindowEnd::At(end) = hold.end {
            self.timers.remove(&(end, device, code));
        }
        Some(hold)
    }

    /// The earliest end of a hold.
    pub(crate) fn next_deadline(&self) -> Option<UnixMillis> {
        self.timers.first().map(|&(end, _, _)| end)
    }

    /// Removes and returns the holds whose window ended at or before `now`.
    pub(crate) fn take_ended(&mut self, now: UnixMillis) -> Vec<(DeviceId, AlarmTypeCode, Hold)> {
        let mut ended = Vec::new();
        while let Some(&(end, device, code)) = self.timers.first() {
            if end > now {
                break;
            }
            self.timers.remove(&(end, device, code));
            if let Some(hold) = self.holds.remove(&(device, code)) {
                ended.push((device, code, hold));
            }
        }
        ended
    }

    /// Replaces the windows of `enterprise`; removes and returns every hold of the enterprise
    /// (the caller holds again what a window still holds back, and releases the rest).
    pub(crate) fn replace(
        &mut self,
        enterprise: EnterpriseId,
        windows: Vec<MaintenanceWindow>,
    ) -> Result<Vec<(DeviceId, AlarmTypeCode, Hold)>, EngineError> {
        if windows.len() > MAX_WINDOWS_PER_ENTERPRISE {
            return Err(EngineError::TooManyWindows { max: MAX_WINDOWS_PER_ENTERPRISE });
        }
        for w in &windows {
            w.validate(enterprise)?;
        }
        if windows.is_empty() {
            self.windows.remove(&enterprise);
        } else {
            self.windows.insert(enterprise, windows);
        }
        let tied: HashSet<TaskId> = self.tied_tasks().collect();
        self.running.retain(|t| tied.contains(t));
        let mut affected: Vec<(DeviceId, AlarmTypeCode)> =
            self.holds.iter().filter(|(_, h)| h.enterprise == enterprise).map(|(k, _)| *k).collect();
        // In a fixed order: the engine is deterministic.
        affected.sort_unstable();
        Ok(affected.into_iter().filter_map(|(d, c)| Some((d, c, self.release(d, c)?))).collect())
    }

    /// A task started or finished. When it finished, removes and returns the holds of the
    /// windows tied to it.
    pub(crate) fn task_running(&mut self, task: TaskId, running: bool) -> Vec<(DeviceId, AlarmTypeCode, Hold)> {
        if running {
            if self.tied_tasks().any(|t| t == task) {
                self.running.insert(task);
            }
            return Vec::new();
        }
        if !self.running.remove(&task) {
            return Vec::new();
        }
        let windows: HashSet<WindowId> = self
            .windows
            .values()
            .flatten()
            .filter(|w| w.schedule == WindowSchedule::WhileTask(task))
            .map(|w| w.id)
            .collect();
        let mut affected: Vec<(DeviceId, AlarmTypeCode)> =
            self.holds.iter().filter(|(_, h)| windows.contains(&h.window)).map(|(k, _)| *k).collect();
        affected.sort_unstable();
        affected.into_iter().filter_map(|(d, c)| Some((d, c, self.release(d, c)?))).collect()
    }

    /// The tasks windows are tied to, each once, in order.
    pub(crate) fn tied_task_ids(&self) -> Vec<TaskId> {
        let tasks: BTreeSet<TaskId> = self.tied_tasks().collect();
        tasks.into_iter().collect()
    }

    /// Alarms currently held.
    pub(crate) fn held(&self) -> usize {
        self.holds.len()
    }

    fn tied_tasks(&self) -> impl Iterator<Item = TaskId> + '_ {
        self.windows.values().flatten().filter_map(|w| match w.schedule {
            WindowSchedule::WhileTask(task) => Some(task),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> UnixMillis {
        UnixMillis(s.parse::<Timestamp>().expect("an instant").as_millisecond())
    }

    fn berlin() -> TimeZone {
        jiff::tz::db().get("Europe/Berlin").expect("bundled zone")
    }

    fn nightly(weekdays: &[u8], hour: u8, minute: u8, hours: u64) -> MaintenanceWindow {
        MaintenanceWindow {
            id: WindowId(1),
            enterprise_id: EnterpriseId(1),
            enabled: true,
            devices: WindowDevices::Enterprise,
            alarm_types: vec![],
            schedule: WindowSchedule::Recurring {
                weekdays: weekdays.to_vec(),
                hour,
                minute,
                duration_ms: hours * 3_600_000,
                zone: berlin(),
            },
        }
    }

    /// Each case: window, instant → its end (UTC) if active then.
    #[test]
    fn recurring_windows_in_the_enterprise_zone() {
        let end = |w: &MaintenanceWindow, t: &str| match w.active_at(at(t), |_| false) {
            Some(WindowEnd::At(end)) => Timestamp::from_millisecond(end.0).expect("in range").to_string(),
            Some(WindowEnd::TaskFinishes) => "task".into(),
            None => "inactive".into(),
        };
        let daily = nightly(&[], 22, 0, 4);
        let cases: &[(&str, &MaintenanceWindow, &str, &str)] = &[
            ("before the start (21:59 local)", &daily, "2026-01-10T20:59:00Z", "inactive"),
            ("at the start", &daily, "2026-01-10T21:00:00Z", "2026-01-11T01:00:00Z"),
            (
                "after midnight local, the day before's occurrence",
                &daily,
                "2026-01-11T00:30:00Z",
                "2026-01-11T01:00:00Z",
            ),
            ("the end is exclusive", &daily, "2026-01-11T01:00:00Z", "inactive"),
            ("summer: the offset follows the zone", &daily, "2026-07-10T20:00:00Z", "2026-07-11T00:00:00Z"),
        ];
        for (name, w, t, want) in cases {
            assert_eq!(end(w, t), *want, "{name}");
        }
        // Saturdays 23:00 for 30 hours: covers Sunday, not Monday afternoon.
        let weekend = nightly(&[6], 23, 0, 30);
        assert_eq!(end(&weekend, "2026-01-11T12:00:00Z"), "2026-01-12T04:00:00Z", "Sunday noon");
        assert_eq!(end(&weekend, "2026-01-12T12:00:00Z"), "inactive", "Monday noon");
        assert_eq!(end(&weekend, "2026-01-09T23:30:00Z"), "inactive", "Saturday 00:30 local: before Saturday 23:00");
        // 02:30 on the day the clock jumps from 02:00 to 03:00 starts at 03:30 CEST.
        let spring = nightly(&[], 2, 30, 1);
        assert_eq!(end(&spring, "2026-03-29T01:10:00Z"), "inactive", "03:10 CEST, before 03:30");
        assert_eq!(end(&spring, "2026-03-29T01:40:00Z"), "2026-03-29T02:30:00Z", "03:40 CEST");
    }

    #[test]
    fn selection_once_and_task_windows() {
        let mut w = nightly(&[], 0, 0, 1);
        w.schedule = WindowSchedule::Once { start: UnixMillis(1_000), end: UnixMillis(2_000) };
        w.devices = WindowDevices::Listed([DeviceId(7)].into());
        w.alarm_types = vec![AlarmTypeCode(202)];
        assert!(w.selects(DeviceId(7), AlarmTypeCode(202)));
        assert!(!w.selects(DeviceId(8), AlarmTypeCode(202)), "another device");
        assert!(!w.selects(DeviceId(7), AlarmTypeCode(105)), "another type");
        assert_eq!(w.active_at(UnixMillis(999), |_| true), None);
        assert_eq!(w.active_at(UnixMillis(1_000), |_| true), Some(WindowEnd::At(UnixMillis(2_000))));
        assert_eq!(w.active_at(UnixMillis(2_000), |_| true), None);
        w.enabled = false;
        assert!(!w.selects(DeviceId(7), AlarmTypeCode(202)), "disabled");
        w.schedule = WindowSchedule::WhileTask(TaskId(3));
        assert_eq!(w.active_at(UnixMillis(0), |t| t == TaskId(3)), Some(WindowEnd::TaskFinishes));
        assert_eq!(w.active_at(UnixMillis(0), |_| false), None);
    }

    #[test]
    fn bounds_are_checked() {
        let e = EnterpriseId(1);
        let with = |schedule| MaintenanceWindow { schedule, ..nightly(&[], 0, 0, 1) };
        let once = |start, end| with(WindowSchedule::Once { start: UnixMillis(start), end: UnixMillis(end) });
        let recurring = |weekdays: Vec<u8>, hour, minute, duration_ms| {
            with(WindowSchedule::Recurring { weekdays, hour, minute, duration_ms, zone: berlin() })
        };
        assert!(once(0, 1).validate(e).is_ok());
        assert!(once(0, MAX_ONCE_MS).validate(e).is_ok());
        for bad in [
            once(5, 5),
            once(0, MAX_ONCE_MS + 1),
            recurring(vec![0], 1, 0, 1),
            recurring(vec![8], 1, 0, 1),
            recurring(vec![], 24, 0, 1),
            recurring(vec![], 1, 60, 1),
            recurring(vec![], 1, 0, 0),
            recurring(vec![], 1, 0, MAX_RECURRING_MS + 1),
        ] {
            assert!(matches!(bad.validate(e), Err(EngineError::InvalidWindow { .. })), "{:?}", bad.schedule);
        }
        assert!(once(0, 1).validate(EnterpriseId(2)).is_err(), "another enterprise's window");
    }
}
