//! The command queue on PostgreSQL ([`CommandStore`]): admission under a lock of the batch's
//! enterprises, each transition one conditional `UPDATE … WHERE state IN (…)` generated from the
//! transition rule; claims and expiry skip rows another transaction is moving.

use std::sync::LazyLock;

use async_trait::async_trait;
use fleetpulse_proto::{AccountId, CommandId, DeviceId, EnterpriseId, UnixMillis};
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, Row};

use super::{PgEntityStore, backend, db_id, row_id};
use crate::*;

/// The columns `command_from_row` reads.
const COMMAND_COLUMNS: &str = "id, device_id, enterprise_id, kind, args, deadline, issued_by, issued_at, state, \
     attempts, sent_at, accepted_at, finished_at, output, reason";

fn command_from_row(r: &PgRow) -> Result<Command> {
    let state: String = r.try_get("state").map_err(backend)?;
    let attempts: i32 = r.try_get("attempts").map_err(backend)?;
    let time = |column: &str| -> Result<Option<UnixMillis>> {
        Ok(r.try_get::<Option<i64>, _>(column).map_err(backend)?.map(UnixMillis))
    };
    Ok(Command {
        id: CommandId(row_id(r.try_get("id").map_err(backend)?)),
        device_id: DeviceId(row_id(r.try_get("device_id").map_err(backend)?)),
        enterprise_id: EnterpriseId(row_id(r.try_get("enterprise_id").map_err(backend)?)),
        kind: r.try_get("kind").map_err(backend)?,
        args: r.try_get("args").map_err(backend)?,
        deadline: UnixMillis(r.try_get("deadline").map_err(backend)?),
        issued_by: AccountId(row_id(r.try_get("issued_by").map_err(backend)?)),
        issued_at: UnixMillis(r.try_get("issued_at").map_err(backend)?),
        state: CommandState::parse(&state)
            .ok_or_else(|| StoreError::Backend(format!("command with an unknown state {state:?}")))?,
        attempts: u32::try_from(attempts).unwrap_or(0),
        sent_at: time("sent_at")?,
        accepted_at: time("accepted_at")?,
        finished_at: time("finished_at")?,
        output: r.try_get("output").map_err(backend)?,
        reason: r.try_get("reason").map_err(backend)?,
    })
}

/// Locks the batch's enterprises (`$1`, sorted) against other batches for the transaction, so
/// that the pending counts stay true until the inserts commit. `FOR NO KEY UPDATE` does not
/// block inserts of rows that reference the enterprises.
const LOCK_ENTERPRISES: &str = "SELECT id FROM enterprises WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE";

/// The enterprise of each device of `$1`.
const DEVICE_OWNERS: &str = "SELECT id, enterprise_id, licence = 'unlicensed' FROM devices WHERE id = ANY($1)";

/// Pending commands per device of `$1`, along `commands_device_pending`.
static DEVICE_PENDING_COUNTS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT device_id, count(*) FROM commands WHERE device_id = ANY($1) AND state IN {PENDING_SQL} \
         GROUP BY device_id"
    )
});

/// Pending commands per enterprise of `$1`, along `commands_enterprise_pending`.
static ENTERPRISE_PENDING_COUNTS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT enterprise_id, count(*) FROM commands WHERE enterprise_id = ANY($1) AND state IN {PENDING_SQL} \
         GROUP BY enterprise_id"
    )
});

/// Queues the admitted commands of parallel arrays, in array order (so their ids increase
/// along the batch), issued at `$7`.
const INSERT_COMMANDS: &str = "INSERT INTO commands \
     (device_id, enterprise_id, kind, args, deadline, issued_by, issued_at, state) \
     SELECT c.device_id, c.enterprise_id, c.kind, c.args, c.deadline, c.issuer, $7, 'queued' \
     FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::bigint[], $6::bigint[]) WITH ORDINALITY \
     AS c (device_id, enterprise_id, kind, args, deadline, issuer, n) ORDER BY c.n RETURNING id";

/// Claims: the device's (`$1`) queued commands with a deadline after `$2`, oldest first, at most
/// `$3`, become sent at `$2`. Rows another claim holds are skipped, and the outer condition is
/// checked again on the row as it is now, so no command is sent twice.
static CLAIM: LazyLock<String> = LazyLock::new(|| {
    let send = CommandTransition::Send.sql_states();
    format!(
        "UPDATE commands SET state = '{}', attempts = attempts + 1, sent_at = $2 WHERE id IN \
         (SELECT id FROM commands WHERE device_id = $1 AND state IN {PENDING_SQL} AND state IN {send} \
         AND deadline > $2 ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED) AND state IN {send} \
         RETURNING {COMMAND_COLUMNS}",
        CommandTransition::Send.target().as_str()
    )
});

/// Requeues the device's (`$1`) sent commands.
static REQUEUE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE commands SET state = '{}' WHERE device_id = $1 AND state IN {PENDING_SQL} AND state IN {}",
        CommandTransition::Requeue.target().as_str(),
        CommandTransition::Requeue.sql_states()
    )
});

/// Whether the device (`$1`) has a command to requeue or to claim (`queued` or `sent`).
static HAS_TO_SEND: LazyLock<String> = LazyLock::new(|| {
    let states = sql_state_list(&[CommandState::Queued, CommandState::Sent]);
    format!(
        "SELECT EXISTS (SELECT 1 FROM commands WHERE device_id = $1 AND state IN {PENDING_SQL} \
         AND state IN {states})"
    )
});

/// Cancels the queued command `$1` at `$2` for the reason `$3`.
static CANCEL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE commands SET state = '{}', finished_at = $2, reason = $3 WHERE id = $1 AND state IN {} \
         RETURNING {COMMAND_COLUMNS}",
        CommandTransition::Cancel.target().as_str(),
        CommandTransition::Cancel.sql_states()
    )
});

/// Expires at most `$2` pending commands with a deadline at or before `$1`, earliest first, each
/// with the reason of its state; rows another transaction holds are left for the next round.
static EXPIRE: LazyLock<String> = LazyLock::new(|| {
    let reasons: String = CommandTransition::Expire
        .applies_to()
        .into_iter()
        .map(|s| format!(" WHEN '{}' THEN '{}'", s.as_str(), s.expiry_reason()))
        .collect();
    let expire = CommandTransition::Expire.sql_states();
    format!(
        "UPDATE commands SET state = '{}', finished_at = $1, reason = CASE state{reasons} END WHERE id IN \
         (SELECT id FROM commands WHERE state IN {PENDING_SQL} AND deadline <= $1 ORDER BY deadline, id LIMIT $2 \
         FOR UPDATE SKIP LOCKED) AND state IN {expire} RETURNING {COMMAND_COLUMNS}",
        CommandTransition::Expire.target().as_str()
    )
});

/// The device update statements, in [`CommandUpdate::slot`] order, returning the command.
static UPDATES: LazyLock<[String; 4]> =
    LazyLock::new(|| device_update_statements('$').map(|sql| format!("{sql} RETURNING {COMMAND_COLUMNS}")));

/// The progress statement ([`progress_statement`]), answering the command.
static PROGRESS: LazyLock<String> =
    LazyLock::new(|| format!("{} RETURNING {COMMAND_COLUMNS}", progress_statement('$')));

impl PgEntityStore {
    async fn read_command(&self, id: i64) -> Result<Option<Command>> {
        sqlx::query(AssertSqlSafe(format!("SELECT {COMMAND_COLUMNS} FROM commands WHERE id = $1")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(command_from_row)
            .transpose()
    }
}

/// Database ids of a list of typed ids (an id no row can have is left out).
fn db_ids(ids: impl Iterator<Item = u64>) -> Vec<i64> {
    ids.filter_map(db_id).collect()
}

/// Admits and inserts a batch of commands inside the caller's transaction, locking the batch's
/// enterprises until the caller commits; answers per command the stored command or why it
/// was refused. Shared with the task scheduler's run, which queues its commands in the same
/// transaction as its results.
pub(super) async fn enqueue_in(
    conn: &mut sqlx::PgConnection,
    commands: Vec<NewCommand>,
    limits: CommandLimits,
    now: UnixMillis,
) -> Result<Vec<Result<Command, CommandRefusal>>> {
    if commands.is_empty() {
        return Ok(Vec::new());
    }
    let (devices, enterprises) = batch_keys(&commands);
    let devices = db_ids(devices.iter().map(|d| d.0));
    let enterprises = db_ids(enterprises.iter().map(|e| e.0));
    sqlx::query(LOCK_ENTERPRISES).bind(&enterprises).execute(&mut *conn).await.map_err(backend)?;
    let mut counts = QueueCounts::default();
    let owners: Vec<(i64, i64, bool)> =
        sqlx::query_as(DEVICE_OWNERS).bind(&devices).fetch_all(&mut *conn).await.map_err(backend)?;
    counts.unlicensed = owners.iter().filter(|o| o.2).map(|o| DeviceId(row_id(o.0))).collect();
    counts.owners = owners.into_iter().map(|(d, e, _)| (DeviceId(row_id(d)), EnterpriseId(row_id(e)))).collect();
    let pending: Vec<(i64, i64)> = sqlx::query_as(AssertSqlSafe(DEVICE_PENDING_COUNTS.as_str()))
        .bind(&devices)
        .fetch_all(&mut *conn)
        .await
        .map_err(backend)?;
    counts.devices = pending.into_iter().map(|(d, n)| (DeviceId(row_id(d)), row_id(n))).collect();
    let pending: Vec<(i64, i64)> = sqlx::query_as(AssertSqlSafe(ENTERPRISE_PENDING_COUNTS.as_str()))
        .bind(&enterprises)
        .fetch_all(&mut *conn)
        .await
        .map_err(backend)?;
    counts.enterprises = pending.into_iter().map(|(e, n)| (EnterpriseId(row_id(e)), row_id(n))).collect();
    let admitted = admit_commands(&commands, counts, limits, now);
    let queued: Vec<&NewCommand> = commands.iter().zip(&admitted).filter(|(_, a)| a.is_ok()).map(|(c, _)| c).collect();
    let mut ids: Vec<i64> = if queued.is_empty() {
        Vec::new()
    } else {
        let column = |f: fn(&NewCommand) -> u64| -> Result<Vec<i64>> {
            queued
                .iter()
                .map(|c| db_id(f(c)).ok_or_else(|| StoreError::InvalidInput(format!("id {} out of range", f(c)))))
                .collect()
        };
        sqlx::query_scalar(INSERT_COMMANDS)
            .bind(column(|c| c.device_id.0)?)
            .bind(column(|c| c.enterprise_id.0)?)
            .bind(queued.iter().map(|c| c.kind.as_str()).collect::<Vec<_>>())
            .bind(queued.iter().map(|c| c.args.as_str()).collect::<Vec<_>>())
            .bind(queued.iter().map(|c| c.deadline.0).collect::<Vec<_>>())
            .bind(column(|c| c.issued_by.0)?)
            .bind(now.0)
            .fetch_all(&mut *conn)
            .await
            .map_err(backend)?
    };
    // Identities are drawn in insert order: the sorted ids follow the batch.
    ids.sort_unstable();
    let mut ids = ids.into_iter();
    commands
        .into_iter()
        .zip(admitted)
        .map(|(new, admitted)| match admitted {
            Ok(()) => {
                let id = ids.next().ok_or_else(|| StoreError::Backend("fewer command ids than commands".into()))?;
                Ok(Ok(Command::queued(CommandId(row_id(id)), new, now)))
            }
            Err(refusal) => Ok(Err(refusal)),
        })
        .collect()
}

#[async_trait]
impl CommandStore for PgEntityStore {
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
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let answers = enqueue_in(&mut tx, commands, limits, now).await?;
        tx.commit().await.map_err(backend)?;
        Ok(answers)
    }

    async fn command(&self, id: CommandId) -> Result<Option<Command>> {
        let Some(id) = db_id(id.0) else { return Ok(None) };
        self.read_command(id).await
    }

    async fn list_device_commands(&self, device: DeviceId, page: Page) -> Result<Vec<Command>> {
        super::newest_first(
            &self.pool,
            COMMAND_COLUMNS,
            "commands",
            "device_id",
            device.0,
            page,
            MAX_COMMAND_PAGE,
            command_from_row,
        )
        .await
    }

    async fn cancel_command(&self, id: CommandId, by: AccountId, now: UnixMillis) -> Result<Option<Command>> {
        let Some(id) = db_id(id.0) else { return Ok(None) };
        let cancelled = sqlx::query(AssertSqlSafe(CANCEL.as_str()))
            .bind(id)
            .bind(now.0)
            .bind(cancel_reason(by))
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        match cancelled {
            Some(row) => command_from_row(&row).map(Some),
            None => self.read_command(id).await,
        }
    }

    async fn claim_commands_to_send(&self, device: DeviceId, now: UnixMillis, limit: u32) -> Result<Vec<Command>> {
        let limit = limit.min(MAX_COMMAND_CHANGES);
        let Some(device) = db_id(device.0) else { return Ok(Vec::new()) };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut sent = sqlx::query(AssertSqlSafe(CLAIM.as_str()))
            .bind(device)
            .bind(now.0)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(command_from_row)
            .collect::<Result<Vec<_>>>()?;
        // RETURNING has no order of its own.
        sent.sort_unstable_by_key(|cmd| cmd.id);
        Ok(sent)
    }

    async fn requeue_unanswered(&self, device: DeviceId) -> Result<u64> {
        let Some(device) = db_id(device.0) else { return Ok(0) };
        let done =
            sqlx::query(AssertSqlSafe(REQUEUE.as_str())).bind(device).execute(&self.pool).await.map_err(backend)?;
        Ok(done.rows_affected())
    }

    async fn has_commands_to_send(&self, device: DeviceId) -> Result<bool> {
        let Some(device) = db_id(device.0) else { return Ok(false) };
        sqlx::query_scalar(AssertSqlSafe(HAS_TO_SEND.as_str()))
            .bind(device)
            .fetch_one(&self.pool)
            .await
            .map_err(backend)
    }

    async fn record_command_update(
        &self,
        id: CommandId,
        device: DeviceId,
        update: CommandUpdate,
        now: UnixMillis,
    ) -> Result<Option<Command>> {
        let (Some(id), Some(db_device)) = (db_id(id.0), db_id(device.0)) else { return Ok(None) };
        let (output, reason) = update.bounded_output();
        let progress = matches!(update, CommandUpdate::Running { .. }).then(|| output.clone()).flatten();
        let mut updated = sqlx::query(AssertSqlSafe(UPDATES[update.slot()].as_str()))
            .bind(id)
            .bind(db_device)
            .bind(now.0)
            .bind(output)
            .bind(reason)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        if let Some(progress) = progress {
            let noted = sqlx::query(AssertSqlSafe(PROGRESS.as_str()))
                .bind(id)
                .bind(db_device)
                .bind(progress)
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
            updated = noted.or(updated);
        }
        match updated {
            Some(row) => command_from_row(&row).map(Some),
            None => Ok(self.read_command(id).await?.filter(|cmd| cmd.device_id == device)),
        }
    }

    async fn expire_commands(&self, now: UnixMillis, limit: u32) -> Result<Vec<Command>> {
        let limit = limit.min(MAX_COMMAND_CHANGES);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut expired = sqlx::query(AssertSqlSafe(EXPIRE.as_str()))
            .bind(now.0)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(command_from_row)
            .collect::<Result<Vec<_>>>()?;
        // RETURNING has no order of its own.
        expired.sort_unstable_by_key(|cmd| (cmd.deadline, cmd.id));
        Ok(expired)
    }
}
