//! The IPVS proxy mode end to end on a stock kernel with `ip_vs` (one VM boot): netdp's
//! `ipvs_e2e` example runs in the guest, programs a ClusterIP Service with two backends, a
//! NodePort and a Service without endpoints through `IpvsDataplane`, checks them with real
//! connections between network namespaces, removes an endpoint with an incremental sync,
//! checks graceful termination (a long-lived connection survives its endpoint's removal, also
//! the last one's; the real server drains at weight 0 and is deleted once the connection
//! closes) and cleans up; this test asserts the facts it prints.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};
use kwk_tests::images::workspace_root;
use kwk_tests::vm::{Vm, vm_tests_enabled};

/// `key=value` lines of the script's stdout.
fn facts(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// Builds netdp's `ipvs_e2e` example (debug; the guest is Debian 12 like the host).
fn build_example() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-p", "kwk-netdp", "--example", "ipvs_e2e"])
        .current_dir(workspace_root())
        .status()
        .context("running cargo to build the ipvs_e2e example")?;
    if !status.success() {
        bail!("building the ipvs_e2e example failed: {status}");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    Ok(target.join("debug/examples/ipvs_e2e"))
}

#[test]
fn ipvs_mode_serves_cluster_ips_and_node_ports_in_a_vm() -> anyhow::Result<()> {
    if !vm_tests_enabled() {
        return Ok(());
    }
    let example = build_example()?;
    let out = Vm::builder()
        .file(&example, "/usr/local/bin/ipvs_e2e")
        .script(
            r#"
modprobe ip_vs
modprobe ip_vs_rr
set +e
/usr/local/bin/ipvs_e2e
echo "rc=$?"
"#,
        )
        .timeout(Duration::from_secs(600))
        .run()?
        .success()?;
    eprintln!("boot to poweroff: {:.1} s", out.wall_time.as_secs_f64());
    eprintln!("guest facts:\n{}", out.stdout.trim_end());
    let facts = facts(&out.stdout);
    let context = || format!("stdout:\n{}\n{}", out.stdout, out.diagnostics());
    let fact = |key: &str| facts.get(key).map(String::as_str).unwrap_or("<missing>");
    assert_eq!(fact("rc"), "0", "{}", context());
    assert_eq!(fact("done"), "true", "{}", context());
    // The dummy interface: a down dummy holding the Service addresses, not the node's.
    assert_eq!(fact("dummy_kind_dummy"), "true", "{}", context());
    assert_eq!(fact("dummy_up"), "false", "{}", context());
    assert_eq!(fact("dummy_has_cluster_ip"), "true", "{}", context());
    assert_eq!(fact("dummy_has_node_ip"), "false", "{}", context());
    assert_eq!(fact("sysctl_vs_conntrack"), "1", "{}", context());
    assert_eq!(fact("sysctl_vs_expire_nodest_conn"), "1", "{}", context());
    assert_eq!(
        fact("sysctl_vs_expire_quiescent_template"),
        "1",
        "{}",
        context()
    );
    // Debian 12's 6.1 kernel: conn_reuse_mode is left at the kernel's default (upstream sets
    // 0 only before 5.9).
    if fact("kernel_release").starts_with("6.") {
        assert_eq!(fact("sysctl_vs_conn_reuse_mode"), "1", "{}", context());
    }
    // Both backends through the ClusterIP; a pod client keeps its address (OffCluster).
    assert_eq!(
        fact("cluster_ip_backends"),
        "kwk-pod1,kwk-pod2",
        "{}",
        context()
    );
    assert_eq!(
        fact("cluster_ip_peer_from_pod"),
        "10.244.3.2",
        "{}",
        context()
    );
    // From off the cluster: masqueraded to the node's address toward the pod.
    let ext_peers = fact("cluster_ip_peer_from_ext");
    assert!(
        !ext_peers.contains("192.168.50.2") && ext_peers.starts_with("10.244."),
        "off-cluster client not masqueraded: {ext_peers}\n{}",
        context()
    );
    assert!(
        !fact("cluster_ip_from_ext_backends").contains("error"),
        "{}",
        context()
    );
    // The NodePort answers (masqueraded: policy Cluster).
    let node_port = fact("node_port_backends");
    assert!(
        node_port.contains("kwk-pod") && !node_port.contains("error"),
        "{}",
        context()
    );
    assert!(
        !fact("node_port_peer").contains("192.168.50.2"),
        "{}",
        context()
    );
    // No endpoints: refused, fast.
    assert_eq!(fact("no_endpoints"), "ConnectionRefused", "{}", context());
    let refused_ms: u64 = fact("no_endpoints_ms").parse().context("no_endpoints_ms")?;
    assert!(
        refused_ms < 1000,
        "refusal took {refused_ms} ms\n{}",
        context()
    );
    // The incremental sync removed pod2 from the ClusterIP Service.
    assert_eq!(fact("incremental_full"), "false", "{}", context());
    assert_eq!(fact("after_removal_backends"), "kwk-pod1", "{}", context());
    // Earlier connections to pod2 linger in TIME_WAIT: its real server drains at weight 0.
    assert!(
        fact("after_removal_pod2_rs").starts_with("w0 a0 "),
        "{}",
        context()
    );
    assert_eq!(fact("ipvs_services"), "4", "{}", context());
    graceful_termination(&facts, &context());
    // Cleanup removed ours.
    assert_eq!(fact("after_cleanup_dummy"), "false", "{}", context());
    assert_eq!(fact("after_cleanup_ipvs_services"), "0", "{}", context());
    assert_eq!(fact("after_cleanup_table"), "false", "{}", context());
    eprintln!(
        "full sync {} us, incremental sync {} us; drained real server deleted {} ms and {} ms \
         after its connection closed (check every 500 ms; IPVS keeps a reset connection 10 s)",
        fact("full_sync_us"),
        fact("incremental_sync_us"),
        fact("graceful_deleted_after_close_ms"),
        fact("graceful_last_deleted_after_close_ms"),
    );
    Ok(())
}

/// The graceful-termination facts: the long-lived connection to the removed pod keeps
/// answering, new connections never reach it, its real server stays at weight 0 with the
/// connection counted (through a full sync and due checks), and goes once it closed; the same
/// when the last endpoint leaves, with new connections refused.
fn graceful_termination(facts: &BTreeMap<String, String>, context: &str) {
    let fact = |key: &str| facts.get(key).map(String::as_str).unwrap_or("<missing>");
    let pod = fact("graceful_session_pod").to_owned();
    let other = match pod.as_str() {
        "kwk-pod1" => "kwk-pod2",
        "kwk-pod2" => "kwk-pod1",
        _ => panic!("session to {pod:?}\n{}", context),
    };
    assert_eq!(
        fact("graceful_echo_before"),
        format!("{pod} before"),
        "{}",
        context
    );
    assert_eq!(
        fact("graceful_echo_after_removal"),
        format!("{pod} after"),
        "the established connection survives its endpoint's removal\n{}",
        context
    );
    assert_eq!(
        fact("graceful_new_backends"),
        other,
        "new connections only to the remaining pod\n{}",
        context
    );
    for key in [
        "graceful_removed_rs",
        "graceful_after_full_sync_rs",
        "graceful_after_checks_rs",
    ] {
        assert!(
            fact(key).starts_with("w0 a1 "),
            "{key}: weight 0, one established connection\n{}",
            context
        );
    }
    let gone = if pod == "kwk-pod1" {
        "10.244.1.2"
    } else {
        "10.244.2.2"
    };
    assert_eq!(fact("graceful_draining"), gone, "{}", context);
    assert_eq!(
        fact("graceful_echo_after_checks"),
        format!("{pod} still"),
        "{}",
        context
    );
    assert!(
        fact("graceful_after_close_rs").starts_with("w0 a0 "),
        "closed: no longer active, still there\n{}",
        context
    );
    for key in [
        "graceful_deleted_after_close_ms",
        "graceful_last_deleted_after_close_ms",
    ] {
        assert!(
            fact(key).parse::<u64>().is_ok(),
            "{key}: the drained real server was deleted\n{}",
            context
        );
    }
    assert_eq!(fact("graceful_last_session_pod"), other, "{}", context);
    assert_eq!(
        fact("graceful_last_echo_after_removal"),
        format!("{other} after"),
        "the established connection survives the last endpoint's removal\n{}",
        context
    );
    assert_eq!(
        fact("graceful_last_new_connection"),
        "ConnectionRefused",
        "{}",
        context
    );
    assert!(
        fact("graceful_last_rs").starts_with("w0 a1 "),
        "{}",
        context
    );
    assert_eq!(fact("graceful_draining_at_end"), "", "{}", context);
}
