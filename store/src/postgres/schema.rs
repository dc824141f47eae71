//! Versioned schema migrations of the PostgreSQL entity store, applied on connect.
//!
//! The migrations are SQL strings compiled into the binary and run by sqlx's migrator, which
//! records them in `_sqlx_migrations` (with a checksum) under an advisory lock, so that several
//! processes connecting at once migrate once. Migrations are append-only: never edit one that
//! has shipped (its checksum would no longer match); add the next.

use std::borrow::Cow;

use sqlx::SqlSafeStr;
use sqlx::migrate::{MigrateError, Migration, MigrationType, Migrator};
use sqlx::postgres::PgConnection;

use crate::{Result, StoreError};

mod fleet;
mod portal;

/// Every migration, in order: (description, SQL); the `i`-th (from 0) is version `i + 1`. The
/// portal core's come first, then the fleet's; a new one goes at the end of `fleet.rs`.
fn all_migrations() -> impl Iterator<Item = &'static (&'static str, &'static str)> {
    portal::MIGRATIONS.iter().chain(fleet::MIGRATIONS)
}

/// The schema version this build writes.
pub const CURRENT_VERSION: u32 = (portal::MIGRATIONS.len() + fleet::MIGRATIONS.len()) as u32;

/// The migrator over every migration.
fn migrator() -> Migrator {
    let migrations = all_migrations()
        .zip(1..)
        .map(|(&(description, sql), version)| {
            Migration::new(version, Cow::Borrowed(description), MigrationType::Simple, sql.into_sql_str(), false)
        })
        .collect();
    Migrator::with_migrations(migrations)
}

/// Applies the migrations the database lacks, each in its own transaction.
///
/// Fails with [`StoreError::Migration`] if one fails, if an applied one was changed, or if the
/// database has migrations this build does not know (it is newer than this build).
pub async fn migrate(conn: &mut PgConnection) -> Result<u32> {
    migrator().run(conn).await.map_err(|e| {
        let version = match &e {
            MigrateError::ExecuteMigration(_, v)
            | MigrateError::VersionMissing(v)
            | MigrateError::VersionMismatch(v)
            | MigrateError::VersionNotPresent(v)
            | MigrateError::VersionTooOld(v, _)
            | MigrateError::VersionTooNew(v, _)
            | MigrateError::Dirty(v) => u32::try_from(*v).unwrap_or(u32::MAX),
            _ => 0,
        };
        StoreError::Migration { version, reason: e.to_string() }
    })?;
    tracing::debug!(message = "PostgreSQL entity schema is current.", version = CURRENT_VERSION);
    Ok(CURRENT_VERSION)
}
