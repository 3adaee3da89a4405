//! Node-pressure eviction through a whole single-node cluster (real containerd, the real
//! apiserver, kubectl): with `evictionHard: memory.available` set just below what is free, a
//! BestEffort pod allocating memory until it crosses the threshold is evicted — phase `Failed`, reason `Evicted`,
//! upstream's message, an `Evicted` event, the Node's `MemoryPressure` condition — while a
//! Guaranteed pod within its request keeps running.
//!
//! Both pods run before the threshold is set, so whatever brings the node under it (the hog,
//! or other processes on the machine) the BestEffort pod ranks first; the hog allocates only
//! once told to, after kwk-node restarted with the threshold, and then 100 MiB at a time up to
//! 2.4 GiB: the machine's own memory use drifts (here it fell by ~800 MiB within a minute as
//! the kernel reclaimed cold page cache), so a fixed-size hog might never cross.
//!
//! Needs `kwk-control-plane` and `kwk-cni` built next to kwk-node: `cargo build -p
//! kwk-control-plane -p kwk-cni` first. Skipped with less than 3 GiB available.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed expectation aborts the test"
)]

use std::path::Path;
use std::time::Duration;

use kwk_agent::cgroups::node_memory::NodeMemorySource;
use kwk_tests::cluster::{ClusterBinaries, TestCluster};
use kwk_tests::privileged_tests_enabled;
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
    # Once /tmp/go exists: every 0.3 s one more dd holding its 100 MiB buffer while blocked
    # writing into a pipe nobody reads, up to 24 of them.
    command:
    - /bin/sh
    - -c
    - |
      while [ ! -e /tmp/go ]; do sleep 0.2; done
      i=0
      while [ $i -lt 24 ]; do
        dd if=/dev/zero bs=100M count=1 2>/dev/null | sleep 3600 &
        i=$((i + 1))
        sleep 0.3
      done
      wait
"#;

/// `memory.available` as kwk-node computes it (capacity − the root cgroup's working set).
fn mem_available() -> u64 {
    NodeMemorySource::detect(Path::new("/sys/fs/cgroup"))
        .read()
        .unwrap()
        .available()
}

fn json(cluster: &TestCluster, args: &[&str]) -> Value {
    cluster.json(args)
}

fn pod(cluster: &TestCluster, name: &str) -> Value {
    cluster.pod_json(name)
}

async fn wait(cluster: &TestCluster, what: &str, check: impl FnMut() -> bool) {
    cluster.wait_until(WAIT, what, check).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_a_best_effort_hog_is_evicted_and_a_guaranteed_pod_survives() {
    if !privileged_tests_enabled() {
        return;
    }
    if mem_available() < 3 << 30 {
        eprintln!("less than 3 GiB available; skipped");
        return;
    }
    let binaries = ClusterBinaries::next_to(Path::new(KWK_NODE), Path::new(KWK)).unwrap();
    let mut cluster = TestCluster::start(binaries).await.unwrap();
    cluster.wait_node_ready(WAIT).await.unwrap();
    cluster.apply(&format!("{GUARANTEED}---\n{HOG}"));
    for name in ["guaranteed", "hog"] {
        wait(&cluster, &format!("{name} Running"), || {
            pod(&cluster, name)["status"]["phase"] == "Running"
        })
        .await;
    }

    // Everything runs: the threshold goes 400 MiB below what is free now, so once the hog is
    // gone the node is about 400 MiB clear of it (room for other processes on the machine to
    // grow without a second eviction).
    let threshold = mem_available().saturating_sub(400 * MI);
    std::fs::write(
        cluster.config_dir().join("kubelet.yaml.d/60-eviction.yaml"),
        format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
             evictionHard: {{memory.available: \"{}Ki\"}}\nevictionPressureTransitionPeriod: 30s\n",
            threshold / 1024
        ),
    )
    .unwrap();
    cluster.restart_node(WAIT).await.unwrap();

    // The hog may already be gone if the machine crossed the threshold by itself.
    wait(&cluster, "the hog told to allocate", || {
        cluster
            .kubectl(&["exec", "hog", "--", "touch", "/tmp/go"])
            .is_ok()
            || pod(&cluster, "hog")["status"]["reason"] == "Evicted"
    })
    .await;
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
    assert_eq!(
        guaranteed["status"]["phase"],
        "Running",
        "{guaranteed}\n{}",
        cluster.log_tail()
    );
    assert!(guaranteed["status"]["reason"].is_null(), "{guaranteed}");
    // The evicted pod is not started again.
    let hog = pod(&cluster, "hog");
    assert_eq!(hog["status"]["phase"], "Failed", "{hog}");
}
