//! Account self-service (`AccountSecurityStore`) and its rows: account settings (ACC-5) with the
//! login protection choice (ACC-3), single-use password reset tokens (ACC-4) and emailed login
//! code challenges (ACC-3). Backend-neutral; every secret is kept as a SHA-256 ([`TokenHash`]).

use async_trait::async_trait;
use fleetpulse_proto::{AccountId, UnixMillis};
use serde::{Deserialize, Serialize};

use crate::{Result, StoreError, TokenHash};

/// Longest [`AccountSettings::contact_name`], in characters.
pub const MAX_CONTACT_NAME_CHARS: usize = 128;
/// Longest [`AccountSettings::phone`], in characters.
pub const MAX_PHONE_CHARS: usize = 32;
/// Longest [`AccountSettings::country`], in characters.
pub const MAX_COUNTRY_CHARS: usize = 64;
/// Largest `max_attempts` of [`crate::AccountSecurityStore::claim_login_challenge_attempt`].
pub const MAX_LOGIN_CHALLENGE_ATTEMPTS: u32 = 100;

/// Account self-service: settings, password resets and emailed login code challenges.
#[async_trait]
pub trait AccountSecurityStore: Send + Sync + 'static {
    /// The account's settings (ACC-5): the [`AccountSettings::default`] if it never saved any;
    /// `None` for an unknown account.
    async fn account_settings(&self, account: AccountId) -> Result<Option<AccountSettings>>;
    /// Replaces the account's settings; false for an unknown account.
    /// [`StoreError::InvalidInput`] (and nothing changes) if [`AccountSettings::validate`]
    /// refuses them.
    async fn set_account_settings(&self, account: AccountId, settings: AccountSettings) -> Result<bool>;
    /// Stores a password reset token (ACC-4). In the same transaction the account's earlier
    /// tokens and every token expired at `reset.created_at` are deleted, so an account has at
    /// most one live token and the table stays bounded. [`StoreError::InvalidInput`] (nothing
    /// stored) for an unknown account.
    async fn create_password_reset(&self, reset: PasswordReset) -> Result<()>;
    /// Uses up a password reset token, atomically (one conditional statement): if it exists and
    /// is unused and unexpired at `now`, it is marked used and its account returned; else
    /// `None` (unknown, expired, or used before: of concurrent uses, one wins).
    async fn consume_password_reset(&self, token_hash: TokenHash, now: UnixMillis) -> Result<Option<AccountId>>;
    /// Stores an emailed login code challenge (ACC-3). In the same transaction the account's
    /// earlier challenges and every challenge expired at `challenge.created_at` are deleted (one
    /// live challenge per account). `challenge.attempts` is ignored (a new challenge has none).
    /// [`StoreError::InvalidInput`] (nothing stored) for an unknown account.
    async fn create_login_challenge(&self, challenge: LoginChallenge) -> Result<()>;
    /// Counts an attempt at a challenge's code, atomically (one conditional statement): if the
    /// challenge is live at `now` (unused, unexpired, fewer than `max_attempts` attempts made),
    /// its attempts go up by one and it is returned, with the new count, for the caller to
    /// compare the code; else `None`. [`StoreError::InvalidInput`] unless `max_attempts` is
    /// within 1..=[`MAX_LOGIN_CHALLENGE_ATTEMPTS`].
    async fn claim_login_challenge_attempt(
        &self,
        id_hash: TokenHash,
        now: UnixMillis,
        max_attempts: u32,
    ) -> Result<Option<LoginChallenge>>;
    /// Marks a challenge used once its code was right, atomically: true for the one call that
    /// did; false if it is unknown, expired at `now`, or used already.
    async fn finish_login_challenge(&self, id_hash: TokenHash, now: UnixMillis) -> Result<bool>;
}

/// How an account proves itself after its password (ACC-3), as stored in its settings. TOTP is
/// not a setting: an account with a TOTP secret ([`crate::Account::totp_secret`]) always needs a
/// TOTP code, whatever is stored here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LoginProtection {
    /// The password alone.
    #[default]
    None,
    /// A 6-digit code emailed at each login.
    Email,
}

impl LoginProtection {
    /// Name in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            LoginProtection::None => "none",
            LoginProtection::Email => "email",
        }
    }

    /// Inverse of [`LoginProtection::as_str`].
    pub fn parse(s: &str) -> Option<LoginProtection> {
        match s {
            "none" => Some(LoginProtection::None),
            "email" => Some(LoginProtection::Email),
            _ => None,
        }
    }
}

/// An account's own settings (ACC-5): contact details and login protection. An account that
/// never saved any has the [`Default`] (empty strings, no login protection).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AccountSettings {
    /// Name of the person behind the account (at most [`MAX_CONTACT_NAME_CHARS`]).
    pub contact_name: String,
    /// Phone number: digits, spaces and `+ - ( ) .`, at most [`MAX_PHONE_CHARS`].
    pub phone: String,
    /// Country or area (at most [`MAX_COUNTRY_CHARS`]).
    pub country: String,
    /// Emailed login codes or not (ACC-3).
    pub login_protection: LoginProtection,
}

impl AccountSettings {
    /// [`StoreError::InvalidInput`] naming the field unless every field is within its bound, has
    /// no control characters, and the phone holds only digits, spaces and `+ - ( ) .`.
    pub fn validate(&self) -> crate::Result<()> {
        for (field, value, max) in [
            ("contact_name", &self.contact_name, MAX_CONTACT_NAME_CHARS),
            ("phone", &self.phone, MAX_PHONE_CHARS),
            ("country", &self.country, MAX_COUNTRY_CHARS),
        ] {
            if value.chars().count() > max {
                return Err(StoreError::InvalidInput(format!("{field} has at most {max} characters")));
            }
            if value.chars().any(char::is_control) {
                return Err(StoreError::InvalidInput(format!("{field} may not contain control characters")));
            }
        }
        if !self.phone.chars().all(|c| c.is_ascii_digit() || " +-().".contains(c)) {
            return Err(StoreError::InvalidInput(
                "phone may contain only digits, spaces and the characters + - ( ) .".into(),
            ));
        }
        Ok(())
    }
}

/// A single-use password reset token (ACC-4), stored by the SHA-256 of its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordReset {
    /// Hash of the token sent in the emailed link.
    pub token_hash: TokenHash,
    /// Whose password it resets.
    pub account_id: AccountId,
    /// When it was issued.
    pub created_at: UnixMillis,
    /// From when it no longer works.
    pub expires_at: UnixMillis,
}

/// An emailed login code challenge (ACC-3): the password was right, the code is pending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginChallenge {
    /// Hash of the challenge id given to the client (never a session token).
    pub id_hash: TokenHash,
    /// Whose login.
    pub account_id: AccountId,
    /// Hash of the emailed code (keyed by the challenge id, so the stored hash alone does not
    /// let a database reader try the million codes).
    pub code_hash: TokenHash,
    /// When it was issued.
    pub created_at: UnixMillis,
    /// From when it no longer works.
    pub expires_at: UnixMillis,
    /// Attempts at its code so far (the one being made included, when returned by
    /// [`crate::AccountSecurityStore::claim_login_challenge_attempt`]).
    pub attempts: u32,
}

/// [`StoreError::InvalidInput`] unless `max_attempts` is within 1..=[`MAX_LOGIN_CHALLENGE_ATTEMPTS`].
pub(crate) fn check_challenge_attempts(max_attempts: u32) -> crate::Result<()> {
    if max_attempts == 0 || max_attempts > MAX_LOGIN_CHALLENGE_ATTEMPTS {
        return Err(StoreError::InvalidInput(format!(
            "max_attempts {max_attempts} (must be 1 to {MAX_LOGIN_CHALLENGE_ATTEMPTS})"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_bounded_and_phones_checked() {
        let ok = AccountSettings {
            contact_name: "Ada Lovelace".into(),
            phone: "+44 (20) 7946-0958".into(),
            country: "United Kingdom".into(),
            login_protection: LoginProtection::Email,
        };
        assert!(ok.validate().is_ok());
        let bad = |s: AccountSettings, needle: &str| match s.validate() {
            Err(StoreError::InvalidInput(m)) => assert!(m.contains(needle), "{m}"),
            other => panic!("{other:?}"),
        };
        bad(AccountSettings { phone: "call me".into(), ..ok.clone() }, "phone");
        bad(AccountSettings { contact_name: "x".repeat(MAX_CONTACT_NAME_CHARS + 1), ..ok.clone() }, "contact_name");
        bad(AccountSettings { country: "a\nb".into(), ..ok.clone() }, "country");
        assert_eq!(LoginProtection::parse("email"), Some(LoginProtection::Email));
        assert_eq!(LoginProtection::parse("totp"), None);
        assert!(check_challenge_attempts(0).is_err());
        assert!(check_challenge_attempts(5).is_ok());
    }
}
