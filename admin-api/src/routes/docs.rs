//! `GET /api/v1/openapi.json`: the OpenAPI document of the API, built from [`operations`], one
//! per served method of the route table ([`crate::routes::all`]), each naming the types its
//! handler takes and answers (assembled by `openapi.rs`).

use std::sync::LazyLock;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use fleetpulse_store::{AlarmRecord, Channel, Enterprise, OperationLog, StoredFile, StoredStrategy};
use serde_json::Value;

use crate::login::{ActingSession, LoginResponse};
use crate::openapi::{Operation, delete_, document, get_, patch_, post_, put_};
use crate::routes::listing::{ListPage, SearchQuery};
use crate::routes::session::{
    LoginRequest, PasswordChange, SessionView, TotpDisable, TotpEnable, TotpSetup, VerifyRequest,
};
use crate::routes::{
    account, alarm_summary, alarms, channel_strategies, commands, dashboard, device_imports, device_labels, devices,
    effective_strategies, enterprises, firmware, inventory, nodes, oplog, profiles, sites, strategies, tasks, tenants,
};
use crate::state::AppState;

mod examples;

/// Routes of this module: (path, handlers by method).
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![("/api/v1/openapi.json", get(serve))]
}

/// The document, generated once per process.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| document(operations()).to_string());

/// The served document's text.
#[cfg(test)]
pub(crate) fn served_document() -> String {
    DOCUMENT.clone()
}

/// `GET /api/v1/openapi.json` (no login needed): the OpenAPI 3.0 document of every route.
async fn serve() -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], DOCUMENT.as_str()).into_response()
}

/// Every operation of the API.
pub(crate) fn operations() -> Vec<Operation> {
    const OPS: &str = "operations";
    const AUTH: &str = "accounts and sessions";
    const TENANTS: &str = "tenants";
    const DEVICES: &str = "devices";
    const ALARMS: &str = "alarms";
    const COMMANDS: &str = "commands and files";
    const LOG: &str = "operation log";
    const TASKS: &str = "scheduled tasks";
    const SITES: &str = "sites";
    const FIRMWARE: &str = "firmware";
    vec![
        get_("/healthz", OPS, "Liveness: 200 while the process answers").public().answers::<Value>(200),
        get_(
            "/readyz",
            OPS,
            "Readiness: 200 once serving, 503 while starting, stopping or while the store cannot write",
        )
        .public()
        .answers::<Value>(200)
        .may_fail(&[503]),
        get_("/metrics", OPS, "Prometheus metrics (OpenMetrics text)")
            .public()
            .answers_raw(200, "application/openmetrics-text"),
        get_("/api/v1/openapi.json", OPS, "This document").public().answers::<Value>(200),
        // Accounts and sessions.
        post_("/api/v1/auth/login", AUTH, "Log in with email and password (and a TOTP code when enrolled)")
            .public()
            .body::<LoginRequest>()
            .answers::<LoginResponse>(200)
            .may_fail(&[401, 429])
            .example_request(examples::login_request)
            .example_answer(examples::login_response),
        post_("/api/v1/auth/logout", AUTH, "End the caller's session").answers_raw(204, ""),
        post_("/api/v1/auth/login/verify", AUTH, "Finish a login protected by an emailed code: a new session")
            .public()
            .body::<VerifyRequest>()
            .answers::<LoginResponse>(200)
            .may_fail(&[401, 429]),
        get_("/api/v1/auth/session", AUTH, "The caller's session (and a browser session's CSRF token)")
            .answers::<SessionView>(200),
        post_("/api/v1/auth/forgot-password", AUTH, "Email a single-use reset link (202 for any address)")
            .public()
            .body::<account::ForgotPassword>()
            .answers_raw(202, "")
            .may_fail(&[429]),
        post_("/api/v1/auth/reset-password", AUTH, "Set a new password with a reset link's token")
            .public()
            .body::<account::ResetPassword>()
            .answers_raw(204, ""),
        get_("/api/v1/account", AUTH, "The caller's settings").answers::<account::SettingsBody>(200),
        put_("/api/v1/account", AUTH, "Change the caller's settings (given fields change)")
            .body::<account::SettingsUpdate>()
            .answers::<account::SettingsBody>(200)
            .may_fail(&[409]),
        post_("/api/v1/accounts/{id}/reset-password", TENANTS, "Email an account a reset link (admins)")
            .answers_raw(202, "")
            .may_fail(&[409]),
        post_(
            "/api/v1/account/password",
            AUTH,
            "Change the caller's password; every session ends, a new one is returned",
        )
        .body::<PasswordChange>()
        .answers::<LoginResponse>(200),
        post_("/api/v1/account/totp/setup", AUTH, "A fresh TOTP secret for an authenticator app")
            .answers::<TotpSetup>(200),
        post_("/api/v1/account/totp", AUTH, "Turn on TOTP login protection with a first code")
            .body::<TotpEnable>()
            .answers_raw(204, ""),
        post_("/api/v1/account/totp/disable", AUTH, "Turn off TOTP with a current code")
            .body::<TotpDisable>()
            .answers_raw(204, ""),
        // Tenants.
        get_("/api/v1/channels", TENANTS, "Channels the caller sees, searchable")
            .query::<SearchQuery>()
            .answers::<ListPage<Channel>>(200),
        post_("/api/v1/channels", TENANTS, "Create a channel or sub-channel")
            .body::<tenants::CreateChannel>()
            .answers::<Channel>(201)
            .may_fail(&[409]),
        get_("/api/v1/channels/{id}", TENANTS, "One channel").answers::<Channel>(200),
        put_("/api/v1/channels/{id}", TENANTS, "Edit a channel (given fields change)")
            .body::<tenants::EditChannel>()
            .answers::<Channel>(200),
        post_("/api/v1/channels/{id}/act", TENANTS, "Act inside a sub-channel: a new session scoped to it")
            .answers::<ActingSession>(200),
        get_("/api/v1/enterprises", TENANTS, "Enterprises the caller sees, searchable")
            .query::<SearchQuery>()
            .answers::<ListPage<Enterprise>>(200),
        post_(
            "/api/v1/enterprises",
            TENANTS,
            "Create an enterprise with its profile and a fresh credential; its master administrator (else register) email gets the enterprise admin account, emailed",
        )
        .body::<enterprises::CreateEnterprise>()
        .answers::<enterprises::CreatedEnterprise>(201)
            .may_fail(&[409]),
        get_("/api/v1/enterprises/{id}", TENANTS, "One enterprise").answers::<Enterprise>(200),
        put_("/api/v1/enterprises/{id}", TENANTS, "Edit an enterprise (given fields change)")
            .body::<enterprises::EditEnterprise>()
            .answers::<Enterprise>(200),
        post_("/api/v1/enterprises/{id}/authorization", TENANTS, "The channel asks the enterprise for authorization")
            .answers::<Enterprise>(200)
            .may_fail(&[409]),
        post_("/api/v1/enterprises/{id}/authorization/accept", TENANTS, "The enterprise accepts its channel")
            .answers::<Enterprise>(200)
            .may_fail(&[409]),
        post_("/api/v1/enterprises/{id}/authorization/reject", TENANTS, "The enterprise rejects its channel")
            .answers::<Enterprise>(200)
            .may_fail(&[409]),
        post_("/api/v1/enterprises/{id}/authorization/revoke", TENANTS, "The enterprise revokes the authorization")
            .answers::<Enterprise>(200)
            .may_fail(&[409]),
        post_("/api/v1/enterprises/{id}/act", TENANTS, "Act inside an authorizing enterprise: a new session")
            .answers::<ActingSession>(200),
        get_(
            "/api/v1/nodes",
            "nodes",
            "The ingest nodes sharing the scale-out store, their leases and sessions (platform)",
        )
        .answers::<nodes::NodesPage>(200),
        get_("/api/v1/enterprises/{id}/stored-sequences", TENANTS, "Stored sequence numbers per device (load test)")
            .query::<enterprises::PageQuery>()
            .answers::<enterprises::StoredSequencesPage>(200),
        get_("/api/v1/accounts", TENANTS, "Accounts the caller sees, searchable by email or contact name")
            .query::<SearchQuery>()
            .answers::<ListPage<tenants::AccountBody>>(200),
        post_("/api/v1/accounts", TENANTS, "Create an account of a tenant the caller sees")
            .body::<tenants::CreateAccount>()
            .answers::<tenants::AccountBody>(201)
            .may_fail(&[409]),
        get_("/api/v1/accounts/{id}", TENANTS, "One account").answers::<tenants::AccountBody>(200),
        post_("/api/v1/accounts/{id}/freeze", TENANTS, "Freeze an account: no login, sessions end")
            .answers::<tenants::AccountBody>(200)
            .may_fail(&[409]),
        post_("/api/v1/accounts/{id}/unfreeze", TENANTS, "Unfreeze an account")
            .answers::<tenants::AccountBody>(200)
            .may_fail(&[409]),
        put_("/api/v1/accounts/{id}/email", TENANTS, "Change an account's login email (strategies naming it send there)")
            .body::<tenants::EmailBody>()
            .answers::<tenants::AccountBody>(200)
            .may_fail(&[409]),
        get_("/api/v1/sub-accounts", TENANTS, "The caller's sub-accounts")
            .query::<tenants::PageOnly>()
            .answers::<ListPage<tenants::AccountBody>>(200),
        post_("/api/v1/sub-accounts", TENANTS, "Create a sub-account with feature and data permissions")
            .body::<tenants::CreateSubAccount>()
            .answers::<tenants::AccountBody>(201)
            .may_fail(&[409]),
        put_("/api/v1/sub-accounts/{id}/permissions", TENANTS, "Replace a sub-account's permissions")
            .body::<tenants::PermissionsBody>()
            .answers::<tenants::AccountBody>(200),
        post_("/api/v1/sub-accounts/{id}/freeze", TENANTS, "Freeze one of the caller's sub-accounts")
            .answers::<tenants::AccountBody>(200),
        post_("/api/v1/sub-accounts/{id}/unfreeze", TENANTS, "Unfreeze one of the caller's sub-accounts")
            .answers::<tenants::AccountBody>(200),
        // Devices.
        get_("/api/v1/devices", DEVICES, "Devices the caller sees: filters, search, sort, keyset pages, total")
            .query::<devices::DeviceParams>()
            .answers::<devices::DeviceListPage>(200)
            .example_answer(examples::device_page),
        get_("/api/v1/devices/{id}", DEVICES, "One device in the PDMS-E status model")
            .answers::<devices::DeviceDetail>(200),
        post_("/api/v1/devices", DEVICES, "Add a device by MAC or serial, with model, name and attributes")
            .body::<inventory::AddDevice>()
            .answers::<inventory::InventoryDevice>(201),
        patch_("/api/v1/devices/{id}", DEVICES, "Rename a device, change its model or attributes")
            .body::<inventory::EditDevice>()
            .answers::<inventory::InventoryDevice>(200),
        delete_("/api/v1/devices/{id}", DEVICES, "Delete a device (its session is closed with DEVICE_DELETED)")
            .answers_raw(204, "application/json"),
        post_("/api/v1/devices/{id}/move", DEVICES, "Move a device to another enterprise in the caller's scope")
            .body::<inventory::MoveDevice>()
            .answers::<inventory::InventoryDevice>(200),
        post_("/api/v1/devices/bulk-edit", DEVICES, "Change the model or attributes of the devices a filter chooses")
            .body::<inventory::BulkEdit>()
            .answers::<inventory::BulkEdited>(200),
        get_("/api/v1/devices/export", DEVICES, "The device list as CSV (list filters, columns=...), streamed")
            .query::<devices::DeviceParams>()
            .answers_raw(200, "text/csv"),
        post_("/api/v1/device-imports", DEVICES, "Import devices from a CSV body (streamed, each row validated)")
            .query::<device_imports::ImportQuery>()
            .answers::<device_imports::ImportReport>(201),
        get_("/api/v1/device-imports", DEVICES, "Import logs of the enterprises the caller sees, newest first")
            .query::<device_imports::ImportListQuery>()
            .answers::<ListPage<fleetpulse_store::DeviceImport>>(200),
        get_("/api/v1/device-imports/{id}", DEVICES, "An import log with its first row errors")
            .answers::<device_imports::ImportReport>(200),
        get_("/api/v1/device-imports/{id}/errors.csv", DEVICES, "Every row error of an import, as CSV")
            .answers_raw(200, "text/csv"),
        get_("/api/v1/devices/{id}/resources", DEVICES, "A device's CPU and memory history, newest first")
            .query::<devices::HistoryQuery>()
            .answers::<devices::History>(200),
        get_("/api/v1/dashboard", DEVICES, "Device counts: online/total, by type, by model (the list's filters)")
            .query::<devices::DeviceParams>()
            .answers::<dashboard::Dashboard>(200),
        get_("/api/v1/device-labels", DEVICES, "The caller's saved device searches")
            .answers::<device_labels::Labels>(200),
        post_("/api/v1/device-labels", DEVICES, "Save a device search under a name")
            .body::<device_labels::LabelRequest>()
            .answers::<fleetpulse_store::DeviceLabel>(201)
            .may_fail(&[409]),
        delete_("/api/v1/device-labels/{id}", DEVICES, "Delete a saved device search").answers_raw(204, ""),
        get_("/api/v1/account/device-columns", DEVICES, "The caller's chosen device-list columns")
            .answers::<device_labels::Columns>(200),
        put_("/api/v1/account/device-columns", DEVICES, "Choose the device-list columns")
            .body::<device_labels::Columns>()
            .answers::<device_labels::Columns>(200),
        // Commands and files.
        get_("/api/v1/command-kinds", COMMANDS, "The command catalog: every kind with its arguments")
            .answers::<commands::Kinds>(200),
        post_("/api/v1/devices/{id}/commands", COMMANDS, "Queue a command for a device and wake its session")
            .body::<commands::IssueCommand>()
            .answers::<commands::CommandBody>(201)
            .may_fail(&[429]),
        get_("/api/v1/devices/{id}/commands", COMMANDS, "A device's commands, newest first")
            .query::<commands::PageQuery>()
            .answers::<ListPage<commands::CommandBody>>(200),
        post_("/api/v1/commands", COMMANDS, "Queue one command for many devices (by ids or by device filter)")
            .body::<commands::BulkCommand>()
            .answers::<commands::BulkResult>(200)
            .may_fail(&[429]),
        get_("/api/v1/commands/{id}", COMMANDS, "One command, with the ids of its files")
            .answers::<commands::CommandBody>(200),
        delete_("/api/v1/commands/{id}", COMMANDS, "Cancel a queued command (409 once it is sent)")
            .answers::<commands::CommandBody>(200)
            .may_fail(&[409]),
        get_("/api/v1/devices/{id}/files", COMMANDS, "Files a device uploaded, newest first")
            .query::<commands::PageQuery>()
            .answers::<ListPage<StoredFile>>(200),
        get_("/api/v1/files/{id}", COMMANDS, "One uploaded file's metadata").answers::<StoredFile>(200),
        get_("/api/v1/files/{id}/content", COMMANDS, "Download an uploaded file (recorded in the operation log)")
            .answers_raw(200, "application/octet-stream"),
        // Alarms.
        get_("/api/v1/alarms", ALARMS, "Alarm records, filtered")
            .query::<alarms::ListQuery>()
            .answers::<ListPage<AlarmRecord>>(200),
        get_("/api/v1/alarms/latest", ALARMS, "The latest alarms (the bell)")
            .query::<alarms::LatestQuery>()
            .answers::<alarms::LatestFeed>(200),
        get_("/api/v1/alarms/summary", ALARMS, "Alarm counts by severity and over time (the dashboard)")
            .query::<alarm_summary::SummaryQuery>()
            .answers::<alarm_summary::AlarmSummary>(200),
        get_("/api/v1/alarms/{id}", ALARMS, "One alarm record").answers::<AlarmRecord>(200),
        post_("/api/v1/alarms/{id}/acknowledge", ALARMS, "Acknowledge an active alarm")
            .answers::<AlarmRecord>(200)
            .may_fail(&[409])
            .example_answer(examples::acknowledged_alarm),
        post_("/api/v1/alarms/{id}/clear", ALARMS, "Clear an alarm by hand")
            .answers::<AlarmRecord>(200)
            .may_fail(&[409]),
        get_("/api/v1/alarms/{id}/log", ALARMS, "The alarm log file the device attached")
            .answers_raw(200, "application/octet-stream"),
        get_("/api/v1/enterprises/{id}/alarm-strategies", ALARMS, "The enterprise's alarm strategies")
            .answers::<strategies::StrategyList>(200),
        post_("/api/v1/enterprises/{id}/alarm-strategies", ALARMS, "Create an alarm strategy")
            .body::<strategies::StrategyRequest>()
            .answers::<StoredStrategy>(201)
            .may_fail(&[409]),
        get_("/api/v1/alarm-strategies/{id}", ALARMS, "One alarm strategy").answers::<StoredStrategy>(200),
        put_("/api/v1/alarm-strategies/{id}", ALARMS, "Replace an alarm strategy's settings")
            .body::<strategies::StrategyRequest>()
            .answers::<StoredStrategy>(200),
        delete_("/api/v1/alarm-strategies/{id}", ALARMS, "Delete an alarm strategy").answers_raw(204, ""),
        post_("/api/v1/alarm-strategies/{id}/enable", ALARMS, "Enable a strategy").answers::<StoredStrategy>(200),
        post_("/api/v1/alarm-strategies/{id}/disable", ALARMS, "Disable a strategy").answers::<StoredStrategy>(200),
        // Strategies down the tenant tree (issue 18).
        get_("/api/v1/channels/{id}/alarm-strategies", ALARMS, "The channel's own alarm strategies")
            .answers::<channel_strategies::ChannelStrategyList>(200),
        post_(
            "/api/v1/channels/{id}/alarm-strategies",
            ALARMS,
            "Create a channel strategy, handed down to its subtree",
        )
        .body::<strategies::StrategyRequest>()
        .answers::<fleetpulse_store::ChannelStrategy>(201)
        .may_fail(&[409]),
        get_("/api/v1/channel-alarm-strategies/{id}", ALARMS, "One channel strategy")
            .answers::<fleetpulse_store::ChannelStrategy>(200),
        put_("/api/v1/channel-alarm-strategies/{id}", ALARMS, "Replace a channel strategy's settings and inheritance")
            .body::<strategies::StrategyRequest>()
            .answers::<fleetpulse_store::ChannelStrategy>(200),
        delete_("/api/v1/channel-alarm-strategies/{id}", ALARMS, "Delete a channel strategy").answers_raw(204, ""),
        get_(
            "/api/v1/enterprises/{id}/effective-alarm-strategies",
            ALARMS,
            "Which strategies apply to the enterprise and where each came from",
        )
        .answers::<effective_strategies::EffectiveList>(200),
        get_(
            "/api/v1/devices/{id}/effective-alarm-strategies",
            ALARMS,
            "Which strategies evaluate the device's alarms",
        )
        .answers::<effective_strategies::EffectiveList>(200),
        put_(
            "/api/v1/enterprises/{id}/alarm-strategy-choices",
            ALARMS,
            "Opt out of, override or inherit again a strategy the enterprise's channels hand down",
        )
        .body::<effective_strategies::ChoiceRequest>()
        .answers::<effective_strategies::EffectiveList>(200)
        .may_fail(&[409]),
        // Scheduled tasks.
        get_("/api/v1/tasks", TASKS, "Scheduled tasks the caller sees, by id")
            .query::<tasks::TaskListQuery>()
            .answers::<ListPage<fleetpulse_store::Task>>(200),
        post_("/api/v1/tasks", TASKS, "Schedule a command for devices: once, daily or weekly")
            .body::<tasks::TaskRequest>()
            .answers::<fleetpulse_store::Task>(201),
        get_("/api/v1/tasks/{id}", TASKS, "One scheduled task").answers::<fleetpulse_store::Task>(200),
        delete_("/api/v1/tasks/{id}", TASKS, "Cancel an active or paused task")
            .answers::<fleetpulse_store::Task>(200)
            .may_fail(&[409]),
        post_("/api/v1/tasks/{id}/pause", TASKS, "Pause an active task")
            .answers::<fleetpulse_store::Task>(200)
            .may_fail(&[409]),
        post_("/api/v1/tasks/{id}/resume", TASKS, "Resume a paused task from its next occurrence")
            .answers::<fleetpulse_store::Task>(200)
            .may_fail(&[409]),
        get_("/api/v1/tasks/{id}/runs", TASKS, "A task's runs, newest first")
            .query::<tasks::PageQuery>()
            .answers::<ListPage<fleetpulse_store::TaskRun>>(200),
        get_("/api/v1/tasks/{id}/runs/{run}", TASKS, "A run: totals and per-device results")
            .query::<tasks::PageQuery>()
            .answers::<tasks::RunDetail>(200),
        // Sites (PRV-1).
        get_("/api/v1/sites", SITES, "An enterprise's sites as a tree, with device counts")
            .query::<sites::SiteQuery>()
            .answers::<sites::SiteTree>(200),
        post_("/api/v1/sites", SITES, "Create a site (refused naming the site whose subnet or name it takes)")
            .body::<sites::CreateSite>()
            .answers::<fleetpulse_store::Site>(201),
        get_("/api/v1/sites/{id}", SITES, "One site").answers::<fleetpulse_store::Site>(200),
        patch_("/api/v1/sites/{id}", SITES, "Edit a site; devices are re-matched when its subnets change")
            .body::<sites::EditSite>()
            .answers::<fleetpulse_store::Site>(200),
        delete_(
            "/api/v1/sites/{id}",
            SITES,
            "Delete a site (not Internet or Intranet, not with child sites or profiles deployed to it)",
        )
        .answers_raw(204, "application/json")
        .may_fail(&[409]),
        post_("/api/v1/sites/import", SITES, "Import sites from a CSV body (per-row errors)")
            .query::<sites::SiteQuery>()
            .answers::<sites::SiteImportReport>(200),
        // Firmware (PRV-4).
        get_("/api/v1/firmware", FIRMWARE, "An enterprise's firmware images, newest first")
            .query::<firmware::ListQuery>()
            .answers::<ListPage<fleetpulse_store::FirmwareImage>>(200),
        post_(
            "/api/v1/firmware",
            FIRMWARE,
            "Upload a firmware image as the body (streamed, size-limited, SHA-256 computed)",
        )
        .query::<firmware::UploadQuery>()
        .answers::<fleetpulse_store::FirmwareImage>(201)
        .may_fail(&[413, 429]),
        get_("/api/v1/firmware/{id}", FIRMWARE, "One firmware image").answers::<fleetpulse_store::FirmwareImage>(200),
        delete_("/api/v1/firmware/{id}", FIRMWARE, "Delete a firmware image no pending upgrade uses")
            .answers_raw(204, "")
            .may_fail(&[409]),
        post_(
            "/api/v1/devices/{id}/firmware-upgrade",
            FIRMWARE,
            "Upgrade a device's firmware to an image of its model",
        )
        .body::<firmware::UpgradeRequest>()
        .answers::<commands::CommandBody>(201)
        .may_fail(&[409, 429]),
        // Operation log.
        get_("/api/v1/operation-logs", LOG, "Operation log rows, newest first")
            .query::<oplog::ListQuery>()
            .answers::<ListPage<OperationLog>>(200),
        get_("/api/v1/operation-logs/export", LOG, "The operation log as CSV")
            .query::<oplog::ListQuery>()
            .answers_raw(200, "text/csv"),
    ]
    .into_iter()
    .chain(profiles::operations())
    .chain(crate::routes::groups::operations())
    .chain(crate::routes::orders::operations())
    .chain(crate::routes::windows::operations())
    .chain(crate::routes::alarm_notifications::operations())
    .chain(crate::routes::incidents::operations())
    .chain(crate::routes::tenant_admin::operations())
    .chain(crate::routes::strategy_receivers::operations())
    .chain(crate::routes::rps::operations())
    .chain(crate::routes::dead_letters::operations())
    .chain(crate::routes::relays::operations())
    .collect()
}
