//! Disk images without mounting anything: ext4 file systems made from a directory
//! (`mkfs.ext4 -d`), read back with `debugfs`, and throwaway qcow2 overlays over a raw base.

use std::path::Path;

use anyhow::ensure;

use super::tools;

/// How an ext4 image is made.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ext4 {
    pub(crate) label: &'static str,
    pub(crate) size_bytes: u64,
    /// A journal costs space and nothing else here; the io disk goes without, so a run killed at
    /// its timeout leaves whatever reached the disk readable without a replay.
    pub(crate) journal: bool,
}

/// Makes `image` (sparse) holding a copy of `source` (owners, modes and links preserved). Inode
/// tables and journal are initialised now, not lazily by the guest kernel under emulation.
pub(crate) fn mkfs_ext4(source: &Path, image: &Path, spec: Ext4) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(image);
    let features = if spec.journal {
        "has_journal"
    } else {
        "^has_journal"
    };
    tools::run(
        tools::command(tools::MKFS_EXT4)?
            .args(["-q", "-F", "-t", "ext4", "-L", spec.label, "-O", features])
            .args(["-E", "lazy_itable_init=0,lazy_journal_init=0", "-d"])
            .arg(source)
            .arg(image)
            .arg(format!("{}k", spec.size_bytes.div_ceil(1024))),
        &format!("mkfs.ext4 of {}", image.display()),
    )?;
    Ok(())
}

/// Copies directory `inside` of the ext4 `image` (absolute, e.g. `/out`) to `dest/<its name>`.
pub(crate) fn read_out(image: &Path, inside: &str, dest: &Path) -> anyhow::Result<()> {
    // debugfs splits its request on spaces: keep both paths free of them.
    for path in [inside, &dest.to_string_lossy()] {
        ensure!(
            !path.contains(char::is_whitespace) && !path.contains('"'),
            "debugfs cannot take the path {path:?}"
        );
    }
    std::fs::create_dir_all(dest)?;
    tools::run(
        tools::command(tools::DEBUGFS)?
            .arg("-R")
            .arg(format!("rdump {inside} {}", dest.display()))
            .arg(image),
        &format!("debugfs rdump of {}", image.display()),
    )?;
    Ok(())
}

/// A qcow2 overlay at `overlay` whose reads fall through to the raw `base`; writes stay in it.
pub(crate) fn overlay(base: &Path, overlay: &Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(overlay);
    tools::run(
        tools::command(tools::QEMU_IMG)?
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(base)
            .arg(overlay),
        "qemu-img create of the run's overlay",
    )?;
    Ok(())
}
