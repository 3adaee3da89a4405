//! The NETLINK_NETFILTER socket: sends a [`Batch`] as one datagram (so the kernel applies it as
//! one transaction), matches one ACK per message, and runs dump requests (list sets/elements).

use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;

use super::batch::{Batch, number_messages};
use super::error::NftError;
use super::list::{
    ListedChain, ListedElement, ListedSet, parse_chain, parse_elements, parse_set, parse_table,
};
use super::objects::Family;
use super::sys::*;
use super::wire::{Message, Writer, attrs, messages, string};

/// How long to wait for the kernel's answers before giving up.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Room for one ACK datagram in the receive buffer (skb overhead included).
const ACK_TRUESIZE: usize = 2048;
const RECV_BUF: usize = 64 * 1024;
/// Batches up to this many messages get an ACK for every message. Larger ones (full syncs)
/// get error reports plus one final ACK: a success ACK costs ~1 KiB of socket memory until read,
/// which would be ~200 MiB for a 10k-Service ruleset.
const ACK_EVERY_MESSAGE_UP_TO: usize = 4096;

/// A connection to nf_tables in the network namespace the socket was opened in.
///
/// Blocking: call it from a dedicated thread or `spawn_blocking`. Requests from several threads
/// are serialised (one exchange at a time).
#[derive(Debug)]
pub struct NftSocket {
    socket: Socket,
    exchange: Mutex<()>,
    seq: AtomicU32,
    sndbuf: AtomicUsize,
    rcvbuf: AtomicUsize,
}

/// The operations a dataplane sync needs from nf_tables; [`NftSocket`] implements it, tests of
/// callers can record instead.
pub trait NftApi {
    /// Applies `batch` atomically.
    fn apply(&self, batch: &Batch) -> Result<(), NftError>;
    /// The tables of one family.
    fn list_tables(&self, family: Family) -> Result<Vec<String>, NftError>;
    /// The chains of one table.
    fn list_chains(&self, family: Family, table: &str) -> Result<Vec<ListedChain>, NftError>;
    /// The sets and maps of one table.
    fn list_sets(&self, family: Family, table: &str) -> Result<Vec<ListedSet>, NftError>;
    /// The elements of one set or map.
    fn list_elements(
        &self,
        family: Family,
        table: &str,
        set: &str,
    ) -> Result<Vec<ListedElement>, NftError>;
}

impl NftSocket {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<Self, NftError> {
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(NftError::Socket)?;
        // Port 0: the kernel picks one (no `getsockname`: nothing here needs to know it).
        socket
            .bind(&SocketAddr::new(0, 0))
            .map_err(NftError::Socket)?;
        // Short ACKs (no copy of the request) and the kernel's error text when it has one.
        socket.set_cap_ack(true).map_err(NftError::Socket)?;
        socket.set_ext_ack(true).map_err(NftError::Socket)?;
        setsockopt(
            &socket,
            sockopt::ReceiveTimeout,
            &TimeVal::new(
                REPLY_TIMEOUT.as_secs() as _,
                REPLY_TIMEOUT.subsec_micros() as _,
            ),
        )
        .map_err(|e| NftError::Socket(e.into()))?;
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(1);
        Ok(Self {
            socket,
            exchange: Mutex::new(()),
            seq: AtomicU32::new(seed),
            sndbuf: AtomicUsize::new(0),
            rcvbuf: AtomicUsize::new(0),
        })
    }

    /// Grows the socket buffers so one batch fits in one datagram and all its ACKs can queue.
    fn size_buffers(&self, batch_len: usize, acks: usize) -> Result<(), NftError> {
        let want_snd = batch_len + 64 * 1024;
        if want_snd > self.sndbuf.load(Ordering::Relaxed) {
            set_buf(
                &self.socket,
                sockopt::SndBufForce,
                sockopt::SndBuf,
                want_snd,
            )?;
            self.sndbuf.store(want_snd, Ordering::Relaxed);
        }
        let want_rcv = (acks * ACK_TRUESIZE + 1024 * 1024).min(512 * 1024 * 1024);
        if want_rcv > self.rcvbuf.load(Ordering::Relaxed) {
            set_buf(
                &self.socket,
                sockopt::RcvBufForce,
                sockopt::RcvBuf,
                want_rcv,
            )?;
            self.rcvbuf.store(want_rcv, Ordering::Relaxed);
        }
        Ok(())
    }

    fn recv(&self, buf: &mut Vec<u8>) -> Result<(), io::Error> {
        buf.clear();
        buf.reserve(RECV_BUF);
        self.socket.recv(buf, 0).map(|_| ())
    }

    /// Sends a dump request and collects every reply message's payload.
    fn dump(
        &self,
        msg: u8,
        family: Family,
        what: &str,
        encode: impl Fn(&mut Writer),
    ) -> Result<Vec<Vec<u8>>, NftError> {
        // A dump that raced with a change is inconsistent: try again a few times.
        let mut attempt = 0;
        loop {
            match self.dump_once(msg, family, what, &encode) {
                Err(NftError::DumpInterrupted { .. }) if attempt < 3 => attempt += 1,
                other => return other,
            }
        }
    }

    fn dump_once(
        &self,
        msg: u8,
        family: Family,
        what: &str,
        encode: &impl Fn(&mut Writer),
    ) -> Result<Vec<Vec<u8>>, NftError> {
        let _exchange = self.exchange.lock().unwrap_or_else(|p| p.into_inner());
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let mut w = Writer::default();
        let start = w.begin_msg(
            (NFNL_SUBSYS_NFTABLES << 8) | u16::from(msg),
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
            family.nfproto(),
            0,
        );
        encode(&mut w);
        w.end_msg(start);
        self.socket
            .send(&w.buf, 0)
            .map_err(|source| NftError::Send {
                bytes: w.buf.len(),
                source,
            })?;
        let list_err = |source| NftError::List {
            what: what.to_owned(),
            source,
        };
        let mut out = Vec::new();
        let mut buf = Vec::new();
        let mut interrupted = false;
        let done = |out: Vec<Vec<u8>>, interrupted: bool| {
            if interrupted {
                Err(NftError::DumpInterrupted {
                    what: what.to_owned(),
                })
            } else {
                Ok(out)
            }
        };
        loop {
            self.recv(&mut buf).map_err(list_err)?;
            for message in messages(&buf) {
                let message = message?;
                if message.seq != seq {
                    continue; // a stale answer to an earlier request
                }
                interrupted |= message.flags & NLM_F_DUMP_INTR != 0;
                match message.msg_type {
                    NLMSG_DONE => return done(out, interrupted),
                    NLMSG_ERROR => {
                        let ack = parse_ack(&message)?;
                        if ack.errno != 0 {
                            return Err(list_err(io::Error::from_raw_os_error(ack.errno)));
                        }
                        return done(out, interrupted);
                    }
                    _ => {
                        // Skip the nfgenmsg header.
                        out.push(message.payload.get(NFGENMSG_LEN..).unwrap_or(&[]).to_vec());
                        if message.flags & NLM_F_MULTI == 0 {
                            return done(out, interrupted);
                        }
                    }
                }
            }
        }
    }
}

fn set_buf<F, S>(socket: &Socket, force: F, plain: S, size: usize) -> Result<(), NftError>
where
    F: nix::sys::socket::SetSockOpt<Val = usize>,
    S: nix::sys::socket::SetSockOpt<Val = usize>,
{
    // The *FORCE variants need CAP_NET_ADMIN, which programming nf_tables needs anyway; fall
    // back to the capped plain option otherwise.
    setsockopt(socket, force, &size)
        .or_else(|_| setsockopt(socket, plain, &size))
        .map_err(|e| NftError::Socket(e.into()))
}

impl NftApi for NftSocket {
    fn apply(&self, batch: &Batch) -> Result<(), NftError> {
        let (mut buf, ops) = batch.finish()?;
        if ops.is_empty() {
            return Ok(());
        }
        let _exchange = self.exchange.lock().unwrap_or_else(|p| p.into_inner());
        // Reserve a sequence number for every message, BATCH_BEGIN and BATCH_END included.
        let count = u32::try_from(ops.len() + 2).unwrap_or(u32::MAX);
        let first = self.seq.fetch_add(count, Ordering::Relaxed);
        let ack_all = ops.len() <= ACK_EVERY_MESSAGE_UP_TO;
        let seqs = number_messages(&mut buf, first, ack_all);
        self.size_buffers(buf.len(), if ack_all { ops.len() } else { 1 })?;
        self.socket.send(&buf, 0).map_err(|source| NftError::Send {
            bytes: buf.len(),
            source,
        })?;

        let mut acks = AckTracker::new(first, &seqs, ack_all);
        let mut rbuf = Vec::new();
        while !acks.complete() {
            match self.recv(&mut rbuf) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(NftError::MissingAcks {
                        missing: acks.missing(),
                    });
                }
                Err(e) => return Err(NftError::Receive(e)),
            }
            for message in messages(&rbuf) {
                let message = message?;
                if message.msg_type == NLMSG_ERROR {
                    acks.record(message.seq, parse_ack(&message)?);
                }
            }
        }
        acks.result(|i| batch.describe(i))
    }

    fn list_tables(&self, family: Family) -> Result<Vec<String>, NftError> {
        let what = format!("tables of family {}", family.name());
        let replies = self.dump(NFT_MSG_GETTABLE, family, &what, |_| {})?;
        Ok(replies.iter().filter_map(|r| parse_table(r)).collect())
    }

    fn list_chains(&self, family: Family, table: &str) -> Result<Vec<ListedChain>, NftError> {
        let what = format!("chains of {} {table}", family.name());
        let replies = self.dump(NFT_MSG_GETCHAIN, family, &what, |w| {
            w.str(NFTA_CHAIN_TABLE, table);
        })?;
        Ok(replies
            .iter()
            .filter_map(|r| parse_chain(r, table))
            .collect())
    }

    fn list_sets(&self, family: Family, table: &str) -> Result<Vec<ListedSet>, NftError> {
        let what = format!("sets of {} {table}", family.name());
        let replies = self.dump(NFT_MSG_GETSET, family, &what, |w| {
            w.str(NFTA_SET_TABLE, table);
        })?;
        Ok(replies.iter().filter_map(|r| parse_set(r)).collect())
    }

    fn list_elements(
        &self,
        family: Family,
        table: &str,
        set: &str,
    ) -> Result<Vec<ListedElement>, NftError> {
        let what = format!("elements of {} {table} {set}", family.name());
        let replies = self.dump(NFT_MSG_GETSETELEM, family, &what, |w| {
            w.str(NFTA_SET_ELEM_LIST_TABLE, table);
            w.str(NFTA_SET_ELEM_LIST_SET, set);
        })?;
        let mut out = Vec::new();
        for reply in &replies {
            parse_elements(reply, &mut out);
        }
        Ok(out)
    }
}

/// One `NLMSG_ERROR` answer: 0 is an ACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ack {
    pub(crate) errno: i32,
    pub(crate) extack: Option<String>,
}

pub(crate) fn parse_ack(message: &Message<'_>) -> Result<Ack, NftError> {
    let payload = message.payload;
    let code = payload
        .get(..4)
        .ok_or(NftError::Malformed("short netlink error message"))?;
    let errno = -i32::from_ne_bytes([code[0], code[1], code[2], code[3]]);
    let mut extack = None;
    if message.flags & NLM_F_ACK_TLVS != 0 {
        // With NETLINK_CAP_ACK the request is echoed as its header only.
        let tlvs = payload.get(4 + NLMSG_HDRLEN..).unwrap_or(&[]);
        extack = attrs(tlvs)
            .find(|(ty, _)| *ty == NLMSGERR_ATTR_MSG)
            .map(|(_, text)| string(text));
    }
    Ok(Ack { errno, extack })
}

/// Which messages of a sent batch have been answered, and how. Pure bookkeeping.
#[derive(Debug)]
pub(crate) struct AckTracker {
    begin_seq: u32,
    first_op_seq: u32,
    answered: Vec<Option<Ack>>,
    /// Every message is acknowledged (else only the last one, and failures).
    ack_all: bool,
    remaining: usize,
    batch_refused: Option<Ack>,
}

impl AckTracker {
    pub(crate) fn new(begin_seq: u32, op_seqs: &[u32], ack_all: bool) -> Self {
        Self {
            begin_seq,
            first_op_seq: op_seqs
                .first()
                .copied()
                .unwrap_or(begin_seq.wrapping_add(1)),
            answered: vec![None; op_seqs.len()],
            ack_all,
            remaining: if ack_all {
                op_seqs.len()
            } else {
                op_seqs.len().min(1)
            },
            batch_refused: None,
        }
    }

    pub(crate) fn record(&mut self, seq: u32, ack: Ack) {
        if seq == self.begin_seq {
            // The kernel refused the batch as a whole (it answers on the BATCH_BEGIN header).
            if ack.errno != 0 {
                self.batch_refused = Some(ack);
            }
            return;
        }
        let index = seq.wrapping_sub(self.first_op_seq) as usize;
        let last = index + 1 == self.answered.len();
        if let Some(slot) = self.answered.get_mut(index)
            && slot.is_none()
        {
            *slot = Some(ack);
            if self.ack_all || last {
                self.remaining -= 1;
            }
        }
    }

    pub(crate) fn complete(&self) -> bool {
        self.remaining == 0 || self.batch_refused.is_some()
    }

    pub(crate) fn missing(&self) -> usize {
        self.remaining
    }

    /// `Ok` when every message was acknowledged with 0; else the first refusal, named.
    pub(crate) fn result(&self, describe: impl Fn(usize) -> String) -> Result<(), NftError> {
        if let Some(ack) = &self.batch_refused {
            return Err(NftError::Rejected {
                message: "the batch".to_owned(),
                source: io::Error::from_raw_os_error(ack.errno),
                extack: ack.extack.clone(),
                other_failures: 0,
            });
        }
        let failures: Vec<(usize, &Ack)> = self
            .answered
            .iter()
            .enumerate()
            .filter_map(|(i, a)| a.as_ref().filter(|a| a.errno != 0).map(|a| (i, a)))
            .collect();
        match failures.first() {
            None if self.remaining == 0 => Ok(()),
            None => Err(NftError::MissingAcks {
                missing: self.remaining,
            }),
            Some((index, ack)) => Err(NftError::Rejected {
                message: describe(*index),
                source: io::Error::from_raw_os_error(ack.errno),
                extack: ack.extack.clone(),
                other_failures: failures.len() - 1,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(errno: i32) -> Ack {
        Ack {
            errno,
            extack: None,
        }
    }

    #[test]
    fn ack_tracking_table() {
        // (acks received as (seq, errno), expected outcome)
        let seqs = [11, 12, 13];
        let cases: &[(&[(u32, i32)], &str)] = &[
            (&[(11, 0), (12, 0), (13, 0)], "ok"),
            (&[(13, 0), (11, 0), (12, 0)], "ok"),
            (&[(11, 0), (12, 0)], "missing"),
            (&[(11, 0), (12, 0), (13, 2)], "rejected op2 ENOENT"),
            (&[(11, 17), (12, 0), (13, 2)], "rejected op0 EEXIST +1"),
            (&[(10, 22)], "rejected batch"),
            (&[(99, 0), (11, 0), (12, 0), (13, 0)], "ok"),
        ];
        for (received, want) in cases {
            let mut t = AckTracker::new(10, &seqs, true);
            for (seq, errno) in *received {
                t.record(*seq, ack(*errno));
            }
            let got = match t.result(|i| format!("op{i}")) {
                Ok(()) => "ok".to_owned(),
                Err(NftError::MissingAcks { .. }) => "missing".to_owned(),
                Err(NftError::Rejected {
                    message,
                    source,
                    other_failures,
                    ..
                }) => {
                    let name = match source.raw_os_error() {
                        Some(2) => "ENOENT",
                        Some(17) => "EEXIST",
                        Some(22) => "",
                        _ => "?",
                    };
                    let mut s = format!("rejected {message} {name}");
                    if other_failures > 0 {
                        s.push_str(&format!(" +{other_failures}"));
                    }
                    s.replace("the batch ", "batch")
                }
                Err(e) => format!("{e}"),
            };
            assert_eq!(got, *want, "{received:?}");
        }
    }

    #[test]
    fn large_batches_complete_on_the_last_ack_and_still_report_errors() {
        let seqs = [11, 12, 13];
        let mut t = AckTracker::new(10, &seqs, false);
        assert!(!t.complete());
        t.record(12, ack(2));
        assert!(!t.complete(), "an error is not the end of the answers");
        t.record(13, ack(0));
        assert!(t.complete());
        let err = t.result(|i| format!("op{i}")).expect_err("op1 failed");
        assert!(err.to_string().contains("op1"), "{err}");

        let mut t = AckTracker::new(10, &seqs, false);
        t.record(13, ack(0));
        assert!(t.complete());
        assert!(t.result(|i| format!("op{i}")).is_ok());
    }

    #[test]
    fn ack_with_extended_message_is_parsed() {
        let mut payload = (-2i32).to_ne_bytes().to_vec();
        payload.extend_from_slice(&[0u8; NLMSG_HDRLEN]);
        let mut w = Writer::default();
        w.str(NLMSGERR_ATTR_MSG, "no such set");
        payload.extend_from_slice(&w.buf);
        let message = Message {
            msg_type: NLMSG_ERROR,
            flags: NLM_F_ACK_TLVS,
            seq: 1,
            payload: &payload,
        };
        assert_eq!(
            parse_ack(&message).expect("parses"),
            Ack {
                errno: 2,
                extack: Some("no such set".to_owned())
            }
        );
    }
}
