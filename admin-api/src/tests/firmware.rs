//! Firmware images and upgrades (PRV-4) through the router: streamed uploads with the size limit
//! on the declared length and on the stream, the checksum, list, show and delete (refused while
//! an upgrade is pending), one device's upgrade with its own signed link, model and
//! downloads-off refusals, and an upgrade task whose run gives each device of the model its own
//! link.

use axum::http::{Method, Request, StatusCode, header};
use fleetpulse_ingest::CommandSignal;
use fleetpulse_proto::{AccountId, DeviceId, EnterpriseId, FirmwareId, UnixMillis};
use fleetpulse_store::{FirmwareImage, NewFirmware, Page};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::*;
use crate::firmware::{FirmwareKey, FirmwareSettings, verify_token};
use crate::{Scheduler, SchedulerConfig};

/// Stores an image of `model` and `version` (10 bytes) for the enterprise, as `by`.
pub(super) async fn stored_image(
    h: &Harness,
    e: EnterpriseId,
    by: AccountId,
    model: &str,
    version: &str,
) -> FirmwareImage {
    let path = h._dir.path().join(format!("image-{model}-{version}"));
    std::fs::write(&path, b"0123456789").expect("write image");
    let new = NewFirmware {
        enterprise_id: e,
        model: model.into(),
        version: version.into(),
        name: "fw.bin".into(),
        size: 10,
        sha256: Sha256::digest(b"0123456789").into(),
        uploaded_by: by,
        uploaded_at: UnixMillis(1),
    };
    h.store.entities.store_firmware(new, &path).await.expect("image")
}

fn settings() -> FirmwareSettings {
    FirmwareSettings {
        max_upload_bytes: 4096,
        download_base: Some("https://fw.example.com:8444".into()),
        key: FirmwareKey::from_bytes([9; 32]),
        ..FirmwareSettings::default()
    }
}

async fn setup(config: ApiConfig) -> (Harness, String, EnterpriseId) {
    let h = harness_with(config, prometheus_client::registry::Registry::default());
    let token = h.admin_token().await;
    let channel = stored_channel(&h, "fw", None).await;
    let e = stored_enterprise(&h, "fw-e", channel).await;
    (h, token, e)
}

async fn device(h: &Harness, e: EnterpriseId, n: u8, model: &str) -> DeviceId {
    h.phone(e, &format!("0015650f00{n:02x}"), model).await
}

/// `POST /api/v1/firmware?<query>` with `bytes` as the body; `declared` sets `Content-Length`
/// (else the body is sent without one, as a stream).
async fn upload(h: &Harness, token: &str, query: &str, bytes: Vec<u8>, declared: Option<u64>) -> Reply {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(format!("/api/v1/firmware?{query}"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/octet-stream");
    if let Some(n) = declared {
        req = req.header(header::CONTENT_LENGTH, n);
    }
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = bytes.chunks(1000).map(|c| Ok(c.to_vec())).collect();
    let body = Body::from_stream(futures_util::stream::iter(chunks));
    h.send(req.body(body).expect("request")).await
}

#[tokio::test]
async fn uploads_are_streamed_limited_checksummed_listed_and_deleted() {
    let (h, token, e) = setup(ApiConfig { firmware: settings(), ..ApiConfig::default() }).await;
    let image: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    let sha = crate::secrets::hex(&Sha256::digest(&image));

    let q = |extra: &str| format!("enterprise_id={e}&model=T54W&version=96.86.0.100{extra}");
    let reply = upload(&h, &token, &q(""), image.clone(), None).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let stored = reply.json();
    assert_eq!(stored["sha256"], sha.as_str());
    assert_eq!(stored["size"], 3000);
    assert_eq!(stored["name"], "T54W-96.86.0.100.bin");
    assert_eq!((stored["model"].as_str(), stored["enterprise_id"].as_u64()), (Some("T54W"), Some(e.0)));
    let id = FirmwareId(stored["id"].as_u64().expect("id"));
    let mut content = Vec::new();
    for i in 0..3 {
        match h.store.entities.firmware_chunk(id, i).await.expect("chunk") {
            Some(c) => content.extend(c),
            None => break,
        }
    }
    assert_eq!(content, image, "stored byte for byte");

    // The expected checksum is checked; the limit holds on the declared length and on the stream.
    let reply = upload(&h, &token, &q(&format!("&sha256={sha}")), image.clone(), Some(3000)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    upload(&h, &token, &q(&format!("&sha256={}", "0".repeat(64))), image.clone(), None)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    upload(&h, &token, &q(""), vec![1; 4097], None)
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    upload(&h, &token, &q(""), vec![1; 10], Some(5000))
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    upload(&h, &token, &q(""), Vec::new(), None).await.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    for bad in ["model=T54%20W&version=1", "model=T54W&version=", "model=T54W&version=1&name=../x"] {
        upload(&h, &token, &format!("enterprise_id={e}&{bad}"), vec![1; 10], None)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    }
    upload(&h, &token, "model=T54W&version=1", vec![1; 10], None)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_request");

    let listed = h.get(&format!("/api/v1/firmware?enterprise_id={e}"), &token).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text());
    assert_eq!(item_ids(&listed).len(), 2, "the refused uploads stored nothing");
    assert_eq!(item_ids(&listed)[1], id.0, "newest first");
    let shown = h.get(&format!("/api/v1/firmware/{id}"), &token).await;
    assert_eq!(shown.json(), stored);
    let reply = h.call(Method::DELETE, &format!("/api/v1/firmware/{id}"), Some(&token), None).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text());
    h.get(&format!("/api/v1/firmware/{id}"), &token).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(h.store.entities.firmware_chunk(id, 0).await.expect("chunk"), None, "content gone");
}

#[tokio::test]
async fn a_device_is_upgraded_with_its_own_link_to_an_image_of_its_model() {
    let (h, token, e) = setup(ApiConfig { firmware: settings(), ..ApiConfig::default() }).await;
    let admin = h.store.entities.account_by_email(ADMIN_EMAIL).await.expect("read").expect("admin").id;
    let phone = device(&h, e, 1, "T54W").await;
    let image = stored_image(&h, e, admin, "T54W", "2.0").await;
    let other = stored_image(&h, e, admin, "T48U", "2.0").await;
    let upgrade = |d: DeviceId, image: FirmwareId| {
        let h = &h;
        let token = token.clone();
        async move {
            let uri = format!("/api/v1/devices/{d}/firmware-upgrade");
            h.call(Method::POST, &uri, Some(&token), Some(json!({ "image": image }))).await
        }
    };
    upgrade(phone, other.id).await.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    upgrade(phone, FirmwareId(999_999)).await.assert_error(StatusCode::NOT_FOUND, "not_found");

    let reply = upgrade(phone, image.id).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let command = reply.json();
    assert_eq!(command["kind"], "upgrade_firmware");
    let args: Value = command["args"].clone();
    let args: Value = if let Some(text) = args.as_str() { serde_json::from_str(text).expect("json") } else { args };
    let url = args["url"].as_str().expect("url");
    let prefix = format!("https://fw.example.com:8444/firmware/{}/{phone}?token=", image.id);
    let token_part = url.strip_prefix(&prefix).unwrap_or_else(|| panic!("{url}"));
    let key = settings().key;
    assert_eq!(verify_token(&key, image.id, phone, token_part, h.clock.clock().now()), Ok(()));
    assert!(verify_token(&key, image.id, DeviceId(phone.0 + 1), token_part, h.clock.clock().now()).is_err());
    assert_eq!((args["sha256"].as_str(), args["size"].as_u64()), (Some(image.sha256.as_str()), Some(10)));
    assert_eq!((args["version"].as_str(), args["image"].as_u64()), (Some("2.0"), Some(image.id.0)));

    // In use: the deletion names the upgrade; once it is cancelled the image may go.
    let reply = h.call(Method::DELETE, &format!("/api/v1/firmware/{}", image.id), Some(&token), None).await;
    reply.assert_error(StatusCode::CONFLICT, "conflict");
    let command_id = command["id"].as_u64().expect("id");
    assert!(reply.text().contains(&format!("command {command_id} (device {phone})")), "{}", reply.text());
    let reply = h.call(Method::DELETE, &format!("/api/v1/commands/{command_id}"), Some(&token), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let reply = h.call(Method::DELETE, &format!("/api/v1/firmware/{}", image.id), Some(&token), None).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text());

    // The internal kind stays closed to the command route.
    let reply = h
        .call(
            Method::POST,
            &format!("/api/v1/devices/{phone}/commands"),
            Some(&token),
            Some(json!({"kind": "upgrade_firmware", "args": args})),
        )
        .await;
    reply.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
}

#[tokio::test]
async fn upgrades_are_refused_while_downloads_are_off() {
    let (h, token, e) = setup(ApiConfig::default()).await;
    let admin = h.store.entities.account_by_email(ADMIN_EMAIL).await.expect("read").expect("admin").id;
    let phone = device(&h, e, 1, "T54W").await;
    let image = stored_image(&h, e, admin, "T54W", "2.0").await;
    let uri = format!("/api/v1/devices/{phone}/firmware-upgrade");
    let reply = h.call(Method::POST, &uri, Some(&token), Some(json!({ "image": image.id }))).await;
    reply.assert_error(StatusCode::CONFLICT, "conflict");
    assert!(reply.text().contains("https_listen"), "{}", reply.text());
}

#[tokio::test]
async fn an_upgrade_task_gives_each_device_of_the_model_its_own_link_at_run_time() {
    let (h, token, e) = setup(ApiConfig { firmware: settings(), ..ApiConfig::default() }).await;
    let admin = h.store.entities.account_by_email(ADMIN_EMAIL).await.expect("read").expect("admin").id;
    let (d1, d2, other) =
        (device(&h, e, 1, "T54W").await, device(&h, e, 2, "T54W").await, device(&h, e, 3, "T48U").await);
    let image = stored_image(&h, e, admin, "T54W", "2.0").await;
    let task = |args: Value| {
        json!({
            "enterprise_id": e, "kind": "upgrade_firmware", "args": args,
            "targets": {"filter": "online=false"},
            "schedule": {"kind": "once", "at": h.clock.clock().now().0},
        })
    };
    for bad in [json!({}), json!({"image": image.id, "url": "https://x"}), json!({"image": 999_999})] {
        let reply = h.call(Method::POST, "/api/v1/tasks", Some(&token), Some(task(bad.clone()))).await;
        assert!(matches!(reply.status, StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND), "{bad}: {}", reply.text());
    }
    let reply = h.call(Method::POST, "/api/v1/tasks", Some(&token), Some(task(json!({"image": image.id})))).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let task_id = reply.json()["id"].as_u64().expect("id");

    let config = SchedulerConfig { firmware: settings(), ..SchedulerConfig::default() };
    let scheduler = Scheduler::new(h.store.entities.clone(), CommandSignal::default(), h.clock.clock(), config);
    let pass = scheduler.tick().await.expect("tick");
    assert_eq!((pass.runs, pass.commands), (1, 2), "{pass:?}");
    let mut urls = Vec::new();
    for d in [d1, d2] {
        let commands = h.store.entities.list_device_commands(d, Page::first(10)).await.expect("commands");
        assert_eq!(commands.len(), 1);
        assert_eq!(commands[0].kind, "upgrade_firmware");
        let args: Value = serde_json::from_str(&commands[0].args).expect("json");
        let url = args["url"].as_str().expect("url").to_owned();
        assert!(url.contains(&format!("/firmware/{}/{d}?token=", image.id)), "{url}");
        urls.push(url);
    }
    assert_ne!(urls[0], urls[1]);
    assert!(h.store.entities.list_device_commands(other, Page::first(10)).await.expect("commands").is_empty());
    let runs = h.get(&format!("/api/v1/tasks/{task_id}/runs"), &token).await;
    let note = runs.json()["items"][0]["note"].as_str().unwrap_or_default().to_owned();
    assert!(note.contains("1 target devices are not a T54W"), "{}", runs.text());
}
