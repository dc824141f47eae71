//! The downlink over real QUIC on loopback (ING-8): the round trip of a command to a connected
//! device (queued, sent, answered `succeeded`, the answer durable at its ack), as median and p99
//! over [`ROUND_TRIPS`] commands (printed before the criterion runs), and the throughput of a
//! 10 MiB file upload until it is stored (criterion, bytes per second).
//!
//! `cargo bench -p fleetpulse-benches --bench downlink -- --noplot`

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use criterion::{Criterion, Throughput};
use fleetpulse_ingest::{Ingest, IngestConfig, IngestMetrics};
use fleetpulse_proto::wire::{self, CommandStatus, DataFrame, Downlink, FileHeader, Hello, Message, Uplink};
use fleetpulse_proto::{AccountId, CommandId, DeviceId, EnterpriseId, FrameDecoder, FrameEncoder, UnixMillis};
use fleetpulse_store::embedded::EmbeddedConfig;
use fleetpulse_store::{NewAccount, NewCommand, NewEnterprise, Role, Store};

/// Commands whose round trips are measured.
const ROUND_TRIPS: usize = 1_000;
/// The uploaded file's size.
const FILE_BYTES: usize = 10 << 20;
/// Files uploaded per device before the next device takes over (the store keeps 100 per device).
const FILES_PER_DEVICE: usize = 90;

struct Server {
    _dir: tempfile::TempDir,
    store: Store,
    ingest: Ingest,
    enterprise: EnterpriseId,
    account: AccountId,
    ca: std::path::PathBuf,
}

async fn server(fsync: bool) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_embedded(dir.path(), EmbeddedConfig { fsync, ..EmbeddedConfig::default() }).expect("open");
    let e = store
        .entities
        .create_enterprise(NewEnterprise {
            profile: Default::default(),
            name: "bench".into(),
            credential: "bench".into(),
            channel_id: None,
        })
        .await
        .expect("enterprise");
    let account = store
        .entities
        .create_account(NewAccount {
            email: "bench@example.com".into(),
            password_hash: "phc".into(),
            role: Role::PlatformAdmin,
            channel_id: None,
            enterprise_id: None,
            must_change_password: false,
            parent_id: None,
            permissions: None,
        })
        .await
        .expect("account");
    let mut config = IngestConfig::new("127.0.0.1:0".parse().expect("addr"), dir.path());
    config.endpoints = 1;
    config.shards = 1;
    let metrics = IngestMetrics::register(&mut prometheus_client::registry::Registry::default());
    let ingest = Ingest::start(config, store.clone(), metrics).await.expect("ingest");
    let ca = dir.path().join("tls/ca.pem");
    Server { _dir: dir, store, ingest, enterprise: e.id, account: account.id, ca }
}

impl Server {
    async fn enqueue(&self, device: DeviceId) -> CommandId {
        let now = UnixMillis::now();
        let command = NewCommand {
            device_id: device,
            enterprise_id: self.enterprise,
            kind: "fetch_log".into(),
            args: "{}".into(),
            deadline: UnixMillis(now.0 + 3_600_000),
            issued_by: self.account,
        };
        let mut answers = self.store.entities.enqueue_commands(vec![command], now).await.expect("enqueue");
        let id = answers.pop().expect("answer").expect("queued").id;
        self.ingest.command_signal().wake([device]);
        id
    }
}

struct Device {
    conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    decoder: FrameDecoder,
    encoder: FrameEncoder,
    id: DeviceId,
    seq: u64,
    _endpoint: quinn::Endpoint,
}

impl Device {
    async fn connect(s: &Server, mac: &str) -> Device {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&s.ca).expect("ca") {
            roots.add(cert.expect("cert")).expect("root");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("tls13")
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![fleetpulse_proto::ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic tls");
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
        let conn = endpoint.connect(s.ingest.local_addr(), "localhost").expect("connect").await.expect("handshake");
        let (send, recv) = conn.open_bi().await.expect("stream");
        let mut d = Device {
            conn,
            send,
            recv,
            decoder: FrameDecoder::default(),
            encoder: FrameEncoder::default(),
            id: DeviceId(0),
            seq: 0,
            _endpoint: endpoint,
        };
        d.write(&Uplink::Hello(Hello {
            protocol_version: fleetpulse_proto::PROTOCOL_VERSION,
            mac: mac.into(),
            serial: String::new(),
            model: "T54W".into(),
            firmware: "1".into(),
            credential: "bench".into(),
            heartbeat_interval_s: 60,
        }))
        .await;
        match d.next().await {
            Downlink::Welcome(w) => {
                d.id = DeviceId(w.device_id);
                d.seq = w.last_seq;
            }
            other => panic!("expected Welcome, got {other:?}"),
        }
        d
    }

    async fn write(&mut self, frame: &Uplink) {
        let mut out = BytesMut::new();
        self.encoder.encode(frame, &mut out).expect("encode");
        self.send.write_all(&out).await.expect("send");
    }

    async fn next(&mut self) -> Downlink {
        loop {
            if let Some(d) = self.decoder.next_frame::<Downlink>().expect("valid") {
                return d;
            }
            let chunk = self.recv.read_chunk(64 * 1024, true).await.expect("read").expect("open");
            self.decoder.push(&chunk.bytes);
        }
    }

    /// Answers `command` with `status` and waits for the ack of the answer.
    async fn answer(&mut self, command: CommandId, status: CommandStatus) {
        self.seq += 1;
        let seq = self.seq;
        let body = Message::CommandResult(wire::CommandResult {
            command_id: command.0,
            status,
            output: if status == CommandStatus::Succeeded { "ok".into() } else { String::new() },
            reason: String::new(),
        });
        self.write(&Uplink::Data(DataFrame { seq, sent_at_ms: 0, body })).await;
        loop {
            if let Downlink::Ack(a) = self.next().await
                && a.seq >= seq
            {
                return;
            }
        }
    }
}

/// Median and p99 of the command round trip, printed.
fn round_trips(rt: &tokio::runtime::Runtime, fsync: bool) {
    rt.block_on(async {
        let s = server(fsync).await;
        let mut device = Device::connect(&s, "00155e000001").await;
        let mut samples = Vec::with_capacity(ROUND_TRIPS);
        for _ in 0..ROUND_TRIPS {
            let started = Instant::now();
            let id = s.enqueue(device.id).await;
            match device.next().await {
                Downlink::Command(c) => assert_eq!(c.command_id, id.0),
                other => panic!("expected a command, got {other:?}"),
            }
            device.answer(id, CommandStatus::Succeeded).await;
            samples.push(started.elapsed());
        }
        samples.sort();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        println!(
            "command round trip (fsync={fsync}, {ROUND_TRIPS} commands): median {:?}, p99 {:?}, max {:?}",
            at(0.5),
            at(0.99),
            samples[samples.len() - 1]
        );
        device.conn.close(0u32.into(), b"done");
        s.ingest.shutdown(Duration::from_secs(5)).await;
    });
}

/// One 10 MiB upload until `FileStored`.
async fn upload(device: &mut Device, command: CommandId, header: &FileHeader, content: &[u8]) {
    let mut send = device.conn.open_uni().await.expect("upload stream");
    let mut out = BytesMut::new();
    FrameEncoder::default().encode(header, &mut out).expect("header");
    send.write_all(&out).await.expect("header");
    send.write_all(content).await.expect("content");
    send.finish().expect("finish");
    match device.next().await {
        Downlink::FileStored(f) => assert_eq!(f.command_id, command.0),
        other => panic!("expected FileStored, got {other:?}"),
    }
}

fn uploads(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let content: Vec<u8> = (0..FILE_BYTES).map(|i| (i * 31 % 251) as u8).collect();
    let sha256: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, &content).as_ref().try_into().expect("32 bytes");
    let mut group = c.benchmark_group("upload");
    group.throughput(Throughput::Bytes(FILE_BYTES as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    for fsync in [false, true] {
        let s = rt.block_on(server(fsync));
        let mut devices = 0u32;
        let mut current: Option<(Device, CommandId, usize)> = None;
        group.bench_function(if fsync { "file_10mib_fsync" } else { "file_10mib_no_fsync" }, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        if current.as_ref().is_none_or(|(_, _, n)| *n >= FILES_PER_DEVICE) {
                            devices += 1;
                            let mut d = Device::connect(&s, &format!("00155f{devices:06x}")).await;
                            let id = s.enqueue(d.id).await;
                            assert!(matches!(d.next().await, Downlink::Command(_)));
                            d.answer(id, CommandStatus::Accepted).await;
                            current = Some((d, id, 0));
                        }
                        let (device, command, n) = current.as_mut().expect("a device");
                        let header = FileHeader {
                            command_id: command.0,
                            name: format!("capture-{n}.pcap"),
                            size: FILE_BYTES as u64,
                            sha256,
                        };
                        let started = Instant::now();
                        upload(device, *command, &header, &content).await;
                        total += started.elapsed();
                        *n += 1;
                    }
                    total
                })
            })
        });
        // The devices go before the server.
        drop(current);
        rt.block_on(s.ingest.shutdown(Duration::from_secs(5)));
    }
    group.finish();
}

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut c = Criterion::default().configure_from_args();
    if !std::env::args().any(|a| a == "--list") {
        round_trips(&rt, false);
        round_trips(&rt, true);
    }
    uploads(&mut c, &rt);
    c.final_summary();
}
