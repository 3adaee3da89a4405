//! Performs a planner's actions through the apiserver, in order (runs of pod creates or
//! deletes concurrently, in slow-start groups), stopping at the first failure. [`to_call`] is the pure half (an [`Action`] → the API call it stands for, with
//! `now` and a unique suffix passed in); [`execute`] sends the calls with kube-rs
//! (`Api<DynamicObject>` on an `ApiResource` built from the action's [`ObjectRef`]).

use k8s_openapi::jiff::Timestamp;
use kube::api::{
    Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams, Preconditions,
    PropagationPolicy,
};
use kube::core::ApiResource;
use serde_json::{Value, json};

use crate::action::{Action, EventType, ObjectRef, Propagation};

/// The `reportingController` of the events the controller manager records.
pub const REPORTING_CONTROLLER: &str = "kwk-controller-manager";

/// One API request, as data.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiCall {
    /// Group, version, kind and plural of the resource.
    pub resource: ApiResource,
    /// `None` for cluster-scoped resources.
    pub namespace: Option<String>,
    pub verb: Verb,
}

/// What the request does (JSON bodies; the name is the target's).
#[derive(Debug, Clone, PartialEq)]
pub enum Verb {
    /// POST a new object.
    Create { body: Value },
    /// PUT the object.
    Replace { name: String, body: Value },
    /// PUT a subresource (`status`).
    ReplaceSubresource {
        name: String,
        subresource: String,
        body: Value,
    },
    /// PATCH (JSON merge patch) the object or a subresource.
    MergePatch {
        name: String,
        subresource: Option<String>,
        patch: Value,
    },
    /// DELETE with options.
    Delete { name: String, params: DeleteParams },
    /// POST to a subresource (`eviction`).
    CreateSubresource {
        name: String,
        subresource: String,
        body: Value,
    },
}

/// Why an action failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("{verb} {kind} {object}: {source}")]
    Api {
        verb: &'static str,
        kind: String,
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("{kind} {object}: the planned body is not an object ({source})")]
    Body {
        kind: String,
        object: String,
        #[source]
        source: serde_json::Error,
    },
}

impl ExecError {
    /// The HTTP status code of an API error.
    pub fn status_code(&self) -> Option<u16> {
        match self {
            ExecError::Api {
                source: kube::Error::Api(status),
                ..
            } => Some(status.code),
            _ => None,
        }
    }

    /// A 409 (conflict, already exists) or 404: the observations were stale, so the key is
    /// planned again from fresh caches — expected, not worth a loud log.
    pub fn is_stale_plan(&self) -> bool {
        matches!(self.status_code(), Some(404 | 409))
    }
}

fn resource_of(target: &ObjectRef) -> ApiResource {
    let (group, version) = match target.api_version.split_once('/') {
        Some((group, version)) => (group.to_string(), version.to_string()),
        None => (String::new(), target.api_version.clone()),
    };
    ApiResource {
        group,
        version,
        api_version: target.api_version.clone(),
        kind: target.kind.clone(),
        plural: target.plural.clone(),
    }
}

fn propagation_policy(propagation: Propagation) -> PropagationPolicy {
    match propagation {
        Propagation::Background => PropagationPolicy::Background,
        Propagation::Foreground => PropagationPolicy::Foreground,
        Propagation::Orphan => PropagationPolicy::Orphan,
    }
}

/// The events.k8s.io/v1 Event recording `reason` about `regarding` (upstream names events
/// `<regarding name>.<unique hex>`; cluster-scoped objects' events go to `default`).
pub fn event_body(
    regarding: &ObjectRef,
    event_type: EventType,
    reason: &str,
    message: &str,
    now: Timestamp,
    unique_suffix: &str,
) -> Value {
    let namespace = regarding.namespace.as_deref().unwrap_or("default");
    let mut regarding_json = json!({
        "apiVersion": regarding.api_version,
        "kind": regarding.kind,
        "name": regarding.name,
    });
    if let Some(ns) = &regarding.namespace {
        regarding_json["namespace"] = json!(ns);
    }
    if let Some(uid) = &regarding.uid {
        regarding_json["uid"] = json!(uid);
    }
    let event_type = match event_type {
        EventType::Normal => "Normal",
        EventType::Warning => "Warning",
    };
    // MicroTime: RFC 3339 with microseconds.
    let event_time = now.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    json!({
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {
            "name": format!("{}.{unique_suffix}", regarding.name),
            "namespace": namespace,
        },
        "eventTime": event_time,
        "reportingController": REPORTING_CONTROLLER,
        "reportingInstance": REPORTING_CONTROLLER,
        "action": reason,
        "reason": reason,
        "note": message,
        "type": event_type,
        "regarding": regarding_json,
    })
}

/// The API call an action stands for. `now` and `unique_suffix` name and date events.
pub fn to_call(action: &Action, now: Timestamp, unique_suffix: &str) -> ApiCall {
    let on = |target: &ObjectRef, verb: Verb| ApiCall {
        resource: resource_of(target),
        namespace: target.namespace.clone(),
        verb,
    };
    match action {
        Action::Create { target, body } => on(target, Verb::Create { body: body.clone() }),
        Action::Update { target, body } => on(
            target,
            Verb::Replace {
                name: target.name.clone(),
                body: body.clone(),
            },
        ),
        Action::UpdateStatus { target, body } => on(
            target,
            Verb::ReplaceSubresource {
                name: target.name.clone(),
                subresource: "status".into(),
                body: body.clone(),
            },
        ),
        Action::Patch {
            target,
            subresource,
            patch,
        } => on(
            target,
            Verb::MergePatch {
                name: target.name.clone(),
                subresource: subresource.clone(),
                patch: patch.clone(),
            },
        ),
        Action::Delete {
            target,
            propagation,
            grace_period_seconds,
        } => on(
            target,
            Verb::Delete {
                name: target.name.clone(),
                params: DeleteParams {
                    propagation_policy: propagation.map(propagation_policy),
                    grace_period_seconds: grace_period_seconds.and_then(|g| u32::try_from(g).ok()),
                    preconditions: target.uid.as_ref().map(|uid| Preconditions {
                        uid: Some(uid.clone()),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                },
            },
        ),
        Action::Evict { pod } => {
            let mut metadata = json!({ "name": pod.name });
            if let Some(ns) = &pod.namespace {
                metadata["namespace"] = json!(ns);
            }
            on(
                pod,
                Verb::CreateSubresource {
                    name: pod.name.clone(),
                    subresource: "eviction".into(),
                    body: json!({
                        "apiVersion": "policy/v1",
                        "kind": "Eviction",
                        "metadata": metadata,
                    }),
                },
            )
        }
        Action::Event {
            regarding,
            event_type,
            reason,
            message,
        } => {
            let body = event_body(regarding, *event_type, reason, message, now, unique_suffix);
            ApiCall {
                resource: ApiResource {
                    group: "events.k8s.io".into(),
                    version: "v1".into(),
                    api_version: "events.k8s.io/v1".into(),
                    kind: "Event".into(),
                    plural: "events".into(),
                },
                namespace: Some(regarding.namespace.as_deref().unwrap_or("default").into()),
                verb: Verb::Create { body },
            }
        }
    }
}

/// A suffix no other event of this process has: the current time in nanoseconds plus a
/// process-wide counter, in hex.
fn unique_suffix(now: Timestamp) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:x}{count:x}", now.as_nanosecond())
}

/// What a key's plan wrote that its watch caches must show before the key is planned again
/// (see the controller's expectations).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// The object as the apiserver created it (its generated name and uid).
    Created(WrittenObject),
    /// The object a delete was accepted for.
    Deleted(WrittenObject),
}

/// The identity of a written object.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WrittenObject {
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub uid: Option<String>,
}

impl Written {
    pub fn object(&self) -> &WrittenObject {
        match self {
            Written::Created(object) | Written::Deleted(object) => object,
        }
    }
}

/// The result of executing a plan: the creates and deletes that succeeded (also those before
/// a failure) and the failure that stopped it, if any.
#[derive(Debug)]
pub struct Executed {
    pub written: Vec<Written>,
    pub result: Result<(), ExecError>,
}

/// Performs `actions` in order; stops at the first failure and returns it (the caller
/// re-plans from fresh observations rather than retrying the rest of a stale plan).
pub async fn execute(client: &kube::Client, actions: &[Action]) -> Result<(), ExecError> {
    execute_recording(client, actions).await.result
}

/// [`execute`], also reporting what was created and deleted. A pod created for a controlling
/// owner gets upstream's `SuccessfulCreate` event on that owner (`Created pod: <name>`, the
/// generated name being known only from the response); a failed one a `FailedCreate` warning.
///
/// Consecutive pod creates and consecutive pod deletes run concurrently in the groups
/// [`concurrent_groups`] cuts (upstream's slow start for creates: 1, 2, 4 … at once, so a
/// quota or admission failure costs one request, not hundreds); a failure ends the plan after
/// its group, reporting the first failed action in plan order.
pub async fn execute_recording(client: &kube::Client, actions: &[Action]) -> Executed {
    let mut written = Vec::new();
    for group in concurrent_groups(actions) {
        let outcomes =
            futures::future::join_all(actions[group].iter().map(|a| perform_one(client, a))).await;
        let mut failure = None;
        for outcome in outcomes {
            match outcome {
                Ok(done) => written.extend(done),
                Err(error) => {
                    failure.get_or_insert(error);
                }
            }
        }
        if let Some(error) = failure {
            return Executed {
                written,
                result: Err(error),
            };
        }
    }
    Executed {
        written,
        result: Ok(()),
    }
}

/// The largest group of pod creates sent at once (upstream's per-sync burst).
pub const MAX_CONCURRENT_WRITES: usize = 500;

/// Cuts `actions` into consecutive index ranges that may run concurrently: a run of pod
/// creates becomes groups of 1, 2, 4 … (at most [`MAX_CONCURRENT_WRITES`]), a run of pod
/// deletes groups of at most [`MAX_CONCURRENT_WRITES`], and every other action runs alone.
pub fn concurrent_groups(actions: &[Action]) -> Vec<std::ops::Range<usize>> {
    let mut groups = Vec::new();
    let mut at = 0;
    while at < actions.len() {
        let kind = PodWrite::of(&actions[at]);
        let run = actions[at..]
            .iter()
            .take_while(|a| kind.is_some() && PodWrite::of(a) == kind)
            .count()
            .max(1);
        let end = at + run;
        let mut size = match kind {
            Some(PodWrite::Create) => 1,
            _ => MAX_CONCURRENT_WRITES,
        };
        while at < end {
            let next = (at + size).min(end);
            groups.push(at..next);
            at = next;
            size = (size * 2).min(MAX_CONCURRENT_WRITES);
        }
    }
    groups
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PodWrite {
    Create,
    Delete,
}

impl PodWrite {
    fn of(action: &Action) -> Option<Self> {
        let target = action.target();
        if target.api_version != "v1" || target.kind != "Pod" {
            return None;
        }
        match action {
            Action::Create { .. } => Some(PodWrite::Create),
            Action::Delete { .. } => Some(PodWrite::Delete),
            _ => None,
        }
    }
}

/// Sends one action (and, for a controlled pod create, its event).
async fn perform_one(client: &kube::Client, action: &Action) -> Result<Option<Written>, ExecError> {
    let now = Timestamp::now();
    let call = to_call(action, now, &unique_suffix(now));
    let target = action.target();
    let object = match &target.namespace {
        Some(ns) => format!("{ns}/{}", target.name),
        None => target.name.clone(),
    };
    let outcome = perform(client, &call).await;
    if let Action::Create { body, .. } = action {
        let created = outcome.as_ref().ok().and_then(|created| created.as_ref());
        let failure = outcome.as_ref().err().map(|(_, failure)| failure.message());
        let pod_name = created.and_then(|c| c.metadata.name.as_deref());
        let outcome = match (pod_name, failure.as_deref()) {
            (Some(name), _) => Ok(name),
            (None, Some(message)) => Err(message),
            (None, None) => Ok(""),
        };
        if let Some(event) = pod_create_event(target, body, outcome) {
            record_best_effort(client, &event).await;
        }
    }
    match outcome {
        Ok(response) => Ok(written_by(action, response.as_ref())),
        Err((verb, source)) => Err(match source {
            Failure::Api(source) => ExecError::Api {
                verb,
                kind: call.resource.kind.clone(),
                object,
                source,
            },
            Failure::Body(source) => ExecError::Body {
                kind: call.resource.kind.clone(),
                object,
                source,
            },
        }),
    }
}

/// What a successful `action` wrote, given the created object the apiserver returned.
pub fn written_by(action: &Action, created: Option<&DynamicObject>) -> Option<Written> {
    match action {
        Action::Create { target, .. } => {
            let created = created?;
            Some(Written::Created(WrittenObject {
                api_version: target.api_version.clone(),
                kind: target.kind.clone(),
                namespace: created
                    .metadata
                    .namespace
                    .clone()
                    .or(target.namespace.clone()),
                name: created.metadata.name.clone()?,
                uid: created.metadata.uid.clone(),
            }))
        }
        Action::Delete { target, .. } => Some(Written::Deleted(WrittenObject {
            api_version: target.api_version.clone(),
            kind: target.kind.clone(),
            namespace: target.namespace.clone(),
            name: target.name.clone(),
            uid: target.uid.clone(),
        })),
        _ => None,
    }
}

/// Upstream's pod-creation events: a pod `body` created (`Ok(name)`) or not (`Err(message)`)
/// for the owner its controller reference names gets `SuccessfulCreate` (`Created pod:
/// <name>`) or a `FailedCreate` warning (`Error creating: <message>`) on that owner.
pub fn pod_create_event(
    target: &ObjectRef,
    body: &Value,
    outcome: Result<&str, &str>,
) -> Option<Action> {
    if target.kind != "Pod" || target.api_version != "v1" {
        return None;
    }
    let owner = body["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == Value::Bool(true))?;
    let regarding = ObjectRef {
        api_version: owner["apiVersion"].as_str()?.to_string(),
        kind: owner["kind"].as_str()?.to_string(),
        plural: String::new(),
        namespace: target.namespace.clone(),
        name: owner["name"].as_str()?.to_string(),
        uid: owner["uid"].as_str().map(String::from),
    };
    let (event_type, reason, message) = match outcome {
        Ok(name) if !name.is_empty() => (
            EventType::Normal,
            "SuccessfulCreate",
            format!("Created pod: {name}"),
        ),
        Ok(_) => return None,
        Err(message) => (
            EventType::Warning,
            "FailedCreate",
            format!("Error creating: {message}"),
        ),
    };
    Some(Action::Event {
        regarding,
        event_type,
        reason: reason.into(),
        message,
    })
}

/// Records an event the executor adds on its own; a failure is logged, not returned (the
/// plan's writes went through).
async fn record_best_effort(client: &kube::Client, event: &Action) {
    let now = Timestamp::now();
    let call = to_call(event, now, &unique_suffix(now));
    if let Err((_, failure)) = perform(client, &call).await {
        tracing::debug!(
            regarding = %event.target().name,
            "recording event failed: {}",
            failure.message()
        );
    }
}

enum Failure {
    Api(kube::Error),
    Body(serde_json::Error),
}

impl Failure {
    /// The message a user reads (the apiserver's own for API errors).
    fn message(&self) -> String {
        match self {
            Failure::Api(kube::Error::Api(status)) => status.message.clone(),
            Failure::Api(other) => other.to_string(),
            Failure::Body(err) => err.to_string(),
        }
    }
}

fn dynamic(body: &Value) -> Result<DynamicObject, Failure> {
    serde_json::from_value(body.clone()).map_err(Failure::Body)
}

/// Sends `call`; returns the created object for creates.
async fn perform(
    client: &kube::Client,
    call: &ApiCall,
) -> Result<Option<DynamicObject>, (&'static str, Failure)> {
    let api: Api<DynamicObject> = match &call.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &call.resource),
        None => Api::all_with(client.clone(), &call.resource),
    };
    let post = PostParams::default();
    match &call.verb {
        Verb::Create { body } => {
            let object = dynamic(body).map_err(|e| ("create", e))?;
            let created = api
                .create(&post, &object)
                .await
                .map_err(|e| ("create", Failure::Api(e)))?;
            return Ok(Some(created));
        }
        Verb::Replace { name, body } => {
            let object = dynamic(body).map_err(|e| ("update", e))?;
            api.replace(name, &post, &object)
                .await
                .map_err(|e| ("update", Failure::Api(e)))?;
        }
        Verb::ReplaceSubresource {
            name,
            subresource,
            body,
        } => {
            api.replace_subresource(subresource, name, &post, body)
                .await
                .map_err(|e| ("update status", Failure::Api(e)))?;
        }
        Verb::MergePatch {
            name,
            subresource,
            patch,
        } => {
            let params = PatchParams::default();
            let patch = Patch::Merge(patch);
            let result = match subresource {
                Some(sub) => api.patch_subresource(sub, name, &params, &patch).await,
                None => api.patch(name, &params, &patch).await,
            };
            result.map_err(|e| ("patch", Failure::Api(e)))?;
        }
        Verb::Delete { name, params } => {
            api.delete(name, params)
                .await
                .map_err(|e| ("delete", Failure::Api(e)))?;
        }
        Verb::CreateSubresource {
            name,
            subresource,
            body,
        } => {
            api.create_subresource::<Value, Value>(subresource, name, &post, body)
                .await
                .map_err(|e| ("evict", Failure::Api(e)))?;
        }
    }
    Ok(None)
}

#[cfg(test)]
#[path = "executor_tests.rs"]
mod tests;
