//! Watches on the embedded store: replay from the history table, then live events.
//!
//! Live events come from one `tokio::sync::broadcast` channel that the writer publishes every
//! committed event to (after the commit, in revision order). It is a bounded ring shared by
//! all watchers: writers never wait for watchers, memory never grows with a slow one, and a
//! watcher that falls more than the ring's capacity behind gets [`StoreError::WatcherTooSlow`]
//! and its stream ends (the client relists, as with upstream's terminated watchers).
//!
//! **No gap, no duplicate between replay and live.** The replay reads history in chunks, each
//! in its own snapshot, until it reaches the current revision; *then* it subscribes, and reads
//! history once more from where it stopped. Every event is committed before it is published,
//! so an event published before the subscription is in that last read, and one published
//! after it is received live. Live events at or below the last revision read are dropped, so
//! an event in both is delivered once. A live revision that skips one is reported as an error
//! rather than silently lost.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};

use futures::StreamExt as _;
use tokio::sync::broadcast;

use super::read;
use crate::storage::{Revision, StoreError, WatchEvent, WatchStream};

/// History rows looked at per replay step, and matching bytes read per step: bounds the
/// memory of a watcher that replays a long history.
const REPLAY_ROWS: usize = 1024;
const REPLAY_BYTES: usize = 4 << 20;

enum Phase {
    /// Reading history; `live` is set once the replay reached the end once.
    Replay {
        live: Option<broadcast::Receiver<Arc<WatchEvent>>>,
    },
    Live(broadcast::Receiver<Arc<WatchEvent>>),
    Done,
}

struct State {
    db: Weak<redb::Database>,
    events: broadcast::WeakSender<Arc<WatchEvent>>,
    prefix: String,
    /// Every revision up to this one was delivered or skipped.
    last: Revision,
    pending: VecDeque<WatchEvent>,
    phase: Phase,
}

/// A stream of the changes under `prefix` after `after`.
pub(crate) fn stream(
    db: Weak<redb::Database>,
    events: broadcast::WeakSender<Arc<WatchEvent>>,
    prefix: String,
    after: Revision,
) -> WatchStream {
    let state = State {
        db,
        events,
        prefix,
        last: after,
        pending: VecDeque::new(),
        phase: Phase::Replay { live: None },
    };
    futures::stream::unfold(state, |mut state| async move {
        let item = state.next().await?;
        Some((item, state))
    })
    .boxed()
}

fn closed() -> StoreError {
    StoreError::Backend("the embedded store was closed".into())
}

impl State {
    async fn next(&mut self) -> Option<Result<WatchEvent, StoreError>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            match &mut self.phase {
                Phase::Done => return None,
                Phase::Replay { live } => {
                    let subscribed = live.is_some();
                    let chunk = match self.read_chunk().await {
                        Ok(chunk) => chunk,
                        Err(e) => {
                            self.phase = Phase::Done;
                            return Some(Err(e));
                        }
                    };
                    self.last = chunk.scanned_to;
                    self.pending.extend(chunk.events);
                    if !chunk.at_end {
                        continue;
                    }
                    if subscribed {
                        // Caught up after subscribing: the rest comes live.
                        if let Phase::Replay { live: Some(rx) } =
                            std::mem::replace(&mut self.phase, Phase::Done)
                        {
                            self.phase = Phase::Live(rx);
                        }
                    } else {
                        let Some(sender) = self.events.upgrade() else {
                            self.phase = Phase::Done;
                            return Some(Err(closed()));
                        };
                        self.phase = Phase::Replay {
                            live: Some(sender.subscribe()),
                        };
                    }
                }
                Phase::Live(rx) => match rx.recv().await {
                    Ok(event) => {
                        let rev = event.kv.mod_revision;
                        if rev <= self.last {
                            continue;
                        }
                        if rev != self.last + 1 {
                            self.phase = Phase::Done;
                            return Some(Err(StoreError::Backend(format!(
                                "watch skipped from revision {} to {rev}",
                                self.last
                            ))));
                        }
                        self.last = rev;
                        if event.kv.key.starts_with(&self.prefix) {
                            return Some(Ok(Arc::unwrap_or_clone(event)));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        self.phase = Phase::Done;
                        return Some(Err(StoreError::WatcherTooSlow));
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        self.phase = Phase::Done;
                        return Some(Err(closed()));
                    }
                },
            }
        }
    }

    async fn read_chunk(&self) -> Result<read::HistoryChunk, StoreError> {
        let db = self.db.upgrade().ok_or_else(closed)?;
        let prefix = self.prefix.clone();
        let after = self.last;
        tokio::task::spawn_blocking(move || {
            read::history_chunk(&db, &prefix, after, REPLAY_ROWS, REPLAY_BYTES)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("history read task: {e}")))?
    }
}
