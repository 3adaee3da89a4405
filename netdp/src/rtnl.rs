//! A small synchronous rtnetlink client: one socket, one request at a time, acked
//! ([`RtnlSocket::request`], or [`RtnlSocket::request_raw`] for callers that read a few
//! attributes themselves), and the route operations host-gw routing needs
//! ([`RtnlSocket::host_routes`], [`RtnlSocket::apply_route`]). Blocking: call it from a
//! blocking thread; a round trip costs microseconds.

use std::io;
use std::net::IpAddr;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkBuffer,
    NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use crate::model::Cidr;
use crate::routes::{HostRoute, ROUTE_PROTOCOL, RouteAction};

/// One reply left undecoded: its netlink message type and payload (the fixed header, e.g.
/// `ifinfomsg`, then the attributes). Decoding a whole `RTM_NEWLINK` (statistics, per-family
/// configuration, ~2 KiB) costs more than a short-lived caller needing three attributes
/// wants to pay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawReply {
    pub message_type: u16,
    pub payload: Vec<u8>,
}

impl NetlinkDeserializable for RawReply {
    type Error = std::convert::Infallible;

    fn deserialize(header: &NetlinkHeader, payload: &[u8]) -> Result<Self, Self::Error> {
        Ok(Self {
            message_type: header.message_type,
            payload: payload.to_vec(),
        })
    }
}

/// Room for the largest datagram the kernel sends (a dump skb is at most 32 KiB).
const RECV_BUF: usize = 64 * 1024;

/// An rtnetlink socket bound in the network namespace it was created in.
#[derive(Debug)]
pub struct RtnlSocket {
    socket: Socket,
    seq: u32,
    /// Receive buffer, filled through its spare capacity: never zeroed, so a reply touches only
    /// the pages it needs (a short-lived CLI such as kwk-cni pays a page fault per page).
    buf: Vec<u8>,
}

/// `ENODEV`/`ENOENT`/`ESRCH`: the object is not there.
pub fn is_not_found(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(code) if code == nix::libc::ENODEV || code == nix::libc::ENOENT || code == nix::libc::ESRCH
    )
}

/// `EEXIST`.
pub fn is_exists(err: &io::Error) -> bool {
    err.raw_os_error() == Some(nix::libc::EEXIST)
}

fn invalid(err: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err.to_string())
}

impl RtnlSocket {
    /// Opens a socket in the calling thread's current network namespace.
    pub fn open() -> io::Result<Self> {
        let socket = Socket::new(NETLINK_ROUTE)?;
        // Connecting binds the socket to a kernel-chosen port (no `getsockname`: nothing here
        // needs to know it).
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Self {
            socket,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    /// Sends one request and collects the replies until the ack (or `NLMSG_DONE` for dumps);
    /// a kernel error becomes the `io::Error` of its errno.
    pub fn request(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.exchange(message, flags)
    }

    /// [`Self::request`] with the replies left undecoded.
    pub fn request_raw(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RawReply>> {
        self.exchange(message, flags)
    }

    fn exchange<T: NetlinkDeserializable>(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<T>> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
        packet.finalize();
        let mut out = vec![0; packet.buffer_len()];
        packet.serialize(&mut out);
        self.socket.send(&out, 0)?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut replies = Vec::new();
        loop {
            self.buf.clear();
            self.buf.reserve(RECV_BUF);
            let len = self.socket.recv(&mut self.buf, 0)?;
            let mut offset = 0;
            while offset < len {
                let bytes = &self.buf[offset..len];
                let frame = NetlinkBuffer::new_checked(bytes).map_err(invalid)?;
                let frame_len = frame.length() as usize;
                let msg = NetlinkMessage::<T>::deserialize(&bytes[..frame_len]).map_err(invalid)?;
                offset += (frame_len + 3) & !3;
                if msg.header.sequence_number != self.seq {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::Error(err) => {
                        return match err.code {
                            None => Ok(replies),
                            Some(_) => Err(err.to_io()),
                        };
                    }
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::InnerMessage(inner) => {
                        replies.push(inner);
                        if !dump && flags & NLM_F_ACK == 0 {
                            return Ok(replies);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Sends one request and waits for its ack.
    pub fn ack(&mut self, message: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        self.request(message, flags | NLM_F_ACK).map(drop)
    }

    /// The main table's routes marked with [`ROUTE_PROTOCOL`], both families.
    pub fn host_routes(&mut self) -> io::Result<Vec<HostRoute>> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut msg = RouteMessage::default();
            msg.header.address_family = family;
            for reply in self.request(RouteNetlinkMessage::GetRoute(msg), NLM_F_DUMP)? {
                if let RouteNetlinkMessage::NewRoute(route) = reply
                    && route.header.table == RouteHeader::RT_TABLE_MAIN
                    && u8::from(route.header.protocol) == ROUTE_PROTOCOL
                    && let Some(r) = host_route(&route)
                {
                    out.push(r);
                }
            }
        }
        Ok(out)
    }

    /// Replaces or deletes one host route (a route already gone counts as deleted).
    pub fn apply_route(&mut self, action: &RouteAction) -> io::Result<()> {
        match action {
            RouteAction::Replace(route) => self.ack(
                RouteNetlinkMessage::NewRoute(route_message(route)),
                NLM_F_CREATE | NLM_F_REPLACE,
            ),
            RouteAction::Delete(route) => {
                match self.ack(RouteNetlinkMessage::DelRoute(route_message(route)), 0) {
                    Err(e) if is_not_found(&e) => Ok(()),
                    other => other,
                }
            }
        }
    }
}

fn family_of(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn route_address(ip: IpAddr) -> RouteAddress {
    match ip {
        IpAddr::V4(v4) => RouteAddress::Inet(v4),
        IpAddr::V6(v6) => RouteAddress::Inet6(v6),
    }
}

/// The message for a host-gw route: main table, our protocol, via the peer (on-link lookup by
/// the kernel, so no output interface is named).
pub fn route_message(route: &HostRoute) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = family_of(route.dst.network());
    msg.header.destination_prefix_length = route.dst.prefix_len();
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.protocol = RouteProtocol::from(ROUTE_PROTOCOL);
    msg.header.scope = RouteScope::Universe;
    msg.header.kind = RouteType::Unicast;
    msg.attributes
        .push(RouteAttribute::Destination(route_address(
            route.dst.network(),
        )));
    msg.attributes
        .push(RouteAttribute::Gateway(route_address(route.via)));
    msg
}

fn host_route(route: &RouteMessage) -> Option<HostRoute> {
    let mut dst = None;
    let mut via = None;
    for attr in &route.attributes {
        match attr {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(IpAddr::V4(*ip)),
            RouteAttribute::Destination(RouteAddress::Inet6(ip)) => dst = Some(IpAddr::V6(*ip)),
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => via = Some(IpAddr::V4(*ip)),
            RouteAttribute::Gateway(RouteAddress::Inet6(ip)) => via = Some(IpAddr::V6(*ip)),
            _ => {}
        }
    }
    Some(HostRoute {
        dst: Cidr::new(dst?, route.header.destination_prefix_length)?,
        via: via?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_messages_round_trip() {
        for (dst, via) in [
            ("10.244.2.0/24", "192.168.0.2"),
            ("fd00:244:2::/64", "fd00::2"),
        ] {
            let route = HostRoute {
                dst: dst.parse().unwrap(),
                via: via.parse().unwrap(),
            };
            let msg = route_message(&route);
            assert_eq!(u8::from(msg.header.protocol), ROUTE_PROTOCOL);
            assert_eq!(host_route(&msg), Some(route));
        }
    }
}
