//! A small cluster in network namespaces for Service traffic tests, independent of the proxy
//! mode: a "node" namespace with a bridge (`10.244.1.1/24`) and pod namespaces on veths, an
//! "external" namespace on a veth to the node (node IP `192.168.77.1`), servers in Rust threads
//! inside the pods (TCP: answers `<name> <peer addr>`; UDP: echoes `<name>`), Service and
//! EndpointSlice objects written as Kubernetes JSON, and `dataplane_for(mode, node)`.
//! Everything is removed on drop, also when a test panics.

#![allow(dead_code, reason = "each test binary uses a subset")]

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::BTreeMap;
use std::sync::Mutex;

use kwk_netdp::dataplane::{Dataplane, DataplaneError, SyncReport};
use kwk_netdp::iptables::{IptablesBackend, IptablesConfig, IptablesDataplane};
use kwk_netdp::model::IpFamily;
use kwk_netdp::model::{NodeState, ProxyInput, ProxyOptions, RuleDiff, RuleSet, build_rules};
use kwk_netdp::nftables::NftablesDataplane;

use crate::nft_support::{TestNs, veth};

/// The proxy modes every scenario runs for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Nftables,
    Iptables,
}

pub(crate) const MODES: &[Mode] = &[Mode::Nftables, Mode::Iptables];

/// A dataplane of `mode` programming the node namespace.
pub(crate) fn dataplane_for(mode: Mode, node: &TestNs) -> Box<dyn Dataplane> {
    match mode {
        Mode::Nftables => Box::new(NftablesDataplane::new(node.nft())),
        Mode::Iptables => Box::new(IptablesUnderTest {
            dataplane: IptablesDataplane::new(IptablesConfig {
                backend: IptablesBackend::Default,
                families: vec![IpFamily::V4, IpFamily::V6],
                netns: Some(format!("/run/netns/{}", node.name).into()),
            })
            .expect("iptables binaries"),
            node: node.name.clone(),
        }),
    }
}

/// Restore-input lines planted per node namespace by [`plant_conflict`] for the iptables mode.
static PLANTED_RESTORE_LINES: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());

/// The iptables dataplane with [`plant_conflict`]'s conflict: the planted line joins every
/// restore run (the kernel refuses it) until a full sync, which (as the nftables mode's full
/// sync flushing the planted element) no longer carries it.
struct IptablesUnderTest {
    dataplane: IptablesDataplane,
    node: String,
}

impl Dataplane for IptablesUnderTest {
    fn mode(&self) -> &'static str {
        self.dataplane.mode()
    }

    fn sync(
        &mut self,
        rules: &RuleSet,
        change: Option<&RuleDiff<'_>>,
    ) -> Result<SyncReport, DataplaneError> {
        let mut planted = PLANTED_RESTORE_LINES.lock().expect("plant registry");
        if change.is_none() {
            planted.remove(&self.node);
        }
        self.dataplane
            .set_fault_injection(planted.get(&self.node).cloned());
        drop(planted);
        self.dataplane.sync(rules, change)
    }

    fn cleanup(&mut self) -> Result<(), DataplaneError> {
        self.dataplane.cleanup()
    }
}

pub(crate) const NODE_NAME: &str = "node-a";
pub(crate) const NODE_IP: &str = "192.168.77.1";
pub(crate) const EXTERNAL_IP: &str = "192.168.77.2";
pub(crate) const GATEWAY: &str = "10.244.1.1";

/// A pod: its namespace and address.
pub(crate) struct Pod {
    pub(crate) ns: TestNs,
    pub(crate) ip: IpAddr,
}

/// node + pods + external client.
pub(crate) struct Cluster {
    pub(crate) node: TestNs,
    pub(crate) external: TestNs,
    pub(crate) pods: Vec<Pod>,
}

impl Cluster {
    /// A node with `pods` pods (`10.244.1.10`, `.11`, ...).
    pub(crate) fn new(tag: &str, pods: usize) -> Self {
        let node = TestNs::new(&format!("{tag}-n"));
        let external = TestNs::new(&format!("{tag}-x"));
        node.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        // Pod-to-pod replies of DNATed flows cross the bridge: let netfilter see them, as a
        // Kubernetes node does (the setting is per network namespace).
        node.exec(&["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"]);
        node.ip(&["link", "add", "br0", "type", "bridge"]);
        node.ip(&["addr", "add", &format!("{GATEWAY}/24"), "dev", "br0"]);
        node.ip(&["link", "set", "br0", "up"]);
        veth(
            &node,
            "ext0",
            &format!("{NODE_IP}/24"),
            &external,
            "eth0",
            &format!("{EXTERNAL_IP}/24"),
        );
        // Service addresses route somewhere (here: to the external side), as on a node.
        node.ip(&["route", "add", "default", "via", EXTERNAL_IP]);
        external.ip(&["route", "add", "default", "via", NODE_IP]);
        let pods = (0..pods)
            .map(|i| {
                let ns = TestNs::new(&format!("{tag}-p{i}"));
                let ip = format!("10.244.1.{}", 10 + i);
                let host_if = format!("veth{i}");
                node.ip(&[
                    "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns",
                    &ns.name,
                ]);
                node.ip(&["link", "set", &host_if, "master", "br0"]);
                node.ip(&[
                    "link",
                    "set",
                    &host_if,
                    "type",
                    "bridge_slave",
                    "hairpin",
                    "on",
                ]);
                node.ip(&["link", "set", &host_if, "up"]);
                ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
                ns.ip(&["link", "set", "eth0", "up"]);
                ns.ip(&["route", "add", "default", "via", GATEWAY]);
                Pod {
                    ns,
                    ip: ip.parse().expect("pod ip"),
                }
            })
            .collect();
        Self {
            node,
            external,
            pods,
        }
    }

    /// The model's input for these objects on this node (cluster CIDR 10.244.0.0/16).
    pub(crate) fn rules(&self, services: &[Service], slices: &[EndpointSlice]) -> RuleSet {
        let node = NodeState {
            name: NODE_NAME.into(),
            ips: vec![NODE_IP.parse().expect("node ip")],
            pod_cidrs: vec!["10.244.1.0/24".parse().expect("cidr")],
            zone: None,
        };
        let options = ProxyOptions {
            cluster_cidrs: vec!["10.244.0.0/16".parse().expect("cidr")],
            masquerade_all: false,
        };
        let input = ProxyInput::from_api(services, slices, node, options);
        assert!(input.problems.is_empty(), "{:?}", input.problems);
        let mut problems = Vec::new();
        let rules = build_rules(&input, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        rules
    }

    /// Gives the bridge `fd00:10:244:1::1/64` and pod `i` `fd00:10:244:1::<10+i>/64` (no
    /// duplicate address detection), with IPv6 forwarding on the node.
    pub(crate) fn enable_ipv6(&self) {
        self.node
            .exec(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
        self.node
            .exec(&["sysctl", "-qw", "net.bridge.bridge-nf-call-ip6tables=1"]);
        self.node
            .ip(&["addr", "add", "fd00:10:244:1::1/64", "dev", "br0", "nodad"]);
        for (i, pod) in self.pods.iter().enumerate() {
            let ip = format!("{}/64", Self::pod_ipv6(i));
            pod.ns.ip(&["addr", "add", &ip, "dev", "eth0", "nodad"]);
            pod.ns
                .ip(&["-6", "route", "add", "default", "via", "fd00:10:244:1::1"]);
        }
        // Link-local addresses run duplicate address detection (~1-2 s); neighbour discovery
        // waits for it. Wait until no address is tentative.
        let namespaces = std::iter::once(&self.node).chain(self.pods.iter().map(|p| &p.ns));
        for ns in namespaces {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while !ns
                .ip(&["-6", "addr", "show", "tentative"])
                .trim()
                .is_empty()
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "IPv6 DAD did not finish"
                );
                pause_long();
            }
        }
    }

    /// Pod `i`'s IPv6 address once [`Self::enable_ipv6`] ran.
    pub(crate) fn pod_ipv6(i: usize) -> IpAddr {
        format!("fd00:10:244:1::{}", 10 + i).parse().expect("ipv6")
    }

    /// Starts TCP and UDP servers named `name` in pod `i` on `port`.
    pub(crate) fn serve(&self, i: usize, port: u16, name: &str) -> Server {
        self.serve_on(i, self.pods[i].ip, port, name)
    }

    /// Starts TCP and UDP servers named `name` in pod `i` on `ip:port`.
    pub(crate) fn serve_on(&self, i: usize, ip: IpAddr, port: u16, name: &str) -> Server {
        let (tcp, udp) = self.pods[i].ns.run(|| {
            (
                TcpListener::bind((ip, port)).expect("bind tcp"),
                UdpSocket::bind((ip, port)).expect("bind udp"),
            )
        });
        Server::start(name, tcp, udp)
    }
}

/// Server threads, stopped on drop.
pub(crate) struct Server {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

#[allow(
    clippy::disallowed_methods,
    reason = "synchronous test servers, no executor"
)]
fn pause() {
    std::thread::sleep(Duration::from_millis(2));
}

#[allow(
    clippy::disallowed_methods,
    reason = "synchronous test setup, no executor"
)]
fn pause_long() {
    std::thread::sleep(Duration::from_millis(50));
}

impl Server {
    fn start(name: &str, tcp: TcpListener, udp: UdpSocket) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        tcp.set_nonblocking(true).expect("nonblocking");
        udp.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let (s1, n1) = (stop.clone(), name.to_owned());
        let t1 = std::thread::spawn(move || {
            while !s1.load(Ordering::Relaxed) {
                match tcp.accept() {
                    Ok((mut conn, peer)) => {
                        let _ = conn.write_all(format!("{n1} {}\n", peer.ip()).as_bytes());
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => pause(),
                    Err(_) => pause(),
                }
            }
        });
        let (s2, n2) = (stop.clone(), name.to_owned());
        let t2 = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !s2.load(Ordering::Relaxed) {
                if let Ok((_, peer)) = udp.recv_from(&mut buf) {
                    let _ = udp.send_to(n2.as_bytes(), peer);
                }
            }
        });
        Self {
            stop,
            threads: vec![t1, t2],
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// One TCP request from inside `ns`: the server's answer `(name, peer ip as it saw it)`.
pub(crate) fn fetch(ns: &TestNs, addr: &str) -> std::io::Result<(String, String)> {
    let addr: SocketAddr = addr.parse().expect("socket address");
    ns.run(|| {
        let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        conn.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut out = String::new();
        conn.read_to_string(&mut out)?;
        let mut parts = out.split_whitespace();
        match (parts.next(), parts.next()) {
            (Some(name), Some(peer)) => Ok((name.to_owned(), peer.to_owned())),
            _ => Err(std::io::Error::other(format!("bad answer {out:?}"))),
        }
    })
}

/// One UDP request from inside `ns`: the server's name.
pub(crate) fn fetch_udp(ns: &TestNs, addr: &str) -> std::io::Result<String> {
    let addr: SocketAddr = addr.parse().expect("socket address");
    ns.run(|| {
        let any: SocketAddr = if addr.is_ipv6() {
            "[::]:0".parse().expect("any")
        } else {
            "0.0.0.0:0".parse().expect("any")
        };
        let socket = UdpSocket::bind(any)?;
        socket.set_read_timeout(Some(Duration::from_secs(2)))?;
        // Connected, so an ICMP port unreachable comes back as ECONNREFUSED.
        socket.connect(addr)?;
        socket.send(b"hi")?;
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
}

/// A Service from its JSON spec (`metadata` filled in, namespace `default`).
pub(crate) fn service(name: &str, spec: serde_json::Value, status: serde_json::Value) -> Service {
    let mut object = serde_json::Map::new();
    object.insert(
        "metadata".into(),
        serde_json::json!({"namespace": "default", "name": name}),
    );
    object.insert("spec".into(), spec);
    object.insert("status".into(), status);
    let object = serde_json::Value::Object(object);
    serde_json::from_value(object).expect("valid Service")
}

/// An EndpointSlice of `service` with ready endpoints `(ip, node)` (one family) on TCP and UDP
/// `port` (named `p` and `u`).
pub(crate) fn slice(service: &str, endpoints: &[(IpAddr, &str)], port: u16) -> EndpointSlice {
    let address_type = if endpoints.first().is_some_and(|(ip, _)| ip.is_ipv6()) {
        "IPv6"
    } else {
        "IPv4"
    };
    let endpoints: Vec<serde_json::Value> = endpoints
        .iter()
        .map(|(ip, node)| {
            serde_json::json!({
                "addresses": [ip.to_string()],
                "conditions": {"ready": true, "serving": true, "terminating": false},
                "nodeName": node,
            })
        })
        .collect();
    serde_json::from_value(serde_json::json!({
        "metadata": {
            "namespace": "default",
            "name": format!("{service}-abc"),
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": address_type,
        "endpoints": endpoints,
        "ports": [
            {"name": "p", "protocol": "TCP", "port": port},
            {"name": "u", "protocol": "UDP", "port": port},
        ],
    }))
    .expect("valid EndpointSlice")
}

/// Plants a kernel object that makes the next sync adding a front end at `ip:port`/TCP fail
/// inside the kernel transaction (so a real batch is refused and must leave nothing behind).
pub(crate) fn plant_conflict(mode: Mode, node: &TestNs, ip: std::net::Ipv4Addr, port: u16) {
    use kwk_netdp::nft::{Batch, Datum, Element, Family, NftApi};
    use kwk_netdp::nftables::layout::{SERVICE_CLASSES, TABLE};
    match mode {
        Mode::Nftables => {
            let key = [Datum::Ipv4(ip), Datum::Proto(6), Datum::Port(port)];
            let mut b = Batch::new();
            b.add_elements(
                Family::Ip,
                TABLE,
                SERVICE_CLASSES,
                &[Element::value(&key, &[Datum::U32(u32::MAX)])],
            );
            node.nft().apply(&b).expect("plant conflicting element");
        }
        Mode::Iptables => {
            // A rule jumping to a chain that does not exist: iptables-restore refuses the run.
            let line = format!(
                "-A KUBE-SERVICES -d {ip}/32 -p tcp -m tcp --dport {port} -j KUBE-PLANTED-MISSING"
            );
            PLANTED_RESTORE_LINES
                .lock()
                .expect("plant registry")
                .insert(node.name.clone(), line);
        }
    }
}
