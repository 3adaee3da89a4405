//! ctnetlink encodings (`linux/netfilter/nfnetlink_conntrack.h`): the dump request, a delete
//! by original tuple, and parsing a dumped entry into a [`Flow`]. Pure.
//!
//! ctnetlink integers are in network byte order; the `nfgenmsg` header carries the address
//! family (which also selects what a dump returns).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{Flow, FlowTuple};
use crate::model::IpFamily;
use crate::netlink_wire::{
    Malformed, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, Writer, attrs, be16, find_attr,
};

pub(crate) const NFNL_SUBSYS_CTNETLINK: u16 = 1;
pub(crate) const IPCTNL_MSG_CT_GET: u16 = 1;
pub(crate) const IPCTNL_MSG_CT_DELETE: u16 = 2;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_ZONE: u16 = 18;
const CTA_FILTER: u16 = 25;
const CTA_FILTER_ORIG_FLAGS: u16 = 1;
const CTA_FILTER_REPLY_FLAGS: u16 = 2;
// Filter flags (net/netfilter/nf_internals.h; ABI, not exported in uapi).
const CTA_FILTER_F_CTA_IP_DST: u32 = 1 << 1;
const CTA_FILTER_F_CTA_PROTO_NUM: u32 = 1 << 3;
const CTA_FILTER_F_CTA_PROTO_DST_PORT: u32 = 1 << 5;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// The `nfgenmsg` header is 4 bytes: family, version, resource id.
pub(crate) const NFGENMSG_LEN: usize = 4;

fn af(family: IpFamily) -> u8 {
    match family {
        IpFamily::V4 => AF_INET,
        IpFamily::V6 => AF_INET6,
    }
}

/// `nfgenmsg { family, NFNETLINK_V0, res_id 0 }`.
fn nfgenmsg(family: IpFamily) -> [u8; 4] {
    [af(family), 0, 0, 0]
}

/// Appends a request to dump every entry of `family`.
pub(crate) fn encode_dump(w: &mut Writer, family: IpFamily, seq: u32) {
    let m = w.begin_msg(
        (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        &nfgenmsg(family),
    );
    w.end_msg(m);
}

/// Appends a dump request the kernel filters (Linux >= 5.8; older kernels ignore the filter
/// and dump everything, which the caller's own matching then narrows): entries of `protocol`,
/// and when given, to this original destination address and port.
pub(crate) fn encode_filtered_dump(
    w: &mut Writer,
    family: IpFamily,
    protocol: u8,
    dst: Option<(IpAddr, u16)>,
    seq: u32,
) {
    let m = w.begin_msg(
        (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        &nfgenmsg(family),
    );
    let t = w.begin_nested(CTA_TUPLE_ORIG);
    // IPv6 addresses are not filtered in the kernel: its `ctnetlink_filter_match_tuple`
    // tests IPv6 addresses with `!ipv6_addr_cmp(..)`, i.e. inverted, so an IPv6 destination
    // filter drops exactly the matching entries (seen on 6.18 here). The port and protocol
    // narrow the dump; the caller's matching does the rest.
    let ip_dst = match dst {
        Some((IpAddr::V4(a), _)) => Some(a),
        _ => None,
    };
    if let Some(a) = ip_dst {
        let n = w.begin_nested(CTA_TUPLE_IP);
        w.attr(CTA_IP_V4_DST, &a.octets());
        w.end_nested(n);
    }
    let p = w.begin_nested(CTA_TUPLE_PROTO);
    w.u8(CTA_PROTO_NUM, protocol);
    if let Some((_, port)) = dst {
        w.u16_be(CTA_PROTO_DST_PORT, port);
    }
    w.end_nested(p);
    w.end_nested(t);
    let mut flags = CTA_FILTER_F_CTA_PROTO_NUM;
    if ip_dst.is_some() {
        flags |= CTA_FILTER_F_CTA_IP_DST;
    }
    if dst.is_some() {
        flags |= CTA_FILTER_F_CTA_PROTO_DST_PORT;
    }
    let f = w.begin_nested(CTA_FILTER);
    // The flags are host order (`nla_get_u32`), unlike the rest of ctnetlink.
    w.u32_ne(CTA_FILTER_ORIG_FLAGS, flags);
    w.u32_ne(CTA_FILTER_REPLY_FLAGS, 0);
    w.end_nested(f);
    w.end_msg(m);
}

/// Appends a request deleting exactly `flow` (by its original tuple and zone), acknowledged.
/// Never a message without a tuple: that would flush the whole table.
pub(crate) fn encode_delete(w: &mut Writer, flow: &Flow, seq: u32) {
    let m = w.begin_msg(
        (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        &nfgenmsg(flow.family()),
    );
    encode_tuple(w, CTA_TUPLE_ORIG, flow.protocol, &flow.original);
    if let Some(zone) = flow.zone {
        w.u16_be(CTA_ZONE, zone);
    }
    w.end_msg(m);
}

fn encode_tuple(w: &mut Writer, ty: u16, protocol: u8, tuple: &FlowTuple) {
    let t = w.begin_nested(ty);
    let ip = w.begin_nested(CTA_TUPLE_IP);
    match (tuple.src, tuple.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            w.attr(CTA_IP_V4_SRC, &s.octets());
            w.attr(CTA_IP_V4_DST, &d.octets());
        }
        (s, d) => {
            w.attr(CTA_IP_V6_SRC, &v6(s).octets());
            w.attr(CTA_IP_V6_DST, &v6(d).octets());
        }
    }
    w.end_nested(ip);
    let proto = w.begin_nested(CTA_TUPLE_PROTO);
    w.u8(CTA_PROTO_NUM, protocol);
    w.u16_be(CTA_PROTO_SRC_PORT, tuple.src_port);
    w.u16_be(CTA_PROTO_DST_PORT, tuple.dst_port);
    w.end_nested(proto);
    w.end_nested(t);
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V6(a) => a,
        IpAddr::V4(a) => a.to_ipv6_mapped(),
    }
}

/// Parses one dumped entry (the message payload after `nfgenmsg`). `Ok(None)` for entries
/// this client does not handle (no ports: ICMP and the like).
pub(crate) fn parse_flow(payload: &[u8]) -> Result<Option<Flow>, Malformed> {
    let orig = find_attr(payload, CTA_TUPLE_ORIG).ok_or(Malformed("entry without tuple"))?;
    let reply = find_attr(payload, CTA_TUPLE_REPLY).ok_or(Malformed("entry without reply"))?;
    let Some((protocol, original)) = parse_tuple(orig)? else {
        return Ok(None);
    };
    let Some((_, reply)) = parse_tuple(reply)? else {
        return Ok(None);
    };
    let zone = find_attr(payload, CTA_ZONE)
        .and_then(be16)
        .filter(|z| *z != 0);
    Ok(Some(Flow {
        protocol,
        original,
        reply,
        zone,
    }))
}

fn parse_tuple(data: &[u8]) -> Result<Option<(u8, FlowTuple)>, Malformed> {
    let ip = find_attr(data, CTA_TUPLE_IP).ok_or(Malformed("tuple without addresses"))?;
    let proto = find_attr(data, CTA_TUPLE_PROTO).ok_or(Malformed("tuple without protocol"))?;
    let (mut src, mut dst) = (None, None);
    for (ty, value) in attrs(ip) {
        match ty {
            CTA_IP_V4_SRC => src = addr4(value),
            CTA_IP_V4_DST => dst = addr4(value),
            CTA_IP_V6_SRC => src = addr6(value),
            CTA_IP_V6_DST => dst = addr6(value),
            _ => {}
        }
    }
    let (Some(src), Some(dst)) = (src, dst) else {
        return Err(Malformed("tuple address missing or short"));
    };
    let protocol = find_attr(proto, CTA_PROTO_NUM)
        .and_then(|v| v.first().copied())
        .ok_or(Malformed("tuple without protocol number"))?;
    let ports = (
        find_attr(proto, CTA_PROTO_SRC_PORT).and_then(be16),
        find_attr(proto, CTA_PROTO_DST_PORT).and_then(be16),
    );
    let (Some(src_port), Some(dst_port)) = ports else {
        return Ok(None);
    };
    Ok(Some((
        protocol,
        FlowTuple {
            src,
            dst,
            src_port,
            dst_port,
        },
    )))
}

fn addr4(v: &[u8]) -> Option<IpAddr> {
    let o: [u8; 4] = v.get(..4)?.try_into().ok()?;
    Some(IpAddr::V4(Ipv4Addr::from(o)))
}

fn addr6(v: &[u8]) -> Option<IpAddr> {
    let o: [u8; 16] = v.get(..16)?.try_into().ok()?;
    Some(IpAddr::V6(Ipv6Addr::from(o)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink_wire::messages;

    fn flow() -> Flow {
        Flow {
            protocol: 17,
            original: FlowTuple {
                src: "10.1.0.2".parse().expect("ip"),
                dst: "10.96.0.10".parse().expect("ip"),
                src_port: 0x9c40,
                dst_port: 53,
            },
            reply: FlowTuple {
                src: "10.2.0.2".parse().expect("ip"),
                dst: "10.1.0.2".parse().expect("ip"),
                src_port: 5353,
                dst_port: 0x9c40,
            },
            zone: None,
        }
    }

    /// Derived by hand from nfnetlink_conntrack.h and the netlink attribute layout: header,
    /// nfgenmsg, then ORIG{ IP{ V4_SRC, V4_DST }, PROTO{ NUM, SRC_PORT, DST_PORT } }.
    #[test]
    fn delete_ipv4_udp_is_byte_exact() {
        let mut w = Writer::default();
        encode_delete(&mut w, &flow(), 0x0102_0304);
        let mut want: Vec<u8> = Vec::new();
        want.extend_from_slice(&72u32.to_ne_bytes()); // 16 + 4 + 52
        want.extend_from_slice(&0x0102u16.to_ne_bytes()); // CTNETLINK << 8 | CT_DELETE
        want.extend_from_slice(&5u16.to_ne_bytes()); // REQUEST | ACK
        want.extend_from_slice(&0x0102_0304u32.to_ne_bytes());
        want.extend_from_slice(&0u32.to_ne_bytes());
        want.extend_from_slice(&[2, 0, 0, 0]); // AF_INET, v0, res_id 0
        want.extend_from_slice(&52u16.to_ne_bytes()); // CTA_TUPLE_ORIG, nested
        want.extend_from_slice(&0x8001u16.to_ne_bytes());
        want.extend_from_slice(&20u16.to_ne_bytes()); // CTA_TUPLE_IP, nested
        want.extend_from_slice(&0x8001u16.to_ne_bytes());
        want.extend_from_slice(&8u16.to_ne_bytes());
        want.extend_from_slice(&1u16.to_ne_bytes()); // CTA_IP_V4_SRC
        want.extend_from_slice(&[10, 1, 0, 2]);
        want.extend_from_slice(&8u16.to_ne_bytes());
        want.extend_from_slice(&2u16.to_ne_bytes()); // CTA_IP_V4_DST
        want.extend_from_slice(&[10, 96, 0, 10]);
        want.extend_from_slice(&28u16.to_ne_bytes()); // CTA_TUPLE_PROTO, nested
        want.extend_from_slice(&0x8002u16.to_ne_bytes());
        want.extend_from_slice(&5u16.to_ne_bytes());
        want.extend_from_slice(&1u16.to_ne_bytes()); // CTA_PROTO_NUM
        want.extend_from_slice(&[17, 0, 0, 0]);
        want.extend_from_slice(&6u16.to_ne_bytes());
        want.extend_from_slice(&2u16.to_ne_bytes()); // CTA_PROTO_SRC_PORT
        want.extend_from_slice(&[0x9c, 0x40, 0, 0]);
        want.extend_from_slice(&6u16.to_ne_bytes());
        want.extend_from_slice(&3u16.to_ne_bytes()); // CTA_PROTO_DST_PORT
        want.extend_from_slice(&[0, 53, 0, 0]);
        assert_eq!(w.buf, want);
    }

    /// A known-good vector: the CTA_TUPLE_ORIG attribute conntrack-tools 1.4.7 sent for
    /// `conntrack -D -p udp -s 127.0.0.1 -d 127.0.0.2 --sport 40000 --dport 53`, captured on
    /// this machine with `strace -e sendto -xx` (it also sends the reply tuple, status, timeout
    /// and mark, which the kernel does not need to find the entry).
    #[test]
    fn delete_tuple_matches_a_conntrack_tools_capture() {
        const CAPTURED_ORIG: [u8; 52] = [
            0x34, 0x00, 0x01, 0x80, // nla_len=52, NLA_F_NESTED|CTA_TUPLE_ORIG
            0x14, 0x00, 0x01, 0x80, 0x08, 0x00, 0x01, 0x00, 0x7f, 0x00, 0x00, 0x01, 0x08, 0x00,
            0x02, 0x00, 0x7f, 0x00, 0x00, 0x02, 0x1c, 0x00, 0x02, 0x80, 0x05, 0x00, 0x01, 0x00,
            0x11, 0x00, 0x00, 0x00, 0x06, 0x00, 0x02, 0x00, 0x9c, 0x40, 0x00, 0x00, 0x06, 0x00,
            0x03, 0x00, 0x00, 0x35, 0x00, 0x00,
        ];
        let mut f = flow();
        f.original.src = "127.0.0.1".parse().expect("ip");
        f.original.dst = "127.0.0.2".parse().expect("ip");
        let mut w = Writer::default();
        encode_delete(&mut w, &f, 1);
        assert_eq!(&w.buf[16..20], &[2, 0, 0, 0]);
        assert_eq!(&w.buf[20..], &CAPTURED_ORIG[..]);
        // The same tool's dump request: 20 bytes, CT_GET, REQUEST|DUMP, AF_INET.
        let mut w = Writer::default();
        encode_dump(&mut w, IpFamily::V4, 0);
        assert_eq!(&w.buf[..8], &[20, 0, 0, 0, 0x01, 0x01, 0x01, 0x03]);
    }

    #[test]
    fn delete_ipv6_with_zone_uses_v6_attributes_and_the_zone() {
        let mut f = flow();
        f.original.src = "fd00::2".parse().expect("ip");
        f.original.dst = "fd00::10".parse().expect("ip");
        f.zone = Some(7);
        let mut w = Writer::default();
        encode_delete(&mut w, &f, 1);
        let msg = messages(&w.buf).next().expect("one").expect("ok");
        assert_eq!(msg.payload[0], AF_INET6);
        let body = &msg.payload[NFGENMSG_LEN..];
        let orig = find_attr(body, CTA_TUPLE_ORIG).expect("orig");
        let ip = find_attr(orig, CTA_TUPLE_IP).expect("ip");
        let dst = find_attr(ip, CTA_IP_V6_DST).expect("v6 dst");
        assert_eq!(dst.len(), 16);
        assert_eq!(dst[0], 0xfd);
        assert_eq!(dst[15], 0x10);
        assert_eq!(find_attr(body, CTA_ZONE), Some(&[0u8, 7][..]));
    }

    #[test]
    fn dump_request_is_byte_exact() {
        let mut w = Writer::default();
        encode_dump(&mut w, IpFamily::V6, 9);
        let mut want = Vec::new();
        want.extend_from_slice(&20u32.to_ne_bytes());
        want.extend_from_slice(&0x0101u16.to_ne_bytes());
        want.extend_from_slice(&0x0301u16.to_ne_bytes()); // REQUEST | DUMP
        want.extend_from_slice(&9u32.to_ne_bytes());
        want.extend_from_slice(&0u32.to_ne_bytes());
        want.extend_from_slice(&[10, 0, 0, 0]);
        assert_eq!(w.buf, want);
    }

    #[test]
    fn filtered_dump_is_byte_exact() {
        let mut w = Writer::default();
        let dst = Some(("10.96.0.10".parse().expect("ip"), 53));
        encode_filtered_dump(&mut w, IpFamily::V4, 17, dst, 9);
        let mut want = Vec::new();
        want.extend_from_slice(&76u32.to_ne_bytes());
        want.extend_from_slice(&0x0101u16.to_ne_bytes());
        want.extend_from_slice(&0x0301u16.to_ne_bytes());
        want.extend_from_slice(&9u32.to_ne_bytes());
        want.extend_from_slice(&0u32.to_ne_bytes());
        want.extend_from_slice(&[2, 0, 0, 0]);
        want.extend_from_slice(&[36, 0, 0x01, 0x80]); // CTA_TUPLE_ORIG
        want.extend_from_slice(&[12, 0, 0x01, 0x80]); // CTA_TUPLE_IP
        want.extend_from_slice(&[8, 0, 2, 0, 10, 96, 0, 10]); // CTA_IP_V4_DST
        want.extend_from_slice(&[20, 0, 0x02, 0x80]); // CTA_TUPLE_PROTO
        want.extend_from_slice(&[5, 0, 1, 0, 17, 0, 0, 0]); // CTA_PROTO_NUM
        want.extend_from_slice(&[6, 0, 3, 0, 0, 53, 0, 0]); // CTA_PROTO_DST_PORT
        want.extend_from_slice(&[20, 0, 25, 0x80]); // CTA_FILTER
        want.extend_from_slice(&[8, 0, 1, 0]); // ORIG: IP_DST|NUM|DST_PORT, host order
        want.extend_from_slice(&0x2au32.to_ne_bytes());
        want.extend_from_slice(&[8, 0, 2, 0, 0, 0, 0, 0]); // REPLY: none
        assert_eq!(w.buf, want);
    }

    #[test]
    fn dumped_entry_parses_back() {
        // A dumped entry has the same tuple layout, for both directions, plus other
        // attributes (status, timeout, ...) that are skipped.
        let f = Flow {
            zone: Some(3),
            ..flow()
        };
        let mut w = Writer::default();
        w.attr(3, &0x188u32.to_be_bytes()); // CTA_STATUS
        encode_tuple(&mut w, CTA_TUPLE_ORIG, 17, &f.original);
        encode_tuple(&mut w, CTA_TUPLE_REPLY, 17, &f.reply);
        w.u16_be(CTA_ZONE, 3);
        assert_eq!(parse_flow(&w.buf), Ok(Some(f)));
    }

    #[test]
    fn entries_without_ports_are_skipped_and_garbage_is_malformed() {
        let mut w = Writer::default();
        for ty in [CTA_TUPLE_ORIG, CTA_TUPLE_REPLY] {
            let t = w.begin_nested(ty);
            let ip = w.begin_nested(CTA_TUPLE_IP);
            w.attr(CTA_IP_V4_SRC, &[10, 0, 0, 1]);
            w.attr(CTA_IP_V4_DST, &[10, 0, 0, 2]);
            w.end_nested(ip);
            let p = w.begin_nested(CTA_TUPLE_PROTO);
            w.u8(CTA_PROTO_NUM, 1); // ICMP: id/type/code, no ports
            w.end_nested(p);
            w.end_nested(t);
        }
        assert_eq!(parse_flow(&w.buf), Ok(None));
        assert!(parse_flow(&[1, 2, 3]).is_err());
    }
}
