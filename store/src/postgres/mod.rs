//! PostgreSQL backend of the portal entities ([`EntityStore`]) for the scale-out store.
//!
//! Behaves like the embedded backend's entity half, errors included; the events live elsewhere
//! (ClickHouse). Unlike the embedded store, whose single writer serialises every write, many
//! connections write here at once, so device registration is written to be race-free: the
//! insert yields to a concurrent one (`ON CONFLICT DO NOTHING`) and the device is read again.
//!
//! No SQL type crosses the module boundary: ids are `BIGINT` in the database and typed `u64`
//! ids outside; an id above `i64::MAX` cannot exist, so looking one up finds nothing.

mod account_security;
mod schema;

use std::collections::HashMap;

use async_trait::async_trait;
use fleetpulse_proto::catalog::DeviceType;
use fleetpulse_proto::domain::DeviceKey;
use fleetpulse_proto::ids::ChannelId;
use fleetpulse_proto::{AccountId, DeviceId, EnterpriseId, Mac, UnixMillis};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Row};

pub use schema::CURRENT_VERSION as SCHEMA_VERSION;

use crate::*;

/// How long connecting, and each operation waiting for a free connection, may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Attempts at registering a device that keeps losing races with concurrent registrations of
/// the same key. The second attempt always settles it (rows are never deleted); the bound only
/// turns a bug into an error instead of a loop.
const REGISTER_ATTEMPTS: usize = 3;

/// The PostgreSQL entity store: a connection pool over a migrated database.
#[derive(Debug, Clone)]
pub struct PgEntityStore {
    pool: PgPool,
}

impl PgEntityStore {
    /// Connects to `url` (`postgres://user@host:port/database`) with a pool of at most
    /// `max_connections` (at least 1) connections, and applies the schema migrations the
    /// database lacks.
    ///
    /// [`StoreError::Backend`] if the database cannot be reached, [`StoreError::Migration`] if
    /// its schema cannot be brought up to date (including when it is newer than this build).
    pub async fn connect(url: &str, max_connections: u32) -> Result<PgEntityStore> {
        let options: PgConnectOptions = url.parse().map_err(backend)?;
        // Migrate over one plain connection first: an unreachable server then fails at once
        // with its cause, where the pool would retry until its timeout and report only that.
        let mut conn = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options))
            .await
            .map_err(|_| StoreError::Backend(format!("no connection to PostgreSQL within {CONNECT_TIMEOUT:?}")))?
            .map_err(backend)?;
        let version = schema::migrate(&mut conn).await?;
        refresh_device_types(&mut conn).await?;
        if let Err(error) = conn.close().await {
            tracing::debug!(message = "Closing the migration connection failed.", %error);
        }
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(backend)?;
        tracing::info!(message = "Connected to the PostgreSQL entity store.", schema_version = version);
        Ok(PgEntityStore { pool })
    }

    /// Closes the pool: waits for checked-out connections to return, then every later
    /// operation fails with [`StoreError::Closed`].
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn channel_row_exists(&self, id: ChannelId) -> Result<bool> {
        let Some(id) = db_id(id.0) else { return Ok(false) };
        let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM channels WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        Ok(found.is_some())
    }

    async fn find_device(&self, key: &DeviceKey) -> Result<Option<Device>> {
        let query = match key {
            DeviceKey::Mac(mac) => sqlx::query(DEVICE_BY_MAC).bind(mac.as_str()),
            DeviceKey::Serial(serial) => sqlx::query(DEVICE_BY_SERIAL).bind(serial.as_str()),
        };
        query.fetch_optional(&self.pool).await.map_err(backend)?.as_ref().map(device_from_row).transpose()
    }
}

/// Records one attempt's outcome on a pending outbox message (id, state, next attempt, error,
/// time); a message that is no longer pending does not change.
const RECORD_OUTBOX_ATTEMPT: &str = "UPDATE outbox SET state = $2, attempts = attempts + 1, next_attempt_at = $3, \
     last_error = $4, sent_at = CASE WHEN $2 = 'sent' THEN $5 ELSE sent_at END WHERE id = $1 AND state = 'pending'";

// ---- errors ----

fn backend(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::PoolClosed => StoreError::Closed,
        e => StoreError::Backend(e.to_string()),
    }
}

/// Maps a unique violation (SQLSTATE 23505) to [`StoreError::AlreadyExists`]`(what)`.
fn unique_as(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::AlreadyExists(what),
        _ => backend(e),
    }
}

/// The database form of an id, or `None` for an id no row can have.
fn db_id(id: u64) -> Option<i64> {
    i64::try_from(id).ok()
}

/// The channel and enterprise lists of a "channel in … OR enterprise in …" filter as database
/// arrays, each checked against `max`; `None` when neither is given (no filter). An id no row can
/// have is left out.
fn tenant_arrays(
    channels: Option<Vec<ChannelId>>,
    enterprises: Option<Vec<EnterpriseId>>,
    max: usize,
) -> Result<Option<(Vec<i64>, Vec<i64>)>> {
    if channels.is_none() && enterprises.is_none() {
        return Ok(None);
    }
    let (channels, enterprises) = (channels.unwrap_or_default(), enterprises.unwrap_or_default());
    check_bound("channel ids", channels.len(), max)?;
    check_bound("enterprise ids", enterprises.len(), max)?;
    Ok(Some((
        channels.iter().filter_map(|c| db_id(c.0)).collect(),
        enterprises.iter().filter_map(|e| db_id(e.0)).collect(),
    )))
}

/// A row id or a count read from the database (never negative).
fn row_id(id: i64) -> u64 {
    u64::try_from(id).unwrap_or_default()
}

// ---- row mapping ----

fn account_from_row(r: &PgRow) -> Result<Account> {
    let role: String = r.try_get("role").map_err(backend)?;
    // An unknown role is an error, never some default role: that could grant too much.
    let role = Role::parse(&role).ok_or_else(|| StoreError::Backend(format!("unknown account role {role:?}")))?;
    Ok(Account {
        id: AccountId(row_id(r.try_get("id").map_err(backend)?)),
        email: r.try_get("email").map_err(backend)?,
        password_hash: r.try_get("password_hash").map_err(backend)?,
        role,
        channel_id: r.try_get::<Option<i64>, _>("channel_id").map_err(backend)?.map(|c| ChannelId(row_id(c))),
        enterprise_id: r.try_get::<Option<i64>, _>("enterprise_id").map_err(backend)?.map(|e| EnterpriseId(row_id(e))),
        created_at: UnixMillis(r.try_get("created_at").map_err(backend)?),
        failed_logins: u32::try_from(r.try_get::<i32, _>("failed_logins").map_err(backend)?).unwrap_or(0),
        locked_until: r.try_get::<Option<i64>, _>("locked_until").map_err(backend)?.map(UnixMillis),
        totp_secret: r
            .try_get::<Option<Vec<u8>>, _>("totp_secret")
            .map_err(backend)?
            .map(|s| {
                <[u8; 20]>::try_from(s.as_slice())
                    .map_err(|_| StoreError::Backend(format!("a TOTP secret of {} bytes", s.len())))
            })
            .transpose()?,
        totp_last_step: r.try_get::<Option<i64>, _>("totp_last_step").map_err(backend)?.map(row_id),
        frozen: r.try_get("frozen").map_err(backend)?,
        must_change_password: r.try_get("must_change_password").map_err(backend)?,
        parent_id: r.try_get::<Option<i64>, _>("parent_id").map_err(backend)?.map(|p| AccountId(row_id(p))),
        permissions: r
            .try_get::<Option<String>, _>("permissions")
            .map_err(backend)?
            .map(|p| Permissions::decode(&p).map_err(|e| StoreError::Backend(format!("decoding permissions: {e}"))))
            .transpose()?,
    })
}

fn operation_log_from_row(r: &PgRow) -> Result<OperationLog> {
    let outcome: String = r.try_get("outcome").map_err(backend)?;
    let status: i32 = r.try_get("status").map_err(backend)?;
    let entry = NewOperationLog {
        account_id: r.try_get::<Option<i64>, _>("account_id").map_err(backend)?.map(|a| AccountId(row_id(a))),
        account_email: r.try_get("account_email").map_err(backend)?,
        acting_as: r.try_get::<Option<i64>, _>("acting_as").map_err(backend)?.map(|e| EnterpriseId(row_id(e))),
        operation: r.try_get("operation").map_err(backend)?,
        method: r.try_get("method").map_err(backend)?,
        path: r.try_get("path").map_err(backend)?,
        ip: r.try_get("ip").map_err(backend)?,
        at: UnixMillis(r.try_get("at").map_err(backend)?),
        status: u16::try_from(status).unwrap_or_default(),
        outcome: OperationOutcome::parse(&outcome).unwrap_or(OperationOutcome::Failure),
    };
    Ok(OperationLog { id: row_id(r.try_get("id").map_err(backend)?), entry })
}

fn strategy_from_row(r: &PgRow) -> Result<StoredStrategy> {
    let settings: String = r.try_get("settings").map_err(backend)?;
    Ok(StoredStrategy {
        id: fleetpulse_proto::StrategyId(row_id(r.try_get("id").map_err(backend)?)),
        enterprise_id: EnterpriseId(row_id(r.try_get("enterprise_id").map_err(backend)?)),
        settings: serde_json::from_str(&settings)
            .map_err(|e| StoreError::Backend(format!("decoding strategy settings: {e}")))?,
        created_at: UnixMillis(r.try_get("created_at").map_err(backend)?),
        updated_at: UnixMillis(r.try_get("updated_at").map_err(backend)?),
    })
}

fn outbox_from_row(r: &PgRow) -> Result<OutboxMessage> {
    let state: String = r.try_get("state").map_err(backend)?;
    let attempts: i32 = r.try_get("attempts").map_err(backend)?;
    Ok(OutboxMessage {
        id: row_id(r.try_get("id").map_err(backend)?),
        key: r.try_get("key").map_err(backend)?,
        enterprise_id: EnterpriseId(row_id(r.try_get("enterprise_id").map_err(backend)?)),
        receiver: r.try_get("receiver").map_err(backend)?,
        payload: r.try_get("payload").map_err(backend)?,
        state: OutboxState::parse(&state).unwrap_or(OutboxState::Failed),
        attempts: u32::try_from(attempts).unwrap_or(0),
        next_attempt_at: UnixMillis(r.try_get("next_attempt_at").map_err(backend)?),
        last_error: r.try_get("last_error").map_err(backend)?,
        created_at: UnixMillis(r.try_get("created_at").map_err(backend)?),
        sent_at: r.try_get::<Option<i64>, _>("sent_at").map_err(backend)?.map(UnixMillis),
    })
}

fn settings_json(settings: &StrategySettings) -> Result<String> {
    serde_json::to_string(settings).map_err(|e| StoreError::Backend(format!("encoding strategy settings: {e}")))
}

fn enterprise_from_row(r: &PgRow) -> Result<Enterprise> {
    Ok(Enterprise {
        id: EnterpriseId(row_id(r.try_get("id").map_err(backend)?)),
        name: r.try_get("name").map_err(backend)?,
        credential: r.try_get("credential").map_err(backend)?,
        channel_id: r.try_get::<Option<i64>, _>("channel_id").map_err(backend)?.map(|c| ChannelId(row_id(c))),
        created_at: UnixMillis(r.try_get("created_at").map_err(backend)?),
        profile: serde_json::from_str(&r.try_get::<String, _>("profile").map_err(backend)?)
            .map_err(|e| StoreError::Backend(format!("decoding an enterprise profile: {e}")))?,
        channel_authorization: {
            let a: String = r.try_get("channel_authorization").map_err(backend)?;
            ChannelAuthorization::parse(&a)
                .ok_or_else(|| StoreError::Backend(format!("unknown channel authorization {a:?}")))?
        },
    })
}

fn channel_from_row(r: &PgRow) -> Result<Channel> {
    Ok(Channel {
        id: ChannelId(row_id(r.try_get("id").map_err(backend)?)),
        name: r.try_get("name").map_err(backend)?,
        parent_id: r.try_get::<Option<i64>, _>("parent_id").map_err(backend)?.map(|p| ChannelId(row_id(p))),
        allow_sub_channels: r.try_get("allow_sub_channels").map_err(backend)?,
        device_management: r.try_get("device_management").map_err(backend)?,
        rps: r.try_get("rps").map_err(backend)?,
        contact: r.try_get("contact").map_err(backend)?,
        email: r.try_get("email").map_err(backend)?,
        created_at: UnixMillis(r.try_get("created_at").map_err(backend)?),
        phone: r.try_get("phone").map_err(backend)?,
        country: r.try_get("country").map_err(backend)?,
    })
}

fn device_from_row(r: &PgRow) -> Result<Device> {
    let mac: Option<String> = r.try_get("mac").map_err(backend)?;
    Ok(Device {
        id: DeviceId(row_id(r.try_get("id").map_err(backend)?)),
        enterprise_id: EnterpriseId(row_id(r.try_get("enterprise_id").map_err(backend)?)),
        mac: mac.and_then(|m| Mac::parse(&m).ok()),
        serial: r.try_get("serial").map_err(backend)?,
        model: r.try_get("model").map_err(backend)?,
        firmware: r.try_get("firmware").map_err(backend)?,
        name: r.try_get("name").map_err(backend)?,
        created_at: UnixMillis(r.try_get("created_at").map_err(backend)?),
    })
}

fn session_from_row(token_hash: TokenHash, r: &PgRow) -> Result<Session> {
    Ok(Session {
        token_hash,
        account_id: AccountId(row_id(r.try_get("account_id").map_err(backend)?)),
        created_at: UnixMillis(r.try_get("created_at").map_err(backend)?),
        expires_at: UnixMillis(r.try_get("expires_at").map_err(backend)?),
        last_seen_at: UnixMillis(r.try_get("last_seen_at").map_err(backend)?),
        acting: match (
            r.try_get::<Option<i64>, _>("acting_enterprise_id").map_err(backend)?,
            r.try_get::<Option<i64>, _>("acting_channel_id").map_err(backend)?,
        ) {
            (Some(e), _) => Some(Acting::Enterprise(EnterpriseId(row_id(e)))),
            (None, Some(c)) => Some(Acting::Channel(ChannelId(row_id(c)))),
            (None, None) => None,
        },
    })
}

/// Sets every device's type from the catalog ([`DeviceType::of_model`]), on connect: rows from
/// before the snapshot migration and models a newer catalog knows get this build's type.
async fn refresh_device_types(conn: &mut PgConnection) -> Result<()> {
    let pairs: Vec<(String, String)> = sqlx::query_as("SELECT DISTINCT model, device_type FROM devices")
        .fetch_all(&mut *conn)
        .await
        .map_err(backend)?;
    for (model, stored) in pairs {
        let want = DeviceType::of_model(&model).as_str();
        if stored != want {
            sqlx::query("UPDATE devices SET device_type = $2 WHERE model = $1 AND device_type = $3")
                .bind(&model)
                .bind(want)
                .bind(&stored)
                .execute(&mut *conn)
                .await
                .map_err(backend)?;
        }
    }
    Ok(())
}

/// Reads a row of [`crate::device_sql::SUMMARY_COLUMNS`] (by position: `d.name` and `e.name`
/// share a name).
fn summary_from_row(r: &PgRow) -> Result<DeviceSummary> {
    let get_i64 = |i: usize| r.try_get::<i64, _>(i).map_err(backend);
    let mac: Option<String> = r.try_get(2).map_err(backend)?;
    let device = Device {
        id: DeviceId(row_id(get_i64(0)?)),
        enterprise_id: EnterpriseId(row_id(get_i64(1)?)),
        mac: mac.and_then(|m| Mac::parse(&m).ok()),
        serial: r.try_get(3).map_err(backend)?,
        model: r.try_get(4).map_err(backend)?,
        firmware: r.try_get(5).map_err(backend)?,
        name: r.try_get(6).map_err(backend)?,
        created_at: UnixMillis(get_i64(7)?),
    };
    let device_type: String = r.try_get(10).map_err(backend)?;
    let online: i16 = r.try_get(11).map_err(backend)?;
    let sip: String = r.try_get(12).map_err(backend)?;
    let call: Option<String> = r.try_get(13).map_err(backend)?;
    let public_ip: String = r.try_get(14).map_err(backend)?;
    let private_ip: String = r.try_get(15).map_err(backend)?;
    let last_report_at = get_i64(16)?;
    let uptime: Option<i64> = r.try_get(17).map_err(backend)?;
    let last_reboot: Option<i64> = r.try_get(18).map_err(backend)?;
    let lines: String = r.try_get(19).map_err(backend)?;
    Ok(DeviceSummary {
        device,
        enterprise_name: r.try_get(8).map_err(backend)?,
        channel_id: r.try_get::<Option<i64>, _>(9).map_err(backend)?.map(|c| ChannelId(row_id(c))),
        snapshot: DeviceSnapshot {
            device_type: DeviceType::parse(&device_type).unwrap_or(DeviceType::Other),
            online: online != 0,
            sip_status: crate::device_sql::parse_sip(&sip),
            call_status: call.as_deref().and_then(crate::device_sql::parse_call),
            public_ip: (!public_ip.is_empty()).then_some(public_ip),
            private_ip: (!private_ip.is_empty()).then_some(private_ip),
            last_report_at: (last_report_at > 0).then_some(UnixMillis(last_report_at)),
            uptime_s: uptime.and_then(|u| u64::try_from(u).ok()),
            last_reboot: last_reboot.map(UnixMillis),
            lines: serde_json::from_str(&lines).unwrap_or_default(),
        },
    })
}

/// A shared device query as a sqlx query with its values bound.
fn pg_query(
    built: crate::device_sql::Built,
) -> sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments> {
    use crate::device_sql::Arg;
    let mut query = sqlx::query(sqlx::AssertSqlSafe(built.sql));
    for arg in built.args {
        query = match arg {
            Arg::Int(i) => query.bind(i),
            Arg::Text(t) => query.bind(t),
            Arg::Ids(ids) => query.bind(ids),
        };
    }
    query
}

/// Sets the online flag of the devices of two parallel arrays (ids, 0/1).
const UPDATE_ONLINE: &str = "UPDATE devices d SET online = u.online \
     FROM unnest($1::bigint[], $2::smallint[]) AS u (id, online) WHERE d.id = u.id";
/// Applies the latest status report of each device of parallel arrays, unless an equal or newer
/// one is stored; an empty firmware keeps the stored one.
const UPDATE_REPORTS: &str = "UPDATE devices d SET \
     firmware = CASE WHEN u.firmware = '' THEN d.firmware ELSE u.firmware END, public_ip = u.public_ip, \
     private_ip = u.private_ip, sip_status = u.sip_status, call_status = u.call_status, \
     last_report_at = u.at, uptime_s = u.uptime_s, last_reboot = u.last_reboot, sip_lines = u.sip_lines \
     FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[], \
     $8::bigint[], $9::bigint[], $10::text[]) \
     AS u (id, firmware, public_ip, private_ip, sip_status, call_status, at, uptime_s, last_reboot, sip_lines) \
     WHERE d.id = u.id AND d.last_report_at <= u.at";

// ---- queries (static strings: sqlx takes only `'static` SQL without an assertion) ----

/// A device with its enterprise and snapshot ([`crate::device_sql::SUMMARY_COLUMNS`]).
const DEVICE_SUMMARY_BY_ID: &str = "SELECT d.id, d.enterprise_id, d.mac, d.serial, d.model, d.firmware, d.name, \
     d.created_at, e.name, e.channel_id, d.device_type, d.online, d.sip_status, d.call_status, d.public_ip, \
     d.private_ip, d.last_report_at, d.uptime_s, d.last_reboot, d.sip_lines \
     FROM devices d JOIN enterprises e ON e.id = d.enterprise_id WHERE d.id = $1";
const DEVICE_BY_MAC: &str =
    "SELECT id, enterprise_id, mac, serial, model, firmware, name, created_at FROM devices WHERE mac = $1";
const DEVICE_BY_SERIAL: &str = "SELECT id, enterprise_id, mac, serial, model, firmware, name, created_at \
     FROM devices WHERE serial = $1 AND mac IS NULL";
const DEVICE_BY_ID: &str =
    "SELECT id, enterprise_id, mac, serial, model, firmware, name, created_at FROM devices WHERE id = $1";
const DEVICE_PAGE: &str = "SELECT id, enterprise_id, mac, serial, model, firmware, name, created_at \
     FROM devices WHERE id > $1 ORDER BY id LIMIT $2";
const ENTERPRISE_DEVICE_PAGE: &str = "SELECT id, enterprise_id, mac, serial, model, firmware, name, created_at \
     FROM devices WHERE enterprise_id = $1 AND id > $2 ORDER BY id LIMIT $3";
/// Adds a device unless a concurrent registration added its key first (then returns no row).
const INSERT_DEVICE: &str = "INSERT INTO devices (enterprise_id, mac, serial, model, firmware, created_at, device_type) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING \
     RETURNING id, enterprise_id, mac, serial, model, firmware, name, created_at";
/// Queues the messages of a batch (distinct keys), in array order, unless their key was queued
/// before; returns the id and key of each message it queued.
const INSERT_OUTBOX_BATCH: &str = "INSERT INTO outbox \
     (key, enterprise_id, receiver, payload, state, next_attempt_at, created_at) \
     SELECT m.key, m.enterprise_id, m.receiver, m.payload, 'pending', m.not_before, $6 \
     FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bigint[]) WITH ORDINALITY \
     AS m (key, enterprise_id, receiver, payload, not_before, n) ORDER BY m.n \
     ON CONFLICT (key) DO NOTHING RETURNING id, key";
/// The columns `account_from_row` reads.
macro_rules! account_columns {
    () => {
        "id, email, password_hash, role, created_at, failed_logins, locked_until, totp_secret, totp_last_step, \
         channel_id, enterprise_id, frozen, must_change_password, parent_id, permissions"
    };
}
/// The columns `enterprise_from_row` reads.
macro_rules! enterprise_columns {
    () => {
        "id, name, credential, created_at, channel_id, profile, channel_authorization"
    };
}
/// The columns `channel_from_row` reads.
macro_rules! channel_columns {
    () => {
        "id, name, parent_id, allow_sub_channels, device_management, rps, contact, email, created_at, phone, country"
    };
}
const ACCOUNT_BY_EMAIL: &str = concat!("SELECT ", account_columns!(), " FROM accounts WHERE lower(email) = lower($1)");
const ACCOUNT_BY_ID: &str = concat!("SELECT ", account_columns!(), " FROM accounts WHERE id = $1");
/// Every filter of [`EntityStore::list_accounts`] is a parameter (NULL: not filtering).
const ACCOUNT_FILTERED_PAGE: &str = concat!(
    "SELECT ",
    account_columns!(),
    " FROM accounts WHERE ($1::bigint[] IS NULL OR channel_id = ANY($1) OR enterprise_id = ANY($2::bigint[])) \
     AND ($5::bigint IS NULL OR parent_id = $5) AND ($6::text IS NULL OR strpos(lower(email), $6) > 0 \
     OR id IN (SELECT account_id FROM account_settings WHERE strpos(contact_search, $6) > 0)) \
     AND id > $3 ORDER BY id LIMIT $4"
);
/// Counts a wrong password: one statement, so concurrent failures each count (the row lock
/// orders them) and the `SET` expressions all read the row as it was before this update.
const RECORD_LOGIN_FAILURE: &str = "UPDATE accounts SET \
     failed_logins = CASE WHEN failed_logins + 1 >= $2 THEN 0 ELSE failed_logins + 1 END, \
     locked_until = CASE WHEN failed_logins + 1 >= $2 THEN $3 ELSE locked_until END \
     WHERE id = $1 RETURNING id, email, password_hash, role, created_at, failed_logins, locked_until, \
     totp_secret, totp_last_step, channel_id, enterprise_id, frozen, must_change_password, parent_id, permissions";
/// Accepts a TOTP step: one conditional statement, so of concurrent attempts at the same step
/// exactly one updates (the row lock orders them; the later ones see the step recorded).
const RECORD_TOTP_STEP: &str = "UPDATE accounts SET totp_last_step = $2 \
     WHERE id = $1 AND (totp_last_step IS NULL OR totp_last_step < $2)";
/// Appends the rows of a batch in array order (ids follow the batch), in one statement.
const INSERT_OPERATION_LOGS: &str = "INSERT INTO operation_log \
     (account_id, account_email, acting_as, operation, method, path, ip, at, status, outcome) \
     SELECT account_id, account_email, acting_as, operation, method, path, ip, at, status, outcome \
     FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], \
     $8::bigint[], $9::integer[], $10::text[]) WITH ORDINALITY \
     AS r (account_id, account_email, acting_as, operation, method, path, ip, at, status, outcome, n) \
     ORDER BY r.n";
/// The start of every [`EntityStore::list_operation_logs`] query; the filters follow.
const OPERATION_LOG_PAGE: &str = "SELECT id, account_id, account_email, acting_as, operation, method, path, ip, at, \
     status, outcome FROM operation_log WHERE true";
const ENTERPRISE_BY_ID: &str = concat!("SELECT ", enterprise_columns!(), " FROM enterprises WHERE id = $1");
const ENTERPRISE_BY_CREDENTIAL: &str =
    concat!("SELECT ", enterprise_columns!(), " FROM enterprises WHERE credential = $1");
/// Every filter of [`EntityStore::search_enterprises`] is a parameter (NULL: not filtering).
const ENTERPRISE_SEARCH_PAGE: &str = concat!(
    "SELECT ",
    enterprise_columns!(),
    " FROM enterprises WHERE ($1::bigint[] IS NULL OR channel_id = ANY($1) OR id = ANY($2::bigint[])) \
     AND ($3::text IS NULL OR strpos(search_text, $3) > 0) AND id > $4 ORDER BY id LIMIT $5"
);
const UPDATE_ENTERPRISE: &str = concat!(
    "UPDATE enterprises SET name = $2, profile = $3, search_text = $4 WHERE id = $1 RETURNING ",
    enterprise_columns!()
);
const SET_CHANNEL_AUTHORIZATION: &str = concat!(
    "UPDATE enterprises SET channel_authorization = $2 WHERE id = $1 AND channel_authorization = ANY($3::text[]) \
     RETURNING ",
    enterprise_columns!()
);
const CHANNEL_BY_ID: &str = concat!("SELECT ", channel_columns!(), " FROM channels WHERE id = $1");
const CHANNEL_PAGE: &str = concat!(
    "SELECT ",
    channel_columns!(),
    " FROM channels WHERE id > $1 AND strpos(search_text, $3) > 0 ORDER BY id LIMIT $2"
);
const UPDATE_CHANNEL: &str = concat!(
    "UPDATE channels SET name = $2, allow_sub_channels = $3, device_management = $4, rps = $5, contact = $6, \
     email = $7, phone = $8, country = $9, search_text = $10 WHERE id = $1 RETURNING ",
    channel_columns!()
);
/// The strict descendants of channel `$1`, after the cursor.
const CHANNEL_DESCENDANTS_PAGE: &str = "WITH RECURSIVE sub(id) AS (\
     SELECT id FROM channels WHERE parent_id = $1 \
     UNION ALL SELECT c.id FROM channels c JOIN sub ON c.parent_id = sub.id) \
     SELECT id, name, parent_id, allow_sub_channels, device_management, rps, contact, email, created_at, phone, \
     country FROM channels WHERE id IN (SELECT id FROM sub) AND id > $2 AND strpos(search_text, $4) > 0 \
     ORDER BY id LIMIT $3";
/// Channel `$1` and its descendants, at most `$2` (no ORDER BY: the walk stops at the bound).
const CHANNEL_SUBTREE: &str = "WITH RECURSIVE sub(id) AS (\
     SELECT id FROM channels WHERE id = $1 \
     UNION ALL SELECT c.id FROM channels c JOIN sub ON c.parent_id = sub.id) \
     SELECT id FROM sub LIMIT $2";
const INSERT_CHANNEL: &str = "INSERT INTO channels \
     (name, parent_id, allow_sub_channels, device_management, rps, contact, email, created_at, phone, country, \
     search_text) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id";
const UPDATE_DEVICE: &str = "UPDATE devices SET model = $2, firmware = $3, device_type = $4 WHERE id = $1 \
     RETURNING id, enterprise_id, mac, serial, model, firmware, name, created_at";

#[async_trait]
impl EntityStore for PgEntityStore {
    async fn create_account(&self, new: NewAccount) -> Result<Account> {
        new.validate_tenant()?;
        let now = UnixMillis::now();
        // The tenant must exist; the foreign keys refuse it too (rows are never deleted, so
        // that is only a backstop).
        let channel = match new.channel_id {
            Some(c) => {
                check_exists("channel", c.0, self.channel_row_exists(c).await?)?;
                db_id(c.0)
            }
            None => None,
        };
        let enterprise = match new.enterprise_id {
            Some(e) => {
                check_exists("enterprise", e.0, self.enterprise(e).await?.is_some())?;
                db_id(e.0)
            }
            None => None,
        };
        if let Some(parent) = new.parent_id {
            check_sub_account_parent(&new, self.account(parent).await?.as_ref())?;
        }
        let permissions = new.permissions.as_ref().map(Permissions::encode).transpose()?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO accounts (email, password_hash, role, created_at, channel_id, enterprise_id, \
             must_change_password, parent_id, permissions) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
        )
        .bind(&new.email)
        .bind(&new.password_hash)
        .bind(new.role.as_str())
        .bind(now.0)
        .bind(channel)
        .bind(enterprise)
        .bind(new.must_change_password)
        .bind(new.parent_id.and_then(|p| db_id(p.0)))
        .bind(permissions)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                StoreError::InvalidInput("the account's channel or enterprise does not exist".into())
            }
            _ => unique_as("email")(e),
        })?;
        Ok(Account {
            id: AccountId(row_id(id)),
            email: new.email,
            password_hash: new.password_hash,
            role: new.role,
            channel_id: new.channel_id,
            enterprise_id: new.enterprise_id,
            created_at: now,
            failed_logins: 0,
            locked_until: None,
            totp_secret: None,
            totp_last_step: None,
            frozen: false,
            must_change_password: new.must_change_password,
            parent_id: new.parent_id,
            permissions: new.permissions,
        })
    }

    async fn account_by_email(&self, email: &str) -> Result<Option<Account>> {
        sqlx::query(ACCOUNT_BY_EMAIL)
            .bind(email)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(account_from_row)
            .transpose()
    }

    async fn account(&self, id: AccountId) -> Result<Option<Account>> {
        let Some(id) = db_id(id.0) else { return Ok(None) };
        sqlx::query(ACCOUNT_BY_ID)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(account_from_row)
            .transpose()
    }

    async fn set_password(&self, account: AccountId, password_hash: String, must_change: bool) -> Result<bool> {
        let Some(id) = db_id(account.0) else { return Ok(false) };
        let done = sqlx::query("UPDATE accounts SET password_hash = $2, must_change_password = $3 WHERE id = $1")
            .bind(id)
            .bind(password_hash)
            .bind(must_change)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }

    async fn count_accounts(&self, role: Role) -> Result<u64> {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM accounts WHERE role = $1")
            .bind(role.as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(backend)?;
        Ok(row_id(count))
    }

    async fn create_session(&self, s: Session) -> Result<()> {
        let account = db_id(s.account_id.0).unwrap_or(i64::MAX);
        // One statement, so one transaction: purge the sessions expired by the new one's
        // creation time, then store it (as the embedded store does in one write job).
        sqlx::query(
            "WITH purged AS (DELETE FROM sessions WHERE expires_at < $3) \
             INSERT INTO sessions (token_hash, account_id, created_at, expires_at, last_seen_at, \
             acting_enterprise_id, acting_channel_id) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&s.token_hash.0[..])
        .bind(account)
        .bind(s.created_at.0)
        .bind(s.expires_at.0)
        .bind(s.last_seen_at.0)
        .bind(match s.acting {
            Some(Acting::Enterprise(e)) => db_id(e.0),
            _ => None,
        })
        .bind(match s.acting {
            Some(Acting::Channel(c)) => db_id(c.0),
            _ => None,
        })
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn session(&self, token_hash: TokenHash, now: UnixMillis) -> Result<Option<Session>> {
        sqlx::query(
            "SELECT account_id, created_at, expires_at, last_seen_at, acting_enterprise_id, acting_channel_id \
             FROM sessions WHERE token_hash = $1 AND expires_at > $2",
        )
        .bind(&token_hash.0[..])
        .bind(now.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .map(|r| session_from_row(token_hash, &r))
        .transpose()
    }

    async fn touch_session(&self, token_hash: TokenHash, now: UnixMillis) -> Result<()> {
        sqlx::query("UPDATE sessions SET last_seen_at = $2 WHERE token_hash = $1 AND last_seen_at < $2")
            .bind(&token_hash.0[..])
            .bind(now.0)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn delete_session(&self, token_hash: TokenHash) -> Result<bool> {
        let done = sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(&token_hash.0[..])
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }

    async fn list_accounts(&self, filter: AccountFilter, page: Page) -> Result<Vec<Account>> {
        let Some(after) = db_id(page.after) else { return Ok(Vec::new()) };
        let (channels, enterprises) = tenant_arrays(filter.channels, filter.enterprises, MAX_ACCOUNT_FILTER)?.unzip();
        let q = search_needle(filter.q.as_deref())?;
        sqlx::query(ACCOUNT_FILTERED_PAGE)
            .bind(channels)
            .bind(enterprises)
            .bind(after)
            .bind(i64::from(page.limit))
            .bind(filter.parent.map(|p| db_id(p.0).unwrap_or(i64::MAX)))
            .bind(q)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(account_from_row)
            .collect()
    }

    async fn set_account_permissions(&self, account: AccountId, permissions: Permissions) -> Result<bool> {
        let Some(id) = db_id(account.0) else { return Ok(false) };
        let permissions = permissions.normalized()?.encode()?;
        let done = sqlx::query("UPDATE accounts SET permissions = $2 WHERE id = $1 AND permissions IS NOT NULL")
            .bind(id)
            .bind(permissions)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }

    async fn set_account_frozen(&self, account: AccountId, frozen: bool) -> Result<bool> {
        let Some(id) = db_id(account.0) else { return Ok(false) };
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let done = sqlx::query("UPDATE accounts SET frozen = $2 WHERE id = $1")
            .bind(id)
            .bind(frozen)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        let found = done.rows_affected() > 0;
        if found && frozen {
            sqlx::query("DELETE FROM sessions WHERE account_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(found)
    }

    async fn delete_account_sessions(&self, account: AccountId) -> Result<u64> {
        let Some(id) = db_id(account.0) else { return Ok(0) };
        let done = sqlx::query("DELETE FROM sessions WHERE account_id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected())
    }

    async fn set_totp(&self, account: AccountId, secret: Option<[u8; 20]>) -> Result<bool> {
        let Some(id) = db_id(account.0) else { return Ok(false) };
        let done = sqlx::query("UPDATE accounts SET totp_secret = $2, totp_last_step = NULL WHERE id = $1")
            .bind(id)
            .bind(secret.as_ref().map(|s| &s[..]))
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }

    async fn record_totp_step(&self, account: AccountId, step: u64) -> Result<bool> {
        let step = totp_step(step)?;
        let Some(id) = db_id(account.0) else { return Ok(false) };
        let done = sqlx::query(RECORD_TOTP_STEP).bind(id).bind(step).execute(&self.pool).await.map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }

    async fn create_enterprise(&self, new: NewEnterprise) -> Result<Enterprise> {
        let now = UnixMillis::now();
        let channel = match new.channel_id {
            Some(c) => {
                check_exists("channel", c.0, self.channel_row_exists(c).await?)?;
                db_id(c.0)
            }
            None => None,
        };
        let missing = format!("channel {} does not exist", new.channel_id.map(|c| c.0).unwrap_or_default());
        new.profile.validate()?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO enterprises (name, credential, created_at, channel_id, profile, search_text) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(&new.name)
        .bind(&new.credential)
        .bind(now.0)
        .bind(channel)
        .bind(encode_profile(&new.profile)?)
        .bind(enterprise_search_text(&new.name, &new.profile))
        .fetch_one(&self.pool)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::InvalidInput(missing),
            _ => unique_as("credential")(e),
        })?;
        Ok(Enterprise {
            id: EnterpriseId(row_id(id)),
            name: new.name,
            credential: new.credential,
            channel_id: new.channel_id,
            created_at: now,
            profile: new.profile,
            channel_authorization: ChannelAuthorization::None,
        })
    }

    async fn update_enterprise(
        &self,
        id: EnterpriseId,
        name: String,
        profile: EnterpriseProfile,
    ) -> Result<Option<Enterprise>> {
        profile.validate()?;
        let Some(id) = db_id(id.0) else { return Ok(None) };
        sqlx::query(UPDATE_ENTERPRISE)
            .bind(id)
            .bind(&name)
            .bind(encode_profile(&profile)?)
            .bind(enterprise_search_text(&name, &profile))
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(enterprise_from_row)
            .transpose()
    }

    async fn set_channel_authorization(
        &self,
        id: EnterpriseId,
        from: &[ChannelAuthorization],
        to: ChannelAuthorization,
    ) -> Result<Option<Enterprise>> {
        let Some(id) = db_id(id.0) else { return Ok(None) };
        let from: Vec<&'static str> = from.iter().map(|a| a.as_str()).collect();
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let row = sqlx::query(SET_CHANNEL_AUTHORIZATION)
            .bind(id)
            .bind(to.as_str())
            .bind(from)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        let Some(row) = row else { return Ok(None) };
        if to != ChannelAuthorization::Accepted {
            sqlx::query("DELETE FROM sessions WHERE acting_enterprise_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
        enterprise_from_row(&row).map(Some)
    }

    async fn enterprise(&self, id: EnterpriseId) -> Result<Option<Enterprise>> {
        let Some(id) = db_id(id.0) else { return Ok(None) };
        sqlx::query(ENTERPRISE_BY_ID)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(enterprise_from_row)
            .transpose()
    }

    async fn enterprise_by_credential(&self, credential: &str) -> Result<Option<Enterprise>> {
        sqlx::query(ENTERPRISE_BY_CREDENTIAL)
            .bind(credential)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(enterprise_from_row)
            .transpose()
    }

    async fn search_enterprises(&self, filter: EnterpriseFilter, page: Page) -> Result<Vec<Enterprise>> {
        let Some(after) = db_id(page.after) else { return Ok(Vec::new()) };
        let (channels, ids) = tenant_arrays(filter.channels, filter.ids, MAX_ENTERPRISE_CHANNEL_FILTER)?.unzip();
        let q = search_needle(filter.q.as_deref())?;
        sqlx::query(ENTERPRISE_SEARCH_PAGE)
            .bind(channels)
            .bind(ids)
            .bind(q)
            .bind(after)
            .bind(i64::from(page.limit))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(enterprise_from_row)
            .collect()
    }

    async fn create_channel(&self, new: NewChannel, now: UnixMillis) -> Result<Channel> {
        new.validate()?;
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let parent = match new.parent_id {
            Some(parent) => {
                // FOR SHARE: the parent row stays as read until the new channel commits.
                let allows: Option<bool> = match db_id(parent.0) {
                    Some(id) => sqlx::query_scalar("SELECT allow_sub_channels FROM channels WHERE id = $1 FOR SHARE")
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(backend)?,
                    None => None,
                };
                check_parent_channel(parent, allows)?;
                db_id(parent.0)
            }
            None => None,
        };
        let id: i64 = sqlx::query_scalar(INSERT_CHANNEL)
            .bind(&new.name)
            .bind(parent)
            .bind(new.allow_sub_channels)
            .bind(new.device_management)
            .bind(new.rps)
            .bind(&new.contact)
            .bind(&new.email)
            .bind(now.0)
            .bind(&new.phone)
            .bind(&new.country)
            .bind(channel_search_text(&new.name, &new.contact, &new.email))
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(Channel {
            id: ChannelId(row_id(id)),
            name: new.name,
            parent_id: new.parent_id,
            allow_sub_channels: new.allow_sub_channels,
            device_management: new.device_management,
            rps: new.rps,
            contact: new.contact,
            email: new.email,
            phone: new.phone,
            country: new.country,
            created_at: now,
        })
    }

    async fn channel(&self, id: ChannelId) -> Result<Option<Channel>> {
        let Some(id) = db_id(id.0) else { return Ok(None) };
        sqlx::query(CHANNEL_BY_ID)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(channel_from_row)
            .transpose()
    }

    async fn search_channels(&self, within: Option<ChannelId>, q: Option<&str>, page: Page) -> Result<Vec<Channel>> {
        let Some(after) = db_id(page.after) else { return Ok(Vec::new()) };
        // An empty needle is in every text.
        let q = search_needle(q)?.unwrap_or_default();
        let query = match within {
            None => sqlx::query(CHANNEL_PAGE).bind(after).bind(i64::from(page.limit)).bind(q),
            Some(root) => {
                let Some(root) = db_id(root.0) else { return Ok(Vec::new()) };
                sqlx::query(CHANNEL_DESCENDANTS_PAGE).bind(root).bind(after).bind(i64::from(page.limit)).bind(q)
            }
        };
        query.fetch_all(&self.pool).await.map_err(backend)?.iter().map(channel_from_row).collect()
    }

    async fn update_channel(&self, id: ChannelId, u: ChannelUpdate) -> Result<Option<Channel>> {
        u.validate()?;
        let Some(id) = db_id(id.0) else { return Ok(None) };
        let search = channel_search_text(&u.name, &u.contact, &u.email);
        sqlx::query(UPDATE_CHANNEL)
            .bind(id)
            .bind(u.name)
            .bind(u.allow_sub_channels)
            .bind(u.device_management)
            .bind(u.rps)
            .bind(u.contact)
            .bind(u.email)
            .bind(u.phone)
            .bind(u.country)
            .bind(search)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(channel_from_row)
            .transpose()
    }

    async fn channel_subtree(&self, root: ChannelId) -> Result<Vec<ChannelId>> {
        let Some(id) = db_id(root.0) else { return Ok(Vec::new()) };
        let ids: Vec<i64> = sqlx::query_scalar(CHANNEL_SUBTREE)
            .bind(id)
            .bind(MAX_CHANNEL_SUBTREE as i64 + 1)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        bounded_subtree(root, ids.into_iter().map(|i| ChannelId(row_id(i))).collect())
    }

    async fn register_device(&self, new: NewDevice) -> Result<RegisteredDevice> {
        let enterprise = db_id(new.enterprise_id.0).unwrap_or(i64::MAX);
        let mac = match &new.key {
            DeviceKey::Mac(m) => Some(*m),
            DeviceKey::Serial(_) => None,
        };
        let serial = match &new.key {
            DeviceKey::Serial(s) => Some(s.as_str()),
            DeviceKey::Mac(_) => new.serial.as_deref(),
        };
        for _ in 0..REGISTER_ATTEMPTS {
            if let Some(device) = self.find_device(&new.key).await? {
                if device.enterprise_id != new.enterprise_id {
                    return Err(StoreError::DeviceConflict);
                }
                // Fast path without a write: the device exists, unchanged, in this enterprise.
                if device.model == new.model && device.firmware == new.firmware {
                    return Ok(RegisteredDevice { device, created: false });
                }
                let updated = sqlx::query(UPDATE_DEVICE)
                    .bind(db_id(device.id.0).unwrap_or(i64::MAX))
                    .bind(&new.model)
                    .bind(&new.firmware)
                    .bind(DeviceType::of_model(&new.model).as_str())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(backend)?;
                if let Some(row) = updated {
                    return Ok(RegisteredDevice { device: device_from_row(&row)?, created: false });
                }
                continue;
            }
            let inserted = sqlx::query(INSERT_DEVICE)
                .bind(enterprise)
                .bind(mac.as_ref().map(Mac::as_str))
                .bind(serial)
                .bind(&new.model)
                .bind(&new.firmware)
                .bind(new.at.0)
                .bind(DeviceType::of_model(&new.model).as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
            if let Some(row) = inserted {
                return Ok(RegisteredDevice { device: device_from_row(&row)?, created: true });
            }
            // A concurrent registration added the key between our read and our insert.
        }
        Err(StoreError::Backend(format!("device registration did not settle after {REGISTER_ATTEMPTS} attempts")))
    }

    async fn device(&self, id: DeviceId) -> Result<Option<Device>> {
        let Some(id) = db_id(id.0) else { return Ok(None) };
        sqlx::query(DEVICE_BY_ID)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(device_from_row)
            .transpose()
    }

    async fn list_devices(&self, enterprise: Option<EnterpriseId>, page: Page) -> Result<Vec<Device>> {
        let Some(after) = db_id(page.after) else { return Ok(Vec::new()) };
        let limit = i64::from(page.limit);
        // Two statements rather than `($1 IS NULL OR enterprise_id = $1)`, so that the
        // enterprise's page is read from the (enterprise_id, id) index whatever the plan cache.
        let query = match enterprise {
            Some(e) => {
                let Some(e) = db_id(e.0) else { return Ok(Vec::new()) };
                sqlx::query(ENTERPRISE_DEVICE_PAGE).bind(e).bind(after).bind(limit)
            }
            None => sqlx::query(DEVICE_PAGE).bind(after).bind(limit),
        };
        query.fetch_all(&self.pool).await.map_err(backend)?.iter().map(device_from_row).collect()
    }

    async fn update_device_snapshots(&self, updates: Vec<DeviceSnapshotUpdate>) -> Result<()> {
        check_bound("snapshot updates", updates.len(), MAX_SNAPSHOT_BATCH)?;
        let updates = coalesce_snapshot_updates(updates);
        let (mut online_ids, mut online) = (Vec::new(), Vec::new());
        let mut ids = Vec::new();
        let (mut firmware, mut public_ip, mut private_ip, mut sip, mut call) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut at, mut uptime, mut reboot, mut lines) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for u in &updates {
            let Some(id) = db_id(u.device_id.0) else { continue };
            if let Some(o) = u.online {
                online_ids.push(id);
                online.push(i16::from(o));
            }
            if let Some(r) = &u.report {
                let s = &r.status;
                ids.push(id);
                firmware.push(s.firmware.clone());
                public_ip.push(s.public_ip.map(|ip| ip.to_string()).unwrap_or_default());
                private_ip.push(s.private_ip.map(|ip| ip.to_string()).unwrap_or_default());
                sip.push(crate::device_sql::sip_name(s.sip_summary()).to_owned());
                call.push(crate::device_sql::call_name(s.call_status).to_owned());
                at.push(r.at.0);
                uptime.push(i64::try_from(s.uptime_s).unwrap_or(i64::MAX));
                reboot.push(s.last_reboot.map(|t| t.0));
                lines.push(serde_json::to_string(&s.lines).map_err(|e| StoreError::Backend(e.to_string()))?);
            }
        }
        if online_ids.is_empty() && ids.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.map_err(backend)?;
        if !online_ids.is_empty() {
            sqlx::query(UPDATE_ONLINE).bind(&online_ids).bind(&online).execute(&mut *tx).await.map_err(backend)?;
        }
        if !ids.is_empty() {
            sqlx::query(UPDATE_REPORTS)
                .bind(&ids)
                .bind(&firmware)
                .bind(&public_ip)
                .bind(&private_ip)
                .bind(&sip)
                .bind(&call)
                .bind(&at)
                .bind(&uptime)
                .bind(&reboot)
                .bind(&lines)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)
    }

    async fn mark_devices_offline(&self) -> Result<u64> {
        let done =
            sqlx::query("UPDATE devices SET online = 0 WHERE online = 1").execute(&self.pool).await.map_err(backend)?;
        Ok(done.rows_affected())
    }

    async fn query_devices(&self, query: DeviceQuery, page: DevicePageRequest) -> Result<DevicePage> {
        use crate::device_sql::{Dialect, count_sql, page_sql};
        let Some(cursor) = prepare_device_query(&query, &page)? else {
            return Ok(DevicePage { items: Vec::new(), next_cursor: None, total: 0 });
        };
        let total: i64 = pg_query(count_sql(&query, Dialect::Postgres))
            .fetch_one(&self.pool)
            .await
            .map_err(backend)?
            .try_get(0)
            .map_err(backend)?;
        let rows = pg_query(page_sql(&query, cursor.as_ref(), page.limit, Dialect::Postgres))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        let items = rows.iter().map(summary_from_row).collect::<Result<Vec<_>>>()?;
        Ok(finish_device_page(items, &query, page.limit, u64::try_from(total).unwrap_or(0)))
    }

    async fn device_dashboard(&self, query: DeviceQuery) -> Result<DeviceDashboard> {
        use crate::device_sql::{Dialect, by_model_sql, by_type_sql};
        query.validate()?;
        if query.matches_nothing() {
            return Ok(DeviceDashboard::from_groups(Vec::new(), Vec::new()));
        }
        let read = |rows: Vec<PgRow>| -> Result<Vec<(String, i64, i64)>> {
            rows.iter()
                .map(|r| {
                    Ok((r.try_get(0).map_err(backend)?, r.try_get(1).map_err(backend)?, r.try_get(2).map_err(backend)?))
                })
                .collect()
        };
        let types = pg_query(by_type_sql(&query, Dialect::Postgres)).fetch_all(&self.pool).await.map_err(backend)?;
        let models = pg_query(by_model_sql(&query, MAX_DASHBOARD_MODELS + 1, Dialect::Postgres))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        Ok(DeviceDashboard::from_groups(read(types)?, read(models)?))
    }

    async fn create_device_label(&self, new: NewDeviceLabel, now: UnixMillis) -> Result<DeviceLabel> {
        new.validate()?;
        let missing = || StoreError::InvalidInput(format!("account {} does not exist", new.account_id));
        let account = db_id(new.account_id.0).ok_or_else(missing)?;
        let mut tx = self.pool.begin().await.map_err(backend)?;
        // Locks the account row: concurrent saves of one account count one after the other.
        let found: Option<i64> = sqlx::query_scalar("SELECT id FROM accounts WHERE id = $1 FOR UPDATE")
            .bind(account)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        if found.is_none() {
            return Err(missing());
        }
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM device_labels WHERE account_id = $1")
            .bind(account)
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
        if usize::try_from(count).unwrap_or(usize::MAX) >= MAX_DEVICE_LABELS {
            return Err(StoreError::InvalidInput(format!("an account has at most {MAX_DEVICE_LABELS} labels")));
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO device_labels (account_id, name, filter, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(account)
        .bind(&new.name)
        .bind(&new.filter)
        .bind(now.0)
        .fetch_one(&mut *tx)
        .await
        .map_err(unique_as("label name"))?;
        tx.commit().await.map_err(backend)?;
        Ok(DeviceLabel {
            id: row_id(id),
            account_id: new.account_id,
            name: new.name,
            filter: new.filter,
            created_at: now,
        })
    }

    async fn list_device_labels(&self, account: AccountId) -> Result<Vec<DeviceLabel>> {
        let Some(account) = db_id(account.0) else { return Ok(Vec::new()) };
        let rows: Vec<(i64, i64, String, String, i64)> = sqlx::query_as(
            "SELECT id, account_id, name, filter, created_at FROM device_labels WHERE account_id = $1 ORDER BY id LIMIT $2",
        )
        .bind(account)
        .bind(MAX_DEVICE_LABELS as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        Ok(rows
            .into_iter()
            .map(|(id, account, name, filter, at)| DeviceLabel {
                id: row_id(id),
                account_id: AccountId(row_id(account)),
                name,
                filter,
                created_at: UnixMillis(at),
            })
            .collect())
    }

    async fn delete_device_label(&self, account: AccountId, id: u64) -> Result<bool> {
        let (Some(account), Some(id)) = (db_id(account.0), db_id(id)) else { return Ok(false) };
        let done = sqlx::query("DELETE FROM device_labels WHERE id = $1 AND account_id = $2")
            .bind(id)
            .bind(account)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }

    async fn device_columns(&self, account: AccountId) -> Result<Option<Vec<String>>> {
        let Some(account) = db_id(account.0) else { return Ok(None) };
        let stored: Option<String> = sqlx::query_scalar("SELECT columns FROM device_columns WHERE account_id = $1")
            .bind(account)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        stored
            .map(|s| serde_json::from_str(&s).map_err(|e| StoreError::Backend(format!("stored device columns: {e}"))))
            .transpose()
    }

    async fn set_device_columns(&self, account: AccountId, columns: Vec<String>) -> Result<()> {
        check_device_columns(&columns)?;
        let missing = || StoreError::InvalidInput(format!("account {account} does not exist"));
        let id = db_id(account.0).ok_or_else(missing)?;
        let json = serde_json::to_string(&columns).map_err(|e| StoreError::Backend(e.to_string()))?;
        let done = sqlx::query(
            "INSERT INTO device_columns (account_id, columns) SELECT id, $2 FROM accounts WHERE id = $1 \
             ON CONFLICT (account_id) DO UPDATE SET columns = excluded.columns",
        )
        .bind(id)
        .bind(json)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        if done.rows_affected() == 0 {
            return Err(missing());
        }
        Ok(())
    }

    async fn device_summary(&self, id: DeviceId) -> Result<Option<DeviceSummary>> {
        let Some(id) = db_id(id.0) else { return Ok(None) };
        sqlx::query(DEVICE_SUMMARY_BY_ID)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(summary_from_row)
            .transpose()
    }

    async fn create_strategy(
        &self,
        enterprise: EnterpriseId,
        settings: StrategySettings,
        at: UnixMillis,
    ) -> Result<StoredStrategy> {
        let e = db_id(enterprise.0).ok_or_else(|| StoreError::Backend("enterprise id out of range".into()))?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO alarm_strategies (enterprise_id, settings, created_at, updated_at) \
             VALUES ($1, $2, $3, $3) RETURNING id",
        )
        .bind(e)
        .bind(settings_json(&settings)?)
        .bind(at.0)
        .fetch_one(&self.pool)
        .await
        .map_err(backend)?;
        Ok(StoredStrategy {
            id: fleetpulse_proto::StrategyId(row_id(id)),
            enterprise_id: enterprise,
            settings,
            created_at: at,
            updated_at: at,
        })
    }

    async fn strategy(&self, id: fleetpulse_proto::StrategyId) -> Result<Option<StoredStrategy>> {
        let Some(id) = db_id(id.0) else { return Ok(None) };
        sqlx::query("SELECT id, enterprise_id, settings, created_at, updated_at FROM alarm_strategies WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(strategy_from_row)
            .transpose()
    }

    async fn list_strategies(&self, enterprise: EnterpriseId) -> Result<Vec<StoredStrategy>> {
        let Some(e) = db_id(enterprise.0) else { return Ok(Vec::new()) };
        sqlx::query("SELECT id, enterprise_id, settings, created_at, updated_at FROM alarm_strategies WHERE enterprise_id = $1 ORDER BY id")
            .bind(e)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(strategy_from_row)
            .collect()
    }

    async fn update_strategy(
        &self,
        id: fleetpulse_proto::StrategyId,
        settings: StrategySettings,
        at: UnixMillis,
    ) -> Result<Option<StoredStrategy>> {
        let Some(id) = db_id(id.0) else { return Ok(None) };
        sqlx::query(
            "UPDATE alarm_strategies SET settings = $2, updated_at = $3 WHERE id = $1 \
             RETURNING id, enterprise_id, settings, created_at, updated_at",
        )
        .bind(id)
        .bind(settings_json(&settings)?)
        .bind(at.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .as_ref()
        .map(strategy_from_row)
        .transpose()
    }

    async fn delete_strategy(&self, id: fleetpulse_proto::StrategyId) -> Result<bool> {
        let Some(id) = db_id(id.0) else { return Ok(false) };
        let done = sqlx::query("DELETE FROM alarm_strategies WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }

    async fn enqueue_outbox_batch(&self, messages: Vec<NewOutboxMessage>, now: UnixMillis) -> Result<Vec<bool>> {
        check_bound("outbox messages", messages.len(), MAX_OUTBOX_BATCH)?;
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        // The first message of each key; a later one with the same key is not queued.
        let mut first: HashMap<&str, usize> = HashMap::with_capacity(messages.len());
        for (i, m) in messages.iter().enumerate() {
            first.entry(m.key.as_str()).or_insert(i);
        }
        // In batch order, so that ids (and the order of equally due messages) follow the batch,
        // as in the embedded store. Two concurrent batches sharing keys in opposite orders may
        // deadlock: PostgreSQL then aborts one, which fails (nothing queued) and can be retried.
        let mut candidates: Vec<usize> = first.values().copied().collect();
        candidates.sort_unstable();
        let candidates: Vec<&NewOutboxMessage> = candidates.into_iter().map(|i| &messages[i]).collect();
        let mut keys = Vec::with_capacity(candidates.len());
        let mut enterprises = Vec::with_capacity(candidates.len());
        let mut receivers = Vec::with_capacity(candidates.len());
        let mut payloads = Vec::with_capacity(candidates.len());
        let mut not_before = Vec::with_capacity(candidates.len());
        for m in &candidates {
            keys.push(m.key.as_str());
            enterprises.push(
                db_id(m.enterprise_id.0).ok_or_else(|| StoreError::Backend("enterprise id out of range".into()))?,
            );
            receivers.push(m.receiver.as_str());
            payloads.push(m.payload.as_str());
            not_before.push(m.not_before.0);
        }
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let inserted: Vec<(i64, String)> = sqlx::query_as(INSERT_OUTBOX_BATCH)
            .bind(&keys)
            .bind(&enterprises)
            .bind(&receivers)
            .bind(&payloads)
            .bind(&not_before)
            .bind(now.0)
            .fetch_all(&mut *tx)
            .await
            .map_err(backend)?;
        let ids: HashMap<&str, i64> = inserted.iter().map(|(id, key)| (key.as_str(), *id)).collect();
        let queued: Vec<bool> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| first.get(m.key.as_str()) == Some(&i) && ids.contains_key(m.key.as_str()))
            .collect();
        // Each item key once, claimed by the first queued message carrying it; in key order.
        let mut items: HashMap<&str, i64> = HashMap::new();
        for (m, _) in messages.iter().zip(&queued).filter(|(_, q)| **q) {
            let Some(&id) = ids.get(m.key.as_str()) else { continue };
            for key in &m.item_keys {
                items.entry(key.as_str()).or_insert(id);
            }
        }
        if !items.is_empty() {
            let mut items: Vec<(&str, i64)> = items.into_iter().collect();
            items.sort_unstable();
            let (item_keys, message_ids): (Vec<&str>, Vec<i64>) = items.into_iter().unzip();
            sqlx::query(
                "INSERT INTO outbox_items (item_key, message_id) \
                 SELECT * FROM unnest($1::text[], $2::bigint[]) ON CONFLICT (item_key) DO NOTHING",
            )
            .bind(&item_keys)
            .bind(&message_ids)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(queued)
    }

    async fn outbox_known_items(&self, keys: &[String]) -> Result<Vec<String>> {
        check_bound("outbox item keys", keys.len(), MAX_OUTBOX_ITEM_QUERY)?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        sqlx::query_scalar("SELECT item_key FROM outbox_items WHERE item_key = ANY($1)")
            .bind(keys)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)
    }

    async fn due_outbox_except(&self, now: UnixMillis, limit: u32, except: &[String]) -> Result<Vec<OutboxMessage>> {
        check_bound("excepted outbox receivers", except.len(), MAX_OUTBOX_EXCEPT)?;
        sqlx::query(
            "SELECT id, key, enterprise_id, receiver, payload, state, attempts, next_attempt_at, last_error, \
             created_at, sent_at FROM outbox WHERE state = 'pending' AND next_attempt_at <= $1 \
             AND NOT (receiver = ANY($3::text[])) ORDER BY next_attempt_at, id LIMIT $2",
        )
        .bind(now.0)
        .bind(i64::from(limit))
        .bind(except)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?
        .iter()
        .map(outbox_from_row)
        .collect()
    }

    async fn record_outbox_attempts(&self, attempts: Vec<OutboxAttempt>) -> Result<()> {
        check_bound("outbox attempts", attempts.len(), MAX_OUTBOX_BATCH)?;
        let mut tx = self.pool.begin().await.map_err(backend)?;
        for a in attempts {
            let Some(id) = db_id(a.id) else { continue };
            sqlx::query(RECORD_OUTBOX_ATTEMPT)
                .bind(id)
                .bind(a.outcome.as_str())
                .bind(a.next_attempt_at.0)
                .bind(a.error)
                .bind(a.at.0)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)
    }

    async fn record_outbox_attempt(
        &self,
        id: u64,
        outcome: OutboxState,
        at: UnixMillis,
        next_attempt_at: UnixMillis,
        error: Option<String>,
    ) -> Result<Option<OutboxMessage>> {
        let Some(id) = db_id(id) else { return Ok(None) };
        sqlx::query(RECORD_OUTBOX_ATTEMPT)
            .bind(id)
            .bind(outcome.as_str())
            .bind(next_attempt_at.0)
            .bind(error)
            .bind(at.0)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        sqlx::query(
            "SELECT id, key, enterprise_id, receiver, payload, state, attempts, next_attempt_at, last_error, \
             created_at, sent_at FROM outbox WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .as_ref()
        .map(outbox_from_row)
        .transpose()
    }

    async fn append_operation_logs(&self, rows: Vec<NewOperationLog>) -> Result<()> {
        check_bound("operation log rows", rows.len(), MAX_OPERATION_LOG_BATCH)?;
        rows.iter().try_for_each(NewOperationLog::validate)?;
        if rows.is_empty() {
            return Ok(());
        }
        // `validate` refused ids beyond BIGINT, so none is turned into NULL here.
        let id = |id: Option<u64>| id.and_then(db_id);
        let account_ids: Vec<Option<i64>> = rows.iter().map(|r| id(r.account_id.map(|a| a.0))).collect();
        let emails: Vec<&str> = rows.iter().map(|r| r.account_email.as_str()).collect();
        let acting_as: Vec<Option<i64>> = rows.iter().map(|r| id(r.acting_as.map(|e| e.0))).collect();
        let operations: Vec<&str> = rows.iter().map(|r| r.operation.as_str()).collect();
        let methods: Vec<&str> = rows.iter().map(|r| r.method.as_str()).collect();
        let paths: Vec<&str> = rows.iter().map(|r| r.path.as_str()).collect();
        let ips: Vec<&str> = rows.iter().map(|r| r.ip.as_str()).collect();
        let at: Vec<i64> = rows.iter().map(|r| r.at.0).collect();
        let status: Vec<i32> = rows.iter().map(|r| i32::from(r.status)).collect();
        let outcomes: Vec<&str> = rows.iter().map(|r| r.outcome.as_str()).collect();
        // One statement: the batch is appended whole or not at all.
        sqlx::query(INSERT_OPERATION_LOGS)
            .bind(&account_ids)
            .bind(&emails)
            .bind(&acting_as)
            .bind(&operations)
            .bind(&methods)
            .bind(&paths)
            .bind(&ips)
            .bind(&at)
            .bind(&status)
            .bind(&outcomes)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn list_operation_logs(&self, filter: OperationLogFilter, page: Page) -> Result<Vec<OperationLog>> {
        let limit = page.limit.min(MAX_OPERATION_LOG_PAGE);
        if let Some(within) = &filter.within {
            within.check()?;
        }
        if limit == 0 || filter.matches_nothing() {
            return Ok(Vec::new());
        }
        // Only the filters given become terms (from fixed fragments, values bound), so that
        // the planner can pick the index that fits whatever the plan cache holds.
        let mut query = sqlx::QueryBuilder::<sqlx::Postgres>::new(OPERATION_LOG_PAGE);
        if let Some(a) = filter.account_id {
            let Some(a) = db_id(a.0) else { return Ok(Vec::new()) };
            query.push(" AND account_id = ").push_bind(a);
        }
        if let Some(e) = filter.enterprise {
            let Some(e) = db_id(e.0) else { return Ok(Vec::new()) };
            query.push(" AND acting_as = ").push_bind(e);
        }
        if let Some(op) = filter.operation {
            query.push(" AND operation = ").push_bind(op);
        }
        if let Some(t) = filter.from {
            query.push(" AND at >= ").push_bind(t.0);
        }
        if let Some(t) = filter.to {
            query.push(" AND at < ").push_bind(t.0);
        }
        if let Some(within) = &filter.within {
            let accounts: Vec<i64> = within.accounts.iter().filter_map(|a| db_id(a.0)).collect();
            let enterprises: Vec<i64> = within.enterprises.iter().filter_map(|e| db_id(e.0)).collect();
            query.push(" AND (account_id = ANY(").push_bind(accounts);
            query.push("::bigint[]) OR acting_as = ANY(").push_bind(enterprises).push("::bigint[]))");
        }
        if page.after > 0 {
            // Every id is below one beyond BIGINT.
            query.push(" AND id < ").push_bind(db_id(page.after).unwrap_or(i64::MAX));
        }
        query.push(" ORDER BY id DESC LIMIT ").push_bind(i64::from(limit));
        query.build().fetch_all(&self.pool).await.map_err(backend)?.iter().map(operation_log_from_row).collect()
    }

    async fn record_login_failure(
        &self,
        account: AccountId,
        now: UnixMillis,
        max_failures: u32,
        lock_for_ms: u64,
    ) -> Result<Option<Account>> {
        let until = login_lock_until(now, max_failures, lock_for_ms)?;
        let Some(id) = db_id(account.0) else { return Ok(None) };
        sqlx::query(RECORD_LOGIN_FAILURE)
            .bind(id)
            .bind(i64::from(max_failures))
            .bind(until.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(account_from_row)
            .transpose()
    }

    async fn record_login_success(&self, account: AccountId) -> Result<()> {
        let Some(id) = db_id(account.0) else { return Ok(()) };
        sqlx::query(
            "UPDATE accounts SET failed_logins = 0, locked_until = NULL \
             WHERE id = $1 AND (failed_logins <> 0 OR locked_until IS NOT NULL)",
        )
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    // Account self-service (ACC-3..5): in `account_security.rs`.

    async fn account_settings(&self, account: AccountId) -> Result<Option<AccountSettings>> {
        self.account_settings_impl(account).await
    }

    async fn set_account_settings(&self, account: AccountId, settings: AccountSettings) -> Result<bool> {
        self.set_account_settings_impl(account, settings).await
    }

    async fn create_password_reset(&self, reset: PasswordReset) -> Result<()> {
        self.create_password_reset_impl(reset).await
    }

    async fn consume_password_reset(&self, token_hash: TokenHash, now: UnixMillis) -> Result<Option<AccountId>> {
        self.consume_password_reset_impl(token_hash, now).await
    }

    async fn create_login_challenge(&self, challenge: LoginChallenge) -> Result<()> {
        self.create_login_challenge_impl(challenge).await
    }

    async fn claim_login_challenge_attempt(
        &self,
        id_hash: TokenHash,
        now: UnixMillis,
        max_attempts: u32,
    ) -> Result<Option<LoginChallenge>> {
        self.claim_login_challenge_attempt_impl(id_hash, now, max_attempts).await
    }

    async fn finish_login_challenge(&self, id_hash: TokenHash, now: UnixMillis) -> Result<bool> {
        self.finish_login_challenge_impl(id_hash, now).await
    }

    async fn redact_outbox_payload(&self, id: u64, payload: String) -> Result<bool> {
        self.redact_outbox_payload_impl(id, payload).await
    }
}

#[cfg(test)]
mod tests;
