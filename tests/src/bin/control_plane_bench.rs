//! `control-plane-bench`: the kwk scheduler and controllers end to end against a real
//! apiserver, all in this one process: the apiserver on the embedded store in a temp dir,
//! reached over TLS with the admin kubeconfig through kube-rs, as the
//! `kwk-control-plane scheduler` and `controller-manager` subcommands reach it.
//!
//! Setup: N simulated nodes (Ready, cpu 32 / memory 128Gi / pods 110, a Lease each renewed
//! every 10 s like a kubelet's), one warm-up pod bound so the scheduler's caches are synced.
//! - Phase A: the scheduler alone (default profile, no leader election); 32 concurrent
//!   creators POST the pods while a watch notes when each pod first shows `spec.nodeName`.
//!   Prints pods/s (first create issued → last pod bound) and the p50/p99/max of one pod's
//!   create → bound latency (as a watcher sees it: the binding write and its watch delivery
//!   are included).
//! - Phase B: a controller manager running the `deployment` and `replicaset` controllers
//!   next to the scheduler; one Deployment of R replicas is created and the bench prints the
//!   time from that create until every one of its pods exists and until every one is bound.
//!
//! Run: `cargo run --release -p kwk-tests --bin control-plane-bench [-- --nodes N --pods M
//! --replicas R]` (defaults: 100 nodes, 1,000 pods, 1,000 replicas).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use kwk_control_plane::apiserver::allocator::ServiceRanges;
use kwk_control_plane::apiserver::{self, ApiServerOptions};
use kwk_control_plane::scheduler::{self, SchedulerOptions};
use kwk_control_plane::storage::embedded::{EmbeddedOptions, EmbeddedStore};
use kwk_controllers::runtime::{ControllerManager, client_from_kubeconfig};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const CREATORS: usize = 32;
const PHASE_TIMEOUT: Duration = Duration::from_secs(120);
const LEASE_RENEW_PERIOD: Duration = Duration::from_secs(10);

fn arg(args: &[String], flag: &str, default: usize) -> anyhow::Result<usize> {
    match args.iter().position(|a| a == flag) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .with_context(|| format!("{flag} takes a number"))?
            .parse()
            .with_context(|| format!("{flag} takes a number")),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The `p` quantile (0..=1) of sorted durations, in ms.
fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    ms(sorted[rank.min(sorted.len() - 1)])
}

fn node_name(i: usize) -> String {
    format!("node-{i:04}")
}

/// Node `i`: Ready, cpu 32 / memory 128Gi / pods 110, hostname and zone labels.
fn node_status(i: usize) -> Value {
    let name = node_name(i);
    let now = Time(Timestamp::now());
    let resources = json!({"cpu": "32", "memory": "128Gi", "pods": "110"});
    json!({
        "capacity": resources,
        "allocatable": resources,
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "kubelet is posting ready status",
            "lastHeartbeatTime": now, "lastTransitionTime": now,
        }],
        "addresses": [
            {"type": "InternalIP", "address": format!("10.1.{}.{}", i / 250, i % 250 + 1)},
            {"type": "Hostname", "address": name},
        ],
        "nodeInfo": {
            "machineID": format!("sim-{name}"), "systemUUID": format!("sim-{name}"),
            "bootID": format!("sim-{name}"), "kernelVersion": "6.1.0",
            "osImage": "kwk simulated node", "containerRuntimeVersion": "containerd://1.7.0",
            "kubeletVersion": "v1.33.0", "kubeProxyVersion": "v1.33.0",
            "operatingSystem": "linux", "architecture": "amd64",
        },
    })
}

/// Creates node `i` (object, status, Lease).
async fn create_node(client: &kube::Client, i: usize) -> anyhow::Result<()> {
    let name = node_name(i);
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let status = node_status(i);
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name,
            "topology.kubernetes.io/zone": format!("zone-{}", i % 3),
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
        }},
        "status": status,
    }))?;
    let created = nodes
        .create(&PostParams::default(), &node)
        .await
        .with_context(|| format!("create node {name}"))?;
    // Create may drop the status (a kubelet writes it through the subresource).
    nodes
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .with_context(|| format!("status of node {name}"))?;
    let lease: Lease = serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": "kube-node-lease", "ownerReferences": [{
            "apiVersion": "v1", "kind": "Node", "name": name,
            "uid": created.metadata.uid.clone().unwrap_or_default(),
        }]},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40,
                 "renewTime": MicroTime(Timestamp::now())},
    }))?;
    leases
        .create(&PostParams::default(), &lease)
        .await
        .with_context(|| format!("lease of node {name}"))?;
    Ok(())
}

/// Renews every node's Lease each [`LEASE_RENEW_PERIOD`] until `token` is cancelled.
fn renew_leases(client: kube::Client, count: usize, token: CancellationToken) {
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                () = tokio::time::sleep(LEASE_RENEW_PERIOD) => {}
            }
            futures::stream::iter(0..count)
                .for_each_concurrent(8, |i| {
                    let leases = leases.clone();
                    async move {
                        let patch = json!({"spec": {"renewTime": MicroTime(Timestamp::now())}});
                        if let Err(err) = leases
                            .patch(&node_name(i), &PatchParams::default(), &Patch::Merge(patch))
                            .await
                        {
                            eprintln!("control-plane-bench: renewing lease {i}: {err}");
                        }
                    }
                })
                .await;
        }
    });
}

/// The container every bench pod runs (requests: 100m CPU, 128Mi).
fn container() -> Value {
    json!([{"name": "app", "image": "registry.k8s.io/pause:3.10",
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}])
}

fn bench_pod(name: &str, app: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"containers": container()},
    }))?)
}

async fn create_namespace(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let namespace: Namespace = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}
    }))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .with_context(|| format!("create namespace {name}"))?;
    Ok(())
}

/// When a watch first saw each pod, and first saw it with `spec.nodeName`.
#[derive(Default)]
struct Timeline {
    seen: HashMap<String, Instant>,
    bound: HashMap<String, Instant>,
}

/// A watch on one namespace's pods filling a [`Timeline`].
struct PodWatch {
    timeline: Arc<Mutex<Timeline>>,
    task: tokio::task::JoinHandle<()>,
}

impl PodWatch {
    /// Starts watching `namespace`; returns once the watch's initial list is done, so no
    /// later create is missed. The watch ends once `expected` pods are bound.
    async fn start(client: &kube::Client, namespace: &str, expected: usize) -> Self {
        let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let timeline = Arc::new(Mutex::new(Timeline::default()));
        let (ready, listed) = tokio::sync::oneshot::channel();
        let task = tokio::spawn({
            let timeline = timeline.clone();
            async move {
                let mut ready = Some(ready);
                let mut stream =
                    Box::pin(watcher::watcher(api, watcher::Config::default()).default_backoff());
                while let Some(event) = stream.next().await {
                    let now = Instant::now();
                    let pod = match event {
                        Ok(Event::Apply(pod) | Event::InitApply(pod)) => pod,
                        Ok(Event::InitDone) => {
                            if let Some(ready) = ready.take() {
                                let _ = ready.send(());
                            }
                            continue;
                        }
                        Ok(_) => continue,
                        Err(err) => {
                            eprintln!("control-plane-bench: pod watch: {err}");
                            continue;
                        }
                    };
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    let mut timeline = lock(&timeline);
                    timeline.seen.entry(name.clone()).or_insert(now);
                    if pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.node_name.as_ref())
                        .is_some()
                    {
                        timeline.bound.entry(name).or_insert(now);
                    }
                    if timeline.bound.len() >= expected {
                        return;
                    }
                }
            }
        });
        let _ = listed.await;
        PodWatch { timeline, task }
    }

    /// Waits until the watch has seen every expected pod bound, or `within` passes.
    async fn finished(self, within: Duration, what: &str) -> anyhow::Result<Timeline> {
        let PodWatch { timeline, task } = self;
        let abort = task.abort_handle();
        match tokio::time::timeout(within, task).await {
            Ok(joined) => joined.context("pod watch task")?,
            Err(_) => {
                abort.abort();
                let t = lock(&timeline);
                bail!(
                    "{what}: after {within:?} only {} pods seen and {} bound",
                    t.seen.len(),
                    t.bound.len()
                );
            }
        }
        Ok(std::mem::take(&mut *lock(&timeline)))
    }
}

fn lock(timeline: &Mutex<Timeline>) -> MutexGuard<'_, Timeline> {
    timeline
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Phase A: `pods` bare pods created by [`CREATORS`] tasks, scheduled by the running
/// scheduler.
async fn phase_a(client: &kube::Client, pods: usize) -> anyhow::Result<()> {
    const NAMESPACE: &str = "bench-pods";
    create_namespace(client, NAMESPACE).await?;
    let watch = PodWatch::start(client, NAMESPACE, pods).await;
    let api: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let start = Instant::now();
    let issued: Vec<(String, Instant)> = futures::stream::iter(0..pods)
        .map(|i| {
            let api = api.clone();
            async move {
                let name = format!("pod-{i:05}");
                let pod = bench_pod(&name, "bench-pods")?;
                let at = Instant::now();
                api.create(&PostParams::default(), &pod)
                    .await
                    .with_context(|| format!("create pod {name}"))?;
                anyhow::Ok((name, at))
            }
        })
        .buffer_unordered(CREATORS)
        .try_collect()
        .await?;
    let created = start.elapsed();
    let timeline = watch.finished(PHASE_TIMEOUT, "phase A").await?;
    let mut latencies = Vec::with_capacity(pods);
    let mut last_bound = start;
    for (name, at) in &issued {
        let bound = timeline
            .bound
            .get(name)
            .with_context(|| format!("{name} never seen bound"))?;
        latencies.push(bound.saturating_duration_since(*at));
        last_bound = last_bound.max(*bound);
    }
    latencies.sort_unstable();
    let total = last_bound.duration_since(start);
    println!(
        "scheduler, {pods} pods from {CREATORS} creators: created in {:.2} s ({:.0} creates/s); \
         all bound in {:.2} s: {:.0} pods/s",
        created.as_secs_f64(),
        pods as f64 / created.as_secs_f64(),
        total.as_secs_f64(),
        pods as f64 / total.as_secs_f64(),
    );
    println!(
        "scheduler, create → bound per pod: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
    );
    Ok(())
}

/// Phase B: one Deployment of `replicas`, the deployment and replicaset controllers and the
/// scheduler running.
async fn phase_b(client: &kube::Client, replicas: usize) -> anyhow::Result<()> {
    const NAMESPACE: &str = "bench-deploy";
    create_namespace(client, NAMESPACE).await?;
    let manager = ControllerManager::with_default_controllers(client.clone())
        .select(&["deployment".to_string(), "replicaset".to_string()])?;
    let token = CancellationToken::new();
    let running = tokio::spawn(manager.run(token.clone()));
    let watch = PodWatch::start(client, NAMESPACE, replicas).await;
    // Let the controllers list and sync before the clock starts.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": container()},
            },
        },
    }))?;
    let start = Instant::now();
    Api::<Deployment>::namespaced(client.clone(), NAMESPACE)
        .create(&PostParams::default(), &deployment)
        .await
        .context("create the Deployment")?;
    let timeline = watch.finished(PHASE_TIMEOUT, "phase B").await;
    token.cancel();
    let _ = running.await;
    let timeline = timeline?;
    let last = |times: &HashMap<String, Instant>| {
        times
            .values()
            .max()
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(start))
    };
    let (all_created, all_bound) = (last(&timeline.seen), last(&timeline.bound));
    println!(
        "deployment of {replicas} replicas: all pods created in {:.2} s ({:.0} pods/s), \
         all bound in {:.2} s ({:.0} pods/s)",
        all_created.as_secs_f64(),
        replicas as f64 / all_created.as_secs_f64(),
        all_bound.as_secs_f64(),
        replicas as f64 / all_bound.as_secs_f64(),
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let nodes = arg(&args, "--nodes", 100)?;
    let pods = arg(&args, "--pods", 1000)?;
    let replicas = arg(&args, "--replicas", 1000)?;
    anyhow::ensure!(nodes > 0, "--nodes must be at least 1");
    anyhow::ensure!(
        pods + replicas < nodes * 110,
        "{nodes} nodes hold at most {} pods (110 each)",
        nodes * 110
    );

    let dir = tempfile::Builder::new()
        .prefix("kwk-control-plane-bench-")
        .tempdir()?;
    let store = Arc::new(
        EmbeddedStore::open(&dir.path().join("db"), EmbeddedOptions::default())
            .await
            .context("open the embedded store")?,
    );
    let server = apiserver::start(ApiServerOptions {
        bind: "127.0.0.1:0".parse()?,
        pki_dir: dir.path().join("pki"),
        generate_pki: true,
        serving_hosts: Vec::new(),
        token_file: None,
        store,
        service_ranges: ServiceRanges::default(),
        advertise_address: None,
        kubelet: Default::default(),
        // As upstream's scheduler benchmarks: neither the serviceaccount nor the
        // node-lifecycle controller runs here.
        admission: kwk_control_plane::apiserver::admission::AdmissionPlugins::disabling(&[
            kwk_control_plane::apiserver::admission::SERVICE_ACCOUNT,
            kwk_control_plane::apiserver::admission::TAINT_NODES_BY_CONDITION,
        ])?,
    })
    .await
    .context("start the apiserver")?;
    let client = client_from_kubeconfig(&dir.path().join("pki/admin.kubeconfig")).await?;

    let setup = Instant::now();
    futures::stream::iter(0..nodes)
        .map(|i| create_node(&client, i))
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    let stop = CancellationToken::new();
    renew_leases(client.clone(), nodes, stop.clone());
    let scheduler_task = tokio::spawn(scheduler::run(
        client.clone(),
        SchedulerOptions {
            leader_election: None,
            seed: 0x5eed,
            ..SchedulerOptions::default()
        },
        stop.clone(),
    ));
    // One pod bound: the scheduler's caches are synced and its connections open.
    create_namespace(&client, "bench-warmup").await?;
    let warmup = PodWatch::start(&client, "bench-warmup", 1).await;
    Api::<Pod>::namespaced(client.clone(), "bench-warmup")
        .create(&PostParams::default(), &bench_pod("warmup", "warmup")?)
        .await
        .context("create the warm-up pod")?;
    warmup.finished(PHASE_TIMEOUT, "warm-up").await?;
    println!(
        "control-plane-bench: in-process apiserver (embedded store, TLS, kube-rs admin client); \
         {nodes} simulated nodes (32 CPU, 128Gi, 110 pods) ready in {:.2} s",
        setup.elapsed().as_secs_f64()
    );

    phase_a(&client, pods).await?;
    phase_b(&client, replicas).await?;

    stop.cancel();
    scheduler_task.await?.context("scheduler")?;
    server.shutdown().await;
    Ok(())
}
