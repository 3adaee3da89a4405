use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodCondition, PodStatus};
use k8s_openapi::api::policy::v1::{
    PodDisruptionBudget, PodDisruptionBudgetSpec, PodDisruptionBudgetStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    Condition, LabelSelector, ObjectMeta, OwnerReference, Time,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;

use super::*;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_000_000 + secs).expect("time")
}

fn budget(min: Option<IntOrString>, max: Option<IntOrString>) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: ObjectMeta {
            name: Some("web-pdb".into()),
            namespace: Some("default".into()),
            generation: Some(2),
            resource_version: Some("7".into()),
            ..ObjectMeta::default()
        },
        spec: Some(PodDisruptionBudgetSpec {
            min_available: min,
            max_unavailable: max,
            selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([("app".into(), "web".into())])),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}

/// A pod `app=web` controlled by the object with `owner` uid (none when empty).
fn pod(name: &str, ready: bool, owner: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            labels: Some(BTreeMap::from([("app".into(), "web".into())])),
            owner_references: (!owner.is_empty()).then(|| {
                vec![OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: "ReplicaSet".into(),
                    name: owner.into(),
                    uid: owner.into(),
                    controller: Some(true),
                    ..OwnerReference::default()
                }]
            }),
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(PodStatus {
            phase: Some("Running".into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        }),
    }
}

fn ready_pods(count: usize, owner: &str) -> Vec<Pod> {
    (0..count)
        .map(|i| pod(&format!("p{i}"), true, owner))
        .collect()
}

fn scales(entries: &[(&str, &str, i32)]) -> ScaleInfo {
    ScaleInfo {
        by_controller_uid: entries
            .iter()
            .map(|(controller, owner, expected)| {
                (
                    (*controller).to_string(),
                    ControllerScale {
                        scale_owner_uid: (*owner).to_string(),
                        expected: *expected,
                    },
                )
            })
            .collect(),
    }
}

fn written_status(plan: &DisruptionPlan) -> PodDisruptionBudgetStatus {
    let body = plan
        .actions
        .iter()
        .find_map(|a| match a {
            Action::UpdateStatus { body, .. } => Some(body.clone()),
            _ => None,
        })
        .expect("a status update");
    let pdb: PodDisruptionBudget = serde_json::from_value(body).expect("a budget");
    pdb.status.expect("a status")
}

fn event_reasons(plan: &DisruptionPlan) -> Vec<String> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            Action::Event { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

fn allowed_condition(status: &PodDisruptionBudgetStatus) -> Condition {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == CONDITION_DISRUPTION_ALLOWED)
        .cloned()
        .expect("the DisruptionAllowed condition")
}

#[test]
fn status_counts_from_min_available_and_max_unavailable() {
    struct Case {
        name: &'static str,
        min: Option<IntOrString>,
        max: Option<IntOrString>,
        pods: Vec<Pod>,
        scales: ScaleInfo,
        /// (expected, desired healthy, current healthy, allowed, reason)
        want: (i32, i32, i32, i32, &'static str),
    }
    let rs = scales(&[("rs", "rs", 5)]);
    let mut one_not_ready = ready_pods(2, "rs");
    one_not_ready.push(pod("p9", false, "rs"));
    let mut one_terminating = ready_pods(3, "rs");
    one_terminating[0].metadata.deletion_timestamp = Some(Time(at(-5)));
    let mut two_replica_sets = ready_pods(2, "rs-old");
    two_replica_sets.extend([pod("n0", true, "rs-new"), pod("n1", true, "rs-new")]);
    let cases = vec![
        Case {
            name: "minAvailable int, enough",
            min: Some(IntOrString::Int(2)),
            max: None,
            pods: ready_pods(3, "rs"),
            scales: rs.clone(),
            want: (3, 2, 3, 1, REASON_SUFFICIENT_PODS),
        },
        Case {
            name: "minAvailable int, one not ready",
            min: Some(IntOrString::Int(2)),
            max: None,
            pods: one_not_ready,
            scales: rs.clone(),
            want: (3, 2, 2, 0, REASON_INSUFFICIENT_PODS),
        },
        Case {
            name: "minAvailable int, terminating pod is not healthy",
            min: Some(IntOrString::Int(2)),
            max: None,
            pods: one_terminating,
            scales: rs.clone(),
            want: (3, 2, 2, 0, REASON_INSUFFICIENT_PODS),
        },
        Case {
            name: "minAvailable percent rounds up against the scale",
            min: Some(IntOrString::String("50%".into())),
            max: None,
            pods: ready_pods(5, "rs"),
            scales: rs,
            want: (5, 3, 5, 2, REASON_SUFFICIENT_PODS),
        },
        Case {
            name: "maxUnavailable int",
            min: None,
            max: Some(IntOrString::Int(1)),
            pods: ready_pods(3, "rs"),
            scales: scales(&[("rs", "rs", 3)]),
            want: (3, 2, 3, 1, REASON_SUFFICIENT_PODS),
        },
        Case {
            name: "maxUnavailable percent rounds up",
            min: None,
            max: Some(IntOrString::String("25%".into())),
            pods: ready_pods(10, "rs"),
            scales: scales(&[("rs", "rs", 10)]),
            want: (10, 7, 10, 3, REASON_SUFFICIENT_PODS),
        },
        Case {
            name: "maxUnavailable above the scale clamps desired at 0",
            min: None,
            max: Some(IntOrString::Int(5)),
            pods: ready_pods(3, "rs"),
            scales: scales(&[("rs", "rs", 3)]),
            want: (3, 0, 3, 3, REASON_SUFFICIENT_PODS),
        },
        Case {
            name: "maxUnavailable 0 allows nothing",
            min: None,
            max: Some(IntOrString::Int(0)),
            pods: ready_pods(3, "rs"),
            scales: scales(&[("rs", "rs", 3)]),
            want: (3, 3, 3, 0, REASON_INSUFFICIENT_PODS),
        },
        Case {
            name: "a rollout's two ReplicaSets count the Deployment once",
            min: None,
            max: Some(IntOrString::Int(1)),
            pods: two_replica_sets,
            scales: scales(&[("rs-old", "deploy", 4), ("rs-new", "deploy", 4)]),
            want: (4, 3, 4, 1, REASON_SUFFICIENT_PODS),
        },
        Case {
            name: "scale above the pods present",
            min: None,
            max: Some(IntOrString::Int(1)),
            pods: ready_pods(2, "rs"),
            scales: scales(&[("rs", "rs", 4)]),
            want: (4, 3, 2, 0, REASON_INSUFFICIENT_PODS),
        },
        Case {
            name: "no pods allow nothing",
            min: Some(IntOrString::Int(0)),
            max: None,
            pods: vec![],
            scales: ScaleInfo::default(),
            want: (0, 0, 0, 0, REASON_INSUFFICIENT_PODS),
        },
    ];
    for case in cases {
        let pdb = budget(case.min, case.max);
        let planned = plan(&pdb, &case.pods, &case.scales, at(0));
        let status = written_status(&planned);
        let got = (
            status.expected_pods,
            status.desired_healthy,
            status.current_healthy,
            status.disruptions_allowed,
        );
        let (e, d, c, a, reason) = case.want;
        assert_eq!(got, (e, d, c, a), "{}", case.name);
        let condition = allowed_condition(&status);
        assert_eq!(condition.reason, reason, "{}", case.name);
        assert_eq!(
            condition.status,
            if a > 0 { "True" } else { "False" },
            "{}",
            case.name
        );
        assert_eq!(status.observed_generation, Some(2), "{}", case.name);
        assert_eq!(condition.last_transition_time, Time(at(0)), "{}", case.name);
    }
}

#[test]
fn an_up_to_date_status_is_not_rewritten() {
    let mut pdb = budget(Some(IntOrString::Int(1)), None);
    let pods = ready_pods(2, "rs");
    let first = plan(&pdb, &pods, &ScaleInfo::default(), at(0));
    pdb.status = Some(written_status(&first));
    let again = plan(&pdb, &pods, &ScaleInfo::default(), at(30));
    assert!(again.actions.is_empty(), "{:?}", again.actions);

    // A pod turning unready flips the condition and moves its transition time.
    let mut fewer = pods.clone();
    fewer[1] = pod("p1", false, "rs");
    let flipped = written_status(&plan(&pdb, &fewer, &ScaleInfo::default(), at(60)));
    let condition = allowed_condition(&flipped);
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_str()),
        ("False", REASON_INSUFFICIENT_PODS)
    );
    assert_eq!(condition.last_transition_time, Time(at(60)));

    // A new generation alone is recorded.
    pdb.metadata.generation = Some(3);
    let bumped = written_status(&plan(&pdb, &pods, &ScaleInfo::default(), at(90)));
    assert_eq!(bumped.observed_generation, Some(3));
    assert_eq!(
        allowed_condition(&bumped).last_transition_time,
        Time(at(0)),
        "status did not change"
    );
}

#[test]
fn no_pods_and_unmanaged_pods_are_reported() {
    let pdb = budget(None, Some(IntOrString::Int(1)));
    let planned = plan(&pdb, &[], &ScaleInfo::default(), at(0));
    assert_eq!(event_reasons(&planned), ["NoPods"]);

    let mut pods = ready_pods(2, "rs");
    pods.push(pod("bare", true, ""));
    let planned = plan(&pdb, &pods, &scales(&[("rs", "rs", 2)]), at(0));
    assert_eq!(event_reasons(&planned), ["UnmanagedPods"]);
    let status = written_status(&planned);
    assert_eq!(
        (
            status.expected_pods,
            status.current_healthy,
            status.disruptions_allowed
        ),
        (2, 3, 2)
    );
}

#[test]
fn a_pod_whose_controller_is_unknown_fails_safe() {
    let mut pdb = budget(None, Some(IntOrString::Int(1)));
    pdb.status = Some(PodDisruptionBudgetStatus {
        disruptions_allowed: 2,
        ..PodDisruptionBudgetStatus::default()
    });
    let planned = plan(&pdb, &ready_pods(2, "rs"), &ScaleInfo::default(), at(0));
    assert_eq!(event_reasons(&planned), ["CalculateExpectedPodCountFailed"]);
    let status = written_status(&planned);
    assert_eq!(status.disruptions_allowed, 0);
    let condition = allowed_condition(&status);
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_str()),
        ("False", REASON_SYNC_FAILED)
    );
    assert_eq!(condition.message, "found no controllers for pod \"p0\"");

    // Once recorded, the same failure writes nothing more.
    pdb.status = Some(status);
    let again = plan(&pdb, &ready_pods(2, "rs"), &ScaleInfo::default(), at(10));
    assert_eq!(event_reasons(&again), ["CalculateExpectedPodCountFailed"]);
    assert_eq!(again.actions.len(), 1);
}

#[test]
fn a_bad_percentage_fails_safe() {
    let pdb = budget(None, Some(IntOrString::String("half".into())));
    let planned = plan(
        &pdb,
        &ready_pods(1, "rs"),
        &scales(&[("rs", "rs", 1)]),
        at(0),
    );
    let condition = allowed_condition(&written_status(&planned));
    assert_eq!(condition.reason, REASON_SYNC_FAILED);
}

#[test]
fn disrupted_pods_are_kept_for_two_minutes_then_pruned() {
    let mut pdb = budget(Some(IntOrString::Int(1)), None);
    let mut pods = ready_pods(4, "rs");
    pods[3].metadata.deletion_timestamp = Some(Time(at(-1)));
    pdb.status = Some(PodDisruptionBudgetStatus {
        disrupted_pods: Some(BTreeMap::from([
            ("p0".to_string(), Time(at(-30))),   // recent: not healthy, kept
            ("p1".to_string(), Time(at(-180))),  // expired without deletion: pruned, event
            ("p3".to_string(), Time(at(-10))),   // being deleted: dropped
            ("gone".to_string(), Time(at(-10))), // no such pod: dropped
        ])),
        ..PodDisruptionBudgetStatus::default()
    });
    let planned = plan(&pdb, &pods, &ScaleInfo::default(), at(0));
    assert_eq!(event_reasons(&planned), ["NotDeleted"]);
    let Action::Event {
        regarding, message, ..
    } = &planned.actions[0]
    else {
        panic!("an event first");
    };
    assert_eq!(
        (regarding.kind.as_str(), regarding.name.as_str()),
        ("Pod", "p1")
    );
    assert_eq!(
        message,
        "Pod was expected by PDB default/web-pdb to be deleted but it wasn't"
    );
    let status = written_status(&planned);
    assert_eq!(
        status.disrupted_pods,
        Some(BTreeMap::from([("p0".to_string(), Time(at(-30)))]))
    );
    assert_eq!(
        status.current_healthy, 2,
        "p1 and p2; p0 is about to go, p3 is going"
    );
    assert_eq!(planned.recheck_at, Some(at(90)));
}

#[test]
fn the_selector_scopes_the_pods() {
    let mut pdb = budget(Some(IntOrString::Int(0)), None);
    let mut elsewhere = pod("x", true, "rs");
    elsewhere.metadata.namespace = Some("other".into());
    let mut other_app = pod("y", true, "rs");
    other_app.metadata.labels = Some(BTreeMap::from([("app".into(), "db".into())]));
    let pods = vec![pod("a", true, "rs"), elsewhere, other_app];
    let status = written_status(&plan(&pdb, &pods, &ScaleInfo::default(), at(0)));
    assert_eq!(status.expected_pods, 1);

    if let Some(spec) = pdb.spec.as_mut() {
        spec.selector = None;
    }
    let planned = plan(&pdb, &pods, &ScaleInfo::default(), at(0));
    assert_eq!(
        event_reasons(&planned),
        ["NoPods"],
        "a missing selector selects nothing"
    );
}

#[test]
fn stale_disruption_target_conditions_are_reset_after_two_minutes() {
    let with_target = |reason: &str, status: &str, since: i64| {
        let mut p = pod("p", true, "rs");
        if let Some(conditions) = p.status.as_mut().and_then(|s| s.conditions.as_mut()) {
            conditions.push(PodCondition {
                type_: CONDITION_DISRUPTION_TARGET.into(),
                status: status.into(),
                reason: Some(reason.into()),
                last_transition_time: Some(Time(at(since))),
                ..PodCondition::default()
            });
        }
        p
    };
    // (name, pod, want a reset, want recheck_at)
    let mut deleting = with_target("EvictionByEvictionAPI", "True", -300);
    deleting.metadata.deletion_timestamp = Some(Time(at(-1)));
    let mut finished = with_target("EvictionByEvictionAPI", "True", -300);
    if let Some(status) = finished.status.as_mut() {
        status.phase = Some("Failed".into());
    }
    let cases = [
        (
            "stale",
            with_target("EvictionByEvictionAPI", "True", -121),
            true,
            None,
        ),
        (
            "recent",
            with_target("EvictionByEvictionAPI", "True", -30),
            false,
            Some(at(90)),
        ),
        (
            "kubelet's",
            with_target("TerminationByKubelet", "True", -300),
            false,
            None,
        ),
        (
            "already false",
            with_target("EvictionByEvictionAPI", "False", -300),
            false,
            None,
        ),
        ("being deleted", deleting, false, None),
        ("finished", finished, false, None),
        ("no condition", pod("p", true, "rs"), false, None),
    ];
    for (name, p, want_reset, want_recheck) in cases {
        let planned = plan_stale_pod_disruption(&p, at(0));
        assert_eq!(planned.recheck_at, want_recheck, "{name}");
        assert_eq!(planned.actions.len(), usize::from(want_reset), "{name}");
        if want_reset {
            let Action::UpdateStatus { body, .. } = &planned.actions[0] else {
                panic!("{name}: a status update");
            };
            let reset: Pod = serde_json::from_value(body.clone()).expect("a pod");
            let condition = reset
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.type_ == CONDITION_DISRUPTION_TARGET)
                .expect("the condition");
            assert_eq!(condition.status, "False", "{name}");
            assert_eq!(condition.last_transition_time, Some(Time(at(0))), "{name}");
        }
    }
}
