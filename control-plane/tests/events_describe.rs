//! Events through core/v1 and events.k8s.io/v1 (one storage, both shapes), their field
//! selectors, `kubectl --as` impersonation, and `kubectl describe` of the common kinds (it
//! lists events by field selector and reads related objects).

mod support;

use serde_json::{Value, json};
use support::{TestApiServer, stderr, stdout};

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

const CORE_EVENT: &str = r#"apiVersion: v1
kind: Event
metadata:
  name: web.pulled
involvedObject:
  apiVersion: v1
  kind: Pod
  name: web
  namespace: default
  uid: 11111111-2222-3333-4444-555555555555
reason: Pulled
message: Successfully pulled image "busybox"
type: Normal
source:
  component: kubelet
  host: node-1
firstTimestamp: "2024-05-01T10:00:00Z"
lastTimestamp: "2024-05-01T10:05:00Z"
count: 3
reportingComponent: kubelet
reportingInstance: node-1
"#;

const NEW_EVENT: &str = r#"apiVersion: events.k8s.io/v1
kind: Event
metadata:
  name: web.backoff
regarding:
  apiVersion: v1
  kind: Pod
  name: web
  namespace: default
related:
  kind: Node
  name: node-1
note: Back-off restarting failed container
reason: BackOff
type: Warning
action: Restarting
eventTime: "2024-05-01T10:06:00.000000Z"
reportingController: kubelet
reportingInstance: node-1
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_one_set_served_in_both_versions() {
    let api = TestApiServer::start().await;
    apply(&api, CORE_EVENT).await;
    apply(&api, NEW_EVENT).await;
    apply(
        &api,
        &CORE_EVENT
            .replace("name: web.pulled", "name: db.pulled")
            .replace("name: web\n", "name: db\n"),
    )
    .await;
    // The core/v1 event through events.k8s.io/v1 ...
    let pulled = get_json(&api, &["events.v1.events.k8s.io", "web.pulled"]).await;
    assert_eq!(pulled["apiVersion"], "events.k8s.io/v1");
    assert_eq!(pulled["note"], "Successfully pulled image \"busybox\"");
    assert_eq!(pulled["regarding"]["name"], "web");
    assert_eq!(pulled["deprecatedSource"]["host"], "node-1");
    assert_eq!(pulled["deprecatedCount"], 3);
    assert_eq!(pulled["deprecatedFirstTimestamp"], "2024-05-01T10:00:00Z");
    assert_eq!(pulled["reportingController"], "kubelet");
    assert!(pulled.get("message").is_none() && pulled.get("involvedObject").is_none());
    // ... and the events.k8s.io/v1 event through core/v1.
    let backoff = get_json(&api, &["events.v1.", "web.backoff"]).await;
    assert_eq!(backoff["apiVersion"], "v1");
    assert_eq!(backoff["message"], "Back-off restarting failed container");
    assert_eq!(backoff["involvedObject"]["kind"], "Pod");
    assert_eq!(backoff["related"]["name"], "node-1");
    assert_eq!(backoff["reportingComponent"], "kubelet");
    assert_eq!(backoff["eventTime"], "2024-05-01T10:06:00.000000Z");
    // Same objects: same resourceVersion and uid either way, and lists hold all three.
    let same = get_json(&api, &["events.v1.", "web.pulled"]).await;
    assert_eq!(same["metadata"]["uid"], pulled["metadata"]["uid"]);
    assert_eq!(
        same["metadata"]["resourceVersion"],
        pulled["metadata"]["resourceVersion"]
    );
    let names = |list: &str| -> Vec<String> { list.lines().map(String::from).collect() };
    assert_eq!(
        names(
            &api.kubectl_ok(&["get", "events.events.k8s.io", "-o", "name"])
                .await
        ),
        [
            "event.events.k8s.io/db.pulled",
            "event.events.k8s.io/web.backoff",
            "event.events.k8s.io/web.pulled"
        ]
    );
    // Lists (streamed from the stored bytes) convert too.
    let list = get_json(&api, &["events.events.k8s.io"]).await;
    let items = list["items"].as_array().expect("items");
    assert!(
        items.iter().all(|e| e["apiVersion"] == "events.k8s.io/v1"
            && e.get("regarding").is_some()
            && e.get("involvedObject").is_none()),
        "{list}"
    );
    let core_list = get_json(&api, &["events.v1."]).await;
    assert!(
        core_list["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|e| e["apiVersion"] == "v1"
                && e.get("involvedObject").is_some()
                && e.get("note").is_none()),
        "{core_list}"
    );
    // Field selectors as `kubectl get events --field-selector` sends them.
    let selected = api
        .kubectl_ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=web,type=Warning",
            "-o",
            "name",
        ])
        .await;
    assert_eq!(selected, "event/web.backoff\n");
    let selected = api
        .kubectl_ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.kind=Pod,reason=Pulled",
            "-o",
            "name",
        ])
        .await;
    assert_eq!(names(&selected), ["event/db.pulled", "event/web.pulled"]);
    let selected = api
        .kubectl_ok(&[
            "get",
            "events.events.k8s.io",
            "--field-selector",
            "regarding.name=db",
            "-o",
            "name",
        ])
        .await;
    assert_eq!(selected, "event.events.k8s.io/db.pulled\n");
    // `kubectl events --for` selects by involvedObject kind, apiVersion and name.
    let for_pod = api.kubectl_ok(&["events", "--for", "pod/web"]).await;
    let rows: Vec<&str> = for_pod.lines().collect();
    assert_eq!(rows.len(), 3, "{for_pod}");
    assert!(rows[0].starts_with("LAST SEEN"), "{for_pod}");
    assert!(
        for_pod.contains("Pulled") && for_pod.contains("BackOff") && !for_pod.contains("pod/db"),
        "{for_pod}"
    );
    // The table: reason, object and message.
    let table = api
        .kubectl_ok(&["get", "events", "--field-selector", "reason=BackOff"])
        .await;
    assert!(
        table.contains("Warning")
            && table.contains("pod/web")
            && table.contains("Back-off restarting failed container"),
        "{table}"
    );
    // Updating through one version shows through the other.
    api.kubectl_ok(&[
        "patch",
        "events.v1.events.k8s.io",
        "web.backoff",
        "--type=merge",
        "-p",
        r#"{"note":"changed"}"#,
    ])
    .await;
    assert_eq!(
        get_json(&api, &["events.v1.", "web.backoff"]).await["message"],
        "changed"
    );
    api.kubectl_ok(&["delete", "events.v1.", "web.backoff"])
        .await;
    let gone = api
        .kubectl(&["get", "events.v1.events.k8s.io", "web.backoff"])
        .await;
    assert!(stderr(&gone).contains("not found"), "{}", stderr(&gone));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_as_impersonates_users_and_groups() {
    let api = TestApiServer::start().await;
    let whoami: Value = serde_json::from_str(
        &api.kubectl_ok(&[
            "--as=jane",
            "--as-group=devs",
            "auth",
            "whoami",
            "-o",
            "json",
        ])
        .await,
    )
    .expect("json");
    assert_eq!(whoami["status"]["userInfo"]["username"], "jane");
    assert_eq!(
        whoami["status"]["userInfo"]["groups"],
        json!(["devs", "system:authenticated"])
    );
    let table = api
        .kubectl_ok(&[
            "--as=system:serviceaccount:kube-system:builder",
            "auth",
            "whoami",
        ])
        .await;
    assert!(
        table.contains("system:serviceaccount:kube-system:builder"),
        "{table}"
    );
    assert!(
        table.contains("system:serviceaccounts:kube-system"),
        "{table}"
    );
    let me = api
        .kubectl_ok(&[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ])
        .await;
    assert_eq!(me, "kubernetes-admin");
}

const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: c
        image: nginx:1.27
        ports:
        - containerPort: 80
"#;

const POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  nodeName: node-1
  containers:
  - name: c
    image: nginx:1.27
"#;

const SERVICE: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 8080
"#;

const NODE: &str = r#"apiVersion: v1
kind: Node
metadata:
  name: node-1
  labels: {kubernetes.io/hostname: node-1}
spec:
  podCIDR: 10.244.0.0/24
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_describe_common_kinds() {
    let api = TestApiServer::start().await;
    for yaml in [DEPLOYMENT, POD, SERVICE, NODE] {
        apply(&api, yaml).await;
    }
    let uid = get_json(&api, &["pod", "web"]).await["metadata"]["uid"].clone();
    let uid = uid.as_str().expect("uid");
    apply(
        &api,
        &format!(
            "apiVersion: v1\nkind: Event\nmetadata:\n  name: web.1\ninvolvedObject:\n  kind: Pod\n  name: web\n  namespace: default\n  uid: {uid}\nreason: Scheduled\nmessage: Successfully assigned default/web to node-1\ntype: Normal\nsource:\n  component: default-scheduler\nfirstTimestamp: \"2024-05-01T10:00:00Z\"\nlastTimestamp: \"2024-05-01T10:00:00Z\"\ncount: 1\n"
        ),
    )
    .await;
    // An event of another pod named alike must not show.
    apply(
        &api,
        "apiVersion: v1\nkind: Event\nmetadata:\n  name: other.1\ninvolvedObject:\n  kind: Pod\n  name: other\n  namespace: default\nreason: Killing\nmessage: Stopping container\ntype: Normal\n",
    )
    .await;
    let pod = api.kubectl_ok(&["describe", "pod", "web"]).await;
    for line in [
        "Name:",
        "Namespace:",
        "Node:",
        "node-1",
        "Labels:",
        "app=web",
        "Image:",
        "nginx:1.27",
        "Events:",
        "Scheduled",
        "Successfully assigned default/web to node-1",
    ] {
        assert!(pod.contains(line), "{line} missing in:\n{pod}");
    }
    assert!(!pod.contains("Stopping container"), "{pod}");
    let deploy = api.kubectl_ok(&["describe", "deployment", "web"]).await;
    for line in [
        "Name:",
        "web",
        "Replicas:",
        "2 desired",
        "Selector:",
        "app=web",
        "nginx:1.27",
        "StrategyType:",
        "RollingUpdate",
    ] {
        assert!(deploy.contains(line), "{line} missing in:\n{deploy}");
    }
    let svc = api.kubectl_ok(&["describe", "service", "web"]).await;
    for line in [
        "Name:",
        "Selector:",
        "app=web",
        "Type:",
        "ClusterIP",
        "Port:",
        "80/TCP",
        "TargetPort:",
        "8080/TCP",
    ] {
        assert!(svc.contains(line), "{line} missing in:\n{svc}");
    }
    let node = api.kubectl_ok(&["describe", "node", "node-1"]).await;
    for line in [
        "Name:",
        "node-1",
        "kubernetes.io/hostname=node-1",
        "PodCIDR:",
        "10.244.0.0/24",
        "Non-terminated Pods:",
        "web",
    ] {
        assert!(node.contains(line), "{line} missing in:\n{node}");
    }
    let ns = api.kubectl_ok(&["describe", "namespace", "default"]).await;
    for line in [
        "Name:",
        "default",
        "Status:",
        "Active",
        "No resource quota.",
        "No LimitRange resource.",
    ] {
        assert!(ns.contains(line), "{line} missing in:\n{ns}");
    }
}
