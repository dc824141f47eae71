//! Account self-service on SQLite (ACC-3..5): settings, password reset tokens, emailed login
//! code challenges. Each operation is one write job (one savepoint of the group commit), so
//! what it deletes and inserts commits together; the single-use checks are single conditional
//! statements.

use async_trait::async_trait;
use fleetpulse_proto::{AccountId, UnixMillis};
use rusqlite::{OptionalExtension, params};

use super::{EmbeddedStore, row_exists};
use crate::{
    AccountSecurityStore, AccountSettings, LoginChallenge, LoginProtection, PasswordReset, Result, StoreError,
    TokenHash, check_challenge_attempts, check_exists,
};

#[async_trait]
impl AccountSecurityStore for EmbeddedStore {
    async fn account_settings(&self, account: AccountId) -> Result<Option<AccountSettings>> {
        let Ok(id) = i64::try_from(account.0) else { return Ok(None) };
        self.read(move |c| {
            if !row_exists(c, "accounts", account.0)? {
                return Ok(None);
            }
            let row = c
                .prepare_cached(
                    "SELECT contact_name, phone, country, login_protection FROM account_settings WHERE account_id = ?1",
                )?
                .query_row([id], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?))
                })
                .optional()?;
            let Some((contact_name, phone, country, protection)) = row else {
                return Ok(Some(AccountSettings::default()));
            };
            let login_protection = LoginProtection::parse(&protection)
                .ok_or_else(|| StoreError::Backend(format!("unknown login protection {protection:?}")))?;
            Ok(Some(AccountSettings { contact_name, phone, country, login_protection }))
        })
        .await
    }

    async fn set_account_settings(&self, account: AccountId, settings: AccountSettings) -> Result<bool> {
        settings.validate()?;
        let Ok(id) = i64::try_from(account.0) else { return Ok(false) };
        self.write(1, move |c| {
            Ok(c.prepare_cached(
                "INSERT INTO account_settings (account_id, contact_name, phone, country, login_protection, \
                 contact_search) SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE EXISTS (SELECT 1 FROM accounts WHERE id = ?1) \
                 ON CONFLICT (account_id) DO UPDATE SET contact_name = excluded.contact_name, \
                 phone = excluded.phone, country = excluded.country, login_protection = excluded.login_protection, \
                 contact_search = excluded.contact_search",
            )?
            .execute(params![
                id,
                settings.contact_name,
                settings.phone,
                settings.country,
                settings.login_protection.as_str(),
                crate::search_text(&[&settings.contact_name]),
            ])? > 0)
        })
        .await
    }

    async fn create_password_reset(&self, reset: PasswordReset) -> Result<()> {
        let id = i64::try_from(reset.account_id.0).unwrap_or(i64::MAX);
        self.write(1, move |c| {
            check_exists("account", reset.account_id.0, row_exists(c, "accounts", reset.account_id.0)?)?;
            c.prepare_cached("DELETE FROM password_resets WHERE account_id = ?1 OR expires_at <= ?2")?
                .execute(params![id, reset.created_at.0])?;
            c.prepare_cached(
                "INSERT INTO password_resets (token_hash, account_id, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![&reset.token_hash.0[..], id, reset.created_at.0, reset.expires_at.0])?;
            Ok(())
        })
        .await
    }

    async fn consume_password_reset(&self, token_hash: TokenHash, now: UnixMillis) -> Result<Option<AccountId>> {
        self.write(1, move |c| {
            Ok(c.prepare_cached(
                "UPDATE password_resets SET used_at = ?2 \
                 WHERE token_hash = ?1 AND used_at IS NULL AND expires_at > ?2 RETURNING account_id",
            )?
            .query_row(params![&token_hash.0[..], now.0], |r| r.get::<_, u64>(0))
            .optional()?
            .map(AccountId))
        })
        .await
    }

    async fn create_login_challenge(&self, ch: LoginChallenge) -> Result<()> {
        let id = i64::try_from(ch.account_id.0).unwrap_or(i64::MAX);
        self.write(1, move |c| {
            check_exists("account", ch.account_id.0, row_exists(c, "accounts", ch.account_id.0)?)?;
            c.prepare_cached("DELETE FROM login_challenges WHERE account_id = ?1 OR expires_at <= ?2")?
                .execute(params![id, ch.created_at.0])?;
            c.prepare_cached(
                "INSERT INTO login_challenges (id_hash, account_id, code_hash, created_at, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                &ch.id_hash.0[..],
                id,
                &ch.code_hash.0[..],
                ch.created_at.0,
                ch.expires_at.0
            ])?;
            Ok(())
        })
        .await
    }

    async fn claim_login_challenge_attempt(
        &self,
        id_hash: TokenHash,
        now: UnixMillis,
        max_attempts: u32,
    ) -> Result<Option<LoginChallenge>> {
        check_challenge_attempts(max_attempts)?;
        self.write(1, move |c| {
            Ok(c.prepare_cached(
                "UPDATE login_challenges SET attempts = attempts + 1 \
                 WHERE id_hash = ?1 AND used = 0 AND expires_at > ?2 AND attempts < ?3 \
                 RETURNING account_id, code_hash, created_at, expires_at, attempts",
            )?
            .query_row(params![&id_hash.0[..], now.0, max_attempts], |r| {
                let code: Vec<u8> = r.get(1)?;
                let code_hash = <[u8; 32]>::try_from(code.as_slice()).map_err(|_| {
                    rusqlite::Error::FromSqlConversionFailure(
                        1,
                        rusqlite::types::Type::Blob,
                        "a login code hash is 32 bytes".into(),
                    )
                })?;
                Ok(LoginChallenge {
                    id_hash,
                    account_id: AccountId(r.get(0)?),
                    code_hash: TokenHash(code_hash),
                    created_at: UnixMillis(r.get(2)?),
                    expires_at: UnixMillis(r.get(3)?),
                    attempts: r.get(4)?,
                })
            })
            .optional()?)
        })
        .await
    }

    async fn finish_login_challenge(&self, id_hash: TokenHash, now: UnixMillis) -> Result<bool> {
        self.write(1, move |c| {
            Ok(c.prepare_cached(
                "UPDATE login_challenges SET used = 1 WHERE id_hash = ?1 AND used = 0 AND expires_at > ?2",
            )?
            .execute(params![&id_hash.0[..], now.0])?
                > 0)
        })
        .await
    }
}
