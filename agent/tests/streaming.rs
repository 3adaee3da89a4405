//! exec and port-forward through the kubelet streaming handlers against a real containerd: a
//! busybox pod, our handlers served on a loopback hyper server inside the test containerd's
//! network namespace (where its CRI streaming server listens), and clients speaking WebSocket
//! v5 channels, SPDY/3.1, and SPDY tunnelled in a WebSocket. The test clients use this crate's
//! own SPDY and channel codecs; real kubectl is exercised end to end elsewhere.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed expectation aborts the test"
)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use kwk_agent::streaming::channel::{self, exit_code};
use kwk_agent::streaming::spdy::{Decoder, Encoder, FLAG_FIN, Frame};
use kwk_agent::streaming::spdy_client::{self, SpdyEvent};
use kwk_agent::streaming::{
    ExecTarget, PortForwardTarget, serve_attach, serve_exec, serve_port_forward, upstream,
};
use kwk_cri::{ConnectOptions, CriClient, Timeouts};
use kwk_tests::pods::{PodShape, container_config};
use kwk_tests::{TestContainerd, privileged_tests_enabled};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

const WAIT: Duration = Duration::from_secs(20);

/// The handlers on a loopback server; returns its address.
/// `/attach/…/ticker` goes to `ticker_id`, every other exec/attach to `container_id`.
async fn serve(
    cri: CriClient,
    container_id: String,
    ticker_id: String,
    sandbox_id: String,
) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let ticker = ExecTarget {
                container_id: ticker_id.clone(),
            };
            let (cri, exec, pf) = (
                cri.clone(),
                ExecTarget {
                    container_id: container_id.clone(),
                },
                PortForwardTarget {
                    sandbox_id: sandbox_id.clone(),
                },
            );
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (cri, exec, pf) = (cri.clone(), exec.clone(), pf.clone());
                    let ticker = ticker.clone();
                    async move {
                        let path = req.uri().path().to_owned();
                        let response = if path.starts_with("/exec/") {
                            serve_exec(req, &exec, &cri).await
                        } else if path.ends_with("/ticker") {
                            serve_attach(req, &ticker, &cri).await
                        } else if path.starts_with("/attach/") {
                            serve_attach(req, &exec, &cri).await
                        } else {
                            serve_port_forward(req, &pf, &cri).await
                        };
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

/// Runs a WebSocket v5 exec; returns the bytes per channel.
async fn ws_exec(addr: SocketAddr, query: &str, stdin: &[u8]) -> HashMap<u8, Vec<u8>> {
    let mut request = format!("ws://{addr}/exec/default/pod/main?{query}")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v5.channel.k8s.io, v4.channel.k8s.io".parse().unwrap(),
    );
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut ws, response) = tokio_tungstenite::client_async(request, tcp).await.unwrap();
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "v5.channel.k8s.io"
    );
    if !stdin.is_empty() {
        ws.send(Message::binary(channel::encode_server(
            channel::STDIN,
            stdin,
        )))
        .await
        .unwrap();
    }
    let mut seen: HashMap<u8, Vec<u8>> = HashMap::new();
    let mut closed_stdin = stdin.is_empty();
    while let Some(message) = tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
        match message.unwrap() {
            Message::Binary(data) => {
                let (ch, bytes) = data.split_first().unwrap();
                seen.entry(*ch).or_default().extend_from_slice(bytes);
                // Close stdin once what we sent came back.
                if !closed_stdin && seen.get(&channel::STDOUT).map(Vec::as_slice) == Some(stdin) {
                    closed_stdin = true;
                    ws.send(Message::binary(vec![channel::CLOSE, channel::STDIN]))
                        .await
                        .unwrap();
                }
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_and_port_forward_reach_the_pod() -> anyhow::Result<()> {
    if !privileged_tests_enabled() {
        return Ok(());
    }
    let containerd = TestContainerd::start().await?;
    let sandbox_config = containerd.sandbox("stream", PodShape::default())?;
    let cri = &containerd.cri;
    let sandbox_id = cri.run_pod_sandbox(sandbox_config.clone(), "").await?;
    let script = "mkdir -p /www && echo hello-pf > /www/index.html && exec httpd -f -p 80 -h /www";
    let container = container_config(
        "main",
        &containerd.images.busybox_reference,
        &["/bin/sh", "-c", script],
    );
    let container_id = cri
        .create_container(&sandbox_id, container, sandbox_config)
        .await?;
    cri.start_container(&container_id).await?;
    let ticker = container_config(
        "ticker",
        &containerd.images.busybox_reference,
        &["/bin/sh", "-c", "while true; do echo tick; sleep 0.2; done"],
    );
    let sandbox_config = containerd.sandbox("stream", PodShape::default())?;
    let ticker_id = cri
        .create_container(&sandbox_id, ticker, sandbox_config)
        .await?;
    cri.start_container(&ticker_id).await?;
    let socket = containerd.socket();
    // The CRI streaming server listens on 127.0.0.1 of containerd's namespace: run there.
    containerd.netns().run(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let cri = CriClient::connect(&socket, &ConnectOptions::default(), Timeouts::default())
                .await
                .unwrap();
            let addr = serve(cri, container_id, ticker_id, sandbox_id).await;
            check_attach_over_websocket(addr).await;
            check_exec_over_websocket(addr).await;
            check_exec_over_spdy(addr).await;
            check_port_forward_over_spdy(addr).await;
            check_port_forward_over_websocket_tunnel(addr).await;
        });
    })?;
    Ok(())
}

async fn check_exec_over_websocket(addr: SocketAddr) {
    let query = "command=sh&command=-c&command=echo%20out%3B%20echo%20err%20%3E%262%3B%20exit%203\
                 &stdout=1&stderr=1";
    let seen = ws_exec(addr, query, b"").await;
    assert_eq!(seen[&channel::STDOUT], b"out\n");
    assert_eq!(seen[&channel::STDERR], b"err\n");
    let status = &seen[&channel::ERROR];
    assert_eq!(
        exit_code(status),
        Some(3),
        "{}",
        String::from_utf8_lossy(status)
    );

    let seen = ws_exec(addr, "command=cat&stdin=1&stdout=1&stderr=1", b"hello\n").await;
    assert_eq!(seen[&channel::STDOUT], b"hello\n");
    assert_eq!(exit_code(&seen[&channel::ERROR]), Some(0));

    // A refused request is a plain HTTP error.
    let refused = upstream::upgrade(
        &format!("http://{addr}/exec/default/pod/main?command=true"),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(refused.status, 400);
    assert!(String::from_utf8_lossy(&refused.rest).contains("at least 1 of stdin"));
}

async fn check_attach_over_websocket(addr: SocketAddr) {
    let mut request = format!("ws://{addr}/attach/default/pod/ticker?stdout=1&stderr=1")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v5.channel.k8s.io".parse().unwrap(),
    );
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(request, tcp).await.unwrap();
    let mut stdout = Vec::new();
    while !String::from_utf8_lossy(&stdout).contains("tick\ntick\n") {
        let message = tokio::time::timeout(WAIT, ws.next()).await.unwrap();
        match message
            .expect("attach ended before the ticks came")
            .unwrap()
        {
            Message::Binary(data) if data.first() == Some(&channel::STDOUT) => {
                stdout.extend_from_slice(&data[1..]);
            }
            _ => {}
        }
    }
    ws.close(None).await.unwrap();
}

async fn check_exec_over_spdy(addr: SocketAddr) {
    let url = format!(
        "http://{addr}/exec/default/pod/main?command=sh&command=-c&command=read%20x%3B%20echo%20got%20%24x%3B%20echo%20e%20%3E%262%3B%20exit%205&stdin=1&stdout=1&stderr=1"
    );
    let up = upstream::upgrade(&url, &["v4.channel.k8s.io".to_owned()])
        .await
        .unwrap();
    assert_eq!(up.status, 101, "{}", String::from_utf8_lossy(&up.rest));
    let (mut spdy, mut events) = spdy_client::start(up.stream, up.rest);
    let error = spdy.open(&[("streamtype", "error")]).await.unwrap();
    let stdin = spdy.open(&[("streamtype", "stdin")]).await.unwrap();
    let stdout = spdy.open(&[("streamtype", "stdout")]).await.unwrap();
    let stderr = spdy.open(&[("streamtype", "stderr")]).await.unwrap();
    spdy.data(stdin, b"spdy\n", true).await.unwrap();
    let mut seen: HashMap<u32, Vec<u8>> = HashMap::new();
    loop {
        match tokio::time::timeout(WAIT, events.recv()).await.unwrap() {
            Some(SpdyEvent::Data {
                stream_id, data, ..
            }) => seen.entry(stream_id).or_default().extend(data),
            Some(SpdyEvent::Ping(id)) => spdy.pong(id).await.unwrap(),
            Some(SpdyEvent::Reset { .. }) => {}
            Some(SpdyEvent::Closed(_)) | None => break,
        }
    }
    assert_eq!(seen[&stdout], b"got spdy\n");
    assert_eq!(seen[&stderr], b"e\n");
    assert_eq!(exit_code(&seen[&error]), Some(5));
}

const GET: &[u8] = b"GET /index.html HTTP/1.0\r\nHost: pod\r\n\r\n";

async fn check_port_forward_over_spdy(addr: SocketAddr) {
    let up = upstream::upgrade(
        &format!("http://{addr}/portForward/default/pod"),
        &["portforward.k8s.io".to_owned()],
    )
    .await
    .unwrap();
    assert_eq!(up.status, 101, "{}", String::from_utf8_lossy(&up.rest));
    let (mut spdy, mut events) = spdy_client::start(up.stream, up.rest);
    let pf = [("port", "80"), ("requestid", "0")];
    spdy.open(&[("streamtype", "error"), pf[0], pf[1]])
        .await
        .unwrap();
    let data = spdy
        .open(&[("streamtype", "data"), pf[0], pf[1]])
        .await
        .unwrap();
    spdy.data(data, GET, false).await.unwrap();
    let mut body = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, events.recv()).await.unwrap() {
            Some(SpdyEvent::Data {
                stream_id,
                data: bytes,
                fin,
            }) if stream_id == data => {
                body.extend(bytes);
                if fin {
                    break;
                }
            }
            Some(SpdyEvent::Closed(_)) | None => break,
            _ => {}
        }
    }
    let body = String::from_utf8_lossy(&body);
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    assert!(body.contains("hello-pf"), "{body}");
}

async fn check_port_forward_over_websocket_tunnel(addr: SocketAddr) {
    let mut request = format!("ws://{addr}/portForward/default/pod")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "SPDY/3.1+portforward.k8s.io".parse().unwrap(),
    );
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut ws, response) = tokio_tungstenite::client_async(request, tcp).await.unwrap();
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "SPDY/3.1+portforward.k8s.io"
    );
    let mut encoder = Encoder::new();
    let mut out = Vec::new();
    for (stream_id, kind) in [(1, "error"), (3, "data")] {
        let headers = [("streamtype", kind), ("port", "80"), ("requestid", "0")]
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect();
        encoder
            .encode(
                &Frame::SynStream {
                    stream_id,
                    associated_to: 0,
                    priority: 0,
                    flags: 0,
                    headers,
                },
                &mut out,
            )
            .unwrap();
    }
    encoder
        .encode(
            &Frame::Data {
                stream_id: 3,
                flags: 0,
                data: GET.to_vec(),
            },
            &mut out,
        )
        .unwrap();
    ws.send(Message::binary(out)).await.unwrap();
    let mut decoder = Decoder::new();
    let mut buf = Vec::new();
    let mut body = Vec::new();
    'read: while let Some(message) = tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
        let Message::Binary(bytes) = message.unwrap() else {
            continue;
        };
        buf.extend_from_slice(&bytes);
        while let Some((frame, used)) = decoder.decode(&buf).unwrap() {
            buf.drain(..used);
            if let Frame::Data {
                stream_id: 3,
                flags,
                data,
            } = frame
            {
                body.extend(data);
                if flags & FLAG_FIN != 0 {
                    break 'read;
                }
            }
        }
    }
    let body = String::from_utf8_lossy(&body);
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    assert!(body.contains("hello-pf"), "{body}");
}
