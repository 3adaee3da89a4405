//! The StatefulSet planner (upstream `pkg/controller/statefulset`): members `<set>-<ordinal>`
//! from `spec.ordinals.start`, their claims created before them, OrderedReady (one at a
//! time, each waiting for its predecessor to be Running and Ready; scale-down from the
//! highest ordinal, one at a time) or Parallel management, failed members replaced,
//! RollingUpdate from the highest ordinal down to the partition, OnDelete, the
//! ControllerRevisions (shared helpers in [`crate::daemonset::history`]) and the status.
//! [`identity`] says what a member and its claims look like.

pub mod controller;
pub mod identity;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::jiff::Timestamp;

use crate::action::Action;
use crate::common::{is_available, is_ready};
pub use crate::daemonset::Plan;
use crate::daemonset::history::{
    by_revision_number, resolve_update_revision, revisions_to_prune, template_of,
};
use crate::daemonset::ownership::claim;
use identity::{claim_owner_patch, identity_patch, new_claims, new_pod, ordinal_of, revision_of};

/// The writes that move `sts` toward its desired state.
pub fn plan(
    sts: &StatefulSet,
    pods: &[Pod],
    pvcs: &[PersistentVolumeClaim],
    revisions: &[ControllerRevision],
    now: Timestamp,
) -> Vec<Action> {
    reconcile(sts, pods, pvcs, revisions, now).actions
}

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.phase.as_deref()
}

fn is_created(pod: &Pod) -> bool {
    phase(pod).is_some_and(|p| !p.is_empty())
}

fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

fn is_running_and_ready(pod: &Pod) -> bool {
    phase(pod) == Some("Running") && is_ready(pod)
}

/// Running, ready for `minReadySeconds`, and not going away.
fn is_healthy(pod: &Pod, min_ready: i32, now: Timestamp) -> bool {
    is_running_and_ready(pod) && is_available(pod, min_ready, now) && !is_terminating(pod)
}

/// What the planner works from.
#[derive(Debug)]
struct Members<'a> {
    /// Index `i` holds ordinal `start + i`, if that pod exists.
    replicas: Vec<Option<&'a Pod>>,
    /// Members outside the range, highest ordinal first.
    condemned: Vec<&'a Pod>,
    /// Every controlled member (for the status).
    all: Vec<&'a Pod>,
}

fn members<'a>(sts: &StatefulSet, owned: Vec<&'a Pod>, start: i32, count: i32) -> Members<'a> {
    let mut out = Members {
        replicas: vec![None; usize::try_from(count).unwrap_or(0)],
        condemned: Vec::new(),
        all: Vec::new(),
    };
    let mut condemned = Vec::new();
    for pod in owned {
        let Some(ordinal) = ordinal_of(sts, pod) else {
            continue;
        };
        out.all.push(pod);
        let index = usize::try_from(ordinal - start).ok();
        match index.and_then(|i| out.replicas.get_mut(i)) {
            Some(slot) => *slot = Some(pod),
            None => condemned.push((ordinal, pod)),
        }
    }
    condemned.sort_by_key(|(ordinal, _)| std::cmp::Reverse(*ordinal));
    out.condemned = condemned.into_iter().map(|(_, p)| p).collect();
    out
}

/// [`plan`] plus the requeue hint (minReadySeconds).
pub fn reconcile(
    sts: &StatefulSet,
    pods: &[Pod],
    pvcs: &[PersistentVolumeClaim],
    revisions: &[ControllerRevision],
    now: Timestamp,
) -> Plan {
    let mut out = Plan::default();
    if sts.metadata.deletion_timestamp.is_some() {
        return out;
    }
    let spec = sts.spec.clone().unwrap_or_default();
    let status = sts.status.clone().unwrap_or_default();
    let claimed_revisions = claim(sts, &spec.selector, revisions);
    out.actions.extend(claimed_revisions.actions);
    let owned = by_revision_number(claimed_revisions.owned);
    let update = resolve_update_revision(
        sts,
        &spec.template,
        status.collision_count,
        &owned,
        revisions,
    );
    out.actions.extend(update.actions.iter().cloned());
    let update_name = update.revision.metadata.name.clone().unwrap_or_default();
    let current = status
        .current_revision
        .as_deref()
        .and_then(|name| {
            owned
                .iter()
                .find(|r| r.metadata.name.as_deref() == Some(name))
        })
        .map_or_else(|| update.revision.clone(), |r| (*r).clone());
    let current_name = current.metadata.name.clone().unwrap_or_default();
    let current_template = template_of(&current).unwrap_or_else(|| spec.template.clone());

    let start = spec
        .ordinals
        .as_ref()
        .and_then(|o| o.start)
        .unwrap_or(0)
        .max(0);
    // Ordinals past i32::MAX cannot be named (nor parsed back): such members are never made.
    let count = spec
        .replicas
        .unwrap_or(1)
        .clamp(0, (i32::MAX - start).saturating_add(1));
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let monotonic = spec.pod_management_policy.as_deref() != Some("Parallel");
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    let rolling = strategy
        .type_
        .as_deref()
        .is_none_or(|t| t == "RollingUpdate");
    let partition = strategy
        .rolling_update
        .as_ref()
        .and_then(|r| r.partition)
        .unwrap_or(0)
        .max(0);
    let claimed_pods = claim(sts, &spec.selector, pods);
    out.actions.extend(claimed_pods.actions);
    let m = members(sts, claimed_pods.owned, start, count);
    let find_claim = |name: &str| {
        pvcs.iter().find(|c| {
            c.metadata.name.as_deref() == Some(name)
                && c.metadata.namespace == sts.metadata.namespace
        })
    };

    let mut blocked = false;
    for (index, slot) in m.replicas.iter().enumerate() {
        let ordinal = start.saturating_add(i32::try_from(index).unwrap_or(i32::MAX));
        // Claims first: created when missing (a claim being deleted holds the member back),
        // owner references kept in line with the retention policy.
        let mut claims_ready = true;
        for claim in new_claims(sts, ordinal) {
            let name = claim.metadata.name.clone().unwrap_or_default();
            match find_claim(&name) {
                None => out.actions.push(Action::create(&claim)),
                Some(existing) if existing.metadata.deletion_timestamp.is_some() => {
                    claims_ready = false;
                }
                Some(existing) => {
                    if let Some(pod) = slot
                        && let Some(patch) = claim_owner_patch(sts, existing, pod, false)
                    {
                        out.actions.push(Action::patch(existing, None, patch));
                    }
                }
            }
        }
        let Some(pod) = slot else {
            if claims_ready {
                // Below the partition a recreated member keeps the current revision.
                let keep_current = rolling && i32::try_from(index).unwrap_or(i32::MAX) < partition;
                let pod = if keep_current {
                    new_pod(sts, &current_template, ordinal, &current_name)
                } else {
                    new_pod(sts, &spec.template, ordinal, &update_name)
                };
                out.actions.push(Action::create(&pod));
            }
            if monotonic {
                blocked = true;
                break;
            }
            continue;
        };
        if matches!(phase(pod), Some("Failed" | "Succeeded")) {
            // Replaced on a later pass, once the old one is gone.
            if !is_terminating(pod) {
                out.actions.push(Action::delete(*pod, None));
            }
            if monotonic {
                blocked = true;
                break;
            }
            continue;
        }
        if let Some(patch) = identity_patch(sts, pod, ordinal) {
            out.actions.push(Action::patch(*pod, None, patch));
        }
        if monotonic && !is_healthy(pod, min_ready, now) {
            blocked = true;
            break;
        }
    }

    if !blocked {
        let first_unhealthy = m
            .condemned
            .iter()
            .find(|p| !is_healthy(p, min_ready, now))
            .map(|p| p.metadata.name.clone());
        for pod in &m.condemned {
            if is_terminating(pod) {
                if monotonic {
                    blocked = true;
                    break;
                }
                continue;
            }
            let healthy = is_healthy(pod, min_ready, now);
            if monotonic && !healthy && first_unhealthy != Some(pod.metadata.name.clone()) {
                blocked = true;
                break;
            }
            let ordinal = ordinal_of(sts, pod).unwrap_or(0);
            for claim in new_claims(sts, ordinal) {
                let name = claim.metadata.name.clone().unwrap_or_default();
                if let Some(existing) = find_claim(&name)
                    && let Some(patch) = claim_owner_patch(sts, existing, pod, true)
                {
                    out.actions.push(Action::patch(existing, None, patch));
                }
            }
            out.actions.push(Action::delete(*pod, None));
            if monotonic {
                blocked = true;
                break;
            }
        }
    }

    if !blocked && rolling {
        // From the highest ordinal down to the partition: replace one outdated member, or
        // wait for an unhealthy one.
        let floor = usize::try_from(partition).unwrap_or(0);
        for slot in m.replicas.iter().skip(floor).rev() {
            let Some(pod) = slot else { break };
            if revision_of(pod) != Some(update_name.as_str()) && !is_terminating(pod) {
                out.actions.push(Action::delete(*pod, None));
                break;
            }
            if !is_healthy(pod, min_ready, now) {
                break;
            }
        }
    }

    let mut live: BTreeSet<String> = BTreeSet::from([current_name.clone(), update_name.clone()]);
    live.extend(
        m.all
            .iter()
            .filter_map(|p| revision_of(p))
            .map(String::from),
    );
    for revision in revisions_to_prune(&owned, &live, spec.revision_history_limit) {
        out.actions.push(Action::delete(revision, None));
    }

    let new_status = compute_status(
        sts,
        &m.all,
        &current_name,
        &update_name,
        update.collision_count,
        rolling,
        now,
    );
    if min_ready > 0 && new_status.available_replicas != new_status.ready_replicas {
        out.requeue_after = Some(Duration::from_secs(u64::try_from(min_ready).unwrap_or(0)));
    }
    if sts.status.as_ref() != Some(&new_status) {
        let mut updated = sts.clone();
        updated.status = Some(new_status);
        out.actions.push(Action::update_status(&updated));
    }
    out
}

/// Upstream's replica counting, then `completeRollingUpdate`: once every member runs the
/// update revision and is ready, it becomes the current revision.
fn compute_status(
    sts: &StatefulSet,
    members: &[&Pod],
    current: &str,
    update: &str,
    collision_count: Option<i32>,
    rolling: bool,
    now: Timestamp,
) -> StatefulSetStatus {
    let min_ready = sts
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0);
    let (mut replicas, mut ready, mut available, mut current_count, mut updated) = (0, 0, 0, 0, 0);
    for pod in members {
        if is_created(pod) {
            replicas += 1;
        }
        if is_running_and_ready(pod) {
            ready += 1;
            if is_available(pod, min_ready, now) {
                available += 1;
            }
        }
        if is_created(pod) && !is_terminating(pod) {
            let revision = revision_of(pod);
            if revision == Some(current) {
                current_count += 1;
            }
            if revision == Some(update) {
                updated += 1;
            }
        }
    }
    let mut status = StatefulSetStatus {
        observed_generation: sts.metadata.generation,
        replicas,
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        current_replicas: Some(current_count),
        updated_replicas: Some(updated),
        current_revision: Some(current.to_string()),
        update_revision: Some(update.to_string()),
        collision_count,
        conditions: sts.status.as_ref().and_then(|s| s.conditions.clone()),
    };
    let wanted = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    if rolling && updated == wanted && ready == wanted && replicas == wanted {
        status.current_revision = Some(update.to_string());
        status.current_replicas = Some(updated);
    }
    status
}
