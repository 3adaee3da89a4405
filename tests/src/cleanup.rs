//! Brute-force teardown of everything a test containerd may leave: processes (containerd by
//! PID, its shims, every process in the test's cgroups), mounts under its directory, the
//! directory itself and its cgroups. Each step is best effort and reports what it could not do.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::{MntFlags, umount2};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Stops a process: SIGTERM, then SIGKILL after `grace`. Returns once it is gone.
pub fn stop_process(pid: u32, grace: Duration) {
    let pid = Pid::from_raw(pid as i32);
    if kill(pid, Signal::SIGTERM).is_err() {
        return;
    }
    if !wait_gone(pid, grace) {
        let _ = kill(pid, Signal::SIGKILL);
        wait_gone(pid, Duration::from_secs(5));
    }
}

fn wait_gone(pid: Pid, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        // A zombie still "exists" for kill(0); look at its state instead.
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            Ok(stat)
                if stat
                    .rsplit(')')
                    .next()
                    .is_some_and(|s| s.trim_start().starts_with('Z')) =>
            {
                return true;
            }
            Ok(_) => pause(Duration::from_millis(20)),
        }
    }
    false
}

/// Kills every process whose command line mentions `needle` (the shims of one containerd carry
/// its socket path in `-address`).
pub fn kill_processes_mentioning(needle: &str) -> usize {
    let mut killed = 0;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline);
        if pid != std::process::id() as i32 && cmdline.contains(needle) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            killed += 1;
        }
    }
    killed
}

/// The directories of `relative` (a cgroup path like `/kwkt-1`) in every mounted hierarchy:
/// each v1 controller, `name=systemd`, and the unified (v2) tree.
pub fn cgroup_dirs(relative: &str) -> Vec<PathBuf> {
    let relative = relative.trim_start_matches('/');
    let mut dirs = Vec::new();
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        dirs.push(root.join(relative)); // pure v2
    } else if let Ok(entries) = std::fs::read_dir(root) {
        for entry in entries.flatten() {
            let dir = entry.path().join(relative);
            if dir.exists() {
                dirs.push(dir);
            }
        }
    }
    dirs.into_iter().filter(|d| d.exists()).collect()
}

/// SIGKILLs every process in the cgroup trees, then removes the trees bottom-up.
pub fn remove_cgroups(relative: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for dir in cgroup_dirs(relative) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let pids = tree_pids(&dir);
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            if Instant::now() > deadline {
                problems.push(format!("processes survive in {}", dir.display()));
                break;
            }
            pause(Duration::from_millis(20));
        }
        if let Err(err) = remove_tree_bottom_up(&dir) {
            problems.push(format!("removing {}: {err}", dir.display()));
        }
    }
    problems
}

fn tree_pids(dir: &Path) -> Vec<i32> {
    let mut pids: Vec<i32> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    for child in subdirs(dir) {
        pids.extend(tree_pids(&child));
    }
    pids
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// cgroup directories can only be removed with `rmdir`, children first.
fn remove_tree_bottom_up(dir: &Path) -> std::io::Result<()> {
    for child in subdirs(dir) {
        remove_tree_bottom_up(&child)?;
    }
    let mut last = Ok(());
    for _ in 0..50 {
        last = std::fs::remove_dir(dir);
        match &last {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(_) => pause(Duration::from_millis(20)), // busy until its last task is reaped
        }
    }
    last
}

/// Detaches every mount at or below `dir`, deepest first.
pub fn unmount_below(dir: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mount_path)
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    for point in points {
        if let Err(err) = umount2(&point, MntFlags::MNT_DETACH)
            && err != nix::errno::Errno::EINVAL
            && err != nix::errno::Errno::ENOENT
        {
            problems.push(format!("unmounting {}: {err}", point.display()));
        }
    }
    problems
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mount_path(raw: &str) -> PathBuf {
    let mut out = String::with_capacity(raw.len());
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4].iter().all(u8::is_ascii_digit)
        {
            let code = u8::from_str_radix(&raw[i + 1..i + 4], 8).unwrap_or(b'?');
            out.push(code as char);
            i += 4;
        } else {
            out.push(bytes[i] as char);
            i += 1;
        }
    }
    PathBuf::from(out)
}

/// Removes `dir` recursively once nothing is mounted in it.
pub fn remove_dir(dir: &Path) -> Option<String> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => Some(format!("removing {}: {e}", dir.display())),
    }
}

#[allow(
    clippy::disallowed_methods,
    reason = "teardown runs on a plain thread, outside any runtime"
)]
fn pause(duration: Duration) {
    std::thread::sleep(duration);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_are_unescaped() {
        assert_eq!(unescape_mount_path("/a\\040b"), PathBuf::from("/a b"));
        assert_eq!(
            unescape_mount_path("/plain/path"),
            PathBuf::from("/plain/path")
        );
        assert_eq!(unescape_mount_path("/x\\134y"), PathBuf::from("/x\\y"));
    }
}
