//! apiextensions.k8s.io/v1 CustomResourceDefinitions: defaults (singular, listKind, the
//! `None` conversion), the stored version recorded on create, and the basic checks: group
//! with a dot, names (plural, kind, listKind required; DNS-1035 syntax), `metadata.name` ==
//! `<plural>.<group>`, exactly one storage version, unique version names, a structural
//! schema per version (typed object at the root, typed properties), printer columns, and
//! what may not change once established. Upstream has no printer: NAME, CREATED AT.

use std::collections::BTreeSet;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceDefinitionStatus, JSONSchemaProps,
    JSONSchemaPropsOrBool,
};
use kwk_api::field::{
    FIELD_IMMUTABLE, FieldError, Shown, forbidden, invalid, not_supported, required,
};
use kwk_api::names;
use serde_json::Value;

use super::cells::{created_at_columns, created_at_row};
use super::util::{validate_typed, with_typed};
use super::{Column, KindStrategy};
use crate::apiserver::errors::Cause;

#[derive(Debug, Default, Clone, Copy)]
pub struct CustomResourceDefinitionStrategy;

/// Upstream's CRD defaults.
pub fn default_crd(crd: &mut CustomResourceDefinition) {
    let spec = &mut crd.spec;
    if spec
        .names
        .singular
        .as_deref()
        .unwrap_or_default()
        .is_empty()
    {
        spec.names.singular = Some(spec.names.kind.to_lowercase());
    }
    if spec
        .names
        .list_kind
        .as_deref()
        .unwrap_or_default()
        .is_empty()
        && !spec.names.kind.is_empty()
    {
        spec.names.list_kind = Some(format!("{}List", spec.names.kind));
    }
    spec.conversion.get_or_insert_with(|| {
        serde_json::from_value(serde_json::json!({"strategy": "None"})).unwrap_or_default()
    });
}

/// On create: the storage version is the first stored version; the cleanup finalizer makes
/// a deletion wait until the custom resources are removed.
pub fn prepare_crd(crd: &mut CustomResourceDefinition) {
    let finalizers = crd.metadata.finalizers.get_or_insert_with(Vec::new);
    if !finalizers
        .iter()
        .any(|f| f == crate::apiserver::crd::CLEANUP_FINALIZER)
    {
        finalizers.push(crate::apiserver::crd::CLEANUP_FINALIZER.to_string());
    }
    let storage = crd
        .spec
        .versions
        .iter()
        .find(|v| v.storage)
        .map(|v| v.name.clone());
    crd.status = Some(CustomResourceDefinitionStatus {
        stored_versions: storage.map(|v| vec![v]),
        ..Default::default()
    });
}

fn show_versions() -> Shown {
    Shown::Raw("[]apiextensions.CustomResourceDefinitionVersion{...}".to_string())
}

fn dns1035(path: &str, value: &str, mixed_case: bool, errs: &mut Vec<FieldError>) {
    if value.is_empty() {
        return;
    }
    let checked = if mixed_case {
        value.to_lowercase()
    } else {
        value.to_string()
    };
    let problems = names::dns1035_label_problems(&checked);
    if !problems.is_empty() {
        let joined = problems.join(",");
        let detail = if mixed_case {
            format!("may have mixed case, but should otherwise match: {joined}")
        } else {
            joined
        };
        errs.push(invalid(path, value, &detail));
    }
}

/// Structural schema basics: a type everywhere a property is specified (unless it preserves
/// unknown fields or is int-or-string).
fn check_schema(schema: &JSONSchemaProps, path: &str, root: bool, errs: &mut Vec<FieldError>) {
    let ty = schema.type_.as_deref().unwrap_or_default();
    let free = schema.x_kubernetes_preserve_unknown_fields == Some(true)
        || schema.x_kubernetes_int_or_string == Some(true);
    if root {
        if ty.is_empty() {
            errs.push(required(
                &format!("{path}.type"),
                "must not be empty at the root",
            ));
        } else if ty != "object" {
            errs.push(invalid(
                &format!("{path}.type"),
                ty,
                "must be object at the root",
            ));
        }
    } else if ty.is_empty() && !free {
        errs.push(required(
            &format!("{path}.type"),
            "must not be empty for specified object fields",
        ));
    }
    check_extensions(schema, path, ty, errs);
    for (name, child) in schema.properties.iter().flatten() {
        let child_path = format!("{path}.properties[{name}]");
        if root && name == "metadata" && !metadata_schema_allowed(child) {
            errs.push(forbidden(
                &child_path,
                "must not specify anything other than name and generateName, but metadata is implicitly specified",
            ));
            continue;
        }
        check_schema(child, &child_path, false, errs);
    }
    if let Some(JSONSchemaPropsOrBool::Schema(extra)) = &schema.additional_properties {
        if schema.properties.as_ref().is_some_and(|p| !p.is_empty()) {
            errs.push(forbidden(
                &format!("{path}.additionalProperties"),
                "additionalProperties and properties are mutual exclusive",
            ));
        }
        check_schema(extra, &format!("{path}.additionalProperties"), false, errs);
    }
    if ty == "array" && schema.items.is_none() {
        errs.push(required(&format!("{path}.items"), "must be specified"));
    }
    if let Some(items) = &schema.items
        && let Ok(item) = serde_json::from_value::<JSONSchemaProps>(
            serde_json::to_value(items).unwrap_or_default(),
        )
    {
        check_schema(&item, &format!("{path}.items"), false, errs);
    }
}

/// The `x-kubernetes-*` rules of a structural schema node.
fn check_extensions(schema: &JSONSchemaProps, path: &str, ty: &str, errs: &mut Vec<FieldError>) {
    if schema.x_kubernetes_preserve_unknown_fields == Some(false) {
        errs.push(invalid(
            &format!("{path}.x-kubernetes-preserve-unknown-fields"),
            Shown::Raw("false".into()),
            "must be true or undefined",
        ));
    }
    if schema.x_kubernetes_int_or_string == Some(true) && !ty.is_empty() {
        errs.push(invalid(
            &format!("{path}.type"),
            ty,
            "must be empty if x-kubernetes-int-or-string is true",
        ));
    }
    if schema.x_kubernetes_embedded_resource == Some(true) && ty != "object" {
        let field = format!("{path}.type");
        let detail = "must be object if x-kubernetes-embedded-resource is true";
        errs.push(if ty.is_empty() {
            required(&field, detail)
        } else {
            invalid(&field, ty, detail)
        });
    }
    if let Some(list_type) = schema.x_kubernetes_list_type.as_deref() {
        let field = format!("{path}.x-kubernetes-list-type");
        if !["atomic", "set", "map"].contains(&list_type) {
            errs.push(not_supported(&field, list_type, &["atomic", "set", "map"]));
        } else if ty != "array" {
            errs.push(invalid(
                &field,
                list_type,
                "must only be used if type is array",
            ));
        } else if list_type == "map"
            && schema
                .x_kubernetes_list_map_keys
                .as_ref()
                .is_none_or(|k| k.is_empty())
        {
            errs.push(required(
                &format!("{path}.x-kubernetes-list-map-keys"),
                "must not be empty if x-kubernetes-list-type is map",
            ));
        }
    }
}

/// At the root, `metadata` may only constrain `name` and `generateName`.
fn metadata_schema_allowed(schema: &JSONSchemaProps) -> bool {
    let ty_ok = matches!(schema.type_.as_deref(), None | Some("") | Some("object"));
    let props_ok = schema
        .properties
        .iter()
        .flatten()
        .all(|(name, _)| name == "name" || name == "generateName");
    ty_ok && props_ok && schema.additional_properties.is_none() && schema.required.is_none()
}

fn validate_crd(
    new: &CustomResourceDefinition,
    old: Option<&CustomResourceDefinition>,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = &new.spec;
    let name = new.metadata.name.as_deref().unwrap_or_default();
    if name != format!("{}.{}", spec.names.plural, spec.group) {
        errs.push(invalid(
            "metadata.name",
            name,
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    if spec.group.is_empty() {
        errs.push(required("spec.group", ""));
    } else {
        let problems = names::dns1123_subdomain_problems(&spec.group);
        if !problems.is_empty() {
            errs.push(invalid(
                "spec.group",
                spec.group.as_str(),
                &problems.join(","),
            ));
        } else if !spec.group.contains('.') {
            errs.push(invalid(
                "spec.group",
                spec.group.as_str(),
                "should be a domain with at least one dot",
            ));
        }
    }
    match spec.scope.as_str() {
        "Cluster" | "Namespaced" => {}
        "" => errs.push(required("spec.scope", "")),
        other => errs.push(not_supported(
            "spec.scope",
            other,
            &["Cluster", "Namespaced"],
        )),
    }
    let mut seen = BTreeSet::new();
    let mut unique = true;
    for (i, version) in spec.versions.iter().enumerate() {
        let v_path = format!("spec.versions[{i}]");
        unique &= seen.insert(version.name.as_str());
        let problems = names::dns1035_label_problems(&version.name);
        if !problems.is_empty() {
            errs.push(invalid(
                &format!("{v_path}.name"),
                version.name.as_str(),
                &problems.join(","),
            ));
        }
        match version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
        {
            None => errs.push(required(
                &format!("{v_path}.schema.openAPIV3Schema"),
                "schemas are required",
            )),
            Some(schema) => check_schema(
                schema,
                &format!("{v_path}.schema.openAPIV3Schema"),
                true,
                &mut errs,
            ),
        }
        for (j, column) in version
            .additional_printer_columns
            .iter()
            .flatten()
            .enumerate()
        {
            let c_path = format!("{v_path}.additionalPrinterColumns[{j}]");
            if column.name.is_empty() {
                errs.push(required(&format!("{c_path}.name"), ""));
            }
            const TYPES: &[&str] = &["boolean", "date", "integer", "number", "string"];
            if column.type_.is_empty() {
                errs.push(required(&format!("{c_path}.type"), ""));
            } else if !TYPES.contains(&column.type_.as_str()) {
                errs.push(not_supported(
                    &format!("{c_path}.type"),
                    column.type_.as_str(),
                    TYPES,
                ));
            }
            if column.json_path.is_empty() {
                errs.push(required(&format!("{c_path}.jsonPath"), ""));
            }
        }
    }
    if !unique {
        errs.push(invalid(
            "spec.versions",
            show_versions(),
            "must contain unique version names",
        ));
    }
    if spec.versions.iter().filter(|v| v.storage).count() != 1 {
        errs.push(invalid(
            "spec.versions",
            show_versions(),
            "must have exactly one version marked as storage version",
        ));
    }
    let n = &spec.names;
    for (field, value) in [
        ("plural", n.plural.as_str()),
        ("singular", n.singular.as_deref().unwrap_or_default()),
        ("kind", n.kind.as_str()),
        ("listKind", n.list_kind.as_deref().unwrap_or_default()),
    ] {
        if value.is_empty() {
            errs.push(required(&format!("spec.names.{field}"), ""));
        }
    }
    dns1035("spec.names.plural", &n.plural, false, &mut errs);
    dns1035(
        "spec.names.singular",
        n.singular.as_deref().unwrap_or_default(),
        false,
        &mut errs,
    );
    dns1035("spec.names.kind", &n.kind, true, &mut errs);
    dns1035(
        "spec.names.listKind",
        n.list_kind.as_deref().unwrap_or_default(),
        true,
        &mut errs,
    );
    for (i, short) in n.short_names.iter().flatten().enumerate() {
        dns1035(
            &format!("spec.names.shortNames[{i}]"),
            short,
            false,
            &mut errs,
        );
    }
    for (i, category) in n.categories.iter().flatten().enumerate() {
        dns1035(
            &format!("spec.names.categories[{i}]"),
            category,
            false,
            &mut errs,
        );
    }
    if !n.kind.is_empty() && Some(n.kind.as_str()) == n.list_kind.as_deref() {
        errs.push(invalid(
            "spec.names.listKind",
            n.kind.as_str(),
            "kind and listKind may not be the same",
        ));
    }
    if let Some(conversion) = &spec.conversion {
        match conversion.strategy.as_str() {
            "None" | "Webhook" => {}
            "" => errs.push(required("spec.conversion.strategy", "")),
            other => errs.push(not_supported(
                "spec.conversion.strategy",
                other,
                &["None", "Webhook"],
            )),
        }
    }
    if let Some(old) = old {
        let established = old
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
        let mut immutable = vec![
            ("spec.group", spec.group.as_str(), old.spec.group.as_str()),
            (
                "spec.names.plural",
                n.plural.as_str(),
                old.spec.names.plural.as_str(),
            ),
        ];
        if established {
            immutable.push(("spec.scope", spec.scope.as_str(), old.spec.scope.as_str()));
            immutable.push((
                "spec.names.kind",
                n.kind.as_str(),
                old.spec.names.kind.as_str(),
            ));
        }
        for (path, new_value, old_value) in immutable {
            if new_value != old_value {
                errs.push(invalid(path, new_value, FIELD_IMMUTABLE));
            }
        }
    }
    errs
}

impl KindStrategy for CustomResourceDefinitionStrategy {
    fn default(&self, object: &mut Value) {
        with_typed(object, default_crd);
    }

    fn prepare_for_create(&self, object: &mut Value) {
        with_typed(object, prepare_crd);
    }

    fn validate(&self, object: &Value, old: Option<&Value>) -> Vec<Cause> {
        validate_typed(object, old, validate_crd)
    }

    fn columns(&self) -> Vec<Column> {
        created_at_columns()
    }

    fn row(&self, object: &Value, _now: i64) -> Vec<Value> {
        created_at_row(object)
    }
}
