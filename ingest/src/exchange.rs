//! One short session of a device without a QUIC connection of its own (ING-9, ING-10): its
//! `Hello` and frames in, the durable answer out. HTTPS ingest ([`crate::https`]) and the relay
//! link ([`crate::relay_link`]) both call these functions and only render the result: an HTTP
//! response, or a [`fleetpulse_proto::relay_link::LinkAnswer`].
//!
//! Its `Hello` is admitted exactly like a QUIC session's ([`crate::admission`]), its frames are
//! judged by the same code and handed to the device's shard, and the [`Outcome`] is ready only
//! after the shard says they are durable. A [`Refusal`] applied nothing new; the sender resends
//! the same frames with the same seqs.
//!
//! Shared by both transports ([`ExchangeState`], one per server): the device rate limit across
//! exchanges, one exchange at a time per device (the shard takes a gap in a device's seqs as
//! given, so two concurrent exchanges of one device reordered would drop the earlier frames as
//! duplicates), and the memory budget of request bodies ([`BODY_BUDGET_BYTES`]).

use std::sync::Weak;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use dashmap::DashMap;
use fleetpulse_proto::wire::{Ack, Downlink, Rejected, Uplink, Welcome};
use fleetpulse_proto::{DeviceId, EnterpriseId, FrameDecoder, FrameEncoder, UnixMillis, close_code};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use hyper::StatusCode;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::Context;
use crate::admission::{Admitted, Judged, authenticate_hello, decode_error, judge, protocol_error, record, register};
use crate::https_commands::pickup;
use crate::metrics::{ReasonLabel, ScopeLabel};
use crate::relay_auth::AuthorizedRelay;
use crate::session::Close;
use crate::shard::{Frame, ShardCmd};

/// Frames handed to the shard in one command at most (as a QUIC read loop does).
const FRAMES_PER_COMMAND: usize = 1024;

/// Request body bytes held in memory at once, over all HTTPS connections and relay links; a
/// request waits for its share (its declared length, or the limit when it has none) before its
/// body is read.
pub const BODY_BUDGET_BYTES: usize = 256 << 20;

/// Longest a relay's long poll for woken devices waits for one.
pub const RELAY_WAKES_WAIT: Duration = Duration::from_secs(25);

/// What the exchanges of both transports share.
pub(crate) struct ExchangeState {
    /// The device rate limit across exchanges (a QUIC session holds its own limiter).
    device_limiter: DefaultKeyedRateLimiter<DeviceId>,
    /// Session ids of exchanges: the shard tells a device's current session by it. They count
    /// down from `usize::MAX`, far from quinn's stable ids (addresses).
    next_session: AtomicUsize,
    /// [`BODY_BUDGET_BYTES`] in KiB permits.
    body_budget: Arc<Semaphore>,
    /// Devices with an exchange in progress: one at a time per device.
    in_flight: DashMap<DeviceId, ()>,
}

impl ExchangeState {
    pub(crate) fn new(limits: crate::RateLimits) -> ExchangeState {
        ExchangeState {
            device_limiter: RateLimiter::keyed(Quota::per_second(limits.device_per_s).allow_burst(limits.device_burst)),
            next_session: AtomicUsize::new(usize::MAX),
            body_budget: Arc::new(Semaphore::new(BODY_BUDGET_BYTES >> 10)),
            in_flight: DashMap::new(),
        }
    }
}

/// Forgets, every minute, the device rate limits that are fully replenished (they carry no state
/// worth keeping); ends when the server is gone.
pub(crate) async fn forget_replenished_limits(ctx: Weak<Context>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(ctx) = ctx.upgrade() else { return };
        ctx.exchanges.device_limiter.retain_recent();
    }
}

/// Removes a device from [`ExchangeState::in_flight`] when its exchange ends, however it ends.
struct InFlight<'a>(&'a DashMap<DeviceId, ()>, DeviceId);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.remove(&self.1);
    }
}

/// An exchange's outcome before it is rendered.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) device: DeviceId,
    pub(crate) last_seq: u64,
    pub(crate) protocol_version: u16,
    pub(crate) ack: u64,
    pub(crate) rejected: Vec<(u64, String)>,
    /// Commands claimed for the device (protocol version 2).
    pub(crate) commands: Vec<fleetpulse_proto::wire::Command>,
}

/// A refused exchange; `status` is its HTTP status, which the relay link renders as a retry
/// (429, 5xx) or a refusal (the rest).
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) close_code: u32,
    pub(crate) reason: String,
    pub(crate) retry_after_s: Option<u64>,
}

impl From<Close> for Refusal {
    fn from(close: Close) -> Refusal {
        let status = match close.code {
            close_code::BAD_CREDENTIAL => StatusCode::UNAUTHORIZED,
            close_code::FRAME_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
            close_code::DEVICE_CONFLICT => StatusCode::CONFLICT,
            close_code::SHUTTING_DOWN | close_code::SERVER_ERROR => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        Refusal { status, close_code: close.code, reason: close.reason, retry_after_s: None }
    }
}

impl Refusal {
    /// A body above `max` bytes.
    pub(crate) fn too_large(max: usize) -> Refusal {
        Refusal {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            close_code: close_code::FRAME_TOO_LARGE,
            reason: format!("request body above {max} bytes"),
            retry_after_s: None,
        }
    }

    /// A request whose bytes could not be read or parsed.
    pub(crate) fn bad_request(reason: String) -> Refusal {
        Refusal { status: StatusCode::BAD_REQUEST, close_code: close_code::NORMAL, reason, retry_after_s: None }
    }

    /// Nothing was applied and the same exchange may be sent again after the wait: a rate limit,
    /// the device's other exchange in progress, the store or the server unavailable.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        (self.status == StatusCode::TOO_MANY_REQUESTS || self.status.is_server_error())
            .then(|| self.retry_after_s.map_or(crate::relay_upstream::RETRY_AFTER, Duration::from_secs))
    }

    /// The metric label of the refusal.
    pub(crate) fn reason_label(&self) -> &'static str {
        match self.status {
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::PAYLOAD_TOO_LARGE => "too_large",
            StatusCode::CONFLICT => "conflict",
            StatusCode::FORBIDDEN => "relay_scope",
            StatusCode::TOO_MANY_REQUESTS => "rate_limited",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            _ => "bad_request",
        }
    }
}

/// The relay a presented credential is (an unknown one is counted as an authentication failure).
pub(crate) async fn authenticate_relay(ctx: &Context, credential: &str) -> Result<AuthorizedRelay, Refusal> {
    ctx.relay_auth.authenticate(credential).await.map_err(|close| {
        if close.code == close_code::BAD_CREDENTIAL {
            ctx.metrics.auth_failures.inc();
        }
        close.into()
    })
}

/// A request body's share of [`BODY_BUDGET_BYTES`], waited for: `declared` bytes (refused above
/// the limit before anything is read), or the limit when the length is not known.
pub(crate) async fn body_share(ctx: &Context, declared: Option<u64>) -> Result<OwnedSemaphorePermit, Refusal> {
    let max = ctx.config.https_max_body_bytes;
    if declared.is_some_and(|n| n > max as u64) {
        return Err(Refusal::too_large(max));
    }
    let share = declared.map_or(max, |n| n as usize).div_ceil(1024).max(1);
    ctx.exchanges
        .body_budget
        .clone()
        .acquire_many_owned(u32::try_from(share).unwrap_or(u32::MAX))
        .await
        .map_err(|_| Refusal::from(Close::new(close_code::SHUTTING_DOWN, "server shutting down")))
}

/// The binary form: `Hello`, then `Data` frames, length-prefixed as on the QUIC stream.
pub(crate) async fn frames(
    ctx: &Context,
    body: &[u8],
    relay: Option<&AuthorizedRelay>,
    resend: bool,
) -> Result<Outcome, Refusal> {
    let mut decoder = FrameDecoder::new(ctx.config.max_frame_len);
    decoder.push(body);
    // Every frame is decoded before anything is applied: a malformed request changes nothing.
    let mut uplinks = Vec::new();
    while let Some(u) = decoder.next_frame::<Uplink>().map_err(|e| decode_error(ctx, e))? {
        uplinks.push(u);
    }
    if decoder.buffered() > 0 {
        let detail = format!("{} bytes after the last whole frame", decoder.buffered());
        return Err(protocol_error(ctx, "malformed_frame", close_code::MALFORMED_FRAME, detail).into());
    }
    let mut uplinks = uplinks.into_iter();
    let hello = match uplinks.next() {
        Some(Uplink::Hello(hello)) => hello,
        _ => {
            return Err(protocol_error(
                ctx,
                "data_before_hello",
                close_code::PROTOCOL_VIOLATION,
                "the body starts with Hello".into(),
            )
            .into());
        }
    };
    session(ctx, hello, uplinks.collect(), relay, resend).await
}

/// One exchange's session: admission, the frames to the shard, the durable answer.
pub(crate) async fn session(
    ctx: &Context,
    hello: fleetpulse_proto::wire::Hello,
    uplinks: Vec<Uplink>,
    relay: Option<&AuthorizedRelay>,
    resend: bool,
) -> Result<Outcome, Refusal> {
    let state = &ctx.exchanges;
    let (hello, enterprise) = authenticate_hello(ctx, hello).await?;
    // A relay speaks only for the devices of its scope (its enterprise, or the enterprises
    // of its channel's subtree): refused per device, before the device is registered.
    let in_scope = match relay {
        Some(relay) => ctx.relay_auth.allows(relay, enterprise).await?,
        None => true,
    };
    if !in_scope {
        ctx.metrics.connection_errors.get_or_create(&ReasonLabel { reason: "relay_scope" }).inc();
        return Err(Refusal {
            status: StatusCode::FORBIDDEN,
            close_code: close_code::BAD_CREDENTIAL,
            reason: "this relay may not speak for devices outside its scope".into(),
            retry_after_s: None,
        });
    }
    let Admitted { hello, device, enterprise, committed } = register(ctx, hello, enterprise).await?;
    if state.in_flight.insert(device, ()).is_some() {
        return Err(Refusal {
            status: StatusCode::TOO_MANY_REQUESTS,
            close_code: close_code::PROTOCOL_VIOLATION,
            reason: "another request of this device is in progress; one at a time".into(),
            retry_after_s: Some(1),
        });
    }
    let _in_flight = InFlight(&state.in_flight, device);
    // The device's rate limit, across exchanges: refused whole (nothing applied) when over.
    if let Some(n) = std::num::NonZeroU32::new(uplinks.len().min(u32::MAX as usize) as u32) {
        match state.device_limiter.check_key_n(&device, n) {
            Ok(Ok(())) => {}
            Ok(Err(not_until)) => {
                ctx.metrics.rate_limited.get_or_create(&ScopeLabel { scope: "device" }).inc();
                let wait =
                    not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
                return Err(Refusal {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    close_code: close_code::NORMAL,
                    reason: "device rate limit; retry later".into(),
                    retry_after_s: Some(wait.as_secs() + 1),
                });
            }
            Err(_) => {
                return Err(Refusal {
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    close_code: close_code::NORMAL,
                    reason: format!("more frames than the device burst ({})", ctx.config.limits.device_burst),
                    retry_after_s: None,
                });
            }
        }
    }
    let shard = ctx.shards[ctx.router.shard_for(device)].clone();
    let session = state.next_session.fetch_sub(1, Ordering::Relaxed);
    let shutting_down = || Refusal::from(Close::new(close_code::SHUTTING_DOWN, "server shutting down"));
    let (welcome, last_seq) = oneshot::channel();
    shard
        .send(ShardCmd::Open {
            device,
            enterprise,
            heartbeat_interval_s: hello.heartbeat_interval_s,
            committed_seq: committed,
            connection: session,
            welcome,
        })
        .await
        .map_err(|_| shutting_down())?;
    let last_seq = last_seq.await.map_err(|_| shutting_down())?;
    ctx.metrics.sessions_started.inc();
    let result = async {
        let mut rejected = Vec::new();
        let mut answers = Vec::new();
        let mut frames: Vec<Frame> = Vec::new();
        let total = uplinks.len();
        for (i, uplink) in uplinks.into_iter().enumerate() {
            // Judged apart: a temporary of the match's head would be held across the await below.
            let judged = judge(ctx, uplink)?;
            let (frame, refused) = match judged {
                Judged::Frame(frame, refused) => (frame, refused),
                Judged::Answer(answer) => Box::pin(record(ctx, device, answer)).await?,
            };
            if let Some(reason) = refused {
                rejected.push((frame.seq, reason));
            }
            frames.push(frame);
            if frames.len() == FRAMES_PER_COMMAND || i + 1 == total {
                let batch = std::mem::take(&mut frames);
                wait_for_enterprise(ctx, enterprise, batch.len()).await;
                let (done, answer) = oneshot::channel();
                ctx.metrics.shard_queue_depth.inc();
                if shard.send(ShardCmd::Frames { device, frames: batch, at: UnixMillis::now(), done }).await.is_err() {
                    ctx.metrics.shard_queue_depth.dec();
                    return Err(Close::new(close_code::SHUTTING_DOWN, "server shutting down"));
                }
                answers.push(answer);
            }
        }
        let mut ack = 0;
        for answer in answers {
            match answer.await {
                Ok(Ok(seq)) => ack = seq,
                _ => return Err(Close::new(close_code::SERVER_ERROR, "store unavailable; resend")),
            }
        }
        if ack > 0 {
            ctx.metrics.acks_sent.inc();
        }
        Ok((ack, rejected))
    }
    .await;
    let _ = shard.send(ShardCmd::Disconnected { device, connection: session }).await;
    let (ack, rejected) = result?;
    // After the frames: a command answer among them is recorded before anything is claimed.
    let commands = pickup(ctx, device, hello.protocol_version, resend).await;
    Ok(Outcome { device, last_seq, protocol_version: hello.protocol_version, ack, rejected, commands })
}

/// The answer to an exchange in the binary form: `Welcome`, the `Rejected` notes, the `Ack` and
/// the commands, as frames.
pub(crate) fn answer_frames(outcome: Outcome) -> BytesMut {
    let mut encoder = FrameEncoder::default();
    let mut out = BytesMut::new();
    let mut frames = vec![Downlink::Welcome(Welcome {
        device_id: outcome.device.0,
        last_seq: outcome.last_seq,
        server_time_ms: UnixMillis::now().0,
        protocol_version: outcome.protocol_version,
        max_file_bytes: 0,
    })];
    frames.extend(outcome.rejected.into_iter().map(|(seq, reason)| Downlink::Rejected(Rejected { seq, reason })));
    if outcome.ack > 0 {
        frames.push(Downlink::Ack(Ack { seq: outcome.ack }));
    }
    frames.extend(outcome.commands.into_iter().map(Downlink::Command));
    for frame in &frames {
        if let Err(error) = encoder.encode(frame, &mut out) {
            // Our own frames are bounded below the frame limit; never expected.
            tracing::error!(message = "An exchange's answer could not be encoded.", %error);
        }
    }
    out
}

/// A relay's long poll: the devices of its scope woken (commands queued) after `after`, waiting
/// up to [`RELAY_WAKES_WAIT`] for one (`None`: only where the log stands); `(next, device ids)`.
/// The relay makes those of its devices exchange, and the answers carry their commands.
pub(crate) async fn relay_wakes(ctx: &Context, relay: &AuthorizedRelay, after: Option<u64>) -> (u64, Vec<u64>) {
    let woken = ctx.command_signal.woken();
    let (devices, next) = match after {
        // The first poll learns where the log stands.
        None => (Vec::new(), woken.since(u64::MAX).1),
        Some(after) => woken.wait_since(after, RELAY_WAKES_WAIT).await,
    };
    let mut mine = Vec::new();
    for device in devices {
        // Only the devices of the relay's scope: a relay learns nothing of others.
        if let Ok(Some(d)) = ctx.devices.device(device).await
            && ctx.relay_auth.allows(relay, d.enterprise_id).await.unwrap_or(false)
        {
            mine.push(device.0);
        }
    }
    (next, mine)
}

/// Waits until the enterprise's rate limit allows `n` more frames (as a QUIC session does).
async fn wait_for_enterprise(ctx: &Context, enterprise: EnterpriseId, n: usize) {
    let burst = ctx.config.limits.enterprise_burst.get() as usize;
    let mut left = n;
    while left > 0 {
        let step = left.min(burst);
        let k = std::num::NonZeroU32::new(step as u32).expect("step is at least 1");
        if !matches!(ctx.enterprise_limiter.check_key_n(&enterprise, k), Ok(Ok(()))) {
            ctx.metrics.rate_limited.get_or_create(&ScopeLabel { scope: "enterprise" }).inc();
            let _ = ctx.enterprise_limiter.until_key_n_ready(&enterprise, k).await;
        }
        left -= step;
    }
}
