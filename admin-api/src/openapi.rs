//! The OpenAPI 3.0 document's assembly: [`Operation`], one method of a route with the Rust
//! types its handler takes (query string, JSON body) and answers, and [`document`], which
//! derives their JSON schemas (`schemars`) so that they cannot drift from what the handlers
//! parse and serialize. Path parameters come from the route templates.
//!
//! The operations themselves are listed beside the route table (`routes/docs.rs`, which also
//! serves the document); a test walks the router and fails when a served method of a route has
//! no operation, or an operation names a route or method that is not served. This module knows
//! no route.

use axum::http::Method;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{Map, Value, json};

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
