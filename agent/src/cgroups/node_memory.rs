//! The node's memory figures as upstream defines them — `memory.available` := capacity −
//! working set of the root cgroup — shared by the eviction signal, its wake-ups and the
//! `/stats/summary` / resource-metrics node figures.
//!
//! - cgroup v1: usage is the root memory cgroup's `memory.usage_in_bytes`, the working set is
//!   usage − `total_inactive_file` of its `memory.stat` (read first: reading it flushes the
//!   kernel's per-CPU statistics, which the root's usage is computed from).
//! - cgroup v2 (no `memory.current` at the root): from `/proc/meminfo`, usage = `MemTotal` −
//!   `MemFree`, working set = usage − `Inactive(file)`, as runc reads the root there.
//!
//! Capacity is `MemTotal`. Not `MemAvailable`: memory the kernel holds outside any cgroup
//! for a while moves it without anything on the node using more — in a VM with free page
//! reporting, ~85% of a freed 800 MiB came back to `MemFree` only over ~45 s (measured on
//! this project's CI machines), so an eviction would be followed by a second one of a pod
//! that had nothing to do with the pressure.

use std::path::{Path, PathBuf};

/// The node's memory at one moment, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeMemory {
    pub capacity: u64,
    pub usage: u64,
    pub working_set: u64,
}

impl NodeMemory {
    /// Upstream's `memory.available`: capacity − working set.
    pub fn available(&self) -> u64 {
        self.capacity.saturating_sub(self.working_set)
    }
}

/// Where the node's figures are read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeMemorySource {
    /// cgroup v1: the root memory cgroup directory (`/sys/fs/cgroup/memory`).
    MemoryCgroupV1(PathBuf),
    /// cgroup v2 or no memory cgroup: `/proc/meminfo` alone.
    Meminfo,
}

impl NodeMemorySource {
    /// The source for the cgroup filesystem mounted at `mount_root` (`/sys/fs/cgroup`).
    pub fn detect(mount_root: &Path) -> Self {
        let v1 = mount_root.join("memory");
        if v1.join("memory.usage_in_bytes").exists() {
            Self::MemoryCgroupV1(v1)
        } else {
            Self::Meminfo
        }
    }

    /// The figures now (`None` when a file cannot be read or parsed).
    pub fn read(&self) -> Option<NodeMemory> {
        let file = |path: &Path| std::fs::read_to_string(path).ok();
        match self {
            Self::MemoryCgroupV1(dir) => {
                let stat = file(&dir.join("memory.stat"))?;
                let usage = file(&dir.join("memory.usage_in_bytes"))?;
                from_cgroup_v1(&file(Path::new("/proc/meminfo"))?, &usage, &stat)
            }
            Self::Meminfo => from_meminfo(&file(Path::new("/proc/meminfo"))?),
        }
    }
}

/// A `/proc/meminfo` field in bytes (its values are kB).
fn meminfo_bytes(meminfo: &str, field: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        let kib: u64 = value.trim().strip_suffix("kB")?.trim().parse().ok()?;
        kib.checked_mul(1024)
    })
}

/// A `memory.stat` field (bytes).
fn stat_field(stat: &str, field: &str) -> Option<u64> {
    stat.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == field).then(|| value.trim().parse().ok())?
    })
}

/// The figures of a cgroup v1 host: `MemTotal`, the root memory cgroup's usage and
/// `total_inactive_file`.
pub fn from_cgroup_v1(
    meminfo: &str,
    usage_in_bytes: &str,
    memory_stat: &str,
) -> Option<NodeMemory> {
    let usage: u64 = usage_in_bytes.trim().parse().ok()?;
    let inactive_file = stat_field(memory_stat, "total_inactive_file")?;
    Some(NodeMemory {
        capacity: meminfo_bytes(meminfo, "MemTotal")?,
        usage,
        working_set: usage.saturating_sub(inactive_file),
    })
}

/// The figures from `/proc/meminfo` alone (cgroup v2 hosts).
pub fn from_meminfo(meminfo: &str) -> Option<NodeMemory> {
    let capacity = meminfo_bytes(meminfo, "MemTotal")?;
    let usage = capacity.saturating_sub(meminfo_bytes(meminfo, "MemFree")?);
    let inactive_file = meminfo_bytes(meminfo, "Inactive(file)").unwrap_or(0);
    Some(NodeMemory {
        capacity,
        usage,
        working_set: usage.saturating_sub(inactive_file),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str = "MemTotal:        1000 kB\nMemFree:          300 kB\n\
                           MemAvailable:     800 kB\nInactive(file):   100 kB\n";

    #[test]
    fn v1_working_set_is_root_usage_less_inactive_file() {
        let stat = "cache 5\ninactive_file 7\ntotal_cache 400000\ntotal_inactive_file 102400\n";
        let memory = from_cgroup_v1(MEMINFO, "512000\n", stat).unwrap();
        assert_eq!(
            memory,
            NodeMemory {
                capacity: 1_024_000,
                usage: 512_000,
                working_set: 409_600
            }
        );
        assert_eq!(memory.available(), 614_400);
        // Inactive file above usage (statistics flushed apart): nothing is negative.
        let odd = from_cgroup_v1(MEMINFO, "100", "total_inactive_file 200").unwrap();
        assert_eq!((odd.working_set, odd.available()), (0, 1_024_000));
    }

    #[test]
    fn v1_needs_every_figure() {
        assert_eq!(from_cgroup_v1(MEMINFO, "x", "total_inactive_file 1"), None);
        assert_eq!(from_cgroup_v1(MEMINFO, "1", "inactive_file 1"), None);
        assert_eq!(
            from_cgroup_v1("MemFree: 1 kB\n", "1", "total_inactive_file 1"),
            None
        );
    }

    #[test]
    fn meminfo_working_set_is_total_less_free_less_inactive_file() {
        let memory = from_meminfo(MEMINFO).unwrap();
        assert_eq!(
            memory,
            NodeMemory {
                capacity: 1_024_000,
                usage: 716_800,
                working_set: 614_400
            }
        );
        assert_eq!(memory.available(), 409_600);
        assert_eq!(from_meminfo("MemTotal: 1 kB\n"), None);
        // A field whose name only starts like another's is not taken for it.
        assert_eq!(
            meminfo_bytes("MemTotalX: 5 kB\nMemTotal: 2 kB\n", "MemTotal"),
            Some(2048)
        );
    }

    #[test]
    fn reads_this_host() {
        let source = NodeMemorySource::detect(Path::new("/sys/fs/cgroup"));
        let memory = source.read().unwrap();
        assert!(
            memory.capacity > 0 && memory.working_set <= memory.capacity,
            "{memory:?}"
        );
        let missing = NodeMemorySource::MemoryCgroupV1(PathBuf::from("/nonexistent"));
        assert_eq!(missing.read(), None);
    }
}
