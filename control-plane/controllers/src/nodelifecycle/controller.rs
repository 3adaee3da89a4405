//! The node lifecycle controller wired to the runtime: a single key ([`KEY`]) planned over
//! every node, every heartbeat Lease in `kube-node-lease` and every pod bound to a node;
//! queued by changes to any of them and again when [`super::plan`] says a heartbeat goes
//! stale or a tolerated `NoExecute` taint runs out. The grace period is
//! `--node-monitor-grace-period`.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::runtime::watcher;

use super::NODE_LEASE_NAMESPACE;
use crate::runtime::manager::ControllerOptions;
use crate::runtime::{Controller, ObjectKey, Plan, Watches};

/// The one key of the controller.
pub const KEY: &str = "nodelifecycle";

fn the_key() -> Vec<ObjectKey> {
    vec![ObjectKey::cluster(KEY)]
}

/// The controller with `--node-monitor-grace-period` from `options`.
pub fn controller(client: &kube::Client, options: &ControllerOptions) -> Controller {
    controller_with(client, options.node_monitor_grace_period)
}

/// The controller with an explicit grace period.
pub fn controller_with(client: &kube::Client, grace: Duration) -> Controller {
    let mut watches = Watches::new(client.clone());
    let nodes = watches.watch(
        Api::<Node>::all(client.clone()),
        watcher::Config::default(),
        |_| the_key(),
    );
    let leases = watches.watch(
        Api::<Lease>::namespaced(client.clone(), NODE_LEASE_NAMESPACE),
        watcher::Config::default(),
        |_| the_key(),
    );
    // Only pods bound to a node can be marked not ready or evicted.
    let pods = watches.watch(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default(),
        |pod| {
            if is_bound(pod) { the_key() } else { Vec::new() }
        },
    );
    Controller::new(KEY, watches, move |_key| {
        let nodes: Vec<Node> = nodes.state().iter().map(|n| (**n).clone()).collect();
        let leases: Vec<Lease> = leases.state().iter().map(|l| (**l).clone()).collect();
        let pods: Vec<Pod> = pods
            .state()
            .iter()
            .filter(|p| is_bound(p))
            .map(|p| (**p).clone())
            .collect();
        let planned = super::plan(&nodes, &leases, &pods, grace, Timestamp::now());
        // Never sleep longer than a grace period: a node that never posts anything still
        // gets judged.
        let requeue_after = planned.requeue_after.map_or(grace, |w| w.min(grace));
        Plan {
            actions: planned.actions,
            requeue_after: Some(requeue_after.max(MIN_REQUEUE)),
        }
    })
    .workers(1)
}

/// The shortest wait between passes (a deadline that is due now must not spin).
const MIN_REQUEUE: Duration = Duration::from_millis(200);

fn is_bound(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty())
}
