//! gRPC container probes (`grpc.health.v1`) through a whole single-node cluster (real
//! containerd, kwk-cni, the real apiserver, kubectl). The busybox image has no gRPC server, so
//! the test serves `grpc.health.v1.Health/Check` itself, inside the cluster's network
//! namespace, and the pods use `hostNetwork`: their pod IP is the node's, which is where the
//! prober dials. Readiness follows SERVING / NOT_SERVING / SERVING; a NOT_SERVING liveness
//! probe restarts the container with upstream's `Unhealthy` message; a closed port fails with
//! upstream's connect-timeout message.
//!
//! Needs `kwk-control-plane` and `kwk-cni` built next to kwk-node: `cargo build -p
//! kwk-control-plane -p kwk-cni` first.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed expectation aborts the test"
)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kwk_agent::pod::probe::handlers::{HealthCheckRequest, HealthCheckResponse};
use kwk_tests::cluster::{ClusterBinaries, NODE_IP, TestCluster, pod_condition as condition};
use kwk_tests::privileged_tests_enabled;
use serde_json::Value;
use tokio::net::TcpListener;

const KWK_NODE: &str = env!("CARGO_BIN_EXE_kwk-node");
const KWK: &str = env!("CARGO_BIN_EXE_kwk");
const WAIT: Duration = Duration::from_secs(60);

const SERVING: i32 = 1;
const NOT_SERVING: i32 = 2;

/// What the health server answers (status per service; unknown services get `NOT_FOUND`, as
/// grpc-go's health server) and what it was asked (service, `user-agent`).
#[derive(Default)]
struct Health {
    statuses: Mutex<HashMap<String, i32>>,
    asked: Mutex<Vec<(String, String)>>,
}

impl Health {
    fn set(&self, service: &str, status: i32) {
        self.statuses
            .lock()
            .unwrap()
            .insert(service.to_string(), status);
    }
}

/// Serves `grpc.health.v1.Health/Check` on `listener` over plaintext HTTP/2.
fn serve(listener: TcpListener, health: Arc<Health>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let health = health.clone();
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(socket).await else {
                    return;
                };
                while let Some(Ok((request, respond))) = conn.accept().await {
                    tokio::spawn(answer(request, respond, health.clone()));
                }
            });
        }
    })
}

/// Answers one call.
async fn answer(
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<bytes::Bytes>,
    health: Arc<Health>,
) {
    let agent = request
        .headers()
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let path = request.uri().path().to_string();
    let mut body = request.into_body();
    let mut bytes = Vec::new();
    while let Some(Ok(chunk)) = body.data().await {
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    let service = bytes
        .get(5..)
        .and_then(|m| <HealthCheckRequest as prost::Message>::decode(m).ok())
        .map(|r| r.service)
        .unwrap_or_default();
    health.asked.lock().unwrap().push((service.clone(), agent));
    let status = health.statuses.lock().unwrap().get(&service).copied();
    let head = http::Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .body(())
        .unwrap();
    let Ok(mut send) = respond.send_response(head, false) else {
        return;
    };
    let code = match status {
        _ if path != "/grpc.health.v1.Health/Check" => 12, // UNIMPLEMENTED
        Some(status) => {
            let message = prost::Message::encode_to_vec(&HealthCheckResponse { status });
            let mut frame = vec![0u8];
            frame.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
            frame.extend_from_slice(&message);
            let _ = send.send_data(bytes::Bytes::from(frame), false);
            0
        }
        None => 5, // NOT_FOUND
    };
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", code.to_string().parse().unwrap());
    let _ = send.send_trailers(trailers);
}

/// A listener on a free port of every address in the cluster's network namespace (the node's
/// IP among them); the socket is made there and used from here.
fn listen_in_cluster(cluster: &TestCluster) -> TcpListener {
    let listener = cluster
        .containerd()
        .netns()
        .run(|| std::net::TcpListener::bind("0.0.0.0:0"))
        .unwrap()
        .unwrap();
    listener.set_nonblocking(true).unwrap();
    TcpListener::from_std(listener).unwrap()
}

const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: grpc-ready}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: localhost/busybox:latest
    command: ["/bin/sh", "-c", "exec sleep 3600"]
    readinessProbe: {grpc: {port: PORT, service: ready}, periodSeconds: 1, failureThreshold: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: grpc-live}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: localhost/busybox:latest
    command: ["/bin/sh", "-c", "exec sleep 3600"]
    livenessProbe: {grpc: {port: PORT, service: live}, periodSeconds: 1, failureThreshold: 2}
---
apiVersion: v1
kind: Pod
metadata: {name: grpc-closed}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: localhost/busybox:latest
    command: ["/bin/sh", "-c", "exec sleep 3600"]
    readinessProbe: {grpc: {port: CLOSED}, periodSeconds: 1}
"#;

fn pod(cluster: &TestCluster, name: &str) -> Value {
    cluster.pod_json(name)
}

fn container(pod: &Value) -> &Value {
    &pod["status"]["containerStatuses"][0]
}

fn has_event(cluster: &TestCluster, name: &str, reason: &str, message: &str) -> bool {
    cluster
        .events_of(name)
        .iter()
        .any(|(r, m)| r == reason && m == message)
}

async fn wait(cluster: &TestCluster, what: &str, check: impl FnMut() -> bool) {
    cluster.wait_until(WAIT, what, check).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_probes_follow_the_health_service() {
    if !privileged_tests_enabled() {
        return;
    }
    let binaries = ClusterBinaries::next_to(Path::new(KWK_NODE), Path::new(KWK)).unwrap();
    let cluster = TestCluster::start(binaries).await.unwrap();

    let health = Arc::new(Health::default());
    health.set("ready", SERVING);
    health.set("live", SERVING);
    let listener = listen_in_cluster(&cluster);
    let port = listener.local_addr().unwrap().port();
    let _server = AbortOnDrop(serve(listener, health.clone()));
    let closed = listen_in_cluster(&cluster);
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    cluster.apply(
        &PODS
            .replace("CLOSED", &closed_port.to_string())
            .replace("PORT", &port.to_string()),
    );

    // SERVING: ready; the prober dialled the node's IP (the hostNetwork pod's IP) and asked
    // for the probe's service with the kubelet's user agent.
    wait(&cluster, "grpc-ready Ready", || {
        condition(&pod(&cluster, "grpc-ready"), "Ready") == "True"
    })
    .await;
    assert_eq!(pod(&cluster, "grpc-ready")["status"]["podIP"], NODE_IP);
    {
        let asked = health.asked.lock().unwrap();
        assert!(
            asked
                .iter()
                .any(|(s, agent)| s == "ready" && agent.starts_with("kube-probe/")),
            "{asked:?}"
        );
    }

    // NOT_SERVING: unready (not restarted), with upstream's message; SERVING again: ready.
    health.set("ready", NOT_SERVING);
    wait(&cluster, "grpc-ready unready", || {
        let p = pod(&cluster, "grpc-ready");
        condition(&p, "Ready") == "False" && condition(&p, "ContainersReady") == "False"
    })
    .await;
    wait(&cluster, "grpc-ready's Unhealthy event", || {
        has_event(
            &cluster,
            "grpc-ready",
            "Unhealthy",
            "Readiness probe failed: service unhealthy (responded with \"NOT_SERVING\")",
        )
    })
    .await;
    health.set("ready", SERVING);
    wait(&cluster, "grpc-ready Ready again", || {
        condition(&pod(&cluster, "grpc-ready"), "Ready") == "True"
    })
    .await;
    assert_eq!(container(&pod(&cluster, "grpc-ready"))["restartCount"], 0);

    // Liveness NOT_SERVING: killed and restarted with the events; SERVING again: it stays up.
    wait(&cluster, "grpc-live running", || {
        container(&pod(&cluster, "grpc-live"))["state"]["running"].is_object()
    })
    .await;
    assert_eq!(container(&pod(&cluster, "grpc-live"))["restartCount"], 0);
    health.set("live", NOT_SERVING);
    wait(&cluster, "grpc-live killed for its liveness probe", || {
        has_event(
            &cluster,
            "grpc-live",
            "Killing",
            "Container main failed liveness probe, will be restarted",
        )
    })
    .await;
    health.set("live", SERVING);
    assert!(
        has_event(
            &cluster,
            "grpc-live",
            "Unhealthy",
            "Liveness probe failed: service unhealthy (responded with \"NOT_SERVING\")",
        ),
        "{:?}",
        cluster.events_of("grpc-live")
    );
    wait(&cluster, "grpc-live restarted and running", || {
        let p = pod(&cluster, "grpc-live");
        container(&p)["restartCount"].as_i64() >= Some(1)
            && container(&p)["state"]["running"].is_object()
            && condition(&p, "Ready") == "True"
    })
    .await;

    // A closed port: running, never ready, upstream's connect-timeout message.
    let message = format!(
        "Readiness probe failed: timeout: failed to connect service \"{NODE_IP}:{closed_port}\" within 1s: context deadline exceeded"
    );
    wait(&cluster, "grpc-closed's Unhealthy event", || {
        has_event(&cluster, "grpc-closed", "Unhealthy", &message)
    })
    .await;
    let p = pod(&cluster, "grpc-closed");
    assert_eq!(p["status"]["phase"], "Running", "{p}");
    assert_eq!(condition(&p, "Ready"), "False", "{p}");
    assert_eq!(container(&p)["restartCount"], 0, "{p}");
}

/// Stops the health server when the test ends, also on failure.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
