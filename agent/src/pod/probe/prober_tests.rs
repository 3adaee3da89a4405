//! Tests of the prober: which probes a pod's state asks for, the started/ready view, the
//! network handlers against local servers, and probe tasks publishing verdicts.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use super::*;
use crate::pod::fake_runtime::FakeRuntime;
use crate::pod::observed::{ObservedContainer, ObservedSandbox};
use crate::pod::probe::spec::Scheme;

fn pod(yaml: &str) -> Pod {
    serde_saphyr::from_str(yaml).expect("pod yaml")
}

fn running(id: &str, name: &str, sandbox: &str) -> ObservedContainer {
    ObservedContainer {
        created_at: 1,
        started_at: 2,
        ..ObservedContainer::running(id, sandbox, name)
    }
}

fn observed(containers: Vec<ObservedContainer>) -> ObservedPod {
    ObservedPod::new(
        vec![ObservedSandbox {
            id: "s1".into(),
            attempt: 0,
            ready: true,
            created_at: 1,
            ips: vec!["10.1.0.7".into()],
        }],
        containers,
    )
}

const WEB: &str = r#"
metadata: {name: web, uid: u1}
spec:
  containers:
  - name: app
    image: busybox
    readinessProbe: {tcpSocket: {port: 80}}
    livenessProbe: {httpGet: {port: 80, path: /healthz}}
  - name: plain
    image: busybox
  - name: broken
    image: busybox
    readinessProbe: {httpGet: {port: nope}}
"#;

#[test]
fn targets_are_the_probes_of_running_instances_in_the_current_sandbox() {
    let p = pod(WEB);
    let obs = observed(vec![
        running("c1", "app", "s1"),
        running("c2", "plain", "s1"),
        running("c3", "broken", "s1"),
        running("old", "app", "s0"),
    ]);
    let (targets, invalid) = desired_targets(&p, &obs, Some("192.0.2.1"));
    let got: Vec<(&str, ProbeKind, &str)> = targets
        .iter()
        .map(|t| (t.container_id.as_str(), t.spec.kind, t.pod_ip.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("c1", ProbeKind::Liveness, "10.1.0.7"),
            ("c1", ProbeKind::Readiness, "10.1.0.7")
        ]
    );
    assert_eq!(invalid.len(), 1);
    assert!(
        invalid[0].contains("readinessProbe.httpGet.port"),
        "{invalid:?}"
    );

    // hostNetwork pods are probed on the node's IP.
    let host = pod(&WEB.replace("spec:\n", "spec:\n  hostNetwork: true\n"));
    let (targets, _) = desired_targets(&host, &obs, Some("192.0.2.1"));
    assert!(targets.iter().all(|t| t.pod_ip == "192.0.2.1"));

    // No ready sandbox: nothing to probe.
    let mut stopped = obs;
    stopped.sandboxes[0].ready = false;
    assert!(desired_targets(&p, &stopped, None).0.is_empty());
}

#[test]
fn tasks_follow_the_targets() {
    let p = pod(WEB);
    let (targets, _) = desired_targets(&p, &observed(vec![running("c9", "app", "s1")]), None);
    let running: BTreeSet<(String, ProbeKind)> = [
        ("c1".to_string(), ProbeKind::Liveness),
        ("c9".to_string(), ProbeKind::Liveness),
    ]
    .into();
    let (stop, start) = diff_tasks(&running, &targets);
    assert_eq!(stop, [("c1".to_string(), ProbeKind::Liveness)]);
    let start: Vec<(&str, ProbeKind)> = start
        .iter()
        .map(|t| (t.container_id.as_str(), t.spec.kind))
        .collect();
    assert_eq!(start, [("c9", ProbeKind::Readiness)]);
}

#[test]
fn started_and_ready_views() {
    use ProbeKind::{Liveness, Readiness, Startup};
    let kinds = |k: &[ProbeKind]| k.iter().copied().collect::<BTreeSet<_>>();
    let snapshot = |verdicts: &[(ProbeKind, Verdict)]| ProbeSnapshot {
        containers: BTreeMap::from([(
            "c".to_string(),
            ContainerProbes {
                verdicts: verdicts.iter().copied().collect(),
                failure: None,
            },
        )]),
    };
    // (declared probes, verdicts, (started, ready))
    type Case<'a> = (&'a [ProbeKind], &'a [(ProbeKind, Verdict)], (bool, bool));
    let cases: Vec<Case<'_>> = vec![
        (&[], &[], (true, true)),
        (&[Liveness], &[], (true, true)),
        (&[Readiness], &[], (true, false)),
        (&[Readiness], &[(Readiness, Verdict::Success)], (true, true)),
        (
            &[Startup, Readiness],
            &[(Readiness, Verdict::Success)],
            (false, false),
        ),
        (&[Startup], &[(Startup, Verdict::Success)], (true, true)),
        (
            &[Startup, Readiness],
            &[(Startup, Verdict::Success), (Readiness, Verdict::Failure)],
            (true, false),
        ),
    ];
    for (declared, verdicts, want) in cases {
        assert_eq!(
            snapshot(verdicts).view("c", &kinds(declared)),
            want,
            "{declared:?} {verdicts:?}"
        );
    }
}

/// A one-shot HTTP server on 127.0.0.1 answering every request with `responses` in turn;
/// returns its port and the requests it saw.
async fn http_server(responses: Vec<String>) -> (u16, tokio::task::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        let mut seen = Vec::new();
        for response in responses {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut buf = vec![0u8; 4096];
            let mut len = 0;
            while !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                let n = socket.read(&mut buf[len..]).await.expect("read");
                if n == 0 {
                    break;
                }
                len += n;
            }
            seen.push(String::from_utf8_lossy(&buf[..len]).into_owned());
            socket.write_all(response.as_bytes()).await.expect("write");
        }
        seen
    });
    (port, task)
}

fn reply(status: &str, extra: &str) -> String {
    format!("HTTP/1.1 {status}\r\n{extra}Content-Length: 0\r\n\r\n")
}

fn request<'a>(port: u16, path: &'a str, headers: &'a [(String, String)]) -> HttpRequest<'a> {
    HttpRequest {
        scheme: Scheme::Http,
        host: "127.0.0.1",
        port,
        path,
        headers,
    }
}

#[tokio::test]
async fn http_probes_judge_the_status_and_follow_same_host_redirects() {
    let second = Duration::from_secs(2);
    let (port, server) = http_server(vec![reply("200 OK", "")]).await;
    let headers = [
        ("Host".to_string(), "example".to_string()),
        ("X-A".to_string(), "1".to_string()),
    ];
    assert_eq!(
        handlers::http(&request(port, "/healthz", &headers), second).await,
        RunResult::Success
    );
    let seen = server.await.expect("server");
    assert!(seen[0].starts_with("GET /healthz HTTP/1.1\r\n"), "{seen:?}");
    assert!(
        seen[0].contains("Host: example\r\n"),
        "probe Host header replaces the default"
    );
    assert!(seen[0].contains("X-A: 1\r\n"));
    assert!(seen[0].contains("User-Agent: kube-probe/1.33\r\n"));

    let (port, _server) = http_server(vec![reply("500 Internal Server Error", "")]).await;
    assert_eq!(
        handlers::http(&request(port, "/", &[]), second).await,
        RunResult::Failure("HTTP probe failed with statuscode: 500".into())
    );

    // A same-host redirect is followed (to a 503); one to another host counts as success.
    let (port, _server) = http_server(vec![
        reply("302 Found", "Location: /down\r\n"),
        reply("503 Service Unavailable", ""),
    ])
    .await;
    assert_eq!(
        handlers::http(&request(port, "/", &[]), second).await,
        RunResult::Failure("HTTP probe failed with statuscode: 503".into())
    );
    let (port, _server) = http_server(vec![reply(
        "301 Moved",
        "Location: http://elsewhere.example/\r\n",
    )])
    .await;
    assert_eq!(
        handlers::http(&request(port, "/", &[]), second).await,
        RunResult::Success
    );

    // Nobody listening, and a server that never answers.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let closed_port = closed.local_addr().expect("addr").port();
    drop(closed);
    match handlers::http(&request(closed_port, "/", &[]), second).await {
        RunResult::Failure(m) => assert!(m.contains("connection refused"), "{m}"),
        other => panic!("{other:?}"),
    }
    let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let silent_port = silent.local_addr().expect("addr").port();
    match handlers::http(&request(silent_port, "/", &[]), Duration::from_millis(300)).await {
        RunResult::Failure(m) => assert!(m.contains("Client.Timeout exceeded"), "{m}"),
        other => panic!("{other:?}"),
    }
    drop(silent);
}

#[tokio::test]
async fn tcp_probes_need_an_open_port() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    assert_eq!(
        handlers::tcp("127.0.0.1", port, Duration::from_secs(1)).await,
        RunResult::Success
    );
    drop(listener);
    match handlers::tcp("127.0.0.1", port, Duration::from_secs(1)).await {
        RunResult::Failure(m) => assert_eq!(
            m,
            format!("dial tcp 127.0.0.1:{port}: connect: connection refused")
        ),
        other => panic!("{other:?}"),
    }
}

/// A gRPC server on 127.0.0.1 answering every call with `serving` (a
/// `HealthCheckResponse.status`, if any) and the trailer `grpc-status: code`.
async fn grpc_server(serving: Option<u8>, code: u32) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    serve_grpc(listener, serving, code);
    port
}

/// Serves `listener` as [`grpc_server`] describes.
fn serve_grpc(listener: TcpListener, serving: Option<u8>, code: u32) {
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(socket).await else {
                    return;
                };
                while let Some(Ok((_request, mut respond))) = conn.accept().await {
                    let head = http::Response::builder()
                        .status(200)
                        .header("content-type", "application/grpc")
                        .body(())
                        .expect("response");
                    let Ok(mut send) = respond.send_response(head, false) else {
                        return;
                    };
                    if let Some(status) = serving {
                        // A length-prefixed message: field 1 (varint) = status.
                        let frame = vec![0, 0, 0, 0, 2, 0x08, status];
                        let _ = send.send_data(bytes::Bytes::from(frame), false);
                    }
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", code.to_string().parse().expect("header"));
                    let _ = send.send_trailers(trailers);
                }
            });
        }
    });
}

#[tokio::test]
async fn grpc_probes_need_serving() {
    let timeout = Duration::from_secs(3);
    let port = grpc_server(Some(1), 0).await;
    assert_eq!(
        handlers::grpc("127.0.0.1", port, "", timeout).await,
        RunResult::Success
    );
    let port = grpc_server(Some(2), 0).await;
    assert_eq!(
        handlers::grpc("127.0.0.1", port, "db", timeout).await,
        RunResult::Failure("service unhealthy (responded with \"NOT_SERVING\")".into())
    );
    let port = grpc_server(Some(3), 0).await;
    assert_eq!(
        handlers::grpc("127.0.0.1", port, "db", timeout).await,
        RunResult::Failure("service unhealthy (responded with \"SERVICE_UNKNOWN\")".into())
    );
    let port = grpc_server(None, 12).await;
    match handlers::grpc("127.0.0.1", port, "", timeout).await {
        RunResult::Failure(m) => assert!(
            m.starts_with(
                "error: this server does not implement the grpc health protocol (grpc.health.v1.Health)"
            ),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
    let port = grpc_server(None, 4).await;
    assert_eq!(
        handlers::grpc("127.0.0.1", port, "", timeout).await,
        RunResult::Failure("timeout: health rpc did not complete within 3s".into())
    );
    let port = grpc_server(None, 14).await;
    match handlers::grpc("127.0.0.1", port, "", timeout).await {
        RunResult::Failure(m) => assert!(
            m.starts_with("error: health rpc probe failed: rpc error: code = Unavailable"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
}

/// A closed port is retried until the timeout, then reported as upstream's blocking dial does.
#[tokio::test]
async fn a_grpc_probe_to_a_closed_port_times_out_connecting() {
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let started = std::time::Instant::now();
    assert_eq!(
        handlers::grpc("127.0.0.1", port, "", Duration::from_secs(1)).await,
        RunResult::Failure(format!(
            "timeout: failed to connect service \"127.0.0.1:{port}\" within 1s: context deadline exceeded"
        ))
    );
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(950), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
}

/// A server that starts listening while the probe retries its connection is reached.
#[tokio::test]
async fn a_grpc_probe_retries_its_connection_within_the_timeout() {
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let probe =
        tokio::spawn(
            async move { handlers::grpc("127.0.0.1", port, "", Duration::from_secs(3)).await },
        );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("rebind");
    serve_grpc(listener, Some(1), 0);
    assert_eq!(probe.await.expect("probe"), RunResult::Success);
}

#[tokio::test]
async fn a_readiness_task_publishes_verdicts_and_pokes_the_worker() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let p = Arc::new(pod(&format!(
        "metadata: {{name: web, uid: u1}}
spec:
  containers:
  - name: app
    image: busybox
    readinessProbe: {{tcpSocket: {{port: {port}, host: 127.0.0.1}}, periodSeconds: 1, failureThreshold: 1}}
    livenessProbe: {{tcpSocket: {{port: {port}, host: 127.0.0.1}}, periodSeconds: 1, failureThreshold: 2}}"
    )));
    let poke = Arc::new(Notify::new());
    let mut prober = PodProber::new(FakeRuntime::new(), EventSink::default(), poke.clone());
    let obs = observed(vec![running("c1", "app", "s1")]);
    prober.sync(&p, &obs, None);
    let kinds = BTreeSet::from([ProbeKind::Liveness, ProbeKind::Readiness]);
    assert_eq!(
        prober.snapshot().view("c1", &kinds),
        (true, false),
        "not ready before a run"
    );

    tokio::time::timeout(Duration::from_secs(5), poke.notified())
        .await
        .expect("poked once ready");
    assert_eq!(prober.snapshot().view("c1", &kinds), (true, true));
    assert!(prober.snapshot().failures().is_empty());

    // The port closes: unready after one failure, liveness fails after two.
    drop(listener);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    while prober.snapshot().failures().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "liveness never failed"
        );
        tokio::time::timeout(Duration::from_secs(5), poke.notified())
            .await
            .expect("poked");
    }
    assert_eq!(prober.snapshot().view("c1", &kinds), (true, false));
    assert_eq!(
        prober.snapshot().failures()["c1"],
        ProbeFailure {
            kind: ProbeKind::Liveness,
            grace_seconds: None
        }
    );

    // The instance is gone: its tasks and verdicts go too.
    prober.sync(&p, &observed(Vec::new()), None);
    assert!(prober.snapshot().containers.is_empty());
    assert!(prober.tasks.is_empty());
}
