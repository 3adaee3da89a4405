//! Generic metadata validation with upstream's rules and wording, for the REST handlers:
//! which name rule a kind uses ([`name_rule`]), the checks of a new object's metadata
//! ([`validate_object_meta`]: name or generateName, namespace, labels, annotations and their
//! total size, finalizers) and what an update may not change
//! ([`validate_object_meta_update`]). The name formats themselves are `kwk_api::names`.

use std::collections::BTreeMap;

use kwk_api::field::{FIELD_IMMUTABLE, FieldError, Shown, forbidden, invalid, required};
pub use kwk_api::names::NameRule;
use kwk_api::{meta, names};
use serde_json::Value;

use super::util::causes;
use crate::apiserver::errors::Cause;

/// How `metadata.name` of a kind is checked (upstream's `ValidateNameFunc` per registry).
/// Custom resources use [`NameRule::Dns1123Subdomain`] too.
pub fn name_rule(group: &str, kind: &str) -> NameRule {
    match (group, kind) {
        ("", "Namespace") => NameRule::Dns1123Label,
        ("", "Service") => NameRule::Dns1035Label,
        ("apps", "StatefulSet") => NameRule::Dns1123Label,
        ("rbac.authorization.k8s.io", _) => NameRule::PathSegment,
        // Node and Event names are only required to be path segments upstream.
        ("", "Node" | "Event") | ("events.k8s.io", "Event") => NameRule::PathSegment,
        _ => NameRule::Dns1123Subdomain,
    }
}

fn string_map(object: &Value, pointer: &str) -> Option<BTreeMap<String, String>> {
    object.pointer(pointer).and_then(Value::as_object).map(|m| {
        m.iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect()
    })
}

fn meta_str<'a>(object: &'a Value, field: &str) -> &'a str {
    object
        .pointer(&format!("/metadata/{field}"))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The metadata checks of a new object (upstream's `ValidateObjectMeta`); `namespaced`:
/// whether the kind lives in namespaces.
pub fn validate_object_meta(object: &Value, rule: NameRule, namespaced: bool) -> Vec<Cause> {
    let mut errs: Vec<FieldError> = Vec::new();
    let name = meta_str(object, "name");
    let generate_name = meta_str(object, "generateName");
    if !generate_name.is_empty() {
        for p in rule.problems(generate_name, true) {
            errs.push(invalid("metadata.generateName", generate_name, &p));
        }
    }
    if name.is_empty() {
        errs.push(required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else {
        for p in rule.problems(name, false) {
            errs.push(invalid("metadata.name", name, &p));
        }
    }
    let namespace = meta_str(object, "namespace");
    if namespaced {
        if namespace.is_empty() {
            errs.push(required("metadata.namespace", ""));
        } else {
            for p in names::dns1123_label_problems(namespace) {
                errs.push(invalid("metadata.namespace", namespace, &p));
            }
        }
    } else if !namespace.is_empty() {
        errs.push(forbidden("metadata.namespace", "not allowed on this type"));
    }
    if let Some(generation) = object
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .filter(|g| *g < 0)
    {
        errs.push(invalid(
            "metadata.generation",
            generation,
            kwk_api::field::IS_NEGATIVE,
        ));
    }
    if let Some(labels) = string_map(object, "/metadata/labels") {
        errs.extend(meta::validate_labels(&labels, "metadata.labels"));
    }
    if let Some(annotations) = string_map(object, "/metadata/annotations") {
        errs.extend(meta::validate_annotations(
            &annotations,
            "metadata.annotations",
        ));
    }
    let finalizers: Vec<String> = object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().map(String::from))
        .collect();
    errs.extend(meta::validate_finalizers(
        &finalizers,
        "metadata.finalizers",
    ));
    for (i, owner) in object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let path = format!("metadata.ownerReferences[{i}]");
        for field in ["apiVersion", "kind", "name", "uid"] {
            if owner
                .get(field)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .is_empty()
            {
                let detail = match field {
                    "apiVersion" => "version must not be empty",
                    "kind" => "kind must not be empty",
                    "name" => "name must not be empty",
                    _ => "uid must not be empty",
                };
                errs.push(invalid(&format!("{path}.{field}"), "", detail));
            }
        }
    }
    causes(errs)
}

/// What an update may not change (upstream's `ValidateObjectMetaUpdate`): name, namespace,
/// uid, creation time, and the deletion fields.
pub fn validate_object_meta_update(new: &Value, old: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    for field in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        let pointer = format!("/metadata/{field}");
        let (a, b) = (new.pointer(&pointer), old.pointer(&pointer));
        if a != b {
            let shown = a.map_or(Shown::Raw("null".to_string()), Shown::from);
            errs.push(invalid(
                &format!("metadata.{field}"),
                shown,
                FIELD_IMMUTABLE,
            ));
        }
    }
    causes(errs)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(causes: &[Cause]) -> Vec<String> {
        causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn metadata_rules() {
        let ok =
            json!({"metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}}});
        assert!(validate_object_meta(&ok, NameRule::Dns1123Subdomain, true).is_empty());
        let svc = json!({"metadata": {"name": "1web", "namespace": "default"}});
        let causes = validate_object_meta(&svc, name_rule("", "Service"), true);
        assert!(
            fields(&causes)[0]
                .starts_with("metadata.name: Invalid value: \"1web\": a DNS-1035 label")
        );
        let nameless = json!({"metadata": {"namespace": "default"}});
        assert_eq!(
            fields(&validate_object_meta(
                &nameless,
                NameRule::Dns1123Subdomain,
                true
            )),
            ["metadata.name: Required value: name or generateName is required"]
        );
        let generated =
            json!({"metadata": {"generateName": "web-", "name": "web-x1z2", "namespace": "d"}});
        assert!(validate_object_meta(&generated, NameRule::Dns1123Subdomain, true).is_empty());
        let cluster = json!({"metadata": {"name": "n", "namespace": "d"}});
        assert_eq!(
            fields(&validate_object_meta(
                &cluster,
                NameRule::Dns1123Subdomain,
                false
            )),
            ["metadata.namespace: Forbidden: not allowed on this type"]
        );
        let rbac = json!({"metadata": {"name": "system:controller:x"}});
        assert!(
            validate_object_meta(
                &rbac,
                name_rule("rbac.authorization.k8s.io", "ClusterRole"),
                false
            )
            .is_empty()
        );
    }

    #[test]
    fn immutable_metadata() {
        let old = json!({"metadata": {"name": "a", "uid": "1"}});
        let new = json!({"metadata": {"name": "a", "uid": "2"}});
        assert_eq!(
            fields(&validate_object_meta_update(&new, &old)),
            ["metadata.uid: Invalid value: \"2\": field is immutable"]
        );
    }
}
