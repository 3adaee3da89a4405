//! The exact strategic merge patches kubectl and helm send, applied to real objects with the
//! built-in schemas; and the dispatcher by content type.

use serde_json::{Value, json};

use super::{assert_json_eq, deployment, json, node, pod, service};
use crate::apiserver::patch::{PatchError, PatchType, apply_patch, builtin_schema};

fn smp(original: &Value, patch: &str) -> Value {
    let api_version = original["apiVersion"].as_str().expect("apiVersion");
    let kind = original["kind"].as_str().expect("kind");
    let schema = builtin_schema(api_version, kind).expect("built-in kind");
    apply_patch(
        PatchType::StrategicMerge,
        original,
        patch.as_bytes(),
        Some(schema),
    )
    .unwrap_or_else(|e| panic!("{patch}: {e}"))
}

fn names(list: &Value, key: &str) -> Vec<String> {
    list.as_array()
        .expect("list")
        .iter()
        .map(|e| {
            e[key]
                .as_str()
                .map_or_else(|| e[key].to_string(), str::to_owned)
        })
        .collect()
}

/// `kubectl apply` (client-side) of a changed manifest: replicas, image and one env var.
#[test]
fn kubectl_apply_update() {
    let patch = r#"{"metadata":{"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{\"new\":1}"}},
      "spec":{"replicas":3,"template":{"spec":{"$setElementOrder/containers":[{"name":"nginx"}],
      "containers":[{"$setElementOrder/env":[{"name":"A"}],"env":[{"name":"A","value":"2"}],"image":"nginx:1.26","name":"nginx"}]}}}}"#;
    let got = smp(&deployment(), patch);
    let mut want = deployment();
    want["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] =
        json!("{\"new\":1}");
    want["spec"]["replicas"] = json!(3);
    let nginx = &mut want["spec"]["template"]["spec"]["containers"][0];
    nginx["image"] = json!("nginx:1.26");
    nginx["env"][0]["value"] = json!("2");
    // The server-only env vars (X, B) and the sidecar keep their place after the named ones.
    assert_json_eq(&got, &want, "apply update");
}

/// `kubectl apply` after removing things from the manifest: the strategy switch with
/// `$retainKeys`, an env var and a volume deleted with `$patch: delete`, a volume source swapped.
#[test]
fn kubectl_apply_deletions() {
    let patch = r#"{"spec":{"strategy":{"$retainKeys":["type"],"rollingUpdate":null,"type":"Recreate"},
      "template":{"spec":{"$setElementOrder/containers":[{"name":"nginx"},{"name":"sidecar"}],
        "containers":[{"$setElementOrder/env":[{"name":"A"},{"name":"B"}],"env":[{"$patch":"delete","name":"X"}],"name":"nginx"}],
        "$setElementOrder/volumes":[{"name":"v1"}],
        "volumes":[{"$retainKeys":["configMap","name"],"configMap":{"name":"cfg2"},"emptyDir":null,"name":"v1"},
                   {"$patch":"delete","name":"b"}]}}}}"#;
    let got = smp(&deployment(), patch);
    assert_eq!(got["spec"]["strategy"], json!({"type": "Recreate"}));
    let spec = &got["spec"]["template"]["spec"];
    assert_eq!(names(&spec["containers"], "name"), ["nginx", "sidecar"]);
    assert_eq!(
        spec["containers"][0]["env"],
        json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
    );
    assert_eq!(
        spec["volumes"],
        json!([{"configMap": {"name": "cfg2"}, "name": "v1"}])
    );
    // Nothing else moved.
    let mut rest = got.clone();
    let mut orig = deployment();
    for v in [&mut rest, &mut orig] {
        v["spec"]["strategy"] = Value::Null;
        v["spec"]["template"]["spec"]["volumes"] = Value::Null;
        v["spec"]["template"]["spec"]["containers"][0]["env"] = Value::Null;
    }
    assert_json_eq(&rest, &orig, "untouched parts");
}

/// Helm 3 `upgrade` (three-way strategic merge patch).
#[test]
fn helm3_upgrade() {
    let mut live = deployment();
    live["spec"]["template"]["spec"]["containers"][0]["name"] = json!("web");
    let patch = r#"{"spec":{"replicas":2,"template":{"spec":{"$setElementOrder/containers":[{"name":"web"}],"containers":[{"image":"nginx:1.26","name":"web"}]}}}}"#;
    let got = smp(&live, patch);
    let containers = &got["spec"]["template"]["spec"]["containers"];
    assert_eq!(names(containers, "name"), ["web", "sidecar"]);
    assert_eq!(containers[0]["image"], "nginx:1.26");
    assert_eq!(
        containers[0]["env"],
        live["spec"]["template"]["spec"]["containers"][0]["env"]
    );
}

/// `kubectl rollout restart|pause`, `kubectl set image`, `kubectl label tier-` (as SMP).
#[test]
fn kubectl_small_patches_on_a_deployment() {
    let restart = r#"{"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":"2025-05-02T10:00:00Z"}}}}}"#;
    let got = smp(&deployment(), restart);
    assert_eq!(
        got["spec"]["template"]["metadata"],
        json!({"annotations": {"kubectl.kubernetes.io/restartedAt": "2025-05-02T10:00:00Z"},
               "creationTimestamp": null, "labels": {"app": "web"}})
    );
    assert_eq!(
        smp(&deployment(), r#"{"spec":{"paused":true}}"#)["spec"]["paused"],
        true
    );
    let set_image = r#"{"spec":{"template":{"spec":{"containers":[{"image":"busybox:1.37","name":"sidecar"}]}}}}"#;
    let got = smp(&deployment(), set_image);
    let containers = &got["spec"]["template"]["spec"]["containers"];
    assert_eq!(names(containers, "name"), ["nginx", "sidecar"]);
    assert_eq!(containers[1]["image"], "busybox:1.37");
    let got = smp(&deployment(), r#"{"metadata":{"labels":{"tier":null}}}"#);
    assert_eq!(got["metadata"]["labels"], json!({"app": "web"}));
}

/// `kubectl cordon` / `uncordon`, and a kubelet-style node status heartbeat.
#[test]
fn node_cordon_and_status() {
    let cordoned = smp(&node(), r#"{"spec":{"unschedulable":true}}"#);
    let mut want = node();
    want["spec"]["unschedulable"] = json!(true);
    assert_json_eq(&cordoned, &want, "cordon");
    assert_json_eq(
        &smp(&cordoned, r#"{"spec":{"unschedulable":null}}"#),
        &node(),
        "uncordon",
    );

    let heartbeat = r#"{"status":{"$setElementOrder/conditions":[{"type":"Ready"},{"type":"MemoryPressure"}],
      "conditions":[{"lastHeartbeatTime":"2025-05-01T10:00:40Z","type":"Ready"}]}}"#;
    let got = smp(&node(), heartbeat);
    assert_eq!(
        names(&got["status"]["conditions"], "type"),
        ["Ready", "MemoryPressure"]
    );
    assert_eq!(
        got["status"]["conditions"][0]["lastHeartbeatTime"],
        "2025-05-01T10:00:40Z"
    );
    assert_eq!(got["status"]["conditions"][0]["reason"], "KubeletReady");
    // Taints have no patch strategy: replaced wholesale.
    let got = smp(
        &node(),
        r#"{"spec":{"taints":[{"effect":"NoExecute","key":"k"}]}}"#,
    );
    assert_eq!(
        got["spec"]["taints"],
        json!([{"effect": "NoExecute", "key": "k"}])
    );
}

/// Finalizers are a merged set; owner references merge by uid; pod conditions by type;
/// tolerations are replaced.
#[test]
fn pod_metadata_and_status() {
    let removed = r#"{"metadata":{"$deleteFromPrimitiveList/finalizers":["example.com/a"],"$setElementOrder/finalizers":["example.com/b"]}}"#;
    assert_eq!(
        smp(&pod(), removed)["metadata"]["finalizers"],
        json!(["example.com/b"])
    );
    let added_in_order = r#"{"metadata":{"$setElementOrder/finalizers":["example.com/a","example.com/b","example.com/c"],"finalizers":["example.com/c"]}}"#;
    assert_eq!(
        smp(&pod(), added_in_order)["metadata"]["finalizers"],
        json!(["example.com/a", "example.com/b", "example.com/c"])
    );
    let added = r#"{"metadata":{"finalizers":["example.com/b","example.com/c"]}}"#;
    assert_eq!(
        smp(&pod(), added)["metadata"]["finalizers"],
        json!(["example.com/a", "example.com/b", "example.com/c"])
    );
    assert_eq!(
        smp(&pod(), r#"{"metadata":{"finalizers":null}}"#)["metadata"].get("finalizers"),
        None
    );

    let owner = r#"{"metadata":{"ownerReferences":[{"uid":"0b7e9d61-93f0-4d8a-bf37-5d0d2b53e3c4","blockOwnerDeletion":false}]}}"#;
    let got = smp(&pod(), owner);
    assert_eq!(
        got["metadata"]["ownerReferences"][0]["blockOwnerDeletion"],
        false
    );
    assert_eq!(got["metadata"]["ownerReferences"][0]["name"], "web-5d9c");

    let status = r#"{"status":{"$setElementOrder/conditions":[{"type":"PodScheduled"},{"type":"Ready"}],
      "conditions":[{"lastTransitionTime":"2025-05-01T11:00:00Z","status":"False","type":"Ready"}],"phase":"Running"}}"#;
    let got = smp(&pod(), status);
    assert_eq!(
        names(&got["status"]["conditions"], "type"),
        ["PodScheduled", "Ready"]
    );
    assert_eq!(got["status"]["conditions"][1]["status"], "False");

    let got = smp(
        &pod(),
        r#"{"spec":{"tolerations":[{"key":"a","operator":"Exists"}]}}"#,
    );
    assert_eq!(
        got["spec"]["tolerations"],
        json!([{"key": "a", "operator": "Exists"}])
    );
}

/// Service ports merge by `port` (the strategic merge key; server-side apply uses port+protocol).
#[test]
fn service_ports() {
    let patch = r#"{"spec":{"$setElementOrder/ports":[{"port":53},{"port":80}],"ports":[{"port":80,"targetPort":9090}]}}"#;
    let got = smp(&service(), patch);
    assert_eq!(
        got["spec"]["ports"],
        json!([{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
               {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 9090}])
    );
    let delete = r#"{"spec":{"ports":[{"$patch":"delete","port":53}]}}"#;
    assert_eq!(
        names(&smp(&service(), delete)["spec"]["ports"], "name"),
        ["http"]
    );
}

#[test]
fn dispatch_by_content_type() {
    assert_eq!(
        PatchType::from_content_type("application/strategic-merge-patch+json; charset=utf-8"),
        Some(PatchType::StrategicMerge)
    );
    assert_eq!(
        PatchType::from_content_type("application/merge-patch+json"),
        Some(PatchType::Merge)
    );
    assert_eq!(
        PatchType::from_content_type("application/json-patch+json"),
        Some(PatchType::Json)
    );
    assert_eq!(
        PatchType::from_content_type("application/apply-patch+yaml"),
        Some(PatchType::Apply)
    );
    assert_eq!(PatchType::from_content_type("application/json"), None);

    // A custom resource: merge and JSON patches work, strategic merge patch is 415 like upstream.
    let widget = json(
        r#"{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"w"},"spec":{"items":[1,2]}}"#,
    );
    let merged = apply_patch(
        PatchType::Merge,
        &widget,
        br#"{"spec":{"items":[3]}}"#,
        None,
    )
    .expect("merge");
    assert_eq!(merged["spec"]["items"], json!([3]));
    let patched = apply_patch(
        PatchType::Json,
        &widget,
        br#"[{"op":"add","path":"/spec/items/-","value":3}]"#,
        None,
    )
    .expect("json patch");
    assert_eq!(patched["spec"]["items"], json!([1, 2, 3]));
    let err =
        apply_patch(PatchType::StrategicMerge, &widget, br#"{"spec":{}}"#, None).expect_err("415");
    assert!(matches!(err, PatchError::UnsupportedMediaType { .. }));
    assert_eq!(
        (err.status_code(), err.reason()),
        (415, "UnsupportedMediaType")
    );
    assert_eq!(
        err.to_string(),
        "the body of the request was in an unknown format - accepted media types include: \
         application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
    );
}
