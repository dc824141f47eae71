//! Devices: the store's rows joined with the ingest tier's live state.

use axum::extract::State;
use axum::routing::{MethodRouter, get};
use fleetpulse_ingest::LiveDevice;
use fleetpulse_proto::{DeviceId, EnterpriseId};
use fleetpulse_store::Device;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::AuthAdmin;
use crate::error::ApiError;
use crate::extract::{Json, Path, Query};
use crate::routes::{ListPage, page};

/// Default and largest page of the device listing.
const LIST_DEFAULT: u32 = 50;
const LIST_MAX: u32 = 1000;

/// Routes of this module: (path, handlers by method).
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![("/api/v1/devices", get(list)), ("/api/v1/devices/{id}", get(show))]
}

/// A device as the API shows it: the stored row, its live state (null if the device was not
/// seen since the process started) and whether it is online.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct DeviceView {
    #[serde(flatten)]
    device: Device,
    live: Option<LiveDevice>,
    online: bool,
}

impl DeviceView {
    fn new(ctx: &AppState, device: Device) -> DeviceView {
        let live = ctx.api.live.get(device.id);
        let online = live.as_ref().is_some_and(|l| l.online);
        DeviceView { device, live, online }
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(crate) struct ListQuery {
    enterprise_id: Option<EnterpriseId>,
    after: Option<u64>,
    limit: Option<u32>,
}

/// `GET /api/v1/devices?enterprise_id=&after=&limit=`: devices ordered by id.
async fn list(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<ListPage<DeviceView>>, ApiError> {
    auth.require(fleetpulse_store::Feature::Devices)?;
    let page = page(q.after, q.limit, LIST_DEFAULT, LIST_MAX)?;
    let enterprise = auth.enterprise_filter(&ctx, q.enterprise_id).await?;
    let devices = ctx.api.store.entities.list_devices(enterprise, page).await?;
    let items = devices.into_iter().map(|d| DeviceView::new(&ctx, d)).collect();
    Ok(Json(ListPage::new(items, page, |d| d.device.id.0)))
}

/// `GET /api/v1/devices/{id}`: the device, or 404.
async fn show(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<DeviceId>,
) -> Result<Json<DeviceView>, ApiError> {
    auth.require(fleetpulse_store::Feature::Devices)?;
    match ctx.api.store.entities.device(id).await? {
        Some(d) if auth.can_see(&ctx, d.enterprise_id).await? => Ok(Json(DeviceView::new(&ctx, d))),
        _ => Err(ApiError::NotFound("device")),
    }
}
