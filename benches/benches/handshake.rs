//! The TLS 1.3 suite of a device's QUIC connection (issue 14): what a session's set-up and a
//! message's round trip cost with the suite the server now prefers, AES-128-GCM-SHA256, and with
//! the one it took before, AES-256-GCM-SHA384 (rustls's first choice, and most clients'). Both
//! ends run on one thread over loopback, so each figure is the CPU of client and server together.
//! The client is rustls's default (it offers AES-256 first, and AES-128 as every QUIC client
//! must); each server is fleetpulse's device endpoint (`tls::server_config_with_suites`) with one
//! suite first. That fleetpulse's own order picks AES-128 is a unit test of `fleetpulse_ingest::tls`.
//!
//! `cargo bench -p fleetpulse-benches --bench handshake -- --noplot`

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::Criterion;
use fleetpulse_ingest::tls::{self, TlsSource};
use quinn::crypto::rustls::QuicClientConfig;
use rustls::SupportedCipherSuite;
use rustls::crypto::ring::cipher_suite::{TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// The bytes of a typical one-message frame (a status report) and of the server's ack.
const FRAME: usize = 120;
const ACK: usize = 8;

/// The client: rustls's default suites in their order, trusting `ca`.
fn client(ca: &Path) -> quinn::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(ca).expect("CA certificate")).expect("root");
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![fleetpulse_proto::ALPN.to_vec()];
    quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).expect("QUIC TLS")))
}

/// A device endpoint with fleetpulse's configuration and the development certificate in `dir`,
/// preferring `first` whatever the client prefers. Each connection answers every [`FRAME`]-byte
/// frame on its first stream with [`ACK`] bytes.
fn server(dir: &Path, first: SupportedCipherSuite) -> (quinn::Endpoint, SocketAddr) {
    let suites = std::iter::once(first).chain(tls::device_suites().into_iter().filter(|s| s.suite() != first.suite()));
    let config =
        tls::server_config_with_suites(&TlsSource::Dev { dir: dir.into() }, Duration::from_secs(30), suites.collect())
            .expect("server configuration");
    let endpoint = quinn::Endpoint::server(config, (Ipv4Addr::LOCALHOST, 0).into()).expect("server endpoint");
    let addr = endpoint.local_addr().expect("address");
    let accepting = endpoint.clone();
    tokio::spawn(async move {
        while let Some(incoming) = accepting.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                let Ok((mut send, mut recv)) = conn.accept_bi().await else { return };
                let mut frame = [0u8; FRAME];
                while recv.read_exact(&mut frame).await.is_ok() {
                    if send.write_all(&[1; ACK]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (endpoint, addr)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let servers = rt.block_on(async {
        [("aes_128_gcm_sha256", TLS13_AES_128_GCM_SHA256), ("aes_256_gcm_sha384", TLS13_AES_256_GCM_SHA384)]
            .map(|(name, suite)| (name, server(dir.path(), suite)))
    });
    let endpoint = rt.block_on(async { quinn::Endpoint::client((Ipv4Addr::LOCALHOST, 0).into()).expect("client") });
    let config = client(&dir.path().join("ca.pem"));

    let mut group = c.benchmark_group("quic_handshake");
    for (name, (_, addr)) in &servers {
        group.bench_function(*name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    let conn = endpoint.connect_with(config.clone(), *addr, "localhost").expect("connect").await;
                    conn.expect("handshake").close(0u32.into(), b"");
                })
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("quic_frame_and_ack");
    for (name, (_, addr)) in &servers {
        let (conn, mut send, mut recv) = rt.block_on(async {
            let conn = endpoint.connect_with(config.clone(), *addr, "localhost").expect("connect").await;
            let conn = conn.expect("handshake");
            let (send, recv) = conn.open_bi().await.expect("stream");
            (conn, send, recv)
        });
        let frame = [7u8; FRAME];
        let mut ack = [0u8; ACK];
        group.bench_function(*name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    send.write_all(&frame).await.expect("frame");
                    recv.read_exact(&mut ack).await.expect("ack");
                })
            })
        });
        conn.close(0u32.into(), b"");
    }
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
