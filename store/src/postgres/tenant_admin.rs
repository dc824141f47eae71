//! Deleted sub-accounts, tenant freezes and enterprise moves on PostgreSQL
//! ([`TenantAdminStore`]); each change is one transaction.

use async_trait::async_trait;
use fleetpulse_proto::{AccountId, ChannelId, EnterpriseId, UnixMillis};
use sqlx::Row;

use super::{PgEntityStore, backend, db_id, row_id};
use crate::tenant_admin::tombstone_email;
use crate::*;

/// The live accounts of a tenant, as a CTE `tenant_accounts(id)` over `$1` (see the embedded
/// backend).
fn tenant_accounts_cte(tenant: TenantRef) -> &'static str {
    match tenant {
        TenantRef::Channel(_) => {
            "WITH RECURSIVE subtree(id) AS (SELECT id FROM channels WHERE id = $1 \
             UNION SELECT c.id FROM channels c JOIN subtree s ON c.parent_id = s.id), \
             tenant_accounts(id) AS (SELECT id FROM accounts WHERE deleted_at IS NULL AND \
             (channel_id IN (SELECT id FROM subtree) \
             OR enterprise_id IN (SELECT id FROM enterprises WHERE channel_id IN (SELECT id FROM subtree)))) "
        }
        TenantRef::Enterprise(_) => {
            "WITH tenant_accounts(id) AS (SELECT id FROM accounts WHERE deleted_at IS NULL AND enterprise_id = $1) "
        }
    }
}

#[async_trait]
impl TenantAdminStore for PgEntityStore {
    async fn delete_sub_account(&self, id: AccountId, now: UnixMillis) -> Result<bool> {
        let Some(account) = db_id(id.0) else { return Ok(false) };
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let done = sqlx::query(
            "UPDATE accounts SET deleted_at = $2, email = $3, password_hash = '', frozen = TRUE, frozen_by = NULL, \
             totp_secret = NULL WHERE id = $1 AND parent_id IS NOT NULL AND deleted_at IS NULL",
        )
        .bind(account)
        .bind(now.0)
        .bind(tombstone_email(id))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        let deleted = done.rows_affected() > 0;
        if deleted {
            for table in ["sessions", "password_resets", "login_challenges", "device_labels", "device_columns"] {
                sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table} WHERE account_id = $1")))
                    .bind(account)
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
            }
        }
        tx.commit().await.map_err(backend)?;
        Ok(deleted)
    }

    async fn freeze_tenant(&self, tenant: TenantRef, by: AccountId, now: UnixMillis) -> Result<Option<TenantFreeze>> {
        let (kind, id) = tenant.parts();
        let exists = match tenant {
            TenantRef::Channel(c) => self.channel_row_exists(c).await?,
            TenantRef::Enterprise(e) => self.enterprise(e).await?.is_some(),
        };
        check_exists(kind, id, exists)?;
        let Some(tenant_id) = db_id(id) else { return Ok(None) };
        let mut tx = self.pool.begin().await.map_err(backend)?;
        // The freeze row first: of two concurrent freezes of one tenant, one inserts it.
        let inserted = sqlx::query(
            "INSERT INTO tenant_freezes (kind, tenant_id, frozen_at, frozen_by, accounts) \
             VALUES ($1, $2, $3, $4, 0) ON CONFLICT DO NOTHING",
        )
        .bind(kind)
        .bind(tenant_id)
        .bind(now.0)
        .bind(db_id(by.0).unwrap_or(0))
        .execute(&mut *tx)
        .await
        .map_err(backend)?
        .rows_affected()
            > 0;
        if !inserted {
            return Ok(None);
        }
        let key = tenant.key();
        let cte = tenant_accounts_cte(tenant);
        let frozen = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{cte}UPDATE accounts SET frozen = TRUE, frozen_by = $2 \
             WHERE NOT frozen AND id IN (SELECT id FROM tenant_accounts)"
        )))
        .bind(tenant_id)
        .bind(&key)
        .execute(&mut *tx)
        .await
        .map_err(backend)?
        .rows_affected();
        sqlx::query("DELETE FROM sessions WHERE account_id IN (SELECT id FROM accounts WHERE frozen_by = $1)")
            .bind(&key)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        sqlx::query("UPDATE tenant_freezes SET accounts = $3 WHERE kind = $1 AND tenant_id = $2")
            .bind(kind)
            .bind(tenant_id)
            .bind(i64::try_from(frozen).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(Some(TenantFreeze { tenant, frozen_at: now, frozen_by: by, accounts: frozen }))
    }

    async fn unfreeze_tenant(&self, tenant: TenantRef) -> Result<Option<u64>> {
        let (kind, id) = tenant.parts();
        let Some(tenant_id) = db_id(id) else { return Ok(None) };
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let removed = sqlx::query("DELETE FROM tenant_freezes WHERE kind = $1 AND tenant_id = $2")
            .bind(kind)
            .bind(tenant_id)
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected()
            > 0;
        if !removed {
            return Ok(None);
        }
        let unfrozen = sqlx::query("UPDATE accounts SET frozen = FALSE, frozen_by = NULL WHERE frozen_by = $1")
            .bind(tenant.key())
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected();
        tx.commit().await.map_err(backend)?;
        Ok(Some(unfrozen))
    }

    async fn tenant_freeze(&self, tenant: TenantRef) -> Result<Option<TenantFreeze>> {
        let (kind, id) = tenant.parts();
        let Some(tenant_id) = db_id(id) else { return Ok(None) };
        let row =
            sqlx::query("SELECT frozen_at, frozen_by, accounts FROM tenant_freezes WHERE kind = $1 AND tenant_id = $2")
                .bind(kind)
                .bind(tenant_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(TenantFreeze {
            tenant,
            frozen_at: UnixMillis(row.try_get("frozen_at").map_err(backend)?),
            frozen_by: AccountId(row_id(row.try_get("frozen_by").map_err(backend)?)),
            accounts: row_id(row.try_get("accounts").map_err(backend)?),
        }))
    }

    async fn move_enterprise(&self, id: EnterpriseId, to: Option<ChannelId>) -> Result<Option<Enterprise>> {
        let Some(enterprise) = db_id(id.0) else { return Ok(None) };
        if let Some(channel) = to {
            check_exists("channel", channel.0, self.channel_row_exists(channel).await?)?;
        }
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let moved = sqlx::query("UPDATE enterprises SET channel_id = $2, channel_authorization = 'none' WHERE id = $1")
            .bind(enterprise)
            .bind(to.and_then(|c| db_id(c.0)))
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected()
            > 0;
        if moved {
            sqlx::query("DELETE FROM sessions WHERE acting_enterprise_id = $1")
                .bind(enterprise)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
        if moved { self.enterprise(id).await } else { Ok(None) }
    }
}
