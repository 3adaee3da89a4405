//! The DaemonSet RollingUpdate pass (upstream `rollingUpdate`): without surge, delete old
//! pods while at most `maxUnavailable` nodes lack an available updated pod (the placement
//! pass then recreates them); with `maxSurge`, start the updated pod next to the old one on
//! up to `maxSurge` nodes and delete the old pod once the new one is available.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;

use super::{NodeState, is_updated};
use crate::common::is_available;

pub(super) fn max_surge_setting(ds: &DaemonSet) -> Option<&IntOrString> {
    ds.spec
        .as_ref()?
        .update_strategy
        .as_ref()?
        .rolling_update
        .as_ref()?
        .max_surge
        .as_ref()
}

fn max_unavailable_setting(ds: &DaemonSet) -> Option<&IntOrString> {
    ds.spec
        .as_ref()?
        .update_strategy
        .as_ref()?
        .rolling_update
        .as_ref()?
        .max_unavailable
        .as_ref()
}

pub(super) fn is_zero(value: &IntOrString) -> bool {
    scaled(value, 100) == 0
}

/// An int, or a percentage of `total` rounded up.
pub(super) fn scaled(value: &IntOrString, total: i32) -> i32 {
    match value {
        IntOrString::Int(n) => *n,
        IntOrString::String(s) => {
            let percent: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            let scaled = (percent * i64::from(total) + 99) / 100;
            i32::try_from(scaled).unwrap_or(i32::MAX)
        }
    }
}

/// The node's updated and old pod (ignoring pods being deleted); `None` when there is more
/// than one of either (the placement pass sorts that out first).
fn updated_and_old<'a>(pods: &[&'a Pod], hash: &str) -> Option<(Option<&'a Pod>, Option<&'a Pod>)> {
    let (mut new, mut old) = (None, None);
    for pod in pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        let slot = if is_updated(pod, hash) {
            &mut new
        } else {
            &mut old
        };
        if slot.is_some() {
            return None;
        }
        *slot = Some(*pod);
    }
    Some((new, old))
}

/// Nodes to create an updated pod on and old pods to delete.
pub(super) fn rolling_update<'a>(
    ds: &DaemonSet,
    by_node: &BTreeMap<String, NodeState<'a>>,
    hash: &str,
    now: Timestamp,
) -> (Vec<String>, Vec<&'a Pod>) {
    let min_ready = ds
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0);
    let desired = by_node.values().filter(|s| s.fit.should_run).count();
    let desired = i32::try_from(desired).unwrap_or(i32::MAX);
    let mut max_surge = max_surge_setting(ds).map_or(0, |v| scaled(v, desired));
    let mut max_unavailable = max_unavailable_setting(ds).map_or(1, |v| scaled(v, desired));
    if max_surge == 0 && max_unavailable == 0 {
        max_unavailable = 1;
    }
    max_surge = max_surge.max(0);
    // Nodes that have pods or should have one, in name order (upstream walks a map).
    let relevant = by_node
        .iter()
        .filter(|(_, s)| s.fit.should_run || !s.pods.is_empty());
    let available = |pod: &Pod| is_available(pod, min_ready, now);

    if max_surge == 0 {
        let mut unavailable = 0;
        let mut replace_now = Vec::new();
        let mut candidates = Vec::new();
        for (_, state) in relevant {
            match updated_and_old(&state.pods, hash) {
                None | Some((None, None)) | Some((Some(_), Some(_))) => unavailable += 1,
                Some((Some(new), None)) => {
                    if !available(new) {
                        unavailable += 1;
                    }
                }
                Some((None, Some(old))) => {
                    if !available(old) {
                        // An old pod that is down anyway is replaced at once.
                        replace_now.push(old);
                    } else {
                        candidates.push(old);
                    }
                }
            }
        }
        let room = usize::try_from((max_unavailable - unavailable).max(0)).unwrap_or(0);
        replace_now.extend(candidates.into_iter().take(room));
        return (Vec::new(), replace_now);
    }

    let mut surging = 0;
    let mut create_now = Vec::new();
    let mut candidates = Vec::new();
    let mut delete = Vec::new();
    for (node, state) in relevant {
        match updated_and_old(&state.pods, hash) {
            None => surging += 1,
            Some((_, None)) => {}
            Some((None, Some(old))) => {
                if !state.fit.should_run {
                    continue;
                }
                if available(old) {
                    candidates.push(node.clone());
                } else {
                    create_now.push(node.clone());
                }
            }
            Some((Some(new), Some(old))) => {
                if available(new) {
                    delete.push(old);
                } else {
                    surging += 1;
                }
            }
        }
    }
    let room = usize::try_from((max_surge - surging).max(0)).unwrap_or(0);
    create_now.extend(candidates.into_iter().take(room));
    (create_now, delete)
}
