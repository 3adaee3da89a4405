//! The Priority admission plugin end to end through real kubectl: the system classes served
//! from start-up, a pod's priority and preemption policy from its PriorityClass, the refusals
//! of unknown classes and of a priority that disagrees with the class, the `globalDefault`
//! class for pods without one, and at most one default class.

mod support;

use serde_json::json;
use support::TestApiServer;

/// `kubectl create -f -` of a pod in `default` with `spec` (plus one container).
async fn create_pod(
    api: &TestApiServer,
    name: &str,
    spec: serde_json::Value,
) -> std::process::Output {
    let mut spec = spec;
    spec["containers"] = json!([{"name": "c", "image": "registry.k8s.io/pause:3.10"}]);
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"}, "spec": spec});
    api.kubectl_stdin(&["create", "-f", "-"], Some(&pod.to_string()))
        .await
}

async fn create_pod_ok(api: &TestApiServer, name: &str, spec: serde_json::Value) {
    let out = create_pod(api, name, spec).await;
    assert!(
        out.status.success(),
        "create {name}: {}",
        support::stderr(&out)
    );
}

/// `.spec.priorityClassName`, `.spec.priority` and `.spec.preemptionPolicy` of a pod.
async fn priority_of(api: &TestApiServer, name: &str) -> String {
    api.kubectl_ok(&[
        "get",
        "pod",
        name,
        "-o",
        "jsonpath={.spec.priorityClassName}/{.spec.priority}/{.spec.preemptionPolicy}",
    ])
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_get_the_priority_of_their_class() {
    let api = TestApiServer::start().await;

    let classes = api
        .kubectl_ok(&["get", "priorityclass", "--no-headers"])
        .await;
    let rows: Vec<Vec<&str>> = classes
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{classes}");
    assert_eq!(
        rows[0][..3],
        ["system-cluster-critical", "2000000000", "false"]
    );
    assert_eq!(
        rows[1][..3],
        ["system-node-critical", "2000001000", "false"]
    );
    assert_eq!(rows[1][4], "PreemptLowerPriority");
    let description = api
        .kubectl_ok(&[
            "get",
            "priorityclass",
            "system-node-critical",
            "-o",
            "jsonpath={.description}",
        ])
        .await;
    assert_eq!(
        description,
        "Used for system critical pods that must not be moved from their current node."
    );
    let refused = api
        .kubectl(&["delete", "priorityclass", "system-node-critical"])
        .await;
    assert!(!refused.status.success());
    assert!(
        support::stderr(&refused).contains(
            "priorityclasses.scheduling.k8s.io \"system-node-critical\" is forbidden: this is a system priority class and cannot be deleted"
        ),
        "{}",
        support::stderr(&refused)
    );
    api.kubectl_ok(&["get", "priorityclass", "system-node-critical"])
        .await;

    api.kubectl_ok(&["create", "priorityclass", "high", "--value=1000"])
        .await;
    api.kubectl_ok(&[
        "create",
        "priorityclass",
        "polite",
        "--value=10",
        "--preemption-policy=Never",
    ])
    .await;

    create_pod_ok(&api, "plain", json!({})).await;
    assert_eq!(priority_of(&api, "plain").await, "/0/PreemptLowerPriority");
    create_pod_ok(&api, "important", json!({"priorityClassName": "high"})).await;
    assert_eq!(
        priority_of(&api, "important").await,
        "high/1000/PreemptLowerPriority"
    );
    create_pod_ok(&api, "waits", json!({"priorityClassName": "polite"})).await;
    assert_eq!(priority_of(&api, "waits").await, "polite/10/Never");
    create_pod_ok(
        &api,
        "agrees",
        json!({"priorityClassName": "high", "priority": 1000}),
    )
    .await;
    create_pod_ok(
        &api,
        "critical",
        json!({"priorityClassName": "system-node-critical"}),
    )
    .await;
    assert_eq!(
        priority_of(&api, "critical").await,
        "system-node-critical/2000001000/PreemptLowerPriority"
    );

    let cases = [
        (
            "unknown",
            json!({"priorityClassName": "foo"}),
            "pods \"unknown\" is forbidden: no PriorityClass with name foo was found",
        ),
        (
            "disagrees",
            json!({"priorityClassName": "high", "priority": 5}),
            "pods \"disagrees\" is forbidden: the integer value of priority (5) must not be \
             provided in pod spec; priority admission controller computed 1000 from the given \
             PriorityClass name",
        ),
        (
            "classless",
            json!({"priority": 7}),
            "pods \"classless\" is forbidden: the integer value of priority (7) must not be \
             provided in pod spec; priority admission controller computed 0 from the given \
             PriorityClass name",
        ),
        (
            "impolite",
            json!({"priorityClassName": "polite", "preemptionPolicy": "PreemptLowerPriority"}),
            "pods \"impolite\" is forbidden: the string value of PreemptionPolicy \
             (PreemptLowerPriority) must not be provided in pod spec; priority admission \
             controller computed Never from the given PriorityClass name",
        ),
    ];
    for (name, spec, message) in cases {
        let out = create_pod(&api, name, spec).await;
        assert!(!out.status.success(), "{name} was created");
        let stderr = support::stderr(&out);
        assert!(
            stderr.starts_with("Error from server (Forbidden): ") && stderr.contains(message),
            "{name}: {stderr}"
        );
    }

    // A generated name is shown by its prefix, as upstream.
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "gen-", "namespace": "default"},
        "spec": {"priorityClassName": "foo",
                 "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}});
    let out = api
        .kubectl_stdin(&["create", "-f", "-"], Some(&pod.to_string()))
        .await;
    assert!(
        support::stderr(&out)
            .contains("pods \"gen-\" is forbidden: no PriorityClass with name foo was found"),
        "{}",
        support::stderr(&out)
    );

    // An update that omits the priority keeps it.
    api.kubectl_ok(&["label", "pod", "important", "tier=front"])
        .await;
    let mut replaced: serde_json::Value = serde_json::from_str(
        &api.kubectl_ok(&["get", "pod", "important", "-o", "json"])
            .await,
    )
    .expect("pod json");
    if let Some(spec) = replaced["spec"].as_object_mut() {
        spec.remove("priority");
        spec.remove("preemptionPolicy");
    }
    let out = api
        .kubectl_stdin(&["replace", "-f", "-"], Some(&replaced.to_string()))
        .await;
    assert!(out.status.success(), "replace: {}", support::stderr(&out));
    assert_eq!(
        priority_of(&api, "important").await,
        "high/1000/PreemptLowerPriority"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_default_class_applies_to_pods_without_one() {
    let api = TestApiServer::start().await;
    api.kubectl_ok(&[
        "create",
        "priorityclass",
        "dflt",
        "--value=7",
        "--global-default",
    ])
    .await;
    api.kubectl_ok(&["create", "priorityclass", "other", "--value=8"])
        .await;

    create_pod_ok(&api, "defaulted", json!({})).await;
    assert_eq!(
        priority_of(&api, "defaulted").await,
        "dflt/7/PreemptLowerPriority"
    );
    create_pod_ok(&api, "named", json!({"priorityClassName": "other"})).await;
    assert_eq!(
        priority_of(&api, "named").await,
        "other/8/PreemptLowerPriority"
    );

    let refused = "is forbidden: PriorityClass dflt is already marked as default. Only one \
                   default can exist";
    let out = api
        .kubectl(&[
            "create",
            "priorityclass",
            "second",
            "--value=9",
            "--global-default",
        ])
        .await;
    assert!(
        support::stderr(&out).contains(&format!(
            "priorityclasses.scheduling.k8s.io \"second\" {refused}"
        )),
        "{}",
        support::stderr(&out)
    );
    let out = api
        .kubectl(&[
            "patch",
            "priorityclass",
            "other",
            "--type=merge",
            "-p",
            r#"{"globalDefault": true}"#,
        ])
        .await;
    assert!(
        support::stderr(&out).contains(&format!(
            "priorityclasses.scheduling.k8s.io \"other\" {refused}"
        )),
        "{}",
        support::stderr(&out)
    );
    // The default itself may be updated; once it is no longer the default, another may be.
    api.kubectl_ok(&[
        "patch",
        "priorityclass",
        "dflt",
        "--type=merge",
        "-p",
        r#"{"description": "the default"}"#,
    ])
    .await;
    api.kubectl_ok(&[
        "patch",
        "priorityclass",
        "dflt",
        "--type=merge",
        "-p",
        r#"{"globalDefault": false}"#,
    ])
    .await;
    api.kubectl_ok(&[
        "patch",
        "priorityclass",
        "other",
        "--type=merge",
        "-p",
        r#"{"globalDefault": true}"#,
    ])
    .await;
    create_pod_ok(&api, "later", json!({})).await;
    assert_eq!(
        priority_of(&api, "later").await,
        "other/8/PreemptLowerPriority"
    );
}
