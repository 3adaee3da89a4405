//! Eviction signals and thresholds as upstream's `pkg/kubelet/eviction/api` names them, read
//! from the kubelet configuration (`evictionHard`, `evictionSoft`, `evictionSoftGracePeriod`,
//! `evictionMinimumReclaim`, `evictionMaxPodGracePeriod`, `evictionPressureTransitionPeriod`).
//! Pure: no I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::config::{EvictionThreshold, KubeletConfig};

/// The signals kwk-node observes and acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Signal {
    /// `memory.available`: capacity − the root cgroup's working set, as upstream.
    MemoryAvailable,
    /// `nodefs.available`: free bytes of the filesystem holding the root dir.
    NodeFsAvailable,
    /// `nodefs.inodesFree`: free inodes there.
    NodeFsInodesFree,
    /// `imagefs.available`: free bytes of the runtime's image filesystem (the nodefs when it is
    /// the same filesystem, as upstream).
    ImageFsAvailable,
    /// `imagefs.inodesFree`.
    ImageFsInodesFree,
    /// `pid.available`: the PID limit less the threads running.
    PidAvailable,
}

/// The node condition a signal reports through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Condition {
    Memory,
    Disk,
    Pid,
}

impl Condition {
    pub const ALL: [Condition; 3] = [Condition::Memory, Condition::Disk, Condition::Pid];

    /// The Node condition type: `MemoryPressure`, `DiskPressure`, `PIDPressure`.
    pub fn type_name(self) -> &'static str {
        match self {
            Condition::Memory => "MemoryPressure",
            Condition::Disk => "DiskPressure",
            Condition::Pid => "PIDPressure",
        }
    }

    /// The taint the node lifecycle controller puts on a Node with this condition
    /// (`TaintNodesByCondition`), effect `NoSchedule`.
    pub fn taint_key(self) -> &'static str {
        match self {
            Condition::Memory => "node.kubernetes.io/memory-pressure",
            Condition::Disk => "node.kubernetes.io/disk-pressure",
            Condition::Pid => "node.kubernetes.io/pid-pressure",
        }
    }
}

/// What ranks pods for a signal, and what the eviction message names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Memory,
    EphemeralStorage,
    Inodes,
    Pids,
}

impl Resource {
    /// The resource name in eviction messages (upstream's `signalToResource`).
    pub fn name(self) -> &'static str {
        match self {
            Resource::Memory => "memory",
            Resource::EphemeralStorage => "ephemeral-storage",
            Resource::Inodes => "inodes",
            Resource::Pids => "pids",
        }
    }

    /// Whether quantities of it are bytes (written `Mi`, `Gi`) rather than counts.
    pub fn is_bytes(self) -> bool {
        matches!(self, Resource::Memory | Resource::EphemeralStorage)
    }
}

impl Signal {
    pub const ALL: [Signal; 6] = [
        Signal::MemoryAvailable,
        Signal::NodeFsAvailable,
        Signal::NodeFsInodesFree,
        Signal::ImageFsAvailable,
        Signal::ImageFsInodesFree,
        Signal::PidAvailable,
    ];

    /// The signal's name in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory.available",
            Signal::NodeFsAvailable => "nodefs.available",
            Signal::NodeFsInodesFree => "nodefs.inodesFree",
            Signal::ImageFsAvailable => "imagefs.available",
            Signal::ImageFsInodesFree => "imagefs.inodesFree",
            Signal::PidAvailable => "pid.available",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    pub fn condition(self) -> Condition {
        match self {
            Signal::MemoryAvailable => Condition::Memory,
            Signal::PidAvailable => Condition::Pid,
            _ => Condition::Disk,
        }
    }

    pub fn resource(self) -> Resource {
        match self {
            Signal::MemoryAvailable => Resource::Memory,
            Signal::NodeFsAvailable | Signal::ImageFsAvailable => Resource::EphemeralStorage,
            Signal::NodeFsInodesFree | Signal::ImageFsInodesFree => Resource::Inodes,
            Signal::PidAvailable => Resource::Pids,
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A threshold's value: an amount, or a share of the resource's capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    Quantity(u64),
    /// `0.1` for `10%`.
    Percentage(f64),
}

impl Amount {
    /// The amount for a resource of `capacity` (percentages rounded down, as upstream).
    pub fn of(self, capacity: u64) -> u64 {
        match self {
            Amount::Quantity(q) => q,
            Amount::Percentage(p) => {
                #[allow(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    clippy::cast_precision_loss,
                    reason = "a share of a u64 capacity, rounded down like upstream"
                )]
                let amount = (capacity as f64 * p.clamp(0.0, 1.0)) as u64;
                amount
            }
        }
    }

    fn from_config(threshold: EvictionThreshold) -> Self {
        match threshold {
            EvictionThreshold::Quantity(q) => {
                Amount::Quantity(u64::try_from(q.value()).unwrap_or(0))
            }
            EvictionThreshold::Percent { .. } => {
                Amount::Percentage(threshold.fraction().unwrap_or(0.0))
            }
        }
    }
}

/// One threshold: the signal is met when its available amount is below `value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub signal: Signal,
    pub value: Amount,
    /// Zero for a hard threshold; a soft one is acted on once met this long.
    pub grace_period: Duration,
    /// Once met, the threshold stays met until this much more than `value` is available.
    pub min_reclaim: Option<Amount>,
}

impl Threshold {
    pub fn is_hard(&self) -> bool {
        self.grace_period.is_zero()
    }

    /// The threshold's key in the planner's state: soft and hard thresholds of one signal are
    /// tracked apart.
    pub fn key(&self) -> (Signal, bool) {
        (self.signal, self.is_hard())
    }
}

/// Everything the eviction manager is configured with.
#[derive(Debug, Clone, PartialEq)]
pub struct EvictionConfig {
    pub thresholds: Vec<Threshold>,
    /// `evictionMaxPodGracePeriod`, seconds: the most a pod evicted for a soft threshold gets.
    pub max_pod_grace_period_seconds: i64,
    /// `evictionPressureTransitionPeriod`.
    pub pressure_transition_period: Duration,
}

/// Upstream's Linux `evictionHard` defaults.
pub fn default_hard() -> Vec<(Signal, Amount)> {
    vec![
        (Signal::MemoryAvailable, Amount::Quantity(100 << 20)),
        (Signal::NodeFsAvailable, Amount::Percentage(0.1)),
        (Signal::NodeFsInodesFree, Amount::Percentage(0.05)),
        (Signal::ImageFsAvailable, Amount::Percentage(0.15)),
    ]
}

impl EvictionConfig {
    /// The thresholds of a (validated) kubelet configuration, and the configured signals kwk
    /// does not act on (`allocatableMemory.available`, `containerfs.*`), to be logged.
    pub fn from_kubelet(config: &KubeletConfig) -> (Self, Vec<String>) {
        let mut ignored = Vec::new();
        let mut known = |map: &BTreeMap<String, EvictionThreshold>| -> Vec<(Signal, Amount)> {
            map.iter()
                .filter_map(|(name, t)| match Signal::from_name(name) {
                    Some(signal) => Some((signal, Amount::from_config(*t))),
                    None => {
                        ignored.push(name.clone());
                        None
                    }
                })
                .collect()
        };
        let hard = match &config.eviction_hard {
            Some(map) => known(map),
            None => default_hard(),
        };
        let soft = known(&config.eviction_soft);
        let min_reclaim: BTreeMap<Signal, Amount> = config
            .eviction_minimum_reclaim
            .iter()
            .filter_map(|(name, t)| Some((Signal::from_name(name)?, Amount::from_config(*t))))
            .collect();
        let mut thresholds = Vec::new();
        for (signal, value) in hard {
            thresholds.push(Threshold {
                signal,
                value,
                grace_period: Duration::ZERO,
                min_reclaim: min_reclaim.get(&signal).copied(),
            });
        }
        for (signal, value) in soft {
            let grace_period = config
                .eviction_soft_grace_period
                .get(signal.name())
                .copied()
                .unwrap_or_default();
            if grace_period.is_zero() {
                // Refused by config validation; never taken for a hard threshold.
                continue;
            }
            thresholds.push(Threshold {
                signal,
                value,
                grace_period,
                min_reclaim: min_reclaim.get(&signal).copied(),
            });
        }
        ignored.sort();
        ignored.dedup();
        (
            Self {
                thresholds,
                max_pod_grace_period_seconds: config.eviction_max_pod_grace_period,
                pressure_transition_period: config.eviction_pressure_transition_period,
            },
            ignored,
        )
    }

    /// The hard `memory.available` threshold, which the kernel notifier is armed with.
    pub fn memory_threshold(&self) -> Option<&Threshold> {
        self.thresholds
            .iter()
            .filter(|t| t.signal == Signal::MemoryAvailable)
            .min_by_key(|t| !t.is_hard())
    }
}

/// A byte count as a Kubernetes binary quantity (`100Mi`; bytes when not a whole unit).
pub fn bytes_quantity(bytes: u64) -> String {
    crate::node_status::plan::binary_quantity(bytes)
}

/// A count as a Kubernetes decimal quantity (`1k` for 1000).
pub fn count_quantity(count: u64) -> String {
    if count == 0 {
        return "0".to_string();
    }
    let mut n = count;
    for suffix in ["", "k", "M", "G", "T", "P", "E"] {
        if !n.is_multiple_of(1000) {
            return format!("{n}{suffix}");
        }
        n /= 1000;
    }
    count.to_string()
}

/// A quantity of `resource` written as upstream writes it.
pub fn quantity_of(resource: Resource, amount: u64) -> String {
    if resource.is_bytes() {
        bytes_quantity(amount)
    } else {
        count_quantity(amount)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(body: &str) -> KubeletConfig {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.yaml");
        std::fs::write(
            &path,
            format!(
                "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n{body}"
            ),
        )
        .expect("write");
        crate::config::load(&path).expect("load").config
    }

    #[test]
    fn thresholds_from_the_configuration() {
        let (defaults, ignored) = EvictionConfig::from_kubelet(&KubeletConfig::default());
        assert!(ignored.is_empty());
        let got: Vec<(&str, Amount, bool)> = defaults
            .thresholds
            .iter()
            .map(|t| (t.signal.name(), t.value, t.is_hard()))
            .collect();
        assert_eq!(
            got,
            [
                ("memory.available", Amount::Quantity(100 << 20), true),
                ("nodefs.available", Amount::Percentage(0.1), true),
                ("nodefs.inodesFree", Amount::Percentage(0.05), true),
                ("imagefs.available", Amount::Percentage(0.15), true),
            ]
        );
        assert_eq!(
            defaults.pressure_transition_period,
            Duration::from_secs(300)
        );

        let (config, ignored) = EvictionConfig::from_kubelet(&load(
            "evictionHard: {memory.available: 200Mi, allocatableMemory.available: 1Mi}\n\
             evictionSoft: {memory.available: 1Gi}\n\
             evictionSoftGracePeriod: {memory.available: 30s}\n\
             evictionMinimumReclaim: {memory.available: 50Mi}\n\
             evictionMaxPodGracePeriod: 20\n",
        ));
        assert_eq!(ignored, ["allocatableMemory.available"]);
        assert_eq!(
            config.thresholds,
            [
                Threshold {
                    signal: Signal::MemoryAvailable,
                    value: Amount::Quantity(200 << 20),
                    grace_period: Duration::ZERO,
                    min_reclaim: Some(Amount::Quantity(50 << 20)),
                },
                Threshold {
                    signal: Signal::MemoryAvailable,
                    value: Amount::Quantity(1 << 30),
                    grace_period: Duration::from_secs(30),
                    min_reclaim: Some(Amount::Quantity(50 << 20)),
                },
            ]
        );
        assert_eq!(config.max_pod_grace_period_seconds, 20);
        assert_eq!(
            config.memory_threshold().map(|t| t.value),
            Some(Amount::Quantity(200 << 20)),
            "the hard memory threshold arms the notifier"
        );
    }

    #[test]
    fn quantities_are_written_as_upstream_writes_them() {
        let cases = [
            (Resource::Memory, 100 << 20, "100Mi"),
            (Resource::Memory, 83_886_080, "80Mi"),
            (Resource::Memory, 123_456_789, "123456789"),
            (Resource::Memory, 0, "0"),
            (Resource::Pids, 1000, "1k"),
            (Resource::Pids, 1500, "1500"),
            (Resource::Inodes, 2_000_000, "2M"),
        ];
        for (resource, amount, want) in cases {
            assert_eq!(quantity_of(resource, amount), want, "{amount}");
        }
        assert_eq!(Amount::Percentage(0.1).of(1000), 100);
        assert_eq!(Amount::Percentage(0.075).of(1000), 75);
        assert_eq!(Amount::Quantity(5).of(1000), 5);
    }
}
