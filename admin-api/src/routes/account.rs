//! The caller's own account and password recovery (ACC-3..5): settings, forgotten passwords,
//! reset links (also triggered by admins).
//!
//! `forgot-password` and `reset-password` need no session; the others go
//! through [`AuthAdmin`] like every other route.

use std::sync::{Arc, LazyLock};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use fleetpulse_proto::AccountId;
use fleetpulse_store::{AccountSettings, LoginProtection};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::auth::AuthAdmin;
use crate::email_address::normalize_email;
use crate::error::ApiError;
use crate::extract::{Json, Path};
use crate::operation_log::Actor;
use crate::password::{check_password_policy, hash_password, password_work};
use crate::secrets;
use crate::state::AppState;
use crate::text;
use fleetpulse_store::{MAX_CONTACT_NAME_CHARS, MAX_COUNTRY_CHARS, MAX_PHONE_CHARS};

/// Forgotten-password requests whose work (lookup, token, email) runs at once after their 202;
/// more wait for a free slot.
const FORGOT_PASSWORD_WORKERS: usize = 16;
/// Longest reset token considered (they are 64 hex digits).
const MAX_RESET_TOKEN_CHARS: usize = 128;

/// Routes of this module: (path, handlers by method).
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/api/v1/auth/forgot-password", post(forgot_password)),
        ("/api/v1/auth/reset-password", post(reset_password)),
        ("/api/v1/account", get(show_settings).put(update_settings)),
        ("/api/v1/accounts/{id}/reset-password", post(admin_reset_password)),
    ]
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ForgotPassword {
    email: String,
}

/// Bounds the forgotten-password work running in the background.
static FORGOT_PASSWORD_SLOTS: LazyLock<Arc<Semaphore>> =
    LazyLock::new(|| Arc::new(Semaphore::new(FORGOT_PASSWORD_WORKERS)));

/// `POST /api/v1/auth/forgot-password` `{email}` (ACC-4): 202 whether or not the email names an
/// account (400 only for something that is not an email address). The work happens after the
/// answer, so known and unknown emails answer alike: for a known, unfrozen account a
/// single-use reset token (valid `password_reset_ttl`) replaces any earlier one and an email
/// with the link `{portal_url}/reset-password?token=…` is queued.
async fn forgot_password(
    State(ctx): State<AppState>,
    ip: crate::rate_limit::ClientIp,
    Json(req): Json<ForgotPassword>,
) -> Result<Response, ApiError> {
    ctx.login_limits.check(ip.0, Some(&req.email))?;
    let email = normalize_email(&req.email)?;
    let slot = FORGOT_PASSWORD_SLOTS
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| ApiError::Internal("forgotten-password slots closed".into()))?;
    let work_ctx = ctx.clone();
    let work_email = email.clone();
    tokio::spawn(async move {
        if let Err(error) = forgot_password_work(&work_ctx, &work_email).await {
            tracing::error!(message = "Forgotten-password request failed.", %error);
        }
        drop(slot);
    });
    let mut response = StatusCode::ACCEPTED.into_response();
    response.extensions_mut().insert(Actor { account_id: None, email });
    Ok(response)
}

/// The work behind a forgotten-password request.
async fn forgot_password_work(ctx: &AppState, email: &str) -> Result<(), ApiError> {
    match ctx.api.store.entities.account_by_email(email).await? {
        Some(account) if !account.frozen => crate::account_email::issue_password_reset(ctx, &account).await,
        _ => Ok(()),
    }
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResetPassword {
    token: String,
    new_password: String,
}

/// `POST /api/v1/auth/reset-password` `{token, new_password}` (ACC-4): uses up the token (one
/// conditional update: unused and unexpired), sets the password, clears the lockout and the
/// forced change, and ends every session of the account. 204; 400 `invalid_request` for a
/// password outside the policy (the token stays usable), 400 `invalid_reset_token` for an
/// unknown, used or expired token.
async fn reset_password(State(ctx): State<AppState>, Json(req): Json<ResetPassword>) -> Result<Response, ApiError> {
    check_password_policy(&req.new_password)?;
    if req.token.is_empty() || req.token.len() > MAX_RESET_TOKEN_CHARS {
        return Err(ApiError::InvalidResetToken);
    }
    let ResetPassword { token, new_password } = req;
    let new_hash = password_work(&ctx.password_checks, move || hash_password(&new_password)).await??;
    let entities = &ctx.api.store.entities;
    let account_id = entities
        .consume_password_reset(secrets::token_hash(&token), ctx.clock.now())
        .await?
        .ok_or(ApiError::InvalidResetToken)?;
    if !entities.set_password(account_id, new_hash, false).await? {
        return Err(ApiError::InvalidResetToken);
    }
    entities.record_login_success(account_id).await?;
    entities.delete_account_sessions(account_id).await?;
    tracing::info!(message = "Password reset.", account = %account_id);
    let email = entities.account(account_id).await?.map(|a| a.email).unwrap_or_default();
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.extensions_mut().insert(Actor { account_id: Some(account_id), email });
    Ok(response)
}

/// `POST /api/v1/accounts/{id}/reset-password` (ACC-4, TEN-2): an admin sends the account a
/// reset link, as if it had forgotten its password. Scoped like the other account routes
/// (another tenant's account is 404, enterprise admins 403); 409 for a frozen account. 202.
async fn admin_reset_password(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<AccountId>,
) -> Result<StatusCode, ApiError> {
    let account = crate::routes::tenants::find_account(&ctx, &auth, id).await?;
    if account.frozen {
        return Err(ApiError::Conflict("the account is frozen: unfreeze it first".into()));
    }
    crate::account_email::issue_password_reset(&ctx, &account).await?;
    Ok(StatusCode::ACCEPTED)
}

/// Login protection as the API shows it: TOTP is on when an authenticator is enrolled
/// (`/api/v1/account/totp*` routes), else the stored choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Protection {
    None,
    Email,
    Totp,
}

/// `GET /api/v1/account`: the caller's settings.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct SettingsBody {
    id: AccountId,
    email: String,
    contact_name: String,
    phone: String,
    country: String,
    login_protection: Protection,
}

async fn settings_body(ctx: &AppState, id: AccountId) -> Result<SettingsBody, ApiError> {
    let entities = &ctx.api.store.entities;
    let account = entities.account(id).await?.ok_or(ApiError::Unauthorized)?;
    let s = entities.account_settings(id).await?.ok_or(ApiError::Unauthorized)?;
    let login_protection = match (account.totp_secret.is_some(), s.login_protection) {
        (true, _) => Protection::Totp,
        (false, LoginProtection::Email) => Protection::Email,
        (false, LoginProtection::None) => Protection::None,
    };
    Ok(SettingsBody {
        id,
        email: account.email,
        contact_name: s.contact_name,
        phone: s.phone,
        country: s.country,
        login_protection,
    })
}

/// `GET /api/v1/account` (ACC-5): the caller's contact name, phone, country/area and login
/// protection (`none`, `email` or `totp`).
async fn show_settings(auth: AuthAdmin, State(ctx): State<AppState>) -> Result<Json<SettingsBody>, ApiError> {
    Ok(Json(settings_body(&ctx, auth.account.id).await?))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SettingsUpdate {
    contact_name: Option<String>,
    phone: Option<String>,
    country: Option<String>,
    login_protection: Option<Protection>,
}

/// `PUT /api/v1/account` `{contact_name?, phone?, country?, login_protection?}` (ACC-5): changes
/// the given settings (trimmed; bounded: contact name 128, phone 32 characters of digits,
/// spaces and `+ - ( ) .`, country 64); 200 with all of them. `login_protection` switches
/// between `none` and `email`; TOTP has its own routes: asking for `totp` without it enrolled is
/// 400, and while it is on, `none` or `email` is 409 (turn it off first).
async fn update_settings(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Json(req): Json<SettingsUpdate>,
) -> Result<Json<SettingsBody>, ApiError> {
    let entities = &ctx.api.store.entities;
    let id = auth.account.id;
    let account = entities.account(id).await?.ok_or(ApiError::Unauthorized)?;
    let current = entities.account_settings(id).await?.ok_or(ApiError::Unauthorized)?;
    let totp_on = account.totp_secret.is_some();
    let login_protection = match (req.login_protection, totp_on) {
        (None, _) | (Some(Protection::Totp), true) => current.login_protection,
        (Some(Protection::Totp), false) => {
            return Err(ApiError::invalid(
                "TOTP is turned on with POST /api/v1/account/totp/setup and POST /api/v1/account/totp",
            ));
        }
        (Some(_), true) => {
            return Err(ApiError::Conflict(
                "TOTP is on: turn it off with POST /api/v1/account/totp/disable first".into(),
            ));
        }
        (Some(Protection::None), false) => LoginProtection::None,
        (Some(Protection::Email), false) => LoginProtection::Email,
    };
    let given = |field: &str, new: Option<String>, old: String, max: usize| {
        text::optional(field, new, max).map(|v| v.unwrap_or(old))
    };
    let settings = AccountSettings {
        contact_name: given("contact_name", req.contact_name, current.contact_name, MAX_CONTACT_NAME_CHARS)?,
        phone: given("phone", req.phone, current.phone, MAX_PHONE_CHARS)?,
        country: given("country", req.country, current.country, MAX_COUNTRY_CHARS)?,
        login_protection,
    };
    if !entities.set_account_settings(id, settings).await? {
        return Err(ApiError::Unauthorized);
    }
    Ok(Json(settings_body(&ctx, id).await?))
}
