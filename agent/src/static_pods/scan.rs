//! One full scan of the manifest directory → a [`StaticPodSnapshot`]. Owns the per-file cache
//! (a file is re-read only when its (size, mtime, ctime, inode) changes), the last good pod of
//! each file, the `config.seen` times, and error logging (once per change of a file's error).
//!
//! Last good pods: while a file is invalid (or unreadable) the pod of its last valid version
//! stays in the snapshot, so a botched edit does not kill a running pod; deleting the file
//! removes it. With a state directory, each file's last good pod is also saved on disk
//! ([`super::last_good`]) whenever it changes and its record removed with the file, and the
//! first scan after a start offers the saved pod for a file found invalid, so the running pod
//! is adopted rather than killed. Without one (unit tests), nothing but the manifest directory
//! is touched.
//!
//! Which names are manifests: every regular file (symlinks followed) except editor and tool
//! droppings: names starting with `.` (as upstream; also vim's `.x.swp`, atomic-write temp
//! files like `.x.tmp`) or `#` (emacs autosave), ending in `~` (backups), `.swp`, `.swx`,
//! `.tmp`, and all-digit names (vim's `4913` write probe). Upstream reads everything except
//! dot-files; skipping the rest avoids transient errors and duplicate pods from backups.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use k8s_openapi::api::core::v1::Pod;

use super::last_good::LastGoodStore;
use super::manifest::{MAX_MANIFEST_BYTES, parse_manifest};
use crate::labels;

/// What the static pod source currently offers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StaticPodSnapshot {
    /// Pods by UID (= `kubernetes.io/config.hash`), with `kubernetes.io/config.seen` set.
    pub pods: BTreeMap<String, Arc<Pod>>,
    /// Current problems by file (or by the directory itself), one message each. A file listed
    /// here may still contribute its last good pod to `pods`.
    pub errors: BTreeMap<PathBuf, String>,
}

/// Whether a directory entry name is skipped (see the module doc).
pub(crate) fn is_ignored_name(name: &str) -> bool {
    name.is_empty()
        || name.starts_with('.')
        || name.starts_with('#')
        || name.ends_with('~')
        || [".swp", ".swx", ".tmp"].iter().any(|s| name.ends_with(s))
        || name.bytes().all(|b| b.is_ascii_digit())
}

/// Identifies one version of a file's content without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Fingerprint {
    fn of(meta: &fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

#[derive(Debug)]
struct FileState {
    fingerprint: Option<Fingerprint>,
    /// The pod of the current content, or why there is none.
    current: Result<Arc<Pod>, String>,
    /// The pod of the last content that was valid (kept while the file is invalid).
    last_good: Option<Arc<Pod>>,
}

/// The scanning state of one manifest directory.
#[derive(Debug)]
pub(crate) struct Scanner {
    dir: PathBuf,
    node_name: String,
    files: BTreeMap<PathBuf, FileState>,
    last: StaticPodSnapshot,
    now: fn() -> SystemTime,
    /// How many files were read and parsed (the cache's misses), for tests and debugging.
    reads: u64,
    /// Where last good pods are saved, if anywhere.
    store: Option<LastGoodStore>,
    /// The UID of each saved record, by manifest path: what is on disk.
    saved: BTreeMap<PathBuf, String>,
    /// Saved pods not yet claimed: offered for files the first scan finds invalid.
    restored: BTreeMap<PathBuf, Arc<Pod>>,
    /// Whether the first scan (which loads the saved records) has run.
    started: bool,
}

impl Scanner {
    /// A scanner for `dir`; last good pods are saved in `state_dir` when given.
    pub(crate) fn new(dir: PathBuf, node_name: String, state_dir: Option<PathBuf>) -> Self {
        Self {
            dir,
            node_name,
            files: BTreeMap::new(),
            last: StaticPodSnapshot::default(),
            now: SystemTime::now,
            reads: 0,
            store: state_dir.map(LastGoodStore::new),
            saved: BTreeMap::new(),
            restored: BTreeMap::new(),
            started: false,
        }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    #[cfg(test)]
    pub(crate) fn reads(&self) -> u64 {
        self.reads
    }

    /// Records written to the state directory so far.
    #[cfg(test)]
    pub(crate) fn writes(&self) -> u64 {
        self.store.as_ref().map_or(0, LastGoodStore::writes)
    }

    #[cfg(test)]
    pub(crate) fn set_clock(&mut self, now: fn() -> SystemTime) {
        self.now = now;
    }

    /// Reads the directory (only changed files), and returns the new snapshot.
    pub(crate) fn scan(&mut self) -> StaticPodSnapshot {
        if !self.started {
            self.started = true;
            self.load_saved();
        }
        let mut dir_error = None;
        match list_dir(&self.dir) {
            Ok(Some(names)) => {
                self.refresh_files(&names);
                self.save_changes();
            }
            Ok(None) => {
                self.files.clear();
                self.save_changes();
                dir_error = Some(format!(
                    "{}: manifest directory does not exist (waiting for it)",
                    self.dir.display()
                ));
            }
            Err(e) => {
                // Keep every file's state: an unreadable directory must not stop running pods.
                // Right after a start that state is empty: take the saved pods instead.
                let message = format!(
                    "{}: cannot list manifest directory: {e}",
                    self.dir.display()
                );
                for (path, pod) in std::mem::take(&mut self.restored) {
                    let error = format!("{}: not read: {message}", path.display());
                    self.files
                        .entry(path)
                        .or_insert_with(|| failed(Some(pod), None, error));
                }
                dir_error = Some(message);
            }
        }
        // Saved pods are offered by the first scan only; later, memory is the truth.
        self.restored.clear();
        let mut next = self.assemble();
        if let Some(message) = dir_error {
            next.errors.insert(self.dir.clone(), message);
        }
        log_changes(&self.last, &next);
        self.last = next.clone();
        next
    }

    fn refresh_files(&mut self, names: &[String]) {
        let mut present = BTreeMap::new();
        for name in names {
            let path = self.dir.join(name);
            let meta = match fs::metadata(&path) {
                Ok(meta) if meta.is_file() => meta,
                // Directories, sockets, dangling symlinks, files gone since the listing.
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    let error = format!("{}: cannot stat: {e}", path.display());
                    let last_good = self.last_good_of(&path);
                    present.insert(path, failed(last_good, None, error));
                    continue;
                }
            };
            let fingerprint = Fingerprint::of(&meta);
            let state = match self.files.remove(&path) {
                Some(state) if state.fingerprint.as_ref() == Some(&fingerprint) => {
                    present.insert(path, state);
                    continue;
                }
                other => other,
            };
            match self.read_and_parse(&path, meta.size()) {
                Ok(Some(pod)) => {
                    let pod = Arc::new(pod);
                    let state = FileState {
                        fingerprint: Some(fingerprint),
                        current: Ok(pod.clone()),
                        last_good: Some(pod),
                    };
                    present.insert(path, state);
                }
                Ok(None) => {}
                Err(error) => {
                    let last_good = match state {
                        Some(state) => state.last_good,
                        None => self.restore(&path),
                    };
                    present.insert(path, failed(last_good, Some(fingerprint), error));
                }
            }
        }
        self.files = present;
    }

    /// The last good pod of `path`, taking its state out of `self.files`: from memory, or
    /// (first scan) as saved before the start.
    fn last_good_of(&mut self, path: &Path) -> Option<Arc<Pod>> {
        match self.files.remove(path) {
            Some(state) => state.last_good,
            None => self.restore(path),
        }
    }

    /// The saved pod of `path` (first scan only), logged as restored.
    fn restore(&mut self, path: &Path) -> Option<Arc<Pod>> {
        let pod = self.restored.remove(path)?;
        tracing::info!(
            file = %path.display(),
            uid = %pod.metadata.uid.as_deref().unwrap_or_default(),
            "static pod manifest is not valid; offering its last valid version saved before the restart"
        );
        Some(pod)
    }

    /// Reads the saved records (first scan): all are remembered as on disk, those of this
    /// node's files in the manifest directory can be restored. Unreadable records are logged
    /// and left alone.
    fn load_saved(&mut self) {
        let Some(store) = self.store.as_mut() else {
            return;
        };
        let loaded = store.load();
        for error in &loaded.errors {
            tracing::warn!(error = %error, "ignoring a saved last valid static pod");
        }
        for record in loaded.records {
            self.saved
                .insert(record.manifest.clone(), record.uid().to_string());
            if record.node_name != self.node_name {
                tracing::warn!(
                    file = %record.manifest.display(),
                    saved_for = %record.node_name,
                    node = %self.node_name,
                    "ignoring the last valid static pod saved for another node name"
                );
                continue;
            }
            if record.manifest.parent() == Some(self.dir.as_path()) {
                self.restored.insert(record.manifest, Arc::new(record.pod));
            }
        }
    }

    /// Brings the saved records in line with the files just scanned: a record for each file
    /// whose last good pod changed, none for files that are gone. Failures are logged and
    /// retried by the next scan.
    fn save_changes(&mut self) {
        let Some(store) = self.store.as_mut() else {
            return;
        };
        for (path, state) in &self.files {
            let Some(pod) = &state.last_good else {
                continue;
            };
            let uid = pod.metadata.uid.as_deref().unwrap_or_default();
            if self.saved.get(path).map(String::as_str) == Some(uid) {
                continue;
            }
            match store.save(path, &self.node_name, pod) {
                Ok(()) => {
                    self.saved.insert(path.clone(), uid.to_string());
                }
                Err(error) => tracing::warn!(
                    file = %path.display(),
                    error = %error,
                    "cannot save the last valid static pod; a restart while the file is invalid would stop the pod"
                ),
            }
        }
        let gone: Vec<PathBuf> = self
            .saved
            .keys()
            .filter(|path| !self.files.contains_key(*path))
            .cloned()
            .collect();
        for path in gone {
            match store.remove(&path) {
                Ok(()) => {
                    self.saved.remove(&path);
                }
                Err(error) => tracing::warn!(
                    file = %path.display(),
                    error = %error,
                    "cannot remove the saved last valid static pod of a deleted manifest"
                ),
            }
        }
    }

    /// `Ok(None)` when the file vanished before it could be read.
    fn read_and_parse(&mut self, path: &Path, size: u64) -> Result<Option<Pod>, String> {
        if size > MAX_MANIFEST_BYTES as u64 {
            return Err(format!(
                "{}: file is {size} bytes, more than the {MAX_MANIFEST_BYTES} bytes a manifest \
                 may have",
                path.display()
            ));
        }
        self.reads += 1;
        let mut bytes = Vec::new();
        let read = fs::File::open(path).and_then(|f| {
            // One byte more than allowed, so a file that grew since the stat is still caught.
            f.take(MAX_MANIFEST_BYTES as u64 + 1)
                .read_to_end(&mut bytes)
        });
        match read {
            Ok(_) => parse_manifest(path, &bytes, &self.node_name)
                .map(Some)
                .map_err(|e| e.to_string()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: cannot read: {e}", path.display())),
        }
    }

    /// Builds the snapshot from the file states: lexical file order decides duplicates.
    fn assemble(&self) -> StaticPodSnapshot {
        let mut snapshot = StaticPodSnapshot::default();
        let mut owners: BTreeMap<(String, String), &Path> = BTreeMap::new();
        for (path, state) in &self.files {
            let pod = match &state.current {
                Ok(pod) => Some(pod),
                Err(error) => {
                    let message = match &state.last_good {
                        Some(good) => format!(
                            "{error} (keeping the last valid version, pod UID {})",
                            good.metadata.uid.as_deref().unwrap_or_default()
                        ),
                        None => error.clone(),
                    };
                    snapshot.errors.insert(path.clone(), message);
                    state.last_good.as_ref()
                }
            };
            let Some(pod) = pod else { continue };
            let key = (
                pod.metadata.namespace.clone().unwrap_or_default(),
                pod.metadata.name.clone().unwrap_or_default(),
            );
            if let Some(owner) = owners.get(&key) {
                let message = format!(
                    "{}: pod {}/{} is already defined by {}; this file is ignored",
                    path.display(),
                    key.0,
                    key.1,
                    owner.display()
                );
                snapshot
                    .errors
                    .entry(path.clone())
                    .and_modify(|m| {
                        m.push_str("; ");
                        m.push_str(&message);
                    })
                    .or_insert(message);
                continue;
            }
            owners.insert(key, path);
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            let published = match self.last.pods.get(&uid) {
                // Same UID means same content: keep the pod (and its config.seen) as it was.
                Some(existing) => existing.clone(),
                None => Arc::new(with_seen(pod, (self.now)())),
            };
            snapshot.pods.insert(uid, published);
        }
        snapshot
    }
}

fn failed(
    last_good: Option<Arc<Pod>>,
    fingerprint: Option<Fingerprint>,
    error: String,
) -> FileState {
    FileState {
        fingerprint,
        current: Err(error),
        last_good,
    }
}

/// The sorted entry names of `dir`, or `None` when it does not exist.
fn list_dir(dir: &Path) -> io::Result<Option<Vec<String>>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry?;
        // Non-UTF-8 names cannot be manifests kwk writes or documents; skip them.
        if let Some(name) = entry.file_name().to_str().filter(|n| !is_ignored_name(n)) {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(Some(names))
}

fn with_seen(pod: &Pod, now: SystemTime) -> Pod {
    let mut pod = pod.clone();
    pod.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(labels::CONFIG_SEEN.to_string(), format_rfc3339(now));
    pod
}

/// RFC 3339 in UTC with nanoseconds, trailing zeros trimmed (Go's `RFC3339Nano`).
pub(crate) fn format_rfc3339(time: SystemTime) -> String {
    let nanos = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    crate::clock::timestamp(nanos).to_string()
}

/// Logs what changed between two snapshots: each new or changed error once, each fix once,
/// each pod added or removed.
fn log_changes(before: &StaticPodSnapshot, after: &StaticPodSnapshot) {
    for (path, message) in new_errors(before, after) {
        tracing::error!(file = %path.display(), "static pod manifest: {message}");
    }
    for path in before.errors.keys() {
        if !after.errors.contains_key(path) {
            tracing::info!(file = %path.display(), "static pod manifest: problem resolved");
        }
    }
    for (uid, pod) in &after.pods {
        if !before.pods.contains_key(uid) {
            tracing::info!(
                pod = %pod_ref(pod),
                uid = %uid,
                "static pod added"
            );
        }
    }
    for (uid, pod) in &before.pods {
        if !after.pods.contains_key(uid) {
            tracing::info!(pod = %pod_ref(pod), uid = %uid, "static pod removed");
        }
    }
}

/// The errors of `after` that `before` did not have (new files, or a changed message).
pub(crate) fn new_errors<'a>(
    before: &StaticPodSnapshot,
    after: &'a StaticPodSnapshot,
) -> Vec<(&'a Path, &'a str)> {
    after
        .errors
        .iter()
        .filter(|(path, message)| before.errors.get(*path) != Some(*message))
        .map(|(path, message)| (path.as_path(), message.as_str()))
        .collect()
}

fn pod_ref(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}
