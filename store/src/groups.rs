//! Device groups (`GroupStore`, PRV-2): static groups per enterprise, a device's groups as an
//! ordered list (top priority first), members added and removed by ids or by a device filter,
//! "set to top priority", and the default groups an auto-added device joins. The decisions (what
//! a change does to a device's list) are pure functions here; the backends read and write rows.

use async_trait::async_trait;
use fleetpulse_proto::{DeviceId, EnterpriseId, GroupId, UnixMillis};
use serde::Serialize;

use crate::{DeviceQuery, ImportMode, Result, StoreError};

/// Most groups of one enterprise.
pub const MAX_GROUPS_PER_ENTERPRISE: usize = 1_000;

/// Most groups one device is a member of (and most default groups of an enterprise).
pub const MAX_GROUPS_PER_DEVICE: usize = 32;

/// Longest group name, in characters.
pub const MAX_GROUP_NAME: usize = 64;

/// Longest group description, in characters.
pub const MAX_GROUP_DESCRIPTION: usize = 256;

/// Most devices one membership change may touch (as a bulk edit; a filter matching more is
/// refused).
pub const MAX_GROUP_MEMBER_CHANGE: u64 = crate::MAX_BULK_EDIT;

/// Most groups a [`crate::DeviceDashboard`] lists (those with the most members).
pub const MAX_DASHBOARD_GROUPS: u32 = 1_000;

/// Largest page of [`GroupStore::list_groups`].
pub const MAX_GROUP_PAGE: u32 = 1_000;

/// [`StoreError::InvalidInput`] unless the name is 1 to [`MAX_GROUP_NAME`] characters of
/// ASCII letters, digits, spaces (not at either end) and `# . - _ ( ) [ ]`: the guide's field
/// rules, so that every group can be named in a CSV import's `endpoint_group` cell (where `|`
/// separates names).
pub fn check_group_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_GROUP_NAME || name.trim() != name {
        return Err(StoreError::InvalidInput(format!(
            "a group name has 1 to {MAX_GROUP_NAME} characters and no space at either end"
        )));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b' ' | b'#' | b'.' | b'-' | b'_' | b'(' | b')' | b'[' | b']'))
    {
        return Err(StoreError::InvalidInput(format!(
            "group name {name:?} may hold only letters, digits, spaces and # . - _ ( ) [ ]"
        )));
    }
    Ok(())
}

/// [`StoreError::InvalidInput`] unless the description has at most [`MAX_GROUP_DESCRIPTION`]
/// characters and no control character.
pub fn check_group_description(description: &str) -> Result<()> {
    crate::model::check_text("description", description, MAX_GROUP_DESCRIPTION)
}

/// The key names are compared by: unique per enterprise regardless of ASCII case.
pub fn group_name_key(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// A device group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Group {
    /// Identifier.
    pub id: GroupId,
    /// Its enterprise.
    pub enterprise_id: EnterpriseId,
    /// Name, unique in the enterprise (ASCII case ignored).
    pub name: String,
    /// Description (may be empty).
    pub description: String,
    /// Member devices.
    pub members: u64,
    /// Whether auto-added devices join it ([`GroupStore::default_groups`]).
    pub default: bool,
    /// When it was created.
    pub created_at: UnixMillis,
    /// When its name or description last changed.
    pub updated_at: UnixMillis,
}

/// A group as a device body shows it: id and name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct GroupRef {
    /// Identifier.
    pub id: GroupId,
    /// Name.
    pub name: String,
}

/// Arguments of [`GroupStore::create_group`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewGroup {
    /// Its enterprise (the API checked the caller may act there).
    pub enterprise_id: EnterpriseId,
    /// [`check_group_name`].
    pub name: String,
    /// [`check_group_description`].
    pub description: String,
    /// When it is created.
    pub at: UnixMillis,
}

impl NewGroup {
    /// [`StoreError::InvalidInput`] unless name and description pass.
    pub fn validate(&self) -> Result<()> {
        check_group_name(&self.name)?;
        check_group_description(&self.description)
    }
}

/// An edit of a group ([`GroupStore::edit_group`]): every field given is changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupEdit {
    /// New name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
}

impl GroupEdit {
    /// [`StoreError::InvalidInput`] unless every given field passes.
    pub fn validate(&self) -> Result<()> {
        if let Some(n) = &self.name {
            check_group_name(n)?;
        }
        if let Some(d) = &self.description {
            check_group_description(d)?;
        }
        Ok(())
    }
}

/// Which devices a membership change is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupTargets {
    /// These devices (at most [`crate::MAX_DEVICE_FILTER_IDS`]); every one must be a device of
    /// the group's enterprise.
    Devices(Vec<DeviceId>),
    /// The devices matching the query within the group's enterprise (its sort is ignored; a
    /// query naming only other enterprises matches nothing); at most
    /// [`MAX_GROUP_MEMBER_CHANGE`] may match.
    Filter(Box<DeviceQuery>),
}

/// What a membership change did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct MemberChange {
    /// Devices the change was about.
    pub matched: u64,
    /// Devices that joined or left.
    pub changed: u64,
    /// Devices that were members already (add) or were not members (remove).
    pub unchanged: u64,
    /// Devices left out because they are in [`MAX_GROUPS_PER_DEVICE`] groups already (add).
    pub at_limit: u64,
}

/// What deleting a group removed ([`GroupStore::delete_group`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct DeletedGroup {
    /// The group as it was (with its member count).
    pub group: Group,
    /// Memberships removed (devices that were in it).
    pub memberships_removed: u64,
    /// Whether it was one of the enterprise's default groups (it is no longer).
    pub was_default: bool,
}

/// What a device's membership state is before an add: its id, how many groups it is in, and
/// whether it is in the group already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Membership {
    pub(crate) device: DeviceId,
    pub(crate) groups: u64,
    pub(crate) member: bool,
}

/// Decides an add: the devices that join (in the order given) and the counts.
pub(crate) fn plan_add(devices: &[Membership]) -> (Vec<DeviceId>, MemberChange) {
    let mut change = MemberChange { matched: devices.len() as u64, ..MemberChange::default() };
    let mut join = Vec::new();
    for m in devices {
        if m.member {
            change.unchanged += 1;
        } else if m.groups >= MAX_GROUPS_PER_DEVICE as u64 {
            change.at_limit += 1;
        } else {
            change.changed += 1;
            join.push(m.device);
        }
    }
    (join, change)
}

/// The query narrowed to the group's enterprise (a query naming other enterprises only matches
/// nothing).
pub(crate) fn scoped_query(query: &DeviceQuery, enterprise: EnterpriseId) -> DeviceQuery {
    let enterprises = match &query.enterprises {
        Some(list) if !list.contains(&enterprise) => Vec::new(),
        _ => vec![enterprise],
    };
    DeviceQuery { enterprises: Some(enterprises), ..query.clone() }
}

/// Checks the targets before any work: the bound of an id list, a valid query.
pub(crate) fn check_targets(targets: &GroupTargets) -> Result<()> {
    match targets {
        GroupTargets::Devices(ids) => crate::check_bound("device ids", ids.len(), crate::MAX_DEVICE_FILTER_IDS),
        GroupTargets::Filter(q) => q.validate(),
    }
}

/// [`StoreError::InvalidInput`] unless the list has at most [`MAX_GROUPS_PER_DEVICE`] groups and
/// no group twice.
pub fn check_group_list(groups: &[GroupId]) -> Result<()> {
    if groups.len() > MAX_GROUPS_PER_DEVICE {
        return Err(StoreError::InvalidInput(format!(
            "{} groups (a device is in at most {MAX_GROUPS_PER_DEVICE})",
            groups.len()
        )));
    }
    for (i, g) in groups.iter().enumerate() {
        if groups[..i].contains(g) {
            return Err(StoreError::InvalidInput(format!("group {g} is listed twice")));
        }
        if i64::try_from(g.0).is_err() {
            return Err(StoreError::InvalidInput(format!("group {g} does not exist")));
        }
    }
    Ok(())
}

/// The list with `top` first and the others in their order (`top` need not be in it).
pub fn with_top_priority(groups: &[GroupId], top: GroupId) -> Vec<GroupId> {
    std::iter::once(top).chain(groups.iter().copied().filter(|g| *g != top)).collect()
}

/// A device's groups after a CSV import row naming `wanted` (in order, duplicates dropped):
/// a new device (`current` is `None`) and [`ImportMode::Overwrite`] take `wanted`,
/// [`ImportMode::Merge`] keeps `current` and appends the groups it lacks, and
/// [`ImportMode::Create`] leaves an existing device alone. [`StoreError::InvalidInput`] if the
/// result exceeds [`MAX_GROUPS_PER_DEVICE`].
pub(crate) fn plan_import_groups(
    mode: ImportMode,
    current: Option<&[GroupId]>,
    wanted: &[GroupId],
) -> Result<Vec<GroupId>> {
    let mut out: Vec<GroupId> = match (current, mode) {
        (None, _) | (Some(_), ImportMode::Overwrite) => Vec::new(),
        (Some(c), ImportMode::Merge | ImportMode::Create) => c.to_vec(),
    };
    if !(current.is_some() && mode == ImportMode::Create) {
        for g in wanted {
            if !out.contains(g) {
                out.push(*g);
            }
        }
    }
    check_group_list(&out)?;
    Ok(out)
}

/// [`plan_import_groups`] for a row that may have no `endpoint_group` column (`wanted` is
/// `None`: the groups stay as they are); the refusal as a row error's reason.
pub(crate) fn import_groups(
    mode: ImportMode,
    current: Option<&[GroupId]>,
    wanted: Option<&[GroupId]>,
) -> std::result::Result<Option<Vec<GroupId>>, String> {
    let Some(wanted) = wanted else { return Ok(None) };
    match plan_import_groups(mode, current, wanted) {
        Ok(list) => Ok(Some(list)),
        Err(StoreError::InvalidInput(m)) => Err(m),
        Err(e) => Err(e.to_string()),
    }
}

/// The ids of the named groups (by [`group_name_key`], in order); the reason naming the first
/// unknown one otherwise. An import creates no group: the guide's groups "must already exist in
/// the service for the association to occur".
pub(crate) fn resolve_group_names(
    names: &[String],
    known: &std::collections::HashMap<String, GroupId>,
) -> std::result::Result<Vec<GroupId>, String> {
    names
        .iter()
        .map(|n| {
            known.get(&group_name_key(n)).copied().ok_or_else(|| {
                format!("no group named {n:?} in the enterprise (create it first; an import creates no groups)")
            })
        })
        .collect()
}

/// Splits an `endpoint_group` cell into group names (`|`-separated, each trimmed, empty parts
/// dropped); [`StoreError::InvalidInput`] for a name [`check_group_name`] refuses or more than
/// [`MAX_GROUPS_PER_DEVICE`] names.
pub fn parse_group_cell(cell: &str) -> Result<Vec<String>> {
    let names: Vec<String> = cell.split('|').map(str::trim).filter(|n| !n.is_empty()).map(str::to_owned).collect();
    if names.len() > MAX_GROUPS_PER_DEVICE {
        return Err(StoreError::InvalidInput(format!(
            "{} groups (a device is in at most {MAX_GROUPS_PER_DEVICE})",
            names.len()
        )));
    }
    for n in &names {
        check_group_name(n)?;
    }
    Ok(names)
}

/// Whether a dashboard of this query counts by group: only when it is of exactly one enterprise
/// (groups belong to one enterprise; across a platform the count would join every membership of
/// every enterprise — 235 ms at 100,000 devices and 200,000 memberships, over the dashboard's
/// 150 ms budget — for a list mixing unrelated tenants' groups).
pub(crate) fn dashboard_counts_groups(query: &DeviceQuery) -> bool {
    query.channels.is_none() && query.enterprises.as_ref().is_some_and(|e| e.len() == 1)
}

/// Sets a dashboard's `by_group` from the rows of the group count query: (group id, name,
/// devices, online devices), read with a limit of one beyond [`MAX_DASHBOARD_GROUPS`].
pub(crate) fn set_dashboard_groups(dashboard: &mut crate::DeviceDashboard, mut rows: Vec<(i64, String, i64, i64)>) {
    let n = |v: i64| u64::try_from(v).unwrap_or(0);
    dashboard.groups_truncated = rows.len() > MAX_DASHBOARD_GROUPS as usize;
    rows.truncate(MAX_DASHBOARD_GROUPS as usize);
    dashboard.by_group = rows
        .into_iter()
        .map(|(id, name, total, online)| crate::DeviceCount {
            key: GroupRef { id: GroupId(n(id)), name },
            total: n(total),
            online: n(online),
        })
        .collect();
}

/// Fills in the groups of device list rows (one read for the page).
pub(crate) async fn attach_groups(store: &dyn GroupStore, items: &mut [crate::DeviceSummary]) -> Result<()> {
    if items.is_empty() {
        return Ok(());
    }
    let refs = store.group_refs_of(items.iter().map(|d| d.device.id).collect()).await?;
    let mut refs: std::collections::HashMap<DeviceId, Vec<GroupRef>> = refs.into_iter().collect();
    for item in items {
        item.groups = refs.remove(&item.device.id).unwrap_or_default();
    }
    Ok(())
}

/// Static device groups of an enterprise and their members (PRV-2).
#[async_trait]
pub trait GroupStore: Send + Sync + 'static {
    /// Creates a group. [`StoreError::AlreadyExists`] (`"group name"`) if the enterprise has a
    /// group of that name (ASCII case ignored); [`StoreError::LimitExceeded`] at
    /// [`MAX_GROUPS_PER_ENTERPRISE`]; [`StoreError::InvalidInput`] if [`NewGroup::validate`]
    /// refuses it or the enterprise does not exist.
    async fn create_group(&self, new: NewGroup) -> Result<Group>;
    /// A group with its member count.
    async fn group(&self, id: GroupId) -> Result<Option<Group>>;
    /// Groups of these enterprises (`None`: all), ordered by id, after `after`, at most `limit`
    /// (≤ [`MAX_GROUP_PAGE`]), with member counts.
    async fn list_groups(&self, enterprises: Option<Vec<EnterpriseId>>, after: u64, limit: u32) -> Result<Vec<Group>>;
    /// Changes a group's name or description; `None` if there is no such group.
    /// [`StoreError::AlreadyExists`] for a name taken in the enterprise.
    async fn edit_group(&self, id: GroupId, edit: GroupEdit, at: UnixMillis) -> Result<Option<Group>>;
    /// Deletes a group with its memberships and its place among the default groups (the guide
    /// removes the associations); what it removed, or `None`.
    async fn delete_group(&self, id: GroupId) -> Result<Option<DeletedGroup>>;
    /// Adds devices to a group, at the end of each device's list (lowest priority); devices in
    /// [`MAX_GROUPS_PER_DEVICE`] groups already are left out and counted. `None` if there is no
    /// such group. [`StoreError::InvalidInput`] (nothing changes) for an id that is not a device
    /// of the group's enterprise (the message names it); [`StoreError::LimitExceeded`] if a
    /// filter matches more than [`MAX_GROUP_MEMBER_CHANGE`].
    async fn add_group_members(&self, id: GroupId, targets: GroupTargets) -> Result<Option<MemberChange>>;
    /// Removes devices from a group (the others keep their order); as
    /// [`GroupStore::add_group_members`] for the targets.
    async fn remove_group_members(&self, id: GroupId, targets: GroupTargets) -> Result<Option<MemberChange>>;
    /// Makes the group the first of every member's list ("set to top priority"); the number of
    /// members, or `None` if there is no such group.
    async fn set_group_top_priority(&self, id: GroupId) -> Result<Option<u64>>;
    /// The device's groups, top priority first (empty for an unknown device). The contract the
    /// profile resolution uses.
    async fn device_groups(&self, device: DeviceId) -> Result<Vec<GroupId>>;
    /// The groups (id and name) of each of these devices, top priority first; devices without
    /// groups are left out. At most [`crate::MAX_DEVICE_PAGE`] devices.
    async fn group_refs_of(&self, devices: Vec<DeviceId>) -> Result<Vec<(DeviceId, Vec<GroupRef>)>>;
    /// Replaces the device's groups with this ordered list; the new list, or `None` if there is
    /// no such device. [`StoreError::InvalidInput`] (nothing changes) unless
    /// [`check_group_list`] passes and every group belongs to the device's enterprise.
    async fn set_device_groups(&self, device: DeviceId, groups: Vec<GroupId>) -> Result<Option<Vec<GroupRef>>>;
    /// The enterprise's default groups, in the order an auto-added device gets them.
    async fn default_groups(&self, enterprise: EnterpriseId) -> Result<Vec<GroupRef>>;
    /// Replaces the enterprise's default groups (an ordered list); as
    /// [`GroupStore::set_device_groups`] for the checks.
    async fn set_default_groups(&self, enterprise: EnterpriseId, groups: Vec<GroupId>) -> Result<Vec<GroupRef>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(ids: &[u64]) -> Vec<GroupId> {
        ids.iter().map(|&i| GroupId(i)).collect()
    }

    #[test]
    fn names_follow_the_guide_and_fit_a_csv_cell() {
        for good in ["EPGroup1", "Front desk", "lab-2.(east)[#3]", "a_b"] {
            check_group_name(good).expect(good);
        }
        for bad in ["", " lead", "trail ", "a|b", "a,b", "é", "tab\there", &"x".repeat(MAX_GROUP_NAME + 1)] {
            assert!(check_group_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(group_name_key("EPGroup1"), group_name_key("epgroup1"));
    }

    #[test]
    fn adds_skip_members_and_devices_at_the_limit() {
        let m = |d: u64, groups: u64, member: bool| Membership { device: DeviceId(d), groups, member };
        let (join, change) = plan_add(&[m(1, 0, false), m(2, 3, true), m(3, MAX_GROUPS_PER_DEVICE as u64, false)]);
        assert_eq!(join, vec![DeviceId(1)]);
        assert_eq!(change, MemberChange { matched: 3, changed: 1, unchanged: 1, at_limit: 1 });
    }

    #[test]
    fn top_priority_moves_one_group_first_and_keeps_the_rest() {
        assert_eq!(with_top_priority(&g(&[1, 2, 3]), GroupId(3)), g(&[3, 1, 2]));
        assert_eq!(with_top_priority(&g(&[1, 2]), GroupId(1)), g(&[1, 2]));
        assert_eq!(with_top_priority(&g(&[]), GroupId(9)), g(&[9]));
    }

    #[test]
    fn lists_are_bounded_and_without_repeats() {
        check_group_list(&g(&[1, 2])).expect("fine");
        assert!(check_group_list(&g(&[1, 2, 1])).is_err());
        let many: Vec<u64> = (1..=MAX_GROUPS_PER_DEVICE as u64 + 1).collect();
        assert!(check_group_list(&g(&many)).is_err());
        assert!(check_group_list(&[GroupId(u64::MAX)]).is_err());
    }

    #[test]
    fn import_rows_overwrite_or_merge_groups() {
        let cur = g(&[1, 2]);
        type Case<'a> = (ImportMode, Option<&'a [GroupId]>, &'a [u64], &'a [u64]);
        let cases: [Case<'_>; 6] = [
            (ImportMode::Overwrite, Some(&cur), &[3, 1], &[3, 1]),
            (ImportMode::Merge, Some(&cur), &[3, 1], &[1, 2, 3]),
            (ImportMode::Create, Some(&cur), &[3], &[1, 2]),
            (ImportMode::Create, None, &[3, 3, 4], &[3, 4]),
            (ImportMode::Overwrite, Some(&cur), &[], &[]),
            (ImportMode::Merge, Some(&cur), &[], &[1, 2]),
        ];
        for (mode, current, wanted, want) in cases {
            let got = plan_import_groups(mode, current, &g(wanted)).expect("plan");
            assert_eq!(got, g(want), "{mode:?} {current:?} {wanted:?}");
        }
        let full: Vec<u64> = (1..=MAX_GROUPS_PER_DEVICE as u64).collect();
        assert!(plan_import_groups(ImportMode::Merge, Some(&g(&full)), &g(&[99])).is_err());
    }

    #[test]
    fn import_names_resolve_case_insensitively_or_name_the_unknown_one() {
        let known: std::collections::HashMap<String, GroupId> =
            [("epgroup1".to_owned(), GroupId(1)), ("lab".to_owned(), GroupId(2))].into();
        let names = |n: &[&str]| n.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(resolve_group_names(&names(&["Lab", "EPGroup1"]), &known), Ok(g(&[2, 1])));
        let err = resolve_group_names(&names(&["Lab", "Nope"]), &known).expect_err("unknown");
        assert!(err.contains("\"Nope\""), "{err}");
    }

    #[test]
    fn group_cells_split_on_bars() {
        assert_eq!(parse_group_cell("EPGroup1|EPGroup2").expect("two"), ["EPGroup1", "EPGroup2"]);
        assert_eq!(parse_group_cell(" a | | b ").expect("trimmed"), ["a", "b"]);
        assert!(parse_group_cell("").expect("none").is_empty());
        assert!(parse_group_cell("ok|bad,name").is_err());
    }
}
