//! Dead containers through a whole single-node cluster (real containerd): a crash-looping
//! pod never holds more than its newest instance and the one before it; one container GC
//! collection (`kwk_agent::container_gc::executor::collect`, upstream's default limits)
//! against the real runtime leaves it one dead instance without touching its restart count;
//! deleting the pod leaves none of its containers or sandboxes in containerd.
//!
//! Needs `kwk-control-plane` and `kwk-cni` built next to kwk-node: `cargo build -p
//! kwk-control-plane -p kwk-cni` first.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed expectation aborts the test"
)]

use std::path::Path;
use std::time::Duration;

use kwk_agent::container_gc::{ContainerGcPolicy, executor};
use kwk_cri::api;
use kwk_tests::cluster::{ClusterBinaries, TestCluster};
use kwk_tests::privileged_tests_enabled;

const KWK_NODE: &str = env!("CARGO_BIN_EXE_kwk-node");
const KWK: &str = env!("CARGO_BIN_EXE_kwk");

const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: crasher}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: localhost/busybox:latest
    command: ["/bin/sh", "-c", "exit 1"]
"#;

/// The pod's containers in containerd (by the pod UID label), its sandboxes, and how many of
/// those are ready.
async fn on_runtime(cluster: &TestCluster, uid: &str) -> (Vec<api::Container>, usize, usize) {
    let cri = &cluster.containerd().cri;
    let selector: std::collections::HashMap<String, String> =
        [("io.kubernetes.pod.uid".to_string(), uid.to_string())].into();
    let containers = cri
        .list_containers(Some(api::ContainerFilter {
            label_selector: selector.clone(),
            ..Default::default()
        }))
        .await
        .unwrap();
    let sandboxes = cri
        .list_pod_sandbox(Some(api::PodSandboxFilter {
            label_selector: selector,
            ..Default::default()
        }))
        .await
        .unwrap();
    let ready = sandboxes
        .iter()
        .filter(|s| s.state == api::PodSandboxState::SandboxReady as i32)
        .count();
    (containers, sandboxes.len(), ready)
}

fn exited(containers: &[api::Container]) -> usize {
    containers
        .iter()
        .filter(|c| c.state == api::ContainerState::ContainerExited as i32)
        .count()
}

fn restart_count(cluster: &TestCluster) -> i64 {
    cluster.pod_json("crasher")["status"]["containerStatuses"][0]["restartCount"]
        .as_i64()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_containers_are_bounded_and_removed_with_their_pod() {
    if !privileged_tests_enabled() {
        return;
    }
    let binaries = ClusterBinaries::next_to(Path::new(KWK_NODE), Path::new(KWK)).unwrap();
    let cluster = TestCluster::start(binaries).await.unwrap();
    cluster.apply(POD);
    cluster
        .wait_until(Duration::from_secs(60), "crasher scheduled", || {
            cluster.pod_json("crasher")["metadata"]["uid"].is_string()
        })
        .await;
    let uid = cluster.pod_json("crasher")["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();

    // Three instances have run (restartCount 2, back-off 10 s then 20 s); never more than two
    // on the runtime, in one sandbox.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(80);
    let mut most = 0;
    while restart_count(&cluster) < 2 {
        let (containers, _, ready) = on_runtime(&cluster, &uid).await;
        most = most.max(containers.len());
        // (A sandbox that failed to come up — the pod may be bound before the node's pod
        // network is configured — stays until the worker removes it; only one is ever ready.)
        assert!(ready <= 1, "{ready} ready sandboxes");
        assert!(
            tokio::time::Instant::now() < deadline,
            "crasher did not restart twice: {}\n{}",
            cluster.pod_json("crasher"),
            cluster.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The worker removes the oldest instance in its next sync round after the third exits.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while on_runtime(&cluster, &uid).await.0.len() > 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "more than two instances stay"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // (A third may exist for a moment: the new instance is created in the round that removes
    // the oldest.)
    assert!(most <= 3, "up to {most} instances of one container at once");
    // Sandboxes that never came up are gone by now: one sandbox, the pod's.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while on_runtime(&cluster, &uid).await.1 > 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "dead sandboxes stay: {}",
            cluster.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // One node-wide collection with upstream's defaults: one dead instance per container.
    let (before, ..) = on_runtime(&cluster, &uid).await;
    let report = executor::collect(
        &cluster.containerd().cri,
        &ContainerGcPolicy::default(),
        kwk_agent::clock::unix_nanos_now(),
    )
    .await
    .unwrap();
    assert!(report.failed.is_empty(), "{report:?}");
    let (after, ..) = on_runtime(&cluster, &uid).await;
    assert!(exited(&after) <= 1, "{} exited remain", exited(&after));
    if exited(&before) == 2 {
        assert_eq!(report.removed.len(), 1, "{report:?}");
        // The oldest went; the newest dead instance stays for the status.
        let oldest = before
            .iter()
            .min_by_key(|c| c.created_at)
            .map(|c| c.id.clone());
        assert_eq!(report.removed.first(), oldest.as_ref());
    }
    assert!(restart_count(&cluster) >= 2);

    // Deleted: nothing of the pod stays on the runtime.
    cluster
        .kubectl(&["delete", "pod", "crasher", "--wait=true", "--timeout=60s"])
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (containers, sandboxes, _) = on_runtime(&cluster, &uid).await;
        if containers.is_empty() && sandboxes == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} containers and {sandboxes} sandboxes of the deleted pod remain",
            containers.len()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
