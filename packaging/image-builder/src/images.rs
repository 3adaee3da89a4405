//! The images kwk ships or tests with: `pause` (the sandbox image) and a busybox test image.

use std::path::Path;
use std::process::Command;

use crate::BuildError;
use crate::spec::{Entry, FileSource, ImageSpec, RunConfig};

/// Repository and tag of the sandbox image; containerd's `sandbox_image` names it.
pub const PAUSE_REPOSITORY: &str = "localhost/kwk/pause";
pub const PAUSE_TAG: &str = "1";
/// Repository and tag of the busybox test image.
pub const BUSYBOX_REPOSITORY: &str = "localhost/kwk/busybox";
pub const BUSYBOX_TAG: &str = "1";

/// `pause`: a single static binary at `/pause`, nothing else (no shell, no libc).
pub fn pause(binary: &Path) -> ImageSpec {
    ImageSpec {
        repository: PAUSE_REPOSITORY.into(),
        tag: PAUSE_TAG.into(),
        entries: vec![Entry::file(
            "/pause",
            FileSource::Path(binary.to_owned()),
            0o755,
        )],
        run: RunConfig {
            entrypoint: vec!["/pause".into()],
            labels: [("io.kwk.image".to_owned(), "pause".to_owned())].into(),
            ..RunConfig::default()
        },
    }
}

/// A busybox userland: `/bin/busybox`, one symlink per applet, `/etc/passwd`, `/tmp`.
pub fn busybox(binary: &Path, applets: &[String]) -> ImageSpec {
    let mut entries = vec![
        Entry::file("/bin/busybox", FileSource::Path(binary.to_owned()), 0o755),
        Entry::file(
            "/etc/passwd",
            FileSource::Bytes(
                b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
                    .to_vec(),
            ),
            0o644,
        ),
        Entry::file(
            "/etc/group",
            FileSource::Bytes(b"root:x:0:\nnogroup:x:65534:\n".to_vec()),
            0o644,
        ),
        Entry::dir("/tmp", 0o1777),
        Entry::dir("/root", 0o700),
        Entry::dir("/var/www", 0o755),
    ];
    let mut applets: Vec<&String> = applets.iter().filter(|a| a.as_str() != "busybox").collect();
    applets.sort();
    applets.dedup();
    entries.extend(
        applets
            .into_iter()
            .map(|a| Entry::symlink(format!("/bin/{a}"), "busybox")),
    );
    ImageSpec {
        repository: BUSYBOX_REPOSITORY.into(),
        tag: BUSYBOX_TAG.into(),
        entries,
        run: RunConfig {
            cmd: vec!["/bin/sh".into()],
            env: vec!["PATH=/usr/sbin:/usr/bin:/sbin:/bin".into()],
            ..RunConfig::default()
        },
    }
}

/// Asks a busybox binary which applets it has (`busybox --list`). Applet names are checked to
/// be plain file names before they become paths.
pub fn busybox_applets(binary: &Path) -> Result<Vec<String>, BuildError> {
    let failed = |reason: String| BuildError::BusyboxApplets {
        path: binary.to_owned(),
        reason,
    };
    let output = Command::new(binary)
        .arg("--list")
        .output()
        .map_err(|e| failed(e.to_string()))?;
    if !output.status.success() {
        return Err(failed(format!("exited with {}", output.status)));
    }
    let text = String::from_utf8(output.stdout).map_err(|e| failed(e.to_string()))?;
    let applets: Vec<String> = text.lines().map(str::trim).map(str::to_owned).collect();
    if let Some(bad) = applets.iter().find(|a| !is_plain_name(a)) {
        return Err(failed(format!("unexpected applet name {bad:?}")));
    }
    if applets.is_empty() {
        return Err(failed("listed no applets".into()));
    }
    Ok(applets)
}

fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.[".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busybox_spec_links_applets_and_skips_itself() {
        let spec = busybox(
            Path::new("/bin/busybox"),
            &["sh".into(), "busybox".into(), "sh".into()],
        );
        let links: Vec<&str> = spec
            .entries
            .iter()
            .filter(|e| matches!(e.kind, crate::EntryKind::Symlink { .. }))
            .map(|e| e.path.as_str())
            .collect();
        assert_eq!(links, ["/bin/sh"]);
    }

    #[test]
    fn applet_names_are_plain() {
        assert!(is_plain_name("sh"));
        assert!(is_plain_name("["));
        assert!(is_plain_name("[["));
        assert!(is_plain_name("run-parts"));
        assert!(!is_plain_name("../x"));
        assert!(!is_plain_name("a/b"));
        assert!(!is_plain_name(""));
        assert!(!is_plain_name(".."));
    }
}
