//! kwk-node can die at any moment: `kill -9` at random times while 10 static pods start and run,
//! five times over, must not restart a single container. Pods are adopted by the next kwk-node
//! with the same container IDs, pod IPs and restart counts.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed expectation aborts the test"
)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use kwk_tests::node::TestNode;
use kwk_tests::{TestContainerd, privileged_tests_enabled};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_kwk-node");
const PODS: usize = 10;

fn manifest(i: usize) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: p{i}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: localhost/kwk/busybox:1
    command: ["/bin/sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
"#
    )
}

/// A pseudo-random delay below `max_ms` (no RNG dependency: clock nanoseconds).
fn random_delay(max_ms: u64) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    Duration::from_millis(nanos.wrapping_mul(2_654_435_761) % max_ms)
}

/// (container ID, restart count, pod IP) of every pod, when all run.
fn running(node: &TestNode) -> Option<BTreeMap<String, (String, i64, String)>> {
    let pods = node.pods().ok()?;
    let mut out = BTreeMap::new();
    for pod in &pods {
        let status: &Value = &pod["status"]["containerStatuses"][0];
        if pod["status"]["phase"] != "Running" || status["ready"] != true {
            return None;
        }
        out.insert(
            pod["metadata"]["name"].as_str()?.to_string(),
            (
                status["containerID"].as_str()?.to_string(),
                status["restartCount"].as_i64()?,
                pod["status"]["podIP"].as_str()?.to_string(),
            ),
        );
    }
    (out.len() == PODS).then_some(out)
}

async fn wait_all_running(
    node: &TestNode,
) -> anyhow::Result<BTreeMap<String, (String, i64, String)>> {
    for _ in 0..300 {
        if let Some(state) = running(node) {
            return Ok(state);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!(
        "not all pods running: {:?}\n{}",
        node.pods(),
        node.log_tail()
    )
}

/// A containerd and a kwk-node whose manifest directory has just received the 10 pods.
async fn node_with_pods() -> anyhow::Result<Option<(TestContainerd, TestNode)>> {
    if !privileged_tests_enabled() {
        return Ok(None);
    }
    let containerd = TestContainerd::start().await?;
    let node = TestNode::start(&containerd, Path::new(BIN)).await?;
    for i in 0..PODS {
        node.write_manifest(&format!("p{i}.yaml"), &manifest(i))?;
    }
    Ok(Some((containerd, node)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_restarts_no_container() -> anyhow::Result<()> {
    let Some((containerd, mut node)) = node_with_pods().await? else {
        return Ok(());
    };
    // Round 1: kill while the pods are being created.
    tokio::time::sleep(random_delay(400)).await;
    node.kill9()?;
    node.restart().await?;
    let first = wait_all_running(&node).await?;

    // Rounds 2-5: kill at random moments, including right after a start (adoption running).
    for round in 2..=5 {
        tokio::time::sleep(random_delay(if round % 2 == 0 { 100 } else { 1500 })).await;
        node.restart().await?;
    }
    let last = wait_all_running(&node).await?;
    assert_eq!(first, last, "containers were restarted or replaced");
    assert!(
        last.values().all(|(_, restarts, _)| *restarts == 0),
        "{last:?}"
    );

    // And the runtime holds exactly one container per pod: nothing was created twice.
    let containers = containerd.cri.list_containers(None).await?;
    assert_eq!(containers.len(), PODS, "{containers:?}");
    let sandboxes = containerd.cri.list_pod_sandbox(None).await?;
    let ready = sandboxes
        .iter()
        .filter(|s| s.state == kwk_cri::api::PodSandboxState::SandboxReady as i32)
        .count();
    assert_eq!(ready, PODS);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_kwk_node_and_leaves_pods_running() -> anyhow::Result<()> {
    let Some((containerd, mut node)) = node_with_pods().await? else {
        return Ok(());
    };
    let before = wait_all_running(&node).await?;
    assert!(
        node.terminate()?,
        "kwk-node did not exit cleanly on SIGTERM"
    );
    let running_containers = containerd
        .cri
        .list_containers(None)
        .await?
        .into_iter()
        .filter(|c| c.state == kwk_cri::api::ContainerState::ContainerRunning as i32)
        .count();
    assert_eq!(running_containers, PODS, "SIGTERM touched the pods");
    node.restart().await?;
    assert_eq!(wait_all_running(&node).await?, before);
    Ok(())
}
