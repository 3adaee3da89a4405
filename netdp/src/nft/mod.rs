//! A minimal nf_tables client over netlink (no libnftnl, no `nft` subprocess): the layer the
//! nftables proxy mode, and the CNI's masquerade and hostPort rules, program the kernel through.
//!
//! - [`Batch`] builds one atomic transaction (tables, chains, rules, sets/maps, elements);
//! - [`NftSocket`] sends it as one datagram and checks one ACK per message, and lists a table's
//!   sets and elements back ([`NftApi`]);
//! - [`Expr`] covers the expressions kube-proxy's nftables mode uses;
//! - [`plan_elements`] computes the element changes that bring a set to its desired content.
//!
//! Encoding and ACK bookkeeping are pure and unit-tested; only `socket` does I/O.
//! [`MemoryNft`] is an in-memory [`NftApi`] for tests of callers.

mod batch;
mod diff;
mod error;
mod expr;
mod fake;
mod list;
mod objects;
mod socket;
mod sys;
mod wire;

pub use batch::Batch;
pub use diff::{ElementChanges, plan_elements};
pub use error::NftError;
pub use expr::{
    CmpOp, CtKey, DynsetOp, Expr, Immediate, MetaKey, NatFlags, NatKind, NumgenKind, PayloadBase,
    Reg, Reject, ct_state, ifname, load_daddr_proto_dport, match_ct_state, match_l4proto,
    match_mark, set_mark_bits,
};
pub use fake::MemoryNft;
pub use list::{ListedChain, ListedElement, ListedSet};
pub use objects::{
    AnonymousSet, Chain, ChainType, Datum, Element, ElementData, Family, Hook, KeyType, MapType,
    Policy, SetFlags, SetSpec, TypeSpec, Verdict, encode_value, priority,
};
pub use socket::{NftApi, NftSocket};
