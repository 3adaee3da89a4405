//! Container log rotation (`containerLogMaxSize`, `containerLogMaxFiles`): a running container
//! whose log file grew past the limit has it renamed to `<file>.<timestamp>` and is told by CRI
//! (`ReopenContainerLog`) to write a new one; the oldest rotated files beyond the limit are
//! deleted. The choice of what to rotate and delete is pure; the loop around it is thin.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kwk_cri::{CriClient, api};
use tokio_util::sync::CancellationToken;

use crate::labels;

/// How often log sizes are checked.
pub const CHECK_PERIOD: Duration = Duration::from_secs(10);

/// Limits from the kubelet config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogLimits {
    pub max_size: u64,
    /// Files per container including the live one (at least 2).
    pub max_files: usize,
}

/// What to do with one container's log files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RotationPlan {
    /// Rename the live file to this name, then reopen.
    pub rotate_to: Option<PathBuf>,
    /// Rotated files to delete, oldest first.
    pub delete: Vec<PathBuf>,
}

/// Plans rotation for the live log `live` of `size` bytes, given the rotated files that exist
/// (`<live>.<stamp>`, any order) and a timestamp suffix for a new rotation.
pub fn plan_rotation(
    live: &Path,
    size: u64,
    rotated: &[PathBuf],
    stamp: &str,
    limits: LogLimits,
) -> RotationPlan {
    let mut rotated: Vec<PathBuf> = rotated.to_vec();
    rotated.sort();
    let rotate_to = (size > limits.max_size).then(|| {
        let mut name = live.as_os_str().to_owned();
        name.push(format!(".{stamp}"));
        PathBuf::from(name)
    });
    if let Some(new) = &rotate_to {
        rotated.push(new.clone());
    }
    // Keep max_files - 1 rotated files next to the live one.
    let keep = limits.max_files.saturating_sub(1);
    let excess = rotated.len().saturating_sub(keep);
    let delete = rotated
        .into_iter()
        .take(excess)
        .filter(|p| Some(p) != rotate_to.as_ref())
        .collect();
    RotationPlan { rotate_to, delete }
}

/// Checks every running kwk-node container's log every [`CHECK_PERIOD`] until `cancel`.
pub async fn run(cri: CriClient, limits: LogLimits, cancel: CancellationToken) {
    let mut ticker = tokio::time::interval(CHECK_PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if let Err(err) = rotate_all(&cri, limits).await {
            tracing::warn!(%err, "container log rotation failed");
        }
    }
}

async fn rotate_all(cri: &CriClient, limits: LogLimits) -> Result<(), kwk_cri::CriError> {
    let containers = cri
        .list_containers(Some(api::ContainerFilter {
            state: Some(api::ContainerStateValue {
                state: api::ContainerState::ContainerRunning as i32,
            }),
            label_selector: HashMap::from([(labels::MANAGED.to_string(), "true".to_string())]),
            ..Default::default()
        }))
        .await?;
    for c in containers {
        let status = match cri.container_status(&c.id, false).await {
            Ok(s) => s.status,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        };
        if status.log_path.is_empty() {
            continue;
        }
        let live = PathBuf::from(&status.log_path);
        let Ok(meta) = std::fs::metadata(&live) else {
            continue;
        };
        let plan = plan_rotation(&live, meta.len(), &rotated_files(&live), &stamp(), limits);
        if let Some(to) = &plan.rotate_to {
            if let Err(err) = std::fs::rename(&live, to) {
                tracing::warn!(path = %live.display(), %err, "cannot rotate container log");
                continue;
            }
            if let Err(err) = cri.reopen_container_log(&c.id).await {
                // Put the file back so the container keeps a log.
                let _ = std::fs::rename(to, &live);
                tracing::warn!(container = %c.id, %err, "ReopenContainerLog failed");
                continue;
            }
        }
        for old in plan.delete {
            let _ = std::fs::remove_file(old);
        }
    }
    Ok(())
}

fn rotated_files(live: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (live.parent(), live.file_name()) else {
        return Vec::new();
    };
    let prefix = format!("{}.", name.to_string_lossy());
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// `YYYYMMDD-HHMMSS` in UTC, sortable.
fn stamp() -> String {
    crate::clock::timestamp(crate::clock::unix_nanos_now())
        .strftime("%Y%m%d-%H%M%S%.6f")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn rotation_respects_size_and_file_count() {
        let limits = LogLimits {
            max_size: 100,
            max_files: 3,
        };
        let live = p("/logs/app/0.log");
        // Small: nothing.
        assert_eq!(
            plan_rotation(&live, 100, &[], "s1", limits),
            RotationPlan::default()
        );
        // Large: rotate, nothing to delete yet.
        let plan = plan_rotation(&live, 101, &[p("/logs/app/0.log.a")], "b", limits);
        assert_eq!(plan.rotate_to, Some(p("/logs/app/0.log.b")));
        assert!(plan.delete.is_empty());
        // Already two rotated: the oldest goes.
        let plan = plan_rotation(
            &live,
            500,
            &[p("/logs/app/0.log.b"), p("/logs/app/0.log.a")],
            "c",
            limits,
        );
        assert_eq!(plan.rotate_to, Some(p("/logs/app/0.log.c")));
        assert_eq!(plan.delete, vec![p("/logs/app/0.log.a")]);
        // Too many left over from a smaller limit are trimmed even without rotating.
        let plan = plan_rotation(
            &live,
            1,
            &[p("/l/0.log.a"), p("/l/0.log.b"), p("/l/0.log.c")],
            "d",
            limits,
        );
        assert_eq!(plan.rotate_to, None);
        assert_eq!(plan.delete, vec![p("/l/0.log.a")]);
    }
}
