//! The endpointslice controller wired to the runtime: one key per Service, triggered by the
//! Service, by Pods (the services of the namespace whose selector matches the pod now, and
//! those whose slices still list it, which covers a pod whose labels stopped matching), by
//! every Node change (every service: zones, and pods on nodes not yet seen) and by
//! EndpointSlices (the service their `kubernetes.io/service-name` label names). New slices
//! are created by `generateName`, so a service is held by [`Expectations`] until the slice
//! cache shows its last plan's creations and deletions (a stale cache would create a slice
//! twice).

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;

use super::LABEL_SERVICE_NAME;
use crate::job::controller::Expectations;
use crate::runtime::{Controller, ObjectKey, Plan, Watches};
use crate::statefulset::controller::in_namespace;

/// Whether `service` has a selector and `pod` (same namespace) carries every label of it.
fn selects(service: &Service, pod: &Pod) -> bool {
    if service.metadata.namespace != pod.metadata.namespace {
        return false;
    }
    let Some(selector) = service.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return false;
    };
    let labels = pod.metadata.labels.as_ref();
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// The service a slice belongs to (its `kubernetes.io/service-name` label).
fn service_of(slice: &EndpointSlice) -> Option<ObjectKey> {
    let name = slice.metadata.labels.as_ref()?.get(LABEL_SERVICE_NAME)?;
    Some(ObjectKey {
        namespace: slice.metadata.namespace.clone(),
        name: name.clone(),
    })
}

/// Whether `slice` lists an endpoint whose target is `pod`.
fn lists_pod(slice: &EndpointSlice, pod: &Pod) -> bool {
    slice.metadata.namespace == pod.metadata.namespace
        && slice.endpoints.iter().any(|e| {
            e.target_ref
                .as_ref()
                .is_some_and(|r| r.kind.as_deref() == Some("Pod") && r.name == pod.metadata.name)
        })
}

/// The services to reconcile when `pod` changes.
fn services_of_pod(
    services: &Store<Service>,
    slices: &Store<EndpointSlice>,
    pod: &Pod,
) -> Vec<ObjectKey> {
    let mut keys: Vec<ObjectKey> = services
        .state()
        .iter()
        .filter(|s| selects(s, pod))
        .map(|s| ObjectKey::of(s.as_ref()))
        .collect();
    keys.extend(
        slices
            .state()
            .iter()
            .filter(|s| lists_pod(s, pod))
            .filter_map(|s| service_of(s)),
    );
    keys.sort();
    keys.dedup();
    keys
}

/// The endpointslice controller: one key per Service.
pub fn controller(client: &kube::Client) -> Controller {
    let mut watches = Watches::new(client.clone());
    let services = watches.watch(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
        |service| vec![ObjectKey::of(service)],
    );
    let slices = watches.watch(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default(),
        |slice| service_of(slice).into_iter().collect(),
    );
    let (for_pods, slices_for_pods) = (services.clone(), slices.clone());
    let pods = watches.watch(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default(),
        move |pod| services_of_pod(&for_pods, &slices_for_pods, pod),
    );
    let for_nodes = services.clone();
    let nodes = watches.watch(
        Api::<Node>::all(client.clone()),
        watcher::Config::default(),
        move |_| {
            for_nodes
                .state()
                .iter()
                .map(|s| ObjectKey::of(s.as_ref()))
                .collect()
        },
    );
    let expectations = Expectations::new("EndpointSlice");
    Controller::new("endpointslice", watches, move |key| {
        let Some(service) = services.get(&key.store_ref()) else {
            // Its slices are owned by it: the garbage collector removes them.
            expectations.forget(key);
            return Plan::default();
        };
        let namespace = service.metadata.namespace.as_ref();
        let existing: Vec<EndpointSlice> = in_namespace(&slices, namespace)
            .into_iter()
            .filter(|s| service_of(s).as_ref() == Some(key))
            .collect();
        let metas = || existing.iter().map(|s| &s.metadata);
        if let Some(wait) = expectations.hold(key, metas()) {
            return Plan {
                actions: Vec::new(),
                requeue_after: Some(wait),
            };
        }
        let all_nodes: Vec<Node> = nodes.state().iter().map(|n| (**n).clone()).collect();
        let actions = super::plan(
            &service,
            &in_namespace(&pods, namespace),
            &all_nodes,
            &existing,
        );
        expectations.expect(key, metas(), &actions);
        actions.into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ObjectReference, ServiceSpec};
    use k8s_openapi::api::discovery::v1::Endpoint;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    fn labels(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn pod(ns: &str, name: &str, pod_labels: &[(&str, &str)]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                labels: labels(pod_labels),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        }
    }

    fn service(ns: &str, selector: Option<&[(&str, &str)]>) -> Service {
        Service {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some("web".into()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                selector: selector.and_then(labels),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        }
    }

    #[test]
    fn a_service_selects_pods_of_its_namespace_carrying_its_labels() {
        let app_web: &[(&str, &str)] = &[("app", "web")];
        let cases = [
            (
                "match",
                service("a", Some(app_web)),
                pod("a", "p", &[("app", "web"), ("x", "y")]),
                true,
            ),
            (
                "other value",
                service("a", Some(app_web)),
                pod("a", "p", &[("app", "db")]),
                false,
            ),
            (
                "other namespace",
                service("a", Some(app_web)),
                pod("b", "p", &[("app", "web")]),
                false,
            ),
            (
                "no selector",
                service("a", None),
                pod("a", "p", &[("app", "web")]),
                false,
            ),
        ];
        for (name, service, pod, want) in cases {
            assert_eq!(selects(&service, &pod), want, "{name}");
        }
    }

    #[test]
    fn a_slice_names_its_service_and_the_pods_it_lists() {
        let slice = EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some("a".into()),
                name: Some("web-abcde".into()),
                labels: labels(&[(LABEL_SERVICE_NAME, "web")]),
                ..ObjectMeta::default()
            },
            address_type: "IPv4".into(),
            endpoints: vec![Endpoint {
                addresses: vec!["10.1.0.1".into()],
                target_ref: Some(ObjectReference {
                    kind: Some("Pod".into()),
                    name: Some("p1".into()),
                    ..ObjectReference::default()
                }),
                ..Endpoint::default()
            }],
            ports: None,
        };
        assert_eq!(service_of(&slice), Some(ObjectKey::namespaced("a", "web")));
        assert!(lists_pod(&slice, &pod("a", "p1", &[])));
        assert!(!lists_pod(&slice, &pod("a", "p2", &[])));
        assert!(!lists_pod(&slice, &pod("b", "p1", &[])));
    }
}
