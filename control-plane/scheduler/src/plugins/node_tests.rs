//! Table tests of the node-only plugins: NodeUnschedulable, NodeName, TaintToleration and
//! NodeAffinity.

use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PreferredSchedulingTerm,
};

use super::node::*;
use super::{Code, FilterResult};
use crate::framework::CycleState;
use crate::snapshot::{NodeInfo, Snapshot};
use crate::testing::{node, pod, with_state};

type Filter = fn(&CycleState<'_>, &NodeInfo) -> FilterResult;

/// The filter's verdict: `None` when the node fits, else (code, first reason).
fn verdict(filter: Filter, pod: Pod, node: Node) -> Option<(Code, String)> {
    let snapshot = Snapshot::new(vec![node], vec![]);
    with_state(pod, &snapshot, |state| {
        filter(state, &snapshot.nodes()[0])
            .err()
            .map(|r| (r.code, r.reasons[0].to_string()))
    })
}

const UNRESOLVABLE: Code = Code::UnschedulableAndUnresolvable;

#[test]
fn node_unschedulable_table() {
    let cases: Vec<(&str, Pod, Node, Option<&str>)> = vec![
        (
            "schedulable node",
            pod("p").build(),
            node("n").build(),
            None,
        ),
        (
            "cordoned node",
            pod("p").build(),
            node("n").cordon().build(),
            Some(REASON_UNSCHEDULABLE),
        ),
        (
            "cordoned node, pod tolerates the unschedulable taint",
            pod("p")
                .tolerate(UNSCHEDULABLE_TAINT_KEY, "Exists", "", "NoSchedule")
                .build(),
            node("n").cordon().build(),
            None,
        ),
        (
            "cordoned node, toleration for another effect",
            pod("p")
                .tolerate(UNSCHEDULABLE_TAINT_KEY, "Exists", "", "NoExecute")
                .build(),
            node("n").cordon().build(),
            Some(REASON_UNSCHEDULABLE),
        ),
        (
            "cordoned node, tolerate everything",
            pod("p").tolerate("", "Exists", "", "").build(),
            node("n").cordon().build(),
            None,
        ),
    ];
    for (name, p, n, want) in cases {
        let got = verdict(node_unschedulable, p, n);
        assert_eq!(got, want.map(|r| (UNRESOLVABLE, r.to_string())), "{name}");
    }
}

#[test]
fn node_name_table() {
    let cases = vec![
        ("no node name", pod("p").build(), None),
        ("same node", pod("p").on("n").build(), None),
        (
            "other node",
            pod("p").on("m").build(),
            Some(REASON_NODE_NAME),
        ),
    ];
    for (name, p, want) in cases {
        let got = verdict(super::node::node_name, p, node("n").build());
        assert_eq!(got, want.map(|r| (UNRESOLVABLE, r.to_string())), "{name}");
    }
}

#[test]
fn taint_toleration_filter_table() {
    let cp = "node-role.kubernetes.io/control-plane";
    let cases: Vec<(&str, Pod, Node, Option<&str>)> = vec![
        ("no taints", pod("p").build(), node("n").build(), None),
        (
            "NoSchedule taint not tolerated",
            pod("p").build(),
            node("n").taint(cp, "", "NoSchedule").build(),
            Some("node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }"),
        ),
        (
            "NoExecute taint with a value not tolerated",
            pod("p").build(),
            node("n").taint("dedicated", "gpu", "NoExecute").build(),
            Some("node(s) had untolerated taint {dedicated: gpu}"),
        ),
        (
            "PreferNoSchedule does not filter",
            pod("p").build(),
            node("n").taint("soft", "", "PreferNoSchedule").build(),
            None,
        ),
        (
            "Exists toleration",
            pod("p").tolerate(cp, "Exists", "", "NoSchedule").build(),
            node("n").taint(cp, "", "NoSchedule").build(),
            None,
        ),
        (
            "Equal toleration with the right value",
            pod("p").tolerate("dedicated", "Equal", "gpu", "").build(),
            node("n").taint("dedicated", "gpu", "NoSchedule").build(),
            None,
        ),
        (
            "Equal toleration with a wrong value",
            pod("p").tolerate("dedicated", "", "cpu", "").build(),
            node("n").taint("dedicated", "gpu", "NoSchedule").build(),
            Some("node(s) had untolerated taint {dedicated: gpu}"),
        ),
        (
            "toleration for the wrong effect",
            pod("p")
                .tolerate("dedicated", "Exists", "", "NoExecute")
                .build(),
            node("n").taint("dedicated", "gpu", "NoSchedule").build(),
            Some("node(s) had untolerated taint {dedicated: gpu}"),
        ),
        (
            "first untolerated taint is reported",
            pod("p").tolerate("a", "Exists", "", "").build(),
            node("n")
                .taint("a", "", "NoSchedule")
                .taint("b", "1", "NoSchedule")
                .taint("c", "2", "NoSchedule")
                .build(),
            Some("node(s) had untolerated taint {b: 1}"),
        ),
    ];
    for (name, p, n, want) in cases {
        let got = verdict(taint_toleration, p, n);
        assert_eq!(got, want.map(|r| (UNRESOLVABLE, r.to_string())), "{name}");
    }
}

#[test]
fn taint_toleration_score_counts_untolerated_prefer_no_schedule() {
    let cases = vec![
        ("no taints", pod("p").build(), node("n").build(), 0),
        (
            "two soft taints",
            pod("p").build(),
            node("n")
                .taint("a", "", "PreferNoSchedule")
                .taint("b", "", "PreferNoSchedule")
                .taint("c", "", "NoSchedule")
                .build(),
            2,
        ),
        (
            "one tolerated",
            pod("p")
                .tolerate("a", "Exists", "", "PreferNoSchedule")
                .build(),
            node("n")
                .taint("a", "", "PreferNoSchedule")
                .taint("b", "", "PreferNoSchedule")
                .build(),
            1,
        ),
        (
            "a NoSchedule toleration does not count for scoring",
            pod("p").tolerate("a", "Exists", "", "NoSchedule").build(),
            node("n").taint("a", "", "PreferNoSchedule").build(),
            1,
        ),
    ];
    for (name, p, n, want) in cases {
        let snapshot = Snapshot::new(vec![n], vec![]);
        let got = with_state(p, &snapshot, |s| {
            taint_toleration_score(s, &snapshot.nodes()[0])
        });
        assert_eq!(got, want, "{name}");
    }
}

fn req(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
    NodeSelectorRequirement {
        key: key.to_string(),
        operator: op.to_string(),
        values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
    }
}

fn required(terms: Vec<NodeSelectorTerm>) -> Affinity {
    Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: terms,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn exprs(reqs: Vec<NodeSelectorRequirement>) -> NodeSelectorTerm {
    NodeSelectorTerm {
        match_expressions: Some(reqs),
        match_fields: None,
    }
}

#[test]
fn node_affinity_filter_table() {
    let n = || node("n1").label("zone", "a").label("cores", "8").build();
    let fields = |op: &str, names: &[&str]| NodeSelectorTerm {
        match_expressions: None,
        match_fields: Some(vec![req("metadata.name", op, names)]),
    };
    let cases: Vec<(&str, Affinity, bool)> = vec![
        (
            "In matches",
            required(vec![exprs(vec![req("zone", "In", &["a", "b"])])]),
            true,
        ),
        (
            "In misses",
            required(vec![exprs(vec![req("zone", "In", &["b"])])]),
            false,
        ),
        (
            "NotIn",
            required(vec![exprs(vec![req("zone", "NotIn", &["b"])])]),
            true,
        ),
        (
            "NotIn on absent label",
            required(vec![exprs(vec![req("x", "NotIn", &["b"])])]),
            true,
        ),
        (
            "NotIn misses",
            required(vec![exprs(vec![req("zone", "NotIn", &["a"])])]),
            false,
        ),
        (
            "Exists",
            required(vec![exprs(vec![req("zone", "Exists", &[])])]),
            true,
        ),
        (
            "Exists misses",
            required(vec![exprs(vec![req("gpu", "Exists", &[])])]),
            false,
        ),
        (
            "DoesNotExist",
            required(vec![exprs(vec![req("gpu", "DoesNotExist", &[])])]),
            true,
        ),
        (
            "DoesNotExist misses",
            required(vec![exprs(vec![req("zone", "DoesNotExist", &[])])]),
            false,
        ),
        (
            "Gt",
            required(vec![exprs(vec![req("cores", "Gt", &["4"])])]),
            true,
        ),
        (
            "Gt equal fails",
            required(vec![exprs(vec![req("cores", "Gt", &["8"])])]),
            false,
        ),
        (
            "Lt",
            required(vec![exprs(vec![req("cores", "Lt", &["16"])])]),
            true,
        ),
        (
            "Lt on non-number fails",
            required(vec![exprs(vec![req("zone", "Lt", &["16"])])]),
            false,
        ),
        (
            "expressions are ANDed",
            required(vec![exprs(vec![
                req("zone", "In", &["a"]),
                req("cores", "Gt", &["9"]),
            ])]),
            false,
        ),
        (
            "terms are ORed",
            required(vec![
                exprs(vec![req("zone", "In", &["b"])]),
                exprs(vec![req("zone", "In", &["a"])]),
            ]),
            true,
        ),
        (
            "empty term selects nothing",
            required(vec![exprs(vec![])]),
            false,
        ),
        ("no terms selects nothing", required(vec![]), false),
        (
            "matchFields metadata.name In",
            required(vec![fields("In", &["n1"])]),
            true,
        ),
        (
            "matchFields metadata.name In other",
            required(vec![fields("In", &["n2"])]),
            false,
        ),
        (
            "matchFields metadata.name NotIn",
            required(vec![fields("NotIn", &["n2"])]),
            true,
        ),
        (
            "matchFields Exists is invalid",
            required(vec![fields("Exists", &[])]),
            false,
        ),
    ];
    for (name, affinity, fits) in cases {
        let got = verdict(node_affinity, pod("p").affinity(affinity).build(), n());
        let want = (!fits).then(|| (UNRESOLVABLE, REASON_NODE_AFFINITY.to_string()));
        assert_eq!(got, want, "{name}");
    }
    // nodeSelector and affinity must both match.
    let p = pod("p")
        .node_selector("zone=a")
        .affinity(required(vec![exprs(vec![req("cores", "Lt", &["4"])])]))
        .build();
    assert!(verdict(node_affinity, p, n()).is_some());
    assert!(verdict(node_affinity, pod("p").node_selector("zone=a").build(), n()).is_none());
    assert!(verdict(node_affinity, pod("p").node_selector("zone=b").build(), n()).is_some());
}

#[test]
fn node_affinity_score_sums_matching_preferred_weights() {
    let preferred = Affinity {
        node_affinity: Some(NodeAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                PreferredSchedulingTerm {
                    weight: 5,
                    preference: exprs(vec![req("zone", "In", &["a"])]),
                },
                PreferredSchedulingTerm {
                    weight: 3,
                    preference: exprs(vec![req("disk", "Exists", &[])]),
                },
            ]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let cases = vec![
        (
            "both",
            node("n").label("zone", "a").label("disk", "ssd").build(),
            8,
        ),
        ("zone only", node("n").label("zone", "a").build(), 5),
        (
            "disk only",
            node("n").label("zone", "b").label("disk", "x").build(),
            3,
        ),
        ("none", node("n").build(), 0),
    ];
    for (name, n, want) in cases {
        let snapshot = Snapshot::new(vec![n], vec![]);
        let p = pod("p").affinity(preferred.clone()).build();
        let got = with_state(p, &snapshot, |s| {
            node_affinity_score(s, &snapshot.nodes()[0])
        });
        assert_eq!(got, want, "{name}");
    }
}
