//! HTTP server limits against the real binary (issue 19): half-sent requests are closed, a
//! declared body over the limit is refused at once, idle connections close, the connection cap
//! refuses newcomers while `/healthz` still answers, logins are rate limited, and `/metrics`
//! can require a token.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Generous bound for "the server closed it": the limits in these tests are 1 to 2 s.
const CLOSED_WITHIN: Duration = Duration::from_secs(10);

/// Everything the server sends until it closes the connection; panics if it does not close it
/// within [`CLOSED_WITHIN`].
async fn read_until_closed(stream: &mut TcpStream, what: &str) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(CLOSED_WITHIN, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "{what}: the server kept the connection open");
    String::from_utf8_lossy(&out).into_owned()
}

async fn connect(server: &TestServer) -> TcpStream {
    TcpStream::connect(server.http_addr).await.expect("connect")
}

/// Sends `head` and then one byte of `drip` every 300 ms (faster than the idle timeout), and
/// returns what the server answered before it closed the connection.
async fn drip_until_closed(server: &TestServer, head: &[u8], drip: &'static [u8], what: &str) -> String {
    let stream = connect(server).await;
    let (mut read, mut write) = stream.into_split();
    write.write_all(head).await.expect("test request");
    let writer = tokio::spawn(async move {
        for byte in drip.iter().cycle() {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if write.write_all(&[*byte]).await.is_err() {
                break;
            }
        }
    });
    let mut out = Vec::new();
    let closed = tokio::time::timeout(CLOSED_WITHIN, read.read_to_end(&mut out)).await;
    writer.abort();
    assert!(closed.is_ok(), "{what}: the server kept the connection open");
    String::from_utf8_lossy(&out).into_owned()
}

const SHORT: &str = "[http]\nheader_read_timeout_s = 3\nbody_read_timeout_s = 3\nidle_timeout_s = 1\n\
    login_per_ip_per_minute = 5\nlogin_per_account_per_minute = 3\nmetrics_token = \"s3cret\"\n";

#[tokio::test]
async fn half_sent_requests_and_idle_connections_are_closed() {
    let dir = tempfile::tempdir().expect("test request");
    let server = TestServer::start(dir.path(), None, SHORT);

    // Half a header, and a header dripping in too slowly for the header-read timeout.
    let mut half = connect(&server).await;
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.expect("test request");
    let answer = read_until_closed(&mut half, "half a header").await;
    assert!(!answer.contains("200 OK"), "no answer to half a request: {answer}");
    let answer = drip_until_closed(&server, b"GET /healthz HTTP/1.1\r\n", b"X-Slow: a\r\n", "a dripping header").await;
    assert!(!answer.contains("200 OK"), "no answer to a header that never ends: {answer}");

    // Nothing at all.
    let mut silent = connect(&server).await;
    read_until_closed(&mut silent, "a silent connection").await;

    // A declared body over the limit, never sent: 413 at once, then closed.
    let mut huge = connect(&server).await;
    huge.write_all(
        b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n",
    )
    .await
    .expect("test request");
    let answer = read_until_closed(&mut huge, "Content-Length: 10000000000").await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");

    // A body within the limit dripping in too slowly: closed after the body-read timeout.
    let head = b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n";
    let answer = drip_until_closed(&server, head, b" ", "a dripping body").await;
    assert!(!answer.contains("200 OK"), "{answer}");

    // A kept-alive connection that goes idle after its answer.
    let mut idle = connect(&server).await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("test request");
    let answer = read_until_closed(&mut idle, "an idle kept-alive connection").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "answered before it idled: {answer}");

    // The limits are counted.
    let client = reqwest::Client::new();
    let metrics = client.get(format!("{}/metrics", server.api())).send().await.expect("test request");
    assert_eq!(metrics.status(), 401, "the metrics token is required");
    let metrics =
        client.get(format!("{}/metrics", server.api())).bearer_auth("s3cret").send().await.expect("test request");
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.expect("test request");
    let closed = |reason: &str| {
        text.lines()
            .find(|l| l.starts_with("http_connections_closed_by_limit_total") && l.contains(reason))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert!(closed("body_too_large") >= 1.0, "{text}");
    assert!(closed("body_timeout") >= 1.0, "{text}");
    assert!(closed("idle") >= 1.0, "{text}");
}

#[tokio::test]
async fn logins_and_forgotten_passwords_are_rate_limited() {
    let dir = tempfile::tempdir().expect("test request");
    let server = TestServer::start(dir.path(), None, SHORT);
    let client = reqwest::Client::new();
    let post = |path: &'static str, email: &'static str| {
        let client = client.clone();
        let url = format!("{}{path}", server.api());
        let body = if path.ends_with("login") {
            serde_json::json!({"email": email, "password": "wrong-password"})
        } else {
            serde_json::json!({ "email": email })
        };
        async move { client.post(url).json(&body).send().await.expect("test request") }
    };
    // Per account: 3 a minute.
    for _ in 0..3 {
        assert_eq!(post("/api/v1/auth/login", "nobody@example.com").await.status(), 401);
    }
    let limited = post("/api/v1/auth/login", "nobody@example.com").await;
    assert_eq!(limited.status(), 429);
    let retry_after: u64 =
        limited.headers()["retry-after"].to_str().expect("test request").parse().expect("test request");
    assert!((1..=61).contains(&retry_after), "{retry_after}");
    let body: serde_json::Value = limited.json().await.expect("test request");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    // Per IP: 5 a minute, whichever account (the refused one counted too).
    assert_eq!(post("/api/v1/auth/login", "someone@example.com").await.status(), 401);
    let limited = post("/api/v1/auth/forgot-password", "else@example.com").await;
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    let limited = post("/api/v1/auth/login", "admin@example.com").await;
    assert_eq!(limited.status(), 429, "the right password does not get past the limit either");
}

#[tokio::test]
async fn at_the_connection_cap_newcomers_are_refused_and_the_probes_still_answer() {
    let dir = tempfile::tempdir().expect("test request");
    let config =
        "[http]\nmax_connections = 3\nprobe_connections = 2\nheader_read_timeout_s = 60\nidle_timeout_s = 60\n";
    let server = TestServer::start(dir.path(), None, config);
    // Three idle connections fill the cap.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect(&server).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Past the cap: the API is refused (503 busy, closed), the probes answer.
    let mut api = connect(&server).await;
    api.write_all(b"GET /api/v1/auth/session HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("test request");
    let answer = read_until_closed(&mut api, "an API request past the cap").await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("\"busy\""), "{answer}");
    for probe in ["/healthz", "/readyz"] {
        let mut conn = connect(&server).await;
        conn.write_all(format!("GET {probe} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.expect("test request");
        let answer = read_until_closed(&mut conn, probe).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{probe} at the cap: {answer}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The reserve full too: a newcomer is closed without an answer.
    for _ in 0..2 {
        held.push(connect(&server).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut refused = connect(&server).await;
    let _ = refused.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let answer = read_until_closed(&mut refused, "a connection past the cap and the reserve").await;
    assert!(answer.is_empty(), "{answer}");

    // Freed, everything answers again; the refusals were counted.
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = reqwest::get(format!("{}/metrics", server.api()))
        .await
        .expect("test request")
        .text()
        .await
        .expect("test request");
    let over = |reason: &str| {
        text.lines()
            .find(|l| l.starts_with("http_connections_over_cap_total") && l.contains(reason))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert_eq!(over("probe_only"), 5.0, "{text}");
    assert_eq!(over("refused"), 1.0, "{text}");
}

#[tokio::test]
async fn metrics_can_move_to_their_own_address() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let metrics_addr = free.local_addr().expect("address");
    drop(free);
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), None, &format!("[http]\nmetrics_addr = \"{metrics_addr}\"\n"));
    let api = reqwest::get(format!("{}/metrics", server.api())).await.expect("request");
    assert_eq!(api.status(), 404, "the API no longer serves /metrics");
    let own = reqwest::get(format!("http://{metrics_addr}/metrics")).await.expect("request");
    assert_eq!(own.status(), 200);
    assert!(own.text().await.expect("body").contains("http_connections_open"));
    let other = reqwest::get(format!("http://{metrics_addr}/healthz")).await.expect("request");
    assert_eq!(other.status(), 404, "the metrics address serves only /metrics");
}

#[tokio::test]
async fn csv_imports_larger_than_the_json_body_limit_reach_their_route() {
    // The server's early 413 is at the JSON body limit (64 KiB here) except for the routes that
    // stream their body and enforce their own limits: a 2,000-row device import (≈ 90 KiB) and a
    // site import with a long description column go through to their route.
    let dir = tempfile::tempdir().expect("test request");
    let server = TestServer::start(dir.path(), None, "");
    let api = common::Api::login(&server.api()).await;
    let (enterprise, _) = api.enterprise("Big import").await;
    let mut csv = String::from("mac_address,endpoint_name,note\n");
    for i in 0..2_000u32 {
        csv.push_str(&format!("0015650{i:05X},phone {i},{}\n", "x".repeat(20)));
    }
    assert!(csv.len() > 64 * 1024, "{}", csv.len());
    let resp = api
        .client
        .post(format!("{}/api/v1/device-imports?enterprise_id={enterprise}", server.api()))
        .bearer_auth(&api.token)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .expect("test request");
    assert_eq!(resp.status(), 201);
    let log: serde_json::Value = resp.json().await.expect("test request");
    assert_eq!((log["state"].as_str(), log["created"].as_u64()), (Some("done"), Some(2_000)), "{log}");
    let mut sites = String::from("site_name,subnets,description\n");
    for i in 0..250u32 {
        sites.push_str(&format!("Floor {i},100.{i}.0.0/16,{}\n", "d".repeat(250)));
    }
    assert!(sites.len() > 64 * 1024);
    let resp = api
        .client
        .post(format!("{}/api/v1/sites/import?enterprise_id={enterprise}", server.api()))
        .bearer_auth(&api.token)
        .header("content-type", "text/csv")
        .body(sites)
        .send()
        .await
        .expect("test request");
    assert_eq!(resp.status(), 200);
    let report: serde_json::Value = resp.json().await.expect("test request");
    assert_eq!(report["created"], 250, "{report}");
}
