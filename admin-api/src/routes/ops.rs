//! Operational endpoints, without authentication: `/healthz` (the process is alive), `/readyz`
//! (it serves traffic) and `/metrics` (OpenMetrics text exposition).

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::extract::Json;
use crate::state::AppState;

/// Content type of the OpenMetrics text format.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Routes of this module: (path, handlers by method).
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![("/healthz", get(healthz)), ("/readyz", get(readyz)), ("/metrics", get(metrics))]
}

/// `GET /healthz`: always 200 while the process can answer.
async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 once the process serves traffic, else 503 `not_ready`; 503
/// `storage_unavailable` while the store cannot write (disk full, I/O error), 200 again once it
/// can.
async fn readyz(State(ctx): State<AppState>) -> Result<Json<Value>, ApiError> {
    if !ctx.api.ready.load(Ordering::Acquire) {
        return Err(ApiError::NotReady);
    }
    if !ctx.api.store.events.writable() {
        return Err(ApiError::StorageUnavailable("the store reports that it cannot write".into()));
    }
    Ok(Json(json!({ "status": "ready" })))
}

/// `GET /metrics`: the shared registry, then the API's own metrics and the live-device gauges.
async fn metrics(State(ctx): State<AppState>) -> Result<Response, ApiError> {
    let text =
        ctx.metrics.render(&ctx.api.registry).map_err(|e| ApiError::Internal(format!("encoding metrics: {e}")))?;
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS))], text).into_response())
}
