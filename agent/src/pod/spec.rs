//! Reading the parts of a `Pod` the planner needs: its containers in start order with their
//! kind and fingerprint, restart policy and grace period. Pure.

use k8s_openapi::api::core::v1::{Container, Pod};

use super::fingerprint::fingerprint;
use super::observed::ContainerKind;

/// `spec.restartPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

/// The default grace period when the spec has none.
pub const DEFAULT_GRACE_SECONDS: i64 = 30;

/// One container of the spec, as the planner sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredContainer<'a> {
    pub name: &'a str,
    pub kind: ContainerKind,
    pub fingerprint: String,
    pub spec: &'a Container,
}

/// The pod's restart policy (`Always` when unset, as defaulted by the API).
pub fn restart_policy(pod: &Pod) -> RestartPolicy {
    match pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) {
        Some("Never") => RestartPolicy::Never,
        Some("OnFailure") => RestartPolicy::OnFailure,
        _ => RestartPolicy::Always,
    }
}

/// `spec.terminationGracePeriodSeconds`, never negative.
pub fn grace_seconds(pod: &Pod) -> i64 {
    pod.spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(DEFAULT_GRACE_SECONDS)
        .max(0)
}

/// Init containers (regular and sidecar) in spec order.
pub fn init_containers(pod: &Pod) -> Vec<DesiredContainer<'_>> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    spec.init_containers
        .iter()
        .flatten()
        .map(|c| {
            let kind = if c.restart_policy.as_deref() == Some("Always") {
                ContainerKind::Sidecar
            } else {
                ContainerKind::Init
            };
            desired(c, kind)
        })
        .collect()
}

/// App containers in spec order.
pub fn app_containers(pod: &Pod) -> Vec<DesiredContainer<'_>> {
    pod.spec
        .as_ref()
        .map(|s| {
            s.containers
                .iter()
                .map(|c| desired(c, ContainerKind::App))
                .collect()
        })
        .unwrap_or_default()
}

/// Finds a container of the spec by name, with its kind.
pub fn find_container<'a>(pod: &'a Pod, name: &str) -> Option<DesiredContainer<'a>> {
    init_containers(pod)
        .into_iter()
        .chain(app_containers(pod))
        .find(|c| c.name == name)
}

fn desired(c: &Container, kind: ContainerKind) -> DesiredContainer<'_> {
    DesiredContainer {
        name: &c.name,
        kind,
        fingerprint: fingerprint(c, kind),
        spec: c,
    }
}

/// Pod UID, name and namespace, empty when absent.
pub fn uid(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or_default()
}

pub fn name(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or_default()
}

pub fn namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("default")
}

/// Whether the pod runs in the host's network namespace.
pub fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}
