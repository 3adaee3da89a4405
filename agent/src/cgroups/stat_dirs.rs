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

    /// The cgroup of the process whose `/proc/PID/cgroup` reads `proc_cgroup`, when it exists
    /// and is not the root cgroup (the whole node) in either the CPU or the memory hierarchy.
    pub fn process(&self, proc_cgroup: &str) -> Option<StatDirs> {
        let (cpu, memory) = match &self.layout {
            Layout::V1 { .. } => (
                process_cgroup(proc_cgroup, Some("cpuacct"))?,
                process_cgroup(proc_cgroup, Some("memory"))?,
            ),
            Layout::V2 { .. } => {
                let path = process_cgroup(proc_cgroup, None)?;
                (path, path)
            }
        };
        if memory == "/" || cpu == "/" {
            return None;
        }
        let mut dirs = self.dirs(memory.trim_start_matches('/'));
        let cpu_dirs = self.dirs(cpu.trim_start_matches('/'));
        dirs.cpu = cpu_dirs.cpu;
        dirs.memory.is_dir().then_some(dirs)
    }
}

/// The path of a `/proc/PID/cgroup` text in the v1 hierarchy holding `controller`, or in the
/// unified hierarchy (`0::/path`) when `controller` is `None`.
fn process_cgroup<'a>(text: &'a str, controller: Option<&str>) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (id, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let wanted = match controller {
            None => id == "0" && controllers.is_empty(),
            Some(name) => controllers.split(',').any(|c| c == name),
        };
        wanted.then_some(path)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::CgroupDriver;

    #[test]
    fn process_cgroups_are_read_per_hierarchy() {
        let v1 = "12:pids:/system.slice/containerd.service\n\
                  4:cpu,cpuacct:/system.slice/containerd.service\n\
                  9:memory:/system.slice/containerd.service\n\
                  1:name=systemd:/system.slice/containerd.service\n";
        assert_eq!(
            process_cgroup(v1, Some("cpuacct")),
            Some("/system.slice/containerd.service")
        );
        assert_eq!(
            process_cgroup(v1, Some("memory")),
            Some("/system.slice/containerd.service")
        );
        assert_eq!(process_cgroup(v1, Some("cpu,cpuacct")), None);
        assert_eq!(process_cgroup(v1, None), None);
        let v2 = "0::/system.slice/kwk-node.service\n";
        assert_eq!(
            process_cgroup(v2, None),
            Some("/system.slice/kwk-node.service")
        );
        assert_eq!(process_cgroup(v2, Some("memory")), None);

        let tmp = tempfile::tempdir().unwrap();
        for hierarchy in ["cpu,cpuacct", "memory"] {
            let dir = tmp.path().join(hierarchy);
            std::fs::create_dir_all(dir.join("system.slice/containerd.service")).unwrap();
            std::fs::write(dir.join("cgroup.procs"), "").unwrap();
        }
        let locator = CgroupLocator::new(&CgroupConfig {
            mount_root: tmp.path().to_path_buf(),
            driver: CgroupDriver::Cgroupfs,
            cgroup_root: "/".into(),
            per_qos: true,
            pod_pids_limit: -1,
        })
        .unwrap();
        let dirs = locator.process(v1).expect("containerd's cgroup");
        assert_eq!(
            dirs.memory,
            tmp.path().join("memory/system.slice/containerd.service")
        );
        assert_eq!(
            dirs.cpu,
            tmp.path()
                .join("cpu,cpuacct/system.slice/containerd.service")
        );
        assert_eq!(
            locator.process("4:cpu,cpuacct:/\n9:memory:/\n"),
            None,
            "the root"
        );
        assert_eq!(
            locator.process("4:cpu,cpuacct:/\n9:memory:/system.slice/containerd.service\n"),
            None,
            "the root's CPU figures are the node's"
        );
        assert_eq!(
            locator.process("4:cpu,cpuacct:/gone\n9:memory:/gone\n"),
            None,
            "no such cgroup"
        );
    }

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
