//! Session revocation and idle expiry (ACC-2), TOTP login protection (ACC-3).

use std::time::Duration;

use axum::http::{Method, StatusCode};
use prometheus_client::registry::Registry;
use serde_json::json;

use super::*;
use crate::totp::{TotpSecret, code_at};

#[tokio::test]
async fn logout_ends_the_session_and_login_issues_a_new_one() {
    let h = harness();
    let first = h.admin_token().await;
    let second = h.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.json()["token"].as_str().expect("token").to_owned();
    assert_ne!(first, second, "every login gets a new session id");
    let reply = h.call(Method::POST, "/api/v1/auth/logout", Some(&first), None).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    h.get("/api/v1/enterprises", &first).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(h.get("/api/v1/enterprises", &second).await.status, StatusCode::OK, "other sessions stay");
}

#[tokio::test]
async fn an_idle_session_ends_and_a_used_one_stays() {
    let config = ApiConfig { session_idle: Duration::from_millis(400), ..ApiConfig::default() };
    let h = harness_with(config, Registry::default());
    let token = h.admin_token().await;
    // Used every 150 ms for well over the idle limit: still valid.
    for _ in 0..8 {
        h.clock.advance(Duration::from_millis(150));
        assert_eq!(h.get("/api/v1/enterprises", &token).await.status, StatusCode::OK);
    }
    h.clock.advance(Duration::from_millis(600));
    h.get("/api/v1/enterprises", &token).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    h.get("/api/v1/enterprises", &token).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn a_session_ends_after_thirty_idle_minutes_and_use_keeps_it_alive() {
    let h = harness();
    let token = h.admin_token().await;
    let other = h.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.json()["token"].as_str().expect("token").to_owned();
    // Used every 29 minutes for two hours: still valid.
    for _ in 0..4 {
        h.clock.advance(Duration::from_secs(29 * 60));
        assert_eq!(h.get("/api/v1/enterprises", &token).await.status, StatusCode::OK);
    }
    // The other session, unused all that time, has ended.
    h.get("/api/v1/enterprises", &other).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    // Exactly thirty idle minutes are still allowed; a moment more is not.
    h.clock.advance(Duration::from_secs(30 * 60));
    assert_eq!(h.get("/api/v1/enterprises", &token).await.status, StatusCode::OK);
    h.clock.advance(Duration::from_secs(30 * 60) + Duration::from_millis(1));
    h.get("/api/v1/enterprises", &token).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn a_session_ends_after_its_lifetime_however_much_it_is_used() {
    let h = harness();
    let token = h.admin_token().await;
    // 12 hours of use every 25 minutes.
    for _ in 0..28 {
        h.clock.advance(Duration::from_secs(25 * 60));
        assert_eq!(h.get("/api/v1/enterprises", &token).await.status, StatusCode::OK);
    }
    h.clock.advance(Duration::from_secs(20 * 60 + 1));
    h.get("/api/v1/enterprises", &token).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
}

/// The API's clock in whole seconds (the TOTP clock).
fn now_s(h: &Harness) -> u64 {
    u64::try_from(h.clock.now().0 / 1000).unwrap_or(0)
}

fn code(secret: &TotpSecret, at_s: u64) -> String {
    format!("{:06}", code_at(secret, at_s))
}

async fn login_with_code(h: &Harness, code: Option<&str>) -> Reply {
    let mut body = json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD});
    if let Some(code) = code {
        body["code"] = json!(code);
    }
    h.call(Method::POST, "/api/v1/auth/login", None, Some(body)).await
}

#[tokio::test]
async fn with_totp_on_a_login_needs_a_fresh_code_and_each_code_works_once() {
    let h = harness();
    let token = h.admin_token().await;
    let setup = h.call(Method::POST, "/api/v1/account/totp/setup", Some(&token), None).await.json();
    let secret_text = setup["secret"].as_str().expect("secret").to_owned();
    assert!(setup["otpauth_uri"].as_str().is_some_and(|u| u.starts_with("otpauth://totp/fleetpulse:")));
    let secret = TotpSecret::from_base32(&secret_text).expect("base32 secret");

    // A wrong code does not turn it on.
    let wrong = h
        .call(
            Method::POST,
            "/api/v1/account/totp",
            Some(&token),
            Some(json!({"secret": secret_text, "code": "000000"})),
        )
        .await;
    if code(&secret, now_s(&h)) != "000000" {
        wrong.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    }
    let t = now_s(&h);
    let enable = json!({"secret": secret_text, "code": code(&secret, t)});
    assert_eq!(
        h.call(Method::POST, "/api/v1/account/totp", Some(&token), Some(enable)).await.status,
        StatusCode::NO_CONTENT
    );

    // The password alone is not enough; the code used to turn it on cannot log in.
    login_with_code(&h, None).await.assert_error(StatusCode::UNAUTHORIZED, "mfa_required");
    login_with_code(&h, Some(&code(&secret, t))).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    // The next step's code (within ±1 step) works once.
    let next = code(&secret, t + 30);
    assert_eq!(login_with_code(&h, Some(&next)).await.status, StatusCode::OK);
    login_with_code(&h, Some(&next)).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    // A wrong password with a valid-looking code gets the same answer as an unknown account.
    let reply = h
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"email": ADMIN_EMAIL, "password": "nope", "code": "123456"})),
        )
        .await;
    reply.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    // Turning it off needs an unused code.
    let off = h.call(Method::POST, "/api/v1/account/totp/disable", Some(&token), Some(json!({"code": next}))).await;
    off.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    let account = h.store.entities.account_by_email(ADMIN_EMAIL).await.unwrap().expect("account");
    assert!(account.totp_secret.is_some() && account.totp_last_step.is_some());
}

#[tokio::test]
async fn a_totp_code_works_in_its_step_and_not_two_steps_later() {
    let h = harness();
    let token = h.admin_token().await;
    let setup = h.call(Method::POST, "/api/v1/account/totp/setup", Some(&token), None).await.json();
    let secret_text = setup["secret"].as_str().expect("secret").to_owned();
    let secret = TotpSecret::from_base32(&secret_text).expect("base32 secret");
    let enable = json!({"secret": secret_text, "code": code(&secret, now_s(&h))});
    let reply = h.call(Method::POST, "/api/v1/account/totp", Some(&token), Some(enable)).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);

    // Three steps later, the code of two steps ago is refused; the current one logs in.
    h.clock.advance(Duration::from_secs(90));
    let t = now_s(&h);
    let stale = code(&secret, t - 60);
    let current = code(&secret, t);
    if stale != current {
        login_with_code(&h, Some(&stale)).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    assert_eq!(login_with_code(&h, Some(&current)).await.status, StatusCode::OK);
    // The previous step's code would have been allowed (clock drift), but it is older than the
    // code just used: each step works once.
    login_with_code(&h, Some(&code(&secret, t - 30))).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    // The next step's code works, once.
    h.clock.advance(Duration::from_secs(30));
    let next = code(&secret, now_s(&h));
    assert_eq!(login_with_code(&h, Some(&next)).await.status, StatusCode::OK);
    login_with_code(&h, Some(&next)).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
}
