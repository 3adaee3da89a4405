//! Local ephemeral storage eviction through a whole single-node cluster (real containerd, the
//! real apiserver, kubectl). Four pods each write 20 MiB:
//!
//! - `capped` into an emptyDir with `sizeLimit: 8Mi` → evicted, the message names the volume;
//! - `uncapped` into an emptyDir without a limit → keeps running, and `/stats/summary` shows
//!   its volume and its ephemeral storage;
//! - `rootfs` into its writable layer, its container limited to `ephemeral-storage: 8Mi`
//!   (a second container's limit keeps the pod's total above the usage) → evicted with the
//!   container's message;
//! - `total` 20 MiB into its layer and 20 MiB into an emptyDir, its one container limited to
//!   30Mi → evicted, the pod's total over the limit.
//!
//! Needs `kwk-control-plane` and `kwk-cni` built next to kwk-node: `cargo build -p
//! kwk-control-plane -p kwk-cni` first.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed expectation aborts the test"
)]

use std::path::Path;
use std::time::Duration;

use kwk_tests::cluster::{ClusterBinaries, NODE_NAME, TestCluster};
use kwk_tests::privileged_tests_enabled;
use serde_json::Value;

const KWK_NODE: &str = env!("CARGO_BIN_EXE_kwk-node");
const KWK: &str = env!("CARGO_BIN_EXE_kwk");
const WAIT: Duration = Duration::from_secs(60);
const MI: u64 = 1 << 20;

const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: capped}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: localhost/busybox:latest
    command: ["/bin/sh", "-c", "dd if=/dev/zero of=/data/f bs=1M count=20 && exec sleep 3600"]
    volumeMounts: [{name: scratch, mountPath: /data}]
  volumes:
  - name: scratch
    emptyDir: {sizeLimit: 8Mi}
---
apiVersion: v1
kind: Pod
metadata: {name: uncapped}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: localhost/busybox:latest
    command: ["/bin/sh", "-c", "dd if=/dev/zero of=/data/f bs=1M count=20 && exec sleep 3600"]
    volumeMounts: [{name: scratch, mountPath: /data}]
  volumes:
  - name: scratch
    emptyDir: {}
---
apiVersion: v1
kind: Pod
metadata: {name: rootfs}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: writer
    image: localhost/busybox:latest
    command: ["/bin/sh", "-c", "dd if=/dev/zero of=/f bs=1M count=20 && exec sleep 3600"]
    resources: {limits: {ephemeral-storage: 8Mi}}
  - name: idle
    image: localhost/busybox:latest
    command: ["/bin/sh", "-c", "exec sleep 3600"]
    resources: {limits: {ephemeral-storage: 100Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: total}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: localhost/busybox:latest
    command: ["/bin/sh", "-c", "dd if=/dev/zero of=/f bs=1M count=20 && dd if=/dev/zero of=/data/f bs=1M count=20 && exec sleep 3600"]
    resources: {limits: {ephemeral-storage: 30Mi}}
    volumeMounts: [{name: scratch, mountPath: /data}]
  volumes:
  - name: scratch
    emptyDir: {}
"#;

fn pod(cluster: &TestCluster, name: &str) -> Value {
    cluster.pod_json(name)
}

async fn wait_evicted(cluster: &TestCluster, name: &str, message: &str) {
    cluster
        .wait_until(WAIT, &format!("{name} evicted"), || {
            pod(cluster, name)["status"]["reason"] == "Evicted"
        })
        .await;
    let status = &pod(cluster, name)["status"];
    assert_eq!(status["phase"], "Failed", "{status}");
    assert_eq!(status["message"], message, "{status}");
    let disruption = status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "DisruptionTarget"))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(disruption["reason"], "TerminationByKubelet", "{status}");
    cluster
        .wait_until(WAIT, &format!("the Evicted event of {name}"), || {
            cluster
                .events_of(name)
                .iter()
                .any(|(reason, text)| reason == "Evicted" && text == message)
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_storage_limits_evict_and_unlimited_pods_keep_running() {
    if !privileged_tests_enabled() {
        return;
    }
    let binaries = ClusterBinaries::next_to(Path::new(KWK_NODE), Path::new(KWK)).unwrap();
    let cluster = TestCluster::start(binaries).await.unwrap();
    cluster.wait_node_ready(WAIT).await.unwrap();
    cluster.apply(PODS);

    wait_evicted(
        &cluster,
        "capped",
        r#"Usage of EmptyDir volume "scratch" exceeds the limit "8Mi". "#,
    )
    .await;
    wait_evicted(
        &cluster,
        "rootfs",
        r#"Container writer exceeded its local ephemeral storage limit "8Mi". "#,
    )
    .await;
    wait_evicted(
        &cluster,
        "total",
        "Pod ephemeral local storage usage exceeds the total limit of containers 30Mi. ",
    )
    .await;

    // The pod without limits keeps running, and the summary shows what it uses.
    let uncapped = pod(&cluster, "uncapped");
    assert_eq!(uncapped["status"]["phase"], "Running", "{uncapped}");
    assert!(uncapped["status"]["reason"].is_null(), "{uncapped}");
    let path = format!("/api/v1/nodes/{NODE_NAME}/proxy/stats/summary");
    let summary = cluster.json(&["get", "--raw", &path]);
    let stats = summary["pods"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["podRef"]["name"] == "uncapped"))
        .cloned()
        .unwrap_or(Value::Null);
    let volume = stats["volume"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == "scratch"))
        .cloned()
        .unwrap_or(Value::Null);
    let used = volume["usedBytes"].as_u64().unwrap_or(0);
    assert!((20 * MI..22 * MI).contains(&used), "{volume}");
    assert!(volume["inodesUsed"].as_u64() >= Some(2), "{volume}");
    assert!(volume["capacityBytes"].as_u64() > Some(used), "{volume}");
    let ephemeral = stats["ephemeral-storage"]["usedBytes"]
        .as_u64()
        .unwrap_or(0);
    assert!(ephemeral >= used, "{stats}");
    // Nothing else is evicted a round later.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let uncapped = pod(&cluster, "uncapped");
    assert_eq!(
        uncapped["status"]["phase"],
        "Running",
        "{uncapped}\n{}",
        cluster.log_tail()
    );
}
