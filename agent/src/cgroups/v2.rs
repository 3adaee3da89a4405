//! cgroup v2: one unified hierarchy at the mount root. Controllers reach a cgroup only when every
//! ancestor lists them in `cgroup.subtree_control`, so creation enables `cpu`, `memory` and `pids`
//! (those the root offers) top-down in each ancestor, as runc does; the new cgroup itself is left
//! for the runtime to enable in when it creates container cgroups below it.

use std::path::{Path, PathBuf};

use super::CgroupError;
use super::fs;
use super::values::{Controller, FileWrite};

const WANTED: [Controller; 3] = [Controller::Cpu, Controller::Memory, Controller::Pids];

/// The unified hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct V2 {
    root: PathBuf,
    /// The wanted controllers the root offers (`cgroup.controllers`).
    available: Vec<Controller>,
}

impl V2 {
    pub(crate) fn open(root: &Path) -> Result<Self, CgroupError> {
        let path = root.join("cgroup.controllers");
        let offered = fs::read_optional(&path)?.ok_or_else(|| CgroupError::NoHierarchy {
            path: root.to_path_buf(),
        })?;
        let available = WANTED
            .into_iter()
            .filter(|c| offered.split_whitespace().any(|o| o == c.name()))
            .collect();
        Ok(Self {
            root: root.to_path_buf(),
            available,
        })
    }

    pub(crate) fn dir(&self, cgroup: &str) -> PathBuf {
        self.root.join(cgroup)
    }

    fn enable_controllers(&self, dir: &Path) -> Result<(), CgroupError> {
        if self.available.is_empty() {
            return Ok(());
        }
        let path = dir.join("cgroup.subtree_control");
        let enabled = fs::read_optional(&path)?.unwrap_or_default();
        let is_enabled = |c: Controller| {
            enabled
                .split_whitespace()
                .any(|e| e.trim_start_matches('+') == c.name())
        };
        if self.available.iter().all(|c| is_enabled(*c)) {
            return Ok(());
        }
        let line = self
            .available
            .iter()
            .map(|c| format!("+{}", c.name()))
            .collect::<Vec<_>>()
            .join(" ");
        fs::write_value(&path, &line)
    }

    /// Creates the cgroup and its missing ancestors, enabling the controllers on the way down.
    pub(crate) fn create(&self, cgroup: &str) -> Result<(), CgroupError> {
        let mut dir = self.root.clone();
        for component in cgroup.split('/').filter(|c| !c.is_empty()) {
            self.enable_controllers(&dir)?;
            dir.push(component);
            fs::create_dir(&dir)?;
        }
        Ok(())
    }

    /// Applies writes; controllers the root does not offer are skipped.
    pub(crate) fn apply(&self, cgroup: &str, writes: &[FileWrite]) -> Result<(), CgroupError> {
        let dir = self.dir(cgroup);
        for w in writes {
            if self.available.contains(&w.controller) {
                fs::write_value(&dir.join(w.file), &w.value)?;
            }
        }
        Ok(())
    }

    pub(crate) fn exists(&self, cgroup: &str) -> bool {
        self.dir(cgroup).is_dir()
    }

    /// Kills what is left in the cgroup and removes it.
    pub(crate) fn remove(&self, cgroup: &str) -> Result<(), CgroupError> {
        fs::kill_and_remove(&[self.dir(cgroup)])
    }

    pub(crate) fn children(&self, cgroup: &str) -> Result<Vec<String>, CgroupError> {
        fs::child_names(&self.dir(cgroup))
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! A plain-directory cgroup2 root.

    use std::path::Path;

    pub(crate) fn tree(root: &Path, controllers: &str) {
        std::fs::write(root.join("cgroup.controllers"), controllers).unwrap();
        std::fs::write(root.join("cgroup.subtree_control"), "").unwrap();
        std::fs::write(root.join("cgroup.procs"), "").unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::super::values::{Limit, ResourceConfig, v2_writes};
    use super::*;

    fn read(path: PathBuf) -> String {
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn create_enables_controllers_in_every_ancestor() {
        let tmp = tempfile::tempdir().unwrap();
        fake::tree(tmp.path(), "cpuset cpu io memory hugetlb pids rdma misc");
        let v2 = V2::open(tmp.path()).unwrap();
        v2.create("kubepods/burstable/podu1").unwrap();
        for dir in ["", "kubepods", "kubepods/burstable"] {
            assert_eq!(
                read(tmp.path().join(dir).join("cgroup.subtree_control")),
                "+cpu +memory +pids",
                "{dir:?}"
            );
        }
        assert!(
            !tmp.path()
                .join("kubepods/burstable/podu1/cgroup.subtree_control")
                .exists()
        );
    }

    #[test]
    fn enabled_controllers_are_not_rewritten() {
        let tmp = tempfile::tempdir().unwrap();
        fake::tree(tmp.path(), "cpu memory pids");
        // As the kernel shows them when read back.
        std::fs::write(
            tmp.path().join("cgroup.subtree_control"),
            "cpu memory pids\n",
        )
        .unwrap();
        let v2 = V2::open(tmp.path()).unwrap();
        v2.create("kubepods").unwrap();
        assert_eq!(
            read(tmp.path().join("cgroup.subtree_control")),
            "cpu memory pids\n"
        );
    }

    #[test]
    fn writes_skip_controllers_the_root_lacks() {
        let tmp = tempfile::tempdir().unwrap();
        fake::tree(tmp.path(), "cpu memory");
        let v2 = V2::open(tmp.path()).unwrap();
        v2.create("kubepods/podu1").unwrap();
        assert_eq!(
            read(tmp.path().join("cgroup.subtree_control")),
            "+cpu +memory"
        );
        let config = ResourceConfig {
            cpu_shares: Some(1024),
            cpu_quota: Some(Limit::Value(20_000)),
            cpu_period: Some(100_000),
            memory: Some(Limit::Value(4096)),
            pids: Some(Limit::Value(10)),
        };
        v2.apply("kubepods/podu1", &v2_writes(&config)).unwrap();
        let pod = tmp.path().join("kubepods/podu1");
        assert_eq!(read(pod.join("cpu.weight")), "39");
        assert_eq!(read(pod.join("cpu.max")), "20000 100000");
        assert_eq!(read(pod.join("memory.max")), "4096");
        assert!(!pod.join("pids.max").exists());
        v2.remove("kubepods/podu1").unwrap();
        assert!(!v2.exists("kubepods/podu1"));
        assert!(v2.exists("kubepods"));
    }

    #[test]
    fn root_without_controllers_file_is_not_v2() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(matches!(
            V2::open(tmp.path()),
            Err(CgroupError::NoHierarchy { .. })
        ));
    }
}
