//! Structural OpenAPI v3 schemas of custom resources (a CRD version's `openAPIV3Schema`, kept
//! as JSON): pruning of fields the schema does not declare ([`prune`], reporting their paths
//! for `fieldValidation`), defaulting from `default` ([`apply_defaults`]), and validation
//! ([`validate`]) with upstream's field paths and messages: types (with `nullable`,
//! `x-kubernetes-int-or-string`, `x-kubernetes-preserve-unknown-fields`), `required`, `enum`,
//! numeric bounds, lengths, item counts, `pattern`, basic formats and
//! `x-kubernetes-list-type` uniqueness. CEL `x-kubernetes-validations` are not evaluated.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::apiserver::errors::Cause;

/// `field` below `parent` (`spec` + `replicas` → `spec.replicas`).
fn child(parent: &str, field: &str) -> String {
    if parent.is_empty() {
        field.to_string()
    } else {
        format!("{parent}.{field}")
    }
}

fn flag(schema: &Value, name: &str) -> bool {
    schema.get(name).and_then(Value::as_bool) == Some(true)
}

fn properties(schema: &Value) -> Option<&Map<String, Value>> {
    schema.get("properties").and_then(Value::as_object)
}

/// The schema of the values of a map (`additionalProperties: {schema}`); `Ok(None)`: any value
/// is kept as is (`additionalProperties: true`); `Err(())`: none declared.
fn additional(schema: &Value) -> Result<Option<&Value>, ()> {
    match schema.get("additionalProperties") {
        Some(Value::Bool(true)) => Ok(None),
        Some(s @ Value::Object(_)) => Ok(Some(s)),
        _ => Err(()),
    }
}

/// The root fields of every object (`apiVersion`, `kind`, `metadata`) or of an embedded
/// resource.
const TYPE_META: &[&str] = &["apiVersion", "kind", "metadata"];

/// Removes fields `schema` does not declare from `value`, recording their paths in `pruned`.
/// `root`: `value` is a whole object (its `apiVersion`, `kind` and `metadata` are kept).
pub fn prune(schema: &Value, value: &mut Value, path: &str, root: bool, pruned: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            let keep_meta = root || flag(schema, "x-kubernetes-embedded-resource");
            let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
            let props = properties(schema);
            let extra = additional(schema);
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let field_path = child(path, &key);
                if keep_meta && TYPE_META.contains(&key.as_str()) {
                    if key == "metadata" && !root {
                        // An embedded object's metadata: ObjectMeta fields only.
                        if let Some(meta) = map.get_mut("metadata") {
                            prune_object_meta(meta, &field_path, pruned);
                        }
                    }
                    continue;
                }
                if let Some(sub) = props.and_then(|p| p.get(&key)) {
                    if let Some(v) = map.get_mut(&key) {
                        prune(sub, v, &field_path, false, pruned);
                    }
                } else if let Ok(extra) = extra {
                    if let (Some(sub), Some(v)) = (extra, map.get_mut(&key)) {
                        prune(sub, v, &field_path, false, pruned);
                    }
                } else if !preserve {
                    map.remove(&key);
                    pruned.push(field_path);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items").filter(|s| s.is_object()) {
                for (i, item) in items.iter_mut().enumerate() {
                    prune(item_schema, item, &format!("{path}[{i}]"), false, pruned);
                }
            }
        }
        _ => {}
    }
}

/// Drops what `ObjectMeta` does not have (through its typed form), recording the paths.
pub fn prune_object_meta(meta: &mut Value, path: &str, pruned: &mut Vec<String>) {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    let Some(before) = meta.as_object().cloned() else {
        return;
    };
    let Ok(typed) = serde_json::from_value::<ObjectMeta>(meta.clone()) else {
        return;
    };
    let Ok(after) = serde_json::to_value(typed) else {
        return;
    };
    for (key, v) in &before {
        if after.get(key).is_none() && !v.is_null() {
            pruned.push(child(path, key));
        }
    }
    *meta = after;
}

/// Fills `default`s of absent (or null, unless nullable) properties, recursively.
pub fn apply_defaults(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(props) = properties(schema) {
                for (name, sub) in props {
                    let Some(default) = sub.get("default") else {
                        continue;
                    };
                    let missing = match map.get(name) {
                        None => true,
                        Some(Value::Null) => !flag(sub, "nullable"),
                        Some(_) => false,
                    };
                    if missing {
                        map.insert(name.clone(), default.clone());
                    }
                }
                for (name, v) in map.iter_mut() {
                    if let Some(sub) = props.get(name) {
                        apply_defaults(sub, v);
                    }
                }
            } else if let Ok(Some(sub)) = additional(schema) {
                for v in map.values_mut() {
                    apply_defaults(sub, v);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items").filter(|s| s.is_object()) {
                for item in items {
                    apply_defaults(item_schema, item);
                }
            }
        }
        _ => {}
    }
}

/// The JSON type name of a value, as upstream's validator names it in messages.
fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_integer(value: &Value) -> bool {
    match value {
        Value::Number(n) => {
            n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => false,
    }
}

fn type_matches(ty: &str, value: &Value) -> bool {
    match ty {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => is_integer(value),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        _ => true,
    }
}

fn type_error(path: &str, ty: &str, value: &Value) -> Cause {
    let actual = type_name(value);
    Cause {
        reason: "FieldValueTypeInvalid",
        message: format!(
            "Invalid value: \"{actual}\": {path} in body must be of type {ty}: \"{actual}\""
        ),
        field: path.to_string(),
    }
}

fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// Validates `value` against `schema`; `path` is the field path of `value` (`""` at the root,
/// where `apiVersion`, `kind` and `metadata` are left to the metadata checks).
pub fn validate(schema: &Value, value: &Value, path: &str, out: &mut Vec<Cause>) {
    let ty = schema
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if value.is_null() {
        if !flag(schema, "nullable") && !ty.is_empty() {
            out.push(type_error(path, ty, value));
        }
        return;
    }
    if flag(schema, "x-kubernetes-int-or-string") {
        if !(is_integer(value) || value.is_string()) {
            out.push(type_error(path, "integer-or-string", value));
            return;
        }
    } else if !ty.is_empty() && !type_matches(ty, value) {
        out.push(type_error(path, ty, value));
        return;
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        let list: Vec<String> = options.iter().map(shown).collect();
        out.push(Cause {
            reason: "FieldValueNotSupported",
            message: format!(
                "Unsupported value: {}: supported values: {}",
                shown(value),
                list.join(", ")
            ),
            field: path.to_string(),
        });
    }
    match value {
        Value::Number(n) => {
            validate_number(schema, n.as_f64().unwrap_or_default(), value, path, out)
        }
        Value::String(s) => validate_string(schema, s, value, path, out),
        Value::Array(items) => validate_array(schema, items, value, path, out),
        Value::Object(map) => validate_object(schema, map, path, path.is_empty(), out),
        _ => {}
    }
}

fn number(schema: &Value, name: &str) -> Option<f64> {
    schema.get(name).and_then(Value::as_f64)
}

fn count(schema: &Value, name: &str) -> Option<usize> {
    schema.get(name).and_then(Value::as_u64).map(|n| n as usize)
}

fn show_bound(bound: f64) -> String {
    if bound.fract() == 0.0 && bound.abs() < 1e15 {
        format!("{}", bound as i64)
    } else {
        bound.to_string()
    }
}

fn validate_number(schema: &Value, n: f64, value: &Value, path: &str, out: &mut Vec<Cause>) {
    if let Some(min) = number(schema, "minimum") {
        let exclusive = flag(schema, "exclusiveMinimum");
        if (exclusive && n <= min) || (!exclusive && n < min) {
            let rel = if exclusive {
                "greater than"
            } else {
                "greater than or equal to"
            };
            out.push(Cause::invalid(
                path,
                value,
                format!("{path} in body should be {rel} {}", show_bound(min)),
            ));
        }
    }
    if let Some(max) = number(schema, "maximum") {
        let exclusive = flag(schema, "exclusiveMaximum");
        if (exclusive && n >= max) || (!exclusive && n > max) {
            let rel = if exclusive {
                "less than"
            } else {
                "less than or equal to"
            };
            out.push(Cause::invalid(
                path,
                value,
                format!("{path} in body should be {rel} {}", show_bound(max)),
            ));
        }
    }
    if let Some(factor) = number(schema, "multipleOf")
        && factor > 0.0
        && (n / factor).fract() != 0.0
    {
        out.push(Cause::invalid(
            path,
            value,
            format!(
                "{path} in body should be a multiple of {}",
                show_bound(factor)
            ),
        ));
    }
}

fn validate_string(schema: &Value, s: &str, value: &Value, path: &str, out: &mut Vec<Cause>) {
    let chars = s.chars().count();
    if let Some(max) = count(schema, "maxLength")
        && chars > max
    {
        out.push(Cause {
            reason: "FieldValueTooLong",
            message: format!("Too long: may not be more than {max} bytes"),
            field: path.to_string(),
        });
    }
    if let Some(min) = count(schema, "minLength")
        && chars < min
    {
        out.push(Cause::invalid(
            path,
            value,
            format!("{path} in body should be at least {min} chars long"),
        ));
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        match regex::Regex::new(pattern) {
            Ok(re) if !re.is_match(s) => out.push(Cause::invalid(
                path,
                value,
                format!("{path} in body should match '{pattern}'"),
            )),
            _ => {}
        }
    }
    if let Some(format) = schema.get("format").and_then(Value::as_str)
        && !format_matches(format, s)
    {
        out.push(Cause::invalid(
            path,
            value,
            format!("{path} in body must be of type {format}: {}", shown(value)),
        ));
    }
}

/// The formats upstream checks that matter most; unknown formats pass.
pub fn format_matches(format: &str, s: &str) -> bool {
    match format {
        "date-time" | "datetime" => s.parse::<k8s_openapi::jiff::Timestamp>().is_ok(),
        "date" => s.parse::<k8s_openapi::jiff::civil::Date>().is_ok() && s.len() == 10,
        "int-or-string" => true,
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
        "uuid" => {
            let hex: String = s.chars().filter(|c| *c != '-').collect();
            s.len() == 36 && hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit())
        }
        "byte" => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(s).is_ok()
        }
        "hostname" => !s.is_empty() && kwk_api::names::dns1123_subdomain_problems(s).is_empty(),
        _ => true,
    }
}

fn validate_array(
    schema: &Value,
    items: &[Value],
    value: &Value,
    path: &str,
    out: &mut Vec<Cause>,
) {
    if let Some(max) = count(schema, "maxItems")
        && items.len() > max
    {
        out.push(Cause {
            reason: "FieldValueTooMany",
            message: format!("Too many: {}: must have at most {max} items", items.len()),
            field: path.to_string(),
        });
    }
    if let Some(min) = count(schema, "minItems")
        && items.len() < min
    {
        out.push(Cause::invalid(
            path,
            &Value::from(items.len()),
            format!("{path} in body should have at least {min} items"),
        ));
    }
    let _ = value;
    let list_type = schema.get("x-kubernetes-list-type").and_then(Value::as_str);
    if flag(schema, "uniqueItems") || list_type == Some("set") {
        let mut seen = Vec::new();
        for (i, item) in items.iter().enumerate() {
            if seen.contains(&item) {
                out.push(Cause::duplicate(format!("{path}[{i}]"), item));
            } else {
                seen.push(item);
            }
        }
    }
    if list_type == Some("map") {
        let keys: Vec<&str> = schema
            .get("x-kubernetes-list-map-keys")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut seen = BTreeSet::new();
        for (i, item) in items.iter().enumerate() {
            let key: Vec<String> = keys
                .iter()
                .map(|k| item.get(*k).map(Value::to_string).unwrap_or_default())
                .collect();
            if !seen.insert(key) {
                let shown: Map<String, Value> = keys
                    .iter()
                    .filter_map(|k| item.get(*k).map(|v| (k.to_string(), v.clone())))
                    .collect();
                out.push(Cause::duplicate(
                    format!("{path}[{i}]"),
                    &Value::Object(shown),
                ));
            }
        }
    }
    if let Some(item_schema) = schema.get("items").filter(|s| s.is_object()) {
        for (i, item) in items.iter().enumerate() {
            validate(item_schema, item, &format!("{path}[{i}]"), out);
        }
    }
}

fn validate_object(
    schema: &Value,
    map: &Map<String, Value>,
    path: &str,
    root: bool,
    out: &mut Vec<Cause>,
) {
    for name in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if root && TYPE_META.contains(&name) {
            continue;
        }
        if !map.contains_key(name) {
            out.push(Cause::required(child(path, name)));
        }
    }
    if let Some(max) = count(schema, "maxProperties")
        && map.len() > max
    {
        out.push(Cause {
            reason: "FieldValueTooMany",
            message: format!("Too many: {}: must have at most {max} items", map.len()),
            field: path.to_string(),
        });
    }
    if let Some(min) = count(schema, "minProperties")
        && map.len() < min
    {
        out.push(Cause::invalid(
            path,
            &Value::from(map.len()),
            format!("{path} in body should have at least {min} properties"),
        ));
    }
    let props = properties(schema);
    let extra = additional(schema);
    for (name, v) in map {
        if root && TYPE_META.contains(&name.as_str()) {
            continue;
        }
        let field_path = child(path, name);
        if let Some(sub) = props.and_then(|p| p.get(name)) {
            validate(sub, v, &field_path, out);
        } else if let Ok(Some(sub)) = extra {
            validate(sub, v, &field_path, out);
        }
    }
    if flag(schema, "x-kubernetes-embedded-resource") && !root {
        for field in ["apiVersion", "kind"] {
            if map
                .get(field)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .is_empty()
            {
                out.push(Cause::required(child(path, field)));
            }
        }
    }
}
