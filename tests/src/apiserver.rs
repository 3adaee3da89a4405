//! An in-process apiserver for node tests: the real `kwk-control-plane` apiserver on the
//! embedded store in a temp dir, on a free loopback port, with generated PKI and an admin
//! kubeconfig — what a node joins in the end-to-end tests of the agent.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use kwk_control_plane::apiserver::admission::{
    AdmissionPlugins, SERVICE_ACCOUNT, TAINT_NODES_BY_CONDITION,
};
use kwk_control_plane::apiserver::allocator::ServiceRanges;
use kwk_control_plane::apiserver::{self, ApiServerOptions, RunningApiServer};
use kwk_control_plane::storage::embedded::{EmbeddedOptions, EmbeddedStore};

/// A running apiserver; stopped when dropped (the runtime it was started on must still run).
pub struct TestApiServer {
    dir: tempfile::TempDir,
    server: Option<RunningApiServer>,
    store: Option<Arc<EmbeddedStore>>,
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
        let (server, store) = serve(dir.path(), SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = server.addr;
        Ok(Self {
            dir,
            server: Some(server),
            store: Some(store),
            addr,
        })
    }

    /// Stops the server and closes its store, keeping the data dir, PKI and port for
    /// [`Self::resume`]: clients see the apiserver down.
    pub async fn pause(&mut self) -> anyhow::Result<()> {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
        let Some(mut store) = self.store.take() else {
            return Ok(());
        };
        // Requests still being answered may hold the store for a moment.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match Arc::try_unwrap(store) {
                Ok(only) => {
                    only.close().await.context("close the embedded store")?;
                    return Ok(());
                }
                Err(shared) if tokio::time::Instant::now() < deadline => {
                    store = shared;
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(_) => anyhow::bail!("the embedded store is still in use after shutdown"),
            }
        }
    }

    /// Starts a new apiserver on the same data dir, PKI and address (after [`Self::pause`]).
    pub async fn resume(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.server.is_none(), "the apiserver is running");
        let (server, store) = serve(self.dir.path(), self.addr).await?;
        self.server = Some(server);
        self.store = Some(store);
        Ok(())
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

/// Opens the store under `dir` and starts an apiserver on it at `bind`.
async fn serve(
    dir: &std::path::Path,
    bind: SocketAddr,
) -> anyhow::Result<(RunningApiServer, Arc<EmbeddedStore>)> {
    let store = Arc::new(
        EmbeddedStore::open(&dir.join("db"), EmbeddedOptions::default())
            .await
            .context("open the embedded store")?,
    );
    let server = apiserver::start(ApiServerOptions {
        bind,
        pki_dir: dir.join("pki"),
        generate_pki: true,
        serving_hosts: Vec::new(),
        token_file: None,
        store: store.clone(),
        service_ranges: ServiceRanges::default(),
        advertise_address: None,
        kubelet: Default::default(),
        // As upstream's node e2e apiserver: no serviceaccount or root-ca-cert-publisher
        // controller runs, nor node-lifecycle to lift the not-ready taint.
        admission: AdmissionPlugins::disabling(&[SERVICE_ACCOUNT, TAINT_NODES_BY_CONDITION])
            .context("admission plugins")?,
    })
    .await
    .context("start the apiserver")?;
    Ok((server, store))
}
