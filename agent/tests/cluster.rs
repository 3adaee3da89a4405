//! A single-node cluster from scratch, as a server is set up: `kwk init`, then kwk-node runs the
//! control plane as static pods from the control plane image it imports. Real containerd (with
//! kwk-cni as its only CNI plugin), real kubectl, the real apiserver in a container.
//!
//! Needs `kwk-control-plane` and `kwk-cni` built next to kwk-node: `cargo build -p
//! kwk-control-plane -p kwk-cni` first.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed expectation aborts the test"
)]

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use kwk_tests::cluster::{ClusterBinaries, NODE_NAME, TestCluster};
use kwk_tests::privileged_tests_enabled;

const KWK_NODE: &str = env!("CARGO_BIN_EXE_kwk-node");
const KWK: &str = env!("CARGO_BIN_EXE_kwk");

async fn cluster() -> TestCluster {
    let binaries = ClusterBinaries::next_to(Path::new(KWK_NODE), Path::new(KWK)).unwrap();
    TestCluster::start(binaries).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_runs_as_static_pods_and_comes_back_when_killed() {
    if !privileged_tests_enabled() {
        return;
    }
    let mut cluster = cluster().await;
    let namespaces = cluster
        .kubectl(&["get", "namespaces", "-o", "name"])
        .unwrap();
    assert!(namespaces.contains("namespace/kube-system"), "{namespaces}");

    // kwk init a second time changes nothing.
    let pki = cluster.config_dir().join("pki");
    let before = std::fs::read(pki.join("ca.crt")).unwrap();

    // The apiserver's container dies: kwk-node restarts it and the API comes back.
    let pki = pki.display().to_string();
    let killed = cluster.kill_processes(&["apiserver", &pki]).unwrap();
    assert_eq!(killed.len(), 1, "one apiserver process: {killed:?}");
    cluster
        .wait_apiserver(Duration::from_secs(90))
        .await
        .unwrap();
    let again = cluster.kill_processes(&["apiserver", &pki]).unwrap();
    assert_eq!(again.len(), 1, "the apiserver was restarted: {again:?}");
    assert_ne!(again, killed, "a new process");
    cluster
        .wait_apiserver(Duration::from_secs(90))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(cluster.config_dir().join("pki/ca.crt")).unwrap(),
        before
    );
}

const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: httpd
        image: localhost/busybox:latest
        command: ["/bin/sh", "-c", "mkdir -p /www && echo hello from $(hostname) > /www/index.html && exec httpd -f -p 80 -h /www"]
        ports: [{containerPort: 80}]
"#;

const SERVICE: &str = r#"apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 8080, targetPort: 80}]
"#;

/// The `web` Service reaches every web pod from a pod (the client among them: hairpin):
/// kwk-node's proxy programs the node's network namespace from the Service and its
/// EndpointSlice.
async fn the_service_reaches_every_pod(cluster: &TestCluster, pods: &[(String, String, String)]) {
    let applied = cluster
        .kubectl_output(&["apply", "-f", "-"], Some(SERVICE))
        .unwrap();
    assert!(applied.status.success(), "{applied:?}");
    let cluster_ip = cluster
        .kubectl(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"])
        .unwrap();
    let host = cluster_ip.trim();
    let wanted: std::collections::BTreeSet<String> =
        pods.iter().map(|(name, _, _)| name.clone()).collect();
    // From a pod: its traffic leaves through the bridge and is DNATed on the node; 12 requests
    // in one exec (busybox nc: the static busybox's wget crashes resolving), until every pod
    // has answered.
    let (client, _, _) = &pods[0];
    let script = format!(
        "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} 8080; done"
    );
    let mut seen = std::collections::BTreeSet::new();
    kwk_tests::wait_for(
        Duration::from_secs(60),
        "every web pod answering through the Service",
        || {
            let out = cluster
                .kubectl(&["exec", client, "--", "sh", "-c", &script])
                .unwrap_or_default();
            seen.extend(
                out.lines()
                    .filter_map(|l| l.trim().strip_prefix("hello from ").map(str::to_owned)),
            );
            std::future::ready(seen == wanted)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}: saw {seen:?} of {wanted:?}\n{}", cluster.log_tail()));
    cluster.kubectl(&["delete", "service", "web"]).unwrap();
}

/// `(name, phase, podIP)` of the `app=web` pods.
fn web_pods(cluster: &TestCluster) -> Vec<(String, String, String)> {
    let out = cluster
        .kubectl(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.status.phase} {.status.podIP}{\"\\n\"}{end}",
        ])
        .unwrap_or_default();
    out.lines()
        .map(|l| {
            let mut f = l.split_whitespace().map(str::to_owned);
            (
                f.next().unwrap_or_default(),
                f.next().unwrap_or_default(),
                f.next().unwrap_or_default(),
            )
        })
        .collect()
}

async fn wait_web_pods(cluster: &TestCluster, running: usize) {
    kwk_tests::wait_for(
        Duration::from_secs(90),
        &format!("{running} web pods Running with IPs"),
        || {
            let pods = web_pods(cluster);
            let ok = pods.len() == running
                && pods
                    .iter()
                    .all(|(_, phase, ip)| phase == "Running" && !ip.is_empty());
            std::future::ready(ok)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}: {:?}\n{}", web_pods(cluster), cluster.log_tail()));
}

/// The web pods' IPs come from the node's podCIDR, through the network list kwk-node wrote into
/// containerd's conf dir and kwk-cni's allocations under the test's directory.
fn pod_ips_come_from_kwk_cni(cluster: &TestCluster) {
    let pod_cidr = cluster
        .kubectl(&["get", "node", NODE_NAME, "-o", "jsonpath={.spec.podCIDR}"])
        .unwrap();
    let (network, prefix) = pod_cidr.trim().split_once('/').unwrap();
    let network: Ipv4Addr = network.parse().unwrap();
    let mask = u32::MAX << (32 - prefix.parse::<u32>().unwrap());
    let layout = cluster.containerd().layout();
    let conflist = std::fs::read_to_string(layout.cni_conf_dir().join("10-kwk.conflist")).unwrap();
    assert!(conflist.contains(pod_cidr.trim()), "{conflist}");
    for (name, _, ip) in web_pods(cluster) {
        let ip: Ipv4Addr = ip.parse().unwrap();
        assert_eq!(
            u32::from(ip) & mask,
            u32::from(network),
            "pod {name}'s IP {ip} is outside the podCIDR {pod_cidr}"
        );
        let allocation = layout.cni_data_dir().join("kwk").join(ip.to_string());
        assert!(allocation.exists(), "kwk-cni's allocation {allocation:?}");
    }
}

/// The containers of `app=web` pods containerd runs.
async fn web_containers(cluster: &TestCluster) -> usize {
    let containers = cluster
        .containerd()
        .cri
        .list_containers(None)
        .await
        .unwrap();
    containers
        .iter()
        .filter(|c| {
            c.labels
                .get("io.kubernetes.container.name")
                .map(String::as_str)
                == Some("httpd")
                && c.state == kwk_cri::api::ContainerState::ContainerRunning as i32
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_runs_scales_and_goes_away_on_the_node() {
    if !privileged_tests_enabled() {
        return;
    }
    let mut cluster = cluster().await;
    cluster
        .wait_node_ready(Duration::from_secs(60))
        .await
        .unwrap();
    // The control plane shows up as mirror pods.
    let mut system = String::new();
    kwk_tests::wait_for(
        Duration::from_secs(60),
        "the control plane's mirror pods",
        || {
            system = cluster
                .kubectl(&["get", "pods", "-n", "kube-system", "-o", "name"])
                .unwrap_or_default();
            let all = [
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler",
            ]
            .iter()
            .all(|c| system.contains(&format!("pod/{c}-kwkt-node")));
            std::future::ready(all)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}: {system}\n{}", cluster.log_tail()));

    let applied = cluster
        .kubectl_output(&["apply", "-f", "-"], Some(DEPLOYMENT))
        .unwrap();
    assert!(applied.status.success(), "{applied:?}");
    wait_web_pods(&cluster, 3).await;
    pod_ips_come_from_kwk_cni(&cluster);
    let (_, _, ip) = web_pods(&cluster)[0].clone();
    let addr: std::net::SocketAddr = format!("{ip}:80").parse().unwrap();
    let body = cluster
        .containerd()
        .netns()
        .run(|| kwk_tests::http::get(addr, "/"))
        .unwrap()
        .unwrap();
    assert!(body.contains("hello from web-"), "{body}");
    assert_eq!(web_containers(&cluster).await, 3);
    the_service_reaches_every_pod(&cluster, &web_pods(&cluster)).await;
    let (pod, _, _) = web_pods(&cluster)[0].clone();
    kubectl_exec_logs_and_port_forward(&cluster, &pod).await;

    // kill -9 of kwk-node restarts no container.
    let before = cluster
        .kubectl(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].status.containerStatuses[0].containerID}",
        ])
        .unwrap();
    cluster.restart_node(Duration::from_secs(60)).await.unwrap();
    wait_web_pods(&cluster, 3).await;
    let after = cluster
        .kubectl(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].status.containerStatuses[0].containerID}",
        ])
        .unwrap();
    assert_eq!(after, before, "same containers after kwk-node's restart");

    cluster
        .kubectl(&["scale", "deployment", "web", "--replicas=0"])
        .unwrap();
    wait_web_pods(&cluster, 0).await;
    kwk_tests::wait_for(
        Duration::from_secs(30),
        "the containers to stop",
        || async { web_containers(&cluster).await == 0 },
    )
    .await
    .unwrap();
    cluster
        .kubectl(&["scale", "deployment", "web", "--replicas=3"])
        .unwrap();
    wait_web_pods(&cluster, 3).await;

    cluster.kubectl(&["delete", "deployment", "web"]).unwrap();
    wait_web_pods(&cluster, 0).await;
    kwk_tests::wait_for(Duration::from_secs(30), "the containers to go", || async {
        web_containers(&cluster).await == 0
    })
    .await
    .unwrap();
}

/// Reads `child`'s stdout on a thread until `done` says so or `within` passes; kills it.
fn read_until(
    mut child: std::process::Child,
    within: Duration,
    done: impl Fn(&str) -> bool + Send + 'static,
) -> String {
    use std::io::Read as _;
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = String::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            if done(&seen) {
                break;
            }
        }
        let _ = tx.send(seen);
    });
    let seen = rx.recv_timeout(within).unwrap_or_default();
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    format!("{seen}{}", String::from_utf8_lossy(&output.stderr))
}

/// `kubectl exec` (output and exit code), `kubectl logs -f`, `kubectl port-forward`, through
/// the apiserver to the kubelet API, and a request to the kubelet API without credentials.
async fn kubectl_exec_logs_and_port_forward(cluster: &TestCluster, pod: &str) {
    let out = cluster
        .kubectl(&["exec", pod, "--", "cat", "/www/index.html"])
        .unwrap();
    assert!(out.contains("hello from web-"), "{out}");
    let failed = cluster
        .kubectl_output(
            &["exec", pod, "--", "sh", "-c", "echo oops >&2; exit 7"],
            None,
        )
        .unwrap();
    assert_eq!(failed.status.code(), Some(7), "{failed:?}");
    assert!(
        String::from_utf8_lossy(&failed.stderr).contains("oops"),
        "{failed:?}"
    );
    let copied = cluster
        .kubectl_output(&["exec", "-i", pod, "--", "cat"], Some("through stdin\n"))
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&copied.stdout), "through stdin\n");

    // kubectl cp both ways (tar over exec).
    let local = cluster.config_dir().join("copied.html");
    cluster
        .kubectl(&[
            "cp",
            &format!("{pod}:/www/index.html"),
            &local.display().to_string(),
        ])
        .unwrap();
    let copied = std::fs::read_to_string(&local).unwrap();
    assert!(copied.contains("hello from web-"), "{copied}");
    std::fs::write(&local, "sent by kubectl cp\n").unwrap();
    cluster
        .kubectl(&[
            "cp",
            &local.display().to_string(),
            &format!("{pod}:/tmp/sent.txt"),
        ])
        .unwrap();
    let sent = cluster
        .kubectl(&["exec", pod, "--", "cat", "/tmp/sent.txt"])
        .unwrap();
    assert_eq!(sent, "sent by kubectl cp\n");

    cluster
        .kubectl(&[
            "run",
            "ticker",
            "--image=localhost/busybox:latest",
            "--",
            "sh",
            "-c",
            "i=0; while true; do echo tick $i; i=$((i+1)); sleep 1; done",
        ])
        .unwrap();
    kwk_tests::wait_for(Duration::from_secs(60), "the ticker to run", || {
        let phase = cluster
            .kubectl(&["get", "pod", "ticker", "-o", "jsonpath={.status.phase}"])
            .unwrap_or_default();
        std::future::ready(phase == "Running")
    })
    .await
    .unwrap();
    let follow = cluster.spawn_kubectl(&["logs", "-f", "ticker"]).unwrap();
    let seen = read_until(follow, Duration::from_secs(20), |s| {
        s.lines().filter(|l| l.starts_with("tick ")).count() >= 4
    });
    let ticks: Vec<&str> = seen.lines().filter(|l| l.starts_with("tick ")).collect();
    assert!(ticks.len() >= 4, "logs -f streamed new lines: {seen}");
    cluster
        .kubectl(&["delete", "pod", "ticker", "--wait=false"])
        .unwrap();

    let forward = cluster
        .spawn_kubectl(&["port-forward", &format!("pod/{pod}"), "18080:80"])
        .unwrap();
    let addr: std::net::SocketAddr = "127.0.0.1:18080".parse().unwrap();
    let mut body = String::new();
    let answered = kwk_tests::wait_for(Duration::from_secs(20), "port-forward to answer", || {
        if let Ok(Ok(got)) = cluster
            .containerd()
            .netns()
            .run(|| kwk_tests::http::get(addr, "/"))
        {
            body = got;
        }
        std::future::ready(body.contains("hello from web-"))
    })
    .await;
    let log = read_until(forward, Duration::from_millis(100), |_| true);
    answered.unwrap_or_else(|e| panic!("{e:#}: {log}"));

    let url = format!("https://{}:10250/pods", cluster.node_ip());
    let anonymous = cluster
        .containerd()
        .netns()
        .run(|| {
            std::process::Command::new("curl")
                .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", &url])
                .output()
        })
        .unwrap()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&anonymous.stdout), "401");
}
