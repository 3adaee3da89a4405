//! The node-wide nftables table `ip kwk-cni`: masquerade of pod egress leaving the cluster CIDR
//! and hostPort DNAT, programmed through `kwk_netdp::nft` (netlink, no `nft` binary).
//!
//! Layout (one table, no chain per container; a hostPort is one map element):
//!
//! ```text
//! table ip kwk-cni {
//!   map hostports    { type inet_proto . inet_service : ipv4_addr . inet_service }      # any local IP
//!   map hostip-ports { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service }
//!   chain prerouting  { type nat hook prerouting priority dstnat; jump hostports }
//!   chain output      { type nat hook output priority dstnat; jump hostports }
//!   chain hostports {
//!     ip saddr <podCIDR> ip daddr . meta l4proto . th dport @hostip-ports meta mark set mark | 0x2000
//!     ip saddr <podCIDR> fib daddr type local ip daddr != 127.0.0.0/8
//!         meta l4proto . th dport @hostports meta mark set mark | 0x2000
//!     dnat to ip daddr . meta l4proto . th dport map @hostip-ports
//!     fib daddr type local ip daddr != 127.0.0.0/8 dnat to meta l4proto . th dport map @hostports
//!   }
//!   chain postrouting { type nat hook postrouting priority srcnat;
//!     meta mark & 0x2000 == 0x2000 masquerade                     # pods reaching a hostPort
//!     ip saddr <podCIDR> ip daddr != <clusterCIDR> ip daddr != 224.0.0.0/4 masquerade  # ipMasq
//!   }
//!   chain "layout-1 ..." {}   # empty: names the parameters the rules were built from
//! }
//! ```
//!
//! Pods reaching a hostPort on this node are masqueraded (not only a pod reaching itself, as
//! portmap does): without `br_netfilter` the reply would otherwise go back over the bridge
//! un-NATed. Loopback destinations are never DNATed (`route_localnet` stays 0).
//!
//! ADD checks the layout with one chain listing (the `layout-*` chain names the parameters) and
//! rebuilds the whole table — maps refilled from the hostPort records — only when it is missing
//! or stale. Map contents are synced from the records with [`plan_elements`]. Building is pure;
//! [`NatTable`] performs.

use std::net::Ipv4Addr;

use kwk_netdp::nft::{
    Batch, Chain, ChainType, CmpOp, Datum, Element, Expr, Family, Hook, KeyType, ListedChain,
    ListedElement, MetaKey, NatFlags, NatKind, NftApi, NftError, Policy, Reg, SetSpec,
    match_daddr_local, match_mark, plan_elements, priority, set_mark_bits,
};

use crate::error::CniError;
use crate::hostport::{HostPortRecord, PortMapping};
use crate::ipv4::Ipv4Cidr;

pub const TABLE: &str = "kwk-cni";
pub const FAMILY: Family = Family::Ip;
/// Marks connections to masquerade after DNAT (portmap's `CNI-HOSTPORT-SETMARK` bit).
pub const HAIRPIN_MARK: u32 = 0x2000;
pub const MAP_ANY_IP: &str = "hostports";
pub const MAP_HOST_IP: &str = "hostip-ports";
const CHAIN_HOSTPORTS: &str = "hostports";
const LAYOUT_VERSION: u32 = 1;

/// The parameters the table's rules are built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatParams {
    /// This node's pod subnet (traffic from it is "pod traffic").
    pub pod_subnet: Ipv4Cidr,
    /// `ipMasq`: masquerade pod traffic to destinations outside this prefix (the cluster CIDR,
    /// or the pod subnet when none is configured).
    pub masquerade_outside: Option<Ipv4Cidr>,
}

impl NatParams {
    /// The name of the empty chain that records these parameters in the kernel.
    pub fn layout_chain(&self) -> String {
        let cidr = |c: Ipv4Cidr| format!("{}_{}", c.network(), c.prefix_len());
        let masq = self
            .masquerade_outside
            .map_or_else(|| "nomasq".to_owned(), |c| format!("masq-{}", cidr(c)));
        format!("layout-{LAYOUT_VERSION}-{}-{masq}", cidr(self.pod_subnet))
    }
}

/// True when the listed chains show a table built from `params` (the cheap check on ADD).
pub fn layout_is_current(params: &NatParams, chains: &[ListedChain]) -> bool {
    let want = params.layout_chain();
    let has = |name: &str| chains.iter().any(|c| c.name == name);
    has(&want)
        && ["prerouting", "output", "postrouting", CHAIN_HOSTPORTS]
            .iter()
            .all(|n| has(n))
}

fn match_prefix(load: Expr, cidr: Ipv4Cidr, op: CmpOp) -> [Expr; 3] {
    [
        load,
        Expr::Bitwise {
            sreg: Reg::R0,
            dreg: Reg::R0,
            mask: cidr.netmask().octets().to_vec(),
            xor: vec![0; 4],
        },
        Expr::Cmp {
            sreg: Reg::R0,
            op,
            data: cidr.network().octets().to_vec(),
        },
    ]
}

fn cidr(addr: [u8; 4], len: u8) -> Ipv4Cidr {
    Ipv4Cidr::new(Ipv4Addr::from(addr), len).unwrap_or_else(Ipv4Cidr::default_route)
}

fn not_loopback() -> [Expr; 3] {
    match_prefix(Expr::ip_daddr(Reg::R0), cidr([127, 0, 0, 0], 8), CmpOp::Neq)
}

fn local_non_loopback() -> Vec<Expr> {
    let mut out = match_daddr_local().to_vec();
    out.extend(not_loopback());
    out
}

fn proto_port_key() -> [Expr; 2] {
    [
        Expr::meta(MetaKey::L4proto, Reg::R0),
        Expr::th_dport(Reg::R1),
    ]
}

fn daddr_proto_port_key() -> [Expr; 3] {
    [
        Expr::ip_daddr(Reg::R0),
        Expr::meta(MetaKey::L4proto, Reg::R1),
        Expr::th_dport(Reg::R2),
    ]
}

fn dnat_from_registers() -> Expr {
    Expr::Nat {
        kind: NatKind::Dnat,
        family: FAMILY,
        addr: Some(Reg::R0),
        port: Some(Reg::R1),
        flags: NatFlags::default(),
    }
}

/// The rules of the `hostports` chain, in order.
fn hostport_rules(pod_subnet: Ipv4Cidr) -> Vec<Vec<Expr>> {
    let from_pods = match_prefix(Expr::ip_saddr(Reg::R0), pod_subnet, CmpOp::Eq);
    let mut mark_host_ip = from_pods.to_vec();
    mark_host_ip.extend(daddr_proto_port_key());
    mark_host_ip.push(Expr::in_set(MAP_HOST_IP, Reg::R0, false));
    mark_host_ip.extend(set_mark_bits(HAIRPIN_MARK));

    let mut mark_any_ip = from_pods.to_vec();
    mark_any_ip.extend(local_non_loopback());
    mark_any_ip.extend(proto_port_key());
    mark_any_ip.push(Expr::in_set(MAP_ANY_IP, Reg::R0, false));
    mark_any_ip.extend(set_mark_bits(HAIRPIN_MARK));

    let mut dnat_host_ip = daddr_proto_port_key().to_vec();
    dnat_host_ip.push(Expr::map(MAP_HOST_IP, Reg::R0, Reg::R0));
    dnat_host_ip.push(dnat_from_registers());

    let mut dnat_any_ip = local_non_loopback();
    dnat_any_ip.extend(proto_port_key());
    dnat_any_ip.push(Expr::map(MAP_ANY_IP, Reg::R0, Reg::R0));
    dnat_any_ip.push(dnat_from_registers());

    vec![mark_host_ip, mark_any_ip, dnat_host_ip, dnat_any_ip]
}

/// The rules of the `postrouting` chain, in order.
fn postrouting_rules(params: &NatParams) -> Vec<Vec<Expr>> {
    let mut hairpin = match_mark(HAIRPIN_MARK, HAIRPIN_MARK).to_vec();
    hairpin.push(Expr::Masquerade(NatFlags::default()));
    let mut rules = vec![hairpin];
    if let Some(cluster) = params.masquerade_outside {
        let mut egress =
            match_prefix(Expr::ip_saddr(Reg::R0), params.pod_subnet, CmpOp::Eq).to_vec();
        egress.extend(match_prefix(Expr::ip_daddr(Reg::R0), cluster, CmpOp::Neq));
        egress.extend(match_prefix(
            Expr::ip_daddr(Reg::R0),
            cidr([224, 0, 0, 0], 4),
            CmpOp::Neq,
        ));
        egress.push(Expr::Masquerade(NatFlags::default()));
        rules.push(egress);
    }
    rules
}

fn mapping_element(mapping: &PortMapping, pod_ip: Ipv4Addr, comment: &str) -> (bool, Element) {
    let proto = Datum::Proto(mapping.protocol.number());
    let port = Datum::Port(mapping.host_port);
    let value = [Datum::Ipv4(pod_ip), Datum::Port(mapping.container_port)];
    let element = match mapping.host_ip {
        Some(ip) => Element::value(&[Datum::Ipv4(ip), proto, port], &value),
        None => Element::value(&[proto, port], &value),
    };
    (mapping.host_ip.is_some(), element.with_comment(comment))
}

/// The desired content of both maps: (`hostports`, `hostip-ports`).
pub fn desired_elements(records: &[HostPortRecord]) -> (Vec<Element>, Vec<Element>) {
    let mut any_ip = Vec::new();
    let mut host_ip = Vec::new();
    for record in records {
        for mapping in &record.mappings {
            match mapping_element(mapping, record.pod_ip, &record.container_id) {
                (true, element) => host_ip.push(element),
                (false, element) => any_ip.push(element),
            }
        }
    }
    (any_ip, host_ip)
}

fn map_specs() -> [SetSpec; 2] {
    let target = vec![KeyType::Ipv4Addr, KeyType::InetService];
    [
        SetSpec::data_map(
            MAP_ANY_IP,
            vec![KeyType::InetProto, KeyType::InetService],
            target.clone(),
        ),
        SetSpec::data_map(
            MAP_HOST_IP,
            vec![KeyType::Ipv4Addr, KeyType::InetProto, KeyType::InetService],
            target,
        ),
    ]
}

/// One transaction that replaces whatever `ip kwk-cni` holds with the table for `params`, its
/// maps filled from `records`.
pub fn build_table(params: &NatParams, records: &[HostPortRecord]) -> Batch {
    let mut batch = Batch::new();
    batch
        .add_table(FAMILY, TABLE)
        .delete_table(FAMILY, TABLE)
        .add_table(FAMILY, TABLE);
    for spec in map_specs() {
        batch.add_set(FAMILY, TABLE, &spec);
    }
    let (any_ip, host_ip) = desired_elements(records);
    if !any_ip.is_empty() {
        batch.add_elements(FAMILY, TABLE, MAP_ANY_IP, &any_ip);
    }
    if !host_ip.is_empty() {
        batch.add_elements(FAMILY, TABLE, MAP_HOST_IP, &host_ip);
    }
    batch.add_chain(FAMILY, TABLE, &Chain::regular(CHAIN_HOSTPORTS));
    for rule in hostport_rules(params.pod_subnet) {
        batch.add_rule(FAMILY, TABLE, CHAIN_HOSTPORTS, &rule);
    }
    for (name, hook) in [("prerouting", Hook::Prerouting), ("output", Hook::Output)] {
        let chain = Chain::base(name, ChainType::Nat, hook, priority::DSTNAT, Policy::Accept);
        batch.add_chain(FAMILY, TABLE, &chain).add_rule(
            FAMILY,
            TABLE,
            name,
            &[Expr::jump(CHAIN_HOSTPORTS)],
        );
    }
    let post = Chain::base(
        "postrouting",
        ChainType::Nat,
        Hook::Postrouting,
        priority::SRCNAT,
        Policy::Accept,
    );
    batch.add_chain(FAMILY, TABLE, &post);
    for rule in postrouting_rules(params) {
        batch.add_rule(FAMILY, TABLE, "postrouting", &rule);
    }
    batch.add_chain(FAMILY, TABLE, &Chain::regular(params.layout_chain()));
    batch
}

/// The mappings of `record` the listed map contents lack (CHECK).
pub fn missing_mappings(
    record: &HostPortRecord,
    any_ip: &[ListedElement],
    host_ip: &[ListedElement],
) -> Vec<PortMapping> {
    record
        .mappings
        .iter()
        .filter(|mapping| {
            let (specific, want) = mapping_element(mapping, record.pod_ip, "");
            let listed = if specific { host_ip } else { any_ip };
            !listed
                .iter()
                .any(|e| e.key == want.key && e.data == want.data)
        })
        .copied()
        .collect()
}

fn is_enoent(err: &NftError) -> bool {
    err.errno() == Some(nix::libc::ENOENT)
}

/// Performs the plans above through an [`NftApi`] (the real socket, or a fake in tests).
#[derive(Debug)]
pub struct NatTable<A: NftApi> {
    api: A,
}

impl<A: NftApi> NatTable<A> {
    pub fn new(api: A) -> Self {
        Self { api }
    }

    /// Makes sure the table matches `params`; rebuilds it (maps refilled from `records()`) when
    /// missing or built for other parameters. Returns whether it rebuilt.
    pub fn ensure(
        &self,
        params: &NatParams,
        records: impl FnOnce() -> Result<Vec<HostPortRecord>, CniError>,
    ) -> Result<bool, CniError> {
        if !self.ensure_would_rebuild(params)? {
            return Ok(false);
        }
        let batch = build_table(params, &records()?);
        self.api
            .apply(&batch)
            .map_err(|err| CniError::nft("building the kwk-cni table", err))?;
        Ok(true)
    }

    /// True when [`Self::ensure`] would rebuild (CHECK).
    pub fn ensure_would_rebuild(&self, params: &NatParams) -> Result<bool, CniError> {
        let chains = match self.api.list_chains(FAMILY, TABLE) {
            Ok(chains) => chains,
            Err(err) if is_enoent(&err) => Vec::new(),
            Err(err) => return Err(CniError::nft("listing the kwk-cni table", err)),
        };
        Ok(!layout_is_current(params, &chains))
    }

    /// Lists both maps (`hostports`, `hostip-ports`); `None` when the table does not exist.
    fn list_maps(&self) -> Result<Option<[Vec<ListedElement>; 2]>, CniError> {
        let list = |set: &str| self.api.list_elements(FAMILY, TABLE, set);
        match (list(MAP_ANY_IP), list(MAP_HOST_IP)) {
            (Ok(any), Ok(host)) => Ok(Some([any, host])),
            (Err(err), _) | (_, Err(err)) if is_enoent(&err) => Ok(None),
            (Err(err), _) | (_, Err(err)) => Err(CniError::nft("listing the hostPort maps", err)),
        }
    }

    /// Brings both maps to exactly the mappings of `records` (nothing when the table does not
    /// exist: there is nothing to remove, and ADD builds it first).
    pub fn sync_hostports(&self, records: &[HostPortRecord]) -> Result<(), CniError> {
        let Some([any_listed, host_listed]) = self.list_maps()? else {
            return Ok(());
        };
        let (any_ip, host_ip) = desired_elements(records);
        let mut batch = Batch::new();
        for (set, desired, listed) in [
            (MAP_ANY_IP, any_ip, any_listed),
            (MAP_HOST_IP, host_ip, host_listed),
        ] {
            let changes = plan_elements(&desired, &listed);
            if !changes.delete.is_empty() {
                batch.delete_elements(FAMILY, TABLE, set, &changes.delete);
            }
            if !changes.add.is_empty() {
                batch.add_elements(FAMILY, TABLE, set, &changes.add);
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        self.api
            .apply(&batch)
            .map_err(|err| CniError::nft("updating the hostPort maps", err))
    }

    /// The mappings of `record` missing from the kernel (all of them without the table).
    pub fn missing(&self, record: &HostPortRecord) -> Result<Vec<PortMapping>, CniError> {
        Ok(match self.list_maps()? {
            Some([any, host]) => missing_mappings(record, &any, &host),
            None => record.mappings.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostport::Proto;
    use kwk_netdp::nft::MemoryNft;

    fn params(masq: bool) -> NatParams {
        NatParams {
            pod_subnet: Ipv4Cidr::parse("10.62.1.0/24").expect("cidr"),
            masquerade_outside: masq.then(|| Ipv4Cidr::parse("10.62.0.0/16").expect("cidr")),
        }
    }

    fn record(id: &str, port: u16, host_ip: Option<Ipv4Addr>) -> HostPortRecord {
        HostPortRecord {
            container_id: id.into(),
            ifname: "eth0".into(),
            pod_ip: Ipv4Addr::new(10, 62, 1, 9),
            mappings: vec![PortMapping {
                host_port: port,
                container_port: 80,
                protocol: Proto::Tcp,
                host_ip,
            }],
        }
    }

    #[test]
    fn layout_check_wants_every_chain_and_the_same_parameters() {
        let chain = |name: &str| ListedChain {
            name: name.into(),
            base: false,
        };
        let all: Vec<ListedChain> = ["prerouting", "output", "postrouting", "hostports"]
            .iter()
            .map(|n| chain(n))
            .chain([chain(&params(true).layout_chain())])
            .collect();
        assert!(layout_is_current(&params(true), &all));
        assert!(
            !layout_is_current(&params(false), &all),
            "masquerade changed"
        );
        assert!(
            !layout_is_current(&params(true), &all[1..]),
            "a chain is gone"
        );
        assert!(!layout_is_current(&params(true), &[]));
        assert_ne!(params(true).layout_chain(), params(false).layout_chain());
    }

    #[test]
    fn postrouting_masquerades_only_with_ip_masq() {
        assert_eq!(postrouting_rules(&params(false)).len(), 1, "hairpin only");
        assert_eq!(postrouting_rules(&params(true)).len(), 2);
        assert_eq!(hostport_rules(params(true).pod_subnet).len(), 4);
    }

    #[test]
    fn ensure_builds_once_and_sync_tracks_the_records() {
        let table = NatTable::new(MemoryNft::new());
        let fake = &table.api;
        let records = vec![record("a", 8080, None)];
        assert!(
            table
                .ensure(&params(true), || Ok(records.clone()))
                .expect("build")
        );
        assert!(fake.has_table(FAMILY, TABLE));
        assert!(
            !table
                .ensure(&params(true), || panic!("not needed"))
                .unwrap_or(true)
        );
        let listed = fake.list_elements(FAMILY, TABLE, MAP_ANY_IP).expect("list");
        assert_eq!(listed.len(), 1, "built with the records' elements");
        assert!(table.missing(&records[0]).expect("missing").is_empty());

        let more = vec![
            record("a", 8080, None),
            record("b", 9090, Some(Ipv4Addr::new(192, 168, 1, 1))),
        ];
        table.sync_hostports(&more).expect("sync");
        assert_eq!(
            fake.list_elements(FAMILY, TABLE, MAP_HOST_IP)
                .expect("list")
                .len(),
            1
        );
        table.sync_hostports(&more[1..]).expect("sync");
        assert!(
            fake.list_elements(FAMILY, TABLE, MAP_ANY_IP)
                .expect("list")
                .is_empty()
        );
        assert_eq!(table.missing(&records[0]).expect("missing").len(), 1);
        let batches = fake.applied().len();
        table.sync_hostports(&more[1..]).expect("no-op");
        assert_eq!(
            fake.applied().len(),
            batches,
            "nothing to change, nothing sent"
        );
    }
}
