//! How a simulated device answers server commands (ING-8), sans-I/O: the commands it remembers,
//! what it answers, when, and which fake files it uploads first.
//!
//! The shell feeds it [`Downlink::Command`](fleetpulse_proto::wire::Downlink::Command)s
//! ([`CommandResponder::handle_command`]), the clock ([`CommandResponder::poll_timers`]), the
//! outcome of uploads ([`CommandResponder::handle_file_outcome`],
//! [`CommandResponder::handle_upload_error`]), connection loss
//! ([`CommandResponder::handle_disconnect`]) and how far the server acknowledged the device's
//! frames ([`CommandResponder::handle_acked`]); it drains answers to send as data frames
//! ([`CommandResponder::pop_answer`]) and uploads to start ([`CommandResponder::poll_upload`]).
//!
//! A command runs: `accepted` at once, then after the configured delay either `failed` (at the
//! configured rate) or, for a kind whose catalog entry names a file, an upload of a fake file and,
//! once the server answered `FileStored`/`FileRefused`, `succeeded`/`failed`; other kinds answer
//! `succeeded` with plausible output (ping and traceroute text). An `upgrade_firmware` command
//! (PRV-4) is a download instead ([`CommandResponder::poll_download`]): its progress is answered
//! `running` with `downloading N%`, its end `succeeded` (`installed firmware <version>`) or
//! `failed` with the reason; the shell then reports the new version.
//!
//! *At most once*: the responder remembers the commands it accepted (at most
//! [`MAX_REMEMBERED`], and only until their deadline once their final answer is acknowledged);
//! a command it knows is answered with its last answer again and not executed a second time.
//! A command that cannot be remembered (every slot holds one still running or unacknowledged) is
//! refused with a `failed` answer and not executed, which keeps the promise too.
//!
//! `apply_config` (PRV-4) changes the device's configuration ([`CommandResponder::configuration`],
//! at most [`MAX_CONFIGURATION`] parameters): its values are set and its `null`s removed when
//! the command is executed.

use std::collections::{BTreeMap, VecDeque};

use fleetpulse_proto::commands::{self, ArgKind, UPGRADE_FIRMWARE};
use fleetpulse_proto::domain::{MAX_COMMAND_OUTPUT, MAX_COMMAND_REASON};
use fleetpulse_proto::wire::{Command, CommandResult, CommandStatus};
use rand::Rng;
use serde_json::Value;

use crate::download::{Download, DownloadEvent};

/// Most commands one device remembers.
pub const MAX_REMEMBERED: usize = 256;

/// Most configuration parameters one simulated device holds.
pub const MAX_CONFIGURATION: usize = 5_000;

/// How simulated devices run commands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResponderConfig {
    /// From `accepted` to running the command's result (or starting its upload), microseconds.
    pub delay_us: u64,
    /// Share of commands that fail (0..=1).
    pub failure_rate: f64,
    /// Size of the fake file a file kind uploads, bytes.
    pub file_bytes: u64,
}

/// The status of one answer frame (the statuses a simulated device sends).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnswerStatus {
    /// Taken; will run.
    Accepted,
    /// Running, with progress text (a firmware download).
    Running,
    /// Finished successfully.
    Succeeded,
    /// Failed (or refused).
    Failed,
}

impl AnswerStatus {
    /// Whether it is the command's last answer.
    pub fn is_final(self) -> bool {
        !matches!(self, AnswerStatus::Accepted | AnswerStatus::Running)
    }

    fn wire(self) -> CommandStatus {
        match self {
            AnswerStatus::Accepted => CommandStatus::Accepted,
            AnswerStatus::Running => CommandStatus::Running,
            AnswerStatus::Succeeded => CommandStatus::Succeeded,
            AnswerStatus::Failed => CommandStatus::Failed,
        }
    }
}

/// An answer to send as a data frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Answer {
    /// The command answered.
    pub command_id: u64,
    /// Its status.
    pub status: AnswerStatus,
}

/// What [`CommandResponder::handle_command`] did with a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// A new command: accepted and executing.
    Executed,
    /// A command the device already knew: its last answer is sent again, nothing executed.
    Repeated,
    /// Not executed, answered `failed`: unknown kind, bad arguments, or no room to remember it.
    Refused(String),
    /// Its deadline had passed on arrival: not executed, not answered (the server expires it).
    Late,
}

/// A fake file to upload now on a stream of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    /// The command the file answers.
    pub command_id: u64,
    /// Its name (the catalog's file name of the kind).
    pub name: &'static str,
    /// Its size, bytes.
    pub size: u64,
}

/// A file outcome or upload the responder did not expect (a correct server never causes one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnexpectedFileOutcome {
    /// The command the server named.
    pub command_id: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Stage {
    /// Accepted; the result is due at this time.
    Running { due_us: u64 },
    /// Its file is to be uploaded on the next chance (a connection is up, no other upload runs).
    UploadDue,
    /// Its file is being uploaded or waits for the server's outcome.
    Uploading,
    /// Its firmware download is to start on the next chance.
    DownloadDue,
    /// Its firmware download runs.
    Downloading,
    /// Its final answer is given.
    Done,
}

#[derive(Debug)]
struct Entry {
    id: u64,
    deadline_ms: i64,
    /// The catalog's file name, for kinds that upload one.
    file: Option<&'static str>,
    /// The output of success (for file kinds, completed when the file is stored).
    output: String,
    /// What an `upgrade_firmware` command downloads.
    download: Option<Download>,
    /// The latest progress text (answered with `running`).
    progress: String,
    /// Set when the command fails (decided when it is accepted) or was refused.
    reason: Option<String>,
    stage: Stage,
    /// The last answer queued for it.
    last: AnswerStatus,
    /// Sequence number of its latest final answer frame, once pushed.
    final_seq: Option<u64>,
    /// Whether the server acknowledged its latest final answer.
    stored: bool,
    /// Whether [`CommandResponder::handle_acked`] reported it (once per command).
    reported: bool,
}

/// The commands one simulated device knows.
#[derive(Debug)]
pub struct CommandResponder {
    config: ResponderConfig,
    /// Oldest first.
    entries: VecDeque<Entry>,
    /// Answers waiting for room in the device's unacknowledged window, in order.
    answers: VecDeque<Answer>,
    /// Commands executed (never counts a repeated command).
    executions: u64,
    /// The configuration `apply_config` commands built.
    configuration: BTreeMap<String, String>,
}

impl CommandResponder {
    /// A device that knows no command yet.
    pub fn new(config: ResponderConfig) -> Self {
        CommandResponder {
            config,
            entries: VecDeque::new(),
            answers: VecDeque::new(),
            executions: 0,
            configuration: BTreeMap::new(),
        }
    }

    /// The configuration parameters `apply_config` commands set.
    pub fn configuration(&self) -> &BTreeMap<String, String> {
        &self.configuration
    }

    /// Commands this device executed.
    pub fn executions(&self) -> u64 {
        self.executions
    }

    /// Commands remembered right now.
    pub fn remembered(&self) -> usize {
        self.entries.len()
    }

    /// Whether a command is still running, uploading or has answers to send.
    pub fn is_busy(&self) -> bool {
        !self.answers.is_empty() || self.entries.iter().any(|e| e.stage != Stage::Done)
    }

    /// When [`CommandResponder::poll_timers`] next has something to do.
    pub fn next_due_us(&self) -> Option<u64> {
        self.entries
            .iter()
            .filter_map(|e| match e.stage {
                Stage::Running { due_us } => Some(due_us),
                _ => None,
            })
            .min()
    }

    /// A command arrived at `now_us` (run clock) / `now_ms` (Unix milliseconds).
    pub fn handle_command(&mut self, command: &Command, now_us: u64, now_ms: i64, rng: &mut impl Rng) -> Received {
        if let Some(entry) = self.entries.iter().find(|e| e.id == command.command_id) {
            let status = entry.last;
            self.answers.push_back(Answer { command_id: command.command_id, status });
            return Received::Repeated;
        }
        if command.deadline_ms <= now_ms {
            return Received::Late;
        }
        self.forget(now_ms);
        let mut entry = Entry {
            id: command.command_id,
            deadline_ms: command.deadline_ms,
            file: None,
            output: String::new(),
            download: None,
            progress: String::new(),
            reason: None,
            stage: Stage::Done,
            last: AnswerStatus::Failed,
            final_seq: None,
            stored: false,
            reported: false,
        };
        let refusal = match parse_command(command) {
            Err(reason) => Some(reason),
            Ok(_) if self.entries.len() >= MAX_REMEMBERED => {
                Some(format!("busy: {MAX_REMEMBERED} commands running or unacknowledged"))
            }
            Ok((kind, args)) => {
                entry.file = kind.file;
                if kind.name == UPGRADE_FIRMWARE {
                    entry.download = Some(download_of(command.command_id, &args));
                }
                entry.output = fake_output(kind.name, &args, command.command_id);
                if rng.random_bool(self.config.failure_rate.clamp(0.0, 1.0)) {
                    entry.reason = Some(format!("simulated failure of {} (--command-failure-rate)", kind.name));
                } else if kind.name == "apply_config" {
                    match apply_config(&mut self.configuration, &args) {
                        Ok(line) => entry.output = line,
                        Err(reason) => entry.reason = Some(reason),
                    }
                }
                None
            }
        };
        let received = match refusal {
            Some(reason) => {
                let reason = truncate(&reason, MAX_COMMAND_REASON);
                entry.reason = Some(reason.clone());
                self.answers.push_back(Answer { command_id: entry.id, status: AnswerStatus::Failed });
                // Remembered only if there is room (then a resend gets the same answer); else a
                // resend is refused again. Either way it never runs.
                if self.entries.len() >= MAX_REMEMBERED {
                    return Received::Refused(reason);
                }
                Received::Refused(reason)
            }
            None => {
                self.executions += 1;
                entry.stage = Stage::Running { due_us: now_us.saturating_add(self.config.delay_us) };
                entry.last = AnswerStatus::Accepted;
                self.answers.push_back(Answer { command_id: entry.id, status: AnswerStatus::Accepted });
                Received::Executed
            }
        };
        self.entries.push_back(entry);
        received
    }

    /// Runs every command whose delay has passed by `now_us`.
    pub fn poll_timers(&mut self, now_us: u64) {
        for entry in &mut self.entries {
            let Stage::Running { due_us } = entry.stage else { continue };
            if due_us > now_us {
                continue;
            }
            if entry.reason.is_some() {
                finish(&mut self.answers, entry, AnswerStatus::Failed);
            } else if entry.download.is_some() {
                entry.stage = Stage::DownloadDue;
            } else if entry.file.is_some() {
                entry.stage = Stage::UploadDue;
            } else {
                finish(&mut self.answers, entry, AnswerStatus::Succeeded);
            }
        }
    }

    /// The next upload to start, if one is due and none is running (one at a time per device).
    pub fn poll_upload(&mut self) -> Option<Upload> {
        if self.entries.iter().any(|e| e.stage == Stage::Uploading) {
            return None;
        }
        let entry = self.entries.iter_mut().find(|e| e.stage == Stage::UploadDue)?;
        entry.stage = Stage::Uploading;
        Some(Upload { command_id: entry.id, name: entry.file?, size: self.config.file_bytes })
    }

    /// The next firmware download to start, if one is due and none runs (one at a time).
    pub fn poll_download(&mut self) -> Option<Download> {
        if self.entries.iter().any(|e| e.stage == Stage::Downloading) {
            return None;
        }
        let entry = self.entries.iter_mut().find(|e| e.stage == Stage::DownloadDue)?;
        entry.stage = Stage::Downloading;
        entry.download.clone()
    }

    /// What the download of `command_id` reported: progress is answered `running`; its end
    /// finishes the command. Answers the version installed, once it is.
    pub fn handle_download_event(&mut self, command_id: u64, event: DownloadEvent) -> Option<String> {
        let entry = self.entries.iter_mut().find(|e| e.id == command_id && e.stage == Stage::Downloading)?;
        match event {
            DownloadEvent::Progress(percent) => {
                entry.progress = format!("downloading {percent}%");
                entry.last = AnswerStatus::Running;
                self.answers.push_back(Answer { command_id, status: AnswerStatus::Running });
                None
            }
            DownloadEvent::Done(Ok(version)) => {
                entry.output = format!("installed firmware {version}\n");
                finish(&mut self.answers, entry, AnswerStatus::Succeeded);
                Some(version)
            }
            DownloadEvent::Done(Err(reason)) => {
                entry.reason = Some(truncate(&reason, MAX_COMMAND_REASON));
                finish(&mut self.answers, entry, AnswerStatus::Failed);
                None
            }
        }
    }

    /// The server stored (`Ok(file id)`) or refused (`Err(reason)`) the upload of `command_id`.
    pub fn handle_file_outcome(
        &mut self,
        command_id: u64,
        outcome: Result<u64, &str>,
    ) -> Result<AnswerStatus, UnexpectedFileOutcome> {
        let entry = self
            .entries
            .iter_mut()
            .find(|e| e.id == command_id && matches!(e.stage, Stage::Uploading | Stage::UploadDue))
            .ok_or(UnexpectedFileOutcome { command_id })?;
        let status = match outcome {
            Ok(file_id) => {
                let line = format!(
                    "\nfile {} ({} bytes) stored as file {file_id}",
                    entry.file.unwrap_or("?"),
                    self.config.file_bytes
                );
                entry.output.push_str(&line);
                entry.output = truncate(&entry.output, MAX_COMMAND_OUTPUT);
                AnswerStatus::Succeeded
            }
            Err(reason) => {
                entry.reason = Some(truncate(&format!("file refused: {reason}"), MAX_COMMAND_REASON));
                AnswerStatus::Failed
            }
        };
        finish(&mut self.answers, entry, status);
        Ok(status)
    }

    /// The upload of `command_id` failed on a connection that is still up: the command fails.
    pub fn handle_upload_error(&mut self, command_id: u64, error: &str) {
        if let Some(entry) = self.entries.iter_mut().find(|e| e.id == command_id && e.stage == Stage::Uploading) {
            entry.reason = Some(truncate(&format!("upload failed: {error}"), MAX_COMMAND_REASON));
            finish(&mut self.answers, entry, AnswerStatus::Failed);
        }
    }

    /// The connection was lost: an upload in progress starts again on the next one.
    pub fn handle_disconnect(&mut self) {
        for entry in &mut self.entries {
            if entry.stage == Stage::Uploading {
                entry.stage = Stage::UploadDue;
            }
        }
    }

    /// The next answer to send. Put it into a data frame, then tell
    /// [`CommandResponder::answer_sent`] its sequence number; if there is no room for a frame,
    /// leave it (it stays first).
    pub fn peek_answer(&self) -> Option<Answer> {
        self.answers.front().copied()
    }

    /// The answer from [`CommandResponder::peek_answer`] now has sequence number `seq`.
    pub fn answer_sent(&mut self, seq: u64) {
        let Some(answer) = self.answers.pop_front() else { return };
        if !answer.status.is_final() {
            return;
        }
        if let Some(entry) = self.entries.iter_mut().find(|e| e.id == answer.command_id) {
            entry.final_seq = Some(seq);
            entry.stored = false;
        }
    }

    /// Takes the next answer, for callers that always have room (tests).
    pub fn pop_answer(&mut self) -> Option<Answer> {
        self.answers.pop_front()
    }

    /// The server acknowledged every frame below `first_unacked`: calls `stored` for each command
    /// whose final answer became durable now (once per command, not again for a repeat).
    pub fn handle_acked(&mut self, first_unacked: u64, mut stored: impl FnMut(u64, AnswerStatus)) {
        for entry in &mut self.entries {
            if !entry.stored && entry.final_seq.is_some_and(|seq| seq < first_unacked) {
                entry.stored = true;
                if !entry.reported {
                    entry.reported = true;
                    stored(entry.id, entry.last);
                }
            }
        }
    }

    /// The frame body of an answer.
    pub fn result(&self, answer: Answer) -> CommandResult {
        let Some(entry) = self.entries.iter().find(|e| e.id == answer.command_id) else {
            return forgotten_answer(answer);
        };
        let (output, reason) = match answer.status {
            AnswerStatus::Accepted => (String::new(), String::new()),
            AnswerStatus::Running => (entry.progress.clone(), String::new()),
            AnswerStatus::Succeeded => (entry.output.clone(), String::new()),
            AnswerStatus::Failed => (String::new(), entry.reason.clone().unwrap_or_else(|| "failed".to_owned())),
        };
        CommandResult { command_id: answer.command_id, status: answer.status.wire(), output, reason }
    }

    /// Forgets what need not be remembered any more: commands answered, acknowledged and past
    /// their deadline (the server will not send them again), then the oldest answered and
    /// acknowledged ones while all slots are taken.
    fn forget(&mut self, now_ms: i64) {
        self.entries.retain(|e| !(e.stage == Stage::Done && e.stored && e.deadline_ms <= now_ms));
        while self.entries.len() >= MAX_REMEMBERED {
            let Some(oldest) = self.entries.iter().position(|e| e.stage == Stage::Done && e.stored) else { break };
            self.entries.remove(oldest);
        }
    }
}

/// The body of an answer whose command is no longer remembered (only reachable for answers that
/// were already acknowledged, see [`CommandResponder::forget`]).
pub fn forgotten_answer(answer: Answer) -> CommandResult {
    let reason = if answer.status == AnswerStatus::Failed { "failed" } else { "" };
    CommandResult {
        command_id: answer.command_id,
        status: answer.status.wire(),
        output: String::new(),
        reason: reason.into(),
    }
}

/// Applies the `changes` of a validated `apply_config` to `configuration`; refuses (changing
/// nothing) when the result would hold more than [`MAX_CONFIGURATION`] parameters.
fn apply_config(configuration: &mut BTreeMap<String, String>, args: &Value) -> Result<String, String> {
    let Some(changes) = args.get("changes").and_then(Value::as_object) else {
        return Err("apply_config without changes".into());
    };
    let added = changes.iter().filter(|(k, v)| !v.is_null() && !configuration.contains_key(k.as_str())).count();
    if configuration.len() + added > MAX_CONFIGURATION {
        return Err(format!("configuration full: a device holds at most {MAX_CONFIGURATION} parameters"));
    }
    let (mut set, mut removed) = (0, 0);
    for (key, value) in changes {
        match value.as_str() {
            Some(v) => {
                configuration.insert(key.clone(), v.to_owned());
                set += 1;
            }
            None => {
                configuration.remove(key);
                removed += 1;
            }
        }
    }
    Ok(format!("configuration applied: {set} set, {removed} removed, {} parameters\n", configuration.len()))
}

fn finish(answers: &mut VecDeque<Answer>, entry: &mut Entry, status: AnswerStatus) {
    entry.stage = Stage::Done;
    entry.last = status;
    answers.push_back(Answer { command_id: entry.id, status });
}

/// Validates a command as a device would: a kind of the catalog and its arguments (defaults
/// filled in).
fn parse_command(command: &Command) -> Result<(&'static commands::CommandKind, Value), String> {
    let kind = commands::command_kind(&command.kind)
        .ok_or_else(|| format!("unknown command kind {:?}", truncate(&command.kind, 64)))?;
    let args: Value = if command.args_json.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&command.args_json).map_err(|e| format!("arguments are not JSON: {e}"))?
    };
    let args = commands::validate_internal_command(kind.name, &args).map_err(|e| e.to_string())?;
    Ok((kind, args))
}

/// The download of an `upgrade_firmware` command whose arguments the catalog accepted.
fn download_of(command_id: u64, args: &Value) -> Download {
    let text = |name: &str| args.get(name).and_then(Value::as_str).unwrap_or_default().to_owned();
    Download {
        command_id,
        url: text("url"),
        sha256: text("sha256"),
        size: args.get("size").and_then(Value::as_u64).unwrap_or_default(),
        version: text("version"),
    }
}

/// Arguments for `kind` when none are given: every host argument is `127.0.0.1`, configuration
/// changes set `loadtest.sample`, everything else takes its default.
pub fn default_args(kind: &str) -> Value {
    let mut args = serde_json::Map::new();
    for arg in commands::command_kind(kind).map_or(&[][..], |k| k.args) {
        match arg.kind {
            ArgKind::Host => {
                args.insert(arg.name.to_owned(), Value::from("127.0.0.1"));
            }
            ArgKind::ConfigChanges { .. } => {
                args.insert(arg.name.to_owned(), serde_json::json!({"loadtest.sample": "1"}));
            }
            _ => {}
        }
    }
    Value::Object(args)
}

/// What a command prints: ping and traceroute text in the usual format, a line otherwise.
fn fake_output(kind: &str, args: &Value, command_id: u64) -> String {
    let target = args.get("target").and_then(Value::as_str).unwrap_or("127.0.0.1");
    let int = |name: &str, default: u64| args.get(name).and_then(Value::as_u64).unwrap_or(default);
    // A small deterministic jitter, so that the numbers differ between commands.
    let ms = |i: u64| 0.2 + ((command_id.wrapping_mul(31).wrapping_add(i * 17)) % 900) as f64 / 1000.0;
    let text = match kind {
        "ping" => {
            let count = int("count", 4);
            let mut out = format!("PING {target} ({target}): 56 data bytes\n");
            for i in 0..count {
                out.push_str(&format!("64 bytes from {target}: icmp_seq={i} ttl=64 time={:.3} ms\n", ms(i)));
            }
            let times: Vec<f64> = (0..count).map(ms).collect();
            let min = times.iter().copied().fold(f64::INFINITY, f64::min);
            let max = times.iter().copied().fold(0.0, f64::max);
            let avg = times.iter().sum::<f64>() / count.max(1) as f64;
            out.push_str(&format!(
                "\n--- {target} ping statistics ---\n{count} packets transmitted, {count} packets received, 0.0% packet loss\n\
                 round-trip min/avg/max = {min:.3}/{avg:.3}/{max:.3} ms\n"
            ));
            out
        }
        "traceroute" => {
            let hops = int("max_hops", 30).min(4);
            let mut out =
                format!("traceroute to {target} ({target}), {} hops max, 60 byte packets\n", int("max_hops", 30));
            for hop in 1..hops {
                let (a, b, c) = (ms(hop * 3), ms(hop * 3 + 1), ms(hop * 3 + 2));
                out.push_str(&format!(" {hop}  10.{hop}.0.1  {a:.3} ms  {b:.3} ms  {c:.3} ms\n"));
            }
            let (a, b, c) = (ms(100), ms(101), ms(102));
            out.push_str(&format!(" {hops}  {target}  {a:.3} ms  {b:.3} ms  {c:.3} ms\n"));
            out
        }
        "reboot" => "rebooting now\n".to_owned(),
        "factory_reset" => "factory settings restored; rebooting\n".to_owned(),
        "refresh_status" => "status, SIP lines and resources reported\n".to_owned(),
        other => format!("{other} done\n"),
    };
    truncate(&text, MAX_COMMAND_OUTPUT)
}

/// `s` cut to at most `max` bytes at a character boundary.
fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests;
