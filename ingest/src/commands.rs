//! Commands down a device's session (ING-8): the sender that claims the device's queued
//! commands and hands them to the session's writer, the application of the device's answers to
//! the store, and the expiry task of the ingest tier.
//!
//! *Architecture invariant*: a device's answer is durable in the command store before the frame
//! carrying it goes to the shard, so the acknowledgement (sent after the shard's batch commit)
//! means the answer is stored. The command store's transitions only move forward, so a resent
//! answer changes nothing.

use std::sync::Arc;
use std::time::Duration;

use fleetpulse_proto::domain::CommandProgress;
use fleetpulse_proto::wire::{self, Downlink};
use fleetpulse_proto::{CommandId, DeviceId, UnixMillis, close_code};
use fleetpulse_store::{CommandStore, CommandUpdate, StoreError};
use tokio::sync::{Notify, watch};

use crate::Context;
use crate::metrics::{IngestMetrics, StatusLabel};
use crate::outbound::Outbound;
use crate::queue;
use crate::session::Close;

/// Commands one claim takes; the sender claims again while a claim comes back full.
pub(crate) const CLAIM_BATCH: u32 = 32;

/// Commands one expiry round expires at most.
const EXPIRE_BATCH: u32 = 10_000;

/// Expiry rounds run back to back at most before the task waits for its next tick.
const EXPIRE_ROUNDS: usize = 10;

/// How often the expiry task looks for commands past their deadline.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);

fn store_failed(error: StoreError) -> Close {
    tracing::error!(message = "Command store failed during a session.", %error);
    Close::new(close_code::SERVER_ERROR, "store unavailable; reconnect later")
}

/// Sends the device's queued commands: first puts the commands an earlier session sent but the
/// device never accepted back in the queue, then claims and sends until the queue is empty, then
/// waits for `wake`. Ends (`Ok`) when the session's writer is gone; `Err` when the store fails.
///
/// A device with nothing queued or sent (most sessions) costs one read here, not two writes: the
/// session is registered for wake-ups before this runs and a wake-up is kept until awaited
/// (`Notify::notify_one`), so a command queued after the read still wakes the loop.
pub(crate) async fn send_commands(
    ctx: &Context,
    device: DeviceId,
    wake: &Notify,
    out: queue::WeakSender<Outbound>,
) -> Result<(), Close> {
    // The store calls and a claimed batch are boxed: an idle session's task holds only its wait
    // for a wake-up (issue 14).
    if !Box::pin(requeue_unanswered(ctx, device)).await? {
        wake.notified().await;
    }
    loop {
        match Box::pin(send_claimed(ctx, device, &out)).await? {
            Sent::WriterGone => return Ok(()),
            Sent::Batch { full: true } => {}
            Sent::Batch { full: false } => wake.notified().await,
        }
    }
}

/// Whether the device has commands queued or sent; those an earlier session sent and the device
/// never accepted are put back in the queue.
async fn requeue_unanswered(ctx: &Context, device: DeviceId) -> Result<bool, Close> {
    if !ctx.commands.has_commands_to_send(device).await.map_err(store_failed)? {
        return Ok(false);
    }
    let requeued = ctx.commands.requeue_unanswered(device).await.map_err(store_failed)?;
    if requeued > 0 {
        tracing::debug!(message = "Commands sent to an earlier session requeued.", %device, requeued);
    }
    Ok(true)
}

/// What one claim sent.
enum Sent {
    /// The session's writer is gone: nothing more can be sent.
    WriterGone,
    /// The claimed commands were sent; `full` if the claim took a whole batch (more may wait).
    Batch { full: bool },
}

/// Claims up to [`CLAIM_BATCH`] of the device's queued commands and queues their frames.
async fn send_claimed(ctx: &Context, device: DeviceId, out: &queue::WeakSender<Outbound>) -> Result<Sent, Close> {
    let claimed =
        ctx.commands.claim_commands_to_send(device, UnixMillis::now(), CLAIM_BATCH).await.map_err(store_failed)?;
    let full = claimed.len() >= CLAIM_BATCH as usize;
    let frames: Vec<Box<Downlink>> = claimed.into_iter().map(command_frame).collect();
    for frame in frames {
        // A weak sender: the writer ends once the read loop is done, whatever this task holds.
        let Some(tx) = out.upgrade() else { return Ok(Sent::WriterGone) };
        if tx.send(Outbound::Frame(frame)).await.is_err() {
            return Ok(Sent::WriterGone);
        }
        ctx.metrics.commands_sent.inc();
    }
    Ok(Sent::Batch { full })
}

/// The downlink frame of a claimed command (taking all of it: nothing of the command is then
/// held while the frame waits for room in the session's queue).
fn command_frame(command: fleetpulse_store::Command) -> Box<Downlink> {
    Box::new(Downlink::Command(wire::Command {
        command_id: command.id.0,
        kind: command.kind,
        args_json: command.args,
        deadline_ms: command.deadline.0,
    }))
}

/// What became of a device's answer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Stored (or already stored: updates only move forward).
    Recorded,
    /// No such command of this device; the frame is rejected with this reason.
    Unknown(String),
}

/// Applies the device's answer to its command in the store, before its frame goes to the shard.
pub(crate) async fn record_answer(
    ctx: &Context,
    device: DeviceId,
    command: CommandId,
    progress: CommandProgress,
) -> Result<Answer, Close> {
    let (status, update) = command_update(progress);
    let recorded =
        ctx.commands.record_command_update(command, device, update, UnixMillis::now()).await.map_err(store_failed)?;
    if recorded.is_none() {
        ctx.metrics.command_answers_unknown.inc();
        return Ok(Answer::Unknown(format!("command {command} is not a command of this device")));
    }
    ctx.metrics.command_answers.get_or_create(&StatusLabel { status }).inc();
    Ok(Answer::Recorded)
}

/// The store's update for a device's progress report, and the status label it is counted under.
pub(crate) fn command_update(progress: CommandProgress) -> (&'static str, CommandUpdate) {
    match progress {
        CommandProgress::Accepted => ("accepted", CommandUpdate::Accepted),
        CommandProgress::Running { progress } => ("running", CommandUpdate::Running { progress }),
        CommandProgress::Succeeded { output } => ("succeeded", CommandUpdate::Succeeded { output }),
        CommandProgress::Failed { output, reason } => ("failed", CommandUpdate::Failed { output, reason }),
    }
}

/// The expiry task of the ingest tier: every [`EXPIRE_EVERY`], pending commands past their
/// deadline become `expired`, [`EXPIRE_BATCH`] at a time and at most [`EXPIRE_ROUNDS`] batches
/// per tick. Stops when `shutdown` turns true (or its sender is gone). A store failure is
/// logged, counted and tried again at the next tick.
pub(crate) async fn expire_commands(
    store: Arc<dyn CommandStore>,
    metrics: IngestMetrics,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(EXPIRE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = shutdown.changed() => if changed.is_err() || *shutdown.borrow() { return },
        }
        for _ in 0..EXPIRE_ROUNDS {
            match store.expire_commands(UnixMillis::now(), EXPIRE_BATCH).await {
                Ok(expired) => {
                    metrics.commands_expired.inc_by(expired.len() as u64);
                    if expired.len() < EXPIRE_BATCH as usize {
                        break;
                    }
                }
                Err(error) => {
                    metrics.command_expiry_errors.inc();
                    tracing::warn!(message = "Expiring commands failed; trying again.", %error);
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_maps_to_the_store_update_with_its_label() {
        assert_eq!(command_update(CommandProgress::Accepted), ("accepted", CommandUpdate::Accepted));
        assert_eq!(
            command_update(CommandProgress::Running { progress: "7%".into() }),
            ("running", CommandUpdate::Running { progress: "7%".into() })
        );
        assert_eq!(
            command_update(CommandProgress::Succeeded { output: "ok".into() }),
            ("succeeded", CommandUpdate::Succeeded { output: "ok".into() })
        );
        assert_eq!(
            command_update(CommandProgress::Failed { output: "o".into(), reason: "r".into() }),
            ("failed", CommandUpdate::Failed { output: "o".into(), reason: "r".into() })
        );
    }
}
