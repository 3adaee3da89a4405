//! inotify on the manifest directory, reduced to "something relevant may have changed".
//!
//! Two watches: the directory itself (file events, and its own deletion or move), and its
//! parent (only to notice the directory being created, recreated, or renamed into place). When
//! the directory is missing, only the parent is watched; when the parent is missing too, the
//! caller retries [`DirWatcher::ensure_watches`] on a timer. If inotify is unavailable, the
//! watcher never reports and the caller's periodic rescan is all there is.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use inotify::{EventMask, EventStream, Inotify, WatchDescriptor, WatchMask};

use super::scan::is_ignored_name;

/// File events in the manifest directory that may change what it holds.
fn dir_mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::CLOSE_WRITE
        | WatchMask::MOVED_TO
        | WatchMask::MOVED_FROM
        | WatchMask::DELETE
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::ATTRIB
        | WatchMask::MODIFY
        | WatchMask::ONLYDIR
}

/// Events in the parent that may (re)create the manifest directory.
fn parent_mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::MOVED_TO
        | WatchMask::MOVED_FROM
        | WatchMask::DELETE
        | WatchMask::ONLYDIR
}

/// What one inotify event means for the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// The directory's content may have changed: rescan.
    Rescan,
    /// Nothing that matters (an ignored file, a sibling of the directory).
    Ignore,
}

pub(crate) struct DirWatcher {
    dir: PathBuf,
    parent: Option<PathBuf>,
    dir_name: Option<OsString>,
    stream: Option<EventStream<Vec<u8>>>,
    dir_wd: Option<WatchDescriptor>,
    parent_wd: Option<WatchDescriptor>,
}

impl std::fmt::Debug for DirWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirWatcher")
            .field("dir", &self.dir)
            .field("inotify", &self.stream.is_some())
            .field("dir_watched", &self.dir_wd.is_some())
            .field("parent_watched", &self.parent_wd.is_some())
            .finish()
    }
}

impl DirWatcher {
    /// Sets up inotify (must run inside a tokio runtime) and tries the watches once.
    pub(crate) fn new(dir: &Path) -> Self {
        let stream = Inotify::init()
            .and_then(|inotify| inotify.into_event_stream(vec![0u8; 16 * 1024]))
            .map_err(|e| {
                tracing::warn!(
                    dir = %dir.display(),
                    error = %e,
                    "inotify unavailable; static pods are picked up by periodic rescans only"
                );
            })
            .ok();
        let mut watcher = Self {
            dir: dir.to_path_buf(),
            parent: dir.parent().map(Path::to_path_buf),
            dir_name: dir.file_name().map(OsString::from),
            stream,
            dir_wd: None,
            parent_wd: None,
        };
        watcher.ensure_watches();
        watcher
    }

    /// Whether the directory itself is watched (if not, the caller retries on a timer).
    pub(crate) fn dir_watched(&self) -> bool {
        self.dir_wd.is_some()
    }

    /// Adds whichever watches are missing. Returns whether the directory is watched.
    pub(crate) fn ensure_watches(&mut self) -> bool {
        let Some(stream) = &self.stream else {
            return false;
        };
        let mut watches = stream.watches();
        if self.parent_wd.is_none()
            && let Some(parent) = &self.parent
        {
            self.parent_wd = watches.add(parent, parent_mask()).ok();
        }
        if self.dir_wd.is_none() {
            self.dir_wd = watches.add(&self.dir, dir_mask()).ok();
        }
        self.dir_wd.is_some()
    }

    /// Drops the directory watch and adds it again (the path may now be another directory).
    fn rewatch_dir(&mut self) {
        if let (Some(stream), Some(wd)) = (&self.stream, self.dir_wd.take()) {
            // The watch may already be gone with its directory; nothing to do then.
            let _ = stream.watches().remove(wd);
        }
        self.ensure_watches();
    }

    /// Waits for the next inotify event and says what it means. Pending forever without
    /// inotify; gives up on inotify (with a warning) if reading it fails.
    pub(crate) async fn next(&mut self) -> Wake {
        let Some(stream) = self.stream.as_mut() else {
            return std::future::pending().await;
        };
        let event = match stream.next().await {
            Some(Ok(event)) => event,
            Some(Err(e)) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "reading inotify failed; falling back to periodic rescans");
                self.drop_inotify();
                return Wake::Rescan;
            }
            None => {
                self.drop_inotify();
                return Wake::Rescan;
            }
        };
        if event.mask.contains(EventMask::Q_OVERFLOW) {
            self.ensure_watches();
            return Wake::Rescan;
        }
        if Some(&event.wd) == self.dir_wd.as_ref() {
            if event.mask.contains(EventMask::IGNORED) {
                self.dir_wd = None;
                self.ensure_watches();
                return Wake::Rescan;
            }
            if event
                .mask
                .intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF)
            {
                self.rewatch_dir();
                return Wake::Rescan;
            }
            let ignored = event
                .name
                .as_ref()
                .and_then(|n| n.to_str())
                .is_some_and(is_ignored_name);
            return if ignored { Wake::Ignore } else { Wake::Rescan };
        }
        if Some(&event.wd) == self.parent_wd.as_ref() {
            if event.mask.contains(EventMask::IGNORED) {
                self.parent_wd = None;
                return Wake::Ignore;
            }
            if event.name.is_some() && event.name == self.dir_name {
                self.rewatch_dir();
                return Wake::Rescan;
            }
        }
        Wake::Ignore
    }

    fn drop_inotify(&mut self) {
        self.stream = None;
        self.dir_wd = None;
        self.parent_wd = None;
    }
}
