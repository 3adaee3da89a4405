//! Node-pressure eviction through a whole single-node cluster (real containerd, the real
//! apiserver, kubectl): with `evictionHard: memory.available` set just below what is free, a
//! BestEffort pod allocating ~300 MiB is evicted — phase `Failed`, reason `Evicted`,
//! upstream's message, an `Evicted` event, the Node's `MemoryPressure` condition — while a
//! Guaranteed pod within its request keeps running.
//!
//! Needs `kwk-control-plane` and `kwk-cni` built next to kwk-node: `cargo build -p
//! kwk-control-plane -p kwk-cni` first. Skipped with less than 2 GiB available. Other
//! processes on the machine allocating more than the 150 MiB margin while it runs can make
//! the Guaranteed pod the next victim.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed expectation aborts the test"
)]

use std::path::Path;
use std::time::Duration;

use kwk_tests::cluster::{ClusterBinaries, TestCluster};
use kwk_tests::{privileged_tests_enabled, wait_for};
use serde_json::Value;

const KWK_NODE: &str = env!("CARGO_BIN_EXE_kwk-node");
const KWK: &str = env!("CARGO_BIN_EXE_kwk");
const WAIT: Duration = Duration::from_secs(90);
const MI: u64 = 1 << 20;

const GUARANTEED: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: guaranteed}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: localhost/busybox:latest
    command: ["/bin/sh", "-c", "exec sleep 3600"]
    resources:
      requests: {cpu: 50m, memory: 64Mi}
      limits: {cpu: 50m, memory: 64Mi}
"#;

const HOG: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: hog}
spec:
  terminationGracePeriodSeconds: 30
  containers:
  - name: hog
    image: localhost/busybox:latest
    # dd holds its 300 MiB buffer while blocked writing into the pipe.
    command: ["/bin/sh", "-c", "sleep 3; dd if=/dev/zero bs=300M count=1 | sleep 3600"]
"#;

fn mem_available() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|l| l.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
        .unwrap()
        * 1024
}

fn json(cluster: &TestCluster, args: &[&str]) -> Value {
    let out = cluster.kubectl(args).unwrap_or_default();
    serde_json::from_str(&out).unwrap_or(Value::Null)
}

fn pod(cluster: &TestCluster, name: &str) -> Value {
    json(cluster, &["get", "pod", name, "-o", "json"])
}

async fn wait(cluster: &TestCluster, what: &str, mut check: impl FnMut() -> bool) {
    wait_for(WAIT, what, || std::future::ready(check()))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.log_tail()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_a_best_effort_hog_is_evicted_and_a_guaranteed_pod_survives() {
    if !privileged_tests_enabled() {
        return;
    }
    if mem_available() < 2 << 30 {
        eprintln!("less than 2 GiB available; skipped");
        return;
    }
    let binaries = ClusterBinaries::next_to(Path::new(KWK_NODE), Path::new(KWK)).unwrap();
    let mut cluster = TestCluster::start(binaries).await.unwrap();
    cluster.wait_node_ready(WAIT).await.unwrap();
    let applied = cluster
        .kubectl_output(&["apply", "-f", "-"], Some(GUARANTEED))
        .unwrap();
    assert!(applied.status.success(), "{applied:?}");
    wait(&cluster, "the Guaranteed pod Running", || {
        pod(&cluster, "guaranteed")["status"]["phase"] == "Running"
    })
    .await;

    // Everything runs: the threshold goes 150 MiB below what is free now, so the 300 MiB
    // hog crosses it by about 150 MiB.
    let threshold = mem_available().saturating_sub(150 * MI);
    std::fs::write(
        cluster.config_dir().join("kubelet.yaml.d/60-eviction.yaml"),
        format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
             evictionHard: {{memory.available: \"{}Ki\"}}\nevictionPressureTransitionPeriod: 30s\n",
            threshold / 1024
        ),
    )
    .unwrap();
    cluster.kill_node().unwrap();
    cluster.start_node().unwrap();
    cluster.wait_node_ready(WAIT).await.unwrap();

    let applied = cluster
        .kubectl_output(&["apply", "-f", "-"], Some(HOG))
        .unwrap();
    assert!(applied.status.success(), "{applied:?}");
    wait(&cluster, "the hog evicted", || {
        pod(&cluster, "hog")["status"]["reason"] == "Evicted"
    })
    .await;
    let hog = pod(&cluster, "hog");
    assert_eq!(hog["status"]["phase"], "Failed", "{hog}");
    let message = hog["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("The node was low on resource: memory. Threshold quantity: "),
        "{message}"
    );
    assert!(
        message.contains("Container hog was using ")
            && message.ends_with("request is 0, has larger consumption of memory. "),
        "{message}"
    );
    wait(&cluster, "the Evicted event", || {
        json(
            &cluster,
            &[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=hog,reason=Evicted",
                "-o",
                "json",
            ],
        )["items"]
            .as_array()
            .is_some_and(|items| !items.is_empty())
    })
    .await;
    let node = &json(&cluster, &["get", "nodes", "-o", "json"])["items"][0];
    let pressure = node["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "MemoryPressure"))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(pressure["status"], "True", "{pressure}");
    // The hog's memory is back: nothing else is evicted, the Guaranteed pod runs on.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let guaranteed = pod(&cluster, "guaranteed");
    assert_eq!(guaranteed["status"]["phase"], "Running", "{guaranteed}");
    assert!(guaranteed["status"]["reason"].is_null(), "{guaranteed}");
    // The evicted pod is not started again.
    let hog = pod(&cluster, "hog");
    assert_eq!(hog["status"]["phase"], "Failed", "{hog}");
}
