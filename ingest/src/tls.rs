//! TLS and QUIC configuration of the ingest endpoints (ING-1).
//!
//! Production passes a certificate chain and key (PEM). Without them, a development CA and a
//! server certificate signed by it are generated into `<data-dir>/tls/` on first start and reused
//! afterwards; clients trust `tls/ca.pem`. The stateless-reset and connection-id keys are kept in the same folder so
//! that after a restart the server resets old connections at once and devices reconnect quickly.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicServerConfig;
use quinn::{IdleTimeout, TransportConfig, VarInt};
use rustls::SupportedCipherSuite;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::IngestError;

/// Where the server's certificate comes from.
#[derive(Debug, Clone)]
pub enum TlsSource {
    /// A development CA and certificate under `<dir>`, generated if missing.
    Dev {
        /// Folder holding `ca.pem`, `server.pem`, `server.key`.
        dir: PathBuf,
    },
    /// Given PEM files.
    Files {
        /// Certificate chain.
        cert: PathBuf,
        /// Private key.
        key: PathBuf,
    },
}

/// Names the development certificate is valid for.
pub const DEV_CERT_NAMES: &[&str] = &["localhost", "127.0.0.1", "::1"];

fn tls_err(what: &str, e: impl std::fmt::Display) -> IngestError {
    IngestError::Tls(format!("{what}: {e}"))
}

/// Generates the development CA and server certificate into `dir` unless they exist.
pub fn ensure_dev_cert(dir: &Path) -> Result<(), IngestError> {
    let (ca_path, cert_path, key_path) = (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"));
    if ca_path.exists() && cert_path.exists() && key_path.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    let ca_key = rcgen::KeyPair::generate().map_err(|e| tls_err("CA key", e))?;
    let mut ca_params = rcgen::CertificateParams::default();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "fleetpulse development CA");
    ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(|e| tls_err("CA certificate", e))?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().map_err(|e| tls_err("server key", e))?;
    let mut params = rcgen::CertificateParams::new(DEV_CERT_NAMES.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .map_err(|e| tls_err("server names", e))?;
    params.distinguished_name.push(rcgen::DnType::CommonName, "fleetpulse ingest (development)");
    let cert = params.signed_by(&key, &issuer).map_err(|e| tls_err("server certificate", e))?;
    std::fs::write(&ca_path, ca_cert.pem())?;
    std::fs::write(&cert_path, cert.pem())?;
    write_private(&key_path, key.serialize_pem().as_bytes())?;
    tracing::info!(message = "Generated a development certificate.", ca = %ca_path.display());
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Loads the certificate chain and key.
fn load(source: &TlsSource) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), IngestError> {
    let (cert, key) = match source {
        TlsSource::Dev { dir } => {
            ensure_dev_cert(dir)?;
            (dir.join("server.pem"), dir.join("server.key"))
        }
        TlsSource::Files { cert, key } => (cert.clone(), key.clone()),
    };
    let chain = CertificateDer::pem_file_iter(&cert)
        .map_err(|e| tls_err(&cert.display().to_string(), e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err(&cert.display().to_string(), e))?;
    let key = PrivateKeyDer::from_pem_file(&key).map_err(|e| tls_err(&key.display().to_string(), e))?;
    Ok((chain, key))
}

/// Transport settings sized for a phone: one bidirectional stream, a few upload streams, small
/// windows, no MTU discovery, no datagrams, NewReno, and no server keep-alive (device heartbeats
/// keep the path alive).
///
/// One upload stream more than [`crate::uploads::MAX_UPLOADS`] may be open, so that the server
/// sees it and refuses it with a reason instead of the device waiting on stream credit. The
/// connection's window is the control stream's plus one per upload, so uploads never starve the
/// control stream of flow-control credit.
pub fn device_transport(idle_timeout: Duration) -> Result<TransportConfig, IngestError> {
    const STREAM_WINDOW: u32 = 32 * 1024;
    let uploads = crate::uploads::MAX_UPLOADS as u32;
    let mut t = TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(1))
        .max_concurrent_uni_streams(VarInt::from_u32(uploads + 1))
        .stream_receive_window(VarInt::from_u32(STREAM_WINDOW))
        .receive_window(VarInt::from_u32(STREAM_WINDOW * (1 + uploads)))
        .send_window(64 * 1024)
        .mtu_discovery_config(None)
        .datagram_receive_buffer_size(None)
        .datagram_send_buffer_size(0)
        .keep_alive_interval(None)
        .congestion_controller_factory(Arc::new(quinn::congestion::NewRenoConfig::default()))
        .max_idle_timeout(Some(IdleTimeout::try_from(idle_timeout).map_err(|e| tls_err("idle timeout", e))?));
    Ok(t)
}

/// The quinn server configuration of a device endpoint: TLS 1.3 only, ALPN `fleetpulse/1`.
pub fn server_config(source: &TlsSource, idle_timeout: Duration) -> Result<quinn::ServerConfig, IngestError> {
    server_config_with_suites(source, idle_timeout, device_suites())
}

/// [`server_config`] preferring `suites` in their order instead of [`device_suites`] (the
/// handshake bench compares suites with it).
pub fn server_config_with_suites(
    source: &TlsSource,
    idle_timeout: Duration,
    suites: Vec<SupportedCipherSuite>,
) -> Result<quinn::ServerConfig, IngestError> {
    quic_server_config(source, idle_timeout, vec![fleetpulse_proto::ALPN.to_vec()], suites)
}

/// The server's ingest endpoints: [`server_config`] that also accepts relays, ALPN
/// `fleetpulse-relay/1` ([`crate::relay_link`]). Devices' ALPN comes first: a client offering
/// both is a device.
pub fn ingest_server_config(source: &TlsSource, idle_timeout: Duration) -> Result<quinn::ServerConfig, IngestError> {
    let alpn = vec![fleetpulse_proto::ALPN.to_vec(), fleetpulse_proto::RELAY_ALPN.to_vec()];
    quic_server_config(source, idle_timeout, alpn, device_suites())
}

/// The device endpoints' TLS 1.3 suites in the server's order: AES-128-GCM-SHA256 first (issue 14), for 128-bit security at
/// a lower set-up cost: its hash, SHA-256, runs on the CPU's SHA extensions, where ring's SHA-384
/// of AES-256-GCM-SHA384 (rustls's and most clients' first choice) does not. Measured in
/// `benches/benches/handshake.rs` and `docs/PERFORMANCE.md`; a message's round trip costs the same
/// with either. Every QUIC client offers AES-128-GCM-SHA256 (RFC 9001 keys Initial packets with
/// it, and quinn refuses a client configuration without it); the other suites stay for TLS
/// clients that offer only them.
pub fn device_suites() -> Vec<SupportedCipherSuite> {
    use rustls::crypto::ring::cipher_suite::{
        TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
    };
    vec![TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256]
}

fn quic_server_config(
    source: &TlsSource,
    idle_timeout: Duration,
    alpn: Vec<Vec<u8>>,
    suites: Vec<SupportedCipherSuite>,
) -> Result<quinn::ServerConfig, IngestError> {
    let crypto = QuicServerConfig::try_from(device_tls(source, alpn, suites)?).map_err(|e| tls_err("QUIC TLS", e))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(device_transport(idle_timeout)?));
    Ok(config)
}

/// The TLS half of a device endpoint: TLS 1.3 only, no early data, `suites` in the server's order.
fn device_tls(
    source: &TlsSource,
    alpn: Vec<Vec<u8>>,
    suites: Vec<SupportedCipherSuite>,
) -> Result<rustls::ServerConfig, IngestError> {
    let (chain, key) = load(source)?;
    let provider = rustls::crypto::CryptoProvider { cipher_suites: suites, ..rustls::crypto::ring::default_provider() };
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_err("TLS versions", e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| tls_err("certificate", e))?;
    tls.alpn_protocols = alpn;
    tls.max_early_data_size = 0;
    // The server's order of suites decides, not the client's (most clients offer AES-256 first).
    tls.ignore_client_order = true;
    Ok(tls)
}

/// The TLS configuration of an HTTPS/1.1 listener with the same certificate as the QUIC
/// endpoints (the firmware download server, PRV-4): TLS 1.2 and 1.3, ALPN `http/1.1`.
pub fn https_server_config(source: &TlsSource) -> Result<rustls::ServerConfig, IngestError> {
    let (chain, key) = load(source)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("TLS versions", e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| tls_err("certificate", e))?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tls)
}

/// Endpoint secrets that must survive restarts.
#[derive(Clone)]
pub struct EndpointKeys {
    /// Key of stateless-reset tokens: a restarted server resets old connections at once.
    pub reset: Arc<ring::hmac::Key>,
    /// Key of the connection-id generator: a restarted server recognises its own connection
    /// ids (instead of dropping their packets as invalid) and answers them with a reset.
    pub cid: u64,
}

impl std::fmt::Debug for EndpointKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EndpointKeys(..)")
    }
}

impl EndpointKeys {
    /// The quinn endpoint configuration using these keys.
    pub fn endpoint_config(&self) -> quinn::EndpointConfig {
        let mut config = quinn::EndpointConfig::new(self.reset.clone());
        let cid = self.cid;
        config.cid_generator(move || Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid)));
        config
    }
}

/// Loads the endpoint secrets from `dir/endpoint.key`, creating them on first start.
pub fn endpoint_keys(dir: &Path) -> Result<EndpointKeys, IngestError> {
    use rand::RngCore;
    const LEN: usize = 40;
    let path = dir.join("endpoint.key");
    let secret = match std::fs::read(&path) {
        Ok(bytes) if bytes.len() == LEN => bytes,
        _ => {
            std::fs::create_dir_all(dir)?;
            let mut bytes = vec![0u8; LEN];
            rand::rng().fill_bytes(&mut bytes);
            write_private(&path, &bytes)?;
            bytes
        }
    };
    let (reset, cid) = secret.split_at(32);
    Ok(EndpointKeys {
        reset: Arc::new(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, reset)),
        cid: u64::from_le_bytes(cid.try_into().expect("8 bytes remain")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_certificate_is_generated_once_and_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        ensure_dev_cert(dir.path()).expect("generate");
        let first = std::fs::read(dir.path().join("server.pem")).expect("cert");
        ensure_dev_cert(dir.path()).expect("reuse");
        assert_eq!(std::fs::read(dir.path().join("server.pem")).expect("cert"), first);
        server_config(&TlsSource::Dev { dir: dir.path().into() }, Duration::from_secs(60)).expect("config");
        assert!(!dir.path().join("endpoint.key").exists());
        let first = endpoint_keys(dir.path()).expect("keys");
        let again = endpoint_keys(dir.path()).expect("keys again");
        assert_eq!(first.cid, again.cid);
        assert_eq!(std::fs::read(dir.path().join("endpoint.key")).expect("key").len(), 40);
    }

    /// A client that prefers AES-256-GCM-SHA384 (rustls's default order, like most clients) gets
    /// AES-128-GCM-SHA256; one that offers only AES-256 still gets in.
    #[test]
    fn devices_get_aes_128_whatever_they_prefer() {
        use rustls::crypto::ring::cipher_suite::{TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384};
        let dir = tempfile::tempdir().expect("tempdir");
        let server = Arc::new(
            device_tls(
                &TlsSource::Dev { dir: dir.path().into() },
                vec![fleetpulse_proto::ALPN.to_vec()],
                device_suites(),
            )
            .expect("server TLS"),
        );
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_file(dir.path().join("ca.pem")).expect("CA")).expect("root");
        let negotiated = |suites: Vec<rustls::SupportedCipherSuite>| {
            let provider =
                rustls::crypto::CryptoProvider { cipher_suites: suites, ..rustls::crypto::ring::default_provider() };
            let mut client = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
                .with_protocol_versions(&[&rustls::version::TLS13])
                .expect("client versions")
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
            client.alpn_protocols = vec![fleetpulse_proto::ALPN.to_vec()];
            let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
            let mut client = rustls::ClientConnection::new(Arc::new(client), name).expect("client");
            let mut server = rustls::ServerConnection::new(server.clone()).expect("server");
            let mut hello = Vec::new();
            client.write_tls(&mut hello).expect("ClientHello");
            server.read_tls(&mut hello.as_slice()).expect("read ClientHello");
            server.process_new_packets().expect("the server accepts the ClientHello");
            server.negotiated_cipher_suite().expect("a suite").suite()
        };
        let default_order = rustls::crypto::ring::default_provider().cipher_suites;
        assert_eq!(default_order[0].suite(), TLS13_AES_256_GCM_SHA384.suite(), "the client prefers AES-256");
        assert_eq!(negotiated(default_order), TLS13_AES_128_GCM_SHA256.suite());
        assert_eq!(negotiated(vec![TLS13_AES_256_GCM_SHA384]), TLS13_AES_256_GCM_SHA384.suite());
    }
}
