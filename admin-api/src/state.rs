//! What handlers and extractors share: the settings ([`ApiConfig`]), what the API reads from the
//! rest of the process ([`ApiState`]), and the router state built from them ([`AppState`]).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use fleetpulse_ingest::LiveState;
use fleetpulse_store::Store;
use prometheus_client::registry::Registry;

use crate::clock::Clock;
use crate::metrics;

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
    /// Rate limits of logins, login codes and forgotten-password requests.
    pub login_rate: crate::rate_limit::LoginRateLimits,
    /// `/metrics` is served on a separate listener ([`crate::app_and_metrics`]) and the API's own
    /// `/metrics` answers 404.
    pub metrics_separate: bool,
    /// If set, `GET /metrics` requires `Authorization: Bearer <this>` (else 401).
    pub metrics_token: Option<String>,
    /// Firmware uploads and download links (PRV-4).
    pub firmware: crate::firmware_link::FirmwareSettings,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            session_ttl: Duration::from_secs(12 * 3600),
            session_idle: Duration::from_secs(30 * 60),
            max_body_bytes: 64 * 1024,
            password_reset_ttl: Duration::from_secs(10 * 60),
            login_code_ttl: Duration::from_secs(10 * 60),
            login_rate: crate::rate_limit::LoginRateLimits::default(),
            metrics_separate: false,
            metrics_token: None,
            firmware: crate::firmware_link::FirmwareSettings::default(),
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
    /// Wakes the ingest sessions of devices that have new commands queued (a device connected
    /// to another node, or to none, gets them when it next connects or its session is woken).
    pub downlink: fleetpulse_ingest::CommandSignal,
    /// Closes the ingest session of a device an admin deleted or moved.
    pub sessions: fleetpulse_ingest::SessionCloser,
}

/// What handlers and extractors share: the caller's state plus the API's own metrics.
#[derive(Debug)]
pub(crate) struct AppContext {
    pub(crate) api: ApiState,
    pub(crate) metrics: Arc<metrics::ApiMetrics>,
    /// Bounds concurrent argon2 computations (19 MiB each) to one per core.
    pub(crate) password_checks: Arc<tokio::sync::Semaphore>,
    /// Where every time the API decides with is read.
    pub(crate) clock: Clock,
    /// Rate limits of the unauthenticated account requests.
    pub(crate) login_limits: crate::rate_limit::LoginLimiter,
    /// Rate limits of the unauthenticated RPS redirect lookups (DEV-1): per client IP and per device.
    pub(crate) rps_limits: crate::rate_limit::LoginLimiter,
}

/// Router state: cheap to clone.
pub(crate) type AppState = Arc<AppContext>;
