//! Strategies down the tenant tree, read from the store: an enterprise's effective strategies
//! (its own, its channels', its choices, resolved by [`fleetpulse_alarm_engine::inheritance`]),
//! what the engine evaluates and what the API shows.

use fleetpulse_alarm_engine::inheritance::{self, Choice, Freedom, Inheritance, InheritedStrategy};
use fleetpulse_proto::{ChannelId, EnterpriseId};
use fleetpulse_store::{
    ChannelStrategy, EnterpriseFreedom, InheritedChoice, Page, Store, StoreError, StoredStrategy, StrategyInheritance,
};

use crate::load::engine_strategy;

/// What the API needs to show an effective list.
pub use fleetpulse_alarm_engine::inheritance::{EffectiveStrategies, EffectiveStrategy, Origin, Status};
pub use fleetpulse_alarm_engine::{Freedom as EngineFreedom, Receiver};

/// Enterprises read per page when a channel's strategies change.
const ENTERPRISE_PAGE: u32 = 1_000;

/// The engine form of a channel strategy's inheritance.
pub fn engine_inheritance(i: &StrategyInheritance) -> Inheritance {
    Inheritance {
        sub_channel_levels: i.sub_channel_levels,
        freedom: match i.enterprises_may {
            EnterpriseFreedom::Locked => Freedom::Locked,
            EnterpriseFreedom::OptOut => Freedom::OptOut,
            EnterpriseFreedom::Override => Freedom::Override,
        },
    }
}

fn inherited(distance: u32, s: &ChannelStrategy) -> InheritedStrategy {
    let as_enterprise = StoredStrategy {
        id: s.id,
        // Replaced by the enterprise's in the effective list.
        enterprise_id: EnterpriseId(0),
        settings: s.settings.clone(),
        created_at: s.created_at,
        updated_at: s.updated_at,
    };
    InheritedStrategy {
        channel: s.channel_id,
        distance,
        inheritance: engine_inheritance(&s.inheritance),
        strategy: engine_strategy(&as_enterprise),
    }
}

/// The effective strategies of `enterprise`; `None` for an unknown enterprise.
pub async fn effective_strategies(
    store: &Store,
    enterprise: EnterpriseId,
) -> Result<Option<EffectiveStrategies>, StoreError> {
    let Some(e) = store.entities.enterprise(enterprise).await? else { return Ok(None) };
    let own = store.entities.list_strategies(enterprise).await?.iter().map(engine_strategy).collect();
    let above = match e.channel_id {
        Some(channel) => store.entities.strategies_above(channel).await?,
        None => Vec::new(),
    };
    let choices: Vec<_> = store
        .entities
        .strategy_choices(enterprise)
        .await?
        .into_iter()
        .map(|c| {
            let choice = match c.choice {
                InheritedChoice::OptOut => Choice::OptOut,
                InheritedChoice::OverrideWith(id) => Choice::OverrideWith(id),
            };
            (c.strategy_id, choice)
        })
        .collect();
    let up = above.iter().map(|(distance, s)| inherited(*distance, s)).collect();
    Ok(Some(inheritance::resolve(enterprise, own, up, &choices)))
}

/// Every enterprise whose effective strategies a change to `channel`'s own strategies may
/// change: those of its subtree.
pub(crate) async fn enterprises_below(store: &Store, channel: ChannelId) -> Result<Vec<EnterpriseId>, StoreError> {
    let subtree = store.entities.channel_subtree(channel).await?;
    let mut ids = Vec::new();
    let mut page = Page::first(ENTERPRISE_PAGE);
    loop {
        let enterprises = store.entities.list_enterprises_in(Some(&subtree), page).await?;
        ids.extend(enterprises.iter().map(|e| e.id));
        match enterprises.last() {
            Some(last) if enterprises.len() == ENTERPRISE_PAGE as usize => {
                page = Page { after: last.id.0, limit: ENTERPRISE_PAGE }
            }
            _ => return Ok(ids),
        }
    }
}
