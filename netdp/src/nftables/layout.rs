//! The fixed shape of the `kwk-proxy` tables: names of chains and maps, the registers each rule
//! uses, the base chains and their few global rules, and the rules of one "class" chain (the
//! behaviour shared by every front end with the same backend count, masquerade mode, affinity
//! timeout and short-circuit count).
//!
//! Per family (`ip`, `ip6`) table `kwk-proxy`:
//! - `service-classes`: data map `daddr . l4proto . dport -> class id` (every front end that
//!   NATs, i.e. has backends or short-circuit backends);
//! - `class-chains`: verdict map `class id -> goto class-<id>`, one element per class. The only
//!   verdict map that grows with the cluster is thus a handful of elements: a commit that adds
//!   a jump/goto element or a rule walks every element of every reachable verdict map to
//!   validate the jump graph (~100 ns each), so a goto per front end made adding a Service or
//!   changing its class cost O(front ends) (~6 ms at 50k Services); here it is map elements
//!   only;
//! - `backends`: data map `daddr . l4proto . dport . slot -> addr . port`; slots
//!   `0..n` are the front end's backends (repeated by weight), `SHORT_CIRCUIT_SLOTS + 0..k`
//!   its `local_short_circuit` backends;
//! - `reject-services` / `drop-services`: sets of keys without endpoints, checked for new
//!   connections in the filter hooks (input, forward, output) before they reach NAT;
//! - `affinity`: dynamic map with timeouts `saddr . daddr . l4proto . dport -> addr . port`,
//!   filled from the packet path; `affinity-backends`: the `key . addr . port` pairs an
//!   affinity entry may still use (a removed backend stops matching at once);
//! - `hairpin`: `addr . addr` of node-local backends, masqueraded in postrouting;
//! - `firewall-chains`: verdict map `key -> goto fw-<addr>-<proto>-<port>` for load balancer
//!   front ends with `loadBalancerSourceRanges` (rare: one small chain each, returning for
//!   allowed sources and dropping the rest, in filter hooks before DNAT).
//!
//! A class chain marks for masquerade (`Always`, or `OffCluster` for sources outside the
//! cluster CIDRs), short-circuits pod and node-local sources of `externalTrafficPolicy: Local`
//! front ends, consults the affinity map, and DNATs through `numgen random mod n` into
//! `backends`. Packet cost is a fixed number of hash lookups whatever the Service count.

use std::time::Duration;

use crate::model::{Cidr, IpFamily, Masquerade};
use crate::nft::{
    Batch, Chain, ChainType, CmpOp, Datum, DynsetOp, Expr, Family, Hook, KeyType, MetaKey,
    NatFlags, NatKind, NumgenKind, Policy, Reg, Reject, SetFlags, SetSpec, ct_state, ifname,
    match_ct_state, match_mark, priority, set_mark_bits,
};

pub const TABLE: &str = "kwk-proxy";
/// kube-proxy's default masquerade mark bit.
pub const MASQ_MARK: u32 = 0x4000;
/// The first slot of a front end's short-circuit backends in `backends`.
pub const SHORT_CIRCUIT_SLOTS: u32 = 1 << 16;

pub const SERVICE_CLASSES: &str = "service-classes";
pub const CLASS_CHAINS: &str = "class-chains";
pub const BACKENDS: &str = "backends";
pub const REJECT_SERVICES: &str = "reject-services";
pub const DROP_SERVICES: &str = "drop-services";
pub const AFFINITY: &str = "affinity";
pub const AFFINITY_BACKENDS: &str = "affinity-backends";
pub const HAIRPIN: &str = "hairpin";
pub const FIREWALL_CHAINS: &str = "firewall-chains";

pub const NAT_PREROUTING: &str = "nat-prerouting";
pub const NAT_OUTPUT: &str = "nat-output";
pub const NAT_POSTROUTING: &str = "nat-postrouting";
pub const FILTER_INPUT: &str = "filter-input";
pub const FILTER_FORWARD: &str = "filter-forward";
pub const FILTER_OUTPUT: &str = "filter-output";
pub const SERVICES: &str = "services";
pub const ENDPOINTS_CHECK: &str = "endpoints-check";
pub const FILTER_PREROUTING: &str = "filter-prerouting";
pub const FILTER_OUTPUT_PRE_NAT: &str = "filter-output-pre-nat";
pub const FIREWALL_CHECK: &str = "firewall-check";

/// The named sets and maps of a table, in creation order.
pub const SETS: [&str; 9] = [
    SERVICE_CLASSES,
    CLASS_CHAINS,
    BACKENDS,
    REJECT_SERVICES,
    DROP_SERVICES,
    AFFINITY,
    AFFINITY_BACKENDS,
    HAIRPIN,
    FIREWALL_CHAINS,
];

/// The smallest size given to a set the sync fills (see [`set_size`]).
pub const MIN_SET_SIZE: u32 = 1024;

/// The size (`NFTA_SET_DESC_SIZE`) of a set the sync fills with `elements`: room to grow by half
/// before an incremental sync would overflow it (then a full sync sizes it anew).
///
/// With a size the kernel gives the maps its fixed-size hash (`nft_hash`) instead of the
/// resizable `rhash`, which starts at 4 buckets and rehashes over and over while a full sync
/// inserts 10^5 elements (about half the kernel's time of a 10k-Service sync), and whose
/// walker makes the verdict-map walk of a commit's validation slower. `affinity` stays unsized:
/// it is filled by packets, and a full dynamic set would make the DNAT rule that adds to it
/// fail.
pub fn set_size(elements: usize) -> u32 {
    let roomy = elements.saturating_add(elements / 2);
    u32::try_from(roomy).unwrap_or(u32::MAX).max(MIN_SET_SIZE)
}

/// Whether the sync fills `set` with elements that grow with the cluster (so it gets a size),
/// by index in [`SETS`]. `class-chains` holds one element per class, written with the class.
pub fn sized(set: usize) -> bool {
    SETS.get(set)
        .is_some_and(|s| *s != AFFINITY && *s != CLASS_CHAINS)
}

/// The index of a set in [`SETS`].
pub fn set_index(name: &str) -> Option<usize> {
    SETS.iter().position(|s| *s == name)
}

/// The fixed chains of a table.
pub const FIXED_CHAINS: [&str; 11] = [
    NAT_PREROUTING,
    NAT_OUTPUT,
    NAT_POSTROUTING,
    FILTER_INPUT,
    FILTER_FORWARD,
    FILTER_OUTPUT,
    SERVICES,
    ENDPOINTS_CHECK,
    FILTER_PREROUTING,
    FILTER_OUTPUT_PRE_NAT,
    FIREWALL_CHECK,
];

/// The behaviour a front end's class chain implements (everything but its key and backends).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Class {
    /// Backend slots (sum of weights) of the target; 0 for `Reject`/`Drop`.
    pub slots: u32,
    /// Short-circuit backend slots (pod and node sources); 0 when none.
    pub short_circuit_slots: u32,
    pub masquerade: Masquerade,
    pub affinity_seconds: Option<u32>,
}

pub fn class_chain(id: u32) -> String {
    format!("class-{id}")
}

fn class_dnat_chain(id: u32) -> String {
    format!("class-{id}-dnat")
}

fn class_short_circuit_chain(id: u32) -> String {
    format!("class-{id}-local")
}

/// The address family and its register plan. Keys are laid out so that every lookup reads
/// consecutive registers: `saddr | daddr | l4proto | dport | slot | backend addr | port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fam {
    pub ip: IpFamily,
}

impl Fam {
    pub const ALL: [Fam; 2] = [Fam { ip: IpFamily::V4 }, Fam { ip: IpFamily::V6 }];

    pub fn family(self) -> Family {
        match self.ip {
            IpFamily::V4 => Family::Ip,
            IpFamily::V6 => Family::Ip6,
        }
    }

    pub fn addr_type(self) -> KeyType {
        match self.ip {
            IpFamily::V4 => KeyType::Ipv4Addr,
            IpFamily::V6 => KeyType::Ipv6Addr,
        }
    }

    /// 32-bit registers an address takes.
    fn addr_regs(self) -> u8 {
        match self.ip {
            IpFamily::V4 => 1,
            IpFamily::V6 => 4,
        }
    }

    fn saddr(self) -> Reg {
        Reg::R0
    }
    fn daddr(self) -> Reg {
        Reg(self.addr_regs())
    }
    fn proto(self) -> Reg {
        Reg(2 * self.addr_regs())
    }
    fn dport(self) -> Reg {
        Reg(2 * self.addr_regs() + 1)
    }
    /// The numgen slot, also where class ids and affinity data land.
    fn slot(self) -> Reg {
        Reg(2 * self.addr_regs() + 2)
    }
    /// Where `backends` puts the chosen `addr . port`.
    fn backend(self) -> Reg {
        Reg(2 * self.addr_regs() + 3)
    }
    fn port_after(self, addr: Reg) -> Reg {
        Reg(addr.0 + self.addr_regs())
    }

    fn key_types(self) -> Vec<KeyType> {
        vec![self.addr_type(), KeyType::InetProto, KeyType::InetService]
    }

    /// `saddr`, `daddr`, `l4proto`, `dport` into their registers.
    fn load_packet(self) -> Vec<Expr> {
        let (saddr, daddr) = match self.ip {
            IpFamily::V4 => (Expr::ip_saddr(self.saddr()), Expr::ip_daddr(self.daddr())),
            IpFamily::V6 => (Expr::ip6_saddr(self.saddr()), Expr::ip6_daddr(self.daddr())),
        };
        vec![
            saddr,
            daddr,
            Expr::meta(MetaKey::L4proto, self.proto()),
            Expr::th_dport(self.dport()),
        ]
    }

    fn dnat(self, addr: Reg) -> Expr {
        Expr::Nat {
            kind: NatKind::Dnat,
            family: self.family(),
            addr: Some(addr),
            port: Some(self.port_after(addr)),
            flags: NatFlags::default(),
        }
    }

    /// The specs of the table's sets and maps, sized by `sizes` (by index in [`SETS`]).
    pub fn sets(self, sizes: &[Option<u32>; SETS.len()]) -> Vec<SetSpec> {
        let a = self.addr_type();
        let key = self.key_types();
        let with = |extra: &[KeyType]| {
            let mut k = key.clone();
            k.extend_from_slice(extra);
            k
        };
        let mut affinity_key = vec![a];
        affinity_key.extend(key.iter().copied());
        vec![
            SetSpec::data_map(SERVICE_CLASSES, key.clone(), vec![KeyType::Mark]),
            SetSpec::verdict_map(CLASS_CHAINS, vec![KeyType::Mark]),
            SetSpec::data_map(
                BACKENDS,
                // `mark` (a 32-bit host-order type) rather than `integer`, whose unknown length
                // in a concatenation makes `nft list` abort.
                with(&[KeyType::Mark]),
                vec![a, KeyType::InetService],
            ),
            SetSpec::set(REJECT_SERVICES, key.clone()),
            SetSpec::set(DROP_SERVICES, key.clone()),
            SetSpec::data_map(AFFINITY, affinity_key, vec![a, KeyType::InetService]).with_flags(
                SetFlags {
                    timeout: true,
                    dynamic: true,
                    ..SetFlags::default()
                },
            ),
            SetSpec::set(AFFINITY_BACKENDS, with(&[a, KeyType::InetService])),
            SetSpec::set(HAIRPIN, vec![a, a]),
            SetSpec::verdict_map(FIREWALL_CHAINS, key.clone()),
        ]
        .into_iter()
        .zip(sizes)
        .map(|(spec, size)| match size {
            Some(size) => spec.with_size(*size),
            None => spec,
        })
        .collect()
    }

    /// Creates the table, its fixed chains, sets (sized by `sizes`) and global rules (the table
    /// must not exist or be empty).
    pub fn add_skeleton(self, b: &mut Batch, sizes: &[Option<u32>; SETS.len()]) {
        let f = self.family();
        b.add_table(f, TABLE);
        let base = [
            (
                NAT_PREROUTING,
                ChainType::Nat,
                Hook::Prerouting,
                priority::DSTNAT,
            ),
            (NAT_OUTPUT, ChainType::Nat, Hook::Output, priority::DSTNAT),
            (
                NAT_POSTROUTING,
                ChainType::Nat,
                Hook::Postrouting,
                priority::SRCNAT,
            ),
            (
                FILTER_INPUT,
                ChainType::Filter,
                Hook::Input,
                priority::FILTER - 10,
            ),
            (
                FILTER_FORWARD,
                ChainType::Filter,
                Hook::Forward,
                priority::FILTER - 10,
            ),
            (
                FILTER_OUTPUT,
                ChainType::Filter,
                Hook::Output,
                priority::FILTER - 10,
            ),
            (
                FILTER_PREROUTING,
                ChainType::Filter,
                Hook::Prerouting,
                priority::DSTNAT - 10,
            ),
            (
                FILTER_OUTPUT_PRE_NAT,
                ChainType::Filter,
                Hook::Output,
                priority::DSTNAT - 10,
            ),
        ];
        for (name, ty, hook, prio) in base {
            b.add_chain(f, TABLE, &Chain::base(name, ty, hook, prio, Policy::Accept));
        }
        b.add_chain(f, TABLE, &Chain::regular(SERVICES));
        b.add_chain(f, TABLE, &Chain::regular(ENDPOINTS_CHECK));
        b.add_chain(f, TABLE, &Chain::regular(FIREWALL_CHECK));
        for spec in self.sets(sizes) {
            b.add_set(f, TABLE, &spec);
        }
        for chain in [NAT_PREROUTING, NAT_OUTPUT] {
            b.add_rule(f, TABLE, chain, &[Expr::jump(SERVICES)]);
        }
        for chain in [FILTER_INPUT, FILTER_FORWARD, FILTER_OUTPUT] {
            let mut rule = match_ct_state(ct_state::NEW).to_vec();
            rule.push(Expr::jump(ENDPOINTS_CHECK));
            b.add_rule(f, TABLE, chain, &rule);
        }
        for chain in [FILTER_PREROUTING, FILTER_OUTPUT_PRE_NAT] {
            let mut rule = match_ct_state(ct_state::NEW).to_vec();
            rule.push(Expr::jump(FIREWALL_CHECK));
            b.add_rule(f, TABLE, chain, &rule);
        }
        let mut firewall = self.load_packet();
        firewall.push(Expr::vmap(FIREWALL_CHAINS, self.daddr()));
        b.add_rule(f, TABLE, FIREWALL_CHECK, &firewall);
        // services: key -> class id -> goto class chain.
        let mut dispatch = self.load_packet();
        dispatch.push(Expr::map(SERVICE_CLASSES, self.daddr(), self.slot()));
        dispatch.push(Expr::vmap(CLASS_CHAINS, self.slot()));
        b.add_rule_commented(
            f,
            TABLE,
            SERVICES,
            &dispatch,
            Some("service front ends by address, protocol and port"),
        );
        // endpoints-check: Services without endpoints fail fast; Local ones without local
        // endpoints drop.
        let unreachable = match self.ip {
            IpFamily::V4 => Reject::Icmp(3),
            IpFamily::V6 => Reject::Icmp(4),
        };
        let in_set = |set: &str| {
            let mut e = self.load_packet();
            e.push(Expr::in_set(set, self.daddr(), false));
            e
        };
        let mut tcp = in_set(REJECT_SERVICES);
        tcp.push(Expr::cmp_eq(self.proto(), &[Datum::Proto(6)]));
        tcp.push(Expr::Reject(Reject::TcpReset));
        b.add_rule(f, TABLE, ENDPOINTS_CHECK, &tcp);
        let mut other = in_set(REJECT_SERVICES);
        other.push(Expr::Reject(unreachable));
        b.add_rule(f, TABLE, ENDPOINTS_CHECK, &other);
        let mut drop = in_set(DROP_SERVICES);
        drop.push(Expr::drop());
        b.add_rule(f, TABLE, ENDPOINTS_CHECK, &drop);
        // postrouting: masquerade what was marked (clearing the mark), and hairpin traffic.
        let mut masq = match_mark(MASQ_MARK, MASQ_MARK).to_vec();
        masq.extend(clear_mark_bits(MASQ_MARK));
        masq.push(Expr::Masquerade(NatFlags {
            fully_random: true,
            ..NatFlags::default()
        }));
        b.add_rule(f, TABLE, NAT_POSTROUTING, &masq);
        let mut hairpin = self.load_packet();
        hairpin.truncate(2);
        hairpin.push(Expr::in_set(HAIRPIN, self.saddr(), false));
        hairpin.push(Expr::Masquerade(NatFlags {
            fully_random: true,
            ..NatFlags::default()
        }));
        b.add_rule_commented(
            f,
            TABLE,
            NAT_POSTROUTING,
            &hairpin,
            Some("a backend reaching itself through its Service"),
        );
    }

    /// Adds the chains of class `id` and its `class-chains` element.
    pub fn add_class(self, b: &mut Batch, id: u32, class: &Class, cluster_cidrs: &[Cidr]) {
        let f = self.family();
        let main = class_chain(id);
        let dnat = class_dnat_chain(id);
        let local = class_short_circuit_chain(id);
        let cidrs: Vec<&Cidr> = cluster_cidrs
            .iter()
            .filter(|c| c.family() == self.ip)
            .collect();
        b.add_chain(f, TABLE, &Chain::regular(main.as_str()));
        b.add_chain(f, TABLE, &Chain::regular(dnat.as_str()));
        if class.short_circuit_slots > 0 {
            b.add_chain(f, TABLE, &Chain::regular(local.as_str()));
            // Pods and the node itself reach every endpoint (the node's traffic masqueraded).
            for cidr in &cidrs {
                let mut r = self.match_source(cidr);
                r.push(Expr::goto(local.as_str()));
                b.add_rule(f, TABLE, &main, &r);
            }
            let mut node = vec![
                Expr::meta(MetaKey::Iifname, Reg::R0),
                Expr::Cmp {
                    sreg: Reg::R0,
                    op: CmpOp::Eq,
                    data: ifname(""),
                },
            ];
            node.extend(set_mark_bits(MASQ_MARK));
            node.push(Expr::goto(local.as_str()));
            b.add_rule(f, TABLE, &main, &node);
            self.add_pick(
                b,
                &local,
                class.short_circuit_slots,
                SHORT_CIRCUIT_SLOTS,
                class,
            );
        }
        if class.slots == 0 {
            // Reject/Drop in the filter hooks; nothing to NAT for other sources.
            b.add_rule(f, TABLE, &main, &[Expr::accept()]);
        } else {
            if class.masquerade == Masquerade::OffCluster {
                for cidr in &cidrs {
                    let mut r = self.match_source(cidr);
                    r.push(Expr::goto(dnat.as_str()));
                    b.add_rule(f, TABLE, &main, &r);
                }
            }
            if class.masquerade != Masquerade::Never {
                b.add_rule(f, TABLE, &main, &set_mark_bits(MASQ_MARK));
            }
            b.add_rule(f, TABLE, &main, &[Expr::goto(dnat.as_str())]);
            self.add_pick(b, &dnat, class.slots, 0, class);
        }
        let goto = crate::nft::Element::verdict(&[Datum::U32(id)], crate::nft::Verdict::Goto(main));
        b.add_elements(f, TABLE, CLASS_CHAINS, &[goto]);
    }

    /// Creates (or, with `flush`, rewrites) the firewall chain `name`: sources in `allowed`
    /// return, everything else is dropped.
    pub fn write_firewall_chain(self, b: &mut Batch, name: &str, allowed: &[Cidr], flush: bool) {
        let f = self.family();
        if flush {
            b.flush_chain(f, TABLE, name);
        } else {
            b.add_chain(f, TABLE, &Chain::regular(name));
        }
        for cidr in allowed.iter().filter(|c| c.family() == self.ip) {
            let mut r = self.match_source(cidr);
            r.push(Expr::verdict(crate::nft::Verdict::Return));
            b.add_rule(f, TABLE, name, &r);
        }
        b.add_rule_commented(
            f,
            TABLE,
            name,
            &[Expr::drop()],
            Some("source not in loadBalancerSourceRanges"),
        );
    }

    /// Removes a firewall chain (after its `firewall-chains` element is gone).
    pub fn delete_firewall_chain(self, b: &mut Batch, name: &str) {
        b.flush_chain(self.family(), TABLE, name);
        b.delete_chain(self.family(), TABLE, name);
    }

    /// `saddr & mask == network`.
    fn match_source(self, cidr: &Cidr) -> Vec<Expr> {
        let (load, mask, net) = match cidr.network() {
            std::net::IpAddr::V4(n) => {
                let bits = u32::MAX
                    .checked_shl(32 - u32::from(cidr.prefix_len()))
                    .unwrap_or(0);
                (
                    Expr::ip_saddr(Reg::R0),
                    bits.to_be_bytes().to_vec(),
                    n.octets().to_vec(),
                )
            }
            std::net::IpAddr::V6(n) => {
                let bits = u128::MAX
                    .checked_shl(128 - u32::from(cidr.prefix_len()))
                    .unwrap_or(0);
                (
                    Expr::ip6_saddr(Reg::R0),
                    bits.to_be_bytes().to_vec(),
                    n.octets().to_vec(),
                )
            }
        };
        let len = mask.len();
        vec![
            load,
            Expr::Bitwise {
                sreg: Reg::R0,
                dreg: Reg::R0,
                mask,
                xor: vec![0; len],
            },
            Expr::Cmp {
                sreg: Reg::R0,
                op: CmpOp::Eq,
                data: net,
            },
        ]
    }

    /// The rules that choose a backend in `chain`: a still-valid affinity entry first, then a
    /// random slot in `offset..offset + slots`.
    fn add_pick(self, b: &mut Batch, chain: &str, slots: u32, offset: u32, class: &Class) {
        let f = self.family();
        let timeout = class
            .affinity_seconds
            .map(|s| Duration::from_secs(u64::from(s)));
        if let Some(timeout) = timeout {
            let mut sticky = self.load_packet();
            sticky.push(Expr::map(AFFINITY, self.saddr(), self.slot()));
            sticky.push(Expr::in_set(AFFINITY_BACKENDS, self.daddr(), false));
            sticky.push(Expr::DynsetMap {
                set: AFFINITY.into(),
                op: DynsetOp::Update,
                sreg_key: self.saddr(),
                sreg_data: self.slot(),
                timeout: Some(timeout),
            });
            sticky.push(self.dnat(self.slot()));
            b.add_rule_commented(f, TABLE, chain, &sticky, Some("session affinity"));
        }
        let mut pick = self.load_packet();
        pick.push(Expr::Numgen {
            kind: NumgenKind::Random,
            modulus: slots,
            offset,
            dreg: self.slot(),
        });
        pick.push(Expr::map(BACKENDS, self.daddr(), self.backend()));
        if let Some(timeout) = timeout {
            pick.push(Expr::DynsetMap {
                set: AFFINITY.into(),
                op: DynsetOp::Update,
                sreg_key: self.saddr(),
                sreg_data: self.backend(),
                timeout: Some(timeout),
            });
        }
        pick.push(self.dnat(self.backend()));
        b.add_rule(f, TABLE, chain, &pick);
    }
}

/// `meta mark set meta mark & ~bits`.
fn clear_mark_bits(bits: u32) -> [Expr; 3] {
    [
        Expr::meta(MetaKey::Mark, Reg::R0),
        Expr::Bitwise {
            sreg: Reg::R0,
            dreg: Reg::R0,
            mask: (!bits).to_ne_bytes().to_vec(),
            xor: vec![0; 4],
        },
        Expr::MetaSet {
            key: MetaKey::Mark,
            sreg: Reg::R0,
        },
    ]
}
