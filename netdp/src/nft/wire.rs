//! The nf_tables flavour of the shared netlink byte layer ([`crate::netlink_wire`]): messages
//! start with an `nfgenmsg` header, and a nest that outgrows the 16-bit attribute length is an
//! error (element lists can). Pure; no sockets.
//!
//! nf_tables attributes carry integers in network byte order; the netlink header is host order.

use std::ops::{Deref, DerefMut};

use super::error::NftError;
use crate::netlink_wire;
pub(crate) use crate::netlink_wire::{Message, align4, attrs, be32, be64, string};

/// Appends nf_tables messages and attributes to a byte buffer.
#[derive(Debug, Default, Clone)]
pub(crate) struct Writer(netlink_wire::Writer);

impl Deref for Writer {
    type Target = netlink_wire::Writer;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for Writer {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Writer {
    /// The bytes written.
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.0.buf
    }

    /// Starts a netlink message with an `nfgenmsg` header; returns its offset for `end_msg`.
    pub(crate) fn begin_msg(
        &mut self,
        msg_type: u16,
        flags: u16,
        seq: u32,
        family: u8,
        res_id: u16,
    ) -> usize {
        let [r0, r1] = res_id.to_be_bytes();
        let nfgenmsg = [family, super::sys::NFNETLINK_V0, r0, r1];
        self.0.begin_msg(msg_type, flags, seq, &nfgenmsg)
    }

    /// Closes a nested attribute; fails when its content exceeds the 16-bit attribute length.
    pub(crate) fn end_nested(&mut self, start: usize) -> Result<(), NftError> {
        self.0
            .end_nested_checked(start)
            .map_err(|len| NftError::AttributeTooLong { len })
    }
}

/// Splits a datagram into netlink messages.
pub(crate) fn messages(data: &[u8]) -> impl Iterator<Item = Result<Message<'_>, NftError>> {
    netlink_wire::messages(data).map(|m| m.map_err(|e| NftError::Malformed(e.0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink_wire::NLA_F_NESTED;

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
