//! The images every test imports: `pause` (our static binary) and busybox, built offline.
//!
//! The static pause binary is built once by a nested `cargo build` into its own target dir
//! (`target/kwk-static`, so it never waits on the outer build's lock); `KWK_PAUSE_BINARY`
//! overrides it. Archives are rebuilt per process into `target/kwk-images` (cheap, and
//! deterministic, so concurrent processes write identical bytes).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock, PoisonError};

use anyhow::{Context as _, bail};
use kwk_image_builder::images;

/// Archives of the test images, and the references they carry.
#[derive(Debug, Clone)]
pub struct TestImages {
    pub pause_archive: PathBuf,
    pub pause_reference: String,
    pub busybox_archive: PathBuf,
    pub busybox_reference: String,
}

/// The workspace root (this crate lives in `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_owned)
        .unwrap_or_default()
}

/// Builds the test images once per process.
pub fn test_images() -> anyhow::Result<&'static TestImages> {
    static IMAGES: OnceLock<TestImages> = OnceLock::new();
    static BUILDING: Mutex<()> = Mutex::new(());
    let _one_builder = BUILDING.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(images) = IMAGES.get() {
        return Ok(images);
    }
    let built = build_test_images()?;
    Ok(IMAGES.get_or_init(|| built))
}

fn build_test_images() -> anyhow::Result<TestImages> {
    let out = workspace_root().join("target/kwk-images");
    let pause_binary = match std::env::var_os("KWK_PAUSE_BINARY") {
        Some(path) => PathBuf::from(path),
        None => build_static_pause()?,
    };
    let pause = kwk_image_builder::build(&images::pause(&pause_binary))?;
    let pause_archive = out.join("pause.tar");
    pause.write_to(&pause_archive)?;

    let busybox_binary = Path::new("/bin/busybox");
    let applets = images::busybox_applets(busybox_binary)
        .context("the busybox test image needs Debian's busybox-static (.ci/install-deps)")?;
    let busybox = kwk_image_builder::build(&images::busybox(busybox_binary, &applets))?;
    let busybox_archive = out.join("busybox.tar");
    busybox.write_to(&busybox_archive)?;

    Ok(TestImages {
        pause_archive,
        pause_reference: pause.reference,
        busybox_archive,
        busybox_reference: busybox.reference,
    })
}

/// `cargo build` of `kwk-pause` as a static binary; returns its path.
pub fn build_static_pause() -> anyhow::Result<PathBuf> {
    let root = workspace_root();
    let target_dir = root.join("target/kwk-static");
    let triple = "x86_64-unknown-linux-gnu";
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args([
            "build",
            "--quiet",
            "--profile",
            "pause",
            "-p",
            "kwk-pause",
            "--target",
            triple,
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .context("running cargo to build the static pause binary")?;
    if !status.success() {
        bail!("building the static pause binary failed: {status}");
    }
    Ok(target_dir.join(triple).join("pause").join("pause"))
}

/// The images a single-node cluster needs besides the test images, written into `dir` for
/// kwk-node to import at start-up: the control plane image (from the `kwk-control-plane`
/// binary at `binary`, debug info stripped first) and busybox tagged `localhost/busybox:latest`
/// for users to try a pod offline. Returns the control plane image's reference.
pub fn write_cluster_images(binary: &Path, dir: &Path) -> anyhow::Result<String> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let stripped = dir.join(".kwk-control-plane.stripped");
    let status = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&stripped)
        .arg(binary)
        .status()
        .context("running strip (binutils)")?;
    if !status.success() {
        bail!("strip {} failed: {status}", binary.display());
    }
    let libraries = images::shared_libraries(&stripped)?;
    let control_plane = kwk_image_builder::build(&images::control_plane(
        &stripped,
        &libraries,
        env!("CARGO_PKG_VERSION"),
    ))?;
    control_plane.write_to(&dir.join("control-plane.tar"))?;
    std::fs::remove_file(&stripped).ok();

    let busybox_binary = Path::new("/bin/busybox");
    let applets = images::busybox_applets(busybox_binary)?;
    let mut busybox = images::busybox(busybox_binary, &applets);
    busybox.repository = "localhost/busybox".into();
    busybox.tag = "latest".into();
    kwk_image_builder::build(&busybox)?.write_to(&dir.join("busybox-latest.tar"))?;
    Ok(control_plane.reference)
}
