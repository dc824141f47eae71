//! Device groups on SQLite ([`GroupStore`]): groups, ordered memberships (`position`, lowest
//! first), default groups; and the helpers registration, moves and imports call inside their own
//! write transaction.

use std::collections::HashMap;

use async_trait::async_trait;
use fleetpulse_proto::{DeviceId, EnterpriseId, GroupId, UnixMillis};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{EmbeddedStore, is_unique_violation, row_exists};
use crate::groups::{Membership, check_targets, plan_add, scoped_query};
use crate::*;

const GROUP_COLUMNS: &str = "g.id, g.enterprise_id, g.name, g.description, g.created_at, g.updated_at, \
     (SELECT count(*) FROM group_members m WHERE m.group_id = g.id), \
     EXISTS (SELECT 1 FROM default_groups x WHERE x.group_id = g.id)";

fn group_from_row(r: &Row<'_>) -> rusqlite::Result<Group> {
    Ok(Group {
        id: GroupId(r.get(0)?),
        enterprise_id: EnterpriseId(r.get(1)?),
        name: r.get(2)?,
        description: r.get(3)?,
        created_at: UnixMillis(r.get(4)?),
        updated_at: UnixMillis(r.get(5)?),
        members: r.get(6)?,
        default: r.get(7)?,
    })
}

fn raw(id: u64) -> i64 {
    // Ids above i64 match no row: -1 is never an id.
    i64::try_from(id).unwrap_or(-1)
}

fn json_ids(ids: impl IntoIterator<Item = u64>) -> String {
    serde_json::Value::from(ids.into_iter().map(raw).collect::<Vec<_>>()).to_string()
}

fn group_by_id(c: &Connection, id: GroupId) -> Result<Option<Group>> {
    Ok(c.prepare_cached(&format!("SELECT {GROUP_COLUMNS} FROM device_groups g WHERE g.id = ?1"))?
        .query_row([raw(id.0)], group_from_row)
        .optional()?)
}

/// The device's groups, top priority first.
pub(super) fn groups_of(c: &Connection, device: DeviceId) -> Result<Vec<GroupId>> {
    let mut st =
        c.prepare_cached("SELECT group_id FROM group_members WHERE device_id = ?1 ORDER BY position, group_id")?;
    let rows = st.query_map([raw(device.0)], |r| r.get(0).map(GroupId))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Replaces the device's groups with the list (checked by the caller), positions 0, 1, …
pub(super) fn write_groups(c: &Connection, device: DeviceId, groups: &[GroupId]) -> Result<()> {
    c.prepare_cached("DELETE FROM group_members WHERE device_id = ?1")?.execute([raw(device.0)])?;
    let mut insert =
        c.prepare_cached("INSERT INTO group_members (device_id, group_id, position) VALUES (?1, ?2, ?3)")?;
    for (i, g) in groups.iter().enumerate() {
        insert.execute(params![raw(device.0), raw(g.0), i as i64])?;
    }
    Ok(())
}

/// Puts a device that just added itself into its enterprise's default groups (ING-2 auto-add).
pub(super) fn join_default_groups(c: &Connection, enterprise: EnterpriseId, device: DeviceId) -> Result<()> {
    c.prepare_cached(
        "INSERT INTO group_members (device_id, group_id, position) \
         SELECT ?2, group_id, position FROM default_groups WHERE enterprise_id = ?1",
    )?
    .execute(params![raw(enterprise.0), raw(device.0)])?;
    Ok(())
}

/// Drops a device's memberships (it moved to another enterprise, whose groups are others).
pub(super) fn leave_all_groups(c: &Connection, device: DeviceId) -> Result<()> {
    c.prepare_cached("DELETE FROM group_members WHERE device_id = ?1")?.execute([raw(device.0)])?;
    Ok(())
}

/// The enterprise's groups by [`group_name_key`].
pub(super) fn group_names(c: &Connection, enterprise: EnterpriseId) -> Result<HashMap<String, GroupId>> {
    let mut st = c.prepare_cached("SELECT name_key, id FROM device_groups WHERE enterprise_id = ?1")?;
    let rows = st.query_map([raw(enterprise.0)], |r| Ok((r.get::<_, String>(0)?, GroupId(r.get(1)?))))?;
    Ok(rows.collect::<rusqlite::Result<HashMap<_, _>>>()?)
}

/// [`StoreError::InvalidInput`] unless every group of the list belongs to the enterprise.
fn check_groups_of(c: &Connection, enterprise: EnterpriseId, groups: &[GroupId]) -> Result<()> {
    let mut st = c.prepare_cached("SELECT 1 FROM device_groups WHERE id = ?1 AND enterprise_id = ?2")?;
    for g in groups {
        if st.query_row(params![raw(g.0), raw(enterprise.0)], |_| Ok(())).optional()?.is_none() {
            return Err(StoreError::InvalidInput(format!("group {g} is not a group of enterprise {enterprise}")));
        }
    }
    Ok(())
}

fn refs(c: &Connection, groups: &[GroupId]) -> Result<Vec<GroupRef>> {
    let mut st = c.prepare_cached("SELECT name FROM device_groups WHERE id = ?1")?;
    let mut out = Vec::with_capacity(groups.len());
    for g in groups {
        if let Some(name) = st.query_row([raw(g.0)], |r| r.get(0)).optional()? {
            out.push(GroupRef { id: *g, name });
        }
    }
    Ok(out)
}

/// The devices a membership change is about, deduplicated in order; refuses an id that is not
/// a device of the enterprise, or a filter matching too many.
fn target_ids(c: &Connection, enterprise: EnterpriseId, targets: &GroupTargets) -> Result<Vec<DeviceId>> {
    match targets {
        GroupTargets::Devices(ids) => {
            let mut seen = std::collections::HashSet::new();
            let ids: Vec<DeviceId> = ids.iter().copied().filter(|d| seen.insert(*d)).collect();
            let mut st = c.prepare_cached("SELECT 1 FROM devices WHERE id = ?1 AND enterprise_id = ?2")?;
            for d in &ids {
                if st.query_row(params![raw(d.0), raw(enterprise.0)], |_| Ok(())).optional()?.is_none() {
                    return Err(StoreError::InvalidInput(format!(
                        "device {d} is not a device of the group's enterprise"
                    )));
                }
            }
            Ok(ids)
        }
        GroupTargets::Filter(query) => {
            let query = scoped_query(query, enterprise);
            let built =
                crate::device_sql::ids_sql(&query, MAX_GROUP_MEMBER_CHANGE + 1, crate::device_sql::Dialect::Sqlite);
            let ids: Vec<DeviceId> = c
                .prepare(&built.sql)?
                .query_map(rusqlite::params_from_iter(super::devices::sqlite_args(built.args)), |r| {
                    r.get(0).map(DeviceId)
                })?
                .collect::<rusqlite::Result<_>>()?;
            if ids.len() as u64 > MAX_GROUP_MEMBER_CHANGE {
                return Err(StoreError::LimitExceeded(format!(
                    "the filter matches more than {MAX_GROUP_MEMBER_CHANGE} devices; narrow it"
                )));
            }
            Ok(ids)
        }
    }
}

/// Rows a membership change may write, for the writer's batching.
fn target_rows(targets: &GroupTargets) -> usize {
    match targets {
        GroupTargets::Devices(ids) => ids.len().max(1),
        GroupTargets::Filter(_) => MAX_GROUP_MEMBER_CHANGE as usize,
    }
}

#[async_trait]
impl GroupStore for EmbeddedStore {
    async fn create_group(&self, new: NewGroup) -> Result<Group> {
        new.validate()?;
        self.write(1, move |c| {
            check_exists("enterprise", new.enterprise_id.0, row_exists(c, "enterprises", new.enterprise_id.0)?)?;
            let count: i64 = c
                .prepare_cached("SELECT count(*) FROM device_groups WHERE enterprise_id = ?1")?
                .query_row([raw(new.enterprise_id.0)], |r| r.get(0))?;
            if count >= MAX_GROUPS_PER_ENTERPRISE as i64 {
                return Err(StoreError::LimitExceeded(format!(
                    "an enterprise has at most {MAX_GROUPS_PER_ENTERPRISE} groups"
                )));
            }
            let inserted = c
                .prepare_cached(
                    "INSERT INTO device_groups (enterprise_id, name, name_key, description, created_at, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                )?
                .execute(params![
                    raw(new.enterprise_id.0),
                    new.name,
                    group_name_key(&new.name),
                    new.description,
                    new.at.0
                ]);
            match inserted {
                Err(e) if is_unique_violation(&e) => return Err(StoreError::AlreadyExists("group name")),
                other => other?,
            };
            Ok(Group {
                id: GroupId(c.last_insert_rowid() as u64),
                enterprise_id: new.enterprise_id,
                name: new.name.clone(),
                description: new.description.clone(),
                members: 0,
                default: false,
                created_at: new.at,
                updated_at: new.at,
            })
        })
        .await
    }

    async fn group(&self, id: GroupId) -> Result<Option<Group>> {
        self.read(move |c| group_by_id(c, id)).await
    }

    async fn list_groups(&self, enterprises: Option<Vec<EnterpriseId>>, after: u64, limit: u32) -> Result<Vec<Group>> {
        if let Some(e) = &enterprises {
            check_bound("enterprise ids", e.len(), MAX_DEVICE_FILTER_IDS)?;
        }
        let limit = limit.min(MAX_GROUP_PAGE);
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        self.read(move |c| {
            let filter = enterprises.as_ref().map(|e| json_ids(e.iter().map(|e| e.0)));
            let mut st = c.prepare_cached(&format!(
                "SELECT {GROUP_COLUMNS} FROM device_groups g WHERE g.id > ?1 \
                 AND (?2 IS NULL OR g.enterprise_id IN (SELECT value FROM json_each(?2))) ORDER BY g.id LIMIT ?3"
            ))?;
            let rows = st.query_map(params![after, filter, limit], group_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn edit_group(&self, id: GroupId, edit: GroupEdit, at: UnixMillis) -> Result<Option<Group>> {
        edit.validate()?;
        self.write(1, move |c| {
            let Some(g) = group_by_id(c, id)? else { return Ok(None) };
            let name = edit.name.clone().unwrap_or(g.name.clone());
            let description = edit.description.clone().unwrap_or(g.description.clone());
            let updated = c
                .prepare_cached(
                    "UPDATE device_groups SET name = ?2, name_key = ?3, description = ?4, updated_at = ?5 WHERE id = ?1",
                )?
                .execute(params![raw(id.0), name, group_name_key(&name), description, at.0]);
            match updated {
                Err(e) if is_unique_violation(&e) => return Err(StoreError::AlreadyExists("group name")),
                other => other?,
            };
            Ok(Some(Group { name, description, updated_at: at, ..g }))
        })
        .await
    }

    async fn delete_group(&self, id: GroupId) -> Result<Option<DeletedGroup>> {
        self.write(1, move |c| {
            let Some(group) = group_by_id(c, id)? else { return Ok(None) };
            let memberships_removed =
                c.prepare_cached("DELETE FROM group_members WHERE group_id = ?1")?.execute([raw(id.0)])? as u64;
            let was_default =
                c.prepare_cached("DELETE FROM default_groups WHERE group_id = ?1")?.execute([raw(id.0)])? > 0;
            c.prepare_cached("DELETE FROM device_groups WHERE id = ?1")?.execute([raw(id.0)])?;
            Ok(Some(DeletedGroup { group, memberships_removed, was_default }))
        })
        .await
    }

    async fn add_group_members(&self, id: GroupId, targets: GroupTargets) -> Result<Option<MemberChange>> {
        check_targets(&targets)?;
        self.write(target_rows(&targets), move |c| {
            let Some(group) = group_by_id(c, id)? else { return Ok(None) };
            let ids = target_ids(c, group.enterprise_id, &targets)?;
            let mut state = c.prepare_cached(
                "SELECT (SELECT count(*) FROM group_members WHERE device_id = ?1), \
                 EXISTS (SELECT 1 FROM group_members WHERE device_id = ?1 AND group_id = ?2)",
            )?;
            let mut members = Vec::with_capacity(ids.len());
            for d in &ids {
                let (groups, member) =
                    state.query_row(params![raw(d.0), raw(id.0)], |r| Ok((r.get::<_, i64>(0)?, r.get(1)?)))?;
                members.push(Membership { device: *d, groups: u64::try_from(groups).unwrap_or(0), member });
            }
            let (join, change) = plan_add(&members);
            let mut insert = c.prepare_cached(
                "INSERT INTO group_members (device_id, group_id, position) VALUES (?1, ?2, \
                 COALESCE((SELECT max(position) FROM group_members WHERE device_id = ?1), -1) + 1)",
            )?;
            for d in join {
                insert.execute(params![raw(d.0), raw(id.0)])?;
            }
            Ok(Some(change))
        })
        .await
    }

    async fn remove_group_members(&self, id: GroupId, targets: GroupTargets) -> Result<Option<MemberChange>> {
        check_targets(&targets)?;
        self.write(target_rows(&targets), move |c| {
            let Some(group) = group_by_id(c, id)? else { return Ok(None) };
            let ids = target_ids(c, group.enterprise_id, &targets)?;
            let mut delete = c.prepare_cached("DELETE FROM group_members WHERE device_id = ?1 AND group_id = ?2")?;
            let mut changed = 0u64;
            for d in &ids {
                changed += delete.execute(params![raw(d.0), raw(id.0)])? as u64;
            }
            let matched = ids.len() as u64;
            Ok(Some(MemberChange { matched, changed, unchanged: matched - changed, at_limit: 0 }))
        })
        .await
    }

    async fn set_group_top_priority(&self, id: GroupId) -> Result<Option<u64>> {
        self.write(MAX_GROUP_MEMBER_CHANGE as usize, move |c| {
            let Some(group) = group_by_id(c, id)? else { return Ok(None) };
            // One below the first of the device's other groups: the group becomes first, the
            // others keep their order (a device in this group only keeps its position).
            c.prepare_cached(
                "UPDATE group_members SET position = COALESCE((SELECT min(m.position) FROM group_members m \
                 WHERE m.device_id = group_members.device_id AND m.group_id <> ?1) - 1, position) WHERE group_id = ?1",
            )?
            .execute([raw(id.0)])?;
            Ok(Some(group.members))
        })
        .await
    }

    async fn device_groups(&self, device: DeviceId) -> Result<Vec<GroupId>> {
        self.read(move |c| groups_of(c, device)).await
    }

    async fn group_refs_of(&self, devices: Vec<DeviceId>) -> Result<Vec<(DeviceId, Vec<GroupRef>)>> {
        check_bound("devices", devices.len(), MAX_DEVICE_PAGE as usize)?;
        if devices.is_empty() {
            return Ok(Vec::new());
        }
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT m.device_id, g.id, g.name FROM group_members m JOIN device_groups g ON g.id = m.group_id \
                 WHERE m.device_id IN (SELECT value FROM json_each(?1)) ORDER BY m.device_id, m.position, g.id",
            )?;
            let rows = st.query_map([json_ids(devices.iter().map(|d| d.0))], |r| {
                Ok((DeviceId(r.get(0)?), GroupRef { id: GroupId(r.get(1)?), name: r.get(2)? }))
            })?;
            let mut out: Vec<(DeviceId, Vec<GroupRef>)> = Vec::new();
            for row in rows {
                let (d, g) = row?;
                match out.last_mut() {
                    Some((last, list)) if *last == d => list.push(g),
                    _ => out.push((d, vec![g])),
                }
            }
            Ok(out)
        })
        .await
    }

    async fn set_device_groups(&self, device: DeviceId, groups: Vec<GroupId>) -> Result<Option<Vec<GroupRef>>> {
        check_group_list(&groups)?;
        self.write(groups.len().max(1), move |c| {
            let enterprise: Option<u64> = c
                .prepare_cached("SELECT enterprise_id FROM devices WHERE id = ?1")?
                .query_row([raw(device.0)], |r| r.get(0))
                .optional()?;
            let Some(enterprise) = enterprise else { return Ok(None) };
            check_groups_of(c, EnterpriseId(enterprise), &groups)?;
            write_groups(c, device, &groups)?;
            Ok(Some(refs(c, &groups)?))
        })
        .await
    }

    async fn default_groups(&self, enterprise: EnterpriseId) -> Result<Vec<GroupRef>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT g.id, g.name FROM default_groups x JOIN device_groups g ON g.id = x.group_id \
                 WHERE x.enterprise_id = ?1 ORDER BY x.position, g.id",
            )?;
            let rows =
                st.query_map([raw(enterprise.0)], |r| Ok(GroupRef { id: GroupId(r.get(0)?), name: r.get(1)? }))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn set_default_groups(&self, enterprise: EnterpriseId, groups: Vec<GroupId>) -> Result<Vec<GroupRef>> {
        check_group_list(&groups)?;
        self.write(groups.len().max(1), move |c| {
            check_exists("enterprise", enterprise.0, row_exists(c, "enterprises", enterprise.0)?)?;
            check_groups_of(c, enterprise, &groups)?;
            c.prepare_cached("DELETE FROM default_groups WHERE enterprise_id = ?1")?.execute([raw(enterprise.0)])?;
            let mut insert =
                c.prepare_cached("INSERT INTO default_groups (enterprise_id, group_id, position) VALUES (?1, ?2, ?3)")?;
            for (i, g) in groups.iter().enumerate() {
                insert.execute(params![raw(enterprise.0), raw(g.0), i as i64])?;
            }
            refs(c, &groups)
        })
        .await
    }
}
