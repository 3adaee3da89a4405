//! InterPodAffinity: required pod affinity and anti-affinity of the incoming pod, and the
//! required anti-affinity of pods already bound, as a filter; preferred terms of both sides
//! (and existing pods' required affinity at the hard-affinity weight) as a score.

use std::collections::HashMap;

use super::{Code, CycleState, FilterResult, MAX_NODE_SCORE, Rejection};
use crate::pod_info::{AffinityTerm, NamespaceLabels, PodInfo, WeightedAffinityTerm};
use crate::snapshot::{NodeInfo, Snapshot};

pub const INTER_POD_AFFINITY: &str = "InterPodAffinity";
pub const REASON_AFFINITY: &str = "node(s) didn't match pod affinity rules";
pub const REASON_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
pub const REASON_EXISTING_ANTI_AFFINITY: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";

/// Counts per topology pair `(key, value)`.
pub type PairCounts = HashMap<(String, String), i64>;

/// PreFilter state: which topology pairs hold pods the rules care about.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PreFilterState {
    /// Pairs holding an existing pod whose required anti-affinity selects the incoming pod.
    pub existing_anti_affinity: PairCounts,
    /// Pairs holding pods that match all of the incoming pod's required affinity terms.
    pub affinity: PairCounts,
    /// Pairs holding pods that match one of the incoming pod's required anti-affinity terms.
    pub anti_affinity: PairCounts,
}

fn bump(counts: &mut PairCounts, node: &NodeInfo, key: &str) {
    if let Some(value) = node.labels().get(key) {
        *counts.entry((key.to_string(), value.clone())).or_default() += 1;
    }
}

fn matches_all(terms: &[AffinityTerm], pod: &PodInfo, ns: &dyn NamespaceLabels) -> bool {
    !terms.is_empty() && terms.iter().all(|t| t.matches_pod(pod, ns))
}

/// PreFilter: walks the nodes with anti-affinity pods, and all pods when the incoming pod has
/// required terms of its own.
pub fn pre_filter(pod: &PodInfo, snapshot: &Snapshot) -> PreFilterState {
    let mut state = PreFilterState::default();
    let own_terms = !pod.required_affinity.is_empty() || !pod.required_anti_affinity.is_empty();
    for node in snapshot.nodes() {
        if node.pods_with_required_anti_affinity == 0 && !own_terms {
            continue;
        }
        for existing in &node.pods {
            for term in &existing.required_anti_affinity {
                if term.matches_pod(pod, snapshot) {
                    bump(&mut state.existing_anti_affinity, node, &term.topology_key);
                }
            }
            if !own_terms {
                continue;
            }
            if matches_all(&pod.required_affinity, existing, snapshot) {
                for term in &pod.required_affinity {
                    bump(&mut state.affinity, node, &term.topology_key);
                }
            }
            for term in &pod.required_anti_affinity {
                if term.matches_pod(existing, snapshot) {
                    bump(&mut state.anti_affinity, node, &term.topology_key);
                }
            }
        }
    }
    state
}

fn shift(counts: &mut PairCounts, node: &NodeInfo, key: &str, delta: i64) {
    let Some(value) = node.labels().get(key) else {
        return;
    };
    let pair = (key.to_string(), value.clone());
    let count = counts.entry(pair.clone()).or_default();
    *count += delta;
    if *count == 0 {
        counts.remove(&pair);
    }
}

/// Adjusts the PreFilter counts for `existing` added to (`delta` 1) or removed from (−1)
/// `node`, as preemption's dry run does for victims.
pub fn update_for_pod(
    pre: &mut PreFilterState,
    incoming: &PodInfo,
    existing: &PodInfo,
    node: &NodeInfo,
    snapshot: &Snapshot,
    delta: i64,
) {
    for term in &existing.required_anti_affinity {
        if term.matches_pod(incoming, snapshot) {
            shift(
                &mut pre.existing_anti_affinity,
                node,
                &term.topology_key,
                delta,
            );
        }
    }
    if matches_all(&incoming.required_affinity, existing, snapshot) {
        for term in &incoming.required_affinity {
            shift(&mut pre.affinity, node, &term.topology_key, delta);
        }
    }
    for term in &incoming.required_anti_affinity {
        if term.matches_pod(existing, snapshot) {
            shift(&mut pre.anti_affinity, node, &term.topology_key, delta);
        }
    }
}

fn pair_count(counts: &PairCounts, key: &str, value: &str) -> i64 {
    // Avoids allocating a key for the common empty map.
    if counts.is_empty() {
        return 0;
    }
    counts
        .get(&(key.to_string(), value.to_string()))
        .copied()
        .unwrap_or(0)
}

fn satisfies_affinity(state: &CycleState<'_>, node: &NodeInfo, snapshot: &Snapshot) -> bool {
    let terms = &state.pod.required_affinity;
    let labels = node.labels();
    let mut pods_exist = true;
    for term in terms {
        let Some(value) = labels.get(&term.topology_key) else {
            return false;
        };
        if pair_count(&state.inter_pod.affinity, &term.topology_key, value) <= 0 {
            pods_exist = false;
        }
    }
    // The first pod of a group with affinity to itself may go anywhere with the topology keys.
    pods_exist || (state.inter_pod.affinity.is_empty() && matches_all(terms, state.pod, snapshot))
}

/// InterPodAffinity filter.
pub fn filter(state: &CycleState<'_>, node: &NodeInfo, snapshot: &Snapshot) -> FilterResult {
    let pre = &state.inter_pod;
    let labels = node.labels();
    if !state.pod.required_affinity.is_empty() && !satisfies_affinity(state, node, snapshot) {
        return Err(Rejection::new(
            INTER_POD_AFFINITY,
            Code::UnschedulableAndUnresolvable,
            REASON_AFFINITY,
        ));
    }
    let anti = state.pod.required_anti_affinity.iter().any(|term| {
        labels
            .get(&term.topology_key)
            .is_some_and(|v| pair_count(&pre.anti_affinity, &term.topology_key, v) > 0)
    });
    if anti {
        return Err(Rejection::new(
            INTER_POD_AFFINITY,
            Code::Unschedulable,
            REASON_ANTI_AFFINITY,
        ));
    }
    let existing = !pre.existing_anti_affinity.is_empty()
        && labels
            .iter()
            .any(|(k, v)| pair_count(&pre.existing_anti_affinity, k, v) > 0);
    if existing {
        return Err(Rejection::new(
            INTER_POD_AFFINITY,
            Code::Unschedulable,
            REASON_EXISTING_ANTI_AFFINITY,
        ));
    }
    Ok(())
}

/// PreScore state: summed weights per topology key and value.
pub type TopologyScores = HashMap<String, HashMap<String, i64>>;

fn add_terms(
    scores: &mut TopologyScores,
    terms: &[WeightedAffinityTerm],
    target: &PodInfo,
    node: &NodeInfo,
    sign: i64,
    ns: &dyn NamespaceLabels,
) {
    for t in terms {
        add_term(scores, &t.term, t.weight * sign, target, node, ns);
    }
}

fn add_term(
    scores: &mut TopologyScores,
    term: &AffinityTerm,
    weight: i64,
    target: &PodInfo,
    node: &NodeInfo,
    ns: &dyn NamespaceLabels,
) {
    if weight == 0 || !term.matches_pod(target, ns) {
        return;
    }
    if let Some(value) = node.labels().get(&term.topology_key) {
        *scores
            .entry(term.topology_key.clone())
            .or_default()
            .entry(value.clone())
            .or_default() += weight;
    }
}

/// PreScore: `None` when no term on either side applies (the plugin is skipped).
pub fn pre_score(
    pod: &PodInfo,
    snapshot: &Snapshot,
    hard_pod_affinity_weight: i64,
) -> Option<TopologyScores> {
    let own = !pod.preferred_affinity.is_empty() || !pod.preferred_anti_affinity.is_empty();
    let mut scores = TopologyScores::new();
    for node in snapshot.nodes() {
        if !own && node.pods_with_affinity == 0 {
            continue;
        }
        for existing in &node.pods {
            add_terms(
                &mut scores,
                &pod.preferred_affinity,
                existing,
                node,
                1,
                snapshot,
            );
            add_terms(
                &mut scores,
                &pod.preferred_anti_affinity,
                existing,
                node,
                -1,
                snapshot,
            );
            for term in &existing.required_affinity {
                add_term(
                    &mut scores,
                    term,
                    hard_pod_affinity_weight,
                    pod,
                    node,
                    snapshot,
                );
            }
            add_terms(
                &mut scores,
                &existing.preferred_affinity,
                pod,
                node,
                1,
                snapshot,
            );
            add_terms(
                &mut scores,
                &existing.preferred_anti_affinity,
                pod,
                node,
                -1,
                snapshot,
            );
        }
    }
    (!scores.is_empty()).then_some(scores)
}

/// Score (raw): the summed weights of the node's topology pairs.
pub fn score(scores: &TopologyScores, node: &NodeInfo) -> i64 {
    let labels = node.labels();
    scores
        .iter()
        .filter_map(|(key, values)| labels.get(key).and_then(|v| values.get(v)))
        .sum()
}

/// NormalizeScore: min–max scaling to 0..=100.
pub fn normalize(scores: &mut [i64]) {
    let min = scores.iter().copied().min().unwrap_or(0);
    let max = scores.iter().copied().max().unwrap_or(0);
    let spread = max - min;
    for s in scores.iter_mut() {
        *s = if spread > 0 {
            (MAX_NODE_SCORE as f64 * ((*s - min) as f64 / spread as f64)) as i64
        } else {
            0
        };
    }
}
