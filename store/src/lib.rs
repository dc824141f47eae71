//! The storage API of fleetpulse and its embedded backend.
//!
//! Two halves, kept apart so that a scale-out backend can put each on the engine built for it:
//! - [`EntityStore`]: portal entities, mutable rows; the umbrella of one trait per domain, each
//!   in its own module with its rows: [`AccountStore`] (accounts, sessions, TOTP, lockout),
//!   [`AccountSecurityStore`] (settings, password resets, login codes), [`TenantStore`]
//!   (channels, enterprises), [`DeviceStore`] (devices, snapshots, lists), [`StrategyStore`]
//!   (alarm strategies), [`InheritedStrategyStore`] (channels' strategies and enterprises'
//!   choices about them), [`EngineStateStore`] (the alarm engine's saved windows and
//!   resolutions), [`OutboxStore`] (the notification outbox), [`OperationLogStore`] and
//!   [`CommandStore`] (the durable per-device command queue), [`FileStore`] (files devices
//!   upload, with their content), [`TaskStore`] (scheduled tasks, their runs and per-device
//!   results), [`InventoryStore`] (devices added, edited, moved, deleted and imported) and
//!   [`SiteStore`] (sites by subnet, PRV-1).
//!   [`FirmwareStore`] (firmware images per enterprise, with their content).
//!   [`ProfileStore`] (configuration profiles, deployments, provisioning records).
//!   [`GroupStore`] (device groups, ordered memberships, default groups).
//!   [`OrderStore`] (orders, statements, device allowances).
//!   [`LicenceStore`] (each device's licence status, ORD-3).
//!   [`WindowStore`] (maintenance windows and the marks they leave on alarms, issue 18),
//!   [`IncidentStore`] (site incidents and their member alarms, issue 18 item 3).
//!   [`NotificationAuditStore`] (what became of every alarm's notifications, and their retention).
//!   [`DeadLetterStore`] (events given up after their retries, for listing and replay, issue 18).
//!   [`RelayStore`] (relay grants: the credentials relays authenticate with, hashed, ING-9).
//! - [`EventStore`] (`events.rs`): append-only event streams (status events, resource reports,
//!   alarm events), the aggregated alarm records, and the per-device delivery marks used to drop
//!   duplicates.
//!
//! [`EventStore::append`] returns only once the batch is durable: ingest acknowledges a frame to
//! its device only after that. The embedded backend ([`embedded`]) keeps everything in one
//! SQLite database under the data directory, written by one thread with group commit; it and the
//! PostgreSQL backend ([`postgres`]) implement each domain trait in a file of that domain.

mod account_security;
mod accounts;
mod alarm_lifecycle;
mod audit;
pub mod clickhouse;
mod cluster;
mod commands;
mod dead_letters;
mod device_sql;
mod devices;
pub mod embedded;
mod engine_state;
mod events;
mod files;
mod firmware;
mod groups;
mod incidents;
mod inventory;
mod licences;
mod model;
mod oplog;
mod orders;
mod outbox;
pub mod postgres;
mod profiles;
mod relays;
mod rps;
pub mod scaleout;
mod sites;
pub mod spool;
mod strategies;
mod strategy_inheritance;
mod tasks;
mod tenant_admin;
mod tenants;
mod windows;

pub use account_security::*;
pub use accounts::*;
pub use alarm_lifecycle::{AlarmLifecycle, Unchanged};
pub use audit::*;
pub use cluster::*;
pub use commands::*;
pub use dead_letters::*;
pub use devices::*;
pub use engine_state::*;
pub use events::*;
pub use files::*;
pub use firmware::*;
pub use groups::*;
pub use incidents::*;
pub use inventory::*;
pub use licences::*;
pub use model::*;
pub use oplog::*;
pub use orders::*;
pub use outbox::*;
pub use profiles::*;
pub use relays::*;
pub use rps::*;
pub use sites::*;
pub use strategies::*;
pub use strategy_inheritance::*;
pub use tasks::*;
pub use tenant_admin::*;
pub use tenants::*;
pub use windows::*;

use fleetpulse_proto::{DeviceId, EnterpriseId};
use std::sync::Arc;

/// Errors of every store operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database engine failed (I/O, corruption, a bug in a query).
    #[error("database error: {0}")]
    Backend(String),
    /// The device identity is registered to another enterprise.
    #[error("the device is registered to another enterprise")]
    DeviceConflict,
    /// A unique value (email, name, credential) is already taken.
    #[error("{0} already exists")]
    AlreadyExists(&'static str),
    /// The store was shut down.
    #[error("the store is shut down")]
    Closed,
    /// A schema migration failed on start.
    #[error("schema migration {version} failed: {reason}")]
    Migration {
        /// The migration's version.
        version: u32,
        /// Why it failed.
        reason: String,
    },
    /// The data directory could not be used.
    #[error("data directory: {0}")]
    Io(#[from] std::io::Error),
    /// The caller's arguments break a documented bound of the operation (nothing was changed).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The storage cannot complete writes right now (disk full, I/O error, damaged file);
    /// nothing was changed, and the same call may succeed once the storage recovers.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A file of the store is damaged; the message says what and what to do. Raised on open
    /// (the store refuses to start) and by the full check.
    #[error("{0}")]
    Damaged(String),
    /// The store holds fewer commits than it acknowledged (a lost or truncated write-ahead log,
    /// a restored older file); the message says what was lost and what to do.
    #[error("{0}")]
    DataLost(String),
    /// Storing would take an owner above a documented count limit (e.g.
    /// [`MAX_FILES_PER_DEVICE`]); nothing was changed, and the same call may succeed once the
    /// owner has fewer.
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
}

/// Result alias for store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Portal entities: every domain's store in one object ([`Store::entities`]). Implemented for
/// every type that implements all the domain traits; a caller that needs one domain takes that
/// trait instead (`let devices: Arc<dyn DeviceStore> = store.entities.clone();`).
pub trait EntityStore:
    AccountStore
    + AccountSecurityStore
    + TenantStore
    + DeviceStore
    + StrategyStore
    + InheritedStrategyStore
    + EngineStateStore
    + OutboxStore
    + OperationLogStore
    + CommandStore
    + FileStore
    + TaskStore
    + InventoryStore
    + SiteStore
    + FirmwareStore
    + ProfileStore
    + GroupStore
    + OrderStore
    + LicenceStore
    + WindowStore
    + IncidentStore
    + NotificationAuditStore
    + TenantAdminStore
    + RpsStore
    + DeadLetterStore
    + RelayStore
{
}

impl<T> EntityStore for T where
    T: AccountStore
        + AccountSecurityStore
        + TenantStore
        + DeviceStore
        + StrategyStore
        + InheritedStrategyStore
        + EngineStateStore
        + OutboxStore
        + OperationLogStore
        + CommandStore
        + FileStore
        + TaskStore
        + InventoryStore
        + SiteStore
        + FirmwareStore
        + ProfileStore
        + GroupStore
        + OrderStore
        + LicenceStore
        + WindowStore
        + IncidentStore
        + NotificationAuditStore
        + TenantAdminStore
        + RpsStore
        + DeadLetterStore
        + RelayStore
{
}

/// `Debug` of the store trait objects (their state is the backend's own), so that a component
/// holding one (`Arc<dyn OutboxStore>`) can derive `Debug`.
macro_rules! opaque_debug {
    ($($store:ident),*) => {$(
        impl std::fmt::Debug for dyn $store {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!("dyn ", stringify!($store)))
            }
        }
    )*};
}

opaque_debug!(
    AccountStore,
    AccountSecurityStore,
    TenantStore,
    DeviceStore,
    StrategyStore,
    InheritedStrategyStore,
    EngineStateStore,
    OutboxStore,
    OperationLogStore,
    CommandStore,
    FileStore,
    TaskStore,
    InventoryStore,
    SiteStore,
    FirmwareStore,
    ProfileStore,
    GroupStore,
    OrderStore,
    LicenceStore,
    WindowStore,
    IncidentStore,
    NotificationAuditStore,
    TenantAdminStore,
    RpsStore,
    RelayStore,
    EntityStore,
    EventStore
);

/// A store: both halves, possibly served by different engines.
#[derive(Clone)]
pub struct Store {
    /// Portal entities.
    pub entities: Arc<dyn EntityStore>,
    /// Event streams.
    pub events: Arc<dyn EventStore>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Stored sequence numbers of a page of the enterprise's devices (ordered by id), for the
    /// load tester's verification: entities give the devices, events their sequences.
    pub async fn stored_sequences(&self, enterprise: EnterpriseId, page: Page) -> Result<Vec<StoredSequences>> {
        let devices = self.entities.list_devices(Some(enterprise), page).await?;
        let ids: Vec<DeviceId> = devices.iter().map(|d| d.id).collect();
        let mut seqs = self.events.device_sequences(&ids).await?.into_iter();
        Ok(devices
            .into_iter()
            .map(|d| {
                let s = seqs.find(|s| s.device_id == d.id).unwrap_or(DeviceSequences {
                    device_id: d.id,
                    rows: 0,
                    ranges: Vec::new(),
                });
                StoredSequences { device_id: d.id, mac: d.mac, serial: d.serial, rows: s.rows, ranges: s.ranges }
            })
            .collect())
    }

    /// Opens the embedded store under `data_dir`.
    pub fn open_embedded(data_dir: &std::path::Path, config: embedded::EmbeddedConfig) -> Result<Store> {
        let db = Arc::new(embedded::EmbeddedStore::open(data_dir, config)?);
        Ok(Store { entities: db.clone(), events: db })
    }
}

/// Settings of the scale-out store.
#[derive(Debug, Clone)]
pub struct ScaleOutConfig {
    /// PostgreSQL URL for the entities.
    pub postgres_url: String,
    /// ClickHouse for the events.
    pub clickhouse: clickhouse::ClickHouseConfig,
    /// The local spool in front of ClickHouse.
    pub spool: spool::SpoolConfig,
}

impl Store {
    /// Opens the scale-out store: PostgreSQL (migrated), ClickHouse (schema created), and the
    /// spool (recovered), with its drainer running.
    pub async fn open_scaleout(config: ScaleOutConfig) -> Result<Store> {
        let entities = postgres::PgEntityStore::connect(&config.postgres_url, 16).await?;
        let events = clickhouse::ClickHouseEvents::connect(config.clickhouse).await?;
        let spool = spool::Spool::open(config.spool)?;
        let events = scaleout::SpooledEvents::start(Arc::new(events), spool).await?;
        Ok(Store { entities: Arc::new(entities), events: Arc::new(events) })
    }

    /// The scale-out store for one of several nodes (issue 16): as [`Store::open_scaleout`],
    /// with the cluster half of the PostgreSQL store, and ClickHouse alarm records read before
    /// each change instead of cached (another node may have changed them).
    pub async fn open_scaleout_node(config: ScaleOutConfig) -> Result<(Store, Arc<dyn ClusterStore>)> {
        let entities = Arc::new(postgres::PgEntityStore::connect(&config.postgres_url, 16).await?);
        let events = clickhouse::ClickHouseEvents::connect(config.clickhouse).await?.with_shared_records();
        let spool = spool::Spool::open(config.spool)?;
        let events = scaleout::SpooledEvents::start(Arc::new(events), spool).await?;
        Ok((Store { entities: entities.clone(), events: Arc::new(events) }, entities))
    }
}
