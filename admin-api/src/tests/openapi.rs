//! The OpenAPI document covers every route the router serves, and only those.

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode};
use serde_json::Value;

use super::*;

/// Every (method, route) the router serves: a method is served when the router does not answer
/// 405 for it (the request carries no token, so nothing runs past authentication).
async fn served(h: &Harness) -> BTreeSet<(String, String)> {
    let mut served = BTreeSet::new();
    for (path, _) in crate::routes::all() {
        let uri = path.replace("{id}", "1");
        for method in [Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            let reply = h.call(method.clone(), &uri, None, None).await;
            if reply.status != StatusCode::METHOD_NOT_ALLOWED {
                assert!(!reply.text().contains("route not found"), "{method} {uri} must reach its route");
                served.insert((method.to_string(), path.to_owned()));
            }
        }
    }
    served
}

/// Every `$ref` in the document.
fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_document_covers_exactly_the_served_routes() {
    let h = harness();
    h.ready.store(true, std::sync::atomic::Ordering::Release);
    let reply = h.call(Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(reply.status, StatusCode::OK, "served without a login");
    let doc = reply.json();
    assert_eq!(doc["openapi"], "3.0.3");
    let mut documented = BTreeSet::new();
    for (path, methods) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in methods.as_object().expect("methods") {
            documented.insert((method.to_uppercase(), path.clone()));
            // Every path parameter of the template is declared.
            let declared: Vec<&str> = operation["parameters"]
                .as_array()
                .map(|p| p.iter().filter(|p| p["in"] == "path").filter_map(|p| p["name"].as_str()).collect())
                .unwrap_or_default();
            assert_eq!(declared, crate::openapi::path_params(path), "{method} {path}");
            assert!(operation["summary"].as_str().is_some_and(|s| !s.is_empty()), "{method} {path}");
        }
    }
    let served = served(&h).await;
    let undocumented: Vec<_> = served.difference(&documented).collect();
    assert!(undocumented.is_empty(), "served but not in the OpenAPI document: {undocumented:?}");
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(unserved.is_empty(), "documented but not served: {unserved:?}");
    for required in [
        ("POST", "/api/v1/auth/login"),
        ("POST", "/api/v1/auth/logout"),
        ("GET", "/api/v1/channels"),
        ("POST", "/api/v1/channels"),
        ("GET", "/api/v1/enterprises"),
        ("POST", "/api/v1/enterprises"),
        ("GET", "/api/v1/devices"),
        ("GET", "/api/v1/devices/{id}"),
        ("GET", "/api/v1/alarms"),
        ("GET", "/api/v1/operation-logs"),
    ] {
        assert!(documented.contains(&(required.0.to_owned(), required.1.to_owned())), "{required:?}");
    }

    // Every reference resolves; schemas come from the handlers' types.
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("{r}"));
        assert!(doc["components"]["schemas"].get(name).is_some(), "{r} does not resolve");
    }
    let login = &doc["paths"]["/api/v1/auth/login"]["post"];
    let body = &login["requestBody"]["content"]["application/json"]["schema"]["$ref"];
    let body = body.as_str().and_then(|r| r.rsplit('/').next()).expect("login body ref");
    let properties = &doc["components"]["schemas"][body]["properties"];
    assert!(properties.get("email").is_some() && properties.get("password").is_some(), "{properties}");
    assert_eq!(login["security"], serde_json::json!([]), "login needs no session");
    let search = doc["paths"]["/api/v1/enterprises"]["get"]["parameters"].as_array().expect("parameters");
    assert!(search.iter().any(|p| p["name"] == "q" && p["in"] == "query"), "{search:?}");
}
