//! Decode time of protobuf request bodies (envelope + conversion to JSON):
//! `cargo run --release -p kwk-control-plane --example pb-bench`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use kwk_control_plane::apiserver::protobuf::{MAGIC, decode_body};
use prost::Message;

fn s(v: &str) -> Option<String> {
    Some(v.to_owned())
}

/// A production-sized Deployment: 3 containers with ports, env, resources, probes, mounts.
fn big_deployment() -> Vec<u8> {
    let labels: BTreeMap<String, String> =
        [("app", "shop"), ("tier", "backend"), ("team", "payments")]
            .map(|(k, v)| (k.into(), v.into()))
            .into();
    let qty = |v: &str| Quantity { string: s(v) };
    let container = |i: usize| core::Container {
        name: s(&format!("c{i}")),
        image: s("registry.example/shop/backend:1.2.3"),
        args: vec!["--port=8080".into(), "--log-level=info".into()],
        ports: vec![core::ContainerPort {
            name: s("http"),
            container_port: Some(8080),
            protocol: s("TCP"),
            ..Default::default()
        }],
        env: (0..10)
            .map(|j| core::EnvVar {
                name: s(&format!("VAR_{j}")),
                value: s("some-value"),
                ..Default::default()
            })
            .collect(),
        resources: Some(core::ResourceRequirements {
            limits: [("cpu".into(), qty("1")), ("memory".into(), qty("512Mi"))].into(),
            requests: [("cpu".into(), qty("250m")), ("memory".into(), qty("256Mi"))].into(),
            claims: vec![],
        }),
        volume_mounts: vec![core::VolumeMount {
            name: s("cfg"),
            mount_path: s("/etc/shop"),
            read_only: Some(true),
            ..Default::default()
        }],
        liveness_probe: Some(core::Probe {
            handler: Some(core::ProbeHandler {
                http_get: Some(core::HttpGetAction {
                    path: s("/healthz"),
                    port: Some(IntOrString {
                        r#type: Some(1),
                        int_val: None,
                        str_val: s("http"),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            period_seconds: Some(10),
            ..Default::default()
        }),
        image_pull_policy: s("IfNotPresent"),
        ..Default::default()
    };
    let deployment = apps::Deployment {
        metadata: Some(meta::ObjectMeta {
            name: s("shop"),
            namespace: s("prod"),
            labels: labels.clone(),
            annotations: [("deployment.kubernetes.io/revision".into(), "7".into())].into(),
            creation_timestamp: Some(meta::Time {
                seconds: Some(1_700_000_000),
                nanos: Some(0),
            }),
            ..Default::default()
        }),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(3),
            selector: Some(meta::LabelSelector {
                match_labels: labels.clone(),
                match_expressions: vec![],
            }),
            template: Some(core::PodTemplateSpec {
                metadata: Some(meta::ObjectMeta {
                    labels,
                    ..Default::default()
                }),
                spec: Some(core::PodSpec {
                    containers: (0..3).map(container).collect(),
                    volumes: vec![core::Volume {
                        name: s("cfg"),
                        volume_source: Some(core::VolumeSource {
                            config_map: Some(core::ConfigMapVolumeSource {
                                local_object_reference: Some(core::LocalObjectReference {
                                    name: s("shop-config"),
                                }),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                    }],
                    service_account_name: s("shop"),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
        status: None,
    };
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: s("apps/v1"),
            kind: s("Deployment"),
        }),
        raw: Some(deployment.encode_to_vec()),
        content_encoding: s(""),
        content_type: s(""),
    };
    [&MAGIC[..], &unknown.encode_to_vec()].concat()
}

/// Times `f` and prints percentiles; the decoded JSON is also parsed from text for comparison.
fn bench(name: &str, body: &[u8]) {
    let json = serde_json::to_vec(&decode_body(body).expect("decodes")).expect("json");
    report(name, body.len(), || {
        drop(decode_body(body).expect("decodes"))
    });
    report(
        "  same object as JSON text (serde_json)",
        json.len(),
        || drop(serde_json::from_slice::<serde_json::Value>(&json).expect("parses")),
    );
}

fn report(name: &str, len: usize, mut f: impl FnMut()) {
    let iterations = 20_000;
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let start = Instant::now();
        f();
        samples.push(start.elapsed());
    }
    samples.sort();
    let pct = |p: usize| samples[samples.len() * p / 100];
    let mean = samples.iter().sum::<Duration>() / iterations as u32;
    println!(
        "{name:<40} {len:>6} bytes   p50 {:>7.1?}  p99 {:>7.1?}  mean {:>7.1?}",
        pct(50),
        pct(99),
        mean
    );
}

fn main() {
    let kubectl_deployment = include_bytes!("../tests/fixtures/pb/deployment.bin");
    let start = Instant::now();
    decode_body(kubectl_deployment).expect("decodes");
    println!(
        "first decode (parses the embedded schema once): {:?}",
        start.elapsed()
    );
    bench("kubectl create deployment", kubectl_deployment);
    bench(
        "kubectl create configmap",
        include_bytes!("../tests/fixtures/pb/configmap.bin"),
    );
    bench(
        "auth can-i (SelfSubjectAccessReview)",
        include_bytes!("../tests/fixtures/pb/ssar.bin"),
    );
    bench(
        "helm release Secret",
        include_bytes!("../tests/fixtures/pb/helm-release-deployed.bin"),
    );
    bench("Deployment, 3 containers", &big_deployment());
}
