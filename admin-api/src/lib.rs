//! Management HTTP/JSON API of fleetpulse: accounts and sessions, enterprises, devices with their
//! live state, alarm records, the load-test verification endpoint, and the operational endpoints
//! (`/healthz`, `/readyz`, `/metrics`).
//!
//! [`app`] builds the whole API as one [`axum::Router`]; the binary serves it and tests call it
//! with `tower::ServiceExt::oneshot`, without a socket. Every error, including extractor
//! rejections and unknown routes, is answered as `{"error": {"code", "message"}}` by [`ApiError`].
//!
//! Code map:
//! - `error`: [`ApiError`], the one error type of the crate, and its HTTP mapping;
//! - `extract`: `Json`, `Path` and `Query` wrappers whose rejections are [`ApiError`]s;
//! - `auth`: password hashing, sessions, the `AuthAdmin` extractor (the one place where access
//!   scope is decided), login/logout, [`bootstrap_admin`];
//! - `cookies`: browser sessions (ACC-1): the session cookie and its CSRF token;
//! - `login_code`: login protection by emailed code (ACC-3): challenges and their verification;
//! - `account_email`: account emails (reset links, login codes, new accounts) queued in the
//!   durable outbox;
//! - `secrets`: random tokens, credentials and passwords, token hashes, constant-time compares;
//! - `metrics`: the API's own counters and the live-device gauges, rendered with the shared
//!   registry on `/metrics`;
//! - `routes`: one module per resource, each exposing `router()`.
//!
//! *API Boundary*: only this crate speaks HTTP/JSON. It reads the store and the ingest tier's
//! [`LiveState`]; it never writes events.

mod account_email;
mod auth;
mod cookies;
mod error;
mod extract;
mod login_code;
mod metrics;
mod openapi;
mod routes;
mod secrets;
pub mod totp;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use fleetpulse_ingest::LiveState;
use fleetpulse_store::Store;
use prometheus_client::registry::Registry;

pub use auth::{
    BootstrapOutcome, DEFAULT_ADMIN_EMAIL, MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS, bootstrap_admin, hash_password,
    verify_password,
};
pub use error::ApiError;

/// Settings of the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// How long a login session stays valid; default 12 hours.
    pub session_ttl: Duration,
    /// A session unused for this long ends (ACC-2); default 30 minutes.
    pub session_idle: Duration,
    /// Largest accepted request body; default 64 KiB. Larger bodies get 413 `payload_too_large`.
    pub max_body_bytes: usize,
    /// How long an emailed password reset link works (ACC-4); default 10 minutes.
    pub password_reset_ttl: Duration,
    /// How long an emailed login code works (ACC-3); default 10 minutes.
    pub login_code_ttl: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            session_ttl: Duration::from_secs(12 * 3600),
            session_idle: Duration::from_secs(30 * 60),
            max_body_bytes: 64 * 1024,
            password_reset_ttl: Duration::from_secs(10 * 60),
            login_code_ttl: Duration::from_secs(10 * 60),
        }
    }
}

/// Everything the API reads from the rest of the process.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// Entities and events.
    pub store: Store,
    /// Live device state written by the ingest tier.
    pub live: Arc<LiveState>,
    /// Metrics of the other components, rendered first on `/metrics`. The API does not register
    /// into it (it is shared immutably); its own metrics live in a registry of its own, rendered
    /// after this one in the same exposition.
    pub registry: Arc<Registry>,
    /// True once the process serves traffic; `/readyz` answers 503 while false.
    pub ready: Arc<AtomicBool>,
    /// Settings.
    pub config: ApiConfig,
    /// The running alarm engine, told about acknowledgements, manual clears and strategy changes
    /// after they are stored (none: they take effect at the next start).
    pub alarms: Option<fleetpulse_alarm_service::AlarmHandle>,
}

/// What handlers and extractors share: the caller's state plus the API's own metrics.
#[derive(Debug)]
pub(crate) struct AppContext {
    pub(crate) api: ApiState,
    pub(crate) metrics: metrics::ApiMetrics,
    /// Bounds concurrent argon2 computations (19 MiB each) to one per core.
    pub(crate) password_checks: Arc<tokio::sync::Semaphore>,
}

/// Router state: cheap to clone.
pub(crate) type AppState = Arc<AppContext>;

/// The whole API: every route, the JSON fallbacks for unknown routes and methods, the body limit
/// and the request counters.
pub fn app(state: ApiState) -> Router {
    let max_body_bytes = state.config.max_body_bytes;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let ctx: AppState = Arc::new(AppContext {
        metrics: metrics::ApiMetrics::new(state.live.clone(), state.store.clone()),
        password_checks: Arc::new(tokio::sync::Semaphore::new(cores)),
        api: state,
    });
    let router = routes::all().into_iter().fold(Router::new(), |router, (path, handlers)| router.route(path, handlers));
    router
        .route_layer(axum::middleware::from_fn_with_state(ctx.clone(), routes::oplog::record))
        .fallback(routes::unknown_route)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(ctx.clone(), metrics::count_requests))
        .with_state(ctx)
}

#[cfg(test)]
mod tests;
