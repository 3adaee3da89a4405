//! containerd end to end with our own CNI plugin and nothing else: containerd's bin dir holds
//! only `kwk-cni` and `loopback`, both links to the cargo-built `kwk-cni`. The sandbox gets its
//! IP from the conflist's subnet, its loopback is up (the server answers on 127.0.0.1 inside
//! the pod), a busybox httpd in it answers on the pod IP and on the sandbox's hostPort, and
//! removing the sandbox frees the address and the hostPort.
//!
//! Needs `target/debug/kwk-cni`: `cargo build -p kwk-cni` before `cargo test -p kwk-tests`.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed expectation aborts the test"
)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use kwk_cri::api;
use kwk_tests::config::{CniNetwork, CniPlugins};
use kwk_tests::pods::{PodShape, container_config};
use kwk_tests::{TestContainerd, privileged_tests_enabled, wait_for};

const SUBNET: &str = "10.89.7.0/24";
/// The bridge's address: a local address of the containerd "node" namespace.
const GATEWAY: &str = "10.89.7.1";
const HOST_PORT: i32 = 18090;

/// `kwk-cni` next to this test binary's directory (`target/<profile>/deps/..`).
fn built_plugin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("test binary has no target directory")?;
    let plugin = profile_dir.join("kwk-cni");
    anyhow::ensure!(
        plugin.exists(),
        "{} is missing: run `cargo build -p kwk-cni` first",
        plugin.display()
    );
    Ok(plugin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_sandbox_gets_its_ip_from_kwk_cni() -> anyhow::Result<()> {
    if !privileged_tests_enabled() {
        return Ok(());
    }
    let plugin = built_plugin()?;
    let node = TestContainerd::start_with(true, |layout| {
        layout.cni_plugins = CniPlugins::Kwk(plugin);
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "kwk-e2e",
            "plugins": [{
                "type": "kwk-cni",
                "bridge": "kwkbr0",
                "isGateway": true,
                "isDefaultGateway": true,
                "hairpinMode": true,
                "ipMasq": true,
                "capabilities": {"portMappings": true},
                "ipam": {"type": "host-local", "subnet": SUBNET, "dataDir": layout.cni_data_dir()},
            }],
        });
        layout.cni_network = CniNetwork::Custom(conflist.to_string());
    })
    .await?;
    let cri = &node.cri;
    let mut sandbox = node.sandbox(
        "kwk-cni-web",
        PodShape {
            host_network: false,
            shared_pid: false,
        },
    )?;
    // containerd passes it as runtimeConfig.portMappings (the conflist declares the capability).
    sandbox.port_mappings = vec![api::PortMapping {
        protocol: api::Protocol::Tcp as i32,
        container_port: 80,
        host_port: HOST_PORT,
        host_ip: String::new(),
    }];
    let pod_id = cri
        .run_pod_sandbox(sandbox.clone(), "")
        .await
        .with_context(|| node.diagnostics())?;
    let status = cri.pod_sandbox_status(&pod_id, false).await?.status;
    assert_eq!(status.state, api::PodSandboxState::SandboxReady as i32);
    let pod_ip = status.network.map(|n| n.ip).unwrap_or_default();
    assert!(
        pod_ip.starts_with("10.89.7."),
        "pod IP {pod_ip:?} should come from kwk-cni's subnet {SUBNET}"
    );
    let allocation = node.layout().cni_data_dir().join("kwk-e2e").join(&pod_ip);
    assert!(
        allocation.exists(),
        "kwk-cni's allocation file {allocation:?}"
    );

    let script =
        "mkdir -p /www && echo kwk-cni-web > /www/index.html && exec httpd -f -p 80 -h /www";
    let config = container_config(
        "httpd",
        &node.images.busybox_reference,
        &["/bin/sh", "-c", script],
    );
    let container_id = cri.create_container(&pod_id, config, sandbox).await?;
    cri.start_container(&container_id).await?;

    let addr: SocketAddr = format!("{pod_ip}:80").parse()?;
    let mut response = String::new();
    wait_for(Duration::from_secs(10), "the pod's web server", || {
        if let Ok(Ok(body)) = node
            .netns()
            .run(|| kwk_tests::http::get(addr, "/index.html"))
        {
            response = body;
        }
        std::future::ready(response.contains("kwk-cni-web"))
    })
    .await
    .with_context(|| format!("last response {response:?}"))?;
    // Inside the pod, over its loopback (which kwk-cni, run as `loopback`, brought up).
    let local = cri
        .exec_sync(
            &container_id,
            vec![
                "sh".into(),
                "-c".into(),
                "printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc 127.0.0.1 80".into(),
            ],
            Duration::from_secs(10),
        )
        .await?;
    let local_body = String::from_utf8_lossy(&local.stdout);
    assert!(
        local_body.contains("kwk-cni-web"),
        "over the pod's loopback (exit {}): {local_body:?} {:?}",
        local.exit_code,
        String::from_utf8_lossy(&local.stderr)
    );
    // The same server through the hostPort on the node's own address.
    let via_host_port: SocketAddr = format!("{GATEWAY}:{HOST_PORT}").parse()?;
    let body = node
        .netns()
        .run(|| kwk_tests::http::get(via_host_port, "/index.html"))??;
    assert!(body.contains("kwk-cni-web"), "hostPort answer: {body:?}");

    cri.stop_container(&container_id, Duration::from_secs(1))
        .await?;
    cri.remove_container(&container_id).await?;
    cri.stop_pod_sandbox(&pod_id).await?;
    cri.remove_pod_sandbox(&pod_id).await?;
    assert!(!allocation.exists(), "DEL released {pod_ip}");
    let records = node.layout().cni_data_dir().join("kwk-e2e/hostports");
    let left = std::fs::read_dir(&records).map_or(0, Iterator::count);
    assert_eq!(left, 0, "DEL removed the hostPort record in {records:?}");
    let refused = node
        .netns()
        .run(|| kwk_tests::http::get(via_host_port, "/index.html"))?;
    assert!(refused.is_err(), "hostPort still answers after DEL");
    Ok(())
}
