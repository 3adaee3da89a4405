//! Tests of the scheduling queue: ordering, backoff, and moving unschedulable pods back.

use std::sync::Arc;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::*;
use crate::testing::pod;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + secs).expect("time")
}

fn add(q: &mut SchedulingQueue, name: &str, priority: i32, now: Timestamp) {
    q.add(Arc::new(pod(name).priority(priority).build()), now);
}

fn pop_name(q: &mut SchedulingQueue, now: Timestamp) -> Option<String> {
    q.pop(now).map(|p| p.key)
}

#[test]
fn backoff_duration_table() {
    let cases = [(1, 1), (2, 2), (3, 4), (4, 8), (5, 10), (6, 10), (40, 10)];
    for (attempts, secs) in cases {
        assert_eq!(
            backoff_duration(attempts),
            SignedDuration::from_secs(secs),
            "{attempts}"
        );
    }
}

#[test]
fn pops_by_priority_then_arrival() {
    let mut q = SchedulingQueue::new();
    add(&mut q, "low", 0, at(0));
    add(&mut q, "high", 100, at(1));
    add(&mut q, "low-later", 0, at(2));
    add(&mut q, "high-later", 100, at(3));
    let order: Vec<String> = std::iter::from_fn(|| pop_name(&mut q, at(4))).collect();
    assert_eq!(
        order,
        vec![
            "default/high",
            "default/high-later",
            "default/low",
            "default/low-later"
        ]
    );
}

#[test]
fn unschedulable_pods_wait_for_an_event_then_their_backoff() {
    let mut q = SchedulingQueue::new();
    add(&mut q, "p", 0, at(0));
    let popped = q.pop(at(0)).expect("queued");
    assert_eq!(popped.attempts, 1);
    q.add_unschedulable(&popped.key, at(0));
    assert_eq!(q.lengths(), (0, 0, 1));
    assert_eq!(pop_name(&mut q, at(60)), None, "no event, no retry");

    // An event half a second later: still backing off (1s after the first attempt).
    q.on_cluster_event(
        ClusterEvent::NodeAdded,
        at(0) + SignedDuration::from_millis(500),
    );
    assert_eq!(q.lengths(), (0, 1, 0));
    assert_eq!(
        pop_name(&mut q, at(0) + SignedDuration::from_millis(900)),
        None
    );
    let again = q.pop(at(1)).expect("backoff over");
    assert_eq!(again.attempts, 2);
}

#[test]
fn an_event_long_after_the_failure_goes_straight_to_active() {
    let mut q = SchedulingQueue::new();
    add(&mut q, "p", 0, at(0));
    let key = q.pop(at(0)).expect("queued").key;
    q.add_unschedulable(&key, at(0));
    q.on_cluster_event(ClusterEvent::AssignedPodDeleted, at(30));
    assert_eq!(q.lengths(), (1, 0, 0));
}

#[test]
fn unschedulable_pods_are_retried_after_five_minutes() {
    let mut q = SchedulingQueue::new();
    add(&mut q, "p", 0, at(0));
    let key = q.pop(at(0)).expect("queued").key;
    q.add_unschedulable(&key, at(0));
    assert_eq!(pop_name(&mut q, at(299)), None);
    assert_eq!(pop_name(&mut q, at(300)), Some(key));
}

#[test]
fn an_event_during_the_attempt_sends_the_pod_to_backoff() {
    let mut q = SchedulingQueue::new();
    add(&mut q, "p", 0, at(0));
    let key = q.pop(at(0)).expect("queued").key;
    q.on_cluster_event(ClusterEvent::NodeUpdated, at(0));
    q.add_unschedulable(&key, at(0));
    assert_eq!(q.lengths(), (0, 1, 0));
    assert_eq!(pop_name(&mut q, at(1)), Some(key));
}

#[test]
fn errors_back_off_exponentially() {
    let mut q = SchedulingQueue::new();
    add(&mut q, "p", 0, at(0));
    let mut now = at(0);
    for expected in [1, 2, 4, 8, 10, 10] {
        let key = q.pop(now).expect("ready").key;
        q.backoff(&key, now);
        let before = now + SignedDuration::from_secs(expected) - SignedDuration::from_millis(1);
        assert_eq!(pop_name(&mut q, before), None, "backoff {expected}s");
        now += SignedDuration::from_secs(expected);
        assert!(q.contains(&key));
    }
}

#[test]
fn updates_and_deletes() {
    let mut q = SchedulingQueue::new();
    add(&mut q, "p", 0, at(0));
    add(&mut q, "p", 0, at(1));
    assert_eq!(q.lengths(), (1, 0, 0), "an update does not duplicate");
    let key = q.pop(at(1)).expect("queued").key;
    q.add_unschedulable(&key, at(1));
    // A spec change makes an unschedulable pod worth another try.
    q.add(Arc::new(pod("p").node_selector("zone=a").build()), at(2));
    assert_eq!(q.lengths(), (1, 0, 0));
    q.delete(&key);
    assert_eq!(q.lengths(), (0, 0, 0));
    assert!(!q.contains(&key));
}

#[test]
fn gated_pods_wait_until_their_last_gate_is_removed() {
    use k8s_openapi::api::core::v1::PodSchedulingGate;
    let gate = |names: &[&str]| {
        let mut p = pod("p").build();
        if let Some(spec) = p.spec.as_mut() {
            spec.scheduling_gates = Some(
                names
                    .iter()
                    .map(|n| PodSchedulingGate {
                        name: n.to_string(),
                    })
                    .collect(),
            );
        }
        Arc::new(p)
    };
    let mut q = SchedulingQueue::new();
    q.add(gate(&["a", "b"]), at(0));
    assert_eq!((q.lengths(), q.gated_len()), ((0, 0, 0), 1));
    assert_eq!(pop_name(&mut q, at(400)), None);
    q.add(gate(&["b"]), at(1));
    assert_eq!(q.gated_len(), 1);
    q.on_cluster_event(ClusterEvent::NodeAdded, at(2));
    assert_eq!(q.gated_len(), 1, "events do not ungate");
    q.add(gate(&[]), at(3));
    assert_eq!((q.lengths(), q.gated_len()), ((1, 0, 0), 0));
    assert_eq!(pop_name(&mut q, at(3)), Some("default/p".to_string()));
}
