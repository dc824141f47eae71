//! The dashboard (DEV-2): device counts of the caller's scope, online and total, by type and by
//! model, from one indexed GROUP BY per grouping over the persisted device snapshot. By site
//! and by group follow once sites (PRV-1) and device groups (PRV-2) exist.

use axum::extract::{RawQuery, State};
use axum::routing::{MethodRouter, get};
use fleetpulse_store::{DeviceDashboard, DeviceQuery};

use crate::auth::AuthAdmin;
use crate::error::ApiError;
use crate::extract::Json;
use crate::routes::devices::parse_device_params;
use crate::state::AppState;

/// Routes of this module: (path, handlers by method).
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![("/api/v1/dashboard", get(dashboard))]
}

/// `GET /api/v1/dashboard?enterprise_id=&...`: counts of the devices the caller sees (scoped
/// like `GET /api/v1/devices`, whose filters it also takes; `sort`, `order`, `cursor` and
/// `limit` are refused). `{total, online, by_type: [{key, total, online}], by_model: [...],
/// models_truncated}`.
async fn dashboard(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<DeviceDashboard>, ApiError> {
    auth.require(fleetpulse_store::Feature::Devices)?;
    let raw = raw.unwrap_or_default();
    let params = parse_device_params(&raw)?;
    if params.cursor.is_some()
        || params.limit.is_some()
        || params.query.sort != DeviceQuery::default().sort
        || params.query.descending
    {
        return Err(ApiError::invalid("the dashboard takes filters only (no sort, order, cursor or limit)"));
    }
    let (enterprises, channels) = auth.device_scope(&ctx, params.enterprises, params.channels).await?;
    let query = DeviceQuery { enterprises, channels, ..params.query };
    Ok(Json(ctx.api.store.entities.device_dashboard(query).await?))
}
