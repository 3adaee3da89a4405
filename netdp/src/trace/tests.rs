//! Behaviour of the model, asserted by tracing packets: API objects → `ProxyInput` →
//! `RuleSet` → `trace`.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::{EndpointPort, EndpointSlice};

use super::*;
use crate::model::{Cidr, FrontEndKind, ProxyInput, ProxyOptions, RuleSet, build_rules, diff};
pub(super) use crate::testkit::*;

mod inputs;
mod policies;

pub(super) fn rules_with(
    services: &[Service],
    slices: &[EndpointSlice],
    options: ProxyOptions,
) -> RuleSet {
    let input = ProxyInput::from_api(services, slices, node(), options);
    assert!(input.problems.is_empty(), "{:?}", input.problems);
    let mut problems = Vec::new();
    let rules = build_rules(&input, &mut problems);
    assert!(problems.is_empty(), "{problems:?}");
    rules
}

pub(super) fn rules(services: &[Service], slices: &[EndpointSlice]) -> RuleSet {
    rules_with(services, slices, options())
}

pub(super) fn packet(src: &str, dst: &str, dport: u16, arrives_on: ArrivesOn) -> Packet {
    Packet {
        src: ip(src),
        dst: ip(dst),
        proto: Protocol::Tcp,
        dport,
        arrives_on,
    }
}

pub(super) const POD: &str = "10.244.1.5";
pub(super) const CLIENT: &str = "203.0.113.7";

/// Every verdict over a range of random picks.
pub(super) fn verdicts(rules: &RuleSet, p: &Packet) -> BTreeSet<String> {
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

pub(super) fn dnat(to: &str, masquerade: bool) -> String {
    format!(
        "{:?}",
        Verdict::Dnat {
            to: sa(to),
            masquerade
        }
    )
}

pub(super) fn set(items: &[String]) -> BTreeSet<String> {
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
