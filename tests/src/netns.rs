//! A named network namespace that stands in for a node's host network, removed on drop.
//!
//! A test's containerd runs inside it, so the CNI bridge, its iptables chains and sysctls such as
//! `ip_forward` all land there and vanish with it: nothing touches the machine's own network.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};
use nix::sched::{CloneFlags, setns};

/// A network namespace created with `ip netns add`.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates `name` (replacing a stale one left by a crashed run) with loopback up.
    pub fn create(name: &str) -> anyhow::Result<Self> {
        let _ = quiet(Command::new("ip").args(["netns", "del", name]));
        run(Command::new("ip").args(["netns", "add", name]))?;
        let netns = Self {
            name: name.to_owned(),
        };
        run(Command::new("ip").args(["-n", name, "link", "set", "lo", "up"]))?;
        Ok(netns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Runs `f` on a fresh thread that has entered this namespace; processes it spawns start
    /// there too. The calling thread's namespace is untouched.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
        run_in(&self.path(), f)
    }

    /// `ip -n <ns> <args>`, for assertions and diagnostics.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = Command::new("ip")
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .output()?;
        if !output.status.success() {
            bail!(
                "ip {args:?} in {}: {}",
                self.name,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

/// Runs `f` on a fresh thread that has entered the network namespace at `path` (e.g. from a
/// task that does not hold the [`NetNs`]); the calling thread's namespace is untouched.
pub fn run_in<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
    let file = File::open(path).with_context(|| format!("opening netns {}", path.display()))?;
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                setns(&file, CloneFlags::CLONE_NEWNET).context("entering network namespace")?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|_| bail!("thread in netns panicked"))
    })
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(err) = run(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!("warning: removing netns {}: {err:#}", self.name);
        }
    }
}

pub(crate) fn run(command: &mut Command) -> anyhow::Result<()> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn quiet(command: &mut Command) -> std::io::Result<std::process::ExitStatus> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
}
