//! `NodeSetup`: the host-side preparation around the CRI calls of a pod — its cgroup, log
//! directory, volumes and per-container files — and the CRI configs built from its spec. It
//! joins `cgroups` and `runtime_spec` for the pod runtime; the logic lives in those modules.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kwk_cri::api;

use super::NodeOptions;
use crate::cgroups::PodCgroups;
use crate::cgroups::qos::pod_qos;
use crate::config::{KubeletConfig, MachineResources};
use crate::pod::cri_runtime::{ContainerStart, PodSetup, mount_failure};
use crate::pod::observed::ObservedContainer;
use crate::pod::runtime::RuntimeError;
use crate::pod::spec;
use crate::runtime_spec::api_objects::ApiObjects;
use crate::runtime_spec::claims::resolvable_claims;
use crate::runtime_spec::container::container_config_with_env;
use crate::runtime_spec::dns::DnsContext;
use crate::runtime_spec::env::{DownwardContext, resolve_env};
use crate::runtime_spec::projection::api_volume_kind;
use crate::runtime_spec::sandbox::{SandboxContext, pod_log_dir, sandbox_config};
use crate::runtime_spec::volumes::{
    VolumeContext, VolumeSources, new_termination_file_id, plan_pod_volumes, plan_volumes,
};
use crate::runtime_spec::volumes_fs::{
    VolumeError, apply_volume_plan, cleanup_pod_dir, setup_volume,
};
use crate::runtime_spec::{ContainerContext, NodeSettings, container_field_path};

use super::api_objects::ObjectFetcher;

/// How long a removed pod's logs stay on disk.
pub(super) const LOG_RETENTION: Duration = Duration::from_secs(60);
/// The most of a termination message that is kept (upstream: 4096 bytes).
const MAX_TERMINATION_MESSAGE: u64 = 4096;

/// Host-side pod preparation for the CRI pod runtime.
#[derive(Debug)]
pub struct NodeSetup {
    cgroups: PodCgroups,
    node_name: String,
    root_dir: PathBuf,
    pod_logs_dir: PathBuf,
    cluster_dns: Vec<std::net::IpAddr>,
    cluster_domain: String,
    resolv_conf: Option<PathBuf>,
    node: NodeSettings,
    objects: ObjectFetcher,
}

impl NodeSetup {
    pub fn new(config: &KubeletConfig, options: &NodeOptions, cgroups: PodCgroups) -> Self {
        let mut node = NodeSettings {
            memory_capacity_bytes: memory_capacity().unwrap_or(1 << 30),
            memory_oom_group: cgroups.is_v2(),
            ..NodeSettings::default()
        };
        node.security.seccomp_profile_root = options.root_dir.join("seccomp");
        Self {
            cgroups,
            node_name: options.node_name.clone(),
            root_dir: options.root_dir.clone(),
            pod_logs_dir: config.pod_logs_dir.clone(),
            cluster_dns: config.cluster_dns.clone(),
            cluster_domain: config.cluster_domain.clone(),
            resolv_conf: config.resolv_conf.clone(),
            node,
            objects: ObjectFetcher::default(),
        }
    }

    /// Reads ConfigMaps, Secrets and service-account tokens through `client`.
    #[must_use]
    pub fn with_api(mut self, client: Option<kube::Client>) -> Self {
        self.objects = ObjectFetcher::new(client);
        self
    }

    /// The downward API's facts without the pod's IPs (what volumes may read).
    fn downward(&self, pod_ips: &[String]) -> DownwardContext {
        DownwardContext {
            pod_ip: pod_ips.first().cloned(),
            pod_ips: pod_ips.to_vec(),
            host_ip: None,
            host_ips: Vec::new(),
            node_name: self.node_name.clone(),
            allocatable: None,
        }
    }

    async fn fetch_objects(&self, pod: &Pod) -> Result<ApiObjects, RuntimeError> {
        self.objects.fetch(pod).await.map_err(|e| RuntimeError {
            operation: "fetching ConfigMaps, Secrets, tokens and PersistentVolumeClaims".into(),
            message: e.to_string(),
            waiting_reason: Some("CreateContainerConfigError"),
        })
    }

    fn pod_dir(&self, uid: &str) -> PathBuf {
        self.root_dir.join("pods").join(uid)
    }

    fn sandbox_context(&self, attempt: u32, cgroup_parent: String) -> SandboxContext {
        SandboxContext {
            attempt,
            cgroup_parent,
            log_root: self.pod_logs_dir.clone(),
            dns: DnsContext {
                cluster_dns: self.cluster_dns.clone(),
                cluster_domain: self.cluster_domain.clone(),
                host_resolv_conf: self
                    .resolv_conf
                    .as_ref()
                    .and_then(|p| std::fs::read_to_string(p).ok()),
            },
            node_name: self.node_name.clone(),
        }
    }
}

impl PodSetup for NodeSetup {
    async fn sandbox_config(
        &self,
        pod: &Pod,
        attempt: u32,
    ) -> Result<api::PodSandboxConfig, RuntimeError> {
        let cgroup = self
            .cgroups
            .ensure_pod(pod)
            .map_err(|e| setup_error("pod cgroup", e))?;
        let ctx = self.sandbox_context(attempt, cgroup.cri_parent);
        let log_dir = pod_log_dir(&ctx, pod);
        std::fs::create_dir_all(&log_dir)
            .map_err(|e| setup_error(&format!("log directory {}", log_dir.display()), e))?;
        sandbox_config(pod, &ctx).map_err(|e| setup_error("sandbox config", e))
    }

    async fn container_config(
        &self,
        pod: &Pod,
        start: &ContainerStart<'_>,
    ) -> Result<api::ContainerConfig, RuntimeError> {
        let container = spec::find_container(pod, start.name)
            .map(|c| c.spec)
            .ok_or_else(|| {
                setup_error(
                    "container",
                    format!("{} is not in the pod spec", start.name),
                )
            })?;
        let field = container_field_path(pod, container);
        let host_network = spec::host_network(pod);
        let downward = self.downward(start.pod_ips);
        let objects = self.fetch_objects(pod).await?;
        self.objects
            .remember_claims(spec::uid(pod), resolvable_claims(pod, &objects));
        let env = resolve_env(pod, container, &field, &downward, &objects)
            .map_err(|e| config_error(start.name, e))?;
        let plan = plan_volumes(
            pod,
            container,
            &VolumeContext {
                env: &env,
                pod_ips: if host_network {
                    Vec::new()
                } else {
                    start.pod_ips.to_vec()
                },
                cluster_domain: self.cluster_domain.clone(),
                node_hosts_file: PathBuf::from("/etc/hosts"),
                termination_file_id: new_termination_file_id(),
                sources: VolumeSources {
                    objects: &objects,
                    downward: &downward,
                },
            },
        )
        .map_err(|e| config_error(start.name, e))?;
        let pod_dir = self.pod_dir(spec::uid(pod));
        let applied = apply_volume_plan(&plan, &pod_dir).map_err(|e| match e {
            VolumeError::SetUp { .. } => mount_failure(e.to_string()),
            e => RuntimeError {
                operation: format!("volumes of {}", start.name),
                message: e.to_string(),
                waiting_reason: Some("CreateContainerConfigError"),
            },
        })?;
        let qos = pod_qos(pod).map_err(|e| config_error(start.name, e))?;
        let ctx = ContainerContext {
            restart_count: start.restart_count,
            kind: start.kind,
            fingerprint: start.fingerprint.clone(),
            image_ref: None,
            image_user: None,
            downward,
            mounts: applied.mounts,
            qos,
            node: self.node.clone(),
        };
        container_config_with_env(pod, container, &field, &env, &ctx)
            .map_err(|e| config_error(start.name, e))
    }

    /// Rewrites the pod's API-backed volumes from fresh copies of their objects (a volume is
    /// only rewritten when its files changed). A volume that fails keeps its files as they
    /// were and does not hold the others back; the first failure is returned.
    async fn refresh_volumes(&self, pod: &Pod, pod_ips: &[String]) -> Result<(), RuntimeError> {
        let has_api_volumes = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .is_some_and(|v| v.iter().any(|v| api_volume_kind(v).is_some()));
        if !has_api_volumes {
            return Ok(());
        }
        let objects = self.fetch_objects(pod).await?;
        let downward = self.downward(pod_ips);
        let sources = VolumeSources {
            objects: &objects,
            downward: &downward,
        };
        let setups = plan_pod_volumes(pod, sources, |v| api_volume_kind(v).is_some())
            .map_err(|e| setup_error("volumes", e))?;
        let pod_dir = self.pod_dir(spec::uid(pod));
        let mut first_error = None;
        for setup in &setups {
            if let Err(err) = setup_volume(setup, &pod_dir) {
                first_error.get_or_insert_with(|| mount_failure(err.to_string()));
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn termination_message(&self, container: &ObservedContainer) -> Option<String> {
        let file = std::fs::File::open(container.termination_message_file.as_ref()?).ok()?;
        let mut message = String::new();
        file.take(MAX_TERMINATION_MESSAGE)
            .read_to_string(&mut message)
            .ok()?;
        (!message.is_empty()).then_some(message)
    }

    /// The burstable QoS cgroup's CPU weight follows the sum of its pods' requests, as the
    /// kubelet's QoS container manager does.
    fn active_pods_changed(&self, pods: &[&Pod]) {
        if let Err(err) = self.cgroups.update_qos_shares(pods) {
            tracing::warn!(%err, "updating the QoS cgroups' CPU shares");
        }
    }

    async fn cleanup(&self, pod: &Pod) -> Result<(), RuntimeError> {
        let uid = spec::uid(pod);
        self.cgroups
            .remove_pod(uid)
            .map_err(|e| setup_error("pod cgroup removal", e))?;
        cleanup_pod_dir(&self.pod_dir(uid)).map_err(|e| setup_error("pod directory removal", e))?;
        self.objects.forget_pod(uid);
        let ctx = self.sandbox_context(0, String::new());
        let log_dir = pod_log_dir(&ctx, pod);
        tokio::spawn(remove_logs_later(log_dir));
        Ok(())
    }
}

/// Removes a terminated pod's log directory after [`LOG_RETENTION`].
async fn remove_logs_later(dir: PathBuf) {
    tokio::time::sleep(LOG_RETENTION).await;
    if let Err(err) = remove_log_dir(&dir) {
        tracing::warn!(dir = %dir.display(), %err, "cannot remove pod logs");
    }
}

fn remove_log_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// The machine's CPUs and memory.
pub fn machine_resources() -> MachineResources {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    MachineResources {
        cpu_millis: u64::try_from(cpus).unwrap_or(1).saturating_mul(1000),
        memory_bytes: memory_capacity()
            .and_then(|m| u64::try_from(m).ok())
            .unwrap_or(0),
    }
}

/// `MemTotal` from /proc/meminfo, in bytes.
fn memory_capacity() -> Option<i64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: i64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

fn setup_error(what: &str, err: impl std::fmt::Display) -> RuntimeError {
    RuntimeError {
        operation: format!("preparing the {what}"),
        message: err.to_string(),
        waiting_reason: None,
    }
}

fn config_error(container: &str, err: impl std::fmt::Display) -> RuntimeError {
    RuntimeError {
        operation: format!("container config of {container}"),
        message: err.to_string(),
        waiting_reason: Some("CreateContainerConfigError"),
    }
}
