//! Runs the load tester against an in-process fake server (a QUIC ingest speaking the device
//! protocol and the three management API routes it uses) to check the async shell end to end:
//! connecting, acknowledging, reconnecting and resending, rejection, draining and verification.
//!
//! With a mail port, the fake server also plays the alarm engine and mailer for injected alarms:
//! it emails (with lettre, as the real mailer does) every raise of the injected type and every
//! clear, so that the load tester's SMTP sink and latency measurement are exercised end to end.
//!
//! With a command plan, the fake ingest sends every device a command on every connection and
//! records the answers and file uploads (checking each file's size and SHA-256); its API also has
//! the command routes the command mode uses, which send commands down the devices' sessions.
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
use fleetpulse_loadtest::{CommandIssue, CommandMode, LoadConfig, MessageMix, Report};
use fleetpulse_proto::close_code;
use fleetpulse_proto::wire::{
    Ack, AlarmAction, Command, CommandResult, CommandStatus, Downlink, FileHeader, FileRefused, FileStored, Message,
    Uplink, Welcome,
};
use fleetpulse_proto::{ALPN, FrameDecoder, FrameEncoder};
use quinn::VarInt;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

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
    /// Send every device this command on every connection.
    command: Option<CommandPlan>,
}

/// The command the fake ingest sends each device (id `COMMAND_BASE + device id`).
#[derive(Debug, Clone, Copy)]
struct CommandPlan {
    kind: &'static str,
    args: &'static str,
    /// On a device's first connection, close it (SHUTTING_DOWN, unacknowledged) as soon as the
    /// device accepted the command.
    drop_after_accepted: bool,
}

const COMMAND_BASE: u64 = 1000;
/// The largest file the fake ingest accepts.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// A file upload the fake ingest read.
#[derive(Debug, Clone)]
struct ReceivedFile {
    header: FileHeader,
    /// Bytes that followed the header.
    len: u64,
    /// Whether their SHA-256 is the header's.
    checksum_ok: bool,
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
    /// Command answers applied, in order.
    answers: Vec<CommandResult>,
    /// File uploads read.
    files: Vec<ReceivedFile>,
    /// Sends downlink messages on the device's current session.
    downlink: Option<mpsc::UnboundedSender<Downlink>>,
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
    /// Commands issued through the API: id → (device MAC, state).
    commands: HashMap<u64, (String, String)>,
    next_command_id: u64,
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
        .route("/api/v1/devices/{id}/commands", post(issue_command))
        .route("/api/v1/commands", post(issue_bulk_command))
        .route("/api/v1/commands/{id}", get(command_state))
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
    let (down_tx, mut down_rx) = mpsc::unbounded_channel();
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
        device.downlink = Some(down_tx.clone());
        (device.id, device.last_seq, device.connections)
    };
    let welcome = Downlink::Welcome(Welcome {
        device_id,
        last_seq,
        server_time_ms: 0,
        protocol_version: fleetpulse_proto::PROTOCOL_VERSION,
        max_file_bytes: MAX_FILE_BYTES,
    });
    if !send(&mut tx, &mut encoder, welcome).await {
        return;
    }
    tokio::spawn(read_uploads(conn.clone(), store.clone(), hello.mac.clone(), down_tx));
    if let Some(plan) = faults.command {
        let command = Downlink::Command(Command {
            command_id: COMMAND_BASE + device_id,
            kind: plan.kind.into(),
            args_json: plan.args.into(),
            deadline_ms: fleetpulse_proto::UnixMillis::now().0 + 60_000,
        });
        if !send(&mut tx, &mut encoder, command).await {
            return;
        }
    }
    let mut applied = 0;
    loop {
        let frame = tokio::select! {
            frame = read_frame(&mut rx, &mut decoder) => frame,
            Some(down) = down_rx.recv() => {
                if !send(&mut tx, &mut encoder, down).await {
                    return;
                }
                continue;
            }
        };
        let Some(frame) = frame else { return };
        let Uplink::Data(frame) = frame else {
            conn.close(VarInt::from_u32(close_code::PROTOCOL_VIOLATION), b"second Hello");
            return;
        };
        let mut mail = None;
        let mut accepted = false;
        {
            let mut guard = store.lock().expect("lock");
            let store = &mut *guard;
            let mail_port = store.mail_port.filter(|_| !store.strategies.is_empty());
            let device = store.devices.get_mut(&hello.mac).expect("registered above");
            if frame.seq == device.last_seq + 1 {
                device.last_seq = frame.seq;
                if let Message::CommandResult(result) = &frame.body {
                    accepted = result.status == CommandStatus::Accepted;
                    device.answers.push(result.clone());
                    let state = match result.status {
                        CommandStatus::Accepted => "accepted",
                        CommandStatus::Running => "running",
                        CommandStatus::Succeeded => "succeeded",
                        CommandStatus::Failed => "failed",
                    };
                    if let Some(command) = store.commands.get_mut(&result.command_id)
                        && command.1 != "succeeded"
                        && command.1 != "failed"
                    {
                        command.1 = state.to_owned();
                    }
                }
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
                if !matches!(frame.body, Message::Heartbeat(_) | Message::CommandResult(_)) {
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
        let drop_now = faults.command.is_some_and(|p| p.drop_after_accepted) && connection == 1 && accepted;
        if drop_now || faults.drop_after.is_some_and(|n| applied >= n) {
            conn.close(VarInt::from_u32(close_code::SHUTTING_DOWN), b"going away");
            return;
        }
        if !send(&mut tx, &mut encoder, Downlink::Ack(Ack { seq: frame.seq })).await {
            return;
        }
    }
}

/// Reads the device's file uploads: a length-prefixed header, then the content; answers on the
/// control stream (through `downlink`) whether it stored or refused the file.
async fn read_uploads(
    conn: quinn::Connection,
    store: Arc<Mutex<Store>>,
    mac: String,
    downlink: mpsc::UnboundedSender<Downlink>,
) {
    while let Ok(mut stream) = conn.accept_uni().await {
        let mut len = [0u8; 4];
        if stream.read_exact(&mut len).await.is_err() {
            continue;
        }
        let mut payload = vec![0u8; u32::from_le_bytes(len) as usize];
        if payload.len() > 4096 || stream.read_exact(&mut payload).await.is_err() {
            continue;
        }
        let mut decoder = FrameDecoder::default();
        decoder.push(&len);
        decoder.push(&payload);
        let Ok(Some(header)) = decoder.next_frame::<FileHeader>() else { continue };
        if header.size > MAX_FILE_BYTES {
            let _ = stream.stop(VarInt::from_u32(fleetpulse_proto::FILE_REFUSED));
            let _ = downlink.send(Downlink::FileRefused(FileRefused {
                command_id: header.command_id,
                name: header.name.clone(),
                reason: format!("{} bytes is above the limit of {MAX_FILE_BYTES}", header.size),
            }));
            continue;
        }
        let Ok(content) = stream.read_to_end(MAX_FILE_BYTES as usize + 1).await else { continue };
        let checksum_ok = ring::digest::digest(&ring::digest::SHA256, &content).as_ref() == header.sha256.as_slice();
        let file = ReceivedFile { header: header.clone(), len: content.len() as u64, checksum_ok };
        let answer = if checksum_ok && file.len == header.size {
            Downlink::FileStored(FileStored { command_id: header.command_id, name: header.name, file_id: 77 })
        } else {
            Downlink::FileRefused(FileRefused {
                command_id: header.command_id,
                name: header.name,
                reason: "bad checksum or size".into(),
            })
        };
        store.lock().expect("lock").devices.get_mut(&mac).expect("registered").files.push(file);
        let _ = downlink.send(answer);
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

/// Queues a command for the device with id `device_id` and sends it down its session at once.
fn queue_command(store: &mut Store, device_id: u64, body: &Value) -> Option<u64> {
    let device = store.devices.values().find(|d| d.id == device_id)?;
    let (mac, downlink) = (device.mac.clone(), device.downlink.clone()?);
    store.next_command_id += 1;
    let id = 5000 + store.next_command_id;
    store.commands.insert(id, (mac, "sent".to_owned()));
    let deadline_ms = fleetpulse_proto::UnixMillis::now().0 + 1000 * body["deadline_s"].as_i64().unwrap_or(60);
    let command = Command {
        command_id: id,
        kind: body["kind"].as_str().unwrap_or_default().to_owned(),
        args_json: body["args"].to_string(),
        deadline_ms,
    };
    downlink.send(Downlink::Command(command)).ok()?;
    Some(id)
}

async fn issue_command(
    State(store): State<Arc<Mutex<Store>>>,
    headers: HeaderMap,
    Path(device_id): Path<u64>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    if !authorized(&headers) {
        return (StatusCode::UNAUTHORIZED, Json(json!({ "error": { "code": "unauthorized", "message": "no" } })));
    }
    match queue_command(&mut store.lock().expect("lock"), device_id, &body) {
        Some(id) => (StatusCode::CREATED, Json(json!({ "id": id, "device_id": device_id, "state": "queued" }))),
        None => (StatusCode::NOT_FOUND, Json(json!({ "error": { "code": "not_found", "message": "no device" } }))),
    }
}

async fn issue_bulk_command(
    State(store): State<Arc<Mutex<Store>>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    if !authorized(&headers) {
        return (StatusCode::UNAUTHORIZED, Json(json!({ "error": { "code": "unauthorized", "message": "no" } })));
    }
    let mut store = store.lock().expect("lock");
    let results: Vec<Value> = body["device_ids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
        .map(|device_id| match queue_command(&mut store, device_id, &body) {
            Some(id) => json!({ "device_id": device_id, "command_id": id }),
            None => json!({ "device_id": device_id, "error": { "code": "not_found", "message": "no device" } }),
        })
        .collect();
    (StatusCode::OK, Json(json!({ "results": results })))
}

async fn command_state(
    State(store): State<Arc<Mutex<Store>>>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> (StatusCode, Json<Value>) {
    if !authorized(&headers) {
        return (StatusCode::UNAUTHORIZED, Json(json!({ "error": { "code": "unauthorized", "message": "no" } })));
    }
    match store.lock().expect("lock").commands.get(&id) {
        Some((_, state)) => (StatusCode::OK, Json(json!({ "id": id, "state": state }))),
        None => (StatusCode::NOT_FOUND, Json(json!({ "error": { "code": "not_found", "message": "no command" } }))),
    }
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

/// The answers every device gave, as `status` names in order, and its executions of the plan's
/// command (`COMMAND_BASE + id`).
fn answers_by_device(server: &FakeServer) -> Vec<(u64, Vec<CommandResult>)> {
    let store = server.store.lock().expect("lock");
    let mut devices: Vec<(u64, Vec<CommandResult>)> =
        store.devices.values().map(|d| (d.id, d.answers.clone())).collect();
    devices.sort_by_key(|(id, _)| *id);
    devices
}

fn statuses(answers: &[CommandResult]) -> Vec<CommandStatus> {
    answers.iter().map(|a| a.status).collect()
}

fn command_config(server: &FakeServer) -> LoadConfig {
    LoadConfig { devices: 5, rate_per_device: 2.0, duration: Duration::from_secs(1), ..config(server) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_accept_a_command_and_answer_it_with_its_output() {
    let plan = CommandPlan { kind: "ping", args: r#"{"target": "192.0.2.7", "count": 2}"#, drop_after_accepted: false };
    let server = start(Faults { command: Some(plan), ..Faults::default() }).await;
    let report = fleetpulse_loadtest::run(command_config(&server)).await.expect("the run succeeds");
    assert!(report.passed() && report.drained, "{report:#?}");
    let c = report.device_commands;
    assert_eq!((c.received, c.executed, c.repeated, c.succeeded, c.failed), (5, 5, 0, 5, 0), "{c:?}");
    for (id, answers) in answers_by_device(&server) {
        assert_eq!(statuses(&answers), [CommandStatus::Accepted, CommandStatus::Succeeded], "device {id}");
        assert!(answers.iter().all(|a| a.command_id == COMMAND_BASE + id));
        let output = &answers[1].output;
        assert!(output.starts_with("PING 192.0.2.7") && output.contains("2 packets transmitted"), "{output}");
        assert!(answers.iter().all(|a| a.reason.is_empty()));
    }
    // Answers are acknowledged frames, but not stored sequences.
    assert_eq!(report.sent, report.acked, "{report:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_rate_of_one_answers_failed_with_a_reason() {
    let plan = CommandPlan { kind: "reboot", args: "null", drop_after_accepted: false };
    let server = start(Faults { command: Some(plan), ..Faults::default() }).await;
    let cfg = LoadConfig { command_failure_rate: 1.0, ..command_config(&server) };
    let report = fleetpulse_loadtest::run(cfg).await.expect("the run succeeds");
    let c = report.device_commands;
    assert_eq!((c.executed, c.succeeded, c.failed), (5, 0, 5), "{c:?}");
    for (id, answers) in answers_by_device(&server) {
        assert_eq!(statuses(&answers), [CommandStatus::Accepted, CommandStatus::Failed], "device {id}");
        assert!(answers[1].reason.contains("simulated failure"), "{:?}", answers[1]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_kind_uploads_a_file_matching_its_header_before_answering() {
    let plan = CommandPlan { kind: "upload_syslog", args: "{}", drop_after_accepted: false };
    let server = start(Faults { command: Some(plan), ..Faults::default() }).await;
    let cfg = LoadConfig { file_bytes: 100_000, ..command_config(&server) };
    let report = fleetpulse_loadtest::run(cfg).await.expect("the run succeeds");
    let c = report.device_commands;
    assert_eq!((c.files_uploaded, c.files_stored, c.files_refused, c.succeeded), (5, 5, 0, 5), "{c:?}");
    let store = server.store.lock().expect("lock");
    for device in store.devices.values() {
        let [file] = device.files.as_slice() else { panic!("one file per device: {:?}", device.files) };
        assert_eq!((file.header.size, file.len), (100_000, 100_000));
        assert!(file.checksum_ok, "the SHA-256 in the header is the content's");
        assert_eq!((file.header.command_id, file.header.name.as_str()), (COMMAND_BASE + device.id, "syslog.txt"));
        assert_eq!(statuses(&device.answers), [CommandStatus::Accepted, CommandStatus::Succeeded]);
        assert!(device.answers[1].output.contains("stored as file 77"), "{:?}", device.answers[1]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_above_the_servers_limit_is_refused_and_the_command_fails() {
    let plan = CommandPlan { kind: "screenshot", args: "{}", drop_after_accepted: false };
    let server = start(Faults { command: Some(plan), ..Faults::default() }).await;
    let cfg = LoadConfig { file_bytes: MAX_FILE_BYTES + 1, ..command_config(&server) };
    let report = fleetpulse_loadtest::run(cfg).await.expect("the run succeeds");
    let c = report.device_commands;
    assert_eq!((c.files_refused, c.files_stored, c.failed), (5, 0, 5), "{c:?}");
    for (_, answers) in answers_by_device(&server) {
        assert_eq!(statuses(&answers), [CommandStatus::Accepted, CommandStatus::Failed]);
        assert!(answers[1].reason.starts_with("file refused: "), "{:?}", answers[1]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_resent_after_a_reconnect_is_answered_again_but_executed_once() {
    let plan = CommandPlan { kind: "reboot", args: "{}", drop_after_accepted: true };
    let server = start(Faults { command: Some(plan), ..Faults::default() }).await;
    let cfg = LoadConfig { command_delay: Duration::from_millis(300), ..command_config(&server) };
    let report = fleetpulse_loadtest::run(cfg).await.expect("the run succeeds");
    assert!(report.passed() && report.drained, "{report:#?}");
    let c = report.device_commands;
    assert_eq!(report.connections.reconnects, 5, "{report:#?}");
    assert_eq!((c.received, c.executed, c.repeated, c.succeeded), (10, 5, 5, 5), "{c:?}");
    for (id, answers) in answers_by_device(&server) {
        let statuses = statuses(&answers);
        // Accepted on the first connection; on the second, the last answer again (accepted, or
        // succeeded if the delay ended first) and the result: three answers of one execution.
        assert_eq!(statuses.len(), 3, "device {id}: {statuses:?}");
        assert_eq!(statuses.first(), Some(&CommandStatus::Accepted), "device {id}: {statuses:?}");
        assert_eq!(statuses.last(), Some(&CommandStatus::Succeeded), "device {id}: {statuses:?}");
        let outputs: std::collections::HashSet<&str> =
            answers.iter().filter(|a| a.status == CommandStatus::Succeeded).map(|a| a.output.as_str()).collect();
        assert_eq!(outputs.len(), 1, "a repeated answer is the same answer: {answers:?}");
    }
}

fn command_mode(issue: CommandIssue) -> CommandMode {
    CommandMode {
        issue,
        kind: "traceroute".into(),
        args: json!({ "target": "192.0.2.9" }),
        deadline: Duration::from_secs(10),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_mode_measures_commands_one_by_one() {
    let server = start(Faults::default()).await;
    let cfg = LoadConfig {
        command_mode: Some(command_mode(CommandIssue::OneByOne { count: 12 })),
        duration: Duration::from_millis(100),
        ..command_config(&server)
    };
    let report = fleetpulse_loadtest::run(cfg).await.expect("the run succeeds");
    let run = report.command_run.expect("a command_run section");
    assert_eq!((run.mode.as_str(), run.kind.as_str(), run.command_delay_ms), ("one_by_one", "traceroute", 50));
    assert_eq!((run.targets, run.issued, run.refused), (12, 12, 0), "{run:#?}");
    assert_eq!((run.succeeded, run.failed, run.unfinished), (12, 0, 0), "{run:#?}");
    assert_eq!(run.api_states, [("succeeded".to_owned(), 12)].into(), "{run:#?}");
    // The round trip includes the devices' 50 ms and ends after the delivery.
    let (d, r) = (run.delivery_us, run.round_trip_us);
    assert!(r.p50 >= 50_000 && d.max < r.max && d.p50 <= r.p50, "{run:#?}");
    assert!(r.p50 <= r.p90 && r.p90 <= r.p99 && r.p99 <= r.max, "{run:#?}");
    assert_eq!(report.device_commands.executed, 12);
    assert_eq!(server.store.lock().expect("lock").commands.len(), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_mode_sends_one_bulk_command_to_every_device() {
    let server = start(Faults::default()).await;
    let cfg = LoadConfig {
        command_mode: Some(command_mode(CommandIssue::Bulk)),
        command_failure_rate: 1.0,
        duration: Duration::from_millis(100),
        devices: 8,
        ..command_config(&server)
    };
    let report = fleetpulse_loadtest::run(cfg).await.expect("the run succeeds");
    let run = report.command_run.expect("a command_run section");
    assert_eq!((run.mode.as_str(), run.targets, run.issued, run.refused), ("bulk", 8, 8, 0), "{run:#?}");
    assert_eq!((run.succeeded, run.failed, run.unfinished), (0, 8, 0), "{run:#?}");
    let (delivered, stored) = (run.all_delivered_us.expect("all delivered"), run.all_stored_us.expect("all stored"));
    // Percentiles are histogram values with three significant digits, rounded up to their bucket
    // (at most 0.1 % above the value recorded); the times until all were delivered and stored
    // are exact.
    let p50 = run.round_trip_us.p50;
    assert!(delivered < stored && stored >= p50 - p50 / 1000, "{run:#?}");
    assert_eq!(run.api_states, [("failed".to_owned(), 8)].into(), "{run:#?}");
}
