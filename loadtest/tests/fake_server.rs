//! Runs the load tester against an in-process fake server (a QUIC ingest speaking the device
//! protocol and the three management API routes it uses) to check the async shell end to end:
//! connecting, acknowledging, reconnecting and resending, rejection, draining and verification.
//!
//! With a mail port, the fake server also plays the alarm engine and mailer for injected alarms:
//! it emails (with lettre, as the real mailer does) every raise of the injected type and every
//! clear, so that the load tester's SMTP sink and latency measurement are exercised end to end.
//!
//! The fake server is deliberately simple; the real server's end-to-end tests live elsewhere.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use bytes::BytesMut;
use fleetpulse_loadtest::{LoadConfig, MessageMix, Report};
use fleetpulse_proto::close_code;
use fleetpulse_proto::wire::{Ack, AlarmAction, Downlink, Message, Uplink, Welcome};
use fleetpulse_proto::{ALPN, FrameDecoder, FrameEncoder};
use quinn::VarInt;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::Deserialize;
use serde_json::{Value, json};

const CREDENTIAL: &str = "the-right-credential";
const TOKEN: &str = "token-1";

/// How the fake ingest misbehaves.
#[derive(Debug, Clone, Copy, Default)]
struct Faults {
    /// Close each connection with SHUTTING_DOWN after applying this many frames on it; the last
    /// frame is applied but never acknowledged (the next `Welcome` covers it).
    drop_after: Option<u64>,
    /// Acknowledge but do not store every n-th persisted frame (a data-losing server).
    lose_every: Option<u64>,
    /// On a device's first connection, stop reading and acknowledging after applying this many
    /// frames, without closing (a hung or killed server).
    silent_after: Option<u64>,
}

#[derive(Debug, Default)]
struct FakeDevice {
    id: u64,
    mac: String,
    last_seq: u64,
    /// Stored rows per sequence number.
    rows: BTreeMap<u64, u64>,
    persisted_seen: u64,
    connections: u64,
    /// Description of the latest raise of the injected alarm type.
    last_raise: Option<String>,
}

#[derive(Debug, Default)]
struct Store {
    devices: HashMap<String, FakeDevice>,
    next_id: u64,
    /// Port of the SMTP relay (the load tester's sink) to email injected alarms to.
    mail_port: Option<u16>,
    /// Bodies of the alarm strategies created.
    strategies: Vec<Value>,
    /// Ids of the alarm strategies deleted.
    deleted_strategies: Vec<u64>,
    /// Emails handed to the relay, and those it refused or that failed.
    mails_sent: u64,
    mail_errors: u64,
}

/// The type the load tester injects.
const INJECTED_TYPE: u16 = 105;

struct FakeServer {
    quic_addr: SocketAddr,
    api: String,
    ca_pem: tempfile::NamedTempFile,
    store: Arc<Mutex<Store>>,
}

fn tls_material() -> (String, rustls::ServerConfig) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key")).expect("CA");
    let server_key = KeyPair::generate().expect("server key");
    let server_cert = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("server params")
        .signed_by(&server_key, &ca)
        .expect("server cert");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_no_client_auth()
        .with_single_cert(
            vec![server_cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        )
        .expect("server TLS config");
    tls.alpn_protocols = vec![ALPN.to_vec()];
    (ca.pem(), tls)
}

async fn start(faults: Faults) -> FakeServer {
    start_with_mail(faults, None).await
}

async fn start_with_mail(faults: Faults, mail_port: Option<u16>) -> FakeServer {
    let (ca_pem, tls) = tls_material();
    let ca_file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(ca_file.path(), ca_pem).expect("write CA");
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).expect("QUIC TLS");
    let endpoint = quinn::Endpoint::server(
        quinn::ServerConfig::with_crypto(Arc::new(crypto)),
        "127.0.0.1:0".parse().expect("address"),
    )
    .expect("server endpoint");
    let quic_addr = endpoint.local_addr().expect("local address");
    let store = Arc::new(Mutex::new(Store { mail_port, ..Store::default() }));
    let ingest_store = store.clone();
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let store = ingest_store.clone();
            tokio::spawn(async move {
                if let Ok(conn) = incoming.await {
                    serve_device(conn, store, faults).await;
                }
            });
        }
    });

    let app = Router::new()
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/enterprises", post(create_enterprise))
        .route("/api/v1/enterprises/{id}/stored-sequences", get(stored_sequences))
        .route("/api/v1/enterprises/{id}/alarm-strategies", post(create_strategy))
        .route("/api/v1/alarm-strategies/{id}", delete(delete_strategy))
        .with_state(store.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind API");
    let api = format!("http://{}", listener.local_addr().expect("API address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    FakeServer { quic_addr, api, ca_pem: ca_file, store }
}

async fn read_frame(recv: &mut quinn::RecvStream, decoder: &mut FrameDecoder) -> Option<Uplink> {
    loop {
        if let Some(frame) = decoder.next_frame::<Uplink>().ok()? {
            return Some(frame);
        }
        let chunk = recv.read_chunk(64 * 1024, true).await.ok()??;
        decoder.push(&chunk.bytes);
    }
}

async fn send(send: &mut quinn::SendStream, encoder: &mut FrameEncoder, msg: Downlink) -> bool {
    let mut out = BytesMut::new();
    encoder.encode(&msg, &mut out).expect("encode");
    send.write_all(&out).await.is_ok()
}

async fn serve_device(conn: quinn::Connection, store: Arc<Mutex<Store>>, faults: Faults) {
    let Ok((mut tx, mut rx)) = conn.accept_bi().await else { return };
    let (mut decoder, mut encoder) = (FrameDecoder::default(), FrameEncoder::default());
    let Some(Uplink::Hello(hello)) = read_frame(&mut rx, &mut decoder).await else {
        conn.close(VarInt::from_u32(close_code::PROTOCOL_VIOLATION), b"expected Hello");
        return;
    };
    if hello.credential != CREDENTIAL {
        conn.close(VarInt::from_u32(close_code::BAD_CREDENTIAL), b"bad credential");
        return;
    }
    let (device_id, last_seq, connection) = {
        let mut store = store.lock().expect("lock");
        store.next_id += 1;
        let next_id = store.next_id;
        let device = store.devices.entry(hello.mac.clone()).or_insert_with(|| FakeDevice {
            id: next_id,
            mac: hello.mac.clone(),
            ..FakeDevice::default()
        });
        device.connections += 1;
        (device.id, device.last_seq, device.connections)
    };
    let welcome = Downlink::Welcome(Welcome {
        device_id,
        last_seq,
        server_time_ms: 0,
        protocol_version: fleetpulse_proto::PROTOCOL_VERSION,
        max_file_bytes: 0,
    });
    if !send(&mut tx, &mut encoder, welcome).await {
        return;
    }
    let mut applied = 0;
    while let Some(frame) = read_frame(&mut rx, &mut decoder).await {
        let Uplink::Data(frame) = frame else {
            conn.close(VarInt::from_u32(close_code::PROTOCOL_VIOLATION), b"second Hello");
            return;
        };
        let mut mail = None;
        {
            let mut guard = store.lock().expect("lock");
            let store = &mut *guard;
            let mail_port = store.mail_port.filter(|_| !store.strategies.is_empty());
            let device = store.devices.get_mut(&hello.mac).expect("registered above");
            if frame.seq == device.last_seq + 1 {
                device.last_seq = frame.seq;
                if let Message::Alarm(alarm) = &frame.body
                    && alarm.code == INJECTED_TYPE
                    && let Some(port) = mail_port
                {
                    // Grouping off: every firing and every resolution is its own email.
                    let stage = match alarm.action {
                        AlarmAction::Raise => {
                            device.last_raise = Some(alarm.description.clone());
                            Some(("Firing", alarm.description.clone()))
                        }
                        AlarmAction::Clear => device.last_raise.take().map(|d| ("Resolved", d)),
                    };
                    mail = stage.map(|(stage, description)| (port, stage, description));
                }
                if !matches!(frame.body, Message::Heartbeat(_)) {
                    device.persisted_seen += 1;
                    let lose = faults.lose_every.is_some_and(|n| device.persisted_seen.is_multiple_of(n));
                    if !lose {
                        *device.rows.entry(frame.seq).or_default() += 1;
                    }
                }
            } else if frame.seq > device.last_seq + 1 {
                conn.close(VarInt::from_u32(close_code::PROTOCOL_VIOLATION), b"sequence gap");
                return;
            }
        }
        if let Some((port, stage, description)) = mail {
            tokio::spawn(send_mail(store.clone(), port, stage, description));
        }
        applied += 1;
        if connection == 1 && faults.silent_after.is_some_and(|n| applied >= n) {
            // Hold the connection open and say nothing more.
            conn.closed().await;
            return;
        }
        if faults.drop_after.is_some_and(|n| applied >= n) {
            conn.close(VarInt::from_u32(close_code::SHUTTING_DOWN), b"going away");
            return;
        }
        if !send(&mut tx, &mut encoder, Downlink::Ack(Ack { seq: frame.seq })).await {
            return;
        }
    }
}

/// Emails one notification through the relay on `port`, built with lettre like the real mailer's:
/// a folded non-ASCII subject and a multipart/alternative body, whose mostly non-ASCII text part
/// lettre encodes as base64 and whose long HTML line it encodes as quoted-printable with a soft
/// line break right after the token.
async fn send_mail(store: Arc<Mutex<Store>>, port: u16, stage: &'static str, description: String) {
    use lettre::message::{MultiPart, SinglePart};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

    let padding = "é".repeat(61);
    let text =
        format!("{stage} alarms for Acme — 1 alarm\n\n- Application crash ({padding})\n  Description: {description}\n");
    let html = format!("<html><body><h1>{stage} alarms</h1><p>Description: {description}</p></body></html>");
    let message = lettre::Message::builder()
        .from("fleetpulse <alarms@fleetpulse.test>".parse().expect("mailbox"))
        .to("loadtest@example.com".parse().expect("mailbox"))
        .subject(format!("[fleetpulse] {stage}: Application crash on device: {description} — Acme"))
        .multipart(MultiPart::alternative().singlepart(SinglePart::plain(text)).singlepart(SinglePart::html(html)))
        .expect("message");
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1").port(port).build();
    let sent = transport.send(message).await;
    let mut store = store.lock().expect("lock");
    match sent {
        Ok(_) => store.mails_sent += 1,
        Err(_) => store.mail_errors += 1,
    }
}

fn authorized(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {TOKEN}"))
}

async fn login(Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    if body["email"] == "admin@example.com" && body["password"] == "pw" {
        (StatusCode::OK, Json(json!({ "token": TOKEN, "expires_at": 0 })))
    } else {
        (StatusCode::UNAUTHORIZED, Json(json!({ "error": { "code": "unauthorized", "message": "wrong login" } })))
    }
}

async fn create_enterprise(headers: HeaderMap, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    if !authorized(&headers) {
        return (StatusCode::UNAUTHORIZED, Json(json!({ "error": { "code": "unauthorized", "message": "no" } })));
    }
    let name = body["name"].clone();
    (StatusCode::CREATED, Json(json!({ "id": 1, "name": name, "credential": CREDENTIAL, "created_at": 0 })))
}

async fn create_strategy(
    State(store): State<Arc<Mutex<Store>>>,
    headers: HeaderMap,
    Path(enterprise): Path<u64>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    if !authorized(&headers) {
        return (StatusCode::UNAUTHORIZED, Json(json!({ "error": { "code": "unauthorized", "message": "no" } })));
    }
    let mut store = store.lock().expect("lock");
    store.strategies.push(body.clone());
    let id = 40 + store.strategies.len() as u64;
    (
        StatusCode::CREATED,
        Json(json!({ "id": id, "enterprise_id": enterprise, "settings": body, "created_at": 0, "updated_at": 0 })),
    )
}

async fn delete_strategy(
    State(store): State<Arc<Mutex<Store>>>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> StatusCode {
    if !authorized(&headers) {
        return StatusCode::UNAUTHORIZED;
    }
    store.lock().expect("lock").deleted_strategies.push(id);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct PageQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

async fn stored_sequences(
    State(store): State<Arc<Mutex<Store>>>,
    headers: HeaderMap,
    Path(_enterprise): Path<u64>,
    Query(page): Query<PageQuery>,
) -> (StatusCode, Json<Value>) {
    if !authorized(&headers) {
        return (StatusCode::UNAUTHORIZED, Json(json!({ "error": { "code": "unauthorized", "message": "no" } })));
    }
    let store = store.lock().expect("lock");
    let mut devices: Vec<&FakeDevice> = store.devices.values().filter(|d| d.id > page.after.unwrap_or(0)).collect();
    devices.sort_by_key(|d| d.id);
    // A small page size so that the client has to page.
    let limit = page.limit.unwrap_or(1000).min(7);
    let next_after = (devices.len() > limit).then(|| devices[limit - 1].id);
    let entries: Vec<Value> = devices
        .into_iter()
        .take(limit)
        .map(|d| {
            let mut ranges: Vec<[u64; 2]> = Vec::new();
            for &seq in d.rows.keys() {
                match ranges.last_mut() {
                    Some(last) if last[1] + 1 == seq => last[1] = seq,
                    _ => ranges.push([seq, seq]),
                }
            }
            json!({ "device_id": d.id, "mac": d.mac, "serial": null, "rows": d.rows.values().sum::<u64>(), "ranges": ranges })
        })
        .collect();
    (StatusCode::OK, Json(json!({ "devices": entries, "next_after": next_after })))
}

fn config(server: &FakeServer) -> LoadConfig {
    LoadConfig {
        quic_addr: server.quic_addr,
        api: server.api.clone(),
        admin_email: "admin@example.com".into(),
        admin_password: "pw".into(),
        ca_cert: server.ca_pem.path().to_path_buf(),
        devices: 20,
        duration: Duration::from_secs(2),
        rate_per_device: 20.0,
        heartbeat_interval_s: 5,
        connect_rate: 0,
        drain_timeout: Duration::from_secs(10),
        ..LoadConfig::default()
    }
}

fn stored_rows(server: &FakeServer) -> u64 {
    server.store.lock().expect("lock").devices.values().flat_map(|d| d.rows.values()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_server_stores_everything_acknowledged() {
    let server = start(Faults::default()).await;
    let report_file = tempfile::NamedTempFile::new().expect("temp file");
    let cfg = LoadConfig {
        bad_credential_devices: 3,
        burst: 2,
        mix: MessageMix { heartbeat: 0.5, ..MessageMix::default() },
        report: Some(report_file.path().to_path_buf()),
        ..config(&server)
    };
    let report = fleetpulse_loadtest::run(cfg).await.expect("the run succeeds");
    assert!(report.passed(), "{report:#?}");
    assert!(report.drained, "{report:#?}");
    assert_eq!(report.connections.established, 20, "{report:#?}");
    assert_eq!(report.connections.rejected_connections, 3, "{report:#?}");
    assert_eq!((report.connections.reconnects, report.errors), (0, 0), "{report:#?}");
    assert_eq!(report.sent, report.acked, "{report:#?}");
    // About 20 devices x 20 frames/s x 2 s, less the connection time.
    assert!(report.sent > 400, "{report:#?}");
    assert!(report.verified.stored > 0 && report.verified.stored < report.acked, "heartbeats are not stored");
    assert_eq!(report.verified.stored, stored_rows(&server));
    assert!(report.ack_latency_us.max > 0 && report.connections.setup_latency_us.p50 > 0);
    assert!(report.rate_msgs_per_s > 0.0 && report.connections.setup_rate_per_s > 0.0);
    let written: Report = serde_json::from_slice(&std::fs::read(report_file.path()).expect("report file"))
        .expect("the report file is a report");
    // Floats may differ in the last digit after a JSON round trip; the counts must not.
    assert_eq!((written.sent, written.acked, written.verified), (report.sent, report.acked, report.verified));
    assert!((written.rate_msgs_per_s - report.rate_msgs_per_s).abs() < 1e-6);
    assert!(report.alarm_email.is_none() && written.alarm_email.is_none(), "no SMTP sink, no section");
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_alarms_are_emailed_to_the_sink_and_measured() {
    let port = free_port();
    let server = start_with_mail(Faults::default(), Some(port)).await;
    let cfg = LoadConfig {
        devices: 4,
        rate_per_device: 5.0,
        // 2 raises per second and device: a raise, its clear 250 ms later, the next raise ...
        alarm_rate: 8.0,
        smtp_sink: Some(format!("127.0.0.1:{port}").parse().expect("address")),
        alarm_receiver: "ops@example.org".into(),
        alarm_drain_timeout: Duration::from_secs(20),
        ..config(&server)
    };
    let report = fleetpulse_loadtest::run(cfg).await.expect("the run succeeds");
    assert!(report.passed() && report.drained, "{report:#?}");
    let alarms = report.alarm_email.expect("an alarm_email section");
    assert!(alarms.injected >= 8, "{report:#?}");
    assert_eq!((alarms.emailed, alarms.missing, alarms.untracked), (alarms.injected, 0, 0), "{alarms:#?}");
    let l = alarms.latency_us;
    assert!(l.p50 > 0 && l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max, "{l:?}");
    assert!(l.max < 10_000_000, "{l:?}");
    let store = server.store.lock().expect("lock");
    assert_eq!(store.mail_errors, 0);
    // Firing and resolved emails alike reached the sink; the resolved ones were not counted twice.
    assert_eq!(alarms.emails, store.mails_sent, "{alarms:#?}");
    assert!(alarms.emails > alarms.injected, "{alarms:#?}");
    assert_eq!(store.strategies.len(), 1);
    let strategy = &store.strategies[0];
    assert_eq!(strategy["alarm_types"], json!([105]));
    assert_eq!(strategy["receivers"], json!(["ops@example.org"]));
    assert_eq!((strategy["enabled"].clone(), strategy["group_wait_ms"].clone()), (json!(true), json!(0)));
    assert!(strategy["repeat_interval_ms"].as_u64().expect("a number") >= 3_600_000);
    assert_eq!(store.deleted_strategies, [41], "the run removes its strategy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_sink_port_fails_the_run_before_it_starts() {
    let server = start_with_mail(Faults::default(), None).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let cfg = LoadConfig { alarm_rate: 1.0, smtp_sink: Some(taken.local_addr().expect("address")), ..config(&server) };
    let error = fleetpulse_loadtest::run(cfg).await.expect_err("the sink cannot bind");
    assert!(format!("{error:#}").contains("SMTP sink"), "{error:#}");
    assert!(server.store.lock().expect("lock").devices.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_are_resumed_without_loss_or_duplicates() {
    let server = start(Faults { drop_after: Some(13), ..Faults::default() }).await;
    // Bursts of 4: the frames after the 13th of a connection are in flight when it drops.
    let cfg = LoadConfig { burst: 4, rate_per_device: 40.0, ..config(&server) };
    let report = fleetpulse_loadtest::run(cfg).await.expect("the run succeeds");
    assert!(report.passed(), "{report:#?}");
    assert!(report.drained, "{report:#?}");
    assert!(report.connections.reconnects >= 20, "{report:#?}");
    assert!(report.resent > 0, "{report:#?}");
    assert_eq!(report.sent, report.acked, "{report:#?}");
    assert_eq!(report.verified.stored, stored_rows(&server));
    // Frames waiting out a reconnect (at least 50 ms of backoff) count from their intended time.
    assert!(report.ack_latency_us.max >= 50_000, "{report:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_catches_a_server_that_loses_acknowledged_frames() {
    let server = start(Faults { lose_every: Some(10), ..Faults::default() }).await;
    let cfg = LoadConfig {
        devices: 5,
        duration: Duration::from_secs(1),
        credential: Some((1, CREDENTIAL.to_owned())),
        ..config(&server)
    };
    let report = fleetpulse_loadtest::run(cfg).await.expect("the run succeeds");
    assert!(!report.passed());
    assert!(report.verified.missing > 0, "{report:#?}");
    assert_eq!(report.verified.duplicated, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_admin_password_fails_the_run() {
    let server = start(Faults::default()).await;
    let cfg = LoadConfig { admin_password: "nope".into(), ..config(&server) };
    let error = fleetpulse_loadtest::run(cfg).await.expect_err("login fails");
    assert!(format!("{error:#}").contains("wrong login"), "{error:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_is_left_and_the_frames_resent_elsewhere() {
    let server = start(Faults { silent_after: Some(5), ..Faults::default() }).await;
    let cfg =
        LoadConfig { devices: 5, rate_per_device: 10.0, drain_timeout: Duration::from_secs(30), ..config(&server) };
    let report = fleetpulse_loadtest::run(cfg).await.expect("the run succeeds");
    assert!(report.passed(), "{report:#?}");
    assert!(report.drained, "{report:#?}");
    assert_eq!(report.connections.reconnects, 5, "{report:#?}");
    assert!(report.resent > 0, "{report:#?}");
    assert_eq!(report.sent, report.acked, "{report:#?}");
    // The frames held by the silent connection waited for the 15 s acknowledgement timeout.
    assert!(report.ack_latency_us.max >= 15_000_000, "{report:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_until_stops_when_told_even_without_a_duration() {
    let server = start(Faults::default()).await;
    let cfg = LoadConfig { devices: 3, duration: Duration::MAX, ..config(&server) };
    let report = fleetpulse_loadtest::run_until(cfg, tokio::time::sleep(Duration::from_secs(1)))
        .await
        .expect("the run succeeds");
    assert!(report.passed(), "{report:#?}");
    assert!((0.9..5.0).contains(&report.duration_s), "{report:#?}");
    assert!(report.acked > 0 && report.sent == report.acked, "{report:#?}");
}
