//! HTTPS ingest (ING-10) through the real binary: durable acknowledgements (they survive a
//! kill -9), duplicates dropped, bad credentials, oversized bodies, malformed frames, the JSON
//! form over HTTP/2 with curl (as the documentation shows it).

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;

use bytes::BytesMut;
use common::{Api, RawDevice, TestServer, metric};
use fleetpulse_proto::wire::{AlarmAction, AlarmReport, Downlink, Heartbeat, Message, ResourceReport, Uplink};
use fleetpulse_proto::{FrameDecoder, FrameEncoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A free loopback TCP port (bound and released: the server binds it next).
fn free_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], fleetpulse_testkit::free_port()))
}

fn config(https: SocketAddr, extra: &str) -> String {
    format!("[ingest]\nhttps_listen = \"{https}\"\n{extra}")
}

/// One HTTPS/1.1 POST; answers the status and the body.
async fn post(addr: SocketAddr, ca: &Path, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Vec<u8>) {
    let tls = fleetpulse_loadtest::download::client_config(ca).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut stream = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.unwrap();
    let mut request = format!("POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(request.as_bytes()).await.unwrap();
    // A refused body may be answered (and the connection closed) before it is all written.
    let _ = stream.write_all(body).await;
    let mut all = Vec::new();
    let _ = stream.read_to_end(&mut all).await;
    let end = all.windows(4).position(|w| w == b"\r\n\r\n").expect("a response header") + 4;
    let head = String::from_utf8_lossy(&all[..end]).into_owned();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status");
    (status, all[end..].to_vec())
}

fn encode(frames: &[Uplink]) -> Vec<u8> {
    let mut encoder = FrameEncoder::default();
    let mut out = BytesMut::new();
    for f in frames {
        encoder.encode(f, &mut out).unwrap();
    }
    out.to_vec()
}

fn decode(body: &[u8]) -> Vec<Downlink> {
    let mut decoder = FrameDecoder::default();
    decoder.push(body);
    let mut out = Vec::new();
    while let Some(d) = decoder.next_frame::<Downlink>().expect("server frames are valid") {
        out.push(d);
    }
    out
}

async fn post_frames(server: &TestServer, https: SocketAddr, frames: &[Uplink]) -> (u16, Vec<u8>) {
    let headers = [("Content-Type", "application/octet-stream")];
    post(https, &server.ca_cert(), "/ingest/v1/frames", &headers, &encode(frames)).await
}

fn alarm(seq: u64, description: &str) -> Uplink {
    RawDevice::data(
        seq,
        Message::Alarm(AlarmReport {
            code: 102,
            action: AlarmAction::Raise,
            description: description.into(),
            log: None,
        }),
    )
}

fn resource(seq: u64) -> Uplink {
    RawDevice::data(
        seq,
        Message::ResourceReport(ResourceReport {
            cpu_centi_pct: 120,
            mem_used_bytes: 1 << 20,
            mem_total_bytes: 1 << 30,
        }),
    )
}

/// (welcome.last_seq, ack) of a frames-form answer.
fn welcome_and_ack(body: &[u8]) -> (u64, Option<u64>) {
    let frames = decode(body);
    let Some(Downlink::Welcome(w)) = frames.first() else { panic!("Welcome first: {frames:?}") };
    let ack = frames.iter().find_map(|f| if let Downlink::Ack(a) = f { Some(a.seq) } else { None });
    (w.last_seq, ack)
}

async fn stored(api: &Api, enterprise: u64) -> serde_json::Value {
    api.get(&format!("/api/v1/enterprises/{enterprise}/stored-sequences")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_ack_is_durable_and_a_resent_frame_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let https = free_port();
    let mut server = TestServer::start(dir.path(), None, &config(https, ""));
    let api = Api::login(&server.api()).await;
    let (enterprise, credential) = api.enterprise("https").await;
    let hello = RawDevice::hello("001565000a01", &credential, 60);

    let (status, body) = post_frames(
        &server,
        https,
        &[
            hello.clone(),
            alarm(1, "one"),
            resource(2),
            RawDevice::data(3, Message::Heartbeat(Heartbeat { uptime_s: 3 })),
        ],
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(welcome_and_ack(&body), (0, Some(3)));

    // Acknowledged = durable: killed at once, the restarted server holds them.
    let ports = (server.quic_addr, server.http_addr);
    server.kill9();
    let server = TestServer::start(dir.path(), Some(ports), &config(https, ""));
    let (status, body) = post_frames(&server, https, std::slice::from_ref(&hello)).await;
    assert_eq!(status, 200);
    assert_eq!(welcome_and_ack(&body), (3, None), "the mark survived the kill");

    // Resending 2 and 3 with a new 4: the old ones are dropped, the ack covers all.
    let (status, body) = post_frames(&server, https, &[hello, resource(2), alarm(3, "again?"), resource(4)]).await;
    assert_eq!(status, 200);
    assert_eq!(welcome_and_ack(&body), (3, Some(4)));
    let api = Api::login(&server.api()).await;
    let seqs = stored(&api, enterprise).await;
    let device = &seqs["devices"][0];
    assert_eq!(device["rows"], 3, "seqs 1, 2 and 4 once each (3 is a heartbeat): {seqs}");
    assert_eq!(metric(&api.metrics().await, "fleetpulse_ingest_duplicate_frames_total"), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_oversized_bodies_and_malformed_frames_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let https = free_port();
    let server = TestServer::start(dir.path(), None, &config(https, "https_max_body_bytes = 4096\n"));
    let api = Api::login(&server.api()).await;
    let (enterprise, credential) = api.enterprise("https-bad").await;
    let ca = server.ca_cert();

    // 401: an unknown credential, in either form.
    let (status, _) = post_frames(&server, https, &[RawDevice::hello("001565000b01", "nope", 60), resource(1)]).await;
    assert_eq!(status, 401);
    let json = br#"{"device": {"mac": "001565000b01", "heartbeat_interval_s": 60}, "frames": []}"#;
    let (status, _) = post(https, &ca, "/ingest/v1/messages", &[("Authorization", "Bearer nope")], json).await;
    assert_eq!(status, 401);
    let (status, _) = post(https, &ca, "/ingest/v1/messages", &[], json).await;
    assert_eq!(status, 401, "no credential at all");

    // 413: above the limit, refused from Content-Length before the body is read.
    let big = vec![0u8; 5000];
    let (status, _) = post(https, &ca, "/ingest/v1/frames", &[], &big).await;
    assert_eq!(status, 413);

    // 400: a frame that fails validation after a good Hello; nothing of the request is applied.
    let hello = RawDevice::hello("001565000b02", &credential, 60);
    let mut body = encode(&[hello.clone(), resource(1)]);
    body.extend_from_slice(&8u32.to_le_bytes());
    body.extend_from_slice(&[0xff; 8]);
    let (status, answer) = post(https, &ca, "/ingest/v1/frames", &[], &body).await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&answer));
    // 400: data before Hello; a truncated frame.
    let (status, _) = post_frames(&server, https, &[resource(1)]).await;
    assert_eq!(status, 400);
    let truncated = encode(&[hello.clone(), resource(1)]);
    let (status, _) = post(https, &ca, "/ingest/v1/frames", &[], &truncated[..truncated.len() - 3]).await;
    assert_eq!(status, 400);
    // 404 and 405.
    assert_eq!(post(https, &ca, "/ingest/v2/frames", &[], b"").await.0, 404);

    // The device is fine afterwards, and none of the refused frames was stored.
    let (status, body) = post_frames(&server, https, &[hello]).await;
    assert_eq!(status, 200);
    assert_eq!(welcome_and_ack(&body), (0, None));
    let seqs = stored(&api, enterprise).await;
    assert_eq!(seqs["devices"][0]["rows"].as_u64().unwrap_or(0), 0, "{seqs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_form_over_http2_with_curl_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let https = free_port();
    let server = TestServer::start(dir.path(), None, &config(https, ""));
    let api = Api::login(&server.api()).await;
    let (enterprise, credential) = api.enterprise("https-json").await;
    let body = r#"{"device": {"mac": "001565000c01", "model": "T54W", "firmware": "96.86.0.100", "heartbeat_interval_s": 60},
      "frames": [
        {"seq": 1, "message": {"type": "alarm", "code": 102, "description": "register failed"}},
        {"seq": 2, "message": {"type": "resource", "cpu_centi_pct": 250, "mem_used_bytes": 1000, "mem_total_bytes": 4000}},
        {"seq": 3, "message": {"type": "alarm", "code": 60000, "description": "no such type"}}
      ]}"#;
    let url = format!("https://localhost:{}/ingest/v1/messages", https.port());
    let output = std::process::Command::new("curl")
        .args(["-sS", "--http2", "--resolve", &format!("localhost:{}:127.0.0.1", https.port())])
        .arg("--cacert")
        .arg(server.ca_cert())
        .args(["-H", &format!("Authorization: Bearer {credential}"), "-H", "Content-Type: application/json"])
        .args(["--data-binary", body, "-w", "\n%{http_version} %{http_code}", &url])
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (json, trailer) = text.rsplit_once('\n').expect("curl's trailer line");
    assert_eq!(trailer, "2 200", "{text} {}", String::from_utf8_lossy(&output.stderr));
    let answer: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(answer["ack"], 3, "{answer}");
    assert_eq!(answer["last_seq"], 0);
    assert_eq!(answer["rejected"][0]["seq"], 3, "an unknown alarm type is rejected, not stored: {answer}");
    let seqs = stored(&api, enterprise).await;
    assert_eq!(seqs["devices"][0]["rows"], 2, "{seqs}");
    let device_id = answer["device_id"].as_u64().unwrap();
    let alarms = api.get(&format!("/api/v1/alarms?device_id={device_id}")).await;
    assert_eq!(alarms["items"].as_array().map(Vec::len), Some(1), "{alarms}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_tester_over_https_through_a_kill_9_misses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let https = free_port();
    let server = TestServer::start(dir.path(), None, &config(https, ""));
    let ports = (server.quic_addr, server.http_addr);
    let mut cfg = server.load_config(50, std::time::Duration::from_secs(12));
    cfg.transport = fleetpulse_loadtest::Transport::Https(https);
    cfg.rate_per_device = 5.0;
    cfg.heartbeat_interval_s = 30;
    cfg.drain_timeout = std::time::Duration::from_secs(60);
    let run = tokio::spawn(fleetpulse_loadtest::run(cfg));

    // Killed with 9 under load and restarted on the same ports and data.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let mut server = server;
    server.kill9();
    let server = TestServer::start(dir.path(), Some(ports), &config(https, ""));
    let report = run.await.unwrap().expect("load test");
    println!("{}", serde_json::to_string(&report).unwrap());
    assert!(report.drained, "every frame acknowledged in the end");
    assert_eq!(report.acked, report.sent);
    assert!(report.acked >= 1_500, "acked {}", report.acked);
    assert!(report.verified.stored > 0);
    assert_eq!(report.verified.missing, 0, "acknowledged = durable");
    assert_eq!(report.verified.duplicated, 0, "resent frames are dropped");
    assert!(report.resent > 0 || report.connections.reconnects > 0, "the kill was felt: {report:?}");
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_only_device_picks_its_commands_up_with_its_next_request() {
    let dir = tempfile::tempdir().unwrap();
    let https = free_port();
    let server = TestServer::start(dir.path(), None, &config(https, ""));
    let api = Api::login(&server.api()).await;
    let (_, credential) = api.enterprise("https-commands").await;
    let ca = server.ca_cert();
    let bearer = format!("Bearer {credential}");
    let headers = [("Authorization", bearer.as_str()), ("Content-Type", "application/json")];
    let send = |frames: serde_json::Value| {
        let body = serde_json::json!({
            "device": {"mac": "001565000c01", "model": "T54W", "heartbeat_interval_s": 60},
            "frames": frames,
        });
        let (ca, headers) = (ca.clone(), headers);
        async move {
            let (status, answer) = post(https, &ca, "/ingest/v1/messages", &headers, body.to_string().as_bytes()).await;
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
            serde_json::from_slice::<serde_json::Value>(&answer).unwrap()
        }
    };
    let first = send(serde_json::json!([{"seq": 1, "message": {"type": "heartbeat", "uptime_s": 1}}])).await;
    assert_eq!(first["commands"], serde_json::json!([]), "nothing queued yet: {first}");
    let device = first["device_id"].as_u64().unwrap();

    let queued = api
        .post(
            &format!("/api/v1/devices/{device}/commands"),
            serde_json::json!({"kind": "ping", "args": {"target": "10.0.0.1"}}),
        )
        .await;
    let id = queued["id"].as_u64().unwrap();

    // The next request (a heartbeat) brings the command, its arguments as JSON.
    let second = send(serde_json::json!([{"seq": 2, "message": {"type": "heartbeat", "uptime_s": 2}}])).await;
    assert_eq!(second["ack"], 2);
    let commands = second["commands"].as_array().unwrap();
    assert_eq!(commands.len(), 1, "{second}");
    assert_eq!(commands[0]["command_id"], id);
    assert_eq!(commands[0]["kind"], "ping");
    assert_eq!(commands[0]["args"]["target"], "10.0.0.1");

    // Not sent twice while the device has it; its answers are recorded before their ack.
    let third = send(serde_json::json!([
        {"seq": 3, "message": {"type": "command_result", "command_id": id, "status": "accepted"}},
        {"seq": 4, "message": {"type": "command_result", "command_id": id, "status": "succeeded", "output": "pong"}},
    ]))
    .await;
    assert_eq!(third["ack"], 4);
    assert_eq!(third["commands"], serde_json::json!([]), "{third}");
    let done = api.get(&format!("/api/v1/commands/{id}")).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["output"], "pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_testers_https_devices_answer_their_commands() {
    let dir = tempfile::tempdir().unwrap();
    let https = free_port();
    let server = TestServer::start(dir.path(), None, &config(https, ""));
    let api = Api::login(&server.api()).await;
    let mut cfg = server.load_config(4, std::time::Duration::from_secs(10));
    cfg.transport = fleetpulse_loadtest::Transport::Https(https);
    cfg.rate_per_device = 2.0;
    cfg.heartbeat_interval_s = 30;
    let run = tokio::spawn(fleetpulse_loadtest::run(cfg));

    // Once the devices registered: a ping each, and one command that needs a file upload (which
    // the HTTPS transport cannot carry: answered failed, not left hanging).
    let devices = common::until(
        "the load tester's devices",
        std::time::Duration::from_secs(20),
        || api.get("/api/v1/devices?limit=100"),
        |d| d["items"].as_array().is_some_and(|i| i.len() == 4),
    )
    .await;
    let ids: Vec<u64> = devices["items"].as_array().unwrap().iter().map(|d| d["id"].as_u64().unwrap()).collect();
    let pings = api
        .post(
            "/api/v1/commands",
            serde_json::json!({"kind": "ping", "args": {"target": "10.0.0.1"}, "device_ids": ids}),
        )
        .await;
    assert_eq!(pings["queued"], 4, "{pings}");
    let export =
        api.post(&format!("/api/v1/devices/{}/commands", ids[0]), serde_json::json!({"kind": "export_config"})).await;
    let export = export["id"].as_u64().unwrap();

    let report = run.await.unwrap().expect("load test");
    println!("{}", serde_json::to_string(&report).unwrap());
    assert!(report.drained, "every frame acknowledged, every command answered");
    assert_eq!(report.verified.missing, 0);
    let c = &report.device_commands;
    assert_eq!((c.executed, c.succeeded, c.failed), (5, 4, 1), "at most once, each answered: {c:?}");
    assert!(c.received >= 5, "{c:?}");
    for id in &ids {
        let commands = api.get(&format!("/api/v1/devices/{id}/commands")).await;
        let ping = commands["items"].as_array().unwrap().iter().find(|c| c["kind"] == "ping").cloned();
        assert_eq!(ping.as_ref().map(|c| c["state"].clone()), Some(serde_json::json!("succeeded")), "{commands}");
    }
    let failed = api.get(&format!("/api/v1/commands/{export}")).await;
    assert_eq!(failed["state"], "failed", "{failed}");
    assert!(failed["reason"].as_str().unwrap_or_default().contains("HTTPS"), "{failed}");
}
