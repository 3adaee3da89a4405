//! An in-process apiserver for node tests: the real `kwk-control-plane` apiserver on the
//! embedded store in a temp dir, on a free loopback port, with generated PKI and an admin
//! kubeconfig — what a node joins in the end-to-end tests of the agent.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use kwk_control_plane::apiserver::allocator::ServiceRanges;
use kwk_control_plane::apiserver::{self, ApiServerOptions, RunningApiServer};
use kwk_control_plane::storage::embedded::{EmbeddedOptions, EmbeddedStore};

/// A running apiserver; stopped when dropped (the runtime it was started on must still run).
pub struct TestApiServer {
    dir: tempfile::TempDir,
    server: Option<RunningApiServer>,
    pub addr: SocketAddr,
}

impl std::fmt::Debug for TestApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestApiServer")
            .field("addr", &self.addr)
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl TestApiServer {
    /// Starts an apiserver on `127.0.0.1:<free port>` with an embedded store.
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("tempdir")?;
        let store = Arc::new(
            EmbeddedStore::open(&dir.path().join("db"), EmbeddedOptions::default())
                .await
                .context("open the embedded store")?,
        );
        let server = apiserver::start(ApiServerOptions {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            pki_dir: dir.path().join("pki"),
            generate_pki: true,
            serving_hosts: Vec::new(),
            token_file: None,
            store,
            service_ranges: ServiceRanges::default(),
            advertise_address: None,
            kubelet: Default::default(),
        })
        .await
        .context("start the apiserver")?;
        let addr = server.addr;
        Ok(Self {
            dir,
            server: Some(server),
            addr,
        })
    }

    /// The admin kubeconfig (cluster-admin client certificate, the server's CA).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("pki/admin.kubeconfig")
    }

    /// The directory with the cluster CA and the certificates the apiserver generated.
    pub fn pki_dir(&self) -> PathBuf {
        self.dir.path().join("pki")
    }

    /// A kube-rs client with the admin credentials.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        let kubeconfig = kube::config::Kubeconfig::read_from(self.kubeconfig())?;
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}
