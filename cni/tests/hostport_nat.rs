//! Masquerade and hostPort against the real kernel, with real TCP traffic: a "node" namespace
//! running the plugin, an "outside" namespace on a veth (an external client and server), and
//! pods whose servers (Rust threads inside the pod namespaces) report the peer address they see.

mod common;

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use common::{Call, NetNs, invoke, privileged};
use nix::sched::{CloneFlags, setns};
use serde_json::{Value, json};

const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);

fn config(data_dir: &Path, mappings: &Value) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "natnet",
        "type": "kwk-cni",
        "bridge": "kbrn0",
        "isGateway": true,
        "isDefaultGateway": true,
        "hairpinMode": true,
        "ipMasq": true,
        "clusterCIDR": "10.62.0.0/16",
        "capabilities": {"portMappings": true},
        "runtimeConfig": {"portMappings": mappings},
        "ipam": {"type": "host-local", "subnet": "10.62.1.0/24", "dataDir": data_dir},
    })
}

fn call(command: &'static str, id: &str, pod: &NetNs, config: &Value) -> Call {
    Call {
        command,
        container_id: id.to_owned(),
        netns: pod.path_str(),
        ifname: "eth0".to_owned(),
        config: config.clone(),
    }
}

fn pod_ip(result: &Value) -> Ipv4Addr {
    let address = result["ips"][0]["address"].as_str().expect("address");
    address
        .split('/')
        .next()
        .expect("ip")
        .parse()
        .expect("ipv4")
}

/// Serves TCP on `port` inside `ns` from a background thread: every connection gets the peer
/// address the server saw, then is closed.
fn serve_peer_address(ns: &NetNs, port: u16) {
    let file = std::fs::File::open(ns.path()).expect("open netns");
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
        let listener = TcpListener::bind(("0.0.0.0", port)).expect("bind");
        ready_tx.send(()).expect("ready");
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            if let Ok(peer) = stream.peer_addr() {
                let _ = stream.write_all(peer.ip().to_string().as_bytes());
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("server ready");
}

/// Connects from inside `ns` and returns what the server said (its view of our address).
fn ask(ns: &NetNs, dst: Ipv4Addr, port: u16) -> Result<String, String> {
    ns.run(|| {
        let addr = SocketAddr::V4(SocketAddrV4::new(dst, port));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .map_err(|err| format!("connect {addr}: {err}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|err| err.to_string())?;
        let mut reply = String::new();
        stream
            .read_to_string(&mut reply)
            .map_err(|err| format!("read from {addr}: {err}"))?;
        Ok(reply)
    })
}

/// A node with an outside network: `ext0` 192.168.77.1/24 in the node, .2 outside.
fn node_with_outside(tag: &str) -> (NetNs, NetNs) {
    let node = NetNs::new(&format!("{tag}-n"));
    let outside = NetNs::new(&format!("{tag}-o"));
    node.ip(&[
        "link",
        "add",
        "ext0",
        "type",
        "veth",
        "peer",
        "name",
        "ext0",
        "netns",
        &outside.path_str(),
    ]);
    node.ip(&["addr", "add", "192.168.77.1/24", "dev", "ext0"]);
    node.ip(&["link", "set", "ext0", "up"]);
    outside.ip(&["addr", "add", "192.168.77.2/24", "dev", "ext0"]);
    outside.ip(&["link", "set", "ext0", "up"]);
    outside.ip(&["route", "add", "default", "via", "192.168.77.1"]);
    (node, outside)
}

#[test]
fn hostport_dnat_masquerade_conflicts_and_del() {
    if !privileged() {
        return;
    }
    let (node, outside) = node_with_outside("nat");
    let pod_a = NetNs::new("nat-a");
    let pod_b = NetNs::new("nat-b");
    let pod_c = NetNs::new("nat-c");
    let dir = tempfile::tempdir().expect("tempdir");
    let mapping_a = json!([{"hostPort": 18080, "containerPort": 8080, "protocol": "tcp"}]);
    let conf_a = config(dir.path(), &mapping_a);
    let conf_plain = config(dir.path(), &json!([]));

    let a_ip = pod_ip(&invoke(&node, &call("ADD", "ctr-a", &pod_a, &conf_a)).ok());
    let b_ip = pod_ip(&invoke(&node, &call("ADD", "ctr-b", &pod_b, &conf_plain)).ok());
    serve_peer_address(&pod_a, 8080);
    serve_peer_address(&outside, 9000);

    // External client -> node:hostPort -> pod A, client address kept.
    assert_eq!(ask(&outside, NODE_IP, 18080).as_deref(), Ok("192.168.77.2"));
    // The node itself -> its own address:hostPort.
    assert!(ask(&node, NODE_IP, 18080).is_ok(), "node -> hostPort");
    // Pod A -> its own hostPort (hairpin) and pod B -> the hostPort: both answered.
    assert!(ask(&pod_a, NODE_IP, 18080).is_ok(), "hairpin");
    assert!(ask(&pod_b, NODE_IP, 18080).is_ok(), "pod -> hostPort");
    // Pod -> outside the cluster CIDR: seen with the node's address.
    assert_eq!(ask(&pod_b, OUTSIDE_IP, 9000).as_deref(), Ok("192.168.77.1"));
    // Pod -> pod inside the cluster CIDR: no masquerade.
    assert_eq!(ask(&pod_b, a_ip, 8080), Ok(b_ip.to_string()));

    // CHECK with the mappings passes; with a mapping removed from the kernel it fails.
    let mut check_conf = conf_a.clone();
    let first = invoke(&node, &call("ADD", "ctr-a", &pod_a, &conf_a)).ok();
    check_conf["prevResult"] = first;
    invoke(&node, &call("CHECK", "ctr-a", &pod_a, &check_conf)).ok();
    nft(
        &node,
        &[
            "delete",
            "element",
            "ip",
            "kwk-cni",
            "hostports",
            "{ tcp . 18080 }",
        ],
    );
    assert_eq!(
        invoke(&node, &call("CHECK", "ctr-a", &pod_a, &check_conf)).err_code(),
        101
    );
    assert!(ask(&outside, NODE_IP, 18080).is_err(), "element deleted");
    // A repeated ADD puts it back.
    invoke(&node, &call("ADD", "ctr-a", &pod_a, &conf_a)).ok();
    invoke(&node, &call("CHECK", "ctr-a", &pod_a, &check_conf)).ok();
    // Someone deleting the whole table: the next ADD rebuilds it with every mapping.
    nft(&node, &["delete", "table", "ip", "kwk-cni"]);
    invoke(&node, &call("ADD", "ctr-b", &pod_b, &conf_plain)).ok();
    assert_eq!(ask(&outside, NODE_IP, 18080).as_deref(), Ok("192.168.77.2"));

    // A second container claiming the same hostPort fails and leaves the first working.
    let clash = config(
        dir.path(),
        &json!([{"hostPort": 18080, "containerPort": 80, "protocol": "TCP", "hostIP": "192.168.77.1"}]),
    );
    let reply = invoke(&node, &call("ADD", "ctr-c", &pod_c, &clash));
    assert_eq!(reply.err_code(), 103);
    let msg = reply.json()["msg"].as_str().unwrap_or_default().to_owned();
    assert!(msg.contains("18080") && msg.contains("ctr-a"), "{msg}");
    assert!(
        pod_c.ip(&["link"]).lines().all(|l| !l.contains("eth0")),
        "the failed ADD left its interface behind"
    );
    assert_eq!(ask(&outside, NODE_IP, 18080).as_deref(), Ok("192.168.77.2"));

    // DEL without runtimeConfig removes exactly A's mapping (from the store); twice is fine.
    invoke(&node, &call("DEL", "ctr-a", &pod_a, &conf_plain)).ok();
    invoke(&node, &call("DEL", "ctr-a", &pod_a, &conf_plain)).ok();
    assert!(
        ask(&outside, NODE_IP, 18080).is_err(),
        "mapping survived DEL"
    );
    // Now the port is free for C.
    invoke(&node, &call("ADD", "ctr-c", &pod_c, &clash)).ok();
    let listing = nft_list(&node);
    assert!(
        listing.contains("18080") && !listing.contains(&format!("{a_ip} . 8080")),
        "{listing}"
    );
}

#[test]
fn gc_removes_mappings_of_gone_containers() {
    if !privileged() {
        return;
    }
    let (node, outside) = node_with_outside("natgc");
    let pod = NetNs::new("natgc-p");
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = config(
        dir.path(),
        &json!([{"hostPort": 18081, "containerPort": 8081, "protocol": "tcp"}]),
    );
    invoke(&node, &call("ADD", "ctr-gc", &pod, &conf)).ok();
    serve_peer_address(&pod, 8081);
    assert!(ask(&outside, NODE_IP, 18081).is_ok());
    // GC keeping it changes nothing; GC without it removes the mapping.
    let mut gc = config(dir.path(), &json!([]));
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "ctr-gc", "ifname": "eth0"}]);
    invoke(&node, &call("GC", "", &pod, &gc)).ok();
    assert!(ask(&outside, NODE_IP, 18081).is_ok());
    gc["cni.dev/valid-attachments"] = json!([]);
    invoke(&node, &call("GC", "", &pod, &gc)).ok();
    assert!(
        ask(&outside, NODE_IP, 18081).is_err(),
        "mapping survived GC"
    );
}

fn nft_list(ns: &NetNs) -> String {
    nft(ns, &["list", "table", "ip", "kwk-cni"])
}

/// `nft ARGS` inside `ns` (assertions and fault injection only), which must succeed.
fn nft(ns: &NetNs, args: &[&str]) -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &ns_name(ns), "nft"])
        .args(args)
        .output()
        .expect("nft");
    assert!(
        out.status.success(),
        "nft {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ns_name(ns: &NetNs) -> String {
    ns.path()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
