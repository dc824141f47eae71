//! Maintenance windows in the alarm service: stored windows in the engine's form (sites and
//! groups resolved to their devices, recurring times in the enterprise's zone), the scheduled
//! tasks windows are tied to watched for a running run, and the marks windows leave on alarms.
//!
//! - A window's sites and groups are resolved when its enterprise's windows are loaded (at
//!   start, when the API changes them) and again every [`RESOLVE_EVERY`], so a device that
//!   joined a site or group meanwhile is covered within that time. At most
//!   [`MAX_WINDOW_DEVICES`] devices per window (the rest are logged and not covered).
//! - A task *runs* from the moment its run is claimed (the scheduler tells the engine at once)
//!   until its newest run has no command in progress (queued, sent, accepted or running):
//!   checked every [`TASK_POLL`].

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use fleetpulse_alarm_engine::windows::MAX_WINDOW_DEVICES;
use fleetpulse_alarm_engine::{
    AlarmEngine, MaintenanceStep, MaintenanceWindow, WindowDevices, WindowEnd, WindowSchedule,
};
use fleetpulse_proto::{AlarmTypeCode, DeviceId, EnterpriseId, TaskId, UnixMillis, WindowId};
use fleetpulse_store::{
    DevicePageRequest, DeviceQuery, EngineStateOwner, MAX_DEVICE_PAGE, Page, RunState, Store, StoreError, StoredWindow,
    WindowMark, WindowMarkState, WindowScope, WindowTiming,
};
use jiff::tz::TimeZone;

/// How often sites and groups of windows are resolved again.
pub(crate) const RESOLVE_EVERY: Duration = Duration::from_secs(300);
/// How often the tasks windows are tied to are checked for a running run.
pub(crate) const TASK_POLL: Duration = Duration::from_secs(10);
/// Enterprises read per page at start.
const LOAD_PAGE: u32 = 1_000;

/// What the engine task keeps about windows: their names (for the marks) and which enterprises
/// have windows over sites or groups (resolved again every [`RESOLVE_EVERY`]).
#[derive(Debug, Default)]
pub(crate) struct WindowShell {
    names: HashMap<WindowId, String>,
    resolved: BTreeSet<EnterpriseId>,
}

impl WindowShell {
    /// Loads the windows of every enterprise `owner`'s engine covers into the engine.
    pub(crate) async fn load_all(
        &mut self,
        store: &Store,
        engine: &mut AlarmEngine,
        owner: &EngineStateOwner,
    ) -> Result<(), StoreError> {
        let mut page = Page::first(LOAD_PAGE);
        loop {
            let enterprises = store.entities.list_enterprises(page).await?;
            for e in enterprises.iter().filter(|e| owner.covers(e.id)) {
                self.reload(store, engine, e.id).await?;
            }
            match enterprises.last() {
                Some(last) if enterprises.len() == LOAD_PAGE as usize => {
                    page = Page { after: last.id.0, limit: LOAD_PAGE };
                }
                _ => break,
            }
        }
        self.poll_tasks(store, engine).await
    }

    /// Reads the enterprise's windows into the engine. A set the engine refuses (the API
    /// checks the same bounds) is logged and leaves the previous one in place.
    pub(crate) async fn reload(
        &mut self,
        store: &Store,
        engine: &mut AlarmEngine,
        enterprise: EnterpriseId,
    ) -> Result<(), StoreError> {
        let stored = store.entities.list_windows(enterprise).await?;
        let zone = match store.entities.enterprise(enterprise).await? {
            Some(e) => zone_of(&e.profile.time_zone, enterprise),
            None => TimeZone::UTC,
        };
        let mut windows = Vec::with_capacity(stored.len());
        let mut resolves = false;
        for w in &stored {
            resolves |= matches!(w.settings.scope, WindowScope::Sites { .. } | WindowScope::Groups { .. });
            windows.push(engine_window(store, w, &zone).await?);
        }
        let before = self.resolved.contains(&enterprise);
        if resolves {
            self.resolved.insert(enterprise);
        } else if before {
            self.resolved.remove(&enterprise);
        }
        match engine.set_windows(UnixMillis::now(), enterprise, windows) {
            Ok(()) => {
                for w in stored {
                    self.names.insert(w.id, w.settings.name);
                }
            }
            Err(error) => {
                tracing::error!(message = "Maintenance windows refused; the previous ones stay.", %enterprise, %error);
            }
        }
        // A window tied to a task that already runs is active at once.
        self.poll_tasks(store, engine).await
    }

    /// Resolves the sites and groups of every enterprise's windows again.
    pub(crate) async fn resolve_again(&mut self, store: &Store, engine: &mut AlarmEngine) -> Result<(), StoreError> {
        for enterprise in self.resolved.clone() {
            self.reload(store, engine, enterprise).await?;
        }
        Ok(())
    }

    /// Tells the engine, for every task a window is tied to, whether it runs now.
    pub(crate) async fn poll_tasks(&mut self, store: &Store, engine: &mut AlarmEngine) -> Result<(), StoreError> {
        for task in engine.window_tasks() {
            let running = task_running(store, task).await?;
            engine.handle_task_running(UnixMillis::now(), task, running);
        }
        Ok(())
    }

    /// The store's mark for a [`fleetpulse_alarm_engine::Action::Maintenance`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn mark(
        &self,
        device_id: DeviceId,
        enterprise_id: EnterpriseId,
        code: AlarmTypeCode,
        first_at: UnixMillis,
        at: UnixMillis,
        window_id: WindowId,
        step: MaintenanceStep,
    ) -> WindowMark {
        let (state, until) = match step {
            MaintenanceStep::Suppressed { until: WindowEnd::At(end) } => (WindowMarkState::Suppressed, Some(end)),
            MaintenanceStep::Suppressed { until: WindowEnd::TaskFinishes } => (WindowMarkState::Suppressed, None),
            MaintenanceStep::Released => (WindowMarkState::Released, None),
            MaintenanceStep::Dropped => (WindowMarkState::Dropped, None),
        };
        let window_name = self.names.get(&window_id).cloned().unwrap_or_else(|| format!("window {window_id}"));
        WindowMark { enterprise_id, device_id, code, first_at, window_id, window_name, state, at, until }
    }
}

/// The zone of an enterprise's profile (UTC when empty or unknown).
fn zone_of(name: &str, enterprise: EnterpriseId) -> TimeZone {
    if name.is_empty() {
        return TimeZone::UTC;
    }
    jiff::tz::db().get(name).unwrap_or_else(|_| {
        tracing::warn!(message = "Unknown time zone; maintenance windows run in UTC.", %enterprise, zone = name);
        TimeZone::UTC
    })
}

/// Whether the task's newest run is pending or has commands in progress.
async fn task_running(store: &Store, task: TaskId) -> Result<bool, StoreError> {
    let Some(run) = store.entities.task_runs(task, Page::first(1)).await?.into_iter().next() else {
        return Ok(false);
    };
    Ok(match run.state {
        RunState::Pending => true,
        RunState::Missed => false,
        RunState::Done => store.entities.task_run_totals(run.id).await?.in_progress > 0,
    })
}

/// The engine form of a stored window: its scope resolved to devices, its times in `zone`.
async fn engine_window(store: &Store, w: &StoredWindow, zone: &TimeZone) -> Result<MaintenanceWindow, StoreError> {
    let e = w.enterprise_id;
    let devices = match &w.settings.scope {
        WindowScope::Enterprise => WindowDevices::Enterprise,
        WindowScope::Devices { ids } => WindowDevices::Listed(ids.iter().copied().take(MAX_WINDOW_DEVICES).collect()),
        WindowScope::Sites { ids } => {
            let query = DeviceQuery { enterprises: Some(vec![e]), sites: Some(ids.clone()), ..DeviceQuery::default() };
            WindowDevices::Listed(devices_of(store, w.id, query).await?)
        }
        WindowScope::Groups { ids } => {
            let mut all = BTreeSet::new();
            for &group in ids {
                let query = DeviceQuery { enterprises: Some(vec![e]), group: Some(group), ..DeviceQuery::default() };
                all.extend(devices_of(store, w.id, query).await?);
            }
            WindowDevices::Listed(all.into_iter().take(MAX_WINDOW_DEVICES).collect())
        }
    };
    let schedule = match &w.settings.timing {
        WindowTiming::Once { start, end } => WindowSchedule::Once { start: *start, end: *end },
        WindowTiming::Recurring { weekdays, hour, minute, duration_minutes } => WindowSchedule::Recurring {
            weekdays: weekdays.clone(),
            hour: *hour,
            minute: *minute,
            duration_ms: u64::from(*duration_minutes) * 60_000,
            zone: zone.clone(),
        },
        WindowTiming::WhileTask { task_id } => WindowSchedule::WhileTask(*task_id),
    };
    Ok(MaintenanceWindow {
        id: w.id,
        enterprise_id: e,
        enabled: w.settings.enabled,
        devices,
        alarm_types: w.settings.alarm_types.clone(),
        schedule,
    })
}

/// The devices `query` matches, at most [`MAX_WINDOW_DEVICES`].
async fn devices_of(store: &Store, window: WindowId, query: DeviceQuery) -> Result<BTreeSet<DeviceId>, StoreError> {
    let mut devices = BTreeSet::new();
    let mut cursor = None;
    loop {
        let page =
            store.entities.scan_devices(query.clone(), DevicePageRequest { cursor, limit: MAX_DEVICE_PAGE }).await?;
        for d in page.items {
            if devices.len() == MAX_WINDOW_DEVICES {
                tracing::warn!(message = "A maintenance window covers too many devices; the rest are not covered.", %window, max = MAX_WINDOW_DEVICES);
                return Ok(devices);
            }
            devices.insert(d.device.id);
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(devices),
        }
    }
}
