//! Node pressure as upstream's eviction manager signals it: `memory.available`,
//! `nodefs.available` and `pid.available`, observed on the host, compared with the hard
//! eviction thresholds (`evictionHard`). The thresholds also come out of allocatable
//! (memory and ephemeral storage), as upstream's node allocatable does.
//!
//! kwk-node does not evict yet: pressure is reported in the Node conditions only.

use std::path::Path;

use crate::config::EvictionThreshold;

/// A hard eviction threshold: a quantity, or a percentage of the resource's capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    Bytes(u64),
    /// A fraction of capacity, `0.1` for `10%`.
    Fraction(f64),
}

impl Threshold {
    /// The threshold as an amount, for a resource of `capacity`.
    pub fn amount(self, capacity: u64) -> u64 {
        match self {
            Threshold::Bytes(bytes) => bytes,
            Threshold::Fraction(fraction) => {
                // Safe: fraction is in [0, 1] and capacity fits in f64 closely enough.
                #[allow(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    clippy::cast_precision_loss,
                    reason = "a fraction of a u64 capacity, rounded down like upstream"
                )]
                let amount = (capacity as f64 * fraction.clamp(0.0, 1.0)) as u64;
                amount
            }
        }
    }
}

/// The hard eviction thresholds kwk-node looks at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvictionHard {
    pub memory_available: Option<Threshold>,
    pub nodefs_available: Option<Threshold>,
    pub pid_available: Option<Threshold>,
}

impl Default for EvictionHard {
    /// Upstream's Linux defaults: `memory.available<100Mi`, `nodefs.available<10%` (and no
    /// `pid.available` threshold).
    fn default() -> Self {
        Self {
            memory_available: Some(Threshold::Bytes(100 << 20)),
            nodefs_available: Some(Threshold::Fraction(0.1)),
            pid_available: None,
        }
    }
}

impl EvictionHard {
    /// The thresholds of a configured `evictionHard`; `None` (unset): upstream's defaults. As
    /// upstream, once `evictionHard` is set a signal it does not name has no threshold.
    pub fn from_config(
        configured: Option<&std::collections::BTreeMap<String, EvictionThreshold>>,
    ) -> Self {
        let Some(configured) = configured else {
            return Self::default();
        };
        let threshold = |signal: &str| {
            configured.get(signal).map(|t| match *t {
                EvictionThreshold::Quantity(q) => {
                    Threshold::Bytes(u64::try_from(q.value()).unwrap_or(0))
                }
                EvictionThreshold::Percent { .. } => {
                    Threshold::Fraction(t.fraction().unwrap_or(0.0))
                }
            })
        };
        Self {
            memory_available: threshold("memory.available"),
            nodefs_available: threshold("nodefs.available"),
            pid_available: threshold("pid.available"),
        }
    }
}

/// The observed eviction signals and the capacities they are measured against; `None` where
/// the host could not be read (no pressure is reported from a missing value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PressureFacts {
    /// `MemAvailable` of /proc/meminfo.
    pub memory_available_bytes: Option<u64>,
    /// Free bytes (for unprivileged users) of the root dir's filesystem.
    pub nodefs_available_bytes: Option<u64>,
    /// The PID limit (`min(pid_max, threads-max)`) and the threads running now.
    pub pid_limit: Option<u64>,
    pub pids_running: Option<u64>,
}

/// Which pressures the facts show against the thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pressures {
    pub memory: bool,
    pub disk: bool,
    pub pid: bool,
}

/// Compares the signals with the thresholds: pressure when the available amount is below the
/// threshold (`memory_capacity` and `nodefs_capacity` size percentage thresholds).
pub fn pressures(
    facts: &PressureFacts,
    thresholds: &EvictionHard,
    memory_capacity: u64,
    nodefs_capacity: Option<u64>,
) -> Pressures {
    let below = |available: Option<u64>, threshold: Option<Threshold>, capacity: Option<u64>| match (
        available, threshold, capacity,
    ) {
        (Some(available), Some(threshold), Some(capacity)) => {
            available < threshold.amount(capacity)
        }
        _ => false,
    };
    let pids_available = facts
        .pid_limit
        .zip(facts.pids_running)
        .map(|(limit, running)| limit.saturating_sub(running));
    Pressures {
        memory: below(
            facts.memory_available_bytes,
            thresholds.memory_available,
            Some(memory_capacity),
        ),
        disk: below(
            facts.nodefs_available_bytes,
            thresholds.nodefs_available,
            nodefs_capacity,
        ),
        pid: below(pids_available, thresholds.pid_available, facts.pid_limit),
    }
}

/// Reads the signals from the host; `root_dir` is kwk-node's state directory.
pub fn read(root_dir: &Path) -> PressureFacts {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let number =
        |path: &str| -> Option<u64> { std::fs::read_to_string(path).ok()?.trim().parse().ok() };
    let pid_limit = match (
        number("/proc/sys/kernel/pid_max"),
        number("/proc/sys/kernel/threads-max"),
    ) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    PressureFacts {
        memory_available_bytes: mem_available(&meminfo),
        nodefs_available_bytes: nix::sys::statvfs::statvfs(root_dir)
            .ok()
            .and_then(|s| s.blocks_available().checked_mul(s.fragment_size())),
        pid_limit,
        pids_running: threads_running(&loadavg),
    }
}

/// `MemAvailable` of a /proc/meminfo text, in bytes.
pub(crate) fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

/// The number of threads of a /proc/loadavg text (`0.00 0.01 0.05 1/234 5678`: 234).
pub(crate) fn threads_running(loadavg: &str) -> Option<u64> {
    loadavg
        .split_whitespace()
        .nth(3)?
        .split_once('/')?
        .1
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: u64 = 1 << 20;

    #[test]
    fn parses_the_host_files() {
        assert_eq!(
            mem_available("MemTotal: 100 kB\nMemAvailable:     2048 kB\n"),
            Some(2 * MI)
        );
        assert_eq!(mem_available("MemTotal: 100 kB\n"), None);
        assert_eq!(threads_running("0.00 0.01 0.05 1/234 5678\n"), Some(234));
        assert_eq!(threads_running(""), None);
    }

    #[test]
    fn pressure_is_available_below_the_threshold() {
        let thresholds = EvictionHard {
            pid_available: Some(Threshold::Fraction(0.1)),
            ..EvictionHard::default()
        };
        let facts = |memory: u64, disk: u64, running: u64| PressureFacts {
            memory_available_bytes: Some(memory),
            nodefs_available_bytes: Some(disk),
            pid_limit: Some(1000),
            pids_running: Some(running),
        };
        let cases = [
            ("plenty", facts(1024 * MI, 500, 10), Pressures::default()),
            (
                "memory below 100Mi",
                facts(99 * MI, 500, 10),
                Pressures {
                    memory: true,
                    ..Pressures::default()
                },
            ),
            (
                "memory at 100Mi",
                facts(100 * MI, 500, 10),
                Pressures::default(),
            ),
            (
                "disk below 10% of 1000",
                facts(1024 * MI, 99, 10),
                Pressures {
                    disk: true,
                    ..Pressures::default()
                },
            ),
            (
                "pids: 950 of 1000 running",
                facts(1024 * MI, 500, 950),
                Pressures {
                    pid: true,
                    ..Pressures::default()
                },
            ),
        ];
        for (name, facts, expected) in cases {
            assert_eq!(
                pressures(&facts, &thresholds, 8192 * MI, Some(1000)),
                expected,
                "{name}"
            );
        }
        let unknown = PressureFacts::default();
        assert_eq!(
            pressures(&unknown, &thresholds, 8192 * MI, None),
            Pressures::default(),
            "unknown values are no pressure"
        );
        let none = EvictionHard {
            memory_available: None,
            nodefs_available: None,
            pid_available: None,
        };
        assert_eq!(
            pressures(&facts(0, 0, 1000), &none, 8192 * MI, Some(1000)),
            Pressures::default(),
            "no thresholds, no pressure"
        );
    }

    #[test]
    fn reads_this_host() {
        let facts = read(Path::new("/"));
        assert!(facts.memory_available_bytes.unwrap_or(0) > 0);
        assert!(facts.nodefs_available_bytes.is_some());
        assert!(facts.pid_limit.unwrap_or(0) > facts.pids_running.unwrap_or(u64::MAX));
    }
}
