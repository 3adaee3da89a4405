//! The pod status (phase, conditions, container statuses, IPs) computed from the spec, the
//! observed runtime state and the latest plan. Pure: the status manager only stores and serves it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::observed::{ContainerKind, InstanceState, ObservedContainer, ObservedPod, UnixNanos};
use super::plan::{Outcome, Waiting};
use super::probe::prober::ProbeSnapshot;
use super::probe::spec::probe_kinds;
use super::spec::{self, DesiredContainer};

/// Facts about the node and the pod's history the status needs.
#[derive(Clone, Debug, Default)]
pub struct StatusContext {
    /// The node's primary IP (the pod IP of hostNetwork pods).
    pub host_ip: Option<String>,
    /// When kwk-node first accepted the pod.
    pub start_time: Option<UnixNanos>,
    /// `Guaranteed`, `Burstable` or `BestEffort`.
    pub qos_class: Option<String>,
    /// The probes' verdicts (a running container with a readiness probe is ready once it
    /// passes; one with a startup probe is started once that passes).
    pub probes: ProbeSnapshot,
}

/// Computes the status of a pod.
pub fn pod_status(
    pod: &Pod,
    observed: &ObservedPod,
    waiting: &BTreeMap<String, Waiting>,
    outcome: Outcome,
    ctx: &StatusContext,
) -> PodStatus {
    let sandbox = observed.current_sandbox();
    let current = sandbox.map(|s| s.id.as_str());
    let inits = spec::init_containers(pod);
    let apps = spec::app_containers(pod);

    let init_statuses: Vec<ContainerStatus> = inits
        .iter()
        .map(|c| container_status(c, observed, current, waiting, &ctx.probes))
        .collect();
    let app_statuses: Vec<ContainerStatus> = apps
        .iter()
        .map(|c| container_status(c, observed, current, waiting, &ctx.probes))
        .collect();

    let initialized = current
        .is_some_and(|s| apps.iter().any(|a| observed.latest_in(s, a.name).is_some()))
        || (inits.is_empty() && current.is_some());
    let sidecars_ready = inits
        .iter()
        .zip(&init_statuses)
        .filter(|(c, _)| c.kind == ContainerKind::Sidecar)
        .all(|(_, s)| s.ready);
    let containers_ready = outcome == Outcome::Active
        && sidecars_ready
        && !app_statuses.is_empty()
        && app_statuses.iter().all(|s| s.ready);

    let phase = match outcome {
        Outcome::Completed { succeeded: true } => "Succeeded",
        Outcome::Completed { succeeded: false } => "Failed",
        Outcome::Stopped => {
            if app_statuses
                .iter()
                .any(|s| s.state.as_ref().is_some_and(|st| st.running.is_some()))
            {
                "Running"
            } else if all_succeeded(&app_statuses) {
                "Succeeded"
            } else {
                "Failed"
            }
        }
        Outcome::Active => {
            let all_started = current.is_some_and(|s| {
                apps.iter().all(|a| {
                    observed
                        .latest_in(s, a.name)
                        .is_some_and(|i| i.started_at > 0 || i.is_running())
                })
            });
            if all_started { "Running" } else { "Pending" }
        }
    };

    let sandbox_ready = sandbox.is_some_and(|s| s.ready);
    let completed = matches!(outcome, Outcome::Completed { .. });
    let ready_reason = if completed {
        Some("PodCompleted")
    } else if !containers_ready {
        Some("ContainersNotReady")
    } else {
        None
    };
    let conditions = vec![
        condition("PodReadyToStartContainers", sandbox_ready, None),
        condition(
            "Initialized",
            initialized || completed,
            (!initialized && !completed).then_some("ContainersNotInitialized"),
        ),
        condition("Ready", containers_ready, ready_reason),
        condition("ContainersReady", containers_ready, ready_reason),
        condition("PodScheduled", true, None),
    ];

    let host_network = spec::host_network(pod);
    let pod_ips: Vec<String> = if host_network {
        ctx.host_ip.iter().cloned().collect()
    } else {
        sandbox.map(|s| s.ips.clone()).unwrap_or_default()
    };

    PodStatus {
        phase: Some(phase.to_string()),
        conditions: Some(conditions),
        host_ip: ctx.host_ip.clone(),
        host_ips: ctx
            .host_ip
            .as_ref()
            .map(|ip| vec![HostIP { ip: ip.clone() }]),
        pod_ip: pod_ips.first().cloned(),
        pod_ips: (!pod_ips.is_empty())
            .then(|| pod_ips.iter().map(|ip| PodIP { ip: ip.clone() }).collect()),
        start_time: ctx.start_time.map(time),
        qos_class: ctx.qos_class.clone(),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        container_statuses: Some(app_statuses),
        ..Default::default()
    }
}

/// Whether every container ended with exit code 0 (a stopped pod's phase is `Succeeded`
/// then, `Failed` otherwise, as upstream's for deleted pods).
fn all_succeeded(statuses: &[ContainerStatus]) -> bool {
    !statuses.is_empty()
        && statuses.iter().all(|s| {
            s.state
                .as_ref()
                .and_then(|st| st.terminated.as_ref())
                .is_some_and(|t| t.exit_code == 0)
        })
}

fn condition(type_: &str, status: bool, reason: Option<&str>) -> PodCondition {
    PodCondition {
        type_: type_.to_string(),
        status: if status { "True" } else { "False" }.to_string(),
        reason: reason.map(str::to_string),
        ..Default::default()
    }
}

fn container_status(
    c: &DesiredContainer<'_>,
    observed: &ObservedPod,
    current: Option<&str>,
    waiting: &BTreeMap<String, Waiting>,
    probes: &ProbeSnapshot,
) -> ContainerStatus {
    // The newest instance, preferring the current sandbox.
    let latest = current
        .and_then(|s| observed.latest_in(s, c.name))
        .or_else(|| observed.instances(c.name).next());
    let previous = latest.and_then(|l| {
        observed
            .instances(c.name)
            .find(|i| i.id != l.id && i.created_at <= l.created_at)
    });
    let waits = waiting.get(c.name);
    let running = latest.is_some_and(ObservedContainer::is_running);

    let (state, last_state) = match (latest, waits) {
        (Some(l), Some(w)) if !running => {
            (waiting_state(w), l.finished_at().map(|_| terminated(l)))
        }
        (Some(l), _) => (instance_state(l), previous.map(terminated)),
        (None, Some(w)) => (waiting_state(w), None),
        (None, None) => (
            waiting_state(&Waiting {
                reason: "ContainerCreating",
                message: String::new(),
            }),
            None,
        ),
    };
    let (started, probed_ready) = match latest {
        Some(l) if running => probes.view(&l.id, &probe_kinds(c.spec)),
        _ => (false, false),
    };
    let ready = match c.kind {
        ContainerKind::Init => latest.is_some_and(ObservedContainer::succeeded),
        ContainerKind::Sidecar | ContainerKind::App => probed_ready,
    };
    ContainerStatus {
        name: c.name.to_string(),
        image: c.spec.image.clone().unwrap_or_default(),
        image_id: latest.map(|l| l.image_ref.clone()).unwrap_or_default(),
        container_id: latest.map(|l| format!("containerd://{}", l.id)),
        restart_count: latest.map_or(0, |l| i32::try_from(l.restart_count).unwrap_or(i32::MAX)),
        ready,
        started: Some(started),
        state: Some(state),
        last_state: last_state.map(|s| s.unwrap_or_default()),
        ..Default::default()
    }
}

fn waiting_state(w: &Waiting) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(w.reason.to_string()),
            message: (!w.message.is_empty()).then(|| w.message.clone()),
        }),
        ..Default::default()
    }
}

fn instance_state(i: &ObservedContainer) -> ContainerState {
    match &i.state {
        InstanceState::Running => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: (i.started_at > 0).then(|| time(i.started_at)),
            }),
            ..Default::default()
        },
        InstanceState::Exited { .. } => terminated(i).unwrap_or_default(),
        InstanceState::Created => waiting_state(&Waiting {
            reason: "ContainerCreating",
            message: String::new(),
        }),
        InstanceState::Unknown => waiting_state(&Waiting {
            reason: "ContainerStatusUnknown",
            message: "The container state could not be read from the runtime".into(),
        }),
    }
}

/// The terminated state of an exited instance; `None` for one that did not exit.
fn terminated(i: &ObservedContainer) -> Option<ContainerState> {
    let InstanceState::Exited {
        exit_code,
        reason,
        message,
        finished_at,
    } = &i.state
    else {
        return None;
    };
    let reason = if reason.is_empty() {
        if *exit_code == 0 {
            "Completed"
        } else {
            "Error"
        }
        .to_string()
    } else {
        reason.clone()
    };
    Some(ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: *exit_code,
            reason: Some(reason),
            message: (!message.is_empty()).then(|| message.clone()),
            started_at: (i.started_at > 0).then(|| time(i.started_at)),
            finished_at: (*finished_at > 0).then(|| time(*finished_at)),
            container_id: Some(format!("containerd://{}", i.id)),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn time(nanos: UnixNanos) -> Time {
    Time(crate::clock::timestamp(nanos))
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
