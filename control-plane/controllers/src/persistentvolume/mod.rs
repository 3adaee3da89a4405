//! The persistentvolume binder's planner: Immediate binding of PersistentVolumeClaims to
//! PersistentVolumes (upstream's `pv-controller`, without provisioning, recycling or
//! deletion).
//!
//! - A claim naming a volume (`spec.volumeName`) binds to it when the volume is free or
//!   pre-bound to the claim (`claimRef` without uid) and satisfies it.
//! - Otherwise a claim binds to the smallest `Available` volume that satisfies it: same
//!   `storageClassName` (unset is the empty class), the claim's access modes a subset of the
//!   volume's, capacity at least the request, the claim's label selector, the same
//!   `volumeMode` (unset is `Filesystem`). Volumes pre-bound to the claim come first.
//! - Binding writes, in upstream's order: the volume's `spec.claimRef`, its `status.phase:
//!   Bound`, the claim's `spec.volumeName`, its status (`Bound`, `capacity`, `accessModes`).
//!   Specs are PUT (a stale plan conflicts, so two claims never take one volume); statuses
//!   are merge-patched.
//! - A volume whose `claimRef` names a claim that is gone (or a successor with another uid)
//!   is `Released` whatever its reclaim policy (Retain is what happens; Delete and Recycle
//!   are not implemented). A volume without `claimRef` is `Available`.
//! - A bound claim whose volume is gone or bound elsewhere is `Lost`.
//! - Claims of a StorageClass with `volumeBindingMode: WaitForFirstConsumer` and no
//!   `volumeName` are left alone: the scheduler would bind them with the pod (not
//!   implemented), so they stay `Pending`.

pub mod controller;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kwk_api::meta::selector_matches;
use serde_json::json;

use crate::action::Action;

/// Set on a volume (and claim) the binder bound.
pub const ANNOTATION_BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// Set on a claim once its binding is complete.
pub const ANNOTATION_BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// The binding mode the binder leaves to the scheduler.
pub const WAIT_FOR_FIRST_CONSUMER: &str = "WaitForFirstConsumer";

fn pv_name(pv: &PersistentVolume) -> &str {
    pv.metadata.name.as_deref().unwrap_or_default()
}

fn pv_phase(pv: &PersistentVolume) -> &str {
    pv.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

fn claim_phase(claim: &PersistentVolumeClaim) -> &str {
    claim
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

fn claim_ref(pv: &PersistentVolume) -> Option<&ObjectReference> {
    pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref())
}

fn volume_name(claim: &PersistentVolumeClaim) -> &str {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .unwrap_or_default()
}

fn claim_key(claim: &PersistentVolumeClaim) -> (&str, &str) {
    (
        claim.metadata.namespace.as_deref().unwrap_or_default(),
        claim.metadata.name.as_deref().unwrap_or_default(),
    )
}

/// Whether `reference` names `claim`: same namespace and name, and the same uid when the
/// reference has one (a pre-bound reference has none).
fn refers_to(reference: &ObjectReference, claim: &PersistentVolumeClaim) -> bool {
    let (namespace, name) = claim_key(claim);
    reference.namespace.as_deref().unwrap_or_default() == namespace
        && reference.name.as_deref().unwrap_or_default() == name
        && reference
            .uid
            .as_deref()
            .filter(|uid| !uid.is_empty())
            .is_none_or(|uid| claim.metadata.uid.as_deref() == Some(uid))
}

fn storage(map: Option<&BTreeMap<String, Quantity>>) -> i64 {
    map.and_then(|m| m.get("storage"))
        .and_then(|q| kwk_api::quantity::parse(&q.0).ok())
        .map_or(0, |q| q.value())
}

fn pv_capacity(pv: &PersistentVolume) -> i64 {
    storage(pv.spec.as_ref().and_then(|s| s.capacity.as_ref()))
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
    let request = storage(spec.resources.as_ref().and_then(|r| r.requests.as_ref()));
    if pv_capacity(pv) < request {
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

/// Whether `claim` waits for a pod before binding (its class says `WaitForFirstConsumer`).
fn waits_for_consumer(claim: &PersistentVolumeClaim, classes: &[StorageClass]) -> bool {
    let class = claim
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .unwrap_or_default();
    !class.is_empty()
        && classes.iter().any(|c| {
            c.metadata.name.as_deref() == Some(class)
                && c.volume_binding_mode.as_deref() == Some(WAIT_FOR_FIRST_CONSUMER)
        })
}

/// The writes of one binder pass over every claim, volume and class.
pub fn plan(
    claims: &[PersistentVolumeClaim],
    volumes: &[PersistentVolume],
    classes: &[StorageClass],
) -> Vec<Action> {
    let mut actions = Vec::new();
    let live_claims: Vec<&PersistentVolumeClaim> = claims
        .iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .collect();
    // Volumes a claim takes in this pass (no other claim may take them too).
    let mut taken: BTreeSet<String> = BTreeSet::new();

    let mut ordered = live_claims.clone();
    ordered.sort_by(|a, b| {
        let created = |c: &PersistentVolumeClaim| c.metadata.creation_timestamp.clone();
        created(a)
            .cmp(&created(b))
            .then_with(|| claim_key(a).cmp(&claim_key(b)))
    });
    for claim in ordered {
        plan_claim(claim, volumes, classes, &mut taken, &mut actions);
    }

    for pv in volumes {
        if taken.contains(pv_name(pv)) || pv.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let want = match claim_ref(pv) {
            None => "Available",
            Some(reference) => {
                let has_uid = reference.uid.as_deref().is_some_and(|u| !u.is_empty());
                let claimed = claims.iter().any(|c| refers_to(reference, c));
                match (has_uid, claimed) {
                    (true, false) => "Released",
                    (false, _) => "Available",
                    // Bound to a live claim: the claim's pass set the phase.
                    (true, true) => continue,
                }
            }
        };
        let phase = pv_phase(pv);
        if phase != want && phase != "Failed" {
            actions.push(phase_patch_pv(pv, want));
        }
    }
    actions
}

fn phase_patch_pv(pv: &PersistentVolume, phase: &str) -> Action {
    Action::patch(pv, Some("status"), json!({"status": {"phase": phase}}))
}

/// The writes for one live claim.
fn plan_claim(
    claim: &PersistentVolumeClaim,
    volumes: &[PersistentVolume],
    classes: &[StorageClass],
    taken: &mut BTreeSet<String>,
    actions: &mut Vec<Action>,
) {
    let named = volume_name(claim);
    if !named.is_empty() {
        let Some(pv) = volumes.iter().find(|v| pv_name(v) == named) else {
            if claim_phase(claim) == "Bound" {
                actions.push(lost(claim));
            }
            return;
        };
        match claim_ref(pv) {
            Some(reference) if !refers_to(reference, claim) => {
                if claim_phase(claim) == "Bound" {
                    actions.push(lost(claim));
                }
            }
            Some(reference) if reference.uid.as_deref().is_some_and(|u| !u.is_empty()) => {
                // Both sides written: finish the phases.
                taken.insert(named.to_string());
                if pv_phase(pv) != "Bound" {
                    actions.push(phase_patch_pv(pv, "Bound"));
                }
                if !claim_status_is_bound(claim, pv) {
                    actions.push(claim_status(claim, pv));
                }
            }
            _ => {
                if check_volume(claim, pv).is_ok() && !taken.contains(named) {
                    taken.insert(named.to_string());
                    bind(claim, pv, actions);
                }
            }
        }
        return;
    }
    if waits_for_consumer(claim, classes) {
        return;
    }
    let candidate = volumes
        .iter()
        .filter(|pv| pv.metadata.deletion_timestamp.is_none() && !taken.contains(pv_name(pv)))
        .filter(|pv| match claim_ref(pv) {
            // Free (a `Pending` volume just created is as free as an `Available` one).
            None => pv_phase(pv) != "Failed",
            // Pre-bound to this claim, or a binding cut short after the volume's write.
            Some(reference) => refers_to(reference, claim),
        })
        .filter(|pv| check_volume(claim, pv).is_ok())
        .min_by(|a, b| {
            let prebound = |pv: &PersistentVolume| claim_ref(pv).is_none();
            prebound(a)
                .cmp(&prebound(b))
                .then_with(|| pv_capacity(a).cmp(&pv_capacity(b)))
                .then_with(|| pv_name(a).cmp(pv_name(b)))
        });
    if let Some(pv) = candidate {
        taken.insert(pv_name(pv).to_string());
        bind(claim, pv, actions);
    }
}

fn lost(claim: &PersistentVolumeClaim) -> Action {
    Action::patch(claim, Some("status"), json!({"status": {"phase": "Lost"}}))
}

fn claim_status_is_bound(claim: &PersistentVolumeClaim, pv: &PersistentVolume) -> bool {
    let spec = pv.spec.as_ref();
    claim.status.as_ref().is_some_and(|s| {
        s.phase.as_deref() == Some("Bound")
            && s.capacity.as_ref() == spec.and_then(|p| p.capacity.as_ref())
            && s.access_modes.as_ref() == spec.and_then(|p| p.access_modes.as_ref())
    })
}

fn claim_status(claim: &PersistentVolumeClaim, pv: &PersistentVolume) -> Action {
    let spec = pv.spec.clone().unwrap_or_default();
    Action::patch(
        claim,
        Some("status"),
        json!({"status": {
            "phase": "Bound",
            "capacity": spec.capacity,
            "accessModes": spec.access_modes,
        }}),
    )
}

/// The four writes that bind `claim` and `pv` (the ones already done are skipped).
fn bind(claim: &PersistentVolumeClaim, pv: &PersistentVolume, actions: &mut Vec<Action>) {
    let reference = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        namespace: claim.metadata.namespace.clone(),
        name: claim.metadata.name.clone(),
        uid: claim.metadata.uid.clone(),
        resource_version: claim.metadata.resource_version.clone(),
        ..ObjectReference::default()
    };
    let already = claim_ref(pv).is_some_and(|r| r.uid.is_some() && r.uid == reference.uid);
    if !already {
        let mut bound_pv = pv.clone();
        if claim_ref(pv).is_none() {
            bound_pv
                .metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(ANNOTATION_BOUND_BY_CONTROLLER.into(), "yes".into());
        }
        bound_pv.spec.get_or_insert_with(Default::default).claim_ref = Some(reference);
        actions.push(Action::update(&bound_pv));
    }
    if !already || pv_phase(pv) != "Bound" {
        actions.push(phase_patch_pv(pv, "Bound"));
    }

    let mut bound_claim = claim.clone();
    let annotations = bound_claim
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new);
    annotations.insert(ANNOTATION_BIND_COMPLETED.into(), "yes".into());
    if volume_name(claim).is_empty() {
        annotations.insert(ANNOTATION_BOUND_BY_CONTROLLER.into(), "yes".into());
    }
    bound_claim
        .spec
        .get_or_insert_with(Default::default)
        .volume_name = Some(pv_name(pv).to_string());
    actions.push(Action::update(&bound_claim));
    actions.push(claim_status(claim, pv));
}
