//! The QUIC side of a simulated device: client configuration, endpoints, opening a session
//! (connect, `Hello`, `Welcome`) and telling why a connection ended.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::{Context, ensure};
use bytes::BytesMut;
use fleetpulse_proto::wire::{Downlink, Uplink, Welcome};
use fleetpulse_proto::{ALPN, FrameDecoder, FrameEncoder};
use quinn::crypto::rustls::QuicClientConfig;
use quinn::udp::{RecvMeta, Transmit};
use quinn::{
    AsyncUdpSocket, ClientConfig, Connection, ConnectionError, Endpoint, EndpointConfig, IdleTimeout, RecvStream,
    SendStream, TransportConfig, UdpPoller, VarInt,
};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// Most bytes taken from the receive stream at once.
pub(crate) const READ_CHUNK: usize = 16 * 1024;

/// Devices per client endpoint (UDP socket), before the clamp to [`MIN_ENDPOINTS`, `MAX_ENDPOINTS`].
const DEVICES_PER_ENDPOINT: u64 = 4000;
const MIN_ENDPOINTS: u64 = 2;
const MAX_ENDPOINTS: u64 = 16;

/// Requested UDP socket buffer size; the kernel may grant less.
const SOCKET_BUFFER: usize = 8 << 20;

/// How long to wait for a connection's close reason after its stream ended.
const CLOSE_REASON_WAIT: Duration = Duration::from_secs(2);

/// Transport settings for many small, mostly idle connections: small windows, no MTU discovery,
/// no datagrams, no uni streams, NewReno, and heartbeats (not QUIC pings) as keep-alive, unless
/// the heartbeat interval is longer than half the idle timeout: then QUIC pings keep the path
/// alive between heartbeats, as a real device with a long interval would.
pub fn transport_config(heartbeat_interval_s: u32) -> TransportConfig {
    let keep_alive = (heartbeat_interval_s > 30).then(|| Duration::from_secs(25));
    let mut t = TransportConfig::default();
    t.stream_receive_window(VarInt::from_u32(32 * 1024))
        .receive_window(VarInt::from_u32(64 * 1024))
        .send_window(64 * 1024)
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .mtu_discovery_config(None)
        .datagram_receive_buffer_size(None)
        .congestion_controller_factory(Arc::new(quinn::congestion::NewRenoConfig::default()))
        .max_idle_timeout(Some(IdleTimeout::from(VarInt::from_u32(60_000))))
        .keep_alive_interval(keep_alive);
    t
}

/// The client configuration: TLS 1.3 trusting only the CA certificates in `ca_cert` (PEM),
/// ALPN [`ALPN`], and [`transport_config`].
pub fn client_config(ca_cert: &Path, heartbeat_interval_s: u32) -> anyhow::Result<ClientConfig> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_cert)
        .with_context(|| format!("reading the CA certificate {}", ca_cert.display()))?;
    for cert in certs {
        let cert = cert.with_context(|| format!("parsing the CA certificate {}", ca_cert.display()))?;
        roots.add(cert).context("adding the CA certificate to the trust store")?;
    }
    ensure!(!roots.is_empty(), "{} holds no certificate", ca_cert.display());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 with the ring provider")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = QuicClientConfig::try_from(tls).context("QUIC TLS configuration")?;
    let mut config = ClientConfig::new(Arc::new(quic));
    config.transport_config(Arc::new(transport_config(heartbeat_interval_s)));
    Ok(config)
}

/// How many client endpoints `connections` devices are spread over.
pub fn endpoint_count(connections: u64) -> usize {
    let wanted = connections.div_ceil(DEVICES_PER_ENDPOINT).clamp(MIN_ENDPOINTS, MAX_ENDPOINTS);
    usize::try_from(wanted).expect("at most MAX_ENDPOINTS")
}

/// The local address for reaching `server`: loopback for a loopback server, else unspecified,
/// in the server's address family.
fn bind_address(server: SocketAddr) -> SocketAddr {
    let ip = match (server.ip(), server.ip().is_loopback()) {
        (IpAddr::V4(_), true) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        (IpAddr::V4(_), false) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (IpAddr::V6(_), true) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        (IpAddr::V6(_), false) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    SocketAddr::new(ip, 0)
}

/// `count` client endpoints able to reach `server`, each with `config` as default.
/// Must be called within a tokio runtime.
pub fn client_endpoints(count: usize, server: SocketAddr, config: &ClientConfig) -> anyhow::Result<Vec<Endpoint>> {
    let bind = bind_address(server);
    (0..count)
        .map(|_| {
            let socket = socket2::Socket::new(
                socket2::Domain::for_address(bind),
                socket2::Type::DGRAM,
                Some(socket2::Protocol::UDP),
            )
            .context("creating a UDP socket")?;
            // Best effort: many connections share the socket, a larger buffer avoids drops.
            if let Err(error) = socket.set_recv_buffer_size(SOCKET_BUFFER) {
                tracing::debug!(%error, "could not enlarge the UDP receive buffer");
            }
            if let Err(error) = socket.set_send_buffer_size(SOCKET_BUFFER) {
                tracing::debug!(%error, "could not enlarge the UDP send buffer");
            }
            socket.bind(&bind.into()).with_context(|| format!("binding a UDP socket to {bind}"))?;
            socket.set_nonblocking(true).context("making the UDP socket non-blocking")?;
            let runtime = quinn::default_runtime().context("no async runtime for the QUIC endpoint")?;
            let socket = runtime.wrap_udp_socket(socket.into()).context("wrapping the UDP socket")?;
            let socket = Arc::new(OneDatagramPerSend(socket));
            let mut endpoint = Endpoint::new_with_abstract_socket(EndpointConfig::default(), None, socket, runtime)
                .context("creating a QUIC endpoint")?;
            endpoint.set_default_client_config(config.clone());
            Ok(endpoint)
        })
        .collect()
}

/// A UDP socket that takes one datagram per send, so that no connection keeps a ten-datagram
/// buffer.
///
/// quinn gives each connection a send buffer that lives as long as the connection. The first time
/// a connection has two datagrams to send at once, quinn grows that buffer to room for as many as
/// the socket takes in one send (ten with UDP GSO, 13 KiB), to hand them to the kernel in one
/// call. A simulated device does that on its first 20-frame flush: at 100,000 devices, 1.3 GB
/// allocated and zeroed in the first seconds of the sending phase, which tipped the load tester
/// over at high rates (`docs/PERFORMANCE.md`, issue 14 item 5). With one datagram per send the
/// buffer stays one datagram long; a flush of two datagrams takes two `sendmsg` calls.
#[derive(Debug)]
struct OneDatagramPerSend(Arc<dyn AsyncUdpSocket>);

impl AsyncUdpSocket for OneDatagramPerSend {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.0.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        self.0.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut TaskContext,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.0.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        1
    }

    fn max_receive_segments(&self) -> usize {
        self.0.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.0.may_fragment()
    }
}

/// Why a connection (or an attempt to open one) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LinkError {
    /// The application close code, if the server closed the connection with one.
    pub code: Option<u32>,
    /// Human-readable detail for logs.
    pub detail: String,
}

impl LinkError {
    pub(crate) fn other(detail: impl Into<String>) -> Self {
        LinkError { code: None, detail: detail.into() }
    }

    pub(crate) fn from_connection(error: &ConnectionError) -> Self {
        match error {
            ConnectionError::ApplicationClosed(close) => LinkError {
                code: Some(u32::try_from(close.error_code.into_inner()).unwrap_or(u32::MAX)),
                detail: error.to_string(),
            },
            other => LinkError::other(other.to_string()),
        }
    }

    /// The stream failed or ended without a connection error: ask the connection why.
    pub(crate) async fn from_stream(conn: &Connection, what: impl std::fmt::Display) -> Self {
        match tokio::time::timeout(CLOSE_REASON_WAIT, conn.closed()).await {
            Ok(error) => LinkError::from_connection(&error),
            Err(_) => LinkError::other(format!("stream: {what}")),
        }
    }

    pub(crate) async fn from_read(conn: &Connection, error: quinn::ReadError) -> Self {
        match error {
            quinn::ReadError::ConnectionLost(e) => LinkError::from_connection(&e),
            other => LinkError::from_stream(conn, other).await,
        }
    }

    pub(crate) async fn from_write(conn: &Connection, error: quinn::WriteError) -> Self {
        match error {
            quinn::WriteError::ConnectionLost(e) => LinkError::from_connection(&e),
            other => LinkError::from_stream(conn, other).await,
        }
    }
}

/// An open device session: the connection, its one bidirectional stream, and the downlink
/// decoder (which may already hold bytes that followed the `Welcome`).
#[derive(Debug)]
pub(crate) struct Link {
    pub conn: Connection,
    pub send: SendStream,
    pub recv: RecvStream,
    pub decoder: FrameDecoder,
    /// Encoded frames not yet written.
    pub out: BytesMut,
}

/// Connects, sends `hello`, and waits for the `Welcome`.
pub(crate) async fn open_session(
    endpoint: &Endpoint,
    server: SocketAddr,
    server_name: &str,
    hello: &Uplink,
    encoder: &mut FrameEncoder,
) -> Result<(Link, Welcome), LinkError> {
    let connecting = endpoint.connect(server, server_name).map_err(|e| LinkError::other(e.to_string()))?;
    let conn = connecting.await.map_err(|e| LinkError::from_connection(&e))?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| LinkError::from_connection(&e))?;
    let mut out = BytesMut::new();
    encoder.encode(hello, &mut out).map_err(|e| LinkError::other(format!("encoding Hello: {e}")))?;
    if let Err(e) = send.write_all(&out).await {
        return Err(LinkError::from_write(&conn, e).await);
    }
    out.clear();
    let mut decoder = FrameDecoder::default();
    loop {
        match decoder.next_frame::<Downlink>() {
            Ok(Some(Downlink::Welcome(welcome))) => return Ok((Link { conn, send, recv, decoder, out }, welcome)),
            Ok(Some(other)) => return Err(LinkError::other(format!("expected Welcome, got {other:?}"))),
            Ok(None) => {}
            Err(e) => return Err(LinkError::other(format!("decoding Welcome: {e}"))),
        }
        match recv.read_chunk(READ_CHUNK, true).await {
            Ok(Some(chunk)) => decoder.push(&chunk.bytes),
            Ok(None) => return Err(LinkError::from_stream(&conn, "finished before Welcome").await),
            Err(e) => return Err(LinkError::from_read(&conn, e).await),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_scale_with_devices_within_bounds() {
        assert_eq!(endpoint_count(0), 2);
        assert_eq!(endpoint_count(10), 2);
        assert_eq!(endpoint_count(12_001), 4);
        assert_eq!(endpoint_count(100_000), 16);
        assert_eq!(endpoint_count(10_000_000), 16);
    }

    #[test]
    fn bind_address_matches_the_server() {
        let addr = |s: &str| s.parse::<SocketAddr>().expect("valid address");
        assert_eq!(bind_address(addr("127.0.0.1:4433")), addr("127.0.0.1:0"));
        assert_eq!(bind_address(addr("[::1]:4433")), addr("[::1]:0"));
        assert_eq!(bind_address(addr("10.1.2.3:4433")), addr("0.0.0.0:0"));
    }

    #[test]
    fn client_config_needs_a_certificate() {
        let dir = std::env::temp_dir().join(format!("fleetpulse-loadtest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").expect("write");
        assert!(client_config(&empty, 30).is_err());
        assert!(client_config(&dir.join("absent.pem"), 30).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
