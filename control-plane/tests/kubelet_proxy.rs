//! The apiserver's kubelet proxy against a stand-in kubelet: HTTPS (rustls) requiring a
//! client certificate from the cluster CA and recording the client's user name and every
//! request line. `kubectl logs` (plain, `-f`, container defaulting), the raw `pods/log`
//! errors, an exec Upgrade spliced both ways, and `nodes/<n>/proxy/...`.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kwk_control_plane::apiserver::pki;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::json;
use support::{TestApiServer, stderr, stdout};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

type StandInBody = BoxBody<Bytes, std::convert::Infallible>;

/// One request the stand-in kubelet served: the client certificate's CN, the method and
/// the path with its query.
#[derive(Debug, Clone)]
struct Seen {
    user: String,
    method: String,
    path: String,
}

struct StandIn {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Lets a following log stream send its second line.
    release: Arc<Notify>,
    /// Set when a following log stream's reader went away.
    follow_closed: Arc<Notify>,
}

impl StandIn {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
    fn last(&self) -> Seen {
        self.seen()
            .last()
            .cloned()
            .expect("the stand-in saw a request")
    }
}

fn roots(ca_pem: &str) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA");
    }
    roots
}

async fn start_stand_in(pki_dir: &std::path::Path) -> StandIn {
    let ca = pki::load_pair(&pki_dir.join("ca.crt"), &pki_dir.join("ca.key")).expect("CA");
    let serving = pki::issue_serving(&ca, &["127.0.0.1".to_string()]).expect("serving cert");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots(&ca.cert_pem)),
        provider.clone(),
    )
    .build()
    .expect("client verifier");
    let certs = CertificateDer::pem_slice_iter(serving.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("cert");
    let key = PrivateKeyDer::from_pem_slice(serving.key_pem.as_bytes()).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let release = Arc::new(Notify::new());
    let follow_closed = Arc::new(Notify::new());
    let (seen2, release2, closed2) = (seen.clone(), release.clone(), follow_closed.clone());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let (seen, release, closed) = (seen2.clone(), release2.clone(), closed2.clone());
            tokio::spawn(async move {
                // No client certificate from the CA: the handshake fails (nothing recorded).
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let user = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|der| {
                        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
                        let cn = cert.subject().iter_common_name().next()?;
                        cn.as_str().ok().map(String::from)
                    })
                    .unwrap_or_default();
                let service = hyper::service::service_fn(move |request| {
                    let (seen, release, closed, user) =
                        (seen.clone(), release.clone(), closed.clone(), user.clone());
                    async move {
                        Ok::<_, std::convert::Infallible>(kubelet(
                            request, user, &seen, release, closed,
                        ))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    StandIn {
        addr,
        seen,
        release,
        follow_closed,
    }
}

fn full(text: &str) -> StandInBody {
    Full::new(Bytes::from(text.to_string())).boxed()
}

/// The stand-in's answers.
fn kubelet(
    mut request: Request<Incoming>,
    user: String,
    seen: &Mutex<Vec<Seen>>,
    release: Arc<Notify>,
    follow_closed: Arc<Notify>,
) -> Response<StandInBody> {
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    seen.lock().expect("lock").push(Seen {
        user,
        method: request.method().to_string(),
        path: path.clone(),
    });
    if path.starts_with("/containerLogs/") && path.contains("follow=true") {
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Frame<Bytes>, _>>();
        let _ = tx.unbounded_send(Ok(Frame::data(Bytes::from("first line\n"))));
        tokio::spawn(async move {
            release.notified().await;
            let _ = tx.unbounded_send(Ok(Frame::data(Bytes::from("second line sent later\n"))));
            // Keep following until the reader has gone away.
            while tx
                .unbounded_send(Ok(Frame::data(Bytes::from("tick\n"))))
                .is_ok()
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            follow_closed.notify_one();
        });
        return Response::new(StreamBody::new(rx).boxed());
    }
    if path.starts_with("/containerLogs/default/p4/") {
        return Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .body(full(
                "container \"c\" in pod \"p4\" is waiting to start: ContainerCreating",
            ))
            .expect("400");
    }
    if path.starts_with("/containerLogs/") {
        return Response::new(full("hello from the stand-in\n"));
    }
    if path == "/healthz" {
        return Response::new(full("kubelet ok"));
    }
    if (path.starts_with("/exec/") || path.starts_with("/attach/"))
        && request.headers().contains_key(http::header::UPGRADE)
    {
        let upgrade = hyper::upgrade::on(&mut request);
        tokio::spawn(async move {
            let Ok(upgraded) = upgrade.await else { return };
            let mut io = TokioIo::new(upgraded);
            let mut buf = [0u8; 1024];
            while let Ok(n) = io.read(&mut buf).await {
                if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        });
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .cloned()
                .unwrap_or(http::HeaderValue::from_static("none"))
        };
        let mut response = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("Connection", "Upgrade")
            .header("Upgrade", header("Upgrade"));
        if request.headers().contains_key("Sec-WebSocket-Protocol") {
            response = response
                .header("Sec-WebSocket-Protocol", header("Sec-WebSocket-Protocol"))
                .header("Sec-WebSocket-Accept", "accepted-by-the-stand-in");
        } else {
            response = response.header(
                "X-Stream-Protocol-Version",
                header("X-Stream-Protocol-Version"),
            );
        }
        return response.body(full("")).expect("101");
    }
    Response::builder()
        .status(StatusCode::NOT_FOUND)
        .body(full("no such kubelet path"))
        .expect("404")
}

/// A Node whose kubelet is the stand-in (or without any address when `addr` is `None`).
async fn node(client: &kube::Client, name: &str, addr: Option<SocketAddr>) {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = serde_json::from_value(json!({"metadata": {"name": name}})).expect("node");
    nodes
        .create(&PostParams::default(), &node)
        .await
        .expect("create node");
    let status = match addr {
        Some(addr) => json!({"status": {
            "addresses": [
                {"type": "InternalIP", "address": addr.ip().to_string()},
                {"type": "Hostname", "address": format!("{name}.invalid")},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": addr.port()}},
        }}),
        None => json!({"status": {"addresses": []}}),
    };
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("node status");
}

async fn pod(client: &kube::Client, name: &str, node: &str, containers: &[&str]) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let containers: Vec<_> = containers
        .iter()
        .map(|c| json!({"name": c, "image": "busybox"}))
        .collect();
    let pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"nodeName": node, "containers": containers},
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
}

async fn setup() -> (TestApiServer, StandIn, kube::Client) {
    let api = TestApiServer::start().await;
    let stand_in = start_stand_in(&api.dir.path().join("pki")).await;
    let client = api.client().await;
    node(&client, "n1", Some(stand_in.addr)).await;
    pod(&client, "p1", "n1", &["c1"]).await;
    (api, stand_in, client)
}

#[tokio::test]
async fn kubectl_logs_reach_the_kubelet_with_the_kubelet_client_certificate() {
    let (api, stand_in, client) = setup().await;
    let out = api
        .kubectl_ok(&[
            "logs",
            "p1",
            "--tail=5",
            "--timestamps",
            "--limit-bytes=100",
        ])
        .await;
    assert_eq!(out, "hello from the stand-in\n");
    let seen = stand_in.last();
    assert_eq!(seen.user, pki::KUBELET_CLIENT_USER);
    assert_eq!(seen.method, "GET");
    assert_eq!(
        seen.path,
        "/containerLogs/default/p1/c1?timestamps=true&tailLines=5&limitBytes=100"
    );

    // Two containers, none named: kubectl picks the first; the API itself refuses.
    pod(&client, "p2", "n1", &["a", "b"]).await;
    let out = api.kubectl(&["logs", "p2"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("Defaulted container \"a\" out of: a, b"));
    assert_eq!(stand_in.last().path, "/containerLogs/default/p2/a");
    let out = api
        .kubectl(&["get", "--raw", "/api/v1/namespaces/default/pods/p2/log"])
        .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "Error from server (BadRequest): a container name must be specified for pod p2, choose one of: [a b]"
        ),
        "{}",
        stderr(&out)
    );
    let out = api.kubectl(&["logs", "p2", "-c", "zz"]).await;
    assert!(
        stderr(&out).contains("container zz is not valid for pod p2"),
        "{}",
        stderr(&out)
    );
    let out = api
        .kubectl(&[
            "get",
            "--raw",
            "/api/v1/namespaces/default/pods/p1/log?tailLines=-1",
        ])
        .await;
    assert!(
        stderr(&out).contains("tailLines: Invalid value: -1: must be greater than or equal to 0"),
        "{}",
        stderr(&out)
    );
    let out = api.kubectl(&["logs", "nope"]).await;
    assert!(
        stderr(&out).contains("pods \"nope\" not found"),
        "{}",
        stderr(&out)
    );
    let requests = stand_in.seen().len();
    assert_eq!(requests, 2, "refused requests never reach the kubelet");

    // The kubelet's own refusal is relayed as a Status with its code and message.
    pod(&client, "p4", "n1", &["c"]).await;
    let out = api
        .kubectl(&["logs", "p4", "--insecure-skip-tls-verify-backend"])
        .await;
    assert!(
        stderr(&out).contains(
            "Error from server (BadRequest): container \"c\" in pod \"p4\" is waiting to start: ContainerCreating"
        ),
        "{}",
        stderr(&out)
    );
    assert_eq!(stand_in.last().path, "/containerLogs/default/p4/c");
}

#[tokio::test]
async fn kubectl_logs_follow_streams_chunk_by_chunk() {
    let (api, stand_in, _client) = setup().await;
    let mut child = tokio::process::Command::new(support::kubectl_path())
        .arg("--kubeconfig")
        .arg(api.kubeconfig())
        .args(["logs", "-f", "p1"])
        .env("HOME", api.dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kubectl");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the first line arrives before the stream ends")
        .expect("read");
    assert_eq!(first.as_deref(), Some("first line"));
    // Only now does the stand-in send its second line.
    stand_in.release.notify_one();
    let second = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the second line arrives")
        .expect("read");
    assert_eq!(second.as_deref(), Some("second line sent later"));
    assert!(stand_in.last().path.ends_with("/p1/c1?follow=true"));
    // The client goes away: the apiserver stops reading the kubelet's stream.
    child.kill().await.expect("kill kubectl");
    tokio::time::timeout(Duration::from_secs(10), stand_in.follow_closed.notified())
        .await
        .expect("the kubelet stream is closed once its reader is gone");
}

/// A TLS connection to the apiserver with the admin certificate, HTTP/1.1 only.
async fn raw_connection(
    api: &TestApiServer,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let pki_dir = api.dir.path().join("pki");
    let ca = std::fs::read_to_string(pki_dir.join("ca.crt")).expect("ca");
    let admin =
        pki::load_pair(&pki_dir.join("admin.crt"), &pki_dir.join("admin.key")).expect("admin");
    let certs = CertificateDer::pem_slice_iter(admin.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("cert");
    let key = PrivateKeyDer::from_pem_slice(admin.key_pem.as_bytes()).expect("key");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots(&ca))
    .with_client_auth_cert(certs, key)
    .expect("client config");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(api.addr)
        .await
        .expect("connect");
    let name = ServerName::try_from("127.0.0.1").expect("name");
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS")
}

async fn read_head<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte))
            .await
            .expect("response head in time")
            .expect("read");
        assert_eq!(
            n,
            1,
            "connection closed in the head: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[tokio::test]
async fn exec_upgrade_is_spliced_both_ways() {
    let (api, stand_in, _client) = setup().await;
    let mut tls = raw_connection(&api).await;
    tls.write_all(
        b"POST /api/v1/namespaces/default/pods/p1/exec?command=sh&command=-c&command=cat&stdin=true&stdout=true&tty=false HTTP/1.1\r\n\
          Host: 127.0.0.1\r\n\
          Connection: Upgrade\r\n\
          Upgrade: SPDY/3.1\r\n\
          X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\
          Content-Length: 0\r\n\r\n",
    )
    .await
    .expect("write");
    let head = read_head(&mut tls).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("upgrade: spdy/3.1"), "{head}");
    assert!(
        lower.contains("x-stream-protocol-version: v4.channel.k8s.io"),
        "{head}"
    );
    let seen = stand_in.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.user, pki::KUBELET_CLIENT_USER);
    assert_eq!(
        seen.path,
        "/exec/default/p1/c1?stdin=1&stdout=1&command=sh&command=-c&command=cat"
    );
    for message in ["ping", "and pong"] {
        tls.write_all(message.as_bytes()).await.expect("write");
        let mut buf = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_secs(10), tls.read_exact(&mut buf))
            .await
            .expect("echo in time")
            .expect("read");
        assert_eq!(buf, message.as_bytes());
    }

    // The WebSocket form (GET), with its headers passed both ways.
    let mut ws = raw_connection(&api).await;
    ws.write_all(
        b"GET /api/v1/namespaces/default/pods/p1/attach?stdout=true&stderr=true HTTP/1.1\r\n\
          Host: 127.0.0.1\r\n\
          Connection: Upgrade\r\n\
          Upgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
          Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n",
    )
    .await
    .expect("write");
    let head = read_head(&mut ws).await.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    assert!(
        head.contains("sec-websocket-protocol: v5.channel.k8s.io"),
        "{head}"
    );
    assert!(
        head.contains("sec-websocket-accept: accepted-by-the-stand-in"),
        "{head}"
    );
    let seen = stand_in.last();
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("GET", "/attach/default/p1/c1?stdout=1&stderr=1")
    );

    // Without an Upgrade: upstream's 400.
    let out = api
        .kubectl(&[
            "get",
            "--raw",
            "/api/v1/namespaces/default/pods/p1/exec?command=ls",
        ])
        .await;
    assert!(
        stderr(&out).contains("Upgrade request required"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn node_proxy_and_unreachable_nodes() {
    let (api, stand_in, client) = setup().await;
    let out = api
        .kubectl_ok(&["get", "--raw", "/api/v1/nodes/n1/proxy/healthz"])
        .await;
    assert_eq!(out, "kubelet ok");
    assert_eq!(stand_in.last().path, "/healthz");
    let port = stand_in.addr.port();
    let out = api
        .kubectl(&[
            "get",
            "--raw",
            &format!("/api/v1/nodes/n1:{port}/proxy/missing?x=1"),
        ])
        .await;
    assert!(!out.status.success());
    assert_eq!(stand_in.last().path, "/missing?x=1");

    node(&client, "n2", None).await;
    pod(&client, "p3", "n2", &["c"]).await;
    let out = api.kubectl(&["logs", "p3"]).await;
    assert!(
        stderr(&out).contains("no preferred addresses found for node n2"),
        "{}",
        stderr(&out)
    );
    let out = api
        .kubectl(&["get", "--raw", "/api/v1/nodes/n2/proxy/healthz"])
        .await;
    assert!(stderr(&out).contains("node n2"), "{}", stderr(&out));

    // A node whose kubelet does not answer: the error names the node and its address.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = listener.local_addr().expect("addr");
    drop(listener);
    node(&client, "n3", Some(dead)).await;
    let out = api
        .kubectl(&["get", "--raw", "/api/v1/nodes/n3/proxy/healthz"])
        .await;
    let err = stderr(&out);
    assert!(
        err.contains("node n3") && err.contains(&dead.to_string()),
        "{err}"
    );
    assert!(stdout(&out).is_empty());
}
