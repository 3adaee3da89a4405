//! Pod events as the kubelet records them (reasons and messages verbatim from upstream), and
//! the [`EventSink`] the worker and the runtime hand them to. The sink never blocks: events go
//! into a bounded queue that a recorder (with an apiserver, `api_pods::events`) drains; when
//! the queue is full or nobody drains it they are dropped, as upstream's broadcaster does.

use std::borrow::Cow;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use tokio::sync::mpsc;

/// How many events may wait for the recorder.
const QUEUE: usize = 1024;

/// `Normal` or `Warning`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "Normal",
            Self::Warning => "Warning",
        }
    }
}

/// One event about a pod (or one of its containers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodEvent {
    pub type_: EventType,
    /// Upstream's reason (most are fixed; admission's `OutOf<resource>` is built).
    pub reason: Cow<'static, str>,
    pub message: String,
    /// The container, for `involvedObject.fieldPath` (`spec.containers{<name>}`).
    pub container: Option<String>,
}

impl PodEvent {
    fn container(type_: EventType, reason: &'static str, name: &str, message: String) -> Self {
        Self {
            type_,
            reason: Cow::Borrowed(reason),
            message,
            container: Some(name.to_string()),
        }
    }

    /// `Pulling`: the image is being pulled.
    pub fn pulling(container: &str, image: &str) -> Self {
        Self::container(
            EventType::Normal,
            "Pulling",
            container,
            format!("Pulling image \"{image}\""),
        )
    }

    /// `Pulled` after a pull that took `seconds`.
    pub fn pulled(container: &str, image: &str, seconds: f64) -> Self {
        Self::container(
            EventType::Normal,
            "Pulled",
            container,
            format!("Successfully pulled image \"{image}\" in {seconds:.3}s"),
        )
    }

    /// `Pulled` without a pull.
    pub fn already_present(container: &str, image: &str) -> Self {
        Self::container(
            EventType::Normal,
            "Pulled",
            container,
            format!("Container image \"{image}\" already present on machine"),
        )
    }

    pub fn created(container: &str) -> Self {
        Self::container(
            EventType::Normal,
            "Created",
            container,
            format!("Created container: {container}"),
        )
    }

    pub fn started(container: &str) -> Self {
        Self::container(
            EventType::Normal,
            "Started",
            container,
            format!("Started container {container}"),
        )
    }

    /// `Killing`: the container is being stopped.
    pub fn killing(container: &str) -> Self {
        Self::container(
            EventType::Normal,
            "Killing",
            container,
            format!("Stopping container {container}"),
        )
    }

    /// `NetworkNotReady`: the pod's sandbox waits for the runtime's pod network.
    pub fn network_not_ready(message: &str) -> Self {
        Self {
            type_: EventType::Warning,
            reason: Cow::Borrowed("NetworkNotReady"),
            message: message.to_string(),
            container: None,
        }
    }

    /// `Failed`: creating, starting or pulling for the container failed with `error`.
    pub fn failed(container: &str, error: &str) -> Self {
        Self::container(
            EventType::Warning,
            "Failed",
            container,
            format!("Error: {error}"),
        )
    }

    /// `BackOff`: the container waits to be restarted (CrashLoopBackOff).
    pub fn back_off(pod: &Pod, container: &str) -> Self {
        Self::container(
            EventType::Warning,
            "BackOff",
            container,
            format!(
                "Back-off restarting failed container {container} in pod {}",
                pod_ref(pod)
            ),
        )
    }

    /// `Unhealthy`: a probe of the container failed (`kind`: `Liveness`, ...).
    pub fn unhealthy(container: &str, kind: &str, message: &str) -> Self {
        Self::container(
            EventType::Warning,
            "Unhealthy",
            container,
            format!("{kind} probe failed: {message}"),
        )
    }

    /// `Killing` for a container whose liveness or startup probe failed (`probe`: `liveness`,
    /// `startup`); `restart`: whether the restart policy brings it back.
    pub fn killing_unhealthy(container: &str, probe: &str, restart: bool) -> Self {
        let then = if restart { ", will be restarted" } else { "" };
        Self::container(
            EventType::Normal,
            "Killing",
            container,
            format!("Container {container} failed {probe} probe{then}"),
        )
    }

    /// `FailedPostStartHook` / `FailedPreStopHook`: a lifecycle hook failed with `message`.
    pub fn failed_hook(container: &str, post_start: bool, message: &str) -> Self {
        let reason = if post_start {
            "FailedPostStartHook"
        } else {
            "FailedPreStopHook"
        };
        Self::container(EventType::Warning, reason, container, message.to_string())
    }

    /// `FailedMount`: a volume of the pod cannot be set up.
    pub fn failed_mount(message: String) -> Self {
        Self {
            type_: EventType::Warning,
            reason: Cow::Borrowed("FailedMount"),
            message,
            container: None,
        }
    }

    /// A pod not admitted on the node (`OutOfcpu`, `NodeAffinity`, ...): a Warning with the
    /// admission's reason and message, as upstream's `rejectPod`.
    pub fn rejected(reason: Cow<'static, str>, message: String) -> Self {
        Self {
            type_: EventType::Warning,
            reason,
            message,
            container: None,
        }
    }
}

/// The pod as upstream's `format.Pod` writes it: `name_namespace(uid)`.
fn pod_ref(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        super::spec::name(pod),
        super::spec::namespace(pod),
        super::spec::uid(pod)
    )
}

/// An event together with the pod it is about and when it happened.
#[derive(Clone, Debug)]
pub struct RecordedEvent {
    pub pod: Arc<Pod>,
    pub event: PodEvent,
    /// When the event was emitted (its `firstTimestamp`/`lastTimestamp`, even if the
    /// apiserver gets it later).
    pub at: Timestamp,
}

/// Where the worker and the runtime put events. Cheap to clone; the default drops everything.
#[derive(Clone, Debug, Default)]
pub struct EventSink {
    tx: Option<mpsc::Sender<RecordedEvent>>,
}

impl EventSink {
    /// A sink and the queue its events arrive in.
    pub fn channel() -> (Self, mpsc::Receiver<RecordedEvent>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (Self { tx: Some(tx) }, rx)
    }

    /// Queues `event` about `pod`; never waits.
    pub fn emit(&self, pod: &Pod, event: PodEvent) {
        tracing::debug!(pod = %super::spec::name(pod), reason = %event.reason, message = %event.message, "event");
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(RecordedEvent {
                pod: Arc::new(pod.clone()),
                event,
                at: Timestamp::now(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_as_upstream_writes_them() {
        let mut pod = Pod::default();
        pod.metadata.name = Some("web".into());
        pod.metadata.namespace = Some("default".into());
        pod.metadata.uid = Some("u1".into());
        let cases = [
            (
                PodEvent::pulling("c", "busybox:1"),
                "Pulling",
                "Pulling image \"busybox:1\"",
            ),
            (
                PodEvent::already_present("c", "busybox:1"),
                "Pulled",
                "Container image \"busybox:1\" already present on machine",
            ),
            (PodEvent::created("c"), "Created", "Created container: c"),
            (PodEvent::started("c"), "Started", "Started container c"),
            (PodEvent::killing("c"), "Killing", "Stopping container c"),
            (PodEvent::failed("c", "boom"), "Failed", "Error: boom"),
            (
                PodEvent::unhealthy("c", "Liveness", "HTTP probe failed with statuscode: 500"),
                "Unhealthy",
                "Liveness probe failed: HTTP probe failed with statuscode: 500",
            ),
            (
                PodEvent::killing_unhealthy("c", "liveness", true),
                "Killing",
                "Container c failed liveness probe, will be restarted",
            ),
            (
                PodEvent::back_off(&pod, "c"),
                "BackOff",
                "Back-off restarting failed container c in pod web_default(u1)",
            ),
        ];
        for (event, reason, message) in cases {
            assert_eq!(
                (event.reason.as_ref(), event.message.as_str()),
                (reason, message)
            );
        }
        assert_eq!(PodEvent::back_off(&pod, "c").type_, EventType::Warning);
    }

    #[tokio::test]
    async fn the_sink_queues_without_waiting_and_the_default_drops() {
        let pod = Pod::default();
        EventSink::default().emit(&pod, PodEvent::started("c"));
        let (sink, mut rx) = EventSink::channel();
        sink.emit(&pod, PodEvent::started("c"));
        let got = rx.recv().await.unwrap();
        assert_eq!(got.event.reason, "Started");
    }
}
