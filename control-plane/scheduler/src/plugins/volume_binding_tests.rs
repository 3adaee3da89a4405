//! Table tests of VolumeBinding through a whole scheduling cycle: which node a pod with
//! PersistentVolumeClaims lands on, the volumes it binds there, or upstream's message.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use serde_json::{Value, json};

use super::volume_binding::Binding;
use crate::framework::{Config, Scheduler};
use crate::snapshot::Snapshot;
use crate::testing::{node, pod};

fn claim(name: &str, class: &str, size: &str) -> Value {
    json!({"metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
           "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class,
                    "resources": {"requests": {"storage": size}}},
           "status": {"phase": "Pending"}})
}

fn bound(mut claim: Value, volume: &str) -> Value {
    claim["spec"]["volumeName"] = json!(volume);
    claim["metadata"]["annotations"] = json!({"pv.kubernetes.io/bind-completed": "yes"});
    claim["status"]["phase"] = json!("Bound");
    claim
}

/// A volume of `class`; `node` "" means no node affinity.
fn volume(name: &str, class: &str, size: &str, node: &str) -> Value {
    let mut pv = json!({"metadata": {"name": name, "resourceVersion": "3"},
        "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"],
                 "storageClassName": class, "local": {"path": "/mnt/disk"}},
        "status": {"phase": "Available"}});
    if !node.is_empty() {
        pv["spec"]["nodeAffinity"] = json!({"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}});
    }
    pv
}

fn prebound(mut pv: Value, claim: &str) -> Value {
    pv["spec"]["claimRef"] = json!({"namespace": "default", "name": claim});
    pv
}

fn snapshot(claims: &[Value], volumes: &[Value]) -> Snapshot {
    let mut snapshot = Snapshot::new(vec![node("a").build(), node("b").build()], vec![]);
    let cache = snapshot.volumes_mut();
    for class in ["wffc", "now"] {
        let mode = if class == "wffc" {
            "WaitForFirstConsumer"
        } else {
            "Immediate"
        };
        let class: StorageClass = serde_json::from_value(json!({"metadata": {"name": class},
            "provisioner": "kubernetes.io/no-provisioner", "volumeBindingMode": mode}))
        .expect("class");
        cache.upsert_class(class);
    }
    for c in claims {
        let c: PersistentVolumeClaim = serde_json::from_value(c.clone()).expect("claim");
        cache.upsert_claim(c);
    }
    for v in volumes {
        let v: PersistentVolume = serde_json::from_value(v.clone()).expect("volume");
        cache.upsert_volume(v);
    }
    snapshot
}

fn binding(volume: &str, claim: &str) -> Binding {
    Binding {
        volume: volume.into(),
        claim_namespace: "default".into(),
        claim_name: claim.into(),
    }
}

type Outcome = Result<(&'static str, Vec<Binding>), &'static str>;
/// (what, claims, volumes, the pod's claims, outcome).
type Case = (
    &'static str,
    Vec<Value>,
    Vec<Value>,
    Vec<&'static str>,
    Outcome,
);

fn run(pod: &Pod, snapshot: &Snapshot) -> Result<(String, Vec<Binding>), String> {
    let mut scheduler = Scheduler::new(Config::default(), 1);
    scheduler
        .schedule(pod, snapshot)
        .map(|r| (r.node, r.volume_bindings))
        .map_err(|e| e.message())
}

#[test]
fn volume_binding_table() {
    let cases: Vec<Case> = vec![
        (
            "missing claim",
            vec![],
            vec![],
            vec!["data"],
            Err("0/2 nodes are available: persistentvolumeclaim \"data\" not found."),
        ),
        (
            "claim being deleted",
            vec![{
                let mut c = claim("data", "wffc", "1Gi");
                c["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
                c
            }],
            vec![],
            vec!["data"],
            Err("0/2 nodes are available: persistentvolumeclaim \"data\" is being deleted."),
        ),
        (
            "lost claim",
            vec![{
                let mut c = bound(claim("data", "now", "1Gi"), "gone");
                c["status"]["phase"] = json!("Lost");
                c
            }],
            vec![],
            vec!["data"],
            Err(
                "0/2 nodes are available: persistentvolumeclaim \"data\" bound to non-existent persistentvolume \"gone\".",
            ),
        ),
        (
            "unbound immediate claim",
            vec![claim("data", "now", "1Gi")],
            vec![volume("v", "now", "1Gi", "")],
            vec!["data"],
            Err("0/2 nodes are available: pod has unbound immediate PersistentVolumeClaims."),
        ),
        (
            "unbound claim of a class that does not exist binds immediately",
            vec![claim("data", "nosuchclass", "1Gi")],
            vec![],
            vec!["data"],
            Err("0/2 nodes are available: pod has unbound immediate PersistentVolumeClaims."),
        ),
        (
            "bound claim follows its volume's node affinity",
            vec![bound(claim("data", "now", "1Gi"), "v")],
            vec![volume("v", "now", "1Gi", "b")],
            vec!["data"],
            Ok(("b", vec![])),
        ),
        (
            "bound claim whose volume fits no node",
            vec![bound(claim("data", "now", "1Gi"), "v")],
            vec![volume("v", "now", "1Gi", "c")],
            vec!["data"],
            Err("0/2 nodes are available: 2 node(s) had volume node affinity conflict."),
        ),
        (
            "bound claim whose volume is gone",
            vec![bound(claim("data", "now", "1Gi"), "v")],
            vec![],
            vec!["data"],
            Err(
                "0/2 nodes are available: 2 node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s).",
            ),
        ),
        (
            "waiting claim goes where its volume is",
            vec![claim("data", "wffc", "1Gi")],
            vec![
                volume("on-b", "wffc", "1Gi", "b"),
                volume("too-small", "wffc", "100Mi", "a"),
            ],
            vec!["data"],
            Ok(("b", vec![binding("on-b", "data")])),
        ),
        (
            "waiting claim without a volume",
            vec![claim("data", "wffc", "1Gi")],
            vec![
                volume("other-class", "now", "1Gi", "a"),
                volume("too-small", "wffc", "1Mi", "b"),
            ],
            vec!["data"],
            Err(
                "0/2 nodes are available: 2 node(s) didn't find available persistent volumes to bind.",
            ),
        ),
        (
            "a volume bound to another claim is not available",
            vec![claim("data", "wffc", "1Gi")],
            vec![prebound(volume("v", "wffc", "1Gi", "a"), "other")],
            vec!["data"],
            Err(
                "0/2 nodes are available: 2 node(s) didn't find available persistent volumes to bind.",
            ),
        ),
        (
            "two waiting claims need two volumes on the same node",
            vec![claim("one", "wffc", "1Gi"), claim("two", "wffc", "2Gi")],
            vec![
                volume("a1", "wffc", "5Gi", "a"),
                volume("b1", "wffc", "1Gi", "b"),
                volume("b2", "wffc", "2Gi", "b"),
            ],
            vec!["two", "one"],
            Ok(("b", vec![binding("b1", "one"), binding("b2", "two")])),
        ),
        (
            "one volume for two claims is not enough",
            vec![claim("one", "wffc", "1Gi"), claim("two", "wffc", "1Gi")],
            vec![volume("b1", "wffc", "1Gi", "b")],
            vec!["one", "two"],
            Err(
                "0/2 nodes are available: 2 node(s) didn't find available persistent volumes to bind.",
            ),
        ),
        (
            "bound and waiting claims together",
            vec![
                bound(claim("old", "now", "1Gi"), "fixed"),
                claim("new", "wffc", "1Gi"),
            ],
            vec![
                volume("fixed", "now", "1Gi", "a"),
                volume("on-a", "wffc", "1Gi", "a"),
                volume("on-b", "wffc", "1Gi", "b"),
            ],
            vec!["old", "new"],
            Ok(("a", vec![binding("on-a", "new")])),
        ),
        (
            "a volume pre-bound to the claim is the one it gets",
            vec![claim("data", "wffc", "1Gi")],
            vec![
                volume("on-a", "wffc", "1Gi", "a"),
                prebound(volume("mine", "wffc", "9Gi", "b"), "data"),
            ],
            vec!["data"],
            Ok(("b", vec![binding("mine", "data")])),
        ),
        (
            "both reasons on one node",
            vec![
                bound(claim("old", "now", "1Gi"), "fixed"),
                claim("new", "wffc", "1Gi"),
            ],
            vec![volume("fixed", "now", "1Gi", "c")],
            vec!["old", "new"],
            Err(
                "0/2 nodes are available: 2 node(s) didn't find available persistent volumes to bind, 2 node(s) had volume node affinity conflict.",
            ),
        ),
    ];
    for (what, claims, volumes, pod_claims, expected) in cases {
        let snapshot = snapshot(&claims, &volumes);
        let mut p = pod("p");
        for c in &pod_claims {
            p = p.claim(c);
        }
        let got = run(&p.build(), &snapshot);
        let expected = expected
            .map(|(node, bindings)| (node.to_string(), bindings))
            .map_err(String::from);
        assert_eq!(got, expected, "{what}");
    }
}

#[test]
fn an_assumed_volume_is_not_given_to_the_next_claim() {
    let mut snapshot = snapshot(
        &[
            claim("first", "wffc", "1Gi"),
            claim("second", "wffc", "1Gi"),
        ],
        &[volume("only", "wffc", "1Gi", "b")],
    );
    let first = pod("p1").claim("first").build();
    assert_eq!(
        run(&first, &snapshot),
        Ok(("b".into(), vec![binding("only", "first")]))
    );
    // What the running scheduler does with the decision: assume the volume bound.
    let cache = snapshot.volumes_mut();
    let pv = cache.volume("only").expect("volume").clone();
    let first_claim = cache.claim("default", "first").expect("claim").clone();
    cache.assume(kwk_api::persistent_volume::bind_volume_to_claim(
        &pv,
        &first_claim,
    ));
    let second = pod("p2").claim("second").build();
    assert!(run(&second, &snapshot).is_err());

    // The watch delivers the same version again: still assumed.
    let watched: PersistentVolume = (*pv).clone();
    snapshot.volumes_mut().upsert_volume(watched.clone());
    assert!(run(&second, &snapshot).is_err());
    // The binding failed and was taken back: the volume is free again.
    snapshot.volumes_mut().restore("only");
    assert_eq!(
        run(&second, &snapshot),
        Ok(("b".into(), vec![binding("only", "second")]))
    );
    // A newer version from the watch replaces an assumption.
    let cache = snapshot.volumes_mut();
    cache.assume(kwk_api::persistent_volume::bind_volume_to_claim(
        &pv,
        &first_claim,
    ));
    let mut newer = watched;
    newer.metadata.resource_version = Some("4".into());
    cache.upsert_volume(newer);
    assert!(run(&second, &snapshot).is_ok());
}

#[test]
fn pods_without_claims_are_not_affected() {
    let snapshot = snapshot(&[], &[]);
    assert!(run(&pod("p").build(), &snapshot).is_ok());
}
