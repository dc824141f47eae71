//! The relay (ING-9) as real processes on loopback: `fleetpulse serve` with HTTPS ingest and a
//! relay grant, `fleetpulse relay` processes in front of it (upstream over QUIC, the default, and
//! over HTTPS), devices speaking the unchanged device protocol to the relays: refusal, kill -9 of
//! either side, malformed frames, a flooding device among 99 calm ones, commands to a device
//! behind a relay; and the relay link itself spoken by hand: malformed requests, a client
//! offering the relay ALPN without a relay credential, connections beyond the relay link's cap.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::BytesMut;
use common::{Api, RawDevice, TestServer, client_endpoint, client_endpoint_with_alpn};
use fleetpulse_proto::relay_link::{LinkAnswer, LinkRequest, LinkRequestKind};
use fleetpulse_proto::wire::{CommandResult, CommandStatus, Downlink, Heartbeat, Message, ResourceReport, Uplink};
use fleetpulse_proto::{FrameDecoder, FrameEncoder, close_code};

const RELAY_CREDENTIAL: &str = "relay-site-a-0123456789";

fn free_tcp() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], fleetpulse_testkit::free_port()))
}

fn free_udp() -> SocketAddr {
    free_tcp()
}

fn server_config(https: SocketAddr, enterprise: Option<u64>) -> String {
    server_config_with(https, enterprise, "")
}

/// `extra` goes into `[ingest]` (rate limits).
fn server_config_with(https: SocketAddr, enterprise: Option<u64>, extra: &str) -> String {
    let mut c = format!("[ingest]\nhttps_listen = \"{https}\"\n{extra}");
    if let Some(e) = enterprise {
        c.push_str(&format!(
            "[[ingest.relays]]\nname = \"site-a\"\ncredential = \"{RELAY_CREDENTIAL}\"\nenterprise_id = {e}\n"
        ));
    }
    c
}

/// How a relay reaches the server, and where.
#[derive(Debug, Clone, Copy)]
enum Upstream {
    /// The server's QUIC ingest address (the relay link, the default).
    Quic(SocketAddr),
    /// The server's HTTPS ingest address.
    Https(SocketAddr),
}

impl Upstream {
    fn quic(server: &TestServer) -> Upstream {
        Upstream::Quic(server.quic_addr)
    }
}

/// A running `fleetpulse relay`.
struct RelayProcess {
    child: Child,
    addr: SocketAddr,
}

impl RelayProcess {
    /// Starts a relay in front of `server` (reached by `upstream`), showing devices the server's
    /// own certificate, on `listen`.
    fn start(server: &TestServer, upstream: Upstream, listen: SocketAddr, state: &Path) -> RelayProcess {
        RelayProcess::start_with(server, upstream, listen, state, RELAY_CREDENTIAL)
    }

    /// [`RelayProcess::start`] with another credential (a grant made in the portal).
    fn start_with(
        server: &TestServer,
        upstream: Upstream,
        listen: SocketAddr,
        state: &Path,
        credential: &str,
    ) -> RelayProcess {
        let tls = server.data_dir.join("tls");
        let (transport, addr) = match upstream {
            Upstream::Quic(addr) => ("quic", addr),
            Upstream::Https(addr) => ("https", addr),
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_fleetpulse"))
            .args(["relay", "--upstream", &addr.to_string(), "--upstream-transport", transport])
            .args(["--listen", &listen.to_string()])
            .arg("--upstream-ca")
            .arg(tls.join("ca.pem"))
            .arg("--cert")
            .arg(tls.join("server.pem"))
            .arg("--key")
            .arg(tls.join("server.key"))
            .arg("--state-dir")
            .arg(state)
            .args(["--credential", credential])
            .env("FLEETPULSE_LOG", std::env::var("FLEETPULSE_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start fleetpulse relay");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = loop {
            let line = lines.next().expect("relay exited before listening").unwrap();
            if let Some(a) = line.strip_prefix("fleetpulse relay listening quic=") {
                break a.parse().unwrap();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        RelayProcess { child, addr }
    }

    fn kill9(&mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("reap");
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A device on a raw QUIC connection to a relay.
struct Device {
    conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    decoder: FrameDecoder,
    _endpoint: quinn::Endpoint,
}

impl Device {
    async fn connect(relay: SocketAddr, ca: &Path) -> Device {
        let endpoint = client_endpoint(ca);
        let conn = endpoint.connect(relay, "localhost").unwrap().await.expect("handshake");
        let (send, recv) = conn.open_bi().await.unwrap();
        Device { conn, send, recv, decoder: FrameDecoder::default(), _endpoint: endpoint }
    }

    async fn send(&mut self, frames: &[Uplink]) {
        let mut out = BytesMut::new();
        let mut encoder = FrameEncoder::default();
        for f in frames {
            encoder.encode(f, &mut out).unwrap();
        }
        self.send.write_all(&out).await.unwrap();
    }

    async fn next(&mut self) -> Option<Downlink> {
        loop {
            if let Some(d) = self.decoder.next_frame::<Downlink>().expect("valid frames") {
                return Some(d);
            }
            let mut buf = [0u8; 4096];
            match tokio::time::timeout(Duration::from_secs(20), self.recv.read(&mut buf)).await.expect("answer in 20 s")
            {
                Ok(Some(n)) => self.decoder.push(&buf[..n]),
                _ => return None,
            }
        }
    }

    async fn closed_with(&self) -> Option<u64> {
        match tokio::time::timeout(Duration::from_secs(20), self.conn.closed()).await.expect("closed within 20 s") {
            quinn::ConnectionError::ApplicationClosed(c) => Some(c.error_code.into_inner()),
            _ => None,
        }
    }
}

fn resource(seq: u64) -> Uplink {
    RawDevice::data(
        seq,
        Message::ResourceReport(ResourceReport { cpu_centi_pct: 100, mem_used_bytes: 1, mem_total_bytes: 2 }),
    )
}

/// A server with HTTPS ingest and two enterprises, the relay granted the first:
/// (server, https, (a, a's credential), b's credential).
async fn server_with_grant(dir: &Path) -> (TestServer, SocketAddr, (u64, String), String) {
    server_with_grant_and(dir, "").await
}

/// [`server_with_grant`] with `extra` in `[ingest]`.
async fn server_with_grant_and(dir: &Path, extra: &str) -> (TestServer, SocketAddr, (u64, String), String) {
    let https = free_tcp();
    let mut server = TestServer::start(dir, None, &server_config(https, None));
    let api = Api::login(&server.api()).await;
    let a = api.enterprise("relay-a").await;
    let (_, b) = api.enterprise("relay-b").await;
    let ports = (server.quic_addr, server.http_addr);
    server.terminate();
    let server = TestServer::start(dir, Some(ports), &server_config_with(https, Some(a.0), extra));
    (server, https, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_over_quic_carries_its_devices_refuses_another_enterprise_and_isolates_bad_frames() {
    carries_refuses_and_isolates(Transport::Quic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_over_https_carries_its_devices_refuses_another_enterprise_and_isolates_bad_frames() {
    carries_refuses_and_isolates(Transport::Https).await;
}

#[derive(Debug, Clone, Copy)]
enum Transport {
    Quic,
    Https,
}

async fn carries_refuses_and_isolates(transport: Transport) {
    let dir = tempfile::tempdir().unwrap();
    let (server, https, (enterprise, credential), other) = server_with_grant(dir.path()).await;
    let upstream = match transport {
        Transport::Quic => Upstream::quic(&server),
        Transport::Https => Upstream::Https(https),
    };
    let relay = RelayProcess::start(&server, upstream, free_udp(), &dir.path().join("relay"));
    let ca = server.ca_cert();

    // A device of the relay's enterprise: the server's Welcome, then durable acks.
    let mut good = Device::connect(relay.addr, &ca).await;
    good.send(&[RawDevice::hello("001565000d01", &credential, 60)]).await;
    let Some(Downlink::Welcome(w)) = good.next().await else { panic!("Welcome") };
    assert_eq!(w.last_seq, 0);
    good.send(&[resource(1), resource(2), RawDevice::data(3, Message::Heartbeat(Heartbeat { uptime_s: 1 }))]).await;
    let mut acked = 0;
    while acked < 3 {
        match good.next().await {
            Some(Downlink::Ack(a)) => acked = a.seq,
            other => panic!("expected an Ack, got {other:?}"),
        }
    }

    // A device of another enterprise: refused, and only it.
    let mut stranger = Device::connect(relay.addr, &ca).await;
    stranger.send(&[RawDevice::hello("001565000d02", &other, 60)]).await;
    assert_eq!(stranger.closed_with().await, Some(u64::from(close_code::BAD_CREDENTIAL)));

    // A device sending garbage: its session closes, not the relay's connection.
    let mut broken = Device::connect(relay.addr, &ca).await;
    broken.send(&[RawDevice::hello("001565000d03", &credential, 60)]).await;
    assert!(matches!(broken.next().await, Some(Downlink::Welcome(_))));
    let mut garbage = 8u32.to_le_bytes().to_vec();
    garbage.extend_from_slice(&[0xff; 8]);
    broken.send.write_all(&garbage).await.unwrap();
    assert_eq!(broken.closed_with().await, Some(u64::from(close_code::MALFORMED_FRAME)));

    // The good device carries on over the same upstream connection.
    good.send(&[resource(4)]).await;
    assert!(matches!(good.next().await, Some(Downlink::Ack(a)) if a.seq == 4));
    let api = Api::login(&server.api()).await;
    let stored = api.get(&format!("/api/v1/enterprises/{enterprise}/stored-sequences")).await;
    let rows: Vec<u64> = stored["devices"].as_array().unwrap().iter().map(|d| d["rows"].as_u64().unwrap()).collect();
    assert!(rows.contains(&3), "resources 1, 2 and 4 of the good device: {stored}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_over_two_relays_one_killed_with_9_lose_and_duplicate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _, (enterprise, credential), _) = server_with_grant(dir.path()).await;
    let upstream = Upstream::quic(&server);
    let (listen_a, listen_b) = (free_udp(), free_udp());
    let mut relay_a = RelayProcess::start(&server, upstream, listen_a, &dir.path().join("relay-a"));
    let relay_b = RelayProcess::start(&server, upstream, listen_b, &dir.path().join("relay-b"));
    let run = |relay: SocketAddr| {
        let mut cfg = server.load_config(40, Duration::from_secs(12));
        cfg.quic_addr = relay;
        cfg.credential = Some((enterprise, credential.clone()));
        cfg.rate_per_device = 5.0;
        cfg.heartbeat_interval_s = 30;
        cfg.drain_timeout = Duration::from_secs(60);
        tokio::spawn(fleetpulse_loadtest::run(cfg))
    };
    let (run_a, run_b) = (run(relay_a.addr), run(relay_b.addr));

    tokio::time::sleep(Duration::from_secs(4)).await;
    relay_a.kill9();
    let relay_a = RelayProcess::start(&server, upstream, listen_a, &dir.path().join("relay-a"));
    for (name, run) in [("a (killed)", run_a), ("b", run_b)] {
        let report = run.await.unwrap().expect("load test");
        println!("relay {name}: {}", serde_json::to_string(&report).unwrap());
        assert_eq!(report.connections.established, 40, "{name}");
        assert!(report.drained, "{name}: every frame acknowledged in the end");
        assert_eq!(report.acked, report.sent, "{name}");
        assert!(report.acked >= 1_000, "{name}: acked {}", report.acked);
        assert_eq!(report.verified.missing, 0, "{name}: acknowledged = durable at the server");
        assert_eq!(report.verified.duplicated, 0, "{name}");
    }
    drop((relay_a, relay_b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_killed_with_9_behind_a_relay_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (server, https, (enterprise, credential), _) = server_with_grant(dir.path()).await;
    let relay = RelayProcess::start(&server, Upstream::quic(&server), free_udp(), &dir.path().join("relay"));
    let mut cfg = server.load_config(40, Duration::from_secs(12));
    cfg.quic_addr = relay.addr;
    cfg.credential = Some((enterprise, credential));
    cfg.rate_per_device = 5.0;
    cfg.heartbeat_interval_s = 30;
    cfg.drain_timeout = Duration::from_secs(60);
    let run = tokio::spawn(fleetpulse_loadtest::run(cfg));

    // The server goes away under load; the relay holds its devices and retries the same frames.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let ports = (server.quic_addr, server.http_addr);
    let mut server = server;
    server.kill9();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let server = TestServer::start(dir.path(), Some(ports), &server_config(https, Some(enterprise)));
    let report = run.await.unwrap().expect("load test");
    println!("{}", serde_json::to_string(&report).unwrap());
    assert!(report.drained, "every frame acknowledged in the end");
    assert_eq!(report.acked, report.sent);
    assert!(report.acked >= 1_000, "acked {}", report.acked);
    assert_eq!(report.verified.missing, 0, "acknowledged = durable at the server");
    assert_eq!(report.verified.duplicated, 0);
    drop((relay, server));
}

fn command_result(seq: u64, command_id: u64, status: CommandStatus, output: &str) -> Uplink {
    RawDevice::data(
        seq,
        Message::CommandResult(CommandResult { command_id, status, output: output.into(), reason: String::new() }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_reach_a_device_behind_a_relay_and_its_answers_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _, (_, credential), _) = server_with_grant(dir.path()).await;
    let relay = RelayProcess::start(&server, Upstream::quic(&server), free_udp(), &dir.path().join("relay"));
    let mut device = Device::connect(relay.addr, &server.ca_cert()).await;
    device.send(&[RawDevice::hello("001565000e01", &credential, 60)]).await;
    let Some(Downlink::Welcome(w)) = device.next().await else { panic!("Welcome") };

    let api = Api::login(&server.api()).await;
    let queued = api
        .post(
            &format!("/api/v1/devices/{}/commands", w.device_id),
            serde_json::json!({"kind": "ping", "args": {"target": "10.0.0.1"}}),
        )
        .await;
    let id = queued["id"].as_u64().unwrap();
    assert_eq!(queued["state"], "queued");

    // The device's next exchange (its heartbeat) brings the command back with the ack.
    device.send(&[RawDevice::data(1, Message::Heartbeat(Heartbeat { uptime_s: 1 }))]).await;
    let (mut acked, mut command) = (0, None);
    while acked < 1 || command.is_none() {
        match device.next().await {
            Some(Downlink::Ack(a)) => acked = a.seq,
            Some(Downlink::Command(c)) => command = Some(c),
            other => panic!("expected the Ack and the Command, got {other:?}"),
        }
    }
    let command = command.unwrap();
    assert_eq!((command.command_id, command.kind.as_str()), (id, "ping"));
    let sent = api.get(&format!("/api/v1/commands/{id}")).await;
    assert_eq!(sent["state"], "sent", "{sent}");

    // Its answers go up as ordinary frames, durable before their ack.
    device
        .send(&[
            command_result(2, id, CommandStatus::Accepted, ""),
            command_result(3, id, CommandStatus::Succeeded, "4 packets, 0 lost"),
        ])
        .await;
    while acked < 3 {
        match device.next().await {
            Some(Downlink::Ack(a)) => acked = a.seq,
            other => panic!("expected an Ack, got {other:?}"),
        }
    }
    let done = api.get(&format!("/api/v1/commands/{id}")).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["output"], "4 packets, 0 lost");

    // A device that says nothing gets its command too: the relay's long poll learns it was woken
    // and makes it exchange.
    let second =
        api.post(&format!("/api/v1/devices/{}/commands", w.device_id), serde_json::json!({"kind": "reboot"})).await;
    match device.next().await {
        Some(Downlink::Command(c)) => assert_eq!(c.command_id, second["id"].as_u64().unwrap()),
        other => panic!("expected the second Command without sending anything, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_flooding_device_is_throttled_while_its_99_neighbours_behind_the_same_relay_are_all_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    // 200 frames a second per device, bursts of 400 (above the relay's 128 frames an exchange).
    let limits = "device_rate = 200\ndevice_burst = 400\n";
    let (server, _, (enterprise, credential), _) = server_with_grant_and(dir.path(), limits).await;
    let relay = RelayProcess::start(&server, Upstream::quic(&server), free_udp(), &dir.path().join("relay"));

    // The flooder writes as fast as the relay reads it, for the whole run.
    let flooder = Device::connect(relay.addr, &server.ca_cert()).await;
    let Device { conn, mut send, mut recv, _endpoint, .. } = flooder;
    let mut hello = BytesMut::new();
    FrameEncoder::default().encode(&RawDevice::hello("001565000f01", &credential, 60), &mut hello).unwrap();
    send.write_all(&hello).await.unwrap();
    let written = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writer = {
        let written = written.clone();
        tokio::spawn(async move {
            let mut encoder = FrameEncoder::default();
            let mut seq = 0;
            loop {
                let mut out = BytesMut::new();
                for _ in 0..100 {
                    seq += 1;
                    encoder.encode(&resource(seq), &mut out).unwrap();
                }
                if send.write_all(&out).await.is_err() {
                    return;
                }
                written.store(seq, std::sync::atomic::Ordering::Relaxed);
            }
        })
    };
    let flooder_acked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let reader = {
        let acked = flooder_acked.clone();
        tokio::spawn(async move {
            let mut decoder = FrameDecoder::default();
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(Some(n)) = recv.read(&mut buf).await {
                decoder.push(&buf[..n]);
                while let Ok(Some(frame)) = decoder.next_frame::<Downlink>() {
                    if let Downlink::Ack(a) = frame {
                        acked.store(a.seq, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
        })
    };

    // 99 calm devices behind the same relay: every frame acknowledged, nothing lost.
    let mut cfg = server.load_config(99, Duration::from_secs(8));
    cfg.quic_addr = relay.addr;
    cfg.credential = Some((enterprise, credential));
    cfg.rate_per_device = 5.0;
    cfg.heartbeat_interval_s = 30;
    cfg.drain_timeout = Duration::from_secs(30);
    let report = fleetpulse_loadtest::run(cfg).await.expect("load test");
    println!("calm devices: {}", serde_json::to_string(&report).unwrap());
    assert_eq!(report.connections.established, 99);
    assert!(report.drained, "every calm frame acknowledged");
    assert_eq!(report.acked, report.sent);
    assert!(report.acked >= 99 * 20, "acked {}", report.acked);
    assert_eq!(report.verified.missing, 0);
    assert_eq!(report.verified.duplicated, 0);

    // The flooder was held back: refused by its rate limit, far behind what it tried to send.
    let api = Api::login(&server.api()).await;
    let limited = common::metric(&api.metrics().await, "fleetpulse_ingest_rate_limited_total{scope=\"device\"}");
    assert!(limited >= 1.0, "the flooder hit its device rate limit");
    let (tried, acked) =
        (written.load(std::sync::atomic::Ordering::Relaxed), flooder_acked.load(std::sync::atomic::Ordering::Relaxed));
    println!("flooder: wrote {tried} frames, {acked} acknowledged");
    assert!(acked > 0, "the flooder is slowed, not cut off");
    assert!(acked < tried, "the flooder wrote {tried} and got {acked} acknowledged");
    writer.abort();
    reader.abort();
    conn.close(0u32.into(), b"done");
}

/// The device's first exchange through a relay: `Ok` with the server's Welcome, or `Err` with
/// the close code its session ended with.
async fn first_exchange(relay: SocketAddr, ca: &Path, mac: &str, credential: &str) -> Result<Device, Option<u64>> {
    let mut device = Device::connect(relay, ca).await;
    device.send(&[RawDevice::hello(mac, credential, 60)]).await;
    match device.next().await {
        Some(Downlink::Welcome(_)) => Ok(device),
        Some(other) => panic!("expected a Welcome or a close, got {other:?}"),
        None => Err(device.closed_with().await),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_granted_in_the_portal_carry_their_scope_only_and_are_cut_off_when_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let https = free_tcp();
    // No grant in the config file: every relay here authenticates by a grant made in the portal.
    let server = TestServer::start(dir.path(), None, &server_config(https, None));
    let api = Api::login(&server.api()).await;
    let ca = server.ca_cert();
    let channel = |name: &'static str| {
        let api = &api;
        async move { api.post("/api/v1/channels", serde_json::json!({"name": name})).await["id"].as_u64().unwrap() }
    };
    let (north, south) = (channel("north").await, channel("south").await);
    let enterprise = |name: &'static str, channel: u64| {
        let api = &api;
        async move {
            let e = api.post("/api/v1/enterprises", serde_json::json!({"name": name, "channel_id": channel})).await;
            (e["id"].as_u64().unwrap(), e["credential"].as_str().unwrap().to_owned())
        }
    };
    let (north_shop, north_credential) = enterprise("north-shop", north).await;
    let (_, south_credential) = enterprise("south-shop", south).await;
    let grant = |scope: serde_json::Value| {
        let api = &api;
        async move {
            let g = api.post("/api/v1/relays", serde_json::json!({"name": "site", "scope": scope})).await;
            (g["id"].as_u64().unwrap(), g["credential"].as_str().unwrap().to_owned())
        }
    };

    // A channel-scoped grant: the devices of an enterprise of the channel, not of another
    // channel's enterprise (refused per device, the relay's connection carries on).
    let (channel_grant, channel_credential) = grant(serde_json::json!({"channel": north})).await;
    let relay = RelayProcess::start_with(
        &server,
        Upstream::quic(&server),
        free_udp(),
        &dir.path().join("relay-north"),
        &channel_credential,
    );
    let mut north_device = first_exchange(relay.addr, &ca, "001565000e01", &north_credential).await.expect("welcomed");
    north_device.send(&[resource(1)]).await;
    assert!(matches!(north_device.next().await, Some(Downlink::Ack(a)) if a.seq == 1));
    let stranger = first_exchange(relay.addr, &ca, "001565000e02", &south_credential).await.err();
    assert_eq!(stranger, Some(Some(u64::from(close_code::BAD_CREDENTIAL))), "a device of another channel's enterprise");
    north_device.send(&[resource(2)]).await;
    assert!(matches!(north_device.next().await, Some(Downlink::Ack(a)) if a.seq == 2));
    // Its use is recorded (at most once a minute).
    let path = format!("/api/v1/relays/{channel_grant}");
    common::until("last seen", Duration::from_secs(10), || api.get(&path), |g| g["last_seen_at"].is_i64()).await;

    // An enterprise-scoped grant carries that enterprise's devices.
    let (_, shop_credential) = grant(serde_json::json!({"enterprise": north_shop})).await;
    let shop_relay = RelayProcess::start_with(
        &server,
        Upstream::quic(&server),
        free_udp(),
        &dir.path().join("relay-shop"),
        &shop_credential,
    );
    let shop_device = first_exchange(shop_relay.addr, &ca, "001565000e03", &north_credential).await;
    assert!(shop_device.is_ok(), "welcomed through the enterprise's relay");
    let refused = first_exchange(shop_relay.addr, &ca, "001565000e04", &south_credential).await.err();
    assert_eq!(refused, Some(Some(u64::from(close_code::BAD_CREDENTIAL))));

    // Revoked: the server refuses the relay within RELAY_GRANT_TTL (5 s; 5 s more of margin for
    // a loaded machine), every device it carries with it.
    api.post(&format!("/api/v1/relays/{channel_grant}/revoke"), serde_json::json!({})).await;
    let revoked = std::time::Instant::now();
    let mut n = 0;
    let code = loop {
        n += 1;
        match first_exchange(relay.addr, &ca, &format!("001565000f{n:02x}"), &north_credential).await {
            Ok(_) => {
                assert!(
                    revoked.elapsed() < Duration::from_secs(10),
                    "still welcomed {:?} after the revoke",
                    revoked.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(code) => break code,
        }
    };
    assert_eq!(code, Some(u64::from(close_code::BAD_CREDENTIAL)), "refused as an unknown relay");
    println!("the revoked relay was refused {:?} after the revoke, at its {n}th device", revoked.elapsed());
    // The other relay's grant is untouched.
    assert!(first_exchange(shop_relay.addr, &ca, "001565000e05", &north_credential).await.is_ok());
    drop((relay, shop_relay, north_device));
}

/// The relay link's header for `kind`.
fn link_header(credential: &str, kind: LinkRequestKind) -> Vec<u8> {
    LinkRequest { credential: credential.into(), kind }.encode().unwrap()
}

/// A frames request: the header and the frames as its body.
fn link_frames(credential: &str, frames: &[Uplink]) -> Vec<u8> {
    let mut body = BytesMut::new();
    let mut encoder = FrameEncoder::default();
    for f in frames {
        encoder.encode(f, &mut body).unwrap();
    }
    let mut out = link_header(credential, LinkRequestKind::Frames { resend: false, body_len: body.len() as u64 });
    out.extend_from_slice(&body);
    out
}

/// One relay link request spoken by hand on a stream of its own: `bytes` written (a server that
/// refuses early stops reading them), the stream finished, the answer read to its end.
async fn link_request(conn: &quinn::Connection, bytes: &[u8]) -> LinkAnswer {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let _ = send.write_all(bytes).await;
    let _ = send.finish();
    let answer = tokio::time::timeout(Duration::from_secs(20), recv.read_to_end(1 << 20))
        .await
        .expect("an answer in 20 s")
        .expect("an answer");
    LinkAnswer::decode(&answer).expect("a well-formed answer")
}

fn refused_with(answer: &LinkAnswer) -> (u32, &str) {
    match answer {
        LinkAnswer::Refused { close_code, reason } => (*close_code, reason),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A QUIC connection to the server offering only the relay link's ALPN.
async fn relay_link(server: &TestServer) -> (quinn::Endpoint, quinn::Connection) {
    let endpoint = client_endpoint_with_alpn(&server.ca_cert(), fleetpulse_proto::RELAY_ALPN);
    let conn = endpoint.connect(server.quic_addr, "localhost").unwrap().await.expect("handshake");
    (endpoint, conn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_relay_link_request_is_refused_on_its_stream_and_the_connection_serves_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _, (_, credential), _) = server_with_grant(dir.path()).await;
    let (_endpoint, conn) = relay_link(&server).await;

    // A header of another version, one cut short, and one with an unknown kind.
    let answer = link_request(&conn, &[9, 1, 1, 0, b'x']).await;
    let (code, reason) = refused_with(&answer);
    assert_eq!((code, reason.contains("version 9")), (close_code::PROTOCOL_VIOLATION, true), "{reason}");
    let answer = link_request(&conn, &[1, 1, 5, 0, b'a']).await;
    let (code, reason) = refused_with(&answer);
    assert_eq!((code, reason.contains("ended")), (close_code::PROTOCOL_VIOLATION, true), "{reason}");
    let answer = link_request(&conn, &[1, 7, 1, 0, b'a']).await;
    assert_eq!(refused_with(&answer).0, close_code::PROTOCOL_VIOLATION);

    // A body above the limit (4 MiB): refused before a byte of it is read.
    let too_large = link_header(RELAY_CREDENTIAL, LinkRequestKind::Frames { resend: false, body_len: (4 << 20) + 1 });
    let answer = link_request(&conn, &too_large).await;
    let (code, reason) = refused_with(&answer);
    assert_eq!(code, close_code::FRAME_TOO_LARGE, "{reason}");

    // A body shorter than announced, and one of malformed frames.
    let mut short = link_header(RELAY_CREDENTIAL, LinkRequestKind::Frames { resend: false, body_len: 100 });
    short.extend_from_slice(&[0; 10]);
    let answer = link_request(&conn, &short).await;
    let (code, reason) = refused_with(&answer);
    assert_eq!((code, reason.contains("10 of the 100")), (close_code::PROTOCOL_VIOLATION, true), "{reason}");
    let mut garbage = link_header(RELAY_CREDENTIAL, LinkRequestKind::Frames { resend: false, body_len: 12 });
    garbage.extend_from_slice(&8u32.to_le_bytes());
    garbage.extend_from_slice(&[0xff; 8]);
    assert_eq!(refused_with(&link_request(&conn, &garbage).await).0, close_code::MALFORMED_FRAME);

    // A stream reset half-way through its header.
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(&[1, 1]).await.unwrap();
    send.reset(0u32.into()).unwrap();

    // The same connection carries a device's exchange: its Welcome and the durable ack.
    let hello = RawDevice::hello("001565000a01", &credential, 60);
    let answer = link_request(&conn, &link_frames(RELAY_CREDENTIAL, &[hello, resource(1)])).await;
    let LinkAnswer::Ok(frames) = answer else { panic!("expected the device's answer, got {answer:?}") };
    let mut decoder = FrameDecoder::default();
    decoder.push(&frames);
    assert!(matches!(decoder.next_frame::<Downlink>().unwrap(), Some(Downlink::Welcome(_))));
    assert!(matches!(decoder.next_frame::<Downlink>().unwrap(), Some(Downlink::Ack(a)) if a.seq == 1));
    // And the relay's long poll.
    let wakes = link_request(&conn, &link_header(RELAY_CREDENTIAL, LinkRequestKind::Wakes { after: None })).await;
    assert!(matches!(wakes, LinkAnswer::Wakes { .. }), "{wakes:?}");
    assert!(conn.close_reason().is_none(), "the relay's connection is still up");
    let api = Api::login(&server.api()).await;
    let malformed =
        common::metric(&api.metrics().await, "fleetpulse_ingest_relay_link_requests_total{reason=\"malformed\"}");
    assert!(malformed >= 4.0, "malformed link requests are counted: {malformed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_offering_the_relay_alpn_without_a_relay_credential_submits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _, (enterprise, credential), _) = server_with_grant(dir.path()).await;
    let (_endpoint, conn) = relay_link(&server).await;
    let hello = RawDevice::hello("001565000a02", &credential, 60);

    // A device speaking its own protocol on the relay ALPN: not a link request.
    let mut as_device = BytesMut::new();
    let mut encoder = FrameEncoder::default();
    for f in [hello.clone(), resource(1)] {
        encoder.encode(&f, &mut as_device).unwrap();
    }
    assert_eq!(refused_with(&link_request(&conn, &as_device).await).0, close_code::PROTOCOL_VIOLATION);
    // Well-formed requests with the device's own credential (or any other) as the relay's.
    for relay_credential in [credential.as_str(), "not-a-relay-credential-at-all"] {
        let answer = link_request(&conn, &link_frames(relay_credential, &[hello.clone(), resource(1)])).await;
        assert_eq!(refused_with(&answer).0, close_code::BAD_CREDENTIAL, "{answer:?}");
        let wakes = link_request(&conn, &link_header(relay_credential, LinkRequestKind::Wakes { after: None })).await;
        assert_eq!(refused_with(&wakes).0, close_code::BAD_CREDENTIAL);
    }

    // Nothing was registered or stored.
    let api = Api::login(&server.api()).await;
    let listed = api.get(&format!("/api/v1/devices?enterprise_id={enterprise}")).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 0, "{listed}");
    let stored = api.get(&format!("/api/v1/enterprises/{enterprise}/stored-sequences")).await;
    assert_eq!(stored["devices"].as_array().unwrap().len(), 0, "{stored}");
}

/// How a relay-link connection the server does not serve ended: its application close code
/// (the handshake may finish first, or the close may come with it).
async fn relay_link_closed_with(server: &TestServer) -> (quinn::Endpoint, Option<u64>) {
    let endpoint = client_endpoint_with_alpn(&server.ca_cert(), fleetpulse_proto::RELAY_ALPN);
    let error = match endpoint.connect(server.quic_addr, "localhost").unwrap().await {
        Ok(conn) => {
            // It serves nothing: a request on it fails, the connection closed under it.
            let (mut send, mut recv) = match conn.open_bi().await {
                Ok(streams) => streams,
                Err(_) => return (endpoint, closed_code(&conn).await),
            };
            let _ = send.write_all(&link_header(RELAY_CREDENTIAL, LinkRequestKind::Wakes { after: None })).await;
            let _ = send.finish();
            let answer = tokio::time::timeout(Duration::from_secs(20), recv.read_to_end(1 << 20))
                .await
                .expect("the stream ends within 20 s");
            assert!(answer.is_err(), "a connection over the cap answered: {answer:?}");
            return (endpoint, closed_code(&conn).await);
        }
        Err(error) => error,
    };
    let code = match error {
        quinn::ConnectionError::ApplicationClosed(c) => Some(c.error_code.into_inner()),
        _ => None,
    };
    (endpoint, code)
}

async fn closed_code(conn: &quinn::Connection) -> Option<u64> {
    match tokio::time::timeout(Duration::from_secs(20), conn.closed()).await.expect("closed within 20 s") {
        quinn::ConnectionError::ApplicationClosed(c) => Some(c.error_code.into_inner()),
        _ => None,
    }
}

/// A wakes request on `conn` is answered (the relay's long poll, as the relay itself starts).
async fn serves(conn: &quinn::Connection) -> bool {
    let wakes = link_request(conn, &link_header(RELAY_CREDENTIAL, LinkRequestKind::Wakes { after: None })).await;
    matches!(wakes, LinkAnswer::Wakes { .. })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_link_connections_beyond_the_cap_are_closed_before_they_are_served() {
    let dir = tempfile::tempdir().unwrap();
    // One relay link and one device at most: each is counted apart.
    let caps = "max_relay_connections = 1\nmax_connections = 1\n";
    let (server, _, _, device_credential) = server_with_grant_and(dir.path(), caps).await;
    let api = Api::login(&server.api()).await;

    let (_first_endpoint, first) = relay_link(&server).await;
    assert!(serves(&first).await, "the first relay connection serves");

    // A second one, over the cap: closed with the code that says why, serving nothing.
    let (_second_endpoint, code) = relay_link_closed_with(&server).await;
    assert_eq!(code, Some(u64::from(close_code::TOO_MANY_CONNECTIONS)));
    let metrics = api.metrics().await;
    let refused =
        common::metric(&metrics, "fleetpulse_ingest_connection_errors_total{reason=\"too_many_relay_connections\"}");
    assert_eq!(refused, 1.0, "the refusal is counted");
    // A relay link takes none of the devices' connections: the one a device may have is free.
    let mut device = RawDevice::connect(&server).await;
    device.send(&[RawDevice::hello("001565000c01", &device_credential, 60)]).await;
    assert!(matches!(device.next().await, Some(Downlink::Welcome(_))));

    // The first is untouched.
    assert!(serves(&first).await, "the first relay connection still serves");
    assert!(first.close_reason().is_none());

    // Once the first is gone (its session ended, so no connection is open: a session gives its
    // slot back before it stops counting as open), a new one is served.
    device.conn.close(0u32.into(), b"done");
    first.close(0u32.into(), b"done");
    let api = &api;
    let open = move || async move { common::metric(&api.metrics().await, "fleetpulse_ingest_connections_open") };
    common::until("open connections once the first relay is gone", Duration::from_secs(20), open, |n| *n == 0.0).await;
    let (_third_endpoint, third) = relay_link(&server).await;
    assert!(serves(&third).await, "a relay connection is served once a slot is free");
}
