//! Server-side apply and managedFields with the real kubectl 1.33 (and curl for the raw
//! protocol): creation, conflicts between managers and forced takeover, pruning on re-apply,
//! the migration from client-side apply, and the `Update` entries of other kubectl verbs.

mod support;

use serde_json::Value;
use support::{TestApiServer, stderr, stdout};

fn deployment(replicas: Option<u32>, extra_label: bool) -> String {
    let mut text = String::from(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  labels:\n    app: web\n",
    );
    if extra_label {
        text.push_str("    tier: front\n");
    }
    text.push_str("spec:\n");
    if let Some(n) = replicas {
        text.push_str(&format!("  replicas: {n}\n"));
    }
    text.push_str(
        "  selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      containers:\n      - name: nginx\n        image: nginx:1.27\n        ports:\n        - containerPort: 80\n",
    );
    text
}

async fn get_json(api: &TestApiServer, args: &[&str]) -> Value {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json", "--show-managed-fields"]);
    serde_json::from_str(&api.kubectl_ok(&all).await).expect("json")
}

/// The managedFields entry of `manager` with `operation`.
fn entry<'a>(object: &'a Value, manager: &str, operation: &str) -> Option<&'a Value> {
    object["metadata"]["managedFields"]
        .as_array()?
        .iter()
        .find(|e| e["manager"] == manager && e["operation"] == operation)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_creates_conflicts_forces_and_prunes() {
    let api = TestApiServer::start().await;
    let out = api
        .kubectl_stdin(
            &["apply", "--server-side", "-f", "-"],
            Some(&deployment(Some(2), true)),
        )
        .await;
    assert_eq!(
        stdout(&out),
        "deployment.apps/web serverside-applied\n",
        "{}",
        stderr(&out)
    );
    let object = get_json(&api, &["deploy", "web"]).await;
    let applied = entry(&object, "kubectl", "Apply").expect("kubectl Apply entry");
    assert_eq!(applied["apiVersion"], "apps/v1");
    assert_eq!(applied["fieldsType"], "FieldsV1");
    let fields = &applied["fieldsV1"];
    assert_eq!(fields["f:spec"]["f:replicas"], serde_json::json!({}));
    assert_eq!(
        fields["f:metadata"]["f:labels"]["f:tier"],
        serde_json::json!({})
    );
    let container =
        &fields["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"nginx\"}"];
    assert_eq!(container["."], serde_json::json!({}), "{fields}");
    assert_eq!(container["f:image"], serde_json::json!({}));
    assert!(
        container["f:ports"]["k:{\"containerPort\":80,\"protocol\":\"TCP\"}"].is_object(),
        "{container}"
    );
    assert!(fields.get("f:status").is_none(), "{fields}");

    // Another manager changing replicas conflicts with the owner.
    let out = api
        .kubectl_stdin(
            &["apply", "--server-side", "--field-manager=other", "-f", "-"],
            Some(&deployment(Some(3), true)),
        )
        .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out)
            .contains("Apply failed with 1 conflict: conflict with \"kubectl\": .spec.replicas"),
        "{}",
        stderr(&out)
    );
    let object = get_json(&api, &["deploy", "web"]).await;
    assert_eq!(object["spec"]["replicas"], 2);

    // Forced, the other manager takes replicas over.
    let out = api
        .kubectl_stdin(
            &[
                "apply",
                "--server-side",
                "--field-manager=other",
                "--force-conflicts",
                "-f",
                "-",
            ],
            Some(&deployment(Some(3), true)),
        )
        .await;
    assert_eq!(
        stdout(&out),
        "deployment.apps/web serverside-applied\n",
        "{}",
        stderr(&out)
    );
    let object = get_json(&api, &["deploy", "web"]).await;
    assert_eq!(object["spec"]["replicas"], 3);
    let other = entry(&object, "other", "Apply").expect("other Apply entry");
    assert_eq!(
        other["fieldsV1"]["f:spec"]["f:replicas"],
        serde_json::json!({})
    );
    let kubectl = entry(&object, "kubectl", "Apply").expect("kubectl Apply entry");
    assert!(
        kubectl["fieldsV1"]["f:spec"].get("f:replicas").is_none(),
        "{kubectl}"
    );

    // Re-applying without the tier label (and without replicas, no longer ours) removes the
    // label; replicas stay as the other manager set them. The other manager still owns the
    // label, so it is only removed once that manager drops it too.
    let out = api
        .kubectl_stdin(
            &["apply", "--server-side", "-f", "-"],
            Some(&deployment(None, false)),
        )
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let object = get_json(&api, &["deploy", "web"]).await;
    assert_eq!(object["metadata"]["labels"]["tier"], "front");
    let out = api
        .kubectl_stdin(
            &["apply", "--server-side", "--field-manager=other", "-f", "-"],
            Some(&deployment(Some(3), false)),
        )
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let object = get_json(&api, &["deploy", "web"]).await;
    assert!(
        object["metadata"]["labels"].get("tier").is_none(),
        "{}",
        object["metadata"]
    );
    assert_eq!(object["metadata"]["labels"]["app"], "web");
    assert_eq!(object["spec"]["replicas"], 3);
    assert_eq!(
        object["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.27"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_side_apply_migrates_to_server_side_apply() {
    let api = TestApiServer::start().await;
    let out = api
        .kubectl_stdin(&["apply", "-f", "-"], Some(&deployment(Some(2), true)))
        .await;
    assert_eq!(
        stdout(&out),
        "deployment.apps/web created\n",
        "{}",
        stderr(&out)
    );
    let object = get_json(&api, &["deploy", "web"]).await;
    let csa = entry(&object, "kubectl-client-side-apply", "Update").expect("CSA entry");
    assert_eq!(csa["apiVersion"], "apps/v1");
    assert!(csa["time"].is_string(), "{csa}");
    assert_eq!(
        csa["fieldsV1"]["f:spec"]["f:replicas"],
        serde_json::json!({})
    );

    let out = api
        .kubectl_stdin(
            &["apply", "--server-side", "--field-manager=other", "-f", "-"],
            Some(&deployment(Some(3), true)),
        )
        .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"
        ),
        "{}",
        stderr(&out)
    );

    // kubectl's own server-side apply upgrades the client-side apply entry first, so it
    // takes the fields over without conflicts and can then prune what it no longer applies.
    let out = api
        .kubectl_stdin(
            &["apply", "--server-side", "-f", "-"],
            Some(&deployment(Some(4), false)),
        )
        .await;
    assert_eq!(
        stdout(&out),
        "deployment.apps/web serverside-applied\n",
        "{}",
        stderr(&out)
    );
    let object = get_json(&api, &["deploy", "web"]).await;
    assert_eq!(object["spec"]["replicas"], 4);
    assert!(
        entry(&object, "kubectl-client-side-apply", "Update").is_none(),
        "{}",
        object["metadata"]["managedFields"]
    );
    let applied = entry(&object, "kubectl", "Apply").expect("kubectl Apply entry");
    assert_eq!(
        applied["fieldsV1"]["f:spec"]["f:replicas"],
        serde_json::json!({})
    );
    assert!(
        object["metadata"]["labels"].get("tier").is_none(),
        "{}",
        object["metadata"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_verbs_record_update_entries() {
    let api = TestApiServer::start().await;
    api.kubectl_stdin(&["create", "-f", "-"], Some(&deployment(Some(1), false)))
        .await;
    let object = get_json(&api, &["deploy", "web"]).await;
    let created = entry(&object, "kubectl-create", "Update").expect("kubectl-create entry");
    let fields = &created["fieldsV1"];
    assert_eq!(fields["f:spec"]["f:replicas"], serde_json::json!({}));
    // Added maps own themselves ("."), as upstream's comparison records them.
    assert_eq!(
        fields["f:metadata"]["f:labels"]["."],
        serde_json::json!({}),
        "{fields}"
    );

    api.kubectl_ok(&["scale", "deploy", "web", "--replicas=5"])
        .await;
    api.kubectl_ok(&["label", "deploy", "web", "tier=back"])
        .await;
    api.kubectl_ok(&[
        "patch",
        "deploy",
        "web",
        "-p",
        r#"{"spec":{"minReadySeconds":7}}"#,
    ])
    .await;
    let object = get_json(&api, &["deploy", "web"]).await;
    let entries = object["metadata"]["managedFields"]
        .as_array()
        .expect("entries");
    let scale = entries
        .iter()
        .find(|e| e["subresource"] == "scale")
        .unwrap_or_else(|| panic!("a scale entry in {entries:?}"));
    assert_eq!(scale["operation"], "Update");
    assert_eq!(scale["apiVersion"], "apps/v1");
    assert_eq!(
        scale["fieldsV1"],
        serde_json::json!({"f:spec": {"f:replicas": {}}})
    );
    let created = entry(&object, "kubectl-create", "Update").expect("kubectl-create entry");
    assert!(
        created["fieldsV1"]["f:spec"].get("f:replicas").is_none(),
        "the scale took replicas over: {created}"
    );
    let label = entry(&object, "kubectl-label", "Update").expect("kubectl-label entry");
    assert_eq!(
        label["fieldsV1"],
        serde_json::json!({"f:metadata": {"f:labels": {"f:tier": {}}}})
    );
    let patch = entry(&object, "kubectl-patch", "Update").expect("kubectl-patch entry");
    assert_eq!(
        patch["fieldsV1"],
        serde_json::json!({"f:spec": {"f:minReadySeconds": {}}})
    );
    // kubectl edit, with a scripted editor.
    let mut command = std::process::Command::new(support::kubectl_path());
    command
        .arg("--kubeconfig")
        .arg(api.kubeconfig())
        .args(["edit", "deploy", "web"])
        .env(
            "KUBE_EDITOR",
            "sed -i 's/minReadySeconds: 7$/minReadySeconds: 9/'",
        )
        .env_remove("KUBECONFIG");
    let edit = tokio::task::spawn_blocking(move || command.output().expect("kubectl edit"))
        .await
        .expect("join");
    assert!(edit.status.success(), "{}{}", stdout(&edit), stderr(&edit));
    let object = get_json(&api, &["deploy", "web"]).await;
    assert_eq!(object["spec"]["minReadySeconds"], 9);
    let edited = entry(&object, "kubectl-edit", "Update").expect("kubectl-edit entry");
    assert_eq!(
        edited["fieldsV1"],
        serde_json::json!({"f:spec": {"f:minReadySeconds": {}}})
    );
    assert!(
        entry(&object, "kubectl-patch", "Update").is_none(),
        "the edit took the patch's only field: {}",
        object["metadata"]["managedFields"]
    );
    // Without --show-managed-fields kubectl hides them.
    let plain: Value = serde_json::from_str(
        &api.kubectl_ok(&["get", "deploy", "web", "-o", "json"])
            .await,
    )
    .expect("json");
    assert!(plain["metadata"].get("managedFields").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_apply_requests_are_checked_like_upstream() {
    let api = TestApiServer::start_with(
        std::sync::Arc::new(kwk_control_plane::storage::memory::MemoryStore::new()),
        "t,admin,1,system:masters\n",
    )
    .await;
    let base = format!("{}/api/v1/namespaces", api.url());
    let cm = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"},"data":{"a":"1"}}"#;
    let send = |url: String, body: &'static str| {
        let api = &api;
        async move {
            let out = api
                .curl(&[
                    "-X",
                    "PATCH",
                    "-w",
                    "\n%{http_code}",
                    "-H",
                    "Authorization: Bearer t",
                    "-H",
                    "Content-Type: application/apply-patch+yaml",
                    "--data-binary",
                    body,
                    &url,
                ])
                .await;
            let text = stdout(&out);
            let (body, code) = text.rsplit_once('\n').expect("status line");
            (code.to_string(), body.to_string())
        }
    };
    let (code, body) = send(format!("{base}/default/configmaps/c"), cm).await;
    assert_eq!(code, "422", "{body}");
    assert!(
        body.contains(
            "PatchOptions.meta.k8s.io \\\"\\\" is invalid: fieldManager: Required value: is required for apply patch"
        ),
        "{body}"
    );
    let (code, body) = send(format!("{base}/nowhere/configmaps/c?fieldManager=m"), cm).await;
    assert_eq!(code, "404", "{body}");
    assert!(
        body.contains("namespaces \\\"nowhere\\\" not found"),
        "{body}"
    );
    let wrong = r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"c"}}"#;
    let (code, body) = send(format!("{base}/default/configmaps/c?fieldManager=m"), wrong).await;
    assert_eq!(code, "400", "{body}");
    assert!(
        body.contains("invalid object type: /v1, Kind=Secret"),
        "{body}"
    );
    let (code, body) = send(
        format!("{base}/default/configmaps/c?fieldManager=m&dryRun=All"),
        cm,
    )
    .await;
    assert_eq!(code, "201", "{body}");
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  a: \"2\"\n";
    let (code, body) = send(format!("{base}/default/configmaps/c?fieldManager=m"), yaml).await;
    assert_eq!(code, "201", "{body}");
    let created: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(created["data"]["a"], "2");
    assert_eq!(created["metadata"]["managedFields"][0]["manager"], "m");
    assert_eq!(
        created["metadata"]["managedFields"][0]["operation"],
        "Apply"
    );
    let (code, body) = send(format!("{base}/default/configmaps/c?fieldManager=m"), yaml).await;
    assert_eq!(code, "200", "{body}");
    // Through the status subresource only the status is applied and owned.
    let apps = format!("{}/apis/apps/v1/namespaces/default/deployments", api.url());
    let deploy = r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d"},"spec":{"replicas":1,"selector":{"matchLabels":{"a":"b"}},"template":{"metadata":{"labels":{"a":"b"}},"spec":{"containers":[{"name":"c","image":"i"}]}}}}"#;
    let (code, body) = send(format!("{apps}/d?fieldManager=m"), deploy).await;
    assert_eq!(code, "201", "{body}");
    let status = r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d"},"spec":{"replicas":9},"status":{"replicas":1}}"#;
    let (code, body) = send(format!("{apps}/d/status?fieldManager=ctl"), status).await;
    assert_eq!(code, "200", "{body}");
    let updated: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(updated["spec"]["replicas"], 1);
    assert_eq!(updated["status"]["replicas"], 1);
    let ctl = entry(&updated, "ctl", "Apply").expect("ctl entry");
    assert_eq!(ctl["subresource"], "status");
    assert_eq!(
        ctl["fieldsV1"],
        serde_json::json!({"f:status": {"f:replicas": {}}})
    );
    // A non-apply patch may not carry force.
    let out = api
        .curl(&[
            "-X",
            "PATCH",
            "-w",
            "\n%{http_code}",
            "-H",
            "Authorization: Bearer t",
            "-H",
            "Content-Type: application/merge-patch+json",
            "--data-binary",
            "{}",
            &format!("{base}/default/configmaps/c?force=true"),
        ])
        .await;
    let text = stdout(&out);
    assert!(text.ends_with("\n422"), "{text}");
    assert!(
        text.contains("force: Forbidden: may not be specified for non-apply patch"),
        "{text}"
    );
}
