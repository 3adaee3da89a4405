//! One manifest file's bytes → a validated, defaulted static [`Pod`] with its UID and
//! `config.hash` set (not `config.seen`: that is the source's, see `scan.rs`). Pure.
//!
//! Accepted: exactly one YAML or JSON document of `apiVersion: v1`, `kind: Pod`, at most
//! [`MAX_MANIFEST_BYTES`]. YAML anchors and aliases work, within tight budgets so an alias bomb
//! fails fast. Unknown fields are ignored, as the upstream kubelet's decoder does.

use std::fmt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;

use super::{defaults, hash, validation};
use crate::labels;
use kwk_api::field::FieldError;

/// Largest manifest accepted, checked before parsing (upstream's limit for manifest files).
pub const MAX_MANIFEST_BYTES: usize = 1024 * 1024;

/// Why a manifest file does not give a static pod. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{}: file is {size} bytes, more than the {max} bytes a manifest may have", path.display())]
    TooLarge {
        path: PathBuf,
        size: u64,
        max: usize,
    },
    #[error("{}: file is empty", path.display())]
    Empty { path: PathBuf },
    #[error("{}: file holds more than one YAML document; put each pod in its own file", path.display())]
    MultipleDocuments { path: PathBuf },
    #[error("{}: file is not UTF-8 text: {source}", path.display())]
    NotUtf8 {
        path: PathBuf,
        #[source]
        source: std::str::Utf8Error,
    },
    #[error("{}: invalid YAML: {source}", path.display())]
    Yaml {
        path: PathBuf,
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    #[error("{}: invalid JSON: {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: {field}: {problem}", path.display())]
    NotAPod {
        path: PathBuf,
        /// `apiVersion` or `kind`.
        field: &'static str,
        problem: String,
    },
    #[error("{}: {}", path.display(), FieldErrors(errors))]
    Invalid {
        path: PathBuf,
        errors: Vec<FieldError>,
    },
}

impl ManifestError {
    /// The manifest file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::TooLarge { path, .. }
            | Self::Empty { path }
            | Self::MultipleDocuments { path }
            | Self::NotUtf8 { path, .. }
            | Self::Yaml { path, .. }
            | Self::Json { path, .. }
            | Self::NotAPod { path, .. }
            | Self::Invalid { path, .. } => path,
        }
    }
}

/// Field errors joined with `; ` (one log line per manifest).
struct FieldErrors<'a>(&'a [FieldError]);

impl fmt::Display for FieldErrors<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Just the type fields, read first so a wrong kind gets a clear error, not a decode error.
#[derive(Deserialize)]
struct TypeMeta {
    #[serde(rename = "apiVersion")]
    api_version: Option<String>,
    kind: Option<String>,
}

/// Budgets far above any real pod manifest and far below what hurts: anchors are allowed, but
/// a billion-laughs document is cut off after a few thousand replayed events.
fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: 64,
            max_nodes: 100_000,
            max_events: 400_000,
            max_aliases: 1_000,
            max_anchors: 1_000,
            max_recorded_anchor_events: 100_000,
            max_total_scalar_bytes: MAX_MANIFEST_BYTES,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: 100_000,
            max_replay_stack_depth: 16,
        },
        with_snippet: false,
    }
}

fn decode<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T, ManifestError> {
    if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|source| ManifestError::Json {
            path: path.to_path_buf(),
            source,
        })
    } else {
        serde_saphyr::from_str_with_options(text, yaml_options()).map_err(|source| match source {
            serde_saphyr::Error::MultipleDocuments { .. } => ManifestError::MultipleDocuments {
                path: path.to_path_buf(),
            },
            source => ManifestError::Yaml {
                path: path.to_path_buf(),
                source: Box::new(source),
            },
        })
    }
}

fn check_type_meta(path: &Path, meta: &TypeMeta) -> Result<(), ManifestError> {
    let not_a_pod = |field, problem: String| ManifestError::NotAPod {
        path: path.to_path_buf(),
        field,
        problem,
    };
    match meta.api_version.as_deref() {
        None | Some("") => return Err(not_a_pod("apiVersion", "Required value".into())),
        Some("v1") => {}
        Some(other) => {
            return Err(not_a_pod(
                "apiVersion",
                format!("Unsupported value: {other:?}: supported values: \"v1\""),
            ));
        }
    }
    match meta.kind.as_deref() {
        None | Some("") => Err(not_a_pod("kind", "Required value".into())),
        Some("Pod") => Ok(()),
        Some(other) => Err(not_a_pod(
            "kind",
            format!(
                "Unsupported value: {other:?}: supported values: \"Pod\" (a manifest holds \
                 exactly one pod)"
            ),
        )),
    }
}

/// Parses, validates and defaults one manifest file's content. `path` is for messages only.
/// The pod's UID and `kubernetes.io/config.hash` are [`pod_hash`](super::pod_hash) of the
/// defaulted pod; `kubernetes.io/config.seen` is not set.
pub fn parse_manifest(path: &Path, bytes: &[u8], node_name: &str) -> Result<Pod, ManifestError> {
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge {
            path: path.to_path_buf(),
            size: bytes.len() as u64,
            max: MAX_MANIFEST_BYTES,
        });
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = std::str::from_utf8(bytes).map_err(|source| ManifestError::NotUtf8 {
        path: path.to_path_buf(),
        source,
    })?;
    if text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#') || l == "---"
    }) {
        return Err(ManifestError::Empty {
            path: path.to_path_buf(),
        });
    }
    let type_meta: TypeMeta = decode(path, text)?;
    check_type_meta(path, &type_meta)?;
    let mut pod: Pod = decode(path, text)?;

    let mut errors = validation::validate_metadata(&pod.metadata, node_name);
    defaults::apply_defaults(&mut pod, node_name);
    if let Some(spec) = &pod.spec {
        errors.extend(validation::validate_spec(spec));
    }
    if !errors.is_empty() {
        return Err(ManifestError::Invalid {
            path: path.to_path_buf(),
            errors,
        });
    }

    let uid = hash::pod_hash(&pod);
    pod.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(labels::CONFIG_HASH.to_string(), uid.clone());
    pod.metadata.uid = Some(uid);
    Ok(pod)
}
