//! Files devices uploaded in answer to commands (issue 11): a device's files, one file's
//! metadata, and its content as a download streamed chunk by chunk from the store (never whole
//! in memory). Downloads are written to the operation log (`operation_log::AUDITED_READS`).

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use fleetpulse_proto::{DeviceId, FileId};
use fleetpulse_store::{EntityStore, Feature, MAX_FILE_PAGE, StoredFile};

use crate::auth::AuthAdmin;
use crate::error::ApiError;
use crate::extract::{Json, Path, Query};
use crate::routes::commands::{PageQuery, visible_device};
use crate::routes::listing::{ListPage, page};
use crate::state::AppState;

/// Default page of a device's files.
const LIST_DEFAULT: u32 = 50;

/// Routes of this module: (path, handlers by method).
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/api/v1/devices/{id}/files", get(list)),
        ("/api/v1/files/{id}", get(show)),
        ("/api/v1/files/{id}/content", get(content)),
    ]
}

/// `GET /api/v1/devices/{id}/files?after=&limit=`: the device's files, newest first.
async fn list(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<DeviceId>,
    Query(q): Query<PageQuery>,
) -> Result<Json<ListPage<StoredFile>>, ApiError> {
    auth.require(Feature::Devices)?;
    let (after, limit) = q.parts();
    let page = page(after, limit, LIST_DEFAULT, MAX_FILE_PAGE)?;
    visible_device(&auth, &ctx, id).await?;
    let files = ctx.api.store.entities.list_device_files(id, page).await?;
    Ok(Json(ListPage::new(files, page, |f| f.id.0)))
}

/// The file if the caller sees its device's enterprise, else 404.
async fn find(auth: &AuthAdmin, ctx: &AppState, id: FileId) -> Result<StoredFile, ApiError> {
    match ctx.api.store.entities.file(id).await? {
        Some(f) if auth.can_see(ctx, f.enterprise_id).await? => Ok(f),
        _ => Err(ApiError::NotFound("file")),
    }
}

/// `GET /api/v1/files/{id}`: one file's metadata.
async fn show(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<FileId>,
) -> Result<Json<StoredFile>, ApiError> {
    auth.require(Feature::Devices)?;
    Ok(Json(find(&auth, &ctx, id).await?))
}

/// `GET /api/v1/files/{id}/content`: the content as a download (`application/octet-stream`,
/// `attachment` under its stored name, its exact length), read from the store one chunk at a
/// time as the client takes it. A file deleted (expired) while it is being sent ends the
/// response early; the client sees fewer bytes than `Content-Length`.
async fn content(auth: AuthAdmin, State(ctx): State<AppState>, Path(id): Path<FileId>) -> Result<Response, ApiError> {
    auth.require(Feature::Devices)?;
    let file = find(&auth, &ctx, id).await?;
    // The name passed check_file_name when stored: `[A-Za-z0-9._-]`, so it needs no quoting.
    let disposition = HeaderValue::try_from(format!("attachment; filename=\"{}\"", file.name))
        .map_err(|e| ApiError::Internal(format!("content-disposition: {e}")))?;
    let store = ctx.api.store.entities.clone();
    let chunks = file.chunks();
    let stream = futures_util::stream::try_unfold(0u64, move |index| {
        let store = store.clone();
        async move { next_chunk(store.as_ref(), id, index, chunks).await }
    });
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream")),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CONTENT_LENGTH, HeaderValue::from(file.size)),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Chunk `index` of the file and the index after it; `None` after the last chunk. A chunk
/// missing before the end (the file was deleted meanwhile) is an error, which ends the body.
async fn next_chunk(
    store: &dyn EntityStore,
    id: FileId,
    index: u64,
    chunks: u64,
) -> Result<Option<(Bytes, u64)>, std::io::Error> {
    if index >= chunks {
        return Ok(None);
    }
    match store.file_chunk(id, index).await {
        Ok(Some(bytes)) => Ok(Some((Bytes::from(bytes), index + 1))),
        Ok(None) => Err(std::io::Error::other(format!("file {id} was deleted while being downloaded"))),
        Err(error) => {
            tracing::error!(message = "Reading a file chunk failed.", file = %id, index, %error);
            Err(std::io::Error::other(error))
        }
    }
}
