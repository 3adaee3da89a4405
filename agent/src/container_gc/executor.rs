//! The effect side of container GC: list the containers kwk-node created (CRI
//! `ListContainers`, label `io.kwk.managed=true`), take the dead ones, run [`super::plan`] and
//! remove what it says with CRI `RemoveContainer` (an `UNKNOWN` one is stopped first).
//! [`run`] does that every [`GC_PERIOD`].
//!
//! Dead, as upstream: every instance not running. A `CREATED` or `UNKNOWN` one counts only
//! once it is older than [`GC_PERIOD`]: a younger one may be about to be started by its pod's
//! worker.

use std::time::Duration;

use kwk_cri::{CriClient, CriError, api};
use tokio_util::sync::CancellationToken;

use super::{ContainerGcPolicy, DeadContainer, plan};
use crate::labels;
use crate::pod::observed::UnixNanos;

/// How often upstream's kubelet collects containers.
pub const GC_PERIOD: Duration = Duration::from_secs(60);

/// The listing failed.
#[derive(Debug, thiserror::Error)]
#[error("listing exited containers")]
pub struct ContainerGcError(#[source] pub CriError);

/// What one collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// IDs removed (or already gone).
    pub removed: Vec<String>,
    /// IDs whose removal failed, with the error text (already logged).
    pub failed: Vec<(String, String)>,
}

/// The dead containers kwk-node created at `now`, from a CRI listing (instances without the
/// pod UID or container name labels are left out).
pub fn dead_containers(containers: &[api::Container], now: UnixNanos) -> Vec<DeadContainer> {
    let settled = now.saturating_sub(i64::try_from(GC_PERIOD.as_nanos()).unwrap_or(i64::MAX));
    containers
        .iter()
        .filter(|c| match api::ContainerState::try_from(c.state) {
            Ok(api::ContainerState::ContainerExited) => true,
            Ok(api::ContainerState::ContainerRunning) => false,
            Ok(api::ContainerState::ContainerCreated | api::ContainerState::ContainerUnknown)
            | Err(_) => c.created_at <= settled,
        })
        .filter_map(|c| {
            Some(DeadContainer {
                id: c.id.clone(),
                pod_uid: c.labels.get(labels::POD_UID)?.clone(),
                name: c.labels.get(labels::CONTAINER_NAME)?.clone(),
                created_at: c.created_at,
            })
        })
        .collect()
}

/// One collection at `now`: list, plan, remove. A failed removal is logged and the rest go on.
pub async fn collect(
    cri: &CriClient,
    policy: &ContainerGcPolicy,
    now: UnixNanos,
) -> Result<GcReport, ContainerGcError> {
    let containers = cri
        .list_containers(Some(api::ContainerFilter {
            label_selector: [(labels::MANAGED.to_string(), "true".to_string())].into(),
            ..Default::default()
        }))
        .await
        .map_err(ContainerGcError)?;
    let dead = dead_containers(&containers, now);
    let mut report = GcReport::default();
    for id in plan(policy, &dead, now) {
        let unknown = containers
            .iter()
            .any(|c| c.id == id && c.state == api::ContainerState::ContainerUnknown as i32);
        if unknown && let Err(err) = cri.stop_container(&id, Duration::ZERO).await {
            tracing::debug!(container = %id, %err, "stopping a container in an unknown state");
        }
        match cri.remove_container(&id).await {
            Ok(()) => {
                let c = dead.iter().find(|c| c.id == id);
                tracing::info!(
                    container = %id,
                    pod_uid = c.map_or("", |c| c.pod_uid.as_str()),
                    name = c.map_or("", |c| c.name.as_str()),
                    "dead container garbage collected"
                );
                report.removed.push(id);
            }
            Err(err) if err.is_not_found() => report.removed.push(id),
            Err(err) => {
                tracing::warn!(container = %id, %err, "container garbage collection: removal failed");
                report.failed.push((id, err.to_string()));
            }
        }
    }
    Ok(report)
}

/// Collects every [`GC_PERIOD`] until `cancel`. Failures are warnings; the next period tries
/// again.
pub async fn run(cri: CriClient, policy: ContainerGcPolicy, cancel: CancellationToken) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + GC_PERIOD, GC_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(err) = collect(&cri, &policy, crate::clock::unix_nanos_now()).await {
            let source = std::error::Error::source(&err).map(ToString::to_string);
            tracing::warn!(%err, source = ?source, "container garbage collection");
        }
    }
}
