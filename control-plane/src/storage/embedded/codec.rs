//! Byte layouts of the embedded store's rows (pure, no I/O).
//!
//! - `kv` table, key → `create_revision (i64 BE) | mod_revision (i64 BE) | value`.
//! - `history` table, revision → one change:
//!   `kind (u8) | has_prev (u8) | key_len (u32 BE) | key | create_revision (i64 BE) |
//!   value_len (u32 BE) | value | [prev_create (i64 BE) | prev_mod (i64 BE) | prev_value]`.
//!   A delete stores no value of its own: its `kv` carries the previous value, which `prev` holds.

use super::super::{EventKind, KeyValue, Revision, WatchEvent};

/// A row that does not decode: the file is damaged or was written by something else.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
#[error("corrupt {table} row: {reason}")]
pub(crate) struct CorruptRow {
    pub(crate) table: &'static str,
    pub(crate) reason: &'static str,
}

const PUT: u8 = 0;
const DELETE: u8 = 1;

/// Encodes a `kv` row value.
pub(crate) fn encode_kv(
    create_revision: Revision,
    mod_revision: Revision,
    value: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + value.len());
    out.extend_from_slice(&create_revision.to_be_bytes());
    out.extend_from_slice(&mod_revision.to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// Decodes a `kv` row into a [`KeyValue`] for `key`.
pub(crate) fn decode_kv(key: &str, row: &[u8]) -> Result<KeyValue, CorruptRow> {
    let corrupt = |reason| CorruptRow {
        table: "kv",
        reason,
    };
    let mut r = Reader(row);
    let create_revision = r.i64().ok_or(corrupt("short header"))?;
    let mod_revision = r.i64().ok_or(corrupt("short header"))?;
    Ok(KeyValue {
        key: key.to_owned(),
        value: r.0.to_vec(),
        create_revision,
        mod_revision,
    })
}

/// Encodes a `history` row for `event` (whose `kv.mod_revision` is the row's revision).
pub(crate) fn encode_event(event: &WatchEvent) -> Vec<u8> {
    let own_value: &[u8] = match event.kind {
        EventKind::Put => &event.kv.value,
        EventKind::Delete => &[],
    };
    let prev_len = event.prev.as_ref().map_or(0, |p| 16 + p.value.len());
    let mut out =
        Vec::with_capacity(2 + 4 + event.kv.key.len() + 8 + 4 + own_value.len() + prev_len);
    out.push(match event.kind {
        EventKind::Put => PUT,
        EventKind::Delete => DELETE,
    });
    out.push(u8::from(event.prev.is_some()));
    put_len(&mut out, event.kv.key.len());
    out.extend_from_slice(event.kv.key.as_bytes());
    out.extend_from_slice(&event.kv.create_revision.to_be_bytes());
    put_len(&mut out, own_value.len());
    out.extend_from_slice(own_value);
    if let Some(prev) = &event.prev {
        out.extend_from_slice(&prev.create_revision.to_be_bytes());
        out.extend_from_slice(&prev.mod_revision.to_be_bytes());
        out.extend_from_slice(&prev.value);
    }
    out
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    // Keys and values are far below 4 GiB (redb caps values at 3 GiB).
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
}

/// The key of a `history` row, without decoding the values (for prefix filtering).
pub(crate) fn event_key(row: &[u8]) -> Result<&str, CorruptRow> {
    let corrupt = |reason| CorruptRow {
        table: "history",
        reason,
    };
    let mut r = Reader(row);
    r.take(2).ok_or(corrupt("short header"))?;
    let len = r.len().ok_or(corrupt("short header"))?;
    let key = r.take(len).ok_or(corrupt("short key"))?;
    std::str::from_utf8(key).map_err(|_| corrupt("key is not UTF-8"))
}

/// Decodes a `history` row stored at `revision`.
pub(crate) fn decode_event(revision: Revision, row: &[u8]) -> Result<WatchEvent, CorruptRow> {
    let corrupt = |reason| CorruptRow {
        table: "history",
        reason,
    };
    let mut r = Reader(row);
    let header = r.take(2).ok_or(corrupt("short header"))?;
    let kind = match header[0] {
        PUT => EventKind::Put,
        DELETE => EventKind::Delete,
        _ => return Err(corrupt("unknown kind")),
    };
    let has_prev = header[1] != 0;
    let key_len = r.len().ok_or(corrupt("short header"))?;
    let key = r.take(key_len).ok_or(corrupt("short key"))?;
    let key = std::str::from_utf8(key).map_err(|_| corrupt("key is not UTF-8"))?;
    let create_revision = r.i64().ok_or(corrupt("short create revision"))?;
    let value_len = r.len().ok_or(corrupt("short value length"))?;
    let value = r.take(value_len).ok_or(corrupt("short value"))?;
    let prev = if has_prev {
        let create_revision = r.i64().ok_or(corrupt("short prev"))?;
        let mod_revision = r.i64().ok_or(corrupt("short prev"))?;
        Some(KeyValue {
            key: key.to_owned(),
            value: r.0.to_vec(),
            create_revision,
            mod_revision,
        })
    } else {
        None
    };
    let value = match (kind, &prev) {
        (EventKind::Put, _) => value.to_vec(),
        (EventKind::Delete, Some(prev)) => prev.value.clone(),
        (EventKind::Delete, None) => return Err(corrupt("delete without previous value")),
    };
    Ok(WatchEvent {
        kind,
        kv: KeyValue {
            key: key.to_owned(),
            value,
            create_revision,
            mod_revision: revision,
        },
        prev,
    })
}

/// A cursor over a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }

    fn len(&mut self) -> Option<usize> {
        usize::try_from(u32::from_be_bytes(self.take(4)?.try_into().ok()?)).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &[u8], create: Revision, modified: Revision) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.into(),
            create_revision: create,
            mod_revision: modified,
        }
    }

    #[test]
    fn kv_rows_round_trip() {
        let row = encode_kv(3, 9, b"hello");
        assert_eq!(decode_kv("/a", &row).unwrap(), kv("/a", b"hello", 3, 9));
        assert!(decode_kv("/a", &row[..10]).is_err());
    }

    #[test]
    fn events_round_trip_for_create_update_and_delete() {
        let create = WatchEvent {
            kind: EventKind::Put,
            kv: kv("/registry/pods/a", b"v1", 5, 5),
            prev: None,
        };
        let update = WatchEvent {
            kind: EventKind::Put,
            kv: kv("/registry/pods/a", b"v2", 5, 7),
            prev: Some(kv("/registry/pods/a", b"v1", 5, 5)),
        };
        let delete = WatchEvent {
            kind: EventKind::Delete,
            kv: kv("/registry/pods/a", b"v2", 5, 8),
            prev: Some(kv("/registry/pods/a", b"v2", 5, 7)),
        };
        for event in [create, update, delete] {
            let row = encode_event(&event);
            assert_eq!(event_key(&row).unwrap(), "/registry/pods/a");
            assert_eq!(decode_event(event.kv.mod_revision, &row).unwrap(), event);
        }
    }

    #[test]
    fn truncated_history_rows_are_errors_not_panics() {
        let event = WatchEvent {
            kind: EventKind::Put,
            kv: kv("/k", b"value", 2, 4),
            prev: Some(kv("/k", b"old", 2, 2)),
        };
        let row = encode_event(&event);
        for cut in 0..row.len() - 3 {
            // A cut inside the trailing prev value still decodes (it is the rest of the row);
            // every cut before it must be an error.
            let _ = decode_event(4, &row[..cut]);
        }
        assert!(decode_event(4, &row[..3]).is_err());
        assert!(event_key(&row[..7]).is_err());
    }
}
