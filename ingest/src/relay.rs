//! `fleetpulse relay` (ING-9): runs at a site, accepts the site's devices over QUIC with the
//! device protocol unchanged (a device cannot tell it from the server), and carries all of them
//! upstream over one connection ([`crate::relay_upstream`]): QUIC to the server's relay link (the
//! default), or HTTP/2 to its HTTPS ingest for sites that block UDP.
//!
//! ```text
//! device ─QUIC─▶ relay session: Hello → upstream (Hello only) → the server's Welcome → device
//!                 reader: frames validated (rkyv) → the device's queue (bounded) ─▶ forwarder
//!                 forwarder: queued frames → upstream (Hello + frames) → durable answer
//!                            → Rejected, Ack → device; a failed exchange is retried as it was
//! ```
//!
//! *Architecture invariant*: the relay acknowledges nothing itself. Every `Welcome`, `Ack` and
//! `Rejected` a device gets is the server's answer for that device, sent after the server made
//! the frames durable; a relay killed at any moment loses nothing acknowledged, and its devices
//! resume from the server's mark when they reconnect. *Architecture invariant*: each device has
//! its own bounded queue and at most one exchange in flight; a full queue stops reading that
//! device's stream (QUIC flow control slows it), so one flooding device cannot starve the others.
//! A malformed frame closes that device's session only.
//!
//! Commands for a device ride on the server's answer to its next exchange; a long poll
//! ([`follow_wakes`]) learns which devices have new ones, and those exchange at once.
//!
//! Each device is authenticated by the server with its own credential (its `Hello` goes upstream
//! unchanged); the relay authenticates itself with its own credential, which the server grants
//! one enterprise (`[[ingest.relays]]`): a device of another enterprise is refused per device.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use dashmap::DashMap;
use fleetpulse_proto::wire::{Downlink, Uplink};
use fleetpulse_proto::{FrameDecoder, FrameEncoder, close_code};
use quinn::{RecvStream, SendStream, VarInt};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinHandle;

pub use crate::relay_upstream::UpstreamTransport;
use crate::relay_upstream::{Failure, Upstream};
use crate::session::Close;
use crate::{IngestError, TlsSource, tls};

/// Frames one upstream exchange carries at most: below any sensible `[ingest] device_burst`
/// (a request above the burst is refused whole).
const FRAMES_PER_EXCHANGE: usize = 128;

/// Settings of a relay.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// UDP address devices connect to.
    pub listen: SocketAddr,
    /// The server's address: its QUIC ingest address (`quic_addr`) for
    /// [`UpstreamTransport::Quic`], its HTTPS ingest address (`[ingest] https_listen`) for
    /// [`UpstreamTransport::Https`].
    pub upstream: SocketAddr,
    /// How the relay reaches the server.
    pub upstream_transport: UpstreamTransport,
    /// The TLS name to verify the server's certificate against.
    pub upstream_name: String,
    /// PEM CA certificate(s) the server's certificate is verified with.
    pub upstream_ca: PathBuf,
    /// The relay's own credential (granted one enterprise by the server's `[[ingest.relays]]`).
    pub credential: String,
    /// The certificate the relay shows devices (devices must trust it as they trust the server's).
    pub tls: TlsSource,
    /// Most devices at once; more are refused and retry.
    pub max_devices: usize,
    /// Frames buffered per device before the relay stops reading it.
    pub device_queue: usize,
    /// Time a new device has to open its stream and send `Hello`.
    pub hello_timeout: Duration,
    /// QUIC idle timeout of device connections.
    pub idle_timeout: Duration,
    /// Largest frame accepted from a device.
    pub max_frame_len: usize,
    /// Folder for the persistent endpoint keys: a restarted relay resets its devices' old
    /// connections at once (instead of leaving them to their idle timeout).
    pub state_dir: PathBuf,
}

impl RelayConfig {
    /// Defaults for the given addresses, credential and certificates.
    pub fn new(
        listen: SocketAddr,
        upstream: SocketAddr,
        upstream_ca: PathBuf,
        credential: String,
        tls: TlsSource,
        state_dir: PathBuf,
    ) -> RelayConfig {
        RelayConfig {
            listen,
            upstream,
            upstream_transport: UpstreamTransport::Quic,
            upstream_name: "localhost".into(),
            upstream_ca,
            credential,
            tls,
            max_devices: 100_000,
            device_queue: 1024,
            hello_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_frame_len: fleetpulse_proto::MAX_FRAME_LEN,
            state_dir,
        }
    }
}

/// What every device session of a relay shares.
#[derive(Debug)]
struct Shared {
    config: RelayConfig,
    upstream: Upstream,
    devices: Arc<Semaphore>,
    /// The connected devices by the id the server gave them: what wakes their forwarder.
    by_id: DashMap<u64, Arc<Notify>>,
}

/// A running relay.
#[derive(Debug)]
pub struct Relay {
    endpoint: quinn::Endpoint,
    local_addr: SocketAddr,
    accept: JoinHandle<()>,
    wakes: JoinHandle<()>,
}

impl Relay {
    /// Binds the device endpoint and starts accepting devices (the upstream connects on the
    /// first device).
    pub async fn start(config: RelayConfig) -> Result<Relay, IngestError> {
        let server_config = tls::server_config(&config.tls, config.idle_timeout)?;
        let mut roots = rustls::RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(&config.upstream_ca)
            .map_err(|e| IngestError::Tls(format!("upstream CA {}: {e}", config.upstream_ca.display())))?;
        for cert in certs {
            let cert = cert.map_err(|e| IngestError::Tls(format!("upstream CA: {e}")))?;
            roots.add(cert).map_err(|e| IngestError::Tls(format!("upstream CA: {e}")))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| IngestError::Tls(format!("TLS versions: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let upstream = Upstream::new(
            config.upstream_transport,
            config.upstream,
            &config.upstream_name,
            client,
            &config.credential,
        )?;
        let keys = tls::endpoint_keys(&config.state_dir)?;
        let socket = std::net::UdpSocket::bind(config.listen)?;
        let endpoint =
            quinn::Endpoint::new(keys.endpoint_config(), Some(server_config), socket, Arc::new(quinn::TokioRuntime))?;
        let local_addr = endpoint.local_addr()?;
        let shared = Arc::new(Shared {
            devices: Arc::new(Semaphore::new(config.max_devices.max(1))),
            config,
            upstream,
            by_id: DashMap::new(),
        });
        let wakes = tokio::spawn(follow_wakes(shared.clone()));
        let accept = tokio::spawn(accept_loop(endpoint.clone(), shared));
        tracing::info!(message = "Relay listening.", addr = %local_addr);
        Ok(Relay { endpoint, local_addr, accept, wakes })
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting and closes every device connection (they reconnect elsewhere or later;
    /// nothing they were not acknowledged is lost).
    pub async fn shutdown(self, grace: Duration) {
        self.accept.abort();
        self.wakes.abort();
        self.endpoint.close(VarInt::from_u32(close_code::SHUTTING_DOWN), b"relay shutting down");
        let _ = tokio::time::timeout(grace, self.endpoint.wait_idle()).await;
    }
}

/// Follows the server's log of woken devices (long polls) and wakes the forwarders of the
/// devices connected here, which then exchange with no frames: the answer carries the commands.
async fn follow_wakes(shared: Arc<Shared>) {
    let mut after = None;
    loop {
        match shared.upstream.wakes(after).await {
            Ok((next, devices)) => {
                after = Some(next);
                for id in devices {
                    if let Some(wake) = shared.by_id.get(&id) {
                        wake.notify_one();
                    }
                }
            }
            Err(error) => {
                tracing::debug!(message = "Polling the upstream for woken devices failed; retrying.", %error);
                tokio::time::sleep(crate::relay_upstream::RETRY_AFTER).await;
            }
        }
    }
}

async fn accept_loop(endpoint: quinn::Endpoint, shared: Arc<Shared>) {
    while let Some(incoming) = endpoint.accept().await {
        let Ok(permit) = shared.devices.clone().try_acquire_owned() else {
            incoming.refuse();
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _permit = permit;
            serve_device(incoming, &shared).await;
        });
    }
}

async fn serve_device(incoming: quinn::Incoming, shared: &Shared) {
    let conn = match tokio::time::timeout(shared.config.hello_timeout, incoming).await {
        Ok(Ok(conn)) => conn,
        _ => return,
    };
    match device_session(&conn, shared).await {
        Ok(()) => conn.close(VarInt::from_u32(close_code::NORMAL), b"bye"),
        Err(close) => {
            tracing::debug!(message = "Closing a relayed device.", code = close.code, reason = %close.reason);
            conn.close(VarInt::from_u32(close.code), close.reason.as_bytes());
        }
    }
}

/// Reads the next frame from a device, `Ok(None)` when it finished its stream.
async fn next_uplink(recv: &mut RecvStream, decoder: &mut FrameDecoder) -> Result<Option<Uplink>, Close> {
    loop {
        match decoder.next_frame::<Uplink>() {
            Ok(Some(frame)) => return Ok(Some(frame)),
            Ok(None) => {}
            Err(fleetpulse_proto::DecodeError::TooLarge { len, max }) => {
                return Err(Close::new(close_code::FRAME_TOO_LARGE, format!("frame of {len} bytes exceeds {max}")));
            }
            Err(fleetpulse_proto::DecodeError::Malformed(e)) => return Err(Close::new(close_code::MALFORMED_FRAME, e)),
        }
        match recv.read_chunk(16 * 1024, true).await {
            Ok(Some(chunk)) => decoder.push(&chunk.bytes),
            Ok(None) => return Ok(None),
            Err(error) => return Err(Close::new(close_code::NORMAL, format!("stream ended: {error}"))),
        }
    }
}

/// Writes the server's answer frames to the device: its `Welcome` only when `welcome` (the
/// answer to the device's connect), and the `Rejected`, `Ack` and `Command` frames always.
async fn write_answer(
    send: &mut SendStream,
    encoder: &mut FrameEncoder,
    answer: &[Downlink],
    welcome: bool,
) -> Result<(), Close> {
    let mut out = BytesMut::new();
    for frame in answer {
        if matches!(frame, Downlink::Welcome(_)) && !welcome {
            continue;
        }
        encoder.encode(frame, &mut out).map_err(|e| Close::new(close_code::SERVER_ERROR, e.to_string()))?;
    }
    if !out.is_empty() {
        send.write_all(&out).await.map_err(|e| Close::new(close_code::NORMAL, format!("send failed: {e}")))?;
    }
    Ok(())
}

/// One exchange, retried (with the same frames, marked as a resend so that commands in a lost
/// answer come again) until the server answers or refuses. `resend` marks the first attempt too
/// (a device's connect: what it never accepted comes again).
async fn exchange(
    shared: &Shared,
    hello: &Uplink,
    frames: &[Uplink],
    mut resend: bool,
) -> Result<Vec<Downlink>, Close> {
    loop {
        match shared.upstream.exchange(hello, frames, resend).await {
            Ok(answer) => return Ok(answer),
            Err(Failure::Retry(wait)) => tokio::time::sleep(wait).await,
            Err(Failure::Close(close)) => return Err(close),
        }
        resend = true;
    }
}

async fn device_session(conn: &quinn::Connection, shared: &Shared) -> Result<(), Close> {
    let timeout = shared.config.hello_timeout;
    let (mut send, mut recv) = tokio::time::timeout(timeout, conn.accept_bi())
        .await
        .map_err(|_| Close::new(close_code::HELLO_TIMEOUT, "no stream opened"))?
        .map_err(|e| Close::new(close_code::NORMAL, format!("connection lost: {e}")))?;
    let mut decoder = FrameDecoder::new(shared.config.max_frame_len);
    let hello = match tokio::time::timeout(timeout, next_uplink(&mut recv, &mut decoder)).await {
        Err(_) => return Err(Close::new(close_code::HELLO_TIMEOUT, "no Hello")),
        Ok(Ok(Some(hello @ Uplink::Hello(_)))) => hello,
        Ok(Ok(Some(Uplink::Data(_)))) => return Err(Close::new(close_code::PROTOCOL_VIOLATION, "Hello first")),
        Ok(Ok(None)) => return Ok(()),
        Ok(Err(close)) => return Err(close),
    };
    // The server admits the device (its own credential) and tells its mark.
    let mut encoder = FrameEncoder::default();
    let welcome = exchange(shared, &hello, &[], true).await?;
    write_answer(&mut send, &mut encoder, &welcome, true).await?;
    let Some(device_id) =
        welcome.iter().find_map(|d| if let Downlink::Welcome(w) = d { Some(w.device_id) } else { None })
    else {
        return Err(Close::new(close_code::SERVER_ERROR, "the server's answer had no Welcome"));
    };
    let wake = Arc::new(Notify::new());
    shared.by_id.insert(device_id, wake.clone());
    let result = forward(shared, &hello, &wake, send, recv, decoder, encoder).await;
    shared.by_id.remove_if(&device_id, |_, current| Arc::ptr_eq(current, &wake));
    result
}

/// After `Welcome`: the reader queues the device's frames, the forwarder exchanges them (or
/// nothing, when woken for commands) and writes the answers back.
async fn forward(
    shared: &Shared,
    hello: &Uplink,
    wake: &Notify,
    mut send: SendStream,
    mut recv: RecvStream,
    mut decoder: FrameDecoder,
    mut encoder: FrameEncoder,
) -> Result<(), Close> {
    let (tx, mut rx) = mpsc::channel::<Uplink>(shared.config.device_queue.max(1));
    let reader = async move {
        loop {
            match next_uplink(&mut recv, &mut decoder).await? {
                Some(Uplink::Hello(_)) => return Err(Close::new(close_code::PROTOCOL_VIOLATION, "Hello sent twice")),
                Some(frame) => {
                    // A full queue waits here: the device's stream is not read meanwhile.
                    if tx.send(frame).await.is_err() {
                        return Ok(());
                    }
                }
                None => return Ok(()),
            }
        }
    };
    let forwarder = async {
        // Allocated per exchange, not kept: room for 128 frames held by every idle device costs
        // 128 × size_of::<Uplink>() per device for nothing.
        let mut frames = Vec::new();
        loop {
            tokio::select! {
                first = rx.recv() => match first {
                    Some(first) => frames.push(first),
                    None => break,
                },
                // Commands are waiting: an exchange without frames fetches them.
                () = wake.notified() => {}
            }
            while frames.len() < FRAMES_PER_EXCHANGE {
                match rx.try_recv() {
                    Ok(frame) => frames.push(frame),
                    Err(_) => break,
                }
            }
            let answer = exchange(shared, hello, &frames, false).await?;
            write_answer(&mut send, &mut encoder, &answer, false).await?;
            frames = Vec::new();
        }
        Ok::<(), Close>(())
    };
    // The forwarder finishes what the reader queued; a reader error (a malformed frame) ends
    // the session at once.
    let (mut reader, mut forwarder) = (std::pin::pin!(reader), std::pin::pin!(forwarder));
    tokio::select! {
        read = &mut reader => {
            read?;
            forwarder.await
        }
        forward = &mut forwarder => forward,
    }
}
