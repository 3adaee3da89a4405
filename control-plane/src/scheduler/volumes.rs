//! The running scheduler's side of VolumeBinding: PersistentVolumeClaims, PersistentVolumes
//! and StorageClasses watched into the snapshot's [`VolumeCache`](kwk_scheduler::volumes)
//! (an addition or a relevant change moves unschedulable pods back to the queue), the
//! volumes of a decision assumed bound, and PreBind: each chosen volume's `claimRef`
//! written (with `pv.kubernetes.io/bound-by-controller: "yes"`, as upstream's scheduler
//! does for static volumes; no claim annotation), then a wait, up to
//! [`SchedulerOptions::bind_timeout`](super::SchedulerOptions), until the pv controller has
//! bound every claim (`volumeName` and `pv.kubernetes.io/bind-completed`). On failure the
//! caller drops the assumptions and backs the pod off.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use kwk_api::persistent_volume::{bind_volume_to_claim, claim_ref, is_fully_bound};
use kwk_scheduler::plugins::volume_binding::Binding;
use kwk_scheduler::queue::ClusterEvent;
use tokio_util::sync::CancellationToken;

use super::state::SchedulerState;
use super::{Oneshots, Shared, watch_kind};

/// Why PreBind failed (upstream's wording where it has one).
#[derive(Debug, thiserror::Error)]
pub enum PreBindError {
    #[error("updating PersistentVolume {volume}: {source}")]
    Update {
        volume: String,
        #[source]
        source: kube::Error,
    },
    #[error("pv \"{0}\" not found")]
    VolumeGone(String),
    #[error("persistentvolumeclaim \"{0}\" not found")]
    ClaimGone(String),
    #[error("ClaimRef got reset for pv \"{0}\"")]
    ClaimRefReset(String),
    #[error("pod does not exist any more")]
    PodGone,
    #[error("timed out waiting for the condition")]
    Timeout,
}

fn changed<T: PartialEq>(old: Option<&Arc<T>>, new: &T) -> Option<bool> {
    old.map(|old| old.as_ref() != new)
}

impl SchedulerState {
    /// A volume was added or changed.
    pub fn apply_pv(&mut self, pv: PersistentVolume, now: Timestamp) -> bool {
        let relevant = |p: &PersistentVolume| {
            (
                p.metadata.labels.clone(),
                p.spec.clone(),
                p.status.as_ref().and_then(|s| s.phase.clone()),
            )
        };
        let new = relevant(&pv);
        let old = self.snapshot.volumes_mut().upsert_volume(pv);
        let old = old.map(|o| Arc::new(relevant(&o)));
        self.volume_event(
            changed(old.as_ref(), &new),
            ClusterEvent::PvAdded,
            ClusterEvent::PvUpdated,
            now,
        )
    }

    /// A claim was added or changed.
    pub fn apply_pvc(&mut self, claim: PersistentVolumeClaim, now: Timestamp) -> bool {
        let relevant = |c: &PersistentVolumeClaim| {
            (
                c.metadata.annotations.clone(),
                c.metadata.deletion_timestamp.clone(),
                c.spec.clone(),
                c.status.as_ref().and_then(|s| s.phase.clone()),
            )
        };
        let new = relevant(&claim);
        let old = self.snapshot.volumes_mut().upsert_claim(claim);
        let old = old.map(|o| Arc::new(relevant(&o)));
        self.volume_event(
            changed(old.as_ref(), &new),
            ClusterEvent::PvcAdded,
            ClusterEvent::PvcUpdated,
            now,
        )
    }

    /// A StorageClass was added or changed.
    pub fn apply_storage_class(&mut self, class: StorageClass, now: Timestamp) -> bool {
        let new = (class.provisioner.clone(), class.volume_binding_mode.clone());
        let old = self.snapshot.volumes_mut().upsert_class(class);
        let old = old.map(|o| Arc::new((o.provisioner.clone(), o.volume_binding_mode.clone())));
        self.volume_event(
            changed(old.as_ref(), &new),
            ClusterEvent::StorageClassAdded,
            ClusterEvent::StorageClassUpdated,
            now,
        )
    }

    /// Moves unschedulable pods for an addition (`None`) or a relevant change.
    fn volume_event(
        &mut self,
        changed: Option<bool>,
        added: ClusterEvent,
        updated: ClusterEvent,
        now: Timestamp,
    ) -> bool {
        let event = match changed {
            None => added,
            Some(true) => updated,
            Some(false) => return false,
        };
        self.queue.on_cluster_event(event, now);
        true
    }

    /// Assumes the volumes of a decision bound to their claims; returns them as they are
    /// to be written (same order as `bindings`).
    pub fn assume_volumes(&mut self, bindings: &[Binding]) -> Vec<PersistentVolume> {
        let cache = self.snapshot.volumes_mut();
        let mut written = Vec::with_capacity(bindings.len());
        for binding in bindings {
            let (Some(pv), Some(claim)) = (
                cache.volume(&binding.volume),
                cache.claim(&binding.claim_namespace, &binding.claim_name),
            ) else {
                continue;
            };
            let bound = bind_volume_to_claim(pv, claim);
            cache.assume(bound.clone());
            written.push(bound);
        }
        written
    }

    /// Drops the assumptions of [`SchedulerState::assume_volumes`].
    pub fn restore_volumes(&mut self, bindings: &[Binding]) {
        for binding in bindings {
            self.snapshot.volumes_mut().restore(&binding.volume);
        }
    }

    /// PreBind's check: `Ok(true)` once every claim of `bindings` is fully bound to a
    /// volume that still names it, `Ok(false)` while the pv controller is at work.
    /// `written` holds the resourceVersions of the volumes as written.
    pub fn volumes_bound(
        &self,
        pod_key: &str,
        bindings: &[Binding],
        written: &[Option<String>],
    ) -> Result<bool, PreBindError> {
        if !self.assumed.contains(pod_key) {
            return Err(PreBindError::PodGone);
        }
        let cache = self.snapshot.volumes();
        for (binding, version) in bindings.iter().zip(written) {
            let pv = cache
                .watched_volume(&binding.volume)
                .ok_or_else(|| PreBindError::VolumeGone(binding.volume.clone()))?;
            if older(pv.metadata.resource_version.as_deref(), version.as_deref()) {
                return Ok(false);
            }
            if claim_ref(pv).is_none_or(|r| r.uid.as_deref().unwrap_or_default().is_empty()) {
                return Err(PreBindError::ClaimRefReset(binding.volume.clone()));
            }
            let claim = cache
                .claim(&binding.claim_namespace, &binding.claim_name)
                .ok_or_else(|| PreBindError::ClaimGone(binding.claim_name.clone()))?;
            if !is_fully_bound(claim) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Whether the watched resourceVersion is older than the written one (numeric versions,
/// as the apiserver's are).
fn older(watched: Option<&str>, written: Option<&str>) -> bool {
    let number = |v: Option<&str>| v.and_then(|v| v.parse::<u64>().ok());
    match (number(watched), number(written)) {
        (Some(watched), Some(written)) => watched < written,
        _ => false,
    }
}

/// PreBind: writes the volumes' `claimRef`s (those not written yet), then waits until the
/// pv controller has bound every claim, or `timeout`.
pub(super) async fn pre_bind(
    client: &kube::Client,
    shared: &Shared,
    pod_key: &str,
    bindings: &[Binding],
    volumes: Vec<PersistentVolume>,
    timeout: Duration,
) -> Result<(), PreBindError> {
    let api: Api<PersistentVolume> = Api::all(client.clone());
    let mut written = Vec::with_capacity(volumes.len());
    for pv in volumes {
        let name = pv.metadata.name.clone().unwrap_or_default();
        let current = shared
            .lock()
            .snapshot
            .volumes()
            .watched_volume(&name)
            .cloned();
        if current.as_deref() == Some(&pv) {
            // Already bound to the claim (an earlier attempt's write).
            written.push(pv.metadata.resource_version.clone());
            continue;
        }
        let stored = api
            .replace(&name, &PostParams::default(), &pv)
            .await
            .map_err(|source| PreBindError::Update {
                volume: name.clone(),
                source,
            })?;
        written.push(stored.metadata.resource_version);
    }
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if shared.lock().volumes_bound(pod_key, bindings, &written)? {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(PreBindError::Timeout);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Watches claims, volumes and StorageClasses into the state.
pub(super) fn spawn_watches(
    tasks: &mut tokio::task::JoinSet<()>,
    client: &kube::Client,
    shared: &Arc<Shared>,
    token: &CancellationToken,
    senders: Oneshots<'_>,
) {
    let mut synced = || {
        senders
            .next()
            .unwrap_or_else(|| tokio::sync::oneshot::channel().0)
    };
    tasks.spawn(watch_kind(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        shared.clone(),
        token.clone(),
        synced(),
        |s, claim, now| s.apply_pvc(claim, now),
        |s, claim, _| {
            s.snapshot.volumes_mut().remove_claim(claim);
            false
        },
        |s, listed: &HashSet<String>, _| {
            s.snapshot.volumes_mut().retain_claims(listed);
            false
        },
    ));
    tasks.spawn(watch_kind(
        Api::<PersistentVolume>::all(client.clone()),
        shared.clone(),
        token.clone(),
        synced(),
        |s, pv, now| s.apply_pv(pv, now),
        |s, pv, _| {
            let name = pv.metadata.name.as_deref().unwrap_or_default();
            s.snapshot.volumes_mut().remove_volume(name);
            false
        },
        |s, listed: &HashSet<String>, _| {
            s.snapshot.volumes_mut().retain_volumes(listed);
            false
        },
    ));
    tasks.spawn(watch_kind(
        Api::<StorageClass>::all(client.clone()),
        shared.clone(),
        token.clone(),
        synced(),
        |s, class, now| s.apply_storage_class(class, now),
        |s, class, _| {
            let name = class.metadata.name.as_deref().unwrap_or_default();
            s.snapshot.volumes_mut().remove_class(name);
            false
        },
        |s, listed: &HashSet<String>, _| {
            s.snapshot.volumes_mut().retain_classes(listed);
            false
        },
    ));
}

#[cfg(test)]
#[path = "volumes_tests.rs"]
mod tests;
