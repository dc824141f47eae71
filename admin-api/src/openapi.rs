//! The OpenAPI 3.0 document of the API, served at `GET /api/v1/openapi.json`.
//!
//! It is generated from the code: every operation below names the Rust types its handler takes
//! (query string, JSON body) and answers, and their JSON schemas are derived from those types
//! (`schemars`), so they cannot drift from what the handlers parse and serialize. Path
//! parameters come from the route templates. A test walks the router ([`crate::routes::all`])
//! and fails when a served method of a route has no operation here, or an operation names a
//! route or method that is not served.

use std::sync::LazyLock;

use axum::http::{HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use fleetpulse_store::{AlarmRecord, Channel, Enterprise, OperationLog, StoredStrategy};
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::auth::{ActingSession, LoginRequest, LoginResponse, PasswordChange, TotpDisable, TotpEnable, TotpSetup};
use crate::routes::{
    ListPage, SearchQuery, account, alarms, device_labels, devices, enterprises, oplog, strategies, tenants,
};

/// Routes of this module: (path, handlers by method).
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![("/api/v1/openapi.json", get(serve))]
}

/// The document, generated once per process.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| document().to_string());

/// `GET /api/v1/openapi.json` (no login needed): the OpenAPI 3.0 document of every route.
async fn serve() -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], DOCUMENT.as_str()).into_response()
}

/// A schema of `T` from the generator (a `$ref` into the components for named types).
type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

fn schema<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

/// The properties of a query-string struct, inlined: they become query parameters.
fn inline<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    let mut settings = g.settings().clone();
    settings.inline_subschemas = true;
    settings.into_generator().into_root_schema_for::<T>()
}

/// One operation: a method of a route, what it takes and what it answers.
pub(crate) struct Operation {
    pub(crate) method: Method,
    pub(crate) path: &'static str,
    tag: &'static str,
    summary: &'static str,
    /// Needs a session (bearer token or session cookie).
    authenticated: bool,
    query: Option<SchemaFn>,
    body: Option<SchemaFn>,
    /// Success status and body (`None`: no JSON body, e.g. 204, CSV, files).
    ok: (u16, Option<SchemaFn>, &'static str),
}

impl Operation {
    fn new(method: Method, path: &'static str, tag: &'static str, summary: &'static str) -> Operation {
        Operation {
            method,
            path,
            tag,
            summary,
            authenticated: true,
            query: None,
            body: None,
            ok: (200, None, "application/json"),
        }
    }

    fn public(mut self) -> Operation {
        self.authenticated = false;
        self
    }

    fn query<T: JsonSchema>(mut self) -> Operation {
        self.query = Some(inline::<T>);
        self
    }

    fn body<T: JsonSchema>(mut self) -> Operation {
        self.body = Some(schema::<T>);
        self
    }

    fn answers<T: JsonSchema>(mut self, status: u16) -> Operation {
        self.ok = (status, Some(schema::<T>), "application/json");
        self
    }

    fn answers_raw(mut self, status: u16, content_type: &'static str) -> Operation {
        self.ok = (status, None, content_type);
        self
    }
}

fn get_(path: &'static str, tag: &'static str, summary: &'static str) -> Operation {
    Operation::new(Method::GET, path, tag, summary)
}
fn post_(path: &'static str, tag: &'static str, summary: &'static str) -> Operation {
    Operation::new(Method::POST, path, tag, summary)
}
fn put_(path: &'static str, tag: &'static str, summary: &'static str) -> Operation {
    Operation::new(Method::PUT, path, tag, summary)
}
fn delete_(path: &'static str, tag: &'static str, summary: &'static str) -> Operation {
    Operation::new(Method::DELETE, path, tag, summary)
}

/// Every operation of the API.
pub(crate) fn operations() -> Vec<Operation> {
    const OPS: &str = "operations";
    const AUTH: &str = "accounts and sessions";
    const TENANTS: &str = "tenants";
    const DEVICES: &str = "devices";
    const ALARMS: &str = "alarms";
    const LOG: &str = "operation log";
    vec![
        get_("/healthz", OPS, "Liveness: 200 while the process answers").public().answers::<Value>(200),
        get_("/readyz", OPS, "Readiness: 200 once serving, 503 while starting or stopping")
            .public()
            .answers::<Value>(200),
        get_("/metrics", OPS, "Prometheus metrics (OpenMetrics text)")
            .public()
            .answers_raw(200, "application/openmetrics-text"),
        get_("/api/v1/openapi.json", OPS, "This document").public().answers::<Value>(200),
        // Accounts and sessions.
        post_("/api/v1/auth/login", AUTH, "Log in with email and password (and a TOTP code when enrolled)")
            .public()
            .body::<LoginRequest>()
            .answers::<LoginResponse>(200),
        post_("/api/v1/auth/logout", AUTH, "End the caller's session").answers_raw(204, ""),
        post_("/api/v1/auth/login/verify", AUTH, "Finish a login protected by an emailed code: a new session")
            .public()
            .body::<crate::login_code::VerifyRequest>()
            .answers::<LoginResponse>(200),
        post_("/api/v1/auth/forgot-password", AUTH, "Email a single-use reset link (202 for any address)")
            .public()
            .body::<account::ForgotPassword>()
            .answers_raw(202, ""),
        post_("/api/v1/auth/reset-password", AUTH, "Set a new password with a reset link's token")
            .public()
            .body::<account::ResetPassword>()
            .answers_raw(204, ""),
        get_("/api/v1/account", AUTH, "The caller's settings").answers::<account::SettingsBody>(200),
        put_("/api/v1/account", AUTH, "Change the caller's settings (given fields change)")
            .body::<account::SettingsUpdate>()
            .answers::<account::SettingsBody>(200),
        post_("/api/v1/accounts/{id}/reset-password", TENANTS, "Email an account a reset link (admins)")
            .answers_raw(202, ""),
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
            .answers::<Channel>(201),
        get_("/api/v1/channels/{id}", TENANTS, "One channel").answers::<Channel>(200),
        put_("/api/v1/channels/{id}", TENANTS, "Edit a channel (given fields change)")
            .body::<tenants::EditChannel>()
            .answers::<Channel>(200),
        post_("/api/v1/channels/{id}/act", TENANTS, "Act inside a sub-channel: a new session scoped to it")
            .answers::<ActingSession>(200),
        get_("/api/v1/enterprises", TENANTS, "Enterprises the caller sees, searchable")
            .query::<SearchQuery>()
            .answers::<ListPage<Enterprise>>(200),
        post_("/api/v1/enterprises", TENANTS, "Create an enterprise with its profile and a fresh credential")
            .body::<enterprises::CreateEnterprise>()
            .answers::<Enterprise>(201),
        get_("/api/v1/enterprises/{id}", TENANTS, "One enterprise").answers::<Enterprise>(200),
        put_("/api/v1/enterprises/{id}", TENANTS, "Edit an enterprise (given fields change)")
            .body::<enterprises::EditEnterprise>()
            .answers::<Enterprise>(200),
        post_("/api/v1/enterprises/{id}/authorization", TENANTS, "The channel asks the enterprise for authorization")
            .answers::<Enterprise>(200),
        post_("/api/v1/enterprises/{id}/authorization/accept", TENANTS, "The enterprise accepts its channel")
            .answers::<Enterprise>(200),
        post_("/api/v1/enterprises/{id}/authorization/reject", TENANTS, "The enterprise rejects its channel")
            .answers::<Enterprise>(200),
        post_("/api/v1/enterprises/{id}/authorization/revoke", TENANTS, "The enterprise revokes the authorization")
            .answers::<Enterprise>(200),
        post_("/api/v1/enterprises/{id}/act", TENANTS, "Act inside an authorizing enterprise: a new session")
            .answers::<ActingSession>(200),
        get_("/api/v1/enterprises/{id}/stored-sequences", TENANTS, "Stored sequence numbers per device (load test)")
            .query::<enterprises::PageQuery>()
            .answers::<enterprises::StoredSequencesPage>(200),
        get_("/api/v1/accounts", TENANTS, "Accounts the caller sees, searchable by email or contact name")
            .query::<SearchQuery>()
            .answers::<ListPage<tenants::AccountBody>>(200),
        post_("/api/v1/accounts", TENANTS, "Create an account of a tenant the caller sees")
            .body::<tenants::CreateAccount>()
            .answers::<tenants::AccountBody>(201),
        get_("/api/v1/accounts/{id}", TENANTS, "One account").answers::<tenants::AccountBody>(200),
        post_("/api/v1/accounts/{id}/freeze", TENANTS, "Freeze an account: no login, sessions end")
            .answers::<tenants::AccountBody>(200),
        post_("/api/v1/accounts/{id}/unfreeze", TENANTS, "Unfreeze an account").answers::<tenants::AccountBody>(200),
        get_("/api/v1/sub-accounts", TENANTS, "The caller's sub-accounts")
            .query::<tenants::PageOnly>()
            .answers::<ListPage<tenants::AccountBody>>(200),
        post_("/api/v1/sub-accounts", TENANTS, "Create a sub-account with feature and data permissions")
            .body::<tenants::CreateSubAccount>()
            .answers::<tenants::AccountBody>(201),
        put_("/api/v1/sub-accounts/{id}/permissions", TENANTS, "Replace a sub-account's permissions")
            .body::<tenants::PermissionsBody>()
            .answers::<tenants::AccountBody>(200),
        // Devices.
        get_("/api/v1/devices", DEVICES, "Devices the caller sees: filters, search, sort, keyset pages, total")
            .query::<devices::DeviceParams>()
            .answers::<devices::DeviceListPage>(200),
        get_("/api/v1/devices/{id}", DEVICES, "One device in the PDMS-E status model")
            .answers::<devices::DeviceDetail>(200),
        get_("/api/v1/devices/{id}/resources", DEVICES, "A device's CPU and memory history, newest first")
            .query::<devices::HistoryQuery>()
            .answers::<devices::History>(200),
        get_("/api/v1/dashboard", DEVICES, "Device counts: online/total, by type, by model (the list's filters)")
            .query::<devices::DeviceParams>()
            .answers::<fleetpulse_store::DeviceDashboard>(200),
        get_("/api/v1/device-labels", DEVICES, "The caller's saved device searches")
            .answers::<device_labels::Labels>(200),
        post_("/api/v1/device-labels", DEVICES, "Save a device search under a name")
            .body::<device_labels::LabelRequest>()
            .answers::<fleetpulse_store::DeviceLabel>(201),
        delete_("/api/v1/device-labels/{id}", DEVICES, "Delete a saved device search").answers_raw(204, ""),
        get_("/api/v1/account/device-columns", DEVICES, "The caller's chosen device-list columns")
            .answers::<device_labels::Columns>(200),
        put_("/api/v1/account/device-columns", DEVICES, "Choose the device-list columns")
            .body::<device_labels::Columns>()
            .answers::<device_labels::Columns>(200),
        // Alarms.
        get_("/api/v1/alarms", ALARMS, "Alarm records, filtered")
            .query::<alarms::ListQuery>()
            .answers::<ListPage<AlarmRecord>>(200),
        get_("/api/v1/alarms/latest", ALARMS, "The latest alarms (the bell)")
            .query::<alarms::LatestQuery>()
            .answers::<alarms::LatestFeed>(200),
        get_("/api/v1/alarms/{id}", ALARMS, "One alarm record").answers::<AlarmRecord>(200),
        post_("/api/v1/alarms/{id}/acknowledge", ALARMS, "Acknowledge an active alarm").answers::<AlarmRecord>(200),
        post_("/api/v1/alarms/{id}/clear", ALARMS, "Clear an alarm by hand").answers::<AlarmRecord>(200),
        get_("/api/v1/alarms/{id}/log", ALARMS, "The alarm log file the device attached")
            .answers_raw(200, "application/octet-stream"),
        get_("/api/v1/enterprises/{id}/alarm-strategies", ALARMS, "The enterprise's alarm strategies")
            .answers::<strategies::StrategyList>(200),
        post_("/api/v1/enterprises/{id}/alarm-strategies", ALARMS, "Create an alarm strategy")
            .body::<strategies::StrategyRequest>()
            .answers::<StoredStrategy>(201),
        get_("/api/v1/alarm-strategies/{id}", ALARMS, "One alarm strategy").answers::<StoredStrategy>(200),
        put_("/api/v1/alarm-strategies/{id}", ALARMS, "Replace an alarm strategy's settings")
            .body::<strategies::StrategyRequest>()
            .answers::<StoredStrategy>(200),
        delete_("/api/v1/alarm-strategies/{id}", ALARMS, "Delete an alarm strategy").answers_raw(204, ""),
        post_("/api/v1/alarm-strategies/{id}/enable", ALARMS, "Enable a strategy").answers::<StoredStrategy>(200),
        post_("/api/v1/alarm-strategies/{id}/disable", ALARMS, "Disable a strategy").answers::<StoredStrategy>(200),
        // Operation log.
        get_("/api/v1/operation-logs", LOG, "Operation log rows, newest first")
            .query::<oplog::ListQuery>()
            .answers::<ListPage<OperationLog>>(200),
        get_("/api/v1/operation-logs/export", LOG, "The operation log as CSV")
            .query::<oplog::ListQuery>()
            .answers_raw(200, "text/csv"),
    ]
}

/// The error body every failure has.
fn error_schema() -> Value {
    json!({
        "type": "object",
        "required": ["error"],
        "properties": {"error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "stable snake_case code, e.g. not_found"},
                "message": {"type": "string", "description": "for humans; may change"}
            }
        }}
    })
}

/// The names of a route template's path parameters (`{id}`), in order.
pub(crate) fn path_params(path: &str) -> Vec<&str> {
    path.split('/').filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}'))).collect()
}

/// The whole document.
pub(crate) fn document() -> Value {
    let mut g = SchemaSettings::openapi3().into_generator();
    let mut paths = Map::new();
    for op in operations() {
        let mut parameters: Vec<Value> = path_params(op.path)
            .into_iter()
            .map(|name| {
                json!({"name": name, "in": "path", "required": true,
                       "schema": {"type": "integer", "format": "int64", "minimum": 0}})
            })
            .collect();
        if let Some(query) = op.query {
            let schema = query(&mut g).to_value();
            let required: Vec<&str> =
                schema["required"].as_array().map(|r| r.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
            if let Some(properties) = schema["properties"].as_object() {
                for (name, property) in properties {
                    parameters.push(json!({
                        "name": name, "in": "query", "required": required.contains(&name.as_str()),
                        "schema": property,
                    }));
                }
            }
        }
        let mut operation = Map::new();
        operation.insert("tags".into(), json!([op.tag]));
        operation.insert("summary".into(), json!(op.summary));
        operation.insert("operationId".into(), json!(operation_id(&op.method, op.path)));
        if !parameters.is_empty() {
            operation.insert("parameters".into(), Value::Array(parameters));
        }
        if let Some(body) = op.body {
            operation.insert(
                "requestBody".into(),
                json!({"required": true, "content": {"application/json": {"schema": body(&mut g).to_value()}}}),
            );
        }
        let (status, ok, content_type) = op.ok;
        let success = match (ok, content_type) {
            (Some(schema), _) => json!({"description": "success",
                "content": {"application/json": {"schema": schema(&mut g).to_value()}}}),
            (None, "") => json!({"description": "success, no body"}),
            (None, content_type) => json!({"description": "success",
                "content": {content_type: {"schema": {"type": "string"}}}}),
        };
        let mut responses = Map::new();
        responses.insert(status.to_string(), success);
        let error = json!({"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
        responses.insert("default".into(), error);
        operation.insert("responses".into(), Value::Object(responses));
        if op.authenticated {
            operation.insert("security".into(), json!([{"bearer": []}, {"session_cookie": []}]));
        } else {
            operation.insert("security".into(), json!([]));
        }
        let entry = paths.entry(op.path.to_owned()).or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(methods) = entry {
            methods.insert(op.method.as_str().to_lowercase(), Value::Object(operation));
        }
    }
    let mut schemas: Map<String, Value> =
        g.take_definitions(true).into_iter().collect::<serde_json::Map<String, Value>>();
    schemas.insert("Error".into(), error_schema());
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "fleetpulse management API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Accounts, tenants, devices, alarms and the operation log. Objects outside \
                the caller's tenant scope answer 404; features the caller lacks answer 403."
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session_cookie": {"type": "apiKey", "in": "cookie", "name": "fp_session"}
            }
        }
    })
}

/// `get_api_v1_enterprises_id`-style ids, unique per method and path.
fn operation_id(method: &Method, path: &str) -> String {
    let path: String = path.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    let mut id = format!("{}_{}", method.as_str().to_lowercase(), path.trim_matches('_'));
    while id.contains("__") {
        id = id.replace("__", "_");
    }
    id
}
