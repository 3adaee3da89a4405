//! The apiserver's storage contract: one [`Store`] trait, implemented by the embedded backend
//! and by etcd, both held to the same conformance suite.
//!
//! The model is etcd's, because the Kubernetes API semantics are built on it:
//! - a flat, ordered key space (`/registry/<resource>/<namespace>/<name>`), values are opaque
//!   bytes (the apiserver stores JSON);
//! - one cluster-wide, strictly increasing **revision**, bumped by every write; a key carries
//!   the revision that created it and the one that last modified it. The apiserver's
//!   `resourceVersion` of an object is its `mod_revision`, and of a list the store revision
//!   at which it was read;
//! - writes are compare-and-swap on `mod_revision` (optimistic concurrency → `409 Conflict`);
//! - a watch replays every change with a revision greater than the one asked for, in revision
//!   order, until history older than the **compacted** revision is gone (→ `410 Gone`).
//!
//! An acknowledged write is durable: it survives `kill -9` of the process.

use std::fmt;
use std::pin::Pin;

use futures::Stream;

pub mod memory;

/// A store revision (etcd's `revision`; the apiserver's `resourceVersion`). Starts at 1 for an
/// empty store; 0 means "none".
pub type Revision = i64;

/// One key with its value and revisions.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the write that created the key (kept across updates).
    pub create_revision: Revision,
    /// Revision of the last write to the key. For a [`WatchEvent`] of kind `Delete`, the
    /// revision of the deletion.
    pub mod_revision: Revision,
}

impl fmt::Debug for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyValue")
            .field("key", &self.key)
            .field("value_len", &self.value.len())
            .field("create_revision", &self.create_revision)
            .field("mod_revision", &self.mod_revision)
            .finish()
    }
}

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Created or updated (`prev` tells which).
    Put,
    /// Deleted. The event's `kv` holds the last value and the deletion revision.
    Delete,
}

/// One change, as seen by a watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub kind: EventKind,
    pub kv: KeyValue,
    /// The value before this change (`None` for a create).
    pub prev: Option<KeyValue>,
}

/// A list request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Keys starting with this prefix (e.g. `/registry/pods/default/`).
    pub prefix: String,
    /// At most this many items (`None`: all).
    pub limit: Option<usize>,
    /// Only keys strictly greater than this one (the apiserver's `continue` token decodes to it).
    pub start_after: Option<String>,
    /// Read as of this revision (so the pages of one paged list are consistent); `None`: now.
    /// Older than the compacted revision → [`StoreError::Compacted`].
    pub revision: Option<Revision>,
}

/// A list answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListResult {
    /// Matching keys in key order.
    pub items: Vec<KeyValue>,
    /// The revision the list was read at.
    pub revision: Revision,
    /// Whether more keys match after the last item (only when `limit` cut the list).
    pub more: bool,
}

/// A stream of changes in revision order. It ends with an error (and then ends) when the
/// watcher fell too far behind or the store went away; the client then relists.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, StoreError>> + Send>>;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    #[error("key {0} not found")]
    NotFound(String),
    #[error("key {0} already exists")]
    AlreadyExists(String),
    /// Compare-and-swap failed: the key's `mod_revision` is not the expected one.
    #[error("key {key} was modified: expected revision {expected}, found {actual}")]
    Conflict {
        key: String,
        expected: Revision,
        actual: Revision,
    },
    /// The asked-for revision is older than the compacted history.
    #[error("revision {requested} has been compacted (oldest available is {compacted})")]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    /// The asked-for revision does not exist yet.
    #[error("revision {requested} is newer than the current revision {current}")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },
    /// A watcher could not keep up and was dropped; it must relist.
    #[error("watcher fell behind and was closed")]
    WatcherTooSlow,
    /// The backend failed (I/O, corruption, etcd unreachable …).
    #[error("storage backend: {0}")]
    Backend(String),
}

/// The storage contract. Implementations are cheap to share (`Arc<dyn Store>`).
#[async_trait::async_trait]
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// The current value of `key`.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// Keys under a prefix, in key order, paged.
    async fn list(&self, options: &ListOptions) -> Result<ListResult, StoreError>;

    /// Counts the keys under a prefix (for `remainingItemCount` and metrics).
    async fn count(&self, prefix: &str) -> Result<u64, StoreError>;

    /// Creates `key`; fails with `AlreadyExists` if it exists. Returns the stored key.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError>;

    /// Replaces `key`'s value if its `mod_revision` is `expected`; `NotFound` if absent,
    /// `Conflict` if modified since. Returns the stored key.
    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<KeyValue, StoreError>;

    /// Deletes `key` (if `expected` is set, only at that `mod_revision`). Returns the deleted
    /// value with `mod_revision` set to the deletion's revision.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue, StoreError>;

    /// Every change under `prefix` with a revision greater than `after`, then live changes.
    /// `after` older than the compacted revision → `Compacted`; newer than the current
    /// revision → `FutureRevision`.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError>;

    /// The current revision (of the last write; 1 for a store never written, see [`Revision`]).
    async fn current_revision(&self) -> Result<Revision, StoreError>;

    /// The oldest revision a watch or list may still start from.
    async fn compacted_revision(&self) -> Result<Revision, StoreError>;

    /// Drops history older than `revision` (never the current values).
    async fn compact(&self, revision: Revision) -> Result<(), StoreError>;
}
