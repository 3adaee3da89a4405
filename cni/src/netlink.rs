//! A small synchronous rtnetlink client (one socket, one request at a time, acked): the link,
//! address and route operations the plugin's executor performs. No async runtime: a CNI call is
//! a short-lived process and a netlink round trip costs microseconds.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd as _, BorrowedFd, RawFd};

use kwk_netdp::rtnl::RtnlSocket;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_ECHO, NLM_F_EXCL, NLM_F_REPLACE, NlasIterator,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkExtentMask, LinkFlags, LinkInfo, LinkMessage,
    LinkProtoInfoBridge,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use netlink_packet_core::DefaultNla;

use crate::ipv4::Ipv4Cidr;

/// `IFLA_BRPORT_MODE`: the bridge port's hairpin flag.
const IFLA_BRPORT_MODE: u16 = 4;
/// `RTM_NEWLINK`, the type of a link reply.
const RTM_NEWLINK: u16 = 16;
/// The `ifinfomsg` header in front of a link's attributes.
const IFINFOMSG_LEN: usize = 16;
/// `IFF_UP`.
const IFF_UP: u32 = 1;
// The link attributes [`LinkState`] reads (`IFLA_*`, `IFLA_INFO_KIND`).
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINK: u16 = 5;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;

/// What the plugin needs to know about a link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkState {
    pub index: u32,
    pub name: String,
    pub mac: Vec<u8>,
    pub mtu: Option<u32>,
    pub up: bool,
    /// `IFLA_INFO_KIND` (`bridge`, `veth`, ...).
    pub kind: Option<String>,
    /// The bridge it is attached to.
    pub master: Option<u32>,
    /// For a veth: the peer's index (in the peer's namespace).
    pub peer_index: Option<u32>,
}

/// An IPv4 route as read back from the kernel (main table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteState {
    pub dst: Ipv4Cidr,
    pub gw: Option<Ipv4Addr>,
    pub oif: Option<u32>,
}

/// An rtnetlink socket bound in the network namespace it was created in (the request/ack
/// exchange is `kwk_netdp::rtnl::RtnlSocket`'s).
#[derive(Debug)]
pub struct Rtnl {
    socket: RtnlSocket,
}

pub use kwk_netdp::rtnl::{is_exists, is_not_found};

impl Rtnl {
    /// Opens a socket in the calling thread's current network namespace.
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            socket: RtnlSocket::open()?,
        })
    }

    fn request(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.socket.request(message, flags)
    }

    fn ack(&mut self, message: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        self.socket.ack(message, flags)
    }

    /// The link called `name`, `None` if there is none. Asks the kernel to leave out the
    /// statistics and decodes only what [`LinkState`] holds.
    pub fn link_by_name(&mut self, name: &str) -> io::Result<Option<LinkState>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        msg.attributes
            .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        match self
            .socket
            .request_raw(RouteNetlinkMessage::GetLink(msg), 0)
        {
            Ok(replies) => replies
                .iter()
                .find(|reply| reply.message_type == RTM_NEWLINK)
                .map(|reply| link_state(&reply.payload))
                .transpose(),
            Err(err) if is_not_found(&err) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Creates a bridge, up, with the MAC `mac` (fails with EEXIST if the name is taken).
    /// The MAC is set explicitly so it stays put (an unset bridge MAC follows the lowest port
    /// MAC and changes as pods come and go, leaving stale gateway ARP entries in pods).
    pub fn create_bridge(&mut self, name: &str, mtu: Option<u32>, mac: [u8; 6]) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
        if let Some(mtu) = mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        msg.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        self.ack(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// Sets a link administratively up.
    pub fn set_up(&mut self, index: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        self.ack(RouteNetlinkMessage::SetLink(msg), 0)
    }

    /// Creates a veth pair in one message (see [`veth_message`]). Returns the host end as the
    /// kernel reports it back (`NLM_F_ECHO`, honoured for new links since Linux 6.3): `None` on
    /// older kernels, where the caller reads it.
    pub fn create_veth(
        &mut self,
        host_name: &str,
        peer: VethPeer<'_>,
        peer_netns: BorrowedFd<'_>,
        mtu: Option<u32>,
        master: u32,
    ) -> io::Result<Option<LinkState>> {
        let msg = veth_message(host_name, peer, peer_netns.as_raw_fd(), mtu, master);
        let replies = self.socket.request_raw(
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL | NLM_F_ECHO | NLM_F_ACK,
        )?;
        replies
            .iter()
            .find(|reply| reply.message_type == RTM_NEWLINK)
            .map(|reply| link_state(&reply.payload))
            .transpose()
    }

    /// Attaches a link to a bridge.
    pub fn set_master(&mut self, index: u32, master: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::Controller(master));
        self.ack(RouteNetlinkMessage::SetLink(msg), 0)
    }

    /// Sets the bridge port's hairpin mode (`IFLA_PROTINFO` / `IFLA_BRPORT_MODE`, AF_BRIDGE).
    pub fn set_hairpin(&mut self, index: u32, on: bool) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.interface_family = AddressFamily::Bridge;
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::ProtoInfoBridge(vec![
            LinkProtoInfoBridge::Other(DefaultNla::new(IFLA_BRPORT_MODE, vec![u8::from(on)])),
        ]));
        self.ack(RouteNetlinkMessage::SetLink(msg), 0)
    }

    /// Adds (or re-adds) an IPv4 address.
    pub fn replace_address(&mut self, index: u32, cidr: Ipv4Cidr) -> io::Result<()> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = cidr.prefix_len();
        msg.header.scope = AddressScope::Universe;
        msg.header.index = index;
        let ip = IpAddr::V4(cidr.addr());
        msg.attributes.push(AddressAttribute::Local(ip));
        msg.attributes.push(AddressAttribute::Address(ip));
        if cidr.prefix_len() < 31 {
            msg.attributes
                .push(AddressAttribute::Broadcast(cidr.broadcast()));
        }
        self.ack(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    /// The IPv4 addresses on a link.
    pub fn addresses(&mut self, index: u32) -> io::Result<Vec<Ipv4Cidr>> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        let replies = self.request(RouteNetlinkMessage::GetAddress(msg), NLM_F_DUMP)?;
        Ok(replies
            .into_iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewAddress(addr) if addr.header.index == index => {
                    addr.attributes.iter().find_map(|attr| match attr {
                        AddressAttribute::Local(IpAddr::V4(ip)) => {
                            Ipv4Cidr::new(*ip, addr.header.prefix_len)
                        }
                        _ => None,
                    })
                }
                _ => None,
            })
            .collect())
    }

    /// Adds or replaces a route in the main table via `gw` out of `oif`.
    pub fn replace_route(&mut self, dst: Ipv4Cidr, gw: Ipv4Addr, oif: u32) -> io::Result<()> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.destination_prefix_length = dst.prefix_len();
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.scope = RouteScope::Universe;
        msg.header.kind = RouteType::Unicast;
        if dst.prefix_len() > 0 {
            msg.attributes
                .push(RouteAttribute::Destination(RouteAddress::Inet(
                    dst.network(),
                )));
        }
        msg.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(gw)));
        msg.attributes.push(RouteAttribute::Oif(oif));
        self.ack(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    /// IPv4 routes of the main table.
    pub fn routes(&mut self) -> io::Result<Vec<RouteState>> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        let replies = self.request(RouteNetlinkMessage::GetRoute(msg), NLM_F_DUMP)?;
        Ok(replies
            .into_iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewRoute(route)
                    if route.header.table == RouteHeader::RT_TABLE_MAIN =>
                {
                    Some(route_state(&route))
                }
                _ => None,
            })
            .collect())
    }

    /// Sets a link administratively down.
    pub fn set_down(&mut self, index: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.change_mask = LinkFlags::Up;
        self.ack(RouteNetlinkMessage::SetLink(msg), 0)
    }

    /// Renames a link (it must be down).
    pub fn rename(&mut self, index: u32, name: &str) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        self.ack(RouteNetlinkMessage::SetLink(msg), 0)
    }

    /// The names of all links.
    pub fn link_names(&mut self) -> io::Result<Vec<String>> {
        let mut msg = LinkMessage::default();
        msg.attributes
            .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        self.socket
            .request_raw(RouteNetlinkMessage::GetLink(msg), NLM_F_DUMP)?
            .iter()
            .filter(|reply| reply.message_type == RTM_NEWLINK)
            .map(|reply| link_state(&reply.payload).map(|link| link.name))
            .collect()
    }

    /// Deletes a link by name; `false` if there was none.
    pub fn delete_link(&mut self, name: &str) -> io::Result<bool> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        match self.ack(RouteNetlinkMessage::DelLink(msg), 0) {
            Ok(()) => Ok(true),
            Err(err) if is_not_found(&err) => Ok(false),
            Err(err) => Err(err),
        }
    }
}

/// Transmit and receive queues of each end of a pod's veth pair.
///
/// The kernel's default allocates `num_possible_cpus()` of each (recent kernels then drop the
/// active count to one again) and registers sysfs objects for them: on 2 CPUs that is a third
/// of the pair's creation time, and it grows with the CPU count. One queue is what a veth
/// without XDP uses anyway; the cost is that `ethtool -L` cannot raise the count later.
pub const VETH_QUEUES: u32 = 1;

/// The pod end of a new veth pair: its name and the MAC it gets (chosen by the caller, so it
/// is known without reading the link back from the pod namespace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VethPeer<'a> {
    pub name: &'a str,
    pub mac: [u8; 6],
}

/// The `RTM_NEWLINK` body of a veth pair: `host_name` here (up, attached to `master`) and its
/// peer created directly inside the namespace open as `peer_netns_fd` (moving it afterwards
/// would cost ~16 ms), both with `mtu` and [`VETH_QUEUES`]. The peer stays down: it cannot be
/// brought up inside this message (`veth_open` fails with ENOTCONN until the pair is linked).
pub fn veth_message(
    host_name: &str,
    peer_end: VethPeer<'_>,
    peer_netns_fd: RawFd,
    mtu: Option<u32>,
    master: u32,
) -> LinkMessage {
    let mut peer = LinkMessage::default();
    peer.attributes
        .push(LinkAttribute::IfName(peer_end.name.to_owned()));
    peer.attributes
        .push(LinkAttribute::Address(peer_end.mac.to_vec()));
    peer.attributes.push(LinkAttribute::NetNsFd(peer_netns_fd));
    let mut msg = LinkMessage::default();
    msg.header.flags = LinkFlags::Up;
    msg.header.change_mask = LinkFlags::Up;
    msg.attributes
        .push(LinkAttribute::IfName(host_name.to_owned()));
    if let Some(mtu) = mtu {
        peer.attributes.push(LinkAttribute::Mtu(mtu));
        msg.attributes.push(LinkAttribute::Mtu(mtu));
    }
    for end in [&mut peer, &mut msg] {
        end.attributes.extend([
            LinkAttribute::NumTxQueues(VETH_QUEUES),
            LinkAttribute::NumRxQueues(VETH_QUEUES),
        ]);
    }
    msg.attributes.push(LinkAttribute::Controller(master));
    msg.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
    ]));
    msg
}

/// Reads a link reply's payload (`ifinfomsg` and attributes) into a [`LinkState`], skipping
/// every attribute it does not hold.
fn link_state(payload: &[u8]) -> io::Result<LinkState> {
    let malformed =
        |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("link: {what}"));
    let header = payload
        .get(..IFINFOMSG_LEN)
        .ok_or_else(|| malformed("short ifinfomsg"))?;
    let word = |at: usize| {
        u32::from_ne_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let mut state = LinkState {
        index: word(4),
        up: word(8) & IFF_UP != 0,
        ..LinkState::default()
    };
    let u32_value = |value: &[u8]| -> io::Result<u32> {
        value
            .get(..4)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| malformed("short u32 attribute"))
    };
    for nla in NlasIterator::new(&payload[IFINFOMSG_LEN..]) {
        let nla = nla.map_err(|err| malformed(&err.to_string()))?;
        let value = nla.value();
        match nla.kind() {
            IFLA_IFNAME => state.name = c_string(value),
            IFLA_ADDRESS => state.mac = value.to_vec(),
            IFLA_MTU => state.mtu = Some(u32_value(value)?),
            IFLA_MASTER => state.master = Some(u32_value(value)?),
            IFLA_LINK => state.peer_index = Some(u32_value(value)?),
            IFLA_LINKINFO => {
                for info in NlasIterator::new(value) {
                    let info = info.map_err(|err| malformed(&err.to_string()))?;
                    if info.kind() == IFLA_INFO_KIND {
                        state.kind = Some(c_string(info.value()));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(state)
}

/// A NUL-terminated attribute string.
fn c_string(value: &[u8]) -> String {
    let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end]).into_owned()
}

fn route_state(route: &RouteMessage) -> RouteState {
    let mut dst = Ipv4Addr::UNSPECIFIED;
    let mut gw = None;
    let mut oif = None;
    for attr in &route.attributes {
        match attr {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = *ip,
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gw = Some(*ip),
            RouteAttribute::Oif(index) => oif = Some(*index),
            _ => {}
        }
    }
    RouteState {
        dst: Ipv4Cidr::new(dst, route.header.destination_prefix_length)
            .unwrap_or_else(Ipv4Cidr::default_route),
        gw,
        oif,
    }
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8]) -> String {
    mac.iter()
        .map(|byte| format!("{byte:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::Emitable as _;

    use super::*;

    #[test]
    fn veth_peer_is_created_in_the_pod_namespace_and_left_down() {
        let mac = [2, 0, 0, 0, 0, 9];
        let pod = VethPeer { name: "eth0", mac };
        let msg = veth_message("veth0123abcd", pod, 7, Some(1400), 3);
        assert!(
            msg.header.flags.contains(LinkFlags::Up),
            "host end up at creation"
        );
        assert!(msg.attributes.contains(&LinkAttribute::Controller(3)));
        let peer = msg
            .attributes
            .iter()
            .find_map(|attr| match attr {
                LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|info| match info {
                    LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))) => Some(peer),
                    _ => None,
                }),
                _ => None,
            })
            .expect("VETH_INFO_PEER");
        assert!(peer.attributes.contains(&LinkAttribute::NetNsFd(7)));
        assert!(
            peer.attributes
                .contains(&LinkAttribute::IfName("eth0".into()))
        );
        assert!(peer.attributes.contains(&LinkAttribute::Mtu(1400)));
        assert!(
            peer.attributes
                .contains(&LinkAttribute::Address(mac.to_vec()))
        );
        for end in [&msg, peer] {
            assert!(end.attributes.contains(&LinkAttribute::NumTxQueues(1)));
            assert!(end.attributes.contains(&LinkAttribute::NumRxQueues(1)));
        }
        assert!(peer.header.flags.is_empty() && peer.header.change_mask.is_empty());
        // Wire format: IFLA_NET_NS_FD (28) = 7 inside the nested peer message.
        let mut bytes = vec![0; msg.buffer_len()];
        msg.emit(&mut bytes);
        let needle = [8, 0, 28, 0, 7, 0, 0, 0];
        assert!(
            bytes.windows(needle.len()).any(|w| w == needle),
            "{bytes:?}"
        );
    }

    #[test]
    fn link_state_reads_what_the_planner_needs() {
        let mut msg = LinkMessage::default();
        msg.header.index = 5;
        msg.header.flags = LinkFlags::Up | LinkFlags::Broadcast;
        msg.attributes = vec![
            LinkAttribute::IfName("eth0".into()),
            LinkAttribute::TxQueueLen(1000),
            LinkAttribute::Address(vec![2, 0, 0, 0, 0, 1]),
            LinkAttribute::Mtu(1400),
            LinkAttribute::Controller(3),
            LinkAttribute::Link(9),
            LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Veth)]),
        ];
        let mut bytes = vec![0; msg.buffer_len()];
        msg.emit(&mut bytes);
        let state = link_state(&bytes).expect("decodes");
        assert_eq!(
            state,
            LinkState {
                index: 5,
                name: "eth0".into(),
                mac: vec![2, 0, 0, 0, 0, 1],
                mtu: Some(1400),
                up: true,
                kind: Some("veth".into()),
                master: Some(3),
                peer_index: Some(9),
            }
        );
        assert_eq!(format_mac(&state.mac), "02:00:00:00:00:01");

        msg.header.flags = LinkFlags::Broadcast;
        msg.attributes = vec![
            LinkAttribute::IfName("cni0".into()),
            LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]),
        ];
        let mut bytes = vec![0; msg.buffer_len()];
        msg.emit(&mut bytes);
        let state = link_state(&bytes).expect("decodes");
        assert!(!state.up && state.master.is_none() && state.peer_index.is_none());
        assert_eq!(state.kind.as_deref(), Some("bridge"));

        assert!(link_state(&bytes[..10]).is_err(), "short header");
        assert!(
            link_state(&bytes[..bytes.len() - 2]).is_err(),
            "cut attribute"
        );
    }
}
