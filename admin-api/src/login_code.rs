//! Login protection by emailed code (ACC-3 "email verification code").
//!
//! When an account's settings say `email`, a login with the right password gets no session:
//! it answers 401 `mfa_required` with a `challenge` (a random 32-byte id, never a session
//! token) and a 6-digit code is emailed. `POST /api/v1/auth/login/verify {challenge, code}`
//! then opens a session with a fresh token, so the session id rotates after the second factor.
//! The store keeps only the SHA-256 of the challenge id and of the code (keyed by the
//! challenge id, so the stored hash alone does not give the code away); a challenge is valid
//! for `login_code_ttl` (10 minutes), dies after [`MAX_CODE_ATTEMPTS`] attempts, and works
//! once. Wrong codes count toward the account's lockout like wrong passwords (ACC-2).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use fleetpulse_mailer::AccountEmail;
use fleetpulse_proto::UnixMillis;
use fleetpulse_store::{Account, LoginChallenge, LoginProtection, TokenHash};
use rand::Rng;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::Json;
use crate::secrets;

/// Attempts at one challenge's code (the right one included); then it is dead.
pub(crate) const MAX_CODE_ATTEMPTS: u32 = 5;
/// Longest challenge id considered (they are 64 hex digits).
const MAX_CHALLENGE_CHARS: usize = 128;

/// The stored hash of a login code: SHA-256 over a domain separator, the challenge id and the
/// code.
fn code_hash(challenge: &str, code: &str) -> TokenHash {
    let mut h = Sha256::new();
    h.update(b"fleetpulse/login-code/v1\0");
    h.update(challenge.as_bytes());
    h.update(b"\0");
    h.update(code.as_bytes());
    TokenHash(h.finalize().into())
}

/// After a right password: `Ok` if the account needs no emailed code; else a challenge is
/// stored, the code emailed, and the answer is [`ApiError::LoginCodeRequired`].
pub(crate) async fn require_email_code(ctx: &AppState, account: &Account, now: UnixMillis) -> Result<(), ApiError> {
    // TOTP, when enrolled, is the second factor already checked.
    if account.totp_secret.is_some() {
        return Ok(());
    }
    let entities = &ctx.api.store.entities;
    let settings = entities.account_settings(account.id).await?.unwrap_or_default();
    if settings.login_protection != LoginProtection::Email {
        return Ok(());
    }
    let challenge = secrets::new_session_token();
    let code = format!("{:06}", rand::rng().random_range(0..1_000_000u32));
    let ttl = i64::try_from(ctx.api.config.login_code_ttl.as_millis()).unwrap_or(i64::MAX);
    let expires_at = UnixMillis(now.0.saturating_add(ttl));
    let id_hash = secrets::token_hash(&challenge);
    entities
        .create_login_challenge(LoginChallenge {
            id_hash,
            account_id: account.id,
            code_hash: code_hash(&challenge, &code),
            created_at: now,
            expires_at,
            attempts: 0,
        })
        .await?;
    let email = AccountEmail::LoginCode { code, expires_at: expires_at.0 };
    crate::account_email::queue(ctx, account, "login-code", &id_hash.0, email).await?;
    Err(ApiError::LoginCodeRequired(challenge))
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
pub(crate) async fn verify(State(ctx): State<AppState>, Json(req): Json<VerifyRequest>) -> Response {
    let mut actor = None;
    let result = verify_checked(&ctx, req, &mut actor).await;
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    if let Some(account) = actor {
        response
            .extensions_mut()
            .insert(crate::routes::oplog::Actor { account_id: Some(account.id), email: account.email });
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
    let now = UnixMillis::now();
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
        crate::auth::count_login_failure(ctx, account.id, now).await?;
        return Err(ApiError::InvalidLoginCode);
    }
    if !entities.finish_login_challenge(id_hash, now).await? {
        return Err(ApiError::InvalidChallenge);
    }
    if account.failed_logins > 0 || account.locked_until.is_some() {
        entities.record_login_success(account.id).await?;
    }
    let session = crate::auth::open_session(ctx, &account, now).await?;
    crate::cookies::session_response(&session, &session.token, req.cookie, crate::auth::session_ttl_s(ctx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_hashes_depend_on_the_challenge_and_the_code() {
        let a = code_hash("c1", "123456");
        assert_eq!(a, code_hash("c1", "123456"));
        assert_ne!(a, code_hash("c2", "123456"));
        assert_ne!(a, code_hash("c1", "123457"));
    }
}
