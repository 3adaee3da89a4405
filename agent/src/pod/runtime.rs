//! The boundary between pod workers and the machine: observe a pod, carry out one plan action,
//! clean up after a pod. The real implementation drives CRI, cgroups and volumes
//! (`cri_runtime`); tests use a recording fake.

use std::future::Future;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use super::observed::{ObservedPod, UnixNanos};
use super::plan::Action;
use super::pleg::Relist;
use super::probe::tracker::RunResult;

/// The sandbox the actions of one plan go into, updated as `CreateSandbox` runs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExecState {
    /// (sandbox ID, attempt) of the current ready sandbox.
    pub sandbox: Option<(String, u32)>,
    /// Pod IPs of that sandbox.
    pub ips: Vec<String>,
    /// The sandbox's CRI config once built in this plan (every CreateContainer needs it).
    pub sandbox_config: Option<kwk_cri::api::PodSandboxConfig>,
}

impl ExecState {
    /// Starts from the observed state: the newest sandbox if it is ready.
    pub fn from_observed(observed: &ObservedPod) -> Self {
        match observed.current_sandbox().filter(|s| s.ready) {
            Some(s) => Self {
                sandbox: Some((s.id.clone(), s.attempt)),
                ips: s.ips.clone(),
                sandbox_config: None,
            },
            None => Self::default(),
        }
    }
}

/// A failed runtime operation, with enough context to log and report.
#[derive(Debug, thiserror::Error)]
#[error("{operation}: {message}")]
pub struct RuntimeError {
    /// What was being done (`RunPodSandbox`, `CreateContainer web`, ...).
    pub operation: String,
    pub message: String,
    /// The reason shown in the container's waiting state, when the failure is a container's.
    pub waiting_reason: Option<&'static str>,
}

/// What pod workers need from the node.
pub trait PodRuntime: Send + Sync + 'static {
    /// Everything the runtime holds for the pod UID.
    fn observe(&self, uid: &str) -> impl Future<Output = Result<ObservedPod, RuntimeError>> + Send;

    /// Carries out one action of a plan for `pod`, given what was observed before the plan.
    fn execute(
        &self,
        pod: &Pod,
        observed: &ObservedPod,
        state: &mut ExecState,
        action: &Action,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Removes what the node holds for a pod beyond the runtime (cgroup, volumes, logs) once all
    /// its containers and sandboxes are gone.
    fn cleanup(&self, pod: &Pod) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Lists every pod kwk-node created on the runtime (for the PLEG and orphan discovery).
    fn relist(&self) -> impl Future<Output = Result<Relist, RuntimeError>> + Send;

    /// The clock (nanoseconds since the epoch), injectable for tests.
    fn now(&self) -> UnixNanos;

    /// Runs an exec probe's `command` in the container, bounded by `timeout` (a command still
    /// running then is killed): success for exit status 0, else a failure carrying its output.
    /// An error is the runtime's (the probe could not run).
    fn exec_probe(
        &self,
        container_id: &str,
        command: &[String],
        timeout: std::time::Duration,
    ) -> impl Future<Output = Result<RunResult, RuntimeError>> + Send {
        let _ = (container_id, command, timeout);
        async {
            Err(RuntimeError {
                operation: "ExecSync".into(),
                message: "exec probes are not supported by this runtime".into(),
                waiting_reason: None,
            })
        }
    }

    /// The pods that are to run on this node changed (the kubelet's active pods): node-wide
    /// settings that depend on all of them, such as the QoS cgroups' CPU shares, follow.
    /// Called before new pods' workers start; errors are the runtime's to log.
    fn active_pods_changed(&self, _pods: &[&Pod]) {}

    /// Brings the running pod's API-backed volumes (ConfigMaps, Secrets, downward API, tokens)
    /// up to date; `pod_ips` are its sandbox's. Called every sync round of a running pod.
    fn refresh_volumes(
        &self,
        _pod: &Pod,
        _pod_ips: &[String],
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        async { Ok(()) }
    }
}

impl<R: PodRuntime> PodRuntime for Arc<R> {
    fn observe(&self, uid: &str) -> impl Future<Output = Result<ObservedPod, RuntimeError>> + Send {
        (**self).observe(uid)
    }

    fn execute(
        &self,
        pod: &Pod,
        observed: &ObservedPod,
        state: &mut ExecState,
        action: &Action,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        (**self).execute(pod, observed, state, action)
    }

    fn cleanup(&self, pod: &Pod) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        (**self).cleanup(pod)
    }

    fn relist(&self) -> impl Future<Output = Result<Relist, RuntimeError>> + Send {
        (**self).relist()
    }

    fn now(&self) -> UnixNanos {
        (**self).now()
    }

    fn exec_probe(
        &self,
        container_id: &str,
        command: &[String],
        timeout: std::time::Duration,
    ) -> impl Future<Output = Result<RunResult, RuntimeError>> + Send {
        (**self).exec_probe(container_id, command, timeout)
    }

    fn active_pods_changed(&self, pods: &[&Pod]) {
        (**self).active_pods_changed(pods)
    }

    fn refresh_volumes(
        &self,
        pod: &Pod,
        pod_ips: &[String],
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        (**self).refresh_volumes(pod, pod_ips)
    }
}
