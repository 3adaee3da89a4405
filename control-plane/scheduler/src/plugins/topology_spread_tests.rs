//! Table tests of PodTopologySpread: hard constraints as a filter, soft ones as a score.

use k8s_openapi::api::core::v1::{Node, Pod};

use super::Code;
use super::topology_spread::*;
use crate::snapshot::Snapshot;
use crate::testing::{node, pod, with_state};

fn zoned() -> Vec<Node> {
    vec![
        node("n1").label("zone", "a").build(),
        node("n2").label("zone", "a").build(),
        node("n3").label("zone", "b").build(),
        node("bare").build(),
    ]
}

fn web(name: &str, on: &str) -> Pod {
    pod(name).label("app", "web").on(on).build()
}

/// The filter verdict per node of `zoned()`: "ok", "skew" or "label".
fn verdicts(incoming: Pod, bound: Vec<Pod>) -> Vec<&'static str> {
    let snapshot = Snapshot::new(zoned(), bound);
    with_state(incoming, &snapshot, |s| {
        snapshot
            .nodes()
            .iter()
            .map(|n| match filter(s, n) {
                Ok(()) => "ok",
                Err(r) if r.reasons[0] == REASON_MISSING_LABEL => {
                    assert_eq!(r.code, Code::UnschedulableAndUnresolvable);
                    "label"
                }
                Err(r) => {
                    assert_eq!(r.reasons[0], REASON_CONSTRAINTS_NOT_MATCH);
                    assert_eq!(r.code, Code::Unschedulable);
                    "skew"
                }
            })
            .collect()
    })
}

#[test]
fn hard_constraints_table() {
    let spread = |skew| {
        pod("p")
            .label("app", "web")
            .spread(skew, "zone", "DoNotSchedule", "app=web")
    };
    let min_domains = |n: i32| {
        let mut p = spread(1).build();
        if let Some(c) = p
            .spec
            .as_mut()
            .and_then(|s| s.topology_spread_constraints.as_mut())
        {
            c[0].min_domains = Some(n);
        }
        p
    };
    let cases: Vec<(&str, Pod, Vec<Pod>, Vec<&str>)> = vec![
        (
            "empty cluster",
            spread(1).build(),
            vec![],
            vec!["ok", "ok", "ok", "label"],
        ),
        (
            "zone a ahead by two",
            spread(1).build(),
            vec![web("w1", "n1"), web("w2", "n2")],
            vec!["skew", "skew", "ok", "label"],
        ),
        (
            "maxSkew 3 allows it",
            spread(3).build(),
            vec![web("w1", "n1"), web("w2", "n2")],
            vec!["ok", "ok", "ok", "label"],
        ),
        (
            "balanced zones",
            spread(1).build(),
            vec![web("w1", "n1"), web("w2", "n3")],
            vec!["ok", "ok", "ok", "label"],
        ),
        (
            "minDomains above the domain count makes the minimum 0",
            min_domains(3),
            vec![web("w1", "n1"), web("w2", "n3")],
            vec!["skew", "skew", "skew", "label"],
        ),
        (
            "pods in other namespaces do not count",
            spread(1).build(),
            vec![
                pod("o1").ns("other").label("app", "web").on("n1").build(),
                pod("o2").ns("other").label("app", "web").on("n1").build(),
            ],
            vec!["ok", "ok", "ok", "label"],
        ),
        (
            "a pod not matching its own selector adds nothing",
            pod("p")
                .label("app", "api")
                .spread(1, "zone", "DoNotSchedule", "app=web")
                .build(),
            vec![web("w1", "n1")],
            vec!["ok", "ok", "ok", "label"],
        ),
        (
            "nodes excluded by the node selector do not form domains",
            spread(1).node_selector("zone=a").build(),
            vec![web("w1", "n1"), web("w2", "n2")],
            vec!["ok", "ok", "ok", "label"],
        ),
    ];
    for (name, p, bound, want) in cases {
        assert_eq!(verdicts(p, bound), want, "{name}");
    }
}

#[test]
fn soft_constraints_prefer_the_emptier_zone() {
    let p = pod("p")
        .label("app", "web")
        .spread(1, "zone", "ScheduleAnyway", "app=web")
        .build();
    let snapshot = Snapshot::new(zoned(), vec![web("w1", "n1"), web("w2", "n2")]);
    let feasible: Vec<usize> = (0..snapshot.nodes().len()).collect();
    let scores = with_state(p, &snapshot, |s| {
        let soft = pre_score(s, &snapshot, &feasible).expect("soft constraints");
        let raw: Vec<Option<i64>> = snapshot
            .nodes()
            .iter()
            .map(|n| score(&soft, s, n))
            .collect();
        normalize(&raw)
    });
    // zone a holds 2 matching pods (raw 3 = round(2·ln 4)), zone b none; "bare" is ignored.
    assert_eq!(scores, vec![0, 0, 100, 0]);
}

#[test]
fn soft_hostname_constraint_counts_per_node() {
    let p = pod("p")
        .label("app", "web")
        .spread(1, HOSTNAME_LABEL, "ScheduleAnyway", "app=web")
        .build();
    let snapshot = Snapshot::new(
        zoned(),
        vec![web("w1", "n1"), web("w2", "n1"), web("w3", "n2")],
    );
    let feasible: Vec<usize> = (0..snapshot.nodes().len()).collect();
    let scores = with_state(p, &snapshot, |s| {
        let soft = pre_score(s, &snapshot, &feasible).expect("soft constraints");
        let raw: Vec<Option<i64>> = snapshot
            .nodes()
            .iter()
            .map(|n| score(&soft, s, n))
            .collect();
        normalize(&raw)
    });
    // 4 nodes have a hostname: weight ln 6; raw n1 = 4, n2 = 2, n3 = bare = 0.
    assert_eq!(scores, vec![0, 50, 100, 100]);
}

#[test]
fn system_default_constraints_spread_replicas_and_keep_unzoned_nodes() {
    let p = pod("p").label("app", "web").build();
    let snapshot = Snapshot::new(
        zoned(),
        vec![web("w1", "n1"), web("w2", "n1"), web("w3", "n2")],
    );
    let feasible: Vec<usize> = (0..snapshot.nodes().len()).collect();
    let info = crate::testing::pod_info(p);
    let selector = crate::testing::selector("app=web");
    let state =
        crate::framework::CycleState::with_default_spread(&info, &snapshot, Some(&selector));
    assert!(!state.soft_spread_requires_all_keys);
    let soft = pre_score(&state, &snapshot, &feasible).expect("default constraints");
    let raw: Vec<Option<i64>> = snapshot
        .nodes()
        .iter()
        .map(|n| score(&soft, &state, n))
        .collect();
    // Nodes have no zone label under ZONE_LABEL: only the hostname constraint (maxSkew 3,
    // weight ln 6) counts, and no node is ignored.
    assert_eq!(raw, vec![Some(6), Some(4), Some(2), Some(2)]);
    assert_eq!(normalize(&raw), vec![33, 66, 100, 100]);
}
