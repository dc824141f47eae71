//! Device groups (PRV-2): `/api/v1/groups` (list with member counts, create, show, edit,
//! delete), members (listed along the device list's keyset cursor, added and removed by ids or
//! by a device-list filter), "set to top priority", an enterprise's default groups, and
//! `PUT /api/v1/devices/{id}/groups` (a device's ordered list). A group is seen by whoever sees
//! its enterprise (404 otherwise) and changed by whoever may act inside it.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{MethodRouter, get, post, put};
use fleetpulse_proto::{DeviceId, EnterpriseId, GroupId};
use fleetpulse_store::{
    DeletedGroup, DevicePage, DevicePageRequest, DeviceQuery, Feature, Group, GroupEdit, GroupRef, GroupTargets,
    MAX_DEVICE_FILTER_IDS, MAX_GROUP_PAGE, MemberChange, NewGroup,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::AuthAdmin;
use crate::error::ApiError;
use crate::extract::{Json, Path, Query};
use crate::openapi::{Operation, delete_, get_, patch_, post_, put_};
use crate::routes::commands::filter_query;
use crate::routes::devices::parse_device_params;
use crate::routes::listing::{ListPage, page};
use crate::state::AppState;

/// Groups of a listing page when the caller names no limit.
const LIST_DEFAULT: u32 = 100;

/// Members of a page when the caller names no limit.
const MEMBERS_DEFAULT: u32 = 50;

/// Routes of this module: (path, handlers by method).
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/api/v1/groups", get(list).post(create)),
        ("/api/v1/groups/{id}", get(show).patch(edit).delete(remove)),
        ("/api/v1/groups/{id}/members", get(members).post(add_members)),
        ("/api/v1/groups/{id}/members/remove", post(remove_members)),
        ("/api/v1/groups/{id}/top-priority", post(top_priority)),
        ("/api/v1/default-groups", get(default_groups).put(set_default_groups)),
        ("/api/v1/devices/{id}/groups", put(set_device_groups)),
    ]
}

/// The OpenAPI operations of these routes.
pub(crate) fn operations() -> Vec<Operation> {
    const GROUPS: &str = "device groups";
    vec![
        get_("/api/v1/groups", GROUPS, "Device groups the caller sees, by id, with member counts")
            .query::<ListQuery>()
            .answers::<ListPage<Group>>(200),
        post_("/api/v1/groups", GROUPS, "Create a device group (name unique in the enterprise)")
            .body::<CreateGroup>()
            .answers::<Group>(201)
            .may_fail(&[409, 429]),
        get_("/api/v1/groups/{id}", GROUPS, "One device group").answers::<Group>(200),
        patch_("/api/v1/groups/{id}", GROUPS, "Rename a group or change its description")
            .body::<EditGroup>()
            .answers::<Group>(200)
            .may_fail(&[409]),
        delete_(
            "/api/v1/groups/{id}",
            GROUPS,
            "Delete a group with its memberships; says what it removed (409 while profiles are deployed to it)",
        )
        .answers::<DeletedGroup>(200)
        .may_fail(&[409]),
        get_("/api/v1/groups/{id}/members", GROUPS, "A group's devices, along the device list's keyset cursor")
            .query::<MembersQuery>()
            .answers::<DevicePage>(200),
        post_("/api/v1/groups/{id}/members", GROUPS, "Add devices (by ids or a device-list filter), lowest priority")
            .body::<Members>()
            .answers::<MemberChange>(200)
            .may_fail(&[429]),
        post_("/api/v1/groups/{id}/members/remove", GROUPS, "Remove devices (by ids or a device-list filter)")
            .body::<Members>()
            .answers::<MemberChange>(200)
            .may_fail(&[429]),
        post_("/api/v1/groups/{id}/top-priority", GROUPS, "Make the group the first of every member's groups")
            .answers::<TopPriority>(200),
        get_("/api/v1/default-groups", GROUPS, "The groups auto-added devices join, in priority order")
            .query::<EnterpriseQuery>()
            .answers::<DefaultGroups>(200),
        put_("/api/v1/default-groups", GROUPS, "Replace the default groups (an ordered list)")
            .query::<EnterpriseQuery>()
            .body::<GroupList>()
            .answers::<DefaultGroups>(200),
        put_("/api/v1/devices/{id}/groups", GROUPS, "Replace a device's groups (an ordered list, top first)")
            .body::<GroupList>()
            .answers::<DeviceGroups>(200),
    ]
}

/// `GET /api/v1/groups`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// Only this enterprise's groups (else every enterprise the caller sees).
    enterprise_id: Option<EnterpriseId>,
    after: Option<u64>,
    limit: Option<u32>,
}

/// `POST /api/v1/groups`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateGroup {
    /// Its enterprise; an enterprise admin's own when left out.
    enterprise_id: Option<EnterpriseId>,
    /// 1 to 64 characters: letters, digits, inner spaces and `# . - _ ( ) [ ]`.
    name: String,
    /// At most 256 characters.
    #[serde(default)]
    description: String,
}

/// `PATCH /api/v1/groups/{id}`: every field given changes.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EditGroup {
    name: Option<String>,
    description: Option<String>,
}

/// `GET /api/v1/groups/{id}/members`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MembersQuery {
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// 1 to 1,000 (default 50).
    limit: Option<u32>,
}

/// The devices a membership change is about: exactly one of the two.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Members {
    /// These devices (at most 10,000), each a device of the group's enterprise.
    device_ids: Option<Vec<DeviceId>>,
    /// The devices the device list shows with these parameters (its names and values, without
    /// `cursor`, `limit`, `sort`, `order`), within the group's enterprise; at most 10,000.
    filter: Option<serde_json::Map<String, Value>>,
}

/// The answer of set-to-top-priority.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct TopPriority {
    /// The group, now first for each of its members.
    group: Group,
}

/// `?enterprise_id=` of the default groups.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnterpriseQuery {
    /// The enterprise; an enterprise admin's own when left out.
    enterprise_id: Option<EnterpriseId>,
}

/// An ordered list of groups, top priority first.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GroupList {
    /// At most 32, no repeats, each a group of the enterprise.
    group_ids: Vec<GroupId>,
}

/// An enterprise's default groups.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct DefaultGroups {
    enterprise_id: EnterpriseId,
    /// In the order an auto-added device gets them (top priority first).
    groups: Vec<GroupRef>,
}

/// A device's groups.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct DeviceGroups {
    device_id: DeviceId,
    /// Top priority first.
    groups: Vec<GroupRef>,
}

/// The group if the caller sees its enterprise (404 otherwise).
async fn find(auth: &AuthAdmin, ctx: &AppState, id: GroupId) -> Result<Group, ApiError> {
    auth.require(Feature::Devices)?;
    match ctx.api.store.entities.group(id).await? {
        Some(g) if auth.can_see(ctx, g.enterprise_id).await? => Ok(g),
        _ => Err(ApiError::NotFound("group")),
    }
}

/// The group if the caller may change things inside its enterprise.
async fn changeable(auth: &AuthAdmin, ctx: &AppState, id: GroupId) -> Result<Group, ApiError> {
    let group = find(auth, ctx, id).await?;
    auth.require_act(ctx, group.enterprise_id).await?;
    Ok(group)
}

/// The enterprise a request names (or the caller's own), checked for acting when `act`.
async fn enterprise(
    auth: &AuthAdmin,
    ctx: &AppState,
    requested: Option<EnterpriseId>,
    act: bool,
) -> Result<EnterpriseId, ApiError> {
    auth.require(Feature::Devices)?;
    let e =
        auth.enterprise_filter(ctx, requested).await?.ok_or_else(|| ApiError::invalid("enterprise_id is required"))?;
    if ctx.api.store.entities.enterprise(e).await?.is_none() {
        return Err(ApiError::NotFound("enterprise"));
    }
    if act {
        auth.require_act(ctx, e).await?;
    }
    Ok(e)
}

/// `GET /api/v1/groups`: groups of one enterprise, or of every one the caller sees, by id.
async fn list(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<ListPage<Group>>, ApiError> {
    auth.require(Feature::Devices)?;
    let page = page(q.after, q.limit, LIST_DEFAULT, MAX_GROUP_PAGE)?;
    let enterprises = match auth.listing_filter(&ctx, q.enterprise_id).await? {
        (Some(one), _) => Some(vec![one]),
        (None, visible) => visible,
    };
    let items = ctx.api.store.entities.list_groups(enterprises, page.after, page.limit).await?;
    Ok(Json(ListPage::new(items, page, |g| g.id.0)))
}

/// `POST /api/v1/groups`: 201 with the group; 409 for a name the enterprise has.
async fn create(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Json(req): Json<CreateGroup>,
) -> Result<(StatusCode, Json<Group>), ApiError> {
    let e = enterprise(&auth, &ctx, req.enterprise_id, true).await?;
    let new = NewGroup { enterprise_id: e, name: req.name, description: req.description, at: ctx.clock.now() };
    Ok((StatusCode::CREATED, Json(ctx.api.store.entities.create_group(new).await?)))
}

/// `GET /api/v1/groups/{id}`.
async fn show(auth: AuthAdmin, State(ctx): State<AppState>, Path(id): Path<GroupId>) -> Result<Json<Group>, ApiError> {
    Ok(Json(find(&auth, &ctx, id).await?))
}

/// `PATCH /api/v1/groups/{id}`.
async fn edit(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<GroupId>,
    Json(req): Json<EditGroup>,
) -> Result<Json<Group>, ApiError> {
    changeable(&auth, &ctx, id).await?;
    let edit = GroupEdit { name: req.name, description: req.description };
    let group =
        ctx.api.store.entities.edit_group(id, edit, ctx.clock.now()).await?.ok_or(ApiError::NotFound("group"))?;
    Ok(Json(group))
}

/// `DELETE /api/v1/groups/{id}`: the group goes with its memberships and its place among the
/// default groups; 200 with what was removed.
async fn remove(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<GroupId>,
) -> Result<Json<DeletedGroup>, ApiError> {
    let group = changeable(&auth, &ctx, id).await?;
    let target = fleetpulse_store::DeploymentTarget::Group { group_id: id };
    let what = format!("group {}", group.name);
    crate::provisioning::refuse_while_deployed(ctx.api.store.entities.as_ref(), group.enterprise_id, &target, &what)
        .await?;
    let deleted = ctx.api.store.entities.delete_group(id).await?.ok_or(ApiError::NotFound("group"))?;
    tracing::info!(
        message = "Deleted a device group.",
        group = %id,
        enterprise = %deleted.group.enterprise_id,
        memberships = deleted.memberships_removed,
        by_account = %auth.account.id
    );
    Ok(Json(deleted))
}

/// `GET /api/v1/groups/{id}/members`: the group's devices as device list rows, by creation time.
async fn members(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<GroupId>,
    Query(q): Query<MembersQuery>,
) -> Result<Json<DevicePage>, ApiError> {
    let group = find(&auth, &ctx, id).await?;
    let query = DeviceQuery { enterprises: Some(vec![group.enterprise_id]), group: Some(id), ..DeviceQuery::default() };
    let page = DevicePageRequest { cursor: q.cursor, limit: q.limit.unwrap_or(MEMBERS_DEFAULT) };
    Ok(Json(ctx.api.store.entities.query_devices(query, page).await?))
}

/// The targets of a membership change.
fn targets(req: Members) -> Result<GroupTargets, ApiError> {
    match (req.device_ids, req.filter) {
        (Some(ids), None) => {
            if ids.len() > MAX_DEVICE_FILTER_IDS {
                return Err(ApiError::invalid(format!("at most {MAX_DEVICE_FILTER_IDS} device_ids")));
            }
            Ok(GroupTargets::Devices(ids))
        }
        (None, Some(filter)) => {
            let params = parse_device_params(&filter_query(&filter)?)?;
            let query = DeviceQuery { enterprises: params.enterprises, channels: params.channels, ..params.query };
            Ok(GroupTargets::Filter(Box::new(query)))
        }
        _ => Err(ApiError::invalid("give exactly one of device_ids and filter")),
    }
}

/// `POST /api/v1/groups/{id}/members`: devices join at the end of their lists; devices in 32
/// groups already are left out and counted; an id that is not a device of the group's
/// enterprise is 400 and nothing changes.
async fn add_members(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<GroupId>,
    Json(req): Json<Members>,
) -> Result<Json<MemberChange>, ApiError> {
    changeable(&auth, &ctx, id).await?;
    let change = ctx.api.store.entities.add_group_members(id, targets(req)?).await?;
    Ok(Json(change.ok_or(ApiError::NotFound("group"))?))
}

/// `POST /api/v1/groups/{id}/members/remove`.
async fn remove_members(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<GroupId>,
    Json(req): Json<Members>,
) -> Result<Json<MemberChange>, ApiError> {
    changeable(&auth, &ctx, id).await?;
    let change = ctx.api.store.entities.remove_group_members(id, targets(req)?).await?;
    Ok(Json(change.ok_or(ApiError::NotFound("group"))?))
}

/// `POST /api/v1/groups/{id}/top-priority`: the group becomes the first of every member's list.
async fn top_priority(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<GroupId>,
) -> Result<Json<TopPriority>, ApiError> {
    changeable(&auth, &ctx, id).await?;
    ctx.api.store.entities.set_group_top_priority(id).await?.ok_or(ApiError::NotFound("group"))?;
    Ok(Json(TopPriority { group: find(&auth, &ctx, id).await? }))
}

/// `GET /api/v1/default-groups?enterprise_id=`.
async fn default_groups(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Query(q): Query<EnterpriseQuery>,
) -> Result<Json<DefaultGroups>, ApiError> {
    let e = enterprise(&auth, &ctx, q.enterprise_id, false).await?;
    Ok(Json(DefaultGroups { enterprise_id: e, groups: ctx.api.store.entities.default_groups(e).await? }))
}

/// `PUT /api/v1/default-groups?enterprise_id=`: auto-added devices join these, in this order.
async fn set_default_groups(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Query(q): Query<EnterpriseQuery>,
    Json(req): Json<GroupList>,
) -> Result<Json<DefaultGroups>, ApiError> {
    let e = enterprise(&auth, &ctx, q.enterprise_id, true).await?;
    let groups = ctx.api.store.entities.set_default_groups(e, req.group_ids).await?;
    Ok(Json(DefaultGroups { enterprise_id: e, groups }))
}

/// `PUT /api/v1/devices/{id}/groups`: the device's groups become this ordered list.
async fn set_device_groups(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<DeviceId>,
    Json(req): Json<GroupList>,
) -> Result<Json<DeviceGroups>, ApiError> {
    auth.require(Feature::Devices)?;
    let device = match ctx.api.store.entities.device(id).await? {
        Some(d) if auth.can_see(&ctx, d.enterprise_id).await? => d,
        _ => return Err(ApiError::NotFound("device")),
    };
    auth.require_act(&ctx, device.enterprise_id).await?;
    let groups =
        ctx.api.store.entities.set_device_groups(id, req.group_ids).await?.ok_or(ApiError::NotFound("device"))?;
    Ok(Json(DeviceGroups { device_id: id, groups }))
}
