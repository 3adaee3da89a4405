//! Cluster-level core kinds: Namespaces (phase, the `kubernetes` finalizer, the
//! `kubernetes.io/metadata.name` label), Nodes (allocatable from capacity, taints, pod CIDRs
//! and provider ID set once), Events (core/v1 and events.k8s.io/v1 share one table and one
//! set of field selectors) and Leases.

use std::collections::BTreeSet;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Namespace, Node, NodeSpec};
use kwk_api::field::{FieldError, duplicate, forbidden, invalid, not_supported};
use kwk_api::names;
use serde_json::{Value, json};

use super::cells::{age_column, col, name_column, wide};
use super::util::{arr, flag, int, s, since, typed, validate_typed, with_typed};
use super::{Column, KindStrategy, name_of};
use crate::apiserver::errors::Cause;

// ---- Namespace ----

#[derive(Debug, Default, Clone, Copy)]
pub struct NamespaceStrategy;

const NAME_LABEL: &str = "kubernetes.io/metadata.name";
const STANDARD_FINALIZERS: &[&str] = &["kubernetes", "orphan", "foregroundDeletion"];

/// Upstream's namespace defaults: phase `Active`, the name label.
pub fn default_namespace(ns: &mut Namespace) {
    let status = ns.status.get_or_insert_with(Default::default);
    if status.phase.as_deref().unwrap_or_default().is_empty() {
        status.phase = Some("Active".to_string());
    }
    if let Some(name) = ns.metadata.name.clone().filter(|n| !n.is_empty()) {
        ns.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(NAME_LABEL.to_string(), name);
    }
}

fn validate_namespace(new: &Namespace, _old: Option<&Namespace>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let finalizers = new
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.as_deref())
        .unwrap_or_default();
    for f in finalizers {
        names::check_qualified_name("spec.finalizers", f, &mut errs);
        if !f.contains('/') && !STANDARD_FINALIZERS.contains(&f.as_str()) {
            errs.push(invalid(
                "spec.finalizers",
                f.as_str(),
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
    errs
}

impl KindStrategy for NamespaceStrategy {
    fn default(&self, object: &mut Value) {
        with_typed(object, default_namespace);
    }

    /// Status `Active` and the `kubernetes` finalizer (kept first, as upstream appends it
    /// to an empty list).
    fn prepare_for_create(&self, object: &mut Value) {
        with_typed::<Namespace>(object, |ns| {
            ns.status = None;
            let spec = ns.spec.get_or_insert_with(Default::default);
            let finalizers = spec.finalizers.get_or_insert_with(Vec::new);
            if !finalizers.iter().any(|f| f == "kubernetes") {
                finalizers.push("kubernetes".to_string());
            }
            default_namespace(ns);
        });
    }

    /// Finalizers change through the `finalize` subresource, status through `status`.
    fn prepare_for_update(&self, object: &mut Value, old: &Value) {
        if let Some(old) = typed::<Namespace>(old) {
            with_typed::<Namespace>(object, |ns| {
                ns.spec = old.spec.clone();
                ns.status = old.status.clone();
            });
        }
    }

    fn validate(&self, object: &Value, old: Option<&Value>) -> Vec<Cause> {
        validate_typed(object, old, validate_namespace)
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            name_column(),
            col(
                "Status",
                "string",
                "Active, or Terminating while being deleted.",
            ),
            age_column(),
        ]
    }

    fn row(&self, object: &Value, now: i64) -> Vec<Value> {
        vec![
            json!(name_of(object)),
            json!(s(object, "/status/phase")),
            json!(since(s(object, "/metadata/creationTimestamp"), now)),
        ]
    }

    fn field(&self, object: &Value, label: &str) -> Option<String> {
        match label {
            "status.phase" => Some(s(object, "/status/phase").to_string()),
            "name" => Some(name_of(object).to_string()),
            _ => None,
        }
    }
}

// ---- Node ----

#[derive(Debug, Default, Clone, Copy)]
pub struct NodeStrategy;

const TAINT_EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];

/// `status.allocatable` defaults to `status.capacity`.
pub fn default_node(node: &mut Node) {
    if let Some(status) = node.status.as_mut()
        && status.allocatable.is_none()
    {
        status.allocatable.clone_from(&status.capacity);
    }
}

fn validate_node_spec(spec: &NodeSpec, errs: &mut Vec<FieldError>) {
    let mut seen = BTreeSet::new();
    for (i, taint) in spec.taints.iter().flatten().enumerate() {
        let path = format!("spec.taints[{i}]");
        names::check_qualified_name(&format!("{path}.key"), &taint.key, errs);
        if let Some(value) = taint.value.as_deref() {
            for p in names::label_value_problems(value) {
                errs.push(invalid(&format!("{path}.value"), value, &p));
            }
        }
        if !TAINT_EFFECTS.contains(&taint.effect.as_str()) {
            errs.push(not_supported(
                &format!("{path}.effect"),
                taint.effect.as_str(),
                TAINT_EFFECTS,
            ));
        }
        if !seen.insert((taint.key.clone(), taint.effect.clone())) {
            errs.push(duplicate(
                &path,
                kwk_api::field::Shown::Raw(format!("{}:{}", taint.key, taint.effect)),
            ));
        }
    }
    let cidrs = spec.pod_cidrs.as_deref().unwrap_or_default();
    for (i, cidr) in cidrs.iter().enumerate() {
        for p in names::cidr_problems(cidr) {
            errs.push(invalid(&format!("spec.podCIDRs[{i}]"), cidr.as_str(), &p));
        }
    }
    if cidrs.len() > 2 {
        errs.push(kwk_api::field::too_many("spec.podCIDRs", cidrs.len(), 2));
    }
}

fn validate_node(new: &Node, old: Option<&Node>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let empty = NodeSpec::default();
    let spec = new.spec.as_ref().unwrap_or(&empty);
    validate_node_spec(spec, &mut errs);
    if let Some(old_spec) = old.and_then(|o| o.spec.as_ref()) {
        let old_cidrs = old_spec.pod_cidrs.as_deref().unwrap_or_default();
        if !old_cidrs.is_empty() && spec.pod_cidrs.as_deref().unwrap_or_default() != old_cidrs {
            errs.push(forbidden(
                "spec.podCIDRs",
                "node updates may not change podCIDR except from \"\" to valid",
            ));
        }
        let old_id = old_spec.provider_id.as_deref().unwrap_or_default();
        if !old_id.is_empty() && spec.provider_id.as_deref().unwrap_or_default() != old_id {
            errs.push(forbidden(
                "spec.providerID",
                "node updates may not change providerID except from \"\" to valid",
            ));
        }
    }
    errs
}

fn node_roles(object: &Value) -> String {
    let mut roles = BTreeSet::new();
    for (k, v) in object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        if let Some(role) = k
            .strip_prefix("node-role.kubernetes.io/")
            .filter(|r| !r.is_empty())
        {
            roles.insert(role.to_string());
        } else if k == "kubernetes.io/role" && v.as_str().is_some_and(|v| !v.is_empty()) {
            roles.insert(v.as_str().unwrap_or_default().to_string());
        }
    }
    if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.into_iter().collect::<Vec<_>>().join(",")
    }
}

fn node_address(object: &Value, kind: &str) -> String {
    arr(object, "/status/addresses")
        .iter()
        .find(|a| s(a, "/type") == kind)
        .map_or_else(|| "<none>".to_string(), |a| s(a, "/address").to_string())
}

impl KindStrategy for NodeStrategy {
    fn default(&self, object: &mut Value) {
        with_typed(object, default_node);
    }

    fn validate(&self, object: &Value, old: Option<&Value>) -> Vec<Cause> {
        validate_typed(object, old, validate_node)
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            name_column(),
            col(
                "Status",
                "string",
                "Ready, NotReady or Unknown, and SchedulingDisabled.",
            ),
            col(
                "Roles",
                "string",
                "Roles from node-role.kubernetes.io/ labels.",
            ),
            age_column(),
            col("Version", "string", "The kubelet's version."),
            wide(
                "Internal-IP",
                "string",
                "The node's first internal address.",
            ),
            wide(
                "External-IP",
                "string",
                "The node's first external address.",
            ),
            wide(
                "OS-Image",
                "string",
                "The operating system the node reports.",
            ),
            wide("Kernel-Version", "string", "The node's kernel version."),
            wide(
                "Container-Runtime",
                "string",
                "The container runtime and its version.",
            ),
        ]
    }

    fn row(&self, object: &Value, now: i64) -> Vec<Value> {
        let mut status: Vec<String> = arr(object, "/status/conditions")
            .iter()
            .filter(|c| s(c, "/type") == "Ready")
            .take(1)
            .map(|c| {
                if s(c, "/status") == "True" {
                    "Ready".to_string()
                } else {
                    "NotReady".to_string()
                }
            })
            .collect();
        if status.is_empty() {
            status.push("Unknown".to_string());
        }
        if flag(object, "/spec/unschedulable") == Some(true) {
            status.push("SchedulingDisabled".to_string());
        }
        let info = |field: &str| -> Value {
            match s(object, &format!("/status/nodeInfo/{field}")) {
                "" => json!("<unknown>"),
                v => json!(v),
            }
        };
        vec![
            json!(name_of(object)),
            json!(status.join(",")),
            json!(node_roles(object)),
            json!(since(s(object, "/metadata/creationTimestamp"), now)),
            json!(s(object, "/status/nodeInfo/kubeletVersion")),
            json!(node_address(object, "InternalIP")),
            json!(node_address(object, "ExternalIP")),
            info("osImage"),
            info("kernelVersion"),
            info("containerRuntimeVersion"),
        ]
    }

    fn field(&self, object: &Value, label: &str) -> Option<String> {
        (label == "spec.unschedulable").then(|| {
            flag(object, "/spec/unschedulable")
                .unwrap_or(false)
                .to_string()
        })
    }
}

// ---- Event (core/v1 and events.k8s.io/v1) ----

#[derive(Debug, Default, Clone, Copy)]
pub struct EventStrategy;

/// The first of two JSON pointers that holds a non-empty string (core/v1 and
/// events.k8s.io/v1 name the same fields differently).
fn either<'a>(object: &'a Value, core: &str, events: &str) -> &'a str {
    match s(object, core) {
        "" => s(object, events),
        v => v,
    }
}

fn involved<'a>(object: &'a Value, field: &str) -> &'a str {
    either(
        object,
        &format!("/involvedObject/{field}"),
        &format!("/regarding/{field}"),
    )
}

fn validate_event(new: &Event, _old: Option<&Event>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if new.event_time.is_none() {
        let ns = new.metadata.namespace.as_deref().unwrap_or_default();
        let involved = new.involved_object.namespace.as_deref().unwrap_or_default();
        let ok = if involved.is_empty() {
            ns.is_empty() || ns == "default"
        } else {
            ns == involved
        };
        if !ok {
            errs.push(invalid(
                "involvedObject.namespace",
                involved,
                "does not match event.namespace",
            ));
        }
    }
    errs
}

impl KindStrategy for EventStrategy {
    fn validate(&self, object: &Value, old: Option<&Value>) -> Vec<Cause> {
        if object.get("involvedObject").is_none() {
            // events.k8s.io/v1: the regarding object is free.
            return Vec::new();
        }
        validate_typed(object, old, validate_event)
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            col(
                "Last Seen",
                "string",
                "How long ago the event was last seen.",
            ),
            col("Type", "string", "Normal or Warning."),
            col("Reason", "string", "Why the event happened, in one word."),
            col("Object", "string", "The object the event is about."),
            wide(
                "Subobject",
                "string",
                "The part of the object, e.g. a container.",
            ),
            wide("Source", "string", "The component that reported the event."),
            col("Message", "string", "What happened."),
            wide(
                "First Seen",
                "string",
                "How long ago the event was first seen.",
            ),
            wide("Count", "string", "How many times the event happened."),
            Column {
                priority: 1,
                ..name_column()
            },
        ]
    }

    fn row(&self, object: &Value, now: i64) -> Vec<Value> {
        let first_ts = either(object, "/firstTimestamp", "/deprecatedFirstTimestamp");
        let first = if first_ts.is_empty() {
            since(s(object, "/eventTime"), now)
        } else {
            since(first_ts, now)
        };
        let last_ts = either(object, "/lastTimestamp", "/deprecatedLastTimestamp");
        let mut last = if last_ts.is_empty() {
            first.clone()
        } else {
            since(last_ts, now)
        };
        let mut count = match object.get("count") {
            Some(c) => c.as_i64().unwrap_or(0),
            None => int(object, "/deprecatedCount"),
        };
        if let Some(series) = object.get("series").filter(|v| !v.is_null()) {
            last = since(s(series, "/lastObservedTime"), now);
            count = int(series, "/count");
        } else if count == 0 {
            count = 1;
        }
        let kind = involved(object, "kind").to_lowercase();
        let name = involved(object, "name");
        let target = if name.is_empty() {
            kind
        } else {
            format!("{kind}/{name}")
        };
        let component = either(object, "/source/component", "/deprecatedSource/component");
        let component = if component.is_empty() {
            s(object, "/reportingController")
        } else {
            component
        };
        let component = if component.is_empty() {
            s(object, "/reportingComponent")
        } else {
            component
        };
        let host = either(object, "/source/host", "/deprecatedSource/host");
        let host = if host.is_empty() {
            s(object, "/reportingInstance")
        } else {
            host
        };
        let source = if host.is_empty() {
            component.to_string()
        } else {
            format!("{component}, {host}")
        };
        vec![
            json!(last),
            json!(s(object, "/type")),
            json!(s(object, "/reason")),
            json!(target),
            json!(involved(object, "fieldPath")),
            json!(source),
            json!(either(object, "/message", "/note").trim()),
            json!(first),
            json!(count),
            json!(name_of(object)),
        ]
    }

    fn field(&self, object: &Value, label: &str) -> Option<String> {
        let label = match label {
            l if l.starts_with("regarding.") => l.replacen("regarding.", "involvedObject.", 1),
            "reportingController" => "reportingComponent".to_string(),
            "deprecatedSource" => "source".to_string(),
            l => l.to_string(),
        };
        let value = match label.as_str() {
            "involvedObject.kind"
            | "involvedObject.namespace"
            | "involvedObject.name"
            | "involvedObject.uid"
            | "involvedObject.apiVersion"
            | "involvedObject.resourceVersion"
            | "involvedObject.fieldPath" => {
                involved(object, label.trim_start_matches("involvedObject."))
            }
            "reason" => s(object, "/reason"),
            "type" => s(object, "/type"),
            "reportingComponent" => either(object, "/reportingComponent", "/reportingController"),
            "source" => {
                let component = either(object, "/source/component", "/deprecatedSource/component");
                if component.is_empty() {
                    either(object, "/reportingComponent", "/reportingController")
                } else {
                    component
                }
            }
            _ => return None,
        };
        Some(value.to_string())
    }
}

// ---- Lease ----

#[derive(Debug, Default, Clone, Copy)]
pub struct LeaseStrategy;

fn validate_lease(new: &Lease, _old: Option<&Lease>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(spec) = &new.spec {
        if let Some(d) = spec.lease_duration_seconds.filter(|d| *d <= 0) {
            errs.push(invalid(
                "spec.leaseDurationSeconds",
                d,
                "must be greater than 0",
            ));
        }
        kwk_api::field::check_non_negative(
            "spec.leaseTransitions",
            spec.lease_transitions.map(i64::from),
            &mut errs,
        );
    }
    errs
}

impl KindStrategy for LeaseStrategy {
    fn validate(&self, object: &Value, old: Option<&Value>) -> Vec<Cause> {
        validate_typed(object, old, validate_lease)
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            name_column(),
            col("Holder", "string", "Who holds the lease."),
            age_column(),
        ]
    }

    fn row(&self, object: &Value, now: i64) -> Vec<Value> {
        vec![
            json!(name_of(object)),
            json!(s(object, "/spec/holderIdentity")),
            json!(since(s(object, "/metadata/creationTimestamp"), now)),
        ]
    }
}
