//! Image garbage collection against a real containerd: with thresholds that force collection,
//! the image no container uses is removed, while the image of a (running) container and the
//! sandbox (pause) image, found through CRI `Status`, stay.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed expectation aborts the test"
)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use kwk_agent::config::ImageGcPolicy;
use kwk_agent::image_gc::executor::{ImageGc, sandbox_image};
use kwk_image_builder::{Entry, FileSource, ImageSpec, RunConfig};
use kwk_tests::pods::{PodShape, container_config};
use kwk_tests::{TestContainerd, privileged_tests_enabled};

/// Whether CRI lists an image named `reference` (tag or ID).
async fn listed(containerd: &TestContainerd, reference: &str) -> anyhow::Result<bool> {
    let images = containerd.cri.list_images(None).await?;
    Ok(images
        .iter()
        .any(|i| i.id == reference || i.repo_tags.iter().any(|t| t == reference)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_gc_frees_unused_images_only() -> anyhow::Result<()> {
    if !privileged_tests_enabled() {
        return Ok(());
    }
    let containerd = TestContainerd::start().await?;
    let images = containerd.images;

    // A third image no container will use.
    let victim = kwk_image_builder::build(&ImageSpec {
        repository: "localhost/gc-victim".into(),
        tag: "1".into(),
        entries: vec![Entry::file(
            "/data",
            FileSource::Bytes(b"nobody uses me".to_vec()),
            0o644,
        )],
        run: RunConfig::default(),
    })?;
    let dir = tempfile::tempdir()?;
    let archive = dir.path().join("victim.tar");
    victim.write_to(&archive)?;
    containerd.import(&archive).await?;
    assert!(listed(&containerd, &victim.reference).await?);

    // A running busybox container.
    let sandbox_config = containerd.sandbox("gc", PodShape::default())?;
    let cri = &containerd.cri;
    let sandbox_id = cri.run_pod_sandbox(sandbox_config.clone(), "").await?;
    let container = container_config("main", &images.busybox_reference, &["sleep", "3600"]);
    let container_id = cri
        .create_container(&sandbox_id, container, sandbox_config)
        .await?;
    cri.start_container(&container_id).await?;

    let pause = sandbox_image(cri).await;
    assert_eq!(pause.as_deref(), Some(images.pause_reference.as_str()));
    // Thresholds of 0 and no minimum age: everything collectable is collected.
    let policy = ImageGcPolicy {
        high_threshold_percent: 0,
        low_threshold_percent: 0,
        minimum_age: Duration::ZERO,
        maximum_age: None,
    };
    let mut gc = ImageGc::new(cri.clone(), policy, pause.into_iter().collect());
    let report = gc.collect(Instant::now()).await?;
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(report.removed.len(), 1, "{report:?}");

    assert!(
        !listed(&containerd, &victim.reference).await?,
        "the unused image is removed"
    );
    assert!(
        listed(&containerd, &images.busybox_reference).await?,
        "the running container's image stays"
    );
    assert!(
        listed(&containerd, &images.pause_reference).await?,
        "the sandbox image stays"
    );

    // Once the container is gone, its image goes too; pause still stays.
    cri.stop_container(&container_id, Duration::ZERO).await?;
    cri.remove_container(&container_id).await?;
    let report = gc.collect(Instant::now()).await?;
    assert!(report.failed.is_empty(), "{report:?}");
    let left: BTreeSet<String> = cri
        .list_images(None)
        .await?
        .into_iter()
        .flat_map(|i| i.repo_tags)
        .collect();
    assert_eq!(left, BTreeSet::from([images.pause_reference.clone()]));

    cri.stop_pod_sandbox(&sandbox_id).await?;
    cri.remove_pod_sandbox(&sandbox_id).await?;
    Ok(())
}
