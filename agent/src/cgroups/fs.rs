//! File-level cgroup operations shared by v1 and v2: version detection, reads and writes with the
//! path in every error, and removal of a cgroup subtree (kill what is left, then rmdir leaf
//! first, a few times over).
//!
//! The same code runs on a real cgroup filesystem and on a plain directory tree standing in for
//! one (tests). The one difference the kernel makes visible is handled explicitly: a plain
//! directory cannot be removed while it holds the control files written into it, so on a
//! filesystem that is not a cgroup filesystem its regular files are removed first.

use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::statfs::{CGROUP_SUPER_MAGIC, CGROUP2_SUPER_MAGIC, statfs};
use nix::unistd::Pid;

use super::CgroupError;

/// How many kill-then-rmdir rounds removal makes before giving up.
pub(crate) const REMOVE_ATTEMPTS: u32 = 5;
/// The wait after the first failed round; it doubles each round (10, 20, 40, 80 ms).
const FIRST_RETRY_WAIT: Duration = Duration::from_millis(10);

/// The cgroup layout found under a mount root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    /// Per-controller hierarchies (including hybrid hosts, whose cgroup2 mount at `unified`
    /// carries no controllers).
    V1,
    /// One unified hierarchy with controllers.
    V2,
}

/// v2 when the mount root itself is a cgroup2 root (`cgroup.controllers` exists), else v1.
pub(crate) fn detect_version(mount_root: &Path) -> Version {
    if mount_root.join("cgroup.controllers").is_file() {
        Version::V2
    } else {
        Version::V1
    }
}

/// Reads a control file; `None` when it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>, CgroupError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CgroupError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes a control file (creating it on a plain directory tree; the kernel's already exist).
pub(crate) fn write_value(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    })
}

/// Creates one cgroup directory; returns whether it was created now.
pub(crate) fn create_dir(path: &Path) -> Result<bool, CgroupError> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(source) => Err(CgroupError::Create {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The names of the subdirectories (child cgroups) of a cgroup; empty when it does not exist.
pub(crate) fn child_names(dir: &Path) -> Result<Vec<String>, CgroupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(CgroupError::Read {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| CgroupError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir && let Some(name) = entry.file_name().to_str() {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// The PIDs listed in a cgroup's `cgroup.procs` (none when the cgroup is gone).
pub(crate) fn read_procs(dir: &Path) -> Result<Vec<i32>, CgroupError> {
    let path = dir.join("cgroup.procs");
    let Some(text) = read_optional(&path)? else {
        return Ok(Vec::new());
    };
    Ok(text
        .split_whitespace()
        .filter_map(|word| word.parse::<i32>().ok())
        .collect())
}

/// The cgroup and all its descendants, deepest first (the order rmdir needs).
fn subtree_deepest_first(dir: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    let mut out = Vec::new();
    for name in child_names(dir)? {
        out.extend(subtree_deepest_first(&dir.join(name))?);
    }
    if dir.is_dir() {
        out.push(dir.to_path_buf());
    }
    Ok(out)
}

/// SIGKILLs every process in the subtree. Never signals this process or anything that is not a
/// positive PID (0 and negatives would address process groups).
fn kill_subtree(dirs: &[PathBuf]) -> Result<usize, CgroupError> {
    let own = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
    let mut signalled = 0;
    for dir in dirs {
        for pid in read_procs(dir)? {
            if pid <= 0 || pid == own {
                continue;
            }
            match kill(Pid::from_raw(pid), Signal::SIGKILL) {
                Ok(()) => signalled += 1,
                Err(Errno::ESRCH) => {}
                Err(source) => {
                    return Err(CgroupError::Kill {
                        pid,
                        path: dir.clone(),
                        source,
                    });
                }
            }
        }
    }
    Ok(signalled)
}

fn is_kernel_cgroupfs(dir: &Path) -> bool {
    statfs(dir).is_ok_and(|fs| {
        let kind = fs.filesystem_type();
        kind == CGROUP_SUPER_MAGIC || kind == CGROUP2_SUPER_MAGIC
    })
}

/// rmdir of one cgroup; a cgroup already gone is fine.
fn remove_cgroup_dir(dir: &Path) -> io::Result<()> {
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) if e.raw_os_error() == Some(Errno::ENOTEMPTY as i32) && !is_kernel_cgroupfs(dir) => {
            // A plain directory standing in for a cgroup: drop the control files, then rmdir.
            for entry in std::fs::read_dir(dir)? {
                let entry = entry?;
                if entry.file_type()?.is_file() {
                    std::fs::remove_file(entry.path())?;
                }
            }
            std::fs::remove_dir(dir)
        }
        Err(e) => Err(e),
    }
}

fn remove_once(cgroups: &[PathBuf]) -> Result<(), CgroupError> {
    let mut first_error = None;
    for cgroup in cgroups {
        for dir in subtree_deepest_first(cgroup)? {
            if let Err(source) = remove_cgroup_dir(&dir) {
                first_error.get_or_insert(CgroupError::Remove { path: dir, source });
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Removes the same cgroup from every hierarchy it is in (`cgroups` lists its directory in each):
/// kills the processes left in it and its descendants, then removes the directories leaf first,
/// retrying with short waits while the killed processes exit. Missing cgroups are fine.
pub(crate) fn kill_and_remove(cgroups: &[PathBuf]) -> Result<(), CgroupError> {
    let mut wait = FIRST_RETRY_WAIT;
    let mut attempt = 1;
    loop {
        let mut dirs = Vec::new();
        for cgroup in cgroups {
            dirs.extend(subtree_deepest_first(cgroup)?);
        }
        if dirs.is_empty() {
            return Ok(());
        }
        let signalled = kill_subtree(&dirs)?;
        if signalled > 0 {
            tracing::debug!(signalled, cgroup = ?cgroups.first(), "killed processes left in a cgroup");
        }
        match remove_once(cgroups) {
            Ok(()) => return Ok(()),
            Err(e) if attempt >= REMOVE_ATTEMPTS => return Err(e),
            Err(_) => {
                #[allow(
                    clippy::disallowed_methods,
                    reason = "cgroup removal is synchronous, called from blocking contexts"
                )]
                std::thread::sleep(wait);
                wait *= 2;
                attempt += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_v2_only_with_controllers_at_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(detect_version(tmp.path()), Version::V1);
        // Hybrid: the cgroup2 mount sits below the root, so the root is still v1.
        std::fs::create_dir(tmp.path().join("unified")).unwrap();
        std::fs::write(tmp.path().join("unified/cgroup.controllers"), "").unwrap();
        assert_eq!(detect_version(tmp.path()), Version::V1);
        std::fs::write(tmp.path().join("cgroup.controllers"), "cpu memory pids").unwrap();
        assert_eq!(detect_version(tmp.path()), Version::V2);
    }

    #[test]
    fn removes_a_fake_subtree_leaf_first_and_tolerates_missing() {
        let tmp = tempfile::tempdir().unwrap();
        let pod = tmp.path().join("kubepods/pod1");
        std::fs::create_dir_all(pod.join("ctr1")).unwrap();
        std::fs::write(pod.join("cpu.shares"), "2").unwrap();
        std::fs::write(pod.join("cgroup.procs"), "").unwrap();
        std::fs::write(pod.join("ctr1/cgroup.procs"), "").unwrap();
        let missing = tmp.path().join("other/pod1");
        kill_and_remove(&[pod.clone(), missing]).unwrap();
        assert!(!pod.exists());
        assert!(tmp.path().join("kubepods").is_dir());
        kill_and_remove(std::slice::from_ref(&pod)).unwrap();
    }

    #[test]
    fn reads_procs_and_children() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("b")).unwrap();
        std::fs::create_dir_all(tmp.path().join("a")).unwrap();
        std::fs::write(tmp.path().join("cgroup.procs"), "12\n 34\nx\n").unwrap();
        assert_eq!(read_procs(tmp.path()).unwrap(), [12, 34]);
        assert_eq!(child_names(tmp.path()).unwrap(), ["a", "b"]);
        assert!(child_names(&tmp.path().join("none")).unwrap().is_empty());
        assert!(read_procs(&tmp.path().join("none")).unwrap().is_empty());
    }
}
