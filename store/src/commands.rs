//! The durable per-device command queue (`CommandStore`, issue 11): commands accounts issue to
//! devices, waiting while a device is offline, sent when it connects, answered by it, until their
//! deadline; and the one transition rule both backends apply ([`CommandTransition::apply`]).
//!
//! | transition | queued | sent | accepted | running | succeeded, failed, expired, cancelled |
//! | --- | --- | --- | --- | --- | --- |
//! | send (claim) | sent | – | – | – | – |
//! | requeue (reconnect) | – | queued | – | – | – |
//! | accept (device) | accepted | accepted | – | – | – |
//! | run (device progress) | running | running | running | – | – |
//! | succeed, fail (device) | succeeded, failed | same | same | same | – |
//! | expire (deadline) | expired | expired | expired | expired | – |
//! | cancel (account) | cancelled | – | – | – | – |
//!
//! "–" leaves the command as it is: device updates only move forward (a late `accepted` after
//! `succeeded` changes nothing), and the last four states are final. Queued, sent, accepted and
//! running commands are *pending*: they count against [`CommandLimits`].
//!
//! A `running` answer may carry progress text (a firmware download's percentage): it is stored
//! as the command's output, also on a command already running — the one device update that
//! changes a command without a transition (its state stays `running`).

use std::collections::HashMap;

use async_trait::async_trait;
use fleetpulse_proto::{AccountId, CommandId, DeviceId, EnterpriseId, UnixMillis};
use serde::Serialize;

use crate::{Page, Result};

/// Most pending commands a device may have (the default of [`CommandLimits::per_device`]).
pub const MAX_PENDING_PER_DEVICE: u64 = 100;

/// Most pending commands an enterprise's devices may have together (the default of
/// [`CommandLimits::per_enterprise`]).
pub const MAX_PENDING_PER_ENTERPRISE: u64 = 100_000;

/// Most commands one [`CommandStore::enqueue_commands`] may queue.
pub const MAX_COMMAND_BATCH: usize = 10_000;

/// Longest [`NewCommand::kind`], in characters (of `[a-z0-9_]`, at least one).
pub const MAX_COMMAND_KIND: usize = 64;

/// Longest [`NewCommand::args`] (JSON text), in bytes.
pub const MAX_COMMAND_ARGS: usize = 4_096;

/// Longest [`Command::output`] kept, in bytes: longer device output is truncated (the protocol
/// already refuses longer answers).
pub const MAX_COMMAND_OUTPUT: usize = fleetpulse_proto::domain::MAX_COMMAND_OUTPUT;

/// Longest [`Command::reason`] kept, in bytes: a longer reason is truncated (the protocol
/// already refuses longer answers).
pub const MAX_COMMAND_REASON: usize = fleetpulse_proto::domain::MAX_COMMAND_REASON;

/// Most rows one [`CommandStore::list_device_commands`] returns, whatever limit it is given.
pub const MAX_COMMAND_PAGE: u32 = 1_000;

/// Most commands one [`CommandStore::claim_commands_to_send`] or
/// [`CommandStore::expire_commands`] changes, whatever limit it is given.
pub const MAX_COMMAND_CHANGES: u32 = 10_000;

/// The durable per-device command queue.
///
/// A command is *past its deadline* at `now` when `deadline <= now`. Every transition is one
/// atomic conditional write, so concurrent callers (two sessions, the expiry task and an
/// account cancelling) never both move the same command.
#[async_trait]
pub trait CommandStore: Send + Sync + 'static {
    /// Queues commands within the default [`CommandLimits`]; see
    /// [`CommandStore::enqueue_commands_within`].
    async fn enqueue_commands(
        &self,
        commands: Vec<NewCommand>,
        now: UnixMillis,
    ) -> Result<Vec<Result<Command, CommandRefusal>>> {
        self.enqueue_commands_within(commands, CommandLimits::default(), now).await
    }
    /// Queues commands (state `queued`, issued at `now`), all in one transaction; answers per
    /// command, in order, the stored command or why it was refused.
    ///
    /// A refused command stores nothing; the others are stored. Refused are commands that
    /// [`NewCommand::validate`] refuses, whose device is not a device of the given enterprise,
    /// and (in batch order) those that would take their device above `limits.per_device` or
    /// their enterprise above `limits.per_enterprise` pending commands. The counts and the
    /// inserts are atomic: concurrent batches never exceed a limit together.
    /// [`StoreError::InvalidInput`](crate::StoreError::InvalidInput) (and nothing is queued) for
    /// more than [`MAX_COMMAND_BATCH`] commands.
    async fn enqueue_commands_within(
        &self,
        commands: Vec<NewCommand>,
        limits: CommandLimits,
        now: UnixMillis,
    ) -> Result<Vec<Result<Command, CommandRefusal>>>;
    /// The command with this id.
    async fn command(&self, id: CommandId) -> Result<Option<Command>>;
    /// The device's commands, newest first (by id, descending): those with an id below
    /// `page.after` when it is above 0, else from the newest; at most `page.limit`, and never
    /// more than [`MAX_COMMAND_PAGE`].
    async fn list_device_commands(&self, device: DeviceId, page: Page) -> Result<Vec<Command>>;
    /// Cancels a queued command (state `cancelled`, finished at `now`, the reason names the
    /// account `by`), so that it is never sent. A command in any other state is answered
    /// unchanged (the caller tells by its state); `None` for an unknown id.
    async fn cancel_command(&self, id: CommandId, by: AccountId, now: UnixMillis) -> Result<Option<Command>>;
    /// The device's queued commands not past their deadline, oldest first (by id), at most
    /// `limit` (never more than [`MAX_COMMAND_CHANGES`]), become `sent`: `attempts` + 1 and
    /// `sent_at` = `now`. Answers them, as they are now, oldest first. What a session sends
    /// when the device connects or when a command is queued for a connected device.
    async fn claim_commands_to_send(&self, device: DeviceId, now: UnixMillis, limit: u32) -> Result<Vec<Command>>;
    /// The device's `sent` commands (sent but never accepted) go back to `queued`, keeping
    /// `attempts` and the last `sent_at`, to be sent again (on reconnect; the device drops a
    /// command whose id it has executed). Answers how many.
    async fn requeue_unanswered(&self, device: DeviceId) -> Result<u64>;
    /// Whether the device has a command that [`Self::requeue_unanswered`] or
    /// [`Self::claim_commands_to_send`] could change (`queued` or `sent`): a read, so that a
    /// session start of a device with none (the usual case) costs no write.
    async fn has_commands_to_send(&self, device: DeviceId) -> Result<bool>;
    /// Applies the device's answer to its command when the transition is forward (see the
    /// table in this module): every applied update sets `accepted_at` if unset, a result sets
    /// `finished_at`, the output (truncated to [`MAX_COMMAND_OUTPUT`]) and, for a failure, the
    /// reason (truncated to [`MAX_COMMAND_REASON`]). An update that does not apply changes
    /// nothing and answers the command as it is. `None` (and nothing changes) for an unknown id
    /// or a command of another device.
    async fn record_command_update(
        &self,
        id: CommandId,
        device: DeviceId,
        update: CommandUpdate,
        now: UnixMillis,
    ) -> Result<Option<Command>>;
    /// Pending commands past their deadline at `now` become `expired` (finished at `now`) with
    /// the reason of the state they were in ([`CommandState::expiry_reason`]); at most `limit`
    /// of them (never more than [`MAX_COMMAND_CHANGES`]), earliest deadline first. Answers them
    /// as they are now, in that order.
    async fn expire_commands(&self, now: UnixMillis, limit: u32) -> Result<Vec<Command>>;
}

/// Where a command stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CommandState {
    /// Waiting to be sent (the device is offline, or the command is newly queued).
    Queued,
    /// Sent on the device's session; not yet accepted.
    Sent,
    /// The device accepted it.
    Accepted,
    /// The device reports progress.
    Running,
    /// The device reports success (final).
    Succeeded,
    /// The device reports failure (final).
    Failed,
    /// Its deadline passed before a result (final).
    Expired,
    /// An account cancelled it before it was sent (final).
    Cancelled,
}

impl CommandState {
    /// Every state, in lifecycle order.
    pub const ALL: [CommandState; 8] = [
        CommandState::Queued,
        CommandState::Sent,
        CommandState::Accepted,
        CommandState::Running,
        CommandState::Succeeded,
        CommandState::Failed,
        CommandState::Expired,
        CommandState::Cancelled,
    ];

    /// The pending states: those counted against the limits and expired at their deadline.
    pub const PENDING: [CommandState; 4] =
        [CommandState::Queued, CommandState::Sent, CommandState::Accepted, CommandState::Running];

    /// Name in the store and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandState::Queued => "queued",
            CommandState::Sent => "sent",
            CommandState::Accepted => "accepted",
            CommandState::Running => "running",
            CommandState::Succeeded => "succeeded",
            CommandState::Failed => "failed",
            CommandState::Expired => "expired",
            CommandState::Cancelled => "cancelled",
        }
    }

    /// Inverse of [`CommandState::as_str`].
    pub fn parse(s: &str) -> Option<CommandState> {
        CommandState::ALL.into_iter().find(|state| state.as_str() == s)
    }

    /// Whether the command is still to be done (queued, sent, accepted or running).
    pub fn is_pending(self) -> bool {
        CommandState::PENDING.contains(&self)
    }

    /// Why a pending command in this state expires when its deadline passes.
    pub fn expiry_reason(self) -> &'static str {
        match self {
            CommandState::Queued => "deadline passed while queued: the device did not connect",
            CommandState::Sent => "deadline passed after sending: the device did not answer",
            _ => "deadline passed while running: the device sent no result",
        }
    }
}

/// A change of a command's state (the columns of the table in this module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandTransition {
    /// A session sends it.
    Send,
    /// The device reconnected before accepting it.
    Requeue,
    /// The device accepted it.
    Accept,
    /// The device reports progress.
    Run,
    /// The device reports success.
    Succeed,
    /// The device reports failure.
    Fail,
    /// Its deadline passed.
    Expire,
    /// An account cancelled it.
    Cancel,
}

impl CommandTransition {
    /// The state a command in `from` moves to, or `None` when the transition does not apply
    /// (the command stays as it is).
    pub fn apply(self, from: CommandState) -> Option<CommandState> {
        use CommandState::*;
        let applies = match self {
            CommandTransition::Send => from == Queued,
            CommandTransition::Requeue => from == Sent,
            CommandTransition::Accept => matches!(from, Queued | Sent),
            CommandTransition::Run => matches!(from, Queued | Sent | Accepted),
            CommandTransition::Succeed | CommandTransition::Fail | CommandTransition::Expire => from.is_pending(),
            CommandTransition::Cancel => from == Queued,
        };
        applies.then_some(self.target())
    }

    /// The state this transition leads to (from every state it applies to).
    pub fn target(self) -> CommandState {
        match self {
            CommandTransition::Send => CommandState::Sent,
            CommandTransition::Requeue => CommandState::Queued,
            CommandTransition::Accept => CommandState::Accepted,
            CommandTransition::Run => CommandState::Running,
            CommandTransition::Succeed => CommandState::Succeeded,
            CommandTransition::Fail => CommandState::Failed,
            CommandTransition::Expire => CommandState::Expired,
            CommandTransition::Cancel => CommandState::Cancelled,
        }
    }

    /// The states this transition applies to, in lifecycle order.
    pub fn applies_to(self) -> Vec<CommandState> {
        CommandState::ALL.into_iter().filter(|s| self.apply(*s).is_some()).collect()
    }

    /// The states this transition applies to as an SQL list (`('queued', 'sent')`), for the
    /// `WHERE state IN …` of the backends' conditional updates.
    pub(crate) fn sql_states(self) -> String {
        sql_state_list(&self.applies_to())
    }
}

/// States as an SQL list: `('queued', 'sent')`.
pub(crate) fn sql_state_list(states: &[CommandState]) -> String {
    let names: Vec<String> = states.iter().map(|s| format!("'{}'", s.as_str())).collect();
    format!("({})", names.join(", "))
}

/// The pending states as the migrations' partial indexes name them; queries over pending
/// commands repeat this term verbatim so that SQLite and PostgreSQL can use those indexes.
pub(crate) const PENDING_SQL: &str = "('queued', 'sent', 'accepted', 'running')";

/// What a device reports about its command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandUpdate {
    /// It accepted the command.
    Accepted,
    /// It is running it, with its progress text (empty: none; truncated to
    /// [`MAX_COMMAND_OUTPUT`]), stored as the output.
    Running {
        /// What the device says about its progress.
        progress: String,
    },
    /// It finished it.
    Succeeded {
        /// What it printed (truncated to [`MAX_COMMAND_OUTPUT`]).
        output: String,
    },
    /// It failed.
    Failed {
        /// What it printed (truncated to [`MAX_COMMAND_OUTPUT`]).
        output: String,
        /// Why (truncated to [`MAX_COMMAND_REASON`]).
        reason: String,
    },
}

impl CommandUpdate {
    /// The transition this update asks for.
    pub fn transition(&self) -> CommandTransition {
        match self {
            CommandUpdate::Accepted => CommandTransition::Accept,
            CommandUpdate::Running { .. } => CommandTransition::Run,
            CommandUpdate::Succeeded { .. } => CommandTransition::Succeed,
            CommandUpdate::Failed { .. } => CommandTransition::Fail,
        }
    }

    /// The output and reason to store (truncated to their bounds), if the update carries them.
    pub(crate) fn bounded_output(&self) -> (Option<String>, Option<String>) {
        match self {
            CommandUpdate::Accepted => (None, None),
            CommandUpdate::Running { progress } if progress.is_empty() => (None, None),
            CommandUpdate::Running { progress } => (Some(truncate_utf8(progress, MAX_COMMAND_OUTPUT)), None),
            CommandUpdate::Succeeded { output } => (Some(truncate_utf8(output, MAX_COMMAND_OUTPUT)), None),
            CommandUpdate::Failed { output, reason } => {
                (Some(truncate_utf8(output, MAX_COMMAND_OUTPUT)), Some(truncate_utf8(reason, MAX_COMMAND_REASON)))
            }
        }
    }
}

impl CommandUpdate {
    /// Index of the update's kind in [`device_update_statements`].
    pub(crate) fn slot(&self) -> usize {
        match self {
            CommandUpdate::Accepted => 0,
            CommandUpdate::Running { .. } => 1,
            CommandUpdate::Succeeded { .. } => 2,
            CommandUpdate::Failed { .. } => 3,
        }
    }
}

/// The statement of each device update (accepted, running, succeeded, failed, in
/// [`CommandUpdate::slot`] order) for both backends, `p` their placeholder sign (`?` or `$`):
/// applies the update to command `p1` of device `p2` at `p3` with output `p4` and reason `p5`
/// (each kept as it is when NULL), only from the states the transition rule allows.
pub(crate) fn device_update_statements(p: char) -> [String; 4] {
    [CommandTransition::Accept, CommandTransition::Run, CommandTransition::Succeed, CommandTransition::Fail].map(|t| {
        let to = t.target();
        let finished = if matches!(to, CommandState::Succeeded | CommandState::Failed) {
            format!("{p}3")
        } else {
            "finished_at".into()
        };
        format!(
            "UPDATE commands SET state = '{}', accepted_at = COALESCE(accepted_at, {p}3), finished_at = {finished}, \
             output = COALESCE({p}4, output), reason = COALESCE({p}5, reason) \
             WHERE id = {p}1 AND device_id = {p}2 AND state IN {}",
            to.as_str(),
            t.sql_states()
        )
    })
}

/// The statement storing a `running` answer's progress text on a command that is running
/// already (no transition): output `p3` on command `p1` of device `p2`.
pub(crate) fn progress_statement(p: char) -> String {
    format!("UPDATE commands SET output = {p}3 WHERE id = {p}1 AND device_id = {p}2 AND state = 'running'")
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
pub(crate) fn truncate_utf8(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// The reason stored on a command cancelled by `by`.
pub(crate) fn cancel_reason(by: AccountId) -> String {
    format!("cancelled by account {by}")
}

/// Limits of pending commands ([`CommandStore::enqueue_commands_within`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandLimits {
    /// Most pending commands of one device.
    pub per_device: u64,
    /// Most pending commands of one enterprise's devices together.
    pub per_enterprise: u64,
}

impl Default for CommandLimits {
    fn default() -> Self {
        CommandLimits { per_device: MAX_PENDING_PER_DEVICE, per_enterprise: MAX_PENDING_PER_ENTERPRISE }
    }
}

/// A command to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCommand {
    /// The device that is to run it.
    pub device_id: DeviceId,
    /// The device's enterprise.
    pub enterprise_id: EnterpriseId,
    /// What to do: 1 to [`MAX_COMMAND_KIND`] characters of `[a-z0-9_]`.
    pub kind: String,
    /// Arguments: JSON text of at most [`MAX_COMMAND_ARGS`] bytes.
    pub args: String,
    /// Past this time it is not sent any more, and a pending command expires.
    pub deadline: UnixMillis,
    /// The account that issued it.
    pub issued_by: AccountId,
}

impl NewCommand {
    /// Why the command cannot be queued at `now` on its own (whatever the queue holds): a bad
    /// kind, arguments too long or not JSON, a deadline already past.
    pub fn validate(&self, now: UnixMillis) -> Result<(), CommandRefusal> {
        let kind_ok = !self.kind.is_empty()
            && self.kind.len() <= MAX_COMMAND_KIND
            && self.kind.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !kind_ok {
            return Err(CommandRefusal::InvalidKind);
        }
        if self.args.len() > MAX_COMMAND_ARGS {
            return Err(CommandRefusal::ArgsTooLong);
        }
        if serde_json::from_str::<serde::de::IgnoredAny>(&self.args).is_err() {
            return Err(CommandRefusal::ArgsNotJson);
        }
        if self.deadline <= now {
            return Err(CommandRefusal::DeadlinePassed);
        }
        Ok(())
    }
}

/// Why one command of a batch was not queued (the rest of the batch is not affected).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum CommandRefusal {
    /// The kind is empty, too long or holds a character outside `[a-z0-9_]`.
    #[error("the command kind must be 1 to 64 characters of a-z, 0-9 and _")]
    InvalidKind,
    /// The arguments are longer than [`MAX_COMMAND_ARGS`].
    #[error("the command arguments are longer than 4096 bytes")]
    ArgsTooLong,
    /// The arguments are not JSON.
    #[error("the command arguments are not JSON")]
    ArgsNotJson,
    /// The deadline is not after the time the command is queued.
    #[error("the command's deadline has passed")]
    DeadlinePassed,
    /// The device does not exist, or belongs to another enterprise.
    #[error("the device does not exist in this enterprise")]
    UnknownDevice,
    /// The device is beyond its enterprise's licence allowance (ORD-3): it keeps reporting but
    /// gets no commands, configuration pushes or upgrades until a licence covers it.
    #[error("the device is unlicensed: its enterprise's orders allow fewer devices")]
    Unlicensed,
    /// The device already has [`CommandLimits::per_device`] pending commands.
    #[error("the device already has {limit} pending commands")]
    DeviceLimit {
        /// The limit.
        limit: u64,
    },
    /// The enterprise already has [`CommandLimits::per_enterprise`] pending commands.
    #[error("the enterprise already has {limit} pending commands")]
    EnterpriseLimit {
        /// The limit.
        limit: u64,
    },
}

/// A command in the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Command {
    /// Identifier (never reused).
    pub id: CommandId,
    /// The device that is to run it.
    pub device_id: DeviceId,
    /// The device's enterprise.
    pub enterprise_id: EnterpriseId,
    /// What to do.
    pub kind: String,
    /// Arguments (JSON text).
    pub args: String,
    /// Past this time it is not sent, and a pending command expires.
    pub deadline: UnixMillis,
    /// The account that issued it.
    pub issued_by: AccountId,
    /// When it was queued.
    pub issued_at: UnixMillis,
    /// Where it stands.
    pub state: CommandState,
    /// When it was last sent.
    pub sent_at: Option<UnixMillis>,
    /// When the device accepted it (or first reported on it).
    pub accepted_at: Option<UnixMillis>,
    /// When it reached a final state.
    pub finished_at: Option<UnixMillis>,
    /// How many times it was sent.
    pub attempts: u32,
    /// What the device printed (at most [`MAX_COMMAND_OUTPUT`] bytes).
    pub output: Option<String>,
    /// Why it failed, expired or was cancelled.
    pub reason: Option<String>,
}

impl Command {
    /// The command as queued at `now` with this id.
    pub(crate) fn queued(id: CommandId, new: NewCommand, now: UnixMillis) -> Command {
        Command {
            id,
            device_id: new.device_id,
            enterprise_id: new.enterprise_id,
            kind: new.kind,
            args: new.args,
            deadline: new.deadline,
            issued_by: new.issued_by,
            issued_at: now,
            state: CommandState::Queued,
            sent_at: None,
            accepted_at: None,
            finished_at: None,
            attempts: 0,
            output: None,
            reason: None,
        }
    }
}

/// What the store read before admitting a batch, inside the batch's transaction.
#[derive(Debug, Default)]
pub(crate) struct QueueCounts {
    /// The enterprise of each known device of the batch.
    pub owners: HashMap<DeviceId, EnterpriseId>,
    /// Pending commands per device of the batch (absent: none).
    pub devices: HashMap<DeviceId, u64>,
    /// Pending commands per enterprise of the batch (absent: none).
    pub enterprises: HashMap<EnterpriseId, u64>,
    /// The devices of the batch that are unlicensed (ORD-3).
    pub unlicensed: std::collections::HashSet<DeviceId>,
}

/// Which commands of a batch may be queued at `now`, in order: each is validated, its device
/// must belong to its enterprise, and an admitted command counts against the limits of the
/// commands after it. Shared by both backends.
pub(crate) fn admit_commands(
    commands: &[NewCommand],
    mut counts: QueueCounts,
    limits: CommandLimits,
    now: UnixMillis,
) -> Vec<Result<(), CommandRefusal>> {
    commands
        .iter()
        .map(|c| {
            c.validate(now)?;
            if counts.owners.get(&c.device_id) != Some(&c.enterprise_id) {
                return Err(CommandRefusal::UnknownDevice);
            }
            if counts.unlicensed.contains(&c.device_id) {
                return Err(CommandRefusal::Unlicensed);
            }
            let device = counts.devices.entry(c.device_id).or_default();
            if *device >= limits.per_device {
                return Err(CommandRefusal::DeviceLimit { limit: limits.per_device });
            }
            let enterprise = counts.enterprises.entry(c.enterprise_id).or_default();
            if *enterprise >= limits.per_enterprise {
                return Err(CommandRefusal::EnterpriseLimit { limit: limits.per_enterprise });
            }
            *device += 1;
            *enterprise += 1;
            Ok(())
        })
        .collect()
}

/// The distinct devices and enterprises of a batch, each sorted (the order locks are taken in).
pub(crate) fn batch_keys(commands: &[NewCommand]) -> (Vec<DeviceId>, Vec<EnterpriseId>) {
    let mut devices: Vec<DeviceId> = commands.iter().map(|c| c.device_id).collect();
    let mut enterprises: Vec<EnterpriseId> = commands.iter().map(|c| c.enterprise_id).collect();
    devices.sort_unstable();
    devices.dedup();
    enterprises.sort_unstable();
    enterprises.dedup();
    (devices, enterprises)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The transition table of the module documentation, row by row: the state each column's
    /// state moves to, "-" for unchanged.
    #[test]
    fn transitions_follow_the_table() {
        let row = |t: CommandTransition| -> Vec<&str> {
            CommandState::ALL.into_iter().map(|s| t.apply(s).map_or("-", CommandState::as_str)).collect()
        };
        let table = [
            (CommandTransition::Send, "sent - - - - - - -"),
            (CommandTransition::Requeue, "- queued - - - - - -"),
            (CommandTransition::Accept, "accepted accepted - - - - - -"),
            (CommandTransition::Run, "running running running - - - - -"),
            (CommandTransition::Succeed, "succeeded succeeded succeeded succeeded - - - -"),
            (CommandTransition::Fail, "failed failed failed failed - - - -"),
            (CommandTransition::Expire, "expired expired expired expired - - - -"),
            (CommandTransition::Cancel, "cancelled - - - - - - -"),
        ];
        for (t, expected) in table {
            assert_eq!(row(t).join(" "), expected, "{t:?}");
        }
    }

    #[test]
    fn device_updates_only_move_forward_and_final_states_stay() {
        let rank = |s: CommandState| CommandState::ALL.iter().position(|x| *x == s).map(|i| i.min(4));
        for t in
            [CommandTransition::Accept, CommandTransition::Run, CommandTransition::Succeed, CommandTransition::Fail]
        {
            for s in CommandState::ALL {
                if let Some(to) = t.apply(s) {
                    assert!(rank(to) > rank(s), "{t:?} moves {s:?} back to {to:?}");
                }
            }
        }
        for s in CommandState::ALL.into_iter().filter(|s| !s.is_pending()) {
            assert!(all_transitions().iter().all(|t| t.apply(s).is_none()), "{s:?} is final");
        }
    }

    fn all_transitions() -> [CommandTransition; 8] {
        [
            CommandTransition::Send,
            CommandTransition::Requeue,
            CommandTransition::Accept,
            CommandTransition::Run,
            CommandTransition::Succeed,
            CommandTransition::Fail,
            CommandTransition::Expire,
            CommandTransition::Cancel,
        ]
    }

    #[test]
    fn sql_lists_follow_the_rule_and_the_pending_states() {
        assert_eq!(CommandTransition::Accept.sql_states(), "('queued', 'sent')");
        assert_eq!(CommandTransition::Expire.sql_states(), PENDING_SQL);
        assert_eq!(sql_state_list(&CommandState::PENDING), PENDING_SQL);
        for s in CommandState::ALL {
            assert_eq!(CommandState::parse(s.as_str()), Some(s));
        }
        assert_eq!(CommandState::parse("done"), None);
    }

    fn new(device: u64, enterprise: u64, kind: &str, args: &str) -> NewCommand {
        NewCommand {
            device_id: DeviceId(device),
            enterprise_id: EnterpriseId(enterprise),
            kind: kind.into(),
            args: args.into(),
            deadline: UnixMillis(1_000),
            issued_by: AccountId(1),
        }
    }

    #[test]
    fn validation_bounds_kind_args_and_deadline() {
        let now = UnixMillis(10);
        assert_eq!(new(1, 1, "reboot", "{}").validate(now), Ok(()));
        assert_eq!(new(1, 1, &"a".repeat(MAX_COMMAND_KIND), "null").validate(now), Ok(()));
        for kind in ["", "Reboot", "re-boot", "reböot", &"a".repeat(MAX_COMMAND_KIND + 1)] {
            assert_eq!(new(1, 1, kind, "{}").validate(now), Err(CommandRefusal::InvalidKind), "{kind:?}");
        }
        let big = format!("\"{}\"", "x".repeat(MAX_COMMAND_ARGS - 2));
        assert_eq!(new(1, 1, "ping", &big).validate(now), Ok(()));
        let bigger = format!("\"{}\"", "x".repeat(MAX_COMMAND_ARGS - 1));
        assert_eq!(new(1, 1, "ping", &bigger).validate(now), Err(CommandRefusal::ArgsTooLong));
        for args in ["", "{", "{} {}", "nope"] {
            assert_eq!(new(1, 1, "ping", args).validate(now), Err(CommandRefusal::ArgsNotJson), "{args:?}");
        }
        assert_eq!(new(1, 1, "ping", "{}").validate(UnixMillis(1_000)), Err(CommandRefusal::DeadlinePassed));
    }

    #[test]
    fn admission_counts_the_batch_in_order() {
        let counts = QueueCounts {
            owners: [(DeviceId(1), EnterpriseId(1)), (DeviceId(2), EnterpriseId(1))].into(),
            devices: [(DeviceId(1), 1)].into(),
            enterprises: [(EnterpriseId(1), 1)].into(),
            ..QueueCounts::default()
        };
        let batch = [
            new(1, 1, "a", "{}"),
            new(1, 1, "b", "{}"),
            new(2, 1, "c", "{}"),
            new(2, 1, "bad kind", "{}"),
            new(2, 1, "d", "{}"),
            new(3, 1, "e", "{}"),
            new(1, 2, "f", "{}"),
        ];
        let limits = CommandLimits { per_device: 2, per_enterprise: 4 };
        assert_eq!(
            admit_commands(&batch, counts, limits, UnixMillis(0)),
            [
                Ok(()),
                Err(CommandRefusal::DeviceLimit { limit: 2 }),
                Ok(()),
                Err(CommandRefusal::InvalidKind),
                Ok(()),
                Err(CommandRefusal::UnknownDevice),
                Err(CommandRefusal::UnknownDevice),
            ]
        );
        let full = QueueCounts {
            owners: [(DeviceId(1), EnterpriseId(1))].into(),
            enterprises: [(EnterpriseId(1), 4)].into(),
            ..QueueCounts::default()
        };
        assert_eq!(
            admit_commands(&batch[..1], full, limits, UnixMillis(0)),
            [Err(CommandRefusal::EnterpriseLimit { limit: 4 })]
        );
        // An unlicensed device (ORD-3) is refused before the limits count it.
        let unlicensed = QueueCounts {
            owners: [(DeviceId(1), EnterpriseId(1)), (DeviceId(2), EnterpriseId(1))].into(),
            unlicensed: [DeviceId(2)].into(),
            ..QueueCounts::default()
        };
        let limits = CommandLimits { per_device: 1, per_enterprise: 2 };
        assert_eq!(
            admit_commands(
                &[new(2, 1, "a", "{}"), new(1, 1, "b", "{}"), new(1, 1, "c", "{}")],
                unlicensed,
                limits,
                UnixMillis(0)
            ),
            [Err(CommandRefusal::Unlicensed), Ok(()), Err(CommandRefusal::DeviceLimit { limit: 1 })]
        );
    }

    #[test]
    fn output_is_truncated_on_a_character_boundary() {
        assert_eq!(truncate_utf8("héllo", 2), "h");
        assert_eq!(truncate_utf8("héllo", 3), "hé");
        assert_eq!(truncate_utf8("abc", 10), "abc");
        let update = CommandUpdate::Failed { output: "x".repeat(MAX_COMMAND_OUTPUT + 5), reason: "é".repeat(200) };
        let (output, reason) = update.bounded_output();
        assert_eq!(output.map(|o| o.len()), Some(MAX_COMMAND_OUTPUT));
        assert_eq!(reason.map(|r| r.len()), Some(MAX_COMMAND_REASON));
    }
}
