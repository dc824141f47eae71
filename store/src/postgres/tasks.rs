//! Scheduled tasks on PostgreSQL ([`TaskStore`]): a claim is one transaction whose conditional
//! `UPDATE` of the task's `next_run_at` takes the row lock (a concurrent claim waits, then finds
//! the time moved and claims nothing); a finish is one transaction whose conditional `pending`
//! → `done` update does the same for the run, then queues the commands under the command
//! queue's enterprise lock and stores the per-device results.

use async_trait::async_trait;
use fleetpulse_proto::{AccountId, CommandId, DeviceId, EnterpriseId, TaskId, UnixMillis};
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, Row};

use super::commands::enqueue_in;
use super::{PgEntityStore, backend, db_id, row_id};
use crate::*;

/// The columns `task_from_row` reads.
const TASK_COLUMNS: &str = "id, enterprise_id, name, kind, args, deadline_s, targets, schedule, time_zone, missed, \
     state, created_by, created_at, updated_at, next_run_at";

/// The columns `run_from_row` reads.
const RUN_COLUMNS: &str = "id, task_id, scheduled_for, claimed_at, state, finished_at, matched, queued, refused, note";

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Backend(format!("task row with an unknown {what} {value:?}"))
}

fn task_from_row(r: &PgRow) -> Result<Task> {
    let get_text = |column: &str| -> Result<String> { r.try_get(column).map_err(backend) };
    let get_i64 = |column: &str| -> Result<i64> { r.try_get(column).map_err(backend) };
    let (targets, schedule) = (get_text("targets")?, get_text("schedule")?);
    let (missed, state) = (get_text("missed")?, get_text("state")?);
    Ok(Task {
        id: TaskId(row_id(get_i64("id")?)),
        enterprise_id: EnterpriseId(row_id(get_i64("enterprise_id")?)),
        name: get_text("name")?,
        kind: get_text("kind")?,
        args: get_text("args")?,
        deadline_s: row_id(get_i64("deadline_s")?),
        targets: serde_json::from_str(&targets).map_err(|e| StoreError::Backend(format!("task targets: {e}")))?,
        schedule: serde_json::from_str(&schedule).map_err(|e| StoreError::Backend(format!("task schedule: {e}")))?,
        time_zone: get_text("time_zone")?,
        missed: MissedRuns::parse(&missed).ok_or_else(|| corrupt("missed", &missed))?,
        state: TaskState::parse(&state).ok_or_else(|| corrupt("state", &state))?,
        created_by: AccountId(row_id(get_i64("created_by")?)),
        created_at: UnixMillis(get_i64("created_at")?),
        updated_at: UnixMillis(get_i64("updated_at")?),
        next_run_at: r.try_get::<Option<i64>, _>("next_run_at").map_err(backend)?.map(UnixMillis),
    })
}

fn run_from_row(r: &PgRow) -> Result<TaskRun> {
    let get_i64 = |column: &str| -> Result<i64> { r.try_get(column).map_err(backend) };
    let state: String = r.try_get("state").map_err(backend)?;
    Ok(TaskRun {
        id: TaskRunId(row_id(get_i64("id")?)),
        task_id: TaskId(row_id(get_i64("task_id")?)),
        scheduled_for: UnixMillis(get_i64("scheduled_for")?),
        claimed_at: UnixMillis(get_i64("claimed_at")?),
        state: RunState::parse(&state).ok_or_else(|| corrupt("run state", &state))?,
        finished_at: r.try_get::<Option<i64>, _>("finished_at").map_err(backend)?.map(UnixMillis),
        matched: row_id(get_i64("matched")?),
        queued: row_id(get_i64("queued")?),
        refused: row_id(get_i64("refused")?),
        note: r.try_get("note").map_err(backend)?,
    })
}

fn json_text<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Backend(format!("encoding JSON: {e}")))
}

/// A count or size as a database integer.
fn db_count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl PgEntityStore {
    async fn read_task(&self, id: i64) -> Result<Option<Task>> {
        sqlx::query(AssertSqlSafe(format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(task_from_row)
            .transpose()
    }
}

#[async_trait]
impl TaskStore for PgEntityStore {
    async fn create_task(&self, new: NewTask, now: UnixMillis) -> Result<Task> {
        new.validate()?;
        let (Some(enterprise), Some(creator)) = (db_id(new.enterprise_id.0), db_id(new.created_by.0)) else {
            return Err(StoreError::InvalidInput("the enterprise or the creator does not exist".into()));
        };
        let mut tx = self.pool.begin().await.map_err(backend)?;
        // The enterprise's row lock serialises task creation per enterprise, so the count below
        // stays true until the insert commits.
        let locked: Option<i64> = sqlx::query_scalar("SELECT id FROM enterprises WHERE id = $1 FOR NO KEY UPDATE")
            .bind(enterprise)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        check_exists("enterprise", new.enterprise_id.0, locked.is_some())?;
        let creator_found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM accounts WHERE id = $1")
            .bind(creator)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        check_exists("account", new.created_by.0, creator_found.is_some())?;
        let live: i64 =
            sqlx::query_scalar("SELECT count(*) FROM tasks WHERE enterprise_id = $1 AND state IN ('active', 'paused')")
                .bind(enterprise)
                .fetch_one(&mut *tx)
                .await
                .map_err(backend)?;
        if live >= db_count(MAX_LIVE_TASKS) {
            return Err(StoreError::InvalidInput(format!(
                "the enterprise already has {MAX_LIVE_TASKS} active or paused tasks"
            )));
        }
        let row = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO tasks (enterprise_id, name, kind, args, deadline_s, targets, schedule, time_zone, missed, \
             state, created_by, created_at, updated_at, next_run_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'active', $10, $11, $11, $12) RETURNING {TASK_COLUMNS}"
        )))
        .bind(enterprise)
        .bind(&new.name)
        .bind(&new.kind)
        .bind(&new.args)
        .bind(i64::try_from(new.deadline_s).unwrap_or(i64::MAX))
        .bind(json_text(&new.targets)?)
        .bind(json_text(&new.schedule)?)
        .bind(&new.time_zone)
        .bind(new.missed.as_str())
        .bind(creator)
        .bind(now.0)
        .bind(new.next_run_at.0)
        .fetch_one(&mut *tx)
        .await
        .map_err(backend)?;
        let task = task_from_row(&row)?;
        sqlx::query(
            "DELETE FROM tasks WHERE id IN (SELECT id FROM tasks WHERE enterprise_id = $1 \
             AND state IN ('cancelled', 'completed') ORDER BY id DESC OFFSET $2)",
        )
        .bind(enterprise)
        .bind(db_count(MAX_FINISHED_TASKS))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(task)
    }

    async fn task(&self, id: TaskId) -> Result<Option<Task>> {
        let Some(id) = db_id(id.0) else { return Ok(None) };
        self.read_task(id).await
    }

    async fn list_tasks(&self, enterprises: Option<Vec<EnterpriseId>>, page: Page) -> Result<Vec<Task>> {
        let limit = page.limit.min(MAX_TASK_PAGE);
        if let Some(list) = &enterprises {
            check_bound("enterprise ids", list.len(), MAX_ENTERPRISE_CHANNEL_FILTER)?;
        }
        if limit == 0 {
            return Ok(Vec::new());
        }
        let filter: Option<Vec<i64>> = enterprises.map(|list| list.iter().filter_map(|e| db_id(e.0)).collect());
        sqlx::query(AssertSqlSafe(format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE ($1::bigint[] IS NULL OR enterprise_id = ANY($1)) \
             AND id > $2 ORDER BY id LIMIT $3"
        )))
        .bind(filter)
        .bind(db_id(page.after).unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?
        .iter()
        .map(task_from_row)
        .collect()
    }

    async fn change_task(&self, id: TaskId, change: TaskChange, now: UnixMillis) -> Result<Option<Task>> {
        let Some(db_task) = db_id(id.0) else { return Ok(None) };
        let (next, resume_at) = match change {
            TaskChange::Pause => ("next_run_at", None),
            TaskChange::Resume { next_run_at } => ("$3::bigint", Some(next_run_at.0)),
            TaskChange::Cancel => ("NULL", None),
        };
        let sql = format!(
            "UPDATE tasks SET state = '{}', updated_at = $2, next_run_at = {next} WHERE id = $1 AND state IN {}",
            change.target().as_str(),
            change.sql_from()
        );
        let query = sqlx::query(AssertSqlSafe(sql)).bind(db_task).bind(now.0);
        let query = match resume_at {
            Some(at) => query.bind(at),
            None => query,
        };
        query.execute(&self.pool).await.map_err(backend)?;
        self.read_task(db_task).await
    }

    async fn due_tasks(&self, now: UnixMillis, limit: u32) -> Result<Vec<Task>> {
        let limit = limit.min(MAX_TASK_PAGE);
        sqlx::query(AssertSqlSafe(format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE state = 'active' AND next_run_at <= $1 \
             ORDER BY next_run_at, id LIMIT $2"
        )))
        .bind(now.0)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?
        .iter()
        .map(task_from_row)
        .collect()
    }

    async fn next_due(&self) -> Result<Option<UnixMillis>> {
        let next: Option<i64> = sqlx::query_scalar("SELECT min(next_run_at) FROM tasks WHERE state = 'active'")
            .fetch_one(&self.pool)
            .await
            .map_err(backend)?;
        Ok(next.map(UnixMillis))
    }

    async fn claim_run(
        &self,
        task: TaskId,
        due: UnixMillis,
        next: Option<UnixMillis>,
        missed: bool,
        now: UnixMillis,
    ) -> Result<Option<TaskRun>> {
        let Some(task_id) = db_id(task.0) else { return Ok(None) };
        let (state, finished) = if missed { (RunState::Missed, Some(now.0)) } else { (RunState::Pending, None) };
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let moved = sqlx::query(
            "UPDATE tasks SET next_run_at = $3::bigint, updated_at = $4, \
             state = CASE WHEN $3::bigint IS NULL THEN 'completed' ELSE state END \
             WHERE id = $1 AND state = 'active' AND next_run_at = $2",
        )
        .bind(task_id)
        .bind(due.0)
        .bind(next.map(|n| n.0))
        .bind(now.0)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        if moved.rows_affected() == 0 {
            return Ok(None);
        }
        let run = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO task_runs (task_id, scheduled_for, claimed_at, state, finished_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (task_id, scheduled_for) DO NOTHING RETURNING {RUN_COLUMNS}"
        )))
        .bind(task_id)
        .bind(due.0)
        .bind(now.0)
        .bind(state.as_str())
        .bind(finished)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?
        .as_ref()
        .map(run_from_row)
        .transpose()?;
        if run.is_some() {
            sqlx::query(
                "DELETE FROM task_runs WHERE id IN (SELECT id FROM task_runs WHERE task_id = $1 \
                 AND state <> 'pending' ORDER BY id DESC OFFSET $2)",
            )
            .bind(task_id)
            .bind(db_count(MAX_RUNS_PER_TASK))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(run)
    }

    async fn pending_runs(&self, limit: u32) -> Result<Vec<TaskRun>> {
        let limit = limit.min(MAX_TASK_PAGE);
        sqlx::query(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM task_runs WHERE state = 'pending' ORDER BY id LIMIT $1"
        )))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?
        .iter()
        .map(run_from_row)
        .collect()
    }

    async fn finish_run(&self, run: TaskRunId, plan: RunPlan, now: UnixMillis) -> Result<Option<Vec<RunDevice>>> {
        check_plan(&plan)?;
        let Some(run_id) = db_id(run.0) else { return Ok(None) };
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let finished = sqlx::query(
            "UPDATE task_runs SET state = 'done', finished_at = $2, matched = $3, note = $4 \
             WHERE id = $1 AND state = 'pending'",
        )
        .bind(run_id)
        .bind(now.0)
        .bind(i64::try_from(plan.matched).unwrap_or(i64::MAX))
        .bind(bounded_note(&plan.note))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        if finished.rows_affected() == 0 {
            return Ok(None);
        }
        let devices: Vec<DeviceId> = plan.commands.iter().map(|c| c.device_id).collect();
        let answers = enqueue_in(&mut tx, plan.commands, CommandLimits::default(), now).await?;
        let results: Vec<RunDevice> = devices
            .into_iter()
            .zip(answers)
            .map(|(device_id, answer)| match answer {
                Ok(command) => RunDevice {
                    device_id,
                    command_id: Some(command.id),
                    command_state: Some(command.state),
                    refusal: None,
                },
                Err(refusal) => {
                    RunDevice { device_id, command_id: None, command_state: None, refusal: Some(refusal.to_string()) }
                }
            })
            .collect();
        if !results.is_empty() {
            sqlx::query(
                "INSERT INTO task_run_devices (run_id, device_id, command_id, refusal) \
                 SELECT $1, d, c, r FROM unnest($2::bigint[], $3::bigint[], $4::text[]) AS t (d, c, r)",
            )
            .bind(run_id)
            .bind(results.iter().map(|r| db_id(r.device_id.0).unwrap_or(i64::MAX)).collect::<Vec<_>>())
            .bind(results.iter().map(|r| r.command_id.and_then(|c| db_id(c.0))).collect::<Vec<_>>())
            .bind(results.iter().map(|r| r.refusal.clone()).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        let queued = results.iter().filter(|r| r.command_id.is_some()).count();
        sqlx::query("UPDATE task_runs SET queued = $2, refused = $3 WHERE id = $1")
            .bind(run_id)
            .bind(db_count(queued))
            .bind(db_count(results.len() - queued))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(Some(results))
    }

    async fn task_runs(&self, task: TaskId, page: Page) -> Result<Vec<TaskRun>> {
        super::newest_first(&self.pool, RUN_COLUMNS, "task_runs", "task_id", task.0, page, MAX_TASK_PAGE, run_from_row)
            .await
    }

    async fn task_run(&self, run: TaskRunId) -> Result<Option<TaskRun>> {
        let Some(run) = db_id(run.0) else { return Ok(None) };
        sqlx::query(AssertSqlSafe(format!("SELECT {RUN_COLUMNS} FROM task_runs WHERE id = $1")))
            .bind(run)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(run_from_row)
            .transpose()
    }

    async fn task_run_devices(&self, run: TaskRunId, page: Page) -> Result<Vec<RunDevice>> {
        let limit = page.limit.min(MAX_TASK_PAGE);
        let Some(run) = db_id(run.0) else { return Ok(Vec::new()) };
        let rows: Vec<(i64, Option<i64>, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT r.device_id, r.command_id, r.refusal, c.state FROM task_run_devices r \
             LEFT JOIN commands c ON c.id = r.command_id WHERE r.run_id = $1 AND r.device_id > $2 \
             ORDER BY r.device_id LIMIT $3",
        )
        .bind(run)
        .bind(db_id(page.after).unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.into_iter()
            .map(|(device, command, refusal, state)| {
                Ok(RunDevice {
                    device_id: DeviceId(row_id(device)),
                    command_id: command.map(|c| CommandId(row_id(c))),
                    command_state: state
                        .map(|s| CommandState::parse(&s).ok_or_else(|| corrupt("command state", &s)))
                        .transpose()?,
                    refusal,
                })
            })
            .collect()
    }

    async fn task_run_totals(&self, run: TaskRunId) -> Result<RunTotals> {
        let Some(run) = db_id(run.0) else { return Ok(RunTotals::default()) };
        let rows: Vec<(Option<String>, i64)> = sqlx::query_as(
            "SELECT c.state, count(*) FROM task_run_devices r LEFT JOIN commands c ON c.id = r.command_id \
             WHERE r.run_id = $1 GROUP BY c.state",
        )
        .bind(run)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        let mut totals = RunTotals::default();
        for (state, count) in rows {
            totals.add(state.as_deref().and_then(CommandState::parse), row_id(count));
        }
        Ok(totals)
    }
}
