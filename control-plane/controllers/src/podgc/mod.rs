//! The pod garbage collector's planner: which pods to force-delete — terminated pods beyond
//! the `--terminated-pod-gc-threshold`, pods terminating on nodes tainted out of service,
//! pods bound to nodes that no longer exist (after a quarantine), and terminating pods that
//! were never scheduled. A pod that has not finished is first marked `Failed` (with a
//! `DisruptionTarget` condition when its node is gone) so nothing reads it as running.

pub mod controller;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Node, Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::action::Action;
use crate::common::is_terminal;

/// Upstream's default `--terminated-pod-gc-threshold`.
pub const DEFAULT_TERMINATED_POD_THRESHOLD: usize = 12_500;
/// How long a node must stay missing before its pods count as orphaned (upstream's
/// quarantine: a node being re-registered must not lose its pods).
pub const ORPHAN_QUARANTINE: SignedDuration = SignedDuration::from_secs(40);
/// How often upstream runs the collector.
pub const GC_CHECK_PERIOD: SignedDuration = SignedDuration::from_secs(20);
/// The taint that lets terminating pods on a dead node go.
pub const TAINT_OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";
/// The condition put on orphaned pods before they are deleted.
pub const CONDITION_DISRUPTION_TARGET: &str = "DisruptionTarget";
/// Its reason.
pub const REASON_DELETION_BY_POD_GC: &str = "DeletionByPodGC";
/// Its message.
pub const MESSAGE_NODE_GONE: &str = "PodGC: node no longer exists";

/// The nodes `pods` are bound to that are not in `nodes`. The caller records when it first
/// saw each missing (and forgets those that came back) and passes that to [`plan`] as
/// `missing_since`.
pub fn missing_nodes(pods: &[Pod], nodes: &[Node]) -> BTreeSet<String> {
    let existing: BTreeSet<&str> = nodes
        .iter()
        .filter_map(|n| n.metadata.name.as_deref())
        .collect();
    pods.iter()
        .filter_map(|p| node_name(p))
        .filter(|n| !existing.contains(n))
        .map(String::from)
        .collect()
}

/// The writes of one collection pass over all `pods`.
///
/// `terminated_threshold` 0 disables the collection of terminated pods. `missing_since`
/// maps a missing node's name to when it was first seen missing (see [`missing_nodes`]);
/// its pods are orphaned once it has been missing for [`ORPHAN_QUARANTINE`] (upstream also
/// confirms with a live GET of the node; the caller may do the same before executing).
///
/// Every collected pod gets a force delete ([`Action::force_delete`],
/// `gracePeriodSeconds: 0`); pods that have not finished get an
/// [`Action::UpdateStatus`] to `Failed` right before it. Each pod is collected once.
pub fn plan(
    pods: &[Pod],
    nodes: &[Node],
    terminated_threshold: usize,
    missing_since: &BTreeMap<String, Timestamp>,
    now: Timestamp,
) -> Vec<Action> {
    let nodes_by_name: BTreeMap<&str, &Node> = nodes
        .iter()
        .filter_map(|n| Some((n.metadata.name.as_deref()?, n)))
        .collect();
    let mut collector = Collector::default();

    // 1. Terminated pods beyond the threshold, evicted then oldest first.
    if terminated_threshold > 0 {
        let mut terminated: Vec<&Pod> = pods.iter().filter(|p| is_terminal(p)).collect();
        if terminated.len() > terminated_threshold {
            terminated.sort_by(|a, b| deletion_order(a, b));
            let surplus = terminated.len() - terminated_threshold;
            for pod in terminated.into_iter().take(surplus) {
                collector.collect(pod, None, now);
            }
        }
    }

    // 2. Terminating pods on nodes that are not ready and tainted out of service.
    let mut stranded: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_some())
        .filter(|p| {
            node_name(p)
                .and_then(|n| nodes_by_name.get(n))
                .is_some_and(|n| is_out_of_service(n))
        })
        .collect();
    stranded.sort_by(|a, b| deletion_order(a, b));
    for pod in stranded {
        collector.collect(pod, None, now);
    }

    // 3. Pods on nodes that have been gone for the quarantine.
    for pod in pods {
        let Some(node) = node_name(pod) else {
            continue;
        };
        if nodes_by_name.contains_key(node) {
            continue;
        }
        let quarantined = missing_since.get(node).is_some_and(|since| {
            since
                .saturating_add(ORPHAN_QUARANTINE)
                .is_ok_and(|t| t <= now)
        });
        if quarantined {
            let condition = PodCondition {
                type_: CONDITION_DISRUPTION_TARGET.into(),
                status: "True".into(),
                reason: Some(REASON_DELETION_BY_POD_GC.into()),
                message: Some(MESSAGE_NODE_GONE.into()),
                ..PodCondition::default()
            };
            collector.collect(pod, Some(condition), now);
        }
    }

    // 4. Terminating pods that were never scheduled (no kubelet will finish them).
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() && node_name(pod).is_none() {
            collector.collect(pod, None, now);
        }
    }
    collector.actions
}

/// The actions so far, and the pods they collect (each pod once).
#[derive(Debug, Default)]
struct Collector {
    actions: Vec<Action>,
    seen: BTreeSet<(Option<String>, Option<String>)>,
}

impl Collector {
    /// Marks `pod` failed (with `condition`) unless it finished, then deletes it.
    fn collect(&mut self, pod: &Pod, condition: Option<PodCondition>, now: Timestamp) {
        let key = (pod.metadata.namespace.clone(), pod.metadata.name.clone());
        if !self.seen.insert(key) {
            return;
        }
        if !is_terminal(pod) {
            let mut failed = pod.clone();
            let status = failed.status.get_or_insert_with(Default::default);
            status.phase = Some("Failed".into());
            if let Some(condition) = condition {
                upsert_condition(
                    status.conditions.get_or_insert_with(Vec::new),
                    condition,
                    now,
                );
            }
            self.actions.push(Action::update_status(&failed));
        }
        self.actions.push(Action::force_delete(pod));
    }
}

/// Sets `condition`, keeping the transition time when its status does not change.
fn upsert_condition(
    conditions: &mut Vec<PodCondition>,
    mut condition: PodCondition,
    now: Timestamp,
) {
    match conditions.iter_mut().find(|c| c.type_ == condition.type_) {
        Some(existing) => {
            condition.last_transition_time = if existing.status == condition.status {
                existing.last_transition_time.clone()
            } else {
                Some(Time(now))
            };
            condition.last_probe_time = existing.last_probe_time.clone();
            *existing = condition;
        }
        None => {
            condition.last_transition_time = Some(Time(now));
            conditions.push(condition);
        }
    }
}

fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

/// Not ready, and tainted `node.kubernetes.io/out-of-service` (any effect).
fn is_out_of_service(node: &Node) -> bool {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let tainted = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .any(|t| t.key == TAINT_OUT_OF_SERVICE);
    !ready && tainted
}

/// Failed with reason `Evicted`.
fn is_evicted(pod: &Pod) -> bool {
    pod.status.as_ref().is_some_and(|s| {
        s.phase.as_deref() == Some("Failed") && s.reason.as_deref() == Some("Evicted")
    })
}

/// Evicted pods first, then by creation time, then by name.
fn deletion_order(a: &Pod, b: &Pod) -> std::cmp::Ordering {
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|Time(t)| *t);
    is_evicted(b)
        .cmp(&is_evicted(a))
        .then_with(|| created(a).cmp(&created(b)))
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}
