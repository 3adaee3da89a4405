//! Pod-level CPU and memory for `/stats/summary`, read from the pod cgroups as upstream reads
//! them: the pod cgroup holds the sandbox and every container, so it also counts what the sum
//! of the containers misses. v1: `cpuacct.usage`, `memory.usage_in_bytes`, `memory.stat`
//! (`total_*`, hierarchical), `memory.limit_in_bytes`; v2: `cpu.stat`, `memory.current`,
//! `memory.stat`, `memory.max`. The working set is the usage less the inactive file cache.
//! Parsing is pure; [`read`] is the thin reader and [`RateTracker`] turns CPU time into
//! nanocores between samples.

use std::collections::{BTreeMap, HashMap};

use crate::cgroups::StatDirs;

/// A cgroup's CPU and memory at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupSample {
    pub time_nanos: i64,
    pub cpu_usage_core_nanos: Option<u64>,
    /// The rate since an earlier sample, if known.
    pub cpu_usage_nano_cores: Option<u64>,
    pub memory_usage_bytes: Option<u64>,
    pub memory_working_set_bytes: Option<u64>,
    pub memory_rss_bytes: Option<u64>,
    pub page_faults: Option<u64>,
    pub major_page_faults: Option<u64>,
    /// The memory limit, when there is one.
    pub memory_limit_bytes: Option<u64>,
    /// Processes (tasks) in the cgroup, from `pids.current`.
    pub process_count: Option<u64>,
}

impl CgroupSample {
    /// What is left under the limit (upstream's `availableBytes`), when there is a limit.
    pub fn memory_available_bytes(&self) -> Option<u64> {
        Some(
            self.memory_limit_bytes?
                .saturating_sub(self.memory_working_set_bytes.unwrap_or(0)),
        )
    }
}

/// v1 reports "no limit" as the largest page-aligned counter value; anything this large is none.
const UNLIMITED_FROM: u64 = 1 << 62;

/// A file holding one number (`max` or a huge v1 value: `None`).
pub fn parse_single(text: &str) -> Option<u64> {
    text.trim()
        .parse()
        .ok()
        .filter(|&v: &u64| v < UNLIMITED_FROM)
}

/// A flat keyed file (`memory.stat`, `cpu.stat`): `key value` per line.
pub fn parse_keyed(text: &str) -> BTreeMap<&str, u64> {
    text.lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(' ')?;
            Some((key, value.trim().parse().ok()?))
        })
        .collect()
}

/// The contents of a cgroup's usage files (`None`: unreadable).
#[derive(Clone, Copy, Debug, Default)]
pub struct CgroupFiles<'a> {
    /// `cpuacct.usage` (v1) or `cpu.stat` (v2).
    pub cpu: Option<&'a str>,
    /// `memory.usage_in_bytes` (v1) or `memory.current` (v2).
    pub memory_usage: Option<&'a str>,
    pub memory_stat: Option<&'a str>,
    /// `memory.limit_in_bytes` (v1) or `memory.max` (v2).
    pub memory_limit: Option<&'a str>,
    pub pids_current: Option<&'a str>,
}

/// The sample a cgroup's files make (`unified`: v2 names and units).
pub fn sample(time_nanos: i64, unified: bool, files: CgroupFiles<'_>) -> CgroupSample {
    let stat = files.memory_stat.map(parse_keyed).unwrap_or_default();
    // v1 reads the hierarchical totals (the pod's containers are child cgroups).
    let stat_key = |v1: &'static str, v2: &'static str| {
        let key = if unified { v2 } else { v1 };
        stat.get(key).copied()
    };
    let cpu = if unified {
        files
            .cpu
            .and_then(|t| parse_keyed(t).get("usage_usec").copied())
            .map(|usec| usec.saturating_mul(1000))
    } else {
        files.cpu.and_then(parse_single)
    };
    let usage = files.memory_usage.and_then(parse_single);
    let inactive_file = stat_key("total_inactive_file", "inactive_file").unwrap_or(0);
    CgroupSample {
        time_nanos,
        cpu_usage_core_nanos: cpu,
        cpu_usage_nano_cores: None,
        memory_usage_bytes: usage,
        memory_working_set_bytes: usage.map(|u| u.saturating_sub(inactive_file)),
        memory_rss_bytes: stat_key("total_rss", "anon"),
        page_faults: stat_key("total_pgfault", "pgfault"),
        major_page_faults: stat_key("total_pgmajfault", "pgmajfault"),
        memory_limit_bytes: files.memory_limit.and_then(parse_single),
        process_count: files.pids_current.and_then(parse_single),
    }
}

/// Reads the cgroup at `dirs` now (`None` when it has gone).
pub fn read(dirs: &StatDirs) -> Option<CgroupSample> {
    let file = |dir: &std::path::Path, name: &str| std::fs::read_to_string(dir.join(name)).ok();
    let (cpu, usage, limit) = if dirs.unified {
        ("cpu.stat", "memory.current", "memory.max")
    } else {
        (
            "cpuacct.usage",
            "memory.usage_in_bytes",
            "memory.limit_in_bytes",
        )
    };
    let time = crate::clock::unix_nanos_now();
    let cpu = file(&dirs.cpu, cpu);
    let usage = file(&dirs.memory, usage)?;
    let stat = file(&dirs.memory, "memory.stat");
    let limit = file(&dirs.memory, limit);
    let pids = dirs.pids.as_ref().and_then(|d| file(d, "pids.current"));
    Some(sample(
        time,
        dirs.unified,
        CgroupFiles {
            cpu: cpu.as_deref(),
            memory_usage: Some(&usage),
            memory_stat: stat.as_deref(),
            memory_limit: limit.as_deref(),
            pids_current: pids.as_deref(),
        },
    ))
}

/// CPU use in nanocores between two (time, CPU time) samples (`None` if they are not in order).
pub fn nano_cores(earlier: (i64, u64), later: (i64, u64)) -> Option<u64> {
    let elapsed = u64::try_from(later.0.checked_sub(earlier.0)?).ok()?;
    let used = later.1.checked_sub(earlier.1)?;
    (elapsed > 0).then(|| {
        u64::try_from(u128::from(used) * 1_000_000_000 / u128::from(elapsed)).unwrap_or(u64::MAX)
    })
}

/// Samples closer than this to the last one keep the rate computed then.
pub const MIN_RATE_WINDOW_NANOS: i64 = 1_000_000_000;

/// The last (time, CPU time) of each key and the rate computed when it was taken, so that
/// callers asking often see a rate over at least [`MIN_RATE_WINDOW_NANOS`].
#[derive(Debug, Default)]
pub struct RateTracker {
    marks: HashMap<String, ((i64, u64), Option<u64>)>,
}

impl RateTracker {
    /// Whether `key` has an earlier sample.
    pub fn knows(&self, key: &str) -> bool {
        self.marks.contains_key(key)
    }

    /// The rate for `key` at `now`: since its earlier sample, or the previous rate when that
    /// sample is too recent; `None` for the first sample.
    pub fn rate(&mut self, key: &str, now: (i64, u64)) -> Option<u64> {
        match self.marks.get(key).copied() {
            Some((earlier, Some(previous))) if now.0 - earlier.0 < MIN_RATE_WINDOW_NANOS => {
                Some(previous)
            }
            Some((earlier, _)) => {
                let rate = nano_cores(earlier, now);
                self.marks.insert(key.to_string(), (now, rate));
                rate
            }
            None => {
                self.marks.insert(key.to_string(), (now, None));
                None
            }
        }
    }

    /// Forgets every key `keep` rejects.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.marks.retain(|k, _| keep(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1_STAT: &str = "cache 100\nrss 50\ntotal_cache 4096\ntotal_rss 2048\n\
        total_inactive_file 1000\ntotal_pgfault 77\ntotal_pgmajfault 3\ninactive_file 1\n";
    const V2_STAT: &str = "anon 3000\nfile 500\ninactive_file 400\npgfault 9\npgmajfault 1\n";

    #[test]
    fn v1_and_v2_files_make_the_same_figures() {
        let cases = [
            (
                "v1 with a limit",
                false,
                CgroupFiles {
                    cpu: Some("123456789\n"),
                    memory_usage: Some("10000\n"),
                    memory_stat: Some(V1_STAT),
                    memory_limit: Some("536870912\n"),
                    pids_current: Some("4\n"),
                },
                CgroupSample {
                    time_nanos: 5,
                    cpu_usage_core_nanos: Some(123_456_789),
                    memory_usage_bytes: Some(10_000),
                    memory_working_set_bytes: Some(9_000),
                    memory_rss_bytes: Some(2048),
                    page_faults: Some(77),
                    major_page_faults: Some(3),
                    memory_limit_bytes: Some(536_870_912),
                    process_count: Some(4),
                    ..CgroupSample::default()
                },
            ),
            (
                "v1 unlimited, inactive above usage",
                false,
                CgroupFiles {
                    cpu: None,
                    memory_usage: Some("500"),
                    memory_stat: Some(V1_STAT),
                    memory_limit: Some("9223372036854771712"),
                    pids_current: None,
                },
                CgroupSample {
                    time_nanos: 5,
                    memory_usage_bytes: Some(500),
                    memory_working_set_bytes: Some(0),
                    memory_rss_bytes: Some(2048),
                    page_faults: Some(77),
                    major_page_faults: Some(3),
                    ..CgroupSample::default()
                },
            ),
            (
                "v2",
                true,
                CgroupFiles {
                    cpu: Some("usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n"),
                    memory_usage: Some("4000\n"),
                    memory_stat: Some(V2_STAT),
                    memory_limit: Some("max\n"),
                    pids_current: None,
                },
                CgroupSample {
                    time_nanos: 5,
                    cpu_usage_core_nanos: Some(1_500_000),
                    memory_usage_bytes: Some(4000),
                    memory_working_set_bytes: Some(3600),
                    memory_rss_bytes: Some(3000),
                    page_faults: Some(9),
                    major_page_faults: Some(1),
                    ..CgroupSample::default()
                },
            ),
            (
                "nothing readable",
                true,
                CgroupFiles::default(),
                CgroupSample {
                    time_nanos: 5,
                    ..CgroupSample::default()
                },
            ),
        ];
        for (name, unified, files, expected) in cases {
            assert_eq!(sample(5, unified, files), expected, "{name}");
        }
    }

    #[test]
    fn available_bytes_only_under_a_limit() {
        let mut s = CgroupSample {
            memory_working_set_bytes: Some(300),
            ..CgroupSample::default()
        };
        assert_eq!(s.memory_available_bytes(), None);
        s.memory_limit_bytes = Some(1000);
        assert_eq!(s.memory_available_bytes(), Some(700));
        s.memory_working_set_bytes = Some(2000);
        assert_eq!(s.memory_available_bytes(), Some(0));
    }

    #[test]
    fn rates_need_ordered_samples() {
        let cases = [
            ((0, 0), (1_000_000_000, 500_000_000), Some(500_000_000)),
            ((0, 0), (2_000_000_000, 4_000_000_000), Some(2_000_000_000)),
            ((5, 0), (5, 10), None),
            ((10, 0), (5, 10), None),
            ((0, 10), (1, 5), None),
        ];
        for (earlier, later, expected) in cases {
            assert_eq!(
                nano_cores(earlier, later),
                expected,
                "{earlier:?} {later:?}"
            );
        }
    }

    #[test]
    fn the_tracker_keeps_a_rate_over_a_window() {
        const S: i64 = 1_000_000_000;
        const CORE: u64 = 1_000_000_000;
        let mut tracker = RateTracker::default();
        assert!(!tracker.knows("a"));
        assert_eq!(tracker.rate("a", (0, 0)), None, "first sample");
        assert!(tracker.knows("a"));
        assert_eq!(
            tracker.rate("a", (S / 10, CORE / 20)),
            Some(CORE / 2),
            "no rate yet: even a short window gives one"
        );
        assert_eq!(
            tracker.rate("a", (S / 5, CORE / 5)),
            Some(CORE / 2),
            "too close: the previous rate"
        );
        assert_eq!(
            tracker.rate("a", (2 * S, CORE / 20 + 1_900_000_000 / 4)),
            Some(250_000_000)
        );
        tracker.retain(|k| k != "a");
        assert!(!tracker.knows("a"));
    }
}
