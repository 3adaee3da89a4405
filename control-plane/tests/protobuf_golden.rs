//! Golden round trips without Go: objects built with the `k8s-pb` prost structs (populated with
//! every special type), encoded as a client would, decoded by `apiserver::protobuf`, compared
//! with the JSON Go writes for them — and that JSON read into the `k8s-openapi` type and written
//! back, to show it is what the apiserver would have received as JSON.

use std::collections::BTreeMap;

use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::coordination::v1 as coordination;
use k8s_pb::api::core::v1 as core;
use k8s_pb::api::events::v1 as events;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{RawExtension, TypeMeta, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use kwk_control_plane::apiserver::protobuf::{MAGIC, PbError, decode_body, to_json};
use prost::Message;
use serde_json::{Value, json};

/// A request body as kubectl sends it: prefix + `runtime.Unknown` around the message.
fn body(api_version: &str, kind: &str, object: &impl Message) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(object.encode_to_vec()),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    [&MAGIC[..], &unknown.encode_to_vec()].concat()
}

fn s(v: &str) -> Option<String> {
    Some(v.to_owned())
}

fn time(seconds: i64, nanos: i32) -> Option<meta::Time> {
    Some(meta::Time {
        seconds: Some(seconds),
        nanos: Some(nanos),
    })
}

fn micro(seconds: i64, nanos: i32) -> Option<meta::MicroTime> {
    Some(meta::MicroTime {
        seconds: Some(seconds),
        nanos: Some(nanos),
    })
}

fn int(v: i32) -> Option<IntOrString> {
    Some(IntOrString {
        r#type: Some(0),
        int_val: Some(v),
        str_val: None,
    })
}

fn string(v: &str) -> Option<IntOrString> {
    Some(IntOrString {
        r#type: Some(1),
        int_val: None,
        str_val: s(v),
    })
}

fn qty(v: &str) -> Quantity {
    Quantity { string: s(v) }
}

fn map<V: Clone>(pairs: &[(&str, V)]) -> BTreeMap<String, V> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// JSON without `null` members: how k8s-openapi writes an absent `Option`.
fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_nulls).collect()),
        other => other.clone(),
    }
}

/// The JSON deserializes into the k8s-openapi type and serializes back to itself (nulls aside).
fn openapi_round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(json: &Value) {
    let typed: T = serde_json::from_value(json.clone()).expect("k8s-openapi reads the JSON");
    // (Nulls stripped on both sides: a RawExtension's content comes back verbatim.)
    assert_eq!(
        strip_nulls(&serde_json::to_value(typed).expect("serialize")),
        strip_nulls(json)
    );
}

fn decode(body: &[u8]) -> Value {
    decode_body(body).expect("decodes")
}

#[test]
fn deployment_with_every_special_type() {
    let meta = meta::ObjectMeta {
        name: s("web"),
        namespace: s("prod"),
        uid: s(""), // explicit "" of an omitempty value field: dropped, as Go does
        generation: Some(0), // same for 0
        creation_timestamp: time(1_700_000_000, 999_999_999), // Time drops the nanoseconds
        deletion_grace_period_seconds: Some(0), // a pointer: an explicit 0 stays
        labels: map(&[("app", "web".to_owned())]),
        owner_references: vec![meta::OwnerReference {
            api_version: s("apps/v1"),
            kind: s("ReplicaSet"),
            name: s("web-1"),
            uid: s("u-1"),
            controller: Some(true),
            block_owner_deletion: Some(false),
        }],
        managed_fields: vec![meta::ManagedFieldsEntry {
            manager: s("kubectl"),
            operation: s("Update"),
            api_version: s("apps/v1"),
            time: time(1_700_000_100, 0),
            fields_type: s("FieldsV1"),
            fields_v1: Some(meta::FieldsV1 {
                raw: Some(br#"{"f:spec":{"f:replicas":{}}}"#.to_vec()),
            }),
            subresource: None,
        }],
        ..Default::default()
    };
    let container = core::Container {
        name: s("nginx"),
        image: s("nginx:1.27"),
        args: vec!["-g".into(), "daemon off;".into()],
        ports: vec![core::ContainerPort {
            name: s("http"),
            container_port: Some(8080),
            protocol: s("TCP"),
            ..Default::default()
        }],
        env: vec![core::EnvVar {
            name: s("POD"),
            value_from: Some(core::EnvVarSource {
                field_ref: Some(core::ObjectFieldSelector {
                    field_path: s("metadata.name"),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }],
        resources: Some(core::ResourceRequirements {
            limits: map(&[("cpu", qty("500m")), ("memory", qty("128Mi"))]),
            requests: map(&[("cpu", qty("100m"))]),
            claims: vec![],
        }),
        liveness_probe: Some(core::Probe {
            handler: Some(core::ProbeHandler {
                http_get: Some(core::HttpGetAction {
                    path: s("/healthz"),
                    port: string("http"),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            period_seconds: Some(10),
            ..Default::default()
        }),
        readiness_probe: Some(core::Probe {
            handler: Some(core::ProbeHandler {
                tcp_socket: Some(core::TcpSocketAction {
                    port: int(8080),
                    host: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let volumes = vec![
        core::Volume {
            name: s("cfg"),
            volume_source: Some(core::VolumeSource {
                config_map: Some(core::ConfigMapVolumeSource {
                    local_object_reference: Some(core::LocalObjectReference {
                        name: s("web-config"),
                    }),
                    default_mode: Some(0o644),
                    optional: Some(false),
                    items: vec![],
                }),
                ..Default::default()
            }),
        },
        core::Volume {
            name: s("scratch"),
            volume_source: Some(core::VolumeSource {
                empty_dir: Some(core::EmptyDirVolumeSource {
                    medium: s(""),
                    size_limit: Some(qty("1Gi")),
                }),
                ..Default::default()
            }),
        },
    ];
    let deployment = apps::Deployment {
        metadata: Some(meta),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(0),
            selector: Some(meta::LabelSelector {
                match_labels: map(&[("app", "web".to_owned())]),
                match_expressions: vec![meta::LabelSelectorRequirement {
                    key: s("tier"),
                    operator: s("In"),
                    values: vec!["a".into(), "b".into()],
                }],
            }),
            template: Some(core::PodTemplateSpec {
                metadata: Some(meta::ObjectMeta {
                    labels: map(&[("app", "web".to_owned())]),
                    ..Default::default()
                }),
                spec: Some(core::PodSpec {
                    containers: vec![container],
                    volumes,
                    termination_grace_period_seconds: Some(0),
                    automount_service_account_token: Some(false),
                    ..Default::default()
                }),
            }),
            strategy: Some(apps::DeploymentStrategy {
                r#type: s("RollingUpdate"),
                rolling_update: Some(apps::RollingUpdateDeployment {
                    max_unavailable: int(0),
                    max_surge: string("25%"),
                }),
            }),
            ..Default::default()
        }),
        status: None,
    };
    let json = decode(&body("apps/v1", "Deployment", &deployment));
    let want = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "prod",
            "creationTimestamp": "2023-11-14T22:13:20Z",
            "deletionGracePeriodSeconds": 0,
            "labels": {"app": "web"},
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "u-1",
                "controller": true, "blockOwnerDeletion": false
            }],
            "managedFields": [{
                "manager": "kubectl", "operation": "Update", "apiVersion": "apps/v1",
                "time": "2023-11-14T22:15:00Z", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {"f:replicas": {}}}
            }]
        },
        "spec": {
            "replicas": 0,
            "selector": {
                "matchLabels": {"app": "web"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]
            },
            "template": {
                "metadata": {"creationTimestamp": null, "labels": {"app": "web"}},
                "spec": {
                    "containers": [{
                        "name": "nginx",
                        "image": "nginx:1.27",
                        "args": ["-g", "daemon off;"],
                        "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                        "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                        "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "100m"}},
                        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10},
                        "readinessProbe": {"tcpSocket": {"port": 8080}}
                    }],
                    "volumes": [
                        {"name": "cfg", "configMap": {"name": "web-config", "defaultMode": 420, "optional": false}},
                        {"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}}
                    ],
                    "terminationGracePeriodSeconds": 0,
                    "automountServiceAccountToken": false
                }
            },
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}}
        },
        "status": {}
    });
    assert_eq!(
        json,
        want,
        "{}",
        serde_json::to_string_pretty(&json).unwrap_or_default()
    );
    openapi_round_trip::<k8s_openapi::api::apps::v1::Deployment>(&json);
}

#[test]
fn secret_bytes_are_base64_and_explicit_false_is_kept() {
    let secret = core::Secret {
        metadata: Some(meta::ObjectMeta {
            name: s("tls"),
            ..Default::default()
        }),
        data: map(&[("bin", vec![0u8, 0xff, 0x10, b'\n']), ("empty", vec![])]),
        string_data: map(&[("plain", "text".to_owned())]),
        r#type: s("kubernetes.io/tls"),
        immutable: Some(false),
    };
    let json = decode(&body("v1", "Secret", &secret));
    assert_eq!(
        json,
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "tls", "creationTimestamp": null},
            "data": {"bin": "AP8QCg==", "empty": ""},
            "stringData": {"plain": "text"},
            "type": "kubernetes.io/tls",
            "immutable": false
        })
    );
    openapi_round_trip::<k8s_openapi::api::core::v1::Secret>(&json);
}

#[test]
fn micro_time_keeps_microseconds() {
    let lease = coordination::Lease {
        metadata: Some(meta::ObjectMeta {
            name: s("node-1"),
            namespace: s("kube-node-lease"),
            ..Default::default()
        }),
        spec: Some(coordination::LeaseSpec {
            holder_identity: s("node-1"),
            lease_duration_seconds: Some(40),
            acquire_time: micro(1_700_000_000, 123_456_789),
            renew_time: micro(1_700_000_040, 5_000),
            lease_transitions: Some(0),
            ..Default::default()
        }),
    };
    let json = decode(&body("coordination.k8s.io/v1", "Lease", &lease));
    assert_eq!(
        json["spec"],
        json!({
            "holderIdentity": "node-1",
            "leaseDurationSeconds": 40,
            "acquireTime": "2023-11-14T22:13:20.123456Z",
            "renewTime": "2023-11-14T22:14:00.000005Z",
            "leaseTransitions": 0
        })
    );
    openapi_round_trip::<k8s_openapi::api::coordination::v1::Lease>(&json);

    let event = events::Event {
        metadata: Some(meta::ObjectMeta {
            name: s("e1"),
            ..Default::default()
        }),
        event_time: micro(1_700_000_000, 1_000),
        series: Some(events::EventSeries {
            count: Some(2),
            last_observed_time: micro(1_700_000_001, 0),
        }),
        reporting_controller: s("kwk"),
        reporting_instance: s("kwk-1"),
        action: s("Started"),
        reason: s("Started"),
        regarding: Some(core::ObjectReference {
            kind: s("Pod"),
            name: s("p"),
            ..Default::default()
        }),
        r#type: s("Normal"),
        deprecated_first_timestamp: time(1_700_000_000, 0),
        ..Default::default()
    };
    let json = decode(&body("events.k8s.io/v1", "Event", &event));
    assert_eq!(json["eventTime"], json!("2023-11-14T22:13:20.000001Z"));
    assert_eq!(
        json["series"],
        json!({"count": 2, "lastObservedTime": "2023-11-14T22:13:21.000000Z"})
    );
    assert_eq!(
        json["deprecatedFirstTimestamp"],
        json!("2023-11-14T22:13:20Z")
    );
    assert_eq!(
        json["deprecatedLastTimestamp"],
        Value::Null,
        "a zero value Time is null"
    );
    openapi_round_trip::<k8s_openapi::api::events::v1::Event>(&json);
}

#[test]
fn raw_extensions_hold_json_or_a_nested_protobuf_object() {
    let configmap = core::ConfigMap {
        metadata: Some(meta::ObjectMeta {
            name: s("inner"),
            ..Default::default()
        }),
        data: map(&[("k", "v".to_owned())]),
        ..Default::default()
    };
    for (raw, want) in [
        (
            br#"{"spec":{"replicas":2}}"#.to_vec(),
            json!({"spec": {"replicas": 2}}),
        ),
        (
            body("v1", "ConfigMap", &configmap),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "inner", "creationTimestamp": null}, "data": {"k": "v"}}),
        ),
    ] {
        let revision = apps::ControllerRevision {
            metadata: Some(meta::ObjectMeta {
                name: s("web-1"),
                ..Default::default()
            }),
            data: Some(RawExtension { raw: Some(raw) }),
            revision: Some(1),
        };
        let json = decode(&body("apps/v1", "ControllerRevision", &revision));
        assert_eq!(json["data"], want);
        assert_eq!(json["revision"], json!(1));
        openapi_round_trip::<k8s_openapi::api::apps::v1::ControllerRevision>(&json);
    }
    let bad = apps::ControllerRevision {
        data: Some(RawExtension {
            raw: Some(b"{not json".to_vec()),
        }),
        ..Default::default()
    };
    let err = decode_body(&body("apps/v1", "ControllerRevision", &bad)).expect_err("invalid JSON");
    assert!(matches!(err, PbError::EmbeddedJson { .. }), "{err}");
    assert_eq!(err.path(), Some("data"));
}

#[test]
fn delete_options_keep_explicit_zeros() {
    let options = meta::DeleteOptions {
        grace_period_seconds: Some(0),
        preconditions: Some(meta::Preconditions {
            uid: s("u-1"),
            resource_version: None,
        }),
        orphan_dependents: Some(false),
        propagation_policy: s("Foreground"),
        dry_run: vec!["All".into()],
        ignore_store_read_error_with_cluster_breaking_potential: None,
    };
    for api_version in ["v1", "meta.k8s.io/v1", "apps/v1"] {
        let json = decode(&body(api_version, "DeleteOptions", &options));
        assert_eq!(
            json,
            json!({
                "apiVersion": api_version, "kind": "DeleteOptions",
                "gracePeriodSeconds": 0,
                "preconditions": {"uid": "u-1"},
                "orphanDependents": false,
                "propagationPolicy": "Foreground",
                "dryRun": ["All"]
            })
        );
        openapi_round_trip::<k8s_openapi::apimachinery::pkg::apis::meta::v1::DeleteOptions>(&json);
    }
}

#[test]
fn service_ports_and_optional_scalars() {
    let service = core::Service {
        metadata: Some(meta::ObjectMeta {
            name: s("web"),
            ..Default::default()
        }),
        spec: Some(core::ServiceSpec {
            ports: vec![
                core::ServicePort {
                    name: s("http"),
                    port: Some(80),
                    target_port: string("http"),
                    protocol: s("TCP"),
                    ..Default::default()
                },
                // port 0 is written (no omitempty); nodePort 0 is not (omitempty).
                core::ServicePort {
                    port: Some(0),
                    node_port: Some(0),
                    target_port: int(0),
                    ..Default::default()
                },
            ],
            cluster_ip: s("None"),
            r#type: s("ClusterIP"),
            ip_families: vec!["IPv4".into()],
            ip_family_policy: s("SingleStack"),
            session_affinity_config: Some(core::SessionAffinityConfig {
                client_ip: Some(core::ClientIpConfig {
                    timeout_seconds: Some(10800),
                }),
            }),
            publish_not_ready_addresses: Some(false),
            ..Default::default()
        }),
        status: Some(core::ServiceStatus::default()),
    };
    let json = decode(&body("v1", "Service", &service));
    assert_eq!(
        json["spec"],
        json!({
            "ports": [
                {"name": "http", "protocol": "TCP", "port": 80, "targetPort": "http"},
                {"port": 0, "targetPort": 0}
            ],
            "clusterIP": "None",
            "type": "ClusterIP",
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10800}}
        }),
        "publishNotReadyAddresses is a value bool with omitempty: false is dropped"
    );
    assert_eq!(json["status"], json!({"loadBalancer": {}}));
    openapi_round_trip::<k8s_openapi::api::core::v1::Service>(&json);
}

#[test]
fn errors_name_the_problem_and_where() {
    assert!(matches!(
        decode_body(b"{\"kind\":\"Pod\"}"),
        Err(PbError::NotProtobuf)
    ));
    assert!(matches!(decode_body(b"k8s"), Err(PbError::NotProtobuf)));
    let cm = core::ConfigMap::default();
    let err = decode_body(&body("v1", "Frobnicator", &cm)).expect_err("unknown kind");
    assert!(err.is_unsupported(), "{err}");
    assert!(err.to_string().contains("Frobnicator"), "{err}");
    let err = decode_body(&body("example.com/v1", "DeleteOptions", &cm))
        .expect_err("unknown group version");
    assert!(matches!(err, PbError::UnknownKind { .. }));

    // A string where an int32 belongs, deep inside: the path says where.
    let deployment = apps::Deployment {
        spec: Some(apps::DeploymentSpec {
            template: Some(core::PodTemplateSpec {
                spec: Some(core::PodSpec {
                    containers: vec![core::Container::default(), core::Container::default()],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut raw = deployment.encode_to_vec();
    // Append to the second container a `ports` entry whose containerPort (3) is length-delimited.
    let port = [0x1a, 0x01, b'x'];
    let container = [&[0x32u8, port.len() as u8][..], &port].concat(); // Container.ports = 6
    let pod_spec = [&[0x12u8, container.len() as u8][..], &container].concat(); // PodSpec.containers = 2
    let template = [&[0x12u8, pod_spec.len() as u8][..], &pod_spec].concat(); // PodTemplateSpec.spec = 2
    let spec = [&[0x1au8, template.len() as u8][..], &template].concat(); // DeploymentSpec.template = 3
    raw.extend_from_slice(&[0x12, spec.len() as u8]); // Deployment.spec = 2 (merged with the first)
    raw.extend_from_slice(&spec);
    let err = to_json("apps/v1", "Deployment", &raw).expect_err("wrong wire type");
    assert_eq!(
        err.path(),
        Some("spec.template.spec.containers[2].ports[0].containerPort"),
        "{err}"
    );
    assert!(!err.is_unsupported());
}

#[test]
fn hostile_envelopes_are_errors() {
    // Truncated at every length.
    let full = body("v1", "Namespace", &core::Namespace::default());
    for cut in 0..full.len() {
        let _ = decode_body(&full[..cut]);
    }
    // A length prefix of 2^63 must not allocate.
    let mut huge = MAGIC.to_vec();
    huge.extend_from_slice(&[0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
    assert!(matches!(decode_body(&huge), Err(PbError::Malformed { .. })));
    // Wrong magic.
    assert!(matches!(
        decode_body(b"k8s\x01\x0a\x00"),
        Err(PbError::NotProtobuf)
    ));
    // Content encodings and types other than plain protobuf.
    let gzip = Unknown {
        content_encoding: s("gzip"),
        ..Default::default()
    };
    assert!(matches!(
        decode_body(&[&MAGIC[..], &gzip.encode_to_vec()].concat()),
        Err(PbError::ContentEncoding(_))
    ));
    let yaml = Unknown {
        content_type: s("application/yaml"),
        ..Default::default()
    };
    assert!(matches!(
        decode_body(&[&MAGIC[..], &yaml.encode_to_vec()].concat()),
        Err(PbError::ContentType(_))
    ));

    // Envelopes nested in RawExtensions, 200 deep: refused at the depth limit, no stack overflow.
    let mut inner = body("v1", "ConfigMap", &core::ConfigMap::default());
    for _ in 0..200 {
        let revision = apps::ControllerRevision {
            data: Some(RawExtension { raw: Some(inner) }),
            ..Default::default()
        };
        inner = body("apps/v1", "ControllerRevision", &revision);
    }
    assert!(matches!(decode_body(&inner), Err(PbError::TooDeep { .. })));

    // Many empty repeated messages: each expands into a zero value; the output is capped.
    let mut many = Vec::new();
    for _ in 0..200_000 {
        many.extend_from_slice(&[0x12, 0x00]); // PodTemplateList.items: empty PodTemplate
    }
    let err = to_json("v1", "PodTemplateList", &many).expect_err("too large");
    assert!(matches!(err, PbError::TooLarge { .. }), "{err}");
}
