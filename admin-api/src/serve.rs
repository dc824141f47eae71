//! Serving the API over HTTP/1 with limits (issue 19): a header-read timeout, a body-read
//! timeout, an idle keep-alive timeout, a cap on concurrent connections with a reserve for the
//! health probes, and an early 413 for a declared body over the limit.
//!
//! The accept loop takes a permit of the connection cap for each connection. At the cap, a
//! connection takes a permit of the probe reserve instead and may only ask for `/healthz` and
//! `/readyz` (anything else: 503 `busy`, then the connection closes), so that an orchestrator
//! still sees the process while clients fill it up; with the reserve full too the connection is
//! closed at once. Every connection past the cap is counted and logged (at most once per
//! [`OVER_CAP_LOG_INTERVAL`]).
//!
//! *Architecture invariant*: a connection holds at most one permit, dropped with the connection;
//! no request waits for a permit (the cap refuses, it does not queue).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tower::ServiceExt as _;

use crate::error::ApiError;

/// At most one "connections over the cap" log line per this interval (the metric counts all).
pub const OVER_CAP_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Limits of the HTTP server (`[http]` in the configuration file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// A request's header must arrive whole within this; default 10 s. Else the connection closes.
    pub header_read_timeout: Duration,
    /// A request's body must arrive whole within this (from the end of its header); default
    /// 30 s. Else the connection closes.
    pub body_read_timeout: Duration,
    /// A connection without a byte read or written for this long closes (after the request in
    /// flight, if any); default 60 s.
    pub idle_timeout: Duration,
    /// Concurrent connections served; default 1,024. Keep it well below the file-descriptor
    /// limit (the store, the QUIC socket and the probe reserve need some).
    pub max_connections: usize,
    /// Connections past the cap that may still ask for `/healthz` and `/readyz`; default 16.
    pub probe_connections: usize,
    /// A request declaring a longer body (`Content-Length`) is answered 413 at once and the
    /// connection closes; the router's own limit still applies to chunked bodies.
    pub max_body_bytes: u64,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1_024,
            probe_connections: 16,
            max_body_bytes: 64 * 1024,
        }
    }
}

/// Why a connection was closed by a limit (the `reason` label).
#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// The server's metrics: open connections, connections past the cap, limits that closed one.
#[derive(Debug, Clone, Default)]
pub struct HttpMetrics {
    open: Gauge,
    over_cap: Family<ReasonLabel, Counter>,
    closed: Family<ReasonLabel, Counter>,
}

impl HttpMetrics {
    /// Registers the metrics in `registry`.
    pub fn register(registry: &mut Registry) -> HttpMetrics {
        let m = HttpMetrics::default();
        registry.register("http_connections_open", "HTTP connections being served", m.open.clone());
        registry.register(
            "http_connections_over_cap",
            "Connections past the connection cap (reason: probe_only, refused)",
            m.over_cap.clone(),
        );
        registry.register(
            "http_connections_closed_by_limit",
            "Connections closed by a limit (reason: body_timeout, idle, body_too_large)",
            m.closed.clone(),
        );
        m
    }

    fn closed(&self, reason: &'static str) {
        self.closed.get_or_create(&ReasonLabel { reason }).inc();
    }
}

/// Serves `app` on `listener` with `limits` until `shutdown` resolves; then stops accepting and
/// lets the connections finish their requests (they close when idle).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    metrics: HttpMetrics,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = Arc::new(limits);
    let cap = Arc::new(Semaphore::new(limits.max_connections));
    let reserve = Arc::new(Semaphore::new(limits.probe_connections));
    let log = OverCapLog::default();
    let stop = Arc::new(Notify::new());
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // EMFILE and friends: the cap should prevent them; back off instead of spinning.
                    tracing::warn!(message = "Cannot accept an HTTP connection.", %error);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (permit, probe_only) = match cap.clone().try_acquire_owned() {
            Ok(permit) => (permit, false),
            Err(_) => match reserve.clone().try_acquire_owned() {
                Ok(permit) => {
                    metrics.over_cap.get_or_create(&ReasonLabel { reason: "probe_only" }).inc();
                    log.note(&limits);
                    (permit, true)
                }
                Err(_) => {
                    metrics.over_cap.get_or_create(&ReasonLabel { reason: "refused" }).inc();
                    log.note(&limits);
                    drop(stream);
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (app, limits, metrics, stop) = (app.clone(), limits.clone(), metrics.clone(), stop.clone());
        tokio::spawn(async move {
            metrics.open.inc();
            serve_connection(stream, remote, app, &limits, &metrics, probe_only, &stop).await;
            metrics.open.dec();
            drop(permit);
        });
    }
    stop.notify_waiters();
    Ok(())
}

/// Rate limit of the "connections over the cap" log line.
#[derive(Debug, Default)]
struct OverCapLog {
    /// Milliseconds since `start` of the last line, and how many were not logged since.
    last: std::sync::Mutex<Option<Instant>>,
    unlogged: AtomicU64,
}

impl OverCapLog {
    fn note(&self, limits: &HttpLimits) {
        let skipped = self.unlogged.fetch_add(1, Ordering::Relaxed);
        let Ok(mut last) = self.last.lock() else { return };
        if last.is_some_and(|at| at.elapsed() < OVER_CAP_LOG_INTERVAL) {
            return;
        }
        *last = Some(Instant::now());
        self.unlogged.store(0, Ordering::Relaxed);
        tracing::warn!(
            message =
                "HTTP connection cap reached: new connections may only ask for /healthz and /readyz, or are closed.",
            max_connections = limits.max_connections,
            probe_connections = limits.probe_connections,
            over_cap_since_last_line = skipped + 1,
        );
    }
}

/// Serves one connection until it closes, a limit closes it or the server stops (then it closes
/// once idle).
async fn serve_connection(
    stream: tokio::net::TcpStream,
    remote: SocketAddr,
    app: Router,
    limits: &HttpLimits,
    metrics: &HttpMetrics,
    probe_only: bool,
    stop: &Notify,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched { inner: stream, activity: activity.clone() });
    // Set by a request whose body did not arrive in time: the connection is dropped.
    let kill = Arc::new(Notify::new());
    let service = {
        let (kill, body_timeout, max_body) = (kill.clone(), limits.body_read_timeout, limits.max_body_bytes);
        let metrics = metrics.clone();
        hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
            let app = app.clone();
            let kill = kill.clone();
            let metrics = metrics.clone();
            async move {
                req.extensions_mut().insert(ConnectInfo(remote));
                if probe_only && !matches!(req.uri().path(), "/healthz" | "/readyz") {
                    return Ok::<_, std::convert::Infallible>(closing(busy()));
                }
                let streamed = streamed_upload_max(req.uri().path());
                let max_body = streamed.unwrap_or(max_body);
                let streamed = streamed.is_some();
                if declared_length(&req).is_some_and(|n| n > max_body) {
                    metrics.closed("body_too_large");
                    return Ok(closing(ApiError::PayloadTooLarge.into_response()));
                }
                let req = req.map(|body| Body::new(TimedBody::new(body, body_timeout, streamed, kill, metrics)));
                Ok(app.oneshot(req).await.unwrap_or_else(|never| match never {}))
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(!probe_only);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut idle_check =
        tokio::time::interval(limits.idle_timeout.min(Duration::from_secs(1)).max(Duration::from_millis(50)));
    let mut shutting_down = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(message = "HTTP connection ended with an error.", %error, %remote);
                }
                return;
            }
            () = kill.notified() => return,
            () = stop.notified(), if !shutting_down => {
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = idle_check.tick(), if !shutting_down => {
                if activity.idle_for() >= limits.idle_timeout {
                    metrics.closed("idle");
                    shutting_down = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// 503 `busy` for a connection past the cap that asks for more than the probes.
fn busy() -> Response<Body> {
    let body =
        serde_json::json!({"error": {"code": "busy", "message": "the server is at its connection limit: retry later"}});
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// `response` with `Connection: close` (hyper then closes the connection after it).
fn closing(mut response: Response<Body>) -> Response<Body> {
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The `Content-Length` a request declares, if any and valid.
/// Routes that read their body as a stream and enforce their own limit (firmware images:
/// `[firmware] max_bytes`; CSV imports: their row and byte limits), with the largest body each
/// may declare: above it the early 413; below it the route decides. Their body's deadline
/// restarts with every piece that arrives (a large upload may take longer than the body
/// timeout, a stalled one may not).
fn streamed_upload_max(path: &str) -> Option<u64> {
    match path {
        "/api/v1/firmware" => Some(fleetpulse_store::MAX_FIRMWARE_IMAGE_BYTES),
        "/api/v1/device-imports" => Some(crate::routes::device_imports::PLATFORM_LIMIT_BYTES),
        "/api/v1/sites/import" => Some(crate::routes::sites::MAX_IMPORT_BYTES as u64),
        "/api/v1/rps-devices/import" => Some(crate::routes::rps::MAX_IMPORT_BYTES as u64),
        _ => None,
    }
}

fn declared_length<B>(req: &Request<B>) -> Option<u64> {
    req.headers().get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// When a connection last read or wrote a byte.
#[derive(Debug)]
struct Activity {
    start: Instant,
    /// Milliseconds since `start`.
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity { start: Instant::now(), last_ms: AtomicU64::new(0) }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        self.start.elapsed().saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// A stream that records its activity.
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A request body that must arrive whole within a deadline; past it, the body fails and the
/// connection is dropped (the client is sending too slowly, or not at all).
struct TimedBody {
    inner: hyper::body::Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    /// The deadline restarts with every frame (a streamed upload).
    per_frame: bool,
    kill: Arc<Notify>,
    metrics: HttpMetrics,
}

impl TimedBody {
    fn new(
        inner: hyper::body::Incoming,
        timeout: Duration,
        per_frame: bool,
        kill: Arc<Notify>,
        metrics: HttpMetrics,
    ) -> TimedBody {
        TimedBody { inner, deadline: Box::pin(tokio::time::sleep(timeout)), timeout, per_frame, kill, metrics }
    }
}

impl hyper::body::Body for TimedBody {
    type Data = bytes::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            if self.per_frame {
                let next = tokio::time::Instant::now() + self.timeout;
                self.deadline.as_mut().reset(next);
            }
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.metrics.closed("body_timeout");
            self.kill.notify_one();
            let timeout = std::io::Error::new(std::io::ErrorKind::TimedOut, "the request body did not arrive in time");
            return Poll::Ready(Some(Err(timeout.into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
