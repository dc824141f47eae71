//! Maintenance windows (issue 18): per enterprise, when alarms of some devices (the whole
//! enterprise, sites, groups or a device list) and types are recorded but not notified: once,
//! recurring in the enterprise's time zone, or while a scheduled task runs (a firmware
//! rollout). Alarms still active when a window ends are notified then; the window that held an
//! alarm back shows in its notification story (`alarm_notifications.rs`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use fleetpulse_proto::{AlarmTypeCode, EnterpriseId, WindowId};
use fleetpulse_store::{
    Feature, MAX_WINDOW_SCOPE_IDS, MAX_WINDOWS_PER_ENTERPRISE, StoredWindow, WindowScope, WindowSettings, WindowTiming,
};
use serde::{Deserialize, Serialize};

use crate::auth::AuthAdmin;
use crate::error::ApiError;
use crate::extract::{Json, Path};
use crate::openapi::{Operation, delete_, get_, post_, put_};
use crate::routes::enterprises;
use crate::state::AppState;
use crate::text;

/// Longest one-off window, in milliseconds (31 days; the engine's bound).
const MAX_ONCE_MS: i64 = 31 * 86_400_000;
/// Longest occurrence of a recurring window, in minutes (7 days; the engine's bound).
const MAX_RECURRING_MINUTES: u32 = 7 * 24 * 60;

/// Routes of this module: (path, handlers by method).
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/api/v1/enterprises/{id}/maintenance-windows", get(list).post(create)),
        ("/api/v1/maintenance-windows/{id}", get(show).put(replace).delete(remove)),
    ]
}

/// The OpenAPI operations of this module.
pub(crate) fn operations() -> Vec<Operation> {
    const ALARMS: &str = "alarms";
    vec![
        get_("/api/v1/enterprises/{id}/maintenance-windows", ALARMS, "The enterprise's maintenance windows")
            .answers::<WindowList>(200),
        post_(
            "/api/v1/enterprises/{id}/maintenance-windows",
            ALARMS,
            "Create a maintenance window: alarms of its devices and types raised inside it are recorded, not notified",
        )
        .body::<WindowRequest>()
        .answers::<StoredWindow>(201)
        .may_fail(&[409]),
        get_("/api/v1/maintenance-windows/{id}", ALARMS, "One maintenance window").answers::<StoredWindow>(200),
        put_("/api/v1/maintenance-windows/{id}", ALARMS, "Replace a maintenance window's settings")
            .body::<WindowRequest>()
            .answers::<StoredWindow>(200),
        delete_(
            "/api/v1/maintenance-windows/{id}",
            ALARMS,
            "Delete a maintenance window (what it held back is notified)",
        )
        .answers_raw(204, ""),
    ]
}

/// The body of create and replace.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WindowRequest {
    name: String,
    #[serde(default = "yes")]
    enabled: bool,
    /// Which devices (default: the whole enterprise).
    #[serde(default = "whole_enterprise")]
    scope: WindowScope,
    /// Alarm type codes (empty: every type).
    #[serde(default)]
    alarm_types: Vec<u16>,
    /// When it is active.
    timing: WindowTiming,
}

fn yes() -> bool {
    true
}

fn whole_enterprise() -> WindowScope {
    WindowScope::Enterprise
}

/// Checks a request against the enterprise (every site, group, device and task its own) and
/// turns it into stored settings. An id of another enterprise is "unknown", as one that does
/// not exist.
async fn settings(ctx: &AppState, enterprise: EnterpriseId, req: WindowRequest) -> Result<WindowSettings, ApiError> {
    let name = text::name("name", &req.name, text::MAX_NAME_CHARS)?;
    let mut alarm_types = Vec::with_capacity(req.alarm_types.len());
    for code in req.alarm_types {
        let code = AlarmTypeCode(code);
        if code.alarm_type().is_none() {
            return Err(ApiError::invalid(format!("unknown alarm type code {}", code.0)));
        }
        if !alarm_types.contains(&code) {
            alarm_types.push(code);
        }
    }
    let entities = &ctx.api.store.entities;
    let ids = match &req.scope {
        WindowScope::Enterprise => 0,
        WindowScope::Sites { ids } => ids.len(),
        WindowScope::Groups { ids } => ids.len(),
        WindowScope::Devices { ids } => ids.len(),
    };
    if ids > MAX_WINDOW_SCOPE_IDS {
        return Err(ApiError::invalid(format!("a window's scope lists at most {MAX_WINDOW_SCOPE_IDS} ids")));
    }
    let mut scope = req.scope;
    match &mut scope {
        WindowScope::Enterprise => {}
        WindowScope::Sites { ids } => {
            dedup(ids);
            for &id in ids.iter() {
                if entities.site(id).await?.is_none_or(|s| s.enterprise_id != enterprise) {
                    return Err(ApiError::invalid(format!("unknown site {id}")));
                }
            }
        }
        WindowScope::Groups { ids } => {
            dedup(ids);
            for &id in ids.iter() {
                if entities.group(id).await?.is_none_or(|g| g.enterprise_id != enterprise) {
                    return Err(ApiError::invalid(format!("unknown group {id}")));
                }
            }
        }
        WindowScope::Devices { ids } => {
            dedup(ids);
            for &id in ids.iter() {
                if entities.device(id).await?.is_none_or(|d| d.enterprise_id != enterprise) {
                    return Err(ApiError::invalid(format!("unknown device {id}")));
                }
            }
        }
    }
    let empty = match &scope {
        WindowScope::Enterprise => false,
        WindowScope::Sites { ids } => ids.is_empty(),
        WindowScope::Groups { ids } => ids.is_empty(),
        WindowScope::Devices { ids } => ids.is_empty(),
    };
    if empty {
        return Err(ApiError::invalid("a scope of sites, groups or devices lists at least one"));
    }
    let mut timing = req.timing;
    match &mut timing {
        WindowTiming::Once { start, end } => {
            if end <= start {
                return Err(ApiError::invalid("a window ends after it starts"));
            }
            if end.0.saturating_sub(start.0) > MAX_ONCE_MS {
                return Err(ApiError::invalid("a one-off window lasts at most 31 days"));
            }
        }
        WindowTiming::Recurring { weekdays, hour, minute, duration_minutes } => {
            weekdays.sort_unstable();
            weekdays.dedup();
            if weekdays.iter().any(|d| !(1..=7).contains(d)) {
                return Err(ApiError::invalid("weekdays are 1 (Monday) to 7 (Sunday)"));
            }
            if *hour > 23 || *minute > 59 {
                return Err(ApiError::invalid("the start is a time of day (hour 0-23, minute 0-59)"));
            }
            if *duration_minutes == 0 || *duration_minutes > MAX_RECURRING_MINUTES {
                return Err(ApiError::invalid("a recurring window lasts 1 minute to 7 days"));
            }
        }
        WindowTiming::WhileTask { task_id } => {
            if entities.task(*task_id).await?.is_none_or(|t| t.enterprise_id != enterprise) {
                return Err(ApiError::invalid(format!("unknown task {task_id}")));
            }
        }
    }
    Ok(WindowSettings { name, enabled: req.enabled, scope, alarm_types, timing })
}

fn dedup<T: Ord>(ids: &mut Vec<T>) {
    ids.sort_unstable();
    ids.dedup();
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct WindowList {
    items: Vec<StoredWindow>,
}

/// The window, checked against the caller's scope through its enterprise (404 outside it).
async fn find(ctx: &AppState, auth: &AuthAdmin, id: WindowId) -> Result<StoredWindow, ApiError> {
    auth.require(Feature::Strategies)?;
    match ctx.api.store.entities.window(id).await? {
        Some(w) if auth.can_see(ctx, w.enterprise_id).await? => Ok(w),
        _ => Err(ApiError::NotFound("maintenance window")),
    }
}

/// Tells the running alarm engine to reload the enterprise's windows.
async fn changed(ctx: &AppState, enterprise: EnterpriseId) {
    if let Some(alarms) = &ctx.api.alarms {
        alarms.send(fleetpulse_alarm_service::Control::WindowsChanged(enterprise)).await;
    }
}

/// `GET /api/v1/enterprises/{id}/maintenance-windows`.
async fn list(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<EnterpriseId>,
) -> Result<Json<WindowList>, ApiError> {
    auth.require(Feature::Strategies)?;
    let id = enterprises::find(&ctx, &auth, id).await?.id;
    Ok(Json(WindowList { items: ctx.api.store.entities.list_windows(id).await? }))
}

/// `POST /api/v1/enterprises/{id}/maintenance-windows`: 201 with the window.
async fn create(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<EnterpriseId>,
    Json(req): Json<WindowRequest>,
) -> Result<Response, ApiError> {
    auth.require(Feature::Strategies)?;
    let id = enterprises::find(&ctx, &auth, id).await?.id;
    auth.require_act(&ctx, id).await?;
    let settings = settings(&ctx, id, req).await?;
    if ctx.api.store.entities.list_windows(id).await?.len() >= MAX_WINDOWS_PER_ENTERPRISE {
        return Err(ApiError::Conflict(format!(
            "an enterprise has at most {MAX_WINDOWS_PER_ENTERPRISE} maintenance windows"
        )));
    }
    let created = ctx.api.store.entities.create_window(id, settings, ctx.clock.now()).await?;
    changed(&ctx, id).await;
    tracing::info!(message = "Created a maintenance window.", window = %created.id, enterprise = %id, by_account = %auth.account.id);
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// `GET /api/v1/maintenance-windows/{id}`.
async fn show(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<WindowId>,
) -> Result<Json<StoredWindow>, ApiError> {
    Ok(Json(find(&ctx, &auth, id).await?))
}

/// `PUT /api/v1/maintenance-windows/{id}`: replaces the settings. Alarms it no longer holds
/// back are notified at once.
async fn replace(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<WindowId>,
    Json(req): Json<WindowRequest>,
) -> Result<Json<StoredWindow>, ApiError> {
    let enterprise = find(&ctx, &auth, id).await?.enterprise_id;
    auth.require_act(&ctx, enterprise).await?;
    let settings = settings(&ctx, enterprise, req).await?;
    let updated = ctx.api.store.entities.update_window(id, settings, ctx.clock.now()).await?;
    changed(&ctx, enterprise).await;
    updated.map(Json).ok_or(ApiError::NotFound("maintenance window"))
}

/// `DELETE /api/v1/maintenance-windows/{id}`: 204. Alarms it held back are notified at once.
async fn remove(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<WindowId>,
) -> Result<StatusCode, ApiError> {
    let enterprise = find(&ctx, &auth, id).await?.enterprise_id;
    auth.require_act(&ctx, enterprise).await?;
    if ctx.api.store.entities.delete_window(id).await? {
        changed(&ctx, enterprise).await;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("maintenance window"))
    }
}
