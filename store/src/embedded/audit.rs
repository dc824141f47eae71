//! The notification audit on SQLite ([`NotificationAuditStore`]): one table for alarm and
//! message entries (alarm entries name their activation, message entries only their message's
//! key), bounded per activation and per message at insert; and the retention pass over the
//! audit and the settled outbox.

use async_trait::async_trait;
use fleetpulse_proto::{AlarmTypeCode, DeviceId, UnixMillis};
use rusqlite::params;

use super::EmbeddedStore;
use crate::audit::bounded;
use crate::*;

#[async_trait]
impl NotificationAuditStore for EmbeddedStore {
    async fn record_alarm_audit(&self, entries: Vec<AlarmAuditEntry>) -> Result<()> {
        if entries.len() > MAX_AUDIT_BATCH {
            return Err(StoreError::InvalidInput(format!("at most {MAX_AUDIT_BATCH} audit entries at once")));
        }
        let rows = entries.len();
        self.write(rows, move |c| insert_alarm_audit(c, &entries)).await
    }

    async fn record_message_audit(&self, entries: Vec<MessageAuditEntry>) -> Result<()> {
        if entries.len() > MAX_AUDIT_BATCH {
            return Err(StoreError::InvalidInput(format!("at most {MAX_AUDIT_BATCH} audit entries at once")));
        }
        let rows = entries.len();
        self.write(rows, move |c| insert_message_audit(c, &entries)).await
    }

    async fn notification_audit(
        &self,
        device: DeviceId,
        code: AlarmTypeCode,
        first_at: UnixMillis,
        limit: u32,
    ) -> Result<Vec<AuditEntry>> {
        let limit = limit.clamp(1, MAX_AUDIT_READ);
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT at, event, receiver, message_key, detail, id FROM notification_audit \
                 WHERE device_id = ?1 AND code = ?2 AND first_at = ?3 \
                 UNION ALL \
                 SELECT at, event, receiver, message_key, detail, id FROM notification_audit \
                 WHERE device_id IS NULL AND message_key IN (SELECT message_key FROM notification_audit \
                 WHERE device_id = ?1 AND code = ?2 AND first_at = ?3 AND message_key IS NOT NULL) \
                 ORDER BY 1, 6 LIMIT ?4",
            )?;
            let rows = st.query_map(params![device.0, code.0, first_at.0, limit], |r| {
                let event: String = r.get(1)?;
                Ok(AuditEntry {
                    at: UnixMillis(r.get(0)?),
                    event: AuditEvent::parse(&event).ok_or_else(|| {
                        rusqlite::Error::FromSqlConversionFailure(
                            1,
                            rusqlite::types::Type::Text,
                            format!("audit event {event:?}").into(),
                        )
                    })?,
                    receiver: r.get(2)?,
                    message_key: r.get(3)?,
                    detail: r.get(4)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn prune_notifications(&self, before: UnixMillis, limit: u32) -> Result<PruneCounts> {
        let limit = limit.max(1);
        self.write(limit as usize, move |c| {
            let audit = c
                .prepare_cached(
                    "DELETE FROM notification_audit WHERE id IN \
                     (SELECT id FROM notification_audit WHERE at < ?1 ORDER BY at LIMIT ?2)",
                )?
                .execute(params![before.0, limit])? as u64;
            let ids: Vec<i64> = c
                .prepare_cached(
                    "SELECT id FROM outbox WHERE state IN ('sent', 'failed') AND created_at < ?1 \
                     ORDER BY created_at LIMIT ?2",
                )?
                .query_map(params![before.0, limit], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let mut items = 0;
            let mut outbox = 0;
            let mut delete_items = c.prepare_cached("DELETE FROM outbox_items WHERE message_id = ?1")?;
            let mut delete_message = c.prepare_cached("DELETE FROM outbox WHERE id = ?1")?;
            for id in ids {
                items += delete_items.execute([id])? as u64;
                outbox += delete_message.execute([id])? as u64;
            }
            Ok(PruneCounts { audit, outbox, items })
        })
        .await
    }
}

/// Appends alarm entries on the writer's connection (beyond an activation's bound they are left
/// out): [`NotificationAuditStore::record_alarm_audit`], and the entries an outbox batch
/// records in its own transaction.
pub(super) fn insert_alarm_audit(c: &rusqlite::Connection, entries: &[AlarmAuditEntry]) -> Result<()> {
    let mut insert = c.prepare_cached(
        "INSERT INTO notification_audit \
         (enterprise_id, device_id, code, first_at, at, event, receiver, message_key, detail) \
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9 WHERE (SELECT count(*) FROM notification_audit \
         WHERE device_id = ?2 AND code = ?3 AND first_at = ?4) < ?10",
    )?;
    for e in entries {
        insert.execute(params![
            e.enterprise_id.0,
            e.device_id.0,
            e.code.0,
            e.first_at.0,
            e.at.0,
            e.event.as_str(),
            e.receiver.as_deref().map(bounded),
            e.message_key.as_deref().map(bounded),
            bounded(&e.detail),
            MAX_AUDIT_PER_ACTIVATION,
        ])?;
    }
    Ok(())
}

/// Appends message entries on the writer's connection (beyond a message's bound they are left
/// out): [`NotificationAuditStore::record_message_audit`], and the entries the outbox's outcomes
/// record in their own transaction.
pub(super) fn insert_message_audit(c: &rusqlite::Connection, entries: &[MessageAuditEntry]) -> Result<()> {
    let mut insert = c.prepare_cached(
        "INSERT INTO notification_audit (at, event, receiver, message_key, detail) \
         SELECT ?1, ?2, ?3, ?4, ?5 WHERE (SELECT count(*) FROM notification_audit \
         WHERE device_id IS NULL AND message_key = ?4) < ?6",
    )?;
    for e in entries {
        insert.execute(params![
            e.at.0,
            e.event.as_str(),
            bounded(&e.receiver),
            bounded(&e.message_key),
            bounded(&e.detail),
            MAX_AUDIT_PER_MESSAGE,
        ])?;
    }
    Ok(())
}
