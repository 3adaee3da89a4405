//! Deterministic layer tarballs: sorted paths, owner 0:0, mtime 0, no host metadata.

use std::collections::BTreeMap;
use std::path::Path;

use crate::BuildError;
use crate::spec::{Entry, EntryKind, FileSource};

/// A validated, sorted, parent-complete view of a spec's entries, keyed by relative path
/// (`bin/sh`, no leading slash).
pub(crate) type Tree = BTreeMap<String, EntryKind>;

/// Normalises entry paths, rejects duplicates and escapes, and adds missing parent directories.
pub(crate) fn tree(entries: &[Entry]) -> Result<Tree, BuildError> {
    let mut tree = Tree::new();
    for entry in entries {
        let rel = normalise(&entry.path)?;
        if tree.insert(rel.clone(), entry.kind.clone()).is_some() {
            return Err(BuildError::DuplicatePath {
                path: entry.path.clone(),
            });
        }
    }
    let explicit: Vec<String> = tree.keys().cloned().collect();
    for rel in explicit {
        let mut parent = Path::new(&rel).parent();
        while let Some(dir) = parent.filter(|p| !p.as_os_str().is_empty()) {
            let key = dir.to_string_lossy().into_owned();
            match tree.get(&key) {
                None => {
                    tree.insert(key, EntryKind::Dir { mode: 0o755 });
                }
                Some(EntryKind::Dir { .. }) => {}
                Some(_) => {
                    return Err(BuildError::ParentNotDir {
                        path: format!("/{rel}"),
                    });
                }
            }
            parent = dir.parent();
        }
    }
    Ok(tree)
}

/// `/usr/bin/x` → `usr/bin/x`; rejects empty, relative, `.`/`..` components.
fn normalise(path: &str) -> Result<String, BuildError> {
    let invalid = || BuildError::InvalidPath {
        path: path.to_owned(),
    };
    let rest = path.strip_prefix('/').ok_or_else(invalid)?;
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() || parts.iter().any(|p| *p == "." || *p == "..") {
        return Err(invalid());
    }
    Ok(parts.join("/"))
}

/// Writes `tree` as an uncompressed tar. Directories get a trailing slash, as tar tools expect.
pub(crate) fn tar(tree: &Tree) -> Result<Vec<u8>, BuildError> {
    let mut builder = tar::Builder::new(Vec::new());
    for (rel, kind) in tree {
        let mut header = tar::Header::new_ustar();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        let written = match kind {
            EntryKind::Dir { mode } => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(*mode);
                header.set_size(0);
                builder.append_data(&mut header, format!("{rel}/"), std::io::empty())
            }
            EntryKind::File { source, mode } => {
                let contents = read_source(source)?;
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_size(contents.len() as u64);
                builder.append_data(&mut header, rel, contents.as_slice())
            }
            EntryKind::Symlink { target } => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                builder.append_link(&mut header, rel, target)
            }
        };
        written.map_err(|source| BuildError::Tar {
            path: format!("/{rel}"),
            source,
        })?;
    }
    builder.into_inner().map_err(|source| BuildError::Tar {
        path: String::new(),
        source,
    })
}

fn read_source(source: &FileSource) -> Result<Vec<u8>, BuildError> {
    match source {
        FileSource::Bytes(bytes) => Ok(bytes.clone()),
        FileSource::Path(path) => std::fs::read(path).map_err(|source| BuildError::ReadSource {
            path: path.clone(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(tar_bytes: &[u8]) -> Vec<(String, u32, u64)> {
        let mut archive = tar::Archive::new(tar_bytes);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    h.mode().unwrap(),
                    h.mtime().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn parents_are_added_and_paths_sorted() {
        let entries = vec![
            Entry::symlink("/bin/sh", "busybox"),
            Entry::file("/bin/busybox", FileSource::Bytes(b"x".to_vec()), 0o755),
            Entry::dir("/tmp", 0o1777),
            Entry::file("/etc/passwd", FileSource::Bytes(b"root".to_vec()), 0o644),
        ];
        let bytes = tar(&tree(&entries).unwrap()).unwrap();
        let got = names(&bytes);
        let paths: Vec<&str> = got.iter().map(|(p, _, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "bin/",
                "bin/busybox",
                "bin/sh",
                "etc/",
                "etc/passwd",
                "tmp/"
            ]
        );
        assert_eq!(got[5].1, 0o1777);
        assert!(got.iter().all(|(_, _, mtime)| *mtime == 0));
    }

    #[test]
    fn entry_order_does_not_change_bytes() {
        let a = vec![
            Entry::file("/a", FileSource::Bytes(b"1".to_vec()), 0o644),
            Entry::file("/b/c", FileSource::Bytes(b"2".to_vec()), 0o600),
        ];
        let mut b = a.clone();
        b.reverse();
        assert_eq!(
            tar(&tree(&a).unwrap()).unwrap(),
            tar(&tree(&b).unwrap()).unwrap()
        );
    }

    #[test]
    fn bad_paths_are_rejected() {
        for bad in ["", "relative", "/", "/a/../b", "/./a"] {
            let entries = vec![Entry::dir(bad, 0o755)];
            assert!(
                matches!(tree(&entries), Err(BuildError::InvalidPath { .. })),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn duplicates_and_file_parents_are_rejected() {
        let dup = vec![Entry::dir("/a", 0o755), Entry::dir("/a/", 0o700)];
        assert!(matches!(tree(&dup), Err(BuildError::DuplicatePath { .. })));
        let file_parent = vec![
            Entry::file("/a", FileSource::Bytes(vec![]), 0o644),
            Entry::file("/a/b", FileSource::Bytes(vec![]), 0o644),
        ];
        assert!(matches!(
            tree(&file_parent),
            Err(BuildError::ParentNotDir { .. })
        ));
    }

    #[test]
    fn missing_source_names_the_path() {
        let entries = vec![Entry::file(
            "/x",
            FileSource::Path("/nonexistent/kwk-test".into()),
            0o644,
        )];
        let err = tar(&tree(&entries).unwrap()).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/kwk-test"), "{err}");
    }
}
