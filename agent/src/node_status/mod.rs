//! The Node object and its heartbeats: kwk-node registers its Node (`registerNode`), adopts an
//! existing one of the same name (labels it manages are brought up to date), keeps its status
//! (addresses, capacity/allocatable, node info, images, conditions) posted, and renews its Lease
//! in `kube-node-lease`.
//!
//! `plan` decides (pure, table-tested), `lease` plans and renews the Lease, `machine` and
//! `runtime` gather the facts; this module is the thin executor. The apiserver being away is a
//! normal state: every failure is logged and retried with backoff, and pods are never touched.
//!
//! As upstream (v1.33), registration happens once per start: a Node deleted while kwk-node runs
//! is not re-created until kwk-node restarts; status updates fail (logged) meanwhile, and the
//! Lease keeps being renewed.

pub mod eviction_reserve;
pub mod lease;
pub mod machine;
pub mod plan;
pub mod runtime;
#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use tokio_util::sync::CancellationToken;

use crate::config::KubeletConfig;
use crate::eviction::Pressures;
pub use eviction_reserve::EvictionReserve;
use machine::MachineFacts;
use plan::PlanInputs;
pub use runtime::{RuntimeFacts, RuntimeSource};

/// What the Node upkeep needs to know about this node.
#[derive(Debug, Clone)]
pub struct NodeStatusOptions {
    pub node_name: String,
    /// kwk-node's state directory: its filesystem is the node's ephemeral storage.
    pub root_dir: PathBuf,
    /// `--node-ip`; default: the default route's source address.
    pub node_ip: Option<IpAddr>,
    pub config: KubeletConfig,
    /// What allocatable holds back for the hard eviction thresholds.
    pub eviction_reserve: EvictionReserve,
    /// The eviction manager's pressure conditions; `None` (no eviction manager): no pressure.
    pub pressures: Option<tokio::sync::watch::Receiver<Pressures>>,
}

/// The Node's `spec.podCIDR` as last read from the apiserver, for whoever sets up pod
/// networking: `None` until the Node has one.
pub type PodCidr = tokio::sync::watch::Receiver<Option<String>>;

/// A sender for [`run`] and the [`PodCidr`] receiver that follows it.
pub fn pod_cidr_channel() -> (tokio::sync::watch::Sender<Option<String>>, PodCidr) {
    tokio::sync::watch::channel(None)
}

/// kwk-node's Node upkeep, spawned on `tasks` when it has an apiserver `client` (standalone
/// otherwise: `None`); returns the [`PodCidr`] receiver.
pub fn spawn<R: RuntimeSource>(
    client: Option<kube::Client>,
    node: &crate::node::NodeOptions,
    config: &KubeletConfig,
    runtime: R,
    pressures: Option<tokio::sync::watch::Receiver<Pressures>>,
    tasks: &tokio_util::task::TaskTracker,
    cancel: &CancellationToken,
) -> Option<PodCidr> {
    let client = client?;
    let options = NodeStatusOptions {
        node_name: node.node_name.clone(),
        root_dir: node.root_dir.clone(),
        node_ip: node.node_ip,
        config: config.clone(),
        eviction_reserve: EvictionReserve::from_kubelet(config),
        pressures,
    };
    let (sender, receiver) = pod_cidr_channel();
    tasks.spawn(run(client, options, runtime, sender, cancel.clone()));
    Some(receiver)
}

/// Registers the Node, keeps its status posted and its Lease renewed, and publishes its
/// `spec.podCIDR` on `pod_cidr`, until `cancel`.
pub async fn run<R: RuntimeSource>(
    client: kube::Client,
    options: NodeStatusOptions,
    runtime: R,
    pod_cidr: tokio::sync::watch::Sender<Option<String>>,
    cancel: CancellationToken,
) {
    let lease = tokio::spawn(lease::renew_loop(
        client.clone(),
        options.node_name.clone(),
        options.config.node_lease_duration_seconds,
        cancel.clone(),
    ));
    status_loop(&client, &options, &runtime, &pod_cidr, &cancel).await;
    if let Err(err) = lease.await {
        tracing::warn!(%err, "node lease task ended abnormally");
    }
}

/// How often the status is checked until the runtime first reports itself ready, network
/// included (the CNI configuration may only appear once the Node has a podCIDR, which is read
/// here too): the node turns Ready about a second after the runtime does, not a whole
/// `nodeStatusUpdateFrequency` later (upstream's kubelet polls likewise, `fastStatusUpdateOnce`).
pub(crate) const STARTUP_CHECK_PERIOD: Duration = Duration::from_secs(1);
/// For at most this long after start (upstream's `nodeReadyGracePeriod`).
pub(crate) const STARTUP_FAST_CHECKS_FOR: Duration = Duration::from_secs(120);

/// The wait before the next status check after a successful one.
pub(crate) fn next_status_check(
    frequency: Duration,
    since_start: Duration,
    runtime_ready_once: bool,
) -> Duration {
    if runtime_ready_once || since_start >= STARTUP_FAST_CHECKS_FOR {
        frequency
    } else {
        frequency.min(STARTUP_CHECK_PERIOD)
    }
}

/// Registration (with backoff, as upstream: 100ms doubling to 7s), then a status check every
/// `nodeStatusUpdateFrequency` (failures retried sooner, with backoff up to that period; every
/// second while starting, see [`next_status_check`]).
async fn status_loop<R: RuntimeSource>(
    client: &kube::Client,
    options: &NodeStatusOptions,
    runtime: &R,
    pod_cidr: &tokio::sync::watch::Sender<Option<String>>,
    cancel: &CancellationToken,
) {
    let nodes: Api<Node> = Api::all(client.clone());
    let started = tokio::time::Instant::now();
    let mut runtime_ready_once = false;
    let mut registered = !options.config.register_node;
    let mut last_report: Option<Timestamp> = None;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(7));
    let mut pressures = options.pressures.clone();
    let mut status_backoff = Backoff::new(
        Duration::from_millis(200),
        options.config.node_status_update_frequency,
    );
    loop {
        let machine = machine::read(&options.root_dir, options.node_ip);
        let facts = runtime.facts().await;
        let wait = if registered {
            match update_status(&nodes, options, &machine, &facts, last_report, pod_cidr).await {
                Ok(reported) => {
                    if let Some(reported) = reported {
                        last_report = Some(reported);
                        tracing::debug!(node = %options.node_name, "node status posted");
                    }
                    status_backoff.reset();
                    runtime_ready_once |=
                        runtime::readiness_errors(facts.conditions.as_deref()).is_empty();
                    next_status_check(
                        options.config.node_status_update_frequency,
                        started.elapsed(),
                        runtime_ready_once,
                    )
                }
                Err(err) => {
                    tracing::warn!(node = %options.node_name, %err, "error updating node status; will retry");
                    status_backoff.next_delay()
                }
            }
        } else {
            match register(&nodes, options, &machine, &facts).await {
                Ok(()) => {
                    tracing::info!(node = %options.node_name, "successfully registered node");
                    registered = true;
                    backoff.reset();
                    continue;
                }
                Err(err) => {
                    tracing::warn!(node = %options.node_name, %err, "unable to register node with the API server; will retry");
                    backoff.next_delay()
                }
            }
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
            // A pressure condition changed: posted now rather than at the next check.
            () = pressure_changed(&mut pressures) => {}
        }
    }
}

/// Resolves when the eviction manager's pressures change; never without one (or once it is
/// gone: the last value stays).
async fn pressure_changed(pressures: &mut Option<tokio::sync::watch::Receiver<Pressures>>) {
    match pressures {
        Some(rx) => {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

/// Creates the Node; if one of that name exists, adopts it (upstream's
/// `tryRegisterWithAPIServer`).
async fn register(
    nodes: &Api<Node>,
    options: &NodeStatusOptions,
    machine: &MachineFacts,
    facts: &RuntimeFacts,
) -> Result<(), kube::Error> {
    let inputs = PlanInputs {
        node_name: &options.node_name,
        machine,
        config: &options.config,
        runtime: facts,
        eviction_reserve: &options.eviction_reserve,
        pressures: options
            .pressures
            .as_ref()
            .map(|p| *p.borrow())
            .unwrap_or_default(),
        now: Timestamp::now(),
    };
    let initial = plan::initial_node(&inputs);
    match nodes.create(&PostParams::default(), &initial).await {
        Ok(_) => return Ok(()),
        Err(kube::Error::Api(status)) if status.is_already_exists() => {}
        Err(err) => return Err(err),
    }
    let existing = nodes.get(&options.node_name).await?;
    if let Some(patch) = plan::adoption_patch(&initial, &existing) {
        tracing::info!(node = %options.node_name, "adopting the existing node object");
        nodes
            .patch(
                &options.node_name,
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await?;
    }
    Ok(())
}

/// Posts the status when the plan says so; returns the time of the post.
async fn update_status(
    nodes: &Api<Node>,
    options: &NodeStatusOptions,
    machine: &MachineFacts,
    facts: &RuntimeFacts,
    last_report: Option<Timestamp>,
    pod_cidr: &tokio::sync::watch::Sender<Option<String>>,
) -> Result<Option<Timestamp>, kube::Error> {
    let existing = nodes.get(&options.node_name).await?;
    let cidr = existing.spec.as_ref().and_then(|s| s.pod_cidr.clone());
    pod_cidr.send_if_modified(|current| {
        let changed = *current != cidr;
        if changed {
            tracing::info!(node = %options.node_name, pod_cidr = ?cidr, "node podCIDR");
            current.clone_from(&cidr);
        }
        changed
    });
    let now = Timestamp::now();
    let inputs = PlanInputs {
        node_name: &options.node_name,
        machine,
        config: &options.config,
        runtime: facts,
        eviction_reserve: &options.eviction_reserve,
        pressures: options
            .pressures
            .as_ref()
            .map(|p| *p.borrow())
            .unwrap_or_default(),
        now,
    };
    let Some(patch) = plan::status_patch(&inputs, &existing, last_report) else {
        return Ok(None);
    };
    nodes
        .patch_status(
            &options.node_name,
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await?;
    Ok(Some(now))
}

/// Exponential backoff between retries: doubling from `initial`, capped at `max`.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial,
        }
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next.min(self.max);
        self.next = delay.saturating_mul(2).min(self.max);
        delay
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.initial;
    }
}
