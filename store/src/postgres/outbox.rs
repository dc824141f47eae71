//! The notification outbox on PostgreSQL ([`OutboxStore`]): one row per idempotency key, item
//! keys, due messages, attempts and redaction.

use async_trait::async_trait;
use fleetpulse_proto::{EnterpriseId, UnixMillis};
use sqlx::Row;
use sqlx::postgres::PgRow;
use std::collections::HashMap;

use super::{PgEntityStore, backend, db_id, row_id};
use crate::*;

/// Records one attempt's outcome on a pending outbox message (id, state, next attempt, error,
/// time); a message that is no longer pending does not change.
const RECORD_OUTBOX_ATTEMPT: &str = "UPDATE outbox SET state = $2, attempts = attempts + 1, next_attempt_at = $3, \
     last_error = $4, sent_at = CASE WHEN $2 = 'sent' THEN $5 ELSE sent_at END WHERE id = $1 AND state = 'pending'";

fn outbox_from_row(r: &PgRow) -> Result<OutboxMessage> {
    let state: String = r.try_get("state").map_err(backend)?;
    let attempts: i32 = r.try_get("attempts").map_err(backend)?;
    Ok(OutboxMessage {
        id: row_id(r.try_get("id").map_err(backend)?),
        key: r.try_get("key").map_err(backend)?,
        enterprise_id: EnterpriseId(row_id(r.try_get("enterprise_id").map_err(backend)?)),
        receiver: r.try_get("receiver").map_err(backend)?,
        payload: r.try_get("payload").map_err(backend)?,
        state: OutboxState::parse(&state).unwrap_or(OutboxState::Failed),
        attempts: u32::try_from(attempts).unwrap_or(0),
        next_attempt_at: UnixMillis(r.try_get("next_attempt_at").map_err(backend)?),
        last_error: r.try_get("last_error").map_err(backend)?,
        created_at: UnixMillis(r.try_get("created_at").map_err(backend)?),
        sent_at: r.try_get::<Option<i64>, _>("sent_at").map_err(backend)?.map(UnixMillis),
    })
}

/// Queues the messages of a batch (distinct keys), in array order, unless their key was queued
/// before; returns the id and key of each message it queued.
const INSERT_OUTBOX_BATCH: &str = "INSERT INTO outbox \
     (key, enterprise_id, receiver, payload, state, next_attempt_at, created_at) \
     SELECT m.key, m.enterprise_id, m.receiver, m.payload, 'pending', m.not_before, $6 \
     FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bigint[]) WITH ORDINALITY \
     AS m (key, enterprise_id, receiver, payload, not_before, n) ORDER BY m.n \
     ON CONFLICT (key) DO NOTHING RETURNING id, key";
#[async_trait]
impl OutboxStore for PgEntityStore {
    async fn enqueue_outbox_batch_audited(
        &self,
        messages: Vec<NewOutboxMessage>,
        audit: Vec<Vec<AlarmAuditEntry>>,
        now: UnixMillis,
    ) -> Result<Vec<Option<u64>>> {
        check_bound("outbox messages", messages.len(), MAX_OUTBOX_BATCH)?;
        check_bound("audit entries of an outbox batch", audit.iter().map(Vec::len).sum(), MAX_AUDIT_BATCH)?;
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        // The first message of each key; a later one with the same key is not queued.
        let mut first: HashMap<&str, usize> = HashMap::with_capacity(messages.len());
        for (i, m) in messages.iter().enumerate() {
            first.entry(m.key.as_str()).or_insert(i);
        }
        // In batch order, so that ids (and the order of equally due messages) follow the batch,
        // as in the embedded store. Two concurrent batches sharing keys in opposite orders may
        // deadlock: PostgreSQL then aborts one, which fails (nothing queued) and can be retried.
        let mut candidates: Vec<usize> = first.values().copied().collect();
        candidates.sort_unstable();
        let candidates: Vec<&NewOutboxMessage> = candidates.into_iter().map(|i| &messages[i]).collect();
        let mut keys = Vec::with_capacity(candidates.len());
        let mut enterprises = Vec::with_capacity(candidates.len());
        let mut receivers = Vec::with_capacity(candidates.len());
        let mut payloads = Vec::with_capacity(candidates.len());
        let mut not_before = Vec::with_capacity(candidates.len());
        for m in &candidates {
            keys.push(m.key.as_str());
            enterprises.push(
                db_id(m.enterprise_id.0).ok_or_else(|| StoreError::Backend("enterprise id out of range".into()))?,
            );
            receivers.push(m.receiver.as_str());
            payloads.push(m.payload.as_str());
            not_before.push(m.not_before.0);
        }
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let inserted: Vec<(i64, String)> = sqlx::query_as(INSERT_OUTBOX_BATCH)
            .bind(&keys)
            .bind(&enterprises)
            .bind(&receivers)
            .bind(&payloads)
            .bind(&not_before)
            .bind(now.0)
            .fetch_all(&mut *tx)
            .await
            .map_err(backend)?;
        let ids: HashMap<&str, i64> = inserted.iter().map(|(id, key)| (key.as_str(), *id)).collect();
        let queued: Vec<Option<i64>> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| ids.get(m.key.as_str()).copied().filter(|_| first.get(m.key.as_str()) == Some(&i)))
            .collect();
        // Each item key once, claimed by the first queued message carrying it; in key order.
        let mut items: HashMap<&str, i64> = HashMap::new();
        for (m, id) in messages.iter().zip(&queued) {
            let Some(id) = *id else { continue };
            for key in &m.item_keys {
                items.entry(key.as_str()).or_insert(id);
            }
        }
        if !items.is_empty() {
            let mut items: Vec<(&str, i64)> = items.into_iter().collect();
            items.sort_unstable();
            let (item_keys, message_ids): (Vec<&str>, Vec<i64>) = items.into_iter().unzip();
            sqlx::query(
                "INSERT INTO outbox_items (item_key, message_id) \
                 SELECT * FROM unnest($1::text[], $2::bigint[]) ON CONFLICT (item_key) DO NOTHING",
            )
            .bind(&item_keys)
            .bind(&message_ids)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        for (entries, id) in audit.iter().zip(&queued) {
            if id.is_some() {
                super::audit::insert_alarm_audit(&mut tx, entries).await?;
            }
        }
        tx.commit().await.map_err(backend)?;
        Ok(queued.into_iter().map(|id| id.map(row_id)).collect())
    }

    async fn outbox_known_items(&self, keys: &[String]) -> Result<Vec<String>> {
        check_bound("outbox item keys", keys.len(), MAX_OUTBOX_ITEM_QUERY)?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        sqlx::query_scalar("SELECT item_key FROM outbox_items WHERE item_key = ANY($1)")
            .bind(keys)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)
    }

    async fn due_outbox_except(&self, now: UnixMillis, limit: u32, except: &[String]) -> Result<Vec<OutboxMessage>> {
        check_bound("excepted outbox receivers", except.len(), MAX_OUTBOX_EXCEPT)?;
        sqlx::query(
            "SELECT id, key, enterprise_id, receiver, payload, state, attempts, next_attempt_at, last_error, \
             created_at, sent_at FROM outbox WHERE state = 'pending' AND next_attempt_at <= $1 \
             AND NOT (receiver = ANY($3::text[])) ORDER BY next_attempt_at, id LIMIT $2",
        )
        .bind(now.0)
        .bind(i64::from(limit))
        .bind(except)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?
        .iter()
        .map(outbox_from_row)
        .collect()
    }

    async fn record_outbox_attempts_audited(
        &self,
        attempts: Vec<OutboxAttempt>,
        audit: Vec<MessageAuditEntry>,
    ) -> Result<()> {
        check_bound("outbox attempts", attempts.len(), MAX_OUTBOX_BATCH)?;
        check_bound("audit entries of outbox attempts", audit.len(), MAX_AUDIT_BATCH)?;
        if attempts.is_empty() && audit.is_empty() {
            return Ok(());
        }
        // One transaction: the outcomes and their entries together or neither.
        let mut tx = self.pool.begin().await.map_err(backend)?;
        for a in attempts {
            let Some(id) = db_id(a.id) else { continue };
            sqlx::query(RECORD_OUTBOX_ATTEMPT)
                .bind(id)
                .bind(a.outcome.as_str())
                .bind(a.next_attempt_at.0)
                .bind(a.error)
                .bind(a.at.0)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        super::audit::insert_message_audit(&mut tx, &audit).await?;
        tx.commit().await.map_err(backend)
    }

    async fn record_outbox_attempt(
        &self,
        id: u64,
        outcome: OutboxState,
        at: UnixMillis,
        next_attempt_at: UnixMillis,
        error: Option<String>,
    ) -> Result<Option<OutboxMessage>> {
        let Some(id) = db_id(id) else { return Ok(None) };
        sqlx::query(RECORD_OUTBOX_ATTEMPT)
            .bind(id)
            .bind(outcome.as_str())
            .bind(next_attempt_at.0)
            .bind(error)
            .bind(at.0)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        sqlx::query(
            "SELECT id, key, enterprise_id, receiver, payload, state, attempts, next_attempt_at, last_error, \
             created_at, sent_at FROM outbox WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .as_ref()
        .map(outbox_from_row)
        .transpose()
    }

    async fn redact_outbox_payload(&self, id: u64, payload: String) -> Result<bool> {
        let Some(id) = db_id(id) else { return Ok(false) };
        let done = sqlx::query("UPDATE outbox SET payload = $2 WHERE id = $1 AND state <> 'pending'")
            .bind(id)
            .bind(payload)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }
}
