use super::*;
use serde_json::{Value, json};

const UID: &str = "cj-uid";

fn ts(text: &str) -> Timestamp {
    text.parse().expect("timestamp")
}

/// A CronJob created 2024-05-01T11:58:00Z; `spec` and `status` merge over the defaults.
fn cronjob(spec: &Value, status: &Value) -> CronJob {
    let mut body = json!({
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "backup", "namespace": "ns", "uid": UID, "resourceVersion": "4",
            "creationTimestamp": "2024-05-01T11:58:00Z"},
        "spec": {
            "schedule": "*/5 * * * *", "concurrencyPolicy": "Allow",
            "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 1,
            "jobTemplate": {
                "metadata": {"labels": {"app": "backup"}, "annotations": {"team": "ops"}},
                "spec": {"template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox"}]}}}
            }
        },
        "status": status.clone(),
    });
    if let (Some(base), Some(extra)) = (body["spec"].as_object_mut(), spec.as_object()) {
        for (k, v) in extra {
            base.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(body).expect("cronjob")
}

/// A Job of the CronJob: `None` running, else `Complete`/`Failed` at `finished`.
fn child(name: &str, state: Option<&str>, started: &str) -> Job {
    let conditions = match state {
        Some(type_) => json!([{"type": type_, "status": "True", "lastTransitionTime": started}]),
        None => json!([]),
    };
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"),
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "backup", "uid": UID, "controller": true}]},
        "status": {"startTime": started, "conditions": conditions,
            "completionTime": if state == Some("Complete") { json!(started) } else { Value::Null }},
    }))
    .expect("job")
}

fn active_ref(name: &str, uid: Option<&str>) -> Value {
    json!({"apiVersion": "batch/v1", "kind": "Job", "name": name, "namespace": "ns", "uid": uid})
}

/// What a plan did, in a comparable shape.
#[derive(Debug, PartialEq, Default)]
struct Outcome {
    created: Vec<String>,
    deleted: Vec<String>,
    events: Vec<String>,
    active: Vec<String>,
    last_schedule: Option<String>,
    requeue_ms: Option<u128>,
}

fn outcome(cj: &CronJob, plan: &Plan) -> Outcome {
    let mut out = Outcome {
        requeue_ms: plan.requeue_after.map(|d| d.as_millis()),
        ..Outcome::default()
    };
    let mut status = cj.status.clone().unwrap_or_default();
    for action in &plan.actions {
        match action {
            Action::Create { target, .. } => out.created.push(target.name.clone()),
            Action::Delete {
                target,
                propagation,
                ..
            } => {
                assert_eq!(*propagation, Some(Propagation::Background));
                out.deleted.push(target.name.clone());
            }
            Action::Event { reason, .. } => out.events.push(reason.clone()),
            Action::UpdateStatus { body, .. } => {
                status = serde_json::from_value(body["status"].clone()).expect("status");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    out.active = status
        .active
        .iter()
        .flatten()
        .filter_map(|r| r.name.clone())
        .collect();
    out.last_schedule = status.last_schedule_time.map(|Time(t)| t.to_string());
    out
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// (name, spec overrides, status, jobs, now, expected)
type Row = (&'static str, Value, Value, Vec<Job>, &'static str, Outcome);

#[test]
fn cronjob_plan_table() {
    let at_noon = Some("2024-05-01T12:00:00Z".to_string());
    let table: Vec<Row> = vec![
        (
            "first due time starts a job",
            json!({}),
            json!({}),
            vec![],
            "2024-05-01T12:00:30Z",
            Outcome {
                created: strings(&["backup-28576080"]),
                events: strings(&["SuccessfulCreate"]),
                active: strings(&["backup-28576080"]),
                last_schedule: at_noon.clone(),
                requeue_ms: Some(270_100),
                ..Outcome::default()
            },
        ),
        (
            "nothing due yet",
            json!({}),
            json!({}),
            vec![],
            "2024-05-01T11:59:00Z",
            Outcome {
                requeue_ms: Some(60_100),
                ..Outcome::default()
            },
        ),
        (
            "already scheduled",
            json!({}),
            json!({"lastScheduleTime": "2024-05-01T12:00:00Z"}),
            vec![],
            "2024-05-01T12:00:30Z",
            Outcome {
                last_schedule: at_noon.clone(),
                requeue_ms: Some(270_100),
                ..Outcome::default()
            },
        ),
        (
            "suspended",
            json!({"suspend": true}),
            json!({}),
            vec![],
            "2024-05-01T12:00:30Z",
            Outcome::default(),
        ),
        (
            "forbid skips while one runs",
            json!({"concurrencyPolicy": "Forbid"}),
            json!({"lastScheduleTime": "2024-05-01T11:55:00Z", "active": [active_ref("backup-28576075", Some("uid-backup-28576075"))]}),
            vec![child("backup-28576075", None, "2024-05-01T11:55:00Z")],
            "2024-05-01T12:00:30Z",
            Outcome {
                events: strings(&["JobAlreadyActive"]),
                active: strings(&["backup-28576075"]),
                last_schedule: Some("2024-05-01T11:55:00Z".into()),
                requeue_ms: Some(270_100),
                ..Outcome::default()
            },
        ),
        (
            "replace deletes the running one",
            json!({"concurrencyPolicy": "Replace"}),
            json!({"lastScheduleTime": "2024-05-01T11:55:00Z", "active": [active_ref("backup-28576075", Some("uid-backup-28576075"))]}),
            vec![child("backup-28576075", None, "2024-05-01T11:55:00Z")],
            "2024-05-01T12:00:30Z",
            Outcome {
                created: strings(&["backup-28576080"]),
                deleted: strings(&["backup-28576075"]),
                events: strings(&["SuccessfulDelete", "SuccessfulCreate"]),
                active: strings(&["backup-28576080"]),
                last_schedule: at_noon.clone(),
                requeue_ms: Some(270_100),
            },
        ),
        (
            "allow runs them side by side",
            json!({}),
            json!({"lastScheduleTime": "2024-05-01T11:55:00Z", "active": [active_ref("backup-28576075", Some("uid-backup-28576075"))]}),
            vec![child("backup-28576075", None, "2024-05-01T11:55:00Z")],
            "2024-05-01T12:00:30Z",
            Outcome {
                created: strings(&["backup-28576080"]),
                events: strings(&["SuccessfulCreate"]),
                active: strings(&["backup-28576075", "backup-28576080"]),
                last_schedule: at_noon.clone(),
                requeue_ms: Some(270_100),
                ..Outcome::default()
            },
        ),
        (
            "within the starting deadline",
            json!({"startingDeadlineSeconds": 10}),
            json!({"lastScheduleTime": "2024-05-01T11:55:00Z"}),
            vec![],
            "2024-05-01T12:00:05Z",
            Outcome {
                created: strings(&["backup-28576080"]),
                events: strings(&["SuccessfulCreate"]),
                active: strings(&["backup-28576080"]),
                last_schedule: at_noon.clone(),
                requeue_ms: Some(295_100),
                ..Outcome::default()
            },
        ),
        (
            "past the starting deadline",
            json!({"startingDeadlineSeconds": 10}),
            json!({"lastScheduleTime": "2024-05-01T11:55:00Z"}),
            vec![],
            "2024-05-01T12:00:30Z",
            Outcome {
                last_schedule: Some("2024-05-01T11:55:00Z".into()),
                requeue_ms: Some(270_100),
                ..Outcome::default()
            },
        ),
        (
            "too many missed",
            json!({"schedule": "* * * * *"}),
            json!({"lastScheduleTime": "2024-04-30T00:00:00Z"}),
            vec![],
            "2024-05-01T12:00:30Z",
            Outcome {
                created: strings(&["backup-28576080"]),
                events: strings(&["TooManyMissedTimes", "SuccessfulCreate"]),
                active: strings(&["backup-28576080"]),
                last_schedule: at_noon.clone(),
                requeue_ms: Some(30_100),
                ..Outcome::default()
            },
        ),
        (
            "a completed job leaves the active list",
            json!({}),
            json!({"lastScheduleTime": "2024-05-01T12:00:00Z", "active": [active_ref("backup-28576080", Some("uid-backup-28576080"))]}),
            vec![child(
                "backup-28576080",
                Some("Complete"),
                "2024-05-01T12:00:00Z",
            )],
            "2024-05-01T12:01:00Z",
            Outcome {
                events: strings(&["SawCompletedJob"]),
                last_schedule: at_noon.clone(),
                requeue_ms: Some(240_100),
                ..Outcome::default()
            },
        ),
        (
            "a job just created is kept until seen",
            json!({}),
            json!({"lastScheduleTime": "2024-05-01T12:00:00Z", "active": [active_ref("backup-28576080", None)]}),
            vec![],
            "2024-05-01T12:01:00Z",
            Outcome {
                active: strings(&["backup-28576080"]),
                last_schedule: at_noon.clone(),
                requeue_ms: Some(240_100),
                ..Outcome::default()
            },
        ),
        (
            "a vanished job leaves the active list",
            json!({}),
            json!({"lastScheduleTime": "2024-05-01T12:00:00Z", "active": [active_ref("backup-28576080", Some("uid-gone"))]}),
            vec![],
            "2024-05-01T12:01:00Z",
            Outcome {
                events: strings(&["MissingJob"]),
                last_schedule: at_noon.clone(),
                requeue_ms: Some(240_100),
                ..Outcome::default()
            },
        ),
        (
            "an unknown running job is reported, not adopted",
            json!({}),
            json!({"lastScheduleTime": "2024-05-01T12:00:00Z"}),
            vec![child("manual", None, "2024-05-01T12:00:10Z")],
            "2024-05-01T12:01:00Z",
            Outcome {
                events: strings(&["UnexpectedJob"]),
                last_schedule: at_noon.clone(),
                requeue_ms: Some(240_100),
                ..Outcome::default()
            },
        ),
        (
            "an existing job of the due time counts as the run",
            json!({}),
            json!({"lastScheduleTime": "2024-05-01T11:55:00Z"}),
            vec![child(
                "backup-28576080",
                Some("Failed"),
                "2024-05-01T12:00:00Z",
            )],
            "2024-05-01T12:00:30Z",
            Outcome {
                last_schedule: at_noon.clone(),
                requeue_ms: Some(270_100),
                ..Outcome::default()
            },
        ),
        (
            "unknown time zone",
            json!({"timeZone": "Mars/Olympus"}),
            json!({}),
            vec![],
            "2024-05-01T12:00:30Z",
            Outcome {
                events: strings(&["UnknownTimeZone"]),
                ..Outcome::default()
            },
        ),
        (
            "unparseable schedule",
            json!({"schedule": "every day"}),
            json!({}),
            vec![],
            "2024-05-01T12:00:30Z",
            Outcome {
                events: strings(&["UnparseableSchedule"]),
                ..Outcome::default()
            },
        ),
        (
            "a schedule that never fires",
            json!({"schedule": "0 0 30 2 *"}),
            json!({}),
            vec![],
            "2024-05-01T12:00:30Z",
            Outcome::default(),
        ),
        (
            "a TZ prefix is warned about but honoured",
            json!({"schedule": "TZ=Europe/Berlin 0 14 * * *"}),
            json!({}),
            vec![],
            "2024-05-01T12:00:30Z",
            Outcome {
                created: strings(&["backup-28576080"]),
                events: strings(&["UnsupportedSchedule", "SuccessfulCreate"]),
                active: strings(&["backup-28576080"]),
                last_schedule: at_noon,
                requeue_ms: Some(86_370_100),
                ..Outcome::default()
            },
        ),
    ];
    for (name, spec, status, jobs, now, want) in table {
        let cj = cronjob(&spec, &status);
        let got = outcome(&cj, &plan(&cj, &jobs, ts(now)));
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn history_limits_delete_the_oldest_finished_jobs() {
    let jobs = vec![
        child("ok-1", Some("Complete"), "2024-05-01T10:00:00Z"),
        child("ok-2", Some("Complete"), "2024-05-01T10:05:00Z"),
        child("ok-3", Some("Complete"), "2024-05-01T10:10:00Z"),
        child("ok-4", Some("Complete"), "2024-05-01T10:15:00Z"),
        child("ok-5", Some("Complete"), "2024-05-01T10:20:00Z"),
        child("bad-1", Some("Failed"), "2024-05-01T10:01:00Z"),
        child("bad-2", Some("Failed"), "2024-05-01T10:02:00Z"),
        child("running", None, "2024-05-01T10:03:00Z"),
    ];
    let cj = cronjob(
        &json!({}),
        &json!({"lastScheduleTime": "2024-05-01T12:00:00Z", "active": [active_ref("running", Some("uid-running"))]}),
    );
    let plan = plan(&cj, &jobs, ts("2024-05-01T12:01:00Z"));
    let got = outcome(&cj, &plan);
    assert_eq!(got.deleted, ["ok-1", "ok-2", "bad-1"]);
    assert_eq!(
        got.events,
        ["SuccessfulDelete", "SuccessfulDelete", "SuccessfulDelete"]
    );
    assert_eq!(got.active, ["running"]);
    let status = plan
        .actions
        .iter()
        .find_map(|a| match a {
            Action::UpdateStatus { body, .. } => Some(body["status"].clone()),
            _ => None,
        })
        .expect("lastSuccessfulTime recorded");
    assert_eq!(status["lastSuccessfulTime"], "2024-05-01T10:20:00Z");
}

#[test]
fn created_jobs_come_from_the_template() {
    let table = [
        (None, "2024-05-01T12:00:00Z", "2024-05-01T12:00:00Z"),
        (
            Some("Europe/Berlin"),
            "2024-05-01T12:00:00Z",
            "2024-05-01T14:00:00+02:00",
        ),
        (
            Some("America/New_York"),
            "2024-01-15T14:00:00Z",
            "2024-01-15T09:00:00-05:00",
        ),
    ];
    for (zone_name, scheduled, annotation) in table {
        let cj = cronjob(&json!({"timeZone": zone_name}), &json!({}));
        let zone = zone_name.map_or(TimeZone::UTC, |z| TimeZone::get(z).expect("zone"));
        let job = job_for(&cj, ts(scheduled), &zone);
        let annotations = job.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            annotations
                .get(SCHEDULED_TIMESTAMP_ANNOTATION)
                .map(String::as_str),
            Some(annotation)
        );
        assert_eq!(annotations.get("team").map(String::as_str), Some("ops"));
        assert_eq!(
            job.metadata
                .labels
                .clone()
                .unwrap_or_default()
                .get("app")
                .map(String::as_str),
            Some("backup")
        );
        assert_eq!(job.metadata.namespace.as_deref(), Some("ns"));
        let owner = &job.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("CronJob", UID, Some(true))
        );
        let template = job
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod spec");
        assert_eq!(template.restart_policy.as_deref(), Some("OnFailure"));
    }
    assert_eq!(
        job_name("backup", ts("2024-05-01T12:00:59Z")),
        "backup-28576080"
    );
}

#[test]
fn time_zone_schedules_fire_at_local_times() {
    // 09:00 in Berlin is 08:00Z in winter: the Job for it is created at 08:00:30Z.
    let cj = cronjob(
        &json!({"schedule": "0 9 * * *", "timeZone": "Europe/Berlin"}),
        &json!({"lastScheduleTime": "2024-01-14T08:00:00Z"}),
    );
    let got = outcome(&cj, &plan(&cj, &[], ts("2024-01-15T08:00:30Z")));
    assert_eq!(got.created, ["backup-28421760"]);
    assert_eq!(got.requeue_ms, Some((24 * 3600 - 30) * 1000 + 100));
}
