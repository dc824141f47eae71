//! The engine's side of maintenance windows (see [`crate::windows`]): configuring them, task
//! starts and ends, holding back an alarm's firing notification and letting it go at the end.

use fleetpulse_proto::{AlarmTypeCode, DeviceId, EnterpriseId, TaskId, UnixMillis};

use super::{Action, AlarmEngine};
use crate::EngineError;
use crate::notify::{AlarmRef, GroupKey};
use crate::windows::{Hold, MaintenanceStep, MaintenanceWindow};

impl AlarmEngine {
    /// Replaces the maintenance windows of `enterprise` (an empty list removes them).
    ///
    /// Alarms held by a window that no longer holds them at `now` (deleted, disabled, narrowed,
    /// moved) are let go of at once, as when a window ends; those another window holds stay held.
    ///
    /// # Errors
    ///
    /// A window out of its bounds or of another enterprise, or too many windows; nothing changes.
    pub fn set_windows(
        &mut self,
        now: UnixMillis,
        enterprise: EnterpriseId,
        windows: Vec<MaintenanceWindow>,
    ) -> Result<(), EngineError> {
        let now = self.begin(now);
        let affected = self.windows.replace(enterprise, windows)?;
        for (device, code, hold) in affected {
            self.let_go(now, device, code, hold);
        }
        self.handle_timeout(now);
        Ok(())
    }

    /// A scheduled task started (`running`) or finished: windows tied to it are active while it
    /// runs; when it finishes, the alarms they held are let go of. Tasks no window is tied to
    /// are ignored (so the shell tells again after [`AlarmEngine::set_windows`]).
    pub fn handle_task_running(&mut self, now: UnixMillis, task: TaskId, running: bool) {
        let now = self.begin(now);
        for (device, code, hold) in self.windows.task_running(task, running) {
            self.let_go(now, device, code, hold);
        }
        self.handle_timeout(now);
    }

    /// The scheduled tasks windows are tied to (the shell tells when each runs).
    pub fn window_tasks(&self) -> Vec<TaskId> {
        self.windows.tied_task_ids()
    }

    /// Alarms whose firing notification a maintenance window holds back.
    pub fn held_alarms(&self) -> usize {
        self.windows.held()
    }

    /// Queues the firing notification of a new activation in `groups`, unless an active window
    /// selects it at its start: then it is held until the window ends.
    pub(super) fn fire_or_hold(
        &mut self,
        at: UnixMillis,
        enterprise: EnterpriseId,
        alarm: AlarmRef,
        groups: &[GroupKey],
    ) {
        // An alarm no strategy routes notifies nobody: there is nothing to hold back.
        if !groups.is_empty()
            && let Some((window, end)) = self.windows.suppressing(at, enterprise, alarm.device, alarm.code)
        {
            let hold = Hold { enterprise, activation: alarm.activation, window, end };
            self.hold(at, alarm.device, alarm.code, hold);
            return;
        }
        self.queue_firing(alarm, groups);
    }

    /// Runs the window ends due at `now`.
    pub(super) fn release_ended_windows(&mut self, now: UnixMillis) {
        for (device, code, hold) in self.windows.take_ended(now) {
            self.let_go(now, device, code, hold);
        }
    }

    fn hold(&mut self, at: UnixMillis, device: DeviceId, code: AlarmTypeCode, hold: Hold) {
        self.windows.hold(device, code, hold);
        self.actions.push_back(Action::Maintenance {
            device_id: device,
            enterprise_id: hold.enterprise,
            code,
            activation: hold.activation,
            at,
            window: hold.window,
            step: MaintenanceStep::Suppressed { until: hold.end },
        });
    }

    /// A window stopped holding the alarm at `now`: another active window takes it over, or
    /// its firing notification is planned (not when it was acknowledged meanwhile).
    fn let_go(&mut self, now: UnixMillis, device: DeviceId, code: AlarmTypeCode, hold: Hold) {
        let Some(alarm) = self.alarms.get(&(device, code)) else { return };
        if alarm.activation != hold.activation {
            return;
        }
        let acknowledged = alarm.acknowledged.is_some();
        let groups: Vec<GroupKey> = alarm.routes.iter().filter(|r| !r.sent).map(|r| r.group).collect();
        if let Some((window, end)) = self.windows.suppressing(now, hold.enterprise, device, code) {
            self.hold(now, device, code, Hold { window, end, ..hold });
            return;
        }
        let step = if acknowledged { MaintenanceStep::Dropped } else { MaintenanceStep::Released };
        self.actions.push_back(Action::Maintenance {
            device_id: device,
            enterprise_id: hold.enterprise,
            code,
            activation: hold.activation,
            at: now,
            window: hold.window,
            step,
        });
        if step == MaintenanceStep::Released {
            self.queue_firing(AlarmRef { device, code, activation: hold.activation }, &groups);
        }
    }
}

#[cfg(test)]
mod tests;
