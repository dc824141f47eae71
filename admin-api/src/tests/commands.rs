//! Commands and uploaded files through the API (issue 11): the catalog, validation, the pending
//! limit, cancelling, bulk commands by ids and by filter, other tenants' 404s, the operation
//! log, and listing and downloading a stored file.

use axum::http::{Method, StatusCode, header};
use fleetpulse_proto::{AccountId, CommandId, DeviceId, EnterpriseId, FileId, UnixMillis};
use fleetpulse_store::{CommandState, FILE_CHUNK, MAX_PENDING_PER_DEVICE, NewAccount, NewCommand, NewFile, Page, Role};
use serde_json::{Value, json};

use super::*;
use crate::hash_password;

/// A device of the enterprise with this MAC suffix.
async fn device(h: &Harness, e: EnterpriseId, n: u32) -> DeviceId {
    h.phone(e, &format!("0015650c{n:04x}"), if n.is_multiple_of(2) { "T54W" } else { "T46U" }).await
}

/// A queued reboot for the device, and a file of 1 KiB it uploaded in answer (for the tenancy
/// matrix as well).
pub(super) async fn command_and_file(
    h: &Harness,
    device: DeviceId,
    enterprise: EnterpriseId,
    by: AccountId,
) -> (CommandId, FileId) {
    let command = NewCommand {
        device_id: device,
        enterprise_id: enterprise,
        kind: "syslog".into(),
        args: "{}".into(),
        deadline: UnixMillis(i64::MAX / 2),
        issued_by: by,
    };
    let command = h.store.entities.enqueue_commands(vec![command], UnixMillis(1)).await.expect("enqueue");
    let command = command.into_iter().next().expect("one").expect("queued").id;
    let file = upload(h, device, enterprise, Some(command), &vec![7; 1024]).await;
    (command, file)
}

/// Stores `bytes` as the device's file `syslog.txt`.
async fn upload(
    h: &Harness,
    device: DeviceId,
    enterprise: EnterpriseId,
    command: Option<CommandId>,
    bytes: &[u8],
) -> FileId {
    let path = h._dir.path().join(format!("upload-{device}-{}", bytes.len()));
    std::fs::write(&path, bytes).expect("write upload");
    let new = NewFile {
        device_id: device,
        enterprise_id: enterprise,
        command_id: command,
        name: "syslog.txt".into(),
        size: bytes.len() as u64,
        sha256: [0x5a; 32],
        created_at: UnixMillis(1),
        expires_at: UnixMillis(i64::MAX / 2),
    };
    h.store.entities.store_file(new, &path).await.expect("store file").id
}

/// An enterprise with an admin (logged in) and the platform admin's token.
struct Fleet {
    h: Harness,
    platform: String,
    admin: String,
    admin_id: AccountId,
    enterprise: EnterpriseId,
}

async fn fleet() -> Fleet {
    let h = harness();
    let platform = h.admin_token().await;
    let channel = stored_channel(&h, "C", None).await;
    let enterprise = stored_enterprise(&h, "E", channel).await;
    let new = NewAccount {
        parent_id: None,
        permissions: None,
        email: "admin-e@example.com".into(),
        password_hash: hash_password("tenant-password").expect("hash"),
        role: Role::EnterpriseAdmin,
        channel_id: None,
        enterprise_id: Some(enterprise),
        must_change_password: false,
    };
    let admin_id = h.store.entities.create_account(new).await.expect("account").id;
    let admin =
        h.login("admin-e@example.com", "tenant-password").await.json()["token"].as_str().expect("token").to_owned();
    Fleet { h, platform, admin, admin_id, enterprise }
}

fn post(h: &Harness, uri: &str, token: &str, body: Value) -> impl std::future::Future<Output = Reply> {
    h.call(Method::POST, uri, Some(token), Some(body))
}

#[tokio::test]
async fn the_catalog_lists_every_kind_with_its_arguments() {
    let f = fleet().await;
    let reply = f.h.get("/api/v1/command-kinds", &f.admin).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let kinds = reply.json()["items"].as_array().expect("items").clone();
    assert_eq!(kinds.len(), fleetpulse_proto::commands::admin_command_kinds().count());
    let ping = kinds.iter().find(|k| k["name"] == "ping").expect("ping");
    let args = ping["args"].as_array().expect("args");
    let target = args.iter().find(|a| a["name"] == "target").expect("target");
    assert_eq!((&target["type"], &target["required"]), (&json!("host"), &json!(true)));
    let count = args.iter().find(|a| a["name"] == "count").expect("count");
    assert_eq!((&count["type"], &count["default"], &count["max"]), (&json!("integer"), &json!(4), &json!(20)));
    assert!(kinds.iter().any(|k| k["file"].is_string()), "some kinds answer with a file");
}

#[tokio::test]
async fn a_command_is_validated_queued_and_shown() {
    let f = fleet().await;
    let d = device(&f.h, f.enterprise, 1).await;
    let uri = format!("/api/v1/devices/{d}/commands");
    let refused = |body: Value, needle: &'static str| {
        let (h, uri, token) = (&f.h, uri.clone(), f.admin.clone());
        async move {
            let reply = post(h, &uri, &token, body).await;
            reply.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
            let message = reply.json()["error"]["message"].as_str().unwrap_or_default().to_owned();
            assert!(message.contains(needle), "{message:?} lacks {needle:?}");
        }
    };
    refused(json!({"kind": "format_disk"}), "format_disk").await;
    refused(json!({"kind": "ping"}), "target").await;
    refused(json!({"kind": "ping", "args": {"target": "10.0.0.1", "count": 99}}), "count").await;
    refused(json!({"kind": "ping", "args": {"target": "10.0.0.1", "colour": 1}}), "colour").await;
    refused(json!({"kind": "reboot", "deadline_s": 5}), "deadline_s").await;
    refused(json!({"kind": "reboot", "deadline_s": 8 * 24 * 3600}), "deadline_s").await;
    refused(json!({"kind": "reboot", "when": "now"}), "when").await;
    assert!(f.h.store.entities.list_device_commands(d, Page::first(10)).await.unwrap().is_empty());

    let now = f.h.clock.now();
    let reply = post(&f.h, &uri, &f.admin, json!({"kind": "ping", "args": {"target": "10.0.0.1"}})).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["device_id"], d.0);
    assert_eq!(body["kind"], "ping");
    assert_eq!(body["args"], json!({"target": "10.0.0.1", "count": 4}), "defaults filled in");
    assert_eq!(body["state"], "queued");
    assert_eq!(body["attempts"], 0);
    assert_eq!(body["issued_by"], f.admin_id.0);
    assert_eq!(body["issued_at"], now.0);
    assert_eq!(body["deadline"], now.0 + 3_600_000, "one hour by default");
    assert_eq!(body["file_ids"], json!([]));
    for field in ["reason", "output", "sent_at", "accepted_at", "finished_at"] {
        assert!(body[field].is_null(), "{field}: {body}");
    }
    let id = body["id"].as_u64().expect("id");
    let stored = f.h.store.entities.command(CommandId(id)).await.unwrap().expect("stored");
    assert_eq!((stored.state, stored.device_id), (CommandState::Queued, d));
    let shown = f.h.get(&format!("/api/v1/commands/{id}"), &f.admin).await;
    assert_eq!(shown.status, StatusCode::OK);
    assert_eq!(shown.json()["args"], body["args"]);

    // A listing, newest first, in keyset pages.
    let second = post(&f.h, &uri, &f.admin, json!({"kind": "reboot", "deadline_s": 10})).await.json();
    assert_eq!(second["deadline"], now.0 + 10_000);
    let page = f.h.get(&format!("{uri}?limit=1"), &f.admin).await.json();
    assert_eq!(page["items"][0]["id"], second["id"]);
    let next = page["next_after"].as_u64().expect("more");
    let page = f.h.get(&format!("{uri}?limit=1&after={next}"), &f.admin).await.json();
    assert_eq!(page["items"][0]["id"], id);
    f.h.get(&format!("{uri}?limit=0"), &f.admin).await.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
}

#[tokio::test]
async fn the_pending_limit_answers_429() {
    let f = fleet().await;
    let d = device(&f.h, f.enterprise, 1).await;
    let filler: Vec<NewCommand> = (0..MAX_PENDING_PER_DEVICE)
        .map(|_| NewCommand {
            device_id: d,
            enterprise_id: f.enterprise,
            kind: "reboot".into(),
            args: "{}".into(),
            deadline: UnixMillis(i64::MAX / 2),
            issued_by: f.admin_id,
        })
        .collect();
    let queued = f.h.store.entities.enqueue_commands(filler, UnixMillis(1)).await.unwrap();
    assert!(queued.iter().all(Result::is_ok));
    let reply = post(&f.h, &format!("/api/v1/devices/{d}/commands"), &f.admin, json!({"kind": "reboot"})).await;
    reply.assert_error(StatusCode::TOO_MANY_REQUESTS, "limit_exceeded");
    assert!(reply.text().contains("100 pending"), "{}", reply.text());
}

#[tokio::test]
async fn only_a_queued_command_is_cancelled() {
    let f = fleet().await;
    let d = device(&f.h, f.enterprise, 1).await;
    let uri = format!("/api/v1/devices/{d}/commands");
    let first = post(&f.h, &uri, &f.admin, json!({"kind": "reboot"})).await.json()["id"].as_u64().expect("id");
    let cancel = |id: u64| {
        let (h, token) = (&f.h, f.admin.clone());
        async move { h.call(Method::DELETE, &format!("/api/v1/commands/{id}"), Some(&token), None).await }
    };
    let cancelled = cancel(first).await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.text());
    assert_eq!(cancelled.json()["state"], "cancelled");
    assert!(cancelled.json()["reason"].as_str().is_some_and(|r| r.contains(&f.admin_id.0.to_string())));
    let again = cancel(first).await;
    again.assert_error(StatusCode::CONFLICT, "conflict");
    assert!(again.text().contains("cancelled"), "{}", again.text());

    // Sent to the device: too late.
    let second = post(&f.h, &uri, &f.admin, json!({"kind": "reboot"})).await.json()["id"].as_u64().expect("id");
    let sent = f.h.store.entities.claim_commands_to_send(d, f.h.clock.now(), 10).await.unwrap();
    assert_eq!(sent.len(), 1);
    let late = cancel(second).await;
    late.assert_error(StatusCode::CONFLICT, "conflict");
    assert!(late.text().contains("is sent"), "{}", late.text());
    assert_eq!(f.h.store.entities.command(CommandId(second)).await.unwrap().expect("kept").state, CommandState::Sent);
    cancel(987_654).await.assert_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn bulk_commands_by_ids_and_by_filter_answer_per_device() {
    let f = fleet().await;
    let devices = [device(&f.h, f.enterprise, 2).await, device(&f.h, f.enterprise, 4).await];
    let odd = device(&f.h, f.enterprise, 5).await;
    let other_channel = stored_channel(&f.h, "X", None).await;
    let other = stored_enterprise(&f.h, "X", other_channel).await;
    let foreign = device(&f.h, other, 6).await;
    // `odd` is at its pending limit.
    let filler: Vec<NewCommand> = (0..MAX_PENDING_PER_DEVICE)
        .map(|_| NewCommand {
            device_id: odd,
            enterprise_id: f.enterprise,
            kind: "reboot".into(),
            args: "{}".into(),
            deadline: UnixMillis(i64::MAX / 2),
            issued_by: f.admin_id,
        })
        .collect();
    f.h.store.entities.enqueue_commands(filler, UnixMillis(1)).await.unwrap();

    let ids = json!([devices[0], foreign, devices[1], 987_654, odd, devices[0]]);
    let reply = post(&f.h, "/api/v1/commands", &f.admin, json!({"kind": "reboot", "device_ids": ids})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["queued"], 2);
    assert_eq!(body["refused"], json!({"not_found": 2, "limit_exceeded": 1}));
    let results = body["results"].as_array().expect("results");
    let order: Vec<u64> = results.iter().map(|r| r["device_id"].as_u64().expect("id")).collect();
    assert_eq!(order, [devices[0].0, foreign.0, devices[1].0, 987_654, odd.0], "once each, in order");
    assert!(results[0]["command_id"].is_u64() && results[2]["command_id"].is_u64());
    assert_eq!(results[1]["error"]["code"], "not_found", "another tenant's device looks absent");
    assert_eq!(results[1]["error"]["message"], results[3]["error"]["message"]);
    assert_eq!(results[4]["error"]["code"], "limit_exceeded");
    assert!(f.h.store.entities.list_device_commands(foreign, Page::first(10)).await.unwrap().is_empty());

    // By filter: the list's parameters, within the caller's scope (the platform sees both
    // enterprises; the filter picks the T54W devices, the foreign one included).
    let filter = json!({"kind": "reboot", "filter": {"model": "T54W"}});
    let by_filter = post(&f.h, "/api/v1/commands", &f.platform, filter.clone()).await;
    assert_eq!(by_filter.status, StatusCode::OK, "{}", by_filter.text());
    assert_eq!(by_filter.json()["queued"], 3, "{}", by_filter.text());
    // The enterprise admin's scope holds only its own two T54W devices.
    let own = post(&f.h, "/api/v1/commands", &f.admin, filter).await.json();
    let chosen: Vec<u64> =
        own["results"].as_array().expect("results").iter().map(|r| r["device_id"].as_u64().unwrap_or(0)).collect();
    assert_eq!(chosen, [devices[0].0, devices[1].0]);
    let arrays = json!({"kind": "reboot", "filter": {"enterprise_id": [f.enterprise], "online": false}});
    assert_eq!(post(&f.h, "/api/v1/commands", &f.platform, arrays).await.json()["refused"]["limit_exceeded"], 1);

    for bad in [
        json!({"kind": "reboot"}),
        json!({"kind": "reboot", "device_ids": [1], "filter": {}}),
        json!({"kind": "reboot", "filter": {"limit": 5}}),
        json!({"kind": "reboot", "filter": {"colour": "red"}}),
        json!({"kind": "reboot", "filter": {"model": ["a"]}}),
        json!({"kind": "nope", "device_ids": [1]}),
    ] {
        post(&f.h, "/api/v1/commands", &f.admin, bad).await.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    }
}

#[tokio::test]
async fn another_tenants_commands_and_files_are_not_found() {
    let f = fleet().await;
    let other_channel = stored_channel(&f.h, "X", None).await;
    let other = stored_enterprise(&f.h, "X", other_channel).await;
    let foreign = device(&f.h, other, 6).await;
    let (command, file) = command_and_file(&f.h, foreign, other, f.admin_id).await;
    for uri in [
        format!("/api/v1/devices/{foreign}/commands"),
        format!("/api/v1/devices/{foreign}/files"),
        format!("/api/v1/commands/{command}"),
        format!("/api/v1/files/{file}"),
        format!("/api/v1/files/{file}/content"),
    ] {
        f.h.get(&uri, &f.admin).await.assert_error(StatusCode::NOT_FOUND, "not_found");
        assert_eq!(f.h.get(&uri, &f.platform).await.status, StatusCode::OK, "{uri}");
    }
    post(&f.h, &format!("/api/v1/devices/{foreign}/commands"), &f.admin, json!({"kind": "reboot"}))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    f.h.call(Method::DELETE, &format!("/api/v1/commands/{command}"), Some(&f.admin), None)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(f.h.store.entities.command(command).await.unwrap().expect("kept").state, CommandState::Queued);
}

#[tokio::test]
async fn a_stored_file_is_listed_and_downloaded_in_chunks() {
    let f = fleet().await;
    let d = device(&f.h, f.enterprise, 1).await;
    let (command, small) = command_and_file(&f.h, d, f.enterprise, f.admin_id).await;
    let bytes: Vec<u8> = (0..2 * FILE_CHUNK + 777).map(|i| (i % 253) as u8).collect();
    let big = upload(&f.h, d, f.enterprise, Some(command), &bytes).await;

    let listed = f.h.get(&format!("/api/v1/devices/{d}/files"), &f.admin).await;
    assert_eq!(item_ids(&listed), [big.0, small.0], "newest first");
    let first = f.h.get(&format!("/api/v1/devices/{d}/files?limit=1"), &f.admin).await.json();
    assert_eq!(first["next_after"], big.0);
    let meta = f.h.get(&format!("/api/v1/files/{big}"), &f.admin).await;
    assert_eq!(meta.status, StatusCode::OK);
    let meta = meta.json();
    assert_eq!(meta["size"], bytes.len());
    assert_eq!(meta["name"], "syslog.txt");
    assert_eq!(meta["sha256"], "5a".repeat(32));
    assert_eq!(meta["command_id"], command.0);
    let shown = f.h.get(&format!("/api/v1/commands/{command}"), &f.admin).await.json();
    assert_eq!(shown["file_ids"], json!([big.0, small.0]));

    let download = f.h.get(&format!("/api/v1/files/{big}/content"), &f.admin).await;
    assert_eq!(download.status, StatusCode::OK);
    let h = |name: header::HeaderName| download.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    assert_eq!(h(header::CONTENT_TYPE).as_deref(), Some("application/octet-stream"));
    assert_eq!(h(header::CONTENT_DISPOSITION).as_deref(), Some("attachment; filename=\"syslog.txt\""));
    assert_eq!(h(header::CONTENT_LENGTH), Some(bytes.len().to_string()));
    assert_eq!(h(header::X_CONTENT_TYPE_OPTIONS).as_deref(), Some("nosniff"));
    assert!(download.body == bytes, "the content, byte for byte");
    f.h.get("/api/v1/files/987654/content", &f.admin).await.assert_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn commands_and_downloads_are_in_the_operation_log() {
    let f = fleet().await;
    let d = device(&f.h, f.enterprise, 1).await;
    let (_, file) = command_and_file(&f.h, d, f.enterprise, f.admin_id).await;
    let issued = post(&f.h, &format!("/api/v1/devices/{d}/commands"), &f.admin, json!({"kind": "reboot"})).await;
    let id = issued.json()["id"].as_u64().expect("id");
    f.h.call(Method::DELETE, &format!("/api/v1/commands/{id}"), Some(&f.admin), None).await;
    post(&f.h, "/api/v1/commands", &f.admin, json!({"kind": "reboot", "device_ids": [d]})).await;
    f.h.get(&format!("/api/v1/files/{file}/content"), &f.admin).await;
    f.h.get(&format!("/api/v1/files/{file}"), &f.admin).await; // metadata: a read, no row
    f.h.get("/api/v1/files/987654/content", &f.admin).await; // a refused download: a row

    let rows = f.h.get("/api/v1/operation-logs", &f.platform).await.json();
    let summary: Vec<(String, String, u64)> = rows["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|r| r["account_email"] == "admin-e@example.com")
        .map(|r| {
            (
                r["operation"].as_str().unwrap_or_default().to_owned(),
                r["path"].as_str().unwrap_or_default().to_owned(),
                r["status"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    let row = |op: &str, path: String, status: u64| (op.to_owned(), path, status);
    assert_eq!(
        summary,
        [
            row("GET /api/v1/files/{id}/content", "/api/v1/files/987654/content".into(), 404),
            row("GET /api/v1/files/{id}/content", format!("/api/v1/files/{file}/content"), 200),
            row("POST /api/v1/commands", "/api/v1/commands".into(), 200),
            row("DELETE /api/v1/commands/{id}", format!("/api/v1/commands/{id}"), 200),
            row("POST /api/v1/devices/{id}/commands", format!("/api/v1/devices/{d}/commands"), 201),
            row("POST /api/v1/auth/login", "/api/v1/auth/login".into(), 200),
        ]
    );
}
