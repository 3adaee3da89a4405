//! The output of the model: a [`RuleSet`] of front ends (an address, protocol and port the node
//! answers for a Service) with their backends and NAT policy, plus NodePort and health-check
//! listeners; and [`diff`], the difference between two rule sets that a sync applies. Plain,
//! ordered, comparable data: renderers for every mode read it, the tracer evaluates it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};

use super::{Cidr, IpFamily, Protocol, ServiceName, ServicePortName};

/// Where a front end listens. Ordered by family, then address, protocol and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FrontEndKey {
    pub family: IpFamily,
    pub ip: IpAddr,
    pub protocol: Protocol,
    pub port: u16,
}

impl FrontEndKey {
    pub fn new(ip: IpAddr, protocol: Protocol, port: u16) -> Self {
        Self {
            family: IpFamily::of(ip),
            ip,
            protocol,
            port,
        }
    }
}

/// What kind of Service address a front end is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FrontEndKind {
    ClusterIp,
    /// A NodePort on one of the node's (non-loopback) addresses.
    NodePort,
    LoadBalancer,
    ExternalIp,
}

impl FrontEndKind {
    /// NodePort, load balancer and external IP front ends follow `externalTrafficPolicy`.
    pub fn is_external(self) -> bool {
        !matches!(self, FrontEndKind::ClusterIp)
    }
}

/// One endpoint a front end forwards to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Backend {
    pub ip: IpAddr,
    pub port: u16,
    /// Relative selection weight (all endpoints weigh 1, as upstream).
    pub weight: u16,
    /// The endpoint runs on this node.
    pub node_local: bool,
}

impl Backend {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }
}

/// What a front end does with a new connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// DNAT to one of these (non-empty, ordered by address).
    Backends(Vec<Backend>),
    /// The Service has no usable endpoint anywhere: reject (ICMP unreachable / TCP reset).
    Reject,
    /// Endpoints exist but none for this front end's `Local` policy: drop.
    Drop,
}

impl Target {
    /// The backends, empty for `Reject`/`Drop`.
    pub fn backends(&self) -> &[Backend] {
        match self {
            Target::Backends(b) => b,
            Target::Reject | Target::Drop => &[],
        }
    }
}

/// When the source of forwarded traffic is masqueraded (besides hairpin traffic, a backend
/// reaching itself through the Service, which is always masqueraded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Masquerade {
    /// Keep the client address (`externalTrafficPolicy: Local`; ClusterIP without detection).
    Never,
    /// Only traffic not from a pod, i.e. whose source is outside the cluster CIDR (ClusterIP).
    OffCluster,
    /// Always (`masqueradeAll` for ClusterIP; external front ends with policy `Cluster`).
    Always,
}

/// A Service address on this node and what to do with traffic to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontEnd {
    pub service: ServicePortName,
    pub kind: FrontEndKind,
    pub target: Target,
    pub masquerade: Masquerade,
    /// `sessionAffinity: ClientIP`: a client keeps its backend for this many seconds.
    pub affinity_timeout_seconds: Option<u32>,
    /// `externalTrafficPolicy: Local` only: pod traffic (source in the cluster CIDR) and
    /// traffic from the node itself go to these cluster-wide backends instead of `target`
    /// (the latter masqueraded), as upstream short-circuits them. Empty: nothing to
    /// short-circuit to (then `target` applies).
    pub local_short_circuit: Option<Vec<Backend>>,
    /// Load balancer front ends of a Service with `loadBalancerSourceRanges`: only these
    /// sources get through, every other packet is dropped before NAT (pods included). `None`:
    /// no firewall. The node's own traffic, which reaches a local VIP with the VIP as its
    /// source, is allowed (the VIPs are in the list) when a node address is in the ranges.
    pub allowed_sources: Option<Vec<Cidr>>,
}

/// A `healthCheckNodePort` served for a Service with `externalTrafficPolicy: Local`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub service: ServiceName,
    /// Distinct local endpoints ready to serve it; the check answers 200 when non-zero, 503
    /// otherwise.
    pub local_endpoints: usize,
}

/// Everything the proxy programs on this node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSet {
    pub front_ends: BTreeMap<FrontEndKey, FrontEnd>,
    /// Node addresses NodePorts listen on (never loopback).
    pub node_port_addresses: BTreeSet<IpAddr>,
    /// Allocated NodePorts and their Service ports (their front ends are in `front_ends`, one
    /// per node address of the family).
    pub node_ports: BTreeMap<(Protocol, u16), ServicePortName>,
    /// `healthCheckNodePort` → the Service it reports on.
    pub health_check_node_ports: BTreeMap<u16, HealthCheck>,
    /// The cluster CIDRs that tell pod traffic from other traffic.
    pub cluster_cidrs: Vec<Cidr>,
    /// Services that lost a contested front end, NodePort or health-check port to another
    /// Service (incremental updates redo them).
    pub shadowed: BTreeSet<ServiceName>,
    /// Index: the front-end keys each Service holds (for incremental updates).
    pub keys_by_service: HashMap<ServiceName, BTreeSet<FrontEndKey>>,
}

impl RuleSet {
    /// Whether `src` is pod traffic for masquerade and short-circuit purposes.
    pub fn is_pod_source(&self, src: IpAddr) -> bool {
        self.cluster_cidrs.iter().any(|c| c.contains(src))
    }
}

/// One front end present in both rule sets with different contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontEndChange<'a> {
    pub key: &'a FrontEndKey,
    pub old: &'a FrontEnd,
    pub new: &'a FrontEnd,
    /// Backends in `new` but not in `old`.
    pub backends_added: Vec<&'a Backend>,
    /// Backends in `old` but not in `new` (their conntrack entries are stale).
    pub backends_removed: Vec<&'a Backend>,
}

impl<'a> FrontEndChange<'a> {
    /// The change from `old` to `new` at `key`, with the backends each side lacks.
    pub fn between(key: &'a FrontEndKey, old: &'a FrontEnd, new: &'a FrontEnd) -> Self {
        let (ob, nb) = (backend_set(old), backend_set(new));
        let backends_added = sorted_minus(&nb, &ob)
            .into_iter()
            .filter_map(|b| find_backend(new, b))
            .collect();
        let backends_removed = sorted_minus(&ob, &nb)
            .into_iter()
            .filter_map(|b| find_backend(old, b))
            .collect();
        FrontEndChange {
            key,
            old,
            new,
            backends_added,
            backends_removed,
        }
    }
}

/// What a sync has to change to go from one rule set to another.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleDiff<'a> {
    pub added: Vec<(&'a FrontEndKey, &'a FrontEnd)>,
    pub removed: Vec<(&'a FrontEndKey, &'a FrontEnd)>,
    pub changed: Vec<FrontEndChange<'a>>,
    /// Health-check ports to open or whose status changed, and ports to close.
    pub health_checks_set: Vec<(u16, &'a HealthCheck)>,
    pub health_checks_removed: Vec<u16>,
    /// The NodePort addresses or the cluster CIDRs changed: rules that depend on them (not on
    /// any one front end) must be rewritten.
    pub node_globals_changed: bool,
}

impl RuleDiff<'_> {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.health_checks_set.is_empty()
            && self.health_checks_removed.is_empty()
            && !self.node_globals_changed
    }
}

/// Elements of sorted `a` missing from sorted `b`.
fn sorted_minus<'a>(a: &'a [Backend], b: &[Backend]) -> Vec<&'a Backend> {
    let mut out = Vec::new();
    let mut j = 0;
    for x in a {
        while j < b.len() && b[j] < *x {
            j += 1;
        }
        if j >= b.len() || b[j] != *x {
            out.push(x);
        }
    }
    out
}

fn backend_set(fe: &FrontEnd) -> Vec<Backend> {
    let mut all: Vec<Backend> = fe.target.backends().to_vec();
    all.extend(fe.local_short_circuit.iter().flatten().copied());
    all.sort();
    all.dedup();
    all
}

/// The difference from `old` to `new`, walking both ordered maps once.
pub fn diff<'a>(old: &'a RuleSet, new: &'a RuleSet) -> RuleDiff<'a> {
    let mut out = RuleDiff::default();
    let mut olds = old.front_ends.iter().peekable();
    let mut news = new.front_ends.iter().peekable();
    loop {
        match (olds.peek(), news.peek()) {
            (None, None) => break,
            (Some(o), None) => {
                out.removed.push(*o);
                olds.next();
            }
            (None, Some(n)) => {
                out.added.push(*n);
                news.next();
            }
            (Some((ok, ov)), Some((nk, nv))) => match ok.cmp(nk) {
                std::cmp::Ordering::Less => {
                    out.removed.push((ok, ov));
                    olds.next();
                }
                std::cmp::Ordering::Greater => {
                    out.added.push((nk, nv));
                    news.next();
                }
                std::cmp::Ordering::Equal => {
                    if ov != nv {
                        out.changed.push(FrontEndChange::between(nk, ov, nv));
                    }
                    olds.next();
                    news.next();
                }
            },
        }
    }
    for (port, check) in &new.health_check_node_ports {
        if old.health_check_node_ports.get(port) != Some(check) {
            out.health_checks_set.push((*port, check));
        }
    }
    out.health_checks_removed = old
        .health_check_node_ports
        .keys()
        .filter(|p| !new.health_check_node_ports.contains_key(p))
        .copied()
        .collect();
    out.node_globals_changed = old.node_port_addresses != new.node_port_addresses
        || old.cluster_cidrs != new.cluster_cidrs;
    out
}

/// The reference to `b` inside `fe` (so the diff borrows from the rule sets, not temporaries).
fn find_backend<'a>(fe: &'a FrontEnd, b: &Backend) -> Option<&'a Backend> {
    fe.target
        .backends()
        .iter()
        .chain(fe.local_short_circuit.iter().flatten())
        .find(|x| *x == b)
}
