//! kwk-node end to end against a real containerd: static pods appear, answer HTTP, are replaced
//! on edit and removed without leftovers; bad manifests are reported and harm nothing else, and
//! a manifest broken across a kwk-node restart does not stop its pod; a pod waits for the pod
//! network without leaving dead sandboxes.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed expectation aborts the test"
)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use kwk_cri::api;
use kwk_tests::config::{CniNetwork, reference_conflist};
use kwk_tests::node::TestNode;
use kwk_tests::{TestContainerd, privileged_tests_enabled, wait_for};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_kwk-node");
const WAIT: Duration = Duration::from_secs(30);

fn web_manifest(name: &str, page: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: {name}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: httpd
    image: localhost/kwk/busybox:1
    command: ["/bin/sh", "-c", "mkdir -p /www && echo $PAGE > /www/index.html && exec httpd -f -p 8080 -h /www"]
    env:
    - {{name: PAGE, value: "{page}"}}
    ports:
    - {{containerPort: 8080}}
    resources:
      limits: {{memory: 64Mi, cpu: 250m}}
"#
    )
}

fn is_running(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running"
        && pod["status"]["containerStatuses"][0]["ready"] == true
        && pod["status"]["podIP"].is_string()
}

/// The page the pod serves, fetched from inside the test network namespace.
async fn page(node: &TestContainerd, pod: &Value) -> anyhow::Result<String> {
    let ip = pod["status"]["podIP"].as_str().unwrap_or_default();
    let addr: SocketAddr = format!("{ip}:8080").parse()?;
    let mut body = String::new();
    wait_for(Duration::from_secs(10), "the pod's web server", || {
        if let Ok(Ok(r)) = node
            .netns()
            .run(|| kwk_tests::http::get(addr, "/index.html"))
        {
            body = r;
        }
        std::future::ready(kwk_tests::http::is_ok(&body))
    })
    .await?;
    Ok(body
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}

fn container_id(pod: &Value) -> String {
    pod["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn sandboxes(node: &TestContainerd) -> Vec<api::PodSandbox> {
    node.cri.list_pod_sandbox(None).await.unwrap()
}

/// Every pod cgroup directory under the test's cgroup root, in the memory hierarchy (v1) or
/// the unified one (v2).
fn pod_cgroups(cgroup_root: &str) -> Vec<String> {
    let base = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        format!("/sys/fs/cgroup{cgroup_root}")
    } else {
        format!("/sys/fs/cgroup/memory{cgroup_root}")
    };
    let mut found = Vec::new();
    let mut stack = vec![std::path::PathBuf::from(base)];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                let name = entry.file_name().to_string_lossy().to_string();
                if name.starts_with("pod") || name.contains("-pod") {
                    found.push(entry.path().display().to_string());
                }
                stack.push(entry.path());
            }
        }
    }
    found
}

/// File names below `dir`, recursively.
fn walk_files(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            } else {
                names.push(entry.file_name().to_string_lossy().to_string());
            }
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_pod_runs_is_replaced_on_edit_and_leaves_nothing_when_deleted()
-> anyhow::Result<()> {
    if !privileged_tests_enabled() {
        return Ok(());
    }
    let containerd = TestContainerd::start().await?;
    let node = TestNode::start(&containerd, Path::new(BIN)).await?;
    let name = format!("web-{}", node.node_name);

    node.write_manifest("web.yaml", &web_manifest("web", "one"))?;
    let first = node
        .wait_pod(&name, WAIT, "the static pod to run", is_running)
        .await?;
    assert_eq!(page(&containerd, &first).await?.trim(), "one");
    assert_eq!(
        first["metadata"]["annotations"]["kubernetes.io/config.source"],
        "file"
    );
    let first_uid = first["metadata"]["uid"].as_str().unwrap().to_string();

    // An edit anywhere in the spec (here an env value) replaces the pod.
    node.write_manifest("web.yaml", &web_manifest("web", "two"))?;
    let second = node
        .wait_pod(&name, WAIT, "the edited pod to run", |p| {
            p["metadata"]["uid"] != first_uid.as_str() && is_running(p)
        })
        .await?;
    assert_eq!(page(&containerd, &second).await?.trim(), "two");
    assert_ne!(container_id(&first), container_id(&second));
    wait_for(WAIT, "the old sandbox to be removed", || async {
        sandboxes(&containerd).await.len() == 1
    })
    .await?;

    // Delete: the pod, its sandbox and its cgroup go.
    node.remove_manifest("web.yaml")?;
    wait_for(WAIT, "the pod to disappear", || async {
        node.pods().is_ok_and(|p| p.is_empty()) && sandboxes(&containerd).await.is_empty()
    })
    .await
    .map_err(|e| e.context(node.log_tail()))?;
    wait_for(Duration::from_secs(5), "pod cgroups to be removed", || {
        std::future::ready(pod_cgroups(containerd.cgroup_root()).is_empty())
    })
    .await
    .map_err(|e| e.context(format!("{:?}", pod_cgroups(containerd.cgroup_root()))))?;
    let containers = containerd.cri.list_containers(None).await?;
    assert!(containers.is_empty(), "{containers:?}");
    // No pod IP is still allocated (host-local keeps one file per IP).
    let allocated: Vec<String> = walk_files(&containerd.layout().cni_data_dir())
        .into_iter()
        .filter(|f| f.parse::<std::net::IpAddr>().is_ok())
        .collect();
    assert!(allocated.is_empty(), "IPs still allocated: {allocated:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_manifests_are_reported_and_harm_no_other_pod() -> anyhow::Result<()> {
    if !privileged_tests_enabled() {
        return Ok(());
    }
    let containerd = TestContainerd::start().await?;
    let node = TestNode::start(&containerd, Path::new(BIN)).await?;
    node.write_manifest("good.yaml", &web_manifest("good", "ok"))?;
    let bad: HashMap<&str, String> = HashMap::from([
        (
            "broken.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: [oops\n".to_string(),
        ),
        (
            "service.yaml",
            "apiVersion: v1\nkind: Service\nmetadata: {name: svc}\n".to_string(),
        ),
        (
            "empty.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: empty}\nspec:\n  containers: []\n"
                .to_string(),
        ),
        (
            "huge.yaml",
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: huge\n  annotations: {{a: \"{}\"}}\n",
                "x".repeat(2 << 20)
            ),
        ),
    ]);
    for (file, content) in &bad {
        node.write_manifest(file, content)?;
    }
    let good = format!("good-{}", node.node_name);
    node.wait_pod(&good, WAIT, "the good pod to run", is_running)
        .await?;
    // Each bad file is named in the log with what is wrong.
    wait_for(
        Duration::from_secs(10),
        "errors for every bad manifest",
        || {
            let log = node.log();
            std::future::ready(
                bad.keys().all(|f| log.contains(f))
                    && log.contains("spec.containers")
                    && log.contains("Service"),
            )
        },
    )
    .await
    .map_err(|e| e.context(node.log_tail()))?;
    assert_eq!(node.pods()?.len(), 1, "only the good pod runs");
    Ok(())
}

/// (UID, container ID, restart count) of a running pod.
fn identity(pod: &Value) -> (String, String, i64) {
    (
        pod["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        container_id(pod),
        pod["status"]["containerStatuses"][0]["restartCount"]
            .as_i64()
            .unwrap_or(-1),
    )
}

/// The saved last good pods (`<root-dir>/static-pods/*.json`).
fn saved_records(node: &TestNode) -> Vec<String> {
    std::fs::read_dir(node.root_dir().join("static-pods"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".json"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_broken_across_a_restart_keeps_its_pod_running() -> anyhow::Result<()> {
    if !privileged_tests_enabled() {
        return Ok(());
    }
    let containerd = TestContainerd::start().await?;
    let mut node = TestNode::start(&containerd, Path::new(BIN)).await?;
    let name = format!("web-{}", node.node_name);
    node.write_manifest("web.yaml", &web_manifest("web", "one"))?;
    let first = node
        .wait_pod(&name, WAIT, "the static pod to run", is_running)
        .await?;
    let before = identity(&first);
    assert_eq!(before.2, 0);
    assert_eq!(saved_records(&node).len(), 1, "the last good pod is saved");

    // Break it: the pod keeps running.
    node.write_manifest(
        "web.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: [oops\n",
    )?;
    wait_for(Duration::from_secs(10), "the manifest error", || {
        std::future::ready(node.log().contains("keeping the last valid version"))
    })
    .await
    .map_err(|e| e.context(node.log_tail()))?;
    let pod = node.pod(&name)?.unwrap();
    assert_eq!(identity(&pod), before);

    // kill -9 and start again while the manifest is broken.
    let log_before = node.log().len();
    node.kill9()?;
    node.restart().await?;
    let restarted = node
        .wait_pod(&name, WAIT, "the pod to be adopted", is_running)
        .await?;
    assert_eq!(identity(&restarted), before);
    // Longer than orphan cleanup takes (at once on the first scan, then a relist every 1 s).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let later = node
        .pod(&name)?
        .ok_or_else(|| anyhow::anyhow!("pod gone after the restart\n{}", node.log_tail()))?;
    assert!(is_running(&later), "{later}\n{}", node.log_tail());
    assert_eq!(identity(&later), before, "{}", node.log_tail());
    let containers = containerd.cri.list_containers(None).await?;
    assert_eq!(containers.len(), 1, "{containers:?}");
    assert_eq!(sandboxes(&containerd).await.len(), 1);
    assert_eq!(page(&containerd, &later).await?.trim(), "one");
    // The new kwk-node still reports the broken file.
    let new_log = node.log()[log_before..].to_string();
    assert!(
        new_log.contains("web.yaml") && new_log.contains("invalid YAML"),
        "{new_log}"
    );

    // Fixed with new content: the new version replaces the old one.
    node.write_manifest("web.yaml", &web_manifest("web", "two"))?;
    let fixed = node
        .wait_pod(&name, WAIT, "the fixed pod to run", |p| {
            p["metadata"]["uid"] != before.0.as_str() && is_running(p)
        })
        .await?;
    assert_eq!(page(&containerd, &fixed).await?.trim(), "two");
    wait_for(WAIT, "the old sandbox to be removed", || async {
        sandboxes(&containerd).await.len() == 1
    })
    .await?;

    // Deleted while kwk-node is down: the next kwk-node stops the pod and drops the record.
    node.kill9()?;
    node.remove_manifest("web.yaml")?;
    node.restart().await?;
    wait_for(WAIT, "the pod to disappear", || async {
        node.pods().is_ok_and(|p| p.is_empty()) && sandboxes(&containerd).await.is_empty()
    })
    .await
    .map_err(|e| e.context(node.log_tail()))?;
    assert!(
        saved_records(&node).is_empty(),
        "{:?}",
        saved_records(&node)
    );
    Ok(())
}

fn sleeper_manifest(name: &str, cpu_request: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: sleep
    image: localhost/kwk/busybox:1
    command: ["/bin/sleep", "3600"]
    resources:
      requests: {{cpu: {cpu_request}}}
"#
    )
}

/// The burstable QoS cgroup's CPU share as the kernel holds it: `cpu.shares` (v1) or
/// `cpu.weight` (v2).
fn burstable_cpu(cgroup_root: &str) -> Option<String> {
    let path = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        format!("/sys/fs/cgroup{cgroup_root}/kubepods/burstable/cpu.weight")
    } else {
        format!("/sys/fs/cgroup/cpu{cgroup_root}/kubepods/burstable/cpu.shares")
    };
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_burstable_cgroup_gets_the_sum_of_its_pods_cpu_requests() -> anyhow::Result<()> {
    if !privileged_tests_enabled() {
        return Ok(());
    }
    let containerd = TestContainerd::start().await?;
    let node = TestNode::start(&containerd, Path::new(BIN)).await?;
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    // shares = milliCPU * 1024 / 1000; v2 weight = 1 + (shares - 2) * 9999 / 262142.
    let (both, one) = if v2 { ("12", "4") } else { ("307", "102") };
    let running = |p: &Value| p["status"]["phase"] == "Running";
    node.write_manifest("a.yaml", &sleeper_manifest("a", "100m"))?;
    node.write_manifest("b.yaml", &sleeper_manifest("b", "200m"))?;
    for pod in ["a", "b"] {
        node.wait_pod(
            &format!("{pod}-{}", node.node_name),
            WAIT,
            "the pod to run",
            running,
        )
        .await?;
    }
    let root = containerd.cgroup_root().to_string();
    wait_for(Duration::from_secs(5), "burstable shares of 300m", || {
        std::future::ready(burstable_cpu(&root).as_deref() == Some(both))
    })
    .await
    .map_err(|e| e.context(format!("{:?}", burstable_cpu(&root))))?;

    node.remove_manifest("b.yaml")?;
    wait_for(WAIT, "burstable shares of 100m", || {
        std::future::ready(burstable_cpu(&root).as_deref() == Some(one))
    })
    .await
    .map_err(|e| e.context(format!("{:?} {}", burstable_cpu(&root), node.log_tail())))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_waits_for_the_pod_network_without_leaving_dead_sandboxes() -> anyhow::Result<()> {
    if !privileged_tests_enabled() {
        return Ok(());
    }
    // No CNI network yet: containerd reports NetworkReady=false.
    let containerd = TestContainerd::start_with(true, |layout| {
        layout.cni_network = CniNetwork::Absent;
    })
    .await?;
    let node = TestNode::start(&containerd, Path::new(BIN)).await?;
    let name = format!("web-{}", node.node_name);
    node.write_manifest("web.yaml", &web_manifest("web", "late"))?;
    wait_for(WAIT, "the worker to report the network", || {
        std::future::ready(node.log().contains(
            "network is not ready: container runtime network not ready: NetworkReady=false",
        ))
    })
    .await
    .map_err(|e| e.context(node.log_tail()))?;
    // Retried meanwhile, but no sandbox is made that the CNI plugin could not set up.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let made = sandboxes(&containerd).await;
    assert!(made.is_empty(), "sandboxes without a network: {made:?}");

    // The network arrives: the pod runs, in one sandbox.
    let layout = containerd.layout();
    std::fs::write(
        layout.cni_conf_dir().join("10-kwk-test.conflist"),
        reference_conflist(layout),
    )?;
    let pod = node
        .wait_pod(
            &name,
            WAIT,
            "the pod to run once the network is ready",
            is_running,
        )
        .await
        .map_err(|e| e.context(node.log_tail()))?;
    assert_eq!(page(&containerd, &pod).await?.trim(), "late");
    assert_eq!(sandboxes(&containerd).await.len(), 1);
    Ok(())
}
