//! Pure decisions of ADD and CHECK: given what exists (links, addresses, routes), which steps
//! bring the bridge and the pod's veth to the desired state, and whether what exists matches a
//! `prevResult`. No I/O; the executor in [`crate::plugin`] performs the steps.

use std::net::Ipv4Addr;

use crate::ipv4::Ipv4Cidr;
use crate::netlink::{LinkState, RouteState, format_mac};
use crate::result::CniResult;

/// The host-side veth name of an attachment: stable across repeated ADDs and known to DEL even
/// when the pod's namespace is gone (`veth` + 8 hex digits of a hash of container ID + ifname).
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    // FNV-1a, 64 bit: a fixed, dependency-free hash.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in container_id.bytes().chain([0]).chain(ifname.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("veth{:08x}", (hash ^ (hash >> 32)) as u32)
}

/// Prefix of retired veth ends: renamed out of the way by DEL, deleted right after by a
/// detached reaper (or by GC if that never ran).
pub const RETIRED_PREFIX: &str = "kwkd";

/// A unique name for a retired veth (`kwkd` + 8 hex digits); `salt` makes repeated retirements
/// of the same attachment distinct.
pub fn retired_name(host_veth: &str, salt: u64) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in host_veth.bytes().chain(salt.to_le_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{RETIRED_PREFIX}{:08x}", (hash ^ (hash >> 32)) as u32)
}

/// A locally administered unicast MAC for a new bridge, from a hash of its name and `salt`.
pub fn bridge_mac(bridge: &str, salt: u64) -> [u8; 6] {
    local_mac(bridge.bytes(), salt)
}

/// A locally administered unicast MAC for the pod end of a new veth pair, from a hash of the
/// attachment and `salt` (the kernel would pick a random one the same way; choosing it here
/// saves reading the link back from the pod namespace).
pub fn pod_mac(container_id: &str, ifname: &str, salt: u64) -> [u8; 6] {
    local_mac(container_id.bytes().chain([0]).chain(ifname.bytes()), salt)
}

fn local_mac(seed: impl Iterator<Item = u8>, salt: u64) -> [u8; 6] {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in seed.chain(salt.to_le_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let bytes = hash.to_le_bytes();
    [
        (bytes[0] & 0xfe) | 0x02,
        bytes[1],
        bytes[2],
        bytes[3],
        bytes[4],
        bytes[5],
    ]
}

/// The bridge as found in the host namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedBridge {
    pub link: LinkState,
    pub addresses: Vec<Ipv4Cidr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeStep {
    Create,
    SetUp,
    AddAddress(Ipv4Cidr),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("{name:?} exists and is not a bridge (kind {kind:?})")]
    NotABridge { name: String, kind: Option<String> },
    #[error("{ifname:?} already exists in the pod namespace and is not this attachment's veth")]
    IfnameTaken { ifname: String },
}

/// Steps that make the bridge exist, be up and carry `gateway` (when it is the gateway).
pub fn plan_bridge(
    name: &str,
    gateway: Option<Ipv4Cidr>,
    observed: Option<&ObservedBridge>,
) -> Result<Vec<BridgeStep>, PlanError> {
    let mut steps = Vec::new();
    match observed {
        None => steps.push(BridgeStep::Create),
        Some(bridge) => {
            if bridge.link.kind.as_deref() != Some("bridge") {
                return Err(PlanError::NotABridge {
                    name: name.to_owned(),
                    kind: bridge.link.kind.clone(),
                });
            }
            if !bridge.link.up {
                steps.push(BridgeStep::SetUp);
            }
        }
    }
    if let Some(gateway) = gateway {
        let present = observed.is_some_and(|bridge| bridge.addresses.contains(&gateway));
        if !present {
            steps.push(BridgeStep::AddAddress(gateway));
        }
    }
    Ok(steps)
}

/// The attachment's links as found: the host-side veth (by its derived name) and `CNI_IFNAME`
/// in the pod namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedPod {
    pub host_veth: Option<LinkState>,
    pub pod_link: Option<LinkState>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkStep {
    /// Remove a leftover host-side veth whose pod end is gone.
    DeleteHostVeth,
    /// Create the pair, the peer directly in the pod namespace (down), host end up and on the
    /// bridge.
    CreateVeth,
    AttachHostToBridge,
    SetHostUp,
    SetPodUp,
}

/// Steps that give the pod a veth attached to the bridge `bridge_index`: nothing to create on a
/// repeated ADD, repairs for a half-configured pair, a fresh pair otherwise.
pub fn plan_pod_links(
    ifname: &str,
    bridge_index: u32,
    observed: &ObservedPod,
) -> Result<Vec<LinkStep>, PlanError> {
    let ours = match (&observed.host_veth, &observed.pod_link) {
        (Some(host), Some(pod)) => {
            pod.kind.as_deref() == Some("veth") && pod.peer_index == Some(host.index)
        }
        _ => false,
    };
    if let (Some(host), Some(pod)) = (&observed.host_veth, &observed.pod_link)
        && ours
    {
        let mut steps = Vec::new();
        if host.master != Some(bridge_index) {
            steps.push(LinkStep::AttachHostToBridge);
        }
        if !host.up {
            steps.push(LinkStep::SetHostUp);
        }
        if !pod.up {
            steps.push(LinkStep::SetPodUp);
        }
        return Ok(steps);
    }
    if observed.pod_link.is_some() {
        return Err(PlanError::IfnameTaken {
            ifname: ifname.to_owned(),
        });
    }
    let mut steps = Vec::new();
    if observed.host_veth.is_some() {
        steps.push(LinkStep::DeleteHostVeth);
    }
    steps.extend([LinkStep::CreateVeth, LinkStep::SetPodUp]);
    Ok(steps)
}

/// What CHECK finds in the pod namespace and the IPAM store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedCheck {
    pub pod_link: Option<LinkState>,
    pub addresses: Vec<Ipv4Cidr>,
    pub routes: Vec<RouteState>,
    pub allocation: Option<Ipv4Addr>,
    /// The host end of the pair is up and attached to the configured bridge.
    pub host_on_bridge: bool,
}

/// Whether the attachment still matches `prev` (the ADD result): the interface exists with the
/// same MAC, carries every address and every route is present; the IPs are still allocated.
pub fn check_against(
    prev: &CniResult,
    ifname: &str,
    observed: &ObservedCheck,
) -> Result<(), String> {
    let Some(index) = prev
        .interfaces
        .iter()
        .position(|iface| iface.name == ifname && !iface.sandbox.is_empty())
    else {
        return Err(format!(
            "prevResult has no interface {ifname:?} in a sandbox"
        ));
    };
    let Some(link) = &observed.pod_link else {
        return Err(format!(
            "interface {ifname:?} is missing in the pod namespace"
        ));
    };
    let want_mac = &prev.interfaces[index].mac;
    if !want_mac.is_empty() && !want_mac.eq_ignore_ascii_case(&format_mac(&link.mac)) {
        return Err(format!(
            "interface {ifname:?} has MAC {}, prevResult says {want_mac}",
            format_mac(&link.mac)
        ));
    }
    if !link.up {
        return Err(format!("interface {ifname:?} is down"));
    }
    if !observed.host_on_bridge {
        return Err(format!(
            "the host end of {ifname:?} is not up on the bridge"
        ));
    }
    for ip in prev.ips.iter().filter(|ip| ip.interface == Some(index)) {
        let cidr = Ipv4Cidr::parse(&ip.address).map_err(|err| format!("prevResult: {err}"))?;
        if !observed.addresses.contains(&cidr) {
            return Err(format!("address {cidr} is missing on {ifname:?}"));
        }
        if observed.allocation != Some(cidr.addr()) {
            return Err(format!(
                "address {} is not allocated to this attachment",
                cidr.addr()
            ));
        }
    }
    for route in &prev.routes {
        let dst = Ipv4Cidr::parse(&route.dst)
            .map_err(|err| format!("prevResult route: {err}"))?
            .truncated();
        let gw: Option<Ipv4Addr> = match &route.gw {
            Some(gw) => Some(
                gw.parse()
                    .map_err(|_| format!("prevResult route gw {gw:?}"))?,
            ),
            None => None,
        };
        let found = observed
            .routes
            .iter()
            .any(|have| have.dst.truncated() == dst && gw.is_none_or(|gw| have.gw == Some(gw)));
        if !found {
            return Err(format!("route {} is missing", route.dst));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::{Interface, IpConfig, Route};

    fn link(index: u32, kind: &str, up: bool) -> LinkState {
        LinkState {
            index,
            kind: Some(kind.into()),
            up,
            ..LinkState::default()
        }
    }

    fn cidr(s: &str) -> Ipv4Cidr {
        Ipv4Cidr::parse(s).expect("cidr")
    }

    #[test]
    fn host_veth_names_are_stable_valid_and_distinct() {
        let a = host_veth_name("abc", "eth0");
        assert_eq!(a, host_veth_name("abc", "eth0"));
        assert_ne!(a, host_veth_name("abc", "eth1"));
        assert_ne!(a, host_veth_name("abd", "eth0"));
        assert_eq!(a.len(), 12);
        assert!(crate::config::valid_ifname(&a));
        let retired = retired_name(&a, 1);
        assert!(retired.starts_with(RETIRED_PREFIX) && crate::config::valid_ifname(&retired));
        assert_ne!(retired, retired_name(&a, 2));
    }

    #[test]
    fn generated_macs_are_local_unicast_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for salt in 0..64 {
            for mac in [
                bridge_mac("cni0", salt),
                pod_mac("abc", "eth0", salt),
                pod_mac("abd", "eth0", salt),
            ] {
                assert_eq!(mac[0] & 0x01, 0, "unicast");
                assert_eq!(mac[0] & 0x02, 0x02, "locally administered");
                assert!(seen.insert(mac), "distinct");
            }
        }
        assert_ne!(pod_mac("abc", "eth0", 1), pod_mac("abc", "eth1", 1));
    }

    #[test]
    fn bridge_plans() {
        let gw = cidr("10.0.0.1/24");
        let bridge = |up: bool, addrs: &[&str], kind: &str| ObservedBridge {
            link: link(3, kind, up),
            addresses: addrs.iter().map(|s| cidr(s)).collect(),
        };
        use BridgeStep::*;
        // (name, observed bridge, gateway, expected steps)
        type Case = (
            &'static str,
            Option<ObservedBridge>,
            Option<Ipv4Cidr>,
            Vec<BridgeStep>,
        );
        let cases: Vec<Case> = vec![
            ("missing", None, Some(gw), vec![Create, AddAddress(gw)]),
            ("missing, no gateway", None, None, vec![Create]),
            (
                "ready",
                Some(bridge(true, &["10.0.0.1/24"], "bridge")),
                Some(gw),
                vec![],
            ),
            (
                "down",
                Some(bridge(false, &["10.0.0.1/24"], "bridge")),
                Some(gw),
                vec![SetUp],
            ),
            (
                "no address",
                Some(bridge(true, &["10.9.0.1/24"], "bridge")),
                Some(gw),
                vec![AddAddress(gw)],
            ),
        ];
        for (name, observed, gateway, want) in cases {
            assert_eq!(
                plan_bridge("cni0", gateway, observed.as_ref()),
                Ok(want),
                "{name}"
            );
        }
        let err =
            plan_bridge("cni0", Some(gw), Some(&bridge(true, &[], "veth"))).expect_err("veth");
        assert!(matches!(err, PlanError::NotABridge { .. }));
    }

    #[test]
    fn pod_link_plans() {
        let host = |up: bool, master: Option<u32>| LinkState {
            master,
            ..link(10, "veth", up)
        };
        let pod = |peer: u32, up: bool| LinkState {
            peer_index: Some(peer),
            ..link(2, "veth", up)
        };
        use LinkStep::*;
        // (name, observed links, expected steps or an error)
        type Case = (&'static str, ObservedPod, Result<Vec<LinkStep>, ()>);
        let cases: Vec<Case> = vec![
            (
                "fresh",
                ObservedPod::default(),
                Ok(vec![CreateVeth, SetPodUp]),
            ),
            (
                "repeated ADD: nothing to do",
                ObservedPod {
                    host_veth: Some(host(true, Some(3))),
                    pod_link: Some(pod(10, true)),
                },
                Ok(vec![]),
            ),
            (
                "repair a detached, down pair",
                ObservedPod {
                    host_veth: Some(host(false, None)),
                    pod_link: Some(pod(10, false)),
                },
                Ok(vec![AttachHostToBridge, SetHostUp, SetPodUp]),
            ),
            (
                "stale host end",
                ObservedPod {
                    host_veth: Some(host(true, Some(3))),
                    pod_link: None,
                },
                Ok(vec![DeleteHostVeth, CreateVeth, SetPodUp]),
            ),
            (
                "ifname held by something else",
                ObservedPod {
                    host_veth: None,
                    pod_link: Some(pod(99, true)),
                },
                Err(()),
            ),
            (
                "ifname is a veth of another pair",
                ObservedPod {
                    host_veth: Some(host(true, Some(3))),
                    pod_link: Some(pod(11, true)),
                },
                Err(()),
            ),
        ];
        for (name, observed, want) in cases {
            let got = plan_pod_links("eth0", 3, &observed).map_err(drop);
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn check_table() {
        let prev = CniResult {
            interfaces: vec![
                Interface {
                    name: "cni0".into(),
                    ..Interface::default()
                },
                Interface {
                    name: "eth0".into(),
                    mac: "02:00:00:00:00:01".into(),
                    sandbox: "/run/netns/p".into(),
                    ..Interface::default()
                },
            ],
            ips: vec![IpConfig {
                address: "10.0.0.2/24".into(),
                gateway: Some("10.0.0.1".into()),
                interface: Some(1),
                ..IpConfig::default()
            }],
            routes: vec![Route {
                dst: "0.0.0.0/0".into(),
                gw: Some("10.0.0.1".into()),
            }],
            ..CniResult::default()
        };
        let good = ObservedCheck {
            pod_link: Some(LinkState {
                mac: vec![2, 0, 0, 0, 0, 1],
                ..link(2, "veth", true)
            }),
            addresses: vec![cidr("10.0.0.2/24")],
            routes: vec![
                RouteState {
                    dst: cidr("10.0.0.0/24"),
                    gw: None,
                    oif: Some(2),
                },
                RouteState {
                    dst: Ipv4Cidr::default_route(),
                    gw: Some("10.0.0.1".parse().expect("ip")),
                    oif: Some(2),
                },
            ],
            allocation: Some("10.0.0.2".parse().expect("ip")),
            host_on_bridge: true,
        };
        assert_eq!(check_against(&prev, "eth0", &good), Ok(()));
        let broken: Vec<(&str, ObservedCheck)> = vec![
            (
                "no link",
                ObservedCheck {
                    pod_link: None,
                    ..good.clone()
                },
            ),
            (
                "other MAC",
                ObservedCheck {
                    pod_link: Some(LinkState {
                        mac: vec![2, 0, 0, 0, 0, 2],
                        ..link(2, "veth", true)
                    }),
                    ..good.clone()
                },
            ),
            (
                "no address",
                ObservedCheck {
                    addresses: vec![],
                    ..good.clone()
                },
            ),
            (
                "no default route",
                ObservedCheck {
                    routes: good.routes[..1].to_vec(),
                    ..good.clone()
                },
            ),
            (
                "released",
                ObservedCheck {
                    allocation: None,
                    ..good.clone()
                },
            ),
            (
                "host end detached",
                ObservedCheck {
                    host_on_bridge: false,
                    ..good.clone()
                },
            ),
        ];
        for (name, observed) in broken {
            assert!(check_against(&prev, "eth0", &observed).is_err(), "{name}");
        }
        assert!(
            check_against(&prev, "eth1", &good).is_err(),
            "unknown ifname"
        );
    }
}
