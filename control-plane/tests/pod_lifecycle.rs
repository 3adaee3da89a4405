//! Pod subresources and deletion semantics through the real kubectl and curl: binding,
//! eviction with PodDisruptionBudgets, graceful pod deletion, propagation policies and
//! preconditions, namespace termination, events through both APIs, impersonation, and
//! `kubectl describe`. Objects that stay after a DELETE are deleted with `--wait=false`
//! (kubectl waits for them to disappear by default).

mod support;

use serde_json::{Value, json};
use support::{TestApiServer, stderr, stdout};

/// curl with the admin client certificate: (HTTP status, JSON body).
async fn admin(
    api: &TestApiServer,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let pki = api.dir.path().join("pki");
    let cert = pki.join("admin.crt");
    let key = pki.join("admin.key");
    let url = format!("{}{path}", api.url());
    let data = body.map(Value::to_string);
    let mut args = vec![
        "--cert",
        cert.to_str().expect("path"),
        "--key",
        key.to_str().expect("path"),
        "-X",
        method,
        "-w",
        "\n%{http_code}",
        "-H",
        "Content-Type: application/json",
    ];
    if let Some(d) = &data {
        args.extend(["--data-binary", d.as_str()]);
    }
    args.push(&url);
    let out = api.curl(&args).await;
    let text = stdout(&out);
    let (body, code) = text.rsplit_once('\n').expect("status line");
    (
        code.parse().expect("code"),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

async fn apply(api: &TestApiServer, yaml: &str) {
    let out = api.kubectl_stdin(&["apply", "-f", "-"], Some(yaml)).await;
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
}

async fn get_json(api: &TestApiServer, args: &[&str]) -> Value {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend(["-o", "json"]);
    serde_json::from_str(&api.kubectl_ok(&all).await).expect("json")
}

fn pod_yaml(name: &str, node: &str, labels: &str) -> String {
    let node = if node.is_empty() {
        String::new()
    } else {
        format!("  nodeName: {node}\n")
    };
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\nspec:\n{node}  terminationGracePeriodSeconds: 45\n  containers:\n  - name: c\n    image: busybox\n"
    )
}

/// Sets a pod's status through the status subresource (what the kubelet does).
async fn set_pod_status(api: &TestApiServer, name: &str, phase: &str, ready: bool) {
    let patch = json!({"status": {"phase": phase, "conditions": [
        {"type": "Ready", "status": if ready { "True" } else { "False" }}]}});
    api.kubectl_ok(&[
        "patch",
        "pod",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch.to_string(),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_assigns_a_pod_to_a_node_once() {
    let api = TestApiServer::start().await;
    apply(&api, &pod_yaml("web", "", "app: web")).await;
    // The legacy `bindings` collection, as `kubectl create -f` posts it.
    let binding = "apiVersion: v1\nkind: Binding\nmetadata:\n  name: web\n  annotations:\n    scheduler.example/score: \"7\"\ntarget:\n  apiVersion: v1\n  kind: Node\n  name: node-1\n";
    let out = api
        .kubectl_stdin(&["create", "-f", "-"], Some(binding))
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    // The answer is upstream's Success Status, which kubectl prints as such.
    assert!(stdout(&out).ends_with(" created\n"), "{}", stdout(&out));
    let pod = get_json(&api, &["pod", "web"]).await;
    assert_eq!(pod["spec"]["nodeName"], "node-1");
    assert_eq!(
        pod["metadata"]["annotations"]["scheduler.example/score"],
        "7"
    );
    let scheduled = pod["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "PodScheduled"))
        .cloned()
        .expect("PodScheduled condition");
    assert_eq!(scheduled["status"], "True");
    // Binding again (through the subresource) is a conflict naming the node.
    let again = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "web"},
        "target": {"kind": "Node", "name": "node-2"}});
    let (code, status) = admin(
        &api,
        "POST",
        "/api/v1/namespaces/default/pods/web/binding",
        Some(&again),
    )
    .await;
    assert_eq!(code, 409, "{status}");
    assert_eq!(status["reason"], "Conflict");
    assert_eq!(
        status["message"],
        "Operation cannot be fulfilled on pods/binding \"web\": pod web is already assigned to node \"node-1\""
    );
    assert_eq!(
        get_json(&api, &["pod", "web"]).await["spec"]["nodeName"],
        "node-1"
    );
    // A fresh pod binds through the subresource: 201 with a Success Status.
    apply(&api, &pod_yaml("api", "", "app: api")).await;
    let bind = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "api"},
        "target": {"kind": "Node", "name": "node-2"}});
    let (code, status) = admin(
        &api,
        "POST",
        "/api/v1/namespaces/default/pods/api/binding",
        Some(&bind),
    )
    .await;
    assert_eq!(
        (code, status["status"].as_str()),
        (201, Some("Success")),
        "{status}"
    );
    assert_eq!(
        get_json(&api, &["pod", "api"]).await["spec"]["nodeName"],
        "node-2"
    );
    let missing = json!({"metadata": {"name": "ghost"}, "target": {"name": "node-1"}});
    let (code, status) = admin(
        &api,
        "POST",
        "/api/v1/namespaces/default/bindings",
        Some(&missing),
    )
    .await;
    assert_eq!(code, 404, "{status}");
    assert_eq!(status["message"], "pods \"ghost\" not found");
    let (code, _) = admin(
        &api,
        "POST",
        "/api/v1/namespaces/default/pods/api/binding",
        Some(&missing),
    )
    .await;
    assert_eq!(code, 400);
}

const PDB: &str = "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: web\nspec:\n  minAvailable: 1\n  selector:\n    matchLabels:\n      app: web\n";

async fn set_budget(api: &TestApiServer, name: &str, allowed: i64) {
    let patch = json!({"status": {"observedGeneration": 1, "disruptionsAllowed": allowed,
        "currentHealthy": 2, "desiredHealthy": 1, "expectedPods": 2}});
    api.kubectl_ok(&[
        "patch",
        "pdb",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch.to_string(),
    ])
    .await;
}

fn eviction(name: &str, version: &str) -> Value {
    json!({"apiVersion": version, "kind": "Eviction", "metadata": {"name": name, "namespace": "default"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_honours_pod_disruption_budgets() {
    let api = TestApiServer::start().await;
    for name in ["web-1", "web-2", "done"] {
        apply(&api, &pod_yaml(name, "node-1", "app: web")).await;
    }
    set_pod_status(&api, "web-1", "Running", true).await;
    set_pod_status(&api, "web-2", "Running", true).await;
    set_pod_status(&api, "done", "Succeeded", false).await;
    apply(&api, PDB).await;
    // A budget the controller has not processed yet (no observedGeneration): 429.
    let path = |pod: &str| format!("/api/v1/namespaces/default/pods/{pod}/eviction");
    let (code, status) = admin(
        &api,
        "POST",
        &path("web-1"),
        Some(&eviction("web-1", "policy/v1")),
    )
    .await;
    assert_eq!(code, 429, "{status}");
    assert_eq!(
        status["details"]["causes"][0]["message"],
        "The disruption budget web is still being processed by the server."
    );
    set_budget(&api, "web", 0).await;
    let (code, status) = admin(
        &api,
        "POST",
        &path("web-1"),
        Some(&eviction("web-1", "policy/v1")),
    )
    .await;
    assert_eq!(code, 429, "{status}");
    assert_eq!(status["reason"], "TooManyRequests");
    assert_eq!(
        status["message"],
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    assert_eq!(status["details"]["causes"][0]["reason"], "DisruptionBudget");
    assert_eq!(
        status["details"]["causes"][0]["message"],
        "The disruption budget web needs 1 healthy pods and has 2 currently"
    );
    // One disruption allowed: the pod is evicted (gracefully: it runs on a node), the budget
    // is used up and records the pod.
    set_budget(&api, "web", 1).await;
    let mut body = eviction("web-1", "policy/v1");
    body["deleteOptions"] = json!({"gracePeriodSeconds": 20});
    let (code, status) = admin(&api, "POST", &path("web-1"), Some(&body)).await;
    assert_eq!(
        (code, status["status"].as_str()),
        (201, Some("Success")),
        "{status}"
    );
    let pod = get_json(&api, &["pod", "web-1"]).await;
    assert_eq!(pod["metadata"]["deletionGracePeriodSeconds"], 20);
    assert!(
        pod["status"]["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .any(|c| c["type"] == "DisruptionTarget" && c["reason"] == "EvictionByEvictionAPI"),
        "{pod}"
    );
    let pdb = get_json(&api, &["pdb", "web"]).await;
    assert_eq!(pdb["status"]["disruptionsAllowed"], 0);
    assert!(
        pdb["status"]["disruptedPods"].get("web-1").is_some(),
        "{pdb}"
    );
    // The budget is used up for web-2 (policy/v1beta1 bodies are accepted too) ...
    let (code, _) = admin(
        &api,
        "POST",
        &path("web-2"),
        Some(&eviction("web-2", "policy/v1beta1")),
    )
    .await;
    assert_eq!(code, 429);
    // ... but a finished pod goes regardless, at once.
    let (code, status) = admin(
        &api,
        "POST",
        &path("done"),
        Some(&eviction("done", "policy/v1")),
    )
    .await;
    assert_eq!(code, 201, "{status}");
    let gone = api.kubectl(&["get", "pod", "done"]).await;
    assert!(
        stderr(&gone).contains("pods \"done\" not found"),
        "{}",
        stderr(&gone)
    );
    // Two budgets selecting one pod: a Failure Status with code 500 as the create's result
    // (upstream writes it with HTTP 201; client-go reports the 500).
    apply(&api, &PDB.replace("name: web\n", "name: web-too\n")).await;
    set_budget(&api, "web", 1).await;
    let (code, status) = admin(
        &api,
        "POST",
        &path("web-2"),
        Some(&eviction("web-2", "policy/v1")),
    )
    .await;
    assert_eq!(
        (code, &status["status"], &status["code"]),
        (201, &json!("Failure"), &json!(500)),
        "{status}"
    );
    assert!(
        get_json(&api, &["pod", "web-2"]).await["metadata"]
            .get("deletionTimestamp")
            .is_none()
    );
    assert_eq!(
        status["message"],
        "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
    );
    // No budget: a plain graceful delete; a wrong name in the body is a 400; missing pods 404.
    api.kubectl_ok(&["delete", "pdb", "web", "web-too"]).await;
    let (code, _) = admin(
        &api,
        "POST",
        &path("web-2"),
        Some(&eviction("web-2", "policy/v1")),
    )
    .await;
    assert_eq!(code, 201);
    assert_eq!(
        get_json(&api, &["pod", "web-2"]).await["metadata"]["deletionGracePeriodSeconds"],
        45
    );
    let (code, _) = admin(
        &api,
        "POST",
        &path("web-2"),
        Some(&eviction("other", "policy/v1")),
    )
    .await;
    assert_eq!(code, 400);
    let (code, _) = admin(
        &api,
        "POST",
        &path("ghost"),
        Some(&eviction("ghost", "policy/v1")),
    )
    .await;
    assert_eq!(code, 404);
    // An unready pod under a budget with `unhealthyPodEvictionPolicy: AlwaysAllow` goes
    // without using the budget.
    apply(&api, &pod_yaml("sick", "node-1", "app: sick")).await;
    set_pod_status(&api, "sick", "Running", false).await;
    apply(
        &api,
        &PDB.replace("name: web\n", "name: sick\n")
            .replace("app: web", "app: sick")
            .replace(
                "spec:\n",
                "spec:\n  unhealthyPodEvictionPolicy: AlwaysAllow\n",
            ),
    )
    .await;
    set_budget(&api, "sick", 0).await;
    let (code, status) = admin(
        &api,
        "POST",
        &path("sick"),
        Some(&eviction("sick", "policy/v1")),
    )
    .await;
    assert_eq!(code, 201, "{status}");
    assert!(get_json(&api, &["pod", "sick"]).await["metadata"]["deletionTimestamp"].is_string());
    let pdb = get_json(&api, &["pdb", "sick"]).await;
    assert_eq!(pdb["status"]["disruptionsAllowed"], 0);
    assert!(pdb["status"].get("disruptedPods").is_none(), "{pdb}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_on_a_node_are_deleted_gracefully() {
    let api = TestApiServer::start().await;
    apply(&api, &pod_yaml("web", "node-1", "app: web")).await;
    assert_eq!(
        api.kubectl_ok(&["delete", "pod", "web", "--wait=false"])
            .await,
        "pod \"web\" deleted\n"
    );
    let meta = |p: Value| {
        (
            p["metadata"]["deletionGracePeriodSeconds"].clone(),
            p["metadata"]["deletionTimestamp"].is_string(),
        )
    };
    assert_eq!(
        meta(get_json(&api, &["pod", "web"]).await),
        (json!(45), true)
    );
    // A longer grace period does not extend it; a shorter one shortens it.
    api.kubectl_ok(&["delete", "pod", "web", "--grace-period=100", "--wait=false"])
        .await;
    assert_eq!(
        meta(get_json(&api, &["pod", "web"]).await),
        (json!(45), true)
    );
    api.kubectl_ok(&["delete", "pod", "web", "--grace-period=5", "--wait=false"])
        .await;
    assert_eq!(
        meta(get_json(&api, &["pod", "web"]).await),
        (json!(5), true)
    );
    // The kubelet's final status lands on the pod: a write during a graceful deletion
    // (grace > 0, no finalizers) keeps the object.
    set_pod_status(&api, "web", "Failed", false).await;
    let after = get_json(&api, &["pod", "web"]).await;
    assert_eq!(after["status"]["phase"], "Failed", "{after:#}");
    assert_eq!(meta(after), (json!(5), true));
    // What the kubelet does at the end (and `--force`): grace 0 removes it.
    let out = api
        .kubectl(&["delete", "pod", "web", "--grace-period=0", "--force"])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("pod \"web\" force deleted"),
        "{}",
        stdout(&out)
    );
    let gone = api.kubectl(&["get", "pod", "web"]).await;
    assert!(stderr(&gone).contains("not found"), "{}", stderr(&gone));
    // Unscheduled pods go at once (kubectl's default wait returns).
    apply(&api, &pod_yaml("pending", "", "app: p")).await;
    api.kubectl_ok(&["delete", "pod", "pending"]).await;
    let gone = api.kubectl(&["get", "pod", "pending"]).await;
    assert!(stderr(&gone).contains("not found"), "{}", stderr(&gone));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn propagation_policies_and_preconditions() {
    let api = TestApiServer::start().await;
    for name in ["fg", "orph", "bg", "pre"] {
        api.kubectl_ok(&["create", "configmap", name]).await;
    }
    api.kubectl_ok(&["delete", "cm", "fg", "--cascade=foreground", "--wait=false"])
        .await;
    let fg = get_json(&api, &["cm", "fg"]).await;
    assert_eq!(fg["metadata"]["finalizers"], json!(["foregroundDeletion"]));
    assert!(fg["metadata"]["deletionTimestamp"].is_string());
    api.kubectl_ok(&["delete", "cm", "orph", "--cascade=orphan", "--wait=false"])
        .await;
    assert_eq!(
        get_json(&api, &["cm", "orph"]).await["metadata"]["finalizers"],
        json!(["orphan"])
    );
    // The legacy orphanDependents field maps to the orphan finalizer.
    let (code, _) = admin(
        &api,
        "DELETE",
        "/api/v1/namespaces/default/configmaps/bg",
        Some(&json!({"orphanDependents": true})),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(
        get_json(&api, &["cm", "bg"]).await["metadata"]["finalizers"],
        json!(["orphan"])
    );
    let (code, _) = admin(
        &api,
        "DELETE",
        "/api/v1/namespaces/default/configmaps/bg?orphanDependents=false",
        None,
    )
    .await;
    assert_eq!(code, 200);
    let gone = api.kubectl(&["get", "cm", "bg"]).await;
    assert!(stderr(&gone).contains("not found"), "{}", stderr(&gone));
    // Both set: 422.
    let (code, status) = admin(
        &api,
        "DELETE",
        "/api/v1/namespaces/default/configmaps/pre",
        Some(&json!({"orphanDependents": true, "propagationPolicy": "Orphan"})),
    )
    .await;
    assert_eq!(code, 422, "{status}");
    // Preconditions that do not hold: 409 and the object stays.
    let (code, status) = admin(
        &api,
        "DELETE",
        "/api/v1/namespaces/default/configmaps/pre",
        Some(&json!({"preconditions": {"uid": "not-the-uid"}})),
    )
    .await;
    assert_eq!(code, 409, "{status}");
    assert!(status["message"].as_str().expect("message").starts_with("Operation cannot be fulfilled on configmaps \"pre\": Precondition failed: UID in precondition: not-the-uid"), "{status}");
    let (code, _) = admin(
        &api,
        "DELETE",
        "/api/v1/namespaces/default/configmaps/pre",
        Some(&json!({"preconditions": {"resourceVersion": "1"}})),
    )
    .await;
    assert_eq!(code, 409);
    let uid = get_json(&api, &["cm", "pre"]).await["metadata"]["uid"].clone();
    let (code, _) = admin(
        &api,
        "DELETE",
        "/api/v1/namespaces/default/configmaps/pre",
        Some(&json!({"preconditions": {"uid": uid}})),
    )
    .await;
    assert_eq!(code, 200);
    let gone = api.kubectl(&["get", "cm", "pre"]).await;
    assert!(stderr(&gone).contains("not found"));
    // Removing the finalizer finishes the foreground deletion.
    api.kubectl_ok(&[
        "patch",
        "cm",
        "fg",
        "--type=merge",
        "-p",
        "{\"metadata\":{\"finalizers\":null}}",
    ])
    .await;
    let gone = api.kubectl(&["get", "cm", "fg"]).await;
    assert!(stderr(&gone).contains("not found"), "{}", stderr(&gone));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_namespaces_terminate_and_refuse_new_content() {
    let api = TestApiServer::start().await;
    api.kubectl_ok(&["create", "namespace", "doomed"]).await;
    api.kubectl_ok(&["create", "configmap", "old", "-n", "doomed"])
        .await;
    assert_eq!(
        api.kubectl_ok(&["delete", "namespace", "doomed", "--wait=false"])
            .await,
        "namespace \"doomed\" deleted\n"
    );
    let ns = get_json(&api, &["namespace", "doomed"]).await;
    assert_eq!(ns["status"]["phase"], "Terminating");
    assert!(ns["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
    let table = api
        .kubectl_ok(&["get", "namespace", "doomed", "--no-headers"])
        .await;
    assert!(table.contains("Terminating"), "{table}");
    let refused = api
        .kubectl(&["create", "configmap", "new", "-n", "doomed"])
        .await;
    assert_eq!(
        stderr(&refused).trim(),
        "error: failed to create configmap: configmaps \"new\" is forbidden: unable to create new content in namespace doomed because it is being terminated"
    );
    let (code, status) = admin(
        &api,
        "POST",
        "/api/v1/namespaces/doomed/configmaps",
        Some(&json!({"metadata": {"name": "raw"}})),
    )
    .await;
    assert_eq!(code, 403);
    assert_eq!(status["reason"], "Forbidden");
    assert_eq!(
        status["details"]["causes"][0]["reason"],
        "NamespaceTerminating"
    );
    assert_eq!(
        status["details"]["causes"][0]["field"],
        "metadata.namespace"
    );
    // Existing content can still be read and deleted.
    api.kubectl_ok(&["delete", "configmap", "old", "-n", "doomed"])
        .await;
    // Other writes keep it while `spec.finalizers` holds `kubernetes`; the namespace
    // controller's finalize (emptying it) removes the namespace.
    api.kubectl_ok(&["label", "namespace", "doomed", "x=y"])
        .await;
    let mut ns = get_json(&api, &["namespace", "doomed"]).await;
    assert_eq!(ns["metadata"]["labels"]["x"], "y");
    ns["spec"]["finalizers"] = json!([]);
    let (code, status) = admin(&api, "PUT", "/api/v1/namespaces/doomed/finalize", Some(&ns)).await;
    assert_eq!(code, 200, "{status}");
    let gone = api.kubectl(&["get", "namespace", "doomed"]).await;
    assert!(stderr(&gone).contains("not found"), "{}", stderr(&gone));
    let immortal = api
        .kubectl(&["delete", "namespace", "kube-system", "--wait=false"])
        .await;
    assert!(
        stderr(&immortal)
            .contains("namespaces \"kube-system\" is forbidden: this namespace may not be deleted"),
        "{}",
        stderr(&immortal)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_drain_evicts_within_the_budget() {
    let api = TestApiServer::start().await;
    apply(
        &api,
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: node-1\n",
    )
    .await;
    for name in ["web-1", "web-2"] {
        apply(&api, &pod_yaml(name, "node-1", "app: web")).await;
        set_pod_status(&api, name, "Running", true).await;
    }
    apply(&api, PDB).await;
    set_budget(&api, "web", 1).await;
    // drain cordons the node, evicts through policy/v1 Eviction and retries the 429 of the
    // second pod until its timeout.
    let out = api
        .kubectl(&[
            "drain",
            "node-1",
            "--force",
            "--grace-period=0",
            "--timeout=3s",
        ])
        .await;
    let (out_text, err_text) = (stdout(&out), stderr(&out));
    assert!(!out.status.success(), "{out_text}{err_text}");
    assert!(
        out_text.contains("node/node-1 cordoned"),
        "{out_text}{err_text}"
    );
    assert!(
        err_text.contains("Cannot evict pod as it would violate the pod's disruption budget."),
        "{out_text}{err_text}"
    );
    let pods = api.kubectl_ok(&["get", "pods", "-o", "name"]).await;
    assert_eq!(
        pods.lines().count(),
        1,
        "one pod evicted: {pods}\n{out_text}{err_text}"
    );
    assert!(out_text.contains("evicted"), "{out_text}{err_text}");
    assert_eq!(
        get_json(&api, &["node", "node-1"]).await["spec"]["unschedulable"],
        true
    );
}
