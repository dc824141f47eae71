//! The engine task: owns the [`AlarmEngine`], feeds it the shards' durable events, the API's
//! controls and its deadlines on the wall clock, and hands its actions to the effects task.

use std::time::{Duration, Instant};

use fleetpulse_alarm_engine::{Action, AlarmEngine, DeviceEvent, HIGH_CPU, HIGH_MEMORY};
use fleetpulse_proto::UnixMillis;
use fleetpulse_store::{DeadLetterReason, DeadLetterSink, EngineStateOwner, Store};
use tokio::sync::{mpsc, watch};

use crate::AlarmMetrics;
use crate::control::{Control, handle_control};
use crate::dead::{DeadPayload, GivenUp, ReplayError, ReplayRequest, StoredNotification};
use crate::effects::{Effect, IncidentEffect};
use crate::sites::SiteShell;
use crate::windows::{RESOLVE_EVERY, TASK_POLL, WindowShell};

/// What the engine task reads: the shards' events, the API's controls, dead letters replayed.
pub(crate) struct Inputs {
    pub(crate) events: mpsc::Receiver<Vec<DeviceEvent>>,
    pub(crate) control: mpsc::Receiver<Control>,
    pub(crate) replays: mpsc::Receiver<ReplayRequest>,
}

/// Runs the engine until the event senders are gone or `stop` turns true. Threshold alarm
/// records and notifications go to `effects`; when that queue is full, the engine waits.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_engine(
    owner: EngineStateOwner,
    mut engine: AlarmEngine,
    mut windows: WindowShell,
    mut sites: SiteShell,
    store: Store,
    inputs: Inputs,
    effects: mpsc::Sender<Effect>,
    mut stop: watch::Receiver<bool>,
    metrics: AlarmMetrics,
    dead_letters: DeadLetterSink,
) {
    let Inputs { mut events, mut control, mut replays } = inputs;
    let mut actions = Vec::new();
    let mut control_open = true;
    let mut replays_open = true;
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
                crate::durable::save_if_changed(&store, &owner, &engine, &mut saved).await;
                // Events still queued are durable but not evaluated: dead letters, not dropped.
                events.close();
                while let Ok(batch) = events.try_recv() {
                    give_up_events(&dead_letters, &batch).await;
                }
                break;
            }
            c = control.recv(), if control_open => match c {
                Some(c) => {
                    keep_records = !matches!(c, Control::Cleared { .. });
                    let changed = match &c {
                        Control::StrategiesChanged(e) => Some(vec![*e]),
                        Control::ChannelStrategiesChanged(_) => None,
                        _ => Some(Vec::new()),
                    };
                    handle_control(&mut engine, &mut windows, &store, &owner, c).await;
                    // Strategies that gained or lost a site-incident rule: read or forget sites.
                    let result = match changed {
                        Some(enterprises) => {
                            let mut result = Ok(());
                            for e in enterprises {
                                result = result.and(sites.resolve(&store, &mut engine, e).await);
                            }
                            result
                        }
                        None => sites.resolve_all(&store, &mut engine).await,
                    };
                    if let Err(error) = result {
                        tracing::error!(message = "Cannot read the sites of devices for site incidents.", %error);
                    }
                }
                None => control_open = false,
            },
            r = replays.recv(), if replays_open => match r {
                Some(ReplayRequest { payload: DeadPayload::Event(stored), done }) => {
                    let answer = match crate::dead::to_event(&stored) {
                        Some(event) => {
                            engine.handle_event(&event);
                            Ok(())
                        }
                        None => Err(ReplayError::NotReplayable("an alarm type this build does not know".into())),
                    };
                    let _ = done.send(answer);
                }
                Some(ReplayRequest { payload, done }) => {
                    if let Err(mpsc::error::SendError(Effect::Replay(_, done))) =
                        effects.send(Effect::Replay(payload, done)).await
                    {
                        let _ = done.send(Err(ReplayError::Stopped));
                    }
                }
                None => replays_open = false,
            },
            // Before the events, so that a steady stream of them does not starve it.
            _ = save_tick.tick() => crate::durable::save_if_changed(&store, &owner, &engine, &mut saved).await,
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
                    crate::durable::save_if_changed(&store, &owner, &engine, &mut saved).await;
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
                if let Err(error) = sites.resolve_all(&store, &mut engine).await {
                    tracing::error!(message = "Cannot read the sites of devices for site incidents.", %error);
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
        metrics.open_incidents.set(i64::try_from(state.open_incidents).unwrap_or(i64::MAX));
        let mut effects_gone = false;
        for action in actions.drain(..) {
            let effect = match action {
                Action::Record(change) if keep_records && (change.code == HIGH_CPU || change.code == HIGH_MEMORY) => {
                    Effect::Record(change)
                }
                Action::Notify(n) => Effect::Notify(n, decided),
                Action::Maintenance { device_id, enterprise_id, code, activation, at, window, step } => {
                    Effect::Mark(windows.mark(device_id, enterprise_id, code, activation, at, window, step))
                }
                Action::Incident { incident, at, step, counts } => {
                    Effect::Incident(Box::new(IncidentEffect { incident, at, step, counts }))
                }
                Action::Record(_) | Action::Lifecycle { .. } => continue,
            };
            if let Err(mpsc::error::SendError(effect)) = effects.send(effect).await {
                // The effects task is gone: what the engine decided is given up, not dropped.
                let given_up = GivenUp {
                    reason: DeadLetterReason { code: "stage_stopped", detail: "the effects task has stopped".into() },
                    attempts: 1,
                };
                give_up(effect, &dead_letters, &given_up).await;
                effects_gone = true;
            }
        }
        if effects_gone {
            // The shards find the event queue closed and give their events up in turn.
            return;
        }
    }
}

/// Records durable events the engine stopped before evaluating as dead letters.
async fn give_up_events(dead_letters: &DeadLetterSink, events: &[DeviceEvent]) {
    let at = UnixMillis::now();
    let letters = events
        .iter()
        .map(|e| fleetpulse_store::NewDeadLetter {
            stage: fleetpulse_store::DeadLetterStage::AlarmEngine,
            reason: DeadLetterReason {
                code: "shutdown",
                detail: "the alarm engine stopped before evaluating it".into(),
            },
            enterprise_id: Some(e.enterprise_id),
            device_id: Some(e.device_id),
            payload: fleetpulse_store::event_payload(&crate::dead::stored_event(e)),
            attempts: 0,
            at,
        })
        .collect();
    dead_letters.record_many(letters).await;
}

/// Records an effect that could not be handed to the effects task as a dead letter.
async fn give_up(effect: Effect, dead_letters: &DeadLetterSink, given_up: &GivenUp) {
    let payload = match effect {
        Effect::Record(change) => DeadPayload::AlarmRecord { change },
        Effect::Notify(n, _) => DeadPayload::Notification(StoredNotification::from(&n)),
        Effect::Mark(mark) => DeadPayload::WindowMark { mark },
        Effect::Incident(i) => DeadPayload::Incident { update: i.update(String::new()) },
        Effect::Replay(_, done) => {
            let _ = done.send(Err(ReplayError::Stopped));
            return;
        }
    };
    payload.give_up(dead_letters, given_up).await;
}

/// Returns once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
