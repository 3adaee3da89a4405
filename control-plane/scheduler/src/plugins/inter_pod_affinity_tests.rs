//! Table tests of InterPodAffinity: required affinity, anti-affinity, existing pods'
//! anti-affinity, and the preferred-terms score.

#![allow(clippy::type_complexity, reason = "table-test rows are tuples")]

use k8s_openapi::api::core::v1::{
    Affinity, Node, Pod, PodAffinity, PodAffinityTerm, PodAntiAffinity, WeightedPodAffinityTerm,
};

use super::inter_pod_affinity::*;
use super::{Code, CycleState};
use crate::snapshot::Snapshot;
use crate::testing::{node, pod, term, with_state};

fn nodes() -> Vec<Node> {
    vec![
        node("n1").label("zone", "a").build(),
        node("n2").label("zone", "a").build(),
        node("n3").label("zone", "b").build(),
        node("bare").build(),
    ]
}

fn affinity(terms: Vec<PodAffinityTerm>) -> Affinity {
    Affinity {
        pod_affinity: Some(PodAffinity {
            required_during_scheduling_ignored_during_execution: Some(terms),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn anti(terms: Vec<PodAffinityTerm>) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: Some(terms),
            ..Default::default()
        }),
        ..Default::default()
    }
}

const HOST: &str = "kubernetes.io/hostname";

/// Per node: "ok", "affinity", "anti" or "existing".
fn verdicts(incoming: Pod, bound: Vec<Pod>) -> Vec<&'static str> {
    let snapshot = Snapshot::new(nodes(), bound);
    with_state(incoming, &snapshot, |s: &CycleState<'_>| {
        snapshot
            .nodes()
            .iter()
            .map(|n| match filter(s, n, &snapshot) {
                Ok(()) => "ok",
                Err(r) => match r.reasons[0].as_ref() {
                    REASON_AFFINITY => {
                        assert_eq!(r.code, Code::UnschedulableAndUnresolvable);
                        "affinity"
                    }
                    REASON_ANTI_AFFINITY => "anti",
                    REASON_EXISTING_ANTI_AFFINITY => "existing",
                    other => panic!("unexpected reason {other}"),
                },
            })
            .collect()
    })
}

#[test]
fn required_terms_table() {
    let db = |on: &str| pod("db").label("app", "db").on(on).build();
    let web = |name: &str, on: &str| pod(name).label("app", "web").on(on).build();
    let cases: Vec<(&str, Pod, Vec<Pod>, Vec<&str>)> = vec![
        (
            "affinity to the db zone",
            pod("p")
                .affinity(affinity(vec![term("app=db", "zone")]))
                .build(),
            vec![db("n1")],
            vec!["ok", "ok", "affinity", "affinity"],
        ),
        (
            "affinity with no matching pod anywhere",
            pod("p")
                .affinity(affinity(vec![term("app=db", "zone")]))
                .build(),
            vec![],
            vec!["affinity", "affinity", "affinity", "affinity"],
        ),
        (
            "first pod of a self-affine group goes where the key exists",
            pod("p")
                .label("app", "db")
                .affinity(affinity(vec![term("app=db", "zone")]))
                .build(),
            vec![],
            vec!["ok", "ok", "ok", "affinity"],
        ),
        (
            "affinity ignores pods of other namespaces",
            pod("p")
                .affinity(affinity(vec![term("app=db", "zone")]))
                .build(),
            vec![pod("db").ns("other").label("app", "db").on("n1").build()],
            vec!["affinity", "affinity", "affinity", "affinity"],
        ),
        (
            "anti-affinity per host",
            pod("p").affinity(anti(vec![term("app=web", HOST)])).build(),
            vec![web("w1", "n1")],
            vec!["anti", "ok", "ok", "ok"],
        ),
        (
            "anti-affinity per zone",
            pod("p")
                .affinity(anti(vec![term("app=web", "zone")]))
                .build(),
            vec![web("w1", "n1")],
            vec!["anti", "anti", "ok", "ok"],
        ),
        (
            "existing pod's anti-affinity repels the incoming pod",
            pod("p").label("app", "web").build(),
            vec![
                pod("guard")
                    .affinity(anti(vec![term("app=web", "zone")]))
                    .on("n1")
                    .build(),
            ],
            vec!["existing", "existing", "ok", "ok"],
        ),
        (
            "existing anti-affinity that does not select the pod",
            pod("p").label("app", "api").build(),
            vec![
                pod("guard")
                    .affinity(anti(vec![term("app=web", "zone")]))
                    .on("n1")
                    .build(),
            ],
            vec!["ok", "ok", "ok", "ok"],
        ),
    ];
    for (name, p, bound, want) in cases {
        assert_eq!(verdicts(p, bound), want, "{name}");
    }
}

#[test]
fn preferred_terms_score_table() {
    let preferred = |weight: i32, anti_side: bool| {
        let terms = vec![WeightedPodAffinityTerm {
            weight,
            pod_affinity_term: term("app=db", "zone"),
        }];
        if anti_side {
            Affinity {
                pod_anti_affinity: Some(PodAntiAffinity {
                    preferred_during_scheduling_ignored_during_execution: Some(terms),
                    ..Default::default()
                }),
                ..Default::default()
            }
        } else {
            Affinity {
                pod_affinity: Some(PodAffinity {
                    preferred_during_scheduling_ignored_during_execution: Some(terms),
                    ..Default::default()
                }),
                ..Default::default()
            }
        }
    };
    let db = pod("db").label("app", "db").on("n1").build();
    let cases: Vec<(&str, Pod, Vec<Pod>, Option<Vec<i64>>)> = vec![
        (
            "no terms anywhere",
            pod("p").build(),
            vec![db.clone()],
            None,
        ),
        (
            "preferred affinity to the db zone",
            pod("p").affinity(preferred(10, false)).build(),
            vec![db.clone()],
            Some(vec![100, 100, 0, 0]),
        ),
        (
            "preferred anti-affinity",
            pod("p").affinity(preferred(10, true)).build(),
            vec![db],
            Some(vec![0, 0, 100, 100]),
        ),
        (
            "existing pod's required affinity attracts at the hard weight",
            pod("p").label("app", "db").build(),
            vec![
                pod("fan")
                    .affinity(affinity(vec![term("app=db", "zone")]))
                    .on("n3")
                    .build(),
            ],
            Some(vec![0, 0, 100, 0]),
        ),
    ];
    for (name, p, bound, want) in cases {
        let snapshot = Snapshot::new(nodes(), bound);
        let got = with_state(p, &snapshot, |s| {
            pre_score(s.pod, &snapshot, 1).map(|topology| {
                let mut scores: Vec<i64> = snapshot
                    .nodes()
                    .iter()
                    .map(|n| score(&topology, n))
                    .collect();
                normalize(&mut scores);
                scores
            })
        });
        assert_eq!(got, want, "{name}");
    }
}
