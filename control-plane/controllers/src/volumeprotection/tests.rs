//! Table tests of the protection planners: which pods hold a deleted claim, when a deleted
//! volume may go, and the finalizer patches (others kept, `resourceVersion` guarded).

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use serde_json::{Value, json};

use super::*;

const DELETED: &str = "2026-01-01T00:00:00Z";

fn claim(finalizers: &[&str], deleting: bool) -> PersistentVolumeClaim {
    let mut metadata = json!({"name": "data", "namespace": "ns", "uid": "uid-data",
        "resourceVersion": "9", "finalizers": finalizers});
    if deleting {
        metadata["deletionTimestamp"] = json!(DELETED);
    }
    serde_json::from_value(json!({"metadata": metadata})).expect("claim")
}

/// An ephemeral volume's claim `web-scratch`, controlled by the pod with `owner_uid`.
fn ephemeral_claim(owner_uid: &str) -> PersistentVolumeClaim {
    let mut c = claim(&[PVC_PROTECTION_FINALIZER], true);
    c.metadata.name = Some("web-scratch".into());
    c.metadata.owner_references = Some(vec![
        serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod", "name": "web",
            "uid": owner_uid, "controller": true}))
        .expect("owner"),
    ]);
    c
}

/// A pod `web` in `ns` scheduled to `node` (unless empty) with `volumes`.
fn pod(node: &str, volumes: Value) -> Pod {
    let mut spec = json!({"containers": [{"name": "c", "image": "i"}]});
    spec["volumes"] = volumes;
    if !node.is_empty() {
        spec["nodeName"] = json!(node);
    }
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "ns", "uid": "uid-web"},
        "spec": spec,
    }))
    .expect("pod")
}

fn claim_volume(name: &str) -> Value {
    json!([{"name": "v", "persistentVolumeClaim": {"claimName": name}}])
}

fn ephemeral_volume() -> Value {
    json!([{"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {
        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}}}])
}

fn with_status(mut pod: Pod, phase: &str) -> Pod {
    pod.status = Some(serde_json::from_value(json!({"phase": phase})).expect("status"));
    pod
}

fn deleted(mut pod: Pod, grace: i64) -> Pod {
    pod.metadata.deletion_timestamp = serde_json::from_value(json!(DELETED)).expect("time");
    pod.metadata.deletion_grace_period_seconds = Some(grace);
    pod
}

fn in_namespace(mut pod: Pod, namespace: &str) -> Pod {
    pod.metadata.namespace = Some(namespace.into());
    pod
}

/// One action, readably: `"PersistentVolumeClaim/data finalizers=[a] rv=9"`.
fn describe(action: &Action) -> String {
    let Action::Patch {
        target,
        subresource: None,
        patch,
    } = action
    else {
        panic!("unexpected action {action:?}");
    };
    let finalizers: Vec<&str> = patch["metadata"]["finalizers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    format!(
        "{}/{} finalizers={finalizers:?} rv={}",
        target.kind,
        target.name,
        patch["metadata"]["resourceVersion"].as_str().unwrap_or("-")
    )
}

#[test]
fn a_deleted_claim_goes_once_no_scheduled_pod_of_its_namespace_uses_it() {
    let released = || vec![r#"PersistentVolumeClaim/data finalizers=[] rv=9"#.to_string()];
    let held: fn() -> Vec<String> = Vec::new;
    let deleting = || claim(&[PVC_PROTECTION_FINALIZER], true);
    let cases: Vec<(&str, PersistentVolumeClaim, Vec<Pod>, Vec<String>)> = vec![
        ("no pods", deleting(), vec![], released()),
        (
            "a scheduled pod names it",
            deleting(),
            vec![pod("node-a", claim_volume("data"))],
            held(),
        ),
        (
            "a pod not yet scheduled does not hold it",
            deleting(),
            vec![pod("", claim_volume("data"))],
            released(),
        ),
        (
            "a pod naming another claim does not hold it",
            deleting(),
            vec![pod("node-a", claim_volume("other"))],
            released(),
        ),
        (
            "a pod of another namespace does not hold it",
            deleting(),
            vec![in_namespace(pod("node-a", claim_volume("data")), "elsewhere")],
            released(),
        ),
        (
            "a Succeeded pod still holds it until the pod is gone (upstream)",
            deleting(),
            vec![with_status(pod("node-a", claim_volume("data")), "Succeeded")],
            held(),
        ),
        (
            "a Failed pod still holds it",
            deleting(),
            vec![with_status(pod("node-a", claim_volume("data")), "Failed")],
            held(),
        ),
        (
            "a pod in graceful deletion still holds it",
            deleting(),
            vec![deleted(pod("node-a", claim_volume("data")), 30)],
            held(),
        ),
        (
            "another finalizer is kept",
            claim(&["example.com/keep", PVC_PROTECTION_FINALIZER], true),
            vec![],
            vec![r#"PersistentVolumeClaim/data finalizers=["example.com/keep"] rv=9"#.into()],
        ),
        (
            "deleted without our finalizer: nothing to do",
            claim(&["example.com/keep"], true),
            vec![],
            held(),
        ),
        (
            "a live protected claim: nothing to do, used or not",
            claim(&[PVC_PROTECTION_FINALIZER], false),
            vec![],
            held(),
        ),
        (
            "a live claim without the finalizer gets it (created with the plugin off)",
            claim(&["example.com/keep"], false),
            vec![pod("node-a", claim_volume("data"))],
            vec![
                r#"PersistentVolumeClaim/data finalizers=["example.com/keep", "kubernetes.io/pvc-protection"] rv=9"#
                    .into(),
            ],
        ),
    ];
    for (name, claim, pods, want) in cases {
        let got: Vec<String> = plan_claim(&claim, &pods).iter().map(describe).collect();
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn an_ephemeral_claim_is_held_by_its_own_pod_until_the_pod_shuts_down() {
    let released = vec![r#"PersistentVolumeClaim/web-scratch finalizers=[] rv=9"#.to_string()];
    let cases: Vec<(&str, PersistentVolumeClaim, Vec<Pod>, Vec<String>)> = vec![
        (
            "its running pod holds it",
            ephemeral_claim("uid-web"),
            vec![pod("node-a", ephemeral_volume())],
            vec![],
        ),
        (
            "a pod deleted with grace 0 (shut down) no longer holds it",
            ephemeral_claim("uid-web"),
            vec![deleted(pod("node-a", ephemeral_volume()), 0)],
            released.clone(),
        ),
        (
            "a pod still terminating gracefully holds it",
            ephemeral_claim("uid-web"),
            vec![deleted(pod("node-a", ephemeral_volume()), 30)],
            vec![],
        ),
        (
            "a same-named pod that does not own the claim does not hold it",
            ephemeral_claim("uid-old-web"),
            vec![pod("node-a", ephemeral_volume())],
            released.clone(),
        ),
        (
            "an unscheduled pod does not hold it",
            ephemeral_claim("uid-web"),
            vec![pod("", ephemeral_volume())],
            released,
        ),
    ];
    for (name, claim, pods, want) in cases {
        let got: Vec<String> = plan_claim(&claim, &pods).iter().map(describe).collect();
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn pods_requeue_the_claims_they_name() {
    let mut both = pod("node-a", claim_volume("data"));
    let extra: Pod = pod("node-a", ephemeral_volume());
    if let (Some(spec), Some(more)) = (both.spec.as_mut(), extra.spec) {
        spec.volumes
            .get_or_insert_with(Vec::new)
            .extend(more.volumes.into_iter().flatten());
        spec.volumes.get_or_insert_with(Vec::new).push(
            serde_json::from_value(json!({"name": "cfg", "configMap": {"name": "c"}}))
                .expect("volume"),
        );
    }
    assert_eq!(claims_of(&both), ["data", "web-scratch"]);
    assert!(claims_of(&pod("", json!([]))).is_empty());
}

#[test]
fn a_deleted_volume_goes_once_it_is_not_bound() {
    let volume = |finalizers: &[&str], deleting: bool, phase: &str| -> PersistentVolume {
        let mut metadata =
            json!({"name": "disk", "resourceVersion": "4", "finalizers": finalizers});
        if deleting {
            metadata["deletionTimestamp"] = json!(DELETED);
        }
        let mut body = json!({"metadata": metadata});
        if !phase.is_empty() {
            body["status"] = json!({"phase": phase});
        }
        serde_json::from_value(body).expect("volume")
    };
    let released = || vec![r#"PersistentVolume/disk finalizers=[] rv=4"#.to_string()];
    let p = PV_PROTECTION_FINALIZER;
    let cases: Vec<(&str, PersistentVolume, Vec<String>)> = vec![
        ("Bound: held", volume(&[p], true, "Bound"), vec![]),
        ("Released: goes", volume(&[p], true, "Released"), released()),
        (
            "Available: goes",
            volume(&[p], true, "Available"),
            released(),
        ),
        ("Failed: goes", volume(&[p], true, "Failed"), released()),
        ("no phase yet: goes", volume(&[p], true, ""), released()),
        (
            "another finalizer is kept",
            volume(&[p, "example.com/keep"], true, "Released"),
            vec![r#"PersistentVolume/disk finalizers=["example.com/keep"] rv=4"#.into()],
        ),
        (
            "deleted without our finalizer: nothing to do",
            volume(&[], true, "Released"),
            vec![],
        ),
        ("live and protected", volume(&[p], false, "Bound"), vec![]),
        (
            "live without the finalizer gets it",
            volume(&[], false, "Available"),
            vec![r#"PersistentVolume/disk finalizers=["kubernetes.io/pv-protection"] rv=4"#.into()],
        ),
    ];
    for (name, pv, want) in cases {
        let got: Vec<String> = plan_volume(&pv).iter().map(describe).collect();
        assert_eq!(got, want, "{name}");
    }
}
