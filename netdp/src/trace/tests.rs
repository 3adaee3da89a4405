//! Behaviour of the model, asserted by tracing packets: API objects → `ProxyInput` →
//! `RuleSet` → `trace`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::{
    ClientIPConfig, LoadBalancerIngress, LoadBalancerStatus, Service, ServicePort, ServiceSpec,
    ServiceStatus, SessionAffinityConfig,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointHints, EndpointPort, EndpointSlice, ForZone,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;
use crate::model::{
    Cidr, FrontEndKind, NodeState, ProxyInput, ProxyOptions, RuleSet, build_rules, diff,
};

const NODE: &str = "node-a";
const NODE_IP: &str = "192.168.1.10";
const NODE_IP6: &str = "fd00:1::10";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A Service with one TCP port 80 named `http` (nodePort 30080 for NodePort/LoadBalancer).
fn service(name: &str, type_: &str, cluster_ips: &[&str]) -> Service {
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

fn spec(svc: &mut Service) -> &mut ServiceSpec {
    svc.spec.as_mut().unwrap()
}

/// An endpoint: flags R ready, S serving, T terminating, L on this node; `zones` as hints.
fn ep(addr: &str, flags: &str, zones: &[&str]) -> Endpoint {
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
fn slice(
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

fn node() -> NodeState {
    NodeState {
        name: NODE.into(),
        ips: vec![ip(NODE_IP), ip("127.0.0.1"), ip(NODE_IP6), ip("::1")],
        pod_cidrs: vec!["10.244.1.0/24".parse().unwrap()],
        zone: Some("zone-a".into()),
    }
}

fn options() -> ProxyOptions {
    ProxyOptions {
        cluster_cidrs: vec![
            "10.244.0.0/16".parse().unwrap(),
            "fd00:244::/56".parse().unwrap(),
        ],
        masquerade_all: false,
    }
}

fn rules_with(services: &[Service], slices: &[EndpointSlice], options: ProxyOptions) -> RuleSet {
    let input = ProxyInput::from_api(services, slices, node(), options);
    assert!(input.problems.is_empty(), "{:?}", input.problems);
    let mut problems = Vec::new();
    let rules = build_rules(&input, &mut problems);
    assert!(problems.is_empty(), "{problems:?}");
    rules
}

fn rules(services: &[Service], slices: &[EndpointSlice]) -> RuleSet {
    rules_with(services, slices, options())
}

fn packet(src: &str, dst: &str, dport: u16, arrives_on: ArrivesOn) -> Packet {
    Packet {
        src: ip(src),
        dst: ip(dst),
        proto: Protocol::Tcp,
        dport,
        arrives_on,
    }
}

const POD: &str = "10.244.1.5";
const CLIENT: &str = "203.0.113.7";

/// Every verdict over a range of random picks.
fn verdicts(rules: &RuleSet, p: &Packet) -> BTreeSet<String> {
    (0..12)
        .map(|random| {
            let mut env = TraceEnv {
                random,
                ..TraceEnv::default()
            };
            format!("{:?}", trace(rules, p, &mut env))
        })
        .collect()
}

fn dnat(to: &str, masquerade: bool) -> String {
    format!(
        "{:?}",
        Verdict::Dnat {
            to: sa(to),
            masquerade
        }
    )
}

fn set(items: &[String]) -> BTreeSet<String> {
    items.iter().cloned().collect()
}

#[test]
fn cluster_ip_uses_ready_backends_only_and_masquerades_off_cluster_sources() {
    let svc = service("web", "ClusterIP", &["10.96.0.10"]);
    let sl = slice(
        "web-1",
        "web",
        "IPv4",
        8080,
        vec![
            ep("10.244.1.2", "R", &[]),
            ep("10.244.2.3", "R", &[]),
            ep("10.244.2.4", "", &[]),
            ep("10.244.2.5", "ST", &[]),
        ],
    );
    let r = rules(&[svc], &[sl]);
    let cases = [
        (POD, ArrivesOn::FromPod, false),
        (NODE_IP, ArrivesOn::Local, true),
        (CLIENT, ArrivesOn::External, true),
    ];
    for (src, on, masq) in cases {
        assert_eq!(
            verdicts(&r, &packet(src, "10.96.0.10", 80, on)),
            set(&[dnat("10.244.1.2:8080", masq), dnat("10.244.2.3:8080", masq)]),
            "from {src}"
        );
    }
    // Another port of the same address is not a Service: untouched.
    assert_eq!(
        verdicts(&r, &packet(POD, "10.96.0.10", 81, ArrivesOn::FromPod)),
        set(&["Accept".into()])
    );
    // UDP to the TCP port: untouched.
    let mut udp = packet(POD, "10.96.0.10", 80, ArrivesOn::FromPod);
    udp.proto = Protocol::Udp;
    assert_eq!(verdicts(&r, &udp), set(&["Accept".into()]));
}

#[test]
fn masquerade_all_and_no_cluster_cidr() {
    let svc = service("web", "ClusterIP", &["10.96.0.10"]);
    let sl = slice(
        "web-1",
        "web",
        "IPv4",
        8080,
        vec![ep("10.244.2.3", "R", &[])],
    );
    let all = rules_with(
        std::slice::from_ref(&svc),
        std::slice::from_ref(&sl),
        ProxyOptions {
            masquerade_all: true,
            ..options()
        },
    );
    assert_eq!(
        verdicts(&all, &packet(POD, "10.96.0.10", 80, ArrivesOn::FromPod)),
        set(&[dnat("10.244.2.3:8080", true)])
    );
    let undetected = rules_with(&[svc], &[sl], ProxyOptions::default());
    assert_eq!(
        verdicts(
            &undetected,
            &packet(CLIENT, "10.96.0.10", 80, ArrivesOn::External)
        ),
        set(&[dnat("10.244.2.3:8080", false)])
    );
}

#[test]
fn hairpin_is_masqueraded() {
    let svc = service("web", "ClusterIP", &["10.96.0.10"]);
    let sl = slice(
        "web-1",
        "web",
        "IPv4",
        8080,
        vec![ep("10.244.1.2", "RL", &[])],
    );
    let r = rules(&[svc], &[sl]);
    assert_eq!(
        verdicts(
            &r,
            &packet("10.244.1.2", "10.96.0.10", 80, ArrivesOn::FromPod)
        ),
        set(&[dnat("10.244.1.2:8080", true)])
    );
}

#[test]
fn terminating_fallback_when_nothing_is_ready() {
    let svc = service("web", "ClusterIP", &["10.96.0.10"]);
    let sl = slice(
        "web-1",
        "web",
        "IPv4",
        8080,
        vec![
            ep("10.244.2.3", "ST", &[]),
            ep("10.244.2.4", "T", &[]),
            ep("10.244.2.5", "", &[]),
        ],
    );
    let r = rules(&[svc], &[sl]);
    assert_eq!(
        verdicts(&r, &packet(POD, "10.96.0.10", 80, ArrivesOn::FromPod)),
        set(&[dnat("10.244.2.3:8080", false)])
    );
}

#[test]
fn named_target_port_resolves_per_endpoint_from_the_slices() {
    let mut svc = service("web", "ClusterIP", &["10.96.0.10"]);
    spec(&mut svc).ports.as_mut().unwrap()[0].target_port =
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("web".into()));
    // Two pod templates exposing the named port on different numbers: two slices.
    let a = slice(
        "web-a",
        "web",
        "IPv4",
        8080,
        vec![ep("10.244.2.3", "R", &[])],
    );
    let b = slice(
        "web-b",
        "web",
        "IPv4",
        9090,
        vec![ep("10.244.2.4", "R", &[])],
    );
    let r = rules(&[svc], &[a, b]);
    assert_eq!(
        verdicts(&r, &packet(POD, "10.96.0.10", 80, ArrivesOn::FromPod)),
        set(&[
            dnat("10.244.2.3:8080", false),
            dnat("10.244.2.4:9090", false)
        ])
    );
}

#[test]
fn slice_ports_match_by_name_and_protocol() {
    let mut svc = service("dns", "ClusterIP", &["10.96.0.53"]);
    spec(&mut svc).ports = Some(vec![
        ServicePort {
            name: Some("dns".into()),
            protocol: Some("UDP".into()),
            port: 53,
            ..ServicePort::default()
        },
        ServicePort {
            name: Some("dns-tcp".into()),
            protocol: Some("TCP".into()),
            port: 53,
            ..ServicePort::default()
        },
        ServicePort {
            name: Some("sctp".into()),
            protocol: Some("SCTP".into()),
            port: 99,
            ..ServicePort::default()
        },
    ]);
    let mut sl = slice("dns-1", "dns", "IPv4", 0, vec![ep("10.244.2.3", "R", &[])]);
    sl.ports = Some(vec![
        EndpointPort {
            name: Some("dns".into()),
            protocol: Some("UDP".into()),
            port: Some(5353),
            app_protocol: None,
        },
        EndpointPort {
            name: Some("dns-tcp".into()),
            protocol: Some("TCP".into()),
            port: Some(5354),
            app_protocol: None,
        },
        EndpointPort {
            name: Some("sctp".into()),
            protocol: Some("SCTP".into()),
            port: Some(9999),
            app_protocol: None,
        },
    ]);
    let r = rules(&[svc], &[sl]);
    for (proto, port, want) in [
        (Protocol::Udp, 53, "10.244.2.3:5353"),
        (Protocol::Tcp, 53, "10.244.2.3:5354"),
        (Protocol::Sctp, 99, "10.244.2.3:9999"),
    ] {
        let mut p = packet(POD, "10.96.0.53", port, ArrivesOn::FromPod);
        p.proto = proto;
        assert_eq!(verdicts(&r, &p), set(&[dnat(want, false)]), "{proto}");
    }
}

#[test]
fn internal_traffic_policy_local() {
    let mut svc = service("web", "ClusterIP", &["10.96.0.10"]);
    spec(&mut svc).internal_traffic_policy = Some("Local".into());
    let with_local = slice(
        "web-1",
        "web",
        "IPv4",
        8080,
        vec![ep("10.244.1.2", "RL", &[]), ep("10.244.2.3", "R", &[])],
    );
    let r = rules(&[svc.clone()], &[with_local]);
    assert_eq!(
        verdicts(&r, &packet(POD, "10.96.0.10", 80, ArrivesOn::FromPod)),
        set(&[dnat("10.244.1.2:8080", false)])
    );
    // Endpoints elsewhere only: drop (not reject).
    let remote_only = slice(
        "web-1",
        "web",
        "IPv4",
        8080,
        vec![ep("10.244.2.3", "R", &[])],
    );
    let r = rules(&[svc.clone()], &[remote_only]);
    assert_eq!(
        verdicts(&r, &packet(POD, "10.96.0.10", 80, ArrivesOn::FromPod)),
        set(&["Drop".into()])
    );
    // No endpoints anywhere: reject.
    let r = rules(&[svc], &[]);
    assert_eq!(
        verdicts(&r, &packet(POD, "10.96.0.10", 80, ArrivesOn::FromPod)),
        set(&["Reject".into()])
    );
}

#[test]
fn external_traffic_policy_local() {
    let mut svc = service("web", "LoadBalancer", &["10.96.0.10"]);
    spec(&mut svc).external_traffic_policy = Some("Local".into());
    spec(&mut svc).health_check_node_port = Some(32000);
    svc.status = Some(ServiceStatus {
        load_balancer: Some(LoadBalancerStatus {
            ingress: Some(vec![LoadBalancerIngress {
                ip: Some("198.51.100.1".into()),
                ..LoadBalancerIngress::default()
            }]),
        }),
        conditions: None,
    });
    let eps = vec![ep("10.244.1.2", "RL", &[]), ep("10.244.2.3", "R", &[])];
    let r = rules(&[svc.clone()], &[slice("web-1", "web", "IPv4", 8080, eps)]);
    let both = set(&[
        dnat("10.244.1.2:8080", false),
        dnat("10.244.2.3:8080", false),
    ]);
    for (dst, port) in [("198.51.100.1", 80), (NODE_IP, 30080)] {
        // External clients: local endpoints only, client address kept.
        assert_eq!(
            verdicts(&r, &packet(CLIENT, dst, port, ArrivesOn::External)),
            set(&[dnat("10.244.1.2:8080", false)]),
            "{dst}"
        );
        // Pods: short-circuited to every endpoint.
        assert_eq!(
            verdicts(&r, &packet(POD, dst, port, ArrivesOn::FromPod)),
            both,
            "{dst}"
        );
        // The node itself: every endpoint, masqueraded.
        assert_eq!(
            verdicts(&r, &packet(NODE_IP, dst, port, ArrivesOn::Local)),
            set(&[dnat("10.244.1.2:8080", true), dnat("10.244.2.3:8080", true)]),
            "{dst}"
        );
    }
    // ClusterIP is not affected by the external policy.
    assert_eq!(
        verdicts(&r, &packet(POD, "10.96.0.10", 80, ArrivesOn::FromPod)),
        both
    );
    assert_eq!(r.health_check_node_ports[&32000].local_endpoints, 1);

    // No local endpoint: external traffic is dropped, pods still short-circuit.
    let r = rules(
        std::slice::from_ref(&svc),
        &[slice(
            "web-1",
            "web",
            "IPv4",
            8080,
            vec![ep("10.244.2.3", "R", &[])],
        )],
    );
    assert_eq!(
        verdicts(&r, &packet(CLIENT, NODE_IP, 30080, ArrivesOn::External)),
        set(&["Drop".into()])
    );
    assert_eq!(
        verdicts(&r, &packet(POD, NODE_IP, 30080, ArrivesOn::FromPod)),
        set(&[dnat("10.244.2.3:8080", false)])
    );
    assert_eq!(r.health_check_node_ports[&32000].local_endpoints, 0);
    // No endpoints at all: everyone is rejected.
    let r = rules(&[svc], &[]);
    for p in [
        packet(CLIENT, NODE_IP, 30080, ArrivesOn::External),
        packet(POD, "198.51.100.1", 80, ArrivesOn::FromPod),
    ] {
        assert_eq!(verdicts(&r, &p), set(&["Reject".into()]));
    }
}

#[test]
fn node_port_listens_on_node_addresses_only() {
    let svc = service("web", "NodePort", &["10.96.0.10"]);
    let r = rules(
        &[svc],
        &[slice(
            "web-1",
            "web",
            "IPv4",
            8080,
            vec![ep("10.244.2.3", "R", &[])],
        )],
    );
    assert_eq!(
        verdicts(&r, &packet(CLIENT, NODE_IP, 30080, ArrivesOn::External)),
        set(&[dnat("10.244.2.3:8080", true)])
    );
    assert_eq!(
        verdicts(&r, &packet(NODE_IP, NODE_IP, 30080, ArrivesOn::Local)),
        set(&[dnat("10.244.2.3:8080", true)])
    );
    for dst in ["127.0.0.1", "192.168.1.11", "10.96.0.10"] {
        assert_eq!(
            verdicts(&r, &packet(NODE_IP, dst, 30080, ArrivesOn::Local)),
            set(&["Accept".into()]),
            "{dst}"
        );
    }
    let kinds: Vec<(IpAddr, FrontEndKind)> =
        r.front_ends.iter().map(|(k, f)| (k.ip, f.kind)).collect();
    assert_eq!(
        kinds,
        vec![
            (ip("10.96.0.10"), FrontEndKind::ClusterIp),
            (ip(NODE_IP), FrontEndKind::NodePort)
        ]
    );
    assert_eq!(
        r.node_port_addresses,
        BTreeSet::from([ip(NODE_IP), ip(NODE_IP6)])
    );
}

#[test]
fn load_balancer_ingress_and_external_ips() {
    let mut svc = service("web", "LoadBalancer", &["10.96.0.10"]);
    spec(&mut svc).external_ips = Some(vec!["198.51.100.50".into()]);
    svc.status = Some(ServiceStatus {
        load_balancer: Some(LoadBalancerStatus {
            ingress: Some(vec![
                LoadBalancerIngress {
                    ip: Some("198.51.100.1".into()),
                    ..LoadBalancerIngress::default()
                },
                LoadBalancerIngress {
                    ip: Some("198.51.100.2".into()),
                    ip_mode: Some("Proxy".into()),
                    ..LoadBalancerIngress::default()
                },
                LoadBalancerIngress {
                    hostname: Some("lb.example".into()),
                    ..LoadBalancerIngress::default()
                },
            ]),
        }),
        conditions: None,
    });
    let r = rules(
        &[svc],
        &[slice(
            "web-1",
            "web",
            "IPv4",
            8080,
            vec![ep("10.244.2.3", "R", &[])],
        )],
    );
    for (dst, kind) in [
        ("198.51.100.1", FrontEndKind::LoadBalancer),
        ("198.51.100.50", FrontEndKind::ExternalIp),
    ] {
        assert_eq!(
            verdicts(&r, &packet(CLIENT, dst, 80, ArrivesOn::External)),
            set(&[dnat("10.244.2.3:8080", true)]),
            "{dst}"
        );
        let key = crate::model::FrontEndKey::new(ip(dst), Protocol::Tcp, 80);
        assert_eq!(r.front_ends[&key].kind, kind);
    }
    // ipMode Proxy: the load balancer proxies, the node does not claim the address.
    assert_eq!(
        verdicts(&r, &packet(CLIENT, "198.51.100.2", 80, ArrivesOn::External)),
        set(&["Accept".into()])
    );
}

#[test]
fn no_endpoints_rejects_on_every_front_end() {
    let mut svc = service("web", "NodePort", &["10.96.0.10"]);
    spec(&mut svc).external_ips = Some(vec!["198.51.100.50".into()]);
    let r = rules(
        &[svc],
        &[slice(
            "web-1",
            "web",
            "IPv4",
            8080,
            vec![ep("10.244.2.3", "", &[])],
        )],
    );
    for (dst, port) in [("10.96.0.10", 80), (NODE_IP, 30080), ("198.51.100.50", 80)] {
        assert_eq!(
            verdicts(&r, &packet(CLIENT, dst, port, ArrivesOn::External)),
            set(&["Reject".into()]),
            "{dst}"
        );
    }
}

#[test]
fn session_affinity_sticks_until_timeout() {
    let mut svc = service("web", "ClusterIP", &["10.96.0.10"]);
    spec(&mut svc).session_affinity = Some("ClientIP".into());
    spec(&mut svc).session_affinity_config = Some(SessionAffinityConfig {
        client_ip: Some(ClientIPConfig {
            timeout_seconds: Some(60),
        }),
    });
    let eps = vec![
        ep("10.244.2.3", "R", &[]),
        ep("10.244.2.4", "R", &[]),
        ep("10.244.2.5", "R", &[]),
    ];
    let r = rules(&[svc.clone()], &[slice("web-1", "web", "IPv4", 8080, eps)]);
    let p = packet(POD, "10.96.0.10", 80, ArrivesOn::FromPod);
    let mut env = TraceEnv {
        random: 1,
        ..TraceEnv::default()
    };
    let first = trace(&r, &p, &mut env);
    assert_eq!(
        first,
        Verdict::Dnat {
            to: sa("10.244.2.4:8080"),
            masquerade: false
        }
    );
    for (random, now) in [(0, 10), (2, 60), (5, 119)] {
        env.random = random;
        env.now_seconds = now;
        assert_eq!(trace(&r, &p, &mut env), first, "random {random} at {now}s");
    }
    // Another client is not pinned.
    let other = packet("10.244.1.6", "10.96.0.10", 80, ArrivesOn::FromPod);
    env.random = 0;
    assert_eq!(
        trace(&r, &other, &mut env),
        Verdict::Dnat {
            to: sa("10.244.2.3:8080"),
            masquerade: false
        }
    );
    // More than the timeout since the last connection: chosen afresh.
    env.now_seconds = 119 + 61;
    env.random = 2;
    assert_eq!(
        trace(&r, &p, &mut env),
        Verdict::Dnat {
            to: sa("10.244.2.5:8080"),
            masquerade: false
        }
    );

    // Default timeout is 10800 s.
    spec(&mut svc).session_affinity_config = None;
    let r = rules(&[svc], &[]);
    assert!(
        r.front_ends
            .values()
            .all(|f| f.affinity_timeout_seconds == Some(10800))
    );
}

#[test]
fn topology_hints_prefer_our_zone() {
    let mut svc = service("web", "ClusterIP", &["10.96.0.10"]);
    spec(&mut svc).traffic_distribution = Some("PreferClose".into());
    let hinted = vec![
        ep("10.244.2.3", "R", &["zone-a"]),
        ep("10.244.2.4", "R", &["zone-b"]),
    ];
    let r = rules(
        std::slice::from_ref(&svc),
        &[slice("web-1", "web", "IPv4", 8080, hinted)],
    );
    assert_eq!(
        verdicts(&r, &packet(POD, "10.96.0.10", 80, ArrivesOn::FromPod)),
        set(&[dnat("10.244.2.3:8080", false)])
    );
    // One endpoint lacks a hint: hints are ignored.
    let partial = vec![
        ep("10.244.2.3", "R", &["zone-a"]),
        ep("10.244.2.4", "R", &[]),
    ];
    let r = rules(&[svc], &[slice("web-1", "web", "IPv4", 8080, partial)]);
    assert_eq!(
        verdicts(&r, &packet(POD, "10.96.0.10", 80, ArrivesOn::FromPod)).len(),
        2
    );
}

#[test]
fn dual_stack_families_stay_apart() {
    let mut svc = service("web", "NodePort", &["10.96.0.10", "fd00:96::10"]);
    spec(&mut svc).ip_families = Some(vec!["IPv4".into(), "IPv6".into()]);
    let v4 = slice(
        "web-4",
        "web",
        "IPv4",
        8080,
        vec![ep("10.244.2.3", "R", &[])],
    );
    let v6 = slice(
        "web-6",
        "web",
        "IPv6",
        8080,
        vec![ep("fd00:244::3", "R", &[])],
    );
    let r = rules(&[svc], &[v4, v6]);
    assert_eq!(
        verdicts(&r, &packet(POD, "10.96.0.10", 80, ArrivesOn::FromPod)),
        set(&[dnat("10.244.2.3:8080", false)])
    );
    assert_eq!(
        verdicts(
            &r,
            &packet("fd00:244::9", "fd00:96::10", 80, ArrivesOn::FromPod)
        ),
        set(&[dnat("[fd00:244::3]:8080", false)])
    );
    assert_eq!(
        verdicts(
            &r,
            &packet("2001:db8::1", NODE_IP6, 30080, ArrivesOn::External)
        ),
        set(&[dnat("[fd00:244::3]:8080", true)])
    );
    for (key, fe) in &r.front_ends {
        assert!(
            fe.target
                .backends()
                .iter()
                .all(|b| crate::model::IpFamily::of(b.ip) == key.family),
            "{key:?}"
        );
    }
    assert_eq!(r.front_ends.len(), 4);
}

#[test]
fn ignored_services_and_slices() {
    let mut other_proxy = service("other", "ClusterIP", &["10.96.0.11"]);
    other_proxy.metadata.labels = Some(BTreeMap::from([(
        "service.kubernetes.io/service-proxy-name".to_owned(),
        "foo".to_owned(),
    )]));
    let headless = service("headless", "ClusterIP", &["None"]);
    let mut external_name = service("ext", "ExternalName", &[]);
    spec(&mut external_name).external_name = Some("example.com".into());
    let web = service("web", "ClusterIP", &["10.96.0.10"]);
    let mut foreign_slice = slice(
        "web-x",
        "web",
        "IPv4",
        8080,
        vec![ep("10.244.9.9", "R", &[])],
    );
    foreign_slice.metadata.labels.as_mut().unwrap().insert(
        "service.kubernetes.io/service-proxy-name".into(),
        "foo".into(),
    );
    let mut fqdn = slice(
        "web-f",
        "web",
        "FQDN",
        8080,
        vec![ep("example.com", "R", &[])],
    );
    fqdn.address_type = "FQDN".into();
    let mut unlabelled = slice(
        "web-u",
        "web",
        "IPv4",
        8080,
        vec![ep("10.244.9.8", "R", &[])],
    );
    unlabelled.metadata.labels = None;
    let r = rules(
        &[other_proxy, headless, external_name, web],
        &[
            slice(
                "other-1",
                "other",
                "IPv4",
                8080,
                vec![ep("10.244.2.3", "R", &[])],
            ),
            slice(
                "headless-1",
                "headless",
                "IPv4",
                8080,
                vec![ep("10.244.2.4", "R", &[])],
            ),
            slice(
                "web-1",
                "web",
                "IPv4",
                8080,
                vec![ep("10.244.2.5", "R", &[])],
            ),
            foreign_slice,
            fqdn,
            unlabelled,
        ],
    );
    assert_eq!(r.front_ends.len(), 1);
    assert_eq!(
        verdicts(&r, &packet(POD, "10.96.0.11", 80, ArrivesOn::FromPod)),
        set(&["Accept".into()])
    );
    assert_eq!(
        verdicts(&r, &packet(POD, "10.96.0.10", 80, ArrivesOn::FromPod)),
        set(&[dnat("10.244.2.5:8080", false)])
    );
}

#[test]
fn duplicate_endpoints_across_slices_are_kept_once() {
    let svc = service("web", "ClusterIP", &["10.96.0.10"]);
    let a = slice(
        "web-a",
        "web",
        "IPv4",
        8080,
        vec![ep("10.244.2.3", "R", &[]), ep("10.244.2.4", "R", &[])],
    );
    let b = slice(
        "web-b",
        "web",
        "IPv4",
        8080,
        vec![ep("10.244.2.3", "R", &[])],
    );
    let r = rules(&[svc], &[a, b]);
    let fe = r.front_ends.values().next().unwrap();
    assert_eq!(fe.target.backends().len(), 2);
}

#[test]
fn publish_not_ready_addresses_uses_unready_endpoints() {
    let mut svc = service("web", "ClusterIP", &["10.96.0.10"]);
    spec(&mut svc).publish_not_ready_addresses = Some(true);
    let r = rules(
        &[svc],
        &[slice(
            "web-1",
            "web",
            "IPv4",
            8080,
            vec![ep("10.244.2.3", "", &[])],
        )],
    );
    assert_eq!(
        verdicts(&r, &packet(POD, "10.96.0.10", 80, ArrivesOn::FromPod)),
        set(&[dnat("10.244.2.3:8080", false)])
    );
}

#[test]
fn diff_of_one_changed_endpoint_touches_only_that_front_end() {
    let services = [
        service("a", "NodePort", &["10.96.0.10"]),
        service("b", "ClusterIP", &["10.96.0.11"]),
    ];
    let before = [
        slice("a-1", "a", "IPv4", 8080, vec![ep("10.244.2.3", "R", &[])]),
        slice("b-1", "b", "IPv4", 8080, vec![ep("10.244.2.4", "R", &[])]),
    ];
    let mut after = before.clone();
    after[1].endpoints.push(ep("10.244.2.5", "R", &[]));
    let old = rules(&services, &before);
    let new = rules(&services, &after);
    let d = diff(&old, &new);
    assert!(d.added.is_empty() && d.removed.is_empty() && !d.node_globals_changed);
    assert_eq!(d.changed.len(), 1);
    assert_eq!(d.changed[0].key.ip, ip("10.96.0.11"));
    assert_eq!(
        d.changed[0]
            .backends_added
            .iter()
            .map(|b| b.ip)
            .collect::<Vec<_>>(),
        vec![ip("10.244.2.5")]
    );
    assert!(d.changed[0].backends_removed.is_empty());
    assert!(diff(&new, &new).is_empty());

    // Removing Service b removes its front end only; the endpoint removal is reported.
    let gone = rules(&services[..1], &before[..1]);
    let d = diff(&new, &gone);
    assert_eq!(d.removed.len(), 1);
    assert!(d.added.is_empty() && d.changed.is_empty());
    let back = diff(&gone, &new);
    assert_eq!(back.added.len(), 1);
}

#[test]
fn diff_reports_health_check_and_node_address_changes() {
    let mut svc = service("web", "LoadBalancer", &["10.96.0.10"]);
    spec(&mut svc).external_traffic_policy = Some("Local".into());
    spec(&mut svc).health_check_node_port = Some(32000);
    let old = rules(
        std::slice::from_ref(&svc),
        &[slice(
            "web-1",
            "web",
            "IPv4",
            8080,
            vec![ep("10.244.2.3", "R", &[])],
        )],
    );
    let new = rules(
        &[svc],
        &[slice(
            "web-1",
            "web",
            "IPv4",
            8080,
            vec![ep("10.244.1.3", "RL", &[])],
        )],
    );
    let d = diff(&old, &new);
    assert_eq!(d.health_checks_set.len(), 1);
    assert_eq!(d.health_checks_set[0].1.local_endpoints, 1);
    let mut moved = new.clone();
    moved.node_port_addresses.insert(ip("192.168.1.11"));
    assert!(diff(&new, &moved).node_globals_changed);
    assert!(diff(&new, &RuleSet::default()).health_checks_removed == vec![32000]);
}

#[test]
fn conflicting_front_ends_keep_the_first_service() {
    let mut a = service("a", "ClusterIP", &["10.96.0.10"]);
    spec(&mut a).external_ips = Some(vec!["198.51.100.50".into()]);
    let mut b = service("b", "ClusterIP", &["10.96.0.11"]);
    spec(&mut b).external_ips = Some(vec!["198.51.100.50".into()]);
    let input = ProxyInput::from_api(&[a, b], &[], node(), options());
    let mut problems = Vec::new();
    let r = build_rules(&input, &mut problems);
    assert_eq!(problems.len(), 1, "{problems:?}");
    let key = crate::model::FrontEndKey::new(ip("198.51.100.50"), Protocol::Tcp, 80);
    assert_eq!(r.front_ends[&key].service.service.name, "a");
}

#[test]
fn invalid_values_are_reported_and_skipped() {
    let mut svc = service("web", "ClusterIP", &["10.96.0.10"]);
    spec(&mut svc).external_ips = Some(vec!["not-an-ip".into()]);
    let sl = slice(
        "web-1",
        "web",
        "IPv4",
        8080,
        vec![ep("fd00::1", "R", &[]), ep("10.244.2.3", "R", &[])],
    );
    let input = ProxyInput::from_api(&[svc], &[sl], node(), options());
    assert_eq!(input.problems.len(), 2, "{:?}", input.problems);
    let r = build_rules(&input, &mut Vec::new());
    assert_eq!(r.front_ends.len(), 1);
    assert_eq!(
        r.front_ends
            .values()
            .next()
            .unwrap()
            .target
            .backends()
            .len(),
        1
    );
}

#[test]
fn weighted_pick_follows_weights() {
    let mut r = rules(
        &[service("web", "ClusterIP", &["10.96.0.10"])],
        &[slice(
            "web-1",
            "web",
            "IPv4",
            8080,
            vec![ep("10.244.2.3", "R", &[]), ep("10.244.2.4", "R", &[])],
        )],
    );
    let fe = r.front_ends.values_mut().next().unwrap();
    if let crate::model::Target::Backends(b) = &mut fe.target {
        b[0].weight = 3;
    }
    let p = packet(POD, "10.96.0.10", 80, ArrivesOn::FromPod);
    let picks: Vec<Verdict> = (0..4)
        .map(|random| {
            trace(
                &r,
                &p,
                &mut TraceEnv {
                    random,
                    ..TraceEnv::default()
                },
            )
        })
        .collect();
    let to = |s: &str| Verdict::Dnat {
        to: sa(s),
        masquerade: false,
    };
    assert_eq!(
        picks,
        vec![
            to("10.244.2.3:8080"),
            to("10.244.2.3:8080"),
            to("10.244.2.3:8080"),
            to("10.244.2.4:8080")
        ]
    );
}

#[test]
fn cluster_cidr_parsing_is_used_for_pod_detection() {
    let r = RuleSet {
        cluster_cidrs: vec!["10.244.0.0/16".parse::<Cidr>().unwrap()],
        ..RuleSet::default()
    };
    assert!(r.is_pod_source(ip(POD)));
    assert!(!r.is_pod_source(ip(CLIENT)));
}
