//! Mirror pods: the API copy of each static pod, so the cluster sees it. Each static pod gets
//! one (same namespace and name, `kubernetes.io/config.mirror` = the static pod's hash, owned by
//! the Node); one that is missing is created, one that is being deleted or carries another hash
//! is deleted (grace 0, UID precondition) and created again, and one whose static pod is gone
//! is deleted. Pure: [`plan_mirrors`] and [`mirror_pod`].

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use crate::labels;
use crate::pod::manager::DesiredPods;
use crate::pod::spec;

/// One step towards the wanted mirror pods.
#[derive(Clone, Debug, PartialEq)]
pub enum MirrorAction {
    /// Create the mirror pod of the static pod with this UID.
    Create { static_uid: String },
    /// Delete this mirror pod (grace 0, only if it still has this UID).
    Delete {
        namespace: String,
        name: String,
        uid: String,
    },
}

/// The hash a static pod's mirror carries: `kubernetes.io/config.hash`, else its UID.
pub fn static_hash(pod: &Pod) -> &str {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(labels::CONFIG_HASH))
        .map_or_else(|| spec::uid(pod), String::as_str)
}

/// The hash a mirror pod says it mirrors.
pub fn mirror_hash(pod: &Pod) -> Option<&str> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(labels::CONFIG_MIRROR))
        .map(String::as_str)
}

/// What to do so that every static pod has exactly one current mirror pod. `mirrors` are the
/// mirror pods the API has on this node.
pub fn plan_mirrors(static_pods: &DesiredPods, mirrors: &[Arc<Pod>]) -> Vec<MirrorAction> {
    let mut wanted: BTreeMap<(&str, &str), &Arc<Pod>> = BTreeMap::new();
    for pod in static_pods.values() {
        wanted
            .entry((spec::namespace(pod), spec::name(pod)))
            .or_insert(pod);
    }
    let mut actions = Vec::new();
    let mut present = BTreeMap::new();
    for mirror in mirrors {
        let key = (spec::namespace(mirror), spec::name(mirror));
        let current = wanted.get(&key).is_some_and(|s| {
            mirror.metadata.deletion_timestamp.is_none()
                && mirror_hash(mirror) == Some(static_hash(s))
        });
        if current {
            present.insert(key, ());
        } else {
            actions.push(MirrorAction::Delete {
                namespace: key.0.to_string(),
                name: key.1.to_string(),
                uid: spec::uid(mirror).to_string(),
            });
        }
    }
    for (key, pod) in wanted {
        if !present.contains_key(&key) {
            actions.push(MirrorAction::Create {
                static_uid: spec::uid(pod).to_string(),
            });
        }
    }
    actions
}

/// The mirror pod of `static_pod` on node `node_name` (UID `node_uid`): the static pod as is,
/// plus the mirror annotation and the Node as controlling owner, without the fields the
/// apiserver assigns. `spec.priority` is left to the Priority admission (from the pod's
/// priority class, 0 without one), which refuses a value that disagrees with the class.
pub fn mirror_pod(static_pod: &Pod, node_name: &str, node_uid: &str) -> Pod {
    let mut pod = static_pod.clone();
    let hash = static_hash(static_pod).to_string();
    let meta = &mut pod.metadata;
    meta.uid = None;
    meta.resource_version = None;
    meta.creation_timestamp = None;
    meta.deletion_timestamp = None;
    meta.deletion_grace_period_seconds = None;
    meta.generation = None;
    meta.managed_fields = None;
    meta.annotations
        .get_or_insert_with(Default::default)
        .insert(labels::CONFIG_MIRROR.to_string(), hash);
    meta.owner_references = Some(vec![OwnerReference {
        api_version: "v1".to_string(),
        kind: "Node".to_string(),
        name: node_name.to_string(),
        uid: node_uid.to_string(),
        controller: Some(true),
        block_owner_deletion: None,
    }]);
    if let Some(spec) = pod.spec.as_mut() {
        spec.priority = None;
    }
    pod.status = None;
    pod
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;

    fn static_pod(name: &str, hash: &str) -> Arc<Pod> {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.namespace = Some("kube-system".into());
        p.metadata.uid = Some(hash.into());
        p.metadata.annotations = Some(
            [
                (labels::CONFIG_HASH.to_string(), hash.to_string()),
                (labels::CONFIG_SOURCE.to_string(), "file".to_string()),
            ]
            .into(),
        );
        Arc::new(p)
    }

    fn mirror(name: &str, hash: &str, uid: &str, deleting: bool) -> Arc<Pod> {
        let mut p = mirror_pod(&static_pod(name, hash), "n1", "node-uid");
        p.metadata.uid = Some(uid.into());
        if deleting {
            p.metadata.deletion_timestamp = Some(Time(Default::default()));
        }
        Arc::new(p)
    }

    fn statics(pods: &[&Arc<Pod>]) -> DesiredPods {
        pods.iter()
            .map(|p| (spec::uid(p).to_string(), (*p).clone()))
            .collect()
    }

    fn create(uid: &str) -> MirrorAction {
        MirrorAction::Create {
            static_uid: uid.into(),
        }
    }

    fn delete(name: &str, uid: &str) -> MirrorAction {
        MirrorAction::Delete {
            namespace: "kube-system".into(),
            name: name.into(),
            uid: uid.into(),
        }
    }

    #[test]
    fn plans() {
        let a = static_pod("a-n1", "ha");
        let a2 = static_pod("a-n1", "ha2");
        let b = static_pod("b-n1", "hb");
        type Case = (&'static str, DesiredPods, Vec<Arc<Pod>>, Vec<MirrorAction>);
        let cases: Vec<Case> = vec![
            (
                "missing mirror is created",
                statics(&[&a]),
                vec![],
                vec![create("ha")],
            ),
            (
                "current mirror is left alone",
                statics(&[&a]),
                vec![mirror("a-n1", "ha", "m1", false)],
                vec![],
            ),
            (
                "mirror of an old version is replaced",
                statics(&[&a2]),
                vec![mirror("a-n1", "ha", "m1", false)],
                vec![delete("a-n1", "m1"), create("ha2")],
            ),
            (
                "mirror being deleted is replaced",
                statics(&[&a]),
                vec![mirror("a-n1", "ha", "m1", true)],
                vec![delete("a-n1", "m1"), create("ha")],
            ),
            (
                "orphaned mirror is deleted",
                statics(&[&b]),
                vec![
                    mirror("a-n1", "ha", "m1", false),
                    mirror("b-n1", "hb", "m2", false),
                ],
                vec![delete("a-n1", "m1")],
            ),
            (
                "nothing static, nothing mirrored",
                DesiredPods::new(),
                vec![],
                vec![],
            ),
        ];
        for (what, statics, mirrors, want) in cases {
            assert_eq!(plan_mirrors(&statics, &mirrors), want, "{what}");
        }
    }

    #[test]
    fn mirror_pod_carries_hash_owner_and_no_priority() {
        let mut s = (*static_pod("a-n1", "ha")).clone();
        s.spec = Some(k8s_openapi::api::core::v1::PodSpec {
            priority: Some(7),
            priority_class_name: Some("system-node-critical".into()),
            ..Default::default()
        });
        s.metadata.resource_version = Some("3".into());
        let m = mirror_pod(&s, "n1", "node-uid");
        assert_eq!(m.metadata.uid, None);
        assert_eq!(m.metadata.resource_version, None);
        assert_eq!(mirror_hash(&m), Some("ha"));
        let annotations = m.metadata.annotations.clone().unwrap();
        assert_eq!(annotations[labels::CONFIG_SOURCE], "file");
        let owner = &m.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (
                owner.kind.as_str(),
                owner.name.as_str(),
                owner.uid.as_str(),
                owner.controller
            ),
            ("Node", "n1", "node-uid", Some(true))
        );
        let spec = m.spec.unwrap();
        assert_eq!(spec.priority, None);
        assert_eq!(
            spec.priority_class_name.as_deref(),
            Some("system-node-critical")
        );
    }
}
