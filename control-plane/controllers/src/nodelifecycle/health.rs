//! The health verdict on one node: has its kubelet gone silent (neither the Lease nor the
//! `Ready` heartbeat renewed within the grace period), and if so, its conditions as the
//! controller rewrites them (`Unknown`, reason `NodeStatusUnknown`).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::{NODE_STARTUP_GRACE_PERIOD, condition};
use crate::action::{Action, EventType};

/// The conditions the controller turns `Unknown` when the kubelet goes silent.
const WATCHED_CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// The health verdict on one node.
#[derive(Debug, Clone, Default)]
pub(super) struct Verdict {
    /// The node with its rewritten conditions, when they change.
    pub updated: Option<Node>,
    /// `Ready` went from `True` to `Unknown` in this pass.
    pub ready_lost: bool,
    /// The kubelet is silent (heartbeats older than the grace period).
    pub silent: bool,
    /// When a healthy node goes stale if no heartbeat arrives.
    pub stale_at: Option<Timestamp>,
}

impl Verdict {
    /// The node's conditions once the verdict's write lands.
    pub(super) fn conditions<'a>(&'a self, node: &'a Node) -> &'a [NodeCondition] {
        let node = self.updated.as_ref().unwrap_or(node);
        node.status
            .as_ref()
            .and_then(|s| s.conditions.as_deref())
            .unwrap_or_default()
    }
}

fn time_of(t: Option<&Time>) -> Option<Timestamp> {
    t.map(|Time(t)| *t)
}

/// The last sign of life of `node`: the newest of its Lease renewal and `Ready` heartbeat,
/// or its creation for a node that never posted a `Ready` condition.
fn last_probe(node: &Node, lease: Option<&Lease>) -> Option<Timestamp> {
    let conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let ready = condition(conditions, "Ready");
    let heartbeat = match ready {
        Some(ready) => time_of(ready.last_heartbeat_time.as_ref()),
        None => time_of(node.metadata.creation_timestamp.as_ref()),
    };
    let renewed = lease
        .and_then(|l| l.spec.as_ref())
        .and_then(|s| s.renew_time.as_ref())
        .map(|MicroTime(t)| *t);
    heartbeat.max(renewed)
}

/// Judge `node` at `now`.
pub(super) fn judge(
    node: &Node,
    lease: Option<&Lease>,
    grace: Duration,
    now: Timestamp,
) -> Verdict {
    let conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let never_posted = condition(&conditions, "Ready").is_none();
    let grace = if never_posted {
        NODE_STARTUP_GRACE_PERIOD
    } else {
        grace
    };
    let grace = SignedDuration::try_from(grace).unwrap_or(SignedDuration::MAX);
    let probe = last_probe(node, lease).unwrap_or(Timestamp::UNIX_EPOCH);
    let deadline = probe.saturating_add(grace).unwrap_or(Timestamp::MAX);
    if now <= deadline {
        return Verdict {
            stale_at: Some(
                deadline
                    .saturating_add(SignedDuration::from_secs(1))
                    .unwrap_or(deadline),
            ),
            ..Verdict::default()
        };
    }

    let created = node.metadata.creation_timestamp.clone();
    let mut rewritten = conditions;
    let mut changed = false;
    let mut ready_lost = false;
    for type_ in WATCHED_CONDITIONS {
        match rewritten.iter_mut().find(|c| c.type_ == type_) {
            None => {
                rewritten.push(NodeCondition {
                    type_: type_.to_string(),
                    status: "Unknown".into(),
                    reason: Some("NodeStatusNeverUpdated".into()),
                    message: Some("Kubelet never posted node status.".into()),
                    last_heartbeat_time: created.clone(),
                    last_transition_time: Some(Time(now)),
                });
                changed = true;
            }
            Some(c) if c.status != "Unknown" => {
                if type_ == "Ready" && c.status == "True" {
                    ready_lost = true;
                }
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some("Kubelet stopped posting node status.".into());
                c.last_transition_time = Some(Time(now));
                changed = true;
            }
            Some(_) => {}
        }
    }
    let updated = changed.then(|| {
        let mut node = node.clone();
        node.status.get_or_insert_with(Default::default).conditions = Some(rewritten);
        node
    });
    Verdict {
        updated,
        ready_lost,
        silent: true,
        stale_at: None,
    }
}

/// The event upstream records when a node stops being ready.
pub(super) fn node_not_ready_event(node: &Node) -> Action {
    let name = node.metadata.name.as_deref().unwrap_or_default();
    Action::event(
        node,
        EventType::Normal,
        "NodeNotReady",
        format!("Node {name} status is now: NodeNotReady"),
    )
}

/// Pods on a silent node whose `Ready` condition is not yet `False`: set it `False` (status
/// update) and tell the pod why.
pub(super) fn mark_pods_not_ready(node: &Node, pods: &[Pod], now: Timestamp) -> Vec<Action> {
    let Some(name) = node.metadata.name.as_deref() else {
        return Vec::new();
    };
    let mut actions = Vec::new();
    for pod in pods {
        if pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(name) {
            continue;
        }
        let mut pod = pod.clone();
        let Some(ready) = pod
            .status
            .as_mut()
            .and_then(|s| s.conditions.as_mut())
            .and_then(|cs| cs.iter_mut().find(|c| c.type_ == "Ready"))
        else {
            continue;
        };
        if ready.status == "False" {
            continue;
        }
        ready.status = "False".into();
        ready.last_transition_time = Some(Time(now));
        actions.push(Action::update_status(&pod));
        actions.push(Action::event(
            &pod,
            EventType::Warning,
            "NodeNotReady",
            "Node is not ready",
        ));
    }
    actions
}
