//! The container config (`CreateContainer`), as upstream `generateContainerConfig` builds it:
//! metadata, image, expanded command/args, environment, mounts (from the volume plan), log
//! path, stdio flags, labels and annotations, Linux resources and security context.
//! Container ports are not part of it (they belong to the sandbox).

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use kwk_cri::api::{
    ContainerConfig, ContainerMetadata, ImageSpec, KeyValue, LinuxContainerConfig, Mount,
};

use super::env::{DownwardContext, EnvVars, expand_command_and_args, resolve_env};
use super::resources::{QosClass, linux_resources, oom_score_adj};
pub use super::security::ImageUser;
use super::security::{SecurityDefaults, container_security_context};
use super::{SpecError, container_field_path, podx};
use crate::labels;

pub use crate::pod::observed::ContainerKind;

/// Node-wide settings the container config depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSettings {
    /// Machine memory, for the Burstable OOM score.
    pub memory_capacity_bytes: i64,
    /// Set `memory.oom.group=1` (cgroup v2 without kubelet `singleProcessOOMKill`).
    pub memory_oom_group: bool,
    pub security: SecurityDefaults,
}

impl Default for NodeSettings {
    fn default() -> Self {
        Self {
            memory_capacity_bytes: 1 << 30,
            memory_oom_group: false,
            security: SecurityDefaults::default(),
        }
    }
}

/// What the container config needs besides the pod and the container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerContext {
    pub restart_count: u32,
    pub kind: ContainerKind,
    /// The versioned spec fingerprint (`v1:<hex>`), stored as an annotation.
    pub fingerprint: String,
    /// The resolved image (`ImageStatus` id); the container's `image` when `None`.
    pub image_ref: Option<String>,
    /// The image's user, for `runAsNonRoot` and a default `run_as_user`.
    pub image_user: Option<ImageUser>,
    /// IPs, node name and allocatable for the downward API.
    pub downward: DownwardContext,
    /// The mounts `apply_volume_plan` returned.
    pub mounts: Vec<Mount>,
    pub qos: QosClass,
    pub node: NodeSettings,
}

/// The CRI container config of `container` in `pod`.
pub fn container_config(
    pod: &Pod,
    container: &Container,
    ctx: &ContainerContext,
) -> Result<ContainerConfig, SpecError> {
    let field = container_field_path(pod, container);
    let env = resolve_env(
        pod,
        container,
        &field,
        &ctx.downward,
        &super::api_objects::ApiObjects::default(),
    )?;
    container_config_with_env(pod, container, &field, &env, ctx)
}

/// As [`container_config`], with the environment already resolved (the volume plan needed it).
pub fn container_config_with_env(
    pod: &Pod,
    container: &Container,
    field: &str,
    env: &EnvVars,
    ctx: &ContainerContext,
) -> Result<ContainerConfig, SpecError> {
    let image = container
        .image
        .clone()
        .filter(|i| !i.is_empty())
        .ok_or_else(|| SpecError::invalid(format!("{field}.image"), "image is required"))?;
    let (command, args) = expand_command_and_args(container, env);
    let mut resources = linux_resources(container, field, ctx.node.memory_oom_group)?;
    resources.oom_score_adj = oom_score_adj(
        pod,
        container,
        field,
        ctx.qos,
        ctx.kind == ContainerKind::Sidecar,
        ctx.node.memory_capacity_bytes,
    )?;
    let security = container_security_context(
        pod,
        container,
        field,
        ctx.image_user.as_ref(),
        &ctx.node.security,
    )?;
    Ok(ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: container.name.clone(),
            attempt: ctx.restart_count,
        }),
        image: Some(ImageSpec {
            image: ctx.image_ref.clone().unwrap_or_else(|| image.clone()),
            user_specified_image: image,
            ..Default::default()
        }),
        command,
        args,
        working_dir: container.working_dir.clone().unwrap_or_default(),
        envs: env
            .iter()
            .map(|(key, value)| KeyValue {
                key: key.into(),
                value: value.into(),
            })
            .collect(),
        mounts: ctx.mounts.clone(),
        labels: container_labels(pod, container, ctx.kind),
        annotations: container_annotations(pod, container, ctx),
        log_path: container_log_path(&container.name, ctx.restart_count),
        stdin: container.stdin.unwrap_or(false),
        stdin_once: container.stdin_once.unwrap_or(false),
        tty: container.tty.unwrap_or(false),
        linux: Some(LinuxContainerConfig {
            resources: Some(resources),
            security_context: Some(security),
        }),
        ..Default::default()
    })
}

/// `<container>/<restart count>.log`, relative to the sandbox log directory.
pub fn container_log_path(container: &str, restart_count: u32) -> String {
    format!("{container}/{restart_count}.log")
}

fn container_labels(
    pod: &Pod,
    container: &Container,
    kind: ContainerKind,
) -> HashMap<String, String> {
    HashMap::from([
        (labels::POD_NAME.into(), podx::name(pod).into()),
        (labels::POD_NAMESPACE.into(), podx::namespace(pod).into()),
        (labels::POD_UID.into(), podx::uid(pod).into()),
        (labels::CONTAINER_NAME.into(), container.name.clone()),
        (labels::MANAGED.into(), "true".into()),
        (labels::CONTAINER_KIND.into(), kind.as_str().into()),
    ])
}

fn container_annotations(
    pod: &Pod,
    container: &Container,
    ctx: &ContainerContext,
) -> HashMap<String, String> {
    let mut annotations = HashMap::from([
        (labels::RESTART_COUNT.into(), ctx.restart_count.to_string()),
        (
            labels::TERMINATION_MESSAGE_PATH.into(),
            container
                .termination_message_path
                .clone()
                .unwrap_or_default(),
        ),
        (
            labels::TERMINATION_MESSAGE_POLICY.into(),
            container
                .termination_message_policy
                .clone()
                .unwrap_or_default(),
        ),
        (
            labels::CONTAINER_FINGERPRINT.into(),
            ctx.fingerprint.clone(),
        ),
    ]);
    if let Some(grace) = podx::spec(pod).and_then(|s| s.termination_grace_period_seconds) {
        annotations.insert(
            labels::POD_TERMINATION_GRACE_PERIOD.into(),
            grace.to_string(),
        );
    }
    annotations
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime_spec::testpod::pod;
    use kwk_cri::api::{NamespaceMode, security_profile::ProfileType};

    const POD: &str = r#"
metadata: {name: web, namespace: prod, uid: u-1, labels: {app: web}}
spec:
  terminationGracePeriodSeconds: 45
  shareProcessNamespace: true
  initContainers:
  - {name: setup, image: busybox, restartPolicy: Always}
  containers:
  - name: app
    image: registry.local/app:1
    command: [/bin/run, "$(MODE)"]
    args: ["--name=$(POD_NAME)", "$$(MODE)", "$(UNSET)"]
    workingDir: /srv
    stdin: true
    stdinOnce: true
    tty: true
    terminationMessagePath: /dev/termination-log
    terminationMessagePolicy: FallbackToLogsOnError
    ports: [{containerPort: 80}]
    env:
    - {name: MODE, value: fast}
    - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    resources:
      requests: {cpu: 500m, memory: 1Gi}
      limits: {cpu: "1", memory: 2Gi}
    securityContext: {runAsUser: 1000, capabilities: {drop: [ALL]}}
"#;

    fn ctx() -> ContainerContext {
        ContainerContext {
            restart_count: 3,
            kind: ContainerKind::App,
            fingerprint: "v1:abc".into(),
            image_ref: Some("sha256:1234".into()),
            image_user: Some(ImageUser {
                uid: Some(0),
                username: String::new(),
            }),
            downward: DownwardContext::default(),
            mounts: vec![Mount {
                container_path: "/data".into(),
                host_path: "/srv/data".into(),
                ..Default::default()
            }],
            qos: QosClass::Burstable,
            node: NodeSettings {
                memory_capacity_bytes: 8 << 30,
                ..Default::default()
            },
        }
    }

    #[test]
    fn builds_the_config_like_kuberuntime() {
        let p = pod(POD);
        let c = &p.spec.as_ref().unwrap().containers[0];
        let cfg = container_config(&p, c, &ctx()).unwrap();
        assert_eq!(
            cfg.metadata,
            Some(ContainerMetadata {
                name: "app".into(),
                attempt: 3
            })
        );
        let image = cfg.image.unwrap();
        assert_eq!(
            (image.image.as_str(), image.user_specified_image.as_str()),
            ("sha256:1234", "registry.local/app:1")
        );
        assert_eq!(cfg.command, vec!["/bin/run", "fast"]);
        assert_eq!(cfg.args, vec!["--name=web", "$(MODE)", "$(UNSET)"]);
        assert_eq!(cfg.working_dir, "/srv");
        let envs: Vec<(&str, &str)> = cfg
            .envs
            .iter()
            .map(|kv| (kv.key.as_str(), kv.value.as_str()))
            .collect();
        assert_eq!(envs, vec![("MODE", "fast"), ("POD_NAME", "web")]);
        assert_eq!(cfg.mounts.len(), 1);
        assert_eq!(cfg.log_path, "app/3.log");
        assert!(cfg.stdin && cfg.stdin_once && cfg.tty);

        let want_labels = HashMap::from([
            (labels::POD_NAME.to_string(), "web".to_string()),
            (labels::POD_NAMESPACE.to_string(), "prod".to_string()),
            (labels::POD_UID.to_string(), "u-1".to_string()),
            (labels::CONTAINER_NAME.to_string(), "app".to_string()),
            (labels::MANAGED.to_string(), "true".to_string()),
            (labels::CONTAINER_KIND.to_string(), "app".to_string()),
        ]);
        assert_eq!(cfg.labels, want_labels);
        let want_annotations = HashMap::from([
            (labels::RESTART_COUNT.to_string(), "3".to_string()),
            (
                labels::TERMINATION_MESSAGE_PATH.to_string(),
                "/dev/termination-log".to_string(),
            ),
            (
                labels::TERMINATION_MESSAGE_POLICY.to_string(),
                "FallbackToLogsOnError".to_string(),
            ),
            (
                labels::POD_TERMINATION_GRACE_PERIOD.to_string(),
                "45".to_string(),
            ),
            (
                labels::CONTAINER_FINGERPRINT.to_string(),
                "v1:abc".to_string(),
            ),
        ]);
        assert_eq!(cfg.annotations, want_annotations);

        let linux = cfg.linux.unwrap();
        let r = linux.resources.unwrap();
        assert_eq!(
            (
                r.cpu_shares,
                r.cpu_quota,
                r.cpu_period,
                r.memory_limit_in_bytes
            ),
            (512, 100_000, 100_000, 2 << 30)
        );
        assert_eq!(r.oom_score_adj, 1000 - 1000 / 8);
        let sc = linux.security_context.unwrap();
        assert_eq!(sc.run_as_user.map(|v| v.value), Some(1000));
        assert_eq!(sc.capabilities.unwrap().drop_capabilities, vec!["ALL"]);
        assert_eq!(
            sc.seccomp.unwrap().profile_type,
            ProfileType::Unconfined as i32
        );
        assert_eq!(sc.namespace_options.unwrap().pid, NamespaceMode::Pod as i32);
    }

    #[test]
    fn kinds_and_image_fallback() {
        let p = pod(POD);
        let spec = p.spec.as_ref().unwrap();
        let side = &spec.init_containers.as_ref().unwrap()[0];
        assert_eq!(ContainerKind::of(&p, side), ContainerKind::Sidecar);
        assert_eq!(
            ContainerKind::of(&p, &spec.containers[0]),
            ContainerKind::App
        );
        let mut c = ctx();
        c.kind = ContainerKind::Sidecar;
        c.image_ref = None;
        c.qos = QosClass::BestEffort;
        let cfg = container_config(&p, side, &c).unwrap();
        assert_eq!(
            cfg.labels.get(labels::CONTAINER_KIND).map(String::as_str),
            Some("sidecar")
        );
        assert_eq!(cfg.image.unwrap().image, "busybox");
        // The image runs as root and nothing sets a user: run_as_user 0 comes from the image.
        let sc = cfg.linux.unwrap().security_context.unwrap();
        assert_eq!(sc.run_as_user.map(|v| v.value), Some(0));
        assert_eq!(ContainerKind::Init.as_str(), "init");
    }

    #[test]
    fn errors_name_the_container_field() {
        let yaml = POD.replace("    image: registry.local/app:1\n", "");
        let p = pod(&yaml);
        let err =
            container_config(&p, &p.spec.as_ref().unwrap().containers[0], &ctx()).unwrap_err();
        assert_eq!(
            err,
            SpecError::invalid("spec.containers[0].image", "image is required")
        );
        let yaml = POD.replace(
            "{name: MODE, value: fast}",
            "{name: MODE, valueFrom: {secretKeyRef: {name: s, key: k}}}",
        );
        let p = pod(&yaml);
        let err =
            container_config(&p, &p.spec.as_ref().unwrap().containers[0], &ctx()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("spec.containers[0].env[0].valueFrom.secretKeyRef"),
            "{err}"
        );
    }
}
