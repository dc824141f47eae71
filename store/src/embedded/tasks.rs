//! Scheduled tasks on SQLite ([`TaskStore`]): every change is one write job on the single
//! writer, so a claim (conditional move of `next_run_at` plus the run row) and a finish
//! (conditional `pending` → `done`, the run's commands and its per-device results) are each one
//! transaction.

use async_trait::async_trait;
use fleetpulse_proto::{AccountId, CommandId, DeviceId, EnterpriseId, TaskId, UnixMillis};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::commands::enqueue_on;
use super::{EmbeddedStore, db_after, json_column, json_ids, row_exists};
use crate::*;

/// The columns `task_from_row` reads, in its order.
const TASK_COLUMNS: &str = "id, enterprise_id, name, kind, args, deadline_s, targets, schedule, time_zone, missed, \
     state, created_by, created_at, updated_at, next_run_at";

/// The columns `run_from_row` reads, in its order.
const RUN_COLUMNS: &str = "id, task_id, scheduled_for, claimed_at, state, finished_at, matched, queued, refused, note";

fn conversion(index: usize, what: &str, value: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, format!("{what} {value:?}").into())
}

fn task_from_row(r: &Row<'_>) -> rusqlite::Result<Task> {
    let targets: String = r.get(6)?;
    let schedule: String = r.get(7)?;
    let missed: String = r.get(9)?;
    let state: String = r.get(10)?;
    Ok(Task {
        id: TaskId(r.get(0)?),
        enterprise_id: EnterpriseId(r.get(1)?),
        name: r.get(2)?,
        kind: r.get(3)?,
        args: r.get(4)?,
        deadline_s: r.get(5)?,
        targets: json_column(6, &targets, |t| serde_json::from_str(t))?,
        schedule: json_column(7, &schedule, |t| serde_json::from_str(t))?,
        time_zone: r.get(8)?,
        missed: MissedRuns::parse(&missed).ok_or_else(|| conversion(9, "missed", &missed))?,
        state: TaskState::parse(&state).ok_or_else(|| conversion(10, "state", &state))?,
        created_by: AccountId(r.get(11)?),
        created_at: UnixMillis(r.get(12)?),
        updated_at: UnixMillis(r.get(13)?),
        next_run_at: r.get::<_, Option<i64>>(14)?.map(UnixMillis),
    })
}

fn run_from_row(r: &Row<'_>) -> rusqlite::Result<TaskRun> {
    let state: String = r.get(4)?;
    Ok(TaskRun {
        id: TaskRunId(r.get(0)?),
        task_id: TaskId(r.get(1)?),
        scheduled_for: UnixMillis(r.get(2)?),
        claimed_at: UnixMillis(r.get(3)?),
        state: RunState::parse(&state).ok_or_else(|| conversion(4, "run state", &state))?,
        finished_at: r.get::<_, Option<i64>>(5)?.map(UnixMillis),
        matched: r.get(6)?,
        queued: r.get(7)?,
        refused: r.get(8)?,
        note: r.get(9)?,
    })
}

fn run_device_from_row(r: &Row<'_>) -> rusqlite::Result<RunDevice> {
    let state: Option<String> = r.get(3)?;
    Ok(RunDevice {
        device_id: DeviceId(r.get(0)?),
        command_id: r.get::<_, Option<u64>>(1)?.map(CommandId),
        refusal: r.get(2)?,
        command_state: state
            .map(|s| CommandState::parse(&s).ok_or_else(|| conversion(3, "command state", &s)))
            .transpose()?,
    })
}

fn json_text<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Backend(format!("encoding JSON: {e}")))
}

fn read_task(c: &Connection, id: TaskId) -> Result<Option<Task>> {
    let Ok(id) = i64::try_from(id.0) else { return Ok(None) };
    Ok(c.prepare_cached(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1"))?
        .query_row([id], task_from_row)
        .optional()?)
}

fn read_run(c: &Connection, id: TaskRunId) -> Result<Option<TaskRun>> {
    let Ok(id) = i64::try_from(id.0) else { return Ok(None) };
    Ok(c.prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM task_runs WHERE id = ?1"))?
        .query_row([id], run_from_row)
        .optional()?)
}

#[async_trait]
impl TaskStore for EmbeddedStore {
    async fn create_task(&self, new: NewTask, now: UnixMillis) -> Result<Task> {
        new.validate()?;
        let targets = json_text(&new.targets)?;
        let schedule = json_text(&new.schedule)?;
        self.write(1, move |c| {
            check_exists("enterprise", new.enterprise_id.0, row_exists(c, "enterprises", new.enterprise_id.0)?)?;
            check_exists("account", new.created_by.0, row_exists(c, "accounts", new.created_by.0)?)?;
            let live: u64 = c
                .prepare_cached(
                    "SELECT count(*) FROM tasks WHERE enterprise_id = ?1 AND state IN ('active', 'paused')",
                )?
                .query_row([new.enterprise_id.0], |r| r.get(0))?;
            if live >= MAX_LIVE_TASKS as u64 {
                return Err(StoreError::InvalidInput(format!(
                    "the enterprise already has {MAX_LIVE_TASKS} active or paused tasks"
                )));
            }
            c.prepare_cached(
                "INSERT INTO tasks (enterprise_id, name, kind, args, deadline_s, targets, schedule, time_zone, \
                 missed, state, created_by, created_at, updated_at, next_run_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'active', ?10, ?11, ?11, ?12)",
            )?
            .execute(params![
                new.enterprise_id.0,
                new.name,
                new.kind,
                new.args,
                new.deadline_s,
                targets,
                schedule,
                new.time_zone,
                new.missed.as_str(),
                new.created_by.0,
                now.0,
                new.next_run_at.0
            ])?;
            let id = TaskId(u64::try_from(c.last_insert_rowid()).unwrap_or_default());
            c.prepare_cached(
                "DELETE FROM tasks WHERE id IN (SELECT id FROM tasks WHERE enterprise_id = ?1 \
                 AND state IN ('cancelled', 'completed') ORDER BY id DESC LIMIT -1 OFFSET ?2)",
            )?
            .execute(params![new.enterprise_id.0, MAX_FINISHED_TASKS as i64])?;
            read_task(c, id)?.ok_or_else(|| StoreError::Backend("the task just stored is missing".into()))
        })
        .await
    }

    async fn task(&self, id: TaskId) -> Result<Option<Task>> {
        self.read(move |c| read_task(c, id)).await
    }

    async fn list_tasks(&self, enterprises: Option<Vec<EnterpriseId>>, page: Page) -> Result<Vec<Task>> {
        let limit = page.limit.min(MAX_TASK_PAGE);
        if let Some(list) = &enterprises {
            check_bound("enterprise ids", list.len(), MAX_ENTERPRISE_CHANNEL_FILTER)?;
        }
        if limit == 0 {
            return Ok(Vec::new());
        }
        let filter = enterprises.map(|list| json_ids(list.iter().map(|e| e.0))).transpose()?;
        let after = db_after(page.after);
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE (?1 IS NULL OR enterprise_id IN \
                 (SELECT value FROM json_each(?1))) AND id > ?2 ORDER BY id LIMIT ?3"
            ))?;
            let rows = st.query_map(params![filter, after, limit], task_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn change_task(&self, id: TaskId, change: TaskChange, now: UnixMillis) -> Result<Option<Task>> {
        let Ok(db_id) = i64::try_from(id.0) else { return Ok(None) };
        let next = match change {
            TaskChange::Pause => "next_run_at",
            TaskChange::Resume { .. } => "?3",
            TaskChange::Cancel => "NULL",
        };
        let sql = format!(
            "UPDATE tasks SET state = '{}', updated_at = ?2, next_run_at = {next} WHERE id = ?1 AND state IN {}",
            change.target().as_str(),
            change.sql_from()
        );
        let resume_at = match change {
            TaskChange::Resume { next_run_at } => Some(next_run_at.0),
            _ => None,
        };
        self.write(1, move |c| {
            let mut st = c.prepare_cached(&sql)?;
            if resume_at.is_some() {
                st.execute(params![db_id, now.0, resume_at])?;
            } else {
                st.execute(params![db_id, now.0])?;
            }
            read_task(c, id)
        })
        .await
    }

    async fn due_tasks(&self, now: UnixMillis, limit: u32) -> Result<Vec<Task>> {
        let limit = limit.min(MAX_TASK_PAGE);
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE state = 'active' AND next_run_at <= ?1 \
                 ORDER BY next_run_at, id LIMIT ?2"
            ))?;
            let rows = st.query_map(params![now.0, limit], task_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn next_due(&self) -> Result<Option<UnixMillis>> {
        self.read(|c| {
            let next: Option<i64> = c
                .prepare_cached("SELECT min(next_run_at) FROM tasks WHERE state = 'active'")?
                .query_row([], |r| r.get(0))?;
            Ok(next.map(UnixMillis))
        })
        .await
    }

    async fn claim_run(
        &self,
        task: TaskId,
        due: UnixMillis,
        next: Option<UnixMillis>,
        missed: bool,
        now: UnixMillis,
    ) -> Result<Option<TaskRun>> {
        let Ok(task_id) = i64::try_from(task.0) else { return Ok(None) };
        let (state, finished) = if missed { (RunState::Missed, Some(now.0)) } else { (RunState::Pending, None) };
        self.write(1, move |c| {
            let moved = c
                .prepare_cached(
                    "UPDATE tasks SET next_run_at = ?3, updated_at = ?4, \
                     state = CASE WHEN ?3 IS NULL THEN 'completed' ELSE state END \
                     WHERE id = ?1 AND state = 'active' AND next_run_at = ?2",
                )?
                .execute(params![task_id, due.0, next.map(|n| n.0), now.0])?;
            if moved == 0 {
                return Ok(None);
            }
            let inserted = c
                .prepare_cached(
                    "INSERT INTO task_runs (task_id, scheduled_for, claimed_at, state, finished_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (task_id, scheduled_for) DO NOTHING",
                )?
                .execute(params![task_id, due.0, now.0, state.as_str(), finished])?;
            if inserted == 0 {
                return Ok(None);
            }
            let run = TaskRunId(u64::try_from(c.last_insert_rowid()).unwrap_or_default());
            c.prepare_cached(
                "DELETE FROM task_runs WHERE id IN (SELECT id FROM task_runs WHERE task_id = ?1 \
                 AND state <> 'pending' ORDER BY id DESC LIMIT -1 OFFSET ?2)",
            )?
            .execute(params![task_id, MAX_RUNS_PER_TASK as i64])?;
            read_run(c, run)
        })
        .await
    }

    async fn pending_runs(&self, limit: u32) -> Result<Vec<TaskRun>> {
        let limit = limit.min(MAX_TASK_PAGE);
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {RUN_COLUMNS} FROM task_runs WHERE state = 'pending' ORDER BY id LIMIT ?1"
            ))?;
            let rows = st.query_map([limit], run_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn finish_run(&self, run: TaskRunId, plan: RunPlan, now: UnixMillis) -> Result<Option<Vec<RunDevice>>> {
        check_plan(&plan)?;
        let Ok(run_id) = i64::try_from(run.0) else { return Ok(None) };
        let note = bounded_note(&plan.note);
        self.write(plan.commands.len().max(1) * 2, move |c| {
            let finished = c
                .prepare_cached(
                    "UPDATE task_runs SET state = 'done', finished_at = ?2, matched = ?3, note = ?4 \
                     WHERE id = ?1 AND state = 'pending'",
                )?
                .execute(params![run_id, now.0, plan.matched, note])?;
            if finished == 0 {
                return Ok(None);
            }
            let answers = enqueue_on(c, &plan.commands, CommandLimits::default(), now)?;
            let mut insert = c.prepare_cached(
                "INSERT INTO task_run_devices (run_id, device_id, command_id, refusal) VALUES (?1, ?2, ?3, ?4)",
            )?;
            let mut results = Vec::with_capacity(answers.len());
            for (new, answer) in plan.commands.iter().zip(answers) {
                let result = match answer {
                    Ok(command) => RunDevice {
                        device_id: new.device_id,
                        command_id: Some(command.id),
                        command_state: Some(command.state),
                        refusal: None,
                    },
                    Err(refusal) => RunDevice {
                        device_id: new.device_id,
                        command_id: None,
                        command_state: None,
                        refusal: Some(refusal.to_string()),
                    },
                };
                insert.execute(params![run_id, result.device_id.0, result.command_id.map(|c| c.0), result.refusal])?;
                results.push(result);
            }
            let queued = results.iter().filter(|r| r.command_id.is_some()).count();
            c.prepare_cached("UPDATE task_runs SET queued = ?2, refused = ?3 WHERE id = ?1")?.execute(params![
                run_id,
                queued,
                results.len() - queued
            ])?;
            Ok(Some(results))
        })
        .await
    }

    async fn task_runs(&self, task: TaskId, page: Page) -> Result<Vec<TaskRun>> {
        let limit = page.limit.min(MAX_TASK_PAGE);
        let Ok(task) = i64::try_from(task.0) else { return Ok(Vec::new()) };
        let before = if page.after == 0 { i64::MAX } else { db_after(page.after) };
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {RUN_COLUMNS} FROM task_runs WHERE task_id = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3"
            ))?;
            let rows = st.query_map(params![task, before, limit], run_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn task_run(&self, run: TaskRunId) -> Result<Option<TaskRun>> {
        self.read(move |c| read_run(c, run)).await
    }

    async fn task_run_devices(&self, run: TaskRunId, page: Page) -> Result<Vec<RunDevice>> {
        let limit = page.limit.min(MAX_TASK_PAGE);
        let Ok(run) = i64::try_from(run.0) else { return Ok(Vec::new()) };
        let after = db_after(page.after);
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT r.device_id, r.command_id, r.refusal, c.state FROM task_run_devices r \
                 LEFT JOIN commands c ON c.id = r.command_id WHERE r.run_id = ?1 AND r.device_id > ?2 \
                 ORDER BY r.device_id LIMIT ?3",
            )?;
            let rows = st.query_map(params![run, after, limit], run_device_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn task_run_totals(&self, run: TaskRunId) -> Result<RunTotals> {
        let Ok(run) = i64::try_from(run.0) else { return Ok(RunTotals::default()) };
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT c.state, count(*) FROM task_run_devices r LEFT JOIN commands c ON c.id = r.command_id \
                 WHERE r.run_id = ?1 GROUP BY c.state",
            )?;
            let mut totals = RunTotals::default();
            for row in st.query_map([run], |r| Ok((r.get::<_, Option<String>>(0)?, r.get::<_, u64>(1)?)))? {
                let (state, count) = row?;
                totals.add(state.as_deref().and_then(CommandState::parse), count);
            }
            Ok(totals)
        })
        .await
    }
}
