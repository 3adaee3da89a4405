//! cgroup v1: one directory per hierarchy under the mount root (`cpu,cpuacct` or `cpu`, `memory`,
//! `pids`, `cpuset`, `freezer`, the named `systemd` hierarchy, ...). A cgroup is created in every
//! hierarchy, as runc and the upstream kubelet do, so removal finds it in each; values go to the
//! hierarchy of their controller.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::CgroupError;
use super::fs;
use super::values::{Controller, FileWrite};

/// One mounted v1 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hierarchy {
    pub(crate) path: PathBuf,
    /// Controllers from the directory name (`cpu,cpuacct` → cpu and cpuacct).
    pub(crate) controllers: Vec<String>,
}

impl Hierarchy {
    fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

/// The v1 hierarchies under a mount root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct V1 {
    hierarchies: Vec<Hierarchy>,
}

impl V1 {
    /// Finds every hierarchy: each directory under the mount root holding a `cgroup.procs`,
    /// counted once when several names point at it (`cpu` → `cpu,cpuacct`).
    pub(crate) fn discover(mount_root: &Path) -> Result<Self, CgroupError> {
        let mut seen = HashSet::new();
        let mut hierarchies = Vec::new();
        for name in fs::child_names(mount_root)? {
            let path = mount_root.join(&name);
            if !path.join("cgroup.procs").is_file() {
                continue;
            }
            let canonical = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            if !seen.insert(canonical) {
                continue;
            }
            hierarchies.push(Hierarchy {
                controllers: name.split(',').map(str::to_string).collect(),
                path,
            });
        }
        if !hierarchies.iter().any(|h| h.has("cpu")) || !hierarchies.iter().any(|h| h.has("memory"))
        {
            return Err(CgroupError::NoHierarchy {
                path: mount_root.to_path_buf(),
            });
        }
        Ok(Self { hierarchies })
    }

    #[cfg(test)]
    pub(crate) fn hierarchies(&self) -> &[Hierarchy] {
        &self.hierarchies
    }

    /// The root of the hierarchy that carries `controller` (`cpuacct`, `memory`, ...).
    pub(crate) fn controller_root(&self, controller: &str) -> Option<&Path> {
        self.hierarchies
            .iter()
            .find(|h| h.has(controller))
            .map(|h| h.path.as_path())
    }

    fn hierarchy_of(&self, controller: Controller) -> Option<&Hierarchy> {
        self.hierarchies.iter().find(|h| h.has(controller.name()))
    }

    /// The cgroup's directory in every hierarchy.
    pub(crate) fn dirs(&self, cgroup: &str) -> Vec<PathBuf> {
        self.hierarchies
            .iter()
            .map(|h| h.path.join(cgroup))
            .collect()
    }

    /// Creates the cgroup and its missing ancestors in every hierarchy. In cpuset, each level
    /// gets its parent's CPUs and memory nodes if it has none (an empty cpuset admits no process).
    pub(crate) fn create(&self, cgroup: &str) -> Result<(), CgroupError> {
        for hierarchy in &self.hierarchies {
            let is_cpuset = hierarchy.has("cpuset");
            if !is_cpuset && hierarchy.path.join(cgroup).is_dir() {
                continue;
            }
            let mut dir = hierarchy.path.clone();
            for component in cgroup.split('/').filter(|c| !c.is_empty()) {
                let parent = dir.clone();
                dir.push(component);
                fs::create_dir(&dir)?;
                if is_cpuset {
                    inherit_cpuset(&parent, &dir)?;
                }
            }
        }
        Ok(())
    }

    /// Applies writes; controllers without a hierarchy here are skipped.
    pub(crate) fn apply(&self, cgroup: &str, writes: &[FileWrite]) -> Result<(), CgroupError> {
        for w in writes {
            if let Some(hierarchy) = self.hierarchy_of(w.controller) {
                fs::write_value(&hierarchy.path.join(cgroup).join(w.file), &w.value)?;
            }
        }
        Ok(())
    }

    /// Whether the cgroup exists in any hierarchy.
    pub(crate) fn exists(&self, cgroup: &str) -> bool {
        self.dirs(cgroup).iter().any(|d| d.is_dir())
    }

    /// Kills what is left in the cgroup and removes it from every hierarchy.
    pub(crate) fn remove(&self, cgroup: &str) -> Result<(), CgroupError> {
        fs::kill_and_remove(&self.dirs(cgroup))
    }

    /// The child cgroup names of a cgroup, across all hierarchies.
    pub(crate) fn children(&self, cgroup: &str) -> Result<Vec<String>, CgroupError> {
        let mut names = Vec::new();
        for dir in self.dirs(cgroup) {
            for name in fs::child_names(&dir)? {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        names.sort();
        Ok(names)
    }
}

fn inherit_cpuset(parent: &Path, dir: &Path) -> Result<(), CgroupError> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let own = fs::read_optional(&dir.join(file))?.unwrap_or_default();
        if !own.trim().is_empty() {
            continue;
        }
        let inherited = fs::read_optional(&parent.join(file))?.unwrap_or_default();
        let inherited = inherited.trim();
        if !inherited.is_empty() {
            fs::write_value(&dir.join(file), inherited)?;
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod fake {
    //! A plain-directory v1 tree shaped like a hybrid host.

    use std::path::Path;

    pub(crate) const HIERARCHIES: [&str; 7] = [
        "cpu,cpuacct",
        "memory",
        "pids",
        "cpuset",
        "freezer",
        "systemd",
        "unified",
    ];

    pub(crate) fn tree(root: &Path) {
        for name in HIERARCHIES {
            std::fs::create_dir_all(root.join(name)).unwrap();
            std::fs::write(root.join(name).join("cgroup.procs"), "").unwrap();
        }
        std::fs::write(root.join("cpuset/cpuset.cpus"), "0-1\n").unwrap();
        std::fs::write(root.join("cpuset/cpuset.mems"), "0\n").unwrap();
        // A compat symlink, as many distributions mount them.
        std::os::unix::fs::symlink("cpu,cpuacct", root.join("cpu")).unwrap();
        // Not a hierarchy.
        std::fs::create_dir_all(root.join("stray")).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::super::values::{Limit, ResourceConfig, v1_writes};
    use super::*;

    fn read(path: PathBuf) -> String {
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn discovers_hierarchies_once() {
        let tmp = tempfile::tempdir().unwrap();
        fake::tree(tmp.path());
        let v1 = V1::discover(tmp.path()).unwrap();
        let names: Vec<_> = v1
            .hierarchies()
            .iter()
            .map(|h| h.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), fake::HIERARCHIES.len(), "{names:?}");
        assert!(!names.iter().any(|n| n == "stray"));
        assert_eq!(
            v1.hierarchy_of(Controller::Cpu).unwrap().path,
            tmp.path().join("cpu,cpuacct")
        );
    }

    #[test]
    fn no_hierarchy_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(matches!(
            V1::discover(tmp.path()),
            Err(CgroupError::NoHierarchy { .. })
        ));
    }

    #[test]
    fn creates_everywhere_writes_per_controller_and_removes() {
        let tmp = tempfile::tempdir().unwrap();
        fake::tree(tmp.path());
        let v1 = V1::discover(tmp.path()).unwrap();
        let pod = "r/kubepods/burstable/podu1";
        v1.create(pod).unwrap();
        for name in fake::HIERARCHIES {
            assert!(tmp.path().join(name).join(pod).is_dir(), "{name}");
        }
        assert_eq!(
            read(tmp.path().join("cpuset/r/kubepods/cpuset.cpus")),
            "0-1"
        );
        assert_eq!(
            read(tmp.path().join("cpuset").join(pod).join("cpuset.mems")),
            "0"
        );

        let config = ResourceConfig {
            cpu_shares: Some(512),
            cpu_quota: Some(Limit::Value(50_000)),
            cpu_period: Some(100_000),
            memory: Some(Limit::Value(1 << 20)),
            pids: Some(Limit::Max),
        };
        v1.apply(pod, &v1_writes(&config)).unwrap();
        let cpu = tmp.path().join("cpu,cpuacct").join(pod);
        assert_eq!(read(cpu.join("cpu.shares")), "512");
        assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "50000");
        assert_eq!(
            read(
                tmp.path()
                    .join("memory")
                    .join(pod)
                    .join("memory.limit_in_bytes")
            ),
            "1048576"
        );
        assert_eq!(
            read(tmp.path().join("pids").join(pod).join("pids.max")),
            "max"
        );
        assert!(
            !tmp.path()
                .join("freezer")
                .join(pod)
                .join("cpu.shares")
                .exists()
        );

        std::fs::create_dir(cpu.join("container1")).unwrap();
        assert_eq!(v1.children("r/kubepods/burstable").unwrap(), ["podu1"]);
        v1.remove(pod).unwrap();
        assert!(!v1.exists(pod));
        assert!(v1.exists("r/kubepods/burstable"));
        v1.remove(pod).unwrap();
    }
}
