//! The ctnetlink socket: dumps the entries of one family, deletes entries by original tuple
//! (many delete requests per datagram, one ACK each), and [`ConntrackApi::delete`], which
//! applies [`FlowFilter`]s by listing and deleting what they match (as upstream's netlink
//! library does: the kernel has no "delete by reply source" request).

use std::collections::HashMap;
use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;

use super::error::ConntrackError;
use super::wire::{NFGENMSG_LEN, encode_delete, encode_dump, parse_flow};
use super::{Flow, FlowFilter};
use crate::model::IpFamily;
use crate::netlink_wire::{NLM_F_MULTI, NLMSG_DONE, NLMSG_ERROR, Writer, messages, parse_ack};

const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
const RECV_BUF: usize = 256 * 1024;
/// Delete requests per datagram: their ACKs must fit the receive buffer.
const DELETES_PER_DATAGRAM: usize = 128;
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
    socket: Socket,
    exchange: Mutex<()>,
    seq: AtomicU32,
}

impl Conntrack {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<Self, ConntrackError> {
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(ConntrackError::Socket)?;
        socket.bind_auto().map_err(ConntrackError::Socket)?;
        socket.set_cap_ack(true).map_err(ConntrackError::Socket)?;
        socket.set_ext_ack(true).map_err(ConntrackError::Socket)?;
        let timeout = TimeVal::new(REPLY_TIMEOUT.as_secs() as _, 0);
        setsockopt(&socket, sockopt::ReceiveTimeout, &timeout)
            .map_err(|e| ConntrackError::Socket(e.into()))?;
        // Room for the ACKs of one datagram of deletes; the capped plain option suffices.
        setsockopt(&socket, sockopt::RcvBuf, &RECV_BUF)
            .map_err(|e| ConntrackError::Socket(e.into()))?;
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(1);
        Ok(Self {
            socket,
            exchange: Mutex::new(()),
            seq: AtomicU32::new(seed),
        })
    }

    fn recv(&self, buf: &mut Vec<u8>) -> Result<(), ConntrackError> {
        buf.clear();
        buf.reserve(RECV_BUF);
        self.socket
            .recv(buf, 0)
            .map(|_| ())
            .map_err(ConntrackError::Receive)
    }

    /// Sends one datagram of deletes and counts the successful ACKs.
    fn delete_chunk(&self, flows: &[Flow]) -> Result<usize, ConntrackError> {
        let count = u32::try_from(flows.len()).unwrap_or(u32::MAX);
        let first = self.seq.fetch_add(count, Ordering::Relaxed);
        let mut w = Writer::default();
        let mut pending = HashMap::with_capacity(flows.len());
        for (i, flow) in (0u32..).zip(flows) {
            let seq = first.wrapping_add(i);
            encode_delete(&mut w, flow, seq);
            pending.insert(seq, ());
        }
        self.socket.send(&w.buf, 0).map_err(ConntrackError::Send)?;
        let mut deleted = 0;
        let mut failure = None;
        let mut buf = Vec::new();
        while !pending.is_empty() {
            self.recv(&mut buf)?;
            for message in messages(&buf) {
                let message = message?;
                if message.msg_type != NLMSG_ERROR || pending.remove(&message.seq).is_none() {
                    continue;
                }
                let ack = parse_ack(&message)?;
                match ack.errno {
                    0 => deleted += 1,
                    ENOENT => {} // expired or deleted meanwhile
                    errno => {
                        failure.get_or_insert(ConntrackError::Delete {
                            source: io::Error::from_raw_os_error(errno),
                            extack: ack.extack,
                        });
                    }
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(deleted),
        }
    }
}

impl ConntrackApi for Conntrack {
    fn list(&self, family: IpFamily) -> Result<Vec<Flow>, ConntrackError> {
        let _exchange = self.exchange.lock().unwrap_or_else(|p| p.into_inner());
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let mut w = Writer::default();
        encode_dump(&mut w, family, seq);
        self.socket.send(&w.buf, 0).map_err(ConntrackError::Send)?;
        let mut out = Vec::new();
        let mut buf = Vec::new();
        loop {
            self.recv(&mut buf)?;
            for message in messages(&buf) {
                let message = message?;
                if message.seq != seq {
                    continue;
                }
                match message.msg_type {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let ack = parse_ack(&message)?;
                        if ack.errno != 0 {
                            return Err(ConntrackError::List(io::Error::from_raw_os_error(
                                ack.errno,
                            )));
                        }
                        return Ok(out);
                    }
                    _ => {
                        let body = message.payload.get(NFGENMSG_LEN..).unwrap_or(&[]);
                        if let Some(flow) = parse_flow(body)? {
                            out.push(flow);
                        }
                        if message.flags & NLM_F_MULTI == 0 {
                            return Ok(out);
                        }
                    }
                }
            }
        }
    }

    fn delete_flows(&self, flows: &[Flow]) -> Result<usize, ConntrackError> {
        let _exchange = self.exchange.lock().unwrap_or_else(|p| p.into_inner());
        let mut deleted = 0;
        for chunk in flows.chunks(DELETES_PER_DATAGRAM) {
            deleted += self.delete_chunk(chunk)?;
        }
        Ok(deleted)
    }
}
