//! [`SysctlFile`]: one sysctl, opened once and written later. A `/proc/sys/net/…` file belongs to
//! the network namespace of the thread that opened it, so a mode built inside another namespace
//! (`netns::run_in`) keeps setting that namespace's values from whichever thread syncs.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

/// A sysctl file kept open, or why it could not be opened (reported on each write).
#[derive(Debug)]
pub struct SysctlFile {
    path: PathBuf,
    file: Result<File, (io::ErrorKind, String)>,
}

impl SysctlFile {
    /// Opens `path` for reading and writing in the calling thread's namespace. A failure is kept
    /// and returned by [`Self::ensure`] (a sysctl that appears later is not picked up).
    pub fn open(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| (e.kind(), e.to_string()));
        Self { path, file }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `value` unless the sysctl already holds it.
    pub fn ensure(&self, value: &str) -> io::Result<()> {
        let file = self
            .file
            .as_ref()
            .map_err(|(kind, message)| io::Error::new(*kind, message.clone()))?;
        let mut current = [0u8; 64];
        let n = file.read_at(&mut current, 0)?;
        if String::from_utf8_lossy(&current[..n]).trim() == value {
            return Ok(());
        }
        file.write_all_at(value.as_bytes(), 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_only_when_different_and_reports_a_missing_file_on_write() {
        let dir = std::env::temp_dir().join(format!("kwk-sysctl-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("ip_forward");
        std::fs::write(&path, "0\n").expect("seed");
        let sysctl = SysctlFile::open(&path);
        sysctl.ensure("1").expect("write");
        assert_eq!(std::fs::read_to_string(&path).expect("read").trim(), "1");
        // Already set (as the kernel formats it, whitespace aside): nothing written, which
        // would have turned " 1" into "11".
        std::fs::write(&path, " 1\n").expect("reseed");
        sysctl.ensure("1").expect("no write needed");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), " 1\n");

        let missing = SysctlFile::open(dir.join("vs/conntrack"));
        let err = missing.ensure("1").expect_err("missing");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert_eq!(missing.path(), dir.join("vs/conntrack"));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
