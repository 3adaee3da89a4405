//! [`TestEtcd`]: a real etcd (Debian `etcd-server`, `/usr/bin/etcd`) of a test's own, on free
//! loopback ports with a temporary data directory; killed (SIGKILL, by PID) and removed on
//! drop, also when the test panics. Optionally TLS with client certificates, made with the
//! `openssl` CLI ([`TestPki`]).

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use kwk_control_plane::storage::Store;
use kwk_control_plane::storage::etcd::{EtcdStore, EtcdTls};

/// The etcd binary.
pub const ETCD: &str = "/usr/bin/etcd";

/// A running etcd.
#[derive(Debug)]
pub struct TestEtcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    pki: Option<TestPki>,
}

impl TestEtcd {
    /// Starts a fresh single-member etcd over plain HTTP and waits until it answers.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(None).await
    }

    /// Starts etcd serving TLS and requiring client certificates from `pki`'s CA.
    pub async fn start_tls(pki: TestPki) -> anyhow::Result<Self> {
        Self::start_with(Some(pki)).await
    }

    async fn start_with(pki: Option<TestPki>) -> anyhow::Result<Self> {
        let mut last = None;
        // A free port found by binding may be taken again before etcd binds it: retry.
        for _ in 0..3 {
            let mut etcd = TestEtcd {
                child: None,
                dir: tempfile::Builder::new().prefix("kwk-etcd-").tempdir()?,
                client_port: free_port()?,
                peer_port: free_port()?,
                pki: pki.clone(),
            };
            match etcd.run().await {
                Ok(()) => return Ok(etcd),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("etcd did not start")))
    }

    /// The client URL.
    pub fn endpoint(&self) -> String {
        let scheme = if self.pki.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// TLS options a client needs (with the client certificate), if serving TLS.
    pub fn client_tls(&self) -> Option<EtcdTls> {
        self.pki.as_ref().map(TestPki::client_tls)
    }

    /// A store on this etcd under `key_prefix`.
    pub async fn store(&self, key_prefix: &str) -> anyhow::Result<Arc<dyn Store>> {
        let store = EtcdStore::connect(&[self.endpoint()], self.client_tls(), key_prefix).await?;
        Ok(Arc::new(store))
    }

    /// `kill -9` etcd and wait for it to be gone.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same data directory and ports.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9();
        self.run().await
    }

    /// The tail of etcd's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    async fn run(&mut self) -> anyhow::Result<()> {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))?;
        let mut command = Command::new(ETCD);
        command
            .arg("--name=kwk-test")
            .arg(format!("--data-dir={}", self.data_dir().display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=kwk-test={peer}"))
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(pki) = &self.pki {
            command
                .arg(format!(
                    "--cert-file={}",
                    pki.dir.join("server.crt").display()
                ))
                .arg(format!(
                    "--key-file={}",
                    pki.dir.join("server.key").display()
                ))
                .arg(format!(
                    "--trusted-ca-file={}",
                    pki.dir.join("ca.crt").display()
                ))
                .arg("--client-cert-auth");
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {ETCD} (is etcd-server installed?)"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                bail!("etcd exited with {status}:\n{}", self.log_tail());
            }
            let probe = tokio::time::timeout(
                Duration::from_secs(2),
                EtcdStore::connect(std::slice::from_ref(&client), self.client_tls(), ""),
            )
            .await;
            if let Ok(Ok(_)) = probe {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill9();
                bail!("etcd did not answer within 20 s:\n{}", self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for TestEtcd {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A loopback TCP port nobody listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A throwaway CA, an etcd serving certificate for 127.0.0.1 and a client certificate.
#[derive(Debug, Clone)]
pub struct TestPki {
    dir: PathBuf,
    _keep: Arc<tempfile::TempDir>,
}

impl TestPki {
    /// Generates the certificates with `openssl`.
    pub fn generate() -> anyhow::Result<Self> {
        let keep = tempfile::Builder::new().prefix("kwk-pki-").tempdir()?;
        let dir = keep.path().to_owned();
        let ext = dir.join("san.ext");
        std::fs::write(&ext, "subjectAltName=IP:127.0.0.1,DNS:localhost\n")?;
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=kwk-test-ca",
            ],
        )?;
        for (name, cn) in [("server", "etcd"), ("client", "kube-apiserver")] {
            openssl(
                &dir,
                &[
                    "req",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-nodes",
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                    "-subj",
                    &format!("/CN={cn}"),
                ],
            )?;
            openssl(
                &dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{name}.csr"),
                    "-CA",
                    "ca.crt",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    &format!("{name}.crt"),
                    "-days",
                    "2",
                    "-extfile",
                    "san.ext",
                ],
            )?;
        }
        Ok(TestPki {
            dir,
            _keep: Arc::new(keep),
        })
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(name)).unwrap_or_default()
    }

    /// Client TLS options: CA + client certificate.
    pub fn client_tls(&self) -> EtcdTls {
        EtcdTls {
            ca_pem: self.read("ca.crt"),
            client_cert_pem: Some(self.read("client.crt")),
            client_key_pem: Some(self.read("client.key")),
            server_name: None,
        }
    }

    /// The CA only (no client certificate).
    pub fn ca_only(&self) -> EtcdTls {
        EtcdTls {
            ca_pem: self.read("ca.crt"),
            ..EtcdTls::default()
        }
    }
}

fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .context("running openssl")?;
    if !out.status.success() {
        bail!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
