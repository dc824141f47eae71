//! Browser sessions (ACC-1), password reset (ACC-4), emailed login codes (ACC-3), account
//! settings (ACC-5) and the new-account email (TEN-1). Emails are read from the store's outbox
//! (what the outbox worker would send; `tests/account_email.rs` sends them over real SMTP).

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use fleetpulse_mailer::{AccountEmail, StoredPayload};
use fleetpulse_proto::UnixMillis;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};

use super::*;

/// The account emails queued to `receiver`, oldest first.
pub(super) async fn account_emails(h: &Harness, receiver: &str) -> Vec<AccountEmail> {
    let due = h.store.entities.due_outbox(UnixMillis(i64::MAX / 2), 1000).await.expect("outbox");
    due.into_iter()
        .filter(|m| m.receiver == receiver)
        .filter_map(|m| match StoredPayload::from_json(&m.payload).expect("payload") {
            StoredPayload::Account(p) => Some(p.email),
            StoredPayload::Alarm(_) => None,
        })
        .collect()
}

/// Waits (the forgotten-password work runs after its answer) for the `n`th email to `receiver`.
async fn nth_email(h: &Harness, receiver: &str, n: usize) -> AccountEmail {
    for _ in 0..200 {
        let emails = account_emails(h, receiver).await;
        if emails.len() > n {
            return emails[n].clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no email #{n} to {receiver}");
}

fn reset_token(email: AccountEmail) -> String {
    match email {
        AccountEmail::PasswordReset { token, .. } => token,
        other => panic!("expected a reset email, got {other:?}"),
    }
}

async fn forgot(h: &Harness, email: &str) -> Reply {
    h.call(Method::POST, "/api/v1/auth/forgot-password", None, Some(json!({"email": email}))).await
}

async fn reset(h: &Harness, token: &str, password: &str) -> Reply {
    let body = json!({"token": token, "new_password": password});
    h.call(Method::POST, "/api/v1/auth/reset-password", None, Some(body)).await
}

/// A request with the session cookie and an optional CSRF token.
async fn with_cookie(
    h: &Harness,
    method: Method,
    uri: &str,
    cookie: &str,
    csrf: Option<&str>,
    body: Option<Value>,
) -> Reply {
    let mut req = Request::builder().method(method).uri(uri).header(header::COOKIE, format!("fp_session={cookie}"));
    if let Some(csrf) = csrf {
        req = req.header("X-CSRF-Token", csrf);
    }
    let req = match body {
        Some(b) => req.header(header::CONTENT_TYPE, "application/json").body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    };
    h.send(req.expect("request")).await
}

#[tokio::test]
async fn cookie_sessions_need_the_csrf_token_to_change_anything() {
    let h = harness();
    h.admin_token().await;
    let body = json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "cookie": true});
    let login = h.call(Method::POST, "/api/v1/auth/login", None, Some(body)).await;
    assert_eq!(login.status, StatusCode::OK);
    let set_cookie =
        login.headers.get(header::SET_COOKIE).and_then(|v| v.to_str().ok()).expect("Set-Cookie").to_owned();
    let attrs: Vec<&str> = set_cookie.split("; ").collect();
    let token = attrs[0].strip_prefix("fp_session=").expect("the session cookie");
    assert_eq!(token.len(), 64);
    for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/api", "Max-Age=43200"] {
        assert!(attrs.contains(&attr), "{attr} in {set_cookie}");
    }
    let json = login.json();
    assert!(json.get("token").is_none(), "a cookie login does not show the token to scripts: {json}");
    let csrf = json["csrf_token"].as_str().expect("csrf_token").to_owned();
    assert_ne!(csrf, token);

    // Reads need only the cookie.
    let list = with_cookie(&h, Method::GET, "/api/v1/enterprises", token, None, None).await;
    assert_eq!(list.status, StatusCode::OK);
    // Changes need the CSRF token: none or a wrong one is 403 and changes nothing.
    let create = || Some(json!({"name": "Cookie Co"}));
    with_cookie(&h, Method::POST, "/api/v1/enterprises", token, None, create())
        .await
        .assert_error(StatusCode::FORBIDDEN, "csrf_failed");
    with_cookie(&h, Method::POST, "/api/v1/enterprises", token, Some(&"0".repeat(64)), create())
        .await
        .assert_error(StatusCode::FORBIDDEN, "csrf_failed");
    let empty = with_cookie(&h, Method::GET, "/api/v1/enterprises", token, None, None).await.json();
    assert_eq!(empty["items"].as_array().map(Vec::len), Some(0), "nothing was created: {empty}");
    let created = with_cookie(&h, Method::POST, "/api/v1/enterprises", token, Some(&csrf), create()).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    // A bearer request needs no CSRF token, and the cookie's token works as a bearer token too.
    let bearer = h.call(Method::POST, "/api/v1/enterprises", Some(token), Some(json!({"name": "Bearer Co"}))).await;
    assert_eq!(bearer.status, StatusCode::CREATED);

    // A password change by cookie continues in a fresh cookie with a fresh CSRF token.
    let change = json!({"current_password": ADMIN_PASSWORD, "new_password": "changed-password"});
    let changed = with_cookie(&h, Method::POST, "/api/v1/account/password", token, Some(&csrf), Some(change)).await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text());
    let set_cookie = changed.headers.get(header::SET_COOKIE).and_then(|v| v.to_str().ok()).expect("Set-Cookie");
    let fresh = set_cookie.split("; ").next().and_then(|c| c.strip_prefix("fp_session=")).expect("cookie").to_owned();
    assert_ne!(fresh, token);
    let fresh_csrf = changed.json()["csrf_token"].as_str().expect("csrf_token").to_owned();
    with_cookie(&h, Method::GET, "/api/v1/enterprises", token, None, None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    let (token, csrf) = (fresh.as_str(), fresh_csrf);

    // Logout (with the CSRF token) ends the session and clears the cookie.
    with_cookie(&h, Method::POST, "/api/v1/auth/logout", token, None, None)
        .await
        .assert_error(StatusCode::FORBIDDEN, "csrf_failed");
    let out = with_cookie(&h, Method::POST, "/api/v1/auth/logout", token, Some(&csrf), None).await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    let cleared = out.headers.get(header::SET_COOKIE).and_then(|v| v.to_str().ok()).expect("Set-Cookie");
    assert!(cleared.starts_with("fp_session=;") && cleared.contains("Max-Age=0"), "{cleared}");
    with_cookie(&h, Method::GET, "/api/v1/enterprises", token, None, None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn a_reset_link_works_once_and_ends_every_session() {
    let h = harness();
    let old_session = h.admin_token().await;
    // Known and unknown emails get the same answer; only the known one gets an email.
    let unknown = forgot(&h, "nobody@example.com").await;
    let known = forgot(&h, ADMIN_EMAIL).await;
    assert_eq!((unknown.status, known.status), (StatusCode::ACCEPTED, StatusCode::ACCEPTED));
    assert_eq!(unknown.body, known.body);
    forgot(&h, "not an email").await.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    let token = reset_token(nth_email(&h, ADMIN_EMAIL, 0).await);
    assert!(account_emails(&h, "nobody@example.com").await.is_empty());

    reset(&h, &token, "short").await.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    assert_eq!(reset(&h, &token, "brand-new-password").await.status, StatusCode::NO_CONTENT);
    reset(&h, &token, "another-new-password").await.assert_error(StatusCode::BAD_REQUEST, "invalid_reset_token");
    reset(&h, "feedface", "another-new-password").await.assert_error(StatusCode::BAD_REQUEST, "invalid_reset_token");
    h.get("/api/v1/enterprises", &old_session).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    h.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(h.login(ADMIN_EMAIL, "brand-new-password").await.status, StatusCode::OK);
}

#[tokio::test]
async fn an_expired_link_is_refused_and_a_locked_account_can_reset() {
    let config = ApiConfig { password_reset_ttl: Duration::from_millis(300), ..ApiConfig::default() };
    let h = harness_with(config, Registry::default());
    h.admin_token().await;
    assert_eq!(forgot(&h, ADMIN_EMAIL).await.status, StatusCode::ACCEPTED);
    let expired = reset_token(nth_email(&h, ADMIN_EMAIL, 0).await);
    h.clock.advance(Duration::from_millis(400));
    reset(&h, &expired, "brand-new-password").await.assert_error(StatusCode::BAD_REQUEST, "invalid_reset_token");

    // Locked by ten wrong passwords: the right one is refused, a reset lifts the lock.
    for _ in 0..10 {
        h.login(ADMIN_EMAIL, "wrong-password").await;
    }
    h.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(forgot(&h, ADMIN_EMAIL).await.status, StatusCode::ACCEPTED);
    let token = reset_token(nth_email(&h, ADMIN_EMAIL, 1).await);
    assert_eq!(reset(&h, &token, "brand-new-password").await.status, StatusCode::NO_CONTENT);
    assert_eq!(h.login(ADMIN_EMAIL, "brand-new-password").await.status, StatusCode::OK);
}

#[tokio::test]
async fn admins_send_reset_links_and_new_accounts_get_their_details() {
    let h = harness();
    let admin = h.admin_token().await;
    // Created without a password: one is generated and emailed; it must be changed at first login.
    let body = json!({"email": "new-admin@example.com", "role": "platform_admin"});
    let created = h.call(Method::POST, "/api/v1/accounts", Some(&admin), Some(body)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let id = created.json()["id"].as_u64().expect("id");
    let password = match nth_email(&h, "new-admin@example.com", 0).await {
        AccountEmail::AccountCreated { login_email, role, temporary_password } => {
            assert_eq!((login_email.as_str(), role.as_str()), ("new-admin@example.com", "platform_admin"));
            temporary_password.expect("the generated password")
        }
        other => panic!("{other:?}"),
    };
    let first = h.login("new-admin@example.com", &password).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.json()["must_change_password"], true);
    // With a password given, the email leaves it out.
    let body = json!({"email": "given@example.com", "password": "given-password", "role": "platform_admin"});
    assert_eq!(h.call(Method::POST, "/api/v1/accounts", Some(&admin), Some(body)).await.status, StatusCode::CREATED);
    match nth_email(&h, "given@example.com", 0).await {
        AccountEmail::AccountCreated { temporary_password, .. } => assert_eq!(temporary_password, None),
        other => panic!("{other:?}"),
    }

    // An admin sends a reset link; the link works.
    let uri = format!("/api/v1/accounts/{id}/reset-password");
    assert_eq!(h.call(Method::POST, &uri, Some(&admin), None).await.status, StatusCode::ACCEPTED);
    let token = reset_token(nth_email(&h, "new-admin@example.com", 1).await);
    assert_eq!(reset(&h, &token, "chosen-password").await.status, StatusCode::NO_CONTENT);
    let after = h.login("new-admin@example.com", "chosen-password").await;
    assert_eq!(after.json()["must_change_password"], false, "a reset is the password change");
    let missing = format!("/api/v1/accounts/{}/reset-password", id + 1000);
    h.call(Method::POST, &missing, Some(&admin), None).await.assert_error(StatusCode::NOT_FOUND, "not_found");
}

fn login_code(email: AccountEmail) -> String {
    match email {
        AccountEmail::LoginCode { code, .. } => code,
        other => panic!("expected a login code, got {other:?}"),
    }
}

async fn verify(h: &Harness, challenge: &str, code: &str) -> Reply {
    let body = json!({"challenge": challenge, "code": code});
    h.call(Method::POST, "/api/v1/auth/login/verify", None, Some(body)).await
}

/// Logs in with the password; returns the challenge of the emailed code.
async fn challenge(h: &Harness) -> String {
    let reply = h.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    reply.assert_error(StatusCode::UNAUTHORIZED, "mfa_required");
    reply.json()["challenge"].as_str().expect("challenge").to_owned()
}

#[tokio::test]
async fn emailed_codes_open_a_new_session_once() {
    let h = harness();
    let token = h.admin_token().await;
    let put = json!({"login_protection": "email"});
    let reply = h.call(Method::PUT, "/api/v1/account", Some(&token), Some(put)).await;
    assert_eq!(reply.json()["login_protection"], "email", "{}", reply.text());

    let first = challenge(&h).await;
    let code = login_code(nth_email(&h, ADMIN_EMAIL, 0).await);
    // The challenge is no session token.
    h.get("/api/v1/enterprises", &first).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    let wrong = if code == "000000" { "000001" } else { "000000" };
    verify(&h, &first, wrong).await.assert_error(StatusCode::UNAUTHORIZED, "invalid_code");
    verify(&h, &first, "12345").await.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    let opened = verify(&h, &first, &code).await;
    assert_eq!(opened.status, StatusCode::OK, "{}", opened.text());
    let session = opened.json()["token"].as_str().expect("token").to_owned();
    assert_ne!(session, first, "the session id is new");
    assert_ne!(session, token);
    assert_eq!(h.get("/api/v1/enterprises", &session).await.status, StatusCode::OK);
    verify(&h, &first, &code).await.assert_error(StatusCode::UNAUTHORIZED, "invalid_challenge");

    // Another login: another challenge, another code, another session.
    let second = challenge(&h).await;
    assert_ne!(second, first);
    let code = login_code(nth_email(&h, ADMIN_EMAIL, 1).await);
    let again = verify(&h, &second, &code).await.json()["token"].as_str().expect("token").to_owned();
    assert_ne!(again, session);

    // Five wrong codes kill a challenge; the right one is refused after them.
    let third = challenge(&h).await;
    let code = login_code(nth_email(&h, ADMIN_EMAIL, 2).await);
    let wrong = if code == "000000" { "000001" } else { "000000" };
    for _ in 0..5 {
        verify(&h, &third, wrong).await.assert_error(StatusCode::UNAUTHORIZED, "invalid_code");
    }
    verify(&h, &third, &code).await.assert_error(StatusCode::UNAUTHORIZED, "invalid_challenge");
    // Wrong codes count toward the lockout like wrong passwords (the successful logins above
    // reset the count).
    let account = h.store.entities.account_by_email(ADMIN_EMAIL).await.expect("read").expect("account");
    assert_eq!(account.failed_logins, 5);
}

#[tokio::test]
async fn settings_are_read_validated_and_saved() {
    let h = harness();
    let token = h.admin_token().await;
    let shown = h.get("/api/v1/account", &token).await.json();
    assert_eq!(shown["email"], ADMIN_EMAIL);
    assert_eq!((shown["contact_name"].as_str(), shown["login_protection"].as_str()), (Some(""), Some("none")));
    let put = json!({"contact_name": " Ada Lovelace ", "phone": "+44 20 7946 0958", "country": "United Kingdom"});
    let saved = h.call(Method::PUT, "/api/v1/account", Some(&token), Some(put)).await.json();
    assert_eq!(saved["contact_name"], "Ada Lovelace");
    assert_eq!(h.get("/api/v1/account", &token).await.json(), saved);
    for bad in [
        json!({"phone": "call me maybe"}),
        json!({"contact_name": "x".repeat(129)}),
        json!({"country": "a\u{7}b"}),
        json!({"login_protection": "totp"}),
        json!({"login_protection": "sms"}),
        json!({"nickname": "x"}),
    ] {
        let reply = h.call(Method::PUT, "/api/v1/account", Some(&token), Some(bad.clone())).await;
        reply.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    }
    assert_eq!(h.get("/api/v1/account", &token).await.json(), saved, "nothing changed");
}

#[tokio::test]
async fn a_reset_link_works_for_ten_minutes() {
    let h = harness();
    h.admin_token().await;
    assert_eq!(forgot(&h, ADMIN_EMAIL).await.status, StatusCode::ACCEPTED);
    let token = reset_token(nth_email(&h, ADMIN_EMAIL, 0).await);
    h.clock.advance(Duration::from_secs(9 * 60 + 59));
    assert_eq!(reset(&h, &token, "brand-new-password").await.status, StatusCode::NO_CONTENT, "at 9:59");

    assert_eq!(forgot(&h, ADMIN_EMAIL).await.status, StatusCode::ACCEPTED);
    let token = reset_token(nth_email(&h, ADMIN_EMAIL, 1).await);
    h.clock.advance(Duration::from_secs(10 * 60 + 1));
    reset(&h, &token, "another-new-password").await.assert_error(StatusCode::BAD_REQUEST, "invalid_reset_token");
    assert_eq!(h.login(ADMIN_EMAIL, "brand-new-password").await.status, StatusCode::OK);
}

#[tokio::test]
async fn an_emailed_login_code_works_for_ten_minutes() {
    let h = harness();
    let token = h.admin_token().await;
    let put = json!({"login_protection": "email"});
    assert_eq!(h.call(Method::PUT, "/api/v1/account", Some(&token), Some(put)).await.status, StatusCode::OK);

    let first = challenge(&h).await;
    let code = login_code(nth_email(&h, ADMIN_EMAIL, 0).await);
    h.clock.advance(Duration::from_secs(9 * 60 + 59));
    assert_eq!(verify(&h, &first, &code).await.status, StatusCode::OK, "at 9:59");

    let second = challenge(&h).await;
    let code = login_code(nth_email(&h, ADMIN_EMAIL, 1).await);
    h.clock.advance(Duration::from_secs(10 * 60 + 1));
    verify(&h, &second, &code).await.assert_error(StatusCode::UNAUTHORIZED, "invalid_challenge");
}
