//! The scheduler's writes to the apiserver: the binding, events (events.k8s.io/v1, reported
//! as `default-scheduler` like upstream), the `PodScheduled` condition and nominated node of
//! a pod that does not fit, and the eviction of preemption victims.

use std::sync::atomic::{AtomicU64, Ordering};

use k8s_openapi::api::core::v1::{Pod, PodCondition};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kwk_controllers::action::{EventType, ObjectRef};
use kwk_controllers::runtime::executor::event_body;
use serde_json::{Value, json};

/// `reportingController` of the scheduler's events.
pub const REPORTING_CONTROLLER: &str = "default-scheduler";

/// The Binding that places `pod` on `node` (with the pod's uid as precondition).
pub fn binding_body(pod: &Pod, node: &str) -> Value {
    let mut metadata = json!({
        "name": pod.metadata.name,
        "namespace": pod.metadata.namespace,
    });
    if let Some(uid) = &pod.metadata.uid {
        metadata["uid"] = json!(uid);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": metadata,
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    })
}

fn pods(client: &kube::Client, pod: &Pod) -> Api<Pod> {
    Api::namespaced(
        client.clone(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
    )
}

fn name(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or("")
}

/// `POST pods/{name}/binding`.
pub async fn bind(client: &kube::Client, pod: &Pod, node: &str) -> Result<(), kube::Error> {
    pods(client, pod)
        .create_subresource::<Value, Value>(
            "binding",
            name(pod),
            &PostParams::default(),
            &binding_body(pod, node),
        )
        .await
        .map(|_| ())
}

fn unique_suffix(now: Timestamp) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:x}{n:x}", now.as_nanosecond())
}

/// Records an event about `pod`; failures are logged (events are best effort).
pub async fn record_event(
    client: &kube::Client,
    instance: &str,
    pod: &Pod,
    event_type: EventType,
    reason: &str,
    message: &str,
) {
    let now = Timestamp::now();
    let mut body = event_body(
        &ObjectRef::of(pod),
        event_type,
        reason,
        message,
        now,
        &unique_suffix(now),
    );
    body["reportingController"] = json!(REPORTING_CONTROLLER);
    body["reportingInstance"] = json!(instance);
    let event: Event = match serde_json::from_value(body) {
        Ok(event) => event,
        Err(err) => {
            tracing::warn!("building the {reason} event: {err}");
            return;
        }
    };
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    if let Err(err) = events.create(&PostParams::default(), &event).await {
        tracing::warn!(pod = %name(pod), "recording the {reason} event: {err}");
    }
}

/// The pod's conditions with `condition` in place of the one of its type (the transition
/// time kept when the status does not change); `None` when nothing changes.
pub fn with_condition(pod: &Pod, mut condition: PodCondition) -> Option<Vec<PodCondition>> {
    let mut conditions = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    match conditions.iter_mut().find(|c| c.type_ == condition.type_) {
        Some(existing) => {
            if existing.status == condition.status
                && existing.reason == condition.reason
                && existing.message == condition.message
            {
                return None;
            }
            if existing.status == condition.status {
                condition.last_transition_time = existing.last_transition_time.clone();
            }
            *existing = condition;
        }
        None => conditions.push(condition),
    }
    Some(conditions)
}

/// The status patch for a pod that does not fit: `PodScheduled=False/Unschedulable` with
/// `message`, and `nominatedNodeName` when preemption chose a node. `None` when the pod's
/// status already says so. Conditions are a list: the merge patch carries all of them.
pub fn unschedulable_patch(
    pod: &Pod,
    message: &str,
    nominated_node: Option<&str>,
    now: Timestamp,
) -> Option<Value> {
    let condition = PodCondition {
        type_: "PodScheduled".into(),
        status: "False".into(),
        reason: Some("Unschedulable".into()),
        message: Some(message.to_string()),
        last_transition_time: Some(Time(now)),
        ..PodCondition::default()
    };
    let current_nominated = pod
        .status
        .as_ref()
        .and_then(|s| s.nominated_node_name.as_deref());
    let conditions = with_condition(pod, condition);
    let nominated_changes = nominated_node.is_some() && nominated_node != current_nominated;
    if conditions.is_none() && !nominated_changes {
        return None;
    }
    let mut status = json!({});
    if let Some(conditions) = conditions {
        status["conditions"] = json!(conditions);
    }
    if nominated_changes {
        status["nominatedNodeName"] = json!(nominated_node);
    }
    Some(json!({ "status": status }))
}

/// Merge-patches the pod's status.
pub async fn patch_status(client: &kube::Client, pod: &Pod, patch: &Value) {
    if let Err(err) = pods(client, pod)
        .patch_status(name(pod), &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        tracing::warn!(pod = %name(pod), "updating the pod status: {err}");
    }
}

/// Evicts a preemption victim as upstream does: a `DisruptionTarget` condition (reason
/// `PreemptionByScheduler`), a graceful delete (uid precondition), and a `Preempted` event.
pub async fn preempt_victim(
    client: &kube::Client,
    instance: &str,
    scheduler_name: &str,
    preemptor: &Pod,
    victim: &Pod,
    node: &str,
) {
    let condition = PodCondition {
        type_: "DisruptionTarget".into(),
        status: "True".into(),
        reason: Some("PreemptionByScheduler".into()),
        message: Some(format!(
            "{scheduler_name}: preempting to accommodate a higher priority pod"
        )),
        last_transition_time: Some(Time(Timestamp::now())),
        ..PodCondition::default()
    };
    if let Some(conditions) = with_condition(victim, condition) {
        patch_status(
            client,
            victim,
            &json!({"status": {"conditions": conditions}}),
        )
        .await;
    }
    let params = DeleteParams {
        preconditions: victim.metadata.uid.clone().map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match pods(client, victim).delete(name(victim), &params).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => return,
        Err(err) => {
            tracing::warn!(victim = %name(victim), "deleting a preemption victim: {err}");
            return;
        }
    }
    let message = format!(
        "Preempted by pod {} on node {node}",
        preemptor.metadata.uid.as_deref().unwrap_or("")
    );
    record_event(
        client,
        instance,
        victim,
        EventType::Normal,
        "Preempted",
        &message,
    )
    .await;
}
