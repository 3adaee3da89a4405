//! Pod admission on the node, as the upstream kubelet (v1.33) decides it before it runs a pod
//! (`canAdmitPod` → the predicate admit handler): a pod that does not fit this node is
//! rejected instead of run. Pure: [`admit`] takes the node's facts, the pods already admitted
//! and the new pod.
//!
//! Checks in upstream's order, the first failure wins:
//! - the `kubernetes.io/os` pod label and `spec.os.name` against the node's OS (linux);
//! - resources (upstream `noderesources.Fits`): the pod count against `maxPods`, then cpu,
//!   memory, ephemeral storage and scalar resources (huge pages, extended resources the node
//!   reports) against allocatable less what admitted pods request; extended resources the node
//!   does not report are not checked (cluster-level resources, as upstream);
//! - `NodeAffinity`: `spec.nodeSelector` and required node affinity against the Node's labels;
//! - `NodePorts`: a hostPort already taken by an admitted pod;
//! - `TaintToleration`: a `NoExecute` taint of the Node the pod does not tolerate.
//!
//! Static pods are critical pods upstream: when they do not fit for resources the kubelet
//! evicts other pods to make room (its admission failure handler preempts). kwk-node does not
//! preempt; it admits static pods without the resource checks. As upstream, static pods are
//! not checked against taints either.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, PodStatus, Taint};

use crate::cgroups::qos;
use crate::labels;

/// The OS this node runs (upstream compares against Go's `runtime.GOOS`).
const NODE_OS: &str = "linux";
/// The OS label of Nodes and pods.
const OS_LABEL: &str = "kubernetes.io/os";

/// What admission needs to know about this node.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeFacts {
    pub node_name: String,
    /// Allocatable amounts by resource name: `cpu` in millicores, everything else in units
    /// (bytes). A missing `cpu`, `memory` or `ephemeral-storage` is not checked (not known).
    pub allocatable: BTreeMap<String, i64>,
    /// How many pods may run (`maxPods`).
    pub max_pods: i64,
    /// The Node's labels.
    pub labels: BTreeMap<String, String>,
    /// The Node's taints.
    pub taints: Vec<Taint>,
    /// How many times the Node was read from the API on request (see `node_facts`): a pod
    /// that fails its node affinity alone is rejected only on facts read after it was seen, as
    /// upstream fetches the Node again before rejecting for affinity.
    pub fetched: u64,
}

/// Why a pod was not admitted: upstream's reason and message (of the Warning event; the
/// status message is prefixed, see [`rejected_status`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Cow<'static, str>,
    pub message: String,
}

impl Rejection {
    fn new(reason: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            message: message.into(),
        }
    }

    /// A failed predicate (upstream `PredicateFailureError`).
    fn predicate(name: &'static str, description: &str) -> Self {
        Self::new(name, format!("Predicate {name} failed: {description}"))
    }

    /// Whether the pod was rejected for its node affinity (or selector) only.
    pub fn is_node_affinity(&self) -> bool {
        self.reason == NODE_AFFINITY
    }
}

const NODE_AFFINITY: &str = "NodeAffinity";
const NODE_AFFINITY_REASON: &str = "node(s) didn't match Pod's node affinity/selector";
const NODE_PORTS: &str = "NodePorts";
const NODE_PORTS_REASON: &str = "node(s) didn't have free ports for the requested pod ports";
const TAINT_TOLERATION: &str = "TaintToleration";
const TAINT_TOLERATION_REASON: &str = "node(s) had taints that the pod didn't tolerate";

/// Whether `pod` is admitted on the node next to the `admitted` pods (those it runs, not
/// terminal).
pub fn admit(node: &NodeFacts, admitted: &[&Pod], pod: &Pod) -> Result<(), Rejection> {
    if pod_label(pod, OS_LABEL).is_some_and(|os| os != node_os(node)) {
        return Err(Rejection::new(
            "PodOSSelectorNodeLabelDoesNotMatch",
            "Failed to admit pod as the `kubernetes.io/os` label doesn't match node label",
        ));
    }
    let os_field = pod.spec.as_ref().and_then(|s| s.os.as_ref());
    if os_field.is_some_and(|os| os.name != NODE_OS) {
        return Err(Rejection::new(
            "PodOSNotSupported",
            "Failed to admit pod as the OS field doesn't match node OS",
        ));
    }
    let is_static = is_static(pod);
    if !is_static {
        fits_resources(node, admitted, pod)?;
    }
    if !matches_node_affinity(node, pod) {
        return Err(Rejection::predicate(NODE_AFFINITY, NODE_AFFINITY_REASON));
    }
    if host_ports_conflict(admitted, pod) {
        return Err(Rejection::predicate(NODE_PORTS, NODE_PORTS_REASON));
    }
    if !is_static && has_untolerated_no_execute_taint(node, pod) {
        return Err(Rejection::predicate(
            TAINT_TOLERATION,
            TAINT_TOLERATION_REASON,
        ));
    }
    Ok(())
}

/// The status of a rejected pod, as upstream's `rejectPod` sets it: phase `Failed`, the
/// reason, the message prefixed with `Pod was rejected: `, and the QoS class.
pub fn rejected_status(pod: &Pod, rejection: &Rejection) -> PodStatus {
    PodStatus {
        phase: Some("Failed".into()),
        reason: Some(rejection.reason.to_string()),
        message: Some(format!("Pod was rejected: {}", rejection.message)),
        qos_class: qos::pod_qos(pod).ok().map(|q| q.as_str().to_string()),
        ..Default::default()
    }
}

/// Whether the pod comes from the manifest directory (a static pod): a source other than
/// `api` and its UID the config hash (which no API pod can claim: the apiserver picks UIDs).
pub fn is_static(pod: &Pod) -> bool {
    let Some(annotations) = pod.metadata.annotations.as_ref() else {
        return false;
    };
    annotations
        .get(labels::CONFIG_SOURCE)
        .is_some_and(|source| source != "api")
        && annotations.get(labels::CONFIG_HASH).is_some()
        && annotations.get(labels::CONFIG_HASH) == pod.metadata.uid.as_ref()
}

fn pod_label<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

/// The node's OS label, or this node's OS when the label is missing (as upstream).
fn node_os(node: &NodeFacts) -> &str {
    node.labels.get(OS_LABEL).map_or(NODE_OS, String::as_str)
}

/// A pod's requests by resource name, in the units of [`NodeFacts::allocatable`].
fn requests(pod: &Pod) -> Result<BTreeMap<String, i64>, Rejection> {
    let list = qos::pod_requests(pod).map_err(|err| {
        Rejection::new(
            "UnexpectedAdmissionError",
            format!("Update plugin resources failed due to {err}, which is unexpected."),
        )
    })?;
    Ok(list
        .into_iter()
        .map(|(name, q)| {
            let amount = if name == qos::CPU {
                q.milli()
            } else {
                q.value()
            };
            (name, amount)
        })
        .collect())
}

/// Resources whose absence from allocatable means "not known here", not "none".
fn is_unreported_ok(name: &str, node: &NodeFacts) -> bool {
    if node.allocatable.contains_key(name) {
        return false;
    }
    match name {
        "cpu" | "memory" | "ephemeral-storage" => true,
        _ if name.starts_with("hugepages-") => false,
        // Extended resources the node does not have are cluster-level (upstream removes them
        // before the fit check); other native names are not checked.
        _ => true,
    }
}

/// Whether the resource counts for the fit check at all (native compute resources, huge
/// pages, extended resources).
fn is_checked_resource(name: &str) -> bool {
    matches!(name, "cpu" | "memory" | "ephemeral-storage")
        || name.starts_with("hugepages-")
        || is_extended_resource(name)
}

/// Upstream `IsExtendedResourceName`: a qualified name outside `kubernetes.io/`, not a quota
/// `requests.` name.
fn is_extended_resource(name: &str) -> bool {
    let Some((prefix, _)) = name.split_once('/') else {
        return false;
    };
    let native = prefix == "kubernetes.io" || prefix.ends_with(".kubernetes.io");
    !native && !name.starts_with("requests.")
}

fn insufficient(resource: &str, requested: i64, used: i64, capacity: i64) -> Rejection {
    let reason = match resource {
        "cpu" => Cow::Borrowed("OutOfcpu"),
        "memory" => Cow::Borrowed("OutOfmemory"),
        "ephemeral-storage" => Cow::Borrowed("OutOfephemeral-storage"),
        "pods" => Cow::Borrowed("OutOfpods"),
        other => Cow::Owned(format!("OutOf{other}")),
    };
    Rejection::new(
        reason,
        format!(
            "Node didn't have enough resource: {resource}, requested: {requested}, used: {used}, capacity: {capacity}"
        ),
    )
}

/// Upstream `Fits`: pods first, then cpu, memory, ephemeral storage, the rest by name.
fn fits_resources(node: &NodeFacts, admitted: &[&Pod], pod: &Pod) -> Result<(), Rejection> {
    let used_pods = i64::try_from(admitted.len()).unwrap_or(i64::MAX);
    if used_pods.saturating_add(1) > node.max_pods {
        return Err(insufficient("pods", 1, used_pods, node.max_pods));
    }
    let wanted = requests(pod)?;
    let wanted: BTreeMap<&str, i64> = wanted
        .iter()
        .filter(|(name, amount)| **amount > 0 && is_checked_resource(name))
        .filter(|(name, _)| !is_unreported_ok(name, node))
        .map(|(name, amount)| (name.as_str(), *amount))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let mut used: BTreeMap<String, i64> = BTreeMap::new();
    for other in admitted {
        // An admitted pod's requests were valid when it was admitted; a bad one counts nothing.
        for (name, amount) in requests(other).unwrap_or_default() {
            let entry = used.entry(name).or_default();
            *entry = entry.saturating_add(amount);
        }
    }
    let order = ["cpu", "memory", "ephemeral-storage"];
    let rest = wanted.keys().filter(|name| !order.contains(name)).copied();
    for name in order.into_iter().chain(rest) {
        let Some(&requested) = wanted.get(name) else {
            continue;
        };
        let capacity = node.allocatable.get(name).copied().unwrap_or(0);
        let in_use = used.get(name).copied().unwrap_or(0);
        if requested > capacity.saturating_sub(in_use) {
            return Err(insufficient(name, requested, in_use, capacity));
        }
    }
    Ok(())
}

/// `spec.nodeSelector` and the required node affinity (upstream `GetRequiredNodeAffinity`).
fn matches_node_affinity(node: &NodeFacts, pod: &Pod) -> bool {
    pod.spec.as_ref().is_none_or(|spec| {
        kwk_api::node_selector::pod_selects_node(spec, &node.labels, &node.node_name)
    })
}

/// A wanted host port: protocol, IP (`0.0.0.0` for all), port.
type HostPort = (String, String, i32);

/// The host ports of a pod's containers and sidecars.
fn host_ports(pod: &Pod) -> Vec<HostPort> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    spec.containers
        .iter()
        .chain(sidecars)
        .flat_map(|c: &Container| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|&port| port > 0)?;
            let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
            let ip = p
                .host_ip
                .clone()
                .filter(|ip| !ip.is_empty())
                .unwrap_or_else(|| "0.0.0.0".into());
            Some((protocol, ip, port))
        })
        .collect()
}

/// Upstream `HostPortInfo.CheckConflict`: the same protocol and port, and the same IP or either
/// on all addresses.
fn host_ports_conflict(admitted: &[&Pod], pod: &Pod) -> bool {
    let wanted = host_ports(pod);
    if wanted.is_empty() {
        return false;
    }
    let taken: Vec<HostPort> = admitted.iter().flat_map(|p| host_ports(p)).collect();
    wanted.iter().any(|(proto, ip, port)| {
        taken.iter().any(|(p2, ip2, port2)| {
            proto == p2 && port == port2 && (ip == ip2 || ip == "0.0.0.0" || ip2 == "0.0.0.0")
        })
    })
}

/// Whether a `NoExecute` taint of the node is not tolerated by the pod.
fn has_untolerated_no_execute_taint(node: &NodeFacts, pod: &Pod) -> bool {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default();
    node.taints
        .iter()
        .filter(|t| t.effect == "NoExecute")
        .any(|taint| !kwk_api::taints::tolerated(tolerations, taint))
}
