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

#[test]
fn evicting_an_anti_affine_pod_makes_room() {
    use k8s_openapi::api::core::v1::{Affinity, PodAntiAffinity};
    let anti = Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![crate::testing::term(
                "app=web",
                "kubernetes.io/hostname",
            )]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let snapshot = Snapshot::new(
        vec![node("a").build(), node("b").build()],
        vec![
            pod("a-web").label("app", "web").priority(1).on("a").build(),
            pod("b-web")
                .label("app", "web")
                .priority(100)
                .on("b")
                .build(),
        ],
    );
    let p = pod("p").priority(10).affinity(anti).build();
    let got = attempt(&p, &snapshot, &[]).expect("preemption helps");
    assert_eq!(
        (got.nominated_node.as_str(), names(&got)),
        ("a", vec!["a-web".to_string()])
    );
}

#[test]
fn evicting_a_pod_rebalances_a_hard_spread() {
    let nodes = vec![
        node("a").label("zone", "z1").build(),
        node("b").label("zone", "z2").build(),
    ];
    let web =
        |n: &str, on: &str, prio: i32| pod(n).label("app", "web").priority(prio).on(on).build();
    // z1 holds 2, z2 holds 0 but z2's node is full of a high-priority pod.
    let snapshot = Snapshot::new(
        nodes,
        vec![
            web("w1", "a", 1),
            web("w2", "a", 1),
            pod("big").req("cpu=4").priority(100).on("b").build(),
        ],
    );
    let p = pod("p")
        .req("cpu=1")
        .label("app", "web")
        .priority(10)
        .spread(1, "zone", "DoNotSchedule", "app=web")
        .build();
    let got = attempt(&p, &snapshot, &[]).expect("preemption helps");
    // On a, with z2 empty, any web pod left in z1 makes the skew 2 with the new pod: both go.
    // On b, the only pod outranks the preemptor.
    assert_eq!(got.nominated_node, "a");
    assert_eq!(got.victims.len(), 2, "{got:?}");
}
