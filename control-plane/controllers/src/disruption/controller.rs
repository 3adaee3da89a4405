//! The disruption controller wired to the runtime. Two kinds of keys: one per
//! PodDisruptionBudget (its status, [`super::plan`]), and one per pod carrying a
//! `DisruptionTarget` condition (`<namespace>/pod/<name>`, [`super::plan_stale_pod_disruption`]).
//! A budget is reconciled when it changes, and when a pod, Deployment, ReplicaSet or
//! StatefulSet of its namespace changes (the pods it selects, old labels included, and the
//! scales that make its expected count). Each plan's `recheck_at` becomes a requeue.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;

use super::{CONDITION_DISRUPTION_TARGET, ControllerScale, DisruptionPlan, ScaleInfo};
use crate::common::controller_of;
use crate::runtime::{Controller, ObjectKey, Plan, Watches};
use crate::statefulset::controller::{in_namespace, keys_in_namespace};

/// The prefix of pod keys (a budget's name cannot contain `/`).
const POD_KEY_PREFIX: &str = "pod/";

fn pod_key(pod: &Pod) -> ObjectKey {
    ObjectKey {
        namespace: pod.metadata.namespace.clone(),
        name: format!(
            "{POD_KEY_PREFIX}{}",
            pod.metadata.name.as_deref().unwrap_or_default()
        ),
    }
}

/// Whether the pod carries a `DisruptionTarget` condition that is `True`.
fn has_disruption_target(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == CONDITION_DISRUPTION_TARGET && c.status == "True")
}

/// The scales of the controllers of `pods`: a ReplicaSet's pods count its Deployment's
/// replicas when a Deployment controls it, otherwise its own; a StatefulSet's its own.
/// Controllers missing from the stores are left out (the planner reports them).
pub fn scale_info(
    pods: &[Pod],
    deployments: &[Deployment],
    replica_sets: &[ReplicaSet],
    stateful_sets: &[StatefulSet],
) -> ScaleInfo {
    fn uid(meta: &ObjectMeta) -> &str {
        meta.uid.as_deref().unwrap_or_default()
    }
    let mut info = ScaleInfo::default();
    for pod in pods {
        let Some(owner) = controller_of(&pod.metadata) else {
            continue;
        };
        let scale = match owner.kind.as_str() {
            "ReplicaSet" => replica_sets
                .iter()
                .find(|rs| uid(&rs.metadata) == owner.uid)
                .map(|rs| {
                    let deployment = controller_of(&rs.metadata)
                        .filter(|r| r.kind == "Deployment")
                        .and_then(|r| deployments.iter().find(|d| uid(&d.metadata) == r.uid));
                    match deployment {
                        Some(d) => ControllerScale {
                            scale_owner_uid: uid(&d.metadata).to_string(),
                            expected: d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                        },
                        None => ControllerScale {
                            scale_owner_uid: owner.uid.clone(),
                            expected: rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                        },
                    }
                }),
            "StatefulSet" => stateful_sets
                .iter()
                .find(|s| uid(&s.metadata) == owner.uid)
                .map(|s| ControllerScale {
                    scale_owner_uid: owner.uid.clone(),
                    expected: s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                }),
            _ => None,
        };
        if let Some(scale) = scale {
            info.by_controller_uid.insert(owner.uid.clone(), scale);
        }
    }
    info
}

/// The runtime plan of a disruption plan made at `now`.
fn to_plan(planned: DisruptionPlan, now: Timestamp) -> Plan {
    let requeue_after = planned.recheck_at.map(|at| {
        let wait = now.duration_until(at);
        Duration::try_from(wait).unwrap_or_default() + Duration::from_millis(100)
    });
    Plan {
        actions: planned.actions,
        requeue_after,
    }
}

/// The keys of every budget in the namespace of `meta`.
fn budgets_of<K>(budgets: &Store<PodDisruptionBudget>) -> impl Fn(&K) -> Vec<ObjectKey> + use<K>
where
    K: kube::Resource,
{
    let budgets = budgets.clone();
    move |object: &K| keys_in_namespace(&budgets, object.meta())
}

/// The disruption controller: one key per budget, and per pod with a `DisruptionTarget`.
pub fn controller(client: &kube::Client) -> Controller {
    let mut watches = Watches::new(client.clone());
    let budgets = watches.watch(
        Api::<PodDisruptionBudget>::all(client.clone()),
        watcher::Config::default(),
        |pdb| vec![ObjectKey::of(pdb)],
    );
    let of_pod = budgets_of::<Pod>(&budgets);
    let pods = watches.watch(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default(),
        move |pod| {
            let mut keys = of_pod(pod);
            if has_disruption_target(pod) {
                keys.push(pod_key(pod));
            }
            keys
        },
    );
    let deployments = watches.watch(
        Api::<Deployment>::all(client.clone()),
        watcher::Config::default(),
        budgets_of::<Deployment>(&budgets),
    );
    let replica_sets = watches.watch(
        Api::<ReplicaSet>::all(client.clone()),
        watcher::Config::default(),
        budgets_of::<ReplicaSet>(&budgets),
    );
    let stateful_sets = watches.watch(
        Api::<StatefulSet>::all(client.clone()),
        watcher::Config::default(),
        budgets_of::<StatefulSet>(&budgets),
    );
    Controller::new("disruption", watches, move |key| {
        let now = Timestamp::now();
        if let Some(pod_name) = key.name.strip_prefix(POD_KEY_PREFIX) {
            let pod_ref = ObjectKey {
                namespace: key.namespace.clone(),
                name: pod_name.to_string(),
            };
            return match pods.get(&pod_ref.store_ref()) {
                Some(pod) => to_plan(super::plan_stale_pod_disruption(&pod, now), now),
                None => Plan::default(),
            };
        }
        let Some(pdb) = budgets.get(&key.store_ref()) else {
            return Plan::default();
        };
        let namespace = pdb.metadata.namespace.as_ref();
        let namespace_pods = in_namespace(&pods, namespace);
        let scales = scale_info(
            &namespace_pods,
            &in_namespace(&deployments, namespace),
            &in_namespace(&replica_sets, namespace),
            &in_namespace(&stateful_sets, namespace),
        );
        to_plan(super::plan(&pdb, &namespace_pods, &scales, now), now)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, ReplicaSetSpec, StatefulSetSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn meta(name: &str, uid: &str, controller: Option<(&str, &str)>) -> ObjectMeta {
        ObjectMeta {
            namespace: Some("ns".into()),
            name: Some(name.into()),
            uid: Some(uid.into()),
            owner_references: controller.map(|(kind, uid)| {
                vec![OwnerReference {
                    kind: kind.into(),
                    uid: uid.into(),
                    controller: Some(true),
                    ..OwnerReference::default()
                }]
            }),
            ..ObjectMeta::default()
        }
    }

    fn pod(name: &str, controller: Option<(&str, &str)>) -> Pod {
        Pod {
            metadata: meta(name, &format!("pod-{name}"), controller),
            ..Pod::default()
        }
    }

    fn rs(uid: &str, replicas: i32, deployment: Option<&str>) -> ReplicaSet {
        ReplicaSet {
            metadata: meta(uid, uid, deployment.map(|d| ("Deployment", d))),
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                ..ReplicaSetSpec::default()
            }),
            ..ReplicaSet::default()
        }
    }

    fn scale(owner: &str, expected: i32) -> ControllerScale {
        ControllerScale {
            scale_owner_uid: owner.into(),
            expected,
        }
    }

    #[test]
    fn scales_resolve_replica_sets_through_their_deployment() {
        let deployment = Deployment {
            metadata: meta("d", "d", None),
            spec: Some(DeploymentSpec {
                replicas: Some(5),
                ..DeploymentSpec::default()
            }),
            ..Deployment::default()
        };
        let set = StatefulSet {
            metadata: meta("s", "s", None),
            spec: Some(StatefulSetSpec {
                replicas: Some(2),
                ..StatefulSetSpec::default()
            }),
            ..StatefulSet::default()
        };
        let pods = [
            pod("a", Some(("ReplicaSet", "rs-old"))),
            pod("b", Some(("ReplicaSet", "rs-new"))),
            pod("c", Some(("ReplicaSet", "rs-alone"))),
            pod("d", Some(("StatefulSet", "s"))),
            pod("e", Some(("ReplicaSet", "rs-missing"))),
            pod("f", None),
        ];
        let sets = [
            rs("rs-old", 1, Some("d")),
            rs("rs-new", 4, Some("d")),
            rs("rs-alone", 3, None),
        ];
        let info = scale_info(&pods, &[deployment], &sets, &[set]);
        let want: Vec<(&str, ControllerScale)> = vec![
            ("rs-alone", scale("rs-alone", 3)),
            ("rs-new", scale("d", 5)),
            ("rs-old", scale("d", 5)),
            ("s", scale("s", 2)),
        ];
        let got: Vec<(&str, ControllerScale)> = info
            .by_controller_uid
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn recheck_at_becomes_a_requeue() {
        let now = Timestamp::UNIX_EPOCH;
        let later = now
            .saturating_add(k8s_openapi::jiff::SignedDuration::from_secs(30))
            .expect("in range");
        let plan = to_plan(
            DisruptionPlan {
                actions: Vec::new(),
                recheck_at: Some(later),
            },
            now,
        );
        let wait = plan.requeue_after.expect("requeue");
        assert!(
            wait >= Duration::from_secs(30) && wait < Duration::from_secs(31),
            "{wait:?}"
        );
        let none = to_plan(
            DisruptionPlan {
                actions: Vec::new(),
                recheck_at: None,
            },
            now,
        );
        assert_eq!(none.requeue_after, None);
    }
}
