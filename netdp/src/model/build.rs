//! The pure builder: [`ProxyInput`] → [`RuleSet`]. For every Service, family and port it
//! categorises the endpoints and emits the ClusterIP, NodePort, load-balancer and external-IP
//! front ends with the traffic-policy, masquerade and reject/drop behaviour of upstream
//! kube-proxy.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::net::IpAddr;

use super::categorize::{EndpointInfo, categorize_endpoints};
use super::input::{InputProblem, ProxyInput, ServiceInfo, TrafficPolicy};
use super::rules::{
    Backend, FrontEnd, FrontEndKey, FrontEndKind, HealthCheck, Masquerade, RuleSet, Target,
};
use super::{IpFamily, ServicePortName};

/// Builds the rule set. Two Services claiming the same front end: the first in name order
/// keeps it, the conflict goes to `problems`.
pub fn build_rules(input: &ProxyInput, problems: &mut Vec<InputProblem>) -> RuleSet {
    let mut rules = RuleSet {
        node_port_addresses: node_port_addresses(&input.node.ips),
        cluster_cidrs: input.options.cluster_cidrs.clone(),
        ..RuleSet::default()
    };
    let mut builder = Builder {
        input,
        rules: &mut rules,
        problems,
    };
    for service in input.services.values() {
        builder.add_service(service);
    }
    rules
}

/// The node addresses NodePorts listen on: never loopback or unspecified, each once.
fn node_port_addresses(ips: &[IpAddr]) -> BTreeSet<IpAddr> {
    ips.iter()
        .copied()
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified() && !ip.is_multicast())
        .collect()
}

fn to_backends(eps: &[&EndpointInfo]) -> Vec<Backend> {
    let mut out: Vec<Backend> = eps
        .iter()
        .map(|e| Backend {
            ip: e.ip,
            port: e.port,
            weight: 1,
            node_local: e.node_local,
        })
        .collect();
    out.sort();
    out
}

fn target(has_any: bool, backends: Vec<Backend>) -> Target {
    if !has_any {
        Target::Reject
    } else if backends.is_empty() {
        Target::Drop
    } else {
        Target::Backends(backends)
    }
}

struct Builder<'i, 'r> {
    input: &'i ProxyInput,
    rules: &'r mut RuleSet,
    problems: &'r mut Vec<InputProblem>,
}

impl Builder<'_, '_> {
    fn add_service(&mut self, service: &ServiceInfo) {
        let endpoints = self.input.endpoints.get(&service.name);
        let uses_cluster =
            service.internal_policy == TrafficPolicy::Cluster || service.externally_accessible();
        let etp_local = service.external_policy_local();
        let uses_local = service.internal_policy == TrafficPolicy::Local || etp_local;
        let zone = self.input.node.zone.as_deref();

        for &cluster_ip in &service.cluster_ips {
            let family = IpFamily::of(cluster_ip);
            for port in &service.ports {
                let name = ServicePortName {
                    service: service.name.clone(),
                    port: port.name.clone(),
                    protocol: port.protocol,
                };
                let eps: Vec<Cow<'_, EndpointInfo>> = endpoints
                    .and_then(|e| e.get(&(port.name.clone(), port.protocol)))
                    .into_iter()
                    .flatten()
                    .filter(|e| IpFamily::of(e.ip) == family)
                    .map(|e| {
                        // publishNotReadyAddresses: every endpoint counts as ready, as the
                        // EndpointSlice controller publishes them.
                        if service.publish_not_ready_addresses && !e.ready {
                            Cow::Owned(EndpointInfo {
                                ready: true,
                                ..e.clone()
                            })
                        } else {
                            Cow::Borrowed(e)
                        }
                    })
                    .collect();
                let refs: Vec<&EndpointInfo> = eps.iter().map(|e| e.as_ref()).collect();
                let cat = categorize_endpoints(&refs, uses_cluster, uses_local, zone);
                let cluster = to_backends(&cat.cluster);
                let local = to_backends(&cat.local);

                let internal = match service.internal_policy {
                    TrafficPolicy::Local => local.clone(),
                    TrafficPolicy::Cluster => cluster.clone(),
                };
                let cluster_ip_masquerade = if self.input.options.masquerade_all {
                    Masquerade::Always
                } else if self
                    .input
                    .options
                    .cluster_cidrs
                    .iter()
                    .any(|c| c.family() == family)
                {
                    Masquerade::OffCluster
                } else {
                    Masquerade::Never
                };
                self.insert(
                    FrontEndKey::new(cluster_ip, port.protocol, port.port),
                    FrontEnd {
                        service: name.clone(),
                        kind: FrontEndKind::ClusterIp,
                        target: target(cat.has_any, internal),
                        masquerade: cluster_ip_masquerade,
                        affinity_timeout_seconds: service.affinity_timeout_seconds,
                        local_short_circuit: None,
                    },
                );

                if !service.externally_accessible() {
                    continue;
                }
                let external = FrontEnd {
                    service: name.clone(),
                    kind: FrontEndKind::ExternalIp,
                    target: target(cat.has_any, if etp_local { local } else { cluster.clone() }),
                    masquerade: if etp_local {
                        Masquerade::Never
                    } else {
                        Masquerade::Always
                    },
                    affinity_timeout_seconds: service.affinity_timeout_seconds,
                    local_short_circuit: (etp_local && cat.has_any).then_some(cluster),
                };
                let in_family = |ip: &&IpAddr| IpFamily::of(**ip) == family;
                for ip in service.external_ips.iter().filter(in_family) {
                    self.insert(
                        FrontEndKey::new(*ip, port.protocol, port.port),
                        FrontEnd {
                            kind: FrontEndKind::ExternalIp,
                            ..external.clone()
                        },
                    );
                }
                for ip in service.load_balancer_ips.iter().filter(in_family) {
                    self.insert(
                        FrontEndKey::new(*ip, port.protocol, port.port),
                        FrontEnd {
                            kind: FrontEndKind::LoadBalancer,
                            ..external.clone()
                        },
                    );
                }
                if let Some(node_port) = port.node_port {
                    self.rules
                        .node_ports
                        .entry((port.protocol, node_port))
                        .or_insert_with(|| name.clone());
                    let addresses: Vec<IpAddr> = self
                        .rules
                        .node_port_addresses
                        .iter()
                        .filter(in_family)
                        .copied()
                        .collect();
                    for ip in addresses {
                        self.insert(
                            FrontEndKey::new(ip, port.protocol, node_port),
                            FrontEnd {
                                kind: FrontEndKind::NodePort,
                                ..external.clone()
                            },
                        );
                    }
                }
            }
        }

        if let Some(hc_port) = service.health_check_node_port {
            let local_ips: BTreeSet<IpAddr> = endpoints
                .into_iter()
                .flat_map(|e| e.values())
                .flatten()
                .filter(|e| e.node_local && (e.ready || service.publish_not_ready_addresses))
                .map(|e| e.ip)
                .collect();
            self.rules
                .health_check_node_ports
                .entry(hc_port)
                .or_insert_with(|| HealthCheck {
                    service: service.name.clone(),
                    local_endpoints: local_ips.len(),
                });
        }
    }

    fn insert(&mut self, key: FrontEndKey, front_end: FrontEnd) {
        match self.rules.front_ends.entry(key) {
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(front_end);
            }
            std::collections::btree_map::Entry::Occupied(o) => {
                self.problems.push(InputProblem::FrontEndConflict {
                    key,
                    kept: o.get().service.clone(),
                    dropped: front_end.service,
                });
            }
        }
    }
}
