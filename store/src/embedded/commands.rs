//! The command queue on SQLite ([`CommandStore`]): admission and inserts in one write job, each
//! transition one conditional `UPDATE … WHERE state IN (…)` generated from the transition rule.

use std::sync::LazyLock;

use async_trait::async_trait;
use fleetpulse_proto::{AccountId, CommandId, DeviceId, EnterpriseId, UnixMillis};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{EmbeddedStore, db_after, json_ids};
use crate::*;

/// The columns `command_from_row` reads, in its order.
const COMMAND_COLUMNS: &str = "id, device_id, enterprise_id, kind, args, deadline, issued_by, issued_at, state, \
     attempts, sent_at, accepted_at, finished_at, output, reason";

fn command_from_row(r: &Row<'_>) -> rusqlite::Result<Command> {
    let state: String = r.get(8)?;
    let state = CommandState::parse(&state).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(8, rusqlite::types::Type::Text, format!("state {state:?}").into())
    })?;
    Ok(Command {
        id: CommandId(r.get(0)?),
        device_id: DeviceId(r.get(1)?),
        enterprise_id: EnterpriseId(r.get(2)?),
        kind: r.get(3)?,
        args: r.get(4)?,
        deadline: UnixMillis(r.get(5)?),
        issued_by: AccountId(r.get(6)?),
        issued_at: UnixMillis(r.get(7)?),
        state,
        attempts: r.get(9)?,
        sent_at: r.get::<_, Option<i64>>(10)?.map(UnixMillis),
        accepted_at: r.get::<_, Option<i64>>(11)?.map(UnixMillis),
        finished_at: r.get::<_, Option<i64>>(12)?.map(UnixMillis),
        output: r.get(13)?,
        reason: r.get(14)?,
    })
}

/// Pending commands per device of a JSON array of device ids (`?1`), along
/// `commands_device_pending`.
static DEVICE_PENDING_COUNTS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT device_id, count(*) FROM commands WHERE device_id IN (SELECT value FROM json_each(?1)) \
         AND state IN {PENDING_SQL} GROUP BY device_id"
    )
});

/// Pending commands of one enterprise (`?1`), along `commands_enterprise_pending`.
static ENTERPRISE_PENDING_COUNT: LazyLock<String> =
    LazyLock::new(|| format!("SELECT count(*) FROM commands WHERE enterprise_id = ?1 AND state IN {PENDING_SQL}"));

/// Claims: the device's (`?1`) queued commands with a deadline after `?2`, oldest first, at
/// most `?3`, become sent at `?2`. Named index: without statistics SQLite would rather walk all
/// of the device's commands along `commands_device` for their order.
static CLAIM: LazyLock<String> = LazyLock::new(|| {
    let send = CommandTransition::Send.sql_states();
    format!(
        "UPDATE commands SET state = '{}', attempts = attempts + 1, sent_at = ?2 WHERE id IN \
         (SELECT id FROM commands INDEXED BY commands_device_pending WHERE device_id = ?1 \
         AND state IN {PENDING_SQL} AND state IN {send} AND deadline > ?2 ORDER BY id LIMIT ?3) \
         AND state IN {send} RETURNING {COMMAND_COLUMNS}",
        CommandTransition::Send.target().as_str()
    )
});

/// Requeues the device's (`?1`) sent commands.
static REQUEUE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE commands SET state = '{}' WHERE device_id = ?1 AND state IN {PENDING_SQL} AND state IN {}",
        CommandTransition::Requeue.target().as_str(),
        CommandTransition::Requeue.sql_states()
    )
});

/// Whether the device (`?1`) has a command to requeue or to claim (`queued` or `sent`).
static HAS_TO_SEND: LazyLock<String> = LazyLock::new(|| {
    let states = sql_state_list(&[CommandState::Queued, CommandState::Sent]);
    format!(
        "SELECT EXISTS (SELECT 1 FROM commands INDEXED BY commands_device_pending WHERE device_id = ?1 AND state IN {PENDING_SQL} \
         AND state IN {states})"
    )
});

/// Cancels the queued command `?1` at `?2` for the reason `?3`.
static CANCEL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE commands SET state = '{}', finished_at = ?2, reason = ?3 WHERE id = ?1 AND state IN {}",
        CommandTransition::Cancel.target().as_str(),
        CommandTransition::Cancel.sql_states()
    )
});

/// Expires at most `?2` pending commands with a deadline at or before `?1`, earliest first,
/// each with the reason of its state.
static EXPIRE: LazyLock<String> = LazyLock::new(|| {
    let reasons: String = CommandTransition::Expire
        .applies_to()
        .into_iter()
        .map(|s| format!(" WHEN '{}' THEN '{}'", s.as_str(), s.expiry_reason()))
        .collect();
    format!(
        "UPDATE commands SET state = '{}', finished_at = ?1, reason = CASE state{reasons} END WHERE id IN \
         (SELECT id FROM commands WHERE state IN {PENDING_SQL} AND deadline <= ?1 ORDER BY deadline, id LIMIT ?2) \
         AND state IN {} RETURNING {COMMAND_COLUMNS}",
        CommandTransition::Expire.target().as_str(),
        CommandTransition::Expire.sql_states()
    )
});

/// The device update statements ([`device_update_statements`]), in [`CommandUpdate::slot`] order.
static UPDATES: LazyLock<[String; 4]> = LazyLock::new(|| device_update_statements('?'));

/// The progress statement ([`progress_statement`]).
static PROGRESS: LazyLock<String> = LazyLock::new(|| progress_statement('?'));

/// The command with this id (`None` for an id no row can have).
fn read_command(c: &Connection, id: CommandId) -> Result<Option<Command>> {
    let Ok(id) = i64::try_from(id.0) else { return Ok(None) };
    Ok(c.prepare_cached(&format!("SELECT {COMMAND_COLUMNS} FROM commands WHERE id = ?1"))?
        .query_row([id], command_from_row)
        .optional()?)
}

/// What the batch needs to know about its devices and enterprises.
fn queue_counts(c: &Connection, commands: &[NewCommand]) -> Result<QueueCounts> {
    let (devices, enterprises) = batch_keys(commands);
    let devices = json_ids(devices.iter().map(|d| d.0))?;
    let mut counts = QueueCounts::default();
    let mut owners = c.prepare_cached(
        "SELECT id, enterprise_id, licence = 'unlicensed' FROM devices WHERE id IN (SELECT value FROM json_each(?1))",
    )?;
    for row in owners.query_map([&devices], |r| Ok((DeviceId(r.get(0)?), EnterpriseId(r.get(1)?), r.get(2)?)))? {
        let (device, enterprise, unlicensed): (DeviceId, EnterpriseId, bool) = row?;
        counts.owners.insert(device, enterprise);
        if unlicensed {
            counts.unlicensed.insert(device);
        }
    }
    let mut pending = c.prepare_cached(&DEVICE_PENDING_COUNTS)?;
    for row in pending.query_map([&devices], |r| Ok((DeviceId(r.get(0)?), r.get::<_, u64>(1)?)))? {
        let (device, count) = row?;
        counts.devices.insert(device, count);
    }
    let mut pending = c.prepare_cached(&ENTERPRISE_PENDING_COUNT)?;
    for e in enterprises {
        let Ok(id) = i64::try_from(e.0) else { continue };
        counts.enterprises.insert(e, pending.query_row([id], |r| r.get::<_, u64>(0))?);
    }
    Ok(counts)
}

/// Admits and inserts a batch of commands on the writer's connection (inside its transaction),
/// answering per command the stored command or why it was refused. Shared with the task
/// scheduler's run, which queues its commands in the same transaction as its results.
pub(super) fn enqueue_on(
    c: &Connection,
    commands: &[NewCommand],
    limits: CommandLimits,
    now: UnixMillis,
) -> Result<Vec<Result<Command, CommandRefusal>>> {
    let admitted = admit_commands(commands, queue_counts(c, commands)?, limits, now);
    let mut insert = c.prepare_cached(
        "INSERT INTO commands (device_id, enterprise_id, kind, args, deadline, issued_by, issued_at, state) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'queued')",
    )?;
    let mut answers = Vec::with_capacity(commands.len());
    for (new, admitted) in commands.iter().zip(admitted) {
        answers.push(match admitted {
            Ok(()) => {
                insert.execute(params![
                    new.device_id.0,
                    new.enterprise_id.0,
                    new.kind,
                    new.args,
                    new.deadline.0,
                    new.issued_by.0,
                    now.0
                ])?;
                let id = CommandId(u64::try_from(c.last_insert_rowid()).unwrap_or_default());
                Ok(Command::queued(id, new.clone(), now))
            }
            Err(refusal) => Err(refusal),
        });
    }
    Ok(answers)
}

#[async_trait]
impl CommandStore for EmbeddedStore {
    async fn enqueue_commands_within(
        &self,
        commands: Vec<NewCommand>,
        limits: CommandLimits,
        now: UnixMillis,
    ) -> Result<Vec<Result<Command, CommandRefusal>>> {
        check_bound("commands", commands.len(), MAX_COMMAND_BATCH)?;
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        // One write job: the counts and the inserts run on the one writer, so no other write
        // comes between them.
        self.write(commands.len(), move |c| enqueue_on(c, &commands, limits, now)).await
    }

    async fn command(&self, id: CommandId) -> Result<Option<Command>> {
        self.read(move |c| read_command(c, id)).await
    }

    async fn list_device_commands(&self, device: DeviceId, page: Page) -> Result<Vec<Command>> {
        let limit = page.limit.min(MAX_COMMAND_PAGE);
        let Ok(device) = i64::try_from(device.0) else { return Ok(Vec::new()) };
        if limit == 0 {
            return Ok(Vec::new());
        }
        // Every id is below one beyond `i64::MAX`.
        let before = if page.after == 0 { i64::MAX } else { db_after(page.after) };
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {COMMAND_COLUMNS} FROM commands WHERE device_id = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3"
            ))?;
            let rows = st.query_map(params![device, before, limit], command_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn cancel_command(&self, id: CommandId, by: AccountId, now: UnixMillis) -> Result<Option<Command>> {
        let Ok(db_id) = i64::try_from(id.0) else { return Ok(None) };
        let reason = cancel_reason(by);
        self.write(1, move |c| {
            c.prepare_cached(&CANCEL)?.execute(params![db_id, now.0, reason])?;
            read_command(c, id)
        })
        .await
    }

    async fn claim_commands_to_send(&self, device: DeviceId, now: UnixMillis, limit: u32) -> Result<Vec<Command>> {
        let limit = limit.min(MAX_COMMAND_CHANGES);
        let Ok(device) = i64::try_from(device.0) else { return Ok(Vec::new()) };
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.write(limit as usize, move |c| {
            let mut st = c.prepare_cached(&CLAIM)?;
            let mut sent =
                st.query_map(params![device, now.0, limit], command_from_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
            // RETURNING has no order of its own.
            sent.sort_unstable_by_key(|cmd| cmd.id);
            Ok(sent)
        })
        .await
    }

    async fn requeue_unanswered(&self, device: DeviceId) -> Result<u64> {
        let Ok(device) = i64::try_from(device.0) else { return Ok(0) };
        self.write(1, move |c| Ok(c.prepare_cached(&REQUEUE)?.execute([device])? as u64)).await
    }

    async fn has_commands_to_send(&self, device: DeviceId) -> Result<bool> {
        let Ok(device) = i64::try_from(device.0) else { return Ok(false) };
        self.read(move |c| Ok(c.prepare_cached(&HAS_TO_SEND)?.query_row([device], |row| row.get::<_, bool>(0))?)).await
    }

    async fn record_command_update(
        &self,
        id: CommandId,
        device: DeviceId,
        update: CommandUpdate,
        now: UnixMillis,
    ) -> Result<Option<Command>> {
        let (Ok(db_id), Ok(db_device)) = (i64::try_from(id.0), i64::try_from(device.0)) else { return Ok(None) };
        let sql = &UPDATES[update.slot()];
        let (output, reason) = update.bounded_output();
        let progress = matches!(update, CommandUpdate::Running { .. }).then(|| output.clone()).flatten();
        self.write(1, move |c| {
            c.prepare_cached(sql)?.execute(params![db_id, db_device, now.0, output, reason])?;
            if let Some(progress) = &progress {
                c.prepare_cached(&PROGRESS)?.execute(params![db_id, db_device, progress])?;
            }
            Ok(read_command(c, id)?.filter(|cmd| cmd.device_id == device))
        })
        .await
    }

    async fn expire_commands(&self, now: UnixMillis, limit: u32) -> Result<Vec<Command>> {
        let limit = limit.min(MAX_COMMAND_CHANGES);
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.write(limit as usize, move |c| {
            let mut st = c.prepare_cached(&EXPIRE)?;
            let mut expired =
                st.query_map(params![now.0, limit], command_from_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
            // RETURNING has no order of its own.
            expired.sort_unstable_by_key(|cmd| (cmd.deadline, cmd.id));
            Ok(expired)
        })
        .await
    }
}

/// The statements over pending commands, with what their plan must use (for the tests).
#[cfg(test)]
pub(super) fn pending_statements() -> Vec<(String, &'static str)> {
    vec![
        (DEVICE_PENDING_COUNTS.clone(), "commands_device_pending (device_id=?"),
        (ENTERPRISE_PENDING_COUNT.clone(), "commands_enterprise_pending (enterprise_id=?)"),
        (CLAIM.clone(), "commands_device_pending (device_id=? AND state=?)"),
        (REQUEUE.clone(), "commands_device_pending (device_id=? AND state=?)"),
        (EXPIRE.clone(), "commands_pending_deadline (deadline<?)"),
    ]
}
