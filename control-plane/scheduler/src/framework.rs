//! One scheduling cycle: the per-pod [`CycleState`] computed once (PreFilter), filters run
//! node by node from a rotating start until enough feasible nodes are found
//! (`percentageOfNodesToScore`), weighted scores, and a seeded random pick among the best.
//! A pod that fits nowhere gets a [`FitError`] whose message is upstream's.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{NodeSelector, Pod, PreferredSchedulingTerm, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::fit_error::FitError;
use crate::plugins::fit::{self, ScoringStrategy};
use crate::plugins::topology_spread::{self, Constraint, HardState};
use crate::plugins::volume_binding::{self, Binding};
use crate::plugins::{FilterResult, default_normalize, inter_pod_affinity, node};
use crate::pod_info::PodInfo;
use crate::rng::XorShift;
use crate::snapshot::{NodeInfo, Snapshot, normalized_image_name};

/// Upstream's minimum number of feasible nodes to look for.
pub const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// Upstream's minimum adaptive percentage of nodes to score.
pub const MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND: usize = 5;

/// Score plugin weights (upstream's default profile).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScoreWeights {
    pub taint_toleration: i64,
    pub node_affinity: i64,
    pub node_resources_fit: i64,
    pub pod_topology_spread: i64,
    pub inter_pod_affinity: i64,
    pub balanced_allocation: i64,
    pub image_locality: i64,
}

impl Default for ScoreWeights {
    fn default() -> Self {
        ScoreWeights {
            taint_toleration: 3,
            node_affinity: 2,
            node_resources_fit: 1,
            pod_topology_spread: 2,
            inter_pod_affinity: 2,
            balanced_allocation: 1,
            image_locality: 1,
        }
    }
}

/// The scheduler profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `percentageOfNodesToScore`; 0 means upstream's adaptive default.
    pub percentage_of_nodes_to_score: usize,
    pub scoring_strategy: ScoringStrategy,
    pub weights: ScoreWeights,
    /// InterPodAffinity's `hardPodAffinityWeight`.
    pub hard_pod_affinity_weight: i64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            percentage_of_nodes_to_score: 0,
            scoring_strategy: ScoringStrategy::LeastAllocated,
            weights: ScoreWeights::default(),
            hard_pod_affinity_weight: 1,
        }
    }
}

/// How many feasible nodes to find before scoring, out of `all` nodes.
pub fn num_feasible_nodes_to_find(all: usize, percentage: usize) -> usize {
    if all < MIN_FEASIBLE_NODES_TO_FIND {
        return all;
    }
    let percentage = if percentage == 0 {
        50usize
            .saturating_sub(all / 125)
            .max(MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND)
    } else {
        percentage.min(100)
    };
    (all * percentage / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
}

/// What the PreFilter step computed about the pod, read by every filter and score.
#[derive(Clone, Debug)]
pub struct CycleState<'a> {
    pub pod: &'a PodInfo,
    pub tolerations: &'a [Toleration],
    pub node_name: Option<&'a str>,
    pub node_selector: Option<&'a BTreeMap<String, String>>,
    pub required_node_affinity: Option<&'a NodeSelector>,
    pub preferred_node_affinity: &'a [PreferredSchedulingTerm],
    /// Normalised images of the init and app containers.
    pub images: Vec<String>,
    pub spread: HardState,
    pub soft_spread: Vec<Constraint>,
    /// False for system default spread constraints: nodes missing a key still score.
    pub soft_spread_requires_all_keys: bool,
    pub inter_pod: inter_pod_affinity::PreFilterState,
    /// The pod's PersistentVolumeClaims (VolumeBinding).
    pub volumes: volume_binding::PreFilterState,
}

impl<'a> CycleState<'a> {
    /// PreFilter: everything about `pod` that does not depend on the node.
    pub fn new(pod: &'a PodInfo, snapshot: &Snapshot) -> Self {
        Self::with_default_spread(pod, snapshot, None)
    }

    /// [`CycleState::new`], applying upstream's system default spread constraints with
    /// `default_spread_selector` when the pod has no constraints of its own.
    pub fn with_default_spread(
        pod: &'a PodInfo,
        snapshot: &Snapshot,
        default_spread_selector: Option<&LabelSelector>,
    ) -> Self {
        let spec = pod.pod.spec.as_ref();
        let node_affinity = spec
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref());
        let images = spec
            .into_iter()
            .flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers))
            .filter_map(|c| c.image.as_deref())
            .map(normalized_image_name)
            .collect();
        let (hard, mut soft) = topology_spread::constraints(&pod.pod);
        let mut soft_spread_requires_all_keys = true;
        if hard.is_empty()
            && soft.is_empty()
            && let Some(selector) = default_spread_selector
        {
            soft = topology_spread::system_default_constraints(selector, &pod.pod);
            soft_spread_requires_all_keys = false;
        }
        let mut state = CycleState {
            pod,
            tolerations: spec
                .and_then(|s| s.tolerations.as_deref())
                .unwrap_or_default(),
            node_name: spec.and_then(|s| s.node_name.as_deref()),
            node_selector: spec.and_then(|s| s.node_selector.as_ref()),
            required_node_affinity: node_affinity.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            }),
            preferred_node_affinity: node_affinity
                .and_then(|a| {
                    a.preferred_during_scheduling_ignored_during_execution
                        .as_deref()
                })
                .unwrap_or_default(),
            images,
            spread: HardState::default(),
            soft_spread: soft,
            soft_spread_requires_all_keys,
            inter_pod: inter_pod_affinity::pre_filter(pod, snapshot),
            volumes: volume_binding::pre_filter(&pod.pod, snapshot.volumes()),
        };
        state.spread = topology_spread::pre_filter(&state, hard, pod, snapshot);
        state
    }
}

impl CycleState<'_> {
    /// Accounts for `pod` added to (`delta` 1) or removed from (−1) `node` in the
    /// cluster-wide PreFilter state (topology spread counts, inter-pod affinity pairs).
    pub fn update_for_pod(
        &mut self,
        pod: &PodInfo,
        node: &NodeInfo,
        snapshot: &Snapshot,
        delta: i64,
    ) {
        topology_spread::update_for_pod(self, pod, node, delta);
        let incoming = self.pod;
        inter_pod_affinity::update_for_pod(
            &mut self.inter_pod,
            incoming,
            pod,
            node,
            snapshot,
            delta,
        );
    }
}

/// Runs the default filters in upstream's order; the first rejection wins.
pub fn run_filters(state: &CycleState<'_>, node: &NodeInfo, snapshot: &Snapshot) -> FilterResult {
    node::node_unschedulable(state, node)?;
    node::node_name(state, node)?;
    node::taint_toleration(state, node)?;
    node::node_affinity(state, node)?;
    fit::node_ports(state, node)?;
    fit::resources_fit(state, node)?;
    volume_binding::filter(state, node)?;
    if !state.spread.constraints.is_empty() {
        topology_spread::filter(state, node)?;
    }
    inter_pod_affinity::filter(state, node, snapshot)
}

/// Weighted, normalised total scores of the feasible nodes (indexes into the snapshot).
pub fn score_nodes(
    state: &CycleState<'_>,
    snapshot: &Snapshot,
    feasible: &[usize],
    config: &Config,
) -> Vec<i64> {
    let nodes = snapshot.nodes();
    let w = &config.weights;
    let mut totals = vec![0i64; feasible.len()];
    let mut add = |scores: Vec<i64>, weight: i64| {
        for (t, s) in totals.iter_mut().zip(scores) {
            *t += s * weight;
        }
    };
    let per_node = |f: &dyn Fn(&NodeInfo) -> i64| -> Vec<i64> {
        feasible.iter().map(|&i| f(&nodes[i])).collect()
    };

    let mut taints = per_node(&|n| node::taint_toleration_score(state, n));
    default_normalize(&mut taints, true);
    add(taints, w.taint_toleration);

    if !state.preferred_node_affinity.is_empty() {
        let mut affinity = per_node(&|n| node::node_affinity_score(state, n));
        default_normalize(&mut affinity, false);
        add(affinity, w.node_affinity);
    }

    let strategy = config.scoring_strategy;
    add(
        per_node(&|n| fit::resources_fit_score(state, n, strategy)),
        w.node_resources_fit,
    );
    add(
        per_node(&|n| fit::balanced_allocation_score(state, n)),
        w.balanced_allocation,
    );
    if !state.images.is_empty() {
        add(
            per_node(&|n| fit::image_locality_score(state, n, snapshot)),
            w.image_locality,
        );
    }

    if let Some(soft) = topology_spread::pre_score(state, snapshot, feasible) {
        let raw: Vec<Option<i64>> = feasible
            .iter()
            .map(|&i| topology_spread::score(&soft, state, &nodes[i]))
            .collect();
        add(topology_spread::normalize(&raw), w.pod_topology_spread);
    }

    if let Some(topology) =
        inter_pod_affinity::pre_score(state.pod, snapshot, config.hard_pod_affinity_weight)
    {
        let mut scores = per_node(&|n| inter_pod_affinity::score(&topology, n));
        inter_pod_affinity::normalize(&mut scores);
        add(scores, w.inter_pod_affinity);
    }
    totals
}

/// A successful decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleResult {
    pub node: String,
    /// Nodes the filters ran on.
    pub evaluated_nodes: usize,
    /// Nodes that passed the filters.
    pub feasible_nodes: usize,
    /// Volumes to bind to the pod's WaitForFirstConsumer claims on `node` before the pod.
    pub volume_bindings: Vec<Binding>,
}

/// The scheduling algorithm with the state it carries between pods: the rotating start
/// index and the tie-break random generator.
#[derive(Clone, Debug)]
pub struct Scheduler {
    config: Config,
    next_start_index: usize,
    rng: XorShift,
}

impl Scheduler {
    /// A scheduler with a profile and a random seed.
    pub fn new(config: Config, seed: u64) -> Self {
        Scheduler {
            config,
            next_start_index: 0,
            rng: XorShift::new(seed),
        }
    }

    /// The profile.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Picks a node for `pod`, or says why none fits.
    pub fn schedule(&mut self, pod: &Pod, snapshot: &Snapshot) -> Result<ScheduleResult, FitError> {
        self.schedule_arc(Arc::new(pod.clone()), snapshot)
    }

    /// [`Scheduler::schedule`] for a shared pod.
    pub fn schedule_arc(
        &mut self,
        pod: Arc<Pod>,
        snapshot: &Snapshot,
    ) -> Result<ScheduleResult, FitError> {
        self.schedule_with(pod, snapshot, None)
    }

    /// [`Scheduler::schedule`] with the selector upstream's system default spread
    /// constraints use for this pod (the union of the selectors of the Services,
    /// ReplicationControllers, ReplicaSets and StatefulSets selecting it; `None` when there
    /// are none).
    pub fn schedule_with(
        &mut self,
        pod: Arc<Pod>,
        snapshot: &Snapshot,
        default_spread_selector: Option<&LabelSelector>,
    ) -> Result<ScheduleResult, FitError> {
        let nodes = snapshot.nodes();
        let all = nodes.len();
        if all == 0 {
            return Err(FitError::no_nodes());
        }
        let info = match PodInfo::new(pod) {
            Ok(info) => info,
            Err(e) => return Err(FitError::pre_filter(all, e.to_string())),
        };
        let state = CycleState::with_default_spread(&info, snapshot, default_spread_selector);
        if let Some(message) = state.volumes.rejection() {
            return Err(FitError::pre_filter(all, message.to_string()));
        }

        // A nominated node (set by an earlier preemption) is tried first, on its own.
        let nominated = info
            .pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.as_deref())
            .and_then(|name| snapshot.node_position(name));
        if let Some(i) = nominated
            && run_filters(&state, &nodes[i], snapshot).is_ok()
        {
            return Ok(ScheduleResult {
                node: nodes[i].name.clone(),
                evaluated_nodes: 1,
                feasible_nodes: 1,
                volume_bindings: volume_binding::bindings(&state, &nodes[i]),
            });
        }

        let to_find = num_feasible_nodes_to_find(all, self.config.percentage_of_nodes_to_score);
        let start = self.next_start_index % all;
        let mut feasible = Vec::with_capacity(to_find.min(all));
        let mut rejections = Vec::new();
        let mut processed = 0;
        for k in 0..all {
            let i = (start + k) % all;
            processed += 1;
            match run_filters(&state, &nodes[i], snapshot) {
                Ok(()) => {
                    feasible.push(i);
                    if feasible.len() >= to_find {
                        break;
                    }
                }
                Err(rejection) => rejections.push((nodes[i].name.clone(), rejection)),
            }
        }
        self.next_start_index = (start + processed) % all;

        let chosen = match feasible.as_slice() {
            [] => return Err(FitError::filtered(all, rejections)),
            [only] => *only,
            _ => {
                let scores = score_nodes(&state, snapshot, &feasible, &self.config);
                self.select_host(&feasible, &scores)
            }
        };
        Ok(ScheduleResult {
            node: nodes[chosen].name.clone(),
            evaluated_nodes: processed,
            feasible_nodes: feasible.len(),
            volume_bindings: volume_binding::bindings(&state, &nodes[chosen]),
        })
    }

    /// The highest-scoring node; ties broken uniformly at random (reservoir sampling).
    fn select_host(&mut self, feasible: &[usize], scores: &[i64]) -> usize {
        let mut best = feasible[0];
        let mut best_score = scores[0];
        let mut ties = 1;
        for (&node, &score) in feasible.iter().zip(scores).skip(1) {
            if score > best_score {
                best = node;
                best_score = score;
                ties = 1;
            } else if score == best_score {
                ties += 1;
                if self.rng.below(ties) == 0 {
                    best = node;
                }
            }
        }
        best
    }
}

#[cfg(test)]
#[path = "framework_tests.rs"]
mod tests;
