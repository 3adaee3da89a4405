//! Pods (core/v1): upstream's API defaults and validation from `kwk-api`, what the pod
//! registry does on create (status `Pending` with the QoS class, the `SchedulingGated`
//! condition), the pure part of the Priority admission plugin (a new pod's priority from its
//! resolved PriorityClass; priority kept on update), the field selectors, and the table (in
//! `pod_table`).

use k8s_openapi::api::core::v1::{Pod, PodCondition, PodStatus, PodTemplate};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
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

/// The system classes as upstream's apiserver creates them at start-up.
pub fn system_priority_classes() -> Vec<PriorityClass> {
    SYSTEM_PRIORITY_CLASSES
        .iter()
        .map(|(name, value)| PriorityClass {
            metadata: ObjectMeta {
                name: Some((*name).to_string()),
                ..Default::default()
            },
            value: *value,
            description: Some(
                if *name == "system-node-critical" {
                    "Used for system critical pods that must not be moved from their current node."
                } else {
                    "Used for system critical pods that must run in the cluster, but can be \
                     moved to another node if necessary."
                }
                .to_string(),
            ),
            ..Default::default()
        })
        .collect()
}

#[derive(Debug, Default, Clone, Copy)]
pub struct PodStrategy;

impl KindStrategy for PodStrategy {
    fn default(&self, object: &mut Value) {
        with_typed::<Pod>(object, |p| pod::default_pod(p, DefaultSet::Upstream));
    }

    fn prepare_for_create(&self, object: &mut Value) {
        with_typed::<Pod>(object, prepare_pod);
    }

    fn prepare_for_update(&self, object: &mut Value, old: &Value) {
        if let Some(old) = super::util::typed::<Pod>(old) {
            with_typed::<Pod>(object, |new| keep_pod_priority(new, &old));
        }
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

/// Upstream's pod `PrepareForCreate`: status `Pending` with the QoS class,
/// `PodScheduled=False/SchedulingGated` for gated pods. The priority is priority admission's
/// ([`admit_pod_priority`]), which runs before.
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
}

/// Why priority admission refuses a new pod: the text after `pods "name" is forbidden: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriorityRejection {
    #[error("no PriorityClass with name {0} was found")]
    UnknownClass(String),
    #[error(
        "the integer value of priority ({given}) must not be provided in pod spec; priority \
         admission controller computed {computed} from the given PriorityClass name"
    )]
    PriorityMismatch { given: i32, computed: i32 },
    #[error(
        "the string value of PreemptionPolicy ({given}) must not be provided in pod spec; \
         priority admission controller computed {computed} from the given PriorityClass name"
    )]
    PreemptionPolicyMismatch { given: String, computed: String },
}

/// The `priorityClassName` a pod gives (`None` when empty or absent).
pub fn named_priority_class(p: &Pod) -> Option<&str> {
    p.spec
        .as_ref()
        .and_then(|s| s.priority_class_name.as_deref())
        .filter(|n| !n.is_empty())
}

/// Upstream's Priority admission of a new pod, given `class`: the stored PriorityClass the pod
/// names, or when it names none the `globalDefault` class (the caller looks it up; `None` =
/// not found / no default). Sets `priority` (0 without any class), the default class's name,
/// and `preemptionPolicy` (the class's, `PreemptLowerPriority` without one); a pod that gives
/// either itself must agree with the class.
pub fn admit_pod_priority(
    p: &mut Pod,
    class: Option<&PriorityClass>,
) -> Result<(), PriorityRejection> {
    let named = named_priority_class(p).map(str::to_string);
    let Some(spec) = p.spec.as_mut() else {
        return Ok(());
    };
    let (name, value, policy) = match (named, class) {
        (Some(name), None) => return Err(PriorityRejection::UnknownClass(name)),
        (_, Some(class)) => (
            class.metadata.name.clone(),
            class.value,
            class.preemption_policy.clone(),
        ),
        (None, None) => (None, 0, None),
    };
    let policy = policy.unwrap_or_else(|| PREEMPT_LOWER_PRIORITY.to_string());
    if let Some(given) = spec.priority
        && given != value
    {
        return Err(PriorityRejection::PriorityMismatch {
            given,
            computed: value,
        });
    }
    if let Some(given) = spec.preemption_policy.as_deref()
        && given != policy
    {
        return Err(PriorityRejection::PreemptionPolicyMismatch {
            given: given.to_string(),
            computed: policy,
        });
    }
    if let Some(name) = name {
        spec.priority_class_name = Some(name);
    }
    spec.priority = Some(value);
    spec.preemption_policy = Some(policy);
    Ok(())
}

/// The default preemption policy of classes and of pods without a class.
const PREEMPT_LOWER_PRIORITY: &str = "PreemptLowerPriority";

/// What upstream's Priority admission does on a pod update: a `priority` or
/// `preemptionPolicy` the new object omits is kept from the old one (validation then refuses
/// any other change of them).
fn keep_pod_priority(new: &mut Pod, old: &Pod) {
    let (Some(spec), Some(old)) = (new.spec.as_mut(), old.spec.as_ref()) else {
        return;
    };
    if spec.priority.is_none() {
        spec.priority = old.priority;
    }
    if spec.preemption_policy.is_none() {
        spec.preemption_policy.clone_from(&old.preemption_policy);
    }
}

#[cfg(test)]
#[path = "pod_priority_tests.rs"]
mod priority_tests;

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
