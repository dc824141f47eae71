//! Maintenance windows on SQLite ([`WindowStore`]): settings kept as JSON, one mark row per
//! alarm activation.

use async_trait::async_trait;
use fleetpulse_proto::{AlarmTypeCode, DeviceId, EnterpriseId, UnixMillis, WindowId};
use rusqlite::{OptionalExtension, Row, params};

use super::EmbeddedStore;
use crate::*;

fn window_from_row(r: &Row<'_>) -> rusqlite::Result<StoredWindow> {
    let settings: String = r.get(2)?;
    Ok(StoredWindow {
        id: WindowId(r.get(0)?),
        enterprise_id: EnterpriseId(r.get(1)?),
        settings: serde_json::from_str(&settings)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(e)))?,
        created_at: UnixMillis(r.get(3)?),
        updated_at: UnixMillis(r.get(4)?),
    })
}

fn mark_from_row(r: &Row<'_>) -> rusqlite::Result<WindowMark> {
    let state: String = r.get(6)?;
    Ok(WindowMark {
        device_id: DeviceId(r.get(0)?),
        code: AlarmTypeCode(r.get(1)?),
        first_at: UnixMillis(r.get(2)?),
        enterprise_id: EnterpriseId(r.get(3)?),
        window_id: WindowId(r.get(4)?),
        window_name: r.get(5)?,
        state: WindowMarkState::parse(&state).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(6, rusqlite::types::Type::Text, format!("state {state:?}").into())
        })?,
        at: UnixMillis(r.get(7)?),
        until: r.get::<_, Option<i64>>(8)?.map(UnixMillis),
    })
}

pub(super) fn settings_json(settings: &WindowSettings) -> Result<String> {
    serde_json::to_string(settings).map_err(|e| StoreError::Backend(format!("encoding window settings: {e}")))
}

const WINDOW_COLUMNS: &str = "id, enterprise_id, settings, created_at, updated_at";
const MARK_COLUMNS: &str = "device_id, code, first_at, enterprise_id, window_id, window_name, state, at, until";

#[async_trait]
impl WindowStore for EmbeddedStore {
    async fn create_window(
        &self,
        enterprise: EnterpriseId,
        settings: WindowSettings,
        at: UnixMillis,
    ) -> Result<StoredWindow> {
        let json = settings_json(&settings)?;
        self.write(1, move |c| {
            c.prepare_cached(
                "INSERT INTO maintenance_windows (enterprise_id, settings, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?3)",
            )?
            .execute(params![enterprise.0, json, at.0])?;
            Ok(StoredWindow {
                id: WindowId(c.last_insert_rowid() as u64),
                enterprise_id: enterprise,
                settings: settings.clone(),
                created_at: at,
                updated_at: at,
            })
        })
        .await
    }

    async fn window(&self, id: WindowId) -> Result<Option<StoredWindow>> {
        self.read(move |c| {
            Ok(c.prepare_cached(&format!("SELECT {WINDOW_COLUMNS} FROM maintenance_windows WHERE id = ?1"))?
                .query_row([id.0], window_from_row)
                .optional()?)
        })
        .await
    }

    async fn list_windows(&self, enterprise: EnterpriseId) -> Result<Vec<StoredWindow>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {WINDOW_COLUMNS} FROM maintenance_windows WHERE enterprise_id = ?1 ORDER BY id"
            ))?;
            let rows = st.query_map([enterprise.0], window_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn update_window(
        &self,
        id: WindowId,
        settings: WindowSettings,
        at: UnixMillis,
    ) -> Result<Option<StoredWindow>> {
        let json = settings_json(&settings)?;
        self.write(1, move |c| {
            c.prepare_cached("UPDATE maintenance_windows SET settings = ?2, updated_at = ?3 WHERE id = ?1")?
                .execute(params![id.0, json, at.0])?;
            Ok(c.prepare_cached(&format!("SELECT {WINDOW_COLUMNS} FROM maintenance_windows WHERE id = ?1"))?
                .query_row([id.0], window_from_row)
                .optional()?)
        })
        .await
    }

    async fn delete_window(&self, id: WindowId) -> Result<bool> {
        self.write(1, move |c| {
            Ok(c.prepare_cached("DELETE FROM maintenance_windows WHERE id = ?1")?.execute([id.0])? > 0)
        })
        .await
    }

    async fn record_window_mark(&self, mark: WindowMark) -> Result<()> {
        self.write(1, move |c| {
            c.prepare_cached(&format!(
                "INSERT OR REPLACE INTO alarm_window_marks ({MARK_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ))?
            .execute(params![
                mark.device_id.0,
                mark.code.0,
                mark.first_at.0,
                mark.enterprise_id.0,
                mark.window_id.0,
                mark.window_name,
                mark.state.as_str(),
                mark.at.0,
                mark.until.map(|u| u.0),
            ])?;
            Ok(())
        })
        .await
    }

    async fn window_marks(&self, activations: Vec<(DeviceId, AlarmTypeCode, UnixMillis)>) -> Result<Vec<WindowMark>> {
        if activations.len() > MAX_MARKS_READ {
            return Err(StoreError::InvalidInput(format!("at most {MAX_MARKS_READ} alarm activations at once")));
        }
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {MARK_COLUMNS} FROM alarm_window_marks WHERE device_id = ?1 AND code = ?2 AND first_at = ?3"
            ))?;
            let mut marks = Vec::new();
            for (device, code, first_at) in activations {
                if let Some(mark) = st.query_row(params![device.0, code.0, first_at.0], mark_from_row).optional()? {
                    marks.push(mark);
                }
            }
            Ok(marks)
        })
        .await
    }
}
