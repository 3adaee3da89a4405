//! `kwk-image`: builds kwk's OCI image archives offline.
//!
//! ```text
//! kwk-image pause   --binary target/.../pause --out images/pause.tar
//! kwk-image busybox [--binary /bin/busybox]   --out images/busybox.tar
//! kwk-image control-plane --binary target/.../kwk-control-plane --out images/control-plane.tar
//! ```
//! Prints the reference and manifest digest of what it wrote.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use kwk_image_builder::images;

#[derive(Debug, Parser)]
#[command(
    name = "kwk-image",
    version,
    about = "Build kwk's OCI image archives offline"
)]
struct Cli {
    #[command(subcommand)]
    image: Image,
}

#[derive(Debug, Subcommand)]
enum Image {
    /// The pod sandbox image from a static `pause` binary.
    Pause {
        #[arg(long)]
        binary: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// The control plane image from the `kwk-control-plane` binary (plus the shared libraries
    /// it loads, if it is not static).
    ControlPlane {
        #[arg(long)]
        binary: PathBuf,
        /// The image tag (`kwk init` expects the workspace version).
        #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
        tag: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// The busybox test image from a static busybox (Debian `busybox-static`).
    Busybox {
        #[arg(long, default_value = "/bin/busybox")]
        binary: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (spec, out) = match cli.image {
        Image::Pause { binary, out } => (images::pause(&binary), out),
        Image::ControlPlane { binary, tag, out } => {
            let libraries = images::shared_libraries(&binary)?;
            (images::control_plane(&binary, &libraries, &tag), out)
        }
        Image::Busybox { binary, out } => {
            let applets = images::busybox_applets(&binary)?;
            (images::busybox(&binary, &applets), out)
        }
    };
    let image = kwk_image_builder::build(&spec)
        .with_context(|| format!("building {}", spec.reference()))?;
    image.write_to(&out)?;
    println!("{} {} {}", image.reference, image.digest(), out.display());
    Ok(())
}
