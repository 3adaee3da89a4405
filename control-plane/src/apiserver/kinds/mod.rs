//! Per-kind semantics the generic REST handlers call into: defaulting, validation, the
//! `kubectl get` table columns, and the field selectors a kind supports. One
//! [`KindStrategy`] per built-in kind (as upstream's registry strategies and printers);
//! kinds without one get [`Generic`].
//!
//! Strategies are pure functions over the object's JSON (already decoded through its typed
//! `k8s-openapi` form, so types are right and unknown fields are gone).

use serde_json::Value;

use super::errors::Cause;

/// One column of a `meta.k8s.io/v1` Table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    /// `string`, `integer`, `number`, `boolean`, `date`.
    pub kind: &'static str,
    /// e.g. `name` for the NAME column.
    pub format: &'static str,
    pub description: &'static str,
    /// 0: always shown; 1: only with `-o wide`.
    pub priority: u8,
}

/// Kind-specific behaviour. Every method has the generic default.
pub trait KindStrategy: Send + Sync + std::fmt::Debug {
    /// Fills defaults, as upstream's defaulting functions (idempotent).
    fn default(&self, _object: &mut Value) {}

    /// Validation of a new object (`old` = `None`) or of an update (`old` = the stored object;
    /// immutable fields are checked here). Metadata (name syntax, labels, annotations) is
    /// validated generically before this is called.
    fn validate(&self, _object: &Value, _old: Option<&Value>) -> Vec<Cause> {
        Vec::new()
    }

    /// The Table columns; the first must be NAME.
    fn columns(&self) -> Vec<Column> {
        generic_columns()
    }

    /// The cells of one object's row, matching [`KindStrategy::columns`]. `now` is the
    /// server's current time in seconds since the epoch (for AGE columns).
    fn row(&self, object: &Value, now: i64) -> Vec<Value> {
        vec![
            Value::String(name_of(object).to_string()),
            Value::String(age(object, now)),
        ]
    }

    /// The value of a field selector label for `object` (`metadata.name` and
    /// `metadata.namespace` are handled generically). `None`: the kind does not support
    /// this field (the request is rejected with 400, as upstream).
    fn field(&self, _object: &Value, _label: &str) -> Option<String> {
        None
    }
}

/// The columns of a kind without a printer: NAME and AGE (as kubectl shows CRDs without
/// `additionalPrinterColumns`).
pub fn generic_columns() -> Vec<Column> {
    vec![
        Column {
            name: "Name",
            kind: "string",
            format: "name",
            description: "Name must be unique within a namespace.",
            priority: 0,
        },
        Column {
            name: "Age",
            kind: "string",
            format: "",
            description: "CreationTimestamp is a timestamp representing the server time when this object was created.",
            priority: 0,
        },
    ]
}

/// The strategy of kinds without their own.
#[derive(Debug, Default, Clone, Copy)]
pub struct Generic;

impl KindStrategy for Generic {}

/// The strategy for a built-in kind.
pub fn strategy_for(_group: &str, _kind: &str) -> &'static dyn KindStrategy {
    &Generic
}

/// `metadata.name` (empty if absent).
pub fn name_of(object: &Value) -> &str {
    object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The AGE cell: time since `metadata.creationTimestamp`, in kubectl's short form
/// (`45s`, `3m12s`, `5h`, `12d` ...; `<unknown>` without a timestamp).
pub fn age(object: &Value, now: i64) -> String {
    let created = object
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok());
    match created {
        Some(created) => human_duration(now - created.as_second()),
        None => "<unknown>".to_string(),
    }
}

/// A duration in seconds in the short human form kubectl prints (upstream's
/// `duration.HumanDuration` rules).
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    let s = seconds.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        match s % 60 {
            0 => format!("{m}m"),
            rest => format!("{m}m{rest}s"),
        }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        match m % 60 {
            0 => format!("{h}h"),
            rest => format!("{h}h{rest}m"),
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        match h % 24 {
            0 => format!("{d}d"),
            rest => format!("{d}d{rest}h"),
        }
    } else if h < 24 * 365 * 2 {
        format!("{d}d")
    } else if h < 24 * 365 * 8 {
        match d % 365 {
            0 => format!("{}y", d / 365),
            rest => format!("{}y{rest}d", d / 365),
        }
    } else {
        format!("{}y", d / 365)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_like_kubectl() {
        let cases = [
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (192, "3m12s"),
            (600, "10m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 60 * 5, "3h5m"),
            (47 * 3600, "47h"),
            (50 * 3600, "2d2h"),
            (10 * 86400, "10d"),
            (800 * 86400, "2y70d"),
            (-5, "<invalid>"),
        ];
        for (seconds, want) in cases {
            assert_eq!(human_duration(seconds), want, "{seconds}s");
        }
    }
}
