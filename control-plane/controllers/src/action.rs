//! What a planner asks for: the API writes of one reconcile, as data. Planners return a
//! `Vec<Action>`; the runtime's executor performs them in order through the apiserver. An
//! action that fails (a conflict on a stale `resourceVersion`, a 404) is not retried as is:
//! the controller re-plans from fresh observations, which is what makes it level-triggered.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{Metadata, Resource};
use serde::Serialize;
use serde_json::Value;

/// Which object an action is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    /// `apps/v1`, `v1` ...
    pub api_version: String,
    /// `ReplicaSet`.
    pub kind: String,
    /// The URL segment: `replicasets`.
    pub plural: String,
    /// `None` for cluster-scoped kinds.
    pub namespace: Option<String>,
    /// Empty for a create that relies on `generateName`.
    pub name: String,
    /// The object's uid where known (events, delete preconditions).
    pub uid: Option<String>,
}

impl ObjectRef {
    /// The reference of a typed object.
    pub fn of<K>(object: &K) -> Self
    where
        K: Resource + Metadata<Ty = ObjectMeta>,
    {
        let meta = object.metadata();
        ObjectRef {
            api_version: K::API_VERSION.to_string(),
            kind: K::KIND.to_string(),
            plural: K::URL_PATH_SEGMENT.to_string(),
            namespace: meta.namespace.clone(),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone(),
        }
    }
}

/// How dependents go when an object is deleted (`DeleteOptions.propagationPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    Background,
    Foreground,
    Orphan,
}

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// One API write.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// POST `body` (a full object with `apiVersion`, `kind` and `metadata`; `name` or
    /// `generateName`).
    Create { target: ObjectRef, body: Value },
    /// PUT `body` (carrying the `resourceVersion` it was planned from, so a stale plan
    /// conflicts instead of overwriting).
    Update { target: ObjectRef, body: Value },
    /// PUT `body` on the `status` subresource (same `resourceVersion` rule).
    UpdateStatus { target: ObjectRef, body: Value },
    /// A JSON merge patch on the object or one of its subresources.
    Patch {
        target: ObjectRef,
        subresource: Option<String>,
        patch: Value,
    },
    /// DELETE, with the uid as precondition when the target has one (never delete a
    /// same-named successor).
    Delete {
        target: ObjectRef,
        propagation: Option<Propagation>,
        /// `gracePeriodSeconds` (`Some(0)`: a force delete, as PodGC does); `None`: the
        /// object's own.
        grace_period_seconds: Option<i64>,
    },
    /// POST `pods/eviction` (honours PodDisruptionBudgets).
    Evict { pod: ObjectRef },
    /// Record an event about `regarding`.
    Event {
        regarding: ObjectRef,
        event_type: EventType,
        reason: String,
        message: String,
    },
}

fn body_of<K: Serialize>(object: &K) -> Value {
    serde_json::to_value(object).unwrap_or(Value::Null)
}

impl Action {
    /// Create `object`.
    pub fn create<K>(object: &K) -> Self
    where
        K: Resource + Metadata<Ty = ObjectMeta> + Serialize,
    {
        Action::Create {
            target: ObjectRef::of(object),
            body: body_of(object),
        }
    }

    /// Replace `object` (optimistic concurrency on its `resourceVersion`).
    pub fn update<K>(object: &K) -> Self
    where
        K: Resource + Metadata<Ty = ObjectMeta> + Serialize,
    {
        Action::Update {
            target: ObjectRef::of(object),
            body: body_of(object),
        }
    }

    /// Replace the status of `object` (optimistic concurrency on its `resourceVersion`).
    pub fn update_status<K>(object: &K) -> Self
    where
        K: Resource + Metadata<Ty = ObjectMeta> + Serialize,
    {
        Action::UpdateStatus {
            target: ObjectRef::of(object),
            body: body_of(object),
        }
    }

    /// Merge-patch `object` (or its `subresource`).
    pub fn patch<K>(object: &K, subresource: Option<&str>, patch: Value) -> Self
    where
        K: Resource + Metadata<Ty = ObjectMeta>,
    {
        Action::Patch {
            target: ObjectRef::of(object),
            subresource: subresource.map(String::from),
            patch,
        }
    }

    /// Delete `object` (uid precondition).
    pub fn delete<K>(object: &K, propagation: Option<Propagation>) -> Self
    where
        K: Resource + Metadata<Ty = ObjectMeta>,
    {
        Action::Delete {
            target: ObjectRef::of(object),
            propagation,
            grace_period_seconds: None,
        }
    }

    /// Delete `object` at once (`gracePeriodSeconds: 0`, uid precondition).
    pub fn force_delete<K>(object: &K) -> Self
    where
        K: Resource + Metadata<Ty = ObjectMeta>,
    {
        Action::Delete {
            target: ObjectRef::of(object),
            propagation: None,
            grace_period_seconds: Some(0),
        }
    }

    /// An event about `object`.
    pub fn event<K>(
        object: &K,
        event_type: EventType,
        reason: &str,
        message: impl Into<String>,
    ) -> Self
    where
        K: Resource + Metadata<Ty = ObjectMeta>,
    {
        Action::Event {
            regarding: ObjectRef::of(object),
            event_type,
            reason: reason.to_string(),
            message: message.into(),
        }
    }

    /// The object the action writes (for events: the object it is about).
    pub fn target(&self) -> &ObjectRef {
        match self {
            Action::Create { target, .. }
            | Action::Update { target, .. }
            | Action::UpdateStatus { target, .. }
            | Action::Patch { target, .. }
            | Action::Delete { target, .. } => target,
            Action::Evict { pod } => pod,
            Action::Event { regarding, .. } => regarding,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSet;

    #[test]
    fn actions_carry_the_typed_reference_and_body() {
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some("web-1".into()),
                namespace: Some("default".into()),
                uid: Some("u1".into()),
                ..ObjectMeta::default()
            },
            ..ReplicaSet::default()
        };
        let action = Action::create(&rs);
        let target = action.target();
        assert_eq!(
            (
                target.api_version.as_str(),
                target.kind.as_str(),
                target.plural.as_str()
            ),
            ("apps/v1", "ReplicaSet", "replicasets")
        );
        let Action::Create { body, .. } = action else {
            panic!("a create");
        };
        assert_eq!(body["metadata"]["name"], "web-1");
        assert_eq!(body["apiVersion"], "apps/v1");
    }
}
