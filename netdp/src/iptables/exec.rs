//! Running `iptables-save` / `iptables-restore` (or their legacy and IPv6 variants): finding
//! the binaries, and running one with its input on stdin, never through a shell. To act inside
//! another network namespace the process is spawned from a short-lived thread that entered
//! it with `setns` (a child inherits the spawning thread's namespaces): no `ip netns exec`,
//! no extra process on the sync path.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::IptablesError;
use crate::model::IpFamily;

/// Which iptables implementation to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IptablesBackend {
    /// Whatever `iptables-restore` is (on Debian 12: the nf_tables backend).
    #[default]
    Default,
    /// `iptables-nft-restore` explicitly.
    Nft,
    /// `iptables-legacy-restore` (x_tables).
    Legacy,
}

/// The two binaries of one family and backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tools {
    pub restore: PathBuf,
    pub save: PathBuf,
}

const SEARCH_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

impl Tools {
    /// Finds the binaries in `PATH` and the usual sbin directories.
    pub fn find(backend: IptablesBackend, family: IpFamily) -> Result<Self, IptablesError> {
        let base = match family {
            IpFamily::V4 => "iptables",
            IpFamily::V6 => "ip6tables",
        };
        let variant = match backend {
            IptablesBackend::Default => "",
            IptablesBackend::Nft => "-nft",
            IptablesBackend::Legacy => "-legacy",
        };
        Ok(Self {
            restore: find_binary(&format!("{base}{variant}-restore"))?,
            save: find_binary(&format!("{base}{variant}-save"))?,
        })
    }
}

fn find_binary(name: &str) -> Result<PathBuf, IptablesError> {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .into_iter()
        .chain(SEARCH_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| IptablesError::NotFound {
            binary: name.to_owned(),
        })
}

/// Runs `binary args` (inside the network namespace at `netns`, if given) with `stdin` as its
/// input; returns its stdout.
pub fn run(
    netns: Option<&Path>,
    binary: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, IptablesError> {
    let Some(ns_path) = netns else {
        return run_here(binary, args, stdin);
    };
    crate::netns::run_in(ns_path, || run_here(binary, args, stdin)).map_err(|source| {
        IptablesError::Netns {
            path: ns_path.to_owned(),
            source,
        }
    })?
}

fn run_here(binary: &Path, args: &[&str], stdin: Option<&str>) -> Result<String, IptablesError> {
    let name = binary.display().to_string();
    let mut child = Command::new(binary)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| IptablesError::Spawn {
            binary: name.clone(),
            source,
        })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A restore that rejects its input exits early: a broken pipe here is reported
        // through its exit status and stderr below.
        let _ = pipe.write_all(input.as_bytes());
    }
    let output = child
        .wait_with_output()
        .map_err(|source| IptablesError::Spawn {
            binary: name.clone(),
            source,
        })?;
    if !output.status.success() {
        return Err(IptablesError::Failed {
            binary: name,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
