//! The IPVS proxy mode end to end, for the VM tier (`tests/tests/vm_ipvs.rs`; this machine's
//! kernel has no `ip_vs`). Run as root in a throwaway guest after `modprobe ip_vs`: it builds
//! "pods" (network namespaces routed through the guest, which plays the node) with Rust TCP
//! servers answering their name and the peer address they see, programs a RuleSet through
//! [`IpvsDataplane`] (a ClusterIP Service with two backends, a NodePort on the node's address,
//! a Service without endpoints), checks it with real connections from a pod client and an
//! off-cluster client, removes an endpoint with an incremental sync, checks graceful
//! termination (a long-lived connection to a removed endpoint, see [`graceful`]), cleans up, and
//! prints `key=value` facts on stdout. Exit status 1 when a step fails (`error=...`).
//!
//! Topology: pods `kwk-pod1` 10.244.1.2, `kwk-pod2` 10.244.2.2, pod client `kwk-client`
//! 10.244.3.2 (cluster CIDR 10.244.0.0/16), off-cluster client `kwk-ext` 192.168.50.2; each on
//! its own veth pair to the node (`.1` on the node side), default route via the node.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use kwk_netdp::dataplane::Dataplane;
use kwk_netdp::ipvs::{
    IpvsApi, IpvsDataplane, IpvsDataplaneOptions, IpvsSocket, RtnlServiceAddresses, ServiceKey,
};
use kwk_netdp::model::{
    Backend, FrontEnd, FrontEndKey, FrontEndKind, Masquerade, Protocol, RuleSet, ServiceName,
    ServicePortName, Target, diff,
};
use kwk_netdp::nft::NftSocket;
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
/// The Service of the graceful-termination steps: port 80 to the session servers on :8081.
const GRACEFUL_IP: &str = "10.96.0.30";
const SESSION_PORT: u16 = 8081;
/// How often the example checks draining real servers (kube-proxy: every minute).
const DRAIN_CHECK: Duration = Duration::from_millis(500);
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
    (vip, port): (&str, u16),
    kind: FrontEndKind,
    (backends, backend_port): (&[&str], u16),
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
                        port: backend_port,
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

/// The rule set: the ClusterIP Service over `cluster_backends`, the NodePort over both pods,
/// the Service without endpoints, and the graceful-termination Service over
/// `graceful_backends`.
fn rules(cluster_backends: &[&str], graceful_backends: &[&str]) -> Result<RuleSet> {
    let mut r = RuleSet {
        cluster_cidrs: vec!["10.244.0.0/16".parse().map_err(|e| format!("{e}"))?],
        ..RuleSet::default()
    };
    front_end(
        &mut r,
        (CLUSTER_IP, 80),
        FrontEndKind::ClusterIp,
        (cluster_backends, 8080),
        Masquerade::OffCluster,
    )?;
    front_end(
        &mut r,
        (NODE_IP, NODE_PORT),
        FrontEndKind::NodePort,
        (&["10.244.1.2", "10.244.2.2"], 8080),
        Masquerade::Always,
    )?;
    front_end(
        &mut r,
        (NO_ENDPOINTS_IP, 80),
        FrontEndKind::ClusterIp,
        (&[], 8080),
        Masquerade::OffCluster,
    )?;
    front_end(
        &mut r,
        (GRACEFUL_IP, 80),
        FrontEndKind::ClusterIp,
        (graceful_backends, SESSION_PORT),
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
    start_session_server("kwk-pod1")?;
    start_session_server("kwk-pod2")?;

    let mut dp = IpvsDataplane::open(IpvsDataplaneOptions {
        drain_check_interval: DRAIN_CHECK,
        ..IpvsDataplaneOptions::default()
    })
    .map_err(|e| e.to_string())?;
    let both = ["10.244.1.2", "10.244.2.2"];
    let first = rules(&both, &both)?;
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
    for (key, name) in [
        ("sysctl_vs_conntrack", "conntrack"),
        ("sysctl_vs_expire_nodest_conn", "expire_nodest_conn"),
        (
            "sysctl_vs_expire_quiescent_template",
            "expire_quiescent_template",
        ),
        ("sysctl_vs_conn_reuse_mode", "conn_reuse_mode"),
    ] {
        fact(
            key,
            std::fs::read_to_string(format!("/proc/sys/net/ipv4/vs/{name}"))
                .unwrap_or_default()
                .trim(),
        );
    }
    fact(
        "kernel_release",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
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
    let second = rules(&["10.244.1.2"], &both)?;
    let change = diff(&first, &second);
    let started = Instant::now();
    let report = dp.sync(&second, Some(&change)).map_err(|e| e.to_string())?;
    fact("incremental_sync_us", started.elapsed().as_micros());
    fact("incremental_full", report.full);
    fact("incremental_objects", report.objects);
    let (pods, _) = sample("kwk-client", cluster, 10)?;
    fact("after_removal_backends", joined(&pods));
    // pod2 still has connections in TIME_WAIT from the samples above: it drains.
    let cluster_service = ServiceKey {
        addr: ip(CLUSTER_IP)?,
        protocol: Protocol::Tcp,
        port: 80,
    };
    fact(
        "after_removal_pod2_rs",
        real_server_on(&dp, &cluster_service, "10.244.2.2", 8080)?,
    );
    fact(
        "ipvs_services",
        run(&["ipvsadm", "-Ln"])?
            .lines()
            .filter(|l| l.starts_with("TCP"))
            .count(),
    );

    graceful(&mut dp, &second)?;

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

type Dp = IpvsDataplane<IpvsSocket, NftSocket, RtnlServiceAddresses>;

/// A server in pod `ns` on :8081 keeping each connection: it greets with `<name>`, then answers
/// each line with `<name> <line>` until the client goes; runs until the process ends.
fn start_session_server(ns: &'static str) -> Result<()> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    drop(in_ns(ns, move || {
        let listener = match TcpListener::bind(("0.0.0.0", SESSION_PORT)) {
            Ok(l) => {
                let _ = ready_tx.send(Ok(()));
                l
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e.to_string()));
                return Err(e.to_string());
            }
        };
        for mut stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = stream.write_all(format!("{ns}\n").as_bytes());
                let Ok(reader) = stream.try_clone() else {
                    return;
                };
                for line in BufReader::new(reader).lines() {
                    let Ok(line) = line else { break };
                    if stream
                        .write_all(format!("{ns} {line}\n").as_bytes())
                        .is_err()
                    {
                        break;
                    }
                }
            });
        }
        Ok(())
    })?);
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .map_err(|e| format!("{ns} session server: {e}"))?
}

/// A long-lived connection to a session server.
struct Session {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    /// The pod that greeted.
    pod: String,
}

impl Session {
    /// Connects from pod `ns`; the error is the connect error's kind (`ConnectionRefused`).
    fn open(ns: &str, to: SocketAddr) -> Result<Self> {
        let stream = join(in_ns(ns, move || {
            TcpStream::connect_timeout(&to, Duration::from_secs(3))
                .map_err(|e| format!("{:?}", e.kind()))
        })?)?;
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .map_err(|e| e.to_string())?;
        let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
        let mut pod = String::new();
        reader
            .read_line(&mut pod)
            .map_err(|e| format!("greeting: {:?}", e.kind()))?;
        Ok(Self {
            stream,
            reader,
            pod: pod.trim().to_owned(),
        })
    }

    /// Sends `text`: the answer (`<pod> <text>`), or `error:<kind>`.
    fn echo(&mut self, text: &str) -> String {
        if let Err(e) = self.stream.write_all(format!("{text}\n").as_bytes()) {
            return format!("error:{:?}", e.kind());
        }
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => "error:closed".to_owned(),
            Ok(_) => line.trim().to_owned(),
            Err(e) => format!("error:{:?}", e.kind()),
        }
    }

    /// Closes with a reset (`SO_LINGER` 0): IPVS keeps the entry 10 s in CLOSE, where a FIN
    /// would leave it 2 min in TIME_WAIT, counted as an inactive connection all that time.
    fn reset(self) -> Result<()> {
        let linger = nix::libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        nix::sys::socket::setsockopt(&self.stream, nix::sys::socket::sockopt::Linger, &linger)
            .map_err(|e| format!("SO_LINGER: {e}"))?;
        drop(self.reader);
        drop(self.stream);
        Ok(())
    }
}

/// The pods that greeted `n` new connections from `ns` to `to` (each reset after).
fn sample_greetings(ns: &str, to: SocketAddr, n: usize) -> Result<BTreeSet<String>> {
    let mut pods = BTreeSet::new();
    for _ in 0..n {
        match Session::open(ns, to) {
            Ok(session) => {
                pods.insert(session.pod.clone());
                session.reset()?;
            }
            Err(e) => {
                pods.insert(format!("error:{e}"));
            }
        }
    }
    Ok(pods)
}

/// The address of pod `name`.
fn pod_ip(name: &str) -> Result<&'static str> {
    PODS.iter()
        .find(|(ns, _, _)| *ns == name)
        .and_then(|(_, addr, _)| addr.split('/').next())
        .ok_or_else(|| format!("no pod {name:?}"))
}

/// The real server `backend`:8081 of `service` as the kernel lists it: `w<weight> a<active>
/// i<inactive>`, or `absent`.
fn real_server(dp: &Dp, service: &ServiceKey, backend: &str) -> Result<String> {
    real_server_on(dp, service, backend, SESSION_PORT)
}

fn real_server_on(dp: &Dp, service: &ServiceKey, backend: &str, port: u16) -> Result<String> {
    let backend = ip(backend)?;
    let listed = dp
        .ipvs()
        .list_destinations_counted(service)
        .map_err(|e| e.to_string())?;
    Ok(listed
        .iter()
        .find(|(d, _)| d.addr == backend && d.port == port)
        .map_or("absent".to_owned(), |(d, c)| {
            format!("w{} a{} i{}", d.weight, c.active, c.inactive)
        }))
}

/// Runs the dataplane's maintenance every 100 ms until `backend` is no real server of
/// `service`: the milliseconds it took, or `never` after a minute.
#[allow(
    clippy::disallowed_methods,
    reason = "a blocking example polling the kernel; no async runtime here"
)]
fn wait_drained(dp: &mut Dp, service: &ServiceKey, backend: &str) -> Result<String> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        dp.maintain(Instant::now()).map_err(|e| e.to_string())?;
        if real_server(dp, service, backend)? == "absent" {
            return Ok(started.elapsed().as_millis().to_string());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok("never".to_owned())
}

/// The draining real servers of `service`, comma-separated.
fn draining_on(dp: &Dp, service: &ServiceKey) -> String {
    dp.draining()
        .iter()
        .filter(|(rs, _)| rs.service == *service)
        .map(|(rs, _)| rs.addr.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn sync_change(dp: &mut Dp, from: &RuleSet, to: &RuleSet) -> Result<()> {
    let change = diff(from, to);
    let report = dp.sync(to, Some(&change)).map_err(|e| e.to_string())?;
    if report.full {
        return Err(format!("expected an incremental sync: {report:?}"));
    }
    Ok(())
}

/// Graceful termination, from `before` (both pods behind the graceful Service): a long-lived
/// connection's endpoint is removed while another stays, then the last one is removed; each
/// time the connection keeps working, new ones do not reach the removed pod, and its real
/// server goes once the connection closes.
#[allow(
    clippy::disallowed_methods,
    reason = "a blocking example pacing the periodic check; no async runtime here"
)]
fn graceful(dp: &mut Dp, before: &RuleSet) -> Result<()> {
    let to = addr(GRACEFUL_IP, 80)?;
    let service = ServiceKey {
        addr: ip(GRACEFUL_IP)?,
        protocol: Protocol::Tcp,
        port: 80,
    };
    let mut session = Session::open("kwk-client", to)?;
    let gone = pod_ip(&session.pod)?;
    let stays = if gone == "10.244.1.2" {
        "10.244.2.2"
    } else {
        "10.244.1.2"
    };
    fact("graceful_session_pod", &session.pod);
    fact("graceful_echo_before", session.echo("before"));
    let after = rules(&["10.244.1.2"], &[stays])?;
    sync_change(dp, before, &after)?;
    fact("graceful_echo_after_removal", session.echo("after"));
    fact(
        "graceful_new_backends",
        joined(&sample_greetings("kwk-client", to, 10)?),
    );
    fact("graceful_removed_rs", real_server(dp, &service, gone)?);
    fact("graceful_draining", draining_on(dp, &service));
    dp.sync(&after, None).map_err(|e| e.to_string())?;
    fact(
        "graceful_after_full_sync_rs",
        real_server(dp, &service, gone)?,
    );
    // Due checks while the connection is open keep the real server.
    let checking = Instant::now();
    while checking.elapsed() < DRAIN_CHECK * 3 {
        dp.maintain(Instant::now()).map_err(|e| e.to_string())?;
        std::thread::sleep(Duration::from_millis(100));
    }
    fact("graceful_after_checks_rs", real_server(dp, &service, gone)?);
    fact("graceful_echo_after_checks", session.echo("still"));
    session.reset()?;
    fact("graceful_after_close_rs", real_server(dp, &service, gone)?);
    fact(
        "graceful_deleted_after_close_ms",
        wait_drained(dp, &service, gone)?,
    );

    // The last endpoint leaves: the Service rejects new connections, the open one carries on.
    let mut last = Session::open("kwk-client", to)?;
    fact("graceful_last_session_pod", &last.pod);
    let none = rules(&["10.244.1.2"], &[])?;
    sync_change(dp, &after, &none)?;
    fact("graceful_last_echo_after_removal", last.echo("after"));
    fact(
        "graceful_last_new_connection",
        match Session::open("kwk-client", to) {
            Ok(s) => format!("answered:{}", s.pod),
            Err(e) => e,
        },
    );
    fact("graceful_last_rs", real_server(dp, &service, stays)?);
    last.reset()?;
    fact(
        "graceful_last_deleted_after_close_ms",
        wait_drained(dp, &service, stays)?,
    );
    fact("graceful_draining_at_end", draining_on(dp, &service));
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
