//! Building blocks of `kubectl get` tables shared by several kinds: the NAME and AGE
//! columns, the wide CONTAINERS/IMAGES/SELECTOR cells of workloads, label and selector
//! formatting, and the NAME + CREATED AT table upstream gives kinds without a printer.

use serde_json::Value;

use super::util::{arr, s, seconds};
use super::{Column, generic_columns};

/// The NAME column.
pub fn name_column() -> Column {
    generic_columns()[0].clone()
}

/// The AGE column.
pub fn age_column() -> Column {
    generic_columns()[1].clone()
}

/// A column shown by default.
pub const fn col(name: &'static str, kind: &'static str, description: &'static str) -> Column {
    Column {
        name,
        kind,
        format: "",
        description,
        priority: 0,
    }
}

/// A column shown only with `-o wide`.
pub const fn wide(name: &'static str, kind: &'static str, description: &'static str) -> Column {
    Column {
        name,
        kind,
        format: "",
        description,
        priority: 1,
    }
}

pub const CONTAINERS: Column = wide(
    "Containers",
    "string",
    "Container names of the pod template.",
);
pub const IMAGES: Column = wide("Images", "string", "Container images of the pod template.");
pub const SELECTOR: Column = wide("Selector", "string", "Label selector of the managed pods.");

/// The comma-joined container names and images of a pod spec (upstream's
/// `layoutContainerCells`).
pub fn containers_and_images(spec: &Value) -> (Value, Value) {
    let containers = arr(spec, "/containers");
    let names: Vec<&str> = containers.iter().map(|c| s(c, "/name")).collect();
    let images: Vec<&str> = containers.iter().map(|c| s(c, "/image")).collect();
    (
        Value::String(names.join(",")),
        Value::String(images.join(",")),
    )
}

/// Labels as `a=b,c=d` in key order; `<none>` when empty (upstream's `FormatLabels`).
pub fn format_labels(labels: Option<&Value>) -> String {
    let parts: Vec<String> = labels
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    if parts.is_empty() {
        "<none>".to_string()
    } else {
        parts.join(",")
    }
}

/// A `LabelSelector` as `kubectl get -o wide` shows it (upstream's `FormatLabelSelector`).
pub fn format_selector(selector: Option<&Value>) -> String {
    let selector = selector
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    kwk_api::meta::format_selector(&selector)
}

/// The table of kinds upstream has no printer for (Role, ClusterRole,
/// CustomResourceDefinition, LimitRange ...): NAME and CREATED AT (an RFC 3339 date).
pub fn created_at_columns() -> Vec<Column> {
    vec![
        name_column(),
        Column {
            name: "Created At",
            kind: "date",
            format: "",
            description: "When the object was created.",
            priority: 0,
        },
    ]
}

/// The cells of [`created_at_columns`].
pub fn created_at_row(object: &Value) -> Vec<Value> {
    let created = s(object, "/metadata/creationTimestamp");
    let cell =
        match seconds(created).and_then(|t| k8s_openapi::jiff::Timestamp::from_second(t).ok()) {
            Some(t) => t.to_string(),
            None => "0001-01-01T00:00:00Z".to_string(),
        };
    vec![
        Value::String(super::name_of(object).to_string()),
        Value::String(cell),
    ]
}

/// `a,b,c + 2 more...` for the first `max` items (upstream's `listWithMoreString`), or
/// `<unset>` when empty.
pub fn list_with_more(list: &[String], total: usize, max: usize) -> String {
    let shown = list.iter().take(max).cloned().collect::<Vec<_>>().join(",");
    if total > max {
        format!("{shown} + {} more...", total - max)
    } else if shown.is_empty() {
        "<unset>".to_string()
    } else {
        shown
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn formatting() {
        assert_eq!(format_labels(Some(&json!({"b": "2", "a": "1"}))), "a=1,b=2");
        assert_eq!(format_labels(None), "<none>");
        assert_eq!(
            format_selector(Some(&json!({"matchLabels": {"app": "web"}}))),
            "app=web"
        );
        assert_eq!(
            list_with_more(&["a".into(), "b".into(), "c".into(), "d".into()], 4, 3),
            "a,b,c + 1 more..."
        );
        assert_eq!(list_with_more(&[], 0, 3), "<unset>");
        assert_eq!(
            created_at_row(
                &json!({"metadata": {"name": "r", "creationTimestamp": "2025-01-02T03:04:05Z"}})
            ),
            [json!("r"), json!("2025-01-02T03:04:05Z")]
        );
    }
}
