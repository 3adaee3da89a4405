//! The netlink byte layer: writing messages and (nested) attributes into one contiguous buffer,
//! and reading messages and attributes back. Pure; no sockets.
//!
//! nf_tables attributes carry integers in network byte order; the netlink header is host order.

use super::error::NftError;
use super::sys::{NLA_F_NESTED, NLA_TYPE_MASK, NLMSG_HDRLEN};

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
    /// Starts a netlink message with an `nfgenmsg` header; returns its offset for [`Self::end_msg`].
    pub(crate) fn begin_msg(
        &mut self,
        msg_type: u16,
        flags: u16,
        seq: u32,
        family: u8,
        res_id: u16,
    ) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched by end_msg
        self.buf.extend_from_slice(&msg_type.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
        self.buf.push(family);
        self.buf.push(super::sys::NFNETLINK_V0);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        start
    }

    /// Writes the final length of the message started at `start`.
    pub(crate) fn end_msg(&mut self, start: usize) {
        let len = self.buf.len() - start;
        // Messages are bounded by the batch size, far below 4 GiB.
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    pub(crate) fn attr(&mut self, ty: u16, data: &[u8]) {
        let len = 4 + data.len();
        // Attribute payloads written here are short (names, registers, keys); a value over
        // 64 KiB would be a caller bug that the kernel then rejects as malformed.
        let len16 = u16::try_from(len).unwrap_or(u16::MAX);
        self.buf.extend_from_slice(&len16.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
    }

    pub(crate) fn u32_be(&mut self, ty: u16, value: u32) {
        self.attr(ty, &value.to_be_bytes());
    }

    pub(crate) fn u64_be(&mut self, ty: u16, value: u64) {
        self.attr(ty, &value.to_be_bytes());
    }

    /// A NUL-terminated string attribute, as the kernel's `NLA_STRING` policy expects from nft.
    pub(crate) fn str(&mut self, ty: u16, value: &str) {
        let len = 4 + value.len() + 1;
        let len16 = u16::try_from(len).unwrap_or(u16::MAX);
        self.buf.extend_from_slice(&len16.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(value.as_bytes());
        self.buf.push(0);
        self.pad();
    }

    /// Starts a nested attribute; returns its offset for [`Self::end_nested`].
    pub(crate) fn begin_nested(&mut self, ty: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        start
    }

    /// Closes a nested attribute; fails when its content exceeds the 16-bit attribute length.
    pub(crate) fn end_nested(&mut self, start: usize) -> Result<(), NftError> {
        let len = self.buf.len() - start;
        let len16 = u16::try_from(len).map_err(|_| NftError::AttributeTooLong { len })?;
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
pub(crate) fn messages(mut data: &[u8]) -> impl Iterator<Item = Result<Message<'_>, NftError>> {
    std::iter::from_fn(move || {
        if data.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
        if len < NLMSG_HDRLEN || len > data.len() {
            data = &[];
            return Some(Err(NftError::Malformed(
                "netlink message length out of bounds",
            )));
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

pub(crate) fn be32(data: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(data.get(..4)?.try_into().ok()?))
}

pub(crate) fn be64(data: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(data.get(..8)?.try_into().ok()?))
}

/// A NUL-terminated string attribute, without its terminator.
pub(crate) fn string(data: &[u8]) -> String {
    let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    String::from_utf8_lossy(&data[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_nested_lengths_cover_their_content() {
        let mut w = Writer::default();
        let outer = w.begin_nested(7);
        w.str(1, "ab"); // 4 + 3 -> padded to 8
        w.u32_be(2, 0x0102_0304);
        w.end_nested(outer).expect("fits");
        assert_eq!(w.buf.len(), 4 + 8 + 8);
        assert_eq!(u16::from_ne_bytes([w.buf[0], w.buf[1]]), 20);
        assert_eq!(u16::from_ne_bytes([w.buf[2], w.buf[3]]), 7 | NLA_F_NESTED);
        let (ty, inner) = attrs(&w.buf).next().expect("one attribute");
        assert_eq!(ty, 7);
        let inner: Vec<_> = attrs(inner).collect();
        assert_eq!(inner[0], (1, &b"ab\0"[..]));
        assert_eq!(inner[1], (2, &[1u8, 2, 3, 4][..]));
        assert_eq!(string(inner[0].1), "ab");
    }

    #[test]
    fn nested_attribute_over_64k_is_an_error() {
        let mut w = Writer::default();
        let outer = w.begin_nested(1);
        for _ in 0..20_000 {
            w.u32_be(1, 0);
        }
        assert!(matches!(
            w.end_nested(outer),
            Err(NftError::AttributeTooLong { .. })
        ));
    }

    #[test]
    fn messages_round_trip_header_fields() {
        let mut w = Writer::default();
        let a = w.begin_msg(0x0a06, 0x405, 42, 2, 0);
        w.str(1, "t");
        w.end_msg(a);
        let b = w.begin_msg(0x11, 1, 43, 0, 10);
        w.end_msg(b);
        let got: Vec<_> = messages(&w.buf)
            .collect::<Result<_, _>>()
            .expect("well formed");
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].msg_type, got[0].flags, got[0].seq),
            (0x0a06, 0x405, 42)
        );
        assert_eq!(got[0].payload[0], 2); // nfgenmsg family
        assert_eq!(&got[1].payload[2..4], &10u16.to_be_bytes()); // res_id in network order
    }

    #[test]
    fn truncated_message_is_malformed() {
        let mut data = vec![0u8; 16];
        data[0] = 64; // claims 64 bytes, has 16
        let got: Vec<_> = messages(&data).collect();
        assert!(matches!(got[..], [Err(NftError::Malformed(_))]));
    }
}
