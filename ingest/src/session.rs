//! One device connection: handshake, authentication, then the read loop, the command sender and
//! the control stream's writer.
//!
//! The read loop decodes frames (bounded by the maximum frame size), validates them, applies the
//! device's and the enterprise's rate limits by *waiting* (so a flooding device is slowed by QUIC
//! flow control rather than cut off), records command answers in the command store, and hands
//! the frames to the device's shard. The command sender ([`crate::commands`]) claims the device's
//! queued commands. The writer ([`crate::outbound`]) is the one task writing the control stream:
//! acknowledgements (in order, coalesced), rejections, commands and file outcomes. Upload streams
//! ([`crate::uploads`]) run beside it. A bad frame closes only this connection.

use std::num::NonZeroU32;
use std::sync::Arc;

use bytes::BytesMut;
use fleetpulse_proto::wire::{Downlink, Uplink, Welcome};
use fleetpulse_proto::{DeviceId, EnterpriseId, FrameDecoder, FrameEncoder, UnixMillis, close_code};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use quinn::{RecvStream, VarInt};
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};

use crate::Context;
use crate::admission::{Admitted, Judged, admit, decode_error, judge, protocol_error, record};
use crate::commands::send_commands;
use crate::metrics::{ReasonLabel, ScopeLabel};
use crate::outbound::{MAX_OUTBOUND, Outbound, write_loop};
use crate::queue;
use crate::shard::{Frame, ShardCmd};
use crate::uploads::{Uploader, receive_uploads};

/// Largest chunk read from a stream at once.
const READ_CHUNK: usize = 16 * 1024;
/// Why a session ended; closes the connection with `code`.
#[derive(Debug)]
pub(crate) struct Close {
    pub(crate) code: u32,
    pub(crate) reason: String,
}

impl Close {
    pub(crate) fn new(code: u32, reason: impl Into<String>) -> Close {
        Close { code, reason: reason.into() }
    }
}

/// Decrements the open-connections gauge when the session ends, however it ends, after giving
/// back the relay link's slot (if it is one): a connection no longer counted open holds none.
struct OpenGuard {
    open: prometheus_client::metrics::gauge::Gauge,
    relay_slot: Option<OwnedSemaphorePermit>,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        drop(self.relay_slot.take());
        self.open.dec();
    }
}

/// Serves one incoming connection to its end.
///
/// `incoming` comes boxed: the task keeps its argument's slot for the connection's life, and a
/// `quinn::Incoming` inline would take 384 bytes of every session (issue 14).
pub(crate) async fn run(incoming: Box<quinn::Incoming>, ctx: Arc<Context>) {
    // Bounded handshakes: beyond the limit, new connections are refused (the device retries)
    // instead of piling up half-open state.
    let Ok(permit) = ctx.handshakes.clone().try_acquire_owned() else {
        ctx.metrics.connection_errors.get_or_create(&ReasonLabel { reason: "handshake_limit" }).inc();
        (*incoming).refuse();
        return;
    };
    // A handshake that does not finish within the Hello timeout is abandoned: without this, a
    // half-open connection would hold its state until the idle timeout.
    let conn = match tokio::time::timeout(ctx.config.hello_timeout, *incoming).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(error)) => {
            tracing::debug!(message = "Handshake failed.", %error);
            ctx.metrics.connection_errors.get_or_create(&ReasonLabel { reason: "handshake" }).inc();
            return;
        }
        Err(_) => {
            ctx.metrics.connection_errors.get_or_create(&ReasonLabel { reason: "handshake_timeout" }).inc();
            return;
        }
    };
    drop(permit);
    // A relay (ALPN fleetpulse-relay/1) carries many devices' exchanges, each authenticated.
    let relay_link = crate::relay_link::is_relay_link(&conn);
    // Relay links are bounded apart from devices, before one is widened (512 streams, a 16 MiB
    // window): the slot is held for the connection's life.
    let relay_slot = match relay_link.then(|| ctx.relay_links.clone().try_acquire_owned()) {
        None => None,
        Some(Ok(slot)) => Some(slot),
        Some(Err(_)) => {
            ctx.metrics.connection_errors.get_or_create(&ReasonLabel { reason: "too_many_relay_connections" }).inc();
            tracing::debug!(message = "Too many relay connections; closing a new one.", remote = %conn.remote_address());
            conn.close(VarInt::from_u32(close_code::TOO_MANY_CONNECTIONS), b"too many relay connections");
            return;
        }
    };
    ctx.metrics.connections_accepted.inc();
    ctx.metrics.connections_open.inc();
    let _guard = OpenGuard { open: ctx.metrics.connections_open.clone(), relay_slot };
    let mut shutdown = ctx.shutdown.clone();
    // A relay link's future is boxed: there are few of them, and inline it would take its size
    // in every device's task too (issue 14).
    let work = async {
        if relay_link { Box::pin(crate::relay_link::serve(&conn, &ctx)).await } else { serve(&conn, &ctx).await }
    };
    let outcome = tokio::select! {
        r = work => r,
        _ = shutdown.wait_for(|s| *s) => Err(Close::new(close_code::SHUTTING_DOWN, "server shutting down")),
    };
    match outcome {
        Ok(()) => conn.close(VarInt::from_u32(close_code::NORMAL), b"bye"),
        Err(close) => {
            if close.code != close_code::NORMAL {
                tracing::debug!(message = "Closing device connection.", code = close.code, reason = %close.reason);
            }
            conn.close(VarInt::from_u32(close.code), close.reason.as_bytes());
        }
    }
}

/// Reads the next frame, `Ok(None)` when the device finished its stream.
async fn next_uplink(
    recv: &mut RecvStream,
    decoder: &mut FrameDecoder,
    ctx: &Context,
) -> Result<Option<Uplink>, Close> {
    loop {
        match decoder.next_frame::<Uplink>() {
            Ok(Some(frame)) => return Ok(Some(frame)),
            Ok(None) => {}
            Err(e) => return Err(decode_error(ctx, e)),
        }
        match recv.read_chunk(READ_CHUNK, true).await {
            Ok(Some(chunk)) => decoder.push(&chunk.bytes),
            Ok(None) => return Ok(None),
            Err(error) => return Err(Close::new(close_code::NORMAL, format!("stream ended: {error}"))),
        }
    }
}

async fn serve(conn: &quinn::Connection, ctx: &Arc<Context>) -> Result<(), Close> {
    let timeout = ctx.config.hello_timeout;
    let (mut send, mut recv) = tokio::time::timeout(timeout, conn.accept_bi())
        .await
        .map_err(|_| protocol_error(ctx, "hello_timeout", close_code::HELLO_TIMEOUT, "no stream opened".into()))?
        .map_err(|e| Close::new(close_code::NORMAL, format!("connection lost: {e}")))?;
    let mut decoder = FrameDecoder::new(ctx.config.max_frame_len);
    // Scoped, and only the two fields used later kept: a `Hello` held to the session's end would
    // take 128 bytes of its task for the connection's life (issue 14).
    let (device, enterprise, committed, protocol_version, heartbeat_interval_s) = {
        let hello = match tokio::time::timeout(timeout, next_uplink(&mut recv, &mut decoder, ctx)).await {
            Err(_) => return Err(protocol_error(ctx, "hello_timeout", close_code::HELLO_TIMEOUT, "no Hello".into())),
            Ok(Ok(Some(Uplink::Hello(hello)))) => hello,
            Ok(Ok(Some(Uplink::Data(_)))) => {
                return Err(protocol_error(
                    ctx,
                    "data_before_hello",
                    close_code::PROTOCOL_VIOLATION,
                    "Hello first".into(),
                ));
            }
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(close)) => return Err(close),
        };
        let Admitted { hello, device, enterprise, committed } = admit(ctx, hello).await?;
        (device, enterprise, committed, hello.protocol_version, hello.heartbeat_interval_s)
    };

    // One connection per device: a newer one replaces an older one.
    if let Some(old) = ctx.connections.insert(device, conn.clone()) {
        old.close(VarInt::from_u32(close_code::REPLACED), b"replaced by a newer connection");
    }
    let wake = ctx.command_signal.register(device);
    let shard = ctx.shards[ctx.router.shard_for(device)].clone();
    let result = async {
        let shutting_down = || Close::new(close_code::SHUTTING_DOWN, "server shutting down");
        let (welcome, last_seq) = oneshot::channel();
        shard
            .send(ShardCmd::Open {
                device,
                enterprise,
                heartbeat_interval_s,
                committed_seq: committed,
                connection: conn.stable_id(),
                welcome,
            })
            .await
            .map_err(|_| shutting_down())?;
        let last_seq = last_seq.await.map_err(|_| shutting_down())?;
        let mut encoder = FrameEncoder::default();
        {
            // Scoped: what the Welcome took is gone before the session settles in.
            let mut out = BytesMut::new();
            let welcome = Downlink::Welcome(Welcome {
                device_id: device.0,
                last_seq,
                server_time_ms: UnixMillis::now().0,
                protocol_version,
                max_file_bytes: ctx.config.max_file_bytes,
            });
            encoder.encode(&welcome, &mut out).map_err(|e| Close::new(close_code::SERVER_ERROR, e.to_string()))?;
            send.write_all(&out).await.map_err(|e| Close::new(close_code::NORMAL, e.to_string()))?;
        }
        ctx.metrics.sessions_started.inc();

        let (out_tx, out_rx) = queue::channel(MAX_OUTBOUND);
        let commands = out_tx.downgrade();
        let files = out_tx.downgrade();
        // Pinned here, not moved into `io`: a future moved into an async block and pinned
        // there takes its size twice in the session's task (issue 14).
        let mut reader = std::pin::pin!(read_loop(ctx, device, enterprise, &mut recv, &mut decoder, &shard, out_tx));
        let mut writer = std::pin::pin!(write_loop(ctx, &mut send, out_rx, encoder));
        // The writer ends after the reader (which holds its queue) and flushes the last acks;
        // a writer that stops on a store failure (no ack can come) ends the session at once
        // instead of leaving the device waiting on a reader that is still alive.
        let io = async {
            tokio::select! {
                write = &mut writer => match write {
                    Err(close) => Err(close),
                    Ok(()) => reader.await,
                },
                read = &mut reader => read.and(writer.await),
            }
        };
        // The sender ends with the session; it ends the session only when the store fails.
        let sender = async {
            if protocol_version >= 2 {
                send_commands(ctx, device, &wake, commands).await
            } else {
                std::future::pending().await
            }
        };
        // Upload streams run beside the control stream; they end the session only when the store
        // fails.
        let uploads = async {
            if protocol_version >= 2 {
                let uploader = Uploader { device, enterprise };
                receive_uploads(ctx.clone(), conn.clone(), uploader, files).await
            } else {
                std::future::pending().await
            }
        };
        tokio::select! {
            result = io => result,
            Err(close) = sender => Err(close),
            Err(close) = uploads => Err(close),
        }
    }
    .await;
    let _ = shard.send(ShardCmd::Disconnected { device, connection: conn.stable_id() }).await;
    ctx.connections.remove_if(&device, |_, c| c.stable_id() == conn.stable_id());
    ctx.command_signal.unregister(device, &wake);
    result
}

async fn read_loop(
    ctx: &Context,
    device: DeviceId,
    enterprise: EnterpriseId,
    recv: &mut RecvStream,
    decoder: &mut FrameDecoder,
    shard: &mpsc::Sender<ShardCmd>,
    out: queue::Sender<Outbound>,
) -> Result<(), Close> {
    let limits = ctx.config.limits;
    // On the enterprise limiter's clock: `RateLimiter::direct` makes a clock of its own, and
    // making a quanta clock reads CPUID, 2 % of the server's CPU while sessions set up (issue 14).
    let quota = Quota::per_second(limits.device_per_s).allow_burst(limits.device_burst);
    let device_limiter: DefaultDirectRateLimiter =
        RateLimiter::direct_with_clock(quota, ctx.enterprise_limiter.clock().clone());
    loop {
        let mut frames = Vec::new();
        // Every frame already buffered is judged without waiting, so one read becomes one shard
        // command. No frame is held across a wait here: a frame's 130–150 bytes would size the
        // session's task for its whole life (issue 14).
        let mut rare = {
            let Some(first) = next_uplink(recv, decoder, ctx).await? else { return Ok(()) };
            gather(ctx, Some(first), decoder, &mut frames)?
        };
        while let Some(judged) = rare {
            Box::pin(rare_frame(ctx, device, *judged, &mut frames, &out)).await?;
            rare = gather(ctx, None, decoder, &mut frames)?;
        }
        throttle(ctx, &device_limiter, enterprise, frames.len(), limits).await;
        let (done, answer) = oneshot::channel();
        ctx.metrics.shard_queue_depth.inc();
        if send_or_wait(shard, ShardCmd::Frames { device, frames, at: UnixMillis::now(), done }).await.is_err() {
            ctx.metrics.shard_queue_depth.dec();
            return Err(Close::new(close_code::SHUTTING_DOWN, "server shutting down"));
        }
        if out.send(Outbound::Pending(answer)).await.is_err() {
            return Ok(()); // the ack writer ended; it reports why
        }
    }
}

/// Most frames one read hands to the shard.
const MAX_FRAMES_PER_READ: usize = 1024;

/// Judges `first` and then the frames the decoder already holds, appending them to `frames`,
/// until none is buffered or a read's worth is gathered. Stops early at a frame that needs a
/// wait (a command's answer, or a refused frame whose `Rejected` must be queued) and returns it,
/// boxed: those are rare.
fn gather(
    ctx: &Context,
    first: Option<Uplink>,
    decoder: &mut FrameDecoder,
    frames: &mut Vec<Frame>,
) -> Result<Option<Box<Judged>>, Close> {
    let mut next = first;
    loop {
        let uplink = match next.take() {
            Some(uplink) => uplink,
            None if frames.len() >= MAX_FRAMES_PER_READ => return Ok(None),
            None => match decoder.next_frame::<Uplink>().map_err(|e| decode_error(ctx, e))? {
                Some(uplink) => uplink,
                None => return Ok(None),
            },
        };
        match judge(ctx, uplink)? {
            Judged::Frame(frame, None) => frames.push(frame),
            rare => return Ok(Some(Box::new(rare))),
        }
    }
}

/// Handles a frame [`gather`] stopped at: records a command's answer, queues a `Rejected`, and
/// appends the frame (which keeps its seq either way).
async fn rare_frame(
    ctx: &Context,
    device: DeviceId,
    judged: Judged,
    frames: &mut Vec<Frame>,
    out: &queue::Sender<Outbound>,
) -> Result<(), Close> {
    let (frame, rejected) = match judged {
        Judged::Frame(frame, rejected) => (frame, rejected),
        Judged::Answer(answer) => record(ctx, device, answer).await?,
    };
    let seq = frame.seq;
    frames.push(frame);
    if let Some(reason) = rejected {
        let _ = out.send(Outbound::Rejected(seq, reason)).await;
    }
    Ok(())
}

/// Sends `value` at once when the channel has room, else waits for room in a boxed future.
///
/// Every await in a session's loop sizes its task for the whole session, and a `Sender::send`
/// future takes 200–250 bytes; waiting for room is rare (backpressure), so only that path pays
/// an allocation (issue 14).
async fn send_or_wait<T>(tx: &mpsc::Sender<T>, value: T) -> Result<(), mpsc::error::SendError<T>> {
    match tx.try_send(value) {
        Ok(()) => Ok(()),
        Err(mpsc::error::TrySendError::Full(value)) => Box::pin(tx.send(value)).await,
        Err(mpsc::error::TrySendError::Closed(value)) => Err(mpsc::error::SendError(value)),
    }
}

/// Waits until the device's and the enterprise's rate limits allow `n` more frames. The waits
/// are boxed: they are rare, and inline they would size every session's task (issue 14).
async fn throttle(
    ctx: &Context,
    device: &DefaultDirectRateLimiter,
    enterprise: EnterpriseId,
    n: usize,
    limits: RateLimits,
) {
    let mut left = n as u32;
    while left > 0 {
        let step = left.min(limits.device_burst.get()).min(limits.enterprise_burst.get());
        let k = NonZeroU32::new(step).expect("step is at least 1");
        if !matches!(device.check_n(k), Ok(Ok(()))) {
            ctx.metrics.rate_limited.get_or_create(&ScopeLabel { scope: "device" }).inc();
            let _ = Box::pin(device.until_n_ready(k)).await;
        }
        if !matches!(ctx.enterprise_limiter.check_key_n(&enterprise, k), Ok(Ok(()))) {
            ctx.metrics.rate_limited.get_or_create(&ScopeLabel { scope: "enterprise" }).inc();
            let _ = Box::pin(ctx.enterprise_limiter.until_key_n_ready(&enterprise, k)).await;
        }
        left -= step;
    }
}

/// Rate limits (ING-6).
#[derive(Debug, Clone, Copy)]
pub struct RateLimits {
    /// Sustained frames per second per device.
    pub device_per_s: NonZeroU32,
    /// Burst per device.
    pub device_burst: NonZeroU32,
    /// Sustained frames per second per enterprise.
    pub enterprise_per_s: NonZeroU32,
    /// Burst per enterprise.
    pub enterprise_burst: NonZeroU32,
}

impl Default for RateLimits {
    fn default() -> Self {
        let n = |v: u32| NonZeroU32::new(v).expect("nonzero constant");
        RateLimits {
            device_per_s: n(200),
            device_burst: n(1000),
            enterprise_per_s: n(200_000),
            enterprise_burst: n(400_000),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `f` returns, without calling it: what a task of it allocates.
    fn future_size<A, B, Fut, F: FnOnce(A, B) -> Fut>(_: &F) -> usize {
        std::mem::size_of::<Fut>()
    }

    /// The session task is fleetpulse's own memory per connected device beside quinn's
    /// connection (SPEC §8 wants it within 1 KiB). It took 6,216 bytes, then 2,992 once the rare
    /// waits were boxed, 2,040 once no frame, `Hello` or relay link was held across a wait, and
    /// 1,880 once an idle command sender and upload acceptor held only their waits (issue 14):
    /// this keeps it from growing unnoticed.
    #[test]
    fn the_session_task_stays_within_its_budget() {
        let size = future_size(&run);
        assert!(size <= 1_920, "a session task takes {size} bytes");
    }
}
