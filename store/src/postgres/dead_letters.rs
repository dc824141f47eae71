//! Dead letters on PostgreSQL ([`DeadLetterStore`]): one row each, the oldest deleted beyond the
//! cap in the transaction that records a new one.

use async_trait::async_trait;
use fleetpulse_proto::{DeviceId, EnterpriseId, UnixMillis};
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::{PgEntityStore, backend, db_id};
use crate::dead_letters::checked;
use crate::*;

fn from_row(r: &PgRow) -> Result<DeadLetter> {
    let stage: String = r.try_get(1).map_err(backend)?;
    let payload: String = r.try_get(6).map_err(backend)?;
    Ok(DeadLetter {
        id: DeadLetterId(r.try_get::<i64, _>(0).map_err(backend)? as u64),
        stage: DeadLetterStage::parse(&stage)
            .ok_or_else(|| StoreError::Backend(format!("dead letter of stage {stage:?}")))?,
        reason: r.try_get(2).map_err(backend)?,
        detail: r.try_get(3).map_err(backend)?,
        enterprise_id: r.try_get::<Option<i64>, _>(4).map_err(backend)?.map(|e| EnterpriseId(e as u64)),
        device_id: r.try_get::<Option<i64>, _>(5).map_err(backend)?.map(|d| DeviceId(d as u64)),
        payload: serde_json::from_str(&payload)
            .map_err(|e| StoreError::Backend(format!("decoding a dead letter: {e}")))?,
        attempts: u32::try_from(r.try_get::<i64, _>(7).map_err(backend)?).unwrap_or(u32::MAX),
        at: UnixMillis(r.try_get(8).map_err(backend)?),
    })
}

#[async_trait]
impl DeadLetterStore for PgEntityStore {
    async fn record_dead_letter(&self, letter: NewDeadLetter, keep: usize) -> Result<(DeadLetterId, u64)> {
        let (payload, detail) = checked(&letter)?;
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO dead_letters (stage, reason, detail, enterprise_id, device_id, payload, attempts, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(letter.stage.as_str())
        .bind(letter.reason.code)
        .bind(detail)
        .bind(letter.enterprise_id.map(|e| e.0 as i64))
        .bind(letter.device_id.map(|d| d.0 as i64))
        .bind(payload)
        .bind(i64::from(letter.attempts))
        .bind(letter.at.0)
        .fetch_one(&mut *tx)
        .await
        .map_err(backend)?;
        let evicted = sqlx::query(
            "DELETE FROM dead_letters WHERE id IN \
             (SELECT id FROM dead_letters ORDER BY id DESC OFFSET $1)",
        )
        .bind(i64::try_from(keep).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await
        .map_err(backend)?
        .rows_affected();
        tx.commit().await.map_err(backend)?;
        Ok((DeadLetterId(id as u64), evicted))
    }

    async fn list_dead_letters(&self, filter: DeadLetterFilter, limit: usize) -> Result<Vec<DeadLetter>> {
        let limit = limit.min(MAX_DEAD_LETTER_PAGE) as i64;
        let after = filter.after.map_or(0, |a| db_id(a.0).unwrap_or(i64::MAX));
        let rows = sqlx::query(
            "SELECT id, stage, reason, detail, enterprise_id, device_id, payload, attempts, at FROM dead_letters \
             WHERE id > $1 AND ($2::TEXT IS NULL OR stage = $2) ORDER BY id LIMIT $3",
        )
        .bind(after)
        .bind(filter.stage.map(DeadLetterStage::as_str))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(from_row).collect()
    }

    async fn dead_letter(&self, id: DeadLetterId) -> Result<Option<DeadLetter>> {
        let Some(id) = db_id(id.0) else { return Ok(None) };
        let row = sqlx::query(
            "SELECT id, stage, reason, detail, enterprise_id, device_id, payload, attempts, at FROM dead_letters \
             WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.as_ref().map(from_row).transpose()
    }

    async fn delete_dead_letter(&self, id: DeadLetterId) -> Result<bool> {
        let Some(id) = db_id(id.0) else { return Ok(false) };
        let deleted = sqlx::query("DELETE FROM dead_letters WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(backend)?
            .rows_affected();
        Ok(deleted > 0)
    }
}
