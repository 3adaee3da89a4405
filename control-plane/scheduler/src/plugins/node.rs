//! Plugins that only look at the node object: NodeUnschedulable, NodeName, TaintToleration
//! (filter on NoSchedule/NoExecute, score on PreferNoSchedule) and NodeAffinity (nodeSelector
//! and required terms as a filter, preferred terms as a score).

use std::borrow::Cow;

use k8s_openapi::api::core::v1::{Taint, Toleration};

use kwk_api::node_selector::{selector_matches, term_matches};
pub use kwk_api::taints::{tolerated, tolerates};

use super::{Code, CycleState, FilterResult, Rejection};
use crate::snapshot::NodeInfo;

pub const NODE_UNSCHEDULABLE: &str = "NodeUnschedulable";
pub const NODE_NAME: &str = "NodeName";
pub const TAINT_TOLERATION: &str = "TaintToleration";
pub const NODE_AFFINITY: &str = "NodeAffinity";

/// The taint the node lifecycle puts on cordoned nodes; tolerating it lets a pod land on an
/// unschedulable node.
pub const UNSCHEDULABLE_TAINT_KEY: &str = "node.kubernetes.io/unschedulable";

pub const REASON_UNSCHEDULABLE: &str = "node(s) were unschedulable";
pub const REASON_NODE_NAME: &str = "node(s) didn't match the requested node name";
pub const REASON_NODE_AFFINITY: &str = "node(s) didn't match Pod's node affinity/selector";

fn taints(node: &NodeInfo) -> &[Taint] {
    node.node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
}

/// NodeUnschedulable: a cordoned node only takes pods tolerating its unschedulable taint.
pub fn node_unschedulable(state: &CycleState<'_>, node: &NodeInfo) -> FilterResult {
    let cordoned = node.node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true);
    if !cordoned {
        return Ok(());
    }
    let taint = Taint {
        key: UNSCHEDULABLE_TAINT_KEY.to_string(),
        effect: "NoSchedule".to_string(),
        ..Default::default()
    };
    if tolerated(state.tolerations, &taint) {
        return Ok(());
    }
    Err(Rejection::new(
        NODE_UNSCHEDULABLE,
        Code::UnschedulableAndUnresolvable,
        REASON_UNSCHEDULABLE,
    ))
}

/// NodeName: a pod naming a node fits only that node.
pub fn node_name(state: &CycleState<'_>, node: &NodeInfo) -> FilterResult {
    match state.node_name {
        Some(name) if !name.is_empty() && name != node.name => Err(Rejection::new(
            NODE_NAME,
            Code::UnschedulableAndUnresolvable,
            REASON_NODE_NAME,
        )),
        _ => Ok(()),
    }
}

/// TaintToleration filter: the first NoSchedule or NoExecute taint the pod does not tolerate.
pub fn taint_toleration(state: &CycleState<'_>, node: &NodeInfo) -> FilterResult {
    let untolerated = taints(node).iter().find(|taint| {
        matches!(taint.effect.as_str(), "NoSchedule" | "NoExecute")
            && !tolerated(state.tolerations, taint)
    });
    match untolerated {
        None => Ok(()),
        Some(taint) => Err(Rejection {
            plugin: TAINT_TOLERATION,
            code: Code::UnschedulableAndUnresolvable,
            reasons: vec![Cow::Owned(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                taint.key,
                taint.value.as_deref().unwrap_or("")
            ))],
        }),
    }
}

/// TaintToleration score (raw): how many PreferNoSchedule taints the pod does not tolerate
/// (only tolerations with an empty or PreferNoSchedule effect count). Normalised reversed.
pub fn taint_toleration_score(state: &CycleState<'_>, node: &NodeInfo) -> i64 {
    let counts_for_scoring =
        |t: &&Toleration| matches!(t.effect.as_deref(), None | Some("" | "PreferNoSchedule"));
    let count = taints(node)
        .iter()
        .filter(|taint| {
            taint.effect == "PreferNoSchedule"
                && !state
                    .tolerations
                    .iter()
                    .filter(counts_for_scoring)
                    .any(|t| tolerates(t, taint))
        })
        .count();
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// Whether the pod's nodeSelector and required node affinity both select the node.
pub fn pod_matches_node_affinity(state: &CycleState<'_>, node: &NodeInfo) -> bool {
    let labels = node.labels();
    state
        .node_selector
        .iter()
        .flat_map(|m| m.iter())
        .all(|(k, v)| labels.get(k) == Some(v))
        && state
            .required_node_affinity
            .is_none_or(|sel| selector_matches(sel, labels, &node.name))
}

/// NodeAffinity filter: nodeSelector and required node affinity.
pub fn node_affinity(state: &CycleState<'_>, node: &NodeInfo) -> FilterResult {
    if pod_matches_node_affinity(state, node) {
        Ok(())
    } else {
        Err(Rejection::new(
            NODE_AFFINITY,
            Code::UnschedulableAndUnresolvable,
            REASON_NODE_AFFINITY,
        ))
    }
}

/// NodeAffinity score (raw): the summed weights of the preferred terms the node matches.
pub fn node_affinity_score(state: &CycleState<'_>, node: &NodeInfo) -> i64 {
    let labels = node.labels();
    state
        .preferred_node_affinity
        .iter()
        .filter(|p| p.weight != 0 && term_matches(&p.preference, labels, &node.name))
        .map(|p| i64::from(p.weight))
        .sum()
}
