//! apps/v1 Deployment, ReplicaSet, DaemonSet and ControllerRevision: upstream's defaults
//! (`apps/v1/defaults.go`), validation (`apps/validation`: spec, selector immutable on
//! update) and tables. StatefulSets are in `statefulset`.

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kwk_api::field::{FieldError, check_non_negative, forbidden, invalid, required};
use kwk_api::pod::{self, DefaultSet};
use serde_json::{Value, json};

use super::cells::{
    CONTAINERS, IMAGES, SELECTOR, age_column, col, containers_and_images, format_labels,
    format_selector, name_column,
};
use super::util::{int, s, since, validate_typed, with_typed};
use super::workloads::{
    TemplateRules, check_int_or_percent, immutable_selector, is_zero, selector_missing,
    validate_given_selector_and_template, validate_selector_and_template,
};
use super::{Column, KindStrategy, name_of};
use crate::apiserver::errors::Cause;

const ALWAYS: &[&str] = &["Always"];

fn int_cell(object: &Value, pointer: &str) -> Value {
    json!(int(object, pointer))
}

// ---- Deployment ----

/// Takes out the empty `spec.selector` the typed defaulting wrote when the object had none
/// (validation then reports it missing, like upstream).
fn keep_selector_missing(object: &mut Value, missing: bool) {
    if missing && let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("selector");
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct DeploymentStrategy;

/// Upstream's `SetDefaults_Deployment` and the template's pod spec defaults.
pub fn default_deployment(d: &mut Deployment) {
    let spec = d.spec.get_or_insert_with(Default::default);
    spec.replicas.get_or_insert(1);
    let strategy = spec.strategy.get_or_insert_with(Default::default);
    if strategy.type_.as_deref().unwrap_or_default().is_empty() {
        strategy.type_ = Some("RollingUpdate".to_string());
    }
    if strategy.type_.as_deref() == Some("RollingUpdate") {
        let rolling = strategy.rolling_update.get_or_insert_with(Default::default);
        rolling
            .max_unavailable
            .get_or_insert_with(|| IntOrString::String("25%".to_string()));
        rolling
            .max_surge
            .get_or_insert_with(|| IntOrString::String("25%".to_string()));
    }
    spec.revision_history_limit.get_or_insert(10);
    spec.progress_deadline_seconds.get_or_insert(600);
    if let Some(pod_spec) = spec.template.spec.as_mut() {
        pod::default_pod_spec(pod_spec, DefaultSet::Upstream);
    }
}

/// `selector_given`: whether the raw object has a `spec.selector` (see
/// [`validate_given_selector_and_template`]).
fn validate_deployment(
    new: &Deployment,
    old: Option<&Deployment>,
    selector_given: bool,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(spec) = &new.spec else {
        errs.push(required("spec", ""));
        return errs;
    };
    check_non_negative("spec.replicas", spec.replicas.map(i64::from), &mut errs);
    validate_given_selector_and_template(
        &spec.selector,
        selector_given,
        Some(&spec.template),
        TemplateRules {
            base: "spec",
            kind: Some("deployment"),
            restart_policies: ALWAYS,
            no_deadline: Some("activeDeadlineSeconds in ReplicaSet is not Supported"),
        },
        &mut errs,
    );
    if let Some(strategy) = &spec.strategy {
        match (strategy.type_.as_deref(), &strategy.rolling_update) {
            (Some("Recreate"), Some(_)) => errs.push(forbidden(
                "spec.strategy.rollingUpdate",
                "may not be specified when strategy `type` is 'Recreate'",
            )),
            (Some("Recreate"), None) => {}
            (Some("RollingUpdate"), None) => errs.push(required(
                "spec.strategy.rollingUpdate",
                "this should be defaulted and never be nil",
            )),
            (Some("RollingUpdate"), Some(rolling)) => {
                let path = "spec.strategy.rollingUpdate";
                if let Some(v) = &rolling.max_unavailable {
                    check_int_or_percent(&format!("{path}.maxUnavailable"), v, true, &mut errs);
                }
                if let Some(v) = &rolling.max_surge {
                    check_int_or_percent(&format!("{path}.maxSurge"), v, false, &mut errs);
                }
                if is_zero(rolling.max_unavailable.as_ref()) && is_zero(rolling.max_surge.as_ref())
                {
                    errs.push(invalid(
                        &format!("{path}.maxUnavailable"),
                        match &rolling.max_unavailable {
                            Some(IntOrString::String(s)) => kwk_api::field::Shown::from(s.as_str()),
                            _ => kwk_api::field::Shown::Int(0),
                        },
                        "may not be 0 when `maxSurge` is 0",
                    ));
                }
            }
            (other, _) => errs.push(kwk_api::field::not_supported(
                "spec.strategy.type",
                other.unwrap_or_default(),
                &["Recreate", "RollingUpdate"],
            )),
        }
    }
    check_non_negative(
        "spec.revisionHistoryLimit",
        spec.revision_history_limit.map(i64::from),
        &mut errs,
    );
    check_non_negative(
        "spec.minReadySeconds",
        spec.min_ready_seconds.map(i64::from),
        &mut errs,
    );
    if let Some(deadline) = spec.progress_deadline_seconds {
        check_non_negative(
            "spec.progressDeadlineSeconds",
            Some(i64::from(deadline)),
            &mut errs,
        );
        if deadline <= spec.min_ready_seconds.unwrap_or(0) {
            errs.push(invalid(
                "spec.progressDeadlineSeconds",
                deadline,
                "must be greater than minReadySeconds",
            ));
        }
    }
    if let Some(old) = old.and_then(|o| o.spec.as_ref()) {
        immutable_selector(Some(&spec.selector), Some(&old.selector), &mut errs);
    }
    errs
}

impl KindStrategy for DeploymentStrategy {
    fn default(&self, object: &mut Value) {
        let missing = selector_missing(object);
        with_typed(object, default_deployment);
        keep_selector_missing(object, missing);
    }

    fn validate(&self, object: &Value, old: Option<&Value>) -> Vec<Cause> {
        let given = !selector_missing(object);
        validate_typed(object, old, |new, old| validate_deployment(new, old, given))
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            name_column(),
            col("Ready", "string", "Ready replicas of the desired replicas."),
            col(
                "Up-to-date",
                "string",
                "Replicas running the current template.",
            ),
            col("Available", "string", "Replicas available to users."),
            age_column(),
            CONTAINERS,
            IMAGES,
            SELECTOR,
        ]
    }

    fn row(&self, object: &Value, now: i64) -> Vec<Value> {
        let (containers, images) = containers_and_images(&object["spec"]["template"]["spec"]);
        let selector = match format_selector(object.pointer("/spec/selector")).as_str() {
            "<none>" => String::new(),
            other => other.to_string(),
        };
        vec![
            json!(name_of(object)),
            json!(format!(
                "{}/{}",
                int(object, "/status/readyReplicas"),
                int(object, "/spec/replicas")
            )),
            int_cell(object, "/status/updatedReplicas"),
            int_cell(object, "/status/availableReplicas"),
            json!(since(s(object, "/metadata/creationTimestamp"), now)),
            containers,
            images,
            json!(selector),
        ]
    }
}

// ---- ReplicaSet ----

#[derive(Debug, Default, Clone, Copy)]
pub struct ReplicaSetStrategy;

/// Upstream's `SetDefaults_ReplicaSet` and the template's pod spec defaults.
pub fn default_replica_set(rs: &mut ReplicaSet) {
    let spec = rs.spec.get_or_insert_with(Default::default);
    spec.replicas.get_or_insert(1);
    if let Some(pod_spec) = spec.template.as_mut().and_then(|t| t.spec.as_mut()) {
        pod::default_pod_spec(pod_spec, DefaultSet::Upstream);
    }
}

/// `selector_given`: as for [`validate_deployment`].
fn validate_replica_set(
    new: &ReplicaSet,
    old: Option<&ReplicaSet>,
    selector_given: bool,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(spec) = &new.spec else {
        errs.push(required("spec", ""));
        return errs;
    };
    check_non_negative("spec.replicas", spec.replicas.map(i64::from), &mut errs);
    check_non_negative(
        "spec.minReadySeconds",
        spec.min_ready_seconds.map(i64::from),
        &mut errs,
    );
    validate_given_selector_and_template(
        &spec.selector,
        selector_given,
        spec.template.as_ref(),
        TemplateRules {
            base: "spec",
            kind: Some("deployment"),
            restart_policies: ALWAYS,
            no_deadline: Some("activeDeadlineSeconds in ReplicaSet is not Supported"),
        },
        &mut errs,
    );
    if let Some(old) = old.and_then(|o| o.spec.as_ref()) {
        immutable_selector(Some(&spec.selector), Some(&old.selector), &mut errs);
    }
    errs
}

impl KindStrategy for ReplicaSetStrategy {
    fn default(&self, object: &mut Value) {
        let missing = selector_missing(object);
        with_typed(object, default_replica_set);
        keep_selector_missing(object, missing);
    }

    fn validate(&self, object: &Value, old: Option<&Value>) -> Vec<Cause> {
        let given = !selector_missing(object);
        validate_typed(object, old, |new, old| {
            validate_replica_set(new, old, given)
        })
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            name_column(),
            col("Desired", "integer", "Replicas wanted."),
            col("Current", "integer", "Replicas that exist."),
            col("Ready", "integer", "Replicas that are ready."),
            age_column(),
            CONTAINERS,
            IMAGES,
            SELECTOR,
        ]
    }

    fn row(&self, object: &Value, now: i64) -> Vec<Value> {
        let (containers, images) = containers_and_images(&object["spec"]["template"]["spec"]);
        vec![
            json!(name_of(object)),
            int_cell(object, "/spec/replicas"),
            int_cell(object, "/status/replicas"),
            int_cell(object, "/status/readyReplicas"),
            json!(since(s(object, "/metadata/creationTimestamp"), now)),
            containers,
            images,
            json!(format_selector(object.pointer("/spec/selector"))),
        ]
    }

    fn field(&self, object: &Value, label: &str) -> Option<String> {
        (label == "status.replicas").then(|| int(object, "/status/replicas").to_string())
    }
}

// ---- DaemonSet ----

#[derive(Debug, Default, Clone, Copy)]
pub struct DaemonSetStrategy;

/// Upstream's `SetDefaults_DaemonSet` and the template's pod spec defaults.
pub fn default_daemon_set(ds: &mut DaemonSet) {
    let spec = ds.spec.get_or_insert_with(Default::default);
    let strategy = spec.update_strategy.get_or_insert_with(Default::default);
    if strategy.type_.as_deref().unwrap_or_default().is_empty() {
        strategy.type_ = Some("RollingUpdate".to_string());
    }
    if strategy.type_.as_deref() == Some("RollingUpdate") {
        let rolling = strategy.rolling_update.get_or_insert_with(Default::default);
        rolling.max_unavailable.get_or_insert(IntOrString::Int(1));
        rolling.max_surge.get_or_insert(IntOrString::Int(0));
    }
    spec.revision_history_limit.get_or_insert(10);
    if let Some(pod_spec) = spec.template.spec.as_mut() {
        pod::default_pod_spec(pod_spec, DefaultSet::Upstream);
    }
}

fn validate_daemon_set(new: &DaemonSet, old: Option<&DaemonSet>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(spec) = &new.spec else {
        errs.push(required("spec", ""));
        return errs;
    };
    validate_selector_and_template(
        Some(&spec.selector),
        Some(&spec.template),
        TemplateRules {
            base: "spec",
            kind: Some("daemonset"),
            restart_policies: ALWAYS,
            no_deadline: Some("activeDeadlineSeconds must be nil for daemonset"),
        },
        &mut errs,
    );
    check_non_negative(
        "spec.minReadySeconds",
        spec.min_ready_seconds.map(i64::from),
        &mut errs,
    );
    check_non_negative(
        "spec.revisionHistoryLimit",
        spec.revision_history_limit.map(i64::from),
        &mut errs,
    );
    if let Some(strategy) = &spec.update_strategy {
        match strategy.type_.as_deref().unwrap_or_default() {
            "OnDelete" => {}
            "RollingUpdate" => match &strategy.rolling_update {
                None => errs.push(required("spec.updateStrategy.rollingUpdate", "")),
                Some(rolling) => {
                    let path = "spec.updateStrategy.rollingUpdate";
                    if let Some(v) = &rolling.max_unavailable {
                        check_int_or_percent(&format!("{path}.maxUnavailable"), v, true, &mut errs);
                    }
                    if let Some(v) = &rolling.max_surge {
                        check_int_or_percent(&format!("{path}.maxSurge"), v, true, &mut errs);
                    }
                    if is_zero(rolling.max_unavailable.as_ref())
                        && is_zero(rolling.max_surge.as_ref())
                    {
                        errs.push(invalid(
                            &format!("{path}.maxUnavailable"),
                            0,
                            "may not be 0 when `maxSurge` is 0",
                        ));
                    }
                }
            },
            other => errs.push(kwk_api::field::not_supported(
                "spec.updateStrategy.type",
                other,
                &["OnDelete", "RollingUpdate"],
            )),
        }
    }
    if let Some(old) = old.and_then(|o| o.spec.as_ref()) {
        immutable_selector(Some(&spec.selector), Some(&old.selector), &mut errs);
    }
    errs
}

impl KindStrategy for DaemonSetStrategy {
    fn default(&self, object: &mut Value) {
        with_typed(object, default_daemon_set);
    }

    fn validate(&self, object: &Value, old: Option<&Value>) -> Vec<Cause> {
        validate_typed(object, old, validate_daemon_set)
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            name_column(),
            col(
                "Desired",
                "integer",
                "Nodes that should run the daemon pod.",
            ),
            col(
                "Current",
                "integer",
                "Nodes running at least one daemon pod.",
            ),
            col("Ready", "integer", "Nodes with a ready daemon pod."),
            col(
                "Up-to-date",
                "integer",
                "Nodes running the current template.",
            ),
            col(
                "Available",
                "integer",
                "Nodes with an available daemon pod.",
            ),
            col(
                "Node Selector",
                "string",
                "Node labels the pods are restricted to.",
            ),
            age_column(),
            CONTAINERS,
            IMAGES,
            SELECTOR,
        ]
    }

    fn row(&self, object: &Value, now: i64) -> Vec<Value> {
        let (containers, images) = containers_and_images(&object["spec"]["template"]["spec"]);
        vec![
            json!(name_of(object)),
            int_cell(object, "/status/desiredNumberScheduled"),
            int_cell(object, "/status/currentNumberScheduled"),
            int_cell(object, "/status/numberReady"),
            int_cell(object, "/status/updatedNumberScheduled"),
            int_cell(object, "/status/numberAvailable"),
            json!(format_labels(
                object.pointer("/spec/template/spec/nodeSelector")
            )),
            json!(since(s(object, "/metadata/creationTimestamp"), now)),
            containers,
            images,
            json!(format_selector(object.pointer("/spec/selector"))),
        ]
    }
}

// ---- ControllerRevision ----

#[derive(Debug, Default, Clone, Copy)]
pub struct ControllerRevisionStrategy;

fn validate_controller_revision(
    new: &ControllerRevision,
    old: Option<&ControllerRevision>,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if new.data.is_none() {
        errs.push(required("data", "data is mandatory"));
    }
    check_non_negative("revision", Some(new.revision), &mut errs);
    if let Some(old) = old
        && old.data != new.data
    {
        errs.push(invalid(
            "data",
            kwk_api::field::Shown::Raw("runtime.RawExtension{...}".to_string()),
            kwk_api::field::FIELD_IMMUTABLE,
        ));
    }
    errs
}

impl KindStrategy for ControllerRevisionStrategy {
    fn validate(&self, object: &Value, old: Option<&Value>) -> Vec<Cause> {
        validate_typed(object, old, validate_controller_revision)
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            name_column(),
            col("Controller", "string", "The object that owns the revision."),
            col("Revision", "string", "The revision number."),
            age_column(),
        ]
    }

    fn row(&self, object: &Value, now: i64) -> Vec<Value> {
        let owner = super::util::arr(object, "/metadata/ownerReferences")
            .iter()
            .find(|r| super::util::flag(r, "/controller") == Some(true));
        let controller = match owner {
            None => "<none>".to_string(),
            Some(r) => {
                let group = s(r, "/apiVersion")
                    .rsplit_once('/')
                    .map(|(g, _)| g)
                    .unwrap_or_default();
                let kind = s(r, "/kind");
                let group_kind = if group.is_empty() {
                    kind.to_string()
                } else {
                    format!("{kind}.{group}")
                };
                format!("{}/{}", group_kind.to_lowercase(), s(r, "/name"))
            }
        };
        vec![
            json!(name_of(object)),
            json!(controller),
            json!(int(object, "/revision")),
            json!(since(s(object, "/metadata/creationTimestamp"), now)),
        ]
    }
}
