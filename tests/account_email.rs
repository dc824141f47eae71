//! End-to-end password reset (ACC-4): the real `fleetpulse` binary and a real SMTP server
//! (aiosmtpd) on loopback. The reset email arrives through the durable outbox, its link resets
//! the password once, and the new password logs in.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::alarms::{emails, mail_config, to};
use common::{ADMIN_EMAIL, ADMIN_PASSWORD, TestServer};
use fleetpulse_testkit::smtp::SmtpServer;
use serde_json::{Value, json};

/// The message body as sent, with quoted-printable soft line breaks and `=3D` undone (enough
/// for the ASCII bodies of account emails).
fn decoded(message: &str) -> String {
    message.replace("=\r\n", "").replace("=\n", "").replace("=3D", "=")
}

async fn post(client: &reqwest::Client, base: &str, path: &str, body: Value) -> (u16, Value) {
    let resp = client.post(format!("{base}{path}")).json(&body).send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_password_is_reset_once_by_the_emailed_link() {
    let smtp = SmtpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), None, &mail_config(&smtp, ""));
    let base = server.api();
    let client = reqwest::Client::new();

    // Known and unknown emails get the same answer; only the known one gets an email.
    let (unknown, _) =
        post(&client, &base, "/api/v1/auth/forgot-password", json!({"email": "nobody@example.com"})).await;
    let (known, _) = post(&client, &base, "/api/v1/auth/forgot-password", json!({"email": ADMIN_EMAIL})).await;
    assert_eq!((unknown, known), (202, 202));
    let arrived = emails(&smtp, 1, Duration::from_secs(20)).await;
    assert_eq!(arrived.len(), 1, "the reset email arrives");
    let email = decoded(&arrived[0]);
    assert_eq!(to(&email), ADMIN_EMAIL);
    assert!(email.contains("Subject: [fleetpulse] Reset your password"), "{email}");
    let prefix = "https://portal.fleetpulse.test/reset-password?token=";
    let start = email.find(prefix).unwrap_or_else(|| panic!("no link in {email}")) + prefix.len();
    let token: String = email[start..].chars().take_while(char::is_ascii_hexdigit).collect();
    assert_eq!(token.len(), 64, "{email}");

    // The link works once.
    let body = json!({"token": token, "new_password": "a-brand-new-password"});
    let (first, _) = post(&client, &base, "/api/v1/auth/reset-password", body.clone()).await;
    assert_eq!(first, 204);
    let (second, refused) = post(&client, &base, "/api/v1/auth/reset-password", body).await;
    assert_eq!((second, refused["error"]["code"].as_str()), (400, Some("invalid_reset_token")));

    // The new password logs in, the old one no longer does.
    let login = |password: &str| json!({"email": ADMIN_EMAIL, "password": password});
    let (new, session) = post(&client, &base, "/api/v1/auth/login", login("a-brand-new-password")).await;
    assert_eq!(new, 200);
    assert!(session["token"].as_str().is_some_and(|t| t.len() == 64));
    let (old, _) = post(&client, &base, "/api/v1/auth/login", login(ADMIN_PASSWORD)).await;
    assert_eq!(old, 401);

    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(smtp.messages().len(), 1, "nothing was sent for the unknown email");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emailed_login_code_opens_a_new_session() {
    let smtp = SmtpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), None, &mail_config(&smtp, ""));
    let base = server.api();
    let api = common::Api::login(&base).await;
    let settings = api.put("/api/v1/account", json!({"login_protection": "email"})).await;
    assert_eq!(settings["login_protection"], "email");

    let client = reqwest::Client::new();
    let login = json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD});
    let (status, answer) = post(&client, &base, "/api/v1/auth/login", login).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (401, Some("mfa_required")));
    let challenge = answer["challenge"].as_str().unwrap().to_owned();
    let arrived = emails(&smtp, 1, Duration::from_secs(20)).await;
    assert_eq!(arrived.len(), 1, "the code arrives");
    let email = decoded(&arrived[0]);
    let marker = "Your fleetpulse login code is ";
    let start = email.find(marker).unwrap_or_else(|| panic!("no code in {email}")) + marker.len();
    let code: String = email[start..].chars().take_while(char::is_ascii_digit).collect();
    assert_eq!(code.len(), 6, "{email}");

    let verify = json!({"challenge": challenge, "code": code});
    let (status, session) = post(&client, &base, "/api/v1/auth/login/verify", verify.clone()).await;
    assert_eq!(status, 200, "{session}");
    let token = session["token"].as_str().unwrap();
    assert_ne!(token, challenge);
    let me = client.get(format!("{base}/api/v1/account")).bearer_auth(token).send().await.unwrap();
    assert_eq!(me.status().as_u16(), 200);
    let (again, _) = post(&client, &base, "/api/v1/auth/login/verify", verify).await;
    assert_eq!(again, 401, "the code works once");
}
