//! Real packets through rules programmed over netlink: client netns -> router netns (our nat
//! table) -> backend netns, joined by veth pairs. DNAT through a map, random backend choice with
//! numgen, masquerade, and REJECT for a Service without endpoints.

mod nft_support;

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use kwk_netdp::nft::*;
use nft_support::{TestNs, privileged_tests_enabled, veth};

const T: &str = "kwk";
const F: Family = Family::Ip;
const SERVICE: [u8; 4] = [10, 96, 0, 10];
const NO_ENDPOINTS: [u8; 4] = [10, 96, 0, 11];
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
const ROUTER_BACKEND_SIDE: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 1);
const BACKEND_1: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 2);
const BACKEND_2: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 3);
const MASQ_MARK: u32 = 0x4000;

/// client (10.1.0.2) -- router (10.1.0.1 | 10.2.0.1) -- backend (10.2.0.2, 10.2.0.3).
/// The router's default route points at the backend.
/// The backend has no route back to the client, so only masqueraded flows get answers when
/// `backend_default_route` is false.
struct Topology {
    client: TestNs,
    router: TestNs,
    backend: TestNs,
}

impl Topology {
    fn new(tag: &str, backend_default_route: bool) -> Self {
        let client = TestNs::new(&format!("{tag}-c"));
        let router = TestNs::new(&format!("{tag}-r"));
        let backend = TestNs::new(&format!("{tag}-b"));
        veth(&client, "c0", "10.1.0.2/24", &router, "r0", "10.1.0.1/24");
        veth(&router, "r1", "10.2.0.1/24", &backend, "b0", "10.2.0.2/24");
        backend.ip(&["addr", "add", "10.2.0.3/24", "dev", "b0"]);
        client.ip(&["route", "add", "default", "via", "10.1.0.1"]);
        if backend_default_route {
            backend.ip(&["route", "add", "default", "via", "10.2.0.1"]);
        }
        // Like a node, the router routes Service IPs somewhere (here: towards the backend), so
        // packets reach the forward hook instead of failing the routing lookup.
        router.ip(&["route", "add", "default", "via", "10.2.0.2"]);
        router.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        Self {
            client,
            router,
            backend,
        }
    }

    fn listen(&self, ip: Ipv4Addr, port: u16) -> TcpListener {
        let listener = self
            .backend
            .run(|| TcpListener::bind((ip, port)))
            .expect("bind backend listener");
        listener.set_nonblocking(true).expect("nonblocking");
        listener
    }

    fn connect(&self, ip: [u8; 4], port: u16) -> std::io::Result<TcpStream> {
        let addr = SocketAddr::from((Ipv4Addr::from(ip), port));
        self.client
            .run(|| TcpStream::connect_timeout(&addr, Duration::from_secs(3)))
    }
}

#[allow(
    clippy::disallowed_methods,
    reason = "synchronous test code, no executor"
)]
fn pause() {
    std::thread::sleep(Duration::from_millis(5));
}

/// Accepts one connection within 5 s; returns the client address the backend sees.
fn accept_one(listener: &TcpListener) -> SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match listener.accept() {
            Ok((_, peer)) => return peer,
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => pause(),
            Err(e) => panic!("no connection reached the backend: {e}"),
        }
    }
}

/// Accepts until `total` connections arrived on the listeners (or 5 s passed); counts per
/// listener.
fn accept_counts(listeners: &[&TcpListener], total: usize) -> Vec<usize> {
    let mut counts = vec![0; listeners.len()];
    let deadline = Instant::now() + Duration::from_secs(5);
    while counts.iter().sum::<usize>() < total && Instant::now() < deadline {
        let mut got = false;
        for (listener, count) in listeners.iter().zip(&mut counts) {
            if listener.accept().is_ok() {
                *count += 1;
                got = true;
            }
        }
        if !got {
            pause();
        }
    }
    counts
}

fn service_key(ip: [u8; 4], port: u16) -> [Datum; 3] {
    [
        Datum::Ipv4(Ipv4Addr::from(ip)),
        Datum::Proto(6),
        Datum::Port(port),
    ]
}

fn key3() -> Vec<KeyType> {
    vec![KeyType::Ipv4Addr, KeyType::InetProto, KeyType::InetService]
}

/// The table every test starts from: a nat prerouting chain dispatching through the
/// `services` verdict map, a postrouting chain masquerading marked packets, and a filter
/// forward chain rejecting Services without endpoints.
fn base_ruleset() -> Batch {
    let mut b = Batch::new();
    b.add_table(F, T)
        .add_chain(
            F,
            T,
            &Chain::base(
                "nat-prerouting",
                ChainType::Nat,
                Hook::Prerouting,
                priority::DSTNAT,
                Policy::Accept,
            ),
        )
        .add_chain(
            F,
            T,
            &Chain::base(
                "nat-postrouting",
                ChainType::Nat,
                Hook::Postrouting,
                priority::SRCNAT,
                Policy::Accept,
            ),
        )
        .add_chain(
            F,
            T,
            &Chain::base(
                "filter-forward",
                ChainType::Filter,
                Hook::Forward,
                priority::FILTER,
                Policy::Accept,
            ),
        )
        .add_chain(F, T, &Chain::regular("reject-chain"))
        .add_set(F, T, &SetSpec::verdict_map("services", key3()))
        .add_set(F, T, &SetSpec::verdict_map("no-endpoint-services", key3()))
        .add_elements(
            F,
            T,
            "no-endpoint-services",
            &[Element::verdict(
                &service_key(NO_ENDPOINTS, 80),
                Verdict::Goto("reject-chain".into()),
            )],
        )
        .add_rule(F, T, "reject-chain", &[Expr::Reject(Reject::TcpReset)]);
    let mut dispatch = load_daddr_proto_dport().to_vec();
    dispatch.push(Expr::vmap("services", Reg::R0));
    b.add_rule(F, T, "nat-prerouting", &dispatch);
    let mut check = load_daddr_proto_dport().to_vec();
    check.push(Expr::vmap("no-endpoint-services", Reg::R0));
    b.add_rule(F, T, "filter-forward", &check);
    let mut masq = match_mark(MASQ_MARK, MASQ_MARK).to_vec();
    masq.push(Expr::Masquerade(NatFlags {
        fully_random: true,
        ..NatFlags::default()
    }));
    b.add_rule(F, T, "nat-postrouting", &masq);
    b
}

/// An endpoint chain: optionally mark for masquerade, then DNAT to `ip:port` from immediates.
fn endpoint_chain(b: &mut Batch, name: &str, ip: Ipv4Addr, port: u16, masquerade: bool) {
    b.add_chain(F, T, &Chain::regular(name));
    let mut exprs = Vec::new();
    if masquerade {
        exprs.extend(set_mark_bits(MASQ_MARK));
    }
    exprs.extend([
        Expr::load(Reg::R0, &[Datum::Ipv4(ip)]),
        Expr::load(Reg::R1, &[Datum::Port(port)]),
        Expr::Nat {
            kind: NatKind::Dnat,
            family: Family::Ip,
            addr: Some(Reg::R0),
            port: Some(Reg::R1),
            flags: NatFlags::default(),
        },
    ]);
    b.add_rule(F, T, name, &exprs);
}

#[test]
fn dnat_map_sends_service_traffic_to_the_backend_and_no_endpoints_rejects() {
    if !privileged_tests_enabled() {
        return;
    }
    let topo = Topology::new("dnat", true);
    let listener = topo.listen(BACKEND_1, 8080);
    let nft = topo.router.nft();
    let mut b = base_ruleset();
    b.add_chain(F, T, &Chain::regular("svc-web"))
        .add_set(
            F,
            T,
            &SetSpec::data_map(
                "dnat",
                key3(),
                vec![KeyType::Ipv4Addr, KeyType::InetService],
            ),
        )
        .add_set(
            F,
            T,
            &SetSpec::set("affinity", vec![KeyType::Ipv4Addr])
                .with_flags(SetFlags {
                    dynamic: true,
                    ..SetFlags::default()
                })
                .with_timeout(Duration::from_secs(10800)),
        )
        .add_elements(
            F,
            T,
            "dnat",
            &[Element::value(
                &service_key(SERVICE, 80),
                &[Datum::Ipv4(BACKEND_1), Datum::Port(8080)],
            )],
        )
        .add_elements(
            F,
            T,
            "services",
            &[Element::verdict(
                &service_key(SERVICE, 80),
                Verdict::Goto("svc-web".into()),
            )],
        );
    let mut dnat = load_daddr_proto_dport().to_vec();
    dnat.extend([
        // ClientIP affinity bookkeeping: remember the client for 60 s.
        Expr::ip_saddr(Reg::R4),
        Expr::Dynset {
            set: "affinity".into(),
            op: DynsetOp::Update,
            sreg_key: Reg::R4,
            timeout: Some(Duration::from_secs(60)),
        },
        Expr::map("dnat", Reg::R0, Reg::R0),
        Expr::Nat {
            kind: NatKind::Dnat,
            family: Family::Ip,
            addr: Some(Reg::R0),
            port: Some(Reg::R1),
            flags: NatFlags::default(),
        },
    ]);
    b.add_rule(F, T, "svc-web", &dnat);
    nft.apply(&b).expect("apply");

    let _stream = topo
        .connect(SERVICE, 80)
        .expect("connect to the service IP");
    let peer = accept_one(&listener);
    assert_eq!(
        peer.ip(),
        CLIENT,
        "no masquerade: the backend sees the client"
    );
    let affinity = nft.list_elements(F, T, "affinity").expect("list affinity");
    assert_eq!(affinity.len(), 1, "{affinity:?}");
    assert_eq!(affinity[0].key, encode_value(&[Datum::Ipv4(CLIENT)]));
    assert_eq!(affinity[0].timeout, Some(Duration::from_secs(60)));
    assert!(
        affinity[0]
            .expires
            .is_some_and(|e| e <= Duration::from_secs(60))
    );

    let started = Instant::now();
    let err = topo
        .connect(NO_ENDPOINTS, 80)
        .expect_err("no endpoints must be rejected");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "rejected, not timed out"
    );

    // Removing the map element stops the forwarding (the dispatch element still matches and
    // the lookup misses: the packet goes on unchanged to an address nobody owns).
    let mut b = Batch::new();
    b.delete_elements(F, T, "services", &[Element::key(&service_key(SERVICE, 80))]);
    nft.apply(&b).expect("delete element");
    assert!(topo.connect(SERVICE, 80).is_err());
}

#[test]
fn numgen_spreads_connections_over_two_backends() {
    if !privileged_tests_enabled() {
        return;
    }
    let topo = Topology::new("numgen", true);
    let l1 = topo.listen(BACKEND_1, 8080);
    let l2 = topo.listen(BACKEND_2, 8080);
    let nft = topo.router.nft();
    let mut b = base_ruleset();
    endpoint_chain(&mut b, "ep-1", BACKEND_1, 8080, false);
    endpoint_chain(&mut b, "ep-2", BACKEND_2, 8080, false);
    // As kube-proxy does: an anonymous verdict map bound to the service chain's rule.
    b.add_chain(F, T, &Chain::regular("svc-web"));
    let endpoints = b.add_anonymous_set(
        F,
        T,
        vec![KeyType::Integer32],
        Some(MapType::Verdict),
        &[
            Element::verdict(&[Datum::U32(0)], Verdict::Goto("ep-1".into())),
            Element::verdict(&[Datum::U32(1)], Verdict::Goto("ep-2".into())),
        ],
    );
    b.add_rule(
        F,
        T,
        "svc-web",
        &[
            Expr::Numgen {
                kind: NumgenKind::Random,
                modulus: 2,
                offset: 0,
                dreg: Reg::R0,
            },
            Expr::anonymous_vmap(&endpoints, Reg::R0),
        ],
    )
    .add_elements(
        F,
        T,
        "services",
        &[Element::verdict(
            &service_key(SERVICE, 80),
            Verdict::Goto("svc-web".into()),
        )],
    );
    nft.apply(&b).expect("apply");
    let text = topo.router.nft_text();
    assert!(
        text.contains("numgen random mod 2 vmap { 0 : goto ep-1, 1 : goto ep-2 }"),
        "{text}"
    );

    let connections = 40;
    let mut streams = Vec::new();
    for _ in 0..connections {
        streams.push(topo.connect(SERVICE, 80).expect("connect"));
    }
    let counts = accept_counts(&[&l1, &l2], connections);
    let (n1, n2) = (counts[0], counts[1]);
    eprintln!("backend 1: {n1}, backend 2: {n2}");
    assert_eq!(n1 + n2, connections);
    // Each side gets at least 5 of 40 except with probability < 1e-6.
    assert!(n1 >= 5 && n2 >= 5, "uneven spread {n1}/{n2}");
}

#[test]
fn masquerade_shows_the_router_address_at_the_backend() {
    if !privileged_tests_enabled() {
        return;
    }
    // No route back to the client: only masqueraded connections can complete.
    let topo = Topology::new("masq", false);
    let listener = topo.listen(BACKEND_1, 8080);
    let nft = topo.router.nft();
    let mut b = base_ruleset();
    endpoint_chain(&mut b, "ep-1", BACKEND_1, 8080, true);
    b.add_elements(
        F,
        T,
        "services",
        &[Element::verdict(
            &service_key(SERVICE, 80),
            Verdict::Goto("ep-1".into()),
        )],
    );
    nft.apply(&b).expect("apply");

    let _stream = topo
        .connect(SERVICE, 80)
        .expect("connect through masquerade");
    let peer = accept_one(&listener);
    assert_eq!(
        peer.ip(),
        ROUTER_BACKEND_SIDE,
        "masqueraded to the router's address"
    );
}

#[test]
fn ipv6_dnat_map_sends_service_traffic_to_the_backend() {
    if !privileged_tests_enabled() {
        return;
    }
    let client = TestNs::new("v6-c");
    let router = TestNs::new("v6-r");
    let backend = TestNs::new("v6-b");
    client.ip(&[
        "link",
        "add",
        "c0",
        "type",
        "veth",
        "peer",
        "name",
        "r0",
        "netns",
        &router.name,
    ]);
    router.ip(&[
        "link",
        "add",
        "r1",
        "type",
        "veth",
        "peer",
        "name",
        "b0",
        "netns",
        &backend.name,
    ]);
    for (ns, dev, addr) in [
        (&client, "c0", "fd00:1::2/64"),
        (&router, "r0", "fd00:1::1/64"),
        (&router, "r1", "fd00:2::1/64"),
        (&backend, "b0", "fd00:2::2/64"),
    ] {
        ns.ip(&["addr", "add", addr, "dev", dev, "nodad"]);
        ns.ip(&["link", "set", dev, "up"]);
    }
    client.ip(&["-6", "route", "add", "default", "via", "fd00:1::1"]);
    backend.ip(&["-6", "route", "add", "default", "via", "fd00:2::1"]);
    router.exec(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);

    let backend_ip: std::net::Ipv6Addr = "fd00:2::2".parse().expect("ipv6");
    let service_ip: std::net::Ipv6Addr = "fd00:96::10".parse().expect("ipv6");
    let listener = backend
        .run(|| TcpListener::bind((backend_ip, 8080)))
        .expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");

    let nft = router.nft();
    let key6 = vec![KeyType::Ipv6Addr, KeyType::InetProto, KeyType::InetService];
    let mut b = Batch::new();
    b.add_table(Family::Ip6, T)
        .add_chain(
            Family::Ip6,
            T,
            &Chain::base(
                "nat-prerouting",
                ChainType::Nat,
                Hook::Prerouting,
                priority::DSTNAT,
                Policy::Accept,
            ),
        )
        .add_set(
            Family::Ip6,
            T,
            &SetSpec::data_map("dnat6", key6, vec![KeyType::Ipv6Addr, KeyType::InetService]),
        )
        .add_elements(
            Family::Ip6,
            T,
            "dnat6",
            &[Element::value(
                &[Datum::Ipv6(service_ip), Datum::Proto(6), Datum::Port(80)],
                &[Datum::Ipv6(backend_ip), Datum::Port(8080)],
            )],
        )
        .add_rule(
            Family::Ip6,
            T,
            "nat-prerouting",
            &[
                Expr::ip6_daddr(Reg::R0),
                Expr::meta(MetaKey::L4proto, Reg::R4),
                Expr::th_dport(Reg(5)),
                Expr::map("dnat6", Reg::R0, Reg::R0),
                Expr::Nat {
                    kind: NatKind::Dnat,
                    family: Family::Ip6,
                    addr: Some(Reg::R0),
                    port: Some(Reg::R4),
                    flags: NatFlags::default(),
                },
            ],
        );
    nft.apply(&b).expect("apply");

    let addr = SocketAddr::from((service_ip, 80));
    let _stream = client
        .run(|| TcpStream::connect_timeout(&addr, Duration::from_secs(3)))
        .expect("connect to the IPv6 service");
    let peer = accept_one(&listener);
    assert_eq!(
        peer.ip(),
        "fd00:1::2".parse::<std::net::IpAddr>().expect("ip")
    );
}
