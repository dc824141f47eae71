//! The sans-I/O core of scheduled tasks (TSK-1): the next occurrence of a schedule in a time
//! zone, and what the scheduler does with a due task at `now`. No clock, no store: time is an
//! input, so the tests below pin DST changes with fixed instants.
//!
//! Local times follow RFC 5545 and Temporal's `compatible` rule:
//! - a local time that does not exist (the clock jumps over it, spring forward) runs that
//!   many minutes after the jump: 02:30 on a day the clock jumps from 02:00 to 03:00 runs
//!   at 03:30;
//! - a local time that happens twice (the clock falls back) runs once, at the earlier instant.
//!
//! A run is *missed* when it is found more than `late_after` after its time (no scheduler ran:
//! the server was down). Then a task with [`MissedRuns::RunOnce`] runs once now, and one with
//! [`MissedRuns::Skip`] records that run as missed; either way the next run is the first
//! occurrence after `now`, so a server down for three days runs a daily task once, not three
//! times.

use fleetpulse_proto::UnixMillis;
use fleetpulse_store::{MissedRuns, Task, TaskSchedule};
use jiff::Timestamp;
use jiff::civil::Time;
use jiff::tz::TimeZone;

/// Days a weekly schedule looks ahead for its next day (a week and a day: every weekday and
/// the day before the start, in case a local date is behind the instant).
const LOOK_AHEAD_DAYS: i64 = 8;

/// The time zone of this IANA name (`"UTC"` for an empty one), from the system's tzdb or the
/// bundled copy; `Err` with a message naming it when no database knows it.
pub(crate) fn time_zone(name: &str) -> Result<TimeZone, String> {
    let name = if name.is_empty() { "UTC" } else { name };
    jiff::tz::db().get(name).map_err(|_| format!("unknown time zone {name:?} (an IANA name such as Europe/Berlin)"))
}

/// The first occurrence of `schedule` in `tz` strictly after `after`; `None` when there is none
/// (a one-shot time already past, or an instant outside the calendar's range).
pub(crate) fn next_occurrence(schedule: &TaskSchedule, tz: &TimeZone, after: UnixMillis) -> Option<UnixMillis> {
    let (days, time) = match schedule {
        TaskSchedule::Once { at } => return (*at > after).then_some(*at),
        TaskSchedule::Daily { time } => (None, time),
        TaskSchedule::Weekly { days, time } => (Some(days), time),
    };
    let time = Time::new(i8::try_from(time.hour).ok()?, i8::try_from(time.minute).ok()?, 0, 0).ok()?;
    let start = Timestamp::from_millisecond(after.0).ok()?.to_zoned_datetime(tz.clone()).date();
    (-1..=LOOK_AHEAD_DAYS).find_map(|offset| {
        let date = start.checked_add(jiff::Span::new().days(offset)).ok()?;
        let weekday = date.weekday().to_monday_one_offset();
        if days.is_some_and(|days| !days.iter().any(|d| d.iso_number() == weekday)) {
            return None;
        }
        let at = tz.to_ambiguous_zoned_datetime(date.to_datetime(time)).compatible().ok()?;
        let at = UnixMillis(at.timestamp().as_millisecond());
        (at > after).then_some(at)
    })
}

/// What the scheduler does with a due task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DueRun {
    /// The occurrence being claimed (the task's `next_run_at`).
    pub(crate) due: UnixMillis,
    /// Record it as missed instead of running it.
    pub(crate) missed: bool,
    /// The task's next occurrence after this one (`None`: the task completes).
    pub(crate) next: Option<UnixMillis>,
}

/// The run of a task whose `next_run_at` has come at `now` (`None` if it has not, or the task
/// has none): missed or not (see the module documentation), and the next occurrence.
pub(crate) fn due_run(task: &Task, tz: &TimeZone, now: UnixMillis, late_after_ms: i64) -> Option<DueRun> {
    let due = task.next_run_at.filter(|due| *due <= now)?;
    let late = now.0.saturating_sub(due.0) > late_after_ms;
    let missed = late && task.missed == MissedRuns::Skip;
    // On time: the occurrence after this one. Late: the first after now, so occurrences missed
    // while no scheduler ran are not run one after the other.
    let next = next_occurrence(&task.schedule, tz, if late { now } else { due.max(now) });
    Some(DueRun { due, missed, next })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetpulse_proto::{AccountId, EnterpriseId, TaskId};
    use fleetpulse_store::{TaskState, TaskTargets, TimeOfDay, Weekday};

    /// Unix milliseconds of an RFC 3339 instant.
    fn at(s: &str) -> UnixMillis {
        UnixMillis(s.parse::<Timestamp>().expect("an instant").as_millisecond())
    }

    /// The instant as RFC 3339 in UTC, for readable assertions.
    fn show(t: Option<UnixMillis>) -> String {
        t.map_or("none".into(), |t| Timestamp::from_millisecond(t.0).expect("in range").to_string())
    }

    fn daily(h: u8, m: u8) -> TaskSchedule {
        TaskSchedule::Daily { time: TimeOfDay { hour: h, minute: m } }
    }

    fn zone(name: &str) -> TimeZone {
        time_zone(name).expect("a known zone")
    }

    /// Each case: schedule, zone, after → the next occurrence (UTC).
    #[test]
    fn next_occurrences_across_days_weeks_and_dst() {
        let weekly = |days: &[Weekday], h, m| TaskSchedule::Weekly {
            days: days.to_vec(),
            time: TimeOfDay { hour: h, minute: m },
        };
        let cases: &[(&str, TaskSchedule, &str, &str, &str)] = &[
            ("daily, later today", daily(3, 0), "Europe/Berlin", "2026-01-10T01:00:00Z", "2026-01-10T02:00:00Z"),
            (
                "daily, exactly at: strictly after",
                daily(3, 0),
                "Europe/Berlin",
                "2026-01-10T02:00:00Z",
                "2026-01-11T02:00:00Z",
            ),
            ("daily, summer offset", daily(3, 0), "Europe/Berlin", "2026-07-10T03:00:00Z", "2026-07-11T01:00:00Z"),
            (
                "daily, local date ahead of UTC",
                daily(8, 0),
                "Asia/Tokyo",
                "2026-01-10T20:00:00Z",
                "2026-01-10T23:00:00Z",
            ),
            (
                "daily, local date behind UTC",
                daily(22, 0),
                "America/New_York",
                "2026-01-11T02:00:00Z",
                "2026-01-11T03:00:00Z",
            ),
            // Spring forward in Berlin: 2026-03-29 02:00 → 03:00. 02:30 does not exist: 03:30.
            (
                "gap: shifted by its length",
                daily(2, 30),
                "Europe/Berlin",
                "2026-03-28T12:00:00Z",
                "2026-03-29T01:30:00Z",
            ),
            (
                "gap: the day after is normal",
                daily(2, 30),
                "Europe/Berlin",
                "2026-03-29T01:30:00Z",
                "2026-03-30T00:30:00Z",
            ),
            // Fall back in Berlin: 2026-10-25 03:00 → 02:00. 02:30 happens twice: the earlier.
            ("overlap: the earlier", daily(2, 30), "Europe/Berlin", "2026-10-24T12:00:00Z", "2026-10-25T00:30:00Z"),
            ("overlap: once only", daily(2, 30), "Europe/Berlin", "2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"),
            (
                "new york spring forward",
                daily(2, 15),
                "America/New_York",
                "2026-03-08T00:00:00Z",
                "2026-03-08T07:15:00Z",
            ),
            ("utc", daily(0, 0), "UTC", "2026-12-31T23:59:59Z", "2027-01-01T00:00:00Z"),
            // 2026-01-10 is a Saturday.
            (
                "weekly, next listed day",
                weekly(&[Weekday::Monday, Weekday::Thursday], 9, 0),
                "UTC",
                "2026-01-10T12:00:00Z",
                "2026-01-12T09:00:00Z",
            ),
            (
                "weekly, a week ahead",
                weekly(&[Weekday::Saturday], 9, 0),
                "UTC",
                "2026-01-10T12:00:00Z",
                "2026-01-17T09:00:00Z",
            ),
            (
                "weekly, later today",
                weekly(&[Weekday::Saturday], 13, 0),
                "UTC",
                "2026-01-10T12:00:00Z",
                "2026-01-10T13:00:00Z",
            ),
            (
                "weekly, local sunday is utc saturday",
                weekly(&[Weekday::Sunday], 7, 0),
                "Pacific/Auckland",
                "2026-01-09T00:00:00Z",
                "2026-01-10T18:00:00Z",
            ),
        ];
        for (what, schedule, tz, after, expected) in cases {
            let next = next_occurrence(schedule, &zone(tz), at(after));
            assert_eq!(show(next), *expected, "{what}");
        }
    }

    #[test]
    fn a_one_shot_occurs_once() {
        let once = TaskSchedule::Once { at: at("2026-05-01T10:00:00Z") };
        assert_eq!(show(next_occurrence(&once, &zone("UTC"), at("2026-05-01T09:59:59Z"))), "2026-05-01T10:00:00Z");
        assert_eq!(next_occurrence(&once, &zone("UTC"), at("2026-05-01T10:00:00Z")), None);
    }

    #[test]
    fn zones_are_named_or_refused() {
        assert!(time_zone("").is_ok(), "empty is UTC");
        assert!(time_zone("America/Argentina/Buenos_Aires").is_ok());
        let error = time_zone("Mars/Olympus_Mons").err().unwrap_or_default();
        assert!(error.contains("Mars/Olympus_Mons"), "{error}");
    }

    fn task(schedule: TaskSchedule, missed: MissedRuns, next: &str) -> Task {
        Task {
            id: TaskId(1),
            enterprise_id: EnterpriseId(1),
            name: "t".into(),
            kind: "reboot".into(),
            args: "{}".into(),
            deadline_s: 3600,
            targets: TaskTargets::Filter(String::new()),
            schedule,
            time_zone: "UTC".into(),
            missed,
            state: TaskState::Active,
            created_by: AccountId(1),
            created_at: UnixMillis(0),
            updated_at: UnixMillis(0),
            next_run_at: Some(at(next)),
        }
    }

    #[test]
    fn due_runs_on_time_late_and_skipped() {
        const LATE: i64 = 120_000;
        let utc = zone("UTC");
        let t = task(daily(3, 0), MissedRuns::RunOnce, "2026-01-10T03:00:00Z");
        assert_eq!(due_run(&t, &utc, at("2026-01-10T02:59:59Z"), LATE), None, "not yet");
        let on_time = due_run(&t, &utc, at("2026-01-10T03:00:20Z"), LATE).expect("due");
        assert_eq!((on_time.missed, show(on_time.next)), (false, "2026-01-11T03:00:00Z".into()));
        // Down for three days: runs once now, next tomorrow (after now), not the days between.
        let late = due_run(&t, &utc, at("2026-01-13T10:00:00Z"), LATE).expect("due");
        assert_eq!(
            (late.due, late.missed, show(late.next)),
            (at("2026-01-10T03:00:00Z"), false, "2026-01-14T03:00:00Z".into())
        );
        let skip = task(daily(3, 0), MissedRuns::Skip, "2026-01-10T03:00:00Z");
        let skipped = due_run(&skip, &utc, at("2026-01-13T10:00:00Z"), LATE).expect("due");
        assert_eq!((skipped.missed, show(skipped.next)), (true, "2026-01-14T03:00:00Z".into()));
        let skip_on_time = due_run(&skip, &utc, at("2026-01-10T03:01:00Z"), LATE).expect("due");
        assert!(!skip_on_time.missed, "within late_after a run is on time");
        let once =
            task(TaskSchedule::Once { at: at("2026-01-10T03:00:00Z") }, MissedRuns::Skip, "2026-01-10T03:00:00Z");
        let missed_once = due_run(&once, &utc, at("2026-01-11T00:00:00Z"), LATE).expect("due");
        assert_eq!((missed_once.missed, missed_once.next), (true, None), "a missed one-shot completes, missed");
    }
}
