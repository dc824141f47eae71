//! What the admin API tells the running engine ([`Control`]), the handle it tells it through
//! ([`AlarmHandle`]), and how the engine task applies it.

use fleetpulse_alarm_engine::AlarmEngine;
use fleetpulse_proto::{AccountId, AlarmTypeCode, ChannelId, DeviceId, EnterpriseId, TaskId, UnixMillis};
use fleetpulse_store::{EngineStateOwner, Store};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::dead::{DeadPayload, ReplayError, ReplayRequest};
use crate::load::reload;
use crate::windows::WindowShell;

/// What the admin API tells the engine (JSON when broadcast to the nodes of several).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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

impl Control {
    /// The one enterprise the control is about, if it names one (a strategy or window change);
    /// the others go to every engine (an engine without the alarm or task ignores it).
    pub fn enterprise(&self) -> Option<EnterpriseId> {
        match self {
            Control::StrategiesChanged(e) | Control::WindowsChanged(e) => Some(*e),
            Control::Acknowledged { .. }
            | Control::Cleared { .. }
            | Control::TaskStarted(_)
            | Control::ChannelStrategiesChanged(_) => None,
        }
    }
}

/// The API's handle on the running service.
#[derive(Debug, Clone)]
pub struct AlarmHandle {
    control: mpsc::Sender<Control>,
    replays: mpsc::Sender<ReplayRequest>,
}

impl AlarmHandle {
    /// The handle sending into the engine task's control and replay queues.
    pub(crate) fn new(control: mpsc::Sender<Control>, replays: mpsc::Sender<ReplayRequest>) -> AlarmHandle {
        AlarmHandle { control, replays }
    }

    /// Feeds a dead letter's copy (`DeadLetter::payload` of the stages `alarm_engine` and
    /// `alarm_effects`) back into the stage it failed at, and waits until it was carried out.
    ///
    /// # Errors
    ///
    /// The copy is not one this build can take back, the stage failed again, or the service
    /// has stopped.
    pub async fn replay(&self, payload: &serde_json::Value) -> Result<(), ReplayError> {
        let payload: DeadPayload =
            serde_json::from_value(payload.clone()).map_err(|e| ReplayError::NotReplayable(e.to_string()))?;
        let (done, answer) = oneshot::channel();
        self.replays.send(ReplayRequest { payload, done }).await.map_err(|_| ReplayError::Stopped)?;
        answer.await.map_err(|_| ReplayError::Stopped)?
    }

    /// Hands a replay on to this handle's engine (from a [`crate::FrontInbox`]).
    pub(crate) async fn forward_replay(&self, request: ReplayRequest) {
        if let Err(mpsc::error::SendError(request)) = self.replays.send(request).await {
            let _ = request.done.send(Err(ReplayError::Stopped));
        }
    }

    /// Tells the engine; waits while its queue is full. Logs (and otherwise ignores) a stopped
    /// service: the change is in the store and is read again at the next start.
    pub async fn send(&self, control: Control) {
        if self.control.send(control).await.is_err() {
            tracing::warn!(message = "Alarm service stopped; the change takes effect at the next start.");
        }
    }
}

/// Applies a control message (a bucket's engine takes only its own enterprises' changes).
pub(crate) async fn handle_control(
    engine: &mut AlarmEngine,
    windows: &mut WindowShell,
    store: &Store,
    owner: &EngineStateOwner,
    control: Control,
) {
    if let Some(enterprise) = control.enterprise()
        && !owner.covers(enterprise)
    {
        return;
    }
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
            for enterprise in enterprises.into_iter().filter(|e| owner.covers(*e)) {
                if let Err(error) = reload(store, engine, enterprise).await {
                    tracing::error!(message = "Cannot read changed alarm strategies.", %enterprise, %error);
                }
            }
        }
    }
}
