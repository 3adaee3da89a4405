//! The kubelet connection: TCP (bounded dial time) + rustls with the apiserver's kubelet client
//! certificate, HTTP/1.1 with upgrades, response bodies streamed through, and the byte
//! splice of an upgraded (101) connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use kwk_pki::tls::AnyServerCert;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsConnector;

use super::super::http_util::Body;

/// upstream's kubelet client `HTTPTimeout` (the dial).
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// The body of a request sent to a kubelet.
pub type UpstreamBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a kubelet client configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientTlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: {reason}")]
    Pem { what: &'static str, reason: String },
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("kubelet CA: {0}")]
    Verifier(String),
}

/// PEM texts of the kubelet client identity and the CA that signs kubelet serving certs.
#[derive(Default)]
pub struct ClientTlsMaterial {
    pub client_cert_pem: Option<String>,
    pub client_key_pem: Option<String>,
    pub ca_pem: Option<String>,
}

impl std::fmt::Debug for ClientTlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTlsMaterial").finish_non_exhaustive()
    }
}

/// A rustls client configuration for kubelets: the client certificate when given; the
/// serving certificate verified against `ca_pem` when given, else (as upstream without
/// `--kubelet-certificate-authority`) not verified.
pub fn client_config(
    material: &ClientTlsMaterial,
) -> Result<Arc<rustls::ClientConfig>, ClientTlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match &material.ca_pem {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                roots.add(cert.map_err(|e| ClientTlsError::Pem {
                    what: "kubelet certificate authority",
                    reason: e.to_string(),
                })?)?;
            }
            let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| ClientTlsError::Verifier(e.to_string()))?;
            builder.with_webpki_verifier(verifier)
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerCert::new(provider))),
    };
    let mut config = match (&material.client_cert_pem, &material.client_key_pem) {
        (Some(cert), Some(key)) => {
            let certs: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<_, _>>()
                    .map_err(|e| ClientTlsError::Pem {
                        what: "kubelet client certificate",
                        reason: e.to_string(),
                    })?;
            let key =
                PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| ClientTlsError::Pem {
                    what: "kubelet client key",
                    reason: e.to_string(),
                })?;
            builder.with_client_auth_cert(certs, key)?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Resolves the first of `hosts` that resolves (in order) to a socket address.
pub async fn resolve(hosts: &[String], port: u16) -> Result<(String, SocketAddr), String> {
    let mut failures = Vec::new();
    for host in hosts {
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            return Ok((host.clone(), SocketAddr::new(ip, port)));
        }
        match tokio::net::lookup_host((host.as_str(), port)).await {
            Ok(mut addrs) => {
                if let Some(addr) = addrs.next() {
                    return Ok((host.clone(), addr));
                }
                failures.push(format!("{host}: no addresses"));
            }
            Err(e) => failures.push(format!("{host}: {e}")),
        }
    }
    Err(failures.join("; "))
}

/// Opens an HTTP/1.1 connection to `addr` (TLS when `tls` is given, with `host` as the
/// server name) and sends `request`.
pub async fn send(
    addr: SocketAddr,
    host: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
    request: Request<UpstreamBody>,
) -> Result<Response<Incoming>, String> {
    let tcp = tokio::time::timeout(DIAL_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| format!("dial tcp {addr}: i/o timeout"))?
        .map_err(|e| format!("dial tcp {addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    match tls {
        Some(config) => {
            let name = ServerName::try_from(host.to_string())
                .map_err(|e| format!("server name {host:?}: {e}"))?;
            let stream =
                tokio::time::timeout(DIAL_TIMEOUT, TlsConnector::from(config).connect(name, tcp))
                    .await
                    .map_err(|_| format!("TLS handshake with {addr}: timeout"))?
                    .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
            exchange(stream, request).await
        }
        None => exchange(tcp, request).await,
    }
}

async fn exchange<S>(
    stream: S,
    request: Request<UpstreamBody>,
) -> Result<Response<Incoming>, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(error = %e, "kubelet connection ended with an error");
        }
    });
    sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())
}

/// A kubelet response body passed through frame by frame (an error ends it).
pub fn stream_body(incoming: Incoming) -> Body {
    let frames = futures::stream::unfold(Some(incoming), |state| async move {
        let mut incoming = state?;
        match incoming.frame().await {
            Some(Ok(frame)) => Some((
                Ok::<Frame<Bytes>, std::convert::Infallible>(frame),
                Some(incoming),
            )),
            Some(Err(e)) => {
                tracing::debug!(error = %e, "kubelet response body ended with an error");
                None
            }
            None => None,
        }
    });
    StreamBody::new(frames).boxed_unsync()
}

/// Headers that describe one hop, not the message.
pub fn is_hop_by_hop(name: &header::HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Copies `from` into `to`, leaving out hop-by-hop headers unless `upgrade`.
pub fn copy_headers(from: &HeaderMap, to: &mut HeaderMap, upgrade: bool) {
    for (name, value) in from {
        if upgrade || !is_hop_by_hop(name) {
            to.append(name.clone(), value.clone());
        }
    }
}

/// Splices two upgraded connections until either side closes (as upstream's
/// upgrade-aware proxy: one finished direction ends both).
pub async fn splice(client: hyper::upgrade::Upgraded, kubelet: hyper::upgrade::Upgraded) {
    let (mut client_read, mut client_write) = tokio::io::split(TokioIo::new(client));
    let (mut kubelet_read, mut kubelet_write) = tokio::io::split(TokioIo::new(kubelet));
    tokio::select! {
        _ = tokio::io::copy(&mut client_read, &mut kubelet_write) => {}
        _ = tokio::io::copy(&mut kubelet_read, &mut client_write) => {}
    }
    let _ = client_write.shutdown().await;
    let _ = kubelet_write.shutdown().await;
}
