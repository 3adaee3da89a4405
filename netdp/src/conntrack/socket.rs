//! The ctnetlink executor: dumps the entries of one family, deletes entries by original tuple
//! (many delete requests per datagram, one ACK each), and [`ConntrackApi::delete`], which
//! applies [`FlowFilter`]s by listing and deleting what they match (as upstream's netlink
//! library does: the kernel has no "delete by reply source" request).

use std::collections::BTreeSet;
use std::io;
use std::net::IpAddr;

use netlink_sys::protocols::NETLINK_NETFILTER;

use super::error::ConntrackError;
use super::wire::{NFGENMSG_LEN, encode_delete, encode_dump, encode_filtered_dump, parse_flow};
use super::{Flow, FlowFilter, protocol_number};
use crate::model::IpFamily;
use crate::netlink_socket::{ExchangeError, NlSocket};
use crate::netlink_wire::Writer;

const ENOENT: i32 = 2;

/// Above this many distinct front ends, [`ConntrackApi::delete`] lists all entries of the
/// protocol once instead of one kernel-filtered dump per front end (each dump walks the
/// whole table in the kernel).
const FILTERED_DUMPS_UP_TO: usize = 16;

/// What the cleanup needs from conntrack; [`Conntrack`] is the kernel, [`super::MemoryConntrack`]
/// a fake.
pub trait ConntrackApi {
    /// Every entry of `family` that has ports (UDP, TCP, SCTP, ...).
    fn list(&self, family: IpFamily) -> Result<Vec<Flow>, ConntrackError>;
    /// Deletes these entries; returns how many were deleted (already gone ones are not
    /// counted and not an error).
    fn delete_flows(&self, flows: &[Flow]) -> Result<usize, ConntrackError>;

    /// The entries of `family` and `protocol` (IANA number), to `dst` (original destination
    /// address and port) when given. The kernel client filters in the kernel.
    fn list_matching(
        &self,
        family: IpFamily,
        protocol: u8,
        dst: Option<(IpAddr, u16)>,
    ) -> Result<Vec<Flow>, ConntrackError> {
        Ok(self
            .list(family)?
            .into_iter()
            .filter(|f| {
                f.protocol == protocol
                    && dst.is_none_or(|(ip, port)| {
                        f.original.dst == ip && f.original.dst_port == port
                    })
            })
            .collect())
    }

    /// Deletes every entry one of `filters` matches; returns how many were deleted.
    fn delete(&self, filters: &[FlowFilter]) -> Result<usize, ConntrackError> {
        let mut stale: BTreeSet<Flow> = BTreeSet::new();
        for family in [IpFamily::V4, IpFamily::V6] {
            let wanted: Vec<&FlowFilter> = filters.iter().filter(|f| f.family == family).collect();
            let front_ends: BTreeSet<(u8, IpAddr, u16)> = wanted
                .iter()
                .map(|f| (protocol_number(f.protocol), f.orig_dst, f.orig_dst_port))
                .collect();
            let candidates = if front_ends.len() <= FILTERED_DUMPS_UP_TO {
                let mut all = Vec::new();
                for (protocol, ip, port) in &front_ends {
                    all.extend(self.list_matching(family, *protocol, Some((*ip, *port)))?);
                }
                all
            } else {
                let protocols: BTreeSet<u8> = front_ends.iter().map(|f| f.0).collect();
                let mut all = Vec::new();
                for protocol in protocols {
                    all.extend(self.list_matching(family, protocol, None)?);
                }
                all
            };
            stale.extend(
                candidates
                    .into_iter()
                    .filter(|flow| wanted.iter().any(|f| f.matches(flow))),
            );
        }
        if stale.is_empty() {
            return Ok(0);
        }
        self.delete_flows(&stale.into_iter().collect::<Vec<_>>())
    }
}

/// A ctnetlink connection in the network namespace it was opened in. Blocking; requests from
/// several threads are serialised.
#[derive(Debug)]
pub struct Conntrack {
    socket: NlSocket,
}

impl Conntrack {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<Self, ConntrackError> {
        let socket = NlSocket::open(NETLINK_NETFILTER).map_err(ConntrackError::Socket)?;
        Ok(Self { socket })
    }
}

fn exchange_error(e: ExchangeError) -> ConntrackError {
    match e {
        ExchangeError::Send(e) => ConntrackError::Send(e),
        ExchangeError::Receive(e) => ConntrackError::Receive(e),
        ExchangeError::Refused(e) => ConntrackError::List(e),
        ExchangeError::Malformed(m) => ConntrackError::Malformed(m),
    }
}

impl Conntrack {
    /// The entries the kernel's dump filter returns for `protocol` (and `dst`), without the
    /// re-check [`ConntrackApi::list_matching`] adds: shows whether the kernel filters.
    pub fn list_kernel_filtered(
        &self,
        family: IpFamily,
        protocol: u8,
        dst: Option<(IpAddr, u16)>,
    ) -> Result<Vec<Flow>, ConntrackError> {
        self.dump(|w, seq| encode_filtered_dump(w, family, protocol, dst, seq))
    }

    fn dump(&self, encode: impl FnOnce(&mut Writer, u32)) -> Result<Vec<Flow>, ConntrackError> {
        let replies = self.socket.dump(encode).map_err(exchange_error)?;
        let mut out = Vec::with_capacity(replies.len());
        for reply in &replies {
            if let Some(flow) = parse_flow(reply.get(NFGENMSG_LEN..).unwrap_or(&[]))? {
                out.push(flow);
            }
        }
        Ok(out)
    }
}

impl ConntrackApi for Conntrack {
    fn list(&self, family: IpFamily) -> Result<Vec<Flow>, ConntrackError> {
        self.dump(|w, seq| encode_dump(w, family, seq))
    }

    fn list_matching(
        &self,
        family: IpFamily,
        protocol: u8,
        dst: Option<(IpAddr, u16)>,
    ) -> Result<Vec<Flow>, ConntrackError> {
        // The kernel narrows the dump; matching again here keeps old kernels (which ignore
        // the filter) correct.
        Ok(self
            .list_kernel_filtered(family, protocol, dst)?
            .into_iter()
            .filter(|f| {
                f.protocol == protocol
                    && dst.is_none_or(|(ip, port)| {
                        f.original.dst == ip && f.original.dst_port == port
                    })
            })
            .collect())
    }

    fn delete_flows(&self, flows: &[Flow]) -> Result<usize, ConntrackError> {
        let acks = self
            .socket
            .acked(flows.len(), |w, i, seq| encode_delete(w, &flows[i], seq))
            .map_err(exchange_error)?;
        let mut deleted = 0;
        for ack in acks {
            match ack.errno {
                0 => deleted += 1,
                ENOENT => {} // expired or deleted meanwhile
                errno => {
                    return Err(ConntrackError::Delete {
                        source: io::Error::from_raw_os_error(errno),
                        extack: ack.extack,
                    });
                }
            }
        }
        Ok(deleted)
    }
}

/// A shared client (the sync loop's observer and a test holding the same fake).
impl<T: ConntrackApi + ?Sized> ConntrackApi for std::sync::Arc<T> {
    fn list(&self, family: IpFamily) -> Result<Vec<Flow>, ConntrackError> {
        (**self).list(family)
    }

    fn delete_flows(&self, flows: &[Flow]) -> Result<usize, ConntrackError> {
        (**self).delete_flows(flows)
    }

    fn list_matching(
        &self,
        family: IpFamily,
        protocol: u8,
        dst: Option<(IpAddr, u16)>,
    ) -> Result<Vec<Flow>, ConntrackError> {
        (**self).list_matching(family, protocol, dst)
    }
}
