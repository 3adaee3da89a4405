//! Plugins about what a node has room for: NodeResourcesFit (filter; LeastAllocated or
//! MostAllocated score), NodeResourcesBalancedAllocation, NodePorts and ImageLocality.

use std::borrow::Cow;

use super::{Code, CycleState, FilterResult, MAX_NODE_SCORE, Rejection};
use crate::snapshot::{NodeInfo, Snapshot};

pub const NODE_RESOURCES_FIT: &str = "NodeResourcesFit";
pub const NODE_PORTS: &str = "NodePorts";

pub const REASON_TOO_MANY_PODS: &str = "Too many pods";
pub const REASON_NODE_PORTS: &str = "node(s) didn't have free ports for the requested pod ports";

/// How NodeResourcesFit scores a node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ScoringStrategy {
    /// Prefer the emptiest nodes (upstream's default).
    #[default]
    LeastAllocated,
    /// Prefer the fullest nodes (bin packing).
    MostAllocated,
}

/// NodeResourcesFit filter: the pod slot count, then every requested resource against what
/// the node has left. Always `Unschedulable`, as in v1.33 (later releases mark a request
/// beyond the node's whole allocatable as unresolvable).
pub fn resources_fit(state: &CycleState<'_>, node: &NodeInfo) -> FilterResult {
    let mut reasons: Vec<Cow<'static, str>> = Vec::new();
    let pod_count = i64::try_from(node.pods.len()).unwrap_or(i64::MAX);
    if pod_count + 1 > node.allocatable.pods {
        reasons.push(Cow::Borrowed(REASON_TOO_MANY_PODS));
    }
    let want = &state.pod.requests;
    if !want.is_zero() {
        let alloc = &node.allocatable;
        let used = &node.requested;
        let mut check = |reason: &'static str, req: i64, a: i64, u: i64| {
            if req > 0 && req > a - u {
                reasons.push(Cow::Borrowed(reason));
            }
        };
        check(
            "Insufficient cpu",
            want.milli_cpu,
            alloc.milli_cpu,
            used.milli_cpu,
        );
        check(
            "Insufficient memory",
            want.memory,
            alloc.memory,
            used.memory,
        );
        check(
            "Insufficient ephemeral-storage",
            want.ephemeral_storage,
            alloc.ephemeral_storage,
            used.ephemeral_storage,
        );
        for (name, req) in &want.scalar {
            let (a, u) = (alloc.scalar(name), used.scalar(name));
            if *req > 0 && *req > a - u {
                reasons.push(Cow::Owned(format!("Insufficient {name}")));
            }
        }
    }
    if reasons.is_empty() {
        return Ok(());
    }
    Err(Rejection {
        plugin: NODE_RESOURCES_FIT,
        code: Code::Unschedulable,
        reasons,
    })
}

/// `(requested after placing the pod, allocatable)` for CPU and memory, with non-zero
/// requests (`non_zero`) or actual requests.
fn cpu_memory(state: &CycleState<'_>, node: &NodeInfo, non_zero: bool) -> [(i64, i64); 2] {
    let pod = state.pod;
    let (cpu, mem) = if non_zero {
        (
            node.non_zero_milli_cpu + pod.non_zero_milli_cpu,
            node.non_zero_memory + pod.non_zero_memory,
        )
    } else {
        (
            node.requested.milli_cpu + pod.requests.milli_cpu,
            node.requested.memory + pod.requests.memory,
        )
    };
    [
        (cpu, node.allocatable.milli_cpu),
        (mem, node.allocatable.memory),
    ]
}

/// NodeResourcesFit score (already 0..=100): CPU and memory, weight 1 each.
pub fn resources_fit_score(
    state: &CycleState<'_>,
    node: &NodeInfo,
    strategy: ScoringStrategy,
) -> i64 {
    let mut total = 0;
    let mut weights = 0;
    for (requested, capacity) in cpu_memory(state, node, true) {
        if capacity == 0 {
            continue;
        }
        total += match strategy {
            ScoringStrategy::LeastAllocated if requested > capacity => 0,
            ScoringStrategy::LeastAllocated => (capacity - requested) * MAX_NODE_SCORE / capacity,
            ScoringStrategy::MostAllocated => requested.min(capacity) * MAX_NODE_SCORE / capacity,
        };
        weights += 1;
    }
    if weights == 0 { 0 } else { total / weights }
}

/// NodeResourcesBalancedAllocation score (already 0..=100): 100 × (1 − the standard
/// deviation of the CPU and memory fractions requested).
pub fn balanced_allocation_score(state: &CycleState<'_>, node: &NodeInfo) -> i64 {
    let fractions: Vec<f64> = cpu_memory(state, node, false)
        .into_iter()
        .filter(|(_, capacity)| *capacity != 0)
        .map(|(requested, capacity)| (requested as f64 / capacity as f64).min(1.0))
        .collect();
    let std = match fractions.as_slice() {
        [a, b] => ((a - b) / 2.0).abs(),
        _ => 0.0,
    };
    ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
}

/// NodePorts filter: every host port the pod asks for must be free on the node.
pub fn node_ports(state: &CycleState<'_>, node: &NodeInfo) -> FilterResult {
    let conflict = state
        .pod
        .host_ports
        .iter()
        .any(|want| node.used_ports.iter().any(|used| used.conflicts_with(want)));
    if conflict {
        Err(Rejection::new(
            NODE_PORTS,
            Code::Unschedulable,
            REASON_NODE_PORTS,
        ))
    } else {
        Ok(())
    }
}

const MB: i64 = 1024 * 1024;
const IMAGE_MIN_THRESHOLD: i64 = 23 * MB;
const IMAGE_MAX_CONTAINER_THRESHOLD: i64 = 1000 * MB;

/// ImageLocality score (already 0..=100): the sizes of the pod's images already on the node,
/// each scaled by the share of nodes holding it, between 23MB and 1000MB per container.
pub fn image_locality_score(state: &CycleState<'_>, node: &NodeInfo, snapshot: &Snapshot) -> i64 {
    if state.images.is_empty() {
        return 0;
    }
    let total_nodes = snapshot.nodes().len().max(1) as f64;
    let sum: i64 = state
        .images
        .iter()
        .filter_map(|image| {
            let size = *node.images.get(image)?;
            let spread = snapshot.nodes_with_image(image) as f64 / total_nodes;
            Some((size as f64 * spread) as i64)
        })
        .sum();
    let containers = i64::try_from(state.images.len()).unwrap_or(1);
    let max_threshold = IMAGE_MAX_CONTAINER_THRESHOLD * containers;
    let clamped = sum.clamp(IMAGE_MIN_THRESHOLD, max_threshold);
    MAX_NODE_SCORE * (clamped - IMAGE_MIN_THRESHOLD) / (max_threshold - IMAGE_MIN_THRESHOLD)
}
