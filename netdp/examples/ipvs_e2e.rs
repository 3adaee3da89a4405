//! The IPVS proxy mode end to end, for the VM tier (`tests/tests/vm_ipvs.rs`; this machine's
//! kernel has no `ip_vs`). Run as root in a throwaway guest after `modprobe ip_vs`: it builds
//! "pods" (network namespaces routed through the guest, which plays the node) with Rust TCP
//! servers answering their name and the peer address they see, programs a RuleSet through
//! [`IpvsDataplane`] (a ClusterIP Service with two backends, a NodePort on the node's address,
//! a Service without endpoints), checks it with real connections from a pod client and an
//! off-cluster client, removes an endpoint with an incremental sync, cleans up, and prints
//! `key=value` facts on stdout. Exit status 1 when a step fails (`error=...`).
//!
//! Topology: pods `kwk-pod1` 10.244.1.2, `kwk-pod2` 10.244.2.2, pod client `kwk-client`
//! 10.244.3.2 (cluster CIDR 10.244.0.0/16), off-cluster client `kwk-ext` 192.168.50.2; each on
//! its own veth pair to the node (`.1` on the node side), default route via the node.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use kwk_netdp::dataplane::Dataplane;
use kwk_netdp::ipvs::{IpvsDataplane, IpvsDataplaneOptions};
use kwk_netdp::model::{
    Backend, FrontEnd, FrontEndKey, FrontEndKind, Masquerade, Protocol, RuleSet, ServiceName,
    ServicePortName, Target, diff,
};
use nix::sched::{CloneFlags, setns};

type Result<T> = std::result::Result<T, String>;

const PODS: [(&str, &str, &str); 4] = [
    ("kwk-pod1", "10.244.1.2/24", "10.244.1.1/24"),
    ("kwk-pod2", "10.244.2.2/24", "10.244.2.1/24"),
    ("kwk-client", "10.244.3.2/24", "10.244.3.1/24"),
    ("kwk-ext", "192.168.50.2/24", "192.168.50.1/24"),
];
const CLUSTER_IP: &str = "10.96.0.10";
const NO_ENDPOINTS_IP: &str = "10.96.0.20";
const NODE_IP: &str = "192.168.50.1";
const NODE_PORT: u16 = 30080;

/// Runs a fixed command line; fails with its stderr.
fn run(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn setup_pods() -> Result<()> {
    for (i, (ns, pod_addr, node_addr)) in PODS.iter().enumerate() {
        let (host_if, pod_if) = (format!("kwkh{i}"), format!("kwkp{i}"));
        run(&["ip", "netns", "add", ns])?;
        run(&[
            "ip", "link", "add", &host_if, "type", "veth", "peer", "name", &pod_if,
        ])?;
        run(&["ip", "link", "set", &pod_if, "netns", ns])?;
        run(&["ip", "addr", "add", node_addr, "dev", &host_if])?;
        run(&["ip", "link", "set", &host_if, "up"])?;
        run(&["ip", "-n", ns, "addr", "add", pod_addr, "dev", &pod_if])?;
        run(&["ip", "-n", ns, "link", "set", &pod_if, "up"])?;
        run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        let gateway = node_addr.split('/').next().unwrap_or_default();
        run(&["ip", "-n", ns, "route", "add", "default", "via", gateway])?;
    }
    Ok(())
}

/// Runs `f` on a thread inside network namespace `ns`.
fn in_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<std::thread::JoinHandle<Result<T>>> {
    let file = File::open(format!("/run/netns/{ns}")).map_err(|e| format!("{ns}: {e}"))?;
    Ok(std::thread::spawn(move || {
        setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns: {e}"))?;
        f()
    }))
}

fn join<T>(handle: std::thread::JoinHandle<Result<T>>) -> Result<T> {
    handle.join().map_err(|_| "thread panicked".to_owned())?
}

/// A server in pod `ns` on :8080 answering `<name> <peer address>`; runs until the process ends.
fn start_server(ns: &'static str) -> Result<()> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    drop(in_ns(ns, move || {
        let listener = TcpListener::bind("0.0.0.0:8080").map_err(|e| e.to_string());
        let listener = match listener {
            Ok(l) => {
                let _ = ready_tx.send(Ok(()));
                l
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e.clone()));
                return Err(e);
            }
        };
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let peer = stream
                .peer_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_default();
            let _ = stream.write_all(format!("{ns} {peer}\n").as_bytes());
        }
        Ok(())
    })?);
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .map_err(|e| format!("{ns} server: {e}"))?
}

/// One connection from `ns` to `addr`: the answer (`<pod> <peer>`), or the error kind.
fn connect(ns: &str, addr: SocketAddr) -> Result<std::result::Result<(String, String), String>> {
    join(in_ns(ns, move || {
        Ok(
            match TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
                Ok(mut stream) => {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(3)));
                    let mut answer = String::new();
                    match stream.read_to_string(&mut answer) {
                        Ok(_) => {
                            let mut parts = answer.split_whitespace();
                            Ok((
                                parts.next().unwrap_or_default().to_owned(),
                                parts.next().unwrap_or_default().to_owned(),
                            ))
                        }
                        Err(e) => Err(format!("{:?}", e.kind())),
                    }
                }
                Err(e) => Err(format!("{:?}", e.kind())),
            },
        )
    })?)
}

fn addr(ip: &str, port: u16) -> Result<SocketAddr> {
    format!("{ip}:{port}")
        .parse()
        .map_err(|e| format!("{ip}: {e}"))
}

/// The distinct pods `n` connections from `ns` to `to` reached, and the peers they saw.
fn sample(ns: &str, to: SocketAddr, n: usize) -> Result<(BTreeSet<String>, BTreeSet<String>)> {
    let mut pods = BTreeSet::new();
    let mut peers = BTreeSet::new();
    for _ in 0..n {
        match connect(ns, to)? {
            Ok((pod, peer)) => {
                pods.insert(pod);
                peers.insert(peer);
            }
            Err(kind) => {
                pods.insert(format!("error:{kind}"));
            }
        }
    }
    Ok((pods, peers))
}

fn joined(set: &BTreeSet<String>) -> String {
    set.iter().cloned().collect::<Vec<_>>().join(",")
}

fn ip(s: &str) -> Result<IpAddr> {
    s.parse().map_err(|e| format!("{s}: {e}"))
}

fn front_end(
    rules: &mut RuleSet,
    vip: &str,
    port: u16,
    kind: FrontEndKind,
    backends: &[&str],
    masquerade: Masquerade,
) -> Result<()> {
    let target = if backends.is_empty() {
        Target::Reject
    } else {
        Target::Backends(
            backends
                .iter()
                .map(|b| {
                    Ok(Backend {
                        ip: ip(b)?,
                        port: 8080,
                        weight: 1,
                        node_local: true,
                    })
                })
                .collect::<Result<_>>()?,
        )
    };
    rules.front_ends.insert(
        FrontEndKey::new(ip(vip)?, Protocol::Tcp, port),
        FrontEnd {
            service: ServicePortName {
                service: ServiceName::new("default", vip),
                port: String::new(),
                protocol: Protocol::Tcp,
            },
            kind,
            target,
            masquerade,
            affinity_timeout_seconds: None,
            local_short_circuit: None,
            allowed_sources: None,
        },
    );
    Ok(())
}

fn rules(cluster_backends: &[&str]) -> Result<RuleSet> {
    let mut r = RuleSet {
        cluster_cidrs: vec!["10.244.0.0/16".parse().map_err(|e| format!("{e}"))?],
        ..RuleSet::default()
    };
    front_end(
        &mut r,
        CLUSTER_IP,
        80,
        FrontEndKind::ClusterIp,
        cluster_backends,
        Masquerade::OffCluster,
    )?;
    front_end(
        &mut r,
        NODE_IP,
        NODE_PORT,
        FrontEndKind::NodePort,
        &["10.244.1.2", "10.244.2.2"],
        Masquerade::Always,
    )?;
    front_end(
        &mut r,
        NO_ENDPOINTS_IP,
        80,
        FrontEndKind::ClusterIp,
        &[],
        Masquerade::OffCluster,
    )?;
    Ok(r)
}

fn fact(key: &str, value: impl std::fmt::Display) {
    println!("{key}={value}");
}

fn e2e() -> Result<()> {
    setup_pods()?;
    run(&[
        "ip",
        "-n",
        "kwk-ext",
        "route",
        "add",
        "10.96.0.0/16",
        "via",
        NODE_IP,
    ])?;
    start_server("kwk-pod1")?;
    start_server("kwk-pod2")?;

    let mut dp = IpvsDataplane::open(IpvsDataplaneOptions::default()).map_err(|e| e.to_string())?;
    let first = rules(&["10.244.1.2", "10.244.2.2"])?;
    let started = Instant::now();
    let report = dp.sync(&first, None).map_err(|e| e.to_string())?;
    fact("full_sync_us", started.elapsed().as_micros());
    fact("full_sync_objects", report.objects);
    let link = run(&["ip", "-o", "link", "show", "kube-ipvs0"])?;
    fact(
        "dummy_kind_dummy",
        run(&["ip", "-o", "-d", "link", "show", "kube-ipvs0"])?.contains("dummy"),
    );
    fact("dummy_up", link.contains(",UP") || link.contains("<UP"));
    let addrs = run(&["ip", "-o", "addr", "show", "dev", "kube-ipvs0"])?;
    fact(
        "dummy_has_cluster_ip",
        addrs.contains(&format!("{CLUSTER_IP}/32")),
    );
    fact("dummy_has_node_ip", addrs.contains(NODE_IP));
    fact(
        "sysctl_vs_conntrack",
        std::fs::read_to_string("/proc/sys/net/ipv4/vs/conntrack")
            .unwrap_or_default()
            .trim(),
    );

    let cluster = addr(CLUSTER_IP, 80)?;
    let (pods, peers) = sample("kwk-client", cluster, 20)?;
    fact("cluster_ip_backends", joined(&pods));
    fact("cluster_ip_peer_from_pod", joined(&peers));
    let (pods, peers) = sample("kwk-ext", cluster, 6)?;
    fact("cluster_ip_from_ext_backends", joined(&pods));
    fact("cluster_ip_peer_from_ext", joined(&peers));
    let (pods, peers) = sample("kwk-ext", addr(NODE_IP, NODE_PORT)?, 6)?;
    fact("node_port_backends", joined(&pods));
    fact("node_port_peer", joined(&peers));
    let started = Instant::now();
    let refused = connect("kwk-client", addr(NO_ENDPOINTS_IP, 80)?)?;
    fact("no_endpoints_ms", started.elapsed().as_millis());
    fact(
        "no_endpoints",
        match refused {
            Ok((pod, _)) => format!("answered:{pod}"),
            Err(kind) => kind,
        },
    );

    // pod2 leaves the ClusterIP Service: an incremental sync.
    let second = rules(&["10.244.1.2"])?;
    let change = diff(&first, &second);
    let started = Instant::now();
    let report = dp.sync(&second, Some(&change)).map_err(|e| e.to_string())?;
    fact("incremental_sync_us", started.elapsed().as_micros());
    fact("incremental_full", report.full);
    fact("incremental_objects", report.objects);
    let (pods, _) = sample("kwk-client", cluster, 10)?;
    fact("after_removal_backends", joined(&pods));
    fact(
        "ipvs_services",
        run(&["ipvsadm", "-Ln"])?
            .lines()
            .filter(|l| l.starts_with("TCP"))
            .count(),
    );

    dp.cleanup().map_err(|e| e.to_string())?;
    fact(
        "after_cleanup_dummy",
        run(&["ip", "-o", "link", "show"])?.contains("kube-ipvs0"),
    );
    fact(
        "after_cleanup_ipvs_services",
        run(&["ipvsadm", "-Ln"])?
            .lines()
            .filter(|l| l.starts_with("TCP"))
            .count(),
    );
    fact(
        "after_cleanup_table",
        run(&["nft", "list", "tables"])?.contains("kwk-ipvs"),
    );
    Ok(())
}

fn main() -> ExitCode {
    match e2e() {
        Ok(()) => {
            fact("done", true);
            ExitCode::SUCCESS
        }
        Err(e) => {
            fact("error", e.replace('\n', " "));
            ExitCode::from(1)
        }
    }
}
