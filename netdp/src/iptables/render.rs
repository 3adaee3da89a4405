//! The pure renderer: a [`RuleSet`] → the iptables chains of one address family, in
//! kube-proxy's layout. Per Service port ([`render_group`]): `KUBE-SVC-`/`KUBE-SVL-` (backend
//! choice with `-m statistic`, affinity with `-m recent`), `KUBE-SEP-` (hairpin masquerade +
//! DNAT), `KUBE-EXT-` (external policy), `KUBE-FW-` (`loadBalancerSourceRanges`), plus the
//! rules it contributes to the shared dispatch chains (`KUBE-SERVICES`, `KUBE-NODEPORTS`,
//! `KUBE-EXTERNAL-SERVICES`, `KUBE-PROXY-FIREWALL`). [`render_family`] adds the fixed chains.
//! Rules are the text after `-A <chain> `, exactly as written to `iptables-restore`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use super::names::{self, *};
use crate::model::{
    Backend, Cidr, FrontEnd, FrontEndKey, FrontEndKind, IpFamily, Masquerade, Protocol, RuleSet,
    ServicePortName, Target,
};

/// The two tables this mode writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Nat,
    Filter,
}

impl Table {
    pub fn name(self) -> &'static str {
        match self {
            Table::Nat => "nat",
            Table::Filter => "filter",
        }
    }
}

/// A chain of ours in one table.
pub type ChainId = (Table, String);

/// The masquerade mark, as upstream's default `--iptables-masquerade-bit` 14.
pub const MASQ_MARK: &str = "0x4000";

/// Dispatch chains: shared by all Service ports, updated rule by rule in incremental syncs.
pub const DISPATCH: [(Table, &str); 6] = [
    (Table::Nat, SERVICES),
    (Table::Nat, NODE_PORTS),
    (Table::Filter, SERVICES),
    (Table::Filter, EXTERNAL_SERVICES),
    (Table::Filter, NODE_PORTS),
    (Table::Filter, PROXY_FIREWALL),
];

/// What one Service port of one family renders to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupRules {
    /// Its own chains, rules in order.
    pub chains: BTreeMap<ChainId, Vec<String>>,
    /// Rules it adds to the dispatch chains (order between Service ports is irrelevant).
    pub dispatch: BTreeSet<(Table, &'static str, String)>,
}

/// All chains of one family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FamilyRules {
    pub chains: BTreeMap<ChainId, Vec<String>>,
}

/// The jump rules from built-in chains into ours, in the order they must appear at the top of
/// each built-in chain (as `iptables-save` prints them).
pub fn builtin_jumps() -> Vec<(Table, &'static str, String)> {
    let portals = "-m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES";
    let new = "-m conntrack --ctstate NEW";
    let firewall = format!(
        "{new} -m comment --comment \"kubernetes load balancer firewall\" -j {PROXY_FIREWALL}"
    );
    let external = format!(
        "{new} -m comment --comment \"kubernetes externally-visible service portals\" -j {EXTERNAL_SERVICES}"
    );
    vec![
        (Table::Nat, "PREROUTING", portals.to_owned()),
        (Table::Nat, "OUTPUT", portals.to_owned()),
        (
            Table::Nat,
            "POSTROUTING",
            format!("-m comment --comment \"kubernetes postrouting rules\" -j {POSTROUTING}"),
        ),
        (Table::Filter, "INPUT", firewall.clone()),
        (
            Table::Filter,
            "INPUT",
            format!(
                "-m comment --comment \"kubernetes health check service ports\" -j {NODE_PORTS}"
            ),
        ),
        (Table::Filter, "INPUT", external.clone()),
        (Table::Filter, "FORWARD", firewall.clone()),
        (
            Table::Filter,
            "FORWARD",
            format!("-m comment --comment \"kubernetes forwarding rules\" -j {FORWARD}"),
        ),
        (Table::Filter, "FORWARD", format!("{new} {portals}")),
        (Table::Filter, "FORWARD", external),
        (Table::Filter, "OUTPUT", firewall),
        (Table::Filter, "OUTPUT", format!("{new} {portals}")),
    ]
}

/// The front ends of `rules` in `family`, grouped by Service port.
pub fn groups(
    rules: &RuleSet,
    family: IpFamily,
) -> BTreeMap<&ServicePortName, Vec<(&FrontEndKey, &FrontEnd)>> {
    let mut out: BTreeMap<&ServicePortName, Vec<_>> = BTreeMap::new();
    for (key, fe) in rules.front_ends.range(family_range(family)) {
        out.entry(&fe.service).or_default().push((key, fe));
    }
    out
}

fn family_range(family: IpFamily) -> std::ops::RangeInclusive<FrontEndKey> {
    let (lo, hi): (IpAddr, IpAddr) = match family {
        IpFamily::V4 => ([0u8; 4].into(), [255u8; 4].into()),
        IpFamily::V6 => ([0u8; 16].into(), [255u8; 16].into()),
    };
    FrontEndKey::new(lo, Protocol::Tcp, 0)..=FrontEndKey::new(hi, Protocol::Sctp, u16::MAX)
}

/// Everything of `family`: fixed chains, every Service port, health-check ports.
pub fn render_family(rules: &RuleSet, family: IpFamily) -> FamilyRules {
    let cidrs = family_cidrs(rules, family);
    let mut chains: BTreeMap<ChainId, Vec<String>> = BTreeMap::new();
    for (table, name) in DISPATCH {
        chains.insert((table, name.to_owned()), Vec::new());
    }
    for (spn, fes) in groups(rules, family) {
        let group = render_group(spn, &fes, &cidrs);
        chains.extend(group.chains);
        for (table, chain, rule) in group.dispatch {
            chains
                .entry((table, chain.to_owned()))
                .or_default()
                .push(rule);
        }
    }
    for rule in health_check_rules(rules) {
        chains
            .entry((Table::Filter, NODE_PORTS.to_owned()))
            .or_default()
            .push(rule);
    }
    // Node ports are dispatched last, on the node's addresses.
    let services = chains.entry((Table::Nat, SERVICES.to_owned())).or_default();
    for addr in rules
        .node_port_addresses
        .iter()
        .filter(|a| IpFamily::of(**a) == family)
    {
        services.push(format!(
            "-m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -d {} -j {NODE_PORTS}",
            host(*addr)
        ));
    }
    chains.insert(
        (Table::Nat, MARK_MASQ.to_owned()),
        vec![format!("-j MARK --or-mark {MASQ_MARK}")],
    );
    chains.insert(
        (Table::Nat, POSTROUTING.to_owned()),
        vec![
            format!("-m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN"),
            format!("-j MARK --xor-mark {MASQ_MARK}"),
            "-m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully".to_owned(),
        ],
    );
    if cidrs.len() > 1 {
        let mut masq: Vec<String> = cidrs.iter().map(|c| format!("-s {c} -j RETURN")).collect();
        masq.push(format!("-j {MARK_MASQ}"));
        chains.insert((Table::Nat, MASQ_NON_POD.to_owned()), masq);
    }
    chains.insert(
        (Table::Filter, FORWARD.to_owned()),
        vec![
            "-m conntrack --ctstate INVALID -j DROP".to_owned(),
            format!("-m comment --comment \"kubernetes forwarding rules\" -m mark --mark {MASQ_MARK}/{MASQ_MARK} -j ACCEPT"),
            "-m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT".to_owned(),
        ],
    );
    FamilyRules { chains }
}

/// The cluster CIDRs of one family.
pub fn family_cidrs(rules: &RuleSet, family: IpFamily) -> Vec<Cidr> {
    rules
        .cluster_cidrs
        .iter()
        .filter(|c| c.family() == family)
        .copied()
        .collect()
}

/// Health-check node ports accepted in filter `KUBE-NODEPORTS` (both families).
pub fn health_check_rules(rules: &RuleSet) -> Vec<String> {
    rules
        .health_check_node_ports
        .iter()
        .map(|(port, check)| {
            format!(
                "-m comment --comment \"{} health check node port\" -m tcp -p tcp --dport {port} -j ACCEPT",
                check.service
            )
        })
        .collect()
}

/// `ip/32` or `ip/128`.
pub fn host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}/32"),
        IpAddr::V6(v6) => format!("{v6}/128"),
    }
}

/// `-m tcp -p tcp` (the match module is named like the protocol).
fn proto_match(p: Protocol) -> String {
    let p = names::proto_lower(p);
    format!("-m {p} -p {p}")
}

/// The rule prefix matching a front end's destination: protocol, address, port.
fn dest_match(key: &FrontEndKey) -> String {
    format!(
        "{} -d {} --dport {}",
        proto_match(key.protocol),
        host(key.ip),
        key.port
    )
}

/// Names the distinct backend lists of one Service port: the cluster-wide list is `KUBE-SVC-`,
/// the node-local one `KUBE-SVL-` (as upstream's cluster/local policy chains).
struct BackendChains<'a> {
    hash: String,
    lists: Vec<(&'a [Backend], String, Option<u32>)>,
}

impl<'a> BackendChains<'a> {
    fn chain_for(
        &mut self,
        list: &'a [Backend],
        prefer_local: bool,
        affinity: Option<u32>,
    ) -> String {
        if let Some((_, name, _)) = self.lists.iter().find(|(l, _, _)| *l == list) {
            return name.clone();
        }
        let taken = |p: &str| self.lists.iter().any(|(_, n, _)| n.starts_with(p));
        let prefix = match (prefer_local, taken(SVC_PREFIX), taken(SVL_PREFIX)) {
            (true, _, false) | (false, true, false) => SVL_PREFIX.to_owned(),
            (_, false, _) => SVC_PREFIX.to_owned(),
            _ => format!("{SVX_PREFIX}{}", self.lists.len()),
        };
        let name = if prefix.starts_with(SVX_PREFIX) {
            // Keep within 28 characters: the index replaces part of the hash.
            format!("{prefix}{}", &self.hash[..12])
        } else {
            format!("{prefix}{}", self.hash)
        };
        self.lists.push((list, name.clone(), affinity));
        name
    }
}

/// One Service port of one family: its chains and dispatch rules.
pub fn render_group(
    spn: &ServicePortName,
    fes: &[(&FrontEndKey, &FrontEnd)],
    cidrs: &[Cidr],
) -> GroupRules {
    let mut out = GroupRules::default();
    let pname = names::port_name(spn);
    let hash = names::port_hash(spn);
    let ext_chain = format!("{EXT_PREFIX}{hash}");
    let fw_chain = format!("{FW_PREFIX}{hash}");
    let mut lists = BackendChains {
        hash,
        lists: Vec::new(),
    };
    // Name the lists in a fixed order so names do not depend on front-end order.
    for (_, fe) in fes.iter().filter(|(_, fe)| fe.kind.is_external()) {
        if let Some(cluster) = short_circuit(fe) {
            lists.chain_for(cluster, false, fe.affinity_timeout_seconds);
        }
    }
    for (_, fe) in fes.iter().filter(|(_, fe)| fe.kind.is_external()) {
        if let Target::Backends(b) = &fe.target {
            lists.chain_for(b, short_circuit(fe).is_some(), fe.affinity_timeout_seconds);
        }
    }

    let mut masq_rules: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut ext_rules: Option<Vec<String>> = None;
    let mut fw_rules: Option<Vec<String>> = None;
    for (key, fe) in fes {
        let dest = dest_match(key);
        let jumps_somewhere =
            matches!(fe.target, Target::Backends(_)) || short_circuit(fe).is_some();
        match fe.kind {
            FrontEndKind::ClusterIp => {
                let comment = format!("-m comment --comment \"{pname} cluster IP\"");
                match &fe.target {
                    Target::Backends(b) => {
                        let chain = lists.chain_for(b, false, fe.affinity_timeout_seconds);
                        out.dispatch.insert((
                            Table::Nat,
                            SERVICES,
                            format!("{comment} {dest} -j {chain}"),
                        ));
                        if let Some(rule) =
                            masquerade_rule(fe.masquerade, cidrs, &format!("{comment} {dest}"))
                        {
                            masq_rules.entry(chain).or_default().push(rule);
                        }
                    }
                    Target::Reject => {
                        out.dispatch.insert((
                            Table::Filter,
                            SERVICES,
                            format!(
                                "-m comment --comment \"{pname} has no endpoints\" {dest} -j REJECT"
                            ),
                        ));
                    }
                    Target::Drop => {
                        out.dispatch.insert((
                            Table::Filter,
                            SERVICES,
                            format!("-m comment --comment \"{pname} has no local endpoints\" {dest} -j DROP"),
                        ));
                    }
                }
            }
            kind => {
                if ext_rules.is_none() && jumps_somewhere {
                    ext_rules = Some(external_rules(&pname, fe, cidrs, &mut lists));
                }
                let firewalled = kind == FrontEndKind::LoadBalancer && fe.allowed_sources.is_some();
                if jumps_somewhere {
                    let entry = if firewalled { &fw_chain } else { &ext_chain };
                    match kind {
                        FrontEndKind::NodePort => {
                            out.dispatch.insert((
                                Table::Nat,
                                NODE_PORTS,
                                format!(
                                    "-m comment --comment {pname} {} --dport {} -j {ext_chain}",
                                    proto_match(key.protocol),
                                    key.port
                                ),
                            ));
                        }
                        _ => {
                            let what = if kind == FrontEndKind::LoadBalancer {
                                "loadbalancer IP"
                            } else {
                                "external IP"
                            };
                            out.dispatch.insert((
                                Table::Nat,
                                SERVICES,
                                format!(
                                    "-m comment --comment \"{pname} {what}\" {dest} -j {entry}"
                                ),
                            ));
                        }
                    }
                }
                if let (true, Some(allowed)) = (firewalled, &fe.allowed_sources) {
                    let not_accepted = format!(
                        "-m comment --comment \"{pname} traffic not accepted by {fw_chain}\" {dest}"
                    );
                    if jumps_somewhere {
                        // Accepted traffic was DNAT'd in nat; what still has this destination
                        // was not accepted.
                        if fw_rules.is_none() {
                            fw_rules = Some(
                                allowed
                                    .iter()
                                    .map(|c| format!("-m comment --comment \"{pname} loadbalancer IP\" -s {c} -j {ext_chain}"))
                                    .collect(),
                            );
                        }
                        out.dispatch.insert((
                            Table::Filter,
                            PROXY_FIREWALL,
                            format!("{not_accepted} -j DROP"),
                        ));
                    } else {
                        // Nothing is DNAT'd: a filter chain of our own returns for allowed
                        // sources (then rejected or dropped below) and drops the rest.
                        let mut rules: Vec<String> = allowed
                            .iter()
                            .map(|c| format!("-s {c} -j RETURN"))
                            .collect();
                        rules.push("-j DROP".to_owned());
                        out.chains.insert((Table::Filter, fw_chain.clone()), rules);
                        out.dispatch.insert((
                            Table::Filter,
                            PROXY_FIREWALL,
                            format!("{not_accepted} -j {fw_chain}"),
                        ));
                    }
                }
                let refuse = match (&fe.target, short_circuit(fe).is_some()) {
                    (Target::Reject, _) => Some(("has no endpoints", "REJECT")),
                    (Target::Drop, _) => Some(("has no local endpoints", "DROP")),
                    (Target::Backends(_), _) => None,
                };
                if let Some((why, verdict)) = refuse {
                    out.dispatch.insert((
                        Table::Filter,
                        EXTERNAL_SERVICES,
                        format!("-m comment --comment \"{pname} {why}\" {dest} -j {verdict}"),
                    ));
                }
            }
        }
    }
    if let Some(rules) = ext_rules {
        out.chains.insert((Table::Nat, ext_chain), rules);
    }
    if let Some(rules) = fw_rules {
        out.chains.insert((Table::Nat, fw_chain), rules);
    }

    // Backend chains, then one KUBE-SEP per distinct backend.
    let mut endpoints: BTreeMap<(IpAddr, u16), bool> = BTreeMap::new();
    for (list, chain, affinity) in &lists.lists {
        let mut rules = masq_rules.remove(chain).unwrap_or_default();
        let seps: Vec<(String, &Backend)> = list
            .iter()
            .map(|b| (names::endpoint_chain(spn, b.ip, b.port), b))
            .collect();
        if let Some(timeout) = affinity {
            for (sep, b) in &seps {
                rules.push(format!(
                    "-m comment --comment \"{pname} -> {}\" -m recent --name {sep} --rcheck --seconds {timeout} --reap -j {sep}",
                    names::endpoint_string(b.ip, b.port)
                ));
            }
        }
        let total: u64 = list.iter().map(|b| u64::from(b.weight.max(1))).sum();
        let mut remaining = total;
        for (i, (sep, b)) in seps.iter().enumerate() {
            let ep = names::endpoint_string(b.ip, b.port);
            let weight = u64::from(b.weight.max(1));
            let mut rule = format!("-m comment --comment \"{pname} -> {ep}\"");
            if i + 1 < seps.len() {
                #[allow(clippy::cast_precision_loss, reason = "weights are small integers")]
                let p = weight as f64 / remaining as f64;
                let _ = write!(rule, " -m statistic --mode random --probability {p:.10}");
            }
            let _ = write!(rule, " -j {sep}");
            rules.push(rule);
            remaining = remaining.saturating_sub(weight);
            let pinned = endpoints.entry((b.ip, b.port)).or_insert(false);
            *pinned |= affinity.is_some();
        }
        out.chains.insert((Table::Nat, chain.clone()), rules);
    }
    let affinity_any = lists.lists.iter().find_map(|(_, _, a)| *a);
    for ((ip, port), pinned) in endpoints {
        let sep = names::endpoint_chain(spn, ip, port);
        let ep = names::endpoint_string(ip, port);
        let recent = match (pinned, affinity_any) {
            (true, Some(_)) => format!(" -m recent --name {sep} --set"),
            _ => String::new(),
        };
        out.chains.insert(
            (Table::Nat, sep),
            vec![
                format!(
                    "-m comment --comment {pname} -s {} -j {MARK_MASQ}",
                    host(ip)
                ),
                format!(
                    "-m comment --comment {pname}{recent} {} -j DNAT --to-destination {ep}",
                    proto_match(spn.protocol)
                ),
            ],
        );
    }
    out
}

/// The cluster-wide backends pod and node traffic short-circuits to (policy Local), if any.
fn short_circuit(fe: &FrontEnd) -> Option<&[Backend]> {
    fe.local_short_circuit.as_deref().filter(|c| !c.is_empty())
}

/// `KUBE-EXT-` of a Service port: short-circuit pod and node traffic under policy Local,
/// masquerade under policy Cluster, then the external backend chain.
fn external_rules<'a>(
    pname: &str,
    fe: &'a FrontEnd,
    cidrs: &[Cidr],
    lists: &mut BackendChains<'a>,
) -> Vec<String> {
    let mut rules = Vec::new();
    if let Some(cluster) = short_circuit(fe) {
        let svc = lists.chain_for(cluster, false, fe.affinity_timeout_seconds);
        for c in cidrs {
            rules.push(format!(
                "-m comment --comment \"pod traffic for {pname} external destinations\" -s {c} -j {svc}"
            ));
        }
        rules.push(format!("-m comment --comment \"masquerade LOCAL traffic for {pname} external destinations\" -m addrtype --src-type LOCAL -j {MARK_MASQ}"));
        rules.push(format!("-m comment --comment \"route LOCAL traffic for {pname} external destinations\" -m addrtype --src-type LOCAL -j {svc}"));
    }
    if let Some(rule) = masquerade_rule(
        fe.masquerade,
        cidrs,
        &format!("-m comment --comment \"masquerade traffic for {pname} external destinations\""),
    ) {
        rules.push(rule);
    }
    if let Target::Backends(b) = &fe.target {
        let chain = lists.chain_for(
            b,
            fe.local_short_circuit.is_some(),
            fe.affinity_timeout_seconds,
        );
        rules.push(format!("-j {chain}"));
    }
    rules
}

/// The rule marking a packet (matched by `prefix`) for masquerade under `policy`.
fn masquerade_rule(policy: Masquerade, cidrs: &[Cidr], prefix: &str) -> Option<String> {
    match (policy, cidrs) {
        (Masquerade::Never, _) => None,
        (Masquerade::Always, _) | (Masquerade::OffCluster, []) => {
            Some(format!("{prefix} -j {MARK_MASQ}"))
        }
        (Masquerade::OffCluster, [one]) => Some(format!("{prefix} ! -s {one} -j {MARK_MASQ}")),
        (Masquerade::OffCluster, _) => Some(format!("{prefix} -j {MASQ_NON_POD}")),
    }
}
