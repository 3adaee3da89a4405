//! Where `/stats/summary`'s system containers are, as upstream reports them: `kubelet`
//! (kwk-node's own cgroup), `runtime` (the cgroup of the process serving the CRI socket, found
//! through the socket's peer credentials) and `pods` (the cgroup of all pods). A process in
//! the root cgroup (the whole node) has none. Looked up on every summary: a restarted
//! runtime may be elsewhere.

use std::path::Path;

use crate::cgroups::{CgroupLocator, StatDirs};

/// The system containers found, in upstream's order of names.
pub async fn locate(
    locator: &CgroupLocator,
    runtime_socket: Option<&Path>,
) -> Vec<(&'static str, StatDirs)> {
    let of_pid = |pid: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .ok()
            .and_then(|text| locator.process(&text))
    };
    let runtime = match runtime_socket {
        Some(socket) => runtime_pid(socket)
            .await
            .and_then(|pid| of_pid(&pid.to_string())),
        None => None,
    };
    [
        ("kubelet", of_pid("self")),
        ("runtime", runtime),
        ("pods", locator.all_pods()),
    ]
    .into_iter()
    .filter_map(|(name, dirs)| Some((name, dirs?)))
    .collect()
}

/// The PID of the process listening on `socket` (`SO_PEERCRED`).
async fn runtime_pid(socket: &Path) -> Option<i32> {
    let stream = tokio::net::UnixStream::connect(socket).await.ok()?;
    stream.peer_cred().ok()?.pid()
}

#[cfg(test)]
mod tests {
    /// The peer of a socket this process serves is this process.
    #[tokio::test]
    async fn the_runtime_is_the_process_serving_the_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("runtime.sock");
        let _listener = tokio::net::UnixListener::bind(&socket).expect("bind");
        let own = i32::try_from(std::process::id()).expect("pid");
        assert_eq!(super::runtime_pid(&socket).await, Some(own));
        assert_eq!(
            super::runtime_pid(&dir.path().join("none.sock")).await,
            None
        );
    }
}
