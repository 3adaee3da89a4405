//! Controller-reference claiming (upstream's `ControllerRefManager`): which objects a
//! controller owns, which orphans it adopts and which of its own it releases, plus the merge
//! patches that adopt and release. Shared by the replicaset (pods) and deployment
//! (replica sets) planners.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use serde_json::{Value, json};

use crate::common::controller_of;

/// What a controller does with one candidate object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Controlled by us and selected: ours.
    Owned,
    /// An orphan we select: patch our controller reference on, then it is ours.
    Adopt,
    /// Controlled by us but no longer selected: patch our reference off.
    Release,
    /// Someone else's, or not for us.
    Ignore,
}

/// Decides the claim of `object` by the controller `owner` with `selector`.
pub fn claim(owner: &ObjectMeta, selector: &LabelSelector, object: &ObjectMeta) -> Claim {
    let owner_uid = owner.uid.as_deref().unwrap_or_default();
    let owner_deleting = owner.deletion_timestamp.is_some();
    let selected = selector_selects(selector, object.labels.as_ref());
    match controller_of(object) {
        Some(reference) if reference.uid != owner_uid => Claim::Ignore,
        Some(_) if selected => Claim::Owned,
        Some(_) if owner_deleting => Claim::Ignore,
        Some(_) => Claim::Release,
        None if owner_deleting || !selected => Claim::Ignore,
        None if object.deletion_timestamp.is_some() => Claim::Ignore,
        None if owner.namespace.is_some() && owner.namespace != object.namespace => Claim::Ignore,
        None => Claim::Adopt,
    }
}

/// Whether `selector` selects an object with `labels`.
pub fn selector_selects(
    selector: &LabelSelector,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let empty = BTreeMap::new();
    kwk_api::meta::selector_matches(selector, labels.unwrap_or(&empty))
}

/// The merge patch that puts `controller` on `object` (its other references kept). The
/// object's uid and resourceVersion go along as preconditions.
pub fn adopt_patch(object: &ObjectMeta, controller: OwnerReference) -> Value {
    let mut references: Vec<OwnerReference> = object
        .owner_references
        .iter()
        .flatten()
        .filter(|r| r.uid != controller.uid)
        .cloned()
        .collect();
    references.push(controller);
    reference_patch(object, &references)
}

/// The merge patch that takes the reference to `owner_uid` off `object`.
pub fn release_patch(object: &ObjectMeta, owner_uid: &str) -> Value {
    let references: Vec<OwnerReference> = object
        .owner_references
        .iter()
        .flatten()
        .filter(|r| r.uid != owner_uid)
        .cloned()
        .collect();
    reference_patch(object, &references)
}

fn reference_patch(object: &ObjectMeta, references: &[OwnerReference]) -> Value {
    let mut metadata = serde_json::Map::new();
    metadata.insert(
        "ownerReferences".into(),
        if references.is_empty() {
            Value::Null
        } else {
            serde_json::to_value(references).unwrap_or(Value::Null)
        },
    );
    if let Some(uid) = &object.uid {
        metadata.insert("uid".into(), json!(uid));
    }
    if let Some(rv) = &object.resource_version {
        metadata.insert("resourceVersion".into(), json!(rv));
    }
    json!({ "metadata": metadata })
}
