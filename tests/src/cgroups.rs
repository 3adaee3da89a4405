//! Reading the limits that actually landed in a container's cgroup, v1 or v2, for assertions.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context as _;

/// Limits read back from cgroupfs. `None` means unlimited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    pub cpu_quota_us: Option<u64>,
    pub cpu_period_us: u64,
}

/// The container's cgroup path from containerd's verbose `ContainerStatus` info
/// (`info.runtimeSpec.linux.cgroupsPath`).
pub fn cgroups_path_from_info(info: &HashMap<String, String>) -> Option<String> {
    let doc: serde_json::Value = serde_json::from_str(info.get("info")?).ok()?;
    doc.pointer("/runtimeSpec/linux/cgroupsPath")?
        .as_str()
        .map(str::to_owned)
}

/// Reads the memory and CPU limits of the cgroup at `path` (cgroupfs driver layout).
pub fn read_limits(path: &str) -> anyhow::Result<Limits> {
    let root = Path::new("/sys/fs/cgroup");
    let rel = path.trim_start_matches('/');
    let read = |file: std::path::PathBuf| {
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))
    };
    if root.join("cgroup.controllers").exists() {
        let memory = parse_v2_memory_max(&read(root.join(rel).join("memory.max"))?)?;
        let (quota, period) = parse_v2_cpu_max(&read(root.join(rel).join("cpu.max"))?)?;
        Ok(Limits {
            memory_bytes: memory,
            cpu_quota_us: quota,
            cpu_period_us: period,
        })
    } else {
        let memory: u64 = read(root.join("memory").join(rel).join("memory.limit_in_bytes"))?
            .trim()
            .parse()?;
        let quota: i64 = read(root.join("cpu").join(rel).join("cpu.cfs_quota_us"))?
            .trim()
            .parse()?;
        let period: u64 = read(root.join("cpu").join(rel).join("cpu.cfs_period_us"))?
            .trim()
            .parse()?;
        Ok(Limits {
            // v1 spells "unlimited" as the largest page-aligned i64.
            memory_bytes: (memory < (i64::MAX as u64 & !4095)).then_some(memory),
            cpu_quota_us: u64::try_from(quota).ok(),
            cpu_period_us: period,
        })
    }
}

/// `memory.max`: bytes or `max`.
pub fn parse_v2_memory_max(text: &str) -> anyhow::Result<Option<u64>> {
    match text.trim() {
        "max" => Ok(None),
        n => Ok(Some(
            n.parse().with_context(|| format!("memory.max {n:?}"))?,
        )),
    }
}

/// `cpu.max`: `<quota|max> <period>`.
pub fn parse_v2_cpu_max(text: &str) -> anyhow::Result<(Option<u64>, u64)> {
    let mut parts = text.split_whitespace();
    let quota = parts.next().context("empty cpu.max")?;
    let period = parts
        .next()
        .unwrap_or("100000")
        .parse()
        .context("cpu.max period")?;
    let quota = if quota == "max" {
        None
    } else {
        Some(quota.parse().context("cpu.max quota")?)
    };
    Ok((quota, period))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_files_parse() {
        assert_eq!(parse_v2_memory_max("max\n").unwrap(), None);
        assert_eq!(parse_v2_memory_max("67108864\n").unwrap(), Some(64 << 20));
        assert_eq!(
            parse_v2_cpu_max("50000 100000\n").unwrap(),
            (Some(50_000), 100_000)
        );
        assert_eq!(parse_v2_cpu_max("max 100000").unwrap(), (None, 100_000));
        assert!(parse_v2_memory_max("lots").is_err());
    }

    #[test]
    fn cgroups_path_comes_from_the_runtime_spec() {
        let info = HashMap::from([(
            "info".to_owned(),
            r#"{"runtimeSpec":{"linux":{"cgroupsPath":"/kwkt-1/pod-a/abc"}}}"#.to_owned(),
        )]);
        assert_eq!(
            cgroups_path_from_info(&info).as_deref(),
            Some("/kwkt-1/pod-a/abc")
        );
        assert_eq!(cgroups_path_from_info(&HashMap::new()), None);
    }
}
