//! The node lifecycle controller (upstream `pkg/controller/nodelifecycle` and
//! `pkg/controller/tainteviction`): it owns the health verdict on nodes whose kubelet went
//! silent (conditions set to `Unknown`), the taints that mirror node conditions
//! (`node.kubernetes.io/not-ready`, `unreachable`, the pressure taints, `unschedulable`), the
//! pods it marks not ready on a silent node, and the eviction of pods that do not tolerate a
//! node's `NoExecute` taints.
//!
//! The planner is stateless: where upstream remembers when it last saw a heartbeat, we take
//! the newest of the node Lease's `renewTime` and the `Ready` condition's
//! `lastHeartbeatTime`; where upstream starts a toleration timer when it first sees a taint,
//! we count from the taint's `timeAdded`.

pub mod controller;
mod eviction;
mod health;
mod taints;

#[cfg(test)]
mod tests;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod};
use k8s_openapi::jiff::Timestamp;

use crate::action::Action;

pub use eviction::tolerates;

/// The namespace where kubelets renew their heartbeat Leases (named after the node).
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
/// Default `--node-monitor-grace-period`.
pub const DEFAULT_MONITOR_GRACE_PERIOD: Duration = Duration::from_secs(40);
/// How long a node that never posted a status gets (upstream `--node-startup-grace-period`).
pub const NODE_STARTUP_GRACE_PERIOD: Duration = Duration::from_secs(60);

/// Taint keys the controller manages.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const TAINT_MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
pub const TAINT_DISK_PRESSURE: &str = "node.kubernetes.io/disk-pressure";
pub const TAINT_PID_PRESSURE: &str = "node.kubernetes.io/pid-pressure";
pub const TAINT_NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

/// What one pass over the nodes asks for.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// The writes, in order.
    pub actions: Vec<Action>,
    /// When to plan again even if nothing changes: the earliest moment a node's heartbeat
    /// goes stale or a tolerated `NoExecute` taint runs out.
    pub requeue_after: Option<Duration>,
}

impl Plan {
    fn requeue_at(&mut self, at: Timestamp, now: Timestamp) {
        let wait = at.duration_since(now);
        let wait = Duration::try_from(wait).unwrap_or(Duration::ZERO);
        self.requeue_after = Some(self.requeue_after.map_or(wait, |w| w.min(wait)));
    }
}

/// One pass of the node lifecycle controller over all nodes, their heartbeat Leases and
/// the pods bound to them. `grace` is `--node-monitor-grace-period`.
pub fn plan(
    nodes: &[Node],
    leases: &[Lease],
    pods: &[Pod],
    grace: Duration,
    now: Timestamp,
) -> Plan {
    let mut plan = Plan::default();

    // 1. Health: conditions of silent nodes go Unknown. Everything below works from the
    //    conditions as they will be once these writes land.
    let verdicts: Vec<health::Verdict> = nodes
        .iter()
        .map(|node| health::judge(node, lease_of(node, leases), grace, now))
        .collect();
    for (node, verdict) in nodes.iter().zip(&verdicts) {
        if let Some(stale_at) = verdict.stale_at {
            plan.requeue_at(stale_at, now);
        }
        if let Some(updated) = &verdict.updated {
            plan.actions.push(Action::update_status(updated));
            if verdict.ready_lost {
                plan.actions.push(health::node_not_ready_event(node));
            }
        }
        if verdict.silent {
            plan.actions
                .extend(health::mark_pods_not_ready(node, pods, now));
        }
    }

    // 2. Taints mirroring the (new) conditions.
    let disruption = taints::Disruption::of(nodes, &verdicts);
    for (node, verdict) in nodes.iter().zip(&verdicts) {
        let conditions = verdict.conditions(node);
        if let Some(action) = taints::reconcile(node, conditions, &disruption, now) {
            plan.actions.push(action);
        }
    }

    // 3. Taint-based eviction, from the taints the nodes carry now.
    for node in nodes {
        eviction::plan_node(node, pods, now, &mut plan);
    }
    plan
}

/// The heartbeat Lease of `node`.
fn lease_of<'a>(node: &Node, leases: &'a [Lease]) -> Option<&'a Lease> {
    let name = node.metadata.name.as_deref()?;
    leases.iter().find(|l| {
        l.metadata.namespace.as_deref() == Some(NODE_LEASE_NAMESPACE)
            && l.metadata.name.as_deref() == Some(name)
    })
}

/// The condition of `type_` among `conditions`.
fn condition<'a>(conditions: &'a [NodeCondition], type_: &str) -> Option<&'a NodeCondition> {
    conditions.iter().find(|c| c.type_ == type_)
}
