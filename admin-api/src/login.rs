//! What every way into a session shares (ACC-1..3, TEN-3): opening a session (login, emailed
//! code verification, password change, acting inside a tenant), the login answer, and counting
//! wrong passwords and codes toward the lockout (ACC-2).
//!
//! Sessions are random 32-byte tokens given to the client once; the store keeps only their
//! SHA-256 ([`secrets::token_hash`]).

use axum::response::{IntoResponse, Response};
use fleetpulse_proto::{AccountId, UnixMillis};
use fleetpulse_store::{Account, Acting, Role, Session};
use serde::Serialize;

use crate::error::ApiError;
use crate::extract::Json;
use crate::secrets;
use crate::state::AppState;

/// Wrong passwords in a row that lock an account (ACC-2).
pub(crate) const MAX_LOGIN_FAILURES: u32 = 10;
/// How long a locked account stays locked.
pub(crate) const LOCKOUT: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// An account as the API shows it (never with its password hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub(crate) struct AccountView {
    pub(crate) id: AccountId,
    pub(crate) email: String,
    pub(crate) role: Role,
}

impl From<&Account> for AccountView {
    fn from(a: &Account) -> Self {
        AccountView { id: a.id, email: a.email.clone(), role: a.role }
    }
}

/// A fresh session, as login answers it.
#[derive(Serialize, schemars::JsonSchema)]
pub(crate) struct LoginResponse {
    /// The bearer token (left out of cookie answers, see [`crate::cookies`]).
    pub(crate) token: String,
    pub(crate) expires_at: UnixMillis,
    pub(crate) account: AccountView,
    /// The account must change its password (`POST /api/v1/account/password`) before it may use
    /// any other route (ACC-2).
    pub(crate) must_change_password: bool,
}

/// Counts a wrong password or code of an existing account toward its lockout (ACC-2).
pub(crate) async fn count_login_failure(ctx: &AppState, account: AccountId, now: UnixMillis) -> Result<(), ApiError> {
    let lock_ms = u64::try_from(LOCKOUT.as_millis()).unwrap_or(u64::MAX);
    let after = ctx.api.store.entities.record_login_failure(account, now, MAX_LOGIN_FAILURES, lock_ms).await?;
    if after.is_some_and(|a| a.is_locked(now)) {
        tracing::warn!(message = "Account locked after repeated wrong passwords.", %account);
    }
    Ok(())
}

/// Opens a session of the account acting for a tenant (TEN-3) and answers with it, shaped like
/// the login answer plus `acting`. The caller checked that the account may act there; the scope
/// is checked again on every request made with the session.
///
/// A browser (a request authenticated by the session cookie, `headers`) continues in the acting
/// session: it comes as the new session cookie with its `csrf_token` in the body (as a cookie
/// login answers), and the session the browser held ends, since the browser no longer holds
/// its token (ending the acting session is logging out).
pub(crate) async fn act_as(
    ctx: &AppState,
    account: AccountId,
    acting: Acting,
    headers: &axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let account = ctx.api.store.entities.account(account).await?.ok_or(ApiError::Unauthorized)?;
    let session = open_session_acting(ctx, &account, ctx.clock.now(), Some(acting)).await?;
    tracing::info!(message = "Session acting inside a tenant opened.", account = %account.id, ?acting);
    let token = session.token.clone();
    let browser = crate::cookies::request_token(headers).filter(|(_, s)| *s == crate::cookies::TokenSource::Cookie);
    if let Some((old, _)) = browser {
        ctx.api.store.entities.delete_session(secrets::token_hash(old)).await?;
        return crate::cookies::session_response(&ActingSession { session, acting }, &token, true, session_ttl_s(ctx));
    }
    Ok(Json(ActingSession { session, acting }).into_response())
}

/// The answer of `POST /api/v1/enterprises/{id}/act` and `POST /api/v1/channels/{id}/act`: a
/// new session acting for the tenant.
#[derive(Serialize, schemars::JsonSchema)]
pub(crate) struct ActingSession {
    #[serde(flatten)]
    session: LoginResponse,
    /// For whom the session acts.
    acting: Acting,
}

/// The session lifetime in whole seconds (the cookie's `Max-Age`).
pub(crate) fn session_ttl_s(ctx: &AppState) -> u64 {
    ctx.api.config.session_ttl.as_secs()
}

/// Opens a session of the account (a fresh token) and answers as a login does.
pub(crate) async fn open_session(
    ctx: &AppState,
    account: &Account,
    now: UnixMillis,
) -> Result<LoginResponse, ApiError> {
    open_session_acting(ctx, account, now, None).await
}

/// [`open_session`], acting for a tenant (TEN-3) if given.
async fn open_session_acting(
    ctx: &AppState,
    account: &Account,
    now: UnixMillis,
    acting: Option<Acting>,
) -> Result<LoginResponse, ApiError> {
    let token = secrets::new_session_token();
    let ttl = i64::try_from(ctx.api.config.session_ttl.as_millis()).unwrap_or(i64::MAX);
    let expires_at = UnixMillis(now.0.saturating_add(ttl));
    ctx.api
        .store
        .entities
        .create_session(Session {
            acting,
            token_hash: secrets::token_hash(&token),
            account_id: account.id,
            created_at: now,
            last_seen_at: now,
            expires_at,
        })
        .await?;
    Ok(LoginResponse {
        token,
        expires_at,
        account: AccountView::from(account),
        must_change_password: account.must_change_password,
    })
}
