//! The rule tracer: what a [`RuleSet`] does with one new connection's first packet — left
//! alone, DNAT'd to a backend (with or without masquerade), rejected or dropped. Backend choice
//! is deterministic (an injected "random" number) and session affinity uses an explicit client
//! → backend memory with an injected clock. Every rendering mode's tests trace through it.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use crate::model::{Backend, FrontEndKey, Masquerade, Protocol, RuleSet, ServicePortName, Target};

/// Where a packet enters the node's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ArrivesOn {
    /// Sent by a process of the node itself (output path).
    Local,
    /// From a pod on this node (whether it counts as pod traffic is decided by its source
    /// address against the cluster CIDR, as upstream's default local-traffic detection).
    FromPod,
    /// From outside the node.
    External,
}

/// The first packet of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: Protocol,
    pub dport: u16,
    pub arrives_on: ArrivesOn,
}

/// What the rules do with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not a Service address: untouched by the proxy.
    Accept,
    /// Destination rewritten to `to`; `masquerade`: the source is rewritten to the node's.
    Dnat { to: SocketAddr, masquerade: bool },
    /// Refused (ICMP unreachable / TCP reset).
    Reject,
    /// Silently dropped.
    Drop,
}

/// Client → backend memory of `sessionAffinity: ClientIP`, per Service port, like upstream's
/// per-endpoint affinity sets (refreshed on every new connection).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AffinityMemory {
    entries: BTreeMap<(ServicePortName, IpAddr), (SocketAddr, u64)>,
}

impl AffinityMemory {
    /// The backend `client` is pinned to for `service`, if the pin is younger than `timeout`.
    pub fn lookup(
        &self,
        service: &ServicePortName,
        client: IpAddr,
        now_seconds: u64,
        timeout_seconds: u32,
    ) -> Option<SocketAddr> {
        let (backend, seen) = self.entries.get(&(service.clone(), client))?;
        (now_seconds.saturating_sub(*seen) <= u64::from(timeout_seconds)).then_some(*backend)
    }

    fn remember(
        &mut self,
        service: &ServicePortName,
        client: IpAddr,
        backend: SocketAddr,
        now: u64,
    ) {
        self.entries
            .insert((service.clone(), client), (backend, now));
    }
}

/// The tracer's injected randomness, clock and affinity state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceEnv {
    /// Picks the backend: `random % total weight` indexes the weighted backend list.
    pub random: u64,
    /// Seconds on the affinity clock.
    pub now_seconds: u64,
    pub affinity: AffinityMemory,
}

fn pick(backends: &[Backend], random: u64) -> Option<&Backend> {
    let total: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
    if total == 0 {
        return None;
    }
    let mut index = random % total;
    for b in backends {
        let w = u64::from(b.weight);
        if index < w {
            return Some(b);
        }
        index -= w;
    }
    None
}

/// Evaluates `rules` for `packet`.
pub fn trace(rules: &RuleSet, packet: &Packet, env: &mut TraceEnv) -> Verdict {
    let key = FrontEndKey::new(packet.dst, packet.proto, packet.dport);
    let Some(front_end) = rules.front_ends.get(&key) else {
        return Verdict::Accept;
    };
    // loadBalancerSourceRanges are checked before any NAT, for every source.
    if let Some(allowed) = &front_end.allowed_sources
        && !allowed.iter().any(|c| c.contains(packet.src))
    {
        return Verdict::Drop;
    }
    let pod_source = rules.is_pod_source(packet.src);
    let from_node = packet.arrives_on == ArrivesOn::Local;

    // externalTrafficPolicy: Local short-circuits pod and node traffic to cluster endpoints;
    // node traffic is masqueraded so replies come back through this node.
    let (backends, mut masquerade) = match &front_end.local_short_circuit {
        Some(cluster) if !cluster.is_empty() && (pod_source || from_node) => {
            (cluster.as_slice(), from_node)
        }
        _ => {
            let backends = match &front_end.target {
                Target::Backends(b) => b.as_slice(),
                Target::Reject => return Verdict::Reject,
                Target::Drop => return Verdict::Drop,
            };
            let masquerade = match front_end.masquerade {
                Masquerade::Never => false,
                Masquerade::OffCluster => !pod_source,
                Masquerade::Always => true,
            };
            (backends, masquerade)
        }
    };

    let pinned = front_end.affinity_timeout_seconds.and_then(|timeout| {
        let addr = env
            .affinity
            .lookup(&front_end.service, packet.src, env.now_seconds, timeout)?;
        backends.iter().find(|b| b.addr() == addr)
    });
    let Some(backend) = pinned.or_else(|| pick(backends, env.random)) else {
        return Verdict::Drop;
    };
    if front_end.affinity_timeout_seconds.is_some() {
        env.affinity.remember(
            &front_end.service,
            packet.src,
            backend.addr(),
            env.now_seconds,
        );
    }
    // Hairpin: a backend reaching itself through the Service must see the node as the source.
    masquerade |= packet.src == backend.ip;
    Verdict::Dnat {
        to: backend.addr(),
        masquerade,
    }
}

#[cfg(test)]
mod tests;
