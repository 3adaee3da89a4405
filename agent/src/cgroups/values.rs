//! What to write into node, QoS and pod cgroups (pure): resource configs computed as the
//! upstream kubelet does (`ResourceConfigForPod`, the QoS manager, node allocatable), and their
//! rendering into cgroup v1 and v2 file writes.

use k8s_openapi::api::core::v1::Pod;

use super::qos::{self, QosClass, ResourceError};

/// Minimum `cpu.shares` (also what BestEffort pods and the besteffort cgroup get).
pub const MIN_SHARES: u64 = 2;
/// Maximum `cpu.shares`.
pub const MAX_SHARES: u64 = 262_144;
const SHARES_PER_CPU: i64 = 1024;
const MILLI_PER_CPU: i64 = 1000;
/// The CFS period, in microseconds.
pub const CFS_PERIOD_US: u64 = 100_000;
/// The smallest CFS quota the kernel accepts, in microseconds.
pub const MIN_CFS_QUOTA_US: i64 = 1000;

/// A limit: a value, or none (`-1` in v1 files, `max` in v2 files).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// No limit.
    Max,
    /// This many units (bytes, microseconds, processes).
    Value(i64),
}

/// Resource settings of one cgroup; `None` leaves the file as it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResourceConfig {
    pub cpu_shares: Option<u64>,
    /// CFS quota per period, in microseconds.
    pub cpu_quota: Option<Limit>,
    /// CFS period, in microseconds.
    pub cpu_period: Option<u64>,
    /// Memory limit, in bytes.
    pub memory: Option<Limit>,
    /// Maximum number of processes.
    pub pids: Option<Limit>,
}

/// What the node-level `kubepods` cgroup is limited to when `enforceNodeAllocatable` contains
/// `pods`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeAllocatable {
    pub cpu_milli: i64,
    pub memory_bytes: i64,
}

/// Upstream `MilliCPUToShares`: 1024 shares per CPU, clamped to [2, 262144].
pub fn milli_cpu_to_shares(milli: i64) -> u64 {
    let shares = milli.saturating_mul(SHARES_PER_CPU) / MILLI_PER_CPU;
    u64::try_from(shares).map_or(MIN_SHARES, |s| s.clamp(MIN_SHARES, MAX_SHARES))
}

/// Upstream `MilliCPUToQuota`: the quota for a CPU limit, at least 1 ms; `Max` without a limit.
pub fn milli_cpu_to_quota(milli: i64, period_us: u64) -> Limit {
    if milli <= 0 {
        return Limit::Max;
    }
    let period = i64::try_from(period_us).unwrap_or(i64::MAX);
    let quota = milli.saturating_mul(period) / MILLI_PER_CPU;
    Limit::Value(quota.max(MIN_CFS_QUOTA_US))
}

/// The cgroup v2 `cpu.weight` for v1 shares (the OCI/runc conversion, range [1, 10000]).
pub fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(MIN_SHARES, MAX_SHARES);
    1 + ((shares - MIN_SHARES) * 9999) / (MAX_SHARES - MIN_SHARES)
}

/// `podPidsLimit` as a limit: `-1` and `0` mean unlimited.
pub fn pids_limit(pod_pids_limit: i64) -> Limit {
    if pod_pids_limit > 0 {
        Limit::Value(pod_pids_limit)
    } else {
        Limit::Max
    }
}

/// The inputs of a pod cgroup config, already aggregated from the pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodResources {
    pub qos: QosClass,
    pub cpu_request_milli: i64,
    pub cpu_limit_milli: i64,
    pub memory_limit_bytes: i64,
    /// Every container limits CPU.
    pub cpu_limited: bool,
    /// Every container limits memory.
    pub memory_limited: bool,
}

impl PodResources {
    /// Aggregates a pod (upstream `PodRequests`, `PodLimits`, QoS).
    pub fn of(pod: &Pod) -> Result<Self, ResourceError> {
        let requests = qos::pod_requests(pod)?;
        let limits = qos::pod_limits(pod)?;
        Ok(Self {
            qos: qos::pod_qos(pod)?,
            cpu_request_milli: qos::cpu_milli(&requests),
            cpu_limit_milli: qos::cpu_milli(&limits),
            memory_limit_bytes: qos::memory_bytes(&limits),
            cpu_limited: qos::every_container_limits(pod, qos::CPU)?,
            memory_limited: qos::every_container_limits(pod, qos::MEMORY)?,
        })
    }
}

/// The pod cgroup's settings (upstream `ResourceConfigForPod` with CPU limits enforced). Limits
/// the pod does not declare are written as unlimited, so a reused cgroup carries no stale limit.
pub fn pod_config(pod: &PodResources, pod_pids_limit: i64) -> ResourceConfig {
    let quota = milli_cpu_to_quota(pod.cpu_limit_milli, CFS_PERIOD_US);
    let memory = if pod.memory_limit_bytes > 0 {
        Limit::Value(pod.memory_limit_bytes)
    } else {
        Limit::Max
    };
    let (cpu_shares, cpu_quota, memory) = match pod.qos {
        QosClass::Guaranteed => (milli_cpu_to_shares(pod.cpu_request_milli), quota, memory),
        QosClass::Burstable => (
            milli_cpu_to_shares(pod.cpu_request_milli),
            if pod.cpu_limited { quota } else { Limit::Max },
            if pod.memory_limited {
                memory
            } else {
                Limit::Max
            },
        ),
        QosClass::BestEffort => (MIN_SHARES, Limit::Max, Limit::Max),
    };
    ResourceConfig {
        cpu_shares: Some(cpu_shares),
        cpu_quota: Some(cpu_quota),
        cpu_period: Some(CFS_PERIOD_US),
        memory: Some(memory),
        pids: Some(pids_limit(pod_pids_limit)),
    }
}

/// The burstable cgroup: shares for the sum of the CPU requests of its pods.
pub fn burstable_config(burstable_cpu_requests_milli: i64) -> ResourceConfig {
    ResourceConfig {
        cpu_shares: Some(milli_cpu_to_shares(burstable_cpu_requests_milli)),
        ..ResourceConfig::default()
    }
}

/// The besteffort cgroup: the minimum shares.
pub fn besteffort_config() -> ResourceConfig {
    ResourceConfig {
        cpu_shares: Some(MIN_SHARES),
        ..ResourceConfig::default()
    }
}

/// The QoS cgroup configs (burstable, besteffort) for the active pods (upstream
/// `setCPUCgroupConfig`).
pub fn qos_configs(pods: &[&Pod]) -> Result<(ResourceConfig, ResourceConfig), ResourceError> {
    let mut burstable_milli: i64 = 0;
    for pod in pods {
        if qos::pod_qos(pod)? == QosClass::Burstable {
            let requests = qos::pod_requests(pod)?;
            burstable_milli = burstable_milli.saturating_add(qos::cpu_milli(&requests));
        }
    }
    Ok((burstable_config(burstable_milli), besteffort_config()))
}

/// The node-level `kubepods` cgroup: limited to allocatable when enforced, else left alone.
pub fn node_config(allocatable: Option<NodeAllocatable>) -> ResourceConfig {
    match allocatable {
        None => ResourceConfig::default(),
        Some(a) => ResourceConfig {
            cpu_shares: Some(milli_cpu_to_shares(a.cpu_milli)),
            memory: Some(if a.memory_bytes > 0 {
                Limit::Value(a.memory_bytes)
            } else {
                Limit::Max
            }),
            ..ResourceConfig::default()
        },
    }
}

/// The v1 controllers written to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Controller {
    Cpu,
    Memory,
    Pids,
}

impl Controller {
    /// The kernel's controller name.
    pub fn name(self) -> &'static str {
        match self {
            Controller::Cpu => "cpu",
            Controller::Memory => "memory",
            Controller::Pids => "pids",
        }
    }
}

/// One file write: `value` into `file` of the cgroup, in the hierarchy of `controller`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileWrite {
    pub controller: Controller,
    pub file: &'static str,
    pub value: String,
}

fn write(controller: Controller, file: &'static str, value: String) -> FileWrite {
    FileWrite {
        controller,
        file,
        value,
    }
}

fn v1_limit(limit: Limit) -> String {
    match limit {
        Limit::Max => "-1".to_string(),
        Limit::Value(v) => v.to_string(),
    }
}

fn v2_limit(limit: Limit) -> String {
    match limit {
        Limit::Max => "max".to_string(),
        Limit::Value(v) => v.to_string(),
    }
}

/// The cgroup v1 writes for a config, in a kernel-safe order (period before quota).
pub fn v1_writes(config: &ResourceConfig) -> Vec<FileWrite> {
    let mut out = Vec::new();
    if let Some(shares) = config.cpu_shares {
        out.push(write(Controller::Cpu, "cpu.shares", shares.to_string()));
    }
    if let Some(period) = config.cpu_period {
        out.push(write(
            Controller::Cpu,
            "cpu.cfs_period_us",
            period.to_string(),
        ));
    }
    if let Some(quota) = config.cpu_quota {
        out.push(write(Controller::Cpu, "cpu.cfs_quota_us", v1_limit(quota)));
    }
    if let Some(memory) = config.memory {
        out.push(write(
            Controller::Memory,
            "memory.limit_in_bytes",
            v1_limit(memory),
        ));
    }
    if let Some(pids) = config.pids {
        // pids.max takes "max", not -1, even on v1.
        out.push(write(Controller::Pids, "pids.max", v2_limit(pids)));
    }
    out
}

/// The cgroup v2 writes for a config.
pub fn v2_writes(config: &ResourceConfig) -> Vec<FileWrite> {
    let mut out = Vec::new();
    if let Some(shares) = config.cpu_shares {
        out.push(write(
            Controller::Cpu,
            "cpu.weight",
            shares_to_weight(shares).to_string(),
        ));
    }
    if config.cpu_quota.is_some() || config.cpu_period.is_some() {
        let quota = config.cpu_quota.unwrap_or(Limit::Max);
        let period = config.cpu_period.unwrap_or(CFS_PERIOD_US);
        out.push(write(
            Controller::Cpu,
            "cpu.max",
            format!("{} {period}", v2_limit(quota)),
        ));
    }
    if let Some(memory) = config.memory {
        out.push(write(Controller::Memory, "memory.max", v2_limit(memory)));
    }
    if let Some(pids) = config.pids {
        out.push(write(Controller::Pids, "pids.max", v2_limit(pids)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kwk_api::pod::testing::*;

    #[test]
    fn shares_quota_weight_table() {
        // (milli, shares, quota)
        let cases = [
            (0, 2, Limit::Max),
            (1, 2, Limit::Value(1000)),
            (5, 5, Limit::Value(1000)),
            (10, 10, Limit::Value(1000)),
            (100, 102, Limit::Value(10_000)),
            (250, 256, Limit::Value(25_000)),
            (1000, 1024, Limit::Value(100_000)),
            (2500, 2560, Limit::Value(250_000)),
            (300_000, 262_144, Limit::Value(30_000_000)),
        ];
        for (milli, shares, quota) in cases {
            assert_eq!(milli_cpu_to_shares(milli), shares, "shares of {milli}m");
            assert_eq!(
                milli_cpu_to_quota(milli, CFS_PERIOD_US),
                quota,
                "quota of {milli}m"
            );
        }
        // (shares, weight)
        for (shares, weight) in [
            (0, 1),
            (2, 1),
            (1024, 39),
            (102, 4),
            (262_144, 10_000),
            (1_000_000, 10_000),
        ] {
            assert_eq!(shares_to_weight(shares), weight, "weight of {shares}");
        }
        assert_eq!(pids_limit(-1), Limit::Max);
        assert_eq!(pids_limit(0), Limit::Max);
        assert_eq!(pids_limit(4096), Limit::Value(4096));
    }

    #[test]
    fn pod_config_table() {
        let mib = 1024 * 1024;
        // (name, pod, pids, shares, quota, memory)
        let cases = [
            (
                "guaranteed",
                pod("a", &[("c", "", "cpu=500m,memory=64Mi")]),
                -1,
                512,
                Limit::Value(50_000),
                Limit::Value(64 * mib),
            ),
            (
                "burstable with every limit",
                pod("a", &[("c", "cpu=100m,memory=32Mi", "cpu=1,memory=64Mi")]),
                100,
                102,
                Limit::Value(100_000),
                Limit::Value(64 * mib),
            ),
            (
                "burstable, one container without limits",
                pod(
                    "a",
                    &[
                        ("c1", "cpu=100m", "cpu=1,memory=64Mi"),
                        ("c2", "cpu=200m", ""),
                    ],
                ),
                0,
                307,
                Limit::Max,
                Limit::Max,
            ),
            (
                "burstable, cpu limited only",
                pod("a", &[("c", "cpu=100m", "cpu=200m")]),
                -1,
                102,
                Limit::Value(20_000),
                Limit::Max,
            ),
            (
                "best effort",
                pod("a", &[("c", "", "")]),
                50,
                2,
                Limit::Max,
                Limit::Max,
            ),
        ];
        for (name, pod, pids, shares, quota, memory) in cases {
            let config = pod_config(&PodResources::of(&pod).unwrap(), pids);
            assert_eq!(config.cpu_shares, Some(shares), "{name}");
            assert_eq!(config.cpu_quota, Some(quota), "{name}");
            assert_eq!(config.cpu_period, Some(CFS_PERIOD_US), "{name}");
            assert_eq!(config.memory, Some(memory), "{name}");
            assert_eq!(config.pids, Some(pids_limit(pids)), "{name}");
        }
    }

    #[test]
    fn overhead_reaches_the_pod_cgroup() {
        let pod = pod_with(
            "a",
            vec![container("c", "", "cpu=1,memory=100Mi")],
            Vec::new(),
            "cpu=250m,memory=20Mi",
        );
        let config = pod_config(&PodResources::of(&pod).unwrap(), -1);
        assert_eq!(config.cpu_shares, Some(1280));
        assert_eq!(config.cpu_quota, Some(Limit::Value(125_000)));
        assert_eq!(config.memory, Some(Limit::Value(120 * 1024 * 1024)));
    }

    #[test]
    fn qos_configs_sum_burstable_requests_only() {
        let burstable1 = pod("b1", &[("c", "cpu=300m", "")]);
        let burstable2 = pod("b2", &[("c", "cpu=200m,memory=1Mi", "cpu=1")]);
        let guaranteed = pod("g", &[("c", "", "cpu=4,memory=1Gi")]);
        let besteffort = pod("e", &[("c", "", "")]);
        let (burstable, best) =
            qos_configs(&[&burstable1, &burstable2, &guaranteed, &besteffort]).unwrap();
        assert_eq!(burstable.cpu_shares, Some(512));
        assert_eq!(best.cpu_shares, Some(MIN_SHARES));
        assert_eq!(burstable.memory, None);
        let (empty, _) = qos_configs(&[]).unwrap();
        assert_eq!(empty.cpu_shares, Some(MIN_SHARES));
    }

    #[test]
    fn node_config_from_allocatable() {
        assert_eq!(node_config(None), ResourceConfig::default());
        let c = node_config(Some(NodeAllocatable {
            cpu_milli: 1500,
            memory_bytes: 3 << 30,
        }));
        assert_eq!(c.cpu_shares, Some(1536));
        assert_eq!(c.memory, Some(Limit::Value(3 << 30)));
        assert_eq!(c.cpu_quota, None);
    }

    #[test]
    fn renders_v1_and_v2_files() {
        let config = ResourceConfig {
            cpu_shares: Some(1024),
            cpu_quota: Some(Limit::Value(50_000)),
            cpu_period: Some(CFS_PERIOD_US),
            memory: Some(Limit::Max),
            pids: Some(Limit::Value(100)),
        };
        let show = |writes: Vec<FileWrite>| -> Vec<String> {
            writes
                .into_iter()
                .map(|w| format!("{}:{}={}", w.controller.name(), w.file, w.value))
                .collect()
        };
        assert_eq!(
            show(v1_writes(&config)),
            [
                "cpu:cpu.shares=1024",
                "cpu:cpu.cfs_period_us=100000",
                "cpu:cpu.cfs_quota_us=50000",
                "memory:memory.limit_in_bytes=-1",
                "pids:pids.max=100",
            ]
        );
        assert_eq!(
            show(v2_writes(&config)),
            [
                "cpu:cpu.weight=39",
                "cpu:cpu.max=50000 100000",
                "memory:memory.max=max",
                "pids:pids.max=100",
            ]
        );
        let unlimited = ResourceConfig {
            cpu_quota: Some(Limit::Max),
            cpu_period: Some(CFS_PERIOD_US),
            memory: Some(Limit::Value(4096)),
            pids: Some(Limit::Max),
            ..ResourceConfig::default()
        };
        assert_eq!(
            show(v1_writes(&unlimited)),
            [
                "cpu:cpu.cfs_period_us=100000",
                "cpu:cpu.cfs_quota_us=-1",
                "memory:memory.limit_in_bytes=4096",
                "pids:pids.max=max",
            ]
        );
        assert_eq!(
            show(v2_writes(&unlimited)),
            [
                "cpu:cpu.max=max 100000",
                "memory:memory.max=4096",
                "pids:pids.max=max"
            ]
        );
        assert!(
            v2_writes(&besteffort_config())
                .iter()
                .all(|w| w.file == "cpu.weight")
        );
    }
}
