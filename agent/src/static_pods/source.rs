//! [`StaticPodSource`]: the loop that keeps a [`StaticPodSnapshot`] of the manifest directory
//! current. It rescans the whole directory (only changed files are re-read) after any relevant
//! inotify event (debounced by [`DEBOUNCE`]), every `rescan` period, and every
//! [`RETRY_WATCH`] while the directory is not watched (missing, or no inotify). Snapshots are
//! published only when they change; the first one always, so a receiver's first `changed()`
//! means "the directory has been read".

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{self, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::scan::{Scanner, StaticPodSnapshot};
use super::watch::{DirWatcher, Wake};

/// How long to gather more events after the first one before rescanning. Editors and atomic
/// writers produce bursts (write temp, rename; vim's backup + new file); one scan after the
/// burst sees only the final version. Short, because it adds to every static pod start.
pub(crate) const DEBOUNCE: Duration = Duration::from_millis(10);

/// How often to retry watching a missing directory (and rescan it).
pub(crate) const RETRY_WATCH: Duration = Duration::from_secs(1);

/// The static pod source for one manifest directory.
#[derive(Debug)]
pub struct StaticPodSource {
    scanner: Scanner,
    node_name: String,
    rescan: Duration,
    state_dir: Option<PathBuf>,
}

impl StaticPodSource {
    /// A source for `dir` (which need not exist yet, and is never created) on node
    /// `node_name`, rescanning at least every `rescan` (the kubelet's `fileCheckFrequency`).
    /// Last good pods are kept in memory only; see [`StaticPodSource::with_state_dir`].
    pub fn new(dir: PathBuf, node_name: String, rescan: Duration) -> Self {
        Self {
            scanner: Scanner::new(dir, node_name.clone(), None),
            node_name,
            rescan: rescan.max(Duration::from_millis(100)),
            state_dir: None,
        }
    }

    /// Saves each manifest's last good pod in `state_dir` (created when first needed), so that
    /// a manifest that is invalid when kwk-node starts still gives the pod it gave before.
    /// Call before the first scan.
    #[must_use]
    pub fn with_state_dir(self, state_dir: PathBuf) -> Self {
        let dir = self.scanner.dir().to_path_buf();
        Self {
            scanner: Scanner::new(dir, self.node_name.clone(), Some(state_dir.clone())),
            state_dir: Some(state_dir),
            ..self
        }
    }

    /// Scans the directory once, synchronously (blocking file I/O), and returns the snapshot.
    pub fn scan_once(&mut self) -> StaticPodSnapshot {
        self.scanner.scan()
    }

    #[cfg(test)]
    pub(crate) fn scanner_mut(&mut self) -> &mut Scanner {
        &mut self.scanner
    }

    /// Watches and rescans until `cancel`, publishing each changed snapshot on `tx`.
    pub async fn run(self, tx: watch::Sender<StaticPodSnapshot>, cancel: CancellationToken) {
        let Self {
            mut scanner,
            node_name,
            rescan,
            state_dir,
        } = self;
        // Watch first, then scan: a change made between the two is seen by the scan or
        // reported by inotify, never lost.
        let mut watcher = DirWatcher::new(scanner.dir());
        let mut first = true;
        let mut rescan_tick = time::interval_at(Instant::now() + rescan, rescan);
        rescan_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut retry_tick = time::interval_at(Instant::now() + RETRY_WATCH, RETRY_WATCH);
        retry_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);

        loop {
            let dir = scanner.dir().to_path_buf();
            let (next, snapshot) = match scan_off_thread(scanner).await {
                Ok(done) => done,
                Err(e) => {
                    // A panic in a scan is a bug; keep serving with a fresh scanner rather than
                    // stopping the source. It restores last good pods of invalid files from the
                    // state directory if there is one, and loses them otherwise.
                    tracing::error!(dir = %dir.display(), error = %e, "static pod scan panicked");
                    let mut fresh = Scanner::new(dir, node_name.clone(), state_dir.clone());
                    let snapshot = fresh.scan();
                    (fresh, snapshot)
                }
            };
            scanner = next;
            publish(&tx, snapshot, first);
            first = false;

            // Wait for a reason to scan again.
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    wake = watcher.next() => {
                        if wake == Wake::Rescan {
                            if debounce(&mut watcher, &cancel).await.is_break() {
                                return;
                            }
                            break;
                        }
                    }
                    _ = rescan_tick.tick() => break,
                    _ = retry_tick.tick(), if !watcher.dir_watched() => {
                        watcher.ensure_watches();
                        break;
                    }
                }
            }
        }
    }
}

/// Swallows further events for [`DEBOUNCE`] (bounded: a stream of events cannot delay the
/// scan beyond it). Breaks on cancellation.
async fn debounce(
    watcher: &mut DirWatcher,
    cancel: &CancellationToken,
) -> std::ops::ControlFlow<()> {
    let deadline = Instant::now() + DEBOUNCE;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return std::ops::ControlFlow::Break(()),
            () = time::sleep_until(deadline) => return std::ops::ControlFlow::Continue(()),
            _ = watcher.next() => {}
        }
    }
}

async fn scan_off_thread(
    mut scanner: Scanner,
) -> Result<(Scanner, StaticPodSnapshot), tokio::task::JoinError> {
    tokio::task::spawn_blocking(move || {
        let snapshot = scanner.scan();
        (scanner, snapshot)
    })
    .await
}

fn publish(tx: &watch::Sender<StaticPodSnapshot>, snapshot: StaticPodSnapshot, always: bool) {
    if always {
        tx.send_replace(snapshot);
    } else {
        tx.send_if_modified(|current| {
            if *current == snapshot {
                false
            } else {
                *current = snapshot;
                true
            }
        });
    }
}
