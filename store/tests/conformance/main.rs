//! One conformance suite for the store API, run against every backend: the embedded SQLite
//! store and the scale-out store (PostgreSQL entities, ClickHouse events behind the spool), both
//! on real servers started by the test. This file is the harness (opening both backends, the
//! order the cases run in, shared builders); each domain's cases are in a module of its own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::time::Duration;

use fleetpulse_proto::alarm_types::OFFLINE;
use fleetpulse_proto::domain::{
    AlarmChange, AlarmChangeKind, CallStatus, DeviceKey, DeviceStatus, ResourceSample, SipLine, SipState,
};
use fleetpulse_proto::ids::ChannelId;
use fleetpulse_proto::{AccountId, CommandId, DeviceId, EnterpriseId, FileId, Mac, TaskId, UnixMillis};
use fleetpulse_store::*;

mod account_security;
mod accounts;
mod audit;
mod commands;
mod dead_letters;
mod devices;
mod entities;
mod events;
mod files;
mod firmware;
mod groups;
mod incidents;
mod inventory;
mod licences;
mod oplog;
mod orders;
mod outbox;
mod profiles;
mod relays;
mod sites;
mod strategies;
mod tasks;
mod tenant_admin;
mod tenants;
mod windows;

/// Reads in the scale-out store lag the spool by the drain time: poll until `check` passes.
async fn eventually<T, F, Fut>(what: &str, mut read: F, check: impl Fn(&T) -> bool) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
    T: std::fmt::Debug,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let value = read().await.expect(what);
        if check(&value) {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("{what}: still {value:?} after 10 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn mac(n: u32) -> Mac {
    Mac::parse(&format!("0015650{n:05x}")).unwrap()
}

/// A full platform-admin account with this email (password hash "phc").
fn platform_admin(email: &str) -> NewAccount {
    NewAccount {
        email: email.into(),
        password_hash: "phc".into(),
        role: Role::PlatformAdmin,
        channel_id: None,
        enterprise_id: None,
        must_change_password: false,
        parent_id: None,
        permissions: None,
    }
}

fn new_device(e: EnterpriseId, key: DeviceKey) -> NewDevice {
    NewDevice { enterprise_id: e, key, serial: None, model: "T54W".into(), firmware: "1.0".into(), at: UnixMillis(5) }
}

fn new_channel(name: &str, parent_id: Option<ChannelId>, allow_sub_channels: bool) -> NewChannel {
    NewChannel {
        phone: String::new(),
        country: String::new(),
        name: name.into(),
        parent_id,
        allow_sub_channels,
        device_management: true,
        rps: false,
        contact: "Ann".into(),
        email: format!("{name}@example.com"),
    }
}

fn invalid<T: std::fmt::Debug>(result: Result<T>, needle: &str) {
    match result {
        Err(StoreError::InvalidInput(message)) => assert!(message.contains(needle), "{message:?} lacks {needle:?}"),
        other => panic!("expected InvalidInput({needle:?}), got {other:?}"),
    }
}

async fn suite(store: Store) {
    entities::entities(&store).await;
    accounts::password_change(&store).await;
    accounts::login_protection(&store).await;
    accounts::session_lifecycle(&store).await;
    accounts::totp(&store).await;
    accounts::email_change(&store).await;
    oplog::operation_log(&store).await;
    strategies::strategies(&store).await;
    windows::windows(&store).await;
    incidents::incidents(&store).await;
    dead_letters::dead_letters(&store).await;
    outbox::outbox(&store).await;
    outbox::outbox_items(&store).await;
    outbox::outbox_except(&store).await;
    outbox::outbox_ids(&store).await;
    outbox::outbox_audited(&store).await;
    outbox::outbox_attempts_audited(&store).await;
    events::events(&store).await;
    events::lifecycle(&store).await;
    events::latest_alarms(&store).await;
    events::retention(&store).await;
    tenants::tenants(&store).await;
    tenants::tenant_profiles(&store).await;
    commands::command_refusals(&store).await;
    commands::command_limits(&store).await;
    commands::command_sending(&store).await;
    commands::command_updates(&store).await;
    commands::command_expiry(&store).await;
    commands::command_pages(&store).await;
    commands::command_races(&store).await;
    tasks::task_lifecycle(&store).await;
    tasks::task_run_cycle(&store).await;
    tasks::task_races(&store).await;
    inventory::inventory_devices(&store).await;
    inventory::inventory_imports(&store).await;
    sites::sites(&store).await;
    sites::site_upserts(&store).await;
    profiles::profiles(&store).await;
    groups::groups(&store).await;
    groups::group_imports(&store).await;
    orders::orders(&store).await;
    licences::licences(&store).await;
    audit::notification_audit(&store).await;
    tenant_admin::sub_account_deletion(&store).await;
    tenant_admin::tenant_freezes(&store).await;
    tenant_admin::rps_devices(&store).await;
    // Last: they create channels, whose ids the tenant cases expect to start at 1.
    relays::relays(&store).await;
    strategies::inherited_strategies(&store).await;
    strategies::engine_state(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_backend_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let config = embedded::EmbeddedConfig { fsync: false, ..embedded::EmbeddedConfig::default() };
    suite(Store::open_embedded(dir.path(), config).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaleout_backend_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let pg = fleetpulse_testkit::postgres::PostgresServer::shared();
    let ch = fleetpulse_testkit::clickhouse::ClickHouseServer::shared();
    let config = ScaleOutConfig {
        postgres_url: pg.create_database("conformance"),
        clickhouse: clickhouse::ClickHouseConfig {
            url: ch.url(),
            database: "conformance".into(),
            user: None,
            password: None,
        },
        spool: spool::SpoolConfig { dir: dir.path().join("spool"), ..spool::SpoolConfig::default() },
    };
    suite(Store::open_scaleout(config).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_account_self_service_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let config = embedded::EmbeddedConfig { fsync: false, ..embedded::EmbeddedConfig::default() };
    let store = Store::open_embedded(dir.path(), config).unwrap();
    account_security::account_self_service(store.entities.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_account_self_service_conforms() {
    let pg = fleetpulse_testkit::postgres::PostgresServer::shared();
    let store = postgres::PgEntityStore::connect(&pg.create_database("account_self_service"), 4).await.unwrap();
    account_security::account_self_service(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_device_lists_conform() {
    let dir = tempfile::tempdir().unwrap();
    let config = embedded::EmbeddedConfig { fsync: false, ..embedded::EmbeddedConfig::default() };
    let store = Store::open_embedded(dir.path(), config).unwrap();
    devices::device_lists(&store).await;
    devices::device_labels(&store).await;
}

/// The scale-out store of a test of its own (one PostgreSQL and one ClickHouse database).
async fn scaleout(name: &str, dir: &std::path::Path) -> Store {
    let pg = fleetpulse_testkit::postgres::PostgresServer::shared();
    let ch = fleetpulse_testkit::clickhouse::ClickHouseServer::shared();
    let config = ScaleOutConfig {
        postgres_url: pg.create_database(name),
        clickhouse: clickhouse::ClickHouseConfig { url: ch.url(), database: name.into(), user: None, password: None },
        spool: spool::SpoolConfig { dir: dir.join("spool"), ..spool::SpoolConfig::default() },
    };
    Store::open_scaleout(config).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaleout_device_lists_conform() {
    let dir = tempfile::tempdir().unwrap();
    let store = scaleout("device_lists", dir.path()).await;
    devices::device_lists(&store).await;
    devices::device_labels(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_files_conform() {
    let dir = tempfile::tempdir().unwrap();
    let config = embedded::EmbeddedConfig { fsync: false, ..embedded::EmbeddedConfig::default() };
    let store = Store::open_embedded(&dir.path().join("data"), config).unwrap();
    let uploads = dir.path().join("uploads");
    std::fs::create_dir_all(&uploads).unwrap();
    files::files(store.entities.as_ref(), &uploads).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_files_conform() {
    let dir = tempfile::tempdir().unwrap();
    let pg = fleetpulse_testkit::postgres::PostgresServer::shared();
    let store = postgres::PgEntityStore::connect(&pg.create_database("files"), 4).await.unwrap();
    files::files(&store, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_firmware_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let config = embedded::EmbeddedConfig { fsync: false, ..embedded::EmbeddedConfig::default() };
    let store = Store::open_embedded(&dir.path().join("data"), config).unwrap();
    let uploads = dir.path().join("uploads");
    std::fs::create_dir_all(&uploads).unwrap();
    firmware::firmware(store.entities.as_ref(), &uploads).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_firmware_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let pg = fleetpulse_testkit::postgres::PostgresServer::shared();
    let store = postgres::PgEntityStore::connect(&pg.create_database("firmware"), 4).await.unwrap();
    firmware::firmware(&store, dir.path()).await;
}
