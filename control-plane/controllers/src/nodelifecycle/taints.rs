//! The taints that mirror node conditions: `NoSchedule` taints for every adverse condition
//! (and `spec.unschedulable`), and the `NoExecute` `not-ready` / `unreachable` taint that
//! drives eviction, gated by the disruption state of the node's zone.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeCondition, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::health::Verdict;
use super::{
    TAINT_DISK_PRESSURE, TAINT_MEMORY_PRESSURE, TAINT_NETWORK_UNAVAILABLE, TAINT_NOT_READY,
    TAINT_PID_PRESSURE, TAINT_UNREACHABLE, TAINT_UNSCHEDULABLE, condition,
};
use crate::action::Action;

/// (condition type, status) → the `NoSchedule` taint key it calls for.
const CONDITION_TAINTS: [(&str, &str, &str); 6] = [
    ("Ready", "False", TAINT_NOT_READY),
    ("Ready", "Unknown", TAINT_UNREACHABLE),
    ("MemoryPressure", "True", TAINT_MEMORY_PRESSURE),
    ("DiskPressure", "True", TAINT_DISK_PRESSURE),
    ("NetworkUnavailable", "True", TAINT_NETWORK_UNAVAILABLE),
    ("PIDPressure", "True", TAINT_PID_PRESSURE),
];

/// Every key the controller manages as `NoSchedule`.
const NO_SCHEDULE_KEYS: [&str; 7] = [
    TAINT_NOT_READY,
    TAINT_UNREACHABLE,
    TAINT_MEMORY_PRESSURE,
    TAINT_DISK_PRESSURE,
    TAINT_NETWORK_UNAVAILABLE,
    TAINT_PID_PRESSURE,
    TAINT_UNSCHEDULABLE,
];

/// A zone is partially disrupted when more than this many nodes are not ready...
const PARTIAL_DISRUPTION_MIN_NOT_READY: usize = 3;
/// ...and they are at least this share of the zone (`--unhealthy-zone-threshold`).
const UNHEALTHY_ZONE_THRESHOLD: f64 = 0.55;
/// Zones up to this size stop tainting altogether when partially disrupted
/// (`--large-cluster-size-threshold`); larger ones slow down (not modelled: allowed).
const LARGE_CLUSTER_THRESHOLD: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ZoneState {
    Normal,
    PartialDisruption { size: usize },
    FullDisruption,
}

/// The disruption state of the cluster's zones, from the nodes' (new) `Ready` conditions.
#[derive(Debug, Clone)]
pub(super) struct Disruption {
    zones: BTreeMap<String, ZoneState>,
    /// Every zone is fully disrupted: the control plane is probably the one cut off, so no
    /// node is evicted (upstream's "master disruption" mode).
    all_fully_disrupted: bool,
}

/// The zone key of `node` (region and zone labels, as upstream `GetZoneKey`).
fn zone_of(node: &Node) -> String {
    let labels = node.metadata.labels.as_ref();
    let label = |new: &str, old: &str| {
        labels
            .and_then(|l| l.get(new).or_else(|| l.get(old)))
            .cloned()
            .unwrap_or_default()
    };
    let region = label(
        "topology.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/region",
    );
    let zone = label(
        "topology.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/zone",
    );
    if region.is_empty() && zone.is_empty() {
        String::new()
    } else {
        format!("{region}:\u{0}:{zone}")
    }
}

impl Disruption {
    pub(super) fn of(nodes: &[Node], verdicts: &[Verdict]) -> Self {
        let mut counts: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for (node, verdict) in nodes.iter().zip(verdicts) {
            let ready =
                condition(verdict.conditions(node), "Ready").is_some_and(|c| c.status == "True");
            let entry = counts.entry(zone_of(node)).or_default();
            if ready {
                entry.0 += 1;
            } else {
                entry.1 += 1;
            }
        }
        let zones: BTreeMap<String, ZoneState> = counts
            .into_iter()
            .map(|(zone, (ready, not_ready))| {
                let state = if ready == 0 && not_ready > 0 {
                    ZoneState::FullDisruption
                } else if not_ready >= PARTIAL_DISRUPTION_MIN_NOT_READY
                    && not_ready as f64 / (ready + not_ready) as f64 >= UNHEALTHY_ZONE_THRESHOLD
                {
                    ZoneState::PartialDisruption {
                        size: ready + not_ready,
                    }
                } else {
                    ZoneState::Normal
                };
                (zone, state)
            })
            .collect();
        let all_fully_disrupted =
            !zones.is_empty() && zones.values().all(|s| *s == ZoneState::FullDisruption);
        Disruption {
            zones,
            all_fully_disrupted,
        }
    }

    /// Whether a new `NoExecute` taint may go on a node of `zone`.
    fn may_taint(&self, zone: &str) -> bool {
        if self.all_fully_disrupted {
            return false;
        }
        match self.zones.get(zone) {
            Some(ZoneState::PartialDisruption { size }) => *size > LARGE_CLUSTER_THRESHOLD,
            _ => true,
        }
    }
}

fn is(taint: &Taint, key: &str, effect: &str) -> bool {
    taint.key == key && taint.effect == effect
}

/// The taints `node` should carry given its (new) `conditions`; `None` when they are the
/// ones it has.
fn desired_taints(
    node: &Node,
    conditions: &[NodeCondition],
    disruption: &Disruption,
    now: Timestamp,
) -> Option<Vec<Taint>> {
    let current = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let mut taints = current.clone();

    // NoSchedule: one per adverse condition, and for cordoned nodes.
    let mut wanted: Vec<&str> = CONDITION_TAINTS
        .iter()
        .filter(|(type_, status, _)| {
            condition(conditions, type_).is_some_and(|c| c.status == *status)
        })
        .map(|(_, _, key)| *key)
        .collect();
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        wanted.push(TAINT_UNSCHEDULABLE);
    }
    taints.retain(|t| {
        t.effect != "NoSchedule"
            || !NO_SCHEDULE_KEYS.contains(&t.key.as_str())
            || wanted.contains(&t.key.as_str())
    });
    for key in wanted {
        if !taints.iter().any(|t| is(t, key, "NoSchedule")) {
            taints.push(Taint {
                key: key.to_string(),
                effect: "NoSchedule".into(),
                ..Taint::default()
            });
        }
    }

    // NoExecute: not-ready or unreachable, following Ready.
    let execute_key = match condition(conditions, "Ready").map(|c| c.status.as_str()) {
        Some("False") => Some(TAINT_NOT_READY),
        Some("Unknown") => Some(TAINT_UNREACHABLE),
        _ => None,
    };
    let execute_key = execute_key.filter(|_| !disruption.all_fully_disrupted);
    let had_other = taints.iter().any(|t| {
        (is(t, TAINT_NOT_READY, "NoExecute") || is(t, TAINT_UNREACHABLE, "NoExecute"))
            && Some(t.key.as_str()) != execute_key
    });
    taints.retain(|t| {
        !(is(t, TAINT_NOT_READY, "NoExecute") || is(t, TAINT_UNREACHABLE, "NoExecute"))
            || Some(t.key.as_str()) == execute_key
    });
    if let Some(key) = execute_key {
        let present = taints.iter().any(|t| is(t, key, "NoExecute"));
        // Swapping not-ready for unreachable (or back) is not rate limited upstream.
        if !present && (had_other || disruption.may_taint(&zone_of(node))) {
            taints.push(Taint {
                key: key.to_string(),
                effect: "NoExecute".into(),
                time_added: Some(Time(now)),
                value: None,
            });
        }
    }
    (taints != current).then_some(taints)
}

/// The patch that brings `node`'s taints in line with its (new) `conditions`, if needed.
/// A merge patch replaces the whole list (no `resourceVersion`: a status write planned in
/// the same pass bumps it first).
pub(super) fn reconcile(
    node: &Node,
    conditions: &[NodeCondition],
    disruption: &Disruption,
    now: Timestamp,
) -> Option<Action> {
    let taints = desired_taints(node, conditions, disruption, now)?;
    let taints = if taints.is_empty() {
        Value::Null
    } else {
        serde_json::to_value(&taints).unwrap_or(Value::Null)
    };
    Some(Action::patch(
        node,
        None,
        json!({ "spec": { "taints": taints } }),
    ))
}
