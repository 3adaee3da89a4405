//! `kwk-control-plane`: one binary, one subcommand per component, and `all` for the three in
//! one process (`kwk_control_plane/all_in_one.rs`). The components share their flag structs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use kwk_control_plane::apiserver::allocator::{ServiceRanges, parse_port_range};
use kwk_control_plane::apiserver::kinds::service_alloc::Cidr;
use kwk_control_plane::apiserver::{self, ApiServerOptions};
use kwk_control_plane::scheduler::{self, SchedulerOptions};
use kwk_control_plane::storage::Store;
use kwk_control_plane::storage::embedded::{EmbeddedOptions, EmbeddedStore};
use kwk_control_plane::storage::etcd::{EtcdStore, EtcdTls};
use kwk_control_plane::storage::memory::MemoryStore;
use kwk_controllers::runtime::manager::ControllerOptions;
use kwk_controllers::runtime::{
    self as controller_runtime, ControllerManager, DEFAULT_CONTROLLERS, LeaseConfig,
};
use tokio_util::sync::CancellationToken;

#[path = "kwk_control_plane/all_in_one.rs"]
mod all_in_one;

#[derive(Parser, Debug)]
#[command(name = "kwk-control-plane", version, about = "The kwk control plane")]
struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StorageBackend {
    /// The embedded store in `--data-dir` (one file, no extra process).
    Embedded,
    /// An external etcd cluster (`--etcd-servers`).
    #[value(alias = "etcd3")]
    Etcd,
    /// In memory: nothing survives a restart (development only).
    Memory,
}

/// Where each storage backend keeps its data.
#[derive(clap::Args, Debug)]
struct StorageFlags {
    /// Directory of the embedded store (`--storage-backend embedded`).
    #[arg(long, default_value = "/var/lib/kwk/db")]
    data_dir: PathBuf,
    /// etcd endpoints, comma separated (`--storage-backend etcd`).
    #[arg(long, value_delimiter = ',')]
    etcd_servers: Vec<String>,
    /// CA bundle that signed etcd's serving certificate (turns on TLS).
    #[arg(long)]
    etcd_cafile: Option<PathBuf>,
    /// Client certificate for etcd.
    #[arg(long, requires = "etcd_keyfile")]
    etcd_certfile: Option<PathBuf>,
    /// Client key for etcd.
    #[arg(long, requires = "etcd_certfile")]
    etcd_keyfile: Option<PathBuf>,
    /// Extra prefix in front of every etcd key (keys already start with `/registry/`).
    #[arg(long, default_value = "")]
    etcd_prefix: String,
}

/// The opened store, kept typed where shutting down needs more than dropping it.
enum OpenedStore {
    Embedded(Arc<EmbeddedStore>),
    Other(Arc<dyn Store>),
}

impl OpenedStore {
    fn shared(&self) -> Arc<dyn Store> {
        match self {
            OpenedStore::Embedded(store) => store.clone(),
            OpenedStore::Other(store) => store.clone(),
        }
    }

    /// Closes the embedded store once nothing else holds it (its last commit is durable
    /// either way; closing only finishes background work cleanly).
    async fn close(self) {
        if let OpenedStore::Embedded(store) = self {
            match Arc::try_unwrap(store) {
                Ok(store) => {
                    if let Err(err) = store.close().await {
                        tracing::warn!("closing the embedded store: {err}");
                    }
                }
                Err(_) => tracing::warn!("embedded store still in use at shutdown; not closed"),
            }
        }
    }
}

async fn open_store(backend: StorageBackend, flags: StorageFlags) -> anyhow::Result<OpenedStore> {
    if backend != StorageBackend::Etcd && !flags.etcd_servers.is_empty() {
        anyhow::bail!("--etcd-servers is set but --storage-backend is not etcd");
    }
    match backend {
        StorageBackend::Embedded => {
            let store = EmbeddedStore::open(&flags.data_dir, EmbeddedOptions::default())
                .await
                .with_context(|| {
                    format!(
                        "opening the embedded store in --data-dir {}",
                        flags.data_dir.display()
                    )
                })?;
            tracing::info!(data_dir = %flags.data_dir.display(), "storage backend is embedded");
            Ok(OpenedStore::Embedded(Arc::new(store)))
        }
        StorageBackend::Etcd => {
            if flags.etcd_servers.is_empty() {
                anyhow::bail!("--storage-backend etcd needs --etcd-servers");
            }
            let read = |flag: &str, path: &Option<PathBuf>| -> anyhow::Result<Option<Vec<u8>>> {
                path.as_ref()
                    .map(|p| {
                        std::fs::read(p).with_context(|| format!("reading {flag} {}", p.display()))
                    })
                    .transpose()
            };
            let client_cert_pem = read("--etcd-certfile", &flags.etcd_certfile)?;
            let client_key_pem = read("--etcd-keyfile", &flags.etcd_keyfile)?;
            let tls = match read("--etcd-cafile", &flags.etcd_cafile)? {
                Some(ca_pem) => Some(EtcdTls {
                    ca_pem,
                    client_cert_pem,
                    client_key_pem,
                    server_name: None,
                }),
                None if client_cert_pem.is_some() => {
                    anyhow::bail!("--etcd-certfile needs --etcd-cafile")
                }
                None => None,
            };
            let store = EtcdStore::connect(&flags.etcd_servers, tls, &flags.etcd_prefix)
                .await
                .with_context(|| {
                    format!(
                        "connecting to etcd at --etcd-servers {}",
                        flags.etcd_servers.join(",")
                    )
                })?;
            tracing::info!(servers = %flags.etcd_servers.join(","), "storage backend is etcd");
            Ok(OpenedStore::Other(Arc::new(store)))
        }
        StorageBackend::Memory => {
            tracing::warn!("storage backend is memory: nothing survives a restart");
            Ok(OpenedStore::Other(Arc::new(MemoryStore::new())))
        }
    }
}

fn parse_cidr(text: &str) -> Result<Cidr, String> {
    Cidr::parse(text).ok_or_else(|| format!("{text:?} is not a CIDR (e.g. 10.96.0.0/12)"))
}

fn parse_ports(text: &str) -> Result<(i32, i32), String> {
    parse_port_range(text).ok_or_else(|| format!("{text:?} is not a port range (e.g. 30000-32767)"))
}

/// The apiserver's flags (`apiserver` and `all`).
#[derive(clap::Args, Debug)]
struct ApiServerFlags {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    bind_address: std::net::IpAddr,
    /// HTTPS port.
    #[arg(long, default_value_t = 6443)]
    secure_port: u16,
    /// Directory with ca.crt, apiserver.crt/key (and admin.kubeconfig when generated).
    #[arg(long, default_value = "/etc/kwk/pki")]
    pki_dir: PathBuf,
    /// Generate missing certificates and the admin kubeconfig in --pki-dir.
    #[arg(long)]
    generate_pki: bool,
    /// Extra DNS names / IPs for the serving certificate (repeatable).
    #[arg(long = "tls-san")]
    tls_san: Vec<String>,
    /// Static token file: `token,user,uid[,"group1,group2"]` per line.
    #[arg(long)]
    token_auth_file: Option<PathBuf>,
    /// Where objects are stored.
    #[arg(long, value_enum, default_value_t = StorageBackend::Embedded)]
    storage_backend: StorageBackend,
    /// CIDR from which Service cluster IPs are allocated.
    #[arg(long, default_value = "10.96.0.0/12", value_parser = parse_cidr)]
    service_cluster_ip_range: Cidr,
    /// Port range for NodePort Services (`low-high`, inclusive).
    #[arg(long, default_value = "30000-32767", value_parser = parse_ports)]
    service_node_port_range: (i32, i32),
    /// Address advertised in the `kubernetes` Endpoints (default: the bind address if
    /// specific, else the host's first non-loopback IPv4 address).
    #[arg(long)]
    advertise_address: Option<std::net::IpAddr>,
    /// Client certificate the apiserver presents to kubelets (default: the generated
    /// apiserver-kubelet-client.crt in --pki-dir, if present).
    #[arg(long, requires = "kubelet_client_key")]
    kubelet_client_certificate: Option<PathBuf>,
    /// The key of --kubelet-client-certificate.
    #[arg(long, requires = "kubelet_client_certificate")]
    kubelet_client_key: Option<PathBuf>,
    /// CA that signs kubelet serving certificates (default: they are not verified).
    #[arg(long)]
    kubelet_certificate_authority: Option<PathBuf>,
    /// Node address types tried, in order, to reach a kubelet.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "Hostname,InternalDNS,InternalIP,ExternalDNS,ExternalIP"
    )]
    kubelet_preferred_address_types: Vec<String>,
    /// Kubelet port used when a Node reports none.
    #[arg(long, default_value_t = 10250)]
    kubelet_port: u16,
    /// Admission plugins to turn off (`ServiceAccount`, `TaintNodesByCondition`,
    /// `StorageObjectInUseProtection`; all run by default).
    #[arg(long, value_delimiter = ',')]
    disable_admission_plugins: Vec<String>,
    #[command(flatten)]
    storage: StorageFlags,
}

/// Leader election on a coordination.k8s.io/v1 Lease (`controller-manager`, `scheduler`,
/// `all`). The Lease's name is per component.
#[derive(clap::Args, Debug)]
struct LeaderElectionFlags {
    /// Run only while holding the leader Lease (false: run unconditionally).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    leader_elect: bool,
    /// How long a lapsed leader's Lease is honoured before others take it.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    leader_elect_lease_duration: Duration,
    /// How long the leader keeps trying to renew before it steps down.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    leader_elect_renew_deadline: Duration,
    /// Time between acquire and renew attempts.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    leader_elect_retry_period: Duration,
    /// Namespace of the leader Lease.
    #[arg(long, default_value = "kube-system")]
    leader_elect_resource_namespace: String,
}

impl LeaderElectionFlags {
    /// The Lease named `name`, or `None` without `--leader-elect`.
    fn lease(&self, name: &str) -> Option<LeaseConfig> {
        self.leader_elect.then(|| LeaseConfig {
            lease_duration: self.leader_elect_lease_duration,
            renew_deadline: self.leader_elect_renew_deadline,
            retry_period: self.leader_elect_retry_period,
            ..LeaseConfig::new(&self.leader_elect_resource_namespace, name)
        })
    }
}

/// The controller manager's own flags (`controller-manager` and `all`).
#[derive(clap::Args, Debug)]
struct ControllerManagerFlags {
    /// Controllers to run: `*` for all, `name` to add one, `-name` to leave one out.
    #[arg(long, value_delimiter = ',', default_value = "*")]
    controllers: Vec<String>,
    /// How long a node may go without a heartbeat before it is marked unhealthy.
    #[arg(long, default_value = "40s", value_parser = parse_duration)]
    node_monitor_grace_period: Duration,
    /// Allocate pod CIDRs to nodes from --cluster-cidr (node IPAM).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    allocate_node_cidrs: bool,
    /// CIDR range for pods (comma-separated: one IPv4 and/or one IPv6 CIDR).
    #[arg(long)]
    cluster_cidr: Option<String>,
    /// Node pod-CIDR mask size for a single-stack cluster (default 24 for IPv4, 64 for IPv6).
    #[arg(long)]
    node_cidr_mask_size: Option<u8>,
    /// Node pod-CIDR mask size for the IPv4 cluster CIDR (default 24).
    #[arg(long)]
    node_cidr_mask_size_ipv4: Option<u8>,
    /// Node pod-CIDR mask size for the IPv6 cluster CIDR (default 64).
    #[arg(long)]
    node_cidr_mask_size_ipv6: Option<u8>,
    /// The CA bundle published as the `kube-root-ca.crt` ConfigMap in every namespace
    /// (`all`: default `<pki-dir>/ca.crt`).
    #[arg(long)]
    root_ca_file: Option<PathBuf>,
}

/// The scheduler's own flags (`scheduler` and `all`).
#[derive(clap::Args, Debug)]
struct SchedulerFlags {
    /// The `spec.schedulerName` of the pods to schedule.
    #[arg(long, default_value = kwk_control_plane::scheduler::DEFAULT_SCHEDULER_NAME)]
    scheduler_name: String,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The Kubernetes API server.
    Apiserver(ApiServerFlags),
    /// The controllers (serviceaccount, ...), under leader election.
    ControllerManager {
        /// Kubeconfig for the apiserver.
        #[arg(long)]
        kubeconfig: PathBuf,
        #[command(flatten)]
        leader_election: LeaderElectionFlags,
        /// Name of the leader Lease.
        #[arg(long, default_value = CONTROLLER_MANAGER_LEASE)]
        leader_elect_resource_name: String,
        #[command(flatten)]
        controllers: ControllerManagerFlags,
    },
    /// The scheduler: binds pending pods to nodes, under leader election.
    Scheduler {
        /// Kubeconfig for the apiserver.
        #[arg(long)]
        kubeconfig: PathBuf,
        #[command(flatten)]
        leader_election: LeaderElectionFlags,
        /// Name of the leader Lease.
        #[arg(long, default_value = SCHEDULER_LEASE)]
        leader_elect_resource_name: String,
        #[command(flatten)]
        scheduler: SchedulerFlags,
    },
    /// The apiserver, controller manager and scheduler in one process.
    ///
    /// Takes the apiserver's flags, the controller manager's and the scheduler's own flags,
    /// and one set of leader-election flags for both (Leases `kube-controller-manager` and
    /// `kube-scheduler`). The controllers and the scheduler reach the apiserver over loopback
    /// with the admin client certificate in --pki-dir (or one issued from ca.key) and start
    /// once it answers /readyz. SIGINT/SIGTERM stops all three; if one fails, the process
    /// exits non-zero naming it.
    #[command(name = "all")]
    All {
        #[command(flatten, next_help_heading = "Apiserver")]
        apiserver: ApiServerFlags,
        #[command(
            flatten,
            next_help_heading = "Leader election (controller manager and scheduler)"
        )]
        leader_election: LeaderElectionFlags,
        #[command(flatten, next_help_heading = "Controller manager")]
        controllers: ControllerManagerFlags,
        #[command(flatten, next_help_heading = "Scheduler")]
        scheduler: SchedulerFlags,
    },
}

/// Upstream's leader Lease names.
const CONTROLLER_MANAGER_LEASE: &str = "kube-controller-manager";
const SCHEDULER_LEASE: &str = "kube-scheduler";

/// Opens the store and starts the apiserver on it.
async fn start_apiserver(
    flags: ApiServerFlags,
) -> anyhow::Result<(OpenedStore, apiserver::RunningApiServer)> {
    let admission =
        apiserver::admission::AdmissionPlugins::disabling(&flags.disable_admission_plugins)?;
    let opened = open_store(flags.storage_backend, flags.storage).await?;
    let server = apiserver::start(ApiServerOptions {
        bind: SocketAddr::new(flags.bind_address, flags.secure_port),
        pki_dir: flags.pki_dir,
        generate_pki: flags.generate_pki,
        serving_hosts: flags.tls_san,
        token_file: flags.token_auth_file,
        store: opened.shared(),
        service_ranges: ServiceRanges {
            cluster_ip_range: flags.service_cluster_ip_range,
            node_port_range: flags.service_node_port_range,
        },
        advertise_address: flags.advertise_address,
        kubelet: apiserver::kubelet_proxy::KubeletClientOptions {
            client_certificate: flags.kubelet_client_certificate,
            client_key: flags.kubelet_client_key,
            certificate_authority: flags.kubelet_certificate_authority,
            preferred_address_types: flags.kubelet_preferred_address_types,
            default_port: flags.kubelet_port,
        },
        admission,
    })
    .await
    .context("starting the apiserver")?;
    println!("listening on https://{}", server.addr);
    Ok((opened, server))
}

/// The controller manager: the selected controllers, under leader election when `lease`
/// is set. Returns when `token` is cancelled, or with an error (a lost lease among them:
/// like upstream, a restarted process campaigns again from a clean slate).
async fn run_controller_manager(
    client: kube::Client,
    flags: ControllerManagerFlags,
    lease: Option<LeaseConfig>,
    token: CancellationToken,
) -> anyhow::Result<()> {
    let options = controller_options(&flags)?;
    let manager = ControllerManager::with_default_controllers(client)
        .with_options(options)
        .select(&flags.controllers)?;
    match lease {
        Some(lease) => manager.run_with_leader_election(lease, token).await?,
        None => manager.run(token).await,
    }
    Ok(())
}

/// The controllers' options from `flags`; a bad `--controllers` or node IPAM configuration
/// is an error naming the flag.
fn controller_options(flags: &ControllerManagerFlags) -> anyhow::Result<ControllerOptions> {
    let options = ControllerOptions {
        node_monitor_grace_period: flags.node_monitor_grace_period,
        allocate_node_cidrs: flags.allocate_node_cidrs,
        cluster_cidr: flags.cluster_cidr.clone(),
        node_cidr_mask_size: flags.node_cidr_mask_size,
        node_cidr_mask_size_ipv4: flags.node_cidr_mask_size_ipv4,
        node_cidr_mask_size_ipv6: flags.node_cidr_mask_size_ipv6,
        root_ca_file: flags.root_ca_file.clone(),
    };
    let known: Vec<&str> = DEFAULT_CONTROLLERS.iter().map(|(name, _)| *name).collect();
    if controller_runtime::manager::select(&known, &flags.controllers)?.contains(&"nodeipam") {
        kwk_controllers::nodeipam::controller::config(&options)?;
    }
    Ok(options)
}

/// The scheduler, under leader election when `lease` is set. Returns when `token` is
/// cancelled, or with an error (a lost lease among them, like upstream).
async fn run_scheduler(
    client: kube::Client,
    flags: SchedulerFlags,
    lease: Option<LeaseConfig>,
    token: CancellationToken,
) -> anyhow::Result<()> {
    let defaults = SchedulerOptions::default();
    let options = SchedulerOptions {
        scheduler_name: flags.scheduler_name,
        instance: lease
            .as_ref()
            .map_or_else(|| defaults.instance.clone(), |l| l.identity.clone()),
        leader_election: lease,
        ..defaults
    };
    scheduler::run(client, options, token).await?;
    Ok(())
}

/// A Go-style duration: `500ms`, `15s`, `1m`, `1h`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 15s, 500ms)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("{text:?} is not a duration (e.g. 15s, 500ms)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

/// Cancels `token` on SIGINT or SIGTERM.
fn cancel_on_signal(token: CancellationToken) -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        token.cancel();
    });
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    match cli.log_format {
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
    }
    match cli.command {
        Command::Apiserver(flags) => {
            let (opened, server) = start_apiserver(flags).await?;
            let token = CancellationToken::new();
            cancel_on_signal(token.clone())?;
            token.cancelled().await;
            server.shutdown().await;
            opened.close().await;
            Ok(())
        }
        Command::ControllerManager {
            kubeconfig,
            leader_election,
            leader_elect_resource_name,
            controllers,
        } => {
            let client = controller_runtime::client_from_kubeconfig(&kubeconfig).await?;
            let token = CancellationToken::new();
            cancel_on_signal(token.clone())?;
            let lease = leader_election.lease(&leader_elect_resource_name);
            run_controller_manager(client, controllers, lease, token)
                .await
                .context("controller-manager")
        }
        Command::Scheduler {
            kubeconfig,
            leader_election,
            leader_elect_resource_name,
            scheduler,
        } => {
            let client = controller_runtime::client_from_kubeconfig(&kubeconfig).await?;
            let token = CancellationToken::new();
            cancel_on_signal(token.clone())?;
            let lease = leader_election.lease(&leader_elect_resource_name);
            run_scheduler(client, scheduler, lease, token)
                .await
                .context("scheduler")
        }
        Command::All {
            apiserver,
            leader_election,
            controllers,
            scheduler,
        } => {
            let components = all_in_one::ComponentFlags {
                leader_election,
                controllers,
                scheduler,
            };
            all_in_one::run(apiserver, components).await
        }
    }
}
