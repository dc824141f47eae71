//! Strategies down the tenant tree (issue 18 item 1): which strategies apply to an enterprise —
//! its own and those its channels hand down — and where each came from.
//!
//! A channel's strategy reaches the enterprises of that channel and of its sub-channels down to
//! [`Inheritance::sub_channel_levels`] levels (`None`: all of them). An enterprise always has its
//! own strategies; about an inherited one it may make a [`Choice`] — opt out, or override it
//! with one of its own — as far as the channel's [`Freedom`] permits. A choice the channel no
//! longer permits is ignored (the channel's strategy applies), and shown as such.
//!
//! [`resolve`] is a pure function: the alarm service hands the engine
//! [`EffectiveStrategies::applied`], the API shows [`EffectiveStrategies::entries`].

use fleetpulse_proto::{ChannelId, EnterpriseId, StrategyId};

use crate::strategy::{AlarmStrategy, MAX_STRATEGIES_PER_ENTERPRISE};

/// What the enterprises below a channel strategy may do about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Freedom {
    /// Nothing: it applies to every enterprise it reaches.
    Locked,
    /// An enterprise may opt out of it.
    OptOut,
    /// An enterprise may opt out of it or replace it with a strategy of its own.
    Override,
}

/// How far a channel strategy reaches and what enterprises may do about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Inheritance {
    /// How many sub-channel levels below its channel it reaches: 0 = only the channel's own
    /// enterprises, `None` = the whole subtree.
    pub sub_channel_levels: Option<u8>,
    /// What an enterprise may do about it.
    pub freedom: Freedom,
}

/// A strategy of a channel above an enterprise, as [`resolve`] takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InheritedStrategy {
    /// The channel that defines it.
    pub channel: ChannelId,
    /// Levels between the enterprise's channel and `channel`: 0 when it is the enterprise's own
    /// channel, 1 for its parent, and so on.
    pub distance: u32,
    /// Reach and freedom.
    pub inheritance: Inheritance,
    /// The strategy (its `enterprise_id` is ignored: the effective copy gets the enterprise's).
    pub strategy: AlarmStrategy,
}

/// An enterprise's choice about an inherited strategy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Choice {
    /// It does not apply to the enterprise.
    OptOut,
    /// The enterprise's own strategy applies instead.
    OverrideWith(StrategyId),
}

/// Where an effective strategy came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    /// The enterprise's own.
    Enterprise,
    /// Handed down by a channel, `distance` levels above the enterprise's channel.
    Channel {
        /// The channel.
        channel: ChannelId,
        /// 0: the enterprise's own channel.
        distance: u32,
    },
}

/// Whether an effective strategy applies, and if not why.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// It applies (a disabled strategy applies but selects nothing).
    Applies,
    /// It applies although the enterprise chose otherwise: its channel does not permit that
    /// choice (any more).
    ChoiceNotPermitted,
    /// The enterprise opted out of it.
    OptedOut,
    /// The enterprise's own strategy applies instead.
    OverriddenBy(StrategyId),
    /// The enterprise already has [`MAX_STRATEGIES_PER_ENTERPRISE`] applying strategies (its own
    /// first, then the nearest channels').
    OverLimit,
}

impl Status {
    /// Whether the strategy is evaluated for the enterprise's alarms.
    pub fn applies(self) -> bool {
        matches!(self, Status::Applies | Status::ChoiceNotPermitted)
    }
}

/// One strategy of an enterprise's effective list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EffectiveStrategy {
    /// The strategy, with the enterprise as its `enterprise_id`.
    pub strategy: AlarmStrategy,
    /// Where it came from.
    pub origin: Origin,
    /// The inheritance of a channel's strategy.
    pub inheritance: Option<Inheritance>,
    /// Whether it applies.
    pub status: Status,
}

/// An enterprise's strategies: its own, then the inherited ones from the nearest channel up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EffectiveStrategies {
    entries: Vec<EffectiveStrategy>,
}

impl EffectiveStrategies {
    /// Every strategy that reaches the enterprise, applying or not, with where it came from.
    pub fn entries(&self) -> &[EffectiveStrategy] {
        &self.entries
    }

    /// The strategies the engine evaluates for the enterprise (at most
    /// [`MAX_STRATEGIES_PER_ENTERPRISE`]).
    pub fn applied(&self) -> Vec<AlarmStrategy> {
        self.entries.iter().filter(|e| e.status.applies()).map(|e| e.strategy.clone()).collect()
    }
}

/// Whether a strategy `distance` levels up reaches the enterprise.
fn reaches(inheritance: &Inheritance, distance: u32) -> bool {
    inheritance.sub_channel_levels.is_none_or(|levels| distance <= u32::from(levels))
}

/// The effective strategies of `enterprise`: `own` (its own strategies), `inherited` (the
/// strategies of its channel and every channel above, any order) and its `choices`.
pub fn resolve(
    enterprise: EnterpriseId,
    own: Vec<AlarmStrategy>,
    mut inherited: Vec<InheritedStrategy>,
    choices: &[(StrategyId, Choice)],
) -> EffectiveStrategies {
    let mut entries = Vec::with_capacity(own.len() + inherited.len());
    let mut applying = 0usize;
    let mut push = |entries: &mut Vec<EffectiveStrategy>, mut entry: EffectiveStrategy| {
        if entry.status.applies() {
            if applying >= MAX_STRATEGIES_PER_ENTERPRISE {
                entry.status = Status::OverLimit;
            } else {
                applying += 1;
            }
        }
        entries.push(entry);
    };
    for mut strategy in own {
        strategy.enterprise_id = enterprise;
        push(
            &mut entries,
            EffectiveStrategy { strategy, origin: Origin::Enterprise, inheritance: None, status: Status::Applies },
        );
    }
    inherited.retain(|s| reaches(&s.inheritance, s.distance));
    inherited.sort_by_key(|s| (s.distance, s.strategy.id));
    inherited.dedup_by_key(|s| s.strategy.id);
    for InheritedStrategy { channel, distance, inheritance, mut strategy } in inherited {
        strategy.enterprise_id = enterprise;
        let choice = choices.iter().find(|(id, _)| *id == strategy.id).map(|&(_, c)| c);
        let own_replacement =
            |id: StrategyId| entries.iter().any(|e| e.origin == Origin::Enterprise && e.strategy.id == id);
        let status = match (choice, inheritance.freedom) {
            (None, _) => Status::Applies,
            (Some(Choice::OptOut), Freedom::OptOut | Freedom::Override) => Status::OptedOut,
            (Some(Choice::OverrideWith(id)), Freedom::Override) if own_replacement(id) => Status::OverriddenBy(id),
            // Locked, or an override the channel permits only as an opt-out, or one whose
            // replacement is gone: the channel's strategy applies.
            (Some(_), _) => Status::ChoiceNotPermitted,
        };
        let origin = Origin::Channel { channel, distance };
        push(&mut entries, EffectiveStrategy { strategy, origin, inheritance: Some(inheritance), status });
    }
    EffectiveStrategies { entries }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::{NotifySettings, Receiver};

    const E: EnterpriseId = EnterpriseId(7);

    fn strategy(id: u64) -> AlarmStrategy {
        AlarmStrategy {
            id: StrategyId(id),
            enterprise_id: EnterpriseId(0),
            name: format!("s{id}"),
            enabled: true,
            alarm_types: vec![],
            severities: vec![],
            receivers: vec![Receiver::Email(format!("noc{id}@example.com"))],
            notify: NotifySettings::default(),
            thresholds: vec![],
        }
    }

    /// `(id, channel, distance, levels, freedom)`.
    fn inherited(id: u64, channel: u64, distance: u32, levels: Option<u8>, freedom: Freedom) -> InheritedStrategy {
        InheritedStrategy {
            channel: ChannelId(channel),
            distance,
            inheritance: Inheritance { sub_channel_levels: levels, freedom },
            strategy: strategy(id),
        }
    }

    /// Renders the effective list as `id origin status` lines.
    fn check(own: &[u64], up: Vec<InheritedStrategy>, choices: &[(u64, Choice)], want: &[&str]) {
        let choices: Vec<(StrategyId, Choice)> = choices.iter().map(|&(id, c)| (StrategyId(id), c)).collect();
        let effective = resolve(E, own.iter().map(|&id| strategy(id)).collect(), up, &choices);
        let got: Vec<String> = effective
            .entries()
            .iter()
            .map(|e| {
                assert_eq!(e.strategy.enterprise_id, E, "every effective strategy is the enterprise's");
                let origin = match e.origin {
                    Origin::Enterprise => "own".to_owned(),
                    Origin::Channel { channel, distance } => format!("channel {}+{distance}", channel.0),
                };
                let status = match e.status {
                    Status::OverriddenBy(id) => format!("overridden by {}", id.0),
                    other => format!("{other:?}"),
                };
                format!("{} {origin} {status}", e.strategy.id.0)
            })
            .collect();
        assert_eq!(got, want);
        let applied: Vec<u64> = effective.applied().iter().map(|s| s.id.0).collect();
        let want_applied: Vec<u64> =
            effective.entries().iter().filter(|e| e.status.applies()).map(|e| e.strategy.id.0).collect();
        assert_eq!(applied, want_applied);
    }

    #[test]
    fn a_channel_strategy_applies_to_an_enterprise_without_its_own() {
        check(&[], vec![inherited(1, 10, 0, Some(0), Freedom::Locked)], &[], &["1 channel 10+0 Applies"]);
    }

    #[test]
    fn own_first_then_nearest_channel_first() {
        check(
            &[5],
            vec![
                inherited(1, 30, 2, None, Freedom::Locked),
                inherited(3, 10, 0, None, Freedom::Locked),
                inherited(2, 20, 1, None, Freedom::Locked),
            ],
            &[],
            &["5 own Applies", "3 channel 10+0 Applies", "2 channel 20+1 Applies", "1 channel 30+2 Applies"],
        );
    }

    #[test]
    fn reach_down_the_sub_channels() {
        check(
            &[],
            vec![
                inherited(1, 30, 2, Some(1), Freedom::Locked),
                inherited(2, 30, 2, Some(2), Freedom::Locked),
                inherited(3, 20, 1, Some(0), Freedom::Locked),
                inherited(4, 10, 0, Some(0), Freedom::Locked),
            ],
            &[],
            &["4 channel 10+0 Applies", "2 channel 30+2 Applies"],
        );
    }

    #[test]
    fn choices_as_far_as_the_channel_permits() {
        use Choice::*;
        check(
            &[9],
            vec![
                inherited(1, 10, 0, None, Freedom::Locked),
                inherited(2, 10, 0, None, Freedom::OptOut),
                inherited(3, 10, 0, None, Freedom::OptOut),
                inherited(4, 10, 0, None, Freedom::Override),
                inherited(5, 10, 0, None, Freedom::Override),
                inherited(6, 10, 0, None, Freedom::Override),
            ],
            &[
                (1, OptOut),
                (2, OptOut),
                (3, OverrideWith(StrategyId(9))),
                (4, OverrideWith(StrategyId(9))),
                (5, OptOut),
                (6, OverrideWith(StrategyId(8))),
            ],
            &[
                "9 own Applies",
                "1 channel 10+0 ChoiceNotPermitted",
                "2 channel 10+0 OptedOut",
                "3 channel 10+0 ChoiceNotPermitted",
                "4 channel 10+0 overridden by 9",
                "5 channel 10+0 OptedOut",
                // The replacement is not one of the enterprise's strategies.
                "6 channel 10+0 ChoiceNotPermitted",
            ],
        );
    }

    #[test]
    fn at_most_the_engine_limit_applies() {
        let own: Vec<u64> = (1..=MAX_STRATEGIES_PER_ENTERPRISE as u64 - 1).collect();
        let effective = resolve(
            E,
            own.iter().map(|&id| strategy(id)).collect(),
            vec![inherited(100, 10, 0, None, Freedom::Locked), inherited(101, 20, 1, None, Freedom::Locked)],
            &[],
        );
        assert_eq!(effective.applied().len(), MAX_STRATEGIES_PER_ENTERPRISE);
        let last = effective.entries().last().expect("an entry");
        assert_eq!((last.strategy.id, last.status), (StrategyId(101), Status::OverLimit));
    }
}
