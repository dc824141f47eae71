//! The tenant tree (TEN-1..4): channels and sub-channels, and tenant accounts (listing, creating,
//! freezing). A channel account works inside its own subtree; an enterprise account has no
//! access to these routes (403).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use fleetpulse_proto::{AccountId, ChannelId, EnterpriseId};
use fleetpulse_store::{Account, AccountFilter, Channel, MAX_ACCOUNT_FILTER, NewAccount, NewChannel, Page, Role};
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
        ("/api/v1/accounts", get(list_accounts).post(create_account)),
        ("/api/v1/accounts/{id}", get(show_account)),
        ("/api/v1/accounts/{id}/freeze", post(freeze_account)),
        ("/api/v1/accounts/{id}/unfreeze", post(unfreeze_account)),
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
    /// The first password; generated (and emailed) when absent.
    #[serde(default)]
    password: Option<String>,
    role: Role,
    #[serde(default)]
    channel_id: Option<ChannelId>,
    #[serde(default)]
    enterprise_id: Option<EnterpriseId>,
}

/// An account as the API shows it: never its password hash nor its TOTP secret.
#[derive(Debug, Serialize)]
struct AccountBody {
    id: AccountId,
    email: String,
    role: Role,
    channel_id: Option<ChannelId>,
    enterprise_id: Option<EnterpriseId>,
    frozen: bool,
}

impl From<Account> for AccountBody {
    fn from(a: Account) -> Self {
        AccountBody {
            id: a.id,
            email: a.email,
            role: a.role,
            channel_id: a.channel_id,
            enterprise_id: a.enterprise_id,
            frozen: a.frozen,
        }
    }
}

/// `POST /api/v1/accounts` `{email, password?, role, channel_id?, enterprise_id?}`: creates a
/// platform admin (platform only), a channel admin of a channel in the caller's subtree, or an
/// enterprise admin of an enterprise the caller may see. 201. Without a password one is
/// generated; the account's details (and that temporary password) are emailed to it (TEN-1).
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
    let (password, generated) = crate::account_email::initial_password(req.password);
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(ApiError::invalid(format!("a password has at least {MIN_PASSWORD_CHARS} characters")));
    }
    let temporary = generated.then(|| password.clone());
    let password_hash = password_work(&ctx.password_checks, move || hash_password(&password)).await??;
    let new = NewAccount {
        email,
        password_hash,
        role: req.role,
        channel_id: req.channel_id,
        enterprise_id: req.enterprise_id,
        // ACC-2: an account created by another account changes its password at first login.
        must_change_password: true,
    };
    let account = ctx.api.store.entities.create_account(new).await?;
    crate::account_email::queue_account_created(&ctx, &account, temporary.as_deref()).await?;
    Ok((StatusCode::CREATED, Json(AccountBody::from(account))).into_response())
}

/// Enterprises read per page while collecting a channel admin's account filter.
const ENTERPRISE_FILTER_PAGE: u32 = 1000;

/// `GET /api/v1/accounts`: every account (platform), or the accounts of the channels of the
/// caller's subtree and of the enterprises in it (channel admin), ordered by id.
async fn list_accounts(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<ListPage<AccountBody>>, ApiError> {
    let page = page(q.after, q.limit, LIST_DEFAULT, LIST_MAX)?;
    let filter = match &auth.scope {
        Scope::Platform => AccountFilter::default(),
        Scope::Enterprise(_) => return Err(ApiError::Forbidden),
        Scope::Channel { subtree, .. } => {
            // The enterprises of the subtree, page by page, bounded like the filter itself.
            let entities = &ctx.api.store.entities;
            let mut enterprises = Vec::new();
            let mut after = 0;
            loop {
                let batch =
                    entities.list_enterprises_in(Some(subtree), Page { after, limit: ENTERPRISE_FILTER_PAGE }).await?;
                enterprises.extend(batch.iter().map(|e| e.id));
                if enterprises.len() > MAX_ACCOUNT_FILTER {
                    return Err(ApiError::invalid(format!(
                        "the subtree has more than {MAX_ACCOUNT_FILTER} enterprises to list accounts of"
                    )));
                }
                match batch.last() {
                    Some(last) if batch.len() >= ENTERPRISE_FILTER_PAGE as usize => after = last.id.0,
                    _ => break,
                }
            }
            AccountFilter { channels: Some(subtree.clone()), enterprises: Some(enterprises) }
        }
    };
    let items = ctx.api.store.entities.list_accounts(filter, page).await?;
    let items: Vec<AccountBody> = items.into_iter().map(AccountBody::from).collect();
    Ok(Json(ListPage::new(items, page, |a| a.id.0)))
}

/// The account, or 404 when it does not exist or the caller may not see it: visible to the
/// platform; to a channel admin when its channel is in the caller's subtree or its enterprise
/// is visible (platform admin accounts never are). Enterprise admins: 403.
pub(crate) async fn find_account(ctx: &AppState, auth: &AuthAdmin, id: AccountId) -> Result<Account, ApiError> {
    if matches!(auth.scope, Scope::Enterprise(_)) {
        return Err(ApiError::Forbidden);
    }
    let Some(account) = ctx.api.store.entities.account(id).await? else {
        return Err(ApiError::NotFound("account"));
    };
    let visible = match (&auth.scope, account.role) {
        (Scope::Platform, _) => true,
        (_, Role::PlatformAdmin) => false,
        _ => {
            account.channel_id.is_some_and(|c| auth.can_see_channel(c))
                || match account.enterprise_id {
                    Some(e) => auth.can_see(ctx, e).await?,
                    None => false,
                }
        }
    };
    if visible { Ok(account) } else { Err(ApiError::NotFound("account")) }
}

/// `GET /api/v1/accounts/{id}`.
async fn show_account(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<AccountId>,
) -> Result<Json<AccountBody>, ApiError> {
    Ok(Json(AccountBody::from(find_account(&ctx, &auth, id).await?)))
}

/// Freezes or unfreezes a visible account other than the caller's (409 for its own).
async fn set_frozen(ctx: &AppState, auth: &AuthAdmin, id: AccountId, frozen: bool) -> Result<AccountBody, ApiError> {
    let account = find_account(ctx, auth, id).await?;
    if account.id == auth.account.id {
        return Err(ApiError::Conflict("an account cannot freeze or unfreeze itself".into()));
    }
    let entities = &ctx.api.store.entities;
    if !entities.set_account_frozen(account.id, frozen).await? {
        return Err(ApiError::NotFound("account"));
    }
    let account = entities.account(account.id).await?.ok_or(ApiError::NotFound("account"))?;
    Ok(AccountBody::from(account))
}

/// `POST /api/v1/accounts/{id}/freeze` (TEN-2): the account can no longer log in and its
/// sessions end; 200 with the account.
async fn freeze_account(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<AccountId>,
) -> Result<Json<AccountBody>, ApiError> {
    Ok(Json(set_frozen(&ctx, &auth, id, true).await?))
}

/// `POST /api/v1/accounts/{id}/unfreeze` (TEN-2): the account can log in again; 200 with the
/// account.
async fn unfreeze_account(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<AccountId>,
) -> Result<Json<AccountBody>, ApiError> {
    Ok(Json(set_frozen(&ctx, &auth, id, false).await?))
}
