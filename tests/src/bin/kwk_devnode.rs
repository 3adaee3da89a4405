//! `kwk-devnode`: brings up a kwk node on this machine, with no registry.
//!
//! Builds the `pause` and busybox images offline, starts an isolated containerd in its own
//! network namespace with the images imported, starts `kwk-node` (the binary next to this one,
//! so run `cargo build --workspace` first) with a static pod directory holding a demo busybox
//! web server, waits until the pod answers HTTP, prints how to reach it and how to add pods, and
//! waits for Ctrl-C (or exits at once with `--once`), tearing everything down. Needs root.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use kwk_tests::node::TestNode;
use kwk_tests::{TestContainerd, wait_for};

const DEMO: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: hello
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: localhost/kwk/busybox:1
    command: ["/bin/sh", "-c", "mkdir -p /www && echo 'hello from kwk' > /www/index.html && exec httpd -f -p 80 -h /www"]
    ports:
    - containerPort: 80
    resources:
      limits: {cpu: 100m, memory: 32Mi}
"#;

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
    let binary = std::env::current_exe()?
        .parent()
        .context("locating the build directory")?
        .join("kwk-node");
    anyhow::ensure!(
        binary.exists(),
        "{} not found: run `cargo build --workspace` first",
        binary.display()
    );

    println!("building images and starting containerd…");
    let containerd = TestContainerd::start().await?;
    println!(
        "containerd up: socket {}, netns {}",
        containerd.socket().display(),
        containerd.netns().name()
    );
    let node = TestNode::start(&containerd, &binary).await?;
    node.write_manifest("hello.yaml", DEMO)?;
    let name = format!("hello-{}", node.node_name);
    let pod = node
        .wait_pod(&name, Duration::from_secs(60), "the demo pod to run", |p| {
            p["status"]["phase"] == "Running" && p["status"]["podIP"].is_string()
        })
        .await?;
    let ip = pod["status"]["podIP"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let addr: SocketAddr = format!("{ip}:80").parse().context("pod IP")?;
    let mut body = String::new();
    wait_for(Duration::from_secs(10), "the pod to answer HTTP", || {
        if let Ok(Ok(response)) = containerd.netns().run(|| kwk_tests::http::get(addr, "/")) {
            body = response;
        }
        std::future::ready(body.contains("hello from kwk"))
    })
    .await?;
    println!(
        "static pod {name} at {ip} answers: {}",
        body.lines().last().unwrap_or_default()
    );
    println!(
        "try:  ip netns exec {} busybox wget -qO- http://{ip}/",
        containerd.netns().name()
    );
    println!(
        "      {} pods --local-api-socket {}",
        binary.display(),
        node.socket().display()
    );
    println!(
        "      add pods by writing manifests into {}",
        node.manifests().display()
    );
    println!("      kwk-node log: {}", node.log_file().display());

    if !once {
        println!("running; Ctrl-C to stop and clean up");
        tokio::signal::ctrl_c().await?;
    }
    println!("tearing down");
    drop(node);
    Ok(())
}
