//! Rewrites the JSON Schemas that `schemars` 1.x emits (JSON Schema 2020-12 with its `openapi3`
//! transforms applied) into what the OpenAPI 3.0 Schema Object allows, so that the served
//! document passes `openapi-spec-validator` and client generators read it.
//!
//! Sans-I/O: one pass over a `serde_json::Value`, schema positions only. The rewrites:
//!
//! | 2020-12 / schemars output                     | OpenAPI 3.0                                   |
//! |-----------------------------------------------|-----------------------------------------------|
//! | boolean schema `true` / `false`               | `{}` / `{"not": {}}`                          |
//! | tuple `items: [A, B]` (+ `minItems = maxItems`)| `items: A` when all equal, else `items: {anyOf: [A, B]}`; the order is stated in the description |
//! | `anyOf: [X, {enum: [null], nullable}]`        | `allOf: [X]` + `nullable: true` (siblings kept)|
//! | `{enum: [null], nullable}` alone (always null) | `{type: object, nullable: true}`              |
//! | an optional query parameter's `nullable` / null enum value | dropped (absent, never null) |
//! | `oneOf` of one-value string enums (documented unit variants) | one `enum`, the variants' docs as a list in the description |
//!
//! `additionalProperties: true|false` stays: 3.0 allows a boolean there.
//!
//! Before that, an externally tagged struct variant of an enum (`oneOf: [.., {properties:
//! {only: {properties: ..}}}]`) has its inline struct moved to `components/schemas` as
//! `<Enum><Variant>` (`DataPermissionOnly`): `openapi-python-client` otherwise generates its
//! model twice and drops the schema.

use serde_json::{Map, Value, json};

/// Keywords whose value is one schema.
const ONE_SCHEMA: [&str; 3] = ["items", "not", "additionalProperties"];
/// Keywords whose value is a list of schemas.
const SCHEMA_LISTS: [&str; 3] = ["allOf", "anyOf", "oneOf"];
/// Keywords whose value maps names to schemas.
const SCHEMA_MAPS: [&str; 1] = ["properties"];

/// Rewrites a schema (and every subschema) in place into OpenAPI 3.0 form.
pub(crate) fn schema_to_3_0(schema: &mut Value) {
    if let Value::Bool(b) = schema {
        *schema = if *b { json!({}) } else { json!({"not": {}}) };
        return;
    }
    let Value::Object(map) = schema else { return };
    // Before the branches are rewritten: the null branch must still look like one.
    nullable_any_of(map);
    unit_variants(map);
    for key in ONE_SCHEMA {
        match map.get_mut(key) {
            // `additionalProperties: bool` is valid 3.0.
            Some(Value::Bool(_)) if key == "additionalProperties" => {}
            Some(Value::Array(_)) if key == "items" => tuple_items(map),
            Some(sub) => schema_to_3_0(sub),
            None => {}
        }
    }
    for key in SCHEMA_LISTS {
        if let Some(Value::Array(subs)) = map.get_mut(key) {
            subs.iter_mut().for_each(schema_to_3_0);
        }
    }
    for key in SCHEMA_MAPS {
        if let Some(Value::Object(subs)) = map.get_mut(key) {
            subs.values_mut().for_each(schema_to_3_0);
        }
    }
    always_null(map);
}

/// Every schema position of a whole OpenAPI document: component schemas, parameters, request
/// and response bodies.
pub(crate) fn document_to_3_0(doc: &mut Value) {
    if let Some(Value::Object(schemas)) = doc.pointer_mut("/components/schemas") {
        hoist_struct_variants(schemas);
        schemas.values_mut().for_each(schema_to_3_0);
    }
    let Some(Value::Object(paths)) = doc.get_mut("paths") else { return };
    for methods in paths.values_mut().filter_map(Value::as_object_mut) {
        for operation in methods.values_mut() {
            if let Some(Value::Array(parameters)) = operation.get_mut("parameters") {
                for parameter in parameters {
                    let optional = parameter["in"] == "query" && parameter["required"] != true;
                    if let Some(schema) = parameter.get_mut("schema") {
                        schema_to_3_0(schema);
                        if optional {
                            optional_query_schema(schema);
                        }
                    }
                }
            }
            if let Some(Value::Object(content)) = operation.pointer_mut("/requestBody/content") {
                content.values_mut().filter_map(|m| m.get_mut("schema")).for_each(schema_to_3_0);
            }
            if let Some(Value::Object(responses)) = operation.get_mut("responses") {
                for response in responses.values_mut() {
                    if let Some(Value::Object(content)) = response.get_mut("content") {
                        content.values_mut().filter_map(|m| m.get_mut("schema")).for_each(schema_to_3_0);
                    }
                }
            }
        }
    }
}

/// An optional query parameter is absent, never null: no `nullable`, no null in `enum`, and an
/// inline `allOf` of one schema (what `nullable_any_of` left) merged into the schema.
pub(crate) fn optional_query_schema(schema: &mut Value) {
    let Value::Object(map) = schema else { return };
    map.remove("nullable");
    let single_inline = match map.get("allOf") {
        Some(Value::Array(all)) if all.len() == 1 && all[0].get("$ref").is_none() => all[0].as_object().cloned(),
        _ => None,
    };
    if let Some(inner) = single_inline {
        map.remove("allOf");
        for (key, value) in inner {
            map.entry(key).or_insert(value);
        }
    }
    if let Some(Value::Array(values)) = map.get_mut("enum") {
        values.retain(|v| !v.is_null());
    }
}

/// Moves the inline struct of every externally tagged struct variant of a component's `oneOf`
/// into the components, as `<Component><Variant>`, leaving a `$ref`.
pub(crate) fn hoist_struct_variants(schemas: &mut Map<String, Value>) {
    let mut hoisted = Vec::new();
    for (name, schema) in schemas.iter_mut() {
        let Some(Value::Array(variants)) = schema.get_mut("oneOf") else { continue };
        for variant in variants {
            let Some(Value::Object(properties)) = variant.get_mut("properties") else { continue };
            if properties.len() != 1 {
                continue;
            }
            for (tag, inner) in properties.iter_mut() {
                if inner.get("properties").is_none() {
                    continue;
                }
                let hoisted_name = format!("{name}{}", camel(tag));
                let reference = json!({"$ref": format!("#/components/schemas/{hoisted_name}")});
                hoisted.push((hoisted_name, std::mem::replace(inner, reference)));
            }
        }
    }
    for (name, schema) in hoisted {
        schemas.entry(name).or_insert(schema);
    }
}

/// `only_these` → `OnlyThese`.
fn camel(snake: &str) -> String {
    snake
        .split(['_', '-'])
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .collect()
}

/// `items: [A, B, ...]` (a tuple): one schema for every element, the positions in the
/// description. `minItems`/`maxItems` (already set by schemars) keep the length.
fn tuple_items(map: &mut Map<String, Value>) {
    let Some(Value::Array(mut items)) = map.remove("items") else { return };
    items.iter_mut().for_each(schema_to_3_0);
    let first = items.first().cloned().unwrap_or_else(|| json!({}));
    let one = if items.iter().all(|i| *i == first) { first } else { json!({ "anyOf": items.clone() }) };
    map.insert("items".into(), one);
    if items.len() > 1 {
        let names: Vec<String> = items.iter().map(schema_name).collect();
        let note = format!("A tuple of {} elements, in this order: {}.", items.len(), names.join(", "));
        let description = match map.get("description").and_then(Value::as_str) {
            Some(d) => format!("{d}\n\n{note}"),
            None => note,
        };
        map.insert("description".into(), Value::String(description));
    }
}

/// A short name of a schema for descriptions: the `$ref` target or the type.
fn schema_name(schema: &Value) -> String {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        return r.rsplit('/').next().unwrap_or(r).to_owned();
    }
    let ty = schema.get("type").and_then(Value::as_str).unwrap_or("any");
    match schema.get("format").and_then(Value::as_str) {
        Some(format) => format!("{ty} ({format})"),
        None => ty.to_owned(),
    }
}

/// `oneOf: [{type: string, enum: [a], description: A}, ...]` (what schemars makes of an enum
/// whose unit variants have doc comments) → `type: string, enum: [a, ...]`: generators make one
/// enum of it instead of one class per value.
fn unit_variants(map: &mut Map<String, Value>) {
    let Some(Value::Array(variants)) = map.get("oneOf") else { return };
    let value_of = |v: &Value| -> Option<(Value, Option<String>)> {
        let single = v.get("enum")?.as_array().filter(|e| e.len() == 1)?;
        (v.get("type")? == "string").then_some(())?;
        Some((single[0].clone(), v.get("description").and_then(Value::as_str).map(str::to_owned)))
    };
    let Some(values): Option<Vec<_>> = variants.iter().map(value_of).collect() else { return };
    let notes: Vec<String> = values
        .iter()
        .filter_map(|(value, doc)| doc.as_ref().map(|d| format!("- `{}`: {}", value.as_str().unwrap_or(""), d)))
        .collect();
    map.remove("oneOf");
    map.insert("type".into(), json!("string"));
    map.insert("enum".into(), Value::Array(values.into_iter().map(|(v, _)| v).collect()));
    if !notes.is_empty() {
        let description = match map.get("description").and_then(Value::as_str) {
            Some(d) => format!("{d}\n\n{}", notes.join("\n")),
            None => notes.join("\n"),
        };
        map.insert("description".into(), Value::String(description));
    }
}

/// Is this the null branch schemars leaves in an `anyOf` (`{enum: [null]}`, `{type: null}`)?
fn is_null_branch(schema: &Value) -> bool {
    schema.get("type").and_then(Value::as_str) == Some("null")
        || schema.get("enum").and_then(Value::as_array).is_some_and(|e| e.len() == 1 && e[0].is_null())
}

/// `anyOf: [X, null]` → `allOf: [X]`, `nullable: true`; with several non-null branches the
/// `anyOf` stays without its null branch.
fn nullable_any_of(map: &mut Map<String, Value>) {
    let Some(Value::Array(branches)) = map.get("anyOf") else { return };
    if !branches.iter().any(is_null_branch) {
        return;
    }
    let rest: Vec<Value> = branches.iter().filter(|b| !is_null_branch(b)).cloned().collect();
    map.remove("anyOf");
    map.insert("nullable".into(), Value::Bool(true));
    match rest.len() {
        0 => {}
        1 => {
            map.insert("allOf".into(), Value::Array(rest));
        }
        _ => {
            map.insert("anyOf".into(), Value::Array(rest));
        }
    }
}

/// A schema that only allows null (a field reserved for later): an object that is null today.
fn always_null(map: &mut Map<String, Value>) {
    let only_null = map.get("enum").and_then(Value::as_array).is_some_and(|e| e.len() == 1 && e[0].is_null());
    if only_null && !map.contains_key("type") {
        map.remove("enum");
        map.insert("type".into(), json!("object"));
        map.insert("nullable".into(), Value::Bool(true));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::schema_to_3_0;

    fn check(mut input: Value, expect: Value) {
        schema_to_3_0(&mut input);
        assert_eq!(input, expect);
    }

    #[test]
    fn struct_variants_move_to_components() {
        let mut schemas = json!({"DataPermission": {"oneOf": [
            {"type": "string", "enum": ["all"]},
            {"type": "object", "required": ["only"], "properties": {"only_these": {"type": "object", "properties": {"a": {}}}}}
        ]}});
        super::hoist_struct_variants(schemas.as_object_mut().expect("object"));
        assert_eq!(
            schemas["DataPermission"]["oneOf"][1]["properties"]["only_these"],
            json!({"$ref": "#/components/schemas/DataPermissionOnlyThese"})
        );
        assert_eq!(schemas["DataPermissionOnlyThese"], json!({"type": "object", "properties": {"a": {}}}));
    }

    #[test]
    fn documented_unit_variants_become_one_enum() {
        check(
            json!({"description": "Role.", "oneOf": [
                {"type": "string", "enum": ["admin"], "description": "All."},
                {"type": "string", "enum": ["viewer"]}
            ]}),
            json!({"description": "Role.\n\n- `admin`: All.", "type": "string", "enum": ["admin", "viewer"]}),
        );
        // A data-carrying variant: left alone.
        let mixed = json!({"oneOf": [{"type": "string", "enum": ["all"]}, {"type": "object"}]});
        check(mixed.clone(), mixed);
    }

    #[test]
    fn optional_query_parameters_are_not_nullable() {
        let mut status = json!({"type": "string", "enum": ["active", null], "nullable": true});
        super::optional_query_schema(&mut status);
        assert_eq!(status, json!({"type": "string", "enum": ["active"]}));
        let mut severity =
            json!({"allOf": [{"type": "string", "enum": ["major"], "description": "S."}], "nullable": true});
        super::optional_query_schema(&mut severity);
        assert_eq!(severity, json!({"type": "string", "enum": ["major"], "description": "S."}));
        let mut reference = json!({"allOf": [{"$ref": "#/components/schemas/A"}], "nullable": true});
        super::optional_query_schema(&mut reference);
        assert_eq!(reference, json!({"allOf": [{"$ref": "#/components/schemas/A"}]}));
    }

    #[test]
    fn boolean_schemas_become_objects() {
        check(json!(true), json!({}));
        check(json!(false), json!({"not": {}}));
        check(json!({"properties": {"a": true}}), json!({"properties": {"a": {}}}));
        check(json!({"additionalProperties": true}), json!({"additionalProperties": true}));
    }

    #[test]
    fn tuples_become_one_item_schema() {
        check(
            json!({"type": "array", "items": [{"type": "integer"}, {"type": "integer"}], "minItems": 2, "maxItems": 2}),
            json!({"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2,
                   "description": "A tuple of 2 elements, in this order: integer, integer."}),
        );
        check(
            json!({"type": "array", "description": "Pair.", "items": [{"$ref": "#/components/schemas/A"}, true]}),
            json!({"type": "array", "items": {"anyOf": [{"$ref": "#/components/schemas/A"}, {}]},
                   "description": "Pair.\n\nA tuple of 2 elements, in this order: A, any."}),
        );
        // Nested: an array of tuples.
        check(
            json!({"type": "array", "items": {"type": "array", "items": [{"type": "string"}]}}),
            json!({"type": "array", "items": {"type": "array", "items": {"type": "string"}}}),
        );
    }

    #[test]
    fn nullable_references_use_all_of() {
        check(
            json!({"description": "d", "anyOf": [{"$ref": "#/components/schemas/A"}, {"enum": [null], "nullable": true}]}),
            json!({"description": "d", "allOf": [{"$ref": "#/components/schemas/A"}], "nullable": true}),
        );
        check(
            json!({"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]}),
            json!({"anyOf": [{"type": "string"}, {"type": "integer"}], "nullable": true}),
        );
        check(json!({"enum": [null], "nullable": true}), json!({"type": "object", "nullable": true}));
        // Already 3.0: untouched.
        check(json!({"type": "string", "nullable": true}), json!({"type": "string", "nullable": true}));
    }
}
