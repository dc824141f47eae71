//! Unit tests of the command responder: answers in order, delays, failures, uploads, repeats.

use rand::SeedableRng;
use rand::rngs::SmallRng;

use super::*;
use AnswerStatus::{Accepted, Failed, Running, Succeeded};

const NOW_MS: i64 = 1_000_000;

fn config(failure_rate: f64) -> ResponderConfig {
    ResponderConfig { delay_us: 50_000, failure_rate, file_bytes: 4096 }
}

fn command(id: u64, kind: &str, args: &str) -> Command {
    Command { command_id: id, kind: kind.into(), args_json: args.into(), deadline_ms: NOW_MS + 60_000 }
}

/// Drains the answers, numbering them from `seq`, and renders them as `id:status`.
fn answers(r: &mut CommandResponder, seq: &mut u64) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(a) = r.peek_answer() {
        let result = r.result(a);
        r.answer_sent(*seq);
        *seq += 1;
        out.push(format!("{}:{:?}", a.command_id, a.status));
        match a.status {
            Accepted => assert!(result.output.is_empty() && result.reason.is_empty(), "{result:?}"),
            Running => assert!(result.output.starts_with("downloading ") && result.reason.is_empty(), "{result:?}"),
            Succeeded => assert!(!result.output.is_empty() && result.reason.is_empty(), "{result:?}"),
            Failed => assert!(!result.reason.is_empty() && result.reason.len() <= MAX_COMMAND_REASON, "{result:?}"),
        }
    }
    out
}

#[test]
fn a_command_is_accepted_then_succeeds_after_the_delay() {
    let mut r = CommandResponder::new(config(0.0));
    let mut rng = SmallRng::seed_from_u64(1);
    let mut seq = 1;
    let cmd = command(7, "ping", r#"{"target": "192.0.2.1", "count": 3}"#);
    assert_eq!(r.handle_command(&cmd, 0, NOW_MS, &mut rng), Received::Executed);
    assert_eq!(answers(&mut r, &mut seq), ["7:Accepted"]);
    assert_eq!(r.next_due_us(), Some(50_000));
    r.poll_timers(49_999);
    assert!(r.peek_answer().is_none() && r.is_busy());
    r.poll_timers(50_000);
    let done = r.peek_answer().expect("an answer");
    let output = r.result(done).output;
    assert!(output.starts_with("PING 192.0.2.1") && output.contains("3 packets transmitted"), "{output}");
    assert_eq!(answers(&mut r, &mut seq), ["7:Succeeded"]);
    assert!(!r.is_busy());
    let mut stored = Vec::new();
    r.handle_acked(2, |id, s| stored.push((id, s)));
    assert!(stored.is_empty(), "the final answer is seq 2, not yet acknowledged");
    r.handle_acked(3, |id, s| stored.push((id, s)));
    r.handle_acked(9, |id, s| stored.push((id, s)));
    assert_eq!(stored, [(7, Succeeded)], "reported once");
    assert_eq!(r.executions(), 1);
}

#[test]
fn a_failure_rate_of_one_fails_every_command_with_a_reason() {
    let mut r = CommandResponder::new(config(1.0));
    let mut rng = SmallRng::seed_from_u64(2);
    let mut seq = 1;
    for id in 1..=3 {
        r.handle_command(&command(id, "traceroute", r#"{"target": "example.com"}"#), 0, NOW_MS, &mut rng);
    }
    r.poll_timers(50_000);
    assert_eq!(
        answers(&mut r, &mut seq),
        ["1:Accepted", "2:Accepted", "3:Accepted", "1:Failed", "2:Failed", "3:Failed"]
    );
    assert_eq!(r.executions(), 3);
}

#[test]
fn a_file_kind_uploads_before_it_answers() {
    let mut r = CommandResponder::new(config(0.0));
    let mut rng = SmallRng::seed_from_u64(3);
    let mut seq = 1;
    r.handle_command(&command(1, "upload_syslog", "null"), 0, NOW_MS, &mut rng);
    r.handle_command(&command(2, "screenshot", ""), 0, NOW_MS, &mut rng);
    assert_eq!(r.poll_upload(), None, "not before the delay");
    r.poll_timers(60_000);
    assert_eq!(answers(&mut r, &mut seq), ["1:Accepted", "2:Accepted"]);
    assert_eq!(r.poll_upload(), Some(Upload { command_id: 1, name: "syslog.txt", size: 4096 }));
    assert_eq!(r.poll_upload(), None, "one upload at a time");
    // The connection drops during the upload: it starts again on the next one.
    r.handle_disconnect();
    assert_eq!(r.poll_upload(), Some(Upload { command_id: 1, name: "syslog.txt", size: 4096 }));
    assert_eq!(r.handle_file_outcome(1, Ok(90)), Ok(Succeeded));
    let stored = r.result(r.peek_answer().expect("an answer"));
    assert!(stored.output.contains("syslog.txt (4096 bytes) stored as file 90"), "{stored:?}");
    assert_eq!(r.poll_upload(), Some(Upload { command_id: 2, name: "screenshot.png", size: 4096 }));
    assert_eq!(r.handle_file_outcome(2, Err("too large")), Ok(Failed));
    let refused = answers(&mut r, &mut seq);
    assert_eq!(refused, ["1:Succeeded", "2:Failed"]);
    assert_eq!(r.result(Answer { command_id: 2, status: Failed }).reason, "file refused: too large");
    assert_eq!(r.handle_file_outcome(2, Ok(1)), Err(UnexpectedFileOutcome { command_id: 2 }));
    assert_eq!(r.handle_file_outcome(99, Ok(1)), Err(UnexpectedFileOutcome { command_id: 99 }));
    assert!(!r.is_busy());
}

#[test]
fn a_repeated_command_gets_its_last_answer_without_running_again() {
    let mut r = CommandResponder::new(config(0.0));
    let mut rng = SmallRng::seed_from_u64(4);
    let mut seq = 1;
    let cmd = command(5, "reboot", "{}");
    r.handle_command(&cmd, 0, NOW_MS, &mut rng);
    assert_eq!(r.handle_command(&cmd, 10, NOW_MS, &mut rng), Received::Repeated);
    assert_eq!(answers(&mut r, &mut seq), ["5:Accepted", "5:Accepted"]);
    r.poll_timers(50_000);
    assert_eq!(answers(&mut r, &mut seq), ["5:Succeeded"]);
    assert_eq!(r.handle_command(&cmd, 60_000, NOW_MS, &mut rng), Received::Repeated);
    assert_eq!(answers(&mut r, &mut seq), ["5:Succeeded"]);
    assert_eq!(r.executions(), 1);
}

#[test]
fn bad_commands_are_refused_and_late_ones_ignored() {
    let mut r = CommandResponder::new(config(0.0));
    let mut rng = SmallRng::seed_from_u64(5);
    let mut seq = 1;
    assert!(matches!(r.handle_command(&command(1, "selfdestruct", "{}"), 0, NOW_MS, &mut rng), Received::Refused(_)));
    assert!(matches!(r.handle_command(&command(2, "ping", "{}"), 0, NOW_MS, &mut rng), Received::Refused(_)));
    assert!(matches!(r.handle_command(&command(3, "ping", "{nope"), 0, NOW_MS, &mut rng), Received::Refused(_)));
    let late = Command { deadline_ms: NOW_MS, ..command(4, "reboot", "{}") };
    assert_eq!(r.handle_command(&late, 0, NOW_MS, &mut rng), Received::Late);
    assert_eq!(answers(&mut r, &mut seq), ["1:Failed", "2:Failed", "3:Failed"]);
    assert!(r.result(Answer { command_id: 2, status: Failed }).reason.contains("target"));
    assert_eq!(r.executions(), 0);
}

#[test]
fn memory_is_bounded_and_never_forgets_a_command_in_flight() {
    let mut r = CommandResponder::new(config(0.0));
    let mut rng = SmallRng::seed_from_u64(6);
    let mut seq = 1;
    for id in 0..MAX_REMEMBERED as u64 {
        assert_eq!(r.handle_command(&command(id, "reboot", "{}"), 0, NOW_MS, &mut rng), Received::Executed);
    }
    answers(&mut r, &mut seq);
    // Every slot holds a running command: the next one is refused, not executed.
    let extra = command(1000, "reboot", "{}");
    assert!(matches!(r.handle_command(&extra, 0, NOW_MS, &mut rng), Received::Refused(_)));
    assert_eq!(r.remembered(), MAX_REMEMBERED);
    r.poll_timers(50_000);
    answers(&mut r, &mut seq);
    // Answered but not acknowledged: still remembered, still refused.
    assert!(matches!(r.handle_command(&command(1001, "reboot", "{}"), 0, NOW_MS, &mut rng), Received::Refused(_)));
    r.handle_acked(seq, |_, _| {});
    assert_eq!(r.handle_command(&command(1002, "reboot", "{}"), 0, NOW_MS, &mut rng), Received::Executed);
    assert_eq!(r.remembered(), MAX_REMEMBERED, "the oldest acknowledged one made room");
    assert_eq!(r.handle_command(&command(0, "reboot", "{}"), 0, NOW_MS, &mut rng), Received::Executed);
    assert_eq!(r.handle_command(&command(5, "reboot", "{}"), 0, NOW_MS, &mut rng), Received::Repeated);
    // Past their deadline and acknowledged, all answered commands are forgotten.
    r.poll_timers(100_000);
    answers(&mut r, &mut seq);
    r.handle_acked(seq, |_, _| {});
    let later = Command { deadline_ms: NOW_MS + 120_000, ..command(2000, "reboot", "{}") };
    assert_eq!(r.handle_command(&later, 0, NOW_MS + 60_000, &mut rng), Received::Executed);
    assert_eq!(r.remembered(), 1);
    assert_eq!(r.executions(), MAX_REMEMBERED as u64 + 3);
}

#[test]
fn default_args_fill_hosts_and_outputs_stay_within_bounds() {
    assert_eq!(default_args("ping"), serde_json::json!({ "target": "127.0.0.1" }));
    assert_eq!(default_args("reboot"), serde_json::json!({}));
    for kind in fleetpulse_proto::commands::COMMAND_KINDS {
        let args = commands::validate_internal_command(kind.name, &default_args(kind.name));
        // Internal kinds (firmware, configuration) have required arguments fleetpulse makes.
        if kind.name != "factory_reset" && !kind.internal {
            let args = args.expect("defaults are valid");
            assert!(!fake_output(kind.name, &args, 3).is_empty());
        }
    }
    assert_eq!(truncate("ééé", 3), "é");
}

fn upgrade(id: u64) -> Command {
    let args = serde_json::json!({
        "url": "https://127.0.0.1:8444/firmware/3/7?token=1.ab",
        "sha256": "ab".repeat(32),
        "size": 1000,
        "version": "2.0",
        "image": 3,
    });
    command(id, UPGRADE_FIRMWARE, &args.to_string())
}

#[test]
fn a_firmware_upgrade_is_a_download_with_progress_then_its_result() {
    let mut r = CommandResponder::new(config(0.0));
    let mut rng = SmallRng::seed_from_u64(1);
    let mut seq = 1;
    assert_eq!(r.handle_command(&upgrade(5), 0, NOW_MS, &mut rng), Received::Executed);
    assert_eq!(answers(&mut r, &mut seq), ["5:Accepted"]);
    assert_eq!(r.poll_download(), None, "not before the delay");
    r.poll_timers(50_000);
    let job = r.poll_download().expect("a download");
    assert_eq!((job.command_id, job.size, job.version.as_str()), (5, 1000, "2.0"));
    assert!(job.url.ends_with("token=1.ab"));
    assert_eq!(r.poll_download(), None, "one at a time, once");
    assert!(r.is_busy());
    assert_eq!(r.handle_download_event(5, DownloadEvent::Progress(40)), None);
    let running = r.peek_answer().expect("progress");
    assert_eq!(r.result(running).output, "downloading 40%");
    assert_eq!(answers(&mut r, &mut seq), ["5:Running"]);
    assert_eq!(r.handle_download_event(5, DownloadEvent::Done(Ok("2.0".into()))), Some("2.0".into()));
    let done = r.peek_answer().expect("the result");
    assert_eq!(r.result(done).output, "installed firmware 2.0\n");
    assert_eq!(answers(&mut r, &mut seq), ["5:Succeeded"]);
    assert_eq!(r.handle_download_event(5, DownloadEvent::Progress(50)), None, "nothing after the end");
    assert!(r.peek_answer().is_none() && !r.is_busy());

    // A failed check fails the command with its reason.
    assert_eq!(r.handle_command(&upgrade(6), 0, NOW_MS, &mut rng), Received::Executed);
    r.poll_timers(50_000);
    r.poll_download().expect("a download");
    let failed = r.handle_download_event(6, DownloadEvent::Done(Err("sha256 mismatch: 00, not ab".into())));
    assert_eq!(failed, None);
    assert_eq!(answers(&mut r, &mut seq), ["6:Accepted", "6:Failed"]);
    // A repeat is answered with the last answer, not downloaded again.
    assert_eq!(r.handle_command(&upgrade(6), 0, NOW_MS, &mut rng), Received::Repeated);
    assert_eq!(r.poll_download(), None);
}

#[test]
fn apply_config_sets_and_removes_parameters_once() {
    let mut r = CommandResponder::new(config(0.0));
    let mut rng = SmallRng::seed_from_u64(3);
    let mut seq = 1;
    let first = command(1, "apply_config", r#"{"changes": {"call.autoAnswer.SIP": "1", "old": "x"}}"#);
    assert_eq!(r.handle_command(&first, 0, NOW_MS, &mut rng), Received::Executed);
    let second = command(2, "apply_config", r#"{"changes": {"old": null, "cfg": "https://p/0004f2000001.cfg"}}"#);
    assert_eq!(r.handle_command(&second, 0, NOW_MS, &mut rng), Received::Executed);
    r.poll_timers(50_000);
    assert_eq!(answers(&mut r, &mut seq), ["1:Accepted", "2:Accepted", "1:Succeeded", "2:Succeeded"]);
    let want: BTreeMap<String, String> = [("call.autoAnswer.SIP", "1"), ("cfg", "https://p/0004f2000001.cfg")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(r.configuration(), &want);
    // A resent command is not applied again.
    let changed_meanwhile = command(3, "apply_config", r#"{"changes": {"call.autoAnswer.SIP": "0"}}"#);
    r.handle_command(&changed_meanwhile, 60_000, NOW_MS, &mut rng);
    assert_eq!(r.handle_command(&first, 60_000, NOW_MS, &mut rng), Received::Repeated);
    assert_eq!(r.configuration()["call.autoAnswer.SIP"], "0");
    // Bad changes are refused without touching the configuration.
    let bad = command(4, "apply_config", r#"{"changes": {"bad key": "1"}}"#);
    assert!(matches!(r.handle_command(&bad, 60_000, NOW_MS, &mut rng), Received::Refused(_)));
    assert_eq!(r.configuration().len(), 2);
}
