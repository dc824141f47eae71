//! The one writer of a session's control stream: acknowledgements, rejections, commands and
//! file outcomes.
//!
//! Rejections, commands and file outcomes go through one bounded queue of [`Outbound`] items, in
//! order; acknowledgements come from the session's [`AckSlot`], where the shard leaves its
//! answers. Each time the writer wakes it reads the slot, then takes every queued item, then
//! writes one cumulative `Ack` for every read answered meanwhile: reading the slot first means a
//! read's `Rejected` (queued before the read went to the shard) always leaves before the `Ack`
//! covering it.

use bytes::BytesMut;
use fleetpulse_proto::FrameEncoder;
use fleetpulse_proto::close_code;
use fleetpulse_proto::wire::{Ack, Downlink, Rejected};
use quinn::SendStream;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;

use crate::Context;
use crate::ack_slot::AckSlot;
use crate::session::Close;

/// Items the writer sends, in queue order. The queue holds at most [`MAX_OUTBOUND`].
#[derive(Debug)]
pub(crate) enum Outbound {
    /// A frame whose content was refused (it counts as acknowledged).
    Rejected(u64, String),
    /// Any other downlink frame (a command, a file outcome).
    Frame(Box<Downlink>),
}

/// Items a session may have queued for its writer.
pub(crate) const MAX_OUTBOUND: usize = 256;

/// Writes what the session queues and acknowledges what the shard answers, until every sender of
/// `rx` is gone and every read handed to the shard is answered, or the stream or a commit fails.
pub(crate) async fn write_loop(
    ctx: &Context,
    send: &mut SendStream,
    mut rx: mpsc::Receiver<Outbound>,
    slot: &AckSlot,
    mut encoder: FrameEncoder,
) -> Result<(), Close> {
    let mut out = BytesMut::new();
    let mut acked = 0u64;
    let mut open = true;
    let mut next: Option<Outbound> = None;
    loop {
        let state = slot.state();
        if state.failed {
            return Err(Close::new(close_code::SERVER_ERROR, "store unavailable; resend after reconnecting"));
        }
        // After the slot: every read counted in `state` had its rejections queued before it.
        let mut taken = 0;
        while taken < MAX_OUTBOUND {
            let item = match next.take() {
                Some(item) => item,
                None => match rx.try_recv() {
                    Ok(item) => item,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                },
            };
            encode(&mut encoder, item, &mut out);
            taken += 1;
        }
        if state.acked > acked {
            let _ = encoder.encode(&Downlink::Ack(Ack { seq: state.acked }), &mut out);
            acked = state.acked;
            ctx.metrics.acks_sent.inc();
        }
        if !out.is_empty() {
            send.write_all(&out).await.map_err(|e| Close::new(close_code::NORMAL, format!("send failed: {e}")))?;
            out.clear();
            if out.capacity() > 4 * 1024 {
                // A burst of commands or rejections is not kept for an idle session.
                out = BytesMut::new();
            }
        }
        if taken == MAX_OUTBOUND {
            continue;
        }
        if !open {
            // The reader is done: flush the answers to what it handed the shard, then end.
            if state.in_flight == 0 {
                return Ok(());
            }
            slot.answered().await;
            continue;
        }
        // An answer since `state` was read left a permit: `answered` then returns at once.
        tokio::select! {
            () = slot.answered() => {}
            item = rx.recv() => match item {
                Some(item) => next = Some(item),
                None => open = false,
            },
        }
    }
}

fn encode(encoder: &mut FrameEncoder, item: Outbound, out: &mut BytesMut) {
    let result = match item {
        Outbound::Rejected(seq, reason) => encoder.encode(&Downlink::Rejected(Rejected { seq, reason }), out),
        Outbound::Frame(frame) => encoder.encode(&*frame, out),
    };
    if let Err(error) = result {
        // Our own frames are bounded below the frame limit; never expected.
        tracing::error!(message = "A downlink frame could not be encoded.", %error);
    }
}
