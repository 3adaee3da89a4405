//! The replicaset controller's planner (upstream `pkg/controller/replicaset`): claims the
//! pods of a replica set (adopting selected orphans, releasing its pods that are no longer
//! selected), creates missing pods from the template, deletes surplus pods in upstream's
//! order, and keeps `status` (replicas, fullyLabeledReplicas, readyReplicas,
//! availableReplicas, observedGeneration) current.

pub mod claim;
pub mod controller;
pub mod delete_order;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;

use crate::action::{Action, EventType};
use crate::common::{controller_ref, is_active, is_available, is_ready};
use claim::{Claim, adopt_patch, claim, release_patch};

/// Upstream's `burstReplicas`: at most this many creates or deletes per pass.
pub const BURST_REPLICAS: usize = 500;

/// The writes that bring `rs` to its desired replicas. `pods` are the pods of the replica
/// set's namespace (others are ignored).
pub fn plan(rs: &ReplicaSet, pods: &[Pod], now: Timestamp) -> Vec<Action> {
    let mut actions = Vec::new();
    let owned = claim_pods(rs, pods, &mut actions);
    if rs.metadata.deletion_timestamp.is_none() {
        manage_replicas(rs, &owned, now, &mut actions);
    }
    if let Some(status) = status_update(rs, &owned, now) {
        let mut updated = rs.clone();
        updated.status = Some(status);
        actions.push(Action::update_status(&updated));
    }
    actions
}

/// The active pods `rs` owns after this pass's adoptions; plans the adopt and release
/// patches.
fn claim_pods<'a>(rs: &ReplicaSet, pods: &'a [Pod], actions: &mut Vec<Action>) -> Vec<&'a Pod> {
    let Some(selector) = rs.spec.as_ref().map(|s| &s.selector) else {
        return Vec::new();
    };
    let mut owned = Vec::new();
    for pod in pods
        .iter()
        .filter(|p| p.metadata.namespace == rs.metadata.namespace && is_active(p))
    {
        match claim(&rs.metadata, selector, &pod.metadata) {
            Claim::Owned => owned.push(pod),
            Claim::Adopt => {
                actions.push(Action::patch(
                    pod,
                    None,
                    adopt_patch(&pod.metadata, controller_ref(rs)),
                ));
                owned.push(pod);
            }
            Claim::Release => actions.push(Action::patch(
                pod,
                None,
                release_patch(
                    &pod.metadata,
                    rs.metadata.uid.as_deref().unwrap_or_default(),
                ),
            )),
            Claim::Ignore => {}
        }
    }
    owned
}

fn desired_replicas(rs: &ReplicaSet) -> usize {
    let replicas = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    usize::try_from(replicas).unwrap_or(0)
}

fn manage_replicas(rs: &ReplicaSet, owned: &[&Pod], now: Timestamp, actions: &mut Vec<Action>) {
    let desired = desired_replicas(rs);
    if owned.len() < desired {
        let count = (desired - owned.len()).min(BURST_REPLICAS);
        let pod = pod_from_template(rs);
        for _ in 0..count {
            actions.push(Action::create(&pod));
        }
    } else if owned.len() > desired {
        let count = (owned.len() - desired).min(BURST_REPLICAS);
        for pod in delete_order::pods_to_delete(owned, owned, count, now) {
            actions.push(Action::delete(pod, None));
            actions.push(Action::event(
                rs,
                EventType::Normal,
                "SuccessfulDelete",
                format!(
                    "Deleted pod: {}",
                    pod.metadata.name.as_deref().unwrap_or_default()
                ),
            ));
        }
    }
}

/// The pod `rs` creates (upstream's `GetPodFromTemplate`): the template's labels,
/// annotations, finalizers and spec, `generateName: <rs>-`, the controller reference.
pub fn pod_from_template(rs: &ReplicaSet) -> Pod {
    let template = rs.spec.as_ref().and_then(|s| s.template.clone());
    let template_meta = template
        .as_ref()
        .and_then(|t| t.metadata.clone())
        .unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!(
                "{}-",
                rs.metadata.name.as_deref().unwrap_or_default()
            )),
            namespace: rs.metadata.namespace.clone(),
            labels: template_meta.labels,
            annotations: template_meta.annotations,
            finalizers: template_meta.finalizers,
            owner_references: Some(vec![controller_ref(rs)]),
            ..ObjectMeta::default()
        },
        spec: template.and_then(|t| t.spec),
        status: None,
    }
}

/// The status `rs` should have given the pods it owns, `None` when the stored one is
/// already it.
fn status_update(rs: &ReplicaSet, owned: &[&Pod], now: Timestamp) -> Option<ReplicaSetStatus> {
    let template_labels: BTreeMap<String, String> = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let min_ready = rs
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0);
    let count = |f: &dyn Fn(&Pod) -> bool| {
        i32::try_from(owned.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX)
    };
    let fully_labeled = count(&|p: &Pod| {
        let labels = p.metadata.labels.as_ref();
        template_labels
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
    });
    let current = rs.status.clone().unwrap_or_default();
    let next = ReplicaSetStatus {
        replicas: count(&|_| true),
        fully_labeled_replicas: Some(fully_labeled),
        ready_replicas: Some(count(&is_ready)),
        available_replicas: Some(count(&|p: &Pod| is_available(p, min_ready, now))),
        observed_generation: rs.metadata.generation.or(current.observed_generation),
        ..current.clone()
    };
    let same = |a: Option<i32>, b: Option<i32>| a.unwrap_or(0) == b.unwrap_or(0);
    let unchanged = current.replicas == next.replicas
        && same(current.fully_labeled_replicas, next.fully_labeled_replicas)
        && same(current.ready_replicas, next.ready_replicas)
        && same(current.available_replicas, next.available_replicas)
        && current.observed_generation.unwrap_or(0) >= rs.metadata.generation.unwrap_or(0);
    (!unchanged).then_some(next)
}

/// When the planner should look at `rs` again although nothing changes: when a ready pod
/// becomes available after `minReadySeconds` (upstream requeues for that).
pub fn requeue_after(rs: &ReplicaSet, pods: &[Pod], now: Timestamp) -> Option<std::time::Duration> {
    let min_ready = rs
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0);
    if min_ready <= 0 {
        return None;
    }
    let uid = rs.metadata.uid.as_deref().unwrap_or_default();
    pods.iter()
        .filter(|p| is_active(p) && crate::common::is_controlled_by(&p.metadata, uid))
        .filter(|p| is_ready(p) && !is_available(p, min_ready, now))
        .map(|_| std::time::Duration::from_secs(u64::try_from(min_ready).unwrap_or(0)))
        .next()
}

#[cfg(test)]
mod tests;
