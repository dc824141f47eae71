//! Devices on SQLite ([`DeviceStore`]): registration, the snapshot ingest feeds, the device
//! lists and dashboard (SQL shared with PostgreSQL in `device_sql.rs`), saved labels and columns.

use async_trait::async_trait;
use fleetpulse_proto::catalog::DeviceType;
use fleetpulse_proto::domain::DeviceKey;
use fleetpulse_proto::ids::ChannelId;
use fleetpulse_proto::{AccountId, DeviceId, EnterpriseId, Mac, UnixMillis};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{EmbeddedStore, SqlValue, is_unique_violation, row_exists};
use crate::*;

const DEVICE_COLUMNS: &str = "id, enterprise_id, mac, serial, model, firmware, name, created_at";

fn device_from_row(r: &Row<'_>) -> rusqlite::Result<Device> {
    let mac: Option<String> = r.get(2)?;
    Ok(Device {
        id: DeviceId(r.get(0)?),
        enterprise_id: EnterpriseId(r.get(1)?),
        mac: mac.and_then(|m| Mac::parse(&m).ok()),
        serial: r.get(3)?,
        model: r.get(4)?,
        firmware: r.get(5)?,
        name: r.get(6)?,
        created_at: UnixMillis(r.get(7)?),
    })
}

fn find_device(c: &Connection, key: &DeviceKey) -> rusqlite::Result<Option<Device>> {
    match key {
        DeviceKey::Mac(mac) => c
            .prepare_cached(&format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE mac = ?1"))?
            .query_row([mac.as_str()], device_from_row)
            .optional(),
        DeviceKey::Serial(sn) => c
            .prepare_cached(&format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE serial = ?1 AND mac IS NULL"))?
            .query_row([sn], device_from_row)
            .optional(),
    }
}

pub(super) fn register_device(c: &Connection, new: &NewDevice) -> Result<RegisteredDevice> {
    if let Some(mut device) = find_device(c, &new.key)? {
        if device.enterprise_id != new.enterprise_id {
            return Err(StoreError::DeviceConflict);
        }
        if device.model != new.model || device.firmware != new.firmware {
            c.prepare_cached("UPDATE devices SET model = ?2, firmware = ?3, device_type = ?4 WHERE id = ?1")?
                .execute(params![device.id.0, new.model, new.firmware, DeviceType::of_model(&new.model).as_str()])?;
            device.model.clone_from(&new.model);
            device.firmware.clone_from(&new.firmware);
        }
        return Ok(RegisteredDevice { device, created: false });
    }
    let mac = match &new.key {
        DeviceKey::Mac(m) => Some(*m),
        DeviceKey::Serial(_) => None,
    };
    let serial = match &new.key {
        DeviceKey::Serial(s) => Some(s.clone()),
        DeviceKey::Mac(_) => new.serial.clone(),
    };
    c.prepare_cached(&format!(
        "INSERT INTO devices (id, enterprise_id, mac, serial, model, firmware, created_at, device_type) \
         VALUES ({}, ?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        super::inventory::NEXT_DEVICE_ID
    ))?
    .execute(params![
        new.enterprise_id.0,
        mac.as_ref().map(Mac::as_str),
        serial,
        new.model,
        new.firmware,
        new.at.0,
        DeviceType::of_model(&new.model).as_str()
    ])?;
    let id = DeviceId(c.last_insert_rowid() as u64);
    super::groups::join_default_groups(c, new.enterprise_id, id)?;
    Ok(RegisteredDevice {
        device: Device {
            id,
            enterprise_id: new.enterprise_id,
            mac,
            serial,
            model: new.model.clone(),
            firmware: new.firmware.clone(),
            name: String::new(),
            created_at: new.at,
        },
        created: true,
    })
}

/// Sets every device's type from the catalog ([`DeviceType::of_model`]): run on open, so that
/// rows from before the snapshot migration, and rows of models a newer catalog knows, get the
/// type of this build. Reads the distinct (model, type) pairs, updates only those that differ.
pub(super) fn refresh_device_types(c: &Connection) -> Result<()> {
    let pairs: Vec<(String, String)> = c
        .prepare("SELECT DISTINCT model, device_type FROM devices")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (model, stored) in pairs {
        let want = DeviceType::of_model(&model).as_str();
        if stored != want {
            c.execute(
                "UPDATE devices SET device_type = ?2 WHERE model = ?1 AND device_type = ?3",
                params![model, want, stored],
            )?;
        }
    }
    Ok(())
}

/// What every report writes to its device's row: of these columns only `last_report_at` is
/// indexed (a test holds it so), and it changes with every report.
pub(super) const REPORT_SQL: &str = "UPDATE devices SET sip_status = ?2, call_status = ?3, last_report_at = ?4, \
     uptime_s = ?5, last_reboot = ?6, sip_lines = ?7 WHERE id = ?1 AND last_report_at <= ?4";

/// Applies snapshot updates (distinct devices) inside the writer's transaction.
fn apply_snapshot_updates(
    c: &Connection,
    updates: &[DeviceSnapshotUpdate],
    sites: &crate::sites::MatcherCache,
) -> Result<()> {
    let mut online = c.prepare_cached("UPDATE devices SET online = ?2 WHERE id = ?1")?;
    // A report's indexed columns are assigned only when one of them changes, by a statement of
    // their own run first: SQLite rewrites a row's entry in every index whose column an UPDATE
    // assigns, even to the value it had, so assigning all of them on every report dirtied six
    // index leaves per reporting device per commit. Both statements keep the newest report.
    let mut placement = c.prepare_cached(
        "UPDATE devices SET firmware = CASE WHEN ?2 = '' THEN firmware ELSE ?2 END, public_ip = ?3, private_ip = ?4, \
         site_id = ?5 WHERE id = ?1 AND last_report_at <= ?6 AND (public_ip IS NOT ?3 OR private_ip IS NOT ?4 \
         OR site_id IS NOT ?5 OR (?2 <> '' AND firmware IS NOT ?2))",
    )?;
    let mut report = c.prepare_cached(REPORT_SQL)?;
    for u in updates {
        let Ok(id) = i64::try_from(u.device_id.0) else { continue };
        if let Some(o) = u.online {
            online.execute(params![id, o])?;
        }
        if let Some(r) = &u.report {
            let s = &r.status;
            let lines = serde_json::to_string(&s.lines).map_err(|e| StoreError::Backend(e.to_string()))?;
            let (public_ip, private_ip) = (
                s.public_ip.map(|ip| ip.to_string()).unwrap_or_default(),
                s.private_ip.map(|ip| ip.to_string()).unwrap_or_default(),
            );
            let site = super::sites::site_for_report(c, sites, id, &public_ip, &private_ip)?;
            placement.execute(params![id, s.firmware, public_ip, private_ip, site, r.at.0])?;
            report.execute(params![
                id,
                crate::device_sql::sip_name(s.sip_summary()),
                crate::device_sql::call_name(s.call_status),
                r.at.0,
                i64::try_from(s.uptime_s).unwrap_or(i64::MAX),
                s.last_reboot.map(|t| t.0),
                lines,
            ])?;
        }
    }
    Ok(())
}

/// Reads a row of [`crate::device_sql::SUMMARY_COLUMNS`].
fn summary_from_row(r: &Row<'_>) -> rusqlite::Result<DeviceSummary> {
    let device = device_from_row(r)?;
    let device_type: String = r.get(10)?;
    let call: Option<String> = r.get(13)?;
    let public_ip: String = r.get(14)?;
    let private_ip: String = r.get(15)?;
    let last_report_at: i64 = r.get(16)?;
    let uptime: Option<i64> = r.get(17)?;
    let lines: String = r.get(19)?;
    let sip: String = r.get(12)?;
    Ok(DeviceSummary {
        device,
        enterprise_name: r.get(8)?,
        channel_id: r.get::<_, Option<u64>>(9)?.map(ChannelId),
        site: crate::sites::SiteRef::from_columns(r.get(20)?, r.get(21)?),
        snapshot: DeviceSnapshot {
            device_type: DeviceType::parse(&device_type).unwrap_or(DeviceType::Other),
            online: r.get(11)?,
            sip_status: crate::device_sql::parse_sip(&sip),
            call_status: call.as_deref().and_then(crate::device_sql::parse_call),
            public_ip: (!public_ip.is_empty()).then_some(public_ip),
            private_ip: (!private_ip.is_empty()).then_some(private_ip),
            last_report_at: (last_report_at > 0).then_some(UnixMillis(last_report_at)),
            uptime_s: uptime.and_then(|u| u64::try_from(u).ok()),
            last_reboot: r.get::<_, Option<i64>>(18)?.map(UnixMillis),
            lines: serde_json::from_str(&lines).unwrap_or_default(),
        },
        groups: Vec::new(),
    })
}

/// Binds the arguments of a shared device query to SQLite values.
pub(super) fn sqlite_args(args: Vec<crate::device_sql::Arg>) -> Vec<SqlValue> {
    use crate::device_sql::Arg;
    args.into_iter()
        .map(|a| -> SqlValue {
            match a {
                Arg::Int(i) => Box::new(i),
                Arg::Text(t) => Box::new(t),
                Arg::Ids(ids) => Box::new(serde_json::Value::from(ids).to_string()),
            }
        })
        .collect()
}

#[async_trait]
impl DeviceStore for EmbeddedStore {
    async fn register_device(&self, new: NewDevice) -> Result<RegisteredDevice> {
        // Fast path without a write: the device exists, unchanged, in this enterprise.
        let lookup = new.clone();
        let existing = self.read(move |c| Ok(find_device(c, &lookup.key)?)).await?;
        if let Some(device) = existing {
            if device.enterprise_id != new.enterprise_id {
                return Err(StoreError::DeviceConflict);
            }
            if device.model == new.model && device.firmware == new.firmware {
                return Ok(RegisteredDevice { device, created: false });
            }
        }
        self.write(1, move |c| register_device(c, &new)).await
    }

    async fn device(&self, id: DeviceId) -> Result<Option<Device>> {
        self.read(move |c| {
            Ok(c.prepare_cached(&format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE id = ?1"))?
                .query_row([id.0], device_from_row)
                .optional()?)
        })
        .await
    }

    async fn list_devices(&self, enterprise: Option<EnterpriseId>, page: Page) -> Result<Vec<Device>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {DEVICE_COLUMNS} FROM devices WHERE (?1 IS NULL OR enterprise_id = ?1) AND id > ?2 ORDER BY id LIMIT ?3"
            ))?;
            let rows = st.query_map(params![enterprise.map(|e| e.0), page.after, page.limit], device_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn update_device_snapshots(&self, updates: Vec<DeviceSnapshotUpdate>) -> Result<()> {
        check_bound("snapshot updates", updates.len(), MAX_SNAPSHOT_BATCH)?;
        if updates.is_empty() {
            return Ok(());
        }
        let updates = coalesce_snapshot_updates(updates);
        let sites = self.site_matchers.clone();
        self.write(updates.len(), move |c| apply_snapshot_updates(c, &updates, &sites)).await
    }

    async fn mark_devices_offline(&self) -> Result<u64> {
        self.write(1, |c| Ok(c.execute("UPDATE devices SET online = 0 WHERE online = 1", [])? as u64)).await
    }

    async fn query_devices(&self, query: DeviceQuery, page: DevicePageRequest) -> Result<DevicePage> {
        self.device_page(query, page, true).await
    }

    async fn scan_devices(&self, query: DeviceQuery, page: DevicePageRequest) -> Result<DevicePage> {
        self.device_page(query, page, false).await
    }

    async fn device_dashboard(&self, query: DeviceQuery) -> Result<DeviceDashboard> {
        query.validate()?;
        if query.matches_nothing() {
            return Ok(DeviceDashboard::from_groups(Vec::new(), Vec::new()));
        }
        self.read(move |c| {
            use crate::device_sql::{Dialect, by_model_sql, by_type_sql};
            let groups = |built: crate::device_sql::Built| -> Result<Vec<(String, i64, i64)>> {
                let mut st = c.prepare_cached(&built.sql)?;
                let rows = st.query_map(rusqlite::params_from_iter(sqlite_args(built.args)), |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            };
            let types = groups(by_type_sql(&query, Dialect::Sqlite))?;
            let models = groups(by_model_sql(&query, MAX_DASHBOARD_MODELS + 1, Dialect::Sqlite))?;
            let mut dashboard = DeviceDashboard::from_groups(types, models);
            if crate::groups::dashboard_counts_groups(&query) {
                let built = crate::device_sql::by_group_sql(&query, MAX_DASHBOARD_GROUPS + 1, Dialect::Sqlite);
                let mut st = c.prepare_cached(&built.sql)?;
                let rows = st.query_map(rusqlite::params_from_iter(sqlite_args(built.args)), |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?;
                crate::groups::set_dashboard_groups(&mut dashboard, rows.collect::<rusqlite::Result<Vec<_>>>()?);
            }
            Ok(dashboard)
        })
        .await
    }

    async fn create_device_label(&self, new: NewDeviceLabel, now: UnixMillis) -> Result<DeviceLabel> {
        new.validate()?;
        let Ok(account) = i64::try_from(new.account_id.0) else {
            return Err(StoreError::InvalidInput(format!("account {} does not exist", new.account_id)));
        };
        // The single writer serialises the count and the insert.
        self.write(1, move |c| {
            check_exists("account", new.account_id.0, row_exists(c, "accounts", new.account_id.0)?)?;
            let count: i64 = c
                .prepare_cached("SELECT count(*) FROM device_labels WHERE account_id = ?1")?
                .query_row([account], |r| r.get(0))?;
            if usize::try_from(count).unwrap_or(usize::MAX) >= MAX_DEVICE_LABELS {
                return Err(StoreError::InvalidInput(format!("an account has at most {MAX_DEVICE_LABELS} labels")));
            }
            let inserted = c
                .prepare_cached(
                    "INSERT INTO device_labels (account_id, name, filter, created_at) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![account, new.name, new.filter, now.0]);
            match inserted {
                Err(e) if is_unique_violation(&e) => return Err(StoreError::AlreadyExists("label name")),
                other => other?,
            };
            Ok(DeviceLabel {
                id: c.last_insert_rowid() as u64,
                account_id: new.account_id,
                name: new.name.clone(),
                filter: new.filter.clone(),
                created_at: now,
            })
        })
        .await
    }

    async fn list_device_labels(&self, account: AccountId) -> Result<Vec<DeviceLabel>> {
        let Ok(id) = i64::try_from(account.0) else { return Ok(Vec::new()) };
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT id, account_id, name, filter, created_at FROM device_labels WHERE account_id = ?1 ORDER BY id LIMIT ?2",
            )?;
            let rows = st.query_map(params![id, MAX_DEVICE_LABELS as i64], |r| {
                Ok(DeviceLabel {
                    id: r.get(0)?,
                    account_id: AccountId(r.get(1)?),
                    name: r.get(2)?,
                    filter: r.get(3)?,
                    created_at: UnixMillis(r.get(4)?),
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn delete_device_label(&self, account: AccountId, id: u64) -> Result<bool> {
        let (Ok(account), Ok(id)) = (i64::try_from(account.0), i64::try_from(id)) else { return Ok(false) };
        self.write(1, move |c| {
            Ok(c.prepare_cached("DELETE FROM device_labels WHERE id = ?1 AND account_id = ?2")?
                .execute([id, account])?
                > 0)
        })
        .await
    }

    async fn device_columns(&self, account: AccountId) -> Result<Option<Vec<String>>> {
        let Ok(account) = i64::try_from(account.0) else { return Ok(None) };
        let stored: Option<String> = self
            .read(move |c| {
                Ok(c.prepare_cached("SELECT columns FROM device_columns WHERE account_id = ?1")?
                    .query_row([account], |r| r.get(0))
                    .optional()?)
            })
            .await?;
        stored
            .map(|s| serde_json::from_str(&s).map_err(|e| StoreError::Backend(format!("stored device columns: {e}"))))
            .transpose()
    }

    async fn set_device_columns(&self, account: AccountId, columns: Vec<String>) -> Result<()> {
        check_device_columns(&columns)?;
        let json = serde_json::to_string(&columns).map_err(|e| StoreError::Backend(e.to_string()))?;
        self.write(1, move |c| {
            check_exists("account", account.0, row_exists(c, "accounts", account.0)?)?;
            c.prepare_cached(
                "INSERT INTO device_columns (account_id, columns) VALUES (?1, ?2) \
                 ON CONFLICT (account_id) DO UPDATE SET columns = excluded.columns",
            )?
            .execute(params![account.0, json])?;
            Ok(())
        })
        .await
    }

    async fn device_summary(&self, id: DeviceId) -> Result<Option<DeviceSummary>> {
        let Ok(id) = i64::try_from(id.0) else { return Ok(None) };
        let found = self
            .read(move |c| {
                Ok(c.prepare_cached(&format!(
                    "SELECT {} FROM devices d JOIN enterprises e ON e.id = d.enterprise_id WHERE d.id = ?1",
                    crate::device_sql::SUMMARY_COLUMNS
                ))?
                .query_row([id], summary_from_row)
                .optional()?)
            })
            .await?;
        let Some(mut one) = found.map(|d| vec![d]) else { return Ok(None) };
        crate::groups::attach_groups(self, &mut one).await?;
        Ok(one.pop())
    }
}

impl EmbeddedStore {
    /// A page of the device list; the total of the matches only when `count` (else 0).
    async fn device_page(&self, query: DeviceQuery, page: DevicePageRequest, count: bool) -> Result<DevicePage> {
        let Some(cursor) = prepare_device_query(&query, &page)? else {
            return Ok(DevicePage { items: Vec::new(), next_cursor: None, total: 0 });
        };
        let out = self.read(move |c| {
            use crate::device_sql::{Dialect, count_sql, page_sql};
            let total: i64 = if count {
                let count = count_sql(&query, Dialect::Sqlite);
                c.prepare_cached(&count.sql)?
                    .query_row(rusqlite::params_from_iter(sqlite_args(count.args)), |r| r.get(0))?
            } else {
                0
            };
            let built = page_sql(&query, cursor.as_ref(), page.limit, Dialect::Sqlite);
            let mut st = c.prepare_cached(&built.sql)?;
            let items = st
                .query_map(rusqlite::params_from_iter(sqlite_args(built.args)), summary_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(finish_device_page(items, &query, page.limit, u64::try_from(total).unwrap_or(0)))
        });
        let mut out = out.await?;
        crate::groups::attach_groups(self, &mut out.items).await?;
        Ok(out)
    }
}
