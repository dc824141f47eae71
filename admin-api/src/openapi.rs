//! The OpenAPI 3.0 document's assembly: [`Operation`], one method of a route with the Rust
//! types its handler takes (query string, JSON body) and answers, and [`document`], which
//! derives their JSON schemas (`schemars`) so that they cannot drift from what the handlers
//! parse and serialize, then rewrites them into 3.0 form (`openapi3.rs`). Path parameters come
//! from the route templates; every operation lists the error answers it can give (shared
//! `components/responses`, one error shape) and its security (bearer, or the session cookie
//! with the `X-CSRF-Token` header on state-changing methods).
//!
//! The operations themselves are listed beside the route table (`routes/docs.rs`, which also
//! serves the document); a test walks the router and fails when a served method of a route has
//! no operation, or an operation names a route or method that is not served. This module knows
//! no route.

use axum::http::Method;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{Map, Value, json};

/// An example body.
type ExampleFn = fn() -> Value;

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
    /// Error statuses beyond those the shape implies (400 with input, 401/403 with a session,
    /// 404 with a path id): 409, 429, a login's 401.
    extra_errors: &'static [u16],
    /// Examples of the request body and of the success body.
    examples: (Option<ExampleFn>, Option<ExampleFn>),
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
            extra_errors: &[],
            examples: (None, None),
        }
    }

    /// It may also answer these error statuses (409, 429, ...).
    pub(crate) fn may_fail(mut self, statuses: &'static [u16]) -> Operation {
        self.extra_errors = statuses;
        self
    }

    /// An example of the request body.
    pub(crate) fn example_request(mut self, example: ExampleFn) -> Operation {
        self.examples.0 = Some(example);
        self
    }

    /// An example of the success body.
    pub(crate) fn example_answer(mut self, example: ExampleFn) -> Operation {
        self.examples.1 = Some(example);
        self
    }

    /// The error statuses of this operation, ascending.
    fn error_statuses(&self) -> Vec<u16> {
        let mut statuses: Vec<u16> = self.extra_errors.to_vec();
        if self.query.is_some() || self.body.is_some() || !path_params(self.path).is_empty() {
            statuses.push(400);
        }
        if self.authenticated {
            statuses.extend([401, 403]);
        }
        if !path_params(self.path).is_empty() {
            statuses.push(404);
        }
        statuses.sort_unstable();
        statuses.dedup();
        statuses
    }

    pub(crate) fn public(mut self) -> Operation {
        self.authenticated = false;
        self
    }

    pub(crate) fn query<T: JsonSchema>(mut self) -> Operation {
        self.query = Some(inline::<T>);
        self
    }

    pub(crate) fn body<T: JsonSchema>(mut self) -> Operation {
        self.body = Some(schema::<T>);
        self
    }

    pub(crate) fn answers<T: JsonSchema>(mut self, status: u16) -> Operation {
        self.ok = (status, Some(schema::<T>), "application/json");
        self
    }

    pub(crate) fn answers_raw(mut self, status: u16, content_type: &'static str) -> Operation {
        self.ok = (status, None, content_type);
        self
    }
}

pub(crate) fn get_(path: &'static str, tag: &'static str, summary: &'static str) -> Operation {
    Operation::new(Method::GET, path, tag, summary)
}
pub(crate) fn post_(path: &'static str, tag: &'static str, summary: &'static str) -> Operation {
    Operation::new(Method::POST, path, tag, summary)
}
pub(crate) fn put_(path: &'static str, tag: &'static str, summary: &'static str) -> Operation {
    Operation::new(Method::PUT, path, tag, summary)
}
pub(crate) fn patch_(path: &'static str, tag: &'static str, summary: &'static str) -> Operation {
    Operation::new(Method::PATCH, path, tag, summary)
}
pub(crate) fn delete_(path: &'static str, tag: &'static str, summary: &'static str) -> Operation {
    Operation::new(Method::DELETE, path, tag, summary)
}

/// The error body every failure has.
fn error_schema() -> Value {
    json!({
        "type": "object",
        "description": "Every failure answers this shape. `error.code` is stable (part of the API); \
            `error.message` is for humans and may change.",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "description": "stable snake_case code, e.g. not_found", "example": "not_found"},
                    "message": {"type": "string", "description": "for humans; may change", "example": "device not found"}
                }
            },
            "challenge": {
                "type": "string",
                "description": "Only with `mfa_required` when a login code was emailed: send it with the \
                    code to `POST /api/v1/auth/login/verify`."
            }
        }
    })
}

/// The shared error answers: (status, component name, description, example code).
const ERRORS: [(u16, &str, &str, &str); 7] = [
    (400, "BadRequest", "The path, query or body is malformed or fails validation", "invalid_request"),
    (
        401,
        "Unauthorized",
        "No valid session (codes `unauthorized`, `mfa_required`, `invalid_code`, \
        `invalid_challenge`)",
        "unauthorized",
    ),
    (
        403,
        "Forbidden",
        "The caller may not do this (codes `forbidden`, `csrf_failed`, `acting_required`, \
        `authorization_required`, `password_change_required`); objects of other tenants answer 404",
        "forbidden",
    ),
    (404, "NotFound", "No such object in the caller's scope (other tenants' objects included)", "not_found"),
    (409, "Conflict", "The request collides with the object's state or existing data", "conflict"),
    (
        429,
        "LimitExceeded",
        "A count limit is reached (`limit_exceeded`, e.g. pending commands of a device: retry once \
        it has fewer) or a rate limit (`rate_limited`, logins and reset requests: retry after the \
        `Retry-After` seconds)",
        "limit_exceeded",
    ),
    (503, "NotReady", "The process is starting or stopping", "not_ready"),
];

/// `components/responses`: one error answer per status, all of the error shape.
fn error_responses() -> Map<String, Value> {
    ERRORS
        .iter()
        .map(|(status, name, description, code)| {
            let example = json!({"error": {"code": code, "message": format!("example: {description}")}});
            let response = json!({
                "description": format!("{status}: {description}"),
                "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/Error"},
                    "example": example,
                }}
            });
            ((*name).to_owned(), response)
        })
        .collect()
}

fn error_ref(status: u16) -> Option<Value> {
    ERRORS
        .iter()
        .find(|(s, ..)| *s == status)
        .map(|(_, name, ..)| json!({"$ref": format!("#/components/responses/{name}")}))
}

/// The names of a route template's path parameters (`{id}`), in order.
pub(crate) fn path_params(path: &str) -> Vec<&str> {
    path.split('/').filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}'))).collect()
}

/// The whole document, of these operations.
pub(crate) fn document(operations: Vec<Operation>) -> Value {
    let mut g = SchemaSettings::openapi3().into_generator();
    let mut paths = Map::new();
    for op in operations {
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
            let mut media = json!({"schema": body(&mut g).to_value()});
            if let Some(example) = op.examples.0 {
                media["example"] = example();
            }
            operation.insert("requestBody".into(), json!({"required": true, "content": {"application/json": media}}));
        }
        let errors = op.error_statuses();
        let (status, ok, content_type) = op.ok;
        let success = match (ok, content_type) {
            (Some(schema), _) => {
                let mut media = json!({"schema": schema(&mut g).to_value()});
                if let Some(example) = op.examples.1 {
                    media["example"] = example();
                }
                json!({"description": "success", "content": {"application/json": media}})
            }
            (None, "") => json!({"description": "success, no body"}),
            (None, content_type) => json!({"description": "success",
                "content": {content_type: {"schema": {"type": "string"}}}}),
        };
        let mut responses = Map::new();
        responses.insert(status.to_string(), success);
        for error in errors {
            if let Some(reference) = error_ref(error) {
                responses.insert(error.to_string(), reference);
            }
        }
        let error = json!({"description": "any other error (405, 413, 415, 500, 503), of the same shape",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
        responses.insert("default".into(), error);
        operation.insert("responses".into(), Value::Object(responses));
        if op.authenticated && op.method == Method::GET {
            operation.insert("security".into(), json!([{"bearer": []}, {"session_cookie": []}]));
        } else if op.authenticated {
            // A cookie session changes state only with its CSRF token in the header.
            operation.insert("security".into(), json!([{"bearer": []}, {"session_cookie": [], "csrf_token": []}]));
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
    let mut doc = json!({
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
            "responses": error_responses(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                    "description": "The `token` of `POST /api/v1/auth/login` in `Authorization: Bearer <token>`. \
                        Sessions end on logout, after the idle timeout, and when the password changes."},
                "session_cookie": {"type": "apiKey", "in": "cookie", "name": "fp_session",
                    "description": "The browser session: `POST /api/v1/auth/login` with `\"cookie\": true` sets it \
                        (HttpOnly, SameSite=Strict) and answers the session's CSRF token."},
                "csrf_token": {"type": "apiKey", "in": "header", "name": "X-CSRF-Token",
                    "description": "With the session cookie, every POST, PUT and DELETE carries the session's CSRF \
                        token (from login or `GET /api/v1/auth/session`); without it: 403 `csrf_failed`."}
            }
        }
    });
    crate::openapi3::document_to_3_0(&mut doc);
    doc
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
