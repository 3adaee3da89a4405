//! The io disk, the channel between a test and its guest: inputs are staged into a directory
//! (`in/script`, `in/fetch`, `in/files/<guest path>`) that becomes a small ext4 image; after
//! poweroff the runner's `out/` directory is read back from it (see `guest` for the layout).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail, ensure};

/// Where an input file's bytes come from.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    Host(PathBuf),
    Bytes { data: Vec<u8>, mode: u32 },
}

/// Everything a run sends into the guest.
#[derive(Debug, Clone, Default)]
pub(crate) struct Inputs {
    pub(crate) script: String,
    pub(crate) files: Vec<(Source, String)>,
    pub(crate) fetch: Vec<String>,
}

/// Checks that `path` is an absolute guest path made of plain components (no `..`, no `.`) and
/// fits on one line of the fetch list.
pub(crate) fn check_guest_path(path: &str) -> anyhow::Result<()> {
    let Some(relative) = path.strip_prefix('/') else {
        bail!("guest path {path:?} is not absolute");
    };
    ensure!(
        relative
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != ".."),
        "guest path {path:?} must name a file below / with plain components"
    );
    ensure!(
        !path.contains(['\n', '\r', '\0']),
        "guest path {path:?} contains a line break"
    );
    Ok(())
}

/// Writes `inputs` below `stage`; returns the bytes of file content staged.
pub(crate) fn stage(stage: &Path, inputs: &Inputs) -> anyhow::Result<u64> {
    let input_dir = stage.join("in");
    let files_dir = input_dir.join("files");
    std::fs::create_dir_all(&files_dir)?;
    std::fs::write(input_dir.join("script"), &inputs.script)?;
    let mut fetch = String::new();
    for path in &inputs.fetch {
        check_guest_path(path)?;
        fetch.push_str(path);
        fetch.push('\n');
    }
    std::fs::write(input_dir.join("fetch"), fetch)?;
    let mut bytes = inputs.script.len() as u64;
    for (source, guest) in &inputs.files {
        check_guest_path(guest)?;
        let target = files_dir.join(guest.trim_start_matches('/'));
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        bytes += match source {
            // A hard link costs nothing; across file systems, copy (modes are kept either way).
            Source::Host(host) => match std::fs::hard_link(host, &target) {
                Ok(()) => std::fs::metadata(&target)?.len(),
                Err(_) => std::fs::copy(host, &target).with_context(|| {
                    format!("copying {} for the guest's {guest}", host.display())
                })?,
            },
            Source::Bytes { data, mode } => {
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::write(&target, data)?;
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(*mode))?;
                data.len() as u64
            }
        };
    }
    Ok(bytes)
}

/// What the runner wrote back.
#[derive(Debug, Default)]
pub(crate) struct Outputs {
    pub(crate) exit_code: Option<i32>,
    pub(crate) system_state: String,
    pub(crate) failed_units: String,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    pub(crate) journal: String,
    pub(crate) missing: Vec<String>,
    pub(crate) runner_errors: String,
    pub(crate) files: BTreeMap<String, Vec<u8>>,
}

/// Reads the runner's `out` directory (as dumped from the io disk).
pub(crate) fn collect(out: &Path) -> anyhow::Result<Outputs> {
    let text = |name: &str| std::fs::read_to_string(out.join(name)).unwrap_or_default();
    let exit_code = match text("exit-code").trim() {
        "" => None,
        code => Some(
            code.parse()
                .with_context(|| format!("the runner wrote exit code {code:?}"))?,
        ),
    };
    let mut files = BTreeMap::new();
    let root = out.join("files");
    if root.is_dir() {
        read_tree(&root, &root, &mut files)?;
    }
    Ok(Outputs {
        exit_code,
        system_state: text("system-state").trim().to_owned(),
        failed_units: text("failed-units").trim().to_owned(),
        stdout: text("stdout"),
        stderr: text("stderr"),
        journal: text("journal"),
        missing: text("missing").lines().map(str::to_owned).collect(),
        runner_errors: text("runner-errors"),
        files,
    })
}

/// Regular files below `dir`, keyed by their guest path (`/` + path relative to `root`).
fn read_tree(root: &Path, dir: &Path, files: &mut BTreeMap<String, Vec<u8>>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)?.flatten() {
        let kind = entry.file_type()?;
        let path = entry.path();
        if kind.is_dir() {
            read_tree(root, &path, files)?;
        } else if kind.is_file() {
            let Ok(relative) = path.strip_prefix(root) else {
                bail!("{} is outside {}", path.display(), root.display());
            };
            let data = std::fs::read(&path)?;
            files.insert(format!("/{}", relative.display()), data);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_paths_must_be_absolute_and_plain() {
        check_guest_path("/opt/kwk/node").unwrap();
        check_guest_path("/a b/c").unwrap();
        for bad in [
            "relative",
            "/",
            "/a/../etc/shadow",
            "/a/./b",
            "/a//b",
            "/a/",
            "/a\nb",
            "",
        ] {
            assert!(check_guest_path(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn staging_lays_out_script_fetch_list_and_files() {
        let dir = std::env::temp_dir().join(format!("kwk-io-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let host = dir.join("host-file");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&host, "from the host").unwrap();
        let inputs = Inputs {
            script: "echo hi\n".into(),
            files: vec![
                (Source::Host(host), "/opt/x/host-file".into()),
                (
                    Source::Bytes {
                        data: b"#!/bin/sh\n".to_vec(),
                        mode: 0o755,
                    },
                    "/usr/local/bin/tool".into(),
                ),
            ],
            fetch: vec!["/var/log/a".into(), "/etc/b".into()],
        };
        let stage_dir = dir.join("stage");
        let bytes = stage(&stage_dir, &inputs).unwrap();
        assert_eq!(bytes, 8 + 13 + 10);
        let read = |p: &str| std::fs::read_to_string(stage_dir.join(p)).unwrap();
        assert_eq!(read("in/script"), "echo hi\n");
        assert_eq!(read("in/fetch"), "/var/log/a\n/etc/b\n");
        assert_eq!(read("in/files/opt/x/host-file"), "from the host");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(stage_dir.join("in/files/usr/local/bin/tool"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn collecting_reads_results_and_fetched_files() {
        let dir = std::env::temp_dir().join(format!("kwk-io-out-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("files/var/log")).unwrap();
        std::fs::write(dir.join("exit-code"), "3\n").unwrap();
        std::fs::write(dir.join("system-state"), "running\n").unwrap();
        std::fs::write(dir.join("stdout"), "out\n").unwrap();
        std::fs::write(dir.join("missing"), "/nope\n").unwrap();
        std::fs::write(dir.join("files/var/log/x"), "log").unwrap();
        let outputs = collect(&dir).unwrap();
        assert_eq!(outputs.exit_code, Some(3));
        assert_eq!(outputs.system_state, "running");
        assert_eq!(outputs.stdout, "out\n");
        assert_eq!(outputs.missing, ["/nope"]);
        assert_eq!(outputs.files["/var/log/x"], b"log");
        std::fs::remove_dir_all(&dir).unwrap();

        let empty = collect(Path::new("/nonexistent-kwk-out")).unwrap();
        assert_eq!(empty.exit_code, None);
    }
}
