//! The event recorder: the pod events the worker and the runtime queue in their
//! [`EventSink`](crate::pod::events::EventSink) become core/v1 Events in the API (source
//! component `kubelet`, host = this node; involved object the pod, with the container's field
//! path), as upstream's `record` package does:
//!
//! - `correlate`: a repeat of an event recorded before patches that Event (`count` + 1,
//!   `lastTimestamp`) instead of creating another one; a patch that finds the Event expired
//!   (404) creates it again.
//! - `retry`: while the apiserver cannot be reached or answers 429/5xx, events wait (in order,
//!   at most 1,024, the oldest dropped first) and the head is retried with a back-off from
//!   0.5 s to 10 s; an event the apiserver refuses (other 4xx) is dropped at once.
//!
//! The executor here only sends what those decide.

mod correlate;
mod retry;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::pod::events::RecordedEvent;
use crate::pod::spec;
use correlate::{EventCache, Request, correlate, update_state};
use retry::{Failure, Next, Sent, Waiting, after_failure, next_delay};

/// The component events are recorded as (`source.component`, `reportingComponent`).
pub const COMPONENT: &str = "kubelet";

/// Records queued events in the API until `cancel`, or until the queue is closed and every
/// waiting event has been sent or dropped.
pub async fn run(
    client: kube::Client,
    node_name: String,
    mut queue: mpsc::Receiver<RecordedEvent>,
    cancel: CancellationToken,
) {
    let mut cache = EventCache::default();
    let mut waiting = Waiting::default();
    let mut open = true;
    loop {
        let Some(recorded) = waiting.pop() else {
            if !open {
                return;
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                r = queue.recv() => match r {
                    Some(r) => { let _ = waiting.push(r); }
                    None => open = false,
                },
            }
            continue;
        };
        let mut request = correlate(&mut cache, event_object(&recorded, &node_name));
        let mut delay = None;
        loop {
            open &= take_queued(&mut queue, &mut waiting);
            let (sent, result) = send(&client, &request).await;
            let failure = match result {
                Ok(recorded) => {
                    update_state(&mut cache, &recorded);
                    break;
                }
                Err(err) => {
                    let failure = Failure::of(&err);
                    tracing::debug!(%err, ?failure, reason = request.event().reason.as_deref(), "recording event");
                    failure
                }
            };
            match after_failure(sent, failure) {
                Next::Retry => {
                    let pause = next_delay(delay);
                    delay = Some(pause);
                    if !pause_taking(pause, &mut queue, &mut waiting, &mut open, &cancel).await {
                        return;
                    }
                }
                Next::CreateInstead => request = request.into_create(),
                Next::AlreadyRecorded => break,
                Next::Drop => {
                    tracing::debug!(
                        reason = request.event().reason.as_deref(),
                        "event refused; dropped"
                    );
                    break;
                }
            }
        }
    }
}

/// Sends `request`; the Event the apiserver now has, or why not.
async fn send(client: &kube::Client, request: &Request) -> (Sent, Result<Event, kube::Error>) {
    let event = request.event();
    let namespace = event.metadata.namespace.as_deref().unwrap_or("default");
    let api: Api<Event> = Api::namespaced(client.clone(), namespace);
    match request {
        Request::Create(event) => (
            Sent::Create,
            api.create(&PostParams::default(), event).await,
        ),
        Request::Patch { event, body } => {
            let name = event.metadata.name.as_deref().unwrap_or_default();
            (
                Sent::Patch,
                api.patch(name, &PatchParams::default(), &Patch::Strategic(body))
                    .await,
            )
        }
    }
}

/// Moves what the sink queued into `waiting` without waiting; false once the queue is closed.
fn take_queued(
    queue: &mut mpsc::Receiver<RecordedEvent>,
    waiting: &mut Waiting<RecordedEvent>,
) -> bool {
    loop {
        match queue.try_recv() {
            Ok(r) => keep(waiting, r),
            Err(mpsc::error::TryRecvError::Empty) => return true,
            Err(mpsc::error::TryRecvError::Disconnected) => return false,
        }
    }
}

fn keep(waiting: &mut Waiting<RecordedEvent>, recorded: RecordedEvent) {
    if let Some(dropped) = waiting.push(recorded) {
        tracing::debug!(
            pod = %spec::name(&dropped.pod),
            reason = %dropped.event.reason,
            "too many events waiting for the apiserver; the oldest dropped"
        );
    }
}

/// Waits `pause`, taking queued events meanwhile; false on `cancel`.
async fn pause_taking(
    pause: Duration,
    queue: &mut mpsc::Receiver<RecordedEvent>,
    waiting: &mut Waiting<RecordedEvent>,
    open: &mut bool,
    cancel: &CancellationToken,
) -> bool {
    let until = tokio::time::Instant::now() + pause;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return false,
            () = tokio::time::sleep_until(until) => return true,
            r = queue.recv(), if *open => match r {
                Some(r) => keep(waiting, r),
                None => *open = false,
            },
        }
    }
}

/// The core/v1 Event for `recorded` (a first occurrence), seen by node `node_name`.
pub fn event_object(recorded: &RecordedEvent, node_name: &str) -> Event {
    let now = recorded.at;
    let pod = &recorded.pod;
    let event = &recorded.event;
    let name = spec::name(pod);
    let nanos = now.as_nanosecond();
    let mut out = Event {
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(name.to_string()),
            namespace: Some(spec::namespace(pod).to_string()),
            uid: Some(spec::uid(pod).to_string()),
            field_path: event.container.as_deref().map(|c| field_path(pod, c)),
            ..ObjectReference::default()
        },
        reason: Some(event.reason.to_string()),
        message: Some(event.message.clone()),
        type_: Some(event.type_.as_str().to_string()),
        source: Some(EventSource {
            component: Some(COMPONENT.into()),
            host: Some(node_name.to_string()),
        }),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        event_time: None::<MicroTime>,
        count: Some(1),
        reporting_component: Some(COMPONENT.into()),
        reporting_instance: Some(node_name.to_string()),
        ..Event::default()
    };
    out.metadata.name = Some(format!("{name}.{nanos:x}"));
    out.metadata.namespace = Some(spec::namespace(pod).to_string());
    out
}

/// `spec.containers{name}`, `spec.initContainers{name}` or `spec.ephemeralContainers{name}`.
fn field_path(pod: &Pod, container: &str) -> String {
    let spec = pod.spec.as_ref();
    let is_init = spec
        .and_then(|s| s.init_containers.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.name == container));
    let is_ephemeral = spec
        .and_then(|s| s.ephemeral_containers.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.name == container));
    let list = if is_init {
        "initContainers"
    } else if is_ephemeral {
        "ephemeralContainers"
    } else {
        "containers"
    };
    format!("spec.{list}{{{container}}}")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::{Container, PodSpec};

    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::pod::events::PodEvent;

    #[test]
    fn events_name_the_pod_container_and_node() {
        let mut pod = Pod::default();
        pod.metadata.name = Some("web".into());
        pod.metadata.namespace = Some("ns".into());
        pod.metadata.uid = Some("u1".into());
        pod.spec = Some(PodSpec {
            init_containers: Some(vec![Container {
                name: "setup".into(),
                ..Container::default()
            }]),
            containers: vec![Container {
                name: "main".into(),
                ..Container::default()
            }],
            ..PodSpec::default()
        });
        let pod = Arc::new(pod);
        let now = Timestamp::from_nanosecond(1_700_000_000_000_000_005).unwrap();
        let cases = [
            (PodEvent::started("main"), Some("spec.containers{main}")),
            (
                PodEvent::created("setup"),
                Some("spec.initContainers{setup}"),
            ),
            (PodEvent::failed_mount("no volume".into()), None),
        ];
        for (event, path) in cases {
            let recorded = RecordedEvent {
                pod: pod.clone(),
                event: event.clone(),
                at: now,
            };
            let e = event_object(&recorded, "n1");
            assert_eq!(e.involved_object.field_path.as_deref(), path);
            assert_eq!(e.involved_object.uid.as_deref(), Some("u1"));
            assert_eq!(e.involved_object.kind.as_deref(), Some("Pod"));
            assert_eq!(e.metadata.namespace.as_deref(), Some("ns"));
            assert_eq!(e.metadata.name.as_deref(), Some("web.17979cfe362a0005"));
            assert_eq!(e.reason.as_deref(), Some(event.reason.as_ref()));
            let source = e.source.unwrap();
            assert_eq!(
                (source.component.as_deref(), source.host.as_deref()),
                (Some("kubelet"), Some("n1"))
            );
            assert_eq!(e.count, Some(1));
        }
    }
}
