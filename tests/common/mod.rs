//! Test harness: starts the real `fleetpulse` binary on free loopback ports and speaks the
//! device protocol to it with a bare quinn client.

#![allow(dead_code)]

pub mod alarms;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use fleetpulse_proto::wire::{DataFrame, Downlink, Hello, Message, Uplink};
use fleetpulse_proto::{FrameDecoder, FrameEncoder};

pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "correct-horse-battery";

/// A running `fleetpulse serve` child process.
pub struct TestServer {
    child: Child,
    pub quic_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub data_dir: PathBuf,
}

impl TestServer {
    /// Starts the server on `data_dir`; `ports` fixes the addresses (for restarts), else port 0.
    pub fn start(data_dir: &Path, ports: Option<(SocketAddr, SocketAddr)>, extra_config: &str) -> TestServer {
        TestServer::start_with_env(data_dir, ports, extra_config, &[])
    }

    /// [`TestServer::start`] with extra environment variables.
    pub fn start_with_env(
        data_dir: &Path,
        ports: Option<(SocketAddr, SocketAddr)>,
        extra_config: &str,
        env: &[(&str, &str)],
    ) -> TestServer {
        let (quic, http) = ports.unwrap_or(("127.0.0.1:0".parse().unwrap(), "127.0.0.1:0".parse().unwrap()));
        let config = data_dir.join("test-config.toml");
        std::fs::create_dir_all(data_dir).unwrap();
        std::fs::write(&config, format!("[store]\nfsync = false\n{extra_config}")).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_fleetpulse"))
            .args(["serve", "--data-dir"])
            .arg(data_dir)
            .args(["--quic-addr", &quic.to_string(), "--http-addr", &http.to_string(), "--config"])
            .arg(&config)
            .env("FLEETPULSE_ADMIN_EMAIL", ADMIN_EMAIL)
            .env("FLEETPULSE_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("FLEETPULSE_LOG", std::env::var("FLEETPULSE_LOG").unwrap_or_else(|_| "warn".into()))
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start fleetpulse");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let (quic_addr, http_addr) = loop {
            let line = lines.next().expect("server exited before listening").unwrap();
            if let Some(rest) = line.strip_prefix("fleetpulse listening ") {
                let field = |name: &str| {
                    rest.split_whitespace()
                        .find_map(|kv| kv.strip_prefix(name))
                        .and_then(|v| v.parse::<SocketAddr>().ok())
                        .expect("address in the listening line")
                };
                break (field("quic="), field("http="));
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        TestServer { child, quic_addr, http_addr, data_dir: data_dir.to_owned() }
    }

    pub fn api(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.data_dir.join("tls/ca.pem")
    }

    /// SIGKILL: no chance to flush anything.
    /// Waits for the process to exit by itself (e.g. an injected fault), up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn kill9(&mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("reap");
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill -TERM");
        self.child.wait().expect("wait")
    }

    pub fn load_config(&self, devices: u32, duration: Duration) -> fleetpulse_loadtest::LoadConfig {
        fleetpulse_loadtest::LoadConfig {
            quic_addr: self.quic_addr,
            api: self.api(),
            admin_email: ADMIN_EMAIL.into(),
            admin_password: ADMIN_PASSWORD.into(),
            ca_cert: self.ca_cert(),
            devices,
            duration,
            progress: false,
            ..fleetpulse_loadtest::LoadConfig::default()
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client logged in as the platform admin.
pub struct Api {
    pub base: String,
    pub client: reqwest::Client,
    pub token: String,
}

impl Api {
    pub async fn login(base: &str) -> Api {
        // Idle connections leave the pool before the API's 10-s keep-alive bound closes them, so a
        // test that waits between requests never reuses one the server is closing.
        let client = reqwest::Client::builder().pool_idle_timeout(std::time::Duration::from_secs(5)).build().unwrap();
        let resp: serde_json::Value = client
            .post(format!("{base}/api/v1/auth/login"))
            .json(&serde_json::json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = resp["token"].as_str().expect("token").to_owned();
        Api { base: base.to_owned(), client, token }
    }

    pub async fn get(&self, path: &str) -> serde_json::Value {
        self.client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Any request; answers the status and the JSON body (`null` when there is none).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let reply = req.send().await.unwrap();
        let status = reply.status().as_u16();
        (status, reply.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn delete(&self, path: &str) -> reqwest::StatusCode {
        self.client.delete(format!("{}{path}", self.base)).bearer_auth(&self.token).send().await.unwrap().status()
    }

    pub async fn put(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let resp =
            self.client.put(format!("{}{path}", self.base)).bearer_auth(&self.token).json(&body).send().await.unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.json().await.unwrap()
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let resp =
            self.client.post(format!("{}{path}", self.base)).bearer_auth(&self.token).json(&body).send().await.unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.json().await.unwrap()
    }

    /// Creates an enterprise, returning (id, credential).
    pub async fn enterprise(&self, name: &str) -> (u64, String) {
        let e = self.post("/api/v1/enterprises", serde_json::json!({ "name": name })).await;
        (e["id"].as_u64().unwrap(), e["credential"].as_str().unwrap().to_owned())
    }

    pub async fn metrics(&self) -> String {
        self.client.get(format!("{}/metrics", self.base)).send().await.unwrap().text().await.unwrap()
    }
}

/// Polls `read` every 100 ms until `done` holds; fails after `limit` with what it last read.
pub async fn until<T: std::fmt::Debug, F, Fut>(what: &str, limit: Duration, mut read: F, done: impl Fn(&T) -> bool) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let value = read().await;
        if done(&value) {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: still {value:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads a counter's value from Prometheus text.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')).map(|v| v.trim().parse::<f64>().unwrap())
        })
        .unwrap_or(0.0)
}

/// A bare device connection.
pub struct RawDevice {
    pub conn: quinn::Connection,
    pub send: quinn::SendStream,
    pub recv: quinn::RecvStream,
    decoder: FrameDecoder,
    encoder: FrameEncoder,
    _endpoint: quinn::Endpoint,
}

pub fn client_endpoint(ca: &Path) -> quinn::Endpoint {
    client_endpoint_with_alpn(ca, fleetpulse_proto::ALPN)
}

/// A QUIC client endpoint trusting `ca`, offering `alpn` (a relay's: `fleetpulse-relay/1`).
pub fn client_endpoint_with_alpn(ca: &Path, alpn: &[u8]) -> quinn::Endpoint {
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    endpoint
}

impl RawDevice {
    /// Connects and opens the stream, without sending anything.
    pub async fn connect(server: &TestServer) -> RawDevice {
        RawDevice::connect_to(&server.ca_cert(), server.quic_addr).await
    }

    /// Connects to `addr`, verified by the CA in `ca`, and opens the stream.
    pub async fn connect_to(ca: &std::path::Path, addr: std::net::SocketAddr) -> RawDevice {
        let endpoint = client_endpoint(ca);
        let conn = endpoint.connect(addr, "localhost").unwrap().await.expect("handshake");
        let (send, recv) = conn.open_bi().await.unwrap();
        RawDevice {
            conn,
            send,
            recv,
            decoder: FrameDecoder::default(),
            encoder: FrameEncoder::default(),
            _endpoint: endpoint,
        }
    }

    pub fn hello(mac: &str, credential: &str, heartbeat_interval_s: u32) -> Uplink {
        Uplink::Hello(Hello {
            protocol_version: fleetpulse_proto::PROTOCOL_VERSION,
            mac: mac.into(),
            serial: String::new(),
            model: "T54W".into(),
            firmware: "96.86.0.100".into(),
            credential: credential.into(),
            heartbeat_interval_s,
        })
    }

    pub fn data(seq: u64, body: Message) -> Uplink {
        Uplink::Data(DataFrame { seq, sent_at_ms: 0, body })
    }

    pub async fn send(&mut self, frames: &[Uplink]) {
        let mut out = BytesMut::new();
        for f in frames {
            self.encoder.encode(f, &mut out).unwrap();
        }
        self.send.write_all(&out).await.unwrap();
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.send.write_all(bytes).await;
    }

    /// Next downlink frame, or None when the stream or connection ends.
    pub async fn next(&mut self) -> Option<Downlink> {
        loop {
            if let Some(d) = self.decoder.next_frame::<Downlink>().expect("server frames are valid") {
                return Some(d);
            }
            let mut buf = [0u8; 4096];
            match tokio::time::timeout(Duration::from_secs(20), self.recv.read(&mut buf))
                .await
                .expect("no answer in 20 s")
            {
                Ok(Some(n)) => self.decoder.push(&buf[..n]),
                _ => return None,
            }
        }
    }

    /// Waits for the connection to close and returns the application close code.
    pub async fn closed_with(&self) -> Option<u64> {
        match tokio::time::timeout(Duration::from_secs(20), self.conn.closed()).await.expect("closed within 20 s") {
            quinn::ConnectionError::ApplicationClosed(c) => Some(c.error_code.into_inner()),
            _ => None,
        }
    }
}

/// The `[store]` lines that select the scale-out backend on fresh databases of the given servers.
pub fn scaleout_config(
    pg: &fleetpulse_testkit::postgres::PostgresServer,
    ch: &fleetpulse_testkit::clickhouse::ClickHouseServer,
    name: &str,
) -> String {
    format!(
        "backend = \"clickhouse\"\nclickhouse_url = \"{}\"\nclickhouse_database = \"{name}\"\npostgres_url = \"{}\"\n",
        ch.url(),
        pg.create_database(name)
    )
}

impl TestServer {
    /// Resident memory of the server process, KiB.
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().trim_end_matches(" kB").parse().ok()))
            })
            .flatten()
            .unwrap_or(0)
    }
}
