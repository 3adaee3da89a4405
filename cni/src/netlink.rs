//! A small synchronous rtnetlink client (one socket, one request at a time, acked): the link,
//! address and route operations the plugin's executor performs. No async runtime: a CNI call is
//! a short-lived process and a netlink round trip costs microseconds.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd as _, BorrowedFd, RawFd};

use kwk_netdp::rtnl::RtnlSocket;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
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

    /// The link called `name`, `None` if there is none.
    pub fn link_by_name(&mut self, name: &str) -> io::Result<Option<LinkState>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        match self.request(RouteNetlinkMessage::GetLink(msg), 0) {
            Ok(replies) => Ok(replies.into_iter().find_map(|reply| match reply {
                RouteNetlinkMessage::NewLink(link) => Some(link_state(&link)),
                _ => None,
            })),
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

    /// Creates a veth pair in one message (see [`veth_message`]).
    pub fn create_veth(
        &mut self,
        host_name: &str,
        peer_name: &str,
        peer_netns: BorrowedFd<'_>,
        mtu: Option<u32>,
        master: u32,
    ) -> io::Result<()> {
        let msg = veth_message(host_name, peer_name, peer_netns.as_raw_fd(), mtu, master);
        self.ack(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
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
        let replies = self.request(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewLink(link) => Some(link_state(&link).name),
                _ => None,
            })
            .collect())
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

/// The `RTM_NEWLINK` body of a veth pair: `host_name` here (up, attached to `master`) and its
/// peer `peer_name` created directly inside the namespace open as `peer_netns_fd` (moving it
/// afterwards would cost ~16 ms), both with `mtu` and [`VETH_QUEUES`]. The peer stays down: it
/// cannot be brought up inside this message (`veth_open` fails with ENOTCONN until the pair is
/// linked).
pub fn veth_message(
    host_name: &str,
    peer_name: &str,
    peer_netns_fd: RawFd,
    mtu: Option<u32>,
    master: u32,
) -> LinkMessage {
    let mut peer = LinkMessage::default();
    peer.attributes
        .push(LinkAttribute::IfName(peer_name.to_owned()));
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

fn link_state(link: &LinkMessage) -> LinkState {
    let mut state = LinkState {
        index: link.header.index,
        up: link.header.flags.contains(LinkFlags::Up),
        ..LinkState::default()
    };
    for attr in &link.attributes {
        match attr {
            LinkAttribute::IfName(name) => state.name.clone_from(name),
            LinkAttribute::Address(mac) => state.mac.clone_from(mac),
            LinkAttribute::Mtu(mtu) => state.mtu = Some(*mtu),
            LinkAttribute::Controller(master) => state.master = Some(*master),
            LinkAttribute::Link(peer) => state.peer_index = Some(*peer),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(kind) = info {
                        state.kind = Some(kind.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    state
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
        let msg = veth_message("veth0123abcd", "eth0", 7, Some(1400), 3);
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
        msg.header.flags = LinkFlags::Up;
        msg.attributes = vec![
            LinkAttribute::IfName("eth0".into()),
            LinkAttribute::Address(vec![2, 0, 0, 0, 0, 1]),
            LinkAttribute::Controller(3),
            LinkAttribute::Link(9),
            LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Veth)]),
        ];
        let state = link_state(&msg);
        assert_eq!(state.index, 5);
        assert!(state.up);
        assert_eq!(state.kind.as_deref(), Some("veth"));
        assert_eq!((state.master, state.peer_index), (Some(3), Some(9)));
        assert_eq!(format_mac(&state.mac), "02:00:00:00:00:01");
    }
}
