//! Account emails queued in the durable outbox (ACC-3, ACC-4, TEN-1): password reset links,
//! login codes and new accounts' details. The outbox worker renders them at send time with the
//! portal URL of `[notify] portal_url` (`fleetpulse_mailer::render_account`).
//!
//! Each email has its own idempotency key, derived from what it is about (the reset token's or
//! challenge's hash, the new account's id), so queueing one twice sends it once.

use fleetpulse_mailer::{AccountEmail, AccountEmailPayload};
use fleetpulse_proto::{EnterpriseId, UnixMillis};
use fleetpulse_store::{Account, NewOutboxMessage, PasswordReset};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::secrets;
use crate::state::AppState;

/// The enterprise an account email is filed under in the outbox: the account's, or 0 for
/// accounts of no enterprise (platform and channel admins).
fn outbox_enterprise(account: &Account) -> EnterpriseId {
    account.enterprise_id.unwrap_or(EnterpriseId(0))
}

/// The idempotency key of an account email: 32 hex digits of SHA-256 over a domain separator,
/// the email's kind and what it is about.
pub(crate) fn email_key(kind: &str, about: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b"fleetpulse/account-email/v1\0");
    h.update(kind.as_bytes());
    h.update(b"\0");
    h.update(about);
    secrets::hex(&h.finalize()[..16])
}

/// Queues `email` to the account's address under the key of (`kind`, `about`).
pub(crate) async fn queue(
    ctx: &AppState,
    account: &Account,
    kind: &str,
    about: &[u8],
    email: AccountEmail,
) -> Result<(), ApiError> {
    let now = ctx.clock.now();
    let key = email_key(kind, about);
    let payload = AccountEmailPayload::new(key.clone(), email);
    let message = NewOutboxMessage {
        key,
        enterprise_id: outbox_enterprise(account),
        receiver: account.email.clone(),
        payload: payload.to_json(),
        not_before: now,
        item_keys: Vec::new(),
    };
    ctx.api.store.entities.enqueue_outbox(message, now).await?;
    Ok(())
}

/// Length of a generated first password.
const GENERATED_PASSWORD_CHARS: usize = 20;

/// The first password of a new account: the one given, or a generated one (20 random
/// alphanumerics); the flag says whether it was generated (and so goes into the email).
pub(crate) fn initial_password(given: Option<String>) -> (String, bool) {
    match given {
        Some(pw) => (pw, false),
        None => (secrets::random_password(GENERATED_PASSWORD_CHARS), true),
    }
}

/// TEN-1: queues the new account's details (portal URL, login email, role, and the temporary
/// password if one was generated) to its address.
pub(crate) async fn queue_account_created(
    ctx: &AppState,
    account: &Account,
    temporary_password: Option<&str>,
) -> Result<(), ApiError> {
    let email = AccountEmail::AccountCreated {
        login_email: account.email.clone(),
        role: account.role.as_str().to_owned(),
        temporary_password: temporary_password.map(str::to_owned),
    };
    queue(ctx, account, "account-created", &account.id.0.to_be_bytes(), email).await
}

/// TEN-1: the login of a new enterprise's admin account: its master administrator email, else
/// its register email (the guides' "set master administrator: no", where the enterprise logs in
/// with the email it registered), normalized; `None` when it has neither.
pub(crate) fn enterprise_admin_email(
    profile: &fleetpulse_store::EnterpriseProfile,
) -> Result<Option<String>, ApiError> {
    [&profile.master_admin_email, &profile.register_email]
        .into_iter()
        .find(|e| !e.is_empty())
        .map(|e| crate::email_address::normalize_email(e))
        .transpose()
}

/// TEN-1: creates the enterprise admin account of a new enterprise for `email`, with a
/// generated first password it must change at first login, and queues its details.
pub(crate) async fn create_enterprise_admin(
    ctx: &AppState,
    enterprise: EnterpriseId,
    email: String,
) -> Result<Account, ApiError> {
    let (password, _) = initial_password(None);
    let temporary = password.clone();
    let password_hash =
        crate::password::password_work(&ctx.password_checks, move || crate::password::hash_password(&password))
            .await??;
    let new = fleetpulse_store::NewAccount {
        email,
        password_hash,
        role: fleetpulse_store::Role::EnterpriseAdmin,
        channel_id: None,
        enterprise_id: Some(enterprise),
        must_change_password: true,
        parent_id: None,
        permissions: None,
    };
    let account = ctx.api.store.entities.create_account(new).await?;
    queue_account_created(ctx, &account, Some(&temporary)).await?;
    tracing::info!(message = "Created the enterprise's admin account.", enterprise = %enterprise, account = %account.id);
    Ok(account)
}

/// ACC-4: issues a single-use reset token for the account (replacing any earlier one), valid
/// for the configured `password_reset_ttl`, and queues the email with its link.
pub(crate) async fn issue_password_reset(ctx: &AppState, account: &Account) -> Result<(), ApiError> {
    let now = ctx.clock.now();
    let token = secrets::new_session_token();
    let token_hash = secrets::token_hash(&token);
    let ttl = i64::try_from(ctx.api.config.password_reset_ttl.as_millis()).unwrap_or(i64::MAX);
    let expires_at = UnixMillis(now.0.saturating_add(ttl));
    let reset = PasswordReset { token_hash, account_id: account.id, created_at: now, expires_at };
    ctx.api.store.entities.create_password_reset(reset).await?;
    let email = AccountEmail::PasswordReset { token, expires_at: expires_at.0 };
    queue(ctx, account, "password-reset", &token_hash.0, email).await?;
    tracing::info!(message = "Password reset link queued.", account = %account.id);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_32_hex_digits_and_differ_by_kind_and_subject() {
        let a = email_key("password-reset", b"x");
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, email_key("login-code", b"x"));
        assert_ne!(a, email_key("password-reset", b"y"));
    }
}
