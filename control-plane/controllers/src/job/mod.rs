//! The job controller's planner: from a Job and the pods it controls, the pod creations,
//! deletions, finalizer removals, status update and events that move the Job toward its
//! completions, as upstream's `pkg/controller/job` (v1.33) does.
//!
//! **Counting.** Every pod is created with the `batch.kubernetes.io/job-tracking`
//! finalizer. A finished pod still holding it is not counted yet: one plan records its uid
//! in `status.uncountedTerminatedPods` (an Indexed Job's success: its index in
//! `completedIndexes`); a later plan (the record is now durable) removes the finalizer; the
//! plan after that (the pod no longer holds it) moves the uid into `succeeded`/`failed`.
//! The invariant "finalizer present ⇔ not in the counters" makes every re-plan count each
//! pod exactly once, whatever the executor did or failed to do. Pods deleted for suspension
//! or a lower parallelism are released first and never counted, as upstream.
//!
//! **Finishing.** As upstream with delayed terminal conditions: first an interim condition
//! (`SuccessCriteriaMet` or `FailureTarget`, reasons `CompletionsReached`,
//! `BackoffLimitExceeded`, `DeadlineExceeded`) while the remaining pods are deleted (a
//! failing Job counts them as failed), then `Complete` (with `completionTime`) or `Failed`
//! once none is left terminating or uncounted. Success needs no pod left running. A finished Job's pods lose their finalizers; `ttlSecondsAfterFinished` deletes
//! the Job once expired (upstream's ttl-after-finished controller, folded in here).
//!
//! **Not modelled:** `podFailurePolicy` rules, `backoffLimitPerIndex`/`maxFailedIndexes`,
//! `successPolicy` (only their defaults' effect, e.g. `podReplacementPolicy: Failed` when a
//! failure policy is set). The runtime must feed the planner the pods it just created (or
//! hold the Job until the informer saw them), as upstream's expectations do; creations get
//! their `SuccessfulCreate` event from the executor, which alone learns the generated name.

pub mod controller;
pub mod pods;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobSpec, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::action::{Action, EventType, Propagation};
use crate::common::{is_controlled_by, is_ready, is_terminal};
use pods::{
    completion_index, finish_time, format_indexes, has_tracking_finalizer, parse_indexes, pod_for,
    remove_tracking_finalizer,
};

/// What one reconcile of an object asks for: the writes, and when to look again even if
/// nothing changes (a deadline, a backoff, a TTL, a schedule).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub requeue_after: Option<Duration>,
}

impl Plan {
    /// Ask to be re-planned after `after` at the latest (the earliest request wins).
    pub fn requeue(&mut self, after: Duration) {
        self.requeue_after = Some(self.requeue_after.map_or(after, |d| d.min(after)));
    }
}

/// `spec.backoffLimit` when unset.
pub const DEFAULT_BACKOFF_LIMIT: i32 = 6;
/// The delay before replacing the first failed pod; it doubles with each further failure
/// since the last success...
pub const POD_FAILURE_BACKOFF: Duration = Duration::from_secs(10);
/// ...up to this.
pub const MAX_POD_FAILURE_BACKOFF: Duration = Duration::from_secs(600);
/// Pods created or deleted by one plan at most.
pub const MAX_POD_CREATE_DELETE_PER_SYNC: usize = 500;
/// The `spec.managedBy` value of Jobs this controller reconciles (also when unset).
pub const JOB_CONTROLLER_NAME: &str = "kubernetes.io/job-controller";

const COMPLETE: &str = "Complete";
const FAILED: &str = "Failed";
const SUCCESS_CRITERIA_MET: &str = "SuccessCriteriaMet";
const FAILURE_TARGET: &str = "FailureTarget";
const SUSPENDED: &str = "Suspended";

/// The true condition of `type_`, if any.
fn true_condition<'a>(status: &'a JobStatus, type_: &str) -> Option<&'a JobCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_ && c.status == "True")
}

/// `Complete` or `Failed`, whichever is true, with its transition time.
pub fn finished_condition(job: &Job) -> Option<&JobCondition> {
    let status = job.status.as_ref()?;
    true_condition(status, COMPLETE).or_else(|| true_condition(status, FAILED))
}

/// Set condition `type_` (keeping `lastTransitionTime` when its status does not change).
fn set_condition(
    status: &mut JobStatus,
    type_: &str,
    value: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    if let Some(existing) = conditions.iter_mut().find(|c| c.type_ == type_) {
        if existing.status == value
            && existing.reason.as_deref() == Some(reason)
            && existing.message.as_deref() == Some(message)
        {
            return;
        }
        if existing.status != value {
            existing.last_transition_time = Some(Time(now));
        }
        existing.status = value.to_string();
        existing.reason = Some(reason.to_string());
        existing.message = Some(message.to_string());
        existing.last_probe_time = Some(Time(now));
        return;
    }
    conditions.push(JobCondition {
        type_: type_.to_string(),
        status: value.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    });
}

fn elapsed(from: Timestamp, to: Timestamp) -> Duration {
    Duration::try_from(to.duration_since(from)).unwrap_or(Duration::ZERO)
}

fn after(t: Timestamp, by: Duration) -> Timestamp {
    SignedDuration::try_from(by)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

fn pod_name(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or_default()
}

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.phase.as_deref()
}

/// Deletion order among active pods (upstream's `ActivePods`): unscheduled before
/// scheduled, pending before running, not ready before ready, newer before older.
fn deletion_rank(pod: &Pod) -> (bool, u8, bool, std::cmp::Reverse<Option<Timestamp>>) {
    let scheduled = pod.spec.as_ref().is_some_and(|s| s.node_name.is_some());
    let phase_rank = match phase(pod) {
        Some("Pending") => 0,
        Some("Running") => 2,
        _ => 1,
    };
    let created = pod.metadata.creation_timestamp.as_ref().map(|Time(t)| *t);
    (
        scheduled,
        phase_rank,
        is_ready(pod),
        std::cmp::Reverse(created),
    )
}

/// Counts after this plan's bookkeeping of finished pods.
struct Tracking<'a> {
    succeeded: i32,
    failed: i32,
    uncounted_succeeded: Vec<String>,
    uncounted_failed: Vec<String>,
    /// Pods recorded as uncounted whose finalizer can go now.
    release: Vec<&'a Pod>,
    completed_indexes: BTreeSet<i32>,
}

fn track<'a>(
    status: &JobStatus,
    pods: &[&'a Pod],
    indexed_completions: Option<i32>,
) -> Tracking<'a> {
    let recorded = status.uncounted_terminated_pods.clone().unwrap_or_default();
    let recorded_succeeded = recorded.succeeded.unwrap_or_default();
    let recorded_failed = recorded.failed.unwrap_or_default();
    let by_uid: BTreeMap<&str, &Pod> = pods
        .iter()
        .filter_map(|p| Some((p.metadata.uid.as_deref()?, *p)))
        .collect();
    let mut t = Tracking {
        succeeded: status.succeeded.unwrap_or(0),
        failed: status.failed.unwrap_or(0),
        uncounted_succeeded: Vec::new(),
        uncounted_failed: Vec::new(),
        release: Vec::new(),
        completed_indexes: status
            .completed_indexes
            .as_deref()
            .map(parse_indexes)
            .unwrap_or_default(),
    };
    for (recorded, counter, pending) in [
        (
            &recorded_succeeded,
            &mut t.succeeded,
            &mut t.uncounted_succeeded,
        ),
        (&recorded_failed, &mut t.failed, &mut t.uncounted_failed),
    ] {
        for uid in recorded {
            match by_uid.get(uid.as_str()) {
                Some(pod) if has_tracking_finalizer(pod) => {
                    pending.push(uid.clone());
                    t.release.push(pod);
                }
                // Released (or gone): counted now.
                _ => *counter += 1,
            }
        }
    }
    let recorded_indexes = t.completed_indexes.clone();
    for pod in pods {
        let Some(uid) = pod.metadata.uid.as_deref() else {
            continue;
        };
        if !has_tracking_finalizer(pod) || !is_terminal(pod) {
            continue;
        }
        let known = recorded_succeeded
            .iter()
            .chain(&recorded_failed)
            .any(|u| u == uid);
        if known {
            continue;
        }
        let succeeded = phase(pod) == Some("Succeeded");
        match (succeeded, indexed_completions) {
            // An Indexed Job records success by index (`completedIndexes`), not by uid: a
            // recorded index releases its pod; a new one is recorded first; a pod without a
            // valid index is released uncounted.
            (true, Some(completions)) => match completion_index(pod) {
                Some(index) if index < completions && !recorded_indexes.contains(&index) => {
                    t.completed_indexes.insert(index);
                }
                _ => t.release.push(pod),
            },
            (true, None) => t.uncounted_succeeded.push(uid.to_string()),
            (false, _) => t.uncounted_failed.push(uid.to_string()),
        }
    }
    if indexed_completions.is_some() {
        t.succeeded = t.completed_indexes.len() as i32;
    }
    t
}

/// The time left before a failed pod may be replaced (zero when none is owed): 10s doubled
/// for each failure since the last success, capped at ten minutes, from the last failure.
fn failure_backoff(pods: &[&Pod], now: Timestamp) -> Duration {
    let last_success = pods
        .iter()
        .filter(|p| phase(p) == Some("Succeeded"))
        .map(|p| finish_time(p, now))
        .max();
    let failures: Vec<Timestamp> = pods
        .iter()
        .filter(|p| phase(p) == Some("Failed"))
        .map(|p| finish_time(p, now))
        .filter(|t| last_success.is_none_or(|s| *t > s))
        .collect();
    let Some(last_failure) = failures.iter().max() else {
        return Duration::ZERO;
    };
    let mut delay = POD_FAILURE_BACKOFF;
    for _ in 1..failures.len() {
        delay = (delay * 2).min(MAX_POD_FAILURE_BACKOFF);
    }
    delay.saturating_sub(elapsed(*last_failure, now))
}

/// Plan one reconcile of `job` given the pods it controls (others in `pods` are ignored).
pub fn plan(job: &Job, pods: &[Pod], now: Timestamp) -> Plan {
    let mut plan = Plan::default();
    let Some(spec) = job.spec.as_ref() else {
        return plan;
    };
    if spec
        .managed_by
        .as_deref()
        .is_some_and(|m| m != JOB_CONTROLLER_NAME)
    {
        return plan;
    }
    let uid = job.metadata.uid.as_deref().unwrap_or_default();
    let pods: Vec<&Pod> = pods
        .iter()
        .filter(|p| is_controlled_by(&p.metadata, uid))
        .collect();

    // A Job being deleted or already finished only lets go of its pods (and expires).
    let finished = finished_condition(job);
    if job.metadata.deletion_timestamp.is_some() || finished.is_some() {
        for pod in pods.iter().filter(|p| has_tracking_finalizer(p)) {
            plan.actions.push(remove_tracking_finalizer(pod));
        }
        if let (Some(condition), Some(ttl), None) = (
            finished,
            spec.ttl_seconds_after_finished,
            &job.metadata.deletion_timestamp,
        ) {
            let finished_at = condition
                .last_transition_time
                .as_ref()
                .map_or(now, |Time(t)| *t);
            let expires = after(
                finished_at,
                Duration::from_secs(u64::try_from(ttl).unwrap_or(0)),
            );
            if expires <= now {
                plan.actions
                    .push(Action::delete(job, Some(Propagation::Foreground)));
            } else {
                plan.requeue(elapsed(now, expires));
            }
        }
        return plan;
    }

    let old_status = job.status.clone().unwrap_or_default();
    let mut status = old_status.clone();
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let completions = spec.completions;
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let indexed_completions = if indexed { completions } else { None };

    let mut tracking = track(&status, &pods, indexed_completions);
    for pod in &tracking.release {
        plan.actions.push(remove_tracking_finalizer(pod));
    }
    let succeeded_total = tracking.succeeded + tracking.uncounted_succeeded.len() as i32;
    let failed_total = tracking.failed + tracking.uncounted_failed.len() as i32;

    let active: Vec<&Pod> = pods
        .iter()
        .copied()
        .filter(|p| !is_terminal(p) && p.metadata.deletion_timestamp.is_none())
        .collect();
    let mut terminating = pods
        .iter()
        .filter(|p| !is_terminal(p) && p.metadata.deletion_timestamp.is_some())
        .count() as i32;
    let suspended = spec.suspend == Some(true);

    // Failure and success criteria (an interim condition already set wins).
    let interim = |type_: &str| {
        true_condition(&status, type_).map(|c| {
            (
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
    };
    let mut failure = interim(FAILURE_TARGET);
    let mut success = interim(SUCCESS_CRITERIA_MET);
    if failure.is_none() && success.is_none() {
        let backoff_limit = spec.backoff_limit.unwrap_or(DEFAULT_BACKOFF_LIMIT);
        let start = status.start_time.as_ref().map(|Time(t)| *t);
        let deadline = spec
            .active_deadline_seconds
            .zip(start)
            .filter(|_| !suspended)
            .map(|(seconds, start)| {
                after(
                    start,
                    Duration::from_secs(u64::try_from(seconds).unwrap_or(0)),
                )
            });
        let complete = active.is_empty()
            && match (indexed, completions) {
                (true, Some(c)) => tracking.completed_indexes.len() as i32 >= c,
                (false, Some(c)) => succeeded_total >= c,
                (_, None) => succeeded_total > 0,
            };
        if failed_total > backoff_limit || past_backoff_limit_on_failure(spec, &pods, backoff_limit)
        {
            failure = Some((
                "BackoffLimitExceeded".into(),
                "Job has reached the specified backoff limit".into(),
            ));
        } else if deadline.is_some_and(|d| d <= now) {
            failure = Some((
                "DeadlineExceeded".into(),
                "Job was active longer than specified deadline".into(),
            ));
        } else if complete {
            success = Some((
                "CompletionsReached".into(),
                "Reached expected number of succeeded pods".into(),
            ));
        } else if let Some(deadline) = deadline {
            plan.requeue(elapsed(now, deadline));
        }
    }

    // Pods deleted while finishing keep their finalizer (a failing Job counts them as
    // failed); pods deleted by suspension or scale-down are released first, uncounted.
    let mut deletions: Vec<&Pod> = Vec::new();
    let mut released_deletions: Vec<&Pod> = Vec::new();
    let mut creations: Vec<Pod> = Vec::new();
    let mut events: Vec<Action> = Vec::new();

    if let Some((reason, message)) = failure.as_ref().or(success.as_ref()) {
        let interim = if failure.is_some() {
            FAILURE_TARGET
        } else {
            SUCCESS_CRITERIA_MET
        };
        set_condition(&mut status, interim, "True", reason, message, now);
        deletions.extend(active.iter().copied());
        // Every pod still running is done with: a failing Job counts it as failed (recorded
        // now, released next time), a succeeding one lets it go uncounted.
        for pod in pods
            .iter()
            .copied()
            .filter(|p| !is_terminal(p) && has_tracking_finalizer(p))
        {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            let known = tracking.uncounted_failed.contains(&uid)
                || tracking
                    .release
                    .iter()
                    .any(|p| p.metadata.uid.as_ref() == Some(&uid));
            if known {
                continue;
            }
            if failure.is_some() {
                tracking.uncounted_failed.push(uid);
            } else {
                plan.actions.push(remove_tracking_finalizer(pod));
            }
        }
        let pending = tracking.uncounted_succeeded.len() + tracking.uncounted_failed.len();
        if active.is_empty() && terminating == 0 && pending == 0 {
            if failure.is_some() {
                set_condition(&mut status, FAILED, "True", reason, message, now);
                events.push(Action::event(
                    job,
                    EventType::Warning,
                    reason,
                    message.clone(),
                ));
            } else {
                set_condition(&mut status, COMPLETE, "True", reason, message, now);
                status.completion_time = Some(Time(now));
                events.push(Action::event(
                    job,
                    EventType::Normal,
                    "Completed",
                    "Job completed",
                ));
            }
        }
    } else if suspended {
        released_deletions.extend(active.iter().copied());
        if true_condition(&status, SUSPENDED).is_none() {
            set_condition(
                &mut status,
                SUSPENDED,
                "True",
                "JobSuspended",
                "Job suspended",
                now,
            );
            events.push(Action::event(
                job,
                EventType::Normal,
                "Suspended",
                "Job suspended",
            ));
        }
    } else {
        if true_condition(&status, SUSPENDED).is_some() {
            set_condition(
                &mut status,
                SUSPENDED,
                "False",
                "JobResumed",
                "Job resumed",
                now,
            );
            status.start_time = Some(Time(now));
            events.push(Action::event(
                job,
                EventType::Normal,
                "Resumed",
                "Job resumed",
            ));
        }
        if status.start_time.is_none() {
            status.start_time = Some(Time(now));
            if let Some(seconds) = spec.active_deadline_seconds {
                plan.requeue(Duration::from_secs(u64::try_from(seconds).unwrap_or(0)));
            }
        }
        // Terminating pods hold their slot when replacements wait for them to fail.
        let replace_failed_only = spec.pod_replacement_policy.as_deref() == Some("Failed")
            || (spec.pod_replacement_policy.is_none() && spec.pod_failure_policy.is_some());
        let holding = if replace_failed_only { terminating } else { 0 };
        let (remove, create) = if indexed {
            plan_indexed(
                job,
                &active,
                &tracking.completed_indexes,
                completions,
                parallelism,
                holding,
            )
        } else {
            plan_non_indexed(
                job,
                &active,
                succeeded_total,
                completions,
                parallelism,
                holding,
            )
        };
        // Deletions take precedence: one plan either deletes or creates.
        if remove.is_empty() {
            creations = create;
        }
        released_deletions.extend(remove);
        if !creations.is_empty() {
            let wait = failure_backoff(&pods, now);
            if wait > Duration::ZERO {
                creations.clear();
                plan.requeue(wait);
            }
        }
        creations.truncate(MAX_POD_CREATE_DELETE_PER_SYNC);
    }

    let mut active_after = active.len() as i32;
    let mut ready_after = active.iter().filter(|p| is_ready(p)).count() as i32;
    released_deletions.truncate(MAX_POD_CREATE_DELETE_PER_SYNC);
    for pod in &released_deletions {
        if has_tracking_finalizer(pod) {
            plan.actions.push(remove_tracking_finalizer(pod));
        }
    }
    for pod in deletions.iter().chain(&released_deletions) {
        active_after -= 1;
        if is_ready(pod) {
            ready_after -= 1;
        }
        terminating += 1;
        plan.actions.push(Action::delete(*pod, None));
        events.push(Action::event(
            job,
            EventType::Normal,
            "SuccessfulDelete",
            format!("Deleted pod: {}", pod_name(pod)),
        ));
    }
    active_after += creations.len() as i32;
    for pod in &creations {
        plan.actions.push(Action::create(pod));
    }

    status.active = Some(active_after);
    status.ready = Some(ready_after);
    status.terminating = Some(terminating);
    status.succeeded = Some(tracking.succeeded);
    status.failed = Some(tracking.failed);
    let list = |uids: &mut Vec<String>| (!uids.is_empty()).then(|| std::mem::take(uids));
    status.uncounted_terminated_pods = Some(UncountedTerminatedPods {
        succeeded: list(&mut tracking.uncounted_succeeded),
        failed: list(&mut tracking.uncounted_failed),
    });
    if indexed {
        status.completed_indexes = Some(format_indexes(&tracking.completed_indexes));
    }
    if status != old_status {
        let mut updated = job.clone();
        updated.status = Some(status);
        plan.actions.push(Action::update_status(&updated));
    }
    plan.actions.extend(events);
    plan
}

/// With `restartPolicy: OnFailure` failures restart containers instead of failing pods:
/// the Job fails once the restarts of its running and pending pods reach the limit.
fn past_backoff_limit_on_failure(spec: &JobSpec, pods: &[&Pod], backoff_limit: i32) -> bool {
    let on_failure = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        == Some("OnFailure");
    if !on_failure {
        return false;
    }
    let restarts: i32 = pods
        .iter()
        .filter(|p| matches!(phase(p), Some("Running" | "Pending")))
        .filter_map(|p| p.status.as_ref())
        .flat_map(|s| {
            s.container_statuses
                .iter()
                .flatten()
                .chain(s.init_container_statuses.iter().flatten())
        })
        .map(|c| c.restart_count)
        .sum();
    if backoff_limit == 0 {
        restarts > 0
    } else {
        restarts >= backoff_limit
    }
}

/// NonIndexed: how many to delete (the extra active pods, in deletion order) and create.
fn plan_non_indexed<'a>(
    job: &Job,
    active: &[&'a Pod],
    succeeded: i32,
    completions: Option<i32>,
    parallelism: i32,
    holding: i32,
) -> (Vec<&'a Pod>, Vec<Pod>) {
    let running = active.len() as i32;
    let want = match completions {
        Some(c) => parallelism.min((c - succeeded).max(0)),
        // Work-queue Jobs: once one pod succeeded, no new ones start.
        None if succeeded > 0 => running.min(parallelism),
        None => parallelism,
    };
    let mut remove = Vec::new();
    if running > want {
        let mut ordered = active.to_vec();
        ordered.sort_by_key(|p| deletion_rank(p));
        remove = ordered
            .into_iter()
            .take((running - want) as usize)
            .collect();
    }
    let missing = (want - running - holding).max(0) as usize;
    let create = (0..missing).map(|_| pod_for(job, None)).collect();
    (remove, create)
}

/// Indexed: delete pods with a bad, out-of-range, completed or duplicate index and any
/// beyond `parallelism` (highest indexes first); create the lowest missing indexes.
fn plan_indexed<'a>(
    job: &Job,
    active: &[&'a Pod],
    completed: &BTreeSet<i32>,
    completions: Option<i32>,
    parallelism: i32,
    holding: i32,
) -> (Vec<&'a Pod>, Vec<Pod>) {
    let completions = completions.unwrap_or(0);
    let mut remove = Vec::new();
    let mut by_index: BTreeMap<i32, &Pod> = BTreeMap::new();
    let mut ordered = active.to_vec();
    // Keep the most established pod of an index: delete in reverse deletion order.
    ordered.sort_by_key(|p| std::cmp::Reverse(deletion_rank(p)));
    for pod in ordered {
        match completion_index(pod) {
            Some(i) if i < completions && !completed.contains(&i) && !by_index.contains_key(&i) => {
                by_index.insert(i, pod);
            }
            _ => remove.push(pod),
        }
    }
    while by_index.len() as i32 > parallelism {
        if let Some((_, pod)) = by_index.pop_last() {
            remove.push(pod);
        }
    }
    let room = (parallelism - by_index.len() as i32 - holding).max(0) as usize;
    let create = (0..completions)
        .filter(|i| !completed.contains(i) && !by_index.contains_key(i))
        .take(room)
        .map(|i| pod_for(job, Some(i)))
        .collect();
    (remove, create)
}

#[cfg(test)]
mod tests;
