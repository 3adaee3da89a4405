//! The ServiceAccount and TaintNodesByCondition admission plugins end to end: the real
//! apiserver with every plugin on, the serviceaccount and node-lifecycle controllers
//! in-process, real kubectl. A pod created right after its namespace waits for the
//! controller's `default` account; a missing account is refused with upstream's message;
//! the token volume and its mounts, `automountServiceAccountToken` on the pod and the
//! account, mirror pods; a new Node is tainted `not-ready` until it is Ready.

mod support;

use support::eventually;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use kwk_control_plane::apiserver::admission::AdmissionPlugins;
use kwk_controllers::runtime::ControllerManager;
use serde_json::{Value, json};
use support::TestApiServer;
use tokio_util::sync::CancellationToken;

const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The apiserver with all admission plugins and the serviceaccount and nodelifecycle
/// controllers; the controllers stop when dropped.
struct Cluster {
    api: TestApiServer,
    client: kube::Client,
    _stop: tokio_util::sync::DropGuard,
}

impl Cluster {
    async fn start() -> Self {
        let api = TestApiServer::start_with_admission(AdmissionPlugins::all()).await;
        let client = api.client().await;
        let manager = ControllerManager::new(client.clone())
            .register_with_options(
                "serviceaccount",
                kwk_controllers::serviceaccount::controller,
            )
            .register_with_options(
                "nodelifecycle",
                kwk_controllers::nodelifecycle::controller::controller,
            );
        let token = CancellationToken::new();
        tokio::spawn(manager.run(token.clone()));
        Cluster {
            api,
            client,
            _stop: token.drop_guard(),
        }
    }

    /// `kubectl create -f -` of `yaml`: the output, or the error text.
    async fn create(&self, yaml: &str) -> Result<String, String> {
        let out = self
            .api
            .kubectl_stdin(&["create", "-f", "-"], Some(yaml))
            .await;
        if out.status.success() {
            Ok(support::stdout(&out))
        } else {
            Err(support::stderr(&out))
        }
    }

    async fn pod(&self, namespace: &str, name: &str) -> Value {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        serde_json::to_value(pods.get(name).await.expect("get pod")).expect("json")
    }
}

fn pod_yaml(namespace: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{spec}"
    )
}

/// The `kube-api-access-*` volumes of a pod.
fn token_volumes(pod: &Value) -> Vec<Value> {
    pod["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| {
            v["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("kube-api-access-"))
        })
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_right_after_its_namespace_runs_as_default_with_the_token_volume() {
    let cluster = Cluster::start().await;
    // No wait for the controller: admission retries the `default` account, as upstream.
    cluster
        .create("apiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n")
        .await
        .expect("namespace");
    let spec = "  initContainers: [{name: init, image: busybox}]\n  containers:\n  \
                - {name: app, image: busybox}\n  \
                - {name: own, image: busybox, volumeMounts: [{name: mine, mountPath: /var/run/secrets/kubernetes.io/serviceaccount}]}\n  \
                volumes: [{name: mine, emptyDir: {}}]\n";
    cluster
        .create(&pod_yaml("demo", "web", spec))
        .await
        .expect("pod created once the default account exists");
    let pod = cluster.pod("demo", "web").await;
    assert_eq!(pod["spec"]["serviceAccountName"], "default");

    let volumes = token_volumes(&pod);
    assert_eq!(volumes.len(), 1, "one token volume: {volumes:?}");
    let name = volumes[0]["name"].as_str().expect("name").to_string();
    let suffix = name.trim_start_matches("kube-api-access-");
    assert!(
        suffix.len() == 5
            && suffix
                .chars()
                .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)),
        "{name}"
    );
    assert_eq!(
        volumes[0]["projected"],
        json!({
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace",
                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
        })
    );
    let token_mount = json!({"name": name, "mountPath": MOUNT_PATH, "readOnly": true});
    assert_eq!(
        pod["spec"]["initContainers"][0]["volumeMounts"],
        json!([token_mount])
    );
    assert_eq!(
        pod["spec"]["containers"][0]["volumeMounts"],
        json!([token_mount])
    );
    assert_eq!(
        pod["spec"]["containers"][1]["volumeMounts"],
        json!([{"name": "mine", "mountPath": MOUNT_PATH}]),
        "a container with its own mount at the path keeps it alone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_naming_a_missing_account_is_refused() {
    let cluster = Cluster::start().await;
    let err = cluster
        .create(&pod_yaml(
            "default",
            "lost",
            "  serviceAccountName: ghost\n  containers: [{name: app, image: busybox}]\n",
        ))
        .await
        .expect_err("refused");
    assert!(
        err.contains(
            "Error from server (Forbidden): error when creating \"STDIN\": pods \"lost\" is \
             forbidden: error looking up service account default/ghost: serviceaccount \"ghost\" \
             not found"
        ),
        "{err}"
    );
    // Through a client: 403 Forbidden with the same message.
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"generateName": "lost-"},
        "spec": {"serviceAccountName": "ghost", "containers": [{"name": "app", "image": "busybox"}]},
    }))
    .expect("pod");
    match pods.create(&PostParams::default(), &pod).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
            assert_eq!(
                status.message,
                "pods \"lost-\" is forbidden: error looking up service account default/ghost: \
                 serviceaccount \"ghost\" not found"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automount_false_on_the_pod_or_the_account_is_respected() {
    let cluster = Cluster::start().await;
    cluster
        .create(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: quiet, namespace: default}\n\
             automountServiceAccountToken: false\n",
        )
        .await
        .expect("account");
    let container = "  containers: [{name: app, image: busybox}]\n";
    let cases = [
        ("pod-off", "  automountServiceAccountToken: false\n", false),
        ("account-off", "  serviceAccountName: quiet\n", false),
        (
            "pod-wins",
            "  serviceAccountName: quiet\n  automountServiceAccountToken: true\n",
            true,
        ),
    ];
    for (name, fields, mounted) in cases {
        cluster
            .create(&pod_yaml("default", name, &format!("{fields}{container}")))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let pod = cluster.pod("default", name).await;
        assert_eq!(token_volumes(&pod).len(), usize::from(mounted), "{name}");
        let mounts = &pod["spec"]["containers"][0]["volumeMounts"];
        assert_eq!(
            mounts.as_array().map_or(0, Vec::len),
            usize::from(mounted),
            "{name}: {mounts}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_pods_are_left_alone_but_may_not_reference_accounts() {
    let cluster = Cluster::start().await;
    let mirror = |name: &str, extra: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\n  \
             annotations: {{kubernetes.io/config.mirror: abc}}\nspec:\n  nodeName: node-1\n{extra}  \
             containers: [{{name: app, image: busybox}}]\n"
        )
    };
    cluster
        .create(&mirror("static-web", ""))
        .await
        .expect("mirror pod");
    let pod = cluster.pod("default", "static-web").await;
    assert_eq!(pod["spec"]["serviceAccountName"], Value::Null);
    assert!(token_volumes(&pod).is_empty(), "{pod}");

    for (name, extra, reason) in [
        (
            "with-account",
            "  serviceAccountName: default\n",
            "a mirror pod may not reference service accounts",
        ),
        (
            "with-secret",
            "  volumes: [{name: s, secret: {secretName: creds}}]\n",
            "a mirror pod may not reference secrets",
        ),
    ] {
        let err = cluster
            .create(&mirror(name, extra))
            .await
            .expect_err("refused");
        assert!(
            err.contains(&format!("pods \"{name}\" is forbidden: {reason}")),
            "{err}"
        );
    }
}

/// The node's `NoSchedule` taints as `key:effect` strings.
async fn taints(nodes: &Api<Node>, name: &str) -> Vec<String> {
    let node = nodes.get(name).await.expect("get node");
    node.spec
        .and_then(|s| s.taints)
        .unwrap_or_default()
        .iter()
        .map(|t| format!("{}:{}", t.key, t.effect))
        .collect()
}

/// Posts `Ready=<ready>` with a fresh heartbeat and renews the node's Lease.
async fn report(client: &kube::Client, name: &str, ready: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    let now = Time(Timestamp::now());
    let status = json!({"status": {"conditions": [{
        "type": "Ready", "status": ready, "reason": "KubeletReady", "message": "test",
        "lastHeartbeatTime": now, "lastTransitionTime": now,
    }]}});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .expect("node status");
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let renew = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40,
                 "renewTime": MicroTime(Timestamp::now())}});
    leases
        .patch(
            name,
            &PatchParams::apply("test").force(),
            &Patch::Apply(renew),
        )
        .await
        .expect("lease");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_is_tainted_not_ready_until_it_is_ready() {
    let cluster = Cluster::start().await;
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    // As a kubelet registers: its own taint, Ready=False until the runtime is up.
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": "node-1", "labels": {"kubernetes.io/hostname": "node-1"}},
        "spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]},
    }))
    .expect("node");
    let created = nodes
        .create(&PostParams::default(), &node)
        .await
        .expect("create node");
    let created_taints: Vec<String> = created
        .spec
        .and_then(|s| s.taints)
        .unwrap_or_default()
        .iter()
        .map(|t| format!("{}:{}", t.key, t.effect))
        .collect();
    assert_eq!(
        created_taints,
        [
            "dedicated:NoSchedule",
            "node.kubernetes.io/not-ready:NoSchedule"
        ]
    );
    report(&cluster.client, "node-1", "False").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        taints(&nodes, "node-1")
            .await
            .contains(&"node.kubernetes.io/not-ready:NoSchedule".to_string()),
        "a node that is not Ready keeps the taint"
    );

    report(&cluster.client, "node-1", "True").await;
    eventually(
        Duration::from_secs(15),
        "node-lifecycle lifts the not-ready taint of a Ready node",
        || async { taints(&nodes, "node-1").await == ["dedicated:NoSchedule"] },
    )
    .await;

    // A node that brings the taint itself keeps one copy.
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": "node-2"},
        "spec": {"taints": [{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}]},
    }))
    .expect("node");
    let created = nodes
        .create(&PostParams::default(), &node)
        .await
        .expect("create node");
    assert_eq!(
        created.spec.and_then(|s| s.taints).map(|t| t.len()),
        Some(1)
    );
}
