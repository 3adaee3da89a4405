//! The catalogue of served resources: for each group/version/resource, its kind, scope,
//! names (singular, short names, categories), verbs, subresources and storage prefix — what
//! discovery advertises and what routing, storage keys and typed decoding are derived from.
//! Built-in resources come from the table in this file; custom resources are added at
//! run time from CustomResourceDefinitions.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

/// The verbs of an ordinary read-write resource.
pub const CRUD_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// Decodes a JSON object into its typed form and back: type errors become errors, unknown
/// fields are dropped (as upstream's decoder prunes them), `apiVersion`/`kind` are checked.
pub type TypedRoundTrip = fn(Value) -> Result<Value, serde_json::Error>;

fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(
    value: Value,
) -> Result<Value, serde_json::Error> {
    let typed: T = serde_json::from_value(value)?;
    serde_json::to_value(typed)
}

/// [`round_trip`] for kinds whose `spec.selector` is required: the typed form fills a
/// missing selector with an empty one, so a missing selector is taken out again and
/// validation can tell the two apart (upstream: `Required value` against `empty selector is
/// invalid`).
fn round_trip_keeping_missing_selector<T: serde::de::DeserializeOwned + serde::Serialize>(
    value: Value,
) -> Result<Value, serde_json::Error> {
    let missing = value.pointer("/spec/selector").is_none_or(Value::is_null);
    let mut decoded = round_trip::<T>(value)?;
    if missing && let Some(spec) = decoded.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("selector");
    }
    Ok(decoded)
}

/// A subresource (`pods/status`, `deployments/scale` ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubresourceDef {
    pub name: String,
    /// The group/version/kind of its request and response bodies.
    pub group: String,
    pub version: String,
    pub kind: String,
    pub verbs: Vec<String>,
}

/// One served resource.
#[derive(Debug, Clone)]
pub struct ResourceDef {
    pub group: String,
    pub version: String,
    pub kind: String,
    /// The plural resource name used in URLs (`pods`).
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub verbs: Vec<String>,
    pub subresources: Vec<SubresourceDef>,
    /// Storage key prefix without trailing slash (`/registry/pods`).
    pub storage_prefix: String,
    /// For built-in kinds, the typed round trip.
    pub typed: Option<TypedRoundTrip>,
    /// For custom resources, what their CRD version defines (schema, columns, scale).
    pub custom: Option<Arc<crate::apiserver::crd::CustomResource>>,
}

impl ResourceDef {
    /// `apps/v1` or `v1`.
    pub fn api_version(&self) -> String {
        group_version(&self.group, &self.version)
    }

    pub fn has_subresource(&self, name: &str) -> bool {
        self.subresources.iter().any(|s| s.name == name)
    }

    /// A custom resource's schema for field management (built-in kinds: `None`, their
    /// schemas are looked up by kind).
    pub fn managed_schema(&self) -> Option<crate::apiserver::managed::SchemaRef> {
        let custom = self.custom.as_ref()?;
        let (graph, root) = custom
            .managed_schema
            .get_or_init(|| {
                let (graph, root) = crate::apiserver::crd::openapi::compile(self, custom);
                (Arc::new(graph), root)
            })
            .clone();
        Some(crate::apiserver::managed::SchemaRef { graph, root })
    }

    /// The kind's strategy: the built-in one, or the custom resource's.
    pub fn strategy(&self) -> &dyn crate::apiserver::kinds::KindStrategy {
        match &self.custom {
            Some(custom) => custom.as_ref(),
            None => crate::apiserver::kinds::strategy_for(&self.group, &self.kind),
        }
    }

    pub fn supports(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }

    /// The storage key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("{}/{ns}/{name}", self.storage_prefix),
            _ => format!("{}/{name}", self.storage_prefix),
        }
    }

    /// The storage prefix of a list (one namespace, or all).
    pub fn list_prefix(&self, namespace: Option<&str>) -> String {
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("{}/{ns}/", self.storage_prefix),
            _ => format!("{}/", self.storage_prefix),
        }
    }
}

/// `group/version`, or `version` for the core group.
pub fn group_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

/// All served resources, indexed for routing. Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    resources: Vec<Arc<ResourceDef>>,
    by_path: BTreeMap<(String, String, String), Arc<ResourceDef>>,
}

impl Catalog {
    /// The built-in resources.
    pub fn builtin() -> Self {
        let mut catalog = Self::default();
        for def in builtin_resources() {
            catalog.insert(def);
        }
        catalog
    }

    /// Adds (or replaces) a resource.
    pub fn insert(&mut self, def: ResourceDef) {
        let key = (def.group.clone(), def.version.clone(), def.plural.clone());
        let def = Arc::new(def);
        self.resources.retain(|r| {
            (r.group.as_str(), r.version.as_str(), r.plural.as_str())
                != (key.0.as_str(), key.1.as_str(), key.2.as_str())
        });
        self.resources.push(def.clone());
        self.by_path.insert(key, def);
    }

    /// Removes every version of `group`/`plural` (a deleted CRD).
    pub fn remove(&mut self, group: &str, plural: &str) {
        self.resources
            .retain(|r| !(r.group == group && r.plural == plural));
        self.by_path
            .retain(|(g, _, p), _| !(g == group && p == plural));
    }

    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<&Arc<ResourceDef>> {
        self.by_path
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
    }

    /// The resource of a kind (for decoding bodies by `apiVersion`/`kind`).
    pub fn by_kind(&self, group: &str, version: &str, kind: &str) -> Option<&Arc<ResourceDef>> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.kind == kind)
    }

    pub fn resources(&self) -> impl Iterator<Item = &Arc<ResourceDef>> {
        self.resources.iter()
    }

    /// Served groups in discovery order (core first, then as registered), each with its
    /// versions (preferred first).
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for r in &self.resources {
            match groups.iter_mut().find(|(g, _)| *g == r.group) {
                Some((_, versions)) => {
                    if !versions.contains(&r.version) {
                        versions.push(r.version.clone());
                    }
                }
                None => groups.push((r.group.clone(), vec![r.version.clone()])),
            }
        }
        for (_, versions) in &mut groups {
            versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        }
        groups
    }

    /// Resources of one group version, in registration order.
    pub fn resources_of(&self, group: &str, version: &str) -> Vec<&Arc<ResourceDef>> {
        self.resources
            .iter()
            .filter(|r| r.group == group && r.version == version)
            .collect()
    }
}

/// Kubernetes version ordering: GA > beta > alpha, then by numbers (`v2` > `v1` > `v1beta2`).
pub fn version_priority(version: &str) -> (u8, u32, u32) {
    let Some(rest) = version.strip_prefix('v') else {
        return (0, 0, 0);
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let major = digits.parse().unwrap_or(0);
    let tail = &rest[digits.len()..];
    let (stage, minor_text) = if tail.is_empty() {
        (3, "")
    } else if let Some(m) = tail.strip_prefix("beta") {
        (2, m)
    } else if let Some(m) = tail.strip_prefix("alpha") {
        (1, m)
    } else {
        return (0, 0, 0);
    };
    (stage, major, minor_text.parse().unwrap_or(0))
}

/// A compact row of the built-in table.
struct Row {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    categories: &'static [&'static str],
    /// `&[]` for CRUD; otherwise the verbs.
    verbs: &'static [&'static str],
    /// Subresource names; their kinds follow upstream (see [`subresource`]).
    subresources: &'static [&'static str],
    /// Storage prefix below `/registry/` when it is not the plural.
    storage: Option<&'static str>,
    typed: TypedRoundTrip,
}

const NS: bool = true;
const CLUSTER: bool = false;
const CREATE_ONLY: &[&str] = &["create"];
const ALL: &[&str] = &["all"];

macro_rules! row {
    ($group:expr, $version:expr, $kind:ident => $ty:ty, $plural:expr, $scope:expr, $short:expr, $cat:expr, $verbs:expr, $subs:expr, $storage:expr) => {
        Row {
            group: $group,
            version: $version,
            kind: stringify!($kind),
            plural: $plural,
            namespaced: $scope,
            short: $short,
            categories: $cat,
            verbs: $verbs,
            subresources: $subs,
            storage: $storage,
            typed: round_trip::<$ty>,
        }
    };
}

fn builtin_rows() -> Vec<Row> {
    use k8s_openapi::api::{
        apps::v1 as apps, authentication::v1 as authn, authorization::v1 as authz,
        batch::v1 as batch, certificates::v1 as certs, coordination::v1 as coord, core::v1 as core,
        discovery::v1 as disc, events::v1 as events, networking::v1 as net, policy::v1 as policy,
        rbac::v1 as rbac, scheduling::v1 as sched, storage::v1 as storage,
    };
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiext;
    vec![
        // core/v1
        row!("", "v1", Binding => core::Binding, "bindings", NS, &[], &[], CREATE_ONLY, &[], None),
        row!("", "v1", ConfigMap => core::ConfigMap, "configmaps", NS, &["cm"], &[], &[], &[], None),
        row!("", "v1", Endpoints => core::Endpoints, "endpoints", NS, &["ep"], &[], &[], &[], Some("services/endpoints")),
        row!("", "v1", Event => core::Event, "events", NS, &["ev"], &[], &[], &[], None),
        row!("", "v1", LimitRange => core::LimitRange, "limitranges", NS, &["limits"], &[], &[], &[], None),
        row!("", "v1", Namespace => core::Namespace, "namespaces", CLUSTER, &["ns"], &[], &["create", "delete", "get", "list", "patch", "update", "watch"], &["finalize", "status"], None),
        row!("", "v1", Node => core::Node, "nodes", CLUSTER, &["no"], &[], &[], &["proxy", "status"], Some("minions")),
        row!("", "v1", PersistentVolumeClaim => core::PersistentVolumeClaim, "persistentvolumeclaims", NS, &["pvc"], &[], &[], &["status"], None),
        row!("", "v1", PersistentVolume => core::PersistentVolume, "persistentvolumes", CLUSTER, &["pv"], &[], &[], &["status"], None),
        row!("", "v1", Pod => core::Pod, "pods", NS, &["po"], ALL, &[], &["attach", "binding", "ephemeralcontainers", "eviction", "exec", "log", "portforward", "proxy", "resize", "status"], None),
        row!("", "v1", PodTemplate => core::PodTemplate, "podtemplates", NS, &[], &[], &[], &[], None),
        row!("", "v1", ResourceQuota => core::ResourceQuota, "resourcequotas", NS, &["quota"], &[], &[], &["status"], None),
        row!("", "v1", Secret => core::Secret, "secrets", NS, &[], &[], &[], &[], None),
        row!("", "v1", ServiceAccount => core::ServiceAccount, "serviceaccounts", NS, &["sa"], &[], &[], &["token"], None),
        row!("", "v1", Service => core::Service, "services", NS, &["svc"], ALL, &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"], &["proxy", "status"], Some("services/specs")),
        // apiextensions.k8s.io/v1
        row!("apiextensions.k8s.io", "v1", CustomResourceDefinition => apiext::CustomResourceDefinition, "customresourcedefinitions", CLUSTER, &["crd", "crds"], &["api-extensions"], &[], &["status"], Some("apiextensions.k8s.io/customresourcedefinitions")),
        // apps/v1
        row!("apps", "v1", ControllerRevision => apps::ControllerRevision, "controllerrevisions", NS, &[], &[], &[], &[], None),
        row!("apps", "v1", DaemonSet => apps::DaemonSet, "daemonsets", NS, &["ds"], ALL, &[], &["status"], None),
        Row {
            typed: round_trip_keeping_missing_selector::<apps::Deployment>,
            ..row!("apps", "v1", Deployment => apps::Deployment, "deployments", NS, &["deploy"], ALL, &[], &["scale", "status"], None)
        },
        Row {
            typed: round_trip_keeping_missing_selector::<apps::ReplicaSet>,
            ..row!("apps", "v1", ReplicaSet => apps::ReplicaSet, "replicasets", NS, &["rs"], ALL, &[], &["scale", "status"], None)
        },
        row!("apps", "v1", StatefulSet => apps::StatefulSet, "statefulsets", NS, &["sts"], ALL, &[], &["scale", "status"], None),
        // authentication.k8s.io/v1, authorization.k8s.io/v1 (virtual: create-only, not stored)
        row!("authentication.k8s.io", "v1", SelfSubjectReview => authn::SelfSubjectReview, "selfsubjectreviews", CLUSTER, &[], &[], CREATE_ONLY, &[], None),
        row!("authentication.k8s.io", "v1", TokenReview => authn::TokenReview, "tokenreviews", CLUSTER, &[], &[], CREATE_ONLY, &[], None),
        row!("authorization.k8s.io", "v1", LocalSubjectAccessReview => authz::LocalSubjectAccessReview, "localsubjectaccessreviews", NS, &[], &[], CREATE_ONLY, &[], None),
        row!("authorization.k8s.io", "v1", SelfSubjectAccessReview => authz::SelfSubjectAccessReview, "selfsubjectaccessreviews", CLUSTER, &[], &[], CREATE_ONLY, &[], None),
        row!("authorization.k8s.io", "v1", SelfSubjectRulesReview => authz::SelfSubjectRulesReview, "selfsubjectrulesreviews", CLUSTER, &[], &[], CREATE_ONLY, &[], None),
        row!("authorization.k8s.io", "v1", SubjectAccessReview => authz::SubjectAccessReview, "subjectaccessreviews", CLUSTER, &[], &[], CREATE_ONLY, &[], None),
        // batch/v1
        row!("batch", "v1", CronJob => batch::CronJob, "cronjobs", NS, &["cj"], ALL, &[], &["status"], None),
        row!("batch", "v1", Job => batch::Job, "jobs", NS, &[], ALL, &[], &["status"], None),
        // certificates.k8s.io/v1
        row!("certificates.k8s.io", "v1", CertificateSigningRequest => certs::CertificateSigningRequest, "certificatesigningrequests", CLUSTER, &["csr"], &[], &[], &["approval", "status"], None),
        // coordination.k8s.io/v1
        row!("coordination.k8s.io", "v1", Lease => coord::Lease, "leases", NS, &[], &[], &[], &[], None),
        // discovery.k8s.io/v1
        row!("discovery.k8s.io", "v1", EndpointSlice => disc::EndpointSlice, "endpointslices", NS, &[], &[], &[], &[], None),
        // events.k8s.io/v1
        row!("events.k8s.io", "v1", Event => events::Event, "events", NS, &["ev"], &[], &[], &[], None),
        // networking.k8s.io/v1
        row!("networking.k8s.io", "v1", IngressClass => net::IngressClass, "ingressclasses", CLUSTER, &[], &[], &[], &[], None),
        row!("networking.k8s.io", "v1", Ingress => net::Ingress, "ingresses", NS, &["ing"], &[], &[], &["status"], Some("ingress")),
        row!("networking.k8s.io", "v1", NetworkPolicy => net::NetworkPolicy, "networkpolicies", NS, &["netpol"], &[], &[], &[], None),
        // policy/v1
        row!("policy", "v1", PodDisruptionBudget => policy::PodDisruptionBudget, "poddisruptionbudgets", NS, &["pdb"], &[], &[], &["status"], None),
        // rbac.authorization.k8s.io/v1
        row!("rbac.authorization.k8s.io", "v1", ClusterRoleBinding => rbac::ClusterRoleBinding, "clusterrolebindings", CLUSTER, &[], &[], &[], &[], None),
        row!("rbac.authorization.k8s.io", "v1", ClusterRole => rbac::ClusterRole, "clusterroles", CLUSTER, &[], &[], &[], &[], None),
        row!("rbac.authorization.k8s.io", "v1", RoleBinding => rbac::RoleBinding, "rolebindings", NS, &[], &[], &[], &[], None),
        row!("rbac.authorization.k8s.io", "v1", Role => rbac::Role, "roles", NS, &[], &[], &[], &[], None),
        // scheduling.k8s.io/v1
        row!("scheduling.k8s.io", "v1", PriorityClass => sched::PriorityClass, "priorityclasses", CLUSTER, &["pc"], &[], &[], &[], None),
        // storage.k8s.io/v1
        row!("storage.k8s.io", "v1", CSIDriver => storage::CSIDriver, "csidrivers", CLUSTER, &[], &[], &[], &[], None),
        row!("storage.k8s.io", "v1", CSINode => storage::CSINode, "csinodes", CLUSTER, &[], &[], &[], &[], None),
        row!("storage.k8s.io", "v1", StorageClass => storage::StorageClass, "storageclasses", CLUSTER, &["sc"], &[], &[], &[], None),
        row!("storage.k8s.io", "v1", VolumeAttachment => storage::VolumeAttachment, "volumeattachments", CLUSTER, &[], &[], &[], &["status"], None),
    ]
}

/// The group/version/kind and verbs of a built-in subresource (upstream's discovery).
fn subresource(row: &Row, name: &str) -> SubresourceDef {
    let (group, version, kind, verbs): (&str, &str, &str, &[&str]) = match name {
        "status" => (
            row.group,
            row.version,
            row.kind,
            &["get", "patch", "update"],
        ),
        "scale" => ("autoscaling", "v1", "Scale", &["get", "patch", "update"]),
        "binding" => ("", "v1", "Binding", &["create"]),
        "eviction" => ("policy", "v1", "Eviction", &["create"]),
        "token" => ("authentication.k8s.io", "v1", "TokenRequest", &["create"]),
        "ephemeralcontainers" | "resize" => ("", "v1", "Pod", &["get", "patch", "update"]),
        "finalize" => ("", "v1", "Namespace", &["update"]),
        "approval" => (
            row.group,
            row.version,
            row.kind,
            &["get", "patch", "update"],
        ),
        "log" => ("", "v1", "Pod", &["get"]),
        "attach" | "exec" | "portforward" => ("", "v1", "PodAttachOptions", &["create", "get"]),
        "proxy" => (
            "",
            "v1",
            if row.kind == "Node" {
                "NodeProxyOptions"
            } else if row.kind == "Service" {
                "ServiceProxyOptions"
            } else {
                "PodProxyOptions"
            },
            &["create", "delete", "get", "patch", "update"],
        ),
        _ => (row.group, row.version, row.kind, &["get"]),
    };
    let kind = match name {
        "exec" => "PodExecOptions",
        "portforward" => "PodPortForwardOptions",
        _ => kind,
    };
    SubresourceDef {
        name: name.to_string(),
        group: group.to_string(),
        version: version.to_string(),
        kind: kind.to_string(),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
    }
}

fn builtin_resources() -> Vec<ResourceDef> {
    builtin_rows()
        .into_iter()
        .map(|row| {
            let verbs = if row.verbs.is_empty() {
                CRUD_VERBS
            } else {
                row.verbs
            };
            ResourceDef {
                group: row.group.to_string(),
                version: row.version.to_string(),
                kind: row.kind.to_string(),
                plural: row.plural.to_string(),
                singular: row.kind.to_ascii_lowercase(),
                namespaced: row.namespaced,
                short_names: row.short.iter().map(|s| s.to_string()).collect(),
                categories: row.categories.iter().map(|s| s.to_string()).collect(),
                verbs: verbs.iter().map(|s| s.to_string()).collect(),
                subresources: row
                    .subresources
                    .iter()
                    .map(|s| subresource(&row, s))
                    .collect(),
                storage_prefix: format!("/registry/{}", row.storage.unwrap_or(row.plural)),
                typed: Some(row.typed),
                custom: None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_and_keys() {
        let catalog = Catalog::builtin();
        let pods = catalog.lookup("", "v1", "pods").expect("pods");
        assert_eq!(
            pods.key(Some("default"), "web"),
            "/registry/pods/default/web"
        );
        assert_eq!(pods.list_prefix(None), "/registry/pods/");
        let nodes = catalog.lookup("", "v1", "nodes").expect("nodes");
        assert_eq!(nodes.key(None, "n1"), "/registry/minions/n1");
        let deploy = catalog
            .by_kind("apps", "v1", "Deployment")
            .expect("deployments");
        assert_eq!(deploy.subresources[0].kind, "Scale");
        assert_eq!(catalog.groups()[0].0, "");
        // Storage prefixes never nest inside another resource's prefix.
        let prefixes: Vec<String> = catalog
            .resources()
            .map(|r| format!("{}/", r.storage_prefix))
            .collect();
        for a in &prefixes {
            for b in &prefixes {
                assert!(a == b || !b.starts_with(a.as_str()), "{a} contains {b}");
            }
        }
    }

    #[test]
    fn typed_round_trip_checks_kind_and_types() {
        let catalog = Catalog::builtin();
        let cm = catalog.lookup("", "v1", "configmaps").expect("cm");
        let typed = cm.typed.expect("typed");
        let ok = typed(serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a"}, "data": {"k": "v"}, "bogus": 1}))
        .expect("valid");
        assert!(ok.get("bogus").is_none(), "unknown fields pruned");
        assert!(
            typed(serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "data": {"k": 1}}))
            .is_err()
        );
        assert!(typed(serde_json::json!({"apiVersion": "v1", "kind": "Secret"})).is_err());
    }

    #[test]
    fn workload_round_trip_keeps_a_missing_selector_missing() {
        let catalog = Catalog::builtin();
        for plural in ["deployments", "replicasets"] {
            let def = catalog.lookup("apps", "v1", plural).expect(plural);
            let typed = def.typed.expect("typed");
            let kind = def.kind.clone();
            let missing = typed(serde_json::json!({"apiVersion": "apps/v1", "kind": kind,
                "metadata": {"name": "a"}, "spec": {"replicas": 1}}))
            .expect("valid");
            assert_eq!(missing.pointer("/spec/selector"), None, "{plural}");
            let empty = typed(serde_json::json!({"apiVersion": "apps/v1", "kind": kind,
                "metadata": {"name": "a"}, "spec": {"selector": {}}}))
            .expect("valid");
            assert_eq!(
                empty.pointer("/spec/selector"),
                Some(&serde_json::json!({})),
                "{plural}"
            );
        }
    }

    #[test]
    fn version_ordering() {
        let mut versions = vec!["v1beta1", "v1", "v2alpha1", "v2", "v1beta2"];
        versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        assert_eq!(versions, ["v2", "v1", "v1beta2", "v1beta1", "v2alpha1"]);
    }
}
