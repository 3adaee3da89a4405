//! The scheduling queue: pending pods in an active queue ordered by priority (higher first)
//! then by when they entered the queue, a backoff queue for pods that failed recently (1s
//! doubling per attempt up to 10s), and an unschedulable set that cluster events (a node
//! added or updated, a bound pod deleted, a volume or claim added or changed ...) or a
//! 5-minute timeout move back. Pods with `spec.schedulingGates` wait aside until an update
//! removes the last gate. Pure: every call takes `now`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// Backoff after the first failed attempt.
pub const INITIAL_BACKOFF: SignedDuration = SignedDuration::from_secs(1);
/// Longest backoff.
pub const MAX_BACKOFF: SignedDuration = SignedDuration::from_secs(10);
/// How long a pod stays unschedulable without any event before it is retried.
pub const MAX_UNSCHEDULABLE_DURATION: SignedDuration = SignedDuration::from_secs(5 * 60);

/// Something that happened in the cluster that may make unschedulable pods fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterEvent {
    NodeAdded,
    NodeUpdated,
    AssignedPodDeleted,
    AssignedPodUpdated,
    /// A PersistentVolume, PersistentVolumeClaim or StorageClass was added or changed
    /// (VolumeBinding).
    PvAdded,
    PvUpdated,
    PvcAdded,
    PvcUpdated,
    StorageClassAdded,
    StorageClassUpdated,
}

/// A pending pod and its scheduling history.
#[derive(Clone, Debug)]
pub struct QueuedPod {
    pub pod: Arc<Pod>,
    /// `namespace/name`.
    pub key: String,
    pub priority: i32,
    /// When the pod (re-)entered the active queue.
    pub timestamp: Timestamp,
    /// Scheduling attempts so far.
    pub attempts: u32,
    /// When the first attempt was made.
    pub initial_attempt: Option<Timestamp>,
    /// The scheduling cycle the pod was last popped in.
    cycle: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Location {
    Active((i64, i64, u64)),
    Backoff((i64, u64)),
    /// (since ms, seq).
    Unschedulable((i64, u64)),
    /// Popped and being scheduled.
    InFlight,
    /// Held back by `spec.schedulingGates`.
    Gated,
}

/// The queue.
#[derive(Debug, Default)]
pub struct SchedulingQueue {
    pods: HashMap<String, (QueuedPod, Location)>,
    /// (−priority, timestamp ms, seq) → key.
    active: BTreeMap<(i64, i64, u64), String>,
    /// (backoff expiry ms, seq) → key.
    backoff: BTreeMap<(i64, u64), String>,
    /// (unschedulable since ms, seq) → key.
    unschedulable: BTreeMap<(i64, u64), String>,
    seq: u64,
    cycle: u64,
    /// The cycle during which the last cluster event arrived.
    move_request_cycle: u64,
}

/// `namespace/name` of a pod.
pub fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

/// Whether the pod still has scheduling gates.
pub fn is_gated(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.scheduling_gates.as_ref())
        .is_some_and(|g| !g.is_empty())
}

/// The backoff after `attempts` failed attempts: 1s, 2s, 4s, 8s, then 10s.
pub fn backoff_duration(attempts: u32) -> SignedDuration {
    let mut d = INITIAL_BACKOFF;
    for _ in 1..attempts {
        d = d.saturating_mul(2);
        if d >= MAX_BACKOFF {
            return MAX_BACKOFF;
        }
    }
    d.min(MAX_BACKOFF)
}

fn backoff_expiry(p: &QueuedPod) -> Timestamp {
    p.timestamp
        .checked_add(backoff_duration(p.attempts))
        .unwrap_or(p.timestamp)
}

impl SchedulingQueue {
    pub fn new() -> Self {
        Self::default()
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn detach(&mut self, key: &str) -> Option<QueuedPod> {
        let (pod, location) = self.pods.remove(key)?;
        match location {
            Location::Active(k) => {
                self.active.remove(&k);
            }
            Location::Backoff(k) => {
                self.backoff.remove(&k);
            }
            Location::Unschedulable(k) => {
                self.unschedulable.remove(&k);
            }
            Location::InFlight | Location::Gated => {}
        }
        Some(pod)
    }

    fn push_active(&mut self, mut pod: QueuedPod, now: Timestamp) {
        pod.timestamp = now;
        let k = (
            -i64::from(pod.priority),
            now.as_millisecond(),
            self.next_seq(),
        );
        self.active.insert(k, pod.key.clone());
        self.pods
            .insert(pod.key.clone(), (pod, Location::Active(k)));
    }

    fn push_backoff(&mut self, pod: QueuedPod) {
        let k = (backoff_expiry(&pod).as_millisecond(), self.next_seq());
        self.backoff.insert(k, pod.key.clone());
        self.pods
            .insert(pod.key.clone(), (pod, Location::Backoff(k)));
    }

    /// Adds a new pending pod, or updates one already queued (an unschedulable pod whose
    /// spec changed goes back to the active queue, a gated pod whose last gate is removed
    /// enters it).
    pub fn add(&mut self, pod: Arc<Pod>, now: Timestamp) {
        let key = pod_key(&pod);
        let priority = pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
        let gated = is_gated(&pod);
        if let Some((existing, location)) = self.pods.get_mut(&key) {
            let spec_changed = existing.pod.spec != pod.spec;
            existing.pod = pod;
            existing.priority = priority;
            let was_gated = *location == Location::Gated;
            if gated {
                if !was_gated && let Some(p) = self.detach(&key) {
                    self.pods.insert(key, (p, Location::Gated));
                }
                return;
            }
            let wakes =
                was_gated || (spec_changed && matches!(location, Location::Unschedulable(_)));
            if wakes && let Some(p) = self.detach(&key) {
                self.push_active(p, now);
            }
            return;
        }
        let queued = QueuedPod {
            pod,
            key,
            priority,
            timestamp: now,
            attempts: 0,
            initial_attempt: None,
            cycle: 0,
        };
        if gated {
            self.pods
                .insert(queued.key.clone(), (queued, Location::Gated));
        } else {
            self.push_active(queued, now);
        }
    }

    /// How many pods wait for their scheduling gates to be removed.
    pub fn gated_len(&self) -> usize {
        self.pods
            .values()
            .filter(|(_, loc)| *loc == Location::Gated)
            .count()
    }

    /// Forgets a pod (deleted, or bound by someone else).
    pub fn delete(&mut self, key: &str) {
        self.detach(key);
    }

    /// Moves pods whose backoff ended, and pods unschedulable for 5 minutes, to the active
    /// queue. [`SchedulingQueue::pop`] calls this first.
    pub fn flush(&mut self, now: Timestamp) {
        let due: Vec<(i64, u64)> = self
            .backoff
            .range(..(now.as_millisecond() + 1, 0))
            .map(|(k, _)| *k)
            .collect();
        for k in due {
            if let Some(key) = self.backoff.get(&k).cloned()
                && let Some(p) = self.detach(&key)
            {
                self.push_active(p, now);
            }
        }
        let cutoff = now
            .checked_sub(MAX_UNSCHEDULABLE_DURATION)
            .unwrap_or(now)
            .as_millisecond();
        let stale: Vec<String> = self
            .unschedulable
            .range(..(cutoff + 1, 0))
            .map(|(_, key)| key.clone())
            .collect();
        for key in stale {
            self.requeue(&key, now);
        }
    }

    /// The next pod to schedule (highest priority, then longest queued); it stays known to
    /// the queue (in flight) until [`SchedulingQueue::done`] or
    /// [`SchedulingQueue::add_unschedulable`].
    pub fn pop(&mut self, now: Timestamp) -> Option<QueuedPod> {
        self.flush(now);
        let (&k, _) = self.active.iter().next()?;
        let key = self.active.remove(&k)?;
        self.cycle += 1;
        let cycle = self.cycle;
        let (pod, location) = self.pods.get_mut(&key)?;
        *location = Location::InFlight;
        pod.attempts += 1;
        pod.initial_attempt.get_or_insert(now);
        pod.cycle = cycle;
        Some(pod.clone())
    }

    /// The pod was scheduled (or given up on): forget it.
    pub fn done(&mut self, key: &str) {
        self.detach(key);
    }

    /// The pod failed to schedule: it waits in the unschedulable set, or in backoff when a
    /// cluster event arrived while it was being scheduled.
    pub fn add_unschedulable(&mut self, key: &str, now: Timestamp) {
        let Some(mut pod) = self.detach(key) else {
            return;
        };
        pod.timestamp = now;
        if self.move_request_cycle >= pod.cycle && self.move_request_cycle > 0 {
            self.push_backoff(pod);
        } else {
            let k = (now.as_millisecond(), self.next_seq());
            self.unschedulable.insert(k, pod.key.clone());
            self.pods
                .insert(pod.key.clone(), (pod, Location::Unschedulable(k)));
        }
    }

    /// The scheduling attempt hit an error (not a misfit): retry after backoff.
    pub fn backoff(&mut self, key: &str, now: Timestamp) {
        if let Some(mut pod) = self.detach(key) {
            pod.timestamp = now;
            self.push_backoff(pod);
        }
    }

    fn requeue(&mut self, key: &str, now: Timestamp) {
        let Some(pod) = self.detach(key) else {
            return;
        };
        if backoff_expiry(&pod) > now {
            self.push_backoff(pod);
        } else {
            self.push_active(pod, now);
        }
    }

    /// Moves every unschedulable pod to the active queue (or to backoff while its backoff
    /// lasts), since the event may make it fit.
    pub fn on_cluster_event(&mut self, _event: ClusterEvent, now: Timestamp) {
        self.move_request_cycle = self.cycle.max(1);
        let keys: Vec<String> = self.unschedulable.values().cloned().collect();
        for key in keys {
            self.requeue(&key, now);
        }
    }

    /// Counts of (active, backoff, unschedulable) pods.
    pub fn lengths(&self) -> (usize, usize, usize) {
        (
            self.active.len(),
            self.backoff.len(),
            self.unschedulable.len(),
        )
    }

    /// Whether the queue knows the pod (queued or in flight).
    pub fn contains(&self, key: &str) -> bool {
        self.pods.contains_key(key)
    }
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
