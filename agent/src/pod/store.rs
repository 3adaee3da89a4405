//! The pod status store: the latest spec and computed status of every pod a worker owns. One
//! writer per pod (its worker), cheap snapshots for readers (the local API, tests, the status
//! sync to the apiserver, which [`StatusStore::subscribe`]s to changes).
//!
//! With an apiserver the store also keeps the **final status** of each terminated API pod
//! ([`StatusStore::keeping_final_statuses`]) until the status sync has delivered it and
//! [`forget`](StatusStore::forget)s it: a pod deleted in the API is only removed there once its
//! terminal status is, as upstream's status manager does. [`mark_synced`](StatusStore::mark_synced)
//! says the pod manager has looked at the runtime and started a worker for every pod it has:
//! from then on, a pod without an entry is known not to run here.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use tokio::sync::watch;

use super::admission;

/// Shared handle to the store.
#[derive(Clone, Debug)]
pub struct StatusStore {
    inner: Arc<RwLock<Entries>>,
    /// Bumped on every change.
    changes: Arc<watch::Sender<u64>>,
    keep_final: bool,
    synced: Arc<AtomicBool>,
}

#[derive(Debug, Default)]
struct Entries {
    /// Pods with a worker (or a rejection), by UID.
    live: BTreeMap<String, Pod>,
    /// Terminated API pods with their final status, by UID.
    terminated: BTreeMap<String, Pod>,
}

impl Default for StatusStore {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
            changes: Arc::new(watch::channel(0).0),
            keep_final: false,
            synced: Arc::default(),
        }
    }
}

impl StatusStore {
    /// A store that keeps the final status of terminated API pods until they are forgotten.
    pub fn keeping_final_statuses() -> Self {
        Self {
            keep_final: true,
            ..Self::default()
        }
    }

    /// A receiver that sees a change after every `set`, `terminated`, `remove` or `forget`.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Records the status of a pod (its spec and metadata as the worker last saw them). A
    /// terminal status (`Succeeded`/`Failed`, e.g. a rejection) is never replaced by a
    /// non-terminal one, as upstream's status manager refuses that transition: a rejected pod
    /// being stopped keeps its reason.
    pub fn set(&self, pod: &Pod, status: PodStatus) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if let Ok(mut map) = self.inner.write() {
            let keep_terminal = map
                .live
                .get(&uid)
                .and_then(|p| p.status.as_ref())
                .is_some_and(|old| is_terminal(old) && !is_terminal(&status));
            if keep_terminal {
                return;
            }
            map.terminated.remove(&uid);
            map.live.insert(uid, entry(pod, status));
        }
        self.changed();
    }

    /// Records `pod`'s status unless the store has one already.
    pub fn set_if_absent(&self, pod: &Pod, status: PodStatus) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let inserted = self.inner.write().is_ok_and(|mut map| {
            let absent = !map.live.contains_key(&uid);
            if absent {
                map.live.insert(uid, entry(pod, status));
            }
            absent
        });
        if inserted {
            self.changed();
        }
    }

    /// The pod stopped for good. An API pod's entry moves to the terminated pods with
    /// `final_status` (or the status it has when that is already terminal) when the store
    /// keeps final statuses; any other entry is dropped.
    pub fn terminated(&self, pod: &Pod, final_status: PodStatus) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if let Ok(mut map) = self.inner.write() {
            let last = map.live.remove(&uid);
            // A second report of the same end (two workers stopping one pod) keeps the first.
            let reported = last.is_none() && map.terminated.contains_key(&uid);
            if self.keep_final && !admission::is_static(pod) && !reported {
                let status = match last.and_then(|p| p.status) {
                    Some(s) if is_terminal(&s) => s,
                    _ => final_status,
                };
                map.terminated.insert(uid, entry(pod, status));
            }
        }
        self.changed();
    }

    /// Drops `uid`'s entry, live or terminated.
    pub fn remove(&self, uid: &str) {
        if let Ok(mut map) = self.inner.write() {
            map.live.remove(uid);
            map.terminated.remove(uid);
        }
        self.changed();
    }

    /// The final status of terminated pod `uid` has been delivered.
    pub fn forget(&self, uid: &str) {
        let removed = self
            .inner
            .write()
            .is_ok_and(|mut map| map.terminated.remove(uid).is_some());
        if removed {
            self.changed();
        }
    }

    /// All pods with a worker, with their status, ordered by UID.
    pub fn snapshot(&self) -> Vec<Pod> {
        self.inner
            .read()
            .map(|m| m.live.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Terminated API pods whose final status has not been forgotten, ordered by UID.
    pub fn terminated_pods(&self) -> Vec<Pod> {
        self.inner
            .read()
            .map(|m| m.terminated.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The pod manager has a worker for every pod on the runtime that it wants.
    pub fn mark_synced(&self) {
        if !self.synced.swap(true, Ordering::SeqCst) {
            self.changed();
        }
    }

    /// Whether [`mark_synced`](Self::mark_synced) happened.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::SeqCst)
    }
}

fn entry(pod: &Pod, status: PodStatus) -> Pod {
    let mut entry = Pod {
        metadata: pod.metadata.clone(),
        spec: pod.spec.clone(),
        status: Some(status),
    };
    if entry.metadata.namespace.is_none() {
        entry.metadata.namespace = Some("default".into());
    }
    entry
}

/// Whether the status has phase `Succeeded` or `Failed`.
pub fn is_terminal(status: &PodStatus) -> bool {
    is_terminal_phase(status.phase.as_deref())
}

/// Whether `phase` is `Succeeded` or `Failed` (a pod that will not run again).
pub fn is_terminal_phase(phase: Option<&str>) -> bool {
    matches!(phase, Some("Succeeded" | "Failed"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(uid: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.uid = Some(uid.into());
        p
    }

    fn phase(p: &str) -> PodStatus {
        PodStatus {
            phase: Some(p.into()),
            ..Default::default()
        }
    }

    fn phases(pods: &[Pod]) -> Vec<(String, String)> {
        pods.iter()
            .map(|p| {
                (
                    p.metadata.uid.clone().unwrap_or_default(),
                    p.status
                        .as_ref()
                        .and_then(|s| s.phase.clone())
                        .unwrap_or_default(),
                )
            })
            .collect()
    }

    #[test]
    fn a_terminal_status_is_not_replaced_by_a_running_one() {
        let store = StatusStore::default();
        let pod = Pod {
            metadata: ObjectMeta {
                uid: Some("u".into()),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        };
        let status = |phase: &str, reason: Option<&str>| PodStatus {
            phase: Some(phase.into()),
            reason: reason.map(Into::into),
            ..PodStatus::default()
        };
        store.set(&pod, status("Pending", None));
        store.set(&pod, status("Failed", Some("OutOfpods")));
        store.set(&pod, status("Running", None));
        let kept = store.snapshot().remove(0).status.unwrap();
        assert_eq!(kept.phase.as_deref(), Some("Failed"));
        assert_eq!(kept.reason.as_deref(), Some("OutOfpods"));
        // A second report of the end keeps the first.
        let keeping = StatusStore::keeping_final_statuses();
        keeping.set(&pod, status("Failed", Some("OutOfpods")));
        keeping.terminated(&pod, status("Failed", None));
        keeping.terminated(&pod, status("Failed", None));
        let final_status = keeping.terminated_pods().remove(0).status.unwrap();
        assert_eq!(final_status.reason.as_deref(), Some("OutOfpods"));
        // Terminal to terminal is recorded (exit codes may complete it).
        store.set(&pod, status("Failed", Some("Evicted")));
        let now = store.snapshot().remove(0).status.unwrap();
        assert_eq!(now.reason.as_deref(), Some("Evicted"));
    }

    #[test]
    fn terminated_api_pods_keep_their_final_status_until_forgotten() {
        let store = StatusStore::keeping_final_statuses();
        store.set(&pod("a"), phase("Running"));
        store.set(&pod("b"), phase("Failed"));
        store.terminated(&pod("a"), phase("Succeeded"));
        store.terminated(&pod("b"), phase("Succeeded"));
        assert!(store.snapshot().is_empty());
        let want = vec![
            ("a".to_string(), "Succeeded".to_string()),
            ("b".to_string(), "Failed".to_string()),
        ];
        assert_eq!(
            phases(&store.terminated_pods()),
            want,
            "a terminal status stays"
        );
        store.forget("a");
        assert_eq!(phases(&store.terminated_pods()).len(), 1);
        store.set(&pod("b"), phase("Pending"));
        assert!(
            store.terminated_pods().is_empty(),
            "a new worker takes the entry back"
        );
    }

    #[test]
    fn without_an_apiserver_or_for_static_pods_nothing_is_kept() {
        let store = StatusStore::default();
        store.set(&pod("a"), phase("Running"));
        store.terminated(&pod("a"), phase("Failed"));
        assert!(store.snapshot().is_empty() && store.terminated_pods().is_empty());

        let store = StatusStore::keeping_final_statuses();
        let mut static_pod = pod("h");
        static_pod.metadata.annotations = Some(
            [
                (crate::labels::CONFIG_SOURCE.to_string(), "file".to_string()),
                (crate::labels::CONFIG_HASH.to_string(), "h".to_string()),
            ]
            .into(),
        );
        store.terminated(&static_pod, phase("Failed"));
        assert!(store.terminated_pods().is_empty());
    }

    #[test]
    fn set_if_absent_keeps_what_is_there_and_sync_is_sticky() {
        let store = StatusStore::default();
        store.set(&pod("a"), phase("Running"));
        store.set_if_absent(&pod("a"), phase("Pending"));
        store.set_if_absent(&pod("b"), phase("Pending"));
        let want = vec![
            ("a".to_string(), "Running".to_string()),
            ("b".to_string(), "Pending".to_string()),
        ];
        assert_eq!(phases(&store.snapshot()), want);
        assert!(!store.is_synced());
        store.mark_synced();
        store.mark_synced();
        assert!(store.is_synced());
    }
}
