//! The alarm-record lifecycle (ALM-1, ALM-2): the one rule that both store backends and the API
//! apply to an aggregated alarm record when a change arrives. Sans-I/O.
//!
//! | change | no record | active | acknowledged | cleared |
//! | --- | --- | --- | --- | --- |
//! | raise | new record: count 1, first = latest = at, active | count + 1, latest = max, new description | same, stays acknowledged | count + 1, latest = max, new description, active again: the acknowledgement and the clear are forgotten |
//! | acknowledge | unchanged (missing) | acknowledged at, by | unchanged (not active) | unchanged (not active) |
//! | clear (recovery, device) | unchanged (missing) | cleared at, no account | cleared at, no account | unchanged (already cleared) |
//! | manual clear | unchanged (missing) | cleared at, by | cleared at, by | unchanged (already cleared) |
//!
//! A change that leaves the record as it is says why ([`Unchanged`]): the store then writes
//! nothing, and the API answers 409 with that reason.

use fleetpulse_proto::domain::AlarmChangeKind;
use fleetpulse_proto::{AccountId, UnixMillis};

use crate::{AlarmRecord, AlarmStatus};

/// The fields of an aggregated alarm record that its lifecycle changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlarmLifecycle {
    /// First occurrence.
    pub first_at: UnixMillis,
    /// Latest occurrence.
    pub latest_at: UnixMillis,
    /// Number of occurrences.
    pub count: u64,
    /// Latest description.
    pub description: String,
    /// Active, acknowledged or cleared.
    pub status: AlarmStatus,
    /// When it was cleared.
    pub cleared_at: Option<UnixMillis>,
    /// Who cleared it by hand (None for recovery and device clears).
    pub cleared_by: Option<AccountId>,
    /// When it was acknowledged (in its current activation).
    pub acknowledged_at: Option<UnixMillis>,
    /// Who acknowledged it.
    pub acknowledged_by: Option<AccountId>,
}

/// Why a change leaves an alarm record as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unchanged {
    /// There is no record to acknowledge or clear.
    #[error("there is no such alarm")]
    Missing,
    /// Only an active alarm can be acknowledged.
    #[error("the alarm is {}, not active", .0.as_str())]
    NotActive(AlarmStatus),
    /// A cleared alarm cannot be cleared again.
    #[error("the alarm is already cleared")]
    AlreadyCleared,
}

impl AlarmLifecycle {
    /// The record after `kind` happened `at`, or why the change leaves it as it is.
    pub fn apply(
        current: Option<&AlarmLifecycle>,
        at: UnixMillis,
        kind: &AlarmChangeKind,
    ) -> Result<AlarmLifecycle, Unchanged> {
        match kind {
            AlarmChangeKind::Raise { description } => Ok(match current {
                None => AlarmLifecycle {
                    first_at: at,
                    latest_at: at,
                    count: 1,
                    description: description.clone(),
                    status: AlarmStatus::Active,
                    cleared_at: None,
                    cleared_by: None,
                    acknowledged_at: None,
                    acknowledged_by: None,
                },
                // A raise of a cleared record starts a new activation: not acknowledged.
                Some(s) if s.status == AlarmStatus::Cleared => AlarmLifecycle {
                    latest_at: s.latest_at.max(at),
                    count: s.count.saturating_add(1),
                    description: description.clone(),
                    status: AlarmStatus::Active,
                    cleared_at: None,
                    cleared_by: None,
                    acknowledged_at: None,
                    acknowledged_by: None,
                    first_at: s.first_at,
                },
                // A raise of an open record keeps its acknowledgement.
                Some(s) => AlarmLifecycle {
                    latest_at: s.latest_at.max(at),
                    count: s.count.saturating_add(1),
                    description: description.clone(),
                    ..s.clone()
                },
            }),
            AlarmChangeKind::Acknowledge { by } => match current {
                None => Err(Unchanged::Missing),
                Some(s) if s.status != AlarmStatus::Active => Err(Unchanged::NotActive(s.status)),
                Some(s) => Ok(AlarmLifecycle {
                    status: AlarmStatus::Acknowledged,
                    acknowledged_at: Some(at),
                    acknowledged_by: Some(*by),
                    ..s.clone()
                }),
            },
            AlarmChangeKind::Clear | AlarmChangeKind::ManualClear { .. } => match current {
                None => Err(Unchanged::Missing),
                Some(s) if s.status == AlarmStatus::Cleared => Err(Unchanged::AlreadyCleared),
                Some(s) => Ok(AlarmLifecycle {
                    status: AlarmStatus::Cleared,
                    cleared_at: Some(at),
                    cleared_by: match kind {
                        AlarmChangeKind::ManualClear { by } => Some(*by),
                        _ => None,
                    },
                    ..s.clone()
                }),
            },
        }
    }
}

impl AlarmStatus {
    /// The status named `name` (as [`AlarmStatus::as_str`] writes it).
    pub fn parse(name: &str) -> Option<AlarmStatus> {
        match name {
            "active" => Some(AlarmStatus::Active),
            "acknowledged" => Some(AlarmStatus::Acknowledged),
            "cleared" => Some(AlarmStatus::Cleared),
            _ => None,
        }
    }
}

impl AlarmRecord {
    /// The record's lifecycle fields.
    pub fn lifecycle(&self) -> AlarmLifecycle {
        AlarmLifecycle {
            first_at: self.first_at,
            latest_at: self.latest_at,
            count: self.count,
            description: self.description.clone(),
            status: self.status,
            cleared_at: self.cleared_at,
            cleared_by: self.cleared_by,
            acknowledged_at: self.acknowledged_at,
            acknowledged_by: self.acknowledged_by,
        }
    }

    /// The record with its lifecycle fields replaced by `l`.
    pub fn with_lifecycle(self, l: AlarmLifecycle) -> AlarmRecord {
        AlarmRecord {
            first_at: l.first_at,
            latest_at: l.latest_at,
            count: l.count,
            description: l.description,
            status: l.status,
            cleared_at: l.cleared_at,
            cleared_by: l.cleared_by,
            acknowledged_at: l.acknowledged_at,
            acknowledged_by: l.acknowledged_by,
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: AccountId = AccountId(7);

    fn raise(description: &str) -> AlarmChangeKind {
        AlarmChangeKind::Raise { description: description.into() }
    }

    /// Applies `changes` (at times 10, 20, 30, ...) from no record and renders every step as one
    /// line: the state after it, or why it changed nothing.
    fn check(changes: &[AlarmChangeKind], expect: &[&str]) {
        let mut state: Option<AlarmLifecycle> = None;
        let mut got = Vec::new();
        for (i, kind) in changes.iter().enumerate() {
            let at = UnixMillis(10 * (i as i64 + 1));
            match AlarmLifecycle::apply(state.as_ref(), at, kind) {
                Ok(next) => {
                    got.push(render(&next));
                    state = Some(next);
                }
                Err(why) => got.push(format!("unchanged: {why}")),
            }
        }
        assert_eq!(got, expect);
    }

    fn render(s: &AlarmLifecycle) -> String {
        let opt = |t: Option<UnixMillis>| t.map_or("-".to_owned(), |t| t.0.to_string());
        let who = |a: Option<AccountId>| a.map_or("-".to_owned(), |a| a.0.to_string());
        format!(
            "{} count={} first={} latest={} desc={} ack={}/{} clear={}/{}",
            s.status.as_str(),
            s.count,
            s.first_at.0,
            s.latest_at.0,
            s.description,
            opt(s.acknowledged_at),
            who(s.acknowledged_by),
            opt(s.cleared_at),
            who(s.cleared_by)
        )
    }

    #[test]
    fn raises_aggregate_and_acknowledgement_survives_a_raise_while_open() {
        check(
            &[raise("a"), raise("b"), AlarmChangeKind::Acknowledge { by: ALICE }, raise("c")],
            &[
                "active count=1 first=10 latest=10 desc=a ack=-/- clear=-/-",
                "active count=2 first=10 latest=20 desc=b ack=-/- clear=-/-",
                "acknowledged count=2 first=10 latest=20 desc=b ack=30/7 clear=-/-",
                "acknowledged count=3 first=10 latest=40 desc=c ack=30/7 clear=-/-",
            ],
        );
    }

    #[test]
    fn a_raise_after_a_clear_starts_a_new_activation() {
        check(
            &[raise("a"), AlarmChangeKind::Acknowledge { by: ALICE }, AlarmChangeKind::Clear, raise("b")],
            &[
                "active count=1 first=10 latest=10 desc=a ack=-/- clear=-/-",
                "acknowledged count=1 first=10 latest=10 desc=a ack=20/7 clear=-/-",
                "cleared count=1 first=10 latest=10 desc=a ack=20/7 clear=30/-",
                "active count=2 first=10 latest=40 desc=b ack=-/- clear=-/-",
            ],
        );
    }

    #[test]
    fn refused_changes_say_why() {
        check(
            &[
                AlarmChangeKind::Acknowledge { by: ALICE },
                AlarmChangeKind::Clear,
                AlarmChangeKind::ManualClear { by: ALICE },
                raise("a"),
                AlarmChangeKind::ManualClear { by: ALICE },
                AlarmChangeKind::Acknowledge { by: ALICE },
                AlarmChangeKind::Clear,
            ],
            &[
                "unchanged: there is no such alarm",
                "unchanged: there is no such alarm",
                "unchanged: there is no such alarm",
                "active count=1 first=40 latest=40 desc=a ack=-/- clear=-/-",
                "cleared count=1 first=40 latest=40 desc=a ack=-/- clear=50/7",
                "unchanged: the alarm is cleared, not active",
                "unchanged: the alarm is already cleared",
            ],
        );
    }

    #[test]
    fn acknowledging_twice_is_refused_and_clearing_an_acknowledged_alarm_is_not() {
        check(
            &[
                raise("a"),
                AlarmChangeKind::Acknowledge { by: ALICE },
                AlarmChangeKind::Acknowledge { by: AccountId(8) },
                AlarmChangeKind::ManualClear { by: AccountId(8) },
            ],
            &[
                "active count=1 first=10 latest=10 desc=a ack=-/- clear=-/-",
                "acknowledged count=1 first=10 latest=10 desc=a ack=20/7 clear=-/-",
                "unchanged: the alarm is acknowledged, not active",
                "cleared count=1 first=10 latest=10 desc=a ack=20/7 clear=40/8",
            ],
        );
    }

    #[test]
    fn a_late_raise_does_not_move_the_latest_time_back() {
        let first = AlarmLifecycle::apply(None, UnixMillis(100), &raise("a")).expect("a raise always applies");
        let late = AlarmLifecycle::apply(Some(&first), UnixMillis(50), &raise("b")).expect("a raise always applies");
        assert_eq!((late.latest_at, late.count, late.description.as_str()), (UnixMillis(100), 2, "b"));
    }
}
