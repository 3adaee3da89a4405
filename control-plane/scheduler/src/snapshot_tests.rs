//! Tests of the incremental snapshot: sums follow pods and nodes coming and going.

use super::*;
use crate::testing::{node, pod};

fn requested(s: &Snapshot, n: &str) -> (i64, i64, usize) {
    let info = s.node(n).expect("node");
    (
        info.requested.milli_cpu,
        info.requested.memory,
        info.pods.len(),
    )
}

#[test]
fn pods_add_and_remove_their_requests() {
    let mut s = Snapshot::new(vec![node("a").build(), node("b").build()], vec![]);
    let p1 = pod("p1").req("cpu=500m,memory=1Gi").on("a").build();
    let p2 = pod("p2").req("cpu=1").on("a").build();
    s.add_pod(p1.clone());
    s.add_pod(p2);
    assert_eq!(requested(&s, "a"), (1500, 1 << 30, 2));
    s.add_pod(p1.clone());
    assert_eq!(requested(&s, "a"), (1500, 1 << 30, 2), "re-adding replaces");
    s.remove_pod(&p1);
    assert_eq!(requested(&s, "a"), (1000, 0, 1));
    assert_eq!(s.pod_count(), 1);
    // Non-zero requests: p2 has no memory request, counted at 200Mi.
    assert_eq!(s.node("a").expect("a").non_zero_memory, 200 * 1024 * 1024);
}

#[test]
fn unbound_and_terminal_pods_are_ignored() {
    let mut s = Snapshot::new(vec![node("a").build()], vec![]);
    s.add_pod(pod("pending").req("cpu=1").build());
    let mut done = pod("done").req("cpu=1").on("a").build();
    done.status = Some(k8s_openapi::api::core::v1::PodStatus {
        phase: Some("Succeeded".to_string()),
        ..Default::default()
    });
    s.add_pod(done);
    assert_eq!(requested(&s, "a"), (0, 0, 0));
}

#[test]
fn nodes_keep_their_pods_across_updates_and_removal() {
    let mut s = Snapshot::new(vec![node("a").build(), node("b").build()], vec![]);
    s.add_pod(pod("p").req("cpu=1").on("a").build());
    s.upsert_node(node("a").label("zone", "z").build());
    assert_eq!(requested(&s, "a"), (1000, 0, 1));
    assert_eq!(
        s.node("a")
            .expect("a")
            .labels()
            .get("zone")
            .map(String::as_str),
        Some("z")
    );
    s.remove_node("a");
    assert!(s.node("a").is_none());
    assert_eq!(s.nodes().len(), 1);
    assert_eq!(s.node("b").expect("b still indexed").name, "b");
    s.upsert_node(node("a").build());
    assert_eq!(
        requested(&s, "a"),
        (1000, 0, 1),
        "pods kept while the node was away"
    );
    // A pod bound to a node not seen yet lands when the node appears.
    s.add_pod(pod("early").req("cpu=2").on("c").build());
    s.upsert_node(node("c").build());
    assert_eq!(requested(&s, "c"), (2000, 0, 1));
}

#[test]
fn image_counts_follow_nodes() {
    let mut s = Snapshot::new(
        vec![
            node("a").image("web:1", 10).build(),
            node("b").image("web:1", 10).image("db", 5).build(),
        ],
        vec![],
    );
    assert_eq!(s.nodes_with_image("web:1"), 2);
    assert_eq!(s.nodes_with_image("db:latest"), 1);
    s.upsert_node(node("b").build());
    assert_eq!(s.nodes_with_image("web:1"), 1);
    assert_eq!(s.nodes_with_image("db:latest"), 0);
    s.remove_node("a");
    assert_eq!(s.nodes_with_image("web:1"), 0);
}

#[test]
fn image_name_normalisation() {
    let cases = [
        ("nginx", "nginx:latest"),
        ("nginx:1.25", "nginx:1.25"),
        ("registry:5000/app", "registry:5000/app:latest"),
        ("registry:5000/app:v2", "registry:5000/app:v2"),
        ("app@sha256:abc", "app@sha256:abc"),
    ];
    for (input, want) in cases {
        assert_eq!(normalized_image_name(input), want, "{input}");
    }
}
