//! Policy kinds: PodDisruptionBudgets (policy/v1), PriorityClasses (scheduling.k8s.io/v1:
//! value range, reserved `system-` names, immutable value), LimitRanges (container defaults
//! filled from max/default/min, ordering of min/default/max) and ResourceQuotas (core/v1).

use k8s_openapi::api::core::v1::{LimitRange, LimitRangeItem, ResourceQuota};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kwk_api::field::{FIELD_IMMUTABLE, FieldError, Shown, forbidden, invalid, not_supported};
use kwk_api::{meta, pod, quantity};
use serde_json::{Value, json};

use super::cells::{age_column, col, created_at_columns, created_at_row, name_column};
use super::pod::SYSTEM_PRIORITY_CLASSES;
use super::util::{flag, int, s, since, validate_typed, with_typed};
use super::workloads::{check_int_or_percent, int_or_string_cell};
use super::{Column, KindStrategy, name_of};
use crate::apiserver::errors::Cause;

// ---- PodDisruptionBudget ----

#[derive(Debug, Default, Clone, Copy)]
pub struct PodDisruptionBudgetStrategy;

fn validate_pdb(new: &PodDisruptionBudget, _old: Option<&PodDisruptionBudget>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(spec) = &new.spec else {
        return errs;
    };
    if spec.min_available.is_some() && spec.max_unavailable.is_some() {
        errs.push(invalid(
            "spec",
            Shown::Raw("policy.PodDisruptionBudgetSpec{...}".to_string()),
            "minAvailable and maxUnavailable cannot be both set",
        ));
    }
    if let Some(v) = &spec.min_available {
        check_int_or_percent("spec.minAvailable", v, true, &mut errs);
    }
    if let Some(v) = &spec.max_unavailable {
        check_int_or_percent("spec.maxUnavailable", v, true, &mut errs);
    }
    if let Some(selector) = &spec.selector {
        errs.extend(meta::validate_label_selector(selector, "spec.selector"));
    }
    if let Some(policy) = spec.unhealthy_pod_eviction_policy.as_deref()
        && !matches!(policy, "AlwaysAllow" | "IfHealthyBudget")
    {
        errs.push(not_supported(
            "spec.unhealthyPodEvictionPolicy",
            policy,
            &["AlwaysAllow", "IfHealthyBudget"],
        ));
    }
    errs
}

impl KindStrategy for PodDisruptionBudgetStrategy {
    fn validate(&self, object: &Value, old: Option<&Value>) -> Vec<Cause> {
        validate_typed(object, old, validate_pdb)
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            name_column(),
            col("Min Available", "string", "Pods that must stay available."),
            col("Max Unavailable", "string", "Pods that may be unavailable."),
            col(
                "Allowed Disruptions",
                "integer",
                "Evictions allowed right now.",
            ),
            age_column(),
        ]
    }

    fn row(&self, object: &Value, now: i64) -> Vec<Value> {
        vec![
            json!(name_of(object)),
            json!(int_or_string_cell(object.pointer("/spec/minAvailable"))),
            json!(int_or_string_cell(object.pointer("/spec/maxUnavailable"))),
            json!(int(object, "/status/disruptionsAllowed")),
            json!(since(s(object, "/metadata/creationTimestamp"), now)),
        ]
    }
}

// ---- PriorityClass ----

#[derive(Debug, Default, Clone, Copy)]
pub struct PriorityClassStrategy;

/// The highest priority a user-defined class may have.
pub const HIGHEST_USER_DEFINABLE_PRIORITY: i32 = 1_000_000_000;

/// `preemptionPolicy: PreemptLowerPriority` by default.
pub fn default_priority_class(pc: &mut PriorityClass) {
    pc.preemption_policy
        .get_or_insert_with(|| "PreemptLowerPriority".to_string());
}

fn validate_priority_class(new: &PriorityClass, old: Option<&PriorityClass>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = new.metadata.name.as_deref().unwrap_or_default();
    if name.starts_with("system-") {
        let problem = match SYSTEM_PRIORITY_CLASSES.iter().find(|(n, _)| *n == name) {
            None => Some(format!("{name} is not a known system priority class")),
            Some((_, value)) if *value != new.value => {
                Some(format!("value of {name} PriorityClass must be {value}"))
            }
            Some(_) if new.global_default == Some(true) => Some(format!(
                "globalDefault of {name} PriorityClass must be false"
            )),
            Some(_) => None,
        };
        if let Some(problem) = problem {
            errs.push(forbidden(
                "metadata.name",
                &format!(
                    "priority class names with 'system-' prefix are reserved for system use \
                     only. error: {problem}"
                ),
            ));
        }
    } else if new.value > HIGHEST_USER_DEFINABLE_PRIORITY {
        errs.push(forbidden(
            "value",
            &format!(
                "maximum allowed value of a user defined priority is \
                 {HIGHEST_USER_DEFINABLE_PRIORITY}"
            ),
        ));
    }
    if let Some(policy) = new.preemption_policy.as_deref()
        && !matches!(policy, "Never" | "PreemptLowerPriority")
    {
        errs.push(not_supported(
            "preemptionPolicy",
            policy,
            &["Never", "PreemptLowerPriority"],
        ));
    }
    if let Some(old) = old {
        if new.value != old.value {
            errs.push(forbidden("value", "may not be changed in an update."));
        }
        if new.preemption_policy != old.preemption_policy {
            errs.push(invalid(
                "preemptionPolicy",
                new.preemption_policy.as_deref().unwrap_or_default(),
                FIELD_IMMUTABLE,
            ));
        }
    }
    errs
}

impl KindStrategy for PriorityClassStrategy {
    fn default(&self, object: &mut Value) {
        with_typed(object, default_priority_class);
    }

    fn validate(&self, object: &Value, old: Option<&Value>) -> Vec<Cause> {
        validate_typed(object, old, validate_priority_class)
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            name_column(),
            col("Value", "integer", "The priority of pods using the class."),
            col(
                "Global-Default",
                "boolean",
                "Whether pods without a class get this one.",
            ),
            age_column(),
            col(
                "PreemptionPolicy",
                "string",
                "Whether pods may preempt lower priority ones.",
            ),
        ]
    }

    fn row(&self, object: &Value, now: i64) -> Vec<Value> {
        vec![
            json!(name_of(object)),
            json!(int(object, "/value")),
            json!(flag(object, "/globalDefault").unwrap_or(false)),
            json!(since(s(object, "/metadata/creationTimestamp"), now)),
            json!(s(object, "/preemptionPolicy")),
        ]
    }
}

// ---- LimitRange ----

#[derive(Debug, Default, Clone, Copy)]
pub struct LimitRangeStrategy;

fn default_limit_range_item(item: &mut LimitRangeItem) {
    if item.type_ != "Container" {
        return;
    }
    let max = item.max.clone().unwrap_or_default();
    let min = item.min.clone().unwrap_or_default();
    let default = item.default.get_or_insert_with(Default::default);
    for (k, v) in max {
        default.entry(k).or_insert(v);
    }
    let default = default.clone();
    let request = item.default_request.get_or_insert_with(Default::default);
    for (k, v) in default {
        request.entry(k).or_insert(v);
    }
    for (k, v) in min {
        request.entry(k).or_insert(v);
    }
}

/// Upstream's `SetDefaults_LimitRangeItem` for every item.
pub fn default_limit_range(lr: &mut LimitRange) {
    for item in lr.spec.iter_mut().flat_map(|s| s.limits.iter_mut()) {
        default_limit_range_item(item);
    }
}

fn validate_limit_range(new: &LimitRange, _old: Option<&LimitRange>) -> Vec<FieldError> {
    const TYPES: &[&str] = &["Container", "PersistentVolumeClaim", "Pod"];
    let mut errs = Vec::new();
    for (i, item) in new.spec.iter().flat_map(|s| s.limits.iter()).enumerate() {
        let path = format!("spec.limits[{i}]");
        if !TYPES.contains(&item.type_.as_str()) {
            errs.push(not_supported(
                &format!("{path}.type"),
                item.type_.as_str(),
                TYPES,
            ));
        }
        let mut parsed = std::collections::BTreeMap::new();
        for (field, list) in [
            ("max", &item.max),
            ("min", &item.min),
            ("default", &item.default),
            ("defaultRequest", &item.default_request),
            ("maxLimitRequestRatio", &item.max_limit_request_ratio),
        ] {
            for (name, q) in list.iter().flatten() {
                let q_path = format!("{path}.{field}[{name}]");
                if let Some(v) = pod::check_quantity(&q_path, &q.0, &mut errs) {
                    parsed.insert((field, name.clone()), (v, q.0.clone()));
                }
            }
        }
        let get = |field: &'static str, name: &str| parsed.get(&(field, name.to_string()));
        let names: std::collections::BTreeSet<&String> = parsed.keys().map(|(_, n)| n).collect();
        for name in names {
            let pairs: [(&str, &str); 5] = [
                ("min", "max"),
                ("min", "default"),
                ("min", "defaultRequest"),
                ("defaultRequest", "default"),
                ("default", "max"),
            ];
            for (low, high) in pairs {
                if let (Some((lv, ls)), Some((hv, hs))) = (get(low, name), get(high, name))
                    && lv > hv
                {
                    let low_word = match low {
                        "defaultRequest" => "default request",
                        other => other,
                    };
                    let high_word = match high {
                        "defaultRequest" => "default request",
                        other => other,
                    };
                    errs.push(invalid(
                        &format!("{path}.{low}[{name}]"),
                        ls.as_str(),
                        &format!("{low_word} value {ls} is greater than {high_word} value {hs}"),
                    ));
                }
            }
            if let Some((ratio, text)) = get("maxLimitRequestRatio", name)
                && *ratio < quantity::Quantity::from_milli(1000)
            {
                errs.push(invalid(
                    &format!("{path}.maxLimitRequestRatio[{name}]"),
                    text.as_str(),
                    "ratio must be greater than or equal to 1",
                ));
            }
        }
    }
    errs
}

impl KindStrategy for LimitRangeStrategy {
    fn default(&self, object: &mut Value) {
        with_typed(object, default_limit_range);
    }

    fn validate(&self, object: &Value, old: Option<&Value>) -> Vec<Cause> {
        validate_typed(object, old, validate_limit_range)
    }

    fn columns(&self) -> Vec<Column> {
        created_at_columns()
    }

    fn row(&self, object: &Value, _now: i64) -> Vec<Value> {
        created_at_row(object)
    }
}

// ---- ResourceQuota ----

#[derive(Debug, Default, Clone, Copy)]
pub struct ResourceQuotaStrategy;

const QUOTA_SCOPES: &[&str] = &[
    "BestEffort",
    "CrossNamespacePodAffinity",
    "NotBestEffort",
    "NotTerminating",
    "PriorityClass",
    "Terminating",
    "VolumeAttributesClass",
];

fn validate_resource_quota(new: &ResourceQuota, _old: Option<&ResourceQuota>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(spec) = &new.spec else {
        return errs;
    };
    for (name, q) in spec.hard.iter().flatten() {
        pod::check_quantity(&format!("spec.hard[{name}]"), &q.0, &mut errs);
    }
    for (i, scope) in spec.scopes.iter().flatten().enumerate() {
        if !QUOTA_SCOPES.contains(&scope.as_str()) {
            errs.push(not_supported(
                &format!("spec.scopes[{i}]"),
                scope.as_str(),
                QUOTA_SCOPES,
            ));
        }
    }
    errs
}

impl KindStrategy for ResourceQuotaStrategy {
    fn validate(&self, object: &Value, old: Option<&Value>) -> Vec<Cause> {
        validate_typed(object, old, validate_resource_quota)
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            name_column(),
            col(
                "Request",
                "string",
                "Used of allowed, per request resource.",
            ),
            col("Limit", "string", "Used of allowed, per limit resource."),
            age_column(),
        ]
    }

    fn row(&self, object: &Value, now: i64) -> Vec<Value> {
        let hard = object
            .pointer("/status/hard")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let mut requests = Vec::new();
        let mut limits = Vec::new();
        for (name, value) in &hard {
            let used = match s(
                object,
                &format!(
                    "/status/used/{}",
                    name.replace('~', "~0").replace('/', "~1")
                ),
            ) {
                "" => "0",
                u => u,
            };
            let cell = format!("{name}: {used}/{}", value.as_str().unwrap_or_default());
            if name.split('.').next() == Some("limits") && name.contains('.') {
                limits.push(cell);
            } else {
                requests.push(cell);
            }
        }
        vec![
            json!(name_of(object)),
            json!(requests.join(", ")),
            json!(limits.join(", ")),
            json!(since(s(object, "/metadata/creationTimestamp"), now)),
        ]
    }
}
