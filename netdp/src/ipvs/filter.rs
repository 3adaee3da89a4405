//! The IPVS mode's nf_tables table `ip kwk-ipvs`: what IPVS itself cannot do, without ipset or
//! iptables. Owns the table's layout and its pure rendering ([`full_batch`],
//! [`incremental_batch`]); the dataplane applies the batches.
//!
//! Layout (IPv4; IPv6 front ends get virtual services and addresses but no filter rules yet):
//! - sets keyed `ipv4_addr . inet_proto . inet_service` (the front end): `masq-always`
//!   (masquerade policy `Always`), `masq-off-cluster` (`OffCluster`), `reject-services`
//!   (no endpoints: ICMP port unreachable, as upstream's `REJECT`), `drop-services` (`Local`
//!   policy without local endpoints);
//! - `hairpin`, keyed `ipv4_addr . ipv4_addr`: (endpoint, endpoint) for every backend, the
//!   counterpart of upstream's `KUBE-LOOP-BACK` ipset: a pod reaching itself through a Service
//!   is masqueraded in postrouting;
//! - `nat-prerouting` / `nat-output` (dstnat) jump to `services`, which sets the masquerade mark
//!   bit for `masq-always` front ends and, through `mark-off-cluster`, for `masq-off-cluster`
//!   ones when the source is outside every cluster CIDR; `nat-postrouting` (srcnat)
//!   masquerades marked and hairpin packets;
//! - `filter-input` (filter) and `filter-output` (before IPVS's LOCAL_OUT hook at -99) jump to
//!   `no-endpoints` for new connections (`ct state new`, as upstream's nftables mode), which
//!   rejects or drops by the two front-end sets; established connections pass, so one to a
//!   draining real server outlives its Service's last endpoint.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use crate::model::{Cidr, FrontEnd, FrontEndKey, Masquerade, Protocol, RuleSet, Target};
use crate::nft::{
    Batch, Chain, ChainType, Datum, Element, Expr, Family, Hook, KeyType, NatFlags, Policy, Reg,
    Reject, SetSpec, ct_state, load_daddr_proto_dport, match_ct_state, match_mark, priority,
    set_mark_bits,
};

/// The table's name (family `ip`).
pub const TABLE: &str = "kwk-ipvs";
/// The table's family.
pub const FAMILY: Family = Family::Ip;

pub const SET_MASQ_ALWAYS: &str = "masq-always";
pub const SET_MASQ_OFF_CLUSTER: &str = "masq-off-cluster";
pub const SET_REJECT: &str = "reject-services";
pub const SET_DROP: &str = "drop-services";
pub const SET_HAIRPIN: &str = "hairpin";

const CHAIN_SERVICES: &str = "services";
const CHAIN_MARK_OFF_CLUSTER: &str = "mark-off-cluster";
const CHAIN_NO_ENDPOINTS: &str = "no-endpoints";
/// Just before IPVS's LOCAL_OUT hook (`NF_IP_PRI_NAT_DST + 1`).
const FILTER_OUTPUT_PRIORITY: i32 = -110;

const FRONT_END_SETS: [&str; 4] = [SET_MASQ_ALWAYS, SET_MASQ_OFF_CLUSTER, SET_REJECT, SET_DROP];

fn proto_number(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    }
}

/// The front-end sets `fe` belongs to, with its element; empty for IPv6 front ends.
pub fn front_end_elements(key: &FrontEndKey, fe: &FrontEnd) -> Vec<(&'static str, Element)> {
    let IpAddr::V4(ip) = key.ip else {
        return Vec::new();
    };
    let element = || {
        Element::key(&[
            Datum::Ipv4(ip),
            Datum::Proto(proto_number(key.protocol)),
            Datum::Port(key.port),
        ])
    };
    let mut out = Vec::new();
    match fe.masquerade {
        Masquerade::Always => out.push((SET_MASQ_ALWAYS, element())),
        Masquerade::OffCluster => out.push((SET_MASQ_OFF_CLUSTER, element())),
        Masquerade::Never => {}
    }
    match fe.target {
        Target::Reject => out.push((SET_REJECT, element())),
        Target::Drop => out.push((SET_DROP, element())),
        Target::Backends(_) => {}
    }
    out
}

/// The IPv4 backends of `fe` (the destinations IPVS gets), for the hairpin set.
pub fn hairpin_backends(fe: &FrontEnd) -> impl Iterator<Item = Ipv4Addr> + '_ {
    fe.target.backends().iter().filter_map(|b| match b.ip {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(_) => None,
    })
}

fn hairpin_element(ip: Ipv4Addr) -> Element {
    Element::key(&[Datum::Ipv4(ip), Datum::Ipv4(ip)])
}

/// How many front ends reference each IPv4 backend (a hairpin element lives while any does).
pub fn hairpin_counts(rules: &RuleSet) -> BTreeMap<Ipv4Addr, usize> {
    let mut counts = BTreeMap::new();
    for fe in rules.front_ends.values() {
        for ip in hairpin_backends(fe) {
            *counts.entry(ip).or_insert(0) += 1;
        }
    }
    counts
}

fn in_front_end_set(set: &str) -> Vec<Expr> {
    let mut e: Vec<Expr> = load_daddr_proto_dport().into();
    e.push(Expr::in_set(set, Reg::R0, false));
    e
}

fn off_cluster_rules(cidrs: &[Cidr], mark_bit: u32) -> Vec<Vec<Expr>> {
    let mut rules: Vec<Vec<Expr>> = cidrs
        .iter()
        .filter_map(|c| match c.network() {
            IpAddr::V4(net) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(c.prefix_len()))
                    .unwrap_or(0);
                Some(vec![
                    Expr::ip_saddr(Reg::R0),
                    Expr::Bitwise {
                        sreg: Reg::R0,
                        dreg: Reg::R0,
                        mask: mask.to_be_bytes().to_vec(),
                        xor: vec![0; 4],
                    },
                    Expr::cmp_eq(Reg::R0, &[Datum::Ipv4(net)]),
                    Expr::verdict(crate::nft::Verdict::Return),
                ])
            }
            IpAddr::V6(_) => None,
        })
        .collect();
    rules.push(set_mark_bits(mark_bit).into());
    rules
}

/// The whole table in one transaction: created if missing, deleted, and written again, so
/// whatever else was in it (ours or someone's edits) is gone atomically.
pub fn full_batch(rules: &RuleSet, hairpins: &BTreeMap<Ipv4Addr, usize>, mark_bit: u32) -> Batch {
    let mut b = Batch::new();
    b.add_table(FAMILY, TABLE)
        .delete_table(FAMILY, TABLE)
        .add_table(FAMILY, TABLE);
    let front_end_key = || vec![KeyType::Ipv4Addr, KeyType::InetProto, KeyType::InetService];
    for set in FRONT_END_SETS {
        b.add_set(FAMILY, TABLE, &SetSpec::set(set, front_end_key()));
    }
    b.add_set(
        FAMILY,
        TABLE,
        &SetSpec::set(SET_HAIRPIN, vec![KeyType::Ipv4Addr, KeyType::Ipv4Addr]),
    );
    for name in [CHAIN_SERVICES, CHAIN_MARK_OFF_CLUSTER, CHAIN_NO_ENDPOINTS] {
        b.add_chain(FAMILY, TABLE, &Chain::regular(name));
    }
    let bases = [
        (
            "nat-prerouting",
            ChainType::Nat,
            Hook::Prerouting,
            priority::DSTNAT,
            CHAIN_SERVICES,
        ),
        (
            "nat-output",
            ChainType::Nat,
            Hook::Output,
            priority::DSTNAT,
            CHAIN_SERVICES,
        ),
        (
            "filter-input",
            ChainType::Filter,
            Hook::Input,
            priority::FILTER,
            CHAIN_NO_ENDPOINTS,
        ),
        (
            "filter-output",
            ChainType::Filter,
            Hook::Output,
            FILTER_OUTPUT_PRIORITY,
            CHAIN_NO_ENDPOINTS,
        ),
    ];
    for (name, kind, hook, prio, target) in bases {
        b.add_chain(
            FAMILY,
            TABLE,
            &Chain::base(name, kind, hook, prio, Policy::Accept),
        );
        // Only new connections are refused: one established through a real server that is
        // draining (graceful termination) outlives its Service's last endpoint. (NAT chains
        // see only a connection's first packet anyway.)
        let mut jump = match kind {
            ChainType::Filter => match_ct_state(ct_state::NEW).to_vec(),
            _ => Vec::new(),
        };
        jump.push(Expr::jump(target));
        b.add_rule(FAMILY, TABLE, name, &jump);
    }
    b.add_chain(
        FAMILY,
        TABLE,
        &Chain::base(
            "nat-postrouting",
            ChainType::Nat,
            Hook::Postrouting,
            priority::SRCNAT,
            Policy::Accept,
        ),
    );
    let mut marked: Vec<Expr> = match_mark(mark_bit, mark_bit).into();
    marked.push(Expr::Masquerade(NatFlags::default()));
    b.add_rule_commented(
        FAMILY,
        TABLE,
        "nat-postrouting",
        &marked,
        Some("masquerade marked"),
    );
    let hairpin = [
        Expr::ip_saddr(Reg::R0),
        Expr::ip_daddr(Reg::R1),
        Expr::in_set(SET_HAIRPIN, Reg::R0, false),
        Expr::Masquerade(NatFlags::default()),
    ];
    b.add_rule_commented(FAMILY, TABLE, "nat-postrouting", &hairpin, Some("hairpin"));

    let mut always = in_front_end_set(SET_MASQ_ALWAYS);
    always.extend(set_mark_bits(mark_bit));
    b.add_rule(FAMILY, TABLE, CHAIN_SERVICES, &always);
    let mut off = in_front_end_set(SET_MASQ_OFF_CLUSTER);
    off.push(Expr::jump(CHAIN_MARK_OFF_CLUSTER));
    b.add_rule(FAMILY, TABLE, CHAIN_SERVICES, &off);
    for rule in off_cluster_rules(&rules.cluster_cidrs, mark_bit) {
        b.add_rule(FAMILY, TABLE, CHAIN_MARK_OFF_CLUSTER, &rule);
    }
    let mut reject = in_front_end_set(SET_REJECT);
    reject.push(Expr::Reject(Reject::Icmp(3)));
    b.add_rule_commented(
        FAMILY,
        TABLE,
        CHAIN_NO_ENDPOINTS,
        &reject,
        Some("no endpoints"),
    );
    let mut drop = in_front_end_set(SET_DROP);
    drop.push(Expr::drop());
    b.add_rule_commented(
        FAMILY,
        TABLE,
        CHAIN_NO_ENDPOINTS,
        &drop,
        Some("no local endpoints"),
    );

    let mut by_set: BTreeMap<&str, Vec<Element>> = BTreeMap::new();
    for (key, fe) in &rules.front_ends {
        for (set, element) in front_end_elements(key, fe) {
            by_set.entry(set).or_default().push(element);
        }
    }
    for (set, elements) in &by_set {
        b.add_elements(FAMILY, TABLE, set, elements);
    }
    let hairpin: Vec<Element> = hairpins.keys().map(|ip| hairpin_element(*ip)).collect();
    if !hairpin.is_empty() {
        b.add_elements(FAMILY, TABLE, SET_HAIRPIN, &hairpin);
    }
    b
}

/// One front end's change: `None` on a side when absent there.
pub type FrontEndDelta<'a> = (&'a FrontEndKey, Option<&'a FrontEnd>, Option<&'a FrontEnd>);

/// The element changes for `deltas`, updating `hairpins` (reference counts) as it goes. Empty
/// batch (no messages) when nothing in the table changes.
pub fn incremental_batch(
    deltas: &[FrontEndDelta<'_>],
    hairpins: &mut BTreeMap<Ipv4Addr, usize>,
) -> Batch {
    let mut b = Batch::new();
    let mut del: BTreeMap<&str, Vec<Element>> = BTreeMap::new();
    let mut add: BTreeMap<&str, Vec<Element>> = BTreeMap::new();
    // Each touched endpoint with whether it had an element before.
    let mut touched: BTreeMap<Ipv4Addr, bool> = BTreeMap::new();
    for (key, old, new) in deltas {
        let old_elements = old
            .map(|fe| front_end_elements(key, fe))
            .unwrap_or_default();
        let new_elements = new
            .map(|fe| front_end_elements(key, fe))
            .unwrap_or_default();
        for (set, e) in &old_elements {
            if !new_elements.contains(&(*set, e.clone())) {
                del.entry(set).or_default().push(e.clone());
            }
        }
        for (set, e) in &new_elements {
            if !old_elements.contains(&(*set, e.clone())) {
                add.entry(set).or_default().push(e.clone());
            }
        }
        for ip in old.iter().flat_map(|fe| hairpin_backends(fe)) {
            touched
                .entry(ip)
                .or_insert_with(|| hairpins.contains_key(&ip));
            if let Some(count) = hairpins.get_mut(&ip) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    hairpins.remove(&ip);
                }
            }
        }
        for ip in new.iter().flat_map(|fe| hairpin_backends(fe)) {
            touched
                .entry(ip)
                .or_insert_with(|| hairpins.contains_key(&ip));
            *hairpins.entry(ip).or_insert(0) += 1;
        }
    }
    let hairpin_del: Vec<Ipv4Addr> = touched
        .iter()
        .filter(|(ip, before)| **before && !hairpins.contains_key(ip))
        .map(|(ip, _)| *ip)
        .collect();
    let hairpin_add: Vec<Ipv4Addr> = touched
        .iter()
        .filter(|(ip, before)| !**before && hairpins.contains_key(ip))
        .map(|(ip, _)| *ip)
        .collect();
    for (set, elements) in &del {
        b.delete_elements(FAMILY, TABLE, set, elements);
    }
    for (set, elements) in &add {
        b.add_elements(FAMILY, TABLE, set, elements);
    }
    if !hairpin_del.is_empty() {
        let e: Vec<Element> = hairpin_del.iter().map(|ip| hairpin_element(*ip)).collect();
        b.delete_elements(FAMILY, TABLE, SET_HAIRPIN, &e);
    }
    if !hairpin_add.is_empty() {
        let e: Vec<Element> = hairpin_add.iter().map(|ip| hairpin_element(*ip)).collect();
        b.add_elements(FAMILY, TABLE, SET_HAIRPIN, &e);
    }
    b
}
