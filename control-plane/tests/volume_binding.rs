//! VolumeBinding end to end: the real apiserver (embedded store), the scheduler and the pv
//! controller (`persistentvolume-binder`), two simulated nodes. A WaitForFirstConsumer
//! claim is bound to the `local` volume of the node its pod lands on; a pod whose claim
//! has no volume yet (WaitForFirstConsumer or Immediate) waits with upstream's message
//! and is scheduled once a matching volume appears.

mod support;

use support::eventually;

use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::Api;
use kube::api::PostParams;
use kwk_control_plane::scheduler::{self, SchedulerOptions};
use kwk_controllers::runtime::ControllerManager;
use serde_json::{Value, json};
use support::TestApiServer;
use tokio_util::sync::CancellationToken;

/// The apiserver, two nodes, the scheduler and the pv controller; stopped on drop.
struct Cluster {
    _api: TestApiServer,
    client: kube::Client,
    _nodes: support::SimulatedNodes,
    token: CancellationToken,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

impl Cluster {
    async fn start() -> Self {
        let api = TestApiServer::start().await;
        let client = api.client().await;
        let nodes =
            support::simulate_nodes(&client, &[("node-a", "zone-a"), ("node-b", "zone-a")]).await;
        let token = CancellationToken::new();
        let manager = ControllerManager::with_default_controllers(client.clone())
            .select(&["persistentvolume-binder".to_string()])
            .expect("known controllers");
        tokio::spawn(manager.run(token.clone()));
        let options = SchedulerOptions {
            leader_election: None,
            seed: 11,
            ..SchedulerOptions::default()
        };
        tokio::spawn({
            let (client, token) = (client.clone(), token.clone());
            async move {
                scheduler::run(client, options, token)
                    .await
                    .expect("scheduler")
            }
        });
        Cluster {
            _api: api,
            client,
            _nodes: nodes,
            token,
        }
    }

    async fn create<K>(&self, api: Api<K>, body: Value)
    where
        K: kube::Resource
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        let object: K = serde_json::from_value(body).expect("object");
        api.create(&PostParams::default(), &object)
            .await
            .expect("create");
    }

    async fn class(&self, name: &str, mode: &str) {
        let body = json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": name}, "provisioner": "kubernetes.io/no-provisioner",
            "volumeBindingMode": mode});
        self.create(Api::<StorageClass>::all(self.client.clone()), body)
            .await;
    }

    /// A 1Gi ReadWriteOnce `local` volume of `class` on `node`.
    async fn local_volume(&self, name: &str, class: &str, node: &str) {
        let body = json!({"apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": name},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain", "storageClassName": class,
                "local": {"path": format!("/mnt/{name}")},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}}});
        self.create(Api::<PersistentVolume>::all(self.client.clone()), body)
            .await;
    }

    async fn claim(&self, name: &str, class: &str) {
        let body = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class,
                "resources": {"requests": {"storage": "1Gi"}}}});
        self.create(self.claims(), body).await;
    }

    async fn pod(&self, name: &str, claim: &str) {
        let body = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]}});
        self.create(self.pods(), body).await;
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    fn claims(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), "default")
    }

    fn volumes(&self) -> Api<PersistentVolume> {
        Api::all(self.client.clone())
    }

    async fn node_of(&self, pod: &str) -> Option<String> {
        let pod = self.pods().get(pod).await.expect("get pod");
        pod.spec.and_then(|s| s.node_name)
    }

    async fn wait_scheduled(&self, pod: &str) -> String {
        eventually(
            Duration::from_secs(30),
            &format!("pod {pod} scheduled"),
            || async { self.node_of(pod).await.is_some() },
        )
        .await;
        self.node_of(pod).await.unwrap_or_default()
    }

    /// The message of the pod's `PodScheduled=False` condition, once there is one.
    async fn wait_unschedulable(&self, pod: &str) -> String {
        let message = || async {
            let pod = self.pods().get(pod).await.expect("get pod");
            pod.status
                .and_then(|s| s.conditions)
                .into_iter()
                .flatten()
                .find(|c| c.type_ == "PodScheduled" && c.status == "False")
                .and_then(|c| c.message)
        };
        eventually(
            Duration::from_secs(30),
            &format!("pod {pod} unschedulable"),
            || async { message().await.is_some() },
        )
        .await;
        message().await.unwrap_or_default()
    }

    /// Waits until the claim is Bound and returns its volume's name.
    async fn wait_claim_bound(&self, claim: &str) -> String {
        let bound = || async {
            let claim = self.claims().get(claim).await.expect("get claim");
            let phase = claim.status.and_then(|s| s.phase);
            let volume = claim.spec.and_then(|s| s.volume_name);
            (phase.as_deref() == Some("Bound"))
                .then_some(volume)
                .flatten()
        };
        eventually(
            Duration::from_secs(30),
            &format!("claim {claim} bound"),
            || async { bound().await.is_some() },
        )
        .await;
        bound().await.unwrap_or_default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_first_consumer_claims_bind_to_the_volume_on_the_pods_node() {
    let cluster = Cluster::start().await;
    cluster.class("local-wffc", "WaitForFirstConsumer").await;
    cluster.local_volume("disk-b", "local-wffc", "node-b").await;
    cluster.claim("data", "local-wffc").await;

    // The claim waits for its first consumer: the pv controller leaves it Pending.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let claim = cluster.claims().get("data").await.expect("claim");
    assert_eq!(
        claim.status.and_then(|s| s.phase).as_deref(),
        Some("Pending")
    );

    cluster.pod("app", "data").await;
    assert_eq!(cluster.wait_scheduled("app").await, "node-b");
    assert_eq!(cluster.wait_claim_bound("data").await, "disk-b");
    let claim = cluster.claims().get("data").await.expect("claim");
    let pv = cluster.volumes().get("disk-b").await.expect("volume");
    let claim_ref = pv
        .spec
        .as_ref()
        .and_then(|s| s.claim_ref.clone())
        .expect("claimRef");
    assert_eq!(claim_ref.name.as_deref(), Some("data"));
    assert_eq!(claim_ref.uid, claim.metadata.uid);
    let annotations = pv.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations
            .get("pv.kubernetes.io/bound-by-controller")
            .map(String::as_str),
        Some("yes")
    );
    assert_eq!(pv.status.and_then(|s| s.phase).as_deref(), Some("Bound"));

    // A second consumer of a second claim: no volume is left for it anywhere.
    cluster.claim("more", "local-wffc").await;
    cluster.pod("second", "more").await;
    let message = cluster.wait_unschedulable("second").await;
    assert_eq!(
        message,
        "0/2 nodes are available: 2 node(s) didn't find available persistent volumes to bind. \
         preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling."
    );
    // A volume on node-a appears: the pod is retried and lands there.
    cluster.local_volume("disk-a", "local-wffc", "node-a").await;
    assert_eq!(cluster.wait_scheduled("second").await, "node-a");
    assert_eq!(cluster.wait_claim_bound("more").await, "disk-a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_wait_for_their_immediate_claims_to_be_bound() {
    let cluster = Cluster::start().await;
    cluster.class("local-now", "Immediate").await;

    cluster.pod("no-claim", "missing").await;
    assert_eq!(
        cluster.wait_unschedulable("no-claim").await,
        "0/2 nodes are available: persistentvolumeclaim \"missing\" not found. \
         preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling."
    );

    cluster.claim("data", "local-now").await;
    cluster.pod("app", "data").await;
    assert_eq!(
        cluster.wait_unschedulable("app").await,
        "0/2 nodes are available: pod has unbound immediate PersistentVolumeClaims. \
         preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling."
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(cluster.node_of("app").await, None);

    // A matching volume appears: the pv controller binds the claim at once, and the pod
    // follows the volume's node affinity.
    cluster.local_volume("disk-a", "local-now", "node-a").await;
    assert_eq!(cluster.wait_claim_bound("data").await, "disk-a");
    assert_eq!(cluster.wait_scheduled("app").await, "node-a");

    // The missing claim appears, bound at once to a volume on node-b.
    cluster.local_volume("disk-b", "local-now", "node-b").await;
    cluster.claim("missing", "local-now").await;
    assert_eq!(cluster.wait_claim_bound("missing").await, "disk-b");
    assert_eq!(cluster.wait_scheduled("no-claim").await, "node-b");
}
