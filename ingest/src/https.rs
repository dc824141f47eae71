//! HTTPS ingest (ING-10): `POST /ingest/v1/frames` (the device protocol's frames as the body) and
//! `POST /ingest/v1/messages` (a JSON form) on a TLS listener of their own, HTTP/1.1 and HTTP/2,
//! for devices and scripts that cannot use UDP.
//!
//! One request is one short session ([`crate::exchange`], shared with the relay link): its
//! `Hello` is admitted exactly like a QUIC session's ([`crate::admission::admit`]), its frames are
//! judged by the same code ([`crate::admission::sequence`]) and handed to the device's shard, and
//! the answer is sent only after the shard says they are durable: a `200` with `ack = N` means every frame up to `N`
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
//! and of relay link exchanges together within [`BODY_BUDGET_BYTES`]. One request at a time per
//! device, over both transports (429 otherwise): the shard takes a gap in a device's seqs as
//! given, so two concurrent requests of one device reordered would drop the earlier frames as
//! duplicates.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fleetpulse_proto::{EnterpriseId, close_code};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::Context;
use crate::admission::protocol_error;
use crate::exchange::{Outcome, Refusal, answer_frames, authenticate_relay, body_share};
use crate::https_commands::RESEND_HEADER;
use crate::https_json::{JsonCommand, JsonError, JsonFrame, JsonRejected, JsonRequest, JsonResponse};
use crate::metrics::ReasonLabel;
use crate::relay_auth::AuthorizedRelay;
use crate::session::Close;

pub use crate::exchange::BODY_BUDGET_BYTES;

/// Most simultaneous HTTPS ingest connections; more are closed at once.
pub const MAX_CONNECTIONS: usize = 4_096;

/// Longest TLS handshake, and longest wait for a request header.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Default of [`crate::IngestConfig::https_max_body_bytes`]: 4 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 << 20;

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

/// What every request of the HTTPS listener shares (the limits shared with the relay link are in
/// [`crate::exchange::ExchangeState`]).
pub(crate) struct HttpsIngest {
    ctx: Arc<Context>,
}
impl std::fmt::Debug for HttpsIngest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsIngest").finish_non_exhaustive()
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
    let state = Arc::new(HttpsIngest { ctx });
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
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
pub const RELAY_WAKES_WAIT: Duration = crate::exchange::RELAY_WAKES_WAIT;

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
            Some(token) => match authenticate_relay(&self.ctx, token).await {
                Ok(relay) => Some(relay),
                Err(refusal) => return self.refuse(refusal),
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
                Form::Frames => crate::exchange::frames(&self.ctx, &body, relay.as_ref(), resend).await,
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
    /// without a length passes it); its share of the body budget is held with it.
    async fn read_body(&self, req: Request<Incoming>) -> Result<(Bytes, OwnedSemaphorePermit), Refusal> {
        let max = self.ctx.config.https_max_body_bytes;
        let declared =
            req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        let permit = body_share(&self.ctx, declared).await?;
        match Limited::new(req.into_body(), max).collect().await {
            Ok(collected) => Ok((collected.to_bytes(), permit)),
            Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(Refusal::too_large(max)),
            Err(error) => Err(Refusal::bad_request(format!("reading the body failed: {error}"))),
        }
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
        let uplinks = request.frames.into_iter().map(JsonFrame::into_uplink).collect();
        crate::exchange::session(&self.ctx, hello, uplinks, relay, resend).await
    }

    /// A relay's long poll: the devices of its scope woken after `?after=N`
    /// ([`crate::exchange::relay_wakes`]); `{"next": n, "devices": [ids]}`.
    async fn relay_wakes(&self, relay: &AuthorizedRelay, query: Option<&str>) -> Response<Full<Bytes>> {
        let after = query
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("after=")))
            .and_then(|v| v.parse::<u64>().ok());
        let (next, mine) = crate::exchange::relay_wakes(&self.ctx, relay, after).await;
        self.ctx.metrics.https_requests.get_or_create(&ReasonLabel { reason: "ok" }).inc();
        json_response(StatusCode::OK, &serde_json::json!({ "next": next, "devices": mine }))
    }

    fn refuse(&self, refusal: Refusal) -> Response<Full<Bytes>> {
        let reason = refusal.reason_label();
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
            let mut response = Response::new(Full::new(answer_frames(outcome).freeze()));
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            response
        }
    }
}
