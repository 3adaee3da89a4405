//! Carries out a [`VolumePlan`] on the host: hostPath type checks and creation, emptyDir
//! directories (a tmpfs for `medium: Memory`, unmounted again on removal), the API-backed
//! volumes' files (through [`atomic_writer`]; secrets on a tmpfs), subPaths (see [`subpath`]:
//! opened beneath the volume without escaping it through a symlink and bind-mounted by file
//! descriptor onto a private path, so swapping a component for a symlink cannot redirect
//! them), the managed hosts file and the termination-message file; and removes a pod directory
//! (unmounting its subPath binds and tmpfs volumes first) without following symlinks or
//! crossing into other filesystems.

use std::ffi::{CString, OsStr};
use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use kwk_cri::api::Mount;
use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use super::projection::ApiVolumeKind;
use super::volumes::{
    CONTAINERS_DIR, EMPTY_DIR_PLUGIN_DIR, HostPathType, HostsFile, MountSource, POD_HOSTS_FILE,
    PlannedMount, TmpfsSize, VolumePlan, VolumeSetup,
};

/// Why the host side of a volume plan failed. Each names the volume or field and the path.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// A pod volume could not be set up: upstream's `FailedMount` message
    /// (`MountVolume.SetUp failed for volume "<name>" : <reason>`).
    #[error("MountVolume.SetUp failed for volume \"{volume}\" : {reason}")]
    SetUp { volume: String, reason: String },
    #[error("{field}: {path}: {source}")]
    Io {
        field: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{field}: subPath {path} goes through a symlink ({component}); refused")]
    SubPathSymlink {
        field: String,
        path: PathBuf,
        component: String,
    },
    #[error("{field}: subPath {path}: {component} is not a directory")]
    SubPathNotDirectory {
        field: String,
        path: PathBuf,
        component: String,
    },
    #[error("{field}: subPath {path}: bind mount on {target}: {source}")]
    SubPathMount {
        field: String,
        path: PathBuf,
        target: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{field}: subPath {path}: the bind mount on {target} shows another file than the one opened; refused"
    )]
    SubPathChanged {
        field: String,
        path: PathBuf,
        target: PathBuf,
    },
    #[error("cleanup of {path}: {reason}; left in place")]
    Cleanup { path: PathBuf, reason: String },
}

/// What `apply_volume_plan` produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppliedVolumes {
    /// The CRI mounts, in order, for `ContainerContext::mounts`.
    pub mounts: Vec<Mount>,
    /// The host file the container's termination message lands in.
    pub termination_message_path: Option<PathBuf>,
}

const EMPTY_DIR_MODE: u32 = 0o777;
const HOSTPATH_DIR_MODE: u32 = 0o755;
const HOSTPATH_FILE_MODE: u32 = 0o644;
const HOSTS_FILE_MODE: u32 = 0o644;
const TERMINATION_FILE_MODE: u32 = 0o666;
const POD_DIR_MODE: u32 = 0o750;

/// Does the host work of `plan` under `pod_dir` (`<root dir>/pods/<uid>`) and returns the mounts.
pub fn apply_volume_plan(plan: &VolumePlan, pod_dir: &Path) -> Result<AppliedVolumes, VolumeError> {
    create_dir_with_mode(pod_dir, POD_DIR_MODE, "pod directory")?;
    for setup in &plan.volumes {
        setup_volume(setup, pod_dir)?;
    }
    let mut mounts = Vec::with_capacity(plan.mounts.len() + 2);
    for planned in &plan.mounts {
        mounts.push(Mount {
            container_path: planned.container_path.clone(),
            host_path: mount_host_path(planned, pod_dir)?
                .to_string_lossy()
                .into_owned(),
            readonly: planned.readonly,
            propagation: planned.propagation as i32,
            ..Default::default()
        });
    }
    if let Some(hosts) = &plan.hosts_file {
        let path = pod_dir.join(POD_HOSTS_FILE);
        let content = match hosts {
            HostsFile::Managed { content } => content.clone().into_bytes(),
            HostsFile::FromNode { node_hosts, suffix } => {
                let node = fs::read(node_hosts)
                    .map_err(|source| io_err("node hosts file", node_hosts, source))?;
                let mut content = super::hosts::MANAGED_HEADER_HOST_NETWORK
                    .as_bytes()
                    .to_vec();
                content.extend_from_slice(&node);
                content.extend_from_slice(suffix.as_bytes());
                content
            }
        };
        fs::write(&path, content).map_err(|source| io_err("/etc/hosts", &path, source))?;
        set_mode(&path, HOSTS_FILE_MODE, "/etc/hosts")?;
        mounts.push(Mount {
            container_path: super::volumes::ETC_HOSTS.into(),
            host_path: path.to_string_lossy().into_owned(),
            ..Default::default()
        });
    }
    let mut termination_message_path = None;
    if let Some(term) = &plan.termination_file {
        let dir = pod_dir.join(CONTAINERS_DIR).join(&term.container);
        create_dir_with_mode(
            &pod_dir.join(CONTAINERS_DIR),
            POD_DIR_MODE,
            "terminationMessagePath",
        )?;
        create_dir_with_mode(&dir, POD_DIR_MODE, "terminationMessagePath")?;
        let path = dir.join(&term.id);
        fs::File::create(&path)
            .map_err(|source| io_err("terminationMessagePath", &path, source))?;
        set_mode(&path, TERMINATION_FILE_MODE, "terminationMessagePath")?;
        mounts.push(Mount {
            container_path: term.container_path.clone(),
            host_path: path.to_string_lossy().into_owned(),
            ..Default::default()
        });
        termination_message_path = Some(path);
    }
    Ok(AppliedVolumes {
        mounts,
        termination_message_path,
    })
}

fn io_err(field: &str, path: &Path, source: io::Error) -> VolumeError {
    VolumeError::Io {
        field: field.to_string(),
        path: path.to_path_buf(),
        source,
    }
}

fn nix_err(field: &str, path: &Path, errno: Errno) -> VolumeError {
    io_err(field, path, io::Error::from(errno))
}

fn set_mode(path: &Path, mode: u32, field: &str) -> Result<(), VolumeError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|source| io_err(field, path, source))
}

/// Creates `dir` (and missing parents) and gives `dir` exactly `mode` if this call created it.
fn create_dir_with_mode(dir: &Path, mode: u32, field: &str) -> Result<(), VolumeError> {
    match fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(io_err(
            field,
            dir,
            io::Error::new(
                io::ErrorKind::AlreadyExists,
                "exists and is not a directory",
            ),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dir).map_err(|source| io_err(field, dir, source))?;
            set_mode(dir, mode, field)
        }
        Err(source) => Err(io_err(field, dir, source)),
    }
}

/// Sets up one pod volume; a failure is a [`VolumeError::SetUp`] of that volume.
pub fn setup_volume(setup: &VolumeSetup, pod_dir: &Path) -> Result<(), VolumeError> {
    set_up(setup, pod_dir).map_err(|err| VolumeError::SetUp {
        volume: setup.volume().to_string(),
        reason: match err {
            VolumeError::SetUp { reason, .. } => reason,
            VolumeError::Io { path, source, .. } => format!("{}: {source}", path.display()),
            other => other.to_string(),
        },
    })
}

fn set_up(setup: &VolumeSetup, pod_dir: &Path) -> Result<(), VolumeError> {
    match setup {
        VolumeSetup::HostPath {
            field, path, kind, ..
        } => check_host_path(field, path, *kind),
        VolumeSetup::EmptyDir {
            field,
            dir,
            fs_group,
            memory,
            ..
        } => ensure_volume_dir(&pod_dir.join(dir), *memory, *fs_group, field),
        VolumeSetup::Claim {
            field,
            claim,
            resolved,
            ..
        } => {
            let resolved = resolved.as_ref().map_err(|e| VolumeError::SetUp {
                volume: setup.volume().to_string(),
                reason: e.to_string(),
            })?;
            if resolved.local && fs::metadata(&resolved.path).is_err() {
                return Err(VolumeError::SetUp {
                    volume: setup.volume().to_string(),
                    reason: format!(
                        "local volume {} of claim {claim:?}: path {} does not exist on this \
                         node (check the PersistentVolume's nodeAffinity)",
                        resolved.persistent_volume,
                        resolved.path.display()
                    ),
                });
            }
            check_host_path(field, &resolved.path, resolved.kind)
        }
        VolumeSetup::Api {
            field,
            kind,
            dir,
            fs_group,
            payload,
            ..
        } => {
            // Nothing is created for a volume whose files cannot be built.
            let payload = payload.as_ref().map_err(|e| VolumeError::SetUp {
                volume: setup.volume().to_string(),
                reason: e.to_string(),
            })?;
            let dir = pod_dir.join(dir);
            let memory = kind.in_memory().then_some(TmpfsSize::Default);
            ensure_volume_dir(&dir, memory, *fs_group, field)?;
            atomic_writer::write_payload(&dir, payload, *fs_group)
                .map_err(|source| io_err(field, &dir, source))?;
            Ok(())
        }
    }
}

/// Creates a volume directory (mode 0777, setgid and group-owned with an fsGroup), or a tmpfs
/// for `memory`. One set up before (a container restart) is kept; its tmpfs is mounted again
/// if it is gone (a reboot: the pod directory stays, its mounts do not).
fn ensure_volume_dir(
    dir: &Path,
    memory: Option<TmpfsSize>,
    fs_group: Option<u32>,
    field: &str,
) -> Result<(), VolumeError> {
    match fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => {
            return match memory {
                Some(size) if !is_mount_point(dir) => mount_tmpfs(dir, size, fs_group, field),
                _ => Ok(()),
            };
        }
        Ok(_) => {
            return Err(io_err(
                field,
                dir,
                io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "exists and is not a directory",
                ),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(io_err(field, dir, source)),
    }
    fs::create_dir_all(dir).map_err(|source| io_err(field, dir, source))?;
    if let Some(size) = memory {
        return mount_tmpfs(dir, size, fs_group, field);
    }
    let mut mode = EMPTY_DIR_MODE;
    if let Some(gid) = fs_group {
        std::os::unix::fs::lchown(dir, None, Some(gid))
            .map_err(|source| io_err(field, dir, source))?;
        mode |= 0o2000;
    }
    set_mode(dir, mode, field)
}

/// Mounts a tmpfs on `dir` (a memory-backed emptyDir): `nosuid,nodev`, sized, then given the
/// emptyDir's mode and group.
fn mount_tmpfs(
    dir: &Path,
    size: TmpfsSize,
    fs_group: Option<u32>,
    field: &str,
) -> Result<(), VolumeError> {
    let mut options = String::from("mode=0777");
    if let TmpfsSize::Limit(bytes) = size {
        options.push_str(&format!(",size={bytes}"));
    }
    nix::mount::mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(options.as_str()),
    )
    .map_err(|errno| nix_err(field, dir, errno))?;
    let mut mode = EMPTY_DIR_MODE;
    if let Some(gid) = fs_group {
        std::os::unix::fs::lchown(dir, None, Some(gid))
            .map_err(|source| io_err(field, dir, source))?;
        mode |= 0o2000;
    }
    set_mode(dir, mode, field)
}

/// Whether `dir` is the root of a mount (its device differs from its parent's).
fn is_mount_point(dir: &Path) -> bool {
    let device = |p: &Path| fs::symlink_metadata(p).map(|m| m.dev()).ok();
    match (device(dir), dir.parent().and_then(device)) {
        (Some(own), Some(parent)) => own != parent,
        _ => false,
    }
}

/// Unmounts the tmpfs volumes of a pod (memory-backed emptyDirs, secrets, projected and
/// downward API volumes: the mount roots directly under their plugin directories), so its
/// directory can be removed. Nothing else under the pod is unmounted.
fn unmount_memory_volumes(pod_dir: &Path) -> Result<(), VolumeError> {
    let plugins = [
        EMPTY_DIR_PLUGIN_DIR,
        ApiVolumeKind::Secret.plugin_dir(),
        ApiVolumeKind::Projected.plugin_dir(),
        ApiVolumeKind::DownwardApi.plugin_dir(),
    ];
    for plugin in plugins {
        let volumes = pod_dir.join(plugin);
        let entries = match fs::read_dir(&volumes) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("volumes", &volumes, e)),
        };
        for entry in entries {
            let path = entry.map_err(|e| io_err("volumes", &volumes, e))?.path();
            if is_mount_point(&path) {
                nix::mount::umount2(&path, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW)
                    .map_err(|errno| nix_err("volumes", &path, errno))?;
            }
        }
    }
    Ok(())
}

/// The hostPath type check, as upstream `checkTypeInternal`: the *OrCreate kinds create what is
/// missing (a directory with parents, 0755; an empty 0644 file whose parent must exist), the
/// others require an existing path of that kind (symlinks followed, as on the host); a missing
/// path is "not a directory" (or file, ...) as upstream says.
fn check_host_path(field: &str, path: &Path, kind: HostPathType) -> Result<(), VolumeError> {
    let type_err = |what: &str| {
        Err(VolumeError::SetUp {
            // `setup_volume` names the volume.
            volume: String::new(),
            reason: format!(
                "hostPath type check failed: {} is not a {what}",
                path.display()
            ),
        })
    };
    let meta = match fs::metadata(path) {
        Ok(meta) => Some(meta),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(source) => return Err(io_err(field, path, source)),
    };
    let want = |ok: bool, what: &str| if ok { Ok(()) } else { type_err(what) };
    match (kind, meta) {
        (HostPathType::Unchecked, _) => Ok(()),
        (HostPathType::DirectoryOrCreate, None) => {
            fs::create_dir_all(path).map_err(|source| io_err(field, path, source))?;
            set_mode(path, HOSTPATH_DIR_MODE, field)
        }
        (HostPathType::FileOrCreate, None) => {
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .map_err(|source| io_err(field, path, source))?;
            set_mode(path, HOSTPATH_FILE_MODE, field)
        }
        (HostPathType::Directory, None) => type_err("directory"),
        (HostPathType::File, None) => type_err("file"),
        (HostPathType::Socket, None) => type_err("socket file"),
        (HostPathType::CharDevice, None) => type_err("character device"),
        (HostPathType::BlockDevice, None) => type_err("block device"),
        (HostPathType::DirectoryOrCreate | HostPathType::Directory, Some(m)) => {
            want(m.is_dir(), "directory")
        }
        (HostPathType::FileOrCreate | HostPathType::File, Some(m)) => want(m.is_file(), "file"),
        (HostPathType::Socket, Some(m)) => want(m.file_type().is_socket(), "socket file"),
        (HostPathType::CharDevice, Some(m)) => {
            want(m.file_type().is_char_device(), "character device")
        }
        (HostPathType::BlockDevice, Some(m)) => {
            want(m.file_type().is_block_device(), "block device")
        }
    }
}

/// The host path of a mount: the volume root, or the private bind mount of its subPath.
fn mount_host_path(planned: &PlannedMount, pod_dir: &Path) -> Result<PathBuf, VolumeError> {
    let root = match &planned.source {
        MountSource::Host(path) => path.clone(),
        MountSource::PodDir(rel) => pod_dir.join(rel),
    };
    let Some(sub) = planned.sub_path.as_ref() else {
        return Ok(root);
    };
    let field = format!("{}.subPath", planned.field);
    subpath::bind_sub_path(
        &root,
        sub,
        pod_dir,
        &field,
        subpath::Resolver::for_this_kernel(),
    )
}

fn is_kind(stat: &FileStat, kind: SFlag) -> bool {
    SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits()) == kind
}

/// Removes a pod directory and everything in it (emptyDirs, subPath binds, hosts file,
/// termination files) without following symlinks (a link is removed, never its target) and
/// without descending into another filesystem: the subPath binds and memory emptyDirs are
/// unmounted first, then a directory on a different device (a mount point) stops the cleanup
/// with an error, leaving it in place. A missing directory is fine.
pub fn cleanup_pod_dir(pod_dir: &Path) -> Result<(), VolumeError> {
    let cleanup = |reason: String| VolumeError::Cleanup {
        path: pod_dir.into(),
        reason,
    };
    match fs::symlink_metadata(pod_dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(cleanup(e.to_string())),
        Ok(meta) if !meta.is_dir() => return Err(cleanup("not a directory".into())),
        Ok(_) => {}
    }
    subpath::unmount_sub_paths(pod_dir)?;
    unmount_memory_volumes(pod_dir)?;
    let fd = nix::fcntl::open(
        pod_dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| cleanup(e.to_string()))?;
    let dev = fstat(&fd).map_err(|e| cleanup(e.to_string()))?.st_dev;
    remove_contents(fd, dev, pod_dir)?;
    fs::remove_dir(pod_dir).map_err(|e| cleanup(e.to_string()))
}

fn remove_contents(dir_fd: OwnedFd, dev: u64, path: &Path) -> Result<(), VolumeError> {
    let cleanup = |at: &Path, reason: String| VolumeError::Cleanup {
        path: at.into(),
        reason,
    };
    let mut dir = nix::dir::Dir::from_fd(dir_fd).map_err(|e| cleanup(path, e.to_string()))?;
    let mut names: Vec<CString> = Vec::new();
    for entry in dir.iter() {
        let entry = entry.map_err(|e| cleanup(path, e.to_string()))?;
        let name = entry.file_name();
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            names.push(name.to_owned());
        }
    }
    for name in names {
        let child = path.join(OsStr::from_bytes(name.to_bytes()));
        let stat = fstatat(
            dir.as_fd(),
            name.as_c_str(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| cleanup(&child, e.to_string()))?;
        if is_kind(&stat, SFlag::S_IFDIR) {
            if stat.st_dev != dev {
                return Err(cleanup(&child, "a mount point (another filesystem)".into()));
            }
            let child_fd = openat(
                dir.as_fd(),
                name.as_c_str(),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| cleanup(&child, e.to_string()))?;
            remove_contents(child_fd, dev, &child)?;
            unlinkat(dir.as_fd(), name.as_c_str(), UnlinkatFlags::RemoveDir)
                .map_err(|e| cleanup(&child, e.to_string()))?;
        } else {
            unlinkat(dir.as_fd(), name.as_c_str(), UnlinkatFlags::NoRemoveDir)
                .map_err(|e| cleanup(&child, e.to_string()))?;
        }
    }
    Ok(())
}

pub mod atomic_writer;
mod subpath;

#[cfg(test)]
mod tests;
