//! A single-node cluster from scratch, as a server is set up: `kwk init`, then kwk-node runs the
//! control plane as static pods from the control plane image it imports. Real containerd, real
//! kubectl, the real apiserver in a container.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed expectation aborts the test"
)]

use std::path::Path;
use std::time::Duration;

use kwk_tests::cluster::{ClusterBinaries, TestCluster};
use kwk_tests::privileged_tests_enabled;

const KWK_NODE: &str = env!("CARGO_BIN_EXE_kwk-node");
const KWK: &str = env!("CARGO_BIN_EXE_kwk");

async fn cluster() -> TestCluster {
    let binaries = ClusterBinaries::next_to(Path::new(KWK_NODE), Path::new(KWK)).unwrap();
    TestCluster::start(binaries).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_runs_as_static_pods_and_comes_back_when_killed() {
    if !privileged_tests_enabled() {
        return;
    }
    let mut cluster = cluster().await;
    let namespaces = cluster
        .kubectl(&["get", "namespaces", "-o", "name"])
        .unwrap();
    assert!(namespaces.contains("namespace/kube-system"), "{namespaces}");

    // kwk init a second time changes nothing.
    let pki = cluster.config_dir().join("pki");
    let before = std::fs::read(pki.join("ca.crt")).unwrap();

    // The apiserver's container dies: kwk-node restarts it and the API comes back.
    let pki = pki.display().to_string();
    let killed = cluster.kill_processes(&["apiserver", &pki]).unwrap();
    assert_eq!(killed.len(), 1, "one apiserver process: {killed:?}");
    cluster
        .wait_apiserver(Duration::from_secs(90))
        .await
        .unwrap();
    let again = cluster.kill_processes(&["apiserver", &pki]).unwrap();
    assert_eq!(again.len(), 1, "the apiserver was restarted: {again:?}");
    assert_ne!(again, killed, "a new process");
    cluster
        .wait_apiserver(Duration::from_secs(90))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(cluster.config_dir().join("pki/ca.crt")).unwrap(),
        before
    );
}
