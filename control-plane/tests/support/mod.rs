//! Test harness: an in-process apiserver on a free loopback port with generated PKI, and the
//! real kubectl (from `.ci/bin`, installed by `.ci/install-deps`) and curl pointed at it.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use kwk_control_plane::apiserver::admission::{AdmissionPlugins, SERVICE_ACCOUNT};
use kwk_control_plane::apiserver::allocator::ServiceRanges;
use kwk_control_plane::apiserver::{self, ApiServerOptions, RunningApiServer};
use kwk_control_plane::storage::Store;
use kwk_control_plane::storage::embedded::{EmbeddedOptions, EmbeddedStore};

/// A running apiserver for one test.
pub struct TestApiServer {
    pub dir: tempfile::TempDir,
    pub server: Option<RunningApiServer>,
    pub addr: SocketAddr,
    /// The embedded store in `dir/db`, when the server runs on one (see [`Self::restart`]).
    embedded: Option<Arc<EmbeddedStore>>,
    /// The service ranges (kept across [`Self::restart`]).
    ranges: ServiceRanges,
    /// The admission plugins that run (kept across [`Self::restart`]).
    admission: AdmissionPlugins,
}

/// The admission plugins of a test apiserver: all but `ServiceAccount`, as upstream's
/// integration tests run theirs, since no serviceaccount controller creates the `default`
/// accounts pods would need (tests of that plugin use [`TestApiServer::start_with_admission`]).
/// `TaintNodesByCondition` runs: [`simulate_nodes`] clears the taint as node-lifecycle would.
pub fn test_admission() -> AdmissionPlugins {
    AdmissionPlugins::disabling(&[SERVICE_ACCOUNT]).expect("known plugin")
}

/// The kubectl binary: `$KUBECTL`, else `.ci/bin/kubectl` of this checkout.
pub fn kubectl_path() -> PathBuf {
    if let Ok(path) = std::env::var("KUBECTL") {
        return PathBuf::from(path);
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ci/bin/kubectl");
    assert!(
        path.exists(),
        "{} is missing: run `sudo .ci/install-deps` (it installs kubectl 1.33 into .ci/bin)",
        path.display()
    );
    path
}

impl TestApiServer {
    /// Starts an apiserver on the given store, with a token file holding `tokens` lines.
    pub async fn start_with(store: Arc<dyn Store>, tokens: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(
            dir,
            store,
            None,
            tokens,
            "127.0.0.1:0".parse().expect("addr"),
            ServiceRanges::default(),
            test_admission(),
        )
        .await
    }

    async fn start_in(
        dir: tempfile::TempDir,
        store: Arc<dyn Store>,
        embedded: Option<Arc<EmbeddedStore>>,
        tokens: &str,
        bind: SocketAddr,
        ranges: ServiceRanges,
        admission: AdmissionPlugins,
    ) -> Self {
        let token_file = dir.path().join("tokens.csv");
        std::fs::write(&token_file, tokens).expect("write tokens");
        let server = apiserver::start(ApiServerOptions {
            bind,
            pki_dir: dir.path().join("pki"),
            generate_pki: true,
            serving_hosts: Vec::new(),
            token_file: Some(token_file),
            store,
            service_ranges: ranges,
            advertise_address: None,
            kubelet: Default::default(),
            admission: admission.clone(),
        })
        .await
        .expect("start apiserver");
        let addr = server.addr;
        Self {
            dir,
            server: Some(server),
            addr,
            embedded,
            ranges,
            admission,
        }
    }

    /// An apiserver on the embedded store (what `kwk-control-plane apiserver` runs by default).
    pub async fn start() -> Self {
        Self::start_with_ranges(ServiceRanges::default()).await
    }

    /// [`Self::start`] allocating Service addresses and node ports from `ranges`.
    pub async fn start_with_ranges(ranges: ServiceRanges) -> Self {
        Self::start_embedded(ranges, test_admission()).await
    }

    /// [`Self::start`] running the optional admission plugins `admission`.
    pub async fn start_with_admission(admission: AdmissionPlugins) -> Self {
        Self::start_embedded(ServiceRanges::default(), admission).await
    }

    async fn start_embedded(ranges: ServiceRanges, admission: AdmissionPlugins) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(
            EmbeddedStore::open(&dir.path().join("db"), EmbeddedOptions::default())
                .await
                .expect("open the embedded store"),
        );
        let bind = "127.0.0.1:0".parse().expect("addr");
        Self::start_in(dir, store.clone(), Some(store), "", bind, ranges, admission).await
    }

    /// Stops the server, closes its embedded store and starts both again on the same
    /// directory and address: what a restart of the apiserver process does.
    pub async fn restart(mut self) -> Self {
        let server = self.server.take().expect("server running");
        server.shutdown().await;
        let store = self
            .embedded
            .take()
            .expect("restart needs the embedded store");
        // Request tasks a connection spawned (HTTP/2 streams) may take a moment to drop their
        // handle after the connection has gone.
        let mut store = store;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let store = loop {
            match Arc::try_unwrap(store) {
                Ok(store) => break store,
                Err(shared) if std::time::Instant::now() < deadline => {
                    store = shared;
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(_) => panic!("the embedded store is still in use 10 s after shutdown"),
            }
        };
        store.close().await.expect("close the embedded store");
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
        let store = Arc::new(
            EmbeddedStore::open(&dir.path().join("db"), EmbeddedOptions::default())
                .await
                .expect("reopen the embedded store"),
        );
        let admission = self.admission.clone();
        Self::start_in(
            dir,
            store.clone(),
            Some(store),
            "",
            self.addr,
            self.ranges,
            admission,
        )
        .await
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("pki/admin.kubeconfig")
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("pki/ca.crt")
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    /// Runs kubectl (blocking, off the runtime thread) with the admin kubeconfig and an
    /// isolated cache dir.
    pub async fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_stdin(args, None).await
    }

    pub async fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(kubectl_path());
        cmd.arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--cache-dir")
            .arg(self.dir.path().join("kube-cache"))
            .args(args)
            .env_remove("KUBECONFIG")
            .env("HOME", self.dir.path());
        run(cmd, stdin).await
    }

    /// Runs kubectl and returns stdout, panicking with stderr on failure.
    pub async fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args).await;
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// curl with the CA and extra arguments (e.g. `-H`, `--data-binary`).
    pub async fn curl(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("curl");
        cmd.arg("-sS").arg("--cacert").arg(self.ca()).args(args);
        run(cmd, None).await
    }
}

async fn run(mut cmd: Command, stdin: Option<&str>) -> Output {
    let stdin = stdin.map(String::from);
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("spawn");
        if let (Some(mut pipe), Some(text)) = (child.stdin.take(), stdin) {
            let _ = pipe.write_all(text.as_bytes());
        }
        child.wait_with_output().expect("wait")
    })
    .await
    .expect("join")
}

/// Polls `check` every 100 ms until it holds; fails the test once `within` passes.
pub async fn eventually<F, Fut>(within: std::time::Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {within:?}: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

// ---- Helpers for controller-manager and scheduler tests ----

impl TestApiServer {
    /// A kube-rs client with the admin credentials of [`Self::kubeconfig`].
    pub async fn client(&self) -> kube::Client {
        kwk_controllers::runtime::client_from_kubeconfig(&self.kubeconfig())
            .await
            .expect("kube client from the admin kubeconfig")
    }
}

/// Nodes that look alive to the control plane: see [`simulate_nodes`]. Dropping this stops
/// the Lease renewals (the nodes then go stale like a node whose kubelet died).
pub struct SimulatedNodes {
    pub names: Vec<String>,
    _renewals: tokio_util::sync::DropGuard,
}

/// Creates one Node per `(name, zone)`: Ready (without the `not-ready` taint admission put
/// on it), capacity and allocatable cpu 4 / memory 16Gi /
/// pods 110, labels `kubernetes.io/hostname` and `topology.kubernetes.io/zone`; and renews
/// each node's Lease in `kube-node-lease` every second until the result is dropped.
pub async fn simulate_nodes(client: &kube::Client, nodes: &[(&str, &str)]) -> SimulatedNodes {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::Node;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
    use k8s_openapi::jiff::Timestamp;
    use kube::api::{Api, Patch, PatchParams, PostParams};
    use serde_json::json;

    let node_api: Api<Node> = Api::all(client.clone());
    let lease_api: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    for (index, (name, zone)) in nodes.iter().enumerate() {
        let now = Time(Timestamp::now());
        let resources = json!({"cpu": "4", "memory": "16Gi", "pods": "110"});
        let status = json!({
            "capacity": resources,
            "allocatable": resources,
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "kubelet is posting ready status",
                "lastHeartbeatTime": now, "lastTransitionTime": now,
            }],
            "addresses": [
                {"type": "InternalIP", "address": format!("10.0.0.{}", index + 10)},
                {"type": "Hostname", "address": name},
            ],
            "nodeInfo": {
                "machineID": format!("sim-{name}"), "systemUUID": format!("sim-{name}"),
                "bootID": format!("sim-{name}"), "kernelVersion": "6.1.0",
                "osImage": "kwk simulated node", "containerRuntimeVersion": "containerd://1.6.20",
                "kubeletVersion": "v1.33.0", "kubeProxyVersion": "v1.33.0",
                "operatingSystem": "linux", "architecture": "amd64",
            },
        });
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {
                "kubernetes.io/hostname": name,
                "topology.kubernetes.io/zone": zone,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
            }},
            "status": status,
        }))
        .expect("node");
        let created = node_api
            .create(&PostParams::default(), &node)
            .await
            .expect("create node");
        // Whether or not create kept the status, the status subresource sets it.
        node_api
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await
            .expect("node status");
        // TaintNodesByCondition created the node `not-ready:NoSchedule`; node-lifecycle
        // lifts that taint from a Ready node, which this one is from the start.
        let taints: Vec<_> = created
            .spec
            .and_then(|s| s.taints)
            .unwrap_or_default()
            .into_iter()
            .filter(|t| !(t.key == "node.kubernetes.io/not-ready" && t.effect == "NoSchedule"))
            .collect();
        let taints = if taints.is_empty() {
            json!(null)
        } else {
            json!(taints)
        };
        node_api
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"taints": taints}})),
            )
            .await
            .expect("lift the not-ready taint");
        let lease: Lease = serde_json::from_value(json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": "kube-node-lease", "ownerReferences": [{
                "apiVersion": "v1", "kind": "Node", "name": name,
                "uid": created.metadata.uid.clone().unwrap_or_default(),
            }]},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": 40,
                     "renewTime": MicroTime(Timestamp::now())},
        }))
        .expect("lease");
        lease_api
            .create(&PostParams::default(), &lease)
            .await
            .expect("create node lease");
    }
    let names: Vec<String> = nodes.iter().map(|(name, _)| name.to_string()).collect();
    let stop = tokio_util::sync::CancellationToken::new();
    let renew_names = names.clone();
    let stopped = stop.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stopped.cancelled() => return,
                () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            }
            for name in &renew_names {
                let patch = json!({"spec": {"renewTime": MicroTime(Timestamp::now())}});
                if let Err(err) = lease_api
                    .patch(name, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                {
                    eprintln!("renewing the lease of simulated node {name}: {err}");
                }
            }
        }
    });
    SimulatedNodes {
        names,
        _renewals: stop.drop_guard(),
    }
}

/// Marks pod `namespace/name` Running and Ready with `pod_ip`, every container running and
/// ready, through the status subresource (what a kubelet reports). Returns the updated pod.
pub async fn mark_pod_running_ready(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    pod_ip: &str,
) -> k8s_openapi::api::core::v1::Pod {
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;
    use kube::api::{Api, Patch, PatchParams};
    use serde_json::json;

    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pod = pods.get(name).await.expect("get pod");
    let now = Time(Timestamp::now());
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.clone())
        .unwrap_or_default();
    let statuses: Vec<serde_json::Value> = containers
        .iter()
        .map(|c| {
            json!({
                "name": c.name, "image": c.image.clone().unwrap_or_default(), "imageID": "",
                "containerID": format!("containerd://sim-{name}-{}", c.name),
                "ready": true, "started": true, "restartCount": 0,
                "state": {"running": {"startedAt": now}},
            })
        })
        .collect();
    let condition = |kind: &str| json!({"type": kind, "status": "True", "lastTransitionTime": now});
    let patch = json!({"status": {
        "phase": "Running",
        "startTime": now,
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "conditions": [
            condition("PodReadyToStartContainers"), condition("Initialized"),
            condition("Ready"), condition("ContainersReady"), condition("PodScheduled"),
        ],
        "containerStatuses": statuses,
    }});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect("pod status")
}
