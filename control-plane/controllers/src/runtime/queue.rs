//! The work queue of object keys, like upstream's rate-limited workqueue: a key is queued at
//! most once; a key being processed that changes again is processed once more after `done`
//! (never by two workers at once); failed keys come back after a per-key exponential backoff;
//! keys can be delayed (`add_after`). [`QueueState`] is the pure bookkeeping (time is a
//! parameter); [`WorkQueue`] wraps it for async workers.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Per-key exponential backoff: `base * 2^failures`, capped (upstream's default controller
/// rate limiter: 5 ms .. 1000 s).
#[derive(Debug)]
pub struct Backoff<K> {
    base: Duration,
    max: Duration,
    failures: HashMap<K, u32>,
}

impl<K: Eq + Hash + Clone> Backoff<K> {
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max,
            failures: HashMap::new(),
        }
    }

    /// The delay before `key`'s next retry; counts one more failure.
    pub fn next_delay(&mut self, key: &K) -> Duration {
        let failures = self.failures.entry(key.clone()).or_insert(0);
        let exponent = *failures;
        *failures = failures.saturating_add(1);
        // 2^31 * 5 ms is far past any cap: saturate instead of overflowing.
        let factor = 1u32.checked_shl(exponent.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// `key` succeeded: its next failure starts from `base` again.
    pub fn forget(&mut self, key: &K) {
        self.failures.remove(key);
    }

    /// How many failures in a row `key` has had.
    pub fn failures(&self, key: &K) -> u32 {
        self.failures.get(key).copied().unwrap_or(0)
    }
}

impl<K: Eq + Hash + Clone> Default for Backoff<K> {
    fn default() -> Self {
        Backoff::new(Duration::from_millis(5), Duration::from_secs(1000))
    }
}

/// The queue's bookkeeping, free of clocks and tasks.
#[derive(Debug)]
pub struct QueueState<K> {
    /// Keys ready to hand out, in order.
    ready: VecDeque<K>,
    /// Keys that need processing (queued, or changed while being processed).
    dirty: HashSet<K>,
    /// Keys a worker holds.
    processing: HashSet<K>,
    /// Keys waiting for a time (the earliest one wins).
    delayed: HashMap<K, Instant>,
}

impl<K: Eq + Hash + Clone> Default for QueueState<K> {
    fn default() -> Self {
        QueueState {
            ready: VecDeque::new(),
            dirty: HashSet::new(),
            processing: HashSet::new(),
            delayed: HashMap::new(),
        }
    }
}

impl<K: Eq + Hash + Clone> QueueState<K> {
    /// Queues `key` now; returns whether a worker has something new to take.
    pub fn add(&mut self, key: K) -> bool {
        if self.dirty.contains(&key) {
            return false;
        }
        self.dirty.insert(key.clone());
        if self.processing.contains(&key) {
            return false;
        }
        self.ready.push_back(key);
        true
    }

    /// Queues `key` at `at` (or earlier if it is already waiting for an earlier time).
    pub fn add_at(&mut self, key: K, at: Instant, now: Instant) -> bool {
        if at <= now {
            return self.add(key);
        }
        let entry = self.delayed.entry(key).or_insert(at);
        *entry = (*entry).min(at);
        false
    }

    /// Moves delayed keys due at `now` to the ready list.
    fn promote_due(&mut self, now: Instant) {
        let due: Vec<K> = self
            .delayed
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(key, _)| key.clone())
            .collect();
        for key in due {
            self.delayed.remove(&key);
            self.add(key);
        }
    }

    /// The next key to process at `now`, which the caller must hand back with [`Self::done`].
    pub fn take(&mut self, now: Instant) -> Option<K> {
        self.promote_due(now);
        let key = self.ready.pop_front()?;
        self.dirty.remove(&key);
        self.processing.insert(key.clone());
        Some(key)
    }

    /// The worker is finished with `key`; returns whether it went back to the ready list
    /// (it changed while being processed).
    pub fn done(&mut self, key: &K) -> bool {
        self.processing.remove(key);
        if self.dirty.contains(key) {
            self.ready.push_back(key.clone());
            return true;
        }
        false
    }

    /// When the earliest delayed key is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.delayed.values().min().copied()
    }

    /// Ready plus delayed keys (keys being processed are not counted).
    pub fn len(&self) -> usize {
        self.ready.len() + self.delayed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The queue shared by a controller's watches and workers.
#[derive(Debug)]
pub struct WorkQueue<K> {
    state: Mutex<QueueState<K>>,
    backoff: Mutex<Backoff<K>>,
    wake: Notify,
}

impl<K: Eq + Hash + Clone> Default for WorkQueue<K> {
    fn default() -> Self {
        WorkQueue::new(Backoff::default())
    }
}

impl<K: Eq + Hash + Clone> WorkQueue<K> {
    pub fn new(backoff: Backoff<K>) -> Self {
        WorkQueue {
            state: Mutex::new(QueueState::default()),
            backoff: Mutex::new(backoff),
            wake: Notify::new(),
        }
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut QueueState<K>) -> T) -> T {
        // A worker that panicked while holding the lock left consistent bookkeeping (every
        // method finishes its update before anything can panic): keep going.
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut state)
    }

    fn with_backoff<T>(&self, f: impl FnOnce(&mut Backoff<K>) -> T) -> T {
        let mut backoff = self
            .backoff
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut backoff)
    }

    /// Queues `key` (no-op when it is already queued).
    pub fn add(&self, key: K) {
        if self.with_state(|state| state.add(key)) {
            self.wake.notify_one();
        }
    }

    /// Queues `key` after `delay`.
    pub fn add_after(&self, key: K, delay: Duration) {
        let now = Instant::now();
        if self.with_state(|state| state.add_at(key, now + delay, now)) {
            self.wake.notify_one();
        } else {
            // A sleeping worker may need to wake earlier than it planned.
            self.wake.notify_waiters();
        }
    }

    /// Queues `key` after its backoff (it failed); returns the delay.
    pub fn add_rate_limited(&self, key: K) -> Duration {
        let delay = self.with_backoff(|backoff| backoff.next_delay(&key));
        self.add_after(key, delay);
        delay
    }

    /// `key` succeeded: reset its backoff.
    pub fn forget(&self, key: &K) {
        self.with_backoff(|backoff| backoff.forget(key));
    }

    /// The next key to process, waiting for one; `None` once `token` is cancelled.
    pub async fn next(&self, token: &CancellationToken) -> Option<K> {
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (key, due) =
                self.with_state(|state| (state.take(Instant::now()), state.next_due()));
            if token.is_cancelled() {
                if let Some(key) = key {
                    self.done(&key);
                }
                return None;
            }
            if key.is_some() {
                return key;
            }
            let sleep = async {
                match due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = token.cancelled() => return None,
                () = &mut notified => {}
                () = sleep => {}
            }
        }
    }

    /// The worker is finished with `key`.
    pub fn done(&self, key: &K) {
        if self.with_state(|state| state.done(key)) {
            self.wake.notify_one();
        }
    }

    /// Ready plus delayed keys.
    pub fn len(&self) -> usize {
        self.with_state(|state| state.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
