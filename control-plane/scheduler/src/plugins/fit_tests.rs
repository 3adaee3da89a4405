//! Table tests of NodeResourcesFit (filter and both scoring strategies),
//! NodeResourcesBalancedAllocation, NodePorts and ImageLocality.

#![allow(clippy::type_complexity, reason = "table-test rows are tuples")]

use k8s_openapi::api::core::v1::{Node, Pod};

use super::Code;
use super::fit::*;
use crate::snapshot::Snapshot;
use crate::testing::{node, pod, with_state};

/// Runs `f` for `incoming` on the first node of a snapshot of `nodes` and `bound` pods.
fn on_first<R>(
    incoming: Pod,
    nodes: Vec<Node>,
    bound: Vec<Pod>,
    f: impl FnOnce(&super::CycleState<'_>, &Snapshot) -> R,
) -> R {
    let snapshot = Snapshot::new(nodes, bound);
    with_state(incoming, &snapshot, |state| f(state, &snapshot))
}

#[test]
fn resources_fit_table() {
    let big = || {
        node("n")
            .alloc("cpu=4,memory=16Gi,pods=110,ephemeral-storage=10Gi,example.com/gpu=2")
            .build()
    };
    let busy = || pod("busy").req("cpu=3,memory=8Gi").on("n").build();
    use Code::Unschedulable as U;
    let cases: Vec<(&str, Pod, Node, Vec<Pod>, Option<(Code, Vec<&str>)>)> = vec![
        (
            "fits",
            pod("p").req("cpu=1").build(),
            big(),
            vec![busy()],
            None,
        ),
        (
            "cpu left is too little",
            pod("p").req("cpu=1500m").build(),
            big(),
            vec![busy()],
            Some((U, vec!["Insufficient cpu"])),
        ),
        (
            "more cpu than the node has at all",
            pod("p").req("cpu=5").build(),
            big(),
            vec![],
            Some((U, vec!["Insufficient cpu"])),
        ),
        (
            "cpu and memory both short",
            pod("p").req("cpu=2,memory=9Gi").build(),
            big(),
            vec![busy()],
            Some((U, vec!["Insufficient cpu", "Insufficient memory"])),
        ),
        (
            "ephemeral storage",
            pod("p").req("ephemeral-storage=11Gi").build(),
            big(),
            vec![],
            Some((U, vec!["Insufficient ephemeral-storage"])),
        ),
        (
            "extended resource fits",
            pod("p").req("example.com/gpu=1").build(),
            big(),
            vec![],
            None,
        ),
        (
            "extended resource short",
            pod("p").req("example.com/gpu=1").build(),
            big(),
            vec![pod("g").req("example.com/gpu=2").on("n").build()],
            Some((U, vec!["Insufficient example.com/gpu"])),
        ),
        (
            "extended resource the node lacks",
            pod("p").req("example.com/fpga=1").build(),
            big(),
            vec![],
            Some((U, vec!["Insufficient example.com/fpga"])),
        ),
        (
            "pod slots exhausted",
            pod("p").build(),
            node("n").alloc("cpu=4,memory=1Gi,pods=1").build(),
            vec![pod("q").on("n").build()],
            Some((U, vec![REASON_TOO_MANY_PODS])),
        ),
        (
            "pod slots and cpu",
            pod("p").req("cpu=4").build(),
            node("n").alloc("cpu=4,memory=1Gi,pods=1").build(),
            vec![pod("q").req("cpu=1").on("n").build()],
            Some((U, vec![REASON_TOO_MANY_PODS, "Insufficient cpu"])),
        ),
    ];
    for (name, p, n, bound, want) in cases {
        let got = on_first(p, vec![n], bound, |s, snap| {
            resources_fit(s, &snap.nodes()[0]).err().map(|r| {
                let reasons: Vec<String> = r.reasons.iter().map(|x| x.to_string()).collect();
                (r.code, reasons)
            })
        });
        let want = want.map(|(c, r)| (c, r.iter().map(|s| s.to_string()).collect()));
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn resource_scores_table() {
    let n = || node("n").alloc("cpu=4,memory=16Gi,pods=110").build();
    let half = || pod("b").req("cpu=1,memory=4Gi").on("n").build();
    // (name, incoming, bound, least, most, balanced)
    let cases: Vec<(&str, Pod, Vec<Pod>, i64, i64, i64)> = vec![
        (
            "half used",
            pod("p").req("cpu=1,memory=4Gi").build(),
            vec![half()],
            50,
            50,
            100,
        ),
        // No requests: 100m and 200Mi count for least/most, nothing for balanced.
        (
            "best effort on empty node",
            pod("p").build(),
            vec![],
            97,
            1,
            100,
        ),
        (
            "cpu heavy",
            pod("p").req("cpu=1,memory=2Gi").build(),
            vec![],
            81,
            18,
            93,
        ),
        (
            "over full",
            pod("p").req("cpu=8,memory=32Gi").build(),
            vec![],
            0,
            100,
            100,
        ),
    ];
    for (name, p, bound, least, most, balanced) in cases {
        let got = on_first(p, vec![n()], bound, |s, snap| {
            let node = &snap.nodes()[0];
            (
                resources_fit_score(s, node, ScoringStrategy::LeastAllocated),
                resources_fit_score(s, node, ScoringStrategy::MostAllocated),
                balanced_allocation_score(s, node),
            )
        });
        assert_eq!(got, (least, most, balanced), "{name}");
    }
}

#[test]
fn node_ports_table() {
    let cases: Vec<(&str, Pod, Vec<Pod>, bool)> = vec![
        (
            "no ports",
            pod("p").build(),
            vec![pod("q").host_port(80, "", "").on("n").build()],
            true,
        ),
        (
            "same port, wildcard ip",
            pod("p").host_port(80, "", "").build(),
            vec![pod("q").host_port(80, "", "").on("n").build()],
            false,
        ),
        (
            "same port, different protocol",
            pod("p").host_port(53, "", "UDP").build(),
            vec![pod("q").host_port(53, "", "TCP").on("n").build()],
            true,
        ),
        (
            "same port, different specific ips",
            pod("p").host_port(80, "10.0.0.1", "").build(),
            vec![pod("q").host_port(80, "10.0.0.2", "").on("n").build()],
            true,
        ),
        (
            "specific ip against wildcard",
            pod("p").host_port(80, "10.0.0.1", "").build(),
            vec![pod("q").host_port(80, "0.0.0.0", "").on("n").build()],
            false,
        ),
        (
            "other port",
            pod("p").host_port(81, "", "").build(),
            vec![pod("q").host_port(80, "", "").on("n").build()],
            true,
        ),
    ];
    for (name, p, bound, fits) in cases {
        let got = on_first(p, vec![node("n").build()], bound, |s, snap| {
            node_ports(s, &snap.nodes()[0])
        });
        match got {
            Ok(()) => assert!(fits, "{name}: fits but should not"),
            Err(r) => {
                assert!(!fits, "{name}: rejected");
                assert_eq!(r.reasons[0], REASON_NODE_PORTS, "{name}");
                assert_eq!(r.code, Code::Unschedulable, "{name}");
            }
        }
    }
}

#[test]
fn node_ports_are_released_when_the_pod_goes() {
    let mut snapshot = Snapshot::new(vec![node("n").build()], vec![]);
    let holder = pod("q").host_port(80, "", "").on("n").build();
    snapshot.add_pod(holder.clone());
    let blocked = with_state(pod("p").host_port(80, "", "").build(), &snapshot, |s| {
        node_ports(s, &snapshot.nodes()[0]).is_err()
    });
    assert!(blocked);
    snapshot.remove_pod(&holder);
    let free = with_state(pod("p").host_port(80, "", "").build(), &snapshot, |s| {
        node_ports(s, &snapshot.nodes()[0]).is_ok()
    });
    assert!(free);
}

#[test]
fn image_locality_table() {
    const MB: i64 = 1024 * 1024;
    let cases: Vec<(&str, &str, Vec<Node>, i64)> = vec![
        (
            "image on half the nodes",
            "web:1",
            vec![
                node("a").image("web:1", 500 * MB).build(),
                node("b").build(),
            ],
            23,
        ),
        (
            "image on every node",
            "web:1",
            vec![
                node("a").image("web:1", 500 * MB).build(),
                node("b").image("web:1", 500 * MB).build(),
            ],
            48,
        ),
        (
            "untagged name means latest",
            "web",
            vec![node("a").image("web:latest", 2000 * MB).build()],
            100,
        ),
        (
            "small images score nothing",
            "web:1",
            vec![node("a").image("web:1", 10 * MB).build()],
            0,
        ),
        ("image absent", "web:1", vec![node("a").build()], 0),
    ];
    for (name, image, nodes, want) in cases {
        let got = on_first(pod("p").image(image).build(), nodes, vec![], |s, snap| {
            image_locality_score(s, &snap.nodes()[0], snap)
        });
        assert_eq!(got, want, "{name}");
    }
}
