//! The apiserver client kwk-node shares between its API tasks (node status, API pods, the
//! kubelet API's reviews): one connection pool, from `--kubeconfig`.

use std::path::{Path, PathBuf};

/// Why no apiserver client could be built.
#[derive(Debug, thiserror::Error)]
#[error("kubeconfig {}", path.display())]
pub struct KubeconfigError {
    path: PathBuf,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

/// A client for the apiserver from a kubeconfig file (its current context). Reading the file is
/// all this does: an unreachable apiserver is not an error here.
pub async fn client_from_kubeconfig(path: &Path) -> Result<kube::Client, KubeconfigError> {
    let error = |source: Box<dyn std::error::Error + Send + Sync>| KubeconfigError {
        path: path.to_path_buf(),
        source,
    };
    let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|e| error(Box::new(e)))?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .map_err(|e| error(Box::new(e)))?;
    kube::Client::try_from(config).map_err(|e| error(Box::new(e)))
}
