//! A relay's upstream over QUIC (ING-9, the default): one connection to the server's QUIC ingest
//! address with ALPN [`fleetpulse_proto::RELAY_ALPN`], reconnected on demand, one bidirectional
//! stream per device exchange ([`fleetpulse_proto::relay_link`]), many devices' exchanges as
//! concurrent streams. The server's end is [`crate::relay_link`].
//!
//! The answers mean what the HTTPS upstream's mean ([`crate::relay_upstream`]): `Ok` after the
//! frames are durable, `Retry` (nothing applied: rate limit, the store, the connection lost)
//! and `Refused` (the device's session ends with the server's close code).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fleetpulse_proto::relay_link::{LinkAnswer, LinkRequest, LinkRequestKind, MAX_ANSWER_LEN, MAX_WAKES_ANSWER_LEN};
use fleetpulse_proto::wire::{Downlink, Uplink};
use fleetpulse_proto::{FrameEncoder, close_code};
use quinn::crypto::rustls::QuicClientConfig;
use quinn::{IdleTimeout, TransportConfig, VarInt};

use crate::relay_upstream::{EXCHANGE_TIMEOUT, Failure, RETRY_AFTER, decode_frames};
use crate::session::Close;

/// Longest a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The relay keeps its connection alive between exchanges this often.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// The relay's side of the link: a wide stream window for answers (commands), a connection
/// window for many at once, no streams opened by the server.
fn transport() -> Result<TransportConfig, crate::IngestError> {
    let mut t = TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(0))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .stream_receive_window(VarInt::from_u32(1 << 20))
        .receive_window(VarInt::from_u32(16 << 20))
        .send_window(16 << 20)
        .keep_alive_interval(Some(KEEP_ALIVE))
        .max_idle_timeout(Some(
            IdleTimeout::try_from(Duration::from_secs(60))
                .map_err(|e| crate::IngestError::Tls(format!("idle timeout: {e}")))?,
        ));
    Ok(t)
}

/// The upstream connection over QUIC, reconnected on demand.
pub(crate) struct QuicUpstream {
    addr: SocketAddr,
    server_name: String,
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    credential: String,
    conn: tokio::sync::Mutex<Option<quinn::Connection>>,
}

impl std::fmt::Debug for QuicUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicUpstream").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl QuicUpstream {
    /// An upstream to the server's QUIC ingest `addr`, verified for `server_name` with `tls`
    /// (ALPN is set to the relay link's).
    pub(crate) fn new(
        addr: SocketAddr,
        server_name: &str,
        mut tls: rustls::ClientConfig,
        credential: &str,
    ) -> Result<QuicUpstream, crate::IngestError> {
        // The credential must fit the link's header.
        LinkRequest { credential: credential.to_owned(), kind: LinkRequestKind::Wakes { after: None } }
            .encode()
            .map_err(|e| crate::IngestError::Tls(format!("relay credential: {e}")))?;
        tls.alpn_protocols = vec![fleetpulse_proto::RELAY_ALPN.to_vec()];
        let crypto = QuicClientConfig::try_from(tls).map_err(|e| crate::IngestError::Tls(format!("QUIC TLS: {e}")))?;
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        client.transport_config(Arc::new(transport()?));
        let local: SocketAddr =
            if addr.is_ipv6() { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() } else { ([0, 0, 0, 0], 0).into() };
        let endpoint = quinn::Endpoint::client(local)?;
        Ok(QuicUpstream {
            addr,
            server_name: server_name.to_owned(),
            endpoint,
            client,
            credential: credential.to_owned(),
            conn: tokio::sync::Mutex::new(None),
        })
    }

    /// The current connection, connecting if there is none (or it closed).
    async fn connection(&self) -> Result<quinn::Connection, String> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref()
            && conn.close_reason().is_none()
        {
            return Ok(conn.clone());
        }
        let connecting = self
            .endpoint
            .connect_with(self.client.clone(), self.addr, &self.server_name)
            .map_err(|e| format!("connect: {e}"))?;
        let conn = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(error)) => return Err(format!("connect: {error}")),
            Err(_) => return Err("connect: timed out".into()),
        };
        tracing::info!(message = "Connected upstream.", addr = %self.addr, transport = "quic");
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Drops the connection if it is closed (the next exchange reconnects); one failed stream
    /// does not end the other devices' exchanges on a live connection.
    async fn forget_if_closed(&self, failed: &quinn::Connection) {
        if failed.close_reason().is_some() {
            let mut slot = self.conn.lock().await;
            if slot.as_ref().is_some_and(|c| c.stable_id() == failed.stable_id()) {
                *slot = None;
            }
        }
    }

    /// One request on a stream of its own: the header and the body, then the whole answer.
    async fn request(
        &self,
        header: LinkRequestKind,
        body: &[u8],
        limit: usize,
        wait: Duration,
    ) -> Result<Vec<u8>, String> {
        let header =
            LinkRequest { credential: self.credential.clone(), kind: header }.encode().map_err(|e| e.to_string())?;
        let conn = self.connection().await?;
        let exchange = async {
            // Waits for stream credit (the server's limit of exchanges at once) instead of failing.
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
            let wrote = async {
                send.write_all(&header).await?;
                send.write_all(body).await?;
                send.finish().map_err(|_| quinn::WriteError::ClosedStream)
            }
            .await;
            // A server that refuses early stops reading the body; its answer follows anyway.
            match recv.read_to_end(limit).await {
                Ok(answer) => Ok(answer),
                Err(error) => match wrote {
                    Err(write) => Err(format!("{write}; {error}")),
                    Ok(()) => Err(error.to_string()),
                },
            }
        };
        let answer = tokio::time::timeout(wait, exchange).await.unwrap_or_else(|_| Err("timed out".into()));
        // A connection the server closes, whatever its code (`TOO_MANY_CONNECTIONS` when it
        // holds `max_relay_connections` already, `SHUTTING_DOWN`, ...), fails the stream here
        // like a lost one: forgotten, the exchange retried after `RETRY_AFTER` on a new
        // connection; the code never closes a device (only a stream's `Refused` answer does).
        if answer.is_err() {
            self.forget_if_closed(&conn).await;
        }
        answer
    }

    /// Sends the device's `hello` and `frames` (`resend`: sent before, the answer was lost); the
    /// server's answer frames (`Welcome`, any `Rejected`, the `Ack`, any `Command`s).
    pub(crate) async fn exchange(
        &self,
        hello: &Uplink,
        frames: &[Uplink],
        resend: bool,
    ) -> Result<Vec<Downlink>, Failure> {
        let mut encoder = FrameEncoder::default();
        let mut body = bytes::BytesMut::new();
        for frame in std::iter::once(hello).chain(frames) {
            encoder
                .encode(frame, &mut body)
                .map_err(|e| Failure::Close(Close::new(close_code::FRAME_TOO_LARGE, e.to_string())))?;
        }
        let kind = LinkRequestKind::Frames { resend, body_len: body.len() as u64 };
        let answer = match self.request(kind, &body, MAX_ANSWER_LEN, EXCHANGE_TIMEOUT).await {
            Ok(answer) => answer,
            Err(error) => {
                tracing::debug!(message = "Upstream exchange failed; retrying.", %error);
                return Err(Failure::Retry(RETRY_AFTER));
            }
        };
        match LinkAnswer::decode(&answer) {
            Ok(LinkAnswer::Ok(frames)) => decode_frames(&frames).map_err(Failure::Close),
            Ok(LinkAnswer::Retry { after_ms }) => Err(Failure::Retry(Duration::from_millis(u64::from(after_ms)))),
            Ok(LinkAnswer::Refused { close_code: close_code::NORMAL, reason }) => {
                Err(Failure::Close(Close::new(close_code::PROTOCOL_VIOLATION, reason)))
            }
            Ok(LinkAnswer::Refused { close_code, reason }) => Err(Failure::Close(Close::new(close_code, reason))),
            Ok(LinkAnswer::Wakes { .. }) => {
                Err(Failure::Close(Close::new(close_code::SERVER_ERROR, "the server answered frames with wakes")))
            }
            Err(error) => {
                Err(Failure::Close(Close::new(close_code::SERVER_ERROR, format!("upstream answer: {error}"))))
            }
        }
    }

    /// The relay's long poll: devices of its scope with new commands, woken after `after`
    /// (`None`: only where the server's log stands); `(next, device ids)`.
    pub(crate) async fn wakes(&self, after: Option<u64>) -> Result<(u64, Vec<u64>), String> {
        let wait = crate::exchange::RELAY_WAKES_WAIT + Duration::from_secs(10);
        let answer = self.request(LinkRequestKind::Wakes { after }, &[], MAX_WAKES_ANSWER_LEN, wait).await?;
        match LinkAnswer::decode(&answer).map_err(|e| e.to_string())? {
            LinkAnswer::Wakes { next, devices } => Ok((next, devices)),
            LinkAnswer::Refused { close_code, reason } => Err(format!("refused ({close_code}): {reason}")),
            LinkAnswer::Retry { .. } | LinkAnswer::Ok(_) => Err("the server did not answer with wakes".into()),
        }
    }
}
