//! Reading an OCI image-layout tar (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`) without
//! loading it: one pass over the tar headers records where each member lies, then documents are
//! read by offset and blobs streamed from there.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};

use super::ImportError;

const MEDIA_TYPE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MEDIA_TYPE_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Documents (index, manifests, configs) larger than this are refused, not read into memory.
const MAX_DOCUMENT_BYTES: u64 = 4 * 1024 * 1024;

/// Where a member's bytes lie in the archive file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub offset: u64,
    pub size: u64,
}

/// A content-addressed object the image refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRef {
    pub media_type: String,
    pub digest: String,
    pub size: i64,
}

impl BlobRef {
    fn from_descriptor(d: &Descriptor) -> Self {
        Self {
            media_type: d.media_type().to_string(),
            digest: d.digest().to_string(),
            size: d.size() as i64,
        }
    }
}

/// A layer and its diff ID (the digest of its uncompressed tar), which names its snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRef {
    pub blob: BlobRef,
    pub diff_id: String,
}

/// One image found in an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedImage {
    /// Full reference, e.g. `localhost/kwk/pause:1`.
    pub name: String,
    pub manifest: BlobRef,
    pub config: BlobRef,
    pub layers: Vec<LayerRef>,
}

/// An opened archive: member offsets, no contents.
#[derive(Debug)]
pub struct OciArchive {
    path: PathBuf,
    members: HashMap<String, Member>,
}

impl OciArchive {
    /// Indexes the archive's members. Fails unless it is an OCI image layout.
    pub fn open(path: &Path) -> Result<Self, ImportError> {
        let read_err = |source| ImportError::Read {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(read_err)?;
        let mut archive = tar::Archive::new(file);
        let mut members = HashMap::new();
        for entry in archive.entries_with_seek().map_err(read_err)? {
            let entry = entry.map_err(read_err)?;
            if entry.header().entry_type() != tar::EntryType::Regular {
                continue;
            }
            let name = entry
                .path()
                .map_err(read_err)?
                .to_string_lossy()
                .into_owned();
            let name = name.trim_start_matches("./").to_owned();
            members.insert(
                name,
                Member {
                    offset: entry.raw_file_position(),
                    size: entry.size(),
                },
            );
        }
        for required in ["oci-layout", "index.json"] {
            if !members.contains_key(required) {
                return Err(ImportError::NotOciLayout {
                    path: path.to_owned(),
                    reason: format!("it has no {required}"),
                });
            }
        }
        Ok(Self {
            path: path.to_owned(),
            members,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the blob with `digest` lies.
    pub fn blob(&self, digest: &str) -> Result<Member, ImportError> {
        let (algorithm, hex) = digest.split_once(':').unwrap_or(("", digest));
        self.members
            .get(&format!("blobs/{algorithm}/{hex}"))
            .copied()
            .ok_or_else(|| ImportError::MissingBlob {
                path: self.path.clone(),
                digest: digest.to_owned(),
            })
    }

    /// Every image the index names. Nested indexes (multi-platform) resolve to the manifest for
    /// this machine's platform. `base_name` names images whose annotations carry only a tag.
    pub fn images(&self, base_name: Option<&str>) -> Result<Vec<ArchivedImage>, ImportError> {
        let index: ImageIndex = self.document("index.json")?;
        let mut images = Vec::new();
        for described in index.manifests() {
            let name = image_name(described, base_name).ok_or_else(|| ImportError::Unnamed {
                path: self.path.clone(),
                digest: described.digest().to_string(),
            })?;
            let manifest = self.platform_manifest(described)?;
            images.push(self.image(name, &manifest)?);
        }
        if images.is_empty() {
            return Err(ImportError::NotOciLayout {
                path: self.path.clone(),
                reason: "its index lists no image".into(),
            });
        }
        Ok(images)
    }

    fn platform_manifest(&self, described: &Descriptor) -> Result<Descriptor, ImportError> {
        let media_type = described.media_type().to_string();
        if media_type != MEDIA_TYPE_INDEX && media_type != MEDIA_TYPE_DOCKER_LIST {
            return Ok(described.clone());
        }
        let nested: ImageIndex = self.blob_document(described.digest().as_ref())?;
        let arch = host_architecture();
        nested
            .manifests()
            .iter()
            .find(|m| {
                m.platform().as_ref().is_some_and(|p| {
                    p.os().to_string() == "linux" && p.architecture().to_string() == arch
                })
            })
            .cloned()
            .ok_or_else(|| ImportError::Unsupported {
                path: self.path.clone(),
                reason: format!("index {} has no linux/{arch} manifest", described.digest()),
            })
    }

    fn image(&self, name: String, described: &Descriptor) -> Result<ArchivedImage, ImportError> {
        let digest = described.digest().to_string();
        let manifest: ImageManifest = self.blob_document(&digest)?;
        let config_ref = BlobRef::from_descriptor(manifest.config());
        let config: ImageConfiguration = self.blob_document(&config_ref.digest)?;
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != manifest.layers().len() {
            return Err(ImportError::Unsupported {
                path: self.path.clone(),
                reason: format!(
                    "image {name}: {} layers but {} diff IDs in its config",
                    manifest.layers().len(),
                    diff_ids.len()
                ),
            });
        }
        let layers = manifest
            .layers()
            .iter()
            .zip(diff_ids)
            .map(|(layer, diff_id)| LayerRef {
                blob: BlobRef::from_descriptor(layer),
                diff_id: diff_id.clone(),
            })
            .collect();
        Ok(ArchivedImage {
            name,
            manifest: BlobRef::from_descriptor(described),
            config: config_ref,
            layers,
        })
    }

    fn blob_document<T: serde::de::DeserializeOwned>(
        &self,
        digest: &str,
    ) -> Result<T, ImportError> {
        let (algorithm, hex) = digest.split_once(':').unwrap_or(("", digest));
        self.document(&format!("blobs/{algorithm}/{hex}"))
            .map_err(|err| match err {
                ImportError::NotOciLayout { .. } => ImportError::MissingBlob {
                    path: self.path.clone(),
                    digest: digest.to_owned(),
                },
                other => other,
            })
    }

    fn document<T: serde::de::DeserializeOwned>(&self, member: &str) -> Result<T, ImportError> {
        let bytes = self.read_member(member)?;
        serde_json::from_slice(&bytes).map_err(|source| ImportError::Document {
            path: self.path.clone(),
            member: member.to_owned(),
            source,
        })
    }

    fn read_member(&self, member: &str) -> Result<Vec<u8>, ImportError> {
        let location = self
            .members
            .get(member)
            .ok_or_else(|| ImportError::NotOciLayout {
                path: self.path.clone(),
                reason: format!("it has no {member}"),
            })?;
        if location.size > MAX_DOCUMENT_BYTES {
            return Err(ImportError::Unsupported {
                path: self.path.clone(),
                reason: format!(
                    "{member} is {} bytes, more than a document may be",
                    location.size
                ),
            });
        }
        read_range(&self.path, *location)
    }
}

/// Reads `member`'s bytes from the archive at `path`.
pub fn read_range(path: &Path, member: Member) -> Result<Vec<u8>, ImportError> {
    let read_err = |source| ImportError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(read_err)?;
    file.seek(SeekFrom::Start(member.offset))
        .map_err(read_err)?;
    let mut bytes = Vec::with_capacity(usize::try_from(member.size).unwrap_or(0));
    file.take(member.size)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 != member.size {
        return Err(read_err(std::io::Error::from(
            std::io::ErrorKind::UnexpectedEof,
        )));
    }
    Ok(bytes)
}

/// The image's full reference: containerd's annotation, else a `ref.name` that is already a
/// full reference, else `base_name:ref.name`.
fn image_name(described: &Descriptor, base_name: Option<&str>) -> Option<String> {
    let annotations = described.annotations().as_ref()?;
    if let Some(name) = annotations
        .get(ANNOTATION_CONTAINERD_NAME)
        .filter(|n| !n.is_empty())
    {
        return Some(name.clone());
    }
    let tag = annotations
        .get(ANNOTATION_REF_NAME)
        .filter(|n| !n.is_empty())?;
    // A tag has neither '/' nor ':'; a ref.name with them is a full reference already.
    if tag.contains('/') || tag.contains(':') {
        return Some(tag.clone());
    }
    base_name.map(|base| format!("{base}:{tag}"))
}

fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn descriptor(annotations: &[(&str, &str)]) -> Descriptor {
        let mut d = Descriptor::new(
            oci_spec::image::MediaType::ImageManifest,
            10,
            oci_spec::image::Digest::try_from(
                "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            )
            .unwrap(),
        );
        if !annotations.is_empty() {
            d.set_annotations(Some(
                annotations
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ));
        }
        d
    }

    #[test]
    fn names_come_from_containerd_annotation_then_ref_name() {
        let both = descriptor(&[
            (ANNOTATION_CONTAINERD_NAME, "localhost/kwk/pause:1"),
            (ANNOTATION_REF_NAME, "1"),
        ]);
        assert_eq!(
            image_name(&both, Some("other")).unwrap(),
            "localhost/kwk/pause:1"
        );
        let tag_only = descriptor(&[(ANNOTATION_REF_NAME, "3.10")]);
        assert_eq!(
            image_name(&tag_only, Some("localhost/x")).unwrap(),
            "localhost/x:3.10"
        );
        assert_eq!(image_name(&tag_only, None), None);
        let full = descriptor(&[(ANNOTATION_REF_NAME, "registry.local/a/b:2")]);
        assert_eq!(image_name(&full, None).unwrap(), "registry.local/a/b:2");
        assert_eq!(image_name(&descriptor(&[]), Some("x")), None);
    }

    #[test]
    fn a_plain_tar_is_not_an_oci_layout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker.tar");
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_ustar();
        header.set_size(2);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, "manifest.json", &b"[]"[..])
            .unwrap();
        std::fs::write(&path, builder.into_inner().unwrap()).unwrap();
        let err = OciArchive::open(&path).unwrap_err();
        assert!(matches!(err, ImportError::NotOciLayout { .. }), "{err:?}");
        assert!(err.to_string().contains("oci-layout"), "{err}");
    }

    #[test]
    fn a_missing_file_names_its_path() {
        let err = OciArchive::open(Path::new("/nonexistent/kwk.tar")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/kwk.tar"), "{err}");
    }
}
