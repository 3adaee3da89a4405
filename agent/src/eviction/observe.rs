//! Reading the signals and pod usage from the host and the runtime.
//!
//! - `memory.available`: capacity − working set of the root cgroup, as upstream
//!   ([`crate::cgroups::node_memory`], which says why not `MemAvailable`).
//! - `nodefs.*`: the filesystem of kwk-node's root dir (`statvfs`: blocks available to
//!   unprivileged users, free inodes).
//! - `imagefs.*`: the runtime's image filesystem (`ImageFsInfo`'s mountpoint); when it is the
//!   nodefs' filesystem (same device), the nodefs figures, as upstream does without a dedicated
//!   image filesystem.
//! - `pid.available`: `min(pid_max, threads-max)` less the threads running (/proc/loadavg).
//! - Pods: each container's memory working set and writable layer from the runtime
//!   (`ListContainerStats`), summed per pod; their local storage (emptyDirs, writable layers,
//!   logs) through [`super::disk_usage`].

use std::collections::BTreeMap;
use std::future::Future;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;
use kwk_cri::CriClient;

use super::local_storage::PodStorage;
use super::plan::{Observation, Observations};
use super::rank::PodUsage;
use super::signals::Signal;
use crate::cgroups::node_memory::{NodeMemory, NodeMemorySource};
use crate::kubelet_api::fs_net;

/// Where the node's signals are read.
#[derive(Debug, Clone)]
pub struct NodeObserver {
    pub root_dir: PathBuf,
    /// The runtime's image filesystem mountpoint, when known.
    pub image_fs: Option<PathBuf>,
    /// Where the node's memory figures are read.
    pub memory: NodeMemorySource,
}

impl NodeObserver {
    /// Reads every signal that can be read now (a few small files and two `statvfs`).
    pub fn observe(&self) -> Observations {
        observations(
            self.memory.read(),
            pid_usage(),
            fs_net::statvfs(&self.root_dir),
            self.dedicated_image_fs().and_then(|p| fs_net::statvfs(&p)),
        )
    }

    /// The image filesystem when it is not the root dir's.
    pub fn dedicated_image_fs(&self) -> Option<PathBuf> {
        let image_fs = self.image_fs.as_ref()?;
        let device = |p: &Path| std::fs::metadata(p).ok().map(|m| m.dev());
        match (device(&self.root_dir), device(image_fs)) {
            (Some(a), Some(b)) if a != b => Some(image_fs.clone()),
            _ => None,
        }
    }
}

/// The observations from the host's figures (pure); `image_fs` only when dedicated.
pub fn observations(
    memory: Option<NodeMemory>,
    pids: Option<(u64, u64)>,
    node_fs: Option<fs_net::FsSample>,
    image_fs: Option<fs_net::FsSample>,
) -> Observations {
    let mut result = Observations::new();
    if let Some(memory) = memory {
        result.insert(
            Signal::MemoryAvailable,
            Observation {
                available: memory.available(),
                capacity: memory.capacity,
            },
        );
    }
    if let Some((limit, running)) = pids {
        result.insert(
            Signal::PidAvailable,
            Observation {
                available: limit.saturating_sub(running),
                capacity: limit,
            },
        );
    }
    let mut filesystem = |fs: Option<fs_net::FsSample>, bytes: Signal, inodes: Signal| {
        if let Some(fs) = fs {
            result.insert(
                bytes,
                Observation {
                    available: fs.available_bytes,
                    capacity: fs.capacity_bytes,
                },
            );
            result.insert(
                inodes,
                Observation {
                    available: fs.inodes_free,
                    capacity: fs.inodes,
                },
            );
        }
    };
    filesystem(node_fs, Signal::NodeFsAvailable, Signal::NodeFsInodesFree);
    filesystem(
        image_fs.or(node_fs),
        Signal::ImageFsAvailable,
        Signal::ImageFsInodesFree,
    );
    result
}

/// The number of threads of a /proc/loadavg text (`0.00 0.01 0.05 1/234 5678`: 234).
fn threads_running(loadavg: &str) -> Option<u64> {
    loadavg
        .split_whitespace()
        .nth(3)?
        .split_once('/')?
        .1
        .parse()
        .ok()
}

/// The node's PID limit (`min(pid_max, threads-max)`, as upstream's rlimit) and the threads
/// running now (/proc/loadavg), when both can be read.
pub fn pid_usage() -> Option<(u64, u64)> {
    let number =
        |path: &str| -> Option<u64> { std::fs::read_to_string(path).ok()?.trim().parse().ok() };
    let limit = match (
        number("/proc/sys/kernel/pid_max"),
        number("/proc/sys/kernel/threads-max"),
    ) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let loadavg = std::fs::read_to_string("/proc/loadavg").ok()?;
    limit.zip(threads_running(&loadavg))
}

/// Where pod usage comes from.
pub trait UsageSource: Send + Sync + 'static {
    /// Usage by pod UID.
    fn pod_usage(&self) -> impl Future<Output = BTreeMap<String, PodUsage>> + Send;

    /// The local storage of `pods` by pod UID, for [`super::local_storage`] (`None`: not
    /// measured, nothing is checked).
    fn pod_storage(
        &self,
        pods: Vec<Pod>,
    ) -> impl Future<Output = Option<BTreeMap<String, PodStorage>>> + Send {
        drop(pods);
        std::future::ready(None)
    }
}

/// Pod usage from the runtime's container stats; local storage also from the pods' emptyDirs
/// under `root_dir` and their logs under `pod_logs_dir`.
#[derive(Debug, Clone)]
pub struct CriUsage {
    pub cri: CriClient,
    pub root_dir: PathBuf,
    pub pod_logs_dir: PathBuf,
    /// `localStorageCapacityIsolation`: off, local storage is not measured (nor checked).
    pub local_storage: bool,
}

impl UsageSource for CriUsage {
    async fn pod_storage(&self, pods: Vec<Pod>) -> Option<BTreeMap<String, PodStorage>> {
        if !self.local_storage {
            return None;
        }
        if pods.is_empty() {
            return Some(BTreeMap::new());
        }
        let stats = match self.cri.list_container_stats(None).await {
            Ok(stats) => stats,
            Err(err) => {
                tracing::warn!(%err, "eviction: ListContainerStats failed; local storage not checked");
                return None;
            }
        };
        let samples = crate::kubelet_api::stats::container_samples(&stats);
        let (root_dir, logs_dir) = (self.root_dir.clone(), self.pod_logs_dir.clone());
        let measured = tokio::task::spawn_blocking(move || {
            super::disk_usage::measure(&root_dir, &logs_dir, &pods, &samples)
        })
        .await;
        match measured {
            Ok(storage) => Some(storage),
            Err(err) => {
                tracing::warn!(%err, "eviction: measuring local storage failed");
                None
            }
        }
    }

    async fn pod_usage(&self) -> BTreeMap<String, PodUsage> {
        match self.cri.list_container_stats(None).await {
            Ok(stats) => pod_usage(&crate::kubelet_api::stats::container_samples(&stats)),
            Err(err) => {
                tracing::warn!(%err, "eviction: ListContainerStats failed");
                BTreeMap::new()
            }
        }
    }
}

/// Container samples summed per pod (pure).
pub fn pod_usage(
    samples: &[crate::kubelet_api::stats::ContainerSample],
) -> BTreeMap<String, PodUsage> {
    let mut pods: BTreeMap<String, PodUsage> = BTreeMap::new();
    let add = |total: &mut Option<u64>, value: Option<u64>| {
        if let Some(v) = value {
            *total = Some(total.unwrap_or(0).saturating_add(v));
        }
    };
    for sample in samples {
        let pod = pods.entry(sample.pod_uid.clone()).or_default();
        let disk = sample.rootfs.as_ref().map(|u| u.bytes);
        add(&mut pod.memory, sample.memory_working_set_bytes);
        add(&mut pod.ephemeral_storage, disk);
        add(&mut pod.inodes, sample.rootfs.as_ref().map(|u| u.inodes));
        let container = pod.containers.entry(sample.name.clone()).or_default();
        add(&mut container.memory, sample.memory_working_set_bytes);
        add(&mut container.ephemeral_storage, disk);
    }
    pods
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet_api::stats::ContainerSample;

    #[test]
    fn parses_the_host_files() {
        assert_eq!(threads_running("0.00 0.01 0.05 1/234 5678\n"), Some(234));
        assert_eq!(threads_running(""), None);
    }

    #[test]
    fn observations_from_host_figures() {
        let memory = NodeMemory {
            capacity: 1 << 30,
            usage: 1000 << 20,
            working_set: 924 << 20,
        };
        let fs = |available, inodes_free| fs_net::FsSample {
            capacity_bytes: 1000,
            available_bytes: available,
            used_bytes: 0,
            inodes: 100,
            inodes_free,
        };
        let shared = observations(Some(memory), Some((1000, 900)), Some(fs(150, 7)), None);
        let get = |o: &Observations, s| o.get(&s).map(|o| (o.available, o.capacity));
        assert_eq!(
            get(&shared, Signal::MemoryAvailable),
            Some((100 << 20, 1 << 30))
        );
        assert_eq!(get(&shared, Signal::PidAvailable), Some((100, 1000)));
        assert_eq!(get(&shared, Signal::NodeFsAvailable), Some((150, 1000)));
        assert_eq!(get(&shared, Signal::NodeFsInodesFree), Some((7, 100)));
        assert_eq!(
            get(&shared, Signal::ImageFsAvailable),
            Some((150, 1000)),
            "no dedicated image fs: the nodefs figures"
        );
        let dedicated = observations(Some(memory), None, Some(fs(150, 7)), Some(fs(900, 50)));
        assert_eq!(get(&dedicated, Signal::ImageFsAvailable), Some((900, 1000)));
        assert_eq!(get(&dedicated, Signal::ImageFsInodesFree), Some((50, 100)));
        assert_eq!(get(&dedicated, Signal::PidAvailable), None);
        assert!(observations(None, None, None, None).is_empty());
    }

    #[test]
    fn this_host_is_observed() {
        let observer = NodeObserver {
            root_dir: "/".into(),
            image_fs: Some("/".into()),
            memory: NodeMemorySource::detect(Path::new("/sys/fs/cgroup")),
        };
        let observed = observer.observe();
        for signal in Signal::ALL {
            assert!(observed.contains_key(&signal), "{signal}");
        }
        assert_eq!(
            observed[&Signal::ImageFsAvailable].capacity,
            observed[&Signal::NodeFsAvailable].capacity
        );
    }

    #[test]
    fn container_samples_sum_per_pod() {
        let sample = |uid: &str, name: &str, memory: u64, disk: u64| ContainerSample {
            pod_uid: uid.into(),
            name: name.into(),
            memory_working_set_bytes: Some(memory),
            rootfs: Some(fs_net::Usage {
                bytes: disk,
                inodes: 1,
            }),
            ..ContainerSample::default()
        };
        let usage = pod_usage(&[
            sample("a", "one", 10, 1),
            sample("a", "two", 20, 2),
            sample("b", "one", 5, 0),
        ]);
        assert_eq!(usage["a"].memory, Some(30));
        assert_eq!(usage["a"].ephemeral_storage, Some(3));
        assert_eq!(usage["a"].inodes, Some(2));
        assert_eq!(usage["a"].containers["two"].memory, Some(20));
        assert_eq!(usage["b"].memory, Some(5));
    }
}
