//! What one simulated device keeps across its connections, and how it turns its schedule, the
//! server's messages and the commands it runs into frames (the device task's synchronous part).

use bytes::BytesMut;
use fleetpulse_proto::wire::{DataFrame, Downlink, Message, Uplink};
use fleetpulse_proto::{FrameDecoder, FrameEncoder, UnixMillis};

use super::{Fleet, Group, Phase};
use crate::alarms::DeviceTokens;
use crate::config::MessageKind;
use crate::device::DeviceSession;
use crate::download::{self, DownloadEvent};
use crate::messages::DeviceProfile;
use crate::quic::LinkError;
use crate::responder::{AnswerStatus, CommandResponder, Received};
use crate::schedule::{self, Schedule};
use crate::upload::UploadEnd;

/// A snapshot of what a device has left to do.
#[derive(Debug, Clone, Copy)]
pub(super) struct WorkLeft {
    /// Some frames are unacknowledged, or a command is still running or uploading.
    pub(super) unacked: bool,
    /// Intended time of the next frame the schedule owes (`u64::MAX`: none).
    pub(super) next_due_us: u64,
}

impl WorkLeft {
    /// Whether anything intended up to `gen_end_us` is still to be sent or acknowledged.
    pub(super) fn before(self, gen_end_us: u64) -> bool {
        self.unacked || self.next_due_us <= gen_end_us
    }
}

/// The state one device keeps across its connections.
#[derive(Debug)]
pub(super) struct DeviceState {
    pub(super) profile: DeviceProfile,
    /// Numbers its injected alarms.
    pub(super) tokens: DeviceTokens,
    pub(super) session: DeviceSession,
    /// Starts with the first `Welcome`.
    pub(super) schedule: Option<Schedule>,
    pub(super) encoder: FrameEncoder,
    /// The commands it knows and runs.
    pub(super) commands: CommandResponder,
    /// The firmware download that runs (its command, its events); it goes on across
    /// connections, as a phone's would.
    pub(super) download: Option<(u64, tokio::sync::mpsc::Receiver<DownloadEvent>)>,
    /// A firmware upgrade was installed: the device restarts (reconnects with a new `Hello`)
    /// once its answers are acknowledged.
    pub(super) reboot: bool,
}

impl DeviceState {
    pub(super) fn work_left(&self) -> WorkLeft {
        WorkLeft {
            unacked: !self.session.is_idle() || self.commands.is_busy(),
            next_due_us: self.schedule.as_ref().map_or(u64::MAX, Schedule::next_due_us),
        }
    }

    /// Moves every frame due up to `horizon_us` from the schedule into the session, while it has
    /// room; registers injected alarm raises with the tracker. Command answers go first.
    pub(super) fn generate(&mut self, horizon_us: u64, fleet: &Fleet) {
        self.commands.poll_timers(fleet.now_us());
        self.push_answers(fleet);
        let Some(schedule) = &mut self.schedule else { return };
        let mut rng = rand::rng();
        while !self.session.is_full() {
            let Some(due) = schedule.pop_due(horizon_us) else { break };
            let kind = schedule::kind_of(due, &fleet.mix, self.tokens, &mut rng);
            self.session.push(kind, due.intended_us);
            if let (MessageKind::InjectedAlarm { n, clear: false }, Some(tracker)) = (kind, &fleet.alarms) {
                tracker.injected(n, fleet.instant_at(due.intended_us));
            }
        }
    }

    /// Moves the responder's answers into the session, while it has room.
    fn push_answers(&mut self, fleet: &Fleet) {
        while let Some(answer) = self.commands.peek_answer() {
            let Some(seq) = self.session.push(MessageKind::CommandResult(answer), fleet.now_us()) else { break };
            self.commands.answer_sent(seq);
        }
    }

    /// When the schedule next wants to generate, if it can and should, or a command is due.
    pub(super) fn next_wake_us(&self, phase: Phase) -> Option<u64> {
        let limit = match phase {
            Phase::Sending => u64::MAX - 1,
            Phase::Draining { gen_end_us } | Phase::Closing { gen_end_us } => gen_end_us,
        };
        // A full window is woken by acknowledgements, not by the clock.
        let schedule =
            self.schedule.as_ref().map(Schedule::next_due_us).filter(|&due| due <= limit && !self.session.is_full());
        match (schedule, self.commands.next_due_us()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Encodes up to `burst` frames from the session into `out`.
    pub(super) fn fill(&mut self, out: &mut BytesMut, fleet: &Fleet) {
        for _ in 0..fleet.schedule.burst {
            let Some(tx) = self.session.poll_transmit() else { break };
            let f = tx.frame;
            let body = match f.kind {
                MessageKind::CommandResult(answer) => Message::CommandResult(self.commands.result(answer)),
                kind => self.profile.message(kind, f.seq, f.intended_us, fleet.run_start_ms),
            };
            let frame = Uplink::Data(DataFrame { seq: f.seq, sent_at_ms: UnixMillis::now().0, body });
            if let Err(error) = self.encoder.encode(&frame, out) {
                tracing::warn!(%error, seq = f.seq, "could not encode a frame");
                fleet.counters.errors.incr();
                continue;
            }
            if tx.resend { &fleet.counters.resent } else { &fleet.counters.sent }.incr();
        }
    }

    /// After acknowledgements: counts command answers that became durable and tells the tracker.
    pub(super) fn after_acks(&mut self, fleet: &Fleet) {
        let now_us = fleet.now_us();
        self.commands.handle_acked(self.session.first_unacked(), |id, status| {
            match status {
                AnswerStatus::Failed => fleet.counters.commands_failed.incr(),
                _ => fleet.counters.commands_succeeded.incr(),
            }
            if let Some(tracker) = &fleet.commands {
                tracker.stored(id, now_us, status);
            }
        });
    }

    /// Starts the next firmware download the responder has due, if none runs.
    pub(super) fn start_download(&mut self, fleet: &Fleet) {
        if self.download.is_some() {
            return;
        }
        let Some(job) = self.commands.poll_download() else { return };
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        self.download = Some((job.command_id, rx));
        tokio::spawn(download::run(fleet.downloads.clone(), job, tx));
    }

    /// What the running download reported (`None`: its task is gone).
    pub(super) fn download_event(&mut self, event: Option<DownloadEvent>, fleet: &Fleet) {
        let Some((command_id, _)) = self.download else { return };
        let event = event.unwrap_or_else(|| DownloadEvent::Done(Err("the download task ended".into())));
        let done = matches!(event, DownloadEvent::Done(_));
        if let DownloadEvent::Done(Err(reason)) = &event {
            tracing::warn!(mac = %self.profile.mac, command_id, %reason, "a firmware download failed");
        }
        if let Some(version) = self.commands.handle_download_event(command_id, event) {
            fleet.counters.firmware_upgrades.incr();
            self.profile.set_firmware(version);
            self.reboot = true;
        }
        if done {
            self.download = None;
        }
        self.push_answers(fleet);
    }

    /// How an upload stream of `command_id` ended.
    pub(super) fn upload_ended(&mut self, command_id: u64, end: UploadEnd, fleet: &Fleet) {
        match end {
            UploadEnd::Sent => fleet.counters.files_uploaded.incr(),
            // The outcome follows on the control stream, or the connection is gone and the
            // upload starts again on the next one.
            UploadEnd::Stopped(_) | UploadEnd::ConnectionLost => {}
            UploadEnd::Failed(error) => {
                tracing::warn!(mac = %self.profile.mac, command_id, %error, "a file upload failed");
                fleet.counters.errors.incr();
                self.commands.handle_upload_error(command_id, &error);
            }
        }
    }

    /// Applies every complete downlink frame in `decoder`.
    pub(super) fn handle_downlink(
        &mut self,
        decoder: &mut FrameDecoder,
        fleet: &Fleet,
        group: &Group,
    ) -> Result<(), LinkError> {
        loop {
            let message = match decoder.next_frame::<Downlink>() {
                Ok(Some(message)) => message,
                Ok(None) => return Ok(()),
                Err(e) => return Err(LinkError::other(format!("undecodable downlink frame: {e}"))),
            };
            let now_us = fleet.now_us();
            let resolved = match message {
                Downlink::Ack(ack) => {
                    group.latency.with_ack(|h| self.session.handle_ack(ack.seq, now_us, |l| h.saturating_record(l)))
                }
                Downlink::Rejected(rejected) => {
                    tracing::debug!(mac = %self.profile.mac, seq = rejected.seq, reason = %rejected.reason, "frame rejected");
                    group
                        .latency
                        .with_ack(|h| self.session.handle_rejected(rejected.seq, now_us, |l| h.saturating_record(l)))
                }
                Downlink::Welcome(_) => return Err(LinkError::other("a second Welcome in one session")),
                Downlink::Command(command) => {
                    self.handle_command(&command, now_us, fleet);
                    continue;
                }
                Downlink::FileStored(stored) => {
                    self.file_outcome(stored.command_id, Ok(stored.file_id), fleet);
                    continue;
                }
                Downlink::FileRefused(refused) => {
                    self.file_outcome(refused.command_id, Err(&refused.reason), fleet);
                    continue;
                }
            };
            fleet.counters.resolved(resolved);
            self.after_acks(fleet);
            if let Some(anomaly) = resolved.anomaly {
                tracing::warn!(mac = %self.profile.mac, ?anomaly, "the server acknowledged something impossible");
                fleet.counters.errors.incr();
            }
        }
    }

    fn handle_command(&mut self, command: &fleetpulse_proto::wire::Command, now_us: u64, fleet: &Fleet) {
        let c = &fleet.counters;
        c.commands_received.incr();
        if let Some(tracker) = &fleet.commands {
            tracker.received(command.command_id, now_us);
        }
        match self.commands.handle_command(command, now_us, UnixMillis::now().0, &mut rand::rng()) {
            Received::Executed => c.commands_executed.incr(),
            Received::Repeated => c.commands_repeated.incr(),
            Received::Refused(reason) => {
                tracing::debug!(mac = %self.profile.mac, command_id = command.command_id, %reason, "command refused");
                c.commands_refused.incr();
            }
            Received::Late => c.commands_late.incr(),
        }
        self.push_answers(fleet);
    }

    fn file_outcome(&mut self, command_id: u64, outcome: Result<u64, &str>, fleet: &Fleet) {
        match self.commands.handle_file_outcome(command_id, outcome) {
            Ok(_) if outcome.is_ok() => fleet.counters.files_stored.incr(),
            Ok(_) => fleet.counters.files_refused.incr(),
            Err(unexpected) => {
                tracing::warn!(mac = %self.profile.mac, ?unexpected, "a file outcome for no upload of this device");
                fleet.counters.errors.incr();
            }
        }
        self.push_answers(fleet);
    }
}
