//! Patch metadata of the built-in kinds: the `k8s-openapi` schemas, annotated with the merge
//! extensions `k8s-openapi` leaves out.
//!
//! `k8s-openapi` 0.29 (feature `schemars`) gives every type's structure (properties, `$ref`s,
//! items, additionalProperties) but emits none of `x-kubernetes-patch-strategy`,
//! `x-kubernetes-patch-merge-key`, `x-kubernetes-list-type`, `x-kubernetes-list-map-keys` or
//! `x-kubernetes-map-type`. Those facts come from `builtin_patch_meta.tsv`, a table generated from
//! the `+patchStrategy`/`+patchMergeKey`/`+listType`/`+listMapKey`/`+mapType`/`+structType`
//! markers of the upstream Go types (the markers upstream's own OpenAPI generator reads) by
//! `control-plane/examples/gen-patch-meta.rs`, whose doc says how to regenerate it. We add them to
//! the schemars definitions ([`builtin_definitions`]) — the same annotated documents can be served
//! under `/openapi/v3`, which kubectl reads to compute client-side-apply patches — and compile
//! those into a [`SchemaGraph`] ([`builtin_schemas`]).

use std::sync::OnceLock;

use k8s_openapi::Resource;
use schemars::JsonSchema;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value};

use super::schema::{SchemaGraph, SchemaNode};

/// The generated table: definition, field (`.` = the definition itself), then the five extensions
/// (`-` = absent; list-map keys comma-separated).
const TABLE: &str = include_str!("builtin_patch_meta.tsv");

/// A built-in kind and the OpenAPI definition of its schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltinKind {
    /// `v1`, `apps/v1`, …
    pub api_version: &'static str,
    /// `Pod`, `Deployment`, …
    pub kind: &'static str,
    /// `io.k8s.api.core.v1.Pod`, …
    pub definition: String,
}

macro_rules! builtin_kinds {
    ($($ty:path),* $(,)?) => {
        /// Generates the schemas of every listed kind (and everything they reference).
        fn generate(generator: &mut SchemaGenerator) -> Vec<BuiltinKind> {
            let mut kinds = Vec::new();
            $(
                let _ = generator.subschema_for::<$ty>();
                kinds.push(BuiltinKind {
                    api_version: <$ty as Resource>::API_VERSION,
                    kind: <$ty as Resource>::KIND,
                    definition: <$ty as JsonSchema>::schema_name().into_owned(),
                });
            )*
            kinds
        }
    };
}

use k8s_openapi::api as a;
builtin_kinds!(
    a::admissionregistration::v1::MutatingWebhookConfiguration,
    a::admissionregistration::v1::ValidatingAdmissionPolicy,
    a::admissionregistration::v1::ValidatingAdmissionPolicyBinding,
    a::admissionregistration::v1::ValidatingWebhookConfiguration,
    a::apps::v1::ControllerRevision,
    a::apps::v1::DaemonSet,
    a::apps::v1::Deployment,
    a::apps::v1::ReplicaSet,
    a::apps::v1::StatefulSet,
    a::authentication::v1::SelfSubjectReview,
    a::authentication::v1::TokenRequest,
    a::authentication::v1::TokenReview,
    a::authorization::v1::LocalSubjectAccessReview,
    a::authorization::v1::SelfSubjectAccessReview,
    a::authorization::v1::SelfSubjectRulesReview,
    a::authorization::v1::SubjectAccessReview,
    a::autoscaling::v1::HorizontalPodAutoscaler,
    a::autoscaling::v1::Scale,
    a::autoscaling::v2::HorizontalPodAutoscaler,
    a::batch::v1::CronJob,
    a::batch::v1::Job,
    a::certificates::v1::CertificateSigningRequest,
    a::coordination::v1::Lease,
    a::core::v1::Binding,
    a::core::v1::ComponentStatus,
    a::core::v1::ConfigMap,
    a::core::v1::Endpoints,
    a::core::v1::Event,
    a::core::v1::LimitRange,
    a::core::v1::Namespace,
    a::core::v1::Node,
    a::core::v1::PersistentVolume,
    a::core::v1::PersistentVolumeClaim,
    a::core::v1::Pod,
    a::core::v1::PodTemplate,
    a::core::v1::ReplicationController,
    a::core::v1::ResourceQuota,
    a::core::v1::Secret,
    a::core::v1::Service,
    a::core::v1::ServiceAccount,
    a::discovery::v1::EndpointSlice,
    a::events::v1::Event,
    a::flowcontrol::v1::FlowSchema,
    a::flowcontrol::v1::PriorityLevelConfiguration,
    a::networking::v1::Ingress,
    a::networking::v1::IngressClass,
    a::networking::v1::IPAddress,
    a::networking::v1::NetworkPolicy,
    a::networking::v1::ServiceCIDR,
    a::node::v1::RuntimeClass,
    a::policy::v1::Eviction,
    a::policy::v1::PodDisruptionBudget,
    a::rbac::v1::ClusterRole,
    a::rbac::v1::ClusterRoleBinding,
    a::rbac::v1::Role,
    a::rbac::v1::RoleBinding,
    a::resource::v1beta1::DeviceClass,
    a::resource::v1beta1::ResourceClaim,
    a::resource::v1beta1::ResourceClaimTemplate,
    a::resource::v1beta1::ResourceSlice,
    a::scheduling::v1::PriorityClass,
    a::storage::v1::CSIDriver,
    a::storage::v1::CSINode,
    a::storage::v1::CSIStorageCapacity,
    a::storage::v1::StorageClass,
    a::storage::v1::VolumeAttachment,
    k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService,
);

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TableRow<'t> {
    pub(crate) definition: &'t str,
    /// `None`: the definition itself.
    pub(crate) field: Option<&'t str>,
    pub(crate) patch_strategy: Option<&'t str>,
    pub(crate) patch_merge_key: Option<&'t str>,
    pub(crate) list_type: Option<&'t str>,
    pub(crate) list_map_keys: Option<&'t str>,
    pub(crate) map_type: Option<&'t str>,
}

/// The rows of the generated table (comments and malformed lines skipped).
pub(crate) fn table_rows() -> impl Iterator<Item = TableRow<'static>> {
    TABLE
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|line| {
            let cols: Vec<&str> = line.split('\t').collect();
            let [definition, field, strategy, key, list_type, keys, map_type] = cols[..] else {
                return None;
            };
            let opt = |s: &'static str| (s != "-").then_some(s);
            Some(TableRow {
                definition,
                field: (field != ".").then_some(field),
                patch_strategy: opt(strategy),
                patch_merge_key: opt(key),
                list_type: opt(list_type),
                list_map_keys: opt(keys),
                map_type: opt(map_type),
            })
        })
}

/// Adds the table's extensions to `definitions`. Returns the rows that name a definition present
/// in `definitions` but a property it lacks (none, when table and `k8s-openapi` agree).
pub(crate) fn annotate(definitions: &mut Map<String, Value>) -> Vec<TableRow<'static>> {
    let mut unmatched = Vec::new();
    for row in table_rows() {
        let Some(def) = definitions
            .get_mut(row.definition)
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        let target = match row.field {
            None => Some(def),
            Some(field) => def
                .get_mut("properties")
                .and_then(Value::as_object_mut)
                .and_then(|p| p.get_mut(field))
                .and_then(Value::as_object_mut),
        };
        let Some(target) = target else {
            unmatched.push(row);
            continue;
        };
        let mut set = |name: &str, value: Option<Value>| {
            if let Some(v) = value {
                target.insert(name.to_owned(), v);
            }
        };
        set(
            "x-kubernetes-patch-strategy",
            row.patch_strategy.map(Value::from),
        );
        set(
            "x-kubernetes-patch-merge-key",
            row.patch_merge_key.map(Value::from),
        );
        set("x-kubernetes-list-type", row.list_type.map(Value::from));
        set(
            "x-kubernetes-list-map-keys",
            row.list_map_keys
                .map(|k| Value::from(k.split(',').collect::<Vec<_>>())),
        );
        set("x-kubernetes-map-type", row.map_type.map(Value::from));
    }
    unmatched
}

/// The OpenAPI v3 schemas (`components.schemas`, `$ref`s to `#/components/schemas/…`) of every
/// built-in kind and what they reference, with the merge extensions added, and the kinds.
pub fn builtin_definitions() -> (Map<String, Value>, Vec<BuiltinKind>) {
    let mut generator = SchemaGenerator::new(SchemaSettings::openapi3());
    let kinds = generate(&mut generator);
    let mut definitions = generator.take_definitions(true);
    annotate(&mut definitions);
    (definitions, kinds)
}

struct Builtin {
    graph: SchemaGraph,
    kinds: Vec<BuiltinKind>,
}

fn builtin() -> &'static Builtin {
    static BUILTIN: OnceLock<Builtin> = OnceLock::new();
    BUILTIN.get_or_init(|| {
        let (definitions, kinds) = builtin_definitions();
        Builtin {
            graph: SchemaGraph::from_definitions(&definitions),
            kinds,
        }
    })
}

/// The compiled schemas of the built-in kinds (built on first use, then shared).
pub fn builtin_schemas() -> &'static SchemaGraph {
    &builtin().graph
}

/// The built-in kinds whose schemas [`builtin_schemas`] holds.
pub fn builtin_kinds() -> &'static [BuiltinKind] {
    &builtin().kinds
}

/// The schema of a built-in kind, e.g. `("apps/v1", "Deployment")`; `None` for anything else
/// (custom resources, which strategic merge patch does not support).
pub fn builtin_schema(api_version: &str, kind: &str) -> Option<SchemaNode<'static>> {
    let b = builtin();
    let k = b
        .kinds
        .iter()
        .find(|k| k.api_version == api_version && k.kind == kind)?;
    b.graph.definition(&k.definition)
}
