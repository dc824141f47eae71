//! Account self-service on PostgreSQL (ACC-3..5): settings, password reset tokens, emailed
//! login code challenges. What an operation deletes and inserts runs in one transaction; the
//! single-use checks are single conditional statements.

use async_trait::async_trait;
use fleetpulse_proto::{AccountId, UnixMillis};
use sqlx::Row;

use super::{PgEntityStore, backend, db_id, row_id};
use crate::{
    AccountSecurityStore, AccountSettings, LoginChallenge, LoginProtection, PasswordReset, Result, StoreError,
    TokenHash, check_challenge_attempts, check_exists,
};

impl PgEntityStore {
    /// Whether the account exists.
    async fn account_exists(&self, account: AccountId) -> Result<bool> {
        let Some(id) = db_id(account.0) else { return Ok(false) };
        let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM accounts WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        Ok(found.is_some())
    }
}

#[async_trait]
impl AccountSecurityStore for PgEntityStore {
    async fn account_settings(&self, account: AccountId) -> Result<Option<AccountSettings>> {
        let Some(id) = db_id(account.0) else { return Ok(None) };
        let row = sqlx::query(
            "SELECT s.contact_name, s.phone, s.country, s.login_protection FROM accounts a \
             LEFT JOIN account_settings s ON s.account_id = a.id WHERE a.id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        let Some(row) = row else { return Ok(None) };
        let protection: Option<String> = row.try_get(3).map_err(backend)?;
        let Some(protection) = protection else { return Ok(Some(AccountSettings::default())) };
        let login_protection = LoginProtection::parse(&protection)
            .ok_or_else(|| StoreError::Backend(format!("unknown login protection {protection:?}")))?;
        Ok(Some(AccountSettings {
            contact_name: row.try_get(0).map_err(backend)?,
            phone: row.try_get(1).map_err(backend)?,
            country: row.try_get(2).map_err(backend)?,
            login_protection,
        }))
    }

    async fn set_account_settings(&self, account: AccountId, settings: AccountSettings) -> Result<bool> {
        settings.validate()?;
        let Some(id) = db_id(account.0) else { return Ok(false) };
        let done = sqlx::query(
            "INSERT INTO account_settings (account_id, contact_name, phone, country, login_protection, \
             contact_search) SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS (SELECT 1 FROM accounts WHERE id = $1) \
             ON CONFLICT (account_id) DO UPDATE SET contact_name = excluded.contact_name, \
             phone = excluded.phone, country = excluded.country, login_protection = excluded.login_protection, \
             contact_search = excluded.contact_search",
        )
        .bind(id)
        .bind(&settings.contact_name)
        .bind(&settings.phone)
        .bind(&settings.country)
        .bind(settings.login_protection.as_str())
        .bind(crate::search_text(&[&settings.contact_name]))
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }

    async fn create_password_reset(&self, reset: PasswordReset) -> Result<()> {
        check_exists("account", reset.account_id.0, self.account_exists(reset.account_id).await?)?;
        let id = db_id(reset.account_id.0).unwrap_or(i64::MAX);
        let mut tx = self.pool.begin().await.map_err(backend)?;
        sqlx::query("DELETE FROM password_resets WHERE account_id = $1 OR expires_at <= $2")
            .bind(id)
            .bind(reset.created_at.0)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        sqlx::query(
            "INSERT INTO password_resets (token_hash, account_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&reset.token_hash.0[..])
        .bind(id)
        .bind(reset.created_at.0)
        .bind(reset.expires_at.0)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)
    }

    async fn consume_password_reset(&self, token_hash: TokenHash, now: UnixMillis) -> Result<Option<AccountId>> {
        let id: Option<i64> = sqlx::query_scalar(
            "UPDATE password_resets SET used_at = $2 \
             WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2 RETURNING account_id",
        )
        .bind(&token_hash.0[..])
        .bind(now.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        Ok(id.map(|id| AccountId(row_id(id))))
    }

    async fn create_login_challenge(&self, ch: LoginChallenge) -> Result<()> {
        check_exists("account", ch.account_id.0, self.account_exists(ch.account_id).await?)?;
        let id = db_id(ch.account_id.0).unwrap_or(i64::MAX);
        let mut tx = self.pool.begin().await.map_err(backend)?;
        sqlx::query("DELETE FROM login_challenges WHERE account_id = $1 OR expires_at <= $2")
            .bind(id)
            .bind(ch.created_at.0)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        sqlx::query(
            "INSERT INTO login_challenges (id_hash, account_id, code_hash, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&ch.id_hash.0[..])
        .bind(id)
        .bind(&ch.code_hash.0[..])
        .bind(ch.created_at.0)
        .bind(ch.expires_at.0)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)
    }

    async fn claim_login_challenge_attempt(
        &self,
        id_hash: TokenHash,
        now: UnixMillis,
        max_attempts: u32,
    ) -> Result<Option<LoginChallenge>> {
        check_challenge_attempts(max_attempts)?;
        let row = sqlx::query(
            "UPDATE login_challenges SET attempts = attempts + 1 \
             WHERE id_hash = $1 AND NOT used AND expires_at > $2 AND attempts < $3 \
             RETURNING account_id, code_hash, created_at, expires_at, attempts",
        )
        .bind(&id_hash.0[..])
        .bind(now.0)
        .bind(i64::from(max_attempts))
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        let Some(row) = row else { return Ok(None) };
        let code: Vec<u8> = row.try_get(1).map_err(backend)?;
        let code_hash = <[u8; 32]>::try_from(code.as_slice())
            .map_err(|_| StoreError::Backend("a login code hash is not 32 bytes".into()))?;
        let attempts: i32 = row.try_get(4).map_err(backend)?;
        Ok(Some(LoginChallenge {
            id_hash,
            account_id: AccountId(row_id(row.try_get(0).map_err(backend)?)),
            code_hash: TokenHash(code_hash),
            created_at: UnixMillis(row.try_get(2).map_err(backend)?),
            expires_at: UnixMillis(row.try_get(3).map_err(backend)?),
            attempts: u32::try_from(attempts).unwrap_or(0),
        }))
    }

    async fn finish_login_challenge(&self, id_hash: TokenHash, now: UnixMillis) -> Result<bool> {
        let done =
            sqlx::query("UPDATE login_challenges SET used = true WHERE id_hash = $1 AND NOT used AND expires_at > $2")
                .bind(&id_hash.0[..])
                .bind(now.0)
                .execute(&self.pool)
                .await
                .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }
}
