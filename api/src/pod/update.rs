//! What a pod update may change (upstream's `ValidatePodUpdate`): container images, a lower
//! `activeDeadlineSeconds`, additional tolerations, removed scheduling gates (and, while
//! gated, additions to the node selector), a negative grace period fixed to 1. Anything else
//! in the spec is refused with upstream's "pod updates may not change fields other than ..."
//! message, followed by the changed paths.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, Toleration};
use serde_json::Value;

use super::validation::{validate_pod_spec, validate_tolerations};
use crate::field::{FieldError, forbidden, invalid, required};

/// The fields named in the refusal message, as upstream words them.
pub const UPDATABLE_POD_SPEC_FIELDS: &[&str] = &[
    "`spec.containers[*].image`",
    "`spec.initContainers[*].image`",
    "`spec.activeDeadlineSeconds`",
    "`spec.tolerations` (only additions to existing tolerations)",
    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
];

fn container_updates(new: &[Container], old: &[Container], path: &str) -> (Vec<FieldError>, bool) {
    let mut errs = Vec::new();
    if new.len() != old.len() {
        errs.push(forbidden(
            path,
            "pod updates may not add or remove containers",
        ));
        return (errs, true);
    }
    for (i, c) in new.iter().enumerate() {
        let image = c.image.as_deref().unwrap_or_default();
        if image.is_empty() {
            errs.push(required(&format!("{path}[{i}].image"), ""));
        }
        if image.trim() != image {
            errs.push(invalid(
                &format!("{path}[{i}].image"),
                image,
                "must not have leading or trailing whitespace",
            ));
        }
    }
    (errs, false)
}

fn only_added_tolerations(new: &[Toleration], old: &[Toleration], path: &str) -> Vec<FieldError> {
    for o in old {
        let found = new.iter().any(|n| {
            let mut o = o.clone();
            o.toleration_seconds = n.toleration_seconds;
            &o == n
        });
        if !found {
            return vec![forbidden(
                path,
                "existing toleration can not be modified except its tolerationSeconds",
            )];
        }
    }
    validate_tolerations(new, path)
}

/// Checks an update of a pod's spec (`new` and `old` defaulted; metadata is checked
/// generically).
pub fn validate_pod_update(new: &Pod, old: &Pod) -> Vec<FieldError> {
    let empty = PodSpec::default();
    let new_spec = new.spec.as_ref().unwrap_or(&empty);
    let old_spec = old.spec.as_ref().unwrap_or(&empty);
    let mut errs = validate_pod_spec(new_spec, "spec");

    let (e, stop) = container_updates(
        &new_spec.containers,
        &old_spec.containers,
        "spec.containers",
    );
    errs.extend(e);
    if stop {
        return errs;
    }
    let (e, stop) = container_updates(
        new_spec.init_containers.as_deref().unwrap_or_default(),
        old_spec.init_containers.as_deref().unwrap_or_default(),
        "spec.initContainers",
    );
    errs.extend(e);
    if stop {
        return errs;
    }

    match (
        new_spec.active_deadline_seconds,
        old_spec.active_deadline_seconds,
    ) {
        (Some(n), _) if !(0..=i64::from(i32::MAX)).contains(&n) => {
            errs.push(invalid(
                "spec.activeDeadlineSeconds",
                n,
                "must be between 0 and 2147483647, inclusive",
            ));
            return errs;
        }
        (Some(n), Some(o)) if o < n => {
            errs.push(invalid(
                "spec.activeDeadlineSeconds",
                n,
                "must be less than or equal to previous value",
            ));
            return errs;
        }
        (None, Some(_)) => errs.push(invalid(
            "spec.activeDeadlineSeconds",
            crate::field::Shown::Raw("null".to_string()),
            "must not update from a positive integer to nil value",
        )),
        _ => {}
    }

    let new_tolerations = new_spec.tolerations.as_deref().unwrap_or_default();
    let old_tolerations = old_spec.tolerations.as_deref().unwrap_or_default();
    errs.extend(only_added_tolerations(
        new_tolerations,
        old_tolerations,
        "spec.tolerations",
    ));

    let old_gates = old_spec.scheduling_gates.as_deref().unwrap_or_default();
    for gate in new_spec.scheduling_gates.iter().flatten() {
        if !old_gates.iter().any(|g| g.name == gate.name) {
            errs.push(forbidden(
                "spec.schedulingGates",
                &format!(
                    "only deletion is allowed, but found new scheduling gate '{}'",
                    gate.name
                ),
            ));
        }
    }

    if new_spec == old_spec {
        return errs;
    }

    // Munge the updatable fields back to their old values, then compare what is left.
    let mut munged = new_spec.clone();
    for (c, o) in munged.containers.iter_mut().zip(&old_spec.containers) {
        c.image.clone_from(&o.image);
    }
    if let (Some(new_init), Some(old_init)) = (
        munged.init_containers.as_mut(),
        old_spec.init_containers.as_ref(),
    ) {
        for (c, o) in new_init.iter_mut().zip(old_init) {
            c.image.clone_from(&o.image);
        }
    }
    munged.active_deadline_seconds = old_spec.active_deadline_seconds;
    munged
        .scheduling_gates
        .clone_from(&old_spec.scheduling_gates);
    munged.tolerations.clone_from(&old_spec.tolerations);
    if old_spec
        .termination_grace_period_seconds
        .is_some_and(|g| g < 0)
        && munged.termination_grace_period_seconds == Some(1)
    {
        munged.termination_grace_period_seconds = old_spec.termination_grace_period_seconds;
    }
    if !old_gates.is_empty() && munged.node_selector != old_spec.node_selector {
        errs.extend(node_selector_additions(
            munged.node_selector.as_ref(),
            old_spec.node_selector.as_ref(),
        ));
        munged.node_selector.clone_from(&old_spec.node_selector);
    }

    if &munged != old_spec {
        let changed = changed_paths(old_spec, &munged);
        errs.push(forbidden(
            "spec",
            &format!(
                "pod updates may not change fields other than {}\n{}",
                UPDATABLE_POD_SPEC_FIELDS.join(","),
                changed.join("\n")
            ),
        ));
    }
    errs
}

fn node_selector_additions(
    new: Option<&BTreeMap<String, String>>,
    old: Option<&BTreeMap<String, String>>,
) -> Vec<FieldError> {
    let new = new.cloned().unwrap_or_default();
    let kept = old
        .into_iter()
        .flatten()
        .all(|(k, v)| new.get(k) == Some(v));
    if kept {
        Vec::new()
    } else {
        vec![invalid(
            "spec.nodeSelector",
            crate::meta::show_string_map(Some(&new)),
            "only additions to spec.nodeSelector are allowed (no mutations or deletions)",
        )]
    }
}

/// The JSON paths where two specs differ, as `-`/`+` lines (our stand-in for upstream's
/// `cmp.Diff` output).
fn changed_paths(old: &PodSpec, new: &PodSpec) -> Vec<String> {
    let old = serde_json::to_value(old).unwrap_or(Value::Null);
    let new = serde_json::to_value(new).unwrap_or(Value::Null);
    let mut out = Vec::new();
    diff("spec", &old, &new, &mut out);
    out
}

fn diff(path: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let null = Value::Null;
                diff(
                    &format!("{path}.{k}"),
                    a.get(k).unwrap_or(&null),
                    b.get(k).unwrap_or(&null),
                    out,
                );
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff(&format!("{path}[{i}]"), x, y, out);
            }
        }
        (a, b) if a != b => {
            out.push(format!("- {path}: {a}"));
            out.push(format!("+ {path}: {b}"));
        }
        _ => {}
    }
}
