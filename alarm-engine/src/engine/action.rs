//! What the engine tells its shell: the [`Action`]s it decided and an alarm's lifecycle
//! [`Transition`]s.

use fleetpulse_proto::domain::AlarmChange;
use fleetpulse_proto::{AccountId, AlarmTypeCode, DeviceId, EnterpriseId, UnixMillis, WindowId};

use crate::incidents::{IncidentCounts, IncidentKey, IncidentStep};
use crate::notify::Notification;
use crate::windows::MaintenanceStep;

/// Something the engine decided; the shells carry it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Apply this change to the (device, type) alarm record (what [`crate::evaluate`] returns).
    Record(AlarmChange),
    /// An active alarm was acknowledged or cleared: who and when (ALM-2). A clear is preceded by
    /// the matching [`Action::Record`].
    Lifecycle {
        /// The device.
        device_id: DeviceId,
        /// Its enterprise.
        enterprise_id: EnterpriseId,
        /// The alarm type.
        code: AlarmTypeCode,
        /// When.
        at: UnixMillis,
        /// What happened.
        transition: Transition,
    },
    /// Send this notification (through the durable outbox, keyed by its key).
    Notify(Notification),
    /// A maintenance window held back an alarm's notification, or let go of it (issue 18).
    Maintenance {
        /// The device.
        device_id: DeviceId,
        /// Its enterprise.
        enterprise_id: EnterpriseId,
        /// The alarm type.
        code: AlarmTypeCode,
        /// Start of the alarm's activation.
        activation: UnixMillis,
        /// When.
        at: UnixMillis,
        /// The window.
        window: WindowId,
        /// What it did.
        step: MaintenanceStep,
    },
    /// A site incident opened, changed or resolved (issue 18 item 3).
    Incident {
        /// The incident.
        incident: IncidentKey,
        /// When.
        at: UnixMillis,
        /// What happened.
        step: IncidentStep,
        /// Its counts after the step.
        counts: IncidentCounts,
    },
}

/// A lifecycle step of an active alarm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// An account acknowledged it: no more reminders.
    Acknowledged {
        /// Who.
        by: AccountId,
    },
    /// It cleared.
    Cleared {
        /// The account that cleared it by hand; `None` when the device recovered.
        by: Option<AccountId>,
    },
}
