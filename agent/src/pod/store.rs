//! The pod status store: the latest spec and computed status of every pod a worker owns. One
//! writer per pod (its worker), cheap snapshots for readers (the local API, tests).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::{Pod, PodStatus};

/// Shared handle to the store.
#[derive(Clone, Debug, Default)]
pub struct StatusStore {
    inner: Arc<RwLock<BTreeMap<String, Pod>>>,
}

impl StatusStore {
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
    }

    pub fn remove(&self, uid: &str) {
        if let Ok(mut map) = self.inner.write() {
            map.remove(uid);
        }
    }

    /// All pods with their status, ordered by UID.
    pub fn snapshot(&self) -> Vec<Pod> {
        self.inner
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }
}
