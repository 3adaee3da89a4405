//! Storage-object-in-use protection end to end: the real apiserver (the
//! `StorageObjectInUseProtection` admission on, as in every test apiserver but
//! `ServiceAccount`), the `persistentvolume-binder`, `pvc-protection` and `pv-protection`
//! controllers, real kubectl. New claims and volumes carry their protection finalizer; a
//! deleted claim stays `Terminating` while a scheduled pod uses it and goes as soon as the
//! pod does; a deleted volume stays while `Bound` and goes once its claim is gone. With
//! the plugin disabled a claim is created without the finalizer.

mod support;

use support::eventually;

use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::Api;
use kwk_controllers::runtime::ControllerManager;
use support::TestApiServer;
use tokio_util::sync::CancellationToken;

const PVC_FINALIZER: &str = "kubernetes.io/pvc-protection";
const PV_FINALIZER: &str = "kubernetes.io/pv-protection";

/// The apiserver and the three controllers; the controllers stop when dropped. No node
/// runs: pods are created with `spec.nodeName` set, as scheduled, and force-deleted.
struct Cluster {
    api: TestApiServer,
    client: kube::Client,
    _stop: tokio_util::sync::DropGuard,
}

impl Cluster {
    async fn start() -> Self {
        let api = TestApiServer::start().await;
        let client = api.client().await;
        let controllers = ["persistentvolume-binder", "pvc-protection", "pv-protection"];
        let manager = ControllerManager::with_default_controllers(client.clone())
            .select(&controllers.map(String::from))
            .expect("known controllers");
        let token = CancellationToken::new();
        tokio::spawn(manager.run(token.clone()));
        Cluster {
            api,
            client,
            _stop: token.drop_guard(),
        }
    }

    /// `kubectl create -f -` of `yaml`, printing what the apiserver stored as `jsonpath`.
    async fn create(&self, yaml: &str, jsonpath: &str) -> String {
        let out = self
            .api
            .kubectl_stdin(
                &["create", "-f", "-", "-o", &format!("jsonpath={jsonpath}")],
                Some(yaml),
            )
            .await;
        assert!(out.status.success(), "create: {}", support::stderr(&out));
        support::stdout(&out)
    }

    /// `kubectl get <what> -o jsonpath=…`, or `None` once the object is gone.
    async fn get(&self, what: &[&str], jsonpath: &str) -> Option<String> {
        let format = format!("jsonpath={jsonpath}");
        let mut args = vec!["get"];
        args.extend_from_slice(what);
        args.extend(["-o", format.as_str()]);
        let out = self.api.kubectl(&args).await;
        if out.status.success() {
            return Some(support::stdout(&out));
        }
        let err = support::stderr(&out);
        assert!(err.contains("NotFound"), "kubectl get {what:?}: {err}");
        None
    }

    /// The STATUS column kubectl prints for `kind name`.
    async fn status_column(&self, kind: &str, name: &str) -> String {
        let out = self
            .api
            .kubectl_ok(&["get", kind, name, "--no-headers"])
            .await;
        let columns: Vec<&str> = out.split_whitespace().collect();
        let at = if kind == "pv" { 4 } else { 1 };
        columns.get(at).copied().unwrap_or_default().to_string()
    }

    async fn claim(&self, name: &str) -> Option<PersistentVolumeClaim> {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), "default");
        claims.get_opt(name).await.expect("get claim")
    }

    async fn volume(&self, name: &str) -> Option<PersistentVolume> {
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        volumes.get_opt(name).await.expect("get volume")
    }

    async fn volume_phase(&self, name: &str) -> Option<String> {
        self.volume(name)
            .await
            .and_then(|v| v.status)
            .and_then(|s| s.phase)
    }

    /// A Retain hostPath volume and a claim for it, created with kubectl; asserts each came
    /// back from the create with its protection finalizer, and waits until both are Bound.
    async fn bound_pair(&self, volume: &str, claim: &str) {
        let pv = format!(
            "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: {volume}}}\n\
             spec:\n  capacity: {{storage: 1Gi}}\n  accessModes: [ReadWriteOnce]\n  \
             persistentVolumeReclaimPolicy: Retain\n  hostPath: {{path: /mnt/{volume}}}\n"
        );
        assert_eq!(
            self.create(&pv, "{.metadata.finalizers}").await,
            format!("[\"{PV_FINALIZER}\"]"),
            "the volume is created with its finalizer"
        );
        let pvc = format!(
            "apiVersion: v1\nkind: PersistentVolumeClaim\n\
             metadata: {{name: {claim}, namespace: default}}\n\
             spec:\n  accessModes: [ReadWriteOnce]\n  volumeName: {volume}\n  \
             resources: {{requests: {{storage: 1Gi}}}}\n"
        );
        assert_eq!(
            self.create(&pvc, "{.metadata.finalizers}").await,
            format!("[\"{PVC_FINALIZER}\"]"),
            "the claim is created with its finalizer"
        );
        eventually(
            Duration::from_secs(20),
            "claim and volume Bound",
            || async {
                let claim_phase = self
                    .claim(claim)
                    .await
                    .and_then(|c| c.status)
                    .and_then(|s| s.phase);
                claim_phase.as_deref() == Some("Bound")
                    && self.volume_phase(volume).await.as_deref() == Some("Bound")
            },
        )
        .await;
    }

    /// A pod scheduled to `node-a` (no kubelet runs it) mounting `claim`.
    async fn pod_using(&self, name: &str, claim: &str) {
        let pod = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default}}\n\
             spec:\n  nodeName: node-a\n  containers:\n  - name: c\n    image: busybox\n    \
             volumeMounts: [{{name: data, mountPath: /data}}]\n  \
             volumes: [{{name: data, persistentVolumeClaim: {{claimName: {claim}}}}}]\n"
        );
        self.create(&pod, "{.metadata.name}").await;
    }

    async fn force_delete_pod(&self, name: &str) {
        self.api
            .kubectl_ok(&["delete", "pod", name, "--grace-period=0", "--force"])
            .await;
    }
}

/// Asserts `check` holds every 200 ms for `period`.
async fn stays<F, Fut>(period: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + period;
    while tokio::time::Instant::now() < end {
        assert!(check().await, "no longer: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_in_use_stays_terminating_until_its_pod_is_gone_then_its_volume_can_go() {
    let cluster = Cluster::start().await;
    cluster.bound_pair("disk", "data").await;
    cluster.pod_using("app", "data").await;

    cluster
        .api
        .kubectl_ok(&["delete", "pvc", "data", "--wait=false"])
        .await;
    // The pod still uses it: the claim stays, Terminating, with its finalizer.
    stays(
        Duration::from_secs(2),
        "claim held while its pod exists",
        || async {
            cluster
                .get(&["pvc", "data"], "{.metadata.finalizers}")
                .await
                == Some(format!("[\"{PVC_FINALIZER}\"]"))
        },
    )
    .await;
    let claim = cluster.claim("data").await.expect("claim still there");
    assert!(claim.metadata.deletion_timestamp.is_some());
    assert_eq!(cluster.status_column("pvc", "data").await, "Terminating");
    assert_eq!(cluster.volume_phase("disk").await.as_deref(), Some("Bound"));

    // The pod goes: the claim goes at once (the pod's deletion requeues it, no resync).
    cluster.force_delete_pod("app").await;
    eventually(
        Duration::from_secs(5),
        "claim gone after its pod",
        || async { cluster.claim("data").await.is_none() },
    )
    .await;

    // Its volume is Released; deleting it now completes (kubectl waits for it).
    eventually(Duration::from_secs(10), "volume Released", || async {
        cluster.volume_phase("disk").await.as_deref() == Some("Released")
    })
    .await;
    cluster
        .api
        .kubectl_ok(&["delete", "pv", "disk", "--timeout=30s"])
        .await;
    assert_eq!(cluster.get(&["pv", "disk"], "{.metadata.name}").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_volume_stays_terminating_until_its_claim_is_gone() {
    let cluster = Cluster::start().await;
    cluster.bound_pair("disk", "data").await;

    cluster
        .api
        .kubectl_ok(&["delete", "pv", "disk", "--wait=false"])
        .await;
    stays(Duration::from_secs(2), "bound volume held", || async {
        cluster.get(&["pv", "disk"], "{.metadata.finalizers}").await
            == Some(format!("[\"{PV_FINALIZER}\"]"))
    })
    .await;
    assert_eq!(cluster.status_column("pv", "disk").await, "Terminating");

    // No pod uses the claim: deleting it completes, which releases the volume, which goes.
    cluster
        .api
        .kubectl_ok(&["delete", "pvc", "data", "--timeout=30s"])
        .await;
    eventually(
        Duration::from_secs(10),
        "volume gone after its claim",
        || async { cluster.volume("disk").await.is_none() },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_plugin_disabled_claims_are_created_unprotected() {
    use kwk_control_plane::apiserver::admission::AdmissionPlugins;
    let plugins = AdmissionPlugins::disabling(&["ServiceAccount", "StorageObjectInUseProtection"])
        .expect("known plugins");
    let api = TestApiServer::start_with_admission(plugins).await;
    let claim = "apiVersion: v1\nkind: PersistentVolumeClaim\n\
                 metadata: {name: data, namespace: default}\n\
                 spec:\n  accessModes: [ReadWriteOnce]\n  \
                 resources: {requests: {storage: 1Gi}}\n";
    let out = api
        .kubectl_stdin(
            &["create", "-f", "-", "-o", "jsonpath={.metadata.finalizers}"],
            Some(claim),
        )
        .await;
    assert!(out.status.success(), "create: {}", support::stderr(&out));
    assert_eq!(support::stdout(&out), "", "no finalizer without the plugin");
    // No controller runs: the claim goes at once.
    api.kubectl_ok(&["delete", "pvc", "data", "--timeout=10s"])
        .await;
}
