//! The endpointslice, garbagecollector, disruption and podgc controllers end to end: the
//! real apiserver (embedded store), real kubectl, the controller manager in-process with
//! only the controllers a test needs, simulated nodes, and pods created bound to them and
//! marked running/ready through the status subresource (what a kubelet reports).

mod support;

use support::eventually;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::SignedDuration;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kwk_controllers::podgc::controller::{PodGcConfig, controller_with};
use kwk_controllers::runtime::{ControllerManager, DEFAULT_CONTROLLERS};
use serde_json::json;
use support::TestApiServer;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// An apiserver plus a controller manager; stops the manager when dropped.
struct Cluster {
    api: TestApiServer,
    client: kube::Client,
    token: CancellationToken,
    manager: Option<JoinHandle<()>>,
}

impl Cluster {
    /// With the default controllers named in `controllers`.
    async fn start(controllers: &[&str]) -> Self {
        Self::start_with(|client| {
            DEFAULT_CONTROLLERS
                .iter()
                .filter(|(name, _)| controllers.contains(name))
                .fold(ControllerManager::new(client), |m, (name, factory)| {
                    m.register_with_options(name, *factory)
                })
        })
        .await
    }

    async fn start_with(manager: impl FnOnce(kube::Client) -> ControllerManager) -> Self {
        let api = TestApiServer::start().await;
        let client = api.client().await;
        let manager = manager(client.clone());
        let token = CancellationToken::new();
        let manager = tokio::spawn(manager.run(token.clone()));
        Cluster {
            api,
            client,
            token,
            manager: Some(manager),
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

    async fn exists(&self, args: &[&str]) -> bool {
        self.jsonpath(args, "{.metadata.name}").await.is_some()
    }

    async fn ready_ready(&self, name: &str, ip: &str) {
        support::mark_pod_running_ready(&self.client, "default", name, ip).await;
    }

    /// Running with an IP, but not ready.
    async fn running_unready(&self, name: &str, ip: &str) {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), "default");
        let status = json!({"status": {
            "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": "False"}],
        }});
        pods.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
            .await
            .expect("pod status");
    }

    async fn stop(mut self) {
        self.token.cancel();
        if let Some(manager) = self.manager.take() {
            tokio::time::timeout(Duration::from_secs(10), manager)
                .await
                .expect("the manager stops when cancelled")
                .expect("join");
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// A pod bound to `node`, labelled `labels` (a YAML flow map), owned by `owner` (YAML of
/// one ownerReferences entry) if given, with a container port named `http` (8080).
fn pod_yaml(name: &str, node: &str, labels: &str, owner: Option<&str>) -> String {
    let owner = owner
        .map(|o| format!("  ownerReferences:\n  - {o}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {labels}\n{owner}\
         spec:\n  nodeName: {node}\n  containers:\n  - name: app\n    image: nginx\n    \
         ports:\n    - name: http\n      containerPort: 8080\n---\n"
    )
}

const SLICES_OF_WEB: &[&str] = &["endpointslices", "-l", "kubernetes.io/service-name=web"];
/// `name=ready ` per endpoint of every slice of `web`.
const ENDPOINT_READINESS: &str =
    "{range .items[*]}{range .endpoints[*]}{.targetRef.name}={.conditions.ready} {end}{end}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_gets_an_endpoint_slice_of_its_pods() {
    let cluster = Cluster::start(&["endpointslice", "garbagecollector"]).await;
    let _nodes =
        support::simulate_nodes(&cluster.client, &[("n1", "zone-a"), ("n2", "zone-b")]).await;
    let service = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector: {app: web}\n  \
                   ports:\n  - name: web\n    port: 80\n    targetPort: http\n---\n";
    let pods: String = [("web-0", "n1"), ("web-1", "n2"), ("web-2", "n1")]
        .iter()
        .map(|(name, node)| pod_yaml(name, node, "{app: web}", None))
        .collect();
    let other = pod_yaml("db-0", "n1", "{app: db}", None);
    cluster.apply(&format!("{service}{pods}{other}")).await;
    cluster.ready_ready("web-0", "10.244.0.10").await;
    cluster.ready_ready("web-1", "10.244.0.11").await;
    cluster.running_unready("web-2", "10.244.0.12").await;
    cluster.ready_ready("db-0", "10.244.0.20").await;

    let readiness = || async { cluster.jsonpath(SLICES_OF_WEB, ENDPOINT_READINESS).await };
    let want = "web-0=true web-1=true web-2=false ";
    eventually(Duration::from_secs(20), "3 endpoints, 2 ready", || async {
        readiness().await.as_deref() == Some(want)
    })
    .await;
    let names = cluster
        .jsonpath(SLICES_OF_WEB, "{.items[*].metadata.name}")
        .await
        .unwrap_or_default();
    assert_eq!(names.split_whitespace().count(), 1, "one slice: {names}");
    assert!(names.starts_with("web-"), "{names}");
    let ports = cluster
        .jsonpath(
            SLICES_OF_WEB,
            "{.items[0].ports[0].name}:{.items[0].ports[0].port}",
        )
        .await;
    assert_eq!(
        ports.as_deref(),
        Some("web:8080"),
        "named targetPort resolved"
    );
    let detail = cluster
        .jsonpath(
            SLICES_OF_WEB,
            "{.items[0].addressType} {.items[0].endpoints[1].zone} {.items[0].endpoints[1].nodeName} \
             {.items[0].endpoints[1].addresses[0]} {.items[0].metadata.labels.endpointslice\\.kubernetes\\.io/managed-by}",
        )
        .await;
    assert_eq!(
        detail.as_deref(),
        Some("IPv4 zone-b n2 10.244.0.11 endpointslice-controller.k8s.io")
    );

    cluster.ready_ready("web-2", "10.244.0.12").await;
    eventually(Duration::from_secs(20), "3 ready", || async {
        readiness().await.as_deref() == Some("web-0=true web-1=true web-2=true ")
    })
    .await;

    cluster
        .api
        .kubectl_ok(&["delete", "pod", "web-1", "--grace-period=0", "--force"])
        .await;
    eventually(
        Duration::from_secs(20),
        "2 endpoints after a delete",
        || async { readiness().await.as_deref() == Some("web-0=true web-2=true ") },
    )
    .await;
    // A pod whose labels stop matching leaves too.
    cluster
        .api
        .kubectl_ok(&["label", "pod", "web-0", "app=other", "--overwrite"])
        .await;
    eventually(Duration::from_secs(20), "relabelled pod leaves", || async {
        readiness().await.as_deref() == Some("web-2=true ")
    })
    .await;
    // The slices are owned by the service: the garbage collector removes them with it.
    cluster.api.kubectl_ok(&["delete", "service", "web"]).await;
    eventually(
        Duration::from_secs(20),
        "slices gone with the service",
        || async {
            cluster
                .jsonpath(SLICES_OF_WEB, "{.items[*].metadata.name}")
                .await
                .is_some_and(|names| names.is_empty())
        },
    )
    .await;
    cluster.stop().await;
}

/// Creates ConfigMap `name` owned by ConfigMap `owner` (its uid looked up).
async fn dependent_config_map(cluster: &Cluster, name: &str, owner: &str) {
    let uid = cluster
        .jsonpath(&["configmap", owner], "{.metadata.uid}")
        .await
        .expect("owner exists");
    cluster
        .apply(&format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  ownerReferences:\n  \
             - {{apiVersion: v1, kind: ConfigMap, name: {owner}, uid: {uid}, blockOwnerDeletion: true}}\n\
             data: {{a: b}}\n"
        ))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependents_follow_their_owner_background_foreground_and_orphan() {
    let cluster = Cluster::start(&["garbagecollector"]).await;
    let api = &cluster.api;
    for owner in ["bg-owner", "fg-owner", "or-owner"] {
        api.kubectl_ok(&["create", "configmap", owner]).await;
    }
    dependent_config_map(&cluster, "bg-dep", "bg-owner").await;
    dependent_config_map(&cluster, "fg-dep", "fg-owner").await;
    dependent_config_map(&cluster, "or-dep", "or-owner").await;
    // Owned objects with a live owner stay (give the collector time to act wrongly).
    tokio::time::sleep(Duration::from_secs(3)).await;
    for dep in ["bg-dep", "fg-dep", "or-dep"] {
        assert!(cluster.exists(&["configmap", dep]).await, "{dep} kept");
    }

    // Background: the owner goes at once, the dependent after it.
    api.kubectl_ok(&["delete", "configmap", "bg-owner"]).await;
    eventually(
        Duration::from_secs(20),
        "background dependent collected",
        || async { !cluster.exists(&["configmap", "bg-dep"]).await },
    )
    .await;

    // Foreground: the owner stays (deletionTimestamp set) until the dependent is gone.
    api.kubectl_ok(&[
        "delete",
        "configmap",
        "fg-owner",
        "--cascade=foreground",
        "--wait=false",
    ])
    .await;
    let state = cluster
        .jsonpath(
            &["configmap", "fg-owner"],
            "{.metadata.finalizers} {.metadata.deletionTimestamp}",
        )
        .await
        .expect("owner still there right after the delete");
    assert!(state.starts_with("[\"foregroundDeletion\"] 20"), "{state}");
    eventually(
        Duration::from_secs(20),
        "foreground owner and dependent gone",
        || async {
            let owner = cluster.exists(&["configmap", "fg-owner"]).await;
            let dependent = cluster.exists(&["configmap", "fg-dep"]).await;
            assert!(!dependent || owner, "the owner went before its dependent");
            !owner && !dependent
        },
    )
    .await;

    // Orphan: the dependent stays without its owner reference.
    api.kubectl_ok(&["delete", "configmap", "or-owner", "--cascade=orphan"])
        .await;
    eventually(Duration::from_secs(20), "orphan owner gone", || async {
        !cluster.exists(&["configmap", "or-owner"]).await
    })
    .await;
    let refs = cluster
        .jsonpath(&["configmap", "or-dep"], "{.metadata.ownerReferences}")
        .await;
    assert_eq!(
        refs.as_deref(),
        Some(""),
        "orphaned dependent kept, unowned"
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_allows_one_eviction_of_three_ready_pods() {
    let cluster = Cluster::start(&["disruption"]).await;
    let _nodes = support::simulate_nodes(&cluster.client, &[("n1", "zone-a")]).await;
    cluster
        .apply(
            "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: db\nspec:\n  replicas: 3\n  \
             selector: {matchLabels: {app: db}}\n  template:\n    metadata: {labels: {app: db}}\n    \
             spec: {containers: [{name: app, image: nginx}]}\n",
        )
        .await;
    let uid = cluster
        .jsonpath(&["replicaset", "db"], "{.metadata.uid}")
        .await
        .expect("replicaset");
    let owner = format!(
        "{{apiVersion: apps/v1, kind: ReplicaSet, name: db, uid: {uid}, controller: true}}"
    );
    let pods: String = (0..3)
        .map(|i| pod_yaml(&format!("db-{i}"), "n1", "{app: db}", Some(&owner)))
        .collect();
    cluster.apply(&pods).await;
    for i in 0..3 {
        cluster
            .ready_ready(&format!("db-{i}"), &format!("10.244.1.{i}"))
            .await;
    }
    cluster
        .apply(
            "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: db\nspec:\n  \
             minAvailable: 2\n  selector: {matchLabels: {app: db}}\n",
        )
        .await;
    let status = "{.status.currentHealthy}/{.status.desiredHealthy}/{.status.expectedPods} \
                  allowed={.status.disruptionsAllowed} \
                  {.status.conditions[?(@.type==\"DisruptionAllowed\")].reason}";
    eventually(Duration::from_secs(20), "PDB status computed", || async {
        cluster.jsonpath(&["pdb", "db"], status).await.as_deref()
            == Some("3/2/3 allowed=1 SufficientPods")
    })
    .await;

    let on = &cluster;
    let evict = |pod: &'static str| async move {
        let body = json!({
            "apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": pod, "namespace": "default"},
        });
        let path = format!("/api/v1/namespaces/default/pods/{pod}/eviction");
        on.api
            .kubectl_stdin(
                &["create", "--raw", &path, "-f", "-"],
                Some(&body.to_string()),
            )
            .await
    };
    let first = evict("db-0").await;
    assert!(
        first.status.success(),
        "first eviction: {}",
        support::stderr(&first)
    );
    let second = evict("db-1").await;
    assert!(!second.status.success(), "second eviction must be refused");
    let refusal = support::stderr(&second);
    assert!(
        refusal.contains("TooManyRequests") && refusal.contains("disruption budget"),
        "429 from the budget: {refusal}"
    );
    eventually(
        Duration::from_secs(20),
        "PDB counts the evicted pod out",
        || async {
            cluster.jsonpath(&["pdb", "db"], status).await.as_deref()
                == Some("2/2/3 allowed=0 InsufficientPods")
        },
    )
    .await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_of_a_deleted_node_are_collected_after_the_quarantine() {
    let config = PodGcConfig {
        quarantine: SignedDuration::from_secs(1),
        ..PodGcConfig::default()
    };
    let cluster = Cluster::start_with(|client| {
        ControllerManager::new(client).register("podgc", move |c| controller_with(c, config))
    })
    .await;
    let nodes = support::simulate_nodes(&cluster.client, &[("doomed", "zone-a")]).await;
    cluster
        .apply(&pod_yaml("stranded", "doomed", "{app: x}", None))
        .await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    pods.patch_status(
        "stranded",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Failed", "reason": "Error"}})),
    )
    .await
    .expect("failed status");
    // While its node exists, a failed pod (under the threshold) stays.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        cluster.exists(&["pod", "stranded"]).await,
        "pod kept while its node exists"
    );

    drop(nodes);
    cluster.api.kubectl_ok(&["delete", "node", "doomed"]).await;
    eventually(
        Duration::from_secs(15),
        "orphaned pod collected",
        || async { !cluster.exists(&["pod", "stranded"]).await },
    )
    .await;
    cluster.stop().await;
}
