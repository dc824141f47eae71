//! The firmware download server (PRV-4): HTTPS/1.1 on its own listener (`[firmware]
//! https_listen`, the ingest's certificate), serving `GET /firmware/{image}/{device}?token=…`
//! to the one device the token was signed for, until it expires, streamed chunk by chunk from
//! the store, with single byte ranges (`Range: bytes=a-b`, `a-`, `-n`) so that an interrupted
//! download resumes.
//!
//! Answers: 200 (whole image) or 206 (a range, with `Content-Range`); 403 for a missing,
//! wrong or expired token; 404 for any other path, an image that is gone, or a device that is
//! no longer in the image's enterprise; 405 for a method other than GET and HEAD; 416 for a range
//! past the end. Bounded: [`MAX_CONNECTIONS`] connections, a TLS handshake and a request header
//! must each arrive within [`HANDSHAKE_TIMEOUT`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Method, Request, Response, StatusCode, header};
use fleetpulse_proto::{DeviceId, FirmwareId, UnixMillis};
use fleetpulse_store::{EntityStore, FILE_CHUNK};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::firmware_link::{FirmwareKey, TokenRefusal, verify_token};

/// Most simultaneous download connections.
pub const MAX_CONNECTIONS: usize = 1_024;

/// Longest TLS handshake, and longest wait for a request header.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the server reads.
#[derive(Clone)]
pub struct DownloadContext {
    /// Images and devices.
    pub store: Arc<dyn EntityStore>,
    /// The token key (the API's [`crate::firmware::FirmwareSettings::key`]).
    pub key: FirmwareKey,
}

impl std::fmt::Debug for DownloadContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DownloadContext").finish_non_exhaustive()
    }
}

/// Serves downloads on `listener` with `tls` until `stop` completes (connections in progress
/// are dropped then).
pub async fn serve_downloads(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    ctx: DownloadContext,
    stop: impl Future<Output = ()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, remote) = match accepted {
            Ok(a) => a,
            Err(error) => {
                tracing::warn!(message = "Accepting a firmware download connection failed.", %error);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Over the cap the connection is closed at once (the device retries later).
        let Ok(permit) = permits.clone().try_acquire_owned() else { continue };
        let (acceptor, ctx) = (acceptor.clone(), ctx.clone());
        connections.spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(message = "Firmware download TLS handshake failed.", %error, %remote);
                    return;
                }
                Err(_) => return,
            };
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let ctx = ctx.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&ctx, req.method(), req.uri(), req.headers()).await) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(HANDSHAKE_TIMEOUT);
            if let Err(error) = builder.serve_connection(TokioIo::new(tls), service).await {
                tracing::debug!(message = "Firmware download connection ended with an error.", %error, %remote);
            }
        });
    }
    connections.abort_all();
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// The `(image, device)` of a download path, `None` for any other path.
pub fn parse_path(path: &str) -> Option<(FirmwareId, DeviceId)> {
    let rest = path.strip_prefix("/firmware/")?;
    let (image, device) = rest.split_once('/')?;
    let id = |s: &str| s.parse::<u64>().ok().filter(|n| (1..=i64::MAX as u64).contains(n) && !s.starts_with('+'));
    Some((FirmwareId(id(image)?), DeviceId(id(device)?)))
}

/// The `token` query parameter.
fn token(query: Option<&str>) -> Option<String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query?)
        .ok()?
        .into_iter()
        .find_map(|(k, v)| (k == "token").then_some(v))
}

/// What a `Range` header asks of an image of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAsk {
    /// The whole image (no header, or one this server does not serve partially: several ranges,
    /// another unit, bad syntax — all allowed to be ignored by RFC 9110).
    Whole,
    /// Bytes `start..=end`.
    Part {
        /// First byte.
        start: u64,
        /// Last byte (inclusive).
        end: u64,
    },
    /// A range that starts past the end (416).
    Unsatisfiable,
}

/// Parses a `Range` header against an image of `size` bytes (`size > 0`).
pub fn parse_range(header: Option<&str>, size: u64) -> RangeAsk {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else { return RangeAsk::Whole };
    if spec.contains(',') {
        return RangeAsk::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else { return RangeAsk::Whole };
    let number =
        |s: &str| (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse::<u64>().ok()).flatten();
    match (first.is_empty(), number(first), number(last)) {
        // `-n`: the last n bytes.
        (true, _, Some(0)) => RangeAsk::Unsatisfiable,
        (true, _, Some(n)) => RangeAsk::Part { start: size.saturating_sub(n), end: size - 1 },
        (false, Some(start), _) if start >= size => RangeAsk::Unsatisfiable,
        (false, Some(start), None) if last.is_empty() => RangeAsk::Part { start, end: size - 1 },
        (false, Some(start), Some(end)) if end >= start => RangeAsk::Part { start, end: end.min(size - 1) },
        _ => RangeAsk::Whole,
    }
}

/// The answer to one request.
async fn answer(
    ctx: &DownloadContext,
    method: &Method,
    uri: &axum::http::Uri,
    headers: &axum::http::HeaderMap,
) -> Response<Body> {
    let Some((image_id, device_id)) = parse_path(uri.path()) else {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    };
    if method != Method::GET && method != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let Some(token) = token(uri.query()) else { return plain(StatusCode::FORBIDDEN, "a token is required\n") };
    match verify_token(&ctx.key, image_id, device_id, &token, UnixMillis::now()) {
        Ok(()) => {}
        Err(TokenRefusal::Expired) => return plain(StatusCode::FORBIDDEN, "the download link has expired\n"),
        Err(TokenRefusal::Invalid) => return plain(StatusCode::FORBIDDEN, "the download link is not valid\n"),
    }
    let (image, device) = match tokio::try_join!(ctx.store.firmware(image_id), ctx.store.device(device_id)) {
        Ok(found) => found,
        Err(error) => {
            tracing::error!(message = "Reading a firmware image failed.", image = %image_id, %error);
            return plain(StatusCode::SERVICE_UNAVAILABLE, "try again later\n");
        }
    };
    let image = match (image, device) {
        (Some(image), Some(device)) if device.enterprise_id == image.enterprise_id => image,
        _ => return plain(StatusCode::NOT_FOUND, "not found\n"),
    };
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, end) = match parse_range(range, image.size) {
        RangeAsk::Whole => (StatusCode::OK, 0, image.size - 1),
        RangeAsk::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end),
        RangeAsk::Unsatisfiable => {
            let mut response = plain(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable\n");
            if let Ok(v) = HeaderValue::try_from(format!("bytes */{}", image.size)) {
                response.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return response;
        }
    };
    let body = if method == Method::HEAD { Body::empty() } else { stream(ctx.store.clone(), image_id, start, end + 1) };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end + 1 - start));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::try_from(format!("\"{}\"", image.sha256)) {
        h.insert(header::ETAG, v);
    }
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::try_from(format!("bytes {start}-{end}/{}", image.size))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    tracing::debug!(message = "Serving a firmware download.", image = %image_id, device = %device_id, start, end);
    response
}

/// Bytes `start..end` of the image, read one store chunk at a time as the client takes them.
fn stream(store: Arc<dyn EntityStore>, image: FirmwareId, start: u64, end: u64) -> Body {
    let chunk = FILE_CHUNK as u64;
    let stream = futures_util::stream::try_unfold(start, move |at| {
        let store = store.clone();
        async move {
            if at >= end {
                return Ok(None);
            }
            let index = at / chunk;
            let bytes = match store.firmware_chunk(image, index).await {
                Ok(Some(bytes)) => bytes,
                Ok(None) => {
                    return Err(std::io::Error::other(format!("firmware {image} was deleted while being sent")));
                }
                Err(error) => {
                    tracing::error!(message = "Reading a firmware chunk failed.", image = %image, index, %error);
                    return Err(std::io::Error::other(error));
                }
            };
            let from = usize::try_from(at - index * chunk).unwrap_or(usize::MAX).min(bytes.len());
            let to =
                usize::try_from(end.min((index + 1) * chunk) - index * chunk).unwrap_or(usize::MAX).min(bytes.len());
            if from >= to {
                return Err(std::io::Error::other(format!("firmware {image} is shorter than its size")));
            }
            let next = at + (to - from) as u64;
            Ok(Some((Bytes::copy_from_slice(&bytes[from..to]), next)))
        }
    });
    Body::from_stream(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeAsk::*;
        let cases: &[(Option<&str>, RangeAsk)] = &[
            (None, Whole),
            (Some("bytes=0-99"), Part { start: 0, end: 99 }),
            (Some("bytes=100-"), Part { start: 100, end: 999 }),
            (Some("bytes=990-5000"), Part { start: 990, end: 999 }),
            (Some("bytes=-10"), Part { start: 990, end: 999 }),
            (Some("bytes=-5000"), Part { start: 0, end: 999 }),
            (Some("bytes=999-999"), Part { start: 999, end: 999 }),
            (Some("bytes=1000-"), Unsatisfiable),
            (Some("bytes=-0"), Unsatisfiable),
            (Some("bytes=5-4"), Whole),
            (Some("bytes=0-1,5-6"), Whole),
            (Some("items=0-1"), Whole),
            (Some("bytes=a-b"), Whole),
            (Some("bytes=+1-2"), Whole),
            (Some("bytes=99999999999999999999999-"), Whole),
        ];
        for (header, want) in cases {
            assert_eq!(parse_range(*header, 1000), *want, "{header:?}");
        }
    }

    #[test]
    fn paths() {
        assert_eq!(parse_path("/firmware/3/17"), Some((FirmwareId(3), DeviceId(17))));
        for bad in ["/firmware/3", "/firmware/3/17/x", "/firmware/0/1", "/firmware/+3/1", "/firmware/3/-1", "/x/3/1"] {
            assert_eq!(parse_path(bad), None, "{bad}");
        }
        assert_eq!(parse_path(&format!("/firmware/{}/1", u64::MAX)), None);
    }

    #[test]
    fn token_is_read_from_the_query() {
        assert_eq!(token(Some("token=12.ab&x=1")), Some("12.ab".into()));
        assert_eq!(token(Some("x=1")), None);
        assert_eq!(token(None), None);
    }
}
