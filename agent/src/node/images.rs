//! Importing the OCI image archives shipped with kwk (`/usr/lib/kwk/images/*.tar`: pause, the
//! control plane) into the runtime at start, so no registry is needed. Archives already imported
//! cost one lookup each.

use std::path::Path;

use kwk_cri::import::{CRI_NAMESPACE, ContainerdClient, ImportOptions, import_archive};
use kwk_cri::{ConnectOptions, CriClient};

/// Imports every `*.tar` in `dir`; failures are logged, not fatal (the images may be present).
pub(super) async fn import_all(socket: &Path, dir: &Path, cri: &CriClient) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        tracing::debug!(dir = %dir.display(), "no image directory");
        return;
    };
    let mut archives: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "tar"))
        .collect();
    if archives.is_empty() {
        return;
    }
    archives.sort();
    let client =
        match ContainerdClient::connect(socket, &ConnectOptions::default(), CRI_NAMESPACE).await {
            Ok(c) => c,
            Err(err) => {
                tracing::warn!(%err, "cannot reach containerd to import images");
                return;
            }
        };
    for archive in archives {
        match import_archive(&client, &archive, &ImportOptions::default()).await {
            Ok(images) => {
                for image in images {
                    tracing::info!(image = %image.name, archive = %archive.display(), "image imported");
                    // CRI learns of new images from containerd's events a moment later.
                    for _ in 0..50 {
                        if matches!(cri.image_status(&image.name).await, Ok(Some(_))) {
                            break;
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                }
            }
            Err(err) => tracing::warn!(archive = %archive.display(), %err, "image import failed"),
        }
    }
}
