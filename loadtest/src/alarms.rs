//! Injected alarms and their end-to-end email latency (SPEC ALM-5).
//!
//! With `--alarm-rate R` every device also sends, on an open-model schedule of its own, an alarm
//! of type [`INJECTED_ALARM`] that it raises and clears in turn, so that every raise starts a new
//! activation (a raise while already active would only bump a count and send no email). Each raise
//! carries a token `lt-alarm-<run tag>-<n>` in its description, `n` unique in the run.
//!
//! With `--smtp-sink` the [`AlarmTracker`] keeps the intended send time of every outstanding token
//! (bounded by [`MAX_OUTSTANDING`]) and, for every message the SMTP sink accepts, looks for tokens
//! (see [`find_tokens`]) and records the latency of each one seen for the first time.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};

use fleetpulse_proto::AlarmTypeCode;
use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::config::MessageKind;
use crate::report::{AlarmEmail, Latency};
use crate::smtp_sink;
use crate::stats::new_histogram;

/// The alarm type injected: "Application crash" (critical). Devices may report it (it is not
/// derived), its log is optional, and the random message mix never uses it (the mix only draws
/// types without a log), so the injected raises and clears alternate cleanly.
pub const INJECTED_ALARM: AlarmTypeCode = AlarmTypeCode(105);

/// Every token starts with this.
pub const TOKEN_PREFIX: &str = "lt-alarm-";

/// Most tokens tracked at once; raises beyond it are counted as untracked.
pub const MAX_OUTSTANDING: usize = 1_000_000;

/// Most seconds of a run whose emails are counted per second (for the peak email rate).
const MAX_EMAIL_SECONDS: usize = 24 * 3600;

/// Most decimal digits of a token number (`u64::MAX` has 20).
const MAX_DIGITS: usize = 20;

/// A random tag naming one run in its tokens, so that emails of other runs are not counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct RunTag(pub u32);

/// Eight lowercase hexadecimal digits.
impl fmt::Display for RunTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

/// The token of raise `n` of the run tagged `tag`: `lt-alarm-<tag>-<n>`.
pub fn token(tag: RunTag, n: u64) -> String {
    format!("{TOKEN_PREFIX}{tag}-{n}")
}

/// Numbers the injected alarms of one device: its raise `k` gets `k * devices + index`, unique in
/// the run and a pure function of the device's schedule, so a resent frame carries the same token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceTokens {
    /// The device's index in the run.
    pub index: u32,
    /// Devices in the run.
    pub devices: u32,
}

impl DeviceTokens {
    /// The kind of the device's injected alarm event `event`: even events raise, odd ones clear
    /// the raise before them.
    pub fn kind(self, event: u64) -> MessageKind {
        let k = event / 2;
        let n = k.saturating_mul(u64::from(self.devices.max(1))).saturating_add(u64::from(self.index));
        MessageKind::InjectedAlarm { n, clear: event % 2 == 1 }
    }
}

/// Every token number of run `tag` in `message` (a raw RFC 5322 message), ascending, once each.
///
/// Looks in the message with quoted-printable decoded (soft line breaks and `=XX` escapes), in its
/// base64 blocks decoded, and in its header's RFC 2047 encoded words decoded, so the token is found
/// however the sender encoded the text. The raw text itself is not searched: a token cut by a
/// quoted-printable soft line break would read as a different, shorter number there.
pub fn find_tokens(message: &[u8], tag: RunTag) -> Vec<u64> {
    let prefix = format!("{TOKEN_PREFIX}{tag}-");
    let mut found = Vec::new();
    for view in smtp_sink::text_views(message) {
        scan(&view, prefix.as_bytes(), &mut found);
    }
    found.sort_unstable();
    found.dedup();
    found
}

/// Appends the number after every `prefix` in `text`.
fn scan(text: &[u8], prefix: &[u8], found: &mut Vec<u64>) {
    let mut from = 0;
    while let Some(at) = smtp_sink::find(&text[from..], prefix) {
        let start = from + at + prefix.len();
        let digits = text[start..].iter().take_while(|b| b.is_ascii_digit()).count();
        if (1..=MAX_DIGITS).contains(&digits) {
            let number = std::str::from_utf8(&text[start..start + digits]).ok().and_then(|s| s.parse::<u64>().ok());
            found.extend(number);
        }
        from = start + digits;
    }
}

/// Tracks the injected raises of one run and the emails that carry their tokens.
#[derive(Debug)]
pub struct AlarmTracker {
    tag: RunTag,
    /// Times are kept as microseconds after this.
    origin: Instant,
    capacity: usize,
    state: Mutex<TrackerState>,
}

#[derive(Debug)]
struct TrackerState {
    /// Token number → intended send time (µs after `origin`) of raises not yet seen in an email.
    outstanding: HashMap<u64, u64>,
    injected: u64,
    untracked: u64,
    emailed: u64,
    emails: u64,
    /// Emails accepted per whole second after `origin` (bounded by [`MAX_EMAIL_SECONDS`]).
    emails_per_second: Vec<u32>,
    latency: Histogram<u64>,
}

impl AlarmTracker {
    /// A tracker for run `tag` keeping at most `capacity` outstanding tokens.
    pub fn new(tag: RunTag, capacity: usize) -> Self {
        AlarmTracker {
            tag,
            origin: Instant::now(),
            capacity,
            state: Mutex::new(TrackerState {
                outstanding: HashMap::new(),
                injected: 0,
                untracked: 0,
                emailed: 0,
                emails: 0,
                emails_per_second: Vec::new(),
                latency: new_histogram(),
            }),
        }
    }

    /// The run's tag.
    pub fn tag(&self) -> RunTag {
        self.tag
    }

    fn micros(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_micros()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TrackerState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Raise `n` was generated, intended to be sent at `intended`.
    pub fn injected(&self, n: u64, intended: Instant) {
        let at = self.micros(intended);
        let mut state = self.lock();
        state.injected += 1;
        if state.outstanding.len() >= self.capacity && !state.outstanding.contains_key(&n) {
            state.untracked += 1;
        } else {
            state.outstanding.entry(n).or_insert(at);
        }
    }

    /// The SMTP sink accepted `message` at `accepted`: records the latency of every outstanding
    /// token it carries.
    pub fn email_accepted(&self, accepted: Instant, message: &[u8]) {
        let tokens = find_tokens(message, self.tag);
        let at = self.micros(accepted);
        let mut state = self.lock();
        state.emails += 1;
        let second = usize::try_from(at / 1_000_000).unwrap_or(usize::MAX);
        if second < MAX_EMAIL_SECONDS {
            if state.emails_per_second.len() <= second {
                state.emails_per_second.resize(second + 1, 0);
            }
            state.emails_per_second[second] += 1;
        }
        for n in tokens {
            if let Some(sent) = state.outstanding.remove(&n) {
                state.emailed += 1;
                state.latency.saturating_record(at.saturating_sub(sent));
            }
        }
    }

    /// Tracked raises whose token has not arrived yet.
    pub fn outstanding(&self) -> usize {
        self.lock().outstanding.len()
    }

    /// The report section as of now.
    pub fn summary(&self) -> AlarmEmail {
        let state = self.lock();
        AlarmEmail {
            injected: state.injected,
            emailed: state.emailed,
            missing: state.outstanding.len() as u64,
            latency_us: Latency::from_histogram(&state.latency),
            untracked: state.untracked,
            emails: state.emails,
            emails_peak_per_s: state.emails_per_second.iter().copied().max().map_or(0, u64::from),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const TAG: RunTag = RunTag(0x00c0_ffee);

    #[test]
    fn tokens_name_the_run_and_the_raise() {
        assert_eq!(token(TAG, 42), "lt-alarm-00c0ffee-42");
        assert_eq!(find_tokens(b"x lt-alarm-00c0ffee-42 y", TAG), [42]);
    }

    #[test]
    fn device_tokens_alternate_and_never_collide() {
        let mut seen = std::collections::HashSet::new();
        for index in 0..7 {
            let plan = DeviceTokens { index, devices: 7 };
            for event in 0..20 {
                match plan.kind(event) {
                    MessageKind::InjectedAlarm { n, clear } => {
                        assert_eq!(clear, event % 2 == 1);
                        if clear {
                            assert_eq!(plan.kind(event - 1), MessageKind::InjectedAlarm { n, clear: false });
                        } else {
                            assert!(seen.insert(n), "token {n} twice");
                        }
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
        assert_eq!(seen.len(), 70);
    }

    #[test]
    fn only_whole_tokens_of_this_run_are_found() {
        let text = b"lt-alarm-00c0ffee-1 lt-alarm-00c0ffee-22,lt-alarm-00c0ffee-\
                     lt-alarm-deadbeef-5 lt-alarm-00c0ffee-99999999999999999999999 lt-alarm-00c0ffee-22";
        assert_eq!(find_tokens(text, TAG), [1, 22]);
        assert!(find_tokens(b"", TAG).is_empty());
    }

    #[test]
    fn tokens_are_found_however_the_mail_is_encoded() {
        // Quoted-printable with a soft line break inside the number and an escaped hyphen.
        let qp = b"Content-Transfer-Encoding: quoted-printable\r\n\r\nDescription: lt=2Dalarm-00c0ffee-12=\r\n34 x\r\n";
        assert_eq!(find_tokens(qp, TAG), [1234], "not 12: the raw text is not searched");
        // Base64, split over lines as MIME does.
        let b64 = "Content-Transfer-Encoding: base64\r\n\r\nRGVzY3JpcHRpb246IGx0LWFsYXJtLTAwYzBm\r\nZmVlLTc3IHRoZSBlbmQ=\r\n\r\n--b--\r\n";
        assert_eq!(find_tokens(b64.as_bytes(), TAG), [77]);
        // A subject in two RFC 2047 encoded words (B and Q) split inside the token.
        let subject = b"Subject: =?utf-8?b?Q3JpdGljYWw6IGx0LWFsYXJtLTAw?=\r\n =?utf-8?q?c0ffee-5_=E2=80=94_Acme?=\r\n\r\nbody\r\n";
        assert_eq!(find_tokens(subject, TAG), [5]);
    }

    #[test]
    fn the_tracker_records_first_sightings_only() {
        let tracker = AlarmTracker::new(TAG, 2);
        let t0 = Instant::now();
        tracker.injected(1, t0);
        tracker.injected(2, t0);
        tracker.injected(3, t0);
        assert_eq!(tracker.outstanding(), 2);
        let mail = format!("{} and {}", token(TAG, 1), token(TAG, 3));
        tracker.email_accepted(t0 + Duration::from_millis(250), mail.as_bytes());
        tracker.email_accepted(t0 + Duration::from_secs(9), mail.as_bytes());
        let summary = tracker.summary();
        assert_eq!((summary.injected, summary.emailed, summary.missing), (3, 1, 1));
        assert_eq!((summary.untracked, summary.emails), (1, 2));
        assert!(summary.latency_us.max.abs_diff(250_000) <= 250, "{summary:?}");
        assert_eq!(summary.latency_us.p50, summary.latency_us.max);
    }
}
