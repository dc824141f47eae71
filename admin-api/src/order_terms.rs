//! The validity of an order (ORD-1), sans-I/O: an effective date in the enterprise's time zone
//! and a duration in months → the instants it starts and ends.
//!
//! Rules (the issue is silent; these are what an operator would expect):
//! - An order starts at local midnight of its effective date in the enterprise's zone (the first
//!   instant of that day where a clock change skips midnight) and ends, exclusive, at local
//!   midnight of the same day `months` later (the last day of a shorter month: 31 January + 1
//!   month ends on 28 or 29 February).
//! - The effective date may be today (the order is active at once) but not earlier: an order in
//!   the past would grant an allowance that was never sold and could never be cancelled.
//! - It may be at most [`MAX_LEAD_DAYS`] days ahead; a date or an end outside the calendar's range
//!   is refused, never wrapped.

use fleetpulse_proto::UnixMillis;
use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp};

/// Furthest an effective date may be ahead of today, in days.
pub(crate) const MAX_LEAD_DAYS: i64 = 366;

/// The validity of an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OrderTerms {
    /// The effective date as given (`YYYY-MM-DD`).
    pub(crate) effective_date: String,
    /// Local midnight of the effective date.
    pub(crate) starts_at: UnixMillis,
    /// Local midnight `months` later (exclusive).
    pub(crate) ends_at: UnixMillis,
}

/// The terms of an order effective on `date` for `months`, placed at `now`, in `tz`; `Err` with
/// the reason for a malformed date, one before today or more than [`MAX_LEAD_DAYS`] ahead, or an
/// end outside the calendar.
pub(crate) fn order_terms(date: &str, months: u32, tz: &TimeZone, now: UnixMillis) -> Result<OrderTerms, String> {
    let malformed = || format!("effective_date {date:?} is not a date of the form YYYY-MM-DD");
    if date.len() != 10 {
        return Err(malformed());
    }
    let day: Date = date.parse().map_err(|_| malformed())?;
    let today = Timestamp::from_millisecond(now.0)
        .map_err(|_| "the clock is outside the calendar".to_owned())?
        .to_zoned_datetime(tz.clone())
        .date();
    if day < today {
        return Err(format!("effective_date {date} is in the past (today is {today} in the enterprise's time zone)"));
    }
    let latest = today.checked_add(Span::new().days(MAX_LEAD_DAYS)).unwrap_or(Date::MAX);
    if day > latest {
        return Err(format!("effective_date {date} is more than {MAX_LEAD_DAYS} days ahead"));
    }
    let outside = || format!("an order of {months} months from {date} ends outside the calendar");
    let span = Span::new().try_months(i64::from(months)).map_err(|_| outside())?;
    let end = day.checked_add(span).map_err(|_| outside())?;
    Ok(OrderTerms { effective_date: date.to_owned(), starts_at: midnight(day, tz)?, ends_at: midnight(end, tz)? })
}

/// The first instant of `day` in `tz`.
fn midnight(day: Date, tz: &TimeZone) -> Result<UnixMillis, String> {
    let at = tz
        .to_ambiguous_zoned_datetime(day.to_datetime(Time::midnight()))
        .compatible()
        .map_err(|_| format!("{day} is outside the calendar"))?;
    Ok(UnixMillis(at.timestamp().as_millisecond()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(name: &str) -> TimeZone {
        jiff::tz::db().get(name).expect("zone")
    }

    fn ms(rfc3339: &str) -> UnixMillis {
        UnixMillis(rfc3339.parse::<Timestamp>().expect("instant").as_millisecond())
    }

    #[test]
    fn orders_start_and_end_at_local_midnight() {
        let now = ms("2026-03-10T12:00:00Z");
        let berlin = order_terms("2026-03-20", 1, &zone("Europe/Berlin"), now).expect("terms");
        assert_eq!(berlin.starts_at, ms("2026-03-19T23:00:00Z"), "CET is UTC+1");
        assert_eq!(berlin.ends_at, ms("2026-04-19T22:00:00Z"), "CEST is UTC+2 after the change");
        let utc = order_terms("2026-03-20", 12, &TimeZone::UTC, now).expect("terms");
        assert_eq!((utc.starts_at, utc.ends_at), (ms("2026-03-20T00:00:00Z"), ms("2027-03-20T00:00:00Z")));
        let month_end = order_terms("2026-03-31", 1, &TimeZone::UTC, now).expect("terms");
        assert_eq!(month_end.ends_at, ms("2026-04-30T00:00:00Z"), "clamped to the shorter month");
    }

    #[test]
    fn today_is_in_the_enterprises_zone() {
        // 23:30 UTC on 10 March is already 11 March in Tokyo and still 10 March in New York.
        let now = ms("2026-03-10T23:30:00Z");
        assert!(order_terms("2026-03-10", 1, &zone("Asia/Tokyo"), now).is_err(), "yesterday in Tokyo");
        let tokyo = order_terms("2026-03-11", 1, &zone("Asia/Tokyo"), now).expect("today in Tokyo");
        assert_eq!(tokyo.starts_at, ms("2026-03-10T15:00:00Z"), "already active");
        assert!(tokyo.starts_at < now);
        let ny = order_terms("2026-03-10", 1, &zone("America/New_York"), now).expect("today in New York");
        assert_eq!(ny.starts_at, ms("2026-03-10T04:00:00Z"));
    }

    #[test]
    fn bad_past_far_and_overflowing_dates_are_refused() {
        let now = ms("2026-03-10T12:00:00Z");
        for bad in ["2026-3-10", "2026-02-30", "10.03.2026", "", "2026-03-10T00:00", "+2026-03-10"] {
            assert!(order_terms(bad, 1, &TimeZone::UTC, now).is_err(), "{bad:?}");
        }
        assert!(order_terms("2026-03-09", 1, &TimeZone::UTC, now).unwrap_err().contains("past"));
        assert!(order_terms("2027-03-12", 1, &TimeZone::UTC, now).unwrap_err().contains("ahead"));
        assert!(order_terms("2027-03-11", 1, &TimeZone::UTC, now).is_ok(), "366 days ahead");
        // A clock near the end of the calendar: the end would overflow and is refused.
        let late = ms("9999-06-01T00:00:00Z");
        let err = order_terms("9999-06-02", 120, &TimeZone::UTC, late).unwrap_err();
        assert!(err.contains("outside the calendar"), "{err}");
        let err = order_terms("2026-03-10", u32::MAX, &TimeZone::UTC, now).unwrap_err();
        assert!(err.contains("outside the calendar"), "{err}");
    }
}
