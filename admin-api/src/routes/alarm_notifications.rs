//! An alarm's notification story (`GET /api/v1/alarms/{id}/notifications`, issue 18): the
//! maintenance window that held it back, and the notification audit of its current (or last)
//! activation: what was planned for whom, grouped with what, deferred, retried, sent (the
//! relay's reply and the `Message-ID`) or given up, oldest first.

use axum::extract::State;
use axum::routing::{MethodRouter, get};
use fleetpulse_store::{AlarmRecord, AuditEntry, Feature, MAX_AUDIT_READ, WindowMark};
use serde::Serialize;

use crate::auth::AuthAdmin;
use crate::error::ApiError;
use crate::extract::{Json, Path, RowId};
use crate::openapi::{Operation, get_};
use crate::state::AppState;

/// Routes of this module: (path, handlers by method).
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![("/api/v1/alarms/{id}/notifications", get(notifications))]
}

/// The OpenAPI operations of this module.
pub(crate) fn operations() -> Vec<Operation> {
    vec![get_(
        "/api/v1/alarms/{id}/notifications",
        "alarms",
        "What happened to an alarm's notifications: the maintenance window that held it back, and every planned, deferred, retried, sent or failed notification",
    )
    .answers::<AlarmNotifications>(200)]
}

/// An alarm's notification story.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct AlarmNotifications {
    /// The alarm record.
    alarm: AlarmRecord,
    /// The maintenance window that held back its current (or last) activation's notification,
    /// and what became of it; `null` when none did.
    window: Option<WindowMark>,
    /// The activation's notification audit, oldest first (at most 500 entries).
    entries: Vec<AuditEntry>,
}

/// `GET /api/v1/alarms/{id}/notifications`: what happened to the alarm's notifications.
async fn notifications(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(RowId(id)): Path<RowId>,
) -> Result<Json<AlarmNotifications>, ApiError> {
    auth.require(Feature::Alarms)?;
    let alarm = match ctx.api.store.events.alarm_record(id).await? {
        Some(record) if auth.can_see(&ctx, record.enterprise_id).await? => record,
        _ => return Err(ApiError::NotFound("alarm")),
    };
    let entities = &ctx.api.store.entities;
    let window = entities.window_marks(vec![(alarm.device_id, alarm.code, alarm.first_at)]).await?.into_iter().next();
    let entries = entities.notification_audit(alarm.device_id, alarm.code, alarm.first_at, MAX_AUDIT_READ).await?;
    Ok(Json(AlarmNotifications { alarm, window, entries }))
}
