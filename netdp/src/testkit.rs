//! Builders for the unit tests of every module: Kubernetes Services and EndpointSlices as the
//! proxy sees them, this node's state and the proxy options, terse enough for tables.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointHints, EndpointPort, EndpointSlice, ForZone,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::model::{NodeState, ProxyOptions};

pub(crate) const NODE: &str = "node-a";
pub(crate) const NODE_IP: &str = "192.168.1.10";
pub(crate) const NODE_IP6: &str = "fd00:1::10";

pub(crate) fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub(crate) fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A Service with one TCP port 80 named `http` (nodePort 30080 for NodePort/LoadBalancer).
pub(crate) fn service(name: &str, type_: &str, cluster_ips: &[&str]) -> Service {
    let node_port = (type_ == "NodePort" || type_ == "LoadBalancer").then_some(30080);
    Service {
        metadata: ObjectMeta {
            namespace: Some("default".into()),
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            type_: Some(type_.into()),
            cluster_ip: cluster_ips.first().map(|s| (*s).to_owned()),
            cluster_ips: Some(cluster_ips.iter().map(|s| (*s).to_owned()).collect()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                protocol: Some("TCP".into()),
                port: 80,
                node_port,
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

pub(crate) fn spec(svc: &mut Service) -> &mut ServiceSpec {
    svc.spec.as_mut().unwrap()
}

/// An endpoint: flags R ready, S serving, T terminating, L on this node; `zones` as hints.
pub(crate) fn ep(addr: &str, flags: &str, zones: &[&str]) -> Endpoint {
    let ready = flags.contains('R');
    Endpoint {
        addresses: vec![addr.into()],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(ready || flags.contains('S')),
            terminating: Some(flags.contains('T')),
        }),
        node_name: Some(if flags.contains('L') { NODE } else { "node-b" }.into()),
        hints: (!zones.is_empty()).then(|| EndpointHints {
            for_zones: Some(
                zones
                    .iter()
                    .map(|z| ForZone { name: (*z).into() })
                    .collect(),
            ),
            for_nodes: None,
        }),
        ..Endpoint::default()
    }
}

/// A slice of Service `service` with port `http`/TCP → `port`.
pub(crate) fn slice(
    name: &str,
    service: &str,
    family: &str,
    port: i32,
    endpoints: Vec<Endpoint>,
) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            namespace: Some("default".into()),
            name: Some(name.into()),
            labels: Some(BTreeMap::from([(
                "kubernetes.io/service-name".to_owned(),
                service.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        address_type: family.into(),
        endpoints,
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            protocol: Some("TCP".into()),
            port: Some(port),
            app_protocol: None,
        }]),
    }
}

pub(crate) fn node() -> NodeState {
    NodeState {
        name: NODE.into(),
        ips: vec![ip(NODE_IP), ip("127.0.0.1"), ip(NODE_IP6), ip("::1")],
        pod_cidrs: vec!["10.244.1.0/24".parse().unwrap()],
        zone: Some("zone-a".into()),
    }
}

pub(crate) fn options() -> ProxyOptions {
    ProxyOptions {
        cluster_cidrs: vec![
            "10.244.0.0/16".parse().unwrap(),
            "fd00:244::/56".parse().unwrap(),
        ],
        masquerade_all: false,
    }
}
