//! The task scheduler (TSK-1): the thin tokio shell around `schedule.rs` that runs due tasks.
//!
//! One pass ([`Scheduler::tick`]) first finishes the runs a stopped scheduler left `pending`
//! (claimed, commands not yet queued), then claims every due task's run
//! ([`TaskStore::claim_run`], one conditional write: two schedulers, or a restart, never claim
//! an occurrence twice), resolves its targets (a device filter at run time, within the task's
//! enterprise), and finishes the run ([`TaskStore::finish_run`], one transaction: the commands
//! are queued with the task's creator as issuer, the per-device results stored) before waking
//! the devices' sessions. [`Scheduler::run`] repeats passes, sleeping until the next due time
//! but never longer than [`SchedulerConfig::max_sleep`] (tasks created meanwhile are seen by
//! then). Time comes from the API's [`Clock`], so tests drive passes on a manual clock.

use std::sync::Arc;
use std::time::Duration;

use fleetpulse_ingest::CommandSignal;
use fleetpulse_proto::{DeviceId, UnixMillis};
use fleetpulse_store::{
    DevicePageRequest, EntityStore, MAX_COMMAND_BATCH, MAX_DEVICE_PAGE, NewCommand, RunPlan, RunState, StoreError,
    Task, TaskRun, TaskTargets,
};
use tokio::sync::watch;

use crate::clock::Clock;
use crate::routes::tasks::task_filter;
use crate::schedule::{due_run, time_zone};

/// Settings of the scheduler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Longest sleep between passes (a task created during a sleep runs at most this late).
    pub max_sleep: Duration,
    /// A run found later than this after its time was missed (no scheduler ran); see
    /// [`fleetpulse_store::MissedRuns`].
    pub late_after: Duration,
    /// Due tasks or pending runs read at a time.
    pub batch: u32,
    /// Download links of `upgrade_firmware` tasks (the API's [`crate::ApiConfig::firmware`]).
    pub firmware: crate::firmware::FirmwareSettings,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            max_sleep: Duration::from_secs(30),
            late_after: Duration::from_secs(120),
            batch: 100,
            firmware: crate::firmware::FirmwareSettings::default(),
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedulerPass {
    /// Runs whose commands were queued (claimed now or left pending earlier).
    pub runs: u64,
    /// Pending runs left by an earlier scheduler that this pass finished.
    pub recovered: u64,
    /// Runs recorded as missed.
    pub missed: u64,
    /// Commands queued.
    pub commands: u64,
    /// Runs or claims that failed (logged; a pending run is retried by the next pass).
    pub failed: u64,
}

/// Batches one pass reads at most (a bound on a pass, whatever the store answers).
const MAX_BATCHES_PER_PASS: usize = 1_000;

/// Shortest sleep between passes (so that a store answering the same due task forever cannot
/// spin the loop).
const MIN_SLEEP: Duration = Duration::from_millis(100);

/// Sleep after a failed pass.
const ERROR_SLEEP: Duration = Duration::from_secs(5);

/// Runs due tasks. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Scheduler {
    store: Arc<dyn EntityStore>,
    signal: CommandSignal,
    clock: Clock,
    config: SchedulerConfig,
    /// Told when a run starts, so that maintenance windows tied to the task are active at once.
    alarms: Option<fleetpulse_alarm_service::AlarmHandle>,
}

impl Scheduler {
    /// A scheduler over the store, waking sessions through `signal`, reading time from `clock`.
    pub fn new(store: Arc<dyn EntityStore>, signal: CommandSignal, clock: Clock, config: SchedulerConfig) -> Scheduler {
        Scheduler { store, signal, clock, config, alarms: None }
    }

    /// Tells the alarm service when a task's run starts (maintenance windows tied to tasks).
    pub fn with_alarms(mut self, alarms: fleetpulse_alarm_service::AlarmHandle) -> Scheduler {
        self.alarms = Some(alarms);
        self
    }

    /// Passes until `stop` turns true (or its sender is gone).
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            let wait = match self.tick().await {
                Ok(_) => self.until_next_due().await,
                Err(error) => {
                    tracing::warn!(message = "Scheduler pass failed; retrying.", %error);
                    ERROR_SLEEP.min(self.config.max_sleep)
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                changed = stop.changed() => if changed.is_err() { return },
            }
            if *stop.borrow() {
                return;
            }
        }
    }

    /// How long to sleep until the next due task, within [`MIN_SLEEP`] and `max_sleep`.
    async fn until_next_due(&self) -> Duration {
        let max = self.config.max_sleep.max(MIN_SLEEP);
        match self.store.next_due().await {
            Ok(Some(next)) => {
                let ms = u64::try_from(next.0.saturating_sub(self.clock.now().0)).unwrap_or(0);
                Duration::from_millis(ms).clamp(MIN_SLEEP, max)
            }
            Ok(None) => max,
            Err(error) => {
                tracing::warn!(message = "Reading the next due task failed.", %error);
                ERROR_SLEEP.min(max)
            }
        }
    }

    /// One pass at the clock's time: finishes pending runs, then runs (or records as missed)
    /// every due task. A run or claim that fails is logged and counted, and the pass goes on
    /// with the others (what was claimed stays pending; the next pass finishes it); `Err` only
    /// when the store cannot even list what is pending or due.
    pub async fn tick(&self) -> Result<SchedulerPass, StoreError> {
        let now = self.clock.now();
        let mut pass = SchedulerPass::default();
        let batch = self.config.batch.max(1);
        for _ in 0..MAX_BATCHES_PER_PASS {
            let pending = self.store.pending_runs(batch).await?;
            let failed_before = pass.failed;
            for run in &pending {
                match self.finish(run, now, &mut pass).await {
                    Ok(()) => pass.recovered += 1,
                    Err(error) => self.failed(&mut pass, run.task_id, &error),
                }
            }
            // A batch that failed whole would be read again as it is: the next pass retries it.
            if pending.len() < batch as usize || pass.failed - failed_before == pending.len() as u64 {
                break;
            }
        }
        let late_after = i64::try_from(self.config.late_after.as_millis()).unwrap_or(i64::MAX);
        for _ in 0..MAX_BATCHES_PER_PASS {
            let due = self.store.due_tasks(now, batch).await?;
            let failed_before = pass.failed;
            for task in &due {
                if let Err(error) = self.run_due(task, now, late_after, &mut pass).await {
                    self.failed(&mut pass, task.id, &error);
                }
            }
            if due.len() < batch as usize || pass.failed - failed_before == due.len() as u64 {
                break;
            }
        }
        Ok(pass)
    }

    fn failed(&self, pass: &mut SchedulerPass, task: fleetpulse_proto::TaskId, error: &StoreError) {
        pass.failed += 1;
        tracing::warn!(message = "A scheduled task run failed; the next pass retries it.", task = %task, %error);
    }

    /// Claims the due run of `task` and runs it, or records it as missed.
    async fn run_due(
        &self,
        task: &Task,
        now: UnixMillis,
        late_after: i64,
        pass: &mut SchedulerPass,
    ) -> Result<(), StoreError> {
        let tz = time_zone(&task.time_zone).unwrap_or_else(|error| {
            tracing::warn!(message = "A task's time zone is unknown; using UTC.", task = %task.id, %error);
            jiff::tz::TimeZone::UTC
        });
        let Some(d) = due_run(task, &tz, now, late_after) else { return Ok(()) };
        match self.store.claim_run(task.id, d.due, d.next, d.missed, now).await? {
            Some(run) if run.state == RunState::Pending => {
                if let Some(alarms) = &self.alarms {
                    alarms.send(fleetpulse_alarm_service::Control::TaskStarted(task.id)).await;
                }
                self.finish(&run, now, pass).await?;
            }
            Some(run) => {
                pass.missed += 1;
                tracing::info!(message = "Recorded a missed task run.", task = %task.id, run = %run.id);
            }
            // Another scheduler claimed it, or the task changed meanwhile.
            None => {}
        }
        Ok(())
    }

    /// Resolves the run's targets, finishes it (queues its commands) and wakes their devices.
    async fn finish(&self, run: &TaskRun, now: UnixMillis, pass: &mut SchedulerPass) -> Result<(), StoreError> {
        let task = self.store.task(run.task_id).await?;
        // TEN-1: an enterprise whose channel turned device management off gets nothing sent.
        let managed = match &task {
            Some(task) => self.store.enterprise(task.enterprise_id).await?.is_none_or(|e| e.profile.device_management),
            None => true,
        };
        let (plan, pushes) = match task {
            Some(_) if !managed => {
                let note = Some("the enterprise's device management permission is off: nothing was sent".into());
                (RunPlan { note, ..RunPlan::default() }, Default::default())
            }
            Some(task) if task.kind == crate::provisioning::PROVISION_TASK => {
                let (devices, matched, note) = self.targets(&task).await?;
                crate::provisioning::plan_task_run(self.store.as_ref(), &task, devices, matched, note, now).await?
            }
            Some(task) => (self.plan(&task, now).await?, Default::default()),
            None => {
                (RunPlan { note: Some("the task no longer exists".into()), ..RunPlan::default() }, Default::default())
            }
        };
        let Some(results) = self.store.finish_run(run.id, plan, now).await? else {
            // Another scheduler finished it.
            return Ok(());
        };
        crate::provisioning::record_task_pushes(self.store.as_ref(), &results, pushes, now).await?;
        let woken: Vec<DeviceId> = results.iter().filter(|r| r.command_id.is_some()).map(|r| r.device_id).collect();
        pass.runs += 1;
        pass.commands += woken.len() as u64;
        tracing::info!(
            message = "Ran a scheduled task.",
            task = %run.task_id,
            run = %run.id,
            queued = woken.len(),
            refused = results.len() - woken.len()
        );
        self.signal.wake(woken);
        Ok(())
    }

    /// The commands of a run of `task` at `now`: one per target device, issued by the task's
    /// creator, with the task's deadline.
    async fn plan(&self, task: &Task, now: UnixMillis) -> Result<RunPlan, StoreError> {
        let (devices, matched, note) = self.targets(task).await?;
        if task.kind == fleetpulse_proto::commands::UPGRADE_FIRMWARE {
            let (commands, left_out) =
                crate::firmware::task_commands(self.store.as_ref(), &self.config.firmware, task, devices, now).await?;
            let note = match (note, left_out) {
                (Some(a), Some(b)) => Some(format!("{a}; {b}")),
                (a, b) => a.or(b),
            };
            return Ok(RunPlan { commands, matched, note });
        }
        let deadline_ms = i64::try_from(task.deadline_s.saturating_mul(1_000)).unwrap_or(i64::MAX);
        let commands = devices
            .into_iter()
            .map(|device_id| NewCommand {
                device_id,
                enterprise_id: task.enterprise_id,
                kind: task.kind.clone(),
                args: task.args.clone(),
                deadline: UnixMillis(now.0.saturating_add(deadline_ms)),
                issued_by: task.created_by,
            })
            .collect();
        Ok(RunPlan { commands, matched, note })
    }

    /// The task's target devices now (at most [`MAX_COMMAND_BATCH`], distinct), how many
    /// matched, and a note when they were cut or the filter no longer parses.
    async fn targets(&self, task: &Task) -> Result<(Vec<DeviceId>, u64, Option<String>), StoreError> {
        let raw = match &task.targets {
            TaskTargets::DeviceIds(ids) => return Ok((ids.clone(), ids.len() as u64, None)),
            TaskTargets::Filter(raw) => raw,
        };
        let mut query = match task_filter(raw) {
            Ok(query) => query,
            Err(error) => return Ok((Vec::new(), 0, Some(format!("the device filter no longer applies: {error}")))),
        };
        // Resolved at run time, within the task's enterprise only.
        query.enterprises = Some(vec![task.enterprise_id]);
        query.channels = None;
        let mut devices = Vec::new();
        let mut cursor = None;
        let mut matched = 0;
        while devices.len() < MAX_COMMAND_BATCH {
            let limit =
                MAX_DEVICE_PAGE.min(u32::try_from(MAX_COMMAND_BATCH - devices.len()).unwrap_or(MAX_DEVICE_PAGE));
            let page = self.store.query_devices(query.clone(), DevicePageRequest { cursor, limit }).await?;
            matched = page.total;
            devices.extend(page.items.iter().map(|d| d.device.id));
            cursor = page.next_cursor;
            if cursor.is_none() {
                break;
            }
        }
        let note = (matched > devices.len() as u64).then(|| {
            format!("the filter matched {matched} devices; the first {} in its order were targeted", devices.len())
        });
        Ok((devices, matched, note))
    }
}
