//! Relay grants on PostgreSQL ([`RelayStore`]): as in the embedded store, one row each, the
//! credential's SHA-256 unique.

use async_trait::async_trait;
use fleetpulse_proto::{AccountId, UnixMillis};
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, Row};

use super::{PgEntityStore, backend, db_id, row_id, unique_as};
use crate::relays::{checked_name, scope_from};
use crate::*;

const COLUMNS: &str = "id, name, scope_kind, scope_id, created_by, created_at, rotated_at, revoked_at, last_seen_at";

fn from_row(r: &PgRow) -> Result<Relay> {
    let kind: String = r.try_get(2).map_err(backend)?;
    let scope_id: i64 = r.try_get(3).map_err(backend)?;
    let scope = scope_from(&kind, row_id(scope_id)).ok_or_else(|| StoreError::Backend(format!("scope {kind:?}")))?;
    let at = |i: usize| -> Result<Option<UnixMillis>> {
        Ok(r.try_get::<Option<i64>, _>(i).map_err(backend)?.map(UnixMillis))
    };
    Ok(Relay {
        id: RelayId(row_id(r.try_get(0).map_err(backend)?)),
        name: r.try_get(1).map_err(backend)?,
        scope,
        created_by: AccountId(row_id(r.try_get(4).map_err(backend)?)),
        created_at: UnixMillis(r.try_get(5).map_err(backend)?),
        rotated_at: at(6)?,
        revoked_at: at(7)?,
        last_seen_at: at(8)?,
    })
}

impl PgEntityStore {
    async fn relay_where(&self, condition: &str, id: i64) -> Result<Option<Relay>> {
        sqlx::query(AssertSqlSafe(format!("SELECT {COLUMNS} FROM relays WHERE {condition}")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(from_row)
            .transpose()
    }
}

#[async_trait]
impl RelayStore for PgEntityStore {
    async fn create_relay(&self, new: NewRelay) -> Result<Relay> {
        let name = checked_name(&new.name)?;
        let (kind, scope_id) = new.scope.parts();
        let table = if kind == "channel" { "channels" } else { "enterprises" };
        let mut tx = self.pool.begin().await.map_err(backend)?;
        // Creating is rare: one at a time, so that the count bound holds.
        sqlx::query("LOCK TABLE relays IN EXCLUSIVE MODE").execute(&mut *tx).await.map_err(backend)?;
        let exists: Option<i32> = match db_id(scope_id) {
            Some(id) => sqlx::query_scalar(AssertSqlSafe(format!("SELECT 1 FROM {table} WHERE id = $1")))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?,
            None => None,
        };
        if exists.is_none() {
            return Err(StoreError::InvalidInput(format!("no {kind} {scope_id}")));
        }
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM relays").fetch_one(&mut *tx).await.map_err(backend)?;
        if count as usize >= MAX_RELAYS {
            return Err(StoreError::LimitExceeded(format!("at most {MAX_RELAYS} relays")));
        }
        let row = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO relays (name, scope_kind, scope_id, credential_hash, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
        )))
        .bind(name)
        .bind(kind)
        .bind(scope_id as i64)
        .bind(&new.credential_hash.0[..])
        .bind(new.created_by.0 as i64)
        .bind(new.at.0)
        .fetch_one(&mut *tx)
        .await
        .map_err(unique_as("relay credential"))?;
        let relay = from_row(&row)?;
        tx.commit().await.map_err(backend)?;
        Ok(relay)
    }

    async fn relay(&self, id: RelayId) -> Result<Option<Relay>> {
        let Some(id) = db_id(id.0) else { return Ok(None) };
        self.relay_where("id = $1", id).await
    }

    async fn list_relays(&self) -> Result<Vec<Relay>> {
        let rows = sqlx::query(AssertSqlSafe(format!("SELECT {COLUMNS} FROM relays ORDER BY id LIMIT $1")))
            .bind(MAX_RELAYS as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        rows.iter().map(from_row).collect()
    }

    async fn relay_by_credential(&self, hash: TokenHash) -> Result<Option<Relay>> {
        sqlx::query(AssertSqlSafe(format!("SELECT {COLUMNS} FROM relays WHERE credential_hash = $1")))
            .bind(&hash.0[..])
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(from_row)
            .transpose()
    }

    async fn rename_relay(&self, id: RelayId, name: String) -> Result<Option<Relay>> {
        let name = checked_name(&name)?;
        let Some(id) = db_id(id.0) else { return Ok(None) };
        sqlx::query(AssertSqlSafe(format!("UPDATE relays SET name = $2 WHERE id = $1 RETURNING {COLUMNS}")))
            .bind(id)
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(from_row)
            .transpose()
    }

    async fn rotate_relay(&self, id: RelayId, credential_hash: TokenHash, at: UnixMillis) -> Result<Option<Relay>> {
        let Some(id) = db_id(id.0) else { return Ok(None) };
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE relays SET credential_hash = $2, rotated_at = $3 WHERE id = $1 AND revoked_at IS NULL \
             RETURNING {COLUMNS}"
        )))
        .bind(id)
        .bind(&credential_hash.0[..])
        .bind(at.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(unique_as("relay credential"))?
        .as_ref()
        .map(from_row)
        .transpose()
    }

    async fn revoke_relay(&self, id: RelayId, at: UnixMillis) -> Result<Option<Relay>> {
        let Some(id) = db_id(id.0) else { return Ok(None) };
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE relays SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL RETURNING {COLUMNS}"
        )))
        .bind(id)
        .bind(at.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .as_ref()
        .map(from_row)
        .transpose()
    }

    async fn delete_relay(&self, id: RelayId) -> Result<bool> {
        let Some(id) = db_id(id.0) else { return Ok(false) };
        let done =
            sqlx::query("DELETE FROM relays WHERE id = $1").bind(id).execute(&self.pool).await.map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }

    async fn touch_relay(&self, id: RelayId, at: UnixMillis) -> Result<()> {
        let Some(id) = db_id(id.0) else { return Ok(()) };
        sqlx::query(
            "UPDATE relays SET last_seen_at = $2 WHERE id = $1 AND (last_seen_at IS NULL OR last_seen_at < $2)",
        )
        .bind(id)
        .bind(at.0)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }
}
