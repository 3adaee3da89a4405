//! The pure builder: [`ProxyInput`] → [`RuleSet`]. For every Service, family and port it
//! categorises the endpoints and emits the ClusterIP, NodePort, load-balancer and external-IP
//! front ends with the traffic-policy, masquerade and reject/drop behaviour of upstream
//! kube-proxy.

use std::borrow::Cow;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::categorize::{EndpointInfo, categorize_endpoints};
use super::input::{InputProblem, ProxyInput, ServiceInfo, TrafficPolicy};
use super::rules::{
    Backend, FrontEnd, FrontEndChange, FrontEndKey, FrontEndKind, HealthCheck, Masquerade,
    RuleDiff, RuleSet, Target,
};
use super::{Cidr, IpFamily, Protocol, ServiceName, ServicePortName};

/// Builds the rule set. Two Services claiming the same front end (or NodePort, or health-check
/// port): the first in name order keeps it, the conflict goes to `problems`.
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
        touched: None,
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
    /// Incremental updates record old values here.
    touched: Option<&'r mut Touched>,
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
                        allowed_sources: None,
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
                    allowed_sources: None,
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
                let allowed_sources = self.load_balancer_firewall(service, family);
                for ip in service.load_balancer_ips.iter().filter(in_family) {
                    self.insert(
                        FrontEndKey::new(*ip, port.protocol, port.port),
                        FrontEnd {
                            kind: FrontEndKind::LoadBalancer,
                            allowed_sources: allowed_sources.clone(),
                            ..external.clone()
                        },
                    );
                }
                if let Some(node_port) = port.node_port {
                    self.claim_node_port((port.protocol, node_port), &name);
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
            self.claim_health_check(
                hc_port,
                HealthCheck {
                    service: service.name.clone(),
                    local_endpoints: local_ips.len(),
                },
            );
        }
    }

    /// The sources a load balancer address of `service` accepts in `family`: `None` without
    /// `loadBalancerSourceRanges`; else the ranges of the family (none: everything is dropped),
    /// plus the load balancer addresses themselves when a node address is in range (a local
    /// VIP answers the node's own requests with itself as the source), as upstream.
    fn load_balancer_firewall(&self, service: &ServiceInfo, family: IpFamily) -> Option<Vec<Cidr>> {
        if service.load_balancer_source_ranges.is_empty() {
            return None;
        }
        let mut allowed: Vec<Cidr> = service
            .load_balancer_source_ranges
            .iter()
            .filter(|c| c.family() == family)
            .copied()
            .collect();
        let node_in_range = self
            .rules
            .node_port_addresses
            .iter()
            .any(|ip| allowed.iter().any(|c| c.contains(*ip)));
        if node_in_range {
            allowed.extend(
                service
                    .load_balancer_ips
                    .iter()
                    .filter(|ip| IpFamily::of(**ip) == family)
                    .filter_map(|ip| Cidr::new(*ip, if family == IpFamily::V4 { 32 } else { 128 })),
            );
        }
        Some(allowed)
    }

    /// Claims `key` for `front_end`: the Service first in name order keeps a contested key
    /// (so the result does not depend on the order Services are added), the other one is
    /// recorded as shadowed and reported.
    fn insert(&mut self, key: FrontEndKey, front_end: FrontEnd) {
        let service = front_end.service.service.clone();
        match self.rules.front_ends.entry(key) {
            Entry::Vacant(v) => {
                if let Some(t) = self.touched.as_deref_mut() {
                    t.front_ends.entry(key).or_insert(None);
                }
                v.insert(front_end);
                self.rules
                    .keys_by_service
                    .entry(service)
                    .or_default()
                    .insert(key);
            }
            Entry::Occupied(mut o) => {
                let holder = &o.get().service.service;
                if *holder == service {
                    // Two addresses of one Service coincide: the first one stays.
                    return;
                }
                let (kept, dropped) = if service < *holder {
                    if let Some(t) = self.touched.as_deref_mut() {
                        t.front_ends
                            .entry(key)
                            .or_insert_with(|| Some(o.get().clone()));
                    }
                    let displaced = std::mem::replace(o.get_mut(), front_end);
                    if let Some(keys) = self
                        .rules
                        .keys_by_service
                        .get_mut(&displaced.service.service)
                    {
                        keys.remove(&key);
                        if keys.is_empty() {
                            self.rules
                                .keys_by_service
                                .remove(&displaced.service.service);
                        }
                    }
                    self.rules
                        .keys_by_service
                        .entry(service)
                        .or_default()
                        .insert(key);
                    (o.get().service.clone(), displaced.service)
                } else {
                    (o.get().service.clone(), front_end.service)
                };
                self.rules.shadowed.insert(dropped.service.clone());
                self.problems
                    .push(InputProblem::FrontEndConflict { key, kept, dropped });
            }
        }
    }

    fn claim_node_port(&mut self, key: (Protocol, u16), name: &ServicePortName) {
        match self.rules.node_ports.entry(key) {
            Entry::Vacant(v) => {
                v.insert(name.clone());
            }
            Entry::Occupied(mut o) => {
                if name.service < o.get().service {
                    let displaced = std::mem::replace(o.get_mut(), name.clone());
                    self.rules.shadowed.insert(displaced.service);
                } else if name.service != o.get().service {
                    self.rules.shadowed.insert(name.service.clone());
                }
            }
        }
    }

    fn claim_health_check(&mut self, port: u16, check: HealthCheck) {
        let old = self.rules.health_check_node_ports.get(&port).cloned();
        let wins = match &old {
            None => true,
            Some(held) if check.service < held.service => {
                self.rules.shadowed.insert(held.service.clone());
                true
            }
            Some(held) => {
                if held.service != check.service {
                    self.rules.shadowed.insert(check.service.clone());
                }
                false
            }
        };
        if wins {
            if let Some(t) = self.touched.as_deref_mut() {
                t.health_checks.entry(port).or_insert(old);
            }
            self.rules.health_check_node_ports.insert(port, check);
        }
    }

    /// Removes everything `name` holds, recording the old values.
    fn remove_service(&mut self, name: &ServiceName) {
        let keys = self.rules.keys_by_service.remove(name).unwrap_or_default();
        for key in keys {
            if let Some(old) = self.rules.front_ends.remove(&key)
                && let Some(t) = self.touched.as_deref_mut()
            {
                t.front_ends.entry(key).or_insert(Some(old));
            }
        }
        self.rules.node_ports.retain(|_, n| n.service != *name);
        let ports: Vec<u16> = self
            .rules
            .health_check_node_ports
            .iter()
            .filter(|(_, h)| h.service == *name)
            .map(|(p, _)| *p)
            .collect();
        for port in ports {
            if let Some(old) = self.rules.health_check_node_ports.remove(&port)
                && let Some(t) = self.touched.as_deref_mut()
            {
                t.health_checks.entry(port).or_insert(Some(old));
            }
        }
        self.rules.shadowed.remove(name);
    }
}

/// The previous values of everything an incremental update touched: `None` where nothing
/// was. With the updated rule set it gives the update's [`RuleDiff`] through
/// [`Touched::diff`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Touched {
    pub front_ends: BTreeMap<FrontEndKey, Option<FrontEnd>>,
    pub health_checks: BTreeMap<u16, Option<HealthCheck>>,
}

impl Touched {
    /// Adds what a later update touched, keeping for each entry its oldest value: after
    /// several updates, `self` holds the values before the first, so [`Touched::diff`] is the
    /// difference since then.
    pub fn merge(&mut self, later: Touched) {
        for (key, old) in later.front_ends {
            self.front_ends.entry(key).or_insert(old);
        }
        for (port, old) in later.health_checks {
            self.health_checks.entry(port).or_insert(old);
        }
    }

    /// Nothing was touched.
    pub fn is_empty(&self) -> bool {
        self.front_ends.is_empty() && self.health_checks.is_empty()
    }

    /// The difference between the touched entries' old values and their values in `new`.
    pub fn diff<'a>(&'a self, new: &'a RuleSet) -> RuleDiff<'a> {
        let mut out = RuleDiff::default();
        for (key, old) in &self.front_ends {
            match (old, new.front_ends.get(key)) {
                (None, None) => {}
                (None, Some(n)) => out.added.push((key, n)),
                (Some(o), None) => out.removed.push((key, o)),
                (Some(o), Some(n)) => {
                    if o != n {
                        out.changed.push(FrontEndChange::between(key, o, n));
                    }
                }
            }
        }
        for (port, old) in &self.health_checks {
            match new.health_check_node_ports.get(port) {
                Some(n) if old.as_ref() != Some(n) => out.health_checks_set.push((*port, n)),
                None if old.is_some() => out.health_checks_removed.push(*port),
                _ => {}
            }
        }
        out
    }
}

/// Updates `rules` after Service `name` (its spec or its endpoints) changed in `input`, and
/// returns what changed. Equivalent to a full [`build_rules`] as long as the node addresses,
/// zone and options are the same as when `rules` was built (rebuild fully when they change).
/// Costs the work for this Service (and for Services whose conflicting claims it may
/// release), plus a scan of the NodePorts and health-check ports.
pub fn update_service(
    rules: &mut RuleSet,
    input: &ProxyInput,
    name: &ServiceName,
    problems: &mut Vec<InputProblem>,
) -> Touched {
    let mut touched = Touched::default();
    let mut builder = Builder {
        input,
        rules,
        problems,
        touched: Some(&mut touched),
    };
    builder.remove_service(name);
    if let Some(service) = input.services.get(name) {
        builder.add_service(service);
    }
    // Services that lost a claim may win it now (or lose to this one): redo them.
    let shadowed: Vec<ServiceName> = builder
        .rules
        .shadowed
        .iter()
        .filter(|s| *s != name)
        .cloned()
        .collect();
    for other in shadowed {
        builder.remove_service(&other);
        if let Some(service) = input.services.get(&other) {
            builder.add_service(service);
        }
    }
    touched
}
