//! The session routes (ACC-1..3, TEN-3): login, the emailed code's verification, TOTP setup,
//! enabling and disabling, the password change, and logout.
//!
//! A login checks the password (argon2id, `password.rs`), the lockout (ten wrong passwords or
//! codes in a row lock the account for five minutes), the second factor (TOTP, or an emailed
//! code: `login_code.rs`), and opens the session (`login.rs`).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use fleetpulse_proto::{AccountId, UnixMillis};
use fleetpulse_store::{Account, Acting, Feature};
use serde::{Deserialize, Serialize};

use crate::auth::AuthAdmin;
use crate::email_address::normalize_email;
use crate::error::ApiError;
use crate::extract::Json;
use crate::login::{LoginResponse, count_login_failure, open_session, session_ttl_s};
use crate::login_code::{MAX_CHALLENGE_CHARS, MAX_CODE_ATTEMPTS, code_hash};
use crate::operation_log::Actor;
use crate::password::{TIMING_DUMMY_HASH, check_password_policy, hash_password, password_work, verify_password};
use crate::rate_limit::ClientIp;
use crate::secrets;
use crate::state::AppState;

/// Routes of this module: (path, handlers by method).
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/api/v1/auth/login", post(login)),
        ("/api/v1/auth/logout", post(logout)),
        ("/api/v1/account/password", post(change_password)),
        ("/api/v1/account/totp/setup", post(totp_setup)),
        ("/api/v1/account/totp", post(totp_enable)),
        ("/api/v1/account/totp/disable", post(totp_disable)),
        ("/api/v1/auth/login/verify", post(verify)),
        ("/api/v1/auth/session", get(current_session)),
    ]
}

/// Whole seconds since the epoch (the TOTP clock).
fn unix_seconds(t: UnixMillis) -> u64 {
    u64::try_from(t.0 / 1000).unwrap_or(0)
}

/// Issuer shown in authenticator apps.
const TOTP_ISSUER: &str = "fleetpulse";

#[derive(Serialize, schemars::JsonSchema)]
pub(crate) struct TotpSetup {
    /// Base32 secret to type into an authenticator app.
    secret: String,
    /// The same as an `otpauth://` URI (for a QR code).
    otpauth_uri: String,
    /// The URI as a QR code: an SVG document (black modules on white, 4-module quiet zone),
    /// for an `<img>` (`data:image/svg+xml,…`) an authenticator app's camera can scan.
    qr_svg: String,
}

/// `POST /api/v1/account/totp/setup`: a fresh secret for the caller's authenticator app. Nothing
/// is stored until `POST /api/v1/account/totp` confirms it with a code.
async fn totp_setup(auth: AuthAdmin) -> Result<Json<TotpSetup>, ApiError> {
    let secret = crate::totp::TotpSecret::random();
    let otpauth_uri = secret.otpauth_uri(TOTP_ISSUER, &auth.account.email);
    let qr_svg = crate::totp::qr_svg(&otpauth_uri)
        .ok_or_else(|| ApiError::Internal("the otpauth URI does not fit a QR code".into()))?;
    Ok(Json(TotpSetup { otpauth_uri, secret: secret.to_base32(), qr_svg }))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TotpEnable {
    secret: String,
    code: String,
}

/// `POST /api/v1/account/totp` `{secret, code}`: turns on login protection by TOTP (ACC-3) once
/// `code` proves the app holds `secret`; from then on every login needs a code. 204.
async fn totp_enable(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Json(req): Json<TotpEnable>,
) -> Result<StatusCode, ApiError> {
    let secret = crate::totp::TotpSecret::from_base32(&req.secret)
        .ok_or_else(|| ApiError::invalid("secret must be the 32-character base32 secret from setup"))?;
    let now_s = unix_seconds(ctx.clock.now());
    let step = crate::totp::verify(&secret, &req.code, now_s, None)
        .map_err(|e| ApiError::invalid(format!("the code does not match the secret: {e}")))?;
    let entities = &ctx.api.store.entities;
    if !entities.set_totp(auth.account.id, Some(*secret.as_bytes())).await? {
        return Err(ApiError::NotFound("account"));
    }
    // The code just used cannot log in again.
    entities.record_totp_step(auth.account.id, step).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TotpDisable {
    code: String,
}

/// `POST /api/v1/account/totp/disable` `{code}`: turns TOTP off with a current code. 204; 400 if
/// TOTP is not on or the code is wrong or used.
async fn totp_disable(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Json(req): Json<TotpDisable>,
) -> Result<StatusCode, ApiError> {
    let entities = &ctx.api.store.entities;
    let account = entities.account(auth.account.id).await?.ok_or(ApiError::NotFound("account"))?;
    let secret = account.totp_secret.ok_or_else(|| ApiError::invalid("TOTP is not turned on"))?;
    let now_s = unix_seconds(ctx.clock.now());
    let secret = crate::totp::TotpSecret::from_bytes(secret);
    let step = crate::totp::verify(&secret, &req.code, now_s, account.totp_last_step)
        .map_err(|e| ApiError::invalid(format!("the code is not valid: {e}")))?;
    if !entities.record_totp_step(account.id, step).await? {
        return Err(ApiError::invalid("the code was already used"));
    }
    entities.set_totp(account.id, None).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct LoginRequest {
    email: String,
    password: String,
    /// The authenticator app's current code, for accounts with TOTP (ACC-3).
    #[serde(default)]
    code: Option<String>,
    /// Answer with a session cookie and a CSRF token instead of a bearer token (ACC-1).
    #[serde(default)]
    cookie: bool,
}

/// `POST /api/v1/auth/login`: checks the password and opens a session.
///
/// Ten wrong passwords in a row lock the account for five minutes (ACC-2); a locked account,
/// an unknown email and a wrong password get the same answer after the same work, so the answer
/// does not tell which accounts exist. A frozen account (TEN-2) gets that answer too. The operation log records the email tried.
///
/// With `"cookie": true` the session comes as the `fp_session` cookie and the body carries a
/// `csrf_token` instead of the token (ACC-1, [`crate::cookies`]). An account with login
/// protection by email gets 401 `mfa_required` with a `challenge` instead (ACC-3,
/// [`crate::login_code`]).
async fn login(State(ctx): State<AppState>, ip: ClientIp, Json(req): Json<LoginRequest>) -> Response {
    let email: String = req.email.trim().chars().take(320).collect();
    if let Err(limited) = ctx.login_limits.check(ip.0, Some(&email)) {
        return limited.into_response();
    }
    let mut account_id = None;
    let cookie = req.cookie;
    let result = login_checked(&ctx, req, &mut account_id).await;
    let result = result.and_then(|ok| crate::cookies::session_response(&ok, &ok.token, cookie, session_ttl_s(&ctx)));
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    response.extensions_mut().insert(Actor { account_id, email });
    response
}

/// The login; `account_id` is set to the account the email names (for the operation log, also
/// when the login fails).
async fn login_checked(
    ctx: &AppState,
    req: LoginRequest,
    account_id: &mut Option<AccountId>,
) -> Result<LoginResponse, ApiError> {
    let account = match normalize_email(&req.email) {
        Ok(email) => ctx.api.store.entities.account_by_email(&email).await?,
        Err(_) => None,
    };
    *account_id = account.as_ref().map(|a| a.id);
    let req_code = req.code;
    let now = ctx.clock.now();
    let locked = account.as_ref().is_some_and(|a| a.is_locked(now));
    // A frozen account (TEN-2) gets the answer of a wrong password, after the same work.
    let frozen = account.as_ref().is_some_and(|a| a.frozen);
    let password = req.password;
    let matches = match &account {
        Some(a) => {
            let phc = a.password_hash.clone();
            password_work(&ctx.password_checks, move || verify_password(&password, &phc)).await?
        }
        None => {
            password_work(&ctx.password_checks, move || verify_password(&password, &TIMING_DUMMY_HASH)).await?;
            false
        }
    };
    let account = match account {
        Some(a) if matches && !locked && !frozen => a,
        other => {
            ctx.metrics.login_failed();
            if let Some(a) = other.filter(|_| !locked && !frozen) {
                count_login_failure(ctx, a.id, now).await?;
            }
            return Err(ApiError::InvalidCredentials);
        }
    };
    if let Some(secret) = account.totp_secret {
        let Some(code) = req_code else { return Err(ApiError::MfaRequired) };
        let secret = crate::totp::TotpSecret::from_bytes(secret);
        let step = crate::totp::verify(&secret, &code, unix_seconds(now), account.totp_last_step).ok();
        // Each code works once: the step is claimed atomically (a replay loses the race).
        let claimed = match step {
            Some(step) => ctx.api.store.entities.record_totp_step(account.id, step).await?,
            None => false,
        };
        if !claimed {
            ctx.metrics.login_failed();
            count_login_failure(ctx, account.id, now).await?;
            return Err(ApiError::InvalidCredentials);
        }
    }
    // ACC-3: with login protection by email, the session opens at POST /api/v1/auth/login/verify.
    crate::login_code::require_email_code(ctx, &account, now).await?;
    if account.failed_logins > 0 || account.locked_until.is_some() {
        ctx.api.store.entities.record_login_success(account.id).await?;
    }
    open_session(ctx, &account, now).await
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PasswordChange {
    current_password: String,
    new_password: String,
}

/// `POST /api/v1/account/password` `{current_password, new_password}`: changes the caller's
/// password (ACC-2; also how an account that must change its password does so).
///
/// 400 if the new password is outside the policy or equals the current one; 401 `unauthorized`
/// if the current password is wrong (counted as a failed login, so it locks the account like
/// login does) or the account is locked. On success the new argon2id hash is stored, the
/// forced change is cleared, and **every** session of the account ends, the caller's too: the
/// answer is 200 with a fresh session, shaped like the login answer
/// (`{token, expires_at, account, must_change_password: false}`).
async fn change_password(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    headers: HeaderMap,
    Json(req): Json<PasswordChange>,
) -> Result<Response, ApiError> {
    check_password_policy(&req.new_password)?;
    if req.new_password == req.current_password {
        return Err(ApiError::invalid("the new password must differ from the current one"));
    }
    let entities = &ctx.api.store.entities;
    let account = entities.account(auth.account.id).await?.ok_or(ApiError::Unauthorized)?;
    let now = ctx.clock.now();
    // A locked account (ACC-2) gets the answer of a wrong password, after the same work.
    let locked = account.is_locked(now);
    let phc = account.password_hash.clone();
    let PasswordChange { current_password, new_password } = req;
    let new_hash = password_work(&ctx.password_checks, move || {
        if verify_password(&current_password, &phc) { hash_password(&new_password).map(Some) } else { Ok(None) }
    })
    .await??;
    let new_hash = match new_hash {
        Some(hash) if !locked => hash,
        _ => {
            ctx.metrics.login_failed();
            if !locked {
                count_login_failure(&ctx, account.id, now).await?;
            }
            return Err(ApiError::InvalidCredentials);
        }
    };
    if !entities.set_password(account.id, new_hash, false).await? {
        return Err(ApiError::Unauthorized);
    }
    if account.failed_logins > 0 || account.locked_until.is_some() {
        entities.record_login_success(account.id).await?;
    }
    // Every session ends (a stolen one too); the caller continues with a fresh one.
    entities.delete_account_sessions(account.id).await?;
    let account = entities.account(account.id).await?.ok_or(ApiError::Unauthorized)?;
    tracing::info!(message = "Password changed.", account = %account.id);
    let session = open_session(&ctx, &account, now).await?;
    // A browser session continues in a fresh cookie.
    let cookie = crate::cookies::request_token(&headers).is_some_and(|(_, s)| s == crate::cookies::TokenSource::Cookie);
    crate::cookies::session_response(&session, &session.token, cookie, session_ttl_s(&ctx))
}

/// `POST /api/v1/auth/logout`: ends the caller's session (its token stops working); 204, with
/// the session cookie cleared (`Max-Age=0`).
async fn logout(_auth: AuthAdmin, State(ctx): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some((token, _)) = crate::cookies::request_token(&headers) {
        ctx.api.store.entities.delete_session(secrets::token_hash(token)).await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(header::SET_COOKIE, crate::cookies::cleared_cookie()?);
    Ok(response)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct VerifyRequest {
    challenge: String,
    code: String,
    /// Answer with a session cookie and a CSRF token instead of a bearer token (ACC-1).
    #[serde(default)]
    cookie: bool,
}

/// `POST /api/v1/auth/login/verify` `{challenge, code, cookie?}`: opens the session of a login
/// waiting for its emailed code; answers like a login (200). 400 for a code that is not 6
/// digits; 401 `invalid_code` for a wrong code (counted toward the lockout), 401
/// `invalid_challenge` for an unknown, used, expired or exhausted challenge, 401
/// `unauthorized` when the account was locked or frozen meanwhile.
async fn verify(State(ctx): State<AppState>, ip: ClientIp, Json(req): Json<VerifyRequest>) -> Response {
    if let Err(limited) = ctx.login_limits.check(ip.0, None) {
        return limited.into_response();
    }
    let mut actor = None;
    let result = verify_checked(&ctx, req, &mut actor).await;
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    if let Some(account) = actor {
        response.extensions_mut().insert(Actor { account_id: Some(account.id), email: account.email });
    }
    response
}

async fn verify_checked(ctx: &AppState, req: VerifyRequest, actor: &mut Option<Account>) -> Result<Response, ApiError> {
    let code = req.code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::invalid("code is the 6 digits from the email"));
    }
    if req.challenge.is_empty() || req.challenge.len() > MAX_CHALLENGE_CHARS {
        return Err(ApiError::InvalidChallenge);
    }
    let entities = &ctx.api.store.entities;
    let now = ctx.clock.now();
    let id_hash = secrets::token_hash(&req.challenge);
    let challenge = entities
        .claim_login_challenge_attempt(id_hash, now, MAX_CODE_ATTEMPTS)
        .await?
        .ok_or(ApiError::InvalidChallenge)?;
    let account = entities.account(challenge.account_id).await?.ok_or(ApiError::InvalidChallenge)?;
    *actor = Some(account.clone());
    if account.frozen || account.is_locked(now) {
        ctx.metrics.login_failed();
        return Err(ApiError::InvalidCredentials);
    }
    if !secrets::constant_time_eq(&code_hash(&req.challenge, code).0, &challenge.code_hash.0) {
        ctx.metrics.login_failed();
        count_login_failure(ctx, account.id, now).await?;
        return Err(ApiError::InvalidLoginCode);
    }
    if !entities.finish_login_challenge(id_hash, now).await? {
        return Err(ApiError::InvalidChallenge);
    }
    if account.failed_logins > 0 || account.locked_until.is_some() {
        entities.record_login_success(account.id).await?;
    }
    let session = open_session(ctx, &account, now).await?;
    crate::cookies::session_response(&session, &session.token, req.cookie, session_ttl_s(ctx))
}

/// `GET /api/v1/auth/session`: the caller's own session.
#[derive(Serialize, schemars::JsonSchema)]
pub(crate) struct SessionView {
    account: crate::login::AccountView,
    /// The account must change its password before anything else (ACC-2).
    must_change_password: bool,
    /// For whom the session acts (TEN-3), if it does.
    acting: Option<Acting>,
    /// The enterprise the session's data is limited to (an enterprise account, or a session
    /// acting inside one).
    enterprise_id: Option<fleetpulse_proto::EnterpriseId>,
    /// The time zone to show times in: that enterprise's profile time zone; null otherwise (the
    /// client's own).
    time_zone: Option<String>,
    /// The features of a sub-account; null: every feature of its role.
    features: Option<Vec<Feature>>,
    /// The CSRF token of a session authenticated by the session cookie (null for bearer
    /// sessions): what a browser page reloaded after login needs to change anything (ACC-1).
    csrf_token: Option<String>,
}

/// `GET /api/v1/auth/session`: who the caller is and, for a browser session, its CSRF token
/// again (a reloaded console page has lost the login answer). Reads only the caller's own
/// session; allowed while the password must be changed, so the console can say so.
async fn current_session(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    headers: HeaderMap,
) -> Result<axum::Json<SessionView>, ApiError> {
    let entities = &ctx.api.store.entities;
    let account = entities.account(auth.account.id).await?.ok_or(ApiError::Unauthorized)?;
    let enterprise_id = crate::policy::own_enterprise(&auth.caller);
    let time_zone = match enterprise_id {
        Some(id) => entities.enterprise(id).await?.map(|e| e.profile.time_zone).filter(|tz| !tz.is_empty()),
        None => None,
    };
    let csrf_token = crate::cookies::request_token(&headers)
        .filter(|(_, source)| *source == crate::cookies::TokenSource::Cookie)
        .map(|(token, _)| crate::cookies::csrf_token(token));
    Ok(axum::Json(SessionView {
        account: auth.account,
        must_change_password: account.must_change_password,
        acting: auth.caller.acting,
        enterprise_id,
        time_zone,
        features: auth.caller.features,
        csrf_token,
    }))
}
