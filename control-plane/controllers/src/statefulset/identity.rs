//! What a StatefulSet member looks like: its stable name `<set>-<ordinal>`, identity
//! labels, hostname and subdomain, revision label, the claims from `volumeClaimTemplates`
//! (`<template>-<set>-<ordinal>`) mounted in place of same-named volumes, and the claims'
//! owner references that carry `persistentVolumeClaimRetentionPolicy`.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde_json::{Value, json};

use crate::common::controller_ref;
use crate::daemonset::history::REVISION_HASH_LABEL;

/// The label naming a member pod.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The label carrying a member pod's ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// `<set>-<ordinal>`.
pub fn pod_name(set: &StatefulSet, ordinal: i32) -> String {
    format!(
        "{}-{ordinal}",
        set.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The ordinal of a member pod's name, if it is `<set>-<digits>`.
pub fn ordinal_of(set: &StatefulSet, pod: &Pod) -> Option<i32> {
    let set_name = set.metadata.name.as_deref()?;
    let digits = pod
        .metadata
        .name
        .as_deref()?
        .strip_prefix(set_name)?
        .strip_prefix('-')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The revision a pod runs (its `controller-revision-hash`: a revision name for StatefulSets).
pub fn revision_of(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(REVISION_HASH_LABEL)
        .map(String::as_str)
}

/// `<template>-<set>-<ordinal>`.
pub fn claim_name(set: &StatefulSet, template: &PersistentVolumeClaim, ordinal: i32) -> String {
    format!(
        "{}-{}",
        template.metadata.name.as_deref().unwrap_or_default(),
        pod_name(set, ordinal)
    )
}

fn claim_templates(set: &StatefulSet) -> &[PersistentVolumeClaim] {
    set.spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.as_deref())
        .unwrap_or_default()
}

/// The labels identifying member `ordinal`.
fn identity_labels(set: &StatefulSet, ordinal: i32) -> [(String, String); 2] {
    [
        (POD_NAME_LABEL.to_string(), pod_name(set, ordinal)),
        (POD_INDEX_LABEL.to_string(), ordinal.to_string()),
    ]
}

/// Member `ordinal` built from `template` at revision `revision_name`.
pub fn new_pod(
    set: &StatefulSet,
    template: &PodTemplateSpec,
    ordinal: i32,
    revision_name: &str,
) -> Pod {
    let name = pod_name(set, ordinal);
    let template_meta = template.metadata.clone().unwrap_or_default();
    let mut labels = template_meta.labels.unwrap_or_default();
    labels.extend(identity_labels(set, ordinal));
    labels.insert(REVISION_HASH_LABEL.to_string(), revision_name.to_string());
    let mut spec = template.spec.clone().unwrap_or_default();
    spec.hostname = Some(name.clone());
    spec.subdomain = set
        .spec
        .as_ref()
        .and_then(|s| s.service_name.clone())
        .filter(|s| !s.is_empty());
    let templates = claim_templates(set);
    let mut volumes: Vec<Volume> = templates
        .iter()
        .map(|t| Volume {
            name: t.metadata.name.clone().unwrap_or_default(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim_name(set, t, ordinal),
                read_only: None,
            }),
            ..Volume::default()
        })
        .collect();
    volumes.extend(spec.volumes.take().into_iter().flatten().filter(|v| {
        !templates
            .iter()
            .any(|t| t.metadata.name.as_deref() == Some(&v.name))
    }));
    spec.volumes = (!volumes.is_empty()).then_some(volumes);
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: set.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: template_meta.annotations,
            finalizers: template_meta.finalizers,
            owner_references: Some(vec![controller_ref(set)]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// A patch restoring the identity labels of member `ordinal`, if they drifted.
pub fn identity_patch(set: &StatefulSet, pod: &Pod, ordinal: i32) -> Option<Value> {
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let wrong: BTreeMap<String, String> = identity_labels(set, ordinal)
        .into_iter()
        .filter(|(k, v)| labels.get(k) != Some(v))
        .collect();
    (!wrong.is_empty()).then(|| json!({ "metadata": { "labels": wrong } }))
}

/// The retention policy's two choices: whether claims go with the set, and with scale-down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    pub delete_when_deleted: bool,
    pub delete_when_scaled: bool,
}

/// The set's `persistentVolumeClaimRetentionPolicy` (default: Retain, Retain).
pub fn retention(set: &StatefulSet) -> Retention {
    let policy = set
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_claim_retention_policy.as_ref());
    let deletes = |v: Option<&String>| v.is_some_and(|v| v == "Delete");
    Retention {
        delete_when_deleted: deletes(policy.and_then(|p| p.when_deleted.as_ref())),
        delete_when_scaled: deletes(policy.and_then(|p| p.when_scaled.as_ref())),
    }
}

/// The owner references a member's claim should carry: upstream scrubs its references to
/// the set and the pod, then adds a controller reference to the set (`whenDeleted: Delete`,
/// while the member is in range) or to the pod (`whenScaled: Delete`, once it is scaled
/// down). A claim controlled by something else only loses the references to set and pod.
pub fn wanted_claim_owners(
    set: &StatefulSet,
    claim_refs: &[OwnerReference],
    pod: Option<&Pod>,
    scaled_down: bool,
) -> Vec<OwnerReference> {
    let set_uid = set.metadata.uid.as_deref().unwrap_or_default();
    let set_name = set.metadata.name.as_deref().unwrap_or_default();
    let pod_uid = pod
        .and_then(|p| p.metadata.uid.as_deref())
        .unwrap_or_default();
    let pod_name = pod
        .and_then(|p| p.metadata.name.as_deref())
        .unwrap_or_default();
    let refers_to_set = |r: &OwnerReference| r.kind == "StatefulSet" && r.name == set_name;
    let refers_to_pod = |r: &OwnerReference| pod.is_some() && r.kind == "Pod" && r.name == pod_name;
    let unexpected_controller = claim_refs.iter().any(|r| {
        if refers_to_set(r) {
            r.uid != set_uid
        } else if refers_to_pod(r) {
            r.uid != pod_uid
        } else {
            r.controller == Some(true)
        }
    });
    let mut refs: Vec<OwnerReference> = claim_refs
        .iter()
        .filter(|r| !refers_to_set(r) && !refers_to_pod(r))
        .cloned()
        .collect();
    if unexpected_controller {
        return refs;
    }
    let policy = retention(set);
    match (scaled_down, pod) {
        (true, Some(pod)) if policy.delete_when_scaled => refs.push(controller_ref(pod)),
        (true, _) => {}
        (false, _) if policy.delete_when_deleted => refs.push(controller_ref(set)),
        (false, _) => {}
    }
    refs
}

/// The claims member `ordinal` mounts, as they would be created.
pub fn new_claims(set: &StatefulSet, ordinal: i32) -> Vec<PersistentVolumeClaim> {
    let selector_labels = set
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default();
    let owners = wanted_claim_owners(set, &[], None, false);
    claim_templates(set)
        .iter()
        .map(|t| {
            let mut labels = t.metadata.labels.clone().unwrap_or_default();
            labels.extend(selector_labels.clone());
            PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(claim_name(set, t, ordinal)),
                    namespace: set.metadata.namespace.clone(),
                    labels: Some(labels),
                    annotations: t.metadata.annotations.clone(),
                    owner_references: (!owners.is_empty()).then(|| owners.clone()),
                    ..ObjectMeta::default()
                },
                spec: t.spec.clone(),
                status: None,
            }
        })
        .collect()
}

/// A patch making `claim`'s owner references follow the retention policy for member `pod`
/// (`scaled_down`: outside the ordinal range), if they do not already.
pub fn claim_owner_patch(
    set: &StatefulSet,
    claim: &PersistentVolumeClaim,
    pod: &Pod,
    scaled_down: bool,
) -> Option<Value> {
    let refs = claim.metadata.owner_references.clone().unwrap_or_default();
    let wanted = wanted_claim_owners(set, &refs, Some(pod), scaled_down);
    let key = |r: &OwnerReference| (r.uid.clone(), r.controller);
    let mut have: Vec<_> = refs.iter().map(key).collect();
    let mut want: Vec<_> = wanted.iter().map(key).collect();
    have.sort();
    want.sort();
    (have != want).then(|| json!({ "metadata": { "ownerReferences": wanted } }))
}
