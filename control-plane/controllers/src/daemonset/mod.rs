//! The DaemonSet planner (upstream `pkg/controller/daemon`): one pod per eligible node,
//! pinned with required node affinity so the scheduler binds it; pods on nodes that should
//! not run one, duplicates and failed pods (after a backoff) deleted; a ControllerRevision
//! per template; RollingUpdate (maxUnavailable / maxSurge) and OnDelete; the status
//! counters; history cleanup. [`history`] holds the ControllerRevision helpers the
//! StatefulSet planner shares; [`node_fit`] the placement rules.

pub mod controller;
pub mod history;
pub mod node_fit;
pub mod ownership;
mod rolling;

#[cfg(test)]
pub(crate) mod sim;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Node, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

use crate::action::{Action, EventType};
use crate::common::{controller_ref, is_available, is_ready, is_terminal};
use history::{
    REVISION_HASH_LABEL, by_revision_number, resolve_update_revision, revisions_to_prune,
};
use node_fit::{NodeFit, add_daemon_tolerations, node_fit, pin_to_node, target_node};
use ownership::claim;

/// The deprecated label carrying the DaemonSet's template generation.
pub const TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";
/// The annotation the apiserver keeps the template generation in.
pub const TEMPLATE_GENERATION_ANNOTATION: &str = "deprecated.daemonset.template.generation";
/// Event reason when a failed daemon pod is deleted to be replaced.
pub const FAILED_DAEMON_POD_REASON: &str = "FailedDaemonPod";
/// How long a failed daemon pod stays before it is replaced. Upstream backs off per node
/// in memory (1 s doubling to 15 min); a pure planner has no memory, so the delay is fixed
/// and counted from the failure, which still stops a kubelet-rejected pod from hot-looping.
pub const FAILED_POD_BACKOFF: Duration = Duration::from_secs(10);

/// A reconcile's writes plus when to look again (minReadySeconds, failed-pod backoff).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub requeue_after: Option<Duration>,
}

/// The writes that move `ds` toward its desired state.
pub fn plan(
    ds: &DaemonSet,
    nodes: &[Node],
    pods: &[Pod],
    revisions: &[ControllerRevision],
    now: Timestamp,
) -> Vec<Action> {
    reconcile(ds, nodes, pods, revisions, now).actions
}

/// One node's daemon pods and placement verdict.
#[derive(Debug)]
struct NodeState<'a> {
    fit: NodeFit,
    /// Controlled pods on (or pinned to) the node, oldest first.
    pods: Vec<&'a Pod>,
}

/// [`plan`] plus the requeue hint.
pub fn reconcile(
    ds: &DaemonSet,
    nodes: &[Node],
    pods: &[Pod],
    revisions: &[ControllerRevision],
    now: Timestamp,
) -> Plan {
    let mut out = Plan::default();
    if ds.metadata.deletion_timestamp.is_some() {
        return out;
    }
    let spec = ds.spec.clone().unwrap_or_default();
    let status = ds.status.clone().unwrap_or_default();

    let claimed_revisions = claim(ds, &spec.selector, revisions);
    out.actions.extend(claimed_revisions.actions);
    let owned = by_revision_number(claimed_revisions.owned);
    let update = resolve_update_revision(
        ds,
        &spec.template,
        status.collision_count,
        &owned,
        revisions,
    );
    out.actions.extend(update.actions.iter().cloned());
    let hash = update.hash.clone();

    let daemon_spec = daemon_pod_spec(ds);
    let claimed_pods = claim(ds, &spec.selector, pods);
    out.actions.extend(claimed_pods.actions);
    let controlled: Vec<&Pod> = claimed_pods
        .owned
        .into_iter()
        // Finished pods already being deleted are gone for every purpose.
        .filter(|p| !(is_terminal(p) && p.metadata.deletion_timestamp.is_some()))
        .collect();
    let mut by_node: BTreeMap<String, NodeState<'_>> = nodes
        .iter()
        .filter_map(|n| {
            let name = n.metadata.name.clone()?;
            let fit = node_fit(&daemon_spec, n);
            Some((
                name,
                NodeState {
                    fit,
                    pods: Vec::new(),
                },
            ))
        })
        .collect();
    let mut orphaned_unscheduled = Vec::new();
    for pod in &controlled {
        match target_node(pod).and_then(|n| by_node.get_mut(&n)) {
            Some(state) => state.pods.push(pod),
            None => {
                // Unscheduled pods pinned to a node that no longer exists never run.
                let scheduled = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_ref())
                    .is_some();
                if !scheduled && pod.metadata.deletion_timestamp.is_none() {
                    orphaned_unscheduled.push(*pod);
                }
            }
        }
    }
    for state in by_node.values_mut() {
        state.pods.sort_by_key(|p| pod_order(p));
    }

    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let mut manage = manage(ds, &by_node, &hash, now);
    manage.delete.extend(orphaned_unscheduled);
    let settled = manage.create_on.is_empty() && manage.delete.is_empty();
    let rolling_update = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .is_none_or(|t| t == "RollingUpdate");
    if settled && rolling_update {
        let (create_on, delete) = rolling::rolling_update(ds, &by_node, &hash, now);
        manage.create_on = create_on;
        manage.delete = delete;
    }
    for node in &manage.create_on {
        out.actions.push(Action::create(&new_daemon_pod(
            ds,
            &daemon_spec,
            node,
            &hash,
        )));
    }
    for pod in &manage.delete {
        out.actions.push(Action::delete(*pod, None));
    }
    out.actions.extend(manage.events);

    // History: keep the update revision and every revision a pod still runs.
    let mut live: BTreeSet<String> = BTreeSet::new();
    live.insert(update.revision.metadata.name.clone().unwrap_or_default());
    let pod_hashes: BTreeSet<&str> = controlled
        .iter()
        .filter_map(|p| p.metadata.labels.as_ref()?.get(REVISION_HASH_LABEL))
        .map(String::as_str)
        .collect();
    for revision in &owned {
        if pod_hashes.contains(history::hash_of(revision).as_str()) {
            live.insert(revision.metadata.name.clone().unwrap_or_default());
        }
    }
    for revision in revisions_to_prune(&owned, &live, spec.revision_history_limit) {
        out.actions.push(Action::delete(revision, None));
    }

    let new_status = compute_status(ds, &by_node, &hash, update.collision_count, now);
    if ds.status.as_ref() != Some(&new_status) {
        let mut updated = ds.clone();
        updated.status = Some(new_status.clone());
        out.actions.push(Action::update_status(&updated));
    }
    let waits = [
        (min_ready > 0 && new_status.number_ready != new_status.number_available.unwrap_or(0))
            .then(|| Duration::from_secs(u64::try_from(min_ready).unwrap_or(0))),
        manage.backoff_wait,
    ];
    out.requeue_after = waits.into_iter().flatten().min();
    out
}

/// The template's pod spec with the daemon tolerations (what placement is judged on).
fn daemon_pod_spec(ds: &DaemonSet) -> PodSpec {
    let mut spec = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .unwrap_or_default();
    add_daemon_tolerations(&mut spec);
    spec
}

/// Scheduled before unscheduled, running before not, then oldest, then by name.
fn pod_order(pod: &Pod) -> (bool, bool, Option<Timestamp>, String) {
    let scheduled = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .is_some();
    let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
    (
        !scheduled,
        !running,
        pod.metadata.creation_timestamp.as_ref().map(|Time(t)| *t),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

/// Whether `pod` runs the revision with `hash`.
fn is_updated(pod: &Pod, hash: &str) -> bool {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(REVISION_HASH_LABEL))
        .is_some_and(|h| h == hash)
}

fn surge_allowed(ds: &DaemonSet) -> bool {
    rolling::max_surge_setting(ds).is_some_and(|v| !rolling::is_zero(v))
}

/// What the placement pass decided.
#[derive(Debug, Default)]
struct Manage<'a> {
    create_on: Vec<String>,
    delete: Vec<&'a Pod>,
    events: Vec<Action>,
    backoff_wait: Option<Duration>,
}

/// When a failed pod failed: its last container finish, else its last condition change,
/// else its start or creation.
fn failed_at(pod: &Pod) -> Option<Timestamp> {
    let status = pod.status.as_ref();
    let finished = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|Time(t)| *t)
        .max();
    let transitioned = || {
        status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|c| c.last_transition_time.as_ref())
            .map(|Time(t)| *t)
            .max()
    };
    finished
        .or_else(transitioned)
        .or_else(|| status.and_then(|s| s.start_time.as_ref()).map(|Time(t)| *t))
        .or_else(|| pod.metadata.creation_timestamp.as_ref().map(|Time(t)| *t))
}

/// Upstream's `manage`/`podsShouldBeOnNode`: create where a pod is missing, delete where
/// one should not be, replace failed pods, keep one pod per node (two while surging).
fn manage<'a>(
    ds: &DaemonSet,
    by_node: &BTreeMap<String, NodeState<'a>>,
    hash: &str,
    now: Timestamp,
) -> Manage<'a> {
    let mut out = Manage::default();
    let surge = surge_allowed(ds);
    for (node, state) in by_node {
        let exists = !state.pods.is_empty();
        if state.fit.should_run && !exists {
            out.create_on.push(node.clone());
        } else if state.fit.should_continue_running {
            let mut running = Vec::new();
            for pod in &state.pods {
                if pod.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
                    Some("Failed") => {
                        let since = failed_at(pod).unwrap_or(now);
                        let elapsed = now.as_second().saturating_sub(since.as_second());
                        let backoff = i64::try_from(FAILED_POD_BACKOFF.as_secs()).unwrap_or(0);
                        if elapsed < backoff {
                            let wait =
                                Duration::from_secs(u64::try_from(backoff - elapsed).unwrap_or(0));
                            out.backoff_wait = Some(out.backoff_wait.map_or(wait, |w| w.min(wait)));
                            continue;
                        }
                        let name = pod.metadata.name.as_deref().unwrap_or_default();
                        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
                        out.events.push(Action::event(
                            ds,
                            EventType::Warning,
                            FAILED_DAEMON_POD_REASON,
                            format!("Found failed daemon pod {namespace}/{name} on node {node}, will try to kill it"),
                        ));
                        out.delete.push(pod);
                    }
                    Some("Succeeded") => out.delete.push(pod),
                    _ => running.push(*pod),
                }
            }
            if !surge {
                // One pod per node: keep the oldest.
                out.delete.extend(running.iter().skip(1));
            } else {
                keep_surge_pair(&running, hash, &mut out.delete);
            }
        } else if exists {
            out.delete.extend(
                state
                    .pods
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none()),
            );
        }
    }
    out
}

/// With surge, a node keeps the oldest updated pod and the oldest old pod only while the
/// old one is ready and the new one is not; every other pod goes.
fn keep_surge_pair<'a>(running: &[&'a Pod], hash: &str, delete: &mut Vec<&'a Pod>) {
    let mut oldest_new: Option<&Pod> = None;
    let mut oldest_old: Option<&'a Pod> = None;
    for pod in running {
        let slot = if is_updated(pod, hash) {
            &mut oldest_new
        } else {
            &mut oldest_old
        };
        if slot.is_none() {
            *slot = Some(*pod);
        } else {
            delete.push(pod);
        }
    }
    if let (Some(new), Some(old)) = (oldest_new, oldest_old)
        && (!is_ready(old) || is_ready(new))
    {
        delete.push(old);
    }
}

/// A daemon pod for `node` at revision `hash`.
pub fn new_daemon_pod(ds: &DaemonSet, daemon_spec: &PodSpec, node: &str, hash: &str) -> Pod {
    let template_meta = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.clone())
        .unwrap_or_default();
    let mut labels = template_meta.labels.unwrap_or_default();
    labels.insert(REVISION_HASH_LABEL.to_string(), hash.to_string());
    let generation = ds
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(TEMPLATE_GENERATION_ANNOTATION).cloned())
        .or_else(|| ds.metadata.generation.map(|g| g.to_string()));
    if let Some(generation) = generation {
        labels.insert(TEMPLATE_GENERATION_LABEL.to_string(), generation);
    }
    let mut spec = daemon_spec.clone();
    pin_to_node(&mut spec, node);
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!(
                "{}-",
                ds.metadata.name.as_deref().unwrap_or_default()
            )),
            namespace: ds.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: template_meta.annotations,
            finalizers: template_meta.finalizers,
            owner_references: Some(vec![controller_ref(ds)]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// Upstream's `updateDaemonSetStatus` counters.
fn compute_status(
    ds: &DaemonSet,
    by_node: &BTreeMap<String, NodeState<'_>>,
    hash: &str,
    collision_count: Option<i32>,
    now: Timestamp,
) -> DaemonSetStatus {
    let min_ready = ds
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0);
    let mut status = DaemonSetStatus {
        collision_count,
        conditions: ds.status.as_ref().and_then(|s| s.conditions.clone()),
        observed_generation: ds.metadata.generation,
        ..DaemonSetStatus::default()
    };
    let (mut available, mut updated) = (0, 0);
    for state in by_node.values() {
        let oldest = state.pods.first();
        if state.fit.should_run {
            status.desired_number_scheduled += 1;
            if let Some(pod) = oldest {
                status.current_number_scheduled += 1;
                if is_ready(pod) {
                    status.number_ready += 1;
                    if is_available(pod, min_ready, now) {
                        available += 1;
                    }
                }
                if is_updated(pod, hash) {
                    updated += 1;
                }
            }
        } else if oldest.is_some() {
            status.number_misscheduled += 1;
        }
    }
    status.number_available = Some(available);
    status.updated_number_scheduled = Some(updated);
    status.number_unavailable = Some(status.desired_number_scheduled - available);
    status
}
