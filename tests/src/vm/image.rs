//! The cached guest image: Debian 12 from `debootstrap`, configured from [`guest`], turned into
//! a raw ext4 root disk, an uncompressed `vmlinux` and a small initrd.
//!
//! The cache entry is `<vm dir>/image-<hash of guest::recipe()>`: a second run (and every other
//! test binary of the same `cargo test`) reuses it, a change to the recipe builds a new one and
//! removes the old. A build lock makes concurrent test processes wait for one build instead of
//! racing; a half-built image never has its `ready` marker, so it is never used.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Instant;

use anyhow::{Context as _, bail};
use sha2::{Digest as _, Sha256};

use super::disk::{self, Ext4};
use super::{guest, initrd, kernel, lock_exclusive, tools, vm_dir};
use crate::cleanup;

/// Size of the root disk (sparse: it costs what is written). Leaves tests a couple of GiB.
const ROOT_DISK_BYTES: u64 = 4 << 30;

/// A built guest image.
#[derive(Debug, Clone)]
pub struct GuestImage {
    pub dir: PathBuf,
    /// The guest kernel's release (`uname -r`), e.g. `6.1.0-50-amd64`.
    pub kernel_version: String,
}

impl GuestImage {
    pub fn vmlinux(&self) -> PathBuf {
        self.dir.join("vmlinux")
    }

    pub fn initrd(&self) -> PathBuf {
        self.dir.join("initrd.img")
    }

    /// The raw root disk; runs never write to it (each has its own overlay).
    pub fn root_disk(&self) -> PathBuf {
        self.dir.join("root.img")
    }
}

/// The guest image, built on first use and then reused by every test of every process.
pub fn guest_image() -> anyhow::Result<&'static GuestImage> {
    static IMAGE: OnceLock<GuestImage> = OnceLock::new();
    static BUILDING: Mutex<()> = Mutex::new(());
    let _one_builder = BUILDING.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(image) = IMAGE.get() {
        return Ok(image);
    }
    let image = ensure_built(&vm_dir())?;
    Ok(IMAGE.get_or_init(|| image))
}

/// The cache key: the first 16 hex digits of the recipe's SHA-256.
pub(crate) fn recipe_key() -> String {
    let digest = Sha256::digest(guest::recipe().as_bytes());
    hex::encode(digest)[..16].to_owned()
}

fn ensure_built(root: &Path) -> anyhow::Result<GuestImage> {
    let dir = root.join(format!("image-{}", recipe_key()));
    if let Some(image) = load(&dir) {
        return Ok(image);
    }
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    tools::check_prerequisites()?;
    let _lock = lock_exclusive(&root.join("build.lock"))?;
    if let Some(image) = load(&dir) {
        return Ok(image); // another process built it while we waited
    }
    let work = root.join(format!("building-{}", recipe_key()));
    clear(&work); // left by a build that was killed
    let mut partial = Partial {
        dir: work.clone(),
        keep: false,
    };
    eprintln!(
        "kwk vm: building the guest image in {} (debootstrap, a few minutes)",
        work.display()
    );
    let started = Instant::now();
    let kernel_version = build(&work)?;
    let seconds = started.elapsed().as_secs();
    std::fs::write(work.join("kernel-version"), &kernel_version)?;
    std::fs::write(work.join("build-seconds"), seconds.to_string())?;
    std::fs::write(work.join("ready"), "")?;
    std::fs::rename(&work, &dir)
        .with_context(|| format!("moving the image to {}", dir.display()))?;
    partial.keep = true;
    eprintln!(
        "kwk vm: guest image built in {seconds} s: {}",
        dir.display()
    );
    remove_other_images(root, &dir);
    load(&dir).context("the image just built is incomplete")
}

fn load(dir: &Path) -> Option<GuestImage> {
    if !dir.join("ready").exists() {
        return None;
    }
    let kernel_version = std::fs::read_to_string(dir.join("kernel-version")).ok()?;
    Some(GuestImage {
        dir: dir.to_owned(),
        kernel_version: kernel_version.trim().to_owned(),
    })
}

/// A build directory, cleared when the build fails (or panics) unless `keep` was set.
struct Partial {
    dir: PathBuf,
    keep: bool,
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.keep {
            clear(&self.dir);
        }
    }
}

/// Detaches whatever a failed debootstrap left mounted (`/proc`, `/sys`) and removes `dir`.
fn clear(dir: &Path) {
    for problem in cleanup::unmount_below(dir)
        .into_iter()
        .chain(cleanup::remove_dir(dir))
    {
        eprintln!("warning: kwk vm: {problem}");
    }
}

/// Builds everything into `work`; returns the kernel version. Prints how long each step took.
fn build(work: &Path) -> anyhow::Result<String> {
    std::fs::create_dir_all(work)?;
    let rootfs = work.join("rootfs");
    let step = Instant::now();
    debootstrap(&rootfs, &work.join("debootstrap.log"))?;
    eprintln!("kwk vm: debootstrap took {} s", step.elapsed().as_secs());
    let step = Instant::now();
    configure(&rootfs)?;
    let version = kernel_version(&rootfs)?;
    kernel::extract_vmlinux(
        &rootfs.join(format!("boot/vmlinuz-{version}")),
        &work.join("vmlinux"),
    )?;
    std::fs::write(work.join("initrd.img"), initrd::build(&rootfs, &version)?)?;
    let spec = Ext4 {
        label: "kwk-root",
        size_bytes: ROOT_DISK_BYTES,
        journal: true,
    };
    disk::mkfs_ext4(&rootfs, &work.join("root.img"), spec)?;
    clear(&rootfs); // ~900 MB, no longer needed
    eprintln!(
        "kwk vm: kernel {version}, initrd and root disk took {} s",
        step.elapsed().as_secs()
    );
    Ok(version)
}

fn debootstrap(rootfs: &Path, log: &Path) -> anyhow::Result<()> {
    let mut cmd = tools::command(tools::DEBOOTSTRAP)?;
    cmd.args(["--variant=minbase", "--components=main"])
        .arg(format!("--include={}", guest::PACKAGES.join(",")))
        .arg(guest::SUITE)
        .arg(rootfs);
    if let Some(mirror) = mirror() {
        cmd.arg(mirror);
    }
    let log_file = std::fs::File::create(log)?;
    let status = cmd
        .stdin(std::process::Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .status()
        .context("starting debootstrap")?;
    if !status.success() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        bail!(
            "debootstrap failed ({status}); its log ends:\n{}",
            tools::tail(&text, 30)
        );
    }
    Ok(())
}

/// The mirror apt already uses for the suite (so the guest comes from where the host's packages
/// do), `KWK_VM_MIRROR` if set, else debootstrap's default.
fn mirror() -> Option<String> {
    if let Some(mirror) = std::env::var_os("KWK_VM_MIRROR") {
        return Some(mirror.to_string_lossy().into_owned());
    }
    let output = Command::new("apt-get")
        .args(["indextargets", "--format", "$(RELEASE) $(REPO_URI)"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| {
            let (release, uri) = line.split_once(' ')?;
            (release == guest::SUITE).then(|| uri.to_owned())
        })
}

/// Writes the guest's files, enables the runner, masks and disables units, and drops what the
/// image does not need (the stock initramfs, downloaded packages, apt lists).
fn configure(rootfs: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{PermissionsExt as _, symlink};
    for (path, contents, mode) in guest::files() {
        let path = rootfs.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let _ = std::fs::remove_file(&path);
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    }
    let units = rootfs.join("etc/systemd/system");
    let wants = units.join("multi-user.target.wants");
    std::fs::create_dir_all(&wants)?;
    let runner = wants.join(guest::RUNNER_UNIT_NAME);
    let _ = std::fs::remove_file(&runner);
    symlink(
        Path::new("/etc/systemd/system").join(guest::RUNNER_UNIT_NAME),
        &runner,
    )?;
    for unit in guest::MASKED_UNITS {
        let path = units.join(unit);
        let _ = std::fs::remove_file(&path);
        symlink("/dev/null", &path).with_context(|| format!("masking {unit}"))?;
    }
    for entry in std::fs::read_dir(&units)?.flatten() {
        if entry.file_name().to_string_lossy().ends_with(".wants") {
            for unit in guest::NOT_STARTED_AT_BOOT {
                let _ = std::fs::remove_file(entry.path().join(unit));
            }
        }
    }
    remove_matching(&rootfs.join("boot"), |name| name.starts_with("initrd.img"))?;
    remove_matching(&rootfs.join("var/cache/apt/archives"), |name| {
        name.ends_with(".deb")
    })?;
    remove_matching(&rootfs.join("var/cache/apt"), |name| name.ends_with(".bin"))?;
    remove_matching(&rootfs.join("var/lib/apt/lists"), |name| {
        name != "lock" && name != "partial"
    })?;
    Ok(())
}

/// Removes the files directly in `dir` whose names match.
fn remove_matching(dir: &Path, matches: impl Fn(&str) -> bool) -> anyhow::Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        if entry.file_type()?.is_file() && matches(&entry.file_name().to_string_lossy()) {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// The one kernel installed in the rootfs.
fn kernel_version(rootfs: &Path) -> anyhow::Result<String> {
    let mut versions: Vec<String> = std::fs::read_dir(rootfs.join("boot"))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("vmlinuz-").map(str::to_owned)
        })
        .collect();
    match versions.len() {
        1 => Ok(versions.remove(0)),
        _ => bail!("expected one kernel in the guest's /boot, found {versions:?}"),
    }
}

/// Removes cache entries of other recipes (each is ~1 GB).
fn remove_other_images(root: &Path, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("image-")
            && path != keep
            && let Some(problem) = cleanup::remove_dir(&path)
        {
            eprintln!("warning: kwk vm: {problem}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_stable_and_short() {
        assert_eq!(recipe_key(), recipe_key());
        assert_eq!(recipe_key().len(), 16);
    }
}
