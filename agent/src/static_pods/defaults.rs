//! Defaulting of a static pod: what the upstream kubelet does to file-sourced pods (name suffix,
//! namespace, node name, NoExecute toleration, source annotation) plus the API defaults the rest
//! of kwk-node relies on (restart policy, grace period, pull policy, probe timings, ...). Pure.
//!
//! The UID and `config.hash` are not set here: they are the hash of the result (see `hash.rs`).

use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, Pod, PodSpec, Probe, Toleration, Volume,
};

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

    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.node_name = Some(node_name.to_string());
    default_spec(spec);
    add_no_execute_toleration(spec);
}

fn set_if_none<T>(slot: &mut Option<T>, value: T) {
    if slot.is_none() {
        *slot = Some(value);
    }
}

fn set_if_empty(slot: &mut Option<String>, value: &str) {
    if slot.as_deref().unwrap_or_default().is_empty() {
        *slot = Some(value.to_string());
    }
}

fn default_spec(spec: &mut PodSpec) {
    set_if_empty(&mut spec.restart_policy, "Always");
    set_if_empty(&mut spec.dns_policy, "ClusterFirst");
    set_if_empty(&mut spec.scheduler_name, "default-scheduler");
    set_if_none(&mut spec.termination_grace_period_seconds, 30);
    set_if_none(&mut spec.enable_service_links, true);
    let host_network = spec.host_network.unwrap_or(false);
    for c in spec.init_containers.iter_mut().flatten() {
        default_container(c, host_network);
    }
    for c in &mut spec.containers {
        default_container(c, host_network);
    }
    for vol in spec.volumes.iter_mut().flatten() {
        default_volume(vol);
    }
}

/// Upstream's pull policy default: `Always` for `:latest` or an untagged image, else
/// `IfNotPresent`. A digest pins the image, so it counts as tagged.
pub(crate) fn default_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, tag)) if tag != "latest" => "IfNotPresent",
        _ => "Always",
    }
}

fn default_container(c: &mut Container, host_network: bool) {
    set_if_empty(&mut c.termination_message_path, "/dev/termination-log");
    set_if_empty(&mut c.termination_message_policy, "File");
    if c.image_pull_policy
        .as_deref()
        .unwrap_or_default()
        .is_empty()
    {
        let policy = default_pull_policy(c.image.as_deref().unwrap_or_default());
        c.image_pull_policy = Some(policy.to_string());
    }
    for port in c.ports.iter_mut().flatten() {
        set_if_empty(&mut port.protocol, "TCP");
        if host_network && port.host_port.unwrap_or(0) == 0 {
            port.host_port = Some(port.container_port);
        }
    }
    for var in c.env.iter_mut().flatten() {
        if let Some(field_ref) = var.value_from.as_mut().and_then(|f| f.field_ref.as_mut()) {
            set_if_empty(&mut field_ref.api_version, "v1");
        }
    }
    if let Some(res) = c.resources.as_mut() {
        // Upstream: a limit without a request makes the request equal to the limit.
        if let Some(limits) = res.limits.as_ref().filter(|l| !l.is_empty()) {
            let requests = res.requests.get_or_insert_with(Default::default);
            for (name, limit) in limits {
                requests
                    .entry(name.clone())
                    .or_insert_with(|| limit.clone());
            }
        }
    }
    for probe in [
        &mut c.liveness_probe,
        &mut c.readiness_probe,
        &mut c.startup_probe,
    ]
    .into_iter()
    .flatten()
    {
        default_probe(probe);
    }
}

fn default_probe(probe: &mut Probe) {
    set_if_none(&mut probe.timeout_seconds, 1);
    set_if_none(&mut probe.period_seconds, 10);
    set_if_none(&mut probe.success_threshold, 1);
    set_if_none(&mut probe.failure_threshold, 3);
    if let Some(http) = probe.http_get.as_mut() {
        set_if_empty(&mut http.path, "/");
        set_if_empty(&mut http.scheme, "HTTP");
    }
}

fn default_volume(vol: &mut Volume) {
    if let Some(host_path) = vol.host_path.as_mut() {
        set_if_none(&mut host_path.type_, String::new());
    }
    if let Some(empty_dir) = vol.empty_dir.as_mut() {
        set_if_none(&mut empty_dir.medium, String::new());
    }
    let json = serde_json::to_value(&*vol).ok();
    let has_source = json
        .as_ref()
        .and_then(|v| v.as_object())
        .is_some_and(|m| m.keys().any(|k| k != "name"));
    if !has_source {
        // Upstream: a volume with no source is an emptyDir.
        vol.empty_dir = Some(EmptyDirVolumeSource {
            medium: Some(String::new()),
            size_limit: None,
        });
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
    fn pull_policy_follows_the_tag() {
        let cases = [
            ("nginx", "Always"),
            ("nginx:latest", "Always"),
            ("nginx:1.27", "IfNotPresent"),
            ("registry.local:5000/nginx", "Always"),
            ("registry.local:5000/nginx:1.0", "IfNotPresent"),
            ("registry.local:5000/nginx:latest", "Always"),
            ("nginx@sha256:abcd", "IfNotPresent"),
        ];
        for (image, want) in cases {
            assert_eq!(default_pull_policy(image), want, "{image}");
        }
    }

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
