//! Container probes through a whole single-node cluster (real containerd, kwk-cni, the real
//! apiserver, kubectl): readiness over HTTP toggles the pod's `Ready` condition and its
//! EndpointSlice endpoint; an HTTP 500 and a closed TCP port keep pods unready with upstream's
//! `Unhealthy` messages; a failing exec liveness probe restarts the container with the
//! `Killing` event; a startup probe holds liveness off until it passes; a hung exec probe is
//! killed at its timeout instead of piling up. Lifecycle hooks: postStart runs in the
//! container, preStop before SIGTERM, a failed postStart kills the container, a preStop is cut
//! at the grace period.
//!
//! Needs `kwk-control-plane` and `kwk-cni` built next to kwk-node: `cargo build -p
//! kwk-control-plane -p kwk-cni` first.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed expectation aborts the test"
)]

use std::path::Path;
use std::time::Duration;

use kwk_tests::cluster::{ClusterBinaries, TestCluster, pod_condition as condition};
use kwk_tests::privileged_tests_enabled;
use serde_json::Value;

const KWK_NODE: &str = env!("CARGO_BIN_EXE_kwk-node");
const KWK: &str = env!("CARGO_BIN_EXE_kwk");
const WAIT: Duration = Duration::from_secs(90);

const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: toggle, labels: {app: toggle}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: localhost/busybox:latest
    command: ["/bin/sh", "-c", "mkdir -p /www && echo ok > /www/ready.html && exec httpd -f -p 80 -h /www"]
    ports: [{name: http, containerPort: 80}]
    readinessProbe: {httpGet: {path: /ready.html, port: http}, periodSeconds: 1, failureThreshold: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: error500}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: localhost/busybox:latest
    command: ["/bin/sh", "-c", "mkdir -p /www/cgi-bin && printf '#!/bin/sh\\necho Status: 500 Internal Server Error\\necho\\n' > /www/cgi-bin/fail && chmod +x /www/cgi-bin/fail && exec httpd -f -p 80 -h /www"]
    readinessProbe: {httpGet: {path: /cgi-bin/fail, port: 80}, periodSeconds: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: closed}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: localhost/busybox:latest
    command: ["/bin/sh", "-c", "exec sleep 3600"]
    readinessProbe: {tcpSocket: {port: 9999}, periodSeconds: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: liveness}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: localhost/busybox:latest
    command: ["/bin/sh", "-c", "touch /tmp/healthy && exec sleep 3600"]
    livenessProbe: {exec: {command: [cat, /tmp/healthy]}, periodSeconds: 1, failureThreshold: 2}
---
apiVersion: v1
kind: Pod
metadata: {name: startup}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: localhost/busybox:latest
    command: ["/bin/sh", "-c", "sleep 6 && touch /tmp/started && exec sleep 3600"]
    startupProbe: {exec: {command: [cat, /tmp/started]}, periodSeconds: 1, failureThreshold: 30}
    livenessProbe: {exec: {command: [cat, /tmp/started]}, periodSeconds: 1, failureThreshold: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: hung}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: localhost/busybox:latest
    command: ["/bin/sh", "-c", "exec sleep 3600"]
    readinessProbe: {exec: {command: [sleep, "30"]}, periodSeconds: 1, timeoutSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: toggle}
spec:
  selector: {app: toggle}
  ports: [{port: 80}]
"#;

fn json(cluster: &TestCluster, args: &[&str]) -> Value {
    cluster.json(args)
}

fn pod(cluster: &TestCluster, name: &str) -> Value {
    cluster.pod_json(name)
}

fn container(pod: &Value) -> &Value {
    &pod["status"]["containerStatuses"][0]
}

fn events(cluster: &TestCluster, name: &str) -> Vec<(String, String)> {
    cluster.events_of(name)
}

async fn wait(cluster: &TestCluster, what: &str, check: impl FnMut() -> bool) {
    cluster.wait_until(WAIT, what, check).await;
}

/// Whether the toggle pod's endpoint in its Service's EndpointSlice is ready.
fn endpoint_ready(cluster: &TestCluster) -> Option<bool> {
    let slices = json(
        cluster,
        &[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=toggle",
            "-o",
            "json",
        ],
    );
    slices["items"]
        .as_array()?
        .iter()
        .flat_map(|s| s["endpoints"].as_array().into_iter().flatten())
        .find_map(|e| e["conditions"]["ready"].as_bool())
}

/// A fresh cluster with `manifests` applied.
async fn cluster_with(manifests: &str) -> TestCluster {
    let binaries = ClusterBinaries::next_to(Path::new(KWK_NODE), Path::new(KWK)).unwrap();
    let cluster = TestCluster::start(binaries).await.unwrap();
    cluster.apply(manifests);
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_drive_readiness_restarts_and_events() {
    if !privileged_tests_enabled() {
        return;
    }
    let cluster = cluster_with(PODS).await;

    // Readiness over HTTP: ready, unready when the file goes, ready again when it is back;
    // the EndpointSlice follows.
    wait(&cluster, "toggle Ready", || {
        condition(&pod(&cluster, "toggle"), "Ready") == "True"
    })
    .await;
    assert_eq!(container(&pod(&cluster, "toggle"))["ready"], true);
    wait(&cluster, "toggle's endpoint ready", || {
        endpoint_ready(&cluster) == Some(true)
    })
    .await;
    cluster
        .kubectl(&["exec", "toggle", "--", "rm", "/www/ready.html"])
        .unwrap();
    wait(&cluster, "toggle unready", || {
        let p = pod(&cluster, "toggle");
        condition(&p, "Ready") == "False" && condition(&p, "ContainersReady") == "False"
    })
    .await;
    wait(&cluster, "toggle's endpoint unready", || {
        endpoint_ready(&cluster) == Some(false)
    })
    .await;
    assert_eq!(container(&pod(&cluster, "toggle"))["restartCount"], 0);
    cluster
        .kubectl(&[
            "exec",
            "toggle",
            "--",
            "sh",
            "-c",
            "echo ok > /www/ready.html",
        ])
        .unwrap();
    wait(&cluster, "toggle Ready again", || {
        condition(&pod(&cluster, "toggle"), "Ready") == "True"
    })
    .await;

    // An HTTP 500 and a closed port: running, never ready, upstream's messages.
    for (name, message) in [
        (
            "error500",
            "Readiness probe failed: HTTP probe failed with statuscode: 500".to_string(),
        ),
        ("closed", "connect: connection refused".to_string()),
    ] {
        wait(&cluster, &format!("{name}'s Unhealthy event"), || {
            events(&cluster, name)
                .iter()
                .any(|(r, m)| r == "Unhealthy" && m.contains(&message))
        })
        .await;
        let p = pod(&cluster, name);
        assert_eq!(p["status"]["phase"], "Running", "{p}");
        assert_eq!(condition(&p, "Ready"), "False", "{p}");
        assert_eq!(container(&p)["ready"], false, "{p}");
        assert_eq!(container(&p)["started"], true, "{p}");
    }

    // Liveness: the file goes, the container is killed and restarted, with the events.
    wait(&cluster, "liveness running", || {
        container(&pod(&cluster, "liveness"))["state"]["running"].is_object()
    })
    .await;
    assert_eq!(container(&pod(&cluster, "liveness"))["restartCount"], 0);
    cluster
        .kubectl(&["exec", "liveness", "--", "rm", "/tmp/healthy"])
        .unwrap();
    wait(&cluster, "liveness restarted", || {
        let p = pod(&cluster, "liveness");
        container(&p)["restartCount"].as_i64() >= Some(1)
            && container(&p)["lastState"]["terminated"].is_object()
    })
    .await;
    let seen = events(&cluster, "liveness");
    assert!(
        seen.iter().any(|(r, m)| r == "Unhealthy"
            && m.starts_with("Liveness probe failed: cat: can't open '/tmp/healthy'")),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|(r, m)| r == "Killing"
            && m == "Container main failed liveness probe, will be restarted"),
        "{seen:?}"
    );
    // The new instance recreated the file: it stays up.
    wait(&cluster, "liveness running again", || {
        container(&pod(&cluster, "liveness"))["state"]["running"].is_object()
    })
    .await;

    // Startup: liveness (failureThreshold 1) would kill the container before the file exists;
    // gated on the startup probe, it never does.
    wait(&cluster, "startup started and ready", || {
        let p = pod(&cluster, "startup");
        container(&p)["started"] == true && container(&p)["ready"] == true
    })
    .await;
    let p = pod(&cluster, "startup");
    assert_eq!(container(&p)["restartCount"], 0, "{p}");

    // A hung exec probe is killed at its timeout: at most one `sleep 30` at a time.
    wait(&cluster, "hung's timed-out probe event", || {
        events(&cluster, "hung").iter().any(|(r, m)| {
            r == "Unhealthy" && m == "Readiness probe failed: command \"sleep 30\" timed out"
        })
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let ps = cluster
        .kubectl(&["exec", "hung", "--", "ps", "-o", "args"])
        .unwrap();
    let sleeping = ps.lines().filter(|l| l.trim() == "sleep 30").count();
    assert!(sleeping <= 1, "exec probes piled up:\n{ps}");
    assert_eq!(condition(&pod(&cluster, "hung"), "Ready"), "False");
}

const HOOK_PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: hooks}
spec:
  terminationGracePeriodSeconds: 10
  volumes: [{name: log, hostPath: {path: LOG_DIR, type: Directory}}]
  containers:
  - name: main
    image: localhost/busybox:latest
    command: ["/bin/sh", "-c", "trap 'echo TERM >> /log/order; exit 0' TERM; while true; do sleep 0.2; done"]
    volumeMounts: [{name: log, mountPath: /log}]
    lifecycle:
      postStart: {exec: {command: [sh, -c, "echo poststart > /log/post"]}}
      preStop: {exec: {command: [sh, -c, "echo prestop >> /log/order"]}}
---
apiVersion: v1
kind: Pod
metadata: {name: badstart}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: localhost/busybox:latest
    command: ["/bin/sh", "-c", "exec sleep 3600"]
    lifecycle: {postStart: {exec: {command: ["false"]}}}
---
apiVersion: v1
kind: Pod
metadata: {name: slowstop}
spec:
  terminationGracePeriodSeconds: 3
  containers:
  - name: main
    image: localhost/busybox:latest
    command: ["/bin/sh", "-c", "exec sleep 3600"]
    lifecycle: {preStop: {sleep: {seconds: 3600}}}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_hooks_run_in_order_and_are_bounded() {
    if !privileged_tests_enabled() {
        return;
    }
    let log = tempfile::tempdir().unwrap();
    let cluster =
        cluster_with(&HOOK_PODS.replace("LOG_DIR", &log.path().display().to_string())).await;

    // postStart ran in the container; preStop runs before the container gets SIGTERM.
    wait(&cluster, "hooks Ready", || {
        condition(&pod(&cluster, "hooks"), "Ready") == "True"
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(log.path().join("post")).unwrap(),
        "poststart\n"
    );
    cluster
        .kubectl(&["delete", "pod", "hooks", "--wait=true", "--timeout=60s"])
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(log.path().join("order")).unwrap(),
        "prestop\nTERM\n"
    );

    // A failed postStart: the event, and the container is killed (then restarted).
    wait(&cluster, "badstart's FailedPostStartHook", || {
        events(&cluster, "badstart")
            .iter()
            .any(|(r, m)| r == "FailedPostStartHook" && m.starts_with("Exec lifecycle hook"))
    })
    .await;
    assert_ne!(condition(&pod(&cluster, "badstart"), "Ready"), "True");

    // A preStop that would sleep an hour is cut at the grace period (3 s, then 2 s to stop).
    wait(&cluster, "slowstop running", || {
        container(&pod(&cluster, "slowstop"))["state"]["running"].is_object()
    })
    .await;
    let deleted = cluster
        .kubectl_output(
            &["delete", "pod", "slowstop", "--wait=true", "--timeout=30s"],
            None,
        )
        .unwrap();
    assert!(
        deleted.status.success(),
        "the preStop hook held the pod past its grace period: {deleted:?}\n{}",
        cluster.log_tail()
    );
}
