//! Channel alarm strategies (issue 18): a channel's strategies, handed down to the enterprises of
//! its subtree as far as each one's inheritance says (`sub_channel_levels`), with what those
//! enterprises may do about it (`enterprises_may`: locked, opt out, override). Their receivers are
//! the channel's own addresses (its NOC). Created, listed, read, replaced and deleted by whoever
//! sees the channel; enterprise scopes get 403, channels outside the caller's subtree 404.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use fleetpulse_proto::{ChannelId, StrategyId};
use fleetpulse_store::{ChannelStrategy, EnterpriseFreedom, Feature, StrategyInheritance};
use serde::Serialize;

use crate::auth::AuthAdmin;
use crate::error::ApiError;
use crate::extract::{Json, Path};
use crate::routes::strategies::{StrategyRequest, settings};
use crate::routes::tenants;
use crate::state::AppState;

/// Most strategies of one channel.
pub(crate) const MAX_CHANNEL_STRATEGIES: usize = 16;

/// Routes of this module: (path, handlers by method).
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/api/v1/channels/{id}/alarm-strategies", get(list).post(create)),
        ("/api/v1/channel-alarm-strategies/{id}", get(show).put(replace).delete(remove)),
    ]
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct ChannelStrategyList {
    items: Vec<ChannelStrategy>,
}

/// Default inheritance: the whole subtree, locked.
const WHOLE_SUBTREE_LOCKED: StrategyInheritance =
    StrategyInheritance { sub_channel_levels: None, enterprises_may: EnterpriseFreedom::Locked };

/// The channel strategy, checked against the caller's scope through its channel.
async fn find(ctx: &AppState, auth: &AuthAdmin, id: StrategyId) -> Result<ChannelStrategy, ApiError> {
    auth.require(Feature::Strategies)?;
    let strategy = ctx.api.store.entities.channel_strategy(id).await?.ok_or(ApiError::NotFound("alarm strategy"))?;
    match tenants::find(ctx, auth, strategy.channel_id).await {
        Ok(_) => Ok(strategy),
        Err(ApiError::NotFound(_)) => Err(ApiError::NotFound("alarm strategy")),
        Err(other) => Err(other),
    }
}

/// Tells the running alarm engine to reload the strategies of the enterprises below the channel.
async fn changed(ctx: &AppState, channel: ChannelId) {
    if let Some(alarms) = &ctx.api.alarms {
        alarms.send(fleetpulse_alarm_service::Control::ChannelStrategiesChanged(channel)).await;
    }
}

/// `GET /api/v1/channels/{id}/alarm-strategies`.
async fn list(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<ChannelId>,
) -> Result<Json<ChannelStrategyList>, ApiError> {
    auth.require(Feature::Strategies)?;
    let id = tenants::find(&ctx, &auth, id).await?.id;
    Ok(Json(ChannelStrategyList { items: ctx.api.store.entities.list_channel_strategies(id).await? }))
}

/// `POST /api/v1/channels/{id}/alarm-strategies`: 201 with the strategy.
async fn create(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<ChannelId>,
    Json(mut req): Json<StrategyRequest>,
) -> Result<Response, ApiError> {
    auth.require(Feature::Strategies)?;
    let id = tenants::find(&ctx, &auth, id).await?.id;
    let inheritance = req.inheritance.take().unwrap_or(WHOLE_SUBTREE_LOCKED);
    let settings = settings(req)?;
    if ctx.api.store.entities.list_channel_strategies(id).await?.len() >= MAX_CHANNEL_STRATEGIES {
        return Err(ApiError::Conflict(format!("a channel has at most {MAX_CHANNEL_STRATEGIES} alarm strategies")));
    }
    let created = ctx.api.store.entities.create_channel_strategy(id, settings, inheritance, ctx.clock.now()).await?;
    changed(&ctx, id).await;
    tracing::info!(message = "Created a channel alarm strategy.", strategy = %created.id, channel = %id, by_account = %auth.account.id);
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// `GET /api/v1/channel-alarm-strategies/{id}`.
async fn show(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<StrategyId>,
) -> Result<Json<ChannelStrategy>, ApiError> {
    Ok(Json(find(&ctx, &auth, id).await?))
}

/// `PUT /api/v1/channel-alarm-strategies/{id}`: replaces the settings and the inheritance
/// (absent: the whole subtree, locked).
async fn replace(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<StrategyId>,
    Json(mut req): Json<StrategyRequest>,
) -> Result<Json<ChannelStrategy>, ApiError> {
    let channel = find(&ctx, &auth, id).await?.channel_id;
    let inheritance = req.inheritance.take().unwrap_or(WHOLE_SUBTREE_LOCKED);
    let settings = settings(req)?;
    let updated = ctx.api.store.entities.update_channel_strategy(id, settings, inheritance, ctx.clock.now()).await?;
    changed(&ctx, channel).await;
    updated.map(Json).ok_or(ApiError::NotFound("alarm strategy"))
}

/// `DELETE /api/v1/channel-alarm-strategies/{id}`: 204; enterprises' choices about it go too.
async fn remove(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<StrategyId>,
) -> Result<StatusCode, ApiError> {
    let channel = find(&ctx, &auth, id).await?.channel_id;
    if ctx.api.store.entities.delete_channel_strategy(id).await? {
        changed(&ctx, channel).await;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("alarm strategy"))
    }
}
