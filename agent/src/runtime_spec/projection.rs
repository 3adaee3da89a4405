//! The files of the API-backed volumes — `configMap`, `secret`, `downwardAPI` and `projected`
//! (with service-account tokens) — as upstream's volume plugins lay them out: every key or the
//! `items` paths, file modes (`items[].mode`, else `defaultMode`, else 0644), `optional`
//! objects and keys, and the downward API's file formats. Pure: values come from the fetched
//! [`ApiObjects`] and the pod; the atomic writer puts the [`Payload`] on disk.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, KeyToPath, Pod, VolumeProjection};

use super::api_objects::{ApiObjects, Entries, KeyedEntries, KeyedKind, TokenSource};
use super::env::{DownwardContext, field_ref_value, resource_field_value};
use super::podx;

/// The mode of a projected file without `mode` or `defaultMode` (upstream's 0644).
pub const DEFAULT_FILE_MODE: u32 = 0o644;

/// One file of a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileContent {
    pub data: Vec<u8>,
    pub mode: u32,
}

/// A volume's files by relative path (no `..`, not starting with `..`).
pub type Payload = BTreeMap<PathBuf, FileContent>;

/// Which plugin a volume belongs to: names its directory and medium as upstream's does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVolumeKind {
    ConfigMap,
    Secret,
    DownwardApi,
    Projected,
}

impl ApiVolumeKind {
    /// The plugin directory under the pod directory.
    pub fn plugin_dir(self) -> &'static str {
        match self {
            Self::ConfigMap => "volumes/kubernetes.io~configmap",
            Self::Secret => "volumes/kubernetes.io~secret",
            Self::DownwardApi => "volumes/kubernetes.io~downward-api",
            Self::Projected => "volumes/kubernetes.io~projected",
        }
    }

    /// Secrets and anything that may carry them (projected, downward API) live on a tmpfs so
    /// they never reach the node's disk; ConfigMaps on disk, as upstream.
    pub fn in_memory(self) -> bool {
        !matches!(self, Self::ConfigMap)
    }
}

/// The kind of an API-backed volume, `None` for other volumes.
pub fn api_volume_kind(volume: &k8s_openapi::api::core::v1::Volume) -> Option<ApiVolumeKind> {
    if volume.config_map.is_some() {
        Some(ApiVolumeKind::ConfigMap)
    } else if volume.secret.is_some() {
        Some(ApiVolumeKind::Secret)
    } else if volume.downward_api.is_some() {
        Some(ApiVolumeKind::DownwardApi)
    } else if volume.projected.is_some() {
        Some(ApiVolumeKind::Projected)
    } else {
        None
    }
}

/// Why a volume's files cannot be built: upstream's `MountVolume.SetUp` reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProjectionError(pub String);

fn error(reason: impl Into<String>) -> ProjectionError {
    ProjectionError(reason.into())
}

/// The files of `volume` (at `field`, e.g. `spec.volumes[2]`), an API-backed volume.
pub fn volume_payload(
    pod: &Pod,
    volume: &k8s_openapi::api::core::v1::Volume,
    field: &str,
    objects: &ApiObjects,
    downward: &DownwardContext,
) -> Result<Payload, ProjectionError> {
    let mut payload = Payload::new();
    if let Some(source) = &volume.config_map {
        let mode = default_mode(source.default_mode, &format!("{field}.configMap"))?;
        let optional = source.optional.unwrap_or(false);
        let items = source.items.as_deref();
        let field = format!("{field}.configMap");
        let source = KeyedSource::new(KeyedKind::ConfigMap, &source.name, items, optional);
        keyed_files(&source, mode, &field, objects, &mut payload)?;
    } else if let Some(source) = &volume.secret {
        let mode = default_mode(source.default_mode, &format!("{field}.secret"))?;
        let optional = source.optional.unwrap_or(false);
        let name = source.secret_name.as_deref().unwrap_or_default();
        let items = source.items.as_deref();
        let field = format!("{field}.secret");
        let source = KeyedSource::new(KeyedKind::Secret, name, items, optional);
        keyed_files(&source, mode, &field, objects, &mut payload)?;
    } else if let Some(source) = &volume.downward_api {
        let field = format!("{field}.downwardAPI");
        let mode = default_mode(source.default_mode, &field)?;
        let items = source.items.as_deref().unwrap_or_default();
        downward_files(pod, items, mode, &field, downward, &mut payload)?;
    } else if let Some(source) = &volume.projected {
        let field = format!("{field}.projected");
        let mode = default_mode(source.default_mode, &field)?;
        for (index, projection) in source.sources.iter().flatten().enumerate() {
            let field = format!("{field}.sources[{index}]");
            projection_files(
                pod,
                projection,
                mode,
                &field,
                objects,
                downward,
                &mut payload,
            )?;
        }
    } else {
        return Err(error(format!(
            "{field}: not a configMap, secret, downwardAPI or projected volume"
        )));
    }
    Ok(payload)
}

fn projection_files(
    pod: &Pod,
    projection: &VolumeProjection,
    mode: u32,
    field: &str,
    objects: &ApiObjects,
    downward: &DownwardContext,
    payload: &mut Payload,
) -> Result<(), ProjectionError> {
    if let Some(source) = &projection.config_map {
        let optional = source.optional.unwrap_or(false);
        let items = source.items.as_deref();
        let field = format!("{field}.configMap");
        let source = KeyedSource::new(KeyedKind::ConfigMap, &source.name, items, optional);
        keyed_files(&source, mode, &field, objects, payload)
    } else if let Some(source) = &projection.secret {
        let optional = source.optional.unwrap_or(false);
        let items = source.items.as_deref();
        let field = format!("{field}.secret");
        let source = KeyedSource::new(KeyedKind::Secret, &source.name, items, optional);
        keyed_files(&source, mode, &field, objects, payload)
    } else if let Some(source) = &projection.downward_api {
        let items = source.items.as_deref().unwrap_or_default();
        let field = format!("{field}.downwardAPI");
        downward_files(pod, items, mode, &field, downward, payload)
    } else if let Some(source) = &projection.service_account_token {
        let field = format!("{field}.serviceAccountToken");
        let path = checked_path(&source.path, &format!("{field}.path"))?;
        let token_source = TokenSource::of(pod, source);
        let token = objects.token(&token_source).ok_or_else(|| {
            error(format!(
                "no token for service account {:?} (audience {:?}) was issued",
                token_source.service_account, token_source.audience
            ))
        })?;
        payload.insert(
            path,
            FileContent {
                data: token.as_bytes().to_vec(),
                mode,
            },
        );
        Ok(())
    } else if projection.cluster_trust_bundle.is_some() {
        Err(error(format!(
            "{field}.clusterTrustBundle: ClusterTrustBundle projections are not supported by \
             kwk-node yet"
        )))
    } else {
        Ok(())
    }
}

/// A ConfigMap or Secret a volume or projection reads.
struct KeyedSource<'a> {
    kind: KeyedKind,
    name: &'a str,
    items: Option<&'a [KeyToPath]>,
    optional: bool,
}

impl<'a> KeyedSource<'a> {
    fn new(kind: KeyedKind, name: &'a str, items: Option<&'a [KeyToPath]>, optional: bool) -> Self {
        Self {
            kind,
            name,
            items,
            optional,
        }
    }
}

/// The files of a ConfigMap or Secret source, with upstream's messages for what is missing.
fn keyed_files(
    source: &KeyedSource<'_>,
    mode: u32,
    field: &str,
    objects: &ApiObjects,
    payload: &mut Payload,
) -> Result<(), ProjectionError> {
    let (kind, name) = (source.kind.lower_name(), source.name);
    let entries = match objects.keyed(source.kind, name, Entries::All) {
        KeyedEntries::Found(entries) => entries,
        KeyedEntries::NotFound if source.optional => return Ok(()),
        KeyedEntries::NotFound => return Err(error(format!("{kind} {name:?} not found"))),
        KeyedEntries::NotFetched => return Err(not_fetched(kind, name)),
    };
    key_files(
        &entries,
        source.items,
        source.optional,
        mode,
        field,
        payload,
        |key| match source.kind {
            KeyedKind::ConfigMap => format!("configmap references non-existent config key: {key}"),
            KeyedKind::Secret => format!("references non-existent secret key: {key}"),
        },
    )
}

fn not_fetched(kind: &str, name: &str) -> ProjectionError {
    error(format!("{kind} {name:?} cannot be read (no apiserver)"))
}

/// Every key as a file of its name, or only the `items` (a missing key is an error unless the
/// source is optional).
fn key_files(
    entries: &BTreeMap<&str, &[u8]>,
    items: Option<&[KeyToPath]>,
    optional: bool,
    mode: u32,
    field: &str,
    payload: &mut Payload,
    missing_key: impl Fn(&str) -> String,
) -> Result<(), ProjectionError> {
    let Some(items) = items.filter(|i| !i.is_empty()) else {
        for (key, data) in entries {
            let path = checked_path(key, &format!("{field} key {key:?}"))?;
            payload.insert(
                path,
                FileContent {
                    data: data.to_vec(),
                    mode,
                },
            );
        }
        return Ok(());
    };
    for (index, item) in items.iter().enumerate() {
        let item_field = format!("{field}.items[{index}]");
        let Some(data) = entries.get(item.key.as_str()) else {
            if optional {
                continue;
            }
            return Err(error(missing_key(&item.key)));
        };
        let path = checked_path(&item.path, &format!("{item_field}.path"))?;
        let mode = match item.mode {
            Some(m) => file_mode(m, &format!("{item_field}.mode"))?,
            None => mode,
        };
        payload.insert(
            path,
            FileContent {
                data: data.to_vec(),
                mode,
            },
        );
    }
    Ok(())
}

fn downward_files(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    mode: u32,
    field: &str,
    downward: &DownwardContext,
    payload: &mut Payload,
) -> Result<(), ProjectionError> {
    for (index, item) in items.iter().enumerate() {
        let item_field = format!("{field}.items[{index}]");
        let path = checked_path(&item.path, &format!("{item_field}.path"))?;
        let mode = match item.mode {
            Some(m) => file_mode(m, &format!("{item_field}.mode"))?,
            None => mode,
        };
        let data = if let Some(sel) = &item.field_ref {
            let ref_field = format!("{item_field}.fieldRef");
            match sel.field_path.as_str() {
                "metadata.labels" => format_map(pod.metadata.labels.as_ref()),
                "metadata.annotations" => format_map(pod.metadata.annotations.as_ref()),
                _ => field_ref_value(pod, sel, &ref_field, downward)
                    .map_err(|e| error(e.to_string()))?,
            }
        } else if let Some(sel) = &item.resource_field_ref {
            let ref_field = format!("{item_field}.resourceFieldRef");
            let name = sel.container_name.as_deref().unwrap_or_default();
            let container = podx::spec(pod)
                .and_then(|s| {
                    s.containers
                        .iter()
                        .chain(s.init_containers.iter().flatten())
                        .find(|c| c.name == name)
                })
                .ok_or_else(|| {
                    error(format!(
                        "{ref_field}.containerName: no container named {name:?}"
                    ))
                })?;
            resource_field_value(pod, container, sel, &ref_field, downward)
                .map_err(|e| error(e.to_string()))?
        } else {
            return Err(error(format!(
                "{item_field}: one of fieldRef and resourceFieldRef is required"
            )));
        };
        payload.insert(
            path,
            FileContent {
                data: data.into_bytes(),
                mode,
            },
        );
    }
    Ok(())
}

/// Labels or annotations as the downward API writes them: `key="value"` lines sorted by key,
/// values quoted as Go's `%q` does, no newline after the last.
fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A double-quoted string with Go's escapes for quotes, backslashes and control characters.
fn go_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn default_mode(mode: Option<i32>, field: &str) -> Result<u32, ProjectionError> {
    mode.map_or(Ok(DEFAULT_FILE_MODE), |m| {
        file_mode(m, &format!("{field}.defaultMode"))
    })
}

fn file_mode(mode: i32, field: &str) -> Result<u32, ProjectionError> {
    u32::try_from(mode)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| {
            error(format!(
                "{field}: {mode} must be a file mode between 0 and 0777"
            ))
        })
}

/// A relative path with no `..` component that does not start with `..` (those names are the
/// atomic writer's own).
fn checked_path(raw: &str, field: &str) -> Result<PathBuf, ProjectionError> {
    let path = Path::new(raw);
    let bad = raw.is_empty()
        || raw.contains('\0')
        || path.is_absolute()
        || raw.starts_with("..")
        || path.components().any(|c| matches!(c, Component::ParentDir));
    let clean: PathBuf = path
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    if bad || clean.as_os_str().is_empty() {
        return Err(error(format!(
            "{field}: {raw:?} must be a relative path without '..' that does not start with '..'"
        )));
    }
    Ok(clean)
}

#[cfg(test)]
#[path = "projection_tests.rs"]
mod tests;
