//! Namespaces, Nodes, Events (both APIs), Leases.

use serde_json::json;

use super::*;

#[test]
fn namespaces() {
    let mut ns = defaulted(
        "",
        "Namespace",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a", "creationTimestamp": ago(90)}}),
    );
    assert_eq!(ns["status"], json!({"phase": "Active"}));
    assert_eq!(
        ns["metadata"]["labels"],
        json!({"kubernetes.io/metadata.name": "team-a"})
    );
    let strategy = strategy_for("", "Namespace");
    strategy.prepare_for_create(&mut ns);
    assert_eq!(ns["spec"], json!({"finalizers": ["kubernetes"]}));
    assert_eq!(
        row("", "Namespace", &ns),
        [json!("team-a"), json!("Active"), json!("90s")]
    );
    assert_eq!(
        strategy.field(&ns, "status.phase").as_deref(),
        Some("Active")
    );

    let mut update = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"},
                            "spec": {"finalizers": []}, "status": {"phase": "Terminating"}});
    strategy.prepare_for_update(&mut update, &ns);
    assert_eq!(update["spec"], ns["spec"]);
    assert_eq!(update["status"], ns["status"]);
    let mut odd = ns.clone();
    odd["spec"]["finalizers"] = json!(["custom"]);
    assert_eq!(
        causes("", "Namespace", odd, None),
        [
            "spec.finalizers: Invalid value: \"custom\": name is neither a standard finalizer name nor is it fully qualified [FieldValueInvalid]"
        ]
    );
}

fn node() -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "server-1", "creationTimestamp": ago(86400 * 40),
                     "labels": {"node-role.kubernetes.io/control-plane": "", "kubernetes.io/hostname": "server-1"}},
        "spec": {"podCIDRs": ["10.244.0.0/24"]},
        "status": {"capacity": {"cpu": "2", "memory": "24Gi"},
                   "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
                   "addresses": [{"type": "InternalIP", "address": "192.168.1.10"}, {"type": "Hostname", "address": "server-1"}],
                   "nodeInfo": {"kubeletVersion": "v1.33.0", "osImage": "Debian GNU/Linux 12 (bookworm)",
                                "kernelVersion": "6.1.0-37-amd64", "containerRuntimeVersion": "containerd://1.6.20",
                                "machineID": "", "systemUUID": "", "bootID": "", "kubeProxyVersion": "",
                                "operatingSystem": "linux", "architecture": "amd64"}}})
}

#[test]
fn nodes() {
    let n = defaulted("", "Node", node());
    assert_eq!(
        n["status"]["allocatable"],
        json!({"cpu": "2", "memory": "24Gi"})
    );
    assert_eq!(
        row("", "Node", &n),
        [
            json!("server-1"),
            json!("Ready"),
            json!("control-plane"),
            json!("40d"),
            json!("v1.33.0"),
            json!("192.168.1.10"),
            json!("<none>"),
            json!("Debian GNU/Linux 12 (bookworm)"),
            json!("6.1.0-37-amd64"),
            json!("containerd://1.6.20")
        ]
    );
    let mut cordoned = n.clone();
    cordoned["spec"]["unschedulable"] = json!(true);
    cordoned["status"]["conditions"] = json!([]);
    assert_eq!(row("", "Node", &cordoned)[1], "Unknown,SchedulingDisabled");
    assert_eq!(
        strategy_for("", "Node")
            .field(&cordoned, "spec.unschedulable")
            .as_deref(),
        Some("true")
    );
    let mut recidr = n.clone();
    recidr["spec"]["podCIDRs"] = json!(["10.244.1.0/24"]);
    assert_eq!(
        causes("", "Node", recidr, Some(n.clone())),
        [
            "spec.podCIDRs: Forbidden: node updates may not change podCIDR except from \"\" to valid [FieldValueForbidden]"
        ]
    );
    let mut tainted = n;
    tainted["spec"]["taints"] = json!([{"key": "dedicated", "effect": "Sometimes"}]);
    assert_cause(
        &causes("", "Node", tainted, None),
        "spec.taints[0].effect: Unsupported value: \"Sometimes\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\"",
    );
}

#[test]
fn events_in_both_apis() {
    let core = json!({"apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "web.17f", "namespace": "default", "creationTimestamp": ago(600)},
        "involvedObject": {"kind": "Pod", "namespace": "default", "name": "web", "uid": "u1",
                           "apiVersion": "v1", "fieldPath": "spec.containers{app}"},
        "reason": "BackOff", "message": "Back-off restarting failed container\n", "type": "Warning",
        "source": {"component": "kubelet", "host": "server-1"},
        "firstTimestamp": ago(600), "lastTimestamp": ago(30), "count": 12});
    assert_eq!(
        row("", "Event", &core),
        [
            json!("30s"),
            json!("Warning"),
            json!("BackOff"),
            json!("pod/web"),
            json!("spec.containers{app}"),
            json!("kubelet, server-1"),
            json!("Back-off restarting failed container"),
            json!("10m"),
            json!(12),
            json!("web.17f")
        ]
    );
    let new_api = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "web.18a", "namespace": "default"},
        "eventTime": ago(120), "regarding": {"kind": "Deployment", "name": "web", "namespace": "default"},
        "reason": "ScalingReplicaSet", "note": "Scaled up", "type": "Normal",
        "reportingController": "deployment-controller", "reportingInstance": "cp-1",
        "series": {"count": 3, "lastObservedTime": ago(20)}});
    assert_eq!(
        row("events.k8s.io", "Event", &new_api)[..9],
        [
            json!("20s"),
            json!("Normal"),
            json!("ScalingReplicaSet"),
            json!("deployment/web"),
            json!(""),
            json!("deployment-controller, cp-1"),
            json!("Scaled up"),
            json!("2m"),
            json!(3)
        ]
    );
    let strategy = strategy_for("", "Event");
    let fields = [
        ("involvedObject.kind", "Pod"),
        ("involvedObject.name", "web"),
        ("involvedObject.uid", "u1"),
        ("involvedObject.fieldPath", "spec.containers{app}"),
        ("reason", "BackOff"),
        ("type", "Warning"),
        ("source", "kubelet"),
        ("reportingComponent", ""),
    ];
    for (label, want) in fields {
        assert_eq!(
            strategy.field(&core, label).as_deref(),
            Some(want),
            "{label}"
        );
    }
    assert_eq!(
        strategy.field(&new_api, "regarding.kind").as_deref(),
        Some("Deployment")
    );
    assert_eq!(
        strategy.field(&new_api, "source").as_deref(),
        Some("deployment-controller")
    );
    let mut elsewhere = core;
    elsewhere["involvedObject"]["namespace"] = json!("other");
    assert_eq!(
        causes("", "Event", elsewhere, None),
        [
            "involvedObject.namespace: Invalid value: \"other\": does not match event.namespace [FieldValueInvalid]"
        ]
    );
    assert_eq!(
        column_names("", "Event"),
        [
            ("Last Seen", 0),
            ("Type", 0),
            ("Reason", 0),
            ("Object", 0),
            ("Subobject", 1),
            ("Source", 1),
            ("Message", 0),
            ("First Seen", 1),
            ("Count", 1),
            ("Name", 1)
        ]
    );
}

#[test]
fn leases() {
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta("server-1", 30),
                       "spec": {"holderIdentity": "server-1", "leaseDurationSeconds": 40}});
    assert_eq!(
        row("coordination.k8s.io", "Lease", &lease),
        [json!("server-1"), json!("server-1"), json!("30s")]
    );
    let mut bad = lease;
    bad["spec"]["leaseDurationSeconds"] = json!(0);
    assert_eq!(
        causes("coordination.k8s.io", "Lease", bad, None),
        ["spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0 [FieldValueInvalid]"]
    );
}
