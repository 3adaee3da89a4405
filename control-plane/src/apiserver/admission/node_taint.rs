//! Upstream's `TaintNodesByCondition` admission plugin: a Node is created with the
//! `node.kubernetes.io/not-ready:NoSchedule` taint, so nothing is scheduled onto it before
//! the node-lifecycle controller has seen it Ready (and removed the taint).

use k8s_openapi::api::core::v1::{Node, NodeSpec, Taint};

/// The key of the taint a new node carries until it is Ready.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";

/// Adds `not-ready:NoSchedule` unless a taint with that key and effect is there.
pub fn taint_new_node(node: &mut Node) {
    let taints = node
        .spec
        .get_or_insert_with(NodeSpec::default)
        .taints
        .get_or_insert_with(Vec::new);
    if !taints
        .iter()
        .any(|t| t.key == TAINT_NOT_READY && t.effect == "NoSchedule")
    {
        taints.push(Taint {
            key: TAINT_NOT_READY.into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        });
    }
}
