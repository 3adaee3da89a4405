//! What an image is made of: its name, the files in its single layer, and how it runs.
//!
//! A spec is plain data; building it (see [`crate::build`]) is deterministic, so the same spec
//! over the same file contents always yields the same manifest digest.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// An image to build: one layer holding `entries`, plus its runtime configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    /// Repository without tag, e.g. `localhost/kwk/pause`.
    pub repository: String,
    /// Tag, e.g. `3.10`.
    pub tag: String,
    /// Files, directories and symlinks of the root filesystem. Missing parent directories are
    /// added with mode 0755; order does not matter (entries are sorted by path).
    pub entries: Vec<Entry>,
    /// How a container of this image runs.
    pub run: RunConfig,
}

impl ImageSpec {
    /// The full reference, `repository:tag`.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.repository, self.tag)
    }
}

/// One path in the image's root filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Absolute path inside the image, e.g. `/bin/sh`.
    pub path: String,
    pub kind: EntryKind,
}

/// What lives at an [`Entry`]'s path. Owner is always root (0:0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File { source: FileSource, mode: u32 },
    Dir { mode: u32 },
    Symlink { target: String },
}

/// Where a file's contents come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileSource {
    /// Read from this host path at build time.
    Path(PathBuf),
    /// These bytes.
    Bytes(Vec<u8>),
}

impl Entry {
    pub fn file(path: impl Into<String>, source: FileSource, mode: u32) -> Self {
        Self {
            path: path.into(),
            kind: EntryKind::File { source, mode },
        }
    }

    pub fn dir(path: impl Into<String>, mode: u32) -> Self {
        Self {
            path: path.into(),
            kind: EntryKind::Dir { mode },
        }
    }

    pub fn symlink(path: impl Into<String>, target: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            kind: EntryKind::Symlink {
                target: target.into(),
            },
        }
    }
}

/// The OCI image config's `config` section: how the container process starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `NAME=value` pairs, in order.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub labels: BTreeMap<String, String>,
}
