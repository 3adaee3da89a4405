//! Field errors in the upstream API's shape and wording: a field path, a cause type (the
//! `reason` of a `Status` cause, e.g. `FieldValueRequired`) and a message
//! (`Required value`, `Invalid value: "x": detail` ...). Validation functions return lists of
//! these so every problem of an object is reported at once.

use std::fmt;

/// Upstream's `field.ErrorType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    NotFound,
    Required,
    Duplicate,
    Invalid,
    NotSupported,
    Forbidden,
    TooLong,
    TooMany,
    Internal,
}

impl ErrorKind {
    /// The cause `reason` clients see (`FieldValueRequired` ...).
    pub fn reason(self) -> &'static str {
        match self {
            Self::NotFound => "FieldValueNotFound",
            Self::Required => "FieldValueRequired",
            Self::Duplicate => "FieldValueDuplicate",
            Self::Invalid => "FieldValueInvalid",
            Self::NotSupported => "FieldValueNotSupported",
            Self::Forbidden => "FieldValueForbidden",
            Self::TooLong => "FieldValueTooLong",
            Self::TooMany => "FieldValueTooMany",
            Self::Internal => "InternalError",
        }
    }
}

/// One problem with one field. Displays as upstream's `field.Error` does:
/// `<field path>: <kind>[: <value>][: <detail>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field path, e.g. `spec.containers[0].ports[1].containerPort`.
    pub field: String,
    pub kind: ErrorKind,
    /// Everything after the path, e.g. `Unsupported value: "x": supported values: "a", "b"`.
    pub body: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.body)
    }
}

impl std::error::Error for FieldError {}

/// A value shown in an error: strings quoted, numbers and booleans bare, anything else as
/// pre-rendered text (upstream prints structs with Go syntax; we print our own rendering).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shown {
    Str(String),
    Int(i64),
    Raw(String),
}

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shown::Str(s) => write!(f, "{s:?}"),
            Shown::Int(n) => write!(f, "{n}"),
            Shown::Raw(s) => f.write_str(s),
        }
    }
}

impl From<&str> for Shown {
    fn from(s: &str) -> Self {
        Shown::Str(s.to_string())
    }
}

impl From<String> for Shown {
    fn from(s: String) -> Self {
        Shown::Str(s)
    }
}

impl From<&String> for Shown {
    fn from(s: &String) -> Self {
        Shown::Str(s.clone())
    }
}

impl From<i64> for Shown {
    fn from(n: i64) -> Self {
        Shown::Int(n)
    }
}

impl From<i32> for Shown {
    fn from(n: i32) -> Self {
        Shown::Int(i64::from(n))
    }
}

impl From<bool> for Shown {
    fn from(b: bool) -> Self {
        Shown::Raw(b.to_string())
    }
}

impl From<&serde_json::Value> for Shown {
    fn from(v: &serde_json::Value) -> Self {
        match v {
            serde_json::Value::String(s) => Shown::Str(s.clone()),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Shown::Int(i),
                None => Shown::Raw(n.to_string()),
            },
            serde_json::Value::Null => Shown::Raw("null".to_string()),
            other => Shown::Raw(other.to_string()),
        }
    }
}

fn error(field: &str, kind: ErrorKind, body: String) -> FieldError {
    FieldError {
        field: field.to_string(),
        kind,
        body,
    }
}

fn with_detail(mut body: String, detail: &str) -> String {
    if !detail.is_empty() {
        body.push_str(": ");
        body.push_str(detail);
    }
    body
}

/// `<field>: Required value[: detail]`.
pub fn required(field: &str, detail: &str) -> FieldError {
    error(
        field,
        ErrorKind::Required,
        with_detail("Required value".to_string(), detail),
    )
}

/// `<field>: Invalid value: <value>[: detail]`.
pub fn invalid(field: &str, value: impl Into<Shown>, detail: &str) -> FieldError {
    error(
        field,
        ErrorKind::Invalid,
        with_detail(format!("Invalid value: {}", value.into()), detail),
    )
}

/// `<field>: Unsupported value: <value>: supported values: "a", "b"`.
pub fn not_supported(field: &str, value: impl Into<Shown>, supported: &[&str]) -> FieldError {
    let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
    error(
        field,
        ErrorKind::NotSupported,
        format!(
            "Unsupported value: {}: supported values: {}",
            value.into(),
            list.join(", ")
        ),
    )
}

/// `<field>: Duplicate value: <value>`.
pub fn duplicate(field: &str, value: impl Into<Shown>) -> FieldError {
    error(
        field,
        ErrorKind::Duplicate,
        format!("Duplicate value: {}", value.into()),
    )
}

/// `<field>: Not found: <value>`.
pub fn not_found(field: &str, value: impl Into<Shown>) -> FieldError {
    error(
        field,
        ErrorKind::NotFound,
        format!("Not found: {}", value.into()),
    )
}

/// `<field>: Forbidden: detail`.
pub fn forbidden(field: &str, detail: &str) -> FieldError {
    error(
        field,
        ErrorKind::Forbidden,
        with_detail("Forbidden".to_string(), detail),
    )
}

/// `<field>: Too long: may not be more than <max> bytes`.
pub fn too_long(field: &str, max_bytes: usize) -> FieldError {
    let unit = if max_bytes == 1 { "byte" } else { "bytes" };
    error(
        field,
        ErrorKind::TooLong,
        format!("Too long: may not be more than {max_bytes} {unit}"),
    )
}

/// `<field>: Too many: <actual>: must have at most <max> items`.
pub fn too_many(field: &str, actual: usize, max: usize) -> FieldError {
    let unit = if max == 1 { "item" } else { "items" };
    error(
        field,
        ErrorKind::TooMany,
        format!("Too many: {actual}: must have at most {max} {unit}"),
    )
}

/// Upstream's `ValidateImmutableField` message.
pub const FIELD_IMMUTABLE: &str = "field is immutable";

/// Upstream's `ValidateNonnegativeField` message.
pub const IS_NEGATIVE: &str = "must be greater than or equal to 0";

/// `Invalid value: <v>: must be greater than or equal to 0` when `v < 0`.
pub fn check_non_negative(field: &str, value: Option<i64>, out: &mut Vec<FieldError>) {
    if let Some(v) = value.filter(|v| *v < 0) {
        out.push(invalid(field, v, IS_NEGATIVE));
    }
}

/// `field.Invalid(path, value, "field is immutable")` when `new != old`.
pub fn check_immutable<T: PartialEq>(
    field: &str,
    new: &T,
    old: &T,
    shown: impl FnOnce(&T) -> Shown,
    out: &mut Vec<FieldError>,
) {
    if new != old {
        out.push(invalid(field, shown(new), FIELD_IMMUTABLE));
    }
}

/// A child path: `parent.child` (or `child` at the root).
pub fn child(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}.{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_style_matches_upstream() {
        assert_eq!(
            required("spec.containers[0].image", "").to_string(),
            "spec.containers[0].image: Required value"
        );
        assert_eq!(
            not_supported(
                "spec.restartPolicy",
                "Sometimes",
                &["Always", "OnFailure", "Never"]
            )
            .to_string(),
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \
             \"Always\", \"OnFailure\", \"Never\""
        );
        assert_eq!(
            invalid("p", 70000, "must be between 1 and 65535, inclusive").to_string(),
            "p: Invalid value: 70000: must be between 1 and 65535, inclusive"
        );
        assert_eq!(
            duplicate("n", "web").to_string(),
            "n: Duplicate value: \"web\""
        );
        assert_eq!(forbidden("f", "why").to_string(), "f: Forbidden: why");
        assert_eq!(not_found("v", "data").to_string(), "v: Not found: \"data\"");
        assert_eq!(
            too_long("data", 1048576).to_string(),
            "data: Too long: may not be more than 1048576 bytes"
        );
        assert_eq!(required("a", "").kind.reason(), "FieldValueRequired");
        assert_eq!(
            invalid("a", &serde_json::json!(["x"]), "d").body,
            "Invalid value: [\"x\"]: d"
        );
    }
}
