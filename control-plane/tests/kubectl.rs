//! The real kubectl 1.33 against the apiserver over TLS with a client certificate: outputs
//! are asserted, not only exit codes.

mod support;

use support::{TestApiServer, stderr, stdout};

const CONFIGMAP: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: demo\n  labels:\n    app: demo\ndata:\n  a: \"1\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_discovery_and_system_namespaces() {
    let api = TestApiServer::start().await;
    let version = api.kubectl_ok(&["version", "-o", "json"]).await;
    let version: serde_json::Value = serde_json::from_str(&version).expect("json");
    assert_eq!(version["serverVersion"]["minor"], "33");
    let resources = api.kubectl_ok(&["api-resources", "-o", "wide"]).await;
    let deploy = resources
        .lines()
        .find(|l| l.starts_with("deployments "))
        .expect("deployments listed");
    assert!(
        deploy.contains("deploy") && deploy.contains("apps/v1") && deploy.contains("all"),
        "{deploy}"
    );
    let namespaces = api.kubectl_ok(&["get", "ns", "-o", "name"]).await;
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(
            namespaces.contains(&format!("namespace/{ns}\n")),
            "{namespaces}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_get_label_annotate_delete_configmap() {
    let api = TestApiServer::start().await;
    let out = api
        .kubectl_stdin(&["apply", "-f", "-"], Some(CONFIGMAP))
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "configmap/demo created\n");
    let again = api
        .kubectl_stdin(&["apply", "-f", "-"], Some(CONFIGMAP))
        .await;
    assert_eq!(stdout(&again), "configmap/demo unchanged\n");
    assert_eq!(
        api.kubectl_ok(&["label", "cm", "demo", "tier=web"]).await,
        "configmap/demo labeled\n"
    );
    api.kubectl_ok(&["annotate", "cm", "demo", "note=hello"])
        .await;
    let labels = api
        .kubectl_ok(&[
            "get",
            "cm",
            "demo",
            "-o",
            "jsonpath={.metadata.labels.tier} {.metadata.annotations.note} {.data.a}",
        ])
        .await;
    assert_eq!(labels, "web hello 1");
    let selected = api
        .kubectl_ok(&["get", "cm", "-l", "tier in (web,db)", "-o", "name"])
        .await;
    assert_eq!(selected, "configmap/demo\n");
    let none = api.kubectl(&["get", "cm", "-l", "tier=db"]).await;
    assert!(
        stderr(&none).contains("No resources found"),
        "{}",
        stderr(&none)
    );
    api.kubectl_ok(&["label", "cm", "demo", "tier-"]).await;
    let labels = api
        .kubectl_ok(&["get", "cm", "demo", "-o", "jsonpath={.metadata.labels}"])
        .await;
    assert_eq!(labels, r#"{"app":"demo"}"#);
    let yaml = api.kubectl_ok(&["get", "cm", "demo", "-o", "yaml"]).await;
    assert!(
        yaml.contains("uid: ")
            && yaml.contains("creationTimestamp: ")
            && yaml.contains("resourceVersion: "),
        "{yaml}"
    );
    assert_eq!(
        api.kubectl_ok(&["delete", "cm", "demo"]).await,
        "configmap \"demo\" deleted\n"
    );
    let gone = api.kubectl(&["get", "cm", "demo"]).await;
    assert!(!gone.status.success());
    assert!(
        stderr(&gone).contains("configmaps \"demo\" not found"),
        "{}",
        stderr(&gone)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_watch_streams_changes() {
    let api = TestApiServer::start().await;
    api.kubectl_stdin(&["apply", "-f", "-"], Some(CONFIGMAP))
        .await;
    let watcher = {
        let args = [
            "get",
            "cm",
            "-w",
            "--output-watch-events",
            "--request-timeout=6s",
        ];
        let api_ref = &api;
        async move { api_ref.kubectl(&args).await }
    };
    let changer = async {
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        api.kubectl_ok(&["label", "cm", "demo", "step=two"]).await;
        api.kubectl_ok(&["delete", "cm", "demo"]).await;
    };
    let (out, ()) = tokio::join!(watcher, changer);
    let text = stdout(&out);
    let events: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| ["ADDED", "MODIFIED", "DELETED"].contains(w))
        .collect();
    assert_eq!(events, ["ADDED", "MODIFIED", "DELETED"], "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_is_401_and_tokens_authenticate() {
    let store = std::sync::Arc::new(kwk_control_plane::storage::memory::MemoryStore::new());
    let api = TestApiServer::start_with(store, "s3cret,alice,1001,\"dev,ops\"\n").await;
    let url = format!("{}/api/v1/namespaces", api.url());
    let anonymous = api
        .curl(&["-o", "/dev/null", "-w", "%{http_code}", &url])
        .await;
    assert_eq!(stdout(&anonymous), "401");
    let bad = api
        .curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "Authorization: Bearer nope",
            &url,
        ])
        .await;
    assert_eq!(stdout(&bad), "401");
    let ok = api
        .curl(&[
            "-w",
            "\n%{http_code}",
            "-H",
            "Authorization: Bearer s3cret",
            &url,
        ])
        .await;
    let text = stdout(&ok);
    assert!(
        text.ends_with("\n200") && text.contains("NamespaceList"),
        "{text}"
    );
    let health = api.curl(&[&format!("{}/readyz", api.url())]).await;
    assert_eq!(stdout(&health), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_get_4xx_and_store_nothing() {
    let api = TestApiServer::start_with(
        std::sync::Arc::new(kwk_control_plane::storage::memory::MemoryStore::new()),
        "t,admin,1,system:masters\n",
    )
    .await;
    let url = format!("{}/api/v1/namespaces/default/configmaps", api.url());
    let auth = "Authorization: Bearer t";
    let post = |body: String, content_type: &'static str| {
        let url = url.clone();
        let api = &api;
        async move {
            let path = api.dir.path().join("body");
            std::fs::write(&path, body).expect("write body");
            let data = format!("@{}", path.display());
            let out = api
                // HTTP/1.1: curl reports an HTTP/2 early 413 (sent before the upload ends) as
                // a framing error instead of showing the status.
                .curl(&[
                    "--http1.1",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "-H",
                    auth,
                    "-H",
                    &format!("Content-Type: {content_type}"),
                    "--data-binary",
                    &data,
                    &url,
                ])
                .await;
            stdout(&out)
        }
    };
    assert_eq!(post("{not json".into(), "application/json").await, "400");
    assert_eq!(post("[1,2]".into(), "application/json").await, "400");
    assert_eq!(
        post(
            r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"}}"#.into(),
            "application/json"
        )
        .await,
        "400"
    );
    assert_eq!(
        post(
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"},"data":{"a":1}}"#
                .into(),
            "application/json"
        )
        .await,
        "400"
    );
    assert_eq!(
        post(
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Bad_Name"}}"#.into(),
            "application/json"
        )
        .await,
        "422"
    );
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert_eq!(post(deep, "application/json").await, "400");
    let huge = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"big"}},"data":{{"a":"{}"}}}}"#,
        "x".repeat(4 * 1024 * 1024)
    );
    assert_eq!(post(huge, "application/json").await, "413");
    assert_eq!(post("a: 1".into(), "text/plain").await, "415");
    let list = api.curl(&["-H", auth, &url]).await;
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).expect("list json");
    assert_eq!(list["items"], serde_json::json!([]), "nothing stored");
    assert_eq!(
        stdout(
            &api.curl(&[
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-H",
                auth,
                &format!("{}/version", api.url())
            ])
            .await
        ),
        "200",
        "server still up"
    );
}

const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: web\n        image: busybox\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_bumps_generation_and_stale_replace_conflicts() {
    let api = TestApiServer::start().await;
    let out = api
        .kubectl_stdin(&["apply", "-f", "-"], Some(DEPLOYMENT))
        .await;
    assert_eq!(
        stdout(&out),
        "deployment.apps/web created\n",
        "{}",
        stderr(&out)
    );
    let before = api
        .kubectl_ok(&["get", "deploy", "web", "-o", "yaml"])
        .await;
    assert_eq!(
        api.kubectl_ok(&["scale", "deploy", "web", "--replicas=4"])
            .await,
        "deployment.apps/web scaled\n"
    );
    let after = api
        .kubectl_ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.replicas} {.metadata.generation}",
        ])
        .await;
    assert_eq!(after, "4 2");
    // The object read before the scale carries a stale resourceVersion: replace must conflict.
    let stale = api
        .kubectl_stdin(&["replace", "-f", "-"], Some(&before))
        .await;
    assert!(!stale.status.success());
    assert!(
        stderr(&stale).contains("the object has been modified"),
        "{}",
        stderr(&stale)
    );
    let replicas = api
        .kubectl_ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"])
        .await;
    assert_eq!(replicas, "4", "the conflicting replace changed nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_list_sends_initial_events_then_the_end_bookmark() {
    let api = TestApiServer::start_with(
        std::sync::Arc::new(kwk_control_plane::storage::memory::MemoryStore::new()),
        "t,admin,1,system:masters\n",
    )
    .await;
    api.kubectl_stdin(&["apply", "-f", "-"], Some(CONFIGMAP))
        .await;
    let base = format!(
        "{}/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=1",
        api.url()
    );
    let url = format!(
        "{base}&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true"
    );
    let out = api.curl(&["-H", "Authorization: Bearer t", &url]).await;
    let events: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("event json"))
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(events[0]["object"]["metadata"]["name"], "demo");
    assert_eq!(events[1]["type"], "BOOKMARK");
    assert_eq!(
        events[1]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    // Without bookmarks the watch-list request is refused (clients fall back to list+watch).
    let refused = api
        .curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "Authorization: Bearer t",
            &format!("{base}&sendInitialEvents=true&resourceVersionMatch=NotOlderThan"),
        ])
        .await;
    assert_eq!(stdout(&refused), "422");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_side_apply_with_default_validation_updates_in_place() {
    let api = TestApiServer::start().await;
    let first = api
        .kubectl_stdin(&["apply", "-f", "-"], Some(DEPLOYMENT))
        .await;
    assert_eq!(
        stdout(&first),
        "deployment.apps/web created\n",
        "{}",
        stderr(&first)
    );
    let uid = api
        .kubectl_ok(&["get", "deploy", "web", "-o", "jsonpath={.metadata.uid}"])
        .await;
    let changed = DEPLOYMENT
        .replace("replicas: 2", "replicas: 3")
        .replace("image: busybox", "image: busybox:1.36");
    let second = api
        .kubectl_stdin(&["apply", "-f", "-"], Some(&changed))
        .await;
    assert_eq!(
        stdout(&second),
        "deployment.apps/web configured\n",
        "{}",
        stderr(&second)
    );
    let after = api
        .kubectl_ok(&["get", "deploy", "web", "-o", "jsonpath={.metadata.uid} {.spec.replicas} {.spec.template.spec.containers[0].image} {.metadata.generation}"])
        .await;
    assert_eq!(after, format!("{uid} 3 busybox:1.36 2"));
    let index = api.kubectl_ok(&["get", "--raw", "/openapi/v3"]).await;
    assert!(index.contains("\"apis/apps/v1\""), "{index}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_and_revisions_survive_an_apiserver_restart() {
    let api = TestApiServer::start().await;
    let out = api
        .kubectl_stdin(&["apply", "-f", "-"], Some(CONFIGMAP))
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    api.kubectl_ok(&["label", "cm", "demo", "tier=web"]).await;
    let before = api
        .kubectl_ok(&[
            "get",
            "cm",
            "demo",
            "-o",
            "jsonpath={.metadata.uid} {.metadata.resourceVersion} {.metadata.labels.tier}",
        ])
        .await;
    let list_rv_before: u64 = api
        .kubectl_ok(&["get", "--raw", "/api/v1/namespaces/default/configmaps"])
        .await
        .parse::<serde_json::Value>()
        .expect("list json")["metadata"]["resourceVersion"]
        .as_str()
        .expect("list resourceVersion")
        .parse()
        .expect("numeric resourceVersion");

    let api = api.restart().await;
    let after = api
        .kubectl_ok(&[
            "get",
            "cm",
            "demo",
            "-o",
            "jsonpath={.metadata.uid} {.metadata.resourceVersion} {.metadata.labels.tier}",
        ])
        .await;
    assert_eq!(
        after, before,
        "the same object, same uid and resourceVersion"
    );
    // Revisions continue after the restart: a new write gets a higher one.
    api.kubectl_ok(&["annotate", "cm", "demo", "note=after"])
        .await;
    let rv_after: u64 = api
        .kubectl_ok(&[
            "get",
            "cm",
            "demo",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ])
        .await
        .parse()
        .expect("numeric resourceVersion");
    assert!(rv_after > list_rv_before, "{rv_after} > {list_rv_before}");
    let namespaces = api.kubectl_ok(&["get", "ns", "-o", "name"]).await;
    assert_eq!(
        namespaces.lines().count(),
        4,
        "bootstrap namespaces are not duplicated: {namespaces}"
    );
}

const TWO_CONTAINER_DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: a
        image: busybox:1
      - name: b
        image: nginx:1
        env:
        - {name: X, value: \"1\"}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strategic_json_and_merge_patches_as_kubectl_sends_them() {
    let api = TestApiServer::start().await;
    let out = api
        .kubectl_stdin(&["apply", "-f", "-"], Some(TWO_CONTAINER_DEPLOYMENT))
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let containers =
        "jsonpath={range .spec.template.spec.containers[*]}{.name}={.image}{\" \"}{end}";

    // Strategic merge (kubectl's default): the list merges by name, `b` keeps its env.
    let patched = api
        .kubectl_ok(&[
            "patch",
            "deploy",
            "web",
            "-p",
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"b","image":"nginx:2"}]}}}}"#,
        ])
        .await;
    assert_eq!(patched, "deployment.apps/web patched\n");
    assert_eq!(
        api.kubectl_ok(&["get", "deploy", "web", "-o", containers])
            .await,
        "a=busybox:1 b=nginx:2 "
    );
    let env = api
        .kubectl_ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[1].env[0].value}",
        ])
        .await;
    assert_eq!(env, "1");
    // `kubectl set image` sends a strategic merge patch too.
    api.kubectl_ok(&["set", "image", "deploy/web", "a=busybox:2"])
        .await;
    // `$patch: delete` removes one element by its merge key.
    api.kubectl_ok(&[
        "patch",
        "deploy",
        "web",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"b","$patch":"delete"}]}}}}"#,
    ])
    .await;
    assert_eq!(
        api.kubectl_ok(&["get", "deploy", "web", "-o", containers])
            .await,
        "a=busybox:2 "
    );

    // JSON patch, with a failing `test` operation leaving the object alone.
    api.kubectl_ok(&[
        "patch",
        "deploy",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/replicas","value":3}]"#,
    ])
    .await;
    let failed = api
        .kubectl(&[
            "patch",
            "deploy",
            "web",
            "--type=json",
            "-p",
            r#"[{"op":"test","path":"/spec/replicas","value":5},{"op":"replace","path":"/spec/replicas","value":9}]"#,
        ])
        .await;
    assert!(!failed.status.success());
    assert!(
        stderr(&failed).contains("Invalid") || stderr(&failed).contains("test"),
        "{}",
        stderr(&failed)
    );
    assert_eq!(
        api.kubectl_ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"])
            .await,
        "3"
    );

    // Merge patch replaces lists whole.
    api.kubectl_ok(&[
        "patch",
        "deploy",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"c","image":"redis:7"}]}}}}"#,
    ])
    .await;
    assert_eq!(
        api.kubectl_ok(&["get", "deploy", "web", "-o", containers])
            .await,
        "c=redis:7 "
    );

    // A resourceVersion in the patch is a precondition.
    let stale = api
        .kubectl(&[
            "patch",
            "deploy",
            "web",
            "--type=merge",
            "-p",
            r#"{"metadata":{"resourceVersion":"1"},"spec":{"replicas":7}}"#,
        ])
        .await;
    assert!(
        stderr(&stale).contains("the object has been modified"),
        "{}",
        stderr(&stale)
    );
    // Strategic merge patch on the scale subresource.
    api.kubectl_ok(&["scale", "deploy", "web", "--replicas=4"])
        .await;
    assert_eq!(
        api.kubectl_ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"])
            .await,
        "4"
    );
}
