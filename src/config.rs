//! Configuration of `fleetpulse serve`: flags over environment over config file over defaults.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize;

/// The config file (TOML). Every field is optional; see `docs/CONFIG.md` in README for meaning.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Data directory.
    pub data_dir: Option<PathBuf>,
    /// QUIC listen address.
    pub quic_addr: Option<SocketAddr>,
    /// HTTP listen address.
    pub http_addr: Option<SocketAddr>,
    /// Production certificate.
    #[serde(default)]
    pub tls: TlsFile,
    /// Ingest tuning.
    #[serde(default)]
    pub ingest: IngestFile,
    /// Store tuning.
    #[serde(default)]
    pub store: StoreFile,
    /// SMTP relay for alarm emails (ALM-5). Without it notifications are queued in the outbox
    /// and sent once a relay is configured.
    pub smtp: Option<fleetpulse_mailer::SmtpConfig>,
    /// Alarm notification settings.
    #[serde(default)]
    pub notify: NotifyFile,
    /// Files devices upload in answer to commands.
    #[serde(default)]
    pub files: FilesFile,
    /// Limits of the HTTP server and of the account requests.
    #[serde(default)]
    pub http: HttpFile,
    /// Firmware uploads and the HTTPS download server (PRV-4).
    #[serde(default)]
    pub firmware: FirmwareFile,
    /// Several nodes sharing the scale-out store (issue 16).
    #[serde(default)]
    pub cluster: ClusterFile,
}

/// `[cluster]`: this node among several sharing the scale-out store (`docs/cluster.md`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// This node's id; `--node-id` overrides it. Unset: the id in `<data_dir>/node-id`, generated
    /// and written there at the first start.
    pub node_id: Option<String>,
    /// Seconds a node's lease lasts without a heartbeat (renewed every quarter of it); when it
    /// lapses, the node's devices that did not connect elsewhere go offline. Default 15.
    pub lease_s: Option<u64>,
    /// Seconds a device whose heartbeats are missing is held before it goes offline, so that a
    /// claim of its session by another node (it moved there) is known first. Default: half the
    /// lease.
    pub offline_hold_s: Option<u64>,
}

/// `[firmware]`: firmware uploads and the HTTPS download server (PRV-4, `docs/api/firmware.md`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirmwareFile {
    /// TCP address of the HTTPS download server; unset: no download server (upgrades are
    /// refused with 409). `--firmware-addr` overrides it.
    pub https_listen: Option<SocketAddr>,
    /// `https://host[:port]` devices are told to download from (default `https://<bound
    /// address>`, with an unspecified address replaced by 127.0.0.1).
    pub public_url: Option<String>,
    /// Largest upload, bytes (default 256 MiB; 1 byte to 1 GiB).
    pub max_bytes: Option<u64>,
    /// Lifetime of a download link and its upgrade command, seconds (default 86400; 60 to
    /// 604800).
    pub link_ttl_s: Option<u64>,
    /// The 32-byte token key (default `<data_dir>/firmware.key`, created on first start).
    pub key_file: Option<PathBuf>,
}

impl FirmwareFile {
    /// The checked upload limit and link lifetime, or an error naming the key and its bounds.
    pub fn limits(&self) -> anyhow::Result<(u64, Duration)> {
        let max = self.max_bytes.unwrap_or(fleetpulse_admin_api::firmware::DEFAULT_MAX_FIRMWARE_UPLOAD);
        let bound = fleetpulse_store::MAX_FIRMWARE_IMAGE_BYTES;
        if !(1..=bound).contains(&max) {
            anyhow::bail!("[firmware] max_bytes must be from 1 to {bound} (1 GiB), not {max}");
        }
        let ttl = self.link_ttl_s.unwrap_or(fleetpulse_admin_api::firmware::DEFAULT_LINK_TTL.as_secs());
        if !(60..=604_800).contains(&ttl) {
            anyhow::bail!("[firmware] link_ttl_s must be from 60 to 604800, not {ttl}");
        }
        if let Some(url) = &self.public_url
            && (!url.starts_with("https://") || url.len() > 512 || url.bytes().any(|b| !b.is_ascii_graphic()))
        {
            anyhow::bail!("[firmware] public_url must be an https:// URL without spaces, not {url:?}");
        }
        Ok((max, Duration::from_secs(ttl)))
    }
}

/// `[http]`: limits of the HTTP server (issue 19); every key defaults to
/// [`fleetpulse_admin_api::HttpLimits::default`] / [`fleetpulse_admin_api::LoginRateLimits::default`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpFile {
    /// Seconds a request's header may take to arrive (default 10).
    pub header_read_timeout_s: Option<NonZeroU32>,
    /// Seconds a request's body may take to arrive (default 30).
    pub body_read_timeout_s: Option<NonZeroU32>,
    /// Seconds a connection may sit without a byte before it is closed (default 60).
    pub idle_timeout_s: Option<NonZeroU32>,
    /// Concurrent connections (default 1024); keep it well below `ulimit -n`.
    pub max_connections: Option<NonZeroU32>,
    /// Connections past the cap that may still ask for /healthz and /readyz (default 16).
    pub probe_connections: Option<u32>,
    /// Logins, login codes and forgotten-password requests per minute per client IP (default 60).
    pub login_per_ip_per_minute: Option<NonZeroU32>,
    /// The same per account (email) (default 20).
    pub login_per_account_per_minute: Option<NonZeroU32>,
    /// Serve `/metrics` on this address instead of the API's (which then answers 404).
    pub metrics_addr: Option<SocketAddr>,
    /// Require `Authorization: Bearer <token>` on `/metrics`.
    pub metrics_token: Option<String>,
}

impl HttpFile {
    /// The server limits, with `max_body_bytes` from the API's settings.
    pub fn limits(&self, max_body_bytes: usize) -> fleetpulse_admin_api::HttpLimits {
        let d = fleetpulse_admin_api::HttpLimits::default();
        let secs = |v: Option<NonZeroU32>, d: Duration| v.map_or(d, |v| Duration::from_secs(v.get().into()));
        fleetpulse_admin_api::HttpLimits {
            header_read_timeout: secs(self.header_read_timeout_s, d.header_read_timeout),
            body_read_timeout: secs(self.body_read_timeout_s, d.body_read_timeout),
            idle_timeout: secs(self.idle_timeout_s, d.idle_timeout),
            max_connections: self.max_connections.map_or(d.max_connections, |v| v.get() as usize),
            probe_connections: self.probe_connections.map_or(d.probe_connections, |v| v as usize),
            max_body_bytes: max_body_bytes as u64,
        }
    }

    /// The API settings this section changes, on `base`.
    pub fn api_config(&self, base: fleetpulse_admin_api::ApiConfig) -> fleetpulse_admin_api::ApiConfig {
        let d = base.login_rate.clone();
        fleetpulse_admin_api::ApiConfig {
            login_rate: fleetpulse_admin_api::LoginRateLimits {
                per_ip_per_minute: self.login_per_ip_per_minute.unwrap_or(d.per_ip_per_minute),
                per_account_per_minute: self.login_per_account_per_minute.unwrap_or(d.per_account_per_minute),
                ..d
            },
            metrics_separate: self.metrics_addr.is_some(),
            metrics_token: self.metrics_token.clone().filter(|t| !t.is_empty()),
            ..base
        }
    }
}

/// `[files]`: files devices upload in answer to commands (issue 11).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesFile {
    /// Days an uploaded file is kept before it is deleted (default 10; 1 to 3650).
    pub retention_days: Option<u32>,
    /// Largest file a device may upload, bytes (default 64 MiB; 1 byte to 1 GiB, the store's
    /// bound).
    pub max_bytes: Option<u64>,
}

/// The `[files]` settings, checked ([`FilesFile::resolve`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilesConfig {
    /// Largest upload, bytes.
    pub max_bytes: u64,
    /// How long an uploaded file is kept.
    pub retention: Duration,
}

/// Default of `[files] retention_days`.
pub const DEFAULT_FILE_RETENTION_DAYS: u32 = 10;

/// Longest `[files] retention_days`.
pub const MAX_FILE_RETENTION_DAYS: u32 = 3_650;

/// Default of `[files] max_bytes`: 64 MiB.
pub const DEFAULT_FILE_MAX_BYTES: u64 = 64 * 1024 * 1024;

impl FilesFile {
    /// The settings with their defaults, or an error naming the key and its bounds.
    pub fn resolve(&self) -> anyhow::Result<FilesConfig> {
        let days = self.retention_days.unwrap_or(DEFAULT_FILE_RETENTION_DAYS);
        if !(1..=MAX_FILE_RETENTION_DAYS).contains(&days) {
            anyhow::bail!("[files] retention_days must be from 1 to {MAX_FILE_RETENTION_DAYS}, not {days}");
        }
        let max_bytes = self.max_bytes.unwrap_or(DEFAULT_FILE_MAX_BYTES);
        let limit = fleetpulse_store::MAX_STORED_FILE_BYTES;
        if !(1..=limit).contains(&max_bytes) {
            anyhow::bail!("[files] max_bytes must be from 1 to {limit} (1 GiB), not {max_bytes}");
        }
        Ok(FilesConfig { max_bytes, retention: Duration::from_secs(u64::from(days) * 86_400) })
    }
}

/// `[notify]`: how alarm emails are sent.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyFile {
    /// Base URL of the portal used in links (default: `http://<http_addr>`).
    pub portal_url: Option<String>,
    /// Emails per receiver per minute (default 10); what is over goes into the next digest.
    pub per_receiver_per_minute: Option<NonZeroU32>,
    /// Emails per second over all receivers (default 50).
    pub global_per_second: Option<NonZeroU32>,
    /// Attempts before a transiently failing email is given up (default 12).
    pub max_attempts: Option<u32>,
    /// Delay before the first retry, seconds; doubles per attempt (default 5).
    pub backoff_base_s: Option<u64>,
    /// Outbox messages taken per pass, and so the most one digest merges (default 500, at most
    /// 10,000).
    pub batch: Option<u32>,
    /// Days sent or given-up outbox messages, their item keys and the notification audit are
    /// kept (default 30, at least 1).
    pub retention_days: Option<u32>,
    /// Attempts at storing what the alarm engine decided (a threshold alarm record, a
    /// notification, a window mark) while the store fails, 100 ms doubling to 30 s apart, before
    /// it becomes a dead letter (default 8, at least 1; issue 18 item 5).
    pub store_attempts: Option<u32>,
}

/// `[tls]`: both or neither.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    /// PEM certificate chain.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
}

/// `[ingest]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestFile {
    /// Shards (0 = one per core).
    pub shards: Option<usize>,
    /// Endpoints sharing the UDP port (0 = one per core).
    pub endpoints: Option<usize>,
    /// Missed heartbeat intervals before offline.
    pub missed_heartbeats: Option<u32>,
    /// Most simultaneous connections.
    pub max_connections: Option<usize>,
    /// Most relay-link connections (ALPN `fleetpulse-relay/1`) at once, apart from
    /// `max_connections` (default 64; at least 1).
    pub max_relay_connections: Option<NonZeroU32>,
    /// Frames per second per device.
    pub device_rate: Option<NonZeroU32>,
    /// Burst per device.
    pub device_burst: Option<NonZeroU32>,
    /// Frames per second per enterprise.
    pub enterprise_rate: Option<NonZeroU32>,
    /// Burst per enterprise.
    pub enterprise_burst: Option<NonZeroU32>,
    /// TCP address of HTTPS ingest (ING-10, `POST /ingest/v1/...`); none: not served.
    pub https_listen: Option<std::net::SocketAddr>,
    /// Largest HTTPS ingest request body, bytes (default 4 MiB).
    pub https_max_body_bytes: Option<usize>,
    /// `[[ingest.relays]]`: relays allowed to carry the devices of one enterprise over HTTPS
    /// ingest (ING-9).
    #[serde(default)]
    pub relays: Vec<RelayFile>,
}

/// One `[[ingest.relays]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayFile {
    /// For logs.
    pub name: String,
    /// The relay's own credential (`fleetpulse relay --credential`), at least 16 characters.
    pub credential: String,
    /// The one enterprise whose devices the relay may carry.
    pub enterprise_id: u64,
}

/// `[store]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreFile {
    /// `embedded` (default) or `clickhouse` (ClickHouse for events + PostgreSQL for entities).
    pub backend: Option<StoreBackend>,
    /// Embedded store: fsync every commit (survives power loss); default true.
    pub fsync: Option<bool>,
    /// Scale-out: ClickHouse HTTP URL, e.g. `http://127.0.0.1:8123`.
    pub clickhouse_url: Option<String>,
    /// Scale-out: ClickHouse database (default `fleetpulse`).
    pub clickhouse_database: Option<String>,
    /// Scale-out: ClickHouse user.
    pub clickhouse_user: Option<String>,
    /// Scale-out: ClickHouse password.
    pub clickhouse_password: Option<String>,
    /// Scale-out: PostgreSQL URL, e.g. `postgres://fleetpulse@127.0.0.1/fleetpulse`.
    pub postgres_url: Option<String>,
    /// Scale-out: bound of the local spool in front of ClickHouse, bytes (default 1 GiB).
    pub spool_max_bytes: Option<u64>,
    /// Days of telemetry (status events, resource reports, alarm events) kept; default 30.
    pub retention_days: Option<u32>,
}

/// Which store backend serves the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// SQLite under the data directory; needs no other server.
    Embedded,
    /// ClickHouse for events, PostgreSQL for entities, a spool under the data directory.
    Clickhouse,
}

impl FileConfig {
    /// Reads and parses a config file; errors name the file.
    pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_file_and_rejects_unknown_keys() {
        let cfg: FileConfig = toml::from_str(
            r#"
            data_dir = "/var/lib/fleetpulse"
            quic_addr = "0.0.0.0:4433"
            [ingest]
            shards = 4
            device_rate = 50
            [store]
            fsync = false
            [smtp]
            host = "smtp.example.com"
            port = 587
            security = "start_tls"
            from = "fleetpulse <alarms@example.com>"
            [notify]
            portal_url = "https://portal.example.com"
            per_receiver_per_minute = 5
            "#,
        )
        .expect("valid");
        assert_eq!(cfg.ingest.shards, Some(4));
        assert_eq!(cfg.store.fsync, Some(false));
        assert_eq!(cfg.smtp.as_ref().map(|s| s.port), Some(587));
        assert_eq!(cfg.notify.per_receiver_per_minute.map(|n| n.get()), Some(5));
        assert!(toml::from_str::<FileConfig>("[notify]\nper_receiver = 1").is_err());
        assert!(toml::from_str::<FileConfig>("quic_adr = \"x\"").is_err());
        assert!(toml::from_str::<FileConfig>("[ingest]\ndevice_rate = 0").is_err());
    }

    #[test]
    fn max_relay_connections_is_optional_and_at_least_one() {
        let ingest = |text: &str| toml::from_str::<FileConfig>(text).map(|c| c.ingest.max_relay_connections);
        assert_eq!(ingest("").expect("unset"), None);
        assert_eq!(ingest("[ingest]\nmax_relay_connections = 4").expect("valid").map(NonZeroU32::get), Some(4));
        for bad in ["[ingest]\nmax_relay_connections = 0", "[ingest]\nmax_relay_connections = -1"] {
            let message = ingest(bad).expect_err(bad).to_string();
            assert!(message.contains("max_relay_connections"), "the error names the key: {message}");
        }
        let zero = ingest("[ingest]\nmax_relay_connections = 0").expect_err("0 is refused").to_string();
        assert!(zero.contains("nonzero"), "the error says why: {zero}");
    }

    #[test]
    fn http_limits_default_and_override() {
        let http = |text: &str| toml::from_str::<FileConfig>(text).expect("parses").http;
        assert_eq!(
            http("").limits(1024),
            fleetpulse_admin_api::HttpLimits { max_body_bytes: 1024, ..Default::default() }
        );
        let set = http(
            "[http]\nheader_read_timeout_s = 2\nmax_connections = 8\nprobe_connections = 0\nlogin_per_ip_per_minute = 3\nmetrics_token = \"t\"",
        );
        let limits = set.limits(1);
        assert_eq!(
            (limits.header_read_timeout, limits.max_connections, limits.probe_connections),
            (Duration::from_secs(2), 8, 0)
        );
        let api = set.api_config(fleetpulse_admin_api::ApiConfig::default());
        assert_eq!(
            (api.login_rate.per_ip_per_minute.get(), api.metrics_token.as_deref(), api.metrics_separate),
            (3, Some("t"), false)
        );
        assert!(toml::from_str::<FileConfig>("[http]\nmax_connections = 0").is_err());
        assert!(toml::from_str::<FileConfig>("[http]\nheader_timeout = 1").is_err());
    }

    #[test]
    fn files_default_bound_and_name_the_bad_key() {
        let files = |text: &str| toml::from_str::<FileConfig>(text).expect("parses").files.resolve();
        let defaults = files("").expect("defaults");
        assert_eq!(defaults, FilesConfig { max_bytes: 64 * 1024 * 1024, retention: Duration::from_secs(10 * 86_400) });
        let set = files("[files]\nretention_days = 1\nmax_bytes = 1048576").expect("valid");
        assert_eq!(set, FilesConfig { max_bytes: 1 << 20, retention: Duration::from_secs(86_400) });
        assert_eq!(files("[files]\nmax_bytes = 1073741824").expect("1 GiB").max_bytes, 1 << 30);
        for (bad, needle) in [
            ("[files]\nretention_days = 0", "retention_days"),
            ("[files]\nretention_days = 3651", "retention_days"),
            ("[files]\nmax_bytes = 0", "max_bytes"),
            ("[files]\nmax_bytes = 1073741825", "max_bytes"),
        ] {
            let message = files(bad).expect_err(bad).to_string();
            assert!(message.contains(needle), "{message}");
        }
        assert!(toml::from_str::<FileConfig>("[files]\nretention = 3").is_err(), "unknown keys are refused");
        assert!(toml::from_str::<FileConfig>("[files]\nmax_bytes = -1").is_err());
    }
}
