//! Deployment status (upstream `calculateStatus`, `syncRolloutStatus`): replica counts
//! summed over the replica sets, and the `Available` and `Progressing` conditions worded
//! as upstream words them (`kubectl rollout status` reads them).

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::util::{deployment_replicas, max_unavailable, rs_replicas};

pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";
pub const REPLICA_FAILURE: &str = "ReplicaFailure";

pub const MINIMUM_REPLICAS_AVAILABLE: &str = "MinimumReplicasAvailable";
pub const MINIMUM_REPLICAS_UNAVAILABLE: &str = "MinimumReplicasUnavailable";
pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
pub const RS_UPDATED: &str = "ReplicaSetUpdated";
pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
pub const PAUSED: &str = "DeploymentPaused";
pub const RESUMED: &str = "DeploymentResumed";

/// A condition stamped `now` (update and transition).
pub fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: impl Into<String>,
    now: Timestamp,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// The condition of `type_`.
pub fn get<'a>(status: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_)
}

/// Removes the condition of `type_`.
pub fn remove(status: &mut DeploymentStatus, type_: &str) {
    if let Some(conditions) = status.conditions.as_mut() {
        conditions.retain(|c| c.type_ != type_);
        if conditions.is_empty() {
            status.conditions = None;
        }
    }
}

/// Upstream's `SetDeploymentCondition`: same status and reason is no change; same status
/// keeps the transition time; the condition moves to the end.
pub fn set(status: &mut DeploymentStatus, mut condition: DeploymentCondition) {
    if let Some(current) = get(status, &condition.type_) {
        if current.status == condition.status && current.reason == condition.reason {
            return;
        }
        if current.status == condition.status {
            condition.last_transition_time = current.last_transition_time.clone();
        }
    }
    remove(status, &condition.type_);
    status
        .conditions
        .get_or_insert_with(Vec::new)
        .push(condition);
}

/// Whether two statuses say the same (a zero count and an absent one are the same, as
/// they are on the wire).
pub fn same_status(a: Option<&DeploymentStatus>, b: Option<&DeploymentStatus>) -> bool {
    fn normalized(status: Option<&DeploymentStatus>) -> DeploymentStatus {
        let mut s = status.cloned().unwrap_or_default();
        for field in [
            &mut s.replicas,
            &mut s.updated_replicas,
            &mut s.ready_replicas,
            &mut s.available_replicas,
            &mut s.unavailable_replicas,
            &mut s.terminating_replicas,
        ] {
            if *field == Some(0) {
                *field = None;
            }
        }
        if s.observed_generation == Some(0) {
            s.observed_generation = None;
        }
        if s.conditions.as_ref().is_some_and(Vec::is_empty) {
            s.conditions = None;
        }
        s
    }
    normalized(a) == normalized(b)
}

/// Whether the deployment has a progress deadline.
pub fn has_progress_deadline(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .is_some_and(|s| s != i32::MAX)
}

fn sum(rss: &[&ReplicaSet], field: impl Fn(&ReplicaSet) -> i32) -> i32 {
    rss.iter().map(|rs| field(rs)).sum()
}

fn status_replicas(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map_or(0, |s| s.replicas)
}

fn status_ready(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
}

/// `status.availableReplicas` of a replica set.
pub fn status_available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

/// Counts over `all` replica sets and the Available condition, other conditions copied.
pub fn calculate(
    d: &Deployment,
    all: &[&ReplicaSet],
    new_rs: Option<&ReplicaSet>,
    now: Timestamp,
) -> DeploymentStatus {
    let available = sum(all, status_available);
    let unavailable = (sum(all, rs_replicas) - available).max(0);
    let current = d.status.clone().unwrap_or_default();
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(sum(all, status_replicas)),
        updated_replicas: Some(new_rs.map_or(0, status_replicas)),
        ready_replicas: Some(sum(all, status_ready)),
        available_replicas: Some(available),
        unavailable_replicas: Some(unavailable),
        collision_count: current.collision_count,
        conditions: current.conditions,
        ..DeploymentStatus::default()
    };
    if available >= deployment_replicas(d) - max_unavailable(d) {
        set(
            &mut status,
            condition(
                AVAILABLE,
                "True",
                MINIMUM_REPLICAS_AVAILABLE,
                "Deployment has minimum availability.",
                now,
            ),
        );
    } else {
        set(
            &mut status,
            condition(
                AVAILABLE,
                "False",
                MINIMUM_REPLICAS_UNAVAILABLE,
                "Deployment does not have minimum availability.",
                now,
            ),
        );
    }
    status
}

fn count(value: Option<i32>) -> i32 {
    value.unwrap_or(0)
}

/// Every replica updated and available, and the latest generation observed.
pub fn deployment_complete(d: &Deployment, status: &DeploymentStatus) -> bool {
    let replicas = deployment_replicas(d);
    count(status.updated_replicas) == replicas
        && count(status.replicas) == replicas
        && count(status.available_replicas) == replicas
        && status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

/// Whether `next` shows progress over the deployment's stored status.
fn deployment_progressing(d: &Deployment, next: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let old_olds = count(old.replicas) - count(old.updated_replicas);
    let new_olds = count(next.replicas) - count(next.updated_replicas);
    count(next.updated_replicas) > count(old.updated_replicas)
        || new_olds < old_olds
        || count(next.ready_replicas) > count(old.ready_replicas)
        || count(next.available_replicas) > count(old.available_replicas)
}

fn deadline(d: &Deployment) -> i64 {
    i64::from(
        d.spec
            .as_ref()
            .and_then(|s| s.progress_deadline_seconds)
            .unwrap_or(i32::MAX),
    )
}

fn last_update(c: &DeploymentCondition) -> i64 {
    c.last_update_time
        .as_ref()
        .map_or(0, |Time(t)| t.as_second())
}

/// Whether the rollout has made no progress for `progressDeadlineSeconds`.
fn timed_out(d: &Deployment, status: &DeploymentStatus, now: Timestamp) -> bool {
    if !has_progress_deadline(d) {
        return false;
    }
    match get(status, PROGRESSING) {
        None => false,
        Some(c) if c.reason.as_deref() == Some(NEW_RS_AVAILABLE) => false,
        Some(c) if c.reason.as_deref() == Some(TIMED_OUT) => true,
        Some(c) => last_update(c) + deadline(d) < now.as_second(),
    }
}

/// The rollout status: [`calculate`] plus the Progressing and ReplicaFailure conditions.
pub fn rollout(
    d: &Deployment,
    all: &[&ReplicaSet],
    new_rs: Option<&ReplicaSet>,
    now: Timestamp,
) -> DeploymentStatus {
    let mut status = calculate(d, all, new_rs, now);
    let subject = |what: &str| match new_rs {
        Some(rs) => format!(
            "ReplicaSet \"{}\" {what}",
            rs.metadata.name.as_deref().unwrap_or_default()
        ),
        None => format!(
            "Deployment \"{}\" {what}",
            d.metadata.name.as_deref().unwrap_or_default()
        ),
    };
    if !has_progress_deadline(d) {
        remove(&mut status, PROGRESSING);
    }
    let stored = d.status.clone().unwrap_or_default();
    let current = get(&stored, PROGRESSING);
    let complete_before = count(status.replicas) == count(status.updated_replicas)
        && current.is_some_and(|c| c.reason.as_deref() == Some(NEW_RS_AVAILABLE));
    if has_progress_deadline(d) && !complete_before {
        if deployment_complete(d, &status) {
            let message = subject("has successfully progressed.");
            set(
                &mut status,
                condition(PROGRESSING, "True", NEW_RS_AVAILABLE, message, now),
            );
        } else if deployment_progressing(d, &status) {
            let mut next = condition(
                PROGRESSING,
                "True",
                RS_UPDATED,
                subject("is progressing."),
                now,
            );
            if let Some(current) = current {
                if current.status == "True" {
                    next.last_transition_time = current.last_transition_time.clone();
                }
                remove(&mut status, PROGRESSING);
            }
            set(&mut status, next);
        } else if timed_out(d, &status, now) {
            let message = subject("has timed out progressing.");
            set(
                &mut status,
                condition(PROGRESSING, "False", TIMED_OUT, message, now),
            );
        }
    }
    match replica_failure(all, new_rs) {
        Some(failure) => set(&mut status, failure),
        None => remove(&mut status, REPLICA_FAILURE),
    }
    status
}

/// The first ReplicaFailure condition of the new replica set, else of any.
fn replica_failure(
    all: &[&ReplicaSet],
    new_rs: Option<&ReplicaSet>,
) -> Option<DeploymentCondition> {
    let failure_of = |rs: &ReplicaSet| {
        rs.status
            .as_ref()?
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == REPLICA_FAILURE)
            .map(|c| DeploymentCondition {
                type_: REPLICA_FAILURE.into(),
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
                last_update_time: c.last_transition_time.clone(),
                last_transition_time: c.last_transition_time.clone(),
            })
    };
    new_rs
        .and_then(failure_of)
        .or_else(|| all.iter().find_map(|rs| failure_of(rs)))
}

/// When to look at the deployment again to notice a progress deadline passing, `None` when
/// no deadline is pending (upstream's `requeueStuckDeployment`).
pub fn requeue_after(d: &Deployment, now: Timestamp) -> Option<Duration> {
    let status = d.status.as_ref()?;
    let current = get(status, PROGRESSING)?;
    if !has_progress_deadline(d)
        || matches!(
            current.reason.as_deref(),
            Some(NEW_RS_AVAILABLE | TIMED_OUT)
        )
        || deployment_complete(d, status)
    {
        return None;
    }
    let after = last_update(current) + deadline(d) - now.as_second();
    Some(if after < 1 {
        Duration::ZERO
    } else {
        Duration::from_secs(u64::try_from(after + 1).unwrap_or(0))
    })
}
