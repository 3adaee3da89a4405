//! The cronjob controller's planner: from a CronJob and the Jobs it controls, the Job to
//! start for the most recent due schedule time, the Jobs to replace or expire from history,
//! the status (`active`, `lastScheduleTime`, `lastSuccessfulTime`) and events, as upstream's
//! `pkg/controller/cronjob` (v1.33, "controller v2") does; [`schedule`] parses the cron
//! expression and computes activations in `spec.timeZone` (UTC when unset).
//!
//! Differences a reader should know: upstream double-checks an active Job missing from its
//! cache with a live GET; here an active reference without a uid (a Job this planner asked
//! to create and the cache has not shown yet) is kept, one with a uid that no observed Job
//! has is dropped (`MissingJob`). A Job of the due time that already exists counts as that
//! run (upstream retries until its own status update lands). Unset history limits take the
//! apiserver's defaults (3 successful, 1 failed).

pub mod controller;
pub mod schedule;

use std::time::Duration;

use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::tz::TimeZone;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::action::{Action, EventType, ObjectRef, Propagation};
use crate::common::{controller_ref, is_controlled_by};
pub use crate::job::Plan;
use crate::job::finished_condition;
use schedule::Schedule;

/// The annotation with a Job's nominal start time (RFC 3339 in the CronJob's zone).
pub const SCHEDULED_TIMESTAMP_ANNOTATION: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// More missed start times than this and the controller warns (`TooManyMissedTimes`).
pub const MAX_MISSED_SCHEDULES: i64 = 100;
/// Requeues land this much after the schedule time (clock skew padding, as upstream).
pub const NEXT_SCHEDULE_DELTA: Duration = Duration::from_millis(100);
/// History limits when the spec leaves them unset (the apiserver's defaults).
pub const DEFAULT_SUCCESSFUL_JOBS_HISTORY_LIMIT: i32 = 3;
pub const DEFAULT_FAILED_JOBS_HISTORY_LIMIT: i32 = 1;

/// How many schedule times passed unserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Missed {
    None,
    Few,
    Many,
}

/// The name of the Job for `scheduled`: `<cronjob>-<minutes since the epoch>`.
pub fn job_name(cronjob_name: &str, scheduled: Timestamp) -> String {
    format!("{cronjob_name}-{}", scheduled.as_second().div_euclid(60))
}

/// RFC 3339 as Go writes it (`Z` for a zero offset).
fn rfc3339_in(t: Timestamp, zone: &TimeZone) -> String {
    let text = t
        .to_zoned(zone.clone())
        .strftime("%Y-%m-%dT%H:%M:%S%:z")
        .to_string();
    match text.strip_suffix("+00:00") {
        Some(base) => format!("{base}Z"),
        None => text,
    }
}

fn time(t: &Option<Time>) -> Option<Timestamp> {
    t.as_ref().map(|Time(t)| *t)
}

fn job_reference(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        ..ObjectReference::default()
    }
}

/// Whether `reference` names `job` (by uid when it has one, else by name).
fn refers_to(reference: &ObjectReference, job: &Job) -> bool {
    match &reference.uid {
        Some(uid) => job.metadata.uid.as_ref() == Some(uid),
        None => reference.name.is_some() && reference.name == job.metadata.name,
    }
}

fn reference_target(reference: &ObjectReference, namespace: Option<&String>) -> ObjectRef {
    ObjectRef {
        api_version: "batch/v1".into(),
        kind: "Job".into(),
        plural: "jobs".into(),
        namespace: reference.namespace.clone().or_else(|| namespace.cloned()),
        name: reference.name.clone().unwrap_or_default(),
        uid: reference.uid.clone(),
    }
}

/// Upstream's `mostRecentScheduleTime`: the earliest time considered (last schedule time,
/// else creation, moved up to `now - startingDeadlineSeconds` when asked), the most recent
/// due time not after `now`, and how many were missed (estimated from the first interval).
fn most_recent_schedule_time(
    cronjob: &CronJob,
    last_schedule: Option<Timestamp>,
    schedule: &Schedule,
    zone: &TimeZone,
    now: Timestamp,
    include_deadline: bool,
) -> Result<(Timestamp, Option<Timestamp>, Missed), String> {
    let mut earliest = last_schedule
        .or_else(|| time(&cronjob.metadata.creation_timestamp))
        .unwrap_or(now);
    let deadline = cronjob
        .spec
        .as_ref()
        .and_then(|s| s.starting_deadline_seconds);
    if include_deadline && let Some(seconds) = deadline {
        let limit = now
            .checked_sub(SignedDuration::from_secs(seconds))
            .unwrap_or(Timestamp::MIN);
        if limit > earliest {
            earliest = limit;
        }
    }
    let Some(t1) = schedule.next_after(earliest, zone) else {
        return Ok((earliest, None, Missed::None));
    };
    if now < t1 {
        return Ok((earliest, None, Missed::None));
    }
    let Some(t2) = schedule.next_after(t1, zone) else {
        return Ok((earliest, Some(t1), Missed::None));
    };
    if now < t2 {
        return Ok((earliest, Some(t1), Missed::None));
    }
    let interval = t2.duration_since(t1).as_secs_f64().round() as i64;
    if interval < 1 {
        return Err("time difference between two schedules is less than 1 second".into());
    }
    let elapsed = now.duration_since(t1).as_secs();
    let missed = elapsed / interval + 1;
    let mut cursor = t1
        .checked_add(SignedDuration::from_secs((missed - 2) * interval))
        .unwrap_or(t1);
    let mut most_recent = None;
    // Bounded: the estimate lands within a couple of intervals of `now`.
    for _ in 0..100_000 {
        match schedule.next_after(cursor, zone) {
            Some(t) if t <= now => {
                most_recent = Some(t);
                cursor = t;
            }
            _ => break,
        }
    }
    let missed = if missed > MAX_MISSED_SCHEDULES {
        Missed::Many
    } else {
        Missed::Few
    };
    Ok((earliest, most_recent, missed))
}

/// Upstream's `nextScheduleTimeDuration`: from the most recent due time (or the earliest
/// time considered when none was due, or `now` when some were missed), the wait until the
/// next activation plus [`NEXT_SCHEDULE_DELTA`].
fn next_schedule_delay(
    cronjob: &CronJob,
    last_schedule: Option<Timestamp>,
    schedule: &Schedule,
    zone: &TimeZone,
    now: Timestamp,
) -> Option<Duration> {
    let base = match most_recent_schedule_time(cronjob, last_schedule, schedule, zone, now, false) {
        Err(_) => now,
        Ok((_, Some(recent), _)) => recent,
        Ok((earliest, None, Missed::None)) => earliest,
        Ok((_, None, _)) => now,
    };
    let next = schedule.next_after(base, zone)?;
    let wait = Duration::try_from(next.duration_since(now)).unwrap_or(Duration::ZERO);
    Some(wait + NEXT_SCHEDULE_DELTA)
}

/// The Job for `scheduled`: the template's metadata and spec, the scheduled-timestamp
/// annotation, the controller reference, the deterministic name.
pub fn job_for(cronjob: &CronJob, scheduled: Timestamp, zone: &TimeZone) -> Job {
    let name = cronjob.metadata.name.clone().unwrap_or_default();
    let template = cronjob
        .spec
        .as_ref()
        .map(|s| s.job_template.clone())
        .unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert(
        SCHEDULED_TIMESTAMP_ANNOTATION.into(),
        rfc3339_in(scheduled, zone),
    );
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(&name, scheduled)),
            namespace: cronjob.metadata.namespace.clone(),
            labels: meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![controller_ref(cronjob)]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// Delete the oldest (by start time, then name) of `jobs` beyond `limit`.
fn expire_history(
    cronjob: &CronJob,
    mut jobs: Vec<&Job>,
    limit: i32,
    plan: &mut Plan,
    events: &mut Vec<Action>,
) {
    let excess = jobs
        .len()
        .saturating_sub(usize::try_from(limit).unwrap_or(0));
    jobs.sort_by(|a, b| {
        let start = |j: &Job| j.status.as_ref().and_then(|s| time(&s.start_time));
        let key = |j: &Job| (start(j).is_none(), start(j), j.metadata.name.clone());
        key(a).cmp(&key(b))
    });
    for job in jobs.into_iter().take(excess) {
        plan.actions
            .push(Action::delete(job, Some(Propagation::Background)));
        events.push(Action::event(
            cronjob,
            EventType::Normal,
            "SuccessfulDelete",
            format!(
                "Deleted job {}",
                job.metadata.name.as_deref().unwrap_or_default()
            ),
        ));
    }
}

/// Plan one reconcile of `cronjob` given the Jobs it controls (others are ignored).
pub fn plan(cronjob: &CronJob, jobs: &[Job], now: Timestamp) -> Plan {
    let mut plan = Plan::default();
    let mut events = Vec::new();
    let Some(spec) = cronjob.spec.as_ref() else {
        return plan;
    };
    let uid = cronjob.metadata.uid.as_deref().unwrap_or_default();
    let children: Vec<&Job> = jobs
        .iter()
        .filter(|j| is_controlled_by(&j.metadata, uid))
        .collect();
    let mut old_status = cronjob.status.clone().unwrap_or_default();
    if old_status.active.as_ref().is_some_and(Vec::is_empty) {
        old_status.active = None;
    }
    let mut status = old_status.clone();
    let mut active = status.active.take().unwrap_or_default();

    // Reconcile the active list with the Jobs seen.
    for job in &children {
        let job_name = job.metadata.name.as_deref().unwrap_or_default();
        let finished = finished_condition(job).map(|c| c.type_.clone());
        let position = active.iter().position(|r| refers_to(r, job));
        match (position, &finished) {
            // Upstream only reports it (every reconcile): a Job nobody recorded.
            (None, None) => events.push(Action::event(
                cronjob,
                EventType::Warning,
                "UnexpectedJob",
                format!("Saw a job that the controller did not create or forgot: {job_name}"),
            )),
            (Some(i), None) => {
                if active[i].uid.is_none() {
                    active[i] = job_reference(job);
                }
            }
            (Some(i), Some(condition)) => {
                active.remove(i);
                events.push(Action::event(
                    cronjob,
                    EventType::Normal,
                    "SawCompletedJob",
                    format!("Saw completed job: {job_name}, status: {condition}"),
                ));
            }
            (None, Some(_)) => {}
        }
        if finished.as_deref() == Some("Complete") {
            let completed = job.status.as_ref().and_then(|s| time(&s.completion_time));
            if completed > time(&status.last_successful_time) {
                status.last_successful_time = completed.map(Time);
            }
        }
    }
    active.retain(|reference| {
        let seen = children.iter().any(|j| refers_to(reference, j));
        if !seen && reference.uid.is_some() {
            events.push(Action::event(
                cronjob,
                EventType::Normal,
                "MissingJob",
                format!(
                    "Active job went missing: {}",
                    reference.name.as_deref().unwrap_or_default()
                ),
            ));
        }
        seen || reference.uid.is_none()
    });

    if cronjob.metadata.deletion_timestamp.is_none() {
        let finished_as = |type_: &str| {
            children
                .iter()
                .copied()
                .filter(|j| finished_condition(j).is_some_and(|c| c.type_ == type_))
                .collect::<Vec<_>>()
        };
        let successful_limit = spec
            .successful_jobs_history_limit
            .unwrap_or(DEFAULT_SUCCESSFUL_JOBS_HISTORY_LIMIT);
        let failed_limit = spec
            .failed_jobs_history_limit
            .unwrap_or(DEFAULT_FAILED_JOBS_HISTORY_LIMIT);
        expire_history(
            cronjob,
            finished_as("Complete"),
            successful_limit,
            &mut plan,
            &mut events,
        );
        expire_history(
            cronjob,
            finished_as("Failed"),
            failed_limit,
            &mut plan,
            &mut events,
        );
        if spec.suspend != Some(true) {
            schedule_run(
                cronjob,
                &children,
                &mut active,
                &mut status,
                now,
                &mut plan,
                &mut events,
            );
        }
    }

    status.active = (!active.is_empty()).then_some(active);
    if status != old_status {
        let mut updated = cronjob.clone();
        updated.status = Some(status);
        plan.actions.push(Action::update_status(&updated));
    }
    plan.actions.extend(events);
    plan
}

/// The scheduling half of a reconcile: start (or skip) the most recent due run.
fn schedule_run(
    cronjob: &CronJob,
    children: &[&Job],
    active: &mut Vec<ObjectReference>,
    status: &mut CronJobStatus,
    now: Timestamp,
    plan: &mut Plan,
    events: &mut Vec<Action>,
) {
    let Some(spec) = cronjob.spec.as_ref() else {
        return;
    };
    let zone = match spec.time_zone.as_deref() {
        None => TimeZone::UTC,
        Some(name) => match TimeZone::get(name) {
            Ok(zone) => zone,
            Err(error) => {
                events.push(Action::event(
                    cronjob,
                    EventType::Warning,
                    "UnknownTimeZone",
                    format!("invalid timeZone: {name:?}: {error}"),
                ));
                return;
            }
        },
    };
    let schedule = match Schedule::parse(&spec.schedule) {
        Ok(schedule) => schedule,
        Err(error) => {
            events.push(Action::event(
                cronjob,
                EventType::Warning,
                "UnparseableSchedule",
                format!("unparseable schedule: {:?} : {error}", spec.schedule),
            ));
            return;
        }
    };
    if spec.schedule.contains("TZ") {
        events.push(Action::event(
            cronjob,
            EventType::Warning,
            "UnsupportedSchedule",
            format!(
                "CRON_TZ or TZ used in schedule {:?} is not officially supported, see https://kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/ for more details",
                spec.schedule
            ),
        ));
    }
    let last_schedule = time(&status.last_schedule_time);
    let scheduled = match most_recent_schedule_time(
        cronjob,
        last_schedule,
        &schedule,
        &zone,
        now,
        true,
    ) {
        Err(error) => {
            events.push(Action::event(
                cronjob,
                EventType::Warning,
                "InvalidSchedule",
                format!("invalid schedule: {} : {error}", spec.schedule),
            ));
            return;
        }
        Ok((_, Some(scheduled), missed)) => {
            if missed == Missed::Many {
                events.push(Action::event(
                    cronjob,
                    EventType::Warning,
                    "TooManyMissedTimes",
                    "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew",
                ));
            }
            Some(scheduled)
        }
        Ok((_, None, _)) => None,
    };
    let requeue = |status: &CronJobStatus, plan: &mut Plan| {
        let last = time(&status.last_schedule_time);
        if let Some(delay) = next_schedule_delay(cronjob, last, &schedule, &zone, now) {
            plan.requeue(delay);
        }
    };
    let Some(scheduled) = scheduled else {
        requeue(status, plan);
        return;
    };
    let too_late = spec.starting_deadline_seconds.is_some_and(|seconds| {
        scheduled
            .checked_add(SignedDuration::from_secs(seconds))
            .is_ok_and(|deadline| deadline < now)
    });
    if too_late {
        events.push(Action::event(
            cronjob,
            EventType::Warning,
            "MissSchedule",
            format!(
                "Missed scheduled time to start a job: {}",
                scheduled.strftime("%a, %d %b %Y %H:%M:%S %z")
            ),
        ));
        requeue(status, plan);
        return;
    }
    let name = job_name(
        cronjob.metadata.name.as_deref().unwrap_or_default(),
        scheduled,
    );
    let processed = active
        .iter()
        .any(|r| r.name.as_deref() == Some(name.as_str()))
        || last_schedule == Some(scheduled);
    if processed {
        requeue(status, plan);
        return;
    }
    if children
        .iter()
        .any(|j| j.metadata.name.as_deref() == Some(name.as_str()))
    {
        // Created before, status not recorded: that was this run.
        status.last_schedule_time = Some(Time(scheduled));
        requeue(status, plan);
        return;
    }
    match spec.concurrency_policy.as_deref() {
        Some("Forbid") if !active.is_empty() => {
            events.push(Action::event(
                cronjob,
                EventType::Normal,
                "JobAlreadyActive",
                "Not starting job because prior execution is running and concurrency policy is Forbid",
            ));
            requeue(status, plan);
            return;
        }
        Some("Replace") => {
            for reference in active.drain(..) {
                plan.actions.push(Action::Delete {
                    target: reference_target(&reference, cronjob.metadata.namespace.as_ref()),
                    propagation: Some(Propagation::Background),
                    grace_period_seconds: None,
                });
                events.push(Action::event(
                    cronjob,
                    EventType::Normal,
                    "SuccessfulDelete",
                    format!(
                        "Deleted job {}",
                        reference.name.as_deref().unwrap_or_default()
                    ),
                ));
            }
        }
        _ => {}
    }
    let job = job_for(cronjob, scheduled, &zone);
    plan.actions.push(Action::create(&job));
    events.push(Action::event(
        cronjob,
        EventType::Normal,
        "SuccessfulCreate",
        format!("Created job {name}"),
    ));
    active.push(job_reference(&job));
    status.last_schedule_time = Some(Time(scheduled));
    requeue(status, plan);
}

#[cfg(test)]
mod tests;
