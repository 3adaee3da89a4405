//! Rule expressions (the nf_tables VM instructions kube-proxy's nftables mode needs) and their
//! netlink encoding, plus small constructors for the common matches (`ip daddr`, `th dport`, ...).

use super::error::NftError;
use super::objects::{AnonymousSet, Datum, Family, Verdict, encode_value};
use super::sys::*;
use super::wire::Writer;

/// A 32-bit data register (0..=15); wider values occupy consecutive registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reg(pub u8);

impl Reg {
    pub const R0: Reg = Reg(0);
    pub const R1: Reg = Reg(1);
    pub const R2: Reg = Reg(2);
    pub const R3: Reg = Reg(3);
    pub const R4: Reg = Reg(4);

    fn wire(self) -> u32 {
        NFT_REG32_00 + u32::from(self.0)
    }
}

/// `meta` keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKey {
    Mark,
    Iifname,
    Oifname,
    Nfproto,
    L4proto,
}

impl MetaKey {
    fn number(self) -> u32 {
        match self {
            Self::Mark => 3,
            Self::Iifname => 6,
            Self::Oifname => 7,
            Self::Nfproto => 15,
            Self::L4proto => 16,
        }
    }
}

/// Which header a `payload` expression reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadBase {
    Network,
    Transport,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
}

/// `ct` keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtKey {
    State,
    Mark,
}

/// Conntrack state bits (`ct state`), host order.
pub mod ct_state {
    pub const INVALID: u32 = 1;
    pub const ESTABLISHED: u32 = 2;
    pub const RELATED: u32 = 4;
    pub const NEW: u32 = 8;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatKind {
    Snat,
    Dnat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NatFlags {
    pub random: bool,
    pub fully_random: bool,
    pub persistent: bool,
}

impl NatFlags {
    fn bits(self) -> u32 {
        (if self.random {
            NF_NAT_RANGE_PROTO_RANDOM
        } else {
            0
        }) | (if self.fully_random {
            NF_NAT_RANGE_PROTO_RANDOM_FULLY
        } else {
            0
        }) | (if self.persistent {
            NF_NAT_RANGE_PERSISTENT
        } else {
            0
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// ICMP (ip) / ICMPv6 (ip6) destination unreachable with this code (3: port unreachable
    /// in ICMP, 4 in ICMPv6).
    Icmp(u8),
    /// ICMPx (inet tables): 1 is port unreachable.
    Icmpx(u8),
    TcpReset,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumgenKind {
    Incremental,
    Random,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DynsetOp {
    Add,
    Update,
    Delete,
}

/// What `immediate` loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Immediate {
    Verdict(Verdict),
    Value(Vec<u8>),
}

/// One expression of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Meta {
        key: MetaKey,
        dreg: Reg,
    },
    /// `meta <key> set <sreg>` (e.g. setting the mark).
    MetaSet {
        key: MetaKey,
        sreg: Reg,
    },
    Payload {
        base: PayloadBase,
        offset: u32,
        len: u32,
        dreg: Reg,
    },
    Cmp {
        sreg: Reg,
        op: CmpOp,
        data: Vec<u8>,
    },
    /// `dreg = (sreg & mask) ^ xor`.
    Bitwise {
        sreg: Reg,
        dreg: Reg,
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    /// A set membership test (no `dreg`) or a map lookup into `dreg` (verdict maps: `None` with
    /// `verdict: true`).
    Lookup {
        set: String,
        /// The batch-local id of an anonymous set created in the same batch.
        set_id: Option<u32>,
        sreg: Reg,
        dreg: Option<Reg>,
        verdict_map: bool,
        invert: bool,
    },
    Immediate(Immediate, Option<Reg>),
    Counter,
    Ct {
        key: CtKey,
        dreg: Reg,
    },
    Nat {
        kind: NatKind,
        family: Family,
        addr: Option<Reg>,
        port: Option<Reg>,
        flags: NatFlags,
    },
    Masquerade(NatFlags),
    Numgen {
        kind: NumgenKind,
        modulus: u32,
        offset: u32,
        dreg: Reg,
    },
    Reject(Reject),
    /// `fib daddr type`: the route type of the destination address (host order, `RTN_*`).
    FibDaddrType {
        dreg: Reg,
    },
    Dynset {
        set: String,
        op: DynsetOp,
        sreg_key: Reg,
        timeout: Option<std::time::Duration>,
    },
    /// `update @map { key : data }` from the packet path: a dynamic map element whose data
    /// comes from registers too (e.g. a session-affinity map client -> backend).
    DynsetMap {
        set: String,
        op: DynsetOp,
        sreg_key: Reg,
        sreg_data: Reg,
        timeout: Option<std::time::Duration>,
    },
}

impl Expr {
    /// `nft`'s expression name.
    fn name(&self) -> &'static str {
        match self {
            Self::Meta { .. } | Self::MetaSet { .. } => "meta",
            Self::Payload { .. } => "payload",
            Self::Cmp { .. } => "cmp",
            Self::Bitwise { .. } => "bitwise",
            Self::Lookup { .. } => "lookup",
            Self::Immediate(..) => "immediate",
            Self::Counter => "counter",
            Self::Ct { .. } => "ct",
            Self::Nat { .. } => "nat",
            Self::Masquerade(_) => "masq",
            Self::Numgen { .. } => "numgen",
            Self::Reject(_) => "reject",
            Self::FibDaddrType { .. } => "fib",
            Self::Dynset { .. } | Self::DynsetMap { .. } => "dynset",
        }
    }

    /// Appends `NFTA_LIST_ELEM { NFTA_EXPR_NAME, NFTA_EXPR_DATA { ... } }`.
    pub(crate) fn encode(&self, w: &mut Writer) -> Result<(), NftError> {
        let elem = w.begin_nested(NFTA_LIST_ELEM);
        w.str(NFTA_EXPR_NAME, self.name());
        let data = w.begin_nested(NFTA_EXPR_DATA);
        match self {
            Self::Meta { key, dreg } => {
                w.u32_be(NFTA_META_KEY, key.number());
                w.u32_be(NFTA_META_DREG, dreg.wire());
            }
            Self::MetaSet { key, sreg } => {
                w.u32_be(NFTA_META_KEY, key.number());
                w.u32_be(NFTA_META_SREG, sreg.wire());
            }
            Self::Payload {
                base,
                offset,
                len,
                dreg,
            } => {
                w.u32_be(NFTA_PAYLOAD_DREG, dreg.wire());
                let base = match base {
                    PayloadBase::Network => 1,
                    PayloadBase::Transport => 2,
                };
                w.u32_be(NFTA_PAYLOAD_BASE, base);
                w.u32_be(NFTA_PAYLOAD_OFFSET, *offset);
                w.u32_be(NFTA_PAYLOAD_LEN, *len);
            }
            Self::Cmp { sreg, op, data } => {
                w.u32_be(NFTA_CMP_SREG, sreg.wire());
                let op = match op {
                    CmpOp::Eq => 0,
                    CmpOp::Neq => 1,
                    CmpOp::Lt => 2,
                    CmpOp::Lte => 3,
                    CmpOp::Gt => 4,
                    CmpOp::Gte => 5,
                };
                w.u32_be(NFTA_CMP_OP, op);
                value_data(w, NFTA_CMP_DATA, data)?;
            }
            Self::Bitwise {
                sreg,
                dreg,
                mask,
                xor,
            } => {
                w.u32_be(NFTA_BITWISE_SREG, sreg.wire());
                w.u32_be(NFTA_BITWISE_DREG, dreg.wire());
                w.u32_be(NFTA_BITWISE_LEN, len_u32(mask.len()));
                value_data(w, NFTA_BITWISE_MASK, mask)?;
                value_data(w, NFTA_BITWISE_XOR, xor)?;
            }
            Self::Lookup {
                set,
                set_id,
                sreg,
                dreg,
                verdict_map,
                invert,
            } => {
                w.str(NFTA_LOOKUP_SET, set);
                if let Some(id) = set_id {
                    w.u32_be(NFTA_LOOKUP_SET_ID, *id);
                }
                w.u32_be(NFTA_LOOKUP_SREG, sreg.wire());
                if *verdict_map {
                    w.u32_be(NFTA_LOOKUP_DREG, 0);
                } else if let Some(dreg) = dreg {
                    w.u32_be(NFTA_LOOKUP_DREG, dreg.wire());
                }
                if *invert {
                    w.u32_be(NFTA_LOOKUP_FLAGS, NFT_LOOKUP_F_INV);
                }
            }
            Self::Immediate(value, dreg) => match value {
                Immediate::Verdict(v) => {
                    w.u32_be(NFTA_IMMEDIATE_DREG, 0);
                    verdict_data(w, NFTA_IMMEDIATE_DATA, v)?;
                }
                Immediate::Value(bytes) => {
                    w.u32_be(NFTA_IMMEDIATE_DREG, dreg.unwrap_or(Reg::R0).wire());
                    value_data(w, NFTA_IMMEDIATE_DATA, bytes)?;
                }
            },
            Self::Counter => {}
            Self::Ct { key, dreg } => {
                let key = match key {
                    CtKey::State => 0,
                    CtKey::Mark => 3,
                };
                w.u32_be(NFTA_CT_KEY, key);
                w.u32_be(NFTA_CT_DREG, dreg.wire());
            }
            Self::Nat {
                kind,
                family,
                addr,
                port,
                flags,
            } => {
                let kind = match kind {
                    NatKind::Snat => 0,
                    NatKind::Dnat => 1,
                };
                w.u32_be(NFTA_NAT_TYPE, kind);
                w.u32_be(NFTA_NAT_FAMILY, u32::from(family.nfproto()));
                if let Some(addr) = addr {
                    w.u32_be(NFTA_NAT_REG_ADDR_MIN, addr.wire());
                    w.u32_be(NFTA_NAT_REG_ADDR_MAX, addr.wire());
                }
                if let Some(port) = port {
                    w.u32_be(NFTA_NAT_REG_PROTO_MIN, port.wire());
                    w.u32_be(NFTA_NAT_REG_PROTO_MAX, port.wire());
                }
                if flags.bits() != 0 {
                    w.u32_be(NFTA_NAT_FLAGS, flags.bits());
                }
            }
            Self::Masquerade(flags) => {
                if flags.bits() != 0 {
                    w.u32_be(NFTA_MASQ_FLAGS, flags.bits());
                }
            }
            Self::Numgen {
                kind,
                modulus,
                offset,
                dreg,
            } => {
                w.u32_be(NFTA_NG_DREG, dreg.wire());
                w.u32_be(NFTA_NG_MODULUS, *modulus);
                let kind = match kind {
                    NumgenKind::Incremental => 0,
                    NumgenKind::Random => 1,
                };
                w.u32_be(NFTA_NG_TYPE, kind);
                w.u32_be(NFTA_NG_OFFSET, *offset);
            }
            Self::Reject(reject) => {
                let (ty, code) = match reject {
                    Reject::Icmp(code) => (0, *code),
                    Reject::TcpReset => (1, 0),
                    Reject::Icmpx(code) => (2, *code),
                };
                w.u32_be(NFTA_REJECT_TYPE, ty);
                w.attr(NFTA_REJECT_ICMP_CODE, &[code]);
            }
            Self::FibDaddrType { dreg } => {
                w.u32_be(NFTA_FIB_DREG, dreg.wire());
                w.u32_be(NFTA_FIB_RESULT, NFT_FIB_RESULT_ADDRTYPE);
                w.u32_be(NFTA_FIB_FLAGS, NFTA_FIB_F_DADDR);
            }
            Self::Dynset {
                set,
                op,
                sreg_key,
                timeout,
            } => {
                w.str(NFTA_DYNSET_SET_NAME, set);
                let op = match op {
                    DynsetOp::Add => 0,
                    DynsetOp::Update => 1,
                    DynsetOp::Delete => 2,
                };
                w.u32_be(NFTA_DYNSET_OP, op);
                w.u32_be(NFTA_DYNSET_SREG_KEY, sreg_key.wire());
                if let Some(timeout) = timeout {
                    w.u64_be(NFTA_DYNSET_TIMEOUT, millis(*timeout));
                }
            }
            Self::DynsetMap {
                set,
                op,
                sreg_key,
                sreg_data,
                timeout,
            } => {
                w.str(NFTA_DYNSET_SET_NAME, set);
                w.u32_be(NFTA_DYNSET_OP, dynset_op(*op));
                w.u32_be(NFTA_DYNSET_SREG_KEY, sreg_key.wire());
                w.u32_be(NFTA_DYNSET_SREG_DATA, sreg_data.wire());
                if let Some(timeout) = timeout {
                    w.u64_be(NFTA_DYNSET_TIMEOUT, millis(*timeout));
                }
            }
        }
        w.end_nested(data)?;
        w.end_nested(elem)
    }
}

fn dynset_op(op: DynsetOp) -> u32 {
    match op {
        DynsetOp::Add => 0,
        DynsetOp::Update => 1,
        DynsetOp::Delete => 2,
    }
}

pub(crate) fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// `ty { NFTA_DATA_VALUE bytes }`.
pub(crate) fn value_data(w: &mut Writer, ty: u16, bytes: &[u8]) -> Result<(), NftError> {
    let nest = w.begin_nested(ty);
    w.attr(NFTA_DATA_VALUE, bytes);
    w.end_nested(nest)
}

/// `ty { NFTA_DATA_VERDICT { CODE, CHAIN? } }`.
pub(crate) fn verdict_data(w: &mut Writer, ty: u16, verdict: &Verdict) -> Result<(), NftError> {
    let nest = w.begin_nested(ty);
    let inner = w.begin_nested(NFTA_DATA_VERDICT);
    w.u32_be(NFTA_VERDICT_CODE, verdict.code() as u32);
    if let Some(chain) = verdict.chain() {
        w.str(NFTA_VERDICT_CHAIN, chain);
    }
    w.end_nested(inner)?;
    w.end_nested(nest)
}

// Constructors for the usual building blocks.
impl Expr {
    pub fn verdict(v: Verdict) -> Self {
        Self::Immediate(Immediate::Verdict(v), None)
    }
    pub fn accept() -> Self {
        Self::verdict(Verdict::Accept)
    }
    pub fn drop() -> Self {
        Self::verdict(Verdict::Drop)
    }
    pub fn jump(chain: impl Into<String>) -> Self {
        Self::verdict(Verdict::Jump(chain.into()))
    }
    pub fn goto(chain: impl Into<String>) -> Self {
        Self::verdict(Verdict::Goto(chain.into()))
    }
    pub fn load(dreg: Reg, parts: &[Datum]) -> Self {
        Self::Immediate(Immediate::Value(encode_value(parts)), Some(dreg))
    }
    pub fn meta(key: MetaKey, dreg: Reg) -> Self {
        Self::Meta { key, dreg }
    }
    pub fn cmp_eq(sreg: Reg, parts: &[Datum]) -> Self {
        Self::Cmp {
            sreg,
            op: CmpOp::Eq,
            data: encode_value(parts),
        }
    }
    /// Loads `ip saddr` (IPv4 source address) into `dreg`.
    pub fn ip_saddr(dreg: Reg) -> Self {
        Self::network(12, 4, dreg)
    }
    pub fn ip_daddr(dreg: Reg) -> Self {
        Self::network(16, 4, dreg)
    }
    pub fn ip6_saddr(dreg: Reg) -> Self {
        Self::network(8, 16, dreg)
    }
    pub fn ip6_daddr(dreg: Reg) -> Self {
        Self::network(24, 16, dreg)
    }
    /// `th dport`: the destination port of TCP, UDP and SCTP alike.
    pub fn th_dport(dreg: Reg) -> Self {
        Self::Payload {
            base: PayloadBase::Transport,
            offset: 2,
            len: 2,
            dreg,
        }
    }
    fn network(offset: u32, len: u32, dreg: Reg) -> Self {
        Self::Payload {
            base: PayloadBase::Network,
            offset,
            len,
            dreg,
        }
    }
    /// A lookup in a verdict map: the verdict is the map's data.
    pub fn vmap(set: impl Into<String>, sreg: Reg) -> Self {
        Self::Lookup {
            set: set.into(),
            set_id: None,
            sreg,
            dreg: None,
            verdict_map: true,
            invert: false,
        }
    }
    /// A lookup in an anonymous verdict map created earlier in the same batch
    /// ([`Batch::add_anonymous_set`](super::Batch::add_anonymous_set)).
    pub fn anonymous_vmap(set: &AnonymousSet, sreg: Reg) -> Self {
        Self::Lookup {
            set: set.name.to_owned(),
            set_id: Some(set.id),
            sreg,
            dreg: None,
            verdict_map: true,
            invert: false,
        }
    }
    /// A data map lookup into `dreg`.
    pub fn map(set: impl Into<String>, sreg: Reg, dreg: Reg) -> Self {
        Self::Lookup {
            set: set.into(),
            set_id: None,
            sreg,
            dreg: Some(dreg),
            verdict_map: false,
            invert: false,
        }
    }
    /// A set membership match (`@set`), or its negation.
    pub fn in_set(set: impl Into<String>, sreg: Reg, invert: bool) -> Self {
        Self::Lookup {
            set: set.into(),
            set_id: None,
            sreg,
            dreg: None,
            verdict_map: false,
            invert,
        }
    }
}

/// `ip daddr . meta l4proto . th dport` into R0..R2 (12 bytes at R0): the Service key.
pub fn load_daddr_proto_dport() -> [Expr; 3] {
    [
        Expr::ip_daddr(Reg::R0),
        Expr::meta(MetaKey::L4proto, Reg::R1),
        Expr::th_dport(Reg::R2),
    ]
}

/// `ct state & bits != 0`.
pub fn match_ct_state(bits: u32) -> [Expr; 3] {
    [
        Expr::Ct {
            key: CtKey::State,
            dreg: Reg::R0,
        },
        Expr::Bitwise {
            sreg: Reg::R0,
            dreg: Reg::R0,
            mask: bits.to_ne_bytes().to_vec(),
            xor: vec![0; 4],
        },
        Expr::Cmp {
            sreg: Reg::R0,
            op: CmpOp::Neq,
            data: vec![0; 4],
        },
    ]
}

/// `meta mark & mask == value` (kube-proxy's masquerade mark test).
pub fn match_mark(mask: u32, value: u32) -> [Expr; 3] {
    [
        Expr::meta(MetaKey::Mark, Reg::R0),
        Expr::Bitwise {
            sreg: Reg::R0,
            dreg: Reg::R0,
            mask: mask.to_ne_bytes().to_vec(),
            xor: vec![0; 4],
        },
        Expr::cmp_eq(Reg::R0, &[Datum::U32(value)]),
    ]
}

/// `meta mark set meta mark | bits`.
pub fn set_mark_bits(bits: u32) -> [Expr; 3] {
    [
        Expr::meta(MetaKey::Mark, Reg::R0),
        Expr::Bitwise {
            sreg: Reg::R0,
            dreg: Reg::R0,
            mask: (!bits).to_ne_bytes().to_vec(),
            xor: bits.to_ne_bytes().to_vec(),
        },
        Expr::MetaSet {
            key: MetaKey::Mark,
            sreg: Reg::R0,
        },
    ]
}

/// `fib daddr type local`: the destination is an address of this node (kube-proxy's NodePort
/// match when no explicit node IPs are given).
pub fn match_daddr_local() -> [Expr; 2] {
    [
        Expr::FibDaddrType { dreg: Reg::R0 },
        Expr::cmp_eq(Reg::R0, &[Datum::U32(RTN_LOCAL)]),
    ]
}

/// `meta l4proto <proto>`.
pub fn match_l4proto(proto: u8) -> [Expr; 2] {
    [
        Expr::meta(MetaKey::L4proto, Reg::R0),
        Expr::cmp_eq(Reg::R0, &[Datum::Proto(proto)]),
    ]
}

/// An interface name as `meta iifname`/`oifname` compare it (16 bytes, NUL padded).
pub fn ifname(name: &str) -> Vec<u8> {
    let mut out = name.as_bytes().to_vec();
    out.resize(16, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::super::wire::attrs;
    use super::*;

    fn encoded(expr: &Expr) -> (String, Vec<(u16, Vec<u8>)>) {
        let mut w = Writer::default();
        expr.encode(&mut w).expect("encodes");
        let (ty, elem) = attrs(&w.buf).next().expect("list elem");
        assert_eq!(ty, NFTA_LIST_ELEM);
        let mut name = String::new();
        let mut data = Vec::new();
        for (ty, payload) in attrs(elem) {
            match ty {
                NFTA_EXPR_NAME => name = super::super::wire::string(payload),
                NFTA_EXPR_DATA => {
                    data = attrs(payload).map(|(t, p)| (t, p.to_vec())).collect();
                }
                _ => panic!("unexpected attribute {ty}"),
            }
        }
        (name, data)
    }

    type Case = (Expr, &'static str, Vec<(u16, Vec<u8>)>);

    #[test]
    fn expressions_encode_like_nft() {
        let be = |v: u32| v.to_be_bytes().to_vec();
        // Register numbers are 32-bit (NFT_REG32_00 = 8); all integers big-endian.
        let cases: Vec<Case> = vec![
            (
                Expr::ip_daddr(Reg::R0),
                "payload",
                vec![(1, be(8)), (2, be(1)), (3, be(16)), (4, be(4))],
            ),
            (
                Expr::th_dport(Reg::R2),
                "payload",
                vec![(1, be(10)), (2, be(2)), (3, be(2)), (4, be(2))],
            ),
            (
                Expr::meta(MetaKey::L4proto, Reg::R1),
                "meta",
                vec![(2, be(16)), (1, be(9))],
            ),
            (
                Expr::Numgen {
                    kind: NumgenKind::Random,
                    modulus: 2,
                    offset: 0,
                    dreg: Reg::R0,
                },
                "numgen",
                vec![(1, be(8)), (2, be(2)), (3, be(1)), (4, be(0))],
            ),
            (
                Expr::Masquerade(NatFlags {
                    fully_random: true,
                    ..NatFlags::default()
                }),
                "masq",
                vec![(1, be(0x10))],
            ),
            (
                Expr::Reject(Reject::Icmp(3)),
                "reject",
                vec![(1, be(0)), (2, vec![3])],
            ),
            (Expr::Counter, "counter", vec![]),
            (
                Expr::FibDaddrType { dreg: Reg::R0 },
                "fib",
                vec![(1, be(8)), (2, be(3)), (3, be(2))],
            ),
        ];
        for (expr, name, want) in cases {
            let (got_name, got) = encoded(&expr);
            assert_eq!(got_name, name, "{expr:?}");
            assert_eq!(got, want, "{expr:?}");
        }
    }

    #[test]
    fn dnat_to_registers_names_address_and_port_registers() {
        let (_, got) = encoded(&Expr::Nat {
            kind: NatKind::Dnat,
            family: Family::Ip,
            addr: Some(Reg::R0),
            port: Some(Reg::R1),
            flags: NatFlags::default(),
        });
        let be = |v: u32| v.to_be_bytes().to_vec();
        assert_eq!(
            got,
            vec![
                (NFTA_NAT_TYPE, be(1)),
                (NFTA_NAT_FAMILY, be(2)),
                (NFTA_NAT_REG_ADDR_MIN, be(8)),
                (NFTA_NAT_REG_ADDR_MAX, be(8)),
                (NFTA_NAT_REG_PROTO_MIN, be(9)),
                (NFTA_NAT_REG_PROTO_MAX, be(9)),
            ]
        );
    }

    #[test]
    fn dynset_map_names_key_and_data_registers() {
        let (name, got) = encoded(&Expr::DynsetMap {
            set: "aff".into(),
            op: DynsetOp::Update,
            sreg_key: Reg::R0,
            sreg_data: Reg::R4,
            timeout: Some(std::time::Duration::from_secs(3)),
        });
        let be = |v: u32| v.to_be_bytes().to_vec();
        assert_eq!(name, "dynset");
        assert_eq!(
            got,
            vec![
                (NFTA_DYNSET_SET_NAME, b"aff\0".to_vec()),
                (NFTA_DYNSET_OP, be(1)),
                (NFTA_DYNSET_SREG_KEY, be(8)),
                (NFTA_DYNSET_SREG_DATA, be(12)),
                (NFTA_DYNSET_TIMEOUT, 3000u64.to_be_bytes().to_vec()),
            ]
        );
    }

    #[test]
    fn jump_verdict_carries_the_chain_name() {
        let (_, got) = encoded(&Expr::jump("svc-x"));
        assert_eq!(got[0], (NFTA_IMMEDIATE_DREG, 0u32.to_be_bytes().to_vec()));
        let data: Vec<_> = attrs(&got[1].1).collect();
        assert_eq!(data[0].0, NFTA_DATA_VERDICT);
        let verdict: Vec<_> = attrs(data[0].1).collect();
        assert_eq!(verdict[0], (NFTA_VERDICT_CODE, &(-3i32).to_be_bytes()[..]));
        assert_eq!(verdict[1], (NFTA_VERDICT_CHAIN, &b"svc-x\0"[..]));
    }
}
