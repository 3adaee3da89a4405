//! Pods (core/v1): upstream's API defaults and validation from `kwk-api`, what the pod
//! registry does on create (status `Pending` with the QoS class, the `SchedulingGated`
//! condition, the priority of pods without a class or with a system class), the field
//! selectors, and the table (in `pod_table`).

use k8s_openapi::api::core::v1::{Pod, PodCondition, PodStatus, PodTemplate};
use kwk_api::pod::{self, DefaultSet};
use serde_json::Value;

use super::util::{arr, flag, s, validate_typed, with_typed};
use super::{Column, KindStrategy, pod_table};
use crate::apiserver::errors::Cause;

/// `system-node-critical` and `system-cluster-critical`: the classes every cluster has.
pub const SYSTEM_PRIORITY_CLASSES: &[(&str, i32)] = &[
    ("system-node-critical", 2_000_001_000),
    ("system-cluster-critical", 2_000_000_000),
];

#[derive(Debug, Default, Clone, Copy)]
pub struct PodStrategy;

impl KindStrategy for PodStrategy {
    fn default(&self, object: &mut Value) {
        with_typed::<Pod>(object, |p| pod::default_pod(p, DefaultSet::Upstream));
    }

    fn prepare_for_create(&self, object: &mut Value) {
        with_typed::<Pod>(object, prepare_pod);
    }

    fn validate(&self, object: &Value, old: Option<&Value>) -> Vec<Cause> {
        validate_typed::<Pod>(object, old, |new, old| match old {
            None => pod::validate_pod(new),
            Some(old) => pod::validate_pod_update(new, old),
        })
    }

    fn columns(&self) -> Vec<Column> {
        pod_table::columns()
    }

    fn row(&self, object: &Value, now: i64) -> Vec<Value> {
        pod_table::row(object, now)
    }

    fn row_conditions(&self, object: &Value) -> Vec<Value> {
        pod_table::conditions(object)
    }

    fn field(&self, object: &Value, label: &str) -> Option<String> {
        let value = match label {
            "spec.nodeName" | "spec.host" => s(object, "/spec/nodeName").to_string(),
            "spec.restartPolicy" => s(object, "/spec/restartPolicy").to_string(),
            "spec.schedulerName" => s(object, "/spec/schedulerName").to_string(),
            "spec.serviceAccountName" => s(object, "/spec/serviceAccountName").to_string(),
            "spec.hostNetwork" => flag(object, "/spec/hostNetwork")
                .unwrap_or(false)
                .to_string(),
            "status.phase" => s(object, "/status/phase").to_string(),
            "status.podIP" => arr(object, "/status/podIPs")
                .first()
                .map(|ip| s(ip, "/ip"))
                .unwrap_or_else(|| s(object, "/status/podIP"))
                .to_string(),
            "status.nominatedNodeName" => s(object, "/status/nominatedNodeName").to_string(),
            // Accepted by upstream's label conversion but not in its field set: always "".
            "status.podIPs" => String::new(),
            _ => return None,
        };
        Some(value)
    }
}

/// Upstream's pod `PrepareForCreate` (plus the part of priority admission that needs no
/// storage): status `Pending` with the QoS class, `PodScheduled=False/SchedulingGated` for
/// gated pods; priority 0 for pods without a class, the system classes' values for theirs.
/// A user-defined `priorityClassName` (and a `globalDefault` class) must be resolved by the
/// caller against stored PriorityClasses.
pub fn prepare_pod(p: &mut Pod) {
    let qos = pod::qos::pod_qos(p).map(|q| q.as_str().to_string()).ok();
    let gated = p
        .spec
        .as_ref()
        .and_then(|s| s.scheduling_gates.as_ref())
        .is_some_and(|g| !g.is_empty());
    p.status = Some(PodStatus {
        phase: Some("Pending".to_string()),
        qos_class: qos,
        conditions: gated.then(|| {
            vec![PodCondition {
                type_: "PodScheduled".to_string(),
                status: "False".to_string(),
                reason: Some("SchedulingGated".to_string()),
                message: Some(
                    "Scheduling is blocked due to non-empty scheduling gates".to_string(),
                ),
                ..Default::default()
            }]
        }),
        ..Default::default()
    });
    if let Some(spec) = p.spec.as_mut() {
        let class = spec.priority_class_name.as_deref().unwrap_or_default();
        let known = SYSTEM_PRIORITY_CLASSES
            .iter()
            .find(|(name, _)| *name == class)
            .map(|(_, value)| *value);
        match (class.is_empty(), known) {
            (true, _) => {
                spec.priority.get_or_insert(0);
            }
            (false, Some(value)) => {
                spec.priority.get_or_insert(value);
            }
            (false, None) => {}
        }
        if spec.priority.is_some() && spec.preemption_policy.is_none() {
            spec.preemption_policy = Some("PreemptLowerPriority".to_string());
        }
    }
}

/// PodTemplates (core/v1): the template's pod spec defaults and validation, and the table.
#[derive(Debug, Default, Clone, Copy)]
pub struct PodTemplateStrategy;

impl KindStrategy for PodTemplateStrategy {
    fn default(&self, object: &mut Value) {
        with_typed::<PodTemplate>(object, |t| {
            if let Some(spec) = t.template.as_mut().and_then(|t| t.spec.as_mut()) {
                pod::default_pod_spec(spec, DefaultSet::Upstream);
            }
        });
    }

    fn validate(&self, object: &Value, old: Option<&Value>) -> Vec<Cause> {
        validate_typed::<PodTemplate>(object, old, |new, _| {
            let template = new.template.clone().unwrap_or_default();
            pod::validate_pod_template(&template, "template")
        })
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            super::cells::name_column(),
            super::cells::col("Containers", "string", "Container names of the template."),
            super::cells::col("Images", "string", "Container images of the template."),
            super::cells::col("Pod Labels", "string", "Labels of the template's pods."),
        ]
    }

    fn row(&self, object: &Value, _now: i64) -> Vec<Value> {
        let (containers, images) = super::cells::containers_and_images(&object["template"]["spec"]);
        vec![
            Value::String(super::name_of(object).to_string()),
            containers,
            images,
            Value::String(super::cells::format_labels(
                object.pointer("/template/metadata/labels"),
            )),
        ]
    }
}
