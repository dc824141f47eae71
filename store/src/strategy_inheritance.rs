//! Strategies down the tenant tree (`InheritedStrategyStore`, issue 18): channels' alarm
//! strategies with how far they reach and what enterprises may do about them, and each
//! enterprise's choices about the strategies it inherits (opt out, override).
//!
//! Channel strategies share the id space of enterprise strategies (one table), so a
//! [`StrategyId`] names one strategy wherever it came from.

use async_trait::async_trait;
use fleetpulse_proto::{ChannelId, EnterpriseId, StrategyId, UnixMillis};
use serde::{Deserialize, Serialize};

use crate::{Result, StrategySettings};

/// Channel strategies and enterprises' choices about them.
#[async_trait]
pub trait InheritedStrategyStore: Send + Sync + 'static {
    /// Creates a strategy of the channel ([`crate::StoreError::InvalidInput`] for an unknown
    /// channel).
    async fn create_channel_strategy(
        &self,
        channel: ChannelId,
        settings: StrategySettings,
        inheritance: StrategyInheritance,
        at: UnixMillis,
    ) -> Result<ChannelStrategy>;
    /// The channel strategy with this id (`None` also for an enterprise's strategy).
    async fn channel_strategy(&self, id: StrategyId) -> Result<Option<ChannelStrategy>>;
    /// The channel's own strategies, ordered by id.
    async fn list_channel_strategies(&self, channel: ChannelId) -> Result<Vec<ChannelStrategy>>;
    /// Replaces a channel strategy's settings and inheritance; `None` if it does not exist.
    async fn update_channel_strategy(
        &self,
        id: StrategyId,
        settings: StrategySettings,
        inheritance: StrategyInheritance,
        at: UnixMillis,
    ) -> Result<Option<ChannelStrategy>>;
    /// Deletes a channel strategy and every enterprise's choice about it; false if it did not
    /// exist.
    async fn delete_channel_strategy(&self, id: StrategyId) -> Result<bool>;
    /// The strategies of `channel` and of every channel above it, each with its distance
    /// (0 for `channel`'s own), nearest first, then by id. Empty for an unknown channel.
    async fn strategies_above(&self, channel: ChannelId) -> Result<Vec<(u32, ChannelStrategy)>>;
    /// The enterprise's choices about inherited strategies, ordered by strategy id.
    async fn strategy_choices(&self, enterprise: EnterpriseId) -> Result<Vec<StrategyChoice>>;
    /// Sets (`Some`) or removes (`None`) the enterprise's choice about an inherited strategy.
    /// The caller checks that the strategy is a channel's and a replacement the enterprise's.
    async fn set_strategy_choice(
        &self,
        enterprise: EnterpriseId,
        strategy: StrategyId,
        choice: Option<InheritedChoice>,
        at: UnixMillis,
    ) -> Result<()>;
}

/// What enterprises below a channel strategy may do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EnterpriseFreedom {
    /// Nothing: it applies to every enterprise it reaches.
    Locked,
    /// Opt out of it.
    OptOut,
    /// Opt out of it or replace it with a strategy of their own.
    Override,
}

/// How far a channel strategy reaches and what enterprises may do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StrategyInheritance {
    /// How many sub-channel levels below the channel it reaches: 0 = only the channel's own
    /// enterprises; absent = the whole subtree.
    #[serde(default)]
    pub sub_channel_levels: Option<u8>,
    /// What an enterprise may do about it.
    pub enterprises_may: EnterpriseFreedom,
}

/// A stored channel strategy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct ChannelStrategy {
    /// Identifier (shared with enterprise strategies).
    pub id: StrategyId,
    /// The channel that defines it.
    pub channel_id: ChannelId,
    /// Settings, as an enterprise strategy's (receivers: the channel's NOC addresses).
    pub settings: StrategySettings,
    /// Reach and freedom.
    pub inheritance: StrategyInheritance,
    /// Creation time.
    pub created_at: UnixMillis,
    /// Last change.
    pub updated_at: UnixMillis,
}

/// An enterprise's choice about an inherited strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum InheritedChoice {
    /// The strategy does not apply to the enterprise.
    OptOut,
    /// The enterprise's own strategy applies instead.
    OverrideWith(StrategyId),
}

/// A stored choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct StrategyChoice {
    /// The enterprise.
    pub enterprise_id: EnterpriseId,
    /// The inherited strategy.
    pub strategy_id: StrategyId,
    /// The choice.
    pub choice: InheritedChoice,
    /// When it was made.
    pub at: UnixMillis,
}
