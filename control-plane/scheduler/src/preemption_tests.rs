//! Tests of DefaultPreemption: which node and which victims, PDBs as a tie-breaker, and the
//! messages when preemption cannot help.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::{
    PodDisruptionBudget, PodDisruptionBudgetSpec, PodDisruptionBudgetStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;
use crate::framework::{Config, Scheduler};
use crate::testing::{node, pod, selector};

fn attempt(
    incoming: &Pod,
    snapshot: &Snapshot,
    pdbs: &[PodDisruptionBudget],
) -> Result<Preemption, String> {
    let err = Scheduler::new(Config::default(), 1)
        .schedule(incoming, snapshot)
        .expect_err("does not fit without preemption");
    preempt(incoming, snapshot, &err, pdbs)
}

fn names(p: &Preemption) -> Vec<String> {
    p.victims
        .iter()
        .map(|v| v.metadata.name.clone().unwrap_or_default())
        .collect()
}

#[test]
fn evicts_the_fewest_lowest_priority_pods() {
    let nodes = vec![node("a").build(), node("b").build()];
    let bound = vec![
        pod("a-low").req("cpu=2").priority(1).on("a").build(),
        pod("a-mid").req("cpu=2").priority(5).on("a").build(),
        pod("b-low1").req("cpu=1").priority(1).on("b").build(),
        pod("b-low2").req("cpu=1").priority(1).on("b").build(),
        pod("b-low3").req("cpu=2").priority(1).on("b").build(),
    ];
    let snapshot = Snapshot::new(nodes, bound);
    let p = pod("p").req("cpu=2").priority(10).build();
    let got = attempt(&p, &snapshot, &[]).expect("preemption helps");
    // Node a: evict a-low (priority 1). Node b: evict b-low3 alone (put back the 1-cpu ones).
    // Same highest priority and sum tie-break favours one victim either way; a-low's node
    // has sum (1+2^31), b has (1+2^31): first candidate wins.
    assert_eq!(got.victims.len(), 1);
    assert!(
        matches!(
            (got.nominated_node.as_str(), names(&got)[0].as_str()),
            ("a", "a-low") | ("b", "b-low3")
        ),
        "{got:?}"
    );
}

#[test]
fn prefers_the_node_with_lower_priority_victims() {
    let nodes = vec![node("a").build(), node("b").build()];
    let bound = vec![
        pod("a1").req("cpu=4").priority(5).on("a").build(),
        pod("b1").req("cpu=4").priority(2).on("b").build(),
    ];
    let snapshot = Snapshot::new(nodes, bound);
    let got = attempt(&pod("p").req("cpu=1").priority(10).build(), &snapshot, &[])
        .expect("preemption helps");
    assert_eq!(
        (got.nominated_node.as_str(), names(&got)),
        ("b", vec!["b1".to_string()])
    );
}

#[test]
fn prefers_fewer_victims_at_equal_priority() {
    let nodes = vec![node("a").build(), node("b").build()];
    let bound = vec![
        pod("a1").req("cpu=2").priority(1).on("a").build(),
        pod("a2").req("cpu=2").priority(1).on("a").build(),
        pod("b1").req("cpu=4").priority(1).on("b").build(),
    ];
    let snapshot = Snapshot::new(nodes, bound);
    let got = attempt(&pod("p").req("cpu=3").priority(10).build(), &snapshot, &[])
        .expect("preemption helps");
    assert_eq!(
        (got.nominated_node.as_str(), names(&got)),
        ("b", vec!["b1".to_string()])
    );
}

#[test]
fn pdbs_break_ties() {
    let nodes = vec![node("a").build(), node("b").build()];
    let bound = vec![
        pod("a1")
            .req("cpu=4")
            .priority(1)
            .label("app", "guarded")
            .on("a")
            .build(),
        pod("b1").req("cpu=4").priority(1).on("b").build(),
    ];
    let pdb = PodDisruptionBudget {
        metadata: ObjectMeta {
            name: Some("guard".to_string()),
            namespace: Some("default".to_string()),
            ..Default::default()
        },
        spec: Some(PodDisruptionBudgetSpec {
            selector: Some(selector("app=guarded")),
            ..Default::default()
        }),
        status: Some(PodDisruptionBudgetStatus {
            disruptions_allowed: 0,
            ..Default::default()
        }),
    };
    let snapshot = Snapshot::new(nodes, bound);
    let got = attempt(
        &pod("p").req("cpu=1").priority(10).build(),
        &snapshot,
        &[pdb],
    )
    .expect("preemption helps");
    assert_eq!((got.nominated_node.as_str(), got.pdb_violations), ("b", 0));
}

#[test]
fn never_preempting_pods_are_not_eligible() {
    let snapshot = Snapshot::new(
        vec![node("a").build()],
        vec![pod("x").req("cpu=4").on("a").build()],
    );
    let mut p = pod("p").req("cpu=1").priority(10).build();
    if let Some(spec) = p.spec.as_mut() {
        spec.preemption_policy = Some("Never".to_string());
    }
    assert_eq!(
        attempt(&p, &snapshot, &[]),
        Err("preemption: not eligible due to preemptionPolicy=Never".to_string())
    );
}

#[test]
fn evicting_everything_is_not_enough() {
    let snapshot = Snapshot::new(
        vec![node("a").alloc("cpu=4,memory=1Gi,pods=10").build()],
        vec![
            pod("x").req("cpu=1").priority(1).on("a").build(),
            pod("y").req("cpu=2").priority(50).on("a").build(),
        ],
    );
    assert_eq!(
        attempt(&pod("p").req("cpu=3").priority(10).build(), &snapshot, &[]),
        Err("preemption: 0/1 nodes are available: 1 Insufficient cpu".to_string())
    );
}
