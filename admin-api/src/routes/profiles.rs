//! Configuration profiles (PRV-3, PRV-4): profiles per enterprise (create, list, read, replace,
//! delete, copy, export as `.cfg` text), their deployments to containers (Device > Site > Model >
//! Group > Global, ordered inside each), a device's effective configuration with the origin of
//! every key, and provisioning a device now.
//!
//! A change to a profile or a deployment pushes the changed configuration to the enterprise's
//! online devices in the background (`provisioning::push_changes_in_background`).

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use fleetpulse_proto::{DeviceId, EnterpriseId, FirmwareId, ProfileId};
use fleetpulse_store::{
    Container, Deployment, DeploymentTarget, Device, Feature, ProfileSettings, StoreError, StoredProfile,
};
use serde::{Deserialize, Serialize};

use crate::auth::AuthAdmin;
use crate::error::ApiError;
use crate::extract::{Json, Path, Query};
use crate::provisioning::{self, LastProvision, Placement, ProvisionOutcome};
use crate::routes::enterprises;
use crate::state::AppState;

/// Routes of this module: (path, handlers by method).
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/api/v1/profiles", get(list).post(create)),
        ("/api/v1/profiles/{id}", get(show).put(replace).delete(remove)),
        ("/api/v1/profiles/{id}/copy", post(copy)),
        ("/api/v1/profiles/{id}/export", get(export)),
        ("/api/v1/profile-deployments", get(list_deployments).put(set_deployment)),
        ("/api/v1/devices/{id}/configuration", get(configuration)),
        ("/api/v1/devices/{id}/provision", post(provision)),
    ]
}

/// The documented operations of this module (`docs.rs` adds them to the OpenAPI document).
pub(crate) fn operations() -> Vec<crate::openapi::Operation> {
    use crate::openapi::{delete_, get_, post_, put_};
    const TAG: &str = "configuration profiles";
    vec![
        get_("/api/v1/profiles", TAG, "The enterprise's configuration profiles, by name")
            .query::<EnterpriseQuery>()
            .answers::<ProfileList>(200),
        post_(
            "/api/v1/profiles",
            TAG,
            "Create a profile: parameters with ${mac_address}-style substitutions, firmware per model",
        )
        .body::<CreateProfile>()
        .answers::<StoredProfile>(201)
        .may_fail(&[409]),
        get_("/api/v1/profiles/{id}", TAG, "One profile").answers::<StoredProfile>(200),
        put_("/api/v1/profiles/{id}", TAG, "Replace a profile (its devices get the changes in the background)")
            .body::<ProfileSettings>()
            .answers::<StoredProfile>(200)
            .may_fail(&[409]),
        delete_("/api/v1/profiles/{id}", TAG, "Delete a profile no deployment lists")
            .answers_raw(204, "")
            .may_fail(&[409]),
        post_("/api/v1/profiles/{id}/copy", TAG, "Copy a profile under a new name")
            .body::<CopyProfile>()
            .answers::<StoredProfile>(201)
            .may_fail(&[409]),
        get_("/api/v1/profiles/{id}/export", TAG, "A profile as a .cfg text file").answers_raw(200, "text/plain"),
        get_("/api/v1/profile-deployments", TAG, "The enterprise's deployments, by container priority")
            .query::<EnterpriseQuery>()
            .answers::<DeploymentList>(200),
        put_("/api/v1/profile-deployments", TAG, "Set the ordered profiles of one container (empty removes it)")
            .body::<SetDeployment>()
            .answers::<DeploymentAnswer>(200),
        get_(
            "/api/v1/devices/{id}/configuration",
            TAG,
            "A device's resultant configuration, every key with its origin",
        )
        .answers::<EffectiveConfiguration>(200),
        post_("/api/v1/devices/{id}/provision", TAG, "Push the device's changed configuration now")
            .answers::<ProvisionOutcome>(202)
            .may_fail(&[429]),
    ]
}

/// The enterprise of a listing or a creation: the requested one, or the caller's own.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnterpriseQuery {
    /// The enterprise (required unless the caller is an enterprise account).
    enterprise_id: Option<EnterpriseId>,
}

/// The body of `POST /api/v1/profiles`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateProfile {
    /// The enterprise (required unless the caller is an enterprise account).
    enterprise_id: Option<EnterpriseId>,
    /// Name, description, parameters and firmware per model.
    #[serde(flatten)]
    settings: ProfileSettings,
}

/// The body of `POST /api/v1/profiles/{id}/copy`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CopyProfile {
    /// The copy's name (unique in the enterprise).
    name: String,
}

/// Profiles of one enterprise, by name.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct ProfileList {
    items: Vec<StoredProfile>,
}

/// Deployments of one enterprise, by container priority.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct DeploymentList {
    items: Vec<Deployment>,
}

/// The body of `PUT /api/v1/profile-deployments`: the ordered profiles of one container target.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetDeployment {
    /// The enterprise (required unless the caller is an enterprise account).
    enterprise_id: Option<EnterpriseId>,
    /// `{"container": "global"}`, `{"container": "site", "site_id": 3}`, `{"container": "model",
    /// "model": "VVX 500"}`, `{"container": "group", "group_id": 2}` or `{"container": "device",
    /// "device_id": 9}`.
    target: DeploymentTarget,
    /// The profiles, first wins; empty removes the deployment.
    profiles: Vec<ProfileId>,
}

/// The answer of `PUT /api/v1/profile-deployments`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct DeploymentAnswer {
    /// The deployment as stored; null when it was removed.
    deployment: Option<Deployment>,
}

/// Where a value of the effective configuration came from.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct OriginView {
    profile_id: ProfileId,
    profile_name: String,
    container: Container,
    target: DeploymentTarget,
    /// The profile's position in that deployment, from 1.
    position: u32,
}

/// One key of the effective configuration.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct EffectiveParameter {
    key: String,
    /// The value after substitution (empty when `problem` is set).
    value: String,
    /// Why the value is not pushed.
    problem: Option<String>,
    origin: OriginView,
}

/// The firmware for the device's model.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct EffectiveFirmware {
    firmware_id: FirmwareId,
    origin: OriginView,
}

/// `GET /api/v1/devices/{id}/configuration`: the resultant configuration of a device.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct EffectiveConfiguration {
    device_id: DeviceId,
    /// The site path and groups resolution used.
    placement: Placement,
    /// Every key, by key, with its origin.
    parameters: Vec<EffectiveParameter>,
    /// The firmware for the device's model, if a profile names one.
    firmware: Option<EffectiveFirmware>,
    /// More keys applied than a device's configuration holds: the lowest-ranked were left out.
    truncated: bool,
    /// The last provisioning (null if never provisioned).
    last_provision: Option<LastProvision>,
}

fn origin(o: &fleetpulse_store::resolve::Origin<'_>) -> OriginView {
    OriginView {
        profile_id: o.profile_id,
        profile_name: o.profile_name.to_owned(),
        container: o.container(),
        target: o.target.clone(),
        position: o.position,
    }
}

/// The enterprise a request names (or the caller's own), in the caller's scope.
async fn enterprise_of(
    ctx: &AppState,
    auth: &AuthAdmin,
    requested: Option<EnterpriseId>,
) -> Result<EnterpriseId, ApiError> {
    auth.require(Feature::Devices)?;
    let id =
        auth.enterprise_filter(ctx, requested).await?.ok_or_else(|| ApiError::invalid("enterprise_id is required"))?;
    Ok(enterprises::find(ctx, auth, id).await?.id)
}

/// The profile, checked against the caller's scope through its enterprise (404 outside it).
async fn find(ctx: &AppState, auth: &AuthAdmin, id: ProfileId) -> Result<StoredProfile, ApiError> {
    auth.require(Feature::Devices)?;
    match ctx.api.store.entities.profile(id).await? {
        Some(p) if auth.can_see(ctx, p.enterprise_id).await? => Ok(p),
        _ => Err(ApiError::NotFound("profile")),
    }
}

/// The device, checked against the caller's scope (404 outside it).
async fn find_device(ctx: &AppState, auth: &AuthAdmin, id: DeviceId) -> Result<Device, ApiError> {
    auth.require(Feature::Devices)?;
    match ctx.api.store.entities.device(id).await? {
        Some(d) if auth.can_see(ctx, d.enterprise_id).await? => Ok(d),
        _ => Err(ApiError::NotFound("device")),
    }
}

/// `GET /api/v1/profiles?enterprise_id=`.
async fn list(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Query(q): Query<EnterpriseQuery>,
) -> Result<Json<ProfileList>, ApiError> {
    let enterprise = enterprise_of(&ctx, &auth, q.enterprise_id).await?;
    Ok(Json(ProfileList { items: ctx.api.store.entities.list_profiles(enterprise).await? }))
}

/// `POST /api/v1/profiles`: 201 with the profile; 400 naming a bad key, value or substitution,
/// 409 for a taken name.
async fn create(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Json(req): Json<CreateProfile>,
) -> Result<Response, ApiError> {
    let enterprise = enterprise_of(&ctx, &auth, req.enterprise_id).await?;
    auth.require_act(&ctx, enterprise).await?;
    let created = ctx.api.store.entities.create_profile(enterprise, req.settings, ctx.clock.now()).await?;
    tracing::info!(message = "Created a profile.", profile = %created.id, %enterprise, by_account = %auth.account.id);
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// `GET /api/v1/profiles/{id}`.
async fn show(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<ProfileId>,
) -> Result<Json<StoredProfile>, ApiError> {
    Ok(Json(find(&ctx, &auth, id).await?))
}

/// `PUT /api/v1/profiles/{id}`: replaces name, description, parameters and firmware; pushes the
/// changes to online devices in the background.
async fn replace(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<ProfileId>,
    Json(settings): Json<ProfileSettings>,
) -> Result<Json<StoredProfile>, ApiError> {
    let enterprise = find(&ctx, &auth, id).await?.enterprise_id;
    auth.require_act(&ctx, enterprise).await?;
    let updated = ctx.api.store.entities.update_profile(id, settings, ctx.clock.now()).await?;
    let updated = updated.ok_or(ApiError::NotFound("profile"))?;
    provisioning::push_changes_in_background(&ctx, enterprise, auth.caller.account);
    Ok(Json(updated))
}

/// `DELETE /api/v1/profiles/{id}`: 204; 409 naming the deployments that still list it.
async fn remove(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<ProfileId>,
) -> Result<StatusCode, ApiError> {
    let enterprise = find(&ctx, &auth, id).await?.enterprise_id;
    auth.require_act(&ctx, enterprise).await?;
    match ctx.api.store.entities.delete_profile(id).await {
        Ok(true) => Ok(StatusCode::NO_CONTENT),
        Ok(false) => Err(ApiError::NotFound("profile")),
        Err(StoreError::InvalidInput(message)) => Err(ApiError::Conflict(message)),
        Err(e) => Err(e.into()),
    }
}

/// `POST /api/v1/profiles/{id}/copy`: 201 with the copy (same parameters and firmware).
async fn copy(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<ProfileId>,
    Json(req): Json<CopyProfile>,
) -> Result<Response, ApiError> {
    let source = find(&ctx, &auth, id).await?;
    auth.require_act(&ctx, source.enterprise_id).await?;
    let settings = ProfileSettings { name: req.name, ..source.settings };
    let created = ctx.api.store.entities.create_profile(source.enterprise_id, settings, ctx.clock.now()).await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// The `.cfg` text of a profile: comment lines with its name, description and firmware, then
/// one `key=value` line per parameter, by key (values hold no line breaks; substitutions stay
/// as written).
pub(crate) fn cfg_text(p: &StoredProfile) -> String {
    let mut out = format!("# fleetpulse configuration profile {}: {}\n", p.id, p.settings.name);
    if !p.settings.description.is_empty() {
        out.push_str(&format!("# {}\n", p.settings.description));
    }
    for (model, firmware) in &p.settings.firmware {
        out.push_str(&format!("# firmware {model}: {firmware}\n"));
    }
    for (key, value) in &p.settings.parameters {
        out.push_str(key);
        out.push('=');
        out.push_str(value);
        out.push('\n');
    }
    out
}

/// `GET /api/v1/profiles/{id}/export`: the profile as a `.cfg` download.
async fn export(auth: AuthAdmin, State(ctx): State<AppState>, Path(id): Path<ProfileId>) -> Result<Response, ApiError> {
    let p = find(&ctx, &auth, id).await?;
    let disposition = format!("attachment; filename=\"profile-{}.cfg\"", p.id);
    let disposition = HeaderValue::from_str(&disposition).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8")),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        cfg_text(&p),
    )
        .into_response())
}

/// `GET /api/v1/profile-deployments?enterprise_id=`.
async fn list_deployments(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Query(q): Query<EnterpriseQuery>,
) -> Result<Json<DeploymentList>, ApiError> {
    let enterprise = enterprise_of(&ctx, &auth, q.enterprise_id).await?;
    Ok(Json(DeploymentList { items: ctx.api.store.entities.list_deployments(enterprise).await? }))
}

/// Whether the target exists in the enterprise: a device must be the enterprise's (404 like a
/// missing one otherwise).
async fn check_target(
    ctx: &AppState,
    auth: &AuthAdmin,
    enterprise: EnterpriseId,
    target: &DeploymentTarget,
) -> Result<(), ApiError> {
    match target {
        DeploymentTarget::Device { device_id } => {
            let device = find_device(ctx, auth, *device_id).await?;
            if device.enterprise_id != enterprise {
                return Err(ApiError::NotFound("device"));
            }
        }
        DeploymentTarget::Site { site_id } => {
            let site = ctx.api.store.entities.site(*site_id).await?;
            if site.is_none_or(|s| s.enterprise_id != enterprise) {
                return Err(ApiError::NotFound("site"));
            }
        }
        DeploymentTarget::Group { group_id } => {
            let group = ctx.api.store.entities.group(*group_id).await?;
            if group.is_none_or(|g| g.enterprise_id != enterprise) {
                return Err(ApiError::NotFound("group"));
            }
        }
        DeploymentTarget::Model { .. } | DeploymentTarget::Global => {}
    }
    Ok(())
}

/// `PUT /api/v1/profile-deployments`: sets the ordered profiles of one container target (only
/// the enterprise's own profiles and devices); pushes the changes in the background.
async fn set_deployment(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Json(req): Json<SetDeployment>,
) -> Result<Json<DeploymentAnswer>, ApiError> {
    let enterprise = enterprise_of(&ctx, &auth, req.enterprise_id).await?;
    auth.require_act(&ctx, enterprise).await?;
    check_target(&ctx, &auth, enterprise, &req.target).await?;
    let deployment =
        ctx.api.store.entities.set_deployment(enterprise, req.target, req.profiles, ctx.clock.now()).await?;
    provisioning::push_changes_in_background(&ctx, enterprise, auth.caller.account);
    Ok(Json(DeploymentAnswer { deployment }))
}

/// `GET /api/v1/devices/{id}/configuration`: every key with its value and origin.
async fn configuration(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<DeviceId>,
) -> Result<Json<EffectiveConfiguration>, ApiError> {
    let device = find_device(&ctx, &auth, id).await?;
    let store = ctx.api.store.entities.as_ref();
    let set = provisioning::profile_set(store, device.enterprise_id).await?;
    let (facts, placement) = provisioning::device_facts(store, &device).await?;
    let resolved = set.resolve(&facts);
    let record = provisioning::settled_record(store, id).await?;
    let parameters = resolved
        .parameters
        .iter()
        .map(|(k, p)| EffectiveParameter {
            key: (*k).to_owned(),
            value: p.value.to_string(),
            problem: p.problem.clone(),
            origin: origin(&p.origin),
        })
        .collect();
    Ok(Json(EffectiveConfiguration {
        device_id: id,
        placement,
        parameters,
        firmware: resolved
            .firmware
            .as_ref()
            .map(|f| EffectiveFirmware { firmware_id: f.firmware_id, origin: origin(&f.origin) }),
        truncated: resolved.truncated,
        last_provision: provisioning::last_provision(&record),
    }))
}

/// `POST /api/v1/devices/{id}/provision`: pushes what changed now (202 with the queued
/// commands, or 200 `up_to_date`).
async fn provision(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<DeviceId>,
) -> Result<(StatusCode, Json<ProvisionOutcome>), ApiError> {
    let device = find_device(&ctx, &auth, id).await?;
    auth.require_device_management(&ctx, device.enterprise_id).await?;
    let outcome = provisioning::provision(&ctx, &device, auth.caller.account, ctx.clock.now()).await?;
    let status = if outcome.commands.is_empty() { StatusCode::OK } else { StatusCode::ACCEPTED };
    Ok((status, Json(outcome)))
}
