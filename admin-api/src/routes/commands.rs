//! Commands to devices (issue 11, ING-8): the catalog, issuing one command to a device or one
//! to many (by ids or by the device list's filter), listing, reading and cancelling them.
//!
//! A command is validated against the catalog (`proto::commands`), queued in the store
//! (`CommandStore`, which enforces the pending limits), and the device's session is woken to
//! send it ([`fleetpulse_ingest::CommandSignal`]). Devices outside the caller's scope are 404
//! (in a bulk answer: `not_found` for that device), and changing anything needs
//! [`AuthAdmin::require_act`] on the device's enterprise.

use std::collections::{BTreeMap, HashMap};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{MethodRouter, get, post};
use fleetpulse_proto::commands::{ArgKind, admin_command_kinds, validate_command};
use fleetpulse_proto::{AccountId, CommandId, DeviceId, EnterpriseId, FileId, UnixMillis};
use fleetpulse_store::{
    Command, CommandRefusal, CommandState, DevicePageRequest, DeviceQuery, Feature, MAX_COMMAND_BATCH,
    MAX_COMMAND_PAGE, MAX_DEVICE_PAGE, MAX_FILE_PAGE, NewCommand, Page,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::AuthAdmin;
use crate::error::ApiError;
use crate::extract::{Json, Path, Query};
use crate::policy::Target;
use crate::routes::devices::parse_device_params;
use crate::routes::listing::{ListPage, page};
use crate::state::AppState;

/// Deadline of a command when the request gives none: one hour.
pub(crate) const DEFAULT_DEADLINE_S: u64 = 3_600;

/// Shortest deadline a request may give: 10 seconds.
pub(crate) const MIN_DEADLINE_S: u64 = 10;

/// Longest deadline a request may give: 7 days.
pub(crate) const MAX_DEADLINE_S: u64 = 7 * 24 * 3_600;

/// Default page of a device's commands.
const LIST_DEFAULT: u32 = 50;

/// Routes of this module: (path, handlers by method).
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/api/v1/command-kinds", get(kinds)),
        ("/api/v1/devices/{id}/commands", get(list).post(issue)),
        ("/api/v1/commands", post(bulk)),
        ("/api/v1/commands/{id}", get(show).delete(cancel)),
    ]
}

// ---- the catalog ----

/// One argument of a command kind.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct ArgBody {
    name: String,
    summary: String,
    /// `integer`, `host` (a host name or IP address) or `confirm` (must be `true`).
    #[serde(rename = "type")]
    kind: String,
    /// Whether the command needs it (integers have a default instead).
    required: bool,
    /// Bounds and default of an integer.
    #[serde(skip_serializing_if = "Option::is_none")]
    min: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    default: Option<u64>,
}

/// One command kind of the catalog.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct KindBody {
    /// Its name (`kind` of a command).
    name: String,
    summary: String,
    /// The file the device uploads as the result (its usual name), null if none.
    file: Option<String>,
    args: Vec<ArgBody>,
}

/// The catalog.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct Kinds {
    items: Vec<KindBody>,
}

/// The catalog as the API shows it.
pub(crate) fn catalog() -> Kinds {
    let items = admin_command_kinds()
        .map(|k| KindBody {
            name: k.name.into(),
            summary: k.summary.into(),
            file: k.file.map(Into::into),
            args: k
                .args
                .iter()
                .map(|a| {
                    let (kind, required, bounds) = match a.kind {
                        ArgKind::Integer { min, max, default } => ("integer", false, Some((min, max, default))),
                        ArgKind::Host => ("host", true, None),
                        ArgKind::Confirm => ("confirm", true, None),
                        // Arguments of internal kinds only (never listed here).
                        ArgKind::HttpsUrl => ("url", true, None),
                        ArgKind::Sha256 => ("sha256", true, None),
                        ArgKind::Count { min, max } => ("integer", true, Some((min, max, min))),
                        ArgKind::Token { .. } => ("text", true, None),
                        ArgKind::ConfigChanges { .. } => ("config_changes", true, None),
                    };
                    ArgBody {
                        name: a.name.into(),
                        summary: a.summary.into(),
                        kind: kind.into(),
                        required,
                        min: bounds.map(|b| b.0),
                        max: bounds.map(|b| b.1),
                        default: bounds.map(|b| b.2),
                    }
                })
                .collect(),
        })
        .collect();
    Kinds { items }
}

/// `GET /api/v1/command-kinds`: every command kind with its arguments.
async fn kinds(auth: AuthAdmin) -> Result<Json<Kinds>, ApiError> {
    auth.require(Feature::Devices)?;
    Ok(Json(catalog()))
}

// ---- the command as the API shows it ----

/// A command.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct CommandBody {
    id: CommandId,
    device_id: DeviceId,
    enterprise_id: EnterpriseId,
    kind: String,
    /// The arguments, every default filled in.
    args: Value,
    state: CommandState,
    /// Why it failed, expired or was cancelled.
    reason: Option<String>,
    /// What the device printed.
    output: Option<String>,
    /// How many times it was sent.
    attempts: u32,
    issued_by: AccountId,
    issued_at: UnixMillis,
    sent_at: Option<UnixMillis>,
    accepted_at: Option<UnixMillis>,
    finished_at: Option<UnixMillis>,
    /// Past this time it is not sent, and a pending command expires.
    deadline: UnixMillis,
    /// The files the device uploaded in answer: only on `GET /api/v1/commands/{id}` (listings
    /// leave it out; `GET /api/v1/devices/{id}/files` lists every file with its command).
    #[serde(skip_serializing_if = "Option::is_none")]
    file_ids: Option<Vec<FileId>>,
}

impl From<Command> for CommandBody {
    fn from(c: Command) -> Self {
        // Stored arguments are the JSON text validate_command answered; text that is somehow
        // not JSON is shown as a string rather than failing the whole listing.
        let args = serde_json::from_str(&c.args).unwrap_or(Value::String(c.args));
        CommandBody {
            id: c.id,
            device_id: c.device_id,
            enterprise_id: c.enterprise_id,
            kind: c.kind,
            args,
            state: c.state,
            reason: c.reason,
            output: c.output,
            attempts: c.attempts,
            issued_by: c.issued_by,
            issued_at: c.issued_at,
            sent_at: c.sent_at,
            accepted_at: c.accepted_at,
            finished_at: c.finished_at,
            deadline: c.deadline,
            file_ids: None,
        }
    }
}

// ---- issuing ----

/// What to run (the body of `POST /api/v1/devices/{id}/commands`).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct IssueCommand {
    /// A kind of `GET /api/v1/command-kinds`.
    kind: String,
    /// Its arguments (an object; absent or null: every default).
    #[serde(default)]
    args: Value,
    /// Seconds until the command expires if not finished: 10 to 604800, default 3600.
    deadline_s: Option<u64>,
}

/// The command's kind and arguments checked against the catalog (defaults filled in), and its
/// deadline: 400 naming what is wrong.
fn checked(
    kind: &str,
    args: &Value,
    deadline_s: Option<u64>,
    now: UnixMillis,
) -> Result<(String, UnixMillis), ApiError> {
    let args = validate_command(kind, args).map_err(|e| ApiError::invalid(e.to_string()))?;
    let deadline_s = deadline_s.unwrap_or(DEFAULT_DEADLINE_S);
    if !(MIN_DEADLINE_S..=MAX_DEADLINE_S).contains(&deadline_s) {
        return Err(ApiError::invalid(format!("deadline_s must be from {MIN_DEADLINE_S} to {MAX_DEADLINE_S} seconds")));
    }
    let deadline_ms = i64::try_from(deadline_s * 1000).expect("at most 7 days in milliseconds");
    Ok((args.to_string(), UnixMillis(now.0.saturating_add(deadline_ms))))
}

/// The stable code and message of a refusal, as a bulk answer shows it and a single command
/// answers it.
pub(crate) fn refusal_error(refusal: CommandRefusal) -> ApiError {
    match refusal {
        CommandRefusal::DeviceLimit { .. } | CommandRefusal::EnterpriseLimit { .. } => {
            ApiError::LimitExceeded(refusal.to_string())
        }
        CommandRefusal::UnknownDevice => ApiError::NotFound("device"),
        CommandRefusal::Unlicensed => ApiError::Conflict(refusal.to_string()),
        CommandRefusal::InvalidKind
        | CommandRefusal::ArgsTooLong
        | CommandRefusal::ArgsNotJson
        | CommandRefusal::DeadlinePassed => ApiError::InvalidRequest(refusal.to_string()),
    }
}

/// `POST /api/v1/devices/{id}/commands`: validates and queues a command for the device and
/// wakes its session; 201 with the command. 400 for a bad kind, argument or deadline, 429 when
/// the device or its enterprise has too many pending commands.
async fn issue(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<DeviceId>,
    Json(req): Json<IssueCommand>,
) -> Result<(StatusCode, Json<CommandBody>), ApiError> {
    auth.require(Feature::Devices)?;
    let device = match ctx.api.store.entities.device(id).await? {
        Some(d) if auth.can_see(&ctx, d.enterprise_id).await? => d,
        _ => return Err(ApiError::NotFound("device")),
    };
    auth.require_device_management(&ctx, device.enterprise_id).await?;
    let now = ctx.clock.now();
    let (args, deadline) = checked(&req.kind, &req.args, req.deadline_s, now)?;
    let new = NewCommand {
        device_id: id,
        enterprise_id: device.enterprise_id,
        kind: req.kind,
        args,
        deadline,
        issued_by: auth.caller.account,
    };
    let answer = ctx.api.store.entities.enqueue_commands(vec![new], now).await?.pop();
    let command = answer.ok_or_else(|| ApiError::Internal("the store answered no command".into()))?;
    let command = command.map_err(refusal_error)?;
    ctx.api.downlink.wake([id]);
    let mut body = CommandBody::from(command);
    body.file_ids = Some(Vec::new());
    Ok((StatusCode::CREATED, Json(body)))
}

// ---- bulk ----

/// One command for many devices: exactly one of `device_ids` and `filter`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BulkCommand {
    kind: String,
    #[serde(default)]
    args: Value,
    deadline_s: Option<u64>,
    /// These devices (duplicates count once); ids the caller does not see are answered
    /// `not_found`.
    device_ids: Option<Vec<DeviceId>>,
    /// The devices the device list shows with these parameters (the names and values of
    /// `GET /api/v1/devices`, without `cursor`, `limit`, `sort` and `order`; `enterprise_id`
    /// and `channel_id` may be arrays), resolved now within the caller's scope.
    filter: Option<serde_json::Map<String, Value>>,
}

/// A refusal of one device of a bulk command.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct DeviceError {
    /// A stable code: `not_found`, `acting_required`, `limit_exceeded`, `invalid_request`,
    /// `conflict` (the device is unlicensed, ORD-3).
    code: String,
    message: String,
}

/// What happened for one device of a bulk command: `command_id` or `error`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct DeviceResult {
    device_id: DeviceId,
    #[serde(skip_serializing_if = "Option::is_none")]
    command_id: Option<CommandId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<DeviceError>,
}

/// The answer of a bulk command.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct BulkResult {
    /// Commands queued.
    queued: u64,
    /// Devices refused, by error code.
    refused: BTreeMap<String, u64>,
    /// Per device, in the order of `device_ids` (or of the device list, by id).
    results: Vec<DeviceResult>,
}

/// The device list's query string of a bulk filter object: strings, numbers and booleans as
/// they are written in a query string, arrays as repeated parameters.
pub(crate) fn filter_query(filter: &serde_json::Map<String, Value>) -> Result<String, ApiError> {
    let mut pairs: Vec<(&str, String)> = Vec::new();
    for (name, value) in filter {
        if matches!(name.as_str(), "cursor" | "limit" | "sort" | "order") {
            return Err(ApiError::invalid(format!("the filter takes no {name} (every matching device is chosen)")));
        }
        let scalar = |v: &Value| match v {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            _ => Err(ApiError::invalid(format!("filter {name} must be a string, number or boolean"))),
        };
        match value {
            Value::Array(values) if matches!(name.as_str(), "enterprise_id" | "channel_id") => {
                for v in values {
                    pairs.push((name, scalar(v)?));
                }
            }
            v => pairs.push((name, scalar(v)?)),
        }
    }
    serde_urlencoded::to_string(&pairs).map_err(|e| ApiError::invalid(format!("filter: {e}")))
}

/// The devices a bulk filter chooses within the caller's scope, by id, with their enterprises;
/// 400 when they are more than [`MAX_COMMAND_BATCH`].
async fn filtered_devices(
    auth: &AuthAdmin,
    ctx: &AppState,
    filter: &serde_json::Map<String, Value>,
) -> Result<Vec<(DeviceId, EnterpriseId)>, ApiError> {
    let params = parse_device_params(&filter_query(filter)?)?;
    let (enterprises, channels) = auth.device_scope(ctx, params.enterprises, params.channels).await?;
    let query = DeviceQuery { enterprises, channels, ..params.query };
    let too_many =
        || ApiError::invalid(format!("the filter chooses more than {MAX_COMMAND_BATCH} devices: narrow the filter"));
    let mut devices = Vec::new();
    let mut cursor = None;
    loop {
        let page = DevicePageRequest { cursor, limit: MAX_DEVICE_PAGE };
        let found = ctx.api.store.entities.query_devices(query.clone(), page).await?;
        if found.total > MAX_COMMAND_BATCH as u64 {
            return Err(too_many());
        }
        devices.extend(found.items.iter().map(|s| (s.device.id, s.device.enterprise_id)));
        if devices.len() > MAX_COMMAND_BATCH {
            return Err(too_many());
        }
        match found.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(devices),
        }
    }
}

/// `POST /api/v1/commands`: one command for the devices named or chosen by the filter (at most
/// [`MAX_COMMAND_BATCH`]), queued in one batch; 200 with the result per device and the counts.
/// A device the caller does not see is `not_found`, one of an enterprise it may not act inside
/// `acting_required`, one at its pending limit `limit_exceeded`.
async fn bulk(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Json(req): Json<BulkCommand>,
) -> Result<Json<BulkResult>, ApiError> {
    auth.require(Feature::Devices)?;
    let now = ctx.clock.now();
    let (args, deadline) = checked(&req.kind, &req.args, req.deadline_s, now)?;
    // Each device with its enterprise if the caller sees it.
    let chosen: Vec<(DeviceId, Option<EnterpriseId>)> = match (&req.device_ids, &req.filter) {
        (Some(ids), None) => {
            if ids.len() > MAX_COMMAND_BATCH {
                return Err(ApiError::invalid(format!("at most {MAX_COMMAND_BATCH} device_ids")));
            }
            let mut seen = std::collections::HashSet::new();
            let mut visible: HashMap<EnterpriseId, bool> = HashMap::new();
            let mut chosen = Vec::new();
            for &id in ids.iter().filter(|id| seen.insert(**id)) {
                let enterprise = match ctx.api.store.entities.device(id).await? {
                    Some(d) => {
                        let e = d.enterprise_id;
                        let sees = match visible.get(&e) {
                            Some(&sees) => sees,
                            None => {
                                let sees = auth.can_see(&ctx, e).await?;
                                visible.insert(e, sees);
                                sees
                            }
                        };
                        sees.then_some(e)
                    }
                    None => None,
                };
                chosen.push((id, enterprise));
            }
            chosen
        }
        (None, Some(filter)) => {
            filtered_devices(&auth, &ctx, filter).await?.into_iter().map(|(d, e)| (d, Some(e))).collect()
        }
        _ => return Err(ApiError::invalid("give exactly one of device_ids and filter")),
    };
    // Which enterprises the caller may send things to the devices of (acting inside them, and
    // their device-management permission on).
    let mut acts: HashMap<EnterpriseId, crate::policy::Decision> = HashMap::new();
    for e in chosen.iter().filter_map(|(_, e)| *e) {
        if let std::collections::hash_map::Entry::Vacant(slot) = acts.entry(e) {
            slot.insert(auth.ask(&ctx, Target::ManageDevices(e)).await?);
        }
    }
    // Refusals of the API, and the slots of the commands the store answers for.
    let mut results: Vec<Result<CommandId, ApiError>> = Vec::with_capacity(chosen.len());
    let mut slots = Vec::new();
    let mut batch = Vec::new();
    for &(device, enterprise) in &chosen {
        match enterprise {
            None => results.push(Err(ApiError::NotFound("device"))),
            Some(e) if !acts.get(&e).is_some_and(Result::is_ok) => {
                let refusal = acts.get(&e).and_then(|d| d.clone().err());
                results.push(Err(refusal.map_or(ApiError::ActingRequired, ApiError::from)));
            }
            Some(e) => {
                slots.push(results.len());
                results.push(Err(ApiError::Internal("not answered by the store".into())));
                batch.push(NewCommand {
                    device_id: device,
                    enterprise_id: e,
                    kind: req.kind.clone(),
                    args: args.clone(),
                    deadline,
                    issued_by: auth.caller.account,
                });
            }
        }
    }
    let answers = ctx.api.store.entities.enqueue_commands(batch, now).await?;
    if answers.len() != slots.len() {
        return Err(ApiError::Internal("the store answered another number of commands".into()));
    }
    let mut woken = Vec::with_capacity(answers.len());
    for (slot, answer) in slots.into_iter().zip(answers) {
        results[slot] = answer
            .map(|c| {
                woken.push(c.device_id);
                c.id
            })
            .map_err(refusal_error);
    }
    ctx.api.downlink.wake(woken);
    let mut refused: BTreeMap<String, u64> = BTreeMap::new();
    let mut count = 0;
    let results = chosen
        .iter()
        .zip(results)
        .map(|(&(device_id, _), result)| match result {
            Ok(id) => {
                count += 1;
                DeviceResult { device_id, command_id: Some(id), error: None }
            }
            Err(e) => {
                *refused.entry(e.code().to_owned()).or_default() += 1;
                let error = DeviceError { code: e.code().to_owned(), message: e.to_string() };
                DeviceResult { device_id, command_id: None, error: Some(error) }
            }
        })
        .collect();
    Ok(Json(BulkResult { queued: count, refused, results }))
}

// ---- reading and cancelling ----

/// The keyset page of a device's commands (newest first: `after` is the last id of the previous
/// page).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PageQuery {
    after: Option<u64>,
    limit: Option<u32>,
}

impl PageQuery {
    /// `after` and `limit`.
    pub(crate) fn parts(&self) -> (Option<u64>, Option<u32>) {
        (self.after, self.limit)
    }
}

/// `GET /api/v1/devices/{id}/commands?after=&limit=`: the device's commands, newest first.
async fn list(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<DeviceId>,
    Query(q): Query<PageQuery>,
) -> Result<Json<ListPage<CommandBody>>, ApiError> {
    auth.require(Feature::Devices)?;
    let (after, limit) = q.parts();
    let page = page(after, limit, LIST_DEFAULT, MAX_COMMAND_PAGE)?;
    visible_device(&auth, &ctx, id).await?;
    let commands = ctx.api.store.entities.list_device_commands(id, page).await?;
    let items: Vec<CommandBody> = commands.into_iter().map(CommandBody::from).collect();
    Ok(Json(ListPage::new(items, page, |c| c.id.0)))
}

/// 404 unless the device exists and the caller sees it; answers its enterprise.
pub(crate) async fn visible_device(auth: &AuthAdmin, ctx: &AppState, id: DeviceId) -> Result<EnterpriseId, ApiError> {
    match ctx.api.store.entities.device(id).await? {
        Some(d) if auth.can_see(ctx, d.enterprise_id).await? => Ok(d.enterprise_id),
        _ => Err(ApiError::NotFound("device")),
    }
}

/// The command if the caller sees its device's enterprise, else 404.
async fn find(auth: &AuthAdmin, ctx: &AppState, id: CommandId) -> Result<Command, ApiError> {
    match ctx.api.store.entities.command(id).await? {
        Some(c) if auth.can_see(ctx, c.enterprise_id).await? => Ok(c),
        _ => Err(ApiError::NotFound("command")),
    }
}

/// `GET /api/v1/commands/{id}`: the command, with the ids of the files its device uploaded in
/// answer.
async fn show(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<CommandId>,
) -> Result<Json<CommandBody>, ApiError> {
    auth.require(Feature::Devices)?;
    let command = find(&auth, &ctx, id).await?;
    // A device keeps at most MAX_FILES_PER_DEVICE files, so one page holds all of them.
    let files = ctx.api.store.entities.list_device_files(command.device_id, Page::first(MAX_FILE_PAGE)).await?;
    let mut body = CommandBody::from(command);
    body.file_ids = Some(files.iter().filter(|f| f.command_id == Some(id)).map(|f| f.id).collect());
    Ok(Json(body))
}

/// `DELETE /api/v1/commands/{id}`: cancels a queued command (200 with it, now `cancelled`); 409
/// naming its state when it is no longer queued.
async fn cancel(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<CommandId>,
) -> Result<Json<CommandBody>, ApiError> {
    auth.require(Feature::Devices)?;
    let command = find(&auth, &ctx, id).await?;
    auth.require_act(&ctx, command.enterprise_id).await?;
    let not_queued = |state: CommandState| {
        ApiError::Conflict(format!("command {id} is {}: only a queued command can be cancelled", state.as_str()))
    };
    if command.state != CommandState::Queued {
        return Err(not_queued(command.state));
    }
    let after = ctx.api.store.entities.cancel_command(id, auth.caller.account, ctx.clock.now()).await?;
    let after = after.ok_or(ApiError::NotFound("command"))?;
    // Sent (or expired) between the read and the cancel.
    if after.state != CommandState::Cancelled {
        return Err(not_queued(after.state));
    }
    Ok(Json(CommandBody::from(after)))
}
