//! The pod status store: the latest spec and computed status of every pod a worker owns. One
//! writer per pod (its worker), cheap snapshots for readers (the local API, tests, the status
//! sync to the apiserver, which [`StatusStore::subscribe`]s to changes).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use tokio::sync::watch;

/// Shared handle to the store.
#[derive(Clone, Debug)]
pub struct StatusStore {
    inner: Arc<RwLock<BTreeMap<String, Pod>>>,
    /// Bumped on every change.
    changes: Arc<watch::Sender<u64>>,
}

impl Default for StatusStore {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
            changes: Arc::new(watch::channel(0).0),
        }
    }
}

impl StatusStore {
    /// A receiver that sees a change after every `set` or `remove`.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Records the status of a pod (its spec and metadata as the worker last saw them).
    pub fn set(&self, pod: &Pod, status: PodStatus) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let mut entry = Pod {
            metadata: pod.metadata.clone(),
            spec: pod.spec.clone(),
            status: Some(status),
        };
        if entry.metadata.namespace.is_none() {
            entry.metadata.namespace = Some("default".into());
        }
        if let Ok(mut map) = self.inner.write() {
            map.insert(uid, entry);
        }
        self.changed();
    }

    pub fn remove(&self, uid: &str) {
        if let Ok(mut map) = self.inner.write() {
            map.remove(uid);
        }
        self.changed();
    }

    /// All pods with their status, ordered by UID.
    pub fn snapshot(&self) -> Vec<Pod> {
        self.inner
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }
}
