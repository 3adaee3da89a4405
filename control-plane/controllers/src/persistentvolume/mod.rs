//! The persistentvolume binder's planner: Immediate binding of PersistentVolumeClaims to
//! PersistentVolumes (upstream's `pv-controller`, without provisioning, recycling or
//! deletion).
//!
//! - A claim naming a volume (`spec.volumeName`) binds to it when the volume is free or
//!   pre-bound to the claim (`claimRef` without uid) and satisfies it.
//! - Otherwise a claim binds to the smallest `Available` volume that satisfies it: same
//!   `storageClassName` (unset is the empty class), the claim's access modes a subset of the
//!   volume's, capacity at least the request, the claim's label selector, the same
//!   `volumeMode` (unset is `Filesystem`). A volume pre-bound to the claim comes first.
//! - Binding writes, in upstream's order: the volume's `spec.claimRef`, its `status.phase:
//!   Bound`, the claim's `spec.volumeName`, its status (`Bound`, `capacity`, `accessModes`).
//!   Specs are PUT (a stale plan conflicts, so two claims never take one volume); statuses
//!   are merge-patched.
//! - A volume whose `claimRef` names a claim that is gone (or a successor with another uid)
//!   is `Released` whatever its reclaim policy (Retain is what happens; Delete and Recycle
//!   are not implemented), also while it is being deleted (`pv-protection` holds a deleted
//!   volume until it is no longer `Bound`). A volume without `claimRef` is `Available`.
//! - A bound claim whose volume is gone or bound elsewhere is `Lost`.
//! - Claims of a StorageClass with `volumeBindingMode: WaitForFirstConsumer` and no
//!   `volumeName` bind only to a volume pre-bound to them: the scheduler picks the volume
//!   on the pod's node and writes its `claimRef` (upstream's VolumeBinding), this binder
//!   completes the claim side. Volume matching is shared with the scheduler
//!   ([`kwk_api::persistent_volume`]).

pub mod controller;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
pub use kwk_api::persistent_volume::{
    ANNOTATION_BIND_COMPLETED, ANNOTATION_BOUND_BY_CONTROLLER, Mismatch, WAIT_FOR_FIRST_CONSUMER,
    check_volume,
};
use kwk_api::persistent_volume::{
    MatchOptions, bind_volume_to_claim, claim_key, claim_phase, claim_ref, find_matching_volume,
    is_delay_binding, pv_name, pv_phase, refers_to, volume_name,
};
use serde_json::json;

use crate::action::Action;

/// Whether `claim` waits for a pod before binding (its class says `WaitForFirstConsumer`).
fn waits_for_consumer(claim: &PersistentVolumeClaim, classes: &[StorageClass]) -> bool {
    is_delay_binding(claim, |name| {
        classes
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(name))
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

    // Volumes being deleted too, as upstream: a deleted volume held by `pv-protection`
    // while `Bound` may go once it is `Released`.
    for pv in volumes {
        if taken.contains(pv_name(pv)) {
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
    // A claim waiting for its first consumer binds only to the volume the scheduler (or
    // its author) pre-bound to it.
    let excluded = |name: &str| taken.contains(name);
    let options = MatchOptions {
        excluded: &excluded,
        prebound_only: waits_for_consumer(claim, classes),
        node_fits: None,
    };
    let candidate = find_matching_volume(claim, volumes, &options);
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
    let already = claim_ref(pv)
        .is_some_and(|r| r.uid.is_some() && r.uid == claim.metadata.uid && refers_to(r, claim));
    if !already {
        actions.push(Action::update(&bind_volume_to_claim(pv, claim)));
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
