//! Kernel wake-ups for memory pressure, so the eviction manager acts within milliseconds of a
//! breach instead of at its next 10 s housekeeping (which stays, as the fallback).
//!
//! - cgroup v1: memory cgroup threshold notifications (upstream's `memcgThresholdNotifier`):
//!   an eventfd registered through `cgroup.event_control` on `memory.usage_in_bytes` of the
//!   pods cgroup (`kubepods`) and of the root memory cgroup. The kernel signals it whenever
//!   usage crosses the threshold, either way. The threshold is the usage at which
//!   `memory.available` reaches the eviction threshold: `usage now + (available now −
//!   threshold)`, re-armed after every decision. Both are needed: the pods cgroup's usage is an
//!   exact page counter (pods are what grows, and what is evicted), while the root's is
//!   computed from statistics the kernel flushes only every ~2 s (measured: 2.5 s and missed
//!   crossings with the root alone), but it also sees memory used outside the pods.
//! - cgroup v2 (no usage thresholds there): a PSI trigger on `memory.pressure` of the node's
//!   pods cgroup (or `/proc/pressure/memory`), woken with `POLLPRI` when tasks stall on memory
//!   for 100 ms within a second: reclaim has started, available memory is low.
//!
//! - Under both, a watch reads `memory.available` ([`NodeMemorySource`]) every
//!   [`WATCH_PERIOD`] and wakes the manager when it falls below the threshold (once per fall).
//!   The kernel's notifications do not cover every case: the root memory cgroup's usage
//!   threshold fires only at its ~2 s statistics flush (reading `memory.stat`, as the watch
//!   does, flushes them), and PSI fires only once tasks stall. The watch bounds those cases to
//!   a quarter of a second for the price of a few small reads a second; the 10 s housekeeping
//!   stays behind it.
//!
//! Each armed notifier has one blocking thread (`read` on the eventfd, or `poll`) that pokes a
//! [`Notify`]; re-arming stops the old thread through a second eventfd and drops its
//! registration (closing the eventfd unregisters it). Everything here is safe Rust over `nix`.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::eventfd::{EfdFlags, EventFd};
use tokio::sync::Notify;

use crate::cgroups::node_memory::NodeMemorySource;

/// Why a notifier could not be armed (the poll fallback still runs).
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("cannot create an eventfd")]
    EventFd(#[source] nix::Error),
    #[error("{}: cannot open", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: cannot register the notification", path.display())]
    Register {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the notifier thread")]
    Thread(#[source] std::io::Error),
}

/// Which kernel mechanism wakes the manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mechanism {
    /// cgroup v1: the memory cgroup directories whose usage is watched (pods, root).
    MemcgThreshold(Vec<PathBuf>),
    /// cgroup v2: the `memory.pressure` (PSI) file a trigger is put on.
    Psi(PathBuf),
}

impl Mechanism {
    /// The mechanism for the cgroup filesystem at `mount_root`: v1 when it has a memory
    /// hierarchy, else v2's PSI on `pods_cgroup` (relative to the mount root), else the host's
    /// `/proc/pressure/memory`. `None` when none exists.
    pub fn detect(mount_root: &Path, pods_cgroup: &str) -> Option<Self> {
        let v1 = mount_root.join("memory");
        if v1.join("cgroup.event_control").exists() {
            let pods = v1.join(pods_cgroup.trim_start_matches('/'));
            let dirs = if pods != v1 && pods.join("cgroup.event_control").exists() {
                vec![pods, v1]
            } else {
                vec![v1]
            };
            return Some(Self::MemcgThreshold(dirs));
        }
        let pods = mount_root
            .join(pods_cgroup.trim_start_matches('/'))
            .join("memory.pressure");
        if pods.exists() {
            return Some(Self::Psi(pods));
        }
        let host = PathBuf::from("/proc/pressure/memory");
        host.exists().then_some(Self::Psi(host))
    }
}

/// A running notifier thread and how to stop it.
#[derive(Debug)]
struct Armed {
    stop: Arc<AtomicBool>,
    stop_fd: Arc<EventFd>,
    /// The usage threshold (v1).
    threshold: u64,
    /// Whether usage was below the threshold when armed, i.e. the crossing it waits for is
    /// upward (v1).
    rising: bool,
}

impl Drop for Armed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.stop_fd.write(1);
    }
}

/// Wakes `wake` on memory pressure events; see the module docs.
#[derive(Debug)]
pub struct MemoryNotifier {
    mechanism: Mechanism,
    wake: Arc<Notify>,
    /// One per watched cgroup (v1) or the PSI trigger (v2).
    armed: Vec<Option<Armed>>,
    /// Where the watch reads `memory.available`.
    memory: NodeMemorySource,
    /// The `memory.available` watch, started by the first arming.
    watch: Option<Watch>,
}

/// How often the watch reads `memory.available`.
pub const WATCH_PERIOD: Duration = Duration::from_millis(250);

/// Tells when a figure falls below a threshold: once per fall, like a kernel threshold.
#[derive(Debug, Default)]
pub struct FallDetector {
    below: bool,
}

impl FallDetector {
    /// Whether `available` is a new fall below `threshold`.
    pub fn fell(&mut self, available: u64, threshold: u64) -> bool {
        let below = available < threshold;
        let fell = below && !self.below;
        self.below = below;
        fell
    }
}

/// The running `memory.available` watch: its threshold and how to stop it.
#[derive(Debug)]
struct Watch {
    stop: Arc<AtomicBool>,
    threshold: Arc<AtomicU64>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn start_watch(
    memory: NodeMemorySource,
    threshold: u64,
    wake: Arc<Notify>,
) -> Result<Watch, NotifyError> {
    let stop = Arc::new(AtomicBool::new(false));
    let shared_threshold = Arc::new(AtomicU64::new(threshold));
    let (thread_stop, thread_threshold) = (stop.clone(), shared_threshold.clone());
    std::thread::Builder::new()
        .name("kwk-memory-watch".into())
        .spawn(move || {
            let mut detector = FallDetector::default();
            while !thread_stop.load(Ordering::SeqCst) {
                #[allow(
                    clippy::disallowed_methods,
                    reason = "a dedicated blocking thread, outside the runtime"
                )]
                std::thread::sleep(WATCH_PERIOD);
                if let Some(available) = memory.read().map(|m| m.available())
                    && detector.fell(available, thread_threshold.load(Ordering::SeqCst))
                {
                    wake.notify_one();
                }
            }
        })
        .map_err(NotifyError::Thread)?;
    Ok(Watch {
        stop,
        threshold: shared_threshold,
    })
}

/// Re-arming for a threshold closer than this to the armed one is skipped.
const REARM_SLACK: u64 = 4 << 20;
/// PSI trigger: 100 ms of "some" stall within a 1 s window.
const PSI_TRIGGER: &str = "some 100000 1000000";

impl MemoryNotifier {
    pub fn new(mechanism: Mechanism, memory: NodeMemorySource, wake: Arc<Notify>) -> Self {
        Self {
            mechanism,
            wake,
            armed: Vec::new(),
            memory,
            watch: None,
        }
    }

    pub fn mechanism(&self) -> &Mechanism {
        &self.mechanism
    }

    /// The watched cgroup's memory usage now (v1: `memory.usage_in_bytes`).
    pub fn usage(&self) -> Option<u64> {
        match &self.mechanism {
            Mechanism::MemcgThreshold(dirs) => usage_of(dirs.first()?),
            Mechanism::Psi(_) => None,
        }
    }

    /// Arms (or re-arms) the notifier so that `memory.available` falling to `threshold` bytes
    /// wakes the manager, given `available` bytes now. v2's PSI trigger is armed once.
    pub fn arm(&mut self, available: u64, threshold: u64) -> Result<(), NotifyError> {
        match &self.watch {
            Some(watch) => watch.threshold.store(threshold, Ordering::SeqCst),
            None => {
                let memory = self.memory.clone();
                self.watch = Some(start_watch(memory, threshold, self.wake.clone())?);
            }
        }
        match self.mechanism.clone() {
            Mechanism::MemcgThreshold(dirs) => {
                self.armed.resize_with(dirs.len(), || None);
                for (dir, armed) in dirs.iter().zip(self.armed.iter_mut()) {
                    let Some(usage) = usage_of(dir) else {
                        return Err(NotifyError::Open {
                            path: dir.join("memory.usage_in_bytes"),
                            source: std::io::Error::from(std::io::ErrorKind::NotFound),
                        });
                    };
                    let target = usage_threshold(usage, available, threshold);
                    let current = armed.as_ref().map(|a| (a.threshold, a.rising));
                    if !needs_rearm(current, usage, target) {
                        continue;
                    }
                    *armed = None;
                    *armed = Some(arm_memcg(dir, target, usage < target, self.wake.clone())?);
                    tracing::debug!(dir = %dir.display(), usage, target, "memory cgroup threshold armed");
                }
                Ok(())
            }
            Mechanism::Psi(path) => {
                if self.armed.is_empty() {
                    self.armed = vec![Some(arm_psi(&path, self.wake.clone())?)];
                    tracing::debug!(path = %path.display(), "PSI memory trigger armed");
                }
                Ok(())
            }
        }
    }
}

/// Whether a notifier armed at `current` (threshold, waiting for an upward crossing) must be
/// replaced to wait for `target`, given `usage` now. A threshold already crossed never fires
/// in the awaited direction again, so it is replaced even when the new target is close (the
/// signal leaves inactive page cache out and the pods cgroup's usage does not, so a wake-up
/// can come a few MiB before the signal crosses; keeping the crossed threshold would then
/// miss the real crossing until the next poll). An uncrossed threshold within
/// [`REARM_SLACK`] is kept.
pub fn needs_rearm(current: Option<(u64, bool)>, usage: u64, target: u64) -> bool {
    let Some((threshold, rising)) = current else {
        return true;
    };
    let crossed = if rising {
        usage >= threshold
    } else {
        usage < threshold
    };
    let same_direction = rising == (usage < target);
    crossed || !same_direction || threshold.abs_diff(target) >= REARM_SLACK
}

fn usage_of(dir: &Path) -> Option<u64> {
    std::fs::read_to_string(dir.join("memory.usage_in_bytes"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The usage at which available memory falls to `threshold`: usage grows as available
/// shrinks (upstream: capacity − threshold + inactive file, the same under its definition of
/// available).
pub fn usage_threshold(usage: u64, available: u64, threshold: u64) -> u64 {
    if available >= threshold {
        usage.saturating_add(available - threshold)
    } else {
        // Already below: notified when usage falls back past the point of recovery.
        usage.saturating_sub(threshold - available)
    }
}

fn arm_memcg(
    dir: &Path,
    threshold: u64,
    rising: bool,
    wake: Arc<Notify>,
) -> Result<Armed, NotifyError> {
    let event = Arc::new(EventFd::from_flags(EfdFlags::EFD_CLOEXEC).map_err(NotifyError::EventFd)?);
    let usage_path = dir.join("memory.usage_in_bytes");
    let usage = File::open(&usage_path).map_err(|source| NotifyError::Open {
        path: usage_path,
        source,
    })?;
    let control = dir.join("cgroup.event_control");
    let line = format!(
        "{} {} {threshold}",
        event.as_fd().as_raw_fd(),
        usage.as_raw_fd()
    );
    OpenOptions::new()
        .write(true)
        .open(&control)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .map_err(|source| NotifyError::Register {
            path: control,
            source,
        })?;
    let stop = Arc::new(AtomicBool::new(false));
    let thread_stop = stop.clone();
    let thread_event = event.clone();
    std::thread::Builder::new()
        .name("kwk-memcg-notify".into())
        .spawn(move || {
            let _usage = usage;
            loop {
                match thread_event.read() {
                    Ok(_) if thread_stop.load(Ordering::SeqCst) => break,
                    Ok(_) => wake.notify_one(),
                    Err(nix::Error::EINTR) => {}
                    Err(_) => break,
                }
            }
        })
        .map_err(NotifyError::Thread)?;
    // The stop signal goes through the same eventfd: the thread sees the flag after reading.
    Ok(Armed {
        stop,
        stop_fd: event,
        threshold,
        rising,
    })
}

fn arm_psi(path: &Path, wake: Arc<Notify>) -> Result<Armed, NotifyError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|source| NotifyError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    file.write_all(PSI_TRIGGER.as_bytes())
        .map_err(|source| NotifyError::Register {
            path: path.to_path_buf(),
            source,
        })?;
    let stop_fd =
        Arc::new(EventFd::from_flags(EfdFlags::EFD_CLOEXEC).map_err(NotifyError::EventFd)?);
    let stop = Arc::new(AtomicBool::new(false));
    let thread_stop = stop.clone();
    let thread_fd = stop_fd.clone();
    std::thread::Builder::new()
        .name("kwk-psi-notify".into())
        .spawn(move || {
            loop {
                let mut fds = [
                    PollFd::new(file.as_fd(), PollFlags::POLLPRI),
                    PollFd::new(thread_fd.as_fd(), PollFlags::POLLIN),
                ];
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) => {}
                    Err(nix::Error::EINTR) => continue,
                    Err(_) => break,
                }
                if thread_stop.load(Ordering::SeqCst) {
                    break;
                }
                let revents = fds[0].revents().unwrap_or(PollFlags::empty());
                if revents.contains(PollFlags::POLLERR) {
                    break;
                }
                if revents.contains(PollFlags::POLLPRI) {
                    wake.notify_one();
                    // One wake-up per window at most: the trigger fires again next window.
                    #[allow(
                        clippy::disallowed_methods,
                        reason = "a dedicated blocking thread, outside the runtime"
                    )]
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            }
        })
        .map_err(NotifyError::Thread)?;
    Ok(Armed {
        stop,
        stop_fd,
        threshold: 0,
        rising: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_threshold_follows_available() {
        const MI: u64 = 1 << 20;
        assert_eq!(usage_threshold(1000 * MI, 600 * MI, 100 * MI), 1500 * MI);
        assert_eq!(usage_threshold(1000 * MI, 50 * MI, 100 * MI), 950 * MI);
        assert_eq!(usage_threshold(10, 0, 100), 0);
    }

    #[test]
    fn a_fall_below_the_threshold_is_told_once() {
        let mut detector = FallDetector::default();
        // (available, threshold, told)
        let steps = [
            (500, 100, false),
            (99, 100, true),
            (50, 100, false),
            (150, 100, false),
            (90, 100, true),
            (90, 80, false),
            (70, 80, true),
        ];
        for (i, (available, threshold, told)) in steps.into_iter().enumerate() {
            assert_eq!(detector.fell(available, threshold), told, "step {i}");
        }
    }

    #[test]
    fn rearms_a_crossed_or_distant_threshold_only() {
        const MI: u64 = 1 << 20;
        // (armed (threshold, rising), usage now, new target, re-arm?)
        let cases = [
            (None, 100 * MI, 200 * MI, true),
            // Uncrossed, new target within the slack: kept.
            (Some((200 * MI, true)), 150 * MI, 202 * MI, false),
            // Uncrossed, target moved by more than the slack: replaced.
            (Some((200 * MI, true)), 150 * MI, 260 * MI, true),
            // Crossed upward (the wake-up came before the signal crossed): replaced even
            // though the new target is close.
            (Some((200 * MI, true)), 201 * MI, 203 * MI, true),
            // Armed for a fall (already below), usage still above: kept when close.
            (Some((200 * MI, false)), 300 * MI, 201 * MI, false),
            // Fell past it: replaced.
            (Some((200 * MI, false)), 190 * MI, 198 * MI, true),
            // Direction changed.
            (Some((200 * MI, true)), 199 * MI, 198 * MI, true),
        ];
        for (current, usage, target, want) in cases {
            assert_eq!(
                needs_rearm(current, usage, target),
                want,
                "{current:?} usage {usage} target {target}"
            );
        }
    }

    #[test]
    fn detects_the_mechanism_of_a_cgroup_tree() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            Mechanism::detect(dir.path(), "kubepods"),
            Path::new("/proc/pressure/memory")
                .exists()
                .then(|| Mechanism::Psi("/proc/pressure/memory".into()))
        );
        std::fs::create_dir_all(dir.path().join("kubepods")).expect("mkdir");
        std::fs::write(dir.path().join("kubepods/memory.pressure"), "").expect("write");
        assert_eq!(
            Mechanism::detect(dir.path(), "/kubepods"),
            Some(Mechanism::Psi(dir.path().join("kubepods/memory.pressure")))
        );
        std::fs::create_dir_all(dir.path().join("memory")).expect("mkdir");
        std::fs::write(dir.path().join("memory/cgroup.event_control"), "").expect("write");
        assert_eq!(
            Mechanism::detect(dir.path(), "kubepods"),
            Some(Mechanism::MemcgThreshold(vec![dir.path().join("memory")]))
        );
        std::fs::create_dir_all(dir.path().join("memory/kubepods")).expect("mkdir");
        std::fs::write(dir.path().join("memory/kubepods/cgroup.event_control"), "").expect("write");
        assert_eq!(
            Mechanism::detect(dir.path(), "/kubepods"),
            Some(Mechanism::MemcgThreshold(vec![
                dir.path().join("memory/kubepods"),
                dir.path().join("memory")
            ]))
        );
    }

    /// The kernel accepts the registration of this host's mechanism (v1 here: a memcg
    /// threshold on the root; v2 hosts: a PSI trigger) and a re-arm replaces it.
    #[test]
    fn arms_on_this_host() {
        let Some(mechanism) = Mechanism::detect(Path::new("/sys/fs/cgroup"), "kubepods") else {
            eprintln!("no memory notification mechanism on this host");
            return;
        };
        let wake = Arc::new(Notify::new());
        let memory = NodeMemorySource::detect(Path::new("/sys/fs/cgroup"));
        let mut notifier = MemoryNotifier::new(mechanism, memory, wake);
        let available = 1 << 30;
        notifier.arm(available, 100 << 20).expect("arm");
        notifier
            .arm(available - (64 << 20), 100 << 20)
            .expect("re-arm");
    }

    /// A process growing past the threshold in a v1 memory cgroup wakes the notifier.
    #[tokio::test]
    async fn a_crossing_wakes_the_manager() {
        let root = Path::new("/sys/fs/cgroup/memory");
        if !root.join("cgroup.event_control").exists() {
            eprintln!("no cgroup v1 memory hierarchy; skipped");
            return;
        }
        let cgroup = root.join(format!("kwk-notify-test-{}", std::process::id()));
        std::fs::create_dir_all(&cgroup).expect("mkdir cgroup");
        let wake = Arc::new(Notify::new());
        let mut notifier = MemoryNotifier::new(
            Mechanism::MemcgThreshold(vec![cgroup.clone()]),
            NodeMemorySource::Meminfo,
            wake.clone(),
        );
        let usage = notifier.usage().expect("usage");
        // Woken once usage grows by 32 MiB.
        notifier.arm(32 << 20, 0).expect("arm");
        let notified = wake.notified();
        let mut hog = std::process::Command::new("python3")
            .args([
                "-c",
                "import sys,time; open(sys.argv[1]+'/cgroup.procs','w').write('0'); \
                 b=bytearray(64<<20); time.sleep(10)",
            ])
            .arg(&cgroup)
            .spawn()
            .expect("python3");
        let woken = tokio::time::timeout(std::time::Duration::from_secs(5), notified).await;
        let grown = notifier.usage().unwrap_or(0).saturating_sub(usage);
        let _ = hog.kill();
        let _ = hog.wait();
        drop(notifier);
        for _ in 0..50 {
            if std::fs::remove_dir(&cgroup).is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(woken.is_ok(), "not woken; usage grew by {grown} bytes");
        assert!(grown >= 32 << 20, "woken before the crossing: grew {grown}");
    }
}
