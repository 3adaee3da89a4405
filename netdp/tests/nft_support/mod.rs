//! Helpers shared by the privileged nf_tables tests: the privilege gate, a network namespace
//! removed on drop, running code inside it, and reading `nft -j list ruleset` there.

#![allow(dead_code, reason = "each test binary uses a subset")]

use std::fs::File;
use std::process::{Command, Stdio};

use kwk_netdp::nft::NftSocket;
use nix::sched::{CloneFlags, setns};

/// Skips only when asked to (`KWK_SKIP_PRIVILEGED`); otherwise a missing root fails the test.
pub(crate) fn privileged_tests_enabled() -> bool {
    if std::env::var_os("KWK_SKIP_PRIVILEGED").is_some() {
        eprintln!("KWK_SKIP_PRIVILEGED is set: skipping a privileged test");
        return false;
    }
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test programs nf_tables in its own network namespace and needs root \
         (set KWK_SKIP_PRIVILEGED=1 to skip)"
    );
    true
}

/// A network namespace `kwkt-nft-<tag>-<pid>`, deleted on drop (also when the test panics).
#[derive(Debug)]
pub(crate) struct TestNs {
    pub(crate) name: String,
}

impl TestNs {
    pub(crate) fn new(tag: &str) -> Self {
        let name = format!("kwkt-nft-{tag}-{}", std::process::id());
        let _ = quiet(Command::new("ip").args(["netns", "del", &name]));
        run(&["ip", "netns", "add", &name]);
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// Runs `f` on a thread inside this namespace. Sockets it creates stay in the namespace.
    pub(crate) fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let file = File::open(format!("/run/netns/{}", self.name)).expect("open netns");
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
                    f()
                })
                .join()
                .expect("thread in netns panicked")
        })
    }

    /// An nf_tables socket in this namespace.
    pub(crate) fn nft(&self) -> NftSocket {
        self.run(NftSocket::open).expect("open nf_tables socket")
    }

    /// `ip -n <ns> ...`, panicking on failure.
    pub(crate) fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "-n", self.name.as_str()];
        all.extend_from_slice(args);
        run(&all)
    }

    /// `ip netns exec <ns> <cmd...>`.
    pub(crate) fn exec(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "netns", "exec", self.name.as_str()];
        all.extend_from_slice(args);
        run(&all)
    }

    /// `nft -j list ruleset` inside the namespace.
    pub(crate) fn nft_json(&self) -> serde_json::Value {
        let out = self.exec(&["nft", "-j", "list", "ruleset"]);
        serde_json::from_str(&out).expect("nft -j output is JSON")
    }

    /// `nft list ruleset` (text) inside the namespace, for diagnostics.
    pub(crate) fn nft_text(&self) -> String {
        self.exec(&["nft", "list", "ruleset"])
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let _ = quiet(Command::new("ip").args(["netns", "del", &self.name]));
    }
}

/// Connects `a` and `b` with a veth pair `<a_if>`/`<b_if>` and assigns `a_addr`/`b_addr`
/// (CIDR notation); both ends up.
pub(crate) fn veth(a: &TestNs, a_if: &str, a_addr: &str, b: &TestNs, b_if: &str, b_addr: &str) {
    a.ip(&[
        "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.name,
    ]);
    a.ip(&["addr", "add", a_addr, "dev", a_if]);
    b.ip(&["addr", "add", b_addr, "dev", b_if]);
    a.ip(&["link", "set", a_if, "up"]);
    b.ip(&["link", "set", b_if, "up"]);
}

fn run(args: &[&str]) -> String {
    let output = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"));
    assert!(
        output.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn quiet(command: &mut Command) -> std::io::Result<std::process::ExitStatus> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
}
