//! `/containerLogs/{namespace}/{pod}/{container}`: finds the container's CRI log file under
//! `podLogsDir` (`<ns>_<name>_<uid>/<container>/<restart count>.log`: the highest number is
//! the current instance, the one below it the previous), decodes it and streams the lines the
//! options select. With `follow` the file is watched for new records (polling), across log
//! rotation (the live file renamed and a new one opened at the same path), until the container
//! stops running, the byte limit is reached or the client goes away.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use k8s_openapi::api::core::v1::Pod;
use tokio::io::AsyncReadExt as _;
use tokio::sync::mpsc;

use super::cri_log::{LineAssembler, LogOptions, LogWriter, tail_lines};
use crate::pod::store::StatusStore;

/// How often a followed log is checked for new records.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// How often a followed log checks that its container still runs.
const LIVENESS_CHECK: Duration = Duration::from_secs(1);

/// Why a log cannot be served; the text is the answer's body.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LogRequestError {
    #[error("pod {0:?} does not exist")]
    PodNotFound(String),
    #[error("container {container:?} not found in pod {pod:?}")]
    ContainerNotFound { container: String, pod: String },
    #[error("previous terminated container {container:?} in pod {pod:?} not found")]
    NoPrevious { container: String, pod: String },
    #[error("container {container:?} in pod {pod:?} is waiting to start{reason}")]
    NotStarted {
        container: String,
        pod: String,
        reason: String,
    },
}

impl LogRequestError {
    /// Upstream's status code for the error.
    pub fn status(&self) -> u16 {
        match self {
            Self::PodNotFound(_) | Self::ContainerNotFound { .. } => 404,
            Self::NoPrevious { .. } | Self::NotStarted { .. } => 400,
        }
    }
}

/// The pod named `namespace/name` among those the node runs.
pub fn find_pod(store: &StatusStore, namespace: &str, name: &str) -> Option<Pod> {
    store.snapshot().into_iter().find(|p| {
        p.metadata.namespace.as_deref() == Some(namespace)
            && p.metadata.name.as_deref() == Some(name)
    })
}

fn has_container(pod: &Pod, container: &str) -> bool {
    pod.spec.as_ref().is_some_and(|spec| {
        spec.containers.iter().any(|c| c.name == container)
            || spec
                .init_containers
                .iter()
                .flatten()
                .any(|c| c.name == container)
            || spec
                .ephemeral_containers
                .iter()
                .flatten()
                .any(|c| c.name == container)
    })
}

/// The log files of one container, by instance number (`<n>.log`), highest first.
pub fn instance_logs(dir: &Path) -> Vec<(u32, PathBuf)> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name();
                    let n = name.to_str()?.strip_suffix(".log")?.parse().ok()?;
                    Some((n, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    found
}

/// Whether the container is running according to the pod's last status.
pub fn container_running(pod: &Pod, container: &str) -> bool {
    let status = pod.status.as_ref();
    [
        status.and_then(|s| s.container_statuses.as_ref()),
        status.and_then(|s| s.init_container_statuses.as_ref()),
        status.and_then(|s| s.ephemeral_container_statuses.as_ref()),
    ]
    .into_iter()
    .flatten()
    .flatten()
    .filter(|c| c.name == container)
    .any(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
}

fn waiting_reason(pod: &Pod, container: &str) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.name == container)
        .find_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
        .map(|r| format!(": {r}"))
        .unwrap_or_default()
}

/// The log file a request reads.
pub fn resolve_log_file(
    pod: &Pod,
    pod_logs_dir: &Path,
    container: &str,
    previous: bool,
) -> Result<PathBuf, LogRequestError> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    if !has_container(pod, container) {
        return Err(LogRequestError::ContainerNotFound {
            container: container.into(),
            pod: name,
        });
    }
    let dir = pod_logs_dir
        .join(format!(
            "{}_{}_{}",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            name,
            pod.metadata.uid.as_deref().unwrap_or_default()
        ))
        .join(container);
    let logs = instance_logs(&dir);
    let chosen = if previous { logs.get(1) } else { logs.first() };
    match chosen {
        Some((_, path)) => Ok(path.clone()),
        None if previous => Err(LogRequestError::NoPrevious {
            container: container.into(),
            pod: name,
        }),
        None => Err(LogRequestError::NotStarted {
            container: container.into(),
            reason: waiting_reason(pod, container),
            pod: name,
        }),
    }
}

/// Streams the log at `path` into `out` as `options` say; `running` tells a followed log
/// whether its container still runs. Returns when done or when the receiver is dropped.
pub async fn stream_log(
    path: PathBuf,
    options: LogOptions,
    running: impl Fn() -> bool + Send,
    out: mpsc::Sender<Bytes>,
) {
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(err) => {
            tracing::debug!(path = %path.display(), %err, "cannot open container log");
            return;
        }
    };
    let mut inode = file.metadata().await.map(|m| m.ino()).unwrap_or(0);
    let mut pending = Vec::new();
    if file.read_to_end(&mut pending).await.is_err() {
        return;
    }
    let mut assembler = LineAssembler::default();
    let (lines, consumed) = assembler.push_bytes(&pending);
    pending.drain(..consumed);
    let mut writer = LogWriter::new(&options);
    let first = writer.write(&tail_lines(lines, &options));
    if !first.is_empty() && out.send(Bytes::from(first)).await.is_err() {
        return;
    }
    if !options.follow {
        return;
    }
    let mut last_liveness = Instant::now();
    let mut buffer = vec![0u8; 64 * 1024];
    while !writer.is_done() {
        let read = file.read(&mut buffer).await.unwrap_or(0);
        if read > 0 {
            pending.extend_from_slice(&buffer[..read]);
            let (lines, consumed) = assembler.push_bytes(&pending);
            pending.drain(..consumed);
            let chunk = writer.write(&lines);
            if !chunk.is_empty() && out.send(Bytes::from(chunk)).await.is_err() {
                return;
            }
            continue;
        }
        // At the end of the file: rotated away?
        if let Ok(meta) = tokio::fs::metadata(&path).await
            && meta.ino() != inode
            && let Ok(reopened) = tokio::fs::File::open(&path).await
        {
            file = reopened;
            inode = meta.ino();
            continue;
        }
        if last_liveness.elapsed() >= LIVENESS_CHECK {
            if !running() {
                return;
            }
            last_liveness = Instant::now();
        }
        tokio::select! {
            () = out.closed() => return,
            () = tokio::time::sleep(FOLLOW_POLL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("prod".into()),
                uid: Some("u1".into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            status: None,
        }
    }

    #[test]
    fn the_current_and_previous_instances_are_found_by_number() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("prod_web_u1/app");
        std::fs::create_dir_all(&dir).unwrap();
        let pod = pod();
        assert_eq!(
            resolve_log_file(&pod, root.path(), "app", false),
            Err(LogRequestError::NotStarted {
                container: "app".into(),
                pod: "web".into(),
                reason: String::new()
            })
        );
        for name in [
            "0.log",
            "2.log",
            "10.log",
            "10.log.20260101-000000",
            "x.log",
        ] {
            std::fs::write(dir.join(name), "").unwrap();
        }
        let cases: &[(&str, bool, Result<&str, LogRequestError>)] = &[
            ("app", false, Ok("10.log")),
            ("app", true, Ok("2.log")),
            (
                "db",
                false,
                Err(LogRequestError::ContainerNotFound {
                    container: "db".into(),
                    pod: "web".into(),
                }),
            ),
        ];
        for (container, previous, expected) in cases {
            let got = resolve_log_file(&pod, root.path(), container, *previous);
            assert_eq!(
                got,
                expected.clone().map(|name| dir.join(name)),
                "{container} previous={previous}"
            );
        }
        std::fs::remove_file(dir.join("2.log")).unwrap();
        std::fs::remove_file(dir.join("0.log")).unwrap();
        assert!(matches!(
            resolve_log_file(&pod, root.path(), "app", true),
            Err(LogRequestError::NoPrevious { .. })
        ));
    }

    #[tokio::test]
    async fn a_followed_log_continues_across_rotation_and_ends_with_the_container() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(&path, "2026-01-01T00:00:00Z stdout F a\n").unwrap();
        let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (tx, mut rx) = mpsc::channel(16);
        let flag = running.clone();
        let task = tokio::spawn(stream_log(
            path.clone(),
            LogOptions {
                follow: true,
                ..LogOptions::default()
            },
            move || flag.load(std::sync::atomic::Ordering::SeqCst),
            tx,
        ));
        assert_eq!(rx.recv().await.unwrap(), Bytes::from_static(b"a\n"));
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"2026-01-01T00:00:01Z stdout P b").unwrap();
        f.write_all(b"\n2026-01-01T00:00:01Z stdout F c\n").unwrap();
        assert_eq!(rx.recv().await.unwrap(), Bytes::from_static(b"bc\n"));
        std::fs::rename(&path, dir.path().join("0.log.1")).unwrap();
        std::fs::write(&path, "2026-01-01T00:00:02Z stderr F d\n").unwrap();
        assert_eq!(rx.recv().await.unwrap(), Bytes::from_static(b"d\n"));
        running.store(false, std::sync::atomic::Ordering::SeqCst);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the stream ends once the container stops")
            .unwrap();
        assert_eq!(rx.recv().await, None);
    }
}
