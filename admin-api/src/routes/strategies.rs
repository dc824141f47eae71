//! Alarm strategies (ALM-3): per enterprise, created, listed, read, replaced, enabled or
//! disabled, and deleted. A strategy names the alarm types and severities it selects, who is
//! notified, how notifications are grouped and repeated, and its CPU / memory threshold rules.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use fleetpulse_proto::{AlarmTypeCode, EnterpriseId, Severity, StrategyId};
use fleetpulse_store::{StoredStrategy, StoredThreshold, StrategySettings, ThresholdMetric};
use serde::{Deserialize, Serialize};

use crate::auth::AuthAdmin;
use crate::error::ApiError;
use crate::extract::{Json, Path};
use crate::routes::enterprises;
use crate::state::AppState;
use crate::text;
use fleetpulse_store::Feature;

/// Most strategies of one enterprise.
pub(crate) const MAX_STRATEGIES: usize = 64;
/// Most receivers of one strategy.
const MAX_RECEIVERS: usize = 100;
/// Most threshold rules of one strategy.
const MAX_THRESHOLDS: usize = 8;
const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 60 * MINUTE_MS;
const DAY_MS: u64 = 24 * HOUR_MS;

/// Routes of this module: (path, handlers by method).
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/api/v1/enterprises/{id}/alarm-strategies", get(list).post(create)),
        ("/api/v1/alarm-strategies/{id}", get(show).put(replace).delete(remove)),
        ("/api/v1/alarm-strategies/{id}/enable", post(enable)),
        ("/api/v1/alarm-strategies/{id}/disable", post(disable)),
    ]
}

/// A threshold rule in a request: `metric` above `above_percent` for `for_minutes`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ThresholdRequest {
    metric: ThresholdMetric,
    above_percent: f64,
    for_minutes: u64,
}

/// The body of create and replace. Intervals default to Alertmanager-like values.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StrategyRequest {
    name: String,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    alarm_types: Vec<u16>,
    #[serde(default)]
    severities: Vec<Severity>,
    receivers: Vec<String>,
    #[serde(default = "default_group_wait")]
    group_wait_ms: u64,
    #[serde(default = "default_group_interval")]
    group_interval_ms: u64,
    #[serde(default = "default_repeat_interval")]
    repeat_interval_ms: u64,
    #[serde(default)]
    thresholds: Vec<ThresholdRequest>,
    /// A channel strategy's reach and what enterprises may do about it (channel strategies
    /// only: `/api/v1/channels/{id}/alarm-strategies`, where it defaults to the whole subtree,
    /// locked).
    #[serde(default)]
    pub(crate) inheritance: Option<fleetpulse_store::StrategyInheritance>,
}

fn yes() -> bool {
    true
}
fn default_group_wait() -> u64 {
    10_000
}
fn default_group_interval() -> u64 {
    MINUTE_MS
}
fn default_repeat_interval() -> u64 {
    4 * HOUR_MS
}

/// A receiver: an address the mailer can send to (the mailer's own check) in a domain with a
/// dot (alarm mail goes out to the internet, not to a local host name).
fn email(raw: &str) -> Result<String, ApiError> {
    let address = crate::email_address::normalize_email(raw)?;
    match address.rsplit_once('@') {
        Some((_, domain)) if domain.contains('.') => Ok(address),
        _ => Err(ApiError::invalid(format!("{address:?} is not an email address"))),
    }
}

fn within(name: &str, value: u64, range: std::ops::RangeInclusive<u64>) -> Result<u64, ApiError> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(ApiError::invalid(format!("{name} must be between {} and {} ms", range.start(), range.end())))
    }
}

/// Checks a request and turns it into stored settings.
pub(crate) fn settings(req: StrategyRequest) -> Result<StrategySettings, ApiError> {
    let name = text::name("name", &req.name, text::MAX_NAME_CHARS)?;
    let mut alarm_types = Vec::with_capacity(req.alarm_types.len());
    for code in req.alarm_types {
        let code = AlarmTypeCode(code);
        if code.alarm_type().is_none() {
            return Err(ApiError::invalid(format!("unknown alarm type code {}", code.0)));
        }
        if !alarm_types.contains(&code) {
            alarm_types.push(code);
        }
    }
    let mut severities = req.severities;
    severities.sort();
    severities.dedup();
    if req.receivers.is_empty() || req.receivers.len() > MAX_RECEIVERS {
        return Err(ApiError::invalid(format!("a strategy has 1 to {MAX_RECEIVERS} receivers")));
    }
    let mut receivers: Vec<String> = Vec::with_capacity(req.receivers.len());
    for r in &req.receivers {
        let r = email(r)?;
        if !receivers.iter().any(|x| x.eq_ignore_ascii_case(&r)) {
            receivers.push(r);
        }
    }
    if req.thresholds.len() > MAX_THRESHOLDS {
        return Err(ApiError::invalid(format!("a strategy has at most {MAX_THRESHOLDS} threshold rules")));
    }
    let thresholds = req
        .thresholds
        .into_iter()
        .map(|t| {
            if !(t.above_percent > 0.0 && t.above_percent < 100.0) {
                return Err(ApiError::invalid("a threshold is a percentage above 0 and below 100"));
            }
            Ok(StoredThreshold {
                metric: t.metric,
                above_centi_pct: (t.above_percent * 100.0).round() as u16,
                for_ms: within("for_minutes", t.for_minutes, 0..=24 * 60)? * MINUTE_MS,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(StrategySettings {
        name: name.to_owned(),
        enabled: req.enabled,
        alarm_types,
        severities,
        receivers,
        group_wait_ms: within("group_wait_ms", req.group_wait_ms, 0..=HOUR_MS)?,
        group_interval_ms: within("group_interval_ms", req.group_interval_ms, 1_000..=DAY_MS)?,
        repeat_interval_ms: within("repeat_interval_ms", req.repeat_interval_ms, MINUTE_MS..=7 * DAY_MS)?,
        thresholds,
    })
}

/// [`settings`] of an enterprise's strategy, which inherits nothing further.
fn enterprise_settings(req: StrategyRequest) -> Result<StrategySettings, ApiError> {
    if req.inheritance.is_some() {
        return Err(ApiError::invalid("inheritance is for channel strategies only"));
    }
    settings(req)
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct StrategyList {
    items: Vec<StoredStrategy>,
}

/// The strategy, checked against the caller's scope through its enterprise (404 outside it).
async fn find(ctx: &AppState, auth: &AuthAdmin, id: StrategyId) -> Result<StoredStrategy, ApiError> {
    auth.require(Feature::Strategies)?;
    match ctx.api.store.entities.strategy(id).await? {
        Some(s) if auth.can_see(ctx, s.enterprise_id).await? => Ok(s),
        _ => Err(ApiError::NotFound("alarm strategy")),
    }
}

/// `GET /api/v1/enterprises/{id}/alarm-strategies`.
async fn list(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<EnterpriseId>,
) -> Result<Json<StrategyList>, ApiError> {
    auth.require(Feature::Strategies)?;
    let id = enterprises::find(&ctx, &auth, id).await?.id;
    Ok(Json(StrategyList { items: ctx.api.store.entities.list_strategies(id).await? }))
}

/// Tells the running alarm engine to reload the enterprise's strategies.
async fn changed(ctx: &AppState, enterprise: EnterpriseId) {
    if let Some(alarms) = &ctx.api.alarms {
        alarms.send(fleetpulse_alarm_service::Control::StrategiesChanged(enterprise)).await;
    }
}

/// `POST /api/v1/enterprises/{id}/alarm-strategies`: 201 with the strategy.
async fn create(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<EnterpriseId>,
    Json(req): Json<StrategyRequest>,
) -> Result<Response, ApiError> {
    auth.require(Feature::Strategies)?;
    let id = enterprises::find(&ctx, &auth, id).await?.id;
    auth.require_act(&ctx, id).await?;
    let settings = enterprise_settings(req)?;
    if ctx.api.store.entities.list_strategies(id).await?.len() >= MAX_STRATEGIES {
        return Err(ApiError::Conflict(format!("an enterprise has at most {MAX_STRATEGIES} alarm strategies")));
    }
    let created = ctx.api.store.entities.create_strategy(id, settings, ctx.clock.now()).await?;
    changed(&ctx, id).await;
    tracing::info!(message = "Created an alarm strategy.", strategy = %created.id, enterprise = %id, by_account = %auth.account.id);
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// `GET /api/v1/alarm-strategies/{id}`.
async fn show(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<StrategyId>,
) -> Result<Json<StoredStrategy>, ApiError> {
    Ok(Json(find(&ctx, &auth, id).await?))
}

/// `PUT /api/v1/alarm-strategies/{id}`: replaces the settings.
async fn replace(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<StrategyId>,
    Json(req): Json<StrategyRequest>,
) -> Result<Json<StoredStrategy>, ApiError> {
    let enterprise = find(&ctx, &auth, id).await?.enterprise_id;
    auth.require_act(&ctx, enterprise).await?;
    let settings = enterprise_settings(req)?;
    let updated = ctx.api.store.entities.update_strategy(id, settings, ctx.clock.now()).await?;
    changed(&ctx, enterprise).await;
    updated.map(Json).ok_or(ApiError::NotFound("alarm strategy"))
}

async fn set_enabled(
    ctx: &AppState,
    auth: &AuthAdmin,
    id: StrategyId,
    enabled: bool,
) -> Result<Json<StoredStrategy>, ApiError> {
    let StoredStrategy { enterprise_id, mut settings, .. } = find(ctx, auth, id).await?;
    auth.require_act(ctx, enterprise_id).await?;
    settings.enabled = enabled;
    let updated = ctx.api.store.entities.update_strategy(id, settings, ctx.clock.now()).await?;
    changed(ctx, enterprise_id).await;
    updated.map(Json).ok_or(ApiError::NotFound("alarm strategy"))
}

/// `POST /api/v1/alarm-strategies/{id}/enable`.
async fn enable(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<StrategyId>,
) -> Result<Json<StoredStrategy>, ApiError> {
    set_enabled(&ctx, &auth, id, true).await
}

/// `POST /api/v1/alarm-strategies/{id}/disable`.
async fn disable(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<StrategyId>,
) -> Result<Json<StoredStrategy>, ApiError> {
    set_enabled(&ctx, &auth, id, false).await
}

/// `DELETE /api/v1/alarm-strategies/{id}`: 204.
async fn remove(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<StrategyId>,
) -> Result<StatusCode, ApiError> {
    let enterprise = find(&ctx, &auth, id).await?.enterprise_id;
    auth.require_act(&ctx, enterprise).await?;
    if ctx.api.store.entities.delete_strategy(id).await? {
        changed(&ctx, enterprise).await;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("alarm strategy"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_addresses() {
        for ok in ["a@b.co", " ops@example.com "] {
            assert!(email(ok).is_ok(), "{ok}");
        }
        for bad in
            ["", "a", "a@b", "@b.co", "a@b.co\r\nBcc: x@y.z", "a b@c.de", "a@b@c.de", "<a@b.co>", "a@b.co,c@d.ef"]
        {
            assert!(email(bad).is_err(), "{bad:?}");
        }
    }
}
