//! Where the usage files of the pod cgroups are read, for `/stats/summary`: a pod's cgroup in
//! the hierarchies of `cpuacct` and `memory` (v1) or in the unified hierarchy (v2). Only
//! reads existence; nothing is made or written.

use std::path::{Path, PathBuf};

use super::names::CgroupNamer;
use super::{CgroupConfig, CgroupError, QosClass, fs, v1};

/// A cgroup's directories for reading CPU and memory usage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatDirs {
    /// The unified hierarchy (v2 file names) rather than v1.
    pub unified: bool,
    /// Holds `cpuacct.usage` (v1) or `cpu.stat` (v2).
    pub cpu: PathBuf,
    /// Holds `memory.usage_in_bytes` and `memory.stat` (v1) or `memory.current` (v2).
    pub memory: PathBuf,
    /// Holds `pids.current`, when the pids controller is mounted.
    pub pids: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Layout {
    V1 {
        cpuacct: PathBuf,
        memory: PathBuf,
        pids: Option<PathBuf>,
    },
    V2 {
        root: PathBuf,
    },
}

/// Finds the cgroups of pods (and of all pods) as [`super::PodCgroups`] names them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupLocator {
    namer: CgroupNamer,
    layout: Layout,
}

impl CgroupLocator {
    /// Detects the cgroup version under the configured mount root.
    pub fn new(config: &CgroupConfig) -> Result<Self, CgroupError> {
        let namer = CgroupNamer::new(config.driver, &config.cgroup_root, config.per_qos)?;
        let layout = match fs::detect_version(&config.mount_root) {
            fs::Version::V2 => Layout::V2 {
                root: config.mount_root.clone(),
            },
            fs::Version::V1 => {
                let hierarchies = v1::V1::discover(&config.mount_root)?;
                let root = |controller: &str| {
                    hierarchies
                        .controller_root(controller)
                        .map(Path::to_path_buf)
                        .ok_or_else(|| CgroupError::NoHierarchy {
                            path: config.mount_root.join(controller),
                        })
                };
                Layout::V1 {
                    cpuacct: root("cpuacct")?,
                    memory: root("memory")?,
                    pids: root("pids").ok(),
                }
            }
        };
        Ok(Self { namer, layout })
    }

    fn dirs(&self, cgroup: &str) -> StatDirs {
        match &self.layout {
            Layout::V1 {
                cpuacct,
                memory,
                pids,
            } => StatDirs {
                unified: false,
                cpu: cpuacct.join(cgroup),
                memory: memory.join(cgroup),
                pids: pids.as_ref().map(|p| p.join(cgroup)),
            },
            Layout::V2 { root } => StatDirs {
                unified: true,
                cpu: root.join(cgroup),
                memory: root.join(cgroup),
                pids: Some(root.join(cgroup)),
            },
        }
    }

    /// The pod's cgroup under whichever QoS class it exists; `None` without per-QoS cgroups,
    /// for a UID that is not a valid name, or when there is none.
    pub fn pod(&self, uid: &str) -> Option<StatDirs> {
        QosClass::ALL.into_iter().find_map(|qos| {
            let path = self.namer.pod_path(qos, uid).ok()??;
            let dirs = self.dirs(&path);
            dirs.memory.is_dir().then_some(dirs)
        })
    }

    /// The cgroup of all pods (`kubepods`), when it exists.
    pub fn all_pods(&self) -> Option<StatDirs> {
        let dirs = self.dirs(&self.namer.node_path()?);
        dirs.memory.is_dir().then_some(dirs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::CgroupDriver;

    #[test]
    fn pod_cgroups_are_found_under_their_qos_class() {
        let tmp = tempfile::tempdir().unwrap();
        for hierarchy in ["cpu,cpuacct", "memory", "pids"] {
            let dir = tmp.path().join(hierarchy);
            std::fs::create_dir_all(dir.join("kwkt/kubepods/burstable/podu-1")).unwrap();
            std::fs::write(dir.join("cgroup.procs"), "").unwrap();
        }
        let config = CgroupConfig {
            mount_root: tmp.path().to_path_buf(),
            driver: CgroupDriver::Cgroupfs,
            cgroup_root: "/kwkt".into(),
            per_qos: true,
            pod_pids_limit: -1,
        };
        let locator = CgroupLocator::new(&config).unwrap();
        let dirs = locator.pod("u-1").unwrap();
        assert!(!dirs.unified);
        assert_eq!(
            dirs.cpu,
            tmp.path()
                .join("cpu,cpuacct/kwkt/kubepods/burstable/podu-1")
        );
        assert_eq!(
            dirs.memory,
            tmp.path().join("memory/kwkt/kubepods/burstable/podu-1")
        );
        assert_eq!(
            dirs.pids,
            Some(tmp.path().join("pids/kwkt/kubepods/burstable/podu-1"))
        );
        assert_eq!(locator.pod("u-2"), None);
        assert_eq!(locator.pod("../x"), None);
        assert_eq!(
            locator.all_pods().unwrap().memory,
            tmp.path().join("memory/kwkt/kubepods")
        );
        let flat = CgroupLocator::new(&CgroupConfig {
            per_qos: false,
            ..config
        })
        .unwrap();
        assert_eq!(flat.pod("u-1"), None);
    }
}
