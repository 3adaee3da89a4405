//! Inputs of the rule model: this node's state, the proxy options, and Services and
//! EndpointSlices parsed from their API objects into the few fields the proxy uses. Decides
//! which objects kube-proxy ignores (headless, `ExternalName`, another proxy's, `FQDN` slices)
//! and joins and deduplicates slices per Service. Invalid values are skipped and reported as
//! [`InputProblem`]s, as upstream logs and skips them.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::categorize::EndpointInfo;
use super::{Cidr, IpFamily, Protocol, ServiceName};

/// The label naming the Service an EndpointSlice belongs to.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// Services (and their slices) with this label are served by another proxy.
pub const LABEL_SERVICE_PROXY_NAME: &str = "service.kubernetes.io/service-proxy-name";
/// EndpointSlices of headless Services carry this label.
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
/// `sessionAffinityConfig.clientIP.timeoutSeconds` when unset (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT_SECONDS: u32 = 10800;

/// This node as the proxy sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeState {
    /// The Node object's name; endpoints with this `nodeName` are local.
    pub name: String,
    /// The node's addresses; NodePorts listen on these (loopback ones are never used).
    pub ips: Vec<IpAddr>,
    /// The node's `podCIDRs` (kept for renderers that detect pod traffic by node CIDR).
    pub pod_cidrs: Vec<Cidr>,
    /// The `topology.kubernetes.io/zone` label, for topology hints.
    pub zone: Option<String>,
}

/// Proxy configuration that changes the rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyOptions {
    /// `clusterCIDR`: traffic from these sources is pod traffic (upstream's default
    /// `detectLocalMode: ClusterCIDR`). Empty means no detection: ClusterIP traffic is then
    /// only masqueraded for hairpin or with `masquerade_all`.
    pub cluster_cidrs: Vec<Cidr>,
    /// `masqueradeAll`: masquerade every packet sent to a ClusterIP.
    pub masquerade_all: bool,
}

/// `externalTrafficPolicy` / `internalTrafficPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum TrafficPolicy {
    #[default]
    Cluster,
    Local,
}

/// A value the proxy could not use; the object (or the part of it) is skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputProblem {
    #[error("service {service}: {field} {value:?} is not an IP address (or CIDR)")]
    BadServiceIp {
        service: ServiceName,
        field: &'static str,
        value: String,
    },
    #[error("service {service}: port {port} has unsupported protocol {protocol:?}")]
    BadProtocol {
        service: ServiceName,
        port: i32,
        protocol: String,
    },
    #[error("service {service}: {field} {value} is out of range")]
    BadPort {
        service: ServiceName,
        field: &'static str,
        value: i32,
    },
    #[error(
        "endpointslice {namespace}/{slice}: address {value:?} is not an IP of type {address_type}"
    )]
    BadEndpointAddress {
        namespace: String,
        slice: String,
        address_type: String,
        value: String,
    },
    #[error("{key:?} is claimed by {kept} and {dropped}; {dropped} is not served there")]
    FrontEndConflict {
        key: super::FrontEndKey,
        kept: super::ServicePortName,
        dropped: super::ServicePortName,
    },
}

/// One port of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePortInfo {
    /// The port's name, matched against the slices' port names (not its `targetPort`).
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
    /// `nodePort`, when allocated.
    pub node_port: Option<u16>,
}

/// The parts of a Service the proxy uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    pub name: ServiceName,
    /// `clusterIPs` (or `clusterIP`): at most one per family is used, the first one.
    pub cluster_ips: Vec<IpAddr>,
    pub ports: Vec<ServicePortInfo>,
    pub external_ips: Vec<IpAddr>,
    /// `status.loadBalancer.ingress[].ip` whose `ipMode` is not `Proxy`.
    pub load_balancer_ips: Vec<IpAddr>,
    /// `loadBalancerSourceRanges` (only of `LoadBalancer` Services): when non-empty, load
    /// balancer addresses accept only these sources.
    pub load_balancer_source_ranges: Vec<Cidr>,
    /// `sessionAffinity: ClientIP` → its timeout in seconds.
    pub affinity_timeout_seconds: Option<u32>,
    pub external_policy: TrafficPolicy,
    pub internal_policy: TrafficPolicy,
    pub health_check_node_port: Option<u16>,
    pub publish_not_ready_addresses: bool,
    /// `trafficDistribution` (informational: as upstream, the proxy follows the zone hints the
    /// EndpointSlice controller writes for it).
    pub traffic_distribution: Option<String>,
}

impl ServiceInfo {
    /// Whether the Service takes traffic from outside (NodePort, load balancer or external IP),
    /// upstream's `ExternallyAccessible`.
    pub fn externally_accessible(&self) -> bool {
        !self.external_ips.is_empty()
            || !self.load_balancer_ips.is_empty()
            || self.ports.iter().any(|p| p.node_port.is_some())
    }

    /// Whether `externalTrafficPolicy: Local` applies (only to externally reachable Services).
    pub fn external_policy_local(&self) -> bool {
        self.external_policy == TrafficPolicy::Local && self.externally_accessible()
    }

    /// Parses a Service. `None` when the proxy ignores it: `ExternalName`, headless (no
    /// ClusterIP), or labelled for another proxy. Invalid parts are skipped into `problems`.
    pub fn from_service(service: &Service, problems: &mut Vec<InputProblem>) -> Option<Self> {
        let meta = &service.metadata;
        if meta
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(LABEL_SERVICE_PROXY_NAME))
        {
            return None;
        }
        let spec = service.spec.as_ref()?;
        if spec.type_.as_deref() == Some("ExternalName") {
            return None;
        }
        let name = ServiceName::new(
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        );
        let raw_cluster_ips: Vec<&str> = match &spec.cluster_ips {
            Some(ips) if !ips.is_empty() => ips.iter().map(String::as_str).collect(),
            _ => spec.cluster_ip.as_deref().into_iter().collect(),
        };
        if raw_cluster_ips
            .iter()
            .all(|ip| ip.is_empty() || *ip == "None")
        {
            return None;
        }
        let parse_ips = |field: &'static str,
                         values: &mut dyn Iterator<Item = &str>,
                         problems: &mut Vec<InputProblem>| {
            let mut out: Vec<IpAddr> = Vec::new();
            for value in values {
                match value.parse::<IpAddr>() {
                    Ok(ip) => {
                        if !out.contains(&ip) {
                            out.push(ip);
                        }
                    }
                    Err(_) => problems.push(InputProblem::BadServiceIp {
                        service: name.clone(),
                        field,
                        value: value.to_owned(),
                    }),
                }
            }
            out
        };
        let mut cluster_ips = parse_ips("clusterIPs", &mut raw_cluster_ips.into_iter(), problems);
        // One ClusterIP per family: the first one, as the API server allocates them.
        let mut seen = Vec::new();
        cluster_ips.retain(|ip| {
            let family = IpFamily::of(*ip);
            let first = !seen.contains(&family);
            seen.push(family);
            first
        });
        let external_ips = parse_ips(
            "externalIPs",
            &mut spec.external_ips.iter().flatten().map(String::as_str),
            problems,
        );
        let is_load_balancer = spec.type_.as_deref() == Some("LoadBalancer");
        let ingress = service
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            .filter(|_| is_load_balancer)
            .filter(|i| i.ip_mode.as_deref() != Some("Proxy"))
            .filter_map(|i| i.ip.as_deref());
        let load_balancer_ips = parse_ips(
            "status.loadBalancer.ingress.ip",
            &mut ingress.into_iter(),
            problems,
        );

        let mut load_balancer_source_ranges = Vec::new();
        for range in spec
            .load_balancer_source_ranges
            .iter()
            .flatten()
            .filter(|_| is_load_balancer)
        {
            match range.trim().parse::<Cidr>() {
                Ok(cidr) => load_balancer_source_ranges.push(cidr),
                Err(_) => problems.push(InputProblem::BadServiceIp {
                    service: name.clone(),
                    field: "loadBalancerSourceRanges",
                    value: range.clone(),
                }),
            }
        }

        let ports = parse_ports(spec, &name, problems);

        let affinity_timeout_seconds = affinity_timeout(spec);
        let policy = |value: Option<&str>| match value {
            Some("Local") => TrafficPolicy::Local,
            _ => TrafficPolicy::Cluster,
        };
        let external_policy = policy(spec.external_traffic_policy.as_deref());
        let health_check_node_port = match spec.health_check_node_port {
            Some(n) if n != 0 && is_load_balancer && external_policy == TrafficPolicy::Local => {
                port_number(n)
            }
            _ => None,
        };
        Some(ServiceInfo {
            name,
            cluster_ips,
            ports,
            external_ips,
            load_balancer_ips,
            load_balancer_source_ranges,
            affinity_timeout_seconds,
            external_policy,
            internal_policy: policy(spec.internal_traffic_policy.as_deref()),
            health_check_node_port,
            publish_not_ready_addresses: spec.publish_not_ready_addresses.unwrap_or(false),
            traffic_distribution: spec.traffic_distribution.clone(),
        })
    }
}

/// The Service's ports; unusable ones are skipped into `problems`.
fn parse_ports(
    spec: &ServiceSpec,
    name: &ServiceName,
    problems: &mut Vec<InputProblem>,
) -> Vec<ServicePortInfo> {
    let mut ports = Vec::new();
    for port in spec.ports.iter().flatten() {
        let Some(protocol) = Protocol::from_api(port.protocol.as_deref()) else {
            problems.push(InputProblem::BadProtocol {
                service: name.clone(),
                port: port.port,
                protocol: port.protocol.clone().unwrap_or_default(),
            });
            continue;
        };
        let Some(number) = port_number(port.port) else {
            problems.push(InputProblem::BadPort {
                service: name.clone(),
                field: "port",
                value: port.port,
            });
            continue;
        };
        let node_port = match port.node_port {
            None | Some(0) => None,
            Some(n) => match port_number(n) {
                Some(n) => Some(n),
                None => {
                    problems.push(InputProblem::BadPort {
                        service: name.clone(),
                        field: "nodePort",
                        value: n,
                    });
                    None
                }
            },
        };
        ports.push(ServicePortInfo {
            name: port.name.clone().unwrap_or_default(),
            protocol,
            port: number,
            node_port,
        });
    }
    ports
}

/// `sessionAffinity: ClientIP` → the timeout (default 10800 s); `None` without affinity.
fn affinity_timeout(spec: &ServiceSpec) -> Option<u32> {
    (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .filter(|t| *t > 0)
            .unwrap_or(DEFAULT_AFFINITY_TIMEOUT_SECONDS)
    })
}

fn port_number(value: i32) -> Option<u16> {
    u16::try_from(value).ok().filter(|p| *p != 0)
}

/// The endpoints of one Service: per (slice port name, protocol), deduplicated by (ip, port)
/// and ordered by it. Both families are kept; the builder filters by family.
pub type ServiceEndpoints = BTreeMap<(String, Protocol), Vec<EndpointInfo>>;

/// Whether the proxy looks at this slice at all (not headless, not another proxy's, not FQDN).
pub fn slice_is_relevant(slice: &EndpointSlice) -> bool {
    let labelled = |key: &str| {
        slice
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(key))
    };
    (slice.address_type == "IPv4" || slice.address_type == "IPv6")
        && !labelled(LABEL_HEADLESS)
        && !labelled(LABEL_SERVICE_PROXY_NAME)
}

/// The Service a slice belongs to, from its `kubernetes.io/service-name` label.
pub fn slice_service(slice: &EndpointSlice) -> Option<ServiceName> {
    let service = slice.metadata.labels.as_ref()?.get(LABEL_SERVICE_NAME)?;
    Some(ServiceName::new(
        slice.metadata.namespace.clone().unwrap_or_default(),
        service.clone(),
    ))
}

/// Joins the slices of one Service. Slices are visited in name order; an endpoint (ip, port)
/// seen in several slices is kept once, the first copy winning unless a later one is local,
/// as upstream's endpoint slice cache does. Endpoint conditions follow the API defaults: absent
/// `ready` is ready, absent `serving` is `ready`, absent `terminating` is not terminating.
pub fn endpoints_from_slices<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    node_name: &str,
    problems: &mut Vec<InputProblem>,
) -> ServiceEndpoints {
    let mut slices: Vec<&EndpointSlice> = slices
        .into_iter()
        .filter(|s| slice_is_relevant(s))
        .collect();
    slices.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut by_port: BTreeMap<(String, Protocol), BTreeMap<(IpAddr, u16), EndpointInfo>> =
        BTreeMap::new();
    for slice in slices {
        let family = if slice.address_type == "IPv4" {
            IpFamily::V4
        } else {
            IpFamily::V6
        };
        for port in slice.ports.iter().flatten() {
            let Some(protocol) = Protocol::from_api(port.protocol.as_deref()) else {
                continue;
            };
            let Some(number) = port.port.and_then(port_number) else {
                continue;
            };
            let entries = by_port
                .entry((port.name.clone().unwrap_or_default(), protocol))
                .or_default();
            for endpoint in &slice.endpoints {
                let conditions = endpoint.conditions.as_ref();
                let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
                let serving = conditions.and_then(|c| c.serving).unwrap_or(ready);
                let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
                let node_local =
                    !node_name.is_empty() && endpoint.node_name.as_deref() == Some(node_name);
                let zone_hints: Vec<String> = endpoint
                    .hints
                    .as_ref()
                    .and_then(|h| h.for_zones.as_ref())
                    .into_iter()
                    .flatten()
                    .map(|z| z.name.clone())
                    .collect();
                // Upstream programs the first address of an endpoint only.
                let Some(address) = endpoint.addresses.first() else {
                    continue;
                };
                let ip = match address.parse::<IpAddr>() {
                    Ok(ip) if IpFamily::of(ip) == family => ip,
                    _ => {
                        problems.push(InputProblem::BadEndpointAddress {
                            namespace: slice.metadata.namespace.clone().unwrap_or_default(),
                            slice: slice.metadata.name.clone().unwrap_or_default(),
                            address_type: slice.address_type.clone(),
                            value: address.clone(),
                        });
                        continue;
                    }
                };
                let info = EndpointInfo {
                    ip,
                    port: number,
                    ready,
                    serving,
                    terminating,
                    node_local,
                    zone_hints,
                };
                match entries.entry((ip, number)) {
                    std::collections::btree_map::Entry::Vacant(v) => {
                        v.insert(info);
                    }
                    std::collections::btree_map::Entry::Occupied(mut o) => {
                        if node_local {
                            o.insert(info);
                        }
                    }
                }
            }
        }
    }
    by_port
        .into_iter()
        .map(|(key, eps)| (key, eps.into_values().collect()))
        .collect()
}

/// Everything a sync renders from: parsed Services, their joined endpoints, this node and the
/// options. Build it from API objects with [`ProxyInput::from_api`], or fill it directly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyInput {
    pub node: NodeState,
    pub options: ProxyOptions,
    pub services: BTreeMap<ServiceName, ServiceInfo>,
    pub endpoints: HashMap<ServiceName, ServiceEndpoints>,
    /// What was skipped while parsing, for logging.
    pub problems: Vec<InputProblem>,
}

impl ProxyInput {
    /// Parses Services and EndpointSlices; slices are joined to Services by their
    /// `kubernetes.io/service-name` label (slices without it are unused; those of unknown or
    /// ignored Services are kept but unused until such a Service appears).
    pub fn from_api<'s, 'e>(
        services: impl IntoIterator<Item = &'s Service>,
        slices: impl IntoIterator<Item = &'e EndpointSlice>,
        node: NodeState,
        options: ProxyOptions,
    ) -> Self {
        let mut problems = Vec::new();
        let services: BTreeMap<ServiceName, ServiceInfo> = services
            .into_iter()
            .filter_map(|s| ServiceInfo::from_service(s, &mut problems))
            .map(|s| (s.name.clone(), s))
            .collect();
        let mut grouped: HashMap<ServiceName, Vec<&EndpointSlice>> = HashMap::new();
        for slice in slices {
            if let Some(owner) = slice_service(slice) {
                grouped.entry(owner).or_default().push(slice);
            }
        }
        let endpoints = grouped
            .into_iter()
            .map(|(owner, slices)| {
                let eps = endpoints_from_slices(slices, &node.name, &mut problems);
                (owner, eps)
            })
            .filter(|(_, eps)| !eps.is_empty())
            .collect();
        ProxyInput {
            node,
            options,
            services,
            endpoints,
            problems,
        }
    }

    /// Records an added or updated Service (an ignored one is removed, as if deleted) and
    /// returns its name; follow with [`super::update_service`]. Problems go to `problems`.
    pub fn apply_service(&mut self, service: &Service) -> ServiceName {
        let name = ServiceName::new(
            service.metadata.namespace.clone().unwrap_or_default(),
            service.metadata.name.clone().unwrap_or_default(),
        );
        match ServiceInfo::from_service(service, &mut self.problems) {
            Some(info) => {
                self.services.insert(name.clone(), info);
            }
            None => {
                self.services.remove(&name);
            }
        }
        name
    }

    /// Forgets a deleted Service (its endpoints stay until its slices are gone).
    pub fn remove_service(&mut self, name: &ServiceName) {
        self.services.remove(name);
    }

    /// Replaces the endpoints of Service `name` with those of `slices`: every slice the Service
    /// has now (an empty list when the last one was deleted).
    pub fn apply_slices<'e>(
        &mut self,
        name: &ServiceName,
        slices: impl IntoIterator<Item = &'e EndpointSlice>,
    ) {
        let eps = endpoints_from_slices(slices, &self.node.name, &mut self.problems);
        if eps.is_empty() {
            self.endpoints.remove(name);
        } else {
            self.endpoints.insert(name.clone(), eps);
        }
    }
}
