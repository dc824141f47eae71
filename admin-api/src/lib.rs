//! Management HTTP/JSON API of fleetpulse: accounts and sessions, enterprises, devices with their
//! live state, alarm records, the load-test verification endpoint, and the operational endpoints
//! (`/healthz`, `/readyz`, `/metrics`).
//!
//! [`app`] builds the whole API as one [`axum::Router`]; the binary serves it and tests call it
//! with `tower::ServiceExt::oneshot`, without a socket. Every error, including extractor
//! rejections and unknown routes, is answered as `{"error": {"code", "message"}}` by [`ApiError`].
//!
//! Code map, lowest layer first (a module uses only modules above it in this list):
//! - `error`: [`ApiError`], the one error type of the crate, and its HTTP mapping;
//! - `clock`: [`Clock`], where the API reads the time (system, or manual in tests);
//! - `secrets`, `totp`, `email_address`, `password` (argon2id, the policy, bounded password
//!   work), `extract` (`Json`, `Path` and `Query` wrappers whose rejections are [`ApiError`]s),
//!   `openapi` (the OpenAPI document's assembly, knowing no route) and `openapi3` (its
//!   schemas rewritten into OpenAPI 3.0 form), `metrics`, `schedule` (the
//!   sans-I/O core of scheduled tasks: next occurrences in a time zone, due runs);
//! - `firmware_link`: firmware settings and per-device download tokens (sans-I/O);
//! - `state`: [`ApiConfig`], [`ApiState`] and the router state;
//! - `policy`: who may see and change what, a pure function of caller, target and tenant tree;
//! - `bootstrap`: [`bootstrap_admin`], the first platform admin;
//! - `operation_log`: the middleware writing the operation log, and who made the request;
//! - `cookies`: the request's session token (bearer, or the session cookie and its CSRF token);
//! - `account_email`: account emails (reset links, login codes, new accounts) queued in the
//!   durable outbox;
//! - `login`: opening sessions and counting login failures toward the lockout;
//! - `login_code`: login protection by emailed code (ACC-3): challenges;
//! - `auth`: the `AuthAdmin` extractor (session, idle expiry, frozen, the caller's scope);
//! - `routes`: one module per resource, each exposing `routes()`, and the route table;
//! - `firmware`: firmware upgrades of devices ([`firmware::upgrade_device`]) and of task runs;
//!   `firmware_download`: the HTTPS server devices download images from;
//! - `scheduler`: [`Scheduler`], the loop that runs due scheduled tasks (the binary starts it).
//! - `console`: the web console's embedded assets, served by the router's fallback (the API's
//!   JSON 404 stays for unknown `/api/…` paths).
//!
//! *API Boundary*: only this crate speaks HTTP/JSON. It reads the store and the ingest tier's
//! [`LiveState`](fleetpulse_ingest::LiveState); it never writes events.

mod account_email;
mod auth;
mod bootstrap;
mod clock;
mod console;
mod cookies;
mod csv_export;
mod csv_import;
mod email_address;
mod error;
mod extract;
pub mod firmware;
pub mod firmware_download;
mod firmware_link;
mod licences;
mod login;
mod login_code;
mod metrics;
mod openapi;
mod openapi3;
mod operation_log;
mod order_email;
mod order_terms;
mod password;
mod policy;
mod provisioning;
mod rate_limit;
mod routes;
mod schedule;
mod scheduler;
mod secrets;
pub mod serve;
mod state;
mod text;
pub mod totp;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;

pub use bootstrap::{BootstrapOutcome, DEFAULT_ADMIN_EMAIL, bootstrap_admin};
pub use clock::{Clock, ManualClock};
pub use error::ApiError;
pub use password::{MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS, hash_password, verify_password};
pub use rate_limit::LoginRateLimits;
pub use scheduler::{Scheduler, SchedulerConfig, SchedulerPass};
pub use serve::{HttpLimits, HttpMetrics};
pub use state::{ApiConfig, ApiState};

use crate::state::{AppContext, AppState};

/// The whole API: every route, the web console (the fallback; the JSON 404 for unknown `/api`
/// routes), the JSON fallback for unknown methods, the body limit
/// and the request counters; on the system clock.
pub fn app(state: ApiState) -> Router {
    app_with_clock(state, Clock::System)
}

/// [`app`] and, for a separate listener, a router serving only `GET /metrics` from the same
/// state (with [`ApiConfig::metrics_separate`], the API's own `/metrics` answers 404).
pub fn app_and_metrics(state: ApiState) -> (Router, Router) {
    let (api, ctx) = build(state, Clock::System);
    let metrics = Router::new()
        .route("/metrics", routes::ops::metrics_only())
        .layer(axum::Extension(routes::ops::MetricsListener))
        .with_state(ctx);
    (api, metrics)
}

/// [`app`] reading the time from `clock` (tests pass a [`ManualClock`] they advance).
pub fn app_with_clock(state: ApiState, clock: Clock) -> Router {
    build(state, clock).0
}

fn build(state: ApiState, clock: Clock) -> (Router, AppState) {
    let max_body_bytes = state.config.max_body_bytes;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let ctx: AppState = Arc::new(AppContext {
        metrics: Arc::new(metrics::ApiMetrics::new(state.live.clone(), state.store.clone())),
        password_checks: Arc::new(tokio::sync::Semaphore::new(cores)),
        clock,
        login_limits: rate_limit::LoginLimiter::new(&state.config.login_rate),
        rps_limits: rate_limit::LoginLimiter::new(&routes::rps::REDIRECT_LIMITS),
        api: state,
    });
    let router = routes::all().into_iter().fold(Router::new(), |router, (path, handlers)| router.route(path, handlers));
    let api = router
        .route_layer(axum::middleware::from_fn_with_state(ctx.clone(), operation_log::record))
        .fallback(console::serve)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(ctx.metrics.clone(), metrics::count_requests))
        .with_state(ctx.clone());
    (api, ctx)
}

#[cfg(test)]
mod tests;

/// Entry points for the fuzz targets (`fuzz/bodies/`) and the fuzz smoke test; not an API.
#[doc(hidden)]
pub mod fuzzing {
    /// Reads `data` as a device CSV import (header, then every row), as the import route does:
    /// it must never panic, whatever the bytes; bounded by the reader's own record limit.
    pub fn device_csv(data: &[u8]) {
        if let Ok(csv) = crate::csv_import::DeviceCsv::open(data) {
            for row in csv.take(100_000) {
                if row.is_err() {
                    return;
                }
            }
        }
    }
}
