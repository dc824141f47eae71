//! Alarm records aggregated per (device, alarm type).

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use fleetpulse_alarm_service::Control;
use fleetpulse_proto::domain::{AlarmChange, AlarmChangeKind};
use fleetpulse_proto::{AlarmTypeCode, DeviceId, EnterpriseId, Severity, UnixMillis};
use fleetpulse_store::{AlarmFilter, AlarmLifecycle, AlarmRecord, AlarmStatus, EventBatch};
use serde::Deserialize;

use crate::auth::AuthAdmin;
use crate::error::ApiError;
use crate::extract::{Json, Path, Query, RowId};
use crate::routes::listing::{ListPage, page};
use crate::state::AppState;
use fleetpulse_store::Feature;

/// Default and largest page of the alarm listing.
const LIST_DEFAULT: u32 = 50;
const LIST_MAX: u32 = 1000;

/// Routes of this module: (path, handlers by method).
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/api/v1/alarms", get(list)),
        ("/api/v1/alarms/latest", get(latest)),
        ("/api/v1/alarms/{id}", get(show)),
        ("/api/v1/alarms/{id}/acknowledge", post(acknowledge)),
        ("/api/v1/alarms/{id}/clear", post(clear)),
        ("/api/v1/alarms/{id}/log", get(log)),
    ]
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    enterprise_id: Option<EnterpriseId>,
    device_id: Option<DeviceId>,
    /// Alarm type code.
    code: Option<u16>,
    severity: Option<Severity>,
    status: Option<AlarmStatusParam>,
    /// Latest occurrence at or after (unix ms).
    from: Option<i64>,
    /// Latest occurrence before (unix ms).
    to: Option<i64>,
    after: Option<u64>,
    limit: Option<u32>,
}

/// `status` query values.
#[derive(Debug, Clone, Copy, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum AlarmStatusParam {
    Active,
    Acknowledged,
    Cleared,
}

/// `GET /api/v1/alarms?enterprise_id=&device_id=&code=&severity=&status=&from=&to=&after=&limit=`:
/// alarm records ordered by id.
async fn list(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<ListPage<AlarmRecord>>, ApiError> {
    auth.require(Feature::Alarms)?;
    let page = page(q.after, q.limit, LIST_DEFAULT, LIST_MAX)?;
    if let Some(code) = q.code.map(AlarmTypeCode)
        && code.alarm_type().is_none()
    {
        return Err(ApiError::invalid(format!("unknown alarm type code {}", code.0)));
    }
    if let (Some(from), Some(to)) = (q.from, q.to)
        && from >= to
    {
        return Err(ApiError::invalid("from must be before to"));
    }
    let (enterprise, enterprises) = auth.listing_filter(&ctx, q.enterprise_id).await?;
    let filter = AlarmFilter {
        enterprise,
        enterprises,
        device: q.device_id,
        code: q.code.map(AlarmTypeCode),
        severity: q.severity,
        status: q.status.map(|s| match s {
            AlarmStatusParam::Active => AlarmStatus::Active,
            AlarmStatusParam::Acknowledged => AlarmStatus::Acknowledged,
            AlarmStatusParam::Cleared => AlarmStatus::Cleared,
        }),
        latest_from: q.from.map(UnixMillis),
        latest_to: q.to.map(UnixMillis),
    };
    let items = ctx.api.store.events.list_alarm_records(filter, page).await?;
    Ok(Json(ListPage::new(items, page, |a| a.id)))
}

/// Default and largest length of the latest-alarms feed.
const LATEST_DEFAULT: u32 = 20;
const LATEST_MAX: u32 = 100;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LatestQuery {
    enterprise_id: Option<EnterpriseId>,
    /// Only active (unacknowledged, uncleared) alarms.
    #[serde(default)]
    active_only: bool,
    /// The client's "seen up to" time (unix ms): items after it count as unread.
    since: Option<i64>,
    limit: Option<u32>,
}

/// The latest-alarms feed.
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
pub(crate) struct LatestFeed {
    /// Newest first (by latest occurrence).
    items: Vec<AlarmRecord>,
    /// Items whose latest occurrence is after `since` (all items without `since`).
    unread: usize,
}

/// `GET /api/v1/alarms/latest?enterprise_id=&active_only=&since=&limit=`: the "latest alarms"
/// feed behind the portal's bell icon (ALM-6): the caller's alarm records with the newest
/// occurrence first, and how many of them are newer than the client's `since`.
async fn latest(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Query(q): Query<LatestQuery>,
) -> Result<Json<LatestFeed>, ApiError> {
    auth.require(Feature::Alarms)?;
    let limit = q.limit.unwrap_or(LATEST_DEFAULT);
    if limit == 0 || limit > LATEST_MAX {
        return Err(ApiError::invalid(format!("limit must be between 1 and {LATEST_MAX}")));
    }
    let (enterprise, enterprises) = auth.listing_filter(&ctx, q.enterprise_id).await?;
    let filter = AlarmFilter {
        enterprise,
        enterprises,
        status: q.active_only.then_some(AlarmStatus::Active),
        ..AlarmFilter::default()
    };
    let items = ctx.api.store.events.latest_alarm_records(filter, limit).await?;
    let unread = items.iter().filter(|a| q.since.is_none_or(|since| a.latest_at.0 > since)).count();
    Ok(Json(LatestFeed { items, unread }))
}

/// The alarm record, or 404 if it does not exist or is outside the caller's scope.
async fn find(ctx: &AppState, auth: &AuthAdmin, id: u64) -> Result<AlarmRecord, ApiError> {
    auth.require(Feature::Alarms)?;
    match ctx.api.store.events.alarm_record(id).await? {
        Some(record) if auth.can_see(ctx, record.enterprise_id).await? => Ok(record),
        _ => Err(ApiError::NotFound("alarm")),
    }
}

/// `GET /api/v1/alarms/{id}`: one alarm record.
async fn show(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(RowId(id)): Path<RowId>,
) -> Result<Json<AlarmRecord>, ApiError> {
    Ok(Json(find(&ctx, &auth, id).await?))
}

/// `GET /api/v1/alarms/{id}/log`: the newest alarm log the device attached to this alarm (ALM-1:
/// Application crash, Application no response, Kernel panic), as a file download; 404 if none.
async fn log(auth: AuthAdmin, State(ctx): State<AppState>, Path(RowId(id)): Path<RowId>) -> Result<Response, ApiError> {
    let record = find(&ctx, &auth, id).await?;
    let Some((at, bytes)) = ctx.api.store.events.alarm_log(record.device_id, record.code).await? else {
        return Err(ApiError::NotFound("alarm log"));
    };
    let disposition = format!("attachment; filename=\"alarm-{id}-{}.log\"", at.0);
    let disposition =
        HeaderValue::try_from(disposition).map_err(|e| ApiError::Internal(format!("content-disposition: {e}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream")),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        bytes,
    )
        .into_response())
}

/// Appends one lifecycle change of the record and answers the record as it is after it, by the
/// rule the store applies ([`AlarmLifecycle::apply`]; on the scale-out store reads show it once
/// drained). A change the rule refuses (acknowledging an alarm that is not active, clearing a
/// cleared one) is 409 with the rule's reason, and nothing is appended.
async fn change(ctx: &AppState, record: AlarmRecord, kind: AlarmChangeKind) -> Result<Json<AlarmRecord>, ApiError> {
    let at = ctx.clock.now();
    let next = AlarmLifecycle::apply(Some(&record.lifecycle()), at, &kind)
        .map_err(|unchanged| ApiError::Conflict(unchanged.to_string()))?;
    let change = AlarmChange {
        device_id: record.device_id,
        enterprise_id: record.enterprise_id,
        code: record.code,
        at,
        kind: kind.clone(),
    };
    ctx.api.store.events.append(EventBatch { alarm_changes: vec![change], ..EventBatch::default() }).await?;
    if let Some(alarms) = &ctx.api.alarms {
        let (device_id, code) = (record.device_id, record.code);
        match kind {
            AlarmChangeKind::Acknowledge { by } => alarms.send(Control::Acknowledged { device_id, code, by, at }).await,
            AlarmChangeKind::ManualClear { by } => alarms.send(Control::Cleared { device_id, code, by, at }).await,
            AlarmChangeKind::Raise { .. } | AlarmChangeKind::Clear => {}
        }
    }
    Ok(Json(record.with_lifecycle(next)))
}

/// `POST /api/v1/alarms/{id}/acknowledge`: an active alarm becomes acknowledged (ALM-2); 409
/// for an alarm that is already acknowledged or cleared.
async fn acknowledge(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(RowId(id)): Path<RowId>,
) -> Result<Json<AlarmRecord>, ApiError> {
    let record = find(&ctx, &auth, id).await?;
    auth.require_act(&ctx, record.enterprise_id).await?;
    change(&ctx, record, AlarmChangeKind::Acknowledge { by: auth.account.id }).await
}

/// `POST /api/v1/alarms/{id}/clear`: an active or acknowledged alarm is cleared by hand; 409 for
/// an alarm that is already cleared.
async fn clear(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(RowId(id)): Path<RowId>,
) -> Result<Json<AlarmRecord>, ApiError> {
    let record = find(&ctx, &auth, id).await?;
    auth.require_act(&ctx, record.enterprise_id).await?;
    change(&ctx, record, AlarmChangeKind::ManualClear { by: auth.account.id }).await
}
