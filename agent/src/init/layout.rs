//! Where `kwk init` puts things: one config directory (PKI, kubeconfigs, manifests, the
//! kubelet configuration, kwk-node's flags) and one data directory (the embedded store).
//! The control plane's containers mount these host paths at the same paths.

use std::path::{Path, PathBuf};

/// The paths of an initialised server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    config_dir: PathBuf,
    data_dir: PathBuf,
}

impl Layout {
    pub fn new(config_dir: impl Into<PathBuf>, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            config_dir: config_dir.into(),
            data_dir: data_dir.into(),
        }
    }
    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
    /// The cluster PKI (the apiserver's `--pki-dir`).
    pub fn pki_dir(&self) -> PathBuf {
        self.config_dir.join("pki")
    }
    /// The static pod manifests (`staticPodPath`).
    pub fn manifests_dir(&self) -> PathBuf {
        self.config_dir.join("manifests")
    }
    /// The apiserver's embedded store (`--data-dir`).
    pub fn store_dir(&self) -> PathBuf {
        self.data_dir.join("db")
    }
    /// kwk-node's `KubeletConfiguration`.
    pub fn kubelet_config(&self) -> PathBuf {
        self.config_dir.join("kubelet.yaml")
    }
    /// kwk-node's proxy configuration (`KubeProxyConfiguration`).
    pub fn proxy_config(&self) -> PathBuf {
        self.config_dir.join("kube-proxy.yaml")
    }
    /// kwk-node's flags for the systemd unit (`KWK_NODE_ARGS=…`).
    pub fn node_env(&self) -> PathBuf {
        self.config_dir.join("kwk-node.env")
    }
    /// A component's kubeconfig: `admin`, `kubelet`, `controller-manager`, `scheduler`.
    pub fn kubeconfig(&self, component: &str) -> PathBuf {
        self.config_dir.join(format!("{component}.kubeconfig"))
    }
    /// A certificate and key in the PKI directory: `<name>.crt`, `<name>.key`.
    pub fn pair(&self, name: &str) -> (PathBuf, PathBuf) {
        let dir = self.pki_dir();
        (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        )
    }
}
