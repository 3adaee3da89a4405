//! A synthetic input of N Services × M endpoints, for benchmarks of the builder, the diff and
//! the renderers: API objects, so parsing is measured too.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::input::LABEL_SERVICE_NAME;

/// The node the synthetic endpoints are spread over (every 7th endpoint is on it).
pub const SYNTHETIC_NODE: &str = "node-a";

/// How many NodePorts the default range 30000-32767 holds.
const NODE_PORTS: usize = 2768;

/// Services and their EndpointSlices.
#[derive(Debug, Clone, Default)]
pub struct Synthetic {
    pub services: Vec<Service>,
    pub slices: Vec<EndpointSlice>,
}

impl Synthetic {
    /// The proxy's input for these objects on [`SYNTHETIC_NODE`] (address 192.168.1.10), with
    /// `cluster_cidrs` (benchmarks).
    pub fn input(&self, cluster_cidrs: Vec<super::Cidr>) -> super::ProxyInput {
        let node = super::NodeState {
            name: SYNTHETIC_NODE.into(),
            ips: vec![Ipv4Addr::new(192, 168, 1, 10).into()],
            pod_cidrs: Vec::new(),
            zone: None,
        };
        let options = super::ProxyOptions {
            cluster_cidrs,
            masquerade_all: false,
        };
        super::ProxyInput::from_api(&self.services, &self.slices, node, options)
    }
}

/// `n` Services in namespace `bench` (`svc-<i>`, ClusterIP from 10.96.0.0/12, TCP port 80 named
/// `http` to target port 8080; every 10th also a NodePort, while the 30000-32767 range lasts) with `m` ready endpoints each, one
/// EndpointSlice per Service, endpoints numbered from 10.244.0.0 upwards.
pub fn synthetic(n: usize, m: usize) -> Synthetic {
    let mut out = Synthetic::default();
    for i in 0..n {
        let index = u32::try_from(i).unwrap_or(u32::MAX);
        let cluster_ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 1)).wrapping_add(index));
        let name = format!("svc-{i}");
        let node_port = (i % 10 == 0 && i / 10 < NODE_PORTS)
            .then(|| 30000 + i32::try_from(i / 10).unwrap_or(0));
        out.services.push(Service {
            metadata: ObjectMeta {
                namespace: Some("bench".into()),
                name: Some(name.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                type_: Some(
                    if node_port.is_some() {
                        "NodePort"
                    } else {
                        "ClusterIP"
                    }
                    .into(),
                ),
                cluster_ip: Some(cluster_ip.to_string()),
                cluster_ips: Some(vec![cluster_ip.to_string()]),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    protocol: Some("TCP".into()),
                    port: 80,
                    target_port: Some(IntOrString::Int(8080)),
                    node_port,
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            status: None,
        });
        let endpoints = (0..m)
            .map(|j| {
                let k = u32::try_from(i * m + j).unwrap_or(u32::MAX);
                let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 0, 0)).wrapping_add(k));
                Endpoint {
                    addresses: vec![ip.to_string()],
                    conditions: Some(EndpointConditions {
                        ready: Some(true),
                        serving: Some(true),
                        terminating: Some(false),
                    }),
                    node_name: Some(if k % 7 == 0 { SYNTHETIC_NODE } else { "node-b" }.into()),
                    ..Endpoint::default()
                }
            })
            .collect();
        out.slices.push(EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some("bench".into()),
                name: Some(format!("{name}-abcde")),
                labels: Some(BTreeMap::from([(LABEL_SERVICE_NAME.to_owned(), name)])),
                ..ObjectMeta::default()
            },
            address_type: "IPv4".into(),
            endpoints,
            ports: Some(vec![EndpointPort {
                name: Some("http".into()),
                protocol: Some("TCP".into()),
                port: Some(8080),
                app_protocol: None,
            }]),
        });
    }
    out
}
