//! The part of the hard eviction thresholds that node allocatable holds back, as upstream's
//! node allocatable does: `memory.available` from memory, `nodefs.available` from ephemeral
//! storage. The thresholds themselves (and the pressure conditions) belong to the eviction
//! manager ([`crate::eviction`]); this is only their reading for allocatable.

use crate::config::KubeletConfig;
use crate::eviction::signals::{Amount, EvictionConfig, Signal};

/// The hard thresholds allocatable subtracts; `None` where none is configured.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct EvictionReserve {
    pub memory_available: Option<Amount>,
    pub nodefs_available: Option<Amount>,
}

impl EvictionReserve {
    /// The hard `memory.available` and `nodefs.available` thresholds of the eviction
    /// configuration (upstream's defaults when `evictionHard` is unset).
    pub fn of(config: &EvictionConfig) -> Self {
        let hard = |signal: Signal| {
            config
                .thresholds
                .iter()
                .find(|t| t.signal == signal && t.is_hard())
                .map(|t| t.value)
        };
        Self {
            memory_available: hard(Signal::MemoryAvailable),
            nodefs_available: hard(Signal::NodeFsAvailable),
        }
    }

    /// The reserve of a kubelet configuration's eviction thresholds.
    pub fn from_kubelet(config: &KubeletConfig) -> Self {
        Self::of(&EvictionConfig::from_kubelet(config).0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_follows_the_hard_thresholds() {
        let defaults = EvictionConfig::from_kubelet(&KubeletConfig::default()).0;
        assert_eq!(
            EvictionReserve::from_kubelet(&KubeletConfig::default()),
            EvictionReserve {
                memory_available: Some(Amount::Quantity(100 << 20)),
                nodefs_available: Some(Amount::Percentage(0.1)),
            },
            "upstream's defaults"
        );
        let threshold = |signal, value, grace_secs| crate::eviction::Threshold {
            signal,
            value,
            grace_period: std::time::Duration::from_secs(grace_secs),
            min_reclaim: None,
        };
        let configured = EvictionConfig {
            thresholds: vec![
                threshold(Signal::MemoryAvailable, Amount::Quantity(1 << 30), 0),
                threshold(Signal::NodeFsAvailable, Amount::Percentage(0.2), 60),
            ],
            ..defaults
        };
        assert_eq!(
            EvictionReserve::of(&configured),
            EvictionReserve {
                memory_available: Some(Amount::Quantity(1 << 30)),
                nodefs_available: None,
            },
            "soft thresholds reserve nothing"
        );
    }
}
