//! Byte-for-byte tests of the IPVS encodings. The expected bytes were derived by hand from
//! `linux/ip_vs.h` (attribute numbers), `linux/genetlink.h` (header), and the kernel's parser
//! and dumper in net/netfilter/ipvs/ip_vs_ctl.c (which attributes are required, their sizes
//! and byte order). No capture of real IPVS traffic was possible here (no `ip_vs` in this
//! kernel); the family lookup is checked against a capture of iproute2's `genl`, and the whole
//! codec against Debian 12's kernel in the VM tier (`examples/ipvs_check.rs`, which found the
//! IPv6 netmask's host byte order). The
//! host-order fields are written for a little-endian host (the only target here).

use super::*;
use crate::ipvs::{Connections, SVC_F_HASHED, SVC_F_PERSISTENT, Scheduler};
use crate::netlink_wire::{NLA_F_NESTED, messages};

const FAMILY: u16 = 0x24;

fn key(addr: &str, protocol: Protocol, port: u16) -> ServiceKey {
    ServiceKey {
        addr: addr.parse().expect("ip"),
        protocol,
        port,
    }
}

fn header(len: u32, ty: u16, flags: u16, seq: u32, cmd: u8) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&len.to_le_bytes());
    v.extend_from_slice(&ty.to_le_bytes());
    v.extend_from_slice(&flags.to_le_bytes());
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend_from_slice(&[0, 0, 0, 0]);
    v.extend_from_slice(&[cmd, 1, 0, 0]);
    v
}

/// The identity part of `IPVS_CMD_ATTR_SERVICE` for 10.96.0.10:53/UDP (44 bytes).
const V4_UDP_53_IDENTITY: [u8; 44] = [
    6, 0, 1, 0, 2, 0, 0, 0, // AF = AF_INET (u16 host), padded
    6, 0, 2, 0, 17, 0, 0, 0, // PROTOCOL = 17 (u16 host), padded
    20, 0, 3, 0, 10, 96, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // ADDR, nf_inet_addr
    6, 0, 4, 0, 0, 53, 0, 0, // PORT = 53 (be16), padded
];

#[test]
fn new_service_ipv4_udp_rr_is_byte_exact() {
    let svc = VirtualService::new(
        key("10.96.0.10", Protocol::Udp, 53),
        Scheduler::RoundRobin,
        0,
        None,
    );
    let mut w = Writer::default();
    encode_service(&mut w, FAMILY, IPVS_CMD_NEW_SERVICE, &svc, 1);
    let mut want = header(104, FAMILY, 0x5, 1, 1);
    want.extend_from_slice(&[84, 0, 0x01, 0x80]); // IPVS_CMD_ATTR_SERVICE | NLA_F_NESTED
    want.extend_from_slice(&V4_UDP_53_IDENTITY);
    want.extend_from_slice(&[7, 0, 6, 0, b'r', b'r', 0, 0]); // SCHED_NAME "rr\0"
    want.extend_from_slice(&[12, 0, 7, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]); // FLAGS
    want.extend_from_slice(&[8, 0, 8, 0, 0, 0, 0, 0]); // TIMEOUT 0
    want.extend_from_slice(&[8, 0, 9, 0, 0xff, 0xff, 0xff, 0xff]); // NETMASK /32
    assert_eq!(w.buf, want);
}

#[test]
fn set_service_ipv6_tcp_sh_with_affinity_is_byte_exact() {
    let svc = VirtualService::new(
        key("fd00::10", Protocol::Tcp, 443),
        Scheduler::SourceHashing,
        0,
        Some(10800),
    );
    assert_eq!(svc.flags, SVC_F_PERSISTENT);
    let mut w = Writer::default();
    encode_service(&mut w, FAMILY, IPVS_CMD_SET_SERVICE, &svc, 2);
    let mut want = header(104, FAMILY, 0x5, 2, 2);
    want.extend_from_slice(&[84, 0, 0x01, 0x80]);
    want.extend_from_slice(&[6, 0, 1, 0, 10, 0, 0, 0]); // AF_INET6
    want.extend_from_slice(&[6, 0, 2, 0, 6, 0, 0, 0]); // TCP
    want.extend_from_slice(&[
        20, 0, 3, 0, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ]);
    want.extend_from_slice(&[6, 0, 4, 0, 0x01, 0xbb, 0, 0]); // 443
    want.extend_from_slice(&[7, 0, 6, 0, b's', b'h', 0, 0]);
    want.extend_from_slice(&[12, 0, 7, 0, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]); // PERSISTENT
    want.extend_from_slice(&[8, 0, 8, 0, 0x30, 0x2a, 0, 0]); // 10800 s, host order
    want.extend_from_slice(&[8, 0, 9, 0, 128, 0, 0, 0]); // prefix 128, host order (!)
    assert_eq!(w.buf, want);
}

#[test]
fn del_service_carries_only_the_identity() {
    let mut w = Writer::default();
    encode_del_service(&mut w, FAMILY, &key("10.96.0.10", Protocol::Udp, 53), 3);
    let mut want = header(68, FAMILY, 0x5, 3, 3);
    want.extend_from_slice(&[48, 0, 0x01, 0x80]);
    want.extend_from_slice(&V4_UDP_53_IDENTITY);
    assert_eq!(w.buf, want);
}

fn dest() -> Destination {
    Destination {
        addr: "10.2.0.2".parse().expect("ip"),
        port: 5353,
        weight: 1,
        forward: Forward::Masquerade,
    }
}

#[test]
fn new_dest_masquerade_weight_one_is_byte_exact() {
    let mut w = Writer::default();
    let k = key("10.96.0.10", Protocol::Udp, 53);
    encode_dest(&mut w, FAMILY, IPVS_CMD_NEW_DEST, &k, &dest(), 4);
    let mut want = header(140, FAMILY, 0x5, 4, 5);
    want.extend_from_slice(&[48, 0, 0x01, 0x80]);
    want.extend_from_slice(&V4_UDP_53_IDENTITY);
    want.extend_from_slice(&[72, 0, 0x02, 0x80]); // IPVS_CMD_ATTR_DEST | NLA_F_NESTED
    want.extend_from_slice(&[20, 0, 1, 0, 10, 2, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    want.extend_from_slice(&[6, 0, 2, 0, 0x14, 0xe9, 0, 0]); // 5353 be16
    want.extend_from_slice(&[8, 0, 3, 0, 0, 0, 0, 0]); // FWD_METHOD = MASQ
    want.extend_from_slice(&[8, 0, 4, 0, 1, 0, 0, 0]); // WEIGHT 1
    want.extend_from_slice(&[8, 0, 5, 0, 0, 0, 0, 0]); // U_THRESH
    want.extend_from_slice(&[8, 0, 6, 0, 0, 0, 0, 0]); // L_THRESH
    want.extend_from_slice(&[6, 0, 11, 0, 2, 0, 0, 0]); // ADDR_FAMILY
    assert_eq!(w.buf, want);
}

#[test]
fn del_dest_carries_only_address_port_and_family() {
    let mut w = Writer::default();
    let k = key("10.96.0.10", Protocol::Udp, 53);
    encode_dest(&mut w, FAMILY, IPVS_CMD_DEL_DEST, &k, &dest(), 5);
    let mut want = header(108, FAMILY, 0x5, 5, 7);
    want.extend_from_slice(&[48, 0, 0x01, 0x80]);
    want.extend_from_slice(&V4_UDP_53_IDENTITY);
    want.extend_from_slice(&[40, 0, 0x02, 0x80]);
    want.extend_from_slice(&[20, 0, 1, 0, 10, 2, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    want.extend_from_slice(&[6, 0, 2, 0, 0x14, 0xe9, 0, 0]);
    want.extend_from_slice(&[6, 0, 11, 0, 2, 0, 0, 0]);
    assert_eq!(w.buf, want);
}

#[test]
fn dumps_and_family_lookup_are_byte_exact() {
    let mut w = Writer::default();
    encode_dump_services(&mut w, FAMILY, 6);
    assert_eq!(w.buf, header(20, FAMILY, 0x301, 6, 4));

    let mut w = Writer::default();
    encode_dump_dests(&mut w, FAMILY, &key("10.96.0.10", Protocol::Udp, 53), 7);
    let mut want = header(68, FAMILY, 0x301, 7, 8);
    want.extend_from_slice(&[48, 0, 0x01, 0x80]);
    want.extend_from_slice(&V4_UDP_53_IDENTITY);
    assert_eq!(w.buf, want);

    // nlctrl: type GENL_ID_CTRL, CTRL_CMD_GETFAMILY v1, CTRL_ATTR_FAMILY_NAME "IPVS\0".
    let mut w = Writer::default();
    encode_get_family(&mut w, IPVS_GENL_NAME, 8);
    let mut want = header(32, 0x10, 0x1, 8, 3);
    want.extend_from_slice(&[9, 0, 2, 0, b'I', b'P', b'V', b'S', 0, 0, 0, 0]);
    assert_eq!(w.buf, want);
}

/// A dump answer as `ip_vs_genl_fill_service` writes it (attribute order and sizes as the
/// kernel's: AF, PROTOCOL, ADDR, PORT, SCHED_NAME, FLAGS, TIMEOUT, NETMASK, STATS...).
#[test]
fn dumped_service_and_destination_parse_back() {
    let mut w = Writer::default();
    let n = w.begin_nested(1);
    w.u16_ne(1, 10);
    w.u16_ne(2, 6);
    w.attr(3, &"fd00::10".parse::<Ipv6Addr>().expect("ip").octets());
    w.u16_be(4, 443);
    w.str(6, "sh");
    let mut flags = [0u8; 8];
    flags[..4].copy_from_slice(&(SVC_F_PERSISTENT | SVC_F_HASHED).to_ne_bytes());
    flags[4..].copy_from_slice(&u32::MAX.to_ne_bytes());
    w.attr(7, &flags);
    w.u32_ne(8, 10800);
    w.u32_ne(9, 128);
    let stats = w.begin_nested(10);
    w.u32_ne(1, 99);
    w.end_nested(stats);
    w.end_nested(n);
    let want = VirtualService::new(
        key("fd00::10", Protocol::Tcp, 443),
        Scheduler::SourceHashing,
        0,
        Some(10800),
    );
    assert_eq!(parse_service(&w.buf), Ok(Some(want)));

    let mut w = Writer::default();
    let n = w.begin_nested(2);
    w.attr(1, &inet_addr("10.2.0.2".parse().expect("ip")));
    w.u16_be(2, 5353);
    w.u32_ne(3, 0);
    w.u32_ne(4, 1);
    w.u32_ne(7, 3);
    w.u16_ne(11, 2);
    w.end_nested(n);
    let counted = Connections {
        active: 3,
        ..Connections::default()
    };
    assert_eq!(parse_dest(&w.buf, IpFamily::V4), Ok((dest(), counted)));
}

/// A destination as Debian 12's kernel (6.1) dumps it (`ip_vs_genl_fill_dest`: ADDR, PORT,
/// FWD_METHOD, WEIGHT, TUN_TYPE, TUN_PORT, TUN_FLAGS, U_THRESH, L_THRESH, ACTIVE_CONNS,
/// INACT_CONNS, PERSIST_CONNS, ADDR_FAMILY, then the STATS nest, shortened here to one counter):
/// a draining real server, weight 0, with one established and two closing connections and
/// three persistence templates.
#[test]
fn dumped_destination_connection_counters_are_read_byte_exactly() {
    let mut payload: Vec<u8> = vec![132, 0, 0x02, 0x80]; // IPVS_CMD_ATTR_DEST | NLA_F_NESTED
    payload.extend_from_slice(&[
        20, 0, 1, 0, 10, 244, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ]);
    payload.extend_from_slice(&[6, 0, 2, 0, 0x1f, 0x90, 0, 0]); // PORT 8080 (be16)
    payload.extend_from_slice(&[8, 0, 3, 0, 0, 0, 0, 0]); // FWD_METHOD MASQ
    payload.extend_from_slice(&[8, 0, 4, 0, 0, 0, 0, 0]); // WEIGHT 0
    payload.extend_from_slice(&[5, 0, 13, 0, 0, 0, 0, 0]); // TUN_TYPE (u8), padded
    payload.extend_from_slice(&[6, 0, 14, 0, 0, 0, 0, 0]); // TUN_PORT
    payload.extend_from_slice(&[6, 0, 15, 0, 0, 0, 0, 0]); // TUN_FLAGS
    payload.extend_from_slice(&[8, 0, 5, 0, 0, 0, 0, 0]); // U_THRESH
    payload.extend_from_slice(&[8, 0, 6, 0, 0, 0, 0, 0]); // L_THRESH
    payload.extend_from_slice(&[8, 0, 7, 0, 1, 0, 0, 0]); // ACTIVE_CONNS 1
    payload.extend_from_slice(&[8, 0, 8, 0, 2, 0, 0, 0]); // INACT_CONNS 2
    payload.extend_from_slice(&[8, 0, 9, 0, 3, 0, 0, 0]); // PERSIST_CONNS 3
    payload.extend_from_slice(&[6, 0, 11, 0, 2, 0, 0, 0]); // ADDR_FAMILY AF_INET
    payload.extend_from_slice(&[12, 0, 10, 0x80, 8, 0, 1, 0, 9, 0, 0, 0]); // STATS { CONNS 9 }
    let (dest, connections) = parse_dest(&payload, IpFamily::V4).expect("parses");
    assert_eq!(
        dest,
        Destination {
            addr: "10.244.1.2".parse().expect("ip"),
            port: 8080,
            weight: 0,
            forward: Forward::Masquerade,
        }
    );
    assert_eq!(
        connections,
        Connections {
            active: 1,
            inactive: 2,
            persistent: 3,
        }
    );
    assert!(!connections.is_idle());
    assert!(
        Connections {
            persistent: 3,
            ..Connections::default()
        }
        .is_idle(),
        "templates alone do not hold a real server (upstream counts active + inactive)"
    );
}

#[test]
fn firewall_mark_services_are_not_ours() {
    let mut w = Writer::default();
    let n = w.begin_nested(1);
    w.u16_ne(1, 2);
    w.u32_ne(5, 0x4000);
    w.end_nested(n);
    assert_eq!(parse_service(&w.buf), Ok(None));
}

#[test]
fn family_id_reply_parses() {
    let mut w = Writer::default();
    w.str(2, "IPVS");
    w.u16_ne(1, 0x1d);
    assert_eq!(parse_family_id(&w.buf), Some(0x1d));
    let _ = messages(&[]).count();
    assert_eq!(NLA_F_NESTED, 0x8000);
}

/// A known-good vector: the attribute iproute2 6.1 `genl ctrl get name nlctrl` sent, captured
/// here with `strace -e sendmsg -xx` (`CTRL_ATTR_FAMILY_NAME` "nlctrl\0", padded). It sends
/// genl version 0 and asks for an ACK; the kernel's controller accepts either.
#[test]
fn family_lookup_attribute_matches_an_iproute2_capture() {
    const CAPTURED: [u8; 16] = [
        0x03, 0x00, 0x00, 0x00, 0x0b, 0x00, 0x02, 0x00, 0x6e, 0x6c, 0x63, 0x74, 0x72, 0x6c, 0x00,
        0x00,
    ];
    let mut w = Writer::default();
    encode_get_family(&mut w, "nlctrl", 1);
    assert_eq!(&w.buf[..4], &32u32.to_le_bytes());
    assert_eq!(&w.buf[4..6], &0x10u16.to_le_bytes());
    assert_eq!(w.buf[16], CAPTURED[0]); // CTRL_CMD_GETFAMILY
    assert_eq!(&w.buf[20..], &CAPTURED[4..]);
}
