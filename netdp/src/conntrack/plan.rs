//! The pure planner: which UDP conntrack entries a rule-set change makes stale.
//!
//! Semantics follow kube-proxy v1.33 (`pkg/proxy/conntrack/cleanup.go`): only UDP; for a
//! front end (ClusterIP, LoadBalancer IP, external IP, NodePort) whose Service has serving
//! endpoints, a flow to that front end's address and port whose reply source is not one of
//! them is stale — it points at a gone endpoint, or it was created while the Service rejected
//! and would otherwise keep being rejected. A Service without endpoints is left alone, and so
//! are the flows of a deleted Service. Where upstream reconciles the whole table on every sync,
//! this plans from the difference:
//!
//! - a front end that gained its first backend, or is new (a full sync after a restart sees
//!   every front end as new): delete its flows not answered by one of its backends;
//! - a front end that lost backends: delete its flows answered by the lost addresses (also when
//!   none are left, so clients get the Service's reject instead of a silent black hole — the
//!   blackholing upstream bug kubernetes#139628).
//!
//! Differences from upstream, deliberate: a NodePort filter names the node address the front
//! end listens on (upstream matches the port on any destination); the serving set is the front
//! end's own backends (its target plus its short-circuit backends), so endpoints the model left
//! out of a front end (e.g. by topology) count as not serving.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::{FlowFilter, ReplySource};
use crate::model::{FrontEnd, FrontEndKey, Protocol, RuleDiff, RuleSet, diff};

/// The filters selecting the UDP flows `diff` made stale. Sorted, without duplicates.
pub fn stale_flows(diff: &RuleDiff<'_>) -> Vec<FlowFilter> {
    let mut out = BTreeSet::new();
    for (key, front_end) in &diff.added {
        if key.protocol == Protocol::Udp {
            let serving = serving(front_end);
            if !serving.is_empty() {
                out.insert(filter(key, ReplySource::NotIn(serving)));
            }
        }
    }
    for change in &diff.changed {
        let key = change.key;
        if key.protocol != Protocol::Udp {
            continue;
        }
        let (old, new) = (serving(change.old), serving(change.new));
        if old.is_empty() && !new.is_empty() {
            out.insert(filter(key, ReplySource::NotIn(new.clone())));
        }
        for backend in &change.backends_removed {
            // Another port of the same address may still serve: reply sources are addresses.
            if !new.contains(&backend.ip) {
                out.insert(filter(key, ReplySource::Is(backend.ip)));
            }
        }
    }
    out.into_iter().collect()
}

/// [`stale_flows`] for a full sync from `previous` (the rule set last applied, `None` after a
/// restart: then every front end with backends is checked, as upstream's reconciler does).
pub fn stale_flows_full(previous: Option<&RuleSet>, new: &RuleSet) -> Vec<FlowFilter> {
    let empty = RuleSet::default();
    stale_flows(&diff(previous.unwrap_or(&empty), new))
}

/// The endpoint addresses a front end forwards to.
fn serving(front_end: &FrontEnd) -> BTreeSet<IpAddr> {
    front_end
        .target
        .backends()
        .iter()
        .chain(front_end.local_short_circuit.iter().flatten())
        .map(|b| b.ip)
        .collect()
}

fn filter(key: &FrontEndKey, reply_src: ReplySource) -> FlowFilter {
    FlowFilter {
        family: key.family,
        protocol: key.protocol,
        orig_dst: key.ip,
        orig_dst_port: key.port,
        reply_src,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        Backend, FrontEndKind, IpFamily, Masquerade, ServiceName, ServicePortName, Target,
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn be(s: &str) -> Backend {
        Backend {
            ip: ip(s),
            port: 5353,
            weight: 1,
            node_local: false,
        }
    }

    fn fe(kind: FrontEndKind, protocol: Protocol, target: Target) -> FrontEnd {
        FrontEnd {
            service: ServicePortName {
                service: ServiceName::new("ns", "dns"),
                port: String::new(),
                protocol,
            },
            kind,
            target,
            masquerade: Masquerade::Never,
            affinity_timeout_seconds: None,
            local_short_circuit: None,
            allowed_sources: None,
        }
    }

    fn rules(entries: &[(&str, Protocol, u16, FrontEnd)]) -> RuleSet {
        let mut r = RuleSet::default();
        for (addr, proto, port, front_end) in entries {
            r.front_ends
                .insert(FrontEndKey::new(ip(addr), *proto, *port), front_end.clone());
        }
        r
    }

    fn is(dst: &str, port: u16, src: &str) -> FlowFilter {
        FlowFilter {
            family: IpFamily::of(ip(dst)),
            protocol: Protocol::Udp,
            orig_dst: ip(dst),
            orig_dst_port: port,
            reply_src: ReplySource::Is(ip(src)),
        }
    }

    fn not_in(dst: &str, port: u16, srcs: &[&str]) -> FlowFilter {
        FlowFilter {
            reply_src: ReplySource::NotIn(srcs.iter().map(|s| ip(s)).collect()),
            ..is(dst, port, "0.0.0.0")
        }
    }

    use FrontEndKind::{ClusterIp, NodePort};
    use Protocol::{Tcp, Udp};

    fn backends(ips: &[&str]) -> Target {
        Target::Backends(ips.iter().map(|s| be(s)).collect())
    }

    #[test]
    fn planner_table() {
        let vip = "10.96.0.10";
        let node = "192.168.1.5";
        let v6 = "fd00::10";
        let two = backends(&["10.2.0.2", "10.2.0.3"]);
        let one = backends(&["10.2.0.3"]);
        let replaced = backends(&["10.2.0.4"]);
        struct Row {
            name: &'static str,
            old: RuleSet,
            new: RuleSet,
            want: Vec<FlowFilter>,
        }
        let rows = vec![
            Row {
                name: "an endpoint goes away: its flows to the ClusterIP",
                old: rules(&[(vip, Udp, 53, fe(ClusterIp, Udp, two.clone()))]),
                new: rules(&[(vip, Udp, 53, fe(ClusterIp, Udp, one.clone()))]),
                want: vec![is(vip, 53, "10.2.0.2")],
            },
            Row {
                name: "an endpoint is added: nothing is stale",
                old: rules(&[(vip, Udp, 53, fe(ClusterIp, Udp, one.clone()))]),
                new: rules(&[(vip, Udp, 53, fe(ClusterIp, Udp, two.clone()))]),
                want: vec![],
            },
            Row {
                name: "TCP is never cleaned",
                old: rules(&[(vip, Tcp, 53, fe(ClusterIp, Tcp, two))]),
                new: rules(&[(vip, Tcp, 53, fe(ClusterIp, Tcp, Target::Reject))]),
                want: vec![],
            },
            Row {
                name: "no endpoints -> some: flows cached while rejecting",
                old: rules(&[(vip, Udp, 53, fe(ClusterIp, Udp, Target::Reject))]),
                new: rules(&[(vip, Udp, 53, fe(ClusterIp, Udp, one.clone()))]),
                want: vec![not_in(vip, 53, &["10.2.0.3"])],
            },
            Row {
                name: "Local policy, no local endpoint (drop) -> one",
                old: rules(&[(node, Udp, 30053, fe(NodePort, Udp, Target::Drop))]),
                new: rules(&[(node, Udp, 30053, fe(NodePort, Udp, one.clone()))]),
                want: vec![not_in(node, 30053, &["10.2.0.3"])],
            },
            Row {
                name: "the last endpoint goes away: its flows, so clients get the reject",
                old: rules(&[(vip, Udp, 53, fe(ClusterIp, Udp, one.clone()))]),
                new: rules(&[(vip, Udp, 53, fe(ClusterIp, Udp, Target::Reject))]),
                want: vec![is(vip, 53, "10.2.0.3")],
            },
            Row {
                name: "endpoint replaced behind a NodePort: per node address",
                old: rules(&[
                    (vip, Udp, 53, fe(ClusterIp, Udp, one.clone())),
                    (node, Udp, 30053, fe(NodePort, Udp, one.clone())),
                ]),
                new: rules(&[
                    (vip, Udp, 53, fe(ClusterIp, Udp, replaced.clone())),
                    (node, Udp, 30053, fe(NodePort, Udp, replaced)),
                ]),
                want: vec![is(vip, 53, "10.2.0.3"), is(node, 30053, "10.2.0.3")],
            },
            Row {
                name: "same address, other port: still serving, nothing stale",
                old: rules(&[(vip, Udp, 53, fe(ClusterIp, Udp, one.clone()))]),
                new: rules(&[(
                    vip,
                    Udp,
                    53,
                    fe(
                        ClusterIp,
                        Udp,
                        Target::Backends(vec![Backend {
                            port: 5454,
                            ..be("10.2.0.3")
                        }]),
                    ),
                )]),
                want: vec![],
            },
            Row {
                name: "a new UDP Service with endpoints: anything not to them",
                old: rules(&[]),
                new: rules(&[
                    (vip, Udp, 53, fe(ClusterIp, Udp, one.clone())),
                    (v6, Udp, 53, fe(ClusterIp, Udp, backends(&["fd00::2"]))),
                ]),
                want: vec![
                    not_in(vip, 53, &["10.2.0.3"]),
                    FlowFilter {
                        family: IpFamily::V6,
                        ..not_in(v6, 53, &["fd00::2"])
                    },
                ],
            },
            Row {
                name: "a new Service without endpoints, a deleted one: nothing",
                old: rules(&[(vip, Udp, 53, fe(ClusterIp, Udp, one))]),
                new: rules(&[("10.96.0.11", Udp, 53, fe(ClusterIp, Udp, Target::Reject))]),
                want: vec![],
            },
        ];
        for row in rows {
            let mut want = row.want.clone();
            want.sort();
            assert_eq!(stale_flows(&diff(&row.old, &row.new)), want, "{}", row.name);
            assert_eq!(
                stale_flows_full(Some(&row.old), &row.new),
                want,
                "{} (full)",
                row.name
            );
        }
    }

    #[test]
    fn full_sync_after_restart_checks_every_udp_front_end_with_backends() {
        let mut short_circuited = fe(NodePort, Udp, Target::Drop);
        short_circuited.local_short_circuit = Some(vec![be("10.2.0.9")]);
        let new = rules(&[
            (
                "10.96.0.10",
                Udp,
                53,
                fe(ClusterIp, Udp, backends(&["10.2.0.2"])),
            ),
            (
                "10.96.0.10",
                Tcp,
                53,
                fe(ClusterIp, Tcp, backends(&["10.2.0.2"])),
            ),
            ("10.96.0.11", Udp, 53, fe(ClusterIp, Udp, Target::Reject)),
            ("192.168.1.5", Udp, 30053, short_circuited),
        ]);
        assert_eq!(
            stale_flows_full(None, &new),
            vec![
                not_in("10.96.0.10", 53, &["10.2.0.2"]),
                not_in("192.168.1.5", 30053, &["10.2.0.9"]),
            ]
        );
    }
}
