//! The ctnetlink executor: dumps the entries of one family, deletes entries by original tuple
//! (many delete requests per datagram, one ACK each), and [`ConntrackApi::delete`], which
//! applies [`FlowFilter`]s by listing and deleting what they match (as upstream's netlink
//! library does: the kernel has no "delete by reply source" request).

use std::io;

use netlink_sys::protocols::NETLINK_NETFILTER;

use super::error::ConntrackError;
use super::wire::{NFGENMSG_LEN, encode_delete, encode_dump, parse_flow};
use super::{Flow, FlowFilter};
use crate::model::IpFamily;
use crate::netlink_socket::{ExchangeError, NlSocket};

const ENOENT: i32 = 2;

/// What the cleanup needs from conntrack; [`Conntrack`] is the kernel, [`super::MemoryConntrack`]
/// a fake.
pub trait ConntrackApi {
    /// Every entry of `family` that has ports (UDP, TCP, SCTP, ...).
    fn list(&self, family: IpFamily) -> Result<Vec<Flow>, ConntrackError>;
    /// Deletes these entries; returns how many were deleted (already gone ones are not
    /// counted and not an error).
    fn delete_flows(&self, flows: &[Flow]) -> Result<usize, ConntrackError>;

    /// Deletes every entry one of `filters` matches; returns how many were deleted. Lists each
    /// family the filters name once.
    fn delete(&self, filters: &[FlowFilter]) -> Result<usize, ConntrackError> {
        let mut deleted = 0;
        for family in [IpFamily::V4, IpFamily::V6] {
            let wanted: Vec<&FlowFilter> = filters.iter().filter(|f| f.family == family).collect();
            if wanted.is_empty() {
                continue;
            }
            let stale: Vec<Flow> = self
                .list(family)?
                .into_iter()
                .filter(|flow| wanted.iter().any(|f| f.matches(flow)))
                .collect();
            if !stale.is_empty() {
                deleted += self.delete_flows(&stale)?;
            }
        }
        Ok(deleted)
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

impl ConntrackApi for Conntrack {
    fn list(&self, family: IpFamily) -> Result<Vec<Flow>, ConntrackError> {
        let replies = self
            .socket
            .dump(|w, seq| encode_dump(w, family, seq))
            .map_err(exchange_error)?;
        let mut out = Vec::with_capacity(replies.len());
        for reply in &replies {
            if let Some(flow) = parse_flow(reply.get(NFGENMSG_LEN..).unwrap_or(&[]))? {
                out.push(flow);
            }
        }
        Ok(out)
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
