//! The dashboard (DEV-2): device counts of the caller's scope, online and total, by type and by
//! model, from one indexed GROUP BY per grouping over the persisted device snapshot; by site
//! (PRV-1) when the dashboard is of one enterprise (one indexed GROUP BY over
//! `devices(enterprise_id, site_id, online)`). By group follows with device groups (PRV-2).

use axum::extract::{RawQuery, State};
use axum::routing::{MethodRouter, get};
use fleetpulse_store::{DeviceDashboard, DeviceQuery, LicenceCounts, SiteCount};
use serde::Serialize;

use crate::auth::AuthAdmin;
use crate::error::ApiError;
use crate::extract::Json;
use crate::routes::devices::parse_device_params;
use crate::state::AppState;

/// Routes of this module: (path, handlers by method).
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![("/api/v1/dashboard", get(dashboard))]
}

/// The dashboard's answer: the device counts, and by site when it is of one enterprise.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct Dashboard {
    #[serde(flatten)]
    devices: DeviceDashboard,
    /// Devices per site of the enterprise, the busiest first (every device of the enterprise:
    /// the other filters do not apply); null unless the dashboard is of exactly one enterprise.
    by_site: Option<Vec<SiteCount>>,
    /// The enterprise's allowance and licensed / unlicensed devices (ORD-3); null unless the
    /// dashboard is of exactly one enterprise.
    licences: Option<LicenceCounts>,
}

/// `GET /api/v1/dashboard?enterprise_id=&...`: counts of the devices the caller sees (scoped
/// like `GET /api/v1/devices`, whose filters it also takes; `sort`, `order`, `cursor` and
/// `limit` are refused). `{total, online, by_type: [{key, total, online}], by_model: [...],
/// models_truncated}`.
async fn dashboard(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Dashboard>, ApiError> {
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
    let one = match (&enterprises, &channels) {
        (Some(e), None) if e.len() == 1 => Some(e[0]),
        _ => None,
    };
    let query = DeviceQuery { enterprises, channels, ..params.query };
    let devices = ctx.api.store.entities.device_dashboard(query).await?;
    let (by_site, licences) = match one {
        Some(e) => {
            crate::licences::settle(&ctx).await?;
            let entities = &ctx.api.store.entities;
            (Some(entities.site_device_counts(e).await?), Some(entities.licence_counts(e).await?))
        }
        None => (None, None),
    };
    Ok(Json(Dashboard { devices, by_site, licences }))
}
