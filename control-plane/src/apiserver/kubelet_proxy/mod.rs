//! The apiserver's connections to kubelets, as upstream's: `pods/<name>/log` streamed from
//! the kubelet's `/containerLogs`, `pods/<name>/exec|attach|portforward` passed through as
//! HTTP/1.1 upgrades (no protocol is interpreted here), and `nodes/<name>[:port]/proxy/...`
//! for any verb. Where a kubelet is comes from its Node object
//! ([`plan::kubelet_endpoint`]); how to reach it from [`KubeletClientOptions`].

pub mod plan;
pub mod transport;

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Buf;
use http::request::Parts;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;

use super::errors::ApiError;
use super::handler::ApiHandler;
use super::http_util::{Body, error_response, full};
use super::request::Query;
use super::rest::Target;
use plan::PodStream;
use transport::{ClientTlsError, ClientTlsMaterial, UpstreamBody};

/// How the apiserver reaches kubelets (`--kubelet-*` flags).
#[derive(Debug, Clone)]
pub struct KubeletClientOptions {
    /// `--kubelet-client-certificate` / `--kubelet-client-key`; `None`: the generated
    /// `apiserver-kubelet-client.crt/key` in the PKI directory if present.
    pub client_certificate: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// `--kubelet-certificate-authority`; `None`: kubelet serving certificates are not
    /// verified (as upstream).
    pub certificate_authority: Option<PathBuf>,
    /// `--kubelet-preferred-address-types`, in order.
    pub preferred_address_types: Vec<String>,
    /// The port used when a Node reports none (`status.daemonEndpoints.kubeletEndpoint.Port` 0).
    pub default_port: u16,
}

impl Default for KubeletClientOptions {
    fn default() -> Self {
        Self {
            client_certificate: None,
            client_key: None,
            certificate_authority: None,
            preferred_address_types: plan::DEFAULT_PREFERRED_ADDRESS_TYPES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            default_port: plan::DEFAULT_KUBELET_PORT,
        }
    }
}

/// The ready-to-use kubelet client.
#[derive(Clone)]
pub struct KubeletClient {
    tls: Arc<rustls::ClientConfig>,
    /// The same identity without serving-certificate verification
    /// (`pods/log?insecureSkipTLSVerifyBackend=true`).
    insecure_tls: Arc<rustls::ClientConfig>,
    preferred_address_types: Vec<String>,
    default_port: u16,
}

impl std::fmt::Debug for KubeletClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeletClient")
            .field("preferred_address_types", &self.preferred_address_types)
            .field("default_port", &self.default_port)
            .finish_non_exhaustive()
    }
}

impl KubeletClient {
    /// Loads the files `options` names (`default_identity`: the generated client pair, used
    /// when no client certificate flag is given and both files exist).
    pub fn new(
        options: &KubeletClientOptions,
        default_identity: (PathBuf, PathBuf),
    ) -> Result<Self, ClientTlsError> {
        let read = |path: &PathBuf| {
            std::fs::read_to_string(path).map_err(|source| ClientTlsError::Read {
                path: path.clone(),
                source,
            })
        };
        let identity = match (&options.client_certificate, &options.client_key) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            _ if default_identity.0.exists() && default_identity.1.exists() => {
                Some(default_identity)
            }
            _ => None,
        };
        let mut material = ClientTlsMaterial::default();
        if let Some((cert, key)) = identity {
            material.client_cert_pem = Some(read(&cert)?);
            material.client_key_pem = Some(read(&key)?);
        }
        let insecure_tls = transport::client_config(&material)?;
        let tls = match &options.certificate_authority {
            Some(ca) => {
                material.ca_pem = Some(read(ca)?);
                transport::client_config(&material)?
            }
            None => insecure_tls.clone(),
        };
        Ok(Self {
            tls,
            insecure_tls,
            preferred_address_types: options.preferred_address_types.clone(),
            default_port: options.default_port,
        })
    }
}

/// Whether a request is served by a kubelet.
pub fn handles(target: &Target) -> bool {
    let def = &target.def;
    def.group.is_empty()
        && target.name.is_some()
        && matches!(
            (def.plural.as_str(), target.subresource.as_deref()),
            ("pods", Some("log" | "exec" | "attach" | "portforward")) | ("nodes", Some("proxy"))
        )
}

/// Serves a request [`handles`] accepted (the body is streamed to the kubelet).
pub async fn serve<B>(
    handler: &ApiHandler,
    target: &Target,
    parts: Parts,
    body: B,
    query: &Query,
) -> Response<Body>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let body: UpstreamBody = body
        .map_frame(|f| f.map_data(|mut d| d.copy_to_bytes(d.remaining())))
        .map_err(|e| Box::new(e) as transport::BoxError)
        .boxed_unsync();
    let result = match (target.def.plural.as_str(), target.subresource.as_deref()) {
        ("pods", Some("log")) => pod_log(handler, target, query).await,
        ("pods", Some(sub)) => match PodStream::parse(sub) {
            Some(kind) => pod_stream(handler, target, kind, parts, body, query).await,
            None => Err(ApiError::page_not_found()),
        },
        _ => node_proxy(handler, target, parts, body).await,
    };
    result.unwrap_or_else(|e| error_response(&e))
}

/// A resolved kubelet: what to connect to and how to name it in messages.
struct Backend {
    node: String,
    host: String,
    addr: std::net::SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
}

async fn get_object(
    handler: &ApiHandler,
    plural: &str,
    namespace: Option<String>,
    name: &str,
) -> Result<Value, ApiError> {
    let def = handler
        .registry
        .catalog()
        .lookup("", "v1", plural)
        .cloned()
        .ok_or_else(ApiError::page_not_found)?;
    handler
        .registry
        .get(&Target {
            def,
            namespace,
            name: Some(name.to_string()),
            subresource: None,
        })
        .await
}

/// The kubelet of node `node` (at `port` instead of its kubelet port when given).
async fn backend(
    handler: &ApiHandler,
    node_name: &str,
    port: Option<u16>,
    scheme: Option<&str>,
) -> Result<Backend, ApiError> {
    let client = &handler.kubelet;
    let node = get_object(handler, "nodes", None, node_name).await?;
    let Some(endpoint) =
        plan::kubelet_endpoint(&node, &client.preferred_address_types, client.default_port)
    else {
        let known = node
            .pointer("/status/addresses")
            .cloned()
            .unwrap_or(Value::Array(Vec::new()));
        return Err(ApiError::internal(format!(
            "no preferred addresses found for node {node_name}; known addresses: {known}"
        )));
    };
    let kubelet_port = port.is_none_or(|p| p == endpoint.port);
    let port = port.unwrap_or(endpoint.port);
    let (host, addr) = transport::resolve(&endpoint.hosts, port)
        .await
        .map_err(|e| ApiError::internal(format!("no address of node {node_name} resolves: {e}")))?;
    let tls = match scheme {
        Some("http") => None,
        Some(_) => Some(client.tls.clone()),
        None if kubelet_port => Some(client.tls.clone()),
        None => None,
    };
    Ok(Backend {
        node: node_name.to_string(),
        host,
        addr,
        tls,
    })
}

/// Sends `request` (origin-form URI) to the backend, naming the node in dial errors.
async fn send(
    backend: &Backend,
    mut request: Request<UpstreamBody>,
) -> Result<Response<hyper::body::Incoming>, ApiError> {
    let authority = if backend.addr.is_ipv6() {
        format!("[{}]:{}", backend.addr.ip(), backend.addr.port())
    } else {
        format!("{}:{}", backend.host, backend.addr.port())
    };
    if let Ok(v) = HeaderValue::from_str(&authority) {
        request.headers_mut().insert(header::HOST, v);
    }
    transport::send(backend.addr, &backend.host, backend.tls.clone(), request)
        .await
        .map_err(|e| {
            ApiError::internal(format!(
                "error dialing backend of node {} ({}): {e}",
                backend.node, backend.addr
            ))
        })
}

async fn pod_log(
    handler: &ApiHandler,
    target: &Target,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let name = target.name.as_deref().unwrap_or_default();
    let namespace = target.namespace.clone().unwrap_or_default();
    let pod = get_object(handler, "pods", Some(namespace.clone()), name).await?;
    let container = plan::choose_container(&pod, query.get("container"))?;
    let path = plan::log_path_and_query(&namespace, name, &container, query)?;
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if node.is_empty() {
        // Upstream: a pod without a node has an empty log.
        return Ok(text_stream(StatusCode::OK, full(Vec::new())));
    }
    let mut backend = backend(handler, node, None, None).await?;
    if query.flag("insecureSkipTLSVerifyBackend") {
        backend.tls = Some(handler.kubelet.insecure_tls.clone());
    }
    let request = Request::get(path)
        .body(
            http_body_util::Empty::new()
                .map_err(|e| match e {})
                .boxed_unsync(),
        )
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let response = send(&backend, request).await?;
    let status = response.status();
    if !status.is_success() {
        let bytes = read_limited(response.into_body()).await;
        let message = String::from_utf8_lossy(&bytes).trim().to_string();
        return Err(kubelet_error(status, message, name));
    }
    Ok(text_stream(
        StatusCode::OK,
        transport::stream_body(response.into_body()),
    ))
}

/// A non-2xx kubelet answer as a Status (upstream's generic HTTP response checker).
fn kubelet_error(status: StatusCode, message: String, pod: &str) -> ApiError {
    let reason = match status.as_u16() {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    };
    let message = if message.is_empty() {
        format!("the server rejected our request for an unknown reason (get pods {pod})")
    } else {
        message
    };
    ApiError::new(status.as_u16(), reason, message)
}

async fn read_limited(body: hyper::body::Incoming) -> Vec<u8> {
    const LIMIT: usize = 64 * 1024;
    let mut out = Vec::new();
    let mut body = body;
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            out.extend_from_slice(data);
            if out.len() >= LIMIT {
                out.truncate(LIMIT);
                break;
            }
        }
    }
    out
}

fn text_stream(status: StatusCode, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

fn is_upgrade(parts: &Parts) -> bool {
    parts.headers.contains_key(header::UPGRADE)
        && parts
            .headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

async fn pod_stream(
    handler: &ApiHandler,
    target: &Target,
    kind: PodStream,
    parts: Parts,
    body: UpstreamBody,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let name = target.name.as_deref().unwrap_or_default();
    let namespace = target.namespace.clone().unwrap_or_default();
    let pod = get_object(handler, "pods", Some(namespace.clone()), name).await?;
    let container = match kind {
        PodStream::PortForward => String::new(),
        _ => plan::choose_container(&pod, query.get("container"))?,
    };
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if node.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    if !is_upgrade(&parts) {
        return Err(ApiError::bad_request("Upgrade request required"));
    }
    let path = plan::stream_path_and_query(kind, &namespace, name, &container, query);
    let backend = backend(handler, node, None, None).await?;
    forward(&backend, parts, body, path).await
}

async fn node_proxy(
    handler: &ApiHandler,
    target: &Target,
    parts: Parts,
    body: UpstreamBody,
) -> Result<Response<Body>, ApiError> {
    let id = target.name.as_deref().unwrap_or_default();
    let (scheme, node, port) = plan::split_scheme_name_port(id)
        .ok_or_else(|| ApiError::bad_request(format!("invalid node request {id:?}")))?;
    let port = match port {
        Some(p) => Some(
            p.parse::<u16>()
                .map_err(|_| ApiError::bad_request(format!("invalid node request {id:?}")))?,
        ),
        None => None,
    };
    let raw_path = parts.uri.path();
    let marker = format!("/{id}/proxy");
    let rest = raw_path
        .find(&marker)
        .map(|at| &raw_path[at + marker.len()..])
        .unwrap_or_default();
    let mut path = if rest.starts_with('/') {
        rest.to_string()
    } else {
        format!("/{rest}")
    };
    if let Some(q) = parts.uri.query() {
        path.push('?');
        path.push_str(q);
    }
    let backend = backend(handler, node, port, scheme).await?;
    forward(&backend, parts, body, path).await
}

/// Passes a request through to the backend: an upgrade is answered with the backend's 101
/// and spliced; anything else is relayed (streamed) as is.
async fn forward(
    backend: &Backend,
    parts: Parts,
    body: UpstreamBody,
    path_and_query: String,
) -> Result<Response<Body>, ApiError> {
    let upgrade = is_upgrade(&parts);
    let mut incoming = Request::from_parts(parts, ());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut incoming));
    let (parts, ()) = incoming.into_parts();
    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = path_and_query
        .parse()
        .map_err(|_| ApiError::bad_request("invalid proxy path"))?;
    let mut headers = parts.headers.clone();
    for name in [header::AUTHORIZATION, header::HOST] {
        headers.remove(name);
    }
    let impersonation: Vec<_> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("impersonate-"))
        .cloned()
        .collect();
    for name in impersonation {
        headers.remove(name);
    }
    transport::copy_headers(&headers, request.headers_mut(), upgrade);
    if parts.method == Method::GET || parts.method == Method::HEAD {
        request.headers_mut().remove(header::CONTENT_LENGTH);
    }
    let mut response = send(backend, request).await?;
    let status = response.status();
    let mut out = Response::new(full(Vec::new()));
    *out.status_mut() = status;
    match client_upgrade {
        Some(client) if status == StatusCode::SWITCHING_PROTOCOLS => {
            transport::copy_headers(response.headers(), out.headers_mut(), true);
            let kubelet = hyper::upgrade::on(&mut response);
            tokio::spawn(async move {
                match (client.await, kubelet.await) {
                    (Ok(client), Ok(kubelet)) => transport::splice(client, kubelet).await,
                    (Err(e), _) | (_, Err(e)) => {
                        tracing::debug!(error = %e, "upgrading a kubelet stream failed")
                    }
                }
            });
        }
        _ => {
            transport::copy_headers(response.headers(), out.headers_mut(), false);
            *out.body_mut() = transport::stream_body(response.into_body());
        }
    }
    Ok(out)
}
