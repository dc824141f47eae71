//! Per-account device list settings (DEV-1): saved search labels (a name and a device-list
//! query string, validated like `GET /api/v1/devices` and against the account's scope) and the
//! chosen list columns.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get};
use fleetpulse_store::{DeviceLabel, NewDeviceLabel};
use serde::{Deserialize, Serialize};

use crate::auth::AuthAdmin;
use crate::error::ApiError;
use crate::extract::{Json, Path, RowId};
use crate::routes::devices::parse_device_params;
use crate::state::AppState;
use crate::text;
use fleetpulse_store::MAX_DEVICE_LABEL_NAME;

/// The columns a device list can show (DEV-1), in their default order.
pub(crate) const DEVICE_COLUMNS: &[&str] = &[
    "mac",
    "model",
    "name",
    "device_type",
    "public_ip",
    "private_ip",
    "site",
    "firmware",
    "online",
    "sip_status",
    "channel",
    "enterprise",
    "last_report_at",
    "groups",
];

/// Routes of this module: (path, handlers by method).
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/api/v1/device-labels", get(list).post(create)),
        ("/api/v1/device-labels/{id}", delete(remove)),
        ("/api/v1/account/device-columns", get(columns).put(set_columns)),
    ]
}

/// The caller's labels.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct Labels {
    items: Vec<DeviceLabel>,
}

/// `GET /api/v1/device-labels`: the caller's saved searches, oldest first (at most 50).
async fn list(auth: AuthAdmin, State(ctx): State<AppState>) -> Result<Json<Labels>, ApiError> {
    auth.require(fleetpulse_store::Feature::Devices)?;
    Ok(Json(Labels { items: ctx.api.store.entities.list_device_labels(auth.account.id).await? }))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LabelRequest {
    name: String,
    /// A device-list query string (`online=true&model=T54W`), without `cursor` and `limit`.
    filter: String,
}

/// `POST /api/v1/device-labels {name, filter}`: saves a search; 201 with the label. 400 for a
/// filter `GET /api/v1/devices` would refuse (or one with `cursor`/`limit`), a bad name, or the
/// 51st label; 404 for a filter naming an enterprise or channel outside the caller's scope;
/// 409 for a name the caller already uses.
async fn create(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Json(req): Json<LabelRequest>,
) -> Result<Response, ApiError> {
    auth.require(fleetpulse_store::Feature::Devices)?;
    let params = parse_device_params(&req.filter)?;
    if params.cursor.is_some() || params.limit.is_some() {
        return Err(ApiError::invalid("a label's filter takes no cursor or limit"));
    }
    auth.device_scope(&ctx, params.enterprises, params.channels).await?;
    let new = NewDeviceLabel {
        account_id: auth.account.id,
        name: text::name("name", &req.name, MAX_DEVICE_LABEL_NAME)?,
        filter: req.filter,
    };
    let label = ctx.api.store.entities.create_device_label(new, ctx.clock.now()).await?;
    Ok((StatusCode::CREATED, Json(label)).into_response())
}

/// `DELETE /api/v1/device-labels/{id}`: 204; 404 if the caller has no such label.
async fn remove(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(RowId(id)): Path<RowId>,
) -> Result<StatusCode, ApiError> {
    if ctx.api.store.entities.delete_device_label(auth.account.id, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("device label"))
    }
}

/// The chosen columns.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Columns {
    columns: Vec<String>,
}

/// `GET /api/v1/account/device-columns`: the caller's chosen columns (every column until it
/// chooses).
async fn columns(auth: AuthAdmin, State(ctx): State<AppState>) -> Result<Json<Columns>, ApiError> {
    let chosen = ctx.api.store.entities.device_columns(auth.account.id).await?;
    let columns = chosen.unwrap_or_else(|| DEVICE_COLUMNS.iter().map(|c| (*c).to_owned()).collect());
    Ok(Json(Columns { columns }))
}

/// `PUT /api/v1/account/device-columns {columns}`: 1 or more distinct names of the column set,
/// in display order; anything else is 400.
async fn set_columns(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Json(req): Json<Columns>,
) -> Result<Json<Columns>, ApiError> {
    if req.columns.is_empty() || req.columns.len() > DEVICE_COLUMNS.len() {
        return Err(ApiError::invalid(format!("choose 1 to {} columns", DEVICE_COLUMNS.len())));
    }
    for (i, c) in req.columns.iter().enumerate() {
        if !DEVICE_COLUMNS.contains(&c.as_str()) {
            return Err(ApiError::invalid(format!("unknown column {c:?} (known: {})", DEVICE_COLUMNS.join(", "))));
        }
        if req.columns[..i].contains(c) {
            return Err(ApiError::invalid(format!("column {c:?} is chosen twice")));
        }
    }
    ctx.api.store.entities.set_device_columns(auth.account.id, req.columns.clone()).await?;
    Ok(Json(req))
}
