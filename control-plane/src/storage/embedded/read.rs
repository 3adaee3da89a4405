//! Reads of the embedded store, each in one redb read transaction (a consistent snapshot):
//! get, count, list now or at an older retained revision, and history chunks for watches.
//!
//! A list at an older revision starts from the current rows and undoes the changes made after
//! it: the first change to a key after the revision carries the key's state at the revision
//! (its `prev`). The cost is one pass over the history since that revision.

use std::collections::BTreeMap;
use std::ops::Bound;

use redb::{ReadTransaction, ReadableDatabase};

use super::codec;
use super::{HISTORY, KV, META, META_COMPACTED, META_REVISION, db_error};
use crate::storage::{KeyValue, ListOptions, ListResult, Revision, StoreError, WatchEvent};

/// The revisions recorded in a snapshot.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Revisions {
    pub(crate) current: Revision,
    pub(crate) compacted: Revision,
}

pub(crate) fn revisions(txn: &ReadTransaction) -> Result<Revisions, StoreError> {
    let meta = match txn.open_table(META) {
        Ok(t) => t,
        // A store never written: nothing is compacted, revision 1 (like a fresh etcd).
        Err(redb::TableError::TableDoesNotExist(_)) => {
            return Ok(Revisions {
                current: 1,
                compacted: 1,
            });
        }
        Err(e) => return Err(db_error("open meta", e)),
    };
    let get = |name: &str| -> Result<Option<i64>, StoreError> {
        Ok(meta
            .get(name)
            .map_err(|e| db_error("read meta", e))?
            .map(|v| v.value()))
    };
    Ok(Revisions {
        current: get(META_REVISION)?.unwrap_or(1),
        compacted: get(META_COMPACTED)?.unwrap_or(1),
    })
}

pub(crate) fn get(db: &redb::Database, key: &str) -> Result<Option<KeyValue>, StoreError> {
    let txn = db.begin_read().map_err(|e| db_error("begin read", e))?;
    let table = match txn.open_table(KV) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(db_error("open kv", e)),
    };
    let Some(row) = table.get(key).map_err(|e| db_error("get", e))? else {
        return Ok(None);
    };
    Ok(Some(codec::decode_kv(key, row.value()).map_err(corrupt)?))
}

pub(crate) fn count(db: &redb::Database, prefix: &str) -> Result<u64, StoreError> {
    let txn = db.begin_read().map_err(|e| db_error("begin read", e))?;
    let table = match txn.open_table(KV) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(db_error("open kv", e)),
    };
    let mut n = 0;
    for entry in table.range(prefix..).map_err(|e| db_error("range", e))? {
        let (key, _) = entry.map_err(|e| db_error("range", e))?;
        if !key.value().starts_with(prefix) {
            break;
        }
        n += 1;
    }
    Ok(n)
}

pub(crate) fn list(db: &redb::Database, options: &ListOptions) -> Result<ListResult, StoreError> {
    let txn = db.begin_read().map_err(|e| db_error("begin read", e))?;
    let revs = revisions(&txn)?;
    let at = options.revision.unwrap_or(revs.current);
    if at < revs.compacted {
        return Err(StoreError::Compacted {
            requested: at,
            compacted: revs.compacted,
        });
    }
    if at > revs.current {
        return Err(StoreError::FutureRevision {
            requested: at,
            current: revs.current,
        });
    }
    let prefix = options.prefix.as_str();
    let limit = options.limit.unwrap_or(usize::MAX);
    // Keys strictly after `start_after`, but never before the prefix.
    let lower: Bound<&str> = match options.start_after.as_deref() {
        Some(after) if after >= prefix => Bound::Excluded(after),
        _ => Bound::Included(prefix),
    };
    // The state at `at` of every key changed since (None: absent at `at`).
    let overlay = if at < revs.current {
        changed_since(&txn, prefix, at, lower)?
    } else {
        BTreeMap::new()
    };

    let mut page = Page {
        items: Vec::new(),
        limit,
        more: false,
    };

    let table = match txn.open_table(KV) {
        Ok(t) => Some(t),
        Err(redb::TableError::TableDoesNotExist(_)) => None,
        Err(e) => return Err(db_error("open kv", e)),
    };
    let mut overlay = overlay.into_iter().peekable();
    if let Some(table) = &table {
        for entry in table
            .range::<&str>((lower, Bound::Unbounded))
            .map_err(|e| db_error("range", e))?
        {
            let (key, row) = entry.map_err(|e| db_error("range", e))?;
            let key = key.value();
            if !key.starts_with(prefix) {
                break;
            }
            // Overlay keys sorting before this one existed at `at` but not now.
            let mut full = false;
            while let Some((k, _)) = overlay.peek() {
                if k.as_str() >= key {
                    break;
                }
                if let Some((_, Some(old))) = overlay.next()
                    && !page.push(old)
                {
                    full = true;
                    break;
                }
            }
            if full {
                break;
            }
            let kv = if overlay.peek().is_some_and(|(k, _)| k == key) {
                match overlay.next() {
                    Some((_, Some(old))) => old,
                    _ => continue,
                }
            } else {
                codec::decode_kv(key, row.value()).map_err(corrupt)?
            };
            if !page.push(kv) {
                break;
            }
        }
    }
    if !page.more {
        for (_, old) in overlay {
            if let Some(old) = old
                && !page.push(old)
            {
                break;
            }
        }
    }
    Ok(ListResult {
        items: page.items,
        revision: at,
        more: page.more,
    })
}

/// A list page being filled.
struct Page {
    items: Vec<KeyValue>,
    limit: usize,
    more: bool,
}

impl Page {
    /// Adds `kv`; false (and `more` set) when the page is already full.
    fn push(&mut self, kv: KeyValue) -> bool {
        if self.items.len() == self.limit {
            self.more = true;
            return false;
        }
        self.items.push(kv);
        true
    }
}

/// For every key under `prefix` (and within `lower`) changed after `at`, its state at `at`.
fn changed_since(
    txn: &ReadTransaction,
    prefix: &str,
    at: Revision,
    lower: Bound<&str>,
) -> Result<BTreeMap<String, Option<KeyValue>>, StoreError> {
    let mut out = BTreeMap::new();
    let table = match txn.open_table(HISTORY) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(out),
        Err(e) => return Err(db_error("open history", e)),
    };
    let from = u64::try_from(at + 1).unwrap_or(0);
    for entry in table.range(from..).map_err(|e| db_error("range", e))? {
        let (rev, row) = entry.map_err(|e| db_error("range", e))?;
        let row = row.value();
        let key = codec::event_key(row).map_err(corrupt)?;
        let in_range = match lower {
            Bound::Included(l) => key >= l,
            Bound::Excluded(l) => key > l,
            Bound::Unbounded => true,
        };
        if !key.starts_with(prefix) || !in_range || out.contains_key(key) {
            continue;
        }
        let rev = Revision::try_from(rev.value()).unwrap_or(Revision::MAX);
        let event = codec::decode_event(rev, row).map_err(corrupt)?;
        out.insert(event.kv.key, event.prev);
    }
    Ok(out)
}

/// A run of history read for a watcher.
#[derive(Debug)]
pub(crate) struct HistoryChunk {
    /// Matching changes, in revision order.
    pub(crate) events: Vec<WatchEvent>,
    /// Every revision up to this one has been looked at.
    pub(crate) scanned_to: Revision,
    /// Whether `scanned_to` is the snapshot's current revision.
    pub(crate) at_end: bool,
}

/// The changes under `prefix` after `after`, looking at no more than `max_rows` rows or
/// `max_bytes` of matching values.
pub(crate) fn history_chunk(
    db: &redb::Database,
    prefix: &str,
    after: Revision,
    max_rows: usize,
    max_bytes: usize,
) -> Result<HistoryChunk, StoreError> {
    let txn = db.begin_read().map_err(|e| db_error("begin read", e))?;
    let revs = revisions(&txn)?;
    if after + 1 < revs.compacted {
        return Err(StoreError::Compacted {
            requested: after,
            compacted: revs.compacted,
        });
    }
    let mut chunk = HistoryChunk {
        events: Vec::new(),
        scanned_to: after,
        at_end: true,
    };
    if after >= revs.current {
        return Ok(chunk);
    }
    let table = match txn.open_table(HISTORY) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => {
            chunk.scanned_to = revs.current;
            return Ok(chunk);
        }
        Err(e) => return Err(db_error("open history", e)),
    };
    let from = u64::try_from(after + 1).unwrap_or(0);
    let (mut rows, mut bytes, mut cut) = (0, 0, false);
    for entry in table.range(from..).map_err(|e| db_error("range", e))? {
        let (rev, row) = entry.map_err(|e| db_error("range", e))?;
        let rev = Revision::try_from(rev.value()).unwrap_or(Revision::MAX);
        if rev > revs.current {
            break;
        }
        let row = row.value();
        if codec::event_key(row).map_err(corrupt)?.starts_with(prefix) {
            bytes += row.len();
            let event = codec::decode_event(rev, row).map_err(corrupt)?;
            chunk.events.push(event);
        }
        chunk.scanned_to = rev;
        rows += 1;
        if rows >= max_rows || bytes >= max_bytes {
            cut = rev < revs.current;
            break;
        }
    }
    if !cut {
        chunk.scanned_to = revs.current;
    }
    chunk.at_end = !cut;
    Ok(chunk)
}

fn corrupt(e: codec::CorruptRow) -> StoreError {
    StoreError::Backend(e.to_string())
}
