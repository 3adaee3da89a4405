//! subPaths, resolved so that a container sharing the volume cannot redirect them (the class of
//! CVE-2017-1002101 and CVE-2021-25741), as upstream's `subpath_linux.go` in spirit:
//!
//! 1. The subPath is opened beneath the volume root: `openat2(RESOLVE_BENEATH |
//!    RESOLVE_NO_MAGICLINKS)`, which follows symlinks only while they stay inside the volume
//!    (a ConfigMap key is `key -> ..data/key`, and `subPath: key` is the usual way to mount one
//!    file of it). Missing directories are created and refusals get the component named by a
//!    walk of `openat(O_NOFOLLOW)` one component at a time, each relative to the directory
//!    opened before it, which follows no symlink at all; kernels without `openat2` (ENOSYS) get
//!    only the walk.
//! 2. The open file itself (`/proc/self/fd/<n>`), not its path, is bind-mounted onto a private
//!    path in the pod directory, `volume-subpaths/<volume>/<container>/<mount index>`, and the
//!    mount is checked to show that very inode.
//! 3. The runtime mounts the private path. Swapping a component for a symlink after step 1
//!    changes nothing: the file opened is the file mounted.
//!
//! A container restart replaces the bind (a stale one from before a reboot is simply gone); the
//! binds of a pod are unmounted before its directory is removed.

use std::ffi::{CString, OsStr};
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat, openat2};
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{Mode, SFlag, fchmod, fstat, fstatat, mkdirat};

use super::{POD_DIR_MODE, VolumeError, create_dir_with_mode, is_kind, nix_err};
use crate::runtime_spec::volumes::{SUBPATHS_DIR, SubPath};

/// How a subPath is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Resolver {
    /// `openat2` beneath the volume root; the component walk to create missing directories, to
    /// name the component of a refusal, and on kernels without `openat2`.
    Openat2,
    /// The component walk only (what a kernel without `openat2` gets).
    Walk,
}

/// Set once `openat2` answered ENOSYS (a kernel before 5.6, or a seccomp filter that hides it).
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

impl Resolver {
    /// `Openat2` until the kernel has said it lacks it.
    pub(super) fn for_this_kernel() -> Self {
        if NO_OPENAT2.load(Ordering::Relaxed) {
            Resolver::Walk
        } else {
            Resolver::Openat2
        }
    }
}

/// More mounts stacked on one bind path than this are not ours to peel off.
const MAX_STACKED_MOUNTS: usize = 16;
const BIND_FILE_MODE: u32 = 0o640;

/// Opens `sub.path` beneath `root`, bind-mounts it onto `<pod_dir>/<sub.bind>` (replacing a
/// previous bind there) and returns that path, the one the runtime mounts into the container.
/// `field` names the volumeMount's subPath in errors.
pub(super) fn bind_sub_path(
    root: &Path,
    sub: &SubPath,
    pod_dir: &Path,
    field: &str,
    resolver: Resolver,
) -> Result<PathBuf, VolumeError> {
    let full = root.join(&sub.path);
    let opened = open_sub_path(root, &sub.path, field, resolver)?;
    let want = fstat(&opened).map_err(|e| nix_err(field, &full, e))?;
    let target = pod_dir.join(&sub.bind);
    let mut dir = pod_dir.to_path_buf();
    for part in sub.bind.parent().into_iter().flat_map(Path::components) {
        dir.push(part);
        create_dir_with_mode(&dir, POD_DIR_MODE, field)?;
    }
    let mount_err = |source: io::Error| VolumeError::SubPathMount {
        field: field.into(),
        path: full.clone(),
        target: target.clone(),
        source,
    };
    unmount_all(&target).map_err(|e| mount_err(e.into()))?;
    prepare_target(&target, is_kind(&want, SFlag::S_IFDIR)).map_err(mount_err)?;
    // The magic link names the open file, whatever its path has become since.
    let source = format!("/proc/self/fd/{}", opened.as_raw_fd());
    nix::mount::mount(
        Some(source.as_str()),
        &target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| mount_err(e.into()))?;
    let got = fs::symlink_metadata(&target).map(|m| (m.dev(), m.ino()));
    if got.ok() != Some((want.st_dev, want.st_ino)) {
        let _ = unmount_all(&target);
        return Err(VolumeError::SubPathChanged {
            field: field.into(),
            path: full,
            target,
        });
    }
    Ok(target)
}

/// Opens `sub` beneath `root` (an `O_PATH` descriptor, or a directory's) without leaving it
/// through a symlink, creating missing directories with the mode of the volume root (as upstream
/// `SafeMakeDir`; a missing last component becomes a directory too). The root itself may be a
/// symlink (a hostPath such as `/var/run`); nothing beneath it may.
pub(super) fn open_sub_path(
    root: &Path,
    sub: &Path,
    field: &str,
    resolver: Resolver,
) -> Result<OwnedFd, VolumeError> {
    let full = root.join(sub);
    let parts: Vec<&OsStr> = sub
        .components()
        .map(|c| match c {
            Component::Normal(part) => Ok(part),
            _ => Err(VolumeError::SubPathNotDirectory {
                field: field.into(),
                path: full.clone(),
                component: format!("{c:?}"),
            }),
        })
        .collect::<Result<_, _>>()?;
    let root_fd = nix::fcntl::open(
        root,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| nix_err(field, root, e))?;
    if parts.is_empty() {
        return Ok(root_fd);
    }
    if resolver == Resolver::Openat2 {
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        match openat2(&root_fd, sub, how) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOSYS) => NO_OPENAT2.store(true, Ordering::Relaxed),
            // No openat2 (before 5.6); something missing (to create); a symlink, `..` or a
            // non-directory on the way (the walk names the component). The walk is as safe,
            // only slower.
            Err(Errno::ENOENT | Errno::ELOOP | Errno::EXDEV | Errno::ENOTDIR) => {}
            Err(e) => return Err(nix_err(field, &full, e)),
        }
    }
    walk(root_fd, &parts, &full, field)
}

/// The component walk: each component is looked at and opened relative to the directory opened
/// before it, with `O_NOFOLLOW`, so no symlink is followed however the tree changes meanwhile.
fn walk(root: OwnedFd, parts: &[&OsStr], full: &Path, field: &str) -> Result<OwnedFd, VolumeError> {
    let root_mode = fstat(&root).map_err(|e| nix_err(field, full, e))?.st_mode & 0o7777;
    let symlink = |part: &OsStr| VolumeError::SubPathSymlink {
        field: field.into(),
        path: full.to_path_buf(),
        component: part.to_string_lossy().into_owned(),
    };
    let not_dir = |part: &OsStr| VolumeError::SubPathNotDirectory {
        field: field.into(),
        path: full.to_path_buf(),
        component: part.to_string_lossy().into_owned(),
    };
    let mut dir = root;
    for (index, part) in parts.iter().copied().enumerate() {
        let last = index + 1 == parts.len();
        let stat = match fstatat(&dir, part, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => Some(stat),
            Err(Errno::ENOENT) => None,
            Err(e) => return Err(nix_err(field, full, e)),
        };
        match stat {
            Some(stat) if is_kind(&stat, SFlag::S_IFLNK) => return Err(symlink(part)),
            Some(stat) if !is_kind(&stat, SFlag::S_IFDIR) => {
                if !last {
                    return Err(not_dir(part));
                }
                // Any kind of file may be mounted; O_PATH opens none of them (no FIFO
                // blocking, no device opened). With O_NOFOLLOW a symlink swapped in since the
                // look is opened as itself, and refused.
                let fd = openat(
                    &dir,
                    part,
                    OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| nix_err(field, full, e))?;
                let stat = fstat(&fd).map_err(|e| nix_err(field, full, e))?;
                if is_kind(&stat, SFlag::S_IFLNK) {
                    return Err(symlink(part));
                }
                return Ok(fd);
            }
            Some(_) => {}
            None => match mkdirat(&dir, part, Mode::from_bits_truncate(root_mode)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(nix_err(field, full, e)),
            },
        }
        let next = openat(
            &dir,
            part,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::ELOOP => symlink(part),
            // O_DIRECTORY may win over O_NOFOLLOW: a symlink swapped in since the look.
            Errno::ENOTDIR => match fstatat(&dir, part, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(stat) if is_kind(&stat, SFlag::S_IFLNK) => symlink(part),
                _ => not_dir(part),
            },
            e => nix_err(field, full, e),
        })?;
        if stat.is_none() {
            fchmod(&next, Mode::from_bits_truncate(root_mode))
                .map_err(|e| nix_err(field, full, e))?;
        }
        dir = next;
    }
    Ok(dir)
}

/// Makes `target` an unmounted directory (`dir`) or regular file to mount on, replacing one of
/// the other kind (the subPath changed kind since the last bind).
fn prepare_target(target: &Path, dir: bool) -> io::Result<()> {
    match fs::symlink_metadata(target) {
        Ok(meta) if dir && meta.is_dir() => return Ok(()),
        Ok(meta) if !dir && meta.is_file() => return Ok(()),
        Ok(meta) if meta.is_dir() => fs::remove_dir(target)?,
        Ok(_) => fs::remove_file(target)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if dir {
        fs::DirBuilder::new().mode(POD_DIR_MODE).create(target)
    } else {
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(BIND_FILE_MODE)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(target)
            .map(drop)
    }
}

/// Unmounts everything mounted on `path` (its last component not followed), stacked mounts
/// included; fine if nothing is mounted there or it does not exist.
fn unmount_all(path: &Path) -> Result<(), Errno> {
    for _ in 0..MAX_STACKED_MOUNTS {
        match nix::mount::umount2(path, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
            Ok(()) => {}
            // Not a mount point (any more).
            Err(Errno::EINVAL | Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Err(Errno::EBUSY)
}

/// Unmounts the subPath binds of a pod (`<pod_dir>/volume-subpaths/*/*/*`), so its directory
/// can be removed. Every directory on the way is opened with `O_NOFOLLOW` and each bind is
/// unmounted through its directory's descriptor, so no symlink leads the unmount elsewhere.
pub(super) fn unmount_sub_paths(pod_dir: &Path) -> Result<(), VolumeError> {
    let root = pod_dir.join(SUBPATHS_DIR);
    let dir = match open_dir_nofollow(None, root.as_os_str()) {
        Ok(dir) => dir,
        Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => return Ok(()),
        Err(e) => return Err(cleanup_err(&root, e)),
    };
    // <volume>/<container>/<mount index>
    unmount_below(&dir, &root, 2)
}

fn unmount_below(dir: &OwnedFd, path: &Path, depth: usize) -> Result<(), VolumeError> {
    for name in entry_names(dir).map_err(|e| cleanup_err(path, e))? {
        let name = OsStr::from_bytes(name.to_bytes());
        let child = path.join(name);
        if depth == 0 {
            let through_fd = Path::new("/proc/self/fd")
                .join(dir.as_raw_fd().to_string())
                .join(name);
            unmount_all(&through_fd).map_err(|e| cleanup_err(&child, e))?;
            continue;
        }
        match open_dir_nofollow(Some(dir.as_fd()), name) {
            Ok(sub) => unmount_below(&sub, &child, depth - 1)?,
            // Not a directory: nothing of ours is mounted below it.
            Err(Errno::ENOTDIR | Errno::ELOOP | Errno::ENOENT) => {}
            Err(e) => return Err(cleanup_err(&child, e)),
        }
    }
    Ok(())
}

fn open_dir_nofollow(at: Option<BorrowedFd<'_>>, name: &OsStr) -> Result<OwnedFd, Errno> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    match at {
        Some(at) => openat(at, name, flags, Mode::empty()),
        None => nix::fcntl::open(name, flags, Mode::empty()),
    }
}

fn entry_names(dir: &OwnedFd) -> Result<Vec<CString>, Errno> {
    let mut listing = nix::dir::Dir::from_fd(
        dir.try_clone()
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(nix::libc::EIO)))?,
    )?;
    let mut names = Vec::new();
    for entry in listing.iter() {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

fn cleanup_err(path: &Path, errno: Errno) -> VolumeError {
    VolumeError::Cleanup {
        path: path.into(),
        reason: format!("unmounting subPath bind mounts: {errno}"),
    }
}

#[cfg(test)]
mod tests;
