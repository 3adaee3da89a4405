//! The OpenAPI v3 schemas of custom resources, added to their group version's document:
//! `<reversed group>.<version>.<Kind>` (the CRD's schema with `apiVersion`, `kind`,
//! `metadata` and `x-kubernetes-group-version-kind`, as upstream publishes it) and its list,
//! plus the `meta/v1` schemas they reference — what `kubectl explain` and client-side
//! validation read.

use std::sync::OnceLock;

use serde_json::{Map, Value, json};

use super::CustomResource;
use crate::apiserver::catalog::ResourceDef;
use crate::apiserver::patch::SchemaGraph;

const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.";

/// The schema name of a custom kind: `stable.example.com`, `v1`, `CronTab` →
/// `com.example.stable.v1.CronTab`.
pub fn definition_name(group: &str, version: &str, kind: &str) -> String {
    let reversed: Vec<&str> = group.split('.').rev().collect();
    format!("{}.{version}.{kind}", reversed.join("."))
}

/// The `meta/v1` schemas (ObjectMeta, ListMeta and what they reference).
fn meta_definitions() -> &'static Map<String, Value> {
    static META_DEFS: OnceLock<Map<String, Value>> = OnceLock::new();
    META_DEFS.get_or_init(|| {
        let (definitions, _) = crate::apiserver::patch::builtin_definitions();
        definitions
            .into_iter()
            .filter(|(name, _)| name.starts_with(META))
            .collect()
    })
}

/// The published schema of a custom kind: the version's schema with `apiVersion`, `kind`,
/// `metadata` (a reference to `ObjectMeta`) and `x-kubernetes-group-version-kind`.
pub fn kind_schema(def: &ResourceDef, custom: &CustomResource) -> Value {
    let gvk = json!([{"group": def.group, "version": def.version, "kind": def.kind}]);
    let mut schema = custom.schema.clone();
    strip_internal(&mut schema);
    let props = schema
        .as_object_mut()
        .map(|m| m.entry("properties").or_insert_with(|| json!({})));
    if let Some(Value::Object(props)) = props {
        props.insert(
            "apiVersion".into(),
            json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"}),
        );
        props.insert(
            "kind".into(),
            json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"}),
        );
        props.insert(
            "metadata".into(),
            json!({"allOf": [{"$ref": format!("#/components/schemas/{META}ObjectMeta")}], "default": {}, "description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"}),
        );
    }
    schema["x-kubernetes-group-version-kind"] = gvk;
    schema
}

/// The kind's schema compiled with the `meta/v1` definitions it references, its root named
/// by [`definition_name`] (what field management reads custom resources with).
pub fn compile(def: &ResourceDef, custom: &CustomResource) -> (SchemaGraph, String) {
    let name = definition_name(&def.group, &def.version, &def.kind);
    let mut definitions = meta_definitions().clone();
    definitions.insert(name.clone(), kind_schema(def, custom));
    (SchemaGraph::from_definitions(&definitions), name)
}

/// Adds the schemas of the custom resources among `defs` to `doc`.
pub fn add_schemas<'a>(
    defs: impl IntoIterator<Item = &'a std::sync::Arc<ResourceDef>>,
    doc: &mut Value,
) {
    let mut added = Map::new();
    for def in defs {
        let Some(custom) = &def.custom else {
            continue;
        };
        let schema = kind_schema(def, custom);
        let name = definition_name(&def.group, &def.version, &def.kind);
        let list = json!({
            "type": "object",
            "description": format!("{}List is a list of {}", def.kind, def.kind),
            "required": ["items"],
            "properties": {
                "apiVersion": {"type": "string"},
                "items": {"type": "array", "items": {"$ref": format!("#/components/schemas/{name}")}},
                "kind": {"type": "string"},
                "metadata": {"allOf": [{"$ref": format!("#/components/schemas/{META}ListMeta")}], "default": {}},
            },
            "x-kubernetes-group-version-kind": [{"group": def.group, "version": def.version, "kind": format!("{}List", def.kind)}],
        });
        added.insert(name.clone(), schema);
        added.insert(format!("{name}List"), list);
    }
    if added.is_empty() {
        return;
    }
    for (name, schema) in meta_definitions() {
        added.entry(name.clone()).or_insert_with(|| schema.clone());
    }
    let schemas = doc
        .as_object_mut()
        .map(|d| d.entry("components").or_insert_with(|| json!({})))
        .and_then(|c| {
            if !c.is_object() {
                *c = json!({});
            }
            c.as_object_mut()
        })
        .map(|c| c.entry("schemas").or_insert_with(|| json!({})));
    if let Some(Value::Object(schemas)) = schemas {
        for (name, schema) in added {
            schemas.entry(name).or_insert(schema);
        }
    }
}

/// Drops what OpenAPI readers do not understand (`x-kubernetes-validations` rules stay out
/// of the published schema, as upstream).
fn strip_internal(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            map.remove("x-kubernetes-validations");
            for v in map.values_mut() {
                strip_internal(v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strip_internal),
        _ => {}
    }
}
