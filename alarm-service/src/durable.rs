//! The engine's state beyond its active alarms (open threshold windows, planned resolutions,
//! issue 18 item 6), saved in the store when it changed — at most every [`SAVE_EVERY`] and when
//! the service stops — and restored at start after the active alarms.
//!
//! A crash loses at most the last [`SAVE_EVERY`] of changes: a window opened since then starts
//! at the next sample above its limit (as every window did before this state was saved), and a
//! resolution planned since then is not sent (as before). Saving is whole-document: its size is
//! bounded by the engine's own state (one entry per device and metric above a limit, one per
//! planned resolution).

use std::time::Duration;

use fleetpulse_alarm_engine::{
    AlarmEngine, DurableState, IdempotencyKey, Metric, NotifiedAlarm, Receiver, SavedResolution, SavedWindows,
};
use fleetpulse_proto::UnixMillis;
use fleetpulse_store::{
    ENGINE_STATE_VERSION, SavedEngineState, Store, StoreError, StoredResolution, StoredWindows, ThresholdMetric,
};

/// How often the engine task saves its state when it changed.
pub(crate) const SAVE_EVERY: Duration = Duration::from_secs(2);

fn stored(state: &DurableState) -> SavedEngineState {
    SavedEngineState {
        version: ENGINE_STATE_VERSION,
        windows: state
            .windows
            .iter()
            .map(|w| StoredWindows {
                device_id: w.device_id,
                enterprise_id: w.enterprise_id,
                metric: match w.metric {
                    Metric::Cpu => ThresholdMetric::Cpu,
                    Metric::Memory => ThresholdMetric::Memory,
                },
                windows: w.windows.clone(),
            })
            .collect(),
        resolutions: state
            .resolutions
            .iter()
            .map(|r| StoredResolution {
                enterprise_id: r.enterprise_id,
                strategy_id: r.strategy_id,
                receiver: match &r.receiver {
                    Receiver::Email(address) => address.clone(),
                },
                device_id: r.item.device_id,
                code: r.item.code,
                first_at: r.item.first_at,
                latest_at: r.item.latest_at,
                count: r.item.count,
                description: r.item.description.clone(),
                resolved_at: r.item.resolved_at,
                key: r.item.key.to_string(),
            })
            .collect(),
    }
}

/// Puts the saved state back into `engine` (after its strategies and active alarms). A document
/// of another version, or an item with a damaged key, is left out with a warning.
pub(crate) async fn restore(store: &Store, engine: &mut AlarmEngine) -> Result<(), StoreError> {
    let Some(saved) = store.entities.engine_state().await? else { return Ok(()) };
    if saved.version != ENGINE_STATE_VERSION {
        tracing::warn!(message = "Saved alarm engine state of another version ignored.", version = saved.version);
        return Ok(());
    }
    for w in saved.windows {
        let metric = match w.metric {
            ThresholdMetric::Cpu => Metric::Cpu,
            ThresholdMetric::Memory => Metric::Memory,
        };
        engine.restore_windows(SavedWindows {
            device_id: w.device_id,
            enterprise_id: w.enterprise_id,
            metric,
            windows: w.windows,
        });
    }
    let now = UnixMillis::now();
    for r in saved.resolutions {
        let Some(key) = IdempotencyKey::parse_hex(&r.key) else {
            tracing::warn!(message = "Saved resolution with a damaged key left out.", device = %r.device_id);
            continue;
        };
        let item = NotifiedAlarm {
            device_id: r.device_id,
            code: r.code,
            first_at: r.first_at,
            latest_at: r.latest_at,
            count: r.count,
            description: r.description,
            resolved_at: r.resolved_at,
            key,
        };
        let receiver = Receiver::Email(r.receiver);
        engine.restore_resolution(
            now,
            SavedResolution { enterprise_id: r.enterprise_id, strategy_id: r.strategy_id, receiver, item },
        );
    }
    Ok(())
}

/// Saves the engine's state if it differs from `last` (what was saved before); keeps `last` as
/// it was when the store fails (the next tick tries again).
pub(crate) async fn save_if_changed(store: &Store, engine: &AlarmEngine, last: &mut Option<DurableState>) {
    let state = engine.durable_state();
    if last.as_ref() == Some(&state) {
        return;
    }
    match store.entities.save_engine_state(&stored(&state), UnixMillis::now()).await {
        Ok(()) => *last = Some(state),
        Err(error) => tracing::warn!(message = "Alarm engine state not saved; retrying.", %error),
    }
}
