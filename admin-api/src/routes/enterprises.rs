//! Enterprises: listing, creation (with a fresh provisioning credential), lookup, and the
//! stored-sequences verification endpoint the load tester uses to count stored messages.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use fleetpulse_proto::{ChannelId, DeviceId, EnterpriseId};
use fleetpulse_store::{Enterprise, NewEnterprise, StoredSequences};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::{AuthAdmin, Scope};
use crate::error::ApiError;
use crate::extract::{Json, Path, Query};
use crate::routes::{ListPage, next_after, page};
use crate::secrets;

/// Most characters of an enterprise name, after trimming.
const MAX_NAME_CHARS: usize = 128;
/// Default and largest page of the enterprise listing.
const LIST_DEFAULT: u32 = 50;
const LIST_MAX: u32 = 1000;
/// Default and largest page of the stored-sequences listing.
const SEQUENCES_DEFAULT: u32 = 1000;
const SEQUENCES_MAX: u32 = 1000;

/// Routes of this module: (path, handlers by method).
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/api/v1/enterprises", get(list).post(create)),
        ("/api/v1/enterprises/{id}", get(show)),
        ("/api/v1/enterprises/{id}/stored-sequences", get(stored_sequences)),
    ]
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    after: Option<u64>,
    limit: Option<u32>,
}

/// `GET /api/v1/enterprises?after=&limit=`: the enterprises the caller may see, ordered by id.
async fn list(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Query(q): Query<PageQuery>,
) -> Result<Json<ListPage<Enterprise>>, ApiError> {
    let page = page(q.after, q.limit, LIST_DEFAULT, LIST_MAX)?;
    let entities = &ctx.api.store.entities;
    let items = match &auth.scope {
        Scope::Platform => entities.list_enterprises(page).await?,
        Scope::Channel { subtree, .. } => entities.list_enterprises_in(Some(subtree), page).await?,
        Scope::Enterprise(own) if own.0 > page.after => entities.enterprise(*own).await?.into_iter().collect(),
        Scope::Enterprise(_) => Vec::new(),
    };
    Ok(Json(ListPage::new(items, page, |e| e.id.0)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateEnterprise {
    name: String,
    /// The managing channel (a channel account: its own by default, or one below it).
    #[serde(default)]
    channel_id: Option<ChannelId>,
}

/// Trims a name and checks it: 1 to 128 characters, no control characters.
fn enterprise_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(ApiError::invalid(format!("name must have 1 to {MAX_NAME_CHARS} characters")));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::invalid("name must not contain control characters"));
    }
    Ok(name.to_owned())
}

/// `POST /api/v1/enterprises` `{"name"}`: 201 with the enterprise and its new credential.
async fn create(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Json(req): Json<CreateEnterprise>,
) -> Result<Response, ApiError> {
    let name = enterprise_name(&req.name)?;
    let channel_id = match (&auth.scope, req.channel_id) {
        (Scope::Enterprise(_), _) => return Err(ApiError::Forbidden),
        (Scope::Channel { channel, .. }, None) => Some(*channel),
        (_, Some(channel)) if !auth.can_see_channel(channel) => return Err(ApiError::NotFound("channel")),
        (_, requested) => requested,
    };
    let new = NewEnterprise { profile: Default::default(), name, credential: secrets::random_hex::<32>(), channel_id };
    let enterprise = ctx.api.store.entities.create_enterprise(new).await?;
    tracing::info!(message = "Created an enterprise.", enterprise_id = %enterprise.id, by_account = %auth.account.id);
    let location = HeaderValue::try_from(format!("/api/v1/enterprises/{}", enterprise.id))
        .map_err(|e| ApiError::Internal(format!("location header: {e}")))?;
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(enterprise)).into_response())
}

/// The enterprise, or 404 if it does not exist or is outside the caller's scope.
pub(crate) async fn find(ctx: &AppState, auth: &AuthAdmin, id: EnterpriseId) -> Result<Enterprise, ApiError> {
    match ctx.api.store.entities.enterprise(id).await? {
        Some(e) if auth.can_see_enterprise(&e) => Ok(e),
        _ => Err(ApiError::NotFound("enterprise")),
    }
}

/// `GET /api/v1/enterprises/{id}`.
async fn show(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<EnterpriseId>,
) -> Result<Json<Enterprise>, ApiError> {
    Ok(Json(find(&ctx, &auth, id).await?))
}

#[derive(Debug, Serialize)]
struct StoredSequencesPage {
    devices: Vec<StoredSequences>,
    next_after: Option<DeviceId>,
}

/// `GET /api/v1/enterprises/{id}/stored-sequences?after=&limit=`: per device of the enterprise,
/// ordered by id, how many persisted rows carry a sequence number and which distinct numbers.
async fn stored_sequences(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<EnterpriseId>,
    Query(q): Query<PageQuery>,
) -> Result<Json<StoredSequencesPage>, ApiError> {
    let page = page(q.after, q.limit, SEQUENCES_DEFAULT, SEQUENCES_MAX)?;
    let enterprise = find(&ctx, &auth, id).await?;
    let devices = ctx.api.store.stored_sequences(enterprise.id, page).await?;
    let next_after = next_after(&devices, page, |d| d.device_id.0).map(DeviceId);
    Ok(Json(StoredSequencesPage { devices, next_after }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(enterprise_name("  Acme  ").ok().as_deref(), Some("Acme"));
        assert_eq!(enterprise_name(&"é".repeat(128)).ok().map(|n| n.chars().count()), Some(128));
        for bad in ["", "   ", "a\u{7}b"] {
            assert!(enterprise_name(bad).is_err(), "{bad:?}");
        }
        assert!(enterprise_name(&"x".repeat(129)).is_err());
    }
}
