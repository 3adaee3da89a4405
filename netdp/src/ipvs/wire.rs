//! IPVS generic-netlink encodings (`linux/ip_vs.h`, `linux/genetlink.h`) and the `nlctrl`
//! family lookup. Pure; tested byte for byte.
//!
//! Layout facts, from the uapi header and the kernel's parser (`ip_vs_genl_parse_service` /
//! `_dest` in net/netfilter/ipvs/ip_vs_ctl.c, checked against a real kernel in the VM tier
//! with the `ipvs_check` example): every message is `nlmsghdr` + `genlmsghdr
//! { cmd, version 1, 0 }` + attributes; the service sits in a nested `IPVS_CMD_ATTR_SERVICE`,
//! the destination in `IPVS_CMD_ATTR_DEST`. Integers are host order except ports (network order)
//! and the persistence netmask (IPv4: a network-order mask; IPv6: a host-order prefix length); addresses are a 16-byte `union nf_inet_addr` (IPv4 in
//! the first 4 bytes). `NEW`/`SET` need the full entry, `DEL` only the identity.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{Connections, Destination, Forward, ServiceKey, VirtualService};
use crate::model::{IpFamily, Protocol};
use crate::netlink_wire::{
    Malformed, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, Writer, attrs, be16, be32, find_attr, ne16,
    ne32, string,
};

/// `GENL_ID_CTRL`: the controller family, which resolves names to ids.
pub(crate) const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
/// `GENL_HDRLEN`.
pub(crate) const GENL_HDRLEN: usize = 4;

pub(crate) const IPVS_GENL_NAME: &str = "IPVS";
const IPVS_GENL_VERSION: u8 = 1;

pub(crate) const IPVS_CMD_NEW_SERVICE: u8 = 1;
pub(crate) const IPVS_CMD_SET_SERVICE: u8 = 2;
pub(crate) const IPVS_CMD_DEL_SERVICE: u8 = 3;
pub(crate) const IPVS_CMD_GET_SERVICE: u8 = 4;
pub(crate) const IPVS_CMD_NEW_DEST: u8 = 5;
pub(crate) const IPVS_CMD_SET_DEST: u8 = 6;
pub(crate) const IPVS_CMD_DEL_DEST: u8 = 7;
pub(crate) const IPVS_CMD_GET_DEST: u8 = 8;

const IPVS_CMD_ATTR_SERVICE: u16 = 1;
const IPVS_CMD_ATTR_DEST: u16 = 2;

const IPVS_SVC_ATTR_AF: u16 = 1;
const IPVS_SVC_ATTR_PROTOCOL: u16 = 2;
const IPVS_SVC_ATTR_ADDR: u16 = 3;
const IPVS_SVC_ATTR_PORT: u16 = 4;
const IPVS_SVC_ATTR_FWMARK: u16 = 5;
const IPVS_SVC_ATTR_SCHED_NAME: u16 = 6;
const IPVS_SVC_ATTR_FLAGS: u16 = 7;
const IPVS_SVC_ATTR_TIMEOUT: u16 = 8;
const IPVS_SVC_ATTR_NETMASK: u16 = 9;

const IPVS_DEST_ATTR_ADDR: u16 = 1;
const IPVS_DEST_ATTR_PORT: u16 = 2;
const IPVS_DEST_ATTR_FWD_METHOD: u16 = 3;
const IPVS_DEST_ATTR_WEIGHT: u16 = 4;
const IPVS_DEST_ATTR_U_THRESH: u16 = 5;
const IPVS_DEST_ATTR_L_THRESH: u16 = 6;
const IPVS_DEST_ATTR_ACTIVE_CONNS: u16 = 7;
const IPVS_DEST_ATTR_INACT_CONNS: u16 = 8;
const IPVS_DEST_ATTR_PERSIST_CONNS: u16 = 9;
const IPVS_DEST_ATTR_ADDR_FAMILY: u16 = 11;

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

fn af(family: IpFamily) -> u16 {
    match family {
        IpFamily::V4 => AF_INET,
        IpFamily::V6 => AF_INET6,
    }
}

fn proto_number(p: Protocol) -> u16 {
    u16::from(crate::conntrack::protocol_number(p))
}

fn proto_from_number(n: u16) -> Option<Protocol> {
    match n {
        6 => Some(Protocol::Tcp),
        17 => Some(Protocol::Udp),
        132 => Some(Protocol::Sctp),
        _ => None,
    }
}

/// `union nf_inet_addr`: 16 bytes, IPv4 in the first four.
fn inet_addr(ip: IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    match ip {
        IpAddr::V4(a) => out[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => out = a.octets(),
    }
    out
}

fn parse_inet_addr(af_code: u16, data: &[u8]) -> Option<IpAddr> {
    match af_code {
        AF_INET => Some(IpAddr::V4(Ipv4Addr::from(
            <[u8; 4]>::try_from(data.get(..4)?).ok()?,
        ))),
        AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(data.get(..16)?).ok()?,
        ))),
        _ => None,
    }
}

/// The kernel keeps the netmask as raw `__be32` bytes: an IPv4 mask in network order, but an
/// IPv6 prefix length read back with a plain cast (`ip_vs_add_service`), i.e. host order. An
/// IPv6 length sent in network order is refused with EINVAL (seen in the VM tier).
fn netmask_bytes(family: IpFamily, netmask: u32) -> [u8; 4] {
    match family {
        IpFamily::V4 => netmask.to_be_bytes(),
        IpFamily::V6 => netmask.to_ne_bytes(),
    }
}

fn netmask_from(family: IpFamily, data: &[u8]) -> Option<u32> {
    match family {
        IpFamily::V4 => be32(data),
        IpFamily::V6 => ne32(data),
    }
}

fn genl_header(cmd: u8, version: u8) -> [u8; 4] {
    [cmd, version, 0, 0]
}

/// A `CTRL_CMD_GETFAMILY` request for `name`.
pub(crate) fn encode_get_family(w: &mut Writer, name: &str, seq: u32) {
    let m = w.begin_msg(
        GENL_ID_CTRL,
        NLM_F_REQUEST,
        seq,
        &genl_header(CTRL_CMD_GETFAMILY, 1),
    );
    w.str(CTRL_ATTR_FAMILY_NAME, name);
    w.end_msg(m);
}

/// The family id in a `CTRL_CMD_NEWFAMILY` reply (payload after the genl header).
pub(crate) fn parse_family_id(attrs_data: &[u8]) -> Option<u16> {
    find_attr(attrs_data, CTRL_ATTR_FAMILY_ID).and_then(ne16)
}

fn service_identity(w: &mut Writer, key: &ServiceKey) {
    w.u16_ne(IPVS_SVC_ATTR_AF, af(key.family()));
    w.u16_ne(IPVS_SVC_ATTR_PROTOCOL, proto_number(key.protocol));
    w.attr(IPVS_SVC_ATTR_ADDR, &inet_addr(key.addr));
    w.u16_be(IPVS_SVC_ATTR_PORT, key.port);
}

fn nested_service(w: &mut Writer, key: &ServiceKey, full: Option<&VirtualService>) {
    let n = w.begin_nested(IPVS_CMD_ATTR_SERVICE);
    service_identity(w, key);
    if let Some(svc) = full {
        w.str(IPVS_SVC_ATTR_SCHED_NAME, &svc.scheduler);
        // struct ip_vs_flags { flags, mask }: every bit is ours to set.
        let mut flags = [0u8; 8];
        flags[..4].copy_from_slice(&svc.flags.to_ne_bytes());
        flags[4..].copy_from_slice(&u32::MAX.to_ne_bytes());
        w.attr(IPVS_SVC_ATTR_FLAGS, &flags);
        w.u32_ne(IPVS_SVC_ATTR_TIMEOUT, svc.timeout);
        w.attr(
            IPVS_SVC_ATTR_NETMASK,
            &netmask_bytes(key.family(), svc.netmask),
        );
    }
    w.end_nested(n);
}

/// `IPVS_CMD_NEW_SERVICE` or `IPVS_CMD_SET_SERVICE` with the full service.
pub(crate) fn encode_service(
    w: &mut Writer,
    family_id: u16,
    cmd: u8,
    svc: &VirtualService,
    seq: u32,
) {
    let m = w.begin_msg(
        family_id,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        &genl_header(cmd, IPVS_GENL_VERSION),
    );
    nested_service(w, &svc.key, Some(svc));
    w.end_msg(m);
}

/// `IPVS_CMD_DEL_SERVICE` (its destinations go with it).
pub(crate) fn encode_del_service(w: &mut Writer, family_id: u16, key: &ServiceKey, seq: u32) {
    let m = w.begin_msg(
        family_id,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        &genl_header(IPVS_CMD_DEL_SERVICE, IPVS_GENL_VERSION),
    );
    nested_service(w, key, None);
    w.end_msg(m);
}

/// `IPVS_CMD_NEW_DEST` / `IPVS_CMD_SET_DEST` (full destination) or `IPVS_CMD_DEL_DEST`
/// (identity only) for the service `key`.
pub(crate) fn encode_dest(
    w: &mut Writer,
    family_id: u16,
    cmd: u8,
    key: &ServiceKey,
    dest: &Destination,
    seq: u32,
) {
    let m = w.begin_msg(
        family_id,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        &genl_header(cmd, IPVS_GENL_VERSION),
    );
    nested_service(w, key, None);
    let n = w.begin_nested(IPVS_CMD_ATTR_DEST);
    w.attr(IPVS_DEST_ATTR_ADDR, &inet_addr(dest.addr));
    w.u16_be(IPVS_DEST_ATTR_PORT, dest.port);
    if cmd != IPVS_CMD_DEL_DEST {
        w.u32_ne(IPVS_DEST_ATTR_FWD_METHOD, dest.forward.code());
        w.u32_ne(IPVS_DEST_ATTR_WEIGHT, dest.weight);
        w.u32_ne(IPVS_DEST_ATTR_U_THRESH, 0);
        w.u32_ne(IPVS_DEST_ATTR_L_THRESH, 0);
    }
    w.u16_ne(IPVS_DEST_ATTR_ADDR_FAMILY, af(IpFamily::of(dest.addr)));
    w.end_nested(n);
    w.end_msg(m);
}

/// `IPVS_CMD_GET_SERVICE` as a dump: every virtual service.
pub(crate) fn encode_dump_services(w: &mut Writer, family_id: u16, seq: u32) {
    let m = w.begin_msg(
        family_id,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        &genl_header(IPVS_CMD_GET_SERVICE, IPVS_GENL_VERSION),
    );
    w.end_msg(m);
}

/// `IPVS_CMD_GET_DEST` as a dump: the destinations of the service `key`.
pub(crate) fn encode_dump_dests(w: &mut Writer, family_id: u16, key: &ServiceKey, seq: u32) {
    let m = w.begin_msg(
        family_id,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        &genl_header(IPVS_CMD_GET_DEST, IPVS_GENL_VERSION),
    );
    nested_service(w, key, None);
    w.end_msg(m);
}

/// A dumped service (payload after the genl header). `Ok(None)` for services this mode does
/// not manage (firewall-mark services, protocols Services do not use).
pub(crate) fn parse_service(data: &[u8]) -> Result<Option<VirtualService>, Malformed> {
    let svc = find_attr(data, IPVS_CMD_ATTR_SERVICE).ok_or(Malformed("no IPVS service"))?;
    if find_attr(svc, IPVS_SVC_ATTR_FWMARK)
        .and_then(ne32)
        .unwrap_or(0)
        != 0
    {
        return Ok(None);
    }
    let af_code = find_attr(svc, IPVS_SVC_ATTR_AF)
        .and_then(ne16)
        .ok_or(Malformed("IPVS service without family"))?;
    let Some(protocol) = find_attr(svc, IPVS_SVC_ATTR_PROTOCOL)
        .and_then(ne16)
        .and_then(proto_from_number)
    else {
        return Ok(None);
    };
    let addr = find_attr(svc, IPVS_SVC_ATTR_ADDR)
        .and_then(|a| parse_inet_addr(af_code, a))
        .ok_or(Malformed("IPVS service without address"))?;
    let port = find_attr(svc, IPVS_SVC_ATTR_PORT)
        .and_then(be16)
        .ok_or(Malformed("IPVS service without port"))?;
    let mut out = VirtualService {
        key: ServiceKey {
            addr,
            protocol,
            port,
        },
        scheduler: String::new(),
        flags: 0,
        timeout: 0,
        netmask: 0,
    };
    for (ty, value) in attrs(svc) {
        match ty {
            IPVS_SVC_ATTR_SCHED_NAME => out.scheduler = string(value),
            IPVS_SVC_ATTR_FLAGS => out.flags = ne32(value).unwrap_or(0) & !super::SVC_F_HASHED,
            IPVS_SVC_ATTR_TIMEOUT => out.timeout = ne32(value).unwrap_or(0),
            IPVS_SVC_ATTR_NETMASK => {
                out.netmask = netmask_from(IpFamily::of(addr), value).unwrap_or(0);
            }
            _ => {}
        }
    }
    Ok(Some(out))
}

/// A dumped destination (payload after the genl header) with its connection counters (zero
/// when absent). The service's family applies when the kernel does not report the
/// destination's own.
pub(crate) fn parse_dest(
    data: &[u8],
    service_family: IpFamily,
) -> Result<(Destination, Connections), Malformed> {
    let d = find_attr(data, IPVS_CMD_ATTR_DEST).ok_or(Malformed("no IPVS destination"))?;
    let af_code = find_attr(d, IPVS_DEST_ATTR_ADDR_FAMILY)
        .and_then(ne16)
        .unwrap_or(af(service_family));
    let addr = find_attr(d, IPVS_DEST_ATTR_ADDR)
        .and_then(|a| parse_inet_addr(af_code, a))
        .ok_or(Malformed("IPVS destination without address"))?;
    let port = find_attr(d, IPVS_DEST_ATTR_PORT)
        .and_then(be16)
        .ok_or(Malformed("IPVS destination without port"))?;
    let u32_attr = |ty| find_attr(d, ty).and_then(ne32).unwrap_or(0);
    let dest = Destination {
        addr,
        port,
        weight: u32_attr(IPVS_DEST_ATTR_WEIGHT),
        forward: Forward::from_code(u32_attr(IPVS_DEST_ATTR_FWD_METHOD)),
    };
    let connections = Connections {
        active: u32_attr(IPVS_DEST_ATTR_ACTIVE_CONNS),
        inactive: u32_attr(IPVS_DEST_ATTR_INACT_CONNS),
        persistent: u32_attr(IPVS_DEST_ATTR_PERSIST_CONNS),
    };
    Ok((dest, connections))
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
