//! rbac.authorization.k8s.io/v1: Roles and ClusterRoles (rule checks; NAME/CREATED AT
//! table, as upstream has no printer for them) and RoleBindings and ClusterRoleBindings
//! (the `rbac.authorization.k8s.io` apiGroup defaults, roleRef and subject checks, a roleRef
//! that may not change, the table with the wide subject columns).

use k8s_openapi::api::rbac::v1::{PolicyRule, RoleRef, Subject};
use kwk_api::field::{FieldError, Shown, invalid, not_supported, required};
use kwk_api::names;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::cells::{age_column, col, created_at_columns, created_at_row, name_column, wide};
use super::util::{arr, s, since, typed};
use super::{Column, KindStrategy, name_of};
use crate::apiserver::errors::Cause;

/// The RBAC API group.
pub const GROUP: &str = "rbac.authorization.k8s.io";

/// What Roles and ClusterRoles share (the typed kinds differ only in aggregation).
#[derive(Debug, Default, Deserialize, Serialize)]
struct AnyRole {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    rules: Option<Vec<PolicyRule>>,
}

/// What RoleBindings and ClusterRoleBindings share.
#[derive(Debug, Default, Deserialize, Serialize)]
struct AnyBinding {
    #[serde(default)]
    kind: String,
    #[serde(rename = "roleRef", default)]
    role_ref: RoleRef,
    #[serde(default)]
    subjects: Option<Vec<Subject>>,
}

// ---- Role, ClusterRole ----

#[derive(Debug, Default, Clone, Copy)]
pub struct RoleStrategy;

fn validate_rule(rule: &PolicyRule, namespaced: bool, path: &str, errs: &mut Vec<FieldError>) {
    if rule.verbs.is_empty() {
        errs.push(required(
            &format!("{path}.verbs"),
            "verbs must contain at least one value",
        ));
    }
    let urls = rule.non_resource_urls.as_deref().unwrap_or_default();
    let shown = || Shown::Raw(format!("[]string{:?}", urls).replace("\", \"", "\" \""));
    if !urls.is_empty() {
        if namespaced {
            errs.push(invalid(
                &format!("{path}.nonResourceURLs"),
                shown(),
                "namespaced rules cannot apply to non-resource URLs",
            ));
        }
        let has_resources = [&rule.api_groups, &rule.resources, &rule.resource_names]
            .iter()
            .any(|l| l.as_ref().is_some_and(|l| !l.is_empty()));
        if has_resources {
            errs.push(invalid(
                &format!("{path}.nonResourceURLs"),
                shown(),
                "rules cannot apply to both regular resources and non-resource URLs",
            ));
        }
        return;
    }
    if rule.api_groups.as_ref().is_none_or(Vec::is_empty) {
        errs.push(required(
            &format!("{path}.apiGroups"),
            "resource rules must supply at least one api group",
        ));
    }
    if rule.resources.as_ref().is_none_or(Vec::is_empty) {
        errs.push(required(
            &format!("{path}.resources"),
            "resource rules must supply at least one resource",
        ));
    }
}

impl KindStrategy for RoleStrategy {
    fn validate(&self, object: &Value, _old: Option<&Value>) -> Vec<Cause> {
        let Some(role) = typed::<AnyRole>(object) else {
            return Vec::new();
        };
        let namespaced = role.kind == "Role";
        let mut errs = Vec::new();
        for (i, rule) in role.rules.iter().flatten().enumerate() {
            validate_rule(rule, namespaced, &format!("rules[{i}]"), &mut errs);
        }
        super::util::causes(errs)
    }

    fn columns(&self) -> Vec<Column> {
        created_at_columns()
    }

    fn row(&self, object: &Value, _now: i64) -> Vec<Value> {
        created_at_row(object)
    }
}

// ---- RoleBinding, ClusterRoleBinding ----

#[derive(Debug, Default, Clone, Copy)]
pub struct RoleBindingStrategy;

fn validate_subject(subject: &Subject, namespaced: bool, path: &str, errs: &mut Vec<FieldError>) {
    if subject.name.is_empty() {
        errs.push(required(&format!("{path}.name"), ""));
    }
    let group = subject.api_group.as_deref().unwrap_or_default();
    match subject.kind.as_str() {
        "ServiceAccount" => {
            if !subject.name.is_empty() {
                names::check_dns1123_subdomain(&format!("{path}.name"), &subject.name, errs);
            }
            if !group.is_empty() {
                errs.push(not_supported(&format!("{path}.apiGroup"), group, &[""]));
            }
            if !namespaced && subject.namespace.as_deref().unwrap_or_default().is_empty() {
                errs.push(required(&format!("{path}.namespace"), ""));
            }
        }
        "User" | "Group" => {
            if group != GROUP {
                errs.push(not_supported(&format!("{path}.apiGroup"), group, &[GROUP]));
            }
        }
        other => errs.push(not_supported(
            &format!("{path}.kind"),
            other,
            &["ServiceAccount", "User", "Group"],
        )),
    }
}

fn show_role_ref(r: &RoleRef) -> Shown {
    Shown::Raw(format!(
        "rbac.RoleRef{{APIGroup:{:?}, Kind:{:?}, Name:{:?}}}",
        r.api_group, r.kind, r.name
    ))
}

fn validate_binding(binding: &AnyBinding, old: Option<&AnyBinding>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let namespaced = binding.kind == "RoleBinding";
    let r = &binding.role_ref;
    if r.api_group != GROUP {
        errs.push(not_supported(
            "roleRef.apiGroup",
            r.api_group.as_str(),
            &[GROUP],
        ));
    }
    let kinds: &[&str] = if namespaced {
        &["Role", "ClusterRole"]
    } else {
        &["ClusterRole"]
    };
    if !kinds.contains(&r.kind.as_str()) {
        errs.push(not_supported("roleRef.kind", r.kind.as_str(), kinds));
    }
    if r.name.is_empty() {
        errs.push(required("roleRef.name", ""));
    } else {
        for p in names::path_segment_problems(&r.name, false) {
            errs.push(invalid("roleRef.name", r.name.as_str(), &p));
        }
    }
    for (i, subject) in binding.subjects.iter().flatten().enumerate() {
        validate_subject(subject, namespaced, &format!("subjects[{i}]"), &mut errs);
    }
    if let Some(old) = old
        && old.role_ref != binding.role_ref
    {
        errs.push(invalid(
            "roleRef",
            show_role_ref(r),
            "cannot change roleRef",
        ));
    }
    errs
}

impl KindStrategy for RoleBindingStrategy {
    /// `roleRef.apiGroup` and the apiGroup of User and Group subjects default to
    /// `rbac.authorization.k8s.io`.
    fn default(&self, object: &mut Value) {
        if let Some(r) = object.get_mut("roleRef").and_then(Value::as_object_mut) {
            let empty = r
                .get("apiGroup")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .is_empty();
            if empty {
                r.insert("apiGroup".into(), json!(GROUP));
            }
        }
        for subject in object
            .get_mut("subjects")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let kind = s(subject, "/kind").to_string();
            if let Some(map) = subject.as_object_mut()
                && map
                    .get("apiGroup")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .is_empty()
                && (kind == "User" || kind == "Group")
            {
                map.insert("apiGroup".into(), json!(GROUP));
            }
        }
    }

    fn validate(&self, object: &Value, old: Option<&Value>) -> Vec<Cause> {
        let Some(binding) = typed::<AnyBinding>(object) else {
            return Vec::new();
        };
        let old = old.and_then(typed::<AnyBinding>);
        super::util::causes(validate_binding(&binding, old.as_ref()))
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            name_column(),
            col("Role", "string", "The role granted (Kind/name)."),
            age_column(),
            wide("Users", "string", "Users bound."),
            wide("Groups", "string", "Groups bound."),
            wide(
                "ServiceAccounts",
                "string",
                "Service accounts bound (namespace/name).",
            ),
        ]
    }

    fn row(&self, object: &Value, now: i64) -> Vec<Value> {
        let mut users = Vec::new();
        let mut groups = Vec::new();
        let mut accounts = Vec::new();
        for subject in arr(object, "/subjects") {
            match s(subject, "/kind") {
                "ServiceAccount" => accounts.push(format!(
                    "{}/{}",
                    s(subject, "/namespace"),
                    s(subject, "/name")
                )),
                "User" => users.push(s(subject, "/name").to_string()),
                "Group" => groups.push(s(subject, "/name").to_string()),
                _ => {}
            }
        }
        vec![
            json!(name_of(object)),
            json!(format!(
                "{}/{}",
                s(object, "/roleRef/kind"),
                s(object, "/roleRef/name")
            )),
            json!(since(s(object, "/metadata/creationTimestamp"), now)),
            json!(users.join(", ")),
            json!(groups.join(", ")),
            json!(accounts.join(", ")),
        ]
    }
}
