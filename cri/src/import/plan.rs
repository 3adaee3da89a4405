//! The import plan: a pure function from (image in the archive, what containerd already has)
//! to the steps that make containerd hold the image, unpacked, under its name.

use std::collections::{BTreeMap, HashSet};

use sha2::{Digest as _, Sha256};

use super::archive::{ArchivedImage, BlobRef};

/// containerd's GC follows these labels from a manifest to its config and layers, and from a
/// config to its unpacked snapshot, so nothing is collected once the import lease ends.
pub const LABEL_GC_REF_CONFIG: &str = "containerd.io/gc.ref.content.config";
pub const LABEL_GC_REF_LAYER_PREFIX: &str = "containerd.io/gc.ref.content.l.";
pub const LABEL_GC_REF_SNAPSHOT_PREFIX: &str = "containerd.io/gc.ref.snapshot.";
/// Marks images the CRI plugin should treat as its own.
pub const LABEL_CRI_MANAGED: (&str, &str) = ("io.cri-containerd.image", "managed");

/// What containerd has of the image now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// The digest the image name points at, if the name exists.
    pub image_target: Option<String>,
    /// Blobs present in the content store.
    pub blobs: HashSet<String>,
    /// Committed snapshots (by chain ID) in the snapshotter.
    pub snapshots: HashSet<String>,
}

/// One step of an import, executed in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Stream a blob from the archive into the content store, with GC labels.
    WriteBlob {
        blob: BlobRef,
        labels: BTreeMap<String, String>,
    },
    /// Apply layer `layer` on top of `parent` and commit it as snapshot `chain_id`.
    Unpack {
        layer: usize,
        chain_id: String,
        parent: Option<String>,
    },
    /// The config blob already existed: point its snapshot GC label at the top snapshot.
    LabelConfig { labels: BTreeMap<String, String> },
    /// Create the image record (the name is new).
    CreateImage,
    /// Repoint an existing name at this manifest.
    UpdateImage,
}

/// Chain IDs of a layer stack: the first is its diff ID, each next is
/// `sha256(parent_chain_id + " " + diff_id)` (the OCI image spec's definition).
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut chain: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match chain.last() {
            None => diff_id.clone(),
            Some(parent) => {
                let hash = Sha256::digest(format!("{parent} {diff_id}").as_bytes());
                format!("sha256:{}", hex::encode(hash))
            }
        };
        chain.push(next);
    }
    chain
}

/// The steps that bring containerd from `observed` to holding `image` unpacked in
/// `snapshotter`. Empty when the image is already complete: that is the warm path.
pub fn plan(image: &ArchivedImage, observed: &Observed, snapshotter: &str) -> Vec<Step> {
    let diff_ids: Vec<String> = image.layers.iter().map(|l| l.diff_id.clone()).collect();
    let chains = chain_ids(&diff_ids);
    let config_labels: BTreeMap<String, String> = chains
        .last()
        .map(|top| {
            (
                format!("{LABEL_GC_REF_SNAPSHOT_PREFIX}{snapshotter}"),
                top.clone(),
            )
        })
        .into_iter()
        .collect();
    let mut manifest_labels =
        BTreeMap::from([(LABEL_GC_REF_CONFIG.to_owned(), image.config.digest.clone())]);
    for (i, layer) in image.layers.iter().enumerate() {
        manifest_labels.insert(
            format!("{LABEL_GC_REF_LAYER_PREFIX}{i}"),
            layer.blob.digest.clone(),
        );
    }

    let mut steps = Vec::new();
    let missing = |blob: &BlobRef| !observed.blobs.contains(&blob.digest);
    for layer in image.layers.iter().filter(|l| missing(&l.blob)) {
        steps.push(Step::WriteBlob {
            blob: layer.blob.clone(),
            labels: BTreeMap::new(),
        });
    }
    let config_missing = missing(&image.config);
    if config_missing {
        steps.push(Step::WriteBlob {
            blob: image.config.clone(),
            labels: config_labels.clone(),
        });
    }
    if missing(&image.manifest) {
        steps.push(Step::WriteBlob {
            blob: image.manifest.clone(),
            labels: manifest_labels,
        });
    }

    let mut unpacked_any = false;
    for (layer, chain_id) in chains.iter().enumerate() {
        if observed.snapshots.contains(chain_id) {
            continue;
        }
        unpacked_any = true;
        let parent = layer.checked_sub(1).map(|p| chains[p].clone());
        steps.push(Step::Unpack {
            layer,
            chain_id: chain_id.clone(),
            parent,
        });
    }
    if unpacked_any && !config_missing {
        steps.push(Step::LabelConfig {
            labels: config_labels,
        });
    }

    match observed.image_target.as_deref() {
        None => steps.push(Step::CreateImage),
        Some(target) if target != image.manifest.digest => steps.push(Step::UpdateImage),
        Some(_) => {}
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::archive::LayerRef;

    fn blob(kind: &str, n: u8) -> BlobRef {
        BlobRef {
            media_type: kind.into(),
            digest: format!("sha256:{kind}{n}"),
            size: 10,
        }
    }

    fn image(layers: u8) -> ArchivedImage {
        ArchivedImage {
            name: "localhost/kwk/test:1".into(),
            manifest: blob("manifest", 0),
            config: blob("config", 0),
            layers: (0..layers)
                .map(|n| LayerRef {
                    blob: blob("layer", n),
                    diff_id: format!("sha256:diff{n}"),
                })
                .collect(),
        }
    }

    fn complete(image: &ArchivedImage) -> Observed {
        let diff_ids: Vec<String> = image.layers.iter().map(|l| l.diff_id.clone()).collect();
        let mut blobs: HashSet<String> =
            image.layers.iter().map(|l| l.blob.digest.clone()).collect();
        blobs.insert(image.config.digest.clone());
        blobs.insert(image.manifest.digest.clone());
        Observed {
            image_target: Some(image.manifest.digest.clone()),
            blobs,
            snapshots: chain_ids(&diff_ids).into_iter().collect(),
        }
    }

    #[test]
    fn chain_id_of_one_layer_is_its_diff_id_and_then_hashes() {
        let ids = chain_ids(&["sha256:a".into(), "sha256:b".into()]);
        assert_eq!(ids[0], "sha256:a");
        let expected = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(b"sha256:a sha256:b"))
        );
        assert_eq!(ids[1], expected);
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn complete_image_needs_nothing() {
        let img = image(2);
        assert_eq!(plan(&img, &complete(&img), "overlayfs"), vec![]);
    }

    #[test]
    fn cold_import_writes_unpacks_and_names() {
        let img = image(2);
        let steps = plan(&img, &Observed::default(), "overlayfs");
        let chains = chain_ids(&["sha256:diff0".into(), "sha256:diff1".into()]);
        assert_eq!(steps.len(), 7, "{steps:#?}");
        assert!(
            matches!(&steps[0], Step::WriteBlob { blob, labels } if blob.digest == "sha256:layer0" && labels.is_empty())
        );
        assert!(
            matches!(&steps[1], Step::WriteBlob { blob, .. } if blob.digest == "sha256:layer1")
        );
        match &steps[2] {
            Step::WriteBlob { blob, labels } => {
                assert_eq!(blob.digest, "sha256:config0");
                assert_eq!(labels["containerd.io/gc.ref.snapshot.overlayfs"], chains[1]);
            }
            other => panic!("{other:?}"),
        }
        match &steps[3] {
            Step::WriteBlob { blob, labels } => {
                assert_eq!(blob.digest, "sha256:manifest0");
                assert_eq!(
                    labels["containerd.io/gc.ref.content.config"],
                    "sha256:config0"
                );
                assert_eq!(labels["containerd.io/gc.ref.content.l.1"], "sha256:layer1");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            steps[4],
            Step::Unpack {
                layer: 0,
                chain_id: chains[0].clone(),
                parent: None
            }
        );
        assert_eq!(
            steps[5],
            Step::Unpack {
                layer: 1,
                chain_id: chains[1].clone(),
                parent: Some(chains[0].clone())
            }
        );
        assert_eq!(steps[6], Step::CreateImage);
    }

    #[test]
    fn removed_snapshots_are_unpacked_again_and_the_config_relabelled() {
        let img = image(2);
        let mut observed = complete(&img);
        let top = chain_ids(&["sha256:diff0".into(), "sha256:diff1".into()])[1].clone();
        observed.snapshots.remove(&top);
        let steps = plan(&img, &observed, "overlayfs");
        assert!(
            matches!(&steps[0], Step::Unpack { layer: 1, .. }),
            "{steps:?}"
        );
        assert!(
            matches!(&steps[1], Step::LabelConfig { labels } if labels.values().any(|v| *v == top))
        );
        assert_eq!(steps.len(), 2);
    }

    #[test]
    fn a_name_pointing_elsewhere_is_updated() {
        let img = image(1);
        let mut observed = complete(&img);
        observed.image_target = Some("sha256:older".into());
        assert_eq!(plan(&img, &observed, "overlayfs"), vec![Step::UpdateImage]);
    }

    #[test]
    fn shared_blobs_are_not_written_twice() {
        let img = image(1);
        let mut observed = Observed::default();
        observed.blobs.insert("sha256:layer0".into());
        let steps = plan(&img, &observed, "overlayfs");
        assert!(
            !steps.iter().any(
                |s| matches!(s, Step::WriteBlob { blob, .. } if blob.digest == "sha256:layer0")
            )
        );
    }
}
