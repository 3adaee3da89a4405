//! OpenAPI v3 (`/openapi/v3` index and one document per group version), generated from the
//! catalogue. Each document lists, per resource, the item path with a PATCH operation
//! carrying `x-kubernetes-group-version-kind` and the `fieldValidation` parameter (what
//! kubectl and helm look for before they let the server validate: `apply`, `create -f`,
//! `edit`, `helm install`), and `components.schemas` with the group version's kinds and
//! everything they reference (`openapi_schemas`: for `kubectl explain` and client-side
//! apply). Documents are generated once per catalogue state and cached.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};
use sha2::{Digest, Sha512};

use super::catalog::{Catalog, ResourceDef};
use super::openapi_schemas::{CachedDocument, DocumentCache, ExtraSchemas, schemas_for};

/// The URL path segment of a group version: `api/v1` or `apis/apps/v1`.
pub fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// All documents by group-version path, each with its content hash.
pub fn documents(catalog: &Catalog) -> BTreeMap<String, CachedDocument> {
    documents_with(catalog, &ExtraSchemas::new())
}

/// [`documents`] with extra schemas per group-version path added to that document (the
/// hook for custom resources; see [`super::openapi_schemas`]).
pub fn documents_with(catalog: &Catalog, extra: &ExtraSchemas) -> BTreeMap<String, CachedDocument> {
    let mut docs = BTreeMap::new();
    for (group, versions) in catalog.groups() {
        for version in versions {
            let path = gv_path(&group, &version);
            let extra = extra.get(&path);
            let fingerprint = fingerprint(catalog, &group, &version, extra);
            let doc = DocumentCache::global().get_or_build(&path, fingerprint, || {
                let mut doc = document(catalog, &group, &version, extra);
                super::crd::openapi::add_schemas(catalog.resources_of(&group, &version), &mut doc);
                let hash = hash(&doc);
                Arc::new((doc, hash))
            });
            docs.insert(path, doc);
        }
    }
    docs
}

/// What a document is generated from: the group version's resources (with custom
/// resources' schemas) and extra schemas.
fn fingerprint(
    catalog: &Catalog,
    group: &str,
    version: &str,
    extra: Option<&serde_json::Map<String, Value>>,
) -> String {
    let mut text = String::new();
    for def in catalog.resources_of(group, version) {
        text.push_str(&format!(
            "{}|{}|{}|{:?};",
            def.plural, def.kind, def.namespaced, def.verbs
        ));
        if let Some(custom) = &def.custom {
            // A CRD's schema can change while its kind and verbs stay.
            text.push_str(&custom.schema.to_string());
        }
    }
    if let Some(extra) = extra {
        text.push_str(&serde_json::to_string(extra).unwrap_or_default());
    }
    text
}

/// The `/openapi/v3` index.
pub fn index(docs: &BTreeMap<String, CachedDocument>) -> Value {
    let paths: serde_json::Map<String, Value> = docs
        .iter()
        .map(|(path, doc)| {
            let hash = &doc.1;
            (
                path.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}),
            )
        })
        .collect();
    json!({"paths": paths})
}

fn hash(doc: &Value) -> String {
    let digest = Sha512::digest(doc.to_string().as_bytes());
    hex::encode_upper(digest)
}

fn document(
    catalog: &Catalog,
    group: &str,
    version: &str,
    extra: Option<&serde_json::Map<String, Value>>,
) -> Value {
    let mut paths = serde_json::Map::new();
    for def in catalog.resources_of(group, version) {
        if def.supports("patch") {
            paths.insert(item_path(def), json!({"patch": patch_operation(def)}));
        } else if def.supports("create") {
            // Create-only kinds (reviews): a POST names the kind for `kubectl explain`.
            // kubectl decides whether the server validates fields only from a PATCH
            // operation carrying `fieldValidation`; without one it falls back to
            // `/openapi/v2`, which is not served, and refuses `create -f` unless
            // `--validate=false`. So the collection path also describes a PATCH with the
            // parameter (the server answers an actual PATCH 405, as upstream).
            let path = item_path(def).trim_end_matches("/{name}").to_string();
            paths.insert(
                path,
                json!({"post": post_operation(def), "patch": patch_operation(def)}),
            );
        }
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": schemas_for(group, version, extra)},
    })
}

fn item_path(def: &ResourceDef) -> String {
    let base = gv_path(&def.group, &def.version);
    if def.namespaced {
        format!("/{base}/namespaces/{{namespace}}/{}/{{name}}", def.plural)
    } else {
        format!("/{base}/{}/{{name}}", def.plural)
    }
}

fn post_operation(def: &ResourceDef) -> Value {
    json!({
        "operationId": format!("create{}", def.kind),
        "x-kubernetes-group-version-kind": {"group": def.group, "version": def.version, "kind": def.kind},
        "x-kubernetes-action": "post",
        "parameters": [query("dryRun"), query("fieldManager"), query("fieldValidation")],
        "responses": {"201": {"description": "Created"}},
    })
}

fn query(name: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": "string"}, "uniqueItems": true})
}

fn patch_operation(def: &ResourceDef) -> Value {
    json!({
        "operationId": format!("patch{}", def.kind),
        "x-kubernetes-group-version-kind": {"group": def.group, "version": def.version, "kind": def.kind},
        "x-kubernetes-action": "patch",
        "parameters": [query("dryRun"), query("fieldManager"), query("fieldValidation"), {"name": "force", "in": "query", "schema": {"type": "boolean"}, "uniqueItems": true}],
        "requestBody": {"content": {
            "application/apply-patch+yaml": {},
            "application/json-patch+json": {},
            "application/merge-patch+json": {},
            "application/strategic-merge-patch+json": {},
        }},
        "responses": {"200": {"description": "OK"}, "201": {"description": "Created"}},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_patchable_kind_has_a_patch_operation_with_field_validation() {
        let catalog = Catalog::builtin();
        let docs = documents(&catalog);
        let (apps, hash) = &**docs.get("apis/apps/v1").expect("apps/v1");
        let op = &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(op["x-kubernetes-group-version-kind"]["kind"], "Deployment");
        assert!(
            op["parameters"]
                .as_array()
                .expect("params")
                .iter()
                .any(|p| p["name"] == "fieldValidation")
        );
        assert_eq!(hash.len(), 128);
        let idx = index(&docs);
        assert!(
            idx["paths"]["api/v1"]["serverRelativeURL"]
                .as_str()
                .expect("url")
                .starts_with("/openapi/v3/api/v1?hash=")
        );
    }

    #[test]
    fn create_only_kinds_declare_field_validation_as_kubectl_looks_for_it() {
        let catalog = Catalog::builtin();
        let docs = documents(&catalog);
        for (gv, path, kind) in [
            (
                "apis/authentication.k8s.io/v1",
                "/apis/authentication.k8s.io/v1/tokenreviews",
                "TokenReview",
            ),
            (
                "apis/authentication.k8s.io/v1",
                "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                "SelfSubjectReview",
            ),
            (
                "apis/authorization.k8s.io/v1",
                "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                "SubjectAccessReview",
            ),
        ] {
            let doc = &docs[gv].0;
            for verb in ["post", "patch"] {
                let op = &doc["paths"][path][verb];
                assert_eq!(
                    op["x-kubernetes-group-version-kind"]["kind"], kind,
                    "{path} {verb}"
                );
                assert!(
                    op["parameters"].as_array().is_some_and(|p| p
                        .iter()
                        .any(|p| p["name"] == "fieldValidation" && p["in"] == "query")),
                    "{path} {verb}"
                );
            }
            let schema = format!(
                "io.k8s.api.{}.{kind}",
                gv.trim_start_matches("apis/")
                    .replace(".k8s.io", "")
                    .replace('/', ".")
            );
            assert!(
                doc["components"]["schemas"][&schema].is_object(),
                "{schema}"
            );
        }
    }
}
