//! Scheduled tasks (TSK-1): create (a command kind and arguments, target devices or a device
//! filter, a schedule in the enterprise's time zone), list, read, pause, resume, cancel, and
//! the runs of a task with their per-device results. The scheduler (`scheduler.rs`) runs them.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use fleetpulse_proto::{EnterpriseId, TaskId, UnixMillis};
use fleetpulse_store::{
    DeviceQuery, Feature, MAX_TASK_PAGE, MissedRuns, RunDevice, RunTotals, TASK_DEADLINE_RANGE_S, Task, TaskChange,
    TaskRun, TaskRunId, TaskSchedule, TaskTargets,
};
use serde::{Deserialize, Serialize};

use crate::auth::AuthAdmin;
use crate::error::ApiError;
use crate::extract::{Json, Path, Query};
use crate::routes::devices::parse_device_params;
use crate::routes::enterprises;
use crate::routes::listing::{ListPage, next_after, page};
use crate::schedule::{next_occurrence, time_zone};
use crate::state::AppState;
use crate::text;
use fleetpulse_store::MAX_TASK_NAME;

/// Default lifetime of a run's commands, seconds.
const DEFAULT_DEADLINE_S: u64 = 3_600;

/// How far in the past a one-shot time may be and still be accepted (it runs at once).
const ONCE_GRACE_MS: i64 = 60_000;

/// Default page of the listings.
const LIST_DEFAULT: u32 = 50;

/// Routes of this module: (path, handlers by method).
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/api/v1/tasks", get(list).post(create)),
        ("/api/v1/tasks/{id}", get(show).delete(cancel)),
        ("/api/v1/tasks/{id}/pause", post(pause)),
        ("/api/v1/tasks/{id}/resume", post(resume)),
        ("/api/v1/tasks/{id}/runs", get(runs)),
        ("/api/v1/tasks/{id}/runs/{run}", get(run)),
    ]
}

/// The body of `POST /api/v1/tasks`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TaskRequest {
    /// The enterprise (required unless the caller is an enterprise account).
    enterprise_id: Option<EnterpriseId>,
    /// A name for people; defaults to the kind.
    name: Option<String>,
    /// A command kind (`GET /api/v1/command-kinds`), or `upgrade_firmware` (arguments
    /// `{"image": <firmware image id>}`: each run gives each device of the image's model its own
    /// download link).
    kind: String,
    /// The command's arguments (an object; defaults filled in).
    #[serde(default)]
    args: serde_json::Value,
    /// Lifetime of each run's commands, seconds (60 to 604800; default 3600).
    deadline_s: Option<u64>,
    /// `{"device_ids": [..]}` or `{"filter": "model=T54W&online=true"}` (resolved at each run).
    targets: TaskTargets,
    /// `{"kind": "once", "at": ms}`, `{"kind": "daily", "time": "03:00"}` or
    /// `{"kind": "weekly", "days": ["monday"], "time": "03:00"}`.
    schedule: TaskSchedule,
    /// IANA time zone of the schedule; defaults to the enterprise's (UTC if it has none).
    time_zone: Option<String>,
    /// `run_once` (default) or `skip`: what a run missed while the server was down does.
    #[serde(default)]
    missed: MissedRuns,
}

/// The query string of the task list.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TaskListQuery {
    /// Only this enterprise's tasks.
    enterprise_id: Option<EnterpriseId>,
    after: Option<u64>,
    limit: Option<u32>,
}

/// Keyset paging of runs and run devices.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PageQuery {
    after: Option<u64>,
    limit: Option<u32>,
}

/// One run with its totals and a page of its per-device results.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct RunDetail {
    run: TaskRun,
    totals: RunTotals,
    /// Per-device results, ordered by device id.
    devices: Vec<RunDevice>,
    /// Pass as `after` for the next page of devices; null on the last.
    next_after: Option<u64>,
}

/// A task's filter as the scheduler runs it: the device list's query language
/// ([`parse_device_params`]) without tenant, cursor or limit parameters (a task's devices are
/// always those of its enterprise, all of them).
pub(crate) fn task_filter(raw: &str) -> Result<DeviceQuery, ApiError> {
    let params = parse_device_params(raw)?;
    if params.enterprises.is_some() || params.channels.is_some() {
        return Err(ApiError::invalid(
            "a task's filter takes no enterprise_id or channel_id: it targets its enterprise",
        ));
    }
    if params.cursor.is_some() || params.limit.is_some() {
        return Err(ApiError::invalid("a task's filter takes no cursor or limit: it targets every match"));
    }
    Ok(params.query)
}

/// The task, checked against the caller's scope through its enterprise (404 outside it).
async fn find(ctx: &AppState, auth: &AuthAdmin, id: TaskId) -> Result<Task, ApiError> {
    auth.require(Feature::Devices)?;
    match ctx.api.store.entities.task(id).await? {
        Some(t) if auth.can_see(ctx, t.enterprise_id).await? => Ok(t),
        _ => Err(ApiError::NotFound("task")),
    }
}

/// `POST /api/v1/tasks`: 201 with the task.
async fn create(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Json(req): Json<TaskRequest>,
) -> Result<Response, ApiError> {
    auth.require(Feature::Devices)?;
    let enterprise = auth
        .enterprise_filter(&ctx, req.enterprise_id)
        .await?
        .ok_or_else(|| ApiError::invalid("enterprise_id is required"))?;
    let enterprise = enterprises::find(&ctx, &auth, enterprise).await?;
    auth.require_device_management(&ctx, enterprise.id).await?;
    // A firmware upgrade task stores only its image; each run makes each device's own link.
    let args = if req.kind == fleetpulse_proto::commands::UPGRADE_FIRMWARE {
        crate::firmware::task_args(ctx.api.store.entities.as_ref(), enterprise.id, &req.args).await?
    } else if req.kind == crate::provisioning::PROVISION_TASK {
        crate::provisioning::provision_task_args(&req.args)?.to_string()
    } else {
        fleetpulse_proto::commands::validate_command(&req.kind, &req.args)
            .map_err(|e| ApiError::invalid(e.to_string()))?
            .to_string()
    };
    let deadline_s = req.deadline_s.unwrap_or(DEFAULT_DEADLINE_S);
    if !TASK_DEADLINE_RANGE_S.contains(&deadline_s) {
        return Err(ApiError::invalid(format!(
            "deadline_s must be between {} and {}",
            TASK_DEADLINE_RANGE_S.start(),
            TASK_DEADLINE_RANGE_S.end()
        )));
    }
    if let TaskTargets::Filter(raw) = &req.targets {
        task_filter(raw)?;
    }
    let zone_name = req.time_zone.unwrap_or_else(|| enterprise.profile.time_zone.clone());
    let zone_name = if zone_name.is_empty() { "UTC".to_owned() } else { zone_name };
    let tz = time_zone(&zone_name).map_err(ApiError::invalid)?;
    if matches!(&req.schedule, TaskSchedule::Weekly { days, .. } if days.is_empty()) {
        return Err(ApiError::invalid("a weekly schedule names at least one day"));
    }
    let now = ctx.clock.now();
    let next_run_at = match &req.schedule {
        TaskSchedule::Once { at } if at.0 < now.0.saturating_sub(ONCE_GRACE_MS) => {
            return Err(ApiError::invalid("schedule.at is in the past"));
        }
        TaskSchedule::Once { at } => Some(*at),
        schedule => next_occurrence(schedule, &tz, now),
    }
    .ok_or_else(|| ApiError::invalid("the schedule has no occurrence after now"))?;
    let new = fleetpulse_store::NewTask {
        enterprise_id: enterprise.id,
        name: match req.name {
            Some(n) => text::name("name", &n, MAX_TASK_NAME)?,
            None => req.kind.clone(),
        },
        kind: req.kind,
        args,
        deadline_s,
        targets: req.targets,
        schedule: req.schedule,
        time_zone: zone_name,
        missed: req.missed,
        created_by: auth.account.id,
        next_run_at,
    };
    let task = ctx.api.store.entities.create_task(new, now).await?;
    tracing::info!(message = "Created a scheduled task.", task = %task.id, enterprise = %task.enterprise_id, by_account = %auth.account.id);
    Ok((StatusCode::CREATED, Json(task)).into_response())
}

/// `GET /api/v1/tasks`: the caller's tasks (of one enterprise, or of every one it sees), by id.
async fn list(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Query(q): Query<TaskListQuery>,
) -> Result<Json<ListPage<Task>>, ApiError> {
    auth.require(Feature::Devices)?;
    let page = page(q.after, q.limit, LIST_DEFAULT, MAX_TASK_PAGE)?;
    let enterprises = match auth.listing_filter(&ctx, q.enterprise_id).await? {
        (Some(one), _) => Some(vec![one]),
        (None, visible) => visible,
    };
    let items = ctx.api.store.entities.list_tasks(enterprises, page).await?;
    Ok(Json(ListPage::new(items, page, |t| t.id.0)))
}

/// `GET /api/v1/tasks/{id}`.
async fn show(auth: AuthAdmin, State(ctx): State<AppState>, Path(id): Path<TaskId>) -> Result<Json<Task>, ApiError> {
    Ok(Json(find(&ctx, &auth, id).await?))
}

/// Applies a change to a task the caller may change: the task as it is now, or 409 when its
/// state does not allow the change.
async fn change(ctx: &AppState, auth: &AuthAdmin, id: TaskId, what: &str) -> Result<Json<Task>, ApiError> {
    let task = find(ctx, auth, id).await?;
    if what == "resume" {
        auth.require_device_management(ctx, task.enterprise_id).await?;
    } else {
        auth.require_act(ctx, task.enterprise_id).await?;
    }
    let now = ctx.clock.now();
    let change = match what {
        "pause" => TaskChange::Pause,
        "cancel" => TaskChange::Cancel,
        _ => TaskChange::Resume { next_run_at: resume_at(&task, now)? },
    };
    if change.apply(task.state).is_none() {
        return Err(ApiError::Conflict(format!("a {} task cannot {what}", task.state.as_str())));
    }
    let changed = ctx.api.store.entities.change_task(id, change, now).await?.ok_or(ApiError::NotFound("task"))?;
    if changed.state != change.target() {
        return Err(ApiError::Conflict(format!("a {} task cannot {what}", changed.state.as_str())));
    }
    tracing::info!(message = "Changed a scheduled task.", task = %id, change = what, by_account = %auth.account.id);
    Ok(Json(changed))
}

/// When a resumed task runs next: its next occurrence after now (occurrences while it was
/// paused are not run); a one-shot task whose time passed while paused runs at once.
fn resume_at(task: &Task, now: UnixMillis) -> Result<UnixMillis, ApiError> {
    if let TaskSchedule::Once { at } = task.schedule {
        return Ok(at.max(now));
    }
    let tz = time_zone(&task.time_zone).map_err(ApiError::invalid)?;
    next_occurrence(&task.schedule, &tz, now)
        .ok_or_else(|| ApiError::invalid("the schedule has no occurrence after now"))
}

/// `POST /api/v1/tasks/{id}/pause`: an active task stops running until resumed.
async fn pause(auth: AuthAdmin, State(ctx): State<AppState>, Path(id): Path<TaskId>) -> Result<Json<Task>, ApiError> {
    change(&ctx, &auth, id, "pause").await
}

/// `POST /api/v1/tasks/{id}/resume`: a paused task runs again from its next occurrence.
async fn resume(auth: AuthAdmin, State(ctx): State<AppState>, Path(id): Path<TaskId>) -> Result<Json<Task>, ApiError> {
    change(&ctx, &auth, id, "resume").await
}

/// `DELETE /api/v1/tasks/{id}`: cancels an active or paused task (it and its runs stay
/// readable; commands already queued are not touched).
async fn cancel(auth: AuthAdmin, State(ctx): State<AppState>, Path(id): Path<TaskId>) -> Result<Json<Task>, ApiError> {
    change(&ctx, &auth, id, "cancel").await
}

/// `GET /api/v1/tasks/{id}/runs`: newest first.
async fn runs(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<TaskId>,
    Query(q): Query<PageQuery>,
) -> Result<Json<ListPage<TaskRun>>, ApiError> {
    let task = find(&ctx, &auth, id).await?;
    let page = page(q.after, q.limit, LIST_DEFAULT, MAX_TASK_PAGE)?;
    let items = ctx.api.store.entities.task_runs(task.id, page).await?;
    Ok(Json(ListPage::new(items, page, |r| r.id.0)))
}

/// `GET /api/v1/tasks/{id}/runs/{run}`: the run, its totals, a page of its devices.
async fn run(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path((id, run)): Path<(TaskId, TaskRunId)>,
    Query(q): Query<PageQuery>,
) -> Result<Json<RunDetail>, ApiError> {
    let task = find(&ctx, &auth, id).await?;
    let page = page(q.after, q.limit, MAX_TASK_PAGE, MAX_TASK_PAGE)?;
    let entities = &ctx.api.store.entities;
    let run = entities.task_run(run).await?.filter(|r| r.task_id == task.id).ok_or(ApiError::NotFound("task run"))?;
    let totals = entities.task_run_totals(run.id).await?;
    let devices = entities.task_run_devices(run.id, page).await?;
    let next_after = next_after(&devices, page, |d| d.device_id.0);
    Ok(Json(RunDetail { run, totals, devices, next_after }))
}
