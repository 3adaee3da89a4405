//! `cluster-bench`: issue 6's figures for a joined node, in one run.
//!
//! Brings up a single-node cluster the way a server is (`kwk init`, kwk-node running the control
//! plane as static pods, see [`TestCluster`]) and measures:
//!
//! 1. API pod start-up latency: from just before the pod's POST to the first watch event that
//!    shows it `Running` with its `Ready` condition `True`. One pod at a time (`--reps`, p50 and
//!    max), then a burst of 30 created at once (p50, p99, max per pod, and until all Running).
//! 2. The CRI floor on the same containerd: RunPodSandbox + CreateContainer + StartContainer
//!    called directly, one at a time (p50) and 30 in parallel.
//! 3. kwk-node's RSS (`VmRSS`) idle with only the control plane, and with the 30 pods running.
//! 4. Where a burst pod's start-up time goes (p50 per stage, wall clock): POST → bound
//!    (`spec.nodeName` on the watch: the scheduler), bound → sandbox created (containerd's
//!    `createdAt`: kwk-node's watch, admission, worker), sandbox → container started (CRI),
//!    container started → Running on the watch (kwk-node's status report and the apiserver).
//!
//! The kube-rs client reaches the apiserver (inside the cluster's network namespace) through a
//! forward on a loopback port of this machine. Needs root, and `kwk-node`, `kwk` and
//! `kwk-control-plane` next to this executable.
//!
//! Pods are networked by `kwk-cni`, configured by kwk-node from the podCIDR, as on a server;
//! `--cni reference` runs the same bench with the reference `bridge` + `host-local` plugins
//! (`/usr/lib/cni`) instead, for comparison.
//!
//! Run: `cargo build --workspace --release && sudo target/release/cluster-bench [--reps N]
//! [--cni kwk|reference]`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::watcher;
use kwk_tests::cluster::{ClusterBinaries, ClusterOptions, PodNetwork, TestCluster};
use kwk_tests::pods::{PodShape, container_config};
use kwk_tests::{TestContainerd, wait_for};
use tokio::sync::Notify;

const BURST: usize = 30;
const LABEL: &str = "kwk-bench";
const IMAGE: &str = "localhost/busybox:latest";
const P50_GOAL_S: f64 = 0.35;
const P99_GOAL_S: f64 = 1.0;
const RSS_GOAL_MIB: f64 = 40.0;

/// What the pod watch has seen: when each pod was first Running and Ready (monotonic, and
/// wall clock for the stages), when it was first bound, and which exist.
#[derive(Default)]
struct Seen {
    running: HashMap<String, Instant>,
    running_wall: HashMap<String, SystemTime>,
    bound: HashMap<String, SystemTime>,
    present: HashSet<String>,
}

/// A watch on the bench's pods, recording [`Seen`] as events arrive.
struct PodWatch {
    seen: Arc<Mutex<Seen>>,
    changed: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn running_and_ready(pod: &Pod) -> bool {
    let Some(status) = &pod.status else {
        return false;
    };
    status.phase.as_deref() == Some("Running")
        && status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

impl PodWatch {
    fn start(api: Api<Pod>) -> Self {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let changed = Arc::new(Notify::new());
        let (task_seen, task_changed) = (seen.clone(), changed.clone());
        let task = tokio::spawn(async move {
            let config = watcher::Config::default().labels(LABEL);
            let mut events = std::pin::pin!(watcher(api, config));
            while let Some(event) = events.next().await {
                let (now, wall) = (Instant::now(), SystemTime::now());
                let Ok(event) = event else { continue };
                let mut seen = task_seen.lock().unwrap_or_else(PoisonError::into_inner);
                match event {
                    watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => {
                        let name = pod.metadata.name.clone().unwrap_or_default();
                        if running_and_ready(&pod) {
                            seen.running.entry(name.clone()).or_insert(now);
                            seen.running_wall.entry(name.clone()).or_insert(wall);
                        }
                        if pod.spec.as_ref().is_some_and(|s| s.node_name.is_some()) {
                            seen.bound.entry(name.clone()).or_insert(wall);
                        }
                        seen.present.insert(name);
                    }
                    watcher::Event::Delete(pod) => {
                        let name = pod.metadata.name.clone().unwrap_or_default();
                        seen.present.remove(&name);
                    }
                    watcher::Event::Init | watcher::Event::InitDone => {}
                }
                drop(seen);
                task_changed.notify_waiters();
            }
        });
        Self {
            seen,
            changed,
            task,
        }
    }

    /// Waits until `done` holds for what the watch has seen.
    async fn until(
        &self,
        within: Duration,
        what: &str,
        done: impl Fn(&Seen) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.changed.notified();
            if done(&self.seen.lock().unwrap_or_else(PoisonError::into_inner)) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                bail!("timed out after {within:?} waiting for {what}");
            }
        }
    }

    fn running_at(&self, name: &str) -> Option<Instant> {
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.running.get(name).copied()
    }

    /// (bound, Running) on the wall clock.
    fn wall_times(&self, name: &str) -> Option<(SystemTime, SystemTime)> {
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        Some((*seen.bound.get(name)?, *seen.running_wall.get(name)?))
    }
}

/// One burst pod's wall-clock milestones.
struct Milestones {
    posted: SystemTime,
    bound: SystemTime,
    sandbox_created: SystemTime,
    container_started: SystemTime,
    running: SystemTime,
}

/// The stage durations of each pod: scheduler, node pickup, CRI, status report.
fn stages(pods: &[Milestones]) -> [Vec<Duration>; 4] {
    let between = |a: SystemTime, b: SystemTime| b.duration_since(a).unwrap_or_default();
    let mut out: [Vec<Duration>; 4] = Default::default();
    for m in pods {
        out[0].push(between(m.posted, m.bound));
        out[1].push(between(m.bound, m.sandbox_created));
        out[2].push(between(m.sandbox_created, m.container_started));
        out[3].push(between(m.container_started, m.running));
    }
    out
}

fn from_unix_nanos(nanos: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(u64::try_from(nanos).unwrap_or(0))
}

/// The milestones of the running pods `posted` (name → wall time of its POST), from the watch
/// and containerd (sandbox `createdAt`, container `startedAt`).
async fn milestones(
    containerd: &TestContainerd,
    watch: &PodWatch,
    posted: &[(String, SystemTime)],
) -> anyhow::Result<Vec<Milestones>> {
    let sandboxes = containerd.cri.list_pod_sandbox(None).await?;
    let containers = containerd.cri.list_containers(None).await?;
    let mut out = Vec::new();
    for (name, posted) in posted {
        let sandbox = sandboxes
            .iter()
            .find(|s| s.metadata.as_ref().is_some_and(|m| m.name == *name))
            .with_context(|| format!("sandbox of {name}"))?;
        let container = containers
            .iter()
            .find(|c| c.pod_sandbox_id == sandbox.id)
            .with_context(|| format!("container of {name}"))?;
        let started = containerd
            .cri
            .container_status(&container.id, false)
            .await?;
        let (bound, running) = watch.wall_times(name).context("watch times")?;
        out.push(Milestones {
            posted: *posted,
            bound,
            sandbox_created: from_unix_nanos(sandbox.created_at),
            container_started: from_unix_nanos(started.status.started_at),
            running,
        });
    }
    Ok(out)
}

fn pod(name: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {LABEL: "1"}},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{
                "name": "main",
                "image": IMAGE,
                "command": ["sleep", "3600"],
                "resources": {"requests": {"cpu": "1m"}},
            }],
        },
    }))?)
}

/// Creates `names` at once; per pod, the time from just before its POST to Running on the
/// watch, and the time from the first POST until all are Running.
async fn api_start(
    api: &Api<Pod>,
    watch: &PodWatch,
    cluster: &TestCluster,
    names: &[String],
) -> anyhow::Result<Started> {
    let creates = names.iter().map(|name| async move {
        let pod = pod(name)?;
        let (t0, wall) = (Instant::now(), SystemTime::now());
        api.create(&PostParams::default(), &pod)
            .await
            .with_context(|| format!("creating pod {name}"))?;
        anyhow::Ok((name.clone(), t0, wall))
    });
    let created = futures::future::try_join_all(creates).await?;
    watch
        .until(Duration::from_secs(180), "the pods to be Running", |seen| {
            names.iter().all(|n| seen.running.contains_key(n))
        })
        .await
        .with_context(|| cluster.log_tail())?;
    let mut latencies = Vec::new();
    let first = created
        .iter()
        .map(|(_, t0, _)| *t0)
        .min()
        .context("no pods")?;
    let mut last = first;
    for (name, t0, _) in &created {
        let running = watch.running_at(name).context("running time")?;
        latencies.push(running.saturating_duration_since(*t0));
        last = last.max(running);
    }
    Ok(Started {
        latencies,
        all: last.saturating_duration_since(first),
        posted: created
            .into_iter()
            .map(|(name, _, wall)| (name, wall))
            .collect(),
    })
}

/// What [`api_start`] measured.
struct Started {
    /// Per pod: POST → Running on the watch.
    latencies: Vec<Duration>,
    /// First POST → all Running.
    all: Duration,
    /// Per pod: the wall time of its POST.
    posted: Vec<(String, SystemTime)>,
}

/// Deletes the bench's pods and waits until the API and containerd no longer have them.
async fn api_remove(
    api: &Api<Pod>,
    watch: &PodWatch,
    cluster: &TestCluster,
    names: &[String],
    baseline_sandboxes: usize,
) -> anyhow::Result<()> {
    for name in names {
        api.delete(name, &DeleteParams::default())
            .await
            .with_context(|| format!("deleting pod {name}"))?;
    }
    watch
        .until(Duration::from_secs(180), "the pods to be gone", |seen| {
            names.iter().all(|n| !seen.present.contains(n))
        })
        .await?;
    wait_for(
        Duration::from_secs(180),
        "the pods' sandboxes to go",
        || ready_sandboxes_at_most(cluster.containerd(), baseline_sandboxes),
    )
    .await
    .with_context(|| cluster.log_tail())
}

async fn ready_sandboxes(containerd: &TestContainerd) -> anyhow::Result<usize> {
    let sandboxes = containerd.cri.list_pod_sandbox(None).await?;
    Ok(sandboxes
        .iter()
        .filter(|s| s.state == kwk_cri::api::PodSandboxState::SandboxReady as i32)
        .count())
}

async fn ready_sandboxes_at_most(containerd: &TestContainerd, n: usize) -> bool {
    ready_sandboxes(containerd).await.is_ok_and(|c| c <= n)
}

/// The CRI floor: `names` started straight through CRI, concurrently; per pod the time from
/// just before RunPodSandbox until StartContainer returned, and the sandbox IDs.
async fn cri_start(
    containerd: &TestContainerd,
    names: &[String],
) -> anyhow::Result<(Vec<Duration>, Duration, Vec<String>)> {
    let first = Instant::now();
    let runs = names.iter().map(|name| async move {
        let sandbox = containerd.sandbox(name, PodShape::default())?;
        let t0 = Instant::now();
        let pod = containerd.cri.run_pod_sandbox(sandbox.clone(), "").await?;
        let config = container_config("main", IMAGE, &["sleep", "3600"]);
        let id = containerd
            .cri
            .create_container(&pod, config, sandbox)
            .await?;
        containerd.cri.start_container(&id).await?;
        anyhow::Ok((pod, t0.elapsed()))
    });
    let results = futures::future::try_join_all(runs).await?;
    let all = first.elapsed();
    let (pods, latencies) = results.into_iter().unzip();
    Ok((latencies, all, pods))
}

async fn cri_remove(containerd: &TestContainerd, pods: &[String]) -> anyhow::Result<()> {
    for pod in pods {
        containerd.cri.stop_pod_sandbox(pod).await?;
        containerd.cri.remove_pod_sandbox(pod).await?;
    }
    Ok(())
}

fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS")?;
    Ok(kib as f64 / 1024.0)
}

/// The nearest-rank `q` quantile of `v`, in seconds.
fn quantile(v: &[Duration], q: f64) -> f64 {
    let mut sorted = v.to_vec();
    sorted.sort_unstable();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).map_or(0.0, Duration::as_secs_f64)
}

fn max(v: &[Duration]) -> f64 {
    v.iter().max().map_or(0.0, Duration::as_secs_f64)
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

async fn wait_node_ready(cluster: &TestCluster) -> anyhow::Result<()> {
    cluster.wait_node_ready(Duration::from_secs(120)).await?;
    // Pods of the default namespace use its "default" service account.
    wait_for(
        Duration::from_secs(60),
        "the default service account",
        || {
            let exists = cluster
                .kubectl(&["get", "serviceaccount", "default", "-o", "name"])
                .is_ok();
            std::future::ready(exists)
        },
    )
    .await
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut reps = 10usize;
    let mut network = PodNetwork::KwkCni;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--reps" => reps = args.next().context("--reps N")?.parse()?,
            "--cni" => {
                network = match args.next().as_deref() {
                    Some("kwk") => PodNetwork::KwkCni,
                    Some("reference") => PodNetwork::Reference,
                    other => bail!("--cni kwk|reference, not {other:?}"),
                }
            }
            other => bail!("unknown argument {other:?} (--reps N, --cni kwk|reference)"),
        }
    }
    anyhow::ensure!(reps > 0, "--reps must be at least 1");
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "cluster-bench needs root (containerd, netns, cgroups)"
    );
    // On Ctrl-C the bench's future is dropped, and the cluster with it (torn down).
    tokio::select! {
        result = bench(reps, network) => result,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
    }
}

async fn bench(reps: usize, network: PodNetwork) -> anyhow::Result<()> {
    let dir = std::env::current_exe()?
        .parent()
        .context("locating the build directory")?
        .to_path_buf();
    let binaries = ClusterBinaries::next_to(&dir.join("kwk-node"), &dir.join("kwk"))
        .context("run `cargo build --workspace` first")?;

    eprintln!(
        "starting the cluster with the binaries in {}…",
        dir.display()
    );
    let options = ClusterOptions {
        pod_network: network,
        ..ClusterOptions::default()
    };
    let cluster = TestCluster::start_in(binaries, options).await?;
    wait_node_ready(&cluster).await?;
    let pid = cluster.node_pid().context("kwk-node's pid")?;
    let (client, _forward) = cluster.admin_client().await?;
    let api: Api<Pod> = Api::namespaced(client, "default");
    let watch = PodWatch::start(api.clone());
    let containerd = cluster.containerd();

    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_rss = rss_mib(pid)?;
    let baseline = ready_sandboxes(containerd).await?;

    // A warm-up pod (not counted), then one pod at a time.
    eprintln!("API pods: warm-up, {reps} one at a time, a burst of {BURST}…");
    let warm = vec!["warm-up".to_owned()];
    api_start(&api, &watch, &cluster, &warm).await?;
    api_remove(&api, &watch, &cluster, &warm, baseline).await?;
    let mut single = Vec::new();
    for r in 0..reps {
        let names = vec![format!("one-{r}")];
        single.extend(api_start(&api, &watch, &cluster, &names).await?.latencies);
        api_remove(&api, &watch, &cluster, &names, baseline).await?;
    }

    let names: Vec<String> = (0..BURST).map(|i| format!("burst-{i}")).collect();
    let started = api_start(&api, &watch, &cluster, &names).await?;
    let (burst, burst_all) = (started.latencies, started.all);
    let burst_stages = stages(&milestones(containerd, &watch, &started.posted).await?);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let busy_rss = rss_mib(pid)?;
    api_remove(&api, &watch, &cluster, &names, baseline).await?;

    eprintln!("CRI floor: warm-up, {reps} one at a time, {BURST} in parallel…");
    let (_, _, pods) = cri_start(containerd, &["cri-warm-up".to_owned()]).await?;
    cri_remove(containerd, &pods).await?;
    let mut cri_single = Vec::new();
    for r in 0..reps {
        let (latencies, _, pods) = cri_start(containerd, &[format!("cri-one-{r}")]).await?;
        cri_single.extend(latencies);
        cri_remove(containerd, &pods).await?;
    }
    let raw: Vec<String> = (0..BURST).map(|i| format!("cri-burst-{i}")).collect();
    let (cri_burst, cri_burst_all, pods) = cri_start(containerd, &raw).await?;
    cri_remove(containerd, &pods).await?;

    println!(
        "cluster-bench: API create → Running+Ready on a watch (kwk-node, control plane as static \
         pods), containerd {}",
        containerd.cri.version().await?.runtime_version
    );
    println!(
        "binaries: {}; pod network: {}",
        dir.display(),
        match network {
            PodNetwork::KwkCni => "kwk-cni (kwk-node's conflist from the podCIDR)",
            PodNetwork::Reference => "reference bridge + host-local (/usr/lib/cni)",
        }
    );
    println!(
        "{:<34} {:>9} {:>9} {:>9} {:>9}",
        "seconds", "p50", "p99", "max", "all"
    );
    let row = |what: &str, v: &[Duration], all: Option<Duration>| {
        println!(
            "{what:<34} {:>9.3} {:>9.3} {:>9.3} {:>9}",
            quantile(v, 0.5),
            quantile(v, 0.99),
            max(v),
            all.map_or_else(|| "-".to_owned(), |d| format!("{:.3}", d.as_secs_f64()))
        );
    };
    row(&format!("API pod, one at a time (n={reps})"), &single, None);
    row(
        &format!("API pods, burst of {BURST}"),
        &burst,
        Some(burst_all),
    );
    row(
        &format!("CRI floor, one at a time (n={reps})"),
        &cri_single,
        None,
    );
    row(
        &format!("CRI floor, {BURST} in parallel"),
        &cri_burst,
        Some(cri_burst_all),
    );
    println!(
        "kwk over the CRI floor: one pod p50 +{:.3} s; burst p50 +{:.3} s, all Running +{:.3} s",
        quantile(&single, 0.5) - quantile(&cri_single, 0.5),
        quantile(&burst, 0.5) - quantile(&cri_burst, 0.5),
        burst_all.as_secs_f64() - cri_burst_all.as_secs_f64()
    );
    println!(
        "burst of {BURST}, p50 per stage: POST → bound {:.3} s; bound → sandbox created {:.3} s; \
         sandbox → container started (CRI) {:.3} s; started → Running on the watch {:.3} s",
        quantile(&burst_stages[0], 0.5),
        quantile(&burst_stages[1], 0.5),
        quantile(&burst_stages[2], 0.5),
        quantile(&burst_stages[3], 0.5),
    );
    let (p50, p99) = (quantile(&burst, 0.5), quantile(&burst, 0.99));
    println!(
        "goal burst p50 ≤ {P50_GOAL_S} s: {p50:.3} s {}; p99 ≤ {P99_GOAL_S} s: {p99:.3} s {}",
        verdict(p50 <= P50_GOAL_S),
        verdict(p99 <= P99_GOAL_S)
    );
    println!(
        "kwk-node RSS: idle (control plane only) {idle_rss:.1} MiB {}, with {BURST} pods \
         {busy_rss:.1} MiB {} (goal ≤ {RSS_GOAL_MIB} MiB)",
        verdict(idle_rss <= RSS_GOAL_MIB),
        verdict(busy_rss <= RSS_GOAL_MIB)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<Duration> = (1..=30).rev().map(Duration::from_secs).collect();
        for (q, want) in [(0.5, 15.0), (0.99, 30.0), (0.0, 1.0), (1.0, 30.0)] {
            assert_eq!(quantile(&v, q), want, "q={q}");
        }
        assert_eq!(quantile(&[Duration::from_millis(250)], 0.99), 0.25);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }

    #[test]
    fn running_counts_only_with_ready_true() {
        let with = |phase: &str, ready: &str| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p"},
                "status": {"phase": phase, "conditions": [{"type": "Ready", "status": ready}]},
            }))
            .unwrap()
        };
        assert!(running_and_ready(&with("Running", "True")));
        assert!(!running_and_ready(&with("Running", "False")));
        assert!(!running_and_ready(&with("Pending", "True")));
        assert!(!running_and_ready(&pod("p").unwrap()));
    }
}
