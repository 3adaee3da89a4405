//! The planners of upstream's storage-object-in-use protection (`pvc-protection` and
//! `pv-protection`): when a deleted PersistentVolumeClaim or PersistentVolume may go.
//!
//! The apiserver's `StorageObjectInUseProtection` admission creates claims with the
//! `kubernetes.io/pvc-protection` finalizer and volumes with `kubernetes.io/pv-protection`,
//! so a delete only sets their `deletionTimestamp`. These planners remove the finalizer once
//! the object is no longer in use, and, as upstream, add it to live objects that lack it
//! (created while the plugin was off).
//!
//! - A claim is in use while a pod of its namespace that is scheduled (`spec.nodeName` set)
//!   names it in a `persistentVolumeClaim` volume — whatever the pod's phase: a `Succeeded`
//!   or `Failed` pod holds its claims until the pod object is gone, as upstream — or has a
//!   generic ephemeral volume whose claim (`<pod>-<volume>`, controlled by the pod) it is,
//!   unless the pod is shut down (deleted with grace period 0: the kubelet is done with it
//!   or it was force-deleted). Pods not yet scheduled do not count: the scheduler does not
//!   place a pod whose claim is being deleted, and kwk-node, as upstream's kubelet, refuses
//!   the claim to a pod bound to the node directly.
//! - A volume is in use while its `status.phase` is `Bound`; the binder turns it `Released`
//!   once its claim is gone.
//!
//! Finalizers are removed with a merge patch of the remaining list guarded by the object's
//! `resourceVersion` ([`crate::common::remove_finalizer`]), so finalizers others add or
//! remove meanwhile are never clobbered: the stale patch conflicts and the key is planned
//! again.
//!
//! Upstream also lists the namespace's pods live before releasing a claim, in case its
//! cache has not seen a new pod yet; these planners decide from the watch caches alone.

pub mod controller;

#[cfg(test)]
mod tests;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod, Volume};
use kwk_api::persistent_volume::pv_phase;
pub use kwk_api::persistent_volume::{PV_PROTECTION_FINALIZER, PVC_PROTECTION_FINALIZER};

use crate::action::Action;
use crate::common::{add_finalizer, has_finalizer, is_controlled_by, remove_finalizer};

/// The name of the claim a generic ephemeral volume of `pod` uses: `<pod>-<volume>`.
fn ephemeral_claim_name(pod: &Pod, volume: &Volume) -> String {
    format!(
        "{}-{}",
        pod.metadata.name.as_deref().unwrap_or_default(),
        volume.name
    )
}

/// The claims `pod`'s volumes refer to, in its namespace: each `persistentVolumeClaim`'s
/// `claimName` and each generic ephemeral volume's claim. The controller requeues these
/// when the pod changes or goes.
pub fn claims_of(pod: &Pod) -> Vec<String> {
    let volumes = pod.spec.iter().flat_map(|s| s.volumes.iter().flatten());
    volumes
        .filter_map(|volume| {
            if let Some(source) = &volume.persistent_volume_claim {
                Some(source.claim_name.clone())
            } else {
                volume
                    .ephemeral
                    .as_ref()
                    .map(|_| ephemeral_claim_name(pod, volume))
            }
        })
        .collect()
}

/// Whether the pod was deleted with grace period 0: the kubelet finished with it, or it was
/// force-deleted. Its ephemeral claims may go even if the object lingers (a finalizer of the
/// pod waiting for the claim would otherwise wait forever).
fn is_shut_down(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
        && pod.metadata.deletion_grace_period_seconds == Some(0)
}

/// Whether `pod` keeps `claim` from going (see the module doc).
pub fn pod_uses_claim(pod: &Pod, claim: &PersistentVolumeClaim) -> bool {
    let claim_name = claim.metadata.name.as_deref().unwrap_or_default();
    let Some(spec) = &pod.spec else {
        return false;
    };
    if pod.metadata.namespace != claim.metadata.namespace
        || spec.node_name.as_deref().unwrap_or_default().is_empty()
    {
        return false;
    }
    spec.volumes.iter().flatten().any(|volume| {
        if let Some(source) = &volume.persistent_volume_claim {
            return source.claim_name == claim_name;
        }
        volume.ephemeral.is_some()
            && !is_shut_down(pod)
            && ephemeral_claim_name(pod, volume) == claim_name
            && pod
                .metadata
                .uid
                .as_deref()
                .is_some_and(|uid| is_controlled_by(&claim.metadata, uid))
    })
}

/// The writes for one claim given the pods (of any namespace; only the claim's count): the
/// finalizer's removal once a deleted claim is unused, its addition to a live claim
/// without it, nothing otherwise.
pub fn plan_claim<'a>(
    claim: &PersistentVolumeClaim,
    pods: impl IntoIterator<Item = &'a Pod>,
) -> Vec<Action> {
    let protected = has_finalizer(&claim.metadata, PVC_PROTECTION_FINALIZER);
    if claim.metadata.deletion_timestamp.is_none() {
        return if protected {
            Vec::new()
        } else {
            vec![add_finalizer(claim, PVC_PROTECTION_FINALIZER)]
        };
    }
    if protected && !pods.into_iter().any(|pod| pod_uses_claim(pod, claim)) {
        vec![remove_finalizer(claim, PVC_PROTECTION_FINALIZER)]
    } else {
        Vec::new()
    }
}

/// The writes for one volume: the finalizer's removal once a deleted volume is not `Bound`,
/// its addition to a live volume without it, nothing otherwise.
pub fn plan_volume(pv: &PersistentVolume) -> Vec<Action> {
    let protected = has_finalizer(&pv.metadata, PV_PROTECTION_FINALIZER);
    if pv.metadata.deletion_timestamp.is_none() {
        return if protected {
            Vec::new()
        } else {
            vec![add_finalizer(pv, PV_PROTECTION_FINALIZER)]
        };
    }
    if protected && pv_phase(pv) != "Bound" {
        vec![remove_finalizer(pv, PV_PROTECTION_FINALIZER)]
    } else {
        Vec::new()
    }
}
