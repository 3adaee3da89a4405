//! Measuring the pods' local storage for [`super::local_storage`] and `/stats/summary`:
//!
//! - each emptyDir volume (`<root dir>/pods/<uid>/volumes/kubernetes.io~empty-dir/<name>`) is
//!   walked like `du -x`: the blocks allocated and the inodes of everything beneath, without
//!   following symlinks and without entering another filesystem (a memory-backed emptyDir is
//!   its own tmpfs, walked as such), hard links counted once;
//! - the containers' writable layers come from the runtime's container stats, their log files
//!   from the pod logs directory ([`fs_net::log_usage`]).
//!
//! The walk is synchronous: callers run it on a blocking thread.

use std::collections::{BTreeMap, HashSet};
use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use k8s_openapi::api::core::v1::Pod;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};

use super::local_storage::{ContainerStorage, PodStorage, VolumeUsage};
use crate::kubelet_api::fs_net::{self, Usage};
use crate::kubelet_api::stats::ContainerSample;
use crate::runtime_spec::volumes::EMPTY_DIR_PLUGIN_DIR;

/// Why a walk failed (its root could not be opened; entries vanishing beneath are skipped).
#[derive(Debug, thiserror::Error)]
#[error("measuring {path}: {source}")]
pub struct WalkError {
    pub path: PathBuf,
    #[source]
    pub source: Errno,
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

fn is_dir(stat: &FileStat) -> bool {
    SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

fn allocated(stat: &FileStat) -> u64 {
    u64::try_from(stat.st_blocks)
        .unwrap_or(0)
        .saturating_mul(512)
}

/// The blocks (in bytes) and inodes used beneath `root`, `root` included, on `root`'s own
/// filesystem. Symlinks are counted, never followed; a hard-linked file counts once.
pub fn dir_usage(root: &Path) -> Result<Usage, WalkError> {
    let error = |source| WalkError {
        path: root.to_path_buf(),
        source,
    };
    let fd = nix::fcntl::open(root, DIR_FLAGS, Mode::empty()).map_err(error)?;
    let stat = fstat(&fd).map_err(error)?;
    let dev = stat.st_dev;
    let mut total = Usage {
        bytes: allocated(&stat),
        inodes: 1,
    };
    let mut seen: HashSet<u64> = HashSet::new();
    // Directories still to read, each opened from its parent when its turn comes; a parent
    // stays open while any of its children waits.
    let mut pending: Vec<(Rc<OwnedFd>, CString)> = Vec::new();
    let mut current = Some(Rc::new(fd));
    loop {
        if let Some(dir_fd) = current.take() {
            for (name, stat) in entries(&dir_fd) {
                if stat.st_dev != dev {
                    // A mount point: another filesystem's usage.
                    continue;
                }
                if !is_dir(&stat) && stat.st_nlink > 1 && !seen.insert(stat.st_ino) {
                    continue;
                }
                total = total
                    + Usage {
                        bytes: allocated(&stat),
                        inodes: 1,
                    };
                if is_dir(&stat) {
                    pending.push((dir_fd.clone(), name));
                }
            }
        }
        let Some((parent, name)) = pending.pop() else {
            return Ok(total);
        };
        // A directory removed or replaced since it was listed is skipped.
        if let Ok(fd) = openat(parent.as_fd(), name.as_c_str(), DIR_FLAGS, Mode::empty())
            && fstat(&fd).is_ok_and(|s| s.st_dev == dev)
        {
            current = Some(Rc::new(fd));
        }
    }
}

/// The entries of a directory (not `.`/`..`) with their `lstat`; entries that vanish or
/// cannot be read are left out.
fn entries(dir_fd: &OwnedFd) -> Vec<(CString, FileStat)> {
    let Ok(duplicate) = dir_fd.try_clone() else {
        return Vec::new();
    };
    let Ok(mut dir) = nix::dir::Dir::from_fd(duplicate) else {
        return Vec::new();
    };
    let names: Vec<CString> = dir
        .iter()
        .flatten()
        .map(|e| e.file_name().to_owned())
        .filter(|n| n.to_bytes() != b"." && n.to_bytes() != b"..")
        .collect();
    names
        .into_iter()
        .filter_map(|name| {
            let stat = fstatat(
                dir_fd.as_fd(),
                name.as_c_str(),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .ok()?;
            Some((name, stat))
        })
        .collect()
}

/// The directory of a pod's emptyDir volume.
pub fn empty_dir_path(root_dir: &Path, uid: &str, volume: &str) -> PathBuf {
    root_dir
        .join("pods")
        .join(uid)
        .join(EMPTY_DIR_PLUGIN_DIR)
        .join(volume)
}

/// Each emptyDir volume of `pod` that exists on disk: its use and whether it is a tmpfs.
pub fn empty_dirs(root_dir: &Path, pod: &Pod) -> BTreeMap<String, VolumeUsage> {
    let Some(uid) = pod.metadata.uid.as_deref() else {
        return BTreeMap::new();
    };
    pod.spec
        .iter()
        .flat_map(|s| &s.volumes)
        .flatten()
        .filter_map(|volume| {
            let empty_dir = volume.empty_dir.as_ref()?;
            let path = empty_dir_path(root_dir, uid, &volume.name);
            match dir_usage(&path) {
                Ok(used) => Some((
                    volume.name.clone(),
                    VolumeUsage {
                        used,
                        memory: empty_dir.medium.as_deref() == Some("Memory"),
                    },
                )),
                Err(err) => {
                    tracing::debug!(err = %super::chain(&err), "emptyDir not measured");
                    None
                }
            }
        })
        .collect()
}

/// The latest instance's writable layer of each container, by (pod UID, container name).
pub fn writable_layers(samples: &[ContainerSample]) -> BTreeMap<(String, String), Usage> {
    let mut ordered: Vec<&ContainerSample> = samples.iter().collect();
    ordered.sort_by_key(|c| c.attempt);
    ordered
        .into_iter()
        .filter_map(|c| Some(((c.pod_uid.clone(), c.name.clone()), c.rootfs?)))
        .collect()
}

/// The pods' local storage (pure): their emptyDirs as measured (by pod UID), writable layers
/// and logs by (pod UID, container name). Every pod of `pods` gets an entry; a container is
/// listed once it has a layer or logs.
pub fn pod_storage(
    pods: &[&Pod],
    mut volumes: BTreeMap<String, BTreeMap<String, VolumeUsage>>,
    layers: &BTreeMap<(String, String), Usage>,
    logs: &BTreeMap<(String, String), Usage>,
) -> BTreeMap<String, PodStorage> {
    pods.iter()
        .filter_map(|pod| {
            let uid = pod.metadata.uid.clone()?;
            let mut storage = PodStorage {
                volumes: volumes.remove(&uid).unwrap_or_default(),
                ..PodStorage::default()
            };
            let names = pod
                .spec
                .iter()
                .flat_map(|s| {
                    s.containers
                        .iter()
                        .chain(s.init_containers.iter().flatten())
                })
                .map(|c| c.name.clone());
            for name in names {
                let key = (uid.clone(), name.clone());
                let container = ContainerStorage {
                    rootfs: layers.get(&key).copied(),
                    logs: logs.get(&key).copied(),
                };
                if container.rootfs.is_some() || container.logs.is_some() {
                    storage.containers.insert(name, container);
                }
            }
            Some((uid, storage))
        })
        .collect()
}

/// Measures the local storage of `pods` (blocking: walks their emptyDirs and log files).
pub fn measure(
    root_dir: &Path,
    pod_logs_dir: &Path,
    pods: &[Pod],
    samples: &[ContainerSample],
) -> BTreeMap<String, PodStorage> {
    let volumes = pods
        .iter()
        .filter_map(|pod| Some((pod.metadata.uid.clone()?, empty_dirs(root_dir, pod))))
        .collect();
    let refs: Vec<&Pod> = pods.iter().collect();
    pod_storage(
        &refs,
        volumes,
        &writable_layers(samples),
        &fs_net::log_usage(pod_logs_dir),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EmptyDirVolumeSource, Volume};

    #[test]
    fn a_walk_counts_blocks_and_inodes_without_following_links() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("big"), vec![1u8; 4 << 20]).unwrap();
        let dir = root.path().join("vol");
        std::fs::create_dir_all(dir.join("a/b/c")).unwrap();
        std::fs::write(dir.join("a/b/c/data"), vec![1u8; 1 << 20]).unwrap();
        std::fs::write(dir.join("small"), b"x").unwrap();
        std::fs::hard_link(dir.join("small"), dir.join("a/same")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("big"), dir.join("a/file-link")).unwrap();
        let usage = dir_usage(&dir).unwrap();
        // vol, a, b, c, data, small (linked twice), two symlinks.
        assert_eq!(usage.inodes, 8, "{usage:?}");
        assert!(usage.bytes >= 1 << 20, "{usage:?}");
        assert!(
            usage.bytes < 2 << 20,
            "the links were not followed: {usage:?}"
        );
        assert!(dir_usage(&root.path().join("missing")).is_err());
        assert!(
            dir_usage(&dir.join("link")).is_err(),
            "a symlinked root is refused"
        );
    }

    #[test]
    fn a_walk_stays_on_its_filesystem() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let mount = root.path().join("mnt");
        std::fs::create_dir(&mount).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            &mount,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=8m"),
        )
        .unwrap();
        let written = std::fs::write(mount.join("f"), vec![1u8; 2 << 20]);
        let outer = dir_usage(root.path());
        let inner = dir_usage(&mount);
        nix::mount::umount(&mount).unwrap();
        written.unwrap();
        let (outer, inner) = (outer.unwrap(), inner.unwrap());
        assert_eq!(outer.inodes, 1, "the mount point is not entered: {outer:?}");
        assert!(outer.bytes < 1 << 20, "{outer:?}");
        assert_eq!(
            inner.inodes, 2,
            "a tmpfs volume is walked on its own: {inner:?}"
        );
        assert!(inner.bytes >= 2 << 20, "{inner:?}");
    }

    #[test]
    fn pods_get_their_volumes_layers_and_logs() {
        let root = tempfile::tempdir().unwrap();
        let mut pod = kwk_api::pod::testing::pod("u1", &[("main", "", "")]);
        if let Some(spec) = pod.spec.as_mut() {
            spec.volumes = Some(vec![
                Volume {
                    name: "scratch".into(),
                    empty_dir: Some(EmptyDirVolumeSource::default()),
                    ..Volume::default()
                },
                Volume {
                    name: "not-set-up".into(),
                    empty_dir: Some(EmptyDirVolumeSource::default()),
                    ..Volume::default()
                },
            ]);
        }
        let dir = empty_dir_path(root.path(), "u1", "scratch");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("f"), vec![1u8; 64 << 10]).unwrap();
        let volumes = empty_dirs(root.path(), &pod);
        assert_eq!(volumes.len(), 1);
        assert!(volumes["scratch"].used.bytes >= 64 << 10);
        assert!(!volumes["scratch"].memory);

        let key = ("u1".to_string(), "main".to_string());
        let usage = |bytes| Usage { bytes, inodes: 1 };
        let layers = BTreeMap::from([(key.clone(), usage(100))]);
        let logs = BTreeMap::from([(key, usage(10))]);
        let storage = pod_storage(
            &[&pod],
            BTreeMap::from([("u1".to_string(), volumes)]),
            &layers,
            &logs,
        );
        let main = storage["u1"].containers["main"];
        assert_eq!(main.rootfs, Some(usage(100)));
        assert_eq!(main.logs, Some(usage(10)));
        assert!(storage["u1"].ephemeral().bytes >= (64 << 10) + 110);
    }

    #[test]
    fn the_latest_attempt_has_the_layer() {
        let sample = |attempt, bytes| ContainerSample {
            pod_uid: "u".into(),
            name: "c".into(),
            attempt,
            rootfs: Some(Usage { bytes, inodes: 1 }),
            ..ContainerSample::default()
        };
        let layers = writable_layers(&[sample(2, 20), sample(1, 10)]);
        assert_eq!(layers[&("u".to_string(), "c".to_string())].bytes, 20);
    }
}
