//! Tests of a whole scheduling cycle: node sampling, the choice, tie-breaks, the nominated
//! node, and the FitError message (with preemption's verdict) as users read it.

use super::*;
use crate::preemption::preempt;
use crate::testing::{node, pod};

const CP: &str = "node-role.kubernetes.io/control-plane";

#[test]
fn num_feasible_nodes_to_find_table() {
    let cases = [
        (0, 0, 0),
        (50, 0, 50),
        (99, 0, 99),
        (100, 0, 100),
        (1000, 0, 420),
        (5000, 0, 500),
        (6000, 0, 300),
        (20000, 0, 1000),
        (200, 10, 100),
        (5000, 30, 1500),
        (5000, 100, 5000),
    ];
    for (all, pct, want) in cases {
        assert_eq!(
            num_feasible_nodes_to_find(all, pct),
            want,
            "{all} nodes, {pct}%"
        );
    }
}

fn three_nodes() -> Vec<k8s_openapi::api::core::v1::Node> {
    vec![
        node("cp").taint(CP, "", "NoSchedule").build(),
        node("w1").build(),
        node("w2").build(),
    ]
}

#[test]
fn fit_error_reads_like_upstream() {
    let snapshot = Snapshot::new(three_nodes(), vec![]);
    let mut scheduler = Scheduler::new(Config::default(), 1);
    let p = pod("big").req("cpu=8").build();
    let err = scheduler.schedule(&p, &snapshot).expect_err("too big");
    assert_eq!(
        err.message(),
        "0/3 nodes are available: 1 node(s) had untolerated taint \
         {node-role.kubernetes.io/control-plane: }, 2 Insufficient cpu."
    );
    let post = preempt(&p, &snapshot, &err, &[]).expect_err("nothing to preempt");
    assert_eq!(
        err.with_post_filter(post).message(),
        "0/3 nodes are available: 1 node(s) had untolerated taint \
         {node-role.kubernetes.io/control-plane: }, 2 Insufficient cpu. preemption: 0/3 nodes \
         are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims \
         found for incoming pod."
    );
    // A pod that cannot preempt anyone anywhere: every node is "not helpful".
    let tainted = Snapshot::new(
        vec![
            node("t1").taint(CP, "", "NoSchedule").build(),
            node("t2").cordon().build(),
        ],
        vec![],
    );
    let err = scheduler.schedule(&p, &tainted).expect_err("tainted");
    let post = preempt(&p, &tainted, &err, &[]).expect_err("unresolvable");
    assert_eq!(
        err.with_post_filter(post).message(),
        "0/2 nodes are available: 1 node(s) had untolerated taint \
         {node-role.kubernetes.io/control-plane: }, 1 node(s) were unschedulable. preemption: \
         0/2 nodes are available: 2 Preemption is not helpful for scheduling."
    );
}

#[test]
fn fit_error_with_resolvable_nodes_but_no_victims() {
    let busy = |n: &str| {
        pod(&format!("busy-{n}"))
            .req("cpu=3,memory=8Gi")
            .on(n)
            .build()
    };
    let snapshot = Snapshot::new(three_nodes(), vec![busy("w1"), busy("w2")]);
    let mut scheduler = Scheduler::new(Config::default(), 1);
    let p = pod("p").req("cpu=2,memory=10Gi").build();
    let err = scheduler.schedule(&p, &snapshot).expect_err("no room");
    let post = preempt(&p, &snapshot, &err, &[]).expect_err("same priority");
    assert_eq!(
        err.with_post_filter(post).message(),
        "0/3 nodes are available: 1 node(s) had untolerated taint \
         {node-role.kubernetes.io/control-plane: }, 2 Insufficient cpu, 2 Insufficient memory. \
         preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, \
         2 No preemption victims found for incoming pod."
    );
}

#[test]
fn no_nodes_message() {
    let mut scheduler = Scheduler::new(Config::default(), 1);
    let err = scheduler
        .schedule(&pod("p").build(), &Snapshot::default())
        .expect_err("no nodes");
    assert_eq!(err.message(), "no nodes available to schedule pods");
}

#[test]
fn picks_the_least_allocated_node_or_the_most_allocated() {
    let nodes = vec![node("a").build(), node("b").build(), node("c").build()];
    let bound = vec![
        pod("x").req("cpu=2,memory=8Gi").on("a").build(),
        pod("y").req("cpu=1,memory=4Gi").on("c").build(),
    ];
    let snapshot = Snapshot::new(nodes, bound);
    let p = pod("p").req("cpu=1,memory=4Gi").build();
    let least = Scheduler::new(Config::default(), 7)
        .schedule(&p, &snapshot)
        .expect("fits");
    assert_eq!(least.node, "b");
    let config = Config {
        scoring_strategy: ScoringStrategy::MostAllocated,
        ..Config::default()
    };
    let most = Scheduler::new(config, 7)
        .schedule(&p, &snapshot)
        .expect("fits");
    assert_eq!(most.node, "a");
}

#[test]
fn ties_are_broken_by_the_seed() {
    let nodes: Vec<_> = (0..5).map(|i| node(&format!("n{i}")).build()).collect();
    let snapshot = Snapshot::new(nodes, vec![]);
    let p = pod("p").build();
    let run = |seed| {
        let mut s = Scheduler::new(Config::default(), seed);
        (0..20)
            .map(|_| s.schedule(&p, &snapshot).expect("fits").node)
            .collect::<Vec<_>>()
    };
    assert_eq!(run(42), run(42), "same seed, same choices");
    let distinct: std::collections::BTreeSet<String> = run(42).into_iter().collect();
    assert!(distinct.len() >= 3, "ties spread over nodes: {distinct:?}");
}

#[test]
fn large_clusters_sample_nodes_from_a_rotating_start() {
    let nodes: Vec<_> = (0..1000)
        .map(|i| node(&format!("n{i:04}")).build())
        .collect();
    let snapshot = Snapshot::new(nodes, vec![]);
    let mut scheduler = Scheduler::new(Config::default(), 3);
    let p = pod("p").build();
    let first = scheduler.schedule(&p, &snapshot).expect("fits");
    assert_eq!((first.evaluated_nodes, first.feasible_nodes), (420, 420));
    assert!(first.node.as_str() < "n0420", "{}", first.node);
    let second = scheduler.schedule(&p, &snapshot).expect("fits");
    assert!(
        second.node.as_str() >= "n0420" && second.node.as_str() < "n0840",
        "{}",
        second.node
    );
}

#[test]
fn nominated_node_is_tried_first() {
    let nodes = vec![node("a").build(), node("b").build()];
    let snapshot = Snapshot::new(nodes, vec![pod("x").req("cpu=3").on("b").build()]);
    let mut scheduler = Scheduler::new(Config::default(), 1);
    let fits = pod("p").req("cpu=1").nominated("b").build();
    assert_eq!(
        scheduler.schedule(&fits, &snapshot).expect("fits").node,
        "b"
    );
    let does_not_fit = pod("p").req("cpu=2").nominated("b").build();
    assert_eq!(
        scheduler
            .schedule(&does_not_fit, &snapshot)
            .expect("fits")
            .node,
        "a"
    );
}

#[test]
fn filters_run_in_upstream_order_first_failure_wins() {
    // Cordoned and tainted and too small: NodeUnschedulable is reported.
    let nodes = vec![
        node("n")
            .cordon()
            .taint("t", "", "NoSchedule")
            .alloc("cpu=1,memory=1Gi,pods=10")
            .build(),
    ];
    let snapshot = Snapshot::new(nodes, vec![]);
    let err = Scheduler::new(Config::default(), 1)
        .schedule(&pod("p").req("cpu=2").build(), &snapshot)
        .expect_err("no fit");
    assert_eq!(
        err.message(),
        "0/1 nodes are available: 1 node(s) were unschedulable."
    );
}
