//! Ids and numbers from outside at the edge (issue 19, item 3): out-of-range, negative and
//! non-numeric ids answer 404 in a path and 400 in a query or body, never 500; walked from the
//! route table so that a new route is covered without being listed here.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use super::*;

/// Ids no store holds: the first parses but names nothing; the others do not parse into an id
/// (negative, at or above 2^63, at or above 2^64, not a number).
const IN_RANGE_MISSING: &str = "0";
const UNPARSABLE: &[&str] = &["-1", "9223372036854775808", "18446744073709551616", "abc"];

/// Every `{param}` of a route path replaced by `value`.
fn fill(path: &str, value: &str) -> String {
    path.split('/')
        .map(|seg| if seg.starts_with('{') && seg.ends_with('}') { value } else { seg })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn every_id_position_of_every_route_answers_404_for_ids_no_store_holds() {
    let h = harness();
    let token = h.admin_token().await;
    let mut cells = 0;
    for (path, _) in crate::routes::all() {
        if !path.contains('{') {
            continue;
        }
        for method in [Method::GET, Method::POST, Method::PUT, Method::DELETE] {
            let body = (method == Method::POST || method == Method::PUT).then(|| json!({}));
            for value in std::iter::once(IN_RANGE_MISSING).chain(UNPARSABLE.iter().copied()) {
                let uri = fill(path, value);
                let reply = h.call(method.clone(), &uri, Some(&token), body.clone()).await;
                if reply.status == StatusCode::METHOD_NOT_ALLOWED {
                    continue;
                }
                cells += 1;
                assert!(!reply.status.is_server_error(), "{method} {uri}: {} {}", reply.status, reply.text());
                if value == IN_RANGE_MISSING {
                    // Parsed; the body or the role (a platform feature) may be refused before the lookup.
                    assert!(
                        matches!(reply.status, StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST | StatusCode::FORBIDDEN),
                        "{method} {uri}: {} {}",
                        reply.status,
                        reply.text()
                    );
                } else {
                    reply.assert_error(StatusCode::NOT_FOUND, "not_found");
                }
            }
        }
    }
    assert!(cells >= 150, "the walk covered {cells} cells");
}

#[tokio::test]
async fn out_of_range_ids_in_queries_and_bodies_answer_400() {
    let h = harness();
    let token = h.admin_token().await;
    let channel = stored_channel(&h, "C", None).await;
    let enterprise = stored_enterprise(&h, "E", channel).await;
    let queries = [
        "/api/v1/enterprises?after=",
        "/api/v1/channels?after=",
        "/api/v1/accounts?after=",
        "/api/v1/sub-accounts?after=",
        "/api/v1/alarms?after=",
        "/api/v1/alarms?device_id=",
        "/api/v1/alarms?enterprise_id=",
        "/api/v1/alarms/latest?enterprise_id=",
        "/api/v1/alarms/summary?enterprise_id=",
        "/api/v1/dashboard?enterprise_id=",
        "/api/v1/devices?enterprise_id=",
        "/api/v1/operation-logs?after=",
        "/api/v1/operation-logs?enterprise_id=",
        "/api/v1/operation-logs/export?after=",
        "/api/v1/tasks?after=",
        "/api/v1/tasks?enterprise_id=",
    ];
    let stored_sequences = format!("/api/v1/enterprises/{enterprise}/stored-sequences?after=");
    for query in queries.iter().copied().chain([stored_sequences.as_str()]) {
        let reply = h.get(&format!("{query}1"), &token).await;
        assert!(reply.status.is_success(), "{query}1: an in-range id is fine: {} {}", reply.status, reply.text());
        for value in UNPARSABLE {
            let reply = h.get(&format!("{query}{value}"), &token).await;
            assert!(!reply.status.is_server_error(), "{query}{value}: {}", reply.text());
            reply.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
        }
    }
    let big = Value::from(9_223_372_036_854_775_808u64);
    let bodies = [
        (
            "/api/v1/sub-accounts",
            json!({"email": "s@example.com", "password": "long-enough-1", "features": ["devices"],
                   "data": {"only": {"enterprises": [big]}}}),
        ),
        ("/api/v1/enterprises", json!({"name": "x", "channel_id": big})),
        ("/api/v1/channels", json!({"name": "x", "parent_id": big})),
        ("/api/v1/commands", json!({"kind": "reboot", "device_ids": [big]})),
        ("/api/v1/commands", json!({"kind": "reboot", "device_ids": [-1]})),
        (
            "/api/v1/tasks",
            json!({"enterprise_id": big, "kind": "reboot", "targets": {"device_ids": [1]},
                   "schedule": {"kind": "daily", "time": "03:00"}}),
        ),
    ];
    for (uri, body) in bodies {
        let reply = h.call(Method::POST, uri, Some(&token), Some(body.clone())).await;
        assert!(!reply.status.is_server_error(), "{uri} {body}: {}", reply.text());
        reply.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    }
    assert!(h.store.entities.account_by_email("s@example.com").await.expect("read").is_none(), "nothing stored");
}
