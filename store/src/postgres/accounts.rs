//! Accounts, sessions, TOTP and login lockout on PostgreSQL ([`AccountStore`]); the counters
//! and single-use checks are single conditional statements, so concurrent calls each count once.

use async_trait::async_trait;
use fleetpulse_proto::ids::ChannelId;
use fleetpulse_proto::{AccountId, EnterpriseId, UnixMillis};
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::{PgEntityStore, backend, db_id, row_id, tenant_arrays, unique_as};
use crate::*;

fn account_from_row(r: &PgRow) -> Result<Account> {
    let role: String = r.try_get("role").map_err(backend)?;
    // An unknown role is an error, never some default role: that could grant too much.
    let role = Role::parse(&role).ok_or_else(|| StoreError::Backend(format!("unknown account role {role:?}")))?;
    Ok(Account {
        id: AccountId(row_id(r.try_get("id").map_err(backend)?)),
        email: r.try_get("email").map_err(backend)?,
        password_hash: r.try_get("password_hash").map_err(backend)?,
        role,
        channel_id: r.try_get::<Option<i64>, _>("channel_id").map_err(backend)?.map(|c| ChannelId(row_id(c))),
        enterprise_id: r.try_get::<Option<i64>, _>("enterprise_id").map_err(backend)?.map(|e| EnterpriseId(row_id(e))),
        created_at: UnixMillis(r.try_get("created_at").map_err(backend)?),
        failed_logins: u32::try_from(r.try_get::<i32, _>("failed_logins").map_err(backend)?).unwrap_or(0),
        locked_until: r.try_get::<Option<i64>, _>("locked_until").map_err(backend)?.map(UnixMillis),
        totp_secret: r
            .try_get::<Option<Vec<u8>>, _>("totp_secret")
            .map_err(backend)?
            .map(|s| {
                <[u8; 20]>::try_from(s.as_slice())
                    .map_err(|_| StoreError::Backend(format!("a TOTP secret of {} bytes", s.len())))
            })
            .transpose()?,
        totp_last_step: r.try_get::<Option<i64>, _>("totp_last_step").map_err(backend)?.map(row_id),
        frozen: r.try_get("frozen").map_err(backend)?,
        must_change_password: r.try_get("must_change_password").map_err(backend)?,
        parent_id: r.try_get::<Option<i64>, _>("parent_id").map_err(backend)?.map(|p| AccountId(row_id(p))),
        permissions: r
            .try_get::<Option<String>, _>("permissions")
            .map_err(backend)?
            .map(|p| Permissions::decode(&p).map_err(|e| StoreError::Backend(format!("decoding permissions: {e}"))))
            .transpose()?,
    })
}

fn session_from_row(token_hash: TokenHash, r: &PgRow) -> Result<Session> {
    Ok(Session {
        token_hash,
        account_id: AccountId(row_id(r.try_get("account_id").map_err(backend)?)),
        created_at: UnixMillis(r.try_get("created_at").map_err(backend)?),
        expires_at: UnixMillis(r.try_get("expires_at").map_err(backend)?),
        last_seen_at: UnixMillis(r.try_get("last_seen_at").map_err(backend)?),
        acting: match (
            r.try_get::<Option<i64>, _>("acting_enterprise_id").map_err(backend)?,
            r.try_get::<Option<i64>, _>("acting_channel_id").map_err(backend)?,
        ) {
            (Some(e), _) => Some(Acting::Enterprise(EnterpriseId(row_id(e)))),
            (None, Some(c)) => Some(Acting::Channel(ChannelId(row_id(c)))),
            (None, None) => None,
        },
    })
}

/// The columns `account_from_row` reads.
macro_rules! account_columns {
    () => {
        "id, email, password_hash, role, created_at, failed_logins, locked_until, totp_secret, totp_last_step, \
         channel_id, enterprise_id, frozen, must_change_password, parent_id, permissions"
    };
}
const ACCOUNT_BY_EMAIL: &str =
    concat!("SELECT ", account_columns!(), " FROM accounts WHERE lower(email) = lower($1) AND deleted_at IS NULL");
const ACCOUNT_BY_ID: &str =
    concat!("SELECT ", account_columns!(), " FROM accounts WHERE id = $1 AND deleted_at IS NULL");
/// Every filter of [`AccountStore::list_accounts`] is a parameter (NULL: not filtering).
const ACCOUNT_FILTERED_PAGE: &str = concat!(
    "SELECT ",
    account_columns!(),
    " FROM accounts WHERE ($1::bigint[] IS NULL OR channel_id = ANY($1) OR enterprise_id = ANY($2::bigint[])) \
     AND ($5::bigint IS NULL OR parent_id = $5) AND ($6::text IS NULL OR strpos(lower(email), $6) > 0 \
     OR id IN (SELECT account_id FROM account_settings WHERE strpos(contact_search, $6) > 0)) \
     AND deleted_at IS NULL AND id > $3 ORDER BY id LIMIT $4"
);
/// Counts a wrong password: one statement, so concurrent failures each count (the row lock
/// orders them) and the `SET` expressions all read the row as it was before this update.
const RECORD_LOGIN_FAILURE: &str = "UPDATE accounts SET \
     failed_logins = CASE WHEN failed_logins + 1 >= $2 THEN 0 ELSE failed_logins + 1 END, \
     locked_until = CASE WHEN failed_logins + 1 >= $2 THEN $3 ELSE locked_until END \
     WHERE id = $1 RETURNING id, email, password_hash, role, created_at, failed_logins, locked_until, \
     totp_secret, totp_last_step, channel_id, enterprise_id, frozen, must_change_password, parent_id, permissions";
/// Accepts a TOTP step: one conditional statement, so of concurrent attempts at the same step
/// exactly one updates (the row lock orders them; the later ones see the step recorded).
const RECORD_TOTP_STEP: &str = "UPDATE accounts SET totp_last_step = $2 \
     WHERE id = $1 AND (totp_last_step IS NULL OR totp_last_step < $2)";
#[async_trait]
impl AccountStore for PgEntityStore {
    async fn create_account(&self, new: NewAccount) -> Result<Account> {
        new.validate_tenant()?;
        let now = UnixMillis::now();
        // The tenant must exist; the foreign keys refuse it too (rows are never deleted, so
        // that is only a backstop).
        let channel = match new.channel_id {
            Some(c) => {
                check_exists("channel", c.0, self.channel_row_exists(c).await?)?;
                db_id(c.0)
            }
            None => None,
        };
        let enterprise = match new.enterprise_id {
            Some(e) => {
                check_exists("enterprise", e.0, self.enterprise(e).await?.is_some())?;
                db_id(e.0)
            }
            None => None,
        };
        if let Some(parent) = new.parent_id {
            check_sub_account_parent(&new, self.account(parent).await?.as_ref())?;
        }
        let permissions = new.permissions.as_ref().map(Permissions::encode).transpose()?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO accounts (email, password_hash, role, created_at, channel_id, enterprise_id, \
             must_change_password, parent_id, permissions) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
        )
        .bind(&new.email)
        .bind(&new.password_hash)
        .bind(new.role.as_str())
        .bind(now.0)
        .bind(channel)
        .bind(enterprise)
        .bind(new.must_change_password)
        .bind(new.parent_id.and_then(|p| db_id(p.0)))
        .bind(permissions)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                StoreError::InvalidInput("the account's channel or enterprise does not exist".into())
            }
            _ => unique_as("email")(e),
        })?;
        Ok(Account {
            id: AccountId(row_id(id)),
            email: new.email,
            password_hash: new.password_hash,
            role: new.role,
            channel_id: new.channel_id,
            enterprise_id: new.enterprise_id,
            created_at: now,
            failed_logins: 0,
            locked_until: None,
            totp_secret: None,
            totp_last_step: None,
            frozen: false,
            must_change_password: new.must_change_password,
            parent_id: new.parent_id,
            permissions: new.permissions,
        })
    }

    async fn account_by_email(&self, email: &str) -> Result<Option<Account>> {
        sqlx::query(ACCOUNT_BY_EMAIL)
            .bind(email)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(account_from_row)
            .transpose()
    }

    async fn account(&self, id: AccountId) -> Result<Option<Account>> {
        let Some(id) = db_id(id.0) else { return Ok(None) };
        sqlx::query(ACCOUNT_BY_ID)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(account_from_row)
            .transpose()
    }

    async fn set_password(&self, account: AccountId, password_hash: String, must_change: bool) -> Result<bool> {
        let Some(id) = db_id(account.0) else { return Ok(false) };
        let done = sqlx::query("UPDATE accounts SET password_hash = $2, must_change_password = $3 WHERE id = $1")
            .bind(id)
            .bind(password_hash)
            .bind(must_change)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }

    async fn count_accounts(&self, role: Role) -> Result<u64> {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM accounts WHERE role = $1")
            .bind(role.as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(backend)?;
        Ok(row_id(count))
    }

    async fn create_session(&self, s: Session) -> Result<()> {
        let account = db_id(s.account_id.0).unwrap_or(i64::MAX);
        // One statement, so one transaction: purge the sessions expired by the new one's
        // creation time, then store it (as the embedded store does in one write job).
        sqlx::query(
            "WITH purged AS (DELETE FROM sessions WHERE expires_at < $3) \
             INSERT INTO sessions (token_hash, account_id, created_at, expires_at, last_seen_at, \
             acting_enterprise_id, acting_channel_id) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&s.token_hash.0[..])
        .bind(account)
        .bind(s.created_at.0)
        .bind(s.expires_at.0)
        .bind(s.last_seen_at.0)
        .bind(match s.acting {
            Some(Acting::Enterprise(e)) => db_id(e.0),
            _ => None,
        })
        .bind(match s.acting {
            Some(Acting::Channel(c)) => db_id(c.0),
            _ => None,
        })
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn session(&self, token_hash: TokenHash, now: UnixMillis) -> Result<Option<Session>> {
        sqlx::query(
            "SELECT account_id, created_at, expires_at, last_seen_at, acting_enterprise_id, acting_channel_id \
             FROM sessions WHERE token_hash = $1 AND expires_at > $2",
        )
        .bind(&token_hash.0[..])
        .bind(now.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .map(|r| session_from_row(token_hash, &r))
        .transpose()
    }

    async fn touch_session(&self, token_hash: TokenHash, now: UnixMillis) -> Result<()> {
        sqlx::query("UPDATE sessions SET last_seen_at = $2 WHERE token_hash = $1 AND last_seen_at < $2")
            .bind(&token_hash.0[..])
            .bind(now.0)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn delete_session(&self, token_hash: TokenHash) -> Result<bool> {
        let done = sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(&token_hash.0[..])
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }

    async fn list_accounts(&self, filter: AccountFilter, page: Page) -> Result<Vec<Account>> {
        let Some(after) = db_id(page.after) else { return Ok(Vec::new()) };
        let (channels, enterprises) = tenant_arrays(filter.channels, filter.enterprises, MAX_ACCOUNT_FILTER)?.unzip();
        let q = search_needle(filter.q.as_deref())?;
        sqlx::query(ACCOUNT_FILTERED_PAGE)
            .bind(channels)
            .bind(enterprises)
            .bind(after)
            .bind(i64::from(page.limit))
            .bind(filter.parent.map(|p| db_id(p.0).unwrap_or(i64::MAX)))
            .bind(q)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(account_from_row)
            .collect()
    }

    async fn set_account_permissions(&self, account: AccountId, permissions: Permissions) -> Result<bool> {
        let Some(id) = db_id(account.0) else { return Ok(false) };
        let permissions = permissions.normalized()?.encode()?;
        let done = sqlx::query("UPDATE accounts SET permissions = $2 WHERE id = $1 AND permissions IS NOT NULL")
            .bind(id)
            .bind(permissions)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }

    async fn set_account_frozen(&self, account: AccountId, frozen: bool) -> Result<bool> {
        let Some(id) = db_id(account.0) else { return Ok(false) };
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let done =
            sqlx::query("UPDATE accounts SET frozen = $2, frozen_by = NULL WHERE id = $1 AND deleted_at IS NULL")
                .bind(id)
                .bind(frozen)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        let found = done.rows_affected() > 0;
        if found && frozen {
            sqlx::query("DELETE FROM sessions WHERE account_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(found)
    }

    async fn delete_account_sessions(&self, account: AccountId) -> Result<u64> {
        let Some(id) = db_id(account.0) else { return Ok(0) };
        let done = sqlx::query("DELETE FROM sessions WHERE account_id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected())
    }

    async fn set_totp(&self, account: AccountId, secret: Option<[u8; 20]>) -> Result<bool> {
        let Some(id) = db_id(account.0) else { return Ok(false) };
        let done = sqlx::query("UPDATE accounts SET totp_secret = $2, totp_last_step = NULL WHERE id = $1")
            .bind(id)
            .bind(secret.as_ref().map(|s| &s[..]))
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }

    async fn record_totp_step(&self, account: AccountId, step: u64) -> Result<bool> {
        let step = totp_step(step)?;
        let Some(id) = db_id(account.0) else { return Ok(false) };
        let done = sqlx::query(RECORD_TOTP_STEP).bind(id).bind(step).execute(&self.pool).await.map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }

    async fn record_login_failure(
        &self,
        account: AccountId,
        now: UnixMillis,
        max_failures: u32,
        lock_for_ms: u64,
    ) -> Result<Option<Account>> {
        let until = login_lock_until(now, max_failures, lock_for_ms)?;
        let Some(id) = db_id(account.0) else { return Ok(None) };
        sqlx::query(RECORD_LOGIN_FAILURE)
            .bind(id)
            .bind(i64::from(max_failures))
            .bind(until.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(account_from_row)
            .transpose()
    }

    async fn record_login_success(&self, account: AccountId) -> Result<()> {
        let Some(id) = db_id(account.0) else { return Ok(()) };
        sqlx::query(
            "UPDATE accounts SET failed_logins = 0, locked_until = NULL \
             WHERE id = $1 AND (failed_logins <> 0 OR locked_until IS NOT NULL)",
        )
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }
}
