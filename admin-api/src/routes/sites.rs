//! Sites (PRV-1): `/api/v1/sites` — an enterprise's site tree with device counts, one site,
//! create, edit, delete (refused for Internet and Intranet and while it has child sites), and a
//! CSV import of sites with per-row errors. Scoped like the other enterprise routes: an
//! enterprise admin sees its own; channel and platform scopes name `enterprise_id`; a site of an
//! enterprise the caller does not see answers 404.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{MethodRouter, get, post};
use fleetpulse_proto::{EnterpriseId, SiteId};
use fleetpulse_store::{Feature, MAX_SITE_UPSERTS, NewSite, Site, SiteEdit, SiteSubnet, SiteUpsert, SiteUpserted};
use futures_util::StreamExt;
use serde::{Deserialize, Deserializer, Serialize};

use crate::auth::AuthAdmin;
use crate::error::ApiError;
use crate::extract::{Json, Path, Query};
use crate::state::AppState;

mod csv;

/// Largest site import body (2,000 rows of about 2 KiB).
pub(crate) const MAX_IMPORT_BYTES: usize = 4 * 1024 * 1024;

/// Routes of this module: (path, handlers by method).
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/api/v1/sites", get(list).post(create)),
        ("/api/v1/sites/import", post(import)),
        ("/api/v1/sites/{id}", get(show).patch(edit).delete(remove)),
    ]
}

/// `?enterprise_id=`: the enterprise (an enterprise admin's own when left out).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SiteQuery {
    enterprise_id: Option<EnterpriseId>,
}

/// A site in the tree, with its devices and its child sites.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct SiteNode {
    #[serde(flatten)]
    site: Site,
    /// Devices whose site it is (not counting child sites).
    devices: u64,
    /// Of them online.
    online: u64,
    /// Child sites, by name.
    children: Vec<SiteNode>,
}

/// `GET /api/v1/sites`: the enterprise's sites as a tree (roots by name).
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct SiteTree {
    enterprise_id: EnterpriseId,
    /// Sites in the enterprise (at most 2,000, Internet and Intranet included).
    count: usize,
    roots: Vec<SiteNode>,
}

/// `POST /api/v1/sites`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateSite {
    /// Its enterprise; an enterprise admin's own when left out.
    enterprise_id: Option<EnterpriseId>,
    /// Its parent site (of the same enterprise); a root when left out.
    parent_id: Option<SiteId>,
    /// Unique in the enterprise, at most 64 characters.
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    location: String,
    /// Public subnets with their private subnets (none: any private address).
    #[serde(default)]
    subnets: Vec<SiteSubnet>,
}

/// `PATCH /api/v1/sites/{id}`: every field given changes (`parent_id: null` makes it a root).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EditSite {
    #[serde(default, deserialize_with = "present")]
    parent_id: Option<Option<SiteId>>,
    name: Option<String>,
    description: Option<String>,
    location: Option<String>,
    /// All of the site's subnets.
    subnets: Option<Vec<SiteSubnet>>,
}

/// A field that is present (possibly `null`) deserialises to `Some`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<SiteId>>, D::Error> {
    Option::<SiteId>::deserialize(d).map(Some)
}

/// One row a site import refused.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct SiteImportError {
    /// Line of the file (the header is line 1).
    line: u64,
    /// The column at fault, or empty for the row as a whole.
    column: String,
    reason: String,
}

/// What a site import did.
#[derive(Debug, Default, Serialize, schemars::JsonSchema)]
pub(crate) struct SiteImportReport {
    /// Data rows read.
    rows: u64,
    created: u64,
    /// Existing sites (same `site_name`) overwritten.
    updated: u64,
    failed: u64,
    /// Every refused row, by line.
    errors: Vec<SiteImportError>,
}

/// The site if the caller sees its enterprise (404 otherwise, as for a missing one).
async fn find(ctx: &AppState, auth: &AuthAdmin, id: SiteId) -> Result<Site, ApiError> {
    auth.require(Feature::Devices)?;
    match ctx.api.store.entities.site(id).await? {
        Some(s) if auth.can_see(ctx, s.enterprise_id).await? => Ok(s),
        _ => Err(ApiError::NotFound("site")),
    }
}

/// The enterprise a listing or creation is about (see [`AuthAdmin::enterprise_filter`]).
async fn enterprise(
    ctx: &AppState,
    auth: &AuthAdmin,
    requested: Option<EnterpriseId>,
) -> Result<EnterpriseId, ApiError> {
    auth.require(Feature::Devices)?;
    auth.enterprise_filter(ctx, requested).await?.ok_or_else(|| ApiError::invalid("enterprise_id is required"))
}

fn tree(sites: Vec<Site>, counts: &HashMap<SiteId, (u64, u64)>) -> Vec<SiteNode> {
    let mut children: HashMap<Option<SiteId>, Vec<Site>> = HashMap::new();
    let ids: std::collections::HashSet<SiteId> = sites.iter().map(|s| s.id).collect();
    for s in sites {
        // A parent that is not listed cannot happen (same enterprise, kept by the store); show
        // such a site as a root rather than lose it.
        let parent = s.parent_id.filter(|p| ids.contains(p));
        children.entry(parent).or_default().push(s);
    }
    fn build(
        parent: Option<SiteId>,
        children: &mut HashMap<Option<SiteId>, Vec<Site>>,
        counts: &HashMap<SiteId, (u64, u64)>,
        depth: usize,
    ) -> Vec<SiteNode> {
        let mut here = children.remove(&parent).unwrap_or_default();
        here.sort_by(|a, b| a.name.cmp(&b.name));
        here.into_iter()
            .map(|site| {
                let (devices, online) = counts.get(&site.id).copied().unwrap_or_default();
                let below = if depth < fleetpulse_store::MAX_SITE_DEPTH {
                    build(Some(site.id), children, counts, depth + 1)
                } else {
                    Vec::new()
                };
                SiteNode { site, devices, online, children: below }
            })
            .collect()
    }
    build(None, &mut children, counts, 1)
}

/// `GET /api/v1/sites?enterprise_id=`: the site tree with device counts.
async fn list(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Query(q): Query<SiteQuery>,
) -> Result<Json<SiteTree>, ApiError> {
    let e = enterprise(&ctx, &auth, q.enterprise_id).await?;
    let sites = ctx.api.store.entities.list_sites(e).await?;
    if sites.is_empty() {
        return Err(ApiError::NotFound("enterprise"));
    }
    let counts: HashMap<SiteId, (u64, u64)> = ctx
        .api
        .store
        .entities
        .site_device_counts(e)
        .await?
        .into_iter()
        .map(|c| (c.site_id, (c.total, c.online)))
        .collect();
    let count = sites.len();
    Ok(Json(SiteTree { enterprise_id: e, count, roots: tree(sites, &counts) }))
}

/// `GET /api/v1/sites/{id}`.
async fn show(auth: AuthAdmin, State(ctx): State<AppState>, Path(id): Path<SiteId>) -> Result<Json<Site>, ApiError> {
    Ok(Json(find(&ctx, &auth, id).await?))
}

/// `POST /api/v1/sites`: 201 with the site; 400 naming the site whose subnet or name it takes.
async fn create(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Json(req): Json<CreateSite>,
) -> Result<(StatusCode, Json<Site>), ApiError> {
    let e = enterprise(&ctx, &auth, req.enterprise_id).await?;
    auth.require_act(&ctx, e).await?;
    let new = NewSite {
        enterprise_id: e,
        parent_id: req.parent_id,
        name: req.name,
        description: req.description,
        location: req.location,
        subnets: req.subnets,
        at: ctx.clock.now(),
    };
    Ok((StatusCode::CREATED, Json(ctx.api.store.entities.create_site(new).await?)))
}

/// `PATCH /api/v1/sites/{id}`: the edited site; devices are re-matched when subnets change.
async fn edit(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<SiteId>,
    Json(req): Json<EditSite>,
) -> Result<Json<Site>, ApiError> {
    let site = find(&ctx, &auth, id).await?;
    auth.require_act(&ctx, site.enterprise_id).await?;
    let edit = SiteEdit {
        parent_id: req.parent_id,
        name: req.name,
        description: req.description,
        location: req.location,
        subnets: req.subnets,
    };
    let edited = ctx.api.store.entities.update_site(id, edit, ctx.clock.now()).await?;
    Ok(Json(edited.ok_or(ApiError::NotFound("site"))?))
}

/// `DELETE /api/v1/sites/{id}`: 204; its devices move to the site they match without it. 400
/// for Internet and Intranet and for a site with child sites (named); 409 while configuration
/// profiles are deployed to it.
async fn remove(auth: AuthAdmin, State(ctx): State<AppState>, Path(id): Path<SiteId>) -> Result<StatusCode, ApiError> {
    let site = find(&ctx, &auth, id).await?;
    auth.require_act(&ctx, site.enterprise_id).await?;
    let target = fleetpulse_store::DeploymentTarget::Site { site_id: id };
    let what = format!("site {}", site.name);
    crate::provisioning::refuse_while_deployed(ctx.api.store.entities.as_ref(), site.enterprise_id, &target, &what)
        .await?;
    if ctx.api.store.entities.delete_site(id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("site"))
    }
}

/// Reads an upload's body up to `limit` bytes, chunk by chunk, refused as soon as it is over
/// ("`what` has at most N MiB"); the site and RPS CSV imports use it.
pub(crate) async fn read_bounded(body: Body, limit: usize, what: &str) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::invalid(format!("the upload ended: {e}")))?;
        if out.len() + chunk.len() > limit {
            return Err(ApiError::invalid(format!("{what} has at most {} MiB", limit >> 20)));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// `POST /api/v1/sites/import?enterprise_id=` with a CSV body (`site_name`, `subnets` required;
/// `description`, `location_name`, `parent_name` optional; separator `,` `;` or tab): each row
/// creates a site or overwrites the one of the same name; a refused row changes nothing and is
/// reported with its line, column and reason. 200 with the report.
async fn import(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Query(q): Query<SiteQuery>,
    body: Body,
) -> Result<Json<SiteImportReport>, ApiError> {
    let e = enterprise(&ctx, &auth, q.enterprise_id).await?;
    auth.require_act(&ctx, e).await?;
    let bytes = read_bounded(body, MAX_IMPORT_BYTES, "a site import").await?;
    let rows = csv::read(&bytes).map_err(ApiError::invalid)?;
    let store = &ctx.api.store.entities;
    let mut report = SiteImportReport::default();
    // Rows go to the store a chunk at a time: one transaction and one re-match of the
    // enterprise's devices per chunk, each row still refused alone.
    let mut chunk: Vec<SiteUpsert> = Vec::with_capacity(MAX_SITE_UPSERTS);
    for row in rows {
        report.rows += 1;
        match row {
            Ok(r) => chunk.push(SiteUpsert {
                line: r.line,
                name: r.name,
                parent_name: r.parent_name,
                description: r.description,
                location: r.location,
                subnets: r.subnets,
            }),
            Err(err) => {
                report.failed += 1;
                report.errors.push(SiteImportError { line: err.line, column: err.column, reason: err.reason });
            }
        }
        if chunk.len() == MAX_SITE_UPSERTS {
            apply_chunk(store.as_ref(), e, std::mem::take(&mut chunk), ctx.clock.now(), &mut report).await?;
        }
    }
    if !chunk.is_empty() {
        apply_chunk(store.as_ref(), e, chunk, ctx.clock.now(), &mut report).await?;
    }
    report.errors.sort_by_key(|e| e.line);
    Ok(Json(report))
}

/// Applies one chunk of import rows and adds what they did to the report.
async fn apply_chunk(
    store: &dyn fleetpulse_store::EntityStore,
    enterprise: EnterpriseId,
    rows: Vec<SiteUpsert>,
    now: fleetpulse_proto::UnixMillis,
    report: &mut SiteImportReport,
) -> Result<(), ApiError> {
    for done in store.upsert_sites(enterprise, rows, now).await? {
        match done {
            SiteUpserted::Created(_) => report.created += 1,
            SiteUpserted::Updated(_) => report.updated += 1,
            SiteUpserted::Refused { line, column, reason } => {
                report.failed += 1;
                report.errors.push(SiteImportError { line, column: column.into(), reason });
            }
        }
    }
    Ok(())
}
