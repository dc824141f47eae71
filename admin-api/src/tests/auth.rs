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
