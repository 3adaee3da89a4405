//! Cross-node pod traffic, host-gw style: a route to every other node's podCIDR via that node's
//! InternalIP, so pod-to-pod traffic crosses nodes without encapsulation or NAT. Pure: the routes
//! wanted from the Node objects ([`desired_routes`]) and the steps from the routes the kernel
//! has ([`plan_routes`]); the executor (rtnetlink) marks its routes with [`ROUTE_PROTOCOL`] so
//! it only ever touches its own.

use std::collections::BTreeSet;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Node;

use crate::model::{Cidr, IpFamily};

/// The `rtm_protocol` of the routes kwk-node installs (an unassigned value in
/// `/etc/iproute2/rt_protos`), so `ip route show proto 0x6b` lists them and the executor never
/// deletes a route it did not make.
pub const ROUTE_PROTOCOL: u8 = 0x6b;

/// Another node as far as routing is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerNode {
    pub name: String,
    pub internal_ips: Vec<IpAddr>,
    pub pod_cidrs: Vec<Cidr>,
}

impl PeerNode {
    /// Reads a Node: `spec.podCIDRs` (or `spec.podCIDR`) and its `InternalIP` addresses.
    /// CIDRs or addresses that do not parse are skipped.
    pub fn from_node(node: &Node) -> Self {
        let spec = node.spec.as_ref();
        let cidrs: Vec<String> = spec
            .and_then(|s| s.pod_cidrs.clone())
            .filter(|c| !c.is_empty())
            .or_else(|| spec.and_then(|s| s.pod_cidr.clone()).map(|c| vec![c]))
            .unwrap_or_default();
        let internal_ips = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .filter(|a| a.type_ == "InternalIP")
            .filter_map(|a| a.address.parse().ok())
            .collect();
        PeerNode {
            name: node.metadata.name.clone().unwrap_or_default(),
            internal_ips,
            pod_cidrs: cidrs.iter().filter_map(|c| c.parse().ok()).collect(),
        }
    }
}

/// A route to a pod CIDR through another node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostRoute {
    pub dst: Cidr,
    pub via: IpAddr,
}

/// One step for the executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteAction {
    /// Add the route, replacing one to the same destination.
    Replace(HostRoute),
    Delete(HostRoute),
}

/// The routes this node wants: for each other node, each pod CIDR via its first InternalIP of
/// the same family. Skips this node, nodes without a usable address, and CIDRs that overlap
/// this node's own (a misallocation must not blackhole local pods).
pub fn desired_routes(me: &str, own_cidrs: &[Cidr], nodes: &[PeerNode]) -> BTreeSet<HostRoute> {
    let mut out = BTreeSet::new();
    for node in nodes.iter().filter(|n| n.name != me) {
        for dst in &node.pod_cidrs {
            let overlaps = own_cidrs
                .iter()
                .any(|own| own.contains(dst.network()) || dst.contains(own.network()));
            let via = node
                .internal_ips
                .iter()
                .find(|ip| IpFamily::of(**ip) == dst.family());
            if let (false, Some(via)) = (overlaps, via) {
                out.insert(HostRoute {
                    dst: *dst,
                    via: *via,
                });
            }
        }
    }
    out
}

/// Steps from `observed` (the kernel's routes with [`ROUTE_PROTOCOL`]) to `desired`: deletions
/// first (a CIDR moving between nodes is a replace, not a delete after an add).
pub fn plan_routes(desired: &BTreeSet<HostRoute>, observed: &[HostRoute]) -> Vec<RouteAction> {
    let wanted_dsts: BTreeSet<Cidr> = desired.iter().map(|r| r.dst).collect();
    let observed_set: BTreeSet<HostRoute> = observed.iter().copied().collect();
    let mut out: Vec<RouteAction> = observed_set
        .iter()
        .filter(|r| !wanted_dsts.contains(&r.dst))
        .map(|r| RouteAction::Delete(*r))
        .collect();
    out.extend(
        desired
            .iter()
            .filter(|r| !observed_set.contains(r))
            .map(|r| RouteAction::Replace(*r)),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn peer(name: &str, ips: &[&str], cidrs: &[&str]) -> PeerNode {
        PeerNode {
            name: name.into(),
            internal_ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
            pod_cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
        }
    }

    fn route(dst: &str, via: &str) -> HostRoute {
        HostRoute {
            dst: dst.parse().unwrap(),
            via: via.parse().unwrap(),
        }
    }

    #[test]
    fn desired_routes_per_peer_and_family() {
        let own: Vec<Cidr> = vec!["10.244.1.0/24".parse().unwrap()];
        let nodes = [
            peer("me", &["192.168.0.1"], &["10.244.1.0/24"]),
            peer(
                "b",
                &["192.168.0.2", "fd00::2"],
                &["10.244.2.0/24", "fd00:244:2::/64"],
            ),
            peer("no-ip", &[], &["10.244.3.0/24"]),
            peer("v6-only-ip", &["fd00::4"], &["10.244.4.0/24"]),
            peer("overlaps-me", &["192.168.0.5"], &["10.244.0.0/16"]),
            peer("no-cidr", &["192.168.0.6"], &[]),
        ];
        let got: Vec<HostRoute> = desired_routes("me", &own, &nodes).into_iter().collect();
        assert_eq!(
            got,
            [
                route("10.244.2.0/24", "192.168.0.2"),
                route("fd00:244:2::/64", "fd00::2")
            ]
        );
    }

    #[test]
    fn plans() {
        let desired: BTreeSet<HostRoute> = [
            route("10.244.2.0/24", "192.168.0.2"),
            route("10.244.3.0/24", "192.168.0.9"),
        ]
        .into();
        let cases: Vec<(&str, Vec<HostRoute>, Vec<RouteAction>)> = vec![
            (
                "empty kernel: add all",
                vec![],
                desired.iter().map(|r| RouteAction::Replace(*r)).collect(),
            ),
            (
                "in sync: nothing",
                desired.iter().copied().collect(),
                vec![],
            ),
            (
                "a node left: delete its route; a CIDR moved: replace",
                vec![
                    route("10.244.2.0/24", "192.168.0.2"),
                    route("10.244.3.0/24", "192.168.0.3"),
                    route("10.244.7.0/24", "192.168.0.7"),
                ],
                vec![
                    RouteAction::Delete(route("10.244.7.0/24", "192.168.0.7")),
                    RouteAction::Replace(route("10.244.3.0/24", "192.168.0.9")),
                ],
            ),
        ];
        for (name, observed, want) in cases {
            assert_eq!(plan_routes(&desired, &observed), want, "{name}");
        }
    }

    #[test]
    fn peers_from_node_objects() {
        let node = Node {
            metadata: ObjectMeta {
                name: Some("b".into()),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: Some("10.244.2.0/24".into()),
                ..NodeSpec::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(vec![
                    NodeAddress {
                        type_: "Hostname".into(),
                        address: "b".into(),
                    },
                    NodeAddress {
                        type_: "InternalIP".into(),
                        address: "192.168.0.2".into(),
                    },
                ]),
                ..NodeStatus::default()
            }),
        };
        assert_eq!(
            PeerNode::from_node(&node),
            peer("b", &["192.168.0.2"], &["10.244.2.0/24"])
        );
    }
}
