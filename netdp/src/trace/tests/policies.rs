//! Traffic policies, external front ends, affinity, topology and dual-stack, traced.

use std::collections::BTreeSet;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{
    ClientIPConfig, LoadBalancerIngress, LoadBalancerStatus, ServiceStatus, SessionAffinityConfig,
};

use super::*;

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
fn load_balancer_source_ranges_drop_other_sources_before_nat() {
    let mut svc = service("web", "LoadBalancer", &["10.96.0.10"]);
    spec(&mut svc).load_balancer_source_ranges = Some(vec!["203.0.113.0/24".into()]);
    svc.status = Some(ServiceStatus {
        load_balancer: Some(LoadBalancerStatus {
            ingress: Some(vec![LoadBalancerIngress {
                ip: Some("198.51.100.1".into()),
                ..LoadBalancerIngress::default()
            }]),
        }),
        conditions: None,
    });
    let sl = slice(
        "web-1",
        "web",
        "IPv4",
        8080,
        vec![ep("10.244.2.3", "R", &[])],
    );
    let r = rules(std::slice::from_ref(&svc), std::slice::from_ref(&sl));
    let cases = [
        (CLIENT, ArrivesOn::External, dnat("10.244.2.3:8080", true)),
        ("198.18.0.1", ArrivesOn::External, "Drop".into()),
        (POD, ArrivesOn::FromPod, "Drop".into()),
        // Node address not in range: the VIP as a source is not allowed either.
        ("198.51.100.1", ArrivesOn::Local, "Drop".into()),
    ];
    for (src, on, want) in cases {
        assert_eq!(
            verdicts(&r, &packet(src, "198.51.100.1", 80, on)),
            set(&[want]),
            "from {src}"
        );
    }
    // The firewall is for the load balancer address only: NodePort and ClusterIP are open.
    assert_eq!(
        verdicts(
            &r,
            &packet("198.18.0.1", NODE_IP, 30080, ArrivesOn::External)
        ),
        set(&[dnat("10.244.2.3:8080", true)])
    );
    assert_eq!(
        verdicts(&r, &packet(POD, "10.96.0.10", 80, ArrivesOn::FromPod)),
        set(&[dnat("10.244.2.3:8080", false)])
    );
    // A node address in range: the node's own requests, sourced from the VIP, get through.
    spec(&mut svc).load_balancer_source_ranges =
        Some(vec!["203.0.113.0/24".into(), "192.168.1.0/24".into()]);
    let r = rules(&[svc], &[sl]);
    assert_eq!(
        verdicts(
            &r,
            &packet("198.51.100.1", "198.51.100.1", 80, ArrivesOn::Local)
        ),
        set(&[dnat("10.244.2.3:8080", true)])
    );
}
