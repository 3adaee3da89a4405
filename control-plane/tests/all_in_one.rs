//! `kwk-control-plane all`, the real binary: the apiserver, the controllers and the scheduler
//! in one process. A Deployment's pods get created and bound (controllers and scheduler ran,
//! reaching the apiserver over loopback), a new namespace gets its `default` ServiceAccount,
//! both leader Leases are held, and SIGTERM ends the process with status 0. Bad controller
//! flags end it non-zero with a message naming the controller manager.

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use support::kubectl_path;

/// The `kwk-control-plane all` process of one test, killed if the test ends early.
struct AllInOne {
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for AllInOne {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// `kwk-control-plane all` with `extra` flags, on a free loopback port, with a temp data dir
/// and generated PKI; its output goes to `dir/log`.
fn spawn_all_in_one(extra: &[&str]) -> AllInOne {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port().to_string();
    let pki = dir.path().join("pki");
    let data = dir.path().join("db");
    let log = std::fs::File::create(dir.path().join("log")).expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_kwk-control-plane"))
        .arg("all")
        .args(["--bind-address", "127.0.0.1", "--secure-port", &port])
        .arg("--generate-pki")
        .arg("--pki-dir")
        .arg(&pki)
        .arg("--data-dir")
        .arg(&data)
        .args(extra)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .spawn()
        .expect("spawn kwk-control-plane all");
    AllInOne { child, dir }
}

impl AllInOne {
    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("pki/admin.kubeconfig")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(kubectl_path())
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--cache-dir")
            .arg(self.dir.path().join("kube-cache"))
            .args(args)
            .env_remove("KUBECONFIG")
            .env("HOME", self.dir.path())
            .output()
            .expect("run kubectl")
    }

    fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}\n--- kwk-control-plane log ---\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Polls `check` every 200 ms until it holds, failing after `within` or if the process
    /// exits first.
    async fn eventually(
        &mut self,
        within: Duration,
        what: &str,
        mut check: impl FnMut(&Self) -> bool,
    ) {
        let deadline = Instant::now() + within;
        loop {
            if check(self) {
                return;
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("exited with {status} before {what}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "not within {within:?}: {what}\n--- kwk-control-plane log ---\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits up to `within` for the process to exit.
    async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "still running after {within:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn send_sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }
}

fn ready(server: &AllInOne) -> bool {
    server.kubeconfig().exists() && {
        let out = server.kubectl(&["get", "--raw", "/readyz"]);
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok"
    }
}

fn lease_holder(server: &AllInOne, name: &str) -> String {
    let out = server.kubectl(&[
        "get",
        "lease",
        "-n",
        "kube-system",
        name,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

async fn admin_client(kubeconfig: &Path) -> kube::Client {
    kwk_controllers::runtime::client_from_kubeconfig(kubeconfig)
        .await
        .expect("kube client from the admin kubeconfig")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_apiserver_controllers_and_scheduler_in_one_process() {
    let mut server = spawn_all_in_one(&["--leader-elect-retry-period", "500ms"]);
    server
        .eventually(Duration::from_secs(60), "/readyz answers ok", ready)
        .await;
    let client = admin_client(&server.kubeconfig()).await;
    let _nodes = support::simulate_nodes(&client, &[("node-a", "zone-a")]).await;

    server.kubectl_ok(&["create", "namespace", "demo"]);
    server
        .eventually(
            Duration::from_secs(30),
            "the default ServiceAccount in namespace demo",
            |s| {
                s.kubectl(&["get", "serviceaccount", "default", "-n", "demo"])
                    .status
                    .success()
            },
        )
        .await;

    server.kubectl_ok(&[
        "create",
        "deployment",
        "web",
        "--image=x",
        "--replicas=2",
        "-n",
        "demo",
    ]);
    server
        .eventually(
            Duration::from_secs(60),
            "both pods of deployment web bound to node-a",
            |s| {
                let out = s.kubectl(&[
                    "get",
                    "pods",
                    "-n",
                    "demo",
                    "-l",
                    "app=web",
                    "-o",
                    "jsonpath={.items[*].spec.nodeName}",
                ]);
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                let nodes: Vec<&str> = text.split_whitespace().collect();
                nodes == ["node-a", "node-a"]
            },
        )
        .await;

    // Each component campaigned on its own Lease.
    for lease in ["kube-controller-manager", "kube-scheduler"] {
        assert!(
            !lease_holder(&server, lease).is_empty(),
            "lease kube-system/{lease} has a holder"
        );
    }

    server.send_sigterm();
    let status = server.wait_exit(Duration::from_secs(10)).await;
    assert!(
        status.success(),
        "SIGTERM: exit {status}:\n{}",
        server.log()
    );
}

#[tokio::test]
async fn bad_controller_flags_fail_naming_the_controller_manager() {
    let mut server = spawn_all_in_one(&["--controllers", "*,nosuch"]);
    let status = server.wait_exit(Duration::from_secs(30)).await;
    assert!(!status.success(), "exit {status}");
    let log = server.log();
    assert!(
        log.contains("controller-manager") && log.contains("nosuch"),
        "error names the component and the controller:\n{log}"
    );
}
