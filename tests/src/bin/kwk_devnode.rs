//! `kwk-devnode`: brings up a single-node kwk cluster on this machine, with no registry.
//!
//! Builds the images offline (pause, busybox as `localhost/busybox:latest`, and the control
//! plane image from the `kwk-control-plane` binary next to this one: run `cargo build
//! --workspace` first), starts an isolated containerd in its own network namespace whose only
//! CNI plugin is `kwk-cni` (also next to this binary), runs `kwk init` with `/etc/kwk` as its
//! config directory and `/var/lib/kwk` for the embedded store, starts `kwk-node`, which runs the
//! apiserver, controller manager and scheduler as static pods, registers itself and writes the
//! CNI network list from the podCIDR it is given, and forwards `127.0.0.1:6443` on this machine
//! to the apiserver, so `kubectl --kubeconfig /etc/kwk/admin.kubeconfig` works from here.
//! Waits for Ctrl-C (or exits
//! once the node is Ready with `--once`) and tears the node down; the PKI, kubeconfigs and the
//! store stay, so the next run brings the same cluster back. Run while a cluster is up, it says
//! so and leaves it alone. Needs root.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use kwk_tests::cluster::{
    APISERVER_PORT, ClusterBinaries, ClusterOptions, NODE_NAME, TestCluster, forward_to_apiserver,
};

const CONFIG_DIR: &str = "/etc/kwk";
const DATA_DIR: &str = "/var/lib/kwk";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let once = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--once") => true,
        Some(other) => anyhow::bail!("unknown argument {other:?} (only --once)"),
    };
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "kwk-devnode needs root (containerd, netns, cgroups, /etc/kwk)"
    );
    let admin = Path::new(CONFIG_DIR).join("admin.kubeconfig");
    let local = SocketAddr::from((Ipv4Addr::LOCALHOST, APISERVER_PORT));
    let listener = match tokio::net::TcpListener::bind(local).await {
        Ok(listener) => listener,
        Err(err) if err.kind() == std::io::ErrorKind::AddrInUse => {
            if cluster_answers(&admin) {
                println!("the cluster is already up:");
                print_usage(&admin);
                return Ok(());
            }
            anyhow::bail!("{local} is taken by something that is not a kwk cluster: {err}");
        }
        Err(err) => return Err(err).with_context(|| format!("listening on {local}")),
    };

    let dir = std::env::current_exe()?
        .parent()
        .context("locating the build directory")?
        .to_path_buf();
    let binaries = ClusterBinaries::next_to(&dir.join("kwk-node"), &dir.join("kwk"))
        .context("run `cargo build --workspace` first")?;
    println!(
        "building images, starting containerd, kwk init into {CONFIG_DIR}, starting kwk-node…"
    );
    let cluster = TestCluster::start_in(
        binaries,
        ClusterOptions {
            config_dir: Some(PathBuf::from(CONFIG_DIR)),
            data_dir: Some(PathBuf::from(DATA_DIR)),
            ..ClusterOptions::default()
        },
    )
    .await?;
    let relay = tokio::spawn(forward_to_apiserver(
        listener,
        cluster.containerd().netns().path(),
    ));
    println!("apiserver up; waiting for node {NODE_NAME} to be Ready…");
    cluster.wait_node_ready(Duration::from_secs(120)).await?;
    println!("node {NODE_NAME} is Ready.");
    print_usage(&admin);
    println!("      kwk-node log: {}", cluster.log_file().display());

    if !once {
        println!("running; Ctrl-C to stop (PKI, kubeconfigs and the store stay for the next run)");
        tokio::signal::ctrl_c().await?;
    }
    println!("tearing down");
    relay.abort();
    drop(cluster);
    Ok(())
}

fn print_usage(admin: &Path) {
    let kubectl = format!("kubectl --kubeconfig {}", admin.display());
    println!("try:  {kubectl} get nodes");
    println!("      {kubectl} get pods -A");
    println!(
        "      {kubectl} run hello --image=localhost/busybox:latest -- sh -c 'echo hello from kwk; sleep 3600'"
    );
    println!("      {kubectl} logs hello");
}

/// Whether an apiserver answers `/readyz` with the admin kubeconfig.
fn cluster_answers(admin: &Path) -> bool {
    std::process::Command::new(kwk_tests::cluster::kubectl_path())
        .arg("--kubeconfig")
        .arg(admin)
        .args(["get", "--raw", "/readyz", "--request-timeout=5s"])
        .output()
        .is_ok_and(|o| o.status.success())
}
