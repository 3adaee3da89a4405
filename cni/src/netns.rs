//! Network namespace handles: opening `CNI_NETNS` and running a closure with the calling thread
//! switched into a namespace (and back, also on error).

use std::fs::File;
use std::io;
use std::path::Path;

use nix::sched::{CloneFlags, setns};

/// Opens a namespace file (`/run/netns/x`, `/proc/<pid>/ns/net`); `NotFound` if it is gone.
pub fn open(path: &Path) -> io::Result<File> {
    File::open(path)
}

/// Runs `f` with the calling thread inside `target`, then switches back to the namespace the
/// thread was in. Only the calling thread moves; sockets created inside stay bound there.
pub fn with_netns<T>(target: &File, f: impl FnOnce() -> T) -> io::Result<T> {
    let home = File::open("/proc/thread-self/ns/net")?;
    setns(target, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
    let out = f();
    setns(&home, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
    Ok(out)
}
