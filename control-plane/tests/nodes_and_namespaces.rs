//! The namespace, nodelifecycle and nodeipam controllers end to end: the real apiserver
//! (embedded store), real kubectl, the controller manager in-process with only the
//! controller a test needs (configured through `ControllerOptions`, as the
//! controller-manager flags do), and simulated nodes whose Lease renewals can be stopped.

mod support;

use support::eventually;

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::Api;
use kwk_controllers::runtime::ControllerManager;
use kwk_controllers::runtime::manager::{ControllerFactory, ControllerOptions};
use support::TestApiServer;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// An apiserver plus a controller manager running one controller; stops the manager when
/// dropped.
struct Cluster {
    api: TestApiServer,
    client: kube::Client,
    token: CancellationToken,
    _manager: JoinHandle<()>,
}

impl Cluster {
    async fn start(
        name: &'static str,
        factory: ControllerFactory,
        options: ControllerOptions,
    ) -> Self {
        Self::start_all(&[(name, factory)], options).await
    }

    /// An apiserver plus a controller manager running `controllers`.
    async fn start_all(
        controllers: &[(&'static str, ControllerFactory)],
        options: ControllerOptions,
    ) -> Self {
        let api = TestApiServer::start().await;
        let client = api.client().await;
        let manager = controllers.iter().fold(
            ControllerManager::new(client.clone()).with_options(options),
            |manager, (name, factory)| manager.register_with_options(name, *factory),
        );
        let token = CancellationToken::new();
        let manager = tokio::spawn(manager.run(token.clone()));
        Cluster {
            api,
            client,
            token,
            _manager: manager,
        }
    }

    async fn apply(&self, yaml: &str) {
        let out = self
            .api
            .kubectl_stdin(&["apply", "-f", "-"], Some(yaml))
            .await;
        assert!(
            out.status.success(),
            "kubectl apply: {}",
            support::stderr(&out)
        );
    }

    /// `kubectl get <args> -o jsonpath=<path>`, or `None` when kubectl fails (not found).
    async fn jsonpath(&self, args: &[&str], path: &str) -> Option<String> {
        let jsonpath = format!("jsonpath={path}");
        let mut all: Vec<&str> = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", &jsonpath]);
        let out = self.api.kubectl(&all).await;
        out.status.success().then(|| support::stdout(&out))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

fn namespace_cluster() -> (&'static str, ControllerFactory, ControllerOptions) {
    (
        "namespace",
        kwk_controllers::namespace::controller::controller,
        ControllerOptions::default(),
    )
}

/// A bit of everything, none of it with a controller behind it.
fn contents(ns: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings, namespace: {ns}}}\ndata: {{a: b}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: creds, namespace: {ns}}}\nstringData: {{k: v}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: {ns}}}\nspec:\n  ports: [{{port: 80}}]\n---\n\
         apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: {ns}}}\nspec:\n  \
           selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    \
           spec: {{containers: [{{name: app, image: nginx}}]}}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {{name: loner, namespace: {ns}}}\nspec: {{containers: [{{name: app, image: nginx}}]}}\n---\n\
         apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: robot, namespace: {ns}}}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: reader, namespace: {ns}}}\n\
         rules: [{{apiGroups: [''], resources: [pods], verbs: [get]}}]\n---\n\
         apiVersion: batch/v1\nkind: Job\nmetadata: {{name: once, namespace: {ns}}}\nspec:\n  template:\n    \
           spec: {{restartPolicy: Never, containers: [{{name: app, image: busybox}}]}}\n---\n\
         apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: data, namespace: {ns}}}\nspec:\n  \
           accessModes: [ReadWriteOnce]\n  resources: {{requests: {{storage: 1Gi}}}}\n---\n\
         apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {{name: lock, namespace: {ns}}}\nspec: {{}}\n---\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_deletes_everything_in_it() {
    let (name, factory, options) = namespace_cluster();
    // The claim carries `kubernetes.io/pvc-protection` (StorageObjectInUseProtection
    // admission): as in a full controller manager, pvc-protection lets it go.
    let pvc_protection: ControllerFactory =
        |c, _| kwk_controllers::volumeprotection::controller::pvc_controller(c);
    let cluster = Cluster::start_all(
        &[(name, factory), ("pvc-protection", pvc_protection)],
        options,
    )
    .await;
    cluster
        .api
        .kubectl_ok(&["create", "namespace", "doomed"])
        .await;
    cluster.apply(&contents("doomed")).await;

    let out = cluster
        .api
        .kubectl(&["delete", "namespace", "doomed", "--timeout=60s"])
        .await;
    assert!(
        out.status.success(),
        "kubectl delete ns: {}",
        support::stderr(&out)
    );
    let out = cluster.api.kubectl(&["get", "namespace", "doomed"]).await;
    assert!(!out.status.success(), "namespace still there");
    assert!(
        support::stderr(&out).contains("NotFound"),
        "{}",
        support::stderr(&out)
    );
    for kind in [
        "configmaps",
        "secrets",
        "services",
        "deployments",
        "pods",
        "jobs",
        "leases",
        "persistentvolumeclaims",
    ] {
        let left = cluster
            .jsonpath(&[kind, "-n", "doomed"], "{.items[*].metadata.name}")
            .await;
        assert_eq!(left.as_deref(), Some(""), "{kind} left in doomed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finalizer_holds_the_namespace_in_terminating() {
    let (name, factory, options) = namespace_cluster();
    let cluster = Cluster::start(name, factory, options).await;
    cluster
        .api
        .kubectl_ok(&["create", "namespace", "held"])
        .await;
    cluster
        .apply(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: keep\n  namespace: held\n  \
             finalizers: [example.com/hold]\n---\n\
             apiVersion: v1\nkind: ConfigMap\nmetadata: {name: plain, namespace: held}\n---\n",
        )
        .await;
    cluster
        .api
        .kubectl_ok(&["delete", "namespace", "held", "--wait=false"])
        .await;

    let condition = "{.status.phase} {.status.conditions[?(@.type==\"NamespaceFinalizersRemaining\")].status} \
                     {.status.conditions[?(@.type==\"NamespaceFinalizersRemaining\")].reason}";
    eventually(
        Duration::from_secs(20),
        "Terminating, finalizers remaining",
        || async {
            cluster
                .jsonpath(&["namespace", "held"], condition)
                .await
                .as_deref()
                == Some("Terminating True SomeFinalizerRemain")
        },
    )
    .await;
    let message = cluster
        .jsonpath(
            &["namespace", "held"],
            "{.status.conditions[?(@.type==\"NamespaceFinalizersRemaining\")].message}",
        )
        .await
        .unwrap_or_default();
    assert!(
        message.contains("example.com/hold in 1 resource instances"),
        "{message}"
    );
    let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "held");
    eventually(
        Duration::from_secs(10),
        "plain deleted, keep deleting",
        || async {
            let plain = config_maps.get_opt("plain").await.expect("get");
            let keep = config_maps.get_opt("keep").await.expect("get");
            plain.is_none() && keep.is_some_and(|k| k.metadata.deletion_timestamp.is_some())
        },
    )
    .await;
    // Still held a while later.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        cluster
            .jsonpath(&["namespace", "held"], "{.status.phase}")
            .await
            .as_deref()
            == Some("Terminating"),
        "held by the finalizer"
    );

    cluster
        .api
        .kubectl_ok(&[
            "patch",
            "configmap",
            "keep",
            "-n",
            "held",
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ])
        .await;
    eventually(
        Duration::from_secs(30),
        "namespace held is gone",
        || async {
            cluster
                .jsonpath(&["namespace", "held"], "{.metadata.name}")
                .await
                .is_none()
        },
    )
    .await;
}

/// A pod bound to `node` with `tolerations` (a YAML flow list).
fn pod_yaml(name: &str, node: &str, tolerations: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  \
         nodeName: {node}\n  tolerations: {tolerations}\n  containers: [{{name: app, image: nginx}}]\n---\n"
    )
}

async fn deleting(pods: &Api<Pod>, name: &str) -> bool {
    pods.get_opt(name)
        .await
        .expect("get pod")
        .is_none_or(|p| p.metadata.deletion_timestamp.is_some())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_goes_unknown_is_tainted_and_its_pods_are_evicted() {
    let options = ControllerOptions {
        node_monitor_grace_period: Duration::from_secs(3),
        ..ControllerOptions::default()
    };
    let cluster = Cluster::start(
        "nodelifecycle",
        kwk_controllers::nodelifecycle::controller::controller,
        options,
    )
    .await;
    let _healthy = support::simulate_nodes(&cluster.client, &[("healthy", "zone-a")]).await;
    let silent = support::simulate_nodes(&cluster.client, &[("silent", "zone-b")]).await;
    let unreachable = "{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute";
    cluster
        .apply(&format!(
            "{}{}{}{}",
            pod_yaml("plain", "silent", "[]"),
            pod_yaml(
                "brief",
                "silent",
                &format!("[{unreachable}, tolerationSeconds: 3}}]")
            ),
            pod_yaml("forever", "silent", &format!("[{unreachable}}}]")),
            pod_yaml("safe", "healthy", "[]"),
        ))
        .await;
    for (pod, ip) in [
        ("plain", "10.244.1.2"),
        ("brief", "10.244.1.3"),
        ("forever", "10.244.1.4"),
        ("safe", "10.244.0.2"),
    ] {
        support::mark_pod_running_ready(&cluster.client, "default", pod, ip).await;
    }
    // Both nodes stay healthy while their Leases are renewed.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    assert!(
        !deleting(&pods, "plain").await,
        "nothing evicted from a live node"
    );

    drop(silent);
    let ready = "{.status.conditions[?(@.type==\"Ready\")].status} {.status.conditions[?(@.type==\"Ready\")].reason}";
    eventually(
        Duration::from_secs(10),
        "silent node Ready=Unknown",
        || async {
            cluster
                .jsonpath(&["node", "silent"], ready)
                .await
                .as_deref()
                == Some("Unknown NodeStatusUnknown")
        },
    )
    .await;
    let taints = "{range .spec.taints[*]}{.key}:{.effect} {end}";
    eventually(
        Duration::from_secs(5),
        "silent node tainted unreachable",
        || async {
            cluster
                .jsonpath(&["node", "silent"], taints)
                .await
                .is_some_and(|t| t.contains("node.kubernetes.io/unreachable:NoExecute"))
        },
    )
    .await;
    eventually(Duration::from_secs(5), "plain evicted", || {
        deleting(&pods, "plain")
    })
    .await;
    assert!(
        !deleting(&pods, "brief").await,
        "brief tolerates unreachable for 3 s"
    );
    eventually(Duration::from_secs(8), "brief evicted after 3 s", || {
        deleting(&pods, "brief")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !deleting(&pods, "forever").await,
        "forever tolerates unreachable for ever"
    );
    let forever_ready = cluster
        .jsonpath(
            &["pod", "forever"],
            "{.status.conditions[?(@.type==\"Ready\")].status}",
        )
        .await;
    assert_eq!(
        forever_ready.as_deref(),
        Some("False"),
        "pods of a silent node are not ready"
    );

    assert_eq!(
        cluster
            .jsonpath(&["node", "healthy"], ready)
            .await
            .as_deref()
            .map(|s| s.starts_with("True")),
        Some(true),
        "the healthy node stays Ready"
    );
    assert_eq!(
        cluster
            .jsonpath(&["node", "healthy"], taints)
            .await
            .as_deref(),
        Some("")
    );
    assert!(
        !deleting(&pods, "safe").await,
        "pods of the healthy node stay"
    );
}

async fn pod_cidr(cluster: &Cluster, node: &str) -> Option<String> {
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    let node = nodes.get(node).await.expect("get node");
    let spec = node.spec?;
    let cidrs = spec.pod_cidrs.unwrap_or_default();
    assert!(
        spec.pod_cidr.is_none() || cidrs.first() == spec.pod_cidr.as_ref(),
        "podCIDR is podCIDRs[0]"
    );
    spec.pod_cidr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_get_distinct_pod_cidrs_and_a_freed_one_is_reused() {
    let options = ControllerOptions {
        allocate_node_cidrs: true,
        cluster_cidr: Some("10.244.0.0/16".into()),
        ..ControllerOptions::default()
    };
    let cluster = Cluster::start(
        "nodeipam",
        kwk_controllers::nodeipam::controller::controller,
        options,
    )
    .await;
    let _nodes =
        support::simulate_nodes(&cluster.client, &[("n1", "a"), ("n2", "a"), ("n3", "a")]).await;
    let mut cidrs = Vec::new();
    for node in ["n1", "n2", "n3"] {
        eventually(
            Duration::from_secs(10),
            &format!("{node} gets a podCIDR"),
            || async { pod_cidr(&cluster, node).await.is_some() },
        )
        .await;
        cidrs.push(pod_cidr(&cluster, node).await.unwrap_or_default());
    }
    let mut sorted = cidrs.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24"],
        "distinct /24s from the bottom: {cidrs:?}"
    );
    let freed = cidrs[1].clone();

    cluster.api.kubectl_ok(&["delete", "node", "n2"]).await;
    // Let the controller's cache see the node go.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _more = support::simulate_nodes(&cluster.client, &[("n4", "a")]).await;
    eventually(Duration::from_secs(10), "n4 gets a podCIDR", || async {
        pod_cidr(&cluster, "n4").await.is_some()
    })
    .await;
    assert_eq!(
        pod_cidr(&cluster, "n4").await,
        Some(freed),
        "the lowest free /24 is reused"
    );
}
