//! A relay's one upstream connection (ING-9): [`Upstream`], over QUIC to the server's relay link
//! ([`crate::relay_upstream_quic`], the default), or over HTTP/2 with TLS to the server's HTTPS
//! ingest (here, for sites that block UDP): one request per device exchange
//! (`POST /ingest/v1/frames` with the device's own `Hello` and the relay's credential in
//! [`crate::https::RELAY_HEADER`]), many devices multiplexed as streams.
//!
//! Over either, the server answers after its shard made the frames durable, so an `Ack` the relay passes on
//! means durable at the server, never at the relay. Failures are sorted into those worth
//! retrying with the same frames ([`Failure::Retry`]: the connection dropped, 429, 503) and those
//! that end the device's session ([`Failure::Close`]: bad credential, refused scope, malformed).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fleetpulse_proto::wire::{Downlink, Uplink};
use fleetpulse_proto::{FrameDecoder, FrameEncoder, close_code};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper::header::{self, HeaderValue};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::session::Close;

/// How long a relay waits before trying an upstream exchange again, unless told.
pub(crate) const RETRY_AFTER: Duration = Duration::from_millis(500);

/// Longest an upstream exchange may take before it counts as failed (and is retried).
pub(crate) const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why an exchange failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Nothing new is acknowledged; try the same frames again after the wait.
    Retry(Duration),
    /// The server refused the device; its session ends with this close.
    Close(Close),
}

/// How a relay reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamTransport {
    /// QUIC to the server's QUIC ingest address, ALPN `fleetpulse-relay/1` (the default).
    #[default]
    Quic,
    /// HTTP/2 over TLS to the server's HTTPS ingest address, for sites that block UDP.
    Https,
}

impl std::str::FromStr for UpstreamTransport {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "quic" => Ok(UpstreamTransport::Quic),
            "https" => Ok(UpstreamTransport::Https),
            other => Err(format!("unknown upstream transport {other:?}: quic or https")),
        }
    }
}

impl std::fmt::Display for UpstreamTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UpstreamTransport::Quic => "quic",
            UpstreamTransport::Https => "https",
        })
    }
}

/// The upstream connection over either transport.
#[derive(Debug)]
pub(crate) enum Upstream {
    /// The relay link.
    Quic(crate::relay_upstream_quic::QuicUpstream),
    /// HTTPS ingest.
    Https(HttpsUpstream),
}

impl Upstream {
    /// An upstream to `addr` over `transport`, verified for `server_name` with `tls`.
    pub(crate) fn new(
        transport: UpstreamTransport,
        addr: SocketAddr,
        server_name: &str,
        tls: rustls::ClientConfig,
        credential: &str,
    ) -> Result<Upstream, crate::IngestError> {
        Ok(match transport {
            UpstreamTransport::Quic => {
                Upstream::Quic(crate::relay_upstream_quic::QuicUpstream::new(addr, server_name, tls, credential)?)
            }
            UpstreamTransport::Https => Upstream::Https(HttpsUpstream::new(addr, server_name, tls, credential)?),
        })
    }

    /// Sends the device's `hello` and `frames` (`resend`: sent before, the answer was lost); the
    /// server's answer frames (`Welcome`, any `Rejected`, the `Ack`, any `Command`s).
    pub(crate) async fn exchange(
        &self,
        hello: &Uplink,
        frames: &[Uplink],
        resend: bool,
    ) -> Result<Vec<Downlink>, Failure> {
        match self {
            Upstream::Quic(u) => u.exchange(hello, frames, resend).await,
            Upstream::Https(u) => u.exchange(hello, frames, resend).await,
        }
    }

    /// The relay's long poll: devices of its scope with new commands, woken after `after`
    /// (`None`: only where the server's log stands); `(next, device ids)`.
    pub(crate) async fn wakes(&self, after: Option<u64>) -> Result<(u64, Vec<u64>), String> {
        match self {
            Upstream::Quic(u) => u.wakes(after).await,
            Upstream::Https(u) => u.wakes(after).await,
        }
    }
}

/// The upstream connection over HTTP/2, reconnected on demand.
pub(crate) struct HttpsUpstream {
    addr: SocketAddr,
    uri: String,
    tls: Arc<rustls::ClientConfig>,
    server_name: rustls::pki_types::ServerName<'static>,
    credential: HeaderValue,
    sender: tokio::sync::Mutex<Option<SendRequest<Full<Bytes>>>>,
}

impl std::fmt::Debug for HttpsUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsUpstream").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl HttpsUpstream {
    /// An upstream to `addr`, verified for `server_name` with `tls` (ALPN is set to `h2`).
    fn new(
        addr: SocketAddr,
        server_name: &str,
        mut tls: rustls::ClientConfig,
        credential: &str,
    ) -> Result<HttpsUpstream, crate::IngestError> {
        tls.alpn_protocols = vec![b"h2".to_vec()];
        let server_name = rustls::pki_types::ServerName::try_from(server_name.to_owned())
            .map_err(|e| crate::IngestError::Tls(format!("upstream name: {e}")))?;
        let credential =
            HeaderValue::from_str(credential).map_err(|e| crate::IngestError::Tls(format!("relay credential: {e}")))?;
        Ok(HttpsUpstream {
            addr,
            uri: format!("https://{}/ingest/v1/frames", addr),
            tls: Arc::new(tls),
            server_name,
            credential,
            sender: tokio::sync::Mutex::new(None),
        })
    }

    /// The current connection's sender, connecting if there is none.
    async fn sender(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let mut slot = self.sender.lock().await;
        if let Some(sender) = slot.as_ref()
            && !sender.is_closed()
        {
            return Ok(sender.clone());
        }
        let tcp = tokio::net::TcpStream::connect(self.addr).await.map_err(|e| format!("connect: {e}"))?;
        tcp.set_nodelay(true).ok();
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let (sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP/2: {e}"))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::info!(message = "The upstream connection ended.", %error);
            }
        });
        tracing::info!(message = "Connected upstream.", addr = %self.addr, transport = "https");
        *slot = Some(sender.clone());
        Ok(sender)
    }

    /// [`Upstream::exchange`] over HTTP/2.
    async fn exchange(&self, hello: &Uplink, frames: &[Uplink], resend: bool) -> Result<Vec<Downlink>, Failure> {
        let mut encoder = FrameEncoder::default();
        let mut body = BytesMut::new();
        for frame in std::iter::once(hello).chain(frames) {
            encoder
                .encode(frame, &mut body)
                .map_err(|e| Failure::Close(Close::new(close_code::FRAME_TOO_LARGE, e.to_string())))?;
        }
        let mut sender = self.sender().await.map_err(|error| {
            tracing::warn!(message = "Upstream unreachable; retrying.", %error);
            Failure::Retry(RETRY_AFTER)
        })?;
        let mut request = hyper::Request::post(&self.uri);
        if resend {
            request = request.header(crate::https_commands::RESEND_HEADER, HeaderValue::from_static("1"));
        }
        let request = request
            .header(crate::https::RELAY_HEADER, self.credential.clone())
            .header(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"))
            // The server reserves memory for a body by its length (the limit without one).
            .header(header::CONTENT_LENGTH, HeaderValue::from(body.len()))
            .body(Full::new(body.freeze()))
            .map_err(|e| Failure::Close(Close::new(close_code::SERVER_ERROR, e.to_string())))?;
        let exchange = async {
            // Waits for stream credit (the server's concurrent stream limit) instead of failing.
            sender.ready().await.map_err(|e| e.to_string())?;
            let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let bytes = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
            Ok::<_, String>((status, retry_after, bytes))
        };
        let (status, retry_after, bytes) = match tokio::time::timeout(EXCHANGE_TIMEOUT, exchange).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) => {
                tracing::debug!(message = "Upstream exchange failed; retrying.", %error);
                self.forget_if_closed(&sender).await;
                return Err(Failure::Retry(RETRY_AFTER));
            }
            Err(_) => {
                self.forget_if_closed(&sender).await;
                return Err(Failure::Retry(RETRY_AFTER));
            }
        };
        match status.as_u16() {
            200 => decode_frames(&bytes).map_err(Failure::Close),
            429 => Err(Failure::Retry(retry_after.map_or(RETRY_AFTER, Duration::from_secs))),
            500..=599 => Err(Failure::Retry(retry_after.map_or(RETRY_AFTER, Duration::from_secs))),
            _ => Err(Failure::Close(refusal(&bytes))),
        }
    }

    /// [`Upstream::wakes`] over HTTP/2.
    async fn wakes(&self, after: Option<u64>) -> Result<(u64, Vec<u64>), String> {
        #[derive(serde::Deserialize)]
        struct Wakes {
            next: u64,
            devices: Vec<u64>,
        }
        let mut sender = self.sender().await?;
        let uri = match after {
            Some(n) => format!("https://{}/ingest/v1/relay/wakes?after={n}", self.addr),
            None => format!("https://{}/ingest/v1/relay/wakes", self.addr),
        };
        let request = hyper::Request::post(uri)
            .header(crate::https::RELAY_HEADER, self.credential.clone())
            .header(header::CONTENT_LENGTH, HeaderValue::from(0))
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let poll = async {
            sender.ready().await.map_err(|e| e.to_string())?;
            let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
            let status = response.status();
            let bytes = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
            if !status.is_success() {
                return Err(format!("status {status}"));
            }
            serde_json::from_slice::<Wakes>(&bytes).map_err(|e| e.to_string())
        };
        let wait = crate::exchange::RELAY_WAKES_WAIT + Duration::from_secs(10);
        match tokio::time::timeout(wait, poll).await {
            Ok(Ok(w)) => Ok((w.next, w.devices)),
            Ok(Err(error)) => {
                self.forget_if_closed(&sender).await;
                Err(error)
            }
            Err(_) => {
                self.forget_if_closed(&sender).await;
                Err("timed out".into())
            }
        }
    }

    /// Drops the connection if it is closed (the next exchange reconnects); one failed stream
    /// does not end the other devices' exchanges on a live connection.
    async fn forget_if_closed(&self, failed: &SendRequest<Full<Bytes>>) {
        if failed.is_closed() {
            let mut slot = self.sender.lock().await;
            if slot.as_ref().is_some_and(SendRequest::is_closed) {
                *slot = None;
            }
        }
    }
}

/// The close a refused exchange means for the device: the server's own close code.
fn refusal(bytes: &[u8]) -> Close {
    #[derive(serde::Deserialize)]
    struct Body {
        close_code: u32,
        error: String,
    }
    match serde_json::from_slice::<Body>(bytes) {
        Ok(b) if b.close_code != close_code::NORMAL => Close::new(b.close_code, b.error),
        Ok(b) => Close::new(close_code::PROTOCOL_VIOLATION, b.error),
        Err(_) => Close::new(close_code::SERVER_ERROR, "the server refused the relay"),
    }
}

/// The server's frames for a device.
pub(crate) fn decode_frames(bytes: &[u8]) -> Result<Vec<Downlink>, Close> {
    let mut decoder = FrameDecoder::default();
    decoder.push(bytes);
    let mut out = Vec::new();
    loop {
        match decoder.next_frame::<Downlink>() {
            Ok(Some(frame)) => out.push(frame),
            Ok(None) => return Ok(out),
            Err(e) => return Err(Close::new(close_code::SERVER_ERROR, format!("upstream answer: {e}"))),
        }
    }
}
