//! The IPVS mode against this kernel, minus IPVS itself (this kernel has no `ip_vs`; the VM
//! tier covers that in `tests/tests/vm_ipvs.rs`): [`IpvsDataplane`] with the real rtnetlink and
//! nf_tables sockets of a throwaway network namespace and an in-memory IPVS. The dummy
//! `kube-ipvs0` is created down and holds exactly the Service addresses (with their local
//! routes), the `ip kwk-ipvs` table is accepted by the kernel, full and incremental syncs list
//! back the same elements, a no-endpoint Service's connections are refused even with a
//! listener behind the address, and cleanup removes the interface and the table.
//!
//! This kernel has no `dummy` link type either (EOPNOTSUPP), so the test creates `kube-ipvs0`
//! as a (down) bridge first and the dataplane adopts it by name; creating the dummy is
//! covered by the VM test.

mod nft_support;

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use kwk_netdp::dataplane::Dataplane;
use kwk_netdp::ipvs::filter::{FAMILY, SET_HAIRPIN, SET_MASQ_OFF_CLUSTER, SET_REJECT, TABLE};
use kwk_netdp::ipvs::{IpvsDataplane, IpvsDataplaneOptions, MemoryIpvs, RtnlServiceAddresses};
use kwk_netdp::model::{
    Backend, FrontEnd, FrontEndKey, FrontEndKind, Masquerade, Protocol, RuleSet, ServiceName,
    ServicePortName, Target, diff,
};
use kwk_netdp::nft::{NftApi, NftSocket};
use nft_support::{TestNs, privileged_tests_enabled, veth};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn add(rules: &mut RuleSet, addr: &str, port: u16, kind: FrontEndKind, backends: &[&str]) {
    let target = if backends.is_empty() {
        Target::Reject
    } else {
        Target::Backends(
            backends
                .iter()
                .map(|b| Backend {
                    ip: ip(b),
                    port: 8080,
                    weight: 1,
                    node_local: false,
                })
                .collect(),
        )
    };
    rules.front_ends.insert(
        FrontEndKey::new(ip(addr), Protocol::Tcp, port),
        FrontEnd {
            service: ServicePortName {
                service: ServiceName::new("ns", addr),
                port: String::new(),
                protocol: Protocol::Tcp,
            },
            kind,
            target,
            masquerade: Masquerade::OffCluster,
            affinity_timeout_seconds: None,
            local_short_circuit: None,
            allowed_sources: None,
        },
    );
}

/// A temporary sysctl tree (the namespace's real `/proc/sys` has no `vs/`) holding the ones
/// the mode writes, at 0.
struct SysctlDir(PathBuf);

impl SysctlDir {
    fn new(tag: &str) -> Self {
        let dir =
            Self(std::env::temp_dir().join(format!("kwkt-ipvs-{tag}-{}", std::process::id())));
        std::fs::create_dir_all(dir.0.join("net/ipv4/vs")).expect("mkdir");
        for name in [
            "net/ipv4/vs/conntrack",
            "net/ipv4/vs/expire_nodest_conn",
            "net/ipv4/vs/expire_quiescent_template",
            "net/ipv4/ip_forward",
        ] {
            std::fs::write(dir.0.join(name), "0").expect("write");
        }
        dir
    }
}

impl Drop for SysctlDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn elements(nft: &NftSocket, set: &str) -> usize {
    nft.list_elements(FAMILY, TABLE, set)
        .expect("list elements")
        .len()
}

#[test]
fn ipvs_mode_programs_the_dummy_interface_and_its_table_in_a_real_namespace() {
    if !privileged_tests_enabled() {
        return;
    }
    let node = TestNs::new("ipvs-node");
    let client = TestNs::new("ipvs-client");
    veth(
        &node,
        "n0",
        "192.168.77.1/24",
        &client,
        "c0",
        "192.168.77.2/24",
    );
    client.ip(&["route", "add", "10.96.0.0/16", "via", "192.168.77.1"]);
    let sysctl = SysctlDir::new("main");

    node.ip(&["link", "add", "kube-ipvs0", "type", "bridge"]);
    let (nft, addresses, nft_probe) = node.run(|| {
        (
            NftSocket::open().expect("nft"),
            RtnlServiceAddresses::open().expect("rtnl"),
            NftSocket::open().expect("nft"),
        )
    });
    let mut dp = IpvsDataplane::new(
        MemoryIpvs::default(),
        nft,
        addresses,
        IpvsDataplaneOptions {
            sysctl_root: sysctl.0.clone(),
            ..IpvsDataplaneOptions::default()
        },
    );
    let mut first = RuleSet {
        cluster_cidrs: vec!["10.244.0.0/16".parse().expect("cidr")],
        ..RuleSet::default()
    };
    add(
        &mut first,
        "10.96.0.10",
        80,
        FrontEndKind::ClusterIp,
        &["10.244.1.2", "10.244.1.3"],
    );
    add(&mut first, "10.96.0.20", 80, FrontEndKind::ClusterIp, &[]);
    add(
        &mut first,
        "192.168.77.1",
        30080,
        FrontEndKind::NodePort,
        &["10.244.1.2"],
    );
    add(
        &mut first,
        "fd00::10",
        80,
        FrontEndKind::ClusterIp,
        &["fd00:244::2"],
    );
    dp.sync(&first, None).expect("full sync");

    let link = node.ip(&["-o", "link", "show", "kube-ipvs0"]);
    assert!(
        link.contains("dummy") || link.contains("kube-ipvs0"),
        "{link}"
    );
    assert!(!link.contains(",UP"), "kube-ipvs0 stays down: {link}");
    let addrs = node.ip(&["-o", "addr", "show", "dev", "kube-ipvs0"]);
    for want in ["10.96.0.10/32", "10.96.0.20/32", "fd00::10/128"] {
        assert!(addrs.contains(want), "{want} missing: {addrs}");
    }
    assert!(
        !addrs.contains("192.168.77.1"),
        "NodePort address not on the dummy: {addrs}"
    );
    let n0 = node.ip(&["-o", "addr", "show", "dev", "n0"]);
    assert!(
        n0.contains("192.168.77.1/24"),
        "other interfaces untouched: {n0}"
    );
    let local = node.ip(&["route", "show", "table", "local"]);
    assert!(
        local.contains("local 10.96.0.20"),
        "a down dummy still routes locally: {local}"
    );
    assert_eq!(elements(&nft_probe, SET_REJECT), 1);
    assert_eq!(
        elements(&nft_probe, SET_MASQ_OFF_CLUSTER),
        3,
        "IPv4 front ends only"
    );
    assert_eq!(elements(&nft_probe, SET_HAIRPIN), 2);
    for name in [
        "net/ipv4/vs/conntrack",
        "net/ipv4/vs/expire_nodest_conn",
        "net/ipv4/vs/expire_quiescent_template",
    ] {
        assert_eq!(sysctl_value(&sysctl, name), "1", "{name}");
    }

    // A listener behind the no-endpoint address: the reject rule answers first.
    let listener = node.run(|| TcpListener::bind("0.0.0.0:80").expect("bind"));
    let refused = client.run(|| {
        TcpStream::connect_timeout(
            &"10.96.0.20:80".parse().expect("addr"),
            Duration::from_secs(3),
        )
    });
    match refused {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}"),
        Ok(_) => panic!(
            "a no-endpoint Service accepted a connection:\n{}",
            node.nft_text()
        ),
    }
    // The control: a Service with endpoints is not rejected (no IPVS here, so the listener
    // behind its address answers).
    client
        .run(|| {
            TcpStream::connect_timeout(
                &"10.96.0.10:80".parse().expect("addr"),
                Duration::from_secs(3),
            )
        })
        .expect("10.96.0.10:80 is not rejected");
    drop(listener);

    // Incremental: the no-endpoint Service gets an endpoint, 10.96.0.10 goes away.
    let mut second = first.clone();
    add(
        &mut second,
        "10.96.0.20",
        80,
        FrontEndKind::ClusterIp,
        &["10.244.1.9"],
    );
    second
        .front_ends
        .remove(&FrontEndKey::new(ip("10.96.0.10"), Protocol::Tcp, 80));
    let change = diff(&first, &second);
    let report = dp.sync(&second, Some(&change)).expect("incremental sync");
    assert!(!report.full && !report.repaired, "{report:?}");
    let addrs = node.ip(&["-o", "addr", "show", "dev", "kube-ipvs0"]);
    assert!(
        !addrs.contains("10.96.0.10/32"),
        "removed Service's address gone: {addrs}"
    );
    assert_eq!(elements(&nft_probe, SET_REJECT), 0);
    assert_eq!(
        elements(&nft_probe, SET_HAIRPIN),
        2,
        "10.244.1.2 (NodePort) and 10.244.1.9"
    );
    let full_text = node.nft_text();
    dp.sync(&second, None).expect("full resync");
    assert_eq!(
        node.nft_text(),
        full_text,
        "a full sync writes what the incremental one left"
    );

    dp.cleanup().expect("cleanup");
    assert!(
        !nft_probe
            .list_tables(FAMILY)
            .expect("tables")
            .iter()
            .any(|t| t == TABLE),
        "table removed"
    );
    let links = node.ip(&["-o", "link", "show"]);
    assert!(!links.contains("kube-ipvs0"), "{links}");
    assert!(links.contains("n0"), "{links}");
    dp.cleanup().expect("cleanup is idempotent");
}

fn sysctl_value(dir: &SysctlDir, name: &str) -> String {
    std::fs::read_to_string(dir.0.join(name))
        .expect("read")
        .trim()
        .to_owned()
}

/// Only new connections to a Service without endpoints are refused: one established before
/// the Service lost its last endpoint (in IPVS, its real server drains at weight 0) keeps
/// carrying data. No IPVS here, so a listener behind the Service address stands in for the
/// real server.
#[test]
fn an_established_connection_outlives_its_services_last_endpoint() {
    if !privileged_tests_enabled() {
        return;
    }
    let node = TestNs::new("ipvs-est-node");
    let client = TestNs::new("ipvs-est-client");
    veth(
        &node,
        "n0",
        "192.168.78.1/24",
        &client,
        "c0",
        "192.168.78.2/24",
    );
    client.ip(&["route", "add", "10.96.0.0/16", "via", "192.168.78.1"]);
    let sysctl = SysctlDir::new("established");
    node.ip(&["link", "add", "kube-ipvs0", "type", "bridge"]);
    let (nft, addresses) = node.run(|| {
        (
            NftSocket::open().expect("nft"),
            RtnlServiceAddresses::open().expect("rtnl"),
        )
    });
    let mut dp = IpvsDataplane::new(
        MemoryIpvs::default(),
        nft,
        addresses,
        IpvsDataplaneOptions {
            sysctl_root: sysctl.0.clone(),
            ..IpvsDataplaneOptions::default()
        },
    );
    let mut with = RuleSet::default();
    add(
        &mut with,
        "10.96.0.30",
        80,
        FrontEndKind::ClusterIp,
        &["10.244.1.2"],
    );
    let mut without = RuleSet::default();
    add(&mut without, "10.96.0.30", 80, FrontEndKind::ClusterIp, &[]);
    dp.sync(&with, None).expect("full sync");

    let listener = node.run(|| TcpListener::bind("0.0.0.0:80").expect("bind"));
    let service = "10.96.0.30:80".parse().expect("addr");
    let connect = || client.run(|| TcpStream::connect_timeout(&service, Duration::from_secs(3)));
    let mut at_client = connect().expect("the Service has an endpoint");
    let (mut at_node, _) = listener.accept().expect("accept");
    for stream in [&at_client, &at_node] {
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
    }
    let exchange = |from: &mut TcpStream, to: &mut TcpStream, what: &[u8]| {
        from.write_all(what)?;
        let mut got = vec![0u8; what.len()];
        to.read_exact(&mut got)?;
        assert_eq!(got, what);
        std::io::Result::Ok(())
    };
    exchange(&mut at_client, &mut at_node, b"before").expect("before");

    let change = diff(&with, &without);
    dp.sync(&without, Some(&change)).expect("incremental sync");
    assert_eq!(
        elements(&node.nft(), SET_REJECT),
        1,
        "now without endpoints"
    );
    match connect() {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}"),
        Ok(_) => panic!("a new connection was accepted:\n{}", node.nft_text()),
    }
    exchange(&mut at_client, &mut at_node, b"ping").unwrap_or_else(|e| {
        panic!(
            "the established connection was cut: {e}\n{}",
            node.nft_text()
        )
    });
    exchange(&mut at_node, &mut at_client, b"pong").expect("and back");
    dp.cleanup().expect("cleanup");
}
