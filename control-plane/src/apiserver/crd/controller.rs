//! The CRD controller (upstream's naming, establishing and finalizer controllers in one
//! loop): reads every stored CustomResourceDefinition, decides its accepted names
//! (first come, first served within a group), serves the established ones (the catalogue's
//! custom entries are rebuilt, then `NamesAccepted`/`Established` and `storedVersions` are
//! written), and cleans up deleted ones (their custom resources are removed, then the
//! `customresourcecleanup.apiextensions.k8s.io` finalizer). It runs once before the
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

/// One pass: serve what is established, write statuses, clean up deleted CRDs.
pub async fn reconcile(registry: &Registry) -> Result<(), ApiError> {
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
        let deleting = crd.pointer("/metadata/deletionTimestamp").is_some();
        if deleting {
            cleanups.push(next.clone());
        } else if condition_true(&next, "Established") {
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
    for crd in cleanups {
        cleanup(registry, &def, &crd).await?;
    }
    Ok(())
}

/// Removes a deleted CRD's custom resources, then its cleanup finalizer.
async fn cleanup(registry: &Registry, def: &Arc<ResourceDef>, crd: &Value) -> Result<(), ApiError> {
    let prefix = format!("{}/", storage_prefix(crd));
    loop {
        let page = registry
            .store()
            .list(&ListOptions {
                prefix: prefix.clone(),
                limit: Some(500),
                ..ListOptions::default()
            })
            .await
            .map_err(|e| ApiError::internal(format!("listing custom resources: {e}")))?;
        for kv in &page.items {
            match registry.store().delete(&kv.key, None).await {
                Ok(_) | Err(crate::storage::StoreError::NotFound(_)) => {}
                Err(e) => return Err(ApiError::internal(format!("deleting {}: {e}", kv.key))),
            }
        }
        if !page.more {
            break;
        }
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
        _ => Ok(()),
    }
}

/// Runs the controller until `stop`: a pass now, then one per batch of CRD changes.
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
        if let Err(e) = reconcile(registry).await {
            tracing::warn!(error = %e, "CRD controller");
        }
        match registry.store().watch(&prefix, start).await {
            Ok(mut stream) => loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    event = stream.next() => match event {
                        Some(Ok(_)) => {
                            // Take what else is ready, then one pass for the batch.
                            while let Some(Some(Ok(_))) = stream.next().now_or_never() {}
                            if let Err(e) = reconcile(registry).await {
                                tracing::warn!(error = %e, "CRD controller");
                            }
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
