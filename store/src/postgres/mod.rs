//! PostgreSQL backend of the portal entities ([`EntityStore`]) for the scale-out store.
//!
//! Behaves like the embedded backend's entity half, errors included; the events live elsewhere
//! (ClickHouse). Unlike the embedded store, whose single writer serialises every write, many
//! connections write here at once, so device registration is written to be race-free: the
//! insert yields to a concurrent one (`ON CONFLICT DO NOTHING`) and the device is read again.
//!
//! No SQL type crosses the module boundary: ids are `BIGINT` in the database and typed `u64`
//! ids outside; an id above `i64::MAX` cannot exist, so looking one up finds nothing. SQL is
//! kept in `static` strings (sqlx takes only `'static` SQL without an assertion).
//!
//! This file holds the pool and the helpers the domain files share; each domain trait is
//! implemented in a file of its own (`accounts.rs`, `account_security.rs`, `tenants.rs`,
//! `devices.rs`, `strategies.rs`, `outbox.rs`, `oplog.rs`, `commands.rs`, `files.rs`, `tasks.rs`).

mod account_security;
mod accounts;
mod audit;
mod commands;
mod dead_letters;
mod devices;
mod engine_queue;
mod engine_state;
mod files;
mod firmware;
mod groups;
mod incidents;
mod inventory;
mod licences;
mod nodes;
mod oplog;
mod orders;
mod outbox;
mod profiles;
mod relays;
mod rps;
mod schema;
mod sites;
mod strategies;
mod strategy_inheritance;
mod tasks;
mod tenant_admin;
mod tenants;
mod windows;

use std::sync::Arc;

use fleetpulse_proto::EnterpriseId;
use fleetpulse_proto::ids::ChannelId;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};

pub use engine_queue::EngineListener;
pub use nodes::TakeoverListener;
pub use schema::CURRENT_VERSION as SCHEMA_VERSION;

use crate::*;
use devices::refresh_device_types;

/// How long connecting, and each operation waiting for a free connection, may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The PostgreSQL entity store: a connection pool over a migrated database.
#[derive(Debug, Clone)]
pub struct PgEntityStore {
    pool: PgPool,
    /// The compiled site matcher of each enterprise (`sites.rs`).
    site_matchers: Arc<crate::sites::MatcherCache>,
}

impl PgEntityStore {
    /// Connects to `url` (`postgres://user@host:port/database`) with a pool of at most
    /// `max_connections` (at least 1) connections, and applies the schema migrations the
    /// database lacks.
    ///
    /// [`StoreError::Backend`] if the database cannot be reached, [`StoreError::Migration`] if
    /// its schema cannot be brought up to date (including when it is newer than this build).
    pub async fn connect(url: &str, max_connections: u32) -> Result<PgEntityStore> {
        let options: PgConnectOptions = url.parse().map_err(backend)?;
        // Migrate over one plain connection first: an unreachable server then fails at once
        // with its cause, where the pool would retry until its timeout and report only that.
        let mut conn = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options))
            .await
            .map_err(|_| StoreError::Backend(format!("no connection to PostgreSQL within {CONNECT_TIMEOUT:?}")))?
            .map_err(backend)?;
        let version = schema::migrate(&mut conn).await?;
        refresh_device_types(&mut conn).await?;
        if let Err(error) = conn.close().await {
            tracing::debug!(message = "Closing the migration connection failed.", %error);
        }
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(backend)?;
        tracing::info!(message = "Connected to the PostgreSQL entity store.", schema_version = version);
        Ok(PgEntityStore { pool, site_matchers: Arc::default() })
    }

    /// Closes the pool: waits for checked-out connections to return, then every later
    /// operation fails with [`StoreError::Closed`].
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn channel_row_exists(&self, id: ChannelId) -> Result<bool> {
        let Some(id) = db_id(id.0) else { return Ok(false) };
        let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM channels WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        Ok(found.is_some())
    }
}

fn backend(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::PoolClosed => StoreError::Closed,
        e => StoreError::Backend(e.to_string()),
    }
}

/// Maps a unique violation (SQLSTATE 23505) to [`StoreError::AlreadyExists`]`(what)`.
fn unique_as(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::AlreadyExists(what),
        _ => backend(e),
    }
}

/// The database form of an id, or `None` for an id no row can have.
fn db_id(id: u64) -> Option<i64> {
    i64::try_from(id).ok()
}

/// One keyset page of `table`'s rows whose `owner` column is `owner_id`, newest first (by id):
/// ids below `page.after` when it is above 0, else from the newest; at most `page.limit`, never
/// more than `max`. The page every per-owner listing (a device's commands and files, a task's
/// runs) reads.
#[allow(clippy::too_many_arguments)]
async fn newest_first<T>(
    pool: &PgPool,
    columns: &str,
    table: &str,
    owner: &str,
    owner_id: u64,
    page: Page,
    max: u32,
    from_row: fn(&sqlx::postgres::PgRow) -> Result<T>,
) -> Result<Vec<T>> {
    let limit = page.limit.min(max);
    let Some(owner_id) = db_id(owner_id) else { return Ok(Vec::new()) };
    if limit == 0 {
        return Ok(Vec::new());
    }
    let before = if page.after == 0 { i64::MAX } else { db_id(page.after).unwrap_or(i64::MAX) };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {columns} FROM {table} WHERE {owner} = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
    )))
    .bind(owner_id)
    .bind(before)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(backend)?
    .iter()
    .map(from_row)
    .collect()
}

/// The channel and enterprise lists of a "channel in … OR enterprise in …" filter as database
/// arrays, each checked against `max`; `None` when neither is given (no filter). An id no row can
/// have is left out.
fn tenant_arrays(
    channels: Option<Vec<ChannelId>>,
    enterprises: Option<Vec<EnterpriseId>>,
    max: usize,
) -> Result<Option<(Vec<i64>, Vec<i64>)>> {
    if channels.is_none() && enterprises.is_none() {
        return Ok(None);
    }
    let (channels, enterprises) = (channels.unwrap_or_default(), enterprises.unwrap_or_default());
    check_bound("channel ids", channels.len(), max)?;
    check_bound("enterprise ids", enterprises.len(), max)?;
    Ok(Some((
        channels.iter().filter_map(|c| db_id(c.0)).collect(),
        enterprises.iter().filter_map(|e| db_id(e.0)).collect(),
    )))
}

/// A row id or a count read from the database (never negative).
fn row_id(id: i64) -> u64 {
    u64::try_from(id).unwrap_or_default()
}

#[cfg(test)]
mod tests;
