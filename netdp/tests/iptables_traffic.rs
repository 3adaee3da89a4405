//! The iptables mode against the kernel, in its own network namespaces: client netns ->
//! router netns (the node: our iptables rules) -> backend netns. Real connections through a
//! ClusterIP and a NodePort, reject without endpoints, an incremental endpoint change, a failed
//! restore that leaves the old rules working, and repair after someone deleted our chains.

mod nft_support;

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kwk_netdp::dataplane::Dataplane;
use kwk_netdp::iptables::{IptablesBackend, IptablesConfig, IptablesDataplane};
use kwk_netdp::model::{IpFamily, NodeState, ProxyInput, ProxyOptions, RuleSet, build_rules};
use nft_support::{TestNs, privileged_tests_enabled, veth};

const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const ROUTER_BACKEND_SIDE: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 1);
const BACKEND_1: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 2);
const BACKEND_2: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 3);

/// client (10.1.0.2) -- router/node (10.1.0.1 | 10.2.0.1) -- backends (10.2.0.2, 10.2.0.3).
struct Topology {
    client: TestNs,
    router: TestNs,
    backend: TestNs,
}

impl Topology {
    fn new(tag: &str) -> Self {
        let client = TestNs::new(&format!("ipt-{tag}-c"));
        let router = TestNs::new(&format!("ipt-{tag}-r"));
        let backend = TestNs::new(&format!("ipt-{tag}-b"));
        veth(&client, "c0", "10.1.0.2/24", &router, "r0", "10.1.0.1/24");
        veth(&router, "r1", "10.2.0.1/24", &backend, "b0", "10.2.0.2/24");
        backend.ip(&["addr", "add", "10.2.0.3/24", "dev", "b0"]);
        client.ip(&["route", "add", "default", "via", "10.1.0.1"]);
        backend.ip(&["route", "add", "default", "via", "10.2.0.1"]);
        // Service IPs are routed somewhere, so they reach the forward hook.
        router.ip(&["route", "add", "default", "via", "10.2.0.2"]);
        router.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        Self {
            client,
            router,
            backend,
        }
    }

    fn dataplane(&self, backend: IptablesBackend) -> IptablesDataplane {
        IptablesDataplane::new(IptablesConfig {
            backend,
            families: vec![IpFamily::V4],
            netns: Some(format!("/run/netns/{}", self.router.name).into()),
        })
        .expect("iptables binaries")
    }

    fn listen(&self, ns: &TestNs, ip: Ipv4Addr, port: u16) -> TcpListener {
        let listener = ns
            .run(|| TcpListener::bind((ip, port)))
            .expect("bind listener");
        listener.set_nonblocking(true).expect("nonblocking");
        listener
    }

    fn connect(&self, ip: Ipv4Addr, port: u16) -> std::io::Result<TcpStream> {
        let addr = SocketAddr::from((ip, port));
        self.client
            .run(|| TcpStream::connect_timeout(&addr, Duration::from_secs(2)))
    }

    fn save(&self, backend: IptablesBackend) -> String {
        let tool = match backend {
            IptablesBackend::Legacy => "iptables-legacy-save",
            IptablesBackend::Nft => "iptables-nft-save",
            IptablesBackend::Default => "iptables-save",
        };
        self.router.exec(&[tool])
    }
}

#[allow(
    clippy::disallowed_methods,
    reason = "synchronous test code, no executor"
)]
fn pause() {
    std::thread::sleep(Duration::from_millis(5));
}

/// Accepts until `total` connections arrived (or 5 s passed); the peers seen per listener.
fn accept_peers(listeners: &[&TcpListener], total: usize) -> Vec<Vec<SocketAddr>> {
    let mut peers = vec![Vec::new(); listeners.len()];
    let deadline = Instant::now() + Duration::from_secs(5);
    while peers.iter().map(Vec::len).sum::<usize>() < total && Instant::now() < deadline {
        let mut got = false;
        for (listener, seen) in listeners.iter().zip(&mut peers) {
            match listener.accept() {
                Ok((_, peer)) => {
                    seen.push(peer);
                    got = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("accept: {e}"),
            }
        }
        if !got {
            pause();
        }
    }
    peers
}

fn service(name: &str, cluster_ip: &str, node_port: Option<i32>) -> Service {
    Service {
        metadata: ObjectMeta {
            namespace: Some("default".into()),
            name: Some(name.into()),
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
            cluster_ip: Some(cluster_ip.into()),
            cluster_ips: Some(vec![cluster_ip.into()]),
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

fn slice(service: &str, backends: &[Ipv4Addr]) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            namespace: Some("default".into()),
            name: Some(format!("{service}-1")),
            labels: Some(BTreeMap::from([(
                "kubernetes.io/service-name".to_owned(),
                service.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".into(),
        endpoints: backends
            .iter()
            .map(|ip| Endpoint {
                addresses: vec![ip.to_string()],
                conditions: Some(EndpointConditions {
                    ready: Some(true),
                    serving: Some(true),
                    terminating: Some(false),
                }),
                node_name: Some("node-b".into()),
                ..Endpoint::default()
            })
            .collect(),
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            protocol: Some("TCP".into()),
            port: Some(8080),
            app_protocol: None,
        }]),
    }
}

/// `web` (10.96.0.10, NodePort 30080) → `web_backends`; `empty` (10.96.0.11, NodePort 30081)
/// without endpoints; `extra` (10.96.0.12) → backend 1 when `with_extra`.
fn rules(web_backends: &[Ipv4Addr], with_extra: bool) -> RuleSet {
    let mut services = vec![
        service("web", "10.96.0.10", Some(30080)),
        service("empty", "10.96.0.11", Some(30081)),
    ];
    let mut slices = vec![slice("web", web_backends), slice("empty", &[])];
    if with_extra {
        services.push(service("extra", "10.96.0.12", None));
        slices.push(slice("extra", &[BACKEND_1]));
    }
    let node = NodeState {
        name: "node-a".into(),
        ips: vec![ROUTER.into(), ROUTER_BACKEND_SIDE.into()],
        pod_cidrs: vec![],
        zone: None,
    };
    let options = ProxyOptions {
        cluster_cidrs: vec!["10.2.0.0/24".parse().expect("cidr")],
        masquerade_all: false,
    };
    let input = ProxyInput::from_api(&services, &slices, node, options);
    assert!(input.problems.is_empty(), "{:?}", input.problems);
    let mut problems = Vec::new();
    let rules = build_rules(&input, &mut problems);
    assert!(problems.is_empty(), "{problems:?}");
    rules
}

fn refused(result: std::io::Result<TcpStream>) -> bool {
    matches!(result, Err(e) if e.kind() == ErrorKind::ConnectionRefused)
}

fn traffic_through_cluster_ip_node_port_and_reject(backend: IptablesBackend, tag: &str) {
    let topo = Topology::new(tag);
    let l1 = topo.listen(&topo.backend, BACKEND_1, 8080);
    let l2 = topo.listen(&topo.backend, BACKEND_2, 8080);
    // Something listens on the empty Service's NodePort: only our REJECT refuses it.
    let _decoy = topo.listen(&topo.router, ROUTER, 30081);
    let mut dp = topo.dataplane(backend);
    let first = rules(&[BACKEND_1, BACKEND_2], false);
    let report = dp.sync(&first, None).expect("full sync");
    assert!(report.full && report.objects > 0, "{report:?}");

    let mut streams = Vec::new();
    for _ in 0..24 {
        streams.push(
            topo.connect(Ipv4Addr::new(10, 96, 0, 10), 80)
                .expect("ClusterIP"),
        );
    }
    let peers = accept_peers(&[&l1, &l2], 24);
    assert!(
        peers.iter().all(|p| !p.is_empty()),
        "both backends chosen: {peers:?}"
    );
    // The client is outside the cluster CIDR: masqueraded to the router's address.
    assert!(
        peers
            .iter()
            .flatten()
            .all(|p| p.ip() == ROUTER_BACKEND_SIDE),
        "{peers:?}"
    );

    streams.push(topo.connect(ROUTER, 30080).expect("NodePort"));
    assert_eq!(accept_peers(&[&l1, &l2], 1).concat().len(), 1);

    assert!(
        refused(topo.connect(Ipv4Addr::new(10, 96, 0, 11), 80)),
        "ClusterIP without endpoints"
    );
    assert!(
        refused(topo.connect(ROUTER, 30081)),
        "NodePort without endpoints"
    );

    // One endpoint goes: an incremental sync, then only backend 1 answers.
    let second = rules(&[BACKEND_1], false);
    let report = dp
        .sync(&second, Some(&kwk_netdp::model::diff(&first, &second)))
        .expect("incremental sync");
    assert!(
        !report.full && report.objects > 0 && report.objects < 12,
        "{report:?}"
    );
    for _ in 0..8 {
        streams.push(
            topo.connect(Ipv4Addr::new(10, 96, 0, 10), 80)
                .expect("ClusterIP"),
        );
    }
    let peers = accept_peers(&[&l1, &l2], 8);
    assert_eq!((peers[0].len(), peers[1].len()), (8, 0));

    // A second full sync changes nothing visible: jumps stay exactly once.
    dp.sync(&second, None).expect("full again");
    let saved = topo.save(backend);
    assert_eq!(
        saved
            .matches(
                "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"
            )
            .count(),
        1,
        "{saved}"
    );
    assert_eq!(
        saved.matches("-j KUBE-PROXY-FIREWALL").count(),
        3,
        "{saved}"
    );

    dp.cleanup().expect("cleanup");
    let saved = topo.save(backend);
    assert!(!saved.contains("KUBE-"), "{saved}");
    assert!(topo.connect(Ipv4Addr::new(10, 96, 0, 10), 80).is_err());
}

#[test]
fn nft_backend_traffic_through_cluster_ip_node_port_and_reject() {
    if !privileged_tests_enabled() {
        return;
    }
    traffic_through_cluster_ip_node_port_and_reject(IptablesBackend::Default, "traffic");
}

#[test]
fn legacy_backend_traffic_through_cluster_ip_node_port_and_reject() {
    if !privileged_tests_enabled() {
        return;
    }
    traffic_through_cluster_ip_node_port_and_reject(IptablesBackend::Legacy, "legacy");
}

#[test]
fn failed_restore_keeps_old_rules_and_next_full_sync_recovers() {
    if !privileged_tests_enabled() {
        return;
    }
    let topo = Topology::new("fail");
    let l1 = topo.listen(&topo.backend, BACKEND_1, 8080);
    let mut dp = topo.dataplane(IptablesBackend::Default);
    let first = rules(&[BACKEND_1], false);
    dp.sync(&first, None).expect("full sync");
    let before = topo.save(IptablesBackend::Default);

    dp.set_fault_injection(Some("-A KUBE-SERVICES -j KUBE-NO-SUCH-CHAIN".into()));
    let second = rules(&[BACKEND_1], true);
    let err = dp
        .sync(&second, Some(&kwk_netdp::model::diff(&first, &second)))
        .expect_err("the injected rule fails the restore");
    assert!(err.to_string().contains("iptables"), "{err}");
    let after = topo.save(IptablesBackend::Default);
    let strip = |s: &str| {
        s.lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        strip(&before),
        strip(&after),
        "the failed run left the tables unchanged"
    );
    let _s1 = topo
        .connect(Ipv4Addr::new(10, 96, 0, 10), 80)
        .expect("old rules still work");
    assert_eq!(accept_peers(&[&l1], 1)[0].len(), 1);
    assert!(
        topo.connect(Ipv4Addr::new(10, 96, 0, 12), 80).is_err(),
        "new Service not there"
    );

    dp.set_fault_injection(None);
    let report = dp.sync(&second, None).expect("full sync recovers");
    assert!(report.full);
    let _s2 = topo
        .connect(Ipv4Addr::new(10, 96, 0, 12), 80)
        .expect("new Service works");
    assert_eq!(accept_peers(&[&l1], 1)[0].len(), 1);
}

#[test]
fn deleted_chains_are_repaired() {
    if !privileged_tests_enabled() {
        return;
    }
    let topo = Topology::new("repair");
    let l1 = topo.listen(&topo.backend, BACKEND_1, 8080);
    let mut dp = topo.dataplane(IptablesBackend::Default);
    let first = rules(&[BACKEND_1], false);
    dp.sync(&first, None).expect("full sync");

    let vandalise = || {
        topo.router
            .exec(&["iptables", "-t", "nat", "-F", "PREROUTING"]);
        topo.router.exec(&["iptables", "-t", "nat", "-F", "OUTPUT"]);
        topo.router
            .exec(&["iptables", "-t", "nat", "-F", "KUBE-SERVICES"]);
        topo.router
            .exec(&["iptables", "-t", "nat", "-X", "KUBE-SERVICES"]);
        assert!(
            topo.connect(Ipv4Addr::new(10, 96, 0, 10), 80).is_err(),
            "rules gone"
        );
    };
    vandalise();
    let report = dp.sync(&first, None).expect("full sync repairs");
    assert!(report.full);
    let _s1 = topo
        .connect(Ipv4Addr::new(10, 96, 0, 10), 80)
        .expect("repaired");
    assert_eq!(accept_peers(&[&l1], 1)[0].len(), 1);

    // An incremental sync that finds KUBE-SERVICES gone repairs with a full sync at once.
    vandalise();
    let second = rules(&[BACKEND_1], true);
    let report = dp
        .sync(&second, Some(&kwk_netdp::model::diff(&first, &second)))
        .expect("incremental sync repairs");
    assert!(report.full && report.repaired, "{report:?}");
    let _s2 = topo
        .connect(Ipv4Addr::new(10, 96, 0, 10), 80)
        .expect("repaired");
    let _s3 = topo
        .connect(Ipv4Addr::new(10, 96, 0, 12), 80)
        .expect("and the change applied");
    assert_eq!(accept_peers(&[&l1], 2)[0].len(), 2);
}

#[test]
fn ipv6_rules_load_through_ip6tables_restore_and_clean_up() {
    if !privileged_tests_enabled() {
        return;
    }
    let ns = TestNs::new("ipt-v6");
    let mut dp = IptablesDataplane::new(IptablesConfig {
        backend: IptablesBackend::Default,
        families: vec![IpFamily::V4, IpFamily::V6],
        netns: Some(format!("/run/netns/{}", ns.name).into()),
    })
    .expect("iptables binaries");
    let mut svc = service("dual", "10.96.0.20", Some(30090));
    let spec = svc.spec.as_mut().expect("spec");
    spec.cluster_ips = Some(vec!["10.96.0.20".into(), "fd00:96::20".into()]);
    spec.ip_families = Some(vec!["IPv4".into(), "IPv6".into()]);
    spec.session_affinity = Some("ClientIP".into());
    let mut v6 = slice("dual", &[]);
    v6.metadata.name = Some("dual-v6".into());
    v6.address_type = "IPv6".into();
    v6.endpoints = slice("dual", &[BACKEND_1]).endpoints;
    v6.endpoints[0].addresses = vec!["fd00:244::2".into()];
    let input = ProxyInput::from_api(
        &[svc],
        &[slice("dual", &[BACKEND_1]), v6],
        NodeState {
            name: "node-a".into(),
            ips: vec![ROUTER.into(), "fd00:1::1".parse().expect("ip")],
            pod_cidrs: vec![],
            zone: None,
        },
        ProxyOptions {
            cluster_cidrs: vec![
                "10.2.0.0/24".parse().expect("cidr"),
                "fd00:244::/64".parse().expect("cidr"),
            ],
            masquerade_all: false,
        },
    );
    assert!(input.problems.is_empty(), "{:?}", input.problems);
    let rules = build_rules(&input, &mut Vec::new());
    dp.sync(&rules, None).expect("dual-stack sync");
    let saved6 = ns.exec(&["ip6tables-save"]);
    assert!(
        saved6.contains("--to-destination [fd00:244::2]:8080"),
        "{saved6}"
    );
    assert!(saved6.contains("-d fd00:96::20/128"), "{saved6}");
    assert!(saved6.contains("--rcheck --seconds 10800"), "{saved6}");
    assert!(saved6.contains("-d fd00:1::1/128 -m comment"), "{saved6}");
    let saved4 = ns.exec(&["iptables-save"]);
    assert!(
        saved4.contains("--to-destination 10.2.0.2:8080"),
        "{saved4}"
    );
    assert!(!saved4.contains("fd00"), "{saved4}");
    dp.cleanup().expect("cleanup");
    assert!(!ns.exec(&["ip6tables-save"]).contains("KUBE-"));
    assert!(!ns.exec(&["iptables-save"]).contains("KUBE-"));
}
