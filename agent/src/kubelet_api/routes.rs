//! The kubelet API's routes and the authentication/authorization layer in front of them.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use k8s_openapi::List;
use k8s_openapi::api::core::v1::Pod;
use tokio::sync::mpsc;

use super::Shared;
use super::authn::User;
use super::authz::{attributes_for, forbidden_message};
use super::container_logs::{container_running, find_pod, resolve_log_file, stream_log};
use super::cri_log::parse_log_options;
use super::{fs_net, metrics, resource_metrics, stats};

/// The DER client certificate the TLS layer verified, if any (a request extension).
#[derive(Clone, Debug)]
pub(super) struct ClientCert(pub(super) Option<Arc<Vec<u8>>>);

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/pods", get(pods))
        .route("/pods/", get(pods))
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .route("/stats/summary", get(stats_summary))
        .route("/metrics", get(metrics_text))
        .route("/metrics/resource", get(resource_metrics))
        .route("/configz", get(configz))
        .layer(middleware::from_fn_with_state(shared.clone(), authenticate))
        .with_state(shared)
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

/// Authenticates and authorizes a request: the caller, or the answer to send instead (401,
/// 403, or 500 when the apiserver could not be asked).
async fn check_access(
    shared: &Shared,
    cert: Option<&[u8]>,
    authorization: Option<&str>,
    method: &http::Method,
    path: &str,
) -> Result<User, Response> {
    let user = match shared.authenticator.authenticate(cert, authorization).await {
        Ok(Some(user)) => user,
        Ok(None) => return Err(text(StatusCode::UNAUTHORIZED, "Unauthorized")),
        Err(err) => {
            tracing::warn!(%err, "kubelet API: unable to authenticate the request");
            return Err(text(StatusCode::UNAUTHORIZED, "Unauthorized"));
        }
    };
    let attributes = attributes_for(method, path);
    match shared
        .authorizer
        .allowed(&user, &shared.node_name, &attributes)
        .await
    {
        Ok(true) => Ok(user),
        Ok(false) => Err(text(
            StatusCode::FORBIDDEN,
            forbidden_message(&user, &attributes),
        )),
        Err(err) => {
            tracing::warn!(%err, user = %user.name, "kubelet API: authorization failed");
            Err(text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "Authorization error (user={}, verb={}, resource=nodes, subresource(s)=[{}])",
                    user.name,
                    attributes.verb,
                    attributes.subresources.join(" ")
                ),
            ))
        }
    }
}

fn credentials<B>(request: &http::Request<B>) -> (Option<Arc<Vec<u8>>>, Option<&str>) {
    let cert = request
        .extensions()
        .get::<ClientCert>()
        .and_then(|c| c.0.clone());
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    (cert, authorization)
}

/// Authenticates and authorizes every request before its handler runs.
async fn authenticate(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let (cert, authorization) = credentials(&request);
    match check_access(
        &shared,
        cert.as_deref().map(Vec::as_slice),
        authorization,
        request.method(),
        request.uri().path(),
    )
    .await
    {
        Ok(_) => next.run(request).await,
        Err(answer) => answer,
    }
}

/// The streaming endpoints: upgraded connections (SPDY/WebSocket) served on the raw hyper
/// request rather than through the router.
const STREAMING_PREFIXES: &[&str] = &["/exec/", "/attach/", "/portForward/", "/run/"];

/// Whether `path` is one of the streaming endpoints.
pub(super) fn is_streaming(path: &str) -> bool {
    STREAMING_PREFIXES.iter().any(|p| path.starts_with(p))
}

/// `/exec`, `/attach`, `/portForward`, `/run`: authenticated and authorized here like every
/// other path (`nodes/proxy`), then handed to the streaming server.
///
/// [`super::streaming_routes`] resolves the pod and hands the request (upgrades intact) to
/// [`crate::streaming`].
pub(super) async fn streaming(
    shared: Arc<Shared>,
    request: http::Request<hyper::body::Incoming>,
) -> Response {
    let (cert, authorization) = credentials(&request);
    if let Err(answer) = check_access(
        &shared,
        cert.as_deref().map(Vec::as_slice),
        authorization,
        request.method(),
        request.uri().path(),
    )
    .await
    {
        return answer;
    }
    if request.uri().path().starts_with("/run/") {
        return text(
            StatusCode::NOT_IMPLEMENTED,
            "/run is not served: use /exec\n",
        );
    }
    let Some(cri) = &shared.cri else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "no container runtime\n");
    };
    super::streaming_routes::serve(request, &shared.store, cri)
        .await
        .map(Body::new)
}

fn json(value: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Err(err) => text(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
    }
}

async fn pods(State(shared): State<Arc<Shared>>) -> Response {
    let list = List::<Pod> {
        items: shared.store.snapshot(),
        metadata: Default::default(),
    };
    // `List` serializes without kind/apiVersion; upstream's /pods carries them.
    let mut value = match serde_json::to_value(&list) {
        Ok(v) => v,
        Err(err) => return text(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
    };
    value["kind"] = "PodList".into();
    value["apiVersion"] = "v1".into();
    json(&value)
}

async fn container_logs(
    State(shared): State<Arc<Shared>>,
    Path((namespace, pod_name, container)): Path<(String, String, String)>,
    request: Request,
) -> Response {
    let options = match parse_log_options(request.uri().query().unwrap_or_default(), stats::now()) {
        Ok(o) => o,
        Err(message) => {
            return text(
                StatusCode::BAD_REQUEST,
                serde_json::json!({ "message": message }).to_string(),
            );
        }
    };
    let Some(pod) = find_pod(&shared.store, &namespace, &pod_name) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("pod {pod_name:?} does not exist\n"),
        );
    };
    let path = match resolve_log_file(&pod, &shared.pod_logs_dir, &container, options.previous) {
        Ok(path) => path,
        Err(err) => {
            let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::BAD_REQUEST);
            return text(status, format!("{err}\n"));
        }
    };
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let store = shared.store.clone();
    let running = move || {
        find_pod(&store, &namespace, &pod_name).is_some_and(|p| container_running(&p, &container))
    };
    let running = if options.previous {
        // A previous instance has ended: nothing more will be written.
        Box::new(|| false) as Box<dyn Fn() -> bool + Send>
    } else {
        Box::new(running)
    };
    tokio::spawn(stream_log(path, options, running, tx));
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, std::convert::Infallible>(chunk), rx))
    });
    (
        [(header::CONTENT_TYPE, "text/plain")],
        Body::from_stream(body),
    )
        .into_response()
}

async fn stats_summary(State(shared): State<Arc<Shared>>) -> Response {
    let mut node = shared.stats.node().await;
    let containers = shared.stats.containers().await;
    let storage = shared
        .stats
        .storage(&shared.root_dir, &shared.pod_logs_dir)
        .await;
    let pods = shared.store.snapshot();
    // After the runtime's figures, so that a pod's cgroup is never behind its containers.
    let (extras, system_containers) = shared.stats.pod_extras(&pods).await;
    node.system_containers = system_containers;
    let mut summary = stats::summary(&shared.node_name, &node, &pods, &containers, &extras);
    // The latest instance's writable layer per container (samples sorted by attempt).
    let mut ordered: Vec<&stats::ContainerSample> = containers.iter().collect();
    ordered.sort_by_key(|c| c.attempt);
    let rootfs = ordered
        .into_iter()
        .filter_map(|c| Some(((c.pod_uid.clone(), c.name.clone()), c.rootfs?)))
        .collect();
    fs_net::add_storage_and_network(&mut summary, &storage, &rootfs);
    let (root_dir, pods) = (shared.root_dir.clone(), shared.store.snapshot());
    let volumes =
        tokio::task::spawn_blocking(move || super::volume_stats::measure(&root_dir, &pods)).await;
    super::volume_stats::add_volumes(&mut summary, &storage.time, &volumes.unwrap_or_default());
    json(&summary)
}

const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

async fn metrics_text(State(shared): State<Arc<Shared>>) -> Response {
    let pods = shared.store.snapshot();
    let mut body = metrics::render(&shared.node_name, &pods);
    body.push_str(&shared.pod_start.observe_and_render(&pods));
    ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], body).into_response()
}

async fn resource_metrics(State(shared): State<Arc<Shared>>) -> Response {
    let node = shared.stats.node().await;
    let containers = shared.stats.containers().await;
    let pods = shared.store.snapshot();
    let (extras, _) = shared.stats.pod_extras(&pods).await;
    let body = resource_metrics::render(&node, &pods, &containers, &extras);
    ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], body).into_response()
}

async fn configz(State(shared): State<Arc<Shared>>) -> Response {
    json(&shared.configz)
}
