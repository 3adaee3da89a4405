//! Image import into containerd through its native API, on containerd 1.6 and 2.x alike.
//!
//! containerd 1.6 has no Transfer service, so an import is done with the services both versions
//! share: observe what containerd has (image record, blobs, snapshots), [`plan`](plan::plan) the
//! missing steps as a pure function, then execute them under a lease: write blobs, unpack layers
//! (Prepare, Diff.Apply, Commit), create or repoint the image. An image already present yields an
//! empty plan after a handful of concurrent metadata lookups, so a node can import its shipped
//! images on every start.

pub mod archive;
mod containerd;
pub mod plan;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::future::try_join_all;

pub use archive::{ArchivedImage, BlobRef, OciArchive};
pub use containerd::ContainerdClient;
pub use plan::{Observed, Step, chain_ids};

use crate::CriError;

/// The namespace the CRI plugin serves.
pub const CRI_NAMESPACE: &str = "k8s.io";

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("reading image archive {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not an OCI image layout: {reason}")]
    NotOciLayout { path: PathBuf, reason: String },
    #[error("{path}: {member} is not a valid OCI document: {source}")]
    Document {
        path: PathBuf,
        member: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: blob {digest} is referenced but not in the archive")]
    MissingBlob { path: PathBuf, digest: String },
    #[error(
        "{path}: image {digest} has no name (no io.containerd.image.name annotation, and ref.name is only a tag with no base name given)"
    )]
    Unnamed { path: PathBuf, digest: String },
    #[error("{path}: {reason}")]
    Unsupported { path: PathBuf, reason: String },
    #[error("layer {layer} unpacked to diff ID {applied}, but the image config says {expected}")]
    DiffIdMismatch {
        layer: String,
        expected: String,
        applied: String,
    },
    #[error(transparent)]
    Runtime(#[from] CriError),
}

/// How to import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportOptions {
    /// Names images whose archive annotations carry only a tag (`base:tag`).
    pub base_name: Option<String>,
    /// The snapshotter CRI uses (containerd's `snapshotter` setting).
    pub snapshotter: String,
    /// How long an abandoned import's lease keeps its partial content alive.
    pub lease_expiry: Duration,
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self {
            base_name: None,
            snapshotter: "overlayfs".into(),
            lease_expiry: Duration::from_secs(3600),
        }
    }
}

/// What an import did for one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedImage {
    pub name: String,
    /// Manifest digest.
    pub digest: String,
    pub blobs_written: usize,
    pub layers_unpacked: usize,
    /// The name was created or repointed.
    pub name_changed: bool,
}

impl ImportedImage {
    /// Nothing had to change: the image was already complete.
    pub fn was_present(&self) -> bool {
        self.blobs_written == 0 && self.layers_unpacked == 0 && !self.name_changed
    }
}

/// Imports every image of the OCI archive at `path`.
pub async fn import_archive(
    client: &ContainerdClient,
    path: &Path,
    options: &ImportOptions,
) -> Result<Vec<ImportedImage>, ImportError> {
    let owned = path.to_owned();
    let base = options.base_name.clone();
    let (archive, images) = tokio::task::spawn_blocking(move || {
        let archive = OciArchive::open(&owned)?;
        let images = archive.images(base.as_deref())?;
        Ok::<_, ImportError>((archive, images))
    })
    .await
    .map_err(|join| ImportError::Read {
        path: path.to_owned(),
        source: std::io::Error::other(join),
    })??;

    let mut imported = Vec::with_capacity(images.len());
    for image in &images {
        imported.push(import_image(client, &archive, image, options).await?);
    }
    Ok(imported)
}

async fn import_image(
    client: &ContainerdClient,
    archive: &OciArchive,
    image: &ArchivedImage,
    options: &ImportOptions,
) -> Result<ImportedImage, ImportError> {
    let observed = observe(client, image, &options.snapshotter).await?;
    let steps = plan::plan(image, &observed, &options.snapshotter);
    let mut report = ImportedImage {
        name: image.name.clone(),
        digest: image.manifest.digest.clone(),
        blobs_written: 0,
        layers_unpacked: 0,
        name_changed: false,
    };
    if steps.is_empty() {
        return Ok(report);
    }
    tracing::info!(image = %image.name, steps = steps.len(), "importing image");
    let lease = format!("kwk-import-{}", containerd::unique_suffix());
    client.create_lease(&lease, options.lease_expiry).await?;
    let result = execute(client, archive, image, &steps, options, &lease, &mut report).await;
    // The image record now refers to everything (or we failed): the lease has done its job.
    let released = client.delete_lease(&lease).await;
    result?;
    released?;
    Ok(report)
}

/// Looks up, concurrently, everything the plan depends on.
async fn observe(
    client: &ContainerdClient,
    image: &ArchivedImage,
    snapshotter: &str,
) -> Result<Observed, CriError> {
    let mut digests: Vec<&str> = image
        .layers
        .iter()
        .map(|l| l.blob.digest.as_str())
        .collect();
    digests.push(&image.config.digest);
    digests.push(&image.manifest.digest);
    let diff_ids: Vec<String> = image.layers.iter().map(|l| l.diff_id.clone()).collect();
    let chains = chain_ids(&diff_ids);

    let target = client.image_target(&image.name);
    let blobs = try_join_all(digests.iter().map(|d| async move {
        Ok::<_, CriError>(client.content_info(d).await?.map(|_| (*d).to_owned()))
    }));
    let snapshots = try_join_all(chains.iter().map(|c| async move {
        Ok::<_, CriError>(
            client
                .snapshot_exists(snapshotter, c)
                .await?
                .then(|| c.clone()),
        )
    }));
    let (target, blobs, snapshots) = futures::try_join!(target, blobs, snapshots)?;
    Ok(Observed {
        image_target: target,
        blobs: blobs.into_iter().flatten().collect(),
        snapshots: snapshots.into_iter().flatten().collect(),
    })
}

async fn execute(
    client: &ContainerdClient,
    archive: &OciArchive,
    image: &ArchivedImage,
    steps: &[Step],
    options: &ImportOptions,
    lease: &str,
    report: &mut ImportedImage,
) -> Result<(), ImportError> {
    for step in steps {
        match step {
            Step::WriteBlob { blob, labels } => {
                let member = archive.blob(&blob.digest)?;
                client
                    .write_blob(archive.path(), member, blob, labels, lease)
                    .await?;
                report.blobs_written += 1;
            }
            Step::Unpack {
                layer,
                chain_id,
                parent,
            } => {
                let layer_ref = &image.layers[*layer];
                let applied = client
                    .unpack_layer(
                        &options.snapshotter,
                        &layer_ref.blob,
                        chain_id,
                        parent.as_deref(),
                        lease,
                    )
                    .await?;
                if applied != layer_ref.diff_id {
                    return Err(ImportError::DiffIdMismatch {
                        layer: layer_ref.blob.digest.clone(),
                        expected: layer_ref.diff_id.clone(),
                        applied,
                    });
                }
                report.layers_unpacked += 1;
            }
            Step::LabelConfig { labels } => client.label_blob(&image.config.digest, labels).await?,
            Step::CreateImage | Step::UpdateImage => {
                let labels = BTreeMap::from([(
                    plan::LABEL_CRI_MANAGED.0.to_owned(),
                    plan::LABEL_CRI_MANAGED.1.to_owned(),
                )]);
                let update = matches!(step, Step::UpdateImage);
                client
                    .put_image(&image.name, &image.manifest, &labels, update, lease)
                    .await?;
                report.name_changed = true;
            }
        }
    }
    Ok(())
}
