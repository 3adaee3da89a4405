//! What the workload kinds (Deployment, ReplicaSet, StatefulSet, DaemonSet, Job) share in
//! validation: a required, non-empty selector that matches the pod template's labels, the
//! template itself, the restart policy the controller allows, and int-or-percent fields
//! (`maxSurge`, `maxUnavailable`, `minAvailable`).

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kwk_api::field::{self, FieldError, Shown, invalid, not_supported, required};
use kwk_api::{meta, pod};

/// How a workload kind checks its selector and template.
#[derive(Debug, Clone, Copy)]
pub struct TemplateRules {
    /// Where the selector and template live (`spec`, `spec.jobTemplate.spec`).
    pub base: &'static str,
    /// The kind (`deployment` ...) when an empty selector is refused as missing; `None`
    /// (jobs): an empty selector is acceptable here.
    pub kind: Option<&'static str>,
    /// Restart policies the controller runs pods with.
    pub restart_policies: &'static [&'static str],
    /// `Some(message)`: `activeDeadlineSeconds` is refused with this message.
    pub no_deadline: Option<&'static str>,
}

/// The selector and template of a workload spec at `spec`.
pub fn validate_selector_and_template(
    selector: Option<&LabelSelector>,
    template: Option<&PodTemplateSpec>,
    rules: TemplateRules,
    errs: &mut Vec<FieldError>,
) {
    let base = rules.base;
    // A missing selector reaches us as an empty one (the typed decode fills required
    // fields), so an empty selector of a kind that needs one reads as missing.
    let selector = selector.filter(|sel| rules.kind.is_none() || !meta::selector_is_empty(sel));
    match selector {
        None => errs.push(required(&format!("{base}.selector"), "")),
        Some(sel) => errs.extend(meta::validate_label_selector(
            sel,
            &format!("{base}.selector"),
        )),
    }
    let Some(template) = template else {
        errs.push(required(&format!("{base}.template"), ""));
        return;
    };
    let labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    if let Some(sel) = selector
        && !meta::selector_is_empty(sel)
        && !meta::selector_matches(sel, &labels)
    {
        errs.push(invalid(
            &format!("{base}.template.metadata.labels"),
            meta::show_string_map(template.metadata.as_ref().and_then(|m| m.labels.as_ref())),
            "`selector` does not match template `labels`",
        ));
    }
    errs.extend(pod::validate_pod_template(
        template,
        &format!("{base}.template"),
    ));
    if let Some(spec) = &template.spec {
        let policy = spec.restart_policy.as_deref().unwrap_or_default();
        if !policy.is_empty() && !rules.restart_policies.contains(&policy) {
            errs.push(not_supported(
                &format!("{base}.template.spec.restartPolicy"),
                policy,
                rules.restart_policies,
            ));
        }
        if let (Some(message), Some(deadline)) = (rules.no_deadline, spec.active_deadline_seconds) {
            let path = format!("{base}.template.spec.activeDeadlineSeconds");
            errs.push(if rules.kind == Some("daemonset") {
                invalid(&path, deadline, message)
            } else {
                field::forbidden(&path, message)
            });
        }
    }
}

/// Whether the raw object has no `spec.selector` (the typed form cannot tell a missing
/// selector from an empty one; the typed round trip of these kinds keeps it missing).
pub fn selector_missing(object: &serde_json::Value) -> bool {
    object
        .pointer("/spec/selector")
        .is_none_or(serde_json::Value::is_null)
}

/// [`validate_selector_and_template`] for Deployments and ReplicaSets, told whether the
/// selector was given: upstream's `Required value` plus a template mismatch (a missing
/// selector matches nothing) when it was not, `empty selector is invalid for deployment`
/// (and no mismatch: an empty selector matches everything) when it was given empty.
pub fn validate_given_selector_and_template(
    selector: &LabelSelector,
    given: bool,
    template: Option<&PodTemplateSpec>,
    rules: TemplateRules,
    errs: &mut Vec<FieldError>,
) {
    let base = rules.base;
    if given && !meta::selector_is_empty(selector) {
        validate_selector_and_template(Some(selector), template, rules, errs);
        return;
    }
    if given {
        errs.push(invalid(
            &format!("{base}.selector"),
            go_syntax_empty_selector(selector),
            "empty selector is invalid for deployment",
        ));
    } else {
        errs.push(required(&format!("{base}.selector"), ""));
        if let Some(template) = template {
            errs.push(invalid(
                &format!("{base}.template.metadata.labels"),
                meta::show_string_map(template.metadata.as_ref().and_then(|m| m.labels.as_ref())),
                "`selector` does not match template `labels`",
            ));
        }
    }
    // The rest of the template checks: an empty selector stands in, which they accept.
    let rules = TemplateRules {
        kind: None,
        ..rules
    };
    validate_selector_and_template(Some(selector), template, rules, errs);
}

/// An empty selector the way upstream's error shows it (Go's `%#v`).
fn go_syntax_empty_selector(selector: &LabelSelector) -> Shown {
    let labels = if selector.match_labels.is_some() {
        "map[string]string{}"
    } else {
        "map[string]string(nil)"
    };
    let expressions = if selector.match_expressions.is_some() {
        "[]v1.LabelSelectorRequirement{}"
    } else {
        "[]v1.LabelSelectorRequirement(nil)"
    };
    Shown::Raw(format!(
        "v1.LabelSelector{{MatchLabels:{labels}, MatchExpressions:{expressions}}}"
    ))
}

/// `spec.selector` may not change (`field is immutable`).
pub fn immutable_selector(
    new: Option<&LabelSelector>,
    old: Option<&LabelSelector>,
    errs: &mut Vec<FieldError>,
) {
    if new != old {
        errs.push(invalid(
            "spec.selector",
            meta::show_selector(new),
            field::FIELD_IMMUTABLE,
        ));
    }
}

const PERCENT_MSG: &str = "a valid percent string must be a numeric string followed by an ending \
'%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')";

fn show(value: &IntOrString) -> Shown {
    match value {
        IntOrString::Int(n) => Shown::from(*n),
        IntOrString::String(s) => Shown::from(s.as_str()),
    }
}

/// The percentage of a `"25%"` value.
pub fn percent(value: &IntOrString) -> Option<i64> {
    match value {
        IntOrString::String(s) => s
            .strip_suffix('%')
            .filter(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
            .and_then(|n| n.parse().ok()),
        IntOrString::Int(_) => None,
    }
}

/// Upstream's `ValidatePositiveIntOrPercent` (which allows zero) and, when `max_100`,
/// `IsNotMoreThan100Percent`.
pub fn check_int_or_percent(
    path: &str,
    value: &IntOrString,
    max_100: bool,
    errs: &mut Vec<FieldError>,
) {
    match value {
        IntOrString::Int(n) if *n < 0 => errs.push(invalid(path, *n, field::IS_NEGATIVE)),
        IntOrString::Int(_) => {}
        IntOrString::String(_) => match percent(value) {
            None => errs.push(invalid(path, show(value), PERCENT_MSG)),
            Some(p) if max_100 && p > 100 => {
                errs.push(invalid(path, show(value), "must not be greater than 100%"))
            }
            Some(_) => {}
        },
    }
}

/// Whether an int-or-percent value is zero (`0` or `"0%"`).
pub fn is_zero(value: Option<&IntOrString>) -> bool {
    match value {
        Some(IntOrString::Int(n)) => *n == 0,
        Some(v) => percent(v) == Some(0),
        None => true,
    }
}

/// An int-or-percent as a table cell (`1` or `50%`).
pub fn int_or_string_cell(value: Option<&serde_json::Value>) -> String {
    match value {
        Some(serde_json::Value::Number(n)) => n.to_string(),
        Some(serde_json::Value::String(s)) => s.clone(),
        _ => "N/A".to_string(),
    }
}
