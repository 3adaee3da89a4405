//! The CRD controller (upstream's naming, establishing and finalizer controllers in one
//! loop): reads every stored CustomResourceDefinition, decides its accepted names
//! (first come, first served within a group), serves the established ones (the catalogue's
//! custom entries are rebuilt, then `NamesAccepted`/`Established` and `storedVersions` are
//! written), and cleans up deleted ones (their custom resources are deleted as a client
//! would, so their finalizers hold the CRD back; once none is left the
//! `customresourcecleanup.apiextensions.k8s.io` finalizer is removed). A terminating CRD stays
//! served, but refuses creates. It runs once before the
//! apiserver serves (so a restart serves the same resources) and on every CRD change, from
//! a watch on the store.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{CLEANUP_FINALIZER, condition_true, resource_defs, storage_prefix};
use crate::apiserver::catalog::ResourceDef;
use crate::apiserver::errors::ApiError;
use crate::apiserver::handler::ApiHandler;
use crate::apiserver::rest::delete::DeleteOptions;
use crate::apiserver::rest::object::{decode_stored, now_rfc3339};
use crate::apiserver::rest::{Registry, Target};
use crate::storage::ListOptions;

fn crd_def(registry: &Registry) -> Result<Arc<ResourceDef>, ApiError> {
    registry
        .catalog()
        .lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        .cloned()
        .ok_or_else(|| ApiError::internal("CustomResourceDefinitions are not served"))
}

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The names a CRD claims in its group: plural, singular, short names (resources) and kind,
/// list kind (kinds).
fn claimed(names: &Value) -> (Vec<String>, Vec<String>) {
    let mut resources = vec![text(names, "/plural").to_string()];
    let singular = text(names, "/singular");
    if !singular.is_empty() {
        resources.push(singular.to_string());
    }
    for short in names
        .get("shortNames")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        resources.push(short.to_string());
    }
    let kinds = vec![
        text(names, "/kind").to_string(),
        text(names, "/listKind").to_string(),
    ];
    (resources, kinds)
}

/// A condition, keeping `lastTransitionTime` of `old` when the status did not change.
fn condition(old: &Value, type_: &str, status: &str, reason: &str, message: &str) -> Value {
    let previous = old
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["type"] == type_));
    let time = match previous {
        Some(p) if p["status"] == status => p["lastTransitionTime"].clone(),
        _ => json!(now_rfc3339()),
    };
    json!({"type": type_, "status": status, "lastTransitionTime": time, "reason": reason, "message": message})
}

/// The status a CRD should have, given the names the CRDs before it took (`taken`: group,
/// name pairs, extended with this CRD's names when they are accepted).
pub fn desired_status(crd: &Value, taken: &mut BTreeSet<(String, String)>) -> Value {
    let group = text(crd, "/spec/group").to_string();
    let names = &crd["spec"]["names"];
    let (resources, kinds) = claimed(names);
    let conflict = resources
        .iter()
        .map(|r| (r, "resource"))
        .chain(kinds.iter().map(|k| (k, "kind")))
        .find(|(n, space)| taken.contains(&(group.clone(), format!("{space}:{n}"))));
    let mut conditions = Vec::new();
    let accepted = conflict.is_none();
    match conflict {
        None => {
            for r in &resources {
                taken.insert((group.clone(), format!("resource:{r}")));
            }
            for k in &kinds {
                taken.insert((group.clone(), format!("kind:{k}")));
            }
            conditions.push(condition(
                crd,
                "NamesAccepted",
                "True",
                "NoConflicts",
                "no conflicts found",
            ));
            conditions.push(condition(
                crd,
                "Established",
                "True",
                "InitialNamesAccepted",
                "the initial names have been accepted",
            ));
        }
        Some((name, space)) => {
            let reason = if space == "kind" {
                "KindConflict"
            } else {
                "PluralConflict"
            };
            conditions.push(condition(
                crd,
                "NamesAccepted",
                "False",
                reason,
                &format!("{name:?} is already in use"),
            ));
            conditions.push(condition(
                crd,
                "Established",
                "False",
                "NotAccepted",
                "not all names are accepted",
            ));
        }
    }
    if crd.pointer("/metadata/deletionTimestamp").is_some() {
        conditions.push(condition(
            crd,
            "Terminating",
            "True",
            "InstanceDeletionInProgress",
            "CustomResource deletion is in progress",
        ));
    }
    let mut stored: Vec<Value> = crd
        .pointer("/status/storedVersions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(storage) = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .and_then(|v| v.iter().find(|v| v["storage"] == true))
        .map(|v| v["name"].clone())
        && !stored.contains(&storage)
    {
        stored.push(storage);
    }
    let mut status = json!({"conditions": conditions, "storedVersions": stored});
    if accepted {
        let mut accepted_names = names.clone();
        if let Some(map) = accepted_names.as_object_mut() {
            map.retain(|_, v| !v.is_null());
        }
        status["acceptedNames"] = accepted_names;
    } else {
        status["acceptedNames"] = crd
            .pointer("/status/acceptedNames")
            .cloned()
            .unwrap_or(json!({"plural": "", "kind": ""}));
    }
    status
}

/// One pass: serve what is established, write statuses, clean up deleted CRDs. Returns
/// whether a deleted CRD still waits for custom resources with finalizers.
pub async fn reconcile(registry: &Registry) -> Result<bool, ApiError> {
    let def = crd_def(registry)?;
    let page = registry
        .store()
        .list(&ListOptions {
            prefix: format!("{}/", def.storage_prefix),
            ..ListOptions::default()
        })
        .await
        .map_err(|e| ApiError::internal(format!("listing CRDs: {e}")))?;
    let mut crds = page
        .items
        .iter()
        .map(decode_stored)
        .collect::<Result<Vec<Value>, ApiError>>()?;
    crds.sort_by(|a, b| {
        (
            text(a, "/metadata/creationTimestamp"),
            text(a, "/metadata/name"),
        )
            .cmp(&(
                text(b, "/metadata/creationTimestamp"),
                text(b, "/metadata/name"),
            ))
    });
    let mut taken = BTreeSet::new();
    let mut served = Vec::new();
    let mut writes = Vec::new();
    let mut cleanups = Vec::new();
    for crd in &crds {
        let status = desired_status(crd, &mut taken);
        let mut next = crd.clone();
        next["status"] = status;
        if crd.pointer("/metadata/deletionTimestamp").is_some() {
            cleanups.push(next.clone());
        }
        // A terminating CRD stays served until its objects are gone (see `cleanup`).
        if condition_true(&next, "Established") {
            served.extend(resource_defs(&next));
        }
        if next["status"] != crd["status"] {
            writes.push(next);
        }
    }
    registry.update_catalog(|catalog| {
        let custom: Vec<(String, String)> = catalog
            .resources()
            .filter(|r| r.custom.is_some())
            .map(|r| (r.group.clone(), r.plural.clone()))
            .collect();
        for (group, plural) in custom {
            catalog.remove(&group, &plural);
        }
        for def in served {
            catalog.insert(def);
        }
    });
    for next in writes {
        let target = Target {
            def: def.clone(),
            namespace: None,
            name: Some(text(&next, "/metadata/name").to_string()),
            subresource: Some("status".into()),
        };
        let status = next["status"].clone();
        let result = registry
            .guaranteed_update(&target, None, false, |current| {
                let mut updated = current.clone();
                updated["status"] = status.clone();
                Ok(updated)
            })
            .await;
        if let Err(e) = result
            && e.code != 404
        {
            tracing::warn!(crd = %target.name(), error = %e, "writing CRD status");
        }
    }
    let mut waiting = false;
    for crd in cleanups {
        waiting |= !cleanup(registry, &def, &crd).await?;
    }
    Ok(waiting)
}

/// Deletes a deleted CRD's custom resources as a client would (objects with finalizers
/// linger until those are removed), then, once none is left, its cleanup finalizer. Returns
/// whether the CRD is done.
async fn cleanup(
    registry: &Registry,
    def: &Arc<ResourceDef>,
    crd: &Value,
) -> Result<bool, ApiError> {
    if crd
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_none_or(|f| !f.iter().any(|f| f == CLEANUP_FINALIZER))
    {
        return Ok(true);
    }
    let stored_def = resource_defs(crd).into_iter().find(|d| {
        d.custom
            .as_ref()
            .is_some_and(|c| c.storage_api_version == d.api_version())
    });
    let prefix = format!("{}/", storage_prefix(crd));
    let mut remaining = 0;
    let mut start_after = None;
    loop {
        let page = registry
            .store()
            .list(&ListOptions {
                prefix: prefix.clone(),
                limit: Some(500),
                start_after: start_after.take(),
                ..ListOptions::default()
            })
            .await
            .map_err(|e| ApiError::internal(format!("listing custom resources: {e}")))?;
        for kv in &page.items {
            let gone = match &stored_def {
                Some(stored_def) => delete_instance(registry, stored_def, kv).await?,
                // Never served (no storage version): nothing can hold it back.
                None => match registry.store().delete(&kv.key, None).await {
                    Ok(_) | Err(crate::storage::StoreError::NotFound(_)) => true,
                    Err(e) => {
                        return Err(ApiError::internal(format!("deleting {}: {e}", kv.key)));
                    }
                },
            };
            if !gone {
                remaining += 1;
            }
        }
        match page.items.last() {
            Some(last) if page.more => start_after = Some(last.key.clone()),
            _ => break,
        }
    }
    if remaining > 0 {
        tracing::debug!(
            crd = text(crd, "/metadata/name"),
            remaining,
            "waiting for custom resources with finalizers"
        );
        return Ok(false);
    }
    let target = Target {
        def: def.clone(),
        namespace: None,
        name: Some(text(crd, "/metadata/name").to_string()),
        subresource: None,
    };
    let result = registry
        .guaranteed_update(&target, None, false, |current| {
            let mut next = current.clone();
            if let Some(list) = next
                .pointer_mut("/metadata/finalizers")
                .and_then(Value::as_array_mut)
            {
                list.retain(|f| f != CLEANUP_FINALIZER);
            }
            Ok(next)
        })
        .await;
    match result {
        Err(e) if e.code != 404 => Err(e),
        _ => Ok(true),
    }
}

/// Deletes one custom resource through the registry (finalizers honoured); returns whether
/// it is gone.
async fn delete_instance(
    registry: &Registry,
    def: &ResourceDef,
    kv: &crate::storage::KeyValue,
) -> Result<bool, ApiError> {
    let object = decode_stored(kv)?;
    let meta = |field: &str| {
        object
            .pointer(&format!("/metadata/{field}"))
            .and_then(Value::as_str)
            .map(String::from)
    };
    let target = Target {
        def: Arc::new(def.clone()),
        namespace: meta("namespace"),
        name: meta("name"),
        subresource: None,
    };
    match registry.delete(&target, &DeleteOptions::default()).await {
        Ok(left) => Ok(left.pointer("/metadata/deletionTimestamp").is_none()),
        Err(e) if e.code == 404 => Ok(true),
        Err(e) => Err(e),
    }
}

/// How often a deleted CRD whose custom resources have finalizers is looked at again (their
/// changes are not watched here).
const CLEANUP_RECHECK: Duration = Duration::from_secs(2);

/// One pass, logging failures; returns whether a cleanup is waiting.
async fn pass(registry: &Registry) -> bool {
    match reconcile(registry).await {
        Ok(waiting) => waiting,
        Err(e) => {
            tracing::warn!(error = %e, "CRD controller");
            true
        }
    }
}

/// Runs the controller until `stop`: a pass now, then one per batch of CRD changes (and
/// every [`CLEANUP_RECHECK`] while a deleted CRD waits for its custom resources).
pub async fn run(handler: Arc<ApiHandler>, stop: CancellationToken) {
    let registry = &handler.registry;
    let prefix = match crd_def(registry) {
        Ok(def) => format!("{}/", def.storage_prefix),
        Err(_) => return,
    };
    loop {
        let start = match registry.store().current_revision().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "CRD controller: reading the revision");
                0
            }
        };
        let mut waiting = pass(registry).await;
        match registry.store().watch(&prefix, start).await {
            Ok(mut stream) => loop {
                let recheck = async {
                    if waiting {
                        tokio::time::sleep(CLEANUP_RECHECK).await;
                    } else {
                        std::future::pending::<()>().await;
                    }
                };
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = recheck => waiting = pass(registry).await,
                    event = stream.next() => match event {
                        Some(Ok(_)) => {
                            // Take what else is ready, then one pass for the batch.
                            while let Some(Some(Ok(_))) = stream.next().now_or_never() {}
                            waiting = pass(registry).await;
                        }
                        _ => break,
                    },
                }
            },
            Err(e) => tracing::warn!(error = %e, "CRD controller: watching CRDs"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}
