//! What the admin API tells the running engine ([`Control`]), the handle it tells it through
//! ([`AlarmHandle`]), and how the engine task applies it.

use fleetpulse_alarm_engine::AlarmEngine;
use fleetpulse_proto::{AccountId, AlarmTypeCode, ChannelId, DeviceId, EnterpriseId, TaskId, UnixMillis};
use fleetpulse_store::Store;
use tokio::sync::mpsc;

use crate::load::reload;
use crate::windows::WindowShell;

/// What the admin API tells the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// An account acknowledged an active alarm (already stored): stop its reminders.
    Acknowledged {
        /// The device.
        device_id: DeviceId,
        /// The alarm type.
        code: AlarmTypeCode,
        /// Who.
        by: AccountId,
        /// When.
        at: UnixMillis,
    },
    /// An account cleared an active alarm by hand (already stored): send its resolution.
    Cleared {
        /// The device.
        device_id: DeviceId,
        /// The alarm type.
        code: AlarmTypeCode,
        /// Who.
        by: AccountId,
        /// When.
        at: UnixMillis,
    },
    /// The enterprise's strategies changed in the store: reload them.
    StrategiesChanged(EnterpriseId),
    /// The enterprise's maintenance windows changed in the store: reload them.
    WindowsChanged(EnterpriseId),
    /// A scheduled task's run was claimed: windows tied to the task are active from now on
    /// (until the run has no command in progress).
    TaskStarted(TaskId),
    /// A channel's own strategies changed in the store: reload those of every enterprise below it.
    ChannelStrategiesChanged(ChannelId),
}

/// The API's handle on the running service.
#[derive(Debug, Clone)]
pub struct AlarmHandle {
    control: mpsc::Sender<Control>,
}

impl AlarmHandle {
    /// The handle sending into the engine task's control queue.
    pub(crate) fn new(control: mpsc::Sender<Control>) -> AlarmHandle {
        AlarmHandle { control }
    }

    /// Tells the engine; waits while its queue is full. Logs (and otherwise ignores) a stopped
    /// service: the change is in the store and is read again at the next start.
    pub async fn send(&self, control: Control) {
        if self.control.send(control).await.is_err() {
            tracing::warn!(message = "Alarm service stopped; the change takes effect at the next start.");
        }
    }
}

/// Applies a control message.
pub(crate) async fn handle_control(
    engine: &mut AlarmEngine,
    windows: &mut WindowShell,
    store: &Store,
    control: Control,
) {
    // An alarm that is not active in the engine (cleared meanwhile, or a race with the device)
    // has nothing left to notify: the API already answered from the store.
    match control {
        Control::Acknowledged { device_id, code, by, at } => {
            let _ = engine.handle_acknowledge(at, device_id, code, by);
        }
        Control::Cleared { device_id, code, by, at } => {
            let _ = engine.handle_manual_clear(at, device_id, code, by);
        }
        Control::StrategiesChanged(enterprise) => {
            // A failed read leaves the previous strategies; the next change or start reads again.
            if let Err(error) = reload(store, engine, enterprise).await {
                tracing::error!(message = "Cannot read changed alarm strategies.", %enterprise, %error);
            }
        }
        Control::WindowsChanged(enterprise) => {
            if let Err(error) = windows.reload(store, engine, enterprise).await {
                tracing::error!(message = "Cannot read changed maintenance windows.", %enterprise, %error);
            }
        }
        Control::TaskStarted(task) => engine.handle_task_running(UnixMillis::now(), task, true),
        Control::ChannelStrategiesChanged(channel) => {
            let enterprises = match crate::inherited::enterprises_below(store, channel).await {
                Ok(enterprises) => enterprises,
                Err(error) => {
                    tracing::error!(message = "Cannot read the enterprises below a channel.", %channel, %error);
                    return;
                }
            };
            for enterprise in enterprises {
                if let Err(error) = reload(store, engine, enterprise).await {
                    tracing::error!(message = "Cannot read changed alarm strategies.", %enterprise, %error);
                }
            }
        }
    }
}
