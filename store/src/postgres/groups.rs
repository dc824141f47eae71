//! Device groups on PostgreSQL ([`GroupStore`]): as the embedded store, with every change of an
//! enterprise's groups or memberships serialised by a transaction-scoped advisory lock on the
//! enterprise (group counts, per-device counts and positions stay true under concurrency; a
//! device move takes the same lock before it drops the device's memberships).

use std::collections::HashMap;

use async_trait::async_trait;
use fleetpulse_proto::{DeviceId, EnterpriseId, GroupId, UnixMillis};
use sqlx::postgres::{PgConnection, PgRow};
use sqlx::{Postgres, Row, Transaction};

use super::{PgEntityStore, backend, row_id};
use crate::groups::{Membership, check_targets, plan_add, scoped_query};
use crate::*;

const GROUP_COLUMNS: &str = "g.id, g.enterprise_id, g.name, g.description, g.created_at, g.updated_at, \
     (SELECT count(*) FROM group_members m WHERE m.group_id = g.id) AS members, \
     EXISTS (SELECT 1 FROM default_groups x WHERE x.group_id = g.id) AS is_default";

/// Serialises the group changes of enterprise `$1` until the transaction ends.
const LOCK_ENTERPRISE_GROUPS: &str = "SELECT pg_advisory_xact_lock(hashtextextended('fleetpulse.groups', $1))";

fn raw(id: u64) -> i64 {
    // Ids above i64 match no row: -1 is never an id.
    i64::try_from(id).unwrap_or(-1)
}

fn group_from_row(r: &PgRow) -> Result<Group> {
    Ok(Group {
        id: GroupId(row_id(r.try_get("id").map_err(backend)?)),
        enterprise_id: EnterpriseId(row_id(r.try_get("enterprise_id").map_err(backend)?)),
        name: r.try_get("name").map_err(backend)?,
        description: r.try_get("description").map_err(backend)?,
        created_at: UnixMillis(r.try_get("created_at").map_err(backend)?),
        updated_at: UnixMillis(r.try_get("updated_at").map_err(backend)?),
        members: row_id(r.try_get("members").map_err(backend)?),
        default: r.try_get("is_default").map_err(backend)?,
    })
}

fn unique_name(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::AlreadyExists("group name"),
        _ => backend(e),
    }
}

async fn group_by_id(c: &mut PgConnection, id: GroupId) -> Result<Option<Group>> {
    sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {GROUP_COLUMNS} FROM device_groups g WHERE g.id = $1")))
        .bind(raw(id.0))
        .fetch_optional(&mut *c)
        .await
        .map_err(backend)?
        .as_ref()
        .map(group_from_row)
        .transpose()
}

/// Takes the enterprise's group lock.
pub(super) async fn lock_groups(c: &mut PgConnection, enterprise: EnterpriseId) -> Result<()> {
    sqlx::query(LOCK_ENTERPRISE_GROUPS).bind(raw(enterprise.0)).execute(&mut *c).await.map_err(backend)?;
    Ok(())
}

/// The group, read again under its enterprise's lock (`None` if it is gone).
async fn locked_group(c: &mut PgConnection, id: GroupId) -> Result<Option<Group>> {
    let Some(first) = group_by_id(c, id).await? else { return Ok(None) };
    lock_groups(c, first.enterprise_id).await?;
    group_by_id(c, id).await
}

/// The device's groups, top priority first.
pub(super) async fn groups_of(c: &mut PgConnection, device: DeviceId) -> Result<Vec<GroupId>> {
    let ids: Vec<i64> =
        sqlx::query_scalar("SELECT group_id FROM group_members WHERE device_id = $1 ORDER BY position, group_id")
            .bind(raw(device.0))
            .fetch_all(&mut *c)
            .await
            .map_err(backend)?;
    Ok(ids.into_iter().map(|g| GroupId(row_id(g))).collect())
}

/// Replaces the device's groups with the list (checked by the caller), positions 0, 1, …
pub(super) async fn write_groups(c: &mut PgConnection, device: DeviceId, groups: &[GroupId]) -> Result<()> {
    sqlx::query("DELETE FROM group_members WHERE device_id = $1")
        .bind(raw(device.0))
        .execute(&mut *c)
        .await
        .map_err(backend)?;
    let ids: Vec<i64> = groups.iter().map(|g| raw(g.0)).collect();
    sqlx::query(
        "INSERT INTO group_members (device_id, group_id, position) \
         SELECT $1, g, p - 1 FROM unnest($2::bigint[]) WITH ORDINALITY AS t(g, p)",
    )
    .bind(raw(device.0))
    .bind(ids)
    .execute(&mut *c)
    .await
    .map_err(backend)?;
    Ok(())
}

/// Drops a device's memberships (it moved to another enterprise), under the old enterprise's
/// lock.
pub(super) async fn leave_all_groups(c: &mut PgConnection, from: EnterpriseId, device: DeviceId) -> Result<()> {
    lock_groups(c, from).await?;
    sqlx::query("DELETE FROM group_members WHERE device_id = $1")
        .bind(raw(device.0))
        .execute(&mut *c)
        .await
        .map_err(backend)?;
    Ok(())
}

/// The enterprise's groups by [`group_name_key`].
pub(super) async fn group_names(c: &mut PgConnection, enterprise: EnterpriseId) -> Result<HashMap<String, GroupId>> {
    let rows: Vec<(String, i64)> = sqlx::query_as("SELECT name_key, id FROM device_groups WHERE enterprise_id = $1")
        .bind(raw(enterprise.0))
        .fetch_all(&mut *c)
        .await
        .map_err(backend)?;
    Ok(rows.into_iter().map(|(k, id)| (k, GroupId(row_id(id)))).collect())
}

/// [`StoreError::InvalidInput`] unless every group of the list belongs to the enterprise.
async fn check_groups_of(c: &mut PgConnection, enterprise: EnterpriseId, groups: &[GroupId]) -> Result<()> {
    let ids: Vec<i64> = groups.iter().map(|g| raw(g.0)).collect();
    let found: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM device_groups WHERE id = ANY($1::bigint[]) AND enterprise_id = $2")
            .bind(&ids)
            .bind(raw(enterprise.0))
            .fetch_all(&mut *c)
            .await
            .map_err(backend)?;
    if let Some(g) = groups.iter().find(|g| !found.contains(&raw(g.0))) {
        return Err(StoreError::InvalidInput(format!("group {g} is not a group of enterprise {enterprise}")));
    }
    Ok(())
}

async fn refs(c: &mut PgConnection, groups: &[GroupId]) -> Result<Vec<GroupRef>> {
    let ids: Vec<i64> = groups.iter().map(|g| raw(g.0)).collect();
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT g.id, g.name FROM unnest($1::bigint[]) WITH ORDINALITY AS t(id, p) \
         JOIN device_groups g ON g.id = t.id ORDER BY t.p",
    )
    .bind(ids)
    .fetch_all(&mut *c)
    .await
    .map_err(backend)?;
    Ok(rows.into_iter().map(|(id, name)| GroupRef { id: GroupId(row_id(id)), name }).collect())
}

/// The devices a membership change is about, deduplicated in order; refuses an id that is not
/// a device of the enterprise, or a filter matching too many.
async fn target_ids(c: &mut PgConnection, enterprise: EnterpriseId, targets: &GroupTargets) -> Result<Vec<DeviceId>> {
    match targets {
        GroupTargets::Devices(ids) => {
            let mut seen = std::collections::HashSet::new();
            let ids: Vec<DeviceId> = ids.iter().copied().filter(|d| seen.insert(*d)).collect();
            let raws: Vec<i64> = ids.iter().map(|d| raw(d.0)).collect();
            let found: Vec<i64> =
                sqlx::query_scalar("SELECT id FROM devices WHERE id = ANY($1::bigint[]) AND enterprise_id = $2")
                    .bind(&raws)
                    .bind(raw(enterprise.0))
                    .fetch_all(&mut *c)
                    .await
                    .map_err(backend)?;
            let found: std::collections::HashSet<i64> = found.into_iter().collect();
            if let Some(d) = ids.iter().find(|d| !found.contains(&raw(d.0))) {
                return Err(StoreError::InvalidInput(format!("device {d} is not a device of the group's enterprise")));
            }
            Ok(ids)
        }
        GroupTargets::Filter(query) => {
            let query = scoped_query(query, enterprise);
            let built =
                crate::device_sql::ids_sql(&query, MAX_GROUP_MEMBER_CHANGE + 1, crate::device_sql::Dialect::Postgres);
            let rows = super::devices::pg_query(built).fetch_all(&mut *c).await.map_err(backend)?;
            let ids = rows
                .iter()
                .map(|r| r.try_get::<i64, _>(0).map(|id| DeviceId(row_id(id))).map_err(backend))
                .collect::<Result<Vec<_>>>()?;
            if ids.len() as u64 > MAX_GROUP_MEMBER_CHANGE {
                return Err(StoreError::LimitExceeded(format!(
                    "the filter matches more than {MAX_GROUP_MEMBER_CHANGE} devices; narrow it"
                )));
            }
            Ok(ids)
        }
    }
}

impl PgEntityStore {
    async fn begin_groups(&self) -> Result<Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(backend)
    }
}

#[async_trait]
impl GroupStore for PgEntityStore {
    async fn create_group(&self, new: NewGroup) -> Result<Group> {
        new.validate()?;
        let mut tx = self.begin_groups().await?;
        lock_groups(&mut tx, new.enterprise_id).await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM enterprises WHERE id = $1")
            .bind(raw(new.enterprise_id.0))
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        check_exists("enterprise", new.enterprise_id.0, exists.is_some())?;
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM device_groups WHERE enterprise_id = $1")
            .bind(raw(new.enterprise_id.0))
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
        if count >= MAX_GROUPS_PER_ENTERPRISE as i64 {
            return Err(StoreError::LimitExceeded(format!(
                "an enterprise has at most {MAX_GROUPS_PER_ENTERPRISE} groups"
            )));
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO device_groups (enterprise_id, name, name_key, description, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5) RETURNING id",
        )
        .bind(raw(new.enterprise_id.0))
        .bind(&new.name)
        .bind(group_name_key(&new.name))
        .bind(&new.description)
        .bind(new.at.0)
        .fetch_one(&mut *tx)
        .await
        .map_err(unique_name)?;
        tx.commit().await.map_err(backend)?;
        Ok(Group {
            id: GroupId(row_id(id)),
            enterprise_id: new.enterprise_id,
            name: new.name,
            description: new.description,
            members: 0,
            default: false,
            created_at: new.at,
            updated_at: new.at,
        })
    }

    async fn group(&self, id: GroupId) -> Result<Option<Group>> {
        let mut c = self.pool.acquire().await.map_err(backend)?;
        group_by_id(&mut c, id).await
    }

    async fn list_groups(&self, enterprises: Option<Vec<EnterpriseId>>, after: u64, limit: u32) -> Result<Vec<Group>> {
        if let Some(e) = &enterprises {
            check_bound("enterprise ids", e.len(), MAX_DEVICE_FILTER_IDS)?;
        }
        let filter: Option<Vec<i64>> = enterprises.map(|e| e.iter().map(|e| raw(e.0)).collect());
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {GROUP_COLUMNS} FROM device_groups g WHERE g.id > $1 \
             AND ($2::bigint[] IS NULL OR g.enterprise_id = ANY($2::bigint[])) ORDER BY g.id LIMIT $3"
        )))
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .bind(filter)
        .bind(i64::from(limit.min(MAX_GROUP_PAGE)))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?
        .iter()
        .map(group_from_row)
        .collect()
    }

    async fn edit_group(&self, id: GroupId, edit: GroupEdit, at: UnixMillis) -> Result<Option<Group>> {
        edit.validate()?;
        let mut tx = self.begin_groups().await?;
        let Some(g) = locked_group(&mut tx, id).await? else { return Ok(None) };
        let name = edit.name.unwrap_or(g.name.clone());
        let description = edit.description.unwrap_or(g.description.clone());
        sqlx::query(
            "UPDATE device_groups SET name = $2, name_key = $3, description = $4, updated_at = $5 WHERE id = $1",
        )
        .bind(raw(id.0))
        .bind(&name)
        .bind(group_name_key(&name))
        .bind(&description)
        .bind(at.0)
        .execute(&mut *tx)
        .await
        .map_err(unique_name)?;
        tx.commit().await.map_err(backend)?;
        Ok(Some(Group { name, description, updated_at: at, ..g }))
    }

    async fn delete_group(&self, id: GroupId) -> Result<Option<DeletedGroup>> {
        let mut tx = self.begin_groups().await?;
        let Some(group) = locked_group(&mut tx, id).await? else { return Ok(None) };
        let memberships_removed = sqlx::query("DELETE FROM group_members WHERE group_id = $1")
            .bind(raw(id.0))
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected();
        let was_default = sqlx::query("DELETE FROM default_groups WHERE group_id = $1")
            .bind(raw(id.0))
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected()
            > 0;
        sqlx::query("DELETE FROM device_groups WHERE id = $1")
            .bind(raw(id.0))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(Some(DeletedGroup { group, memberships_removed, was_default }))
    }

    async fn add_group_members(&self, id: GroupId, targets: GroupTargets) -> Result<Option<MemberChange>> {
        check_targets(&targets)?;
        let mut tx = self.begin_groups().await?;
        let Some(group) = locked_group(&mut tx, id).await? else { return Ok(None) };
        let ids = target_ids(&mut tx, group.enterprise_id, &targets).await?;
        let raws: Vec<i64> = ids.iter().map(|d| raw(d.0)).collect();
        let rows: Vec<(i64, i64, bool)> = sqlx::query_as(
            "SELECT t.d, (SELECT count(*) FROM group_members m WHERE m.device_id = t.d), \
             EXISTS (SELECT 1 FROM group_members m WHERE m.device_id = t.d AND m.group_id = $2) \
             FROM unnest($1::bigint[]) WITH ORDINALITY AS t(d, p) ORDER BY t.p",
        )
        .bind(&raws)
        .bind(raw(id.0))
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        let members: Vec<Membership> = rows
            .into_iter()
            .map(|(d, groups, member)| Membership { device: DeviceId(row_id(d)), groups: row_id(groups), member })
            .collect();
        let (join, change) = plan_add(&members);
        let join: Vec<i64> = join.iter().map(|d| raw(d.0)).collect();
        sqlx::query(
            "INSERT INTO group_members (device_id, group_id, position) \
             SELECT t.d, $2, COALESCE((SELECT max(m.position) FROM group_members m WHERE m.device_id = t.d), -1) + 1 \
             FROM unnest($1::bigint[]) AS t(d)",
        )
        .bind(join)
        .bind(raw(id.0))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(Some(change))
    }

    async fn remove_group_members(&self, id: GroupId, targets: GroupTargets) -> Result<Option<MemberChange>> {
        check_targets(&targets)?;
        let mut tx = self.begin_groups().await?;
        let Some(group) = locked_group(&mut tx, id).await? else { return Ok(None) };
        let ids = target_ids(&mut tx, group.enterprise_id, &targets).await?;
        let raws: Vec<i64> = ids.iter().map(|d| raw(d.0)).collect();
        let changed = sqlx::query("DELETE FROM group_members WHERE group_id = $1 AND device_id = ANY($2::bigint[])")
            .bind(raw(id.0))
            .bind(raws)
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected();
        tx.commit().await.map_err(backend)?;
        let matched = ids.len() as u64;
        Ok(Some(MemberChange { matched, changed, unchanged: matched.saturating_sub(changed), at_limit: 0 }))
    }

    async fn set_group_top_priority(&self, id: GroupId) -> Result<Option<u64>> {
        let mut tx = self.begin_groups().await?;
        let Some(group) = locked_group(&mut tx, id).await? else { return Ok(None) };
        sqlx::query(
            "UPDATE group_members gm SET position = COALESCE((SELECT min(m.position) FROM group_members m \
             WHERE m.device_id = gm.device_id AND m.group_id <> $1) - 1, gm.position) WHERE gm.group_id = $1",
        )
        .bind(raw(id.0))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(Some(group.members))
    }

    async fn device_groups(&self, device: DeviceId) -> Result<Vec<GroupId>> {
        let mut c = self.pool.acquire().await.map_err(backend)?;
        groups_of(&mut c, device).await
    }

    async fn group_refs_of(&self, devices: Vec<DeviceId>) -> Result<Vec<(DeviceId, Vec<GroupRef>)>> {
        check_bound("devices", devices.len(), MAX_DEVICE_PAGE as usize)?;
        if devices.is_empty() {
            return Ok(Vec::new());
        }
        let raws: Vec<i64> = devices.iter().map(|d| raw(d.0)).collect();
        let rows: Vec<(i64, i64, String)> = sqlx::query_as(
            "SELECT m.device_id, g.id, g.name FROM group_members m JOIN device_groups g ON g.id = m.group_id \
             WHERE m.device_id = ANY($1::bigint[]) ORDER BY m.device_id, m.position, g.id",
        )
        .bind(raws)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        let mut out: Vec<(DeviceId, Vec<GroupRef>)> = Vec::new();
        for (d, g, name) in rows {
            let (d, g) = (DeviceId(row_id(d)), GroupRef { id: GroupId(row_id(g)), name });
            match out.last_mut() {
                Some((last, list)) if *last == d => list.push(g),
                _ => out.push((d, vec![g])),
            }
        }
        Ok(out)
    }

    async fn set_device_groups(&self, device: DeviceId, groups: Vec<GroupId>) -> Result<Option<Vec<GroupRef>>> {
        check_group_list(&groups)?;
        let mut tx = self.begin_groups().await?;
        let enterprise: Option<i64> = sqlx::query_scalar("SELECT enterprise_id FROM devices WHERE id = $1 FOR UPDATE")
            .bind(raw(device.0))
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        let Some(enterprise) = enterprise.map(|e| EnterpriseId(row_id(e))) else { return Ok(None) };
        lock_groups(&mut tx, enterprise).await?;
        check_groups_of(&mut tx, enterprise, &groups).await?;
        write_groups(&mut tx, device, &groups).await?;
        let out = refs(&mut tx, &groups).await?;
        tx.commit().await.map_err(backend)?;
        Ok(Some(out))
    }

    async fn default_groups(&self, enterprise: EnterpriseId) -> Result<Vec<GroupRef>> {
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT g.id, g.name FROM default_groups x JOIN device_groups g ON g.id = x.group_id \
             WHERE x.enterprise_id = $1 ORDER BY x.position, g.id",
        )
        .bind(raw(enterprise.0))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        Ok(rows.into_iter().map(|(id, name)| GroupRef { id: GroupId(row_id(id)), name }).collect())
    }

    async fn set_default_groups(&self, enterprise: EnterpriseId, groups: Vec<GroupId>) -> Result<Vec<GroupRef>> {
        check_group_list(&groups)?;
        let mut tx = self.begin_groups().await?;
        lock_groups(&mut tx, enterprise).await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM enterprises WHERE id = $1")
            .bind(raw(enterprise.0))
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        check_exists("enterprise", enterprise.0, exists.is_some())?;
        check_groups_of(&mut tx, enterprise, &groups).await?;
        sqlx::query("DELETE FROM default_groups WHERE enterprise_id = $1")
            .bind(raw(enterprise.0))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        let ids: Vec<i64> = groups.iter().map(|g| raw(g.0)).collect();
        sqlx::query(
            "INSERT INTO default_groups (enterprise_id, group_id, position) \
             SELECT $1, g, p - 1 FROM unnest($2::bigint[]) WITH ORDINALITY AS t(g, p)",
        )
        .bind(raw(enterprise.0))
        .bind(ids)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        let out = refs(&mut tx, &groups).await?;
        tx.commit().await.map_err(backend)?;
        Ok(out)
    }
}
