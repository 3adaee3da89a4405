//! The images kwk ships or tests with: `pause` (the sandbox image), `control-plane` (the
//! static pods' image) and a busybox test image.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::BuildError;
use crate::spec::{Entry, FileSource, ImageSpec, RunConfig};

/// Repository and tag of the sandbox image; containerd's `sandbox_image` names it.
pub const PAUSE_REPOSITORY: &str = "localhost/kwk/pause";
pub const PAUSE_TAG: &str = "1";
/// Repository of the control plane image; its tag is the workspace version (`kwk init`'s
/// default image).
pub const CONTROL_PLANE_REPOSITORY: &str = "localhost/kwk/control-plane";
/// Where the control plane binary lives in its image.
pub const CONTROL_PLANE_BINARY: &str = "/usr/bin/kwk-control-plane";
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

/// `control-plane`: the `kwk-control-plane` binary at [`CONTROL_PLANE_BINARY`] and, when it is
/// dynamically linked, the shared libraries it needs at the paths the dynamic loader looks
/// them up (see [`shared_libraries`]); a static binary needs nothing else.
pub fn control_plane(binary: &Path, libraries: &[PathBuf], tag: &str) -> ImageSpec {
    let mut entries = vec![
        Entry::file(
            CONTROL_PLANE_BINARY,
            FileSource::Path(binary.to_owned()),
            0o755,
        ),
        Entry::dir("/tmp", 0o1777),
    ];
    entries.extend(libraries.iter().map(|library| {
        Entry::file(
            library.display().to_string(),
            FileSource::Path(library.clone()),
            0o755,
        )
    }));
    ImageSpec {
        repository: CONTROL_PLANE_REPOSITORY.into(),
        tag: tag.into(),
        entries,
        run: RunConfig {
            entrypoint: vec![CONTROL_PLANE_BINARY.into()],
            labels: [("io.kwk.image".to_owned(), "control-plane".to_owned())].into(),
            ..RunConfig::default()
        },
    }
}

/// The shared libraries (and the dynamic loader) a binary loads, as `ldd` lists them; empty
/// for a static binary. The host's libraries go into the image, so the image runs on hosts
/// with the same C library ABI (the packaged binary is static and needs none).
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, BuildError> {
    let failed = |reason: String| BuildError::SharedLibraries {
        path: binary.to_owned(),
        reason,
    };
    let output = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| failed(format!("running ldd: {e}")))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        if text.contains("not a dynamic executable") || stderr.contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        return Err(failed(format!(
            "ldd exited with {}: {stderr}",
            output.status
        )));
    }
    parse_ldd(&text).map_err(failed)
}

/// The absolute paths in `ldd` output: `libc.so.6 => /lib/…/libc.so.6 (0x…)` and the loader's
/// `/lib64/ld-linux-x86-64.so.2 (0x…)`; the kernel's vDSO has no file and is skipped.
fn parse_ldd(text: &str) -> Result<Vec<PathBuf>, String> {
    let mut paths = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains("statically linked") {
            return Ok(Vec::new());
        }
        let path = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    return Err(format!("{} not found", name.trim()));
                }
                rest.split_whitespace().next().unwrap_or_default()
            }
            None => line.split_whitespace().next().unwrap_or_default(),
        };
        if path.starts_with('/') {
            paths.push(PathBuf::from(path));
        }
    }
    Ok(paths)
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
    fn ldd_output_gives_the_library_and_loader_paths() {
        let cases: &[(&str, Result<Vec<&str>, &str>)] = &[
            (
                "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x7f)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x7f)\n\t/lib64/ld-linux-x86-64.so.2 (0x7f)\n",
                Ok(vec![
                    "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                    "/lib/x86_64-linux-gnu/libc.so.6",
                    "/lib64/ld-linux-x86-64.so.2",
                ]),
            ),
            ("\tstatically linked\n", Ok(vec![])),
            ("\tlibfoo.so.1 => not found\n", Err("libfoo.so.1 not found")),
        ];
        for (text, want) in cases {
            let got = parse_ldd(text);
            let want = want
                .clone()
                .map(|v| v.into_iter().map(PathBuf::from).collect::<Vec<_>>())
                .map_err(str::to_owned);
            assert_eq!(got, want, "{text:?}");
        }
    }

    #[test]
    fn control_plane_spec_holds_binary_and_libraries() {
        let spec = control_plane(
            Path::new("/target/kwk-control-plane"),
            &[PathBuf::from("/lib64/ld-linux-x86-64.so.2")],
            "0.1.0",
        );
        assert_eq!(spec.reference(), "localhost/kwk/control-plane:0.1.0");
        let paths: Vec<&str> = spec.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [CONTROL_PLANE_BINARY, "/tmp", "/lib64/ld-linux-x86-64.so.2"]
        );
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
