//! Defaulting of a static pod: what the upstream kubelet does to file-sourced pods (name suffix,
//! namespace, node name, NoExecute toleration, source annotation) on top of the API defaults
//! from `kwk-api` (restart policy, grace period, pull policy, probe timings, ...), in the set
//! the static pod hash is pinned to ([`DefaultSet::StaticPodV1`]). Pure.
//!
//! The UID and `config.hash` are not set here: they are the hash of the result (see `hash.rs`).

use k8s_openapi::api::core::v1::{Pod, PodSpec, Toleration};
use kwk_api::pod::{DefaultSet, default_pod};

use crate::labels;

/// The value of `kubernetes.io/config.source` for pods from the manifest directory.
pub const SOURCE_FILE: &str = "file";

/// The name a static pod runs under: `<name>-<nodeName>` (node name lowercased, as upstream).
pub(crate) fn static_pod_name(name: &str, node_name: &str) -> String {
    format!("{name}-{}", node_name.to_lowercase())
}

/// Applies every default to a decoded manifest. Fields the manifest cannot meaningfully carry
/// (UID, status, the derived annotations) are cleared so they never reach the hash.
pub(crate) fn apply_defaults(pod: &mut Pod, node_name: &str) {
    let meta = &mut pod.metadata;
    let name = meta.name.take().unwrap_or_default();
    meta.name = Some(static_pod_name(&name, node_name));
    if meta.namespace.as_deref().unwrap_or_default().is_empty() {
        meta.namespace = Some("default".to_string());
    }
    meta.uid = None;
    let annotations = meta.annotations.get_or_insert_with(Default::default);
    annotations.remove(labels::CONFIG_HASH);
    annotations.remove(labels::CONFIG_SEEN);
    annotations.insert(labels::CONFIG_SOURCE.to_string(), SOURCE_FILE.to_string());
    pod.status = None;

    pod.spec.get_or_insert_with(Default::default).node_name = Some(node_name.to_string());
    default_pod(pod, DefaultSet::StaticPodV1);
    if let Some(spec) = pod.spec.as_mut() {
        add_no_execute_toleration(spec);
    }
}

/// Static pods tolerate every NoExecute taint, so node problems never evict the control plane.
fn add_no_execute_toleration(spec: &mut PodSpec) {
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    let wanted = Toleration {
        operator: Some("Exists".to_string()),
        effect: Some("NoExecute".to_string()),
        ..Default::default()
    };
    // Upstream's AddOrUpdateToleration: replace one with the same key, operator, value and
    // effect, else append.
    let same = |t: &Toleration| {
        t.key.as_deref().unwrap_or_default().is_empty()
            && t.operator.as_deref() == Some("Exists")
            && t.value.as_deref().unwrap_or_default().is_empty()
            && t.effect.as_deref() == Some("NoExecute")
    };
    match tolerations.iter_mut().find(|t| same(t)) {
        Some(existing) => *existing = wanted,
        None => tolerations.push(wanted),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toleration_is_added_once() {
        let mut spec = PodSpec::default();
        add_no_execute_toleration(&mut spec);
        add_no_execute_toleration(&mut spec);
        let tolerations = spec.tolerations.unwrap();
        assert_eq!(tolerations.len(), 1);
        assert_eq!(tolerations[0].operator.as_deref(), Some("Exists"));
        assert_eq!(tolerations[0].effect.as_deref(), Some("NoExecute"));
    }
}
