//! [`TestCluster`]: a single-node cluster brought up the way a server is: `kwk init` writes the
//! PKI, kubeconfigs, control plane static pod manifests and kwk-node's configuration, then
//! kwk-node (with the flags `kwk init` wrote into `kwk-node.env`) imports the control plane
//! image, runs the apiserver, controller manager and scheduler as static pods and joins the
//! cluster it started.
//!
//! Everything lives in a [`TestContainerd`]'s directory and network namespace: kwk-node runs in
//! the namespace (the host-network control plane pods share it), the node's address is on
//! the namespace's loopback, and [`TestCluster::kubectl`] runs kubectl there with the admin
//! kubeconfig. Pods are networked by our `kwk-cni` alone, configured by kwk-node from the
//! node's podCIDR ([`PodNetwork`]). Dropping the cluster kills kwk-node and tears containerd and
//! its pods down.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::config::{CniNetwork, CniPlugins};
use crate::containerd::{TestContainerd, wait_for};

/// The node's name in every test cluster.
pub const NODE_NAME: &str = "kwkt-node";
/// The node's address, on the loopback of the cluster's network namespace.
pub const NODE_IP: &str = "172.30.255.1";
/// The apiserver's port (`kwk init`'s default).
pub const APISERVER_PORT: u16 = 6443;

/// The executables a cluster is made of.
#[derive(Debug, Clone)]
pub struct ClusterBinaries {
    pub kwk_node: PathBuf,
    pub kwk: PathBuf,
    pub control_plane: PathBuf,
    /// The CNI plugin containerd runs for pods (as `kwk-cni` and as `loopback`).
    pub kwk_cni: PathBuf,
}

impl ClusterBinaries {
    /// `kwk-node` and `kwk` as given, `kwk-control-plane` and `kwk-cni` from the same build
    /// directory (`cargo build --workspace` builds them; `cargo test -p kwk-agent` does not).
    pub fn next_to(kwk_node: &Path, kwk: &Path) -> anyhow::Result<Self> {
        let dir = kwk_node
            .parent()
            .context("the kwk-node binary has no directory")?;
        let sibling = |name: &str, package: &str| {
            let path = dir.join(name);
            if path.exists() {
                Ok(path)
            } else {
                Err(anyhow::anyhow!(
                    "{} is missing (it must sit next to {}): run `cargo build -p {package}` \
                     with the same profile first",
                    path.display(),
                    kwk_node.display()
                ))
            }
        };
        Ok(Self {
            kwk_node: kwk_node.to_owned(),
            kwk: kwk.to_owned(),
            control_plane: sibling("kwk-control-plane", "kwk-control-plane")?,
            kwk_cni: sibling("kwk-cni", "kwk-cni")?,
        })
    }
}

/// How the cluster's pods get their network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PodNetwork {
    /// Our own, as on a server: containerd's CNI bin dir holds only `kwk-cni` (and `loopback`,
    /// a link to it), and kwk-node writes the network list from the podCIDR the controller
    /// manager allocates (`--cni-conf-dir`; allocations under the test's directory,
    /// `--cni-data-dir`). The node is NotReady (runtime network) until then.
    #[default]
    KwkCni,
    /// The reference `bridge` + `host-local` plugins (`/usr/lib/cni`) on a fixed subnet,
    /// installed before containerd starts (for comparisons).
    Reference,
}

/// Where `kwk init` writes (by default inside the test's directory, gone with it) and how pods
/// are networked.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// `kwk init --config-dir` (e.g. `/etc/kwk` for the dev cluster).
    pub config_dir: Option<PathBuf>,
    /// `kwk init --data-dir` (the embedded store lives in `db/`).
    pub data_dir: Option<PathBuf>,
    pub pod_network: PodNetwork,
}

/// A running single-node cluster.
#[derive(Debug)]
pub struct TestCluster {
    // Field order is drop order: kwk-node goes before containerd.
    node: Option<Child>,
    containerd: TestContainerd,
    binaries: ClusterBinaries,
    dir: PathBuf,
    config_dir: PathBuf,
    data_dir: PathBuf,
    node_ip: IpAddr,
    pod_network: PodNetwork,
}

impl TestCluster {
    /// Brings the cluster up in the test's directory and waits until the apiserver answers
    /// `/readyz`.
    pub async fn start(binaries: ClusterBinaries) -> anyhow::Result<Self> {
        Self::start_in(binaries, ClusterOptions::default()).await
    }

    /// As [`Self::start`], with `kwk init`'s directories and the pod network as `options` say.
    pub async fn start_in(
        binaries: ClusterBinaries,
        options: ClusterOptions,
    ) -> anyhow::Result<Self> {
        let plugin = binaries.kwk_cni.clone();
        let containerd = TestContainerd::start_with(true, |layout| {
            if options.pod_network == PodNetwork::KwkCni {
                layout.cni_plugins = CniPlugins::Kwk(plugin);
                layout.cni_network = CniNetwork::Absent;
            }
        })
        .await?;
        let dir = containerd.layout().dir.join("cluster");
        for sub in ["root", "pod-logs", "images"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        let netns = containerd.netns();
        // On loopback: this kernel has no dummy links, and nothing outside the namespace
        // needs to reach the node.
        netns.ip(&["addr", "add", &format!("{NODE_IP}/32"), "dev", "lo"])?;
        let image =
            crate::images::write_cluster_images(&binaries.control_plane, &dir.join("images"))?;

        let mut cluster = Self {
            node: None,
            containerd,
            binaries,
            config_dir: options.config_dir.unwrap_or_else(|| dir.join("etc")),
            data_dir: options.data_dir.unwrap_or_else(|| dir.join("var")),
            dir,
            node_ip: NODE_IP.parse().context("node IP")?,
            pod_network: options.pod_network,
        };
        cluster.init(&image)?;
        cluster.start_node()?;
        cluster.wait_apiserver(Duration::from_secs(120)).await?;
        cluster
            .wait_default_service_account(Duration::from_secs(120))
            .await?;
        Ok(cluster)
    }

    /// `kwk init` into the cluster's directory, plus a drop-in pointing kwk-node at the test
    /// containerd.
    fn init(&self, image: &str) -> anyhow::Result<()> {
        let output = Command::new(&self.binaries.kwk)
            .arg("init")
            .arg("--config-dir")
            .arg(self.config_dir())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--node-name", NODE_NAME, "--advertise-address", NODE_IP])
            .args([
                "--admin-server",
                &format!("https://127.0.0.1:{APISERVER_PORT}"),
            ])
            .args(["--image", image])
            .output()
            .with_context(|| format!("running {}", self.binaries.kwk.display()))?;
        if !output.status.success() {
            bail!(
                "kwk init failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let drop_ins = self.config_dir().join("kubelet.yaml.d");
        std::fs::create_dir_all(&drop_ins)?;
        std::fs::write(
            drop_ins.join("50-test.yaml"),
            format!(
                "apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
fileCheckFrequency: 5s
syncFrequency: 10s
containerRuntimeEndpoint: unix://{socket}
cgroupRoot: {cgroup_root}
podLogsDir: {logs}
resolvConf: \"\"
# Build machines run with little free disk: taint the node only when it is really full.
evictionHard:
  memory.available: 50Mi
  nodefs.available: 1%
",
                socket = self.containerd.socket().display(),
                cgroup_root = self.containerd.cgroup_root(),
                logs = self.dir.join("pod-logs").display(),
            ),
        )
        .context("writing the test drop-in")?;
        Ok(())
    }

    /// kwk-node's flags from `kwk-node.env` (as the systemd unit passes them), plus the test's
    /// own state directory, socket and image directory, and with kwk-cni where containerd reads
    /// its network list and where the plugin keeps its allocations.
    fn node_args(&self) -> anyhow::Result<Vec<String>> {
        let env_file = self.config_dir().join("kwk-node.env");
        let text = std::fs::read_to_string(&env_file)
            .with_context(|| format!("reading {}", env_file.display()))?;
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("KWK_NODE_ARGS="))
            .context("kwk-node.env has no KWK_NODE_ARGS")?;
        let mut args: Vec<String> = line
            .trim_matches('"')
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        for (flag, value) in [
            ("--root-dir", self.dir.join("root")),
            ("--local-api-socket", self.dir.join("node.sock")),
            ("--image-dir", self.dir.join("images")),
        ] {
            args.push(format!("{flag}={}", value.display()));
        }
        if self.pod_network == PodNetwork::KwkCni {
            let layout = self.containerd.layout();
            for (flag, value) in [
                ("--cni-conf-dir", layout.cni_conf_dir()),
                ("--cni-data-dir", layout.cni_data_dir()),
            ] {
                args.push(format!("{flag}={}", value.display()));
            }
        }
        Ok(args)
    }

    /// Starts kwk-node in the cluster's network namespace (again, after [`Self::kill_node`]).
    pub fn start_node(&mut self) -> anyhow::Result<()> {
        let args = self.node_args()?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file())
            .context("opening the kwk-node log")?;
        let binary = &self.binaries.kwk_node;
        let child = self.containerd.netns().run(|| {
            Command::new(binary)
                .args(&args)
                .env("RUST_LOG", "info,kwk_agent=debug,kwk_netdp=debug")
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
        })?;
        self.node = Some(child.with_context(|| format!("starting {}", binary.display()))?);
        Ok(())
    }

    /// SIGKILLs kwk-node (pods keep running) and reaps it.
    pub fn kill_node(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.node.take() {
            child.kill().ok();
            child.wait().context("reaping kwk-node")?;
        }
        Ok(())
    }

    /// Waits until `kubectl get --raw /readyz` answers `ok`.
    pub async fn wait_apiserver(&mut self, within: Duration) -> anyhow::Result<()> {
        let result = wait_for(within, "the apiserver static pod to answer /readyz", || {
            let ready = self
                .kubectl(&["get", "--raw", "/readyz"])
                .is_ok_and(|out| out.trim() == "ok");
            std::future::ready(ready)
        })
        .await;
        if let Some(status) = self.node.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            bail!("kwk-node exited with {status}:\n{}", self.log_tail());
        }
        result.with_context(|| self.log_tail())
    }

    /// Waits until the serviceaccount controller has created `default/default`: pods are
    /// admitted only with their account, as upstream's e2e framework waits for it before a
    /// test uses a namespace.
    pub async fn wait_default_service_account(&self, within: Duration) -> anyhow::Result<()> {
        wait_for(
            within,
            "the default ServiceAccount in namespace default",
            || {
                let found = self
                    .kubectl(&[
                        "get",
                        "serviceaccount",
                        "default",
                        "-n",
                        "default",
                        "-o",
                        "name",
                    ])
                    .is_ok_and(|s| s.trim() == "serviceaccount/default");
                std::future::ready(found)
            },
        )
        .await
        .with_context(|| self.log_tail())
    }

    /// Waits until the node reports Ready=True (the error carries kwk-node's log tail).
    pub async fn wait_node_ready(&self, within: Duration) -> anyhow::Result<()> {
        wait_for(within, "the node to be Ready", || {
            let ready = self
                .kubectl(&[
                    "get",
                    "node",
                    NODE_NAME,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                ])
                .is_ok_and(|s| s.trim() == "True");
            std::future::ready(ready)
        })
        .await
        .with_context(|| self.log_tail())
    }

    /// Kills kwk-node and starts it again, then waits until the new process serves the kubelet
    /// API through the apiserver (`nodes/<node>/proxy/healthz`). The Node's `Ready` condition
    /// is no such signal: the killed process left it `True`.
    pub async fn restart_node(&mut self, within: Duration) -> anyhow::Result<()> {
        self.kill_node()?;
        self.start_node()?;
        let path = format!("/api/v1/nodes/{NODE_NAME}/proxy/healthz");
        wait_for(within, "kwk-node's kubelet API after its restart", || {
            let up = self
                .kubectl(&["get", "--raw", &path])
                .is_ok_and(|s| s.trim() == "ok");
            std::future::ready(up)
        })
        .await
        .with_context(|| self.log_tail())?;
        self.wait_node_ready(within).await
    }

    /// Runs kubectl with the admin kubeconfig in the cluster's network namespace; its stdout,
    /// or an error with its stderr.
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = self.kubectl_output(args, None)?;
        if !output.status.success() {
            bail!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Runs kubectl as [`Self::kubectl`] with `stdin` piped in; the raw output, whatever the
    /// exit status.
    pub fn kubectl_output(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<Output> {
        let kubeconfig = self.admin_kubeconfig();
        self.containerd.netns().run(|| -> anyhow::Result<Output> {
            let mut child = Command::new(kubectl_path())
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(args)
                .stdin(if stdin.is_some() {
                    Stdio::piped()
                } else {
                    Stdio::null()
                })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .context("starting kubectl")?;
            if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
                use std::io::Write as _;
                pipe.write_all(input.as_bytes())?;
            }
            Ok(child.wait_with_output()?)
        })?
    }

    /// Runs kubectl and parses its output as JSON (`Null` when it fails or is not JSON).
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.kubectl(args).unwrap_or_default();
        serde_json::from_str(&out).unwrap_or(serde_json::Value::Null)
    }

    /// The pod `name` (default namespace) as JSON.
    pub fn pod_json(&self, name: &str) -> serde_json::Value {
        self.json(&["get", "pod", name, "-o", "json"])
    }

    /// `(reason, message)` of the events about the object `name`.
    pub fn events_of(&self, name: &str) -> Vec<(String, String)> {
        self.json(&["get", "events", "-o", "json"])["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["involvedObject"]["name"] == name)
            .map(|e| {
                (
                    e["reason"].as_str().unwrap_or_default().to_string(),
                    e["message"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// Waits up to `within` for `check`; panics naming `what`, with the node's log tail.
    pub async fn wait_until(&self, within: Duration, what: &str, mut check: impl FnMut() -> bool) {
        wait_for(within, what, || std::future::ready(check()))
            .await
            .unwrap_or_else(|e| panic!("{e:#}\n{}", self.log_tail()));
    }

    /// Applies `manifests` (YAML) with kubectl; panics if kubectl fails.
    pub fn apply(&self, manifests: &str) {
        let applied = self
            .kubectl_output(&["apply", "-f", "-"], Some(manifests))
            .expect("running kubectl apply");
        assert!(applied.status.success(), "{applied:?}");
    }

    /// SIGKILLs the processes whose command line has every one of `needles` (e.g. the
    /// apiserver: `["apiserver", <this cluster's pki dir>]`); returns their PIDs.
    pub fn kill_processes(&self, needles: &[&str]) -> anyhow::Result<Vec<i32>> {
        let mut killed = Vec::new();
        for entry in std::fs::read_dir("/proc").context("listing /proc")? {
            let Ok(entry) = entry else { continue };
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
            if needles.iter().all(|n| cmdline.contains(n)) {
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                )
                .with_context(|| format!("killing {pid}"))?;
                killed.push(pid);
            }
        }
        Ok(killed)
    }

    /// Starts a long-running kubectl (`logs -f`, `port-forward`) in the cluster's network
    /// namespace, stdout piped; the caller kills it.
    pub fn spawn_kubectl(&self, args: &[&str]) -> anyhow::Result<Child> {
        let kubeconfig = self.admin_kubeconfig();
        self.containerd.netns().run(|| {
            Command::new(kubectl_path())
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .context("starting kubectl")
        })?
    }

    pub fn containerd(&self) -> &TestContainerd {
        &self.containerd
    }
    /// kwk-node's process ID while it runs.
    pub fn node_pid(&self) -> Option<u32> {
        self.node.as_ref().map(Child::id)
    }

    /// Forwards a free port on this machine's loopback to the apiserver in the cluster's
    /// network namespace, for clients that run here (the forwarder stops when the returned
    /// value is dropped).
    pub async fn forward_apiserver(&self) -> anyhow::Result<ApiserverForward> {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .context("listening on a free loopback port")?;
        let addr = listener.local_addr()?;
        let relay = tokio::spawn(forward_to_apiserver(
            listener,
            self.containerd.netns().path(),
        ));
        Ok(ApiserverForward { addr, relay })
    }

    /// A kube-rs client with the admin kubeconfig's credentials, connecting through
    /// [`Self::forward_apiserver`] (keep the forward as long as the client).
    pub async fn admin_client(&self) -> anyhow::Result<(kube::Client, ApiserverForward)> {
        let forward = self.forward_apiserver().await?;
        let kubeconfig = kube::config::Kubeconfig::read_from(self.admin_kubeconfig())
            .context("reading the admin kubeconfig")?;
        let mut config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .context("the admin kubeconfig")?;
        // The serving certificate names 127.0.0.1, the address the forward listens on.
        config.cluster_url = format!("https://{}", forward.addr)
            .parse()
            .context("the forward's URL")?;
        Ok((kube::Client::try_from(config)?, forward))
    }
    pub fn node_ip(&self) -> IpAddr {
        self.node_ip
    }
    /// `kwk init`'s `--config-dir`.
    pub fn config_dir(&self) -> PathBuf {
        self.config_dir.clone()
    }
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.config_dir().join("admin.kubeconfig")
    }
    pub fn manifests(&self) -> PathBuf {
        self.config_dir().join("manifests")
    }
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("kwk-node.log")
    }

    /// The tail of kwk-node's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_file()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(60)..].join("\n");
        format!("--- kwk-node log (tail) ---\n{tail}")
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let _ = self.kill_node();
    }
}

/// A host loopback port forwarded to the apiserver inside a cluster's network namespace; the
/// forwarder stops on drop.
#[derive(Debug)]
pub struct ApiserverForward {
    addr: SocketAddr,
    relay: tokio::task::JoinHandle<()>,
}

impl ApiserverForward {
    /// The address on this machine that reaches the apiserver.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for ApiserverForward {
    fn drop(&mut self) {
        self.relay.abort();
    }
}

/// Forwards each connection to `listener` to the apiserver (`127.0.0.1:6443`) inside the network
/// namespace at `netns`: the socket is made there, then used from here.
pub async fn forward_to_apiserver(listener: tokio::net::TcpListener, netns: PathBuf) {
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, APISERVER_PORT));
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            continue;
        };
        let netns = netns.clone();
        tokio::spawn(async move {
            let connect = tokio::task::spawn_blocking(move || connect_in(&netns, target)).await;
            match connect {
                Ok(Ok(mut outbound)) => {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
                Ok(Err(err)) => eprintln!("forwarding to the apiserver: {err:#}"),
                Err(err) => eprintln!("forwarding to the apiserver: {err}"),
            }
        });
    }
}

/// Connects to `target` from inside the network namespace at `netns`.
fn connect_in(netns: &Path, target: SocketAddr) -> anyhow::Result<tokio::net::TcpStream> {
    let stream = crate::netns::run_in(netns, || std::net::TcpStream::connect(target))??;
    stream.set_nonblocking(true)?;
    Ok(tokio::net::TcpStream::from_std(stream)?)
}

/// The kubectl binary: `$KUBECTL`, else `.ci/bin/kubectl` of this checkout if it is there,
/// else `kubectl` on the `PATH`.
pub fn kubectl_path() -> PathBuf {
    if let Some(path) = std::env::var_os("KUBECTL") {
        return PathBuf::from(path);
    }
    let local = crate::images::workspace_root().join(".ci/bin/kubectl");
    if local.exists() {
        local
    } else {
        PathBuf::from("kubectl")
    }
}

/// The status (`"True"`, `"False"`) of a pod's condition `type_`, empty when it has none.
pub fn pod_condition(pod: &serde_json::Value, type_: &str) -> String {
    pod["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .and_then(|c| c["status"].as_str())
        .unwrap_or_default()
        .to_string()
}
