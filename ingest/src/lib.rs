//! The QUIC ingest tier of fleetpulse (ING-1..8), HTTPS ingest (ING-10) and the relay (ING-9,
//! [`relay`]: a separate process that carries a site's devices upstream over one QUIC connection
//! to the relay link, or over HTTPS ingest).
//!
//! ```text
//! UDP socket × N (SO_REUSEPORT) ─▶ quinn Endpoint × N ─▶ session task per connection
//!     session: Hello → authenticate → register → Welcome → read loop ─▶ shard queue (bounded)
//!              read loop: command answers → command store (durable) before the shard
//!              command sender: requeue unanswered → claim queued → writer; waits on CommandSignal
//!              upload streams (≤ 2): header checked → temp file + SHA-256 → file store
//!              writer: the one task on the control stream (acks, rejections, commands, files)
//!     command expiry: every second, pending commands past their deadline → expired
//!     shard × M: dedup (device, seq) → live state, alarm engine, offline detector → EventBatch
//!               → store.append (durable) → acks back to the sessions, in order
//!               → (durable) status reports, online/offline → snapshot writer (coalesced, ≤ 1 s)
//! TCP (TLS, HTTP/1.1 + HTTP/2) ─▶ https: one request = Hello + frames ─▶ exchange: the same
//!     admission, the same shard queue; the response waits for the shard's durable answer (ING-10)
//! QUIC, ALPN fleetpulse-relay/1 ─▶ relay_link: one stream = one relay exchange ─▶ exchange (ING-9)
//! ```
//!
//! *Architecture invariant*: a frame is acknowledged only after it is applied and, for persisted
//! kinds, durable in the store. *Architecture invariant*: every queue is bounded; when the store
//! or a shard falls behind, sessions stop reading and QUIC flow control slows the devices.

mod admission;
mod batcher;
pub mod closer;
mod commands;
pub mod downlink;
mod exchange;
pub mod https;
pub mod https_commands;
mod https_json;
pub mod live;
pub mod metrics;
pub mod offline;
mod outbound;
mod queue;
pub mod relay;
pub mod relay_auth;
mod relay_link;
mod relay_upstream;
mod relay_upstream_quic;
pub mod router;
mod session;
mod shard;
pub mod snapshots;
mod takeover;
pub mod tls;
mod uploads;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use fleetpulse_proto::{DeviceId, EnterpriseId};
use fleetpulse_store::{CommandStore, DeviceStore, EventStore, FileStore, Store, TenantStore};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use closer::SessionCloser;
pub use downlink::CommandSignal;
pub use live::{LiveCounts, LiveDevice, LiveState};
pub use metrics::IngestMetrics;
pub use router::ShardRouter;
pub use session::RateLimits;
pub use takeover::SessionTakeover;
pub use tls::TlsSource;

/// Errors starting the ingest tier.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The certificate or key could not be generated, read or used.
    #[error("TLS: {0}")]
    Tls(String),
    /// A socket could not be bound or a file written.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The store refused a start-up write (marking every device offline).
    #[error("store: {0}")]
    Store(String),
}

/// Settings of the ingest tier.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// UDP address devices connect to.
    pub quic_addr: SocketAddr,
    /// Endpoints (sockets) sharing the port; 0 = one per core.
    pub endpoints: usize,
    /// Shards; 0 = one per core.
    pub shards: usize,
    /// Commands each shard queue holds before sessions wait.
    pub shard_queue_depth: usize,
    /// Rows a shard collects into one batch at most.
    pub max_batch_rows: usize,
    /// Largest frame accepted, bytes.
    pub max_frame_len: usize,
    /// Time a new connection has to open its stream and send Hello.
    pub hello_timeout: Duration,
    /// QUIC idle timeout: frees the state of vanished peers. Devices whose heartbeat interval is
    /// longer than this must send QUIC keep-alives.
    pub idle_timeout: Duration,
    /// Missed heartbeat intervals before a device is offline.
    pub missed_heartbeats: u32,
    /// Most simultaneous connections; more are refused.
    pub max_connections: usize,
    /// Most handshakes in progress at once; more are refused and the devices retry.
    pub max_handshakes: usize,
    /// Most relay-link connections (ALPN `fleetpulse-relay/1`) at once, apart from
    /// `max_connections` (which counts devices); more are closed with
    /// `close_code::TOO_MANY_CONNECTIONS` before they are widened. A site's relay holds one.
    pub max_relay_connections: usize,
    /// Certificate source.
    pub tls: TlsSource,
    /// Folder for the persistent endpoint keys (stateless reset, connection ids).
    pub state_dir: std::path::PathBuf,
    /// Rate limits.
    pub limits: RateLimits,
    /// Where the shards send device events for the alarm engine once they are durable (none:
    /// alarm records are still kept, nobody is notified).
    pub alarm_events: Option<mpsc::Sender<Vec<fleetpulse_alarm_engine::DeviceEvent>>>,
    /// Largest file a device may upload, bytes (sent in `Welcome.max_file_bytes`).
    pub max_file_bytes: u64,
    /// How long an uploaded file is kept.
    pub file_retention: Duration,
    /// Folder for uploads in progress (temporary files; leftovers are deleted at start).
    pub upload_dir: std::path::PathBuf,
    /// Marks every device offline at start (one node). Off when several nodes share the store:
    /// each node then takes offline only the sessions it or a lost node held (issue 16).
    pub mark_offline_at_start: bool,
    /// Where the devices that came online or went offline here are told, once durable, as
    /// (device, online) (issue 16: session ownership); none for one node.
    pub session_presence: Option<mpsc::Sender<Vec<(DeviceId, bool)>>>,
    /// Several nodes (issue 16): devices whose heartbeats are missing are sent here to be checked
    /// against the session table before they go offline; the verdicts come back through
    /// [`SessionTakeover::offline_verdicts`]. None (one node): they go offline at once.
    pub offline_checks: Option<mpsc::Sender<Vec<DeviceId>>>,
    /// TCP address of HTTPS ingest (ING-10); none: not served.
    pub https_addr: Option<SocketAddr>,
    /// Largest HTTPS ingest request body, bytes.
    pub https_max_body_bytes: usize,
    /// Relays allowed to carry devices over HTTPS ingest, each for one enterprise (ING-9), from
    /// the config file; the portal's stored grants are accepted too ([`relay_auth`]).
    pub relays: Vec<https::RelayGrant>,
}

/// Default of [`IngestConfig::max_relay_connections`]: a site runs one or a few relays, each
/// with one connection.
pub const DEFAULT_MAX_RELAY_CONNECTIONS: usize = 64;

/// Default of [`IngestConfig::max_file_bytes`]: 64 MiB.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 64 << 20;

/// Default of [`IngestConfig::file_retention`]: 10 days.
pub const DEFAULT_FILE_RETENTION: Duration = Duration::from_secs(10 * 24 * 3600);

impl IngestConfig {
    /// Defaults for a data directory.
    pub fn new(quic_addr: SocketAddr, data_dir: &std::path::Path) -> IngestConfig {
        IngestConfig {
            quic_addr,
            endpoints: 0,
            shards: 0,
            shard_queue_depth: 1024,
            max_batch_rows: 20_000,
            max_frame_len: fleetpulse_proto::MAX_FRAME_LEN,
            hello_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            missed_heartbeats: 3,
            max_connections: 250_000,
            max_handshakes: 2_048,
            max_relay_connections: DEFAULT_MAX_RELAY_CONNECTIONS,
            tls: TlsSource::Dev { dir: data_dir.join("tls") },
            state_dir: data_dir.join("tls"),
            limits: RateLimits::default(),
            alarm_events: None,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            file_retention: DEFAULT_FILE_RETENTION,
            upload_dir: data_dir.join("uploads"),
            mark_offline_at_start: true,
            session_presence: None,
            offline_checks: None,
            https_addr: None,
            https_max_body_bytes: https::DEFAULT_MAX_BODY_BYTES,
            relays: Vec::new(),
        }
    }
}

/// Shared by every session.
pub(crate) struct Context {
    config: IngestConfig,
    /// Provisioning credentials (session authentication).
    tenants: Arc<dyn TenantStore>,
    /// Device registration (ING-2 auto-add).
    devices: Arc<dyn DeviceStore>,
    /// Delivery marks (`Welcome.last_seq`).
    events: Arc<dyn EventStore>,
    /// The durable command queue (ING-8).
    commands: Arc<dyn CommandStore>,
    /// Uploaded files (ING-8).
    files: Arc<dyn FileStore>,
    metrics: IngestMetrics,
    router: ShardRouter,
    shards: Vec<mpsc::Sender<shard::ShardCmd>>,
    connections: Arc<DashMap<DeviceId, quinn::Connection>>,
    /// Sessions to wake when commands are queued for their device.
    command_signal: CommandSignal,
    credentials: DashMap<String, EnterpriseId>,
    /// Relay credentials: the config file's and the portal's grants (ING-9).
    relay_auth: relay_auth::RelayAuth,
    /// What HTTPS ingest requests and relay link exchanges share (ING-9, ING-10).
    exchanges: exchange::ExchangeState,
    enterprise_limiter: DefaultKeyedRateLimiter<EnterpriseId>,
    handshakes: Arc<tokio::sync::Semaphore>,
    /// One slot per relay-link connection, held for its life (`max_relay_connections`).
    relay_links: Arc<tokio::sync::Semaphore>,
    shutdown: watch::Receiver<bool>,
}

/// The running ingest tier.
#[derive(Debug)]
pub struct Ingest {
    live: Arc<LiveState>,
    local_addr: SocketAddr,
    endpoints: Vec<quinn::Endpoint>,
    shutdown: watch::Sender<bool>,
    context: Option<Arc<Context>>,
    shard_tasks: Vec<JoinHandle<()>>,
    accept_tasks: Vec<JoinHandle<()>>,
    snapshot_task: Option<JoinHandle<()>>,
    expiry_task: Option<JoinHandle<()>>,
    https_addr: Option<SocketAddr>,
    https_task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("shards", &self.shards.len()).finish_non_exhaustive()
    }
}

fn bind_sockets(addr: SocketAddr, n: usize) -> std::io::Result<Vec<std::net::UdpSocket>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let mut out = Vec::with_capacity(n);
    let mut bound = addr;
    for _ in 0..n {
        let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        s.set_reuse_port(true)?;
        if addr.is_ipv6() {
            s.set_only_v6(false).ok();
        }
        // Larger buffers absorb bursts of handshakes; the kernel caps them at rmem_max.
        s.set_recv_buffer_size(4 << 20).ok();
        s.set_send_buffer_size(4 << 20).ok();
        s.bind(&bound.into())?;
        if bound.port() == 0 {
            bound = s.local_addr()?.as_socket().unwrap_or(addr);
        }
        out.push(s.into());
    }
    Ok(out)
}

impl Ingest {
    /// Binds the endpoints and starts the shards and accept loops.
    pub async fn start(config: IngestConfig, store: Store, metrics: IngestMetrics) -> Result<Ingest, IngestError> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let n_endpoints = if config.endpoints == 0 { cores } else { config.endpoints };
        let n_shards = if config.shards == 0 { cores } else { config.shards };
        let server_config = tls::ingest_server_config(&config.tls, config.idle_timeout)?;
        let keys = tls::endpoint_keys(&config.state_dir)?;
        uploads::prepare_upload_dir(&config.upload_dir)?;
        let sockets = bind_sockets(config.quic_addr, n_endpoints)?;
        let https = match config.https_addr {
            Some(addr) => {
                let mut tls = tls::https_server_config(&config.tls)?;
                tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
                Some((https::bind(addr).await?, Arc::new(tls)))
            }
            None => None,
        };
        let local_addr = sockets[0].local_addr()?;
        let live = Arc::new(LiveState::new());
        let (shutdown_tx, shutdown_rx) = watch::channel(false);

        let shard_config =
            shard::ShardConfig { max_batch_rows: config.max_batch_rows, missed_heartbeats: config.missed_heartbeats };
        // One node: a device is online only once it connects to this process.
        if config.mark_offline_at_start {
            match store.entities.mark_devices_offline().await {
                Ok(n) => tracing::info!(message = "Marked devices offline until they connect again.", devices = n),
                Err(error) => return Err(IngestError::Store(error.to_string())),
            }
        }
        let (snapshot_tx, snapshot_rx) = mpsc::channel(snapshots::QUEUE_BATCHES);
        let snapshot_task = tokio::spawn(snapshots::run(
            snapshot_rx,
            store.entities.clone(),
            fleetpulse_store::DeadLetterSink::new(store.entities.clone(), metrics.dead_letters.clone()),
            metrics.clone(),
            config.session_presence.clone(),
        ));
        let mut shards = Vec::with_capacity(n_shards);
        let mut shard_tasks = Vec::with_capacity(n_shards);
        for _ in 0..n_shards {
            let (tx, rx) = mpsc::channel(config.shard_queue_depth.max(1));
            let shard = shard::Shard::new(
                shard_config,
                live.clone(),
                store.clone(),
                metrics.clone(),
                config.alarm_events.clone(),
                snapshot_tx.clone(),
                config.offline_checks.clone(),
            );
            shard_tasks.push(tokio::spawn(shard.run(rx)));
            shards.push(tx);
        }
        // The writer stops once every shard (and with it every sender) is gone.
        drop(snapshot_tx);
        let expiry_task =
            tokio::spawn(commands::expire_commands(store.entities.clone(), metrics.clone(), shutdown_rx.clone()));
        let limits = config.limits;
        let context = Arc::new(Context {
            router: ShardRouter::new(n_shards),
            shards,
            connections: Arc::new(DashMap::new()),
            command_signal: CommandSignal::default(),
            credentials: DashMap::new(),
            relay_auth: relay_auth::RelayAuth::new(&config.relays, store.entities.clone(), store.entities.clone()),
            exchanges: exchange::ExchangeState::new(limits),
            enterprise_limiter: RateLimiter::keyed(
                Quota::per_second(limits.enterprise_per_s).allow_burst(limits.enterprise_burst),
            ),
            handshakes: Arc::new(tokio::sync::Semaphore::new(config.max_handshakes.max(1))),
            relay_links: Arc::new(tokio::sync::Semaphore::new(
                config.max_relay_connections.min(tokio::sync::Semaphore::MAX_PERMITS),
            )),
            shutdown: shutdown_rx,
            tenants: store.entities.clone(),
            devices: store.entities.clone(),
            events: store.events.clone(),
            commands: store.entities.clone(),
            files: store.entities.clone(),
            metrics,
            config,
        });

        tokio::spawn(exchange::forget_replenished_limits(Arc::downgrade(&context)));
        let mut endpoints = Vec::with_capacity(n_endpoints);
        let mut accept_tasks = Vec::with_capacity(n_endpoints);
        for socket in sockets {
            let endpoint = quinn::Endpoint::new(
                keys.endpoint_config(),
                Some(server_config.clone()),
                socket,
                Arc::new(quinn::TokioRuntime),
            )?;
            accept_tasks.push(tokio::spawn(accept_loop(endpoint.clone(), context.clone())));
            endpoints.push(endpoint);
        }
        let (https_addr, https_task) = match https {
            Some((listener, tls)) => {
                let addr = listener.local_addr()?;
                let task = tokio::spawn(https::serve(listener, tls, context.clone(), context.shutdown.clone()));
                tracing::info!(message = "HTTPS ingest listening.", %addr);
                (Some(addr), Some(task))
            }
            None => (None, None),
        };
        tracing::info!(message = "Ingest listening.", addr = %local_addr, endpoints = n_endpoints, shards = n_shards);
        Ok(Ingest {
            https_addr,
            https_task,
            live,
            local_addr,
            endpoints,
            shutdown: shutdown_tx,
            context: Some(context),
            shard_tasks,
            accept_tasks,
            snapshot_task: Some(snapshot_task),
            expiry_task: Some(expiry_task),
        })
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The bound TCP address of HTTPS ingest, if it is served.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https_addr
    }

    /// Wakes the sessions of devices with newly queued commands (the API and the task scheduler
    /// call it after queueing).
    pub fn command_signal(&self) -> CommandSignal {
        self.context.as_ref().map(|c| c.command_signal.clone()).unwrap_or_default()
    }

    /// Closes the session of a device an admin deleted or moved (the API calls it).
    pub fn session_closer(&self) -> SessionCloser {
        self.context.as_ref().map(|c| SessionCloser::new(c.connections.clone())).unwrap_or_default()
    }

    /// Tells the shards which devices another node took over (issue 16).
    pub fn takeover(&self) -> SessionTakeover {
        SessionTakeover::new(self.context.as_ref().map(Arc::downgrade).unwrap_or_default())
    }

    /// Live device state, for the API.
    pub fn live(&self) -> Arc<LiveState> {
        self.live.clone()
    }

    /// Stops accepting, closes every session (`SHUTTING_DOWN`), lets the shards commit what they
    /// hold, and waits (at most `grace`) for the endpoints to go idle.
    pub async fn shutdown(mut self, grace: Duration) {
        for e in &self.endpoints {
            e.set_server_config(None);
        }
        for t in &self.accept_tasks {
            t.abort();
        }
        let _ = self.shutdown.send(true);
        if let Some(task) = self.https_task.take()
            && tokio::time::timeout(grace, task).await.is_err()
        {
            tracing::warn!(message = "HTTPS ingest did not stop in time.");
        }
        if let Some(task) = self.expiry_task.take()
            && tokio::time::timeout(grace, task).await.is_err()
        {
            tracing::warn!(message = "The command expiry task did not stop in time.");
        }
        // Sessions hold clones of the shard senders; once they and this one are gone the shards
        // drain and stop.
        drop(self.context.take());
        let shards = futures_join_all(std::mem::take(&mut self.shard_tasks));
        if tokio::time::timeout(grace, shards).await.is_err() {
            tracing::warn!(message = "Shards did not drain in time.");
        }
        if let Some(task) = self.snapshot_task.take()
            && tokio::time::timeout(grace, task).await.is_err()
        {
            tracing::warn!(message = "The device snapshot writer did not finish in time.");
        }
        for e in &self.endpoints {
            let _ = tokio::time::timeout(grace, e.wait_idle()).await;
        }
    }
}

async fn futures_join_all(tasks: Vec<JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}

async fn accept_loop(endpoint: quinn::Endpoint, ctx: Arc<Context>) {
    while let Some(incoming) = endpoint.accept().await {
        if ctx.connections.len() >= ctx.config.max_connections {
            ctx.metrics.connection_errors.get_or_create(&metrics::ReasonLabel { reason: "too_many_connections" }).inc();
            incoming.refuse();
            continue;
        }
        tokio::spawn(session::run(Box::new(incoming), ctx.clone()));
    }
}
