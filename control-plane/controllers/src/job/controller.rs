//! The job controller wired to the runtime: one key per Job, triggered by the Job and by
//! the pods it controls; each reconcile calls [`super::plan`] and honours its
//! `requeue_after` (active deadline, failure backoff, TTL after finished).
//!
//! The planner must see the pods it just created (its module doc): [`Expectations`] holds a
//! Job whose last plan created or deleted pods until the pod cache shows them (or a timeout
//! passes), as upstream's controller expectations do. The DaemonSet controller shares it.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::runtime::watcher;

use crate::action::Action;
use crate::common::{controller_of, is_controlled_by};
use crate::runtime::{Controller, ObjectKey, Plan, Watches};

/// How long a key waits for the cache to show its last plan's creations and deletions
/// before it is planned anyway (a create that failed never shows up).
pub const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(10);

/// The key of the object of `kind` that controls `meta`, if any (same namespace).
pub(crate) fn controller_key(meta: &ObjectMeta, kind: &str) -> Option<ObjectKey> {
    let owner = controller_of(meta).filter(|r| r.kind == kind)?;
    Some(ObjectKey {
        namespace: meta.namespace.clone(),
        name: owner.name.clone(),
    })
}

/// What one key's last plan wrote that the cache has not shown yet.
#[derive(Debug)]
struct Pending {
    /// The uids of the key's objects when the plan was made.
    known: BTreeSet<String>,
    /// How many objects the plan created by `generateName`.
    creations: usize,
    /// The uids of the objects the plan deleted.
    deletions: BTreeSet<String>,
    until: Instant,
}

/// Per-key record of unobserved writes of one kind (`Pod`), so a key is not planned from a
/// cache that misses its own creations (which would create them again).
#[derive(Debug)]
pub struct Expectations {
    kind: &'static str,
    pending: Mutex<HashMap<ObjectKey, Pending>>,
}

impl Expectations {
    /// Expectations about objects of `kind`.
    pub fn new(kind: &'static str) -> Self {
        Expectations {
            kind,
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(wait)` while `key`'s last writes are not all in `observed` (the key's objects
    /// in the cache now): hold the key and look again after `wait` at the latest.
    pub fn hold<'a>(
        &self,
        key: &ObjectKey,
        observed: impl IntoIterator<Item = &'a ObjectMeta>,
    ) -> Option<Duration> {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = pending.get(key)?;
        let now = Instant::now();
        if now >= entry.until {
            pending.remove(key);
            return None;
        }
        let mut new = 0;
        let mut live_deleted = 0;
        for meta in observed {
            let Some(uid) = meta.uid.as_deref() else {
                continue;
            };
            if !entry.known.contains(uid) {
                new += 1;
            }
            if entry.deletions.contains(uid) && meta.deletion_timestamp.is_none() {
                live_deleted += 1;
            }
        }
        if new >= entry.creations && live_deleted == 0 {
            pending.remove(key);
            return None;
        }
        Some(entry.until - now)
    }

    /// Records what `actions` (the plan about to be executed for `key`) create and delete
    /// of this kind, given the key's objects `observed` now.
    pub fn expect<'a>(
        &self,
        key: &ObjectKey,
        observed: impl IntoIterator<Item = &'a ObjectMeta>,
        actions: &[Action],
    ) {
        let mut creations = 0;
        let mut deletions = BTreeSet::new();
        for action in actions {
            match action {
                Action::Create { target, .. }
                    if target.kind == self.kind && target.name.is_empty() =>
                {
                    creations += 1;
                }
                Action::Delete { target, .. } if target.kind == self.kind => {
                    deletions.extend(target.uid.clone());
                }
                _ => {}
            }
        }
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if creations == 0 && deletions.is_empty() {
            pending.remove(key);
            return;
        }
        let known = observed.into_iter().filter_map(|m| m.uid.clone()).collect();
        pending.insert(
            key.clone(),
            Pending {
                known,
                creations,
                deletions,
                until: Instant::now() + EXPECTATIONS_TIMEOUT,
            },
        );
    }

    /// Forgets `key` (its object is gone).
    pub fn forget(&self, key: &ObjectKey) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }
}

/// The job controller: one key per Job.
pub fn controller(client: &kube::Client) -> Controller {
    let mut watches = Watches::new(client.clone());
    let jobs = watches.watch(
        Api::<Job>::all(client.clone()),
        watcher::Config::default(),
        |job| vec![ObjectKey::of(job)],
    );
    let pods = watches.watch(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default(),
        |pod| controller_key(&pod.metadata, "Job").into_iter().collect(),
    );
    let expectations = Expectations::new("Pod");
    Controller::new("job", watches, move |key| {
        let Some(job) = jobs.get(&key.store_ref()) else {
            expectations.forget(key);
            return Plan::default();
        };
        let uid = job.metadata.uid.as_deref().unwrap_or_default();
        let controlled: Vec<Pod> = pods
            .state()
            .iter()
            .filter(|p| p.metadata.namespace == job.metadata.namespace)
            .filter(|p| is_controlled_by(&p.metadata, uid))
            .map(|p| (**p).clone())
            .collect();
        let metas = || controlled.iter().map(|p| &p.metadata);
        if let Some(wait) = expectations.hold(key, metas()) {
            return Plan {
                actions: Vec::new(),
                requeue_after: Some(wait),
            };
        }
        let planned = super::plan(&job, &controlled, Timestamp::now());
        expectations.expect(key, metas(), &planned.actions);
        Plan {
            actions: planned.actions,
            requeue_after: planned.requeue_after,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn meta(uid: &str, deleting: bool) -> ObjectMeta {
        ObjectMeta {
            name: Some(format!("pod-{uid}")),
            namespace: Some("ns".into()),
            uid: Some(uid.into()),
            deletion_timestamp: deleting.then_some(Time(Timestamp::UNIX_EPOCH)),
            ..ObjectMeta::default()
        }
    }

    fn pod(uid: &str) -> Pod {
        Pod {
            metadata: meta(uid, false),
            ..Pod::default()
        }
    }

    fn generated_pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                generate_name: Some("x-".into()),
                namespace: Some("ns".into()),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        }
    }

    #[test]
    fn a_key_is_held_until_the_cache_shows_its_creations_and_deletions() {
        let key = ObjectKey::namespaced("ns", "x");
        let before = [meta("a", false), meta("b", false)];
        let actions = vec![
            Action::create(&generated_pod()),
            Action::create(&generated_pod()),
            Action::delete(&pod("a"), None),
        ];
        // (observed after the plan, held?)
        let cases: Vec<(&str, Vec<ObjectMeta>, bool)> = vec![
            ("nothing seen yet", before.to_vec(), true),
            (
                "one creation seen",
                vec![meta("a", true), meta("b", false), meta("c", false)],
                true,
            ),
            (
                "creations seen, deletion not",
                vec![
                    meta("a", false),
                    meta("b", false),
                    meta("c", false),
                    meta("d", false),
                ],
                true,
            ),
            (
                "all seen (deleted pod terminating)",
                vec![
                    meta("a", true),
                    meta("b", false),
                    meta("c", false),
                    meta("d", false),
                ],
                false,
            ),
            (
                "all seen (deleted pod gone)",
                vec![meta("b", false), meta("c", false), meta("d", false)],
                false,
            ),
        ];
        for (name, observed, held) in cases {
            let expectations = Expectations::new("Pod");
            expectations.expect(&key, &before, &actions);
            let wait = expectations.hold(&key, &observed);
            assert_eq!(wait.is_some(), held, "{name}");
            assert!(
                wait.is_none_or(|w| w <= EXPECTATIONS_TIMEOUT),
                "{name}: {wait:?}"
            );
        }
    }

    #[test]
    fn plans_without_pod_writes_hold_nothing() {
        let key = ObjectKey::namespaced("ns", "x");
        let expectations = Expectations::new("Pod");
        expectations.expect(
            &key,
            &[meta("a", false)],
            &[Action::create(&generated_pod())],
        );
        // A later plan that writes no pods replaces the record.
        expectations.expect(&key, &[], &[]);
        assert_eq!(expectations.hold(&key, &[]), None);
        // Writes of another kind do not count.
        let other = Expectations::new("Job");
        other.expect(&key, &[], &[Action::create(&generated_pod())]);
        assert_eq!(other.hold(&key, &[]), None);
    }
}
