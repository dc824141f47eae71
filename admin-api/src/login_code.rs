//! Login protection by emailed code (ACC-3 "email verification code").
//!
//! When an account's settings say `email`, a login with the right password gets no session:
//! it answers 401 `mfa_required` with a `challenge` (a random 32-byte id, never a session
//! token) and a 6-digit code is emailed. `POST /api/v1/auth/login/verify {challenge, code}`
//! (`routes/session.rs`) then opens a session with a fresh token, so the session id rotates after the second factor.
//! The store keeps only the SHA-256 of the challenge id and of the code (keyed by the
//! challenge id, so the stored hash alone does not give the code away); a challenge is valid
//! for `login_code_ttl` (10 minutes), dies after [`MAX_CODE_ATTEMPTS`] attempts, and works
//! once. Wrong codes count toward the account's lockout like wrong passwords (ACC-2).

use fleetpulse_mailer::AccountEmail;
use fleetpulse_proto::UnixMillis;
use fleetpulse_store::{Account, LoginChallenge, LoginProtection, TokenHash};
use rand::Rng;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::secrets;
use crate::state::AppState;

/// Attempts at one challenge's code (the right one included); then it is dead.
pub(crate) const MAX_CODE_ATTEMPTS: u32 = 5;
/// Longest challenge id considered (they are 64 hex digits).
pub(crate) const MAX_CHALLENGE_CHARS: usize = 128;

/// The stored hash of a login code: SHA-256 over a domain separator, the challenge id and the
/// code.
pub(crate) fn code_hash(challenge: &str, code: &str) -> TokenHash {
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
