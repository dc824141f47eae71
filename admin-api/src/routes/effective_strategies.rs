//! Effective alarm strategies (issue 18): which strategies apply to an enterprise (or to a
//! device, through its enterprise) — its own and those its channels hand down — where each came
//! from and why one does not apply; and the enterprise's choice about an inherited one (opt out,
//! override with one of its own, or inherit again), as far as the channel permits.

use axum::extract::State;
use axum::routing::{MethodRouter, get, put};
use fleetpulse_alarm_service::inherited::{EffectiveStrategies, EngineFreedom as Freedom, Origin, Receiver, Status};
use fleetpulse_proto::{AlarmTypeCode, ChannelId, DeviceId, EnterpriseId, Severity, StrategyId};
use fleetpulse_store::{EnterpriseFreedom, Feature, InheritedChoice};
use serde::{Deserialize, Serialize};

use crate::auth::AuthAdmin;
use crate::error::ApiError;
use crate::extract::{Json, Path};
use crate::routes::enterprises;
use crate::state::AppState;

/// Routes of this module: (path, handlers by method).
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/api/v1/enterprises/{id}/effective-alarm-strategies", get(of_enterprise)),
        ("/api/v1/devices/{id}/effective-alarm-strategies", get(of_device)),
        ("/api/v1/enterprises/{id}/alarm-strategy-choices", put(choose)),
    ]
}

/// Where an effective strategy came from.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct OriginView {
    /// `enterprise` (its own) or `channel` (handed down).
    kind: &'static str,
    /// The channel that hands it down.
    #[serde(skip_serializing_if = "Option::is_none")]
    channel_id: Option<ChannelId>,
    /// Its name.
    #[serde(skip_serializing_if = "Option::is_none")]
    channel_name: Option<String>,
    /// Levels above the enterprise's channel: 0 = the enterprise's own channel.
    #[serde(skip_serializing_if = "Option::is_none")]
    distance: Option<u32>,
}

/// One strategy of the effective list.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct EffectiveView {
    id: StrategyId,
    name: String,
    enabled: bool,
    alarm_types: Vec<AlarmTypeCode>,
    severities: Vec<Severity>,
    /// The addresses it notifies.
    receivers: Vec<String>,
    origin: OriginView,
    /// `applies`, `choice_not_permitted` (applies: the channel does not permit the enterprise's
    /// choice), `opted_out`, `overridden` (by `overridden_by`) or `over_limit` (the enterprise
    /// already has the most strategies the engine evaluates).
    status: &'static str,
    /// Whether the engine evaluates it for the enterprise's alarms.
    applies: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    overridden_by: Option<StrategyId>,
    /// What the enterprise may do about an inherited strategy.
    #[serde(skip_serializing_if = "Option::is_none")]
    enterprises_may: Option<EnterpriseFreedom>,
}

/// The effective strategies of an enterprise (and the device asked about).
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct EffectiveList {
    enterprise_id: EnterpriseId,
    #[serde(skip_serializing_if = "Option::is_none")]
    device_id: Option<DeviceId>,
    items: Vec<EffectiveView>,
}

async fn view(
    ctx: &AppState,
    enterprise: EnterpriseId,
    device: Option<DeviceId>,
    effective: EffectiveStrategies,
) -> Result<EffectiveList, ApiError> {
    let mut names: Vec<(ChannelId, String)> = Vec::new();
    let mut items = Vec::with_capacity(effective.entries().len());
    for e in effective.entries() {
        let origin = match e.origin {
            Origin::Enterprise => {
                OriginView { kind: "enterprise", channel_id: None, channel_name: None, distance: None }
            }
            Origin::Channel { channel, distance } => {
                let name = match names.iter().find(|(id, _)| *id == channel) {
                    Some((_, name)) => name.clone(),
                    None => {
                        let name = ctx.api.store.entities.channel(channel).await?.map(|c| c.name).unwrap_or_default();
                        names.push((channel, name.clone()));
                        name
                    }
                };
                OriginView {
                    kind: "channel",
                    channel_id: Some(channel),
                    channel_name: Some(name),
                    distance: Some(distance),
                }
            }
        };
        let (status, overridden_by) = match e.status {
            Status::Applies => ("applies", None),
            Status::ChoiceNotPermitted => ("choice_not_permitted", None),
            Status::OptedOut => ("opted_out", None),
            Status::OverriddenBy(id) => ("overridden", Some(id)),
            Status::OverLimit => ("over_limit", None),
        };
        let s = &e.strategy;
        items.push(EffectiveView {
            id: s.id,
            name: s.name.clone(),
            enabled: s.enabled,
            alarm_types: s.alarm_types.clone(),
            severities: s.severities.clone(),
            receivers: s
                .receivers
                .iter()
                .map(|r| match r {
                    Receiver::Email(address) => address.clone(),
                })
                .collect(),
            origin,
            status,
            applies: e.status.applies(),
            overridden_by,
            enterprises_may: e.inheritance.map(|i| match i.freedom {
                Freedom::Locked => EnterpriseFreedom::Locked,
                Freedom::OptOut => EnterpriseFreedom::OptOut,
                Freedom::Override => EnterpriseFreedom::Override,
            }),
        });
    }
    Ok(EffectiveList { enterprise_id: enterprise, device_id: device, items })
}

async fn effective(ctx: &AppState, enterprise: EnterpriseId) -> Result<EffectiveStrategies, ApiError> {
    fleetpulse_alarm_service::inherited::effective_strategies(&ctx.api.store, enterprise)
        .await?
        .ok_or(ApiError::NotFound("enterprise"))
}

/// `GET /api/v1/enterprises/{id}/effective-alarm-strategies`.
async fn of_enterprise(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<EnterpriseId>,
) -> Result<Json<EffectiveList>, ApiError> {
    auth.require(Feature::Strategies)?;
    let id = enterprises::find(&ctx, &auth, id).await?.id;
    let effective = effective(&ctx, id).await?;
    Ok(Json(view(&ctx, id, None, effective).await?))
}

/// `GET /api/v1/devices/{id}/effective-alarm-strategies`: the strategies that evaluate the
/// device's alarms (those of its enterprise).
async fn of_device(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<DeviceId>,
) -> Result<Json<EffectiveList>, ApiError> {
    auth.require(Feature::Strategies)?;
    let device = match ctx.api.store.entities.device(id).await? {
        Some(d) if auth.can_see(&ctx, d.enterprise_id).await? => d,
        _ => return Err(ApiError::NotFound("device")),
    };
    let effective = effective(&ctx, device.enterprise_id).await?;
    Ok(Json(view(&ctx, device.enterprise_id, Some(id), effective).await?))
}

/// What an enterprise chooses about an inherited strategy.
#[derive(Debug, Clone, Copy, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ChoiceKind {
    /// The channel's strategy applies (removes an earlier choice).
    Inherit,
    /// It does not apply.
    OptOut,
    /// The enterprise's own `override_with` applies instead.
    Override,
}

/// The body of `PUT /api/v1/enterprises/{id}/alarm-strategy-choices`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChoiceRequest {
    /// The inherited strategy.
    strategy_id: StrategyId,
    choice: ChoiceKind,
    /// The enterprise's own strategy, for `override`.
    #[serde(default)]
    override_with: Option<StrategyId>,
}

/// `PUT /api/v1/enterprises/{id}/alarm-strategy-choices`: the effective list after the choice.
/// 404 for a strategy that does not reach the enterprise, 409 for a choice its channel does not
/// permit, 422 for an override by a strategy that is not the enterprise's own.
async fn choose(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<EnterpriseId>,
    Json(req): Json<ChoiceRequest>,
) -> Result<Json<EffectiveList>, ApiError> {
    auth.require(Feature::Strategies)?;
    let id = enterprises::find(&ctx, &auth, id).await?.id;
    auth.require_act(&ctx, id).await?;
    let current = effective(&ctx, id).await?;
    let inherited = current
        .entries()
        .iter()
        .find(|e| e.strategy.id == req.strategy_id && e.inheritance.is_some())
        .ok_or(ApiError::NotFound("alarm strategy"))?;
    let freedom = inherited.inheritance.map_or(Freedom::Locked, |i| i.freedom);
    let choice = match (req.choice, freedom) {
        (ChoiceKind::Inherit, _) => None,
        (ChoiceKind::OptOut, Freedom::OptOut | Freedom::Override) => Some(InheritedChoice::OptOut),
        (ChoiceKind::Override, Freedom::Override) => {
            let with = req.override_with.ok_or_else(|| ApiError::invalid("override needs override_with"))?;
            let own = current.entries().iter().any(|e| e.strategy.id == with && e.origin == Origin::Enterprise);
            if !own {
                return Err(ApiError::invalid("override_with must be one of the enterprise's own strategies"));
            }
            Some(InheritedChoice::OverrideWith(with))
        }
        _ => return Err(ApiError::Conflict("the channel does not permit this choice about its strategy".into())),
    };
    ctx.api.store.entities.set_strategy_choice(id, req.strategy_id, choice, ctx.clock.now()).await?;
    if let Some(alarms) = &ctx.api.alarms {
        alarms.send(fleetpulse_alarm_service::Control::StrategiesChanged(id)).await;
    }
    tracing::info!(message = "Chose about an inherited alarm strategy.", strategy = %req.strategy_id, enterprise = %id, choice = ?req.choice, by_account = %auth.account.id);
    let effective = effective(&ctx, id).await?;
    Ok(Json(view(&ctx, id, None, effective).await?))
}
