//! `/stats/summary` with real figures, end to end: a standalone kwk-node on real containerd runs
//! a pod whose container burns a core, holds ~64 MiB, writes 10 MiB into its root file system
//! and logs, next to a container that swallows what is sent to it over TCP. The summary, fetched
//! from the kubelet API over HTTPS, must show all of it: container CPU, working set, rootfs and
//! logs; pod CPU (from the pod cgroup, at least the container's) and network.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed expectation aborts the test"
)]

use std::io::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use http_body_util::BodyExt as _;
use kwk_tests::node::TestNode;
use kwk_tests::{TestContainerd, privileged_tests_enabled, wait_for};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_kwk-node");
const MIB: u64 = 1024 * 1024;
/// What the test sends to the pod.
const SENT: usize = 3 * 1024 * 1024;

/// `burn`: 10 MiB into its root file system, a few log lines, then a shell that holds a 64 MiB
/// string while it spins. `sink`: listens on 9000 and drops what arrives.
const POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: busy
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: burn
    image: localhost/kwk/busybox:1
    command: ["/bin/sh", "-c", "dd if=/dev/zero of=/fill bs=1048576 count=10; for i in 1 2 3 4 5; do echo line-$i; done; x=$(head -c 67108864 /dev/zero | tr '\\0' x); echo held; while :; do :; done"]
    resources:
      limits:
        memory: 512Mi
  - name: sink
    image: localhost/kwk/busybox:1
    command: ["/bin/sh", "-c", "while :; do nc -l -p 9000 > /dev/null; done"]
"#;

/// The summary's entry for the pod named `name`.
fn pod_of<'a>(summary: &'a Value, name: &str) -> Option<&'a Value> {
    summary["pods"]
        .as_array()?
        .iter()
        .find(|p| p["podRef"]["name"] == name)
}

fn container_of<'a>(pod: &'a Value, name: &str) -> Option<&'a Value> {
    pod["containers"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
}

fn num(value: &Value) -> u64 {
    value.as_u64().unwrap_or(0)
}

/// What is still missing from the summary (empty once everything shows).
fn missing(summary: &Value, name: &str) -> Vec<String> {
    let Some(pod) = pod_of(summary, name) else {
        return vec!["the pod".into()];
    };
    let Some(burn) = container_of(pod, "burn") else {
        return vec!["the burn container".into()];
    };
    let checks = [
        (
            "container usageNanoCores > 0.1 core",
            num(&burn["cpu"]["usageNanoCores"]) > 100_000_000,
        ),
        (
            "container workingSetBytes >= 60 MiB",
            num(&burn["memory"]["workingSetBytes"]) >= 60 * MIB,
        ),
        (
            "container rootfs usedBytes >= 10 MiB",
            num(&burn["rootfs"]["usedBytes"]) >= 10 * MIB,
        ),
        (
            "container logs usedBytes > 0",
            num(&burn["logs"]["usedBytes"]) > 0,
        ),
        (
            "pod network rxBytes > the bytes sent",
            num(&pod["network"]["rxBytes"]) > SENT as u64,
        ),
        (
            "pod usageNanoCores > 0.1 core",
            num(&pod["cpu"]["usageNanoCores"]) > 100_000_000,
        ),
    ];
    checks
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(what, _)| what.to_string())
        .collect()
}

async fn get_json(client: &kube::Client, path: &str) -> anyhow::Result<Value> {
    let request = http::Request::get(path).body(kube::client::Body::empty())?;
    let response = client.send(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    anyhow::ensure!(status == 200, "GET {path}: {status}");
    Ok(serde_json::from_slice(&body)?)
}

/// An anonymous kube-rs client for the kubelet at `server` (its certificate is not checked).
async fn anonymous_client(server: &str) -> anyhow::Result<kube::Client> {
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kubelet\n  cluster:\n    server: {server}\n    \
         insecure-skip-tls-verify: true\nusers:\n- name: anonymous\n  user: {{}}\ncontexts:\n- name: c\n  \
         context: {{cluster: kubelet, user: anonymous}}\ncurrent-context: c\n"
    );
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&yaml)?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    Ok(kube::Client::try_from(config)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_carries_real_cpu_memory_filesystem_and_network_figures() -> anyhow::Result<()>
{
    if !privileged_tests_enabled() {
        return Ok(());
    }
    // Dropped in reverse order on any failure: kwk-node is killed, then containerd's teardown
    // removes the pods and their cgroups.
    let containerd = TestContainerd::start().await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let extra = format!(
        "address: 127.0.0.1\nport: {port}\nauthentication:\n  anonymous:\n    enabled: true\n\
         authorization:\n  mode: AlwaysAllow\n"
    );
    let node = TestNode::start_with(&containerd, std::path::Path::new(BIN), &extra).await?;
    let client = anonymous_client(&format!("https://127.0.0.1:{port}")).await?;

    node.write_manifest("busy.yaml", POD)?;
    let name = format!("busy-{}", node.node_name);
    let pod = node
        .wait_pod(&name, Duration::from_secs(30), "the pod to run", |p| {
            p["status"]["phase"] == "Running" && p["status"]["podIP"].is_string()
        })
        .await?;
    let ip: std::net::IpAddr = pod["status"]["podIP"].as_str().unwrap().parse()?;

    // Traffic into the pod, from containerd's network namespace (the node's network here).
    let payload = vec![b'z'; SENT];
    wait_for(Duration::from_secs(10), "sending to the sink", || {
        let sent = containerd
            .netns()
            .run(|| -> anyhow::Result<()> {
                let address = std::net::SocketAddr::new(ip, 9000);
                let mut stream =
                    std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
                stream.write_all(&payload)?;
                stream.shutdown(std::net::Shutdown::Write)?;
                Ok(())
            })
            .and_then(|r| r);
        async move { sent.is_ok() }
    })
    .await?;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let summary = loop {
        let summary = get_json(&client, "/stats/summary").await?;
        let gaps = missing(&summary, &name);
        if gaps.is_empty() {
            break summary;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "still missing {gaps:?} in {:#}\n{}",
            pod_of(&summary, &name).unwrap_or(&summary),
            node.log_tail()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let pod = pod_of(&summary, &name).unwrap();
    let burn = container_of(pod, "burn").unwrap();
    let context = || format!("{pod:#}");
    // The pod cgroup holds the container (and the pause process): it used at least as much.
    assert!(
        num(&pod["cpu"]["usageCoreNanoSeconds"]) >= num(&burn["cpu"]["usageCoreNanoSeconds"]),
        "{}",
        context()
    );
    assert!(
        num(&pod["memory"]["workingSetBytes"]) >= 60 * MIB,
        "{}",
        context()
    );
    // Figures only the pod cgroup gives: page faults and its processes (the pause process, two
    // shells, nc).
    assert!(num(&pod["memory"]["pageFaults"]) > 0, "{}", context());
    assert!(
        num(&pod["process_stats"]["process_count"]) >= 3,
        "{}",
        context()
    );
    // A memory limit: what is left of it.
    let available = num(&burn["memory"]["availableBytes"]);
    assert!(
        available > 0 && available <= 512 * MIB - 60 * MIB,
        "{}",
        context()
    );
    assert!(burn["startTime"].is_string(), "{}", context());
    assert!(num(&burn["memory"]["pageFaults"]) > 0, "{}", context());
    assert!(num(&burn["logs"]["capacityBytes"]) > 0, "{}", context());
    assert_eq!(pod["network"]["name"], "eth0", "{}", context());
    assert!(
        pod["network"]["interfaces"]
            .as_array()
            .is_some_and(|i| i.iter().any(|i| i["name"] == "eth0")),
        "{}",
        context()
    );
    // The node: its file system, the image file system and the process limit.
    let node_json = &summary["node"];
    assert!(num(&node_json["fs"]["capacityBytes"]) > 0, "{node_json:#}");
    assert!(
        num(&node_json["runtime"]["imageFs"]["usedBytes"]) > 0,
        "{node_json:#}"
    );
    assert!(
        num(&node_json["rlimit"]["maxpid"]) > num(&node_json["rlimit"]["curproc"]),
        "{node_json:#}"
    );
    assert!(num(&node_json["rlimit"]["curproc"]) > 0, "{node_json:#}");
    assert!(node_json["startTime"].is_string(), "{node_json:#}");
    assert_eq!(
        node_json["runtime"]["containerFs"], node_json["runtime"]["imageFs"],
        "writable layers share the images' filesystem: {node_json:#}"
    );
    // `pods` always (`kubelet` and `runtime` too when their processes have their own cgroups).
    let all_pods = node_json["systemContainers"]
        .as_array()
        .and_then(|s| s.iter().find(|c| c["name"] == "pods"))
        .unwrap_or_else(|| panic!("no pods system container: {node_json:#}"));
    assert!(
        num(&all_pods["memory"]["workingSetBytes"]) >= num(&pod["memory"]["workingSetBytes"]),
        "{node_json:#}"
    );
    eprintln!("the pod in /stats/summary: {pod:#}");

    // metrics-server's source: the pod from its cgroup, the container's start.
    let request = http::Request::get("/metrics/resource").body(kube::client::Body::empty())?;
    let body = client
        .send(request)
        .await?
        .into_body()
        .collect()
        .await?
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    for prefix in [
        format!("pod_cpu_usage_seconds_total{{namespace=\"default\",pod=\"{name}\"}} "),
        format!(
            "container_start_time_seconds{{container=\"burn\",namespace=\"default\",pod=\"{name}\"}} "
        ),
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(&prefix)),
            "{prefix} in\n{text}"
        );
    }
    node.remove_manifest("busy.yaml")
        .context("removing the manifest")?;
    Ok(())
}
