//! Small helpers the kind strategies share: typed views of the JSON object (defaulting and
//! validation work on `k8s-openapi` types), lenient JSON accessors (table rows and field
//! selectors read JSON directly, which is much cheaper per row), and the conversion of
//! `kwk-api` field errors into `Status` causes.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use kwk_api::field::FieldError;

use super::super::errors::Cause;

/// A field error as a `Status` cause.
pub fn cause(e: FieldError) -> Cause {
    Cause {
        reason: e.kind.reason(),
        message: e.body,
        field: e.field,
    }
}

/// Field errors as `Status` causes.
pub fn causes(errs: Vec<FieldError>) -> Vec<Cause> {
    errs.into_iter().map(cause).collect()
}

/// The typed form of `object` (`None` if it does not decode, which the typed round trip
/// before every strategy call rules out).
pub fn typed<T: DeserializeOwned>(object: &Value) -> Option<T> {
    T::deserialize(object).ok()
}

/// Applies `f` to the typed form of `object` and writes the result back.
pub fn with_typed<T: DeserializeOwned + Serialize>(object: &mut Value, f: impl FnOnce(&mut T)) {
    if let Some(mut value) = typed::<T>(object) {
        f(&mut value);
        if let Ok(json) = serde_json::to_value(&value) {
            *object = json;
        }
    }
}

/// Validation of the typed form of a new object and, on update, of the old one.
pub fn validate_typed<T: DeserializeOwned>(
    object: &Value,
    old: Option<&Value>,
    f: impl FnOnce(&T, Option<&T>) -> Vec<FieldError>,
) -> Vec<Cause> {
    let Some(new) = typed::<T>(object) else {
        return Vec::new();
    };
    let old = old.and_then(typed::<T>);
    causes(f(&new, old.as_ref()))
}

/// The string at a JSON pointer (empty if absent or not a string).
pub fn s<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The integer at a JSON pointer (0 if absent).
pub fn int(object: &Value, pointer: &str) -> i64 {
    object
        .pointer(pointer)
        .and_then(Value::as_i64)
        .unwrap_or_default()
}

/// The array at a JSON pointer (empty if absent).
pub fn arr<'a>(object: &'a Value, pointer: &str) -> &'a [Value] {
    object
        .pointer(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// The boolean at a JSON pointer.
pub fn flag(object: &Value, pointer: &str) -> Option<bool> {
    object.pointer(pointer).and_then(Value::as_bool)
}

/// A timestamp string as seconds since the epoch.
pub fn seconds(timestamp: &str) -> Option<i64> {
    timestamp
        .parse::<k8s_openapi::jiff::Timestamp>()
        .ok()
        .map(|t| t.as_second())
}

/// Upstream's `translateTimestampSince`: the short human age of a timestamp, `<unknown>`
/// without one.
pub fn since(timestamp: &str, now: i64) -> String {
    match seconds(timestamp) {
        Some(t) => super::human_duration(now - t),
        None => "<unknown>".to_string(),
    }
}

/// Go's `strconv.FormatBool`-style cell for an optional flag (`<unset>` when absent).
pub fn bool_cell(value: Option<bool>) -> String {
    match value {
        Some(true) => "True".to_string(),
        Some(false) => "False".to_string(),
        None => "<unset>".to_string(),
    }
}

/// `true`, `false` as field selector values.
pub fn bool_field(value: Option<bool>) -> String {
    value.unwrap_or(false).to_string()
}
