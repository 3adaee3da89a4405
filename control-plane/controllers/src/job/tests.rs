use super::pods::*;
use super::*;
use serde_json::{Value, json};

const UID: &str = "job-uid";

fn ts(text: &str) -> Timestamp {
    text.parse().expect("timestamp")
}

fn now() -> Timestamp {
    ts("2024-05-01T12:00:00Z")
}

fn secs(n: i64) -> Timestamp {
    now()
        .checked_add(SignedDuration::from_secs(n))
        .expect("time")
}

/// A Job as the apiserver stores it; `spec` and `status` are merged over the defaults.
#[allow(clippy::needless_pass_by_value)] // tables build their values inline
fn job(spec: Value, status: Value) -> Job {
    job_from(&spec, &status)
}

fn job_from(spec: &Value, status: &Value) -> Job {
    let mut body = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "pi", "namespace": "ns", "uid": UID, "resourceVersion": "7"},
        "spec": {
            "completions": 1, "parallelism": 1, "backoffLimit": 6,
            "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": UID}},
            "template": {
                "metadata": {"labels": {"app": "pi", "batch.kubernetes.io/controller-uid": UID}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "perl"}]}
            }
        },
        "status": status.clone(),
    });
    if let (Some(base), Some(extra)) = (body["spec"].as_object_mut(), spec.as_object()) {
        for (k, v) in extra {
            base.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(body).expect("job")
}

/// A pod of the Job: `name`, phase, ready, tracking finalizer, completion index.
fn pod(name: &str, phase: &str, ready: bool, finalizer: bool, index: Option<i32>) -> Pod {
    let mut body = json!({
        "metadata": {
            "name": name, "namespace": "ns", "uid": format!("uid-{name}"), "resourceVersion": "3",
            "creationTimestamp": "2024-05-01T11:00:00Z",
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "pi", "uid": UID, "controller": true}],
            "finalizers": if finalizer { json!([TRACKING_FINALIZER]) } else { json!([]) },
        },
        "spec": {"containers": [{"name": "c"}], "nodeName": "n1"},
        "status": {"phase": phase, "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"},
            "lastTransitionTime": "2024-05-01T11:00:00Z"}]},
    });
    if let Some(i) = index {
        body["metadata"]["annotations"] = json!({COMPLETION_INDEX: i.to_string()});
    }
    serde_json::from_value(body).expect("pod")
}

fn creates(plan: &Plan) -> Vec<Pod> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            Action::Create { body, .. } => Some(serde_json::from_value(body.clone()).expect("pod")),
            _ => None,
        })
        .collect()
}

fn deletes(plan: &Plan) -> Vec<String> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            Action::Delete {
                target,
                propagation,
                ..
            } => Some(format!("{}/{}:{:?}", target.kind, target.name, propagation)),
            _ => None,
        })
        .collect()
}

fn finalizer_removals(plan: &Plan) -> Vec<String> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            Action::Patch { target, patch, .. } => {
                assert_eq!(patch["metadata"]["finalizers"], json!([]), "{patch}");
                Some(target.name.clone())
            }
            _ => None,
        })
        .collect()
}

fn status(plan: &Plan) -> Option<JobStatus> {
    plan.actions.iter().find_map(|a| match a {
        Action::UpdateStatus { body, .. } => {
            Some(serde_json::from_value(body["status"].clone()).expect("status"))
        }
        _ => None,
    })
}

fn events(plan: &Plan) -> Vec<String> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            Action::Event {
                reason, message, ..
            } => Some(format!("{reason}: {message}")),
            _ => None,
        })
        .collect()
}

fn conditions(status: &JobStatus) -> Vec<String> {
    status
        .conditions
        .iter()
        .flatten()
        .map(|c| {
            format!(
                "{}={} {}",
                c.type_,
                c.status,
                c.reason.as_deref().unwrap_or_default()
            )
        })
        .collect()
}

#[test]
fn new_job_creates_pods_from_the_template() {
    let plan = plan(
        &job(json!({"completions": 3, "parallelism": 2}), json!({})),
        &[],
        now(),
    );
    let pods = creates(&plan);
    assert_eq!(pods.len(), 2);
    let meta = &pods[0].metadata;
    assert_eq!(meta.generate_name.as_deref(), Some("pi-"));
    assert_eq!(meta.namespace.as_deref(), Some("ns"));
    assert_eq!(meta.finalizers, Some(vec![TRACKING_FINALIZER.to_string()]));
    let labels = meta.labels.clone().unwrap_or_default();
    for (key, value) in [
        ("app", "pi"),
        (CONTROLLER_UID_LABEL, UID),
        (JOB_NAME_LABEL, "pi"),
        (LEGACY_CONTROLLER_UID_LABEL, UID),
        (LEGACY_JOB_NAME_LABEL, "pi"),
    ] {
        assert_eq!(labels.get(key).map(String::as_str), Some(value), "{key}");
    }
    let owner = &meta.owner_references.as_ref().expect("owner")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("Job", UID, Some(true))
    );
    let status = status(&plan).expect("status");
    assert_eq!(
        (status.active, status.ready, status.succeeded, status.failed),
        (Some(2), Some(0), Some(0), Some(0))
    );
    assert_eq!(status.start_time, Some(Time(now())));
    assert_eq!(
        status.uncounted_terminated_pods,
        Some(UncountedTerminatedPods::default())
    );
}

#[test]
fn indexed_pods_carry_their_index() {
    let spec = json!({"completions": 4, "parallelism": 2, "completionMode": "Indexed"});
    let running = pod("pi-0-x", "Running", true, true, Some(0));
    let done = pod("pi-1-y", "Succeeded", false, true, Some(1));
    let plan = plan(
        &job(spec, json!({"startTime": "2024-05-01T11:00:00Z"})),
        &[running, done],
        now(),
    );
    let pods = creates(&plan);
    assert_eq!(pods.len(), 1, "one slot left beside index 0");
    let pod = &pods[0];
    assert_eq!(pod.metadata.generate_name.as_deref(), Some("pi-2-"));
    let index_of = |m: &Option<std::collections::BTreeMap<String, String>>| {
        m.as_ref().and_then(|m| m.get(COMPLETION_INDEX).cloned())
    };
    assert_eq!(index_of(&pod.metadata.annotations).as_deref(), Some("2"));
    assert_eq!(index_of(&pod.metadata.labels).as_deref(), Some("2"));
    let spec = pod.spec.as_ref().expect("spec");
    assert_eq!(spec.hostname.as_deref(), Some("pi-2"));
    let env = spec.containers[0].env.as_ref().expect("env");
    let field = env[0]
        .value_from
        .as_ref()
        .and_then(|v| v.field_ref.as_ref())
        .expect("fieldRef");
    assert_eq!(env[0].name, COMPLETION_INDEX_ENV);
    assert_eq!(
        field.field_path,
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    );
    let status = status(&plan).expect("status");
    assert_eq!(status.completed_indexes.as_deref(), Some("1"));
}

#[test]
fn indexed_duplicates_and_out_of_range_pods_are_deleted() {
    let spec = json!({"completions": 2, "parallelism": 2, "completionMode": "Indexed"});
    let pods = [
        pod("a", "Running", true, true, Some(0)),
        pod("b", "Pending", false, true, Some(0)),
        pod("c", "Running", true, true, Some(5)),
        pod("d", "Running", true, true, None),
    ];
    let plan = plan(
        &job(spec, json!({"startTime": "2024-05-01T11:00:00Z"})),
        &pods,
        now(),
    );
    let mut deleted = deletes(&plan);
    deleted.sort();
    assert_eq!(deleted, ["Pod/b:None", "Pod/c:None", "Pod/d:None"]);
    assert_eq!(
        creates(&plan).len(),
        0,
        "a plan that deletes creates nothing (index 1 comes next time)"
    );
}

/// (name, status, pods, uncounted succeeded, released pods, succeeded counter, creations)
type TrackingRow = (
    &'static str,
    Value,
    Vec<Pod>,
    Vec<&'static str>,
    Vec<&'static str>,
    i32,
    usize,
);

/// (name, spec, status, pods, conditions, deleted pods, events)
type ConditionRow = (
    &'static str,
    Value,
    Value,
    Vec<Pod>,
    Vec<&'static str>,
    Vec<&'static str>,
    Vec<&'static str>,
);

#[test]
fn finished_pods_are_recorded_released_then_counted() {
    let spec = json!({"completions": 3, "parallelism": 1});
    let started = json!({"startTime": "2024-05-01T11:00:00Z", "succeeded": 0});
    // (status, pods) -> (uncounted succeeded, released pods, succeeded counter, creations)
    let table: Vec<TrackingRow> = vec![
        (
            "a finished pod is recorded first",
            started,
            vec![pod("a", "Succeeded", false, true, None)],
            vec!["uid-a"],
            vec![],
            0,
            1,
        ),
        (
            "a recorded pod loses its finalizer",
            json!({"startTime": "2024-05-01T11:00:00Z", "uncountedTerminatedPods": {"succeeded": ["uid-a"]}}),
            vec![pod("a", "Succeeded", false, true, None)],
            vec!["uid-a"],
            vec!["a"],
            0,
            1,
        ),
        (
            "a released pod is counted",
            json!({"startTime": "2024-05-01T11:00:00Z", "uncountedTerminatedPods": {"succeeded": ["uid-a"]}}),
            vec![pod("a", "Succeeded", false, false, None)],
            vec![],
            vec![],
            1,
            1,
        ),
        (
            "a recorded pod that is gone is counted",
            json!({"startTime": "2024-05-01T11:00:00Z", "succeeded": 1, "uncountedTerminatedPods": {"succeeded": ["uid-a"]}}),
            vec![],
            vec![],
            vec![],
            2,
            1,
        ),
        (
            "a counted pod is not counted again",
            json!({"startTime": "2024-05-01T11:00:00Z", "succeeded": 1}),
            vec![
                pod("a", "Succeeded", false, false, None),
                pod("b", "Running", true, true, None),
            ],
            vec![],
            vec![],
            1,
            0,
        ),
    ];
    for (name, job_status, pods, uncounted, released, succeeded, created) in table {
        let plan = plan(&job(spec.clone(), job_status), &pods, now());
        let status = status(&plan).unwrap_or_default();
        let got_uncounted = status
            .uncounted_terminated_pods
            .and_then(|u| u.succeeded)
            .unwrap_or_default();
        assert_eq!(got_uncounted, uncounted, "{name}");
        assert_eq!(finalizer_removals(&plan), released, "{name}");
        assert_eq!(status.succeeded.unwrap_or(0), succeeded, "{name}");
        assert_eq!(creates(&plan).len(), created, "{name}");
    }
}

#[test]
fn failure_and_completion_conditions() {
    let started = "2024-05-01T11:00:00Z";
    // (name, spec, status, pods) -> (conditions, deleted pods, events)
    let table: Vec<ConditionRow> = vec![
        ("backoff limit exceeded", json!({"backoffLimit": 1, "parallelism": 2, "completions": 5}),
            json!({"startTime": started, "failed": 1}),
            vec![pod("f", "Failed", false, true, None), pod("r", "Running", true, true, None)],
            vec!["FailureTarget=True BackoffLimitExceeded"], vec!["Pod/r:None"],
            vec!["SuccessfulDelete: Deleted pod: r"]),
        ("backoff limit not yet exceeded", json!({"backoffLimit": 2, "completions": 5}),
            json!({"startTime": started, "failed": 1}),
            vec![pod("f", "Failed", false, true, None)], vec![], vec![], vec![]),
        ("restarts count with OnFailure", json!({"backoffLimit": 1, "template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "c"}]}}}),
            json!({"startTime": started}),
            vec![serde_json::from_value(json!({"metadata": {"name": "r", "uid": "uid-r", "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "pi", "uid": UID, "controller": true}]},
                "status": {"phase": "Running", "containerStatuses": [{"name": "c", "image": "", "imageID": "", "ready": false, "restartCount": 2}]}})).expect("pod")],
            vec!["FailureTarget=True BackoffLimitExceeded"], vec!["Pod/r:None"], vec!["SuccessfulDelete: Deleted pod: r"]),
        ("deadline exceeded", json!({"activeDeadlineSeconds": 60}), json!({"startTime": "2024-05-01T11:59:00Z"}),
            vec![pod("r", "Running", true, true, None)],
            vec!["FailureTarget=True DeadlineExceeded"], vec!["Pod/r:None"], vec!["SuccessfulDelete: Deleted pod: r"]),
        ("failure target becomes Failed when nothing is left", json!({}),
            json!({"startTime": started, "failed": 7, "conditions": [{"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]}),
            vec![], vec!["FailureTarget=True BackoffLimitExceeded", "Failed=True BackoffLimitExceeded"], vec![],
            vec!["BackoffLimitExceeded: Job has reached the specified backoff limit"]),
        ("failure target waits for terminating pods", json!({}),
            json!({"startTime": started, "failed": 7, "conditions": [{"type": "FailureTarget", "status": "True", "reason": "DeadlineExceeded", "message": "m"}]}),
            vec![serde_json::from_value(json!({"metadata": {"name": "t", "uid": "uid-t", "deletionTimestamp": "2024-05-01T11:59:00Z", "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "pi", "uid": UID, "controller": true}]},
                "status": {"phase": "Running"}})).expect("pod")],
            vec!["FailureTarget=True DeadlineExceeded"], vec![], vec![]),
        ("completions reached", json!({"completions": 2}), json!({"startTime": started, "succeeded": 2}), vec![],
            vec!["SuccessCriteriaMet=True CompletionsReached", "Complete=True CompletionsReached"], vec![],
            vec!["Completed: Job completed"]),
        ("completions reached waits for uncounted pods", json!({"completions": 2}), json!({"startTime": started, "succeeded": 1}),
            vec![pod("s", "Succeeded", false, true, None)],
            vec!["SuccessCriteriaMet=True CompletionsReached"], vec![], vec![]),
        ("work queue: complete when one succeeded and none runs", json!({"completions": null, "parallelism": 3}),
            json!({"startTime": started, "succeeded": 1}), vec![],
            vec!["SuccessCriteriaMet=True CompletionsReached", "Complete=True CompletionsReached"], vec![],
            vec!["Completed: Job completed"]),
        ("indexed: complete when every index succeeded", json!({"completions": 2, "completionMode": "Indexed"}),
            json!({"startTime": started, "succeeded": 2, "completedIndexes": "0,1"}), vec![],
            vec!["SuccessCriteriaMet=True CompletionsReached", "Complete=True CompletionsReached"], vec![],
            vec!["Completed: Job completed"]),
    ];
    for (name, spec, job_status, pods, want_conditions, want_deleted, want_events) in table {
        let plan = plan(&job(spec, job_status), &pods, now());
        let status = status(&plan).unwrap_or_default();
        assert_eq!(conditions(&status), want_conditions, "{name}");
        assert_eq!(deletes(&plan), want_deleted, "{name}");
        assert_eq!(events(&plan), want_events, "{name}");
        if !want_conditions.is_empty() {
            assert_eq!(
                creates(&plan).len(),
                0,
                "{name}: finishing Jobs create nothing"
            );
        }
        let complete = want_conditions.iter().any(|c| c.starts_with("Complete="));
        assert_eq!(status.completion_time.is_some(), complete, "{name}");
    }
}

#[test]
fn a_failing_job_counts_its_running_pods_as_failed() {
    let running = pod("r", "Running", true, true, None);
    let spec = json!({"activeDeadlineSeconds": 60});
    let first = plan(
        &job(spec.clone(), json!({"startTime": "2024-05-01T11:00:00Z"})),
        std::slice::from_ref(&running),
        now(),
    );
    let recorded = status(&first).expect("status");
    let failed = recorded
        .uncounted_terminated_pods
        .clone()
        .and_then(|u| u.failed);
    assert_eq!(failed, Some(vec!["uid-r".to_string()]));
    assert!(
        finalizer_removals(&first).is_empty(),
        "recorded before released"
    );
    assert_eq!((recorded.active, recorded.terminating), (Some(0), Some(1)));
    let mut terminating = running;
    terminating.metadata.deletion_timestamp = Some(Time(now()));
    let second = plan(
        &job(spec, serde_json::to_value(&recorded).expect("json")),
        &[terminating],
        secs(1),
    );
    assert_eq!(finalizer_removals(&second), ["r"]);
    assert!(deletes(&second).is_empty(), "already being deleted");
    let status = status(&second).unwrap_or(recorded);
    assert!(
        !conditions(&status).iter().any(|c| c.starts_with("Failed=")),
        "Failed waits for the pod to be counted and gone"
    );
}

#[test]
fn a_succeeding_job_lets_terminating_pods_go_uncounted() {
    let mut leftover = pod("t", "Running", false, true, None);
    leftover.metadata.deletion_timestamp = Some(Time(now()));
    let met = json!({"startTime": "2024-05-01T11:00:00Z", "succeeded": 1, "conditions": [
        {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached", "message": "m"}]});
    let plan = plan(&job(json!({}), met), &[leftover], now());
    assert_eq!(finalizer_removals(&plan), ["t"]);
    let status = status(&plan).expect("status");
    assert_eq!(
        conditions(&status),
        ["SuccessCriteriaMet=True CompletionsReached"],
        "Complete waits for the terminating pod"
    );
    assert_eq!((status.succeeded, status.failed), (Some(1), Some(0)));
}

#[test]
fn on_failure_restarts_against_the_backoff_limit() {
    // (backoffLimit, restarts) -> fails
    for (limit, restarts, fails) in [(0, 0, false), (0, 1, true), (2, 1, false), (2, 2, true)] {
        let running: Pod = serde_json::from_value(json!({
            "metadata": {"name": "r", "uid": "uid-r", "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "pi", "uid": UID, "controller": true}]},
            "status": {"phase": "Running", "containerStatuses": [{"name": "c", "image": "", "imageID": "", "ready": true, "restartCount": restarts}]}}))
        .expect("pod");
        let spec = json!({"backoffLimit": limit, "template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "c"}]}}});
        let plan = plan(
            &job(spec, json!({"startTime": "2024-05-01T11:00:00Z"})),
            &[running],
            now(),
        );
        let failing = status(&plan).is_some_and(|s| {
            conditions(&s)
                .iter()
                .any(|c| c.starts_with("FailureTarget=True"))
        });
        assert_eq!(failing, fails, "limit {limit}, restarts {restarts}");
    }
}

#[test]
fn suspend_and_resume() {
    let running = pod("r", "Running", true, true, None);
    let plan_suspend = plan(
        &job(
            json!({"suspend": true}),
            json!({"startTime": "2024-05-01T11:00:00Z"}),
        ),
        std::slice::from_ref(&running),
        now(),
    );
    assert_eq!(deletes(&plan_suspend), ["Pod/r:None"]);
    assert_eq!(
        finalizer_removals(&plan_suspend),
        ["r"],
        "suspension releases its pods uncounted"
    );
    let status_suspended = status(&plan_suspend).expect("status");
    assert_eq!(
        conditions(&status_suspended),
        ["Suspended=True JobSuspended"]
    );
    assert_eq!(
        (status_suspended.active, status_suspended.terminating),
        (Some(0), Some(1))
    );
    assert!(events(&plan_suspend).contains(&"Suspended: Job suspended".to_string()));

    // Still suspended, nothing left: nothing to do.
    let again = plan(
        &job(
            json!({"suspend": true}),
            serde_json::to_value(&status_suspended).expect("json"),
        ),
        &[],
        now(),
    );
    assert!(creates(&again).is_empty() && events(&again).is_empty());

    let resumed = plan(
        &job(
            json!({"suspend": false}),
            serde_json::to_value(&status_suspended).expect("json"),
        ),
        &[],
        secs(30),
    );
    let status_resumed = status(&resumed).expect("status");
    assert_eq!(conditions(&status_resumed), ["Suspended=False JobResumed"]);
    assert_eq!(status_resumed.start_time, Some(Time(secs(30))));
    assert_eq!(creates(&resumed).len(), 1);
    assert_eq!(events(&resumed), ["Resumed: Job resumed"]);
}

#[test]
fn failed_pods_are_replaced_after_a_growing_backoff() {
    let failed_at = |name: &str, at: &str| {
        let mut p = pod(name, "Failed", false, false, None);
        p.status = serde_json::from_value(json!({"phase": "Failed", "containerStatuses": [{
            "name": "c", "image": "", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 1, "finishedAt": at}}}]}))
        .expect("status");
        p
    };
    // (failed pods, want requeue, want creations)
    let table: Vec<(Vec<Pod>, Option<u64>, usize)> = vec![
        (vec![failed_at("a", "2024-05-01T11:59:57Z")], Some(7), 0),
        (vec![failed_at("a", "2024-05-01T11:59:40Z")], None, 1),
        (
            vec![
                failed_at("a", "2024-05-01T11:59:00Z"),
                failed_at("b", "2024-05-01T11:59:55Z"),
            ],
            Some(15),
            0,
        ),
        (
            vec![
                failed_at("a", "2024-05-01T11:50:00Z"),
                failed_at("b", "2024-05-01T11:51:00Z"),
                failed_at("c", "2024-05-01T11:52:00Z"),
                failed_at("d", "2024-05-01T11:59:00Z"),
            ],
            Some(20),
            0,
        ),
    ];
    for (pods, requeue, created) in table {
        let n = pods.len() as i32;
        let plan = plan(
            &job(
                json!({"completions": 1}),
                json!({"startTime": "2024-05-01T11:00:00Z", "failed": n}),
            ),
            &pods,
            now(),
        );
        assert_eq!(
            plan.requeue_after,
            requeue.map(Duration::from_secs),
            "{n} failures"
        );
        assert_eq!(creates(&plan).len(), created, "{n} failures");
    }
}

#[test]
fn parallelism_decrease_deletes_the_least_established_pods() {
    let mut pending = pod("p", "Pending", false, true, None);
    if let Some(spec) = pending.spec.as_mut() {
        spec.node_name = None;
    }
    let pods = [
        pod("ready", "Running", true, true, None),
        pending,
        pod("unready", "Running", false, true, None),
    ];
    let plan = plan(
        &job(
            json!({"completions": 10, "parallelism": 1}),
            json!({"startTime": "2024-05-01T11:00:00Z"}),
        ),
        &pods,
        now(),
    );
    assert_eq!(deletes(&plan), ["Pod/p:None", "Pod/unready:None"]);
    assert_eq!(status(&plan).expect("status").active, Some(1));
}

#[test]
fn finished_jobs_release_pods_and_expire() {
    let finished = |ttl: Value| {
        job(
            json!({"ttlSecondsAfterFinished": ttl}),
            json!({"conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": "2024-05-01T11:59:00Z"}]}),
        )
    };
    let leftover = pod("s", "Succeeded", false, true, None);
    let plan_kept = plan(
        &finished(json!(120)),
        std::slice::from_ref(&leftover),
        now(),
    );
    assert_eq!(finalizer_removals(&plan_kept), ["s"]);
    assert_eq!(plan_kept.requeue_after, Some(Duration::from_secs(60)));
    assert!(deletes(&plan_kept).is_empty());
    let plan_expired = plan(&finished(json!(60)), &[], now());
    assert_eq!(deletes(&plan_expired), ["Job/pi:Some(Foreground)"]);
    let plan_no_ttl = plan(&finished(Value::Null), &[], now());
    assert_eq!(plan_no_ttl, Plan::default());
}

#[test]
fn jobs_managed_elsewhere_are_left_alone() {
    let plan = plan(
        &job(json!({"managedBy": "kueue.x-k8s.io/multikueue"}), json!({})),
        &[],
        now(),
    );
    assert_eq!(plan, Plan::default());
}

#[test]
fn completed_indexes_notation() {
    for (text, formatted) in [
        ("", ""),
        ("0", "0"),
        ("0,1", "0,1"),
        ("0-2", "0-2"),
        ("3,1,2,7-9", "1-3,7-9"),
        ("1,x,4", "1,4"),
    ] {
        assert_eq!(format_indexes(&parse_indexes(text)), formatted, "{text}");
    }
}

/// Plans applied to an in-memory cluster until the Job finishes.
mod simulation;
