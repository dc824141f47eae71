//! The notification audit on PostgreSQL ([`NotificationAuditStore`]), as in the embedded store:
//! one table for alarm and message entries, bounded per activation and per message at insert;
//! and the retention pass over the audit and the settled outbox.

use async_trait::async_trait;
use fleetpulse_proto::{AlarmTypeCode, DeviceId, UnixMillis};
use sqlx::Row;

use super::{PgEntityStore, backend, db_id};
use crate::audit::bounded;
use crate::*;

#[async_trait]
impl NotificationAuditStore for PgEntityStore {
    async fn record_alarm_audit(&self, entries: Vec<AlarmAuditEntry>) -> Result<()> {
        if entries.len() > MAX_AUDIT_BATCH {
            return Err(StoreError::InvalidInput(format!("at most {MAX_AUDIT_BATCH} audit entries at once")));
        }
        let mut tx = self.pool.begin().await.map_err(backend)?;
        insert_alarm_audit(&mut tx, &entries).await?;
        tx.commit().await.map_err(backend)
    }

    async fn record_message_audit(&self, entries: Vec<MessageAuditEntry>) -> Result<()> {
        if entries.len() > MAX_AUDIT_BATCH {
            return Err(StoreError::InvalidInput(format!("at most {MAX_AUDIT_BATCH} audit entries at once")));
        }
        let mut tx = self.pool.begin().await.map_err(backend)?;
        insert_message_audit(&mut tx, &entries).await?;
        tx.commit().await.map_err(backend)
    }

    async fn notification_audit(
        &self,
        device: DeviceId,
        code: AlarmTypeCode,
        first_at: UnixMillis,
        limit: u32,
    ) -> Result<Vec<AuditEntry>> {
        let Some(device) = db_id(device.0) else { return Ok(Vec::new()) };
        let limit = i64::from(limit.clamp(1, MAX_AUDIT_READ));
        let rows = sqlx::query(
            "SELECT at, event, receiver, message_key, detail, id FROM notification_audit \
             WHERE device_id = $1 AND code = $2 AND first_at = $3 \
             UNION ALL \
             SELECT at, event, receiver, message_key, detail, id FROM notification_audit \
             WHERE device_id IS NULL AND message_key IN (SELECT message_key FROM notification_audit \
             WHERE device_id = $1 AND code = $2 AND first_at = $3 AND message_key IS NOT NULL) \
             ORDER BY 1, 6 LIMIT $4",
        )
        .bind(device)
        .bind(i32::from(code.0))
        .bind(first_at.0)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|r| {
                let event: String = r.try_get("event").map_err(backend)?;
                Ok(AuditEntry {
                    at: UnixMillis(r.try_get("at").map_err(backend)?),
                    event: AuditEvent::parse(&event)
                        .ok_or_else(|| StoreError::Backend(format!("audit event {event:?}")))?,
                    receiver: r.try_get("receiver").map_err(backend)?,
                    message_key: r.try_get("message_key").map_err(backend)?,
                    detail: r.try_get("detail").map_err(backend)?,
                })
            })
            .collect()
    }

    async fn prune_notifications(&self, before: UnixMillis, limit: u32) -> Result<PruneCounts> {
        let limit = i64::from(limit.max(1));
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let audit = sqlx::query(
            "DELETE FROM notification_audit WHERE id IN \
             (SELECT id FROM notification_audit WHERE at < $1 ORDER BY at LIMIT $2)",
        )
        .bind(before.0)
        .bind(limit)
        .execute(&mut *tx)
        .await
        .map_err(backend)?
        .rows_affected();
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM outbox WHERE state IN ('sent', 'failed') AND created_at < $1 ORDER BY created_at LIMIT $2",
        )
        .bind(before.0)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        let items = sqlx::query("DELETE FROM outbox_items WHERE message_id = ANY($1)")
            .bind(&ids)
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected();
        let outbox = sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
            .bind(&ids)
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected();
        tx.commit().await.map_err(backend)?;
        Ok(PruneCounts { audit, outbox, items })
    }
}

/// Appends alarm entries inside `tx` (beyond an activation's bound they are left out):
/// [`NotificationAuditStore::record_alarm_audit`], and the entries an outbox batch records in
/// its own transaction.
pub(super) async fn insert_alarm_audit(tx: &mut sqlx::PgConnection, entries: &[AlarmAuditEntry]) -> Result<()> {
    for e in entries {
        let (Some(enterprise), Some(device)) = (db_id(e.enterprise_id.0), db_id(e.device_id.0)) else { continue };
        sqlx::query(
            "INSERT INTO notification_audit \
             (enterprise_id, device_id, code, first_at, at, event, receiver, message_key, detail) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 WHERE (SELECT count(*) FROM notification_audit \
             WHERE device_id = $2 AND code = $3 AND first_at = $4) < $10",
        )
        .bind(enterprise)
        .bind(device)
        .bind(i32::from(e.code.0))
        .bind(e.first_at.0)
        .bind(e.at.0)
        .bind(e.event.as_str())
        .bind(e.receiver.as_deref().map(bounded))
        .bind(e.message_key.as_deref().map(bounded))
        .bind(bounded(&e.detail))
        .bind(i64::from(MAX_AUDIT_PER_ACTIVATION))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
    }
    Ok(())
}

/// Appends message entries inside `tx` (beyond a message's bound they are left out):
/// [`NotificationAuditStore::record_message_audit`], and the entries the outbox's outcomes
/// record in their own transaction.
pub(super) async fn insert_message_audit(tx: &mut sqlx::PgConnection, entries: &[MessageAuditEntry]) -> Result<()> {
    for e in entries {
        sqlx::query(
            "INSERT INTO notification_audit (at, event, receiver, message_key, detail) \
             SELECT $1, $2, $3, $4, $5 WHERE (SELECT count(*) FROM notification_audit \
             WHERE device_id IS NULL AND message_key = $4) < $6",
        )
        .bind(e.at.0)
        .bind(e.event.as_str())
        .bind(bounded(&e.receiver))
        .bind(bounded(&e.message_key))
        .bind(bounded(&e.detail))
        .bind(i64::from(MAX_AUDIT_PER_MESSAGE))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
    }
    Ok(())
}
