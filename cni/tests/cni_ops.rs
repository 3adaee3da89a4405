//! The CNI operations contract against the real kernel: every test builds its own "host" and
//! "pod" network namespaces and runs the `kwk-cni` binary the way containerd does.

mod common;

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use common::{Call, NetNs, invoke, invoke_concurrently, ping, privileged};
use serde_json::{Value, json};

fn config(name: &str, data_dir: &Path, subnet: &str) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": name,
        "type": "kwk-cni",
        "bridge": "kbr0",
        "isGateway": true,
        "isDefaultGateway": true,
        "hairpinMode": true,
        "mtu": 1400,
        "dns": {"nameservers": ["10.96.0.10"]},
        "ipam": {"type": "host-local", "subnet": subnet, "dataDir": data_dir},
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

fn allocated(data_dir: &Path, network: &str) -> Vec<String> {
    let mut ips: Vec<String> = std::fs::read_dir(data_dir.join(network))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.parse::<Ipv4Addr>().is_ok())
                .collect()
        })
        .unwrap_or_default();
    ips.sort();
    ips
}

#[test]
fn add_twice_check_del_twice() {
    if !privileged() {
        return;
    }
    let host = NetNs::new("cni-ops-h");
    let pod = NetNs::new("cni-ops-p");
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = config("ops", dir.path(), "10.61.0.0/24");

    let first = invoke(&host, &call("ADD", "ctr-1", &pod, &conf)).ok();
    assert_eq!(first["cniVersion"], "1.0.0");
    assert_eq!(first["ips"][0]["address"], "10.61.0.2/24");
    assert_eq!(first["ips"][0]["gateway"], "10.61.0.1");
    assert_eq!(first["interfaces"][2]["sandbox"], pod.path_str());
    assert_eq!(first["routes"][0]["dst"], "0.0.0.0/0");
    assert_eq!(first["dns"]["nameservers"], json!(["10.96.0.10"]));
    // The kernel state the result describes.
    let link = pod.ip(&["-d", "link", "show", "eth0"]);
    assert!(link.contains("mtu 1400") && link.contains("UP"), "{link}");
    assert!(
        link.contains("numtxqueues 1 numrxqueues 1"),
        "one queue each way: {link}"
    );
    assert!(pod.ip(&["addr", "show", "eth0"]).contains("10.61.0.2/24"));
    assert!(
        pod.ip(&["route"])
            .contains("default via 10.61.0.1 dev eth0")
    );
    let host_veth = first["interfaces"][1]["name"].as_str().expect("host veth");
    let port = host.ip(&["-d", "link", "show", host_veth]);
    assert!(
        port.contains("master kbr0")
            && port.contains("hairpin on")
            && port.contains("numtxqueues 1 numrxqueues 1"),
        "{port}"
    );
    assert!(host.ip(&["addr", "show", "kbr0"]).contains("10.61.0.1/24"));

    // ADD again: no error, the same address and interfaces.
    let second = invoke(&host, &call("ADD", "ctr-1", &pod, &conf)).ok();
    assert_eq!(second["ips"], first["ips"]);
    assert_eq!(second["interfaces"][2], first["interfaces"][2]);
    assert_eq!(allocated(dir.path(), "ops"), ["10.61.0.2"]);

    // CHECK against the ADD result passes; after breaking the route it fails.
    let mut check_conf = conf.clone();
    check_conf["prevResult"] = first.clone();
    invoke(&host, &call("CHECK", "ctr-1", &pod, &check_conf)).ok();
    host.ip(&["link", "set", host_veth, "nomaster"]);
    assert_eq!(
        invoke(&host, &call("CHECK", "ctr-1", &pod, &check_conf)).err_code(),
        101
    );
    // A repeated ADD repairs it.
    invoke(&host, &call("ADD", "ctr-1", &pod, &conf)).ok();
    invoke(&host, &call("CHECK", "ctr-1", &pod, &check_conf)).ok();
    pod.ip(&["route", "del", "default"]);
    assert_eq!(
        invoke(&host, &call("CHECK", "ctr-1", &pod, &check_conf)).err_code(),
        101
    );

    // The gateway MAC the pod learned stays put while ports come and go.
    let bridge_mac = first["interfaces"][0]["mac"].as_str().expect("bridge mac");
    assert_ne!(bridge_mac, "00:00:00:00:00:00");
    assert_eq!(second["interfaces"][0]["mac"], bridge_mac);

    // DEL twice: both succeed, the address is free and the pair is gone.
    invoke(&host, &call("DEL", "ctr-1", &pod, &conf)).ok();
    invoke(&host, &call("DEL", "ctr-1", &pod, &conf)).ok();
    assert!(allocated(dir.path(), "ops").is_empty());
    assert!(!pod.ip(&["link"]).contains("eth0"));
    assert!(!host.ip(&["link"]).contains(host_veth));
    // DEL's background reaper finishes deleting the retired pair.
    assert!(
        eventually(|| !host.ip(&["link"]).contains("kwkd") && !pod.ip(&["link"]).contains("kwkd")),
        "retired veth pair not reaped: {}",
        host.ip(&["link"])
    );
    assert!(host.ip(&["link", "show", "kbr0"]).contains(bridge_mac));
    // A fresh ADD for the same attachment right after DEL works.
    let again = invoke(&host, &call("ADD", "ctr-1", &pod, &conf)).ok();
    assert_eq!(again["ips"][0]["address"], "10.61.0.3/24");
    assert_eq!(again["interfaces"][0]["mac"], bridge_mac);
}

#[allow(
    clippy::disallowed_methods,
    reason = "synchronous test polling the kernel state"
)]
fn eventually(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..100 {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn old_spec_versions_get_their_result_shape() {
    if !privileged() {
        return;
    }
    let host = NetNs::new("cni-ver-h");
    let pod = NetNs::new("cni-ver-p");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut conf = config("ver", dir.path(), "10.62.0.0/24");
    conf["cniVersion"] = json!("0.4.0");
    let result = invoke(&host, &call("ADD", "ctr", &pod, &conf)).ok();
    assert_eq!(result["cniVersion"], "0.4.0");
    assert_eq!(result["ips"][0]["version"], "4");
    conf["cniVersion"] = json!("0.2.0");
    assert_eq!(
        invoke(&host, &call("DEL", "ctr", &pod, &conf)).err_code(),
        1
    );
}

#[test]
fn del_is_idempotent_when_the_pod_is_gone() {
    if !privileged() {
        return;
    }
    let host = NetNs::new("cni-gone-h");
    let pod = NetNs::new("cni-gone-p");
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = config("gone", dir.path(), "10.63.0.0/24");
    let result = invoke(&host, &call("ADD", "ctr", &pod, &conf)).ok();
    let host_veth = result["interfaces"][1]["name"]
        .as_str()
        .expect("veth")
        .to_owned();
    let netns_path = pod.path_str();
    pod.delete();
    let mut del = call("DEL", "ctr", &NetNs::new("cni-gone-unused"), &conf);
    del.netns = netns_path;
    invoke(&host, &del).ok();
    assert!(allocated(dir.path(), "gone").is_empty(), "address released");
    assert!(!host.ip(&["link"]).contains(&host_veth));
    // No netns at all, and a container never seen.
    del.netns = String::new();
    invoke(&host, &del).ok();
    del.container_id = "never-added".into();
    invoke(&host, &del).ok();
}

#[test]
fn add_with_missing_netns_fails_with_cni_error() {
    if !privileged() {
        return;
    }
    let host = NetNs::new("cni-nons-h");
    let pod = NetNs::new("cni-nons-p");
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = config("nons", dir.path(), "10.64.0.0/24");
    let mut add = call("ADD", "ctr", &pod, &conf);
    add.netns = "/run/netns/kwkt-does-not-exist".into();
    let reply = invoke(&host, &add);
    assert_eq!(reply.err_code(), 3);
    assert_eq!(reply.json()["cniVersion"], "1.0.0");
    assert!(
        allocated(dir.path(), "nons").is_empty(),
        "nothing allocated"
    );
    // A path that is not a network namespace at all.
    add.netns = dir.path().display().to_string();
    assert_eq!(invoke(&host, &add).err_code(), 3);
}

#[test]
fn gc_releases_unlisted_allocations() {
    if !privileged() {
        return;
    }
    let host = NetNs::new("cni-gc-h");
    let pods: Vec<NetNs> = (0..3)
        .map(|i| NetNs::new(&format!("cni-gc-p{i}")))
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = config("gc", dir.path(), "10.65.0.0/24");
    let ips: Vec<Ipv4Addr> = pods
        .iter()
        .enumerate()
        .map(|(i, pod)| pod_ip(&invoke(&host, &call("ADD", &format!("c{i}"), pod, &conf)).ok()))
        .collect();
    let mut gc_conf = conf.clone();
    gc_conf["cniVersion"] = json!("1.1.0");
    gc_conf["cni.dev/valid-attachments"] = json!([{"containerID": "c1", "ifname": "eth0"}]);
    let gc = Call {
        command: "GC",
        container_id: String::new(),
        netns: String::new(),
        ifname: String::new(),
        config: gc_conf,
    };
    // A retired link whose reaper never ran is swept by GC.
    host.ip(&[
        "link",
        "add",
        "kwkd00000001",
        "type",
        "veth",
        "peer",
        "name",
        "kwkd00000002",
    ]);
    invoke(&host, &gc).ok();
    assert_eq!(allocated(dir.path(), "gc"), [ips[1].to_string()]);
    assert!(!host.ip(&["link"]).contains("kwkd0000000"));
    // Without the attachment list GC refuses rather than freeing everything.
    let mut bad = gc;
    bad.config = conf;
    assert_eq!(invoke(&host, &bad).err_code(), 7);
    assert_eq!(allocated(dir.path(), "gc").len(), 1);
}

#[test]
fn pods_on_the_bridge_reach_each_other_and_the_gateway() {
    if !privileged() {
        return;
    }
    let host = NetNs::new("cni-ping-h");
    let a = NetNs::new("cni-ping-a");
    let b = NetNs::new("cni-ping-b");
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = config("ping", dir.path(), "10.66.0.0/24");
    let ip_a = pod_ip(&invoke(&host, &call("ADD", "a", &a, &conf)).ok());
    let ip_b = pod_ip(&invoke(&host, &call("ADD", "b", &b, &conf)).ok());
    assert_ne!(ip_a, ip_b);
    let gateway = Ipv4Addr::new(10, 66, 0, 1);
    let wait = Duration::from_secs(5);
    assert!(ping(&a, gateway, wait), "a -> gateway");
    assert!(ping(&a, ip_b, wait), "a -> b");
    assert!(ping(&b, ip_a, wait), "b -> a");
    // The host namespace reaches the pod through the bridge address.
    assert!(ping(&host, ip_b, wait), "host -> b");
    invoke(&host, &call("DEL", "b", &b, &conf)).ok();
    assert!(
        !ping(&a, ip_b, Duration::from_millis(600)),
        "b is gone after DEL"
    );
}

#[test]
fn exhausted_range_gives_the_no_addresses_error() {
    if !privileged() {
        return;
    }
    let host = NetNs::new("cni-full-h");
    let pod = NetNs::new("cni-full-p");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut conf = config("full", dir.path(), "10.67.0.0/24");
    conf["ipam"]["rangeStart"] = json!("10.67.0.10");
    conf["ipam"]["rangeEnd"] = json!("10.67.0.11");
    let mut add = call("ADD", "ctr", &pod, &conf);
    let mut got = Vec::new();
    for ifname in ["eth0", "eth1"] {
        add.ifname = ifname.into();
        got.push(pod_ip(&invoke(&host, &add).ok()).to_string());
    }
    assert_eq!(got, ["10.67.0.10", "10.67.0.11"]);
    add.ifname = "eth2".into();
    let reply = invoke(&host, &add);
    assert_eq!(reply.err_code(), 100);
    assert!(
        reply.json()["msg"]
            .as_str()
            .expect("msg")
            .contains("no IP addresses")
    );
    assert!(
        !pod.ip(&["link"]).contains("eth2"),
        "nothing created for the failed ADD"
    );
}

#[test]
fn concurrent_adds_get_distinct_addresses() {
    if !privileged() {
        return;
    }
    let host = NetNs::new("cni-conc-h");
    let pods: Vec<NetNs> = (0..10)
        .map(|i| NetNs::new(&format!("cni-conc-{i}")))
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = config("conc", dir.path(), "10.68.0.0/24");
    let calls: Vec<Call> = pods
        .iter()
        .enumerate()
        .map(|(i, pod)| call("ADD", &format!("ctr-{i}"), pod, &conf))
        .collect();
    let replies = invoke_concurrently(&host, &calls);
    let ips: HashSet<Ipv4Addr> = replies.iter().map(|reply| pod_ip(&reply.ok())).collect();
    assert_eq!(ips.len(), 10, "{ips:?}");
    assert_eq!(allocated(dir.path(), "conc").len(), 10);
    for (pod, ip) in pods.iter().zip(replies.iter().map(|r| pod_ip(&r.ok()))) {
        assert!(
            pod.ip(&["addr", "show", "eth0"])
                .contains(&format!("{ip}/24"))
        );
    }
}

#[test]
fn status_reports_readiness_of_the_ipam_dir() {
    if !privileged() {
        return;
    }
    let host = NetNs::new("cni-status-h");
    let dir = tempfile::tempdir().expect("tempdir");
    let status = |conf: Value| Call {
        command: "STATUS",
        container_id: String::new(),
        netns: String::new(),
        ifname: String::new(),
        config: conf,
    };
    let mut conf = config("status", dir.path(), "10.69.0.0/24");
    conf["cniVersion"] = json!("1.1.0");
    invoke(&host, &status(conf.clone())).ok();
    // A data dir under a regular file can never be written.
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"x").expect("write");
    conf["ipam"]["dataDir"] = json!(blocker);
    assert_eq!(invoke(&host, &status(conf)).err_code(), 50);
    let version = Call {
        command: "VERSION",
        ..status(json!({"cniVersion": "1.0.0"}))
    };
    let reply = invoke(&host, &version).ok();
    assert_eq!(
        reply["supportedVersions"],
        json!(["0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
}
