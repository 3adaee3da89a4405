//! A blocking netlink socket shared by the conntrack and IPVS clients: one dump exchange
//! (request → every reply message until `NLMSG_DONE`), and acknowledged requests sent many per
//! datagram with one ACK each. Requests from several threads are serialised. Encoding is the
//! callers' ([`crate::netlink_wire`]).

use std::collections::HashMap;
use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use netlink_sys::{Socket, SocketAddr};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;

use crate::netlink_wire::{
    Ack, Malformed, NLM_F_MULTI, NLMSG_DONE, NLMSG_ERROR, Writer, messages, parse_ack,
};

const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
const RECV_BUF: usize = 256 * 1024;
/// Acknowledged requests per datagram: their ACKs must fit the receive buffer.
const REQUESTS_PER_DATAGRAM: usize = 128;

/// What can go wrong in an exchange; the clients map it to their own errors.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExchangeError {
    #[error("sending: {0}")]
    Send(#[source] io::Error),
    #[error("receiving: {0}")]
    Receive(#[source] io::Error),
    /// The kernel answered the dump request with an error.
    #[error("the kernel refused the dump: {0}")]
    Refused(#[source] io::Error),
    #[error(transparent)]
    Malformed(#[from] Malformed),
}

#[derive(Debug)]
pub(crate) struct NlSocket {
    socket: Socket,
    exchange: Mutex<()>,
    seq: AtomicU32,
}

impl NlSocket {
    /// Opens a `protocol` socket in the calling thread's network namespace.
    pub(crate) fn open(protocol: isize) -> io::Result<Self> {
        let mut socket = Socket::new(protocol)?;
        // Port 0: the kernel picks one (no `getsockname`: nothing here needs to know it).
        socket.bind(&SocketAddr::new(0, 0))?;
        socket.set_cap_ack(true)?;
        socket.set_ext_ack(true)?;
        let timeout = TimeVal::new(REPLY_TIMEOUT.as_secs() as _, 0);
        setsockopt(&socket, sockopt::ReceiveTimeout, &timeout).map_err(io::Error::from)?;
        setsockopt(&socket, sockopt::RcvBuf, &RECV_BUF).map_err(io::Error::from)?;
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

    fn recv(&self, buf: &mut Vec<u8>) -> Result<(), ExchangeError> {
        buf.clear();
        buf.reserve(RECV_BUF);
        self.socket
            .recv(buf, 0)
            .map(|_| ())
            .map_err(ExchangeError::Receive)
    }

    /// Sends the request `encode` writes (given its sequence number) and returns the payload
    /// (after the netlink header) of every answer. Also serves single-answer requests.
    pub(crate) fn dump(
        &self,
        encode: impl FnOnce(&mut Writer, u32),
    ) -> Result<Vec<Vec<u8>>, ExchangeError> {
        let _exchange = self.exchange.lock().unwrap_or_else(|p| p.into_inner());
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let mut w = Writer::default();
        encode(&mut w, seq);
        self.socket.send(&w.buf, 0).map_err(ExchangeError::Send)?;
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
                            return Err(ExchangeError::Refused(io::Error::from_raw_os_error(
                                ack.errno,
                            )));
                        }
                        return Ok(out);
                    }
                    _ => {
                        out.push(message.payload.to_vec());
                        if message.flags & NLM_F_MULTI == 0 {
                            return Ok(out);
                        }
                    }
                }
            }
        }
    }

    /// Sends `count` acknowledged requests (`encode(writer, index, seq)` writes request
    /// `index`), many per datagram, and returns each one's answer in order.
    pub(crate) fn acked(
        &self,
        count: usize,
        mut encode: impl FnMut(&mut Writer, usize, u32),
    ) -> Result<Vec<Ack>, ExchangeError> {
        let _exchange = self.exchange.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::with_capacity(count);
        let mut start = 0;
        while start < count {
            let end = (start + REQUESTS_PER_DATAGRAM).min(count);
            let n = u32::try_from(end - start).unwrap_or(u32::MAX);
            let first = self.seq.fetch_add(n, Ordering::Relaxed);
            let mut w = Writer::default();
            let mut pending = HashMap::with_capacity(end - start);
            for (i, seq) in (start..end).zip((0u32..).map(|k| first.wrapping_add(k))) {
                encode(&mut w, i, seq);
                pending.insert(seq, i - start);
            }
            self.socket.send(&w.buf, 0).map_err(ExchangeError::Send)?;
            let mut answers: Vec<Option<Ack>> = vec![None; end - start];
            let mut buf = Vec::new();
            while !pending.is_empty() {
                self.recv(&mut buf)?;
                for message in messages(&buf) {
                    let message = message?;
                    if message.msg_type != NLMSG_ERROR {
                        continue;
                    }
                    if let Some(slot) = pending.remove(&message.seq) {
                        answers[slot] = Some(parse_ack(&message)?);
                    }
                }
            }
            out.extend(answers.into_iter().flatten());
            start = end;
        }
        Ok(out)
    }
}
