//! Sites on SQLite ([`SiteStore`]): site rows (subnets as JSON), the compiled matcher of each
//! enterprise cached beside the store, and devices re-matched when sites or addresses change.

use std::sync::Arc;

use async_trait::async_trait;
use fleetpulse_proto::{DeviceId, EnterpriseId, SiteId, UnixMillis};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::EmbeddedStore;
use crate::sites::{
    MAX_SITE_UPSERTS, MatcherCache, SiteChange, check_delete, compile, decode_subnets, encode_subnets,
    plan_site_change, plan_upsert, site_of, subtree, tree_order,
};
use crate::*;

const COLUMNS: &str =
    "id, enterprise_id, parent_id, kind, name, description, location, subnets, created_at, updated_at";

fn site_from_row(r: &Row<'_>) -> rusqlite::Result<Site> {
    let kind: String = r.get(3)?;
    let subnets: String = r.get(7)?;
    Ok(Site {
        id: SiteId(r.get(0)?),
        enterprise_id: EnterpriseId(r.get(1)?),
        parent_id: r.get::<_, Option<u64>>(2)?.map(SiteId),
        kind: SiteKind::parse(&kind),
        name: r.get(4)?,
        description: r.get(5)?,
        location: r.get(6)?,
        subnets: decode_subnets(&subnets),
        created_at: UnixMillis(r.get(8)?),
        updated_at: UnixMillis(r.get(9)?),
    })
}

fn load_sites(c: &Connection, enterprise: EnterpriseId) -> Result<Vec<Site>> {
    let Ok(e) = i64::try_from(enterprise.0) else { return Ok(Vec::new()) };
    let mut st = c.prepare_cached(&format!("SELECT {COLUMNS} FROM sites WHERE enterprise_id = ?1"))?;
    let rows = st.query_map([e], site_from_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

fn site_by_id(c: &Connection, id: SiteId) -> Result<Option<Site>> {
    let Ok(id) = i64::try_from(id.0) else { return Ok(None) };
    Ok(c.prepare_cached(&format!("SELECT {COLUMNS} FROM sites WHERE id = ?1"))?
        .query_row([id], site_from_row)
        .optional()?)
}

/// The enterprise's compiled matcher, from the cache or compiled from its rows; `None` (logged)
/// when its sites cannot be compiled (no default sites: an enterprise the migration missed).
pub(super) fn matcher_for(
    c: &Connection,
    cache: &MatcherCache,
    enterprise: EnterpriseId,
) -> Result<Option<Arc<SiteMatcher>>> {
    if let Some(m) = cache.get(enterprise) {
        return Ok(Some(m));
    }
    match compile(&load_sites(c, enterprise)?, None) {
        Ok(m) => {
            let m = Arc::new(m);
            cache.put(enterprise, m.clone());
            Ok(Some(m))
        }
        Err(error) => {
            tracing::warn!(message = "Sites of an enterprise do not compile; devices keep their site.", enterprise = enterprise.0, %error);
            Ok(None)
        }
    }
}

/// Re-matches every device of the enterprise and writes the sites that changed (one pass in
/// the caller's transaction); answers how many moved.
fn rematch_devices(c: &Connection, enterprise: EnterpriseId, matcher: &SiteMatcher) -> Result<u64> {
    let Ok(e) = i64::try_from(enterprise.0) else { return Ok(0) };
    let mut changed: Vec<(i64, Option<u64>)> = Vec::new();
    {
        let mut st =
            c.prepare_cached("SELECT id, public_ip, private_ip, site_id FROM devices WHERE enterprise_id = ?1")?;
        let mut rows = st.query([e])?;
        while let Some(r) = rows.next()? {
            let (public, private): (String, String) = (r.get(1)?, r.get(2)?);
            let now: Option<u64> = r.get(3)?;
            let site = site_of(matcher, &public, &private).map(|s| s.0);
            if site != now {
                changed.push((r.get(0)?, site));
            }
        }
    }
    let mut update = c.prepare_cached("UPDATE devices SET site_id = ?2 WHERE id = ?1")?;
    for (id, site) in &changed {
        update.execute(params![id, site])?;
    }
    Ok(changed.len() as u64)
}

/// The site of each reported device, from its enterprise's matcher (for the snapshot writer).
pub(super) fn site_for_report(
    c: &Connection,
    cache: &MatcherCache,
    device: i64,
    public_ip: &str,
    private_ip: &str,
) -> Result<Option<u64>> {
    let enterprise: Option<u64> = c
        .prepare_cached("SELECT enterprise_id FROM devices WHERE id = ?1")?
        .query_row([device], |r| r.get(0))
        .optional()?;
    let Some(enterprise) = enterprise else { return Ok(None) };
    let Some(matcher) = matcher_for(c, cache, EnterpriseId(enterprise))? else { return Ok(None) };
    Ok(site_of(&matcher, public_ip, private_ip).map(|s| s.0))
}

/// Recompiles the enterprise's matcher from its (changed) rows, caches it and re-matches its
/// devices.
fn after_change(c: &Connection, cache: &MatcherCache, enterprise: EnterpriseId) -> Result<()> {
    cache.forget(enterprise);
    let matcher = Arc::new(compile(&load_sites(c, enterprise)?, None)?);
    rematch_devices(c, enterprise, &matcher)?;
    cache.put(enterprise, matcher);
    Ok(())
}

/// Inserts a planned new site; answers its id.
fn insert_site(c: &Connection, new: &NewSite) -> Result<SiteId> {
    c.prepare_cached(
        "INSERT INTO sites (enterprise_id, parent_id, kind, name, description, location, subnets, created_at, \
         updated_at) VALUES (?1, ?2, 'custom', ?3, ?4, ?5, ?6, ?7, ?7)",
    )?
    .execute(params![
        db(new.enterprise_id.0)?,
        new.parent_id.map(|p| db(p.0)).transpose()?,
        new.name,
        new.description,
        new.location,
        encode_subnets(&new.subnets)?,
        new.at.0
    ])?;
    Ok(SiteId(c.last_insert_rowid() as u64))
}

/// Writes a planned site's fields over its row.
fn overwrite_site(c: &Connection, s: &Site) -> Result<()> {
    c.prepare_cached(
        "UPDATE sites SET parent_id = ?2, name = ?3, description = ?4, location = ?5, subnets = ?6, \
         updated_at = ?7 WHERE id = ?1",
    )?
    .execute(params![
        db(s.id.0)?,
        s.parent_id.map(|p| db(p.0)).transpose()?,
        s.name,
        s.description,
        s.location,
        encode_subnets(&s.subnets)?,
        s.updated_at.0
    ])?;
    Ok(())
}

/// [`SiteStore::upsert_sites`] in the writer's transaction: rows planned against the sites as
/// the earlier rows left them, one re-match at the end.
fn upsert_in(
    c: &Connection,
    cache: &MatcherCache,
    enterprise: EnterpriseId,
    rows: &[SiteUpsert],
    now: UnixMillis,
) -> Result<Vec<SiteUpserted>> {
    let mut current = load_sites(c, enterprise)?;
    if current.is_empty() {
        return Err(StoreError::InvalidInput(format!("enterprise {enterprise} does not exist")));
    }
    let mut out = Vec::with_capacity(rows.len());
    let mut changed = false;
    for row in rows {
        match plan_upsert(&current, enterprise, row, now) {
            Err((column, reason)) => out.push(SiteUpserted::Refused { line: row.line, column, reason }),
            Ok((SiteChange::Create(new), mut planned)) => {
                let id = insert_site(c, &new)?;
                let site = planned.last_mut().expect("a created site is planned last");
                site.id = id;
                out.push(SiteUpserted::Created(site.clone()));
                current = planned;
                changed = true;
            }
            Ok((SiteChange::Update(id, _, _), planned)) => {
                let site = planned.iter().find(|s| s.id == id).expect("an updated site is planned").clone();
                overwrite_site(c, &site)?;
                out.push(SiteUpserted::Updated(site));
                current = planned;
                changed = true;
            }
        }
    }
    if changed {
        after_change(c, cache, enterprise)?;
    }
    Ok(out)
}

fn db(id: u64) -> Result<i64> {
    i64::try_from(id).map_err(|_| StoreError::InvalidInput(format!("id {id} beyond i64")))
}

#[async_trait]
impl SiteStore for EmbeddedStore {
    async fn list_sites(&self, enterprise: EnterpriseId) -> Result<Vec<Site>> {
        let mut sites = self.read(move |c| load_sites(c, enterprise)).await?;
        tree_order(&mut sites);
        Ok(sites)
    }

    async fn site(&self, id: SiteId) -> Result<Option<Site>> {
        self.read(move |c| site_by_id(c, id)).await
    }

    async fn create_site(&self, new: NewSite) -> Result<Site> {
        let cache = self.site_matchers.clone();
        let enterprise = new.enterprise_id;
        let site = self
            .write(1, move |c| {
                let current = load_sites(c, new.enterprise_id)?;
                if current.is_empty() {
                    return Err(StoreError::InvalidInput(format!("enterprise {} does not exist", new.enterprise_id)));
                }
                plan_site_change(&current, &SiteChange::Create(new.clone()))?;
                let id = insert_site(c, &new)?;
                after_change(c, &cache, new.enterprise_id)?;
                site_by_id(c, id)?.ok_or_else(|| StoreError::Backend("the new site is gone".into()))
            })
            .await;
        if site.is_ok() {
            self.site_matchers.forget(enterprise);
        } else {
            self.site_matchers.clear();
        }
        site
    }

    async fn update_site(&self, id: SiteId, edit: SiteEdit, now: UnixMillis) -> Result<Option<Site>> {
        let cache = self.site_matchers.clone();
        let site = self
            .write(1, move |c| {
                let Some(site) = site_by_id(c, id)? else { return Ok(None) };
                let current = load_sites(c, site.enterprise_id)?;
                let planned = plan_site_change(&current, &SiteChange::Update(id, edit.clone(), now))?;
                let Some(s) = planned.iter().find(|s| s.id == id) else { return Ok(None) };
                c.prepare_cached(
                    "UPDATE sites SET parent_id = ?2, name = ?3, description = ?4, location = ?5, subnets = ?6, \
                     updated_at = ?7 WHERE id = ?1",
                )?
                .execute(params![
                    db(id.0)?,
                    s.parent_id.map(|p| db(p.0)).transpose()?,
                    s.name,
                    s.description,
                    s.location,
                    encode_subnets(&s.subnets)?,
                    now.0
                ])?;
                if edit.subnets.is_some() {
                    after_change(c, &cache, site.enterprise_id)?;
                }
                site_by_id(c, id)
            })
            .await;
        match &site {
            Ok(Some(s)) => self.site_matchers.forget(s.enterprise_id),
            Ok(None) => {}
            Err(_) => self.site_matchers.clear(),
        }
        site
    }

    async fn upsert_sites(
        &self,
        enterprise: EnterpriseId,
        rows: Vec<SiteUpsert>,
        now: UnixMillis,
    ) -> Result<Vec<SiteUpserted>> {
        if rows.len() > MAX_SITE_UPSERTS {
            return Err(StoreError::LimitExceeded(format!("at most {MAX_SITE_UPSERTS} site rows per call")));
        }
        let cache = self.site_matchers.clone();
        let n = rows.len().max(1);
        let done = self.write(n, move |c| upsert_in(c, &cache, enterprise, &rows, now)).await;
        if done.is_ok() {
            self.site_matchers.forget(enterprise);
        } else {
            self.site_matchers.clear();
        }
        done
    }

    async fn delete_site(&self, id: SiteId) -> Result<bool> {
        let cache = self.site_matchers.clone();
        let deleted = self
            .write(1, move |c| {
                let Some(site) = site_by_id(c, id)? else { return Ok(None) };
                let current = load_sites(c, site.enterprise_id)?;
                check_delete(&current, id)?;
                // Its devices first (no foreign key holds them), then the row, then re-match.
                c.prepare_cached("UPDATE devices SET site_id = NULL WHERE site_id = ?1")?.execute([db(id.0)?])?;
                c.prepare_cached("DELETE FROM sites WHERE id = ?1")?.execute([db(id.0)?])?;
                after_change(c, &cache, site.enterprise_id)?;
                Ok(Some(site.enterprise_id))
            })
            .await;
        match &deleted {
            Ok(Some(e)) => self.site_matchers.forget(*e),
            Ok(None) => {}
            Err(_) => self.site_matchers.clear(),
        }
        Ok(deleted?.is_some())
    }

    async fn site_device_counts(&self, enterprise: EnterpriseId) -> Result<Vec<SiteCount>> {
        let Ok(e) = i64::try_from(enterprise.0) else { return Ok(Vec::new()) };
        self.read(move |c| {
            let mut st = c.prepare_cached(crate::sites::SITE_COUNTS_SQLITE)?;
            let rows = st.query_map([e], |r| {
                Ok(SiteCount {
                    site_id: SiteId(r.get(0)?),
                    name: r.get(1)?,
                    total: r.get::<_, i64>(2)?.max(0) as u64,
                    online: r.get::<_, i64>(3)?.max(0) as u64,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn device_site_path(&self, device: DeviceId) -> Result<Vec<SiteId>> {
        let Ok(d) = i64::try_from(device.0) else { return Ok(Vec::new()) };
        self.read(move |c| {
            let mut st = c.prepare_cached(crate::sites::SITE_PATH_SQLITE)?;
            let rows = st.query_map([d], |r| r.get::<_, u64>(0).map(SiteId))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn site_subtree(&self, id: SiteId) -> Result<Vec<SiteId>> {
        self.read(move |c| {
            let Some(site) = site_by_id(c, id)? else { return Ok(Vec::new()) };
            Ok(subtree(&load_sites(c, site.enterprise_id)?, id))
        })
        .await
    }
}
