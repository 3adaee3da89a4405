//! Table tests for pod admission: each case a node, the pods already admitted, a new pod, and
//! upstream's verdict.

use k8s_openapi::api::core::v1::{Pod, Taint};

use super::admission::{NodeFacts, Rejection, admit, rejected_status};

fn node() -> NodeFacts {
    NodeFacts {
        node_name: "n1".into(),
        allocatable: [
            ("cpu".to_string(), 2000),
            ("memory".to_string(), 4 << 30),
            ("ephemeral-storage".to_string(), 10 << 30),
        ]
        .into(),
        max_pods: 3,
        labels: [
            ("kubernetes.io/hostname".to_string(), "n1".to_string()),
            ("kubernetes.io/os".to_string(), "linux".to_string()),
            ("disk".to_string(), "ssd".to_string()),
            ("gen".to_string(), "5".to_string()),
        ]
        .into(),
        taints: Vec::new(),
        fetched: 0,
    }
}

fn pod(yaml: &str) -> Pod {
    serde_saphyr::from_str(yaml).expect("test pod parses")
}

/// A pod with one container requesting `cpu` and `memory` (empty: none).
fn requesting(name: &str, cpu: &str, memory: &str) -> Pod {
    let mut requests = Vec::new();
    if !cpu.is_empty() {
        requests.push(format!("cpu: {cpu}"));
    }
    if !memory.is_empty() {
        requests.push(format!("memory: {memory}"));
    }
    pod(&format!(
        "metadata: {{name: {name}, uid: {name}}}
spec:
  containers:
  - {{name: app, image: busybox, resources: {{requests: {{{}}}}}}}",
        requests.join(", ")
    ))
}

fn reject(reason: &str, message: &str) -> Result<(), Rejection> {
    Err(Rejection {
        reason: reason.to_string().into(),
        message: message.to_string(),
    })
}

/// A case name, the admitted pods, the new pod, the verdict.
type Case = (&'static str, Vec<Pod>, Pod, Result<(), Rejection>);

const AFFINITY: &str =
    "Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector";

#[test]
fn resources_as_upstream_fits() {
    let small = requesting("small", "250m", "64Mi");
    let cases: Vec<Case> = vec![
        ("fits", vec![small.clone()], requesting("p", "1", "1Gi"), Ok(())),
        (
            "too much cpu",
            vec![small.clone()],
            requesting("p", "3", ""),
            reject(
                "OutOfcpu",
                "Node didn't have enough resource: cpu, requested: 3000, used: 250, capacity: 2000",
            ),
        ),
        (
            "cpu exactly what is left",
            vec![small.clone()],
            requesting("p", "1750m", ""),
            Ok(()),
        ),
        (
            "too much memory",
            vec![small.clone()],
            requesting("p", "", "4Gi"),
            reject(
                "OutOfmemory",
                "Node didn't have enough resource: memory, requested: 4294967296, used: 67108864, capacity: 4294967296",
            ),
        ),
        (
            "cpu is checked before memory",
            vec![],
            requesting("p", "5", "5Gi"),
            reject(
                "OutOfcpu",
                "Node didn't have enough resource: cpu, requested: 5000, used: 0, capacity: 2000",
            ),
        ),
        (
            "maxPods first, even without requests",
            vec![small.clone(), small.clone(), small.clone()],
            requesting("p", "", ""),
            reject(
                "OutOfpods",
                "Node didn't have enough resource: pods, requested: 1, used: 3, capacity: 3",
            ),
        ),
        (
            "ephemeral storage",
            vec![],
            pod("metadata: {name: p}
spec:
  containers:
  - {name: a, image: b, resources: {requests: {ephemeral-storage: 11Gi}}}"),
            reject(
                "OutOfephemeral-storage",
                "Node didn't have enough resource: ephemeral-storage, requested: 11811160064, used: 0, capacity: 10737418240",
            ),
        ),
        (
            "huge pages the node does not have",
            vec![],
            pod("metadata: {name: p}
spec:
  containers:
  - {name: a, image: b, resources: {requests: {hugepages-2Mi: 4Mi, memory: 4Mi}, limits: {hugepages-2Mi: 4Mi, memory: 4Mi}}}"),
            reject(
                "OutOfhugepages-2Mi",
                "Node didn't have enough resource: hugepages-2Mi, requested: 4194304, used: 0, capacity: 0",
            ),
        ),
        (
            "extended resources the node does not report are not checked",
            vec![],
            pod("metadata: {name: p}
spec:
  containers:
  - {name: a, image: b, resources: {requests: {example.com/gpu: 1}, limits: {example.com/gpu: 1}}}"),
            Ok(()),
        ),
        (
            "limits default the requests",
            vec![],
            pod("metadata: {name: p}
spec:
  containers:
  - {name: a, image: b, resources: {limits: {cpu: 3}}}"),
            reject(
                "OutOfcpu",
                "Node didn't have enough resource: cpu, requested: 3000, used: 0, capacity: 2000",
            ),
        ),
        (
            "static pods are not rejected for resources",
            vec![small.clone(), small.clone(), small],
            pod("metadata: {name: p, uid: h, annotations: {kubernetes.io/config.source: file, kubernetes.io/config.hash: h}}
spec:
  containers:
  - {name: a, image: b, resources: {requests: {cpu: 8}}}"),
            Ok(()),
        ),
        (
            "an API pod claiming to be static is checked",
            vec![],
            pod("metadata: {name: p, uid: u, annotations: {kubernetes.io/config.source: file, kubernetes.io/config.hash: h}}
spec:
  containers:
  - {name: a, image: b, resources: {requests: {cpu: 8}}}"),
            reject(
                "OutOfcpu",
                "Node didn't have enough resource: cpu, requested: 8000, used: 0, capacity: 2000",
            ),
        ),
    ];
    for (name, admitted, new, want) in cases {
        let others: Vec<&Pod> = admitted.iter().collect();
        assert_eq!(admit(&node(), &others, &new), want, "{name}");
    }
}

#[test]
fn requests_count_init_containers_sidecars_and_overhead() {
    let cases = [
        (
            "the largest init container beats the app containers",
            "initContainers:
  - {name: i, image: b, resources: {requests: {cpu: 2100m}}}
  containers:
  - {name: a, image: b, resources: {requests: {cpu: 1}}}",
            Some(2100),
        ),
        (
            "app containers sum",
            "containers:
  - {name: a, image: b, resources: {requests: {cpu: 1}}}
  - {name: c, image: b, resources: {requests: {cpu: 1100m}}}",
            Some(2100),
        ),
        (
            "a sidecar adds to the app containers",
            "initContainers:
  - {name: s, image: b, restartPolicy: Always, resources: {requests: {cpu: 1}}}
  containers:
  - {name: a, image: b, resources: {requests: {cpu: 1100m}}}",
            Some(2100),
        ),
        (
            "an init container after a sidecar runs next to it",
            "initContainers:
  - {name: s, image: b, restartPolicy: Always, resources: {requests: {cpu: 500m}}}
  - {name: i, image: b, resources: {requests: {cpu: 1600m}}}
  containers:
  - {name: a, image: b, resources: {requests: {cpu: 100m}}}",
            Some(2100),
        ),
        (
            "overhead is added",
            "overhead: {cpu: 200m}
  containers:
  - {name: a, image: b, resources: {requests: {cpu: 1900m}}}",
            Some(2100),
        ),
        (
            "exactly allocatable fits",
            "overhead: {cpu: 100m}
  containers:
  - {name: a, image: b, resources: {requests: {cpu: 1900m}}}",
            None,
        ),
    ];
    for (name, spec, over) in cases {
        let p = pod(&format!("metadata: {{name: p}}\nspec:\n  {spec}"));
        let want = over.map_or(Ok(()), |requested| {
            reject(
                "OutOfcpu",
                &format!("Node didn't have enough resource: cpu, requested: {requested}, used: 0, capacity: 2000"),
            )
        });
        assert_eq!(admit(&node(), &[], &p), want, "{name}");
    }
}

#[test]
fn node_affinity_and_selector() {
    let cases = [
        ("no selector", "{}", true),
        ("selector matches", "{nodeSelector: {disk: ssd}}", true),
        (
            "selector value differs",
            "{nodeSelector: {disk: hdd}}",
            false,
        ),
        (
            "selector label missing",
            "{nodeSelector: {gpu: 'true'}}",
            false,
        ),
        (
            "In",
            "{affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: disk, operator: In, values: [hdd, ssd]}]}]}}}}",
            true,
        ),
        (
            "NotIn",
            "{affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: disk, operator: NotIn, values: [ssd]}]}]}}}}",
            false,
        ),
        (
            "terms are ORed",
            "{affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: x, operator: Exists}]}, {matchExpressions: [{key: y, operator: DoesNotExist}]}]}}}}",
            true,
        ),
        (
            "expressions are ANDed",
            "{affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: disk, operator: Exists}, {key: gen, operator: Gt, values: ['6']}]}]}}}}",
            false,
        ),
        (
            "Lt",
            "{affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: gen, operator: Lt, values: ['6']}]}]}}}}",
            true,
        ),
        (
            "matchFields on the node name",
            "{affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchFields: [{key: metadata.name, operator: In, values: [n1]}]}]}}}}",
            true,
        ),
        (
            "an empty term matches nothing",
            "{affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{}]}}}}",
            false,
        ),
        (
            "preferred affinity is not required",
            "{affinity: {nodeAffinity: {preferredDuringSchedulingIgnoredDuringExecution: [{weight: 1, preference: {matchExpressions: [{key: x, operator: Exists}]}}]}}}",
            true,
        ),
    ];
    for (name, extra, admitted) in cases {
        let mut p = pod("metadata: {name: p}\nspec:\n  containers: [{name: a, image: b}]");
        let mut spec: k8s_openapi::api::core::v1::PodSpec =
            serde_saphyr::from_str(extra).expect("spec parses");
        spec.containers = p.spec.take().map(|s| s.containers).unwrap_or_default();
        p.spec = Some(spec);
        let want = if admitted {
            Ok(())
        } else {
            reject("NodeAffinity", AFFINITY)
        };
        assert_eq!(admit(&node(), &[], &p), want, "{name}");
    }
}

#[test]
fn host_ports_taints_and_os() {
    let web = pod("metadata: {name: web}
spec:
  containers:
  - {name: a, image: b, ports: [{containerPort: 80, hostPort: 8080}]}");
    let mut tainted = node();
    tainted.taints = vec![
        Taint {
            key: "maintenance".into(),
            value: Some("now".into()),
            effect: "NoExecute".into(),
            time_added: None,
        },
        Taint {
            key: "ignored".into(),
            value: None,
            effect: "NoSchedule".into(),
            time_added: None,
        },
    ];
    let plain = node();
    let ports_msg =
        "Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports";
    let taint_msg =
        "Predicate TaintToleration failed: node(s) had taints that the pod didn't tolerate";
    let cases: Vec<(&str, &NodeFacts, Pod, Result<(), Rejection>)> = vec![
        (
            "same host port",
            &plain,
            pod(
                "metadata: {name: p}\nspec:\n  containers:\n  - {name: a, image: b, ports: [{containerPort: 81, hostPort: 8080}]}",
            ),
            reject("NodePorts", ports_msg),
        ),
        (
            "same port, other protocol",
            &plain,
            pod(
                "metadata: {name: p}\nspec:\n  containers:\n  - {name: a, image: b, ports: [{containerPort: 81, hostPort: 8080, protocol: UDP}]}",
            ),
            Ok(()),
        ),
        (
            "other port",
            &plain,
            pod(
                "metadata: {name: p}\nspec:\n  containers:\n  - {name: a, image: b, ports: [{containerPort: 81, hostPort: 8081}]}",
            ),
            Ok(()),
        ),
        (
            "a specific IP conflicts with all addresses",
            &plain,
            pod(
                "metadata: {name: p}\nspec:\n  containers:\n  - {name: a, image: b, ports: [{containerPort: 81, hostPort: 8080, hostIP: 127.0.0.1}]}",
            ),
            reject("NodePorts", ports_msg),
        ),
        (
            "untolerated NoExecute taint",
            &tainted,
            pod("metadata: {name: p}\nspec:\n  containers: [{name: a, image: b}]"),
            reject("TaintToleration", taint_msg),
        ),
        (
            "tolerated by key and value",
            &tainted,
            pod(
                "metadata: {name: p}\nspec:\n  tolerations: [{key: maintenance, value: now, effect: NoExecute}]\n  containers: [{name: a, image: b}]",
            ),
            Ok(()),
        ),
        (
            "tolerated by Exists without key",
            &tainted,
            pod(
                "metadata: {name: p}\nspec:\n  tolerations: [{operator: Exists}]\n  containers: [{name: a, image: b}]",
            ),
            Ok(()),
        ),
        (
            "wrong value is not tolerated",
            &tainted,
            pod(
                "metadata: {name: p}\nspec:\n  tolerations: [{key: maintenance, value: later}]\n  containers: [{name: a, image: b}]",
            ),
            reject("TaintToleration", taint_msg),
        ),
        (
            "static pods ignore taints",
            &tainted,
            pod(
                "metadata: {name: p, uid: h, annotations: {kubernetes.io/config.source: file, kubernetes.io/config.hash: h}}\nspec:\n  containers: [{name: a, image: b}]",
            ),
            Ok(()),
        ),
        (
            "os label",
            &plain,
            pod(
                "metadata: {name: p, labels: {kubernetes.io/os: windows}}\nspec:\n  containers: [{name: a, image: b}]",
            ),
            reject(
                "PodOSSelectorNodeLabelDoesNotMatch",
                "Failed to admit pod as the `kubernetes.io/os` label doesn't match node label",
            ),
        ),
        (
            "os field",
            &plain,
            pod(
                "metadata: {name: p}\nspec:\n  os: {name: windows}\n  containers: [{name: a, image: b}]",
            ),
            reject(
                "PodOSNotSupported",
                "Failed to admit pod as the OS field doesn't match node OS",
            ),
        ),
    ];
    for (name, facts, new, want) in cases {
        assert_eq!(admit(facts, &[&web], &new), want, "{name}");
    }
}

#[test]
fn the_rejected_status_is_upstreams() {
    let p = requesting("p", "3", "");
    let rejection = admit(&node(), &[], &p).expect_err("rejected");
    let status = rejected_status(&p, &rejection);
    assert_eq!(status.phase.as_deref(), Some("Failed"));
    assert_eq!(status.reason.as_deref(), Some("OutOfcpu"));
    assert_eq!(
        status.message.as_deref(),
        Some(
            "Pod was rejected: Node didn't have enough resource: cpu, requested: 3000, used: 0, capacity: 2000"
        )
    );
    assert_eq!(status.qos_class.as_deref(), Some("Burstable"));
}
