//! `Json`, `Path` and `Query` wrappers around axum's extractors whose rejections are
//! [`ApiError`]s, so that malformed requests are answered in the API's JSON error shape instead of
//! axum's plain text.
//!
//! Mapping: a body over the limit is 413 `payload_too_large`, a body not declared as JSON is 415
//! `unsupported_media_type`, any other client mistake (bad JSON syntax, missing or mistyped
//! fields, unparsable query) is 400 `invalid_request`; a path whose parameters do not parse is
//! 404 `not_found` (it names nothing); rejections axum classifies as server errors (a route
//! declared with the wrong parameters) are 500 `internal`.
//!
//! Ids are parsed into their domain types here, once: the id types refuse values above
//! [`fleetpulse_proto::MAX_ID`] (what the stores' `BIGINT` holds), so an out-of-range id is 404 in
//! a path and 400 in a query or body, never a store failure.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Turns an axum rejection, known by its status and text, into an [`ApiError`].
fn rejection(status: StatusCode, text: String) -> ApiError {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType(text),
        s if s.is_server_error() => ApiError::Internal(text),
        _ => ApiError::InvalidRequest(text),
    }
}

/// A JSON request body (as extractor) or response body (as response).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(e) => Err(rejection(e.status(), e.body_text())),
        }
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Path parameters. A path whose parameters do not parse (a non-number, a negative number or an
/// id above [`fleetpulse_proto::MAX_ID`] where an id belongs) names nothing: 404 `not_found`,
/// like a missing object.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Path<T>(pub T);

/// A bare-number id in a path (alarm records, device labels): at most
/// [`fleetpulse_proto::MAX_ID`], like the id newtypes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub(crate) struct RowId(#[serde(deserialize_with = "fleetpulse_proto::deserialize_id")] pub u64);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(e) if e.status().is_client_error() => Err(ApiError::NotFound("resource")),
            Err(e) => Err(rejection(e.status(), e.body_text())),
        }
    }
}

/// Query string parameters.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(e) => Err(rejection(e.status(), e.body_text())),
        }
    }
}

/// The keys of a request body that no field took: for bodies that flatten a struct, where serde
/// cannot deny unknown fields itself (`#[serde(flatten)] unknown: Unknown`, then
/// [`refuse_unknown`]).
pub(crate) type Unknown = std::collections::BTreeMap<String, serde::de::IgnoredAny>;

/// 400 naming the first unknown key, if any.
pub(crate) fn refuse_unknown(unknown: &Unknown) -> Result<(), ApiError> {
    match unknown.keys().next() {
        Some(key) => Err(ApiError::invalid(format!("unknown field {key:?}"))),
        None => Ok(()),
    }
}
