//! OCI documents (image config, manifest, index) and the image-layout archive.
//!
//! JSON is produced with fixed key order (`json!` literals, `BTreeMap` for user maps), so the
//! bytes, and therefore the digests, depend only on the spec.

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::BuildError;
use crate::spec::{ImageSpec, RunConfig};

pub const MEDIA_TYPE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_TYPE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_TYPE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_TYPE_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// Annotation holding the tag only (what the OCI spec says `ref.name` is).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Annotation holding the full reference; containerd's importers prefer it.
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A content-addressed blob of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub media_type: &'static str,
    pub digest: String,
    pub bytes: Vec<u8>,
}

impl Blob {
    pub(crate) fn new(media_type: &'static str, bytes: Vec<u8>) -> Self {
        Self {
            media_type,
            digest: sha256_digest(&bytes),
            bytes,
        }
    }

    fn descriptor(&self) -> Value {
        json!({
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.bytes.len(),
        })
    }
}

/// The OCI `architecture` of the machine building the image.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

pub(crate) fn config(run: &RunConfig, layer_diff_id: &str, arch: &str) -> Result<Blob, BuildError> {
    let mut config = serde_json::Map::new();
    if !run.entrypoint.is_empty() {
        config.insert("Entrypoint".into(), json!(run.entrypoint));
    }
    if !run.cmd.is_empty() {
        config.insert("Cmd".into(), json!(run.cmd));
    }
    if !run.env.is_empty() {
        config.insert("Env".into(), json!(run.env));
    }
    if let Some(dir) = &run.working_dir {
        config.insert("WorkingDir".into(), json!(dir));
    }
    if let Some(user) = &run.user {
        config.insert("User".into(), json!(user));
    }
    if !run.labels.is_empty() {
        config.insert("Labels".into(), json!(run.labels));
    }
    let doc = json!({
        "created": "1970-01-01T00:00:00Z",
        "architecture": arch,
        "os": "linux",
        "config": config,
        "rootfs": { "type": "layers", "diff_ids": [layer_diff_id] },
    });
    Ok(Blob::new(MEDIA_TYPE_CONFIG, to_bytes(&doc)?))
}

pub(crate) fn manifest(config: &Blob, layer: &Blob) -> Result<Blob, BuildError> {
    let doc = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer.descriptor()],
    });
    Ok(Blob::new(MEDIA_TYPE_MANIFEST, to_bytes(&doc)?))
}

/// `index.json` of the layout: one manifest, named by tag and by full reference.
pub(crate) fn index(spec: &ImageSpec, manifest: &Blob, arch: &str) -> Result<Vec<u8>, BuildError> {
    let mut descriptor = manifest.descriptor();
    descriptor["annotations"] = json!({
        ANNOTATION_CONTAINERD_NAME: spec.reference(),
        ANNOTATION_REF_NAME: spec.tag,
    });
    descriptor["platform"] = json!({ "architecture": arch, "os": "linux" });
    let doc = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_INDEX,
        "manifests": [descriptor],
    });
    to_bytes(&doc)
}

fn to_bytes(doc: &Value) -> Result<Vec<u8>, BuildError> {
    serde_json::to_vec(doc).map_err(BuildError::Json)
}

/// Writes an OCI image layout as a tar: `oci-layout`, `index.json`, `blobs/sha256/<hex>`.
pub(crate) fn layout_archive(index_json: &[u8], blobs: &[Blob]) -> Result<Vec<u8>, BuildError> {
    let mut builder = tar::Builder::new(Vec::new());
    let tar_err = |path: &str| {
        let path = path.to_owned();
        move |source| BuildError::Tar { path, source }
    };
    let dir = |builder: &mut tar::Builder<Vec<u8>>, path: &str| {
        let mut header = fixed_header(tar::EntryType::Directory, 0o755, 0);
        builder
            .append_data(&mut header, path, std::io::empty())
            .map_err(tar_err(path))
    };
    let file = |builder: &mut tar::Builder<Vec<u8>>, path: &str, bytes: &[u8]| {
        let mut header = fixed_header(tar::EntryType::Regular, 0o644, bytes.len() as u64);
        builder
            .append_data(&mut header, path, bytes)
            .map_err(tar_err(path))
    };
    dir(&mut builder, "blobs/")?;
    dir(&mut builder, "blobs/sha256/")?;
    let mut sorted: Vec<&Blob> = blobs.iter().collect();
    sorted.sort_by(|a, b| a.digest.cmp(&b.digest));
    sorted.dedup_by(|a, b| a.digest == b.digest);
    for blob in sorted {
        let hex = blob.digest.trim_start_matches("sha256:");
        file(&mut builder, &format!("blobs/sha256/{hex}"), &blob.bytes)?;
    }
    file(&mut builder, "index.json", index_json)?;
    file(
        &mut builder,
        "oci-layout",
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    builder.into_inner().map_err(tar_err(""))
}

fn fixed_header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_empty_input_is_the_well_known_one() {
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn config_parses_as_oci_and_omits_empty_fields() {
        let run = RunConfig {
            entrypoint: vec!["/pause".into()],
            ..RunConfig::default()
        };
        let blob = config(&run, "sha256:abc", "amd64").unwrap();
        let parsed: oci_spec::image::ImageConfiguration =
            serde_json::from_slice(&blob.bytes).unwrap();
        assert_eq!(parsed.rootfs().diff_ids(), &["sha256:abc".to_string()]);
        let cfg = parsed.config().as_ref().unwrap();
        assert_eq!(
            cfg.entrypoint().as_deref(),
            Some(&["/pause".to_string()][..])
        );
        assert!(cfg.cmd().is_none());
        assert!(cfg.env().is_none());
    }

    #[test]
    fn manifest_describes_config_and_layer() {
        let cfg = Blob::new(MEDIA_TYPE_CONFIG, b"{}".to_vec());
        let layer = Blob::new(MEDIA_TYPE_LAYER_TAR, vec![0; 1024]);
        let blob = manifest(&cfg, &layer).unwrap();
        let parsed: oci_spec::image::ImageManifest = serde_json::from_slice(&blob.bytes).unwrap();
        assert_eq!(parsed.config().digest().to_string(), cfg.digest);
        assert_eq!(parsed.layers().len(), 1);
        assert_eq!(parsed.layers()[0].size(), 1024);
        assert_eq!(parsed.layers()[0].digest().to_string(), layer.digest);
    }
}
