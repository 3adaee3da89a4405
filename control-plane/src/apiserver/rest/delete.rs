//! DELETE: preconditions, finalizers and propagation policy. An object with finalizers (or a
//! `Foreground`/`Orphan` deletion, which adds its finalizer) gets a `deletionTimestamp` and
//! stays until the finalizers are removed; anything else is removed at once. Pods bound to
//! a node are deleted gracefully: the kubelet finishes the deletion.

use serde_json::{Value, json};

use super::object::{decode_stored, finalizers, meta_mut, now_rfc3339, set_resource_version};
use super::{Registry, Target, store_error};
use crate::apiserver::errors::ApiError;
use crate::storage::StoreError;

/// `metav1.DeleteOptions`, the parts that matter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    pub propagation_policy: Option<String>,
    pub orphan_dependents: Option<bool>,
    pub precondition_uid: Option<String>,
    pub precondition_resource_version: Option<String>,
    pub dry_run: bool,
}

impl DeleteOptions {
    /// From a DeleteOptions JSON body (or `null`).
    pub fn from_json(body: &Value) -> Result<Self, ApiError> {
        if body.is_null() {
            return Ok(Self::default());
        }
        if !body.is_object() {
            return Err(ApiError::bad_request("DeleteOptions must be a JSON object"));
        }
        let policy = body
            .get("propagationPolicy")
            .and_then(Value::as_str)
            .map(String::from);
        if let Some(p) = &policy
            && !["Foreground", "Background", "Orphan"].contains(&p.as_str())
        {
            return Err(ApiError::invalid(
                "meta.k8s.io",
                "DeleteOptions",
                "",
                vec![crate::apiserver::errors::Cause::not_supported(
                    "propagationPolicy",
                    &json!(p),
                    &["Foreground", "Background", "Orphan"],
                )],
            ));
        }
        Ok(Self {
            grace_period_seconds: body.get("gracePeriodSeconds").and_then(Value::as_i64),
            propagation_policy: policy,
            orphan_dependents: body.get("orphanDependents").and_then(Value::as_bool),
            precondition_uid: body
                .pointer("/preconditions/uid")
                .and_then(Value::as_str)
                .map(String::from),
            precondition_resource_version: body
                .pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str)
                .map(String::from),
            dry_run: body
                .get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|v| v == "All")),
        })
    }
}

impl Registry {
    /// DELETE one object; returns it (with `deletionTimestamp` if it lingers).
    pub async fn delete(
        &self,
        target: &Target,
        options: &DeleteOptions,
    ) -> Result<Value, ApiError> {
        let def = &target.def;
        let key = target.key();
        for _ in 0..16 {
            let kv = self
                .store()
                .get(&key)
                .await
                .map_err(|e| store_error(target, e))?
                .ok_or_else(|| target.not_found())?;
            let current = decode_stored(&kv)?;
            if let Some(uid) = &options.precondition_uid
                && current.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid)
            {
                return Err(ApiError::conflict(
                    &def.group,
                    &def.plural,
                    target.name(),
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        current
                            .pointer("/metadata/uid")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                    ),
                ));
            }
            if let Some(rv) = &options.precondition_resource_version
                && *rv != kv.mod_revision.to_string()
            {
                return Err(ApiError::conflict(
                    &def.group,
                    &def.plural,
                    target.name(),
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        kv.mod_revision
                    ),
                ));
            }
            let mut next = current.clone();
            let mut lingering = !finalizers(&current).is_empty();
            let policy =
                options
                    .propagation_policy
                    .as_deref()
                    .or(match options.orphan_dependents {
                        Some(true) => Some("Orphan"),
                        _ => None,
                    });
            let added = match policy {
                Some("Foreground") => Some("foregroundDeletion"),
                Some("Orphan") => Some("orphan"),
                _ => None,
            };
            if let Some(finalizer) = added {
                let mut list = finalizers(&next);
                if !list.iter().any(|f| f == finalizer) {
                    list.push(finalizer.to_string());
                }
                meta_mut(&mut next).insert("finalizers".into(), json!(list));
                lingering = true;
            }
            let graceful_pod = def.group.is_empty()
                && def.plural == "pods"
                && current
                    .pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .is_some_and(|n| !n.is_empty())
                && pod_grace(&current, options) > 0;
            if def.group.is_empty() && def.plural == "namespaces" {
                lingering = true;
                next["status"] = json!({"phase": "Terminating"});
            }
            if !(lingering || graceful_pod) {
                if options.dry_run {
                    return Ok(current);
                }
                match self.store().delete(&key, Some(kv.mod_revision)).await {
                    Ok(deleted) => {
                        if super::is_service(def) {
                            self.services().release_dropped(&current, None).await;
                        }
                        let mut object = current;
                        set_resource_version(&mut object, deleted.mod_revision);
                        return Ok(object);
                    }
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(store_error(target, e)),
                }
            }
            let meta = meta_mut(&mut next);
            if !meta.contains_key("deletionTimestamp") {
                meta.insert("deletionTimestamp".into(), json!(now_rfc3339()));
                let grace = if graceful_pod {
                    pod_grace(&current, options)
                } else {
                    0
                };
                meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
            } else if graceful_pod {
                // A shorter grace period may replace a longer one (as upstream).
                let grace = pod_grace(&current, options);
                let existing = meta
                    .get("deletionGracePeriodSeconds")
                    .and_then(Value::as_i64)
                    .unwrap_or(i64::MAX);
                if grace < existing {
                    meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
                }
            }
            if next == current || options.dry_run {
                return Ok(next);
            }
            match self
                .store()
                .update(
                    &key,
                    super::object::encode_for_store(&next),
                    kv.mod_revision,
                )
                .await
            {
                Ok(stored) => return decode_stored(&stored),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store_error(target, e)),
            }
        }
        Err(ApiError::conflict(
            &def.group,
            &def.plural,
            target.name(),
            "too many concurrent updates, please retry",
        ))
    }
}

/// The grace period of a pod deletion: the request's, else the pod's
/// `terminationGracePeriodSeconds`, else 30.
fn pod_grace(pod: &Value, options: &DeleteOptions) -> i64 {
    options
        .grace_period_seconds
        .or_else(|| {
            pod.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .unwrap_or(30)
        .max(0)
}
