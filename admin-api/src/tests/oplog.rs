//! The operation log (LOG-1) and login lockout (ACC-2) through the API.

use axum::http::{Method, StatusCode, header};
use serde_json::json;

use super::*;

#[tokio::test]
async fn every_state_changing_request_writes_one_row_and_reads_write_none() {
    let h = harness();
    let token = h.admin_token().await; // one login row
    h.get("/api/v1/enterprises", &token).await; // a read: no row
    let created = h.call(Method::POST, "/api/v1/enterprises", Some(&token), Some(json!({"name": "Acme"}))).await;
    assert_eq!(created.status, StatusCode::CREATED);
    let refused = h.call(Method::POST, "/api/v1/enterprises", Some(&token), Some(json!({"name": ""}))).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    h.login(ADMIN_EMAIL, "wrong password").await;

    let rows = h.get("/api/v1/operation-logs", &token).await.json();
    let items = rows["items"].as_array().expect("items");
    let summary: Vec<(String, String, u64, String)> = items
        .iter()
        .map(|r| {
            (
                r["operation"].as_str().unwrap_or_default().to_owned(),
                r["account_email"].as_str().unwrap_or_default().to_owned(),
                r["status"].as_u64().unwrap_or_default(),
                r["outcome"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let row =
        |op: &str, status: u64, outcome: &str| (op.to_owned(), ADMIN_EMAIL.to_owned(), status, outcome.to_owned());
    assert_eq!(
        summary,
        [
            row("POST /api/v1/auth/login", 401, "failure"),
            row("POST /api/v1/enterprises", 400, "failure"),
            row("POST /api/v1/enterprises", 201, "success"),
            row("POST /api/v1/auth/login", 200, "success"),
        ]
    );
    assert!(items.iter().all(|r| r["account_id"].is_u64()), "{rows}");

    // Filters: type and time.
    let only = h.get("/api/v1/operation-logs?operation=POST%20/api/v1/enterprises", &token).await.json();
    assert_eq!(only["items"].as_array().map(Vec::len), Some(2));
    let future = h.get("/api/v1/operation-logs?from=99999999999999", &token).await.json();
    assert_eq!(future["items"].as_array().map(Vec::len), Some(0));
    h.get("/api/v1/operation-logs?from=5&to=5", &token).await.assert_error(StatusCode::BAD_REQUEST, "invalid_request");

    // CSV export of the same rows, newest first.
    let csv = h.get("/api/v1/operation-logs/export", &token).await;
    assert_eq!(csv.status, StatusCode::OK);
    assert_eq!(csv.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()), Some("text/csv; charset=utf-8"));
    let text = csv.text();
    let lines: Vec<&str> = text.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 5, "header + 4 rows: {text}");
    assert!(lines[0].starts_with("id,time,account_id,account_email"));
    assert!(lines[1].contains("POST /api/v1/auth/login") && lines[1].ends_with(",401,failure"), "{text}");

    // No route edits or deletes a row.
    for method in [Method::PUT, Method::PATCH, Method::DELETE] {
        let reply = h.call(method, "/api/v1/operation-logs", Some(&token), Some(json!({}))).await;
        assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    }
    let reply = h.call(Method::DELETE, "/api/v1/operation-logs/1", Some(&token), None).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let after = h.get("/api/v1/operation-logs", &token).await.json();
    assert_eq!(after["items"].as_array().map(Vec::len), Some(4), "refused calls to unknown routes are not logged");
    h.call(Method::GET, "/api/v1/operation-logs", None, None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn ten_wrong_passwords_lock_the_account_with_the_same_answer() {
    // 22 logins of one account: past the per-account rate limit, which runs on the wall clock,
    // not on the harness's manual one.
    let login_rate = crate::LoginRateLimits {
        per_account_per_minute: std::num::NonZeroU32::new(1_000).expect("not zero"),
        ..crate::LoginRateLimits::default()
    };
    let h = harness_with(ApiConfig { login_rate, ..ApiConfig::default() }, Registry::default());
    h.admin_token().await;
    for _ in 0..crate::login::MAX_LOGIN_FAILURES {
        h.login(ADMIN_EMAIL, "wrong password").await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    // Locked: the right password gets the answer a wrong one gets.
    let locked = h.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let unknown = h.login("nobody@example.com", ADMIN_PASSWORD).await;
    locked.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(locked.body, unknown.body);
    let account = h.store.entities.account_by_email(ADMIN_EMAIL).await.unwrap().expect("account");
    let until = account.locked_until.expect("locked");
    assert_eq!(until.0, h.clock.now().0 + 5 * 60 * 1000, "locked for five minutes");

    // Once the lock is over, the password works again and the failure count starts over.
    h.clock.advance(crate::login::LOCKOUT);
    assert_eq!(h.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.status, StatusCode::OK);
    for _ in 0..crate::login::MAX_LOGIN_FAILURES - 1 {
        h.login(ADMIN_EMAIL, "wrong password").await;
    }
    assert_eq!(h.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.status, StatusCode::OK, "nine failures do not lock");
    let account = h.store.entities.account_by_email(ADMIN_EMAIL).await.unwrap().expect("account");
    assert_eq!((account.failed_logins, account.locked_until), (0, None), "a success resets the count");
}

#[tokio::test]
async fn a_lockout_ends_after_five_minutes_and_not_before() {
    let h = harness();
    h.admin_token().await;
    for _ in 0..crate::login::MAX_LOGIN_FAILURES {
        h.login(ADMIN_EMAIL, "wrong password").await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    h.clock.advance(std::time::Duration::from_secs(4 * 60 + 59));
    h.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    let account = h.store.entities.account_by_email(ADMIN_EMAIL).await.unwrap().expect("account");
    assert_eq!(account.failed_logins, 0, "a locked account's attempts are not counted");
    h.clock.advance(std::time::Duration::from_secs(1));
    assert_eq!(h.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.status, StatusCode::OK, "at 5:00");
}
