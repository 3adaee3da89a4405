//! Node capacity and allocatable resources from the machine's resources and the config, as the
//! kubelet reports them in the Node status: allocatable = capacity − kubeReserved −
//! systemReserved, never below zero; pods = `maxPods`. Pure.
//!
//! Not yet subtracted (as upstream does): the hard eviction threshold for memory
//! (`evictionHard`, an ignored field), and ephemeral storage is not computed.

use crate::config::{KubeletConfig, ReservedResource};

/// What the machine has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MachineResources {
    /// Online CPUs, in millicores (4 CPUs = 4000).
    pub cpu_millis: u64,
    /// Physical memory, in bytes.
    pub memory_bytes: u64,
}

/// A node's capacity or allocatable resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeResources {
    /// CPU in millicores.
    pub cpu_millis: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// How many pods.
    pub pods: u64,
}

/// The node's capacity: the machine's CPU and memory, and `maxPods` pods.
pub fn capacity(machine: &MachineResources, config: &KubeletConfig) -> NodeResources {
    NodeResources {
        cpu_millis: machine.cpu_millis,
        memory_bytes: machine.memory_bytes,
        pods: u64::from(config.max_pods),
    }
}

/// The node's allocatable resources: capacity less what `kubeReserved` and `systemReserved`
/// set aside, never below zero.
pub fn allocatable(machine: &MachineResources, config: &KubeletConfig) -> NodeResources {
    let capacity = capacity(machine, config);
    let reserved = |resource: ReservedResource, amount: fn(crate::quantity::Quantity) -> i64| {
        [&config.kube_reserved, &config.system_reserved]
            .iter()
            .filter_map(|reserved| reserved.get(&resource))
            .map(|&q| u64::try_from(amount(q)).unwrap_or(0))
            .fold(0u64, u64::saturating_add)
    };
    NodeResources {
        cpu_millis: capacity
            .cpu_millis
            .saturating_sub(reserved(ReservedResource::Cpu, |q| q.milli())),
        memory_bytes: capacity
            .memory_bytes
            .saturating_sub(reserved(ReservedResource::Memory, |q| q.value())),
        pods: capacity.pods,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantity::parse;
    use std::collections::BTreeMap;

    const GI: u64 = 1024 * 1024 * 1024;

    fn reserved(
        pairs: &[(ReservedResource, &str)],
    ) -> BTreeMap<ReservedResource, crate::quantity::Quantity> {
        pairs.iter().map(|&(r, q)| (r, parse(q).unwrap())).collect()
    }

    /// Name, kubeReserved, systemReserved, maxPods, expected allocatable.
    type Case = (
        &'static str,
        &'static [(ReservedResource, &'static str)],
        &'static [(ReservedResource, &'static str)],
        u32,
        NodeResources,
    );

    #[test]
    fn allocatable_is_capacity_less_reservations() {
        use ReservedResource::{Cpu, Memory, Pid};
        let machine = MachineResources {
            cpu_millis: 4000,
            memory_bytes: 8 * GI,
        };
        let cases: &[Case] = &[
            (
                "nothing reserved",
                &[],
                &[],
                110,
                NodeResources {
                    cpu_millis: 4000,
                    memory_bytes: 8 * GI,
                    pods: 110,
                },
            ),
            (
                "both reservations add up",
                &[(Cpu, "500m"), (Memory, "1Gi")],
                &[(Cpu, "250m"), (Memory, "512Mi"), (Pid, "1000")],
                50,
                NodeResources {
                    cpu_millis: 3250,
                    memory_bytes: 8 * GI - GI - GI / 2,
                    pods: 50,
                },
            ),
            (
                "never below zero",
                &[(Cpu, "3"), (Memory, "6Gi")],
                &[(Cpu, "2"), (Memory, "4Gi")],
                110,
                NodeResources {
                    cpu_millis: 0,
                    memory_bytes: 0,
                    pods: 110,
                },
            ),
            (
                "memory rounds up to whole bytes",
                &[(Memory, "1500m")],
                &[],
                110,
                NodeResources {
                    cpu_millis: 4000,
                    memory_bytes: 8 * GI - 2,
                    pods: 110,
                },
            ),
        ];
        for (name, kube, system, max_pods, expected) in cases {
            let config = KubeletConfig {
                kube_reserved: reserved(kube),
                system_reserved: reserved(system),
                max_pods: *max_pods,
                ..KubeletConfig::default()
            };
            assert_eq!(allocatable(&machine, &config), *expected, "{name}");
        }
    }

    #[test]
    fn capacity_pods_is_max_pods() {
        let machine = MachineResources {
            cpu_millis: 2000,
            memory_bytes: GI,
        };
        let config = KubeletConfig {
            max_pods: 17,
            ..KubeletConfig::default()
        };
        assert_eq!(
            capacity(&machine, &config),
            NodeResources {
                cpu_millis: 2000,
                memory_bytes: GI,
                pods: 17
            }
        );
    }
}
