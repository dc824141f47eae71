//! Alarm strategies (`StrategyStore`, ALM-3, ALM-4): per enterprise, the settings the alarm
//! engine evaluates (threshold rules, notification receivers and repeats).

use async_trait::async_trait;
use fleetpulse_proto::{AccountId, AlarmTypeCode, EnterpriseId, Severity, StrategyId, UnixMillis};
use serde::{Deserialize, Serialize};

use crate::Result;

/// Alarm strategies of enterprises.
#[async_trait]
pub trait StrategyStore: Send + Sync + 'static {
    /// Creates an alarm strategy of the enterprise.
    async fn create_strategy(
        &self,
        enterprise: EnterpriseId,
        settings: StrategySettings,
        at: UnixMillis,
    ) -> Result<StoredStrategy>;
    /// The strategy with this id.
    async fn strategy(&self, id: StrategyId) -> Result<Option<StoredStrategy>>;
    /// The enterprise's strategies, ordered by id.
    async fn list_strategies(&self, enterprise: EnterpriseId) -> Result<Vec<StoredStrategy>>;
    /// Replaces a strategy's settings; `None` if it does not exist.
    async fn update_strategy(
        &self,
        id: StrategyId,
        settings: StrategySettings,
        at: UnixMillis,
    ) -> Result<Option<StoredStrategy>>;
    /// Deletes a strategy; false if it did not exist.
    async fn delete_strategy(&self, id: StrategyId) -> Result<bool>;
}

/// The metric of a threshold rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdMetric {
    /// CPU usage.
    Cpu,
    /// Memory usage (used / total).
    Memory,
}

/// A threshold rule as stored: `metric` above `above_centi_pct` for `for_ms` (ALM-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StoredThreshold {
    /// The metric.
    pub metric: ThresholdMetric,
    /// Limit in hundredths of a percent.
    pub above_centi_pct: u16,
    /// How long the metric must stay above the limit.
    pub for_ms: u64,
}

/// Who a strategy notifies (ALM-3): a plain address, or an account or sub-account, which is
/// notified at its email of the moment the notification is queued (not of when the strategy was
/// saved).
///
/// Stored and shown as `{"email": "ops@acme.test"}` or `{"account": 42}`. Reading also takes a
/// plain string as an address: the only form before accounts could be receivers, so settings
/// stored then read unchanged and need no migration.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StrategyReceiver {
    /// A plain email address.
    Email(String),
    /// A portal account or sub-account of the strategy's owner.
    Account(AccountId),
}

impl StrategyReceiver {
    /// The account, for an account receiver.
    pub fn account(&self) -> Option<AccountId> {
        match self {
            StrategyReceiver::Account(id) => Some(*id),
            StrategyReceiver::Email(_) => None,
        }
    }
}

impl<'de> Deserialize<'de> for StrategyReceiver {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        /// The tagged form.
        #[derive(Deserialize)]
        #[serde(rename_all = "snake_case")]
        enum Tagged {
            Email(String),
            Account(AccountId),
        }
        /// Either form.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Plain(String),
            Tagged(Tagged),
        }
        Ok(match Form::deserialize(d)? {
            Form::Plain(address) | Form::Tagged(Tagged::Email(address)) => StrategyReceiver::Email(address),
            Form::Tagged(Tagged::Account(id)) => StrategyReceiver::Account(id),
        })
    }
}

/// An alarm strategy's settings (ALM-3), as the API edits them and the alarm engine reads them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StrategySettings {
    /// Display name.
    pub name: String,
    /// Disabled strategies notify nobody.
    pub enabled: bool,
    /// Selected alarm types (empty = all).
    pub alarm_types: Vec<AlarmTypeCode>,
    /// Selected severities (empty = all).
    pub severities: Vec<Severity>,
    /// Who is notified: addresses and accounts.
    pub receivers: Vec<StrategyReceiver>,
    /// Wait before the first notification of a group.
    pub group_wait_ms: u64,
    /// Wait between notifications of an open group.
    pub group_interval_ms: u64,
    /// Reminder interval for alarms still active and unacknowledged.
    pub repeat_interval_ms: u64,
    /// CPU and memory threshold rules.
    pub thresholds: Vec<StoredThreshold>,
    /// Site incidents (issue 18 item 3): many devices of one site raising the alarms this
    /// strategy selects within a short window are notified as one incident; absent: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site_incident: Option<StoredSiteIncident>,
}

/// A strategy's site-incident thresholds, as stored and edited (see the alarm engine's
/// `incidents` module for what they mean).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StoredSiteIncident {
    /// Fewest distinct devices of one site (at least 2).
    pub min_devices: u32,
    /// Fewest devices as a percentage of the site's devices (0–100).
    pub min_fraction_pct: u8,
    /// How long each new alarm is held and counted, in seconds (1–3600).
    pub window_s: u32,
    /// Percentage of the incident's devices back at which it resolves (1–100).
    pub resolve_fraction_pct: u8,
}

/// A stored alarm strategy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct StoredStrategy {
    /// Identifier.
    pub id: StrategyId,
    /// Owning enterprise.
    pub enterprise_id: EnterpriseId,
    /// Settings.
    pub settings: StrategySettings,
    /// Creation time.
    pub created_at: UnixMillis,
    /// Last change.
    pub updated_at: UnixMillis,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receivers_read_both_forms_and_are_written_tagged() {
        let read: Vec<StrategyReceiver> =
            serde_json::from_str(r#"["old@example.com", {"email": "new@example.com"}, {"account": 42}]"#)
                .expect("valid receivers");
        assert_eq!(
            read,
            [
                StrategyReceiver::Email("old@example.com".into()),
                StrategyReceiver::Email("new@example.com".into()),
                StrategyReceiver::Account(AccountId(42)),
            ]
        );
        assert_eq!(
            serde_json::to_string(&read).expect("serializes"),
            r#"[{"email":"old@example.com"},{"email":"new@example.com"},{"account":42}]"#
        );
        for bad in [r#"{"phone": "1"}"#, r#"{"account": "x"}"#, "7", r#"{"account": 1, "email": "a@b.c"}"#] {
            assert!(serde_json::from_str::<StrategyReceiver>(bad).is_err(), "{bad}");
        }
    }
}
