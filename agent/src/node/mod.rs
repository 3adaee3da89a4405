//! The `kwk-node` daemon wiring: load the config, connect to the runtime, import shipped
//! images, set up the node's cgroups, and run the pod sources, pod manager, image GC, log rotation
//! and local API until shutdown. Shutdown stops kwk-node only; pods keep running and are adopted by
//! the next start.

mod api_objects;
mod images;
mod setup;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kwk_cri::{ConnectOptions, CriClient, CriError, Timeouts};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::cgroups::values::NodeAllocatable;
use crate::cgroups::{CgroupConfig, CgroupDriver, CgroupError, PodCgroups};
use crate::config::{self, ConfigError, KubeletConfig};
use crate::local_api::{self, LocalApiError};
use crate::logs::{self, LogLimits};
use crate::pod::cri_runtime::CriPodRuntime;
use crate::pod::manager::{DesiredPods, PodManager};
use crate::pod::store::StatusStore;
use crate::pod::worker::WorkerConfig;
use crate::static_pods::{StaticPodSnapshot, StaticPodSource};

pub use setup::{NodeSetup, machine_resources};

/// Under the root dir: the last valid version of each static pod manifest, so a manifest that
/// is invalid when kwk-node starts does not stop its running pod.
pub const STATIC_POD_STATE_DIR: &str = "static-pods";

/// What the command line decides.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    pub config: PathBuf,
    pub root_dir: PathBuf,
    pub node_name: String,
    pub local_api_socket: PathBuf,
    pub image_dir: PathBuf,
    /// The kubeconfig for the apiserver (`--kubeconfig`); without one kwk-node runs
    /// standalone, with static pods only.
    pub kubeconfig: Option<PathBuf>,
    /// The node's address for the apiserver and the kubelet API (`--node-ip`; default: the
    /// address of the default route's interface).
    pub node_ip: Option<std::net::IpAddr>,
    /// The `KubeProxyConfiguration` file (`--proxy-config`); `None` (`--no-proxy`): no proxy.
    /// The proxy needs an apiserver.
    pub proxy_config: Option<PathBuf>,
    /// The network namespace the proxy programs (`--proxy-netns`, e.g. `/run/netns/pods`;
    /// default: kwk-node's own). For nodes whose pods live in a namespace of their own.
    pub proxy_netns: Option<PathBuf>,
    /// Where kwk-node writes the kwk-cni conflist once the node has a podCIDR
    /// (`--cni-conf-dir`); `None`: the runtime's CNI configuration is left alone.
    pub cni_conf_dir: Option<PathBuf>,
    /// The conflist's `ipam.dataDir`, where kwk-cni keeps its allocations (`--cni-data-dir`);
    /// `None`: the plugin's default.
    pub cni_data_dir: Option<PathBuf>,
    /// The node-wide dead container limits (`--maximum-dead-containers`,
    /// `--maximum-dead-containers-per-container`, `--minimum-container-ttl-duration`).
    pub container_gc: crate::container_gc::ContainerGcPolicy,
}

/// Why kwk-node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("container runtime at {endpoint}: {source}")]
    Runtime {
        endpoint: String,
        #[source]
        source: CriError,
    },
    /// Printed with its source chain (`{:#}`), which carries the detail.
    #[error("pod cgroups")]
    Cgroups(#[from] CgroupError),
    #[error(transparent)]
    LocalApi(#[from] LocalApiError),
    #[error(transparent)]
    Kubeconfig(#[from] crate::api_client::KubeconfigError),
    #[error(transparent)]
    ApiPods(#[from] crate::api_pods::ApiPodsError),
    #[error(transparent)]
    ProxyConfig(#[from] crate::proxy::config::ProxyConfigError),
    #[error(transparent)]
    Proxy(#[from] crate::proxy::ProxyError),
    #[error("cannot create {path}: {source}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Runs kwk-node until `cancel`.
pub async fn run(options: NodeOptions, cancel: CancellationToken) -> Result<(), NodeError> {
    let loaded = config::load(&options.config)?;
    loaded.log_ignored();
    loaded.log_unknown();
    let config = loaded.config;
    // Read before anything starts, so a bad file stops start-up with the field named.
    let proxy_config = match (&options.proxy_config, &options.kubeconfig) {
        (Some(path), Some(_)) => {
            let proxy = crate::proxy::config::load(path)?;
            if !proxy.ignored_fields.is_empty() {
                tracing::info!(fields = ?proxy.ignored_fields, file = %path.display(), "proxy configuration fields kwk does not use");
            }
            Some(proxy)
        }
        _ => None,
    };
    tracing::info!(
        node = %options.node_name,
        config = %options.config.display(),
        "kwk-node starting"
    );
    std::fs::create_dir_all(&options.root_dir).map_err(|source| NodeError::StateDir {
        path: options.root_dir.clone(),
        source,
    })?;

    let api_client = match &options.kubeconfig {
        Some(path) => Some(crate::api_client::client_from_kubeconfig(path).await?),
        None => None,
    };

    // First, so that a cgroupDriver of systemd without a reachable systemd stops start-up
    // before anything else is touched.
    let cgroups = PodCgroups::new(cgroup_config(&config))?;

    let socket = config
        .container_runtime_endpoint
        .socket_path()
        .to_path_buf();
    let runtime_err = |source| NodeError::Runtime {
        endpoint: socket.display().to_string(),
        source,
    };
    let timeouts = Timeouts {
        default: config.runtime_request_timeout,
        ..Timeouts::default()
    };
    let cri = CriClient::connect(&socket, &ConnectOptions::default(), timeouts)
        .await
        .map_err(runtime_err)?;
    let version = cri.version().await.map_err(runtime_err)?;
    tracing::info!(
        runtime = %version.runtime_name,
        version = %version.runtime_version,
        "connected to the container runtime"
    );
    images::import_all(&socket, &options.image_dir, &cri).await;

    let machine = setup::machine_resources();
    let allocatable = config::allocatable(&machine, &config);
    tracing::info!(
        cpu_millis = allocatable.cpu_millis,
        memory_bytes = allocatable.memory_bytes,
        pods = allocatable.pods,
        "node allocatable"
    );
    let enforce = config
        .enforce_node_allocatable
        .contains(&config::NodeAllocatableEnforcement::Pods);
    cgroups.ensure_node_hierarchy(enforce.then(|| NodeAllocatable {
        cpu_milli: i64::try_from(allocatable.cpu_millis).unwrap_or(i64::MAX),
        memory_bytes: i64::try_from(allocatable.memory_bytes).unwrap_or(i64::MAX),
    }))?;

    // With an apiserver, terminated pods keep their final status until it is delivered.
    let store = if options.kubeconfig.is_some() {
        StatusStore::keeping_final_statuses()
    } else {
        StatusStore::default()
    };
    let setup = NodeSetup::new(&config, &options, cgroups).with_api(api_client.clone());
    let (events, event_queue) = crate::pod::events::EventSink::channel();
    let runtime = Arc::new(CriPodRuntime::new(cri.clone(), setup).with_events(events.clone()));
    let manager = PodManager::new(
        runtime,
        store.clone(),
        WorkerConfig {
            sync_frequency: config.sync_frequency,
            retry_after: Duration::from_secs(1),
            host_ip: options
                .node_ip
                .or_else(crate::node_status::machine::default_route_address)
                .map(|ip| ip.to_string()),
            events,
            earlier_instances_kept: options.container_gc.earlier_instances_kept(),
        },
        usize::try_from(config.max_pods).unwrap_or(usize::MAX),
    );

    let mut desired = static_pod_source(&config, &options, &cancel);
    let node_facts = crate::pod::node_facts::local(&options.node_name, &allocatable, &config);
    let mut manager = manager.with_node_facts(crate::pod::node_facts::watch(
        api_client.clone(),
        node_facts,
        &cancel,
    ));
    if let Some(client) = &api_client {
        let api = crate::api_pods::start(
            client.clone(),
            &options.node_name,
            desired,
            store.clone(),
            event_queue,
            cancel.clone(),
        )
        .await?;
        desired = api.desired;
        manager = manager.with_sources_ready(api.sources_ready);
    }
    let tasks = tokio_util::task::TaskTracker::new();
    let (evict, evictions) = tokio::sync::mpsc::channel(1);
    let manager = manager.with_evictions(evictions);
    let pressures = crate::eviction::manager::spawn(
        &config,
        &options,
        &cri,
        store.clone(),
        evict,
        &tasks,
        &cancel,
    )
    .await;
    tasks.spawn(manager.run(desired, cancel.clone()));
    let pod_cidr = crate::node_status::spawn(
        api_client.clone(),
        &options,
        &config,
        cri.clone(),
        Some(pressures),
        &tasks,
        &cancel,
    );
    if let (Some(client), Some(pod_cidr)) = (&api_client, &pod_cidr) {
        start_pod_routes(client.clone(), &options, pod_cidr.clone(), &tasks, &cancel);
        if let Some(dir) = &options.cni_conf_dir {
            let cluster_cidrs = proxy_config
                .as_ref()
                .map(|p| p.cluster_cidrs.clone())
                .unwrap_or_default();
            tasks.spawn(crate::network::cni_conf::run(
                dir.clone(),
                options.cni_data_dir.clone(),
                pod_cidr.clone(),
                cluster_cidrs,
                cancel.clone(),
            ));
        }
    }
    if let (Some(client), Some(proxy)) = (&api_client, &proxy_config) {
        let (dataplane, conntrack) =
            crate::proxy::open_dataplane(proxy, options.proxy_netns.as_deref())?;
        let node = crate::proxy::ProxyNode {
            name: options.node_name.clone(),
            ips: options
                .node_ip
                .or_else(crate::node_status::machine::default_route_address)
                .into_iter()
                .collect(),
            pod_cidr: pod_cidr.clone(),
        };
        crate::proxy::start(
            client.clone(),
            node,
            proxy,
            dataplane,
            conntrack,
            &tasks,
            &cancel,
        )?;
    }
    tasks.spawn(crate::kubelet_api::run(
        config.clone(),
        crate::kubelet_api::NodeContext {
            node_name: options.node_name.clone(),
            root_dir: options.root_dir.clone(),
            client: api_client.clone(),
            node_ip: options.node_ip,
        },
        store.clone(),
        cri.clone(),
        cancel.clone(),
    ));
    let protected = crate::image_gc::executor::sandbox_image(&cri)
        .await
        .into_iter()
        .collect();
    tasks.spawn(crate::image_gc::executor::run(
        crate::image_gc::executor::ImageGc::new(cri.clone(), config.image_gc, protected),
        cancel.clone(),
    ));
    tasks.spawn(crate::container_gc::executor::run(
        cri.clone(),
        options.container_gc,
        cancel.clone(),
    ));
    tasks.spawn(logs::run(
        cri,
        LogLimits {
            max_size: config.container_log_max_size,
            max_files: usize::try_from(config.container_log_max_files).unwrap_or(5),
        },
        cancel.clone(),
    ));
    tasks.close();
    let served = local_api::serve(&options.local_api_socket, store, cancel.clone()).await;
    cancel.cancel();
    tasks.wait().await;
    tracing::info!("kwk-node stopped");
    Ok(served?)
}

/// host-gw: routes to the other nodes' pod CIDRs (none on a single node).
fn start_pod_routes(
    client: kube::Client,
    options: &NodeOptions,
    pod_cidr: crate::node_status::PodCidr,
    tasks: &tokio_util::task::TaskTracker,
    cancel: &CancellationToken,
) {
    match kwk_netdp::rtnl::RtnlSocket::open() {
        Ok(socket) => {
            tasks.spawn(crate::network::routes::run(
                client,
                options.node_name.clone(),
                pod_cidr,
                Box::new(socket),
                Duration::from_secs(30),
                cancel.clone(),
            ));
        }
        Err(err) => {
            tracing::warn!(%err, "no rtnetlink socket: pods on other nodes are unreachable")
        }
    }
}

/// The desired pods from the static pod directory. The first value is a completed scan (never
/// an empty placeholder), so the manager can tell orphans from pods still being read.
fn static_pod_source(
    config: &KubeletConfig,
    options: &NodeOptions,
    cancel: &CancellationToken,
) -> watch::Receiver<DesiredPods> {
    let Some(dir) = config.static_pod_path.clone() else {
        let (tx, rx) = watch::channel(DesiredPods::new());
        tx.send_replace(DesiredPods::new());
        tokio::spawn(async move { tx.closed().await });
        return rx;
    };
    let mut source =
        StaticPodSource::new(dir, options.node_name.clone(), config.file_check_frequency)
            .with_state_dir(options.root_dir.join(STATIC_POD_STATE_DIR));
    let first = source.scan_once();
    let (snap_tx, mut snap_rx) = watch::channel(first.clone());
    let (tx, rx) = watch::channel(BTreeMap::new());
    tx.send_replace(first.pods);
    tokio::spawn(source.run(snap_tx, cancel.clone()));
    tokio::spawn(async move {
        while snap_rx.changed().await.is_ok() {
            let snapshot: StaticPodSnapshot = snap_rx.borrow_and_update().clone();
            tx.send_replace(snapshot.pods);
        }
    });
    rx
}

/// The pod cgroups `config` asks for.
pub(crate) fn cgroup_config(config: &KubeletConfig) -> CgroupConfig {
    CgroupConfig {
        mount_root: PathBuf::from("/sys/fs/cgroup"),
        driver: match config.cgroup_driver {
            config::CgroupDriver::Cgroupfs => CgroupDriver::Cgroupfs,
            config::CgroupDriver::Systemd => CgroupDriver::Systemd,
        },
        cgroup_root: config.cgroup_root.clone(),
        per_qos: config.cgroups_per_qos,
        pod_pids_limit: config.pod_pids_limit,
    }
}
