//! The `loopback` type against the real kernel, called the way containerd calls it: through a
//! `loopback` link to the `kwk-cni` binary, `CNI_IFNAME=lo`, containerd's own network config
//! (`cni-loopback`, cniVersion 0.3.1).

mod common;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use common::{Call, NetNs, invoke_via, ping, plugin_bin, privileged};
use serde_json::{Value, json};

fn conf(version: &str) -> Value {
    json!({"cniVersion": version, "name": "cni-loopback", "type": "loopback"})
}

fn call(command: &'static str, pod: &NetNs, ifname: &str, config: Value) -> Call {
    Call {
        command,
        container_id: "lo-ctr".to_owned(),
        netns: pod.path_str(),
        ifname: ifname.to_owned(),
        config,
    }
}

/// A bin dir holding `loopback` -> the plugin binary (the directory goes with the guard).
fn loopback_link() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let link = dir.path().join("loopback");
    std::os::unix::fs::symlink(plugin_bin(), &link).expect("symlink");
    (dir, link)
}

fn lo_is_up(pod: &NetNs) -> bool {
    let flags = pod.ip(&["link", "show", "lo"]);
    flags.contains(",UP") || flags.contains("<UP")
}

#[test]
fn add_brings_lo_up_check_sees_it_del_leaves_it() {
    if !privileged() {
        return;
    }
    let host = NetNs::new("lo-h");
    let pod = NetNs::new("lo-p");
    let (_dir, bin) = loopback_link();
    pod.ip(&["link", "set", "lo", "down"]);
    let localhost = Ipv4Addr::LOCALHOST;
    assert!(
        !ping(&pod, localhost, Duration::from_millis(300)),
        "127.0.0.1 answers with lo down"
    );

    let result = invoke_via(&host, &bin, &call("ADD", &pod, "lo", conf("0.3.1"))).ok();
    assert_eq!(result["cniVersion"], "0.3.1");
    assert_eq!(result["interfaces"][0]["name"], "lo");
    assert_eq!(result["interfaces"][0]["sandbox"], pod.path_str());
    assert_eq!(result["ips"][0]["address"], "127.0.0.1/8");
    assert_eq!(result["ips"][0]["version"], "4");
    assert!(lo_is_up(&pod));
    assert!(
        ping(&pod, localhost, Duration::from_secs(2)),
        "127.0.0.1 does not answer after ADD"
    );

    // CHECK passes while lo is up, fails once it is down; ADD again repairs it.
    invoke_via(&host, &bin, &call("CHECK", &pod, "lo", conf("1.0.0"))).ok();
    pod.ip(&["link", "set", "lo", "down"]);
    assert_eq!(
        invoke_via(&host, &bin, &call("CHECK", &pod, "lo", conf("1.0.0"))).err_code(),
        101
    );
    let again = invoke_via(&host, &bin, &call("ADD", &pod, "lo", conf("1.0.0"))).ok();
    assert!(again["ips"][0].get("version").is_none(), "{again}");
    assert!(lo_is_up(&pod));

    // A prevResult (loopback chained after another plugin) passes through.
    let mut chained = conf("1.0.0");
    chained["prevResult"] = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.1.2.3/24"}]});
    let passed = invoke_via(&host, &bin, &call("ADD", &pod, "lo", chained)).ok();
    assert_eq!(passed["ips"], json!([{"address": "10.1.2.3/24"}]));

    // DEL does nothing: lo stays up, and a DEL after the namespace is gone succeeds too.
    let del = invoke_via(&host, &bin, &call("DEL", &pod, "lo", conf("0.3.1")));
    assert!(del.success && del.stdout.is_empty(), "{del:?}");
    assert!(lo_is_up(&pod));
    let gone = call("DEL", &pod, "lo", conf("0.3.1"));
    pod.delete();
    let del = invoke_via(&host, &bin, &gone);
    assert!(del.success, "{del:?}");
}

#[test]
fn a_device_that_is_not_the_loopback_is_refused_and_left_alone() {
    if !privileged() {
        return;
    }
    let host = NetNs::new("lo-h2");
    let pod = NetNs::new("lo-p2");
    let (_dir, bin) = loopback_link();
    pod.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
    let add = invoke_via(&host, &bin, &call("ADD", &pod, "v0", conf("1.0.0")));
    assert_eq!(add.err_code(), 4);
    let v0 = pod.ip(&["link", "show", "v0"]);
    assert!(!v0.contains(",UP") && !v0.contains("<UP"), "{v0}");
    assert_eq!(
        invoke_via(&host, &bin, &call("CHECK", &pod, "v0", conf("1.0.0"))).err_code(),
        101
    );
    // No such device: refused as well.
    assert_eq!(
        invoke_via(&host, &bin, &call("ADD", &pod, "nope0", conf("1.0.0"))).err_code(),
        4
    );
}
