//! Error paths of `kwk-cri` against a real containerd: the gRPC code survives, failures are
//! clear, and a failed create leaves nothing behind.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed expectation aborts the test"
)]

use std::time::{Duration, Instant};

use kwk_cri::{ConnectOptions, CriClient, CriError, Timeouts};
use kwk_tests::pods::{PodShape, container_config};
use kwk_tests::{TestContainerd, privileged_tests_enabled};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_are_not_found() -> anyhow::Result<()> {
    if !privileged_tests_enabled() {
        return Ok(());
    }
    let node = TestContainerd::start().await?;
    let unknown = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let err = node.cri.container_status(unknown, false).await.unwrap_err();
    assert!(
        matches!(
            err,
            CriError::NotFound {
                call: "ContainerStatus",
                ..
            }
        ),
        "{err:?}"
    );
    let err = node
        .cri
        .pod_sandbox_status(unknown, false)
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    let err = node.cri.start_container(unknown).await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    // Removing what does not exist succeeds, as CRI requires (idempotent removal).
    node.cri.remove_container(unknown).await?;
    node.cri.remove_pod_sandbox(unknown).await?;
    // An absent image is "none", not an error.
    assert!(
        node.cri
            .image_status("localhost/kwk/absent:1")
            .await?
            .is_none()
    );
    Ok(())
}

#[tokio::test]
async fn missing_socket_fails_clearly_after_bounded_retries() {
    let dir = std::env::temp_dir().join(format!("kwk-nosock-{}", std::process::id()));
    let socket = dir.join("containerd.sock");
    let options = ConnectOptions {
        attempts: 5,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
    };
    let started = Instant::now();
    let err = CriClient::connect(&socket, &options, Timeouts::default())
        .await
        .unwrap_err();
    let waited = started.elapsed();
    let CriError::Unreachable {
        attempts, ref path, ..
    } = err
    else {
        panic!("{err:?}")
    };
    assert_eq!(attempts, 5);
    assert_eq!(path, &socket);
    let message = err.to_string();
    assert!(
        message.contains("containerd.sock") && message.contains("5 attempt"),
        "{message}"
    );
    // 10 + 20 + 40 + 40 ms of backoff: bounded, not instant.
    assert!(
        waited >= Duration::from_millis(110),
        "gave up after {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_with_missing_image_fails_and_leaves_nothing() -> anyhow::Result<()> {
    if !privileged_tests_enabled() {
        return Ok(());
    }
    let node = TestContainerd::start().await?;
    let sandbox = node.sandbox(
        "noimage",
        PodShape {
            host_network: true,
            shared_pid: false,
        },
    )?;
    let pod_id = node.cri.run_pod_sandbox(sandbox.clone(), "").await?;
    let config = container_config("app", "localhost/kwk/absent:1", &["/bin/true"]);
    let err = node
        .cri
        .create_container(&pod_id, config, sandbox)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("localhost/kwk/absent:1"),
        "error names the image: {err}"
    );
    assert!(err.code().is_some(), "the runtime's code is kept: {err:?}");
    assert!(
        node.cri.list_containers(None).await?.is_empty(),
        "no container half-created"
    );
    node.cri.stop_pod_sandbox(&pod_id).await?;
    node.cri.remove_pod_sandbox(&pod_id).await?;
    assert!(node.cri.list_pod_sandbox(None).await?.is_empty());
    Ok(())
}
