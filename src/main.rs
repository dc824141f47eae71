//! The `fleetpulse` binary: wires ingest, store and the management API into one process (OPS-1).

mod cluster;
mod config;
mod ctl;
mod engine_buckets;
mod integrity;
mod retention;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use fleetpulse_admin_api::{ApiConfig, ApiState, BootstrapOutcome};
use fleetpulse_alarm_service::{AlarmMetrics, AlarmService};
use fleetpulse_ingest::{Ingest, IngestConfig, IngestMetrics, TlsSource};
use fleetpulse_mailer::{Mailer, OutboxConfig, OutboxHandoff, OutboxMetrics, OutboxWorker};
use fleetpulse_store::embedded::EmbeddedConfig;
use fleetpulse_store::{ClusterStore, EngineStateOwner, Store};

use config::{FileConfig, StoreBackend};

#[derive(Debug, Parser)]
#[command(name = "fleetpulse", version, about = "Device telemetry and alarm pipeline")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the server: QUIC ingest, store and management API.
    Serve(ServeArgs),
    /// Runs the server with a simulated fleet of phones, for a first look.
    Demo {
        #[command(flatten)]
        serve: ServeArgs,
        /// Simulated devices.
        #[arg(long, default_value_t = 1000)]
        devices: u32,
    },
    /// Applies schema migrations of the configured store and exits.
    Migrate(ServeArgs),
    /// Checks the data directory fully: the embedded database (`integrity_check`, foreign keys,
    /// the durable mark) and the spool's checksums. Read-only; exits non-zero on damage.
    Check(ServeArgs),
    /// Salvages what is readable of the embedded database into a new file (the damaged files
    /// are kept aside as `fleetpulse.db.damaged-<time>`) and reports what was lost. Stop the
    /// server first.
    Repair(ServeArgs),
    /// Creates the platform admin if none exists (email and password from FLEETPULSE_ADMIN_EMAIL
    /// and FLEETPULSE_ADMIN_PASSWORD; a password is generated and printed if none is given).
    CreateAdmin(ServeArgs),
    /// Runs a relay (ING-9): accepts devices over QUIC at a site and carries them upstream over
    /// one QUIC connection to the server's ingest address, or one HTTP/2 connection to its HTTPS
    /// ingest (docs/ingest/relay.md).
    Relay(RelayArgs),
    /// A command-line client of the management API (login, devices, alarms, strategies, the
    /// operation log); exit codes in docs/api/ctl.md.
    Ctl(ctl::CtlArgs),
}

#[derive(Debug, Args)]
struct RelayArgs {
    /// The server's address: its QUIC ingest address (`quic_addr`, UDP) with
    /// `--upstream-transport quic`, its HTTPS ingest address (`[ingest] https_listen`, TCP) with
    /// `--upstream-transport https`.
    #[arg(long, env = "FLEETPULSE_RELAY_UPSTREAM")]
    upstream: SocketAddr,
    /// How the relay reaches the server: `quic` (one QUIC connection, ALPN fleetpulse-relay/1)
    /// or `https` (one HTTP/2 connection to HTTPS ingest, for sites that block UDP).
    #[arg(long, env = "FLEETPULSE_RELAY_UPSTREAM_TRANSPORT", default_value = "quic")]
    upstream_transport: fleetpulse_ingest::relay::UpstreamTransport,
    /// The TLS name of the server's certificate.
    #[arg(long, default_value = "localhost")]
    upstream_name: String,
    /// PEM CA certificate the server's certificate is verified with.
    #[arg(long, env = "FLEETPULSE_RELAY_UPSTREAM_CA")]
    upstream_ca: PathBuf,
    /// UDP address devices connect to.
    #[arg(long, default_value = "0.0.0.0:4433")]
    listen: SocketAddr,
    /// The relay's own credential (the server's `[[ingest.relays]]` grants it one enterprise).
    #[arg(long, env = "FLEETPULSE_RELAY_CREDENTIAL", hide_env_values = true)]
    credential: String,
    /// PEM certificate chain shown to devices.
    #[arg(long)]
    cert: PathBuf,
    /// PEM private key of --cert.
    #[arg(long)]
    key: PathBuf,
    /// Frames buffered per device before the relay stops reading it.
    #[arg(long, default_value_t = 1024)]
    device_queue: usize,
    /// Folder for the relay's endpoint keys (kept across restarts).
    #[arg(long, env = "FLEETPULSE_RELAY_STATE_DIR", default_value = "fleetpulse-relay-state")]
    state_dir: PathBuf,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Config file (TOML); flags and environment override it.
    #[arg(long, env = "FLEETPULSE_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (database, development certificate).
    #[arg(long, env = "FLEETPULSE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// UDP address for device QUIC connections.
    #[arg(long, env = "FLEETPULSE_QUIC_ADDR")]
    quic_addr: Option<SocketAddr>,
    /// TCP address of the management API.
    #[arg(long, env = "FLEETPULSE_HTTP_ADDR")]
    http_addr: Option<SocketAddr>,
    /// TCP address of the HTTPS firmware download server (`[firmware] https_listen`).
    #[arg(long, env = "FLEETPULSE_FIRMWARE_ADDR")]
    firmware_addr: Option<SocketAddr>,
    /// TCP address of HTTPS ingest (`[ingest] https_listen`).
    #[arg(long, env = "FLEETPULSE_INGEST_HTTPS_ADDR")]
    ingest_https_addr: Option<SocketAddr>,
    /// Store backend: `embedded` (default) or `clickhouse` (with PostgreSQL for entities).
    #[arg(long, env = "FLEETPULSE_STORE", value_enum)]
    store: Option<StoreBackend>,
    /// ClickHouse HTTP URL (scale-out store).
    #[arg(long, env = "FLEETPULSE_CLICKHOUSE_URL")]
    clickhouse_url: Option<String>,
    /// PostgreSQL URL (scale-out store).
    #[arg(long, env = "FLEETPULSE_POSTGRES_URL")]
    postgres_url: Option<String>,
    /// This node's id among several sharing the scale-out store (`[cluster] node_id`); default:
    /// the id in `<data_dir>/node-id`, generated at the first start.
    #[arg(long, env = "FLEETPULSE_NODE_ID")]
    node_id: Option<String>,
    /// Start even though the embedded database holds fewer commits than were acknowledged (a
    /// lost or damaged write-ahead log, an older file restored): the loss is logged and accepted.
    #[arg(long)]
    accept_loss: bool,
}

/// Everything `serve` needs, resolved from flags, environment, file and defaults.
#[derive(Debug)]
struct Settings {
    data_dir: PathBuf,
    quic_addr: SocketAddr,
    http_addr: SocketAddr,
    file: FileConfig,
    /// `[files]`, checked.
    files: config::FilesConfig,
    /// `--accept-loss`.
    accept_loss: bool,
}

fn resolve(args: ServeArgs, defaults: (&str, &str, &str)) -> anyhow::Result<Settings> {
    let mut file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    // Flags and environment override the file's store section.
    file.store.backend = args.store.or(file.store.backend);
    file.store.clickhouse_url = args.clickhouse_url.or(file.store.clickhouse_url.take());
    file.store.postgres_url = args.postgres_url.or(file.store.postgres_url.take());
    file.firmware.https_listen = args.firmware_addr.or(file.firmware.https_listen);
    file.cluster.node_id = args.node_id.or(file.cluster.node_id.take());
    file.ingest.https_listen = args.ingest_https_addr.or(file.ingest.https_listen);
    file.firmware.limits()?;
    let parse = |s: &str| s.parse::<SocketAddr>().context("default address");
    Ok(Settings {
        data_dir: args.data_dir.or(file.data_dir.clone()).unwrap_or_else(|| defaults.0.into()),
        quic_addr: match args.quic_addr.or(file.quic_addr) {
            Some(a) => a,
            None => parse(defaults.1)?,
        },
        http_addr: match args.http_addr.or(file.http_addr) {
            Some(a) => a,
            None => parse(defaults.2)?,
        },
        files: file.files.resolve()?,
        file,
        accept_loss: args.accept_loss,
    })
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLEETPULSE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

/// mimalloc instead of glibc's malloc: the ingest path allocates per read (decoded frames, acks,
/// batches) on one thread and frees on another; measured in `docs/PERFORMANCE.md` (issue 14).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let cli = match cli.command {
        Command::Ctl(args) => std::process::exit(ctl::run(args)),
        _ => cli,
    };
    init_tracing();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => {
                let settings = resolve(args, ("fleetpulse-data", "0.0.0.0:4433", "127.0.0.1:8080"))?;
                let server = Server::start(settings).await?;
                shutdown_signal().await;
                server.stop().await;
                Ok(())
            }
            Command::Demo { serve, devices } => demo(serve, devices).await,
            Command::Relay(args) => relay(args).await,
            Command::Migrate(args) => {
                let settings = resolve(args, ("fleetpulse-data", "0.0.0.0:4433", "127.0.0.1:8080"))?;
                open_store(&settings).await?;
                println!("migrations applied");
                Ok(())
            }
            Command::Ctl(_) => unreachable!("ctl runs before the runtime starts"),
            Command::Check(args) => {
                let settings = resolve(args, ("fleetpulse-data", "0.0.0.0:4433", "127.0.0.1:8080"))?;
                integrity::check(&settings.data_dir)
            }
            Command::Repair(args) => {
                let settings = resolve(args, ("fleetpulse-data", "0.0.0.0:4433", "127.0.0.1:8080"))?;
                integrity::repair(&settings.data_dir)
            }
            Command::CreateAdmin(args) => {
                let settings = resolve(args, ("fleetpulse-data", "0.0.0.0:4433", "127.0.0.1:8080"))?;
                bootstrap(&open_store(&settings).await?, None).await
            }
        }
    })
}

/// `fleetpulse relay`: runs until SIGTERM or Ctrl-C.
async fn relay(args: RelayArgs) -> anyhow::Result<()> {
    use fleetpulse_ingest::relay::{Relay, RelayConfig};
    let mut config = RelayConfig::new(
        args.listen,
        args.upstream,
        args.upstream_ca,
        args.credential,
        TlsSource::Files { cert: args.cert, key: args.key },
        args.state_dir,
    );
    config.upstream_name = args.upstream_name;
    config.upstream_transport = args.upstream_transport;
    config.device_queue = args.device_queue.clamp(1, 65_536);
    let relay = Relay::start(config).await.context("starting the relay")?;
    // One parseable line: tests and scripts read the bound address from it.
    println!("fleetpulse relay listening quic={}", relay.local_addr());
    shutdown_signal().await;
    relay.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

async fn bootstrap(store: &Store, email: Option<String>) -> anyhow::Result<()> {
    let email = email.or_else(|| std::env::var("FLEETPULSE_ADMIN_EMAIL").ok());
    let password = std::env::var("FLEETPULSE_ADMIN_PASSWORD").ok();
    let outcome = fleetpulse_admin_api::bootstrap_admin(store, email, password)
        .await
        .map_err(|e| anyhow::anyhow!("creating the platform admin: {e}"))?;
    match outcome {
        BootstrapOutcome::Created { email, generated_password: Some(password), .. } => {
            // Printed once, on the first start: the only place a generated password appears.
            println!("created platform admin {email} with password {password} (shown once; change it)");
        }
        BootstrapOutcome::Created { email, generated_password: None, .. } => {
            println!("created platform admin {email}");
        }
        BootstrapOutcome::AlreadyPresent => {}
    }
    Ok(())
}

/// Opens the configured store (migrating it).
async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    let s = &settings.file.store;
    match s.backend.unwrap_or(StoreBackend::Embedded) {
        StoreBackend::Embedded => Store::open_embedded(
            &settings.data_dir,
            EmbeddedConfig {
                fsync: s.fsync.unwrap_or(true),
                accept_loss: settings.accept_loss,
                ..EmbeddedConfig::default()
            },
        )
        .with_context(|| format!("opening the embedded store in {}", settings.data_dir.display())),
        StoreBackend::Clickhouse => Store::open_scaleout(scaleout_config(settings)?)
            .await
            .context("opening the scale-out store (ClickHouse + PostgreSQL)"),
    }
}

/// The store `serve` runs on: with the scale-out store, this process is a node among several
/// (issue 16) and gets the cluster half too.
async fn open_serving_store(settings: &Settings) -> anyhow::Result<(Store, Option<Arc<dyn ClusterStore>>)> {
    match settings.file.store.backend.unwrap_or(StoreBackend::Embedded) {
        StoreBackend::Embedded => Ok((open_store(settings).await?, None)),
        StoreBackend::Clickhouse => {
            let (store, cluster) = Store::open_scaleout_node(scaleout_config(settings)?)
                .await
                .context("opening the scale-out store (ClickHouse + PostgreSQL)")?;
            Ok((store, Some(cluster)))
        }
    }
}

/// The scale-out store's settings.
fn scaleout_config(settings: &Settings) -> anyhow::Result<fleetpulse_store::ScaleOutConfig> {
    let s = &settings.file.store;
    {
        {
            let config = fleetpulse_store::ScaleOutConfig {
                postgres_url: s
                    .postgres_url
                    .clone()
                    .context("the clickhouse store needs a PostgreSQL URL (--postgres-url)")?,
                clickhouse: fleetpulse_store::clickhouse::ClickHouseConfig {
                    url: s
                        .clickhouse_url
                        .clone()
                        .context("the clickhouse store needs a ClickHouse URL (--clickhouse-url)")?,
                    database: s.clickhouse_database.clone().unwrap_or_else(|| "fleetpulse".into()),
                    user: s.clickhouse_user.clone(),
                    password: s.clickhouse_password.clone(),
                },
                spool: fleetpulse_store::spool::SpoolConfig {
                    dir: settings.data_dir.join("spool"),
                    max_bytes: s.spool_max_bytes.unwrap_or(1 << 30),
                    ..fleetpulse_store::spool::SpoolConfig::default()
                },
            };
            Ok(config)
        }
    }
}

/// A running server.
struct Server {
    ingest: Ingest,
    http: tokio::task::JoinHandle<std::io::Result<()>>,
    http_stop: tokio::sync::oneshot::Sender<()>,
    ready: Arc<AtomicBool>,
    quic_addr: SocketAddr,
    http_addr: SocketAddr,
    data_dir: PathBuf,
    retention: tokio::task::JoinHandle<()>,
    file_retention: tokio::task::JoinHandle<()>,
    notification_retention: tokio::task::JoinHandle<()>,
    alarms: AlarmService,
    outbox: Option<tokio::task::JoinHandle<()>>,
    stop_alarms: tokio::sync::watch::Sender<bool>,
    scheduler: tokio::task::JoinHandle<()>,
    stop_scheduler: tokio::sync::watch::Sender<bool>,
    /// Stops the firmware download server, if one runs.
    firmware_downloads: Option<tokio::sync::oneshot::Sender<()>>,
    /// Where it listens.
    firmware_addr: Option<SocketAddr>,
    /// This node among several (scale-out store), its tasks and their stop signal.
    cluster: Option<(cluster::Cluster, Vec<tokio::task::JoinHandle<()>>, tokio::sync::watch::Sender<bool>)>,
}

/// The firmware download server as started: the settings the API and the scheduler use.
struct FirmwareDownloads {
    settings: fleetpulse_admin_api::firmware::FirmwareSettings,
    addr: Option<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Loads the token key and, with `[firmware] https_listen`, starts the HTTPS download server
/// with the ingest's certificate.
async fn start_firmware_downloads(
    file: &FileConfig,
    data_dir: &std::path::Path,
    store: Arc<dyn fleetpulse_store::EntityStore>,
) -> anyhow::Result<FirmwareDownloads> {
    use fleetpulse_admin_api::firmware::{FirmwareKey, FirmwareSettings};
    let f = &file.firmware;
    let (max_upload_bytes, link_ttl) = f.limits()?;
    let key_path = f.key_file.clone().unwrap_or_else(|| data_dir.join("firmware.key"));
    let key = FirmwareKey::load_or_create(&key_path)
        .with_context(|| format!("the firmware token key {}", key_path.display()))?;
    let mut settings = FirmwareSettings { max_upload_bytes, download_base: None, key: key.clone(), link_ttl };
    let Some(listen) = f.https_listen else {
        return Ok(FirmwareDownloads { settings, addr: None, stop: None });
    };
    let source = match (file.tls.cert.clone(), file.tls.key.clone()) {
        (Some(cert), Some(key)) => TlsSource::Files { cert, key },
        _ => TlsSource::Dev { dir: data_dir.join("tls") },
    };
    let tls = fleetpulse_ingest::tls::https_server_config(&source).context("the firmware download certificate")?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the firmware download address {listen}"))?;
    let addr = listener.local_addr()?;
    let shown = match addr {
        a if a.ip().is_unspecified() => SocketAddr::new([127, 0, 0, 1].into(), a.port()),
        a => a,
    };
    settings.download_base = Some(f.public_url.clone().unwrap_or_else(|| format!("https://{shown}")));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let ctx = fleetpulse_admin_api::firmware_download::DownloadContext { store, key };
    tokio::spawn(fleetpulse_admin_api::firmware_download::serve_downloads(listener, Arc::new(tls), ctx, async move {
        let _ = stopped.await;
    }));
    Ok(FirmwareDownloads { settings, addr: Some(addr), stop: Some(stop) })
}

/// Device event batches queued from the shards to the alarm engine before they wait.
const ALARM_EVENT_QUEUE: usize = 1_024;

/// The outbox worker's settings from `[notify]`.
fn outbox_config(n: &config::NotifyFile) -> OutboxConfig {
    let d = OutboxConfig::default();
    OutboxConfig {
        per_receiver_per_minute: n.per_receiver_per_minute.unwrap_or(d.per_receiver_per_minute),
        global_per_second: n.global_per_second.unwrap_or(d.global_per_second),
        max_attempts: n.max_attempts.unwrap_or(d.max_attempts).max(1),
        backoff_base: n.backoff_base_s.map_or(d.backoff_base, Duration::from_secs),
        batch: n.batch.unwrap_or(d.batch).clamp(1, 10_000),
        ..d
    }
}

impl Server {
    async fn start(settings: Settings) -> anyhow::Result<Server> {
        let (store, cluster_store) = open_serving_store(&settings).await?;
        let Settings { data_dir, quic_addr, http_addr, file, files, .. } = settings;
        bootstrap(&store, None).await?;
        let retention = tokio::spawn(retention::telemetry(store.clone(), file.store.retention_days.unwrap_or(30)));
        let file_retention = tokio::spawn(retention::files(store.entities.clone()));
        let notification_days = file.notify.retention_days.unwrap_or(30).max(1);
        let notification_retention = tokio::spawn(retention::notifications(store.entities.clone(), notification_days));
        let mut registry = prometheus_client::registry::Registry::default();
        let cluster = match cluster_store {
            Some(store) => {
                let lease = file.cluster.lease_s.map_or(cluster::DEFAULT_LEASE, |s| Duration::from_secs(s.max(2)));
                Some(cluster::Cluster {
                    store,
                    id: cluster::node_id(file.cluster.node_id.as_deref(), &data_dir)?,
                    lease,
                    offline_hold: file.cluster.offline_hold_s.map_or(lease / 2, Duration::from_secs),
                    metrics: cluster::ClusterMetrics::register(&mut registry),
                })
            }
            None => None,
        };
        let mut metrics = IngestMetrics::register(&mut registry);
        // One set of dead-letter counters for the process (issue 18 item 5): shards, snapshot
        // writer and alarm service count into it.
        let dead_letters = fleetpulse_store::DeadLetterMetrics::register(&mut registry);
        metrics.dead_letters = dead_letters.clone();
        let mut ingest_config = IngestConfig::new(quic_addr, &data_dir);
        if let (Some(cert), Some(key)) = (file.tls.cert.clone(), file.tls.key.clone()) {
            ingest_config.tls = TlsSource::Files { cert, key };
        }
        let i = &file.ingest;
        ingest_config.shards = i.shards.unwrap_or(0);
        ingest_config.endpoints = i.endpoints.unwrap_or(0);
        ingest_config.missed_heartbeats = i.missed_heartbeats.unwrap_or(3);
        ingest_config.max_file_bytes = files.max_bytes;
        ingest_config.file_retention = files.retention;
        if let Some(v) = i.max_connections {
            ingest_config.max_connections = v;
        }
        if let Some(v) = i.max_relay_connections {
            ingest_config.max_relay_connections = v.get() as usize;
        }
        ingest_config.https_addr = i.https_listen;
        for r in &i.relays {
            anyhow::ensure!(
                r.credential.len() >= 16,
                "[[ingest.relays]] {}: the credential needs 16 characters",
                r.name
            );
            ingest_config.relays.push(fleetpulse_ingest::https::RelayGrant {
                name: r.name.clone(),
                credential: r.credential.clone(),
                enterprise: fleetpulse_proto::EnterpriseId(r.enterprise_id),
            });
        }
        if let Some(v) = i.https_max_body_bytes {
            ingest_config.https_max_body_bytes = v.clamp(1024, 64 << 20);
        }
        let l = &mut ingest_config.limits;
        l.device_per_s = i.device_rate.unwrap_or(l.device_per_s);
        l.device_burst = i.device_burst.unwrap_or(l.device_burst);
        l.enterprise_per_s = i.enterprise_rate.unwrap_or(l.enterprise_per_s);
        l.enterprise_burst = i.enterprise_burst.unwrap_or(l.enterprise_burst);
        // The alarm engine and the mail outbox (ALM-5).
        let listener = tokio::net::TcpListener::bind(http_addr)
            .await
            .with_context(|| format!("binding the HTTP address {http_addr}"))?;
        let http_addr = listener.local_addr()?;
        let (stop_alarms, stop_rx) = tokio::sync::watch::channel(false);
        let alarm_metrics = AlarmMetrics::register(&mut registry);
        let outbox_metrics = OutboxMetrics::register(&mut registry);
        let make_worker = match file.smtp.clone() {
            Some(smtp) => {
                let mailer = Mailer::new(smtp).context("the [smtp] section")?;
                let portal = file.notify.portal_url.clone().unwrap_or_else(|| format!("http://{http_addr}"));
                let (outbox, config) = (store.entities.clone(), outbox_config(&file.notify));
                Some(move || {
                    OutboxWorker::new(outbox.clone(), mailer.clone(), &portal, config.clone())
                        .with_audit(outbox.clone())
                        .with_metrics(outbox_metrics.clone())
                })
            }
            None => {
                tracing::warn!(
                    message = "No [smtp] section: alarm notifications are queued, not sent, until one is configured."
                );
                None
            }
        };
        let (alarm_tx, alarm_rx) = tokio::sync::mpsc::channel(ALARM_EVENT_QUEUE);
        // One node sends the outbox: the worker runs here directly, or while this node holds the
        // outbox lease (several nodes).
        // A single node hands fresh messages straight to its worker (issue 20); a node of several
        // only stores them and wakes its worker, if it holds the lease.
        let (handoff, outbox) = match (make_worker, &cluster) {
            (None, _) => (None, None),
            (Some(make), None) => {
                let worker = make();
                (Some(worker.handoff()), Some(tokio::spawn(worker.run(stop_rx.clone()))))
            }
            (Some(make), Some(c)) => {
                let wake = Arc::new(tokio::sync::Notify::new());
                let handoff = OutboxHandoff::store_only(wake.clone());
                (Some(handoff), Some(c.spawn_outbox(make, wake, stop_rx.clone())))
            }
        };
        let owner = EngineStateOwner::Single;
        let mut alarm_options = fleetpulse_alarm_service::ServiceOptions { dead_letters, owner, ..Default::default() };
        if let Some(attempts) = file.notify.store_attempts {
            alarm_options.retry.attempts = attempts.max(1);
        }
        // One engine on a single node; on a node of several, one per enterprise bucket it holds
        // (issue 16 item 3), each owning its saved state.
        let alarms = match &cluster {
            None => AlarmService::start_with(
                store.clone(),
                alarm_rx,
                handoff,
                stop_rx.clone(),
                alarm_metrics,
                alarm_options,
            )
            .await
            .context("starting the alarm engine")?,
            Some(c) => {
                let counters = engine_buckets::EngineBucketMetrics::register(&mut registry);
                let url = file.store.postgres_url.clone().context("the clickhouse store needs a PostgreSQL URL")?;
                engine_buckets::EngineBuckets::new(
                    c.clone(),
                    store.clone(),
                    handoff,
                    alarm_metrics,
                    alarm_options,
                    counters,
                )
                .start(alarm_rx, url, stop_rx.clone())
            }
        };
        ingest_config.alarm_events = Some(alarm_tx.clone());
        let mut presence = None;
        if let Some(c) = &cluster {
            c.join(&store, &quic_addr.to_string(), &http_addr.to_string()).await?;
            let (tx, rx) = tokio::sync::mpsc::channel(cluster::PRESENCE_QUEUE);
            ingest_config.session_presence = Some(tx);
            ingest_config.mark_offline_at_start = false;
            let (check_tx, check_rx) = tokio::sync::mpsc::channel(cluster::OFFLINE_CHECK_QUEUE);
            ingest_config.offline_checks = Some(check_tx);
            presence = Some((rx, check_rx));
        }
        let ingest = Ingest::start(ingest_config, store.clone(), metrics).await?;
        let cluster = match cluster {
            Some(c) => {
                let (stop, stopped) = tokio::sync::watch::channel(false);
                let shown = |a: SocketAddr| match a {
                    a if a.ip().is_unspecified() => SocketAddr::new([127, 0, 0, 1].into(), a.port()).to_string(),
                    a => a.to_string(),
                };
                let addrs = (shown(ingest.local_addr()), shown(http_addr));
                let mut tasks = Vec::new();
                if let Some((rx, check_rx)) = presence.take() {
                    tasks.push(c.spawn_presence(rx));
                    tasks.push(c.spawn_offline_checks(check_rx, ingest.takeover(), stopped.clone()));
                }
                tasks.push(c.spawn_heartbeat(store.clone(), Some(alarm_tx), ingest.live(), addrs, stopped.clone()));
                let url = file.store.postgres_url.clone().context("the clickhouse store needs a PostgreSQL URL")?;
                tasks.push(c.spawn_takeovers(url, ingest.takeover(), ingest.command_signal(), stopped));
                let (wake_tx, wake_rx) = tokio::sync::mpsc::channel(cluster::COMMAND_WAKE_QUEUE);
                ingest.command_signal().forward_to(wake_tx);
                // Not joined at stop: it ends with the last command signal.
                drop(c.spawn_command_wakes(wake_rx));
                Some((c, tasks, stop))
            }
            None => {
                drop(alarm_tx);
                None
            }
        };
        // The task scheduler (TSK-1): runs due scheduled tasks and wakes their devices' sessions.
        let (stop_scheduler, scheduler_stop) = tokio::sync::watch::channel(false);
        // One node: a device import still running was left by a process that stopped. (Several
        // nodes: it may be another node's; left alone.)
        let note = "the server stopped before the import finished".to_owned();
        let aborted = match cluster {
            Some(_) => Ok(0),
            None => store.entities.abort_running_device_imports(note, fleetpulse_proto::UnixMillis::now()).await,
        };
        match aborted {
            Ok(0) => {}
            Ok(n) => {
                tracing::warn!(message = "Device imports left running by the last process marked aborted.", imports = n)
            }
            Err(error) => tracing::error!(message = "Device imports left running could not be marked aborted.", %error),
        }

        let ready = Arc::new(AtomicBool::new(false));
        let mut api_config = file.http.api_config(ApiConfig::default());
        let firmware = start_firmware_downloads(&file, &data_dir, store.entities.clone()).await?;
        api_config.firmware = firmware.settings.clone();
        let limits = file.http.limits(api_config.max_body_bytes);
        let http_metrics = fleetpulse_admin_api::HttpMetrics::register(&mut registry);
        let state = ApiState {
            store,
            live: ingest.live(),
            registry: Arc::new(registry),
            ready: ready.clone(),
            config: api_config,
            alarms: Some(alarms.handle.clone()),
            downlink: ingest.command_signal(),
            sessions: ingest.session_closer(),
            cluster: cluster.as_ref().map(|(c, _, _)| c.store.clone()),
        };
        let scheduler = fleetpulse_admin_api::Scheduler::new(
            state.store.entities.clone(),
            ingest.command_signal(),
            fleetpulse_admin_api::Clock::System,
            fleetpulse_admin_api::SchedulerConfig {
                firmware: firmware.settings.clone(),
                ..fleetpulse_admin_api::SchedulerConfig::default()
            },
        )
        .with_alarms(alarms.handle.clone());
        let scheduler = tokio::spawn(scheduler.run(scheduler_stop));
        let (http_stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (app, metrics_app) = fleetpulse_admin_api::app_and_metrics(state);
        // `[http] metrics_addr`: /metrics on its own listener (same limits), stopped with the API.
        let metrics_listener = match file.http.metrics_addr {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding the metrics address {addr}"))?,
            ),
            None => None,
        };
        let (stop_all, _) = tokio::sync::broadcast::channel::<()>(1);
        if let Some(listener) = metrics_listener {
            let mut stop = stop_all.subscribe();
            let (limits, metrics) = (limits.clone(), http_metrics.clone());
            tokio::spawn(async move {
                let stopped = async move {
                    let _ = stop.recv().await;
                };
                fleetpulse_admin_api::serve::serve(listener, metrics_app, limits, metrics, stopped).await
            });
        }
        let http = tokio::spawn(async move {
            let stopped = async move {
                let _ = stopped.await;
                let _ = stop_all.send(());
            };
            fleetpulse_admin_api::serve::serve(listener, app, limits, http_metrics, stopped).await
        });
        ready.store(true, Ordering::SeqCst);
        let quic_addr = ingest.local_addr();
        // One parseable line: tests and scripts read the bound addresses from it.
        println!("fleetpulse listening quic={quic_addr} http={http_addr} data_dir={}", data_dir.display());
        if let Some(addr) = firmware.addr {
            println!("fleetpulse firmware downloads https={addr}");
        }
        if let Some(addr) = ingest.https_addr() {
            println!("fleetpulse ingest https={addr}");
        }
        Ok(Server {
            ingest,
            http,
            http_stop,
            ready,
            quic_addr,
            http_addr,
            data_dir,
            retention,
            file_retention,
            notification_retention,
            alarms,
            outbox,
            stop_alarms,
            scheduler,
            stop_scheduler,
            firmware_downloads: firmware.stop,
            firmware_addr: firmware.addr,
            cluster,
        })
    }

    /// Graceful stop: not ready, sessions closed after their acknowledged frames are durable,
    /// then the API.
    async fn stop(self) {
        tracing::info!(message = "Shutting down.");
        self.ready.store(false, Ordering::SeqCst);
        self.retention.abort();
        self.file_retention.abort();
        self.notification_retention.abort();
        // A run it claimed but did not finish stays pending; the next start finishes it.
        let _ = self.stop_scheduler.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.scheduler).await;
        self.ingest.shutdown(Duration::from_secs(10)).await;
        if let Some((cluster, tasks, stop)) = self.cluster {
            let _ = stop.send(true);
            for task in tasks {
                let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
            }
            cluster.leave().await;
        }
        let _ = self.http_stop.send(());
        if let Some(stop) = self.firmware_downloads {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.http).await;
        // The shards are gone: the engine has seen every durable event; let the effects reach
        // the outbox, then stop the worker (what it has not sent stays queued).
        let _ = tokio::time::timeout(Duration::from_secs(5), self.alarms.engine_task).await;
        let _ = self.stop_alarms.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.alarms.effects_task).await;
        if let Some(outbox) = self.outbox {
            let _ = tokio::time::timeout(Duration::from_secs(5), outbox).await;
        }
        tracing::info!(message = "Stopped.");
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(error) => {
            tracing::warn!(message = "Cannot listen for SIGTERM.", %error);
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}

async fn demo(args: ServeArgs, devices: u32) -> anyhow::Result<()> {
    let mut settings = resolve(args, ("fleetpulse-demo-data", "127.0.0.1:4433", "127.0.0.1:8080"))?;
    // The demo serves firmware downloads too (loopback, next to the API).
    settings.file.firmware.https_listen.get_or_insert(SocketAddr::from(([127, 0, 0, 1], 8444)));
    let email = std::env::var("FLEETPULSE_ADMIN_EMAIL").unwrap_or_else(|_| "admin@localhost".into());
    // The demo drives its fleet through the API, so it needs the password: a fixed default
    // unless one is given. The demo listens on loopback only by default.
    let password = std::env::var("FLEETPULSE_ADMIN_PASSWORD").unwrap_or_else(|_| "demo-password".into());
    // With both variables set the server bootstraps the admin itself; otherwise create it here.
    if std::env::var_os("FLEETPULSE_ADMIN_EMAIL").is_none() || std::env::var_os("FLEETPULSE_ADMIN_PASSWORD").is_none() {
        let store = open_store(&settings).await?;
        fleetpulse_admin_api::bootstrap_admin(&store, Some(email.clone()), Some(password.clone()))
            .await
            .map_err(|e| anyhow::anyhow!("creating the demo admin: {e}"))?;
    }
    let server = Server::start(settings).await?;
    let api = format!("http://{}", server.http_addr);
    println!();
    println!("fleetpulse demo: {devices} simulated phones are connecting.");
    println!("  management API   {api}  (admin {email} / {password})");
    println!("  metrics          {api}/metrics");
    println!("  devices          curl -H \"Authorization: Bearer $TOKEN\" {api}/api/v1/devices");
    println!("  get a token      curl -X POST {api}/api/v1/auth/login -H 'content-type: application/json' \\");
    println!("                     -d '{{\"email\":\"{email}\",\"password\":\"{password}\"}}'");
    println!("  CA certificate   {}", server.data_dir.join("tls/ca.pem").display());
    if let Some(addr) = server.firmware_addr {
        println!("  firmware         https://{addr}/firmware/<image>/<device>?token=… (docs/api/firmware.md)");
    }
    println!("Press Ctrl-C to stop.");
    let quic_addr = match server.quic_addr {
        a if a.ip().is_unspecified() => SocketAddr::new([127, 0, 0, 1].into(), a.port()),
        a => a,
    };
    let fleet = fleetpulse_loadtest::LoadConfig {
        quic_addr,
        api: api.clone(),
        admin_email: email,
        admin_password: password,
        ca_cert: server.data_dir.join("tls/ca.pem"),
        devices,
        duration: Duration::from_secs(365 * 24 * 3600),
        rate_per_device: 0.2,
        heartbeat_interval_s: 30,
        progress: false,
        ..fleetpulse_loadtest::LoadConfig::default()
    };
    let report = fleetpulse_loadtest::run_until(fleet, shutdown_signal()).await;
    server.stop().await;
    let report = report?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
