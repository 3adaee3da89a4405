//! Test harness for the privileged kwk-cni tests: throwaway network namespaces (deleted on drop,
//! also when a test fails), running the plugin binary as a runtime would (env + stdin) from
//! inside a "host" namespace, and an ICMP echo from inside a namespace.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

use std::fs::File;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn, recv, sendto,
    setsockopt, socket, sockopt,
};
use nix::sys::time::TimeVal;

/// Privileged tests run as root; `KWK_SKIP_PRIVILEGED=1` skips them (as the rest of the repo).
pub(crate) fn privileged() -> bool {
    if std::env::var_os("KWK_SKIP_PRIVILEGED").is_some() {
        eprintln!("KWK_SKIP_PRIVILEGED is set: skipping a privileged test");
        return false;
    }
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test creates network namespaces and needs root (set KWK_SKIP_PRIVILEGED=1 to skip)"
    );
    true
}

/// A named network namespace (`ip netns add`), removed on drop.
#[derive(Debug)]
pub(crate) struct NetNs {
    name: String,
}

fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|err| format!("ip {args:?}: {err}"))?;
    if !out.status.success() {
        return Err(format!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl NetNs {
    /// `kwkt-<tag>-<pid>`, replacing a stale one, loopback up.
    pub(crate) fn new(tag: &str) -> Self {
        let name = format!("kwkt-{tag}-{}", std::process::id());
        let _ = ip(&["netns", "del", &name]);
        ip(&["netns", "add", &name]).expect("ip netns add");
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub(crate) fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    pub(crate) fn path_str(&self) -> String {
        self.path().display().to_string()
    }

    /// `ip -n <ns> ...` (assertions and fault injection only).
    pub(crate) fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        ip(&full).expect("ip -n")
    }

    /// Runs `f` on a fresh thread inside this namespace; processes it spawns start there.
    pub(crate) fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let file = File::open(self.path()).expect("open netns");
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
                    f()
                })
                .join()
                .expect("thread in netns")
        })
    }

    /// Deletes the namespace now (a pod going away before DEL).
    pub(crate) fn delete(self) {
        drop(self);
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(err) = ip(&["netns", "del", &self.name]) {
            eprintln!("cleanup: {err}");
        }
    }
}

/// One plugin invocation's inputs.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub(crate) command: &'static str,
    pub(crate) container_id: String,
    pub(crate) netns: String,
    pub(crate) ifname: String,
    pub(crate) config: serde_json::Value,
}

/// What the plugin printed and how it exited.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) success: bool,
    pub(crate) stdout: String,
}

impl Reply {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|err| panic!("stdout is not JSON ({err}): {:?}", self.stdout))
    }

    /// Asserts success and returns the result JSON.
    pub(crate) fn ok(&self) -> serde_json::Value {
        assert!(self.success, "plugin failed: {}", self.stdout);
        if self.stdout.is_empty() {
            serde_json::Value::Null
        } else {
            self.json()
        }
    }

    /// Asserts failure with a CNI error JSON and returns its code.
    pub(crate) fn err_code(&self) -> u64 {
        assert!(!self.success, "plugin succeeded: {}", self.stdout);
        let json = self.json();
        assert!(json["msg"].is_string(), "error JSON without msg: {json}");
        json["code"].as_u64().expect("error code")
    }
}

pub(crate) fn plugin_bin() -> &'static str {
    env!("CARGO_BIN_EXE_kwk-cni")
}

fn spawn(bin: &Path, call: &Call) -> std::process::Child {
    let mut child = Command::new(bin)
        .env_clear()
        .env("CNI_COMMAND", call.command)
        .env("CNI_CONTAINERID", &call.container_id)
        .env("CNI_NETNS", &call.netns)
        .env("CNI_IFNAME", &call.ifname)
        .env("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=default")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn plugin");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(call.config.to_string().as_bytes())
        .expect("write stdin");
    drop(stdin);
    child
}

fn collect(child: std::process::Child) -> Reply {
    let out = child.wait_with_output().expect("wait plugin");
    Reply {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
    }
}

/// Runs the plugin as containerd would, with `host` as the node's namespace.
pub(crate) fn invoke(host: &NetNs, call: &Call) -> Reply {
    host.run(|| collect(spawn(Path::new(plugin_bin()), call)))
}

/// [`invoke`] through another path to the plugin (a `loopback` link to it, as a CNI bin dir has).
pub(crate) fn invoke_via(host: &NetNs, bin: &Path, call: &Call) -> Reply {
    host.run(|| collect(spawn(bin, call)))
}

/// Starts every call at once (separate processes) and waits for all.
pub(crate) fn invoke_concurrently(host: &NetNs, calls: &[Call]) -> Vec<Reply> {
    host.run(|| {
        let children: Vec<_> = calls
            .iter()
            .map(|call| spawn(Path::new(plugin_bin()), call))
            .collect();
        children.into_iter().map(collect).collect()
    })
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[allow(
    clippy::disallowed_methods,
    reason = "synchronous test helper retrying a send"
)]
/// Sends ICMP echo requests from inside `ns` to `dst` until one is answered (or `timeout`).
pub(crate) fn ping(ns: &NetNs, dst: Ipv4Addr, timeout: Duration) -> bool {
    ns.run(|| {
        let fd = socket(
            AddressFamily::Inet,
            SockType::Raw,
            SockFlag::empty(),
            SockProtocol::Icmp,
        )
        .expect("raw socket");
        setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(0, 200_000)).expect("timeout");
        let ident: u16 = (std::process::id() & 0xffff) as u16;
        let deadline = Instant::now() + timeout;
        let mut seq: u16 = 0;
        while Instant::now() < deadline {
            seq = seq.wrapping_add(1);
            let mut packet = vec![8, 0, 0, 0];
            packet.extend_from_slice(&ident.to_be_bytes());
            packet.extend_from_slice(&seq.to_be_bytes());
            packet.extend_from_slice(b"kwk-cni-ping");
            let sum = checksum(&packet);
            packet[2..4].copy_from_slice(&sum.to_be_bytes());
            let addr = SockaddrIn::from(SocketAddrV4::new(dst, 0));
            if sendto(fd.as_raw_fd(), &packet, &addr, MsgFlags::empty()).is_err() {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            let mut buf = [0u8; 1500];
            while let Ok(len) = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                if len < 20 {
                    continue;
                }
                let header_len = usize::from(buf[0] & 0x0f) * 4;
                let src = Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]);
                let icmp = &buf[header_len..len];
                if src == dst
                    && icmp.len() >= 8
                    && icmp[0] == 0
                    && icmp[4..6] == ident.to_be_bytes()
                {
                    return true;
                }
            }
        }
        false
    })
}
