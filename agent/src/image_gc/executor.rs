//! The effect side of image GC: list images and containers through CRI, measure the image file
//! system (CRI `ImageFsInfo` for its mountpoint, then `statvfs`), run [`super::plan`], remove
//! what it says with CRI `RemoveImage`, and log. [`run`] does that periodically in kwk-node.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use kwk_cri::{CriClient, CriError, api};
use tokio_util::sync::CancellationToken;

use super::{FsUsage, GcInput, GcPlan, ImageInfo, ImageRecords, RemovalReason, plan};
use crate::config::ImageGcPolicy;

/// How often upstream's kubelet collects images.
pub const GC_PERIOD: Duration = Duration::from_secs(300);
/// How often image use is recorded between collections (upstream relists every 30s too).
pub const DETECT_PERIOD: Duration = Duration::from_secs(30);

/// A listing or measurement the collection needs failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageGcError {
    #[error("listing images")]
    ListImages(#[source] CriError),
    #[error("listing containers")]
    ListContainers(#[source] CriError),
}

/// What one collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub plan: GcPlan,
    /// IDs removed.
    pub removed: Vec<String>,
    /// IDs whose removal failed, with the error text (already logged).
    pub failed: Vec<(String, String)>,
}

/// The image garbage collector of one node: the CRI client, the policy and its records.
#[derive(Debug)]
pub struct ImageGc {
    cri: CriClient,
    policy: ImageGcPolicy,
    protected: BTreeSet<String>,
    records: ImageRecords,
}

impl ImageGc {
    /// `protected`: references never removed, at least the sandbox image (see
    /// [`sandbox_image`]).
    pub fn new(cri: CriClient, policy: ImageGcPolicy, protected: BTreeSet<String>) -> Self {
        Self {
            cri,
            policy,
            protected,
            records: ImageRecords::default(),
        }
    }

    /// Lists images and containers and records use at `now`; returns the listing.
    pub async fn detect(
        &mut self,
        now: Instant,
    ) -> Result<(Vec<ImageInfo>, BTreeSet<String>), ImageGcError> {
        let images: Vec<ImageInfo> = self
            .cri
            .list_images(None)
            .await
            .map_err(ImageGcError::ListImages)?
            .into_iter()
            .map(image_info)
            .collect();
        let containers = self
            .cri
            .list_containers(None)
            .await
            .map_err(ImageGcError::ListContainers)?;
        let in_use = images_in_use(&containers);
        self.records.observe(&images, &in_use, now);
        Ok((images, in_use))
    }

    /// One collection at `now`: detect, measure, plan, remove. A failed removal is logged and
    /// the rest go on.
    pub async fn collect(&mut self, now: Instant) -> Result<GcReport, ImageGcError> {
        let (images, in_use) = self.detect(now).await?;
        let fs = self.image_fs().await;
        let plan = plan(&GcInput {
            policy: &self.policy,
            images: &images,
            in_use: &in_use,
            protected: &self.protected,
            records: &self.records,
            fs,
            now,
        });
        let mut report = GcReport::default();
        for removal in &plan.removals {
            match self.cri.remove_image(&removal.id).await {
                Ok(()) => {
                    let tags = images
                        .iter()
                        .find(|i| i.id == removal.id)
                        .map(|i| i.repo_tags.join(","))
                        .unwrap_or_default();
                    tracing::info!(
                        image = %removal.id,
                        tags = %tags,
                        bytes = removal.size_bytes,
                        reason = match removal.reason {
                            RemovalReason::MaxAge => "unused longer than imageMaximumGCAge",
                            RemovalReason::Space => "image file system above imageGCHighThresholdPercent",
                        },
                        "image garbage collected"
                    );
                    report.removed.push(removal.id.clone());
                }
                Err(err) => {
                    tracing::warn!(image = %removal.id, %err, "image garbage collection: removal failed");
                    report.failed.push((removal.id.clone(), err.to_string()));
                }
            }
        }
        if !plan.removals.is_empty() {
            tracing::info!(
                wanted = plan.bytes_to_free,
                freed = plan.bytes_freed,
                "image garbage collection done"
            );
        }
        report.plan = plan;
        Ok(report)
    }

    /// The image file system's size and free space: the mountpoint CRI reports, measured
    /// with `statvfs`. `None` (logged) when either is unavailable.
    async fn image_fs(&self) -> Option<FsUsage> {
        let info = match self.cri.image_fs_info().await {
            Ok(info) => info,
            Err(err) => {
                tracing::warn!(%err, "image garbage collection: ImageFsInfo failed");
                return None;
            }
        };
        let mountpoint = info
            .image_filesystems
            .first()
            .and_then(|fs| fs.fs_id.as_ref())
            .map(|id| id.mountpoint.clone())?;
        let usage = fs_usage(Path::new(&mountpoint));
        if usage.is_none() {
            tracing::warn!(%mountpoint, "image garbage collection: cannot statvfs the image file system");
        }
        usage
    }
}

/// Records image use every [`DETECT_PERIOD`] and collects every [`GC_PERIOD`] until `cancel`.
/// Failures are warnings; the next period tries again.
pub async fn run(mut gc: ImageGc, cancel: CancellationToken) {
    let mut detect = tokio::time::interval(DETECT_PERIOD);
    let mut collect = tokio::time::interval_at(tokio::time::Instant::now() + GC_PERIOD, GC_PERIOD);
    detect.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    collect.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let result = tokio::select! {
            () = cancel.cancelled() => return,
            _ = detect.tick() => gc.detect(Instant::now()).await.map(drop),
            _ = collect.tick() => gc.collect(Instant::now()).await.map(drop),
        };
        if let Err(err) = result {
            let source = std::error::Error::source(&err).map(ToString::to_string);
            tracing::warn!(%err, source = ?source, "image garbage collection");
        }
    }
}

/// The sandbox (pause) image the runtime uses, from CRI `Status` verbose info (containerd puts
/// its CRI config, with `sandboxImage`, under `config`).
pub async fn sandbox_image(cri: &CriClient) -> Option<String> {
    match cri.status(true).await {
        Ok(status) => sandbox_image_from_info(&status.info),
        Err(err) => {
            tracing::warn!(%err, "cannot read the runtime's sandbox image");
            None
        }
    }
}

fn sandbox_image_from_info(info: &HashMap<String, String>) -> Option<String> {
    let config: serde_json::Value = serde_json::from_str(info.get("config")?).ok()?;
    config
        .get("sandboxImage")
        .and_then(serde_json::Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn image_info(image: api::Image) -> ImageInfo {
    ImageInfo {
        id: image.id,
        size_bytes: image.size,
        repo_tags: image.repo_tags,
        repo_digests: image.repo_digests,
        pinned: image.pinned,
    }
}

/// The references (image ID and the reference asked for) of every container's image.
fn images_in_use(containers: &[api::Container]) -> BTreeSet<String> {
    containers
        .iter()
        .flat_map(|c| {
            [
                Some(c.image_ref.clone()),
                c.image.as_ref().map(|i| i.image.clone()),
            ]
        })
        .flatten()
        .filter(|r| !r.is_empty())
        .collect()
}

fn fs_usage(path: &Path) -> Option<FsUsage> {
    let vfs = nix::sys::statvfs::statvfs(path).ok()?;
    let block = vfs.fragment_size();
    Some(FsUsage {
        capacity_bytes: vfs.blocks().saturating_mul(block),
        available_bytes: vfs.blocks_available().saturating_mul(block),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_gc_reads_containerd_sandbox_image() {
        let info = |config: &str| HashMap::from([("config".to_owned(), config.to_owned())]);
        assert_eq!(
            sandbox_image_from_info(&info(
                r#"{"containerd":{},"sandboxImage":"localhost/pause:3.9"}"#
            )),
            Some("localhost/pause:3.9".to_owned())
        );
        assert_eq!(
            sandbox_image_from_info(&info(r#"{"sandboxImage":""}"#)),
            None
        );
        assert_eq!(sandbox_image_from_info(&info("not json")), None);
        assert_eq!(sandbox_image_from_info(&HashMap::new()), None);
    }

    #[test]
    fn image_gc_in_use_names_id_and_reference() {
        let container = |image_ref: &str, image: &str| api::Container {
            image_ref: image_ref.to_owned(),
            image: Some(api::ImageSpec {
                image: image.to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let in_use = images_in_use(&[
            container("sha256:a", "localhost/a:1"),
            container("sha256:b", ""),
        ]);
        assert_eq!(
            in_use,
            BTreeSet::from([
                "localhost/a:1".to_owned(),
                "sha256:a".to_owned(),
                "sha256:b".to_owned()
            ])
        );
    }
}
