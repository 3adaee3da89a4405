//! The desired pod set of a node with an apiserver: the static pods plus the pods the API binds
//! to this node, by UID. Mirror pods (the API copies of static pods) are not pods to run. Pure.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use crate::labels;
use crate::pod::manager::DesiredPods;

/// Whether `pod` is a mirror pod (`kubernetes.io/config.mirror` set).
pub fn is_mirror(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(labels::CONFIG_MIRROR))
}

/// Static pods and API pods in one set. A UID in both keeps the static pod (a static pod's UID
/// is its hash, which the API never hands out).
pub fn merge(static_pods: &DesiredPods, api_pods: &[Arc<Pod>]) -> DesiredPods {
    let mut merged = static_pods.clone();
    for pod in api_pods {
        if is_mirror(pod) {
            continue;
        }
        let Some(uid) = pod.metadata.uid.as_deref() else {
            continue;
        };
        merged.entry(uid.to_string()).or_insert_with(|| pod.clone());
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, name: &str, mirror: bool) -> Arc<Pod> {
        let mut p = Pod::default();
        p.metadata.uid = Some(uid.into());
        p.metadata.name = Some(name.into());
        if mirror {
            p.metadata.annotations =
                Some([(labels::CONFIG_MIRROR.to_string(), "h".to_string())].into());
        }
        Arc::new(p)
    }

    #[test]
    fn merges_by_uid_without_mirror_pods() {
        let statics: DesiredPods = [("h1".to_string(), pod("h1", "web-node", false))].into();
        let api = vec![
            pod("u1", "app", false),
            pod("u2", "web-node", true),
            pod("h1", "clash", false),
        ];
        let merged = merge(&statics, &api);
        let names: Vec<(&str, &str)> = merged
            .iter()
            .map(|(uid, p)| (uid.as_str(), p.metadata.name.as_deref().unwrap_or_default()))
            .collect();
        assert_eq!(names, vec![("h1", "web-node"), ("u1", "app")]);
    }

    #[test]
    fn no_api_pods_gives_the_static_set() {
        let statics: DesiredPods = [("h1".to_string(), pod("h1", "a", false))].into();
        assert_eq!(merge(&statics, &[]), statics);
        assert!(merge(&DesiredPods::new(), &[pod("m", "x", true)]).is_empty());
    }
}
