//! The netlink byte layer shared by the conntrack (ctnetlink) and IPVS (generic netlink)
//! clients: writing a message with a family header and (nested) attributes, splitting a
//! datagram into messages, iterating attributes, and reading `NLMSG_ERROR` answers. Pure; no
//! sockets. (The nf_tables client keeps its own copy in `nft::wire`, which is private to it.)
//!
//! Integer byte order is the caller's choice per attribute: ctnetlink wants network order,
//! IPVS host order except ports; the netlink header itself is host order.

/// `struct nlmsghdr` is 16 bytes.
pub(crate) const NLMSG_HDRLEN: usize = 16;
pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;
pub(crate) const NLM_F_REQUEST: u16 = 0x1;
pub(crate) const NLM_F_MULTI: u16 = 0x2;
pub(crate) const NLM_F_ACK: u16 = 0x4;
pub(crate) const NLM_F_DUMP: u16 = 0x300;
/// Set in an error message's flags when extended-ack attributes follow.
pub(crate) const NLM_F_ACK_TLVS: u16 = 0x200;
pub(crate) const NLA_F_NESTED: u16 = 0x8000;
pub(crate) const NLA_TYPE_MASK: u16 = 0x3fff;
pub(crate) const NLMSGERR_ATTR_MSG: u16 = 1;

/// Malformed netlink data from the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed netlink data: {0}")]
pub struct Malformed(pub &'static str);

/// Rounds up to the 4-byte netlink alignment.
pub(crate) const fn align4(len: usize) -> usize {
    (len + 3) & !3
}

/// Appends netlink messages and attributes to a byte buffer.
#[derive(Debug, Default, Clone)]
pub(crate) struct Writer {
    pub(crate) buf: Vec<u8>,
}

impl Writer {
    /// Starts a message: the netlink header (length patched by [`Self::end_msg`], port id 0 =
    /// the kernel) followed by `family_header` (`nfgenmsg`, `genlmsghdr`, ...). Returns its
    /// offset.
    pub(crate) fn begin_msg(
        &mut self,
        msg_type: u16,
        flags: u16,
        seq: u32,
        family_header: &[u8],
    ) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.extend_from_slice(&msg_type.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.extend_from_slice(family_header);
        self.pad();
        start
    }

    /// Writes the final length of the message started at `start`.
    pub(crate) fn end_msg(&mut self, start: usize) {
        let len = u32::try_from(self.buf.len() - start).unwrap_or(u32::MAX);
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    pub(crate) fn attr(&mut self, ty: u16, data: &[u8]) {
        // Payloads written here are addresses, ports and names: far below 64 KiB.
        let len16 = u16::try_from(4 + data.len()).unwrap_or(u16::MAX);
        self.buf.extend_from_slice(&len16.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
    }

    pub(crate) fn u8(&mut self, ty: u16, value: u8) {
        self.attr(ty, &[value]);
    }

    pub(crate) fn u16_be(&mut self, ty: u16, value: u16) {
        self.attr(ty, &value.to_be_bytes());
    }

    pub(crate) fn u16_ne(&mut self, ty: u16, value: u16) {
        self.attr(ty, &value.to_ne_bytes());
    }

    pub(crate) fn u32_ne(&mut self, ty: u16, value: u32) {
        self.attr(ty, &value.to_ne_bytes());
    }

    pub(crate) fn u32_be(&mut self, ty: u16, value: u32) {
        self.attr(ty, &value.to_be_bytes());
    }

    pub(crate) fn u64_be(&mut self, ty: u16, value: u64) {
        self.attr(ty, &value.to_be_bytes());
    }

    /// A NUL-terminated string attribute.
    pub(crate) fn str(&mut self, ty: u16, value: &str) {
        // Names: far below 64 KiB.
        let len16 = u16::try_from(4 + value.len() + 1).unwrap_or(u16::MAX);
        self.buf.extend_from_slice(&len16.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(value.as_bytes());
        self.buf.push(0);
        self.pad();
    }

    /// Starts a nested attribute (with `NLA_F_NESTED`); returns its offset for
    /// [`Self::end_nested`].
    pub(crate) fn begin_nested(&mut self, ty: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        start
    }

    /// Closes a nested attribute. The nests written here hold a few small attributes.
    pub(crate) fn end_nested(&mut self, start: usize) {
        let len16 = u16::try_from(self.buf.len() - start).unwrap_or(u16::MAX);
        self.buf[start..start + 2].copy_from_slice(&len16.to_ne_bytes());
    }

    /// Closes a nested attribute that may grow large (element lists); `Err(len)` when its
    /// content exceeds the 16-bit attribute length.
    pub(crate) fn end_nested_checked(&mut self, start: usize) -> Result<(), usize> {
        let len = self.buf.len() - start;
        let len16 = u16::try_from(len).map_err(|_| len)?;
        self.buf[start..start + 2].copy_from_slice(&len16.to_ne_bytes());
        Ok(())
    }

    fn pad(&mut self) {
        let padded = align4(self.buf.len());
        self.buf.resize(padded, 0);
    }
}

/// One netlink message as read from the socket.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Message<'a> {
    pub(crate) msg_type: u16,
    pub(crate) flags: u16,
    pub(crate) seq: u32,
    /// Everything after the 16-byte header.
    pub(crate) payload: &'a [u8],
}

/// Splits a datagram into netlink messages.
pub(crate) fn messages(mut data: &[u8]) -> impl Iterator<Item = Result<Message<'_>, Malformed>> {
    std::iter::from_fn(move || {
        if data.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
        if len < NLMSG_HDRLEN || len > data.len() {
            data = &[];
            return Some(Err(Malformed("netlink message length out of bounds")));
        }
        let message = Message {
            msg_type: u16::from_ne_bytes([data[4], data[5]]),
            flags: u16::from_ne_bytes([data[6], data[7]]),
            seq: u32::from_ne_bytes([data[8], data[9], data[10], data[11]]),
            payload: &data[NLMSG_HDRLEN..len],
        };
        data = &data[align4(len).min(data.len())..];
        Some(Ok(message))
    })
}

/// Iterates over attributes: `(type without flags, payload)`. Stops at the first malformed one.
pub(crate) fn attrs(mut data: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if data.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([data[0], data[1]]) as usize;
        let ty = u16::from_ne_bytes([data[2], data[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > data.len() {
            return None;
        }
        let payload = &data[4..len];
        data = &data[align4(len).min(data.len())..];
        Some((ty, payload))
    })
}

/// The payload of the first attribute of type `ty`.
pub(crate) fn find_attr(data: &[u8], ty: u16) -> Option<&[u8]> {
    attrs(data).find(|(t, _)| *t == ty).map(|(_, p)| p)
}

pub(crate) fn be16(data: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(data.get(..2)?.try_into().ok()?))
}

pub(crate) fn ne16(data: &[u8]) -> Option<u16> {
    Some(u16::from_ne_bytes(data.get(..2)?.try_into().ok()?))
}

pub(crate) fn be32(data: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(data.get(..4)?.try_into().ok()?))
}

pub(crate) fn be64(data: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(data.get(..8)?.try_into().ok()?))
}

pub(crate) fn ne32(data: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(data.get(..4)?.try_into().ok()?))
}

/// A NUL-terminated string attribute, without its terminator.
pub(crate) fn string(data: &[u8]) -> String {
    let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    String::from_utf8_lossy(&data[..end]).into_owned()
}

/// One `NLMSG_ERROR` answer: errno 0 is an ACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ack {
    /// Positive errno (0 = success).
    pub(crate) errno: i32,
    pub(crate) extack: Option<String>,
}

/// Reads an `NLMSG_ERROR` message (sent on a socket with `NETLINK_CAP_ACK`).
pub(crate) fn parse_ack(message: &Message<'_>) -> Result<Ack, Malformed> {
    let code = message
        .payload
        .get(..4)
        .ok_or(Malformed("short netlink error message"))?;
    let errno = -i32::from_ne_bytes([code[0], code[1], code[2], code[3]]);
    let mut extack = None;
    if message.flags & NLM_F_ACK_TLVS != 0 {
        let tlvs = message.payload.get(4 + NLMSG_HDRLEN..).unwrap_or(&[]);
        extack = find_attr(tlvs, NLMSGERR_ATTR_MSG).map(string);
    }
    Ok(Ack { errno, extack })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_with_family_header_and_nested_attributes_round_trips() {
        let mut w = Writer::default();
        let m = w.begin_msg(0x0102, NLM_F_REQUEST | NLM_F_ACK, 7, &[2, 0, 0, 0]);
        let n = w.begin_nested(1);
        w.str(2, "ab");
        w.u16_be(3, 80);
        w.end_nested(n);
        w.end_msg(m);
        assert_eq!(w.buf.len(), 16 + 4 + 4 + 8 + 8);
        let msg = messages(&w.buf).next().expect("one").expect("well formed");
        assert_eq!((msg.msg_type, msg.flags, msg.seq), (0x0102, 5, 7));
        assert_eq!(&msg.payload[..4], &[2, 0, 0, 0]);
        let (ty, inner) = attrs(&msg.payload[4..]).next().expect("nest");
        assert_eq!(ty, 1);
        assert_eq!(string(find_attr(inner, 2).expect("name")), "ab");
        assert_eq!(be16(find_attr(inner, 3).expect("port")), Some(80));
    }

    #[test]
    fn error_message_is_an_errno_and_zero_is_an_ack() {
        let mut w = Writer::default();
        let m = w.begin_msg(NLMSG_ERROR, 0, 9, &(-2i32).to_ne_bytes());
        w.buf.extend_from_slice(&[0u8; NLMSG_HDRLEN]);
        w.end_msg(m);
        let msg = messages(&w.buf).next().expect("one").expect("ok");
        assert_eq!(parse_ack(&msg).expect("ack").errno, 2);
    }

    #[test]
    fn truncated_message_is_malformed() {
        let mut data = vec![0u8; 16];
        data[0] = 64;
        let got: Vec<_> = messages(&data).collect();
        assert!(matches!(got[..], [Err(Malformed(_))]));
    }
}
