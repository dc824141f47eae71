//! What the engine reads from the store: every enterprise's effective strategies at start (and
//! one enterprise's again when the API says they changed), and the alarms it takes over at start.

use fleetpulse_alarm_engine::{
    AlarmEngine, AlarmStrategy, Metric, NotifySettings, Receiver, RestoredAlarm, SiteIncidentRule, ThresholdRule,
};
use fleetpulse_proto::{EnterpriseId, UnixMillis};
use fleetpulse_store::{
    AlarmFilter, AlarmStatus, EngineStateOwner, Page, Store, StoreError, StoredStrategy, StrategyReceiver,
    ThresholdMetric,
};

use crate::AlarmMetrics;

/// Rows read per page while loading strategies and active alarms.
const LOAD_PAGE: u32 = 1_000;

/// The engine form of a stored strategy.
pub fn engine_strategy(s: &StoredStrategy) -> AlarmStrategy {
    let settings = &s.settings;
    AlarmStrategy {
        id: s.id,
        enterprise_id: s.enterprise_id,
        name: settings.name.clone(),
        enabled: settings.enabled,
        alarm_types: settings.alarm_types.clone(),
        severities: settings.severities.clone(),
        receivers: settings
            .receivers
            .iter()
            .map(|r| match r {
                StrategyReceiver::Email(address) => Receiver::Email(address.clone()),
                StrategyReceiver::Account(id) => Receiver::Account(*id),
            })
            .collect(),
        notify: NotifySettings {
            group_wait_ms: settings.group_wait_ms,
            group_interval_ms: settings.group_interval_ms,
            repeat_interval_ms: settings.repeat_interval_ms,
        },
        thresholds: settings
            .thresholds
            .iter()
            .map(|t| ThresholdRule {
                metric: match t.metric {
                    ThresholdMetric::Cpu => Metric::Cpu,
                    ThresholdMetric::Memory => Metric::Memory,
                },
                above_centi_pct: t.above_centi_pct,
                for_ms: t.for_ms,
            })
            .collect(),
        site_incident: settings.site_incident.map(|r| SiteIncidentRule {
            min_devices: r.min_devices,
            min_fraction_pct: r.min_fraction_pct,
            window_ms: u64::from(r.window_s) * 1_000,
            resolve_fraction_pct: r.resolve_fraction_pct,
        }),
    }
}

/// Reads the strategies of every enterprise `owner`'s engine covers into the engine.
pub(crate) async fn load_strategies(
    store: &Store,
    engine: &mut AlarmEngine,
    owner: &EngineStateOwner,
) -> Result<(), StoreError> {
    let mut page = Page::first(LOAD_PAGE);
    loop {
        let enterprises = store.entities.list_enterprises(page).await?;
        for e in enterprises.iter().filter(|e| owner.covers(e.id)) {
            reload(store, engine, e.id).await?;
        }
        match enterprises.last() {
            Some(last) if enterprises.len() == LOAD_PAGE as usize => page = Page { after: last.id.0, limit: LOAD_PAGE },
            _ => return Ok(()),
        }
    }
}

/// Reads the enterprise's strategies into the engine. A set the engine refuses (the API
/// validates with the same limits, so only an older row could) is logged and leaves the previous
/// one in place.
pub(crate) async fn reload(
    store: &Store,
    engine: &mut AlarmEngine,
    enterprise: EnterpriseId,
) -> Result<(), StoreError> {
    // Its own strategies and those its channels hand down, as far as its choices go.
    let strategies: Vec<AlarmStrategy> = crate::inherited::effective_strategies(store, enterprise)
        .await?
        .map(|effective| effective.applied())
        .unwrap_or_default();
    if let Err(error) = engine.set_strategies(enterprise, strategies) {
        tracing::error!(message = "Alarm strategies refused; the previous ones stay.", %enterprise, %error);
    }
    Ok(())
}

/// Hands the engine every alarm the store has as active (of the enterprises `owner`'s engine
/// covers), with its activation and acknowledgement, so that it keeps their keys, reminders and
/// resolutions after a restart.
pub(crate) async fn restore_active_alarms(
    store: &Store,
    engine: &mut AlarmEngine,
    metrics: &AlarmMetrics,
    owner: &EngineStateOwner,
) -> Result<(), StoreError> {
    let now = UnixMillis::now();
    let mut page = Page::first(LOAD_PAGE);
    let active = AlarmFilter { status: Some(AlarmStatus::Active), ..AlarmFilter::default() };
    loop {
        let records = store.events.list_alarm_records(active.clone(), page).await?;
        let mut restored = 0u64;
        for r in records.iter().filter(|r| owner.covers(r.enterprise_id)) {
            restored += 1;
            engine.restore_alarm(
                now,
                RestoredAlarm {
                    device_id: r.device_id,
                    enterprise_id: r.enterprise_id,
                    code: r.code,
                    first_at: r.first_at,
                    latest_at: r.latest_at,
                    count: u32::try_from(r.count).unwrap_or(u32::MAX),
                    description: r.description.clone(),
                    acknowledged: r.acknowledged_by.zip(r.acknowledged_at),
                },
            );
        }
        metrics.restored.inc_by(restored);
        match records.last() {
            Some(last) if records.len() == LOAD_PAGE as usize => page = Page { after: last.id, limit: LOAD_PAGE },
            _ => return Ok(()),
        }
    }
}
