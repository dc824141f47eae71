//! Firmware upgrades end to end (PRV-4): the real binary with its HTTPS download server, a
//! simulated phone on a real QUIC session (the load tester's device side), an image uploaded
//! through the API, the upgrade command, the device's real HTTPS download checked by size and
//! SHA-256, its result on the command and its new firmware in the device list after its next
//! `Hello`; and the download server's refusals and ranges over real TLS.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Api, TestServer, until};
use fleetpulse_admin_api::firmware::{FirmwareKey, sign_token};
use fleetpulse_loadtest::download::{self, Download, DownloadEvent};
use fleetpulse_proto::{DeviceId, FirmwareId, UnixMillis};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a wait may take.
const LIMIT: Duration = Duration::from_secs(60);

/// One raw HTTPS request with a `Range` header; answers the status line, the headers and the body.
async fn ranged_get(addr: std::net::SocketAddr, ca: &std::path::Path, target: &str, range: &str) -> (String, Vec<u8>) {
    let tls = download::client_config(ca).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut stream = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.unwrap();
    let request = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nRange: {range}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut all = Vec::new();
    let _ = stream.read_to_end(&mut all).await;
    let end = all.windows(4).position(|w| w == b"\r\n\r\n").expect("a header") + 4;
    (String::from_utf8_lossy(&all[..end]).into_owned(), all[end..].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_phone_downloads_checks_and_installs_an_uploaded_image() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), None, "[firmware]\nhttps_listen = \"127.0.0.1:0\"\n");
    let api = Api::login(&server.api()).await;
    let (status, enterprise) =
        api.call(reqwest::Method::POST, "/api/v1/enterprises", Some(json!({"name": "fw-e2e"}))).await;
    assert_eq!(status, 201, "{enterprise}");
    let e = enterprise["id"].as_u64().unwrap();
    let credential = enterprise["credential"].as_str().unwrap().to_owned();

    // One simulated phone on a real QUIC session.
    let mut config = server.load_config(1, Duration::from_secs(600));
    config.credential = Some((e, credential));
    config.rate_per_device = 0.5;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let fleet = tokio::spawn(fleetpulse_loadtest::run_until(config, async move {
        let _ = stopped.await;
    }));
    let devices_path = format!("/api/v1/devices?enterprise_id={e}");
    let (_, list) = until(
        "the phone connects",
        LIMIT,
        || api.call(reqwest::Method::GET, &devices_path, None),
        |(_, v): &(u16, Value)| v["items"].as_array().is_some_and(|a| a.len() == 1),
    )
    .await;
    let device = &list["items"][0];
    let (device_id, model) = (device["id"].as_u64().unwrap(), device["model"].as_str().unwrap().to_owned());
    let old_firmware = device["firmware"].as_str().unwrap().to_owned();

    // A 3 MiB image for its model.
    let image: Vec<u8> = (0..3 * 1024 * 1024 + 17).map(|i: u32| (i % 253) as u8).collect();
    let reply = api
        .client
        .post(format!("{}/api/v1/firmware?enterprise_id={e}&model={model}&version=99.1.0.7", server.api()))
        .bearer_auth(&api.token)
        .body(image.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status().as_u16(), 201);
    let stored: Value = reply.json().await.unwrap();
    let image_id = stored["id"].as_u64().unwrap();
    let sha: String =
        ring::digest::digest(&ring::digest::SHA256, &image).as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(stored["sha256"], sha.as_str());

    // Upgrade it; the device downloads over HTTPS, checks, answers and restarts.
    let (status, command) = api
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/devices/{device_id}/firmware-upgrade"),
            Some(json!({"image": image_id})),
        )
        .await;
    assert_eq!(status, 201, "{command}");
    let command_id = command["id"].as_u64().unwrap();
    assert!(command["args"]["url"].as_str().unwrap().contains(&format!("/firmware/{image_id}/{device_id}?token=")));
    let command_path = format!("/api/v1/commands/{command_id}");
    let (_, done) = until(
        "the upgrade finishes",
        LIMIT,
        || api.call(reqwest::Method::GET, &command_path, None),
        |(_, c): &(u16, Value)| matches!(c["state"].as_str(), Some("succeeded" | "failed")),
    )
    .await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["output"], "installed firmware 99.1.0.7\n", "{done}");
    assert_ne!(old_firmware, "99.1.0.7");
    let device_path = format!("/api/v1/devices/{device_id}");
    until(
        "the new firmware is reported",
        LIMIT,
        || api.call(reqwest::Method::GET, &device_path, None),
        |(_, d): &(u16, Value)| d["firmware"] == "99.1.0.7" || d["device"]["firmware"] == "99.1.0.7",
    )
    .await;
    // The image is in use no more: it may be deleted.
    let (status, _) = api.call(reqwest::Method::DELETE, &format!("/api/v1/firmware/{image_id}"), None).await;
    assert_eq!(status, 204);
    let _ = stop.send(());
    let report = fleet.await.unwrap().unwrap();
    assert_eq!(report.device_commands.firmware_upgrades, 1);
    assert_eq!(report.verified.missing, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_download_server_checks_tokens_and_serves_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), None, "[firmware]\nhttps_listen = \"127.0.0.1:0\"\n");
    let api = Api::login(&server.api()).await;
    let (_, enterprise) = api.call(reqwest::Method::POST, "/api/v1/enterprises", Some(json!({"name": "fw-dl"}))).await;
    let e = enterprise["id"].as_u64().unwrap();
    let (status, device) = api
        .call(
            reqwest::Method::POST,
            "/api/v1/devices",
            Some(json!({"enterprise_id": e, "mac": "001565aa0001", "model": "T54W"})),
        )
        .await;
    assert_eq!(status, 201, "{device}");
    let device_id = device["id"].as_u64().unwrap();
    let image: Vec<u8> = (0..(1 << 20) + 100).map(|i: u32| (i % 241) as u8).collect();
    let reply = api
        .client
        .post(format!("{}/api/v1/firmware?enterprise_id={e}&model=T54W&version=2", server.api()))
        .bearer_auth(&api.token)
        .body(image.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status().as_u16(), 201);
    let image_id = reply.json::<Value>().await.unwrap()["id"].as_u64().unwrap();
    let (status, command) = api
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/devices/{device_id}/firmware-upgrade"),
            Some(json!({"image": image_id})),
        )
        .await;
    assert_eq!(status, 201, "{command}");
    let args = &command["args"];
    let url = args["url"].as_str().unwrap().to_owned();
    let parsed = download::parse_url(&url).unwrap();
    let addr: std::net::SocketAddr = format!("{}:{}", parsed.host, parsed.port).parse().unwrap();
    let tls = download::client_config(&server.ca_cert()).unwrap();
    let fetch = |url: String, size: u64| {
        let tls = Arc::clone(&tls);
        let sha = args["sha256"].as_str().unwrap().to_owned();
        async move {
            let (tx, mut rx) = tokio::sync::mpsc::channel(64);
            let job = Download { command_id: 1, url, sha256: sha, size, version: "2".into() };
            download::run(tls, job, tx).await;
            let mut progress = Vec::new();
            loop {
                match rx.recv().await.expect("an end") {
                    DownloadEvent::Progress(p) => progress.push(p),
                    DownloadEvent::Done(end) => return (progress, end),
                }
            }
        }
    };
    // The device's own link works, with progress by tenths.
    let (progress, end) = fetch(url.clone(), image.len() as u64).await;
    assert_eq!(end, Ok("2".into()));
    assert_eq!(progress.last(), Some(&100), "{progress:?}");
    // A wrong size is caught.
    let (_, end) = fetch(url.clone(), image.len() as u64 + 1).await;
    assert!(end.is_err());
    // Another device's path with this token, a forged token and an expired one are refused.
    let other = url.replace(&format!("/{device_id}?"), &format!("/{}?", device_id + 1));
    let (_, end) = fetch(other, image.len() as u64).await;
    assert!(end.as_ref().is_err_and(|e| e.contains("HTTP 403")), "{end:?}");
    let key = FirmwareKey::from_bytes(std::fs::read(dir.path().join("firmware.key")).unwrap().try_into().unwrap());
    let expired = sign_token(&key, FirmwareId(image_id), DeviceId(device_id), UnixMillis(UnixMillis::now().0 - 1));
    let target = format!("/firmware/{image_id}/{device_id}?token={expired}");
    let (_, end) = fetch(format!("https://{addr}{target}"), image.len() as u64).await;
    assert!(end.as_ref().is_err_and(|e| e.contains("HTTP 403")), "{end:?}");
    // Ranges: a resumed download gets the rest, with Content-Range; past the end is 416.
    let path = &url[url.find("/firmware/").unwrap()..];
    let (header, body) = ranged_get(addr, &server.ca_cert(), path, "bytes=1048570-").await;
    assert!(header.starts_with("HTTP/1.1 206"), "{header}");
    assert!(
        header.to_ascii_lowercase().contains(&format!(
            "content-range: bytes 1048570-{}/{}",
            image.len() - 1,
            image.len()
        )),
        "{header}"
    );
    assert_eq!(body, image[1_048_570..]);
    let (header, body) = ranged_get(addr, &server.ca_cert(), path, "bytes=10-19").await;
    assert!(header.starts_with("HTTP/1.1 206"), "{header}");
    assert_eq!(body, image[10..20]);
    let (header, _) = ranged_get(addr, &server.ca_cert(), path, &format!("bytes={}-", image.len())).await;
    assert!(header.starts_with("HTTP/1.1 416"), "{header}");
}
