//! The alarm engine's buckets on PostgreSQL (issue 16 item 3): the named leases read back, the
//! `engine_events` queue of event batches for the node holding a bucket (bounded, woken by
//! `pg_notify`), the controls broadcast to every node, and the listener that hears both.

use sqlx::Row;

use super::{PgEntityStore, backend};
use crate::*;

/// Takes `bucket`'s oldest queued batches (deleted in the same statement; a batch another
/// holder's take has locked is skipped).
const TAKE: &str = "DELETE FROM engine_events WHERE id IN (SELECT id FROM engine_events WHERE bucket = $1 \
                    ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING id, payload";

/// Queues the batches that fit below the bound `$3`, in the order given.
const FORWARD: &str = "WITH room AS (SELECT greatest(0, $3 - (SELECT count(*) FROM engine_events)) AS n) \
                       INSERT INTO engine_events (bucket, payload) \
                       SELECT i.bucket, i.payload FROM unnest($1::int[], $2::text[]) WITH ORDINALITY AS i (bucket, payload, o) \
                       WHERE i.o <= (SELECT n FROM room) ORDER BY i.o";

pub(super) async fn list_leases(store: &PgEntityStore, prefix: &str) -> Result<Vec<LeaseRow>> {
    let pattern = format!("{}%", prefix.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
    let rows = sqlx::query(
        "SELECT name, node_id, lease_until > (extract(epoch from clock_timestamp()) * 1000)::bigint AS current \
         FROM cluster_leases WHERE name LIKE $1 ORDER BY name",
    )
    .bind(pattern)
    .fetch_all(&store.pool)
    .await
    .map_err(backend)?;
    rows.iter()
        .map(|r| {
            let node: String = r.try_get("node_id").map_err(backend)?;
            Ok(LeaseRow {
                name: r.try_get("name").map_err(backend)?,
                node_id: NodeId::parse(&node)?,
                current: r.try_get("current").map_err(backend)?,
            })
        })
        .collect()
}

pub(super) async fn forward(store: &PgEntityStore, batches: &[(u16, String)]) -> Result<usize> {
    check_bound("forwarded engine batches", batches.len(), MAX_ENGINE_BATCHES)?;
    if batches.is_empty() {
        return Ok(0);
    }
    let buckets: Vec<i32> = batches.iter().map(|(b, _)| i32::from(*b)).collect();
    let payloads: Vec<&str> = batches.iter().map(|(_, p)| p.as_str()).collect();
    let mut tx = store.pool.begin().await.map_err(backend)?;
    let queued = sqlx::query(FORWARD)
        .bind(&buckets)
        .bind(&payloads)
        .bind(i64::try_from(MAX_ENGINE_QUEUE).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await
        .map_err(backend)?
        .rows_affected();
    let queued = usize::try_from(queued).unwrap_or(usize::MAX);
    let mut told: Vec<i32> = buckets.iter().take(queued).copied().collect();
    told.sort_unstable();
    told.dedup();
    if !told.is_empty() {
        sqlx::query("SELECT pg_notify($1, b::text) FROM unnest($2::int[]) AS b")
            .bind(ENGINE_EVENTS_CHANNEL)
            .bind(&told)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
    }
    tx.commit().await.map_err(backend)?;
    Ok(queued)
}

pub(super) async fn take(store: &PgEntityStore, bucket: u16, limit: usize) -> Result<Vec<String>> {
    let limit = limit.min(MAX_ENGINE_BATCHES);
    let rows = sqlx::query(TAKE)
        .bind(i32::from(bucket))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&store.pool)
        .await
        .map_err(backend)?;
    let mut batches = rows
        .iter()
        .map(|r| Ok((r.try_get::<i64, _>("id").map_err(backend)?, r.try_get::<String, _>("payload").map_err(backend)?)))
        .collect::<Result<Vec<_>>>()?;
    batches.sort_by_key(|(id, _)| *id);
    Ok(batches.into_iter().map(|(_, p)| p).collect())
}

pub(super) async fn broadcast_control(store: &PgEntityStore, control: &str) -> Result<()> {
    if control.len() > NOTIFY_PAYLOAD_MAX {
        return Err(StoreError::InvalidInput(format!(
            "an engine control is {} bytes, above {NOTIFY_PAYLOAD_MAX}",
            control.len()
        )));
    }
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(ENGINE_CONTROL_CHANNEL)
        .bind(control)
        .execute(&store.pool)
        .await
        .map_err(backend)?;
    Ok(())
}

/// Hears on [`ENGINE_EVENTS_CHANNEL`] which buckets have queued events and on
/// [`ENGINE_CONTROL_CHANNEL`] the API's controls for the engines.
#[derive(Debug)]
pub struct EngineListener {
    listener: sqlx::postgres::PgListener,
}

impl EngineListener {
    /// Connects to `url` and listens on both channels.
    pub async fn connect(url: &str) -> Result<EngineListener> {
        let mut listener = sqlx::postgres::PgListener::connect(url).await.map_err(backend)?;
        listener.listen_all([ENGINE_EVENTS_CHANNEL, ENGINE_CONTROL_CHANNEL]).await.map_err(backend)?;
        Ok(EngineListener { listener })
    }

    /// The next note. A lost connection is re-established by the listener; notifications sent
    /// meanwhile are missed (queued events are then found by the holders' polling).
    pub async fn recv(&mut self) -> Result<EngineNote> {
        loop {
            let note = self.listener.recv().await.map_err(backend)?;
            if note.channel() == ENGINE_CONTROL_CHANNEL {
                return Ok(EngineNote::Control(note.payload().to_owned()));
            }
            match note.payload().parse::<u16>() {
                Ok(bucket) => return Ok(EngineNote::Events(bucket)),
                Err(_) => tracing::warn!(message = "Ignored a malformed engine events notification."),
            }
        }
    }
}
