//! Image import into a real containerd through its native API: a cold import makes CRI find
//! and run the image; importing it again writes nothing.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed expectation aborts the test"
)]

use std::time::Duration;

use kwk_cri::import::{ImportOptions, import_archive};
use kwk_image_builder::{Entry, FileSource, ImageSpec, RunConfig};
use kwk_tests::pods::{PodShape, container_config};
use kwk_tests::{TestContainerd, privileged_tests_enabled};

/// A one-layer image holding busybox and a file with `marker`, built into `dir`.
fn marker_image(
    dir: &std::path::Path,
    tag: &str,
    marker: &str,
) -> anyhow::Result<(std::path::PathBuf, kwk_image_builder::BuiltImage)> {
    let spec = ImageSpec {
        repository: "localhost/kwk/import-test".into(),
        tag: tag.into(),
        entries: vec![
            Entry::file(
                "/bin/busybox",
                FileSource::Path("/bin/busybox".into()),
                0o755,
            ),
            Entry::symlink("/bin/cat", "busybox"),
            Entry::file(
                "/marker",
                FileSource::Bytes(marker.as_bytes().to_vec()),
                0o644,
            ),
        ],
        run: RunConfig {
            cmd: vec!["/bin/cat".into(), "/marker".into()],
            ..RunConfig::default()
        },
    };
    let image = kwk_image_builder::build(&spec)?;
    let path = dir.join(format!("{tag}.tar"));
    image.write_to(&path)?;
    Ok((path, image))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_import_is_found_and_runs_and_warm_import_writes_nothing() -> anyhow::Result<()> {
    if !privileged_tests_enabled() {
        return Ok(());
    }
    let node = TestContainerd::start().await?;
    let work = node.layout().dir.join("import-test");
    let (archive, image) = marker_image(&work, "cold", "imported-cold")?;
    assert!(node.cri.image_status(&image.reference).await?.is_none());

    let cold = node.import(&archive).await?;
    assert_eq!(cold.len(), 1);
    assert_eq!(cold[0].name, image.reference);
    assert_eq!(cold[0].digest, image.digest());
    assert_eq!(
        (
            cold[0].blobs_written,
            cold[0].layers_unpacked,
            cold[0].name_changed
        ),
        (3, 1, true)
    );

    // CRI finds it, under the config digest as its ID.
    let found = node
        .cri
        .image_status(&image.reference)
        .await?
        .expect("CRI sees the import");
    assert_eq!(found.id, image.config.digest);
    assert!(
        found.repo_tags.contains(&image.reference),
        "{:?}",
        found.repo_tags
    );

    // And it runs: the unpacked layer is the container's root filesystem.
    let sandbox = node.sandbox(
        "marker",
        PodShape {
            host_network: true,
            shared_pid: false,
        },
    )?;
    let pod = node.cri.run_pod_sandbox(sandbox.clone(), "").await?;
    let container = node
        .cri
        .create_container(
            &pod,
            container_config("cat", &image.reference, &["/bin/busybox", "sleep", "60"]),
            sandbox,
        )
        .await?;
    node.cri.start_container(&container).await?;
    let out = node
        .cri
        .exec_sync(
            &container,
            vec!["/bin/cat".into(), "/marker".into()],
            Duration::from_secs(10),
        )
        .await?;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "imported-cold");

    // Warm: nothing is written; the content store's records are untouched.
    let layer_before = node
        .native
        .content_info(&image.layer.digest)
        .await?
        .expect("layer stored");
    let manifest_before = node
        .native
        .content_info(&image.manifest.digest)
        .await?
        .expect("manifest stored");
    let warm = import_archive(&node.native, &archive, &ImportOptions::default()).await?;
    assert!(warm[0].was_present(), "{warm:?}");
    let layer_after = node
        .native
        .content_info(&image.layer.digest)
        .await?
        .expect("layer stored");
    let manifest_after = node
        .native
        .content_info(&image.manifest.digest)
        .await?
        .expect("manifest stored");
    assert_eq!(layer_before.updated_at, layer_after.updated_at);
    assert_eq!(manifest_before.updated_at, manifest_after.updated_at);
    assert_eq!(manifest_before.labels, manifest_after.labels);
    // The manifest carries the GC references that keep config and layer alive.
    assert_eq!(
        manifest_after
            .labels
            .get("containerd.io/gc.ref.content.config"),
        Some(&image.config.digest)
    );
    assert_eq!(
        manifest_after
            .labels
            .get("containerd.io/gc.ref.content.l.0"),
        Some(&image.layer.digest)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_build_under_the_same_name_repoints_it() -> anyhow::Result<()> {
    if !privileged_tests_enabled() {
        return Ok(());
    }
    let node = TestContainerd::start().await?;
    let work = node.layout().dir.join("import-test");
    let (first, first_image) = marker_image(&work.join("1"), "moving", "first")?;
    let (second, second_image) = marker_image(&work.join("2"), "moving", "second")?;
    node.import(&first).await?;
    let again = node.import(&second).await?;
    assert!(again[0].name_changed);
    // Only the new layer, config and manifest are written (busybox is in the same layer here,
    // so all three differ), and the name now resolves to the second build.
    assert_eq!(again[0].blobs_written, 3);
    let found = node
        .cri
        .image_status(&second_image.reference)
        .await?
        .expect("present");
    kwk_tests::wait_for(
        Duration::from_secs(5),
        "CRI to follow the repointed name",
        || async {
            node.cri
                .image_status(&second_image.reference)
                .await
                .ok()
                .flatten()
                .is_some_and(|i| i.id == second_image.config.digest)
        },
    )
    .await?;
    assert_ne!(first_image.config.digest, second_image.config.digest);
    assert!(!found.id.is_empty());
    Ok(())
}
