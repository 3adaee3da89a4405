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
