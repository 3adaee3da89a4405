//! Pods: defaults through the strategy, create preparation, causes, the STATUS/READY/RESTARTS
//! logic on realistic statuses, field selectors.

use serde_json::{Value, json};

use super::*;

fn pod(status: Value) -> Value {
    let mut object = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": meta("web", 3600),
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}], "nodeName": "node-1"},
    });
    object["status"] = status;
    object
}

fn running(name: &str, ready: bool, restarts: i64) -> Value {
    json!({"name": name, "ready": ready, "restartCount": restarts, "started": true,
           "state": {"running": {"startedAt": ago(600)}}})
}

#[test]
fn columns_are_upstreams() {
    assert_eq!(
        column_names("", "Pod"),
        [
            ("Name", 0),
            ("Ready", 0),
            ("Status", 0),
            ("Restarts", 0),
            ("Age", 0),
            ("IP", 1),
            ("Node", 1),
            ("Nominated Node", 1),
            ("Readiness Gates", 1),
        ]
    );
}

#[test]
fn defaults_and_create_preparation() {
    let mut object = defaulted(
        "",
        "Pod",
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "d"},
               "spec": {"containers": [{"name": "a", "image": "busybox", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}}),
    );
    assert_eq!(object["spec"]["restartPolicy"], "Always");
    assert_eq!(object["spec"]["securityContext"], json!({}));
    assert_eq!(object["spec"]["enableServiceLinks"], true);
    assert_eq!(object["spec"]["containers"][0]["imagePullPolicy"], "Always");
    assert_eq!(
        object["spec"]["containers"][0]["resources"]["requests"]["memory"],
        "1Gi"
    );
    strategy_for("", "Pod").prepare_for_create(&mut object);
    assert_eq!(
        object["status"],
        json!({"phase": "Pending", "qosClass": "Guaranteed"})
    );
    // The priority is admission's (rest::priority), not the strategy's.
    assert_eq!(object["spec"].get("priority"), None);

    let mut critical = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"priorityClassName": "system-node-critical", "schedulingGates": [{"name": "x"}],
                 "containers": [{"name": "a", "image": "b"}]}});
    strategy_for("", "Pod").prepare_for_create(&mut critical);
    assert_eq!(critical["status"]["qosClass"], "BestEffort");
    assert_eq!(
        critical["status"]["conditions"][0]["reason"],
        "SchedulingGated"
    );
}

#[test]
fn validation_causes() {
    let base = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "d"},
                      "spec": {"containers": [{"name": "a", "image": "b:1"}]}});
    assert_eq!(causes("", "Pod", base.clone(), None), Vec::<String>::new());
    let mut no_image = base.clone();
    no_image["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("image");
    assert_cause(
        &causes("", "Pod", no_image, None),
        "spec.containers[0].image: Required value [FieldValueRequired]",
    );
    let mut bad_port = base.clone();
    bad_port["spec"]["containers"][0]["ports"] = json!([{"containerPort": 70000}]);
    assert_cause(
        &causes("", "Pod", bad_port, None),
        "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive [FieldValueInvalid]",
    );
    let mut changed = base.clone();
    changed["spec"]["containers"][0]["image"] = json!("b:2");
    assert_eq!(
        causes("", "Pod", changed, Some(base.clone())),
        Vec::<String>::new()
    );
    let mut moved = base.clone();
    moved["spec"]["nodeName"] = json!("elsewhere");
    let update = causes("", "Pod", moved, Some(base));
    assert_cause(
        &update,
        "spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`",
    );
    assert!(update[0].contains("spec.nodeName"), "{update:?}");
    assert!(update[0].ends_with("[FieldValueForbidden]"));
}

#[test]
fn status_cells_for_realistic_pods() {
    let cases: Vec<(&str, Value, [&str; 4])> = vec![
        (
            "running",
            pod(json!({"phase": "Running", "podIPs": [{"ip": "10.244.0.5"}],
                       "conditions": [{"type": "Ready", "status": "True"}],
                       "containerStatuses": [running("app", true, 0)]})),
            ["web", "1/1", "Running", "0"],
        ),
        (
            "creating",
            pod(
                json!({"phase": "Pending", "containerStatuses": [{"name": "app", "ready": false, "restartCount": 0,
                       "state": {"waiting": {"reason": "ContainerCreating"}}}]}),
            ),
            ["web", "0/1", "ContainerCreating", "0"],
        ),
        (
            "crash loop",
            pod(
                json!({"phase": "Running", "containerStatuses": [{"name": "app", "ready": false, "restartCount": 5,
                       "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
                       "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ago(300)}}}]}),
            ),
            ["web", "0/1", "CrashLoopBackOff", "5 (5m ago)"],
        ),
        (
            "completed",
            pod(
                json!({"phase": "Succeeded", "containerStatuses": [{"name": "app", "ready": false, "restartCount": 0,
                       "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}),
            ),
            ["web", "0/1", "Completed", "0"],
        ),
        (
            "signal",
            pod(
                json!({"phase": "Failed", "containerStatuses": [{"name": "app", "restartCount": 0,
                       "state": {"terminated": {"exitCode": 137, "signal": 9}}}]}),
            ),
            ["web", "0/1", "Signal:9", "0"],
        ),
        (
            "terminating",
            {
                let mut p = pod(
                    json!({"phase": "Running", "containerStatuses": [running("app", true, 0)]}),
                );
                p["metadata"]["deletionTimestamp"] = json!(ago(5));
                p
            },
            ["web", "1/1", "Terminating", "0"],
        ),
        (
            "gated",
            pod(
                json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}),
            ),
            ["web", "0/1", "SchedulingGated", "0"],
        ),
    ];
    for (name, object, want) in cases {
        let row = row("", "Pod", &object);
        let got: Vec<&str> = row[..4].iter().map(|c| c.as_str().unwrap()).collect();
        assert_eq!(got, want, "{name}");
        assert_eq!(row[4], "60m", "{name}: age");
    }
}

#[test]
fn init_containers_and_sidecars() {
    let with_inits = |statuses: Value, container_statuses: Value, initialized: bool| {
        let mut p = pod(
            json!({"phase": "Pending", "initContainerStatuses": statuses,
            "containerStatuses": container_statuses,
            "conditions": [{"type": "Initialized", "status": if initialized { "True" } else { "False" }}]}),
        );
        p["spec"]["initContainers"] = json!([
            {"name": "setup", "image": "busybox"},
            {"name": "proxy", "image": "envoy", "restartPolicy": "Always"},
        ]);
        p
    };
    let waiting = |name: &str, reason: &str| json!({"name": name, "restartCount": 0, "state": {"waiting": {"reason": reason}}});
    let done = json!({"name": "setup", "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}});
    let cases: Vec<(&str, Value, [&str; 3])> = vec![
        (
            "first init running",
            with_inits(
                json!([{"name": "setup", "restartCount": 0, "state": {"running": {}}}, waiting("proxy", "PodInitializing")]),
                json!([]),
                false,
            ),
            ["0/2", "Init:0/2", "0"],
        ),
        (
            "init failed",
            with_inits(
                json!([{"name": "setup", "restartCount": 2, "state": {"terminated": {"exitCode": 1, "reason": "Error"}},
                               "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(30)}}}]),
                json!([]),
                false,
            ),
            ["0/2", "Init:Error", "2 (30s ago)"],
        ),
        (
            "init image pull",
            with_inits(json!([waiting("setup", "ErrImagePull")]), json!([]), false),
            ["0/2", "Init:ErrImagePull", "0"],
        ),
        (
            "sidecar started, app running",
            with_inits(
                json!([done, {"name": "proxy", "restartCount": 1, "started": true, "ready": true, "state": {"running": {}},
                               "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(7200)}}}]),
                json!([running("app", true, 0)]),
                true,
            ),
            ["2/2", "Pending", "1 (120m ago)"],
        ),
    ];
    for (name, object, want) in cases {
        let row = row("", "Pod", &object);
        let got: Vec<&str> = row[1..4].iter().map(|c| c.as_str().unwrap()).collect();
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn wide_cells_conditions_and_fields() {
    let mut object = pod(json!({"phase": "Succeeded", "podIPs": [{"ip": "10.1.0.7"}],
        "conditions": [{"type": "example.com/gate", "status": "True"}]}));
    object["spec"]["readinessGates"] =
        json!([{"conditionType": "example.com/gate"}, {"conditionType": "other"}]);
    let r = row("", "Pod", &object);
    assert_eq!(
        r[5..],
        [
            json!("10.1.0.7"),
            json!("node-1"),
            json!("<none>"),
            json!("1/2")
        ]
    );
    let strategy = strategy_for("", "Pod");
    assert_eq!(
        strategy.row_conditions(&object),
        [
            json!({"type": "Completed", "status": "True", "reason": "Succeeded", "message": "The pod has completed successfully."})
        ]
    );
    let fields = [
        ("spec.nodeName", Some("node-1")),
        ("spec.host", Some("node-1")),
        ("status.phase", Some("Succeeded")),
        ("status.podIP", Some("10.1.0.7")),
        ("spec.hostNetwork", Some("false")),
        ("spec.restartPolicy", Some("")),
        ("status.nominatedNodeName", Some("")),
        ("spec.bogus", None),
    ];
    for (label, want) in fields {
        assert_eq!(strategy.field(&object, label).as_deref(), want, "{label}");
    }
}
