use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use super::SchedulerState;
use crate::scheduler::writes::{binding_body, unschedulable_patch};

fn now() -> Timestamp {
    Timestamp::from_second(1_700_000_000).expect("timestamp")
}

fn pod(name: &str, node: Option<&str>, scheduler: Option<&str>, phase: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": {"containers": [{"name": "c", "image": "i",
                    "resources": {"requests": {"cpu": "1"}}}],
                 "nodeName": node, "schedulerName": scheduler},
        "status": {"phase": phase},
    }))
    .expect("pod")
}

fn node(name: &str) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "status": {"allocatable": {"cpu": "4", "memory": "4Gi", "pods": "10"}},
    }))
    .expect("node")
}

fn requested_cpu(state: &SchedulerState, node: &str) -> i64 {
    state
        .snapshot
        .node(node)
        .map_or(-1, |n| n.requested.milli_cpu)
}

#[test]
fn pending_pods_are_queued_only_for_their_scheduler() {
    let cases = [
        (None, "Pending", true),
        (Some("default-scheduler"), "Pending", true),
        (Some("other"), "Pending", false),
        (None, "Succeeded", false),
    ];
    for (scheduler, phase, queued) in cases {
        let mut state = SchedulerState::new("default-scheduler");
        state.apply_pod(pod("p", None, scheduler, phase), now());
        assert_eq!(
            state.queue.contains("default/p"),
            queued,
            "{scheduler:?} {phase}"
        );
    }
}

#[test]
fn bound_pods_feed_the_snapshot_until_deleted_or_terminal() {
    let mut state = SchedulerState::new("default-scheduler");
    state.apply_node(node("n1"), now());
    state.apply_pod(pod("a", Some("n1"), None, "Running"), now());
    assert_eq!(requested_cpu(&state, "n1"), 1000);
    assert!(state.apply_pod(pod("a", Some("n1"), None, "Succeeded"), now()));
    assert_eq!(requested_cpu(&state, "n1"), 0);

    state.apply_pod(pod("b", Some("n1"), None, "Running"), now());
    assert!(state.delete_pod(&pod("b", Some("n1"), None, "Running"), now()));
    assert_eq!(requested_cpu(&state, "n1"), 0);
    assert!(!state.delete_pod(&pod("c", None, None, "Pending"), now()));
}

#[test]
fn an_assumed_pod_is_not_requeued_and_can_be_forgotten() {
    let mut state = SchedulerState::new("default-scheduler");
    state.apply_node(node("n1"), now());
    let pending = pod("p", None, None, "Pending");
    state.apply_pod(pending.clone(), now());
    let popped = state.queue.pop(now()).expect("popped");
    state.assume(&popped.pod, "n1");
    state.queue.done("default/p");
    assert_eq!(requested_cpu(&state, "n1"), 1000);
    // A late watch event of the still unbound pod does not queue it again.
    assert!(!state.apply_pod(pending, now()));
    assert!(!state.queue.contains("default/p"));
    state.forget("default/p");
    assert_eq!(requested_cpu(&state, "n1"), 0);

    // Once the watch sees it bound, forgetting is a no-op.
    state.assume(&popped.pod, "n1");
    state.apply_pod(pod("p", Some("n1"), None, "Pending"), now());
    state.forget("default/p");
    assert_eq!(requested_cpu(&state, "n1"), 1000);
}

#[test]
fn an_unchanged_node_is_not_a_cluster_event() {
    let mut state = SchedulerState::new("default-scheduler");
    assert!(state.apply_node(node("n1"), now()));
    assert!(!state.apply_node(node("n1"), now()));
}

#[test]
fn the_unschedulable_patch_replaces_the_condition_once() {
    let p = pod("p", None, None, "Pending");
    let patch = unschedulable_patch(&p, "0/1 nodes are available.", None, now()).expect("patch");
    assert_eq!(
        patch["status"]["conditions"][0]["reason"],
        json!("Unschedulable")
    );
    assert_eq!(patch["status"].get("nominatedNodeName"), None);
    let mut updated = p;
    updated.status = serde_json::from_value(patch["status"].clone()).expect("status");
    assert_eq!(
        unschedulable_patch(&updated, "0/1 nodes are available.", None, now()),
        None
    );
    let nominated = unschedulable_patch(&updated, "0/1 nodes are available.", Some("n1"), now())
        .expect("nominated patch");
    assert_eq!(nominated["status"]["nominatedNodeName"], json!("n1"));
    assert_eq!(nominated["status"].get("conditions"), None);
}

#[test]
fn the_binding_names_pod_uid_and_node() {
    let body = binding_body(&pod("p", None, None, "Pending"), "n1");
    assert_eq!(body["kind"], json!("Binding"));
    assert_eq!(body["metadata"]["uid"], json!("uid-p"));
    assert_eq!(body["target"]["name"], json!("n1"));
}

#[test]
fn a_relist_forgets_what_is_gone() {
    let mut state = SchedulerState::new("default-scheduler");
    state.apply_node(node("n1"), now());
    state.apply_node(node("n2"), now());
    state.apply_pod(pod("bound", Some("n1"), None, "Running"), now());
    state.apply_pod(pod("kept", Some("n1"), None, "Running"), now());
    state.apply_pod(pod("pending", None, None, "Pending"), now());
    let listed: std::collections::HashSet<String> = ["default/kept".to_string()].into();
    assert!(state.prune_pods(&listed, now()), "a bound pod is gone");
    assert_eq!(requested_cpu(&state, "n1"), 1000);
    assert!(!state.queue.contains("default/pending"));
    state.prune_nodes(&["n2".to_string()].into());
    assert!(state.snapshot.node("n1").is_none());
    assert!(state.snapshot.node("n2").is_some());
}

#[test]
fn only_scheduling_relevant_node_updates_are_cluster_events() {
    let mut state = SchedulerState::new("default-scheduler");
    assert!(state.apply_node(node("n1"), now()));
    let mut heartbeat = node("n1");
    heartbeat.metadata.resource_version = Some("2".into());
    assert!(!state.apply_node(heartbeat, now()), "a heartbeat");
    let mut labelled = node("n1");
    labelled.metadata.labels = Some([("disk".to_string(), "ssd".to_string())].into());
    assert!(state.apply_node(labelled, now()), "a new label");
}

#[test]
fn nominated_pods_count_for_pods_of_lower_or_equal_priority() {
    let mut state = SchedulerState::new("default-scheduler");
    state.apply_node(node("n1"), now());
    let mut preemptor = pod("high", None, None, "Pending");
    if let Some(spec) = preemptor.spec.as_mut() {
        spec.priority = Some(100);
    }
    if let Some(status) = preemptor.status.as_mut() {
        status.nominated_node_name = Some("n1".into());
    }
    state.apply_pod(preemptor.clone(), now());
    let low = pod("low", None, None, "Pending");
    let with = state
        .snapshot_with_nominated(&low, "default/low")
        .expect("a nominated pod counts");
    assert_eq!(with.node("n1").map(|n| n.requested.milli_cpu), Some(1000));
    assert!(
        state
            .snapshot_with_nominated(&preemptor, "default/high")
            .is_none(),
        "not for itself"
    );
    state.apply_pod(pod("high", Some("n1"), None, "Running"), now());
    assert!(state.snapshot_with_nominated(&low, "default/low").is_none());
}
