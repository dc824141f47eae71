//! Node membership, session ownership and named leases on PostgreSQL ([`ClusterStore`]): the
//! tables `cluster_nodes`, `device_sessions` and `cluster_leases`, judged by the database's
//! clock; take-overs told with `pg_notify` in the claiming transaction.

use std::time::Duration;

use async_trait::async_trait;
use fleetpulse_proto::{DeviceId, EnterpriseId, UnixMillis};
use sqlx::Row;

use super::{PgEntityStore, backend, db_id, row_id};
use crate::*;

/// The database's clock in unix milliseconds, in SQL.
macro_rules! now_ms {
    () => {
        "(extract(epoch from clock_timestamp()) * 1000)::bigint"
    };
}

fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2)
}

fn ids(devices: &[DeviceId]) -> Vec<i64> {
    devices.iter().filter_map(|d| db_id(d.0)).collect()
}

/// Registers or renews a node; `$6` true at join (resets `started_at`). Returns whether the
/// node was down before.
const UPSERT_NODE: &str = concat!(
    "WITH before AS (SELECT state FROM cluster_nodes WHERE id = $1) ",
    "INSERT INTO cluster_nodes AS n (id, quic_addr, http_addr, sessions, started_at, heartbeat_at, lease_until, state) ",
    "VALUES ($1, $2, $3, $4, ",
    now_ms!(),
    ", ",
    now_ms!(),
    ", ",
    now_ms!(),
    " + $5, 'up') ",
    "ON CONFLICT (id) DO UPDATE SET quic_addr = excluded.quic_addr, http_addr = excluded.http_addr, ",
    "sessions = excluded.sessions, heartbeat_at = excluded.heartbeat_at, lease_until = excluded.lease_until, ",
    "state = 'up', started_at = CASE WHEN $6 THEN excluded.started_at ELSE n.started_at END ",
    "RETURNING coalesce((SELECT state FROM before), 'up') = 'down'"
);

/// The devices of a claim that exist, with the node that held each before (if another one).
const CLAIM_SESSIONS: &str = concat!(
    "WITH input AS (SELECT DISTINCT i.device_id FROM unnest($2::bigint[]) AS i (device_id) ",
    "JOIN devices d ON d.id = i.device_id), ",
    "prev AS (SELECT s.device_id, s.node_id FROM device_sessions s JOIN input USING (device_id) WHERE s.node_id <> $1), ",
    "up AS (INSERT INTO device_sessions (device_id, node_id, since) SELECT device_id, $1, $3 FROM input ",
    "ON CONFLICT (device_id) DO UPDATE SET node_id = excluded.node_id, since = excluded.since) ",
    "SELECT node_id, device_id FROM prev ORDER BY node_id, device_id"
);

#[async_trait]
impl ClusterStore for PgEntityStore {
    async fn join_node(&self, node: &NodeAnnounce, ttl: Duration) -> Result<Vec<LostSession>> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        upsert_node(&mut tx, node, ttl, true).await?;
        let rows = sqlx::query(
            "DELETE FROM device_sessions s USING devices d WHERE s.node_id = $1 AND d.id = s.device_id \
             RETURNING s.device_id, d.enterprise_id",
        )
        .bind(node.id.as_str())
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        rows.iter().map(lost_from_row).collect()
    }

    async fn renew_node(&self, node: &NodeAnnounce, ttl: Duration) -> Result<bool> {
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        let was_down = upsert_node(&mut conn, node, ttl, false).await?;
        Ok(!was_down)
    }

    async fn leave_node(&self, node: &NodeId) -> Result<()> {
        sqlx::query("UPDATE cluster_nodes SET lease_until = 0 WHERE id = $1")
            .bind(node.as_str())
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn list_nodes(&self) -> Result<Vec<NodeRow>> {
        let rows = sqlx::query(concat!(
            "SELECT n.id, n.quic_addr, n.http_addr, n.started_at, n.heartbeat_at, n.lease_until, n.sessions, n.state, ",
            "(SELECT count(*) FROM device_sessions s WHERE s.node_id = n.id) AS owned, ",
            "n.lease_until > ",
            now_ms!(),
            " AS alive, ARRAY(SELECT substr(l.name, 8)::int FROM cluster_leases l WHERE l.node_id = n.id ",
            "AND l.name LIKE 'engine:%' AND l.lease_until > ",
            now_ms!(),
            " ORDER BY 1) AS buckets FROM cluster_nodes n ORDER BY n.id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("id").map_err(backend)?;
                let state: String = r.try_get("state").map_err(backend)?;
                Ok(NodeRow {
                    id: NodeId::parse(&id)?,
                    quic_addr: r.try_get("quic_addr").map_err(backend)?,
                    http_addr: r.try_get("http_addr").map_err(backend)?,
                    started_at: UnixMillis(r.try_get("started_at").map_err(backend)?),
                    heartbeat_at: UnixMillis(r.try_get("heartbeat_at").map_err(backend)?),
                    lease_until: UnixMillis(r.try_get("lease_until").map_err(backend)?),
                    sessions: row_id(r.try_get("sessions").map_err(backend)?),
                    owned_sessions: row_id(r.try_get("owned").map_err(backend)?),
                    state: NodeState::parse(&state),
                    alive: r.try_get("alive").map_err(backend)?,
                    engine_buckets: r
                        .try_get::<Vec<i32>, _>("buckets")
                        .map_err(backend)?
                        .into_iter()
                        .filter_map(|b| u16::try_from(b).ok())
                        .collect(),
                })
            })
            .collect()
    }

    async fn claim_sessions(&self, node: &NodeId, devices: &[DeviceId], now: UnixMillis) -> Result<Vec<TakenOver>> {
        check_bound("claimed sessions", devices.len(), MAX_SESSION_BATCH)?;
        if devices.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let rows = sqlx::query(CLAIM_SESSIONS)
            .bind(node.as_str())
            .bind(ids(devices))
            .bind(now.0)
            .fetch_all(&mut *tx)
            .await
            .map_err(backend)?;
        let mut taken: Vec<TakenOver> = Vec::new();
        for r in &rows {
            let from: String = r.try_get("node_id").map_err(backend)?;
            let device = DeviceId(row_id(r.try_get("device_id").map_err(backend)?));
            match taken.last_mut() {
                Some(t) if t.from.as_str() == from => t.devices.push(device),
                _ => taken.push(TakenOver { from: NodeId::parse(&from)?, devices: vec![device] }),
            }
        }
        for t in &taken {
            for payload in takeover_payloads(&t.from, &t.devices) {
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(TAKEOVER_CHANNEL)
                    .bind(payload)
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
            }
        }
        tx.commit().await.map_err(backend)?;
        Ok(taken)
    }

    async fn sessions_held_elsewhere(&self, node: &NodeId, devices: &[DeviceId]) -> Result<Vec<DeviceId>> {
        check_bound("checked sessions", devices.len(), MAX_SESSION_BATCH)?;
        if devices.is_empty() {
            return Ok(Vec::new());
        }
        let held: Vec<i64> = sqlx::query_scalar(concat!(
            "SELECT s.device_id FROM device_sessions s JOIN cluster_nodes n ON n.id = s.node_id ",
            "WHERE s.device_id = ANY($2::bigint[]) AND s.node_id <> $1 AND n.state = 'up' AND n.lease_until > ",
            now_ms!(),
            " ORDER BY s.device_id"
        ))
        .bind(node.as_str())
        .bind(ids(devices))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        Ok(held.into_iter().map(|id| DeviceId(row_id(id))).collect())
    }

    async fn release_sessions(&self, node: &NodeId, devices: &[DeviceId]) -> Result<()> {
        check_bound("released sessions", devices.len(), MAX_SESSION_BATCH)?;
        if devices.is_empty() {
            return Ok(());
        }
        sqlx::query("DELETE FROM device_sessions WHERE node_id = $1 AND device_id = ANY($2::bigint[])")
            .bind(node.as_str())
            .bind(ids(devices))
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn reap_lapsed_node(&self) -> Result<Option<(NodeId, Vec<LostSession>)>> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let lapsed: Option<String> = sqlx::query_scalar(concat!(
            "SELECT id FROM cluster_nodes WHERE state = 'up' AND lease_until < ",
            now_ms!(),
            " ORDER BY lease_until LIMIT 1 FOR UPDATE SKIP LOCKED"
        ))
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?;
        let Some(id) = lapsed else { return Ok(None) };
        let rows = sqlx::query(
            "WITH gone AS (SELECT s.device_id FROM device_sessions s WHERE s.node_id = $1 LIMIT $2), \
             del AS (DELETE FROM device_sessions s USING gone WHERE s.device_id = gone.device_id RETURNING s.device_id) \
             SELECT del.device_id, d.enterprise_id FROM del JOIN devices d ON d.id = del.device_id",
        )
        .bind(&id)
        .bind(i64::try_from(MAX_REAPED_SESSIONS).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        // The node stays up (and is taken again) while sessions beyond the bound remain.
        if rows.len() < MAX_REAPED_SESSIONS {
            sqlx::query("UPDATE cluster_nodes SET state = 'down' WHERE id = $1")
                .bind(&id)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
        let lost = rows.iter().map(lost_from_row).collect::<Result<Vec<_>>>()?;
        Ok(Some((NodeId::parse(&id)?, lost)))
    }

    async fn hold_lease(&self, name: &str, node: &NodeId, ttl: Duration) -> Result<bool> {
        let held: Option<String> = sqlx::query_scalar(concat!(
            "INSERT INTO cluster_leases AS l (name, node_id, lease_until) VALUES ($1, $2, ",
            now_ms!(),
            " + $3) ON CONFLICT (name) DO UPDATE SET node_id = excluded.node_id, lease_until = excluded.lease_until ",
            "WHERE l.node_id = excluded.node_id OR l.lease_until < ",
            now_ms!(),
            " RETURNING node_id"
        ))
        .bind(name)
        .bind(node.as_str())
        .bind(ttl_ms(ttl))
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        Ok(held.is_some())
    }

    async fn wake_elsewhere(&self, devices: &[DeviceId]) -> Result<()> {
        for payload in wake_payloads(devices) {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(COMMAND_WAKE_CHANNEL)
                .bind(payload)
                .execute(&self.pool)
                .await
                .map_err(backend)?;
        }
        Ok(())
    }

    async fn list_leases(&self, prefix: &str) -> Result<Vec<LeaseRow>> {
        super::engine_queue::list_leases(self, prefix).await
    }

    async fn forward_engine_events(&self, batches: &[(u16, String)]) -> Result<usize> {
        super::engine_queue::forward(self, batches).await
    }

    async fn take_engine_events(&self, bucket: u16, limit: usize) -> Result<Vec<String>> {
        super::engine_queue::take(self, bucket, limit).await
    }

    async fn broadcast_engine_control(&self, control: &str) -> Result<()> {
        super::engine_queue::broadcast_control(self, control).await
    }

    async fn release_lease(&self, name: &str, node: &NodeId) -> Result<()> {
        sqlx::query("DELETE FROM cluster_leases WHERE name = $1 AND node_id = $2")
            .bind(name)
            .bind(node.as_str())
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }
}

async fn upsert_node(conn: &mut sqlx::PgConnection, node: &NodeAnnounce, ttl: Duration, join: bool) -> Result<bool> {
    sqlx::query_scalar(UPSERT_NODE)
        .bind(node.id.as_str())
        .bind(&node.quic_addr)
        .bind(&node.http_addr)
        .bind(i64::try_from(node.sessions).unwrap_or(i64::MAX))
        .bind(ttl_ms(ttl))
        .bind(join)
        .fetch_one(conn)
        .await
        .map_err(backend)
}

fn lost_from_row(r: &sqlx::postgres::PgRow) -> Result<LostSession> {
    Ok(LostSession {
        device_id: DeviceId(row_id(r.try_get("device_id").map_err(backend)?)),
        enterprise_id: EnterpriseId(row_id(r.try_get("enterprise_id").map_err(backend)?)),
    })
}

/// Hears on [`TAKEOVER_CHANNEL`] which of one node's device sessions other nodes claimed, and on
/// [`COMMAND_WAKE_CHANNEL`] which devices have new commands.
#[derive(Debug)]
pub struct TakeoverListener {
    listener: sqlx::postgres::PgListener,
    node: NodeId,
}

impl TakeoverListener {
    /// Connects to `url` and listens for `node`'s take-overs.
    pub async fn connect(url: &str, node: NodeId) -> Result<TakeoverListener> {
        let mut listener = sqlx::postgres::PgListener::connect(url).await.map_err(backend)?;
        listener.listen_all([TAKEOVER_CHANNEL, COMMAND_WAKE_CHANNEL]).await.map_err(backend)?;
        Ok(TakeoverListener { listener, node })
    }

    /// The next devices taken over from this node. A lost connection is re-established by the
    /// listener; notifications sent meanwhile are missed (those devices then go offline here by
    /// their heartbeats, as a device that left would).
    pub async fn recv(&mut self) -> Result<ClusterNote> {
        loop {
            let note = self.listener.recv().await.map_err(backend)?;
            if note.channel() == COMMAND_WAKE_CHANNEL {
                let ids: Option<Vec<DeviceId>> =
                    note.payload().split(',').map(|s| s.parse().ok().map(DeviceId)).collect();
                match ids {
                    Some(ids) => return Ok(ClusterNote::Wake(ids)),
                    None => {
                        tracing::warn!(message = "Ignored a malformed command wake-up.");
                        continue;
                    }
                }
            }
            match parse_takeover(note.payload()) {
                Some(t) if t.from == self.node => return Ok(ClusterNote::TakenOver(t.devices)),
                Some(_) => {}
                None => tracing::warn!(message = "Ignored a malformed take-over notification."),
            }
        }
    }
}
