//! How a device of the HTTPS load test answers the commands that ride on its answers (ING-8 over
//! ING-10, issue 15 item 5): the same [`CommandResponder`] as a QUIC device (accepted at once,
//! the result after `--command-delay`, at most once), its answers sent as data frames in the
//! device's next request, counted in the report's `device_commands`. HTTPS ingest carries no
//! file uploads, and the HTTPS devices download no firmware: commands that need either are
//! answered `failed` with that reason.

use fleetpulse_proto::UnixMillis;
use fleetpulse_proto::wire::{Command, CommandResult};

use crate::config::{LoadConfig, MessageKind};
use crate::device::DeviceSession;
use crate::download::DownloadEvent;
use crate::report::DeviceCommands;
use crate::responder::{Answer, AnswerStatus, CommandResponder, Received, ResponderConfig};
use crate::stats::Counters;

/// One HTTPS device's commands.
#[derive(Debug)]
pub(super) struct HttpsCommands {
    responder: CommandResponder,
}

impl HttpsCommands {
    pub(super) fn new(cfg: &LoadConfig) -> HttpsCommands {
        HttpsCommands {
            responder: CommandResponder::new(ResponderConfig {
                delay_us: u64::try_from(cfg.command_delay.as_micros()).unwrap_or(u64::MAX),
                failure_rate: cfg.command_failure_rate,
                file_bytes: cfg.file_bytes,
            }),
        }
    }

    /// Whether a command still runs or has answers to send.
    pub(super) fn is_busy(&self) -> bool {
        self.responder.is_busy()
    }

    /// When the device should exchange for its commands (run clock): now if answers wait, else
    /// when a running command's result is due; `None` if nothing is pending.
    pub(super) fn next_wake_us(&self) -> Option<u64> {
        if self.responder.peek_answer().is_some() {
            return Some(0);
        }
        self.responder.next_due_us()
    }

    /// A `Command` from an answer.
    pub(super) fn handle_command(&mut self, command: &Command, now_us: u64, counters: &Counters) {
        counters.commands_received.incr();
        match self.responder.handle_command(command, now_us, UnixMillis::now().0, &mut rand::rng()) {
            Received::Executed => counters.commands_executed.incr(),
            Received::Repeated => counters.commands_repeated.incr(),
            Received::Refused(reason) => {
                tracing::debug!(command_id = command.command_id, %reason, "command refused");
                counters.commands_refused.incr();
            }
            Received::Late => counters.commands_late.incr(),
        }
    }

    /// Runs the commands due by `now_us`, fails what HTTPS cannot do, and moves the answers into
    /// the session while it has room (they go with the next request).
    pub(super) fn pump(&mut self, session: &mut DeviceSession, now_us: u64) {
        self.responder.poll_timers(now_us);
        while let Some(upload) = self.responder.poll_upload() {
            self.responder.handle_upload_error(upload.command_id, "the HTTPS transport carries no file uploads");
        }
        while let Some(download) = self.responder.poll_download() {
            let refused = DownloadEvent::Done(Err("the load tester's HTTPS devices download no firmware".into()));
            self.responder.handle_download_event(download.command_id, refused);
        }
        while let Some(answer) = self.responder.peek_answer() {
            let Some(seq) = session.push(MessageKind::CommandResult(answer), now_us) else { break };
            self.responder.answer_sent(seq);
        }
    }

    /// The body of an answer's data frame.
    pub(super) fn result(&self, answer: Answer) -> CommandResult {
        self.responder.result(answer)
    }

    /// After acknowledgements: counts the final answers that became durable.
    pub(super) fn after_acks(&mut self, session: &DeviceSession, counters: &Counters) {
        self.responder.handle_acked(session.first_unacked(), |_, status| match status {
            AnswerStatus::Failed => counters.commands_failed.incr(),
            _ => counters.commands_succeeded.incr(),
        });
    }
}

/// The report's command counts from the counters.
pub(super) fn report(c: &Counters) -> DeviceCommands {
    DeviceCommands {
        received: c.commands_received.get(),
        executed: c.commands_executed.get(),
        repeated: c.commands_repeated.get(),
        refused: c.commands_refused.get(),
        late: c.commands_late.get(),
        succeeded: c.commands_succeeded.get(),
        failed: c.commands_failed.get(),
        ..DeviceCommands::default()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use fleetpulse_proto::wire::CommandStatus;

    use super::*;

    fn command(id: u64, kind: &str, args: &str) -> Command {
        Command { command_id: id, kind: kind.into(), args_json: args.into(), deadline_ms: UnixMillis::now().0 + 60_000 }
    }

    /// The command answers queued in the session, as `id:status[:reason]`, acknowledged.
    fn sent(session: &mut DeviceSession, commands: &mut HttpsCommands, counters: &Counters) -> Vec<String> {
        let mut out = Vec::new();
        // One request: a session that starts where the server's mark is.
        let mark = session.first_unacked().saturating_sub(1);
        session.handle_welcome(mark, 0, |_| {});
        let mut last = mark;
        while let Some(t) = session.poll_transmit() {
            last = t.frame.seq;
            if let MessageKind::CommandResult(answer) = t.frame.kind {
                let r = commands.result(answer);
                let status = match r.status {
                    CommandStatus::Accepted => "accepted",
                    CommandStatus::Succeeded => "succeeded",
                    CommandStatus::Failed => "failed",
                    _ => "other",
                };
                out.push(if r.reason.is_empty() {
                    format!("{}:{status}", r.command_id)
                } else {
                    format!("{}:{status}:{}", r.command_id, r.reason)
                });
            }
        }
        session.handle_ack(last, 0, |_| {});
        commands.after_acks(session, counters);
        session.handle_disconnect();
        out
    }

    #[test]
    fn commands_are_accepted_run_and_answered_and_uploads_fail_with_their_reason() {
        let cfg = LoadConfig { command_delay: Duration::from_micros(100), ..LoadConfig::default() };
        let counters = Counters::default();
        let mut session = DeviceSession::new();
        let mut commands = HttpsCommands::new(&cfg);
        assert_eq!(commands.next_wake_us(), None);
        commands.handle_command(&command(1, "ping", r#"{"target": "10.0.0.1"}"#), 0, &counters);
        commands.handle_command(&command(2, "export_config", "null"), 0, &counters);
        assert_eq!(commands.next_wake_us(), Some(0), "answers wait");
        commands.pump(&mut session, 0);
        assert_eq!(sent(&mut session, &mut commands, &counters), ["1:accepted", "2:accepted"]);
        assert!(commands.is_busy());
        assert_eq!(commands.next_wake_us(), Some(100), "the results are due after the delay");
        commands.pump(&mut session, 100);
        let results = sent(&mut session, &mut commands, &counters);
        assert_eq!(results[0], "1:succeeded");
        assert!(results[1].starts_with("2:failed:") && results[1].contains("HTTPS"), "{results:?}");
        assert!(!commands.is_busy());
        // The same command again is answered again, not run again.
        commands.handle_command(&command(1, "ping", r#"{"target": "10.0.0.1"}"#), 200, &counters);
        commands.pump(&mut session, 200);
        assert_eq!(sent(&mut session, &mut commands, &counters), ["1:succeeded"]);
        let report = report(&counters);
        assert_eq!((report.received, report.executed, report.repeated), (3, 2, 1));
        assert_eq!((report.succeeded, report.failed), (1, 1));
    }
}
