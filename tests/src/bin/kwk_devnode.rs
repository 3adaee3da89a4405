//! `kwk-devnode`: brings up what kwk has so far on this machine, with no registry.
//!
//! Builds the `pause` and busybox images offline, starts an isolated containerd in its own
//! network namespace, imports the images through containerd's native API, runs a busybox web
//! server pod through `kwk-cri`, checks that it answers HTTP, prints how to reach it, and waits
//! for Ctrl-C (or exits at once with `--once`), tearing everything down. Grows into a real node
//! as the agent issues land. Needs root.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use kwk_tests::pods::{PodShape, container_config, limits};
use kwk_tests::{TestContainerd, wait_for};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let once = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--once") => true,
        Some(other) => anyhow::bail!("unknown argument {other:?} (only --once)"),
    };
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "kwk-devnode needs root (containerd, netns, cgroups)"
    );

    println!("building images and starting containerd…");
    let node = TestContainerd::start().await?;
    let version = node.cri.version().await?;
    println!(
        "containerd {} up: socket {}, netns {}",
        version.runtime_version,
        node.socket().display(),
        node.netns().name()
    );

    let sandbox = node.sandbox(
        "hello",
        PodShape {
            host_network: false,
            shared_pid: true,
        },
    )?;
    let pod = node.cri.run_pod_sandbox(sandbox.clone(), "").await?;
    let script =
        "mkdir -p /www && echo 'hello from kwk' > /www/index.html && exec httpd -f -p 80 -h /www";
    let mut config = container_config("web", &node.images.busybox_reference, &["sh", "-c", script]);
    if let Some(linux) = config.linux.as_mut() {
        linux.resources = Some(limits(100, 32 << 20));
    }
    let web = node.cri.create_container(&pod, config, sandbox).await?;
    node.cri.start_container(&web).await?;
    let ip = node
        .cri
        .pod_sandbox_status(&pod, false)
        .await?
        .status
        .network
        .map(|n| n.ip)
        .unwrap_or_default();
    let addr: SocketAddr = format!("{ip}:80").parse().context("pod IP")?;

    let mut body = String::new();
    wait_for(Duration::from_secs(10), "the pod to answer HTTP", || {
        if let Ok(Ok(response)) = node.netns().run(|| kwk_tests::http::get(addr, "/")) {
            body = response;
        }
        std::future::ready(body.contains("hello from kwk"))
    })
    .await?;
    println!(
        "pod hello ({pod:.12}) at {ip} answers: {}",
        body.lines().last().unwrap_or_default()
    );
    println!(
        "try:  ip netns exec {} busybox wget -qO- http://{ip}/",
        node.netns().name()
    );
    println!(
        "      ctr --address {} -n k8s.io images ls",
        node.socket().display()
    );

    if !once {
        println!("running; Ctrl-C to stop and clean up");
        tokio::signal::ctrl_c().await?;
    }
    println!("tearing down");
    Ok(())
}
