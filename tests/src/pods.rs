//! CRI configurations for test pods, shaped the way the kubelet fills them.

use std::path::Path;

use kwk_cri::api;

/// How a test pod shares the node's namespaces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodShape {
    /// Share the node's network namespace instead of getting one from CNI.
    pub host_network: bool,
    /// Share one PID namespace among the pod's containers, with `pause` as PID 1.
    pub shared_pid: bool,
}

/// A sandbox for pod `name`: its cgroup is `<cgroup_root>/pod-<name>`, its containers log to
/// `log_dir`.
pub fn sandbox_config(
    name: &str,
    cgroup_root: &str,
    log_dir: &Path,
    shape: PodShape,
) -> api::PodSandboxConfig {
    let network = if shape.host_network {
        api::NamespaceMode::Node
    } else {
        api::NamespaceMode::Pod
    };
    let pid = if shape.shared_pid {
        api::NamespaceMode::Pod
    } else {
        api::NamespaceMode::Container
    };
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        // containerd requires an empty hostname for host-network sandboxes.
        hostname: if shape.host_network {
            String::new()
        } else {
            name.into()
        },
        log_directory: log_dir.to_string_lossy().into_owned(),
        linux: Some(api::LinuxPodSandboxConfig {
            cgroup_parent: format!("{cgroup_root}/pod-{name}"),
            security_context: Some(api::LinuxSandboxSecurityContext {
                namespace_options: Some(api::NamespaceOption {
                    network: network as i32,
                    pid: pid as i32,
                    ipc: api::NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A container running `command` from `image`, logging to `<name>.log` in the sandbox's log dir.
pub fn container_config(name: &str, image: &str, command: &[&str]) -> api::ContainerConfig {
    api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(kwk_cri::image_spec(image)),
        command: command.iter().map(|s| (*s).to_owned()).collect(),
        log_path: format!("{name}.log"),
        linux: Some(api::LinuxContainerConfig::default()),
        ..Default::default()
    }
}

/// CPU and memory limits as the kubelet encodes them: a CFS quota per 100 ms period and shares.
pub fn limits(milli_cpu: i64, memory_bytes: i64) -> api::LinuxContainerResources {
    const PERIOD_US: i64 = 100_000;
    api::LinuxContainerResources {
        cpu_period: PERIOD_US,
        cpu_quota: milli_cpu * PERIOD_US / 1000,
        cpu_shares: milli_cpu * 1024 / 1000,
        memory_limit_in_bytes: memory_bytes,
        ..Default::default()
    }
}
