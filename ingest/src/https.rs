//! HTTPS ingest (ING-10): `POST /ingest/v1/frames` (the device protocol's frames as the body) and
//! `POST /ingest/v1/messages` (a JSON form) on a TLS listener of their own, HTTP/1.1 and HTTP/2,
//! for devices and scripts that cannot use UDP.
//!
//! One request is one short session: its `Hello` is admitted exactly like a QUIC session's
//! ([`crate::admission::admit`]), its frames are judged by the same code
//! ([`crate::admission::sequence`]) and handed to the device's shard, and the answer is sent
//! only after the shard says they are durable: a `200` with `ack = N` means every frame up to `N`
//! is durable (acknowledged = durable), duplicates (seq at or below the device's mark) are
//! dropped and covered by the ack. A request that fails (4xx, 5xx, a lost connection) acked
//! nothing new; the client resends the same frames with the same seqs.
//!
//! Commands for the device ride on a 200's answer ([`crate::https_commands`]).
//!
//! | status | when |
//! | --- | --- |
//! | 200 | frames durable; the body says up to which seq, and which were rejected |
//! | 400 | malformed frame or JSON, no `Hello` first, a second `Hello`, seq 0, a bad `Hello` |
//! | 401 | unknown provisioning credential, or unknown relay credential |
//! | 403 | a relay's device outside the relay's scope (its enterprise, or its channel's subtree) |
//! | 404 / 405 | another path / another method |
//! | 409 | the device is registered to another enterprise |
//! | 413 | body above the limit (refused before it is read) |
//! | 429 | the device's rate limit, or another request of the device in progress (`Retry-After`); nothing of the request was applied |
//! | 503 | the store failed or the server is stopping; resend |
//!
//! Bounded: [`MAX_CONNECTIONS`] connections, TLS handshake and request header within
//! [`HANDSHAKE_TIMEOUT`], the body within `max_body_bytes` (checked against `Content-Length`
//! before anything is read, and while reading a body without one), the bodies of all requests
//! together within [`BODY_BUDGET_BYTES`]. One request at a time per device (429 otherwise): the
//! shard takes a gap in a device's seqs as given, so two concurrent requests of one device
//! reordered would drop the earlier frames as duplicates.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use dashmap::DashMap;
use fleetpulse_proto::wire::{Ack, Downlink, Rejected, Uplink, Welcome};
use fleetpulse_proto::{DeviceId, EnterpriseId, FrameDecoder, FrameEncoder, UnixMillis, close_code};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot, watch};

use crate::Context;
use crate::admission::{Admitted, authenticate_hello, decode_error, protocol_error, register, sequence};
use crate::https_commands::{RESEND_HEADER, pickup};
use crate::https_json::{JsonCommand, JsonError, JsonFrame, JsonRejected, JsonRequest, JsonResponse};
use crate::metrics::{ReasonLabel, ScopeLabel};
use crate::relay_auth::AuthorizedRelay;
use crate::session::Close;
use crate::shard::{Frame, ShardCmd};

/// Most simultaneous HTTPS ingest connections; more are closed at once.
pub const MAX_CONNECTIONS: usize = 4_096;

/// Longest TLS handshake, and longest wait for a request header.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Default of [`crate::IngestConfig::https_max_body_bytes`]: 4 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 << 20;

/// Frames handed to the shard in one command at most (as a QUIC read loop does).
const FRAMES_PER_COMMAND: usize = 1024;

/// Request body bytes held in memory at once, over all connections and streams; a request
/// waits for its share (its `Content-Length`, or the limit when it has none) before its body is
/// read.
pub const BODY_BUDGET_BYTES: usize = 256 << 20;

/// The header a relay ([`crate::relay`]) authenticates itself with: its own credential, granted
/// one enterprise by `[[ingest.relays]]`, or one enterprise or channel by a grant stored in the
/// portal ([`crate::relay_auth`]).
pub const RELAY_HEADER: &str = "x-fleetpulse-relay";

/// A relay allowed to speak for the devices of one enterprise (ING-9).
#[derive(Debug, Clone)]
pub struct RelayGrant {
    /// For logs.
    pub name: String,
    /// The relay's own credential (the [`RELAY_HEADER`] value).
    pub credential: String,
    /// The one enterprise whose devices it may carry.
    pub enterprise: EnterpriseId,
}

/// What every request of the HTTPS listener shares.
pub(crate) struct HttpsIngest {
    ctx: Arc<Context>,
    /// The device rate limit across requests (a QUIC session holds its own limiter).
    device_limiter: DefaultKeyedRateLimiter<DeviceId>,
    /// Session ids of requests: the shard tells a device's current session by it. They count
    /// down from `usize::MAX`, far from quinn's stable ids (addresses).
    next_session: AtomicUsize,
    max_body_bytes: usize,
    /// [`BODY_BUDGET_BYTES`] in KiB permits.
    body_budget: Arc<Semaphore>,
    /// Devices with a request in progress: one at a time per device, so that a device's frames
    /// reach its shard in the order it numbered them.
    in_flight: DashMap<DeviceId, ()>,
}

/// Removes a device from [`HttpsIngest::in_flight`] when its request ends, however it ends.
struct InFlight<'a>(&'a DashMap<DeviceId, ()>, DeviceId);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.remove(&self.1);
    }
}

impl std::fmt::Debug for HttpsIngest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsIngest").field("max_body_bytes", &self.max_body_bytes).finish_non_exhaustive()
    }
}

/// Binds `addr`; the listener is served by [`serve`].
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves HTTPS ingest on `listener` until `shutdown` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    ctx: Arc<Context>,
    mut shutdown: watch::Receiver<bool>,
) {
    let limits = ctx.config.limits;
    let state = Arc::new(HttpsIngest {
        device_limiter: RateLimiter::keyed(Quota::per_second(limits.device_per_s).allow_burst(limits.device_burst)),
        next_session: AtomicUsize::new(usize::MAX),
        max_body_bytes: ctx.config.https_max_body_bytes,
        body_budget: Arc::new(Semaphore::new(BODY_BUDGET_BYTES >> 10)),
        in_flight: DashMap::new(),
        ctx,
    });
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    let mut forget = tokio::time::interval(Duration::from_secs(60));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            _ = forget.tick() => {
                // Keys whose limit is fully replenished carry no state worth keeping.
                state.device_limiter.retain_recent();
                continue;
            }
        };
        let (stream, remote) = match accepted {
            Ok(a) => a,
            Err(error) => {
                tracing::warn!(message = "Accepting an HTTPS ingest connection failed.", %error);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            state.ctx.metrics.connection_errors.get_or_create(&ReasonLabel { reason: "https_connection_limit" }).inc();
            continue;
        };
        let (acceptor, state) = (acceptor.clone(), state.clone());
        connections.spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(message = "HTTPS ingest TLS handshake failed.", %error, %remote);
                    return;
                }
                Err(_) => return,
            };
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let state = state.clone();
                async move {
                    // A request runs to its end even when its client goes away (a relay killed,
                    // a stream reset): its store calls and shard commands are never cancelled
                    // half-way.
                    let answer = tokio::spawn(async move { state.answer(req).await }).await;
                    Ok::<_, std::convert::Infallible>(answer.unwrap_or_else(|error| {
                        tracing::error!(message = "An HTTPS ingest request failed.", %error);
                        json_response(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            &JsonError { close_code: close_code::SERVER_ERROR, error: "server error" },
                        )
                    }))
                }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder.http1().timer(TokioTimer::new()).header_read_timeout(HANDSHAKE_TIMEOUT);
            builder.http2().timer(TokioTimer::new()).max_concurrent_streams(256);
            if let Err(error) = builder.serve_connection(TokioIo::new(tls), service).await {
                tracing::debug!(message = "HTTPS ingest connection ended with an error.", %error, %remote);
            }
        });
    }
    connections.abort_all();
}

/// The two request forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Frames,
    Json,
}

/// Longest a relay's long poll (`/ingest/v1/relay/wakes`) waits for a woken device.
pub const RELAY_WAKES_WAIT: Duration = Duration::from_secs(25);

/// A request's outcome before it is rendered in its form.
#[derive(Debug)]
struct Outcome {
    device: DeviceId,
    last_seq: u64,
    protocol_version: u16,
    ack: u64,
    rejected: Vec<(u64, String)>,
    /// Commands claimed for the device (protocol version 2).
    commands: Vec<fleetpulse_proto::wire::Command>,
}

/// A refused request.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    close_code: u32,
    reason: String,
    retry_after_s: Option<u64>,
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

impl HttpsIngest {
    async fn answer(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let form = match req.uri().path() {
            "/ingest/v1/frames" => Some(Form::Frames),
            "/ingest/v1/messages" => Some(Form::Json),
            // A relay's long poll for its woken devices.
            "/ingest/v1/relay/wakes" => None,
            _ => return self.plain(StatusCode::NOT_FOUND, "not_found", "no such path"),
        };
        if req.method() != Method::POST {
            let mut response = self.plain(StatusCode::METHOD_NOT_ALLOWED, "method", "use POST");
            response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
            return response;
        }
        let credential = bearer(req.headers());
        let relay = match req.headers().get(RELAY_HEADER).map(|v| v.to_str().unwrap_or_default()) {
            None => None,
            Some(token) => match self.ctx.relay_auth.authenticate(token).await {
                Ok(relay) => Some(relay),
                Err(close) => {
                    if close.code == close_code::BAD_CREDENTIAL {
                        self.ctx.metrics.auth_failures.inc();
                    }
                    return self.refuse(close.into());
                }
            },
        };
        let Some(form) = form else {
            return match relay {
                Some(relay) => self.relay_wakes(&relay, req.uri().query()).await,
                None => {
                    self.ctx.metrics.auth_failures.inc();
                    self.refuse(Close::new(close_code::BAD_CREDENTIAL, "a relay credential is required").into())
                }
            };
        };
        let resend = req.headers().contains_key(RESEND_HEADER);
        let result = match self.read_body(req).await {
            // The body's share of the budget is held until the answer is ready.
            Ok((body, _permit)) => match form {
                Form::Frames => self.frames(&body, relay.as_ref(), resend).await,
                Form::Json => self.json(&body, credential, relay.as_ref(), resend).await,
            },
            Err(refusal) => Err(refusal),
        };
        match result {
            Ok(outcome) => {
                self.ctx.metrics.https_requests.get_or_create(&ReasonLabel { reason: "ok" }).inc();
                render(form, outcome)
            }
            Err(refusal) => self.refuse(refusal),
        }
    }

    /// The body, refused with 413 above the limit before it is read (or as soon as a body
    /// without a length passes it).
    async fn read_body(&self, req: Request<Incoming>) -> Result<(Bytes, OwnedSemaphorePermit), Refusal> {
        let too_large = || Refusal {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            close_code: close_code::FRAME_TOO_LARGE,
            reason: format!("request body above {} bytes", self.max_body_bytes),
            retry_after_s: None,
        };
        let declared =
            req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body_bytes as u64) {
            return Err(too_large());
        }
        let share = declared.map_or(self.max_body_bytes, |n| n as usize).div_ceil(1024).max(1);
        let permit = self
            .body_budget
            .clone()
            .acquire_many_owned(u32::try_from(share).unwrap_or(u32::MAX))
            .await
            .map_err(|_| Refusal::from(Close::new(close_code::SHUTTING_DOWN, "server shutting down")))?;
        match Limited::new(req.into_body(), self.max_body_bytes).collect().await {
            Ok(collected) => Ok((collected.to_bytes(), permit)),
            Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(too_large()),
            Err(error) => Err(Refusal {
                status: StatusCode::BAD_REQUEST,
                close_code: close_code::NORMAL,
                reason: format!("reading the body failed: {error}"),
                retry_after_s: None,
            }),
        }
    }

    /// The binary form: `Hello`, then `Data` frames, length-prefixed as on the QUIC stream.
    async fn frames(&self, body: &[u8], relay: Option<&AuthorizedRelay>, resend: bool) -> Result<Outcome, Refusal> {
        let ctx = &self.ctx;
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
        self.session(hello, uplinks.collect(), relay, resend).await
    }

    /// The JSON form; the credential is the `Authorization: Bearer` token.
    async fn json(
        &self,
        body: &[u8],
        credential: Option<String>,
        relay: Option<&AuthorizedRelay>,
        resend: bool,
    ) -> Result<Outcome, Refusal> {
        let Some(credential) = credential else {
            self.ctx.metrics.auth_failures.inc();
            return Err(Close::new(close_code::BAD_CREDENTIAL, "Authorization: Bearer <credential> is required").into());
        };
        let request: JsonRequest = serde_json::from_slice(body).map_err(|e| {
            protocol_error(&self.ctx, "malformed_frame", close_code::MALFORMED_FRAME, format!("invalid JSON: {e}"))
        })?;
        let hello = request.device.into_hello(credential);
        self.session(hello, request.frames.into_iter().map(JsonFrame::into_uplink).collect(), relay, resend).await
    }

    /// One request's session: admission, the frames to the shard, the durable answer.
    async fn session(
        &self,
        hello: fleetpulse_proto::wire::Hello,
        uplinks: Vec<Uplink>,
        relay: Option<&AuthorizedRelay>,
        resend: bool,
    ) -> Result<Outcome, Refusal> {
        let ctx = &self.ctx;
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
        if self.in_flight.insert(device, ()).is_some() {
            return Err(Refusal {
                status: StatusCode::TOO_MANY_REQUESTS,
                close_code: close_code::PROTOCOL_VIOLATION,
                reason: "another request of this device is in progress; one at a time".into(),
                retry_after_s: Some(1),
            });
        }
        let _in_flight = InFlight(&self.in_flight, device);
        // The device's rate limit, across requests: refused whole (nothing applied) when over.
        if let Some(n) = std::num::NonZeroU32::new(uplinks.len().min(u32::MAX as usize) as u32) {
            match self.device_limiter.check_key_n(&device, n) {
                Ok(Ok(())) => {}
                Ok(Err(not_until)) => {
                    ctx.metrics.rate_limited.get_or_create(&ScopeLabel { scope: "device" }).inc();
                    let wait = not_until
                        .wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
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
        let session = self.next_session.fetch_sub(1, Ordering::Relaxed);
        let shutting_down = || Refusal::from(Close::new(close_code::SHUTTING_DOWN, "server shutting down"));
        shard
            .send(ShardCmd::Open {
                device,
                enterprise,
                heartbeat_interval_s: hello.heartbeat_interval_s,
                committed_seq: committed,
                connection: session,
            })
            .await
            .map_err(|_| shutting_down())?;
        ctx.metrics.sessions_started.inc();
        let result = async {
            let mut rejected = Vec::new();
            let mut answers = Vec::new();
            let mut frames: Vec<Frame> = Vec::new();
            let total = uplinks.len();
            for (i, uplink) in uplinks.into_iter().enumerate() {
                let (frame, refused) = sequence(ctx, device, uplink).await?;
                if let Some(reason) = refused {
                    rejected.push((frame.seq, reason));
                }
                frames.push(frame);
                if frames.len() == FRAMES_PER_COMMAND || i + 1 == total {
                    let batch = std::mem::take(&mut frames);
                    wait_for_enterprise(ctx, enterprise, batch.len()).await;
                    let (done, answer) = oneshot::channel();
                    ctx.metrics.shard_queue_depth.inc();
                    if shard
                        .send(ShardCmd::Frames { device, frames: batch, at: UnixMillis::now(), done })
                        .await
                        .is_err()
                    {
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
        Ok(Outcome { device, last_seq: committed, protocol_version: hello.protocol_version, ack, rejected, commands })
    }

    /// A relay's long poll: the devices of its enterprise woken (commands queued) after
    /// `?after=N`, waiting up to [`RELAY_WAKES_WAIT`] for one; `{"next": n, "devices": [ids]}`.
    /// The relay makes those of its devices exchange, and the answers carry their commands.
    async fn relay_wakes(&self, relay: &AuthorizedRelay, query: Option<&str>) -> Response<Full<Bytes>> {
        let after = query
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("after=")))
            .and_then(|v| v.parse::<u64>().ok());
        let woken = self.ctx.command_signal.woken();
        let (devices, next) = match after {
            // The first poll learns where the log stands.
            None => (Vec::new(), woken.since(u64::MAX).1),
            Some(after) => woken.wait_since(after, RELAY_WAKES_WAIT).await,
        };
        let mut mine = Vec::new();
        for device in devices {
            // Only the devices of the relay's scope: a relay learns nothing of others.
            if let Ok(Some(d)) = self.ctx.devices.device(device).await
                && self.ctx.relay_auth.allows(relay, d.enterprise_id).await.unwrap_or(false)
            {
                mine.push(device.0);
            }
        }
        self.ctx.metrics.https_requests.get_or_create(&ReasonLabel { reason: "ok" }).inc();
        json_response(StatusCode::OK, &serde_json::json!({ "next": next, "devices": mine }))
    }

    fn refuse(&self, refusal: Refusal) -> Response<Full<Bytes>> {
        let reason = match refusal.status {
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::PAYLOAD_TOO_LARGE => "too_large",
            StatusCode::CONFLICT => "conflict",
            StatusCode::FORBIDDEN => "relay_scope",
            StatusCode::TOO_MANY_REQUESTS => "rate_limited",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            _ => "bad_request",
        };
        self.ctx.metrics.https_requests.get_or_create(&ReasonLabel { reason }).inc();
        let body = JsonError { close_code: refusal.close_code, error: &refusal.reason };
        let mut response = json_response(refusal.status, &body);
        if let Some(s) = refusal.retry_after_s {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        response
    }

    fn plain(&self, status: StatusCode, reason: &'static str, text: &str) -> Response<Full<Bytes>> {
        self.ctx.metrics.https_requests.get_or_create(&ReasonLabel { reason }).inc();
        json_response(status, &JsonError { close_code: close_code::NORMAL, error: text })
    }
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

/// The `Authorization: Bearer` token.
fn bearer(headers: &hyper::HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer "))?.trim();
    (!token.is_empty()).then(|| token.to_owned())
}

fn json_response<T: serde::Serialize>(status: StatusCode, body: &T) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A 200 in the request's form: JSON, or `Welcome`, the `Rejected` notes and the `Ack` as frames.
fn render(form: Form, outcome: Outcome) -> Response<Full<Bytes>> {
    match form {
        Form::Json => {
            let body = JsonResponse {
                device_id: outcome.device.0,
                last_seq: outcome.last_seq,
                ack: outcome.ack,
                rejected: outcome.rejected.into_iter().map(|(seq, reason)| JsonRejected { seq, reason }).collect(),
                commands: outcome.commands.into_iter().map(JsonCommand::from).collect(),
            };
            json_response(StatusCode::OK, &body)
        }
        Form::Frames => {
            let mut encoder = FrameEncoder::default();
            let mut out = BytesMut::new();
            let mut frames = vec![Downlink::Welcome(Welcome {
                device_id: outcome.device.0,
                last_seq: outcome.last_seq,
                server_time_ms: UnixMillis::now().0,
                protocol_version: outcome.protocol_version,
                max_file_bytes: 0,
            })];
            frames
                .extend(outcome.rejected.into_iter().map(|(seq, reason)| Downlink::Rejected(Rejected { seq, reason })));
            if outcome.ack > 0 {
                frames.push(Downlink::Ack(Ack { seq: outcome.ack }));
            }
            frames.extend(outcome.commands.into_iter().map(Downlink::Command));
            for frame in &frames {
                if let Err(error) = encoder.encode(frame, &mut out) {
                    // Our own frames are bounded below the frame limit; never expected.
                    tracing::error!(message = "An HTTPS ingest answer could not be encoded.", %error);
                }
            }
            let mut response = Response::new(Full::new(out.freeze()));
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            response
        }
    }
}
