//! Human-entered text and emails at the edge (issue 19, items 4 and 5 of the findings): one
//! check for every text field (no control characters, bounded length, one error shape) and
//! emails parsed as the mailer parses them, before anything is stored.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use super::*;

/// The emails the mailer cannot send to (and a header injection).
const UNSENDABLE: &[&str] =
    &["\"evil>\"@x.y", "a@x.y,evil@z.w", "bcc:evil@x.y", "x@y.z>", "ümlaut@x.y", "a@x.y\r\nBcc: evil@z.w"];

/// A refusal in the one shape: 400 `invalid_request`, naming the field.
fn assert_refused(reply: &Reply, what: &str, field: &str) {
    reply.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    let message = reply.json()["error"]["message"].as_str().unwrap_or_default().to_owned();
    assert!(message.contains(field), "{what}: the message names {field}: {message}");
}

#[tokio::test]
async fn every_text_field_refuses_control_characters_and_overlong_values_alike() {
    let h = harness();
    let token = h.admin_token().await;
    let channel = stored_channel(&h, "C", None).await;
    let enterprise = stored_enterprise(&h, "E", channel).await;
    let long = |n: usize| "x".repeat(n);
    // (method, uri, body, field): every one must be refused in the same shape.
    let cases: Vec<(Method, String, Value, &str)> = vec![
        (Method::POST, "/api/v1/channels".into(), json!({"name": "chan\r\nX-Injected: 1"}), "name"),
        (Method::POST, "/api/v1/channels".into(), json!({"name": long(201)}), "name"),
        (Method::POST, "/api/v1/channels".into(), json!({"name": "ok", "contact": "a\u{7}b"}), "contact"),
        (Method::POST, "/api/v1/channels".into(), json!({"name": "ok", "phone": "1\n2"}), "phone"),
        (Method::PUT, format!("/api/v1/channels/{channel}"), json!({"name": "x\ny"}), "name"),
        (Method::PUT, format!("/api/v1/channels/{channel}"), json!({"contact": "\u{202E}gnp.exe"}), "contact"),
        (Method::POST, "/api/v1/enterprises".into(), json!({"name": "e\r\n1", "channel_id": channel}), "name"),
        (Method::POST, "/api/v1/enterprises".into(), json!({"name": long(129), "channel_id": channel}), "name"),
        (Method::PUT, format!("/api/v1/enterprises/{enterprise}"), json!({"name": "\u{0}"}), "name"),
        (Method::PUT, format!("/api/v1/enterprises/{enterprise}"), json!({"contact": "a\u{2028}b"}), "contact"),
        (Method::PUT, format!("/api/v1/enterprises/{enterprise}"), json!({"contact": long(129)}), "contact"),
        (Method::PUT, "/api/v1/account".into(), json!({"contact_name": "a\rb"}), "contact_name"),
        (Method::PUT, "/api/v1/account".into(), json!({"country": long(65)}), "country"),
        (Method::POST, "/api/v1/device-labels".into(), json!({"name": "a\nb", "filter": "online=true"}), "name"),
        (
            Method::POST,
            format!("/api/v1/enterprises/{enterprise}/alarm-strategies"),
            json!({"name": "s\u{1b}[31m", "receivers": ["ops@x.example"]}),
            "name",
        ),
    ];
    for (method, uri, body, field) in cases {
        let reply = h.call(method.clone(), &uri, Some(&token), Some(body.clone())).await;
        assert_refused(&reply, &format!("{method} {uri} {body}"), field);
        let message = reply.json()["error"]["message"].as_str().unwrap_or_default().to_owned();
        assert!(message.ends_with("characters and no control characters"), "{method} {uri}: {message}");
    }
    // Nothing was stored or changed.
    let channels = h.get("/api/v1/channels", &token).await;
    assert_eq!(item_ids(&channels), [channel.0], "no channel was created");
    assert_eq!(channels.json()["items"][0]["name"], "C");
    let shown = h.get(&format!("/api/v1/enterprises/{enterprise}"), &token).await.json();
    assert_eq!((shown["name"].as_str(), shown["contact"].as_str()), (Some("E"), Some("")));
}

#[tokio::test]
async fn emails_the_mailer_cannot_send_to_are_refused_before_anything_is_stored() {
    let h = harness();
    let token = h.admin_token().await;
    let channel = stored_channel(&h, "C", None).await;
    let enterprise = stored_enterprise(&h, "E", channel).await;
    let accounts_before = item_ids(&h.get("/api/v1/accounts", &token).await);
    for &bad in UNSENDABLE {
        let cases: Vec<(Method, String, Value, &str)> = vec![
            (
                Method::POST,
                "/api/v1/accounts".into(),
                json!({"email": bad, "role": "enterprise_admin", "enterprise_id": enterprise}),
                "",
            ),
            (Method::POST, "/api/v1/auth/forgot-password".into(), json!({"email": bad}), ""),
            (Method::POST, "/api/v1/channels".into(), json!({"name": "ok", "email": bad}), "email"),
            (Method::PUT, format!("/api/v1/channels/{channel}"), json!({"email": bad}), "email"),
            (
                Method::PUT,
                format!("/api/v1/enterprises/{enterprise}"),
                json!({"master_admin_email": bad}),
                "master_admin_email",
            ),
            (
                Method::POST,
                format!("/api/v1/enterprises/{enterprise}/alarm-strategies"),
                json!({"name": "s", "receivers": [bad]}),
                "",
            ),
        ];
        for (method, uri, body, field) in cases {
            let reply = h.call(method.clone(), &uri, Some(&token), Some(body)).await;
            assert_refused(&reply, &format!("{method} {uri} {bad:?}"), field);
        }
    }
    assert_eq!(item_ids(&h.get("/api/v1/accounts", &token).await), accounts_before, "no account was created");
    let strategies = h.get(&format!("/api/v1/enterprises/{enterprise}/alarm-strategies"), &token).await.json();
    assert_eq!(strategies["items"].as_array().map(Vec::len), Some(0), "{strategies}");
    // A sendable address still works everywhere.
    let ok = json!({"email": "new.admin+e@example.com", "role": "enterprise_admin", "enterprise_id": enterprise});
    let reply = h.call(Method::POST, "/api/v1/accounts", Some(&token), Some(ok)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
}
