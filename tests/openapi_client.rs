//! The served OpenAPI document, as an integrator meets it: the reference validator
//! (`openapi-spec-validator`) accepts it, and a client generated from it (`openapi-python-client`)
//! logs in, pages through a filtered device list, acknowledges an alarm, reads the operation log
//! and receives the documented error shape for 400/401/403/404/409/429 against the real binary.
//! The tools live in a venv under the target dir (`scripts/openapi-tools.sh`), the client is
//! generated once per document (cached by its hash).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::alarms::{acked, alarm, device};
use common::{ADMIN_EMAIL, ADMIN_PASSWORD, Api, TestServer};
use serde_json::Value;

const DEVICES: usize = 5;

fn tools() -> Command {
    let mut command = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/openapi-tools.sh"));
    // The venv lives beside the test binaries' scratch space, in the target dir.
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("openapi-venv");
    command.env("FLEETPULSE_OPENAPI_VENV", venv);
    command
}

fn run(command: &mut Command) -> String {
    let output = command.output().expect("run the OpenAPI tools");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The keys of a JSON object.
fn keys(value: &Value) -> BTreeSet<String> {
    value.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_client_works_against_the_real_binary() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), None, "");
    let api = Api::login(&server.api()).await;
    let (enterprise, credential) = api.enterprise("Client Co").await;
    let mut devices = Vec::new();
    for i in 0..DEVICES {
        devices.push(device(&server, &credential, &format!("00156500c0{i:02}")).await);
    }
    devices[0].send(&[alarm(1, 105, true, "segfault in the UI")]).await;
    acked(&mut devices[0], 1).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let alarms = api.get(&format!("/api/v1/alarms?enterprise_id={enterprise}")).await;
        let list = api.get(&format!("/api/v1/devices?enterprise_id={enterprise}&online=true")).await;
        if alarms["items"].as_array().is_some_and(|a| !a.is_empty()) && list["total"] == DEVICES {
            break;
        }
        assert!(Instant::now() < deadline, "alarm and devices not visible: {alarms} {list}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The served document, validated by the reference validator.
    let text = reqwest::get(format!("{}/api/v1/openapi.json", server.api())).await.unwrap().text().await.unwrap();
    let doc_path = dir.path().join("openapi.json");
    std::fs::write(&doc_path, &text).unwrap();
    let verdict = run(tools().arg("validate").arg(&doc_path));
    assert!(verdict.contains("OK"), "{verdict}");

    // The examples have the fields real answers have.
    let doc: Value = serde_json::from_str(&text).unwrap();
    let example = |path: &str, method: &str| {
        doc["paths"][path][method]["responses"]["200"]["content"]["application/json"]["example"].clone()
    };
    let login: Value = reqwest::Client::new()
        .post(format!("{}/api/v1/auth/login", server.api()))
        .json(&serde_json::json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(keys(&example("/api/v1/auth/login", "post")), keys(&login));
    let page = api.get(&format!("/api/v1/devices?enterprise_id={enterprise}&limit=1")).await;
    let page_example = example("/api/v1/devices", "get");
    assert_eq!(keys(&page_example), keys(&page));
    let real_item = keys(&page["items"][0]);
    assert!(keys(&page_example["items"][0]).is_subset(&real_item), "{page_example} vs {page}");

    // The generated client, driven by a Python script.
    let clients: PathBuf = Path::new(env!("CARGO_TARGET_TMPDIR")).join("openapi-client");
    let client_dir = run(tools().arg("client").arg(&doc_path).arg(&clients));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openapi/client_check.py");
    let out = run(tools()
        .arg("python")
        .arg(script)
        .arg(client_dir.trim())
        .arg(server.api())
        .arg(ADMIN_EMAIL)
        .arg(ADMIN_PASSWORD)
        .arg(enterprise.to_string())
        .arg(DEVICES.to_string()));
    for line in ["acknowledged alarm", "400 invalid_request", "401 unauthorized", "403 password_change_required"] {
        assert!(out.contains(line), "{line} missing in:\n{out}");
    }
    for line in ["404 not_found", "409 conflict", "429 limit_exceeded", "\nok\n"] {
        assert!(out.contains(line), "{line} missing in:\n{out}");
    }
    // The acknowledge the client made is the server's state.
    let alarms = api.get(&format!("/api/v1/alarms?enterprise_id={enterprise}")).await;
    assert_eq!(alarms["items"][0]["status"], "acknowledged");
    let ack_example = example("/api/v1/alarms/{id}/acknowledge", "post");
    assert!(keys(&ack_example).is_subset(&keys(&alarms["items"][0])), "{ack_example} vs {alarms}");
}
