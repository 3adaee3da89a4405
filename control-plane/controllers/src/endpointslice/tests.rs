use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, Node, Pod, PodCondition, PodIP, PodSpec, PodStatus, Service,
    ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{EndpointConditions, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;

use super::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

fn service(selector: Option<&[(&str, &str)]>) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            uid: Some("svc-uid".into()),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            selector: selector.map(labels),
            cluster_ip: Some("10.96.0.10".into()),
            ip_families: Some(vec!["IPv4".into()]),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// A running pod `name` labelled `app=<app>`, with IP `ip`, on `node-a`, whose container
/// port `http` is `port`.
fn pod(name: &str, app: &str, ip: &str, ready: bool, port: i32) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            labels: Some(labels(&[("app", app)])),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: Some("node-a".into()),
            containers: vec![Container {
                name: "app".into(),
                ports: Some(vec![ContainerPort {
                    name: Some("http".into()),
                    container_port: port,
                    protocol: Some("TCP".into()),
                    ..ContainerPort::default()
                }]),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some(ip.into()),
            pod_ips: Some(vec![PodIP { ip: ip.into() }]),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        }),
    }
}

fn node(name: &str, zone: &str) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels(&[(LABEL_TOPOLOGY_ZONE, zone)])),
            ..ObjectMeta::default()
        },
        ..Node::default()
    }
}

fn nodes() -> Vec<Node> {
    vec![node("node-a", "zone-1")]
}

fn many_pods(count: usize) -> Vec<Pod> {
    (0..count)
        .map(|i| {
            pod(
                &format!("p{i:03}"),
                "web",
                &format!("10.0.{}.{}", i / 200, i % 200 + 1),
                true,
                8080,
            )
        })
        .collect()
}

fn slice_of(action: &Action) -> EndpointSlice {
    let (Action::Create { body, .. } | Action::Update { body, .. }) = action else {
        panic!("not a create or update: {action:?}");
    };
    serde_json::from_value(body.clone()).expect("an EndpointSlice body")
}

/// Applies the actions the way the apiserver would (names for generateName, replace on
/// update, removal on delete).
fn apply(existing: &[EndpointSlice], actions: &[Action]) -> Vec<EndpointSlice> {
    let mut slices = existing.to_vec();
    let mut next = existing.len();
    for action in actions {
        match action {
            Action::Create { .. } => {
                let mut slice = slice_of(action);
                next += 1;
                slice.metadata.name = Some(format!("web-{next:05}"));
                slice.metadata.resource_version = Some("1".into());
                slices.push(slice);
            }
            Action::Update { target, .. } => {
                let slice = slice_of(action);
                let at = slices
                    .iter()
                    .position(|s| s.metadata.name.as_deref() == Some(target.name.as_str()))
                    .expect("the updated slice exists");
                slices[at] = slice;
            }
            Action::Delete { target, .. } => {
                slices.retain(|s| s.metadata.name.as_deref() != Some(target.name.as_str()));
            }
            other => panic!("unexpected action {other:?}"),
        }
    }
    slices
}

fn kinds(actions: &[Action]) -> Vec<&'static str> {
    actions
        .iter()
        .map(|a| match a {
            Action::Create { .. } => "create",
            Action::Update { .. } => "update",
            Action::Delete { .. } => "delete",
            _ => "other",
        })
        .collect()
}

fn conditions(ready: bool, serving: bool, terminating: bool) -> EndpointConditions {
    EndpointConditions {
        ready: Some(ready),
        serving: Some(serving),
        terminating: Some(terminating),
    }
}

#[test]
fn endpoint_conditions_follow_readiness_termination_and_publish_not_ready() {
    let deleting = Some(Time(Timestamp::from_second(100).expect("time")));
    struct Case {
        name: &'static str,
        ready: bool,
        terminating: bool,
        publish_not_ready: bool,
        want: EndpointConditions,
    }
    let cases = [
        Case {
            name: "ready",
            ready: true,
            terminating: false,
            publish_not_ready: false,
            want: conditions(true, true, false),
        },
        Case {
            name: "not ready",
            ready: false,
            terminating: false,
            publish_not_ready: false,
            want: conditions(false, false, false),
        },
        Case {
            name: "terminating, still ready",
            ready: true,
            terminating: true,
            publish_not_ready: false,
            want: conditions(false, true, true),
        },
        Case {
            name: "terminating, not ready",
            ready: false,
            terminating: true,
            publish_not_ready: false,
            want: conditions(false, false, true),
        },
        Case {
            name: "publishNotReadyAddresses, not ready",
            ready: false,
            terminating: false,
            publish_not_ready: true,
            want: conditions(true, false, false),
        },
        Case {
            name: "publishNotReadyAddresses, terminating",
            ready: true,
            terminating: true,
            publish_not_ready: true,
            want: conditions(true, true, true),
        },
    ];
    for case in cases {
        let mut svc = service(Some(&[("app", "web")]));
        if let Some(spec) = svc.spec.as_mut() {
            spec.publish_not_ready_addresses = Some(case.publish_not_ready);
        }
        let mut p = pod("p1", "web", "10.0.0.1", case.ready, 8080);
        if case.terminating {
            p.metadata.deletion_timestamp = deleting.clone();
        }
        let actions = plan(&svc, &[p], &nodes(), &[]);
        assert_eq!(kinds(&actions), ["create"], "{}", case.name);
        let slice = slice_of(&actions[0]);
        assert_eq!(slice.endpoints.len(), 1, "{}", case.name);
        assert_eq!(
            slice.endpoints[0].conditions,
            Some(case.want),
            "{}",
            case.name
        );
    }
}

#[test]
fn new_slice_carries_labels_owner_ports_and_endpoint_details() {
    let svc = service(Some(&[("app", "web")]));
    let mut p = pod("p1", "web", "10.0.0.1", true, 8080);
    if let Some(spec) = p.spec.as_mut() {
        spec.hostname = Some("p1".into());
        spec.subdomain = Some("web".into());
    }
    let mut other_subdomain = pod("p2", "web", "10.0.0.2", true, 8080);
    if let Some(spec) = other_subdomain.spec.as_mut() {
        spec.hostname = Some("p2".into());
        spec.subdomain = Some("other".into());
    }
    let actions = plan(&svc, &[p, other_subdomain], &nodes(), &[]);
    assert_eq!(kinds(&actions), ["create"]);
    let slice = slice_of(&actions[0]);
    assert_eq!(slice.metadata.generate_name.as_deref(), Some("web-"));
    assert_eq!(slice.metadata.namespace.as_deref(), Some("default"));
    let l = slice.metadata.labels.clone().unwrap_or_default();
    assert_eq!(l.get(LABEL_SERVICE_NAME).map(String::as_str), Some("web"));
    assert_eq!(
        l.get(LABEL_MANAGED_BY).map(String::as_str),
        Some(CONTROLLER_NAME)
    );
    let owner = &slice.metadata.owner_references.clone().unwrap_or_default()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("Service", "svc-uid", Some(true))
    );
    assert_eq!(slice.address_type, "IPv4");
    let ports = slice.ports.clone().unwrap_or_default();
    assert_eq!(
        (
            ports[0].name.as_deref(),
            ports[0].port,
            ports[0].protocol.as_deref()
        ),
        (Some("http"), Some(8080), Some("TCP"))
    );
    let first = &slice.endpoints[0];
    assert_eq!(first.addresses, ["10.0.0.1"]);
    assert_eq!(first.node_name.as_deref(), Some("node-a"));
    assert_eq!(first.zone.as_deref(), Some("zone-1"));
    assert_eq!(first.hostname.as_deref(), Some("p1"));
    let target = first.target_ref.clone().unwrap_or_default();
    assert_eq!(
        (
            target.kind.as_deref(),
            target.name.as_deref(),
            target.uid.as_deref()
        ),
        (Some("Pod"), Some("p1"), Some("uid-p1"))
    );
    assert_eq!(
        slice.endpoints[1].hostname, None,
        "subdomain names another service"
    );
}

#[test]
fn services_the_controller_leaves_alone() {
    let pods = vec![pod("p1", "web", "10.0.0.1", true, 8080)];
    let no_selector = service(None);
    assert!(plan(&no_selector, &pods, &nodes(), &[]).is_empty());
    let mut external = service(Some(&[("app", "web")]));
    if let Some(spec) = external.spec.as_mut() {
        spec.type_ = Some("ExternalName".into());
    }
    assert!(plan(&external, &pods, &nodes(), &[]).is_empty());
}

#[test]
fn pods_without_ip_finished_or_on_missing_nodes_are_left_out() {
    let svc = service(Some(&[("app", "web")]));
    let mut no_ip = pod("a", "web", "", true, 8080);
    if let Some(status) = no_ip.status.as_mut() {
        status.pod_ip = None;
        status.pod_ips = None;
    }
    let mut finished = pod("b", "web", "10.0.0.2", false, 8080);
    if let Some(status) = finished.status.as_mut() {
        status.phase = Some("Succeeded".into());
    }
    let mut lost = pod("c", "web", "10.0.0.3", true, 8080);
    if let Some(spec) = lost.spec.as_mut() {
        spec.node_name = Some("gone".into());
    }
    let other_app = pod("d", "db", "10.0.0.4", true, 8080);
    let kept = pod("e", "web", "10.0.0.5", true, 8080);
    let actions = plan(
        &svc,
        &[no_ip, finished, lost.clone(), other_app, kept],
        &nodes(),
        &[],
    );
    let slice = slice_of(&actions[0]);
    let names: Vec<_> = slice
        .endpoints
        .iter()
        .filter_map(|e| e.target_ref.as_ref()?.name.clone())
        .collect();
    assert_eq!(names, ["e"]);

    // publishNotReadyAddresses publishes the pod on the missing node anyway.
    let mut publish = svc;
    if let Some(spec) = publish.spec.as_mut() {
        spec.publish_not_ready_addresses = Some(true);
    }
    let slice = slice_of(&plan(&publish, &[lost], &nodes(), &[])[0]);
    assert_eq!(slice.endpoints.len(), 1);
}

#[test]
fn named_ports_resolving_differently_split_into_two_slices() {
    let svc = service(Some(&[("app", "web")]));
    let pods = vec![
        pod("a", "web", "10.0.0.1", true, 8080),
        pod("b", "web", "10.0.0.2", true, 9090),
        pod("c", "web", "10.0.0.3", true, 8080),
    ];
    let actions = plan(&svc, &pods, &nodes(), &[]);
    assert_eq!(kinds(&actions), ["create", "create"]);
    let mut by_port: Vec<(i32, usize)> = actions
        .iter()
        .map(slice_of)
        .map(|s| {
            (
                s.ports.unwrap_or_default()[0].port.unwrap_or_default(),
                s.endpoints.len(),
            )
        })
        .collect();
    by_port.sort();
    assert_eq!(by_port, [(8080, 2), (9090, 1)]);
    let slices = apply(&[], &actions);
    assert!(plan(&svc, &pods, &nodes(), &slices).is_empty(), "converged");
}

#[test]
fn a_named_port_missing_on_a_pod_leaves_that_port_out() {
    let mut svc = service(Some(&[("app", "web")]));
    if let Some(ports) = svc.spec.as_mut().and_then(|s| s.ports.as_mut()) {
        ports.push(ServicePort {
            name: Some("metrics".into()),
            port: 9100,
            target_port: Some(IntOrString::String("metrics".into())),
            ..ServicePort::default()
        });
        ports.push(ServicePort {
            name: Some("admin".into()),
            port: 81,
            target_port: None,
            ..ServicePort::default()
        });
    }
    let actions = plan(
        &svc,
        &[pod("a", "web", "10.0.0.1", true, 8080)],
        &nodes(),
        &[],
    );
    let ports: Vec<_> = slice_of(&actions[0])
        .ports
        .unwrap_or_default()
        .into_iter()
        .map(|p| (p.name.unwrap_or_default(), p.port.unwrap_or_default()))
        .collect();
    assert_eq!(
        ports,
        [("http".to_string(), 8080), ("admin".to_string(), 81)]
    );
}

#[test]
fn many_pods_fill_slices_of_one_hundred_and_a_removal_touches_one_slice() {
    let svc = service(Some(&[("app", "web")]));
    let pods = many_pods(250);
    let actions = plan(&svc, &pods, &nodes(), &[]);
    assert_eq!(kinds(&actions), ["create", "create", "create"]);
    let sizes: Vec<usize> = actions
        .iter()
        .map(|a| slice_of(a).endpoints.len())
        .collect();
    assert_eq!(sizes, [100, 100, 50]);
    let slices = apply(&[], &actions);
    assert!(plan(&svc, &pods, &nodes(), &slices).is_empty(), "converged");

    // Remove 10 pods that all sit in the first slice.
    let first: Vec<String> = slices[0]
        .endpoints
        .iter()
        .take(10)
        .filter_map(|e| e.target_ref.as_ref()?.name.clone())
        .collect();
    let fewer: Vec<Pod> = pods
        .into_iter()
        .filter(|p| !first.contains(p.metadata.name.as_ref().expect("name")))
        .collect();
    let actions = plan(&svc, &fewer, &nodes(), &slices);
    assert_eq!(kinds(&actions), ["update"]);
    assert_eq!(
        actions[0].target().name,
        slices[0].metadata.name.clone().expect("name")
    );
    let updated = slice_of(&actions[0]);
    assert_eq!(updated.endpoints.len(), 90);
    assert_eq!(
        updated.metadata.resource_version.as_deref(),
        Some("1"),
        "planned from the observed version"
    );
}

#[test]
fn new_endpoints_fill_the_slice_they_fit_best_before_creating_one() {
    let svc = service(Some(&[("app", "web")]));
    let pods = many_pods(250);
    let slices = apply(&[], &plan(&svc, &pods, &nodes(), &[]));
    let more = many_pods(260);
    let actions = plan(&svc, &more, &nodes(), &slices);
    assert_eq!(kinds(&actions), ["update"]);
    assert_eq!(
        slice_of(&actions[0]).endpoints.len(),
        60,
        "the 50-endpoint slice took the 10 new ones"
    );
}

#[test]
fn a_pod_turning_ready_rewrites_only_its_slice() {
    let svc = service(Some(&[("app", "web")]));
    let mut pods = many_pods(150);
    pods[120] = pod("p120", "web", "10.0.0.121", false, 8080);
    let slices = apply(&[], &plan(&svc, &pods, &nodes(), &[]));
    pods[120] = pod("p120", "web", "10.0.0.121", true, 8080);
    let actions = plan(&svc, &pods, &nodes(), &slices);
    assert_eq!(kinds(&actions), ["update"]);
    assert_eq!(actions[0].target().name, "web-00002");
}

#[test]
fn a_selector_change_rewrites_the_slice_in_place() {
    let old = service(Some(&[("app", "web")]));
    let pods = vec![
        pod("a1", "web", "10.0.0.1", true, 8080),
        pod("a2", "web", "10.0.0.2", true, 8080),
        pod("b1", "web-v2", "10.0.1.1", true, 8080),
    ];
    let slices = apply(&[], &plan(&old, &pods, &nodes(), &[]));
    assert_eq!(slices.len(), 1);
    let new = service(Some(&[("app", "web-v2")]));
    let actions = plan(&new, &pods, &nodes(), &slices);
    assert_eq!(
        kinds(&actions),
        ["update"],
        "the emptied slice is reused, not deleted and recreated"
    );
    let updated = slice_of(&actions[0]);
    let names: Vec<_> = updated
        .endpoints
        .iter()
        .filter_map(|e| e.target_ref.as_ref()?.name.clone())
        .collect();
    assert_eq!(names, ["b1"]);
    let slices = apply(&slices, &actions);
    assert!(plan(&new, &pods, &nodes(), &slices).is_empty(), "converged");
}

#[test]
fn a_service_without_endpoints_keeps_one_placeholder() {
    let svc = service(Some(&[("app", "web")]));
    let actions = plan(&svc, &[], &nodes(), &[]);
    assert_eq!(kinds(&actions), ["create"]);
    let placeholder = slice_of(&actions[0]);
    assert!(placeholder.endpoints.is_empty());
    assert_eq!(placeholder.ports, Some(vec![]));
    let slices = apply(&[], &actions);
    assert!(
        plan(&svc, &[], &nodes(), &slices).is_empty(),
        "the placeholder stays"
    );

    // When pods appear, the placeholder is rewritten rather than replaced.
    let actions = plan(
        &svc,
        &[pod("a", "web", "10.0.0.1", true, 8080)],
        &nodes(),
        &slices,
    );
    assert_eq!(kinds(&actions), ["update"]);
    // And when they go again, the slice becomes the placeholder again.
    let slices = apply(&slices, &actions);
    let actions = plan(&svc, &[], &nodes(), &slices);
    assert_eq!(kinds(&actions), ["update"]);
    let emptied = slice_of(&actions[0]);
    assert!(emptied.endpoints.is_empty() && emptied.ports == Some(vec![]));
    let slices = apply(&slices, &actions);
    assert!(plan(&svc, &[], &nodes(), &slices).is_empty(), "converged");
}

#[test]
fn address_types_follow_ip_families() {
    let mut svc = service(Some(&[("app", "web")]));
    if let Some(spec) = svc.spec.as_mut() {
        spec.ip_families = Some(vec!["IPv4".into(), "IPv6".into()]);
    }
    let mut dual = pod("a", "web", "10.0.0.1", true, 8080);
    if let Some(status) = dual.status.as_mut() {
        status.pod_ips = Some(vec![
            PodIP {
                ip: "10.0.0.1".into(),
            },
            PodIP {
                ip: "fd00::1".into(),
            },
        ]);
    }
    let actions = plan(&svc, &[dual.clone()], &nodes(), &[]);
    let mut types: Vec<(String, Vec<String>)> = actions
        .iter()
        .map(slice_of)
        .map(|s| (s.address_type, s.endpoints[0].addresses.clone()))
        .collect();
    types.sort();
    assert_eq!(
        types,
        [
            ("IPv4".to_string(), vec!["10.0.0.1".to_string()]),
            ("IPv6".to_string(), vec!["fd00::1".to_string()])
        ]
    );

    // Going single-stack IPv6 deletes the IPv4 slice.
    let slices = apply(&[], &actions);
    if let Some(spec) = svc.spec.as_mut() {
        spec.ip_families = Some(vec!["IPv6".into()]);
    }
    let actions = plan(&svc, &[dual], &nodes(), &slices);
    assert_eq!(kinds(&actions), ["delete"]);
    let deleted = slices
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(actions[0].target().name.as_str()))
        .expect("deleted slice");
    assert_eq!(deleted.address_type, "IPv4");
}

#[test]
fn slices_labelled_for_the_service_but_not_owned_by_it_are_deleted() {
    let svc = service(Some(&[("app", "web")]));
    let pods = vec![pod("a", "web", "10.0.0.1", true, 8080)];
    let mut slices = apply(&[], &plan(&svc, &pods, &nodes(), &[]));
    let mut stray = slices[0].clone();
    stray.metadata.name = Some("web-stray".into());
    stray.metadata.owner_references = None;
    slices.push(stray);
    let actions = plan(&svc, &pods, &nodes(), &slices);
    assert_eq!(kinds(&actions), ["delete"]);
    assert_eq!(actions[0].target().name, "web-stray");
}

#[test]
fn a_terminating_service_gets_no_new_slices() {
    let mut svc = service(Some(&[("app", "web")]));
    svc.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(1).expect("time")));
    assert!(
        plan(
            &svc,
            &[pod("a", "web", "10.0.0.1", true, 8080)],
            &nodes(),
            &[]
        )
        .is_empty()
    );
}

#[test]
fn slice_labels_copy_the_service_labels_and_mark_headless_services() {
    let mut svc = service(Some(&[("app", "web")]));
    svc.metadata.labels = Some(labels(&[("team", "a"), (LABEL_SERVICE_NAME, "spoofed")]));
    let pods = vec![pod("a", "web", "10.0.0.1", true, 8080)];
    let slices = apply(&[], &plan(&svc, &pods, &nodes(), &[]));
    let got = slices[0].metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        got,
        labels(&[
            ("team", "a"),
            (LABEL_SERVICE_NAME, "web"),
            (LABEL_MANAGED_BY, CONTROLLER_NAME)
        ])
    );

    // Turning headless (and relabelling) rewrites the labels of the existing slice only.
    if let Some(spec) = svc.spec.as_mut() {
        spec.cluster_ip = Some("None".into());
    }
    svc.metadata.labels = Some(labels(&[("team", "b")]));
    let actions = plan(&svc, &pods, &nodes(), &slices);
    assert_eq!(kinds(&actions), ["update"]);
    let got = slice_of(&actions[0]).metadata.labels.unwrap_or_default();
    assert_eq!(
        got,
        labels(&[
            ("team", "b"),
            (LABEL_HEADLESS, ""),
            (LABEL_SERVICE_NAME, "web"),
            (LABEL_MANAGED_BY, CONTROLLER_NAME)
        ])
    );
}

#[test]
fn ipv4_mapped_pod_addresses_count_as_ipv4() {
    let svc = service(Some(&[("app", "web")]));
    let mapped = pod("a", "web", "::ffff:10.0.0.1", true, 8080);
    let actions = plan(&svc, &[mapped], &nodes(), &[]);
    assert_eq!(slice_of(&actions[0]).endpoints.len(), 1);
}
