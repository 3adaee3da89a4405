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

/// A plain (non-controller) owner reference: the garbage collector deletes the claim when
/// the owner goes.
fn owner_ref(api_version: &str, kind: &str, meta: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.to_string(),
        kind: kind.to_string(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: None,
        block_owner_deletion: None,
    }
}

/// The claims member `ordinal` mounts, as they would be created.
pub fn new_claims(set: &StatefulSet, ordinal: i32) -> Vec<PersistentVolumeClaim> {
    let selector_labels = set
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default();
    let owners = retention(set)
        .delete_when_deleted
        .then(|| vec![owner_ref("apps/v1", "StatefulSet", &set.metadata)]);
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
                    owner_references: owners.clone(),
                    ..ObjectMeta::default()
                },
                spec: t.spec.clone(),
                status: None,
            }
        })
        .collect()
}

/// A patch making `claim`'s owner references follow the retention policy: the set owns it
/// under `whenDeleted: Delete`, and a condemned pod (`condemned_pod`) under
/// `whenScaled: Delete`.
pub fn claim_owner_patch(
    set: &StatefulSet,
    claim: &PersistentVolumeClaim,
    condemned_pod: Option<&Pod>,
) -> Option<Value> {
    let policy = retention(set);
    let set_uid = set.metadata.uid.as_deref().unwrap_or_default();
    let refs = claim.metadata.owner_references.clone().unwrap_or_default();
    let has = |uid: &str| refs.iter().any(|r| r.uid == uid);
    let pod_owner = condemned_pod.filter(|_| policy.delete_when_scaled);
    let pod_ok = pod_owner.is_none_or(|p| has(p.metadata.uid.as_deref().unwrap_or_default()));
    if has(set_uid) == policy.delete_when_deleted && pod_ok {
        return None;
    }
    let mut wanted: Vec<OwnerReference> = refs.into_iter().filter(|r| r.uid != set_uid).collect();
    if policy.delete_when_deleted {
        wanted.push(owner_ref("apps/v1", "StatefulSet", &set.metadata));
    }
    if let Some(pod) = pod_owner
        && !wanted
            .iter()
            .any(|r| Some(&r.uid) == pod.metadata.uid.as_ref())
    {
        wanted.push(owner_ref("v1", "Pod", &pod.metadata));
    }
    Some(json!({ "metadata": { "ownerReferences": wanted } }))
}
