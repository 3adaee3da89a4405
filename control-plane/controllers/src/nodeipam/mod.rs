//! The node IPAM controller (upstream `pkg/controller/nodeipam`, the range allocator): it
//! owns `spec.podCIDR` / `spec.podCIDRs` of nodes, carving one subnet of
//! `--node-cidr-mask-size` out of each `--cluster-cidr` (one IPv4, one IPv6, or both) for
//! every node that has none.
//!
//! The planner is stateless: the subnets the observed nodes hold are the occupied ones
//! (so a deleted node's subnet is free again once it is gone), and a node without one gets
//! the lowest free subnet of each cluster CIDR.

mod cidr;
pub mod controller;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Node;
use serde_json::json;

use crate::action::{Action, EventType};

pub use cidr::{Cidr, CidrParseError};

/// Default `--node-cidr-mask-size` for IPv4 cluster CIDRs.
pub const DEFAULT_NODE_MASK_V4: u8 = 24;
/// Default `--node-cidr-mask-size` for IPv6 cluster CIDRs.
pub const DEFAULT_NODE_MASK_V6: u8 = 64;
/// At most this many bits between a cluster CIDR's prefix and the node mask (upstream
/// `clusterSubnetMaxDiff`): 65536 subnets.
pub const MAX_SUBNET_BITS: u8 = 16;

/// Why the IPAM configuration is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamConfigError {
    #[error("no --cluster-cidr given")]
    NoClusterCidr,
    #[error("at most two cluster CIDRs (one IPv4, one IPv6), got {0}")]
    TooManyClusterCidrs(usize),
    #[error("dual-stack cluster CIDRs {0} and {1} must be of different IP families")]
    SameFamily(Cidr, Cidr),
    #[error("{masks} node CIDR mask sizes for {cidrs} cluster CIDRs")]
    MaskCount { masks: usize, cidrs: usize },
    #[error("node CIDR mask size /{mask} is shorter than cluster CIDR {cidr}")]
    MaskShorterThanCluster { cidr: Cidr, mask: u8 },
    #[error("node CIDR mask size /{mask} is too long for the address family of {cidr}")]
    MaskTooLong { cidr: Cidr, mask: u8 },
    #[error("cluster CIDR {cidr} with node mask /{mask} has more than 2^{MAX_SUBNET_BITS} subnets")]
    TooManySubnets { cidr: Cidr, mask: u8 },
}

/// One cluster CIDR and the size of the subnets carved out of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterCidr {
    pub cidr: Cidr,
    pub node_mask: u8,
}

/// The default node mask for `cidr`'s family.
pub fn default_node_mask(cidr: &Cidr) -> u8 {
    if cidr.is_ipv4() {
        DEFAULT_NODE_MASK_V4
    } else {
        DEFAULT_NODE_MASK_V6
    }
}

/// Validate `--cluster-cidr` and `--node-cidr-mask-size(s)`. `mask_sizes` may be empty
/// (family defaults) or give one size per cluster CIDR.
pub fn cluster_cidrs(
    cidrs: &[Cidr],
    mask_sizes: &[u8],
) -> Result<Vec<ClusterCidr>, IpamConfigError> {
    match cidrs {
        [] => return Err(IpamConfigError::NoClusterCidr),
        [_] => {}
        [a, b] if a.is_ipv4() == b.is_ipv4() => return Err(IpamConfigError::SameFamily(*a, *b)),
        [_, _] => {}
        _ => return Err(IpamConfigError::TooManyClusterCidrs(cidrs.len())),
    }
    if !mask_sizes.is_empty() && mask_sizes.len() != cidrs.len() {
        return Err(IpamConfigError::MaskCount {
            masks: mask_sizes.len(),
            cidrs: cidrs.len(),
        });
    }
    cidrs
        .iter()
        .enumerate()
        .map(|(i, cidr)| {
            let mask = mask_sizes
                .get(i)
                .copied()
                .unwrap_or_else(|| default_node_mask(cidr));
            let cidr = *cidr;
            if mask > cidr.bits() {
                Err(IpamConfigError::MaskTooLong { cidr, mask })
            } else if mask < cidr.prefix() {
                Err(IpamConfigError::MaskShorterThanCluster { cidr, mask })
            } else if mask - cidr.prefix() > MAX_SUBNET_BITS {
                Err(IpamConfigError::TooManySubnets { cidr, mask })
            } else {
                Ok(ClusterCidr {
                    cidr,
                    node_mask: mask,
                })
            }
        })
        .collect()
}

/// The pod CIDRs a node holds (`spec.podCIDRs`, else `spec.podCIDR`), unparsable ones
/// left out.
fn pod_cidrs_of(node: &Node) -> Vec<Cidr> {
    let Some(spec) = node.spec.as_ref() else {
        return Vec::new();
    };
    let listed: Vec<&String> = match spec.pod_cidrs.as_deref() {
        Some(list) if !list.is_empty() => list.iter().collect(),
        _ => spec.pod_cidr.iter().collect(),
    };
    listed.into_iter().filter_map(|s| s.parse().ok()).collect()
}

fn has_pod_cidr(node: &Node) -> bool {
    node.spec.as_ref().is_some_and(|s| {
        s.pod_cidr.as_deref().is_some_and(|c| !c.is_empty())
            || s.pod_cidrs.as_ref().is_some_and(|l| !l.is_empty())
    })
}

/// The subnets of one cluster CIDR and which are taken.
struct SubnetPool {
    cluster: ClusterCidr,
    taken: BTreeSet<u128>,
}

impl SubnetPool {
    fn new(cluster: ClusterCidr) -> Self {
        SubnetPool {
            cluster,
            taken: BTreeSet::new(),
        }
    }

    fn count(&self) -> u128 {
        1u128 << (self.cluster.node_mask - self.cluster.cidr.prefix())
    }

    /// The subnet indexes `held` overlaps.
    fn occupy(&mut self, held: &Cidr) {
        let cluster = self.cluster.cidr;
        if !cluster.overlaps(held) {
            return;
        }
        let shift = u32::from(cluster.bits() - self.cluster.node_mask);
        let start = held.network().max(cluster.network()) - cluster.network();
        let first = start.checked_shr(shift).unwrap_or(0);
        let span_prefix = held.prefix().max(cluster.prefix());
        let count = if held.prefix() >= self.cluster.node_mask {
            1
        } else {
            1u128 << (self.cluster.node_mask - span_prefix)
        };
        for index in first..first.saturating_add(count).min(self.count()) {
            self.taken.insert(index);
        }
    }

    /// Take the lowest free subnet.
    fn allocate(&mut self) -> Option<Cidr> {
        let index = (0..self.count()).find(|i| !self.taken.contains(i))?;
        self.taken.insert(index);
        let shift = u32::from(self.cluster.cidr.bits() - self.cluster.node_mask);
        Some(Cidr::from_network(
            self.cluster.cidr,
            self.cluster.cidr.network() + index.checked_shl(shift).unwrap_or(0),
            self.cluster.node_mask,
        ))
    }
}

/// One pass of the range allocator: a pod CIDR (one per cluster CIDR) for every node that
/// has none, never one another node holds; an event `CIDRNotAvailable` on nodes for which
/// a cluster CIDR is exhausted.
pub fn plan(clusters: &[ClusterCidr], nodes: &[Node]) -> Vec<Action> {
    let mut pools: Vec<SubnetPool> = clusters.iter().copied().map(SubnetPool::new).collect();
    for node in nodes {
        for held in pod_cidrs_of(node) {
            for pool in &mut pools {
                pool.occupy(&held);
            }
        }
    }
    let mut waiting: Vec<&Node> = nodes
        .iter()
        .filter(|n| !has_pod_cidr(n) && n.metadata.deletion_timestamp.is_none())
        .collect();
    // Oldest first, so a restart hands out the same subnets.
    waiting.sort_by(|a, b| {
        let key = |n: &Node| {
            (
                n.metadata.creation_timestamp.as_ref().map(|t| t.0),
                n.metadata.name.clone(),
            )
        };
        key(a).cmp(&key(b))
    });

    let mut actions = Vec::new();
    for node in waiting {
        let allocated: Option<Vec<Cidr>> = pools.iter_mut().map(SubnetPool::allocate).collect();
        match allocated {
            Some(cidrs) if !cidrs.is_empty() => {
                let strings: Vec<String> = cidrs.iter().map(Cidr::to_string).collect();
                actions.push(Action::patch(
                    node,
                    None,
                    json!({
                        "metadata": { "uid": node.metadata.uid },
                        "spec": { "podCIDR": strings[0], "podCIDRs": strings },
                    }),
                ));
            }
            _ => {
                let name = node.metadata.name.as_deref().unwrap_or_default();
                actions.push(Action::event(
                    node,
                    EventType::Normal,
                    "CIDRNotAvailable",
                    format!("Node {name} status is now: CIDRNotAvailable"),
                ));
            }
        }
    }
    actions
}
