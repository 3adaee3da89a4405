//! Which PersistentVolume a PersistentVolumeClaim may bind to, shared by the pv controller
//! (Immediate claims, and claims whose volume the scheduler pre-bound) and the scheduler's
//! VolumeBinding plugin (WaitForFirstConsumer claims, on one node at a time), so both pick
//! volumes by the same rules:
//!
//! - A volume is a candidate when it is not being deleted, and either has no `claimRef`
//!   (and is not `Failed`) or its `claimRef` names the claim (pre-bound: by name, and by uid
//!   when the reference has one).
//! - It must satisfy the claim ([`check_volume`]): same class, access modes, capacity,
//!   label selector, volume mode.
//! - Pre-bound volumes win; otherwise the smallest, then the first by name.
//! - Upstream's two paths: the controller binds a WaitForFirstConsumer claim only to a
//!   volume pre-bound to it ([`MatchOptions::prebound_only`]); the scheduler checks each
//!   volume against a node ([`MatchOptions::node_fits`]), and a pre-bound volume that does
//!   not fit the node means no match at all.
//!
//! Also the finalizers of upstream's storage-object-in-use protection, which the apiserver's
//! `StorageObjectInUseProtection` admission puts on new claims and volumes and the
//! `pvc-protection`/`pv-protection` controllers remove once nothing uses them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::meta::selector_matches;

/// Set on a volume (and claim) bound by the pv controller or the scheduler.
pub const ANNOTATION_BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// Set on a claim once its binding is complete.
pub const ANNOTATION_BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// The binding mode that leaves binding to the scheduler.
pub const WAIT_FOR_FIRST_CONSUMER: &str = "WaitForFirstConsumer";
/// Holds a deleted claim while a scheduled pod still uses it.
pub const PVC_PROTECTION_FINALIZER: &str = "kubernetes.io/pvc-protection";
/// Holds a deleted volume while it is `Bound` to a claim.
pub const PV_PROTECTION_FINALIZER: &str = "kubernetes.io/pv-protection";

/// The volume's name.
pub fn pv_name(pv: &PersistentVolume) -> &str {
    pv.metadata.name.as_deref().unwrap_or_default()
}

/// The volume's `status.phase` (empty when unset).
pub fn pv_phase(pv: &PersistentVolume) -> &str {
    pv.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

/// The claim's `status.phase` (empty when unset).
pub fn claim_phase(claim: &PersistentVolumeClaim) -> &str {
    claim
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

/// The volume's `spec.claimRef`.
pub fn claim_ref(pv: &PersistentVolume) -> Option<&ObjectReference> {
    pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref())
}

/// The claim's `spec.volumeName` (empty when unset).
pub fn volume_name(claim: &PersistentVolumeClaim) -> &str {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .unwrap_or_default()
}

/// The claim's `storageClassName` (unset is the empty class).
pub fn claim_class(claim: &PersistentVolumeClaim) -> &str {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .unwrap_or_default()
}

/// The claim's (namespace, name).
pub fn claim_key(claim: &PersistentVolumeClaim) -> (&str, &str) {
    (
        claim.metadata.namespace.as_deref().unwrap_or_default(),
        claim.metadata.name.as_deref().unwrap_or_default(),
    )
}

/// Whether `reference` names `claim`: same namespace and name, and the same uid when the
/// reference has one (a pre-bound reference has none).
pub fn refers_to(reference: &ObjectReference, claim: &PersistentVolumeClaim) -> bool {
    let (namespace, name) = claim_key(claim);
    reference.namespace.as_deref().unwrap_or_default() == namespace
        && reference.name.as_deref().unwrap_or_default() == name
        && reference
            .uid
            .as_deref()
            .filter(|uid| !uid.is_empty())
            .is_none_or(|uid| claim.metadata.uid.as_deref() == Some(uid))
}

/// Whether the volume's `claimRef` names the claim ([`refers_to`]).
pub fn is_bound_to(pv: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    claim_ref(pv).is_some_and(|r| refers_to(r, claim))
}

/// Whether the claim's binding is complete: it names its volume and the binder marked it
/// `bind-completed` (what the scheduler waits for before binding the pod).
pub fn is_fully_bound(claim: &PersistentVolumeClaim) -> bool {
    !volume_name(claim).is_empty()
        && claim
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(ANNOTATION_BIND_COMPLETED))
}

fn storage(map: Option<&BTreeMap<String, Quantity>>) -> i64 {
    map.and_then(|m| m.get("storage"))
        .and_then(|q| crate::quantity::parse(&q.0).ok())
        .map_or(0, |q| q.value())
}

/// The volume's `capacity.storage` in bytes (0 when unset).
pub fn pv_capacity(pv: &PersistentVolume) -> i64 {
    storage(pv.spec.as_ref().and_then(|s| s.capacity.as_ref()))
}

/// The claim's `resources.requests.storage` in bytes (0 when unset).
pub fn claim_request(claim: &PersistentVolumeClaim) -> i64 {
    storage(
        claim
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref()),
    )
}

/// Why a volume does not satisfy a claim (the first check that fails).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mismatch {
    StorageClass,
    AccessModes,
    Capacity,
    Selector,
    VolumeMode,
}

/// Whether `pv` satisfies `claim`'s class, access modes, size, selector and volume mode.
pub fn check_volume(claim: &PersistentVolumeClaim, pv: &PersistentVolume) -> Result<(), Mismatch> {
    let (Some(spec), Some(pv_spec)) = (claim.spec.as_ref(), pv.spec.as_ref()) else {
        return Err(Mismatch::StorageClass);
    };
    let class = |c: Option<&String>| c.cloned().unwrap_or_default();
    if class(spec.storage_class_name.as_ref()) != class(pv_spec.storage_class_name.as_ref()) {
        return Err(Mismatch::StorageClass);
    }
    let pv_modes = pv_spec.access_modes.as_deref().unwrap_or_default();
    if !spec
        .access_modes
        .iter()
        .flatten()
        .all(|m| pv_modes.contains(m))
    {
        return Err(Mismatch::AccessModes);
    }
    if pv_capacity(pv) < claim_request(claim) {
        return Err(Mismatch::Capacity);
    }
    if let Some(selector) = &spec.selector {
        let labels = pv.metadata.labels.clone().unwrap_or_default();
        if !selector_matches(selector, &labels) {
            return Err(Mismatch::Selector);
        }
    }
    let mode = |m: Option<&String>| m.map_or("Filesystem", String::as_str).to_string();
    if mode(spec.volume_mode.as_ref()) != mode(pv_spec.volume_mode.as_ref()) {
        return Err(Mismatch::VolumeMode);
    }
    Ok(())
}

/// Whether `claim` waits for a pod before binding: its class (found by `class_named`) says
/// `WaitForFirstConsumer`. The empty class and a class that does not exist bind at once.
pub fn is_delay_binding<'a>(
    claim: &PersistentVolumeClaim,
    class_named: impl FnOnce(&str) -> Option<&'a StorageClass>,
) -> bool {
    let class = claim_class(claim);
    !class.is_empty()
        && class_named(class)
            .is_some_and(|c| c.volume_binding_mode.as_deref() == Some(WAIT_FOR_FIRST_CONSUMER))
}

/// How [`find_matching_volume`] looks.
pub struct MatchOptions<'f> {
    /// Volumes the caller has already given to other claims.
    pub excluded: &'f dyn Fn(&str) -> bool,
    /// Only volumes pre-bound to the claim (the controller's path for WaitForFirstConsumer).
    pub prebound_only: bool,
    /// The scheduler's path: whether a volume's node affinity admits the node.
    pub node_fits: Option<&'f dyn Fn(&PersistentVolume) -> bool>,
}

impl std::fmt::Debug for MatchOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MatchOptions")
            .field("prebound_only", &self.prebound_only)
            .field("node_fits", &self.node_fits.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for MatchOptions<'_> {
    fn default() -> Self {
        MatchOptions {
            excluded: &|_| false,
            prebound_only: false,
            node_fits: None,
        }
    }
}

/// The volume `claim` should bind to among `volumes` (see the module documentation).
pub fn find_matching_volume<'v>(
    claim: &PersistentVolumeClaim,
    volumes: impl IntoIterator<Item = &'v PersistentVolume>,
    options: &MatchOptions<'_>,
) -> Option<&'v PersistentVolume> {
    let mut best: Option<&PersistentVolume> = None;
    for pv in volumes {
        if pv.metadata.deletion_timestamp.is_some() || (options.excluded)(pv_name(pv)) {
            continue;
        }
        let prebound = match claim_ref(pv) {
            None => false,
            Some(reference) if refers_to(reference, claim) => true,
            Some(_) => continue,
        };
        if check_volume(claim, pv).is_err() {
            continue;
        }
        let fits = options.node_fits.is_none_or(|fits| fits(pv));
        if prebound {
            // A volume pre-bound to the claim is the only answer, on this node or nowhere.
            return fits.then_some(pv);
        }
        if options.prebound_only || !fits || pv_phase(pv) == "Failed" {
            continue;
        }
        let smaller =
            best.is_none_or(|b| (pv_capacity(pv), pv_name(pv)) < (pv_capacity(b), pv_name(b)));
        if smaller {
            best = Some(pv);
        }
    }
    best
}

/// `pv` with its `claimRef` naming `claim` (uid and resourceVersion included) and, unless
/// the volume was already bound or pre-bound to the claim, `bound-by-controller: yes`: the
/// volume side of a binding, as the pv controller and the scheduler write it.
pub fn bind_volume_to_claim(
    pv: &PersistentVolume,
    claim: &PersistentVolumeClaim,
) -> PersistentVolume {
    let mut bound = pv.clone();
    if !is_bound_to(pv, claim) {
        bound
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .entry(ANNOTATION_BOUND_BY_CONTROLLER.into())
            .or_insert_with(|| "yes".into());
    }
    let reference = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        namespace: claim.metadata.namespace.clone(),
        name: claim.metadata.name.clone(),
        uid: claim.metadata.uid.clone(),
        resource_version: claim.metadata.resource_version.clone(),
        ..ObjectReference::default()
    };
    bound.spec.get_or_insert_with(Default::default).claim_ref = Some(reference);
    bound
}

#[cfg(test)]
#[path = "persistent_volume_tests.rs"]
mod tests;
