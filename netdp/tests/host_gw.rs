//! host-gw routing between two "nodes" (network namespaces on one link), each with a pod on
//! its own podCIDR: the routes planned from the Node view and installed over rtnetlink carry
//! pod-to-pod traffic across nodes without NAT (the server sees the client pod's address), are
//! listed back by protocol, and removing them cuts the path.

mod nft_support;

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use kwk_netdp::model::Cidr;
use kwk_netdp::routes::{PeerNode, RouteAction, desired_routes, plan_routes};
use kwk_netdp::rtnl::RtnlSocket;
use nft_support::{TestNs, privileged_tests_enabled, veth};

fn peer(name: &str, ip: &str, cidr: &str) -> PeerNode {
    PeerNode {
        name: name.into(),
        internal_ips: vec![ip.parse().expect("test IP")],
        pod_cidrs: vec![cidr.parse().expect("test CIDR")],
    }
}

/// Installs this node's routes to the others, as kwk-node's reconciler would.
fn reconcile(node: &TestNs, me: &str, own: &str, peers: &[PeerNode]) -> usize {
    let own: Vec<Cidr> = vec![own.parse().expect("test CIDR")];
    node.run(|| {
        let mut rtnl = RtnlSocket::open().expect("rtnetlink socket");
        let desired = desired_routes(me, &own, peers);
        let plan = plan_routes(&desired, &rtnl.host_routes().expect("listing routes"));
        for action in &plan {
            rtnl.apply_route(action).expect("applying a route");
        }
        plan.len()
    })
}

#[test]
fn pods_reach_each_other_across_nodes_without_nat() {
    if !privileged_tests_enabled() {
        return;
    }
    let (node_a, node_b) = (TestNs::new("hgw-na"), TestNs::new("hgw-nb"));
    let (pod_a, pod_b) = (TestNs::new("hgw-pa"), TestNs::new("hgw-pb"));
    veth(
        &node_a,
        "eth0",
        "192.168.90.1/24",
        &node_b,
        "eth0",
        "192.168.90.2/24",
    );
    veth(
        &node_a,
        "pod0",
        "10.244.1.1/24",
        &pod_a,
        "eth0",
        "10.244.1.2/24",
    );
    veth(
        &node_b,
        "pod0",
        "10.244.2.1/24",
        &pod_b,
        "eth0",
        "10.244.2.2/24",
    );
    for node in [&node_a, &node_b] {
        node.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    }
    pod_a.ip(&["route", "add", "default", "via", "10.244.1.1"]);
    pod_b.ip(&["route", "add", "default", "via", "10.244.2.1"]);

    let peers = [
        peer("a", "192.168.90.1", "10.244.1.0/24"),
        peer("b", "192.168.90.2", "10.244.2.0/24"),
    ];
    assert_eq!(reconcile(&node_a, "a", "10.244.1.0/24", &peers), 1);
    assert_eq!(reconcile(&node_b, "b", "10.244.2.0/24", &peers), 1);
    assert_eq!(
        reconcile(&node_a, "a", "10.244.1.0/24", &peers),
        0,
        "in sync: no steps"
    );
    let shown = node_a.ip(&["route", "show", "proto", "0x6b"]);
    assert!(shown.contains("10.244.2.0/24 via 192.168.90.2"), "{shown}");

    let listener = pod_b.run(|| TcpListener::bind("10.244.2.2:0").unwrap());
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut conn, peer) = listener.accept().unwrap();
        conn.write_all(peer.ip().to_string().as_bytes()).unwrap();
    });
    let seen = pod_a.run(|| {
        let mut conn = TcpStream::connect_timeout(
            &format!("10.244.2.2:{port}").parse().unwrap(),
            Duration::from_secs(5),
        )
        .unwrap();
        let mut out = String::new();
        conn.read_to_string(&mut out).unwrap();
        out
    });
    server.join().unwrap();
    assert_eq!(
        seen, "10.244.1.2",
        "the server sees the client pod, not a node"
    );

    // Node b leaves: its route goes, and with it the path.
    assert_eq!(reconcile(&node_a, "a", "10.244.1.0/24", &peers[..1]), 1);
    assert!(
        node_a
            .ip(&["route", "show", "proto", "0x6b"])
            .trim()
            .is_empty()
    );
    let cut = pod_a.run(|| {
        TcpStream::connect_timeout(
            &format!("10.244.2.2:{port}").parse().unwrap(),
            Duration::from_secs(2),
        )
    });
    assert!(cut.is_err(), "still reachable without the route");
    // A route made by someone else is never touched.
    node_a.ip(&["route", "add", "10.244.9.0/24", "via", "192.168.90.2"]);
    let plan = node_a.run(|| {
        let mut rtnl = RtnlSocket::open().unwrap();
        plan_routes(&Default::default(), &rtnl.host_routes().unwrap())
    });
    assert_eq!(plan, Vec::<RouteAction>::new());
}
