//! The kubelet API: HTTPS on `address:port` (default `0.0.0.0:10250`) serving `/healthz`,
//! `/pods`, `/containerLogs/{ns}/{pod}/{container}`, `/stats/summary`, `/metrics`,
//! `/metrics/resource` and `/configz` to authenticated and authorized callers (see [`authn`]
//! and [`authz`]). The unauthenticated read-only port is never served.
//!
//! The streaming endpoints (`/exec`, `/attach`, `/portForward`) skip the router: each
//! connection's service sends them, as raw hyper requests with upgrades intact, to
//! `routes::streaming`, which authenticates and authorizes them (`nodes/proxy`, verb `create`
//! for POST) and hands them to [`streaming_routes`] and [`crate::streaming`]; `/run` is not
//! served.
//!
//! When it runs: with an apiserver (`--kubeconfig`) always, tokens and authorization going
//! through TokenReview and SubjectAccessReview. Standalone there is no apiserver to ask, so
//! the API is served only if a caller can authenticate without one — `clientCAFile` set, or
//! anonymous access enabled — and every authenticated caller is then allowed (`AlwaysAllow`);
//! otherwise it is not started and the log says why.

pub mod authn;
pub mod authz;
pub mod cgroup_stats;
pub mod configz;
pub mod container_logs;
pub mod cri_log;
pub mod fs_net;
pub mod metrics;
pub mod pod_start;
pub mod resource_metrics;
mod routes;
#[cfg(test)]
mod scripted_apiserver;
pub mod stats;
mod streaming_routes;
pub mod system_containers;
pub mod tls;
pub mod volume_stats;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use kwk_cri::CriClient;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::{AuthorizationMode, KubeletConfig};
use crate::pod::store::StatusStore;

pub use authn::{Authenticator, User};
pub use authz::{Authorizer, WebhookAuthorizer};
pub use tls::ServingCert;

/// Under the root dir: the self-signed serving certificate (`kubelet.crt`, `kubelet.key`).
pub const PKI_DIR: &str = "pki";

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the kubelet API could not start.
#[derive(Debug, thiserror::Error)]
pub enum KubeletApiError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What the server needs to know.
#[derive(Debug)]
pub struct ServerSettings {
    pub bind: SocketAddr,
    pub serving: ServingCert,
    /// `authentication.x509.clientCAFile`.
    pub client_ca: Option<PathBuf>,
    pub node_name: String,
    /// kwk-node's root dir (the node `fs` of `/stats/summary` is its file system).
    pub root_dir: PathBuf,
    pub pod_logs_dir: PathBuf,
    pub authenticator: Authenticator,
    pub authorizer: Authorizer,
    /// The `/configz` document.
    pub configz: serde_json::Value,
    /// Where the pod cgroups are, for their CPU and memory in `/stats/summary`.
    pub cgroups: Option<crate::cgroups::CgroupConfig>,
    /// The runtime's socket: its server's cgroup is the `runtime` system container.
    pub runtime_socket: Option<PathBuf>,
}

/// What the handlers share.
#[derive(Debug)]
struct Shared {
    node_name: String,
    root_dir: PathBuf,
    pod_logs_dir: PathBuf,
    authenticator: Authenticator,
    authorizer: Authorizer,
    configz: serde_json::Value,
    store: StatusStore,
    stats: stats::StatsSource,
    pod_start: pod_start::PodStartTracker,
    /// `None` only in tests without a runtime.
    cri: Option<CriClient>,
}

/// A bound, not yet running, kubelet API server.
pub struct BoundServer {
    pub addr: SocketAddr,
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
}

/// Sets up TLS and binds the listener.
pub async fn bind(
    settings: ServerSettings,
    store: StatusStore,
    cri: Option<CriClient>,
) -> Result<BoundServer, KubeletApiError> {
    let tls = tls::server_config(&settings.serving, settings.client_ca.as_deref())?;
    let listener =
        TcpListener::bind(settings.bind)
            .await
            .map_err(|source| KubeletApiError::Bind {
                addr: settings.bind,
                source,
            })?;
    let addr = listener
        .local_addr()
        .map_err(|source| KubeletApiError::Bind {
            addr: settings.bind,
            source,
        })?;
    Ok(BoundServer {
        addr,
        listener,
        acceptor: TlsAcceptor::from(tls),
        shared: Arc::new(Shared {
            node_name: settings.node_name,
            root_dir: settings.root_dir,
            pod_logs_dir: settings.pod_logs_dir,
            authenticator: settings.authenticator,
            authorizer: settings.authorizer,
            configz: settings.configz,
            store,
            stats: {
                let stats =
                    stats::StatsSource::new(cri.clone(), cgroup_locator(settings.cgroups.as_ref()));
                match settings.runtime_socket {
                    Some(socket) => stats.with_runtime_socket(socket),
                    None => stats,
                }
            },
            pod_start: pod_start::PodStartTracker::default(),
            cri,
        }),
    })
}

/// The pod cgroup locator, or `None` (logged) when the cgroups cannot be read.
fn cgroup_locator(
    config: Option<&crate::cgroups::CgroupConfig>,
) -> Option<crate::cgroups::CgroupLocator> {
    let config = config?;
    crate::cgroups::CgroupLocator::new(config)
        .inspect_err(|err| {
            tracing::warn!(error = %err, "pod cgroups not readable: pod stats sum their containers");
        })
        .ok()
}

impl std::fmt::Debug for BoundServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl BoundServer {
    /// Serves until `cancel`; open connections are then closed.
    pub async fn run(self, cancel: CancellationToken) {
        let router = routes::router(self.shared.clone());
        let connections = tokio_util::task::TaskTracker::new();
        loop {
            let (tcp, peer) = tokio::select! {
                () = cancel.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(err) => {
                        tracing::warn!(%err, "kubelet API: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = self.acceptor.clone();
            let router = router.clone();
            let shared = self.shared.clone();
            let cancel = cancel.clone();
            connections.spawn(async move {
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(err)) => {
                        tracing::debug!(%peer, %err, "kubelet API: TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
                let client_cert = routes::ClientCert(
                    tls.get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|certs| certs.first())
                        .map(|c| Arc::new(c.to_vec())),
                );
                let shared = shared.clone();
                let service = hyper::service::service_fn(
                    move |mut request: http::Request<hyper::body::Incoming>| {
                        request.extensions_mut().insert(client_cert.clone());
                        let router = router.clone();
                        let shared = shared.clone();
                        async move {
                            if routes::is_streaming(request.uri().path()) {
                                Ok(routes::streaming(shared, request).await)
                            } else {
                                tower::ServiceExt::oneshot(router, request).await
                            }
                        }
                    },
                );
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let connection = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
                tokio::pin!(connection);
                tokio::select! {
                    _ = connection.as_mut() => {}
                    () = cancel.cancelled() => {
                        connection.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(Duration::from_secs(2), connection).await;
                    }
                }
            });
        }
        connections.close();
        connections.wait().await;
    }
}

/// What kwk-node's wiring passes in.
#[derive(Clone)]
#[allow(missing_debug_implementations, reason = "kube::Client is not Debug")]
pub struct NodeContext {
    pub node_name: String,
    pub root_dir: PathBuf,
    /// The apiserver client (`--kubeconfig`), for TokenReview and SubjectAccessReview; `None`
    /// standalone.
    pub client: Option<kube::Client>,
    pub node_ip: Option<std::net::IpAddr>,
}

/// The names the self-signed certificate is valid for: the node name, its address and loopback.
fn self_signed_hosts(context: &NodeContext) -> Vec<String> {
    let mut hosts = vec![
        context.node_name.clone(),
        "localhost".into(),
        "127.0.0.1".into(),
    ];
    if let Some(ip) = context.node_ip {
        hosts.push(ip.to_string());
    }
    hosts.dedup();
    hosts
}

/// The server settings for `config`, or `None` (with the reason) when it must not run.
pub async fn settings_for(
    config: &KubeletConfig,
    context: &NodeContext,
) -> Result<Result<ServerSettings, &'static str>, KubeletApiError> {
    let auth = &config.authentication;
    let client = context.client.clone();
    if client.is_none() && auth.client_ca_file.is_none() && !auth.anonymous_enabled {
        return Ok(Err(
            "standalone (no --kubeconfig) without authentication.x509.clientCAFile or anonymous access: no caller could authenticate",
        ));
    }
    let serving = match (&config.tls_cert_file, &config.tls_private_key_file) {
        (Some(cert), Some(key)) => ServingCert::Files {
            cert: cert.clone(),
            key: key.clone(),
        },
        (None, None) => ServingCert::SelfSigned {
            dir: context.root_dir.join(PKI_DIR),
            hosts: self_signed_hosts(context),
        },
        _ => return Err(tls::TlsError::HalfPair.into()),
    };
    let token_client = client.clone().filter(|_| auth.webhook_enabled);
    let authorizer = match (&client, config.authorization.mode) {
        (Some(client), AuthorizationMode::Webhook) => Authorizer::Webhook(WebhookAuthorizer::new(
            client.clone(),
            config.authorization.cache_authorized_ttl,
            config.authorization.cache_unauthorized_ttl,
        )),
        (None, AuthorizationMode::Webhook) => {
            tracing::warn!(
                "kubelet API: authorization mode Webhook needs an apiserver; standalone, every authenticated caller is allowed"
            );
            Authorizer::AlwaysAllow
        }
        (_, AuthorizationMode::AlwaysAllow) => Authorizer::AlwaysAllow,
    };
    Ok(Ok(ServerSettings {
        bind: SocketAddr::new(config.address, config.port),
        serving,
        client_ca: auth.client_ca_file.clone(),
        node_name: context.node_name.clone(),
        root_dir: context.root_dir.clone(),
        pod_logs_dir: config.pod_logs_dir.clone(),
        authenticator: Authenticator::new(
            token_client,
            auth.webhook_cache_ttl,
            auth.anonymous_enabled,
        ),
        authorizer,
        configz: configz::configz(config),
        cgroups: Some(crate::node::cgroup_config(config)),
        runtime_socket: Some(
            config
                .container_runtime_endpoint
                .socket_path()
                .to_path_buf(),
        ),
    }))
}

/// kwk-node's entry point: serves the kubelet API until `cancel` when the configuration allows
/// it (see the module documentation). Failing to start is logged, not fatal: pods keep running.
pub async fn run(
    config: KubeletConfig,
    context: NodeContext,
    store: StatusStore,
    cri: CriClient,
    cancel: CancellationToken,
) {
    if config.read_only_port != 0 {
        tracing::warn!(
            read_only_port = config.read_only_port,
            "readOnlyPort is set but kwk never serves the unauthenticated read-only port"
        );
    }
    let settings = match settings_for(&config, &context).await {
        Ok(Ok(settings)) => settings,
        Ok(Err(reason)) => {
            tracing::info!(reason, "kubelet API not served");
            return;
        }
        Err(err) => {
            tracing::error!(error = %err, "kubelet API not served");
            return;
        }
    };
    match bind(settings, store, Some(cri)).await {
        Ok(server) => {
            tracing::info!(addr = %server.addr, "kubelet API serving");
            server.run(cancel).await;
        }
        Err(err) => tracing::error!(error = %err, "kubelet API not served"),
    }
}
