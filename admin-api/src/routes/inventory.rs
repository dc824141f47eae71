//! The device inventory (DEV-4): devices added by MAC or serial, edited, moved between the
//! caller's enterprises, deleted (the session closed with `DEVICE_DELETED`), and bulk edits of
//! the devices a device-list filter chooses. Import and export are in `device_imports.rs` and
//! `device_export.rs`.

use axum::extract::State;
use axum::http::StatusCode;
use fleetpulse_proto::{DeviceId, EnterpriseId, Mac, close_code};
use fleetpulse_store::{AttributeChange, Attributes, Device, DeviceEdit, DeviceQuery, Feature, NewInventoryDevice};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::AuthAdmin;
use crate::error::ApiError;
use crate::extract::{Json, Path};
use crate::routes::commands::filter_query;
use crate::routes::devices::parse_device_params;
use crate::state::AppState;

/// `POST /api/v1/devices`: a device to add.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddDevice {
    /// Its enterprise; an enterprise admin's own when left out.
    enterprise_id: Option<EnterpriseId>,
    /// MAC address (12 hex digits, separators allowed); at least one of MAC and serial.
    mac: Option<String>,
    /// Serial number (`[A-Za-z0-9._-]`, at most 64).
    serial: Option<String>,
    /// Model (at most 64 characters; the device's own `Hello` corrects it).
    #[serde(default)]
    model: String,
    /// Display name (at most 64 characters).
    #[serde(default)]
    name: String,
    /// Attributes: at most 32 keys of `[a-z0-9_.-]{1,64}`, values of at most 256 characters.
    #[serde(default)]
    attributes: Attributes,
}

/// A device with its attributes.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct InventoryDevice {
    #[serde(flatten)]
    device: Device,
    attributes: Attributes,
}

/// `PATCH /api/v1/devices/{id}`: every field given changes.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EditDevice {
    name: Option<String>,
    model: Option<String>,
    /// `{"replace": {..}}` (exactly these) or `{"merge": {"key": "value" | null}}` (set or remove).
    attributes: Option<AttributeChange>,
}

/// `POST /api/v1/devices/{id}/move`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MoveDevice {
    /// The enterprise to move to (within the caller's scope).
    enterprise_id: EnterpriseId,
}

/// `POST /api/v1/devices/bulk-edit`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BulkEdit {
    /// The devices the device list shows with these parameters (as for bulk commands: the names
    /// and values of `GET /api/v1/devices`, without `cursor`, `limit`, `sort`, `order`).
    filter: serde_json::Map<String, Value>,
    /// What changes: `model` and/or `attributes` (names are per device).
    changes: BulkChanges,
}

/// The changes of a bulk edit.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BulkChanges {
    model: Option<String>,
    attributes: Option<AttributeChange>,
}

/// The answer of a bulk edit.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct BulkEdited {
    /// Devices changed (at most 10,000; a filter choosing more is refused, nothing changed).
    changed: u64,
}

fn parse_mac(mac: &str) -> Result<Mac, ApiError> {
    let digits: String =
        mac.chars().filter(|c| !matches!(c, ':' | '-' | '.')).map(|c| c.to_ascii_lowercase()).collect();
    Mac::parse(&digits).map_err(|_| ApiError::invalid(format!("mac {mac:?} is not a MAC address (12 hex digits)")))
}

/// The device if the caller sees it (404 otherwise) and may change things inside its
/// enterprise (403 `acting_required` for a channel not acting inside it).
async fn changeable(auth: &AuthAdmin, ctx: &AppState, id: DeviceId) -> Result<Device, ApiError> {
    auth.require(Feature::Devices)?;
    let device = match ctx.api.store.entities.device(id).await? {
        Some(d) if auth.can_see(ctx, d.enterprise_id).await? => d,
        _ => return Err(ApiError::NotFound("device")),
    };
    auth.require_act(ctx, device.enterprise_id).await?;
    Ok(device)
}

async fn with_attributes(ctx: &AppState, device: Device) -> Result<InventoryDevice, ApiError> {
    let attributes = ctx.api.store.entities.device_attributes(device.id).await?.unwrap_or_default();
    Ok(InventoryDevice { device, attributes })
}

/// `POST /api/v1/devices`: adds a device; 201 with it. 409 `conflict` if its MAC (or its serial
/// without a MAC) is registered anywhere on the platform.
pub(crate) async fn add(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Json(req): Json<AddDevice>,
) -> Result<(StatusCode, Json<InventoryDevice>), ApiError> {
    auth.require(Feature::Devices)?;
    let enterprise = auth
        .enterprise_filter(&ctx, req.enterprise_id)
        .await?
        .ok_or_else(|| ApiError::invalid("enterprise_id is required"))?;
    auth.require_act(&ctx, enterprise).await?;
    let mac = req.mac.as_deref().map(parse_mac).transpose()?;
    let new = NewInventoryDevice {
        enterprise_id: enterprise,
        mac,
        serial: req.serial,
        model: req.model,
        name: req.name,
        attributes: req.attributes,
        at: ctx.clock.now(),
    };
    let device = ctx.api.store.entities.add_device(new).await?;
    Ok((StatusCode::CREATED, Json(with_attributes(&ctx, device).await?)))
}

/// `PATCH /api/v1/devices/{id}`: renames, changes the model or the attributes.
pub(crate) async fn edit(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<DeviceId>,
    Json(req): Json<EditDevice>,
) -> Result<Json<InventoryDevice>, ApiError> {
    changeable(&auth, &ctx, id).await?;
    let edit = DeviceEdit { name: req.name, model: req.model, enterprise_id: None, attributes: req.attributes };
    let device =
        ctx.api.store.entities.edit_device(id, edit, ctx.clock.now()).await?.ok_or(ApiError::NotFound("device"))?;
    Ok(Json(with_attributes(&ctx, device).await?))
}

/// `POST /api/v1/devices/{id}/move`: moves the device to another enterprise the caller may
/// change things inside (404 for one it does not see). Its pending commands are cancelled, its
/// uploaded files deleted, and its session closed with `DEVICE_MOVED` (it must reconnect with
/// the new enterprise's credential).
pub(crate) async fn move_device(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<DeviceId>,
    Json(req): Json<MoveDevice>,
) -> Result<Json<InventoryDevice>, ApiError> {
    changeable(&auth, &ctx, id).await?;
    let exists = ctx.api.store.entities.enterprise(req.enterprise_id).await?.is_some();
    if !exists || !auth.can_see(&ctx, req.enterprise_id).await? {
        return Err(ApiError::NotFound("enterprise"));
    }
    auth.require_act(&ctx, req.enterprise_id).await?;
    let edit = DeviceEdit { enterprise_id: Some(req.enterprise_id), ..DeviceEdit::default() };
    let device =
        ctx.api.store.entities.edit_device(id, edit, ctx.clock.now()).await?.ok_or(ApiError::NotFound("device"))?;
    ctx.api.sessions.close(id, close_code::DEVICE_MOVED, "moved to another enterprise");
    Ok(Json(with_attributes(&ctx, device).await?))
}

/// `DELETE /api/v1/devices/{id}`: deletes the device with its command queue and files; its
/// events and alarm records stay until retention removes them. Its session is closed with
/// `DEVICE_DELETED`. 204.
pub(crate) async fn delete(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<DeviceId>,
) -> Result<StatusCode, ApiError> {
    changeable(&auth, &ctx, id).await?;
    ctx.api.store.entities.delete_device(id).await?.ok_or(ApiError::NotFound("device"))?;
    ctx.api.sessions.close(id, close_code::DEVICE_DELETED, "deleted by an admin");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/devices/bulk-edit`: one change for every device the filter chooses within the
/// caller's scope (at most 10,000, else 429 and nothing changes), in one transaction.
pub(crate) async fn bulk_edit(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Json(req): Json<BulkEdit>,
) -> Result<Json<BulkEdited>, ApiError> {
    auth.require(Feature::Devices)?;
    let params = parse_device_params(&filter_query(&req.filter)?)?;
    let (enterprises, channels) = auth.device_scope(&ctx, params.enterprises, params.channels).await?;
    // Every enterprise the edit may reach must be one the caller may change things inside:
    // those the filter names, else all it sees (the platform: everything).
    let targets = match (&enterprises, auth.visible_enterprises(&ctx).await?) {
        (Some(list), _) => list.clone(),
        (None, Some(visible)) => visible,
        (None, None) => Vec::new(),
    };
    for e in targets {
        auth.require_act(&ctx, e).await?;
    }
    let query = DeviceQuery { enterprises, channels, ..params.query };
    let edit =
        DeviceEdit { name: None, model: req.changes.model, enterprise_id: None, attributes: req.changes.attributes };
    let changed = ctx.api.store.entities.bulk_edit_devices(query, edit, ctx.clock.now()).await?;
    Ok(Json(BulkEdited { changed }))
}
