//! Helpers the planners share: controller owner references, finalizers (present, added,
//! removed), the hash that names a pod template's revision, and the pod states controllers
//! count (active, ready, available, terminal).

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::{Metadata, Resource};
use serde_json::json;

use crate::action::Action;

/// The controller reference an owner puts on what it creates (`controller: true`,
/// `blockOwnerDeletion: true`, as upstream's `NewControllerRef`).
pub fn controller_ref<K>(owner: &K) -> OwnerReference
where
    K: Resource + Metadata<Ty = ObjectMeta>,
{
    let meta = owner.metadata();
    OwnerReference {
        api_version: K::API_VERSION.to_string(),
        kind: K::KIND.to_string(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The controller reference of `meta`, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// Whether `meta` is controlled by the object with `uid`.
pub fn is_controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    controller_of(meta).is_some_and(|r| r.uid == uid)
}

/// Whether `meta` lists `finalizer`.
pub fn has_finalizer(meta: &ObjectMeta, finalizer: &str) -> bool {
    meta.finalizers.iter().flatten().any(|f| f == finalizer)
}

/// The merge patch that sets `object`'s finalizers to `finalizers`, guarded by its
/// `resourceVersion`: a merge patch replaces the whole list, so a concurrent change to it
/// must conflict (and be planned again) rather than be lost.
fn finalizers_patch<K>(object: &K, finalizers: &[&str]) -> Action
where
    K: Resource + Metadata<Ty = ObjectMeta>,
{
    let mut metadata = json!({ "finalizers": finalizers });
    if let Some(rv) = &object.metadata().resource_version {
        metadata["resourceVersion"] = json!(rv);
    }
    Action::patch(object, None, json!({ "metadata": metadata }))
}

/// `object`'s finalizers other than `finalizer`, in order.
fn other_finalizers<'a, K>(object: &'a K, finalizer: &str) -> Vec<&'a str>
where
    K: Metadata<Ty = ObjectMeta>,
{
    let finalizers = object.metadata().finalizers.iter().flatten();
    finalizers
        .map(String::as_str)
        .filter(|f| *f != finalizer)
        .collect()
}

/// The patch that drops `finalizer` from `object`, keeping the others in order.
pub fn remove_finalizer<K>(object: &K, finalizer: &str) -> Action
where
    K: Resource + Metadata<Ty = ObjectMeta>,
{
    finalizers_patch(object, &other_finalizers(object, finalizer))
}

/// The patch that appends `finalizer` to `object`'s finalizers.
pub fn add_finalizer<K>(object: &K, finalizer: &str) -> Action
where
    K: Resource + Metadata<Ty = ObjectMeta>,
{
    let mut list = other_finalizers(object, finalizer);
    list.push(finalizer);
    finalizers_patch(object, &list)
}

/// The alphabet upstream encodes hashes with (no vowels, no look-alikes), so a hash never
/// spells a word.
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// FNV-1a, 32 bits.
fn fnv32a(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in bytes {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// The stable name of a pod template's revision (`pod-template-hash`, ControllerRevision
/// names): FNV-1a of the template's canonical JSON (and the collision count, when set),
/// written with upstream's safe alphabet. Equal templates hash equal across restarts.
pub fn template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    // serde_json writes struct fields in declaration order and maps sorted: canonical.
    let mut bytes = serde_json::to_vec(template).unwrap_or_default();
    if let Some(count) = collision_count {
        bytes.extend_from_slice(count.to_string().as_bytes());
    }
    let mut value = fnv32a(&bytes);
    let mut out = Vec::new();
    loop {
        out.push(SAFE_ALPHABET[(value % SAFE_ALPHABET.len() as u32) as usize]);
        value /= SAFE_ALPHABET.len() as u32;
        if value == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// Whether the pod finished (`Succeeded` or `Failed`).
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Whether the pod counts toward a controller's replicas: not finished, not being deleted.
pub fn is_active(pod: &Pod) -> bool {
    !is_terminal(pod) && pod.metadata.deletion_timestamp.is_none()
}

/// The time the pod's `Ready` condition turned true, if it is ready.
pub fn ready_since(pod: &Pod) -> Option<Timestamp> {
    let condition = pod
        .status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready")?;
    if condition.status != "True" {
        return None;
    }
    Some(
        condition
            .last_transition_time
            .as_ref()
            .map_or(Timestamp::UNIX_EPOCH, |Time(t)| *t),
    )
}

/// Whether the pod is ready.
pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// Whether the pod has been ready for at least `min_ready_seconds` at `now`.
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    match ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(since) => {
            let ready_for = now.as_second() - since.as_second();
            ready_for >= i64::from(min_ready_seconds)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSet;
    use k8s_openapi::api::core::v1::{Container, PodCondition, PodSpec, PodStatus};

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: None,
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    image: Some(image.into()),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
        }
    }

    #[test]
    fn template_hashes_are_stable_and_safe() {
        let a = template_hash(&template("nginx:1"), None);
        assert_eq!(a, template_hash(&template("nginx:1"), None));
        assert_ne!(a, template_hash(&template("nginx:2"), None));
        assert_ne!(a, template_hash(&template("nginx:1"), Some(1)));
        assert!(
            a.bytes().all(|b| SAFE_ALPHABET.contains(&b)),
            "{a} uses the safe alphabet"
        );
        assert!(!a.is_empty() && a.len() <= 10, "{a}");
    }

    #[test]
    fn controller_references() {
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some("web".into()),
                uid: Some("u1".into()),
                ..ObjectMeta::default()
            },
            ..ReplicaSet::default()
        };
        let r = controller_ref(&rs);
        assert_eq!(
            (r.kind.as_str(), r.api_version.as_str()),
            ("ReplicaSet", "apps/v1")
        );
        let meta = ObjectMeta {
            owner_references: Some(vec![r]),
            ..ObjectMeta::default()
        };
        assert!(is_controlled_by(&meta, "u1"));
        assert!(!is_controlled_by(&meta, "u2"));
    }

    #[test]
    fn finalizer_patches_keep_the_others_and_carry_the_resource_version() {
        let pod = |finalizers: &[&str]| Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("ns".into()),
                resource_version: Some("42".into()),
                finalizers: Some(finalizers.iter().map(|f| f.to_string()).collect()),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        };
        let patch_of = |action: Action| match action {
            Action::Patch {
                subresource: None,
                patch,
                ..
            } => patch,
            other => panic!("a patch of the object: {other:?}"),
        };
        // (finalizers, remove "x/y"?, want finalizers afterwards)
        let cases: &[(&[&str], bool, &[&str])] = &[
            (&["a/b", "x/y", "c/d"], true, &["a/b", "c/d"]),
            (&["x/y"], true, &[]),
            (&["a/b"], true, &["a/b"]),
            (&["a/b"], false, &["a/b", "x/y"]),
            (&[], false, &["x/y"]),
            (&["x/y", "a/b"], false, &["a/b", "x/y"]),
        ];
        for (before, remove, after) in cases {
            let object = pod(before);
            assert_eq!(
                has_finalizer(&object.metadata, "x/y"),
                before.contains(&"x/y")
            );
            let action = if *remove {
                remove_finalizer(&object, "x/y")
            } else {
                add_finalizer(&object, "x/y")
            };
            assert_eq!(
                patch_of(action),
                json!({"metadata": {"finalizers": after, "resourceVersion": "42"}}),
                "{before:?} remove={remove}"
            );
        }
    }

    #[test]
    fn pod_states() {
        let ready_at = |secs: i64| Pod {
            status: Some(PodStatus {
                phase: Some("Running".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    last_transition_time: Some(Time(Timestamp::from_second(secs).expect("time"))),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        };
        let now = Timestamp::from_second(1_000).expect("time");
        assert!(is_available(&ready_at(990), 10, now));
        assert!(!is_available(&ready_at(995), 10, now));
        assert!(is_available(&ready_at(999), 0, now));
        assert!(is_active(&ready_at(0)));
        let mut done = ready_at(0);
        done.status.as_mut().expect("status").phase = Some("Succeeded".into());
        assert!(is_terminal(&done) && !is_active(&done));
        assert!(!is_ready(&Pod::default()));
    }
}
