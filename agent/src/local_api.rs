//! The node's local read-only endpoint on a unix socket (default `/run/kwk/node.sock`): the pods
//! kwk-node runs with their status, until the apiserver exists to publish them. Read by tests and
//! by `kwk-node pods`. Only root can connect (the socket is created 0600).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use k8s_openapi::List;
use k8s_openapi::api::core::v1::Pod;
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

use crate::pod::store::StatusStore;

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum LocalApiError {
    #[error("cannot prepare the socket {path}: {source}")]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Binds the socket (replacing a stale one) and serves until `cancel`.
pub async fn serve(
    path: &Path,
    store: StatusStore,
    cancel: CancellationToken,
) -> Result<(), LocalApiError> {
    let socket_err = |source| LocalApiError::Socket {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(socket_err)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(socket_err(e)),
        _ => {}
    }
    let listener = UnixListener::bind(path).map_err(socket_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(socket_err)?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/pods", get(pods))
        .with_state(store);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
        .map_err(socket_err)
}

async fn pods(State(store): State<StatusStore>) -> axum::Json<List<Pod>> {
    axum::Json(List {
        items: store.snapshot(),
        metadata: Default::default(),
    })
}

/// `kwk-node pods`: fetches `/pods` from the socket and prints a table (or the JSON).
pub fn print_pods(socket: &Path, json: bool) -> Result<(), ClientError> {
    let body = http_get(socket, "/pods")?;
    if json {
        println!("{body}");
        return Ok(());
    }
    let list: List<Pod> = serde_json::from_str(&body).map_err(ClientError::Decode)?;
    println!(
        "{:<40} {:<6} {:<18} {:<9} IP",
        "NAME", "READY", "STATUS", "RESTARTS"
    );
    for pod in list.items {
        let status = pod.status.unwrap_or_default();
        let containers = status.container_statuses.unwrap_or_default();
        let ready = containers.iter().filter(|c| c.ready).count();
        let restarts: i32 = containers.iter().map(|c| c.restart_count).sum();
        let waiting = containers
            .iter()
            .filter_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
            .next();
        println!(
            "{:<40} {:<6} {:<18} {:<9} {}",
            pod.metadata.name.unwrap_or_default(),
            format!("{ready}/{}", containers.len()),
            waiting.or(status.phase).unwrap_or_default(),
            restarts,
            status.pod_ip.unwrap_or_default()
        );
    }
    Ok(())
}

/// Why the local API could not be queried.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach kwk-node at {path} (is it running?): {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unexpected answer from kwk-node: {0}")]
    Response(String),
    #[error("cannot decode the pod list: {0}")]
    Decode(#[source] serde_json::Error),
}

/// A minimal HTTP/1.1 GET over the unix socket (blocking; for the CLI).
fn http_get(socket: &Path, path: &str) -> Result<String, ClientError> {
    use std::io::{Read as _, Write as _};
    let connect = |source| ClientError::Connect {
        path: socket.to_path_buf(),
        source,
    };
    let mut stream = std::os::unix::net::UnixStream::connect(socket).map_err(connect)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: kwk-node\r\nConnection: close\r\n\r\n"
    )
    .map_err(connect)?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(connect)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| ClientError::Response("no HTTP header".into()))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(ClientError::Response(
            head.lines().next().unwrap_or_default().to_string(),
        ));
    }
    Ok(body.to_string())
}
