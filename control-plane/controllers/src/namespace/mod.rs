//! The namespace controller (upstream `pkg/controller/namespace`, the deleter): for a
//! namespace being deleted it owns the `Terminating` phase, the deletion status
//! conditions, the deletion of everything in the namespace (pods first, as with upstream's
//! `OrderedNamespaceDeletion`), and, once nothing is left, the removal of the `kubernetes`
//! finalizer through the `finalize` subresource.

mod conditions;
pub mod controller;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::{Metadata, Resource};
use serde_json::json;

use crate::action::{Action, ObjectRef, Propagation};
use crate::common::is_terminal;
use crate::garbagecollector::group_of;

/// The finalizer this controller removes when the namespace is empty.
pub const FINALIZER_KUBERNETES: &str = "kubernetes";
/// How long upstream assumes an object's finalizers take.
const FINALIZER_ESTIMATE_SECONDS: i64 = 15;

/// One object still in the namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    pub target: ObjectRef,
    pub finalizers: Vec<String>,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// For pods that have not finished: `spec.terminationGracePeriodSeconds`.
    pub grace_period_seconds: Option<i64>,
}

impl Content {
    /// The content entry of a typed object.
    pub fn of<K>(object: &K) -> Self
    where
        K: Resource + Metadata<Ty = ObjectMeta>,
    {
        Self::from_meta(ObjectRef::of(object), object.metadata())
    }

    /// The content entry of an object of any kind (a dynamic object's metadata).
    pub fn from_meta(target: ObjectRef, meta: &ObjectMeta) -> Self {
        Content {
            target,
            finalizers: meta.finalizers.clone().unwrap_or_default(),
            deleting: meta.deletion_timestamp.is_some(),
            grace_period_seconds: None,
        }
    }

    /// A pod, with its termination grace period while it runs.
    pub fn of_pod(pod: &Pod) -> Self {
        let mut content = Self::of(pod);
        if !is_terminal(pod) {
            content.grace_period_seconds = Some(
                pod.spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
                    .unwrap_or(30),
            );
        }
        content
    }

    fn is_pod(&self) -> bool {
        self.target.kind == "Pod" && self.target.api_version == "v1"
    }

    /// `pods.`, `deployments.apps`: how upstream names a resource in its conditions.
    fn group_resource(&self) -> String {
        format!(
            "{}.{}",
            self.target.plural,
            group_of(&self.target.api_version)
        )
    }
}

/// What the controller saw besides the namespace's content.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed<'a> {
    /// Everything still in the namespace, of every deletable namespaced kind.
    pub content: &'a [Content],
    /// Group versions whose discovery failed, with the error.
    pub discovery_failures: &'a [(String, String)],
    /// Errors of the previous pass's deletions (by resource), if the runtime kept them.
    pub delete_failures: &'a [String],
}

/// What one pass over a terminating namespace asks for.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// Check again after this long (upstream: half the remaining estimate, plus a second).
    pub requeue_after: Option<Duration>,
}

/// One pass of the namespace deleter over `namespace` and what is left in it.
pub fn plan(namespace: &Namespace, observed: &Observed<'_>, now: Timestamp) -> Plan {
    let mut plan = Plan::default();
    let Some(deleted_at) = namespace.metadata.deletion_timestamp.as_ref() else {
        return plan;
    };
    let finalizers: Vec<String> = namespace
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.clone())
        .unwrap_or_default();
    let finalized = finalizers.is_empty();

    // Pods go first; the rest waits until they are gone.
    let pods_remain = observed.content.iter().any(Content::is_pod);
    let in_scope: Vec<&Content> = observed
        .content
        .iter()
        .filter(|c| !pods_remain || c.is_pod())
        .collect();

    // What is left once this pass's deletes land: objects with finalizers, and pods
    // (graceful); the rest goes at once.
    let lingering: Vec<&Content> = in_scope
        .iter()
        .copied()
        .filter(|c| !c.finalizers.is_empty() || c.is_pod())
        .collect();

    let mut status = namespace.status.clone().unwrap_or_default();
    let mut status_changed = status.phase.as_deref() != Some("Terminating");
    status.phase = Some("Terminating".into());
    if !finalized {
        let mut remaining: BTreeMap<String, usize> = BTreeMap::new();
        let mut by_finalizer: BTreeMap<String, usize> = BTreeMap::new();
        for c in &lingering {
            *remaining.entry(c.group_resource()).or_default() += 1;
            for f in &c.finalizers {
                *by_finalizer.entry(f.clone()).or_default() += 1;
            }
        }
        let wanted = conditions::wanted(
            observed.discovery_failures,
            observed.delete_failures,
            &remaining,
            &by_finalizer,
        );
        status_changed |= conditions::apply(&mut status, &wanted, now);
    }
    if status_changed {
        let mut updated = namespace.clone();
        updated.status = Some(status);
        plan.actions.push(Action::update_status(&updated));
    }
    if finalized {
        return plan;
    }

    for content in &in_scope {
        if !content.deleting {
            // Background, as upstream: never leave orphans behind in a dying namespace.
            plan.actions.push(Action::Delete {
                target: content.target.clone(),
                propagation: Some(Propagation::Background),
                grace_period_seconds: None,
            });
        }
    }

    if !observed.discovery_failures.is_empty() {
        // Content of the undiscovered kinds may remain: never finalize, try again soon.
        plan.requeue_after = Some(Duration::from_secs(1));
        if observed.content.is_empty() {
            return plan;
        }
    }
    if observed.content.is_empty() {
        if finalizers.iter().any(|f| f == FINALIZER_KUBERNETES) {
            let mut kept: Vec<&String> = finalizers
                .iter()
                .filter(|f| *f != FINALIZER_KUBERNETES)
                .collect();
            kept.sort();
            kept.dedup();
            plan.actions.push(Action::patch(
                namespace,
                Some("finalize"),
                json!({ "spec": { "finalizers": kept } }),
            ));
        }
        return plan;
    }

    // Re-check while content remains: half the estimate, plus a second.
    let mut estimate: i64 = 0;
    if lingering.iter().any(|c| !c.finalizers.is_empty()) {
        estimate = FINALIZER_ESTIMATE_SECONDS;
    }
    let pod_grace = in_scope
        .iter()
        .filter_map(|c| c.grace_period_seconds)
        .max()
        .unwrap_or(0);
    let since_deletion = now.duration_since(deleted_at.0).as_secs();
    if since_deletion < pod_grace {
        estimate = estimate.max(pod_grace);
    }
    let seconds = u64::try_from(estimate / 2 + 1).unwrap_or(1);
    let wait = Duration::from_secs(seconds);
    plan.requeue_after = Some(plan.requeue_after.map_or(wait, |w| w.min(wait)));
    plan
}
