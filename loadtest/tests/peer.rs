//! The reference-point modes of the load tester (`fleetpulse-peerload`) against small real
//! servers: a QUIC floor (quinn, TLS, 8-byte cumulative acknowledgements) and an MQTT broker over
//! TLS answering QoS 1 publishes; each also with a server that stops acknowledging, which the
//! report must show as missing frames.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use fleetpulse_loadtest::MessageMix;
use fleetpulse_loadtest::peer::{self, PeerConfig, PeerMode, PeerReport};
use fleetpulse_proto::ALPN;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rumqttc::mqttbytes::v4::{Packet, PubAck};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A CA (PEM) and a server configuration with a certificate for `localhost` signed by it.
fn tls_material() -> (String, rustls::ServerConfig) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key")).expect("CA");
    let key = KeyPair::generate().expect("server key");
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("server params")
        .signed_by(&key, &ca)
        .expect("server cert");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())))
        .expect("server TLS config");
    (ca.pem(), tls)
}

fn config(mode: PeerMode, addr: SocketAddr, ca: &tempfile::NamedTempFile) -> PeerConfig {
    PeerConfig {
        mode,
        addr,
        server_name: "localhost".into(),
        ca_cert: ca.path().to_path_buf(),
        devices: 20,
        duration: Duration::from_millis(1500),
        rate_per_device: 20.0,
        burst: 2,
        warmup: Duration::from_millis(300),
        mix: MessageMix::default(),
        heartbeat_interval_s: 5,
        connect_rate: 0,
        drain_timeout: Duration::from_secs(10),
    }
}

fn ca_file(pem: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), pem).expect("write CA");
    file
}

/// A floor server acknowledging at most `ack_limit` frames per connection.
async fn floor(ack_limit: u64) -> (SocketAddr, tempfile::NamedTempFile) {
    let (ca, mut tls) = tls_material();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).expect("QUIC TLS");
    let endpoint = quinn::Endpoint::server(
        quinn::ServerConfig::with_crypto(Arc::new(crypto)),
        "127.0.0.1:0".parse().expect("address"),
    )
    .expect("endpoint");
    let addr = endpoint.local_addr().expect("address");
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                let Ok((mut send, mut recv)) = conn.accept_bi().await else { return };
                let (mut buf, mut frames) = (Vec::new(), 0u64);
                while let Ok(Some(chunk)) = recv.read_chunk(4096, true).await {
                    buf.extend_from_slice(&chunk.bytes);
                    while buf.len() >= 4 {
                        let len = u32::from_le_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
                        if buf.len() < 4 + len {
                            break;
                        }
                        buf.drain(..4 + len);
                        frames += 1;
                    }
                    if frames <= ack_limit && send.write_all(&frames.to_le_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, ca_file(&ca))
}

/// An MQTT broker over TLS that accepts every client and answers publishes with `PUBACK`, the
/// first `ack_limit` of each connection only.
async fn broker(ack_limit: u64) -> (SocketAddr, tempfile::NamedTempFile) {
    let (ca, tls) = tls_material();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut stream) = acceptor.accept(tcp).await else { return };
                let (mut buf, mut out, mut acked) = (BytesMut::new(), BytesMut::new(), 0u64);
                loop {
                    loop {
                        match Packet::read(&mut buf, 1 << 20) {
                            Ok(Packet::Connect(_)) => out.extend_from_slice(&[0x20, 0x02, 0x00, 0x00]),
                            Ok(Packet::Publish(p)) if acked < ack_limit => {
                                acked += 1;
                                PubAck::new(p.pkid).write(&mut out).expect("encode PUBACK");
                            }
                            Ok(Packet::Disconnect) => return,
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                    if !out.is_empty() {
                        if stream.write_all(&out).await.is_err() || stream.flush().await.is_err() {
                            return;
                        }
                        out.clear();
                    }
                    match stream.read_buf(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            });
        }
    });
    (addr, ca_file(&ca))
}

fn assert_complete(report: &PeerReport) {
    assert!(report.passed(), "{report:#?}");
    assert_eq!(report.established, 20);
    // 20 devices × 20 frames/s × 1.2 s of schedule, give or take a tick each.
    assert!(report.sent >= 400, "{report:#?}");
    assert_eq!((report.acked, report.missing, report.not_sent), (report.sent, 0, 0));
    assert!(report.ack_latency_us.max > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_frame_sent_to_the_floor_is_acknowledged() {
    let (addr, ca) = floor(u64::MAX).await;
    let report = peer::run(config(PeerMode::Floor, addr, &ca)).await.expect("run");
    assert_eq!(report.mode, "floor");
    assert_complete(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_the_floor_never_acknowledges_are_missing() {
    let (addr, ca) = floor(3).await;
    let cfg = PeerConfig { drain_timeout: Duration::from_secs(1), ..config(PeerMode::Floor, addr, &ca) };
    let report = peer::run(cfg).await.expect("run");
    assert!(!report.passed());
    assert!(report.missing > 0 && report.acked + report.missing == report.sent, "{report:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_publish_to_the_broker_is_acknowledged() {
    let (addr, ca) = broker(u64::MAX).await;
    let report = peer::run(config(PeerMode::Mqtt, addr, &ca)).await.expect("run");
    assert_eq!(report.mode, "mqtt");
    assert_complete(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_without_puback_are_missing() {
    let (addr, ca) = broker(5).await;
    let cfg = PeerConfig { drain_timeout: Duration::from_secs(1), ..config(PeerMode::Mqtt, addr, &ca) };
    let report = peer::run(cfg).await.expect("run");
    assert!(!report.passed());
    assert_eq!(report.acked, 20 * 5, "{report:#?}");
    assert_eq!(report.acked + report.missing, report.sent);
}
