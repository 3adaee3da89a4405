//! [`TestNode`]: a `kwk-node` process of a test's own, pointed at a [`TestContainerd`]: its own
//! config file, static pod directory, state directory, pod log directory and local API socket,
//! and the test containerd's cgroup root, so the containerd teardown also removes its pods'
//! cgroups. The process is killed on drop; pods are torn down by the containerd teardown.

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::containerd::{TestContainerd, wait_for};

/// A running (or stopped) kwk-node under test.
#[derive(Debug)]
pub struct TestNode {
    binary: PathBuf,
    dir: PathBuf,
    child: Option<Child>,
    /// Further command-line arguments (e.g. `--kubeconfig`).
    args: Vec<std::ffi::OsString>,
    /// The node name kwk-node was given (static pods are named `<name>-<node>`).
    pub node_name: String,
}

impl TestNode {
    /// Writes the config for `containerd` and starts `binary` (the `kwk-node` executable).
    pub async fn start(containerd: &TestContainerd, binary: &Path) -> anyhow::Result<Self> {
        Self::start_with(containerd, binary, "").await
    }

    /// As [`TestNode::start`], with `extra` (KubeletConfiguration YAML lines) appended to the
    /// config file.
    pub async fn start_with(
        containerd: &TestContainerd,
        binary: &Path,
        extra: &str,
    ) -> anyhow::Result<Self> {
        Self::start_with_args(containerd, binary, extra, &[]).await
    }

    /// A node joined to the cluster behind `kubeconfig` (`--kubeconfig`).
    pub async fn start_joined(
        containerd: &TestContainerd,
        binary: &Path,
        kubeconfig: &Path,
    ) -> anyhow::Result<Self> {
        // In the host's network namespace: no Service proxy (it would program the host).
        let args = [
            std::ffi::OsStr::new("--kubeconfig"),
            kubeconfig.as_os_str(),
            std::ffi::OsStr::new("--no-proxy"),
        ];
        Self::start_with_args(containerd, binary, "", &args).await
    }

    /// As [`TestNode::start_with`], with further command-line arguments.
    pub async fn start_with_args(
        containerd: &TestContainerd,
        binary: &Path,
        extra: &str,
        args: &[&std::ffi::OsStr],
    ) -> anyhow::Result<Self> {
        let dir = containerd.layout().dir.join("node");
        for sub in ["manifests", "root", "pod-logs", "images"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        let config = format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
staticPodPath: {manifests}
fileCheckFrequency: 5s
syncFrequency: 10s
containerRuntimeEndpoint: unix://{socket}
cgroupRoot: {cgroup_root}
podLogsDir: {logs}
resolvConf: \"\"
clusterDomain: cluster.local
# Build machines run with little free disk: evict only when it is really full.
evictionHard:
  memory.available: 50Mi
  nodefs.available: 1%
",
            manifests = dir.join("manifests").display(),
            socket = containerd.socket().display(),
            cgroup_root = containerd.cgroup_root(),
            logs = dir.join("pod-logs").display(),
        );
        std::fs::write(dir.join("kubelet.yaml"), format!("{config}{extra}"))
            .context("writing the kubelet config")?;
        let mut node = Self {
            binary: binary.to_path_buf(),
            dir,
            child: None,
            args: args.iter().map(|a| a.to_os_string()).collect(),
            node_name: "kwkt-node".into(),
        };
        node.spawn()?;
        node.wait_ready().await?;
        Ok(node)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("kwk-node.log"))
            .context("opening the kwk-node log")?;
        let child = Command::new(&self.binary)
            .arg("--config")
            .arg(self.dir.join("kubelet.yaml"))
            .arg("--root-dir")
            .arg(self.root_dir())
            .arg("--hostname-override")
            .arg(&self.node_name)
            .arg("--local-api-socket")
            .arg(self.socket())
            .arg("--image-dir")
            .arg(self.dir.join("images"))
            .args(&self.args)
            .env("RUST_LOG", "info,kwk_agent=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.child = Some(child);
        Ok(())
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let socket = self.socket();
        let ready = wait_for(Duration::from_secs(20), "kwk-node's local API", || {
            let socket = socket.clone();
            async move { get(&socket, "/healthz").is_ok() }
        })
        .await;
        if let Some(status) = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            bail!("kwk-node exited with {status}:\n{}", self.log_tail());
        }
        ready.with_context(|| self.log_tail())
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("node.sock")
    }

    pub fn manifests(&self) -> PathBuf {
        self.dir.join("manifests")
    }

    /// kwk-node's `--root-dir` (its state).
    pub fn root_dir(&self) -> PathBuf {
        self.dir.join("root")
    }

    pub fn pod_logs(&self) -> PathBuf {
        self.dir.join("pod-logs")
    }

    pub fn config_file(&self) -> PathBuf {
        self.dir.join("kubelet.yaml")
    }

    /// Writes a manifest atomically (temp file + rename), as config management tools do.
    pub fn write_manifest(&self, file: &str, yaml: &str) -> anyhow::Result<()> {
        let tmp = self.manifests().join(format!(".{file}.tmp"));
        std::fs::write(&tmp, yaml)?;
        std::fs::rename(&tmp, self.manifests().join(file))?;
        Ok(())
    }

    pub fn remove_manifest(&self, file: &str) -> anyhow::Result<()> {
        std::fs::remove_file(self.manifests().join(file))?;
        Ok(())
    }

    /// The pods kwk-node reports on its local API.
    pub fn pods(&self) -> anyhow::Result<Vec<Value>> {
        let body = get(&self.socket(), "/pods")?;
        let list: Value = serde_json::from_str(&body).context("parsing /pods")?;
        Ok(list["items"].as_array().cloned().unwrap_or_default())
    }

    /// The pod named `name` (as reported, e.g. `web-kwkt-node`).
    pub fn pod(&self, name: &str) -> anyhow::Result<Option<Value>> {
        Ok(self
            .pods()?
            .into_iter()
            .find(|p| p["metadata"]["name"] == name))
    }

    /// Waits until the named pod satisfies `check`; returns it.
    pub async fn wait_pod(
        &self,
        name: &str,
        within: Duration,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let mut found = None;
        let result = wait_for(within, what, || {
            let pod = self.pod(name).ok().flatten();
            let ok = pod.as_ref().is_some_and(&check);
            if ok {
                found = pod;
            }
            async move { ok }
        })
        .await;
        match (result, found) {
            (Ok(()), Some(pod)) => Ok(pod),
            (r, _) => {
                let last = self.pod(name).ok().flatten();
                r.and_then(|()| bail!("pod vanished")).with_context(|| {
                    format!(
                        "pod {name}: last seen {}\n{}",
                        last.map(|p| p["status"].to_string())
                            .unwrap_or_else(|| "never".into()),
                        self.log_tail()
                    )
                })
            }
        }
    }

    /// The kwk-node process ID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `kill -9` of the kwk-node process (pods keep running).
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// SIGTERM and wait for exit; returns whether it exited successfully.
    pub fn terminate(&mut self) -> anyhow::Result<bool> {
        let Some(mut child) = self.child.take() else {
            return Ok(true);
        };
        let pid = Pid::from_raw(i32::try_from(child.id())?);
        kill(pid, Signal::SIGTERM)?;
        Ok(child.wait()?.success())
    }

    /// Starts kwk-node again with the same configuration.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9()?;
        self.spawn()?;
        self.wait_ready().await
    }

    /// kwk-node's whole log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    pub fn log_file(&self) -> PathBuf {
        self.dir.join("kwk-node.log")
    }

    /// The last lines of kwk-node's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("kwk-node.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!("--- kwk-node log (tail) ---\n{tail}")
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let _ = self.kill9();
    }
}

/// `GET path` over the unix socket; returns the body of a 200 response.
pub fn get(socket: &Path, path: &str) -> anyhow::Result<String> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: kwk-node\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {head}");
    }
    Ok(body.to_string())
}
