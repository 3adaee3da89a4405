//! The kubelet configuration file (`kwk-node --config /etc/kwk/kubelet.yaml`): an upstream
//! `kubelet.config.k8s.io/v1beta1` `KubeletConfiguration` in YAML or JSON, plus drop-ins from
//! `<config>.d/`, merged the way upstream kubelet merges its `--config-dir`.
//!
//! Loading goes: read and parse each file into a JSON value (`load.rs`), check
//! `apiVersion`/`kind` and find unknown fields per file against the upstream schema table
//! (`fields.rs`), convert each file alone so a bad value is blamed on the file that holds it
//! (`convert.rs`), merge (`merge.rs`), convert the merged document and check the rules that span
//! fields. Error values say which file and field; I/O and YAML/JSON syntax errors keep their
//! detail as the error's source, so print the whole chain. Fields upstream has but kwk does not implement yet are
//! accepted and listed in [`LoadedConfig::ignored_fields`].
//!
//! Zero values follow upstream's defaulting: a field left out, `null`, or set to its Go zero
//! value (`0`, `""`, `"0s"`) takes the default, except the fields upstream keeps as pointers
//! (`cgroupsPerQOS`, `podPidsLimit`, `containerLogMaxFiles`, `resolvConf`,
//! `enforceNodeAllocatable`, `registerNode`, `nodeStatusMaxImages`), where an explicit value is
//! kept as written.

mod allocatable;
mod convert;
mod duration;
mod error;
mod eviction_fields;
#[cfg(test)]
mod eviction_tests;
mod fields;
mod image_gc;
mod load;
mod merge;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::quantity::Quantity;

pub use allocatable::{MachineResources, NodeResources, allocatable, capacity};
pub use duration::{DurationError, GoDuration, parse_go_duration};
pub use error::{ConfigError, FieldError};
pub use image_gc::ImageGcPolicy;
pub use load::{MAX_FILE_BYTES, drop_in_dir, load, parse_document};
/// JSON merge patch (RFC 7386), also how the apiserver applies `application/merge-patch+json`.
#[cfg(test)]
pub(crate) use merge::merge_patch;

/// The `apiVersion` every file must carry.
pub const API_VERSION: &str = "kubelet.config.k8s.io/v1beta1";
/// The `kind` every file must carry.
pub const KIND: &str = "KubeletConfiguration";

/// The kubelet settings kwk honours, with upstream's defaults (see [`KubeletConfig::default`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeletConfig {
    /// `staticPodPath`: directory (or single file) of static pod manifests. Default: none.
    pub static_pod_path: Option<PathBuf>,
    /// `fileCheckFrequency`: how often the static pod path is re-read. Default: 20s.
    pub file_check_frequency: Duration,
    /// `syncFrequency`: the longest time between two syncs of running pods. Default: 1m.
    pub sync_frequency: Duration,
    /// `containerRuntimeEndpoint`: the CRI socket.
    /// Default: `unix:///run/containerd/containerd.sock`.
    pub container_runtime_endpoint: RuntimeEndpoint,
    /// `cgroupDriver`: how cgroups are named and managed. Default: cgroupfs.
    pub cgroup_driver: CgroupDriver,
    /// `cgroupRoot`: the cgroup under which pod cgroups live. Default: `/`.
    pub cgroup_root: String,
    /// `cgroupsPerQOS`: whether pods are grouped in per-QoS-class cgroups. Default: true.
    pub cgroups_per_qos: bool,
    /// `podPidsLimit`: the most processes a pod may run; -1 (or 0) is unlimited. Default: -1.
    pub pod_pids_limit: i64,
    /// `maxPods`: the most pods this node runs. Default: 110.
    pub max_pods: u32,
    /// `runtimeRequestTimeout`: timeout of CRI calls other than pull, logs, exec and attach.
    /// Default: 2m.
    pub runtime_request_timeout: Duration,
    /// `containerLogMaxSize`: a container log file's size before rotation, in bytes.
    /// Default: 10Mi.
    pub container_log_max_size: u64,
    /// `containerLogMaxFiles`: how many log files a container keeps (at least 2). Default: 5.
    pub container_log_max_files: u32,
    /// `clusterDNS`: nameservers given to pods with the ClusterFirst DNS policy. Default: none.
    pub cluster_dns: Vec<IpAddr>,
    /// `clusterDomain`: the cluster's DNS domain, searched by pods. Default: empty (none).
    pub cluster_domain: String,
    /// `resolvConf`: the host resolver file pods' DNS config starts from; `""` in the file means
    /// none. Default: `/etc/resolv.conf`.
    pub resolv_conf: Option<PathBuf>,
    /// `podLogsDir`: where container logs are written, one directory per pod. Default:
    /// `/var/log/pods`.
    pub pod_logs_dir: PathBuf,
    /// `kubeReserved`: resources set aside for Kubernetes daemons. Default: none.
    pub kube_reserved: BTreeMap<ReservedResource, Quantity>,
    /// `systemReserved`: resources set aside for the operating system. Default: none.
    pub system_reserved: BTreeMap<ReservedResource, Quantity>,
    /// `address`: the IP the kubelet API serves on. Default: 0.0.0.0.
    pub address: IpAddr,
    /// `port`: the kubelet API port. Default: 10250.
    pub port: u16,
    /// `enforceNodeAllocatable`: which allocatable limits are enforced with cgroups; `["none"]`
    /// and `[]` both mean nothing. Default: `["pods"]`.
    pub enforce_node_allocatable: Vec<NodeAllocatableEnforcement>,
    /// `registerNode`: whether kwk-node registers its Node with the apiserver. Default: true.
    pub register_node: bool,
    /// `localStorageCapacityIsolation`: whether pods over their emptyDir `sizeLimit` or
    /// `ephemeral-storage` limits are evicted. Default: true.
    pub local_storage_capacity_isolation: bool,
    /// `registerWithTaints`: the taints a newly registered Node carries. Default: none.
    pub register_with_taints: Vec<NodeTaint>,
    /// `nodeStatusUpdateFrequency`: how often the node status is computed and, when it
    /// changed, posted. Default: 10s.
    pub node_status_update_frequency: Duration,
    /// `nodeStatusReportFrequency`: the longest time between two posts of an unchanged node
    /// status. Default: 5m, or `nodeStatusUpdateFrequency` when only that is set.
    pub node_status_report_frequency: Duration,
    /// `nodeLeaseDurationSeconds`: the node Lease's duration; it is renewed every quarter of
    /// it. Default: 40.
    pub node_lease_duration_seconds: u32,
    /// `nodeStatusMaxImages`: the most images listed in the node status; -1 is no limit.
    /// Default: 50.
    pub node_status_max_images: i32,
    /// `evictionHard`: signal (`memory.available`, `nodefs.available`, `pid.available`, ...)
    /// to threshold. `None` when unset: upstream's defaults apply. When set, as upstream, a
    /// signal it does not name has no threshold.
    pub eviction_hard: Option<BTreeMap<String, EvictionThreshold>>,
    /// `evictionSoft`: signal to threshold, met once it has held for the signal's
    /// `evictionSoftGracePeriod` (which each must have). Default: none.
    pub eviction_soft: BTreeMap<String, EvictionThreshold>,
    /// `evictionSoftGracePeriod`: signal to how long its soft threshold must hold. Default: none.
    pub eviction_soft_grace_period: BTreeMap<String, Duration>,
    /// `evictionMaxPodGracePeriod`: the longest grace period, in seconds, a pod evicted for a
    /// soft threshold gets. Default: 0.
    pub eviction_max_pod_grace_period: i64,
    /// `evictionPressureTransitionPeriod`: how long a pressure condition stays after its last
    /// breach. Default: 5m.
    pub eviction_pressure_transition_period: Duration,
    /// `evictionMinimumReclaim`: signal to the amount an eviction must free beyond the
    /// threshold before pressure ends. Default: none.
    pub eviction_minimum_reclaim: BTreeMap<String, EvictionThreshold>,
    /// `readOnlyPort`: upstream's unauthenticated read-only port. kwk never serves it; a
    /// non-zero value is kept only to say so in the log. Default: 0 (disabled).
    pub read_only_port: u16,
    /// `tlsCertFile`: the kubelet API's serving certificate (PEM, chain allowed). Default: none
    /// (a self-signed one under `<root-dir>/pki/`).
    pub tls_cert_file: Option<PathBuf>,
    /// `tlsPrivateKeyFile`: the key of `tlsCertFile`. Default: none.
    pub tls_private_key_file: Option<PathBuf>,
    /// `authentication`: who may call the kubelet API.
    pub authentication: KubeletAuthentication,
    /// `authorization`: what an authenticated caller may do there.
    pub authorization: KubeletAuthorization,
    /// `imageGCHighThresholdPercent`, `imageGCLowThresholdPercent`, `imageMinimumGCAge`,
    /// `imageMaximumGCAge`: when unused images are freed.
    pub image_gc: ImageGcPolicy,
}

/// An `evictionHard` threshold: a quantity (bytes, or a count for `pid.available` and
/// `*.inodesFree`) or a percentage of capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictionThreshold {
    Quantity(Quantity),
    /// A share of capacity in hundredths of a percent: `1000` for `10%`, `750` for `7.5%`.
    Percent {
        hundredths: u32,
    },
}

impl EvictionThreshold {
    /// The share of capacity as a fraction (`0.1` for `10%`), for a percentage.
    pub fn fraction(self) -> Option<f64> {
        match self {
            Self::Percent { hundredths } => Some(f64::from(hundredths) / 10_000.0),
            Self::Quantity(_) => None,
        }
    }
}

/// The eviction signals upstream's `evictionHard` accepts.
pub const EVICTION_SIGNALS: &[&str] = &[
    "memory.available",
    "allocatableMemory.available",
    "nodefs.available",
    "nodefs.inodesFree",
    "imagefs.available",
    "imagefs.inodesFree",
    "containerfs.available",
    "containerfs.inodesFree",
    "pid.available",
];

/// `authentication` of the kubelet API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeletAuthentication {
    /// `x509.clientCAFile`: client certificates signed by these CAs authenticate (CN = user,
    /// O = groups). Default: none.
    pub client_ca_file: Option<PathBuf>,
    /// `webhook.enabled`: bearer tokens are checked with a `TokenReview`. Default: true.
    pub webhook_enabled: bool,
    /// `webhook.cacheTTL`: how long a TokenReview answer is reused. Default: 2m.
    pub webhook_cache_ttl: Duration,
    /// `anonymous.enabled`: requests without credentials run as `system:anonymous`.
    /// Default: false.
    pub anonymous_enabled: bool,
}

impl Default for KubeletAuthentication {
    fn default() -> Self {
        Self {
            client_ca_file: None,
            webhook_enabled: true,
            webhook_cache_ttl: Duration::from_secs(120),
            anonymous_enabled: false,
        }
    }
}

/// `authorization` of the kubelet API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeletAuthorization {
    /// `mode`: `Webhook` (a `SubjectAccessReview` per request) or `AlwaysAllow`.
    /// Default: Webhook.
    pub mode: AuthorizationMode,
    /// `webhook.cacheAuthorizedTTL`: how long an allow is reused. Default: 5m.
    pub cache_authorized_ttl: Duration,
    /// `webhook.cacheUnauthorizedTTL`: how long a deny is reused. Default: 30s.
    pub cache_unauthorized_ttl: Duration,
}

impl Default for KubeletAuthorization {
    fn default() -> Self {
        Self {
            mode: AuthorizationMode::Webhook,
            cache_authorized_ttl: Duration::from_secs(300),
            cache_unauthorized_ttl: Duration::from_secs(30),
        }
    }
}

/// `authorization.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorizationMode {
    /// Every authenticated request is allowed.
    AlwaysAllow,
    /// The apiserver decides with a `SubjectAccessReview`.
    Webhook,
}

impl AuthorizationMode {
    pub(crate) const NAMES: &'static [&'static str] = &["AlwaysAllow", "Webhook"];

    pub(crate) fn from_name(name: &str) -> Option<Self> {
        match name {
            "AlwaysAllow" => Some(Self::AlwaysAllow),
            "Webhook" => Some(Self::Webhook),
            _ => None,
        }
    }

    /// The mode's spelling in the file.
    pub fn name(self) -> &'static str {
        match self {
            Self::AlwaysAllow => "AlwaysAllow",
            Self::Webhook => "Webhook",
        }
    }
}

impl Default for KubeletConfig {
    /// Upstream kubelet's v1beta1 defaults.
    fn default() -> Self {
        Self {
            static_pod_path: None,
            file_check_frequency: Duration::from_secs(20),
            sync_frequency: Duration::from_secs(60),
            container_runtime_endpoint: RuntimeEndpoint::default(),
            cgroup_driver: CgroupDriver::Cgroupfs,
            cgroup_root: "/".to_string(),
            cgroups_per_qos: true,
            pod_pids_limit: -1,
            max_pods: 110,
            runtime_request_timeout: Duration::from_secs(120),
            container_log_max_size: 10 * 1024 * 1024,
            container_log_max_files: 5,
            cluster_dns: Vec::new(),
            cluster_domain: String::new(),
            resolv_conf: Some(PathBuf::from("/etc/resolv.conf")),
            pod_logs_dir: PathBuf::from("/var/log/pods"),
            kube_reserved: BTreeMap::new(),
            system_reserved: BTreeMap::new(),
            address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 10250,
            enforce_node_allocatable: vec![NodeAllocatableEnforcement::Pods],
            register_node: true,
            local_storage_capacity_isolation: true,
            register_with_taints: Vec::new(),
            node_status_update_frequency: Duration::from_secs(10),
            node_status_report_frequency: Duration::from_secs(300),
            node_lease_duration_seconds: 40,
            node_status_max_images: 50,
            eviction_hard: None,
            eviction_soft: BTreeMap::new(),
            eviction_soft_grace_period: BTreeMap::new(),
            eviction_max_pod_grace_period: 0,
            eviction_pressure_transition_period: Duration::from_secs(300),
            eviction_minimum_reclaim: BTreeMap::new(),
            read_only_port: 0,
            tls_cert_file: None,
            tls_private_key_file: None,
            authentication: KubeletAuthentication::default(),
            authorization: KubeletAuthorization::default(),
            image_gc: ImageGcPolicy::default(),
        }
    }
}

impl KubeletConfig {
    /// The `pids.max` for pod cgroups: `None` when unlimited (`podPidsLimit` of -1 or 0).
    pub fn pod_pids_max(&self) -> Option<u64> {
        u64::try_from(self.pod_pids_limit).ok().filter(|&n| n > 0)
    }
}

/// The container runtime's CRI endpoint: a unix socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeEndpoint {
    socket_path: PathBuf,
}

/// containerd's default socket, upstream's default endpoint.
const DEFAULT_RUNTIME_SOCKET: &str = "/run/containerd/containerd.sock";

impl RuntimeEndpoint {
    /// The path of the unix socket.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    pub(crate) fn from_socket_path(socket_path: PathBuf) -> Self {
        Self { socket_path }
    }
}

impl Default for RuntimeEndpoint {
    fn default() -> Self {
        Self {
            socket_path: PathBuf::from(DEFAULT_RUNTIME_SOCKET),
        }
    }
}

impl fmt::Display for RuntimeEndpoint {
    /// The endpoint as a `unix://` URL.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unix://{}", self.socket_path.display())
    }
}

/// `cgroupDriver`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CgroupDriver {
    /// Cgroups are directories the kubelet manages itself.
    #[default]
    Cgroupfs,
    /// Cgroups are systemd slices and scopes.
    Systemd,
}

impl CgroupDriver {
    pub(crate) const NAMES: &'static [&'static str] = &["cgroupfs", "systemd"];

    pub(crate) fn from_name(name: &str) -> Option<Self> {
        match name {
            "cgroupfs" => Some(Self::Cgroupfs),
            "systemd" => Some(Self::Systemd),
            _ => None,
        }
    }
}

/// A resource that `kubeReserved` and `systemReserved` may set aside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReservedResource {
    /// `cpu`, in cores (`500m` is half a core).
    Cpu,
    /// `memory`, in bytes.
    Memory,
    /// `ephemeral-storage`, in bytes.
    EphemeralStorage,
    /// `pid`, a number of processes.
    Pid,
}

impl ReservedResource {
    pub(crate) const NAMES: &'static [&'static str] =
        &["cpu", "memory", "ephemeral-storage", "pid"];

    pub(crate) fn from_name(name: &str) -> Option<Self> {
        match name {
            "cpu" => Some(Self::Cpu),
            "memory" => Some(Self::Memory),
            "ephemeral-storage" => Some(Self::EphemeralStorage),
            "pid" => Some(Self::Pid),
            _ => None,
        }
    }

    /// The resource's name in the API.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Memory => "memory",
            Self::EphemeralStorage => "ephemeral-storage",
            Self::Pid => "pid",
        }
    }
}

/// One entry of `registerWithTaints`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeTaint {
    pub key: String,
    /// Empty when the file has none.
    pub value: String,
    pub effect: TaintEffect,
}

/// A taint's `effect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

impl TaintEffect {
    pub(crate) const NAMES: &'static [&'static str] =
        &["NoSchedule", "PreferNoSchedule", "NoExecute"];

    pub(crate) fn from_name(name: &str) -> Option<Self> {
        match name {
            "NoSchedule" => Some(Self::NoSchedule),
            "PreferNoSchedule" => Some(Self::PreferNoSchedule),
            "NoExecute" => Some(Self::NoExecute),
            _ => None,
        }
    }

    /// The effect's spelling in the API.
    pub fn name(self) -> &'static str {
        match self {
            Self::NoSchedule => "NoSchedule",
            Self::PreferNoSchedule => "PreferNoSchedule",
            Self::NoExecute => "NoExecute",
        }
    }
}

/// One value of `enforceNodeAllocatable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeAllocatableEnforcement {
    /// `pods`: limit all pods together to the node's allocatable resources.
    Pods,
    /// `system-reserved`: limit the `systemReservedCgroup` to `systemReserved`.
    SystemReserved,
    /// `system-reserved-compressible`: as `system-reserved`, for CPU only.
    SystemReservedCompressible,
    /// `kube-reserved`: limit the `kubeReservedCgroup` to `kubeReserved`.
    KubeReserved,
    /// `kube-reserved-compressible`: as `kube-reserved`, for CPU only.
    KubeReservedCompressible,
}

impl NodeAllocatableEnforcement {
    pub(crate) const NAMES: &'static [&'static str] = &[
        "none",
        "pods",
        "system-reserved",
        "system-reserved-compressible",
        "kube-reserved",
        "kube-reserved-compressible",
    ];

    /// The value's spelling in the file.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pods => "pods",
            Self::SystemReserved => "system-reserved",
            Self::SystemReservedCompressible => "system-reserved-compressible",
            Self::KubeReserved => "kube-reserved",
            Self::KubeReservedCompressible => "kube-reserved-compressible",
        }
    }

    /// The value spelled `name`; `Ok(None)` for `none`.
    pub(crate) fn from_name(name: &str) -> Result<Option<Self>, ()> {
        Ok(Some(match name {
            "none" => return Ok(None),
            "pods" => Self::Pods,
            "system-reserved" => Self::SystemReserved,
            "system-reserved-compressible" => Self::SystemReservedCompressible,
            "kube-reserved" => Self::KubeReserved,
            "kube-reserved-compressible" => Self::KubeReservedCompressible,
            _ => return Err(()),
        }))
    }
}

/// A loaded configuration and what the loader noticed on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedConfig {
    /// The merged, converted configuration.
    pub config: KubeletConfig,
    /// Upstream fields that are set but that kwk does not implement yet, sorted, each once.
    pub ignored_fields: Vec<String>,
    /// Fields upstream's schema does not have, with the file that holds them.
    pub unknown_fields: Vec<(PathBuf, String)>,
    /// The files read, main file first, then drop-ins in merge order.
    pub files: Vec<PathBuf>,
}

impl LoadedConfig {
    /// Logs the ignored fields as one line (nothing when there are none).
    pub fn log_ignored(&self) {
        if !self.ignored_fields.is_empty() {
            tracing::info!(
                fields = %self.ignored_fields.join(", "),
                "kubelet configuration fields accepted but not implemented by kwk; they have no effect"
            );
        }
    }

    /// Logs a warning for each unknown field, naming its file.
    pub fn log_unknown(&self) {
        for (path, field) in &self.unknown_fields {
            tracing::warn!(
                file = %path.display(),
                field = %field,
                "unknown kubelet configuration field (not in kubelet.config.k8s.io/v1beta1); ignored"
            );
        }
    }
}
