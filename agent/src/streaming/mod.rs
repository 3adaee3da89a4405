//! The kubelet side of `kubectl exec`, `attach`, `port-forward` (and `cp`, which is exec + tar):
//! handlers the kubelet HTTPS server routes `/exec/{ns}/{pod}[/{uid}]/{container}`,
//! `/attach/…` and `/portForward/{ns}/{pod}[/{uid}]` to, once it has authorized the request
//! and resolved the pod to CRI ids.
//!
//! ```text
//! serve_exec(req, &ExecTarget { container_id }, &cri).await        -> Response<Full<Bytes>>
//! serve_attach(req, &ExecTarget { container_id }, &cri).await      -> Response<Full<Bytes>>
//! serve_port_forward(req, &PortForwardTarget { sandbox_id }, &cri) -> Response<Full<Bytes>>
//! ```
//!
//! `req` is the whole `hyper::Request<Incoming>`; the connection must be served with
//! `hyper::server::conn::http1::Builder::serve_connection(..).with_upgrades()`. On success the
//! response is a `101 Switching Protocols` and a spawned task carries the stream until either
//! side closes; errors are plain-text 4xx/5xx responses.
//!
//! Like the upstream kubelet, we ask CRI for a streaming URL (containerd's own streaming server,
//! which speaks SPDY/3.1) and then:
//! - SPDY/3.1 (`Upgrade: SPDY/3.1`, `X-Stream-Protocol-Version: v4.channel.k8s.io`…, or
//!   `portforward.k8s.io`): the upgrade request is forwarded to the CRI URL and, after its 101,
//!   bytes are spliced both ways, unparsed ([`upstream`]).
//! - WebSocket `v5.channel.k8s.io` / `v4.channel.k8s.io` (exec, attach; what kubectl 1.33 tries
//!   first): the WebSocket is terminated here and we act as an SPDY client of the CRI server
//!   (`v4.channel.k8s.io`), mapping channels to SPDY streams ([`bridge`], [`channel`],
//!   [`spdy`]). v5's close signal on stdin half-closes the stdin stream, so `kubectl cp` ends.
//! - WebSocket `SPDY/3.1+portforward.k8s.io` (port-forward): binary messages carry the client's
//!   SPDY byte stream; it is unwrapped and spliced into an SPDY upgrade of the CRI URL.

pub mod bridge;
pub mod channel;
pub mod spdy;
pub mod spdy_client;
pub mod upstream;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use kwk_cri::{CriClient, api};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use channel::{
    PORT_FORWARD_PROTOCOL, SPDY_REMOTE_COMMAND_PROTOCOL, TUNNELED_PORT_FORWARD_PROTOCOL,
    WEBSOCKET_CHANNEL_PROTOCOLS,
};

/// The response body of every handler.
pub type StreamingBody = Full<Bytes>;
/// An incoming request, as hyper hands it over.
pub type StreamingRequest = hyper::Request<Incoming>;

/// The container an exec or attach runs against (resolved by the router).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecTarget {
    pub container_id: String,
}

/// The pod sandbox a port-forward goes into (resolved by the router).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortForwardTarget {
    pub sandbox_id: String,
}

/// Failures of the streaming machinery.
#[derive(Debug, thiserror::Error)]
pub enum StreamingError {
    #[error("unsupported streaming URL {0:?} (only http:// is)")]
    Url(String),
    #[error("streaming server: {0}")]
    Upstream(String),
    #[error(transparent)]
    Spdy(#[from] spdy::SpdyError),
}

/// How the client asked to upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Upgrade {
    /// SPDY/3.1 with these `X-Stream-Protocol-Version` values offered.
    Spdy(Vec<String>),
    /// A WebSocket with the subprotocol we chose and the `Sec-WebSocket-Key`.
    WebSocket { protocol: &'static str, key: String },
}

/// Handles `/exec/…`: runs `command` from the query in the container.
pub async fn serve_exec(
    req: StreamingRequest,
    target: &ExecTarget,
    cri: &CriClient,
) -> Response<StreamingBody> {
    serve_remote_command(req, target, cri, true).await
}

/// Handles `/attach/…`: attaches to the container's main process.
pub async fn serve_attach(
    req: StreamingRequest,
    target: &ExecTarget,
    cri: &CriClient,
) -> Response<StreamingBody> {
    serve_remote_command(req, target, cri, false).await
}

async fn serve_remote_command(
    req: StreamingRequest,
    target: &ExecTarget,
    cri: &CriClient,
    exec: bool,
) -> Response<StreamingBody> {
    let options = match channel::parse_options(req.uri().query().unwrap_or_default()) {
        Ok(options) => options,
        Err(e) => return plain(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let upgrade = match client_upgrade(&req, &WEBSOCKET_CHANNEL_PROTOCOLS) {
        Ok(upgrade) => upgrade,
        Err(response) => return response,
    };
    let url = if exec {
        cri.exec(api::ExecRequest {
            container_id: target.container_id.clone(),
            cmd: options.command.clone(),
            tty: options.tty,
            stdin: options.stdin,
            stdout: options.stdout,
            stderr: options.stderr,
        })
        .await
    } else {
        cri.attach(api::AttachRequest {
            container_id: target.container_id.clone(),
            stdin: options.stdin,
            tty: options.tty,
            stdout: options.stdout,
            stderr: options.stderr,
        })
        .await
    };
    let url = match url {
        Ok(url) => url,
        Err(e) => return plain(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    match upgrade {
        Upgrade::Spdy(protocols) => splice_spdy(req, &url, &protocols).await,
        Upgrade::WebSocket { protocol, key } => {
            let upstream = match upgrade_upstream(&url, SPDY_REMOTE_COMMAND_PROTOCOL).await {
                Ok(up) => up,
                Err(response) => return response,
            };
            on_websocket(req, move |ws| {
                bridge::run_remote_command(ws, protocol, options, upstream)
            });
            websocket_accepted(&key, protocol)
        }
    }
}

/// Upgrades the CRI streaming URL to SPDY with `protocol`; a refusal or failure is the
/// response to give the client.
async fn upgrade_upstream(
    url: &str,
    protocol: &str,
) -> Result<upstream::UpstreamResponse, Response<StreamingBody>> {
    match upstream::upgrade(url, &[protocol.to_owned()]).await {
        Ok(up) if up.status == 101 => Ok(up),
        Ok(up) => Err(relay_refusal(up)),
        Err(e) => Err(plain(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())),
    }
}

/// Once the client's connection is upgraded (after the 101 this handler returns), runs `serve`
/// on it as a server-side WebSocket.
fn on_websocket<F, Fut>(mut req: StreamingRequest, serve: F)
where
    F: FnOnce(WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let ws =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None)
                        .await;
                serve(ws).await;
            }
            Err(e) => tracing::debug!(error = %e, "streaming: client upgrade failed"),
        }
    });
}

/// Handles `/portForward/…`.
pub async fn serve_port_forward(
    req: StreamingRequest,
    target: &PortForwardTarget,
    cri: &CriClient,
) -> Response<StreamingBody> {
    let upgrade = match client_upgrade(&req, &[TUNNELED_PORT_FORWARD_PROTOCOL]) {
        Ok(upgrade) => upgrade,
        Err(response) => return response,
    };
    let ports: Vec<i32> = req
        .uri()
        .query()
        .map(|query| {
            form_urlencoded::parse(query.as_bytes())
                .filter(|(key, _)| key == "port" || key == "ports")
                .flat_map(|(_, value)| {
                    value
                        .split(',')
                        .filter_map(|port| port.trim().parse().ok())
                        .collect::<Vec<i32>>()
                })
                .collect()
        })
        .unwrap_or_default();
    let url = match cri.port_forward(&target.sandbox_id, ports).await {
        Ok(url) => url,
        Err(e) => return plain(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    match upgrade {
        Upgrade::Spdy(protocols) => splice_spdy(req, &url, &protocols).await,
        Upgrade::WebSocket { protocol, key } => {
            let upstream = match upgrade_upstream(&url, PORT_FORWARD_PROTOCOL).await {
                Ok(up) => up,
                Err(response) => return response,
            };
            on_websocket(req, move |ws| bridge::run_tunnel(ws, upstream));
            websocket_accepted(&key, protocol)
        }
    }
}

/// Forwards an SPDY upgrade to `url`; after the CRI server's 101, splices the two connections.
async fn splice_spdy(
    mut req: StreamingRequest,
    url: &str,
    protocols: &[String],
) -> Response<StreamingBody> {
    let up = match upstream::upgrade(url, protocols).await {
        Ok(up) if up.status == 101 => up,
        Ok(up) => return relay_refusal(up),
        Err(e) => return plain(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    for (name, value) in &up.headers {
        let forwarded = ["connection", "upgrade", "x-stream-protocol-version"];
        if forwarded.iter().any(|f| name.eq_ignore_ascii_case(f))
            && let (Ok(name), Ok(value)) = (
                header::HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_bytes(value),
            )
        {
            response.headers_mut().append(name, value);
        }
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upstream::UpstreamResponse {
            rest, mut stream, ..
        } = up;
        match on_upgrade.await {
            Ok(upgraded) => {
                use tokio::io::AsyncWriteExt as _;
                let mut client = TokioIo::new(upgraded);
                if client.write_all(&rest).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut stream).await;
                }
            }
            Err(e) => tracing::debug!(error = %e, "streaming: client upgrade failed"),
        }
    });
    response
}

/// What the client asked for; a ready error response when it asked for nothing we speak.
#[allow(clippy::result_large_err, reason = "the error is the response we send")]
fn client_upgrade(
    req: &StreamingRequest,
    websocket_protocols: &[&'static str],
) -> Result<Upgrade, Response<StreamingBody>> {
    let values = |name: header::HeaderName| -> Vec<&str> {
        req.headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    };
    let upgrade = values(header::UPGRADE).join(",").to_ascii_lowercase();
    if upgrade.contains("websocket") {
        let Some(key) = values(header::SEC_WEBSOCKET_KEY)
            .first()
            .map(|k| k.to_string())
        else {
            return Err(plain(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key"));
        };
        let offered = values(header::SEC_WEBSOCKET_PROTOCOL);
        return match channel::negotiate(&offered, websocket_protocols) {
            Some(protocol) => Ok(Upgrade::WebSocket { protocol, key }),
            None => Err(plain(
                StatusCode::BAD_REQUEST,
                &format!(
                    "requested protocol(s) are not supported: {offered:?}; supported protocols are {websocket_protocols:?}"
                ),
            )),
        };
    }
    if upgrade.contains("spdy/3.1") {
        let protocols = values(header::HeaderName::from_static("x-stream-protocol-version"))
            .iter()
            .flat_map(|v| v.split(','))
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect();
        return Ok(Upgrade::Spdy(protocols));
    }
    Err(plain(
        StatusCode::BAD_REQUEST,
        "unable to upgrade: missing upgrade headers in request",
    ))
}

fn websocket_accepted(key: &str, protocol: &str) -> Response<StreamingBody> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    if let Ok(protocol) = HeaderValue::from_str(protocol) {
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    response
}

/// The CRI streaming server refused the upgrade: pass its status and body on.
fn relay_refusal(up: upstream::UpstreamResponse) -> Response<StreamingBody> {
    let status = StatusCode::from_u16(up.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = Response::new(Full::new(Bytes::from(up.rest)));
    *response.status_mut() = status;
    response
}

fn plain(status: StatusCode, message: &str) -> Response<StreamingBody> {
    let mut response = Response::new(Full::new(Bytes::from(message.to_owned())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
