//! The nf_tables objects a batch creates: families, tables, chains, sets/maps, their key and data
//! types, elements, verdicts; and how each value is laid out in kernel registers and set keys.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use super::sys;

/// An nf_tables address family (the `nfgenmsg` family of a table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Ip,
    Ip6,
    Inet,
}

impl Family {
    /// The `NFPROTO_*` number.
    pub fn nfproto(self) -> u8 {
        match self {
            Self::Ip => 2,
            Self::Ip6 => 10,
            Self::Inet => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Ip => "ip",
            Self::Ip6 => "ip6",
            Self::Inet => "inet",
        }
    }
}

/// A netfilter hook of the ip/ip6/inet families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

impl Hook {
    fn number(self) -> u32 {
        match self {
            Self::Prerouting => 0,
            Self::Input => 1,
            Self::Forward => 2,
            Self::Output => 3,
            Self::Postrouting => 4,
        }
    }
}

/// The type of a base chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainType {
    Filter,
    Nat,
    Route,
}

impl ChainType {
    fn name(self) -> &'static str {
        match self {
            Self::Filter => "filter",
            Self::Nat => "nat",
            Self::Route => "route",
        }
    }
}

/// Well-known base chain priorities (as `nft` names them).
pub mod priority {
    pub const DSTNAT: i32 = -100;
    pub const FILTER: i32 = 0;
    pub const SRCNAT: i32 = 100;
}

/// A base chain's default verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Accept,
    Drop,
}

/// Where a base chain attaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseChain {
    pub chain_type: ChainType,
    pub hook: Hook,
    pub priority: i32,
    pub policy: Policy,
}

/// A chain: regular (jump target) when `base` is `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    pub base: Option<BaseChain>,
}

impl Chain {
    pub fn regular(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            base: None,
        }
    }

    pub fn base(
        name: impl Into<String>,
        chain_type: ChainType,
        hook: Hook,
        priority: i32,
        policy: Policy,
    ) -> Self {
        Self {
            name: name.into(),
            base: Some(BaseChain {
                chain_type,
                hook,
                priority,
                policy,
            }),
        }
    }

    pub(crate) fn hook_number(&self) -> Option<(u32, i32, u32, &'static str)> {
        self.base.as_ref().map(|b| {
            let policy = match b.policy {
                Policy::Accept => sys::NF_ACCEPT,
                Policy::Drop => sys::NF_DROP,
            };
            (
                b.hook.number(),
                b.priority,
                policy as u32,
                b.chain_type.name(),
            )
        })
    }
}

/// A verdict: in a rule (`immediate`) or as the data of a verdict map element.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Verdict {
    Accept,
    Drop,
    Continue,
    Return,
    Jump(String),
    Goto(String),
}

impl Verdict {
    pub(crate) fn code(&self) -> i32 {
        match self {
            Self::Accept => sys::NF_ACCEPT,
            Self::Drop => sys::NF_DROP,
            Self::Continue => sys::NFT_CONTINUE,
            Self::Return => sys::NFT_RETURN,
            Self::Jump(_) => sys::NFT_JUMP,
            Self::Goto(_) => sys::NFT_GOTO,
        }
    }

    pub(crate) fn chain(&self) -> Option<&str> {
        match self {
            Self::Jump(c) | Self::Goto(c) => Some(c),
            _ => None,
        }
    }

    pub(crate) fn from_code(code: i32, chain: Option<String>) -> Option<Self> {
        Some(match (code, chain) {
            (sys::NF_ACCEPT, _) => Self::Accept,
            (sys::NF_DROP, _) => Self::Drop,
            (sys::NFT_CONTINUE, _) => Self::Continue,
            (sys::NFT_RETURN, _) => Self::Return,
            (sys::NFT_JUMP, Some(c)) => Self::Jump(c),
            (sys::NFT_GOTO, Some(c)) => Self::Goto(c),
            _ => return None,
        })
    }
}

/// A datatype of a set key or map data part, as `nft` numbers them (`enum datatypes`, shown by
/// `nft list`), with its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    Ipv4Addr,
    Ipv6Addr,
    InetProto,
    InetService,
    Mark,
    /// A host-order 32-bit integer, e.g. the result of `numgen`.
    Integer32,
}

impl KeyType {
    /// `nft`'s datatype number.
    pub(crate) fn type_id(self) -> u32 {
        match self {
            Self::Integer32 => 4,
            Self::Ipv4Addr => 7,
            Self::Ipv6Addr => 8,
            Self::InetProto => 12,
            Self::InetService => 13,
            Self::Mark => 19,
        }
    }

    /// Length in bytes before register padding.
    pub(crate) fn len(self) -> usize {
        match self {
            Self::Ipv4Addr | Self::Mark | Self::Integer32 => 4,
            Self::Ipv6Addr => 16,
            Self::InetProto => 1,
            Self::InetService => 2,
        }
    }
}

/// A (possibly concatenated) key or data type: `ipv4_addr . inet_proto . inet_service`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TypeSpec(pub Vec<KeyType>);

impl TypeSpec {
    /// `nft`'s encoding of a concatenation: 6 bits per part, first part most significant.
    pub(crate) fn type_id(&self) -> u32 {
        self.0.iter().fold(0, |acc, t| (acc << 6) | t.type_id())
    }

    /// Each part occupies whole 32-bit registers.
    pub fn len(&self) -> usize {
        self.0.iter().map(|t| super::wire::align4(t.len())).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A single host-order integer key (numgen results, marks).
    pub(crate) fn is_host_order(&self) -> bool {
        matches!(self.0[..], [KeyType::Integer32 | KeyType::Mark])
    }

    pub(crate) fn is_concat(&self) -> bool {
        self.0.len() > 1
    }
}

/// One part of a key or data value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Datum {
    Ipv4(Ipv4Addr),
    Ipv6(Ipv6Addr),
    /// An IP protocol number (6 tcp, 17 udp, 132 sctp).
    Proto(u8),
    /// A transport port (network order on the wire).
    Port(u16),
    /// A host-order 32-bit value (mark, numgen result).
    U32(u32),
}

impl Datum {
    /// Appends this value as it sits in a register: network/host order as the kernel writes it,
    /// zero-padded to 4 bytes.
    pub(crate) fn write(self, out: &mut Vec<u8>) {
        let start = out.len();
        match self {
            Self::Ipv4(a) => out.extend_from_slice(&a.octets()),
            Self::Ipv6(a) => out.extend_from_slice(&a.octets()),
            Self::Proto(p) => out.push(p),
            Self::Port(p) => out.extend_from_slice(&p.to_be_bytes()),
            Self::U32(v) => out.extend_from_slice(&v.to_ne_bytes()),
        }
        let padded = start + super::wire::align4(out.len() - start);
        out.resize(padded, 0);
    }
}

/// Encodes a concatenated value as register bytes.
pub fn encode_value(parts: &[Datum]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.len() * 4);
    for part in parts {
        part.write(&mut out);
    }
    out
}

/// What a map maps to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MapType {
    /// A verdict map (`vmap`).
    Verdict,
    /// A data map, e.g. `ipv4_addr . inet_service` for DNAT.
    Data(TypeSpec),
}

/// Set behaviour flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetFlags {
    pub constant: bool,
    pub interval: bool,
    pub timeout: bool,
    /// Updated from the packet path (`dynset`), `nft`'s `dynamic`.
    pub dynamic: bool,
}

/// A named set or map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetSpec {
    pub name: String,
    pub key: TypeSpec,
    pub map: Option<MapType>,
    pub flags: SetFlags,
    /// Default element timeout (needs `flags.timeout`).
    pub timeout: Option<Duration>,
    /// The most elements the set may hold (`nft`'s `size`), sent as `NFTA_SET_DESC_SIZE`. The
    /// kernel refuses elements beyond it (`ENFILE`), and sizes its hash table from it: with a
    /// size, a set without timeouts gets the fixed-size `nft_hash` backend instead of the
    /// resizable `rhash` one, which starts at 4 buckets and grows while a big batch inserts.
    pub size: Option<u32>,
}

impl SetSpec {
    pub fn set(name: impl Into<String>, key: Vec<KeyType>) -> Self {
        Self {
            name: name.into(),
            key: TypeSpec(key),
            map: None,
            flags: SetFlags::default(),
            timeout: None,
            size: None,
        }
    }

    pub fn verdict_map(name: impl Into<String>, key: Vec<KeyType>) -> Self {
        Self {
            map: Some(MapType::Verdict),
            ..Self::set(name, key)
        }
    }

    pub fn data_map(name: impl Into<String>, key: Vec<KeyType>, data: Vec<KeyType>) -> Self {
        Self {
            map: Some(MapType::Data(TypeSpec(data))),
            ..Self::set(name, key)
        }
    }

    pub fn with_flags(mut self, flags: SetFlags) -> Self {
        self.flags = flags;
        self
    }

    /// Caps the set at `size` elements and lets the kernel size its hash table for them.
    pub fn with_size(mut self, size: u32) -> Self {
        self.size = Some(size);
        self
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.flags.timeout = true;
        self.timeout = Some(timeout);
        self
    }

    pub(crate) fn kernel_flags(&self) -> u32 {
        let mut flags = 0;
        if self.name.starts_with("__") && self.name.ends_with("%d") {
            flags |= sys::NFT_SET_ANONYMOUS;
        }
        if self.flags.constant {
            flags |= sys::NFT_SET_CONSTANT;
        }
        if self.flags.interval {
            flags |= sys::NFT_SET_INTERVAL;
            if self.key.is_concat() {
                flags |= sys::NFT_SET_CONCAT;
            }
        }
        if self.flags.timeout {
            flags |= sys::NFT_SET_TIMEOUT;
        }
        if self.flags.dynamic {
            flags |= sys::NFT_SET_EVAL;
        }
        if self.map.is_some() {
            flags |= sys::NFT_SET_MAP;
        }
        flags
    }
}

/// A set or map created in a batch without a name of its own (`__set%d` / `__map%d`, numbered
/// by the kernel) and bound to the rule that looks it up in the same batch; it disappears with
/// that rule. kube-proxy uses them for `numgen ... vmap { 0 : goto a, 1 : goto b }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnonymousSet {
    pub(crate) name: &'static str,
    pub(crate) id: u32,
}

/// The data of a map element.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ElementData {
    Verdict(Verdict),
    /// Register bytes, see [`encode_value`].
    Value(Vec<u8>),
}

/// A set or map element.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Element {
    /// Register bytes of the key, see [`encode_value`].
    pub key: Vec<u8>,
    pub data: Option<ElementData>,
    pub timeout: Option<Duration>,
    /// Marks the end of a range in a (non-concatenated) interval set.
    pub interval_end: bool,
    /// Shown by `nft list` (kube-proxy names the Service here).
    pub comment: Option<String>,
}

impl Element {
    pub fn key(parts: &[Datum]) -> Self {
        Self {
            key: encode_value(parts),
            data: None,
            timeout: None,
            interval_end: false,
            comment: None,
        }
    }

    pub fn verdict(parts: &[Datum], verdict: Verdict) -> Self {
        Self {
            data: Some(ElementData::Verdict(verdict)),
            ..Self::key(parts)
        }
    }

    pub fn value(parts: &[Datum], data: &[Datum]) -> Self {
        Self {
            data: Some(ElementData::Value(encode_value(data))),
            ..Self::key(parts)
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    pub fn with_comment(mut self, comment: impl Into<String>) -> Self {
        self.comment = Some(comment.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concatenated_types_pack_six_bits_per_part_and_pad_lengths() {
        let spec = TypeSpec(vec![
            KeyType::Ipv4Addr,
            KeyType::InetProto,
            KeyType::InetService,
        ]);
        assert_eq!(spec.type_id(), (7 << 12) | (12 << 6) | 13);
        assert_eq!(spec.len(), 12);
        assert_eq!(
            TypeSpec(vec![KeyType::Ipv6Addr, KeyType::InetService]).len(),
            20
        );
    }

    #[test]
    fn values_are_register_images() {
        let cases: &[(&[Datum], &[u8])] = &[
            (&[Datum::Ipv4(Ipv4Addr::new(10, 0, 0, 1))], &[10, 0, 0, 1]),
            (&[Datum::Proto(6)], &[6, 0, 0, 0]),
            (&[Datum::Port(80)], &[0, 80, 0, 0]),
            (
                &[
                    Datum::Ipv4(Ipv4Addr::new(1, 2, 3, 4)),
                    Datum::Proto(17),
                    Datum::Port(0x1234),
                ],
                &[1, 2, 3, 4, 17, 0, 0, 0, 0x12, 0x34, 0, 0],
            ),
        ];
        for (parts, want) in cases {
            assert_eq!(encode_value(parts), *want, "{parts:?}");
        }
    }

    #[test]
    fn set_flags_follow_the_spec() {
        let vmap = SetSpec::verdict_map("m", vec![KeyType::Ipv4Addr]);
        assert_eq!(vmap.kernel_flags(), sys::NFT_SET_MAP);
        let aff = SetSpec::set("a", vec![KeyType::Ipv4Addr])
            .with_flags(SetFlags {
                dynamic: true,
                ..SetFlags::default()
            })
            .with_timeout(Duration::from_secs(10));
        assert_eq!(aff.kernel_flags(), sys::NFT_SET_EVAL | sys::NFT_SET_TIMEOUT);
        let ranges =
            SetSpec::set("r", vec![KeyType::Ipv4Addr, KeyType::InetService]).with_flags(SetFlags {
                interval: true,
                ..SetFlags::default()
            });
        assert_eq!(
            ranges.kernel_flags(),
            sys::NFT_SET_INTERVAL | sys::NFT_SET_CONCAT
        );
    }

    #[test]
    fn verdict_codes_round_trip() {
        for v in [
            Verdict::Accept,
            Verdict::Drop,
            Verdict::Continue,
            Verdict::Return,
            Verdict::Jump("a".into()),
            Verdict::Goto("b".into()),
        ] {
            let back = Verdict::from_code(v.code(), v.chain().map(str::to_owned));
            assert_eq!(back, Some(v));
        }
    }
}
