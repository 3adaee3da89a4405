//! batch/v1: Jobs (defaults, the generated selector on create, rules, STATUS/COMPLETIONS/
//! DURATION cells, `status.successful`) and CronJobs (defaults, schedule and time zone
//! checks, row).

use serde_json::{Value, json};

use super::*;

fn job() -> Value {
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta("pi", 600),
           "spec": {"template": {"spec": {"restartPolicy": "Never",
                    "containers": [{"name": "pi", "image": "perl:5.34"}]}}}})
}

#[test]
fn job_defaults_and_generated_selector() {
    let mut j = defaulted("batch", "Job", job());
    let spec = &j["spec"];
    assert_eq!(spec["completions"], 1);
    assert_eq!(spec["parallelism"], 1);
    assert_eq!(spec["backoffLimit"], 6);
    assert_eq!(spec["completionMode"], "NonIndexed");
    assert_eq!(spec["suspend"], false);
    assert_eq!(spec["manualSelector"], false);
    assert_eq!(spec["podReplacementPolicy"], "TerminatingOrFailed");
    j["metadata"]["uid"] = json!("8f6c");
    strategy_for("batch", "Job").prepare_for_create(&mut j);
    assert_eq!(
        j["spec"]["selector"],
        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "8f6c"}})
    );
    let labels = json!({"batch.kubernetes.io/controller-uid": "8f6c", "batch.kubernetes.io/job-name": "pi",
                        "controller-uid": "8f6c", "job-name": "pi"});
    assert_eq!(j["spec"]["template"]["metadata"]["labels"], labels);
    assert_eq!(
        j["metadata"]["labels"], labels,
        "the Job takes its template's labels"
    );
    assert_eq!(
        causes("batch", "Job", j.clone(), None),
        Vec::<String>::new()
    );

    let mut foreign = j.clone();
    foreign["metadata"]["uid"] = json!("other");
    assert_cause(
        &causes("batch", "Job", foreign, None),
        "spec.selector: Invalid value: &LabelSelector{MatchLabels:map[string]string{batch.kubernetes.io/controller-uid: 8f6c,},MatchExpressions:[]LabelSelectorRequirement{},}: `selector` not auto-generated",
    );
    let mut per_index = job();
    per_index["spec"]["backoffLimitPerIndex"] = json!(1);
    per_index["spec"]["completionMode"] = json!("Indexed");
    per_index["spec"]["completions"] = json!(3);
    assert_eq!(
        defaulted("batch", "Job", per_index)["spec"]["backoffLimit"],
        i32::MAX
    );
}

#[test]
fn job_rules() {
    let mut always = job();
    always["spec"]["template"]["spec"]
        .as_object_mut()
        .unwrap()
        .remove("restartPolicy");
    assert_cause(
        &causes("batch", "Job", always, None),
        "spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\"",
    );
    assert_cause(
        &causes("batch", "Job", job(), None),
        "spec.selector: Required value",
    );
    let mut indexed = job();
    indexed["spec"]["completionMode"] = json!("Indexed");
    indexed["spec"]["parallelism"] = json!(2);
    assert_cause(
        &causes("batch", "Job", indexed, None),
        "spec.completions: Required value: when completion mode is Indexed",
    );
    let mut created = defaulted("batch", "Job", job());
    created["metadata"]["uid"] = json!("u1");
    strategy_for("batch", "Job").prepare_for_create(&mut created);
    let mut image = created.clone();
    image["spec"]["template"]["spec"]["containers"][0]["image"] = json!("perl:5.36");
    assert_cause(
        &causes("batch", "Job", image, Some(created.clone())),
        "spec.template: Invalid value: core.PodTemplateSpec{...}: field is immutable",
    );
    let mut suspended_old = created.clone();
    suspended_old["spec"]["suspend"] = json!(true);
    let mut placed = suspended_old.clone();
    placed["spec"]["template"]["spec"]["nodeSelector"] = json!({"zone": "a"});
    assert_eq!(
        causes("batch", "Job", placed, Some(suspended_old)),
        Vec::<String>::new()
    );
}

#[test]
fn job_rows() {
    let base = |spec: Value, status: Value| {
        let mut j = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta("pi", 900),
            "spec": {"template": {"spec": {"containers": [{"name": "pi", "image": "perl"}]}},
                     "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u"}}}});
        for (k, v) in spec.as_object().unwrap() {
            j["spec"][k] = v.clone();
        }
        j["status"] = status;
        j
    };
    let cases = [
        (
            base(
                json!({"completions": 1}),
                json!({"succeeded": 1, "startTime": ago(900), "completionTime": ago(870),
                 "conditions": [{"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}]}),
            ),
            ["Complete", "1/1", "30s"],
        ),
        (
            base(json!({"parallelism": 3}), json!({"startTime": ago(120)})),
            ["Running", "0/1 of 3", "2m"],
        ),
        (
            base(
                json!({"completions": 5, "suspend": true}),
                json!({"conditions": [{"type": "Suspended", "status": "True"}]}),
            ),
            ["Suspended", "0/5", ""],
        ),
        (
            base(
                json!({"completions": 2}),
                json!({"failed": 6, "startTime": ago(300), "conditions": [
                {"type": "FailureTarget", "status": "True"}, {"type": "Failed", "status": "True"}]}),
            ),
            ["Failed", "0/2", "5m"],
        ),
    ];
    for (object, want) in cases {
        let r = row("batch", "Job", &object);
        let got: Vec<&str> = r[1..4].iter().map(|c| c.as_str().unwrap()).collect();
        assert_eq!(got, want);
        assert_eq!(r[7], "batch.kubernetes.io/controller-uid=u");
    }
    let done = &cases_field_object();
    assert_eq!(
        strategy_for("batch", "Job")
            .field(done, "status.successful")
            .as_deref(),
        Some("4")
    );
}

fn cases_field_object() -> Value {
    json!({"status": {"succeeded": 4}})
}

fn cron_job() -> Value {
    json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta("backup", 86400),
           "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {"spec": {
               "restartPolicy": "OnFailure", "containers": [{"name": "b", "image": "busybox"}]}}}}}})
}

#[test]
fn cron_job_defaults_rules_and_row() {
    let cj = defaulted("batch", "CronJob", cron_job());
    assert_eq!(cj["spec"]["concurrencyPolicy"], "Allow");
    assert_eq!(cj["spec"]["suspend"], false);
    assert_eq!(cj["spec"]["successfulJobsHistoryLimit"], 3);
    assert_eq!(cj["spec"]["failedJobsHistoryLimit"], 1);
    assert!(
        cj["spec"]["jobTemplate"]["spec"]
            .get("backoffLimit")
            .is_none()
    );
    assert_eq!(
        causes("batch", "CronJob", cron_job(), None),
        Vec::<String>::new()
    );

    let with = |field: &str, value: Value| {
        let mut c = cron_job();
        c["spec"][field] = value;
        c
    };
    let cases = [
        (
            with("schedule", json!("61 * * * *")),
            "spec.schedule: Invalid value: \"61 * * * *\": end of range (61) above maximum (59): 61",
        ),
        (
            with("schedule", json!("TZ=UTC 0 * * * *")),
            "spec.schedule: Invalid value: \"TZ=UTC 0 * * * *\": cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
        ),
        (
            with("timeZone", json!("Mars/Base")),
            "spec.timeZone: Invalid value: \"Mars/Base\": unknown time zone Mars/Base",
        ),
        (
            with("concurrencyPolicy", json!("Sometimes")),
            "spec.concurrencyPolicy: Unsupported value: \"Sometimes\": supported values: \"Allow\", \"Forbid\", \"Replace\"",
        ),
        (
            with("successfulJobsHistoryLimit", json!(-1)),
            "spec.successfulJobsHistoryLimit: Invalid value: -1: must be greater than or equal to 0",
        ),
    ];
    for (object, want) in cases {
        assert_cause(&causes("batch", "CronJob", object, None), want);
    }
    let mut long = cron_job();
    long["metadata"]["name"] = json!("a".repeat(53));
    assert_cause(
        &causes("batch", "CronJob", long, None),
        "metadata.name: Invalid value: \"aaaa",
    );
    let mut never = cron_job();
    never["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
    assert_cause(
        &causes("batch", "CronJob", never, None),
        "spec.jobTemplate.spec.template.spec.restartPolicy: Unsupported value: \"Always\"",
    );

    let mut active = with("timeZone", json!("Europe/Berlin"));
    active["status"] = json!({"active": [{"name": "backup-1"}], "lastScheduleTime": ago(240)});
    let active = defaulted("batch", "CronJob", active);
    assert_eq!(
        row("batch", "CronJob", &active)[..7],
        [
            json!("backup"),
            json!("*/5 * * * *"),
            json!("Europe/Berlin"),
            json!("False"),
            json!(1),
            json!("4m"),
            json!("24h")
        ]
    );
    assert_eq!(
        row("batch", "CronJob", &cron_job())[2..6],
        [json!("<none>"), json!("<unset>"), json!(0), json!("<none>")]
    );
}
