//! The engine task: owns the [`AlarmEngine`], feeds it the shards' durable events, the API's
//! controls and its deadlines on the wall clock, and hands its actions to the effects task.

use std::time::{Duration, Instant};

use fleetpulse_alarm_engine::{Action, AlarmEngine, DeviceEvent, HIGH_CPU, HIGH_MEMORY};
use fleetpulse_proto::UnixMillis;
use fleetpulse_store::Store;
use tokio::sync::{mpsc, watch};

use crate::AlarmMetrics;
use crate::control::{Control, handle_control};
use crate::effects::Effect;
use crate::windows::{RESOLVE_EVERY, TASK_POLL, WindowShell};

/// Runs the engine until the event senders are gone or `stop` turns true. Threshold alarm
/// records and notifications go to `effects`; when that queue is full, the engine waits.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_engine(
    mut engine: AlarmEngine,
    mut windows: WindowShell,
    store: Store,
    mut events: mpsc::Receiver<Vec<DeviceEvent>>,
    mut control: mpsc::Receiver<Control>,
    effects: mpsc::Sender<Effect>,
    mut stop: watch::Receiver<bool>,
    metrics: AlarmMetrics,
) {
    let mut actions = Vec::new();
    let mut control_open = true;
    let mut task_poll = tokio::time::interval(TASK_POLL);
    let mut resolve = tokio::time::interval(RESOLVE_EVERY);
    task_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    resolve.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Both were just done by the start.
    task_poll.reset();
    resolve.reset();
    let mut saved = None;
    let mut save_tick = tokio::time::interval(crate::durable::SAVE_EVERY);
    save_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Records of device-reported and offline alarms are written by the shards with the
        // events; the engine's own are only the derived threshold alarms. A manual clear is
        // stored by the API before it gets here.
        let mut keep_records = true;
        let sleep = engine.next_deadline().map(|due| {
            let ms = u64::try_from(due.0.saturating_sub(UnixMillis::now().0)).unwrap_or(0);
            Duration::from_millis(ms)
        });
        tokio::select! {
            biased;
            _ = stopped(&mut stop) => {
                crate::durable::save_if_changed(&store, &engine, &mut saved).await;
                break;
            }
            c = control.recv(), if control_open => match c {
                Some(c) => {
                    keep_records = !matches!(c, Control::Cleared { .. });
                    handle_control(&mut engine, &mut windows, &store, c).await;
                }
                None => control_open = false,
            },
            // Before the events, so that a steady stream of them does not starve it.
            _ = save_tick.tick() => crate::durable::save_if_changed(&store, &engine, &mut saved).await,
            batch = events.recv() => match batch {
                Some(batch) => {
                    metrics.events.inc_by(batch.len() as u64);
                    let now = UnixMillis::now();
                    for event in &batch {
                        // Millisecond precision (the event's time of receipt).
                        #[allow(clippy::cast_precision_loss)]
                        let age_ms = now.0.saturating_sub(event.at.0).max(0) as f64;
                        metrics.received_to_engine_seconds.observe(age_ms / 1_000.0);
                        engine.handle_event(event);
                    }
                }
                None => {
                    crate::durable::save_if_changed(&store, &engine, &mut saved).await;
                    break;
                }
            },
            _ = tokio::time::sleep(sleep.unwrap_or(Duration::MAX)), if sleep.is_some() => {
                engine.handle_timeout(UnixMillis::now());
            }
            _ = task_poll.tick() => {
                if let Err(error) = windows.poll_tasks(&store, &mut engine).await {
                    tracing::error!(message = "Cannot check the tasks of maintenance windows.", %error);
                }
            }
            _ = resolve.tick() => {
                if let Err(error) = windows.resolve_again(&store, &mut engine).await {
                    tracing::error!(message = "Cannot resolve the sites and groups of maintenance windows.", %error);
                }
            }
        }
        engine.drain_actions(&mut actions);
        let decided = Instant::now();
        let state = engine.stats();
        metrics.active_alarms.set(i64::try_from(state.active_alarms).unwrap_or(i64::MAX));
        metrics.open_groups.set(i64::try_from(state.open_groups).unwrap_or(i64::MAX));
        metrics.scheduled_reminders.set(i64::try_from(state.scheduled_repeats).unwrap_or(i64::MAX));
        metrics.threshold_states.set(i64::try_from(state.threshold_states).unwrap_or(i64::MAX));
        for action in actions.drain(..) {
            let effect = match action {
                Action::Record(change) if keep_records && (change.code == HIGH_CPU || change.code == HIGH_MEMORY) => {
                    Effect::Record(change)
                }
                Action::Notify(n) => Effect::Notify(n, decided),
                Action::Maintenance { device_id, enterprise_id, code, activation, at, window, step } => {
                    Effect::Mark(windows.mark(device_id, enterprise_id, code, activation, at, window, step))
                }
                Action::Record(_) | Action::Lifecycle { .. } => continue,
            };
            if effects.send(effect).await.is_err() {
                return;
            }
        }
    }
}

/// Returns once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
