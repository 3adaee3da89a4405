//! Node-wide garbage collection of dead containers, as upstream's kubelet container GC:
//! dead instances are grouped per (pod UID, container name) — an "evict unit" — and
//!
//! 1. instances created less than `min_age` ago are never touched;
//! 2. each unit keeps at most `max_per_pod_container` dead instances (its newest);
//! 3. when the node still holds more than `max_containers` dead instances, every unit is cut
//!    to an even share (`max_containers / units`, at least one), and if that is not enough the
//!    oldest dead instances node-wide go until `max_containers` remain.
//!
//! A negative limit means "no limit". The defaults are upstream's flag defaults
//! (`--minimum-container-ttl-duration=0`, `--maximum-dead-containers-per-container=1`,
//! `--maximum-dead-containers=-1`); they are kwk-node flags of the same names, as upstream
//! keeps them out of `KubeletConfiguration`.
//!
//! What this module does not do, because the pod workers already do it: every container and
//! sandbox of a deleted pod, or of a pod on the runtime that no source wants (an orphan), is
//! removed by the pod's worker once the pod is stopped; empty stopped sandboxes are removed by
//! the worker's plan (`pod::plan`), which also keeps, per container name, only the newest
//! instance and the one before it. So a per-container limit above 1 cannot keep more than that.
//!
//! [`plan`] is pure; [`executor`] lists containers through CRI and removes what it says.

pub mod executor;

use std::collections::BTreeMap;
use std::time::Duration;

use crate::pod::observed::UnixNanos;

/// The container GC limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContainerGcPolicy {
    /// Dead instances created less than this long ago are kept.
    pub min_age: Duration,
    /// Dead instances kept per (pod, container name); negative: no limit.
    pub max_per_pod_container: i32,
    /// Dead instances kept on the node; negative: no limit.
    pub max_containers: i32,
}

impl Default for ContainerGcPolicy {
    fn default() -> Self {
        Self {
            min_age: Duration::ZERO,
            max_per_pod_container: 1,
            max_containers: -1,
        }
    }
}

impl ContainerGcPolicy {
    /// How many earlier instances of each container a pod's worker keeps beside the newest:
    /// the per-container limit but at least one (the status's `lastState` comes from it);
    /// `None` when there is no limit. The periodic collection applies the limits exactly.
    pub fn earlier_instances_kept(&self) -> Option<usize> {
        usize::try_from(self.max_per_pod_container)
            .ok()
            .map(|n| n.max(1))
    }
}

/// One dead (exited) container instance on the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadContainer {
    pub id: String,
    pub pod_uid: String,
    pub name: String,
    pub created_at: UnixNanos,
}

/// The IDs of the dead containers to remove at `now`, per `policy`: unit by unit, oldest
/// first, then node-wide oldest first.
pub fn plan(policy: &ContainerGcPolicy, dead: &[DeadContainer], now: UnixNanos) -> Vec<String> {
    let min_age = i64::try_from(policy.min_age.as_nanos()).unwrap_or(i64::MAX);
    let newest_collectable = now.saturating_sub(min_age);
    // Evict units, each newest first.
    let mut units: BTreeMap<(&str, &str), Vec<&DeadContainer>> = BTreeMap::new();
    for c in dead.iter().filter(|c| c.created_at <= newest_collectable) {
        units
            .entry((c.pod_uid.as_str(), c.name.as_str()))
            .or_default()
            .push(c);
    }
    for unit in units.values_mut() {
        unit.sort_by(|a, b| newest_first(a, b));
    }
    let mut removed = Vec::new();
    if let Ok(keep) = usize::try_from(policy.max_per_pod_container) {
        cut_units(&mut units, keep, &mut removed);
    }
    if let Ok(max) = usize::try_from(policy.max_containers) {
        let total = |units: &BTreeMap<_, Vec<&DeadContainer>>| units.values().map(Vec::len).sum();
        let held: usize = total(&units);
        if held > max {
            let non_empty = units.values().filter(|u| !u.is_empty()).count().max(1);
            cut_units(&mut units, (max / non_empty).max(1), &mut removed);
        }
        let held: usize = total(&units);
        if held > max {
            let mut all: Vec<&DeadContainer> = units.values().flatten().copied().collect();
            all.sort_by(|a, b| newest_first(a, b));
            removed.extend(all.iter().skip(max).rev().map(|c| c.id.clone()));
        }
    }
    removed
}

/// Cuts every unit to its `keep` newest instances; the rest (oldest first) go to `removed`.
fn cut_units(
    units: &mut BTreeMap<(&str, &str), Vec<&DeadContainer>>,
    keep: usize,
    removed: &mut Vec<String>,
) {
    for unit in units.values_mut() {
        if unit.len() > keep {
            removed.extend(unit.drain(keep..).rev().map(|c| c.id.clone()));
        }
    }
}

/// Newest first by creation time, the ID breaking ties.
fn newest_first(a: &DeadContainer, b: &DeadContainer) -> std::cmp::Ordering {
    (b.created_at, &b.id).cmp(&(a.created_at, &a.id))
}

#[cfg(test)]
mod tests;
