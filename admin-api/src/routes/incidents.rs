//! Site incidents (issue 18 item 3): the incidents the alarm engine opened when many devices of
//! one site raised the same alarm type within a strategy's window, listed per enterprise newest
//! first, and one incident with its counts and its member alarms. Read-only: an incident opens
//! and resolves by itself (its alarms are acknowledged and cleared as alarms).

use axum::extract::State;
use axum::routing::{MethodRouter, get};
use fleetpulse_proto::{EnterpriseId, IncidentId};
use fleetpulse_store::{Feature, IncidentMember, MAX_INCIDENT_PAGE, Page, StoredIncident};
use serde::{Deserialize, Serialize};

use crate::auth::AuthAdmin;
use crate::error::ApiError;
use crate::extract::{Json, Path, Query};
use crate::openapi::{Operation, get_};
use crate::routes::listing::{ListPage, page};
use crate::state::AppState;

/// Default length of a page of incidents.
const LIST_DEFAULT: u32 = 50;

/// Routes of this module: (path, handlers by method).
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![("/api/v1/incidents", get(list)), ("/api/v1/incidents/{id}", get(show))]
}

/// The OpenAPI operations of this module.
pub(crate) fn operations() -> Vec<Operation> {
    const ALARMS: &str = "alarms";
    vec![
        get_(
            "/api/v1/incidents",
            ALARMS,
            "An enterprise's site incidents, newest first (the caller's own enterprise, or enterprise_id)",
        )
        .query::<ListQuery>()
        .answers::<ListPage<StoredIncident>>(200),
        get_("/api/v1/incidents/{id}", ALARMS, "One site incident with its member alarms (at most 500, by device)")
            .answers::<IncidentDetail>(200),
    ]
}

/// The query string of the listing.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// The enterprise (required for channel and platform accounts).
    enterprise_id: Option<EnterpriseId>,
    /// Incidents with ids below this one (the previous page's `next_after`).
    after: Option<u64>,
    /// Page length, 1–500 (default 50).
    limit: Option<u32>,
}

/// One incident and its members.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct IncidentDetail {
    /// The incident.
    #[serde(flatten)]
    incident: StoredIncident,
    /// Its member alarms (device, start of the alarm's activation, whether it cleared), by
    /// device, at most 500.
    members: Vec<IncidentMember>,
}

/// `GET /api/v1/incidents?enterprise_id=&after=&limit=`.
async fn list(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<ListPage<StoredIncident>>, ApiError> {
    auth.require(Feature::Alarms)?;
    let page = page(q.after, q.limit, LIST_DEFAULT, MAX_INCIDENT_PAGE)?;
    let Some(enterprise) = auth.enterprise_filter(&ctx, q.enterprise_id).await? else {
        return Err(ApiError::invalid("enterprise_id is required"));
    };
    let items = ctx.api.store.entities.list_incidents(enterprise, page).await?;
    Ok(Json(ListPage::new(items, page, |i| i.id.0)))
}

/// `GET /api/v1/incidents/{id}`: 404 for an incident of an enterprise the caller does not see.
async fn show(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<IncidentId>,
) -> Result<Json<IncidentDetail>, ApiError> {
    auth.require(Feature::Alarms)?;
    let entities = &ctx.api.store.entities;
    let incident = match entities.incident(id).await? {
        Some(i) if auth.can_see(&ctx, i.enterprise_id).await? => i,
        _ => return Err(ApiError::NotFound("incident")),
    };
    let members = entities.incident_members(id, Page::first(MAX_INCIDENT_PAGE)).await?;
    Ok(Json(IncidentDetail { incident, members }))
}
