//! The notification outbox on SQLite ([`OutboxStore`]): one row per idempotency key, item
//! keys, due messages along the `outbox_due` index, attempts and redaction.

use async_trait::async_trait;
use fleetpulse_proto::{EnterpriseId, UnixMillis};
use rusqlite::{OptionalExtension, Row, params};

use super::EmbeddedStore;
use crate::*;

/// Item keys per lookup of [`EntityStore::outbox_known_items`] (far below SQLite's limit of
/// 32766 variables per statement).
const ITEM_KEYS_PER_QUERY: usize = 500;

/// Records one attempt's outcome on a pending outbox message (id, state, next attempt, error,
/// time); a message that is no longer pending does not change.
const RECORD_OUTBOX_ATTEMPT: &str = "UPDATE outbox SET state = ?2, attempts = attempts + 1, next_attempt_at = ?3, \
     last_error = ?4, sent_at = CASE WHEN ?2 = 'sent' THEN ?5 ELSE sent_at END WHERE id = ?1 AND state = 'pending'";

/// Receiver slots of the [`EntityStore::due_outbox_except`] statement for `count` receivers:
/// none for none, else the next power of two (at least 8, at most [`MAX_OUTBOX_EXCEPT`]), so
/// that a handful of cached statements serve every list.
pub(super) fn except_slots(count: usize) -> usize {
    if count == 0 { 0 } else { count.next_power_of_two().clamp(8, MAX_OUTBOX_EXCEPT) }
}

/// The query of [`EntityStore::due_outbox_except`] with `slots` receivers left out: `?1` is the
/// time, `?2` the limit, `?3`… the receivers. Walks `outbox_due` (state, next_attempt_at, and
/// the rowid `id` last) in order, so neither the order nor the limit sorts the due messages.
pub(super) fn due_outbox_sql(slots: usize) -> String {
    let except = if slots == 0 {
        String::new()
    } else {
        let placeholders = (3..3 + slots).map(|i| format!("?{i}")).collect::<Vec<_>>().join(",");
        format!(" AND receiver NOT IN ({placeholders})")
    };
    format!(
        "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE state = 'pending' AND next_attempt_at <= ?1{except} \
         ORDER BY next_attempt_at, id LIMIT ?2"
    )
}

const OUTBOX_COLUMNS: &str =
    "id, key, enterprise_id, receiver, payload, state, attempts, next_attempt_at, last_error, created_at, sent_at";

fn outbox_from_row(r: &Row<'_>) -> rusqlite::Result<OutboxMessage> {
    let state: String = r.get(5)?;
    Ok(OutboxMessage {
        id: r.get(0)?,
        key: r.get(1)?,
        enterprise_id: EnterpriseId(r.get(2)?),
        receiver: r.get(3)?,
        payload: r.get(4)?,
        state: OutboxState::parse(&state).unwrap_or(OutboxState::Failed),
        attempts: r.get(6)?,
        next_attempt_at: UnixMillis(r.get(7)?),
        last_error: r.get(8)?,
        created_at: UnixMillis(r.get(9)?),
        sent_at: r.get::<_, Option<i64>>(10)?.map(UnixMillis),
    })
}

#[async_trait]
impl OutboxStore for EmbeddedStore {
    async fn enqueue_outbox_batch_audited(
        &self,
        messages: Vec<NewOutboxMessage>,
        audit: Vec<Vec<AlarmAuditEntry>>,
        now: UnixMillis,
    ) -> Result<Vec<Option<u64>>> {
        check_bound("outbox messages", messages.len(), MAX_OUTBOX_BATCH)?;
        let entries: usize = audit.iter().map(Vec::len).sum();
        check_bound("audit entries of an outbox batch", entries, MAX_AUDIT_BATCH)?;
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let rows = messages.iter().map(|m| 1 + m.item_keys.len()).sum::<usize>() + entries;
        // One write job: one savepoint of one commit, so the batch is applied whole or not at all.
        self.write(rows, move |c| {
            let mut message = c.prepare_cached(
                "INSERT INTO outbox (key, enterprise_id, receiver, payload, state, next_attempt_at, created_at) \
                 VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?6) ON CONFLICT (key) DO NOTHING",
            )?;
            let mut item = c.prepare_cached(
                "INSERT INTO outbox_items (item_key, message_id) VALUES (?1, ?2) ON CONFLICT (item_key) DO NOTHING",
            )?;
            let mut queued = Vec::with_capacity(messages.len());
            for m in &messages {
                let added =
                    message.execute(params![m.key, m.enterprise_id.0, m.receiver, m.payload, m.not_before.0, now.0])?
                        > 0;
                let mut id = None;
                if added {
                    let rowid = c.last_insert_rowid();
                    for key in &m.item_keys {
                        item.execute(params![key, rowid])?;
                    }
                    id = Some(u64::try_from(rowid).map_err(|_| StoreError::Backend("negative outbox id".into()))?);
                }
                queued.push(id);
            }
            for (entries, id) in audit.iter().zip(&queued) {
                if id.is_some() {
                    super::audit::insert_alarm_audit(c, entries)?;
                }
            }
            Ok(queued)
        })
        .await
    }

    async fn outbox_known_items(&self, keys: &[String]) -> Result<Vec<String>> {
        check_bound("outbox item keys", keys.len(), MAX_OUTBOX_ITEM_QUERY)?;
        let mut keys = keys.to_vec();
        keys.sort_unstable();
        keys.dedup();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.read(move |c| {
            let placeholders = vec!["?"; ITEM_KEYS_PER_QUERY].join(",");
            let mut st =
                c.prepare_cached(&format!("SELECT item_key FROM outbox_items WHERE item_key IN ({placeholders})"))?;
            let mut known = Vec::new();
            for chunk in keys.chunks(ITEM_KEYS_PER_QUERY) {
                let Some(last) = chunk.last() else { continue };
                // A short chunk repeats its last key, so that every chunk uses the one statement.
                let padded = chunk.iter().chain(std::iter::repeat(last)).take(ITEM_KEYS_PER_QUERY);
                let rows = st.query_map(rusqlite::params_from_iter(padded), |r| r.get::<_, String>(0))?;
                for key in rows {
                    known.push(key?);
                }
            }
            Ok(known)
        })
        .await
    }

    async fn due_outbox_except(&self, now: UnixMillis, limit: u32, except: &[String]) -> Result<Vec<OutboxMessage>> {
        check_bound("excepted outbox receivers", except.len(), MAX_OUTBOX_EXCEPT)?;
        let slots = except_slots(except.len());
        let except = except.to_vec();
        self.read(move |c| {
            let mut st = c.prepare_cached(&due_outbox_sql(slots))?;
            let mut values: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(2 + slots);
            values.push(&now.0);
            values.push(&limit);
            if let Some(last) = except.last() {
                // Short lists repeat their last receiver to fill the statement's slots.
                values.extend(
                    except.iter().chain(std::iter::repeat(last)).take(slots).map(|r| r as &dyn rusqlite::ToSql),
                );
            }
            let rows = st.query_map(&*values, outbox_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
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
        // One write job: one savepoint of one commit, outcomes and entries together or neither.
        self.write(attempts.len() + audit.len(), move |c| {
            let mut st = c.prepare_cached(RECORD_OUTBOX_ATTEMPT)?;
            for a in &attempts {
                st.execute(params![a.id, a.outcome.as_str(), a.next_attempt_at.0, a.error, a.at.0])?;
            }
            super::audit::insert_message_audit(c, &audit)
        })
        .await
    }

    async fn record_outbox_attempt(
        &self,
        id: u64,
        outcome: OutboxState,
        at: UnixMillis,
        next_attempt_at: UnixMillis,
        error: Option<String>,
    ) -> Result<Option<OutboxMessage>> {
        self.write(1, move |c| {
            c.prepare_cached(RECORD_OUTBOX_ATTEMPT)?.execute(params![
                id,
                outcome.as_str(),
                next_attempt_at.0,
                error,
                at.0
            ])?;
            Ok(c.prepare_cached(&format!("SELECT {OUTBOX_COLUMNS} FROM outbox WHERE id = ?1"))?
                .query_row([id], outbox_from_row)
                .optional()?)
        })
        .await
    }

    async fn redact_outbox_payload(&self, id: u64, payload: String) -> Result<bool> {
        let Ok(id) = i64::try_from(id) else { return Ok(false) };
        self.write(1, move |c| {
            Ok(c.prepare_cached("UPDATE outbox SET payload = ?2 WHERE id = ?1 AND state <> 'pending'")?
                .execute(params![id, payload])?
                > 0)
        })
        .await
    }
}
