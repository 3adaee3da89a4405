//! Every kind, every field: a message with all fields set is built from the schema, converted,
//! and checked against two independent sources — `k8s-openapi` (JSON names and JSON types: the
//! JSON must deserialize into its type and serialize back unchanged) and `k8s-pb` (field numbers
//! and wire types: the bytes decoded and re-encoded by its prost structs convert to the same JSON).

use serde_json::{Map, Value};

use super::schema::{Card, MsgId, SCHEMA, Scalar, Shape, Special, Type};
use super::{Limits, MAGIC, decode_body, to_json, to_json_with};

/// `(schema message name, k8s-openapi round trip, k8s-pb round trip)`.
type Entry = (String, Option<fn(&Value) -> Value>, fn(&[u8]) -> Vec<u8>);

fn name_of(path: &str) -> String {
    path.replace(' ', "").replace("::", ".")
}

fn openapi<T: serde::de::DeserializeOwned + serde::Serialize>(v: &Value) -> Value {
    let typed: T = serde_json::from_value(v.clone())
        .unwrap_or_else(|e| panic!("k8s-openapi rejects {v}: {e}"));
    serde_json::to_value(typed).expect("serialize")
}

fn pb<T: prost::Message + Default>(bytes: &[u8]) -> Vec<u8> {
    T::decode(bytes)
        .unwrap_or_else(|e| panic!("k8s-pb cannot decode: {e}"))
        .encode_to_vec()
}

macro_rules! both {
    ($($($seg:ident)::+),* $(,)?) => {
        vec![$((
            name_of(stringify!($($seg)::+)),
            Some(openapi::<k8s_openapi::$($seg)::+> as fn(&Value) -> Value),
            pb::<k8s_pb::$($seg)::+> as fn(&[u8]) -> Vec<u8>,
        )),*]
    };
}

macro_rules! pb_only {
    ($($($seg:ident)::+),* $(,)?) => {
        vec![$((name_of(stringify!($($seg)::+)), None, pb::<k8s_pb::$($seg)::+> as fn(&[u8]) -> Vec<u8>)),*]
    };
}

fn entries() -> Vec<Entry> {
    let mut all: Vec<Entry> = both![
        api::admissionregistration::v1::MutatingWebhookConfiguration,
        api::admissionregistration::v1::ValidatingAdmissionPolicy,
        api::admissionregistration::v1::ValidatingAdmissionPolicyBinding,
        api::admissionregistration::v1::ValidatingWebhookConfiguration,
        api::apps::v1::ControllerRevision,
        api::apps::v1::DaemonSet,
        api::apps::v1::Deployment,
        api::apps::v1::ReplicaSet,
        api::apps::v1::StatefulSet,
        api::authentication::v1::SelfSubjectReview,
        api::authentication::v1::TokenRequest,
        api::authentication::v1::TokenReview,
        api::authorization::v1::LocalSubjectAccessReview,
        api::authorization::v1::SelfSubjectAccessReview,
        api::authorization::v1::SelfSubjectRulesReview,
        api::authorization::v1::SubjectAccessReview,
        api::autoscaling::v1::HorizontalPodAutoscaler,
        api::autoscaling::v1::Scale,
        api::autoscaling::v2::HorizontalPodAutoscaler,
        api::batch::v1::CronJob,
        api::batch::v1::Job,
        api::certificates::v1::CertificateSigningRequest,
        api::coordination::v1::Lease,
        api::discovery::v1::EndpointSlice,
        api::events::v1::Event,
        api::flowcontrol::v1::FlowSchema,
        api::flowcontrol::v1::PriorityLevelConfiguration,
        api::networking::v1::IPAddress,
        api::networking::v1::Ingress,
        api::networking::v1::IngressClass,
        api::networking::v1::NetworkPolicy,
        api::networking::v1::ServiceCIDR,
        api::node::v1::RuntimeClass,
        api::policy::v1::Eviction,
        api::policy::v1::PodDisruptionBudget,
        api::rbac::v1::ClusterRole,
        api::rbac::v1::ClusterRoleBinding,
        api::rbac::v1::Role,
        api::rbac::v1::RoleBinding,
        api::scheduling::v1::PriorityClass,
        api::storage::v1::CSIDriver,
        api::storage::v1::CSINode,
        api::storage::v1::CSIStorageCapacity,
        api::storage::v1::StorageClass,
        api::storage::v1::VolumeAttachment,
        api::core::v1::Binding,
        api::core::v1::ComponentStatus,
        api::core::v1::ConfigMap,
        api::core::v1::Endpoints,
        api::core::v1::Event,
        api::core::v1::LimitRange,
        api::core::v1::Namespace,
        api::core::v1::Node,
        api::core::v1::PersistentVolume,
        api::core::v1::PersistentVolumeClaim,
        api::core::v1::Pod,
        api::core::v1::PodTemplate,
        api::core::v1::ReplicationController,
        api::core::v1::ResourceQuota,
        api::core::v1::Secret,
        api::core::v1::Service,
        api::core::v1::ServiceAccount,
    ];
    all.extend(pb_only![
        api::admissionregistration::v1::MutatingWebhookConfigurationList,
        api::admissionregistration::v1::ValidatingAdmissionPolicyBindingList,
        api::admissionregistration::v1::ValidatingAdmissionPolicyList,
        api::admissionregistration::v1::ValidatingWebhookConfigurationList,
        api::apps::v1::ControllerRevisionList,
        api::apps::v1::DaemonSetList,
        api::apps::v1::DeploymentList,
        api::apps::v1::ReplicaSetList,
        api::apps::v1::StatefulSetList,
        api::autoscaling::v1::HorizontalPodAutoscalerList,
        api::autoscaling::v2::HorizontalPodAutoscalerList,
        api::batch::v1::CronJobList,
        api::batch::v1::JobList,
        api::certificates::v1::CertificateSigningRequestList,
        api::coordination::v1::LeaseList,
        api::discovery::v1::EndpointSliceList,
        api::events::v1::EventList,
        api::flowcontrol::v1::FlowSchemaList,
        api::flowcontrol::v1::PriorityLevelConfigurationList,
        api::networking::v1::IPAddressList,
        api::networking::v1::IngressClassList,
        api::networking::v1::IngressList,
        api::networking::v1::NetworkPolicyList,
        api::networking::v1::ServiceCIDRList,
        api::node::v1::RuntimeClassList,
        api::policy::v1::PodDisruptionBudgetList,
        api::rbac::v1::ClusterRoleBindingList,
        api::rbac::v1::ClusterRoleList,
        api::rbac::v1::RoleBindingList,
        api::rbac::v1::RoleList,
        api::scheduling::v1::PriorityClassList,
        api::storage::v1::CSIDriverList,
        api::storage::v1::CSINodeList,
        api::storage::v1::CSIStorageCapacityList,
        api::storage::v1::StorageClassList,
        api::storage::v1::VolumeAttachmentList,
        api::core::v1::ComponentStatusList,
        api::core::v1::ConfigMapList,
        api::core::v1::EndpointsList,
        api::core::v1::EventList,
        api::core::v1::LimitRangeList,
        api::core::v1::List,
        api::core::v1::NamespaceList,
        api::core::v1::NodeList,
        api::core::v1::NodeProxyOptions,
        api::core::v1::PersistentVolumeClaimList,
        api::core::v1::PersistentVolumeList,
        api::core::v1::PodAttachOptions,
        api::core::v1::PodExecOptions,
        api::core::v1::PodList,
        api::core::v1::PodLogOptions,
        api::core::v1::PodPortForwardOptions,
        api::core::v1::PodProxyOptions,
        api::core::v1::PodStatusResult,
        api::core::v1::PodTemplateList,
        api::core::v1::RangeAllocation,
        api::core::v1::ReplicationControllerList,
        api::core::v1::ResourceQuotaList,
        api::core::v1::SecretList,
        api::core::v1::SerializedReference,
        api::core::v1::ServiceAccountList,
        api::core::v1::ServiceList,
        api::core::v1::ServiceProxyOptions,
    ]);
    all.extend(both![
        apimachinery::pkg::apis::meta::v1::DeleteOptions,
        apimachinery::pkg::apis::meta::v1::Status,
    ]);
    all
}

/// Builds protobuf messages from the schema with every field set.
struct Sampler {
    /// Every scalar zero, every message empty, every list one zero element: tests presence.
    zeros: bool,
    counter: u64,
}

fn key(out: &mut Vec<u8>, number: u32, wire_type: u8) {
    varint(out, (u64::from(number) << 3) | u64::from(wire_type));
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn bytes_field(out: &mut Vec<u8>, number: u32, bytes: &[u8]) {
    key(out, number, 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

impl Sampler {
    fn next(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    fn message(&mut self, id: MsgId, stack: &mut Vec<MsgId>) -> Vec<u8> {
        let msg = &SCHEMA.messages[id];
        let mut out = Vec::new();
        let n = self.next();
        match msg.shape {
            // Always a real time: k8s-openapi cannot read the `null` Go writes for a zero
            // required Time (metav1.Condition.lastTransitionTime), so zeros use one too.
            Shape::Special(Special::Time) | Shape::Special(Special::MicroTime) => {
                key(&mut out, 1, 0);
                varint(&mut out, 1_700_000_000 + n);
                key(&mut out, 2, 0);
                varint(&mut out, 123_456_789);
            }
            Shape::Special(Special::Quantity) => {
                bytes_field(&mut out, 1, if self.zeros { b"0" } else { b"1500m" })
            }
            Shape::Special(Special::IntOrString) if !self.zeros => {
                if n.is_multiple_of(2) {
                    key(&mut out, 2, 0);
                    varint(&mut out, 8080);
                } else {
                    key(&mut out, 1, 0);
                    varint(&mut out, 1);
                    bytes_field(&mut out, 3, b"http");
                }
            }
            Shape::Special(Special::RawJson) if !self.zeros => {
                bytes_field(&mut out, 1, br#"{"f:a":{},"n":[1,2]}"#)
            }
            Shape::Special(_) => {}
            Shape::List => {
                for item in [&b"x"[..], b"y"] {
                    bytes_field(&mut out, 1, if self.zeros { b"" } else { item });
                }
            }
            Shape::Object => {
                stack.push(id);
                for field in &msg.fields {
                    let count = match field.card {
                        Card::One => 1,
                        _ if self.zeros => 1,
                        _ => 2,
                    };
                    for i in 0..count {
                        let mut value = Vec::new();
                        match field.ty {
                            Type::Message(sub) if stack.contains(&sub) => continue,
                            Type::Message(sub) => value = self.message(sub, stack),
                            Type::Scalar(s) => self.scalar(s, &mut value),
                        }
                        if field.card == Card::Map {
                            let mut entry = Vec::new();
                            bytes_field(&mut entry, 1, format!("k{i}").as_bytes());
                            let wire = match field.ty {
                                Type::Scalar(s) => s.wire_type(),
                                Type::Message(_) => 2,
                            };
                            key(&mut entry, 2, wire);
                            if wire == 2 {
                                varint(&mut entry, value.len() as u64);
                            }
                            entry.extend_from_slice(&value);
                            bytes_field(&mut out, field.number, &entry);
                        } else {
                            match field.ty {
                                Type::Scalar(s) if s.wire_type() != 2 => {
                                    key(&mut out, field.number, s.wire_type())
                                }
                                _ => {
                                    key(&mut out, field.number, 2);
                                    varint(&mut out, value.len() as u64);
                                }
                            }
                            out.extend_from_slice(&value);
                        }
                    }
                }
                stack.pop();
            }
        }
        out
    }

    /// A scalar's encoded value (without key, and without the length prefix of strings and bytes).
    fn scalar(&mut self, s: Scalar, out: &mut Vec<u8>) {
        let n = if self.zeros { 0 } else { self.next() };
        match s {
            Scalar::String if !self.zeros => out.extend_from_slice(format!("s{n}").as_bytes()),
            Scalar::Bytes if !self.zeros => out.extend_from_slice(&[0xff, 0x00, n as u8]),
            Scalar::String | Scalar::Bytes => {}
            Scalar::Bool => varint(out, u64::from(!self.zeros)),
            Scalar::Int32 | Scalar::Uint32 | Scalar::Uint64 => varint(out, n),
            Scalar::Int64 => varint(out, n * 1000),
            Scalar::Double => out.extend_from_slice(&(n as f64 + 0.5).to_le_bytes()),
            Scalar::Float => out.extend_from_slice(&(n as f32 + 0.5).to_le_bytes()),
        }
    }
}

/// JSON with every `null` object member removed: how k8s-openapi writes an absent `Option`.
fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect::<Map<_, _>>(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(strip_nulls).collect()),
        other => other.clone(),
    }
}

/// Paths where `got` and `want` differ, as `path: got != want` (short values).
/// With `lenient`, a zero value only in `got` is accepted: k8s-openapi makes some fields required
/// (`LocalObjectReference.name`) that Go omits when empty, and then writes their zero; and it
/// writes `apiVersion`/`kind` of nested resources (StatefulSet `volumeClaimTemplates`), which
/// protobuf does not carry and Go omits when empty.
fn diff(got: &Value, want: &Value, path: &str, lenient: bool, out: &mut Vec<String>) {
    match (got, want) {
        (Value::Object(g), Value::Object(w)) => {
            for k in g.keys().chain(w.keys().filter(|k| !g.contains_key(*k))) {
                let (gv, wv) = (
                    g.get(k).unwrap_or(&Value::Null),
                    w.get(k).unwrap_or(&Value::Null),
                );
                let zero = matches!(gv, Value::String(s) if s.is_empty())
                    || *gv == Value::Bool(false)
                    || gv.as_f64() == Some(0.0);
                let nested_type_meta = !path.is_empty() && (k == "apiVersion" || k == "kind");
                if lenient && !w.contains_key(k) && (zero || nested_type_meta) {
                    continue;
                }
                if !g.contains_key(k) || !w.contains_key(k) {
                    out.push(format!(
                        "{path}.{k}: {} != {}",
                        short(g.get(k)),
                        short(w.get(k))
                    ));
                } else {
                    diff(gv, wv, &format!("{path}.{k}"), lenient, out);
                }
            }
        }
        (Value::Array(g), Value::Array(w)) if g.len() == w.len() => {
            for (i, (gv, wv)) in g.iter().zip(w).enumerate() {
                diff(gv, wv, &format!("{path}[{i}]"), lenient, out);
            }
        }
        _ if got == want => {}
        _ => out.push(format!(
            "{path}: {} != {}",
            short(Some(got)),
            short(Some(want))
        )),
    }
}

fn short(v: Option<&Value>) -> String {
    let text = v.map_or_else(|| "(absent)".to_owned(), Value::to_string);
    text.chars().take(80).collect()
}

fn count_values(v: &Value) -> usize {
    1 + match v {
        Value::Object(map) => map.values().map(count_values).sum(),
        Value::Array(items) => items.iter().map(count_values).sum(),
        _ => 0,
    }
}

#[test]
fn every_kind_every_field_matches_k8s_openapi_and_k8s_pb() {
    let entries = entries();
    let mut kinds: Vec<_> = SCHEMA.kinds().collect();
    kinds.sort();
    let mut checked = 0;
    for (gv, kind, id) in kinds {
        let name = SCHEMA.messages[id].name;
        let (_, openapi_rt, pb_rt) = entries
            .iter()
            .find(|(n, _, _)| n == name)
            .unwrap_or_else(|| panic!("{gv} {kind} ({name}) has no entry in the test table"));
        for zeros in [false, true] {
            let bytes = Sampler { zeros, counter: 0 }.message(id, &mut Vec::new());
            let json = to_json(gv, kind, &bytes)
                .unwrap_or_else(|e| panic!("{gv} {kind} zeros={zeros}: {e}"));
            let again = to_json(gv, kind, &pb_rt(&bytes)).expect("k8s-pb bytes convert");
            let mut diffs = Vec::new();
            diff(&again, &json, "", false, &mut diffs);
            assert!(
                diffs.is_empty(),
                "{gv} {kind} zeros={zeros}: k8s-pb re-encoding changes the JSON: {diffs:#?}"
            );
            if let Some(rt) = openapi_rt {
                let mut diffs = Vec::new();
                diff(&rt(&json), &strip_nulls(&json), "", true, &mut diffs);
                assert!(
                    diffs.is_empty(),
                    "{gv} {kind} zeros={zeros}: k8s-openapi round trip differs: {diffs:#?}"
                );
            }
        }
        checked += 1;
    }
    assert!(checked >= 120, "{checked} kinds");
}

#[test]
fn meta_kinds_convert_under_any_served_version() {
    for gv in [
        "v1",
        "apps/v1",
        "meta.k8s.io/v1",
        "rbac.authorization.k8s.io/v1",
    ] {
        let id = SCHEMA.kind(gv, "DeleteOptions").expect("DeleteOptions");
        let bytes = Sampler {
            zeros: true,
            counter: 0,
        }
        .message(id, &mut Vec::new());
        let json = to_json(gv, "DeleteOptions", &bytes).expect("convert");
        // Every DeleteOptions field is a pointer or a slice: explicit zeros stay, and the
        // zero sampler sets each one.
        assert_eq!(json["gracePeriodSeconds"], Value::from(0), "{gv}");
        assert_eq!(json["orphanDependents"], Value::from(false), "{gv}");
        assert_eq!(json["propagationPolicy"], Value::from(""), "{gv}");
        assert_eq!(json["apiVersion"], Value::from(gv));
    }
}

#[test]
fn defaults_expansion_stays_within_the_limits() {
    // The worst case of output per input byte is an empty element of a repeated message field
    // (2 bytes) that expands into its zero value. The default limit must allow every such
    // legitimate expansion for an object of typical size.
    let mut worst = (0.0f64, "");
    for (gv, kind, id) in SCHEMA.kinds() {
        let json = to_json(gv, kind, &[]).expect("empty object converts");
        let per_object = count_values(&json) as f64;
        if per_object > worst.0 {
            worst = (per_object, SCHEMA.messages[id].name);
        }
        assert!(count_values(&json) < Limits::for_input(0).max_values);
    }
    assert!(
        worst.0 < 64.0,
        "zero value of {} has {} JSON values",
        worst.1,
        worst.0
    );
}

#[test]
fn hostile_bodies_never_panic() {
    // Every truncation and every single-byte corruption of a fully populated Pod.
    let id = SCHEMA.kind("v1", "Pod").expect("Pod");
    let raw = Sampler {
        zeros: false,
        counter: 0,
    }
    .message(id, &mut Vec::new());
    assert!(to_json("v1", "Pod", &raw).is_ok());
    for cut in 0..raw.len() {
        let _ = to_json("v1", "Pod", &raw[..cut]);
    }
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for i in 0..raw.len().min(4000) {
        let mut bad = raw.clone();
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bad[i] ^= (state as u8) | 1;
        let _ = to_json("v1", "Pod", &bad);
        let mut body = MAGIC.to_vec();
        body.extend_from_slice(&bad);
        let _ = decode_body(&body);
    }
    // Tight limits fail cleanly instead.
    let tight = Limits {
        max_depth: 3,
        max_values: 1_000_000,
    };
    assert!(matches!(
        to_json_with("v1", "Pod", &raw, &tight),
        Err(super::PbError::TooDeep { .. })
    ));
    let small = Limits {
        max_depth: 48,
        max_values: 50,
    };
    assert!(matches!(
        to_json_with("v1", "Pod", &raw, &small),
        Err(super::PbError::TooLarge { .. })
    ));
}
