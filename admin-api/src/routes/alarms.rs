//! Alarm records aggregated per (device, alarm type).

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use fleetpulse_proto::{DeviceId, EnterpriseId};
use fleetpulse_store::{AlarmFilter, AlarmRecord};
use serde::Deserialize;

use crate::AppState;
use crate::auth::AuthAdmin;
use crate::error::ApiError;
use crate::extract::{Json, Query};
use crate::routes::{ListPage, page};

/// Default and largest page of the alarm listing.
const LIST_DEFAULT: u32 = 50;
const LIST_MAX: u32 = 1000;

/// Routes of this module.
pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/api/v1/alarms", get(list))
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    enterprise_id: Option<EnterpriseId>,
    device_id: Option<DeviceId>,
    after: Option<u64>,
    limit: Option<u32>,
}

/// `GET /api/v1/alarms?enterprise_id=&device_id=&after=&limit=`: alarm records ordered by id.
async fn list(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<ListPage<AlarmRecord>>, ApiError> {
    let page = page(q.after, q.limit, LIST_DEFAULT, LIST_MAX)?;
    let filter = AlarmFilter { enterprise: auth.enterprise_filter(q.enterprise_id), device: q.device_id };
    let items = ctx.api.store.events.list_alarm_records(filter, page).await?;
    Ok(Json(ListPage::new(items, page, |a| a.id)))
}
