//! Which surplus pods a replica set deletes first (upstream's `ActivePodsWithRanks`, with
//! pod deletion cost and logarithmic scale-down as enabled by default in v1.33).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::common::{is_active, is_ready, ready_since};

/// The annotation that makes a pod cheaper (lower) or dearer (higher) to delete.
pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// The `count` pods of `pods` to delete first. A pod's rank is the number of active pods
/// of `related` on its node (doubled-up pods go first).
pub fn pods_to_delete<'a>(
    pods: &[&'a Pod],
    related: &[&Pod],
    count: usize,
    now: Timestamp,
) -> Vec<&'a Pod> {
    if count >= pods.len() {
        return pods.to_vec();
    }
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for pod in related.iter().filter(|p| is_active(p)) {
        *per_node.entry(node_of(pod)).or_default() += 1;
    }
    let mut ranked: Vec<(&Pod, usize)> = pods
        .iter()
        .map(|p| (*p, per_node.get(node_of(p)).copied().unwrap_or(0)))
        .collect();
    ranked.sort_by(|a, b| deletion_order(a, b, now));
    ranked.into_iter().take(count).map(|(p, _)| p).collect()
}

fn node_of(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or_default()
}

fn phase_ordinal(pod: &Pod) -> u8 {
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") => 0,
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 0,
    }
}

fn deletion_cost(pod: &Pod) -> i32 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(POD_DELETION_COST))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The highest restart count of the pod's containers (and restartable init containers).
fn max_restarts(pod: &Pod) -> i32 {
    let Some(status) = &pod.status else { return 0 };
    let sidecars: Vec<&str> = pod
        .spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten())
        .filter(|c| c.restart_policy.as_deref() == Some("Always"))
        .map(|c| c.name.as_str())
        .collect();
    status
        .container_statuses
        .iter()
        .flatten()
        .chain(
            status
                .init_container_statuses
                .iter()
                .flatten()
                .filter(|s| sidecars.contains(&s.name.as_str())),
        )
        .map(|s| s.restart_count)
        .max()
        .unwrap_or(0)
}

/// Upstream's log2 bucket of how long ago `t` was (-1 for the future).
fn age_bucket(t: Timestamp, now: Timestamp) -> i64 {
    let nanos = now.as_nanosecond() - t.as_nanosecond();
    if nanos <= 0 {
        return -1;
    }
    // The bucket is the integer part of log2 of a positive duration.
    #[allow(
        clippy::cast_precision_loss,
        reason = "a log2 bucket needs no precision"
    )]
    let log = (nanos as f64).log2();
    #[allow(
        clippy::cast_possible_truncation,
        reason = "log2 of an i128 fits an i64"
    )]
    let bucket = log as i64;
    bucket
}

/// "Newer first" between two times, `None` when it does not decide: a missing time first,
/// then the younger log2 bucket, then (same bucket) the pods' uids.
fn newer_first(
    a: Option<Timestamp>,
    b: Option<Timestamp>,
    uids: (&str, &str),
    now: Timestamp,
) -> Option<Ordering> {
    match (a, b) {
        (a, b) if a == b => None,
        (None, _) => Some(Ordering::Less),
        (_, None) => Some(Ordering::Greater),
        (Some(a), Some(b)) => {
            let (ra, rb) = (age_bucket(a, now), age_bucket(b, now));
            Some(if ra == rb {
                uids.0.cmp(uids.1)
            } else {
                ra.cmp(&rb)
            })
        }
    }
}

fn deletion_order(a: &(&Pod, usize), b: &(&Pod, usize), now: Timestamp) -> Ordering {
    let (pa, rank_a) = a;
    let (pb, rank_b) = b;
    let assigned = |p: &Pod| !node_of(p).is_empty();
    let uids = (
        pa.metadata.uid.as_deref().unwrap_or_default(),
        pb.metadata.uid.as_deref().unwrap_or_default(),
    );
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|Time(t)| *t);
    assigned(pa)
        .cmp(&assigned(pb))
        .then_with(|| phase_ordinal(pa).cmp(&phase_ordinal(pb)))
        .then_with(|| is_ready(pa).cmp(&is_ready(pb)))
        .then_with(|| deletion_cost(pa).cmp(&deletion_cost(pb)))
        .then_with(|| rank_b.cmp(rank_a))
        .then_with(|| {
            if is_ready(pa) && is_ready(pb) {
                newer_first(ready_since(pa), ready_since(pb), uids, now).unwrap_or(Ordering::Equal)
            } else {
                Ordering::Equal
            }
        })
        .then_with(|| max_restarts(pb).cmp(&max_restarts(pa)))
        .then_with(|| newer_first(created(pa), created(pb), uids, now).unwrap_or(Ordering::Equal))
}
