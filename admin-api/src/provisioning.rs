//! Provisioning (PRV-3, PRV-4): a device's placement and facts, its resultant configuration, and
//! pushing what changed as `apply_config` commands.
//!
//! The decisions are pure functions here ([`plan_push`], [`settle`], [`last_provision`]); the
//! async shell reads the store, queues the commands and saves the device's provisioning record.
//! A push carries only the keys whose value differs from what the device confirmed (and, while
//! an earlier push is still pending, from what that push sends), removed keys as `null`, split
//! over as many commands as the command size bound needs. The record is settled from the
//! commands' states whenever it is read for a decision: all succeeded → the pushed hashes are
//! confirmed; one failed, expired or was cancelled → the push failed and the next one resends.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{LazyLock, Mutex};

use fleetpulse_proto::commands::{MAX_CONFIG_CHANGES, validate_internal_command};
use fleetpulse_proto::{AccountId, CommandId, DeviceId, EnterpriseId, GroupId, SiteId, UnixMillis};
use fleetpulse_store::resolve::{DeviceFacts, ProfileSet, ResolvedConfiguration};
use fleetpulse_store::{
    Command, CommandState, DeploymentTarget, Device, DevicePageRequest, DeviceQuery, EntityStore, MAX_COMMAND_ARGS,
    NewCommand, ProvisionPush, ProvisionRecord, ProvisionResult, StoreError, value_hash,
};
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::Semaphore;

use crate::error::ApiError;
use crate::state::AppState;

/// Lifetime of a push's commands: a device offline longer gets the next push instead.
pub(crate) const PUSH_DEADLINE_MS: i64 = 24 * 3_600 * 1_000;

/// Most online devices one background push after a profile or deployment change reaches.
pub(crate) const MAX_BACKGROUND_DEVICES: u64 = 100_000;

/// A device's site path (nearest first) and groups (top priority first).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub(crate) struct Placement {
    /// Its site and the site's parents, nearest first.
    pub(crate) sites: Vec<SiteId>,
    /// Its groups, top priority first.
    pub(crate) groups: Vec<GroupId>,
}

/// Where the device sits: its site path and its groups.
pub(crate) async fn placement(store: &dyn EntityStore, device: &Device) -> Result<Placement, StoreError> {
    Ok(Placement { sites: store.device_site_path(device.id).await?, groups: store.device_groups(device.id).await? })
}

/// What resolution needs to know about the device.
pub(crate) async fn device_facts(
    store: &dyn EntityStore,
    device: &Device,
) -> Result<(DeviceFacts, Placement), StoreError> {
    let placement = placement(store, device).await?;
    let attributes = store.device_attributes(device.id).await?.unwrap_or_default();
    let facts = DeviceFacts {
        id: device.id,
        mac: device.mac,
        serial: device.serial.clone(),
        model: device.model.clone(),
        name: device.name.clone(),
        attributes,
        sites: placement.sites.clone(),
        groups: placement.groups.clone(),
    };
    Ok((facts, placement))
}

/// The enterprise's profiles and deployments, indexed for resolution.
pub(crate) async fn profile_set(store: &dyn EntityStore, enterprise: EnterpriseId) -> Result<ProfileSet, StoreError> {
    let profiles = store.list_profiles(enterprise).await?;
    let deployments = store.list_deployments(enterprise).await?;
    Ok(ProfileSet::new(&profiles, &deployments))
}

/// Refuses (409) to delete a container target while profiles are deployed to it (PRV-3): its
/// devices' configuration would otherwise change without anyone saying so. `what` names the
/// target in the message ("site HQ", "group Sales").
pub(crate) async fn refuse_while_deployed(
    store: &dyn EntityStore,
    enterprise: EnterpriseId,
    target: &DeploymentTarget,
    what: &str,
) -> Result<(), ApiError> {
    let deployments = store.list_deployments(enterprise).await?;
    match deployments.iter().find(|d| &d.target == target && !d.profiles.is_empty()) {
        Some(d) => Err(ApiError::Conflict(format!(
            "{what} has {} configuration profile(s) deployed to it; empty its deployment first",
            d.profiles.len()
        ))),
        None => Ok(()),
    }
}

/// The commands of a push and the configuration it brings the device to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PushPlan {
    /// The `apply_config` arguments (JSON text), in order; empty when nothing changed.
    pub(crate) commands: Vec<String>,
    /// Key → value hash of the configuration after the push.
    pub(crate) hashes: BTreeMap<String, String>,
    /// Per command, the keys it changes: the new value's hash, or `None` for a removal.
    pub(crate) changes: Vec<Vec<(String, Option<String>)>>,
    /// Keys set and keys removed.
    pub(crate) set: usize,
    /// Keys removed.
    pub(crate) removed: usize,
}

/// What to push: every key whose target value differs from what the device confirmed or from
/// what a pending push sends, and every key to remove, chunked into `apply_config` arguments of
/// at most [`MAX_COMMAND_ARGS`] bytes and [`MAX_CONFIG_CHANGES`] keys. A key whose resolved value
/// has a problem keeps what the device has (it is neither sent nor removed).
pub(crate) fn plan_push(resolved: &ResolvedConfiguration<'_>, record: &ProvisionRecord) -> PushPlan {
    let mut target: BTreeMap<String, (String, Option<&str>)> = BTreeMap::new();
    for (key, p) in &resolved.parameters {
        if p.problem.is_some() {
            if let Some(h) = record.confirmed.get(*key) {
                target.insert((*key).to_owned(), (h.clone(), None));
            }
        } else {
            target.insert((*key).to_owned(), (value_hash(&p.value), Some(p.value.as_ref())));
        }
    }
    let pending = record.pending.as_ref().map(|p| &p.hashes);
    let mut keys: BTreeSet<&str> = target.keys().map(String::as_str).collect();
    keys.extend(record.confirmed.keys().map(String::as_str));
    keys.extend(pending.into_iter().flat_map(|h| h.keys().map(String::as_str)));
    let mut commands = Vec::new();
    let mut changes: Vec<Vec<(String, Option<String>)>> = Vec::new();
    let (mut set, mut removed) = (0, 0);
    let mut chunk = Map::new();
    // `{"changes":{}}` is 14 bytes; each entry adds its key, value, colon and comma.
    let mut chunk_len = 14;
    let flush = |chunk: &mut Map<String, Value>, commands: &mut Vec<String>, changes: &mut Vec<_>| {
        if !chunk.is_empty() {
            let keys: Vec<(String, Option<String>)> =
                chunk.iter().map(|(k, v)| (k.clone(), v.as_str().map(value_hash))).collect();
            changes.push(keys);
            let args = serde_json::json!({ "changes": std::mem::take(chunk) });
            commands.push(args.to_string());
        }
    };
    for key in keys {
        let want = target.get(key);
        let want_hash = want.map(|w| w.0.as_str());
        let differs = record.confirmed.get(key).map(String::as_str) != want_hash
            || pending.is_some_and(|h| h.get(key).map(String::as_str) != want_hash);
        if !differs {
            continue;
        }
        let value = match want {
            Some((_, Some(v))) => Value::from(*v),
            Some((_, None)) => continue,
            None => Value::Null,
        };
        let entry_len = Value::from(key).to_string().len() + value.to_string().len() + 2;
        if chunk.len() as u64 >= MAX_CONFIG_CHANGES || chunk_len + entry_len > MAX_COMMAND_ARGS {
            flush(&mut chunk, &mut commands, &mut changes);
            chunk_len = 14;
        }
        if value.is_null() {
            removed += 1;
        } else {
            set += 1;
        }
        chunk_len += entry_len;
        chunk.insert(key.to_owned(), value);
    }
    flush(&mut chunk, &mut commands, &mut changes);
    PushPlan { commands, hashes: target.into_iter().map(|(k, (h, _))| (k, h)).collect(), changes, set, removed }
}

impl PushPlan {
    /// The configuration after only the first `n` commands: what the device confirmed with their
    /// changes applied (all of them give [`PushPlan::hashes`]).
    pub(crate) fn hashes_after(&self, confirmed: &BTreeMap<String, String>, n: usize) -> BTreeMap<String, String> {
        let mut out = confirmed.clone();
        for (key, hash) in self.changes.iter().take(n).flatten() {
            match hash {
                Some(h) => out.insert(key.clone(), h.clone()),
                None => out.remove(key),
            };
        }
        out
    }
}

/// Settles a pending push from its commands' states (`None` for a command that no longer
/// exists): all succeeded → confirmed; any failed, expired, cancelled or gone → failed; else
/// still pending. Answers whether the record changed.
pub(crate) fn settle(record: &mut ProvisionRecord, commands: &[Option<Command>]) -> bool {
    let Some(pending) = &record.pending else { return false };
    let mut finished_at = pending.at;
    let mut failure: Option<String> = None;
    let mut open = false;
    for (id, command) in pending.commands.iter().zip(commands) {
        match command {
            None => failure = failure.or_else(|| Some(format!("command {id} no longer exists"))),
            Some(c) => {
                finished_at = finished_at.max(c.finished_at.unwrap_or(c.issued_at));
                match c.state {
                    CommandState::Succeeded => {}
                    s if s.is_pending() => open = true,
                    s => {
                        let reason = c.reason.clone().unwrap_or_else(|| s.as_str().to_owned());
                        failure = failure.or(Some(format!("command {id} {}: {reason}", s.as_str())));
                    }
                }
            }
        }
    }
    if let Some(reason) = failure {
        record.last_result = Some(ProvisionResult::Failed);
        record.last_reason = Some(reason);
        record.last_at = Some(finished_at);
        record.pending = None;
        return true;
    }
    if open {
        return false;
    }
    let Some(pending) = record.pending.take() else { return false };
    record.confirmed = pending.hashes;
    record.last_result = Some(ProvisionResult::Succeeded);
    record.last_reason = None;
    record.last_at = Some(finished_at);
    true
}

/// The last provisioning of a device as the device detail shows it (DEV-3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub(crate) struct LastProvision {
    /// `pending` while a push runs; else the outcome of the last one.
    pub(crate) result: ProvisionResult,
    /// When the push was queued (pending) or settled.
    pub(crate) at: Option<UnixMillis>,
    /// Why it failed.
    pub(crate) reason: Option<String>,
    /// The commands of the pending push.
    pub(crate) commands: Vec<CommandId>,
}

/// The view of a settled record: `None` if the device was never provisioned.
pub(crate) fn last_provision(record: &ProvisionRecord) -> Option<LastProvision> {
    if let Some(p) = &record.pending {
        return Some(LastProvision {
            result: ProvisionResult::Pending,
            at: Some(p.at),
            reason: None,
            commands: p.commands.clone(),
        });
    }
    Some(LastProvision {
        result: record.last_result?,
        at: record.last_at,
        reason: record.last_reason.clone(),
        commands: Vec::new(),
    })
}

/// The device's provisioning record, settled from its commands (saved when that changed it).
pub(crate) async fn settled_record(store: &dyn EntityStore, device: DeviceId) -> Result<ProvisionRecord, StoreError> {
    let mut record = store.provision_record(device).await?;
    if let Some(pending) = &record.pending {
        let mut commands = Vec::with_capacity(pending.commands.len());
        for id in &pending.commands {
            commands.push(store.command(*id).await?);
        }
        if settle(&mut record, &commands) {
            store.save_provision_record(record.clone()).await?;
        }
    }
    Ok(record)
}

/// What one provisioning did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub(crate) struct ProvisionOutcome {
    /// The device.
    pub(crate) device_id: DeviceId,
    /// `pending` (commands queued) or `up_to_date` (nothing to send).
    pub(crate) result: ProvisionResult,
    /// The queued `apply_config` commands.
    pub(crate) commands: Vec<CommandId>,
    /// Keys set.
    pub(crate) set: usize,
    /// Keys removed.
    pub(crate) removed: usize,
}

/// Resolves the device's configuration and queues what changed; wakes its session.
pub(crate) async fn provision(
    ctx: &AppState,
    device: &Device,
    issued_by: AccountId,
    now: UnixMillis,
) -> Result<ProvisionOutcome, ApiError> {
    let set = profile_set(ctx.api.store.entities.as_ref(), device.enterprise_id).await?;
    provision_with(ctx, &set, device, issued_by, now).await
}

/// [`provision`] with the enterprise's profile set already loaded.
pub(crate) async fn provision_with(
    ctx: &AppState,
    set: &ProfileSet,
    device: &Device,
    issued_by: AccountId,
    now: UnixMillis,
) -> Result<ProvisionOutcome, ApiError> {
    let store = ctx.api.store.entities.as_ref();
    let mut record = settled_record(store, device.id).await?;
    let (facts, _) = device_facts(store, device).await?;
    let plan = plan_push(&set.resolve(&facts), &record);
    let mut outcome = ProvisionOutcome {
        device_id: device.id,
        result: ProvisionResult::UpToDate,
        commands: Vec::new(),
        set: plan.set,
        removed: plan.removed,
    };
    if plan.commands.is_empty() {
        if record.pending.is_none() {
            record.last_result = Some(ProvisionResult::UpToDate);
            record.last_reason = None;
            record.last_at = Some(now);
            ctx.api.store.entities.save_provision_record(record).await?;
        } else {
            outcome.result = ProvisionResult::Pending;
        }
        return Ok(outcome);
    }
    let mut batch = Vec::with_capacity(plan.commands.len());
    for args in &plan.commands {
        let value: Value =
            serde_json::from_str(args).map_err(|e| ApiError::Internal(format!("push arguments: {e}")))?;
        validate_internal_command("apply_config", &value)
            .map_err(|e| ApiError::Internal(format!("push arguments: {e}")))?;
        batch.push(NewCommand {
            device_id: device.id,
            enterprise_id: device.enterprise_id,
            kind: "apply_config".into(),
            args: args.clone(),
            deadline: UnixMillis(now.0.saturating_add(PUSH_DEADLINE_MS)),
            issued_by,
        });
    }
    let answers = ctx.api.store.entities.enqueue_commands(batch, now).await?;
    let mut refusal = None;
    for answer in answers {
        match answer {
            Ok(c) => outcome.commands.push(c.id),
            Err(r) => refusal = refusal.or(Some(r)),
        }
    }
    if !outcome.commands.is_empty() {
        ctx.api.downlink.wake([device.id]);
    }
    if let Some(refusal) = refusal {
        // What was queued still runs (it sets the right values); the record keeps what the
        // device confirmed, so the next push sends everything again.
        record.pending = None;
        record.last_result = Some(ProvisionResult::Failed);
        record.last_reason = Some(format!("not queued: {refusal}"));
        record.last_at = Some(now);
        ctx.api.store.entities.save_provision_record(record).await?;
        return Err(crate::routes::commands::refusal_error(refusal));
    }
    record.pending = Some(ProvisionPush { commands: outcome.commands.clone(), hashes: plan.hashes, at: now });
    ctx.api.store.entities.save_provision_record(record).await?;
    outcome.result = ProvisionResult::Pending;
    Ok(outcome)
}

/// The task kind that provisions its devices (TSK-1 over PRV-4): not a command of the catalog;
/// at each run the scheduler resolves every target device's configuration and queues what
/// changed ([`plan_task_run`]).
pub(crate) const PROVISION_TASK: &str = "provision";

/// The arguments of a [`PROVISION_TASK`]: none (`{}` or null).
pub(crate) fn provision_task_args(args: &Value) -> Result<Value, ApiError> {
    match args {
        Value::Null => Ok(Value::Object(Map::new())),
        Value::Object(m) if m.is_empty() => Ok(Value::Object(Map::new())),
        _ => Err(ApiError::invalid("a provision task takes no arguments")),
    }
}

/// What a provisioning task run queued per device: its settled record and the configuration
/// the queued command brings it to.
pub(crate) type TaskPushes = BTreeMap<DeviceId, (ProvisionRecord, BTreeMap<String, String>)>;

/// A run of a [`PROVISION_TASK`]: for every target device (the task's enterprise's), the first
/// `apply_config` command of what changed (a push needing more commands continues at the next
/// run or on demand: the record confirms only what was sent). Devices already up to date get
/// no command and are counted in the note.
pub(crate) async fn plan_task_run(
    store: &dyn EntityStore,
    task: &fleetpulse_store::Task,
    devices: Vec<DeviceId>,
    matched: u64,
    note: Option<String>,
    now: UnixMillis,
) -> Result<(fleetpulse_store::RunPlan, TaskPushes), StoreError> {
    let set = profile_set(store, task.enterprise_id).await?;
    let deadline_ms = i64::try_from(task.deadline_s.saturating_mul(1_000)).unwrap_or(i64::MAX);
    let mut commands = Vec::new();
    let mut pushes = TaskPushes::new();
    let mut up_to_date = 0u64;
    for id in devices {
        let Some(device) = store.device(id).await?.filter(|d| d.enterprise_id == task.enterprise_id) else {
            continue;
        };
        let mut record = settled_record(store, id).await?;
        let (facts, _) = device_facts(store, &device).await?;
        let plan = plan_push(&set.resolve(&facts), &record);
        let Some(first) = plan.commands.first() else {
            up_to_date += 1;
            if record.pending.is_none() {
                record.last_result = Some(ProvisionResult::UpToDate);
                record.last_reason = None;
                record.last_at = Some(now);
                store.save_provision_record(record).await?;
            }
            continue;
        };
        commands.push(NewCommand {
            device_id: id,
            enterprise_id: task.enterprise_id,
            kind: "apply_config".into(),
            args: first.clone(),
            deadline: UnixMillis(now.0.saturating_add(deadline_ms)),
            issued_by: task.created_by,
        });
        let after = plan.hashes_after(&record.confirmed, 1);
        pushes.insert(id, (record, after));
    }
    let note = match (note, up_to_date) {
        (note, 0) => note,
        (Some(n), k) => Some(format!("{n}; {k} devices were up to date")),
        (None, k) => Some(format!("{k} devices were up to date")),
    };
    Ok((fleetpulse_store::RunPlan { commands, matched, note }, pushes))
}

/// After a provisioning task run: each device's record holds its queued command as the pending
/// push (or the refusal as a failed provisioning).
pub(crate) async fn record_task_pushes(
    store: &dyn EntityStore,
    results: &[fleetpulse_store::RunDevice],
    mut pushes: TaskPushes,
    now: UnixMillis,
) -> Result<(), StoreError> {
    for r in results {
        let Some((mut record, hashes)) = pushes.remove(&r.device_id) else { continue };
        match r.command_id {
            Some(id) => record.pending = Some(ProvisionPush { commands: vec![id], hashes, at: now }),
            None => {
                record.pending = None;
                record.last_result = Some(ProvisionResult::Failed);
                record.last_reason = Some(format!("not queued: {}", r.refusal.as_deref().unwrap_or("refused")));
                record.last_at = Some(now);
            }
        }
        store.save_provision_record(record).await?;
    }
    Ok(())
}

/// Enterprises with a background push waiting to start (a change while one waits joins it).
static WAITING: LazyLock<Mutex<HashSet<EnterpriseId>>> = LazyLock::new(|| Mutex::new(HashSet::new()));

/// One background push runs at a time in the process.
static RUNNING: Semaphore = Semaphore::const_new(1);

/// After a profile or deployment change: pushes the enterprise's online devices' changed
/// configuration in the background (at most [`MAX_BACKGROUND_DEVICES`], one push at a time per
/// process, changes made while a push waits coalesced into it). Offline devices get theirs
/// when provisioned on demand or by a task.
pub(crate) fn push_changes_in_background(ctx: &AppState, enterprise: EnterpriseId, by: AccountId) {
    let fresh = WAITING.lock().map(|mut w| w.insert(enterprise)).unwrap_or(false);
    if !fresh {
        return;
    }
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let Ok(_permit) = RUNNING.acquire().await else { return };
        if let Ok(mut w) = WAITING.lock() {
            w.remove(&enterprise);
        }
        match push_online(&ctx, enterprise, by).await {
            Ok(n) => tracing::info!(message = "Pushed configuration changes.", %enterprise, devices = n),
            Err(error) => tracing::warn!(message = "Background configuration push failed.", %enterprise, %error),
        }
    });
}

async fn push_online(ctx: &AppState, enterprise: EnterpriseId, by: AccountId) -> Result<u64, ApiError> {
    let set = profile_set(ctx.api.store.entities.as_ref(), enterprise).await?;
    let query = DeviceQuery { enterprises: Some(vec![enterprise]), online: Some(true), ..DeviceQuery::default() };
    let mut page = DevicePageRequest { cursor: None, limit: 500 };
    let mut done = 0;
    loop {
        let found = ctx.api.store.entities.query_devices(query.clone(), page.clone()).await?;
        for summary in &found.items {
            if done >= MAX_BACKGROUND_DEVICES {
                return Ok(done);
            }
            done += 1;
            if let Err(error) = provision_with(ctx, &set, &summary.device, by, ctx.clock.now()).await {
                tracing::warn!(message = "Configuration push refused.", device = %summary.device.id, %error);
            }
        }
        match found.next_cursor {
            Some(c) => page.cursor = Some(c),
            None => return Ok(done),
        }
    }
}

#[cfg(test)]
mod tests;
