//! The scheduler's in-memory state, fed by the watches: the [`Snapshot`] of nodes and bound
//! pods, the [`SchedulingQueue`] of pending pods of this scheduler, namespace labels,
//! PodDisruptionBudgets, and the pods assumed bound while their binding is in flight.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kwk_scheduler::Snapshot;
use kwk_scheduler::queue::{ClusterEvent, SchedulingQueue, pod_key};

use super::spread::SpreadSelectors;

/// Everything the scheduling loop decides from.
#[derive(Debug, Default)]
pub struct SchedulerState {
    pub scheduler_name: String,
    pub snapshot: Snapshot,
    pub queue: SchedulingQueue,
    /// PodDisruptionBudgets by `namespace/name`.
    pub pdbs: HashMap<String, PodDisruptionBudget>,
    /// Pods placed in the snapshot before the apiserver confirmed their binding.
    pub assumed: HashSet<String>,
    /// Keys of the bound pods the snapshot holds (to tell a deleted bound pod apart).
    bound: HashSet<String>,
    /// Selectors for the system default spreading.
    pub spread: SpreadSelectors,
    /// Pending pods with a nominated node (preemptors waiting for their victims to go), by
    /// key: (node, pod).
    nominated: HashMap<String, (String, Arc<Pod>)>,
    /// Keys of the pending pods handed to the queue (a superset of what it still holds).
    pending: HashSet<String>,
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

/// Whether a node update can make a pod fit that did not (upstream moves unschedulable pods
/// only for these; a kubelet heartbeat is not one).
fn scheduling_properties_changed(old: &Node, new: &Node) -> bool {
    let spec = |n: &Node| {
        let spec = n.spec.clone().unwrap_or_default();
        (spec.unschedulable, spec.taints)
    };
    let status = |n: &Node| {
        let status = n.status.as_ref();
        let conditions: Vec<(String, String)> = status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .map(|c| (c.type_.clone(), c.status.clone()))
            .collect();
        (
            status.and_then(|s| s.allocatable.clone()),
            status.and_then(|s| s.images.clone()),
            conditions,
        )
    };
    old.metadata.labels != new.metadata.labels
        || spec(old) != spec(new)
        || status(old) != status(new)
}

fn object_key(namespace: Option<&str>, name: Option<&str>) -> String {
    format!("{}/{}", namespace.unwrap_or("default"), name.unwrap_or(""))
}

impl SchedulerState {
    pub fn new(scheduler_name: &str) -> Self {
        SchedulerState {
            scheduler_name: scheduler_name.to_string(),
            ..SchedulerState::default()
        }
    }

    /// Whether this scheduler is responsible for the (unbound) pod.
    fn is_ours(&self, pod: &Pod) -> bool {
        let name = pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduler_name.as_deref())
            .unwrap_or("default-scheduler");
        name == self.scheduler_name
    }

    /// A pod was added or changed. Returns true when the queue may have a pod to pop.
    pub fn apply_pod(&mut self, pod: Pod, now: Timestamp) -> bool {
        let key = pod_key(&pod);
        self.nominated.remove(&key);
        if node_name(&pod).is_some() {
            self.queue.delete(&key);
            self.pending.remove(&key);
            self.assumed.remove(&key);
            if is_terminal(&pod) {
                if self.bound.remove(&key) {
                    self.snapshot.remove_pod_key(&key);
                    self.queue
                        .on_cluster_event(ClusterEvent::AssignedPodDeleted, now);
                    return true;
                }
                return false;
            }
            self.bound.insert(key);
            self.snapshot.add_pod(pod);
            return false;
        }
        if self.assumed.contains(&key) {
            // Our binding is in flight; the watch has not caught up yet.
            return false;
        }
        if self.bound.remove(&key) {
            self.snapshot.remove_pod_key(&key);
        }
        if pod.metadata.deletion_timestamp.is_some() || is_terminal(&pod) || !self.is_ours(&pod) {
            self.queue.delete(&key);
            self.pending.remove(&key);
            return false;
        }
        let pod = Arc::new(pod);
        if let Some(node) = pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.clone())
            .filter(|n| !n.is_empty())
        {
            self.nominated.insert(key.clone(), (node, pod.clone()));
        }
        self.pending.insert(key);
        self.queue.add(pod, now);
        true
    }

    /// A pod was deleted.
    pub fn delete_pod(&mut self, pod: &Pod, now: Timestamp) -> bool {
        self.delete_pod_key(&pod_key(pod), now)
    }

    fn delete_pod_key(&mut self, key: &str, now: Timestamp) -> bool {
        let key = key.to_string();
        self.queue.delete(&key);
        self.pending.remove(&key);
        self.nominated.remove(&key);
        self.assumed.remove(&key);
        if self.bound.remove(&key) {
            self.snapshot.remove_pod_key(&key);
            self.queue
                .on_cluster_event(ClusterEvent::AssignedPodDeleted, now);
            return true;
        }
        false
    }

    /// A node was added or changed.
    pub fn apply_node(&mut self, node: Node, now: Timestamp) -> bool {
        let name = node.metadata.name.clone().unwrap_or_default();
        let event = match self.snapshot.node(&name) {
            Some(known) if known.node.as_ref() == &node => return false,
            Some(known) if !scheduling_properties_changed(&known.node, &node) => None,
            Some(_) => Some(ClusterEvent::NodeUpdated),
            None => Some(ClusterEvent::NodeAdded),
        };
        self.snapshot.upsert_node(node);
        match event {
            Some(event) => {
                self.queue.on_cluster_event(event, now);
                true
            }
            None => false,
        }
    }

    pub fn delete_node(&mut self, node: &Node) {
        self.snapshot
            .remove_node(node.metadata.name.as_deref().unwrap_or(""));
    }

    pub fn apply_namespace(&mut self, namespace: Namespace) {
        let name = namespace.metadata.name.clone().unwrap_or_default();
        self.snapshot
            .upsert_namespace(&name, namespace.metadata.labels.unwrap_or_default());
    }

    pub fn apply_pdb(&mut self, pdb: PodDisruptionBudget) {
        let key = object_key(
            pdb.metadata.namespace.as_deref(),
            pdb.metadata.name.as_deref(),
        );
        self.pdbs.insert(key, pdb);
    }

    pub fn delete_pdb(&mut self, pdb: &PodDisruptionBudget) {
        let key = object_key(
            pdb.metadata.namespace.as_deref(),
            pdb.metadata.name.as_deref(),
        );
        self.pdbs.remove(&key);
    }

    /// After a (re-)list: forgets the pods that are no longer there (their deletion may have
    /// been missed while the watch was down). Returns whether the queue may have changed.
    pub fn prune_pods(&mut self, listed: &HashSet<String>, now: Timestamp) -> bool {
        let gone: Vec<String> = self
            .bound
            .iter()
            .chain(self.pending.iter())
            .filter(|key| !listed.contains(*key))
            .cloned()
            .collect();
        let mut woke = false;
        for key in gone {
            woke |= self.delete_pod_key(&key, now);
        }
        woke
    }

    /// After a (re-)list: forgets the nodes that are no longer there.
    pub fn prune_nodes(&mut self, listed: &HashSet<String>) {
        let gone: Vec<String> = self
            .snapshot
            .nodes()
            .iter()
            .filter(|n| !listed.contains(&n.name))
            .map(|n| n.name.clone())
            .collect();
        for name in gone {
            self.snapshot.remove_node(&name);
        }
    }

    /// After a (re-)list: forgets the PodDisruptionBudgets that are no longer there.
    pub fn prune_pdbs(&mut self, listed: &HashSet<String>) {
        self.pdbs.retain(|key, _| listed.contains(key));
    }

    /// Records that preemption nominated `node` for `pod` (before the watch shows it).
    pub fn nominate(&mut self, pod: &Arc<Pod>, node: &str) {
        self.nominated
            .insert(pod_key(pod), (node.to_string(), pod.clone()));
    }

    /// The snapshot with the pods nominated to nodes (of at least `pod`'s priority, other
    /// than `pod`) counted on their nodes, as upstream's filters do so a freed node is kept
    /// for its preemptor; `None` when there are none (use the snapshot as it is).
    pub fn snapshot_with_nominated(&self, pod: &Pod, key: &str) -> Option<Snapshot> {
        let priority = |p: &Pod| p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
        let own = priority(pod);
        let mut others = self
            .nominated
            .iter()
            .filter(|(k, (_, p))| k.as_str() != key && priority(p) >= own)
            .peekable();
        others.peek()?;
        let mut snapshot = self.snapshot.clone();
        for (_, (node, nominated)) in others {
            let mut placed = (**nominated).clone();
            if let Some(spec) = placed.spec.as_mut() {
                spec.node_name = Some(node.clone());
            }
            snapshot.add_pod(placed);
        }
        Some(snapshot)
    }

    /// Places `pod` on `node` in the snapshot before the binding is confirmed.
    pub fn assume(&mut self, pod: &Pod, node: &str) {
        let mut assumed = pod.clone();
        if let Some(spec) = assumed.spec.as_mut() {
            spec.node_name = Some(node.to_string());
        }
        let key = pod_key(pod);
        self.assumed.insert(key.clone());
        self.bound.insert(key);
        self.snapshot.add_pod(assumed);
    }

    /// The binding failed: take the assumption back (unless the watch already saw the pod
    /// bound, by us or by someone else).
    pub fn forget(&mut self, key: &str) {
        if self.assumed.remove(key) {
            self.bound.remove(key);
            self.snapshot.remove_pod_key(key);
        }
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
