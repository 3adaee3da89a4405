use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{ReplicaSetSpec, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{
    ContainerStatus, PodCondition, PodSpec, PodStatus, PodTemplateSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference, Time};

use super::*;
use crate::action::ObjectRef;

fn ts(secs: i64) -> Timestamp {
    Timestamp::from_second(secs).expect("time")
}

const NOW: i64 = 100_000;

fn labels(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect(),
    )
}

fn replica_set(replicas: i32) -> ReplicaSet {
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            uid: Some("rs-uid".into()),
            generation: Some(1),
            resource_version: Some("7".into()),
            ..ObjectMeta::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: labels(&[("app", "web")]),
                ..LabelSelector::default()
            },
            template: Some(PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: labels(&[("app", "web"), ("tier", "front")]),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec::default()),
            }),
            min_ready_seconds: None,
        }),
        status: None,
    }
}

fn owner(uid: &str) -> Option<Vec<OwnerReference>> {
    Some(vec![OwnerReference {
        api_version: "apps/v1".into(),
        kind: "ReplicaSet".into(),
        name: "x".into(),
        uid: uid.into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }])
}

/// A pod of `rs-uid`, running and ready since `ready_at` on `node` (None: not ready).
fn pod(name: &str, node: &str, phase: &str, ready_at: Option<i64>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            labels: labels(&[("app", "web"), ("tier", "front")]),
            owner_references: owner("rs-uid"),
            creation_timestamp: Some(Time(ts(1_000))),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: (!node.is_empty()).then(|| node.to_string()),
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            phase: Some(phase.into()),
            conditions: ready_at.map(|t| {
                vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    last_transition_time: Some(Time(ts(t))),
                    ..PodCondition::default()
                }]
            }),
            ..PodStatus::default()
        }),
    }
}

fn running(name: &str) -> Pod {
    pod(name, "n1", "Running", Some(1_000))
}

fn creates(actions: &[Action]) -> Vec<&serde_json::Value> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Create { body, .. } => Some(body),
            _ => None,
        })
        .collect()
}

fn deleted(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Delete { target, .. } => Some(target.name.clone()),
            _ => None,
        })
        .collect()
}

fn patched(actions: &[Action]) -> Vec<(String, serde_json::Value)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Patch { target, patch, .. } => Some((target.name.clone(), patch.clone())),
            _ => None,
        })
        .collect()
}

fn status_of(actions: &[Action]) -> Option<ReplicaSetStatus> {
    actions.iter().find_map(|a| match a {
        Action::UpdateStatus { body, .. } => serde_json::from_value(body["status"].clone()).ok(),
        _ => None,
    })
}

#[test]
fn creates_missing_pods_from_the_template() {
    let rs = replica_set(3);
    let actions = plan(&rs, &[running("a")], ts(NOW));
    let bodies = creates(&actions);
    assert_eq!(bodies.len(), 2);
    let body = bodies[0];
    assert_eq!(body["metadata"]["generateName"], "web-");
    assert_eq!(body["metadata"]["namespace"], "default");
    assert_eq!(body["metadata"]["labels"]["tier"], "front");
    assert_eq!(body["metadata"]["ownerReferences"][0]["uid"], "rs-uid");
    assert_eq!(body["metadata"]["ownerReferences"][0]["controller"], true);
    assert_eq!(body["kind"], "Pod");
}

#[test]
fn creates_at_most_a_burst_per_pass() {
    let actions = plan(&replica_set(2_000), &[], ts(NOW));
    assert_eq!(creates(&actions).len(), BURST_REPLICAS);
}

#[test]
fn claims_pods_like_the_controller_ref_manager() {
    let mut orphan = running("orphan");
    orphan.metadata.owner_references = None;
    let mut unselected_orphan = running("stranger");
    unselected_orphan.metadata.owner_references = None;
    unselected_orphan.metadata.labels = labels(&[("app", "db")]);
    let mut relabeled = running("relabeled");
    relabeled.metadata.labels = labels(&[("app", "other")]);
    let mut foreign = running("foreign");
    foreign.metadata.owner_references = owner("someone-else");
    let mut other_namespace = running("elsewhere");
    other_namespace.metadata.namespace = Some("kube-system".into());
    other_namespace.metadata.owner_references = None;
    let pods = [
        running("mine"),
        orphan,
        unselected_orphan,
        relabeled,
        foreign,
        other_namespace,
    ];
    let actions = plan(&replica_set(2), &pods, ts(NOW));
    let patches = patched(&actions);
    let names: Vec<&str> = patches.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["orphan", "relabeled"]);
    assert_eq!(
        patches[0].1["metadata"]["ownerReferences"][0]["uid"],
        "rs-uid"
    );
    assert_eq!(patches[0].1["metadata"]["uid"], "uid-orphan");
    assert!(patches[1].1["metadata"]["ownerReferences"].is_null());
    // mine + the adopted orphan make 2: nothing to create or delete.
    assert!(creates(&actions).is_empty() && deleted(&actions).is_empty());
    assert_eq!(status_of(&actions).map(|s| s.replicas), Some(2));
}

#[test]
fn a_deleting_replica_set_neither_adopts_nor_scales() {
    let mut rs = replica_set(3);
    rs.metadata.deletion_timestamp = Some(Time(ts(NOW)));
    let mut orphan = running("orphan");
    orphan.metadata.owner_references = None;
    let actions = plan(&rs, &[running("a"), orphan], ts(NOW));
    assert!(patched(&actions).is_empty());
    assert!(creates(&actions).is_empty());
    assert_eq!(status_of(&actions).map(|s| s.replicas), Some(1));
}

#[test]
fn finished_and_deleting_pods_do_not_count() {
    let mut deleting = running("deleting");
    deleting.metadata.deletion_timestamp = Some(Time(ts(NOW)));
    let pods = [
        running("a"),
        pod("done", "n1", "Succeeded", None),
        pod("failed", "n1", "Failed", None),
        deleting,
    ];
    let actions = plan(&replica_set(2), &pods, ts(NOW));
    assert_eq!(creates(&actions).len(), 1);
    assert!(deleted(&actions).is_empty());
}

#[test]
fn deletes_surplus_pods_in_upstream_order() {
    let with_restarts = |name: &str, restarts: i32| {
        let mut p = running(name);
        if let Some(s) = p.status.as_mut() {
            s.container_statuses = Some(vec![ContainerStatus {
                name: "app".into(),
                restart_count: restarts,
                ..ContainerStatus::default()
            }]);
        }
        p
    };
    let created_at = |name: &str, secs: i64| {
        let mut p = running(name);
        p.metadata.creation_timestamp = Some(Time(ts(secs)));
        p
    };
    let cheap = {
        let mut p = running("cheap");
        p.metadata.annotations = labels(&[(delete_order::POD_DELETION_COST, "-10")]);
        p
    };
    // (case, pods, how many to keep, the pods deleted first, in order)
    let cases: Vec<(&str, Vec<Pod>, i32, Vec<&str>)> = vec![
        (
            "unassigned before assigned",
            vec![running("a"), pod("b", "", "Pending", None)],
            1,
            vec!["b"],
        ),
        (
            "pending < unknown < running",
            vec![
                running("run"),
                pod("unknown", "n1", "Unknown", None),
                pod("pending", "n1", "Pending", None),
            ],
            1,
            vec!["pending", "unknown"],
        ),
        (
            "not ready before ready",
            vec![running("ready"), pod("unready", "n1", "Running", None)],
            1,
            vec!["unready"],
        ),
        (
            "lower deletion cost first",
            vec![running("a"), cheap],
            1,
            vec!["cheap"],
        ),
        (
            "doubled-up nodes first",
            vec![
                pod("alone", "n2", "Running", Some(1_000)),
                pod("pair1", "n1", "Running", Some(1_000)),
                pod("pair2", "n1", "Running", Some(1_000)),
            ],
            2,
            vec!["pair1"],
        ),
        (
            "recently ready first",
            vec![
                pod("old", "n1", "Running", Some(1_000)),
                pod("fresh", "n1", "Running", Some(NOW - 5)),
            ],
            1,
            vec!["fresh"],
        ),
        (
            "more restarts first",
            vec![with_restarts("calm", 0), with_restarts("crashy", 4)],
            1,
            vec!["crashy"],
        ),
        (
            "newer first",
            vec![created_at("elder", 10), created_at("young", NOW - 3)],
            1,
            vec!["young"],
        ),
    ];
    for (case, pods, keep, expected) in cases {
        let actions = plan(&replica_set(keep), &pods, ts(NOW));
        assert_eq!(deleted(&actions), expected, "{case}");
    }
}

#[test]
fn deletes_record_events() {
    let actions = plan(&replica_set(0), &[running("a")], ts(NOW));
    assert!(actions.iter().any(|a| matches!(a,
        Action::Event { reason, message, regarding: ObjectRef { name, .. }, .. }
            if reason == "SuccessfulDelete" && message == "Deleted pod: a" && name == "web")));
}

#[test]
fn status_counts_and_is_written_only_when_changed() {
    let mut rs = replica_set(4);
    if let Some(spec) = rs.spec.as_mut() {
        spec.min_ready_seconds = Some(30);
    }
    let mut partly_labeled = running("partial");
    partly_labeled.metadata.labels = labels(&[("app", "web")]);
    let pods = [
        pod("avail", "n1", "Running", Some(NOW - 60)),
        pod("warming", "n1", "Running", Some(NOW - 10)),
        pod("starting", "n1", "Pending", None),
        partly_labeled,
    ];
    let actions = plan(&rs, &pods, ts(NOW));
    let status = status_of(&actions).expect("a status update");
    assert_eq!(
        (
            status.replicas,
            status.fully_labeled_replicas,
            status.ready_replicas,
            status.available_replicas,
            status.observed_generation,
        ),
        (4, Some(3), Some(3), Some(2), Some(1))
    );
    assert_eq!(
        requeue_after(&rs, &pods, ts(NOW)),
        Some(std::time::Duration::from_secs(30))
    );
    rs.status = Some(status);
    assert_eq!(plan(&rs, &pods, ts(NOW)), Vec::<Action>::new());
    rs.metadata.generation = Some(2);
    assert!(status_of(&plan(&rs, &pods, ts(NOW))).is_some());
}

#[test]
fn a_settled_replica_set_needs_no_writes() {
    // As read back from the apiserver: zero counts are absent.
    let mut rs = replica_set(0);
    rs.status = Some(ReplicaSetStatus {
        replicas: 0,
        observed_generation: Some(1),
        ..ReplicaSetStatus::default()
    });
    assert_eq!(plan(&rs, &[], ts(NOW)), Vec::<Action>::new());
}
