//! Real conntrack entries, deleted over ctnetlink. Client netns -> router netns (a DNAT rule
//! made with `nft`) -> backend netns, joined by veth pairs; the router's conntrack table is
//! what the cleanup works on. `conntrack -L` cross-checks our own listing.

mod nft_support;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kwk_netdp::conntrack::{Conntrack, ConntrackApi, Flow, FlowFilter, ReplySource, stale_flows};
use kwk_netdp::model::{
    Backend, FrontEnd, FrontEndKey, FrontEndKind, IpFamily, Masquerade, Protocol, RuleSet,
    ServiceName, ServicePortName, Target, diff,
};
use nft_support::{TestNs, privileged_tests_enabled, veth};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const VIP_OTHER: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 11);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
const EP_OLD: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 2);
const EP_NEW: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 3);

struct Topology {
    client: TestNs,
    router: TestNs,
    backend: TestNs,
}

impl Topology {
    fn new(tag: &str) -> Self {
        let client = TestNs::new(&format!("ct{tag}-c"));
        let router = TestNs::new(&format!("ct{tag}-r"));
        let backend = TestNs::new(&format!("ct{tag}-b"));
        veth(&client, "c0", "10.1.0.2/24", &router, "r0", "10.1.0.1/24");
        veth(&router, "r1", "10.2.0.1/24", &backend, "b0", "10.2.0.2/24");
        backend.ip(&["addr", "add", "10.2.0.3/24", "dev", "b0"]);
        client.ip(&["route", "add", "default", "via", "10.1.0.1"]);
        backend.ip(&["route", "add", "default", "via", "10.2.0.1"]);
        router.ip(&["route", "add", "default", "via", "10.2.0.2"]);
        router.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        router.exec(&["nft", "add", "table", "ip", "kwk"]);
        router.exec(&[
            "nft",
            "add chain ip kwk pre { type nat hook prerouting priority -100 ; }",
        ]);
        // Conntrack runs in a namespace once an expression needs it (the DNAT rules do, but a
        // Service without endpoints has none): a `ct state` rule, as a proxy's filter has.
        router.exec(&[
            "nft",
            "add chain ip kwk forw { type filter hook forward priority 0 ; }",
        ]);
        router.exec(&["nft", "add rule ip kwk forw ct state new counter"]);
        Self {
            client,
            router,
            backend,
        }
    }

    /// Replaces the DNAT rules: `vip:53/udp` -> `backend:5353` for each pair.
    fn dnat(&self, rules: &[(Ipv4Addr, &str)]) {
        self.router
            .exec(&["nft", "flush", "chain", "ip", "kwk", "pre"]);
        for (vip, to) in rules {
            let rule = format!("add rule ip kwk pre ip daddr {vip} udp dport 53 dnat to {to}");
            self.router.exec(&["nft", &rule]);
        }
    }

    /// One datagram from `CLIENT:sport` to `vip:53`.
    fn send_from(&self, sport: u16, vip: Ipv4Addr) {
        self.client.run(|| {
            let s = UdpSocket::bind((CLIENT, sport)).expect("bind client");
            s.send_to(b"x", (vip, 53)).expect("send");
        });
    }

    fn conntrack(&self) -> Conntrack {
        self.router.run(Conntrack::open).expect("open ctnetlink")
    }

    /// `conntrack -L -p udp` in the router: one line per entry.
    fn conntrack_cli(&self) -> Vec<String> {
        let out = self.router.exec(&["conntrack", "-L", "-p", "udp"]);
        out.lines().map(str::to_owned).collect()
    }
}

fn v4(ip: Ipv4Addr) -> IpAddr {
    IpAddr::V4(ip)
}

/// Flows to `vip` answered by `reply_src`, as our client lists them.
fn count(flows: &[Flow], vip: Ipv4Addr, reply_src: Ipv4Addr) -> usize {
    flows
        .iter()
        .filter(|f| f.protocol == 17 && f.original.dst == v4(vip) && f.reply.src == v4(reply_src))
        .count()
}

#[test]
fn deleting_by_endpoint_removes_exactly_the_matching_udp_flows() {
    if !privileged_tests_enabled() {
        return;
    }
    let t = Topology::new("del");
    // Two source ports per (Service, endpoint): flows VIP->OLD, VIP->NEW, OTHER->OLD.
    t.dnat(&[(VIP, "10.2.0.2:5353"), (VIP_OTHER, "10.2.0.2:5353")]);
    t.send_from(41001, VIP);
    t.send_from(41002, VIP);
    t.send_from(41003, VIP_OTHER);
    t.dnat(&[(VIP, "10.2.0.3:5353")]);
    t.send_from(41004, VIP);
    t.send_from(41005, VIP);

    let ct = t.conntrack();
    let before = ct.list(IpFamily::V4).expect("list");
    assert_eq!(count(&before, VIP, EP_OLD), 2, "{before:?}");
    assert_eq!(count(&before, VIP, EP_NEW), 2, "{before:?}");
    assert_eq!(count(&before, VIP_OTHER, EP_OLD), 1, "{before:?}");
    let cli = t.conntrack_cli();
    assert_eq!(
        cli.len(),
        5,
        "conntrack -L agrees on 5 UDP entries: {cli:?}"
    );
    // The kernel filters dumps: by front end, and by protocol alone.
    let to_vip = ct
        .list_kernel_filtered(IpFamily::V4, 17, Some((v4(VIP), 53)))
        .expect("filtered dump");
    assert_eq!(to_vip.len(), 4, "{to_vip:?}");
    assert!(to_vip.iter().all(|f| f.original.dst == v4(VIP)));
    let udp = ct
        .list_kernel_filtered(IpFamily::V4, 17, None)
        .expect("udp");
    assert_eq!(udp.len(), 5);
    let tcp = ct.list_kernel_filtered(IpFamily::V4, 6, None).expect("tcp");
    assert!(tcp.is_empty(), "{tcp:?}");

    let filter = FlowFilter {
        family: IpFamily::V4,
        protocol: Protocol::Udp,
        orig_dst: v4(VIP),
        orig_dst_port: 53,
        reply_src: ReplySource::Is(v4(EP_OLD)),
    };
    assert_eq!(ct.delete(std::slice::from_ref(&filter)).expect("delete"), 2);

    let after = ct.list(IpFamily::V4).expect("list");
    assert_eq!(count(&after, VIP, EP_OLD), 0, "{after:?}");
    assert_eq!(count(&after, VIP, EP_NEW), 2, "{after:?}");
    assert_eq!(count(&after, VIP_OTHER, EP_OLD), 1, "{after:?}");
    let cli = t.conntrack_cli();
    assert_eq!(cli.len(), 3, "{cli:?}");
    assert!(
        !cli.iter()
            .any(|l| l.contains("dst=10.96.0.10") && l.contains("src=10.2.0.2")),
        "{cli:?}"
    );
    // Nothing left to match: a second run deletes nothing.
    assert_eq!(ct.delete(&[filter]).expect("delete again"), 0);

    // "Not answered by a serving endpoint": with EP_NEW serving, nothing to VIP is stale;
    // with nothing serving, both remaining VIP flows are.
    let serving = |ips: &[Ipv4Addr]| FlowFilter {
        family: IpFamily::V4,
        protocol: Protocol::Udp,
        orig_dst: v4(VIP),
        orig_dst_port: 53,
        reply_src: ReplySource::NotIn(ips.iter().map(|i| v4(*i)).collect::<BTreeSet<_>>()),
    };
    assert_eq!(ct.delete(&[serving(&[EP_NEW])]).expect("delete"), 0);
    assert_eq!(ct.delete(&[serving(&[])]).expect("delete"), 2);
    assert_eq!(t.conntrack_cli().len(), 1);
    drop(t.backend);
}

/// Counts datagrams arriving at one backend address.
fn start_server(ns: &TestNs, ip: Ipv4Addr, stop: &Arc<AtomicBool>) -> Arc<AtomicUsize> {
    let socket = ns
        .run(|| UdpSocket::bind((ip, 5353)))
        .expect("bind backend server");
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let received = Arc::new(AtomicUsize::new(0));
    let (count, stop) = (received.clone(), stop.clone());
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while !stop.load(Ordering::Relaxed) {
            if socket.recv(&mut buf).is_ok() {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    received
}

fn front_end(backend: Ipv4Addr) -> (FrontEndKey, FrontEnd) {
    let key = FrontEndKey::new(v4(VIP), Protocol::Udp, 53);
    let fe = FrontEnd {
        service: ServicePortName {
            service: ServiceName::new("default", "dns"),
            port: String::new(),
            protocol: Protocol::Udp,
        },
        kind: FrontEndKind::ClusterIp,
        target: Target::Backends(vec![Backend {
            ip: v4(backend),
            port: 5353,
            weight: 1,
            node_local: false,
        }]),
        masquerade: Masquerade::Never,
        affinity_timeout_seconds: None,
        local_short_circuit: None,
        allowed_sources: None,
    };
    (key, fe)
}

fn rules_with(backend: Ipv4Addr) -> RuleSet {
    let mut r = RuleSet::default();
    let (k, fe) = front_end(backend);
    r.front_ends.insert(k, fe);
    r
}

#[allow(
    clippy::disallowed_methods,
    reason = "synchronous test code, no executor"
)]
fn sleep(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

#[test]
fn a_udp_client_follows_a_replaced_endpoint_only_after_the_cleanup() {
    if !privileged_tests_enabled() {
        return;
    }
    let t = Topology::new("rep");
    let stop = Arc::new(AtomicBool::new(false));
    let old = start_server(&t.backend, EP_OLD, &stop);
    let new = start_server(&t.backend, EP_NEW, &stop);
    t.dnat(&[(VIP, "10.2.0.2:5353")]);

    // One client socket (one 5-tuple, one conntrack entry) sending every 50 ms.
    let client = t
        .client
        .run(|| UdpSocket::bind((CLIENT, 42000)))
        .expect("bind client");
    let sender_stop = stop.clone();
    let sender = std::thread::spawn(move || {
        while !sender_stop.load(Ordering::Relaxed) {
            let _ = client.send_to(b"ping", SocketAddr::from((VIP, 53)));
            sleep(50);
        }
    });
    let wait_for = |counter: &AtomicUsize, what: &str| {
        let start = Instant::now();
        let base = counter.load(Ordering::Relaxed);
        while counter.load(Ordering::Relaxed) < base + 3 {
            assert!(start.elapsed() < Duration::from_secs(3), "{what}");
            sleep(10);
        }
    };
    wait_for(&old, "the first endpoint never got the client's datagrams");

    // The endpoint is replaced in the rules: the cached flow still goes to the old one.
    let (before, after) = (rules_with(EP_OLD), rules_with(EP_NEW));
    t.dnat(&[(VIP, "10.2.0.3:5353")]);
    let new_before = new.load(Ordering::Relaxed);
    wait_for(&old, "without a cleanup the flow stays on the old endpoint");
    sleep(300);
    assert_eq!(
        new.load(Ordering::Relaxed),
        new_before,
        "the new endpoint got datagrams although the stale flow was not deleted"
    );

    // The planner's filters, applied: the next datagram is NATed afresh, to the new endpoint.
    let filters = stale_flows(&diff(&before, &after));
    assert_eq!(filters.len(), 1, "{filters:?}");
    let deleted = t.conntrack().delete(&filters).expect("delete");
    assert_eq!(deleted, 1);
    wait_for(
        &new,
        "after the cleanup the client's datagrams never reached the new endpoint",
    );
    let old_after = old.load(Ordering::Relaxed);
    sleep(300);
    assert_eq!(
        old.load(Ordering::Relaxed),
        old_after,
        "the old endpoint still gets traffic"
    );

    stop.store(true, Ordering::Relaxed);
    sender.join().expect("sender");
}

#[test]
fn ipv6_flows_are_listed_and_deleted() {
    if !privileged_tests_enabled() {
        return;
    }
    // Local traffic in one namespace, DNATed in the output hook.
    let ns = TestNs::new("ct6");
    // (No dummy driver in this kernel: a veth pair with both ends here.)
    ns.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"]);
    ns.ip(&["link", "set", "d1", "up"]);
    ns.ip(&["link", "set", "d0", "up"]);
    ns.ip(&["-6", "addr", "add", "fd00::1/64", "dev", "d0", "nodad"]);
    ns.ip(&["-6", "addr", "add", "fd00::2/64", "dev", "d0", "nodad"]);
    ns.exec(&["nft", "add", "table", "ip6", "kwk"]);
    ns.exec(&[
        "nft",
        "add chain ip6 kwk out { type nat hook output priority -100 ; }",
    ]);
    ns.exec(&[
        "nft",
        "add rule ip6 kwk out ip6 daddr fd00::10 udp dport 53 dnat to [fd00::2]:5353",
    ]);
    let client: Ipv6Addr = "fd00::1".parse().expect("ip");
    let vip: Ipv6Addr = "fd00::10".parse().expect("ip");
    for sport in [43001, 43002] {
        ns.run(|| {
            let s = UdpSocket::bind((client, sport)).expect("bind");
            s.send_to(b"x", (vip, 53)).expect("send");
        });
    }
    let ct = ns.run(Conntrack::open).expect("open");
    let flows = ct.list(IpFamily::V6).expect("list");
    let to_vip: Vec<&Flow> = flows
        .iter()
        .filter(|f| f.original.dst == IpAddr::V6(vip) && f.original.dst_port == 53)
        .collect();
    assert_eq!(to_vip.len(), 2, "{flows:?}");
    assert!(to_vip.iter().all(
        |f| f.reply.src == "fd00::2".parse::<IpAddr>().expect("ip") && f.reply.src_port == 5353
    ));
    assert!(ct.list(IpFamily::V4).expect("list v4").is_empty());
    let filtered = ct
        .list_kernel_filtered(IpFamily::V6, 17, Some((IpAddr::V6(vip), 53)))
        .expect("filtered dump");
    assert_eq!(filtered.len(), 2, "{filtered:?}");
    let filter = FlowFilter {
        family: IpFamily::V6,
        protocol: Protocol::Udp,
        orig_dst: IpAddr::V6(vip),
        orig_dst_port: 53,
        reply_src: ReplySource::Is("fd00::2".parse().expect("ip")),
    };
    assert_eq!(ct.delete(&[filter]).expect("delete"), 2);
    let out = ns.exec(&["conntrack", "-L", "-f", "ipv6"]);
    assert!(!out.contains("fd00::10"), "{out}");
}

#[test]
fn a_flow_cached_while_the_service_had_no_endpoint_is_cleared_when_one_appears() {
    if !privileged_tests_enabled() {
        return;
    }
    let t = Topology::new("emp");
    let stop = Arc::new(AtomicBool::new(false));
    let new = start_server(&t.backend, EP_NEW, &stop);
    // No endpoint: no DNAT. The router forwards the datagrams un-NATed (its default route),
    // so conntrack caches a flow whose reply source is the Service IP itself.
    t.dnat(&[]);
    let client = t
        .client
        .run(|| UdpSocket::bind((CLIENT, 42001)))
        .expect("bind client");
    let sender_stop = stop.clone();
    let sender = std::thread::spawn(move || {
        while !sender_stop.load(Ordering::Relaxed) {
            let _ = client.send_to(b"ping", SocketAddr::from((VIP, 53)));
            sleep(50);
        }
    });
    let ct = t.conntrack();
    let start = Instant::now();
    while count(&ct.list(IpFamily::V4).expect("list"), VIP, VIP) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "no un-NATed flow cached: {:?}",
            t.conntrack_cli()
        );
        sleep(20);
    }

    // An endpoint appears; the cached flow bypasses the new DNAT rule.
    let mut before = rules_with(EP_NEW);
    for fe in before.front_ends.values_mut() {
        fe.target = Target::Reject;
    }
    let after = rules_with(EP_NEW);
    t.dnat(&[(VIP, "10.2.0.3:5353")]);
    sleep(400);
    assert_eq!(
        new.load(Ordering::Relaxed),
        0,
        "the cached flow was NATed anyway"
    );

    let filters = stale_flows(&diff(&before, &after));
    assert_eq!(ct.delete(&filters).expect("delete"), 1, "{filters:?}");
    let start = Instant::now();
    while new.load(Ordering::Relaxed) < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "after the cleanup the datagrams never reached the endpoint"
        );
        sleep(10);
    }
    stop.store(true, Ordering::Relaxed);
    sender.join().expect("sender");
}
