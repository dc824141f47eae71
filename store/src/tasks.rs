//! Scheduled tasks (`TaskStore`, TSK-1, issue 11): a command kind and its arguments, the devices
//! it targets (ids, or a device-list filter resolved at run time) and a schedule; the runs of a
//! task and the per-device result of each run.
//!
//! A task is *due* when it is active and its `next_run_at` has come. Running it takes two
//! atomic steps, so that a run happens once whatever crashes or how many schedulers race:
//!
//! | step | one transaction | when it loses |
//! | --- | --- | --- |
//! | [`TaskStore::claim_run`] | `next_run_at` moves from the due time to the next one (only if it still is the due time) and the run row is inserted `pending` (unique per task and scheduled time) | another scheduler claimed it: nothing changes |
//! | [`TaskStore::finish_run`] | the run moves from `pending` to `done` (only if it still is pending), its commands are queued and the per-device results stored | the run was finished already: nothing is queued |
//!
//! A scheduler that crashes between the two leaves a `pending` run; the next start finishes it
//! ([`TaskStore::pending_runs`]), and since finishing is one transaction its commands are queued
//! exactly once.
//!
//! | change | active | paused | cancelled, completed |
//! | --- | --- | --- | --- |
//! | pause | paused | – | – |
//! | resume | – | active | – |
//! | cancel | cancelled | cancelled | – |
//! | claim of the last run | completed | – | – |

use async_trait::async_trait;
use fleetpulse_proto::{AccountId, CommandId, DeviceId, EnterpriseId, TaskId, UnixMillis};
use serde::{Deserialize, Serialize};

use crate::{
    CommandState, MAX_COMMAND_ARGS, MAX_COMMAND_BATCH, MAX_COMMAND_KIND, NewCommand, Page, Result, StoreError,
};

/// Most tasks of one enterprise that are active or paused.
pub const MAX_LIVE_TASKS: usize = 1_000;

/// Most finished (cancelled or completed) tasks kept per enterprise: creating a task deletes the
/// oldest finished ones beyond it, with their runs.
pub const MAX_FINISHED_TASKS: usize = 1_000;

/// Runs kept per task: claiming a run deletes the oldest finished runs beyond it.
pub const MAX_RUNS_PER_TASK: usize = 100;

/// Most rows of one task, run or run-device page.
pub const MAX_TASK_PAGE: u32 = 1_000;

/// Longest task name, in characters.
pub const MAX_TASK_NAME: usize = 128;

/// Longest device filter of a task (a device-list query string), in bytes.
pub const MAX_TASK_FILTER: usize = 4_096;

/// Longest time zone name, in characters.
pub const MAX_TASK_TIME_ZONE: usize = 64;

/// Longest note of a run (why it queued nothing, or that its targets were cut), in bytes.
pub const MAX_RUN_NOTE: usize = 1_024;

/// Shortest and longest lifetime of a task's commands, in seconds (their deadline is the run's
/// time plus this).
pub const TASK_DEADLINE_RANGE_S: std::ops::RangeInclusive<u64> = 60..=7 * 86_400;

/// The identifier of a run of a task (assigned by the store; unique across tasks).
/// At most [`fleetpulse_proto::MAX_ID`]: deserializing a larger value fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct TaskRunId(#[serde(deserialize_with = "fleetpulse_proto::deserialize_id")] pub u64);

impl std::fmt::Display for TaskRunId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Scheduled tasks, their runs and the per-device results of each run.
#[async_trait]
pub trait TaskStore: Send + Sync + 'static {
    /// Stores a task (created at `now`). [`StoreError::InvalidInput`] (and nothing is stored)
    /// if [`NewTask::validate`] refuses it, if its enterprise or creator does not exist, or if
    /// the enterprise already has [`MAX_LIVE_TASKS`] active or paused tasks (checked atomically
    /// with the insert). Deletes the enterprise's oldest finished tasks beyond
    /// [`MAX_FINISHED_TASKS`].
    async fn create_task(&self, new: NewTask, now: UnixMillis) -> Result<Task>;
    /// The task with this id.
    async fn task(&self, id: TaskId) -> Result<Option<Task>>;
    /// Tasks of the given enterprises (all when `None`; none for an empty list), ordered by id,
    /// with an id above `page.after`, at most `page.limit` (never above [`MAX_TASK_PAGE`]).
    async fn list_tasks(&self, enterprises: Option<Vec<EnterpriseId>>, page: Page) -> Result<Vec<Task>>;
    /// Applies a change when the table of this module allows it from the task's state (a
    /// resumed task gets the change's `next_run_at`; a cancelled one none); answers the task as
    /// it is now (the caller tells by its state whether the change applied), `None` for an
    /// unknown id.
    async fn change_task(&self, id: TaskId, change: TaskChange, now: UnixMillis) -> Result<Option<Task>>;
    /// Active tasks whose `next_run_at` is at or before `now`, earliest first, at most `limit`
    /// (never above [`MAX_TASK_PAGE`]).
    async fn due_tasks(&self, now: UnixMillis, limit: u32) -> Result<Vec<Task>>;
    /// The earliest `next_run_at` of the active tasks.
    async fn next_due(&self) -> Result<Option<UnixMillis>>;
    /// Claims the task's run due at `due` (see the module table): only if the task is active and
    /// its `next_run_at` is `due`, it moves to `next` (the task completes when `next` is `None`)
    /// and the run is stored, `pending`, or `missed` (finished at `now`) when `missed`. The
    /// task's oldest finished runs beyond [`MAX_RUNS_PER_TASK`] are deleted. `None` when the
    /// claim lost (another scheduler claimed it, the task was paused or cancelled).
    async fn claim_run(
        &self,
        task: TaskId,
        due: UnixMillis,
        next: Option<UnixMillis>,
        missed: bool,
        now: UnixMillis,
    ) -> Result<Option<TaskRun>>;
    /// Pending runs (claimed, not finished), oldest first, at most `limit` (never above
    /// [`MAX_TASK_PAGE`]).
    async fn pending_runs(&self, limit: u32) -> Result<Vec<TaskRun>>;
    /// Finishes a pending run (see the module table): in one transaction the run becomes
    /// `done` at `now`, the plan's commands are queued
    /// ([`CommandStore::enqueue_commands`](crate::CommandStore::enqueue_commands), default
    /// limits) and each device's command or refusal is stored. Answers the per-device results;
    /// `None` (and nothing is queued) when the run is unknown or not pending.
    /// [`StoreError::InvalidInput`] (and nothing changes) for more than [`MAX_COMMAND_BATCH`]
    /// commands or a device twice.
    async fn finish_run(&self, run: TaskRunId, plan: RunPlan, now: UnixMillis) -> Result<Option<Vec<RunDevice>>>;
    /// The task's runs, newest first: those with an id below `page.after` when it is above 0,
    /// else from the newest; at most `page.limit` (never above [`MAX_TASK_PAGE`]).
    async fn task_runs(&self, task: TaskId, page: Page) -> Result<Vec<TaskRun>>;
    /// The run with this id.
    async fn task_run(&self, run: TaskRunId) -> Result<Option<TaskRun>>;
    /// The run's per-device results with their command's state now, ordered by device id,
    /// above `page.after`, at most `page.limit` (never above [`MAX_TASK_PAGE`]).
    async fn task_run_devices(&self, run: TaskRunId, page: Page) -> Result<Vec<RunDevice>>;
    /// How the run's devices stand now, counted by their command's state.
    async fn task_run_totals(&self, run: TaskRunId) -> Result<RunTotals>;
}

/// A day of the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Weekday {
    /// Monday.
    Monday,
    /// Tuesday.
    Tuesday,
    /// Wednesday.
    Wednesday,
    /// Thursday.
    Thursday,
    /// Friday.
    Friday,
    /// Saturday.
    Saturday,
    /// Sunday.
    Sunday,
}

impl Weekday {
    /// Monday to Sunday.
    pub const ALL: [Weekday; 7] = [
        Weekday::Monday,
        Weekday::Tuesday,
        Weekday::Wednesday,
        Weekday::Thursday,
        Weekday::Friday,
        Weekday::Saturday,
        Weekday::Sunday,
    ];

    /// 1 (Monday) to 7 (Sunday), as ISO 8601 numbers them.
    pub fn iso_number(self) -> i8 {
        Weekday::ALL.iter().position(|d| *d == self).map_or(1, |i| i as i8 + 1)
    }
}

/// A local time of day, minute precision: `"HH:MM"` (24-hour clock) in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeOfDay {
    /// 0 to 23.
    pub hour: u8,
    /// 0 to 59.
    pub minute: u8,
}

impl TimeOfDay {
    /// Parses `"HH:MM"` (two digits each, 00:00 to 23:59).
    pub fn parse(s: &str) -> Option<TimeOfDay> {
        let (h, m) = s.split_once(':')?;
        let two = |t: &str| (t.len() == 2 && t.bytes().all(|b| b.is_ascii_digit())).then(|| t.parse::<u8>().ok())?;
        let (hour, minute) = (two(h)?, two(m)?);
        (hour < 24 && minute < 60).then_some(TimeOfDay { hour, minute })
    }
}

impl std::fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:02}:{:02}", self.hour, self.minute)
    }
}

impl Serialize for TimeOfDay {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TimeOfDay {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TimeOfDay::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not a time of day (HH:MM, 00:00 to 23:59)")))
    }
}

/// A time of day is a string `HH:MM`.
impl schemars::JsonSchema for TimeOfDay {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "TimeOfDay".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$", "example": "03:30"})
    }
}

/// When a task runs. Local times are in the task's time zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TaskSchedule {
    /// Once, at this instant; the task completes after the run.
    Once {
        /// When (unix milliseconds).
        at: UnixMillis,
    },
    /// Every day at this local time.
    Daily {
        /// Local time of day.
        time: TimeOfDay,
    },
    /// On these days of the week at this local time.
    Weekly {
        /// The days (at least one).
        days: Vec<Weekday>,
        /// Local time of day.
        time: TimeOfDay,
    },
}

/// Which devices a task's runs target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TaskTargets {
    /// These devices (1 to [`MAX_COMMAND_BATCH`], distinct).
    DeviceIds(Vec<DeviceId>),
    /// The devices of the task's enterprise matching this device-list filter at run time (the
    /// query string of `GET /api/v1/devices` without tenant, cursor or limit parameters; at most
    /// [`MAX_TASK_FILTER`] bytes).
    Filter(String),
}

/// What a run missed while no scheduler ran (the server was down) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MissedRuns {
    /// It runs once as soon as a scheduler runs again (however many occurrences were missed).
    #[default]
    RunOnce,
    /// It is recorded as a `missed` run and the task waits for its next occurrence.
    Skip,
}

impl MissedRuns {
    /// Name in the store and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            MissedRuns::RunOnce => "run_once",
            MissedRuns::Skip => "skip",
        }
    }

    /// Inverse of [`MissedRuns::as_str`].
    pub fn parse(s: &str) -> Option<MissedRuns> {
        [MissedRuns::RunOnce, MissedRuns::Skip].into_iter().find(|m| m.as_str() == s)
    }
}

/// Where a task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Runs when due.
    Active,
    /// Does not run until resumed.
    Paused,
    /// Cancelled by an account (final).
    Cancelled,
    /// A one-shot task after its run (final).
    Completed,
}

impl TaskState {
    /// Every state.
    pub const ALL: [TaskState; 4] = [TaskState::Active, TaskState::Paused, TaskState::Cancelled, TaskState::Completed];

    /// Name in the store and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Active => "active",
            TaskState::Paused => "paused",
            TaskState::Cancelled => "cancelled",
            TaskState::Completed => "completed",
        }
    }

    /// Inverse of [`TaskState::as_str`].
    pub fn parse(s: &str) -> Option<TaskState> {
        TaskState::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Cancelled or completed.
    pub fn is_finished(self) -> bool {
        matches!(self, TaskState::Cancelled | TaskState::Completed)
    }
}

/// A change an account makes to a task ([`TaskStore::change_task`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskChange {
    /// Active → paused.
    Pause,
    /// Paused → active, next running at `next_run_at`.
    Resume {
        /// The next occurrence after the time of resuming.
        next_run_at: UnixMillis,
    },
    /// Active or paused → cancelled.
    Cancel,
}

impl TaskChange {
    /// The state a task in `from` moves to, or `None` when the change does not apply.
    pub fn apply(self, from: TaskState) -> Option<TaskState> {
        match (self, from) {
            (TaskChange::Pause, TaskState::Active) => Some(TaskState::Paused),
            (TaskChange::Resume { .. }, TaskState::Paused) => Some(TaskState::Active),
            (TaskChange::Cancel, TaskState::Active | TaskState::Paused) => Some(TaskState::Cancelled),
            _ => None,
        }
    }

    /// The states the change applies to, as an SQL list (`('active')`).
    pub(crate) fn sql_from(self) -> &'static str {
        match self {
            TaskChange::Pause => "('active')",
            TaskChange::Resume { .. } => "('paused')",
            TaskChange::Cancel => "('active', 'paused')",
        }
    }

    /// The state it leads to.
    pub fn target(self) -> TaskState {
        match self {
            TaskChange::Pause => TaskState::Paused,
            TaskChange::Resume { .. } => TaskState::Active,
            TaskChange::Cancel => TaskState::Cancelled,
        }
    }
}

/// A task to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTask {
    /// The enterprise whose devices it targets.
    pub enterprise_id: EnterpriseId,
    /// A name for people (1 to [`MAX_TASK_NAME`] characters).
    pub name: String,
    /// The command kind (checked against the catalog by the caller).
    pub kind: String,
    /// The command's arguments, JSON text (defaults filled in by the caller).
    pub args: String,
    /// Lifetime of each run's commands, seconds ([`TASK_DEADLINE_RANGE_S`]).
    pub deadline_s: u64,
    /// Which devices.
    pub targets: TaskTargets,
    /// When.
    pub schedule: TaskSchedule,
    /// IANA time zone of the schedule's local times.
    pub time_zone: String,
    /// What a run missed while the server was down does.
    pub missed: MissedRuns,
    /// The account that created it (its commands are issued by it).
    pub created_by: AccountId,
    /// Its first run (computed by the caller from the schedule).
    pub next_run_at: UnixMillis,
}

impl NewTask {
    /// [`StoreError::InvalidInput`] naming the first field out of its bounds.
    pub fn validate(&self) -> Result<()> {
        let name_chars = self.name.chars().count();
        if name_chars == 0 || name_chars > MAX_TASK_NAME || self.name.chars().any(char::is_control) {
            return Err(invalid(format!("name must have 1 to {MAX_TASK_NAME} characters and no control characters")));
        }
        let kind_ok = !self.kind.is_empty()
            && self.kind.len() <= MAX_COMMAND_KIND
            && self.kind.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !kind_ok {
            return Err(invalid("kind must be 1 to 64 characters of a-z, 0-9 and _"));
        }
        if self.args.len() > MAX_COMMAND_ARGS || serde_json::from_str::<serde::de::IgnoredAny>(&self.args).is_err() {
            return Err(invalid(format!("args must be JSON of at most {MAX_COMMAND_ARGS} bytes")));
        }
        if !TASK_DEADLINE_RANGE_S.contains(&self.deadline_s) {
            return Err(invalid(format!(
                "deadline_s must be between {} and {}",
                TASK_DEADLINE_RANGE_S.start(),
                TASK_DEADLINE_RANGE_S.end()
            )));
        }
        match &self.targets {
            TaskTargets::DeviceIds(ids) => {
                if ids.is_empty() || ids.len() > MAX_COMMAND_BATCH {
                    return Err(invalid(format!("device_ids must list 1 to {MAX_COMMAND_BATCH} devices")));
                }
                let mut sorted = ids.clone();
                sorted.sort_unstable();
                sorted.dedup();
                if sorted.len() != ids.len() {
                    return Err(invalid("device_ids lists a device twice"));
                }
            }
            TaskTargets::Filter(filter) => {
                if filter.len() > MAX_TASK_FILTER || filter.chars().any(char::is_control) {
                    return Err(invalid(format!("filter must be at most {MAX_TASK_FILTER} bytes of text")));
                }
            }
        }
        if matches!(&self.schedule, TaskSchedule::Weekly { days, .. } if days.is_empty()) {
            return Err(invalid("a weekly schedule names at least one day"));
        }
        let zone_ok = !self.time_zone.is_empty()
            && self.time_zone.chars().count() <= MAX_TASK_TIME_ZONE
            && self.time_zone.chars().all(|c| c.is_ascii_alphanumeric() || "/_+-:".contains(c));
        if !zone_ok {
            return Err(invalid(format!("time_zone {:?} is not a time zone name", self.time_zone)));
        }
        Ok(())
    }
}

fn invalid(message: impl Into<String>) -> StoreError {
    StoreError::InvalidInput(message.into())
}

/// A stored task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Task {
    /// Identifier.
    pub id: TaskId,
    /// The enterprise whose devices it targets.
    pub enterprise_id: EnterpriseId,
    /// A name for people.
    pub name: String,
    /// The command kind.
    pub kind: String,
    /// The command's arguments (JSON text, defaults filled in).
    pub args: String,
    /// Lifetime of each run's commands, seconds.
    pub deadline_s: u64,
    /// Which devices.
    pub targets: TaskTargets,
    /// When.
    pub schedule: TaskSchedule,
    /// IANA time zone of the schedule's local times.
    pub time_zone: String,
    /// What a run missed while the server was down does.
    pub missed: MissedRuns,
    /// Where it stands.
    pub state: TaskState,
    /// The account that created it.
    pub created_by: AccountId,
    /// When it was created.
    pub created_at: UnixMillis,
    /// When it last changed (created, paused, resumed, cancelled, claimed).
    pub updated_at: UnixMillis,
    /// Its next run (kept while paused; none once cancelled or completed).
    pub next_run_at: Option<UnixMillis>,
}

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Claimed; its commands are not queued yet.
    Pending,
    /// Its commands are queued (or refused, per device).
    Done,
    /// Missed while the server was down, not run (the task's `missed` is `skip`).
    Missed,
}

impl RunState {
    /// Name in the store and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Pending => "pending",
            RunState::Done => "done",
            RunState::Missed => "missed",
        }
    }

    /// Inverse of [`RunState::as_str`].
    pub fn parse(s: &str) -> Option<RunState> {
        [RunState::Pending, RunState::Done, RunState::Missed].into_iter().find(|r| r.as_str() == s)
    }
}

/// A run of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct TaskRun {
    /// Identifier.
    pub id: TaskRunId,
    /// Its task.
    pub task_id: TaskId,
    /// The occurrence it is the run of.
    pub scheduled_for: UnixMillis,
    /// When a scheduler claimed it.
    pub claimed_at: UnixMillis,
    /// Where it stands.
    pub state: RunState,
    /// When its commands were queued (or it was recorded missed).
    pub finished_at: Option<UnixMillis>,
    /// Devices the targets resolved to (before the bound of [`MAX_COMMAND_BATCH`]).
    pub matched: u64,
    /// Devices that got a command.
    pub queued: u64,
    /// Devices whose command was refused.
    pub refused: u64,
    /// Why it queued nothing, or that its targets were cut.
    pub note: Option<String>,
}

/// What finishing a run queues ([`TaskStore::finish_run`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunPlan {
    /// One command per target device (at most [`MAX_COMMAND_BATCH`], one per device).
    pub commands: Vec<NewCommand>,
    /// Devices the targets resolved to.
    pub matched: u64,
    /// Why nothing is queued, or that the targets were cut (truncated to [`MAX_RUN_NOTE`]).
    pub note: Option<String>,
}

/// What a run did for one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct RunDevice {
    /// The device.
    pub device_id: DeviceId,
    /// Its command, when one was queued.
    pub command_id: Option<CommandId>,
    /// The command's state now (when one was queued).
    pub command_state: Option<CommandState>,
    /// Why no command was queued.
    pub refusal: Option<String>,
}

/// How a run's devices stand now (PDMS-E's total / success / failure / in progress).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, schemars::JsonSchema)]
pub struct RunTotals {
    /// Devices of the run.
    pub total: u64,
    /// Commands that succeeded.
    pub succeeded: u64,
    /// Commands that failed, expired or were cancelled, and devices refused a command.
    pub failed: u64,
    /// Commands still pending.
    pub in_progress: u64,
}

impl RunTotals {
    /// Counts a group of `count` devices whose command is in `state` (`None`: refused).
    pub(crate) fn add(&mut self, state: Option<CommandState>, count: u64) {
        self.total += count;
        match state {
            Some(CommandState::Succeeded) => self.succeeded += count,
            Some(s) if s.is_pending() => self.in_progress += count,
            _ => self.failed += count,
        }
    }
}

/// Checks a plan: the batch bound and one command per device.
pub(crate) fn check_plan(plan: &RunPlan) -> Result<()> {
    crate::check_bound("commands", plan.commands.len(), MAX_COMMAND_BATCH)?;
    let mut devices: Vec<DeviceId> = plan.commands.iter().map(|c| c.device_id).collect();
    devices.sort_unstable();
    devices.dedup();
    if devices.len() != plan.commands.len() {
        return Err(invalid("a run queues one command per device"));
    }
    Ok(())
}

/// The note as stored: truncated to [`MAX_RUN_NOTE`].
pub(crate) fn bounded_note(note: &Option<String>) -> Option<String> {
    note.as_deref().map(|n| crate::commands::truncate_utf8(n, MAX_RUN_NOTE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_of_day_parse_strictly() {
        assert_eq!(TimeOfDay::parse("03:30"), Some(TimeOfDay { hour: 3, minute: 30 }));
        assert_eq!(TimeOfDay::parse("23:59").map(|t| t.to_string()).as_deref(), Some("23:59"));
        for bad in ["24:00", "3:30", "03:60", "0330", "03:30:00", "", "ab:cd", "+1:30"] {
            assert_eq!(TimeOfDay::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn schedules_and_targets_read_their_json() {
        let s: TaskSchedule =
            serde_json::from_str(r#"{"kind":"weekly","days":["monday","friday"],"time":"07:05"}"#).expect("weekly");
        assert_eq!(
            s,
            TaskSchedule::Weekly {
                days: vec![Weekday::Monday, Weekday::Friday],
                time: TimeOfDay { hour: 7, minute: 5 }
            }
        );
        assert!(serde_json::from_str::<TaskSchedule>(r#"{"kind":"daily","time":"7:05"}"#).is_err());
        assert!(serde_json::from_str::<TaskSchedule>(r#"{"kind":"hourly"}"#).is_err());
        let t: TaskTargets = serde_json::from_str(r#"{"filter":"model=T54W"}"#).expect("filter");
        assert_eq!(t, TaskTargets::Filter("model=T54W".into()));
        assert_eq!(
            serde_json::to_string(&TaskTargets::DeviceIds(vec![DeviceId(4)])).ok().as_deref(),
            Some(r#"{"device_ids":[4]}"#)
        );
        assert_eq!(Weekday::Sunday.iso_number(), 7);
    }

    #[test]
    fn changes_follow_the_table() {
        use TaskState::*;
        let row = |c: TaskChange| TaskState::ALL.map(|s| c.apply(s));
        assert_eq!(row(TaskChange::Pause), [Some(Paused), None, None, None]);
        assert_eq!(row(TaskChange::Resume { next_run_at: UnixMillis(1) }), [None, Some(Active), None, None]);
        assert_eq!(row(TaskChange::Cancel), [Some(Cancelled), Some(Cancelled), None, None]);
        for c in [TaskChange::Pause, TaskChange::Resume { next_run_at: UnixMillis(1) }, TaskChange::Cancel] {
            let from: Vec<String> = TaskState::ALL
                .into_iter()
                .filter(|s| c.apply(*s).is_some())
                .map(|s| format!("'{}'", s.as_str()))
                .collect();
            assert_eq!(format!("({})", from.join(", ")), c.sql_from());
            assert!(TaskState::ALL.iter().all(|s| c.apply(*s).is_none_or(|t| t == c.target())));
        }
    }

    #[test]
    fn totals_count_refusals_as_failures() {
        let mut t = RunTotals::default();
        t.add(Some(CommandState::Succeeded), 2);
        t.add(Some(CommandState::Sent), 3);
        t.add(Some(CommandState::Expired), 1);
        t.add(None, 4);
        assert_eq!(t, RunTotals { total: 10, succeeded: 2, failed: 5, in_progress: 3 });
    }
}
