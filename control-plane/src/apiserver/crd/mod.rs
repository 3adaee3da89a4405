//! Custom resources served from their CustomResourceDefinitions: the catalogue entries of an
//! established CRD's served versions ([`resource_defs`]), and the per-version behaviour the
//! generic REST handlers call into ([`CustomResource`], a [`KindStrategy`]): pruning and
//! validation against the structural schema (`schema`), defaulting (on writes and on reads),
//! printer columns (`columns`), the scale subresource's paths, the stored version.
//! `controller` keeps the catalogue and CRD status in sync with the store; `openapi` adds
//! the OpenAPI v3 schemas of custom resources.

pub mod columns;
pub mod controller;
pub mod openapi;
pub mod schema;

#[cfg(test)]
mod tests;

use std::sync::{Arc, OnceLock};

use serde_json::{Value, json};

use self::columns::PrinterColumn;
use super::catalog::{CRUD_VERBS, ResourceDef, SubresourceDef};
use super::errors::Cause;
use super::kinds::{Column, KindStrategy, generic_columns};
use super::patch::SchemaGraph;

/// The finalizer that makes a deleted CRD wait until its custom resources are gone.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// The paths of a CRD's `scale` subresource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalePaths {
    pub spec_replicas: String,
    pub status_replicas: String,
    pub label_selector: Option<String>,
}

/// One served version of a custom resource.
#[derive(Debug, Clone)]
pub struct CustomResource {
    /// `<plural>.<group>`.
    pub crd_name: String,
    /// The version's `openAPIV3Schema`.
    pub schema: Value,
    pub columns: Vec<PrinterColumn>,
    /// The version objects are stored at (`apiVersion` written to storage).
    pub storage_api_version: String,
    pub scale: Option<ScalePaths>,
    /// The CRD is being deleted: its objects are still served (so finalizers can be
    /// removed) but no new ones are created.
    pub terminating: bool,
    /// The schema compiled for field management (see [`openapi::compile`]), on first use.
    pub managed_schema: OnceLock<(Arc<SchemaGraph>, String)>,
}

impl CustomResource {
    /// Prunes unknown fields (root `metadata` through `ObjectMeta`); returns their paths.
    pub fn prune(&self, object: &mut Value) -> Vec<String> {
        let mut pruned = Vec::new();
        if let Some(meta) = object.get_mut("metadata") {
            schema::prune_object_meta(meta, "metadata", &mut pruned);
        }
        schema::prune(&self.schema, object, "", true, &mut pruned);
        pruned
    }

    /// Applies the version's view to an object read from storage: its `apiVersion`
    /// (conversion `None`) and the schema's defaults.
    pub fn on_read(&self, object: &mut Value, api_version: &str) {
        if let Some(map) = object.as_object_mut() {
            map.insert("apiVersion".into(), json!(api_version));
        }
        schema::apply_defaults(&self.schema, object);
    }

    /// The Table `columnDefinitions`.
    pub fn column_definitions(&self) -> Vec<Value> {
        columns::column_definitions(&self.columns)
    }
}

impl KindStrategy for CustomResource {
    fn default(&self, object: &mut Value) {
        schema::apply_defaults(&self.schema, object);
    }

    fn validate(&self, object: &Value, _old: Option<&Value>) -> Vec<Cause> {
        let mut causes = Vec::new();
        schema::validate(&self.schema, object, "", &mut causes);
        causes
    }

    fn columns(&self) -> Vec<Column> {
        generic_columns()
    }

    fn row(&self, object: &Value, now: i64) -> Vec<Value> {
        columns::row(&self.columns, object, now)
    }
}

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn strings(value: &Value, pointer: &str) -> Vec<String> {
    value
        .pointer(pointer)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a CRD has a condition of `type_` with status `True`.
pub fn condition_true(crd: &Value, type_: &str) -> bool {
    crd.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == type_ && c["status"] == "True")
        })
}

/// The storage prefix of a CRD's objects (upstream's `/registry/<group>/<plural>`).
pub fn storage_prefix(crd: &Value) -> String {
    format!(
        "/registry/{}/{}",
        text(crd, "/spec/group"),
        text(crd, "/spec/names/plural")
    )
}

/// The catalogue entries of a CRD's served versions (names from `status.acceptedNames`
/// when set, else the spec's).
pub fn resource_defs(crd: &Value) -> Vec<ResourceDef> {
    let group = text(crd, "/spec/group").to_string();
    let names = match crd.pointer("/status/acceptedNames") {
        Some(n) if !text(n, "/plural").is_empty() => n,
        _ => &crd["spec"]["names"],
    };
    let plural = text(names, "/plural").to_string();
    let kind = text(names, "/kind").to_string();
    let singular = match text(names, "/singular") {
        "" => kind.to_lowercase(),
        s => s.to_string(),
    };
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let storage_version = versions
        .iter()
        .find(|v| v["storage"] == true)
        .map(|v| text(v, "/name").to_string())
        .unwrap_or_default();
    let namespaced = text(crd, "/spec/scope") != "Cluster";
    let crd_name = text(crd, "/metadata/name").to_string();
    versions
        .iter()
        .filter(|v| v["served"] == true)
        .map(|v| {
            let version = text(v, "/name").to_string();
            let mut subresources = Vec::new();
            let scale = v.pointer("/subresources/scale").map(|s| ScalePaths {
                spec_replicas: text(s, "/specReplicasPath").to_string(),
                status_replicas: text(s, "/statusReplicasPath").to_string(),
                label_selector: s
                    .get("labelSelectorPath")
                    .and_then(Value::as_str)
                    .map(String::from),
            });
            if scale.is_some() {
                subresources.push(SubresourceDef {
                    name: "scale".into(),
                    group: "autoscaling".into(),
                    version: "v1".into(),
                    kind: "Scale".into(),
                    verbs: vec!["get".into(), "patch".into(), "update".into()],
                });
            }
            if v.pointer("/subresources/status").is_some() {
                subresources.push(SubresourceDef {
                    name: "status".into(),
                    group: group.clone(),
                    version: version.clone(),
                    kind: kind.clone(),
                    verbs: vec!["get".into(), "patch".into(), "update".into()],
                });
            }
            let declared = v
                .get("additionalPrinterColumns")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let custom = CustomResource {
                crd_name: crd_name.clone(),
                schema: v.pointer("/schema/openAPIV3Schema").cloned().unwrap_or(
                    json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
                ),
                columns: columns::columns_of(&declared),
                storage_api_version: format!("{group}/{storage_version}"),
                scale,
                terminating: crd.pointer("/metadata/deletionTimestamp").is_some(),
                managed_schema: OnceLock::new(),
            };
            ResourceDef {
                group: group.clone(),
                version,
                kind: kind.clone(),
                plural: plural.clone(),
                singular: singular.clone(),
                namespaced,
                short_names: strings(names, "/shortNames"),
                categories: strings(names, "/categories"),
                verbs: CRUD_VERBS.iter().map(|s| s.to_string()).collect(),
                subresources,
                storage_prefix: storage_prefix(crd),
                typed: None,
                custom: Some(Arc::new(custom)),
            }
        })
        .collect()
}

/// Sets the field at a simple JSONPath (`.spec.replicas`), creating objects on the way.
pub fn set_path(object: &mut Value, path: &str, value: Value) {
    let fields: Vec<&str> = path.split('.').filter(|f| !f.is_empty()).collect();
    let Some((last, parents)) = fields.split_last() else {
        return;
    };
    let mut current = object;
    for field in parents {
        if !current.get(*field).is_some_and(Value::is_object) {
            current[*field] = json!({});
        }
        current = &mut current[*field];
    }
    current[*last] = value;
}

/// The `autoscaling/v1` Scale of a custom resource.
pub fn scale_of_custom(paths: &ScalePaths, parent: &Value) -> Value {
    let meta = &parent["metadata"];
    let mut metadata = json!({});
    for field in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = meta.get(field) {
            metadata[field] = v.clone();
        }
    }
    let int = |path: &str| {
        columns::lookup(parent, path)
            .and_then(Value::as_i64)
            .unwrap_or(0)
    };
    let mut status = json!({"replicas": int(&paths.status_replicas)});
    if let Some(selector) = paths
        .label_selector
        .as_deref()
        .and_then(|p| columns::lookup(parent, p))
        .and_then(Value::as_str)
    {
        status["selector"] = json!(selector);
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": metadata,
        "spec": {"replicas": int(&paths.spec_replicas)},
        "status": status,
    })
}
