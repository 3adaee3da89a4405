//! The deletion status conditions of a terminating namespace, with upstream's types,
//! reasons and messages: each condition is `True` with a failure reason while something is
//! wrong or left, else `False` with its "ok" reason.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NamespaceCondition, NamespaceStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// (type, ok reason, ok message), in upstream's order.
const CONDITIONS: [(&str, &str, &str); 5] = [
    (
        "NamespaceDeletionDiscoveryFailure",
        "ResourcesDiscovered",
        "All resources successfully discovered",
    ),
    (
        "NamespaceDeletionGroupVersionParsingFailure",
        "ParsedGroupVersions",
        "All legacy kube types successfully parsed",
    ),
    (
        "NamespaceDeletionContentFailure",
        "ContentDeleted",
        "All content successfully deleted, may be waiting on finalization",
    ),
    (
        "NamespaceContentRemaining",
        "ContentRemoved",
        "All content successfully removed",
    ),
    (
        "NamespaceFinalizersRemaining",
        "ContentHasNoFinalizers",
        "All content-preserving finalizers finished",
    ),
];

/// A failing condition: (type, reason, message).
type Failing = (&'static str, String, String);

/// The failing conditions given what the pass saw.
pub(super) fn wanted(
    discovery_failures: &[(String, String)],
    delete_failures: &[String],
    remaining: &BTreeMap<String, usize>,
    by_finalizer: &BTreeMap<String, usize>,
) -> Vec<Failing> {
    let mut failing = Vec::new();
    if !discovery_failures.is_empty() {
        let groups: Vec<String> = discovery_failures
            .iter()
            .map(|(gv, err)| format!("{gv}: {err}"))
            .collect();
        failing.push((
            "NamespaceDeletionDiscoveryFailure",
            "DiscoveryFailed".to_string(),
            format!(
                "Discovery failed for some groups, {} failing: unable to retrieve the complete list of server APIs: {}",
                discovery_failures.len(),
                groups.join(", ")
            ),
        ));
    }
    if !delete_failures.is_empty() {
        let mut errors = delete_failures.to_vec();
        errors.sort();
        failing.push((
            "NamespaceDeletionContentFailure",
            "ContentDeletionFailed".to_string(),
            format!(
                "Failed to delete all resource types, {} remaining: {}",
                errors.len(),
                errors.join(", ")
            ),
        ));
    }
    if !remaining.is_empty() {
        // BTreeMap iteration is sorted, as upstream sorts the strings.
        let mut parts: Vec<String> = remaining
            .iter()
            .map(|(gr, n)| format!("{gr} has {n} resource instances"))
            .collect();
        parts.sort();
        failing.push((
            "NamespaceContentRemaining",
            "SomeResourcesRemain".to_string(),
            format!("Some resources are remaining: {}", parts.join(", ")),
        ));
    }
    if !by_finalizer.is_empty() {
        let mut parts: Vec<String> = by_finalizer
            .iter()
            .map(|(f, n)| format!("{f} in {n} resource instances"))
            .collect();
        parts.sort();
        failing.push((
            "NamespaceFinalizersRemaining",
            "SomeFinalizerRemain".to_string(),
            format!("Some finalizers are remaining: {}", parts.join(", ")),
        ));
    }
    failing
}

/// Bring `status.conditions` in line with `failing` (every other managed condition set to
/// its ok variant). The transition time moves only when the status flips. Returns whether
/// anything changed.
pub(super) fn apply(status: &mut NamespaceStatus, failing: &[Failing], now: Timestamp) -> bool {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let mut changed = false;
    for (type_, ok_reason, ok_message) in CONDITIONS {
        let (state, reason, message) = match failing.iter().find(|(t, _, _)| *t == type_) {
            Some((_, reason, message)) => ("True", reason.clone(), message.clone()),
            None => ("False", ok_reason.to_string(), ok_message.to_string()),
        };
        match conditions.iter_mut().find(|c| c.type_ == type_) {
            None => {
                conditions.push(NamespaceCondition {
                    type_: type_.to_string(),
                    status: state.to_string(),
                    reason: Some(reason),
                    message: Some(message),
                    last_transition_time: Some(Time(now)),
                });
                changed = true;
            }
            Some(c) => {
                if c.status != state
                    || c.reason.as_deref() != Some(reason.as_str())
                    || c.message.as_deref() != Some(message.as_str())
                {
                    if c.status != state {
                        c.last_transition_time = Some(Time(now));
                    }
                    c.status = state.to_string();
                    c.reason = Some(reason);
                    c.message = Some(message);
                    changed = true;
                }
            }
        }
    }
    changed
}
