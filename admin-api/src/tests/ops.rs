//! `/healthz`, `/readyz` and `/metrics`.

use std::sync::atomic::Ordering;

use axum::http::{Method, StatusCode, header};
use prometheus_client::metrics::counter::Counter;
use serde_json::json;

use super::*;

#[tokio::test]
async fn healthz_is_always_ok() {
    let h = harness();
    let reply = h.call(Method::GET, "/healthz", None, None).await;
    assert_eq!((reply.status, reply.json()), (StatusCode::OK, json!({ "status": "ok" })));
}

#[tokio::test]
async fn readyz_follows_the_flag() {
    let h = harness();
    h.call(Method::GET, "/readyz", None, None).await.assert_error(StatusCode::SERVICE_UNAVAILABLE, "not_ready");
    h.ready.store(true, Ordering::Release);
    let reply = h.call(Method::GET, "/readyz", None, None).await;
    assert_eq!((reply.status, reply.json()), (StatusCode::OK, json!({ "status": "ready" })));
    h.ready.store(false, Ordering::Release);
    h.call(Method::GET, "/readyz", None, None).await.assert_error(StatusCode::SERVICE_UNAVAILABLE, "not_ready");
}

#[tokio::test]
async fn metrics_expose_the_shared_registry_the_api_counters_and_the_live_gauges() {
    let mut registry = Registry::default();
    let shared = Counter::<u64>::default();
    registry.register("fleetpulse_test_events", "A metric of another component", shared.clone());
    shared.inc_by(7);
    let h = harness_with(ApiConfig::default(), registry);
    h.call(Method::GET, "/healthz", None, None).await;
    h.call(Method::GET, "/nope", None, None).await;

    let reply = h.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let text = reply.text();
    for line in [
        "fleetpulse_test_events_total 7\n",
        "# TYPE fleetpulse_devices_online gauge\n",
        "fleetpulse_devices_online 0\n",
        "fleetpulse_devices_connected 0\n",
        "fleetpulse_devices_known 0\n",
        "fleetpulse_api_requests_total{class=\"2xx\"} 1\n",
        "fleetpulse_api_requests_total{class=\"4xx\"} 1\n",
        "fleetpulse_api_requests_total{class=\"5xx\"} 0\n",
        "fleetpulse_api_login_failures_total 0\n",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert_eq!(text.matches("# EOF").count(), 1, "{text}");
}
