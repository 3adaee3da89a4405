//! The last good pod of each manifest file, kept on disk (`<root-dir>/static-pods/`) so that
//! a manifest broken while kwk-node is down or restarting does not kill its running pod: the
//! next kwk-node offers the saved pod (same UID, so the pod is adopted) until the file is valid
//! again or deleted.
//!
//! One JSON record per manifest file, named after the sha256 of the file's full path (manifest
//! names can be anything; the hash is a fixed-length, collision-free name), holding the format
//! version, the manifest path (checked against the record's name on load), the node name and
//! the defaulted pod with its UID. Records are written atomically (temp file, fsync, rename,
//! fsync of the directory), mode 0600 (pods may carry secrets in their env). Records of files
//! no longer in the manifest directory (deleted, or `staticPodPath` changed) are removed by the
//! scanner; records it cannot read (corrupt, another format version) are logged, never
//! offered, and left in place for inspection until a save for the same file replaces them.
//!
//! The saved pod is not re-hashed on load: if a kwk-node upgrade changed how UIDs are computed,
//! the saved UID is still the one the running pod has, which is what matters here.
//!
//! The record format (`encode`, `decode`, `record_name`) is pure; [`LastGoodStore`] does the
//! file I/O and is used only when the source is given a state directory.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The record format written by this version.
pub(crate) const FORMAT_VERSION: u32 = 1;

/// Records larger than this are not read (a manifest is at most 1 MiB; its pod, defaulted and
/// re-encoded as JSON, stays well below).
const MAX_RECORD_BYTES: u64 = 8 * 1024 * 1024;

/// The last good pod of one manifest file, as saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Record {
    pub(crate) version: u32,
    /// The manifest file the pod came from (its full path).
    pub(crate) manifest: PathBuf,
    /// The node the pod was made for (the pod's name and `spec.nodeName` contain it).
    pub(crate) node_name: String,
    /// The validated, defaulted pod with its UID and `config.hash` (no `config.seen`).
    pub(crate) pod: Pod,
}

impl Record {
    /// The pod's UID (checked non-empty by [`decode`]).
    pub(crate) fn uid(&self) -> &str {
        self.pod.metadata.uid.as_deref().unwrap_or_default()
    }
}

/// Only the version, read first so a record of another format is reported as such.
#[derive(Deserialize)]
struct Header {
    version: u32,
}

/// Why a record could not be saved, read or removed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LastGoodError {
    #[error("{}: {action}: {source}", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{}: cannot encode the record for {}: {source}", path.display(), manifest.display())]
    Encode {
        path: PathBuf,
        manifest: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: not a valid record: {source}", path.display())]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: record format version {version} is not supported (this kwk-node writes {FORMAT_VERSION})", path.display())]
    UnsupportedVersion { path: PathBuf, version: u32 },
    #[error("{}: record is for {}, whose record would be named {expected}", path.display(), manifest.display())]
    WrongName {
        path: PathBuf,
        manifest: PathBuf,
        expected: String,
    },
    #[error("{}: the saved pod has no UID", path.display())]
    NoUid { path: PathBuf },
    #[error("{}: record is larger than {MAX_RECORD_BYTES} bytes", path.display())]
    TooLarge { path: PathBuf },
}

/// The file name of the record for `manifest`: the sha256 of its path bytes, in hex.
pub(crate) fn record_name(manifest: &Path) -> String {
    let digest = Sha256::digest(manifest.as_os_str().as_bytes());
    format!("{}.json", hex::encode(digest))
}

/// Whether `name` looks like a record file name (64 lowercase hex digits + `.json`).
fn is_record_name(name: &str) -> bool {
    name.strip_suffix(".json").is_some_and(|stem| {
        stem.len() == 64
            && stem
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The bytes of a record (`path` is the record file, for the error).
pub(crate) fn encode(record: &Record, path: &Path) -> Result<Vec<u8>, LastGoodError> {
    let mut bytes = serde_json::to_vec_pretty(record).map_err(|source| LastGoodError::Encode {
        path: path.to_path_buf(),
        manifest: record.manifest.clone(),
        source,
    })?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Reads a record from the bytes of the file `path`, checking its version, that its name
/// matches the manifest it names, and that the pod has a UID.
pub(crate) fn decode(path: &Path, bytes: &[u8]) -> Result<Record, LastGoodError> {
    let corrupt = |source| LastGoodError::Corrupt {
        path: path.to_path_buf(),
        source,
    };
    let header: Header = serde_json::from_slice(bytes).map_err(corrupt)?;
    if header.version != FORMAT_VERSION {
        return Err(LastGoodError::UnsupportedVersion {
            path: path.to_path_buf(),
            version: header.version,
        });
    }
    let record: Record = serde_json::from_slice(bytes).map_err(corrupt)?;
    let expected = record_name(&record.manifest);
    if path.file_name().and_then(|n| n.to_str()) != Some(expected.as_str()) {
        return Err(LastGoodError::WrongName {
            path: path.to_path_buf(),
            manifest: record.manifest,
            expected,
        });
    }
    if record.uid().is_empty() {
        return Err(LastGoodError::NoUid {
            path: path.to_path_buf(),
        });
    }
    Ok(record)
}

/// What [`LastGoodStore::load`] found.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    pub(crate) records: Vec<Record>,
    /// Records that could not be read; they are left in place.
    pub(crate) errors: Vec<LastGoodError>,
}

/// The records in one directory.
#[derive(Debug, Clone)]
pub(crate) struct LastGoodStore {
    dir: PathBuf,
    /// Whether the directory is known to exist (created, or seen, by this store).
    dir_ready: bool,
    /// Records written, for tests.
    writes: u64,
}

impl LastGoodStore {
    /// A store in `dir`, created (with its missing parents) on the first save.
    pub(crate) fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            dir_ready: false,
            writes: 0,
        }
    }

    #[cfg(test)]
    pub(crate) fn writes(&self) -> u64 {
        self.writes
    }

    /// Every record in the directory (none when it does not exist). Temp files left by an
    /// interrupted save are removed; other names that are not records are left alone.
    pub(crate) fn load(&mut self) -> Loaded {
        let mut loaded = Loaded::default();
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return loaded,
            Err(source) => {
                loaded
                    .errors
                    .push(io_error(&self.dir, "cannot list", source));
                return loaded;
            }
        };
        self.dir_ready = true;
        let mut names = Vec::new();
        for entry in entries {
            match entry {
                Ok(entry) => names.extend(entry.file_name().to_str().map(str::to_string)),
                Err(source) => {
                    loaded
                        .errors
                        .push(io_error(&self.dir, "cannot list", source));
                }
            }
        }
        names.sort();
        for name in names {
            let path = self.dir.join(&name);
            if name.starts_with('.') && name.ends_with(".tmp") {
                if let Err(source) = fs::remove_file(&path) {
                    loaded
                        .errors
                        .push(io_error(&path, "cannot remove leftover temp file", source));
                }
                continue;
            }
            if !is_record_name(&name) {
                continue;
            }
            match read_limited(&path) {
                Ok(bytes) => match decode(&path, &bytes) {
                    Ok(record) => loaded.records.push(record),
                    Err(e) => loaded.errors.push(e),
                },
                Err(e) => loaded.errors.push(e),
            }
        }
        loaded
    }

    /// Saves `pod` as the last good pod of `manifest`, replacing its record atomically.
    pub(crate) fn save(
        &mut self,
        manifest: &Path,
        node_name: &str,
        pod: &Pod,
    ) -> Result<(), LastGoodError> {
        self.ensure_dir()?;
        let name = record_name(manifest);
        let path = self.dir.join(&name);
        let record = Record {
            version: FORMAT_VERSION,
            manifest: manifest.to_path_buf(),
            node_name: node_name.to_string(),
            pod: pod.clone(),
        };
        let bytes = encode(&record, &path)?;
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let written = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut file| {
                file.write_all(&bytes)?;
                file.sync_all()
            });
        if let Err(source) = written {
            // Best effort: a leftover temp file is also removed by the next load.
            let _ = fs::remove_file(&tmp);
            return Err(io_error(&tmp, "cannot write", source));
        }
        if let Err(source) = fs::rename(&tmp, &path) {
            let _ = fs::remove_file(&tmp);
            return Err(io_error(
                &path,
                "cannot rename the temp file into place",
                source,
            ));
        }
        self.writes += 1;
        sync_dir(&self.dir)
    }

    /// Removes the record of `manifest` (no error if there is none).
    pub(crate) fn remove(&mut self, manifest: &Path) -> Result<(), LastGoodError> {
        let path = self.dir.join(record_name(manifest));
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(io_error(&path, "cannot remove", source)),
        }
    }

    /// Creates the directory (and missing parents) once per store; the parent is synced so
    /// the new directory itself survives a crash.
    fn ensure_dir(&mut self) -> Result<(), LastGoodError> {
        if self.dir_ready {
            return Ok(());
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|source| io_error(&self.dir, "cannot create", source))?;
        if let Some(parent) = self.dir.parent() {
            sync_dir(parent)?;
        }
        self.dir_ready = true;
        Ok(())
    }
}

fn io_error(path: &Path, action: &'static str, source: io::Error) -> LastGoodError {
    LastGoodError::Io {
        path: path.to_path_buf(),
        action,
        source,
    }
}

fn read_limited(path: &Path) -> Result<Vec<u8>, LastGoodError> {
    let mut bytes = Vec::new();
    fs::File::open(path)
        .and_then(|f| f.take(MAX_RECORD_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|source| io_error(path, "cannot read", source))?;
    if bytes.len() as u64 > MAX_RECORD_BYTES {
        return Err(LastGoodError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok(bytes)
}

/// fsync of a directory, so a rename or unlink in it survives a crash.
fn sync_dir(dir: &Path) -> Result<(), LastGoodError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| io_error(dir, "cannot fsync the directory", source))
}
