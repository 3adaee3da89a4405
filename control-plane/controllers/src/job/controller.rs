//! The job controller wired to the runtime: one key per Job, triggered by the Job and by
//! the pods it controls; each reconcile calls [`super::plan`] and honours its
//! `requeue_after` (active deadline, failure backoff, TTL after finished).
//!
//! The planner must see the pods it just created (its module doc): [`Expectations`] holds a
//! Job whose last plan created or deleted pods until the pod cache shows them (or a timeout
//! passes), as upstream's controller expectations do. The DaemonSet controller shares it.
//! Pods whose controlling Job is gone (or replaced by a same-named one) lose their tracking
//! finalizer ([`release_orphans`]), as upstream's orphan-pod handling does.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::runtime::watcher;

use super::pods::{has_tracking_finalizer, remove_tracking_finalizer};
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
        let named: Vec<Pod> = pods
            .state()
            .iter()
            .filter(|p| controller_key(&p.metadata, "Job").as_ref() == Some(key))
            .map(|p| (**p).clone())
            .collect();
        let Some(job) = jobs.get(&key.store_ref()) else {
            expectations.forget(key);
            return release_orphans(None, &named).into();
        };
        let uid = job.metadata.uid.as_deref().unwrap_or_default();
        let (controlled, orphans): (Vec<Pod>, Vec<Pod>) = named
            .into_iter()
            .partition(|p| is_controlled_by(&p.metadata, uid));
        let metas = || controlled.iter().map(|p| &p.metadata);
        if let Some(wait) = expectations.hold(key, metas()) {
            return Plan {
                actions: release_orphans(Some(uid), &orphans),
                requeue_after: Some(wait),
            };
        }
        let planned = super::plan(&job, &controlled, Timestamp::now());
        expectations.expect(key, metas(), &planned.actions);
        let mut actions = planned.actions;
        actions.extend(release_orphans(Some(uid), &orphans));
        Plan {
            actions,
            requeue_after: planned.requeue_after,
        }
    })
}

/// Upstream's orphan-pod handling: `pods` name a Job of this key as their controller, but
/// that Job is gone (`job_uid` `None`) or is a same-named successor; their tracking
/// finalizers are removed so they can be deleted (nobody will count them).
pub fn release_orphans(job_uid: Option<&str>, pods: &[Pod]) -> Vec<Action> {
    pods.iter()
        .filter(|p| job_uid.is_none_or(|uid| !is_controlled_by(&p.metadata, uid)))
        .filter(|p| has_tracking_finalizer(p))
        .map(remove_tracking_finalizer)
        .collect()
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

    #[test]
    fn pods_of_a_gone_or_replaced_job_lose_the_tracking_finalizer() {
        let owned_by = |job_uid: &str, finalizer: bool| {
            let mut pod = pod(&format!("pod-of-{job_uid}-{finalizer}"));
            pod.metadata.owner_references = Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                    api_version: "batch/v1".into(),
                    kind: "Job".into(),
                    name: "x".into(),
                    uid: job_uid.into(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                },
            ]);
            if finalizer {
                pod.metadata.finalizers = Some(vec![super::super::pods::TRACKING_FINALIZER.into()]);
            }
            pod
        };
        let pods = vec![
            owned_by("old", true),
            owned_by("old", false),
            owned_by("new", true),
        ];
        let released = |job_uid: Option<&str>| -> Vec<String> {
            release_orphans(job_uid, &pods)
                .iter()
                .map(|a| a.target().name.clone())
                .collect()
        };
        let cases: Vec<(&str, Option<&str>, Vec<&str>)> = vec![
            (
                "job gone",
                None,
                vec!["pod-pod-of-old-true", "pod-pod-of-new-true"],
            ),
            (
                "same-named successor",
                Some("new"),
                vec!["pod-pod-of-old-true"],
            ),
            (
                "every pod of the live job is the planner's",
                Some("old"),
                vec!["pod-pod-of-new-true"],
            ),
        ];
        for (name, job_uid, want) in cases {
            assert_eq!(released(job_uid), want, "{name}");
        }
    }
}
