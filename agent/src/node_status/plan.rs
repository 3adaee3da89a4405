//! The pure part of the Node's upkeep: from the machine and runtime facts, the config, the Node
//! as the apiserver has it, the last report time and now, decide the Node to register, the
//! labels to reconcile on an existing Node, and the status patch to send (or nothing).
//!
//! Semantics follow upstream's kubelet (`kubelet_node_status.go`, `nodestatus/setters.go`):
//! conditions keep their `lastTransitionTime` while their status holds and always get a new
//! `lastHeartbeatTime`; an unchanged status (heartbeat times aside) is posted only once
//! `nodeStatusReportFrequency` has passed since the last post; capacity keys kwk-node does not
//! own (extended resources advertised by others) are kept.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ContainerImage, DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints,
    NodeSpec, NodeStatus, NodeSystemInfo, Taint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Map, Value, json};

use super::eviction_reserve::EvictionReserve;
use super::machine::{MachineFacts, os_and_arch};
use super::runtime::{RuntimeFacts, RuntimeImage, readiness_errors};
use crate::config::{self, KubeletConfig};
use crate::eviction::Pressures;

/// `kubeletVersion` in the node info: the Kubernetes release kwk follows, marked as kwk.
pub const KUBELET_VERSION: &str = concat!("v1.33.0+kwk.", env!("CARGO_PKG_VERSION"));
/// Upstream reports at most this many names per image.
const MAX_NAMES_PER_IMAGE: usize = 5;
/// The annotation that says volumes are attached by the controller manager.
pub const CONTROLLER_MANAGED_ATTACH_DETACH: &str =
    "volumes.kubernetes.io/controller-managed-attach-detach";

pub const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";
pub const LABEL_OS: &str = "kubernetes.io/os";
pub const LABEL_ARCH: &str = "kubernetes.io/arch";
pub const LABEL_BETA_OS: &str = "beta.kubernetes.io/os";
pub const LABEL_BETA_ARCH: &str = "beta.kubernetes.io/arch";

/// Everything a plan looks at besides the Node itself.
#[derive(Debug, Clone, Copy)]
pub struct PlanInputs<'a> {
    pub node_name: &'a str,
    pub machine: &'a MachineFacts,
    pub config: &'a KubeletConfig,
    pub runtime: &'a RuntimeFacts,
    /// What allocatable holds back for the hard eviction thresholds.
    pub eviction_reserve: &'a EvictionReserve,
    /// The pressure conditions as the eviction manager decided them (thresholds, grace and
    /// transition periods).
    pub pressures: Pressures,
    pub now: Timestamp,
}

/// The labels kwk-node sets on its Node and keeps set (node-role labels are the admin's).
pub fn managed_labels(node_name: &str) -> BTreeMap<String, String> {
    let (os, arch) = os_and_arch();
    [
        (LABEL_HOSTNAME, node_name),
        (LABEL_OS, os),
        (LABEL_ARCH, arch),
        (LABEL_BETA_OS, os),
        (LABEL_BETA_ARCH, arch),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The Node to create when registering: the managed labels, the attach-detach annotation,
/// `registerWithTaints`, and a full status.
pub fn initial_node(inputs: &PlanInputs<'_>) -> Node {
    let taints: Vec<Taint> = inputs
        .config
        .register_with_taints
        .iter()
        .map(|t| Taint {
            key: t.key.clone(),
            value: Some(t.value.clone()).filter(|v| !v.is_empty()),
            effect: t.effect.name().to_string(),
            time_added: None,
        })
        .collect();
    Node {
        metadata: ObjectMeta {
            name: Some(inputs.node_name.to_string()),
            labels: Some(managed_labels(inputs.node_name)),
            annotations: Some(
                [(
                    CONTROLLER_MANAGED_ATTACH_DETACH.to_string(),
                    "true".to_string(),
                )]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            taints: Some(taints).filter(|t| !t.is_empty()),
            ..NodeSpec::default()
        }),
        status: Some(desired_status(inputs, None)),
    }
}

/// The metadata merge patch that adopts an existing Node of the same name (a restart, or a Node
/// created by someone else): the managed labels and the attach-detach annotation are set to
/// what this node would register with. `None` when they already are.
pub fn adoption_patch(initial: &Node, existing: &Node) -> Option<Value> {
    let differing = |want: &Option<BTreeMap<String, String>>,
                     have: &Option<BTreeMap<String, String>>| {
        let have = have.as_ref();
        want.iter()
            .flatten()
            .filter(|(k, v)| have.and_then(|h| h.get(*k)) != Some(*v))
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect::<Map<String, Value>>()
    };
    let labels = differing(&initial.metadata.labels, &existing.metadata.labels);
    let annotations = differing(
        &initial.metadata.annotations,
        &existing.metadata.annotations,
    );
    if labels.is_empty() && annotations.is_empty() {
        return None;
    }
    let mut metadata = Map::new();
    if !labels.is_empty() {
        metadata.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        metadata.insert("annotations".into(), Value::Object(annotations));
    }
    Some(json!({ "metadata": metadata }))
}

/// The status patch to send for `existing`, or `None` when the status is unchanged (heartbeat
/// times aside) and the last report is younger than `nodeStatusReportFrequency`.
pub fn status_patch(
    inputs: &PlanInputs<'_>,
    existing: &Node,
    last_report: Option<Timestamp>,
) -> Option<Value> {
    let old = existing.status.clone().unwrap_or_default();
    let new = desired_status(inputs, Some(&old));
    let report_due = last_report
        .is_none_or(|last| elapsed(last, inputs.now) >= inputs.config.node_status_report_frequency);
    if !report_due && without_heartbeats(&old) == without_heartbeats(&new) {
        return None;
    }
    Some(merge_patch_of(&old, &new))
}

fn elapsed(since: Timestamp, now: Timestamp) -> Duration {
    Duration::try_from(now.duration_since(since)).unwrap_or(Duration::ZERO)
}

fn without_heartbeats(status: &NodeStatus) -> NodeStatus {
    let mut status = status.clone();
    for condition in status.conditions.iter_mut().flatten() {
        condition.last_heartbeat_time = None;
    }
    status
}

/// A JSON merge patch `{"status": ...}` carrying every field kwk-node owns; map keys dropped
/// from `capacity` or `allocatable` are set to null so the merge removes them.
fn merge_patch_of(old: &NodeStatus, new: &NodeStatus) -> Value {
    let mut status = Map::new();
    let mut put = |name: &str, value: Value| {
        if !value.is_null() {
            status.insert(name.to_string(), value);
        }
    };
    put("conditions", json!(new.conditions));
    put("addresses", json!(new.addresses));
    put("nodeInfo", json!(new.node_info));
    put("images", json!(new.images));
    put("daemonEndpoints", json!(new.daemon_endpoints));
    for (name, old_map, new_map) in [
        ("capacity", &old.capacity, &new.capacity),
        ("allocatable", &old.allocatable, &new.allocatable),
    ] {
        let mut map: Map<String, Value> = new_map
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), Value::String(v.0.clone())))
            .collect();
        for key in old_map.iter().flatten().map(|(k, _)| k) {
            map.entry(key.clone()).or_insert(Value::Null);
        }
        put(name, Value::Object(map));
    }
    json!({ "status": status })
}

/// The status kwk-node reports, built on `existing` (its conditions' transition times, fields
/// others own).
pub fn desired_status(inputs: &PlanInputs<'_>, existing: Option<&NodeStatus>) -> NodeStatus {
    let mut status = existing.cloned().unwrap_or_default();
    let (capacity, allocatable) = resources(inputs, &status);
    status.capacity = Some(capacity);
    status.allocatable = Some(allocatable);
    status.addresses = Some(addresses(inputs));
    status.node_info = Some(node_info(inputs, status.node_info.as_ref()));
    status.daemon_endpoints = Some(NodeDaemonEndpoints {
        kubelet_endpoint: Some(DaemonEndpoint {
            port: i32::from(inputs.config.port),
        }),
    });
    if let Some(images) = &inputs.runtime.images {
        status.images = Some(node_images(images, inputs.config.node_status_max_images));
    }
    let mut conditions = status.conditions.take().unwrap_or_default();
    let time = Time(inputs.now);
    let pressures = inputs.pressures;
    for (type_, pressured, when_true, when_false) in [
        (
            "MemoryPressure",
            pressures.memory,
            (
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available",
            ),
            (
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
        ),
        (
            "DiskPressure",
            pressures.disk,
            ("KubeletHasDiskPressure", "kubelet has disk pressure"),
            ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ),
        (
            "PIDPressure",
            pressures.pid,
            (
                "KubeletHasInsufficientPID",
                "kubelet has insufficient PID available",
            ),
            (
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
        ),
    ] {
        let (reason, message) = if pressured { when_true } else { when_false };
        set_pressure(&mut conditions, type_, pressured, (reason, message), &time);
    }
    set_ready(&mut conditions, inputs, &time);
    status.conditions = Some(conditions);
    status
}

/// A pressure condition: its status, and upstream's reason and message, set when the status
/// changes (then with a new `lastTransitionTime`); the heartbeat time always.
fn set_pressure(
    conditions: &mut Vec<NodeCondition>,
    type_: &str,
    pressured: bool,
    (reason, message): (&str, &str),
    now: &Time,
) {
    let index = match conditions.iter().position(|c| c.type_ == type_) {
        Some(index) => index,
        None => {
            conditions.push(NodeCondition {
                type_: type_.to_string(),
                status: "Unknown".to_string(),
                ..NodeCondition::default()
            });
            conditions.len() - 1
        }
    };
    let status = if pressured { "True" } else { "False" };
    let condition = &mut conditions[index];
    condition.last_heartbeat_time = Some(now.clone());
    if condition.status != status {
        condition.status = status.to_string();
        condition.reason = Some(reason.to_string());
        condition.message = Some(message.to_string());
        condition.last_transition_time = Some(now.clone());
    }
}

/// `Ready`: True with `KubeletReady` unless the runtime or resources say otherwise, then False
/// with `KubeletNotReady` and the errors (one, or `[a, b]` for several, as Go aggregates them).
fn set_ready(conditions: &mut Vec<NodeCondition>, inputs: &PlanInputs<'_>, now: &Time) {
    let errors = readiness_errors(inputs.runtime.conditions.as_deref());
    let mut ready = NodeCondition {
        type_: "Ready".to_string(),
        status: "True".to_string(),
        reason: Some("KubeletReady".to_string()),
        message: Some("kubelet is posting ready status".to_string()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
    };
    if !errors.is_empty() {
        ready.status = "False".to_string();
        ready.reason = Some("KubeletNotReady".to_string());
        ready.message = Some(if errors.len() == 1 {
            errors.join("")
        } else {
            format!("[{}]", errors.join(", "))
        });
    }
    match conditions.iter_mut().find(|c| c.type_ == "Ready") {
        Some(existing) => {
            if existing.status == ready.status {
                ready.last_transition_time = existing.last_transition_time.clone();
            }
            *existing = ready;
        }
        None => conditions.push(ready),
    }
}

/// Capacity and allocatable: CPU, memory, pods through `config::allocatable`, memory and
/// ephemeral storage also less their hard eviction thresholds, huge pages (taken out of allocatable memory, as upstream);
/// keys kwk-node does not own are kept, huge page sizes no longer present are dropped.
fn resources(
    inputs: &PlanInputs<'_>,
    existing: &NodeStatus,
) -> (BTreeMap<String, Quantity>, BTreeMap<String, Quantity>) {
    let machine = &inputs.machine.resources;
    let cap = config::capacity(machine, inputs.config);
    let alloc = config::allocatable(machine, inputs.config);
    let hugepages_total = inputs
        .machine
        .hugepages
        .values()
        .fold(0u64, |a, &b| a.saturating_add(b));
    let keep = |map: &Option<BTreeMap<String, Quantity>>| -> BTreeMap<String, Quantity> {
        map.iter()
            .flatten()
            .filter(|(k, _)| !is_owned_resource(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let mut capacity = keep(&existing.capacity);
    let mut allocatable = keep(&existing.allocatable);
    let q = |s: String| Quantity(s);
    capacity.insert("cpu".into(), q(cpu_quantity(cap.cpu_millis)));
    capacity.insert("memory".into(), q(binary_quantity(cap.memory_bytes)));
    capacity.insert("pods".into(), q(cap.pods.to_string()));
    allocatable.insert("cpu".into(), q(cpu_quantity(alloc.cpu_millis)));
    let memory_eviction = inputs
        .eviction_reserve
        .memory_available
        .map_or(0, |t| t.of(cap.memory_bytes));
    allocatable.insert(
        "memory".into(),
        q(binary_quantity(
            alloc
                .memory_bytes
                .saturating_sub(hugepages_total)
                .saturating_sub(memory_eviction),
        )),
    );
    allocatable.insert("pods".into(), q(alloc.pods.to_string()));
    if let Some(storage) = inputs.machine.ephemeral_storage_bytes {
        let reserved = [&inputs.config.kube_reserved, &inputs.config.system_reserved]
            .iter()
            .filter_map(|r| r.get(&config::ReservedResource::EphemeralStorage))
            .map(|q| u64::try_from(q.value()).unwrap_or(0))
            .fold(0u64, u64::saturating_add)
            .saturating_add(
                inputs
                    .eviction_reserve
                    .nodefs_available
                    .map_or(0, |t| t.of(storage)),
            );
        capacity.insert("ephemeral-storage".into(), q(binary_quantity(storage)));
        allocatable.insert(
            "ephemeral-storage".into(),
            q(binary_quantity(storage.saturating_sub(reserved))),
        );
    }
    for (size, bytes) in &inputs.machine.hugepages {
        let key = format!("hugepages-{size}");
        capacity.insert(key.clone(), q(binary_quantity(*bytes)));
        allocatable.insert(key, q(binary_quantity(*bytes)));
    }
    (capacity, allocatable)
}

fn is_owned_resource(name: &str) -> bool {
    matches!(name, "cpu" | "memory" | "pods" | "ephemeral-storage")
        || name.starts_with("hugepages-")
}

fn addresses(inputs: &PlanInputs<'_>) -> Vec<NodeAddress> {
    let mut addresses = Vec::new();
    if let Some(ip) = inputs.machine.internal_ip {
        addresses.push(NodeAddress {
            type_: "InternalIP".to_string(),
            address: ip.to_string(),
        });
    }
    addresses.push(NodeAddress {
        type_: "Hostname".to_string(),
        address: inputs.node_name.to_string(),
    });
    addresses
}

/// The node info; a runtime version that could not be read keeps the one reported before.
fn node_info(inputs: &PlanInputs<'_>, existing: Option<&NodeSystemInfo>) -> NodeSystemInfo {
    let (os, arch) = os_and_arch();
    let machine = inputs.machine;
    NodeSystemInfo {
        architecture: arch.to_string(),
        boot_id: machine.boot_id.clone(),
        container_runtime_version: inputs.runtime.version.clone().unwrap_or_else(|| {
            existing
                .map(|i| i.container_runtime_version.clone())
                .unwrap_or_default()
        }),
        kernel_version: machine.kernel_version.clone(),
        // Deprecated; upstream v1.33 no longer fills it in (DisableNodeKubeProxyVersion).
        kube_proxy_version: String::new(),
        kubelet_version: KUBELET_VERSION.to_string(),
        machine_id: machine.machine_id.clone(),
        operating_system: os.to_string(),
        os_image: machine.os_image.clone(),
        system_uuid: machine.system_uuid.clone(),
        swap: None,
    }
}

/// The images, largest first, each with up to five names (digests, then tags), at most
/// `max` of them (-1: all).
fn node_images(images: &[RuntimeImage], max: i32) -> Vec<ContainerImage> {
    let mut sorted: Vec<&RuntimeImage> = images.iter().collect();
    sorted.sort_by_key(|image| std::cmp::Reverse(image.size_bytes));
    if let Ok(max) = usize::try_from(max) {
        sorted.truncate(max);
    }
    sorted
        .into_iter()
        .map(|image| ContainerImage {
            names: Some(
                image
                    .repo_digests
                    .iter()
                    .chain(&image.repo_tags)
                    .take(MAX_NAMES_PER_IMAGE)
                    .cloned()
                    .collect(),
            ),
            size_bytes: i64::try_from(image.size_bytes).ok(),
        })
        .collect()
}

/// CPU millicores as a canonical quantity: `4`, `3900m`.
pub(crate) fn cpu_quantity(millis: u64) -> String {
    if millis.is_multiple_of(1000) {
        (millis / 1000).to_string()
    } else {
        format!("{millis}m")
    }
}

/// Bytes as a canonical binary quantity: `8145236Ki`, `2Mi`, `0`, or plain bytes.
pub(crate) fn binary_quantity(bytes: u64) -> String {
    if bytes == 0 {
        return "0".to_string();
    }
    for (suffix, shift) in [
        ("Ei", 60),
        ("Pi", 50),
        ("Ti", 40),
        ("Gi", 30),
        ("Mi", 20),
        ("Ki", 10),
    ] {
        let unit = 1u64 << shift;
        if bytes.is_multiple_of(unit) {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    bytes.to_string()
}
