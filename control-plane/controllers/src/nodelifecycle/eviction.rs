//! Taint-based eviction (upstream `tainteviction`): a pod bound to a node with `NoExecute`
//! taints it does not tolerate is deleted at once; one that tolerates them for
//! `tolerationSeconds` is deleted when that runs out, counted from the taint's `timeAdded`.
//! Before deleting, the pod gets a `DisruptionTarget` condition saying why.

use k8s_openapi::api::core::v1::{Node, Pod, PodCondition, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::json;

pub use kwk_api::taints::tolerates;

use super::Plan;
use crate::action::{Action, EventType};

/// When `pod` must go given the node's `NoExecute` `taints`: now if one is not tolerated,
/// `None` if all are tolerated forever, else the earliest `timeAdded + tolerationSeconds`.
fn eviction_time(pod: &Pod, taints: &[&Taint], now: Timestamp) -> Option<Timestamp> {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default();
    let mut earliest: Option<Timestamp> = None;
    for taint in taints {
        // The first toleration that matches decides, as upstream.
        let Some(toleration) = tolerations.iter().find(|t| tolerates(t, taint)) else {
            return Some(now);
        };
        let Some(seconds) = toleration.toleration_seconds else {
            continue;
        };
        let added = taint.time_added.as_ref().map_or(now, |Time(t)| *t);
        let due = if seconds <= 0 {
            now
        } else {
            added
                .saturating_add(SignedDuration::from_secs(seconds))
                .unwrap_or(Timestamp::MAX)
        };
        earliest = Some(earliest.map_or(due, |e| e.min(due)));
    }
    earliest
}

/// Evictions for the pods bound to `node`, appended to `plan`.
pub(super) fn plan_node(node: &Node, pods: &[Pod], now: Timestamp, plan: &mut Plan) {
    let Some(name) = node.metadata.name.as_deref() else {
        return;
    };
    let taints: Vec<&Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
        .iter()
        .filter(|t| t.effect == "NoExecute")
        .collect();
    if taints.is_empty() {
        return;
    }
    for pod in pods {
        if pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(name)
            || pod.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let Some(due) = eviction_time(pod, &taints, now) else {
            continue;
        };
        if due > now {
            plan.requeue_at(due, now);
            continue;
        }
        evict(pod, now, plan);
    }
}

/// The event, the `DisruptionTarget` condition and the delete for one pod.
fn evict(pod: &Pod, now: Timestamp, plan: &mut Plan) {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    plan.actions.push(Action::event(
        pod,
        EventType::Normal,
        "TaintManagerEviction",
        format!("Marking for deletion Pod {namespace}/{name}"),
    ));
    let mut conditions: Vec<PodCondition> = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let wanted = PodCondition {
        type_: "DisruptionTarget".into(),
        status: "True".into(),
        reason: Some("DeletionByTaintManager".into()),
        message: Some("Taint manager: deleting due to NoExecute taint".into()),
        last_transition_time: Some(Time(now)),
        ..PodCondition::default()
    };
    let needs_condition = match conditions.iter_mut().find(|c| c.type_ == wanted.type_) {
        Some(c)
            if c.status == wanted.status
                && c.reason == wanted.reason
                && c.message == wanted.message =>
        {
            false
        }
        Some(c) => {
            if c.status != wanted.status {
                c.last_transition_time = wanted.last_transition_time.clone();
            }
            c.status = wanted.status.clone();
            c.reason = wanted.reason.clone();
            c.message = wanted.message.clone();
            true
        }
        None => {
            conditions.push(wanted);
            true
        }
    };
    if needs_condition {
        plan.actions.push(Action::patch(
            pod,
            Some("status"),
            json!({
                "metadata": { "resourceVersion": pod.metadata.resource_version },
                "status": { "conditions": conditions },
            }),
        ));
    }
    plan.actions.push(Action::delete(pod, None));
}
