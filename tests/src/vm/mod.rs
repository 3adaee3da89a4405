//! The VM test tier: tests that need what this machine lacks — systemd as PID 1 (the systemd
//! cgroup driver over D-Bus, `kwk-node.service`), cgroup v2, a stock kernel with `ip_vs`, a real
//! `dpkg -i` — run them in a Debian 12 guest under qemu (software emulation; no KVM here).
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use kwk_tests::vm::{Vm, vm_tests_enabled};
//! if !vm_tests_enabled() {
//!     return Ok(());
//! }
//! let out = Vm::builder()
//!     .file("target/debug/kwk-node", "/usr/local/bin/kwk-node")
//!     .script("kwk-node --version > /var/tmp/version")
//!     .fetch("/var/tmp/version")
//!     .run()?
//!     .success()?;
//! assert!(out.file("/var/tmp/version").is_some());
//! # Ok(())
//! # }
//! ```
//!
//! # How a run works
//! The first run of a process gets the cached image ([`image`]: debootstrap, ~1.5 min once
//! per recipe), takes the machine-wide VM lock (one VM at a time, across test binaries), boots
//! the stock kernel as an uncompressed `vmlinux` with a small initrd, root on a throwaway qcow2
//! overlay and a second "io" disk carrying the script and files. A boot-time runner unit
//! (`Type=simple`) waits for `systemctl is-system-running --wait`, copies the files into place,
//! runs the script with `bash -eu -o pipefail` in `/root/work`, copies the fetched paths, the
//! script's output and the journal back to the io disk and powers off; the host reads them out
//! with `debugfs`. Boot to poweroff takes ~10 s on an idle 2-core machine (more when cargo is
//! compiling beside it); building the image ~90 s.
//!
//! # Adding a VM test
//! - Put it in `tests/tests/vm_*.rs`, start with `if !vm_tests_enabled() { return Ok(()) }`,
//!   and assert on the [`VmOutput`]: `success()` fails with the script's output, failed units
//!   and the journal's and serial console's tails; print facts as `key=value` lines on stdout
//!   and parse them, or fetch files. The guest has no network: send everything in.
//! - Each run costs a boot: check several related facts in one script rather than one fact per
//!   run; CI runs every VM test in `cargo test --workspace`.
//! - Something missing in the guest (a package, a masked unit)? Change [`guest`]; the recipe
//!   hash changes and the image is rebuilt on the next run.
//! - `KWK_VM_KEEP=1` keeps each run's directory (overlay, io disk, serial log, the `results/`
//!   read back) under `<vm dir>/kept/` for a look; a failed run's serial log is always kept
//!   under `<vm dir>/logs/`;
//!   `KWK_VM_DIR` moves the cache (default `<workspace>/target/kwk-vm`); `KWK_SKIP_VM=1` skips
//!   the tier on a developer machine (refused when `CI=true`).
//!
//! # Running kwk-node in the guest (what a follow-up test needs)
//! - Where: in `agent/tests/vm_*.rs` (the agent's tests already use kwk-tests), so
//!   `env!("CARGO_BIN_EXE_kwk-node")` names the binary cargo built for the test.
//! - The binary: the host is Debian 12 like the guest, so the debug `kwk-node` (glibc-linked,
//!   ~120 MB) runs there as is (checked: sent with `.file(bin, "/usr/local/bin/kwk-node")`, it
//!   ran in a 17 s run). A static build (`-C target-feature=+crt-static --target
//!   x86_64-unknown-linux-gnu`) works too.
//! - Images: the guest cannot pull. Build the archives on the host with
//!   [`crate::images::test_images`] (`pause.tar`, `busybox.tar`), send them, and in the script
//!   `ctr -n k8s.io images import` each after `systemctl start containerd`; they keep their
//!   references (`pause_reference`, `busybox_reference`), and `sandbox_image` must name the
//!   pause one. `containerd_runs_our_image_with_the_systemd_cgroup_driver` in
//!   `tests/tests/vm_smoke.rs` does exactly this.
//! - containerd is installed but not started at boot, so a test first writes
//!   `/etc/containerd/config.toml`: `containerd config default` with `SystemdCgroup = true` (the
//!   runc options of the CRI plugin) for the systemd cgroup driver, `sandbox_image` set, and
//!   `restrict_oom_score_adj` as the host tests need it; then `cgroupDriver: systemd` in the
//!   KubeletConfiguration. A container then lands in a systemd scope under `system.slice` (or
//!   the slice kwk-node asks for).
//! - For the package test: send the `.deb`, `dpkg -i` it, `systemctl enable --now kwk-node`,
//!   and fetch `journalctl -u kwk-node` output along with the node's state.

mod disk;
pub mod guest;
pub mod image;
mod initrd;
mod io;
mod kernel;
mod run;
pub mod tools;

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use nix::fcntl::{Flock, FlockArg};

pub use image::{GuestImage, guest_image};
pub use run::{Vm, VmBuilder, VmOutput};
pub use tools::check_prerequisites;

/// Where images, locks, run directories and failed runs' serial logs live.
pub fn vm_dir() -> PathBuf {
    match std::env::var_os("KWK_VM_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => crate::images::workspace_root().join("target/kwk-vm"),
    }
}

/// Whether to run VM tests: `false` (with a note) only when `KWK_SKIP_VM` is set outside CI;
/// panics naming the missing tools (and the install step providing each) otherwise.
pub fn vm_tests_enabled() -> bool {
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if std::env::var_os("KWK_SKIP_VM").is_some() {
        assert!(
            !in_ci,
            "KWK_SKIP_VM is set, but CI=true: CI must run the VM tier"
        );
        eprintln!("KWK_SKIP_VM is set: skipping a VM test");
        return false;
    }
    if let Err(err) = check_prerequisites() {
        panic!("{err:#}");
    }
    true
}

/// An exclusive `flock` on `path` (created if needed), held until the guard drops. Blocks.
pub(crate) fn lock_exclusive(path: &Path) -> anyhow::Result<Flock<File>> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening lock file {}", path.display()))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| errno)
        .with_context(|| format!("locking {}", path.display()))
}
