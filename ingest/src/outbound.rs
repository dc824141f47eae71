//! The one writer of a session's control stream: acknowledgements, rejections, commands and
//! file outcomes, in the order they were queued.
//!
//! Everything the server sends after `Welcome` goes through one bounded queue of [`Outbound`]
//! items, so one task owns the stream's send half. Acknowledgements keep their rules: the writer
//! awaits the shard's answers in order and sends cumulative acknowledgements, coalescing those
//! that are ready together; a frame queued behind a pending acknowledgement waits for it.

use std::collections::VecDeque;

use bytes::BytesMut;
use fleetpulse_proto::FrameEncoder;
use fleetpulse_proto::close_code;
use fleetpulse_proto::wire::{Ack, Downlink, Rejected};
use quinn::SendStream;
use tokio::sync::oneshot;

use crate::Context;
use crate::queue;
use crate::session::Close;
use crate::shard::AckResult;

/// Items the writer sends, in queue order. The queue holds at most [`MAX_OUTBOUND`].
#[derive(Debug)]
pub(crate) enum Outbound {
    /// The shard's answer for a group of frames: an acknowledgement once it is durable.
    Pending(oneshot::Receiver<AckResult>),
    /// A frame whose content was refused (it counts as acknowledged).
    Rejected(u64, String),
    /// Any other downlink frame (a command, a file outcome).
    Frame(Box<Downlink>),
}

/// Items a session may have queued for its writer (frames awaiting acknowledgement included).
pub(crate) const MAX_OUTBOUND: usize = 256;

/// Writes what the session queues until every sender is gone or the stream fails.
pub(crate) async fn write_loop(
    ctx: &Context,
    send: &mut SendStream,
    mut rx: queue::Receiver<Outbound>,
    mut encoder: FrameEncoder,
) -> Result<(), Close> {
    let mut queue: VecDeque<Outbound> = VecDeque::new();
    let mut out = BytesMut::new();
    let mut acked = 0u64;
    let mut latest = 0u64;
    let store_failed = || Close::new(close_code::SERVER_ERROR, "store unavailable; resend after reconnecting");
    loop {
        let item = match queue.pop_front() {
            Some(item) => item,
            None => match rx.recv().await {
                Some(item) => item,
                None => return Ok(()),
            },
        };
        let mut next = Some(item);
        // Handle the first item (waiting if needed), then every following one that is ready.
        while let Some(item) = next.take() {
            match item {
                Outbound::Rejected(seq, reason) => {
                    let _ = encoder.encode(&Downlink::Rejected(Rejected { seq, reason }), &mut out);
                }
                Outbound::Frame(frame) => {
                    if let Err(error) = encoder.encode(&*frame, &mut out) {
                        // Our own frames are bounded below the frame limit; never expected.
                        tracing::error!(message = "A downlink frame could not be encoded.", %error);
                    }
                }
                Outbound::Pending(mut answer) => {
                    let result = if out.is_empty() && latest == acked {
                        (&mut answer).await
                    } else {
                        match answer.try_recv() {
                            Ok(r) => Ok(r),
                            Err(oneshot::error::TryRecvError::Empty) => {
                                queue.push_front(Outbound::Pending(answer));
                                break;
                            }
                            Err(oneshot::error::TryRecvError::Closed) => return Err(store_failed()),
                        }
                    };
                    match result {
                        Ok(Ok(seq)) => latest = latest.max(seq),
                        Ok(Err(())) | Err(_) => return Err(store_failed()),
                    }
                }
            }
            let room = MAX_OUTBOUND.saturating_sub(queue.len());
            rx.take_into(&mut queue, room);
            next = queue.pop_front();
        }
        if latest > acked {
            let _ = encoder.encode(&Downlink::Ack(Ack { seq: latest }), &mut out);
            acked = latest;
            ctx.metrics.acks_sent.inc();
        }
        if !out.is_empty() {
            send.write_all(&out).await.map_err(|e| Close::new(close_code::NORMAL, format!("send failed: {e}")))?;
            out.clear();
        }
    }
}
