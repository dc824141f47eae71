//! Sites on PostgreSQL ([`SiteStore`]): site rows (subnets as JSON), changes serialised per
//! enterprise by a row lock on the enterprise, the compiled matcher of each enterprise cached
//! beside the pool, and devices re-matched in the same transaction as the change.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use fleetpulse_proto::{DeviceId, EnterpriseId, SiteId, UnixMillis};
use sqlx::Row;
use sqlx::postgres::{PgConnection, PgRow};

use super::{PgEntityStore, backend, db_id, row_id};
use crate::sites::{
    MAX_SITE_UPSERTS, MatcherCache, SiteChange, check_delete, compile, decode_subnets, encode_subnets,
    plan_site_change, plan_upsert, site_of, subtree, tree_order,
};
use crate::*;

const COLUMNS: &str =
    "id, enterprise_id, parent_id, kind, name, description, location, subnets, created_at, updated_at";

/// Devices re-matched per statement.
const REMATCH_CHUNK: usize = 10_000;

fn site_from_row(r: &PgRow) -> Result<Site> {
    let kind: String = r.try_get("kind").map_err(backend)?;
    let subnets: String = r.try_get("subnets").map_err(backend)?;
    let parent: Option<i64> = r.try_get("parent_id").map_err(backend)?;
    Ok(Site {
        id: SiteId(row_id(r.try_get("id").map_err(backend)?)),
        enterprise_id: EnterpriseId(row_id(r.try_get("enterprise_id").map_err(backend)?)),
        parent_id: parent.map(|p| SiteId(row_id(p))),
        kind: SiteKind::parse(&kind),
        name: r.try_get("name").map_err(backend)?,
        description: r.try_get("description").map_err(backend)?,
        location: r.try_get("location").map_err(backend)?,
        subnets: decode_subnets(&subnets),
        created_at: UnixMillis(r.try_get("created_at").map_err(backend)?),
        updated_at: UnixMillis(r.try_get("updated_at").map_err(backend)?),
    })
}

async fn load_sites(c: &mut PgConnection, enterprise: EnterpriseId) -> Result<Vec<Site>> {
    let Some(e) = db_id(enterprise.0) else { return Ok(Vec::new()) };
    sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM sites WHERE enterprise_id = $1")))
        .bind(e)
        .fetch_all(&mut *c)
        .await
        .map_err(backend)?
        .iter()
        .map(site_from_row)
        .collect()
}

async fn site_by_id(c: &mut PgConnection, id: SiteId) -> Result<Option<Site>> {
    let Some(id) = db_id(id.0) else { return Ok(None) };
    let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM sites WHERE id = $1")))
        .bind(id)
        .fetch_optional(&mut *c)
        .await
        .map_err(backend)?;
    row.as_ref().map(site_from_row).transpose()
}

/// Locks the enterprise's row: site changes of one enterprise run one at a time.
async fn lock_enterprise(c: &mut PgConnection, enterprise: EnterpriseId) -> Result<bool> {
    let Some(e) = db_id(enterprise.0) else { return Ok(false) };
    Ok(sqlx::query("SELECT 1 FROM enterprises WHERE id = $1 FOR NO KEY UPDATE")
        .bind(e)
        .fetch_optional(&mut *c)
        .await
        .map_err(backend)?
        .is_some())
}

async fn matcher_for(
    c: &mut PgConnection,
    cache: &MatcherCache,
    enterprise: EnterpriseId,
) -> Result<Option<Arc<SiteMatcher>>> {
    if let Some(m) = cache.get(enterprise) {
        return Ok(Some(m));
    }
    match compile(&load_sites(c, enterprise).await?, None) {
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

/// Writes the changed sites of parallel arrays, in chunks.
async fn write_sites(c: &mut PgConnection, changed: &[(i64, Option<i64>)]) -> Result<()> {
    for chunk in changed.chunks(REMATCH_CHUNK) {
        let ids: Vec<i64> = chunk.iter().map(|(id, _)| *id).collect();
        let sites: Vec<Option<i64>> = chunk.iter().map(|(_, s)| *s).collect();
        sqlx::query(
            "UPDATE devices d SET site_id = u.site_id FROM unnest($1::bigint[], $2::bigint[]) AS u (id, site_id) \
             WHERE d.id = u.id",
        )
        .bind(&ids)
        .bind(&sites)
        .execute(&mut *c)
        .await
        .map_err(backend)?;
    }
    Ok(())
}

/// The site a device row should have, and whether that differs from the stored one.
fn changed_site(matcher: &SiteMatcher, r: &PgRow) -> Result<Option<(i64, Option<i64>)>> {
    let public: String = r.try_get("public_ip").map_err(backend)?;
    let private: String = r.try_get("private_ip").map_err(backend)?;
    let now: Option<i64> = r.try_get("site_id").map_err(backend)?;
    let site = site_of(matcher, &public, &private).and_then(|s| db_id(s.0));
    Ok((site != now).then_some((r.try_get("id").map_err(backend)?, site)))
}

/// Re-matches every device of the enterprise in the caller's transaction.
async fn rematch_enterprise(c: &mut PgConnection, enterprise: EnterpriseId, matcher: &SiteMatcher) -> Result<()> {
    let Some(e) = db_id(enterprise.0) else { return Ok(()) };
    let rows = sqlx::query("SELECT id, public_ip, private_ip, site_id FROM devices WHERE enterprise_id = $1")
        .bind(e)
        .fetch_all(&mut *c)
        .await
        .map_err(backend)?;
    let mut changed = Vec::new();
    for r in &rows {
        changed.extend(changed_site(matcher, r)?);
    }
    write_sites(c, &changed).await
}

/// Re-matches the devices whose reports were just written (the snapshot writer's transaction).
pub(super) async fn rematch_reported(c: &mut PgConnection, cache: &MatcherCache, ids: &[i64]) -> Result<()> {
    let rows = sqlx::query("SELECT id, enterprise_id, public_ip, private_ip, site_id FROM devices WHERE id = ANY($1)")
        .bind(ids)
        .fetch_all(&mut *c)
        .await
        .map_err(backend)?;
    let mut matchers: HashMap<i64, Option<Arc<SiteMatcher>>> = HashMap::new();
    let mut changed = Vec::new();
    for r in &rows {
        let e: i64 = r.try_get("enterprise_id").map_err(backend)?;
        let matcher = match matchers.get(&e) {
            Some(m) => m.clone(),
            None => {
                let m = matcher_for(c, cache, EnterpriseId(row_id(e))).await?;
                matchers.insert(e, m.clone());
                m
            }
        };
        if let Some(m) = matcher {
            changed.extend(changed_site(&m, r)?);
        }
    }
    write_sites(c, &changed).await
}

async fn after_change(c: &mut PgConnection, cache: &MatcherCache, enterprise: EnterpriseId) -> Result<()> {
    cache.forget(enterprise);
    let matcher = compile(&load_sites(c, enterprise).await?, None)?;
    rematch_enterprise(c, enterprise, &matcher).await
}

/// Inserts a planned new site; answers its id.
async fn insert_site(c: &mut PgConnection, new: &NewSite) -> Result<SiteId> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO sites (enterprise_id, parent_id, kind, name, description, location, subnets, created_at, \
         updated_at) VALUES ($1, $2, 'custom', $3, $4, $5, $6, $7, $7) RETURNING id",
    )
    .bind(db(new.enterprise_id.0)?)
    .bind(new.parent_id.map(|p| db(p.0)).transpose()?)
    .bind(&new.name)
    .bind(&new.description)
    .bind(&new.location)
    .bind(encode_subnets(&new.subnets)?)
    .bind(new.at.0)
    .fetch_one(&mut *c)
    .await
    .map_err(name_taken)?;
    Ok(SiteId(row_id(id)))
}

/// Writes a planned site's fields over its row.
async fn overwrite_site(c: &mut PgConnection, s: &Site) -> Result<()> {
    sqlx::query(
        "UPDATE sites SET parent_id = $2, name = $3, description = $4, location = $5, subnets = $6, updated_at = $7 \
         WHERE id = $1",
    )
    .bind(db(s.id.0)?)
    .bind(s.parent_id.map(|p| db(p.0)).transpose()?)
    .bind(&s.name)
    .bind(&s.description)
    .bind(&s.location)
    .bind(encode_subnets(&s.subnets)?)
    .bind(s.updated_at.0)
    .execute(&mut *c)
    .await
    .map_err(name_taken)?;
    Ok(())
}

fn db(id: u64) -> Result<i64> {
    db_id(id).ok_or_else(|| StoreError::InvalidInput(format!("id {id} beyond i64")))
}

fn name_taken(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            StoreError::InvalidInput("the site name is taken".into())
        }
        _ => backend(e),
    }
}

#[async_trait]
impl SiteStore for PgEntityStore {
    async fn list_sites(&self, enterprise: EnterpriseId) -> Result<Vec<Site>> {
        let mut c = self.pool.acquire().await.map_err(backend)?;
        let mut sites = load_sites(&mut c, enterprise).await?;
        tree_order(&mut sites);
        Ok(sites)
    }

    async fn site(&self, id: SiteId) -> Result<Option<Site>> {
        let mut c = self.pool.acquire().await.map_err(backend)?;
        site_by_id(&mut c, id).await
    }

    async fn create_site(&self, new: NewSite) -> Result<Site> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        if !lock_enterprise(&mut tx, new.enterprise_id).await? {
            return Err(StoreError::InvalidInput(format!("enterprise {} does not exist", new.enterprise_id)));
        }
        let current = load_sites(&mut tx, new.enterprise_id).await?;
        plan_site_change(&current, &SiteChange::Create(new.clone()))?;
        let id = insert_site(&mut tx, &new).await?;
        after_change(&mut tx, &self.site_matchers, new.enterprise_id).await?;
        let site = site_by_id(&mut tx, id).await?;
        tx.commit().await.map_err(backend)?;
        self.site_matchers.forget(new.enterprise_id);
        site.ok_or_else(|| StoreError::Backend("the new site is gone".into()))
    }

    async fn update_site(&self, id: SiteId, edit: SiteEdit, now: UnixMillis) -> Result<Option<Site>> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let Some(site) = site_by_id(&mut tx, id).await? else { return Ok(None) };
        lock_enterprise(&mut tx, site.enterprise_id).await?;
        let current = load_sites(&mut tx, site.enterprise_id).await?;
        let planned = plan_site_change(&current, &SiteChange::Update(id, edit.clone(), now))?;
        let Some(s) = planned.iter().find(|s| s.id == id) else { return Ok(None) };
        sqlx::query(
            "UPDATE sites SET parent_id = $2, name = $3, description = $4, location = $5, subnets = $6, updated_at = $7 \
             WHERE id = $1",
        )
        .bind(db(id.0)?)
        .bind(s.parent_id.map(|p| db(p.0)).transpose()?)
        .bind(&s.name)
        .bind(&s.description)
        .bind(&s.location)
        .bind(encode_subnets(&s.subnets)?)
        .bind(now.0)
        .execute(&mut *tx)
        .await
        .map_err(name_taken)?;
        if edit.subnets.is_some() {
            after_change(&mut tx, &self.site_matchers, site.enterprise_id).await?;
        }
        let updated = site_by_id(&mut tx, id).await?;
        tx.commit().await.map_err(backend)?;
        self.site_matchers.forget(site.enterprise_id);
        Ok(updated)
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
        let mut tx = self.pool.begin().await.map_err(backend)?;
        if !lock_enterprise(&mut tx, enterprise).await? {
            return Err(StoreError::InvalidInput(format!("enterprise {enterprise} does not exist")));
        }
        let mut current = load_sites(&mut tx, enterprise).await?;
        let mut out = Vec::with_capacity(rows.len());
        let mut changed = false;
        for row in &rows {
            match plan_upsert(&current, enterprise, row, now) {
                Err((column, reason)) => out.push(SiteUpserted::Refused { line: row.line, column, reason }),
                Ok((SiteChange::Create(new), mut planned)) => {
                    let id = insert_site(&mut tx, &new).await?;
                    let site = planned.last_mut().expect("a created site is planned last");
                    site.id = id;
                    out.push(SiteUpserted::Created(site.clone()));
                    current = planned;
                    changed = true;
                }
                Ok((SiteChange::Update(id, _, _), planned)) => {
                    let site = planned.iter().find(|s| s.id == id).expect("an updated site is planned").clone();
                    overwrite_site(&mut tx, &site).await?;
                    out.push(SiteUpserted::Updated(site));
                    current = planned;
                    changed = true;
                }
            }
        }
        if changed {
            after_change(&mut tx, &self.site_matchers, enterprise).await?;
        }
        tx.commit().await.map_err(backend)?;
        self.site_matchers.forget(enterprise);
        Ok(out)
    }

    async fn delete_site(&self, id: SiteId) -> Result<bool> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let Some(site) = site_by_id(&mut tx, id).await? else { return Ok(false) };
        lock_enterprise(&mut tx, site.enterprise_id).await?;
        let current = load_sites(&mut tx, site.enterprise_id).await?;
        check_delete(&current, id)?;
        sqlx::query("UPDATE devices SET site_id = NULL WHERE site_id = $1")
            .bind(db(id.0)?)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        sqlx::query("DELETE FROM sites WHERE id = $1").bind(db(id.0)?).execute(&mut *tx).await.map_err(backend)?;
        after_change(&mut tx, &self.site_matchers, site.enterprise_id).await?;
        tx.commit().await.map_err(backend)?;
        self.site_matchers.forget(site.enterprise_id);
        Ok(true)
    }

    async fn site_device_counts(&self, enterprise: EnterpriseId) -> Result<Vec<SiteCount>> {
        let Some(e) = db_id(enterprise.0) else { return Ok(Vec::new()) };
        sqlx::query(crate::sites::SITE_COUNTS_PG)
            .bind(e)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(|r| {
                Ok(SiteCount {
                    site_id: SiteId(row_id(r.try_get(0).map_err(backend)?)),
                    name: r.try_get(1).map_err(backend)?,
                    total: row_id(r.try_get(2).map_err(backend)?),
                    online: row_id(r.try_get(3).map_err(backend)?),
                })
            })
            .collect()
    }

    async fn device_site_path(&self, device: DeviceId) -> Result<Vec<SiteId>> {
        let Some(d) = db_id(device.0) else { return Ok(Vec::new()) };
        let ids: Vec<i64> =
            sqlx::query_scalar(crate::sites::SITE_PATH_PG).bind(d).fetch_all(&self.pool).await.map_err(backend)?;
        Ok(ids.into_iter().map(|i| SiteId(row_id(i))).collect())
    }

    async fn site_subtree(&self, id: SiteId) -> Result<Vec<SiteId>> {
        let mut c = self.pool.acquire().await.map_err(backend)?;
        let Some(site) = site_by_id(&mut c, id).await? else { return Ok(Vec::new()) };
        Ok(subtree(&load_sites(&mut c, site.enterprise_id).await?, id))
    }
}
