//! The embedded store's single writer: one OS thread owns every write transaction.
//!
//! **Group commit.** Callers queue commands; the thread takes every command waiting (up to
//! `max_batch`), applies them in order in one redb transaction — each write its own revision
//! and its own compare-and-swap check, seeing the writes before it in the batch — and commits
//! once, which is one fsync for the whole batch. Only then are the events published to
//! watchers and the callers answered, so an acknowledged write is on disk. While one batch is
//! being synced the next one queues up, so the batch grows with the load.
//!
//! **Compaction.** Compacting to revision R records R as the compacted revision in the same
//! kind of transaction (readers see it atomically); the history rows below R are then purged
//! in small transactions between write batches, so a big compaction never stalls writers.
//! Automatic compaction follows kube-apiserver: every `compaction_interval`, compact to the
//! revision that was current one interval earlier; and keep at most `max_history` revisions.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

use redb::{ReadableTable, Table};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::{EmbeddedOptions, HISTORY, KV, META, META_COMPACTED, META_REVISION, codec, db_error};
use crate::storage::{EventKind, KeyValue, Revision, StoreError, WatchEvent};

/// A write asked of the store.
#[derive(Debug)]
pub(crate) enum WriteOp {
    Create {
        key: String,
        value: Vec<u8>,
    },
    Update {
        key: String,
        value: Vec<u8>,
        expected: Revision,
    },
    Delete {
        key: String,
        expected: Option<Revision>,
    },
}

/// What the writer thread is asked to do.
#[derive(Debug)]
pub(crate) enum Command {
    Write(WriteOp, oneshot::Sender<Result<KeyValue, StoreError>>),
    Compact(Revision, oneshot::Sender<Result<(), StoreError>>),
}

/// Counters shared with the store handle (for benchmarks and tests).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) commits: AtomicU64,
    pub(crate) writes: AtomicU64,
    pub(crate) purged_rows: AtomicU64,
}

/// State shared between the writer thread and the readers.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The last committed revision.
    pub(crate) committed: AtomicI64,
    /// The compacted revision (committed).
    pub(crate) compacted: AtomicI64,
    pub(crate) counters: Counters,
}

pub(crate) struct Writer {
    db: Arc<redb::Database>,
    options: EmbeddedOptions,
    shared: Arc<Shared>,
    events: broadcast::Sender<Arc<WatchEvent>>,
    /// Revision of the last committed write.
    revision: Revision,
    compacted: Revision,
    /// History rows below this revision may still exist (purge in progress below `compacted`).
    purged_to: Revision,
    /// Automatic compaction: when the next tick is due, and the revision at the last tick.
    next_tick: Option<Instant>,
    mark: Revision,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("revision", &self.revision)
            .field("compacted", &self.compacted)
            .field("purged_to", &self.purged_to)
            .finish_non_exhaustive()
    }
}

impl Writer {
    pub(crate) fn new(
        db: Arc<redb::Database>,
        options: EmbeddedOptions,
        shared: Arc<Shared>,
        events: broadcast::Sender<Arc<WatchEvent>>,
        purged_to: Revision,
    ) -> Self {
        let revision = shared.committed.load(Ordering::Acquire);
        let compacted = shared.compacted.load(Ordering::Acquire);
        let next_tick = options.compaction_interval.map(|i| Instant::now() + i);
        Writer {
            db,
            options,
            shared,
            events,
            revision,
            compacted,
            purged_to,
            next_tick,
            mark: revision,
        }
    }

    /// Runs until every sender is gone.
    pub(crate) fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        loop {
            let first = if self.purge_pending() {
                match rx.try_recv() {
                    Ok(c) => Some(c),
                    Err(mpsc::error::TryRecvError::Empty) => None,
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                }
            } else {
                match rx.blocking_recv() {
                    Some(c) => Some(c),
                    None => break,
                }
            };
            if let Some(first) = first {
                let mut batch = Vec::with_capacity(8);
                // Automatic compaction rides in the batch's transaction (no extra fsync).
                if let Some(target) = self.auto_compaction() {
                    let (reply, _) = oneshot::channel();
                    batch.push(Command::Compact(target, reply));
                }
                batch.push(first);
                while batch.len() < self.options.max_batch {
                    match rx.try_recv() {
                        Ok(c) => batch.push(c),
                        Err(_) => break,
                    }
                }
                self.apply(batch);
            }
            if self.purge_pending() {
                self.purge_chunk();
            }
        }
        // Finish the purge so a clean shutdown leaves no dead rows behind.
        while self.purge_pending() {
            if !self.purge_chunk() {
                break;
            }
        }
    }

    fn purge_pending(&self) -> bool {
        self.purged_to < self.compacted
    }

    /// Applies one batch in one transaction; answers every caller.
    fn apply(&mut self, batch: Vec<Command>) {
        let start_revision = self.revision;
        let start_compacted = self.compacted;
        let mut results: Vec<Outcome> = Vec::with_capacity(batch.len());
        let mut events: Vec<Arc<WatchEvent>> = Vec::new();
        let outcome = (|| -> Result<(), StoreError> {
            let mut txn = self
                .db
                .begin_write()
                .map_err(|e| db_error("begin write", e))?;
            txn.set_durability(redb::Durability::Immediate)
                .map_err(|e| db_error("set durability", e))?;
            {
                let mut kv = txn.open_table(KV).map_err(|e| db_error("open kv", e))?;
                let mut history = txn
                    .open_table(HISTORY)
                    .map_err(|e| db_error("open history", e))?;
                for command in &batch {
                    let outcome = match command {
                        Command::Write(op, _) => match self.write(&mut kv, &mut history, op)? {
                            Ok(event) => {
                                let kv = event.kv.clone();
                                events.push(Arc::new(event));
                                Outcome::Write(Ok(kv))
                            }
                            Err(e) => Outcome::Write(Err(e)),
                        },
                        Command::Compact(revision, _) => {
                            Outcome::Compact(self.compact_in(*revision))
                        }
                    };
                    results.push(outcome);
                }
            }
            if self.revision == start_revision && self.compacted == start_compacted {
                // Only failed compare-and-swaps: nothing to commit, no fsync.
                txn.abort().map_err(|e| db_error("abort", e))?;
                return Ok(());
            }
            {
                let mut meta = txn.open_table(META).map_err(|e| db_error("open meta", e))?;
                meta.insert(META_REVISION, self.revision)
                    .map_err(|e| db_error("write meta", e))?;
                meta.insert(META_COMPACTED, self.compacted)
                    .map_err(|e| db_error("write meta", e))?;
            }
            txn.commit().map_err(|e| db_error("commit", e))?;
            Ok(())
        })();

        if let Err(e) = outcome {
            tracing::error!(error = %e, writes = batch.len(), "embedded store: batch failed");
            self.revision = start_revision;
            self.compacted = start_compacted;
            for command in batch {
                match command {
                    Command::Write(_, reply) => {
                        let _ = reply.send(Err(e.clone()));
                    }
                    Command::Compact(_, reply) => {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
            return;
        }

        let c = &self.shared.counters;
        c.commits.fetch_add(1, Ordering::Relaxed);
        c.writes.fetch_add(events.len() as u64, Ordering::Relaxed);
        self.shared
            .committed
            .store(self.revision, Ordering::Release);
        self.shared
            .compacted
            .store(self.compacted, Ordering::Release);
        // Publish in revision order before answering: a caller that saw its write
        // acknowledged and then watches finds it either in history or live.
        for event in events {
            let _ = self.events.send(event);
        }
        for (command, outcome) in batch.into_iter().zip(results) {
            match (command, outcome) {
                (Command::Write(_, reply), Outcome::Write(r)) => {
                    let _ = reply.send(r);
                }
                (Command::Compact(_, reply), Outcome::Compact(r)) => {
                    let _ = reply.send(r);
                }
                // `results` is built in the order of `batch`, one outcome per command.
                (Command::Write(_, reply), Outcome::Compact(_)) => {
                    let _ = reply.send(Err(StoreError::Backend("writer mixed up replies".into())));
                }
                (Command::Compact(_, reply), Outcome::Write(_)) => {
                    let _ = reply.send(Err(StoreError::Backend("writer mixed up replies".into())));
                }
            }
        }
    }

    /// One write inside the batch's transaction. The outer error aborts the batch (I/O); the
    /// inner one is this write's answer (CAS failure …), and consumes no revision.
    fn write(
        &mut self,
        kv: &mut Table<'_, &'static str, &'static [u8]>,
        history: &mut Table<'_, u64, &'static [u8]>,
        op: &WriteOp,
    ) -> Result<Result<WatchEvent, StoreError>, StoreError> {
        let key = match op {
            WriteOp::Create { key, .. }
            | WriteOp::Update { key, .. }
            | WriteOp::Delete { key, .. } => key.as_str(),
        };
        let current = match kv.get(key).map_err(|e| db_error("get", e))? {
            Some(row) => Some(
                codec::decode_kv(key, row.value())
                    .map_err(|e| StoreError::Backend(e.to_string()))?,
            ),
            None => None,
        };
        let revision = self.revision + 1;
        let event = match (op, current) {
            (WriteOp::Create { .. }, Some(_)) => {
                return Ok(Err(StoreError::AlreadyExists(key.to_owned())));
            }
            (WriteOp::Create { value, .. }, None) => WatchEvent {
                kind: EventKind::Put,
                kv: KeyValue {
                    key: key.to_owned(),
                    value: value.clone(),
                    create_revision: revision,
                    mod_revision: revision,
                },
                prev: None,
            },
            (WriteOp::Update { .. } | WriteOp::Delete { .. }, None) => {
                return Ok(Err(StoreError::NotFound(key.to_owned())));
            }
            (WriteOp::Update { expected, .. }, Some(cur)) if cur.mod_revision != *expected => {
                return Ok(Err(conflict(key, *expected, cur.mod_revision)));
            }
            (
                WriteOp::Delete {
                    expected: Some(expected),
                    ..
                },
                Some(cur),
            ) if cur.mod_revision != *expected => {
                return Ok(Err(conflict(key, *expected, cur.mod_revision)));
            }
            (WriteOp::Update { value, .. }, Some(cur)) => WatchEvent {
                kind: EventKind::Put,
                kv: KeyValue {
                    key: key.to_owned(),
                    value: value.clone(),
                    create_revision: cur.create_revision,
                    mod_revision: revision,
                },
                prev: Some(cur),
            },
            (WriteOp::Delete { .. }, Some(cur)) => WatchEvent {
                kind: EventKind::Delete,
                kv: KeyValue {
                    key: key.to_owned(),
                    value: cur.value.clone(),
                    create_revision: cur.create_revision,
                    mod_revision: revision,
                },
                prev: Some(cur),
            },
        };
        match event.kind {
            EventKind::Put => {
                let row = codec::encode_kv(event.kv.create_revision, revision, &event.kv.value);
                kv.insert(key, row.as_slice())
                    .map_err(|e| db_error("insert", e))?;
            }
            EventKind::Delete => {
                kv.remove(key).map_err(|e| db_error("remove", e))?;
            }
        }
        history
            .insert(rev_key(revision), codec::encode_event(&event).as_slice())
            .map_err(|e| db_error("insert history", e))?;
        self.revision = revision;
        Ok(Ok(event))
    }

    /// Records a compaction inside the batch's transaction; rows are purged later.
    fn compact_in(&mut self, revision: Revision) -> Result<(), StoreError> {
        if revision > self.revision {
            return Err(StoreError::FutureRevision {
                requested: revision,
                current: self.revision,
            });
        }
        // Compacting to an already compacted revision is a no-op.
        self.compacted = self.compacted.max(revision);
        Ok(())
    }

    /// Automatic compaction, checked before each batch: the revision to compact to, if due.
    fn auto_compaction(&mut self) -> Option<Revision> {
        let mut target = None;
        if let (Some(due), Some(interval)) = (self.next_tick, self.options.compaction_interval) {
            let now = Instant::now();
            if now >= due {
                target = Some(self.mark);
                self.mark = self.revision;
                self.next_tick = Some(now + interval);
            }
        }
        let max = Revision::try_from(self.options.max_history).unwrap_or(Revision::MAX);
        // Only in steps of a tenth of the window, so this is not a compaction per write.
        if self.revision - self.compacted > max.saturating_add(max / 10) {
            let keep_from = self.revision - max;
            target = Some(target.map_or(keep_from, |t: Revision| t.max(keep_from)));
        }
        let target = target.filter(|t| *t > self.compacted)?;
        tracing::debug!(revision = target, "embedded store: automatic compaction");
        Some(target)
    }

    /// Deletes one chunk of history rows below the compacted revision. Returns false on error.
    fn purge_chunk(&mut self) -> bool {
        let (from, to) = (rev_key(self.purged_to), rev_key(self.compacted));
        let result = (|| -> Result<(usize, Revision), StoreError> {
            let txn = self
                .db
                .begin_write()
                .map_err(|e| db_error("begin write", e))?;
            let (removed, reached) = {
                let mut history = txn
                    .open_table(HISTORY)
                    .map_err(|e| db_error("open history", e))?;
                let mut revs = Vec::with_capacity(self.options.purge_chunk);
                for entry in history.range(from..to).map_err(|e| db_error("range", e))? {
                    let (rev, _) = entry.map_err(|e| db_error("range", e))?;
                    revs.push(rev.value());
                    if revs.len() == self.options.purge_chunk {
                        break;
                    }
                }
                for rev in &revs {
                    history
                        .remove(*rev)
                        .map_err(|e| db_error("purge history", e))?;
                }
                // A full chunk may have more behind it; a short one reached the end.
                let reached = match revs.last() {
                    Some(last) if revs.len() == self.options.purge_chunk => {
                        Revision::try_from(*last + 1).unwrap_or(Revision::MAX)
                    }
                    _ => self.compacted,
                };
                (revs.len(), reached)
            };
            txn.commit().map_err(|e| db_error("commit purge", e))?;
            Ok((removed, reached))
        })();
        match result {
            Ok((removed, reached)) => {
                self.purged_to = reached;
                self.shared
                    .counters
                    .purged_rows
                    .fetch_add(removed as u64, Ordering::Relaxed);
                true
            }
            Err(e) => {
                // Give up on these rows rather than spin on a failing disk: the next open
                // purges whatever is left below the compacted revision.
                tracing::error!(error = %e, "embedded store: purging compacted history failed");
                self.purged_to = self.compacted;
                false
            }
        }
    }
}

/// The answer of one command of a batch, before the commit decides.
enum Outcome {
    Write(Result<KeyValue, StoreError>),
    Compact(Result<(), StoreError>),
}

fn conflict(key: &str, expected: Revision, actual: Revision) -> StoreError {
    StoreError::Conflict {
        key: key.to_owned(),
        expected,
        actual,
    }
}

/// Revisions are positive; history keys are their unsigned value.
pub(crate) fn rev_key(revision: Revision) -> u64 {
    u64::try_from(revision).unwrap_or(0)
}
