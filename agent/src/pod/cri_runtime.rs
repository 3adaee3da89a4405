//! The real `PodRuntime`: observes pods and carries out plan actions through CRI. What a pod
//! needs from the host around the runtime calls — its cgroup, volumes, the CRI configs built
//! from the spec — comes from a `PodSetup`, so this file only knows the CRI call sequence.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::api::core::v1::{Container, Pod};
use kwk_cri::{CriClient, CriError, api};

use super::events::{EventSink, PodEvent};
use super::hooks::{self, HookKind};
use super::observed::{
    ContainerKind, InstanceState, ObservedContainer, ObservedPod, UnixNanos, observed_container,
    observed_sandbox,
};
use super::plan::{Action, KillReason};
use super::pleg::{self, Relist};
use super::probe::tracker::RunResult;
use super::runtime::{ExecState, PodRuntime, RuntimeError};
use super::spec;
use crate::labels;

/// The host-side preparation of a pod, around the CRI calls.
pub trait PodSetup: Send + Sync + 'static {
    /// Prepares the pod's cgroup and directories and builds its sandbox config.
    fn sandbox_config(
        &self,
        pod: &Pod,
        attempt: u32,
    ) -> impl Future<Output = Result<api::PodSandboxConfig, RuntimeError>> + Send;

    /// Prepares the container's volumes and builds its config.
    fn container_config(
        &self,
        pod: &Pod,
        start: &ContainerStart<'_>,
    ) -> impl Future<Output = Result<api::ContainerConfig, RuntimeError>> + Send;

    /// The termination message a container instance left, if any.
    fn termination_message(&self, container: &ObservedContainer) -> Option<String>;

    /// Removes the pod's cgroup, volumes and (after a retention) logs.
    fn cleanup(&self, pod: &Pod) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// See [`PodRuntime::active_pods_changed`].
    fn active_pods_changed(&self, _pods: &[&Pod]) {}

    /// See [`PodRuntime::refresh_volumes`].
    fn refresh_volumes(
        &self,
        _pod: &Pod,
        _pod_ips: &[String],
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        async { Ok(()) }
    }
}

/// The operation of a [`RuntimeError`] that says a pod volume could not be set up: the
/// runtime records its message as a `FailedMount` event and the container keeps waiting in
/// `ContainerCreating` until a later round sets the volume up.
pub const MOUNT_VOLUME_SETUP: &str = "MountVolume.SetUp";

/// The [`RuntimeError`] of a failed volume set-up; `message` is upstream's
/// (`MountVolume.SetUp failed for volume "<name>" : <reason>`).
pub fn mount_failure(message: String) -> RuntimeError {
    RuntimeError {
        operation: MOUNT_VOLUME_SETUP.into(),
        message,
        waiting_reason: Some("ContainerCreating"),
    }
}

/// What is known about a container instance about to be created.
#[derive(Clone, Debug)]
pub struct ContainerStart<'a> {
    pub name: &'a str,
    pub kind: ContainerKind,
    pub restart_count: u32,
    pub fingerprint: String,
    pub pod_ips: &'a [String],
}

/// CRI-backed pod runtime.
#[derive(Debug)]
pub struct CriPodRuntime<S> {
    cri: CriClient,
    setup: S,
    events: EventSink,
}

impl<S: PodSetup> CriPodRuntime<S> {
    pub fn new(cri: CriClient, setup: S) -> Self {
        Self {
            cri,
            setup,
            events: EventSink::default(),
        }
    }

    /// Records Pulling/Pulled, Created, Started, Failed, FailedMount and Killing events in
    /// `events`.
    #[must_use]
    pub fn with_events(mut self, events: EventSink) -> Self {
        self.events = events;
        self
    }

    async fn create_sandbox(
        &self,
        pod: &Pod,
        attempt: u32,
        state: &mut ExecState,
    ) -> Result<(), RuntimeError> {
        if !spec::host_network(pod)
            && let Some(error) = self.network_not_ready().await
        {
            // As upstream's kubelet: no sandbox while the pod network is not ready (it
            // would fail in the CNI plugin and stay behind, dead).
            let message = format!("{NETWORK_NOT_READY}: {error}");
            self.events.emit(pod, PodEvent::network_not_ready(&message));
            return Err(RuntimeError {
                operation: "RunPodSandbox".into(),
                message,
                waiting_reason: None,
            });
        }
        let config = self.setup.sandbox_config(pod, attempt).await?;
        let id = self
            .cri
            .run_pod_sandbox(config.clone(), "")
            .await
            .map_err(|e| cri_error("RunPodSandbox", &e, None))?;
        let status = self
            .cri
            .pod_sandbox_status(&id, false)
            .await
            .map_err(|e| cri_error("PodSandboxStatus", &e, None))?;
        state.ips = sandbox_ips(&status.status);
        state.sandbox = Some((id, attempt));
        state.sandbox_config = Some(config);
        Ok(())
    }

    /// Why the runtime's pod network is not ready (its `Status`); `None` when it is, or when
    /// the runtime cannot say (`RunPodSandbox` then tells).
    async fn network_not_ready(&self) -> Option<String> {
        let status = self.cri.status(false).await.ok()?;
        crate::node_status::runtime::network_error(&crate::node_status::runtime::conditions_of(
            &status.status,
        ))
    }

    async fn start_container(
        &self,
        pod: &Pod,
        state: &mut ExecState,
        name: &str,
        kind: ContainerKind,
        restart_count: u32,
    ) -> Result<(), RuntimeError> {
        let Some((sandbox_id, attempt)) = state.sandbox.clone() else {
            return Err(RuntimeError {
                operation: format!("CreateContainer {name}"),
                message: "the pod has no ready sandbox".into(),
                waiting_reason: None,
            });
        };
        let desired = spec::find_container(pod, name).ok_or_else(|| RuntimeError {
            operation: format!("CreateContainer {name}"),
            message: "no such container in the pod spec".into(),
            waiting_reason: None,
        })?;
        let start = ContainerStart {
            name,
            kind,
            restart_count,
            fingerprint: desired.fingerprint.clone(),
            pod_ips: &state.ips,
        };
        let image = desired.spec.image.clone().unwrap_or_default();
        if let Err(err) = self.ensure_image(pod, name, &image).await {
            self.events.emit(pod, PodEvent::failed(name, &err.message));
            return Err(err);
        }
        // Built (cgroup, log directory, DNS) once per plan, not once per container.
        let sandbox_config = match &state.sandbox_config {
            Some(c) => c.clone(),
            None => {
                let c = self.setup.sandbox_config(pod, attempt).await?;
                state.sandbox_config = Some(c.clone());
                c
            }
        };
        let config = match self.setup.container_config(pod, &start).await {
            Ok(config) => config,
            Err(err) => {
                if err.operation == MOUNT_VOLUME_SETUP {
                    self.events
                        .emit(pod, PodEvent::failed_mount(err.message.clone()));
                }
                return Err(err);
            }
        };
        let id = self
            .cri
            .create_container(&sandbox_id, config, sandbox_config)
            .await
            .map_err(|e| {
                let err = cri_error(
                    &format!("CreateContainer {name}"),
                    &e,
                    Some("CreateContainerError"),
                );
                self.events.emit(pod, PodEvent::failed(name, &err.message));
                err
            })?;
        self.events.emit(pod, PodEvent::created(name));
        self.cri.start_container(&id).await.map_err(|e| {
            let err = cri_error(
                &format!("StartContainer {name}"),
                &e,
                Some("RunContainerError"),
            );
            self.events.emit(pod, PodEvent::failed(name, &err.message));
            err
        })?;
        self.events.emit(pod, PodEvent::started(name));
        self.post_start(pod, &id, name, desired.spec, &state.ips)
            .await
    }

    /// Runs the container's `postStart` hook; a failed one kills the container (the restart
    /// policy decides what follows) and fails the start with `PostStartHookError`.
    async fn post_start(
        &self,
        pod: &Pod,
        id: &str,
        name: &str,
        container: &Container,
        ips: &[String],
    ) -> Result<(), RuntimeError> {
        let outcome = match hooks::hook(container, HookKind::PostStart) {
            Ok(None) => return Ok(()),
            Ok(Some(hook)) => {
                hooks::run(&hook, pod_ip(ips), POST_START_LIMIT, |command, timeout| {
                    self.exec_hook(id, command, timeout)
                })
                .await
            }
            Err(invalid) => Err(invalid),
        };
        let Err(message) = outcome else {
            return Ok(());
        };
        self.events
            .emit(pod, PodEvent::failed_hook(name, true, &message));
        let grace = Duration::from_secs(u64::try_from(spec::grace_seconds(pod)).unwrap_or(0));
        let _ = self.stop_container(id, grace).await;
        Err(RuntimeError {
            operation: format!("PostStartHook {name}"),
            message,
            waiting_reason: Some("PostStartHookError"),
        })
    }

    /// Stops a running container: its `preStop` hook first, within the grace period, then the
    /// stop with what is left of it (at least 2 s, as upstream).
    async fn stop_gracefully(
        &self,
        pod: &Pod,
        observed: &ObservedPod,
        container: &ObservedContainer,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        let mut grace = grace;
        let hook = spec::find_container(pod, &container.name)
            .filter(|_| container.is_running())
            .map(|c| hooks::hook(c.spec, HookKind::PreStop));
        if let Some(hook) = hook {
            let started = std::time::Instant::now();
            let ips = observed
                .current_sandbox()
                .map(|s| s.ips.as_slice())
                .unwrap_or_default();
            let outcome = match hook {
                Ok(None) => Ok(()),
                Ok(Some(hook)) => {
                    hooks::run(&hook, pod_ip(ips), grace, |command, timeout| {
                        self.exec_hook(&container.id, command, timeout)
                    })
                    .await
                }
                Err(invalid) => Err(invalid),
            };
            if let Err(message) = outcome {
                self.events
                    .emit(pod, PodEvent::failed_hook(&container.name, false, &message));
            }
            grace = hooks::grace_after_pre_stop(grace, started.elapsed());
        }
        self.stop_container(&container.id, grace).await
    }

    /// A hook's exec: the probe's, with its errors as text.
    async fn exec_hook(
        &self,
        id: &str,
        command: Vec<String>,
        timeout: Duration,
    ) -> Result<RunResult, String> {
        self.exec_probe(id, &command, timeout)
            .await
            .map_err(|e| e.to_string())
    }

    /// Images are expected to be present (imported from archives); a missing one is pulled.
    async fn ensure_image(&self, pod: &Pod, name: &str, image: &str) -> Result<(), RuntimeError> {
        let spec = kwk_cri::image_spec(image);
        let present = self
            .cri
            .image_status(image)
            .await
            .map_err(|e| cri_error(&format!("ImageStatus {image}"), &e, None))?
            .is_some();
        if present {
            self.events
                .emit(pod, PodEvent::already_present(name, image));
            return Ok(());
        }
        self.events.emit(pod, PodEvent::pulling(name, image));
        let started = std::time::Instant::now();
        self.cri.pull_image(spec, None, None).await.map_err(|e| {
            cri_error(
                &format!("PullImage {image} for {name}"),
                &e,
                Some("ErrImagePull"),
            )
        })?;
        let seconds = started.elapsed().as_secs_f64();
        self.events
            .emit(pod, PodEvent::pulled(name, image, seconds));
        Ok(())
    }

    /// Stops app containers together, then sidecars in reverse start order, then the rest,
    /// then every ready sandbox.
    async fn kill_pod(&self, pod: &Pod, observed: &ObservedPod) -> Result<(), RuntimeError> {
        let grace = Duration::from_secs(u64::try_from(spec::grace_seconds(pod)).unwrap_or(0));
        let live: Vec<&ObservedContainer> = observed
            .containers
            .iter()
            .filter(|c| {
                matches!(
                    c.state,
                    InstanceState::Running | InstanceState::Unknown | InstanceState::Created
                )
            })
            .collect();
        for c in &live {
            self.events.emit(pod, PodEvent::killing(&c.name));
        }
        let apps: Vec<&ObservedContainer> = live
            .iter()
            .copied()
            .filter(|c| c.kind == ContainerKind::App)
            .collect();
        let results = join_all(
            apps.iter()
                .map(|c| self.stop_gracefully(pod, observed, c, grace)),
        )
        .await;
        results.into_iter().collect::<Result<Vec<()>, _>>()?;
        // Sidecars: newest first is reverse start order.
        let mut rest: Vec<&ObservedContainer> = live
            .iter()
            .copied()
            .filter(|c| c.kind != ContainerKind::App)
            .collect();
        rest.sort_by_key(|c| std::cmp::Reverse(c.created_at));
        for c in rest {
            self.stop_gracefully(pod, observed, c, grace).await?;
        }
        for s in observed.sandboxes.iter().filter(|s| s.ready) {
            self.cri
                .stop_pod_sandbox(&s.id)
                .await
                .map_err(|e| cri_error("StopPodSandbox", &e, None))?;
        }
        Ok(())
    }

    /// Sandboxes and containers carrying all the given labels.
    async fn list_labelled(
        &self,
        labels: &[(&str, &str)],
    ) -> Result<(Vec<api::PodSandbox>, Vec<api::Container>), RuntimeError> {
        let selector: HashMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let sandboxes = self
            .cri
            .list_pod_sandbox(Some(api::PodSandboxFilter {
                label_selector: selector.clone(),
                ..Default::default()
            }))
            .await
            .map_err(|e| cri_error("ListPodSandbox", &e, None))?;
        let containers = self
            .cri
            .list_containers(Some(api::ContainerFilter {
                label_selector: selector,
                ..Default::default()
            }))
            .await
            .map_err(|e| cri_error("ListContainers", &e, None))?;
        Ok((sandboxes, containers))
    }

    async fn stop_container(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        match self.cri.stop_container(id, grace).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(cri_error("StopContainer", &e, None)),
        }
    }
}

impl<S: PodSetup> PodRuntime for CriPodRuntime<S> {
    async fn observe(&self, uid: &str) -> Result<ObservedPod, RuntimeError> {
        let (sandboxes, containers) = self
            .list_labelled(&[(labels::POD_UID, uid), (labels::MANAGED, "true")])
            .await?;

        let mut observed_sandboxes = Vec::with_capacity(sandboxes.len());
        for s in &sandboxes {
            let ready = s.state == api::PodSandboxState::SandboxReady as i32;
            let ips = if ready {
                match self.cri.pod_sandbox_status(&s.id, false).await {
                    Ok(v) => sandbox_ips(&v.status),
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(cri_error("PodSandboxStatus", &e, None)),
                }
            } else {
                Vec::new()
            };
            observed_sandboxes.push(observed_sandbox(s, ips));
        }
        let statuses = join_all(
            containers
                .iter()
                .map(|c| self.cri.container_status(&c.id, false)),
        )
        .await;
        let mut observed_containers = Vec::with_capacity(containers.len());
        for (c, status) in containers.iter().zip(statuses) {
            let status = match status {
                Ok(v) => v.status,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(cri_error("ContainerStatus", &e, None)),
            };
            if let Some(mut oc) = observed_container(&c.pod_sandbox_id, &status) {
                let from_file = match &oc.state {
                    InstanceState::Exited { .. } => self.setup.termination_message(&oc),
                    _ => None,
                };
                if let (InstanceState::Exited { message, .. }, Some(m)) = (&mut oc.state, from_file)
                {
                    *message = m;
                }
                observed_containers.push(oc);
            }
        }
        Ok(ObservedPod::new(observed_sandboxes, observed_containers))
    }

    async fn execute(
        &self,
        pod: &Pod,
        observed: &ObservedPod,
        state: &mut ExecState,
        action: &Action,
    ) -> Result<(), RuntimeError> {
        match action {
            Action::KillPod => {
                self.kill_pod(pod, observed).await?;
                state.sandbox = None;
                state.sandbox_config = None;
                Ok(())
            }
            Action::CreateSandbox { attempt } => self.create_sandbox(pod, *attempt, state).await,
            Action::StartContainer {
                name,
                kind,
                restart_count,
            } => {
                self.start_container(pod, state, name, *kind, *restart_count)
                    .await
            }
            Action::StartCreated { id, name } => self.cri.start_container(id).await.map_err(|e| {
                cri_error(
                    &format!("StartContainer {name}"),
                    &e,
                    Some("RunContainerError"),
                )
            }),
            Action::KillContainer { id, name, reason } => {
                let grace_seconds = match reason {
                    KillReason::ProbeFailed {
                        probe,
                        grace_seconds,
                        restart,
                    } => {
                        self.events
                            .emit(pod, PodEvent::killing_unhealthy(name, probe, *restart));
                        grace_seconds.unwrap_or_else(|| spec::grace_seconds(pod))
                    }
                    _ => {
                        self.events.emit(pod, PodEvent::killing(name));
                        spec::grace_seconds(pod)
                    }
                };
                let grace = Duration::from_secs(u64::try_from(grace_seconds).unwrap_or(0));
                match observed.containers.iter().find(|c| &c.id == id) {
                    Some(c) => self.stop_gracefully(pod, observed, c, grace).await,
                    None => self.stop_container(id, grace).await,
                }
            }
            Action::RemoveContainer { id } => match self.cri.remove_container(id).await {
                Err(e) if !e.is_not_found() => Err(cri_error("RemoveContainer", &e, None)),
                _ => Ok(()),
            },
            Action::RemoveSandbox { id } => match self.cri.remove_pod_sandbox(id).await {
                Err(e) if !e.is_not_found() => Err(cri_error("RemovePodSandbox", &e, None)),
                _ => Ok(()),
            },
        }
    }

    async fn cleanup(&self, pod: &Pod) -> Result<(), RuntimeError> {
        self.setup.cleanup(pod).await
    }

    fn active_pods_changed(&self, pods: &[&Pod]) {
        self.setup.active_pods_changed(pods);
    }

    async fn refresh_volumes(&self, pod: &Pod, pod_ips: &[String]) -> Result<(), RuntimeError> {
        self.setup.refresh_volumes(pod, pod_ips).await
    }

    async fn relist(&self) -> Result<Relist, RuntimeError> {
        let (sandboxes, containers) = self.list_labelled(&[(labels::MANAGED, "true")]).await?;
        Ok(pleg::relist(&sandboxes, &containers))
    }

    fn now(&self) -> UnixNanos {
        crate::clock::unix_nanos_now()
    }

    async fn exec_probe(
        &self,
        container_id: &str,
        command: &[String],
        timeout: Duration,
    ) -> Result<RunResult, RuntimeError> {
        match self
            .cri
            .exec_sync(container_id, command.to_vec(), timeout)
            .await
        {
            Ok(reply) if reply.exit_code == 0 => Ok(RunResult::Success),
            Ok(reply) => {
                let mut output = String::from_utf8_lossy(&reply.stdout).into_owned();
                output.push_str(&String::from_utf8_lossy(&reply.stderr));
                Ok(RunResult::Failure(exec_failure_message(
                    output.trim_end(),
                    reply.exit_code,
                )))
            }
            // The runtime killed the command at the timeout (or our deadline passed).
            Err(e) if exec_timed_out(&e) => Ok(RunResult::Failure(format!(
                "command {:?} timed out",
                command.join(" ")
            ))),
            Err(e) => Err(cri_error("ExecSync", &e, None)),
        }
    }
}

/// An exec probe's failure message: its output, as upstream reports it, or the exit status
/// when it printed nothing.
fn exec_failure_message(output: &str, exit_code: i32) -> String {
    if output.is_empty() {
        format!("command exited with status {exit_code}")
    } else {
        output.to_string()
    }
}

/// Whether `ExecSync` failed because the command outlived its timeout.
fn exec_timed_out(err: &CriError) -> bool {
    err.code() == Some(tonic::Code::DeadlineExceeded)
        || err.to_string().contains("timeout")
        || err.to_string().contains("deadline exceeded")
}

/// Upstream's prefix for a pod that waits for the pod network.
const NETWORK_NOT_READY: &str = "network is not ready";

/// How long a `postStart` hook may run (upstream sets no limit; the pod's worker waits for it).
const POST_START_LIMIT: Duration = Duration::from_secs(600);

/// The default host of HTTP hooks: the pod's IP; the node's loopback for hostNetwork pods
/// (their sandbox reports no IP).
fn pod_ip(ips: &[String]) -> &str {
    ips.first().map_or("127.0.0.1", String::as_str)
}

fn sandbox_ips(status: &api::PodSandboxStatus) -> Vec<String> {
    let Some(net) = status.network.as_ref() else {
        return Vec::new();
    };
    std::iter::once(net.ip.clone())
        .chain(net.additional_ips.iter().map(|ip| ip.ip.clone()))
        .filter(|ip| !ip.is_empty())
        .collect()
}

fn cri_error(
    operation: &str,
    err: &CriError,
    waiting_reason: Option<&'static str>,
) -> RuntimeError {
    RuntimeError {
        operation: operation.to_string(),
        message: err.to_string(),
        waiting_reason,
    }
}
