//! DefaultPreemption (PostFilter): when a pod fits no node, find a node where evicting
//! lower-priority pods makes it fit, evicting as few and as unimportant pods as possible and
//! preferring not to break PodDisruptionBudgets; or say why preemption cannot help, in
//! upstream's words.
//!
//! The dry run removes the victims from a copy of the node and from a copy of the pod's
//! PreFilter state (topology spread counts, inter-pod affinity pairs), as upstream does with
//! its RemovePod extensions. Nominated pods of other preemptors are not accounted for.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::fit_error::{FitError, reason_histogram};
use crate::framework::{CycleState, run_filters};
use crate::plugins::{Code, Rejection};
use crate::pod_info::PodInfo;
use crate::snapshot::{NodeInfo, Snapshot};

pub const REASON_NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
pub const REASON_NO_VICTIMS: &str = "No preemption victims found for incoming pod";
/// Upstream evaluates at least this share of the potential nodes ...
pub const MIN_CANDIDATE_NODES_PERCENTAGE: usize = 10;
/// ... and at least this many.
pub const MIN_CANDIDATE_NODES_ABSOLUTE: usize = 100;

/// The decision: evict `victims` so the pod can go to `nominated_node`.
#[derive(Clone, Debug, PartialEq)]
pub struct Preemption {
    pub nominated_node: String,
    pub victims: Vec<Arc<Pod>>,
    /// How many victims a PodDisruptionBudget does not allow to disrupt.
    pub pdb_violations: usize,
}

#[derive(Clone, Debug)]
struct Candidate {
    node: usize,
    victims: Vec<Arc<PodInfo>>,
    pdb_violations: usize,
}

fn start_time(pod: &PodInfo) -> Timestamp {
    pod.pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map_or(Timestamp::MAX, |Time(t)| *t)
}

/// Whether `a` is more important than `b`: higher priority, then started earlier.
fn more_important(a: &PodInfo, b: &PodInfo) -> std::cmp::Ordering {
    b.priority
        .cmp(&a.priority)
        .then_with(|| start_time(a).cmp(&start_time(b)))
}

/// Splits pods into (would violate a PDB, would not), consuming the budgets in order.
fn split_by_pdb(
    pods: Vec<Arc<PodInfo>>,
    pdbs: &[PodDisruptionBudget],
) -> (Vec<Arc<PodInfo>>, Vec<Arc<PodInfo>>) {
    let mut allowed: Vec<i64> = pdbs
        .iter()
        .map(|p| {
            p.status
                .as_ref()
                .map_or(0, |s| i64::from(s.disruptions_allowed))
        })
        .collect();
    let mut violating = Vec::new();
    let mut fine = Vec::new();
    for pod in pods {
        let mut violates = false;
        for (pdb, left) in pdbs.iter().zip(allowed.iter_mut()) {
            if pdb.metadata.namespace.as_deref().unwrap_or("default") != pod.namespace {
                continue;
            }
            let Some(selector) = pdb.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
                continue;
            };
            if kwk_api::meta::selector_is_empty(selector)
                || !kwk_api::meta::selector_matches(selector, pod.labels())
            {
                continue;
            }
            let name = pod.pod.metadata.name.as_deref().unwrap_or("");
            let already_disrupted = pdb
                .status
                .as_ref()
                .and_then(|s| s.disrupted_pods.as_ref())
                .is_some_and(|d| d.contains_key(name));
            if already_disrupted {
                continue;
            }
            *left -= 1;
            if *left < 0 {
                violates = true;
            }
        }
        if violates {
            violating.push(pod);
        } else {
            fine.push(pod);
        }
    }
    (violating, fine)
}

/// Which pods to evict from `node` so the pod fits: all lower-priority pods are removed,
/// then as many as possible are put back, most important first (PDB-protected ones first).
fn select_victims(
    state: &CycleState<'_>,
    node: &NodeInfo,
    snapshot: &Snapshot,
    pdbs: &[PodDisruptionBudget],
) -> Result<Candidate, Rejection> {
    let priority = state.pod.priority;
    let mut potential: Vec<Arc<PodInfo>> = node
        .pods
        .iter()
        .filter(|p| p.priority < priority)
        .cloned()
        .collect();
    if potential.is_empty() {
        return Err(Rejection::new(
            "DefaultPreemption",
            Code::UnschedulableAndUnresolvable,
            REASON_NO_VICTIMS,
        ));
    }
    let mut trial = node.clone();
    let mut state = state.clone();
    for victim in &potential {
        trial.remove_pod(&victim.key);
        state.update_for_pod(victim, node, snapshot, -1);
    }
    run_filters(&state, &trial, snapshot)?;
    potential.sort_by(|a, b| more_important(a, b));
    let (violating, fine) = split_by_pdb(potential, pdbs);
    let mut victims = Vec::new();
    let mut pdb_violations = 0;
    for (group, violates) in [(violating, true), (fine, false)] {
        for pod in group {
            trial.add_pod(pod.clone());
            state.update_for_pod(&pod, node, snapshot, 1);
            if run_filters(&state, &trial, snapshot).is_err() {
                trial.remove_pod(&pod.key);
                state.update_for_pod(&pod, node, snapshot, -1);
                if violates {
                    pdb_violations += 1;
                }
                victims.push(pod);
            }
        }
    }
    victims.sort_by(|a, b| more_important(a, b));
    let index = snapshot.node_position(&node.name).unwrap_or(0);
    Ok(Candidate {
        node: index,
        victims,
        pdb_violations,
    })
}

/// Upstream's `pickOneNodeForPreemption` order: fewest PDB violations, lowest highest
/// victim priority, lowest priority sum, fewest victims, latest start of the most important
/// victims, then the first.
fn pick(candidates: &[Candidate]) -> Option<&Candidate> {
    if let Some(free) = candidates.iter().find(|c| c.victims.is_empty()) {
        return Some(free);
    }
    let key = |c: &Candidate| {
        let highest = c
            .victims
            .iter()
            .map(|v| v.priority)
            .max()
            .unwrap_or(i32::MIN);
        let sum: i64 = c
            .victims
            .iter()
            .map(|v| i64::from(v.priority) - i64::from(i32::MIN))
            .sum();
        let earliest_of_highest = c
            .victims
            .iter()
            .filter(|v| v.priority == highest)
            .map(|v| start_time(v))
            .min()
            .unwrap_or(Timestamp::MAX);
        (
            c.pdb_violations,
            highest,
            sum,
            c.victims.len(),
            std::cmp::Reverse(earliest_of_highest),
        )
    };
    candidates.iter().min_by_key(|c| key(c))
}

/// Tries to preempt for `pod`, which failed with `fit_error` on `snapshot`. `Err` carries
/// the PostFilter message to append to the fit error
/// ([`FitError::with_post_filter`]).
pub fn preempt(
    pod: &Pod,
    snapshot: &Snapshot,
    fit_error: &FitError,
    pdbs: &[PodDisruptionBudget],
) -> Result<Preemption, String> {
    let spec = pod.spec.as_ref();
    if spec.and_then(|s| s.preemption_policy.as_deref()) == Some("Never") {
        return Err("preemption: not eligible due to preemptionPolicy=Never".to_string());
    }
    let info = PodInfo::new(Arc::new(pod.clone())).map_err(|e| format!("preemption: {e}"))?;
    let all = fit_error.num_all_nodes;
    let potential: Vec<&NodeInfo> = fit_error
        .rejections
        .iter()
        .filter(|(_, r)| r.code == Code::Unschedulable)
        .filter_map(|(name, _)| snapshot.node(name))
        .collect();
    let state = CycleState::new(&info, snapshot);
    let wanted = (potential.len() * MIN_CANDIDATE_NODES_PERCENTAGE / 100)
        .max(MIN_CANDIDATE_NODES_ABSOLUTE)
        .min(potential.len());
    let mut candidates = Vec::new();
    let mut failures: Vec<Rejection> = Vec::new();
    for node in &potential {
        match select_victims(&state, node, snapshot, pdbs) {
            Ok(c) => {
                candidates.push(c);
                if candidates.len() >= wanted {
                    break;
                }
            }
            Err(r) => failures.push(r),
        }
    }
    if let Some(best) = pick(&candidates) {
        return Ok(Preemption {
            nominated_node: snapshot.nodes()[best.node].name.clone(),
            victims: best.victims.iter().map(|v| v.pod.clone()).collect(),
            pdb_violations: best.pdb_violations,
        });
    }
    let not_helpful = all.saturating_sub(failures.len());
    let reasons = failures
        .iter()
        .flat_map(|r| r.reasons.iter().map(|s| s.as_ref()))
        .chain(std::iter::repeat_n(REASON_NOT_HELPFUL, not_helpful));
    let histogram = reason_histogram(reasons);
    Err(format!(
        "preemption: 0/{all} nodes are available: {histogram}"
    ))
}

#[cfg(test)]
#[path = "preemption_tests.rs"]
mod tests;
