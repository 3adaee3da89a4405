//! The host tools the VM tier runs, which step of `.ci/install-deps` provides each, and one way
//! to run them (arguments passed as a vector, never through a shell).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context as _, bail};

/// A host program the tier needs, and where it comes from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tool {
    pub(crate) name: &'static str,
    pub(crate) provided_by: &'static str,
}

pub(crate) const DEBOOTSTRAP: Tool = Tool {
    name: "debootstrap",
    provided_by: "package `debootstrap` in .ci/install-deps' package list",
};
pub(crate) const QEMU: Tool = Tool {
    name: "qemu-system-x86_64",
    provided_by: "the qemu-system-x86 (bookworm-backports) step of .ci/install-deps",
};
pub(crate) const QEMU_IMG: Tool = Tool {
    name: "qemu-img",
    provided_by: "package `qemu-utils` in .ci/install-deps' package list",
};
pub(crate) const MKFS_EXT4: Tool = Tool {
    name: "mkfs.ext4",
    provided_by: "package `e2fsprogs` in .ci/install-deps' package list",
};
pub(crate) const DEBUGFS: Tool = Tool {
    name: "debugfs",
    provided_by: "package `e2fsprogs` in .ci/install-deps' package list",
};
pub(crate) const XZ: Tool = Tool {
    name: "xz",
    provided_by: "package `xz-utils` in .ci/install-deps' package list",
};
pub(crate) const ZSTD: Tool = Tool {
    name: "zstd",
    provided_by: "package `zstd` in .ci/install-deps' package list",
};
pub(crate) const GZIP: Tool = Tool {
    name: "gzip",
    provided_by: "package `gzip` (always installed on Debian)",
};

/// Everything a VM test needs on the host, checked before anything is built.
const REQUIRED: [Tool; 6] = [DEBOOTSTRAP, QEMU, QEMU_IMG, MKFS_EXT4, DEBUGFS, XZ];

/// Fails naming each missing prerequisite and the install step that provides it.
pub fn check_prerequisites() -> anyhow::Result<()> {
    let mut missing: Vec<String> = REQUIRED
        .iter()
        .filter(|tool| locate(tool.name).is_none())
        .map(|tool| format!("`{}` (from {})", tool.name, tool.provided_by))
        .collect();
    if !nix::unistd::geteuid().is_root() {
        missing.push("root (debootstrap and image building run as root)".into());
    }
    if !missing.is_empty() {
        bail!(
            "the VM test tier is missing: {}; run `sudo .ci/install-deps`",
            missing.join(", ")
        );
    }
    Ok(())
}

/// The full path of `tool`, or an error naming the install step that provides it.
pub(crate) fn find(tool: Tool) -> anyhow::Result<PathBuf> {
    locate(tool.name).with_context(|| {
        format!(
            "`{}` not found: it comes from {}",
            tool.name, tool.provided_by
        )
    })
}

/// Searches `PATH`, then the sbin directories (cargo may run tests with a user's `PATH`).
fn locate(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A command for `tool`, by full path.
pub(crate) fn command(tool: Tool) -> anyhow::Result<Command> {
    Ok(Command::new(find(tool)?))
}

/// Runs `cmd` to completion; on failure the error says `what` failed, with its stderr.
pub(crate) fn run(cmd: &mut Command, what: &str) -> anyhow::Result<Output> {
    let output = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("{what}: starting {:?}", cmd.get_program()))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}): {}",
            output.status,
            tail(&String::from_utf8_lossy(&output.stderr), 30)
        );
    }
    Ok(output)
}

/// The last `lines` lines of `text`.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(tail("", 5), "");
    }

    #[test]
    fn a_missing_tool_names_its_install_step() {
        let tool = Tool {
            name: "kwk-no-such-tool",
            provided_by: "the frobnicate step of .ci/install-deps",
        };
        let err = find(tool).unwrap_err().to_string();
        assert!(err.contains("frobnicate step"), "{err}");
    }
}
