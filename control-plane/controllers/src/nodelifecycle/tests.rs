use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    NodeSpec, NodeStatus, PodCondition, PodSpec, PodStatus, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use serde_json::Value;

use super::*;
use crate::action::EventType;

const NOW: i64 = 100_000;
const GRACE: Duration = DEFAULT_MONITOR_GRACE_PERIOD;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(secs).expect("time")
}

fn now() -> Timestamp {
    at(NOW)
}

fn cond(type_: &str, status: &str, heartbeat: i64) -> NodeCondition {
    NodeCondition {
        type_: type_.into(),
        status: status.into(),
        last_heartbeat_time: Some(Time(at(heartbeat))),
        last_transition_time: Some(Time(at(0))),
        reason: Some("KubeletReady".into()),
        ..NodeCondition::default()
    }
}

/// A node whose kubelet posted `Ready=<ready>` (and no pressure) at `heartbeat`.
fn node(name: &str, ready: Option<&str>, heartbeat: i64) -> Node {
    let conditions = ready.map(|status| {
        let pressure = if status == "Unknown" {
            "Unknown"
        } else {
            "False"
        };
        vec![
            cond("Ready", status, heartbeat),
            cond("MemoryPressure", pressure, heartbeat),
            cond("DiskPressure", pressure, heartbeat),
            cond("PIDPressure", pressure, heartbeat),
        ]
    });
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            resource_version: Some("7".into()),
            creation_timestamp: Some(Time(at(0))),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus {
            conditions,
            ..NodeStatus::default()
        }),
    }
}

fn with_taints(mut node: Node, taints: &[(&str, &str, i64)]) -> Node {
    node.spec.get_or_insert_with(Default::default).taints = Some(
        taints
            .iter()
            .map(|(key, effect, added)| Taint {
                key: (*key).into(),
                effect: (*effect).into(),
                time_added: (*effect == "NoExecute").then(|| Time(at(*added))),
                value: None,
            })
            .collect(),
    );
    node
}

fn lease(name: &str, renewed: i64) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NODE_LEASE_NAMESPACE.into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            renew_time: Some(MicroTime(at(renewed))),
            ..LeaseSpec::default()
        }),
    }
}

fn toleration(key: &str, seconds: Option<i64>) -> Toleration {
    Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some("NoExecute".into()),
        toleration_seconds: seconds,
        ..Toleration::default()
    }
}

fn pod(name: &str, node: &str, tolerations: Vec<Toleration>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            resource_version: Some("3".into()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            tolerations: Some(tolerations),
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        }),
    }
}

fn status_update_of<'a>(plan: &'a Plan, kind: &str, name: &str) -> Option<&'a Value> {
    plan.actions.iter().find_map(|a| match a {
        Action::UpdateStatus { target, body } if target.kind == kind && target.name == name => {
            Some(body)
        }
        _ => None,
    })
}

fn conditions_of(body: &Value) -> BTreeMap<String, (String, String)> {
    body["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["type"].as_str().unwrap_or_default().to_string(),
                (
                    c["status"].as_str().unwrap_or_default().to_string(),
                    c["reason"].as_str().unwrap_or_default().to_string(),
                ),
            )
        })
        .collect()
}

/// The taints the plan patches onto `name`, as sorted `key:effect`; `None` without a patch.
fn patched_taints(plan: &Plan, name: &str) -> Option<Vec<String>> {
    plan.actions.iter().find_map(|a| match a {
        Action::Patch { target, patch, .. } if target.kind == "Node" && target.name == name => {
            let mut taints: Vec<String> = patch["spec"]["taints"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    format!(
                        "{}:{}",
                        t["key"].as_str().unwrap_or_default(),
                        t["effect"].as_str().unwrap_or_default()
                    )
                })
                .collect();
            taints.sort();
            Some(taints)
        }
        _ => None,
    })
}

fn deleted(plan: &Plan) -> Vec<String> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            Action::Delete { target, .. } => Some(target.name.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_node_goes_unknown_only_when_lease_and_heartbeat_are_both_stale() {
    // (case, lease renewed at, Ready heartbeat at, Ready status, expect an Unknown write)
    let cases: &[(&str, Option<i64>, i64, &str, bool)] = &[
        (
            "fresh lease, old heartbeat",
            Some(NOW - 10),
            NOW - 300,
            "True",
            false,
        ),
        ("no lease, fresh heartbeat", None, NOW - 10, "True", false),
        ("both stale", Some(NOW - 41), NOW - 300, "True", true),
        (
            "exactly at the grace period",
            Some(NOW - 40),
            NOW - 40,
            "True",
            false,
        ),
        ("no lease, stale heartbeat", None, NOW - 41, "False", true),
        ("already unknown", None, NOW - 300, "Unknown", false),
    ];
    for (case, renewed, heartbeat, status, expect) in cases {
        let nodes = [
            node("n1", Some(status), *heartbeat),
            node("n2", Some("True"), NOW),
        ];
        let leases: Vec<Lease> = renewed.map(|r| lease("n1", r)).into_iter().collect();
        let plan = plan(&nodes, &leases, &[], GRACE, now());
        let update = status_update_of(&plan, "Node", "n1");
        assert_eq!(update.is_some(), *expect, "{case}");
        if let Some(body) = update {
            let conditions = conditions_of(body);
            for type_ in ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"] {
                assert_eq!(
                    conditions.get(type_),
                    Some(&("Unknown".to_string(), "NodeStatusUnknown".to_string())),
                    "{case}: {type_}"
                );
            }
            let ready = body["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                .cloned()
                .unwrap_or_default();
            assert_eq!(
                ready["message"], "Kubelet stopped posting node status.",
                "{case}"
            );
            assert_eq!(ready["lastTransitionTime"], now().to_string(), "{case}");
            assert_eq!(
                ready["lastHeartbeatTime"],
                at(*heartbeat).to_string(),
                "{case}: the heartbeat stays the kubelet's"
            );
        }
        let not_ready_event = plan.actions.iter().any(|a| {
            matches!(a, Action::Event { reason, regarding, .. } if reason == "NodeNotReady" && regarding.kind == "Node")
        });
        assert_eq!(not_ready_event, *expect && *status == "True", "{case}");
    }
}

#[test]
fn a_node_that_never_posted_status_gets_the_startup_grace_period() {
    for (created_ago, expect) in [(30, false), (61, true)] {
        let mut silent = node("n1", None, 0);
        silent.metadata.creation_timestamp = Some(Time(at(NOW - created_ago)));
        let nodes = [silent, node("n2", Some("True"), NOW)];
        let plan = plan(&nodes, &[], &[], GRACE, now());
        let update = status_update_of(&plan, "Node", "n1");
        assert_eq!(update.is_some(), expect, "created {created_ago}s ago");
        if let Some(body) = update {
            assert_eq!(
                conditions_of(body).get("Ready"),
                Some(&("Unknown".to_string(), "NodeStatusNeverUpdated".to_string()))
            );
        }
    }
}

#[test]
fn healthy_nodes_requeue_when_their_heartbeat_would_go_stale() {
    let nodes = [node("n1", Some("True"), NOW - 10)];
    let plan = plan(&nodes, &[lease("n1", NOW - 5)], &[], GRACE, now());
    assert!(plan.actions.is_empty(), "{:?}", plan.actions);
    // Stale 40s after the lease renewal, planned one second past it.
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(36)));
}

#[test]
fn taints_follow_conditions() {
    let fresh = NOW - 1;
    // (case, node, expected taints after the patch; None = no patch)
    let unschedulable = {
        let mut n = node("n1", Some("True"), fresh);
        n.spec.get_or_insert_with(Default::default).unschedulable = Some(true);
        n
    };
    let pressure = {
        let mut n = node("n1", Some("True"), fresh);
        if let Some(cs) = n.status.as_mut().and_then(|s| s.conditions.as_mut()) {
            cs[1].status = "True".into();
            cs[3].status = "True".into();
        }
        n
    };
    let cases: Vec<(&str, Node, Option<Vec<&str>>)> = vec![
        ("ready, untainted", node("n1", Some("True"), fresh), None),
        (
            "not ready",
            node("n1", Some("False"), fresh),
            Some(vec![
                "node.kubernetes.io/not-ready:NoExecute",
                "node.kubernetes.io/not-ready:NoSchedule",
            ]),
        ),
        (
            "silent",
            node("n1", Some("True"), NOW - 100),
            Some(vec![
                "node.kubernetes.io/unreachable:NoExecute",
                "node.kubernetes.io/unreachable:NoSchedule",
            ]),
        ),
        (
            "ready again",
            with_taints(
                node("n1", Some("True"), fresh),
                &[
                    ("node.kubernetes.io/unreachable", "NoExecute", 5),
                    ("node.kubernetes.io/unreachable", "NoSchedule", 0),
                    ("example.com/mine", "NoSchedule", 0),
                ],
            ),
            Some(vec!["example.com/mine:NoSchedule"]),
        ),
        (
            "unreachable becomes not ready",
            with_taints(
                node("n1", Some("False"), fresh),
                &[
                    ("node.kubernetes.io/unreachable", "NoExecute", 5),
                    ("node.kubernetes.io/not-ready", "NoSchedule", 0),
                ],
            ),
            Some(vec![
                "node.kubernetes.io/not-ready:NoExecute",
                "node.kubernetes.io/not-ready:NoSchedule",
            ]),
        ),
        (
            "already tainted",
            with_taints(
                node("n1", Some("False"), fresh),
                &[
                    ("node.kubernetes.io/not-ready", "NoExecute", 5),
                    ("node.kubernetes.io/not-ready", "NoSchedule", 0),
                ],
            ),
            None,
        ),
        (
            "pressure",
            pressure,
            Some(vec![
                "node.kubernetes.io/memory-pressure:NoSchedule",
                "node.kubernetes.io/pid-pressure:NoSchedule",
            ]),
        ),
        (
            "cordoned",
            unschedulable,
            Some(vec!["node.kubernetes.io/unschedulable:NoSchedule"]),
        ),
    ];
    for (case, n1, expected) in cases {
        // A healthy neighbour keeps the zone out of full disruption.
        let nodes = [n1, node("n2", Some("True"), NOW)];
        let plan = plan(&nodes, &[], &[], GRACE, now());
        let expected: Option<Vec<String>> =
            expected.map(|v| v.into_iter().map(String::from).collect());
        assert_eq!(patched_taints(&plan, "n1"), expected, "{case}");
        assert_eq!(patched_taints(&plan, "n2"), None, "{case}: n2 untouched");
    }
}

#[test]
fn new_no_execute_taints_keep_the_old_time_added_and_stamp_new_ones_now() {
    let nodes = [
        with_taints(
            node("n1", Some("False"), NOW - 1),
            &[("node.kubernetes.io/not-ready", "NoExecute", 5)],
        ),
        node("n2", Some("False"), NOW - 1),
        node("n3", Some("True"), NOW - 1),
    ];
    let plan = plan(&nodes, &[], &[], GRACE, now());
    let time_added = |name: &str| {
        plan.actions.iter().find_map(|a| match a {
            Action::Patch { target, patch, .. } if target.name == name => patch["spec"]["taints"]
                .as_array()
                .and_then(|ts| ts.iter().find(|t| t["effect"] == "NoExecute"))
                .map(|t| t["timeAdded"].clone()),
            _ => None,
        })
    };
    assert_eq!(time_added("n1"), Some(Value::from(at(5).to_string())));
    assert_eq!(time_added("n2"), Some(Value::from(now().to_string())));
}

#[test]
fn no_eviction_taints_when_every_zone_is_down_or_a_small_zone_is_mostly_down() {
    // The only node down: the whole cluster is "fully disrupted", the control plane is the
    // likely culprit, no NoExecute taint (but NoSchedule is fine), and existing ones go.
    let lone = [with_taints(
        node("n1", Some("Unknown"), NOW - 100),
        &[("node.kubernetes.io/not-ready", "NoExecute", 5)],
    )];
    let plan1 = plan(&lone, &[], &[], GRACE, now());
    assert_eq!(
        patched_taints(&plan1, "n1"),
        Some(vec![
            "node.kubernetes.io/unreachable:NoSchedule".to_string()
        ])
    );

    // Three of four nodes of a small zone down: partial disruption, no new NoExecute taints.
    let nodes = [
        node("a", Some("False"), NOW - 1),
        node("b", Some("False"), NOW - 1),
        node("c", Some("False"), NOW - 1),
        node("d", Some("True"), NOW - 1),
    ];
    let plan2 = plan(&nodes, &[], &[], GRACE, now());
    assert_eq!(
        patched_taints(&plan2, "a"),
        Some(vec!["node.kubernetes.io/not-ready:NoSchedule".to_string()])
    );
    // Two of four: normal, tainted.
    let plan3 = plan(&nodes[1..], &[], &[], GRACE, now());
    assert_eq!(
        patched_taints(&plan3, "b"),
        Some(vec![
            "node.kubernetes.io/not-ready:NoExecute".to_string(),
            "node.kubernetes.io/not-ready:NoSchedule".to_string()
        ])
    );
}

#[test]
fn pods_on_a_silent_node_are_marked_not_ready() {
    let nodes = [
        node("n1", Some("True"), NOW - 100),
        node("n2", Some("True"), NOW),
    ];
    let pods = [
        pod(
            "on-silent",
            "n1",
            vec![toleration("node.kubernetes.io/unreachable", None)],
        ),
        pod("elsewhere", "n2", vec![]),
    ];
    let plan = plan(&nodes, &[], &pods, GRACE, now());
    let body = status_update_of(&plan, "Pod", "on-silent").expect("pod status update");
    assert_eq!(
        conditions_of(body).get("Ready").map(|(s, _)| s.as_str()),
        Some("False")
    );
    assert!(status_update_of(&plan, "Pod", "elsewhere").is_none());
    assert!(plan.actions.iter().any(|a| matches!(a,
        Action::Event { regarding, reason, event_type: EventType::Warning, .. }
            if regarding.name == "on-silent" && reason == "NodeNotReady")));
}

#[test]
fn pods_are_evicted_by_no_execute_taints_they_do_not_tolerate() {
    const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
    let tainted = |added: i64| {
        with_taints(
            node("n1", Some("True"), NOW),
            &[
                (UNREACHABLE, "NoExecute", added),
                ("example.com/soft", "NoSchedule", 0),
            ],
        )
    };
    // (case, taint added at, tolerations, evicted now, requeue after)
    type Case = (&'static str, i64, Vec<Toleration>, bool, Option<u64>);
    let cases: Vec<Case> = vec![
        ("no toleration", NOW, vec![], true, None),
        (
            "tolerated forever",
            NOW - 10_000,
            vec![toleration(UNREACHABLE, None)],
            false,
            None,
        ),
        (
            "tolerated 300s, 100s in",
            NOW - 100,
            vec![toleration(UNREACHABLE, Some(300))],
            false,
            Some(200),
        ),
        (
            "tolerated 300s, 300s in",
            NOW - 300,
            vec![toleration(UNREACHABLE, Some(300))],
            true,
            None,
        ),
        (
            "zero seconds",
            NOW,
            vec![toleration(UNREACHABLE, Some(0))],
            true,
            None,
        ),
        (
            "other key tolerated",
            NOW,
            vec![toleration("example.com/x", None)],
            true,
            None,
        ),
        (
            "tolerate everything",
            NOW,
            vec![Toleration {
                operator: Some("Exists".into()),
                ..Toleration::default()
            }],
            false,
            None,
        ),
        (
            "wrong effect",
            NOW,
            vec![Toleration {
                key: Some(UNREACHABLE.into()),
                operator: Some("Exists".into()),
                effect: Some("NoSchedule".into()),
                ..Toleration::default()
            }],
            true,
            None,
        ),
    ];
    for (case, added, tolerations, evicted, requeue) in cases {
        // n1 is healthy but carries the taint (a user's, or one about to be removed):
        // eviction follows the taints the node has.
        let nodes = [tainted(added)];
        let pods = [pod("p", "n1", tolerations), pod("other", "n2", vec![])];
        // A long grace period keeps the heartbeat requeue out of the way.
        let grace = Duration::from_secs(10_000);
        let plan = plan(&nodes, &[lease("n1", NOW)], &pods, grace, now());
        let names = deleted(&plan);
        assert_eq!(names == ["p"], evicted, "{case}: {names:?}");
        assert_eq!(
            plan.requeue_after.filter(|d| *d < grace),
            requeue.map(Duration::from_secs),
            "{case}"
        );
        if evicted {
            let kinds: Vec<&str> = plan
                .actions
                .iter()
                .filter(|a| a.target().name == "p")
                .map(|a| match a {
                    Action::Event { .. } => "event",
                    Action::Patch { .. } => "patch",
                    Action::Delete { .. } => "delete",
                    _ => "other",
                })
                .collect();
            assert_eq!(kinds, ["event", "patch", "delete"], "{case}");
            let Some(Action::Patch {
                patch, subresource, ..
            }) = plan
                .actions
                .iter()
                .find(|a| matches!(a, Action::Patch { .. }) && a.target().name == "p")
            else {
                panic!("{case}: a status patch");
            };
            assert_eq!(subresource.as_deref(), Some("status"));
            let condition = patch["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "DisruptionTarget"))
                .cloned()
                .unwrap_or_default();
            assert_eq!(condition["reason"], "DeletionByTaintManager", "{case}");
            assert_eq!(
                condition["message"],
                "Taint manager: deleting due to NoExecute taint"
            );
            assert_eq!(patch["metadata"]["resourceVersion"], "3");
            assert!(plan.actions.iter().any(|a| matches!(a,
                Action::Event { reason, message, .. }
                    if reason == "TaintManagerEviction" && message == "Marking for deletion Pod default/p")));
        }
    }
}

#[test]
fn pods_being_deleted_are_left_alone() {
    let nodes = [with_taints(
        node("n1", Some("True"), NOW),
        &[("node.kubernetes.io/unreachable", "NoExecute", NOW)],
    )];
    let mut going = pod("p", "n1", vec![]);
    going.metadata.deletion_timestamp = Some(Time(now()));
    let plan = plan(&nodes, &[lease("n1", NOW)], &[going], GRACE, now());
    assert!(deleted(&plan).is_empty());
}
