use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet};
use k8s_openapi::api::core::v1::{
    Container, NodeSelectorRequirement, NodeSelectorTerm, NodeSpec, PodCondition, PodStatus,
    PodTemplateSpec, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use super::history::template_patch;
use super::node_fit::{NodeFit, node_fit};
use super::sim::Cluster;
use super::*;
use crate::common::template_hash;

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_000_000 + secs).expect("time")
}

fn template(image: &str) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(BTreeMap::from([("app".to_string(), "agent".to_string())])),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "agent".into(),
                image: Some(image.into()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
    }
}

fn daemonset(image: &str) -> DaemonSet {
    DaemonSet {
        metadata: ObjectMeta {
            name: Some("agent".into()),
            namespace: Some("kube-system".into()),
            uid: Some("ds-uid".into()),
            generation: Some(1),
            ..ObjectMeta::default()
        },
        spec: Some(DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(BTreeMap::from([("app".to_string(), "agent".to_string())])),
                ..LabelSelector::default()
            },
            template: template(image),
            ..DaemonSetSpec::default()
        }),
        status: None,
    }
}

fn with_strategy(mut ds: DaemonSet, kind: &str, surge: i32, unavailable: i32) -> DaemonSet {
    let spec = ds.spec.as_mut().expect("spec");
    spec.update_strategy = Some(DaemonSetUpdateStrategy {
        type_: Some(kind.into()),
        rolling_update: (kind == "RollingUpdate").then_some(RollingUpdateDaemonSet {
            max_surge: Some(IntOrString::Int(surge)),
            max_unavailable: Some(IntOrString::Int(unavailable)),
        }),
    });
    ds
}

fn node(name: &str) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([("zone".to_string(), "a".to_string())])),
            ..ObjectMeta::default()
        },
        ..Node::default()
    }
}

fn tainted(name: &str, key: &str, effect: &str) -> Node {
    let mut n = node(name);
    n.spec = Some(NodeSpec {
        taints: Some(vec![Taint {
            key: key.into(),
            effect: effect.into(),
            ..Taint::default()
        }]),
        ..NodeSpec::default()
    });
    n
}

fn hash_of(image: &str) -> String {
    template_hash(&template(image), None)
}

/// A revision of the `agent` DaemonSet for `image`.
fn revision(image: &str, number: i64) -> ControllerRevision {
    let hash = hash_of(image);
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(format!("agent-{hash}")),
            namespace: Some("kube-system".into()),
            labels: Some(BTreeMap::from([
                (REVISION_HASH_LABEL.to_string(), hash),
                ("app".to_string(), "agent".to_string()),
            ])),
            owner_references: Some(vec![controller_ref(&daemonset(image))]),
            ..ObjectMeta::default()
        },
        data: Some(k8s_openapi::apimachinery::pkg::runtime::RawExtension(
            template_patch(&template(image)),
        )),
        revision: number,
    }
}

/// A daemon pod on `node` at `image`'s revision, created at `created`, ready or not.
fn pod(name: &str, node: &str, image: &str, created: i64, ready: bool) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("kube-system".into()),
            uid: Some(format!("uid-{name}")),
            labels: Some(BTreeMap::from([
                (REVISION_HASH_LABEL.to_string(), hash_of(image)),
                ("app".to_string(), "agent".to_string()),
            ])),
            owner_references: Some(vec![OwnerReference {
                controller: Some(true),
                uid: "ds-uid".into(),
                ..OwnerReference::default()
            }]),
            creation_timestamp: Some(Time(t(created))),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                last_transition_time: Some(Time(t(created))),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        }),
    }
}

fn failed(mut p: Pod, at: i64) -> Pod {
    let status = p.status.as_mut().expect("status");
    status.phase = Some("Failed".into());
    status.conditions.as_mut().expect("conditions")[0].last_transition_time = Some(Time(t(at)));
    p
}

/// A compact view of the writes: `create Pod @node`, `delete Pod name`, ...
fn summary(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Create { target, body } if target.kind == "Pod" => {
                let node = body["spec"]["affinity"]["nodeAffinity"]
                    ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
                    ["matchFields"][0]["values"][0]
                    .as_str()
                    .unwrap_or("?")
                    .to_string();
                Some(format!("create Pod @{node}"))
            }
            Action::Create { target, .. } => Some(format!("create {}", target.kind)),
            Action::Update { target, .. } => {
                Some(format!("update {} {}", target.kind, target.name))
            }
            Action::Delete { target, .. } => {
                Some(format!("delete {} {}", target.kind, target.name))
            }
            Action::Event { reason, .. } => Some(format!("event {reason}")),
            _ => None,
        })
        .collect()
}

#[test]
fn placement_follows_selectors_affinity_and_taints() {
    let plain = daemon_pod_spec(&daemonset("a:1"));
    let mut selective = plain.clone();
    selective.node_selector = Some(BTreeMap::from([("zone".to_string(), "b".to_string())]));
    let mut affine = plain.clone();
    pin_to_node(&mut affine, "other");
    let mut affine_label = plain.clone();
    affine_label.affinity = Some(k8s_openapi::api::core::v1::Affinity {
        node_affinity: Some(k8s_openapi::api::core::v1::NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(
                k8s_openapi::api::core::v1::NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: "zone".into(),
                            operator: "In".into(),
                            values: Some(vec!["a".into()]),
                        }]),
                        match_fields: None,
                    }],
                },
            ),
            ..Default::default()
        }),
        ..Default::default()
    });
    let mut host_net_pod = daemonset("a:1");
    host_net_pod
        .spec
        .as_mut()
        .expect("spec")
        .template
        .spec
        .as_mut()
        .expect("spec")
        .host_network = Some(true);
    let host_net = daemon_pod_spec(&host_net_pod);
    let mut tolerant = plain.clone();
    tolerant
        .tolerations
        .get_or_insert_with(Vec::new)
        .push(Toleration {
            key: Some("dedicated".into()),
            operator: Some("Exists".into()),
            ..Toleration::default()
        });
    let fit = |run, stay| NodeFit {
        should_run: run,
        should_continue_running: stay,
    };
    let cases = [
        ("plain node", &plain, node("n1"), fit(true, true)),
        (
            "nodeSelector mismatch",
            &selective,
            node("n1"),
            fit(false, false),
        ),
        ("pinned elsewhere", &affine, node("n1"), fit(false, false)),
        (
            "required affinity on labels",
            &affine_label,
            node("n1"),
            fit(true, true),
        ),
        (
            "untolerated NoSchedule keeps running pods",
            &plain,
            tainted("n1", "dedicated", "NoSchedule"),
            fit(false, true),
        ),
        (
            "untolerated NoExecute evicts",
            &plain,
            tainted("n1", "dedicated", "NoExecute"),
            fit(false, false),
        ),
        (
            "user toleration",
            &tolerant,
            tainted("n1", "dedicated", "NoExecute"),
            fit(true, true),
        ),
        (
            "not-ready tolerated",
            &plain,
            tainted("n1", "node.kubernetes.io/not-ready", "NoExecute"),
            fit(true, true),
        ),
        (
            "unreachable tolerated",
            &plain,
            tainted("n1", "node.kubernetes.io/unreachable", "NoExecute"),
            fit(true, true),
        ),
        (
            "cordoned tolerated",
            &plain,
            tainted("n1", "node.kubernetes.io/unschedulable", "NoSchedule"),
            fit(true, true),
        ),
        (
            "disk pressure tolerated",
            &plain,
            tainted("n1", "node.kubernetes.io/disk-pressure", "NoSchedule"),
            fit(true, true),
        ),
        (
            "network-unavailable without hostNetwork",
            &plain,
            tainted("n1", "node.kubernetes.io/network-unavailable", "NoSchedule"),
            fit(false, true),
        ),
        (
            "network-unavailable with hostNetwork",
            &host_net,
            tainted("n1", "node.kubernetes.io/network-unavailable", "NoSchedule"),
            fit(true, true),
        ),
    ];
    for (name, spec, n, want) in cases {
        assert_eq!(node_fit(spec, &n), want, "{name}");
    }
}

#[test]
fn daemon_tolerations_replace_equal_ones() {
    let mut spec = PodSpec {
        tolerations: Some(vec![Toleration {
            key: Some("node.kubernetes.io/not-ready".into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: Some(300),
            ..Toleration::default()
        }]),
        ..PodSpec::default()
    };
    node_fit::add_daemon_tolerations(&mut spec);
    let tolerations = spec.tolerations.expect("tolerations");
    assert_eq!(tolerations.len(), 6, "{tolerations:?}");
    assert!(tolerations.iter().all(|t| t.toleration_seconds.is_none()));
}

#[test]
fn plan_table() {
    let ds = daemonset("a:1");
    let rolling = with_strategy(daemonset("b:2"), "RollingUpdate", 0, 1);
    let on_delete = with_strategy(daemonset("b:2"), "OnDelete", 0, 0);
    let surge = with_strategy(daemonset("b:2"), "RollingUpdate", 1, 0);
    let nodes3 = [node("n1"), node("n2"), node("n3")];
    let old3 = || {
        vec![
            pod("p1", "n1", "a:1", 0, true),
            pod("p2", "n2", "a:1", 0, true),
            pod("p3", "n3", "a:1", 0, true),
        ]
    };
    let rev_a = revision("a:1", 1);
    let rev_b = revision("b:2", 2);
    let new_name = |image: &str| format!("agent-{}", hash_of(image));
    #[allow(clippy::type_complexity, reason = "a test table")]
    let cases: Vec<(
        &str,
        &DaemonSet,
        Vec<Node>,
        Vec<Pod>,
        Vec<ControllerRevision>,
        Vec<String>,
    )> = vec![
        (
            "fresh: a revision and a pinned pod per node",
            &ds,
            vec![node("n1"), node("n2")],
            vec![],
            vec![],
            vec![
                "create ControllerRevision".into(),
                "create Pod @n1".into(),
                "create Pod @n2".into(),
            ],
        ),
        (
            "settled: nothing but status",
            &ds,
            vec![node("n1")],
            vec![pod("p1", "n1", "a:1", 0, true)],
            vec![rev_a.clone()],
            vec![],
        ),
        (
            "pod on an evicting node is deleted",
            &ds,
            vec![tainted("n1", "dedicated", "NoExecute")],
            vec![pod("p1", "n1", "a:1", 0, true)],
            vec![rev_a.clone()],
            vec!["delete Pod p1".into()],
        ),
        (
            "duplicates: the oldest stays",
            &ds,
            vec![node("n1")],
            vec![
                pod("young", "n1", "a:1", 5, true),
                pod("old", "n1", "a:1", 1, true),
            ],
            vec![rev_a.clone()],
            vec!["delete Pod young".into()],
        ),
        (
            "failed pod inside the backoff waits",
            &ds,
            vec![node("n1")],
            vec![failed(pod("p1", "n1", "a:1", 0, false), 95)],
            vec![rev_a.clone()],
            vec![],
        ),
        (
            "failed pod after the backoff is replaced",
            &ds,
            vec![node("n1")],
            vec![failed(pod("p1", "n1", "a:1", 0, false), 50)],
            vec![rev_a.clone()],
            vec!["delete Pod p1".into(), "event FailedDaemonPod".into()],
        ),
        (
            "rolling update, maxUnavailable 1: one old pod at a time",
            &rolling,
            nodes3.to_vec(),
            old3(),
            vec![rev_a.clone()],
            vec!["create ControllerRevision".into(), "delete Pod p1".into()],
        ),
        (
            "rolling update waits for the unavailable updated pod",
            &rolling,
            nodes3.to_vec(),
            vec![
                pod("p1", "n1", "b:2", 0, false),
                pod("p2", "n2", "a:1", 0, true),
                pod("p3", "n3", "a:1", 0, true),
            ],
            vec![rev_a.clone(), rev_b.clone()],
            vec![],
        ),
        (
            "an unavailable old pod is replaced at once",
            &rolling,
            nodes3.to_vec(),
            vec![
                pod("p1", "n1", "b:2", 0, false),
                pod("p2", "n2", "a:1", 0, false),
                pod("p3", "n3", "a:1", 0, true),
            ],
            vec![rev_a.clone(), rev_b.clone()],
            vec!["delete Pod p2".into()],
        ),
        (
            "OnDelete leaves old pods",
            &on_delete,
            nodes3.to_vec(),
            old3(),
            vec![rev_a.clone(), rev_b.clone()],
            vec![],
        ),
        (
            "maxSurge 1: the new pod starts next to the old one",
            &surge,
            nodes3.to_vec(),
            old3(),
            vec![rev_a.clone(), rev_b.clone()],
            vec!["create Pod @n1".into()],
        ),
        (
            "maxSurge: old pod goes once the new one is available",
            &surge,
            nodes3.to_vec(),
            vec![
                pod("p1", "n1", "a:1", 0, true),
                pod("p1new", "n1", "b:2", 1, true),
                pod("p2", "n2", "a:1", 0, true),
                pod("p3", "n3", "a:1", 0, true),
            ],
            vec![rev_a.clone(), rev_b.clone()],
            vec!["delete Pod p1".into()],
        ),
        (
            "rollback bumps the old revision's number",
            &ds,
            vec![node("n1")],
            vec![pod("p1", "n1", "a:1", 0, true)],
            vec![rev_a, rev_b],
            vec![format!("update ControllerRevision {}", new_name("a:1"))],
        ),
    ];
    for (name, ds, nodes, pods, revisions, want) in cases {
        let got = summary(&plan(ds, &nodes, &pods, &revisions, t(100)));
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn failed_pod_backoff_requeues() {
    let ds = daemonset("a:1");
    let plan = reconcile(
        &ds,
        &[node("n1")],
        &[failed(pod("p1", "n1", "a:1", 0, false), 95)],
        &[revision("a:1", 1)],
        t(100),
    );
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(5)));
}

#[test]
fn pods_are_pinned_labelled_and_owned() {
    let ds = daemonset("a:1");
    let actions = plan(&ds, &[node("n1")], &[], &[], t(0));
    let Some(Action::Create { body, .. }) = actions.iter().find(|a| a.target().kind == "Pod")
    else {
        panic!("a pod create: {actions:?}");
    };
    assert_eq!(body["metadata"]["generateName"], "agent-");
    assert_eq!(
        body["metadata"]["labels"][REVISION_HASH_LABEL],
        Value::String(hash_of("a:1"))
    );
    assert_eq!(body["metadata"]["labels"][TEMPLATE_GENERATION_LABEL], "1");
    assert_eq!(body["metadata"]["ownerReferences"][0]["uid"], "ds-uid");
    let term = &body["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"];
    assert_eq!(
        term[0]["matchFields"][0],
        serde_json::json!({"key": "metadata.name", "operator": "In", "values": ["n1"]})
    );
    assert!(
        body["spec"].get("nodeName").is_none(),
        "the scheduler binds it"
    );
    assert_eq!(
        body["spec"]["tolerations"].as_array().map(Vec::len),
        Some(6)
    );
}

#[test]
fn status_counts() {
    let mut ds = daemonset("b:2");
    ds.spec.as_mut().expect("spec").min_ready_seconds = Some(30);
    let nodes = [
        node("n1"),
        node("n2"),
        node("n3"),
        tainted("n4", "dedicated", "NoSchedule"),
    ];
    let pods = [
        pod("p1", "n1", "b:2", 0, true),  // updated, available
        pod("p2", "n2", "a:1", 90, true), // old, ready, not yet available
        pod("p4", "n4", "a:1", 0, true),  // misscheduled (NoSchedule: may stay, not desired)
    ];
    let plan = reconcile(
        &ds,
        &nodes,
        &pods,
        &[revision("a:1", 1), revision("b:2", 2)],
        t(100),
    );
    let status = plan
        .actions
        .iter()
        .find_map(|a| match a {
            Action::UpdateStatus { body, .. } => Some(body["status"].clone()),
            _ => None,
        })
        .expect("status update");
    assert_eq!(
        status,
        serde_json::json!({
            "currentNumberScheduled": 2, "desiredNumberScheduled": 3, "numberAvailable": 1,
            "numberMisscheduled": 1, "numberReady": 2, "numberUnavailable": 2,
            "observedGeneration": 1, "updatedNumberScheduled": 1,
        })
    );
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(30)));
}

#[test]
fn history_beyond_the_limit_is_pruned_unless_pods_use_it() {
    let mut ds = daemonset("d:4");
    ds.spec.as_mut().expect("spec").revision_history_limit = Some(1);
    let revisions = [
        revision("a:1", 1),
        revision("b:2", 2),
        revision("c:3", 3),
        revision("d:4", 4),
    ];
    // a:1 is still run by a pod; b:2 and c:3 are unused, one of them may stay.
    let pods = [pod("p1", "n1", "a:1", 0, true)];
    let got = summary(&plan(&ds, &[node("n1")], &pods, &revisions, t(100)));
    assert!(
        got.contains(&format!(
            "delete ControllerRevision agent-{}",
            hash_of("b:2")
        )),
        "{got:?}"
    );
    assert!(
        !got.iter().any(|g| g.contains(&hash_of("c:3"))
            || g.contains(&hash_of("a:1")) && g.contains("Revision")),
        "{got:?}"
    );
}

#[test]
fn rolling_update_over_three_nodes_converges() {
    let nodes = [node("n1"), node("n2"), node("n3")];
    let mut cluster = Cluster::new(t(0));
    let mut ds = with_strategy(daemonset("a:1"), "RollingUpdate", 0, 1);
    let step = |cluster: &mut Cluster, ds: &mut DaemonSet| {
        let actions = plan(ds, &nodes, &cluster.pods, &cluster.revisions, cluster.now);
        cluster.apply(&actions);
        cluster.now += k8s_openapi::jiff::SignedDuration::from_secs(1);
        cluster.run_all_pods("unused");
        ds.status = cluster.status_as();
        actions
    };
    for _ in 0..3 {
        step(&mut cluster, &mut ds);
    }
    assert_eq!(cluster.pods.len(), 3);
    let status = ds.status.clone().expect("status");
    assert_eq!((status.number_ready, status.number_available), (3, Some(3)));

    ds.spec.as_mut().expect("spec").template = template("b:2");
    ds.metadata.generation = Some(2);
    let mut max_deleted_at_once = 0;
    for _ in 0..20 {
        let actions = step(&mut cluster, &mut ds);
        let deletes = actions
            .iter()
            .filter(|a| matches!(a, Action::Delete { target, .. } if target.kind == "Pod"))
            .count();
        max_deleted_at_once = max_deleted_at_once.max(deletes);
        let unavailable = 3 - cluster.pods.len();
        assert!(unavailable <= 1, "maxUnavailable 1 holds");
    }
    assert_eq!(max_deleted_at_once, 1);
    let status = ds.status.expect("status");
    assert_eq!(status.updated_number_scheduled, Some(3));
    assert_eq!(status.number_available, Some(3));
    assert!(cluster.pods.iter().all(|p| is_updated(p, &hash_of("b:2"))));
    let mut pinned: Vec<String> = cluster.pods.iter().filter_map(target_node).collect();
    pinned.sort();
    assert_eq!(pinned, ["n1", "n2", "n3"]);
    assert_eq!(
        cluster.revisions.len(),
        2,
        "both revisions kept under the limit"
    );
}
