//! Dead letters (issue 18 item 5): device events and their effects that the pipeline gave up
//! after their retries (`fleetpulse_store::DeadLetterStore`), listed for the platform and
//! replayed into the stage they failed at: `alarm_engine` and `alarm_effects` through the alarm
//! service (`AlarmHandle::replay`), `snapshots` into the device store's snapshot write. A replay
//! that succeeds deletes the dead letter; one that fails again leaves it (503). Replays are
//! idempotent where it matters: a notification's items already queued are left out and the
//! outbox refuses a message key twice, so a replayed alarm is not emailed twice.
//!
//! Platform accounts only (full ones): dead letters are the operator's view of the pipeline and
//! a snapshot letter has no enterprise. A tenant account gets 403 on the listings and 404 on one
//! dead letter, as for any object outside its scope ([`policy::dead_letters`]).

use axum::extract::State;
use axum::routing::{MethodRouter, get, post};
use fleetpulse_store::{
    DeadLetter, DeadLetterFilter, DeadLetterId, DeadLetterStage, DeviceSnapshotUpdate, MAX_DEAD_LETTER_PAGE, Page,
};
use serde::{Deserialize, Serialize};

use crate::auth::AuthAdmin;
use crate::error::ApiError;
use crate::extract::{Json, Path, Query, RowId};
use crate::openapi::{Operation, get_, post_};
use crate::policy;
use crate::routes::listing::{ListPage, cursor};
use crate::state::AppState;

/// Default page of the listing.
const LIST_DEFAULT: u32 = 100;
/// Most dead letters one "replay all" call takes on.
const REPLAY_ALL_MAX: usize = 1_000;

/// Routes of this module: (path, handlers by method).
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/api/v1/dead-letters", get(list)),
        ("/api/v1/dead-letters/replay", post(replay_all)),
        ("/api/v1/dead-letters/{id}", get(show)),
        ("/api/v1/dead-letters/{id}/replay", post(replay_one)),
    ]
}

/// The OpenAPI operations of this module.
pub(crate) fn operations() -> Vec<Operation> {
    const OPS: &str = "operations";
    vec![
        get_("/api/v1/dead-letters", OPS, "Events the pipeline gave up after their retries (platform accounts)")
            .query::<ListQuery>()
            .answers::<ListPage<DeadLetter>>(200),
        post_(
            "/api/v1/dead-letters/replay",
            OPS,
            "Replay the dead letters of one stage (at most 1,000, oldest first); each that succeeds is deleted",
        )
        .query::<StageQuery>()
        .answers::<ReplayAll>(200),
        get_("/api/v1/dead-letters/{id}", OPS, "One dead letter with its copy of the event").answers::<DeadLetter>(200),
        post_(
            "/api/v1/dead-letters/{id}/replay",
            OPS,
            "Feed a dead letter back into the stage it failed at; deleted once it succeeds (503 if it fails again)",
        )
        .answers::<Replayed>(200)
        .may_fail(&[409, 503]),
    ]
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// Only this stage: `alarm_engine`, `alarm_effects` or `snapshots`.
    stage: Option<String>,
    after: Option<u64>,
    limit: Option<u32>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StageQuery {
    /// The stage: `alarm_engine`, `alarm_effects` or `snapshots`.
    stage: String,
}

/// The answer of a replay.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct Replayed {
    /// The dead letter, now deleted.
    id: DeadLetterId,
    /// Its stage.
    stage: DeadLetterStage,
}

/// The answer of a replay of a stage.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct ReplayAll {
    /// Replayed and deleted.
    replayed: u32,
    /// Failed again or not replayable (kept), with why.
    failed: Vec<ReplayFailure>,
}

/// A dead letter a replay of its stage left.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct ReplayFailure {
    /// The dead letter.
    id: DeadLetterId,
    /// Why it is still there.
    error: String,
}

fn stage(name: &str) -> Result<DeadLetterStage, ApiError> {
    DeadLetterStage::parse(name)
        .ok_or_else(|| ApiError::invalid(format!("unknown stage {name:?}: alarm_engine, alarm_effects or snapshots")))
}

/// `GET /api/v1/dead-letters`: oldest first, by stage.
async fn list(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<ListPage<DeadLetter>>, ApiError> {
    policy::dead_letters(&auth.caller, None)?;
    let max = u32::try_from(MAX_DEAD_LETTER_PAGE).unwrap_or(u32::MAX);
    let limit = q.limit.unwrap_or(LIST_DEFAULT);
    if !(1..=max).contains(&limit) {
        return Err(ApiError::invalid(format!("limit must be between 1 and {max}")));
    }
    let after = cursor(q.after)?;
    let filter = DeadLetterFilter {
        stage: q.stage.as_deref().map(stage).transpose()?,
        after: (after > 0).then_some(DeadLetterId(after)),
    };
    let items = ctx.api.store.entities.list_dead_letters(filter, limit as usize).await?;
    Ok(Json(ListPage::new(items, Page { after, limit }, |d| d.id.0)))
}

/// The dead letter `id`, 404 when absent or the caller is not the platform.
async fn find(ctx: &AppState, auth: &AuthAdmin, id: RowId) -> Result<DeadLetter, ApiError> {
    policy::dead_letters(&auth.caller, Some(id.0))?;
    ctx.api.store.entities.dead_letter(DeadLetterId(id.0)).await?.ok_or(ApiError::NotFound("dead letter"))
}

/// `GET /api/v1/dead-letters/{id}`.
async fn show(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<RowId>,
) -> Result<Json<DeadLetter>, ApiError> {
    Ok(Json(find(&ctx, &auth, id).await?))
}

/// `POST /api/v1/dead-letters/{id}/replay`.
async fn replay_one(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<RowId>,
) -> Result<Json<Replayed>, ApiError> {
    let letter = find(&ctx, &auth, id).await?;
    replay(&ctx, &letter).await?;
    Ok(Json(Replayed { id: letter.id, stage: letter.stage }))
}

/// `POST /api/v1/dead-letters/replay?stage=…`: the stage's dead letters, oldest first, each on
/// its own; the answer says which are left and why.
async fn replay_all(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Query(q): Query<StageQuery>,
) -> Result<Json<ReplayAll>, ApiError> {
    policy::dead_letters(&auth.caller, None)?;
    let filter = DeadLetterFilter { stage: Some(stage(&q.stage)?), after: None };
    let letters = ctx.api.store.entities.list_dead_letters(filter, REPLAY_ALL_MAX).await?;
    let mut answer = ReplayAll { replayed: 0, failed: Vec::new() };
    for letter in letters {
        match replay(&ctx, &letter).await {
            Ok(()) => answer.replayed += 1,
            Err(error) => answer.failed.push(ReplayFailure { id: letter.id, error: error.to_string() }),
        }
    }
    Ok(Json(answer))
}

/// A snapshot dead letter's copy (`ingest::snapshots::snapshot_payload`).
#[derive(Deserialize)]
struct SnapshotCopy {
    update: DeviceSnapshotUpdate,
}

/// Feeds `letter` back into its stage and deletes it once that succeeded.
async fn replay(ctx: &AppState, letter: &DeadLetter) -> Result<(), ApiError> {
    match letter.stage {
        DeadLetterStage::AlarmEngine | DeadLetterStage::AlarmEffects => {
            let alarms = ctx.api.alarms.as_ref().ok_or(ApiError::NotReady)?;
            alarms.replay(&letter.payload).await.map_err(|error| match error {
                fleetpulse_alarm_service::ReplayError::NotReplayable(why) => {
                    ApiError::Conflict(format!("this dead letter cannot be replayed: {why}"))
                }
                fleetpulse_alarm_service::ReplayError::Failed(why) => ApiError::StorageUnavailable(why),
                fleetpulse_alarm_service::ReplayError::Stopped => ApiError::NotReady,
            })?;
        }
        DeadLetterStage::Snapshots => {
            let copy: SnapshotCopy = serde_json::from_value(letter.payload.clone())
                .map_err(|e| ApiError::Conflict(format!("this dead letter cannot be replayed: {e}")))?;
            ctx.api.store.entities.update_device_snapshots(vec![copy.update]).await?;
        }
    }
    ctx.api.store.entities.delete_dead_letter(letter.id).await?;
    Ok(())
}
