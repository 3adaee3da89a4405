//! batch/v1 Jobs and CronJobs: upstream's defaults, the selector a Job gets on create
//! (`prepare_for_create`, needs the uid), validation (schedule and time zone in `cron`),
//! the `status.successful` field selector and the tables.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{CronJob, Job, JobSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kwk_api::field::{
    FIELD_IMMUTABLE, FieldError, Shown, check_non_negative, forbidden, invalid, not_supported,
    required,
};
use kwk_api::meta;
use kwk_api::pod::{self, DefaultSet};
use serde_json::{Value, json};

use super::cells::{
    CONTAINERS, IMAGES, SELECTOR, age_column, col, containers_and_images, format_selector,
    name_column,
};
use super::cron::{schedule_problem, time_zone_problem};
use super::util::{arr, bool_cell, int, s, seconds, since, validate_typed, with_typed};
use super::workloads::{TemplateRules, validate_selector_and_template};
use super::{Column, KindStrategy, human_duration, name_of};
use crate::apiserver::errors::Cause;

/// The label that ties a Job's pods to it.
pub const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
/// The label with the Job's name on its pods.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
const LEGACY_CONTROLLER_UID_LABEL: &str = "controller-uid";
const LEGACY_JOB_NAME_LABEL: &str = "job-name";

// ---- Job ----

#[derive(Debug, Default, Clone, Copy)]
pub struct JobStrategy;

fn default_job_spec(spec: &mut JobSpec) {
    if spec.completions.is_none() && spec.parallelism.is_none() {
        spec.completions = Some(1);
        spec.parallelism = Some(1);
    }
    spec.parallelism.get_or_insert(1);
    if spec.backoff_limit.is_none() {
        spec.backoff_limit = Some(if spec.backoff_limit_per_index.is_some() {
            i32::MAX
        } else {
            6
        });
    }
    spec.completion_mode
        .get_or_insert_with(|| "NonIndexed".to_string());
    spec.suspend.get_or_insert(false);
    spec.manual_selector.get_or_insert(false);
    if let Some(policy) = spec.pod_failure_policy.as_mut() {
        for rule in &mut policy.rules {
            for pattern in rule.on_pod_conditions.iter_mut().flatten() {
                if pattern.status.is_empty() {
                    pattern.status = "True".to_string();
                }
            }
        }
    }
    if spec.pod_replacement_policy.is_none() {
        spec.pod_replacement_policy = Some(if spec.pod_failure_policy.is_some() {
            "Failed".to_string()
        } else {
            "TerminatingOrFailed".to_string()
        });
    }
    if let Some(pod_spec) = spec.template.spec.as_mut() {
        pod::default_pod_spec(pod_spec, DefaultSet::Upstream);
    }
}

/// Upstream's `SetDefaults_Job` (the Job takes its template's labels when it has none).
pub fn default_job(job: &mut Job) {
    let spec = job.spec.get_or_insert_with(Default::default);
    default_job_spec(spec);
    let template_labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone());
    if let Some(labels) = template_labels
        && job.metadata.labels.as_ref().is_none_or(BTreeMap::is_empty)
    {
        job.metadata.labels = Some(labels);
    }
}

/// The create-time part of the Job registry (upstream's `generateSelector`, called from
/// `PrepareForCreate` unless `manualSelector` is true): pod template labels with the Job's
/// name and uid (both the `batch.kubernetes.io/` and the legacy keys), and a selector on
/// `batch.kubernetes.io/controller-uid`. Needs `metadata.name` and `metadata.uid` set; the
/// defaults are re-applied after it (so the Job's own labels follow its template's, as
/// upstream's storage round trip does).
pub fn prepare_job(job: &mut Job) {
    let name = job.metadata.name.clone().unwrap_or_default();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let spec = job.spec.get_or_insert_with(Default::default);
    if spec.manual_selector != Some(true) {
        let labels = spec
            .template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(Default::default);
        for key in [LEGACY_JOB_NAME_LABEL, JOB_NAME_LABEL] {
            labels
                .entry(key.to_string())
                .or_insert_with(|| name.clone());
        }
        for key in [LEGACY_CONTROLLER_UID_LABEL, CONTROLLER_UID_LABEL] {
            labels.entry(key.to_string()).or_insert_with(|| uid.clone());
        }
        spec.selector
            .get_or_insert_with(LabelSelector::default)
            .match_labels
            .get_or_insert_with(Default::default)
            .entry(CONTROLLER_UID_LABEL.to_string())
            .or_insert_with(|| uid.clone());
    }
    default_job(job);
}

/// Checks shared by Jobs and the job templates of CronJobs, at `base` (`spec` or
/// `spec.jobTemplate.spec`).
fn validate_job_spec(spec: &JobSpec, base: &'static str, errs: &mut Vec<FieldError>) {
    for (name, value) in [
        ("parallelism", spec.parallelism.map(i64::from)),
        ("completions", spec.completions.map(i64::from)),
        ("activeDeadlineSeconds", spec.active_deadline_seconds),
        ("backoffLimit", spec.backoff_limit.map(i64::from)),
        (
            "ttlSecondsAfterFinished",
            spec.ttl_seconds_after_finished.map(i64::from),
        ),
        (
            "backoffLimitPerIndex",
            spec.backoff_limit_per_index.map(i64::from),
        ),
    ] {
        check_non_negative(&format!("{base}.{name}"), value, errs);
    }
    let mode = spec.completion_mode.as_deref().unwrap_or("NonIndexed");
    match mode {
        "NonIndexed" => {
            if spec.backoff_limit_per_index.is_some() {
                errs.push(forbidden(
                    &format!("{base}.backoffLimitPerIndex"),
                    "requires indexed completion mode",
                ));
            }
        }
        "Indexed" => {
            if spec.completions.is_none() {
                errs.push(required(
                    &format!("{base}.completions"),
                    "when completion mode is Indexed",
                ));
            }
        }
        other => errs.push(not_supported(
            &format!("{base}.completionMode"),
            other,
            &["NonIndexed", "Indexed"],
        )),
    }
    if let Some(policy) = spec.pod_replacement_policy.as_deref() {
        let allowed: &[&str] = if spec.pod_failure_policy.is_some() {
            &["Failed"]
        } else {
            &["Failed", "TerminatingOrFailed"]
        };
        if !allowed.contains(&policy) {
            errs.push(not_supported(
                &format!("{base}.podReplacementPolicy"),
                policy,
                allowed,
            ));
        }
    }
}

fn validate_job(new: &Job, old: Option<&Job>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(spec) = &new.spec else {
        errs.push(required("spec", ""));
        return errs;
    };
    validate_job_spec(spec, "spec", &mut errs);
    validate_selector_and_template(
        spec.selector.as_ref(),
        Some(&spec.template),
        TemplateRules {
            base: "spec",
            kind: None,
            restart_policies: &["OnFailure", "Never"],
            no_deadline: None,
        },
        &mut errs,
    );
    let manual = spec.manual_selector == Some(true);
    let uid = new.metadata.uid.as_deref().unwrap_or_default();
    if !manual
        && old.is_none()
        && !uid.is_empty()
        && let Some(selector) = &spec.selector
    {
        let expected = BTreeMap::from([(CONTROLLER_UID_LABEL.to_string(), uid.to_string())]);
        if !meta::selector_matches(selector, &expected) {
            errs.push(invalid(
                "spec.selector",
                meta::show_selector(Some(selector)),
                "`selector` not auto-generated",
            ));
        }
    }
    if let Some(old_spec) = old.and_then(|o| o.spec.as_ref()) {
        validate_job_update(
            spec,
            old_spec,
            old.is_some_and(|o| {
                o.status
                    .as_ref()
                    .and_then(|s| s.start_time.as_ref())
                    .is_none()
            }),
            &mut errs,
        );
    }
    errs
}

fn raw(value: &impl serde::Serialize) -> Shown {
    Shown::Raw(serde_json::to_string(value).unwrap_or_default())
}

fn validate_job_update(
    spec: &JobSpec,
    old: &JobSpec,
    never_started: bool,
    errs: &mut Vec<FieldError>,
) {
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    if spec.completions != old.completions {
        if !indexed {
            errs.push(invalid(
                "spec.completions",
                raw(&spec.completions),
                FIELD_IMMUTABLE,
            ));
        } else if spec.completions.is_some() && spec.completions != spec.parallelism {
            errs.push(invalid(
                "spec.completions",
                raw(&spec.completions),
                "can only be modified in tandem with spec.parallelism",
            ));
        }
    }
    if spec.selector != old.selector {
        errs.push(invalid(
            "spec.selector",
            meta::show_selector(spec.selector.as_ref()),
            FIELD_IMMUTABLE,
        ));
    }
    // A suspended Job that never ran may change where its pods go.
    let mut old_template = old.template.clone();
    if spec.suspend == Some(true) && never_started {
        let new_spec = spec.template.spec.clone().unwrap_or_default();
        let t = old_template.spec.get_or_insert_with(Default::default);
        t.node_selector = new_spec.node_selector;
        t.tolerations = new_spec.tolerations;
        t.scheduling_gates = new_spec.scheduling_gates;
        let node_affinity = new_spec.affinity.and_then(|a| a.node_affinity);
        t.affinity
            .get_or_insert_with(Default::default)
            .node_affinity = node_affinity;
        if t.affinity
            .as_ref()
            .is_some_and(|a| a == &Default::default())
            && spec
                .template
                .spec
                .as_ref()
                .is_some_and(|s| s.affinity.is_none())
        {
            t.affinity = None;
        }
        let m = old_template.metadata.get_or_insert_with(Default::default);
        let new_meta = spec.template.metadata.clone().unwrap_or_default();
        m.labels = new_meta.labels;
        m.annotations = new_meta.annotations;
    }
    if spec.template != old_template {
        errs.push(invalid(
            "spec.template",
            Shown::Raw("core.PodTemplateSpec{...}".to_string()),
            FIELD_IMMUTABLE,
        ));
    }
    for (name, changed, shown) in [
        (
            "completionMode",
            spec.completion_mode != old.completion_mode,
            raw(&spec.completion_mode),
        ),
        (
            "podFailurePolicy",
            spec.pod_failure_policy != old.pod_failure_policy,
            raw(&spec.pod_failure_policy),
        ),
        (
            "backoffLimitPerIndex",
            spec.backoff_limit_per_index != old.backoff_limit_per_index,
            raw(&spec.backoff_limit_per_index),
        ),
        (
            "successPolicy",
            spec.success_policy != old.success_policy,
            raw(&spec.success_policy),
        ),
        (
            "managedBy",
            spec.managed_by != old.managed_by,
            raw(&spec.managed_by),
        ),
    ] {
        if changed {
            errs.push(invalid(&format!("spec.{name}"), shown, FIELD_IMMUTABLE));
        }
    }
}

fn condition_true(object: &Value, kind: &str) -> bool {
    arr(object, "/status/conditions")
        .iter()
        .find(|c| s(c, "/type") == kind)
        .is_some_and(|c| s(c, "/status") == "True")
}

/// The STATUS cell of a Job (upstream 1.33's order of precedence).
fn job_status(object: &Value) -> &'static str {
    if condition_true(object, "Complete") {
        "Complete"
    } else if condition_true(object, "Failed") {
        "Failed"
    } else if object.pointer("/metadata/deletionTimestamp").is_some() {
        "Terminating"
    } else if condition_true(object, "Suspended") {
        "Suspended"
    } else if condition_true(object, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    }
}

impl KindStrategy for JobStrategy {
    fn default(&self, object: &mut Value) {
        with_typed(object, default_job);
    }

    fn prepare_for_create(&self, object: &mut Value) {
        with_typed(object, prepare_job);
    }

    fn validate(&self, object: &Value, old: Option<&Value>) -> Vec<Cause> {
        validate_typed(object, old, validate_job)
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            name_column(),
            col("Status", "string", "The job's state."),
            col(
                "Completions",
                "string",
                "Succeeded pods of the completions wanted.",
            ),
            col("Duration", "string", "How long the job has run or ran."),
            age_column(),
            CONTAINERS,
            IMAGES,
            SELECTOR,
        ]
    }

    fn row(&self, object: &Value, now: i64) -> Vec<Value> {
        let succeeded = int(object, "/status/succeeded");
        let completions = match object.pointer("/spec/completions").and_then(Value::as_i64) {
            Some(c) => format!("{succeeded}/{c}"),
            None => match int(object, "/spec/parallelism") {
                p if p > 1 => format!("{succeeded}/1 of {p}"),
                _ => format!("{succeeded}/1"),
            },
        };
        let start = seconds(s(object, "/status/startTime"));
        let end = seconds(s(object, "/status/completionTime"));
        let duration = match (start, end) {
            (None, _) => String::new(),
            (Some(st), None) => human_duration(now - st),
            (Some(st), Some(e)) => human_duration(e - st),
        };
        let (containers, images) = containers_and_images(&object["spec"]["template"]["spec"]);
        vec![
            json!(name_of(object)),
            json!(job_status(object)),
            json!(completions),
            json!(duration),
            json!(since(s(object, "/metadata/creationTimestamp"), now)),
            containers,
            images,
            json!(format_selector(object.pointer("/spec/selector"))),
        ]
    }

    fn field(&self, object: &Value, label: &str) -> Option<String> {
        (label == "status.successful").then(|| int(object, "/status/succeeded").to_string())
    }
}

// ---- CronJob ----

#[derive(Debug, Default, Clone, Copy)]
pub struct CronJobStrategy;

/// Upstream's `SetDefaults_CronJob` and the job template's pod spec defaults (the job
/// template's own spec is not defaulted, as upstream).
pub fn default_cron_job(cj: &mut CronJob) {
    let spec = cj.spec.get_or_insert_with(Default::default);
    if spec
        .concurrency_policy
        .as_deref()
        .unwrap_or_default()
        .is_empty()
    {
        spec.concurrency_policy = Some("Allow".to_string());
    }
    spec.suspend.get_or_insert(false);
    spec.successful_jobs_history_limit.get_or_insert(3);
    spec.failed_jobs_history_limit.get_or_insert(1);
    if let Some(pod_spec) = spec
        .job_template
        .spec
        .as_mut()
        .and_then(|j| j.template.spec.as_mut())
    {
        pod::default_pod_spec(pod_spec, DefaultSet::Upstream);
    }
}

fn validate_cron_job(new: &CronJob, old: Option<&CronJob>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = new.metadata.name.as_deref().unwrap_or_default();
    if old.is_none() && name.len() > 52 {
        errs.push(invalid(
            "metadata.name",
            name,
            "must be no more than 52 characters",
        ));
    }
    let Some(spec) = &new.spec else {
        errs.push(required("spec", ""));
        return errs;
    };
    let old_spec = old.and_then(|o| o.spec.as_ref());
    if spec.schedule.is_empty() {
        errs.push(required("spec.schedule", ""));
    } else {
        if let Some(problem) = schedule_problem(&spec.schedule) {
            errs.push(invalid("spec.schedule", spec.schedule.as_str(), &problem));
        }
        let allow_tz = old_spec.is_some_and(|o| o.schedule.contains("TZ"));
        if spec.schedule.contains("TZ") {
            if !allow_tz {
                errs.push(invalid(
                    "spec.schedule",
                    spec.schedule.as_str(),
                    "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
                ));
            } else if spec.time_zone.is_some() {
                errs.push(invalid(
                    "spec.schedule",
                    spec.schedule.as_str(),
                    "cannot use both timeZone field and TZ or CRON_TZ in schedule",
                ));
            }
        }
    }
    check_non_negative(
        "spec.startingDeadlineSeconds",
        spec.starting_deadline_seconds,
        &mut errs,
    );
    if old_spec.is_none_or(|o| o.time_zone != spec.time_zone)
        && let Some(zone) = spec.time_zone.as_deref()
        && let Some(problem) = time_zone_problem(zone)
    {
        errs.push(invalid("spec.timeZone", zone, &problem));
    }
    match spec.concurrency_policy.as_deref().unwrap_or_default() {
        "Allow" | "Forbid" | "Replace" => {}
        "" => errs.push(required("spec.concurrencyPolicy", "")),
        other => errs.push(not_supported(
            "spec.concurrencyPolicy",
            other,
            &["Allow", "Forbid", "Replace"],
        )),
    }
    for (name, value) in [
        (
            "successfulJobsHistoryLimit",
            spec.successful_jobs_history_limit,
        ),
        ("failedJobsHistoryLimit", spec.failed_jobs_history_limit),
    ] {
        check_non_negative(&format!("spec.{name}"), value.map(i64::from), &mut errs);
    }
    let base = "spec.jobTemplate.spec";
    match &spec.job_template.spec {
        None => errs.push(required(&format!("{base}.template.spec.containers"), "")),
        Some(job_spec) => {
            validate_job_spec(job_spec, base, &mut errs);
            validate_selector_and_template(
                Some(&LabelSelector::default()),
                Some(&job_spec.template),
                TemplateRules {
                    base,
                    kind: None,
                    restart_policies: &["OnFailure", "Never"],
                    no_deadline: None,
                },
                &mut errs,
            );
            if let Some(selector) = &job_spec.selector {
                errs.push(invalid(
                    &format!("{base}.selector"),
                    meta::show_selector(Some(selector)),
                    "`selector` will be auto-generated",
                ));
            }
            if job_spec.manual_selector == Some(true) {
                errs.push(not_supported(
                    &format!("{base}.manualSelector"),
                    Shown::Raw("true".to_string()),
                    &["nil", "false"],
                ));
            }
        }
    }
    errs
}

impl KindStrategy for CronJobStrategy {
    fn default(&self, object: &mut Value) {
        with_typed(object, default_cron_job);
    }

    fn validate(&self, object: &Value, old: Option<&Value>) -> Vec<Cause> {
        validate_typed(object, old, validate_cron_job)
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            name_column(),
            col("Schedule", "string", "The cron schedule."),
            col("Timezone", "string", "The time zone of the schedule."),
            col("Suspend", "boolean", "Whether new runs are suspended."),
            col("Active", "integer", "Jobs running now."),
            col(
                "Last Schedule",
                "string",
                "How long ago a job was last scheduled.",
            ),
            age_column(),
            CONTAINERS,
            IMAGES,
            SELECTOR,
        ]
    }

    fn row(&self, object: &Value, now: i64) -> Vec<Value> {
        let last = match s(object, "/status/lastScheduleTime") {
            "" => "<none>".to_string(),
            t => since(t, now),
        };
        let zone = match s(object, "/spec/timeZone") {
            "" if object.pointer("/spec/timeZone").is_none() => "<none>",
            z => z,
        };
        let (containers, images) =
            containers_and_images(&object["spec"]["jobTemplate"]["spec"]["template"]["spec"]);
        vec![
            json!(name_of(object)),
            json!(s(object, "/spec/schedule")),
            json!(zone),
            json!(bool_cell(super::util::flag(object, "/spec/suspend"))),
            json!(arr(object, "/status/active").len()),
            json!(last),
            json!(since(s(object, "/metadata/creationTimestamp"), now)),
            containers,
            images,
            json!(format_selector(
                object.pointer("/spec/jobTemplate/spec/selector")
            )),
        ]
    }
}
