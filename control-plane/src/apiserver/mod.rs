//! The Kubernetes API server: HTTPS (rustls) with x509 and token authentication, a pluggable
//! authorizer, discovery, and the REST verbs over the [`crate::storage::Store`].

pub mod admission;
pub mod allocator;
pub mod authn;
pub mod authz;
pub mod catalog;
pub mod crd;
pub mod discovery;
pub mod errors;
pub mod handler;
pub mod http_util;
pub mod impersonation;
pub mod kinds;
pub mod kubelet_proxy;
pub mod kubernetes_service;
pub mod list_http;
pub mod managed;
pub mod patch;
pub mod pki;
pub mod pod_http;
pub mod protobuf;
pub mod protobuf_body;
pub mod request;
pub mod rest;
pub mod reviews;
pub mod selectors;
pub mod server;
pub mod service_accounts;
pub mod table;
pub mod verbs;
pub mod watch_http;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::storage::Store;

/// How to run the apiserver.
#[derive(Debug)]
pub struct ApiServerOptions {
    /// Address to listen on (port 0: any free port).
    pub bind: SocketAddr,
    pub pki_dir: PathBuf,
    /// Generate missing PKI files (CA, serving cert, admin kubeconfig).
    pub generate_pki: bool,
    /// Extra names/IPs for the serving certificate.
    pub serving_hosts: Vec<String>,
    /// The static token file (`--token-auth-file`).
    pub token_file: Option<PathBuf>,
    pub store: Arc<dyn Store>,
    /// `--service-cluster-ip-range` and `--service-node-port-range`.
    pub service_ranges: allocator::ServiceRanges,
    /// `--advertise-address` (the `kubernetes` Endpoints' address); `None`: the bind address
    /// if specific, else the host's first non-loopback IPv4 address.
    pub advertise_address: Option<std::net::IpAddr>,
    /// How to reach kubelets (`--kubelet-*`).
    pub kubelet: kubelet_proxy::KubeletClientOptions,
    /// The optional admission plugins that run (`--disable-admission-plugins`).
    pub admission: admission::AdmissionPlugins,
}

/// Why the apiserver could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("PKI: {0}")]
    Pki(#[from] pki::PkiError),
    #[error("TLS: {0}")]
    Tls(#[from] server::TlsError),
    #[error("token file: {0}")]
    Tokens(#[from] authn::TokenFileError),
    #[error("service account signing key: {0}")]
    ServiceAccountKey(#[from] service_accounts::LoadError),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("kubelet client: {0}")]
    KubeletClient(#[from] kubelet_proxy::transport::ClientTlsError),
    #[error("bootstrapping: {0}")]
    Bootstrap(String),
}

/// A running apiserver.
#[derive(Debug)]
pub struct RunningApiServer {
    pub addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl RunningApiServer {
    /// Stops accepting, lets open requests finish briefly, and returns.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }

    /// A token that stops the server when cancelled (what [`Self::shutdown`] starts), for
    /// a caller that awaits the server with [`Self::wait`] elsewhere.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Resolves when the server stops.
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// The namespaces every cluster has.
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Starts the apiserver.
pub async fn start(options: ApiServerOptions) -> Result<RunningApiServer, StartError> {
    let listener = tokio::net::TcpListener::bind(options.bind)
        .await
        .map_err(|source| StartError::Listen {
            addr: options.bind,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: options.bind,
        source,
    })?;
    let paths = pki::PkiPaths::new(&options.pki_dir);
    if options.generate_pki {
        let host = if addr.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            addr.ip().to_string()
        };
        pki::ensure_pki(
            &paths,
            &pki::PkiRequest {
                serving_hosts: options.serving_hosts.clone(),
                server_url: format!("https://{host}:{}", addr.port()),
            },
        )?;
    }
    let serving = pki::load_pair(&paths.serving_cert(), &paths.serving_key())?;
    let ca = pki::load_pair(&paths.ca_cert(), &paths.ca_key()).or_else(|_| {
        std::fs::read_to_string(paths.ca_cert())
            .map(|cert_pem| pki::CertAndKey {
                cert_pem,
                key_pem: String::new(),
            })
            .map_err(|source| pki::PkiError::Io {
                path: paths.ca_cert(),
                source,
            })
    })?;
    let tls = server::tls_config(&serving.cert_pem, &serving.key_pem, &ca.cert_pem)?;
    let tokens = match &options.token_file {
        Some(path) => authn::TokenFile::load(path)?,
        None => authn::TokenFile::default(),
    };
    let mut authenticator = authn::Authenticator::new(tokens);
    match service_accounts::TokenAuthority::load(&paths)? {
        Some(authority) => {
            authenticator = authenticator.with_service_accounts(Arc::new(authority));
        }
        None => tracing::warn!(
            path = %paths.service_account_key().display(),
            "no service account signing key: TokenRequests fail and service account tokens are refused"
        ),
    }
    let kubelet = kubelet_proxy::KubeletClient::new(
        &options.kubelet,
        (paths.kubelet_client_cert(), paths.kubelet_client_key()),
    )?;
    let registry = rest::Registry::new(options.store.clone(), catalog::Catalog::builtin())
        .with_service_ranges(options.service_ranges)
        .with_admission(options.admission.clone());
    bootstrap(&registry).await?;
    // Serve the custom resources of stored CRDs from the first request on.
    crd::controller::reconcile(&registry)
        .await
        .map_err(|e| StartError::Bootstrap(format!("custom resources: {e}")))?;
    let services = registry.services().clone();
    if let Err(e) = services.repair(allocator::REPAIR_GRACE).await {
        tracing::warn!(error = %e, "repairing service allocations");
    }
    let advertise = kubernetes_service::advertise_address(options.advertise_address, addr.ip());
    kubernetes_service::bootstrap(&registry, advertise, addr.port())
        .await
        .map_err(|e| StartError::Bootstrap(format!("the kubernetes service: {}", e.message)))?;
    let handler = Arc::new(handler::ApiHandler {
        registry,
        authenticator,
        authorizer: Arc::new(authz::AlwaysAllow),
        server_address: addr.to_string(),
        kubelet,
    });
    let stop = CancellationToken::new();
    let controller = tokio::spawn(crd::controller::run(handler.clone(), stop.clone()));
    let serving = server::serve(listener, tls, handler, stop.clone());
    let repairing = tokio::spawn(services.repair_loop(stop.clone()));
    let task = tokio::spawn(async move {
        serving.await;
        let _ = repairing.await;
        // The CRD controller stops with the server (it holds the store).
        let _ = controller.await;
    });
    tracing::info!(%addr, "apiserver listening");
    Ok(RunningApiServer { addr, stop, task })
}

/// Creates the system namespaces and the system priority classes if they are missing.
async fn bootstrap(registry: &rest::Registry) -> Result<(), StartError> {
    let catalog = registry.catalog();
    let def = catalog
        .lookup("", "v1", "namespaces")
        .cloned()
        .ok_or_else(|| StartError::Bootstrap("namespaces are not served".into()))?;
    for name in SYSTEM_NAMESPACES {
        let target = rest::Target {
            def: def.clone(),
            namespace: None,
            name: None,
            subresource: None,
        };
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        match registry
            .create(&target, body, &rest::write::WriteParams::default())
            .await
        {
            Ok(_) => {}
            Err(e) if e.code == 409 => {}
            Err(e) => return Err(StartError::Bootstrap(format!("namespace {name}: {e}"))),
        }
    }
    rest::priority::bootstrap_system_priority_classes(registry)
        .await
        .map_err(|e| StartError::Bootstrap(format!("system priority classes: {e}")))?;
    Ok(())
}
pub mod openapi;
pub mod openapi_schemas;
