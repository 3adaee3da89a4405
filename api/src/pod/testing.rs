//! Pod builders for tests of code that works on pod resources (QoS, cgroups): containers
//! and pods with requests and limits written as `"cpu=100m,memory=64Mi"`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// `(name, requests, limits)` with lists like `"cpu=100m,memory=64Mi"` ("" for none).
pub type Spec<'a> = (&'a str, &'a str, &'a str);

fn list(text: &str) -> Option<BTreeMap<String, ApiQuantity>> {
    if text.is_empty() {
        return None;
    }
    Some(
        text.split(',')
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k.to_string(), ApiQuantity(v.to_string()))
            })
            .collect(),
    )
}

pub fn container(name: &str, requests: &str, limits: &str) -> Container {
    Container {
        name: name.to_string(),
        resources: Some(ResourceRequirements {
            requests: list(requests),
            limits: list(limits),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn sidecar(name: &str, requests: &str, limits: &str) -> Container {
    Container {
        restart_policy: Some("Always".to_string()),
        ..container(name, requests, limits)
    }
}

pub fn pod_with(uid: &str, apps: Vec<Container>, inits: Vec<Container>, overhead: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("pod-{uid}")),
            uid: Some(uid.to_string()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: apps,
            init_containers: if inits.is_empty() { None } else { Some(inits) },
            overhead: list(overhead),
            ..Default::default()
        }),
        status: None,
    }
}

/// A pod of app containers only.
pub fn pod(uid: &str, apps: &[Spec<'_>]) -> Pod {
    pod_with(
        uid,
        apps.iter().map(|(n, r, l)| container(n, r, l)).collect(),
        Vec::new(),
        "",
    )
}
