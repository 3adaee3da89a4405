//! `kwk-node`: the node agent daemon (`kwk-node --config /etc/kwk/kubelet.yaml`), and
//! `kwk-node pods`, which prints the pods a running kwk-node reports on its local socket.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use kwk_agent::node::{self, NodeOptions};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "kwk-node",
    version,
    about = "kwk node agent: kubelet and kube-proxy in one daemon"
)]
struct Cli {
    /// The KubeletConfiguration file; drop-ins are read from `<config>.d/`.
    #[arg(long, default_value = "/etc/kwk/kubelet.yaml", global = true)]
    config: PathBuf,
    /// Agent state directory (pod volumes, per-pod files, last valid static pods).
    #[arg(long, default_value = "/var/lib/kwk")]
    root_dir: PathBuf,
    /// The node name (default: the host name).
    #[arg(long)]
    hostname_override: Option<String>,
    /// The kubeconfig for the apiserver; without it kwk-node runs standalone (static pods only).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The node's IP address (InternalIP; the kubelet API serves on it).
    #[arg(long)]
    node_ip: Option<std::net::IpAddr>,
    /// The local read-only API socket.
    #[arg(long, default_value = "/run/kwk/node.sock", global = true)]
    local_api_socket: PathBuf,
    /// OCI image archives (`*.tar`) imported into the runtime at start.
    #[arg(long, default_value = "/usr/lib/kwk/images")]
    image_dir: PathBuf,
    /// The kube-proxy configuration (`KubeProxyConfiguration`; a missing file means the
    /// defaults: nftables mode). Used only with `--kubeconfig`.
    #[arg(long, default_value = "/etc/kwk/kube-proxy.yaml")]
    proxy_config: PathBuf,
    /// Do not run the Service proxy (another proxy serves this node's Services).
    #[arg(long)]
    no_proxy: bool,
    /// The network namespace the proxy programs (default: kwk-node's own).
    #[arg(long)]
    proxy_netns: Option<PathBuf>,
    /// Write the kwk-cni network configuration here once the node has a podCIDR.
    #[arg(long)]
    cni_conf_dir: Option<PathBuf>,
    /// kwk-cni's allocation directory, written into that configuration (`ipam.dataDir`;
    /// default: the plugin's, `/run/kwk-cni/networks`).
    #[arg(long)]
    cni_data_dir: Option<PathBuf>,
    /// Dead containers kept on the node (container GC); negative: no limit.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    maximum_dead_containers: i32,
    /// Dead instances kept per pod and container name (container GC); negative: no limit.
    /// The pod workers keep at most the newest instance and the one before it anyway.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    maximum_dead_containers_per_container: i32,
    /// Dead containers younger than this (a Go duration, e.g. `1m`) are not collected.
    #[arg(long, default_value = "0s", value_parser = non_negative_duration)]
    minimum_container_ttl_duration: std::time::Duration,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the pods the running kwk-node reports.
    Pods {
        /// Print the full JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// A Go duration that is not negative (`--minimum-container-ttl-duration`).
fn non_negative_duration(value: &str) -> Result<std::time::Duration, String> {
    let parsed = kwk_agent::config::parse_go_duration(value).map_err(|err| err.to_string())?;
    parsed
        .to_std()
        .ok_or_else(|| format!("invalid minimum garbage collection age: {value}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Pods { json }) = &cli.command {
        let printed = kwk_agent::local_api::print_pods(&cli.local_api_socket, *json);
        return report(printed.map_err(anyhow::Error::from));
    }
    init_tracing(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => return report(Err(err.into())),
    };
    report(runtime.block_on(serve(cli)))
}

async fn serve(cli: Cli) -> anyhow::Result<()> {
    let node_name = match cli.hostname_override {
        Some(name) => name,
        None => nix::unistd::gethostname()
            .context("reading the host name")?
            .to_string_lossy()
            .to_lowercase(),
    };
    let options = NodeOptions {
        config: cli.config,
        root_dir: cli.root_dir,
        node_name,
        local_api_socket: cli.local_api_socket,
        image_dir: cli.image_dir,
        kubeconfig: cli.kubeconfig,
        node_ip: cli.node_ip,
        proxy_config: (!cli.no_proxy).then_some(cli.proxy_config),
        proxy_netns: cli.proxy_netns,
        cni_conf_dir: cli.cni_conf_dir,
        cni_data_dir: cli.cni_data_dir,
        container_gc: kwk_agent::container_gc::ContainerGcPolicy {
            min_age: cli.minimum_container_ttl_duration,
            max_per_pod_container: cli.maximum_dead_containers_per_container,
            max_containers: cli.maximum_dead_containers,
        },
    };
    let cancel = CancellationToken::new();
    tokio::spawn(shutdown_on_signals(cancel.clone()));
    node::run(options, cancel).await?;
    Ok(())
}

/// First SIGTERM/SIGINT: stop gracefully, leaving pods running. Second: exit at once.
async fn shutdown_on_signals(cancel: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down; pods keep running");
    cancel.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::warn!("second signal: exiting now");
    std::process::exit(130);
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("kwk-node: {err:#}");
            ExitCode::FAILURE
        }
    }
}
