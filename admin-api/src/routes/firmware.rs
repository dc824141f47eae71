//! Firmware images and upgrades (PRV-4): upload (the body streamed to a temporary file while it
//! is hashed, the size limit enforced on the declared length and on the stream), list, read and
//! delete an enterprise's images, and upgrade one device. Many devices are upgraded through a
//! scheduled task of kind `upgrade_firmware` (`routes/tasks.rs`), whose runs make each device's
//! own download link.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use fleetpulse_proto::{DeviceId, EnterpriseId, FirmwareId};
use fleetpulse_store::{Feature, FirmwareDeletion, FirmwareImage, MAX_FIRMWARE_PAGE, NewFirmware, is_label};
use futures_util::StreamExt;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::auth::AuthAdmin;
use crate::error::ApiError;
use crate::extract::{Json, Path, Query};
use crate::routes::commands::CommandBody;
use crate::routes::enterprises;
use crate::routes::listing::{ListPage, page};
use crate::state::AppState;

/// Default page of the image list.
const LIST_DEFAULT: u32 = 50;

/// Routes of this module: (path, handlers by method).
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/api/v1/firmware", get(list).post(upload)),
        ("/api/v1/firmware/{id}", get(show).delete(delete)),
        ("/api/v1/devices/{id}/firmware-upgrade", post(upgrade)),
    ]
}

/// `POST /api/v1/firmware?enterprise_id=&model=&version=&name=&sha256=` with the image as the
/// body.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UploadQuery {
    /// The enterprise the image is for (required unless the caller is an enterprise account).
    enterprise_id: Option<EnterpriseId>,
    /// The device model it is for, as devices report it (1 to 64 printable characters, no
    /// spaces).
    model: String,
    /// The firmware version it installs (same rule).
    version: String,
    /// The file's name (`[A-Za-z0-9._-]`); `<model>-<version>.bin` when left out.
    name: Option<String>,
    /// The SHA-256 the uploader expects (lowercase hex): the upload is refused when the body's
    /// differs.
    sha256: Option<String>,
}

/// `GET /api/v1/firmware?enterprise_id=&after=&limit=`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// The enterprise (required unless the caller is an enterprise account).
    enterprise_id: Option<EnterpriseId>,
    after: Option<u64>,
    limit: Option<u32>,
}

/// The body of `POST /api/v1/devices/{id}/firmware-upgrade`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpgradeRequest {
    /// The image to install: one of the device's enterprise, for the device's model.
    image: FirmwareId,
}

/// The enterprise a request names (or the caller's own), checked: 404 outside the scope, 400
/// when none is named.
async fn enterprise_of(
    ctx: &AppState,
    auth: &AuthAdmin,
    requested: Option<EnterpriseId>,
) -> Result<EnterpriseId, ApiError> {
    let id =
        auth.enterprise_filter(ctx, requested).await?.ok_or_else(|| ApiError::invalid("enterprise_id is required"))?;
    Ok(enterprises::find(ctx, auth, id).await?.id)
}

/// The image if the caller sees its enterprise, else 404.
async fn find(ctx: &AppState, auth: &AuthAdmin, id: FirmwareId) -> Result<FirmwareImage, ApiError> {
    match ctx.api.store.entities.firmware(id).await? {
        Some(image) if auth.can_see(ctx, image.enterprise_id).await? => Ok(image),
        _ => Err(ApiError::NotFound("firmware image")),
    }
}

/// `POST /api/v1/firmware`: 201 with the stored image and the SHA-256 computed while it was
/// streamed in. 413 when `Content-Length` or the bytes received pass `[firmware] max_bytes`
/// (nothing is stored); 400 for a bad model, version or name, an empty body or a SHA-256 other
/// than the one given; 429 at the enterprise's image limit.
async fn upload(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Query(q): Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    auth.require(Feature::Devices)?;
    let enterprise = enterprise_of(&ctx, &auth, q.enterprise_id).await?;
    auth.require_act(&ctx, enterprise).await?;
    for (what, text) in [("model", &q.model), ("version", &q.version)] {
        if !is_label(text) {
            return Err(ApiError::invalid(format!("{what} must be 1 to 64 printable characters without spaces")));
        }
    }
    let name = q.name.unwrap_or_else(|| format!("{}-{}.bin", q.model, q.version));
    fleetpulse_proto::domain::check_file_name(&name)
        .map_err(|_| ApiError::invalid("name may use only A-Z a-z 0-9 . _ - (at most 255 characters)"))?;
    let limit = ctx.api.config.firmware.max_upload_bytes;
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge);
    }
    // Streamed to a temporary file while hashed; never more than one body chunk in memory.
    let temp = tempfile::NamedTempFile::new().map_err(|e| ApiError::Internal(format!("temporary file: {e}")))?;
    let mut file =
        tokio::fs::File::from_std(temp.reopen().map_err(|e| ApiError::Internal(format!("temporary file: {e}")))?);
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::invalid(format!("the upload ended early: {e}")))?;
        size += chunk.len() as u64;
        if size > limit {
            return Err(ApiError::PayloadTooLarge);
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(|e| ApiError::Internal(format!("temporary file: {e}")))?;
    }
    file.flush().await.map_err(|e| ApiError::Internal(format!("temporary file: {e}")))?;
    drop(file);
    if size == 0 {
        return Err(ApiError::invalid("the body is empty: send the image as the request body"));
    }
    let sha256: [u8; 32] = hasher.finalize().into();
    let hex = crate::secrets::hex(&sha256);
    if let Some(expected) = q.sha256.filter(|e| !e.eq_ignore_ascii_case(&hex)) {
        return Err(ApiError::invalid(format!("the body's SHA-256 is {hex}, not the expected {expected}")));
    }
    let new = NewFirmware {
        enterprise_id: enterprise,
        model: q.model,
        version: q.version,
        name,
        size,
        sha256,
        uploaded_by: auth.caller.account,
        uploaded_at: ctx.clock.now(),
    };
    let image = ctx.api.store.entities.store_firmware(new, temp.path()).await?;
    tracing::info!(message = "Stored a firmware image.", image = %image.id, enterprise = %enterprise, size, model = %image.model, version = %image.version);
    Ok((StatusCode::CREATED, Json(image)).into_response())
}

/// `GET /api/v1/firmware`: the enterprise's images, newest first.
async fn list(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<ListPage<FirmwareImage>>, ApiError> {
    auth.require(Feature::Devices)?;
    let page = page(q.after, q.limit, LIST_DEFAULT, MAX_FIRMWARE_PAGE)?;
    let enterprise = enterprise_of(&ctx, &auth, q.enterprise_id).await?;
    let images = ctx.api.store.entities.list_firmware(enterprise, page).await?;
    Ok(Json(ListPage::new(images, page, |i| i.id.0)))
}

/// `GET /api/v1/firmware/{id}`.
async fn show(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<FirmwareId>,
) -> Result<Json<FirmwareImage>, ApiError> {
    auth.require(Feature::Devices)?;
    Ok(Json(find(&ctx, &auth, id).await?))
}

/// `DELETE /api/v1/firmware/{id}`: 204; 409 naming the pending upgrades that use the image.
async fn delete(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<FirmwareId>,
) -> Result<StatusCode, ApiError> {
    auth.require(Feature::Devices)?;
    let image = find(&ctx, &auth, id).await?;
    auth.require_act(&ctx, image.enterprise_id).await?;
    match ctx.api.store.entities.delete_firmware(id).await? {
        Some(FirmwareDeletion::Deleted) => Ok(StatusCode::NO_CONTENT),
        None => Err(ApiError::NotFound("firmware image")),
        Some(FirmwareDeletion::InUse { pending, upgrades }) => {
            let named: Vec<String> =
                upgrades.iter().map(|u| format!("command {} (device {})", u.command_id, u.device_id)).collect();
            let more = if pending > upgrades.len() as u64 { ", …" } else { "" };
            Err(ApiError::Conflict(format!(
                "firmware image {id} is used by {pending} pending upgrade(s): {}{more}; cancel them or wait until they finish",
                named.join(", ")
            )))
        }
    }
}

/// `POST /api/v1/devices/{id}/firmware-upgrade`: queues the device's upgrade (its own download
/// link) and wakes its session; 201 with the command. Progress and result: the command
/// (`GET /api/v1/commands/{id}`, the device's command list).
async fn upgrade(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<DeviceId>,
    Json(req): Json<UpgradeRequest>,
) -> Result<(StatusCode, Json<CommandBody>), ApiError> {
    auth.require(Feature::Devices)?;
    let device = match ctx.api.store.entities.device(id).await? {
        Some(d) if auth.can_see(&ctx, d.enterprise_id).await? => d,
        _ => return Err(ApiError::NotFound("device")),
    };
    auth.require_device_management(&ctx, device.enterprise_id).await?;
    let command =
        crate::firmware::upgrade_device_at(&ctx.api, &device, req.image, auth.caller.account, ctx.clock.now()).await?;
    Ok((StatusCode::CREATED, Json(CommandBody::from(command))))
}
