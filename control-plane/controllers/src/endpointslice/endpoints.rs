//! What one pod contributes to a Service's EndpointSlices: whether it is published at all,
//! its endpoint (addresses of one family, the ready/serving/terminating conditions, node,
//! zone, hostname, target reference) and the ports its service ports resolve to on it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod, Service, ServicePort};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::common::{is_ready, is_terminal};

/// The node label whose value becomes an endpoint's `zone`.
pub const LABEL_TOPOLOGY_ZONE: &str = "topology.kubernetes.io/zone";

/// `IPv4` or `IPv6`: the address types the controller writes slices for.
pub const ADDRESS_TYPE_IPV4: &str = "IPv4";
/// See [`ADDRESS_TYPE_IPV4`].
pub const ADDRESS_TYPE_IPV6: &str = "IPv6";

/// The address types a Service gets slices for: its `ipFamilies`; without them (services
/// from before dual-stack), the family of its cluster IP; a headless service without
/// families gets both.
pub(crate) fn address_types(service: &Service) -> Vec<&'static str> {
    let spec = service.spec.as_ref();
    let mut types: Vec<&'static str> = Vec::new();
    for family in spec
        .and_then(|s| s.ip_families.as_ref())
        .into_iter()
        .flatten()
    {
        let address_type = match family.as_str() {
            "IPv4" => ADDRESS_TYPE_IPV4,
            "IPv6" => ADDRESS_TYPE_IPV6,
            _ => continue,
        };
        if !types.contains(&address_type) {
            types.push(address_type);
        }
    }
    if !types.is_empty() {
        return types;
    }
    match spec.and_then(|s| s.cluster_ip.as_deref()) {
        Some(ip) if !ip.is_empty() && ip != "None" => {
            if is_ipv6(ip) {
                vec![ADDRESS_TYPE_IPV6]
            } else {
                vec![ADDRESS_TYPE_IPV4]
            }
        }
        _ => vec![ADDRESS_TYPE_IPV4, ADDRESS_TYPE_IPV6],
    }
}

/// Whether `ip` is an IPv6 address (an IPv4-mapped one counts as IPv4, as in Go).
fn is_ipv6(ip: &str) -> bool {
    ip.parse::<std::net::Ipv6Addr>()
        .is_ok_and(|v6| v6.to_ipv4_mapped().is_none())
}

/// The pod's IPs (`status.podIPs`, or `status.podIP` alone on older statuses).
fn pod_ips(pod: &Pod) -> Vec<&str> {
    let Some(status) = pod.status.as_ref() else {
        return Vec::new();
    };
    let listed: Vec<&str> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|ip| ip.ip.as_str())
        .filter(|ip| !ip.is_empty())
        .collect();
    if !listed.is_empty() {
        return listed;
    }
    status
        .pod_ip
        .as_deref()
        .filter(|ip| !ip.is_empty())
        .into_iter()
        .collect()
}

/// Whether the pod belongs in endpoint slices at all: it has an IP and has not finished.
/// Terminating pods stay (with `terminating: true`).
pub(crate) fn is_publishable(pod: &Pod) -> bool {
    !is_terminal(pod) && !pod_ips(pod).is_empty()
}

/// The endpoint of `pod` for `address_type`; `None` when the pod has no address of that
/// family.
pub(crate) fn endpoint_of(
    pod: &Pod,
    node: Option<&Node>,
    service: &Service,
    address_type: &str,
) -> Option<Endpoint> {
    let want_v6 = address_type == ADDRESS_TYPE_IPV6;
    let addresses: Vec<String> = pod_ips(pod)
        .into_iter()
        .filter(|ip| is_ipv6(ip) == want_v6)
        .map(String::from)
        .collect();
    if addresses.is_empty() {
        return None;
    }
    let publish_not_ready = service
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let serving = is_ready(pod);
    let terminating = pod.metadata.deletion_timestamp.is_some();
    // A terminating pod is never "ready", unless the service publishes everything.
    let ready = publish_not_ready || (serving && !terminating);
    let spec = pod.spec.as_ref();
    let node_name = spec
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty());
    let zone = node
        .and_then(|n| n.metadata.labels.as_ref())
        .and_then(|l| l.get(LABEL_TOPOLOGY_ZONE))
        .filter(|z| !z.is_empty())
        .cloned();
    Some(Endpoint {
        addresses,
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        hostname: hostname_for(pod, service),
        node_name,
        zone,
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            ..ObjectReference::default()
        }),
        ..Endpoint::default()
    })
}

/// The pod's `hostname`, published when its `subdomain` names the service (same namespace).
fn hostname_for(pod: &Pod, service: &Service) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let hostname = spec.hostname.as_deref().filter(|h| !h.is_empty())?;
    let subdomain_matches = spec.subdomain.is_some()
        && spec.subdomain == service.metadata.name
        && pod.metadata.namespace == service.metadata.namespace;
    subdomain_matches.then(|| hostname.to_string())
}

fn protocol_of(protocol: Option<&str>) -> &str {
    protocol.unwrap_or("TCP")
}

/// The port `service_port` targets on `pod`: a numeric `targetPort` as is (the service
/// port when unset); a named one looked up among the container ports (regular and sidecar
/// containers) with the same name and protocol. `None` when the name is not found.
fn resolve_target_port(pod: &Pod, service_port: &ServicePort) -> Option<i32> {
    let protocol = protocol_of(service_port.protocol.as_deref());
    match &service_port.target_port {
        None => Some(service_port.port),
        Some(IntOrString::Int(port)) => Some(*port),
        Some(IntOrString::String(name)) => {
            let spec = pod.spec.as_ref()?;
            let sidecars = spec
                .init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"));
            spec.containers
                .iter()
                .chain(sidecars)
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && protocol_of(p.protocol.as_deref()) == protocol
                })
                .map(|p| p.container_port)
        }
    }
}

/// The slice ports of `pod`: one per service port whose target resolves on it, in the
/// service's order.
pub(crate) fn ports_of(pod: &Pod, service: &Service) -> Vec<EndpointPort> {
    let service_ports = service.spec.as_ref().and_then(|s| s.ports.as_ref());
    service_ports
        .into_iter()
        .flatten()
        .filter_map(|sp| {
            let port = resolve_target_port(pod, sp)?;
            Some(EndpointPort {
                name: Some(sp.name.clone().unwrap_or_default()),
                port: Some(port),
                protocol: Some(protocol_of(sp.protocol.as_deref()).to_string()),
                app_protocol: sp.app_protocol.clone(),
            })
        })
        .collect()
}

/// A key equal for equal port sets whatever their order: pods (and slices) with equal
/// keys share slices.
pub(crate) fn port_key(ports: &[EndpointPort]) -> String {
    let mut parts: Vec<String> = ports
        .iter()
        .map(|p| {
            format!(
                "{}/{}/{}/{}",
                p.name.as_deref().unwrap_or_default(),
                p.port.unwrap_or_default(),
                protocol_of(p.protocol.as_deref()),
                p.app_protocol.as_deref().unwrap_or_default()
            )
        })
        .collect();
    parts.sort();
    parts.join(",")
}

/// The identity of an endpoint across reconciles: its addresses, hostname and target.
/// Two endpoints with the same identity and different conditions are one endpoint that
/// changed.
pub(crate) fn endpoint_key(endpoint: &Endpoint) -> String {
    let mut addresses = endpoint.addresses.clone();
    addresses.sort();
    let target = endpoint.target_ref.as_ref();
    format!(
        "{}|{}|{}/{}",
        addresses.join(","),
        endpoint.hostname.as_deref().unwrap_or_default(),
        target
            .and_then(|t| t.namespace.as_deref())
            .unwrap_or_default(),
        target.and_then(|t| t.name.as_deref()).unwrap_or_default(),
    )
}

/// Nodes by name.
pub(crate) fn nodes_by_name(nodes: &[Node]) -> BTreeMap<&str, &Node> {
    nodes
        .iter()
        .filter_map(|n| Some((n.metadata.name.as_deref()?, n)))
        .collect()
}
