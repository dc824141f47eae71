//! Versioned schema of the ClickHouse event tables, applied on connect (STO-5).
//!
//! The `schema_version` table records each applied version. Migrations are append-only: never
//! edit one that has shipped; add the next. Every statement is idempotent (`IF NOT EXISTS`), so
//! two processes starting at once, or a start interrupted half-way, apply a version safely.
//!
//! The DDL runs on ClickHouse 18.16: no TTL, DateTime64, Map, LowCardinality, codecs or skip
//! indexes. Times are `at_ms Int64` (milliseconds) plus a `DateTime('UTC')` column derived from
//! it for partitioning, clamped to the range 18.16's date tables cover (1970-01-01 to
//! 2105-12-31), as later times would wrap into the 1970 partition and be dropped by retention.

use ::clickhouse::Client;

use crate::{Result, StoreError};

/// Every migration, in order; the version of `MIGRATIONS[i]` is `i + 1`. One statement per
/// request (the HTTP interface runs one at a time).
const MIGRATIONS: &[&[&str]] = &[
    // 1: foundation.
    &[
        r#"CREATE TABLE IF NOT EXISTS status_events (
    enterprise_id UInt64,
    device_id     UInt64,
    seq           UInt64,
    at_ms         Int64,
    at            DateTime('UTC') MATERIALIZED toDateTime(least(greatest(intDiv(at_ms, 1000), 0), 4291747199)),
    sip_summary   String,
    call_status   String,
    firmware      String,
    public_ip     Nullable(String),
    private_ip    Nullable(String),
    uptime_s      UInt64,
    last_reboot   Nullable(Int64),
    lines         String
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(at)
ORDER BY (enterprise_id, device_id, seq, at_ms)"#,
        r#"CREATE TABLE IF NOT EXISTS resource_reports (
    enterprise_id UInt64,
    device_id     UInt64,
    seq           UInt64,
    at_ms         Int64,
    at            DateTime('UTC') MATERIALIZED toDateTime(least(greatest(intDiv(at_ms, 1000), 0), 4291747199)),
    cpu_centi_pct UInt16,
    mem_used      UInt64,
    mem_total     UInt64
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(at)
ORDER BY (enterprise_id, device_id, seq, at_ms)"#,
        // `code` and `clear` complete the key: the alarms the server derives all carry seq 0.
        r#"CREATE TABLE IF NOT EXISTS alarm_events (
    enterprise_id UInt64,
    device_id     UInt64,
    seq           UInt64,
    at_ms         Int64,
    at            DateTime('UTC') MATERIALIZED toDateTime(least(greatest(intDiv(at_ms, 1000), 0), 4291747199)),
    code          UInt16,
    clear         UInt8,
    description   String,
    log           Nullable(String)
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(at)
ORDER BY (enterprise_id, device_id, seq, at_ms, code, clear)"#,
        r#"CREATE TABLE IF NOT EXISTS delivery_marks (
    device_id UInt64,
    last_seq  UInt64
) ENGINE = ReplacingMergeTree(last_seq)
ORDER BY device_id"#,
        r#"CREATE TABLE IF NOT EXISTS alarm_records (
    id            UInt64,
    enterprise_id UInt64,
    device_id     UInt64,
    code          UInt16,
    first_at      Int64,
    latest_at     Int64,
    count         UInt64,
    description   String,
    status        Enum8('active' = 1, 'cleared' = 2),
    cleared_at    Nullable(Int64),
    version       UInt64,
    applied       UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (enterprise_id, device_id, code)"#,
    ],
    // 2: alarm lifecycle (ALM-2): acknowledged status, who acknowledged, who cleared by hand.
    // 18.16 has no `ADD COLUMN IF NOT EXISTS`: the three columns are added in one statement, so
    // they are added together or not at all (MODIFY of the enum is idempotent).
    &[
        "ALTER TABLE alarm_records MODIFY COLUMN status Enum8('active' = 1, 'cleared' = 2, 'acknowledged' = 3)",
        "ALTER TABLE alarm_records ADD COLUMN acknowledged_at Nullable(Int64), \
         ADD COLUMN acknowledged_by Nullable(UInt64), ADD COLUMN cleared_by Nullable(UInt64)",
    ],
];

/// The schema version this build writes.
pub const CURRENT_VERSION: u32 = MIGRATIONS.len() as u32;

/// The tables partitioned by day, whose old partitions retention may drop.
pub(super) const PARTITIONED_TABLES: &[&str] = &["status_events", "resource_reports", "alarm_events"];

const VERSION_TABLE: &str = r#"CREATE TABLE IF NOT EXISTS schema_version (
    version    UInt32,
    applied_at DateTime('UTC')
) ENGINE = ReplacingMergeTree
ORDER BY version"#;

/// Applies the migrations above the database's version; returns the version now in place.
/// `client` must be bound to the database.
pub(super) async fn migrate(client: &Client) -> Result<u32> {
    let fail =
        |version: u32| move |e: ::clickhouse::error::Error| StoreError::Migration { version, reason: e.to_string() };
    client.query(VERSION_TABLE).execute().await.map_err(fail(0))?;
    let current: u32 = client.query("SELECT max(version) FROM schema_version").fetch_one().await.map_err(fail(0))?;
    if current > CURRENT_VERSION {
        return Err(StoreError::Migration {
            version: current,
            reason: format!("the database is newer than this build (schema {CURRENT_VERSION})"),
        });
    }
    for (i, statements) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = i as u32 + 1;
        for sql in *statements {
            client.query(sql).execute().await.map_err(fail(version))?;
        }
        client
            .query("INSERT INTO schema_version (version, applied_at) VALUES (?, now())")
            .bind(version)
            .execute()
            .await
            .map_err(fail(version))?;
        tracing::info!(message = "Applied ClickHouse schema migration.", version);
    }
    Ok(CURRENT_VERSION)
}
