//! Upstream's API defaults for pods and pod templates (`SetDefaults_Pod`,
//! `SetDefaults_PodSpec`, `SetDefaults_Container` and the volume, probe and port defaults of
//! `core/v1/defaults.go`). Pure and idempotent.
//!
//! Two sets exist: [`DefaultSet::Upstream`] is everything the apiserver applies;
//! [`DefaultSet::StaticPodV1`] is the subset kwk-node's static pods were first hashed with.
//! A static pod's UID is the hash of its defaulted form, so growing that set would restart
//! every static pod (the control plane) on upgrade; the defaults it leaves out change nothing
//! on the node (an absent `securityContext`, default file mode or probe path means the same).

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EphemeralContainer, HTTPGetAction,
    Lifecycle, PersistentVolumeClaimSpec, Pod, PodSecurityContext, PodSpec, Probe,
    ResourceRequirements, Volume,
};

/// Which defaults to apply (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultSet {
    /// Everything upstream's apiserver defaults.
    Upstream,
    /// The defaults kwk-node's static pod hash (UID) is pinned to.
    StaticPodV1,
}

impl DefaultSet {
    fn upstream(self) -> bool {
        self == Self::Upstream
    }
}

/// Default mode of secret, config map, downward API and projected volumes (0644).
pub const DEFAULT_VOLUME_MODE: i32 = 0o644;

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

/// Upstream's pull policy default: `Always` for `:latest` or an untagged image without a
/// digest, else `IfNotPresent`.
pub fn default_pull_policy(image: &str) -> &'static str {
    let (name, digest) = match image.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (image, None),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.split_once(':') {
        Some((_, "latest")) => "Always",
        Some(_) => "IfNotPresent",
        None if digest.is_some() => "IfNotPresent",
        None => "Always",
    }
}

/// Defaults of a whole pod: the pod spec's plus what upstream applies only to pods, never to
/// templates (`enableServiceLinks`, requests from limits, host ports under `hostNetwork`).
pub fn default_pod(pod: &mut Pod, set: DefaultSet) {
    let spec = pod.spec.get_or_insert_with(Default::default);
    default_pod_spec(spec, set);
    set_if_none(&mut spec.enable_service_links, true);
    let host_network = spec.host_network.unwrap_or(false);
    for c in spec
        .init_containers
        .iter_mut()
        .flatten()
        .chain(spec.containers.iter_mut())
    {
        if let Some(res) = c.resources.as_mut() {
            requests_from_limits(res);
        }
        if host_network {
            for port in c.ports.iter_mut().flatten() {
                if port.host_port.unwrap_or(0) == 0 {
                    port.host_port = Some(port.container_port);
                }
            }
        }
    }
}

/// A limit without a request makes the request equal to the limit.
fn requests_from_limits(res: &mut ResourceRequirements) {
    if let Some(limits) = res.limits.as_ref().filter(|l| !l.is_empty()) {
        let requests = res.requests.get_or_insert_with(Default::default);
        for (name, limit) in limits {
            requests
                .entry(name.clone())
                .or_insert_with(|| limit.clone());
        }
    }
}

/// Defaults of a pod spec, also inside templates (`SetDefaults_PodSpec` and below).
pub fn default_pod_spec(spec: &mut PodSpec, set: DefaultSet) {
    set_if_empty(&mut spec.restart_policy, "Always");
    set_if_empty(&mut spec.dns_policy, "ClusterFirst");
    set_if_empty(&mut spec.scheduler_name, "default-scheduler");
    set_if_none(&mut spec.termination_grace_period_seconds, 30);
    if set.upstream() {
        set_if_none(&mut spec.security_context, PodSecurityContext::default());
        mirror_service_account(spec);
    }
    for c in spec.init_containers.iter_mut().flatten() {
        default_container(c, set);
    }
    for c in &mut spec.containers {
        default_container(c, set);
    }
    for c in spec.ephemeral_containers.iter_mut().flatten() {
        default_ephemeral_container(c, set);
    }
    for vol in spec.volumes.iter_mut().flatten() {
        default_volume(vol, set);
    }
}

/// The deprecated `serviceAccount` is an alias of `serviceAccountName` (upstream's v1
/// conversion): it names the account when `serviceAccountName` is empty, and always reads back
/// as `serviceAccountName`.
pub fn mirror_service_account(spec: &mut PodSpec) {
    let name = |v: &Option<String>| v.as_deref().filter(|n| !n.is_empty()).map(str::to_string);
    spec.service_account_name = name(&spec.service_account_name).or(name(&spec.service_account));
    spec.service_account = spec.service_account_name.clone();
}

fn default_container(c: &mut Container, set: DefaultSet) {
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
    default_ports(c.ports.as_deref_mut());
    default_env(c.env.as_deref_mut());
    for probe in [
        &mut c.liveness_probe,
        &mut c.readiness_probe,
        &mut c.startup_probe,
    ]
    .into_iter()
    .flatten()
    {
        default_probe(probe, set);
    }
    if set.upstream() {
        default_lifecycle(c.lifecycle.as_mut());
    }
}

fn default_ephemeral_container(c: &mut EphemeralContainer, set: DefaultSet) {
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
    default_ports(c.ports.as_deref_mut());
    default_env(c.env.as_deref_mut());
    if set.upstream() {
        default_lifecycle(c.lifecycle.as_mut());
    }
}

fn default_ports(ports: Option<&mut [ContainerPort]>) {
    for port in ports.into_iter().flatten() {
        set_if_empty(&mut port.protocol, "TCP");
    }
}

fn default_env(env: Option<&mut [EnvVar]>) {
    for var in env.into_iter().flatten() {
        if let Some(field_ref) = var.value_from.as_mut().and_then(|f| f.field_ref.as_mut()) {
            set_if_empty(&mut field_ref.api_version, "v1");
        }
    }
}

fn default_http_get(http: &mut HTTPGetAction) {
    set_if_empty(&mut http.path, "/");
    set_if_empty(&mut http.scheme, "HTTP");
}

fn default_probe(probe: &mut Probe, set: DefaultSet) {
    set_if_none(&mut probe.timeout_seconds, 1);
    set_if_none(&mut probe.period_seconds, 10);
    set_if_none(&mut probe.success_threshold, 1);
    set_if_none(&mut probe.failure_threshold, 3);
    if let Some(http) = probe.http_get.as_mut() {
        default_http_get(http);
    }
    if set.upstream()
        && let Some(grpc) = probe.grpc.as_mut()
    {
        set_if_none(&mut grpc.service, String::new());
    }
}

fn default_lifecycle(lifecycle: Option<&mut Lifecycle>) {
    let Some(lifecycle) = lifecycle else {
        return;
    };
    for handler in [&mut lifecycle.post_start, &mut lifecycle.pre_stop]
        .into_iter()
        .flatten()
    {
        if let Some(http) = handler.http_get.as_mut() {
            default_http_get(http);
        }
    }
}

/// Defaults of a claim spec (`volumeMode: Filesystem`), for ephemeral volumes, volume claim
/// templates and PersistentVolumeClaims.
pub fn default_pvc_spec(spec: &mut PersistentVolumeClaimSpec) {
    set_if_none(&mut spec.volume_mode, "Filesystem".to_string());
}

fn default_volume(vol: &mut Volume, set: DefaultSet) {
    if let Some(host_path) = vol.host_path.as_mut() {
        set_if_none(&mut host_path.type_, String::new());
    }
    if !set.upstream()
        && let Some(empty_dir) = vol.empty_dir.as_mut()
    {
        set_if_none(&mut empty_dir.medium, String::new());
    }
    if set.upstream() {
        default_api_volume_sources(vol);
    }
    let has_source = serde_json::to_value(&*vol)
        .ok()
        .as_ref()
        .and_then(|v| v.as_object())
        .is_some_and(|m| m.keys().any(|k| k != "name"));
    if !has_source {
        // Upstream: a volume with no source is an emptyDir.
        vol.empty_dir = Some(EmptyDirVolumeSource {
            medium: (!set.upstream()).then(String::new),
            size_limit: None,
        });
    }
}

/// Defaults of the volume sources static pods cannot use (or whose defaults they predate).
fn default_api_volume_sources(vol: &mut Volume) {
    if let Some(s) = vol.secret.as_mut() {
        set_if_none(&mut s.default_mode, DEFAULT_VOLUME_MODE);
    }
    if let Some(s) = vol.config_map.as_mut() {
        set_if_none(&mut s.default_mode, DEFAULT_VOLUME_MODE);
    }
    if let Some(s) = vol.downward_api.as_mut() {
        set_if_none(&mut s.default_mode, DEFAULT_VOLUME_MODE);
        for item in s.items.iter_mut().flatten() {
            if let Some(field_ref) = item.field_ref.as_mut() {
                set_if_empty(&mut field_ref.api_version, "v1");
            }
        }
    }
    if let Some(p) = vol.projected.as_mut() {
        set_if_none(&mut p.default_mode, DEFAULT_VOLUME_MODE);
        for source in p.sources.iter_mut().flatten() {
            if let Some(token) = source.service_account_token.as_mut() {
                set_if_none(&mut token.expiration_seconds, 3600);
            }
            if let Some(d) = source.downward_api.as_mut() {
                for item in d.items.iter_mut().flatten() {
                    if let Some(field_ref) = item.field_ref.as_mut() {
                        set_if_empty(&mut field_ref.api_version, "v1");
                    }
                }
            }
        }
    }
    if let Some(iscsi) = vol.iscsi.as_mut() {
        set_if_empty(&mut iscsi.iscsi_interface, "default");
    }
    if let Some(disk) = vol.azure_disk.as_mut() {
        set_if_none(&mut disk.caching_mode, "ReadWrite".to_string());
        set_if_none(&mut disk.kind, "Shared".to_string());
        set_if_none(&mut disk.fs_type, "ext4".to_string());
        set_if_none(&mut disk.read_only, false);
    }
    if let Some(sio) = vol.scale_io.as_mut() {
        set_if_empty(&mut sio.storage_mode, "ThinProvisioned");
        set_if_empty(&mut sio.fs_type, "xfs");
    }
    if let Some(image) = vol.image.as_mut()
        && image.pull_policy.as_deref().unwrap_or_default().is_empty()
    {
        let policy = default_pull_policy(image.reference.as_deref().unwrap_or_default());
        image.pull_policy = Some(policy.to_string());
    }
    if let Some(eph) = vol.ephemeral.as_mut()
        && let Some(template) = eph.volume_claim_template.as_mut()
    {
        default_pvc_spec(&mut template.spec);
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
            ("nginx:latest@sha256:abcd", "Always"),
        ];
        for (image, want) in cases {
            assert_eq!(default_pull_policy(image), want, "{image}");
        }
    }
}
