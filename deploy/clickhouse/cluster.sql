-- fleetpulse event tables on a sharded, replicated ClickHouse cluster.
--
-- The single-server schema (store/src/clickhouse/schema.rs, created by fleetpulse on connect)
-- maps onto a cluster one to one: each table becomes a ReplicatedReplacingMergeTree "local"
-- table on every node, and a Distributed table with the table's own name fronts them, so
-- fleetpulse reads and writes the same names as on one server. Run this once on any node with
-- ON CLUSTER before pointing fleetpulse at the cluster; fleetpulse's own CREATE ... IF NOT
-- EXISTS statements then find the tables present and leave them alone.
--
-- Requirements: a cluster named `fleetpulse` in remote_servers, ZooKeeper (or ClickHouse
-- Keeper), and the {shard} / {replica} macros on every node.
--
-- Sharding key: device_id for the event tables, so all rows of one device (and their
-- ReplacingMergeTree duplicates from retried inserts) land on one shard and FINAL deduplicates
-- them there. alarm_records and delivery_marks shard by device_id too, for the same reason.
-- With replicated tables ClickHouse also deduplicates identical insert blocks
-- (insert_deduplicate = 1, the default), a second line of defence behind the idempotent rows.
--
-- Retention: DROP PARTITION on the local tables, ON CLUSTER:
--   ALTER TABLE fleetpulse.resource_reports_local ON CLUSTER fleetpulse DROP PARTITION 20261101;

CREATE DATABASE IF NOT EXISTS fleetpulse ON CLUSTER fleetpulse;

CREATE TABLE IF NOT EXISTS fleetpulse.status_events_local ON CLUSTER fleetpulse (
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
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/fleetpulse/status_events', '{replica}')
PARTITION BY toYYYYMMDD(at)
ORDER BY (enterprise_id, device_id, seq, at_ms);

CREATE TABLE IF NOT EXISTS fleetpulse.status_events ON CLUSTER fleetpulse AS fleetpulse.status_events_local
ENGINE = Distributed(fleetpulse, fleetpulse, status_events_local, device_id);

CREATE TABLE IF NOT EXISTS fleetpulse.resource_reports_local ON CLUSTER fleetpulse (
    enterprise_id UInt64,
    device_id     UInt64,
    seq           UInt64,
    at_ms         Int64,
    at            DateTime('UTC') MATERIALIZED toDateTime(least(greatest(intDiv(at_ms, 1000), 0), 4291747199)),
    cpu_centi_pct UInt16,
    mem_used      UInt64,
    mem_total     UInt64
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/fleetpulse/resource_reports', '{replica}')
PARTITION BY toYYYYMMDD(at)
ORDER BY (enterprise_id, device_id, seq, at_ms);

CREATE TABLE IF NOT EXISTS fleetpulse.resource_reports ON CLUSTER fleetpulse AS fleetpulse.resource_reports_local
ENGINE = Distributed(fleetpulse, fleetpulse, resource_reports_local, device_id);

CREATE TABLE IF NOT EXISTS fleetpulse.alarm_events_local ON CLUSTER fleetpulse (
    enterprise_id UInt64,
    device_id     UInt64,
    seq           UInt64,
    at_ms         Int64,
    at            DateTime('UTC') MATERIALIZED toDateTime(least(greatest(intDiv(at_ms, 1000), 0), 4291747199)),
    code          UInt16,
    clear         UInt8,
    description   String,
    log           Nullable(String)
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/fleetpulse/alarm_events', '{replica}')
PARTITION BY toYYYYMMDD(at)
ORDER BY (enterprise_id, device_id, seq, at_ms, code, clear);

CREATE TABLE IF NOT EXISTS fleetpulse.alarm_events ON CLUSTER fleetpulse AS fleetpulse.alarm_events_local
ENGINE = Distributed(fleetpulse, fleetpulse, alarm_events_local, device_id);

CREATE TABLE IF NOT EXISTS fleetpulse.delivery_marks_local ON CLUSTER fleetpulse (
    device_id UInt64,
    last_seq  UInt64
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/fleetpulse/delivery_marks', '{replica}', last_seq)
ORDER BY device_id;

CREATE TABLE IF NOT EXISTS fleetpulse.delivery_marks ON CLUSTER fleetpulse AS fleetpulse.delivery_marks_local
ENGINE = Distributed(fleetpulse, fleetpulse, delivery_marks_local, device_id);

CREATE TABLE IF NOT EXISTS fleetpulse.alarm_records_local ON CLUSTER fleetpulse (
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
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/fleetpulse/alarm_records', '{replica}', version)
ORDER BY (enterprise_id, device_id, code);

CREATE TABLE IF NOT EXISTS fleetpulse.alarm_records ON CLUSTER fleetpulse AS fleetpulse.alarm_records_local
ENGINE = Distributed(fleetpulse, fleetpulse, alarm_records_local, device_id);

CREATE TABLE IF NOT EXISTS fleetpulse.schema_version_local ON CLUSTER fleetpulse (
    version    UInt32,
    applied_at DateTime('UTC')
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/fleetpulse/schema_version', '{replica}')
ORDER BY version;

CREATE TABLE IF NOT EXISTS fleetpulse.schema_version ON CLUSTER fleetpulse AS fleetpulse.schema_version_local
ENGINE = Distributed(fleetpulse, fleetpulse, schema_version_local, version);
