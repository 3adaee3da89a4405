//! Per-kind semantics the generic REST handlers call into: defaulting, validation, the
//! `kubectl get` table columns, and the field selectors a kind supports. One
//! [`KindStrategy`] per built-in kind (as upstream's registry strategies and printers);
//! kinds without one get [`Generic`].
//!
//! Strategies are pure functions over the object's JSON (already decoded through its typed
//! `k8s-openapi` form, so types are right and unknown fields are gone). Defaulting and
//! validation of pods come from `kwk-api` (shared with kwk-node); `names` offers the
//! metadata name rules per kind; `service_alloc` the pure parts of ClusterIP/NodePort
//! allocation.
//!
//! Per group: `pod` (+ `pod_table`), `apps`, `statefulset` (+ `workloads`, shared), `batch`
//! (+ `cron`), `service`, `network` (Endpoints, EndpointSlices, Ingresses, IngressClasses,
//! NetworkPolicies), `config` (ConfigMaps, Secrets, ServiceAccounts), `cluster` (Namespaces,
//! Nodes, Events, Leases), `storage`, `policy` (PodDisruptionBudgets, PriorityClasses,
//! LimitRanges, ResourceQuotas), `rbac`, `certificates`, `crd`.

use serde_json::Value;

use super::errors::Cause;

pub mod apps;
pub mod batch;
pub mod cells;
pub mod certificates;
pub mod cluster;
pub mod config;
pub mod crd;
pub mod cron;
pub mod names;
pub mod network;
pub mod pod;
pub mod pod_table;
pub mod policy;
pub mod rbac;
pub mod service;
pub mod service_alloc;
pub mod statefulset;
pub mod storage;
pub mod util;
pub mod workloads;

#[cfg(test)]
mod kind_tests;

pub use batch::{CONTROLLER_UID_LABEL, JOB_NAME_LABEL};
pub use pod::SYSTEM_PRIORITY_CLASSES;

/// One column of a `meta.k8s.io/v1` Table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    /// `string`, `integer`, `number`, `boolean`, `date`.
    pub kind: &'static str,
    /// e.g. `name` for the NAME column.
    pub format: &'static str,
    pub description: &'static str,
    /// 0: always shown; 1: only with `-o wide`.
    pub priority: u8,
}

/// Kind-specific behaviour. Every method has the generic default.
///
/// Order on create: `default`, then (after the generic handler has set name, uid and
/// creation time) `prepare_for_create`, `default` again (idempotent), `validate`. On update:
/// `prepare_for_update`, `default`, `validate` with the stored object.
pub trait KindStrategy: Send + Sync + std::fmt::Debug {
    /// Fills defaults, as upstream's defaulting functions (idempotent).
    fn default(&self, _object: &mut Value) {}

    /// Upstream's `PrepareForCreate` beyond the generic status reset: what a kind sets on a
    /// new object once its name and uid are known (a pod's `Pending` status and QoS class, a
    /// Job's generated selector, a Namespace's `kubernetes` finalizer, a CRD's stored
    /// versions ...).
    fn prepare_for_create(&self, _object: &mut Value) {}

    /// Upstream's `PrepareForUpdate` beyond keeping the stored status: what an update may
    /// omit and keep from `old` (a Service's allocated cluster IP and node ports, a
    /// Namespace's finalizers).
    fn prepare_for_update(&self, _object: &mut Value, _old: &Value) {}

    /// Validation of a new object (`old` = `None`) or of an update (`old` = the stored object;
    /// immutable fields are checked here). Metadata (name syntax, labels, annotations) is
    /// validated generically before this is called.
    fn validate(&self, _object: &Value, _old: Option<&Value>) -> Vec<Cause> {
        Vec::new()
    }

    /// The Table columns; the first must be NAME.
    fn columns(&self) -> Vec<Column> {
        generic_columns()
    }

    /// The cells of one object's row, matching [`KindStrategy::columns`] (wide cells
    /// included: the apiserver always sends them). `now` is the server's current time in
    /// seconds since the epoch (for AGE columns).
    fn row(&self, object: &Value, now: i64) -> Vec<Value> {
        vec![
            Value::String(name_of(object).to_string()),
            Value::String(age(object, now)),
        ]
    }

    /// The row's `conditions` (`[{"type": "Completed", ...}]` for finished pods), empty for
    /// most kinds.
    fn row_conditions(&self, _object: &Value) -> Vec<Value> {
        Vec::new()
    }

    /// The value of a field selector label for `object` (`metadata.name` and
    /// `metadata.namespace` are handled generically). `None`: the kind does not support
    /// this field (the request is rejected with 400, as upstream).
    fn field(&self, _object: &Value, _label: &str) -> Option<String> {
        None
    }
}

/// The columns of a kind without a printer: NAME and AGE (as kubectl shows CRDs without
/// `additionalPrinterColumns`).
pub fn generic_columns() -> Vec<Column> {
    vec![
        Column {
            name: "Name",
            kind: "string",
            format: "name",
            description: "Name must be unique within a namespace.",
            priority: 0,
        },
        Column {
            name: "Age",
            kind: "string",
            format: "",
            description: "CreationTimestamp is a timestamp representing the server time when this object was created.",
            priority: 0,
        },
    ]
}

/// The strategy of kinds without their own.
#[derive(Debug, Default, Clone, Copy)]
pub struct Generic;

impl KindStrategy for Generic {}

/// The strategy of built-in kinds upstream has no printer for (NAME, CREATED AT).
#[derive(Debug, Default, Clone, Copy)]
pub struct CreatedAt;

impl KindStrategy for CreatedAt {
    fn columns(&self) -> Vec<Column> {
        cells::created_at_columns()
    }

    fn row(&self, object: &Value, _now: i64) -> Vec<Value> {
        cells::created_at_row(object)
    }
}

/// The strategy for a built-in kind (custom resources and kinds without one get
/// [`Generic`]).
pub fn strategy_for(group: &str, kind: &str) -> &'static dyn KindStrategy {
    match (group, kind) {
        ("", "Pod") => &pod::PodStrategy,
        ("", "Service") => &service::ServiceStrategy,
        ("", "Endpoints") => &network::EndpointsStrategy,
        ("", "ConfigMap") => &config::ConfigMapStrategy,
        ("", "Secret") => &config::SecretStrategy,
        ("", "ServiceAccount") => &config::ServiceAccountStrategy,
        ("", "Namespace") => &cluster::NamespaceStrategy,
        ("", "Node") => &cluster::NodeStrategy,
        ("", "Event") | ("events.k8s.io", "Event") => &cluster::EventStrategy,
        ("", "PersistentVolume") => &storage::PersistentVolumeStrategy,
        ("", "PersistentVolumeClaim") => &storage::PersistentVolumeClaimStrategy,
        ("", "LimitRange") => &policy::LimitRangeStrategy,
        ("", "ResourceQuota") => &policy::ResourceQuotaStrategy,
        ("apps", "Deployment") => &apps::DeploymentStrategy,
        ("apps", "ReplicaSet") => &apps::ReplicaSetStrategy,
        ("apps", "DaemonSet") => &apps::DaemonSetStrategy,
        ("apps", "StatefulSet") => &statefulset::StatefulSetStrategy,
        ("apps", "ControllerRevision") => &apps::ControllerRevisionStrategy,
        ("batch", "Job") => &batch::JobStrategy,
        ("batch", "CronJob") => &batch::CronJobStrategy,
        ("discovery.k8s.io", "EndpointSlice") => &network::EndpointSliceStrategy,
        ("coordination.k8s.io", "Lease") => &cluster::LeaseStrategy,
        ("policy", "PodDisruptionBudget") => &policy::PodDisruptionBudgetStrategy,
        ("scheduling.k8s.io", "PriorityClass") => &policy::PriorityClassStrategy,
        ("storage.k8s.io", "StorageClass") => &storage::StorageClassStrategy,
        ("rbac.authorization.k8s.io", "Role" | "ClusterRole") => &rbac::RoleStrategy,
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            &rbac::RoleBindingStrategy
        }
        ("networking.k8s.io", "Ingress") => &network::IngressStrategy,
        ("networking.k8s.io", "IngressClass") => &network::IngressClassStrategy,
        ("networking.k8s.io", "NetworkPolicy") => &network::NetworkPolicyStrategy,
        ("certificates.k8s.io", "CertificateSigningRequest") => {
            &certificates::CertificateSigningRequestStrategy
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            &crd::CustomResourceDefinitionStrategy
        }
        ("", "PodTemplate") => &pod::PodTemplateStrategy,
        ("storage.k8s.io", "CSIDriver") => &storage::CsiDriverStrategy,
        ("storage.k8s.io", "CSINode") => &storage::CsiNodeStrategy,
        ("storage.k8s.io", "VolumeAttachment") => &storage::VolumeAttachmentStrategy,
        _ => &Generic,
    }
}

/// `metadata.name` (empty if absent).
pub fn name_of(object: &Value) -> &str {
    object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The AGE cell: time since `metadata.creationTimestamp`, in kubectl's short form
/// (`45s`, `3m12s`, `5h`, `12d` ...; `<unknown>` without a timestamp).
pub fn age(object: &Value, now: i64) -> String {
    let created = object
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok());
    match created {
        Some(created) => human_duration(now - created.as_second()),
        None => "<unknown>".to_string(),
    }
}

/// A duration in seconds in the short human form kubectl prints (upstream's
/// `duration.HumanDuration` rules).
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    let s = seconds.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        match s % 60 {
            0 => format!("{m}m"),
            rest => format!("{m}m{rest}s"),
        }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        match m % 60 {
            0 => format!("{h}h"),
            rest => format!("{h}h{rest}m"),
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        match h % 24 {
            0 => format!("{d}d"),
            rest => format!("{d}d{rest}h"),
        }
    } else if h < 24 * 365 * 2 {
        format!("{d}d")
    } else if h < 24 * 365 * 8 {
        match d % 365 {
            0 => format!("{}y", d / 365),
            rest => format!("{}y{rest}d", d / 365),
        }
    } else {
        format!("{}y", d / 365)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_like_kubectl() {
        let cases = [
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (192, "3m12s"),
            (600, "10m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 60 * 5, "3h5m"),
            (47 * 3600, "47h"),
            (50 * 3600, "2d2h"),
            (10 * 86400, "10d"),
            (800 * 86400, "2y70d"),
            (-5, "<invalid>"),
        ];
        for (seconds, want) in cases {
            assert_eq!(human_duration(seconds), want, "{seconds}s");
        }
    }
}
