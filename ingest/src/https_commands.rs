//! Commands for devices without a QUIC session (ING-8 over HTTPS ingest, ING-10, and so behind
//! relays, ING-9): claimed into the answer of the device's request.
//!
//! Such a device has no stream the server could write to, so its commands ride on the answer to
//! its next request, after that request's frames are durable: the frames form appends `Command`
//! frames after the `Ack`, the JSON form lists them under `commands`. The device answers with
//! `command_result` frames in later requests, recorded as for QUIC (durable before the frame's
//! ack). A relay passes the `Command` frames on to the device's QUIC stream unchanged.
//!
//! | request (protocol version 2) | what it claims |
//! | --- | --- |
//! | a resend ([`RESEND_HEADER`]: the answer to these frames was lost, or the device (re)connected) | commands sent earlier and never accepted are queued again, then up to [`COMMANDS_PER_ANSWER`] are claimed |
//! | any other, of a device not found empty since its last wake | up to [`COMMANDS_PER_ANSWER`] |
//! | any other, of a device found empty since | nothing: a heartbeat costs no store write |
//!
//! A command in an answer that never arrived stays `sent` until the device's next resend queues
//! it again (the relay marks a device's connect and its retried exchanges as resends), or until
//! its deadline. A request without the header never requeues: a command just sent and not yet
//! accepted is not sent again by the next heartbeat. A device runs a command at most once (it remembers the ids it accepted), so one
//! sent twice is harmless.

use fleetpulse_proto::wire;
use fleetpulse_proto::{DeviceId, UnixMillis};

use crate::Context;

/// A request header (any value) saying "the answer to these frames was lost" or "the device
/// (re)connected": commands the device never accepted are sent again.
pub const RESEND_HEADER: &str = "x-fleetpulse-resend";

/// Commands one answer carries at most (the rest come with the next answers).
pub(crate) const COMMANDS_PER_ANSWER: u32 = 32;

/// The commands to put in the answer to a request of `device`; see the module documentation.
/// A store failure is logged and answers none (the request's frames are durable already; the
/// device's next request tries again).
pub(crate) async fn pickup(
    ctx: &Context,
    device: DeviceId,
    protocol_version: u16,
    requeue: bool,
) -> Vec<wire::Command> {
    if protocol_version < 2 {
        return Vec::new();
    }
    let signal = &ctx.command_signal;
    if !requeue && !signal.may_have_commands(device) {
        return Vec::new();
    }
    signal.checking(device);
    let claimed = async {
        if requeue {
            // A (re)connect of a device with nothing queued or sent (the usual case) costs a
            // read, not two writes.
            if !ctx.commands.has_commands_to_send(device).await? {
                return Ok(Vec::new());
            }
            ctx.commands.requeue_unanswered(device).await?;
        }
        ctx.commands.claim_commands_to_send(device, UnixMillis::now(), COMMANDS_PER_ANSWER).await
    }
    .await;
    match claimed {
        Ok(claimed) => {
            if !claimed.is_empty() {
                signal.claimed(device);
                ctx.metrics.commands_sent.inc_by(claimed.len() as u64);
            }
            claimed
                .into_iter()
                .map(|c| wire::Command {
                    command_id: c.id.0,
                    kind: c.kind,
                    args_json: c.args,
                    deadline_ms: c.deadline.0,
                })
                .collect()
        }
        Err(error) => {
            signal.claimed(device);
            tracing::warn!(message = "Claiming commands for an HTTPS ingest answer failed.", %error, %device);
            Vec::new()
        }
    }
}
