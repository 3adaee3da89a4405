//! An in-memory [`Store`]: the contract without durability, for unit tests of the REST layer
//! and for fault injection. Never a production backend (nothing survives a restart).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::StreamExt;
use tokio::sync::broadcast;

use super::{
    EventKind, KeyValue, ListOptions, ListResult, Revision, Store, StoreError, WatchEvent,
    WatchStream,
};

/// How many live events a watcher may lag before it is closed.
const WATCH_BUFFER: usize = 4096;

#[derive(Debug, Default)]
struct State {
    revision: Revision,
    compacted: Revision,
    data: BTreeMap<String, KeyValue>,
    history: Vec<WatchEvent>,
}

/// The in-memory store.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<WatchEvent>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(WATCH_BUFFER);
        Self {
            state: Arc::new(Mutex::new(State {
                revision: 1,
                ..State::default()
            })),
            events,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn commit(&self, state: &mut State, event: WatchEvent) {
        match event.kind {
            EventKind::Put => {
                state.data.insert(event.kv.key.clone(), event.kv.clone());
            }
            EventKind::Delete => {
                state.data.remove(&event.kv.key);
            }
        }
        state.history.push(event.clone());
        // No receivers is fine.
        let _ = self.events.send(event);
    }
}

/// The values as of `revision`, rebuilt by undoing later history.
fn data_at(state: &State, revision: Revision) -> BTreeMap<String, KeyValue> {
    let mut data = state.data.clone();
    for event in state.history.iter().rev() {
        if event.kv.mod_revision <= revision {
            break;
        }
        match &event.prev {
            Some(prev) => {
                data.insert(prev.key.clone(), prev.clone());
            }
            None => {
                data.remove(&event.kv.key);
            }
        }
    }
    data
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        Ok(self.lock().data.get(key).cloned())
    }

    async fn list(&self, options: &ListOptions) -> Result<ListResult, StoreError> {
        let state = self.lock();
        let revision = options.revision.unwrap_or(state.revision);
        if revision < state.compacted {
            return Err(StoreError::Compacted {
                requested: revision,
                compacted: state.compacted,
            });
        }
        if revision > state.revision {
            return Err(StoreError::FutureRevision {
                requested: revision,
                current: state.revision,
            });
        }
        let snapshot;
        let data = if revision == state.revision {
            &state.data
        } else {
            snapshot = data_at(&state, revision);
            &snapshot
        };
        let mut items = Vec::new();
        let mut more = false;
        for (key, kv) in data.range(options.prefix.clone()..) {
            if !key.starts_with(&options.prefix) {
                break;
            }
            if options.start_after.as_ref().is_some_and(|s| key <= s) {
                continue;
            }
            if options.limit.is_some_and(|l| items.len() >= l) {
                more = true;
                break;
            }
            items.push(kv.clone());
        }
        Ok(ListResult {
            items,
            revision,
            more,
        })
    }

    async fn count(&self, prefix: &str) -> Result<u64, StoreError> {
        let state = self.lock();
        Ok(state
            .data
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .count() as u64)
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError> {
        let mut state = self.lock();
        if state.data.contains_key(key) {
            return Err(StoreError::AlreadyExists(key.to_string()));
        }
        state.revision += 1;
        let kv = KeyValue {
            key: key.to_string(),
            value,
            create_revision: state.revision,
            mod_revision: state.revision,
        };
        let event = WatchEvent {
            kind: EventKind::Put,
            kv: kv.clone(),
            prev: None,
        };
        self.commit(&mut state, event);
        Ok(kv)
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<KeyValue, StoreError> {
        let mut state = self.lock();
        let prev = state
            .data
            .get(key)
            .cloned()
            .ok_or_else(|| StoreError::NotFound(key.to_string()))?;
        if prev.mod_revision != expected {
            return Err(StoreError::Conflict {
                key: key.to_string(),
                expected,
                actual: prev.mod_revision,
            });
        }
        state.revision += 1;
        let kv = KeyValue {
            key: key.to_string(),
            value,
            create_revision: prev.create_revision,
            mod_revision: state.revision,
        };
        let event = WatchEvent {
            kind: EventKind::Put,
            kv: kv.clone(),
            prev: Some(prev),
        };
        self.commit(&mut state, event);
        Ok(kv)
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue, StoreError> {
        let mut state = self.lock();
        let prev = state
            .data
            .get(key)
            .cloned()
            .ok_or_else(|| StoreError::NotFound(key.to_string()))?;
        if let Some(expected) = expected
            && prev.mod_revision != expected
        {
            return Err(StoreError::Conflict {
                key: key.to_string(),
                expected,
                actual: prev.mod_revision,
            });
        }
        state.revision += 1;
        let kv = KeyValue {
            mod_revision: state.revision,
            ..prev.clone()
        };
        let event = WatchEvent {
            kind: EventKind::Delete,
            kv: kv.clone(),
            prev: Some(prev),
        };
        self.commit(&mut state, event);
        Ok(kv)
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        let state = self.lock();
        if after < state.compacted {
            return Err(StoreError::Compacted {
                requested: after,
                compacted: state.compacted,
            });
        }
        if after > state.revision {
            return Err(StoreError::FutureRevision {
                requested: after,
                current: state.revision,
            });
        }
        // Subscribing under the lock: every event after the replay arrives live.
        let live = self.events.subscribe();
        let replay: Vec<WatchEvent> = state
            .history
            .iter()
            .filter(|e| e.kv.mod_revision > after && e.kv.key.starts_with(prefix))
            .cloned()
            .collect();
        let last = state.revision;
        drop(state);
        let prefix = prefix.to_string();
        let live = futures::stream::unfold(live, |mut rx| async move {
            match rx.recv().await {
                Ok(event) => Some((Ok(event), rx)),
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    Some((Err(StoreError::WatcherTooSlow), rx))
                }
                Err(broadcast::error::RecvError::Closed) => None,
            }
        })
        .filter(move |item| {
            let keep = match item {
                Ok(e) => e.kv.mod_revision > last && e.kv.key.starts_with(&prefix),
                Err(_) => true,
            };
            futures::future::ready(keep)
        });
        let mut failed = false;
        let stream = futures::stream::iter(replay.into_iter().map(Ok))
            .chain(live)
            .take_while(move |item| {
                let go = !failed;
                failed |= item.is_err();
                futures::future::ready(go)
            });
        Ok(Box::pin(stream))
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.lock().revision)
    }

    async fn compacted_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.lock().compacted)
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let mut state = self.lock();
        let revision = revision.min(state.revision);
        if revision > state.compacted {
            state.compacted = revision;
            state.history.retain(|e| e.kv.mod_revision > revision);
        }
        Ok(())
    }
}
