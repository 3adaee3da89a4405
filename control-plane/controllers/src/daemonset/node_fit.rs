//! Which nodes a DaemonSet's pod belongs on: the tolerations the controller adds to every
//! daemon pod, `nodeSelector`, required node affinity, taints, and the node-pinning affinity
//! (`matchFields metadata.name In [node]`) the created pods carry so the scheduler binds them.

use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodSpec, Toleration,
};

/// The field key upstream pins daemon pods with.
pub use kwk_api::node_selector::NODE_NAME_FIELD;
pub use kwk_api::taints::tolerates;

/// The tolerations every daemon pod gets (network-unavailable only with host networking):
/// daemons keep running on not-ready, unreachable, pressured and cordoned nodes.
pub fn daemon_tolerations(host_network: bool) -> Vec<Toleration> {
    let exists = |key: &str, effect: &str| Toleration {
        key: Some(key.to_string()),
        operator: Some("Exists".to_string()),
        effect: Some(effect.to_string()),
        ..Toleration::default()
    };
    let mut tolerations = vec![
        exists("node.kubernetes.io/not-ready", "NoExecute"),
        exists("node.kubernetes.io/unreachable", "NoExecute"),
        exists("node.kubernetes.io/disk-pressure", "NoSchedule"),
        exists("node.kubernetes.io/memory-pressure", "NoSchedule"),
        exists("node.kubernetes.io/pid-pressure", "NoSchedule"),
        exists("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if host_network {
        tolerations.push(exists(
            "node.kubernetes.io/network-unavailable",
            "NoSchedule",
        ));
    }
    tolerations
}

/// Add the daemon tolerations to `spec`, replacing an equal one (same key, operator, value,
/// effect: a user's `tolerationSeconds` on it is dropped, as upstream).
pub fn add_daemon_tolerations(spec: &mut PodSpec) {
    let host_network = spec.host_network.unwrap_or(false);
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for wanted in daemon_tolerations(host_network) {
        let same = |t: &Toleration| {
            t.key == wanted.key
                && operator(t) == operator(&wanted)
                && t.value.as_deref().unwrap_or_default()
                    == wanted.value.as_deref().unwrap_or_default()
                && t.effect == wanted.effect
        };
        if let Some(existing) = tolerations.iter_mut().find(|t| same(t)) {
            *existing = wanted;
        } else {
            tolerations.push(wanted);
        }
    }
}

fn operator(t: &Toleration) -> &str {
    t.operator.as_deref().unwrap_or("Equal")
}

/// Whether a daemon pod should be created on a node, and whether one already there may stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeFit {
    /// Create a pod here if there is none.
    pub should_run: bool,
    /// Keep a pod that is already here (only `NoExecute` taints evict).
    pub should_continue_running: bool,
}

/// Upstream's `NodeShouldRunDaemonPod` for a pod spec that already carries the daemon
/// tolerations.
pub fn node_fit(spec: &PodSpec, node: &Node) -> NodeFit {
    let name = node.metadata.name.as_deref().unwrap_or_default();
    let name_ok = spec
        .node_name
        .as_deref()
        .is_none_or(|n| n.is_empty() || n == name);
    let no_labels = std::collections::BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&no_labels);
    let placement_ok = name_ok && kwk_api::node_selector::pod_selects_node(spec, labels, name);
    let tolerations = spec.tolerations.as_deref().unwrap_or_default();
    let untolerated = |effect: &str| {
        node.spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .into_iter()
            .flatten()
            .filter(|t| t.effect == effect)
            .any(|t| !tolerations.iter().any(|tol| tolerates(tol, t)))
    };
    let no_execute = untolerated("NoExecute");
    let no_schedule = untolerated("NoSchedule");
    NodeFit {
        should_run: placement_ok && !no_execute && !no_schedule,
        should_continue_running: placement_ok && !no_execute,
    }
}

/// Pin `spec` to `node_name`: its required node affinity becomes the single term
/// `matchFields metadata.name In [node_name]` (preferred terms are kept).
pub fn pin_to_node(spec: &mut PodSpec, node_name: &str) {
    let selector = NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_fields: Some(vec![NodeSelectorRequirement {
                key: NODE_NAME_FIELD.to_string(),
                operator: "In".to_string(),
                values: Some(vec![node_name.to_string()]),
            }]),
            match_expressions: None,
        }],
    };
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let node_affinity = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    node_affinity.required_during_scheduling_ignored_during_execution = Some(selector);
}

/// The node a daemon pod is on or is pinned to (`spec.nodeName`, else its `matchFields`
/// pin), as upstream's `GetTargetNodeName`.
pub fn target_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(name) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        return Some(name.to_string());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms.iter().find_map(|term| {
        term.match_fields.iter().flatten().find_map(|req| {
            let values = req.values.as_deref().unwrap_or_default();
            (req.key == NODE_NAME_FIELD && req.operator == "In" && values.len() == 1)
                .then(|| values[0].clone())
        })
    })
}
