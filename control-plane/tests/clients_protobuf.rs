//! Clients that only speak protobuf for writes, against the apiserver over TLS: kubectl 1.33
//! (`create <generator>`, `auth`) and helm (its release Secrets and their DELETE with a
//! DeleteOptions body). The objects arrive, are stored as the JSON the client would have sent,
//! and read back as such.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use support::TestApiServer;

/// The helm binary: `$HELM`, else `.ci/bin/helm` of this checkout.
fn helm_path() -> PathBuf {
    if let Ok(path) = std::env::var("HELM") {
        return PathBuf::from(path);
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ci/bin/helm");
    assert!(
        path.exists(),
        "{} is missing: run `sudo .ci/install-deps`",
        path.display()
    );
    path
}

/// Runs helm against the apiserver (blocking, off the runtime thread) with an isolated home.
async fn helm(api: &TestApiServer, args: &[&str]) -> String {
    let mut cmd = Command::new(helm_path());
    cmd.arg("--kubeconfig")
        .arg(api.kubeconfig())
        .args(["--namespace", "default"])
        .args(args)
        .env_remove("KUBECONFIG")
        .env("HOME", api.dir.path())
        .env("HELM_CACHE_HOME", api.dir.path().join("helm-cache"))
        .env("HELM_CONFIG_HOME", api.dir.path().join("helm-config"))
        .env("HELM_DATA_HOME", api.dir.path().join("helm-data"));
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run helm");
    assert!(
        out.status.success(),
        "helm {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn get_json(api: &TestApiServer, args: &[&str]) -> Value {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&api.kubectl_ok(&all).await).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_generators_send_protobuf_and_the_objects_are_stored() {
    let api = TestApiServer::start().await;
    for args in [
        &["create", "namespace", "team-a"][..],
        &[
            "create",
            "configmap",
            "cfg",
            "--from-literal=a=b",
            "--from-literal=empty=",
        ],
        &[
            "create",
            "secret",
            "generic",
            "sec",
            "--from-literal=password=s3cr3t",
        ],
        &[
            "create",
            "deployment",
            "web",
            "--image=nginx:1.27",
            "--replicas=0",
            "--port=8080",
        ],
        &["create", "service", "clusterip", "web", "--tcp=80:8080"],
        &["create", "serviceaccount", "robot"],
        &[
            "create",
            "role",
            "reader",
            "--verb=get,list",
            "--resource=pods",
        ],
        &[
            "create",
            "rolebinding",
            "rb",
            "--role=reader",
            "--user=alice",
        ],
        &[
            "create",
            "job",
            "once",
            "--image=busybox",
            "--",
            "echo",
            "hi",
        ],
        &[
            "create",
            "priorityclass",
            "high",
            "--value=1000",
            "--preemption-policy=Never",
        ],
    ] {
        api.kubectl_ok(args).await;
    }
    let cm = get_json(&api, &["configmap", "cfg"]).await;
    assert_eq!(cm["data"], json!({"a": "b", "empty": ""}));
    let secret = get_json(&api, &["secret", "sec"]).await;
    assert_eq!(secret["data"], json!({"password": "czNjcjN0"}));
    let deploy = get_json(&api, &["deployment", "web"]).await;
    assert_eq!(
        deploy["spec"]["replicas"],
        json!(0),
        "an explicit 0 survives protobuf"
    );
    assert_eq!(
        deploy["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"],
        json!(8080)
    );
    let svc = get_json(&api, &["service", "web"]).await;
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], json!(8080));
    let role = get_json(&api, &["role", "reader"]).await;
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}])
    );
    let pc = get_json(&api, &["priorityclass", "high"]).await;
    assert_eq!(
        (pc["value"].clone(), pc["preemptionPolicy"].clone()),
        (json!(1000), json!("Never"))
    );
    let job = get_json(&api, &["job", "once"]).await;
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["command"],
        json!(["echo", "hi"])
    );
    let ns = api.kubectl_ok(&["get", "ns", "team-a", "-o", "name"]).await;
    assert_eq!(ns, "namespace/team-a\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_can_i_and_whoami_send_protobuf_reviews() {
    let api = TestApiServer::start().await;
    assert_eq!(
        api.kubectl_ok(&["auth", "can-i", "create", "pods"]).await,
        "yes\n"
    );
    let list = api.kubectl_ok(&["auth", "can-i", "--list"]).await;
    assert!(list.contains("Resources"), "{list}");
    let whoami = api.kubectl_ok(&["auth", "whoami", "-o", "json"]).await;
    let whoami: Value = serde_json::from_str(&whoami).expect("json");
    assert!(
        whoami["status"]["userInfo"]["username"].is_string(),
        "{whoami}"
    );
}

const CM_VALUE: [&str; 5] = ["get", "cm", "demo-cm", "-o", "jsonpath={.data.v}"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_release_secrets_install_upgrade_rollback_uninstall() {
    let api = TestApiServer::start().await;
    let chart = api.dir.path().join("chart");
    std::fs::create_dir_all(chart.join("templates")).expect("chart dir");
    std::fs::write(
        chart.join("Chart.yaml"),
        "apiVersion: v2\nname: demo\nversion: 0.1.0\n",
    )
    .expect("write");
    std::fs::write(chart.join("values.yaml"), "v: one\n").expect("write");
    std::fs::write(
        chart.join("templates/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: demo-cm\ndata:\n  v: \"{{ .Values.v }}\"\n",
    )
    .expect("write");
    let chart = chart.to_str().expect("utf-8 path");
    // Client-side apply (Helm 3 behaviour): server-side apply is another issue's work.
    helm(&api, &["install", "demo", chart, "--server-side=false"]).await;
    helm(
        &api,
        &[
            "upgrade",
            "demo",
            chart,
            "--set",
            "v=two",
            "--server-side=false",
        ],
    )
    .await;
    assert_eq!(api.kubectl_ok(&CM_VALUE).await, "two");
    helm(&api, &["rollback", "demo", "1"]).await;
    assert_eq!(api.kubectl_ok(&CM_VALUE).await, "one");
    let releases = api
        .kubectl_ok(&["get", "secrets", "-l", "owner=helm", "-o", "name"])
        .await;
    assert_eq!(
        releases,
        "secret/sh.helm.release.v1.demo.v1\nsecret/sh.helm.release.v1.demo.v2\nsecret/sh.helm.release.v1.demo.v3\n"
    );
    let history = helm(&api, &["history", "demo"]).await;
    assert!(
        history.contains("superseded") && history.contains("Rollback to 1"),
        "{history}"
    );
    helm(&api, &["uninstall", "demo"]).await;
    let left = api
        .kubectl_ok(&["get", "secrets", "-l", "owner=helm", "-o", "name"])
        .await;
    assert_eq!(
        left, "",
        "the release Secrets are deleted (DELETE with a protobuf DeleteOptions)"
    );
}
