//! CRI `RuntimeService` calls: sandboxes, containers, streaming URLs and stats.

use std::time::Duration;

use k8s_cri::v1 as api;

use crate::CriError;
use crate::client::{CriClient, Verbose, request, required, required_id, unary};

/// The CRI API version this client speaks, as sent in `VersionRequest`.
pub const CRI_API_VERSION: &str = "v1";

impl CriClient {
    pub async fn version(&self) -> Result<api::VersionResponse, CriError> {
        let t = self.timeouts.default;
        let msg = api::VersionRequest {
            version: CRI_API_VERSION.into(),
        };
        unary("Version", t, self.runtime.clone().version(request(msg, t))).await
    }

    /// The runtime's conditions (`RuntimeReady`, `NetworkReady`).
    pub async fn status(&self, verbose: bool) -> Result<Verbose<api::RuntimeStatus>, CriError> {
        let t = self.timeouts.default;
        let msg = api::StatusRequest { verbose };
        let reply = unary("Status", t, self.runtime.clone().status(request(msg, t))).await?;
        Ok(Verbose {
            status: required(reply.status, "Status", "status")?,
            info: reply.info,
        })
    }

    /// Creates and starts a sandbox; returns its ID.
    pub async fn run_pod_sandbox(
        &self,
        config: api::PodSandboxConfig,
        runtime_handler: &str,
    ) -> Result<String, CriError> {
        let t = self.timeouts.default;
        let msg = api::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: runtime_handler.into(),
        };
        let reply = unary(
            "RunPodSandbox",
            t,
            self.runtime.clone().run_pod_sandbox(request(msg, t)),
        )
        .await?;
        required_id(reply.pod_sandbox_id, "RunPodSandbox", "pod_sandbox_id")
    }

    /// Stops every container of the sandbox and tears down its network. Idempotent.
    pub async fn stop_pod_sandbox(&self, pod_sandbox_id: &str) -> Result<(), CriError> {
        let t = self.timeouts.default;
        let msg = api::StopPodSandboxRequest {
            pod_sandbox_id: pod_sandbox_id.into(),
        };
        unary(
            "StopPodSandbox",
            t,
            self.runtime.clone().stop_pod_sandbox(request(msg, t)),
        )
        .await?;
        Ok(())
    }

    /// Removes a stopped sandbox and its containers. Idempotent.
    pub async fn remove_pod_sandbox(&self, pod_sandbox_id: &str) -> Result<(), CriError> {
        let t = self.timeouts.default;
        let msg = api::RemovePodSandboxRequest {
            pod_sandbox_id: pod_sandbox_id.into(),
        };
        let mut runtime = self.runtime.clone();
        let call = runtime.remove_pod_sandbox(request(msg, t));
        unary("RemovePodSandbox", t, call).await?;
        Ok(())
    }

    pub async fn pod_sandbox_status(
        &self,
        pod_sandbox_id: &str,
        verbose: bool,
    ) -> Result<Verbose<api::PodSandboxStatus>, CriError> {
        let t = self.timeouts.default;
        let msg = api::PodSandboxStatusRequest {
            pod_sandbox_id: pod_sandbox_id.into(),
            verbose,
        };
        let mut runtime = self.runtime.clone();
        let call = runtime.pod_sandbox_status(request(msg, t));
        let reply = unary("PodSandboxStatus", t, call).await?;
        Ok(Verbose {
            status: required(reply.status, "PodSandboxStatus", "status")?,
            info: reply.info,
        })
    }

    pub async fn list_pod_sandbox(
        &self,
        filter: Option<api::PodSandboxFilter>,
    ) -> Result<Vec<api::PodSandbox>, CriError> {
        let t = self.timeouts.default;
        let msg = api::ListPodSandboxRequest { filter };
        let reply = unary(
            "ListPodSandbox",
            t,
            self.runtime.clone().list_pod_sandbox(request(msg, t)),
        )
        .await?;
        Ok(reply.items)
    }

    /// Creates a container in a sandbox; returns its ID.
    pub async fn create_container(
        &self,
        pod_sandbox_id: &str,
        config: api::ContainerConfig,
        sandbox_config: api::PodSandboxConfig,
    ) -> Result<String, CriError> {
        let t = self.timeouts.default;
        let msg = api::CreateContainerRequest {
            pod_sandbox_id: pod_sandbox_id.into(),
            config: Some(config),
            sandbox_config: Some(sandbox_config),
        };
        let mut runtime = self.runtime.clone();
        let call = runtime.create_container(request(msg, t));
        let reply = unary("CreateContainer", t, call).await?;
        required_id(reply.container_id, "CreateContainer", "container_id")
    }

    pub async fn start_container(&self, container_id: &str) -> Result<(), CriError> {
        let t = self.timeouts.default;
        let msg = api::StartContainerRequest {
            container_id: container_id.into(),
        };
        unary(
            "StartContainer",
            t,
            self.runtime.clone().start_container(request(msg, t)),
        )
        .await?;
        Ok(())
    }

    /// Signals the container to stop and kills it after `grace`; the call's deadline is the
    /// grace period plus the default timeout, so a slow stop is not reported as a failure.
    pub async fn stop_container(
        &self,
        container_id: &str,
        grace: Duration,
    ) -> Result<(), CriError> {
        let t = self.timeouts.default + grace;
        let msg = api::StopContainerRequest {
            container_id: container_id.into(),
            timeout: i64::try_from(grace.as_secs()).unwrap_or(i64::MAX),
        };
        unary(
            "StopContainer",
            t,
            self.runtime.clone().stop_container(request(msg, t)),
        )
        .await?;
        Ok(())
    }

    pub async fn remove_container(&self, container_id: &str) -> Result<(), CriError> {
        let t = self.timeouts.default;
        let msg = api::RemoveContainerRequest {
            container_id: container_id.into(),
        };
        unary(
            "RemoveContainer",
            t,
            self.runtime.clone().remove_container(request(msg, t)),
        )
        .await?;
        Ok(())
    }

    pub async fn list_containers(
        &self,
        filter: Option<api::ContainerFilter>,
    ) -> Result<Vec<api::Container>, CriError> {
        let t = self.timeouts.default;
        let msg = api::ListContainersRequest { filter };
        let reply = unary(
            "ListContainers",
            t,
            self.runtime.clone().list_containers(request(msg, t)),
        )
        .await?;
        Ok(reply.containers)
    }

    pub async fn container_status(
        &self,
        container_id: &str,
        verbose: bool,
    ) -> Result<Verbose<api::ContainerStatus>, CriError> {
        let t = self.timeouts.default;
        let msg = api::ContainerStatusRequest {
            container_id: container_id.into(),
            verbose,
        };
        let mut runtime = self.runtime.clone();
        let call = runtime.container_status(request(msg, t));
        let reply = unary("ContainerStatus", t, call).await?;
        Ok(Verbose {
            status: required(reply.status, "ContainerStatus", "status")?,
            info: reply.info,
        })
    }

    pub async fn update_container_resources(
        &self,
        container_id: &str,
        linux: api::LinuxContainerResources,
    ) -> Result<(), CriError> {
        let t = self.timeouts.default;
        let msg = api::UpdateContainerResourcesRequest {
            container_id: container_id.into(),
            linux: Some(linux),
            ..Default::default()
        };
        let mut runtime = self.runtime.clone();
        let call = runtime.update_container_resources(request(msg, t));
        unary("UpdateContainerResources", t, call).await?;
        Ok(())
    }

    /// Asks the runtime to reopen the container's log file (after log rotation).
    pub async fn reopen_container_log(&self, container_id: &str) -> Result<(), CriError> {
        let t = self.timeouts.default;
        let msg = api::ReopenContainerLogRequest {
            container_id: container_id.into(),
        };
        let mut runtime = self.runtime.clone();
        let call = runtime.reopen_container_log(request(msg, t));
        unary("ReopenContainerLog", t, call).await?;
        Ok(())
    }

    /// Runs `cmd` in the container and collects its output. `timeout` bounds the command (zero:
    /// none); the call's deadline is that plus the default timeout.
    pub async fn exec_sync(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<api::ExecSyncResponse, CriError> {
        let t = self.timeouts.default + timeout;
        let msg = api::ExecSyncRequest {
            container_id: container_id.into(),
            cmd,
            timeout: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
        };
        unary(
            "ExecSync",
            t,
            self.runtime.clone().exec_sync(request(msg, t)),
        )
        .await
    }

    /// Prepares a streaming exec; returns the URL the client (or the kubelet) connects to.
    pub async fn exec(&self, exec: api::ExecRequest) -> Result<String, CriError> {
        let t = self.timeouts.default;
        let reply = unary("Exec", t, self.runtime.clone().exec(request(exec, t))).await?;
        required_id(reply.url, "Exec", "url")
    }

    /// Prepares a streaming attach; returns its URL.
    pub async fn attach(&self, attach: api::AttachRequest) -> Result<String, CriError> {
        let t = self.timeouts.default;
        let reply = unary("Attach", t, self.runtime.clone().attach(request(attach, t))).await?;
        required_id(reply.url, "Attach", "url")
    }

    /// Prepares a port forward into the sandbox; returns its URL.
    pub async fn port_forward(
        &self,
        pod_sandbox_id: &str,
        ports: Vec<i32>,
    ) -> Result<String, CriError> {
        let t = self.timeouts.default;
        let msg = api::PortForwardRequest {
            pod_sandbox_id: pod_sandbox_id.into(),
            port: ports,
        };
        let reply = unary(
            "PortForward",
            t,
            self.runtime.clone().port_forward(request(msg, t)),
        )
        .await?;
        required_id(reply.url, "PortForward", "url")
    }

    pub async fn container_stats(
        &self,
        container_id: &str,
    ) -> Result<api::ContainerStats, CriError> {
        let t = self.timeouts.default;
        let msg = api::ContainerStatsRequest {
            container_id: container_id.into(),
        };
        let reply = unary(
            "ContainerStats",
            t,
            self.runtime.clone().container_stats(request(msg, t)),
        )
        .await?;
        required(reply.stats, "ContainerStats", "stats")
    }

    pub async fn list_container_stats(
        &self,
        filter: Option<api::ContainerStatsFilter>,
    ) -> Result<Vec<api::ContainerStats>, CriError> {
        let t = self.timeouts.default;
        let msg = api::ListContainerStatsRequest { filter };
        let mut runtime = self.runtime.clone();
        let call = runtime.list_container_stats(request(msg, t));
        Ok(unary("ListContainerStats", t, call).await?.stats)
    }

    pub async fn pod_sandbox_stats(
        &self,
        pod_sandbox_id: &str,
    ) -> Result<api::PodSandboxStats, CriError> {
        let t = self.timeouts.default;
        let msg = api::PodSandboxStatsRequest {
            pod_sandbox_id: pod_sandbox_id.into(),
        };
        let mut runtime = self.runtime.clone();
        let call = runtime.pod_sandbox_stats(request(msg, t));
        required(
            unary("PodSandboxStats", t, call).await?.stats,
            "PodSandboxStats",
            "stats",
        )
    }

    pub async fn list_pod_sandbox_stats(
        &self,
        filter: Option<api::PodSandboxStatsFilter>,
    ) -> Result<Vec<api::PodSandboxStats>, CriError> {
        let t = self.timeouts.default;
        let msg = api::ListPodSandboxStatsRequest { filter };
        let mut runtime = self.runtime.clone();
        let call = runtime.list_pod_sandbox_stats(request(msg, t));
        Ok(unary("ListPodSandboxStats", t, call).await?.stats)
    }
}
