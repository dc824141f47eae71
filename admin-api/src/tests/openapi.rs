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
        let target = r.strip_prefix("#").and_then(|p| doc.pointer(p));
        assert!(target.is_some(), "{r} does not resolve");
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

/// The document is OpenAPI 3.0 throughout: no boolean schema, no tuple `items`, no `"null"`
/// type (the independent validator runs on the served document in `tests/openapi_client.rs`).
#[tokio::test]
async fn the_document_has_no_json_schema_2020_leftovers() {
    fn walk(value: &Value, path: &str, in_schema: bool, found: &mut Vec<String>) {
        match value {
            Value::Bool(_) if in_schema => found.push(format!("{path}: boolean schema")),
            Value::Object(map) => {
                for (key, v) in map {
                    if matches!(key.as_str(), "example" | "default" | "enum") {
                        continue;
                    }
                    let here = format!("{path}/{key}");
                    match key.as_str() {
                        "items" if v.is_array() => found.push(format!("{here}: tuple items")),
                        "type" if v.is_array() || v == "null" => found.push(format!("{here}: {v}")),
                        "const" | "prefixItems" | "$defs" | "examples" if in_schema => found.push(here.clone()),
                        _ => {}
                    }
                    let child_is_schema = matches!(key.as_str(), "schema" | "items" | "not")
                        || (in_schema && key == "additionalProperties" && v.is_object())
                        || path.ends_with("/properties")
                        || path.ends_with("/components/schemas");
                    walk(v, &here, child_is_schema, found);
                }
            }
            Value::Array(items) => {
                let list_of_schemas = ["allOf", "anyOf", "oneOf"].iter().any(|k| path.ends_with(k));
                for (i, v) in items.iter().enumerate() {
                    walk(v, &format!("{path}/{i}"), list_of_schemas, found);
                }
            }
            _ => {}
        }
    }
    let doc: Value = serde_json::from_str(&crate::routes::docs::served_document()).expect("JSON");
    let mut found = Vec::new();
    walk(&doc, "", false, &mut found);
    assert!(found.is_empty(), "not OpenAPI 3.0: {found:#?}");
    // Every operation documents its errors in the one shape; examples on the main operations.
    for (path, methods) in doc["paths"].as_object().expect("paths") {
        for (method, op) in methods.as_object().expect("methods") {
            let responses = op["responses"].as_object().expect("responses");
            assert!(responses.contains_key("default"), "{method} {path}");
            if op["security"] != serde_json::json!([]) {
                assert!(responses.contains_key("401") && responses.contains_key("403"), "{method} {path}");
            }
            if path.contains('{') {
                assert!(responses.contains_key("404"), "{method} {path}");
            }
        }
    }
    let ack = &doc["paths"]["/api/v1/alarms/{id}/acknowledge"]["post"];
    assert!(ack["responses"]["409"].is_object(), "{ack}");
    assert!(ack["responses"]["200"]["content"]["application/json"]["example"]["status"] == "acknowledged");
    let schemes = doc["components"]["securitySchemes"].as_object().expect("schemes");
    assert_eq!(schemes["csrf_token"]["name"], "X-CSRF-Token");
    assert_eq!(schemes["session_cookie"]["name"], "fp_session");
    let unknown = &doc["components"]["responses"]["NotFound"]["content"]["application/json"]["example"];
    assert_eq!(unknown["error"]["code"], "not_found");
}
