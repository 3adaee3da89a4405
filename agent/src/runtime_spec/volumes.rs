//! The volume plan of one container instance (pure): which pod volumes to set up on the host
//! (`hostPath` with its type check, `emptyDir`, and the API-backed `configMap`, `secret`,
//! `downwardAPI` and `projected` volumes with their files, `persistentVolumeClaim` volumes bound
//! to `hostPath` or `local` PersistentVolumes — see [`super::claims`]), the container's mounts with their
//! validated subPaths (and the private path each is bind-mounted on), the managed `/etc/hosts`
//! and the termination-message file. The `volumes_fs` module carries the plan out.
//!
//! Mount order follows upstream: volumeMounts, then `/etc/hosts`, then the termination file.

use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod, Volume, VolumeMount};
use kwk_cri::api::MountPropagation;

use super::api_objects::ApiObjects;
use super::claims::{ClaimError, ClaimVolume, resolve_claim};
use super::env::{DownwardContext, EnvVars};
use super::hosts::{alias_entries, managed_hosts_content};
use super::projection::{ApiVolumeKind, Payload, ProjectionError, api_volume_kind, volume_payload};
use super::sandbox::pod_hostname_and_domain;
use super::{SpecError, container_field_path, podx};

/// Where the hosts file is mounted in containers.
pub const ETC_HOSTS: &str = "/etc/hosts";
/// The managed hosts file, relative to the pod directory.
pub const POD_HOSTS_FILE: &str = "etc-hosts";
/// emptyDir volumes live under `<pod dir>/volumes/kubernetes.io~empty-dir/<name>`.
pub const EMPTY_DIR_PLUGIN_DIR: &str = "volumes/kubernetes.io~empty-dir";
/// Termination-message files live under `<pod dir>/containers/<container>/<id>`.
pub const CONTAINERS_DIR: &str = "containers";
/// The private bind mounts of subPaths live under
/// `<pod dir>/volume-subpaths/<volume>/<container>/<volumeMount index>` (upstream's layout).
pub const SUBPATHS_DIR: &str = "volume-subpaths";

/// What the plan needs besides the pod and the container.
#[derive(Debug, Clone)]
pub struct VolumeContext<'a> {
    /// The container's resolved environment (for `subPathExpr`).
    pub env: &'a EnvVars,
    /// The pod IPs (node IPs for host-network pods). Empty: no `/etc/hosts` is mounted, as
    /// upstream does while the IPs are not known.
    pub pod_ips: Vec<String>,
    pub cluster_domain: String,
    /// The node's hosts file, copied for host-network pods (normally `/etc/hosts`).
    pub node_hosts_file: PathBuf,
    /// A name for this instance's termination-message file, unique within the container
    /// (see [`new_termination_file_id`]).
    pub termination_file_id: String,
    /// What the API-backed volumes read.
    pub sources: VolumeSources<'a>,
}

/// The inputs of the API-backed volumes' files.
#[derive(Debug, Clone, Copy)]
pub struct VolumeSources<'a> {
    pub objects: &'a ApiObjects,
    pub downward: &'a DownwardContext,
}

/// The kind check of a `hostPath` volume (`hostPath.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostPathType {
    /// `""`: no check.
    Unchecked,
    DirectoryOrCreate,
    Directory,
    FileOrCreate,
    File,
    Socket,
    CharDevice,
    BlockDevice,
}

/// Host-side setup of one pod volume (idempotent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSetup {
    HostPath {
        volume: String,
        field: String,
        path: PathBuf,
        kind: HostPathType,
    },
    /// A directory (relative to the pod directory), mode 0777, group-owned by `fs_group`
    /// (with setgid) when the pod sets one; with `medium: Memory` a tmpfs of its own.
    EmptyDir {
        volume: String,
        field: String,
        dir: PathBuf,
        fs_group: Option<u32>,
        memory: Option<TmpfsSize>,
    },
    /// A `configMap`, `secret`, `downwardAPI` or `projected` volume: a directory (relative to
    /// the pod directory; a tmpfs of its own when the kind keeps it in memory) holding
    /// `payload` through the atomic writer, or the reason it cannot be built.
    Api {
        volume: String,
        field: String,
        kind: ApiVolumeKind,
        dir: PathBuf,
        fs_group: Option<u32>,
        payload: Result<Payload, ProjectionError>,
    },
    /// A `persistentVolumeClaim` volume: the host path of the PersistentVolume bound to
    /// `claim`, checked like a hostPath volume, or why the claim cannot be mounted (a
    /// `FailedMount` at set-up, so the pod waits in `ContainerCreating` until it binds).
    Claim {
        volume: String,
        field: String,
        claim: String,
        resolved: Result<ClaimVolume, ClaimError>,
    },
}

impl VolumeSetup {
    pub fn volume(&self) -> &str {
        match self {
            Self::HostPath { volume, .. }
            | Self::EmptyDir { volume, .. }
            | Self::Api { volume, .. }
            | Self::Claim { volume, .. } => volume,
        }
    }
}

/// The size of a memory-backed emptyDir: its `sizeLimit`, or the kernel's default for a tmpfs
/// (half the node's memory) without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TmpfsSize {
    Limit(u64),
    Default,
}

/// Where a mount's source lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSource {
    /// An absolute host path.
    Host(PathBuf),
    /// A path relative to the pod directory.
    PodDir(PathBuf),
}

/// One planned bind mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedMount {
    /// The volumeMount's field path, for errors.
    pub field: String,
    pub volume: String,
    pub source: MountSource,
    pub sub_path: Option<SubPath>,
    pub container_path: String,
    pub readonly: bool,
    pub propagation: MountPropagation,
}

/// A mount's subPath (or expanded subPathExpr) and where it is bind-mounted privately before the
/// runtime mounts it into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubPath {
    /// A relative path inside the volume, checked to have no `..` and not be absolute.
    pub path: PathBuf,
    /// The private bind mount, relative to the pod directory:
    /// `volume-subpaths/<volume>/<container>/<volumeMount index>`.
    pub bind: PathBuf,
}

/// The `/etc/hosts` to write into the pod directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostsFile {
    /// Pod network: the whole contents.
    Managed { content: String },
    /// Host network: the node's hosts file, then `suffix` (the hostAliases).
    FromNode { node_hosts: PathBuf, suffix: String },
}

/// The termination-message file of one container instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TerminationFile {
    pub container: String,
    pub id: String,
    pub container_path: String,
}

/// Everything `apply_volume_plan` does for one container instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumePlan {
    pub volumes: Vec<VolumeSetup>,
    pub mounts: Vec<PlannedMount>,
    pub hosts_file: Option<HostsFile>,
    pub termination_file: Option<TerminationFile>,
}

/// A fresh id for a termination-message file: 8 hex digits, random (upstream uses a random
/// 32-bit number too; std's per-process random hash keys are the source).
pub fn new_termination_file_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{:08x}", hasher.finish() as u32)
}

/// Plans the volumes and mounts of `container`.
pub fn plan_volumes(
    pod: &Pod,
    container: &Container,
    ctx: &VolumeContext<'_>,
) -> Result<VolumePlan, SpecError> {
    let field = container_field_path(pod, container);
    let pod_volumes = podx::spec(pod)
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or_default();
    let volumes = plan_pod_volumes(pod, ctx.sources, |_| true)?;

    let privileged = container
        .security_context
        .as_ref()
        .and_then(|s| s.privileged)
        .unwrap_or(false);
    let mut mounts = Vec::new();
    for (index, mount) in container.volume_mounts.iter().flatten().enumerate() {
        let mount_field = format!("{field}.volumeMounts[{index}]");
        let setup = pod_volumes
            .iter()
            .position(|v| v.name == mount.name)
            .and_then(|i| volumes.get(i))
            .ok_or_else(|| SpecError::MissingVolume {
                field: format!("{mount_field}.name"),
                volume: mount.name.clone(),
            })?;
        let sub_path = sub_path(mount, &mount_field, ctx.env)?
            .map(|path| {
                check_path_component(&format!("{mount_field}.name"), &mount.name)?;
                check_path_component(&format!("{field}.name"), &container.name)?;
                Ok::<_, SpecError>(SubPath {
                    path,
                    bind: Path::new(SUBPATHS_DIR)
                        .join(&mount.name)
                        .join(&container.name)
                        .join(index.to_string()),
                })
            })
            .transpose()?;
        mounts.push(plan_mount(
            mount,
            &mount_field,
            setup,
            privileged,
            sub_path,
        )?);
    }

    let mounts_etc_hosts = container
        .volume_mounts
        .iter()
        .flatten()
        .any(|m| m.mount_path == ETC_HOSTS);
    let hosts_file = if ctx.pod_ips.is_empty() || mounts_etc_hosts {
        None
    } else {
        let aliases = podx::spec(pod)
            .and_then(|s| s.host_aliases.as_deref())
            .unwrap_or_default();
        Some(if podx::host_network(pod) {
            HostsFile::FromNode {
                node_hosts: ctx.node_hosts_file.clone(),
                suffix: alias_entries(aliases),
            }
        } else {
            let (hostname, domain) = pod_hostname_and_domain(pod, &ctx.cluster_domain)?;
            HostsFile::Managed {
                content: managed_hosts_content(&ctx.pod_ips, &hostname, &domain, aliases),
            }
        })
    };

    let termination_file = match container
        .termination_message_path
        .as_deref()
        .filter(|p| !p.is_empty())
    {
        None => None,
        Some(path) => {
            check_path_component(&format!("{field}.name"), &container.name)?;
            check_path_component("termination file id", &ctx.termination_file_id)?;
            Some(TerminationFile {
                container: container.name.clone(),
                id: ctx.termination_file_id.clone(),
                container_path: absolute(path),
            })
        }
    };
    Ok(VolumePlan {
        volumes,
        mounts,
        hosts_file,
        termination_file,
    })
}

/// The set-up of the pod's volumes that `select` picks, in `spec.volumes` order.
pub fn plan_pod_volumes(
    pod: &Pod,
    sources: VolumeSources<'_>,
    select: impl Fn(&Volume) -> bool,
) -> Result<Vec<VolumeSetup>, SpecError> {
    let fs_group = podx::spec(pod)
        .and_then(|s| s.security_context.as_ref())
        .and_then(|s| s.fs_group)
        .map(|g| {
            u32::try_from(g)
                .map_err(|_| SpecError::invalid("spec.securityContext.fsGroup", "out of range"))
        })
        .transpose()?;
    podx::spec(pod)
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter(|(_, volume)| select(volume))
        .map(|(index, volume)| {
            plan_volume(
                pod,
                volume,
                &format!("spec.volumes[{index}]"),
                fs_group,
                sources,
            )
        })
        .collect()
}

fn plan_volume(
    pod: &Pod,
    volume: &Volume,
    field: &str,
    fs_group: Option<u32>,
    sources: VolumeSources<'_>,
) -> Result<VolumeSetup, SpecError> {
    if let Some(kind) = api_volume_kind(volume) {
        check_path_component(&format!("{field}.name"), &volume.name)?;
        return Ok(VolumeSetup::Api {
            volume: volume.name.clone(),
            field: field.to_string(),
            kind,
            dir: Path::new(kind.plugin_dir()).join(&volume.name),
            fs_group,
            payload: volume_payload(pod, volume, field, sources.objects, sources.downward),
        });
    }
    if let Some(claim) = volume.persistent_volume_claim.as_ref() {
        return Ok(VolumeSetup::Claim {
            volume: volume.name.clone(),
            field: format!("{field}.persistentVolumeClaim"),
            claim: claim.claim_name.clone(),
            resolved: resolve_claim(claim, sources.objects),
        });
    }
    if let Some(host) = volume.host_path.as_ref() {
        let type_ = host.type_.as_deref().unwrap_or_default();
        let kind = parse_host_path_type(type_).ok_or_else(|| {
            SpecError::invalid(
                format!("{field}.hostPath.type"),
                format!("{type_:?} is not a hostPath type"),
            )
        })?;
        if !Path::new(&host.path).is_absolute() {
            return Err(SpecError::invalid(
                format!("{field}.hostPath.path"),
                "must be an absolute path",
            ));
        }
        return Ok(VolumeSetup::HostPath {
            volume: volume.name.clone(),
            field: format!("{field}.hostPath"),
            path: PathBuf::from(&host.path),
            kind,
        });
    }
    if let Some(empty) = volume.empty_dir.as_ref() {
        let memory = match empty.medium.as_deref().unwrap_or_default() {
            "" => None,
            "Memory" => Some(match &empty.size_limit {
                None => TmpfsSize::Default,
                Some(limit) => {
                    let bytes = crate::quantity::parse(&limit.0)
                        .ok()
                        .filter(|q| !q.is_negative())
                        .and_then(|q| u64::try_from(q.value()).ok())
                        .ok_or_else(|| {
                            SpecError::invalid(
                                format!("{field}.emptyDir.sizeLimit"),
                                format!("{:?} is not a size", limit.0),
                            )
                        })?;
                    // A zero-sized tmpfs would be unlimited to the kernel.
                    TmpfsSize::Limit(bytes.max(1))
                }
            }),
            medium => {
                return Err(SpecError::unsupported(
                    format!("{field}.emptyDir.medium"),
                    format!("emptyDir medium {medium:?}"),
                ));
            }
        };
        check_path_component(&format!("{field}.name"), &volume.name)?;
        return Ok(VolumeSetup::EmptyDir {
            volume: volume.name.clone(),
            field: format!("{field}.emptyDir"),
            dir: Path::new(EMPTY_DIR_PLUGIN_DIR).join(&volume.name),
            fs_group,
            memory,
        });
    }
    if volume.git_repo.is_some() {
        return Err(SpecError::invalid(
            format!("{field}.gitRepo"),
            "gitRepo volumes are refused (CVE-2024-10220: a repository's hooks run on the node); \
             clone the repository into an emptyDir from an init container instead",
        ));
    }
    Err(SpecError::unsupported(
        field,
        format!(
            "volume {:?}: only hostPath, emptyDir, configMap, secret, downwardAPI and projected \
             volumes",
            volume.name
        ),
    ))
}

/// A `hostPath.type` (`""`: unchecked); `None` for an unknown one.
pub fn parse_host_path_type(value: &str) -> Option<HostPathType> {
    Some(match value {
        "" => HostPathType::Unchecked,
        "DirectoryOrCreate" => HostPathType::DirectoryOrCreate,
        "Directory" => HostPathType::Directory,
        "FileOrCreate" => HostPathType::FileOrCreate,
        "File" => HostPathType::File,
        "Socket" => HostPathType::Socket,
        "CharDevice" => HostPathType::CharDevice,
        "BlockDevice" => HostPathType::BlockDevice,
        _ => return None,
    })
}

fn plan_mount(
    mount: &VolumeMount,
    field: &str,
    setup: &VolumeSetup,
    privileged: bool,
    sub_path: Option<SubPath>,
) -> Result<PlannedMount, SpecError> {
    let propagation = match mount.mount_propagation.as_deref() {
        None | Some("None") => MountPropagation::PropagationPrivate,
        Some("HostToContainer") => MountPropagation::PropagationHostToContainer,
        Some("Bidirectional") if privileged => MountPropagation::PropagationBidirectional,
        Some("Bidirectional") => {
            return Err(SpecError::invalid(
                format!("{field}.mountPropagation"),
                "Bidirectional mount propagation is available only to privileged containers",
            ));
        }
        Some(other) => {
            return Err(SpecError::invalid(
                format!("{field}.mountPropagation"),
                format!("invalid mode {other:?}"),
            ));
        }
    };
    // API-backed volumes are read-only in containers whatever the mount says, as upstream.
    // So are claims whose volume source says `readOnly`.
    let readonly = mount.read_only.unwrap_or(false)
        || match setup {
            VolumeSetup::Api { .. } => true,
            VolumeSetup::Claim { resolved, .. } => resolved.as_ref().is_ok_and(|c| c.readonly),
            _ => false,
        };
    match mount.recursive_read_only.as_deref() {
        None | Some("Disabled") | Some("IfPossible") => {}
        Some("Enabled") if !readonly => {
            return Err(SpecError::invalid(
                format!("{field}.recursiveReadOnly"),
                "recursive read-only mount needs readOnly",
            ));
        }
        Some("Enabled") => {
            return Err(SpecError::unsupported(
                format!("{field}.recursiveReadOnly"),
                "recursive read-only mounts (containerd 1.6 lacks them)",
            ));
        }
        Some(other) => {
            return Err(SpecError::invalid(
                format!("{field}.recursiveReadOnly"),
                format!("invalid mode {other:?}"),
            ));
        }
    }
    let (volume, source) = match setup {
        VolumeSetup::HostPath { volume, path, .. } => (volume, MountSource::Host(path.clone())),
        VolumeSetup::EmptyDir { volume, dir, .. } | VolumeSetup::Api { volume, dir, .. } => {
            (volume, MountSource::PodDir(dir.clone()))
        }
        // An unresolved claim is never mounted: its set-up fails first.
        VolumeSetup::Claim {
            volume, resolved, ..
        } => (
            volume,
            MountSource::Host(
                resolved
                    .as_ref()
                    .map(|c| c.path.clone())
                    .unwrap_or_default(),
            ),
        ),
    };
    Ok(PlannedMount {
        field: field.to_string(),
        volume: volume.clone(),
        source,
        sub_path,
        container_path: absolute(&mount.mount_path),
        readonly,
        propagation,
    })
}

/// The mount's subPath (or expanded subPathExpr), checked: relative, no `..` component.
fn sub_path(mount: &VolumeMount, field: &str, env: &EnvVars) -> Result<Option<PathBuf>, SpecError> {
    let (raw, field) = match (mount.sub_path.as_deref(), mount.sub_path_expr.as_deref()) {
        (Some(p), Some(e)) if !p.is_empty() && !e.is_empty() => {
            return Err(SpecError::invalid(
                format!("{field}.subPathExpr"),
                "subPath and subPathExpr are mutually exclusive",
            ));
        }
        (_, Some(expr)) if !expr.is_empty() => {
            let mut missing = Vec::new();
            let expanded = super::env::expand(expr, |name| match env.get(name) {
                Some(value) if !value.is_empty() => Some(value.to_string()),
                _ => {
                    missing.push(name.to_string());
                    Some(String::new())
                }
            });
            if !missing.is_empty() {
                missing.sort();
                missing.dedup();
                return Err(SpecError::invalid(
                    format!("{field}.subPathExpr"),
                    format!("missing value for {}", missing.join(", ")),
                ));
            }
            (expanded, format!("{field}.subPathExpr"))
        }
        (Some(p), _) if !p.is_empty() => (p.to_string(), format!("{field}.subPath")),
        _ => return Ok(None),
    };
    let path = Path::new(&raw);
    if path.is_absolute() {
        return Err(SpecError::invalid(
            field,
            format!("{raw:?} must not be an absolute path"),
        ));
    }
    if raw.split('/').any(|part| part == "..") {
        return Err(SpecError::invalid(
            field,
            format!("{raw:?} must not contain '..'"),
        ));
    }
    let clean: PathBuf = path
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    Ok(if clean.as_os_str().is_empty() {
        None
    } else {
        Some(clean)
    })
}

fn check_path_component(field: &str, name: &str) -> Result<(), SpecError> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(SpecError::invalid(
            field,
            format!("{name:?} cannot be used as a file name"),
        ));
    }
    Ok(())
}

fn absolute(path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    }
}

#[cfg(test)]
#[path = "volumes_tests.rs"]
mod tests;
