//! `node-bench`: kwk-node's own cost of starting static pods, next to the CRI calls it makes.
//!
//! For one pod at a time (median of `--reps`) and for a burst of 30 manifests written at once,
//! it measures "manifest written → container started" (the container's `startedAt` from CRI,
//! so polling does not count) through kwk-node, and the same pod shape started by calling CRI
//! directly (RunPodSandbox, CreateContainer, StartContainer) against the same containerd. The
//! difference is kwk-node's overhead. It also prints kwk-node's RSS idle and with 30 pods.
//!
//! Run: `cargo build --release --workspace && sudo target/release/node-bench [--reps N]`.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use kwk_cri::api;
use kwk_tests::node::TestNode;
use kwk_tests::pods::{PodShape, container_config};
use kwk_tests::{TestContainerd, wait_for};

const BURST: usize = 30;
const COMMAND: &[&str] = &[
    "/bin/sh",
    "-c",
    "trap 'exit 0' TERM; while true; do sleep 1; done",
];

fn manifest(name: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: main
    image: localhost/kwk/busybox:1
    command: {COMMAND:?}
"#
    )
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn ms(ns: i64) -> f64 {
    ns as f64 / 1e6
}

fn median(mut v: Vec<i64>) -> i64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// `startedAt` of every running container, by pod name label.
async fn started(containerd: &TestContainerd) -> anyhow::Result<HashMap<String, i64>> {
    let mut out = HashMap::new();
    for c in containerd.cri.list_containers(None).await? {
        if c.state != api::ContainerState::ContainerRunning as i32 {
            continue;
        }
        let status = containerd.cri.container_status(&c.id, false).await?.status;
        let pod = c
            .labels
            .get("io.kubernetes.pod.name")
            .cloned()
            .unwrap_or_else(|| c.pod_sandbox_id.clone());
        out.insert(pod, status.started_at);
    }
    Ok(out)
}

/// Writes manifests for `names` at once; returns (write time, latest container start).
async fn kwk_start(
    containerd: &TestContainerd,
    node: &TestNode,
    names: &[String],
) -> anyhow::Result<(i64, i64)> {
    let t0 = now_ns();
    for name in names {
        node.write_manifest(&format!("{name}.yaml"), &manifest(name))?;
    }
    let full: Vec<String> = names
        .iter()
        .map(|n| format!("{n}-{}", node.node_name))
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let latest = loop {
        let started = started(containerd).await?;
        if full.iter().all(|n| started.contains_key(n)) {
            break full
                .iter()
                .filter_map(|n| started.get(n))
                .copied()
                .max()
                .unwrap_or(0);
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "pods did not start\n{}",
            node.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    Ok((t0, latest))
}

async fn kwk_remove(
    containerd: &TestContainerd,
    node: &TestNode,
    names: &[String],
) -> anyhow::Result<()> {
    for name in names {
        node.remove_manifest(&format!("{name}.yaml"))?;
    }
    wait_for(Duration::from_secs(120), "pods to go", || async {
        containerd
            .cri
            .list_pod_sandbox(None)
            .await
            .is_ok_and(|s| s.is_empty())
    })
    .await
}

/// The same pods started straight through CRI, concurrently; returns (t0, latest start).
async fn cri_start(
    containerd: &TestContainerd,
    names: &[String],
) -> anyhow::Result<(i64, Vec<String>, i64)> {
    let t0 = now_ns();
    let runs = names.iter().map(|name| async move {
        let sandbox = containerd.sandbox(name, PodShape::default())?;
        let pod = containerd.cri.run_pod_sandbox(sandbox.clone(), "").await?;
        let config = container_config("main", &containerd.images.busybox_reference, COMMAND);
        let id = containerd
            .cri
            .create_container(&pod, config, sandbox)
            .await?;
        containerd.cri.start_container(&id).await?;
        let status = containerd.cri.container_status(&id, false).await?.status;
        anyhow::Ok((pod, status.started_at))
    });
    let results = futures::future::try_join_all(runs).await?;
    let latest = results.iter().map(|(_, s)| *s).max().unwrap_or(0);
    Ok((t0, results.into_iter().map(|(p, _)| p).collect(), latest))
}

async fn cri_remove(containerd: &TestContainerd, pods: &[String]) -> anyhow::Result<()> {
    for pod in pods {
        containerd.cri.stop_pod_sandbox(pod).await?;
        containerd.cri.remove_pod_sandbox(pod).await?;
    }
    Ok(())
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut reps = 10usize;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--reps" => reps = args.next().context("--reps N")?.parse()?,
            other => anyhow::bail!("unknown argument {other:?} (only --reps N)"),
        }
    }
    anyhow::ensure!(nix::unistd::geteuid().is_root(), "node-bench needs root");
    let binary = std::env::current_exe()?
        .parent()
        .context("build directory")?
        .join("kwk-node");
    anyhow::ensure!(
        binary.exists(),
        "{} missing: build the workspace first",
        binary.display()
    );

    let containerd = TestContainerd::start().await?;
    let node = TestNode::start(&containerd, Path::new(&binary)).await?;
    let pid = node.pid().context("kwk-node pid")?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = rss_kib(pid)?;

    // One pod at a time, alternating kwk-node and direct CRI.
    let (mut kwk_one, mut cri_one) = (Vec::new(), Vec::new());
    for r in 0..reps {
        let names = vec![format!("one{r}")];
        let (t0, started) = kwk_start(&containerd, &node, &names).await?;
        kwk_one.push(started - t0);
        kwk_remove(&containerd, &node, &names).await?;
        let names = vec![format!("raw{r}")];
        let (t0, pods, started) = cri_start(&containerd, &names).await?;
        cri_one.push(started - t0);
        cri_remove(&containerd, &pods).await?;
    }

    // A burst of 30.
    let names: Vec<String> = (0..BURST).map(|i| format!("burst{i}")).collect();
    let (t0, started) = kwk_start(&containerd, &node, &names).await?;
    let kwk_burst = started - t0;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let busy_rss = rss_kib(pid)?;
    kwk_remove(&containerd, &node, &names).await?;
    let raw: Vec<String> = (0..BURST).map(|i| format!("rawburst{i}")).collect();
    let (t0, pods, started) = cri_start(&containerd, &raw).await?;
    let cri_burst = started - t0;
    cri_remove(&containerd, &pods).await?;

    let (k1, c1) = (median(kwk_one), median(cri_one));
    println!(
        "static pod start (manifest written → container started), containerd {}",
        containerd.cri.version().await?.runtime_version
    );
    println!(
        "{:<32} {:>12} {:>12} {:>14}",
        "", "kwk-node ms", "CRI only ms", "overhead ms"
    );
    println!(
        "{:<32} {:>12.1} {:>12.1} {:>14.1}",
        format!("1 pod (median of {reps})"),
        ms(k1),
        ms(c1),
        ms(k1 - c1)
    );
    println!(
        "{:<32} {:>12.1} {:>12.1} {:>14.1}",
        format!("burst of {BURST} (all started)"),
        ms(kwk_burst),
        ms(cri_burst),
        ms(kwk_burst - cri_burst)
    );
    println!(
        "{:<32} {:>12} {:>12} {:>14.1}",
        "overhead per pod in the burst",
        "",
        "",
        ms((kwk_burst - cri_burst) / i64::try_from(BURST)?)
    );
    println!(
        "kwk-node RSS: idle {:.1} MiB, with {BURST} pods {:.1} MiB",
        idle_rss as f64 / 1024.0,
        busy_rss as f64 / 1024.0
    );
    Ok(())
}
