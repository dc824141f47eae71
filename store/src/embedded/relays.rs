//! Relay grants on SQLite ([`RelayStore`]): one row each, the credential's SHA-256 unique.

use async_trait::async_trait;
use fleetpulse_proto::{AccountId, UnixMillis};
use rusqlite::{OptionalExtension, Row, params};

use super::{EmbeddedStore, is_unique_violation, row_exists};
use crate::relays::{checked_name, scope_from};
use crate::*;

const COLUMNS: &str = "id, name, scope_kind, scope_id, created_by, created_at, rotated_at, revoked_at, last_seen_at";

fn from_row(r: &Row<'_>) -> rusqlite::Result<Relay> {
    let kind: String = r.get(2)?;
    let scope = scope_from(&kind, r.get(3)?).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, format!("scope {kind:?}").into())
    })?;
    Ok(Relay {
        id: RelayId(r.get(0)?),
        name: r.get(1)?,
        scope,
        created_by: AccountId(r.get(4)?),
        created_at: UnixMillis(r.get(5)?),
        rotated_at: r.get::<_, Option<i64>>(6)?.map(UnixMillis),
        revoked_at: r.get::<_, Option<i64>>(7)?.map(UnixMillis),
        last_seen_at: r.get::<_, Option<i64>>(8)?.map(UnixMillis),
    })
}

fn by_id(c: &rusqlite::Connection, id: i64) -> Result<Option<Relay>> {
    Ok(c.prepare_cached(&format!("SELECT {COLUMNS} FROM relays WHERE id = ?1"))?
        .query_row([id], from_row)
        .optional()?)
}

#[async_trait]
impl RelayStore for EmbeddedStore {
    async fn create_relay(&self, new: NewRelay) -> Result<Relay> {
        let name = checked_name(&new.name)?;
        let (kind, scope_id) = new.scope.parts();
        self.write(1, move |c| {
            let table = if kind == "channel" { "channels" } else { "enterprises" };
            if !row_exists(c, table, scope_id)? {
                return Err(StoreError::InvalidInput(format!("no {kind} {scope_id}")));
            }
            let count: i64 = c.prepare_cached("SELECT COUNT(*) FROM relays")?.query_row([], |r| r.get(0))?;
            if count as usize >= MAX_RELAYS {
                return Err(StoreError::LimitExceeded(format!("at most {MAX_RELAYS} relays")));
            }
            let inserted = c
                .prepare_cached(
                    "INSERT INTO relays (name, scope_kind, scope_id, credential_hash, created_by, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![name, kind, scope_id, &new.credential_hash.0[..], new.created_by.0, new.at.0]);
            match inserted {
                Ok(_) => {}
                Err(e) if is_unique_violation(&e) => return Err(StoreError::AlreadyExists("relay credential")),
                Err(e) => return Err(e.into()),
            }
            by_id(c, c.last_insert_rowid())?.ok_or_else(|| StoreError::Backend("the new relay vanished".into()))
        })
        .await
    }

    async fn relay(&self, id: RelayId) -> Result<Option<Relay>> {
        let Ok(id) = i64::try_from(id.0) else { return Ok(None) };
        self.read(move |c| by_id(c, id)).await
    }

    async fn list_relays(&self) -> Result<Vec<Relay>> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!("SELECT {COLUMNS} FROM relays ORDER BY id LIMIT ?1"))?;
            let rows = stmt.query_map([MAX_RELAYS as i64], from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn relay_by_credential(&self, hash: TokenHash) -> Result<Option<Relay>> {
        self.read(move |c| {
            Ok(c.prepare_cached(&format!("SELECT {COLUMNS} FROM relays WHERE credential_hash = ?1"))?
                .query_row([&hash.0[..]], from_row)
                .optional()?)
        })
        .await
    }

    async fn rename_relay(&self, id: RelayId, name: String) -> Result<Option<Relay>> {
        let name = checked_name(&name)?;
        let Ok(id) = i64::try_from(id.0) else { return Ok(None) };
        self.write(1, move |c| {
            c.prepare_cached("UPDATE relays SET name = ?2 WHERE id = ?1")?.execute(params![id, name])?;
            by_id(c, id)
        })
        .await
    }

    async fn rotate_relay(&self, id: RelayId, credential_hash: TokenHash, at: UnixMillis) -> Result<Option<Relay>> {
        let Ok(id) = i64::try_from(id.0) else { return Ok(None) };
        self.write(1, move |c| {
            let changed = c
                .prepare_cached(
                    "UPDATE relays SET credential_hash = ?2, rotated_at = ?3 WHERE id = ?1 AND revoked_at IS NULL",
                )?
                .execute(params![id, &credential_hash.0[..], at.0]);
            match changed {
                Ok(0) => Ok(None),
                Ok(_) => by_id(c, id),
                Err(e) if is_unique_violation(&e) => Err(StoreError::AlreadyExists("relay credential")),
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    async fn revoke_relay(&self, id: RelayId, at: UnixMillis) -> Result<Option<Relay>> {
        let Ok(id) = i64::try_from(id.0) else { return Ok(None) };
        self.write(1, move |c| {
            let changed = c
                .prepare_cached("UPDATE relays SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL")?
                .execute(params![id, at.0])?;
            if changed == 0 { Ok(None) } else { by_id(c, id) }
        })
        .await
    }

    async fn delete_relay(&self, id: RelayId) -> Result<bool> {
        let Ok(id) = i64::try_from(id.0) else { return Ok(false) };
        self.write(1, move |c| Ok(c.prepare_cached("DELETE FROM relays WHERE id = ?1")?.execute([id])? > 0)).await
    }

    async fn touch_relay(&self, id: RelayId, at: UnixMillis) -> Result<()> {
        let Ok(id) = i64::try_from(id.0) else { return Ok(()) };
        self.write(1, move |c| {
            c.prepare_cached(
                "UPDATE relays SET last_seen_at = ?2 WHERE id = ?1 AND (last_seen_at IS NULL OR last_seen_at < ?2)",
            )?
            .execute(params![id, at.0])?;
            Ok(())
        })
        .await
    }
}
