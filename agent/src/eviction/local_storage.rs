//! Local ephemeral storage eviction, as upstream's eviction manager does it before any
//! node-pressure eviction (`localStorageEviction`): a pod is evicted, with a grace period of 0,
//! when
//!
//! 1. one of its `emptyDir` volumes uses more than its `sizeLimit`
//!    (`Usage of EmptyDir volume "NAME" exceeds the limit "LIMIT". `);
//! 2. its ephemeral storage (disk-backed emptyDirs, the containers' writable layers and logs)
//!    exceeds the pod's `ephemeral-storage` limit, its containers' limits aggregated as for
//!    scheduling (`Pod ephemeral local storage usage exceeds the total limit of containers
//!    LIMIT. `);
//! 3. a container's logs plus its writable layer (the layer only when images are not on a
//!    dedicated image filesystem, as upstream) exceed the container's `ephemeral-storage`
//!    limit (`Container NAME exceeded its local ephemeral storage limit "LIMIT". `).
//!
//! The first that applies names the pod's eviction. Pods without measured usage and critical
//! pods ([`super::rank::is_critical`]) are left alone. Pure: the figures come from
//! [`super::disk_usage`].

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

use super::Eviction;
use super::rank::{PodUsage, is_critical};
use super::signals::{Signal, bytes_quantity, count_quantity};
use crate::kubelet_api::fs_net::Usage;

/// The resource name of local ephemeral storage.
pub const EPHEMERAL_STORAGE: &str = "ephemeral-storage";

/// What one pod's local storage uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodStorage {
    /// The pod's emptyDir volumes, by volume name.
    pub volumes: BTreeMap<String, VolumeUsage>,
    /// The pod's containers, by container name.
    pub containers: BTreeMap<String, ContainerStorage>,
}

/// One emptyDir volume's use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VolumeUsage {
    pub used: Usage,
    /// `medium: Memory` (a tmpfs): not local disk, so not in the pod's ephemeral storage.
    pub memory: bool,
}

/// One container's use: its writable layer and its log files (`None`: not measured).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContainerStorage {
    pub rootfs: Option<Usage>,
    pub logs: Option<Usage>,
}

impl PodStorage {
    /// The pod's ephemeral storage: disk-backed emptyDirs, writable layers and logs.
    pub fn ephemeral(&self) -> Usage {
        let volumes = self
            .volumes
            .values()
            .filter(|v| !v.memory)
            .fold(Usage::default(), |total, v| total + v.used);
        self.containers.values().fold(volumes, |total, c| {
            total + c.rootfs.unwrap_or_default() + c.logs.unwrap_or_default()
        })
    }
}

/// Replaces, for the pods measured in `storage`, the runtime's figures in `usage` (writable
/// layers only) with what node-pressure ranking counts for the disk `signal`, as upstream:
/// `nodefs` (and `imagefs` when the images share it) counts the writable layers, the logs and
/// the disk-backed emptyDirs; with a dedicated image filesystem, `nodefs` counts the logs and
/// emptyDirs, `imagefs` the writable layers. A container's figure (for the eviction message)
/// is its writable layer plus its logs. Other signals leave `usage` as it is.
pub fn rank_disk_usage(
    usage: &mut BTreeMap<String, PodUsage>,
    storage: &BTreeMap<String, PodStorage>,
    signal: Signal,
    dedicated_image_fs: bool,
) {
    let (layers, node_files) = match signal {
        Signal::NodeFsAvailable | Signal::NodeFsInodesFree => (!dedicated_image_fs, true),
        Signal::ImageFsAvailable | Signal::ImageFsInodesFree => (true, !dedicated_image_fs),
        Signal::MemoryAvailable | Signal::PidAvailable => return,
    };
    for (uid, measured) in storage {
        let mut total = Usage::default();
        if node_files {
            total = measured
                .volumes
                .values()
                .filter(|v| !v.memory)
                .fold(total, |sum, v| sum + v.used);
        }
        let pod = usage.entry(uid.clone()).or_default();
        for (name, container) in &measured.containers {
            if layers {
                total = total + container.rootfs.unwrap_or_default();
            }
            if node_files {
                total = total + container.logs.unwrap_or_default();
            }
            if let (Some(rootfs), Some(logs)) = (container.rootfs, container.logs) {
                pod.containers
                    .entry(name.clone())
                    .or_default()
                    .ephemeral_storage = Some(rootfs.bytes + logs.bytes);
            }
        }
        pod.ephemeral_storage = Some(total.bytes);
        pod.inodes = Some(total.inodes);
    }
}

/// The pods of `pods` to evict for their local storage use (`storage` by pod UID), each with
/// its message and a grace period of 0. `dedicated_image_fs`: the writable layers live on
/// another filesystem than the node's, so they do not count against a container's limit.
pub fn plan(
    pods: &[&Pod],
    storage: &BTreeMap<String, PodStorage>,
    dedicated_image_fs: bool,
) -> Vec<Eviction> {
    pods.iter()
        .filter(|pod| !is_critical(pod))
        .filter_map(|pod| {
            let uid = pod.metadata.uid.as_deref()?;
            let used = storage.get(uid)?;
            let message = empty_dir_exceeded(pod, used)
                .or_else(|| pod_limit_exceeded(pod, used))
                .or_else(|| container_limit_exceeded(pod, used, dedicated_image_fs))?;
            Some(Eviction {
                uid: uid.to_string(),
                grace_period_seconds: 0,
                message,
            })
        })
        .collect()
}

/// A positive quantity string in bytes (rounded up), or `None`.
fn positive_bytes(quantity: &str) -> Option<u64> {
    let value = crate::quantity::parse(quantity).ok()?.value();
    u64::try_from(value).ok().filter(|v| *v > 0)
}

fn empty_dir_exceeded(pod: &Pod, used: &PodStorage) -> Option<String> {
    pod.spec
        .iter()
        .flat_map(|s| &s.volumes)
        .flatten()
        .find_map(|volume| {
            let limit = volume.empty_dir.as_ref()?.size_limit.as_ref()?;
            let bytes = positive_bytes(&limit.0)?;
            let usage = used.volumes.get(&volume.name)?;
            (usage.used.bytes > bytes).then(|| {
                format!(
                    "Usage of EmptyDir volume {:?} exceeds the limit {:?}. ",
                    volume.name,
                    limit.0.trim()
                )
            })
        })
}

fn pod_limit_exceeded(pod: &Pod, used: &PodStorage) -> Option<String> {
    let limits = kwk_api::pod::qos::pod_limits(pod).ok()?;
    let limit = limits.get(EPHEMERAL_STORAGE)?;
    let bytes = u64::try_from(limit.value()).unwrap_or(0);
    (used.ephemeral().bytes > bytes).then(|| {
        format!(
            "Pod ephemeral local storage usage exceeds the total limit of containers {}. ",
            pod_limit_quantity(pod, bytes)
        )
    })
}

/// The pod's limit written as upstream's sum would be: in the format of the first container
/// limit it adds up (binary `Mi`/`Gi` or decimal `M`/`G`).
fn pod_limit_quantity(pod: &Pod, bytes: u64) -> String {
    let first = pod
        .spec
        .iter()
        .flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .find_map(|c| {
            c.resources
                .as_ref()?
                .limits
                .as_ref()?
                .get(EPHEMERAL_STORAGE)
        });
    match first {
        Some(q) if !q.0.trim().ends_with('i') => count_quantity(bytes),
        _ => bytes_quantity(bytes),
    }
}

fn container_limit_exceeded(
    pod: &Pod,
    used: &PodStorage,
    dedicated_image_fs: bool,
) -> Option<String> {
    pod.spec.iter().flat_map(|s| &s.containers).find_map(|c| {
        let limit = c
            .resources
            .as_ref()?
            .limits
            .as_ref()?
            .get(EPHEMERAL_STORAGE)?;
        let bytes = positive_bytes(&limit.0)?;
        let usage = used.containers.get(&c.name)?;
        let mut total = usage.logs.unwrap_or_default().bytes;
        if !dedicated_image_fs {
            total = total.saturating_add(usage.rootfs.unwrap_or_default().bytes);
        }
        (total > bytes).then(|| {
            format!(
                "Container {} exceeded its local ephemeral storage limit {:?}. ",
                c.name,
                limit.0.trim()
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{EmptyDirVolumeSource, Volume};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use kwk_api::pod::testing;

    use super::*;

    const MI: u64 = 1 << 20;

    /// A pod with containers (name, `ephemeral-storage` limit or "") and emptyDirs (name,
    /// sizeLimit or "", memory).
    fn pod(uid: &str, containers: &[(&str, &str)], volumes: &[(&str, &str, bool)]) -> Pod {
        let specs: Vec<(&str, String)> = containers
            .iter()
            .map(|(name, limit)| {
                let limits = if limit.is_empty() {
                    String::new()
                } else {
                    format!("ephemeral-storage={limit}")
                };
                (*name, limits)
            })
            .collect();
        let refs: Vec<(&str, &str, &str)> = specs
            .iter()
            .map(|(name, limits)| (*name, "", limits.as_str()))
            .collect();
        let mut pod = testing::pod(uid, &refs);
        if let Some(spec) = pod.spec.as_mut() {
            spec.volumes = Some(
                volumes
                    .iter()
                    .map(|(name, size, memory)| Volume {
                        name: (*name).into(),
                        empty_dir: Some(EmptyDirVolumeSource {
                            medium: memory.then(|| "Memory".into()),
                            size_limit: (!size.is_empty()).then(|| Quantity((*size).into())),
                        }),
                        ..Volume::default()
                    })
                    .collect(),
            );
        }
        pod
    }

    fn bytes(bytes: u64) -> Usage {
        Usage { bytes, inodes: 1 }
    }

    /// Usage: emptyDirs (name, bytes, memory) and containers (name, rootfs, logs).
    fn storage(volumes: &[(&str, u64, bool)], containers: &[(&str, u64, u64)]) -> PodStorage {
        PodStorage {
            volumes: volumes
                .iter()
                .map(|(name, used, memory)| {
                    (
                        (*name).to_string(),
                        VolumeUsage {
                            used: bytes(*used),
                            memory: *memory,
                        },
                    )
                })
                .collect(),
            containers: containers
                .iter()
                .map(|(name, rootfs, logs)| {
                    (
                        (*name).to_string(),
                        ContainerStorage {
                            rootfs: Some(bytes(*rootfs)),
                            logs: Some(bytes(*logs)),
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn each_limit_and_its_message() {
        struct Case {
            name: &'static str,
            pod: Pod,
            usage: PodStorage,
            dedicated: bool,
            want: Option<&'static str>,
        }
        let cases = [
            Case {
                name: "emptyDir over its sizeLimit",
                pod: pod("p", &[("main", "")], &[("scratch", "8Mi", false)]),
                usage: storage(&[("scratch", 20 * MI, false)], &[("main", 0, 0)]),
                dedicated: false,
                want: Some(r#"Usage of EmptyDir volume "scratch" exceeds the limit "8Mi". "#),
            },
            Case {
                name: "emptyDir at its sizeLimit",
                pod: pod("p", &[("main", "")], &[("scratch", "8Mi", false)]),
                usage: storage(&[("scratch", 8 * MI, false)], &[]),
                dedicated: false,
                want: None,
            },
            Case {
                name: "emptyDir without a sizeLimit",
                pod: pod("p", &[("main", "")], &[("scratch", "", false)]),
                usage: storage(&[("scratch", 1 << 40, false)], &[]),
                dedicated: false,
                want: None,
            },
            Case {
                name: "a zero sizeLimit is no limit",
                pod: pod("p", &[("main", "")], &[("scratch", "0", false)]),
                usage: storage(&[("scratch", MI, false)], &[]),
                dedicated: false,
                want: None,
            },
            Case {
                name: "a memory emptyDir over its sizeLimit",
                pod: pod("p", &[("main", "")], &[("shm", "1Mi", true)]),
                usage: storage(&[("shm", 2 * MI, true)], &[]),
                dedicated: false,
                want: Some(r#"Usage of EmptyDir volume "shm" exceeds the limit "1Mi". "#),
            },
            Case {
                name: "container over its limit: layer and logs",
                pod: pod("p", &[("main", "8Mi"), ("side", "100Mi")], &[]),
                usage: storage(&[], &[("main", 6 * MI, 3 * MI), ("side", MI, 0)]),
                dedicated: false,
                want: Some(r#"Container main exceeded its local ephemeral storage limit "8Mi". "#),
            },
            Case {
                name: "container: its layer is on a dedicated image fs",
                pod: pod("p", &[("main", "8Mi"), ("side", "100Mi")], &[]),
                usage: storage(&[], &[("main", 6 * MI, 3 * MI)]),
                dedicated: true,
                want: None,
            },
            Case {
                name: "pod total over the containers' limits (emptyDirs count)",
                pod: pod(
                    "p",
                    &[("a", "10Mi"), ("b", "10Mi")],
                    &[("scratch", "", false)],
                ),
                usage: storage(
                    &[("scratch", 15 * MI, false)],
                    &[("a", 3 * MI, 0), ("b", 3 * MI, 0)],
                ),
                dedicated: false,
                want: Some(
                    "Pod ephemeral local storage usage exceeds the total limit of containers 20Mi. ",
                ),
            },
            Case {
                name: "a container without a limit leaves the pod's limit the others' sum",
                pod: pod("p", &[("main", "8Mi"), ("side", "")], &[]),
                usage: storage(&[], &[("main", MI, 0), ("side", 100 * MI, 0)]),
                dedicated: false,
                want: Some(
                    "Pod ephemeral local storage usage exceeds the total limit of containers 8Mi. ",
                ),
            },
            Case {
                name: "pod total: memory emptyDirs do not count",
                pod: pod("p", &[("a", "10Mi")], &[("shm", "", true)]),
                usage: storage(&[("shm", 50 * MI, true)], &[("a", MI, 0)]),
                dedicated: false,
                want: None,
            },
            Case {
                name: "pod total in decimal units",
                pod: pod("p", &[("a", "1M"), ("b", "1M")], &[("scratch", "", false)]),
                usage: storage(&[("scratch", 3_000_000, false)], &[]),
                dedicated: false,
                want: Some(
                    "Pod ephemeral local storage usage exceeds the total limit of containers 2M. ",
                ),
            },
            Case {
                name: "the emptyDir message comes before the pod's",
                pod: pod("p", &[("a", "1Mi")], &[("scratch", "2Mi", false)]),
                usage: storage(&[("scratch", 3 * MI, false)], &[("a", 2 * MI, 0)]),
                dedicated: false,
                want: Some(r#"Usage of EmptyDir volume "scratch" exceeds the limit "2Mi". "#),
            },
            Case {
                name: "the pod's message comes before the container's",
                pod: pod("p", &[("a", "1Mi")], &[]),
                usage: storage(&[], &[("a", 2 * MI, 0)]),
                dedicated: false,
                want: Some(
                    "Pod ephemeral local storage usage exceeds the total limit of containers 1Mi. ",
                ),
            },
            Case {
                name: "no limits anywhere",
                pod: pod("p", &[("a", "")], &[("scratch", "", false)]),
                usage: storage(&[("scratch", 1 << 40, false)], &[("a", 1 << 40, 1 << 40)]),
                dedicated: false,
                want: None,
            },
        ];
        for case in cases {
            let usage = BTreeMap::from([("p".to_string(), case.usage)]);
            let got = plan(&[&case.pod], &usage, case.dedicated);
            let want: Vec<Eviction> = case
                .want
                .map(|message| Eviction {
                    uid: "p".into(),
                    grace_period_seconds: 0,
                    message: message.into(),
                })
                .into_iter()
                .collect();
            assert_eq!(got, want, "{}", case.name);
        }
    }

    #[test]
    fn unmeasured_and_critical_pods_are_left_alone_and_several_may_go() {
        let over = |uid: &str| pod(uid, &[("main", "")], &[("scratch", "1Mi", false)]);
        let (a, b, unmeasured) = (over("a"), over("b"), over("c"));
        let mut critical = over("d");
        if let Some(spec) = critical.spec.as_mut() {
            spec.priority = Some(super::super::rank::SYSTEM_CRITICAL_PRIORITY);
        }
        let usage: BTreeMap<String, PodStorage> = ["a", "b", "d"]
            .iter()
            .map(|uid| {
                (
                    (*uid).to_string(),
                    storage(&[("scratch", 2 * MI, false)], &[]),
                )
            })
            .collect();
        let got: Vec<String> = plan(&[&a, &b, &unmeasured, &critical], &usage, false)
            .into_iter()
            .map(|e| e.uid)
            .collect();
        assert_eq!(got, ["a", "b"]);
    }

    #[test]
    fn ephemeral_storage_adds_disk_volumes_layers_and_logs() {
        let usage = storage(
            &[("disk", 100, false), ("shm", 1000, true)],
            &[("a", 10, 1), ("b", 20, 2)],
        );
        assert_eq!(
            usage.ephemeral(),
            Usage {
                bytes: 133,
                inodes: 5
            }
        );
    }

    #[test]
    fn disk_ranking_counts_what_each_filesystem_holds() {
        // emptyDirs: 100 MiB on disk, 1000 MiB in memory; containers: app (rootfs 10, logs 1),
        // side (rootfs 20, logs 2).
        let measured = BTreeMap::from([(
            "a".to_string(),
            storage(
                &[("cache", 100 * MI, false), ("ram", 1000 * MI, true)],
                &[("app", 10 * MI, MI), ("side", 20 * MI, 2 * MI)],
            ),
        )]);
        // (signal, dedicated image fs, pod bytes)
        let cases = [
            (Signal::NodeFsAvailable, false, 133 * MI),
            (Signal::ImageFsAvailable, false, 133 * MI),
            (Signal::NodeFsAvailable, true, 103 * MI),
            (Signal::ImageFsAvailable, true, 30 * MI),
        ];
        for (signal, dedicated, want) in cases {
            let mut usage = BTreeMap::from([(
                "a".to_string(),
                PodUsage {
                    memory: Some(7),
                    ephemeral_storage: Some(30 * MI),
                    ..PodUsage::default()
                },
            )]);
            rank_disk_usage(&mut usage, &measured, signal, dedicated);
            let pod = &usage["a"];
            assert_eq!(
                pod.ephemeral_storage,
                Some(want),
                "{signal} dedicated {dedicated}"
            );
            assert_eq!(pod.memory, Some(7), "memory figures kept");
            assert_eq!(pod.containers["side"].ephemeral_storage, Some(22 * MI));
        }
        let inodes_node = {
            let mut usage = BTreeMap::new();
            rank_disk_usage(&mut usage, &measured, Signal::NodeFsInodesFree, false);
            usage["a"].inodes
        };
        assert_eq!(
            inodes_node,
            Some(5),
            "one inode per measured figure but the tmpfs"
        );
        let mut untouched = BTreeMap::new();
        rank_disk_usage(&mut untouched, &measured, Signal::MemoryAvailable, false);
        assert!(untouched.is_empty());
    }
}
