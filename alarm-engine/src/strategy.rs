//! Alarm strategies (ALM-3): which alarms of an enterprise reach which receivers, and how often.
//!
//! A strategy is plain configuration; [`crate::AlarmEngine::set_strategies`] validates it once and
//! keeps a compiled form, so evaluating an alarm never re-checks it.

use fleetpulse_proto::{AccountId, AlarmTypeCode, EnterpriseId, Severity};

use crate::incidents::SiteIncidentRule;
use crate::threshold::ThresholdRule;

/// Most strategies one enterprise may have.
pub const MAX_STRATEGIES_PER_ENTERPRISE: usize = 64;
/// Most receivers one strategy may have.
pub const MAX_RECEIVERS_PER_STRATEGY: usize = 100;

pub use fleetpulse_proto::StrategyId;

/// Who a notification goes to.
///
/// The engine plans per receiver as configured: an account stays an account here (its
/// notifications, groups and idempotency keys do not change when its email does); the alarm
/// service resolves it to the account's current address when it queues the email.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Receiver {
    /// A plain email address.
    Email(String),
    /// A portal account or sub-account (ALM-3), notified at its email of the moment.
    Account(AccountId),
}

impl Receiver {
    /// The receiver as one string: the address itself, or `account:<id>` for an account (no
    /// `@`, so never taken for an address). [`Receiver::from_key`] reads it back.
    pub fn key(&self) -> String {
        match self {
            Receiver::Email(address) => address.clone(),
            Receiver::Account(id) => format!("account:{}", id.0),
        }
    }

    /// Inverse of [`Receiver::key`].
    pub fn from_key(key: &str) -> Receiver {
        match key.strip_prefix("account:").and_then(|id| id.parse::<u64>().ok()) {
            Some(id) => Receiver::Account(AccountId(id)),
            None => Receiver::Email(key.to_owned()),
        }
    }
}

/// When notifications go out, with Alertmanager's meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotifySettings {
    /// How long the first alarm of a new group waits for others before the group is sent.
    /// Zero means no grouping: every alarm, resolution and reminder is sent on its own, at once.
    pub group_wait_ms: u64,
    /// How long after a group's last notification newly firing or resolved alarms of that group
    /// are sent. Must be positive.
    pub group_interval_ms: u64,
    /// How often a still active, unacknowledged alarm is sent again. Must be positive.
    pub repeat_interval_ms: u64,
}

impl Default for NotifySettings {
    /// 10 s group wait, 60 s group interval, 4 h repeat interval.
    fn default() -> Self {
        NotifySettings { group_wait_ms: 10_000, group_interval_ms: 60_000, repeat_interval_ms: 4 * 3_600_000 }
    }
}

/// An enterprise's alarm strategy (ALM-3, "Enterprise Alarm Settings" in the guides).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlarmStrategy {
    /// Its id.
    pub id: StrategyId,
    /// The enterprise it belongs to.
    pub enterprise_id: EnterpriseId,
    /// Name shown in the portal.
    pub name: String,
    /// A disabled strategy notifies nobody (its threshold rules do not apply either).
    pub enabled: bool,
    /// Alarm types it selects; empty selects every type.
    pub alarm_types: Vec<AlarmTypeCode>,
    /// Severities it selects; empty selects every severity.
    pub severities: Vec<Severity>,
    /// Who is notified.
    pub receivers: Vec<Receiver>,
    /// When notifications go out.
    pub notify: NotifySettings,
    /// Threshold rules on resource samples (ALM-4).
    pub thresholds: Vec<ThresholdRule>,
    /// Site incidents: alarms it selects on many devices of one site within a short window are
    /// notified as one incident (issue 18 item 3, [`crate::incidents`]); `None`: off.
    pub site_incident: Option<SiteIncidentRule>,
}

impl AlarmStrategy {
    /// Whether this strategy notifies about alarms of `code` with `severity`.
    ///
    /// A strategy selects an alarm when it is enabled and both its type list and its severity list
    /// are empty or contain the alarm's. Derived threshold alarms (401, 402) are selected the same
    /// way: a strategy's own threshold rules do not select them by themselves.
    pub fn selects(&self, code: AlarmTypeCode, severity: Severity) -> bool {
        self.enabled
            && (self.alarm_types.is_empty() || self.alarm_types.contains(&code))
            && (self.severities.is_empty() || self.severities.contains(&severity))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(enabled: bool, types: &[u16], severities: &[Severity], code: u16, severity: Severity, want: bool) {
        let strategy = AlarmStrategy {
            id: StrategyId(1),
            enterprise_id: EnterpriseId(1),
            name: "s".into(),
            enabled,
            alarm_types: types.iter().map(|&c| AlarmTypeCode(c)).collect(),
            severities: severities.to_vec(),
            receivers: vec![],
            notify: NotifySettings::default(),
            thresholds: vec![],
            site_incident: None,
        };
        assert_eq!(strategy.selects(AlarmTypeCode(code), severity), want, "{types:?} {severities:?} {code}");
    }

    #[test]
    fn receiver_keys_round_trip() {
        for r in [Receiver::Email("ops@example.com".into()), Receiver::Account(AccountId(42))] {
            assert_eq!(Receiver::from_key(&r.key()), r);
        }
        assert_eq!(Receiver::Account(AccountId(42)).key(), "account:42");
        assert_eq!(Receiver::from_key("account:x@example.com"), Receiver::Email("account:x@example.com".into()));
    }

    #[test]
    fn selection() {
        use Severity::*;
        check(true, &[], &[], 109, Critical, true);
        check(false, &[], &[], 109, Critical, false);
        check(true, &[109], &[], 109, Critical, true);
        check(true, &[105], &[], 109, Critical, false);
        check(true, &[], &[Minor], 109, Critical, false);
        check(true, &[], &[Minor, Critical], 109, Critical, true);
        check(true, &[109], &[Minor], 109, Critical, false);
    }
}
