//! PodTopologySpread: hard constraints (`whenUnsatisfiable: DoNotSchedule`) as a filter
//! with `maxSkew`, `minDomains` and the node inclusion policies; soft ones
//! (`ScheduleAnyway`) as a score that prefers the least crowded domains.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Pod, TopologySpreadConstraint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use super::node::{pod_matches_node_affinity, tolerates};
use super::{Code, CycleState, FilterResult, MAX_NODE_SCORE, Rejection};
use crate::pod_info::PodInfo;
use crate::snapshot::{NodeInfo, Snapshot};

pub const POD_TOPOLOGY_SPREAD: &str = "PodTopologySpread";
pub const REASON_CONSTRAINTS_NOT_MATCH: &str =
    "node(s) didn't match pod topology spread constraints";
pub const REASON_MISSING_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";
/// The well-known hostname label, counted per node when scoring.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
/// The well-known zone label.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// One spread constraint of the pod being scheduled, with `matchLabelKeys` merged in.
#[derive(Clone, Debug, PartialEq)]
pub struct Constraint {
    pub max_skew: i64,
    pub topology_key: String,
    pub selector: Option<LabelSelector>,
    pub min_domains: i64,
    pub honor_node_affinity: bool,
    pub honor_node_taints: bool,
    /// Whether the pod being scheduled matches its own selector.
    pub self_match: bool,
}

impl Constraint {
    fn from_api(c: &TopologySpreadConstraint, pod: &Pod) -> Self {
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let selector = c.label_selector.clone().map(|mut sel| {
            for key in c.match_label_keys.iter().flatten() {
                if let Some(value) = labels.get(key) {
                    sel.match_expressions.get_or_insert_with(Vec::new).push(
                        LabelSelectorRequirement {
                            key: key.clone(),
                            operator: "In".to_string(),
                            values: Some(vec![value.clone()]),
                        },
                    );
                }
            }
            sel
        });
        let self_match = selector
            .as_ref()
            .is_some_and(|s| kwk_api::meta::selector_matches(s, &labels));
        Constraint {
            max_skew: i64::from(c.max_skew),
            topology_key: c.topology_key.clone(),
            selector,
            min_domains: i64::from(c.min_domains.unwrap_or(1)),
            honor_node_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
            honor_node_taints: c.node_taints_policy.as_deref() == Some("Honor"),
            self_match,
        }
    }

    /// How many pods on the node, in `namespace`, the constraint selects.
    fn count_on(&self, node: &NodeInfo, namespace: &str) -> i64 {
        let Some(selector) = &self.selector else {
            return 0;
        };
        let n = node
            .pods
            .iter()
            .filter(|p| {
                p.namespace == namespace
                    && !p.is_terminating()
                    && kwk_api::meta::selector_matches(selector, p.labels())
            })
            .count();
        i64::try_from(n).unwrap_or(i64::MAX)
    }

    /// Whether the node counts for this constraint under its node inclusion policies.
    fn includes(&self, state: &CycleState<'_>, node: &NodeInfo) -> bool {
        if self.honor_node_affinity && !pod_matches_node_affinity(state, node) {
            return false;
        }
        if self.honor_node_taints {
            let taints = node.node.spec.as_ref().and_then(|s| s.taints.as_deref());
            let untolerated = taints.unwrap_or_default().iter().any(|taint| {
                matches!(taint.effect.as_str(), "NoSchedule" | "NoExecute")
                    && !state.tolerations.iter().any(|t| tolerates(t, taint))
            });
            if untolerated {
                return false;
            }
        }
        true
    }
}

/// The pod's constraints, split into hard and soft ones.
pub fn constraints(pod: &Pod) -> (Vec<Constraint>, Vec<Constraint>) {
    let mut hard = Vec::new();
    let mut soft = Vec::new();
    for c in pod
        .spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_deref())
        .unwrap_or_default()
    {
        let parsed = Constraint::from_api(c, pod);
        if c.when_unsatisfiable == "ScheduleAnyway" {
            soft.push(parsed);
        } else {
            hard.push(parsed);
        }
    }
    (hard, soft)
}

/// Upstream's system default constraints (`defaultingType: System`) for a pod without
/// constraints of its own, selecting the pods of the same Services, ReplicaSets,
/// ReplicationControllers and StatefulSets (`selector`, worked out by the caller): soft,
/// maxSkew 3 per node and 5 per zone.
pub fn system_default_constraints(selector: &LabelSelector, pod: &Pod) -> Vec<Constraint> {
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let self_match = kwk_api::meta::selector_matches(selector, &labels);
    [(HOSTNAME_LABEL, 3), (ZONE_LABEL, 5)]
        .into_iter()
        .map(|(key, max_skew)| Constraint {
            max_skew,
            topology_key: key.to_string(),
            selector: Some(selector.clone()),
            min_domains: 1,
            honor_node_affinity: true,
            honor_node_taints: false,
            self_match,
        })
        .collect()
}

fn has_all_keys(node: &NodeInfo, constraints: &[Constraint]) -> bool {
    let labels = node.labels();
    constraints
        .iter()
        .all(|c| labels.contains_key(&c.topology_key))
}

/// Matching pods per domain of each hard constraint, and the global minimum.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HardState {
    pub constraints: Vec<Constraint>,
    pub counts: Vec<HashMap<String, i64>>,
    pub min_counts: Vec<i64>,
}

/// PreFilter: counts matching pods per domain over every eligible node.
pub fn pre_filter(
    state: &CycleState<'_>,
    hard: Vec<Constraint>,
    pod: &PodInfo,
    snapshot: &Snapshot,
) -> HardState {
    if hard.is_empty() {
        return HardState::default();
    }
    let mut counts: Vec<HashMap<String, i64>> = vec![HashMap::new(); hard.len()];
    for node in snapshot.nodes() {
        if !has_all_keys(node, &hard) {
            continue;
        }
        for (c, domain_counts) in hard.iter().zip(counts.iter_mut()) {
            if !c.includes(state, node) {
                continue;
            }
            let value = node
                .labels()
                .get(&c.topology_key)
                .cloned()
                .unwrap_or_default();
            *domain_counts.entry(value).or_default() += c.count_on(node, &pod.namespace);
        }
    }
    let min_counts = hard
        .iter()
        .zip(&counts)
        .map(|(c, domain_counts)| {
            let domains = i64::try_from(domain_counts.len()).unwrap_or(i64::MAX);
            if domains < c.min_domains {
                0
            } else {
                domain_counts.values().copied().min().unwrap_or(0)
            }
        })
        .collect();
    HardState {
        constraints: hard,
        counts,
        min_counts,
    }
}

/// Adjusts the PreFilter counts for `pod` added to (`delta` 1) or removed from (−1) `node`,
/// as preemption's dry run does for victims.
pub fn update_for_pod(state: &mut CycleState<'_>, pod: &PodInfo, node: &NodeInfo, delta: i64) {
    if state.spread.constraints.is_empty()
        || pod.namespace != state.pod.namespace
        || pod.is_terminating()
        || !has_all_keys(node, &state.spread.constraints)
    {
        return;
    }
    let included: Vec<bool> = state
        .spread
        .constraints
        .iter()
        .map(|c| c.includes(state, node))
        .collect();
    let hard = &mut state.spread;
    for (i, c) in hard.constraints.iter().enumerate() {
        let selected = c
            .selector
            .as_ref()
            .is_some_and(|sel| kwk_api::meta::selector_matches(sel, pod.labels()));
        if !included[i] || !selected {
            continue;
        }
        if let Some(value) = node.labels().get(&c.topology_key) {
            *hard.counts[i].entry(value.clone()).or_default() += delta;
        }
        let domains = i64::try_from(hard.counts[i].len()).unwrap_or(i64::MAX);
        hard.min_counts[i] = if domains < c.min_domains {
            0
        } else {
            hard.counts[i].values().copied().min().unwrap_or(0)
        };
    }
}

/// PodTopologySpread filter.
pub fn filter(state: &CycleState<'_>, node: &NodeInfo) -> FilterResult {
    let hard = &state.spread;
    let labels = node.labels();
    for (i, c) in hard.constraints.iter().enumerate() {
        let Some(value) = labels.get(&c.topology_key) else {
            return Err(Rejection::new(
                POD_TOPOLOGY_SPREAD,
                Code::UnschedulableAndUnresolvable,
                REASON_MISSING_LABEL,
            ));
        };
        let matching = hard.counts[i].get(value).copied().unwrap_or(0);
        let skew = matching + i64::from(c.self_match) - hard.min_counts[i];
        if skew > c.max_skew {
            return Err(Rejection::new(
                POD_TOPOLOGY_SPREAD,
                Code::Unschedulable,
                REASON_CONSTRAINTS_NOT_MATCH,
            ));
        }
    }
    Ok(())
}

/// PreScore state of the soft constraints over the feasible nodes.
#[derive(Clone, Debug, Default)]
pub struct SoftState {
    constraints: Vec<Constraint>,
    /// Matching pods per domain (not for the hostname key, counted per node).
    counts: Vec<HashMap<String, i64>>,
    weights: Vec<f64>,
    /// Nodes missing a key are ignored (always, except for system default constraints).
    require_all: bool,
}

/// PreScore: domains of the feasible nodes, and matching pods per domain over all nodes.
pub fn pre_score(
    state: &CycleState<'_>,
    snapshot: &Snapshot,
    feasible: &[usize],
) -> Option<SoftState> {
    let soft = &state.soft_spread;
    if soft.is_empty() {
        return None;
    }
    let nodes = snapshot.nodes();
    let mut counts: Vec<HashMap<String, i64>> = vec![HashMap::new(); soft.len()];
    let require_all = state.soft_spread_requires_all_keys;
    let mut considered = 0usize;
    for &i in feasible {
        if require_all && !has_all_keys(&nodes[i], soft) {
            continue;
        }
        considered += 1;
        for (c, domain_counts) in soft.iter().zip(counts.iter_mut()) {
            if c.topology_key == HOSTNAME_LABEL {
                continue;
            }
            if let Some(value) = nodes[i].labels().get(&c.topology_key) {
                domain_counts.entry(value.clone()).or_insert(0);
            }
        }
    }
    let weights = soft
        .iter()
        .zip(&counts)
        .map(|(c, domain_counts)| {
            let size = if c.topology_key == HOSTNAME_LABEL {
                considered
            } else {
                domain_counts.len()
            };
            ((size + 2) as f64).ln()
        })
        .collect();
    for node in nodes {
        if require_all && !has_all_keys(node, soft) {
            continue;
        }
        for (c, domain_counts) in soft.iter().zip(counts.iter_mut()) {
            if c.topology_key == HOSTNAME_LABEL || !c.includes(state, node) {
                continue;
            }
            let value = node.labels().get(&c.topology_key);
            if let Some(count) = value.and_then(|v| domain_counts.get_mut(v)) {
                *count += c.count_on(node, &state.pod.namespace);
            }
        }
    }
    Some(SoftState {
        constraints: soft.clone(),
        counts,
        weights,
        require_all,
    })
}

/// Score (raw), or `None` for a node missing a topology key (ignored, scored 0).
pub fn score(soft: &SoftState, state: &CycleState<'_>, node: &NodeInfo) -> Option<i64> {
    if soft.require_all && !has_all_keys(node, &soft.constraints) {
        return None;
    }
    let labels = node.labels();
    let mut total = 0.0;
    for (i, c) in soft.constraints.iter().enumerate() {
        let Some(value) = labels.get(&c.topology_key) else {
            continue;
        };
        let count = if c.topology_key == HOSTNAME_LABEL {
            c.count_on(node, &state.pod.namespace)
        } else {
            soft.counts[i].get(value).copied().unwrap_or(0)
        };
        total += count as f64 * soft.weights[i] + (c.max_skew - 1) as f64;
    }
    Some(total.round() as i64)
}

/// NormalizeScore: fewer matching pods score higher; ignored nodes score 0.
pub fn normalize(scores: &[Option<i64>]) -> Vec<i64> {
    let valid = scores.iter().flatten().copied();
    let min = valid.clone().min().unwrap_or(0);
    let max = valid.max().unwrap_or(0);
    scores
        .iter()
        .map(|s| match s {
            None => 0,
            Some(_) if max == 0 => MAX_NODE_SCORE,
            Some(s) => MAX_NODE_SCORE * (max + min - s) / max,
        })
        .collect()
}
