use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Node, NodeCondition, NodeSpec, NodeStatus, Pod, PodCondition, PodSpec, PodStatus, Taint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

use super::*;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(2_000_000 + secs).expect("time")
}

fn pod(name: &str, node: &str, phase: &str, created: i64) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            resource_version: Some("5".into()),
            creation_timestamp: Some(Time(at(created))),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: (!node.is_empty()).then(|| node.to_string()),
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            phase: Some(phase.into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        }),
    }
}

fn terminating(mut pod: Pod) -> Pod {
    pod.metadata.deletion_timestamp = Some(Time(at(-1)));
    pod
}

fn node(name: &str, ready: bool, out_of_service: bool) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            taints: out_of_service.then(|| {
                vec![Taint {
                    key: TAINT_OUT_OF_SERVICE.into(),
                    value: Some("nodeshutdown".into()),
                    effect: "NoExecute".into(),
                    ..Taint::default()
                }]
            }),
            ..NodeSpec::default()
        }),
        status: Some(NodeStatus {
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "Unknown" }.into(),
                ..NodeCondition::default()
            }]),
            ..NodeStatus::default()
        }),
    }
}

/// Each action as `verb name`.
fn summary(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .map(|a| {
            let verb = match a {
                Action::UpdateStatus { .. } => "fail",
                // PodGC only force-deletes.
                Action::Delete {
                    grace_period_seconds: Some(0),
                    ..
                } => "delete",
                _ => "other",
            };
            format!("{verb} {}", a.target().name)
        })
        .collect()
}

fn no_missing() -> BTreeMap<String, Timestamp> {
    BTreeMap::new()
}

#[test]
fn terminated_pods_beyond_the_threshold_go_evicted_then_oldest_first() {
    let mut evicted = pod("evicted", "n1", "Failed", 40);
    if let Some(status) = evicted.status.as_mut() {
        status.reason = Some("Evicted".into());
    }
    let pods = vec![
        pod("done-new", "n1", "Succeeded", 30),
        pod("running", "n1", "Running", 0),
        pod("failed-old", "n1", "Failed", 10),
        pod("done-old-b", "n1", "Succeeded", 20),
        pod("done-old-a", "n1", "Succeeded", 20),
        evicted,
    ];
    let nodes = [node("n1", true, false)];
    struct Case {
        threshold: usize,
        want: Vec<&'static str>,
    }
    let cases = [
        Case {
            threshold: 0,
            want: vec![],
        },
        Case {
            threshold: 5,
            want: vec![],
        },
        Case {
            threshold: 4,
            want: vec!["delete evicted"],
        },
        Case {
            threshold: 2,
            want: vec!["delete evicted", "delete failed-old", "delete done-old-a"],
        },
        Case {
            threshold: 1,
            want: vec![
                "delete evicted",
                "delete failed-old",
                "delete done-old-a",
                "delete done-old-b",
            ],
        },
    ];
    for case in cases {
        let actions = plan(&pods, &nodes, case.threshold, &no_missing(), at(100));
        assert_eq!(summary(&actions), case.want, "threshold {}", case.threshold);
    }
}

#[test]
fn orphaned_pods_go_after_the_quarantine_marked_failed_with_a_disruption_target() {
    let pods = vec![
        pod("orphan", "gone", "Running", 0),
        pod("orphan-done", "gone", "Succeeded", 0),
        pod("fresh-orphan", "just-gone", "Running", 0),
        pod("unknown-orphan", "never-seen", "Running", 0),
        pod("fine", "n1", "Running", 0),
    ];
    let nodes = [node("n1", true, false)];
    let missing = BTreeMap::from([
        ("gone".to_string(), at(-41)),
        ("just-gone".to_string(), at(-10)),
    ]);
    let actions = plan(
        &pods,
        &nodes,
        DEFAULT_TERMINATED_POD_THRESHOLD,
        &missing,
        at(0),
    );
    assert_eq!(
        summary(&actions),
        ["fail orphan", "delete orphan", "delete orphan-done"]
    );

    let Action::UpdateStatus { body, target } = &actions[0] else {
        panic!("a status update first");
    };
    assert_eq!(target.uid.as_deref(), Some("uid-orphan"));
    let failed: Pod = serde_json::from_value(body.clone()).expect("a pod");
    assert_eq!(failed.metadata.resource_version.as_deref(), Some("5"));
    let status = failed.status.expect("status");
    assert_eq!(status.phase.as_deref(), Some("Failed"));
    let target_condition = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == CONDITION_DISRUPTION_TARGET)
        .expect("a DisruptionTarget condition");
    assert_eq!(target_condition.status, "True");
    assert_eq!(
        target_condition.reason.as_deref(),
        Some(REASON_DELETION_BY_POD_GC)
    );
    assert_eq!(target_condition.message.as_deref(), Some(MESSAGE_NODE_GONE));
    assert_eq!(target_condition.last_transition_time, Some(Time(at(0))));
    assert_eq!(
        actions[1].target().uid.as_deref(),
        Some("uid-orphan"),
        "the delete is uid-guarded"
    );

    assert_eq!(
        missing_nodes(&pods, &nodes).into_iter().collect::<Vec<_>>(),
        ["gone", "just-gone", "never-seen"]
    );
}

#[test]
fn terminating_pods_on_out_of_service_nodes_are_force_deleted() {
    struct Case {
        name: &'static str,
        node: Node,
        terminating: bool,
        collected: bool,
    }
    let cases = [
        Case {
            name: "not ready and tainted",
            node: node("n", false, true),
            terminating: true,
            collected: true,
        },
        Case {
            name: "ready and tainted",
            node: node("n", true, true),
            terminating: true,
            collected: false,
        },
        Case {
            name: "not ready, no taint",
            node: node("n", false, false),
            terminating: true,
            collected: false,
        },
        Case {
            name: "not terminating",
            node: node("n", false, true),
            terminating: false,
            collected: false,
        },
    ];
    for case in cases {
        let mut p = pod("stuck", "n", "Running", 0);
        if case.terminating {
            p = terminating(p);
        }
        let actions = plan(
            &[p],
            &[case.node],
            DEFAULT_TERMINATED_POD_THRESHOLD,
            &no_missing(),
            at(0),
        );
        let want: Vec<String> = if case.collected {
            vec!["fail stuck".into(), "delete stuck".into()]
        } else {
            vec![]
        };
        assert_eq!(summary(&actions), want, "{}", case.name);
        if let Some(Action::UpdateStatus { body, .. }) = actions.first() {
            let failed: Pod = serde_json::from_value(body.clone()).expect("a pod");
            let conditions = failed.status.and_then(|s| s.conditions).unwrap_or_default();
            assert!(
                conditions
                    .iter()
                    .all(|c| c.type_ != CONDITION_DISRUPTION_TARGET),
                "{}: only orphans get the condition",
                case.name
            );
        }
    }
}

#[test]
fn unscheduled_terminating_pods_are_force_deleted() {
    let pods = vec![
        terminating(pod("never-scheduled", "", "Pending", 0)),
        pod("pending", "", "Pending", 0),
        terminating(pod("scheduled", "n1", "Running", 0)),
    ];
    let actions = plan(
        &pods,
        &[node("n1", true, false)],
        DEFAULT_TERMINATED_POD_THRESHOLD,
        &no_missing(),
        at(0),
    );
    assert_eq!(
        summary(&actions),
        ["fail never-scheduled", "delete never-scheduled"]
    );
}

#[test]
fn a_pod_matching_several_rules_is_collected_once() {
    let pods = vec![
        pod("old-done-orphan", "gone", "Succeeded", 0),
        pod("new-done", "n1", "Succeeded", 10),
    ];
    let missing = BTreeMap::from([("gone".to_string(), at(-100))]);
    let actions = plan(&pods, &[node("n1", true, false)], 1, &missing, at(0));
    assert_eq!(summary(&actions), ["delete old-done-orphan"]);
}
