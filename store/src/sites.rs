//! Sites (`SiteStore`, PRV-1): each enterprise's tree of sites with public and private
//! subnets, the default sites Internet and Intranet, a device's site by subnet matching
//! ([`matcher`]), and the pure checks of a site change ([`plan_site_change`]); the backends only
//! read and write rows.
//!
//! Choices where the issue is silent:
//! - A site's subnets are public subnets, each with its private subnets (none: the public subnet
//!   takes every private address), as in the guide's CSV (`public-subnet-list` with a
//!   `private-subnet-list` inside). Each (public, private) pair is a matcher entry.
//! - Names are unique per enterprise (exactly, case-sensitive), so that a CSV import can update a
//!   site by its name as the guide's does.
//! - Overlap: the same (public, private) pair twice is refused naming the site that has it; a
//!   more specific prefix inside another site's is allowed and wins (longest-prefix matching).
//! - The tree is organisational (profiles and the device list filter follow it); matching is
//!   over every site's entries, whatever its place in the tree.
//! - Internet cannot be edited, moved, deleted or have child sites; Intranet cannot be deleted
//!   but is otherwise a site like any other (its subnets start empty: the guide's placeholder of
//!   zeros matches nothing).

pub mod matcher;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use fleetpulse_proto::{DeviceId, EnterpriseId, SiteId, UnixMillis};
use serde::{Deserialize, Serialize};

pub use matcher::{Cidr, DefaultSites, SiteEntry, SiteMatcher};

use crate::{Result, StoreError};

/// Most sites of one enterprise, Internet and Intranet included.
pub const MAX_SITES: usize = 2_000;

/// Most public subnets of one site.
pub const MAX_PUBLIC_SUBNETS: usize = 32;

/// Most private subnets of one site (over all its public subnets).
pub const MAX_PRIVATE_SUBNETS: usize = 128;

/// Deepest site tree (a root is at depth 1).
pub const MAX_SITE_DEPTH: usize = 16;

/// Longest site name, in characters.
pub const MAX_SITE_NAME: usize = 64;

/// Longest description or location, in characters.
pub const MAX_SITE_TEXT: usize = 256;

/// Most enterprises whose compiled matcher is kept in memory (beyond: the cache starts over).
pub const MAX_CACHED_MATCHERS: usize = 4_096;

/// Most rows one [`SiteStore::upsert_sites`] call applies (one transaction, one re-match).
pub const MAX_SITE_UPSERTS: usize = 500;

/// What a site is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SiteKind {
    /// The default site of devices whose global public address matches no site; fixed.
    Internet,
    /// The default site of devices whose internal public address matches no site.
    Intranet,
    /// A site an admin made.
    Custom,
}

impl SiteKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            SiteKind::Internet => "internet",
            SiteKind::Intranet => "intranet",
            SiteKind::Custom => "custom",
        }
    }

    /// The kind of a stored name (unknown names read as custom).
    pub fn parse(s: &str) -> SiteKind {
        match s {
            "internet" => SiteKind::Internet,
            "intranet" => SiteKind::Intranet,
            _ => SiteKind::Custom,
        }
    }
}

/// A public subnet of a site and the private subnets inside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteSubnet {
    /// The public network devices are seen from.
    pub public: Cidr,
    /// Private networks behind it; empty: any private address.
    #[serde(default)]
    pub private: Vec<Cidr>,
}

/// A site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Site {
    /// Its id.
    pub id: SiteId,
    /// Its enterprise.
    pub enterprise_id: EnterpriseId,
    /// Its parent site; `None`: a root.
    pub parent_id: Option<SiteId>,
    /// Internet, Intranet or an admin's.
    pub kind: SiteKind,
    /// Unique in the enterprise.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Where it is (free text).
    pub location: String,
    /// Its subnets.
    pub subnets: Vec<SiteSubnet>,
    /// Created.
    pub created_at: UnixMillis,
    /// Last changed.
    pub updated_at: UnixMillis,
}

impl Site {
    /// The matcher entries of the site.
    pub fn entries(&self) -> impl Iterator<Item = SiteEntry> + '_ {
        self.subnets.iter().flat_map(move |s| {
            let any = s.private.is_empty().then_some(SiteEntry { site: self.id, public: s.public, private: None });
            any.into_iter().chain(s.private.iter().map(move |p| SiteEntry {
                site: self.id,
                public: s.public,
                private: Some(*p),
            }))
        })
    }
}

/// The fields of a new site ([`SiteStore::create_site`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSite {
    /// Its enterprise.
    pub enterprise_id: EnterpriseId,
    /// Its parent (a site of the same enterprise), or a root.
    pub parent_id: Option<SiteId>,
    /// Its name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Location.
    pub location: String,
    /// Subnets.
    pub subnets: Vec<SiteSubnet>,
    /// Now.
    pub at: UnixMillis,
}

/// A change to a site ([`SiteStore::update_site`]); `None` keeps a field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SiteEdit {
    /// New parent (`Some(None)`: make it a root).
    pub parent_id: Option<Option<SiteId>>,
    /// New name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New location.
    pub location: Option<String>,
    /// New subnets (all of them).
    pub subnets: Option<Vec<SiteSubnet>>,
}

/// A device's site as the device list and detail show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct SiteRef {
    /// The site.
    pub id: SiteId,
    /// Its name.
    pub name: String,
}

impl SiteRef {
    /// From the `site_id` column and the site's name (`None` when either is missing).
    pub(crate) fn from_columns(id: Option<u64>, name: Option<String>) -> Option<SiteRef> {
        Some(SiteRef { id: SiteId(id?), name: name? })
    }
}

/// Devices and online devices of one site ([`SiteStore::site_device_counts`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct SiteCount {
    /// The site.
    pub site_id: SiteId,
    /// Its name.
    pub name: String,
    /// Devices whose site it is.
    pub total: u64,
    /// Of them online.
    pub online: u64,
}

/// What a site change does: the site as it will be stored ([`plan_site_change`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SiteChange {
    /// A new site (its id is 0 until stored).
    Create(NewSite),
    /// An edit of an existing site.
    Update(SiteId, SiteEdit, UnixMillis),
}

/// One row of a site import: creates the site of that name or overwrites it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteUpsert {
    /// Line of the file the row came from (for its refusal).
    pub line: u64,
    /// The site's name (an existing site of that name is overwritten).
    pub name: String,
    /// Its parent by name (a site of the enterprise, maybe created by an earlier row); `None`:
    /// a new site is a root, an existing one keeps its parent.
    pub parent_name: Option<String>,
    /// Description.
    pub description: String,
    /// Location.
    pub location: String,
    /// Subnets.
    pub subnets: Vec<SiteSubnet>,
}

/// What one [`SiteUpsert`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SiteUpserted {
    /// A new site.
    Created(Site),
    /// An existing site overwritten.
    Updated(Site),
    /// Refused; nothing changed for this row.
    Refused {
        /// The row's line.
        line: u64,
        /// The column at fault: `parent_name`, `subnets` or `site_name`.
        column: &'static str,
        /// Why.
        reason: String,
    },
}

/// The change an import row makes to the enterprise's `current` sites (parents by name, among
/// them sites created by earlier rows) and the sites as they will be ([`plan_site_change`]), or
/// the refusal (column, reason).
pub fn plan_upsert(
    current: &[Site],
    enterprise: EnterpriseId,
    row: &SiteUpsert,
    now: UnixMillis,
) -> std::result::Result<(SiteChange, Vec<Site>), (&'static str, String)> {
    let parent = match &row.parent_name {
        None => None,
        Some(p) => match current.iter().find(|s| &s.name == p) {
            Some(s) => Some(s.id),
            None => return Err(("parent_name", format!("no site is named {p:?}"))),
        },
    };
    let change = match current.iter().find(|s| s.name == row.name) {
        Some(existing) => SiteChange::Update(
            existing.id,
            SiteEdit {
                parent_id: row.parent_name.is_some().then_some(parent),
                name: None,
                description: Some(row.description.clone()),
                location: Some(row.location.clone()),
                subnets: Some(row.subnets.clone()),
            },
            now,
        ),
        None => SiteChange::Create(NewSite {
            enterprise_id: enterprise,
            parent_id: parent,
            name: row.name.clone(),
            description: row.description.clone(),
            location: row.location.clone(),
            subnets: row.subnets.clone(),
            at: now,
        }),
    };
    match plan_site_change(current, &change) {
        Ok(planned) => Ok((change, planned)),
        Err(StoreError::InvalidInput(reason) | StoreError::LimitExceeded(reason)) => {
            let column = if reason.contains("subnet") { "subnets" } else { "site_name" };
            Err((column, reason))
        }
        Err(other) => Err(("", other.to_string())),
    }
}

/// Sites of every enterprise.
#[async_trait]
pub trait SiteStore: Send + Sync + 'static {
    /// The enterprise's sites, parents before children, then by name.
    async fn list_sites(&self, enterprise: EnterpriseId) -> Result<Vec<Site>>;
    /// One site.
    async fn site(&self, id: SiteId) -> Result<Option<Site>>;
    /// Creates a site ([`plan_site_change`] says what is refused) and moves the enterprise's
    /// devices its subnets now match.
    async fn create_site(&self, new: NewSite) -> Result<Site>;
    /// Edits a site; `None` when it does not exist. Devices are re-matched when subnets change.
    async fn update_site(&self, id: SiteId, edit: SiteEdit, now: UnixMillis) -> Result<Option<Site>>;
    /// Applies import rows in order in one transaction (at most [`MAX_SITE_UPSERTS`]; more is
    /// [`StoreError::LimitExceeded`]): each creates or overwrites a site ([`plan_upsert`]) or is
    /// refused alone; the enterprise's devices are re-matched once, after the last row.
    async fn upsert_sites(
        &self,
        enterprise: EnterpriseId,
        rows: Vec<SiteUpsert>,
        now: UnixMillis,
    ) -> Result<Vec<SiteUpserted>>;
    /// Deletes a site: refused for Internet and Intranet and while it has child sites (named);
    /// its devices move to the site they match without it. `false` when it does not exist.
    async fn delete_site(&self, id: SiteId) -> Result<bool>;
    /// Devices per site of the enterprise (every site listed, also with no devices).
    async fn site_device_counts(&self, enterprise: EnterpriseId) -> Result<Vec<SiteCount>>;
    /// The device's site first, then its ancestors up to the root; empty if it has none.
    async fn device_site_path(&self, device: DeviceId) -> Result<Vec<SiteId>>;
    /// The site and every site below it (for the device list's filter); empty when the site
    /// does not exist.
    async fn site_subtree(&self, id: SiteId) -> Result<Vec<SiteId>>;
}

/// [`StoreError::InvalidInput`] unless the text fields and subnet counts are in bounds.
fn check_fields(name: &str, description: &str, location: &str, subnets: &[SiteSubnet]) -> Result<()> {
    if name.trim().is_empty() {
        return Err(StoreError::InvalidInput("a site needs a name".into()));
    }
    if name.trim() != name {
        return Err(StoreError::InvalidInput("a site name has no leading or trailing spaces".into()));
    }
    crate::model::check_text("name", name, MAX_SITE_NAME)?;
    crate::model::check_text("description", description, MAX_SITE_TEXT)?;
    crate::model::check_text("location", location, MAX_SITE_TEXT)?;
    if subnets.len() > MAX_PUBLIC_SUBNETS {
        return Err(StoreError::InvalidInput(format!(
            "{} public subnets (a site has at most {MAX_PUBLIC_SUBNETS})",
            subnets.len()
        )));
    }
    let private: usize = subnets.iter().map(|s| s.private.len()).sum();
    if private > MAX_PRIVATE_SUBNETS {
        return Err(StoreError::InvalidInput(format!(
            "{private} private subnets (a site has at most {MAX_PRIVATE_SUBNETS})"
        )));
    }
    Ok(())
}

fn describe(site: &Site) -> String {
    format!("site {:?} (id {})", site.name, site.id)
}

/// The default sites of an enterprise's sites.
pub fn default_sites(sites: &[Site]) -> Result<DefaultSites> {
    let find = |kind| {
        sites
            .iter()
            .find(|s| s.kind == kind)
            .map(|s| s.id)
            .ok_or_else(|| StoreError::Backend(format!("the enterprise has no {} site", kind.as_str())))
    };
    Ok(DefaultSites { internet: find(SiteKind::Internet)?, intranet: find(SiteKind::Intranet)? })
}

/// Compiles an enterprise's sites; a repeated entry is refused naming the site that has it
/// (the other one than `changed`, the site being created or edited).
pub fn compile(sites: &[Site], changed: Option<SiteId>) -> Result<SiteMatcher> {
    let defaults = default_sites(sites)?;
    SiteMatcher::build(defaults, sites.iter().flat_map(Site::entries)).map_err(|c| {
        let private = c.private.map(|p| format!(" with private subnet {p}")).unwrap_or_default();
        if c.first == c.second {
            return StoreError::InvalidInput(format!("public subnet {}{private} is given twice", c.public));
        }
        let other = if Some(c.first) == changed { c.second } else { c.first };
        let other = sites.iter().find(|s| s.id == other).map(describe).unwrap_or_else(|| format!("site {other}"));
        StoreError::InvalidInput(format!(
            "public subnet {}{private} overlaps {other}, which has the same subnet",
            c.public
        ))
    })
}

/// Checks a site change against the enterprise's current sites and answers the enterprise's
/// sites as they will be (the changed or new one included; a new one with id 0). Refused
/// ([`StoreError::InvalidInput`], nothing changed): bad fields, a name taken (the site named), a
/// parent of another enterprise or missing, a cycle or a tree deeper than [`MAX_SITE_DEPTH`], a
/// child under Internet, any change to Internet, more than [`MAX_SITES`] sites, and a subnet
/// another site has (named).
pub fn plan_site_change(current: &[Site], change: &SiteChange) -> Result<Vec<Site>> {
    let mut sites = current.to_vec();
    let changed = match change {
        SiteChange::Create(new) => {
            if sites.len() >= MAX_SITES {
                return Err(StoreError::LimitExceeded(format!("an enterprise has at most {MAX_SITES} sites")));
            }
            sites.push(Site {
                id: SiteId(0),
                enterprise_id: new.enterprise_id,
                parent_id: new.parent_id,
                kind: SiteKind::Custom,
                name: new.name.clone(),
                description: new.description.clone(),
                location: new.location.clone(),
                subnets: new.subnets.clone(),
                created_at: new.at,
                updated_at: new.at,
            });
            sites.len() - 1
        }
        SiteChange::Update(id, edit, now) => {
            let i = sites
                .iter()
                .position(|s| s.id == *id)
                .ok_or_else(|| StoreError::InvalidInput(format!("site {id} does not exist")))?;
            let s = &mut sites[i];
            if s.kind == SiteKind::Internet {
                return Err(StoreError::InvalidInput("the Internet site cannot be changed".into()));
            }
            if let Some(p) = edit.parent_id {
                s.parent_id = p;
            }
            if let Some(n) = &edit.name {
                s.name = n.clone();
            }
            if let Some(d) = &edit.description {
                s.description = d.clone();
            }
            if let Some(l) = &edit.location {
                s.location = l.clone();
            }
            if let Some(sub) = &edit.subnets {
                s.subnets = sub.clone();
            }
            s.updated_at = *now;
            i
        }
    };
    let site = &sites[changed];
    check_fields(&site.name, &site.description, &site.location, &site.subnets)?;
    if let Some(other) = sites.iter().enumerate().find(|(j, s)| *j != changed && s.name == site.name) {
        return Err(StoreError::InvalidInput(format!("the name {:?} is taken by {}", site.name, describe(other.1))));
    }
    if let Some(parent) = site.parent_id {
        let Some(p) = sites.iter().find(|s| s.id == parent && parent != SiteId(0)) else {
            return Err(StoreError::InvalidInput(format!("parent site {parent} does not exist")));
        };
        if p.kind == SiteKind::Internet {
            return Err(StoreError::InvalidInput("the Internet site cannot have child sites".into()));
        }
        // Walk up from the changed site: a cycle comes back to it, depth is bounded.
        let by_id: HashMap<SiteId, &Site> = sites.iter().map(|s| (s.id, s)).collect();
        let mut depth = 1;
        let mut at = site.parent_id;
        while let Some(p) = at {
            if p == site.id {
                return Err(StoreError::InvalidInput(format!(
                    "site {:?} cannot be placed under its own descendant",
                    site.name
                )));
            }
            depth += 1;
            if depth > MAX_SITE_DEPTH {
                return Err(StoreError::InvalidInput(format!("a site tree has at most {MAX_SITE_DEPTH} levels")));
            }
            at = by_id.get(&p).and_then(|s| s.parent_id);
        }
        // The changed site's own subtree must fit under its new place too.
        let below = subtree_depth(&sites, site.id);
        if depth + below - 1 > MAX_SITE_DEPTH {
            return Err(StoreError::InvalidInput(format!("a site tree has at most {MAX_SITE_DEPTH} levels")));
        }
    }
    compile(&sites, Some(sites[changed].id))?;
    Ok(sites)
}

/// Levels of the subtree under `root` (1 for a leaf).
fn subtree_depth(sites: &[Site], root: SiteId) -> usize {
    let mut children: HashMap<SiteId, Vec<SiteId>> = HashMap::new();
    for s in sites {
        if let Some(p) = s.parent_id {
            children.entry(p).or_default().push(s.id);
        }
    }
    let mut depth = 0;
    let mut level = vec![root];
    let mut seen = HashSet::new();
    while !level.is_empty() && depth <= MAX_SITE_DEPTH {
        depth += 1;
        level = level
            .iter()
            .flat_map(|s| children.get(s).cloned().unwrap_or_default())
            .filter(|s| seen.insert(*s))
            .collect();
    }
    depth
}

/// The site and its descendants.
pub fn subtree(sites: &[Site], root: SiteId) -> Vec<SiteId> {
    if !sites.iter().any(|s| s.id == root) {
        return Vec::new();
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let at = out[i];
        out.extend(sites.iter().filter(|s| s.parent_id == Some(at)).map(|s| s.id));
        i += 1;
    }
    out
}

/// Refuses deleting the site: a default site, or one with children (named, at most 5).
pub fn check_delete(sites: &[Site], id: SiteId) -> Result<()> {
    let Some(site) = sites.iter().find(|s| s.id == id) else { return Ok(()) };
    if site.kind != SiteKind::Custom {
        return Err(StoreError::InvalidInput(format!("the {} site cannot be deleted", site.name)));
    }
    let children: Vec<&Site> = sites.iter().filter(|s| s.parent_id == Some(id)).collect();
    if !children.is_empty() {
        let names: Vec<String> = children.iter().take(5).map(|c| format!("{:?}", c.name)).collect();
        let more = if children.len() > 5 { format!(" and {} more", children.len() - 5) } else { String::new() };
        return Err(StoreError::InvalidInput(format!(
            "site {:?} has child sites: {}{more}; delete or move them first",
            site.name,
            names.join(", ")
        )));
    }
    Ok(())
}

/// Sorts sites parents first (breadth by depth), then by name.
pub fn tree_order(sites: &mut [Site]) {
    let depth_of = |sites: &[Site], s: &Site| {
        let by_id: HashMap<SiteId, Option<SiteId>> = sites.iter().map(|s| (s.id, s.parent_id)).collect();
        let mut d = 0;
        let mut at = s.parent_id;
        while let Some(p) = at {
            d += 1;
            if d > MAX_SITE_DEPTH {
                break;
            }
            at = by_id.get(&p).copied().flatten();
        }
        d
    };
    let depths: HashMap<SiteId, usize> = sites.iter().map(|s| (s.id, depth_of(sites, s))).collect();
    sites.sort_by(|a, b| depths[&a.id].cmp(&depths[&b.id]).then_with(|| a.name.cmp(&b.name)).then(a.id.cmp(&b.id)));
}

/// Devices per site of an enterprise (`?1`), every site listed: one indexed GROUP BY over
/// `devices(enterprise_id, site_id, online)`.
pub(crate) const SITE_COUNTS_SQLITE: &str = "SELECT s.id, s.name, COALESCE(d.total, 0), COALESCE(d.online, 0) FROM sites s \
     LEFT JOIN (SELECT site_id, count(*) AS total, sum(online) AS online FROM devices \
     WHERE enterprise_id = ?1 AND site_id IS NOT NULL GROUP BY site_id) d ON d.site_id = s.id \
     WHERE s.enterprise_id = ?1 ORDER BY COALESCE(d.total, 0) DESC, s.name";

/// [`SITE_COUNTS_SQLITE`] on PostgreSQL.
pub(crate) const SITE_COUNTS_PG: &str = "SELECT s.id, s.name, COALESCE(d.total, 0)::BIGINT, COALESCE(d.online, 0)::BIGINT \
     FROM sites s LEFT JOIN (SELECT site_id, count(*) AS total, sum(online) AS online FROM devices \
     WHERE enterprise_id = $1 AND site_id IS NOT NULL GROUP BY site_id) d ON d.site_id = s.id \
     WHERE s.enterprise_id = $1 ORDER BY COALESCE(d.total, 0) DESC, s.name";

/// A device's (`?1`) site and its ancestors, nearest first (bounded by [`MAX_SITE_DEPTH`]).
pub(crate) const SITE_PATH_SQLITE: &str = "WITH RECURSIVE path(id, parent_id, depth) AS ( \
     SELECT s.id, s.parent_id, 0 FROM devices d JOIN sites s ON s.id = d.site_id WHERE d.id = ?1 \
     UNION ALL SELECT s.id, s.parent_id, p.depth + 1 FROM sites s JOIN path p ON s.id = p.parent_id WHERE p.depth < 16) \
     SELECT id FROM path ORDER BY depth";

/// [`SITE_PATH_SQLITE`] on PostgreSQL.
pub(crate) const SITE_PATH_PG: &str = "WITH RECURSIVE path(id, parent_id, depth) AS ( \
     SELECT s.id, s.parent_id, 0 FROM devices d JOIN sites s ON s.id = d.site_id WHERE d.id = $1 \
     UNION ALL SELECT s.id, s.parent_id, p.depth + 1 FROM sites s JOIN path p ON s.id = p.parent_id WHERE p.depth < 16) \
     SELECT id FROM path ORDER BY depth";

/// Encodes subnets for storage (JSON).
pub(crate) fn encode_subnets(subnets: &[SiteSubnet]) -> Result<String> {
    serde_json::to_string(subnets).map_err(|e| StoreError::Backend(e.to_string()))
}

/// Decodes stored subnets (a damaged value reads as none, logged).
pub(crate) fn decode_subnets(s: &str) -> Vec<SiteSubnet> {
    serde_json::from_str(s).unwrap_or_else(|error| {
        tracing::warn!(message = "Stored site subnets do not decode.", %error);
        Vec::new()
    })
}

/// The compiled matcher of each enterprise, kept by a backend and dropped when the
/// enterprise's sites change.
#[derive(Debug, Default)]
pub(crate) struct MatcherCache {
    map: Mutex<HashMap<EnterpriseId, Arc<SiteMatcher>>>,
}

impl MatcherCache {
    pub(crate) fn get(&self, enterprise: EnterpriseId) -> Option<Arc<SiteMatcher>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).get(&enterprise).cloned()
    }

    pub(crate) fn put(&self, enterprise: EnterpriseId, matcher: Arc<SiteMatcher>) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_CACHED_MATCHERS {
            map.clear();
        }
        map.insert(enterprise, matcher);
    }

    pub(crate) fn forget(&self, enterprise: EnterpriseId) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).remove(&enterprise);
    }

    /// Forgets every matcher (after a site change that failed: the cache may hold what it
    /// compiled from rows that were never committed).
    pub(crate) fn clear(&self) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// The site of stored addresses (`''`: unknown): `None` without a parseable public address.
pub(crate) fn site_of(matcher: &SiteMatcher, public_ip: &str, private_ip: &str) -> Option<SiteId> {
    let public = public_ip.parse().ok()?;
    Some(matcher.lookup(public, private_ip.parse().ok()))
}

#[cfg(test)]
mod tests;
