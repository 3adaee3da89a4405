//! The protobuf wire format: a bounds-checked reader of tagged fields over a byte slice.
//!
//! Nothing here allocates or trusts a length prefix: every length is checked against the bytes
//! that remain before it is used.

/// What is wrong with the bytes, independent of where (the caller adds the path).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("the message ends in the middle of a field")]
    Truncated,
    #[error("a varint is longer than 10 bytes")]
    VarintTooLong,
    #[error("field number {0} is outside 1..2^29")]
    BadFieldNumber(u64),
    #[error("wire type {0} (groups or invalid) is not used by Kubernetes")]
    UnsupportedWireType(u8),
    #[error("field {field} has wire type {got}, expected {expected}")]
    WrongWireType { field: u32, got: u8, expected: u8 },
    #[error("timestamp outside the years 0 to 9999")]
    TimeOutOfRange,
    #[error("IntOrString of type {0}, which is neither int (0) nor string (1)")]
    IntOrStringType(i64),
    #[error("empty quantity")]
    EmptyQuantity,
}

/// One field's value as it appears on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

impl Wire<'_> {
    /// The protobuf wire type number.
    pub(super) fn wire_type(&self) -> u8 {
        match self {
            Wire::Varint(_) => 0,
            Wire::Fixed64(_) => 1,
            Wire::Bytes(_) => 2,
            Wire::Fixed32(_) => 5,
        }
    }
}

/// Reads consecutive `(field number, value)` pairs from one message's bytes.
#[derive(Debug)]
pub(super) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub(super) fn varint(&mut self) -> Result<u64, Problem> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let byte = *self.buf.get(self.pos).ok_or(Problem::Truncated)?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Problem::VarintTooLong)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Problem> {
        let end = self.pos.checked_add(n).ok_or(Problem::Truncated)?;
        let bytes = self.buf.get(self.pos..end).ok_or(Problem::Truncated)?;
        self.pos = end;
        Ok(bytes)
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], Problem> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// The next field, or `None` at the end of the message.
    pub(super) fn field(&mut self) -> Result<Option<(u32, Wire<'a>)>, Problem> {
        if self.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let number = key >> 3;
        if number == 0 || number >= 1 << 29 {
            return Err(Problem::BadFieldNumber(number));
        }
        let number = number as u32;
        let value = match (key & 7) as u8 {
            0 => Wire::Varint(self.varint()?),
            1 => Wire::Fixed64(u64::from_le_bytes(self.fixed()?)),
            2 => {
                let len = self.varint()?;
                let len = usize::try_from(len).map_err(|_| Problem::Truncated)?;
                Wire::Bytes(self.take(len)?)
            }
            5 => Wire::Fixed32(u32::from_le_bytes(self.fixed()?)),
            other => return Err(Problem::UnsupportedWireType(other)),
        };
        Ok(Some((number, value)))
    }

    /// Reads a packed run of scalars of one wire type (0, 1 or 5) until the end.
    pub(super) fn packed(&mut self, wire_type: u8) -> Result<Option<Wire<'a>>, Problem> {
        if self.is_empty() {
            return Ok(None);
        }
        Ok(Some(match wire_type {
            0 => Wire::Varint(self.varint()?),
            1 => Wire::Fixed64(u64::from_le_bytes(self.fixed()?)),
            _ => Wire::Fixed32(u32::from_le_bytes(self.fixed()?)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_wire_type() {
        // 1: varint 150, 2: bytes "hi", 3: fixed64 1, 4: fixed32 2
        let buf = [
            0x08, 0x96, 0x01, 0x12, 2, b'h', b'i', 0x19, 1, 0, 0, 0, 0, 0, 0, 0, 0x25, 2, 0, 0, 0,
        ];
        let mut r = Reader::new(&buf);
        assert_eq!(r.field(), Ok(Some((1, Wire::Varint(150)))));
        assert_eq!(r.field(), Ok(Some((2, Wire::Bytes(b"hi")))));
        assert_eq!(r.field(), Ok(Some((3, Wire::Fixed64(1)))));
        assert_eq!(r.field(), Ok(Some((4, Wire::Fixed32(2)))));
        assert_eq!(r.field(), Ok(None));
    }

    #[test]
    fn a_length_prefix_beyond_the_end_is_truncation_not_an_allocation() {
        // field 1, bytes, length u64::MAX >> 1
        let buf = [0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
        assert_eq!(Reader::new(&buf).field(), Err(Problem::Truncated));
    }

    #[test]
    fn malformed_keys_and_varints_are_errors() {
        assert_eq!(Reader::new(&[0x08]).field(), Err(Problem::Truncated));
        assert_eq!(Reader::new(&[0x08, 0x80]).field(), Err(Problem::Truncated));
        assert_eq!(
            Reader::new(
                &[0x08; 1]
                    .iter()
                    .chain(&[0xff; 11])
                    .copied()
                    .collect::<Vec<_>>()
            )
            .field(),
            Err(Problem::VarintTooLong)
        );
        assert_eq!(
            Reader::new(&[0x00, 0x00]).field(),
            Err(Problem::BadFieldNumber(0))
        );
        assert_eq!(
            Reader::new(&[0x0b]).field(),
            Err(Problem::UnsupportedWireType(3))
        );
        assert_eq!(
            Reader::new(&[0x0e]).field(),
            Err(Problem::UnsupportedWireType(6))
        );
        assert_eq!(Reader::new(&[0x09, 1, 2]).field(), Err(Problem::Truncated));
    }
}
