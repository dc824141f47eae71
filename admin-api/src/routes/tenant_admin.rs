//! Tenant administration (TEN-5, TEN-1): editing and deleting one's sub-accounts, freezing a
//! whole tenant (a channel with its subtree, or an enterprise: every account under it) and
//! unfreezing exactly what that froze, and moving an enterprise to another channel. Who may do
//! what is the policy's (`Target::SubAccount`, `Target::FreezeTenant`, `Target::MoveEnterprise`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{MethodRouter, get, post};
use fleetpulse_proto::{AccountId, ChannelId, EnterpriseId};
use fleetpulse_store::{DataPermission, Enterprise, Feature, Permissions, TenantFreeze, TenantRef};
use serde::{Deserialize, Serialize};

use crate::auth::AuthAdmin;
use crate::error::ApiError;
use crate::extract::{Json, Path};
use crate::openapi::{Operation, delete_, get_, post_, put_};
use crate::policy::{Target, TenantTree};
use crate::routes::tenants::AccountBody;
use crate::state::AppState;

/// Routes of this module: (path, handlers by method).
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/api/v1/sub-accounts/{id}", get(show_sub_account).put(edit_sub_account).delete(delete_sub_account)),
        ("/api/v1/channels/{id}/freeze", get(channel_freeze).post(freeze_channel)),
        ("/api/v1/channels/{id}/unfreeze", post(unfreeze_channel)),
        ("/api/v1/enterprises/{id}/freeze", get(enterprise_freeze).post(freeze_enterprise)),
        ("/api/v1/enterprises/{id}/unfreeze", post(unfreeze_enterprise)),
        ("/api/v1/enterprises/{id}/move", post(move_enterprise)),
    ]
}

/// The documented operations of this module.
pub(crate) fn operations() -> Vec<Operation> {
    const TENANTS: &str = "tenants";
    vec![
        get_("/api/v1/sub-accounts/{id}", TENANTS, "One of the caller's sub-accounts, with its contact name")
            .answers::<SubAccountView>(200),
        put_(
            "/api/v1/sub-accounts/{id}",
            TENANTS,
            "Edit one of the caller's sub-accounts: contact name, features, data permissions (given fields only)",
        )
        .body::<EditSubAccount>()
        .answers::<SubAccountView>(200),
        delete_("/api/v1/sub-accounts/{id}", TENANTS, "Delete one of the caller's sub-accounts; its sessions end at once")
            .answers_raw(204, ""),
        get_("/api/v1/channels/{id}/freeze", TENANTS, "The channel's freeze (404 when it is not frozen)")
            .answers::<TenantFreeze>(200),
        post_(
            "/api/v1/channels/{id}/freeze",
            TENANTS,
            "Freeze every account of a channel, its sub-channels and their enterprises; their sessions end",
        )
        .answers::<TenantFreeze>(200)
        .may_fail(&[409]),
        post_("/api/v1/channels/{id}/unfreeze", TENANTS, "Unfreeze exactly the accounts the channel's freeze froze")
            .answers::<Unfrozen>(200)
            .may_fail(&[409]),
        get_("/api/v1/enterprises/{id}/freeze", TENANTS, "The enterprise's freeze (404 when it is not frozen)")
            .answers::<TenantFreeze>(200),
        post_("/api/v1/enterprises/{id}/freeze", TENANTS, "Freeze every account of an enterprise; their sessions end")
            .answers::<TenantFreeze>(200)
            .may_fail(&[409]),
        post_("/api/v1/enterprises/{id}/unfreeze", TENANTS, "Unfreeze exactly the accounts the enterprise's freeze froze")
            .answers::<Unfrozen>(200)
            .may_fail(&[409]),
        post_(
            "/api/v1/enterprises/{id}/move",
            TENANTS,
            "Move an enterprise under another channel; its orders, licences and devices go with it, its channel authorization is reset",
        )
        .body::<MoveEnterprise>()
        .answers::<Enterprise>(200),
    ]
}

/// A sub-account with its contact name.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct SubAccountView {
    #[serde(flatten)]
    account: AccountBody,
    /// The name of the person behind it (its settings' contact name).
    contact_name: String,
}

/// The caller's own sub-account (another account's: 404), with its contact name.
async fn own_sub_account(ctx: &AppState, auth: &AuthAdmin, id: AccountId) -> Result<SubAccountView, ApiError> {
    crate::policy::decide(&auth.caller, &Target::SubAccounts, &TenantTree::default())?;
    let mut looked = auth.decide(ctx, Target::SubAccount(id)).await?;
    let account = looked.take_account(id).ok_or(ApiError::NotFound("account"))?;
    let settings = ctx.api.store.entities.account_settings(id).await?.unwrap_or_default();
    Ok(SubAccountView { account: AccountBody::from(account), contact_name: settings.contact_name })
}

/// `GET /api/v1/sub-accounts/{id}`.
async fn show_sub_account(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<AccountId>,
) -> Result<Json<SubAccountView>, ApiError> {
    Ok(Json(own_sub_account(&ctx, &auth, id).await?))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EditSubAccount {
    /// The name of the person behind the sub-account.
    contact_name: Option<String>,
    /// The features it may use (replacing the list).
    features: Option<Vec<Feature>>,
    /// Whose data it sees (replacing it): `"all"` or `{"only": {"channels": [..], "enterprises": [..]}}`.
    data: Option<DataPermission>,
}

/// `PUT /api/v1/sub-accounts/{id}` `{contact_name?, features?, data?}` (TEN-5): the given fields
/// change, the others stay; new permissions apply from its next request. Data permissions may
/// name only channels and enterprises the caller sees (404 otherwise). Its login email is not
/// editable (delete it and create another).
async fn edit_sub_account(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<AccountId>,
    Json(req): Json<EditSubAccount>,
) -> Result<Json<SubAccountView>, ApiError> {
    let current = own_sub_account(&ctx, &auth, id).await?;
    let entities = &ctx.api.store.entities;
    if req.features.is_some() || req.data.is_some() {
        let old = current
            .account
            .permissions()
            .cloned()
            .unwrap_or(Permissions { features: vec![], data: DataPermission::All });
        let permissions =
            Permissions { features: req.features.unwrap_or(old.features), data: req.data.unwrap_or(old.data) }
                .normalized()?;
        if let DataPermission::Only { channels, enterprises } = &permissions.data {
            for &channel in channels {
                auth.decide(&ctx, Target::GrantChannel(channel)).await?;
            }
            for &enterprise in enterprises {
                auth.decide(&ctx, Target::GrantEnterprise(enterprise)).await?;
            }
        }
        if !entities.set_account_permissions(id, permissions).await? {
            return Err(ApiError::NotFound("account"));
        }
    }
    if let Some(name) = req.contact_name {
        let name = crate::text::text("contact_name", &name, fleetpulse_store::MAX_CONTACT_NAME_CHARS)?;
        let mut settings = entities.account_settings(id).await?.unwrap_or_default();
        settings.contact_name = name;
        if !entities.set_account_settings(id, settings).await? {
            return Err(ApiError::NotFound("account"));
        }
    }
    Ok(Json(own_sub_account(&ctx, &auth, id).await?))
}

/// `DELETE /api/v1/sub-accounts/{id}` (TEN-5): deletes one of the caller's sub-accounts: its
/// sessions end at once, it can no longer log in, its email may be used again; what it did
/// (commands, tasks, the operation log) keeps its id. 204.
async fn delete_sub_account(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<AccountId>,
) -> Result<StatusCode, ApiError> {
    own_sub_account(&ctx, &auth, id).await?;
    if !ctx.api.store.entities.delete_sub_account(id, ctx.clock.now()).await? {
        return Err(ApiError::NotFound("account"));
    }
    tracing::info!(message = "Deleted a sub-account.", account = %id, by_account = %auth.account.id);
    Ok(StatusCode::NO_CONTENT)
}

/// How many accounts an unfreeze gave back their login.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct Unfrozen {
    /// The tenant.
    tenant: TenantRef,
    /// Accounts unfrozen (those frozen by hand or by another tenant's freeze stay frozen).
    accounts: u64,
}

/// 403 unless the caller may use the accounts feature, then the policy's word on the tenant.
async fn may_freeze(ctx: &AppState, auth: &AuthAdmin, tenant: TenantRef) -> Result<(), ApiError> {
    auth.require(Feature::Accounts)?;
    auth.decide(ctx, Target::FreezeTenant(tenant)).await.map(drop)
}

async fn freeze(ctx: &AppState, auth: &AuthAdmin, tenant: TenantRef) -> Result<Json<TenantFreeze>, ApiError> {
    may_freeze(ctx, auth, tenant).await?;
    let frozen = ctx.api.store.entities.freeze_tenant(tenant, auth.account.id, ctx.clock.now()).await?;
    let frozen = frozen.ok_or_else(|| ApiError::Conflict("the tenant is frozen already".into()))?;
    tracing::info!(message = "Froze a tenant.", tenant = %tenant.key(), accounts = frozen.accounts, by_account = %auth.account.id);
    Ok(Json(frozen))
}

async fn unfreeze(ctx: &AppState, auth: &AuthAdmin, tenant: TenantRef) -> Result<Json<Unfrozen>, ApiError> {
    may_freeze(ctx, auth, tenant).await?;
    let accounts = ctx.api.store.entities.unfreeze_tenant(tenant).await?;
    let accounts = accounts.ok_or_else(|| ApiError::Conflict("the tenant is not frozen".into()))?;
    Ok(Json(Unfrozen { tenant, accounts }))
}

async fn freeze_state(ctx: &AppState, auth: &AuthAdmin, tenant: TenantRef) -> Result<Json<TenantFreeze>, ApiError> {
    may_freeze(ctx, auth, tenant).await?;
    ctx.api.store.entities.tenant_freeze(tenant).await?.map(Json).ok_or(ApiError::NotFound("freeze"))
}

/// `GET /api/v1/channels/{id}/freeze`: the channel's freeze, 404 when it is not frozen.
async fn channel_freeze(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<ChannelId>,
) -> Result<Json<TenantFreeze>, ApiError> {
    freeze_state(&ctx, &auth, TenantRef::Channel(id)).await
}

/// `POST /api/v1/channels/{id}/freeze` (TEN-5): every account of the channel, of the channels
/// below it and of their enterprises (sub-accounts included) that is not frozen yet is frozen,
/// and their sessions end. 409 if the channel is frozen already, or is the caller's own.
async fn freeze_channel(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<ChannelId>,
) -> Result<Json<TenantFreeze>, ApiError> {
    freeze(&ctx, &auth, TenantRef::Channel(id)).await
}

/// `POST /api/v1/channels/{id}/unfreeze`: exactly the accounts its freeze froze log in again.
async fn unfreeze_channel(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<ChannelId>,
) -> Result<Json<Unfrozen>, ApiError> {
    unfreeze(&ctx, &auth, TenantRef::Channel(id)).await
}

/// `GET /api/v1/enterprises/{id}/freeze`: the enterprise's freeze, 404 when it is not frozen.
async fn enterprise_freeze(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<EnterpriseId>,
) -> Result<Json<TenantFreeze>, ApiError> {
    freeze_state(&ctx, &auth, TenantRef::Enterprise(id)).await
}

/// `POST /api/v1/enterprises/{id}/freeze` (TEN-5): every account of the enterprise that is not
/// frozen yet is frozen and its sessions end (a channel acting inside it keeps its session).
async fn freeze_enterprise(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<EnterpriseId>,
) -> Result<Json<TenantFreeze>, ApiError> {
    freeze(&ctx, &auth, TenantRef::Enterprise(id)).await
}

/// `POST /api/v1/enterprises/{id}/unfreeze`.
async fn unfreeze_enterprise(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<EnterpriseId>,
) -> Result<Json<Unfrozen>, ApiError> {
    unfreeze(&ctx, &auth, TenantRef::Enterprise(id)).await
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MoveEnterprise {
    /// The new managing channel; null: directly under the platform (platform only).
    channel_id: Option<ChannelId>,
}

/// `POST /api/v1/enterprises/{id}/move` `{channel_id}`: the enterprise moves under the channel
/// (both visible to the caller; the platform, or a channel within its subtree). Its orders,
/// their allowance and its devices' licences go with it unchanged (orders keep
/// `seller_channel_id`); the old channel no longer sees any of it, the new one does. Its
/// authorization of its channel (TEN-3) is reset to `none` and sessions acting inside it end.
async fn move_enterprise(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<EnterpriseId>,
    Json(req): Json<MoveEnterprise>,
) -> Result<Json<Enterprise>, ApiError> {
    auth.require(Feature::Enterprises)?;
    auth.decide(&ctx, Target::MoveEnterprise { id, to: req.channel_id }).await?;
    let moved = ctx.api.store.entities.move_enterprise(id, req.channel_id).await?;
    let moved = moved.ok_or(ApiError::NotFound("enterprise"))?;
    tracing::info!(message = "Moved an enterprise.", enterprise = %id, to = ?req.channel_id, by_account = %auth.account.id);
    Ok(Json(moved))
}
