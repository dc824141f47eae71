//! Test harness of the ingest tier: an [`Ingest`] on an embedded store in a temporary directory,
//! an enterprise and an issuing account, and a protocol-version-2 test device speaking real QUIC.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use fleetpulse_ingest::{Ingest, IngestConfig, IngestMetrics};
use fleetpulse_proto::wire::{self, CommandStatus, DataFrame, Downlink, Hello, Message, Uplink};
use fleetpulse_proto::{AccountId, CommandId, DeviceId, EnterpriseId, FrameDecoder, FrameEncoder, UnixMillis};
use fleetpulse_store::embedded::EmbeddedConfig;
use fleetpulse_store::{Command, NewAccount, NewCommand, NewEnterprise, Role, Store};

/// How long a test waits for anything before it fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// A running ingest tier on its own store.
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub store: Store,
    pub ingest: Option<Ingest>,
    pub enterprise: EnterpriseId,
    pub credential: String,
    pub account: AccountId,
    pub configure: fn(&mut IngestConfig),
}

impl Harness {
    /// Starts an ingest tier on a fresh store with one enterprise and one account.
    pub async fn start() -> Harness {
        Harness::start_with(|_| {}).await
    }

    /// [`Harness::start`] with the configuration changed by `configure`.
    pub async fn start_with(configure: fn(&mut IngestConfig)) -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open_embedded(dir.path(), EmbeddedConfig { fsync: false, ..EmbeddedConfig::default() })
            .expect("open the store");
        let enterprise = store
            .entities
            .create_enterprise(NewEnterprise {
                name: "acme".into(),
                credential: "acme-credential".into(),
                channel_id: None,
                profile: Default::default(),
            })
            .await
            .expect("enterprise");
        let account = store
            .entities
            .create_account(NewAccount {
                email: "admin@example.com".into(),
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
        let mut h = Harness {
            dir,
            store,
            ingest: None,
            enterprise: enterprise.id,
            credential: enterprise.credential,
            account: account.id,
            configure,
        };
        h.ingest = Some(h.start_ingest().await);
        h
    }

    async fn start_ingest(&self) -> Ingest {
        let mut config = IngestConfig::new("127.0.0.1:0".parse().expect("address"), self.dir.path());
        config.endpoints = 1;
        config.shards = 1;
        (self.configure)(&mut config);
        let metrics = IngestMetrics::register(&mut prometheus_client::registry::Registry::default());
        Ingest::start(config, self.store.clone(), metrics).await.expect("start the ingest tier")
    }

    /// Shuts the ingest tier down and starts it again on the same store.
    pub async fn restart(&mut self) {
        if let Some(ingest) = self.ingest.take() {
            ingest.shutdown(Duration::from_secs(5)).await;
        }
        self.ingest = Some(self.start_ingest().await);
    }

    pub fn ingest(&self) -> &Ingest {
        self.ingest.as_ref().expect("running")
    }

    pub fn addr(&self) -> SocketAddr {
        self.ingest().local_addr()
    }

    pub fn ca(&self) -> std::path::PathBuf {
        self.dir.path().join("tls/ca.pem")
    }

    /// Queues a command for `device` due in `deadline_in` and wakes its session.
    pub async fn enqueue(&self, device: DeviceId, kind: &str, args: &str, deadline_in: Duration) -> CommandId {
        let now = UnixMillis::now();
        let mut answers = self
            .store
            .entities
            .enqueue_commands(
                vec![NewCommand {
                    device_id: device,
                    enterprise_id: self.enterprise,
                    kind: kind.into(),
                    args: args.into(),
                    deadline: UnixMillis(now.0 + deadline_in.as_millis() as i64),
                    issued_by: self.account,
                }],
                now,
            )
            .await
            .expect("enqueue");
        let command = answers.pop().expect("one answer").expect("queued");
        self.ingest().command_signal().wake([device]);
        command.id
    }

    pub async fn command(&self, id: CommandId) -> Command {
        self.store.entities.command(id).await.expect("store").expect("command exists")
    }

    /// Waits until `check` holds for the command (the store is written asynchronously).
    pub async fn wait_command(&self, id: CommandId, check: impl Fn(&Command) -> bool) -> Command {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let c = self.command(id).await;
            if check(&c) {
                return c;
            }
            assert!(tokio::time::Instant::now() < deadline, "command never reached the expected state: {c:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A QUIC client endpoint trusting the development CA.
pub fn client_endpoint(ca: &Path) -> quinn::Endpoint {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("CA file") {
        roots.add(cert.expect("CA certificate")).expect("CA is valid");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![fleetpulse_proto::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("QUIC TLS");
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().expect("address")).expect("client endpoint");
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    endpoint
}

/// A protocol-version-2 device: sends data frames with the next sequence number and keeps the
/// downlink frames other than acknowledgements in arrival order.
pub struct Device {
    pub conn: quinn::Connection,
    pub send: quinn::SendStream,
    pub recv: quinn::RecvStream,
    pub id: DeviceId,
    pub welcome: wire::Welcome,
    pub mac: String,
    decoder: FrameDecoder,
    encoder: FrameEncoder,
    seq: u64,
    acked: u64,
    frames: VecDeque<Downlink>,
    _endpoint: quinn::Endpoint,
}

pub fn hello(mac: &str, credential: &str, protocol_version: u16) -> Uplink {
    Uplink::Hello(Hello {
        protocol_version,
        mac: mac.into(),
        serial: String::new(),
        model: "T54W".into(),
        firmware: "96.86.0.100".into(),
        credential: credential.into(),
        heartbeat_interval_s: 60,
    })
}

/// Connects, opens the control stream and sends `hello` (without waiting for an answer).
pub async fn open(
    h: &Harness,
    hello: &Uplink,
) -> (quinn::Endpoint, quinn::Connection, quinn::SendStream, quinn::RecvStream) {
    let endpoint = client_endpoint(&h.ca());
    let conn = endpoint.connect(h.addr(), "localhost").expect("connect").await.expect("handshake");
    let (mut send, recv) = conn.open_bi().await.expect("control stream");
    let mut out = BytesMut::new();
    FrameEncoder::default().encode(hello, &mut out).expect("encode Hello");
    send.write_all(&out).await.expect("send Hello");
    (endpoint, conn, send, recv)
}

impl Device {
    /// Connects as the device with this MAC (12 hex digits) and reads the Welcome.
    pub async fn connect(h: &Harness, mac: &str) -> Device {
        let (endpoint, conn, send, recv) =
            open(h, &hello(mac, &h.credential, fleetpulse_proto::PROTOCOL_VERSION)).await;
        let mut d = Device {
            conn,
            send,
            recv,
            id: DeviceId(0),
            welcome: wire::Welcome {
                device_id: 0,
                last_seq: 0,
                server_time_ms: 0,
                protocol_version: 0,
                max_file_bytes: 0,
            },
            mac: mac.into(),
            decoder: FrameDecoder::default(),
            encoder: FrameEncoder::default(),
            seq: 0,
            acked: 0,
            frames: VecDeque::new(),
            _endpoint: endpoint,
        };
        match d.read_frame().await {
            Some(Downlink::Welcome(w)) => {
                d.id = DeviceId(w.device_id);
                d.seq = w.last_seq;
                d.acked = w.last_seq;
                d.welcome = w;
            }
            other => panic!("expected Welcome, got {other:?}"),
        }
        d
    }

    /// The next downlink frame from the stream, `None` when it ends.
    async fn read_frame(&mut self) -> Option<Downlink> {
        loop {
            if let Some(d) = self.decoder.next_frame::<Downlink>().expect("server frames are valid") {
                return Some(d);
            }
            match tokio::time::timeout(WAIT, self.recv.read_chunk(64 * 1024, true)).await.expect("no frame in time") {
                Ok(Some(chunk)) => self.decoder.push(&chunk.bytes),
                _ => return None,
            }
        }
    }

    /// Reads one frame: acknowledgements update `acked`, the others are kept. `false` when the
    /// stream ended.
    async fn pump(&mut self) -> bool {
        match self.read_frame().await {
            Some(Downlink::Ack(a)) => {
                self.acked = self.acked.max(a.seq);
                true
            }
            Some(other) => {
                self.frames.push_back(other);
                true
            }
            None => false,
        }
    }

    /// The next frame other than an acknowledgement.
    pub async fn next(&mut self) -> Downlink {
        loop {
            if let Some(f) = self.frames.pop_front() {
                return f;
            }
            assert!(self.pump().await, "stream ended");
        }
    }

    /// The next frame, which must be a command.
    pub async fn next_command(&mut self) -> wire::Command {
        match self.next().await {
            Downlink::Command(c) => c,
            other => panic!("expected a command, got {other:?}"),
        }
    }

    /// Sends a data frame and answers its sequence number.
    pub async fn send(&mut self, body: Message) -> u64 {
        self.seq += 1;
        let frame = Uplink::Data(DataFrame { seq: self.seq, sent_at_ms: UnixMillis::now().0, body });
        let mut out = BytesMut::new();
        self.encoder.encode(&frame, &mut out).expect("encode");
        self.send.write_all(&out).await.expect("send");
        self.seq
    }

    /// Sends an answer to a command.
    pub async fn answer(&mut self, command: u64, status: CommandStatus, output: &str, reason: &str) -> u64 {
        self.send(Message::CommandResult(wire::CommandResult {
            command_id: command,
            status,
            output: output.into(),
            reason: reason.into(),
        }))
        .await
    }

    /// Waits until every frame up to `seq` is acknowledged (or rejected).
    pub async fn wait_ack(&mut self, seq: u64) {
        while self.acked < seq {
            assert!(self.pump().await, "stream ended before the ack of {seq}");
        }
    }

    /// Closes the connection.
    pub async fn close(self) {
        self.conn.close(0u32.into(), b"bye");
        self._endpoint.wait_idle().await;
    }
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().try_into().expect("32 bytes")
}

/// `n` bytes that are not all alike (a simple LCG), so a misplaced chunk shows.
pub fn content(n: usize) -> Vec<u8> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 56) as u8
        })
        .collect()
}

impl Device {
    /// Opens an upload stream and sends the header (nothing else).
    pub async fn upload_header(&self, header: &wire::FileHeader) -> quinn::SendStream {
        let mut send = self.conn.open_uni().await.expect("upload stream");
        let mut out = BytesMut::new();
        FrameEncoder::default().encode(header, &mut out).expect("encode the header");
        send.write_all(&out).await.expect("send the header");
        send
    }

    /// Uploads a file: the header, `content`, the end of the stream.
    pub async fn upload(&self, header: &wire::FileHeader, content: &[u8]) -> quinn::SendStream {
        let mut send = self.upload_header(header).await;
        // A refused upload may be stopped while it is being written.
        if send.write_all(content).await.is_ok() {
            let _ = send.finish();
        }
        send
    }
}

/// The code a stream was stopped with, waiting at most [`WAIT`].
pub async fn stopped_with(send: &mut quinn::SendStream) -> Option<u64> {
    match tokio::time::timeout(WAIT, send.stopped()).await.expect("stopped or finished in time") {
        Ok(code) => code.map(|c| c.into_inner()),
        Err(_) => None,
    }
}
