//! The server's end of the relay link (ING-9): a relay's QUIC connection on the devices' UDP
//! address, told apart by its ALPN ([`fleetpulse_proto::RELAY_ALPN`]) after the handshake. The
//! wire format is [`fleetpulse_proto::relay_link`]: one bidirectional stream per exchange.
//!
//! Each stream is served by the same code as an HTTPS ingest request ([`crate::exchange`]): the
//! relay's credential is checked on every stream (through the grant cache of
//! [`crate::relay_auth`], so a revoke takes effect within its 5 s on a connection that stays
//! up), the body's length is checked against `https_max_body_bytes` and its share of the body
//! budget is taken before a byte of it is read, and the answer is written after the frames are
//! durable. A 429 or 5xx of HTTPS ingest is a [`LinkAnswer::Retry`] here, any other refusal a
//! [`LinkAnswer::Refused`] with its close code.
//!
//! Bounded: at most `max_relay_connections` relay connections at once (64 by default, apart from
//! the devices' `max_connections`: the session takes a slot before [`serve`] widens a connection
//! and closes one without a slot with `close_code::TOO_MANY_CONNECTIONS`), at most
//! [`LINK_STREAMS`] exchanges at once per relay connection (QUIC stream credit; the relay waits
//! for credit rather than failing), the header within the Hello timeout, the body within
//! [`BODY_TIMEOUT`]. A malformed header, a reset or a slow stream ends that stream only, never
//! the relay's connection or another device's exchange. An exchange runs to its end once its
//! body is read, even when the relay goes away (its store calls and shard commands are never
//! cancelled half-way).
//!
//! Transport settings: quinn's `ServerConfig` (and so the initial transport parameters) is per
//! endpoint and chosen before the ALPN is known, so every connection starts with the device's
//! tight settings ([`crate::tls::device_transport`]); a relay's connection is widened once it is
//! known to be one: [`LINK_STREAMS`] bidirectional streams, no uni streams, a connection receive
//! window of one device stream window per stream, a larger send window. The per-stream window
//! stays the device's 32 KiB (an initial transport parameter; an exchange of 128 frames fits).

use std::sync::Arc;
use std::time::Duration;

use fleetpulse_proto::close_code;
use fleetpulse_proto::relay_link::{LinkAnswer, LinkRequest, LinkRequestKind, PREFIX_LEN};
use quinn::{ReadExactError, RecvStream, SendStream, VarInt};

use crate::Context;
use crate::exchange::{self, Refusal, answer_frames, authenticate_relay, body_share};
use crate::metrics::ReasonLabel;
use crate::session::Close;

/// Exchanges one relay connection may have open at once.
pub const LINK_STREAMS: u32 = 512;

/// Connection receive window of a relay connection: a device stream's window per stream.
const LINK_RECEIVE_WINDOW: u32 = 32 * 1024 * LINK_STREAMS;

/// Send window of a relay connection (answers of many devices at once).
const LINK_SEND_WINDOW: u64 = 8 << 20;

/// Longest an exchange's body may take to arrive once its header did.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether a connection negotiated the relay link's ALPN.
pub(crate) fn is_relay_link(conn: &quinn::Connection) -> bool {
    conn.handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|h| h.protocol)
        .is_some_and(|p| p == fleetpulse_proto::RELAY_ALPN)
}

/// Serves a relay's connection until it ends: each stream an exchange, in a task of its own.
pub(crate) async fn serve(conn: &quinn::Connection, ctx: &Arc<Context>) -> Result<(), Close> {
    conn.set_max_concurrent_bi_streams(VarInt::from_u32(LINK_STREAMS));
    conn.set_max_concurrent_uni_streams(VarInt::from_u32(0));
    conn.set_receive_window(VarInt::from_u32(LINK_RECEIVE_WINDOW));
    conn.set_send_window(LINK_SEND_WINDOW);
    tracing::debug!(message = "A relay connected.", remote = %conn.remote_address());
    loop {
        let (send, recv) = match conn.accept_bi().await {
            Ok(streams) => streams,
            Err(error) => {
                tracing::debug!(message = "A relay connection ended.", %error);
                return Ok(());
            }
        };
        let ctx = ctx.clone();
        // QUIC stream credit bounds these tasks to LINK_STREAMS per connection: a stream counts
        // until its answer is written.
        tokio::spawn(async move { serve_stream(&ctx, send, recv).await });
    }
}

/// Why a stream has no answer: the relay reset it or the connection is gone.
struct Gone;

async fn serve_stream(ctx: &Context, mut send: SendStream, mut recv: RecvStream) {
    let (label, answer) = match answer(ctx, &mut recv).await {
        Ok(answered) => answered,
        Err(Gone) => {
            ctx.metrics.relay_link_requests.get_or_create(&ReasonLabel { reason: "reset" }).inc();
            return;
        }
    };
    ctx.metrics.relay_link_requests.get_or_create(&ReasonLabel { reason: label }).inc();
    // The rest of a refused body is not read: the relay's writes stop, its answer is here.
    let _ = recv.stop(VarInt::from_u32(0));
    if send.write_all(&answer.encode()).await.is_ok() {
        let _ = send.finish();
    }
}

fn refused(close_code: u32, reason: impl Into<String>) -> (&'static str, LinkAnswer) {
    ("malformed", LinkAnswer::Refused { close_code, reason: reason.into() })
}

fn render_refusal(refusal: Refusal) -> (&'static str, LinkAnswer) {
    match refusal.retry_after() {
        Some(wait) => ("retry", LinkAnswer::Retry { after_ms: u32::try_from(wait.as_millis()).unwrap_or(u32::MAX) }),
        None => {
            (refusal.reason_label(), LinkAnswer::Refused { close_code: refusal.close_code, reason: refusal.reason })
        }
    }
}

/// Reads the request header: its prefix, then the rest of the length the prefix announces.
async fn read_header(recv: &mut RecvStream) -> Result<Result<LinkRequest, String>, Gone> {
    let mut prefix = [0u8; PREFIX_LEN];
    match recv.read_exact(&mut prefix).await {
        Ok(()) => {}
        Err(ReadExactError::FinishedEarly(n)) => return Ok(Err(format!("the stream ended after {n} header bytes"))),
        Err(ReadExactError::ReadError(_)) => return Err(Gone),
    }
    let rest = match LinkRequest::rest_len(prefix) {
        Ok(rest) => rest,
        Err(error) => return Ok(Err(error.to_string())),
    };
    let mut header = vec![0u8; PREFIX_LEN + rest];
    header[..PREFIX_LEN].copy_from_slice(&prefix);
    match recv.read_exact(&mut header[PREFIX_LEN..]).await {
        Ok(()) => Ok(LinkRequest::decode(&header).map_err(|e| e.to_string())),
        Err(ReadExactError::FinishedEarly(n)) => {
            Ok(Err(format!("the stream ended {} bytes into a header of {}", PREFIX_LEN + n, header.len())))
        }
        Err(ReadExactError::ReadError(_)) => Err(Gone),
    }
}

/// The answer to one stream's request, with its metric label.
async fn answer(ctx: &Context, recv: &mut RecvStream) -> Result<(&'static str, LinkAnswer), Gone> {
    let request = match tokio::time::timeout(ctx.config.hello_timeout, read_header(recv)).await {
        Err(_) => return Ok(refused(close_code::HELLO_TIMEOUT, "no relay link request header in time")),
        Ok(Err(Gone)) => return Err(Gone),
        Ok(Ok(Err(reason))) => return Ok(refused(close_code::PROTOCOL_VIOLATION, format!("relay link: {reason}"))),
        Ok(Ok(Ok(request))) => request,
    };
    // Nothing more is read from a relay that is not one.
    let relay = match authenticate_relay(ctx, &request.credential).await {
        Ok(relay) => relay,
        Err(refusal) => return Ok(render_refusal(refusal)),
    };
    let (resend, body_len) = match request.kind {
        LinkRequestKind::Wakes { after } => {
            let (next, devices) = exchange::relay_wakes(ctx, &relay, after).await;
            return Ok(("ok", LinkAnswer::Wakes { next, devices }));
        }
        LinkRequestKind::Frames { resend, body_len } => (resend, body_len),
    };
    // Refused above the limit before anything is allocated; the share is held until the answer.
    let _permit = match body_share(ctx, Some(body_len)).await {
        Ok(permit) => permit,
        Err(refusal) => return Ok(render_refusal(refusal)),
    };
    let mut body = vec![0u8; usize::try_from(body_len).unwrap_or(usize::MAX)];
    let read = async {
        match recv.read_exact(&mut body).await {
            Ok(()) => {}
            Err(ReadExactError::FinishedEarly(n)) => {
                return Ok(Err(format!("the body ended after {n} of the {body_len} bytes announced")));
            }
            Err(ReadExactError::ReadError(_)) => return Err(Gone),
        }
        match recv.read_chunk(1, true).await {
            Ok(None) => Ok(Ok(())),
            Ok(Some(_)) => Ok(Err(format!("bytes after the {body_len} announced"))),
            Err(_) => Err(Gone),
        }
    };
    match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Err(_) => return Ok(refused(close_code::PROTOCOL_VIOLATION, "the body did not arrive in time")),
        Ok(Err(Gone)) => return Err(Gone),
        Ok(Ok(Err(reason))) => return Ok(refused(close_code::PROTOCOL_VIOLATION, format!("relay link: {reason}"))),
        Ok(Ok(Ok(()))) => {}
    }
    Ok(match exchange::frames(ctx, &body, Some(&relay), resend).await {
        Ok(outcome) => ("ok", LinkAnswer::Ok(answer_frames(outcome).to_vec())),
        Err(refusal) => render_refusal(refusal),
    })
}
