//! The event recorder: the pod events the worker and the runtime queue in their
//! [`EventSink`](crate::pod::events::EventSink) become core/v1 Events in the API (source
//! component `kubelet`, host = this node; involved object the pod, with the container's field
//! path). An event the apiserver does not take is retried once and then dropped: events are
//! best effort, as upstream's recorder (which gives up after a few tries).

use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::pod::events::RecordedEvent;
use crate::pod::spec;

/// The component events are recorded as (`source.component`, `reportingComponent`).
pub const COMPONENT: &str = "kubelet";

/// Posts queued events until `cancel` or the queue closes.
pub(super) async fn run(
    client: kube::Client,
    node_name: String,
    mut queue: mpsc::Receiver<RecordedEvent>,
    cancel: CancellationToken,
) {
    loop {
        let recorded = tokio::select! {
            () = cancel.cancelled() => return,
            r = queue.recv() => match r {
                Some(r) => r,
                None => return,
            },
        };
        let event = event_object(&recorded, &node_name, Timestamp::now());
        let namespace = spec::namespace(&recorded.pod).to_string();
        let api: Api<Event> = Api::namespaced(client.clone(), &namespace);
        for attempt in 0..2 {
            match api.create(&PostParams::default(), &event).await {
                Ok(_) => break,
                Err(err) if attempt == 0 => {
                    tracing::debug!(%err, reason = event.reason.as_deref(), "recording event; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(err) => {
                    tracing::debug!(%err, reason = event.reason.as_deref(), "event dropped");
                }
            }
        }
    }
}

/// The core/v1 Event for `recorded`, seen by node `node_name` at `now`.
pub fn event_object(recorded: &RecordedEvent, node_name: &str, now: Timestamp) -> Event {
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
            };
            let e = event_object(&recorded, "n1", now);
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
