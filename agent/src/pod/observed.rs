//! What the runtime says about one pod: its sandboxes and container instances, decoded from CRI
//! objects and the labels/annotations kwk-node wrote on them. Pure conversions, no I/O.

use std::collections::HashMap;

use kwk_cri::api;

use crate::labels;

/// Nanoseconds since the Unix epoch, the CRI's clock.
pub type UnixNanos = i64;

/// Which part of the pod spec a container instance was created from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ContainerKind {
    /// A regular init container: runs to completion before the next one starts.
    Init,
    /// An init container with `restartPolicy: Always`: keeps running next to the app containers.
    Sidecar,
    /// A container of `spec.containers`.
    App,
}

impl ContainerKind {
    /// The label value written on the container.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Init => "init",
            Self::Sidecar => "sidecar",
            Self::App => "app",
        }
    }

    /// The kind of `container` in `pod` (by name).
    pub fn of(
        pod: &k8s_openapi::api::core::v1::Pod,
        container: &k8s_openapi::api::core::v1::Container,
    ) -> Self {
        let is_init = pod
            .spec
            .as_ref()
            .and_then(|s| s.init_containers.as_ref())
            .is_some_and(|list| list.iter().any(|c| c.name == container.name));
        match (is_init, container.restart_policy.as_deref()) {
            (true, Some("Always")) => Self::Sidecar,
            (true, _) => Self::Init,
            (false, _) => Self::App,
        }
    }

    fn parse(value: &str) -> Option<Self> {
        match value {
            "init" => Some(Self::Init),
            "sidecar" => Some(Self::Sidecar),
            "app" => Some(Self::App),
            _ => None,
        }
    }
}

/// The runtime state of a container instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InstanceState {
    /// Created but never started (e.g. the agent died between create and start).
    Created,
    Running,
    Exited {
        exit_code: i32,
        /// The runtime's reason (`Completed`, `Error`, `OOMKilled`).
        reason: String,
        message: String,
        finished_at: UnixNanos,
    },
    /// The runtime does not know (a lost shim).
    Unknown,
}

/// One container instance of a pod, as created by kwk-node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedContainer {
    pub id: String,
    pub sandbox_id: String,
    pub name: String,
    pub kind: ContainerKind,
    /// Restarts before this instance (0 for the first).
    pub restart_count: u32,
    /// The spec fingerprint this instance was created from.
    pub fingerprint: String,
    pub state: InstanceState,
    pub created_at: UnixNanos,
    /// 0 when never started.
    pub started_at: UnixNanos,
    pub image: String,
    pub image_ref: String,
    /// The host file mounted at the container's `terminationMessagePath`.
    pub termination_message_file: Option<std::path::PathBuf>,
}

impl ObservedContainer {
    /// A running app container with nothing else known (restart 0, no fingerprint or image):
    /// for tests and benchmarks that only need one to exist.
    pub fn running(id: &str, sandbox_id: &str, name: &str) -> Self {
        Self {
            id: id.into(),
            sandbox_id: sandbox_id.into(),
            name: name.into(),
            kind: ContainerKind::App,
            restart_count: 0,
            fingerprint: String::new(),
            state: InstanceState::Running,
            created_at: 0,
            started_at: 0,
            image: String::new(),
            image_ref: String::new(),
            termination_message_file: None,
        }
    }

    pub fn is_running(&self) -> bool {
        self.state == InstanceState::Running
    }

    /// Whether the instance exited with status 0.
    pub fn succeeded(&self) -> bool {
        matches!(self.state, InstanceState::Exited { exit_code: 0, .. })
    }

    pub fn finished_at(&self) -> Option<UnixNanos> {
        match self.state {
            InstanceState::Exited { finished_at, .. } => Some(finished_at),
            _ => None,
        }
    }
}

/// One sandbox of a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedSandbox {
    pub id: String,
    pub attempt: u32,
    pub ready: bool,
    pub created_at: UnixNanos,
    /// Pod IPs, primary first (empty for a stopped sandbox or before the network is up).
    pub ips: Vec<String>,
}

/// Everything the runtime holds for one pod UID.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObservedPod {
    /// Newest first.
    pub sandboxes: Vec<ObservedSandbox>,
    /// Newest first.
    pub containers: Vec<ObservedContainer>,
}

impl ObservedPod {
    /// Builds the view from CRI objects; sorts newest first.
    pub fn new(
        mut sandboxes: Vec<ObservedSandbox>,
        mut containers: Vec<ObservedContainer>,
    ) -> Self {
        sandboxes.sort_by_key(|s| std::cmp::Reverse((s.attempt, s.created_at)));
        containers.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        Self {
            sandboxes,
            containers,
        }
    }

    /// The newest sandbox.
    pub fn current_sandbox(&self) -> Option<&ObservedSandbox> {
        self.sandboxes.first()
    }

    /// Instances of the named container, newest first, in any sandbox.
    pub fn instances<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = &'a ObservedContainer> + 'a {
        self.containers.iter().filter(move |c| c.name == name)
    }

    /// The newest instance of the named container in the given sandbox.
    pub fn latest_in(&self, sandbox_id: &str, name: &str) -> Option<&ObservedContainer> {
        self.containers
            .iter()
            .find(|c| c.name == name && c.sandbox_id == sandbox_id)
    }

    /// The restart count the next instance of `name` gets: one more than the newest instance's.
    pub fn next_restart_count(&self, name: &str) -> u32 {
        self.instances(name)
            .map(|c| c.restart_count.saturating_add(1))
            .max()
            .unwrap_or(0)
    }

    pub fn running_containers(&self) -> impl Iterator<Item = &ObservedContainer> {
        self.containers
            .iter()
            .filter(|c| matches!(c.state, InstanceState::Running | InstanceState::Unknown))
    }

    pub fn is_empty(&self) -> bool {
        self.sandboxes.is_empty() && self.containers.is_empty()
    }
}

/// Identity of a pod as written on its sandbox labels (for pods no source knows any more).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxIdentity {
    pub uid: String,
    pub name: String,
    pub namespace: String,
}

/// Reads the identity labels of a sandbox kwk-node created; `None` for anything else.
pub fn sandbox_identity(labels: &HashMap<String, String>) -> Option<SandboxIdentity> {
    if labels.get(labels::MANAGED).map(String::as_str) != Some("true") {
        return None;
    }
    Some(SandboxIdentity {
        uid: labels.get(labels::POD_UID)?.clone(),
        name: labels.get(labels::POD_NAME).cloned().unwrap_or_default(),
        namespace: labels
            .get(labels::POD_NAMESPACE)
            .cloned()
            .unwrap_or_default(),
    })
}

/// Decodes a listed sandbox; `ips` come from its status.
pub fn observed_sandbox(sandbox: &api::PodSandbox, ips: Vec<String>) -> ObservedSandbox {
    ObservedSandbox {
        id: sandbox.id.clone(),
        attempt: sandbox.metadata.as_ref().map_or(0, |m| m.attempt),
        ready: sandbox.state == api::PodSandboxState::SandboxReady as i32,
        created_at: sandbox.created_at,
        ips,
    }
}

/// Decodes a container's status; `None` when it is not a container kwk-node created.
pub fn observed_container(
    sandbox_id: &str,
    status: &api::ContainerStatus,
) -> Option<ObservedContainer> {
    if status.labels.get(labels::MANAGED).map(String::as_str) != Some("true") {
        return None;
    }
    let name = status
        .labels
        .get(labels::CONTAINER_NAME)
        .cloned()
        .or_else(|| status.metadata.as_ref().map(|m| m.name.clone()))?;
    let kind = status
        .labels
        .get(labels::CONTAINER_KIND)
        .and_then(|k| ContainerKind::parse(k))
        .unwrap_or(ContainerKind::App);
    let restart_count = status
        .annotations
        .get(labels::RESTART_COUNT)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let state = match api::ContainerState::try_from(status.state) {
        Ok(api::ContainerState::ContainerCreated) => InstanceState::Created,
        Ok(api::ContainerState::ContainerRunning) => InstanceState::Running,
        Ok(api::ContainerState::ContainerExited) => InstanceState::Exited {
            exit_code: status.exit_code,
            reason: status.reason.clone(),
            message: status.message.clone(),
            finished_at: status.finished_at,
        },
        _ => InstanceState::Unknown,
    };
    Some(ObservedContainer {
        id: status.id.clone(),
        sandbox_id: sandbox_id.to_string(),
        name,
        kind,
        restart_count,
        fingerprint: status
            .annotations
            .get(labels::CONTAINER_FINGERPRINT)
            .cloned()
            .unwrap_or_default(),
        state,
        created_at: status.created_at,
        started_at: status.started_at,
        image: status
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default(),
        image_ref: status.image_ref.clone(),
        termination_message_file: status
            .annotations
            .get(labels::TERMINATION_MESSAGE_PATH)
            .and_then(|path| status.mounts.iter().find(|m| &m.container_path == path))
            .map(|m| std::path::PathBuf::from(&m.host_path)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn managed(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        let mut m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        m.insert(labels::MANAGED.into(), "true".into());
        m
    }

    #[test]
    fn containers_we_did_not_create_are_ignored() {
        let status = api::ContainerStatus {
            id: "c1".into(),
            ..Default::default()
        };
        assert_eq!(observed_container("s", &status), None);
        assert_eq!(sandbox_identity(&HashMap::new()), None);
    }

    #[test]
    fn labels_and_annotations_are_decoded() {
        let status = api::ContainerStatus {
            id: "c1".into(),
            state: api::ContainerState::ContainerExited as i32,
            exit_code: 137,
            reason: "OOMKilled".into(),
            finished_at: 42,
            labels: managed(&[
                (labels::CONTAINER_NAME, "web"),
                (labels::CONTAINER_KIND, "sidecar"),
            ]),
            annotations: managed(&[
                (labels::RESTART_COUNT, "3"),
                (labels::CONTAINER_FINGERPRINT, "v1:abc"),
            ]),
            ..Default::default()
        };
        let c = observed_container("s1", &status).unwrap();
        assert_eq!(c.name, "web");
        assert_eq!(c.kind, ContainerKind::Sidecar);
        assert_eq!(c.restart_count, 3);
        assert_eq!(c.fingerprint, "v1:abc");
        assert_eq!(c.finished_at(), Some(42));
        assert!(!c.succeeded());
    }

    #[test]
    fn next_restart_count_follows_the_newest_instance() {
        let inst = |id: &str, created_at, restart_count| ObservedContainer {
            created_at,
            restart_count,
            ..ObservedContainer::running(id, "s", "web")
        };
        let pod = ObservedPod::new(vec![], vec![inst("a", 1, 0), inst("b", 2, 1)]);
        assert_eq!(pod.containers[0].id, "b");
        assert_eq!(pod.next_restart_count("web"), 2);
        assert_eq!(pod.next_restart_count("other"), 0);
    }
}
