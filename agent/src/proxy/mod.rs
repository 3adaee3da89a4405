//! kube-proxy inside kwk-node: watches Services and EndpointSlices ([`watch`]), follows this
//! node's addresses and podCIDR, and feeds them to `kwk_netdp`'s sync loop on its own thread,
//! which programs the chosen [`config::ProxyMode`]; serves `healthCheckNodePort`s
//! ([`health`]). The configuration is a `KubeProxyConfiguration` file ([`config`]).

pub mod config;
pub mod health;
pub mod watch;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kwk_netdp::conntrack::Conntrack;
use kwk_netdp::dataplane::Dataplane;
use kwk_netdp::iptables::{IptablesConfig, IptablesDataplane};
use kwk_netdp::ipvs::{IpvsDataplane, IpvsDataplaneOptions, IpvsOptions, Scheduler};
use kwk_netdp::model::{Cidr, NodeState, ProxyOptions};
use kwk_netdp::nft::NftSocket;
use kwk_netdp::nftables::NftablesDataplane;
use kwk_netdp::runner::{ConntrackCleanup, ProxyEvent, ProxyRunner, ProxyState};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{ProxyConfig, ProxyMode};

use crate::node_status::PodCidr;

/// What the proxy needs from the node.
#[derive(Debug, Clone)]
pub struct ProxyNode {
    pub name: String,
    /// The node's addresses (NodePorts listen on them; never loopback).
    pub ips: Vec<IpAddr>,
    /// `spec.podCIDR`, followed as the node status task learns it.
    pub pod_cidr: Option<PodCidr>,
}

/// The proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("starting the proxy thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("entering network namespace {path}: {source}")]
    Netns {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("proxy mode nftables: {0}")]
    Nftables(#[source] kwk_netdp::nft::NftError),
    #[error("proxy mode iptables: {0}")]
    Iptables(#[source] kwk_netdp::iptables::IptablesError),
    #[error("proxy mode ipvs: {0}")]
    Ipvs(#[source] kwk_netdp::ipvs::IpvsModeError),
}

/// The dataplane of `config.mode` and a conntrack client (for the stale UDP flow cleanup),
/// both acting in the network namespace at `netns` (default: kwk-node's own), sysctls included.
pub fn open_dataplane(
    config: &ProxyConfig,
    netns: Option<&Path>,
) -> Result<(Box<dyn Dataplane>, Option<Conntrack>), ProxyError> {
    let open = || Opened {
        bridged: bridge_traffic_through_netfilter(),
        dataplane: open_socket_mode(config),
        conntrack: Conntrack::open()
            .inspect_err(|err| tracing::warn!(%err, "no conntrack client: stale UDP flows stay"))
            .ok(),
    };
    let opened = match netns {
        None => open(),
        Some(path) => kwk_netdp::netns::run_in(path, open).map_err(|source| ProxyError::Netns {
            path: path.to_path_buf(),
            source,
        })?,
    };
    if let Err(err) = &opened.bridged {
        tracing::warn!(%err, "cannot send bridged traffic through netfilter (br_netfilter): a pod reaching a Service backed by a pod on the same bridge gets no reply");
    }
    let dataplane = match opened.dataplane {
        Some(dataplane) => dataplane?,
        None => Box::new(
            IptablesDataplane::new(IptablesConfig {
                netns: netns.map(Path::to_path_buf),
                ..IptablesConfig::default()
            })
            .map_err(ProxyError::Iptables)?,
        ),
    };
    Ok((dataplane, opened.conntrack))
}

/// The modes that program the kernel through sockets, opened in the calling thread's
/// namespace; `None` for iptables (its executor enters the namespace per run).
fn open_socket_mode(config: &ProxyConfig) -> Option<Result<Box<dyn Dataplane>, ProxyError>> {
    match config.mode {
        ProxyMode::Nftables => Some(
            NftSocket::open()
                .map(|socket| Box::new(NftablesDataplane::new(socket)) as Box<dyn Dataplane>)
                .map_err(ProxyError::Nftables),
        ),
        ProxyMode::Ipvs => {
            let scheduler =
                Scheduler::from_name(&config.ipvs_scheduler).unwrap_or(Scheduler::RoundRobin);
            let options = IpvsDataplaneOptions {
                ipvs: IpvsOptions {
                    scheduler,
                    ..IpvsOptions::default()
                },
                strict_arp: config.ipvs_strict_arp,
                ..IpvsDataplaneOptions::default()
            };
            Some(
                IpvsDataplane::open(options)
                    .map(|d| Box::new(d) as Box<dyn Dataplane>)
                    .map_err(ProxyError::Ipvs),
            )
        }
        ProxyMode::Iptables => None,
    }
}

/// `net.bridge.bridge-nf-call-iptables` / `-ip6tables` = 1: traffic between pods on one bridge
/// passes netfilter, so the reply of a backend to a client on the same bridge is un-NATed (as
/// kubelet's network setup requires). Per network namespace; needs the br_netfilter module.
fn bridge_traffic_through_netfilter() -> std::io::Result<()> {
    for key in ["bridge-nf-call-iptables", "bridge-nf-call-ip6tables"] {
        std::fs::write(format!("/proc/sys/net/bridge/{key}"), "1")?;
    }
    Ok(())
}

struct Opened {
    bridged: std::io::Result<()>,
    dataplane: Option<Result<Box<dyn Dataplane>, ProxyError>>,
    conntrack: Option<Conntrack>,
}

/// Starts the proxy: its sync thread, the watches, the podCIDR follower and the health-check
/// server, all stopping with `cancel` (the rules stay in the kernel: pods keep their Services
/// across a restart of kwk-node).
pub fn start(
    client: kube::Client,
    node: ProxyNode,
    config: &ProxyConfig,
    dataplane: Box<dyn Dataplane>,
    conntrack: Option<Conntrack>,
    tasks: &TaskTracker,
    cancel: &CancellationToken,
) -> Result<(), ProxyError> {
    let options = ProxyOptions {
        cluster_cidrs: config.cluster_cidrs.clone(),
        masquerade_all: config.masquerade_all,
    };
    let mut state = NodeState {
        name: node.name.clone(),
        ips: node.ips.clone(),
        pod_cidrs: Vec::new(),
        zone: None,
    };
    if let Some(cidr) = node.pod_cidr.as_ref().and_then(|rx| rx.borrow().clone()) {
        state.pod_cidrs = parse_cidrs(&cidr);
    }
    let (checks_tx, checks_rx) = tokio::sync::watch::channel(health::Checks::new());
    let mut runner = ProxyRunner::new(
        ProxyState::new(state.clone(), options),
        dataplane,
        config.periods,
    )
    .with_observer(Box::new(health::HealthPublisher(checks_tx)));
    if let Some(conntrack) = conntrack {
        runner = runner.with_observer(Box::new(ConntrackCleanup::new(conntrack)));
    }
    let (events, received) = mpsc::channel();
    let thread = runner.spawn(received).map_err(ProxyError::Thread)?;
    tracing::info!(mode = ?config.mode, "proxy started");

    let lists = watch::InitialLists::new(2);
    tasks.spawn(watch::run(
        Api::<Service>::all(client.clone()),
        watch::service_event,
        events.clone(),
        lists.clone(),
        cancel.clone(),
    ));
    tasks.spawn(watch::run(
        Api::<EndpointSlice>::all(client),
        watch::slice_event,
        events.clone(),
        lists,
        cancel.clone(),
    ));
    tasks.spawn(health::serve(checks_rx, cancel.clone()));
    let cancel = cancel.clone();
    tasks.spawn(async move {
        follow_pod_cidr(node.pod_cidr, state, &events, &cancel).await;
        cancel.cancelled().await;
        let _ = events.send(ProxyEvent::Shutdown);
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    });
    Ok(())
}

/// Sends the node state again whenever the podCIDR changes, until `cancel`.
async fn follow_pod_cidr(
    pod_cidr: Option<PodCidr>,
    mut state: NodeState,
    events: &mpsc::Sender<ProxyEvent>,
    cancel: &CancellationToken,
) {
    let Some(mut rx) = pod_cidr else { return };
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            changed = rx.changed() => if changed.is_err() { return },
        }
        let cidrs = rx
            .borrow_and_update()
            .as_deref()
            .map(parse_cidrs)
            .unwrap_or_default();
        if cidrs != state.pod_cidrs {
            state.pod_cidrs = cidrs;
            if events.send(ProxyEvent::Node(state.clone())).is_err() {
                return;
            }
        }
    }
}

/// `spec.podCIDR` (one CIDR, or a comma-separated pair as `podCIDRs` joined).
fn parse_cidrs(text: &str) -> Vec<Cidr> {
    text.split(',')
        .filter_map(|p| match p.trim().parse() {
            Ok(c) => Some(c),
            Err(err) => {
                tracing::warn!(cidr = p, %err, "ignoring a podCIDR that does not parse");
                None
            }
        })
        .collect()
}
