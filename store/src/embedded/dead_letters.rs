//! Dead letters on SQLite ([`DeadLetterStore`]): one row each, the oldest deleted beyond the cap
//! in the transaction that records a new one.

use async_trait::async_trait;
use fleetpulse_proto::{DeviceId, EnterpriseId, UnixMillis};
use rusqlite::{OptionalExtension, Row, params};

use super::EmbeddedStore;
use crate::dead_letters::checked;
use crate::*;

const COLUMNS: &str = "id, stage, reason, detail, enterprise_id, device_id, payload, attempts, at";

fn from_row(r: &Row<'_>) -> rusqlite::Result<DeadLetter> {
    let stage: String = r.get(1)?;
    let payload: String = r.get(6)?;
    let conversion = |i: usize, e: Box<dyn std::error::Error + Send + Sync>| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e)
    };
    Ok(DeadLetter {
        id: DeadLetterId(r.get(0)?),
        stage: DeadLetterStage::parse(&stage).ok_or_else(|| conversion(1, format!("stage {stage:?}").into()))?,
        reason: r.get(2)?,
        detail: r.get(3)?,
        enterprise_id: r.get::<_, Option<u64>>(4)?.map(EnterpriseId),
        device_id: r.get::<_, Option<u64>>(5)?.map(DeviceId),
        payload: serde_json::from_str(&payload).map_err(|e| conversion(6, Box::new(e)))?,
        attempts: r.get(7)?,
        at: UnixMillis(r.get(8)?),
    })
}

#[async_trait]
impl DeadLetterStore for EmbeddedStore {
    async fn record_dead_letter(&self, letter: NewDeadLetter, keep: usize) -> Result<(DeadLetterId, u64)> {
        let (payload, detail) = checked(&letter)?;
        self.write(1, move |c| {
            c.prepare_cached(
                "INSERT INTO dead_letters (stage, reason, detail, enterprise_id, device_id, payload, attempts, at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                letter.stage.as_str(),
                letter.reason.code,
                detail,
                letter.enterprise_id.map(|e| e.0),
                letter.device_id.map(|d| d.0),
                payload,
                letter.attempts,
                letter.at.0
            ])?;
            let id = c.last_insert_rowid();
            let evicted = c
                .prepare_cached(
                    "DELETE FROM dead_letters WHERE id IN \
                     (SELECT id FROM dead_letters ORDER BY id DESC LIMIT -1 OFFSET ?1)",
                )?
                .execute([i64::try_from(keep).unwrap_or(i64::MAX)])?;
            Ok((DeadLetterId(id as u64), evicted as u64))
        })
        .await
    }

    async fn list_dead_letters(&self, filter: DeadLetterFilter, limit: usize) -> Result<Vec<DeadLetter>> {
        let limit = limit.min(MAX_DEAD_LETTER_PAGE) as i64;
        let after = filter.after.map_or(0, |a| i64::try_from(a.0).unwrap_or(i64::MAX));
        let stage = filter.stage.map(DeadLetterStage::as_str);
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM dead_letters WHERE id > ?1 AND (?2 IS NULL OR stage = ?2) \
                 ORDER BY id LIMIT ?3"
            ))?;
            let rows = stmt.query_map(params![after, stage, limit], from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn dead_letter(&self, id: DeadLetterId) -> Result<Option<DeadLetter>> {
        let Ok(id) = i64::try_from(id.0) else { return Ok(None) };
        self.read(move |c| {
            Ok(c.prepare_cached(&format!("SELECT {COLUMNS} FROM dead_letters WHERE id = ?1"))?
                .query_row([id], from_row)
                .optional()?)
        })
        .await
    }

    async fn delete_dead_letter(&self, id: DeadLetterId) -> Result<bool> {
        let Ok(id) = i64::try_from(id.0) else { return Ok(false) };
        self.write(1, move |c| Ok(c.prepare_cached("DELETE FROM dead_letters WHERE id = ?1")?.execute([id])? > 0)).await
    }
}
