//! The `components.schemas` of the `/openapi/v3/<gv>` documents and the cache that builds
//! each document once.
//!
//! Schemas are the built-in definitions ([`builtin_definitions`]: `k8s-openapi`'s schemars
//! output annotated with the patch and list extensions, named as upstream names them,
//! `io.k8s.api.apps.v1.Deployment`, `$ref`s to `#/components/schemas/…`, wrapped in a
//! one-element `allOf` next to the field's description as upstream does). A document holds
//! the kinds of its group version, each marked with `x-kubernetes-group-version-kind` (how
//! `kubectl explain` and client-side apply find a kind's schema), and everything they
//! reference.
//!
//! Custom resources: callers pass extra schemas per group version ([`ExtraSchemas`]) to
//! [`crate::apiserver::openapi::documents_with`]; they are added to that document under
//! their own names (replacing a built-in one of the same name) and must carry their own
//! `x-kubernetes-group-version-kind`. A changed set of extra schemas (or of served
//! resources) gives a new document and hash; an unchanged one is served from the cache.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Map, Value, json};

use super::patch::{BuiltinKind, builtin_definitions};

/// Extra schemas per group-version path (`apis/stable.example.com/v1`, `api/v1`): schema
/// name → OpenAPI v3 schema (with `x-kubernetes-group-version-kind` on the kinds).
pub type ExtraSchemas = BTreeMap<String, Map<String, Value>>;

const REF_PREFIX: &str = "#/components/schemas/";

fn builtin() -> &'static (Map<String, Value>, Vec<BuiltinKind>) {
    static BUILTIN: OnceLock<(Map<String, Value>, Vec<BuiltinKind>)> = OnceLock::new();
    BUILTIN.get_or_init(builtin_definitions)
}

fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => {
                        if let Some(name) = r.strip_prefix(REF_PREFIX) {
                            out.push(name.to_string());
                        }
                    }
                    _ => collect_refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// Adds `roots` and every schema they reference from `pool` (names already in `out` are
/// kept as they are).
fn close_over(pool: &Map<String, Value>, roots: Vec<String>, out: &mut Map<String, Value>) {
    let mut queue = roots;
    let mut seen: BTreeSet<String> = out.keys().cloned().collect();
    while let Some(name) = queue.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let Some(schema) = pool.get(&name) else {
            continue;
        };
        collect_refs(schema, &mut queue);
        out.insert(name, schema.clone());
    }
}

/// The schemas of group version `group`/`version`: its built-in kinds (marked with their
/// GVK) and their references, plus `extra` and what it references.
pub fn schemas_for(group: &str, version: &str, extra: Option<&Map<String, Value>>) -> Value {
    let (pool, kinds) = builtin();
    let api_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    let mine: Vec<&BuiltinKind> = kinds
        .iter()
        .filter(|k| k.api_version == api_version)
        .collect();
    let mut out = Map::new();
    close_over(
        pool,
        mine.iter().map(|k| k.definition.clone()).collect(),
        &mut out,
    );
    for kind in mine {
        if let Some(schema) = out.get_mut(&kind.definition).and_then(Value::as_object_mut) {
            // `k8s-openapi` has `metadata` non-optional; upstream does not require it.
            if let Some(required) = schema.get_mut("required").and_then(Value::as_array_mut) {
                required.retain(|f| f != "metadata");
                if required.is_empty() {
                    schema.remove("required");
                }
            }
            let gvk = json!({"group": group, "kind": kind.kind, "version": version});
            let list = schema
                .entry("x-kubernetes-group-version-kind")
                .or_insert_with(|| json!([]));
            if let Some(list) = list.as_array_mut()
                && !list.contains(&gvk)
            {
                list.push(gvk);
            }
        }
    }
    if let Some(extra) = extra {
        let mut refs = Vec::new();
        for (name, schema) in extra {
            collect_refs(schema, &mut refs);
            out.insert(name.clone(), schema.clone());
        }
        close_over(pool, refs, &mut out);
    }
    Value::Object(out)
}

/// A document and its hash (the `?hash=` of the index and the ETag).
pub type CachedDocument = Arc<(Value, String)>;

/// Generated documents by group-version path, each with the fingerprint of what it was
/// generated from.
#[derive(Debug, Default)]
pub struct DocumentCache {
    entries: Mutex<HashMap<String, (String, CachedDocument)>>,
}

impl DocumentCache {
    /// The process-wide cache.
    pub fn global() -> &'static DocumentCache {
        static CACHE: OnceLock<DocumentCache> = OnceLock::new();
        CACHE.get_or_init(DocumentCache::default)
    }

    /// The document of `path` for `fingerprint`, built by `build` unless cached.
    pub fn get_or_build(
        &self,
        path: &str,
        fingerprint: String,
        build: impl FnOnce() -> CachedDocument,
    ) -> CachedDocument {
        if let Ok(entries) = self.entries.lock()
            && let Some((fp, doc)) = entries.get(path)
            && *fp == fingerprint
        {
            return doc.clone();
        }
        let doc = build();
        if let Ok(mut entries) = self.entries.lock() {
            entries.insert(path.to_string(), (fingerprint, doc.clone()));
        }
        doc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_version_holds_its_kinds_and_what_they_reference() {
        let schemas = schemas_for("apps", "v1", None);
        let deployment = &schemas["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            deployment["x-kubernetes-group-version-kind"],
            json!([{"group": "apps", "kind": "Deployment", "version": "v1"}])
        );
        assert_eq!(deployment.get("required"), None);
        assert!(
            deployment["description"]
                .as_str()
                .is_some_and(|d| d.starts_with("Deployment enables"))
        );
        // Referenced (transitively) from other groups, without a GVK of their own.
        let containers = &schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(containers["x-kubernetes-list-type"], "map");
        assert!(schemas["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"].is_object());
        assert_eq!(
            schemas["io.k8s.api.core.v1.Pod"].get("x-kubernetes-group-version-kind"),
            None
        );
        // Every reference resolves within the document.
        let mut refs = Vec::new();
        collect_refs(&schemas, &mut refs);
        for name in refs {
            assert!(
                schemas.get(&name).is_some(),
                "{name} is referenced but missing"
            );
        }
        // Nothing of other group versions' kinds.
        assert_eq!(schemas.get("io.k8s.api.batch.v1.Job"), None);
        let core = schemas_for("", "v1", None);
        assert_eq!(
            core["io.k8s.api.core.v1.Service"]["x-kubernetes-group-version-kind"],
            json!([{"group": "", "kind": "Service", "version": "v1"}])
        );
    }

    #[test]
    fn extra_schemas_are_added_with_their_references() {
        let mut extra = Map::new();
        extra.insert(
            "com.example.stable.v1.CronTab".into(),
            json!({
                "type": "object",
                "x-kubernetes-group-version-kind": [{"group": "stable.example.com", "kind": "CronTab", "version": "v1"}],
                "properties": {"metadata": {"allOf": [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}]}},
            }),
        );
        let schemas = schemas_for("stable.example.com", "v1", Some(&extra));
        assert_eq!(
            schemas["com.example.stable.v1.CronTab"]["x-kubernetes-group-version-kind"][0]["kind"],
            "CronTab"
        );
        assert!(schemas["io.k8s.apimachinery.pkg.apis.meta.v1.ManagedFieldsEntry"].is_object());
    }

    #[test]
    fn every_served_built_in_kind_has_a_schema_in_its_document() {
        let catalog = crate::apiserver::catalog::Catalog::builtin();
        let docs = crate::apiserver::openapi::documents(&catalog);
        let mut missing = Vec::new();
        for (group, versions) in catalog.groups() {
            for version in versions {
                let path = crate::apiserver::openapi::gv_path(&group, &version);
                let schemas = &docs[&path].0["components"]["schemas"];
                for def in catalog.resources_of(&group, &version) {
                    let gvk = json!({"group": group, "kind": def.kind, "version": version});
                    let found = schemas.as_object().into_iter().flatten().any(|(_, s)| {
                        s["x-kubernetes-group-version-kind"]
                            .as_array()
                            .is_some_and(|l| l.contains(&gvk))
                    });
                    if !found {
                        missing.push(format!("{path} {}", def.kind));
                    }
                }
            }
        }
        assert_eq!(missing, Vec::<String>::new());
    }

    #[test]
    fn the_cache_builds_once_per_fingerprint() {
        let cache = DocumentCache::default();
        let built = std::cell::Cell::new(0);
        let build = || {
            built.set(built.get() + 1);
            Arc::new((json!({}), built.get().to_string()))
        };
        let a = cache.get_or_build("api/v1", "x".into(), build);
        let b = cache.get_or_build("api/v1", "x".into(), build);
        assert!(Arc::ptr_eq(&a, &b));
        let c = cache.get_or_build("api/v1", "y".into(), build);
        assert_eq!((built.get(), c.1.as_str()), (2, "2"));
    }
}
