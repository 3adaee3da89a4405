//! DELETE: DeleteOptions (body and query), preconditions, and carrying out the
//! [`delete_plan`](super::delete_plan) decision with compare-and-swap. An object with
//! finalizers (or a `Foreground`/`Orphan` deletion, which adds its finalizer) gets a
//! `deletionTimestamp` and stays until the finalizers are removed; pods bound to a node are
//! deleted gracefully (the kubelet finishes with grace 0); namespaces turn `Terminating`
//! and stay while `spec.finalizers` is non-empty; anything else is removed at once.

use serde_json::{Value, json};

use super::delete_plan::{Graceful, IMMORTAL_NAMESPACES, Plan, plan_delete, plan_namespace_delete};
use super::object::{decode_stored, encode_for_store, set_resource_version, unix_now};
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
                    &["Foreground", "Background", "Orphan", "nil"],
                )],
            ));
        }
        if let Some(p) = &policy
            && body.get("orphanDependents").is_some_and(Value::is_boolean)
        {
            return Err(ApiError::invalid(
                "meta.k8s.io",
                "DeleteOptions",
                "",
                vec![crate::apiserver::errors::Cause::invalid(
                    "propagationPolicy",
                    &json!(p),
                    "orphanDependents and deletionPropagation cannot be both set",
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
    /// DELETE one object; returns it (with `deletionTimestamp` if it lingers). The decision
    /// is [`plan_delete`] (or [`plan_namespace_delete`]) on the stored object, written with
    /// compare-and-swap and retried on a concurrent change.
    pub async fn delete(
        &self,
        target: &Target,
        options: &DeleteOptions,
    ) -> Result<Value, ApiError> {
        let def = &target.def;
        let key = target.key();
        let namespace_kind = def.group.is_empty() && def.plural == "namespaces";
        if namespace_kind && IMMORTAL_NAMESPACES.contains(&target.name()) {
            return Err(ApiError::forbidden(format!(
                "namespaces \"{}\" is forbidden: this namespace may not be deleted",
                target.name()
            )));
        }
        if def.group == "scheduling.k8s.io"
            && def.plural == "priorityclasses"
            && crate::apiserver::kinds::pod::SYSTEM_PRIORITY_CLASSES
                .iter()
                .any(|(name, _)| *name == target.name())
        {
            return Err(ApiError::forbidden(format!(
                "priorityclasses.scheduling.k8s.io \"{}\" is forbidden: this is a system priority class and cannot be deleted",
                target.name()
            )));
        }
        let graceful = if def.group.is_empty() && def.plural == "pods" {
            Graceful::Pod
        } else {
            Graceful::No
        };
        for _ in 0..16 {
            let kv = self
                .store()
                .get(&key)
                .await
                .map_err(|e| store_error(target, e))?
                .ok_or_else(|| target.not_found())?;
            let current = super::convert::served(def, decode_stored(&kv)?);
            check_preconditions(target, options, &current, kv.mod_revision)?;
            let plan = if namespace_kind {
                plan_namespace_delete(&current, options, unix_now())
            } else {
                plan_delete(graceful, &current, options, unix_now())
            };
            let (write, remove) = match plan {
                Plan::Unchanged => return Ok(current),
                Plan::Linger(next) => (Some(next), false),
                Plan::DeleteNow(next) => (next, true),
            };
            if options.dry_run {
                return Ok(write.unwrap_or(current));
            }
            let mut revision = kv.mod_revision;
            let mut answer = current;
            if let Some(next) = write {
                let stored = super::convert::stored(def, next);
                match self
                    .store()
                    .update(&key, encode_for_store(&stored), revision)
                    .await
                {
                    Ok(kv) => {
                        revision = kv.mod_revision;
                        answer = super::convert::served(def, decode_stored(&kv)?);
                    }
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(store_error(target, e)),
                }
                if !remove {
                    return Ok(answer);
                }
            }
            match self.store().delete(&key, Some(revision)).await {
                Ok(deleted) => {
                    if super::is_service(def) {
                        self.services().release_dropped(&answer, None).await;
                    }
                    set_resource_version(&mut answer, deleted.mod_revision);
                    return Ok(answer);
                }
                Err(StoreError::Conflict { .. }) => continue,
                // Someone else finished the deletion first (upstream tolerates this too).
                Err(StoreError::NotFound(_)) if revision != kv.mod_revision => return Ok(answer),
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

/// The UID and resourceVersion preconditions of DeleteOptions: 409 when they do not hold.
fn check_preconditions(
    target: &Target,
    options: &DeleteOptions,
    current: &Value,
    revision: i64,
) -> Result<(), ApiError> {
    let def = &target.def;
    let uid = current
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if let Some(wanted) = &options.precondition_uid
        && wanted != uid
    {
        return Err(ApiError::conflict(
            &def.group,
            &def.plural,
            target.name(),
            &format!(
                "Precondition failed: UID in precondition: {wanted}, UID in object meta: {uid}"
            ),
        ));
    }
    if let Some(rv) = &options.precondition_resource_version
        && *rv != revision.to_string()
    {
        return Err(ApiError::conflict(
            &def.group,
            &def.plural,
            target.name(),
            &format!(
                "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {revision}"
            ),
        ));
    }
    Ok(())
}
