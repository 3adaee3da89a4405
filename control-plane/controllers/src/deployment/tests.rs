//! Single-pass tables for the deployment planner; shared fixtures for `rollout_tests`.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    DeploymentCondition, DeploymentSpec, DeploymentStatus, DeploymentStrategy, ReplicaSetSpec,
    ReplicaSetStatus, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use super::status::{AVAILABLE, PROGRESSING};
use super::util::{
    DESIRED_REPLICAS_ANNOTATION, MAX_REPLICAS_ANNOTATION, POD_TEMPLATE_HASH_LABEL,
    REVISION_HISTORY_ANNOTATION, max_surge, max_unavailable, scaled_value,
};
use super::*;
use crate::common::template_hash;

pub(super) const NOW: i64 = 1_000_000;

pub(super) fn ts(secs: i64) -> Timestamp {
    Timestamp::from_second(secs).expect("time")
}

pub(super) fn map(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect(),
    )
}

pub(super) fn template(image: &str) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: map(&[("app", "web")]),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: Some(image.into()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
    }
}

/// A rolling deployment `web` of `replicas` pods of `image`, maxSurge/maxUnavailable 25%,
/// history limit 10, deadline 600 s, generation 1.
pub(super) fn deployment(replicas: i32, image: &str) -> Deployment {
    Deployment {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            uid: Some("d-uid".into()),
            generation: Some(1),
            resource_version: Some("1".into()),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: map(&[("app", "web")]),
                ..LabelSelector::default()
            },
            template: template(image),
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::String("25%".into())),
                    max_unavailable: Some(IntOrString::String("25%".into())),
                }),
            }),
            revision_history_limit: Some(10),
            progress_deadline_seconds: Some(600),
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

pub(super) fn rs_name(image: &str) -> String {
    format!("web-{}", template_hash(&template(image), None))
}

/// A replica set of `web` for `image` at `revision`, `replicas` of them all available,
/// created at `created`, annotated for a deployment of `desired` (max `max`).
pub(super) fn replica_set(
    image: &str,
    revision: i64,
    replicas: i32,
    desired: i32,
    max: i32,
    created: i64,
) -> ReplicaSet {
    let hash = template_hash(&template(image), None);
    let mut tpl = template(image);
    if let Some(meta) = tpl.metadata.as_mut() {
        meta.labels = map(&[("app", "web"), (POD_TEMPLATE_HASH_LABEL, &hash)]);
    }
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("web-{hash}")),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{hash}")),
            generation: Some(1),
            resource_version: Some("5".into()),
            creation_timestamp: Some(Time(ts(created))),
            labels: map(&[("app", "web"), (POD_TEMPLATE_HASH_LABEL, &hash)]),
            annotations: map(&[
                (REVISION_ANNOTATION, &revision.to_string()),
                (DESIRED_REPLICAS_ANNOTATION, &desired.to_string()),
                (MAX_REPLICAS_ANNOTATION, &max.to_string()),
            ]),
            owner_references: Some(vec![crate::common::controller_ref(&deployment(1, "x"))]),
            ..ObjectMeta::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: map(&[("app", "web"), (POD_TEMPLATE_HASH_LABEL, &hash)]),
                ..LabelSelector::default()
            },
            template: Some(tpl),
            min_ready_seconds: None,
        }),
        status: Some(ReplicaSetStatus {
            replicas,
            ready_replicas: Some(replicas),
            available_replicas: Some(replicas),
            observed_generation: Some(1),
            ..ReplicaSetStatus::default()
        }),
    }
}

pub(super) fn rs_writes(actions: &[Action]) -> Vec<(String, &'static str, ReplicaSet)> {
    actions
        .iter()
        .filter_map(|a| {
            let (verb, target, body) = match a {
                Action::Create { target, body } => ("create", target, Some(body)),
                Action::Update { target, body } => ("update", target, Some(body)),
                Action::Delete { target, .. } => ("delete", target, None),
                _ => return None,
            };
            if target.kind != "ReplicaSet" {
                return None;
            }
            let rs = body
                .and_then(|b| serde_json::from_value(b.clone()).ok())
                .unwrap_or_default();
            Some((target.name.clone(), verb, rs))
        })
        .collect()
}

/// (rs name, verb, replicas) of the replica set writes.
fn sizes(actions: &[Action]) -> Vec<(String, &'static str, i32)> {
    rs_writes(actions)
        .into_iter()
        .map(|(name, verb, rs)| (name, verb, util::rs_replicas(&rs)))
        .collect()
}

pub(super) fn events(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Event {
                reason, message, ..
            } => Some(format!("{reason}: {message}")),
            _ => None,
        })
        .collect()
}

pub(super) fn new_status(actions: &[Action]) -> Option<DeploymentStatus> {
    actions.iter().find_map(|a| match a {
        Action::UpdateStatus { body, .. } => serde_json::from_value(body["status"].clone()).ok(),
        _ => None,
    })
}

fn condition_of(status: &DeploymentStatus, type_: &str) -> (String, String, String) {
    let c = status::get(status, type_).cloned().unwrap_or_default();
    (
        c.status,
        c.reason.unwrap_or_default(),
        c.message.unwrap_or_default(),
    )
}

fn revision_patch(actions: &[Action]) -> Option<Value> {
    actions.iter().find_map(|a| match a {
        Action::Patch { target, patch, .. } if target.kind == "Deployment" => {
            Some(patch["metadata"]["annotations"][REVISION_ANNOTATION].clone())
        }
        _ => None,
    })
}

fn annotation(rs: &ReplicaSet, key: &str) -> Option<String> {
    rs.metadata.annotations.as_ref()?.get(key).cloned()
}

#[test]
fn fenceposts_round_like_upstream() {
    // (replicas, maxSurge, maxUnavailable, expected surge, expected unavailable)
    let int = IntOrString::Int;
    let pct = |s: &str| IntOrString::String(s.into());
    let cases = [
        (10, pct("25%"), pct("25%"), 3, 2),
        (3, pct("25%"), pct("25%"), 1, 0),
        (1, pct("25%"), pct("25%"), 1, 0),
        (5, int(0), int(0), 0, 1),
        (4, int(2), int(9), 2, 4),
        (0, pct("50%"), pct("50%"), 0, 0),
        (10, pct("0%"), pct("0%"), 0, 1),
    ];
    for (replicas, surge, unavailable, want_surge, want_unavailable) in cases {
        let mut d = deployment(replicas, "nginx:1");
        if let Some(strategy) = d.spec.as_mut().and_then(|s| s.strategy.as_mut()) {
            strategy.rolling_update = Some(RollingUpdateDeployment {
                max_surge: Some(surge.clone()),
                max_unavailable: Some(unavailable.clone()),
            });
        }
        assert_eq!(
            (max_surge(&d), max_unavailable(&d)),
            (want_surge, want_unavailable),
            "{replicas} replicas, surge {surge:?}, unavailable {unavailable:?}"
        );
    }
    assert_eq!(scaled_value(&pct("33%"), 10, true), 4);
    assert_eq!(scaled_value(&pct("33%"), 10, false), 3);
}

#[test]
fn a_fresh_deployment_creates_its_replica_set() {
    let mut d = deployment(3, "nginx:1");
    d.metadata.annotations = map(&[
        ("kubernetes.io/change-cause", "first"),
        ("kubectl.kubernetes.io/last-applied-configuration", "{}"),
    ]);
    let actions = plan(&d, &[], &[], ts(NOW));
    let name = rs_name("nginx:1");
    let writes = rs_writes(&actions);
    assert_eq!(writes.len(), 1);
    let (created, verb, rs) = &writes[0];
    assert_eq!((created.as_str(), *verb), (name.as_str(), "create"));
    let hash = name.trim_start_matches("web-");
    let spec = rs.spec.clone().expect("spec");
    assert_eq!(spec.replicas, Some(3));
    assert_eq!(
        spec.selector
            .match_labels
            .as_ref()
            .and_then(|l| l.get(POD_TEMPLATE_HASH_LABEL))
            .map(String::as_str),
        Some(hash)
    );
    let template_labels = spec
        .template
        .and_then(|t| t.metadata)
        .and_then(|m| m.labels);
    assert_eq!(
        template_labels,
        map(&[("app", "web"), (POD_TEMPLATE_HASH_LABEL, hash)])
    );
    assert_eq!(annotation(rs, REVISION_ANNOTATION).as_deref(), Some("1"));
    assert_eq!(
        annotation(rs, DESIRED_REPLICAS_ANNOTATION).as_deref(),
        Some("3")
    );
    assert_eq!(
        annotation(rs, MAX_REPLICAS_ANNOTATION).as_deref(),
        Some("4")
    );
    assert_eq!(
        annotation(rs, "kubernetes.io/change-cause").as_deref(),
        Some("first")
    );
    assert_eq!(
        annotation(rs, "kubectl.kubernetes.io/last-applied-configuration"),
        None
    );
    assert!(
        rs.metadata.creation_timestamp.is_none(),
        "the server stamps creation"
    );
    assert_eq!(
        rs.metadata
            .owner_references
            .as_ref()
            .map(|r| r[0].uid.as_str()),
        Some("d-uid")
    );
    assert_eq!(
        events(&actions),
        [format!(
            "ScalingReplicaSet: Scaled up replica set {name} from 0 to 3"
        )]
    );
    let status = new_status(&actions).expect("status");
    assert_eq!(
        condition_of(&status, PROGRESSING),
        (
            "True".into(),
            "NewReplicaSetCreated".into(),
            format!("Created new replica set \"{name}\"")
        )
    );
    assert_eq!(
        condition_of(&status, AVAILABLE),
        (
            "False".into(),
            "MinimumReplicasUnavailable".into(),
            "Deployment does not have minimum availability.".into()
        )
    );
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(revision_patch(&actions), Some(Value::from("1")));
}

#[test]
fn resizing_scales_the_only_active_replica_set() {
    // (deployment replicas, expected size, expected event)
    let cases = [
        (5, 5, "Scaled up replica set {} from 3 to 5"),
        (1, 1, "Scaled down replica set {} from 3 to 1"),
    ];
    for (replicas, size, event) in cases {
        let d = deployment(replicas, "nginx:1");
        let rs = replica_set("nginx:1", 1, 3, 3, 4, 10);
        let actions = plan(&d, &[rs], &[], ts(NOW));
        let name = rs_name("nginx:1");
        assert_eq!(
            sizes(&actions),
            [(name.clone(), "update", size)],
            "{replicas}"
        );
        let (_, _, updated) = &rs_writes(&actions)[0];
        assert_eq!(
            annotation(updated, DESIRED_REPLICAS_ANNOTATION),
            Some(replicas.to_string())
        );
        assert_eq!(
            events(&actions),
            [format!("ScalingReplicaSet: {}", event.replace("{}", &name))]
        );
    }
}

#[test]
fn resizing_mid_rollout_scales_in_proportion() {
    // 10 replicas, surge 3: old 8 + new 5 = 13 = the max. Resized to 20 (max 23): +10,
    // split as 8:5 of 13 → old 8*23/13 = 14.2 → 14 (+6), new 5*23/13 = 8.8 → 9 (+4).
    let mut d = deployment(20, "nginx:2");
    if let Some(strategy) = d.spec.as_mut().and_then(|s| s.strategy.as_mut()) {
        strategy.rolling_update = Some(RollingUpdateDeployment {
            max_surge: Some(IntOrString::Int(3)),
            max_unavailable: Some(IntOrString::Int(2)),
        });
    }
    let mut new_rs = replica_set("nginx:2", 2, 5, 10, 13, 20);
    if let Some(status) = new_rs.status.as_mut() {
        status.available_replicas = Some(0);
    }
    let old = replica_set("nginx:1", 1, 8, 10, 13, 10);
    let actions = plan(&d, &[old, new_rs], &[], ts(NOW));
    let mut got = sizes(&actions);
    got.sort();
    let mut want = vec![
        (rs_name("nginx:1"), "update", 14),
        (rs_name("nginx:2"), "update", 9),
    ];
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn rolling_update_starts_with_surge_and_unavailable_budget() {
    // 4 replicas, 25%: surge 1, unavailable 1. The new RS is created with 1 (5 in all),
    // and the old one loses 1 (3 of 4 stay available).
    let d = deployment(4, "nginx:2");
    let old = replica_set("nginx:1", 1, 4, 4, 5, 10);
    let actions = plan(&d, &[old], &[], ts(NOW));
    assert_eq!(
        sizes(&actions),
        [
            (rs_name("nginx:1"), "update", 3),
            (rs_name("nginx:2"), "create", 1)
        ]
    );
    let writes = rs_writes(&actions);
    assert_eq!(
        annotation(&writes[1].2, REVISION_ANNOTATION).as_deref(),
        Some("2")
    );
    assert_eq!(
        annotation(&writes[1].2, MAX_REPLICAS_ANNOTATION).as_deref(),
        Some("5")
    );
}

#[test]
fn recreate_scales_old_down_waits_for_pods_then_scales_up() {
    let mut d = deployment(2, "nginx:2");
    if let Some(spec) = d.spec.as_mut() {
        spec.strategy = Some(DeploymentStrategy {
            type_: Some("Recreate".into()),
            rolling_update: None,
        });
    }
    let old = replica_set("nginx:1", 1, 2, 2, 2, 10);
    // 1: the old replica set goes to 0, nothing new yet.
    let actions = plan(&d, std::slice::from_ref(&old), &[], ts(NOW));
    assert_eq!(sizes(&actions), [(rs_name("nginx:1"), "update", 0)]);
    // 2: scaled to 0 but its pod is still there (terminating): wait.
    let mut draining = old;
    if let Some(spec) = draining.spec.as_mut() {
        spec.replicas = Some(0);
    }
    draining.status = Some(ReplicaSetStatus {
        replicas: 0,
        observed_generation: Some(1),
        ..Default::default()
    });
    let mut pod = crate::replicaset::pod_from_template(&draining);
    pod.metadata.name = Some("old-pod".into());
    pod.metadata.labels = map(&[("app", "web")]);
    pod.metadata.owner_references = Some(vec![crate::common::controller_ref(&draining)]);
    pod.metadata.deletion_timestamp = Some(Time(ts(NOW)));
    let actions = plan(
        &d,
        std::slice::from_ref(&draining),
        std::slice::from_ref(&pod),
        ts(NOW),
    );
    assert!(sizes(&actions).is_empty(), "{actions:?}");
    // 3: pods gone: the new replica set is created at full size.
    let actions = plan(&d, &[draining], &[], ts(NOW));
    assert_eq!(sizes(&actions), [(rs_name("nginx:2"), "create", 2)]);
}

#[test]
fn a_paused_deployment_scales_but_does_not_roll() {
    let mut d = deployment(3, "nginx:2");
    if let Some(spec) = d.spec.as_mut() {
        spec.paused = Some(true);
    }
    let old = replica_set("nginx:1", 1, 3, 3, 4, 10);
    let actions = plan(&d, std::slice::from_ref(&old), &[], ts(NOW));
    assert!(sizes(&actions).is_empty());
    let status = new_status(&actions).expect("status");
    assert_eq!(
        condition_of(&status, PROGRESSING),
        (
            "Unknown".into(),
            "DeploymentPaused".into(),
            "Deployment is paused".into()
        )
    );
    // Paused and resized: scaling still happens.
    let mut bigger = d.clone();
    if let Some(spec) = bigger.spec.as_mut() {
        spec.replicas = Some(5);
    }
    bigger.status = Some(status.clone());
    let actions = plan(&bigger, std::slice::from_ref(&old), &[], ts(NOW));
    assert_eq!(sizes(&actions), [(rs_name("nginx:1"), "update", 5)]);
    // Resumed: the condition says so and the rollout starts.
    let mut resumed = d.clone();
    if let Some(spec) = resumed.spec.as_mut() {
        spec.paused = Some(false);
    }
    resumed.status = Some(status);
    let actions = plan(&resumed, &[old], &[], ts(NOW));
    assert_eq!(sizes(&actions), [(rs_name("nginx:2"), "create", 1)]);
    let status = new_status(&actions).expect("status");
    let (_, reason, _) = condition_of(&status, PROGRESSING);
    assert_eq!(reason, "NewReplicaSetCreated", "created after the resume");
}

#[test]
fn undo_reuses_the_old_replica_set_with_the_next_revision() {
    let d = deployment(3, "nginx:1");
    let mut first = replica_set("nginx:1", 1, 0, 3, 4, 10);
    if let Some(a) = first.metadata.annotations.as_mut() {
        a.insert(REVISION_HISTORY_ANNOTATION.into(), "0".into());
    }
    let second = replica_set("nginx:2", 2, 3, 3, 4, 20);
    let actions = plan(&d, &[first, second], &[], ts(NOW));
    let writes = rs_writes(&actions);
    assert!(
        writes.iter().all(|(_, verb, _)| *verb == "update"),
        "no create: {writes:?}"
    );
    let reused = writes
        .iter()
        .find(|(name, ..)| *name == rs_name("nginx:1"))
        .expect("reused");
    assert_eq!(
        annotation(&reused.2, REVISION_ANNOTATION).as_deref(),
        Some("3")
    );
    assert_eq!(
        annotation(&reused.2, REVISION_HISTORY_ANNOTATION).as_deref(),
        Some("0,1")
    );
    // Revision 3 is the deployment's now, and the rollout back has started (surge 1).
    assert_eq!(revision_patch(&actions), Some(Value::from("3")));
    assert_eq!(util::rs_replicas(&reused.2), 1);
}

#[test]
fn history_beyond_the_limit_is_deleted_oldest_first() {
    let mut d = deployment(2, "nginx:5");
    if let Some(spec) = d.spec.as_mut() {
        spec.revision_history_limit = Some(1);
    }
    d.status = Some(DeploymentStatus {
        observed_generation: Some(1),
        replicas: Some(2),
        updated_replicas: Some(2),
        available_replicas: Some(2),
        ..DeploymentStatus::default()
    });
    let mut still_draining = replica_set("nginx:2", 2, 0, 2, 3, 20);
    if let Some(status) = still_draining.status.as_mut() {
        status.replicas = 1;
    }
    let rss = [
        replica_set("nginx:1", 1, 0, 2, 3, 10),
        still_draining,
        replica_set("nginx:3", 3, 0, 2, 3, 30),
        replica_set("nginx:4", 4, 0, 2, 3, 40),
        replica_set("nginx:5", 5, 2, 2, 3, 50),
    ];
    let actions = plan(&d, &rss, &[], ts(NOW));
    let deleted: Vec<String> = rs_writes(&actions)
        .into_iter()
        .filter(|(_, verb, _)| *verb == "delete")
        .map(|(name, ..)| name)
        .collect();
    // 4 old, limit 1: the 3 lowest revisions are candidates; revision 2 still has a pod.
    assert_eq!(deleted, [rs_name("nginx:1"), rs_name("nginx:3")]);
}

fn progressing(reason: &str, updated_at: i64) -> DeploymentCondition {
    DeploymentCondition {
        type_: PROGRESSING.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some("m".into()),
        last_update_time: Some(Time(ts(updated_at))),
        last_transition_time: Some(Time(ts(updated_at))),
    }
}

#[test]
fn progress_conditions() {
    let name = rs_name("nginx:2");
    let stuck_new = || {
        let mut rs = replica_set("nginx:2", 2, 3, 3, 4, 20);
        if let Some(status) = rs.status.as_mut() {
            status.ready_replicas = Some(1);
            status.available_replicas = Some(1);
        }
        rs
    };
    let status_with = |condition: DeploymentCondition, available: i32| DeploymentStatus {
        observed_generation: Some(1),
        replicas: Some(3),
        updated_replicas: Some(3),
        ready_replicas: Some(available),
        available_replicas: Some(available),
        unavailable_replicas: Some(3 - available),
        conditions: Some(vec![condition]),
        ..DeploymentStatus::default()
    };
    // (case, stored status, new rs, expected Progressing (status, reason, message))
    let cases = [
        (
            "no progress past the deadline",
            status_with(progressing("ReplicaSetUpdated", NOW - 601), 1),
            stuck_new(),
            (
                "False",
                "ProgressDeadlineExceeded",
                format!("ReplicaSet \"{name}\" has timed out progressing."),
            ),
        ),
        (
            "no progress within the deadline",
            status_with(progressing("ReplicaSetUpdated", NOW - 599), 1),
            stuck_new(),
            ("True", "ReplicaSetUpdated", "m".to_string()),
        ),
        (
            "progress refreshes the condition",
            status_with(progressing("ReplicaSetUpdated", NOW - 601), 0),
            stuck_new(),
            (
                "True",
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{name}\" is progressing."),
            ),
        ),
        (
            "complete",
            status_with(progressing("ReplicaSetUpdated", NOW - 601), 1),
            replica_set("nginx:2", 2, 3, 3, 4, 20),
            (
                "True",
                "NewReplicaSetAvailable",
                format!("ReplicaSet \"{name}\" has successfully progressed."),
            ),
        ),
    ];
    for (case, stored, new_rs, (want_status, want_reason, want_message)) in cases {
        let mut d = deployment(3, "nginx:2");
        d.status = Some(stored.clone());
        let actions = plan(&d, &[new_rs], &[], ts(NOW));
        let status = new_status(&actions).unwrap_or(stored);
        assert_eq!(
            condition_of(&status, PROGRESSING),
            (
                want_status.to_string(),
                want_reason.to_string(),
                want_message
            ),
            "{case}"
        );
        if case == "progress refreshes the condition" {
            let c = status::get(&status, PROGRESSING).expect("condition");
            assert_eq!(c.last_update_time, Some(Time(ts(NOW))), "{case}");
            assert_eq!(c.last_transition_time, Some(Time(ts(NOW - 601))), "{case}");
        }
    }
    let mut waiting = deployment(3, "nginx:2");
    waiting.status = Some(status_with(progressing("ReplicaSetUpdated", NOW - 100), 1));
    assert_eq!(
        requeue_after(&waiting, ts(NOW)),
        Some(std::time::Duration::from_secs(501))
    );
}

#[test]
fn a_taken_name_bumps_the_collision_count() {
    let d = deployment(1, "nginx:1");
    let mut squatter = replica_set("nginx:1", 1, 1, 1, 1, 10);
    squatter.metadata.owner_references = None;
    squatter.metadata.labels = map(&[("app", "other")]);
    let actions = plan(&d, &[squatter], &[], ts(NOW));
    assert!(sizes(&actions).is_empty());
    assert_eq!(
        new_status(&actions).and_then(|s| s.collision_count),
        Some(1)
    );
    let mut d = d;
    d.status = new_status(&actions);
    let mut squatter = replica_set("nginx:1", 1, 1, 1, 1, 10);
    squatter.metadata.owner_references = None;
    squatter.metadata.labels = map(&[("app", "other")]);
    let actions = plan(&d, &[squatter], &[], ts(NOW));
    let name = format!("web-{}", template_hash(&template("nginx:1"), Some(1)));
    assert_eq!(sizes(&actions), [(name, "create", 1)]);
}

#[test]
fn orphan_replica_sets_are_adopted() {
    let d = deployment(3, "nginx:1");
    let mut orphan = replica_set("nginx:1", 1, 3, 3, 4, 10);
    orphan.metadata.owner_references = None;
    let actions = plan(&d, &[orphan], &[], ts(NOW));
    let patch = actions.iter().find_map(|a| match a {
        Action::Patch { target, patch, .. } if target.kind == "ReplicaSet" => Some(patch.clone()),
        _ => None,
    });
    assert_eq!(
        patch.map(|p| p["metadata"]["ownerReferences"][0]["uid"].clone()),
        Some(Value::from("d-uid"))
    );
    assert!(sizes(&actions).is_empty(), "the adopted set is the new one");
}

#[test]
fn an_empty_selector_is_refused() {
    let mut d = deployment(3, "nginx:1");
    if let Some(spec) = d.spec.as_mut() {
        spec.selector = LabelSelector::default();
    }
    let actions = plan(&d, &[], &[], ts(NOW));
    assert_eq!(
        events(&actions),
        ["SelectingAll: This deployment is selecting all pods. A non-empty selector is required."]
    );
    assert_eq!(
        new_status(&actions).and_then(|s| s.observed_generation),
        Some(1)
    );
}

#[test]
fn a_settled_deployment_needs_no_writes() {
    let mut d = deployment(3, "nginx:1");
    d.metadata.annotations = map(&[(REVISION_ANNOTATION, "1")]);
    let condition = |type_: &str, reason: &str, message: String| DeploymentCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(Time(ts(NOW - 50))),
        last_transition_time: Some(Time(ts(NOW - 60))),
    };
    // As read back from the apiserver: zero counts are absent.
    d.status = Some(DeploymentStatus {
        observed_generation: Some(1),
        replicas: Some(3),
        updated_replicas: Some(3),
        ready_replicas: Some(3),
        available_replicas: Some(3),
        unavailable_replicas: None,
        conditions: Some(vec![
            condition(
                AVAILABLE,
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
            ),
            condition(
                PROGRESSING,
                "NewReplicaSetAvailable",
                format!(
                    "ReplicaSet \"{}\" has successfully progressed.",
                    rs_name("nginx:1")
                ),
            ),
        ]),
        ..DeploymentStatus::default()
    });
    let mut old = replica_set("nginx:0", 0, 0, 3, 4, 5);
    old.metadata.annotations = None;
    if let Some(status) = old.status.as_mut() {
        status.ready_replicas = None;
        status.available_replicas = None;
    }
    let rss = [old, replica_set("nginx:1", 1, 3, 3, 4, 10)];
    assert_eq!(plan(&d, &rss, &[], ts(NOW)), Vec::<Action>::new());
}

#[test]
fn a_deleting_deployment_only_writes_status() {
    let mut d = deployment(3, "nginx:2");
    d.metadata.deletion_timestamp = Some(Time(ts(NOW)));
    let old = replica_set("nginx:1", 1, 3, 3, 4, 10);
    let actions = plan(&d, &[old], &[], ts(NOW));
    assert!(sizes(&actions).is_empty(), "{actions:?}");
    assert!(events(&actions).is_empty());
    let status = new_status(&actions).expect("status");
    assert_eq!(
        (status.replicas, status.updated_replicas),
        (Some(3), Some(0))
    );
}
