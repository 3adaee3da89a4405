//! The `kube-ipvs0` dummy interface of the IPVS mode: the link (created if missing, left down
//! as upstream: a down dummy still gets the local routes of its addresses, so the node accepts
//! traffic to them, but never answers ARP for them) and its Service addresses (/32 or /128).
//! Owns [`ServiceAddressApi`] (the kernel operations), [`RtnlServiceAddresses`] (them over
//! rtnetlink), [`MemoryServiceAddresses`] (in memory, for tests) and the pure
//! [`plan_addresses`]. Only this one interface is ever touched.

use std::collections::BTreeSet;
use std::io;
use std::net::IpAddr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::rtnl::{RtnlSocket, is_exists, is_not_found};

/// The interface upstream's IPVS proxier binds Service addresses to.
pub const DUMMY_INTERFACE: &str = "kube-ipvs0";

/// The kernel operations on the dummy interface.
pub trait ServiceAddressApi: Send {
    /// The interface index, creating the dummy (down) when it is missing.
    fn ensure_link(&mut self) -> io::Result<u32>;
    /// The addresses on interface `index`.
    fn list_addresses(&mut self, index: u32) -> io::Result<Vec<IpAddr>>;
    /// Adds `ip` as a host address; one already there is not an error.
    fn add_address(&mut self, index: u32, ip: IpAddr) -> io::Result<()>;
    /// Deletes `ip`; one already gone is not an error.
    fn del_address(&mut self, index: u32, ip: IpAddr) -> io::Result<()>;
    /// Deletes the dummy interface (and so its addresses); a missing one is not an error.
    fn delete_link(&mut self) -> io::Result<()>;
}

/// Addresses to add and to delete to go from `listed` to `desired`.
pub fn plan_addresses(desired: &BTreeSet<IpAddr>, listed: &[IpAddr]) -> (Vec<IpAddr>, Vec<IpAddr>) {
    let listed: BTreeSet<IpAddr> = listed.iter().copied().collect();
    (
        desired.difference(&listed).copied().collect(),
        listed.difference(desired).copied().collect(),
    )
}

/// Prefix length of a host address.
fn host_prefix(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn family_of(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// [`ServiceAddressApi`] over an rtnetlink socket, in the namespace the socket was opened in.
#[derive(Debug)]
pub struct RtnlServiceAddresses {
    socket: RtnlSocket,
    name: String,
}

impl RtnlServiceAddresses {
    /// Opens an rtnetlink socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Self> {
        Ok(Self {
            socket: RtnlSocket::open()?,
            name: DUMMY_INTERFACE.to_owned(),
        })
    }

    fn link_index(&mut self) -> io::Result<Option<u32>> {
        let mut msg = LinkMessage::default();
        msg.attributes
            .push(LinkAttribute::IfName(self.name.clone()));
        match self.socket.request(RouteNetlinkMessage::GetLink(msg), 0) {
            Ok(replies) => Ok(replies.into_iter().find_map(|r| match r {
                RouteNetlinkMessage::NewLink(link) => Some(link.header.index),
                _ => None,
            })),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn address_message(index: u32, ip: IpAddr) -> AddressMessage {
        let mut msg = AddressMessage::default();
        msg.header.family = family_of(ip);
        msg.header.prefix_len = host_prefix(ip);
        msg.header.index = index;
        msg.attributes.push(AddressAttribute::Local(ip));
        msg.attributes.push(AddressAttribute::Address(ip));
        msg
    }
}

impl ServiceAddressApi for RtnlServiceAddresses {
    fn ensure_link(&mut self) -> io::Result<u32> {
        if let Some(index) = self.link_index()? {
            return Ok(index);
        }
        let mut msg = LinkMessage::default();
        msg.attributes
            .push(LinkAttribute::IfName(self.name.clone()));
        msg.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Dummy,
            )]));
        match self
            .socket
            .ack(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
        {
            Err(e) if !is_exists(&e) => return Err(e),
            _ => {}
        }
        self.link_index()?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} vanished after creation", self.name),
            )
        })
    }

    fn list_addresses(&mut self, index: u32) -> io::Result<Vec<IpAddr>> {
        let mut msg = AddressMessage::default();
        msg.header.index = index;
        let replies = self
            .socket
            .request(RouteNetlinkMessage::GetAddress(msg), NLM_F_DUMP)?;
        Ok(replies
            .into_iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewAddress(a) if a.header.index == index => a
                    .attributes
                    .iter()
                    .find_map(|attr| match attr {
                        AddressAttribute::Local(ip) => Some(*ip),
                        _ => None,
                    })
                    .or_else(|| {
                        a.attributes.iter().find_map(|attr| match attr {
                            AddressAttribute::Address(ip) => Some(*ip),
                            _ => None,
                        })
                    }),
                _ => None,
            })
            .collect())
    }

    fn add_address(&mut self, index: u32, ip: IpAddr) -> io::Result<()> {
        let msg = Self::address_message(index, ip);
        match self.socket.ack(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Err(e) if is_exists(&e) => Ok(()),
            other => other,
        }
    }

    fn del_address(&mut self, index: u32, ip: IpAddr) -> io::Result<()> {
        let msg = Self::address_message(index, ip);
        match self.socket.ack(RouteNetlinkMessage::DelAddress(msg), 0) {
            Err(e) if is_not_found(&e) || e.raw_os_error() == Some(nix::libc::EADDRNOTAVAIL) => {
                Ok(())
            }
            other => other,
        }
    }

    fn delete_link(&mut self) -> io::Result<()> {
        let Some(index) = self.link_index()? else {
            return Ok(());
        };
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        match self.socket.ack(RouteNetlinkMessage::DelLink(msg), 0) {
            Err(e) if is_not_found(&e) => Ok(()),
            other => other,
        }
    }
}

/// An in-memory dummy interface: whether it exists and its addresses.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MemoryServiceAddresses {
    pub link: Option<u32>,
    pub addresses: BTreeSet<IpAddr>,
    /// Requests made (adds, deletes, link changes), to assert incremental costs.
    pub writes: usize,
}

impl ServiceAddressApi for MemoryServiceAddresses {
    fn ensure_link(&mut self) -> io::Result<u32> {
        if self.link.is_none() {
            self.writes += 1;
            self.link = Some(7);
        }
        Ok(self.link.unwrap_or(7))
    }

    fn list_addresses(&mut self, index: u32) -> io::Result<Vec<IpAddr>> {
        match self.link {
            Some(i) if i == index => Ok(self.addresses.iter().copied().collect()),
            _ => Err(io::Error::from_raw_os_error(nix::libc::ENODEV)),
        }
    }

    fn add_address(&mut self, index: u32, ip: IpAddr) -> io::Result<()> {
        if self.link != Some(index) {
            return Err(io::Error::from_raw_os_error(nix::libc::ENODEV));
        }
        self.writes += 1;
        self.addresses.insert(ip);
        Ok(())
    }

    fn del_address(&mut self, index: u32, ip: IpAddr) -> io::Result<()> {
        if self.link != Some(index) {
            return Err(io::Error::from_raw_os_error(nix::libc::ENODEV));
        }
        self.writes += 1;
        self.addresses.remove(&ip);
        Ok(())
    }

    fn delete_link(&mut self) -> io::Result<()> {
        if self.link.take().is_some() {
            self.writes += 1;
        }
        self.addresses.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().expect("ip")).collect()
    }

    #[test]
    fn plan_adds_missing_and_deletes_stale() {
        type Row<'a> = (&'a [&'a str], &'a [&'a str], &'a [&'a str], &'a [&'a str]);
        let rows: [Row<'_>; 3] = [
            (&["10.96.0.1"], &[], &["10.96.0.1"], &[]),
            (
                &["10.96.0.1"],
                &["10.96.0.1", "10.96.0.9"],
                &[],
                &["10.96.0.9"],
            ),
            (
                &["fd00::1", "10.96.0.2"],
                &["10.96.0.1"],
                &["10.96.0.2", "fd00::1"],
                &["10.96.0.1"],
            ),
        ];
        for (desired, listed, add, del) in rows {
            let desired: BTreeSet<IpAddr> = ips(desired).into_iter().collect();
            assert_eq!(
                plan_addresses(&desired, &ips(listed)),
                (ips(add), ips(del)),
                "{desired:?} from {listed:?}"
            );
        }
    }
}
