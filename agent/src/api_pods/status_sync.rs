//! The status sync (the kubelet's status manager): sends the statuses of the node's pods from
//! the [`StatusStore`] to the apiserver and finishes graceful deletions.
//!
//! After every change in the store or in the API's view (and every [`RESYNC`], which also
//! compares acknowledged pods with the API again), each pod whose latest status version is not
//! acknowledged is patched (`pods/status`, merge patch with a UID precondition; several pods
//! at once) — only what
//! differs from the API's copy, nothing when nothing does. A static pod's status goes to its
//! mirror pod. Statuses that cannot be sent (apiserver down, no mirror pod yet) stay pending
//! and go out later, latest version only; a conflict re-reads the pod and tries once more.
//!
//! Deletion finishes as upstream's: a pod being deleted in the API is deleted there (grace 0,
//! its UID as precondition) once it has stopped here and the API has its final status — the
//! terminated pod's entry in the store, which is forgotten then. A deleting pod the store has
//! no entry for is deleted once the pod manager has synced (it then knows nothing of it runs).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use tokio_util::sync::CancellationToken;

use super::ApiView;
use super::desired::is_mirror;
use super::mirror::{mirror_hash, static_hash};
use super::status_plan::{StatusVersions, status_patch};
use crate::labels;
use crate::pod::spec;
use crate::pod::store::StatusStore;

/// Compare everything with the API again this often.
const RESYNC: Duration = Duration::from_secs(10);
/// At most this many status patches in flight.
const CONCURRENT_SENDS: usize = 16;
/// Retry pending statuses after this long.
const RETRY: Duration = Duration::from_secs(1);

pub(super) async fn run(
    client: kube::Client,
    mut view: ApiView,
    store: StatusStore,
    cancel: CancellationToken,
) {
    let mut local_changes = store.subscribe();
    let mut sync = StatusSync {
        client,
        store: store.clone(),
        versions: StatusVersions::default(),
        sent_to: BTreeMap::new(),
    };
    let mut resync = tokio::time::interval(RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pending = false;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            changed = local_changes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            changed = view.changes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep(RETRY), if pending => {}
            _ = resync.tick() => sync.versions.resync(),
        }
        if !view.is_ready() {
            continue;
        }
        local_changes.borrow_and_update();
        view.changes.borrow_and_update();
        let local = store.snapshot();
        let api = view.pods.state();
        pending = sync.pass(&local, &api).await;
        pending |= sync.finish_deletions(&local, &api).await;
    }
}

struct StatusSync {
    client: kube::Client,
    store: StatusStore,
    versions: StatusVersions,
    /// The API pod (UID) each local pod's status was last acknowledged by.
    sent_to: BTreeMap<String, String>,
}

impl StatusSync {
    /// One round of status patches for the running and the terminated pods; returns whether
    /// something is still pending.
    async fn pass(&mut self, running: &[Pod], api: &[Arc<Pod>]) -> bool {
        let mut local = running.to_vec();
        for pod in self.store.terminated_pods() {
            if target(&pod, api).is_some() {
                local.push(pod);
            } else {
                // The API pod is gone (deleted at once, say): nothing to tell.
                self.store.forget(spec::uid(&pod));
            }
        }
        let local = local.as_slice();
        let uids: Vec<&str> = local.iter().map(spec::uid).collect();
        self.versions.retain(|uid| uids.contains(&uid));
        self.sent_to.retain(|uid, _| uids.contains(&uid.as_str()));
        for pod in local {
            if let Some(status) = &pod.status {
                self.versions.observe(spec::uid(pod), status);
            }
        }
        let mut pending = false;
        let mut jobs = Vec::new();
        for pod in local {
            let uid = spec::uid(pod);
            let Some(target) = target(pod, api) else {
                pending = true;
                continue;
            };
            let target_uid = spec::uid(&target).to_string();
            let same_target = self.sent_to.get(uid) == Some(&target_uid);
            if same_target && self.versions.is_acked(uid) {
                continue;
            }
            let Some((_, version, status)) = self
                .versions
                .pending()
                .into_iter()
                .find(|(u, _, _)| u == uid)
                .or_else(|| pod.status.clone().map(|s| (uid.to_string(), 0, s)))
            else {
                continue;
            };
            jobs.push((uid.to_string(), target_uid, version, target, status));
        }
        // Pods change together (a burst starting): their statuses go out side by side.
        let this = &*self;
        let sent: Vec<_> = futures::stream::iter(jobs)
            .map(|(uid, target_uid, version, target, status)| async move {
                let ok = this.send(&target, &status).await;
                (uid, target_uid, version, ok)
            })
            .buffer_unordered(CONCURRENT_SENDS)
            .collect()
            .await;
        for (uid, target_uid, version, ok) in sent {
            if ok {
                self.versions.ack(&uid, version);
                self.sent_to.insert(uid, target_uid);
            } else {
                pending = true;
            }
        }
        pending
    }

    /// Whether the API pod `target` has the latest status of local pod `uid`.
    fn delivered(&self, uid: &str, target: &Pod) -> bool {
        self.versions.is_acked(uid)
            && self.sent_to.get(uid).map(String::as_str) == Some(spec::uid(target))
    }

    /// Patches `target`'s status to `status`; true when the API has it.
    async fn send(&self, target: &Pod, status: &PodStatus) -> bool {
        let namespace = spec::namespace(target);
        let name = spec::name(target);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let mut current = target.clone();
        for attempt in 0..2 {
            let Some(patch) = status_patch(&current, status) else {
                return true;
            };
            match api
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    tracing::debug!(%namespace, %name, "pod status sent");
                    return true;
                }
                Err(kube::Error::Api(s)) if s.is_conflict() && attempt == 0 => {
                    match api.get_opt(name).await {
                        Ok(Some(fresh)) if fresh.metadata.uid == target.metadata.uid => {
                            current = fresh;
                        }
                        // Gone or replaced: nothing to send it to.
                        Ok(_) => return false,
                        Err(err) => {
                            tracing::warn!(%namespace, %name, %err, "re-reading pod");
                            return false;
                        }
                    }
                }
                Err(kube::Error::Api(s)) if s.is_not_found() => return false,
                Err(err) => {
                    tracing::warn!(%namespace, %name, %err, "sending pod status");
                    return false;
                }
            }
        }
        false
    }

    /// Finishes what stopped here: API pods being deleted are deleted (grace 0, UID
    /// precondition) once their final status is delivered (or, without an entry, once the pod
    /// manager has synced); the final statuses of other terminated pods are forgotten once
    /// delivered. Returns whether something waits.
    async fn finish_deletions(&self, running: &[Pod], api: &[Arc<Pod>]) -> bool {
        let terminated = self.store.terminated_pods();
        let synced = self.store.is_synced();
        let mut waiting = false;
        for pod in api {
            if is_mirror(pod) {
                continue;
            }
            let uid = spec::uid(pod);
            let here = |pods: &[Pod]| pods.iter().any(|l| spec::uid(l) == uid);
            let step = finish_step(
                pod.metadata.deletion_timestamp.is_some(),
                here(running),
                here(&terminated).then(|| self.delivered(uid, pod)),
                synced,
            );
            match step {
                FinishStep::Nothing => {}
                FinishStep::Wait => waiting = true,
                FinishStep::Forget => self.store.forget(uid),
                FinishStep::Delete => {
                    if self.delete(pod).await {
                        self.store.forget(uid);
                    } else {
                        waiting = true;
                    }
                }
            }
        }
        waiting
    }

    /// Deletes `pod` from the API with grace 0 and its UID as precondition; true when it is
    /// gone (or replaced by another pod of that name).
    async fn delete(&self, pod: &Pod) -> bool {
        let namespace = spec::namespace(pod);
        let name = spec::name(pod);
        let uid = spec::uid(pod);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        match pods.delete(name, &params).await {
            Ok(_) => {
                tracing::info!(%namespace, %name, %uid, "pod stopped; deleted from the API");
                true
            }
            Err(kube::Error::Api(s)) if s.is_not_found() || s.is_conflict() => true,
            Err(err) => {
                tracing::warn!(%namespace, %name, %err, "deleting terminated pod");
                false
            }
        }
    }
}

/// What to do about an API pod after a status round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FinishStep {
    Nothing,
    /// Not yet: its final status (or the pod manager's sync) is still to come.
    Wait,
    /// Its final status is delivered and it is not being deleted: drop the entry.
    Forget,
    /// Delete it from the API.
    Delete,
}

/// `deleting`: the API pod has a `deletionTimestamp`; `running`: a worker has it;
/// `terminated`: whether its final status is delivered, when the store has one; `synced`: the
/// pod manager has synced with the runtime.
fn finish_step(
    deleting: bool,
    running: bool,
    terminated: Option<bool>,
    synced: bool,
) -> FinishStep {
    match (deleting, running, terminated) {
        (_, true, _) => FinishStep::Nothing,
        (_, false, Some(false)) => FinishStep::Wait,
        (true, false, Some(true)) => FinishStep::Delete,
        (false, false, Some(true)) => FinishStep::Forget,
        (true, false, None) if synced => FinishStep::Delete,
        (true, false, None) => FinishStep::Wait,
        (false, false, None) => FinishStep::Nothing,
    }
}

/// The API pod that shows `local`'s status: the pod itself, or a static pod's mirror pod.
fn target(local: &Pod, api: &[Arc<Pod>]) -> Option<Arc<Pod>> {
    let is_static = local
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(labels::CONFIG_SOURCE))
        .is_some_and(|s| s != "api");
    api.iter()
        .find(|p| {
            if is_static {
                is_mirror(p)
                    && spec::namespace(p) == spec::namespace(local)
                    && spec::name(p) == spec::name(local)
                    && mirror_hash(p) == Some(static_hash(local))
            } else {
                !is_mirror(p) && spec::uid(p) == spec::uid(local)
            }
        })
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::{FinishStep, finish_step};

    #[test]
    fn finish_step_table() {
        use FinishStep::{Delete, Forget, Nothing, Wait};
        // (deleting, running, terminated: delivered?, synced) → step
        let cases = [
            ((true, true, None, true), Nothing, "still running here"),
            (
                (true, false, Some(false), true),
                Wait,
                "final status not delivered yet",
            ),
            (
                (true, false, Some(true), false),
                Delete,
                "final status delivered",
            ),
            (
                (false, false, Some(true), true),
                Forget,
                "terminated, not deleted: done",
            ),
            (
                (false, false, Some(false), true),
                Wait,
                "terminated, status on its way",
            ),
            (
                (true, false, None, true),
                Delete,
                "never ran here (manager synced)",
            ),
            (
                (true, false, None, false),
                Wait,
                "manager not synced: may still run",
            ),
            ((false, false, None, true), Nothing, "not ours to finish"),
        ];
        for ((deleting, running, terminated, synced), want, what) in cases {
            assert_eq!(
                finish_step(deleting, running, terminated, synced),
                want,
                "{what}"
            );
        }
    }
}
