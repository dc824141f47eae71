//! Login, bearer authentication, logout and the first admin.

use axum::http::{Method, StatusCode, header};
use fleetpulse_proto::UnixMillis;
use fleetpulse_store::Role;

use super::*;

#[tokio::test]
async fn login_opens_a_session_whose_token_authenticates() {
    let h = harness();
    let token = h.admin_token().await;
    assert_eq!(token.len(), 64);
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));

    let reply = h.login(" OPS@example.com ", ADMIN_PASSWORD).await;
    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.json();
    assert_eq!(body["account"]["email"], ADMIN_EMAIL);
    assert_eq!(body["account"]["role"], "platform_admin");
    assert!(body["account"]["id"].is_u64());
    let expires_at = body["expires_at"].as_i64().expect("expires_at");
    let expected = UnixMillis::now().0 + 12 * 3600 * 1000;
    assert!((expected - 60_000..=expected).contains(&expires_at), "{expires_at} vs {expected}");
    assert_ne!(body["token"], token.as_str(), "every login gets its own token");

    assert_eq!(h.get("/api/v1/enterprises", &token).await.status, StatusCode::OK);
    let other = body["token"].as_str().expect("token");
    assert_eq!(h.get("/api/v1/enterprises", other).await.status, StatusCode::OK);
}

#[tokio::test]
async fn login_failures_look_the_same_for_unknown_emails_and_wrong_passwords() {
    let h = harness();
    h.admin_token().await;
    let wrong_password = h.login(ADMIN_EMAIL, "not-the-password").await;
    let unknown_email = h.login("nobody@example.com", ADMIN_PASSWORD).await;
    let not_an_email = h.login("nobody", ADMIN_PASSWORD).await;
    for reply in [&wrong_password, &unknown_email, &not_an_email] {
        reply.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    assert_eq!(wrong_password.body, unknown_email.body);
    assert_eq!(wrong_password.body, not_an_email.body);

    let metrics = h.call(Method::GET, "/metrics", None, None).await.text();
    assert!(metrics.contains("fleetpulse_api_login_failures_total 3\n"), "{metrics}");
}

#[tokio::test]
async fn requests_without_a_valid_token_are_unauthorized() {
    let h = harness();
    let token = h.admin_token().await;
    let missing = h.call(Method::GET, "/api/v1/enterprises", None, None).await;
    missing.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(missing.headers.get(header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()), Some("Bearer"));
    let forged = "0".repeat(64);
    for uri in ["/api/v1/enterprises", "/api/v1/devices", "/api/v1/alarms", "/api/v1/enterprises/1"] {
        h.get(uri, &forged).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let basic = Request::builder()
        .uri("/api/v1/devices")
        .header(header::AUTHORIZATION, format!("Basic {token}"))
        .body(Body::empty())
        .expect("request");
    h.send(basic).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    let create = h.call(Method::POST, "/api/v1/enterprises", None, Some(serde_json::json!({ "name": "x" }))).await;
    create.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn expired_sessions_are_unauthorized() {
    let h =
        harness_with(ApiConfig { session_ttl: std::time::Duration::ZERO, ..ApiConfig::default() }, Registry::default());
    let token = h.admin_token().await;
    h.get("/api/v1/enterprises", &token).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn logout_answers_no_content_to_an_authenticated_caller() {
    let h = harness();
    let token = h.admin_token().await;
    let reply = h.call(Method::POST, "/api/v1/auth/logout", Some(&token), None).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(reply.body.is_empty());
    h.call(Method::POST, "/api/v1/auth/logout", None, None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn bootstrap_creates_exactly_one_admin_and_is_idempotent() {
    let h = harness();
    let first = bootstrap_admin(&h.store, None, None).await.expect("bootstrap");
    let BootstrapOutcome::Created { email, generated_password: Some(password), .. } = &first else {
        panic!("expected a created admin with a generated password, got {first:?}");
    };
    assert_eq!(email, crate::DEFAULT_ADMIN_EMAIL);
    assert_eq!(password.chars().count(), 20);
    assert!(!format!("{first:?}").contains(password.as_str()), "Debug redacts the password");

    let again = bootstrap_admin(&h.store, Some("other@example.com".into()), Some("another-password".into()))
        .await
        .expect("second bootstrap");
    assert_eq!(again, BootstrapOutcome::AlreadyPresent);
    assert_eq!(h.store.entities.count_accounts(Role::PlatformAdmin).await.expect("count"), 1);
    assert_eq!(h.login(crate::DEFAULT_ADMIN_EMAIL, password).await.status, StatusCode::OK);
    h.login("other@example.com", "another-password").await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn bootstrap_rejects_short_passwords_and_bad_emails() {
    let h = harness();
    let short = bootstrap_admin(&h.store, None, Some("1234567".into())).await;
    assert!(matches!(short, Err(crate::ApiError::InvalidRequest(_))), "{short:?}");
    let bad_email = bootstrap_admin(&h.store, Some("admin".into()), Some("long enough".into())).await;
    assert!(matches!(bad_email, Err(crate::ApiError::InvalidRequest(_))), "{bad_email:?}");
    assert_eq!(h.store.entities.count_accounts(Role::PlatformAdmin).await.expect("count"), 0);
    let given = bootstrap_admin(&h.store, None, Some("12345678".into())).await.expect("bootstrap");
    assert!(matches!(given, BootstrapOutcome::Created { generated_password: None, .. }), "{given:?}");
}

#[tokio::test]
async fn accounts_created_through_the_api_must_change_their_password_first() {
    let h = harness();
    let admin = h.admin_token().await;
    // The bootstrap admin need not change its password.
    let admin_login = h.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(admin_login.json()["must_change_password"], false);

    let create = serde_json::json!({
        "email": "new-admin@example.com", "password": "initial-pass", "role": "platform_admin"
    });
    let created = h.call(Method::POST, "/api/v1/accounts", Some(&admin), Some(create)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());

    // Its login says so, and every other route answers 403 until the change.
    let login = h.login("new-admin@example.com", "initial-pass").await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.text());
    assert_eq!(login.json()["must_change_password"], true);
    let token = login.json()["token"].as_str().expect("token").to_owned();
    let second = h.login("new-admin@example.com", "initial-pass").await;
    let second = second.json()["token"].as_str().expect("token").to_owned();
    for uri in ["/api/v1/enterprises", "/api/v1/devices", "/api/v1/accounts"] {
        h.get(uri, &token).await.assert_error(StatusCode::FORBIDDEN, "password_change_required");
    }
    h.call(Method::POST, "/api/v1/account/totp/setup", Some(&token), None)
        .await
        .assert_error(StatusCode::FORBIDDEN, "password_change_required");

    let change = |current: &str, new: &str| serde_json::json!({ "current_password": current, "new_password": new });
    let path = "/api/v1/account/password";
    // A wrong current password is a failed login (401); a too-short or unchanged new one is 400.
    h.call(Method::POST, path, Some(&token), Some(change("wrong-password", "brand-new-pass")))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    let account = h.store.entities.account_by_email("new-admin@example.com").await.unwrap().expect("account");
    assert_eq!(account.failed_logins, 1);
    assert!(account.must_change_password);
    h.call(Method::POST, path, Some(&token), Some(change("initial-pass", "short")))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    h.call(Method::POST, path, Some(&token), Some(change("initial-pass", "initial-pass")))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    h.call(Method::POST, path, None, Some(change("initial-pass", "brand-new-pass")))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");

    // The change works and answers a fresh session; every earlier session ends.
    let changed = h.call(Method::POST, path, Some(&token), Some(change("initial-pass", "brand-new-pass"))).await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text());
    let body = changed.json();
    assert_eq!(body["must_change_password"], false);
    assert_eq!(body["account"]["email"], "new-admin@example.com");
    let fresh = body["token"].as_str().expect("token").to_owned();
    for old in [&token, &second] {
        h.get("/api/v1/enterprises", old).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    assert_eq!(h.get("/api/v1/enterprises", &fresh).await.status, StatusCode::OK);
    let account = h.store.entities.account_by_email("new-admin@example.com").await.unwrap().expect("account");
    assert!(!account.must_change_password);
    assert_eq!(account.failed_logins, 0);
    assert!(account.password_hash.starts_with("$argon2id$"));

    // The old password no longer logs in; the new one does, without a forced change.
    h.login("new-admin@example.com", "initial-pass").await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    let again = h.login("new-admin@example.com", "brand-new-pass").await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json()["must_change_password"], false);
    let token = again.json()["token"].as_str().expect("token").to_owned();
    assert_eq!(h.get("/api/v1/accounts", &token).await.status, StatusCode::OK);
}

#[tokio::test]
async fn an_account_that_must_change_its_password_may_log_out() {
    let h = harness();
    let admin = h.admin_token().await;
    let create = serde_json::json!({
        "email": "leaver@example.com", "password": "initial-pass", "role": "platform_admin"
    });
    assert_eq!(h.call(Method::POST, "/api/v1/accounts", Some(&admin), Some(create)).await.status, StatusCode::CREATED);
    let login = h.login("leaver@example.com", "initial-pass").await;
    let token = login.json()["token"].as_str().expect("token").to_owned();
    let out = h.call(Method::POST, "/api/v1/auth/logout", Some(&token), None).await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    h.get("/api/v1/enterprises", &token).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
}
