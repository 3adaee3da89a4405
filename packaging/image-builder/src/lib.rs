//! `kwk-image-builder`: deterministic OCI image archives from files on disk, with no registry
//! and no container engine.
//!
//! [`build`] turns an [`ImageSpec`] into blobs (one uncompressed layer, the config, the
//! manifest) and an OCI image-layout tar; the same spec over the same files always produces the
//! same bytes and so the same manifest digest. [`images`] holds the specs kwk ships.

pub mod images;
mod layer;
pub mod oci;
pub mod spec;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub use oci::{Blob, sha256_digest};
pub use spec::{Entry, EntryKind, FileSource, ImageSpec, RunConfig};

/// Why an image could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("image path {path:?} must be absolute and free of `.`/`..` components")]
    InvalidPath { path: String },
    #[error("image path {path:?} appears twice")]
    DuplicatePath { path: String },
    #[error("a parent of image path {path:?} is not a directory")]
    ParentNotDir { path: String },
    #[error("reading {path}: {source}")]
    ReadSource {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing tar entry {path:?}: {source}")]
    Tar {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("encoding JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("writing archive {path}: {source}")]
    WriteArchive {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("listing the shared libraries of {path}: {reason}")]
    SharedLibraries { path: PathBuf, reason: String },
    #[error("listing busybox applets with {path}: {reason}")]
    BusyboxApplets { path: PathBuf, reason: String },
}

/// A built image: its blobs and the OCI layout archive holding them.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// `repository:tag`.
    pub reference: String,
    pub layer: Blob,
    pub config: Blob,
    pub manifest: Blob,
    /// The image-layout tar (`oci-layout`, `index.json`, `blobs/sha256/…`).
    pub archive: Vec<u8>,
}

impl BuiltImage {
    /// The image's identity: the digest of its manifest.
    pub fn digest(&self) -> &str {
        &self.manifest.digest
    }

    /// Writes the archive to `path` atomically (temporary file, then rename), so a reader never
    /// sees a half-written archive.
    pub fn write_to(&self, path: &Path) -> Result<(), BuildError> {
        let err = |source| BuildError::WriteArchive {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let unique = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = path.with_extension(format!("tmp.{}.{unique}", std::process::id()));
        std::fs::write(&tmp, &self.archive).map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    }
}

/// Builds `spec` for the host's architecture.
pub fn build(spec: &ImageSpec) -> Result<BuiltImage, BuildError> {
    let arch = oci::host_architecture();
    let tree = layer::tree(&spec.entries)?;
    let layer = Blob::new(oci::MEDIA_TYPE_LAYER_TAR, layer::tar(&tree)?);
    // The layer is uncompressed, so its diff ID is its digest.
    let config = oci::config(&spec.run, &layer.digest, arch)?;
    let manifest = oci::manifest(&config, &layer)?;
    let index = oci::index(spec, &manifest, arch)?;
    let archive = oci::layout_archive(&index, &[layer.clone(), config.clone(), manifest.clone()])?;
    Ok(BuiltImage {
        reference: spec.reference(),
        layer,
        config,
        manifest,
        archive,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(contents: &[u8]) -> ImageSpec {
        ImageSpec {
            repository: "localhost/kwk/test".into(),
            tag: "1".into(),
            entries: vec![Entry::file(
                "/bin/app",
                FileSource::Bytes(contents.to_vec()),
                0o755,
            )],
            run: RunConfig {
                entrypoint: vec!["/bin/app".into()],
                ..RunConfig::default()
            },
        }
    }

    #[test]
    fn same_input_same_digest_and_bytes() {
        let a = build(&spec(b"hello")).unwrap();
        let b = build(&spec(b"hello")).unwrap();
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.archive, b.archive);
        let c = build(&spec(b"hello!")).unwrap();
        assert_ne!(a.digest(), c.digest());
    }

    #[test]
    fn archive_is_a_valid_oci_layout() {
        let image = build(&spec(b"hello")).unwrap();
        let mut archive = tar::Archive::new(image.archive.as_slice());
        let mut files = std::collections::BTreeMap::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
            files.insert(path, bytes);
        }
        let index: oci_spec::image::ImageIndex =
            serde_json::from_slice(&files["index.json"]).unwrap();
        let described = &index.manifests()[0];
        assert_eq!(described.digest().to_string(), image.digest());
        let annotations = described.annotations().as_ref().unwrap();
        assert_eq!(annotations[oci::ANNOTATION_REF_NAME], "1");
        assert_eq!(
            annotations[oci::ANNOTATION_CONTAINERD_NAME],
            "localhost/kwk/test:1"
        );
        // Every blob is stored under its own digest.
        for blob in [&image.layer, &image.config, &image.manifest] {
            let name = format!("blobs/sha256/{}", blob.digest.trim_start_matches("sha256:"));
            assert_eq!(sha256_digest(&files[&name]), blob.digest);
        }
        assert!(files.contains_key("oci-layout"));
    }

    #[test]
    fn write_to_is_atomic_and_complete() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/image.tar");
        let image = build(&spec(b"x")).unwrap();
        image.write_to(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), image.archive);
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }
}
