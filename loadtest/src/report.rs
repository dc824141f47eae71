//! The JSON report of a run (LT-2, LT-3), and the text summary of its command sections.

use std::collections::BTreeMap;

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
    /// Frames acknowledged during the sending phase per second of it (after `--warmup`).
    pub rate_msgs_per_s: f64,
    /// Acknowledgement latency from each frame's intended send time, microseconds.
    pub ack_latency_us: Latency,
    /// What the store holds for the run's devices (all 0 against a sink, which stores nothing).
    pub verified: Verified,
    /// The server was a sink (`--sink`): nothing was verified.
    #[serde(default)]
    pub sink: bool,
    /// Connection statistics.
    pub connections: Connections,
    /// Frames the server rejected as invalid (counted in `acked`, not stored).
    pub rejected_frames: u64,
    /// The enterprise the devices belonged to.
    pub enterprise_id: u64,
    /// The fleet's MAC prefix (6 hex digits): `--mac-prefix` names the same devices again.
    #[serde(default)]
    pub mac_prefix: String,
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
    /// Injected alarms and their emails (only with an SMTP sink).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alarm_email: Option<AlarmEmail>,
    /// The server's stages of the alarm → inbox path during the run, from its `/metrics` (only
    /// with an SMTP sink, and when `/metrics` could be read).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alarm_stages: Vec<crate::stages::StageLatency>,
    /// How the devices answered the commands the server sent.
    #[serde(default)]
    pub device_commands: DeviceCommands,
    /// The command mode's commands and their latencies (only in command mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_run: Option<CommandRun>,
}

/// How the simulated devices answered server commands (all 0 when the server sent none).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceCommands {
    /// `Command` messages received, repeats included.
    pub received: u64,
    /// Commands executed (a repeated command is never executed again).
    pub executed: u64,
    /// Commands received again and answered with their last answer.
    pub repeated: u64,
    /// Commands refused (unknown kind, bad arguments, no room to remember them), answered failed.
    pub refused: u64,
    /// Commands that arrived after their deadline (not executed, not answered).
    pub late: u64,
    /// Final answers the server acknowledged: succeeded.
    pub succeeded: u64,
    /// Final answers the server acknowledged: failed.
    pub failed: u64,
    /// File uploads written to the end of their stream.
    pub files_uploaded: u64,
    /// Uploads the server answered `FileStored`.
    pub files_stored: u64,
    /// Uploads the server answered `FileRefused` (or stopped).
    pub files_refused: u64,
    /// Firmware upgrades downloaded, checked and installed (PRV-4).
    #[serde(default)]
    pub firmware_upgrades: u64,
}

/// The command mode's commands (issue 11): counts, and latencies from the instant before the API
/// call, microseconds.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandRun {
    /// `one_by_one` or `bulk`.
    pub mode: String,
    /// The command kind.
    pub kind: String,
    /// The devices' delay from `accepted` to their result, milliseconds (part of the round trip).
    pub command_delay_ms: u64,
    /// Devices addressed.
    pub targets: u64,
    /// Commands the API queued.
    pub issued: u64,
    /// Commands the API refused (or calls that failed).
    pub refused: u64,
    /// Issued commands whose device's final answer, succeeded, the server acknowledged.
    pub succeeded: u64,
    /// Issued commands whose device's final answer, failed, the server acknowledged.
    pub failed: u64,
    /// Issued commands without an acknowledged final answer when the mode stopped waiting.
    pub unfinished: u64,
    /// From the API call to the device receiving the command.
    pub delivery_us: Latency,
    /// From the API call to the server acknowledging the device's final answer (result stored).
    pub round_trip_us: Latency,
    /// From the (first) API call until every issued command had reached its device, if all did.
    pub all_delivered_us: Option<u64>,
    /// From the (first) API call until every issued command's result was stored, if all were.
    pub all_stored_us: Option<u64>,
    /// The states `GET /api/v1/commands/{id}` reported afterwards, with their counts.
    pub api_states: BTreeMap<String, u64>,
    /// Reads of `GET /api/v1/commands/{id}` that failed.
    pub api_errors: u64,
    /// Commands the devices saw but the tracker had no room for (not measured).
    #[serde(default)]
    pub untracked: u64,
}

impl CommandRun {
    /// A few lines for people (stderr).
    pub fn summary(&self) -> String {
        let ms = |us: u64| us as f64 / 1000.0;
        let l = &self.round_trip_us;
        let d = &self.delivery_us;
        let all = |v: Option<u64>| v.map_or_else(|| "not all".to_owned(), |us| format!("{:.1} ms", ms(us)));
        format!(
            "commands ({mode}, {kind}, device delay {delay} ms): {targets} devices, {issued} issued, {refused} refused, \
             {ok} succeeded, {failed} failed, {unfinished} unfinished\n\
             round trip (issue -> result stored) ms: p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}\n\
             delivery (issue -> device) ms: p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}\n\
             every device reached: {reached}; every result stored: {stored}; API states: {states:?}",
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.max),
            ms(d.p50),
            ms(d.p90),
            ms(d.p99),
            ms(d.max),
            mode = self.mode,
            kind = self.kind,
            delay = self.command_delay_ms,
            targets = self.targets,
            issued = self.issued,
            refused = self.refused,
            ok = self.succeeded,
            failed = self.failed,
            unfinished = self.unfinished,
            reached = all(self.all_delivered_us),
            stored = all(self.all_stored_us),
            states = self.api_states,
        )
    }
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
    /// 90th percentile.
    #[serde(default)]
    pub p90: u64,
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
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// End-to-end latency of injected alarms: device alarm → email accepted by the SMTP sink (ALM-5).
///
/// `injected = emailed + missing + untracked`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlarmEmail {
    /// Alarm raises injected (each a new activation whose description carries a unique token).
    pub injected: u64,
    /// Raises whose token arrived in an email the sink accepted.
    pub emailed: u64,
    /// Tracked raises whose token had not arrived when the alarm drain ended.
    pub missing: u64,
    /// From each raise's intended send time to the sink accepting the first email with its token
    /// (microseconds; counts the time a frame waited on the device, like `ack_latency_us`).
    pub latency_us: Latency,
    /// Raises not tracked because too many tokens were outstanding (neither emailed nor missing).
    #[serde(default)]
    pub untracked: u64,
    /// Messages the sink accepted (every firing and resolved notification, with or without a token).
    #[serde(default)]
    pub emails: u64,
    /// The most messages the sink accepted in one whole second of the run: the rate one relay
    /// took while a backlog waited (with none, only the offered rate).
    #[serde(default)]
    pub emails_peak_per_s: u64,
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
        assert_eq!((l.p50, l.p90, l.p99, l.p999, l.max), (500, 900, 990, 999, 1000));
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
            ack_latency_us: Latency { p50: 1, p90: 2, p99: 2, p999: 3, max: 4 },
            verified: Verified { stored: 7, missing: 0, duplicated: 0 },
            sink: false,
            connections: Connections { established: 2, ..Connections::default() },
            rejected_frames: 0,
            enterprise_id: 5,
            mac_prefix: "abcdef".into(),
            resent: 1,
            not_sent: 0,
            drained: true,
            alarm_email: None,
            alarm_stages: Vec::new(),
            device_commands: DeviceCommands { received: 2, executed: 1, repeated: 1, ..DeviceCommands::default() },
            command_run: None,
        };
        let json = serde_json::to_value(&report).expect("serializes");
        assert_eq!(json["verified"]["missing"], 0);
        assert!(json.get("alarm_email").is_none(), "no section without a sink");
        assert!(json.get("alarm_stages").is_none(), "no stages without a sink");
        assert_eq!(json["ack_latency_us"]["p999"], 3);
        let back: Report = serde_json::from_value(json.clone()).expect("deserializes");
        assert_eq!(back, report);
        assert!(json.get("command_run").is_none(), "no section without the command mode");
        assert_eq!(json["device_commands"]["repeated"], 1);
        let mut trimmed = json;
        for extra in ["resent", "not_sent", "drained", "device_commands", "sink"] {
            trimmed.as_object_mut().expect("object").remove(extra);
        }
        trimmed["ack_latency_us"].as_object_mut().expect("object").remove("p90");
        assert!(serde_json::from_value::<Report>(trimmed).is_ok());
        assert!(report.passed());
    }

    #[test]
    fn the_command_run_section_round_trips_and_summarizes() {
        let run = CommandRun {
            mode: "bulk".into(),
            kind: "reboot".into(),
            targets: 3,
            issued: 3,
            succeeded: 2,
            unfinished: 1,
            round_trip_us: Latency { p50: 1_500, p90: 2_000, p99: 2_500, p999: 2_500, max: 3_000 },
            all_delivered_us: Some(900),
            api_states: [("succeeded".to_owned(), 2), ("sent".to_owned(), 1)].into(),
            ..CommandRun::default()
        };
        let json = serde_json::to_value(&run).expect("serializes");
        assert_eq!(json["all_stored_us"], serde_json::Value::Null);
        assert_eq!(json["api_states"]["succeeded"], 2);
        assert_eq!(serde_json::from_value::<CommandRun>(json).expect("deserializes"), run);
        let text = run.summary();
        assert!(text.contains("p99 2.5") && text.contains("every device reached: 0.9 ms"), "{text}");
        assert!(text.contains("every result stored: not all"), "{text}");
    }

    #[test]
    fn the_alarm_email_section_has_the_documented_shape() {
        let section = AlarmEmail {
            injected: 10,
            emailed: 8,
            missing: 1,
            latency_us: Latency { p50: 1, p90: 2, p99: 3, p999: 4, max: 5 },
            untracked: 1,
            emails: 16,
            emails_peak_per_s: 7,
        };
        let json = serde_json::to_value(section).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({
                "injected": 10, "emailed": 8, "missing": 1,
                "latency_us": { "p50": 1, "p90": 2, "p99": 3, "p999": 4, "max": 5 },
                "untracked": 1, "emails": 16, "emails_peak_per_s": 7
            })
        );
        assert_eq!(serde_json::from_value::<AlarmEmail>(json).expect("deserializes"), section);
    }
}
