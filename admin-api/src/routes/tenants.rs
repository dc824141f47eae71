//! The tenant tree (TEN-1..4): channels and sub-channels, and tenant accounts. A channel account
//! works inside its own subtree; an enterprise account has no access to these routes (403).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use fleetpulse_proto::{ChannelId, EnterpriseId};
use fleetpulse_store::{Channel, NewAccount, NewChannel, Role};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::{AuthAdmin, MIN_PASSWORD_CHARS, Scope, hash_password, normalize_email, password_work};
use crate::error::ApiError;
use crate::extract::{Json, Path, Query};
use crate::routes::{ListPage, page};

const LIST_DEFAULT: u32 = 50;
const LIST_MAX: u32 = 1000;

/// Routes of this module: (path, handlers by method).
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/api/v1/channels", get(list).post(create)),
        ("/api/v1/channels/{id}", get(show)),
        ("/api/v1/accounts", post(create_account)),
    ]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    after: Option<u64>,
    limit: Option<u32>,
}

/// `GET /api/v1/channels`: every channel (platform) or the sub-channels below the caller's
/// channel, ordered by id.
async fn list(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<ListPage<Channel>>, ApiError> {
    let page = page(q.after, q.limit, LIST_DEFAULT, LIST_MAX)?;
    let within = match &auth.scope {
        Scope::Platform => None,
        Scope::Channel { channel, .. } => Some(*channel),
        Scope::Enterprise(_) => return Err(ApiError::Forbidden),
    };
    let items = ctx.api.store.entities.list_channels(within, page).await?;
    Ok(Json(ListPage::new(items, page, |c| c.id.0)))
}

/// The channel, or 404 when it does not exist or is outside the caller's subtree.
async fn find(ctx: &AppState, auth: &AuthAdmin, id: ChannelId) -> Result<Channel, ApiError> {
    if matches!(auth.scope, Scope::Enterprise(_)) {
        return Err(ApiError::Forbidden);
    }
    match ctx.api.store.entities.channel(id).await? {
        Some(c) if auth.can_see_channel(c.id) => Ok(c),
        _ => Err(ApiError::NotFound("channel")),
    }
}

/// `GET /api/v1/channels/{id}`.
async fn show(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<ChannelId>,
) -> Result<Json<Channel>, ApiError> {
    Ok(Json(find(&ctx, &auth, id).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateChannel {
    name: String,
    /// The parent: none for a top-level channel (platform only); a channel account creates
    /// sub-channels below its own channel (the default) where the parent allows them.
    #[serde(default)]
    parent_id: Option<ChannelId>,
    #[serde(default)]
    allow_sub_channels: bool,
    #[serde(default)]
    device_management: bool,
    #[serde(default)]
    rps: bool,
    #[serde(default)]
    contact: String,
    #[serde(default)]
    email: String,
}

/// `POST /api/v1/channels`: 201 with the channel.
async fn create(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Json(req): Json<CreateChannel>,
) -> Result<Response, ApiError> {
    let parent_id = match (&auth.scope, req.parent_id) {
        (Scope::Enterprise(_), _) => return Err(ApiError::Forbidden),
        (Scope::Channel { channel, .. }, None) => Some(*channel),
        (_, Some(parent)) => Some(find(&ctx, &auth, parent).await?.id),
        (Scope::Platform, None) => None,
    };
    let new = NewChannel {
        name: req.name.trim().to_owned(),
        parent_id,
        allow_sub_channels: req.allow_sub_channels,
        device_management: req.device_management,
        rps: req.rps,
        contact: req.contact,
        email: req.email,
    };
    let channel = ctx.api.store.entities.create_channel(new, fleetpulse_proto::UnixMillis::now()).await?;
    Ok((StatusCode::CREATED, Json(channel)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateAccount {
    email: String,
    password: String,
    role: Role,
    #[serde(default)]
    channel_id: Option<ChannelId>,
    #[serde(default)]
    enterprise_id: Option<EnterpriseId>,
}

#[derive(Debug, Serialize)]
struct CreatedAccount {
    id: fleetpulse_proto::AccountId,
    email: String,
    role: Role,
    channel_id: Option<ChannelId>,
    enterprise_id: Option<EnterpriseId>,
}

/// `POST /api/v1/accounts` `{email, password, role, channel_id?, enterprise_id?}`: creates a
/// platform admin (platform only), a channel admin of a channel in the caller's subtree, or an
/// enterprise admin of an enterprise the caller may see. 201.
async fn create_account(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Json(req): Json<CreateAccount>,
) -> Result<Response, ApiError> {
    match (&auth.scope, req.role) {
        (Scope::Enterprise(_), _) => return Err(ApiError::Forbidden),
        (Scope::Channel { .. }, Role::PlatformAdmin) => return Err(ApiError::Forbidden),
        _ => {}
    }
    if let Some(channel) = req.channel_id {
        find(&ctx, &auth, channel).await?;
    }
    if let Some(enterprise) = req.enterprise_id
        && !auth.can_see(&ctx, enterprise).await?
    {
        return Err(ApiError::NotFound("enterprise"));
    }
    let email = normalize_email(&req.email)?;
    if req.password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(ApiError::invalid(format!("a password has at least {MIN_PASSWORD_CHARS} characters")));
    }
    let password = req.password;
    let password_hash = password_work(&ctx.password_checks, move || hash_password(&password)).await??;
    let new = NewAccount {
        email,
        password_hash,
        role: req.role,
        channel_id: req.channel_id,
        enterprise_id: req.enterprise_id,
    };
    let account = ctx.api.store.entities.create_account(new).await?;
    let body = CreatedAccount {
        id: account.id,
        email: account.email,
        role: account.role,
        channel_id: account.channel_id,
        enterprise_id: account.enterprise_id,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}
