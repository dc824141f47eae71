//! Devices on PostgreSQL ([`DeviceStore`]): race-free registration, snapshot updates from
//! parallel arrays, the device lists and dashboard (SQL shared with SQLite in `device_sql.rs`),
//! saved labels and columns.

use async_trait::async_trait;
use fleetpulse_proto::catalog::DeviceType;
use fleetpulse_proto::domain::DeviceKey;
use fleetpulse_proto::ids::ChannelId;
use fleetpulse_proto::{AccountId, DeviceId, EnterpriseId, Mac, UnixMillis};
use sqlx::Row;
use sqlx::postgres::{PgConnection, PgRow};

use super::{PgEntityStore, backend, db_id, row_id, unique_as};
use crate::*;

/// Attempts at registering a device that keeps losing races with concurrent registrations of
/// the same key. The second attempt always settles it (rows are never deleted); the bound only
/// turns a bug into an error instead of a loop.
const REGISTER_ATTEMPTS: usize = 3;

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

/// Sets every device's type from the catalog ([`DeviceType::of_model`]), on connect: rows from
/// before the snapshot migration and models a newer catalog knows get this build's type.
pub(super) async fn refresh_device_types(conn: &mut PgConnection) -> Result<()> {
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
        site: crate::sites::SiteRef::from_columns(
            r.try_get::<Option<i64>, _>(20).map_err(backend)?.map(row_id),
            r.try_get(21).map_err(backend)?,
        ),
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
        groups: Vec::new(),
    })
}

/// A shared device query as a sqlx query with its values bound.
pub(super) fn pg_query(
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

/// A device with its enterprise and snapshot ([`crate::device_sql::SUMMARY_COLUMNS`]).
const DEVICE_SUMMARY_BY_ID: &str = "SELECT d.id, d.enterprise_id, d.mac, d.serial, d.model, d.firmware, d.name, \
     d.created_at, e.name, e.channel_id, d.device_type, d.online, d.sip_status, d.call_status, d.public_ip, \
     d.private_ip, d.last_report_at, d.uptime_s, d.last_reboot, d.sip_lines, d.site_id, \
     (SELECT s.name FROM sites s WHERE s.id = d.site_id) \
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
/// Inserts a device that added itself and, in the same statement, puts it into its enterprise's
/// default groups (PRV-2).
const INSERT_DEVICE: &str = "WITH d AS (INSERT INTO devices (enterprise_id, mac, serial, model, firmware, created_at, \
     device_type) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING \
     RETURNING id, enterprise_id, mac, serial, model, firmware, name, created_at), \
     g AS (INSERT INTO group_members (device_id, group_id, position) \
     SELECT d.id, x.group_id, x.position FROM d JOIN default_groups x ON x.enterprise_id = d.enterprise_id) \
     SELECT * FROM d";
const UPDATE_DEVICE: &str = "UPDATE devices SET model = $2, firmware = $3, device_type = $4 WHERE id = $1 \
     RETURNING id, enterprise_id, mac, serial, model, firmware, name, created_at";

impl PgEntityStore {
    async fn find_device(&self, key: &DeviceKey) -> Result<Option<Device>> {
        let query = match key {
            DeviceKey::Mac(mac) => sqlx::query(DEVICE_BY_MAC).bind(mac.as_str()),
            DeviceKey::Serial(serial) => sqlx::query(DEVICE_BY_SERIAL).bind(serial.as_str()),
        };
        query.fetch_optional(&self.pool).await.map_err(backend)?.as_ref().map(device_from_row).transpose()
    }
}

#[async_trait]
impl DeviceStore for PgEntityStore {
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
            super::sites::rematch_reported(&mut tx, &self.site_matchers, &ids).await?;
        }
        tx.commit().await.map_err(backend)
    }

    async fn mark_devices_offline(&self) -> Result<u64> {
        let done =
            sqlx::query("UPDATE devices SET online = 0 WHERE online = 1").execute(&self.pool).await.map_err(backend)?;
        Ok(done.rows_affected())
    }

    async fn query_devices(&self, query: DeviceQuery, page: DevicePageRequest) -> Result<DevicePage> {
        self.device_page(query, page, true).await
    }

    async fn scan_devices(&self, query: DeviceQuery, page: DevicePageRequest) -> Result<DevicePage> {
        self.device_page(query, page, false).await
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
        let mut dashboard = DeviceDashboard::from_groups(read(types)?, read(models)?);
        if !crate::groups::dashboard_counts_groups(&query) {
            return Ok(dashboard);
        }
        let groups = pg_query(crate::device_sql::by_group_sql(&query, MAX_DASHBOARD_GROUPS + 1, Dialect::Postgres))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        let rows = groups
            .iter()
            .map(|r| {
                Ok((
                    r.try_get(0).map_err(backend)?,
                    r.try_get(1).map_err(backend)?,
                    r.try_get(2).map_err(backend)?,
                    r.try_get(3).map_err(backend)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        crate::groups::set_dashboard_groups(&mut dashboard, rows);
        Ok(dashboard)
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
        let found = sqlx::query(DEVICE_SUMMARY_BY_ID)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(summary_from_row)
            .transpose()?;
        let Some(mut one) = found.map(|d| vec![d]) else { return Ok(None) };
        crate::groups::attach_groups(self, &mut one).await?;
        Ok(one.pop())
    }
}

impl PgEntityStore {
    /// A page of the device list; the total of the matches only when `count` (else 0).
    async fn device_page(&self, query: DeviceQuery, page: DevicePageRequest, count: bool) -> Result<DevicePage> {
        use crate::device_sql::{Dialect, count_sql, page_sql};
        let Some(cursor) = prepare_device_query(&query, &page)? else {
            return Ok(DevicePage { items: Vec::new(), next_cursor: None, total: 0 });
        };
        let total: i64 = if count {
            pg_query(count_sql(&query, Dialect::Postgres))
                .fetch_one(&self.pool)
                .await
                .map_err(backend)?
                .try_get(0)
                .map_err(backend)?
        } else {
            0
        };
        let rows = pg_query(page_sql(&query, cursor.as_ref(), page.limit, Dialect::Postgres))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        let mut items = rows.iter().map(summary_from_row).collect::<Result<Vec<_>>>()?;
        crate::groups::attach_groups(self, &mut items).await?;
        Ok(finish_device_page(items, &query, page.limit, u64::try_from(total).unwrap_or(0)))
    }
}
