//! The disruption controller's planner: a PodDisruptionBudget's status (healthy, desired
//! and expected pod counts, the disruptions allowed, the `DisruptionAllowed` condition)
//! from the pods it selects and the scale of their controllers, and the pruning of
//! `disruptedPods` entries the eviction API recorded for pods that were never deleted;
//! and the reset of stale `DisruptionTarget` pod conditions.

pub mod controller;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kwk_api::meta::{format_selector, selector_matches};

use crate::action::{Action, EventType};
use crate::common::{controller_of, is_ready};

/// The condition type the controller keeps on every budget.
pub const CONDITION_DISRUPTION_ALLOWED: &str = "DisruptionAllowed";
/// Reason: enough pods are healthy to allow a disruption.
pub const REASON_SUFFICIENT_PODS: &str = "SufficientPods";
/// Reason: no disruption is allowed.
pub const REASON_INSUFFICIENT_PODS: &str = "InsufficientPods";
/// Reason: the status could not be computed (no disruption is allowed meanwhile).
pub const REASON_SYNC_FAILED: &str = "SyncFailed";
/// How long a pod the eviction API admitted may take to get its deletion timestamp before
/// the budget counts it as healthy again (upstream's `DeletionTimeout`).
pub const DELETION_TIMEOUT: SignedDuration = SignedDuration::from_secs(120);

/// The scale that counts for the pods of one controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerScale {
    /// The uid of the object whose replicas count: the Deployment for the pods of a
    /// ReplicaSet it owns, otherwise the pod's controller itself. Two ReplicaSets of one
    /// Deployment share it, so the Deployment's replicas are counted once.
    pub scale_owner_uid: String,
    /// Its `spec.replicas` (or `/scale` `spec.replicas`).
    pub expected: i32,
}

/// What the caller resolved of the selected pods' controllers (Deployment through
/// ReplicaSet, ReplicaSet, StatefulSet, ReplicationController, or anything with a scale
/// subresource).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScaleInfo {
    /// Keyed by the uid of a pod's controller reference. A pod whose controller is missing
    /// here makes the sync fail ("found no controllers for pod").
    pub by_controller_uid: BTreeMap<String, ControllerScale>,
}

/// The writes of one sync, and when to sync again.
#[derive(Debug, Clone, PartialEq)]
pub struct DisruptionPlan {
    /// Events, then at most one status update.
    pub actions: Vec<Action>,
    /// When the earliest `disruptedPods` entry expires: sync again then.
    pub recheck_at: Option<Timestamp>,
}

/// Why a budget's status could not be computed; the message becomes the `SyncFailed`
/// condition's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    #[error("found no controllers for pod {0:?}")]
    NoController(String),
    #[error("invalid value for IntOrString: invalid type: string is not a percentage")]
    NotAPercentage,
    #[error("invalid value {0:?} for IntOrString")]
    BadPercentage(String),
}

/// The counts a budget's status is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counts {
    expected: i32,
    desired_healthy: i32,
}

/// Plans the status of `pdb`. `pods` may hold more than the budget selects: they are
/// filtered by namespace and selector (a missing selector selects nothing, an empty one
/// everything).
pub fn plan(
    pdb: &PodDisruptionBudget,
    pods: &[Pod],
    controllers: &ScaleInfo,
    now: Timestamp,
) -> DisruptionPlan {
    let namespace = pdb.metadata.namespace.as_deref();
    let spec = pdb.spec.clone().unwrap_or_default();
    let selected: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.metadata.namespace.as_deref() == namespace)
        .filter(|p| {
            spec.selector.as_ref().is_some_and(|s| {
                selector_matches(s, p.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()))
            })
        })
        .collect();

    let mut actions = Vec::new();
    if selected.is_empty() {
        actions.push(Action::event(
            pdb,
            EventType::Normal,
            "NoPods",
            "No matching pods found",
        ));
    }
    let (counts, unmanaged) = match expected_counts(pdb, &selected, controllers) {
        Ok(found) => found,
        Err(error) => {
            actions.push(Action::event(
                pdb,
                EventType::Warning,
                "CalculateExpectedPodCountFailed",
                format!("Failed to calculate the number of expected pods: {error}"),
            ));
            actions.extend(fail_safe(pdb, &error, now));
            return DisruptionPlan {
                actions,
                recheck_at: None,
            };
        }
    };
    if !unmanaged.is_empty() {
        let selector = spec
            .selector
            .as_ref()
            .map(format_selector)
            .unwrap_or_default();
        actions.push(Action::event(
            pdb,
            EventType::Warning,
            "UnmanagedPods",
            format!(
                "Pods selected by this PodDisruptionBudget (selector: {selector}) were found to be \
                 unmanaged. As a result, the status of the PDB cannot be calculated correctly, which \
                 may result in undefined behavior. To account for these pods please set \
                 \".spec.minAvailable\" field of the PDB to an integer value."
            ),
        ));
    }

    let (disrupted, recheck_at, expired) = live_disrupted_pods(pdb, &selected, now);
    for pod in expired {
        actions.push(Action::event(
            pod,
            EventType::Warning,
            "NotDeleted",
            format!(
                "Pod was expected by PDB {}/{} to be deleted but it wasn't",
                namespace.unwrap_or_default(),
                pdb.metadata.name.as_deref().unwrap_or_default()
            ),
        ));
    }
    let current_healthy = count_healthy(&selected, &disrupted, now);
    actions.extend(status_update(pdb, current_healthy, counts, disrupted, now));
    DisruptionPlan {
        actions,
        recheck_at,
    }
}

/// Expected pods and desired healthy pods, from `minAvailable` or `maxUnavailable`; and the
/// selected pods without a controller (which the controller-scale based counts ignore).
fn expected_counts(
    pdb: &PodDisruptionBudget,
    pods: &[&Pod],
    controllers: &ScaleInfo,
) -> Result<(Counts, Vec<String>), SyncError> {
    let spec = pdb.spec.as_ref();
    let pod_count = i32::try_from(pods.len()).unwrap_or(i32::MAX);
    if let Some(max_unavailable) = spec.and_then(|s| s.max_unavailable.as_ref()) {
        let (expected, unmanaged) = expected_scale(pods, controllers)?;
        let max_unavailable = scaled_value(max_unavailable, expected)?;
        let counts = Counts {
            expected,
            desired_healthy: (expected - max_unavailable).max(0),
        };
        return Ok((counts, unmanaged));
    }
    match spec.and_then(|s| s.min_available.as_ref()) {
        Some(IntOrString::Int(min_available)) => Ok((
            Counts {
                expected: pod_count,
                desired_healthy: *min_available,
            },
            Vec::new(),
        )),
        Some(percent @ IntOrString::String(_)) => {
            let (expected, unmanaged) = expected_scale(pods, controllers)?;
            let desired_healthy = scaled_value(percent, expected)?;
            Ok((
                Counts {
                    expected,
                    desired_healthy,
                },
                unmanaged,
            ))
        }
        None => Ok((
            Counts {
                expected: 0,
                desired_healthy: 0,
            },
            Vec::new(),
        )),
    }
}

/// The sum of the scales of the selected pods' controllers (each counted once), and the
/// names of the pods without a controller.
fn expected_scale(pods: &[&Pod], controllers: &ScaleInfo) -> Result<(i32, Vec<String>), SyncError> {
    let mut scales: BTreeMap<&str, i32> = BTreeMap::new();
    let mut unmanaged = Vec::new();
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let Some(owner) = controller_of(&pod.metadata) else {
            unmanaged.push(name);
            continue;
        };
        let Some(scale) = controllers.by_controller_uid.get(&owner.uid) else {
            return Err(SyncError::NoController(name));
        };
        scales.insert(scale.scale_owner_uid.as_str(), scale.expected);
    }
    Ok((scales.values().copied().sum(), unmanaged))
}

/// An `IntOrString` against `total`: an int as is, a percentage rounded up.
fn scaled_value(value: &IntOrString, total: i32) -> Result<i32, SyncError> {
    match value {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(s) => {
            let digits = s.strip_suffix('%').ok_or(SyncError::NotAPercentage)?;
            let percent: i64 = digits
                .parse()
                .map_err(|_| SyncError::BadPercentage(s.clone()))?;
            let scaled = (percent * i64::from(total) + 99).div_euclid(100);
            Ok(i32::try_from(scaled).unwrap_or(i32::MAX))
        }
    }
}

/// The `disruptedPods` entries still in force: pods the eviction API admitted that are not
/// yet being deleted, within [`DELETION_TIMEOUT`]. Also when the earliest of them expires,
/// and the pods whose entry expired without a deletion.
fn live_disrupted_pods<'a>(
    pdb: &PodDisruptionBudget,
    pods: &[&'a Pod],
    now: Timestamp,
) -> (BTreeMap<String, Time>, Option<Timestamp>, Vec<&'a Pod>) {
    let mut live = BTreeMap::new();
    let mut recheck_at: Option<Timestamp> = None;
    let mut expired = Vec::new();
    let Some(recorded) = pdb.status.as_ref().and_then(|s| s.disrupted_pods.as_ref()) else {
        return (live, recheck_at, expired);
    };
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(name) = pod.metadata.name.as_ref() else {
            continue;
        };
        let Some(Time(since)) = recorded.get(name) else {
            continue;
        };
        let deadline = since.saturating_add(DELETION_TIMEOUT).unwrap_or(*since);
        if deadline < now {
            expired.push(*pod);
        } else {
            recheck_at = Some(recheck_at.map_or(deadline, |t| t.min(deadline)));
            live.insert(name.clone(), Time(*since));
        }
    }
    (live, recheck_at, expired)
}

/// Ready pods that are neither being deleted nor about to be (admitted evictions).
fn count_healthy(pods: &[&Pod], disrupted: &BTreeMap<String, Time>, now: Timestamp) -> i32 {
    let healthy = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            let name = p.metadata.name.as_deref().unwrap_or_default();
            !disrupted.get(name).is_some_and(|Time(since)| {
                since.saturating_add(DELETION_TIMEOUT).unwrap_or(*since) > now
            })
        })
        .filter(|p| is_ready(p))
        .count();
    i32::try_from(healthy).unwrap_or(i32::MAX)
}

/// The status update, unless the status already says all this.
fn status_update(
    pdb: &PodDisruptionBudget,
    current_healthy: i32,
    counts: Counts,
    disrupted: BTreeMap<String, Time>,
    now: Timestamp,
) -> Option<Action> {
    let mut disruptions_allowed = current_healthy - counts.desired_healthy;
    if counts.expected <= 0 || disruptions_allowed <= 0 {
        disruptions_allowed = 0;
    }
    let old = pdb.status.clone().unwrap_or_default();
    let generation = pdb.metadata.generation;
    let disrupted = (!disrupted.is_empty()).then_some(disrupted);
    let old_disrupted = old.disrupted_pods.clone().filter(|m| !m.is_empty());
    let up_to_date = old.current_healthy == current_healthy
        && old.desired_healthy == counts.desired_healthy
        && old.expected_pods == counts.expected
        && old.disruptions_allowed == disruptions_allowed
        && old_disrupted == disrupted
        && old.observed_generation == generation
        && conditions_up_to_date(&old, generation);
    if up_to_date {
        return None;
    }
    let mut status = PodDisruptionBudgetStatus {
        current_healthy,
        desired_healthy: counts.desired_healthy,
        expected_pods: counts.expected,
        disruptions_allowed,
        disrupted_pods: disrupted,
        observed_generation: generation,
        conditions: old.conditions,
    };
    let (condition_status, reason) = if disruptions_allowed > 0 {
        ("True", REASON_SUFFICIENT_PODS)
    } else {
        ("False", REASON_INSUFFICIENT_PODS)
    };
    set_condition(&mut status, condition_status, reason, "", now);
    let mut updated = pdb.clone();
    updated.status = Some(status);
    Some(Action::update_status(&updated))
}

/// Whether the `DisruptionAllowed` condition agrees with the recorded status.
fn conditions_up_to_date(status: &PodDisruptionBudgetStatus, generation: Option<i64>) -> bool {
    let Some(condition) = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == CONDITION_DISRUPTION_ALLOWED)
    else {
        return false;
    };
    if status.observed_generation != generation {
        return false;
    }
    if status.disruptions_allowed > 0 {
        condition.status == "True" && condition.reason == REASON_SUFFICIENT_PODS
    } else {
        condition.status == "False" && condition.reason == REASON_INSUFFICIENT_PODS
    }
}

/// Sets the `DisruptionAllowed` condition; its transition time moves only when its status
/// changes.
fn set_condition(
    status: &mut PodDisruptionBudgetStatus,
    condition_status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    let observed_generation = status.observed_generation;
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    match conditions
        .iter_mut()
        .find(|c| c.type_ == CONDITION_DISRUPTION_ALLOWED)
    {
        Some(existing) => {
            if existing.status != condition_status {
                existing.status = condition_status.to_string();
                existing.last_transition_time = Time(now);
            }
            existing.reason = reason.to_string();
            existing.message = message.to_string();
            existing.observed_generation = observed_generation;
        }
        None => conditions.push(Condition {
            type_: CONDITION_DISRUPTION_ALLOWED.to_string(),
            status: condition_status.to_string(),
            reason: reason.to_string(),
            message: message.to_string(),
            observed_generation,
            last_transition_time: Time(now),
        }),
    }
}

/// When the status cannot be computed: no disruptions allowed, `SyncFailed` with the
/// error (written only when that changes the status).
fn fail_safe(pdb: &PodDisruptionBudget, error: &SyncError, now: Timestamp) -> Option<Action> {
    let old = pdb.status.clone().unwrap_or_default();
    let mut status = old.clone();
    status.disruptions_allowed = 0;
    set_condition(
        &mut status,
        "False",
        REASON_SYNC_FAILED,
        &error.to_string(),
        now,
    );
    if status == old {
        return None;
    }
    let mut updated = pdb.clone();
    updated.status = Some(status);
    Some(Action::update_status(&updated))
}

/// How long a `DisruptionTarget` condition may sit on a pod that is not being deleted
/// before the controller calls it stale and resets it (upstream's
/// `stalePodDisruptionTimeout`).
pub const STALE_POD_DISRUPTION_TIMEOUT: SignedDuration = SignedDuration::from_secs(120);
/// The pod condition the eviction API (and others) set on a pod about to be disrupted.
pub const CONDITION_DISRUPTION_TARGET: &str = "DisruptionTarget";
/// The kubelet's reason, whose conditions are never stale.
const REASON_TERMINATION_BY_KUBELET: &str = "TerminationByKubelet";

/// Plans the reset of a stale `DisruptionTarget` condition on `pod`: one the eviction API
/// set (status `True`) on a pod that, [`STALE_POD_DISRUPTION_TIMEOUT`] later, is still not
/// being deleted nor finished. Before then, `recheck_at` says when to look again. The
/// kubelet's own condition (`TerminationByKubelet`) is left alone.
pub fn plan_stale_pod_disruption(pod: &Pod, now: Timestamp) -> DisruptionPlan {
    let nothing = DisruptionPlan {
        actions: Vec::new(),
        recheck_at: None,
    };
    if pod.metadata.deletion_timestamp.is_some() || crate::common::is_terminal(pod) {
        return nothing;
    }
    let Some(condition) = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == CONDITION_DISRUPTION_TARGET))
    else {
        return nothing;
    };
    if condition.status != "True"
        || condition.reason.as_deref() == Some(REASON_TERMINATION_BY_KUBELET)
    {
        return nothing;
    }
    let since = condition
        .last_transition_time
        .as_ref()
        .map_or(Timestamp::UNIX_EPOCH, |Time(t)| *t);
    let stale_at = since
        .saturating_add(STALE_POD_DISRUPTION_TIMEOUT)
        .unwrap_or(since);
    if stale_at > now {
        return DisruptionPlan {
            actions: Vec::new(),
            recheck_at: Some(stale_at),
        };
    }
    let mut reset = pod.clone();
    let conditions = reset
        .status
        .as_mut()
        .and_then(|s| s.conditions.as_mut())
        .into_iter()
        .flatten();
    for condition in conditions.filter(|c| c.type_ == CONDITION_DISRUPTION_TARGET) {
        condition.status = "False".into();
        condition.last_transition_time = Some(Time(now));
    }
    DisruptionPlan {
        actions: vec![Action::update_status(&reset)],
        recheck_at: None,
    }
}
