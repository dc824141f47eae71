//! The one error type of the API and its HTTP mapping.
//!
//! Every failure leaves the API as `{"error": {"code": "<stable_snake_case>", "message": "..."}}`.
//! Codes are part of the API contract; messages are for humans and may change. Server-side
//! failures (5xx) are logged with their cause and answered with a generic message: causes never
//! reach clients.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fleetpulse_store::StoreError;
use serde::Serialize;

/// Errors of the API, each with a fixed HTTP status and a stable code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401 `unauthorized`: login with an unknown email or a wrong password (one message for
    /// both, so that the answer does not reveal which accounts exist).
    #[error("invalid email or password")]
    InvalidCredentials,
    /// 401 `unauthorized`: no bearer token, a malformed one, or an unknown or expired session.
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// 401 `mfa_required`: the password was right and the account has a TOTP authenticator:
    /// send its current `code` with the login.
    #[error("a code from the authenticator app is required")]
    MfaRequired,
    /// 403 `forbidden`: the caller's role does not have this feature (tenant objects out of
    /// scope are 404, never 403).
    #[error("this account may not use this feature")]
    Forbidden,
    /// 403 `password_change_required`: the account must change its password (ACC-2: first
    /// login of an account created by another account) before anything but
    /// `POST /api/v1/account/password` and `POST /api/v1/auth/logout`.
    #[error("the password must be changed first (POST /api/v1/account/password)")]
    PasswordChangeRequired,
    /// 403 `acting_required`: a channel account changes something inside an enterprise only
    /// while acting inside it, with the enterprise's authorization (TEN-3:
    /// `POST /api/v1/enterprises/{id}/act`).
    #[error("act inside the enterprise first (POST /api/v1/enterprises/{{id}}/act, with its authorization)")]
    ActingRequired,
    /// 403 `authorization_required`: the enterprise has not authorized its channel to act inside
    /// it (TEN-3).
    #[error("the enterprise has not authorized its channel to act inside it")]
    AuthorizationRequired,
    /// 403 `permission_disabled`: the enterprise's permission (named here: device management,
    /// RPS) is off; its channel grants it (TEN-1).
    #[error("the enterprise's {0} permission is off: its channel can grant it")]
    PermissionDisabled(&'static str),
    /// 404 `not_found`: the resource (named here) does not exist, or the route is unknown.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// 400 `invalid_request`: the path, query or body is malformed or fails validation.
    #[error("{0}")]
    InvalidRequest(String),
    /// 409 `conflict`: the request collides with existing data.
    #[error("{0}")]
    Conflict(String),
    /// 429 `limit_exceeded`: storing would take the owner above a count limit (pending commands
    /// of a device or an enterprise, stored files of a device); retry once it has fewer.
    #[error("{0}")]
    LimitExceeded(String),
    /// 429 `rate_limited` with `Retry-After`: too many login, login-code or forgotten-password
    /// requests from this IP or for this account; retry after the given seconds.
    #[error("too many requests: retry in {retry_after_s} s")]
    RateLimited {
        /// Seconds until a retry may succeed (the `Retry-After` header).
        retry_after_s: u64,
    },
    /// 405 `method_not_allowed`: the route exists but not with this method.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// 413 `payload_too_large`: the body exceeds the configured limit.
    #[error("the request body is too large")]
    PayloadTooLarge,
    /// 415 `unsupported_media_type`: the body is not declared as `application/json`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 503 `not_ready`: the process is starting or shutting down.
    #[error("the service is not ready")]
    NotReady,
    /// 503 `storage_unavailable`: the store cannot complete writes now (disk full, I/O error);
    /// nothing was changed: retry later. The cause is logged, never shown.
    #[error("the storage cannot complete writes right now; nothing was changed: retry later")]
    StorageUnavailable(String),
    /// 403 `csrf_failed`: a state-changing request authenticated by the session cookie lacks
    /// the session's CSRF token in `X-CSRF-Token` (ACC-1).
    #[error("the X-CSRF-Token header must carry this session's CSRF token")]
    CsrfFailed,
    /// 401 `mfa_required` with a `challenge`: the password was right and the account has login
    /// protection by email (ACC-3): a code was emailed; send it with the challenge to
    /// `POST /api/v1/auth/login/verify`.
    #[error("a login code was emailed: send it with the challenge to POST /api/v1/auth/login/verify")]
    LoginCodeRequired(String),
    /// 401 `invalid_code`: the emailed login code is wrong (counted toward the lockout).
    #[error("the login code is wrong")]
    InvalidLoginCode,
    /// 401 `invalid_challenge`: the login challenge is unknown, used, expired or out of
    /// attempts: log in again.
    #[error("the login challenge is unknown, used, expired or out of attempts: log in again")]
    InvalidChallenge,
    /// 400 `invalid_reset_token`: the password reset token is unknown, used or expired (ACC-4).
    #[error("the password reset link is unknown, used or expired: ask for a new one")]
    InvalidResetToken,
    /// 500 `internal`: the store failed; the cause is logged, never shown.
    #[error("store failure: {0}")]
    Store(StoreError),
    /// 500 `internal`: any other server-side failure (a bug, a panicked blocking task); the cause
    /// is logged, never shown.
    #[error("internal failure: {0}")]
    Internal(String),
}

impl ApiError {
    /// HTTP status of the error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidCredentials
            | ApiError::Unauthorized
            | ApiError::MfaRequired
            | ApiError::LoginCodeRequired(_)
            | ApiError::InvalidLoginCode
            | ApiError::InvalidChallenge => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden
            | ApiError::PasswordChangeRequired
            | ApiError::ActingRequired
            | ApiError::AuthorizationRequired
            | ApiError::PermissionDisabled(_)
            | ApiError::CsrfFailed => StatusCode::FORBIDDEN,
            ApiError::InvalidResetToken => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::LimitExceeded(_) | ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::NotReady | ApiError::StorageUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Store(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable machine-readable code of the error.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidCredentials | ApiError::Unauthorized => "unauthorized",
            ApiError::MfaRequired | ApiError::LoginCodeRequired(_) => "mfa_required",
            ApiError::CsrfFailed => "csrf_failed",
            ApiError::InvalidLoginCode => "invalid_code",
            ApiError::InvalidChallenge => "invalid_challenge",
            ApiError::InvalidResetToken => "invalid_reset_token",
            ApiError::Forbidden => "forbidden",
            ApiError::ActingRequired => "acting_required",
            ApiError::AuthorizationRequired => "authorization_required",
            ApiError::PermissionDisabled(_) => "permission_disabled",
            ApiError::PasswordChangeRequired => "password_change_required",
            ApiError::NotFound(_) => "not_found",
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::Conflict(_) => "conflict",
            ApiError::LimitExceeded(_) => "limit_exceeded",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::NotReady => "not_ready",
            ApiError::StorageUnavailable(_) => "storage_unavailable",
            ApiError::Store(_) | ApiError::Internal(_) => "internal",
        }
    }

    /// Shorthand for [`ApiError::InvalidRequest`].
    pub(crate) fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::InvalidRequest(message.into())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::AlreadyExists(what) => ApiError::Conflict(format!("{what} already exists")),
            StoreError::DeviceConflict => ApiError::Conflict("the device is registered to another enterprise".into()),
            StoreError::InvalidInput(message) => ApiError::InvalidRequest(message),
            StoreError::LimitExceeded(message) => ApiError::LimitExceeded(message),
            StoreError::Unavailable(cause) => ApiError::StorageUnavailable(cause),
            other => ApiError::Store(other),
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
    /// The login challenge of [`ApiError::LoginCodeRequired`].
    #[serde(skip_serializing_if = "Option::is_none")]
    challenge: Option<&'a str>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(message = "Request failed.", error = %self);
            "internal server error".to_owned()
        } else if let ApiError::StorageUnavailable(cause) = &self {
            tracing::warn!(message = "Request failed: the store cannot write.", %cause);
            self.to_string()
        } else {
            self.to_string()
        };
        let challenge = match &self {
            ApiError::LoginCodeRequired(challenge) => Some(challenge.as_str()),
            _ => None,
        };
        let body = ErrorBody { error: ErrorDetail { code: self.code(), message: &message }, challenge };
        let mut response = (status, Json(body)).into_response();
        if let ApiError::RateLimited { retry_after_s } = self {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
        }
        if matches!(self, ApiError::Unauthorized) {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
