//! The network probe handlers: TCP connect, HTTP(S) GET and `grpc.health.v1.Health/Check`,
//! each bounded by the probe's timeout, with upstream's success rules and failure messages.
//! (Exec probes go through the container runtime: [`crate::pod::runtime::PodRuntime`].)

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::spec::Scheme;
use super::tracker::RunResult;

/// The `User-Agent` of HTTP probes (as upstream's, which servers sometimes match on).
pub const USER_AGENT: &str = "kube-probe/1.33";

/// How many redirects an HTTP probe follows (to the same host), as Go's client.
const MAX_REDIRECTS: usize = 10;

/// The most of a response head an HTTP probe reads.
const MAX_HEAD: usize = 16 * 1024;

/// Resolves a probe's host (an IP, or a name) and port.
async fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    tokio::net::lookup_host((host, port))
        .await
        .map_err(|err| format!("lookup {host}: {err}"))?
        .next()
        .ok_or_else(|| format!("lookup {host}: no addresses"))
}

/// `host:port`, bracketing IPv6 addresses.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A TCP probe: success when the connection opens.
pub async fn tcp(host: &str, port: u16, timeout: Duration) -> RunResult {
    let target = host_port(host, port);
    let attempt = async {
        let addr = resolve(host, port).await?;
        TcpStream::connect(addr)
            .await
            .map(drop)
            .map_err(|err| format!("dial tcp {target}: connect: {}", describe(&err)))
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(())) => RunResult::Success,
        Ok(Err(message)) => RunResult::Failure(message),
        Err(_) => RunResult::Failure(format!("dial tcp {target}: i/o timeout")),
    }
}

/// What an HTTP probe asks for.
#[derive(Clone, Debug)]
pub struct HttpRequest<'a> {
    pub scheme: Scheme,
    pub host: &'a str,
    pub port: u16,
    pub path: &'a str,
    pub headers: &'a [(String, String)],
}

/// An HTTP(S) probe: success for a status in 200..400 after following same-host redirects;
/// a redirect to another host counts as success (upstream reports it as a warning).
/// Certificates are not verified, as upstream's prober.
pub async fn http(request: &HttpRequest<'_>, timeout: Duration) -> RunResult {
    let scheme = match request.scheme {
        Scheme::Http => "http",
        Scheme::Https => "https",
    };
    let url = format!(
        "{scheme}://{}{}",
        host_port(request.host, request.port),
        request.path
    );
    match tokio::time::timeout(timeout, http_follow(request)).await {
        Ok(Ok(status)) if (200..400).contains(&status) => RunResult::Success,
        Ok(Ok(status)) => {
            RunResult::Failure(format!("HTTP probe failed with statuscode: {status}"))
        }
        Ok(Err(message)) => RunResult::Failure(format!("Get \"{url}\": {message}")),
        Err(_) => RunResult::Failure(format!(
            "Get \"{url}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        )),
    }
}

/// The final status code after same-host redirects.
async fn http_follow(request: &HttpRequest<'_>) -> Result<u16, String> {
    let mut path = request.path.to_string();
    for _ in 0..=MAX_REDIRECTS {
        let (status, location) = http_once(request, &path).await?;
        let Some(location) = location.filter(|_| (300..400).contains(&status)) else {
            return Ok(status);
        };
        match same_host_path(&location, request) {
            Some(next) => path = next,
            // Elsewhere: not followed; upstream counts it a success (with a warning).
            None => return Ok(200),
        }
    }
    Err(format!("stopped after {MAX_REDIRECTS} redirects"))
}

/// The path to follow a `Location` on the probe's own host, `None` for another host.
fn same_host_path(location: &str, request: &HttpRequest<'_>) -> Option<String> {
    if location.starts_with('/') && !location.starts_with("//") {
        return Some(location.to_string());
    }
    let rest = location
        .strip_prefix("http://")
        .or_else(|| location.strip_prefix("https://"))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let own = [
        host_port(request.host, request.port),
        request.host.to_string(),
    ];
    own.iter()
        .any(|o| o.eq_ignore_ascii_case(authority))
        .then(|| {
            if path.is_empty() {
                "/".to_string()
            } else {
                path.to_string()
            }
        })
}

/// One GET; the status code and the `Location` header.
async fn http_once(request: &HttpRequest<'_>, path: &str) -> Result<(u16, Option<String>), String> {
    let addr = resolve(request.host, request.port).await?;
    let stream = TcpStream::connect(addr).await.map_err(|err| {
        format!(
            "dial tcp {}: connect: {}",
            host_port(request.host, request.port),
            describe(&err)
        )
    })?;
    let head = request_head(request, path);
    match request.scheme {
        Scheme::Http => exchange(stream, &head).await,
        Scheme::Https => {
            let name = rustls_pki_types::ServerName::try_from(request.host.to_string())
                .map_err(|err| format!("server name {}: {err}", request.host))?;
            let tls = tokio_rustls::TlsConnector::from(insecure_tls()?)
                .connect(name, stream)
                .await
                .map_err(|err| format!("tls: {err}"))?;
            exchange(tls, &head).await
        }
    }
}

/// The request head: the defaults (Host, User-Agent, Accept), each replaced by a probe header
/// of the same name, then the probe's other headers.
fn request_head(request: &HttpRequest<'_>, path: &str) -> String {
    let defaults = [
        ("Host", host_port(request.host, request.port)),
        ("User-Agent", USER_AGENT.to_string()),
        ("Accept", "*/*".to_string()),
    ];
    let mut head = format!("GET {path} HTTP/1.1\r\n");
    for (name, value) in defaults {
        if !request
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    for (name, value) in request.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    head
}

/// Sends the head and reads the response head (the body is not read).
async fn exchange(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    head: &str,
) -> Result<(u16, Option<String>), String> {
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|err| format!("write: {}", describe(&err)))?;
    let mut buf = Vec::with_capacity(1024);
    loop {
        let mut chunk = [0u8; 2048];
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|err| format!("read: {}", describe(&err)))?;
        if n == 0 {
            return Err("EOF before the response head".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                let status = response.code.ok_or("no status code")?;
                let location = response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("location"))
                    .map(|h| String::from_utf8_lossy(h.value).into_owned());
                return Ok((status, location));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) => return Err("response head too long".into()),
            Err(err) => return Err(format!("malformed HTTP response: {err}")),
        }
    }
}

/// A client configuration that accepts any server certificate (signatures still checked).
fn insecure_tls() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, String>> =
        std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|err| format!("tls: {err}"))?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(kwk_pki::tls::AnyServerCert::new(
                    provider,
                )))
                .with_no_client_auth();
            Ok(Arc::new(config))
        })
        .clone()
}

/// Go's wording for the common connection errors (upstream's messages carry them).
fn describe(err: &std::io::Error) -> String {
    match err.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::ConnectionReset => "connection reset by peer".into(),
        _ => err.to_string(),
    }
}

/// A gRPC probe: `grpc.health.v1.Health/Check` for `service` must answer `SERVING`.
///
/// As upstream's blocking dial, a connection that cannot be made (a closed port) is retried
/// until the timeout, then reported as a connect timeout; the RPC gets what is left of it.
pub async fn grpc(host: &str, port: u16, service: &str, timeout: Duration) -> RunResult {
    let deadline = tokio::time::Instant::now() + timeout;
    let target = host_port(host, port);
    let seconds = go_duration(timeout);
    let channel = match tokio::time::timeout_at(deadline, connect_until(host, port, deadline)).await
    {
        Ok(Ok(channel)) => channel,
        Ok(Err(message)) => {
            return RunResult::Failure(format!(
                "error: failed to connect service at \"{target}\": {message}"
            ));
        }
        Err(_) => {
            return RunResult::Failure(format!(
                "timeout: failed to connect service \"{target}\" within {seconds}: context deadline exceeded"
            ));
        }
    };
    match tokio::time::timeout_at(deadline, health_check(channel, service, &seconds)).await {
        Ok(Ok(1)) => RunResult::Success,
        Ok(Ok(status)) => RunResult::Failure(format!(
            "service unhealthy (responded with \"{}\")",
            serving_status_name(status)
        )),
        Ok(Err(message)) => RunResult::Failure(message),
        Err(_) => RunResult::Failure(format!(
            "timeout: health rpc did not complete within {seconds}"
        )),
    }
}

/// A duration as Go's `%v` prints the whole or fractional seconds of a probe timeout.
fn go_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

/// `grpc.health.v1.HealthCheckResponse.ServingStatus` names (a number for values the enum
/// does not know, as Go's protobuf does).
fn serving_status_name(status: i32) -> String {
    match status {
        0 => "UNKNOWN".into(),
        1 => "SERVING".into(),
        2 => "NOT_SERVING".into(),
        3 => "SERVICE_UNKNOWN".into(),
        other => other.to_string(),
    }
}

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    pub service: String,
}

/// `grpc.health.v1.HealthCheckResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    pub status: i32,
}

/// Connects a plaintext HTTP/2 channel, retrying refused or failed connections with a
/// growing pause until `deadline` (the caller's timeout ends the loop). Only an address that
/// cannot be resolved or parsed fails at once.
async fn connect_until(
    host: &str,
    port: u16,
    deadline: tokio::time::Instant,
) -> Result<tonic::transport::Channel, String> {
    let addr = resolve(host, port).await?;
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|err| err.to_string())?
        .user_agent(USER_AGENT)
        .map_err(|err| err.to_string())?;
    let mut pause = Duration::from_millis(50);
    loop {
        if let Ok(channel) = endpoint.connect().await {
            return Ok(channel);
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            // The caller's timeout fires first; this only guards a zero timeout.
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

/// One `Check` call on `channel`; the serving status (`seconds`: the timeout, for messages).
async fn health_check(
    channel: tonic::transport::Channel,
    service: &str,
    seconds: &str,
) -> Result<i32, String> {
    let mut client = tonic::client::Grpc::new(channel);
    client
        .ready()
        .await
        .map_err(|err| format!("error: health rpc probe failed: {err}"))?;
    let path = http::uri::PathAndQuery::from_static("/grpc.health.v1.Health/Check");
    let codec = tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default();
    let response = client
        .unary(
            tonic::Request::new(HealthCheckRequest {
                service: service.to_string(),
            }),
            path,
            codec,
        )
        .await
        .map_err(|status| match status.code() {
            tonic::Code::Unimplemented => format!(
                "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): {}",
                status.message()
            ),
            tonic::Code::DeadlineExceeded => {
                format!("timeout: health rpc did not complete within {seconds}")
            }
            code => format!(
                "error: health rpc probe failed: rpc error: code = {code:?} desc = {}",
                status.message()
            ),
        })?;
    Ok(response.into_inner().status)
}
