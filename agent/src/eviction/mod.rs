//! Node-pressure eviction, as upstream's eviction manager (`pkg/kubelet/eviction`): when memory,
//! disk or PIDs run low against `evictionHard`/`evictionSoft`, report the pressure in the Node
//! conditions (`MemoryPressure`, `DiskPressure`, `PIDPressure`; the node lifecycle controller
//! turns them into `node.kubernetes.io/*-pressure:NoSchedule` taints) and evict one pod at a
//! time until the signal recovers.
//!
//! - [`signals`]: the signals and thresholds, read from the kubelet configuration (pure);
//! - [`plan`]: thresholds met, grace periods, pressure conditions (pure, table-tested);
//! - [`rank`]: which pod goes, and the eviction message (pure, table-tested);
//! - [`observe`]: the signals and pod usage, read from the host and the runtime;
//! - [`notify`]: kernel wake-ups on memory pressure (memcg thresholds on v1, PSI on v2);
//! - [`local_storage`]: pods over their emptyDir `sizeLimit` or `ephemeral-storage` limits,
//!   evicted before any node-pressure eviction (pure, table-tested); [`disk_usage`] measures
//!   the emptyDirs, writable layers and logs it needs;
//! - [`manager`]: the executor loop.
//!
//! Evicting is the pod manager's job ([`crate::pod::manager::PodManager::with_evictions`]): it
//! records the pod's status as `Failed`/`Evicted` with the message (and a `DisruptionTarget`
//! condition), emits a Warning `Evicted` event, stops the pod with the eviction's grace period
//! and never starts it again.

pub mod disk_usage;
pub mod local_storage;
pub mod manager;
pub mod notify;
pub mod observe;
pub mod plan;
pub mod rank;
pub mod signals;

use k8s_openapi::api::core::v1::{PodCondition, PodStatus};

pub use manager::EvictionManager;
pub use plan::{Decision, Observation, Observations, State};
pub use rank::{PodUsage, Victim};
pub use signals::{Condition, EvictionConfig, Signal, Threshold};

/// The reason an evicted pod's status and event carry.
pub const REASON: &str = "Evicted";

/// The Node pressure conditions, as the eviction manager decided them, for the Node status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pressures {
    pub memory: bool,
    pub disk: bool,
    pub pid: bool,
}

/// A pod to evict, from the eviction manager to the pod manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eviction {
    pub uid: String,
    /// The grace period its containers are stopped with.
    pub grace_period_seconds: i64,
    /// Upstream's eviction message.
    pub message: String,
}

/// The status of an evicted pod, from its `current` one: phase `Failed`, reason `Evicted`,
/// the message, and a `DisruptionTarget` condition (reason `TerminationByKubelet`), as
/// upstream's eviction manager sets them.
pub fn evicted_status(
    current: Option<PodStatus>,
    message: &str,
    now: k8s_openapi::jiff::Timestamp,
) -> PodStatus {
    let mut status = current.unwrap_or_default();
    status.phase = Some("Failed".to_string());
    status.reason = Some(REASON.to_string());
    status.message = Some(message.to_string());
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    conditions.retain(|c| c.type_ != "DisruptionTarget");
    conditions.push(PodCondition {
        type_: "DisruptionTarget".to_string(),
        status: "True".to_string(),
        reason: Some("TerminationByKubelet".to_string()),
        message: Some(message.to_string()),
        last_transition_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now)),
        ..PodCondition::default()
    });
    status
}

/// The Warning `Evicted` event.
pub fn evicted_event(message: &str) -> crate::pod::events::PodEvent {
    crate::pod::events::PodEvent {
        type_: crate::pod::events::EventType::Warning,
        reason: std::borrow::Cow::Borrowed(REASON),
        message: message.to_string(),
        container: None,
    }
}

/// An error and its sources, `: `-separated, for logs.
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_evicted_status_keeps_what_was_there() {
        let current = PodStatus {
            phase: Some("Running".into()),
            qos_class: Some("BestEffort".into()),
            ..PodStatus::default()
        };
        let status = evicted_status(
            Some(current),
            "low",
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        );
        assert_eq!(status.phase.as_deref(), Some("Failed"));
        assert_eq!(status.reason.as_deref(), Some("Evicted"));
        assert_eq!(status.message.as_deref(), Some("low"));
        assert_eq!(status.qos_class.as_deref(), Some("BestEffort"));
        let conditions = status.conditions.unwrap_or_default();
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].type_, "DisruptionTarget");
        assert_eq!(
            conditions[0].reason.as_deref(),
            Some("TerminationByKubelet")
        );
    }
}
