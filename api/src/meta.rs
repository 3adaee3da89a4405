//! Validation of the metadata pieces every kind shares: labels, annotations (keys and total
//! size), label selectors, finalizer names. Object-level metadata rules (name, namespace,
//! immutability on update) build on these in the control plane.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::field::{self, FieldError, invalid, required};
use crate::names;

/// Upstream's limit on the total size of an object's annotations (keys plus values).
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

/// Label keys must be qualified names, values label values. Value errors name the key
/// (`metadata.labels[app]`).
pub fn validate_labels(labels: &BTreeMap<String, String>, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (key, value) in labels {
        for p in names::qualified_name_problems(key) {
            errs.push(invalid(path, key.as_str(), &p));
        }
        for p in names::label_value_problems(value) {
            errs.push(invalid(&format!("{path}[{key}]"), value.as_str(), &p));
        }
    }
    errs
}

/// Annotation keys must be qualified names (checked lowercased, as upstream); the total size
/// of keys and values is limited to [`TOTAL_ANNOTATION_SIZE_LIMIT`].
pub fn validate_annotations(annotations: &BTreeMap<String, String>, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut total = 0usize;
    for (key, value) in annotations {
        for p in names::qualified_name_problems(&key.to_lowercase()) {
            errs.push(invalid(path, key.as_str(), &p));
        }
        total += key.len() + value.len();
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(field::too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT));
    }
    errs
}

/// Finalizer names are qualified names; `orphan` and `foregroundDeletion` exclude each other.
pub fn validate_finalizers(finalizers: &[String], path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for name in finalizers {
        for p in names::qualified_name_problems(name) {
            errs.push(invalid(path, name.as_str(), &p));
        }
    }
    if finalizers.iter().any(|f| f == "orphan")
        && finalizers.iter().any(|f| f == "foregroundDeletion")
    {
        errs.push(invalid(
            path,
            field::Shown::Raw(format!("{finalizers:?}")),
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
    errs
}

/// Upstream's `ValidateLabelSelector`.
pub fn validate_label_selector(selector: &LabelSelector, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, req) in selector.match_expressions.iter().flatten().enumerate() {
        let req_path = format!("{path}.matchExpressions[{i}]");
        let values = req.values.as_deref().unwrap_or_default();
        match req.operator.as_str() {
            "In" | "NotIn" => {
                if values.is_empty() {
                    errs.push(required(
                        &format!("{req_path}.values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    errs.push(field::forbidden(
                        &format!("{req_path}.values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            other => errs.push(invalid(
                &format!("{req_path}.operator"),
                other,
                "not a valid selector operator",
            )),
        }
        for p in names::qualified_name_problems(&req.key) {
            errs.push(invalid(&format!("{req_path}.key"), req.key.as_str(), &p));
        }
        for value in values {
            for p in names::label_value_problems(value) {
                errs.push(invalid(&format!("{req_path}.values"), value.as_str(), &p));
            }
        }
    }
    if let Some(labels) = &selector.match_labels {
        errs.extend(validate_labels(labels, &format!("{path}.matchLabels")));
    }
    errs
}

/// Whether `selector` selects `labels` (an empty selector selects everything; an invalid
/// operator selects nothing).
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    labels_ok
        && selector.match_expressions.iter().flatten().all(|req| {
            let values = req.values.as_deref().unwrap_or_default();
            let value = labels.get(&req.key);
            match req.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

/// Whether a selector has no requirements at all.
pub fn selector_is_empty(selector: &LabelSelector) -> bool {
    selector
        .match_labels
        .as_ref()
        .is_none_or(BTreeMap::is_empty)
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(Vec::is_empty)
}

/// A selector the way `kubectl get -o wide` shows it (`app=web,tier in (a,b)`); `<none>`
/// when empty, `<invalid>` for an unknown operator (upstream's `FormatLabelSelector`).
pub fn format_selector(selector: &LabelSelector) -> String {
    let mut parts: Vec<String> = Vec::new();
    for (k, v) in selector.match_labels.iter().flatten() {
        parts.push(format!("{k}={v}"));
    }
    for req in selector.match_expressions.iter().flatten() {
        let mut values: Vec<&str> = req.values.iter().flatten().map(String::as_str).collect();
        values.sort_unstable();
        let part = match req.operator.as_str() {
            "In" => format!("{} in ({})", req.key, values.join(",")),
            "NotIn" => format!("{} notin ({})", req.key, values.join(",")),
            "Exists" => req.key.clone(),
            "DoesNotExist" => format!("!{}", req.key),
            _ => return "<invalid>".to_string(),
        };
        parts.push(part);
    }
    parts.sort();
    if parts.is_empty() {
        "<none>".to_string()
    } else {
        parts.join(",")
    }
}

/// The Go rendering upstream prints for a `*metav1.LabelSelector` value in messages.
pub fn show_selector(selector: Option<&LabelSelector>) -> field::Shown {
    let Some(selector) = selector else {
        return field::Shown::Raw("nil".to_string());
    };
    let labels: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}: {v},"))
        .collect();
    let exprs: Vec<String> = selector
        .match_expressions
        .iter()
        .flatten()
        .map(|r| {
            format!(
                "LabelSelectorRequirement{{Key:{},Operator:{},Values:[{}],}},",
                r.key,
                r.operator,
                r.values.as_deref().unwrap_or_default().join(" ")
            )
        })
        .collect();
    field::Shown::Raw(format!(
        "&LabelSelector{{MatchLabels:map[string]string{{{}}},MatchExpressions:[]LabelSelectorRequirement{{{}}},}}",
        labels.join(""),
        exprs.join("")
    ))
}

/// The Go rendering of a `map[string]string` in messages: `map[string]string{"a":"b"}`.
pub fn show_string_map(map: Option<&BTreeMap<String, String>>) -> field::Shown {
    let entries: Vec<String> = map
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k:?}:{v:?}"))
        .collect();
    if map.is_none() {
        return field::Shown::Raw("map[string]string(nil)".to_string());
    }
    field::Shown::Raw(format!("map[string]string{{{}}}", entries.join(", ")))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selectors_match_format_and_validate() {
        let selector = LabelSelector {
            match_labels: Some(map(&[("app", "web")])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "In".into(),
                values: Some(vec!["b".into(), "a".into()]),
            }]),
        };
        assert!(selector_matches(
            &selector,
            &map(&[("app", "web"), ("tier", "a")])
        ));
        assert!(!selector_matches(&selector, &map(&[("app", "web")])));
        assert_eq!(format_selector(&selector), "app=web,tier in (a,b)");
        assert_eq!(format_selector(&LabelSelector::default()), "<none>");
        assert!(validate_label_selector(&selector, "spec.selector").is_empty());
        let bad = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "In".into(),
                values: None,
            }]),
            ..Default::default()
        };
        let errs = validate_label_selector(&bad, "spec.selector");
        assert_eq!(
            errs[0].to_string(),
            "spec.selector.matchExpressions[0].values: Required value: must be specified when \
             `operator` is 'In' or 'NotIn'"
        );
    }

    #[test]
    fn annotations_are_limited_in_total() {
        let big = map(&[("a", &"x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT))]);
        let errs = validate_annotations(&big, "metadata.annotations");
        assert_eq!(
            errs[0].to_string(),
            "metadata.annotations: Too long: may not be more than 262144 bytes"
        );
        assert!(validate_annotations(&map(&[("a", "b")]), "m").is_empty());
    }

    #[test]
    fn label_errors_name_key_or_value() {
        let errs = validate_labels(&map(&[("tier", "-x"), ("-k", "v")]), "metadata.labels");
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert!(
            text.iter()
                .any(|e| e.starts_with("metadata.labels: Invalid value: \"-k\""))
        );
        assert!(
            text.iter()
                .any(|e| e.starts_with("metadata.labels[tier]: Invalid value: \"-x\""))
        );
    }
}
