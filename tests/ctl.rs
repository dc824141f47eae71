//! `fleetpulse ctl` against the real binary: login keeps a 0600 session file; devices are listed
//! page by page with a filter (JSON and table); alarms are listed, acknowledged and cleared; a
//! strategy file is applied twice (created, then replaced); the operation log is exported. Bad
//! input each gives its plain sentence and documented exit code: a wrong URL (6), an invalid
//! session (3), a 429 (5), a 503 (6, from a stub that answers like a server shutting down: the
//! real binary answers 503 on API routes only in the moment it stops), an unknown id (4).

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::alarms::{acked, alarm, device};
use common::{ADMIN_EMAIL, ADMIN_PASSWORD, Api, TestServer};
use serde_json::Value;

const DEVICES: usize = 7;

fn ctl(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fleetpulse"))
        .arg("ctl")
        .args(args)
        .env("FLEETPULSE_CTL_CONFIG", config)
        .env("FLEETPULSE_PASSWORD", ADMIN_PASSWORD)
        .output()
        .expect("run fleetpulse ctl")
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn fails(out: &Output, code: i32, says: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert!(stderr.contains(says), "expected {says:?} in: {stderr}");
}

/// A one-shot HTTP server answering every request with 503 `not_ready`, like a server that is
/// stopping; returns its URL.
fn unavailable_stub() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let body = r#"{"error":{"code":"not_ready","message":"the service is not ready"}}"#;
            let _ = write!(
                stream,
                "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 5\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_lists_acknowledges_applies_exports_and_fails_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), None, "");
    let api = Api::login(&server.api()).await;
    let (enterprise, credential) = api.enterprise("Ctl Co").await;
    let mut devices = Vec::new();
    for i in 0..DEVICES {
        devices.push(device(&server, &credential, &format!("00156500d0{i:02}")).await);
    }
    devices[0].send(&[alarm(1, 105, true, "segfault in the UI")]).await;
    acked(&mut devices[0], 1).await;
    devices[1].send(&[alarm(1, 105, true, "segfault again")]).await;
    acked(&mut devices[1], 1).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let alarms = api.get(&format!("/api/v1/alarms?enterprise_id={enterprise}")).await;
        let online = api.get(&format!("/api/v1/devices?enterprise_id={enterprise}&online=true")).await;
        if alarms["items"].as_array().map_or(0, Vec::len) == 2 && online["total"] == DEVICES {
            break;
        }
        assert!(Instant::now() < deadline, "alarms and devices not visible: {alarms} {online}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let config = dir.path().join("ctl/ctl.toml");

    // Before login: exit 3.
    fails(&ctl(&config, &["devices", "list"]), 3, "not logged in");
    // Log in: the session file is the owner's only.
    ok(&ctl(&config, &["login", "--url", &server.api(), "--email", ADMIN_EMAIL]));
    let mode = std::fs::metadata(&config).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // Devices, filtered, three to a page: every one, progress on stderr.
    let filter = format!("enterprise_id={enterprise}");
    let out = ctl(&config, &["devices", "list", "--filter", &filter, "--output", "json", "--page-size", "3"]);
    let listed: Vec<Value> = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(listed.len(), DEVICES);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("devices: 3 of {DEVICES}")), "{stderr}");
    let table = ok(&ctl(&config, &["devices", "list", "--filter", &filter, "--filter", "online=true"]));
    assert_eq!(table.lines().count(), DEVICES + 1, "{table}");
    assert!(table.starts_with("ID") && table.contains("00156500d000"), "{table}");

    // Alarms: list, acknowledge, clear.
    let alarms: Vec<Value> =
        serde_json::from_str(&ok(&ctl(&config, &["alarms", "list", "--filter", &filter, "--output", "json"]))).unwrap();
    assert_eq!(alarms.len(), 2);
    let id = alarms[0]["id"].as_u64().unwrap().to_string();
    assert_eq!(ok(&ctl(&config, &["alarms", "ack", &id])).trim(), format!("alarm {id}: acknowledged"));
    fails(&ctl(&config, &["alarms", "ack", &id]), 5, "conflict");
    assert_eq!(ok(&ctl(&config, &["alarms", "clear", &id])).trim(), format!("alarm {id}: cleared"));
    fails(&ctl(&config, &["alarms", "ack", "999999999"]), 4, "not found");

    // A strategy file applied twice: created, then replaced in place.
    let file = dir.path().join("strategy.toml");
    let strategy = |wait: u64| {
        format!(
            "enterprise_id = {enterprise}\nname = \"night shift\"\nreceivers = [\"ops@example.test\"]\n\
             severities = [\"critical\"]\ngroup_wait_ms = {wait}\n"
        )
    };
    std::fs::write(&file, strategy(1000)).unwrap();
    let created = ok(&ctl(&config, &["strategies", "apply", "-f", file.to_str().unwrap()]));
    assert!(created.contains("created: night shift"), "{created}");
    std::fs::write(&file, strategy(2000)).unwrap();
    let replaced = ok(&ctl(&config, &["strategies", "apply", "-f", file.to_str().unwrap()]));
    assert!(replaced.contains("replaced: night shift"), "{replaced}");
    let stored = api.get(&format!("/api/v1/enterprises/{enterprise}/alarm-strategies")).await;
    let stored = stored["items"].as_array().unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["settings"]["group_wait_ms"], 2000);
    std::fs::write(&file, "name = \"no enterprise\"\n").unwrap();
    fails(&ctl(&config, &["strategies", "apply", "-f", file.to_str().unwrap()]), 2, "needs enterprise_id");

    // The operation log as CSV, with what ctl did in it.
    let csv = ok(&ctl(&config, &["oplog", "export"]));
    assert!(csv.lines().count() > 3 && csv.contains("acknowledge"), "{csv}");

    // 429: the device's pending commands are at their limit.
    let device_id = listed[0]["id"].as_u64().unwrap();
    for _ in 0..100 {
        let resp = api
            .client
            .post(format!("{}/api/v1/devices/{device_id}/commands", api.base))
            .bearer_auth(&api.token)
            .json(&serde_json::json!({"kind": "reboot"}))
            .send()
            .await
            .unwrap();
        if resp.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
            break;
        }
    }
    fails(
        &ctl(&config, &["devices", "command", &device_id.to_string(), "reboot"]),
        5,
        "limit reached (limit_exceeded)",
    );

    // An invalid or expired session: exit 3, and the way out.
    let saved = std::fs::read_to_string(&config).unwrap();
    let token = saved.lines().find_map(|l| l.strip_prefix("token = ")).unwrap().trim_matches('"').to_owned();
    std::fs::write(&config, saved.replace(&token, "expired-token")).unwrap();
    fails(&ctl(&config, &["devices", "list"]), 3, "run `fleetpulse ctl login` again");
    std::fs::write(&config, &saved).unwrap();

    // A wrong URL: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let wrong = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    fails(&ctl(&config, &["login", "--url", &wrong, "--email", ADMIN_EMAIL]), 6, "cannot reach the fleetpulse server");
    fails(&ctl(&config, &["login", "--url", "ftp://x", "--email", ADMIN_EMAIL]), 2, "must start with http://");
    // A failed login keeps the old session.
    assert_eq!(std::fs::read_to_string(&config).unwrap(), saved);
    // A wrong password: exit 3.
    let out = Command::new(env!("CARGO_BIN_EXE_fleetpulse"))
        .args(["ctl", "login", "--url", &server.api(), "--email", ADMIN_EMAIL])
        .env("FLEETPULSE_CTL_CONFIG", dir.path().join("other.toml"))
        .env("FLEETPULSE_PASSWORD", "wrong password")
        .output()
        .unwrap();
    fails(&out, 3, "unauthorized");

    // 503: the server says it is not ready.
    let stub = unavailable_stub();
    let stub_config = dir.path().join("stub.toml");
    std::fs::write(&stub_config, saved.replace(&server.api(), &stub)).unwrap();
    fails(&ctl(&stub_config, &["alarms", "list"]), 6, "is not ready (not_ready)");
    // Usage errors: clap's 2.
    fails(&ctl(&config, &["devices", "list", "--output", "yaml"]), 2, "invalid value");
    fails(&ctl(&config, &["devices", "list", "--filter", "online"]), 2, "must be KEY=VALUE");
}
