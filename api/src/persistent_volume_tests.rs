//! Table tests of volume matching: which volume a claim gets on each path.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use serde_json::json;

use super::*;

fn pv(name: &str, size: &str, extra: serde_json::Value) -> PersistentVolume {
    let mut value = json!({
        "metadata": {"name": name, "resourceVersion": "5"},
        "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"],
                 "storageClassName": "local"},
        "status": {"phase": "Available"},
    });
    merge(&mut value, extra);
    serde_json::from_value(value).expect("pv")
}

fn claim(extra: serde_json::Value) -> PersistentVolumeClaim {
    let mut value = json!({
        "metadata": {"name": "data", "namespace": "ns", "uid": "uid-data", "resourceVersion": "9"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "local",
                 "resources": {"requests": {"storage": "1Gi"}}},
    });
    merge(&mut value, extra);
    serde_json::from_value(value).expect("claim")
}

fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
    match (base, extra) {
        (serde_json::Value::Object(b), serde_json::Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, e) => *b = e,
    }
}

fn on_node(pv: &PersistentVolume) -> bool {
    pv.metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.get("node").map(String::as_str) == Some("b"))
}

/// (what, volumes, prebound_only, on node b only, expected).
type Case = (
    &'static str,
    Vec<PersistentVolume>,
    bool,
    bool,
    Option<&'static str>,
);

#[test]
fn the_claim_gets_the_volume_upstream_would_pick() {
    let prebound = || json!({"spec": {"claimRef": {"namespace": "ns", "name": "data"}}});
    let elsewhere =
        || json!({"spec": {"claimRef": {"namespace": "ns", "name": "other", "uid": "u"}}});
    let on_b = || json!({"metadata": {"labels": {"node": "b"}}});
    let none = || json!({});
    let cases: Vec<Case> = vec![
        // (what, volumes, prebound_only, on node b only, expected)
        (
            "smallest that fits",
            vec![
                pv("big", "5Gi", none()),
                pv("small", "2Gi", none()),
                pv("tiny", "500Mi", none()),
            ],
            false,
            false,
            Some("small"),
        ),
        (
            "same size: first by name",
            vec![pv("b", "1Gi", none()), pv("a", "1Gi", none())],
            false,
            false,
            Some("a"),
        ),
        (
            "pre-bound beats smaller",
            vec![pv("small", "1Gi", none()), pv("mine", "9Gi", prebound())],
            false,
            false,
            Some("mine"),
        ),
        (
            "bound elsewhere is skipped",
            vec![pv("taken", "1Gi", elsewhere())],
            false,
            false,
            None,
        ),
        (
            "other class",
            vec![pv(
                "x",
                "1Gi",
                json!({"spec": {"storageClassName": "fast"}}),
            )],
            false,
            false,
            None,
        ),
        (
            "failed volume",
            vec![pv("x", "1Gi", json!({"status": {"phase": "Failed"}}))],
            false,
            false,
            None,
        ),
        (
            "being deleted",
            vec![pv(
                "x",
                "1Gi",
                json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"}}),
            )],
            false,
            false,
            None,
        ),
        (
            "controller, WFFC: free volumes wait",
            vec![pv("free", "1Gi", none())],
            true,
            false,
            None,
        ),
        (
            "controller, WFFC: pre-bound binds",
            vec![pv("free", "1Gi", none()), pv("mine", "2Gi", prebound())],
            true,
            false,
            Some("mine"),
        ),
        (
            "scheduler: node affinity filters",
            vec![pv("a-only", "1Gi", none()), pv("b-only", "3Gi", on_b())],
            false,
            true,
            Some("b-only"),
        ),
        (
            "scheduler: no volume on the node",
            vec![pv("a-only", "1Gi", none())],
            false,
            true,
            None,
        ),
        (
            "scheduler: pre-bound elsewhere means no match",
            vec![pv("mine", "1Gi", prebound()), pv("b-free", "1Gi", on_b())],
            false,
            true,
            None,
        ),
    ];
    for (what, volumes, prebound_only, node_b, expected) in cases {
        let options = MatchOptions {
            prebound_only,
            node_fits: node_b.then_some(&on_node as &dyn Fn(&PersistentVolume) -> bool),
            ..MatchOptions::default()
        };
        let found = find_matching_volume(&claim(json!({})), &volumes, &options).map(pv_name);
        assert_eq!(found, expected, "{what}");
    }
}

#[test]
fn excluded_volumes_are_left_for_others() {
    let volumes = [pv("a", "1Gi", json!({})), pv("b", "2Gi", json!({}))];
    let options = MatchOptions {
        excluded: &|name| name == "a",
        ..MatchOptions::default()
    };
    let found = find_matching_volume(&claim(json!({})), &volumes, &options).map(pv_name);
    assert_eq!(found, Some("b"));
}

#[test]
fn binding_a_volume_writes_the_full_claim_reference() {
    let bound = bind_volume_to_claim(&pv("v", "1Gi", json!({})), &claim(json!({})));
    let reference = claim_ref(&bound).expect("claimRef");
    assert_eq!(reference.name.as_deref(), Some("data"));
    assert_eq!(reference.namespace.as_deref(), Some("ns"));
    assert_eq!(reference.uid.as_deref(), Some("uid-data"));
    assert_eq!(reference.resource_version.as_deref(), Some("9"));
    assert_eq!(reference.kind.as_deref(), Some("PersistentVolumeClaim"));
    assert_eq!(
        bound
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_BOUND_BY_CONTROLLER)),
        Some(&"yes".to_string())
    );
    assert_eq!(bound.metadata.resource_version.as_deref(), Some("5"));

    // A volume the user pre-bound is not marked as bound by a controller.
    let prebound = pv(
        "v",
        "1Gi",
        json!({"spec": {"claimRef": {"namespace": "ns", "name": "data"}}}),
    );
    let bound = bind_volume_to_claim(&prebound, &claim(json!({})));
    assert!(bound.metadata.annotations.is_none());
    assert_eq!(
        claim_ref(&bound).and_then(|r| r.uid.as_deref()),
        Some("uid-data")
    );
}

#[test]
fn delay_binding_follows_the_class() {
    let class = |mode: &str| -> StorageClass {
        serde_json::from_value(json!({"metadata": {"name": "local"}, "provisioner": "p",
            "volumeBindingMode": mode}))
        .expect("class")
    };
    let wffc = class("WaitForFirstConsumer");
    let immediate = class("Immediate");
    assert!(is_delay_binding(&claim(json!({})), |_| Some(&wffc)));
    assert!(!is_delay_binding(&claim(json!({})), |_| Some(&immediate)));
    assert!(!is_delay_binding(&claim(json!({})), |_| None));
    let classless = claim(json!({"spec": {"storageClassName": ""}}));
    assert!(!is_delay_binding(&classless, |_| Some(&wffc)));
}

#[test]
fn fully_bound_needs_the_volume_name_and_bind_completed() {
    assert!(!is_fully_bound(&claim(json!({}))));
    assert!(!is_fully_bound(&claim(
        json!({"spec": {"volumeName": "v"}})
    )));
    assert!(is_fully_bound(&claim(json!({"spec": {"volumeName": "v"},
        "metadata": {"annotations": {"pv.kubernetes.io/bind-completed": "yes"}}}))));
}
