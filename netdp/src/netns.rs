//! Acting inside another network namespace: [`run_in`] runs a closure on a short-lived thread
//! that entered the namespace with `setns`. Sockets opened there stay bound to that namespace
//! after the thread ends, and processes spawned there inherit it; the caller's thread never
//! changes namespace.

use std::fs::File;
use std::path::Path;

use nix::sched::{CloneFlags, setns};

/// Runs `f` inside the network namespace at `path` (e.g. `/run/netns/<name>`).
pub fn run_in<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> std::io::Result<T> {
    let ns = File::open(path)?;
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                setns(&ns, CloneFlags::CLONE_NEWNET)?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("thread in the namespace panicked")))
    })
}
